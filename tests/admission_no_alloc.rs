//! The uncontended path of a bulkhead never allocates: a counting global allocator
//! watches this thread while permits of named, hashed and anonymous tenants are acquired
//! and dropped, with other permits held and without.

use std::time::Duration;

use fleetgate::admission::{Acquire, Bulkhead, BulkheadConfig, Permit};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

fn admitted(a: Acquire) -> Permit {
    match a {
        Acquire::Admitted(p) => p,
        other => panic!("not admitted: {other:?}"),
    }
}

#[test]
fn uncontended_admission_does_not_allocate() {
    let bh = Bulkhead::new(BulkheadConfig {
        max_inflight: 64,
        queue_per_tenant: 8,
        queue_timeout: Duration::from_secs(5),
        retry_after_min: 1,
        retry_after_max: 30,
        weights: vec![("vip".into(), 4), ("gold".into(), 2)],
    });
    let tenants: Vec<String> = (0..50).map(|i| format!("workspace-{i:04}")).collect();
    let long = "x".repeat(200);
    // Warm up (lazy initialisation anywhere below is not the bulkhead's doing).
    drop(admitted(bh.try_acquire(Some("vip"))));
    let mut held: Vec<Permit> = Vec::with_capacity(64);
    let before = allocations();
    for round in 0..100 {
        for t in &tenants {
            for tenant in [
                Some("vip"),
                Some("gold"),
                Some(t.as_str()),
                Some(&long),
                None,
            ] {
                drop(admitted(bh.try_acquire(tenant)));
            }
        }
        // Keep some slots busy every other round: still no allocation.
        if round % 2 == 0 {
            for t in tenants.iter().take(32) {
                held.push(admitted(bh.try_acquire(Some(t))));
            }
        } else {
            held.clear();
        }
    }
    held.clear();
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "uncontended admission allocated {} times",
        after - before
    );
    assert_eq!(bh.stats(0).inflight, 0);
}
