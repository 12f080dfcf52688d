//! Upstream pools: the endpoints behind `upstreams.fleet` and `upstreams.ide`, the choice
//! of one per request (power of two choices on outstanding requests), ejection of
//! endpoints that refuse connections, TCP-connect probes that re-admit them, and periodic
//! re-resolution of DNS names (a Kubernetes headless service). A pool with one endpoint is
//! sidecar mode; the code is the same.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::UpstreamUrl;
use crate::proxy::target::Upstream;

/// First ejection period; doubles on every failed probe up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often ejected endpoints are looked at.
const PROBE_TICK: Duration = Duration::from_millis(100);

/// One address requests can be sent to.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port` for the request URI the client pool is keyed on.
    pub authority: Authority,
    outstanding: AtomicUsize,
    ejected: AtomicBool,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    /// While ejected: when the next probe may run.
    retry_at: Instant,
    backoff: Duration,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr,
            authority: Authority::try_from(addr.to_string())
                .expect("socket address is an authority"),
            outstanding: AtomicUsize::new(0),
            ejected: AtomicBool::new(false),
            health: Mutex::new(Health {
                retry_at: Instant::now(),
                backoff: BASE_BACKOFF,
            }),
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
        let h = self.health.lock().unwrap();
        let left = h.retry_at.saturating_duration_since(Instant::now());
        (left.as_millis() as u64).div_ceil(1000).max(1) as u32
    }
}

/// Counts a request against its endpoint until dropped (with the response body).
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
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
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Pool {
    /// Build the pool; IP literals are ready at once, DNS names are resolved by
    /// [`Pool::refresh_dns`] (called once by the server before it reports ready).
    pub fn new(
        upstream: Upstream,
        urls: Vec<UpstreamUrl>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Pool {
        let eps = urls
            .iter()
            .filter_map(|u| u.ip().map(|ip| Endpoint::new(SocketAddr::new(ip, u.port))))
            .collect();
        Pool {
            upstream,
            scheme: Scheme::HTTP,
            urls,
            endpoints: ArcSwap::from_pointee(eps),
            metrics,
        }
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
                Ok(InFlight(e.clone()))
            }
            None => Err(eps.iter().map(|e| e.retry_after_secs()).min().unwrap_or(1)),
        }
    }

    /// A connect to `ep` failed: take it out of rotation until a probe succeeds.
    pub fn eject(&self, ep: &Endpoint) {
        let mut h = ep.health.lock().unwrap();
        if ep.ejected.swap(true, Ordering::Relaxed) {
            return;
        }
        h.backoff = BASE_BACKOFF;
        h.retry_at = Instant::now() + h.backoff;
        self.metrics
            .ejections
            .with_label_values(&[self.upstream.as_str()])
            .inc();
        tracing::info!(upstream = self.upstream.as_str(), endpoint = %ep.addr, backoff_ms = h.backoff.as_millis() as u64, "endpoint ejected after a failed connect");
    }

    /// Probe every ejected endpoint whose back-off has passed with a TCP connect.
    pub async fn probe_ejected(&self, connect_timeout: Duration) {
        let eps = self.endpoints();
        for ep in eps.iter().filter(|e| e.is_ejected()) {
            if ep.health.lock().unwrap().retry_at > Instant::now() {
                continue;
            }
            let ok = matches!(
                tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(ep.addr))
                    .await,
                Ok(Ok(_))
            );
            let mut h = ep.health.lock().unwrap();
            if ok {
                ep.ejected.store(false, Ordering::Relaxed);
                h.backoff = BASE_BACKOFF;
                tracing::info!(upstream = self.upstream.as_str(), endpoint = %ep.addr, "endpoint answered a probe; re-admitted");
            } else {
                h.backoff = (h.backoff * 2).min(MAX_BACKOFF);
                h.retry_at = Instant::now() + h.backoff;
            }
        }
    }

    /// Re-resolve DNS names; endpoints that stay keep their counters and health.
    pub async fn refresh_dns(&self) {
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
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|a| {
                current
                    .iter()
                    .find(|e| e.addr == *a)
                    .cloned()
                    .unwrap_or_else(|| Endpoint::new(*a))
            })
            .collect();
        tracing::info!(upstream = self.upstream.as_str(), endpoints = ?addrs, "upstream endpoints changed");
        self.endpoints.store(Arc::new(next));
    }

    /// Probes and DNS refreshes until `stop` fires.
    pub async fn maintain(
        self: Arc<Self>,
        connect_timeout: Duration,
        dns_refresh: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_dns = Instant::now() + dns_refresh;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_TICK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.probe_ejected(connect_timeout).await;
            if self.uses_dns() && Instant::now() >= next_dns {
                self.refresh_dns().await;
                next_dns = Instant::now() + dns_refresh;
            }
        }
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
            .map(|i| UpstreamUrl {
                host: "127.0.0.1".into(),
                port: 1000 + i,
            })
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
}
