//! Listeners and the life of the process: binding the data and admin listeners, TLS
//! (rustls, ALPN `h2`/`http/1.1`), HTTP/1.1 + HTTP/2 + h2c on one port, connection limits,
//! head-size and head-time limits, the connection's task (its data path is
//! [`ProxyService`]), reload on SIGHUP, and graceful shutdown.
//!
//! A new connection is served with the live snapshot's TLS certificate and HTTP limits;
//! a reload never touches an open connection.
//!
//! Protocol: a plain connection's first bytes are peeked at (not read); unless they may
//! begin the HTTP/2 preface it is served by hyper's HTTP/1 connection directly, as is a
//! TLS connection whose ALPN says `http/1.1`, or that offered no ALPN and whose first
//! decrypted bytes (read, then handed back) say HTTP/1. The rest go through hyper-util's
//! version detection. An HTTP/1 connection times its request heads with its own lazy clock
//! ([`crate::proxy::ConnInfo::idle_since_ms`]), is parked when idle for `timeouts.park_after`
//! (hyper's connection and its buffers let go until the next bytes come), and after a
//! `101` hands its stream to the tunnel itself ([`crate::upstream::upgrade`]).
//!
//! Threads (`[runtime]`): with `mode = "per-core"` (the default) the data listener is
//! `workers` sockets bound to one address with `SO_REUSEPORT`, each served by a thread of
//! its own with a single-threaded runtime; the kernel spreads new connections over them,
//! and a connection lives on one thread with its upstream connections. With
//! `"shared"`, one socket is served by the caller's (multi-threaded) runtime. Either way
//! `limits.max_connections` counts over all of them.
//!
//! Shutdown, once triggered (SIGTERM/SIGINT or [`ShutdownHandle::trigger`]): readiness
//! fails at once; accepting stops after `timeouts.drain_delay`; open connections are told
//! to finish (idle keep-alives close, HTTP/2 gets GOAWAY, in-flight requests and streams
//! run on) and get `timeouts.shutdown` to do so; whatever is left is then closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, RuntimeMode};
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
    workers: Arc<AtomicUsize>,
}

impl RunningServer {
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// How many workers serving the data listener are running (threads with their own
    /// runtime in `per-core` mode, one task in `shared` mode); 0 once shutdown is over.
    pub fn running_workers(&self) -> Arc<AtomicUsize> {
        self.workers.clone()
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
    let settings = config.runtime;
    let workers = match settings.mode {
        RuntimeMode::PerCore => settings.worker_count(),
        RuntimeMode::Shared => 1,
    };
    let runtime = Runtime::new(metrics.clone(), config.timeouts.connect, workers);
    let (listen, admin_listen) = (config.listen, config.admin_listen);
    let watch_files = config.reload.watch;
    let snapshot = crate::reload::build_snapshot(config, None, &metrics).await?;
    let listeners = bind_data_listeners(listen, workers, settings.mode == RuntimeMode::PerCore)
        .map_err(|e| StartError::Io(format!("cannot listen on {listen} (listen): {e}")))?;
    let admin = TcpListener::bind(admin_listen).await.map_err(|e| {
        StartError::Io(format!(
            "cannot listen on {admin_listen} (admin_listen): {e}"
        ))
    })?;
    let addr = listeners[0]
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

    let connections = Arc::new(Semaphore::new(
        state.snapshot().config.limits.max_connections,
    ));
    let running = Arc::new(AtomicUsize::new(0));
    let mut drained = Vec::with_capacity(workers);
    let mut exited = Vec::with_capacity(workers);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (drained_tx, drained_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        drained.push(drained_rx);
        exited.push(exited_rx);
        let worker = Worker {
            listener,
            proxy: proxy.clone(),
            connections: connections.clone(),
            stop_accept: stop_accept_rx.clone(),
            kill: kill_rx.clone(),
            exit: stop_bg_rx.clone(),
            drained: drained_tx,
        };
        running.fetch_add(1, Ordering::Relaxed);
        let running = WorkerRunning(running.clone());
        match settings.mode {
            RuntimeMode::Shared => {
                tokio::spawn(async move {
                    worker.run().await;
                    drop(running);
                    let _ = exited_tx.send(());
                });
            }
            RuntimeMode::PerCore => {
                let thread = std::thread::Builder::new()
                    .name(format!("fleetgate-worker-{index}"))
                    .spawn(move || {
                        crate::upstream::client::enter_worker(index);
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => {
                                rt.block_on(worker.run());
                                // Dropping the runtime ends what is left on it (idle
                                // upstream connections) before the thread says so.
                                drop(rt);
                            }
                            Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
                        }
                        drop(running);
                        let _ = exited_tx.send(());
                    });
                if let Err(e) = thread {
                    return Err(StartError::Io(format!("cannot start a worker thread: {e}")));
                }
            }
        }
    }
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        state.clone(),
        reloader.clone(),
        stop_bg_rx.clone(),
    ));
    tokio::spawn(state.clone().maintain_upstreams(stop_bg_rx.clone()));
    tokio::spawn(crate::memory::give_back_freed(stop_bg_rx.clone()));
    tokio::spawn(reload_on_sighup(reloader.clone(), stop_bg_rx.clone()));
    if watch_files {
        tokio::spawn(reloader.clone().watch(stop_bg_rx.clone()));
    }
    state.runtime.set_phase(Phase::Ready);

    let life = state.clone();
    let done = tokio::spawn(async move {
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
        let finished = tokio::time::timeout(t.shutdown, async {
            for worker in drained {
                let _ = worker.await;
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
        for worker in exited {
            let _ = worker.await;
        }
        tracing::info!("shutdown complete");
    });

    Ok(RunningServer {
        addr,
        admin_addr,
        state,
        reloader,
        shutdown: ShutdownHandle(Arc::new(trigger_tx)),
        done,
        workers: running,
    })
}

/// Bind the data listener: one socket, or `count` sockets on the same address with
/// `SO_REUSEPORT` (the first decides the port when `listen` asks for port 0).
fn bind_data_listeners(
    listen: SocketAddr,
    count: usize,
    reuse_port: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    // With SO_REUSEPORT a second fleetgate (of the same user) on this address would
    // silently take a share of the connections instead of failing to start: first bind
    // one plain socket, which fails while anything listens there, and keep its port.
    let listen = if reuse_port {
        let probe = socket_for(listen)?;
        probe.set_reuseaddr(true)?;
        probe.bind(listen)?;
        probe.local_addr()?
    } else {
        listen
    };
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let addr = match listeners.first() {
            Some(first) => first.local_addr()?,
            None => listen,
        };
        let socket = socket_for(addr)?;
        socket.set_reuseaddr(true)?;
        if reuse_port {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        listeners.push(socket.listen(LISTEN_BACKLOG)?.into_std()?);
    }
    Ok(listeners)
}

/// Keeps a timer due within [`TIMER_ANCHOR`] in this runtime's timer wheel until `exit`.
///
/// tokio's time driver wakes its thread (a `write(2)` to an eventfd, then one more
/// `epoll_wait`) whenever a new timer is due before the earliest one it knew of when it
/// last parked. Every request sets timers due in seconds to minutes (`first_byte`, the
/// next head's `header_read`); with no earlier timer in the wheel, many of them would
/// wake the driver for nothing: measured, 0.4-0.6 such writes per request. With this
/// timer always due sooner, none do, at the cost of a few wake-ups a second.
async fn hold_timer_wakeups(mut exit: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = exit.wait_for(|e| *e) => return,
        }
    }
}

/// See [`hold_timer_wakeups`]. Timers due sooner than this still wake the driver.
const TIMER_ANCHOR: Duration = Duration::from_millis(250);

/// Counts a worker as running until dropped.
struct WorkerRunning(Arc<AtomicUsize>);

impl Drop for WorkerRunning {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// The accept backlog of the data listener (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// What serves one data listener: its accept loop, then the graceful end of its
/// connections. It runs on its own thread's runtime (`per-core`) or as a task (`shared`).
struct Worker {
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    /// `limits.max_connections`, shared by every worker.
    connections: Arc<Semaphore>,
    stop_accept: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
    /// The end of the server's life: the worker's runtime may stop.
    exit: watch::Receiver<bool>,
    /// Sent when this worker's connections have all finished.
    drained: oneshot::Sender<()>,
}

impl Worker {
    async fn run(self) {
        let Worker {
            listener,
            proxy,
            connections,
            stop_accept,
            mut kill,
            mut exit,
            drained,
        } = self;
        tokio::spawn(hold_timer_wakeups(exit.clone()));
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                let drain =
                    accept_loop(listener, proxy, connections, stop_accept, kill.clone()).await;
                tokio::select! {
                    _ = drain.shutdown() => {}
                    _ = kill.wait_for(|k| *k) => {}
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the data listener"),
        }
        let _ = drained.send(());
        let _ = exit.wait_for(|e| *e).await;
    }
}

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

/// The HTTP/1.1 connection builder with the limits of one snapshot, for a connection
/// whose first bytes say it is HTTP/1.
/// `timeouts.header_read` is not hyper's here but the connection's own lazy clock (see
/// [`ConnInfo::idle_since_ms`]): hyper would arm, and drop, a boxed timer for every head.
fn http1_builder(config: &Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.header_read_timeout(None)
        .max_buf_size(config.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b
}

/// The HTTP/1.1 + HTTP/2 connection builder with the limits of one snapshot, for TLS
/// connections and for those whose first bytes may begin the HTTP/2 preface. Its HTTP/1
/// settings are [`http1_builder`]'s.
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
    http1: Arc<http1::Builder>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    header_read: Duration,
    park_after: Option<Duration>,
    send: Duration,
}

impl ConnSettings {
    fn of(snap: &Snapshot) -> ConnSettings {
        ConnSettings {
            serial: snap.serial,
            http1: Arc::new(http1_builder(&snap.config)),
            builder: Arc::new(http_builder(&snap.config)),
            tls: snap.tls.clone().map(TlsAcceptor::from),
            header_read: snap.config.timeouts.header_read,
            park_after: Some(snap.config.timeouts.park_after).filter(|d| !d.is_zero()),
            send: snap.config.timeouts.send,
        }
    }

    /// A connection just accepted, to be served with these settings.
    fn conn(
        &self,
        proxy: Arc<Proxy>,
        remote: SocketAddr,
        drain: watch::Receiver<bool>,
        kill: watch::Receiver<bool>,
        permit: OwnedSemaphorePermit,
    ) -> Conn {
        Conn {
            proxy,
            http1: self.http1.clone(),
            builder: self.builder.clone(),
            remote,
            deadline: Instant::now() + self.header_read,
            header_read: self.header_read,
            park_after: self.park_after,
            send: self.send,
            drain,
            kill,
            _permit: permit,
        }
    }
}

/// Accept until told to stop; returns the handle that drains the open connections.
async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) -> Drain {
    let state = proxy.state().clone();
    let mut settings = ConnSettings::of(&state.snapshot());
    let drain = Drain::new();
    loop {
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
        // At `max_connections`, the connection just accepted waits here, unserved, for a
        // slot. A slot is taken only for a connection in hand: per-core workers share
        // the limit, and a worker holding a slot while it waits in `accept` would strand
        // a connection queued on another worker's socket.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.changed() => break,
            },
        };
        let _ = tcp.set_nodelay(true);
        // A new connection gets the live snapshot's TLS certificate and limits; open
        // connections keep theirs.
        let snap = state.snapshot();
        if snap.serial != settings.serial {
            settings = ConnSettings::of(&snap);
        }
        let conn = settings.conn(proxy.clone(), remote, drain.watch(), kill.clone(), permit);
        tokio::spawn(conn.serve(tcp, settings.tls.clone()));
    }
    tracing::info!("stopped accepting connections");
    drain
}

/// The graceful end of one worker's connections: every connection watches the signal
/// (an idle HTTP/1.1 connection closes, a busy one after its response, HTTP/2 sends
/// GOAWAY), and [`Drain::shutdown`] returns once every one of them has ended.
struct Drain {
    signal: watch::Sender<bool>,
}

impl Drain {
    fn new() -> Drain {
        Drain {
            signal: watch::channel(false).0,
        }
    }

    fn watch(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    async fn shutdown(self) {
        self.signal.send_replace(true);
        self.signal.closed().await;
    }
}

/// What the first bytes of a plain connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstBytes {
    /// Not the start of the HTTP/2 preface: HTTP/1, served by hyper's HTTP/1 connection
    /// alone.
    Http1,
    /// The HTTP/2 preface, or too few bytes to tell: hyper-util reads the version.
    Either,
    /// The client closed before sending anything.
    Closed,
}

/// The client's connection preface of HTTP/2 (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl FirstBytes {
    fn of(bytes: &[u8]) -> FirstBytes {
        if bytes.is_empty() {
            FirstBytes::Closed
        } else if H2_PREFACE.starts_with(bytes) {
            FirstBytes::Either
        } else {
            FirstBytes::Http1
        }
    }
}

/// What the connection's task needs of a client stream besides reading and writing.
trait ClientIo {
    /// Reads (without taking them) the first bytes, to pick the protocol before hyper
    /// reads anything. Served through hyper-util's version detection, an HTTP/1.1
    /// connection's read buffer starts with the few bytes that detection read and then
    /// doubles to 16 KiB; told up front, hyper's own 8 KiB suffices (about 5.6 KB less per
    /// idle connection, measured: docs/performance.md).
    fn first_bytes(&self) -> impl Future<Output = io::Result<FirstBytes>> + Send;

    /// Waits until there is something to read (or the end, or an error), reading nothing:
    /// how a parked connection waits.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl ClientIo for TcpStream {
    async fn first_bytes(&self) -> io::Result<FirstBytes> {
        let mut buf = [0u8; H2_PREFACE.len()];
        let n = self.peek(&mut buf).await?;
        Ok(FirstBytes::of(&buf[..n]))
    }

    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self).await
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    /// ALPN has said it (a client that offered none is served with the first bytes
    /// read, see [`Prefixed`]).
    async fn first_bytes(&self) -> io::Result<FirstBytes> {
        Ok(match self.get_ref().1.alpn_protocol() {
            Some(b"http/1.1") => FirstBytes::Http1,
            _ => FirstBytes::Either,
        })
    }

    /// A reader that stopped at "nothing more" left no decrypted bytes behind, so the
    /// socket says when there is more.
    async fn readable(&self) -> io::Result<()> {
        self.get_ref().0.readable().await
    }
}

/// A client stream with bytes already read from it, handed back first: the first bytes of
/// a TLS connection without ALPN (read to learn its protocol), or what hyper had read
/// and not used when it let the connection go (a parked connection, an upgrade). The
/// prefix comes together with whatever else is ready, so that hyper's first read holds
/// the whole head (a short first read is what makes hyper grow its buffer).
struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    fn new(io: I) -> Prefixed<I> {
        Prefixed {
            prefix: Bytes::new(),
            io,
        }
    }

    /// Hand `bytes` back before anything not yet handed back. (Empty bytes are dropped,
    /// not kept: hyper's are a view of its whole read buffer.)
    fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut both = Vec::with_capacity(bytes.len() + self.prefix.len());
            both.extend_from_slice(&bytes);
            both.extend_from_slice(&self.prefix);
            self.prefix = Bytes::from(both);
        }
    }
}

impl<I: ClientIo + Sync> ClientIo for Prefixed<I> {
    async fn first_bytes(&self) -> io::Result<FirstBytes> {
        if self.prefix.is_empty() {
            return self.io.first_bytes().await;
        }
        let n = self.prefix.len().min(H2_PREFACE.len());
        Ok(FirstBytes::of(&self.prefix[..n]))
    }

    async fn readable(&self) -> io::Result<()> {
        if self.prefix.is_empty() {
            return self.io.readable().await;
        }
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        if this.prefix.is_empty() {
            // Let go of the buffer the prefix was a view of.
            this.prefix = Bytes::new();
        }
        if this.prefix.is_empty() && buf.remaining() > 0 {
            // Whatever else is ready, in the same read. An error (or the end) shows again
            // on the next read.
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One accepted connection.
struct Conn {
    proxy: Arc<Proxy>,
    http1: Arc<http1::Builder>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    remote: SocketAddr,
    /// The first request head must have arrived by then (covers the TLS handshake and the
    /// HTTP/2 preface).
    deadline: Instant,
    /// `timeouts.header_read`: for an HTTP/1 connection, every later head too.
    header_read: Duration,
    /// `timeouts.park_after` (`None`: zero, never park).
    park_after: Option<Duration>,
    /// `timeouts.send`: see [`SendDeadline`].
    send: Duration,
    /// [`Drain`]'s signal.
    drain: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

struct ActiveGuard(Arc<crate::metrics::Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

/// While a request is open, the clock of a connection that may be parked looks again
/// after `timeouts.park_after` but not sooner than this: a long response (a stream) does
/// not wake its connection more often.
const LOOK_WHILE_OPEN: Duration = Duration::from_millis(250);

/// The data path as hyper's service.
type Svc = TowerToHyperService<ProxyService>;

/// A connection's stream as hyper gets it.
type Served<I> = SendDeadline<Prefixed<I>>;

impl Conn {
    /// The connection's task. Built by plain functions rather than one `async fn` so that
    /// the task (one allocation per connection, alive as long as the connection) holds
    /// only the served connection and its timers: a plain connection does not carry room
    /// for a TLS handshake (the TLS path is boxed on its own), and no argument is kept
    /// beside the future it was moved into. 11.9 KB a task became 2.2 KB.
    fn serve(
        self,
        tcp: TcpStream,
        tls: Option<TlsAcceptor>,
    ) -> Either<impl Future<Output = ()> + Send, Pin<Box<dyn Future<Output = ()> + Send>>> {
        let metrics = self.proxy.state().runtime.metrics.clone();
        metrics.connections_active.inc();
        let active = ActiveGuard(metrics);
        match tls {
            None => Either::Left(self.drive(Prefixed::new(tcp), false, active)),
            Some(acceptor) => Either::Right(Box::pin(self.handshake(tcp, acceptor, active))),
        }
    }

    async fn handshake(self, tcp: TcpStream, acceptor: TlsAcceptor, active: ActiveGuard) {
        let stream = match tokio::time::timeout_at(self.deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(remote = %self.remote, "TLS handshake timed out");
                return;
            }
        };
        let mut stream = Prefixed::new(stream);
        if stream.io.get_ref().1.alpn_protocol().is_some() {
            return self.drive(stream, true, active).await;
        }
        // No ALPN: the first decrypted bytes say which protocol. They cannot be peeked at
        // through TLS, so they are read, and handed back first.
        let mut first = [0; H2_PREFACE.len()];
        let read = stream.io.read(&mut first);
        match tokio::time::timeout_at(self.deadline, read).await {
            Ok(Ok(n)) if n > 0 => {
                stream.unread(Bytes::copy_from_slice(&first[..n]));
                self.drive(stream, true, active).await
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(remote = %self.remote, error = %e, "connection failed before its first request")
            }
            Err(_) => {
                tracing::debug!(remote = %self.remote, "no request head within timeouts.header_read; closing")
            }
        }
    }

    fn drive<I>(
        self,
        io: Prefixed<I>,
        tls: bool,
        active: ActiveGuard,
    ) -> impl Future<Output = ()> + Send
    where
        I: ClientIo + AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        let Conn {
            proxy,
            http1,
            builder,
            remote,
            deadline,
            header_read,
            park_after,
            send,
            mut drain,
            mut kill,
            _permit,
        } = self;
        let info = Arc::new(ConnInfo::new(remote, tls));
        // The data path (which marks credentials sensitive, gives every request an
        // `x-request-id` and turns a panic into a 500).
        let svc = TowerToHyperService::new(ProxyService::new(proxy, info.clone()));
        async move {
            let active = active;
            let _permit = _permit;
            // The connection's one timer: the first head's deadline, then (HTTP/1) every
            // later head's and the moment to park, checked lazily.
            let clock = tokio::time::sleep_until(deadline);
            tokio::pin!(clock);
            let first = tokio::select! {
                r = io.first_bytes() => r,
                _ = &mut clock => {
                    tracing::debug!(remote = %remote, "no request head within timeouts.header_read; closing");
                    return;
                }
                // Nothing sent yet: nothing to finish.
                _ = drain.changed() => return,
                _ = kill.changed() => return,
            };
            let io = SendDeadline::new(io, send);
            let draining = *drain.borrow();
            let mut life = Life {
                info,
                remote,
                header_read,
                park_after,
                drain,
                kill,
                draining,
            };
            match first {
                Ok(FirstBytes::Http1) => {
                    life.info.handover.enable();
                    life.http1(&http1, io, svc, clock, &active.0).await
                }
                // Boxed: this state is the larger, and these connections the fewer.
                Ok(FirstBytes::Either) => Box::pin(life.auto(&builder, io, svc, clock)).await,
                Ok(FirstBytes::Closed) => {}
                Err(e) => {
                    tracing::debug!(remote = %remote, error = %e, "connection failed before its first request")
                }
            }
        }
    }
}

/// What a served connection watches besides hyper: its clock's findings, the drain and the
/// kill signals.
struct Life {
    info: Arc<ConnInfo>,
    remote: SocketAddr,
    header_read: Duration,
    /// See [`Conn`].
    park_after: Option<Duration>,
    drain: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
    /// The drain signal has been seen: an idle HTTP/1.1 connection closes, a busy one
    /// after its response; HTTP/2 sends GOAWAY and finishes its streams.
    draining: bool,
}

/// What the connection's clock found when it fired.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// No request head within `header_read` of falling idle.
    Late,
    /// Idle for `timeouts.park_after`: park.
    Park,
    /// Nothing yet; look again then.
    Next(Duration),
}

impl Tick {
    /// `idle_since`: [`ConnInfo::idle_since_ms`]; `park_after`: `timeouts.park_after`
    /// when parking is open to this connection now.
    fn of(
        now: u64,
        idle_since: Option<u64>,
        header_read: Duration,
        park_after: Option<Duration>,
    ) -> Tick {
        let Some(idle) = idle_since else {
            // A request is open: no head is awaited until it ends.
            return Tick::Next(match park_after {
                Some(park) => header_read.min(park.max(LOOK_WHILE_OPEN)),
                None => header_read,
            });
        };
        let due = idle.saturating_add(header_read.as_millis() as u64);
        if due <= now {
            return Tick::Late;
        }
        let next = match park_after {
            Some(park) => {
                let park_at = idle.saturating_add(park.as_millis() as u64);
                if park_at <= now {
                    return Tick::Park;
                }
                due.min(park_at)
            }
            None => due,
        };
        Tick::Next(Duration::from_millis(next - now))
    }
}

/// How a parked connection's wait ended.
enum Parked {
    /// Bytes (or the end) arrived: serve again.
    Resume,
    /// The drain signal: close it.
    Drain,
    /// Late, or killed: drop it.
    Gone,
}

impl Life {
    /// Serve with hyper's HTTP/1 connection. hyper runs without closing the socket when it
    /// is done, so that the connection can be taken back from it: to park it when idle
    /// (see `timeouts.park_after`), and to hand it to the tunnel after a `101` (see
    /// [`crate::upstream::upgrade`]). Every request head is timed here, lazily (see
    /// [`ConnInfo::idle_since_ms`]): hyper would arm, and drop, a boxed timer for each.
    async fn http1<I>(
        &mut self,
        builder: &http1::Builder,
        mut io: Served<I>,
        mut svc: Svc,
        mut clock: Pin<&mut tokio::time::Sleep>,
        metrics: &crate::metrics::Metrics,
    ) where
        I: ClientIo + AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        loop {
            // The clock's next look comes no later than a park would.
            if let Some(park) = self.park_after {
                let look = Instant::now() + park;
                if clock.deadline() > look {
                    clock.as_mut().reset(look);
                }
            }
            let mut conn = builder.serve_connection(TokioIo::new(io), svc);
            if self.draining {
                Pin::new(&mut conn).graceful_shutdown();
            }
            let mut parking = false;
            // The drain signal's wait is made once per hyper connection, not at every
            // wake of the task (each made and dropped wait locks the signal's list of
            // waiters twice). Kill comes only after the drain (`serve`'s shutdown), so
            // it is watched once draining.
            let ended = {
                let drain = self.drain.changed();
                tokio::pin!(drain);
                loop {
                    tokio::select! {
                        biased;
                        r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
                        _ = clock.as_mut() => {
                            let park = self.park_after.filter(|_| !parking && !self.draining);
                            let now = crate::upstream::pool::clock_ms();
                            match Tick::of(now, self.info.idle_since_ms(), self.header_read, park) {
                                Tick::Late => {
                                    tracing::debug!(remote = %self.remote, "no request head within timeouts.header_read; closing");
                                    return;
                                }
                                // Not before its first request: until then hyper counts the
                                // connection busy, and parking would close it after that
                                // request. Look again in a while.
                                Tick::Park if !self.info.seen_request.load(Ordering::Relaxed) => {
                                    clock.as_mut().reset(Instant::now() + LOOK_WHILE_OPEN);
                                }
                                Tick::Park => {
                                    // Idle: hyper closes its connection at once, and gives the
                                    // stream back (with any bytes it read and did not use).
                                    parking = true;
                                    Pin::new(&mut conn).graceful_shutdown();
                                }
                                Tick::Next(after) => clock.as_mut().reset(Instant::now() + after),
                            }
                        }
                        _ = drain.as_mut(), if !self.draining => {
                            self.draining = true;
                            Pin::new(&mut conn).graceful_shutdown();
                        }
                        _ = self.kill.changed(), if self.draining => return,
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(remote = %self.remote, error = %e, "connection ended with an error");
                return;
            }
            let parts = conn.into_parts();
            svc = parts.service;
            io = parts.io.into_inner();
            io.io.unread(parts.read_buf);
            if parking && !self.draining {
                metrics.connections_parked.inc();
                crate::memory::parked();
                let parked = self.parked(&io, clock.as_mut()).await;
                metrics.connections_parked.dec();
                match parked {
                    Parked::Resume => continue,
                    Parked::Drain => return self.close(io).await,
                    Parked::Gone => return,
                }
            }
            if let Some(tunnel) = self.info.handover.take_waiting() {
                // A `101` was written: the stream is the tunnel's now.
                let _ = tunnel.send(Box::new(io));
                return;
            }
            // hyper is done with the connection (the client closed, keep-alive ended, the
            // drain): end it as hyper would have.
            return self.close(io).await;
        }
    }

    /// A parked connection's wait for its next bytes.
    async fn parked<I>(&mut self, io: &Served<I>, mut clock: Pin<&mut tokio::time::Sleep>) -> Parked
    where
        I: ClientIo + Sync,
    {
        loop {
            tokio::select! {
                r = io.io.readable() => {
                    return match r {
                        Ok(()) => Parked::Resume,
                        Err(e) => {
                            tracing::debug!(remote = %self.remote, error = %e, "parked connection failed");
                            Parked::Gone
                        }
                    };
                }
                _ = clock.as_mut() => {
                    let now = crate::upstream::pool::clock_ms();
                    match Tick::of(now, self.info.idle_since_ms(), self.header_read, None) {
                        Tick::Next(after) => clock.as_mut().reset(Instant::now() + after),
                        Tick::Late | Tick::Park => {
                            tracing::debug!(remote = %self.remote, "no request head within timeouts.header_read; closing");
                            return Parked::Gone;
                        }
                    }
                }
                _ = self.drain.changed(), if !self.draining => {
                    self.draining = true;
                    return Parked::Drain;
                }
                _ = self.kill.changed() => return Parked::Gone,
            }
        }
    }

    /// Close the connection the way hyper does at its end: shut the write side (TLS:
    /// `close_notify` first), within `timeouts.send`, unless killed first.
    async fn close<I: AsyncWrite + Unpin>(&mut self, mut io: Served<I>) {
        use tokio::io::AsyncWriteExt;
        tokio::select! {
            _ = io.shutdown() => {}
            _ = self.kill.changed() => {}
        }
    }

    /// Serve through hyper-util's version detection (HTTP/2, and HTTP/1 when the first
    /// bytes could not tell). hyper times later HTTP/1 heads here; the clock only the
    /// first.
    async fn auto<I>(
        &mut self,
        builder: &auto::Builder<TokioExecutor>,
        io: Served<I>,
        svc: Svc,
        mut clock: Pin<&mut tokio::time::Sleep>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        if self.draining {
            conn.as_mut().graceful_shutdown();
        }
        let mut waiting_for_head = true;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(remote = %self.remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = clock.as_mut(), if waiting_for_head => {
                    if !self.info.seen_request.load(Ordering::Relaxed) {
                        tracing::debug!(remote = %self.remote, "no request head within timeouts.header_read; closing");
                        return;
                    }
                    waiting_for_head = false;
                }
                _ = self.drain.changed(), if !self.draining => {
                    self.draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.kill.changed() => return,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_pick_the_protocol() {
        assert_eq!(FirstBytes::of(b""), FirstBytes::Closed);
        assert_eq!(FirstBytes::of(b"GET / HTTP/1.1\r\n"), FirstBytes::Http1);
        assert_eq!(FirstBytes::of(b"POST /x HTTP/1.1"), FirstBytes::Http1);
        // Too few bytes to tell, or the preface itself: version detection decides.
        assert_eq!(FirstBytes::of(b"P"), FirstBytes::Either);
        assert_eq!(FirstBytes::of(b"PRI * HTTP/2.0\r\n"), FirstBytes::Either);
        assert_eq!(FirstBytes::of(H2_PREFACE), FirstBytes::Either);
        assert_eq!(FirstBytes::of(b"PRI * HTTP/1.1\r\n"), FirstBytes::Http1);
    }

    #[test]
    fn the_clock_parks_idle_connections_and_closes_late_ones() {
        let hr = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let park = Some(ms(1000));
        // Idle since 1000 ms.
        assert_eq!(Tick::of(1500, Some(1000), hr, park), Tick::Next(ms(500)));
        assert_eq!(Tick::of(2000, Some(1000), hr, park), Tick::Park);
        assert_eq!(Tick::of(2000, Some(1000), hr, None), Tick::Next(ms(9000)));
        assert_eq!(Tick::of(11_000, Some(1000), hr, park), Tick::Late);
        assert_eq!(Tick::of(11_000, Some(1000), hr, None), Tick::Late);
        // A request open: look again later, not too often.
        assert_eq!(Tick::of(5000, None, hr, park), Tick::Next(ms(1000)));
        assert_eq!(
            Tick::of(5000, None, hr, Some(ms(10))),
            Tick::Next(LOOK_WHILE_OPEN)
        );
        assert_eq!(Tick::of(5000, None, hr, None), Tick::Next(hr));
        // `header_read` shorter than `park_after`: closed before it would be parked.
        let short = ms(300);
        assert_eq!(Tick::of(1200, Some(1000), short, park), Tick::Next(ms(100)));
        assert_eq!(Tick::of(1300, Some(1000), short, park), Tick::Late);
    }

    #[tokio::test]
    async fn unread_bytes_come_back_first() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(64);
        theirs.write_all(b"world").await.unwrap();
        let mut stream = Prefixed::new(ours);
        stream.unread(Bytes::from_static(b"lo "));
        stream.unread(Bytes::new());
        stream.unread(Bytes::from_static(b"hel"));
        assert_eq!(&stream.prefix[..], b"hello ");
        let mut got = [0u8; 11];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    /// A plain connection's task is allocated for every connection and lives as long as
    /// it does: it must not carry room for a TLS handshake, nor copies of what it moved.
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let snapshot = Arc::try_unwrap(crate::proxy::context::testing::snapshot(4))
            .unwrap_or_else(|_| panic!("the test snapshot is not shared"));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let runtime = Runtime::new(metrics, Duration::from_secs(1), 1);
        let proxy = Arc::new(Proxy::new(Arc::new(State::new(snapshot, runtime))));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, remote) = listener.accept().await.unwrap();
        let settings = ConnSettings::of(&proxy.state().snapshot());
        let drain = Drain::new();
        let (_kill_tx, kill) = watch::channel(false);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let conn = settings.conn(proxy.clone(), remote, drain.watch(), kill, permit);
        let task = conn.serve(tcp, None);
        let bytes = std::mem::size_of_val(&task);
        // 1.3 KB today; 11.9 KB before the TLS path and hyper-util's version-detecting
        // connection were boxed.
        assert!(
            bytes <= 3 * 1024,
            "a plain connection's task is {bytes} bytes"
        );
        drop(task);
        drop(client);
    }
}
