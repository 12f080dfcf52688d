//! Classification never allocates: a counting global allocator watches this thread
//! while the shipped manifest classifies a mix of requests (rules with tenants, `when`
//! conditions, aliases, carve-outs, the default class, and paths that die early) and
//! resolves each decision's tenant span.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use fleetgate::manifest::classify::NoHeaders;
use fleetgate::manifest::{Manifest, RequestParts};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout)
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.realloc(p, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn classification_does_not_allocate() {
    let manifest = Manifest::load_dir(Path::new("routes")).expect("shipped manifest loads");
    let headers: Vec<(String, String)> = vec![("accept".into(), "text/event-stream".into())];
    let requests: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", "/api/acme/files/src/main.rs", None),
        ("PUT", "/api/acme/files/a/b/c/d/e/f", None),
        ("GET", "/api/acme/tree", Some("snapshot=s1")),
        ("GET", "/api/acme/runs/r1", None),
        ("GET", "/api/acme/git/reviews/12", None),
        ("POST", "/api/acme/git/commit", None),
        ("GET", "/v1/acme/files/README.md/", None),
        ("DELETE", "/nothing/matches/this", None),
        ("GET", "/", None),
        ("BREW", "/api/acme/threads", None),
    ];
    let mut matched = 0;
    let mut tenants = 0;
    let before = allocations();
    for _ in 0..100 {
        for (method, path, query) in &requests {
            for with_headers in [false, true] {
                let req = RequestParts {
                    method,
                    path,
                    query: *query,
                    headers: if with_headers { &headers } else { &NoHeaders },
                };
                let d = manifest.classify(&req);
                matched += d.rule.is_some() as usize;
                tenants += d
                    .tenant_at
                    .and_then(|at| manifest.tenant_text(at, path))
                    .is_some() as usize;
            }
        }
    }
    let after = allocations();
    assert!(matched > 0 && tenants > 0);
    assert_eq!(
        after - before,
        0,
        "classification allocated {} times",
        after - before
    );
}
