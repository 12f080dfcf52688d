//! The bulkhead: its state behind one `std::sync::Mutex` (held for a few counter updates,
//! never across an `.await`), the [`Permit`] that holds a slot, and the [`Waiting`] future
//! of a queued request.
//!
//! Slots are handed over under the lock: a release (or a higher ceiling) gives the slot
//! straight to the chosen waiter, counting it in flight before the waiter's task even
//! runs, so a slot is never free while anyone waits. The waiter learns of it through its
//! own small cell (`Waiter`), whose waker is woken after the bulkhead's lock is released.
//! A `Waiting` dropped before it saw its grant gives the slot back (or leaves its queue)
//! in its `Drop`. Nothing that takes the bulkhead's lock is ever dropped under it.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, Sleep};

use super::drain::{self, Drain};
use super::tenants::{Table, NOT_WAITING};
use super::{BulkheadConfig, BulkheadStats, Shed, ShedReason, TenantStats};

/// Bounds the requests in flight to one target and shares the slots among tenants (see
/// the module documentation of [`crate::admission`]).
pub struct Bulkhead {
    state: Mutex<State>,
}

/// The outcome of [`Bulkhead::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// A slot, at once.
    Admitted(Permit),
    /// In the tenant's queue: await it for a slot or a [`Shed`] (`QueueTimeout`).
    Queued(Waiting),
    /// Not admitted; answer with `Retry-After: shed.retry_after`.
    Shed(Shed),
}

/// A slot of a bulkhead, released when dropped.
pub struct Permit {
    bulkhead: Arc<Bulkhead>,
    bucket: u32,
}

/// A queued request: resolves to a [`Permit`] and the time it waited, or to a
/// `QueueTimeout` [`Shed`]. Dropping it leaves the queue (or releases a slot it was
/// already given). Must be polled inside a tokio runtime with time enabled.
pub struct Waiting {
    bulkhead: Arc<Bulkhead>,
    waiter: Arc<Waiter>,
    bucket: u32,
    since: Instant,
    deadline: Instant,
    /// Created at the first poll, so that `try_acquire` needs no runtime.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Resolved (the permit or the shed was returned): nothing for `Drop` to undo.
    done: bool,
}

/// The cell through which a waiter learns that it was given a slot. `granted` is set
/// under the bulkhead's lock, so checked under that lock it is final.
#[derive(Default)]
struct Waiter {
    state: Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    granted: bool,
    waker: Option<Waker>,
}

impl Waiter {
    fn lock(&self) -> MutexGuard<'_, WaiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mark it granted; its waker, to wake once the bulkhead's lock is released.
    fn grant(&self) -> Option<Waker> {
        let mut s = self.lock();
        s.granted = true;
        s.waker.take()
    }

    fn is_granted(&self) -> bool {
        self.lock().granted
    }

    /// Granted? If not, wake `waker` when it is.
    fn register(&self, waker: &Waker) -> bool {
        let mut s = self.lock();
        if s.granted {
            return true;
        }
        match &mut s.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        false
    }
}

/// Wakers of granted waiters, woken after the lock is released. A release hands over at
/// most one slot: that one is kept inline.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, w: Waker) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.more.push(w);
        }
    }

    fn wake(self) {
        self.first
            .into_iter()
            .chain(self.more)
            .for_each(Waker::wake);
    }
}

/// The configuration, made safe to compute with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max: usize,
    queue_per_tenant: usize,
    queue_timeout: Duration,
    retry_min: u32,
    retry_max: u32,
}

impl Limits {
    fn of(c: &BulkheadConfig) -> Limits {
        let retry_min = c.retry_after_min.max(1);
        Limits {
            max: c.max_inflight.max(1),
            queue_per_tenant: c.queue_per_tenant,
            queue_timeout: c.queue_timeout,
            retry_min,
            retry_max: c.retry_after_max.max(retry_min),
        }
    }
}

enum Decision {
    Admit,
    Queue,
    Shed(Shed),
}

struct State {
    config: BulkheadConfig,
    limits: Limits,
    table: Table<Arc<Waiter>>,
    inflight: usize,
    queued: usize,
    /// Buckets with requests in flight or queued, and the sum of their weights.
    active: usize,
    active_weight: u64,
    /// Buckets with waiters (each knows its position: `Bucket::wait_pos`).
    waiting: Vec<u32>,
    /// Stamps `Bucket::turn` (round-robin among equals).
    seq: u64,
    drain: Drain,
    rng: SmallRng,
    shed: [u64; 3],
}

impl State {
    fn new(config: BulkheadConfig) -> State {
        let table = Table::new(&config.weights);
        let waiting = Vec::with_capacity(table.buckets.len());
        State {
            limits: Limits::of(&config),
            config,
            table,
            inflight: 0,
            queued: 0,
            active: 0,
            active_weight: 0,
            waiting,
            seq: 0,
            drain: Drain::default(),
            rng: SmallRng::from_entropy(),
            shed: [0; 3],
        }
    }

    /// Admit, queue or shed a request of bucket `i` (admission is counted here; the
    /// caller enqueues).
    fn decide(&mut self, i: usize, now: Instant) -> Decision {
        if self.queued == 0 && self.inflight < self.limits.max {
            self.drain.admitted(now, self.inflight == 0);
            self.activate(i);
            self.grant(i);
            return Decision::Admit;
        }
        if self.table.buckets[i].queue.len() < self.limits.queue_per_tenant {
            return Decision::Queue;
        }
        let b = &self.table.buckets[i];
        let at_share = b.inflight as u128 * u128::from(self.weight_with(i))
            >= self.limits.max as u128 * u128::from(b.weight);
        let reason = if at_share {
            ShedReason::Tenant
        } else {
            ShedReason::Global
        };
        Decision::Shed(self.shed(reason, i, now))
    }

    /// The sum of active weights, `i` counted as active.
    fn weight_with(&self, i: usize) -> u64 {
        let b = &self.table.buckets[i];
        self.active_weight + if b.is_idle() { u64::from(b.weight) } else { 0 }
    }

    fn shed(&mut self, reason: ShedReason, i: usize, now: Instant) -> Shed {
        self.shed[reason as usize] += 1;
        let (ahead, fraction) = match reason {
            ShedReason::Global => (self.queued, 1.0),
            ShedReason::Tenant | ShedReason::QueueTimeout => {
                let b = &self.table.buckets[i];
                (
                    b.queue.len(),
                    f64::from(b.weight) / self.weight_with(i) as f64,
                )
            }
        };
        let jitter = self.rng.gen_range(drain::JITTER);
        let retry_after = drain::retry_after(
            ahead,
            self.drain.rate(now),
            fraction,
            jitter,
            self.limits.retry_min,
            self.limits.retry_max,
        );
        Shed {
            reason,
            retry_after,
        }
    }

    /// Count bucket `i` as active if it was idle (before it gets a request); it joins
    /// the round behind the tenants already active.
    fn activate(&mut self, i: usize) {
        let b = &mut self.table.buckets[i];
        if b.is_idle() {
            self.active += 1;
            self.active_weight += u64::from(b.weight);
            self.seq += 1;
            b.turn = self.seq;
        }
    }

    /// Forget bucket `i` if it became idle (after it lost a request).
    fn settle(&mut self, i: usize) {
        let b = &mut self.table.buckets[i];
        if b.is_idle() {
            self.active -= 1;
            self.active_weight -= u64::from(b.weight);
            // An idle bucket keeps no allocation.
            b.queue = VecDeque::new();
        }
    }

    /// Count a slot for (active) bucket `i`.
    fn grant(&mut self, i: usize) {
        debug_assert!(self.inflight < self.limits.max);
        self.seq += 1;
        let b = &mut self.table.buckets[i];
        b.inflight += 1;
        b.turn = self.seq;
        self.inflight += 1;
    }

    fn enqueue(&mut self, i: usize, waiter: Arc<Waiter>) {
        self.activate(i);
        let b = &mut self.table.buckets[i];
        if b.queue.is_empty() {
            b.wait_pos = self.waiting.len() as u32;
            self.waiting.push(i as u32);
        }
        b.queue.push_back(waiter);
        self.queued += 1;
    }

    /// Take bucket `i` off the list of buckets with waiters (its queue is empty).
    fn unlist(&mut self, i: usize) {
        let pos = std::mem::replace(&mut self.table.buckets[i].wait_pos, NOT_WAITING) as usize;
        self.waiting.swap_remove(pos);
        if let Some(&moved) = self.waiting.get(pos) {
            self.table.buckets[moved as usize].wait_pos = pos as u32;
        }
    }

    /// Remove a waiter from bucket `i`'s queue; false if it is not there.
    fn remove(&mut self, i: usize, waiter: &Arc<Waiter>) -> bool {
        let b = &mut self.table.buckets[i];
        let Some(pos) = b.queue.iter().position(|w| Arc::ptr_eq(w, waiter)) else {
            return false;
        };
        b.queue.remove(pos);
        let empty = b.queue.is_empty();
        self.queued -= 1;
        if empty {
            self.unlist(i);
        }
        self.settle(i);
        true
    }

    /// Give back a slot of bucket `i`; `completed`: a request was served (not a slot
    /// handed to a waiter that had gone).
    fn release(&mut self, i: usize, now: Instant, completed: bool, wakers: &mut Wakers) {
        let b = &mut self.table.buckets[i];
        debug_assert!(b.inflight > 0 && self.inflight > 0);
        b.inflight = b.inflight.saturating_sub(1);
        self.inflight = self.inflight.saturating_sub(1);
        if completed {
            self.drain.completed(now);
        }
        self.settle(i);
        self.hand_over(now, wakers);
    }

    /// Hand free slots to waiters, the tenant furthest below its share first.
    fn hand_over(&mut self, now: Instant, wakers: &mut Wakers) {
        while self.inflight < self.limits.max {
            let Some(i) = self.next() else {
                return;
            };
            self.drain.admitted(now, self.inflight == 0);
            self.grant(i);
            let b = &mut self.table.buckets[i];
            let waiter = b.queue.pop_front();
            let empty = b.queue.is_empty();
            self.queued -= 1;
            if empty {
                self.unlist(i);
            }
            if let Some(w) = waiter.and_then(|w| w.grant()) {
                wakers.push(w);
            }
        }
    }

    /// The waiting bucket with the lowest `inflight / weight` (the furthest below its
    /// share); among equals the heavier (further below in slots), then the one whose turn
    /// came least recently.
    fn next(&self) -> Option<usize> {
        let buckets = &self.table.buckets;
        let key = |i: usize| {
            let b = &buckets[i];
            (std::cmp::Reverse(b.weight), b.turn)
        };
        let mut best: Option<usize> = None;
        for &j in &self.waiting {
            let j = j as usize;
            best = Some(match best {
                None => j,
                Some(i) => {
                    let (a, b) = (&buckets[i], &buckets[j]);
                    // a.inflight / a.weight vs b.inflight / b.weight, exactly.
                    let lhs = a.inflight as u128 * u128::from(b.weight);
                    let rhs = b.inflight as u128 * u128::from(a.weight);
                    if lhs.cmp(&rhs).then_with(|| key(i).cmp(&key(j))).is_le() {
                        i
                    } else {
                        j
                    }
                }
            });
        }
        best
    }

    fn reconfigure(&mut self, config: BulkheadConfig, now: Instant, wakers: &mut Wakers) {
        self.limits = Limits::of(&config);
        self.table.configure(&config.weights);
        self.config = config;
        let extra = self.table.buckets.len().saturating_sub(self.waiting.len());
        self.waiting.reserve(extra);
        let (mut active, mut weight) = (0, 0);
        for b in self.table.buckets.iter().filter(|b| !b.is_idle()) {
            active += 1;
            weight += u64::from(b.weight);
        }
        (self.active, self.active_weight) = (active, weight);
        self.hand_over(now, wakers);
    }

    fn stats(&self, top: usize, now: Instant) -> BulkheadStats {
        let buckets = &self.table.buckets;
        let load = |i: usize| buckets[i].inflight + buckets[i].queue.len();
        let mut busy: Vec<usize> = (0..buckets.len())
            .filter(|&i| !buckets[i].is_idle())
            .collect();
        busy.sort_by(|&a, &b| load(b).cmp(&load(a)).then(a.cmp(&b)));
        busy.truncate(top);
        let total = self.active_weight.max(1) as f64;
        BulkheadStats {
            max_inflight: self.limits.max,
            inflight: self.inflight,
            queued: self.queued,
            tenants_active: self.active,
            drain_rate: self.drain.rate(now).unwrap_or(0.0),
            shed: self.shed,
            top: busy
                .into_iter()
                .map(|i| {
                    let b = &buckets[i];
                    TenantStats {
                        tenant: self.table.label(i),
                        weight: b.weight,
                        inflight: b.inflight,
                        queued: b.queue.len(),
                        share: self.limits.max as f64 * f64::from(b.weight) / total,
                    }
                })
                .collect(),
        }
    }
}

impl Bulkhead {
    pub fn new(config: BulkheadConfig) -> Arc<Bulkhead> {
        Arc::new(Bulkhead {
            state: Mutex::new(State::new(config)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply new limits and weights. Permits and waiters stay valid: a higher ceiling
    /// hands slots to waiters at once, a lower one grants nothing until the in-flight
    /// count is below it; waiters keep the deadline they were queued with, and queues
    /// longer than a new `queue_per_tenant` keep their waiters. A tenant that gains (or
    /// loses) a bucket of its own leaves the requests it has already in the bucket they
    /// were counted in.
    pub fn reconfigure(&self, config: BulkheadConfig) {
        let mut wakers = Wakers::default();
        self.lock().reconfigure(config, Instant::now(), &mut wakers);
        wakers.wake();
    }

    /// The configuration in force.
    pub fn config(&self) -> BulkheadConfig {
        self.lock().config.clone()
    }

    /// Never waits: admitted, queued (a future to await), or shed. Admission takes one
    /// short lock and does not allocate.
    pub fn try_acquire(self: &Arc<Self>, tenant: Option<&str>) -> Acquire {
        let now = Instant::now();
        let mut st = self.lock();
        let i = st.table.index(tenant);
        match st.decide(i, now) {
            Decision::Admit => {
                st.table.note(i, tenant);
                Acquire::Admitted(Permit {
                    bulkhead: self.clone(),
                    bucket: i as u32,
                })
            }
            Decision::Queue => {
                st.table.note(i, tenant);
                let waiter = Arc::new(Waiter::default());
                st.enqueue(i, waiter.clone());
                let deadline = now + st.limits.queue_timeout;
                drop(st);
                Acquire::Queued(Waiting {
                    bulkhead: self.clone(),
                    waiter,
                    bucket: i as u32,
                    since: now,
                    deadline,
                    sleep: None,
                    done: false,
                })
            }
            Decision::Shed(shed) => Acquire::Shed(shed),
        }
    }

    /// [`Bulkhead::try_acquire`], then wait if queued: a permit and the time waited.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: Option<&str>,
    ) -> Result<(Permit, Duration), Shed> {
        match self.try_acquire(tenant) {
            Acquire::Admitted(permit) => Ok((permit, Duration::ZERO)),
            Acquire::Queued(waiting) => waiting.await,
            Acquire::Shed(shed) => Err(shed),
        }
    }

    /// Counts, the drain rate and the `top` busiest tenants.
    pub fn stats(&self, top: usize) -> BulkheadStats {
        let now = Instant::now();
        self.lock().stats(top, now)
    }

    /// Give back a slot of bucket `i` (a permit dropped, or a grant nobody took).
    fn release(&self, i: usize, completed: bool) {
        let now = Instant::now();
        let mut wakers = Wakers::default();
        self.lock().release(i, now, completed, &mut wakers);
        wakers.wake();
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Bulkhead")
            .field("max_inflight", &st.limits.max)
            .field("inflight", &st.inflight)
            .field("queued", &st.queued)
            .finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.bulkhead.release(self.bucket as usize, true);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Waiting {
    fn resolve(&mut self) -> (Permit, Duration) {
        self.done = true;
        let permit = Permit {
            bulkhead: self.bulkhead.clone(),
            bucket: self.bucket,
        };
        (permit, Instant::now().saturating_duration_since(self.since))
    }
}

impl Future for Waiting {
    type Output = Result<(Permit, Duration), Shed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`Waiting` polled after completion");
        if this.waiter.register(cx.waker()) {
            return Poll::Ready(Ok(this.resolve()));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Timed out, unless a slot came in the meantime.
        let now = Instant::now();
        let i = this.bucket as usize;
        let shed = {
            let mut st = this.bulkhead.lock();
            if this.waiter.is_granted() {
                None
            } else {
                st.remove(i, &this.waiter);
                Some(st.shed(ShedReason::QueueTimeout, i, now))
            }
        };
        match shed {
            None => Poll::Ready(Ok(this.resolve())),
            Some(shed) => {
                this.done = true;
                Poll::Ready(Err(shed))
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let i = self.bucket as usize;
        let now = Instant::now();
        let mut wakers = Wakers::default();
        {
            let mut st = self.bulkhead.lock();
            if self.waiter.is_granted() {
                st.release(i, now, false, &mut wakers);
            } else {
                st.remove(i, &self.waiter);
            }
        }
        wakers.wake();
    }
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("bucket", &self.bucket)
            .field("since", &self.since)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Bulkhead {
    /// Recount everything from the buckets and compare with the running totals; also
    /// checks that nobody waits while a slot is free.
    pub(super) fn check_invariants(&self) {
        let st = self.lock();
        let buckets = &st.table.buckets;
        let inflight: usize = buckets.iter().map(|b| b.inflight).sum();
        let queued: usize = buckets.iter().map(|b| b.queue.len()).sum();
        let active: Vec<_> = buckets.iter().filter(|b| !b.is_idle()).collect();
        let weight: u64 = active.iter().map(|b| u64::from(b.weight)).sum();
        assert_eq!(st.inflight, inflight, "in flight");
        assert_eq!(st.queued, queued, "queued");
        assert_eq!(st.active, active.len(), "active");
        assert_eq!(st.active_weight, weight, "active weight");
        assert!(
            queued == 0 || inflight >= st.limits.max,
            "{queued} wait while {inflight} < {} are in flight",
            st.limits.max
        );
        for (pos, &i) in st.waiting.iter().enumerate() {
            assert_eq!(buckets[i as usize].wait_pos as usize, pos);
            assert!(!buckets[i as usize].queue.is_empty());
        }
        for (i, b) in buckets.iter().enumerate() {
            assert_eq!(b.queue.is_empty(), b.wait_pos == NOT_WAITING, "bucket {i}");
            if b.is_idle() {
                assert_eq!(b.queue.capacity(), 0, "idle bucket {i} keeps an allocation");
            }
        }
    }

    /// The number of buckets and the total capacity of their queues.
    pub(super) fn footprint(&self) -> (usize, usize) {
        let st = self.lock();
        let buckets = &st.table.buckets;
        (
            buckets.len(),
            buckets.iter().map(|b| b.queue.capacity()).sum(),
        )
    }
}

#[cfg(test)]
impl Permit {
    pub(super) fn bucket(&self) -> usize {
        self.bucket as usize
    }
}
