//! Listeners and the life of the process: binding the data and admin listeners, TLS
//! (rustls, ALPN `h2`/`http/1.1`), HTTP/1.1 + HTTP/2 + h2c on one port, connection limits,
//! head-size and head-time limits, and graceful shutdown (DESIGN.md §9).
//!
//! Shutdown, once triggered (SIGTERM/SIGINT or [`ShutdownHandle::trigger`]): readiness
//! fails at once; accepting stops after `timeouts.drain_delay`; open connections are told
//! to finish (idle keep-alives close, HTTP/2 gets GOAWAY, in-flight requests and streams
//! run on) and get `timeouts.shutdown` to do so; whatever is left is then closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Gateway, Phase};

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

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => crate::cli::exit::CONFIG,
            StartError::Io(_) => 1,
        }
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

/// A started server: its bound addresses and the means to stop it.
pub struct RunningServer {
    /// The data listener's address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: ShutdownHandle,
    done: JoinHandle<()>,
}

impl RunningServer {
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
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

/// Load the manifest, bind both listeners and start serving. Readiness turns green once
/// everything is up.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let config = Arc::new(config);
    let manifest =
        Manifest::load_dir(&config.routes).map_err(|e| StartError::Config(e.to_string()))?;
    for w in manifest.warnings() {
        tracing::warn!("{w}");
    }
    let tls = load_tls(&config).map_err(|e| StartError::Config(e.to_string()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Io(format!("cannot listen on {} (listen): {e}", config.listen)))?;
    let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
        StartError::Io(format!(
            "cannot listen on {} (admin_listen): {e}",
            config.admin_listen
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;

    let metrics = Arc::new(Metrics::new());
    let gw = Arc::new(Gateway::new(config.clone(), manifest, metrics));
    for pool in std::iter::once(&gw.fleet).chain(gw.ide.iter()) {
        if pool.uses_dns() {
            pool.refresh_dns().await;
        }
    }

    let (trigger_tx, mut trigger_rx) = watch::channel(false);
    let (stop_accept_tx, stop_accept_rx) = watch::channel(false);
    let (kill_tx, kill_rx) = watch::channel(false);
    let (stop_bg_tx, stop_bg_rx) = watch::channel(false);

    let accept = tokio::spawn(accept_loop(
        listener,
        gw.clone(),
        tls,
        stop_accept_rx,
        kill_rx,
    ));
    let admin_task = tokio::spawn(crate::admin::serve(admin, gw.clone(), stop_bg_rx.clone()));
    for pool in std::iter::once(&gw.fleet).chain(gw.ide.iter()) {
        tokio::spawn(pool.clone().maintain(
            config.timeouts.connect,
            config.upstreams.dns_refresh,
            stop_bg_rx.clone(),
        ));
    }
    gw.set_phase(Phase::Ready);

    let life_gw = gw.clone();
    let done = tokio::spawn(async move {
        // Wait for the trigger (or for every handle to be gone).
        while !*trigger_rx.borrow_and_update() {
            if trigger_rx.changed().await.is_err() {
                break;
            }
        }
        let t = life_gw.snapshot.load().config.timeouts;
        life_gw.set_phase(Phase::Draining);
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
            while life_gw.forwarder.open_tunnels() > 0 {
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
        gateway: gw,
        shutdown: ShutdownHandle(Arc::new(trigger_tx)),
        done,
    })
}

/// The HTTP/1.1 + HTTP/2 connection builder with our limits.
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
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accept until told to stop; returns the handle that drains the open connections.
async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) -> GracefulShutdown {
    let config = gw.snapshot.load().config.clone();
    let builder = Arc::new(http_builder(&config));
    let limit = Arc::new(Semaphore::new(config.limits.max_connections));
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
        let conn = Conn {
            gw: gw.clone(),
            builder: builder.clone(),
            remote,
            deadline: Instant::now() + config.timeouts.header_read,
            watcher: graceful.watcher(),
            kill: kill.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
    tracing::info!("stopped accepting connections");
    graceful
}

/// One accepted connection.
struct Conn {
    gw: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    remote: SocketAddr,
    /// The first request head must have arrived by then (covers the TLS handshake and the
    /// HTTP/2 preface; hyper enforces `header_read` for later HTTP/1.1 heads).
    deadline: Instant,
    watcher: Watcher,
    kill: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

struct ActiveGuard(Arc<Gateway>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.metrics.connections_active.dec();
    }
}

impl Conn {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        self.gw.metrics.connections_active.inc();
        let _active = ActiveGuard(self.gw.clone());
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
            gw,
            builder,
            remote,
            deadline,
            watcher,
            mut kill,
            _permit,
        } = self;
        let info = Arc::new(ConnInfo::new(remote, tls));
        let svc_info = info.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let gw = gw.clone();
            let info = svc_info.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, &info).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
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

/// The TLS acceptor for `tls.cert` / `tls.key`, when TLS is configured.
pub fn load_tls(config: &Config) -> Result<Option<TlsAcceptor>, ConfigError> {
    match &config.tls {
        None => Ok(None),
        Some(files) => crate::tls::load_server_config(files, &config.origin())
            .map(|sc| Some(TlsAcceptor::from(sc))),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `fleetgate serve [--config FILE]`: returns the process exit code.
pub fn serve_main(config: Option<&Path>) -> i32 {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return crate::cli::exit::CONFIG;
        }
    };
    crate::logging::init(config.log_format, &config.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let role = config.role;
        let node = config.node_id.clone();
        let server = match start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return e.exit_code();
            }
        };
        tracing::info!(
            listen = %server.addr,
            admin = %server.admin_addr,
            role = role.as_str(),
            node_id = %node,
            manifest = server.gateway.snapshot.load().manifest.digest(),
            "fleetgate serving"
        );
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            termination_signal().await;
            handle.trigger();
        });
        server.wait().await;
        0
    })
}
