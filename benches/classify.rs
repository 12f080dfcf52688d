//! Classification benchmarks.
//!
//! * `classify/compiled/github` vs `classify/linear/github`: the GitHub REST route table
//!   (benches/data/github.txt), one concrete path per route, classified in turn by the
//!   compiled automaton and by a naive rule-by-rule matcher ([`classify_linear`]).
//! * `classify/compiled/synthetic/{100,1000,10000}`: generated rules, every route
//!   requested in turn (uniform traffic).
//! * `classify/compiled/zipf/10000`: the same 10,000 rules, requests drawn from a
//!   Zipf(1.0) distribution over the routes.
//! * `compile/synthetic/10000`: time to load and compile 10,000 rules; the heap it
//!   retains and its peak are printed once (counting allocator below).
//!
//! Run: `cargo bench --bench classify`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate::manifest::classify::NoHeaders;
use fleetgate::manifest::compile::precedence;
use fleetgate::manifest::{pattern, Class, Manifest, RequestParts};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Counts live and peak heap bytes so the compile benchmark can report memory.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Request {
    method: &'static str,
    path: String,
}

/// Rules from a route table (`METHOD /path` lines); the class alternates by line so
/// both classes occur, and a concrete request path for every route.
fn corpus(text: &str) -> (String, Vec<Request>) {
    let mut toml = String::from("[manifest]\ndefault_class = \"fleet-ok\"\n");
    let mut requests = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let (method, path) = line.split_once(' ').expect("METHOD /path");
        let class = if i % 3 == 0 { "ide-only" } else { "fleet-ok" };
        toml.push_str(&format!(
            "[[rule]]\nmethods = [\"{method}\"]\npath = \"{path}\"\nclass = \"{class}\"\nwhy = \"corpus\"\n"
        ));
        let concrete: Vec<String> = path
            .split('/')
            .map(|seg| match seg {
                s if s.starts_with("{*") => "tail/more".to_string(),
                s if s.starts_with('{') => "octo42".to_string(),
                s => s.to_string(),
            })
            .collect();
        let method: &'static str = Box::leak(method.to_string().into_boxed_str());
        requests.push(Request {
            method,
            path: concrete.join("/"),
        });
    }
    (toml, requests)
}

/// `n` generated rules shaped like a multi-service API: a service prefix, a tenant
/// parameter, a resource literal, then an id or a catch-all; every rule has a
/// concrete request.
fn synthetic(n: usize) -> (String, Vec<Request>) {
    let mut toml = String::from("[manifest]\ndefault_class = \"fleet-ok\"\n");
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let service = i % 64;
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let tail = if i % 3 == 0 { "{*rest}" } else { "{id}" };
        let class = if i % 5 == 0 { "ide-only" } else { "fleet-ok" };
        toml.push_str(&format!(
            "[[rule]]\nmethods = [\"{method}\"]\npath = \"/svc{service}/{{ws}}/resource{i}/{tail}\"\nclass = \"{class}\"\nwhy = \"generated\"\ntenant = \"ws\"\n"
        ));
        requests.push(Request {
            method,
            path: format!("/svc{service}/ws-7f3a/resource{i}/item-1234"),
        });
    }
    (toml, requests)
}

fn load(toml: String) -> Manifest {
    Manifest::from_sources(&[("bench.toml".to_string(), toml)]).expect("bench manifest loads")
}

fn parts(r: &Request) -> RequestParts<'_> {
    RequestParts {
        method: r.method,
        path: &r.path,
        query: None,
        headers: &NoHeaders,
    }
}

/// The baseline the automaton replaces: every rule in turn, segment by segment, the most
/// specific match winning. (The benchmark manifests have no `when` conditions.)
fn classify_linear(m: &Manifest, r: &Request) -> Class {
    let path = m.rewrite(&r.path);
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    segments.extend(path.segments());
    let rules = m.rules();
    let mut best: Option<usize> = None;
    for (i, rule) in rules.iter().enumerate() {
        if rule.methods.matches(r.method)
            && pattern::matches(&rule.segments, &segments)
            && best.is_none_or(|b| precedence(rules, i, b).is_lt())
        {
            best = Some(i);
        }
    }
    best.map_or(m.default_class(), |i| rules[i].class)
}

/// Classify every request in turn; one iteration = one request.
fn bench_cycle(c: &mut Criterion, id: &str, m: &Manifest, reqs: &[Request], linear: bool) {
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function(id, |b| {
        b.iter(|| {
            let r = &reqs[i];
            i = if i + 1 == reqs.len() { 0 } else { i + 1 };
            if linear {
                black_box(classify_linear(m, r))
            } else {
                black_box(m.classify(&parts(r)).class)
            }
        })
    });
    group.finish();
}

fn github(c: &mut Criterion) {
    let (toml, reqs) = corpus(include_str!("data/github.txt"));
    let m = load(toml);
    assert!(reqs.iter().all(|r| m.classify(&parts(r)).rule.is_some()));
    assert!(reqs
        .iter()
        .all(|r| m.classify(&parts(r)).class == classify_linear(&m, r)));
    bench_cycle(c, "compiled/github", &m, &reqs, false);
    bench_cycle(c, "linear/github", &m, &reqs, true);
}

fn synthetic_uniform(c: &mut Criterion) {
    for n in [100, 1000, 10_000] {
        let (toml, reqs) = synthetic(n);
        let m = load(toml);
        eprintln!(
            "synthetic/{n}: automaton {} KiB",
            m.automaton_bytes() / 1024
        );
        bench_cycle(c, &format!("compiled/synthetic/{n}"), &m, &reqs, false);
    }
}

/// Zipf(s = 1.0) over `n` ranks by inverse transform on the precomputed CDF.
fn zipf_sample(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for k in 1..=n {
        total += 1.0 / k as f64;
        cdf.push(total);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let u = rng.gen::<f64>() * total;
            cdf.partition_point(|&x| x < u).min(n - 1)
        })
        .collect()
}

fn synthetic_zipf(c: &mut Criterion) {
    let n = 10_000;
    let (toml, reqs) = synthetic(n);
    let m = load(toml);
    // Popular routes are scattered over the table, not the first rules in file order.
    let mut rank_to_route: Vec<usize> = (0..n).collect();
    let mut rng = SmallRng::seed_from_u64(7);
    for i in (1..n).rev() {
        rank_to_route.swap(i, rng.gen_range(0..=i));
    }
    // The draw is a sequence of route indices (4 bytes each, read in order); the paths
    // themselves are the same 10,000 strings the uniform benchmark cycles through, so
    // a popular route's path is in cache as it would be in a proxy that just parsed it.
    let drawn: Vec<u32> = zipf_sample(n, 1 << 16, 11)
        .into_iter()
        .map(|rank| rank_to_route[rank] as u32)
        .collect();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("compiled/zipf/10000", |b| {
        b.iter(|| {
            let r = &reqs[drawn[i] as usize];
            i = (i + 1) & (drawn.len() - 1);
            black_box(m.classify(&parts(r)).class)
        })
    });
    group.finish();
}

fn compile(c: &mut Criterion) {
    let (toml, _) = synthetic(10_000);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let m = load(toml.clone());
    eprintln!(
        "compile/synthetic/10000: retained heap {} KiB (automaton {} KiB), peak during compile {} KiB",
        (LIVE.load(Relaxed) - before) / 1024,
        m.automaton_bytes() / 1024,
        (PEAK.load(Relaxed) - before) / 1024
    );
    drop(m);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("synthetic/10000", |b| {
        b.iter(|| black_box(load(toml.clone())))
    });
    group.finish();
}

criterion_group!(benches, github, synthetic_uniform, synthetic_zipf, compile);
criterion_main!(benches);
