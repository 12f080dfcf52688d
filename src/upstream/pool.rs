//! Upstream pools: the endpoints of one upstream, the choice of one per request (power of
//! two choices on outstanding requests), ejection of endpoints that refuse connections,
//! TCP-connect probes that re-admit them, and periodic re-resolution of DNS names (a
//! Kubernetes headless service). A pool with one endpoint is sidecar mode; the code is the
//! same.
//!
//! A pool belongs to one snapshot; its endpoints do not. [`Pool::adopt`] builds the pool
//! of a new snapshot from the old one: an unchanged upstream keeps its pool, a changed one
//! keeps the [`Endpoint`]s (health, back-off, in-flight count) of addresses that stay.
//! Removed endpoints get no new requests; requests already on them finish, because they
//! hold the endpoint ([`InFlight`]) and the old snapshot. An `https` pool also keeps its
//! [`TlsTarget`] (and so its connections) only while the TLS settings and the name
//! checked stay the same.
//!
//! Health is lock-free (atomics): nothing on the request path takes a lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use rand::Rng;
use std::time::Instant;

use super::keepalive::Reuse;
use super::tls::UpstreamTls;
use super::{TlsTarget, Upstream};
use crate::config::UpstreamUrl;

/// First ejection period; doubles on every failed probe up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One address requests can be sent to.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port` for the request URI the client pool is keyed on.
    pub authority: Authority,
    outstanding: AtomicUsize,
    ejected: AtomicBool,
    /// While ejected: when the next probe may run ([`clock_ms`] milliseconds).
    retry_at_ms: AtomicU64,
    /// The current ejection back-off, in milliseconds.
    backoff_ms: AtomicU64,
}

/// Milliseconds on a monotonic clock that starts with the process (also the data path's
/// clock for a connection's lazy head timeout).
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr,
            authority: Authority::try_from(addr.to_string())
                .expect("socket address is an authority"),
            outstanding: AtomicUsize::new(0),
            ejected: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(BASE_BACKOFF.as_millis() as u64),
        })
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whole seconds until this endpoint is probed again (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u32 {
        let left = self
            .retry_at_ms
            .load(Ordering::Relaxed)
            .saturating_sub(clock_ms());
        left.div_ceil(1000).max(1) as u32
    }

    /// Start (or extend) an ejection period of `backoff`.
    fn hold_off(&self, backoff: Duration) {
        let ms = backoff.as_millis() as u64;
        self.backoff_ms.store(ms, Ordering::Relaxed);
        self.retry_at_ms.store(clock_ms() + ms, Ordering::Relaxed);
    }
}

/// Counts a request against its endpoint until dropped (with the response body), and
/// holds the keep-alive connection it was sent on, which goes back to its worker's idle
/// list then.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>, Option<Reuse>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }

    /// The connection the request went out on, reusable once the response has ended.
    pub fn reuse(&mut self, conn: Reuse) {
        self.1 = Some(conn);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one upstream.
pub struct Pool {
    pub upstream: Upstream,
    pub scheme: Scheme,
    /// As configured: IP literals, or one DNS name.
    pub urls: Vec<UpstreamUrl>,
    /// The TLS side of an `https` pool.
    pub tls: Option<Arc<TlsTarget>>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Pool {
    /// Build a plain-http pool; IP literals are ready at once, DNS names are resolved by
    /// [`Pool::refresh_dns`] (called once by the server before it reports ready).
    pub fn new(
        upstream: Upstream,
        urls: Vec<UpstreamUrl>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Pool {
        Pool::with_tls(upstream, urls, None, metrics)
    }

    /// [`Pool::new`] for a pool whose URLs are `https` when `tls` is given.
    fn with_tls(
        upstream: Upstream,
        urls: Vec<UpstreamUrl>,
        tls: Option<Arc<TlsTarget>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Pool {
        let eps = urls
            .iter()
            .filter_map(|u| u.ip().map(|ip| Endpoint::new(SocketAddr::new(ip, u.port))))
            .collect();
        Pool {
            upstream,
            scheme: if tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            urls,
            tls,
            endpoints: ArcSwap::from_pointee(eps),
            metrics,
        }
    }

    /// The pool for `urls` in a new snapshot, given the pool the old snapshot had for the
    /// same upstream. `tls`: the snapshot's upstream TLS settings (required when `urls`
    /// are `https`). Unchanged URLs and TLS target keep the old pool itself (its resolved
    /// endpoints included); otherwise every address that stays keeps its [`Endpoint`].
    /// DNS names of a new pool are resolved before it is returned.
    pub async fn adopt(
        upstream: Upstream,
        urls: Vec<UpstreamUrl>,
        tls: Option<&Arc<UpstreamTls>>,
        previous: Option<&Arc<Pool>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Pool> {
        let target = Pool::tls_target(&urls, tls, previous);
        let same_target = |p: &Arc<Pool>| match (&p.tls, &target) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if let Some(old) = previous.filter(|p| p.urls == urls && same_target(p)) {
            return old.clone();
        }
        let pool = Pool::with_tls(upstream, urls, target, metrics);
        if let Some(old) = previous {
            let current = old.endpoints();
            let eps: Vec<Arc<Endpoint>> = pool
                .endpoints()
                .iter()
                .map(|e| {
                    current
                        .iter()
                        .find(|c| c.addr == e.addr)
                        .cloned()
                        .unwrap_or_else(|| e.clone())
                })
                .collect();
            pool.endpoints.store(Arc::new(eps));
        }
        if pool.uses_dns() {
            pool.refresh_dns_from(previous.map(|p| p.endpoints())).await;
        }
        Arc::new(pool)
    }

    /// The TLS target of an `https` pool for `urls`: the previous pool's when it has the
    /// same settings and checks the same name, else a new one (new connections).
    fn tls_target(
        urls: &[UpstreamUrl],
        tls: Option<&Arc<UpstreamTls>>,
        previous: Option<&Arc<Pool>>,
    ) -> Option<Arc<TlsTarget>> {
        if !urls.iter().any(|u| u.tls) {
            return None;
        }
        let settings = tls.expect("https upstreams come with their TLS settings");
        // A DNS name is what certificates are checked against; IP literals are checked
        // one by one (the connector takes the endpoint's address).
        let name = urls
            .iter()
            .find(|u| u.ip().is_none())
            .and_then(|u| rustls::pki_types::ServerName::try_from(u.host.clone()).ok());
        let kept = previous
            .and_then(|p| p.tls.as_ref())
            .filter(|t| Arc::ptr_eq(&t.settings, settings) && t.name == name);
        Some(match kept {
            Some(t) => t.clone(),
            None => Arc::new(TlsTarget::new(settings.clone(), name)),
        })
    }

    pub fn uses_dns(&self) -> bool {
        self.urls.iter().any(|u| u.ip().is_none())
    }

    /// A snapshot of the current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Pick an endpoint: two random healthy candidates, the one with fewer outstanding
    /// requests wins. `Err(retry_after_secs)` when every endpoint is ejected (or none is
    /// known yet).
    pub fn pick(&self) -> Result<InFlight, u32> {
        let eps = self.endpoints.load();
        let chosen = match eps.len() {
            0 => return Err(1),
            1 => (!eps[0].is_ejected()).then(|| &eps[0]),
            n => {
                let mut rng = rand::thread_rng();
                let a = rng.gen_range(0..n);
                let b = (a + rng.gen_range(1..n)) % n;
                match (eps[a].is_ejected(), eps[b].is_ejected()) {
                    (false, false) => Some(if eps[b].outstanding() < eps[a].outstanding() {
                        &eps[b]
                    } else {
                        &eps[a]
                    }),
                    (false, true) => Some(&eps[a]),
                    (true, false) => Some(&eps[b]),
                    (true, true) => eps
                        .iter()
                        .filter(|e| !e.is_ejected())
                        .min_by_key(|e| e.outstanding()),
                }
            }
        };
        match chosen {
            Some(e) => {
                e.outstanding.fetch_add(1, Ordering::Relaxed);
                Ok(InFlight(e.clone(), None))
            }
            None => Err(eps.iter().map(|e| e.retry_after_secs()).min().unwrap_or(1)),
        }
    }

    /// A connect to `ep` failed: take it out of rotation until a probe succeeds.
    pub fn eject(&self, ep: &Endpoint) {
        if ep.ejected.swap(true, Ordering::Relaxed) {
            return;
        }
        ep.hold_off(BASE_BACKOFF);
        self.metrics
            .ejections
            .with_label_values(&[self.upstream.as_str()])
            .inc();
        tracing::info!(upstream = self.upstream.as_str(), endpoint = %ep.addr, backoff_ms = BASE_BACKOFF.as_millis() as u64, "endpoint ejected after a failed connect");
    }

    /// Probe every ejected endpoint whose back-off has passed with a TCP connect.
    pub async fn probe_ejected(&self, connect_timeout: Duration) {
        let eps = self.endpoints();
        for ep in eps.iter().filter(|e| e.is_ejected()) {
            if ep.retry_at_ms.load(Ordering::Relaxed) > clock_ms() {
                continue;
            }
            let ok = matches!(
                tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(ep.addr))
                    .await,
                Ok(Ok(_))
            );
            if ok {
                ep.backoff_ms
                    .store(BASE_BACKOFF.as_millis() as u64, Ordering::Relaxed);
                ep.ejected.store(false, Ordering::Relaxed);
                tracing::info!(upstream = self.upstream.as_str(), endpoint = %ep.addr, "endpoint answered a probe; re-admitted");
            } else {
                let doubled = Duration::from_millis(ep.backoff_ms.load(Ordering::Relaxed) * 2);
                ep.hold_off(doubled.min(MAX_BACKOFF));
            }
        }
    }

    /// Re-resolve DNS names; endpoints that stay keep their counters and health.
    pub async fn refresh_dns(&self) {
        self.refresh_dns_from(None).await
    }

    /// [`Pool::refresh_dns`], also adopting endpoints of `also` (an older pool's).
    async fn refresh_dns_from(&self, also: Option<Arc<Vec<Arc<Endpoint>>>>) {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for u in &self.urls {
            match u.ip() {
                Some(ip) => addrs.push(SocketAddr::new(ip, u.port)),
                None => match tokio::net::lookup_host((u.host.as_str(), u.port)).await {
                    Ok(found) => addrs.extend(found),
                    Err(e) => {
                        tracing::warn!(upstream = self.upstream.as_str(), host = %u.host, error = %e, "DNS lookup failed; keeping the previous endpoints");
                        return;
                    }
                },
            }
        }
        addrs.sort();
        addrs.dedup();
        let current = self.endpoints.load();
        if current.len() == addrs.len() && current.iter().zip(&addrs).all(|(e, a)| e.addr == *a) {
            return;
        }
        let known = current.iter().chain(also.iter().flat_map(|v| v.iter()));
        let known: Vec<&Arc<Endpoint>> = known.collect();
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|a| {
                known
                    .iter()
                    .find(|e| e.addr == *a)
                    .map(|e| (*e).clone())
                    .unwrap_or_else(|| Endpoint::new(*a))
            })
            .collect();
        tracing::info!(upstream = self.upstream.as_str(), endpoints = ?addrs, "upstream endpoints changed");
        self.endpoints.store(Arc::new(next));
    }

    /// Is at least one endpoint in rotation?
    pub fn reachable(&self) -> bool {
        self.endpoints.load().iter().any(|e| !e.is_ejected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        let urls = (0..n)
            .map(|i| UpstreamUrl::http("127.0.0.1", 1000 + i))
            .collect();
        Pool::new(
            Upstream::Fleet,
            urls,
            Arc::new(crate::metrics::Metrics::new()),
        )
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let p = pool(2);
        let busy: Vec<InFlight> = (0..10).map(|_| p.pick().unwrap()).collect();
        // Whatever the first picks did, the two counters never drift apart by more than one.
        let eps = p.endpoints();
        let (a, b) = (eps[0].outstanding(), eps[1].outstanding());
        assert_eq!(a + b, 10);
        assert!(a.abs_diff(b) <= 1, "{a} vs {b}");
        drop(busy);
        assert_eq!(eps[0].outstanding() + eps[1].outstanding(), 0);
    }

    #[tokio::test]
    async fn ejected_endpoints_are_skipped_and_all_ejected_fails() {
        let p = pool(3);
        let eps = p.endpoints();
        p.eject(&eps[0]);
        p.eject(&eps[1]);
        for _ in 0..20 {
            assert_eq!(p.pick().unwrap().endpoint().addr, eps[2].addr);
        }
        p.eject(&eps[2]);
        assert!(p.pick().is_err());
        assert!(!p.reachable());
    }

    #[tokio::test]
    async fn adopting_keeps_unchanged_pools_and_surviving_endpoints() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let old = Arc::new(pool(2));
        let same = Pool::adopt(
            Upstream::Fleet,
            old.urls.clone(),
            None,
            Some(&old),
            metrics.clone(),
        )
        .await;
        assert!(Arc::ptr_eq(&old, &same), "unchanged URLs keep the pool");

        let held = old.pick().unwrap();
        let kept_addr = held.endpoint().addr;
        old.eject(&old.endpoints()[0]);
        let mut urls = old.urls.clone();
        urls.push(UpstreamUrl::http("127.0.0.1", 2000));
        let grown = Pool::adopt(Upstream::Fleet, urls, None, Some(&old), metrics.clone()).await;
        let eps = grown.endpoints();
        assert_eq!(eps.len(), 3);
        let kept = eps.iter().find(|e| e.addr == kept_addr).unwrap();
        assert!(
            Arc::ptr_eq(kept, held.endpoint()),
            "the endpoint survives the swap"
        );
        assert_eq!(kept.outstanding(), 1, "its in-flight count too");
        assert!(eps[0].is_ejected(), "and its health");
        assert!(!eps[2].is_ejected(), "a new endpoint starts in rotation");

        let shrunk = Pool::adopt(
            Upstream::Fleet,
            vec![old.urls[1].clone()],
            None,
            Some(&old),
            metrics,
        )
        .await;
        assert_eq!(shrunk.endpoints().len(), 1);
        drop(held);
        assert_eq!(
            old.endpoints()
                .iter()
                .map(|e| e.outstanding())
                .sum::<usize>(),
            0
        );
    }
}
