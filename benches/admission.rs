//! Admission benchmarks.
//!
//! * `admission/uncontended`: acquire and drop a permit of a bulkhead with free slots,
//!   for a named tenant (the fast path: one short lock, no allocation).
//! * `admission/uncontended_hashed`, `admission/uncontended_anonymous`: the same for a
//!   tenant id hashed into the shared buckets, and for no tenant.
//! * `admission/uncontended_busy`: the same while 500 of 1,000 slots are held by 100
//!   tenants.
//! * `admission/contended_handover`: one slot, always taken: queue a waiter, drop the
//!   held permit (which hands the slot to the waiter under the lock), poll the waiter
//!   for its permit; two tenants alternate.
//!
//! * `guard/pass_read`, `guard/pass_write`, `guard/refuse_super_read_only`,
//!   `guard/redirect_unlisted_write`: the super_read_only guard's decision
//!   (`proxy::guard::check`) for a read, a listed fleet-ok write, any write while
//!   super_read_only is on, and a write no rule lists (sent to the ide), against the
//!   shipped manifest (`routes/`).
//!
//! Run: `cargo bench --bench admission`

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fleetgate::admission::{Acquire, Bulkhead, BulkheadConfig, Permit};
use fleetgate::config::{Guard, Role};
use fleetgate::manifest::classify::NoHeaders;
use fleetgate::manifest::{Manifest, RequestParts};
use fleetgate::proxy::guard::{self, Verdict};
use fleetgate::proxy::{target, Route};
use http::Method;

fn bulkhead(max_inflight: usize) -> Arc<Bulkhead> {
    Bulkhead::new(BulkheadConfig {
        max_inflight,
        queue_per_tenant: 16,
        queue_timeout: Duration::from_secs(5),
        retry_after_min: 1,
        retry_after_max: 30,
        weights: (0..20)
            .map(|i| (format!("workspace-{i}"), 1 + i % 4))
            .collect(),
    })
}

fn admitted(a: Acquire) -> Permit {
    match a {
        Acquire::Admitted(p) => p,
        other => panic!("not admitted: {other:?}"),
    }
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    let bh = bulkhead(1000);
    for (id, tenant) in [
        ("uncontended", Some("workspace-7")),
        ("uncontended_hashed", Some("3f2a9c1e-some-other-workspace")),
        ("uncontended_anonymous", None),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| drop(admitted(bh.try_acquire(black_box(tenant)))))
        });
    }
    let held: Vec<Permit> = (0..500)
        .map(|i| admitted(bh.try_acquire(Some(&format!("t{}", i % 100)))))
        .collect();
    group.bench_function("uncontended_busy", |b| {
        b.iter(|| drop(admitted(bh.try_acquire(black_box(Some("workspace-7"))))))
    });
    drop(held);
    group.finish();
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    let bh = bulkhead(1);
    let mut cx = Context::from_waker(Waker::noop());
    let mut held = Some(admitted(bh.try_acquire(Some("workspace-1"))));
    let tenants = [Some("workspace-2"), Some("workspace-3")];
    let mut turn = 0;
    group.bench_function("contended_handover", |b| {
        b.iter(|| {
            turn ^= 1;
            let Acquire::Queued(mut waiting) = bh.try_acquire(black_box(tenants[turn])) else {
                panic!("the only slot is held: the request queues");
            };
            // Releasing the slot hands it to the waiter, which finds it at its first poll.
            drop(held.take());
            match Pin::new(&mut waiting).poll(&mut cx) {
                Poll::Ready(Ok((permit, _))) => held = Some(permit),
                other => panic!("the slot was not handed over: {other:?}"),
            }
        })
    });
    drop(held);
    group.finish();
}

/// The shipped manifest, as `fleetgate serve` loads it.
fn shipped_manifest() -> Manifest {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/routes");
    let mut sources: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    sources.sort();
    Manifest::from_sources(&sources).expect("the shipped manifest loads")
}

fn guard_decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("guard");
    let manifest = shipped_manifest();
    let settings = Guard::default();
    for (id, method, path, super_read_only) in [
        ("pass_read", Method::GET, "/api/acme/threads", false),
        ("pass_write", Method::POST, "/api/acme/threads", false),
        (
            "refuse_super_read_only",
            Method::POST,
            "/api/acme/threads",
            true,
        ),
        (
            "redirect_unlisted_write",
            Method::POST,
            "/no/rule/names/this",
            false,
        ),
    ] {
        let decision = manifest.classify(&RequestParts {
            method: method.as_str(),
            path,
            query: None,
            headers: &NoHeaders,
        });
        let route = Route {
            class: decision.class,
            rule_index: decision.rule_index,
            tenant: decision.tenant_at,
            target: target::route(Role::Serve, decision.class, true).expect("a target"),
            degrade: false,
            upgrade: false,
        };
        let verdict = |srw: bool| {
            guard::check(
                &method,
                route,
                decision.rule,
                Role::Serve,
                true,
                &settings,
                srw,
            )
        };
        // The case is what its name says.
        match (id, verdict(super_read_only)) {
            ("pass_read" | "pass_write", Verdict::Pass)
            | ("refuse_super_read_only", Verdict::Refuse(..))
            | ("redirect_unlisted_write", Verdict::Redirect(_)) => {}
            (id, _) => panic!("{id}: another verdict"),
        }
        group.bench_function(id, |b| {
            b.iter(|| {
                black_box(guard::check(
                    black_box(&method),
                    black_box(route),
                    decision.rule,
                    Role::Serve,
                    true,
                    &settings,
                    black_box(super_read_only),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended, contended, guard_decisions);
criterion_main!(benches);
