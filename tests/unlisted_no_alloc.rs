//! The per-request work for an unlisted request does not allocate once its pair is in
//! the table: a counting global allocator watches this thread while paths are shaped
//! and recorded.

use fleetgate::unlisted::{path_shape, ShapeBuf, UnlistedTable};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[test]
fn shaping_and_recording_a_known_pair_do_not_allocate() {
    let deep = "/a1/b/c2/d/e3/f/g4/h/i5/j/k6/l/m7/n/o8/p/q9/r/s10";
    let requests = [
        ("POST", "/api/p1/exports/e1"),
        ("GET", "/api/acme/files/src/main.rs"),
        ("DELETE", "/users/42/"),
        ("GET", "/f/caf%C3%A9?x=1"),
        ("PUT", deep),
        ("GET", "/"),
    ];
    let table = UnlistedTable::new(16);
    let mut buf = ShapeBuf::new();
    // First sight of each pair allocates its entry.
    for (m, p) in requests {
        table.record(m, path_shape(p, &mut buf));
    }
    let before = allocations();
    let mut bytes = 0;
    for _ in 0..1000 {
        for (m, p) in requests {
            let shape = path_shape(p, &mut buf);
            bytes += shape.len();
            table.record(m, shape);
        }
    }
    let after = allocations();
    assert!(bytes > 0);
    assert_eq!(after - before, 0, "shaping and recording allocated");
    assert_eq!(table.totals(), (3003, 3003));
}
