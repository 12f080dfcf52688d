//! Unlisted requests: the run-time face of route drift.
//!
//! A request that matches no manifest rule gets the manifest's default class. Such a
//! request is either expected (an application route whose reviewed class is the
//! default) or a route nobody has reviewed. The data path reports each one here, as its
//! method and its path's *shape* ([`path_shape`]), and [`UnlistedTable`] keeps the most
//! frequent `(method, shape)` pairs in bounded memory. The admin listener serves the
//! table as JSON ([`UnlistedTable::to_json`]) at `GET /routes/unlisted`, and
//! `fleetgate routes drift --app-routes` reads that JSON back as a route list, so the
//! captured traffic can be checked against the manifest and the lock like the
//! application's own route list.
//!
//! # Shapes
//!
//! A request path names one resource; a route names a family of them. [`path_shape`]
//! guesses the family by replacing every segment that looks like an identifier with
//! `{}`:
//!
//! * a segment containing an ASCII digit (`p1`, `42`, a UUID, a date);
//! * a segment longer than [`MAX_LITERAL_BYTES`] bytes (hashes, tokens, base64);
//! * a segment with a percent-escape or any byte other than ASCII letters and
//!   `-._~!$&'()*+,;=:@` (so every literal left is one a manifest pattern can hold);
//! * a `.` or `..` segment (a normalized path has none).
//!
//! Every other segment stays literal. Empty segments and the trailing slash are
//! dropped, and so is a `?query` or `#fragment`. At most [`MAX_SHAPE_SEGMENTS`]
//! segments and [`MAX_SHAPE_BYTES`] bytes are kept; a longer path ends in `/{*}`.
//!
//! The heuristic is cheap and usually right, but it is a guess:
//!
//! * identifiers without digits stay literal: tenant or project names (`/api/acme/…`),
//!   slugs (`/blog/hello-world`), file names (`/files/src/main.rs`). Each such value
//!   makes its own shape, so one route can fill several entries of the table;
//! * literals with digits become `{}`: version prefixes (`/api/v2/…` becomes
//!   `/api/{}/…`), `oauth2`, `s3`;
//! * a catch-all route (`/files/{*path}`) shows up as one shape per depth and name.
//!
//! The drift check de-duplicates an observed shape that an application route already
//! covers, so the first kind of noise mostly disappears once the route list is given
//! too.
//!
//! # The table
//!
//! [`UnlistedTable`] is a Space-Saving top-K counter (Metwally, Agrawal and El Abbadi,
//! 2005) over `(method, shape)` pairs with a fixed capacity. A pair already in the
//! table counts up. A new pair takes a free entry, or, when the table is full, replaces
//! the entry with the smallest count and inherits that count plus one; the inherited
//! part is kept as the entry's `error`. So every `count` is an upper bound of the
//! pair's true count and `count - error` a lower bound, and every pair seen more than
//! `total / capacity` times is guaranteed to be in the table.
//!
//! Recording takes one short `std::sync::Mutex` critical section: a scan of a dense
//! array of 64-bit hashes (the hash is computed before locking) and, for a new pair in
//! a full table, a scan of the counts for the smallest one. It allocates only when a new
//! pair enters the table, and then at most the pair's text: a replaced entry reuses its
//! buffers when they are large enough. Memory is bounded by the capacity times
//! ([`MAX_METHOD_BYTES`] + [`MAX_SHAPE_BYTES`]) plus a few words per entry.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// The number of `(method, shape)` pairs a table keeps by default.
pub const DEFAULT_CAPACITY: usize = 256;

/// A shape keeps at most this many segments before `/{*}`.
pub const MAX_SHAPE_SEGMENTS: usize = 16;

/// A shape is at most this many bytes long, `/{*}` included.
pub const MAX_SHAPE_BYTES: usize = 256;

/// A longer segment is an identifier (`{}`).
pub const MAX_LITERAL_BYTES: usize = 32;

/// Methods longer than this (or not HTTP tokens) are recorded as [`OTHER_METHOD`].
pub const MAX_METHOD_BYTES: usize = 32;

/// The method recorded for an overlong or malformed method.
pub const OTHER_METHOD: &str = "OTHER";

/// What a truncated shape ends with.
const TRUNCATED: &str = "/{*}";

/// The output buffer of [`path_shape`]: fixed size, on the caller's stack.
#[derive(Clone)]
pub struct ShapeBuf {
    buf: [u8; MAX_SHAPE_BYTES],
    len: usize,
}

impl Default for ShapeBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ShapeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShapeBuf").field(&self.as_str()).finish()
    }
}

impl ShapeBuf {
    pub const fn new() -> Self {
        ShapeBuf {
            buf: [0; MAX_SHAPE_BYTES],
            len: 0,
        }
    }

    /// The last shape written (empty before the first).
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written: literal segments are checked byte by byte.
        std::str::from_utf8(&self.buf[..self.len]).expect("shapes are ASCII")
    }

    /// Append `s`; the caller has checked that it fits.
    fn push(&mut self, s: &str) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
    }
}

/// May this byte be part of a literal segment of a shape?
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Does this (non-empty) segment look like an identifier? See the module docs.
pub fn is_identifier_segment(seg: &str) -> bool {
    seg.len() > MAX_LITERAL_BYTES || seg == "." || seg == ".." || !seg.bytes().all(is_literal_byte)
}

/// The shape of a normalized request path, written into `out` and returned: every
/// identifier-like segment becomes `{}` (see the module docs for the heuristic), e.g.
/// `/api/p1/exports/e1` becomes `/api/{}/exports/{}`. Does not allocate.
pub fn path_shape<'b>(path: &str, out: &'b mut ShapeBuf) -> &'b str {
    out.len = 0;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.split('/').filter(|s| !s.is_empty()).peekable();
    let mut kept = 0;
    while let Some(seg) = segments.next() {
        let text = if is_identifier_segment(seg) {
            "{}"
        } else {
            seg
        };
        // Until the last segment, leave room for the truncation marker.
        let room = if segments.peek().is_none() {
            MAX_SHAPE_BYTES
        } else {
            MAX_SHAPE_BYTES - TRUNCATED.len()
        };
        if kept == MAX_SHAPE_SEGMENTS || out.len + 1 + text.len() > room {
            out.push(TRUNCATED);
            break;
        }
        out.push("/");
        out.push(text);
        kept += 1;
    }
    if out.len == 0 {
        out.push("/");
    }
    out.as_str()
}

/// Whether a method reads or writes, for the table's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// GET, HEAD, OPTIONS, TRACE.
    Read,
    /// Every other method.
    Write,
}

impl MethodKind {
    pub fn of(method: &str) -> MethodKind {
        match method {
            "GET" | "HEAD" | "OPTIONS" | "TRACE" => MethodKind::Read,
            _ => MethodKind::Write,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Read => "read",
            MethodKind::Write => "write",
        }
    }
}

/// The method as recorded: itself, or [`OTHER_METHOD`] when it is overlong or not an
/// HTTP token (which the data path never passes).
fn recorded_method(method: &str) -> &str {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > MAX_METHOD_BYTES || !method.bytes().all(tchar) {
        OTHER_METHOD
    } else {
        method
    }
}

/// Request totals by [`MethodKind`], every recorded request counted (not only the
/// ones the table still holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub read: u64,
    pub write: u64,
}

/// One entry of an [`UnlistedReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlistedRoute {
    pub method: String,
    /// The shape, `{}` for an identifier segment and a final `{*}` when truncated.
    pub path: String,
    pub method_kind: MethodKind,
    /// Requests counted for this pair: an upper bound of the true count.
    pub count: u64,
    /// The part of `count` inherited from the entry this pair replaced; the true count
    /// is at least `count - error`.
    pub error: u64,
}

/// A snapshot of an [`UnlistedTable`], as served at `GET /routes/unlisted`:
/// `{"capacity":256,"total":{"read":N,"write":M},"routes":[…]}` with the routes sorted
/// by count, highest first (then by path and method).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlistedReport {
    pub capacity: usize,
    pub total: Totals,
    pub routes: Vec<UnlistedRoute>,
}

/// One tracked pair. Its hash and count live in [`Inner`]'s dense arrays.
struct Slot {
    method: String,
    shape: String,
    error: u64,
}

struct Inner {
    /// `hashes[i]` and `counts[i]` belong to `slots[i]`.
    hashes: Vec<u64>,
    counts: Vec<u64>,
    slots: Vec<Slot>,
    totals: Totals,
}

/// Replace the contents of `s`, growing it to exactly what is needed if it must grow.
fn overwrite(s: &mut String, with: &str) {
    s.clear();
    s.reserve_exact(with.len());
    s.push_str(with);
}

impl Inner {
    fn add(&mut self, capacity: usize, hash: u64, method: &str, shape: &str) {
        for (i, &h) in self.hashes.iter().enumerate() {
            if h == hash && self.slots[i].method == method && self.slots[i].shape == shape {
                self.counts[i] = self.counts[i].saturating_add(1);
                return;
            }
        }
        if self.slots.len() < capacity {
            self.hashes.push(hash);
            self.counts.push(1);
            self.slots.push(Slot {
                method: method.to_owned(),
                shape: shape.to_owned(),
                error: 0,
            });
            return;
        }
        let Some((i, &min)) = self.counts.iter().enumerate().min_by_key(|(_, c)| **c) else {
            return; // capacity 0: totals only
        };
        let slot = &mut self.slots[i];
        overwrite(&mut slot.method, method);
        overwrite(&mut slot.shape, shape);
        slot.error = min;
        self.hashes[i] = hash;
        self.counts[i] = min.saturating_add(1);
    }
}

/// A bounded, thread-safe top-K table of unlisted `(method, shape)` pairs; see the
/// module docs.
pub struct UnlistedTable {
    capacity: usize,
    hasher: RandomState,
    inner: Mutex<Inner>,
}

impl Default for UnlistedTable {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for UnlistedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlistedTable")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl UnlistedTable {
    /// A table that keeps at most `capacity` pairs (0: only the totals are kept). The
    /// entry arrays are allocated here, once.
    pub fn new(capacity: usize) -> Self {
        UnlistedTable {
            capacity,
            hasher: RandomState::new(),
            inner: Mutex::new(Inner {
                hashes: Vec::with_capacity(capacity),
                counts: Vec::with_capacity(capacity),
                slots: Vec::with_capacity(capacity),
                totals: Totals::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count one unlisted request. `shape` should come from [`path_shape`]; a longer
    /// one is recorded as `/{*}`. Allocates only when the pair is new to the table.
    pub fn record(&self, method: &str, shape: &str) {
        let method = recorded_method(method);
        let shape = if shape.len() > MAX_SHAPE_BYTES {
            TRUNCATED
        } else {
            shape
        };
        let hash = self.hasher.hash_one((method, shape));
        let mut inner = self.lock();
        let totals = &mut inner.totals;
        match MethodKind::of(method) {
            MethodKind::Read => totals.read = totals.read.saturating_add(1),
            MethodKind::Write => totals.write = totals.write.saturating_add(1),
        }
        inner.add(self.capacity, hash, method, shape);
    }

    /// Every request recorded so far: `(read, write)`.
    pub fn totals(&self) -> (u64, u64) {
        let t = self.lock().totals;
        (t.read, t.write)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of pairs held (at most the capacity).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot, routes sorted by count (highest first), then path, then method. The
    /// lock is held only to copy the entries.
    pub fn report(&self) -> UnlistedReport {
        let (totals, mut routes) = {
            let inner = self.lock();
            let routes: Vec<UnlistedRoute> = inner
                .slots
                .iter()
                .zip(&inner.counts)
                .map(|(s, &count)| UnlistedRoute {
                    method: s.method.clone(),
                    path: s.shape.clone(),
                    method_kind: MethodKind::of(&s.method),
                    count,
                    error: s.error,
                })
                .collect();
            (inner.totals, routes)
        };
        routes.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.method.cmp(&b.method))
        });
        UnlistedReport {
            capacity: self.capacity,
            total: totals,
            routes,
        }
    }

    /// [`report`](Self::report) as JSON, the body of `GET /routes/unlisted`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.report()).expect("plain data serializes")
    }

    /// Bytes of heap held by the entries' text (for the bounded-memory test).
    #[cfg(test)]
    fn text_bytes(&self) -> usize {
        self.lock()
            .slots
            .iter()
            .map(|s| s.method.capacity() + s.shape.capacity())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(path: &str) -> String {
        let mut buf = ShapeBuf::new();
        path_shape(path, &mut buf).to_string()
    }

    #[test]
    fn shapes() {
        let long = "a".repeat(33);
        let exactly_32 = "b".repeat(32);
        let cases: Vec<(String, &str)> = vec![
            ("/api/p1/exports/e1".into(), "/api/{}/exports/{}"),
            (
                "/api/acme/files/src/main.rs".into(),
                "/api/acme/files/src/main.rs",
            ),
            ("/".into(), "/"),
            ("".into(), "/"),
            ("/a/".into(), "/a"),
            ("//a//b//".into(), "/a/b"),
            ("/users/42".into(), "/users/{}"),
            (
                "/o/123e4567-e89b-12d3-a456-426614174000/x".into(),
                "/o/{}/x",
            ),
            ("/api/v2/things".into(), "/api/{}/things"),
            (format!("/t/{long}"), "/t/{}"),
            (
                format!("/t/{exactly_32}"),
                "/t/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            ),
            ("/f/caf%C3%A9".into(), "/f/{}"),
            ("/f/{x}/}".into(), "/f/{}/{}"),
            ("/f/./..".into(), "/f/{}/{}"),
            ("/f/é".into(), "/f/{}"),
            ("/v/a:b@c,d;e=f".into(), "/v/a:b@c,d;e=f"),
            ("/search?q=1".into(), "/search"),
            ("/page#top".into(), "/page"),
        ];
        for (path, want) in &cases {
            assert_eq!(shape(path), *want, "shape of {path:?}");
        }
    }

    #[test]
    fn long_paths_are_truncated() {
        let deep: String = (0..20).map(|i| format!("/s{i}")).collect();
        let got = shape(&deep);
        assert_eq!(got, format!("{}/{{*}}", "/{}".repeat(16)));
        // Exactly 16 segments: no marker.
        let sixteen: String = (0..16).map(|_| "/a").collect();
        assert_eq!(shape(&sixteen), sixteen);
        // Byte limit: literal segments of 30 bytes, 8 of them fit, the rest is `{*}`.
        let seg = "x".repeat(30);
        let wide: String = (0..12).map(|_| format!("/{seg}")).collect();
        let got = shape(&wide);
        assert!(got.len() <= MAX_SHAPE_BYTES, "{}", got.len());
        assert!(got.ends_with("/{*}"), "{got}");
        assert_eq!(got.matches(&seg).count(), 8);
        // A last segment may use the room the marker would have needed.
        let fits: String = (0..8).map(|_| format!("/{seg}")).collect::<String>() + "/abcdefg";
        assert_eq!(fits.len(), 256);
        assert_eq!(shape(&fits), fits);
    }

    #[test]
    fn method_kinds_and_totals() {
        let t = UnlistedTable::new(4);
        for m in [
            "GET", "HEAD", "OPTIONS", "TRACE", "POST", "DELETE", "get", "BREW",
        ] {
            t.record(m, "/x");
        }
        // Methods are case-sensitive: `get` is an extension method, a write.
        assert_eq!(t.totals(), (4, 4));
        let r = t.report();
        // Capacity 4, 8 distinct pairs: each later pair replaced an earlier one with
        // count 1 and inherited it as its error.
        let got: Vec<(&str, MethodKind, u64, u64)> = r
            .routes
            .iter()
            .map(|r| (r.method.as_str(), r.method_kind, r.count, r.error))
            .collect();
        let w = MethodKind::Write;
        assert_eq!(
            got,
            vec![
                ("BREW", w, 2, 1),
                ("DELETE", w, 2, 1),
                ("POST", w, 2, 1),
                ("get", w, 2, 1)
            ]
        );
        assert_eq!(MethodKind::of("HEAD"), MethodKind::Read);
        assert_eq!(MethodKind::of("OPTIONS").as_str(), "read");
        assert_eq!(MethodKind::of("PATCH").as_str(), "write");
    }

    #[test]
    fn overlong_and_bad_methods_and_shapes_are_bounded() {
        let t = UnlistedTable::new(8);
        t.record(&"M".repeat(33), "/a");
        t.record("BAD METHOD", "/a");
        t.record("", "/a");
        t.record("GET", &format!("/{}", "x".repeat(300)));
        let r = t.report();
        assert_eq!(
            r.routes
                .iter()
                .map(|r| (r.method.as_str(), r.path.as_str(), r.count))
                .collect::<Vec<_>>(),
            vec![("OTHER", "/a", 3), ("GET", "/{*}", 1)]
        );
        let z = UnlistedTable::new(0);
        z.record("GET", "/a");
        assert_eq!(z.totals(), (1, 0));
        assert!(z.is_empty());
    }

    #[test]
    fn space_saving_keeps_heavy_hitters_under_a_flood() {
        let t = UnlistedTable::new(DEFAULT_CAPACITY);
        let heavy = [
            ("POST", "/api/{}/exports/{}"),
            ("GET", "/api/{}/reports"),
            ("DELETE", "/api/{}/exports/{}"),
        ];
        let mut n = 0u64;
        for i in 0..30_000u32 {
            if i % 10 == 0 {
                let (m, p) = heavy[(i / 10) as usize % 3];
                t.record(m, p);
            } else {
                t.record("GET", &format!("/flood/x{i}"));
            }
            n += 1;
        }
        let (read, write) = t.totals();
        assert_eq!(read + write, n);
        let r = t.report();
        assert_eq!(r.routes.len(), DEFAULT_CAPACITY);
        // Each heavy pair was recorded 1000 times (> n / capacity): it is in the table,
        // its count is an upper bound and count - error a lower bound.
        for (m, p) in heavy {
            let e = r
                .routes
                .iter()
                .find(|e| e.method == m && e.path == p)
                .unwrap_or_else(|| panic!("{m} {p} was evicted"));
            assert!(e.count >= 1000 && e.count - e.error <= 1000, "{e:?}");
        }
        // The heaviest come first.
        assert!(r.routes[..3].iter().all(|e| e.path.starts_with("/api/")));
        assert!(r.routes.windows(2).all(|w| w[0].count >= w[1].count));
        // The counts add up to the number of recorded requests.
        assert_eq!(r.routes.iter().map(|e| e.count).sum::<u64>(), n);
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let t = UnlistedTable::new(16);
        let mut buf = ShapeBuf::new();
        for i in 0..5_000u32 {
            let path = format!("/{}/{i}", "y".repeat((i % 200) as usize + 1));
            t.record("PATCH", path_shape(&path, &mut buf));
        }
        assert_eq!(t.len(), 16);
        assert!(
            t.text_bytes() <= 16 * (MAX_METHOD_BYTES + MAX_SHAPE_BYTES),
            "{}",
            t.text_bytes()
        );
    }

    #[test]
    fn poisoning_is_recovered() {
        let t = std::sync::Arc::new(UnlistedTable::new(4));
        let t2 = t.clone();
        let _ = std::thread::spawn(move || {
            let _g = t2.inner.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        t.record("GET", "/a");
        assert_eq!(t.totals(), (1, 0));
    }

    #[test]
    fn json_shape_and_round_trip() {
        let t = UnlistedTable::new(256);
        for _ in 0..12 {
            t.record("POST", "/api/{}/exports/{}");
        }
        t.record("GET", "/api/{}/reports");
        let v = t.to_json();
        assert_eq!(
            v,
            serde_json::json!({"capacity": 256, "total": {"read": 1, "write": 12}, "routes": [
                {"method": "POST", "path": "/api/{}/exports/{}", "method_kind": "write", "count": 12, "error": 0},
                {"method": "GET", "path": "/api/{}/reports", "method_kind": "read", "count": 1, "error": 0},
            ]})
        );
        let back: UnlistedReport = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, t.report());
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let t = UnlistedTable::new(8);
        std::thread::scope(|s| {
            for k in 0..2 {
                let t = &t;
                s.spawn(move || {
                    for i in 0..10_000u32 {
                        t.record(if k == 0 { "GET" } else { "PUT" }, &format!("/c/{}", i % 4));
                    }
                });
            }
        });
        assert_eq!(t.totals(), (10_000, 10_000));
        assert_eq!(
            t.report().routes.iter().map(|e| e.count).sum::<u64>(),
            20_000
        );
    }
}
