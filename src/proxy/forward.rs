//! The forward step, innermost in the proxy stack: [`Forward`] sends a routed request
//! to the pool of its target and hands back the upstream's response head with the body
//! still unread ([`Forwarded`]). It owns the pool choice by target, the degrade fallback
//! (an unreachable ide serves a `degrade = true` GET/HEAD from the fleet pool instead),
//! and HTTP/1.1 `Upgrade` tunnels. The headers arrive already prepared by the layers
//! above it.
//!
//! [`Forwarder`] underneath is the pooled keep-alive client (hyper-util's legacy client
//! over plain TCP): endpoint choice, the connect / first-byte timeouts, and mapping client
//! errors to [`ProxyError`]s.
//!
//! Retries: hyper-util re-sends a request only when a pooled keep-alive connection turned
//! out to be closed before a single byte of the request was written to it; nothing that
//! reached an upstream is ever sent twice, so non-idempotent requests are never retried.
//! A failed connect ejects the endpoint (see [`super::upstream`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Timeouts;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::proxy::body::{BodyError, RequestBody, RequestProgress};
use crate::proxy::headers;
use crate::proxy::routed::{RouteDecision, Routed};
use crate::proxy::target::Target;
use crate::proxy::upstream::{InFlight, Pool};

/// What [`Forward`] hands back as the body of the upstream's response: the body itself,
/// still unread, and what the respond step records about the exchange.
pub struct Forwarded {
    pub body: Incoming,
    /// Counts the request against its endpoint until dropped (with the response body).
    pub inflight: InFlight,
    /// The ide was unreachable and the fleet pool answered instead (a degrade rule).
    pub degraded: bool,
}

/// The future of [`Forward`]: the one allocation the stack makes per request.
pub type ForwardFuture =
    Pin<Box<dyn Future<Output = Result<Response<Forwarded>, ProxyError>> + Send>>;

/// The innermost service: sends the request upstream (see the module docs).
///
/// Always ready: it applies no backpressure. Load is shed by admission control, with a
/// `503`, in a layer above it.
#[derive(Clone)]
pub struct Forward {
    forwarder: Arc<Forwarder>,
    fleet: Arc<Pool>,
    ide: Option<Arc<Pool>>,
}

impl Forward {
    pub fn new(forwarder: Arc<Forwarder>, fleet: Arc<Pool>, ide: Option<Arc<Pool>>) -> Forward {
        Forward {
            forwarder,
            fleet,
            ide,
        }
    }

    /// The pool a target is served from. `Local` and `Fleet` share the `fleet` pool.
    fn pool(&self, target: Target) -> Result<&Pool, ProxyError> {
        match target {
            // The role table picks ide only when it is configured.
            Target::Ide => self.ide.as_deref().ok_or(ProxyError::Misdirected),
            Target::Local | Target::Fleet => Ok(&self.fleet),
        }
    }

    async fn forward(
        self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Forwarded>, ProxyError> {
        // The routing facts go no further: the upstream request does not carry them.
        let routed = req
            .extensions_mut()
            .remove::<Routed>()
            .expect("requests reach the proxy stack only after routing");
        let decision = routed.decision;
        let pool = self.pool(decision.target)?;

        // The client's side of an upgrade, kept for the tunnel.
        let client_upgrade = if headers::is_upgrade_request(req.version(), req.headers()) {
            req.extensions_mut().remove::<OnUpgrade>()
        } else {
            None
        };
        // A degradable ide-only read keeps what it needs to be served locally instead.
        let fallback =
            degradable(&decision, &req).then(|| (req.method().clone(), req.headers().clone()));
        let progress = req.body().progress().cloned();

        let mut answered_by = pool.upstream;
        let mut degraded = false;
        let mut sent = self
            .forwarder
            .send(pool, req, routed.path.clone(), progress.as_deref())
            .await;
        if let (Err(ProxyError::Unreachable { .. }), Some((method, headers))) = (&sent, fallback) {
            let mut req = Request::new(RequestBody::empty());
            *req.method_mut() = method;
            *req.headers_mut() = headers;
            answered_by = self.fleet.upstream;
            degraded = true;
            sent = self
                .forwarder
                .send(&self.fleet, req, routed.path, None)
                .await;
        }
        let (mut resp, inflight) = sent?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(on) => self.forwarder.tunnel(on, &mut resp),
                None => {
                    return Err(ProxyError::UpstreamFailed {
                        upstream: answered_by,
                    })
                }
            }
        }
        Ok(resp.map(|body| Forwarded {
            body,
            inflight,
            degraded,
        }))
    }
}

/// Can this request be served locally when the ide is unreachable? A degrade rule's
/// GET or HEAD without a body, on its way to the ide.
fn degradable(decision: &RouteDecision, req: &Request<RequestBody>) -> bool {
    decision.degrade
        && decision.target == Target::Ide
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && req.body().is_end_stream()
}

impl tower::Service<Request<RequestBody>> for Forward {
    type Response = Response<Forwarded>;
    type Error = ProxyError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> ForwardFuture {
        Box::pin(self.clone().forward(req))
    }
}

/// Idle keep-alive connections to upstreams are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The upstream client, shared by every request.
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

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Config, UpstreamUrl};
    use crate::manifest::Class;
    use crate::proxy::routed::testing;
    use crate::proxy::target::Upstream;

    /// A pool whose one DNS name was never resolved: it has no endpoint, so every pick
    /// fails fast, before any connection is tried.
    fn empty_pool(upstream: Upstream, metrics: &Arc<Metrics>) -> Arc<Pool> {
        let url = UpstreamUrl {
            host: "unresolved.invalid".into(),
            port: 80,
        };
        Arc::new(Pool::new(upstream, vec![url], metrics.clone()))
    }

    fn forward(with_ide: bool) -> Forward {
        let metrics = Arc::new(Metrics::new());
        let forwarder = Forwarder::new(&Config::default().timeouts, metrics.clone());
        let ide = with_ide.then(|| empty_pool(Upstream::Ide, &metrics));
        Forward::new(
            Arc::new(forwarder),
            empty_pool(Upstream::Fleet, &metrics),
            ide,
        )
    }

    fn ide_request(method: Method, degrade: bool) -> Request<RequestBody> {
        let decision = RouteDecision {
            class: Class::IdeOnly,
            rule_index: None,
            tenant: None,
            target: Target::Ide,
            degrade,
        };
        testing::routed_request(method, "/api/w/files", decision, RequestBody::empty())
    }

    fn failed_upstream(r: Result<Response<Forwarded>, ProxyError>) -> Option<Upstream> {
        r.err().and_then(|e| e.upstream())
    }

    #[tokio::test]
    async fn the_target_picks_the_pool() {
        let r = forward(true)
            .oneshot(ide_request(Method::POST, false))
            .await;
        assert_eq!(failed_upstream(r), Some(Upstream::Ide));
        let req = testing::request(Method::GET, "/x", Target::Local, RequestBody::empty());
        let r = forward(true).oneshot(req).await;
        assert_eq!(failed_upstream(r), Some(Upstream::Fleet));
    }

    #[tokio::test]
    async fn an_ide_target_without_an_ide_pool_is_misdirected() {
        let r = forward(false)
            .oneshot(ide_request(Method::GET, false))
            .await;
        assert_eq!(r.err(), Some(ProxyError::Misdirected));
    }

    #[tokio::test]
    async fn unreachable_ide_falls_back_to_the_fleet_pool_for_degradable_reads() {
        let r = forward(true).oneshot(ide_request(Method::GET, true)).await;
        assert_eq!(
            failed_upstream(r),
            Some(Upstream::Fleet),
            "the fallback ran"
        );
        let r = forward(true).oneshot(ide_request(Method::HEAD, true)).await;
        assert_eq!(
            failed_upstream(r),
            Some(Upstream::Fleet),
            "the fallback ran"
        );
        // Writes and rules without degrade are not served locally.
        let r = forward(true).oneshot(ide_request(Method::POST, true)).await;
        assert_eq!(failed_upstream(r), Some(Upstream::Ide));
        let r = forward(true).oneshot(ide_request(Method::GET, false)).await;
        assert_eq!(failed_upstream(r), Some(Upstream::Ide));
    }
}
