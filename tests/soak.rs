//! Load-shaped reliability tests, each bounded and run one at a time (the overload test
//! measures the memory of this process): graceful shutdown with ~200 requests, SSE streams
//! and WebSockets in flight; 100 hot reloads, good and bad, under a request loop with
//! WebSockets open; 10x the admission ceiling from many tenants.
//!
//! `FLEETGATE_SOAK_SECS` sets how long the overload runs (default 10 s; 60 for the long
//! run: `FLEETGATE_SOAK_SECS=60 cargo test --release --test soak overload`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetgate::config::{Config, Role};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use support::bad_upstream::{BadUpstream, Mode};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// One soak test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `n` WebSockets to the ide through the proxy at `addr`, each checked with one echo.
async fn websockets(addr: SocketAddr, n: usize) -> Vec<Ws> {
    let mut out = Vec::new();
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/term/{i}"))
            .await
            .expect("websocket through the proxy");
        echo(&mut ws, &format!("hello {i}")).await;
        out.push(ws);
    }
    out
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string())).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo within 10 s")
        .expect("the socket is open")
        .expect("a frame");
    assert_eq!(back, Message::Text(text.to_string()));
}

/// A GET on `client`: the status once the body has been read in full, or the error.
async fn status_of(client: &HttpClient, url: &str) -> Result<u16, String> {
    let req = http::Request::get(url)
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "no head within 20 s".to_string())?
        .map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        })?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
>;

/// When a request was started, and its status or error.
type Outcome = (Instant, Result<u16, String>);

const DRAIN_DELAY: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_fails_no_request_that_started_before_it() {
    let _one = SERIAL.lock().await;
    let setup = Setup::role(Role::Serve)
        .with_ide()
        .config(|c| {
            c.timeouts.drain_delay = DRAIN_DELAY;
            c.timeouts.shutdown = Duration::from_secs(30);
        })
        .start()
        .await;
    let (addr, admin) = (setup.srv.addr, setup.srv.admin_addr);

    // Long-lived work: 10 WebSockets (ide) and 40 SSE streams (fleet) that end when
    // released.
    let mut sockets = websockets(addr, 10).await;
    let c = client();
    let mut streams = Vec::new();
    for i in 0..40 {
        let req = http::Request::get(setup.url(&format!("/events/sse-{i}")))
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .unwrap();
        let mut body = c.request(req).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, Bytes::from_static(b"data: 1\n\n"));
        streams.push(body);
    }

    // A steady stream of short requests: one every 5 ms, half sleeping 300 ms upstream,
    // half 1500 ms, each on the generator's pooled client.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let generator = {
        let (stop, results) = (stop.clone(), results.clone());
        let base = setup.url("/threads");
        tokio::spawn(async move {
            let client = client();
            let mut tasks = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!(
                    "{base}/{i}/sleep/{}",
                    if i.is_multiple_of(2) { 300 } else { 1500 }
                );
                let (client, results) = (client.clone(), results.clone());
                tasks.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let r = status_of(&client, &url).await;
                    results.lock().unwrap().push((started, r));
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let adm = get(&format!("http://{admin}/admission")).await.json();
    let inflight =
        adm["fleet"]["inflight"].as_u64().unwrap() + adm["ide"]["inflight"].as_u64().unwrap();
    assert!(inflight >= 100, "the load is on: {adm}");

    // SIGTERM's equivalent.
    let trigger = Instant::now();
    setup.srv.shutdown_handle().trigger();
    // Readiness fails at once, on both listeners, while new connections are still answered.
    assert_eq!(get(&format!("http://{addr}/readyz")).await.status, 503);
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 503);
    let during = get(&setup.url("/threads/during-the-drain-delay")).await;
    assert_eq!(
        (during.status.as_u16(), during.server()),
        (200, "fleet".into())
    );
    // That request came on a new connection (every `get` has its own client) and was
    // answered, so the listener was still accepting: it ran inside the drain delay, with
    // the node already reporting that it drains.
    assert_eq!(
        get(&format!("http://{admin}/healthz")).await.json()["status"],
        "draining"
    );

    // After timeouts.drain_delay the listener is closed: a new connection is refused.
    let mut refused = false;
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    assert!(
        refused,
        "new connections are refused once accepting stopped"
    );
    assert!(trigger.elapsed() >= DRAIN_DELAY);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    // Open WebSockets still echo while the server drains; then their clients close them.
    for (i, ws) in sockets.iter_mut().enumerate() {
        echo(ws, &format!("draining {i}")).await;
    }
    for mut ws in sockets.drain(..) {
        let _ = ws.close(None).await;
    }
    // SSE streams end normally when their upstream finishes them.
    let fleet = setup.fleet.state.clone();
    let releasing = Arc::new(AtomicBool::new(true));
    let r = releasing.clone();
    let releaser = tokio::spawn(async move {
        while r.load(Ordering::Relaxed) {
            fleet.release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for (i, s) in streams.into_iter().enumerate() {
        let rest = tokio::time::timeout(Duration::from_secs(10), s.collect())
            .await
            .unwrap_or_else(|_| panic!("SSE stream {i} ends within 10 s"))
            .unwrap_or_else(|e| panic!("SSE stream {i} ended cleanly: {e}"))
            .to_bytes();
        assert_eq!(rest, Bytes::from_static(b"data: 2\n\n"), "stream {i}");
    }
    releasing.store(false, Ordering::Relaxed);
    releaser.await.unwrap();
    generator.await.unwrap();

    // The shutdown finishes on its own, well inside timeouts.shutdown (30 s).
    let Setup { srv, .. } = setup;
    tokio::time::timeout(Duration::from_secs(20), srv.wait())
        .await
        .expect("graceful shutdown completes once the work is done");

    let results = results.lock().unwrap();
    let (before, after): (Vec<_>, Vec<_>) = results.iter().partition(|(t, _)| *t < trigger);
    let failed: Vec<_> = before.iter().filter(|(_, r)| *r != Ok(200)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests started before the drain failed: {:?}",
        failed.len(),
        before.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    // After the trigger: answered while the listener was open, refused once it closed.
    let answered = after.iter().filter(|(_, r)| *r == Ok(200)).count();
    let other_status: Vec<_> = after
        .iter()
        .filter(|(_, r)| matches!(r, Ok(s) if *s != 200))
        .collect();
    assert!(other_status.is_empty(), "{other_status:?}");
    let refused = after
        .iter()
        .filter(|(_, r)| matches!(r, Err(e) if e.contains("refused")))
        .count();
    let other: Vec<_> = after
        .iter()
        .filter(|(_, r)| matches!(r, Err(e) if !e.contains("refused")))
        .collect();
    eprintln!(
        "graceful shutdown: {inflight} in flight at the trigger (10 WebSockets, 40 SSE, the rest short requests); \
         {} requests started before it, 0 failed; after it {answered} answered, {refused} refused, {} other: {:?}",
        before.len(),
        other.len(),
        other.iter().take(3).collect::<Vec<_>>()
    );
}

/// The configuration file of the reload test.
fn config_file(routes: &Path, fleet: &[SocketAddr], ide: SocketAddr, extra: &str) -> String {
    let fleet: Vec<String> = fleet.iter().map(|a| format!("\"http://{a}\"")).collect();
    format!(
        "node_id = \"soak-1\"\nrole = \"serve\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         routes = \"{}\"\naccess_log = false\n{extra}\n[upstreams]\nfleet = [{}]\nide = \"http://{ide}\"\n\
         [timeouts]\ndrain_delay = 0\nshutdown = 2000\n",
        routes.display(),
        fleet.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_good_and_bad_under_load_fail_no_request() {
    let _one = SERIAL.lock().await;
    let a = upstream("a").await;
    let b = upstream("b").await;
    let ide = upstream("ide").await;
    let dir = TempDir::new("soak-reload");
    let routes = manifest_dir();
    let write = |fleet: &[SocketAddr], extra: &str| {
        dir.write(
            "fleetgate.toml",
            &config_file(routes.path(), fleet, ide.addr, extra),
        )
    };
    let path = write(&[a.addr], "");
    let config = Config::load_with(Some(&path), &|_| None).expect("valid config");
    let srv = start(config).await;
    let url = |p: &str| format!("http://{}{p}", srv.addr);
    let reload_url = format!("http://{}/reload", srv.admin_addr);

    let mut sockets = websockets(srv.addr, 5).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = ["/threads", "/api/w1/files/x", "/reports/9"]
        .into_iter()
        .map(|p| request_loop(url(p), stop.clone()))
        .collect();

    let (mut good, mut bad) = (0, 0);
    for i in 0..100 {
        match i % 4 {
            // Good: a second fleet endpoint and a new rule...
            0 => {
                write(&[a.addr, b.addr], "");
                routes.write("20-reports.toml", REPORTS_RULE);
            }
            // ...a broken manifest file (refused)...
            1 => {
                routes.write(
                    "30-broken.toml",
                    "[[rule]]\npath = \"/api/{ws}/oops/{\"\nclass = \"ide-only\"\nwhy = \"broken\"\n",
                );
            }
            // ...good: the endpoint and the rule removed again, the broken file gone...
            2 => {
                std::fs::remove_file(routes.path().join("30-broken.toml")).unwrap();
                std::fs::remove_file(routes.path().join("20-reports.toml")).unwrap();
                write(&[a.addr], "");
            }
            // ...an unknown configuration key (refused).
            _ => {
                write(&[a.addr, b.addr], "bogus_key = 1");
            }
        }
        let resp = send("POST", &reload_url, &[]).await;
        let text = String::from_utf8_lossy(&resp.body).to_string();
        match i % 4 {
            0 | 2 => {
                assert_eq!(resp.status, 200, "reload {i}: {text}");
                good += 1;
            }
            1 => {
                assert_eq!(resp.status, 422, "reload {i}: {text}");
                assert!(text.contains("30-broken.toml:2"), "reload {i}: {text}");
                bad += 1;
            }
            _ => {
                assert_eq!(resp.status, 422, "reload {i}: {text}");
                assert!(
                    text.contains("fleetgate.toml:7") && text.contains("bogus_key"),
                    "reload {i}: {text}"
                );
                bad += 1;
                // Put the good file back for the next round.
                write(&[a.addr], "");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = requests_answered(loops).await;
    assert!(total >= 100, "the loops ran ({total} requests)");
    assert!(!b.seen().is_empty(), "the added endpoint took traffic");
    for (i, ws) in sockets.iter_mut().enumerate() {
        echo(ws, &format!("after 100 reloads {i}")).await;
    }
    let h = get(&format!("http://{}/healthz", srv.admin_addr))
        .await
        .json();
    assert_eq!(h["manifest"]["serial"], 1 + good, "{h}");
    let m = metrics(&srv).await;
    assert!(
        m.contains(&format!("fleetgate_reload_total{{result=\"ok\"}} {good}")),
        "{m}"
    );
    assert!(
        m.contains(&format!("fleetgate_reload_total{{result=\"error\"}} {bad}")),
        "{m}"
    );
    eprintln!("100 reloads ({good} good, {bad} refused with file:line) under {total} requests and 5 WebSockets: 0 failed");
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    srv.shutdown().await;
}

/// This process's resident set, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_at_ten_times_the_ceiling_sheds_cleanly_in_bounded_memory() {
    const CEILING: usize = 8;
    const CLIENTS: usize = 10 * CEILING;
    const TENANTS: usize = 20;
    let _one = SERIAL.lock().await;
    let secs: u64 = std::env::var("FLEETGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let fleet = BadUpstream::start(Mode::Slow(20)).await;
    let routes = manifest_dir();
    let mut cfg = config(Role::Serve, routes.path(), &[fleet.addr], None);
    cfg.admission.max_inflight = CEILING;
    cfg.admission.tenant_header = Some("x-tenant-id".into());
    // 8 slots and 20 one-place queues for 80 clients: most of the excess is shed.
    cfg.admission.queue_per_tenant = 1;
    let srv = start(cfg).await;
    let (addr, admin) = (srv.addr, srv.admin_addr);
    // Warm up, then measure.
    for _ in 0..20 {
        assert_eq!(
            get(&format!("http://{addr}/threads/warm")).await.status,
            200
        );
    }
    let rss_before = vm_rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, answered) = (stop.clone(), answered.clone());
            tokio::spawn(async move {
                let c = client();
                let tenant = format!("t{}", i % TENANTS);
                let (mut sent, mut ok, mut shed, mut other) = (0u64, 0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    let req =
                        http::Request::get(format!("http://{addr}/threads/{tenant}/{i}-{sent}"))
                            .header("x-tenant-id", &tenant)
                            .body(Empty::new().map_err(|e| match e {}).boxed())
                            .unwrap();
                    let resp =
                        match tokio::time::timeout(Duration::from_secs(20), c.request(req)).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(e)) => {
                                other.push(format!("error: {e}"));
                                continue;
                            }
                            Err(_) => {
                                other.push("no answer within 20 s".into());
                                continue;
                            }
                        };
                    let status = resp.status().as_u16();
                    let retry = resp.headers().get("retry-after").is_some();
                    let reason = resp
                        .headers()
                        .get("x-fleetgate-shed")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    match (status, body) {
                        (200, Ok(b)) if b.as_ref() == b"{\"server\":\"bad\"}" => {
                            ok += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        (503, Ok(_)) if retry && reason.is_some() => {
                            shed += 1;
                            // A shed client backs off briefly, as a real one would.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        (s, b) => other.push(format!(
                            "status {s} retry-after {retry} shed {reason:?} body {b:?}"
                        )),
                    }
                }
                (sent, ok, shed, other)
            })
        })
        .collect();

    // Probes on both listeners stay 200 throughout.
    let mut probes = 0;
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        for url in [
            format!("http://{addr}/healthz"),
            format!("http://{addr}/readyz"),
            format!("http://{admin}/healthz"),
        ] {
            let a = get(&url).await;
            assert_eq!(a.status, 200, "{url} under overload: {:?}", a.body);
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = get(&format!("http://{admin}/admission")).await.json();
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut ok, mut shed, mut other) = (0, 0, 0, Vec::new());
    for c in clients {
        let (s, o, sh, ot) = c.await.unwrap();
        sent += s;
        ok += o;
        shed += sh;
        other.extend(ot);
    }
    let rss_after = vm_rss_kib();
    assert!(
        other.is_empty(),
        "{} answers were neither the upstream's nor a shed: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(sent, ok + shed, "nothing lost");
    assert!(
        ok > 0 && shed > 0,
        "both served and shed: {ok} ok, {shed} shed"
    );
    assert_eq!(
        fleet.count("/threads/t") as u64,
        ok,
        "every answered request reached the upstream once; no shed one did"
    );
    assert!(
        peak["fleet"]["inflight"].as_u64().unwrap() <= CEILING as u64,
        "{peak}"
    );
    let growth_kib = rss_after.saturating_sub(rss_before);
    // Generous: the in-process upstream keeps a line per request it served.
    assert!(growth_kib < 128 * 1024, "RSS grew by {growth_kib} KiB");
    let j = get(&format!("http://{admin}/admission")).await.json();
    eprintln!(
        "overload {secs} s, {CLIENTS} clients / {TENANTS} tenants against max_inflight {CEILING}: {sent} requests, {ok} answered, {shed} shed, 0 other; \
         {probes} probes all 200; VmRSS {rss_before} KiB -> {rss_after} KiB (+{growth_kib} KiB); shed by reason {}",
        j["fleet"]["shed"]
    );
    srv.shutdown().await;
}
