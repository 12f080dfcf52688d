//! Shared helpers for the proxy integration tests: a recording hyper upstream with a few
//! special behaviours, a manifest in a temporary directory, the proxy started in-process,
//! and small client helpers. Everything listens on 127.0.0.1 port 0.
#![allow(dead_code)]

pub mod bad_upstream;
pub mod h2raw;
pub mod recording;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::{Config, Role, UpstreamUrl};
use fleetgate::server::{self, RunningServer};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub const MIB: u64 = 1 << 20;

/// The manifest the tests route by.
pub const MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"
aliases = [{ from = "/v1", to = "/api" }]

[[rule]]
path = "/api/{ws}/{*rest}"
class = "ide-only"
tenant = "ws"
why = "touches the working copy"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/runs/{id}"
class = "fleet-ok"
tenant = "ws"
why = "runs are database rows (a carve-out)"

[[rule]]
methods = ["GET"]
path = "/preview/{id}"
class = "ide-only"
degrade = true
why = "previews render the working copy; a stale one from a replica will do"

[[rule]]
path = "/ws/{*rest}"
class = "ide-only"
why = "a live socket to a process on the ide"
"#;

/// A rule the reload tests add to (and remove from) [`MANIFEST`] while serving.
pub const REPORTS_RULE: &str = r#"
[[rule]]
path = "/reports/{id}"
class = "ide-only"
why = "reports are rendered from the working copy"
"#;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "fleetgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manifest directory with [`MANIFEST`].
pub fn manifest_dir() -> TempDir {
    let d = TempDir::new("routes");
    d.write("10-test.toml", MANIFEST);
    d
}

/// What an upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// Shared state of a test upstream.
pub struct UpstreamState {
    pub name: &'static str,
    /// `/hold` and `/sse` wait for this.
    pub release: Notify,
    pub seen: Mutex<Vec<Seen>>,
    /// Body bytes received by `/upload`.
    pub received: AtomicU64,
    /// Body bytes produced by `/download`.
    pub sent: AtomicU64,
    /// Body bytes the test client has read from `/download` (the test updates it).
    pub client_received: Arc<AtomicU64>,
    /// Largest `sent - client_received` seen while producing `/download`.
    pub max_gap: AtomicU64,
    /// Connections open now (accepted, not yet closed).
    pub open: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    pub fn url(&self) -> UpstreamUrl {
        url(self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many connections to this upstream are open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

pub fn url(addr: SocketAddr) -> UpstreamUrl {
    UpstreamUrl::http(addr.ip().to_string(), addr.port())
}

/// Start a recording upstream named `name`. Behaviour by path:
/// `/hold…` answers after `release`; `…/sleep/N` answers after N ms; `/sse…` streams `data: 1`, waits for `release`, then
/// `data: 2`; `/cookies` sets two cookies; `/reset` promises 1000 bytes and dies after 10;
/// `/drop` closes the connection without answering; `/upload` counts the body;
/// `/download/N` streams N MiB; an `Upgrade: websocket` request is echoed. Everything else
/// answers JSON `{server, method, path, query}` after reading the body.
pub async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(UpstreamState {
        name,
        release: Notify::new(),
        seen: Mutex::new(Vec::new()),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        client_received: Arc::new(AtomicU64::new(0)),
        max_gap: AtomicU64::new(0),
        open: AtomicUsize::new(0),
    });
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let st = st.clone();
            st.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let conn = st.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    handle(st, req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
                conn.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Upstream { addr, state }
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn handle(
    st: Arc<UpstreamState>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, BoxError> {
    let path = req.uri().path().to_string();
    st.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        query: req.uri().query().map(String::from),
        headers: req.headers().clone(),
    });
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(websocket_echo(&mut req));
    }
    if path.starts_with("/drop") {
        return Err("dropping the connection".into());
    }
    if path.contains("/upload") {
        let mut body = req.into_body();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                st.received.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        return Ok(Response::new(full(
            st.received.load(Ordering::Relaxed).to_string(),
        )));
    }
    let received = req.into_body().collect().await?.to_bytes().len();
    if let Some(ms) = path.split("/sleep/").nth(1) {
        let ms: u64 = ms.split('/').next().unwrap_or("0").parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.contains("/hold") {
        st.release.notified().await;
    }
    if let Some(n) = path.split("/download/").nth(1) {
        let mib: u64 = n.parse().unwrap_or(1);
        return Ok(Response::new(download(mib * MIB, st.clone()).boxed()));
    }
    if path.contains("/sse") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let st2 = st.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: 1\n\n"))))
                .await;
            st2.release.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: 2\n\n"))))
                .await;
        });
        let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(r);
    }
    if path.contains("/reset") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
                .await;
            let _ = tx.send(Err("upstream gives up".into())).await;
        });
        let mut r = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(
            tokio_stream_from(rx),
        )));
        r.headers_mut()
            .insert("content-length", "1000".parse().unwrap());
        return Ok(r);
    }
    let body = serde_json::json!({
        "server": st.name,
        "path": path,
        "body_bytes": received,
    });
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    if path.contains("/cookies") {
        r.headers_mut().append("set-cookie", "a=1".parse().unwrap());
        r.headers_mut().append("set-cookie", "b=2".parse().unwrap());
    }
    Ok(r)
}

/// An mpsc receiver as a `Stream` (no tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            WsRole::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", key.parse().unwrap());
    r
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A body of `left` bytes sent in chunks of at most 64 KiB, calling `on_chunk(n)` as each
/// chunk of `n` bytes goes out. With `exact` its size hint gives the length up front (a
/// request with Content-Length); without, the length is left open.
struct Chunks<F> {
    left: u64,
    exact: bool,
    on_chunk: F,
}

impl<F: FnMut(u64) + Unpin> Body for Chunks<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64);
        self.left -= n;
        (self.on_chunk)(n);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..n as usize],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact {
            http_body::SizeHint::with_exact(self.left)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// The `/download` body: `len` bytes, recording in `st` how far ahead of the client it is.
fn download(len: u64, st: Arc<UpstreamState>) -> Chunks<impl FnMut(u64) + Send + Sync> {
    Chunks {
        left: len,
        exact: false,
        on_chunk: move |n| {
            let sent = st.sent.fetch_add(n, Ordering::Relaxed) + n;
            let gap = sent.saturating_sub(st.client_received.load(Ordering::Relaxed));
            st.max_gap.fetch_max(gap, Ordering::Relaxed);
        },
    }
}

/// A request body of `len` bytes that records in `max_gap` the largest `sent - received`
/// it sees, where `received` is what `upstream` has counted so far.
pub fn counting_upload(
    len: u64,
    upstream: Arc<UpstreamState>,
    max_gap: Arc<AtomicU64>,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static {
    let mut sent = 0u64;
    Chunks {
        left: len,
        exact: true,
        on_chunk: move |n| {
            sent += n;
            let gap = sent.saturating_sub(upstream.received.load(Ordering::Relaxed));
            max_gap.fetch_max(gap, Ordering::Relaxed);
        },
    }
}

/// A config for a proxy on loopback with the given role and upstreams.
pub fn config(role: Role, routes: &Path, fleet: &[SocketAddr], ide: Option<SocketAddr>) -> Config {
    let mut c = Config {
        node_id: "test-node".into(),
        role,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes: routes.to_path_buf(),
        access_log: false,
        ..Config::default()
    };
    c.upstreams.fleet = fleet.iter().map(|a| url(*a)).collect();
    c.upstreams.ide = ide.map(url);
    c.timeouts.drain_delay = Duration::ZERO;
    c.timeouts.shutdown = Duration::from_secs(5);
    c
}

pub async fn start(config: Config) -> RunningServer {
    server::start(config).await.expect("proxy starts")
}

/// A loopback port with nothing listening on it: connects to it are refused. A socket
/// stays bound to it (never listening) for the rest of the test process, so that no other
/// test's `bind(port 0)` is given the port meanwhile; it has `SO_REUSEADDR`, so a test
/// can still bind a listener there itself (as `TcpListener::bind` does) to bring the
/// port to life.
pub async fn dead_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// What a test runs against: the [`MANIFEST`] directory, a recording fleet upstream, maybe
/// a recording ide upstream, and the proxy started in-process with [`config`]. Built by
/// [`Setup::serve`], [`Setup::serve_without_ide`] or [`Setup::role`]. Everything is
/// cleaned up when dropped; [`Setup::shutdown`] (or `srv.shutdown()`) stops the proxy
/// gracefully first.
pub struct Setup {
    pub routes: TempDir,
    /// The fleet upstream (the local application in roles ide, worker and all).
    pub fleet: Upstream,
    pub ide: Option<Upstream>,
    pub srv: RunningServer,
}

impl Setup {
    /// Role serve with a fleet upstream named `fleet` and an ide upstream named `ide`.
    pub async fn serve() -> Setup {
        Setup::role(Role::Serve).with_ide().start().await
    }

    /// Role serve with a fleet upstream named `fleet` and no ide configured.
    pub async fn serve_without_ide() -> Setup {
        Setup::role(Role::Serve).start().await
    }

    /// A proxy in `role` with a fleet upstream named `fleet` and no ide; change that with
    /// the builder's methods, then [`SetupBuilder::start`] it.
    pub fn role(role: Role) -> SetupBuilder {
        SetupBuilder {
            role,
            fleet_name: "fleet",
            ide: Ide::None,
            tweak: None,
        }
    }

    /// The ide upstream (panics unless the setup has a reachable one).
    pub fn ide(&self) -> &Upstream {
        self.ide.as_ref().expect("this setup has an ide upstream")
    }

    /// `http://` + the proxy's data address + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.srv.addr)
    }

    /// `http://` + the proxy's admin address + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.srv.admin_addr)
    }

    /// A plain TCP connection to the proxy's data port.
    pub async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.srv.addr).await.unwrap()
    }

    /// The digest of the manifest the proxy has loaded.
    pub fn manifest_digest(&self) -> String {
        self.srv.snapshot().manifest.digest().to_string()
    }

    /// Graceful shutdown of the proxy.
    pub async fn shutdown(self) {
        self.srv.shutdown().await
    }
}

enum Ide {
    None,
    Recording,
    Unreachable,
}

/// A change to the proxy's configuration before it starts.
pub type ConfigTweak = Box<dyn FnOnce(&mut Config) + Send>;

/// What [`Setup::role`] will start.
pub struct SetupBuilder {
    role: Role,
    fleet_name: &'static str,
    ide: Ide,
    tweak: Option<ConfigTweak>,
}

impl SetupBuilder {
    /// Name the fleet upstream (it answers with this name in `server`).
    pub fn fleet_named(mut self, name: &'static str) -> Self {
        self.fleet_name = name;
        self
    }

    /// Add a recording ide upstream named `ide`.
    pub fn with_ide(mut self) -> Self {
        self.ide = Ide::Recording;
        self
    }

    /// Configure an ide upstream on a port where nothing listens.
    pub fn with_unreachable_ide(mut self) -> Self {
        self.ide = Ide::Unreachable;
        self
    }

    /// Change the proxy's configuration (timeouts, limits, ...) before it starts.
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    pub async fn start(self) -> Setup {
        let routes = manifest_dir();
        let fleet = upstream(self.fleet_name).await;
        let (ide, ide_addr) = match self.ide {
            Ide::None => (None, None),
            Ide::Recording => {
                let ide = upstream("ide").await;
                let addr = ide.addr;
                (Some(ide), Some(addr))
            }
            Ide::Unreachable => (None, Some(dead_port().await)),
        };
        let mut cfg = config(self.role, routes.path(), &[fleet.addr], ide_addr);
        if let Some(tweak) = self.tweak {
            tweak(&mut cfg);
        }
        let srv = start(cfg).await;
        Setup {
            routes,
            fleet,
            ide,
            srv,
        }
    }
}

/// A plain HTTP/1.1 client.
pub fn client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A response read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `server` field of the upstream's JSON answer.
    pub fn server(&self) -> String {
        self.json()["server"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One request with the given method and headers; the body read in full.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("response within 20 s")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    send("GET", url, &[]).await
}

/// Raw bytes to `addr`; everything read until the server closes (or 10 s pass).
pub async fn raw(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// The proxy's metrics text.
pub async fn metrics(server: &RunningServer) -> String {
    let a = get(&format!("http://{}/metrics", server.admin_addr)).await;
    String::from_utf8(a.body.to_vec()).unwrap()
}

/// Count headers by name.
pub fn header_counts(h: &HeaderMap) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for k in h.keys() {
        m.insert(k.as_str().to_string(), h.get_all(k).iter().count());
    }
    m
}

/// A free loopback port (bound, then released) for a process that must be told its
/// address up front.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` in a loop until `stop`: (answered 200 with a whole body, the failures).
pub fn request_loop(
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let client = client();
        let mut ok = 0;
        let mut failed = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let req = Request::get(&url)
                .body(Empty::new().map_err(|e| match e {}).boxed())
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp)) if resp.status() == 200 => match resp.into_body().collect().await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{url}: body: {e}")),
                },
                Ok(Ok(resp)) => failed.push(format!("{url}: status {}", resp.status())),
                Ok(Err(e)) => failed.push(format!("{url}: error: {e}")),
                Err(_) => failed.push(format!("{url}: timed out")),
            }
        }
        (ok, failed)
    })
}

/// Wait for the [`request_loop`]s (stopped already), assert none failed; the number of
/// requests they got answered.
pub async fn requests_answered(loops: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>) -> usize {
    let mut total = 0;
    for l in loops {
        let (ok, failed) = l.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    total
}

/// One HTTP/1.1 response read off a raw connection (`content-length` framing).
pub async fn read_one_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Send `GET path` on a raw HTTP/1.1 keep-alive connection and check it is answered `200`.
pub async fn get_200(s: &mut tokio::net::TcpStream, path: &str) {
    use tokio::io::AsyncWriteExt;
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_one_response(s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The value of a label-less gauge in the proxy's metrics.
pub async fn gauge(setup: &Setup, name: &str) -> i64 {
    let text = metrics(&setup.srv).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Poll the gauge until it reads `want` (the proxy parks a connection after a second).
pub async fn gauge_reaches(setup: &Setup, name: &str, want: i64) {
    let wait = async {
        while gauge(setup, name).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{name} never read {want}"));
}

/// `fleetgate_connections_parked`
pub const PARKED: &str = "fleetgate_connections_parked";
