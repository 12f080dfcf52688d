//! The upstream client, shared by every request and every snapshot: hyper-util's pooled
//! keep-alive client over plain TCP. Keep-alive connections are keyed by endpoint address,
//! so a reload that keeps an endpoint keeps its idle connections.
//!
//! It owns the exchange with one endpoint: pick it from a [`Pool`], connect (within the
//! connect timeout, which a reload may change: the connector reads it on every connect),
//! send, wait for the response head (within the first-byte timeout of the request's
//! snapshot), and report what failed as an [`UpstreamError`]. It also splices upgraded
//! connections (WebSocket) together and counts the open tunnels.
//!
//! Retries: hyper-util re-sends a request only when a pooled keep-alive connection turned
//! out to be closed before a single byte of the request was written to it; nothing that
//! reached an upstream is ever sent twice, so non-idempotent requests are never retried.
//! A failed connect ejects the endpoint (see [`super::pool`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{InFlight, Pool, Upstream};
use crate::body::{BodyError, BoxError, RequestBody, RequestProgress};
use crate::metrics::Metrics;

/// Idle keep-alive connections to upstreams are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why an exchange with an upstream failed. The data path turns it into an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No endpoint could be connected to (refused, timed out, every one ejected, or none
    /// known yet); `retry_after`: seconds until the next probe.
    Unreachable { retry_after: u32 },
    /// The upstream accepted the request but sent no response head within `first_byte`.
    FirstByteTimeout,
    /// The upstream connection failed after the request was (partly) sent.
    Failed,
    /// The client stopped sending its body for longer than `timeouts.idle`.
    RequestBodyTimeout,
    /// The client's body failed (it went away).
    RequestBodyAborted,
}

impl UpstreamError {
    /// The `kind` label of `fleetgate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable { .. } => "connect",
            UpstreamError::FirstByteTimeout => "timeout",
            UpstreamError::Failed => "protocol",
            UpstreamError::RequestBodyTimeout => "client_timeout",
            UpstreamError::RequestBodyAborted => "client_abort",
        }
    }
}

/// The shared client (see the module docs).
pub struct UpstreamClient {
    client: Client<TimedConnector, RequestBody>,
    connect_timeout_ms: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// Open WebSocket / Upgrade tunnels (graceful shutdown waits for them).
    tunnels: Arc<AtomicUsize>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, metrics: Arc<Metrics>) -> UpstreamClient {
        let connect_timeout_ms = Arc::new(AtomicU64::new(connect_timeout.as_millis() as u64));
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(true);
        let connector = TimedConnector {
            http,
            timeout_ms: connect_timeout_ms.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .set_host(false)
            .retry_canceled_requests(true)
            .build(connector);
        UpstreamClient {
            client,
            connect_timeout_ms,
            metrics,
            tunnels: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Apply a reloaded connect timeout to every later connect.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connect_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// How many upgrade tunnels are open.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Send `req` (headers already prepared) to an endpoint of `pool`, with `pq` as the
    /// request target, and wait for the response head for at most `first_byte` after the
    /// request body has been sent.
    pub async fn send(
        &self,
        pool: &Pool,
        mut req: Request<RequestBody>,
        pq: PathAndQuery,
        first_byte: Duration,
    ) -> Result<(Response<Incoming>, InFlight), UpstreamError> {
        let upstream = pool.upstream;
        let inflight = pool.pick().map_err(|retry_after| {
            // Every endpoint is ejected: fail fast, counted but not logged per request.
            self.metrics
                .upstream_errors
                .with_label_values(&[upstream.as_str(), "no_endpoint"])
                .inc();
            UpstreamError::Unreachable { retry_after }
        })?;
        let ep = inflight.endpoint().clone();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(pool.scheme.clone());
        uri.authority = Some(ep.authority.clone());
        uri.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        *req.version_mut() = Version::HTTP_11;
        // HTTP/1.1 requires a Host and an HTTP/1.0 client may have sent none: name the
        // endpoint then, as nginx does.
        if !req.headers().contains_key(http::header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(ep.authority.as_str()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }

        let progress: Option<Arc<RequestProgress>> = req.body().progress().cloned();
        let response = self.client.request(req);
        // The first-byte clock starts once the request body has been sent in full.
        let deadline = async {
            if let Some(p) = &progress {
                p.sent().await;
            }
            tokio::time::sleep(first_byte).await;
        };
        let result = tokio::select! {
            r = response => r,
            _ = deadline => {
                let e = UpstreamError::FirstByteTimeout;
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, "no response head within timeouts.first_byte");
                self.count(e, upstream);
                return Err(e);
            }
        };
        match result {
            Ok(resp) => Ok((resp, inflight)),
            Err(err) => {
                let e = if err.is_connect() {
                    pool.eject(&ep);
                    UpstreamError::Unreachable {
                        retry_after: ep.retry_after_secs(),
                    }
                } else {
                    classify_client_error(&err)
                };
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, error = %ErrorChain(&err), kind = e.kind(), "upstream request failed");
                self.count(e, upstream);
                Err(e)
            }
        }
    }

    fn count(&self, e: UpstreamError, upstream: Upstream) {
        self.metrics
            .upstream_errors
            .with_label_values(&[upstream.as_str(), e.kind()])
            .inc();
    }

    /// Splice the client's and the upstream's upgraded connections together once both
    /// sides have switched protocols. `hold` (an admission slot) is kept until the
    /// tunnel closes.
    pub fn tunnel<H: Send + 'static>(
        &self,
        client: OnUpgrade,
        upstream_resp: &mut Response<Incoming>,
        hold: H,
    ) {
        let upstream = hyper::upgrade::on(upstream_resp);
        let tunnels = self.tunnels.clone();
        tunnels.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _open = TunnelGuard(tunnels);
            let _hold = hold;
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

/// hyper-util's connector with a connect timeout that can change while it runs.
#[derive(Clone)]
struct TimedConnector {
    http: HttpConnector,
    timeout_ms: Arc<AtomicU64>,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send + 'static>>;

impl tower::Service<Uri> for TimedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let connecting = tower::Service::<Uri>::call(&mut self.http, uri);
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out (timeouts.connect)",
                )) as BoxError),
            }
        })
    }
}

struct TunnelGuard(Arc<AtomicUsize>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A failure after the connection was made: whose fault was it?
fn classify_client_error(err: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::IdleTimeout => UpstreamError::RequestBodyTimeout,
                BodyError::Client(_) => UpstreamError::RequestBodyAborted,
                BodyError::Upstream(_) => UpstreamError::Failed,
            };
        }
        source = s.source();
    }
    UpstreamError::Failed
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
