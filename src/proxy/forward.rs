//! Sending a request upstream: the pooled keep-alive client (hyper-util's legacy client
//! over plain TCP), endpoint choice, the connect / first-byte timeouts, mapping client
//! errors to [`ProxyError`]s, and HTTP/1.1 `Upgrade` tunnels.
//!
//! Retries: hyper-util re-sends a request only when a pooled keep-alive connection turned
//! out to be closed before a single byte of the request was written to it; nothing that
//! reached an upstream is ever sent twice, so non-idempotent requests are never retried.
//! A failed connect ejects the endpoint (see [`super::upstream`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Timeouts;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::proxy::body::{BodyError, RequestBody, RequestProgress};
use crate::proxy::upstream::{InFlight, Pool};

/// Idle keep-alive connections to upstreams are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

pub struct Forwarder {
    client: Client<HttpConnector, RequestBody>,
    first_byte: Duration,
    metrics: Arc<Metrics>,
    /// Open WebSocket / Upgrade tunnels (graceful shutdown waits for them).
    tunnels: Arc<AtomicUsize>,
}

impl Forwarder {
    pub fn new(timeouts: &Timeouts, metrics: Arc<Metrics>) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .set_host(false)
            .retry_canceled_requests(true)
            .build(connector);
        Forwarder {
            client,
            first_byte: timeouts.first_byte,
            metrics,
            tunnels: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many upgrade tunnels are open.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Send `req` (headers already prepared) to an endpoint of `pool`, with `pq` as the
    /// request target, and wait for the response head.
    pub async fn send(
        &self,
        pool: &Pool,
        mut req: Request<RequestBody>,
        pq: PathAndQuery,
        progress: Option<&RequestProgress>,
    ) -> Result<(Response<Incoming>, InFlight), ProxyError> {
        let upstream = pool.upstream;
        let inflight = pool.pick().map_err(|retry_after| {
            let e = ProxyError::Unreachable {
                upstream,
                retry_after,
            };
            // Every endpoint is ejected: fail fast, counted but not logged per request.
            self.metrics
                .upstream_errors
                .with_label_values(&[upstream.as_str(), "no_endpoint"])
                .inc();
            e
        })?;
        let ep = inflight.endpoint().clone();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(pool.scheme.clone());
        uri.authority = Some(ep.authority.clone());
        uri.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        *req.version_mut() = Version::HTTP_11;

        let response = self.client.request(req);
        // The first-byte clock starts once the request body has been sent in full.
        let deadline = async {
            if let Some(p) = progress {
                p.sent().await;
            }
            tokio::time::sleep(self.first_byte).await;
        };
        let result = tokio::select! {
            r = response => r,
            _ = deadline => {
                let e = ProxyError::FirstByteTimeout { upstream };
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, "no response head within timeouts.first_byte");
                self.count(&e, upstream);
                return Err(e);
            }
        };
        match result {
            Ok(resp) => Ok((resp, inflight)),
            Err(err) => {
                let e = if err.is_connect() {
                    pool.eject(&ep);
                    ProxyError::Unreachable {
                        upstream,
                        retry_after: ep.retry_after_secs(),
                    }
                } else {
                    classify_client_error(&err, upstream)
                };
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, error = %ErrorChain(&err), "upstream request failed: {e}");
                self.count(&e, upstream);
                Err(e)
            }
        }
    }

    fn count(&self, e: &ProxyError, upstream: crate::proxy::target::Upstream) {
        self.metrics
            .upstream_errors
            .with_label_values(&[upstream.as_str(), e.kind()])
            .inc();
    }

    /// Splice the client's and the upstream's upgraded connections together once both
    /// sides have switched protocols.
    pub fn tunnel(&self, client: OnUpgrade, upstream_resp: &mut Response<Incoming>) {
        let upstream = hyper::upgrade::on(upstream_resp);
        let tunnels = self.tunnels.clone();
        tunnels.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _open = TunnelGuard(tunnels);
            match tokio::try_join!(client, upstream) {
                Ok((c, u)) => {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        tracing::debug!(error = %e, "upgrade tunnel closed with an error");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "upgrade failed"),
            }
        });
    }
}

struct TunnelGuard(Arc<AtomicUsize>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A failure after the connection was made: whose fault was it?
fn classify_client_error(
    err: &hyper_util::client::legacy::Error,
    upstream: crate::proxy::target::Upstream,
) -> ProxyError {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::IdleTimeout => ProxyError::RequestBodyTimeout,
                BodyError::Client(_) => ProxyError::RequestBodyAborted,
                BodyError::Upstream(_) => ProxyError::UpstreamFailed { upstream },
            };
        }
        source = s.source();
    }
    ProxyError::UpstreamFailed { upstream }
}

/// Display an error with its causes, once, for the log.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}
