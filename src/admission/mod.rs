//! Admission control: a [`Bulkhead`] bounds the requests in flight to one target (the
//! fleet or local pool, or the ide) and shares its slots fairly among tenants. It owns
//! the scheduling only; the caller maps a [`Shed`] to a `503` with `Retry-After`, holds
//! the [`Permit`] for as long as the request occupies the target (to the end of the
//! response body or the tunnel) and turns [`BulkheadStats`] into metrics.
//!
//! The rules:
//!
//! * **Uncontended**, one tenant may use every slot. A request is admitted at once when a
//!   slot is free and nobody waits ([`Bulkhead::try_acquire`] takes one short lock and
//!   does not allocate).
//! * **Contended**, every active tenant (one with requests in flight or waiting) is
//!   entitled to `max_inflight * weight / sum(weights of active tenants)` slots. A freed
//!   slot is handed directly to the waiting tenant furthest below its share (lowest
//!   `inflight / weight`; among equals the heavier, then the one served least recently,
//!   so equal tenants alternate), oldest waiter first. While anyone waits a new arrival queues behind
//!   them: no slot is ever free for it to take.
//! * A request that must wait joins its tenant's FIFO queue ([`Waiting`]), at most
//!   `queue_per_tenant` deep. When that queue is full it is **shed** at once:
//!   [`ShedReason::Tenant`] when the tenant already has its fair share in flight, else
//!   [`ShedReason::Global`]. A waiter still queued after `queue_timeout` is shed with
//!   [`ShedReason::QueueTimeout`].
//! * `Retry-After` comes from the measured drain rate (completions per second, an
//!   exponentially weighted moving average): `(ahead + 1) / (drain_rate *
//!   tenant_fraction)` seconds, jittered by a factor in [0.8, 1.2], rounded up and
//!   clamped to `[retry_after_min, retry_after_max]` (`retry_after_min` before the first
//!   completion). `ahead` is the tenant's queue (all queues for `Global`) and
//!   `tenant_fraction` its share of the ceiling (1 for `Global`).
//! * Tenants live in a bounded table: `None` is one anonymous bucket, tenants named in
//!   [`BulkheadConfig::weights`] have buckets of their own, every other id is hashed with
//!   a per-process random key into one of a fixed number of buckets (weight 1). A bucket
//!   with nothing in flight and nothing queued keeps no allocation, so the table's
//!   memory is bounded whatever the number of distinct ids.
//! * [`Bulkhead::reconfigure`] (hot reload) changes limits and weights in place: permits
//!   and waiters stay valid; a higher ceiling hands slots to waiters at once, a lower one
//!   stops granting until the in-flight count falls below it.
//!
//! The clock is tokio's ([`tokio::time::Instant`]), so tests run on a paused clock; a
//! [`Waiting`] must be polled inside a tokio runtime with time enabled.

mod drain;
mod scheduler;
mod tenants;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use scheduler::{Acquire, Bulkhead, Permit, Waiting};
pub use tenants::{HASHED_BUCKETS, NAME_BYTES};

/// The limits of one bulkhead, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadConfig {
    /// The ceiling on requests in flight; > 0 (0 is read as 1: the caller builds no
    /// bulkhead when admission control is off).
    pub max_inflight: usize,
    /// Waiters per tenant bucket (tenants hashed into one bucket share its queue); 0: no
    /// queueing, a request finding no slot is shed.
    pub queue_per_tenant: usize,
    /// How long a request may wait for a slot.
    pub queue_timeout: Duration,
    /// Bounds of `Retry-After`, in seconds: min >= 1 (0 is read as 1), max >= min (a
    /// smaller max is read as min).
    pub retry_after_min: u32,
    pub retry_after_max: u32,
    /// Tenants with buckets of their own and their weights (>= 1; 0 is read as 1). Every
    /// other tenant weighs 1. A name listed twice takes its last weight.
    pub weights: Vec<(String, u32)>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// The bulkhead is full and the tenant's queue too, although the tenant is within its
    /// fair share.
    Global = 0,
    /// The tenant's queue is full and it already has at least its fair share in flight.
    Tenant = 1,
    /// It waited `queue_timeout` without getting a slot.
    QueueTimeout = 2,
}

impl ShedReason {
    /// Every reason, in the order of [`BulkheadStats::shed`].
    pub const ALL: [ShedReason; 3] = [
        ShedReason::Global,
        ShedReason::Tenant,
        ShedReason::QueueTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Global => "global",
            ShedReason::Tenant => "tenant",
            ShedReason::QueueTimeout => "queue-timeout",
        }
    }
}

/// A request that was not admitted, and when its client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub reason: ShedReason,
    /// Whole seconds, within `[retry_after_min, retry_after_max]`.
    pub retry_after: u32,
}

/// A view of a bulkhead at one instant ([`Bulkhead::stats`]).
#[derive(Debug, Clone, Default)]
pub struct BulkheadStats {
    pub max_inflight: usize,
    pub inflight: usize,
    pub queued: usize,
    /// Tenant buckets with requests in flight or waiting.
    pub tenants_active: usize,
    /// Completions per second (exponentially weighted moving average); 0 before the
    /// first.
    pub drain_rate: f64,
    /// Requests shed so far, by reason in [`ShedReason::ALL`] order (monotonic).
    pub shed: [u64; 3],
    /// The busiest active tenants (at most the `top` asked for), by in flight + queued,
    /// descending.
    pub top: Vec<TenantStats>,
}

/// One active tenant bucket in [`BulkheadStats::top`].
#[derive(Debug, Clone)]
pub struct TenantStats {
    /// `(anonymous)` for requests without a tenant; a configured name; for a hashed
    /// bucket, the most recent tenant id seen in it (truncated to [`NAME_BYTES`]).
    pub tenant: String,
    pub weight: u32,
    pub inflight: usize,
    pub queued: usize,
    /// Its fair share of the ceiling now: `max_inflight * weight / sum(active weights)`.
    pub share: f64,
}
