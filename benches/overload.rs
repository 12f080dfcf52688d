//! The overload experiment: does admission control keep goodput, protect quiet tenants,
//! share fairly among tenants that want more than their share, and is shedding cheaper
//! than forwarding? See docs/admission.md ("The overload experiment") for what each figure means.
//!
//! Everything runs in this one process on 127.0.0.1, in three tokio runtimes whose
//! threads are named so their CPU time can be told apart:
//!
//! * `ovl-upstream`: a hyper server that answers 1 KiB after a fixed service time
//!   (default 20 ms). With unbounded concurrency (the default) the proxy's bulkhead is
//!   the only limit; in one run it is bounded instead, with `max_inflight` workers and a
//!   FIFO queue: a backend that really has the capacity the bulkhead models.
//! * `ovl-proxy`: fleetgate, started with `fleetgate::server::start` from TOML text, so
//!   the harness only relies on the configuration keys.
//! * `ovl-load`: the load generator (hyper-util client, one per tenant).
//!
//! Phases: capacity (closed loop at exactly `max_inflight` concurrency, admission off),
//! baseline (quiet tenants only, open loop), one tenant alone at capacity with admission
//! on (work conservation), overload at `OVERLOAD_FACTOR` x capacity with
//! admission on, off, and off against the bounded upstream, then two short runs at the
//! same rate where every answer is forwarded, and where every answer is shed, for the CPU
//! cost of each. Until the `[admission]` table exists, the runs that need it are skipped
//! with a message.
//!
//! Run: `cargo bench --bench overload`. Environment:
//! `OVERLOAD_SECS` (length of one overload run, default 15; the other phases scale with
//! it), `OVERLOAD_INFLIGHT` (default 64), `OVERLOAD_SERVICE_MS` (default 20),
//! `OVERLOAD_FACTOR` (default 5).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::Config;
use fleetgate::server::RunningServer;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The client gives up on a request this long after its scheduled arrival.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The tenant header the proxy is configured with.
const TENANT_HEADER: &str = "x-tenant-id";
/// The answer the upstream gives.
static BODY: [u8; 1024] = [b'x'; 1024];

// ---------------------------------------------------------------------------------------
// Parameters

#[derive(Debug, Clone, Copy)]
struct Params {
    /// The length of one overload run.
    secs: f64,
    /// `admission.max_inflight`: the ceiling.
    inflight: usize,
    /// The upstream's service time.
    service: Duration,
    /// Offered load in the overload runs, as a multiple of measured capacity.
    factor: f64,
}

impl Params {
    fn from_env() -> Params {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                    eprintln!("overload: ignoring {name}={v:?} (not a number)");
                    default
                }),
                Err(_) => default,
            }
        }
        Params {
            secs: var("OVERLOAD_SECS", 15.0f64).max(2.0),
            inflight: var("OVERLOAD_INFLIGHT", 64usize).max(1),
            service: Duration::from_millis(var("OVERLOAD_SERVICE_MS", 20u64).max(1)),
            factor: var("OVERLOAD_FACTOR", 5.0f64).max(1.5),
        }
    }

    fn capacity_secs(&self) -> f64 {
        (self.secs / 3.0).max(2.0)
    }

    fn baseline_secs(&self) -> f64 {
        (self.secs * 2.0 / 3.0).max(2.0)
    }

    fn cost_secs(&self) -> f64 {
        (self.secs / 3.0).max(2.0)
    }

    fn queue_per_tenant(&self) -> usize {
        self.inflight
    }

    fn queue_timeout_ms(&self) -> u64 {
        250
    }
}

/// The first part of every phase that is not counted.
fn warmup(phase: f64) -> f64 {
    (phase * 0.2).min(2.0)
}

// ---------------------------------------------------------------------------------------
// CPU time from /proc

/// CPU time so far, in clock ticks: the whole process, per runtime (by thread name), and
/// the whole machine (every process, from `/proc/stat`).
#[derive(Debug, Clone, Default)]
struct CpuSample {
    process: u64,
    /// (thread id, component) -> ticks.
    threads: HashMap<(u32, Component), u64>,
    /// (busy, total) ticks of all CPUs; steal counts as busy (not ours to use).
    machine: (u64, u64),
}

/// The first line of `/proc/stat`: (busy, total) ticks over all CPUs.
fn machine_ticks() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0);
    }
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Component {
    Proxy,
    Upstream,
    Load,
}

impl Component {
    fn of_thread(name: &str) -> Component {
        if name.starts_with("ovl-proxy") {
            Component::Proxy
        } else if name.starts_with("ovl-upstream") {
            Component::Upstream
        } else {
            Component::Load
        }
    }
}

/// utime + stime of a `/proc/.../stat` line, and the command name.
fn stat_ticks(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn cpu_sample() -> CpuSample {
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| stat_ticks(&t))
        .map_or(0, |(_, t)| t);
    let mut threads = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((name, ticks)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|t| stat_ticks(&t))
            {
                threads.insert((tid, Component::of_thread(&name)), ticks);
            }
        }
    }
    CpuSample {
        process,
        threads,
        machine: machine_ticks(),
    }
}

/// Clock ticks per second, from the auxiliary vector (`AT_CLKTCK`), else 100.
fn clock_ticks_per_sec() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = std::mem::size_of::<usize>();
    let read = |b: &[u8]| -> u64 {
        let mut v = [0u8; 8];
        v[..word].copy_from_slice(b);
        u64::from_ne_bytes(v)
    };
    for pair in auxv.chunks_exact(2 * word) {
        let (key, value) = (read(&pair[..word]), read(&pair[word..]));
        if key == AT_CLKTCK && value > 0 {
            return value;
        }
        if key == 0 {
            break;
        }
    }
    100
}

/// CPU seconds spent between two samples: process, proxy threads, upstream threads.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUsed {
    process: f64,
    proxy: f64,
    upstream: f64,
    wall: f64,
    /// The share of the machine's CPU time that was busy, whatever process used it.
    machine_busy: f64,
}

impl CpuUsed {
    fn between(a: &CpuSample, b: &CpuSample, wall: f64) -> CpuUsed {
        let hz = clock_ticks_per_sec() as f64;
        let part = |c: Component| {
            let ticks: u64 = b
                .threads
                .iter()
                .filter(|((_, comp), _)| *comp == c)
                .map(|(k, t)| t.saturating_sub(a.threads.get(k).copied().unwrap_or(0)))
                .sum();
            ticks as f64 / hz
        };
        CpuUsed {
            process: b.process.saturating_sub(a.process) as f64 / hz,
            proxy: part(Component::Proxy),
            upstream: part(Component::Upstream),
            wall,
            machine_busy: {
                let busy = b.machine.0.saturating_sub(a.machine.0) as f64;
                let total = b.machine.1.saturating_sub(a.machine.1) as f64;
                if total > 0.0 {
                    busy / total
                } else {
                    0.0
                }
            },
        }
    }

    /// The share of the machine's CPUs the process used.
    fn utilisation(&self) -> f64 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if self.wall > 0.0 {
            self.process / self.wall / cpus
        } else {
            0.0
        }
    }
}

// ---------------------------------------------------------------------------------------
// The upstream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamMode {
    /// Every request is served after the service time, however many there are.
    Unbounded,
    /// `n` workers; requests beyond wait in FIFO order.
    Bounded(usize),
}

struct UpstreamState {
    service: Duration,
    workers: Option<Semaphore>,
    /// `/hold` requests wait until this turns true.
    released: watch::Sender<bool>,
    holding: AtomicU64,
}

struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
}

/// Start the upstream on the current runtime.
async fn upstream(mode: UpstreamMode, service: Duration) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let state = Arc::new(UpstreamState {
        service,
        workers: match mode {
            UpstreamMode::Unbounded => None,
            UpstreamMode::Bounded(n) => Some(Semaphore::new(n)),
        },
        released: watch::channel(false).0,
        holding: AtomicU64::new(0),
    });
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| serve(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream { addr, state }
}

async fn serve(
    st: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path().ends_with("/hold") {
        st.holding.fetch_add(1, Ordering::Relaxed);
        let mut rx = st.released.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|r| *r)).await;
        st.holding.fetch_sub(1, Ordering::Relaxed);
    } else {
        let _worker = match &st.workers {
            Some(w) => Some(w.acquire().await.expect("never closed")),
            None => None,
        };
        tokio::time::sleep(st.service).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(&BODY))))
}

// ---------------------------------------------------------------------------------------
// The proxy

const MANIFEST: &str = r#"
[manifest]
default_class = "ide-only"

[[rule]]
path = "/api/{ws}/{*rest}"
class = "fleet-ok"
tenant = "ws"
why = "the overload experiment: every request is fleet work of tenant {ws}"
"#;

/// A temporary directory with the manifest in `routes/`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("fleetgate-overload-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("routes")).expect("temp dir");
        std::fs::write(dir.join("routes/10-overload.toml"), MANIFEST).expect("manifest");
        Scratch(dir)
    }

    fn routes(&self) -> PathBuf {
        self.0.join("routes")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Admission settings of one proxy run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// `max_inflight` = the ceiling.
    On,
    /// `max_inflight = 0` (or no `[admission]` table where the build has none).
    Off,
}

fn config_text(
    routes: &Path,
    upstream: SocketAddr,
    admission: Admission,
    p: &Params,
    with_table: bool,
) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        r#"node_id = "overload"
role = "serve"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
routes = {routes:?}
access_log = false
log_level = "off"

[upstreams]
fleet = ["http://{upstream}"]

[timeouts]
drain_delay = 0
shutdown = 2000
"#,
        routes = routes.display().to_string(),
    );
    if with_table {
        match admission {
            Admission::On => {
                let _ = write!(
                    t,
                    r#"
[admission]
max_inflight = {}
ide_max_inflight = {}
tenant_header = "{TENANT_HEADER}"
queue_per_tenant = {}
queue_timeout = {}
retry_after_min = 1
retry_after_max = 30
"#,
                    p.inflight,
                    p.inflight,
                    p.queue_per_tenant(),
                    p.queue_timeout_ms()
                );
            }
            Admission::Off => {
                t.push_str("\n[admission]\nmax_inflight = 0\nide_max_inflight = 0\n");
            }
        }
    }
    t
}

/// Whether this build knows the `[admission]` table: `Err` with the reason when not.
fn admission_supported(scratch: &Scratch, p: &Params) -> Result<(), String> {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let on = config_text(&scratch.routes(), addr, Admission::On, p, true);
    let off = config_text(&scratch.routes(), addr, Admission::Off, p, true);
    let parse = |text: &str| Config::from_toml("overload.toml", text, &|_| None);
    match (parse(&on), parse(&off)) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// A proxy, its upstream, and the runtimes they run on.
struct Stack {
    server: Option<RunningServer>,
    upstream: Arc<UpstreamState>,
    proxy_rt: Option<Runtime>,
    upstream_rt: Option<Runtime>,
}

fn runtime(name: &str, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Stack {
    async fn start(
        scratch: &Scratch,
        p: &Params,
        admission: Admission,
        mode: UpstreamMode,
        with_table: bool,
    ) -> Result<Stack, BoxError> {
        let upstream_rt = runtime("ovl-upstream", 2);
        let service = p.service;
        let up = upstream_rt
            .spawn(async move { upstream(mode, service).await })
            .await?;
        let text = config_text(&scratch.routes(), up.addr, admission, p, with_table);
        let config = Config::from_toml("overload.toml", &text, &|_| None)?;
        let proxy_rt = runtime("ovl-proxy", 2);
        let server = proxy_rt
            .spawn(async move { fleetgate::server::start(config).await })
            .await??;
        Ok(Stack {
            server: Some(server),
            upstream: up.state,
            proxy_rt: Some(proxy_rt),
            upstream_rt: Some(upstream_rt),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    async fn stop(mut self) {
        let _ = self.upstream.released.send(true);
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
        }
        if let Some(rt) = self.proxy_rt.take() {
            rt.shutdown_background();
        }
        if let Some(rt) = self.upstream_rt.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load

fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http)
}

/// Which `x-fleetgate-shed` reason a shed answer gave.
const SHED_KINDS: [&str; 4] = ["global", "tenant", "queue-timeout", "other"];

/// What happened to one tenant's requests in the counted window.
#[derive(Debug, Default, Clone)]
struct TenantStats {
    /// Arrivals scheduled in the window.
    offered: u64,
    /// Arrivals that found no free client slot (never sent).
    drops: u64,
    /// Every request sent in the phase, warm-up included (CPU is measured over all of
    /// them); the other counts cover the counted window only.
    sent_all: u64,
    ok: u64,
    /// Latency of successes from the scheduled arrival, in microseconds.
    latency_us: Vec<u32>,
    /// `503` with `x-fleetgate-shed`, by reason ([`SHED_KINDS`]).
    shed: [u64; 4],
    /// `503` without `x-fleetgate-shed` (e.g. no upstream endpoint).
    unavailable: u64,
    /// Any other status.
    other_status: u64,
    /// No complete answer within [`REQUEST_TIMEOUT`].
    timeouts: u64,
    /// Connection errors and the like.
    transport: u64,
    /// The `Retry-After` of every 503.
    retry_after: Vec<u32>,
    /// 503 answers without a `Retry-After` in whole seconds.
    no_retry_after: u64,
}

impl TenantStats {
    fn shed_total(&self) -> u64 {
        self.shed.iter().sum()
    }

    fn status_503(&self) -> u64 {
        self.shed_total() + self.unavailable
    }

    fn other_errors(&self) -> u64 {
        self.other_status + self.timeouts + self.transport
    }

    /// Successes over everything the tenant wanted to send (drops count as failures).
    fn success_rate(&self) -> f64 {
        if self.offered == 0 {
            return 1.0;
        }
        self.ok as f64 / self.offered as f64
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        percentile(&self.latency_us, q) as f64 / 1000.0
    }
}

/// The `q` quantile of `v` (nearest rank); 0 when empty.
fn percentile(v: &[u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

async fn one_request(client: &HttpClient, uri: &str, tenant: &str, at: Instant) -> Outcome {
    let req = Request::get(uri)
        .header(TENANT_HEADER, tenant)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let exchange = async {
        let resp = client.request(req).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await?;
        Ok::<_, BoxError>(parts)
    };
    match tokio::time::timeout_at(at + REQUEST_TIMEOUT, exchange).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(_)) => Outcome::Transport,
        Ok(Ok(parts)) => {
            let latency = at.elapsed();
            if parts.status.is_success() {
                return Outcome::Ok(latency);
            }
            if parts.status != StatusCode::SERVICE_UNAVAILABLE {
                return Outcome::Status;
            }
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
            let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
            let shed = header("x-fleetgate-shed")
                .map(|kind| SHED_KINDS[..3].iter().position(|k| *k == kind).unwrap_or(3));
            Outcome::Unavailable { shed, retry_after }
        }
    }
}

enum Outcome {
    Ok(Duration),
    Unavailable {
        shed: Option<usize>,
        retry_after: Option<u32>,
    },
    Status,
    Timeout,
    Transport,
}

impl TenantStats {
    fn record(&mut self, o: Outcome) {
        match o {
            Outcome::Ok(d) => {
                self.ok += 1;
                self.latency_us
                    .push(d.as_micros().min(u32::MAX as u128) as u32);
            }
            Outcome::Unavailable { shed, retry_after } => {
                match shed {
                    Some(k) => self.shed[k] += 1,
                    None => self.unavailable += 1,
                }
                match retry_after {
                    Some(s) => self.retry_after.push(s),
                    None => self.no_retry_after += 1,
                }
            }
            Outcome::Status => self.other_status += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Transport => self.transport += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Offers about a tenth of capacity: should never notice the overload.
    Quiet,
    /// Wants more than its fair share.
    Saturating,
}

#[derive(Debug, Clone)]
struct TenantSpec {
    name: String,
    kind: Kind,
    /// Offered arrivals per second.
    rate: f64,
}

/// How many requests one tenant's client may have outstanding.
fn client_slots(rate: f64) -> usize {
    ((rate * 0.5) as usize).clamp(64, 1024)
}

/// Open loop: every tenant's requests arrive at a constant rate for `secs`, each its own
/// task, whatever happened to the earlier ones. Only arrivals after the warm-up are
/// counted; the call returns once every counted request has its outcome.
async fn open_loop(addr: SocketAddr, tenants: &[TenantSpec], secs: f64) -> Vec<TenantStats> {
    let start = Instant::now() + Duration::from_millis(20);
    let warm = start + Duration::from_secs_f64(warmup(secs));
    let end = start + Duration::from_secs_f64(secs);
    let mut gens = Vec::new();
    for t in tenants {
        let t = t.clone();
        gens.push(tokio::spawn(async move {
            let client = client();
            let uri: Arc<str> = format!("http://{addr}/api/{}/work", t.name).into();
            let name: Arc<str> = t.name.clone().into();
            let slots = client_slots(t.rate);
            let sem = Arc::new(Semaphore::new(slots));
            let stats = Arc::new(Mutex::new(TenantStats::default()));
            let (mut offered, mut drops, mut sent_all) = (0u64, 0u64, 0u64);
            let mut n = 0u64;
            loop {
                let at = start + Duration::from_secs_f64(n as f64 / t.rate);
                if at >= end {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at).await;
                } else if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
                n += 1;
                let counted = at >= warm;
                offered += counted as u64;
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    drops += counted as u64;
                    continue;
                };
                sent_all += 1;
                let (client, uri, name, stats) =
                    (client.clone(), uri.clone(), name.clone(), stats.clone());
                tokio::spawn(async move {
                    let o = one_request(&client, &uri, &name, at).await;
                    drop(permit);
                    if counted {
                        stats.lock().unwrap().record(o);
                    }
                });
            }
            // Every slot back: every request has its outcome.
            let _all = sem.acquire_many(slots as u32).await.expect("never closed");
            let mut s = std::mem::take(&mut *stats.lock().unwrap());
            s.offered = offered;
            s.drops = drops;
            s.sent_all = sent_all;
            s
        }));
    }
    let mut out = Vec::new();
    for g in gens {
        out.push(g.await.expect("load generator"));
    }
    out
}

/// Closed loop: `workers` clients each send one request after the other for `secs`.
/// Returns the counted requests' stats (latency from send).
async fn closed_loop(addr: SocketAddr, tenant: &str, workers: usize, secs: f64) -> TenantStats {
    let start = Instant::now();
    let warm = start + Duration::from_secs_f64(warmup(secs));
    let end = start + Duration::from_secs_f64(secs);
    let client = client();
    let uri: Arc<str> = format!("http://{addr}/api/{tenant}/work").into();
    let stats = Arc::new(Mutex::new(TenantStats::default()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, uri, stats) = (client.clone(), uri.clone(), stats.clone());
        let tenant = tenant.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let at = Instant::now();
                if at >= end {
                    break;
                }
                let o = one_request(&client, &uri, &tenant, at).await;
                let mut s = stats.lock().unwrap();
                s.sent_all += 1;
                // Count what started in the window (the last ones end after it: counting
                // by start keeps the rate unbiased).
                if at >= warm {
                    s.offered += 1;
                    s.record(o);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let s = std::mem::take(&mut *stats.lock().unwrap());
    s
}

// ---------------------------------------------------------------------------------------
// Runs

/// One measured run: per tenant stats, the counted window, CPU used.
struct RunResult {
    title: String,
    tenants: Vec<(TenantSpec, TenantStats)>,
    window: f64,
    cpu: CpuUsed,
}

impl RunResult {
    fn ok_total(&self) -> u64 {
        self.tenants.iter().map(|(_, s)| s.ok).sum()
    }

    fn sent_all(&self) -> u64 {
        self.tenants.iter().map(|(_, s)| s.sent_all).sum()
    }

    fn goodput(&self) -> f64 {
        self.ok_total() as f64 / self.window
    }

    fn saturating_jain(&self) -> f64 {
        let x: Vec<f64> = self
            .tenants
            .iter()
            .filter(|(t, _)| t.kind == Kind::Saturating)
            .map(|(_, s)| s.ok as f64 / self.window)
            .collect();
        jain(&x)
    }

    fn no_retry_after(&self) -> u64 {
        self.tenants.iter().map(|(_, s)| s.no_retry_after).sum()
    }

    fn retry_after(&self) -> Vec<u32> {
        self.tenants
            .iter()
            .flat_map(|(_, s)| s.retry_after.iter().copied())
            .collect()
    }
}

/// Jain's fairness index: (Σx)² / (n Σx²); 1 when all equal, 1/n when one gets all.
fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || sq == 0.0 {
        return 0.0;
    }
    sum * sum / (x.len() as f64 * sq)
}

async fn measured<F: std::future::Future<Output = Vec<(TenantSpec, TenantStats)>>>(
    title: String,
    secs: f64,
    run: F,
) -> RunResult {
    let a = cpu_sample();
    let t0 = std::time::Instant::now();
    let tenants = run.await;
    let cpu = CpuUsed::between(&a, &cpu_sample(), t0.elapsed().as_secs_f64());
    RunResult {
        title,
        tenants,
        window: secs - warmup(secs),
        cpu,
    }
}

fn quiet_tenants(capacity: f64) -> Vec<TenantSpec> {
    (1..=4)
        .map(|i| TenantSpec {
            name: format!("quiet-{i}"),
            kind: Kind::Quiet,
            rate: 0.1 * capacity,
        })
        .collect()
}

/// The overload mix: the quiet tenants, a second saturating tenant at 1x, and a noisy
/// one with the rest of `factor` x capacity.
fn overload_tenants(capacity: f64, factor: f64) -> Vec<TenantSpec> {
    let mut t = quiet_tenants(capacity);
    let quiet: f64 = t.iter().map(|q| q.rate).sum();
    t.push(TenantSpec {
        name: "noisy".into(),
        kind: Kind::Saturating,
        rate: (factor * capacity - quiet - capacity).max(capacity),
    });
    t.push(TenantSpec {
        name: "second".into(),
        kind: Kind::Saturating,
        rate: capacity,
    });
    t
}

/// Hold every bulkhead slot with requests to `/hold` from several tenants; true when the
/// upstream sees all of them.
async fn hold_bulkhead(stack: &Stack, p: &Params) -> bool {
    let addr = stack.addr();
    let client = client();
    for i in 0..p.inflight {
        let tenant = format!("hog-{}", i % 8);
        let uri = format!("http://{addr}/api/{tenant}/hold");
        let client = client.clone();
        tokio::spawn(async move {
            let _ = one_request(&client, &uri, &tenant, Instant::now()).await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if stack.upstream.holding.load(Ordering::Relaxed) >= p.inflight as u64 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------
// Report

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn print_tenants(r: &RunResult, capacity: f64, baseline: Option<&RunResult>) {
    println!(
        "\n{} — counted {:.1} s; CPU: this process {:.0}% of the machine, the machine {:.0}% busy{}",
        r.title,
        r.window,
        r.cpu.utilisation() * 100.0,
        r.cpu.machine_busy * 100.0,
        if r.cpu.machine_busy > 0.9 || r.cpu.utilisation() > 0.9 {
            "  (CPU-BOUND: the machine, not only the proxy, limited this run)"
        } else {
            ""
        }
    );
    println!(
        "  {:<8} {:>9} {:>6} {:>9} {:>8} {:>8} {:>22} {:>6} {:>7} {:>8} {:>8} {:>6}",
        "tenant",
        "offered/s",
        "xcap",
        "ok/s",
        "success",
        "503",
        "shed glob/ten/qto/oth",
        "other",
        "c-drops",
        "p50 ms",
        "p99 ms",
        "p99/b"
    );
    for (t, s) in &r.tenants {
        let base_p99 = baseline.and_then(|b| {
            b.tenants
                .iter()
                .find(|(bt, _)| bt.name == t.name)
                .map(|(_, bs)| bs.percentile_ms(0.99))
        });
        let ratio = match base_p99 {
            Some(b) if b > 0.0 && s.ok > 0 => format!("{:.2}", s.percentile_ms(0.99) / b),
            _ => "-".into(),
        };
        println!(
            "  {:<8} {:>9.0} {:>6.2} {:>9.0} {:>7.3}% {:>8} {:>22} {:>6} {:>7} {:>8.1} {:>8.1} {:>6}",
            t.name,
            s.offered as f64 / r.window,
            s.offered as f64 / r.window / capacity,
            s.ok as f64 / r.window,
            s.success_rate() * 100.0,
            s.status_503(),
            format!("{}/{}/{}/{}", s.shed[0], s.shed[1], s.shed[2], s.shed[3]),
            s.other_errors(),
            s.drops,
            s.percentile_ms(0.50),
            s.percentile_ms(0.99),
            ratio
        );
    }
    let others: Vec<String> = r
        .tenants
        .iter()
        .filter(|(_, s)| s.other_errors() + s.unavailable > 0)
        .map(|(t, s)| {
            format!(
                "{}: {} timeouts, {} transport, {} other status, {} plain 503",
                t.name, s.timeouts, s.transport, s.other_status, s.unavailable
            )
        })
        .collect();
    if !others.is_empty() {
        println!("  errors: {}", others.join("; "));
    }
}

fn print_retry_after(v: &[u32]) {
    if v.is_empty() {
        println!("  Retry-After: no 503 answers");
        return;
    }
    println!(
        "  Retry-After (s) over {} answers: min {} p50 {} p90 {} max {}",
        v.len(),
        percentile(v, 0.0),
        percentile(v, 0.5),
        percentile(v, 0.9),
        percentile(v, 1.0)
    );
    let buckets: [(u32, u32, &str); 7] = [
        (0, 1, "   ≤1"),
        (2, 2, "    2"),
        (3, 4, "  3-4"),
        (5, 8, "  5-8"),
        (9, 16, " 9-16"),
        (17, 30, "17-30"),
        (31, u32::MAX, "  >30"),
    ];
    let counts: Vec<usize> = buckets
        .iter()
        .map(|(lo, hi, _)| v.iter().filter(|s| (*lo..=*hi).contains(*s)).count())
        .collect();
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    for ((_, _, label), n) in buckets.iter().zip(&counts) {
        if *n > 0 {
            println!(
                "    {label} s {:>8} {}",
                n,
                "#".repeat((n * 40).div_ceil(most))
            );
        }
    }
}

/// The four targets of one overload run, as (label, figure, pass).
fn targets(r: &RunResult, capacity: f64, baseline: &RunResult) -> Vec<(String, bool)> {
    let goodput = r.goodput() / capacity;
    let quiet: Vec<&(TenantSpec, TenantStats)> = r
        .tenants
        .iter()
        .filter(|(t, _)| t.kind == Kind::Quiet)
        .collect();
    let worst_success = quiet
        .iter()
        .map(|(_, s)| s.success_rate())
        .fold(1.0f64, f64::min);
    let worst_ratio = quiet
        .iter()
        .map(|(t, s)| {
            let base = baseline
                .tenants
                .iter()
                .find(|(bt, _)| bt.name == t.name)
                .map_or(0.0, |(_, bs)| bs.percentile_ms(0.99));
            if s.ok == 0 {
                f64::INFINITY
            } else if base > 0.0 {
                s.percentile_ms(0.99) / base
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0f64, f64::max);
    let j = r.saturating_jain();
    vec![
        (format!("{:.3}", goodput), goodput >= 0.95),
        (
            format!("{:.3}%", worst_success * 100.0),
            worst_success >= 0.999,
        ),
        (format!("{:.2}x", worst_ratio), worst_ratio <= 2.0),
        (format!("{:.3}", j), j >= 0.95),
    ]
}

/// CPU per request of a run, in µs: (process, proxy threads, upstream threads). Every
/// request sent during the phase counts, warm-up included, since CPU is measured over
/// the whole phase.
fn cpu_per_request(r: &RunResult) -> (f64, f64, f64) {
    let n = r.sent_all().max(1) as f64;
    (
        r.cpu.process / n * 1e6,
        r.cpu.proxy / n * 1e6,
        r.cpu.upstream / n * 1e6,
    )
}

// ---------------------------------------------------------------------------------------
// Main

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("overload: run with `cargo bench --bench overload`");
        return;
    }
    let p = Params::from_env();
    let rt = runtime("ovl-load", 2);
    rt.block_on(experiment(p));
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn experiment(p: Params) {
    let scratch = Scratch::new();
    let admission = admission_supported(&scratch, &p);
    // The admission-off runs write `max_inflight = 0` when the table exists.
    let table = admission.is_ok();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nominal = p.inflight as f64 / p.service.as_secs_f64();

    println!("fleetgate overload experiment");
    println!(
        "  the load generator, the proxy and the upstream all run in this one process on {cpus} CPU(s):"
    );
    println!("  separate tokio runtimes (threads ovl-load 2, ovl-proxy 2, ovl-upstream 2) so their CPU time can be told apart");
    println!(
        "  upstream: {} ms service time, 1 KiB answers; ceiling max_inflight = {}; request timeout {} s",
        p.service.as_millis(),
        p.inflight,
        REQUEST_TIMEOUT.as_secs()
    );
    if let Err(e) = &admission {
        println!();
        println!("  ADMISSION CONTROL IS NOT IN THIS BUILD: Config::from_toml rejects the [admission] table:");
        println!("    {e}");
        println!(
            "  Skipping the admission-on run and the shed-cost run; the admission-off runs follow."
        );
    }

    // 1. Capacity.
    let secs = p.capacity_secs();
    let stack = Stack::start(&scratch, &p, Admission::Off, UpstreamMode::Unbounded, table)
        .await
        .expect("proxy starts");
    // A moment of warm-up for connection pools.
    let _ = closed_loop(stack.addr(), "warmup", p.inflight, 1.0).await;
    let cap_run = measured(
        format!("capacity: closed loop, {} concurrent", p.inflight),
        secs,
        async {
            let s = closed_loop(stack.addr(), "capacity", p.inflight, secs).await;
            let spec = TenantSpec {
                name: "capacity".into(),
                kind: Kind::Saturating,
                rate: 0.0,
            };
            vec![(spec, s)]
        },
    )
    .await;
    let capacity = cap_run.goodput();
    let cap_stats = &cap_run.tenants[0].1;
    println!(
        "\ncapacity: {:.0} req/s measured (closed loop, {} concurrent, admission off, {:.1} s counted; nominal {} / {} ms = {:.0}); latency p50 {:.1} ms p99 {:.1} ms; errors {}; the machine {:.0}% busy",
        capacity,
        p.inflight,
        cap_run.window,
        p.inflight,
        p.service.as_millis(),
        nominal,
        cap_stats.percentile_ms(0.5),
        cap_stats.percentile_ms(0.99),
        cap_stats.other_errors() + cap_stats.status_503(),
        cap_run.cpu.machine_busy * 100.0
    );
    if capacity <= 0.0 {
        println!("no capacity measured; giving up");
        stack.stop().await;
        return;
    }

    // 2. Baseline: quiet tenants only.
    let secs = p.baseline_secs();
    let quiet = quiet_tenants(capacity);
    let baseline = measured(
        "baseline: quiet tenants only, open loop".into(),
        secs,
        async {
            let s = open_loop(stack.addr(), &quiet, secs).await;
            quiet.iter().cloned().zip(s).collect()
        },
    )
    .await;
    stack.stop().await;
    print_tenants(&baseline, capacity, None);

    // 2b. Work conservation: one tenant alone, at the ceiling's concurrency, should get
    // the whole bulkhead with admission on, without a single 503.
    if admission.is_ok() {
        let secs = p.capacity_secs();
        let stack = Stack::start(&scratch, &p, Admission::On, UpstreamMode::Unbounded, table)
            .await
            .expect("proxy starts");
        let _ = closed_loop(stack.addr(), "warmup", p.inflight, 1.0).await;
        let s = closed_loop(stack.addr(), "alone", p.inflight, secs).await;
        stack.stop().await;
        let window = secs - warmup(secs);
        let alone = s.ok as f64 / window;
        println!(
            "\none tenant alone, closed loop at {} concurrent, admission on: {:.0} req/s = {:.3} of capacity; 503s {}, other errors {}  {}",
            p.inflight,
            alone,
            alone / capacity,
            s.status_503(),
            s.other_errors(),
            pass(alone / capacity >= 0.95 && s.status_503() == 0)
        );
    }

    // 3 and 4. Overload, with admission on and off.
    let mix = overload_tenants(capacity, p.factor);
    let offered: f64 = mix.iter().map(|t| t.rate).sum();
    let runs: Vec<(&str, Admission, UpstreamMode)> = vec![
        ("admission on", Admission::On, UpstreamMode::Unbounded),
        ("admission off", Admission::Off, UpstreamMode::Unbounded),
        (
            "admission off, bounded upstream",
            Admission::Off,
            UpstreamMode::Bounded(p.inflight),
        ),
    ];
    let mut results: Vec<(&str, Option<RunResult>)> = Vec::new();
    for (label, adm, mode) in runs {
        if adm == Admission::On && admission.is_err() {
            results.push((label, None));
            continue;
        }
        let stack = Stack::start(&scratch, &p, adm, mode, table)
            .await
            .expect("proxy starts");
        let secs = p.secs;
        let title = format!(
            "overload {:.1}x capacity ({:.0} req/s offered): {label}{}",
            offered / capacity,
            offered,
            match (adm, mode) {
                (Admission::On, _) => format!(
                    " (max_inflight {}, queue_per_tenant {}, queue_timeout {} ms)",
                    p.inflight,
                    p.queue_per_tenant(),
                    p.queue_timeout_ms()
                ),
                (Admission::Off, UpstreamMode::Bounded(n)) =>
                    format!(" ({n} upstream workers, FIFO queue)"),
                (Admission::Off, UpstreamMode::Unbounded) => " (max_inflight = 0)".into(),
            }
        );
        let r = measured(title, secs, async {
            let s = open_loop(stack.addr(), &mix, secs).await;
            mix.iter().cloned().zip(s).collect()
        })
        .await;
        stack.stop().await;
        print_tenants(&r, capacity, Some(&baseline));
        let (proc_us, proxy_us, upstream_us) = cpu_per_request(&r);
        println!(
            "  goodput {:.0} req/s = {:.3} of capacity; Jain's index (noisy, second) {:.3}",
            r.goodput(),
            r.goodput() / capacity,
            r.saturating_jain(),
        );
        println!(
            "  CPU per request sent: process {proc_us:.1} µs (proxy {proxy_us:.1}, upstream {upstream_us:.1}, load generator {:.1})",
            proc_us - proxy_us - upstream_us
        );
        print_retry_after(&r.retry_after());
        if r.no_retry_after() > 0 {
            println!(
                "  503 answers without a Retry-After in seconds: {}",
                r.no_retry_after()
            );
        }
        results.push((label, Some(r)));
    }

    // 5. CPU per answer: everything forwarded vs everything shed, at the same rate.
    let cost_rate = 0.8 * capacity;
    let secs = p.cost_secs();
    let cost_tenant = vec![TenantSpec {
        name: "cost".into(),
        kind: Kind::Quiet,
        rate: cost_rate,
    }];
    let forward_adm = if admission.is_ok() {
        Admission::On
    } else {
        Admission::Off
    };
    let stack = Stack::start(&scratch, &p, forward_adm, UpstreamMode::Unbounded, table)
        .await
        .expect("proxy starts");
    let forwarded = measured("cost: every answer forwarded".into(), secs, async {
        let s = open_loop(stack.addr(), &cost_tenant, secs).await;
        cost_tenant.iter().cloned().zip(s).collect()
    })
    .await;
    stack.stop().await;
    let shed = if admission.is_ok() {
        let stack = Stack::start(&scratch, &p, Admission::On, UpstreamMode::Unbounded, table)
            .await
            .expect("proxy starts");
        let held = hold_bulkhead(&stack, &p).await;
        let r = measured("cost: every answer shed".into(), secs, async {
            let s = open_loop(stack.addr(), &cost_tenant, secs).await;
            cost_tenant.iter().cloned().zip(s).collect()
        })
        .await;
        stack.stop().await;
        Some((r, held))
    } else {
        None
    };

    println!(
        "\nCPU per request at {cost_rate:.0} req/s (0.8x capacity), open loop, {:.1} s each (warm-up included); utime+stime from /proc",
        secs
    );
    println!("  process = load generator + proxy + upstream (all in this process); proxy = the ovl-proxy threads only");
    println!(
        "  {:<34} {:>9} {:>11} {:>10} {:>12} {:>10} {:>13}",
        "run", "requests", "ok", "503", "process µs", "proxy µs", "machine busy"
    );
    let cost_row = |label: &str, r: &RunResult| {
        let (proc_us, proxy_us, _) = cpu_per_request(r);
        let s = &r.tenants[0].1;
        println!(
            "  {:<34} {:>9} {:>11} {:>10} {:>12.1} {:>10.1} {:>12.0}%",
            label,
            r.sent_all(),
            s.ok,
            s.status_503(),
            proc_us,
            proxy_us,
            r.cpu.machine_busy * 100.0
        );
    };
    cost_row(
        match forward_adm {
            Admission::On => "forwarded (admission on, no shed)",
            Admission::Off => "forwarded (admission off)",
        },
        &forwarded,
    );
    match &shed {
        Some((r, held)) => {
            cost_row("shed (bulkhead held full)", r);
            let s = &r.tenants[0].1;
            println!(
                "  shed reasons global/tenant/queue-timeout/other: {}/{}/{}/{}{}",
                s.shed[0],
                s.shed[1],
                s.shed[2],
                s.shed[3],
                if *held {
                    ""
                } else {
                    "  (WARNING: the bulkhead could not be filled with held requests)"
                }
            );
        }
        None => println!("  {:<34} skipped: needs admission control", "shed"),
    }

    // 6. Targets.
    println!("\ntargets (capacity {capacity:.0} req/s measured)");
    let mut header = format!("  {:<40}", "target");
    for (label, _) in &results {
        let _ = write!(header, " {:>34}", label);
    }
    println!("{header}");
    let names = [
        "goodput at overload >= 0.95 of capacity",
        "quiet tenants success >= 99.9% (worst)",
        "quiet p99 <= 2x baseline p99 (worst)",
        "Jain's index, saturating >= 0.95",
    ];
    let cells: Vec<Option<Vec<(String, bool)>>> = results
        .iter()
        .map(|(_, r)| r.as_ref().map(|r| targets(r, capacity, &baseline)))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut line = format!("  {name:<40}");
        for c in &cells {
            let cell = match c {
                Some(v) => format!("{} {}", v[i].0, pass(v[i].1)),
                None => "skipped (no admission)".into(),
            };
            let _ = write!(line, " {cell:>34}");
        }
        println!("{line}");
    }
    match &shed {
        Some((s, _)) => {
            let (shed_proc, shed_proxy, _) = cpu_per_request(s);
            let (fwd_proc, fwd_proxy, _) = cpu_per_request(&forwarded);
            println!(
                "  {:<40} proxy {:.1} µs shed vs {:.1} µs forwarded (process {:.1} vs {:.1}) {}",
                "a shed answer costs less CPU",
                shed_proxy,
                fwd_proxy,
                shed_proc,
                fwd_proc,
                pass(shed_proxy < fwd_proxy)
            );
        }
        None => println!(
            "  {:<40} skipped (no admission)",
            "a shed answer costs less CPU"
        ),
    }
    println!();
    println!("notes:");
    for line in [
        "the load generator runs in this same process as the proxy and the upstream: process CPU includes all three; the proxy figure is its own threads",
        "'the machine busy' counts every process (from /proc/stat): when other work shares the machine, latency and capacity suffer; rerun on a quiet machine",
        "success = ok / offered (client-side drops, i.e. arrivals that found no free client slot, count as failures); latency is from the scheduled arrival",
        "admission off, unbounded upstream: nothing bounds concurrency, so the upstream serves all it is offered while the CPU keeps up; goodput above 1 means there was no bottleneck, and Jain's index then compares tenants that both got all they asked for",
        "admission off, bounded upstream: the upstream has max_inflight workers and a FIFO queue, bounded only by the load generator's client slots (hence the drops); when both saturating tenants fill their equal slot caps, the FIFO serves them alike, so Jain's index there reflects the harness more than the proxy",
    ] {
        println!("  - {line}");
    }
}
