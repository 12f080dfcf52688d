//! Behaviour of the bulkhead, on tokio's paused clock: fair shares, weights, FIFO order,
//! shedding and its reasons, timeouts, cancellation, `Retry-After`, reconfiguration,
//! bounded state under a flood of tenant ids, statistics; and a property test of the
//! invariants over random sequences of operations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use proptest::prelude::*;

use super::tenants::HASHED_BUCKETS;
use super::*;

/// Tenants the tests tell apart have buckets of their own (weight 1), so that no run
/// depends on where the random hash key puts them; other ids are hashed.
const NAMED: [&str; 8] = ["a", "b", "c", "x", "y", "warm", "light", "gold"];

fn config(max_inflight: usize, queue_per_tenant: usize) -> BulkheadConfig {
    BulkheadConfig {
        max_inflight,
        queue_per_tenant,
        queue_timeout: Duration::from_secs(10),
        retry_after_min: 1,
        retry_after_max: 60,
        weights: NAMED.iter().map(|n| (n.to_string(), 1)).collect(),
    }
}

/// `c` with other weights for some tenants (a name listed again takes its last weight).
fn weighted(mut c: BulkheadConfig, weights: &[(&str, u32)]) -> BulkheadConfig {
    c.weights
        .extend(weights.iter().map(|(n, w)| (n.to_string(), *w)));
    c
}

fn admitted(a: Acquire) -> Permit {
    match a {
        Acquire::Admitted(p) => p,
        other => panic!("not admitted: {other:?}"),
    }
}

fn queued(a: Acquire) -> Waiting {
    match a {
        Acquire::Queued(w) => w,
        other => panic!("not queued: {other:?}"),
    }
}

fn shed(a: Acquire) -> Shed {
    match a {
        Acquire::Shed(s) => s,
        other => panic!("not shed: {other:?}"),
    }
}

/// Poll once, without a waker worth the name.
fn poll(w: &mut Waiting) -> Option<Result<(Permit, Duration), Shed>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(w).poll(&mut cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// Records which waiters were woken, in order.
struct Notify {
    id: usize,
    woken: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.woken.lock().unwrap().push(self.id);
    }
}

/// A client population: submits requests, completes the oldest running one, collects
/// the waiters that were given a slot (in the order they were woken). Every operation
/// ends with the bulkhead's invariants checked.
struct Sim {
    bh: Arc<Bulkhead>,
    woken: Arc<Mutex<Vec<usize>>>,
    next_id: usize,
    waiting: HashMap<usize, (String, Waiting)>,
    running: VecDeque<(String, Permit)>,
    timed_out: Vec<(String, Shed)>,
    /// Check the invariants after every operation (off for floods: they recount).
    checked: bool,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Running,
    Waiting(usize),
    Shed(Shed),
}

impl Sim {
    fn new(c: BulkheadConfig) -> Sim {
        Sim {
            bh: Bulkhead::new(c),
            woken: Arc::default(),
            next_id: 0,
            waiting: HashMap::new(),
            running: VecDeque::new(),
            timed_out: Vec::new(),
            checked: true,
        }
    }

    fn check(&self) {
        if self.checked {
            self.bh.check_invariants();
        }
    }

    fn label(tenant: Option<&str>) -> String {
        tenant.unwrap_or("(anonymous)").to_string()
    }

    fn submit(&mut self, tenant: Option<&str>) -> Outcome {
        let out = match self.bh.try_acquire(tenant) {
            Acquire::Admitted(p) => {
                self.running.push_back((Self::label(tenant), p));
                Outcome::Running
            }
            Acquire::Queued(mut w) => {
                let id = self.next_id;
                self.next_id += 1;
                let waker = Waker::from(Arc::new(Notify {
                    id,
                    woken: self.woken.clone(),
                }));
                let r = Pin::new(&mut w).poll(&mut Context::from_waker(&waker));
                assert!(r.is_pending(), "a fresh waiter has nothing yet");
                self.waiting.insert(id, (Self::label(tenant), w));
                Outcome::Waiting(id)
            }
            Acquire::Shed(s) => Outcome::Shed(s),
        };
        self.check();
        out
    }

    /// Submit `n` requests of `tenant`, expecting none to be shed.
    fn fill(&mut self, tenant: &str, n: usize) {
        for _ in 0..n {
            let out = self.submit(Some(tenant));
            assert!(!matches!(out, Outcome::Shed(_)), "{tenant}: {out:?}");
        }
    }

    /// Poll the woken waiters: the tenants that got a slot, in the order they got it.
    fn harvest(&mut self) -> Vec<String> {
        let woken = std::mem::take(&mut *self.woken.lock().unwrap());
        let mut granted = Vec::new();
        for id in woken {
            let Some((tenant, mut w)) = self.waiting.remove(&id) else {
                continue;
            };
            match poll(&mut w) {
                Some(Ok((permit, _))) => {
                    granted.push(tenant.clone());
                    self.running.push_back((tenant, permit));
                }
                Some(Err(shed)) => self.timed_out.push((tenant, shed)),
                None => {
                    self.waiting.insert(id, (tenant, w));
                }
            }
        }
        self.check();
        granted
    }

    /// Complete the oldest running request; the tenants given the freed slot.
    fn step(&mut self) -> Vec<String> {
        self.running.pop_front().expect("something runs");
        self.harvest()
    }

    fn running_of(&self, tenant: &str) -> usize {
        self.running.iter().filter(|(t, _)| t == tenant).count()
    }

    fn waiting_of(&self, tenant: &str) -> usize {
        self.waiting.values().filter(|(t, _)| t == tenant).count()
    }

    fn clear(&mut self) {
        self.waiting.clear();
        self.running.clear();
        self.bh.check_invariants();
        let s = self.bh.stats(10);
        assert_eq!((s.inflight, s.queued, s.tenants_active), (0, 0, 0));
        assert!(s.top.is_empty());
    }
}

#[test]
fn the_types_travel_between_tasks() {
    fn send<T: Send + 'static>() {}
    fn future<F: Future + Send + Unpin + 'static>(_: Option<F>) {}
    send::<Permit>();
    send::<Acquire>();
    send::<Arc<Bulkhead>>();
    future::<Waiting>(None);
}

#[tokio::test(start_paused = true)]
async fn uncontended_one_tenant_uses_the_whole_ceiling() {
    let bh = Bulkhead::new(config(4, 2));
    let permits: Vec<Permit> = (0..4)
        .map(|_| admitted(bh.try_acquire(Some("a"))))
        .collect();
    let s = bh.stats(5);
    assert_eq!((s.inflight, s.queued, s.tenants_active), (4, 0, 1));
    assert_eq!(s.top[0].tenant, "a");
    assert_eq!(s.top[0].share, 4.0);
    let mut w = queued(bh.try_acquire(Some("a")));
    assert!(poll(&mut w).is_none());
    drop(permits);
    // The slot went straight to the waiter.
    let (p, waited) = poll(&mut w).unwrap().unwrap();
    assert_eq!(waited, Duration::ZERO);
    assert_eq!(bh.stats(0).inflight, 1);
    drop(p);
    bh.check_invariants();
    assert_eq!(bh.stats(0).inflight, 0);
}

#[tokio::test(start_paused = true)]
async fn equal_tenants_converge_to_equal_shares_and_alternate() {
    let mut sim = Sim::new(config(4, 100));
    sim.fill("a", 4 + 20);
    sim.fill("b", 20);
    assert_eq!(sim.running_of("a"), 4);
    // The first freed slots go to b, which is furthest below its share...
    assert_eq!(sim.step(), ["b"]);
    assert_eq!(sim.step(), ["b"]);
    // ...until both have 2; then each freed slot goes back to the tenant that freed it.
    let mut grants: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..16 {
        for t in sim.step() {
            *grants.entry(t).or_default() += 1;
        }
        assert_eq!((sim.running_of("a"), sim.running_of("b")), (2, 2));
    }
    assert_eq!((grants["a"], grants["b"]), (8, 8));
    let s = sim.bh.stats(2);
    assert_eq!(s.top.len(), 2);
    assert!(s.top.iter().all(|t| t.share == 2.0));
    sim.clear();
}

#[tokio::test(start_paused = true)]
async fn equal_tenants_tied_on_load_take_turns() {
    // x holds every slot; a, b and c wait. Each slot x frees goes to whichever of them
    // has the least in flight and, among equals, was served least recently: they take
    // turns, in the order they came.
    let mut sim = Sim::new(config(6, 10));
    sim.fill("x", 6);
    sim.fill("a", 2);
    sim.fill("b", 2);
    sim.fill("c", 2);
    let mut order = Vec::new();
    for _ in 0..6 {
        order.extend(sim.step()); // x's completions
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
    sim.clear();
}

#[tokio::test(start_paused = true)]
async fn a_weight_four_tenant_gets_four_times_the_slots() {
    let mut sim = Sim::new(weighted(config(10, 1000), &[("heavy", 4)]));
    sim.fill("light", 10 + 500);
    sim.fill("heavy", 500);
    let mut grants: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..400 {
        for t in sim.step() {
            *grants.entry(t).or_default() += 1;
        }
        if i >= 20 {
            // Converged: 8 and 2 in flight.
            assert_eq!((sim.running_of("heavy"), sim.running_of("light")), (8, 2));
        }
    }
    let (h, l) = (grants["heavy"] as f64, grants["light"] as f64);
    assert!((h / l - 4.0).abs() < 0.3, "heavy {h}, light {l}");
    let s = sim.bh.stats(5);
    let share = |t: &str| s.top.iter().find(|x| x.tenant == t).unwrap().share;
    assert_eq!((share("heavy"), share("light")), (8.0, 2.0));
    sim.clear();
}

#[tokio::test(start_paused = true)]
async fn waiters_of_one_tenant_are_served_in_arrival_order() {
    let bh = Bulkhead::new(config(1, 10));
    let first = admitted(bh.try_acquire(Some("a")));
    let mut ws: Vec<Waiting> = (0..5).map(|_| queued(bh.try_acquire(Some("a")))).collect();
    let mut current = first;
    for i in 0..5 {
        assert!(ws[i..].iter_mut().all(|w| poll(w).is_none()));
        drop(current);
        // Only the oldest is served.
        let (p, _) = poll(&mut ws[i]).unwrap().unwrap();
        assert!(ws[i + 1..].iter_mut().all(|w| poll(w).is_none()));
        current = p;
    }
    drop(current);
    drop(ws); // all resolved: dropping them changes nothing
    bh.check_invariants();
    assert_eq!(bh.stats(0).inflight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_arrival_does_not_overtake_waiters() {
    let bh = Bulkhead::new(config(1, 10));
    let held = admitted(bh.try_acquire(Some("a")));
    let mut b = queued(bh.try_acquire(Some("b")));
    drop(held);
    // The slot is b's although b has not run yet: c, with nothing in flight, queues.
    let s = bh.stats(0);
    assert_eq!((s.inflight, s.queued), (1, 0));
    let mut c = queued(bh.try_acquire(Some("c")));
    let mut anon = queued(bh.try_acquire(None));
    let (pb, _) = poll(&mut b).unwrap().unwrap();
    assert!(poll(&mut c).is_none());
    drop(pb);
    let (pc, _) = poll(&mut c).unwrap().unwrap();
    assert!(poll(&mut anon).is_none());
    drop(pc);
    let (pa, _) = poll(&mut anon).unwrap().unwrap();
    assert_eq!(pa.bucket(), 0, "the anonymous bucket");
    drop(pa);
    bh.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_sheds_by_tenant_or_globally() {
    let bh = Bulkhead::new(config(4, 1));
    let a: Vec<Permit> = (0..4)
        .map(|_| admitted(bh.try_acquire(Some("a"))))
        .collect();
    let _aq = queued(bh.try_acquire(Some("a")));
    // a has all 4 slots, its share is 4: over its share.
    assert_eq!(shed(bh.try_acquire(Some("a"))).reason, ShedReason::Tenant);
    // b has nothing in flight: its queue is full, but it is within its share (2).
    let _bq = queued(bh.try_acquire(Some("b")));
    assert_eq!(shed(bh.try_acquire(Some("b"))).reason, ShedReason::Global);
    // With b active a's share is 2; a still has 4.
    assert_eq!(shed(bh.try_acquire(Some("a"))).reason, ShedReason::Tenant);
    assert_eq!(bh.stats(0).shed, [1, 2, 0]);
    drop(a);
    bh.check_invariants();

    // No queueing at all.
    let bh = Bulkhead::new(config(2, 0));
    let _a: Vec<Permit> = (0..2)
        .map(|_| admitted(bh.try_acquire(Some("a"))))
        .collect();
    assert_eq!(shed(bh.try_acquire(Some("a"))).reason, ShedReason::Tenant);
    assert_eq!(shed(bh.try_acquire(Some("b"))).reason, ShedReason::Global);
    assert_eq!(shed(bh.try_acquire(None)).reason, ShedReason::Global);
    assert_eq!(bh.stats(0).shed, [2, 1, 0]);
    bh.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_shed_after_the_queue_timeout() {
    let bh = Bulkhead::new(config(1, 4));
    let held = admitted(bh.try_acquire(Some("a")));
    let mut b = queued(bh.try_acquire(Some("b")));
    let mut b2 = queued(bh.try_acquire(Some("b")));
    assert!(poll(&mut b).is_none());
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(poll(&mut b).is_none());
    tokio::time::advance(Duration::from_millis(2)).await;
    let s = poll(&mut b).unwrap().unwrap_err();
    assert_eq!(s.reason, ShedReason::QueueTimeout);
    assert_eq!(s.retry_after, 1, "no drain measured yet: the minimum");
    let st = bh.stats(0);
    assert_eq!((st.queued, st.shed), (1, [0, 0, 1]));
    drop(b);
    bh.check_invariants();

    // A slot that arrived before the waiter ran wins over its timeout.
    drop(held);
    tokio::time::advance(Duration::from_secs(60)).await;
    let (p, waited) = poll(&mut b2).unwrap().unwrap();
    assert_eq!(waited, Duration::from_millis(10_001 + 60_000));
    drop(p);
    bh.check_invariants();
    assert_eq!(bh.stats(0).shed, [0, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_future_fires_through_the_runtime() {
    let bh = Bulkhead::new(config(1, 4));
    let _held = admitted(bh.try_acquire(None));
    let started = tokio::time::Instant::now();
    let err = bh.acquire(None).await.unwrap_err();
    assert_eq!(err.reason, ShedReason::QueueTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    bh.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiter_frees_its_place_and_any_slot_it_was_given() {
    let bh = Bulkhead::new(config(1, 1));
    let held = admitted(bh.try_acquire(Some("a")));
    let b = queued(bh.try_acquire(Some("b")));
    assert_eq!(shed(bh.try_acquire(Some("b"))).reason, ShedReason::Global);
    drop(b);
    assert_eq!(bh.stats(0).queued, 0);
    // Its place is free at once.
    let b = queued(bh.try_acquire(Some("b")));
    let mut c = queued(bh.try_acquire(Some("c")));
    // The slot goes to b, which never runs: dropping it hands the slot on to c.
    drop(held);
    assert_eq!(bh.stats(0).inflight, 1);
    let rate = bh.stats(0).drain_rate;
    drop(b);
    let s = bh.stats(5);
    assert_eq!((s.inflight, s.queued, s.tenants_active), (1, 0, 1));
    assert_eq!(s.top[0].tenant, "c");
    // A slot handed to a waiter that went away is not a completion.
    assert_eq!(s.drain_rate, rate);
    let (p, _) = poll(&mut c).unwrap().unwrap();
    drop(p);
    drop(c);
    bh.check_invariants();
    let s = bh.stats(5);
    assert_eq!((s.inflight, s.queued, s.tenants_active), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn permits_release_wherever_they_are_dropped() {
    let bh = Bulkhead::new(config(8, 8));
    let mut permits: Vec<Permit> = (0..8)
        .map(|i| admitted(bh.try_acquire(Some(if i % 2 == 0 { "a" } else { "b" }))))
        .collect();
    let waiting: Vec<Waiting> = (0..4).map(|_| queued(bh.try_acquire(None))).collect();
    // In another thread.
    let p = permits.pop().unwrap();
    std::thread::spawn(move || drop(p)).join().unwrap();
    // In a task, as a response body would.
    let p = permits.pop().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(p);
    })
    .await
    .unwrap();
    // Waiters run in tasks; each one got a slot.
    let tasks: Vec<_> = waiting
        .into_iter()
        .map(|w| {
            tokio::spawn(async move {
                let (p, _) = w.await.unwrap();
                drop(p);
            })
        })
        .collect();
    drop(permits);
    for t in tasks {
        t.await.unwrap();
    }
    bh.check_invariants();
    let s = bh.stats(5);
    assert_eq!((s.inflight, s.queued, s.tenants_active), (0, 0, 0));
    assert!(s.drain_rate > 0.0);
}

/// Measure a steady drain of `per_sec` completions per second for 10 s, with `n` slots.
async fn drain_at(bh: &Arc<Bulkhead>, n: usize, per_sec: u64) -> VecDeque<Permit> {
    let mut held: VecDeque<Permit> = (0..n)
        .map(|_| admitted(bh.try_acquire(Some("warm"))))
        .collect();
    for _ in 0..10 * per_sec {
        tokio::time::advance(Duration::from_millis(1000 / per_sec)).await;
        held.pop_front();
        held.push_back(admitted(bh.try_acquire(Some("warm"))));
    }
    held
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_bounded_and_grows_with_the_queue_ahead() {
    let c = BulkheadConfig {
        retry_after_min: 2,
        retry_after_max: 30,
        ..config(2, 1)
    };
    let bh = Bulkhead::new(c);
    let _held = drain_at(&bh, 2, 10).await;
    let rate = bh.stats(0).drain_rate;
    assert!((rate - 10.0).abs() < 0.5, "{rate}");
    // Distinct tenants queue one request each; one more request of a queued tenant (with
    // nothing in flight) is shed globally, with every queued request ahead of it.
    let mut waiters = Vec::new();
    let mut next = 0;
    let mut samples: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
    for ahead in [1, 30, 100, 400] {
        while bh.stats(0).queued < ahead {
            next += 1;
            if let Acquire::Queued(w) = bh.try_acquire(Some(&format!("t{next}"))) {
                waiters.push(w);
            }
        }
        let probe = format!("t{next}");
        let (mut lo, mut hi) = (u32::MAX, 0);
        for _ in 0..200 {
            let s = shed(bh.try_acquire(Some(&probe)));
            assert_eq!(s.reason, ShedReason::Global);
            lo = lo.min(s.retry_after);
            hi = hi.max(s.retry_after);
        }
        samples.insert(ahead, (lo, hi));
    }
    // (ahead + 1) / 10 per second, jittered by [0.8, 1.2], rounded up, within [2, 30].
    assert_eq!(samples[&1], (2, 2));
    let (lo, hi) = samples[&30];
    assert!((3..=4).contains(&lo) && hi == 4, "{lo}..{hi}");
    let (lo, hi) = samples[&100];
    assert!(
        (8..=10).contains(&lo) && (11..=13).contains(&hi),
        "{lo}..{hi}: jittered"
    );
    assert_eq!(samples[&400], (30, 30));
    bh.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn retry_after_of_a_tenant_counts_its_own_queue_at_its_share_of_the_drain() {
    let c = BulkheadConfig {
        retry_after_max: 1000,
        ..weighted(config(4, 20), &[("big", 3)])
    };
    let bh = Bulkhead::new(c);
    let _held = drain_at(&bh, 4, 20).await;
    // "warm" (weight 1) holds all 4 slots; "big" (weight 3) queues 20.
    let _big: Vec<Waiting> = (0..20)
        .map(|_| queued(bh.try_acquire(Some("big"))))
        .collect();
    let _warm: Vec<Waiting> = (0..20)
        .map(|_| queued(bh.try_acquire(Some("warm"))))
        .collect();
    // warm is over its share (1 of 4): 21 / (20 per second * 1/4) = 4.2 s, jittered.
    for _ in 0..100 {
        let s = shed(bh.try_acquire(Some("warm")));
        assert_eq!(s.reason, ShedReason::Tenant);
        assert!((4..=6).contains(&s.retry_after), "{}", s.retry_after);
    }
    // big is within its share (3): global, 40 ahead: 41 / 20 = 2.05 s, jittered.
    for _ in 0..100 {
        let s = shed(bh.try_acquire(Some("big")));
        assert_eq!(s.reason, ShedReason::Global);
        assert!((2..=3).contains(&s.retry_after), "{}", s.retry_after);
    }
}

#[tokio::test(start_paused = true)]
async fn reconfigure_up_hands_slots_over_at_once_and_down_stops_granting() {
    // b is named with weight 1 throughout, so that its new weight applies to its bucket.
    let mut sim = Sim::new(config(2, 10));
    sim.fill("a", 2 + 3);
    sim.fill("b", 2);
    sim.bh.reconfigure(config(5, 10));
    let granted = sim.harvest();
    assert_eq!(granted.len(), 3, "{granted:?}");
    assert_eq!((sim.running_of("a"), sim.running_of("b")), (3, 2));
    let s = sim.bh.stats(0);
    assert_eq!((s.max_inflight, s.inflight, s.queued), (5, 5, 2));

    // Down to 1: nothing is revoked, nothing granted until in flight < 1.
    sim.bh.reconfigure(config(1, 10));
    for left in (1..5).rev() {
        assert!(sim.step().is_empty());
        assert_eq!(sim.bh.stats(0).inflight, left);
    }
    assert_eq!(sim.step(), ["a"]);
    assert_eq!(sim.bh.stats(0).inflight, 1);

    // New weights apply to the waiters already queued.
    sim.fill("b", 4);
    sim.fill("a", 4);
    sim.bh.reconfigure(weighted(config(4, 10), &[("b", 3)]));
    sim.harvest();
    assert_eq!((sim.running_of("a"), sim.running_of("b")), (1, 3));
    assert_eq!(sim.bh.config().max_inflight, 4);
    sim.clear();
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_tenant_ids_keep_the_state_bounded() {
    let mut sim = Sim::new(weighted(config(64, 2), &[("vip", 32)]));
    let (buckets, _) = sim.bh.footprint();
    assert_eq!(buckets, 1 + HASHED_BUCKETS + NAMED.len() + 1);
    sim.checked = false;
    for i in 0..100_000 {
        sim.submit(Some(&format!("flood-{i}")));
    }
    sim.bh.check_invariants();
    let s = sim.bh.stats(3);
    assert_eq!(s.inflight, 64);
    assert!(s.queued <= 2 * HASHED_BUCKETS, "{}", s.queued);
    assert!(s.tenants_active <= HASHED_BUCKETS);
    assert_eq!(
        s.shed.iter().sum::<u64>() as usize,
        100_000 - 64 - s.queued,
        "the rest was shed"
    );
    assert!(s.top.iter().all(|t| t.tenant.starts_with("flood-")));
    let (buckets_now, queue_capacity) = sim.bh.footprint();
    assert_eq!(buckets_now, buckets);
    assert!(queue_capacity <= 4 * HASHED_BUCKETS, "{queue_capacity}");

    // The named tenant has its own queue, which the flood never fills, and is served
    // first when a slot frees (it is as far below its share as anyone, and heavier).
    assert!(matches!(sim.submit(Some("vip")), Outcome::Waiting(_)));
    assert!(matches!(sim.submit(Some("vip")), Outcome::Waiting(_)));
    assert_eq!(
        sim.submit(Some("vip")),
        Outcome::Shed(sim_shed_global(&sim))
    );
    assert_eq!(sim.step(), ["vip"]);
    // While the flood goes on (each completion replaced by a new id), vip always gets the
    // next slot when it has nothing in flight.
    let mut next = 100_000;
    for _ in 0..500 {
        for t in sim.step() {
            assert!(t == "vip" || t.starts_with("flood-"));
        }
        if sim.waiting_of("vip") == 0 {
            sim.submit(Some("vip"));
        }
        next += 1;
        sim.submit(Some(&format!("flood-{next}")));
        assert!(sim.running_of("vip") >= 1, "vip starved");
        let (b, _) = sim.bh.footprint();
        assert_eq!(b, buckets);
    }
    sim.bh.check_invariants();
    let top = sim.bh.stats(HASHED_BUCKETS + 2).top;
    let vip = top.iter().find(|t| t.tenant == "vip").unwrap();
    assert_eq!(vip.weight, 32);
    sim.clear();
    // Everything idle: no queue keeps an allocation.
    assert_eq!(sim.bh.footprint(), (buckets, 0));
}

/// The `Shed` a request within its share gets when no measurement exists yet.
fn sim_shed_global(sim: &Sim) -> Shed {
    Shed {
        reason: ShedReason::Global,
        retry_after: sim.bh.config().retry_after_min,
    }
}

#[tokio::test(start_paused = true)]
async fn stats_name_the_busiest_tenants() {
    // The long id is the only hashed one.
    let mut sim = Sim::new(weighted(config(6, 10), &[("gold", 2)]));
    sim.fill("gold", 3);
    sim.fill("x", 2);
    sim.submit(None);
    sim.fill("x", 3);
    sim.fill("y", 1);
    sim.fill("gold", 1);
    let long = "t".repeat(100);
    sim.fill(&long, 1);
    let s = sim.bh.stats(3);
    assert_eq!((s.max_inflight, s.inflight, s.queued), (6, 6, 6));
    assert_eq!(s.tenants_active, 5);
    let top: Vec<(&str, usize, usize)> = s
        .top
        .iter()
        .map(|t| (t.tenant.as_str(), t.inflight, t.queued))
        .collect();
    assert_eq!(top, [("x", 2, 3), ("gold", 3, 1), ("(anonymous)", 1, 0)]);
    // Active weights: gold 2, x, y, anonymous and the long one 1 each: 6.
    assert_eq!(s.top[0].share, 1.0);
    assert_eq!(s.top[1].share, 2.0);
    assert_eq!(s.top[1].weight, 2);
    let all = sim.bh.stats(100).top;
    assert_eq!(all.len(), 5);
    assert!(all.iter().any(|t| t.tenant == "t".repeat(NAME_BYTES)));
    assert!(sim.bh.stats(0).top.is_empty());
    sim.clear();
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Complete(usize),
    Cancel(usize),
    Advance(u64),
    Poll,
    Reconfigure(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..6).prop_map(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u64..1500).prop_map(Op::Advance),
        2 => Just(Op::Poll),
        1 => (1usize..6, 0usize..4).prop_map(|(m, q)| Op::Reconfigure(m, q)),
    ]
}

const TENANTS: [Option<&str>; 6] = [
    None,
    Some("a"),
    Some("b"),
    Some("heavy"),
    Some("x1"),
    Some("x2"),
];

fn prop_config(max: usize, queue: usize) -> BulkheadConfig {
    BulkheadConfig {
        queue_timeout: Duration::from_secs(1),
        ..weighted(config(max, queue), &[("heavy", 3), ("b", 2)])
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// In flight never exceeds the ceiling (or, after it was lowered, what was in flight
    /// then), the running totals always match the buckets, nobody waits while a slot is
    /// free, and everything returns to zero once all permits and waiters are dropped.
    #[test]
    fn invariants_hold_over_random_operations(ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut sim = Sim::new(prop_config(3, 2));
        let mut max = 3;
        let mut allowed = 3;
        let mut waiters: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire(t) => {
                    if let Outcome::Waiting(id) = sim.submit(TENANTS[t]) {
                        waiters.push(id);
                    }
                }
                Op::Complete(k) => {
                    if !sim.running.is_empty() {
                        let k = k % sim.running.len();
                        sim.running.remove(k);
                    }
                }
                Op::Cancel(k) => {
                    waiters.retain(|id| sim.waiting.contains_key(id));
                    if !waiters.is_empty() {
                        let id = waiters.swap_remove(k % waiters.len());
                        sim.waiting.remove(&id);
                    }
                }
                Op::Advance(ms) => rt.block_on(tokio::time::advance(Duration::from_millis(ms))),
                Op::Poll => {
                    sim.harvest();
                }
                Op::Reconfigure(m, q) => {
                    sim.bh.reconfigure(prop_config(m, q));
                    max = m;
                    allowed = m.max(sim.bh.stats(0).inflight);
                }
            }
            sim.bh.check_invariants();
            let s = sim.bh.stats(10);
            prop_assert!(s.inflight <= allowed, "{} in flight, {} allowed", s.inflight, allowed);
            allowed = max.max(s.inflight.min(allowed));
            // Slots given to waiters not polled yet are in flight too.
            prop_assert!(s.inflight >= sim.running.len());
            prop_assert_eq!(s.queued + (s.inflight - sim.running.len()), sim.waiting.len());
            prop_assert!(s.top.iter().map(|t| t.inflight + t.queued).sum::<usize>() == s.inflight + s.queued);
            for (tenant, shed) in &sim.timed_out {
                prop_assert_eq!(shed.reason, ShedReason::QueueTimeout, "{}", tenant);
            }
        }
        sim.clear();
    }
}
