//! Classification never allocates: a counting global allocator watches this thread
//! while the shipped manifest classifies a mix of requests (rules with tenants, `when`
//! conditions, aliases, carve-outs, the default class, and paths that die early) and
//! resolves each decision's tenant span, and counts it in the per-rule counters.

use std::path::Path;

use fleetgate::manifest::classify::NoHeaders;
use fleetgate::manifest::{Manifest, RequestParts};
use fleetgate::state::RuleHits;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

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
    let hits = RuleHits::new(&manifest);
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
                hits.hit(d.rule_index);
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
