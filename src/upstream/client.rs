//! The upstream client, shared by every request and every snapshot. Plain-http endpoints
//! are reached over keep-alive connections of the worker thread the request runs on
//! ([`super::keepalive`]); `https` endpoints through hyper-util's pooled client over TLS.
//! Keep-alive connections are keyed by endpoint address, so a reload that keeps an
//! endpoint keeps its idle connections.
//!
//! TLS: each `https` pool has a [`TlsTarget`], the upstream TLS settings plus the name
//! certificates are checked against, with a keep-alive client of its own (built on first
//! use, sharing the connect timeout). A reload that keeps the settings and the name keeps
//! the target, and so its connections; new settings (another CA bundle or client
//! certificate, `http` to `https`) make a new target whose connections are all new: a
//! connection verified under the old settings never carries a request of the new
//! snapshot. The TLS handshake is part of the connect and of its timeout; a failed
//! handshake is a connect failure (`502`, kind `tls`) that does not eject the endpoint (it
//! is almost always a certificate or configuration mismatch that a TCP probe cannot see
//! end, and every endpoint would share it).
//!
//! Worker threads (`runtime.mode = "per-core"`): each has plain keep-alive connections of
//! its own ([`enter_worker`]), so an upstream connection is driven on the thread whose
//! requests use it, and a request never waits for another thread to write it. The
//! `https` clients are shared by every thread.
//!
//! It owns the exchange with one endpoint: pick it from a [`Pool`], connect (within the
//! connect timeout, which a reload may change: it is read on every connect), send, wait
//! for the response head (within the first-byte timeout of the request's snapshot), and
//! report what failed as an [`UpstreamError`]. It also splices upgraded connections
//! (WebSocket) together and counts the open tunnels.
//!
//! Retries: a request is re-sent only when an idle keep-alive connection turned out to be
//! closed before a single byte of the request was written to it (then on a new
//! connection); nothing that reached an upstream is ever sent twice, so non-idempotent
//! requests are never retried. A failed connect ejects the endpoint (see [`super::pool`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::keepalive::{self, KeepAlive, Reuse, POOL_IDLE};
use super::tls::UpstreamTls;
use super::upgrade::ClientUpgrade;
use super::{Endpoint, InFlight, Pool, Upstream};
use crate::body::{BodyError, BoxError, RequestBody, RequestProgress};
use crate::metrics::Metrics;

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

/// The `kind` of `fleetgate_upstream_errors_total` for a failed TLS handshake (an
/// [`UpstreamError::Unreachable`] to the data path).
pub const TLS_KIND: &str = "tls";

std::thread_local! {
    /// The worker thread this is ([`enter_worker`]); 0 on any other thread.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Mark the calling thread as worker `index` of a per-core server: its requests use
/// plain keep-alive pool `index` (modulo the pools there are).
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The shared client (see the module docs).
pub struct UpstreamClient {
    /// The plain keep-alive connections, one set per worker thread.
    keepalive: Box<[Arc<KeepAlive>]>,
    /// The plain connector, which TLS clients wrap.
    connector: Connector,
    connect_timeout_ms: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// Open WebSocket / Upgrade tunnels (graceful shutdown waits for them).
    tunnels: Arc<AtomicUsize>,
}

impl UpstreamClient {
    /// `workers`: how many plain keep-alive pools to keep (one per worker thread; at
    /// least one).
    pub fn new(connect_timeout: Duration, metrics: Arc<Metrics>, workers: usize) -> UpstreamClient {
        let connect_timeout_ms = Arc::new(AtomicU64::new(connect_timeout.as_millis() as u64));
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(true);
        let connector = Connector {
            http,
            timeout_ms: connect_timeout_ms.clone(),
            tls: None,
        };
        UpstreamClient {
            keepalive: (0..workers.max(1))
                .map(|_| Arc::new(KeepAlive::new(crate::config::DEFAULT_MAX_IDLE_PER_ENDPOINT)))
                .collect(),
            connector,
            connect_timeout_ms,
            metrics,
            tunnels: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Keep at most `max` idle plain connections per endpoint in each worker's pool
    /// (`upstreams.max_idle_per_endpoint`). `https` pools are hyper-util's, whose idle
    /// connections close after [`POOL_IDLE`].
    pub fn set_max_idle(&self, max: usize) {
        for pool in self.keepalive.iter() {
            pool.set_max_idle(max);
        }
    }

    /// [`KeepAlive::purge`] every worker's idle plain connections.
    pub fn purge_idle(&self) {
        let now = std::time::Instant::now();
        for pool in self.keepalive.iter() {
            pool.purge(now);
        }
    }

    /// Apply a reloaded connect timeout to every later connect.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connect_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// The keep-alive client of an `https` pool's target (built on first use).
    fn tls_client<'p>(&'p self, target: &'p TlsTarget) -> &'p Client<Connector, RequestBody> {
        target.client.get_or_init(|| {
            let connector = Connector {
                tls: Some(TlsConnect {
                    connector: tokio_rustls::TlsConnector::from(
                        target.settings.client_config().clone(),
                    ),
                    name: target.name.clone(),
                }),
                ..self.connector.clone()
            };
            build_client(connector)
        })
    }

    /// This worker's plain keep-alive connections.
    fn keepalive(&self) -> &Arc<KeepAlive> {
        &self.keepalive[WORKER.with(|w| w.get()) % self.keepalive.len()]
    }

    /// One exchange over a plain keep-alive connection to `ep`: an idle one of this
    /// worker's if there is one, else a new one. A request that an idle connection
    /// turned out closed before a byte of it was written goes out on a new connection.
    ///
    /// The response head must come within `first_byte` of the request (with its body)
    /// having been sent, timed by the connection's own clock (see [`keepalive::Conn`]).
    async fn exchange_plain(
        &self,
        ep: &Endpoint,
        mut req: Request<RequestBody>,
        progress: Option<&RequestProgress>,
        first_byte: Duration,
    ) -> Result<(Response<Incoming>, Option<Reuse>), Failure> {
        let idle = self.keepalive();
        let (mut conn, mut reused) = match idle.take(ep.addr) {
            Some(conn) => (conn, true),
            None => (self.connect_plain(ep).await?, false),
        };
        // One send site, in a loop: each `.await` site keeps room for its future (and
        // the error is gone before the next one).
        loop {
            let sent = {
                let (sender, mut clock) = conn.parts();
                let deadline = async {
                    if let Some(p) = progress {
                        p.sent().await;
                    }
                    clock
                        .as_mut()
                        .reset(tokio::time::Instant::now() + first_byte);
                    clock.await
                };
                tokio::select! {
                    r = sender.try_send_request(req) => r,
                    () = deadline => return Err(Failure::first_byte()),
                }
            };
            req = match sent {
                Ok(resp) => return Ok((resp, Some(Reuse::new(conn, ep.addr, idle.clone())))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => unsent,
                    _ => return Err(Failure::exchange(e.into_error().into())),
                },
            };
            conn = self.connect_plain(ep).await?;
            reused = false;
        }
    }

    /// A new plain connection to `ep`, ready for a request. Boxed: a new connection is
    /// the rare case, and its handshake's state would make every exchange's future larger.
    fn connect_plain<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> Pin<Box<dyn Future<Output = Result<keepalive::Conn, Failure>> + Send + 'a>> {
        let timeout = Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed));
        Box::pin(async move {
            let mut conn = keepalive::connect(ep.addr, timeout)
                .await
                .map_err(|e| Failure::connect(e.into(), false))?;
            // Connected: a connection that fails from here on failed the exchange.
            conn.ready()
                .await
                .map_err(|e| Failure::exchange(e.into()))?;
            Ok(conn)
        })
    }

    /// One exchange through the `https` target's client (hyper-util's pooled client).
    async fn exchange_tls(
        &self,
        target: &TlsTarget,
        ep: &Endpoint,
        scheme: &http::uri::Scheme,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Reuse>), Failure> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(ep.authority.clone());
        uri.path_and_query = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        match self.tls_client(target).request(req).await {
            Ok(resp) => Ok((resp, None)),
            Err(err) if err.is_connect() => {
                let tls = is_tls_failure(&err);
                Err(Failure::connect(err.into(), tls))
            }
            Err(err) => Err(Failure::exchange(err.into())),
        }
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
        let mut inflight = inflight;
        let ep = inflight.endpoint().clone();
        // Origin form; the https client makes it absolute to find its pool.
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = Version::HTTP_11;
        // HTTP/1.1 requires a Host and an HTTP/1.0 client may have sent none: name the
        // endpoint then, as nginx does.
        if !req.headers().contains_key(http::header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(ep.authority.as_str()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }

        let progress: Option<Arc<RequestProgress>> = req.body().progress().cloned();
        // The first-byte clock starts once the request body has been sent in full.
        let result = match &pool.tls {
            None => {
                self.exchange_plain(&ep, req, progress.as_deref(), first_byte)
                    .await
            }
            // Boxed: it would make every plain exchange's future larger.
            Some(target) => {
                Box::pin(async {
                    let deadline = async {
                        if let Some(p) = &progress {
                            p.sent().await;
                        }
                        tokio::time::sleep(first_byte).await;
                    };
                    tokio::select! {
                        r = self.exchange_tls(target, &ep, &pool.scheme, req) => r,
                        () = deadline => Err(Failure::first_byte()),
                    }
                })
                .await
            }
        };
        match result {
            Err(f) if f.first_byte => {
                let e = UpstreamError::FirstByteTimeout;
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, "no response head within timeouts.first_byte");
                self.count(e, upstream);
                Err(e)
            }
            Ok((resp, reuse)) => {
                if let Some(conn) = reuse {
                    inflight.reuse(conn);
                }
                Ok((resp, inflight))
            }
            Err(Failure {
                error,
                connect,
                tls,
                ..
            }) => {
                let e = if connect {
                    if !tls {
                        pool.eject(&ep);
                    }
                    UpstreamError::Unreachable {
                        retry_after: ep.retry_after_secs(),
                    }
                } else {
                    classify_client_error(error.as_ref())
                };
                let kind = if tls { TLS_KIND } else { e.kind() };
                tracing::warn!(upstream = upstream.as_str(), endpoint = %ep.addr, error = %ErrorChain(error.as_ref()), kind, "upstream request failed");
                self.metrics
                    .upstream_errors
                    .with_label_values(&[upstream.as_str(), kind])
                    .inc();
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
        client: ClientUpgrade,
        upstream_resp: &mut Response<Incoming>,
        hold: H,
    ) {
        let upstream = hyper::upgrade::on(upstream_resp);
        let tunnels = self.tunnels.clone();
        tunnels.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _open = TunnelGuard(tunnels);
            let _hold = hold;
            let upstream = async { upstream.await.map_err(BoxError::from) };
            match tokio::try_join!(client.into_io(), upstream) {
                Ok((mut c, u)) => {
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

fn build_client(connector: Connector) -> Client<Connector, RequestBody> {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .set_host(false)
        .retry_canceled_requests(true)
        .build(connector)
}

/// The TLS side of one `https` pool (see the module docs).
pub struct TlsTarget {
    pub settings: Arc<UpstreamTls>,
    /// The name certificates are checked against and sent as SNI: the pool's DNS name;
    /// `None`: each endpoint's IP address.
    pub name: Option<ServerName<'static>>,
    /// The keep-alive client of this target, built on first use.
    client: OnceLock<Client<Connector, RequestBody>>,
}

impl TlsTarget {
    pub fn new(settings: Arc<UpstreamTls>, name: Option<ServerName<'static>>) -> TlsTarget {
        TlsTarget {
            settings,
            name,
            client: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("settings", &self.settings)
            .field("name", &self.name)
            .finish()
    }
}

/// hyper-util's connector with a connect timeout that can change while it runs, and a
/// TLS handshake on top for `https` pools. The timeout covers both.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    timeout_ms: Arc<AtomicU64>,
    tls: Option<TlsConnect>,
}

#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: Option<ServerName<'static>>,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send + 'static>>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let tls = match &self.tls {
            None => None,
            Some(t) => match t.name.clone().or_else(|| ip_name(&uri)) {
                Some(name) => Some((t.connector.clone(), name)),
                None => {
                    let e = format!("no server name to check the certificate of {uri} against");
                    return Box::pin(async move { Err(e.into()) });
                }
            },
        };
        // The TCP connector only dials `http://` URIs; TLS goes on top.
        let tcp_uri = match (&tls, uri.authority()) {
            (Some(_), Some(authority)) => Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .unwrap_or(uri),
            _ => uri,
        };
        let connecting = tower::Service::<Uri>::call(&mut self.http, tcp_uri);
        Box::pin(async move {
            let connect = async move {
                let tcp = connecting.await?;
                let Some((connector, name)) = tls else {
                    return Ok(Conn::Plain(tcp));
                };
                match connector.connect(name.clone(), tcp.into_inner()).await {
                    Ok(stream) => Ok(Conn::Tls(Box::new(TokioIo::new(stream)))),
                    Err(source) => Err(Box::new(TlsFailure {
                        name: name.to_str().into_owned(),
                        source,
                    }) as BoxError),
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r,
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out (timeouts.connect)",
                )) as BoxError),
            }
        })
    }
}

/// The IP address of `uri`'s host, as the name to check a certificate against.
fn ip_name(uri: &Uri) -> Option<ServerName<'static>> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ServerName::IpAddress(ip.into()))
}

/// A TLS handshake with an upstream failed (unknown CA, name mismatch, expired, no
/// common protocol, the upstream refused our client certificate…).
#[derive(Debug)]
struct TlsFailure {
    name: String,
    source: std::io::Error,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake failed (server name {})", self.name)
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Did this client error come from a failed TLS handshake?
fn is_tls_failure(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<TlsFailure>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A connection to an upstream: plain TCP or TLS over TCP (boxed: its state is large).
enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        // Plain HTTP/1.1 either way (ALPN offers http/1.1 alone). No `HttpInfo` extra:
        // nothing reads it, and hyper-util would insert it into every response's
        // extensions (two allocations per request).
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }
}

struct TunnelGuard(Arc<AtomicUsize>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why one exchange with an endpoint failed.
struct Failure {
    error: BoxError,
    /// No connection could be made (the request was not sent).
    connect: bool,
    /// ... because the TLS handshake failed.
    tls: bool,
    /// No response head within `timeouts.first_byte` of the request having been sent.
    first_byte: bool,
}

impl Failure {
    fn connect(error: BoxError, tls: bool) -> Failure {
        Failure {
            error,
            connect: true,
            tls,
            first_byte: false,
        }
    }

    fn exchange(error: BoxError) -> Failure {
        Failure {
            error,
            connect: false,
            tls: false,
            first_byte: false,
        }
    }

    fn first_byte() -> Failure {
        Failure {
            error: "no response head within timeouts.first_byte".into(),
            connect: false,
            tls: false,
            first_byte: true,
        }
    }
}

/// A failure after the connection was made: whose fault was it?
fn classify_client_error(err: &(dyn std::error::Error + 'static)) -> UpstreamError {
    let mut source = Some(err);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamUrl};

    /// A TLS server on 127.0.0.1 presenting a self-signed certificate for `names`; it
    /// accepts connections until dropped.
    async fn tls_server(names: &[&str]) -> (std::net::SocketAddr, rcgen::CertifiedKey) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let sc = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        (addr, ck)
    }

    /// Connect through a TLS [`Connector`] trusting `ca_pem`, checking `name` (or the IP).
    async fn connect(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        name: Option<&str>,
    ) -> Result<Conn, BoxError> {
        let dir = std::env::temp_dir().join(format!(
            "fleetgate-connector-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let mut config = Config::default();
        config.upstreams.fleet = vec![UpstreamUrl::parse(&format!("https://{addr}")).unwrap()];
        config.upstreams.ca_file = Some(ca);
        let settings = UpstreamTls::load(&config, None).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut connector = Connector {
            http: HttpConnector::new(),
            timeout_ms: Arc::new(AtomicU64::new(5000)),
            tls: Some(TlsConnect {
                connector: tokio_rustls::TlsConnector::from(settings.client_config().clone()),
                name: name.map(|n| ServerName::try_from(n.to_string()).unwrap()),
            }),
        };
        let uri: Uri = format!("https://{addr}/").parse().unwrap();
        tower::Service::call(&mut connector, uri).await
    }

    fn reason(e: &BoxError) -> String {
        let tls = e.is::<TlsFailure>();
        format!("{} (tls: {tls})", ErrorChain(e.as_ref()))
    }

    #[tokio::test]
    async fn handshake_failures_say_why() {
        let (addr, ck) = tls_server(&["127.0.0.1", "localhost"]).await;
        let ok = connect(addr, &ck.cert.pem(), None).await;
        assert!(matches!(ok, Ok(Conn::Tls(_))), "IP SAN checked");
        let ok = connect(addr, &ck.cert.pem(), Some("localhost")).await;
        assert!(matches!(ok, Ok(Conn::Tls(_))), "DNS name checked");

        let e = connect(addr, &ck.cert.pem(), Some("other.test"))
            .await
            .err()
            .unwrap();
        let why = reason(&e);
        assert!(why.contains("not valid for name \"other.test\""), "{why}");
        assert!(why.contains("server name other.test"), "{why}");
        assert!(why.ends_with("(tls: true)"), "{why}");

        // A CA of another name: the upstream's issuer is unknown to it.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "another CA");
        let other = params.self_signed(&key).unwrap();
        let e = connect(addr, &other.pem(), None).await.err().unwrap();
        let why = reason(&e);
        assert!(why.contains("UnknownIssuer"), "{why}");
        assert!(why.contains("server name 127.0.0.1"), "{why}");
    }
}
