//! The state of a running fleetgate: one immutable [`Snapshot`] of everything that a
//! reload can change, held in one `ArcSwap`, and the [`Runtime`] state that outlives every
//! swap. [`crate::reload`] builds snapshots; the data path reads them.
//!
//! A request loads the snapshot once, when its head has been read, and keeps that `Arc`
//! to its end: it never sees half of one snapshot and half of another, and a swap never
//! touches it. A connection loads it once for its TLS handshake and HTTP limits.
//!
//! What survives a swap is named here and nowhere else: the metrics, the upstream client
//! (and its keep-alive connections), the admission bulkheads (slots and tenant queues),
//! the super_read_only switch, version skew seen, the unlisted-route table, the
//! lifecycle phase, the reload status and the recent reload results; endpoint
//! health and in-flight counts live in the endpoints, which a new snapshot's pools adopt
//! ([`crate::upstream::Pool::adopt`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use tokio::sync::watch;

use crate::admission::{Bulkhead, BulkheadConfig, BulkheadStats};
use crate::config::{self, Config};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::upstream::{Pool, Upstream, UpstreamClient};

/// Everything a reload can change, built by [`crate::reload::build_snapshot`] and
/// swapped whole.
pub struct Snapshot {
    /// 1 for the snapshot built at start, +1 for every successful reload.
    pub serial: u64,
    /// When it was built.
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    pub manifest: Manifest,
    /// Header values of this node, formatted once per snapshot.
    pub node: NodeHeaders,
    /// The fleet pool (in roles ide, worker and all: the local application).
    pub fleet: Arc<Pool>,
    /// The ide upstream, when one is configured.
    pub ide: Option<Arc<Pool>>,
    /// The TLS server configuration (certificate and key), when TLS is on.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The bearer token the admin listener's POST endpoints require, when configured.
    pub admin_token: Option<AdminToken>,
    /// Requests per rule of `manifest` (and unlisted ones), for the status page.
    pub rule_hits: RuleHits,
}

impl Snapshot {
    /// The pool of `upstream`; `None` for an ide that is not configured.
    pub fn pool(&self, upstream: Upstream) -> Option<&Arc<Pool>> {
        match upstream {
            Upstream::Fleet => Some(&self.fleet),
            Upstream::Ide => self.ide.as_ref(),
        }
    }

    /// The pools of this snapshot.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.fleet).chain(self.ide.iter())
    }
}

/// Requests classified per rule of one manifest, plus one counter for requests that
/// matched no rule: counted since that manifest (by digest) was first loaded. A reload
/// that leaves the digest unchanged shares the counters of the snapshot it replaces
/// ([`RuleHits::carry`]); a new manifest starts every count at zero.
///
/// Counting is one relaxed atomic add on the data path: no lock, no allocation.
#[derive(Clone)]
pub struct RuleHits {
    /// `counts[i]` for rule `i`; the last one for requests that matched no rule.
    counts: Arc<[AtomicU64]>,
    since: SystemTime,
}

impl RuleHits {
    /// Zeroed counters for `manifest`.
    pub fn new(manifest: &Manifest) -> RuleHits {
        RuleHits {
            counts: (0..=manifest.rules().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            since: SystemTime::now(),
        }
    }

    /// The counters for `manifest`: those of `previous` when it has the same digest (the
    /// counts go on), new ones otherwise.
    pub fn carry(manifest: &Manifest, previous: Option<&Snapshot>) -> RuleHits {
        match previous {
            Some(p) if p.manifest.digest() == manifest.digest() => p.rule_hits.clone(),
            _ => RuleHits::new(manifest),
        }
    }

    /// Count one request classified by rule `rule_index` (`None`: no rule matched).
    #[inline]
    pub fn hit(&self, rule_index: Option<usize>) {
        let unlisted = self.counts.len() - 1;
        if let Some(c) = self.counts.get(rule_index.unwrap_or(unlisted)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests counted for rule `index`.
    pub fn rule(&self, index: usize) -> u64 {
        self.counts
            .get(index)
            .filter(|_| index + 1 < self.counts.len())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Requests that matched no rule.
    pub fn unlisted(&self) -> u64 {
        self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// When counting started: when this manifest was first loaded.
    pub fn since(&self) -> SystemTime {
        self.since
    }
}

/// The admin bearer token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    pub fn new(token: String) -> AdminToken {
        AdminToken(token.into())
    }

    /// Does `presented` equal the token? Compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let want = self.0.as_bytes();
        // The length is not secret; the content is.
        want.len() == presented.len() && bool::from(want.ct_eq(presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Header values that depend only on the node's configuration and manifest.
#[derive(Debug, Clone)]
pub struct NodeHeaders {
    pub node_id: String,
    /// `node_id`, for `x-fleetgate-via`.
    pub node: HeaderValue,
    /// `role@node_id`, for `x-fleetgate-served-by`.
    pub served_by: HeaderValue,
    /// `via` entries by the client's HTTP version.
    pub via_10: HeaderValue,
    pub via_11: HeaderValue,
    pub via_2: HeaderValue,
    /// The manifest digest, for `x-fleetgate-manifest`.
    pub manifest: HeaderValue,
    /// `generation`, for `x-fleetgate-generation`.
    pub generation: HeaderValue,
    pub max_hops: usize,
    /// `response_stamps`
    pub stamps: bool,
}

impl NodeHeaders {
    pub fn new(config: &Config, digest: &str) -> NodeHeaders {
        let hv = |s: String| HeaderValue::try_from(s).expect("node id and digest are header-safe");
        let id = &config.node_id;
        NodeHeaders {
            node_id: id.clone(),
            node: hv(id.clone()),
            served_by: hv(format!("{}@{}", config.role, id)),
            via_10: hv(format!("1.0 {id}")),
            via_11: hv(format!("1.1 {id}")),
            via_2: hv(format!("2 {id}")),
            manifest: hv(digest.to_string()),
            generation: hv(config.generation.clone()),
            max_hops: config.limits.max_hops,
            stamps: config.response_stamps,
        }
    }
}

/// Where the process is in its life (readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ok",
            Phase::Draining => "draining",
        }
    }
}

/// The outcome of the latest reload attempts, for `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// The message of the latest attempt, when it failed (cleared by a success).
    pub last_error: Option<String>,
    /// When the latest attempt failed.
    pub last_error_at: Option<SystemTime>,
}

/// One reload attempt, successful or not (`GET /status.json`).
#[derive(Debug, Clone)]
pub struct ReloadAttempt {
    pub at: SystemTime,
    /// What set it off: `SIGHUP`, `POST /reload`, `file watch`.
    pub trigger: &'static str,
    /// The new snapshot's manifest digest and serial, when it succeeded.
    pub applied: Option<(String, u64)>,
    /// Why nothing changed, when it failed.
    pub error: Option<String>,
}

/// How many reload attempts [`Runtime::reload_history`] keeps.
pub const RELOAD_HISTORY: usize = 10;

/// The admission bulkheads, one per upstream; `None` where disabled (`max_inflight = 0`).
/// They survive reloads: a reload reconfigures them in place, keeping every slot held and
/// every request waiting.
#[derive(Default)]
pub struct Bulkheads {
    fleet: ArcSwapOption<Bulkhead>,
    ide: ArcSwapOption<Bulkhead>,
}

impl Bulkheads {
    fn slot(&self, upstream: Upstream) -> &ArcSwapOption<Bulkhead> {
        match upstream {
            Upstream::Fleet => &self.fleet,
            Upstream::Ide => &self.ide,
        }
    }

    /// The bulkhead in front of `upstream`, if admission is on for it.
    pub fn get(&self, upstream: Upstream) -> Option<Arc<Bulkhead>> {
        self.slot(upstream).load_full()
    }

    /// Apply `[admission]`: create, reconfigure in place, or disable each bulkhead.
    pub fn configure(&self, a: &config::Admission) {
        for (upstream, max_inflight) in [
            (Upstream::Fleet, a.max_inflight),
            (Upstream::Ide, a.ide_max_inflight),
        ] {
            let slot = self.slot(upstream);
            if max_inflight == 0 {
                // Disabled: requests holding a slot keep it (and the bulkhead) to the end.
                slot.store(None);
                continue;
            }
            let wanted = BulkheadConfig {
                max_inflight,
                queue_per_tenant: a.queue_per_tenant,
                queue_timeout: a.queue_timeout,
                retry_after_min: a.retry_after_min,
                retry_after_max: a.retry_after_max,
                weights: a.weights.clone(),
            };
            match slot.load_full() {
                Some(bulkhead) => bulkhead.reconfigure(wanted),
                None => slot.store(Some(Bulkhead::new(wanted))),
            }
        }
    }

    /// Statistics of each enabled bulkhead, with its `top` busiest tenants.
    pub fn stats(&self, top: usize) -> Vec<(Upstream, BulkheadStats)> {
        [Upstream::Fleet, Upstream::Ide]
            .into_iter()
            .filter_map(|u| self.get(u).map(|b| (u, b.stats(top))))
            .collect()
    }
}

/// One peer manifest seen on incoming requests that differs from ours.
#[derive(Debug, Clone)]
pub struct SkewedPeer {
    pub digest: String,
    pub generation: String,
    /// The last address it came from.
    pub address: std::net::IpAddr,
    /// Inside `trusted_peers` (only these can fail readiness).
    pub trusted: bool,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub requests: u64,
}

/// Peers whose manifest digest differs from ours, seen in the last [`SKEW_WINDOW`]:
/// bounded ([`SKEW_PEERS`] entries, the least recently seen evicted).
#[derive(Default)]
pub struct SkewTracker {
    peers: Mutex<Vec<SkewedPeer>>,
}

/// How long a skewed peer counts after it was last seen.
pub const SKEW_WINDOW: Duration = Duration::from_secs(300);
/// At most this many (digest, generation) pairs are kept.
pub const SKEW_PEERS: usize = 32;

impl SkewTracker {
    /// A request arrived with another fleetgate's manifest `digest` and `generation`.
    pub fn record(&self, digest: &str, generation: &str, address: std::net::IpAddr, trusted: bool) {
        let now = SystemTime::now();
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = peers
            .iter_mut()
            .find(|p| p.digest == digest && p.generation == generation)
        {
            p.last_seen = now;
            p.requests += 1;
            p.address = address;
            p.trusted |= trusted;
            return;
        }
        if peers.len() >= SKEW_PEERS {
            if let Some(oldest) = peers
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(i, _)| i)
            {
                peers.swap_remove(oldest);
            }
        }
        peers.push(SkewedPeer {
            digest: digest.to_string(),
            generation: generation.to_string(),
            address,
            trusted,
            first_seen: now,
            last_seen: now,
            requests: 1,
        });
    }

    /// The peers seen within the window, most recent first (older ones are dropped).
    pub fn recent(&self) -> Vec<SkewedPeer> {
        let now = SystemTime::now();
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|p| {
            now.duration_since(p.last_seen)
                .is_ok_and(|age| age <= SKEW_WINDOW)
                || p.last_seen > now
        });
        let mut out = peers.clone();
        out.sort_by_key(|p| std::cmp::Reverse(p.last_seen));
        out
    }

    /// Forget every peer (the manifest changed: old skew no longer applies).
    pub fn clear(&self) {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Runtime state that survives every snapshot swap.
pub struct Runtime {
    pub metrics: Arc<Metrics>,
    /// Admission control: slots in flight and tenant queues.
    pub bulkheads: Arc<Bulkheads>,
    /// The super_read_only switch (see [`Runtime::set_super_read_only`]).
    super_read_only: AtomicBool,
    /// Peers seen with another manifest digest (version skew).
    pub skew: SkewTracker,
    /// The most frequent requests that matched no rule (drift seen at run time).
    pub unlisted: crate::unlisted::UnlistedTable,
    /// The shared upstream client: keep-alive connections and open tunnels.
    pub client: Arc<UpstreamClient>,
    phase: AtomicU8,
    reload_status: Mutex<ReloadStatus>,
    /// The last [`RELOAD_HISTORY`] reload attempts, oldest first.
    reloads: Mutex<VecDeque<ReloadAttempt>>,
}

impl Runtime {
    /// `workers`: the data listener's worker threads (one upstream pool each).
    pub fn new(metrics: Arc<Metrics>, connect_timeout: Duration, workers: usize) -> Runtime {
        Runtime {
            client: Arc::new(UpstreamClient::new(
                connect_timeout,
                metrics.clone(),
                workers,
            )),
            bulkheads: Arc::new(Bulkheads::default()),
            super_read_only: AtomicBool::new(false),
            skew: SkewTracker::default(),
            unlisted: crate::unlisted::UnlistedTable::default(),
            metrics,
            phase: AtomicU8::new(Phase::Starting as u8),
            reload_status: Mutex::new(ReloadStatus::default()),
            reloads: Mutex::new(VecDeque::with_capacity(RELOAD_HISTORY)),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Is the super_read_only switch on (every write on this node refused)?
    pub fn super_read_only(&self) -> bool {
        self.super_read_only.load(Ordering::Relaxed)
    }

    /// Flip the switch (`POST /super-read-only`, or `guard.super_read_only` at start and
    /// when a reload changes it); returns the previous state.
    pub fn set_super_read_only(&self, on: bool) -> bool {
        let was = self.super_read_only.swap(on, Ordering::Relaxed);
        self.metrics.super_read_only.set(i64::from(on));
        if was != on {
            tracing::warn!(super_read_only = on, "super_read_only switch changed");
        }
        was
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set the admission gauges from the bulkheads (before the metrics are rendered).
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.version_skew
            .set(i64::from(!self.skew.recent().is_empty()));
        for upstream in [Upstream::Fleet, Upstream::Ide] {
            let label = [upstream.as_str()];
            match self.bulkheads.get(upstream) {
                Some(b) => {
                    let s = b.stats(0);
                    m.admission_inflight
                        .with_label_values(&label)
                        .set(s.inflight as i64);
                    m.admission_queued
                        .with_label_values(&label)
                        .set(s.queued as i64);
                    m.tenants_active
                        .with_label_values(&label)
                        .set(s.tenants_active as i64);
                }
                None => {
                    let _ = m.admission_inflight.remove_label_values(&label);
                    let _ = m.admission_queued.remove_label_values(&label);
                    let _ = m.tenants_active.remove_label_values(&label);
                }
            }
        }
    }

    pub fn set_reload_status(&self, status: ReloadStatus) {
        *self
            .reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// Remember a reload attempt; the oldest beyond [`RELOAD_HISTORY`] is forgotten.
    pub fn record_reload(&self, attempt: ReloadAttempt) {
        let mut ring = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= RELOAD_HISTORY {
            ring.pop_front();
        }
        ring.push_back(attempt);
    }

    /// The last [`RELOAD_HISTORY`] reload attempts, newest first.
    pub fn reload_history(&self) -> Vec<ReloadAttempt> {
        let ring = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().rev().cloned().collect()
    }
}

/// The live snapshot and the runtime state: what every part of a running server shares.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    pub runtime: Runtime,
}

impl State {
    pub fn new(snapshot: Snapshot, runtime: Runtime) -> State {
        runtime.metrics.set_manifest(snapshot.manifest.digest());
        runtime.bulkheads.configure(&snapshot.config.admission);
        runtime
            .client
            .set_max_idle(snapshot.config.upstreams.max_idle_per_endpoint);
        runtime.set_super_read_only(snapshot.config.guard.super_read_only);
        State {
            snapshot: ArcSwap::from_pointee(snapshot),
            runtime,
        }
    }

    /// The live snapshot; keep the `Arc` for as long as one consistent view is needed.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Make `next` live; what already holds the old one keeps it.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        let rt = &self.runtime;
        rt.client.set_connect_timeout(next.config.timeouts.connect);
        rt.client
            .set_max_idle(next.config.upstreams.max_idle_per_endpoint);
        rt.metrics.set_manifest(next.manifest.digest());
        rt.bulkheads.configure(&next.config.admission);
        // The switch is runtime state: a reload changes it only when the file's value
        // changed, so it never silently undoes an operator's POST /super-read-only.
        let file_value = next.config.guard.super_read_only;
        let previous = self.snapshot.swap(Arc::new(next));
        if previous.config.guard.super_read_only != file_value {
            rt.set_super_read_only(file_value);
        }
        if previous.manifest.digest() != self.snapshot.load().manifest.digest() {
            // Our own manifest changed: what was skew may now be agreement.
            rt.skew.clear();
        }
        previous
    }

    /// Probe ejected endpoints and re-resolve DNS names of the live snapshot's pools, and
    /// close the idle upstream connections that should not stay ([`KeepAlive::purge`],
    /// every tick), until `stop` fires. Pools come and go with reloads; this always looks
    /// at the live ones.
    ///
    /// [`KeepAlive::purge`]: crate::upstream::keepalive::KeepAlive::purge
    pub async fn maintain_upstreams(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        const TICK: Duration = Duration::from_millis(100);
        let mut next_dns = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.runtime.client.purge_idle();
            let snap = self.snapshot();
            let timeouts = snap.config.timeouts;
            for pool in snap.pools() {
                pool.probe_ejected(timeouts.connect).await;
            }
            if tokio::time::Instant::now() >= next_dns {
                for pool in snap.pools().filter(|p| p.uses_dns()) {
                    pool.refresh_dns().await;
                }
                next_dns = tokio::time::Instant::now() + snap.config.upstreams.dns_refresh;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(rules: &str) -> Manifest {
        Manifest::from_sources(&[("r.toml".into(), rules.into())]).expect("loads")
    }

    const TWO: &str = r#"
[[rule]]
path = "/a"
class = "ide-only"
why = "a"

[[rule]]
path = "/b"
class = "fleet-ok"
why = "b"
"#;

    #[test]
    fn rule_hits_count_per_rule_and_unlisted_and_ignore_unknown_indexes() {
        let hits = RuleHits::new(&manifest(TWO));
        hits.hit(Some(1));
        hits.hit(Some(1));
        hits.hit(None);
        hits.hit(Some(7)); // not a rule of this manifest: not counted anywhere
        assert_eq!((hits.rule(0), hits.rule(1), hits.unlisted()), (0, 2, 1));
        assert_eq!(hits.rule(2), 0, "the unlisted slot is not a rule");
    }

    #[test]
    fn the_reload_ring_keeps_the_last_attempts_newest_first() {
        let rt = Runtime::new(Arc::new(Metrics::new()), Duration::from_secs(1), 1);
        for serial in 0..(RELOAD_HISTORY as u64 + 3) {
            rt.record_reload(ReloadAttempt {
                at: SystemTime::now(),
                trigger: "SIGHUP",
                applied: Some(("d".into(), serial)),
                error: None,
            });
        }
        let serials: Vec<u64> = rt
            .reload_history()
            .iter()
            .map(|a| a.applied.as_ref().unwrap().1)
            .collect();
        assert_eq!(serials, (3..13).rev().collect::<Vec<_>>());
    }
}
