//! Listeners and the life of the process: binding the data and admin listeners, TLS
//! (rustls, ALPN `h2`/`http/1.1`), HTTP/1.1 + HTTP/2 + h2c on one port, connection limits,
//! head-size and head-time limits, the tower-http layers around the data path (panic to
//! 500, sensitive headers, request ids), reload on SIGHUP, and graceful shutdown.
//!
//! A new connection is served with the live snapshot's TLS certificate and HTTP limits;
//! a reload never touches an open connection.
//!
//! Shutdown, once triggered (SIGTERM/SIGINT or [`ShutdownHandle::trigger`]): readiness
//! fails at once; accepting stops after `timeouts.drain_delay`; open connections are told
//! to finish (idle keep-alives close, HTTP/2 gets GOAWAY, in-flight requests and streams
//! run on) and get `timeouts.shutdown` to do so; whatever is left is then closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::config::Config;
use crate::proxy::{ConnInfo, Proxy, ProxyService};
use crate::reload::{BuildError, ConfigSource, Reloader, Trigger};
use crate::state::{Phase, Runtime, Snapshot, State};

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    /// Configuration, TLS files or manifest: exit 78.
    Config(String),
    /// Anything else (a listener that cannot be bound): exit 1.
    Io(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(m) | StartError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StartError {}

impl From<BuildError> for StartError {
    fn from(e: BuildError) -> Self {
        StartError::Config(e.to_string())
    }
}

/// Starts a graceful shutdown of a [`RunningServer`]; cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A started server: its bound addresses and the means to reload and stop it.
pub struct RunningServer {
    /// The data listener's address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    pub state: Arc<State>,
    pub reloader: Arc<Reloader>,
    shutdown: ShutdownHandle,
    done: JoinHandle<()>,
}

impl RunningServer {
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    /// Trigger a graceful shutdown and wait until it has finished.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        self.wait().await;
    }

    /// Wait until the server has shut down (after a trigger).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Build the first snapshot, bind both listeners and start serving. Readiness turns
/// green once everything is up. A reload re-reads `config`'s file when it came from one
/// (see [`ConfigSource::of`]).
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let source = ConfigSource::of(&config);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let runtime = Runtime::new(metrics.clone(), config.timeouts.connect);
    let (listen, admin_listen) = (config.listen, config.admin_listen);
    let watch_files = config.reload.watch;
    let snapshot = crate::reload::build_snapshot(config, None, &metrics).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Io(format!("cannot listen on {listen} (listen): {e}")))?;
    let admin = TcpListener::bind(admin_listen).await.map_err(|e| {
        StartError::Io(format!(
            "cannot listen on {admin_listen} (admin_listen): {e}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;

    let state = Arc::new(State::new(snapshot, runtime));
    let reloader = Arc::new(Reloader::new(state.clone(), source));
    let proxy = Arc::new(Proxy::new(state.clone()));

    let (trigger_tx, mut trigger_rx) = watch::channel(false);
    let (stop_accept_tx, stop_accept_rx) = watch::channel(false);
    let (kill_tx, kill_rx) = watch::channel(false);
    let (stop_bg_tx, stop_bg_rx) = watch::channel(false);

    let accept = tokio::spawn(accept_loop(listener, proxy, stop_accept_rx, kill_rx));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        state.clone(),
        reloader.clone(),
        stop_bg_rx.clone(),
    ));
    tokio::spawn(state.clone().maintain_upstreams(stop_bg_rx.clone()));
    tokio::spawn(reload_on_sighup(reloader.clone(), stop_bg_rx.clone()));
    if watch_files {
        tokio::spawn(reloader.clone().watch(stop_bg_rx.clone()));
    }
    state.runtime.set_phase(Phase::Ready);

    let life = state.clone();
    let done = tokio::spawn(async move {
        // Wait for the trigger (or for every handle to be gone).
        while !*trigger_rx.borrow_and_update() {
            if trigger_rx.changed().await.is_err() {
                break;
            }
        }
        let t = life.snapshot().config.timeouts;
        life.runtime.set_phase(Phase::Draining);
        tracing::info!(
            drain_delay_ms = t.drain_delay.as_millis() as u64,
            "shutdown: readiness is failing; draining"
        );
        tokio::time::sleep(t.drain_delay).await;
        let _ = stop_accept_tx.send(true);
        let graceful = accept.await.ok();
        let finished = tokio::time::timeout(t.shutdown, async {
            if let Some(g) = graceful {
                g.shutdown().await;
            }
            while life.runtime.client.open_tunnels() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                shutdown_ms = t.shutdown.as_millis() as u64,
                "shutdown: timeout reached; closing what is left"
            );
            let _ = kill_tx.send(true);
        }
        let _ = stop_bg_tx.send(true);
        let _ = admin_task.await;
        tracing::info!("shutdown complete");
    });

    Ok(RunningServer {
        addr,
        admin_addr,
        state,
        reloader,
        shutdown: ShutdownHandle(Arc::new(trigger_tx)),
        done,
    })
}

/// Reload on every SIGHUP until `stop` fires.
async fn reload_on_sighup(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reload with POST /reload");
        return;
    };
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP received; reloading");
                let _ = reloader.reload(Trigger::Signal).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with the limits of one snapshot.
fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.header_read)
        .max_buf_size(config.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.limits.max_header_bytes as u32)
        // Streams beyond this are refused (REFUSED_STREAM); cancelled-before-accepted
        // streams beyond h2's default of 20 pending (rapid reset) end the connection.
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// What a new connection is served with: built once per snapshot, reused until the next.
struct ConnSettings {
    serial: u64,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    header_read: Duration,
    send: Duration,
}

impl ConnSettings {
    fn of(snap: &Snapshot) -> ConnSettings {
        ConnSettings {
            serial: snap.serial,
            builder: Arc::new(http_builder(&snap.config)),
            tls: snap.tls.clone().map(TlsAcceptor::from),
            header_read: snap.config.timeouts.header_read,
            send: snap.config.timeouts.send,
        }
    }
}

/// Accept until told to stop; returns the handle that drains the open connections.
async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) -> GracefulShutdown {
    let state = proxy.state().clone();
    // `limits.max_connections` needs a restart, so the semaphore is sized once.
    let limit = Arc::new(Semaphore::new(
        state.snapshot().config.limits.max_connections,
    ));
    let mut settings = ConnSettings::of(&state.snapshot());
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stop.changed() => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        // A new connection gets the live snapshot's TLS certificate and limits; open
        // connections keep theirs.
        let snap = state.snapshot();
        if snap.serial != settings.serial {
            settings = ConnSettings::of(&snap);
        }
        let conn = Conn {
            proxy: proxy.clone(),
            builder: settings.builder.clone(),
            remote,
            deadline: Instant::now() + settings.header_read,
            send: settings.send,
            watcher: graceful.watcher(),
            kill: kill.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(tcp, settings.tls.clone()));
    }
    tracing::info!("stopped accepting connections");
    graceful
}

/// One accepted connection.
struct Conn {
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    remote: SocketAddr,
    /// The first request head must have arrived by then (covers the TLS handshake and the
    /// HTTP/2 preface; hyper enforces `header_read` for later HTTP/1.1 heads).
    deadline: Instant,
    /// `timeouts.send`: see [`SendDeadline`].
    send: Duration,
    watcher: Watcher,
    kill: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

struct ActiveGuard(Arc<crate::metrics::Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

/// `x-request-id` for requests that arrive without one: 128 random bits, in hex.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = rand::random::<u128>();
        let mut id = [0u8; 32];
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
        }
        http::HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
}

/// The answer to a request whose handling panicked: a bug, but the connection and the
/// process survive it.
fn panic_response(
    _: Box<dyn std::any::Any + Send + 'static>,
) -> http::Response<Full<bytes::Bytes>> {
    tracing::error!("a request handler panicked; answered 500");
    crate::proxy::plain_response(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error in fleetgate\n",
    )
    .map(Full::new)
}

impl Conn {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let metrics = self.proxy.state().runtime.metrics.clone();
        metrics.connections_active.inc();
        let _active = ActiveGuard(metrics);
        match tls {
            None => self.drive(tcp, false).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(self.deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => self.drive(stream, true).await,
                    Ok(Err(e)) => {
                        tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(remote = %self.remote, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn drive<I>(self, io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            proxy,
            builder,
            remote,
            deadline,
            send,
            watcher,
            mut kill,
            _permit,
        } = self;
        let info = Arc::new(ConnInfo::new(remote, tls));
        // Outermost first: a panic becomes a 500; credentials are never printed by a
        // log of the headers; every request gets an `x-request-id` (the client's, or a
        // new one), sent upstream and echoed on the response.
        let svc = ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
                http::header::PROXY_AUTHORIZATION,
                http::header::COOKIE,
            ]))
            .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .service(ProxyService::new(proxy, info.clone()));
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(SendDeadline::new(io, send)),
            TowerToHyperService::new(svc),
        );
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        let first_head = tokio::time::sleep_until(deadline);
        tokio::pin!(first_head);
        let mut waiting_for_head = true;
        loop {
            tokio::select! {
                res = &mut conn => {
                    if let Err(e) = res {
                        tracing::debug!(remote = %remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = &mut first_head, if waiting_for_head => {
                    if !info.seen_request.load(Ordering::Relaxed) {
                        tracing::debug!(remote = %remote, "no request head within timeouts.header_read; closing");
                        return;
                    }
                    waiting_for_head = false;
                }
                _ = kill.changed() => return,
            }
        }
    }
}

/// A client connection whose writes may not stay blocked for longer than `timeouts.send`:
/// a client that stops reading (its receive window and our socket buffer full) gets its
/// connection closed instead of holding an admission slot and an upstream connection
/// forever. The clock runs only while a write or flush is pending; any progress resets
/// it. The timer is allocated at the first stall, not per connection.
struct SendDeadline<I> {
    io: I,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

impl<I> SendDeadline<I> {
    fn new(io: I, limit: Duration) -> SendDeadline<I> {
        SendDeadline {
            io,
            limit,
            timer: None,
            stalled: false,
        }
    }

    /// The inner write made progress (or failed): the client is reading.
    fn progressed<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = false;
        }
        r
    }

    /// The inner write is pending: start the clock, or fail once it has run out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(Instant::now() + limit);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read for timeouts.send",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            r => self.progressed(r),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            r => self.progressed(r),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            r => self.progressed(r),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Pending => self.pending(cx),
            r => self.progressed(r),
        }
    }
}
