//! The bounded tenant table of a bulkhead: which bucket a request's tenant counts against.
//!
//! Bucket 0 is the anonymous bucket (no tenant). Buckets `1..=HASHED_BUCKETS` take every
//! tenant id not configured by name, hashed with a key drawn at random when the table is
//! built (so nobody outside can aim ids at one bucket); each keeps the most recent id seen
//! in it, truncated into an inline buffer, for statistics. Buckets after those belong to
//! the named tenants of the configuration: a flood of other ids can never share their
//! bucket. A bucket whose tenant leaves the configuration is retired: it keeps counting
//! the requests it holds and is reused for a new name once it is idle. The table
//! therefore holds `1 + HASHED_BUCKETS + named` buckets whatever the number of distinct
//! ids, and an idle bucket keeps no allocation.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// The number of buckets tenant ids that are not configured by name are hashed into.
pub const HASHED_BUCKETS: usize = 1024;
/// Bytes of a tenant id kept for statistics (longer ids are truncated).
pub const NAME_BYTES: usize = 48;

pub const ANONYMOUS: usize = 0;
const FIRST_NAMED: usize = 1 + HASHED_BUCKETS;
/// `Bucket::wait_pos` of a bucket with no waiters.
pub const NOT_WAITING: u32 = u32::MAX;

/// A tenant id, truncated to [`NAME_BYTES`] at a character boundary, stored inline.
#[derive(Clone, Copy)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_BYTES],
}

impl Name {
    pub const EMPTY: Name = Name {
        len: 0,
        bytes: [0; NAME_BYTES],
    };

    pub fn set(&mut self, s: &str) {
        let mut n = s.len().min(NAME_BYTES);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.len = n as u8;
    }

    pub fn as_str(&self) -> &str {
        // Always a whole prefix of a `str` cut at a character boundary.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Anonymous,
    Hashed,
    Named,
    /// A named bucket whose tenant left the configuration.
    Retired,
}

/// The counts and queue of one bucket; `E` is a queue entry (a waiter).
pub struct Bucket<E> {
    pub kind: Kind,
    pub weight: u32,
    pub inflight: usize,
    pub queue: VecDeque<E>,
    /// When it last got a slot or became active (a sequence number of the bulkhead):
    /// among tenants equally far below their shares, the lowest goes first.
    pub turn: u64,
    /// Its index in the bulkhead's list of buckets with waiters, or [`NOT_WAITING`].
    pub wait_pos: u32,
    pub name: Name,
}

impl<E> Bucket<E> {
    fn new(kind: Kind, weight: u32) -> Bucket<E> {
        Bucket {
            kind,
            weight,
            inflight: 0,
            queue: VecDeque::new(),
            turn: 0,
            wait_pos: NOT_WAITING,
            name: Name::EMPTY,
        }
    }

    /// Nothing in flight and nothing queued.
    pub fn is_idle(&self) -> bool {
        self.inflight == 0 && self.queue.is_empty()
    }
}

pub struct Table<E> {
    hasher: RandomState,
    named: HashMap<Box<str>, usize>,
    pub buckets: Vec<Bucket<E>>,
}

impl<E> Table<E> {
    pub fn new(weights: &[(String, u32)]) -> Table<E> {
        let mut buckets = Vec::with_capacity(FIRST_NAMED + weights.len());
        buckets.push(Bucket::new(Kind::Anonymous, 1));
        buckets.extend((0..HASHED_BUCKETS).map(|_| Bucket::new(Kind::Hashed, 1)));
        let mut table = Table {
            hasher: RandomState::new(),
            named: HashMap::new(),
            buckets,
        };
        table.configure(weights);
        table
    }

    /// The bucket of `tenant`. Does not allocate.
    pub fn index(&self, tenant: Option<&str>) -> usize {
        let Some(t) = tenant else {
            return ANONYMOUS;
        };
        if let Some(&i) = self.named.get(t) {
            return i;
        }
        1 + (self.hasher.hash_one(t) % HASHED_BUCKETS as u64) as usize
    }

    /// Apply a new list of named tenants: names that stay keep their bucket (with a new
    /// weight), names that go retire theirs, new names take an idle retired bucket or a
    /// new one. The caller recomputes whatever it sums over weights.
    pub fn configure(&mut self, weights: &[(String, u32)]) {
        let mut wanted: HashMap<&str, u32> = HashMap::new();
        for (name, w) in weights {
            wanted.insert(name, (*w).max(1));
        }
        let buckets = &mut self.buckets;
        self.named.retain(|name, &mut i| {
            let keep = wanted.contains_key(&**name);
            if !keep {
                buckets[i].kind = Kind::Retired;
            }
            keep
        });
        // In the configured order, so that the same configuration builds the same table.
        for (name, _) in weights {
            let w = wanted[name.as_str()];
            if let Some(&i) = self.named.get(name.as_str()) {
                self.buckets[i].weight = w;
                continue;
            }
            let free = (FIRST_NAMED..self.buckets.len())
                .find(|&i| self.buckets[i].kind == Kind::Retired && self.buckets[i].is_idle());
            let i = match free {
                Some(i) => {
                    self.buckets[i] = Bucket::new(Kind::Named, w);
                    i
                }
                None => {
                    self.buckets.push(Bucket::new(Kind::Named, w));
                    self.buckets.len() - 1
                }
            };
            self.buckets[i].name.set(name);
            self.named.insert(name.as_str().into(), i);
        }
    }

    /// Called when a request of `tenant` enters bucket `i`: a hashed bucket remembers it.
    pub fn note(&mut self, i: usize, tenant: Option<&str>) {
        if let (Some(t), Kind::Hashed) = (tenant, self.buckets[i].kind) {
            self.buckets[i].name.set(t);
        }
    }

    /// The tenant bucket `i` stands for, for statistics.
    pub fn label(&self, i: usize) -> String {
        let b = &self.buckets[i];
        match b.kind {
            Kind::Anonymous => "(anonymous)".to_string(),
            _ => b.name.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    #[test]
    fn anonymous_named_and_hashed_buckets() {
        let t: Table<()> = Table::new(&w(&[("vip", 4), ("gold", 2)]));
        assert_eq!(t.index(None), ANONYMOUS);
        let vip = t.index(Some("vip"));
        let gold = t.index(Some("gold"));
        assert!(vip >= FIRST_NAMED && gold >= FIRST_NAMED && vip != gold);
        assert_eq!(t.buckets[vip].weight, 4);
        assert_eq!(t.label(vip), "vip");
        // Every other id lands in a hashed bucket, the same one every time.
        for i in 0..10_000 {
            let id = format!("tenant-{i}");
            let b = t.index(Some(&id));
            assert!((1..FIRST_NAMED).contains(&b), "{id} -> {b}");
            assert_eq!(b, t.index(Some(&id)));
        }
        assert_eq!(t.buckets.len(), FIRST_NAMED + 2);
    }

    #[test]
    fn hashed_ids_spread_over_the_buckets() {
        let t: Table<()> = Table::new(&[]);
        let mut hits = vec![0u32; t.buckets.len()];
        for i in 0..100_000 {
            hits[t.index(Some(&format!("t{i}")))] += 1;
        }
        let used = hits[1..].iter().filter(|&&h| h > 0).count();
        let most = hits.iter().max().unwrap();
        assert_eq!(used, HASHED_BUCKETS);
        // ~98 per bucket on average.
        assert!(*most < 200, "{most}");
    }

    #[test]
    fn names_are_truncated_at_a_character_boundary() {
        let mut n = Name::EMPTY;
        n.set("short");
        assert_eq!(n.as_str(), "short");
        let long = "é".repeat(40); // 80 bytes
        n.set(&long);
        assert_eq!(n.as_str(), "é".repeat(24));
        n.set(&"x".repeat(100));
        assert_eq!(n.as_str().len(), NAME_BYTES);
        n.set("");
        assert_eq!(n.as_str(), "");
    }

    #[test]
    fn reconfigure_keeps_retires_and_reuses_buckets() {
        let mut t: Table<()> = Table::new(&w(&[("a", 1), ("b", 2)]));
        let (a, b) = (t.index(Some("a")), t.index(Some("b")));
        t.buckets[b].inflight = 1; // b is busy
        t.configure(&w(&[("a", 3), ("c", 1), ("d", 1)]));
        assert_eq!(t.index(Some("a")), a);
        assert_eq!(t.buckets[a].weight, 3);
        assert_eq!(t.buckets[b].kind, Kind::Retired);
        assert!(t.index(Some("b")) < FIRST_NAMED, "b is hashed now");
        let (c, d) = (t.index(Some("c")), t.index(Some("d")));
        assert!(c != b && d != b, "a busy retired bucket is not reused");
        assert_eq!(t.buckets.len(), FIRST_NAMED + 4);
        // Once idle, the retired bucket is reused.
        t.buckets[b].inflight = 0;
        t.configure(&w(&[("a", 3), ("c", 1), ("d", 1), ("e", 7)]));
        assert_eq!(t.index(Some("e")), b);
        assert_eq!(t.buckets[b].weight, 7);
        assert_eq!(t.label(b), "e");
        assert_eq!(t.buckets.len(), FIRST_NAMED + 4);
        // Weight 0 reads as 1; a name listed twice takes its last weight.
        t.configure(&w(&[("z", 0), ("y", 2), ("y", 5)]));
        assert_eq!(t.buckets[t.index(Some("z"))].weight, 1);
        assert_eq!(t.buckets[t.index(Some("y"))].weight, 5);
    }

    #[test]
    fn hashed_buckets_remember_the_latest_id() {
        let mut t: Table<()> = Table::new(&w(&[("vip", 1)]));
        let i = t.index(Some("someone"));
        t.note(i, Some("someone"));
        assert_eq!(t.label(i), "someone");
        let v = t.index(Some("vip"));
        t.note(v, Some("other"));
        assert_eq!(t.label(v), "vip");
    }
}
