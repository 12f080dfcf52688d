//! Upstream faults through real sockets: a raw-TCP upstream that refuses, closes, resets
//! mid-head or mid-body, hangs before its head, sends a malformed head or more body than
//! it announced, or closes its keep-alive connections right after answering; an ide that
//! flaps; a fleet endpoint that dies next to a healthy one.
//!
//! For each: the client gets the documented status and headers, the fault is counted in
//! `fleetgate_upstream_errors_total{upstream,kind}` under the right kind, a POST is never
//! sent twice (the bad upstream records every request head it reads and every connection
//! it accepts), and nothing is left stuck (a normal request is answered afterwards and
//! `/admission` shows nothing in flight).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetgate::config::Role;
use fleetgate::server::RunningServer;
use http_body_util::{BodyExt, Full};
use support::bad_upstream::{BadUpstream, Mode};
use support::*;

/// POSTs to `/orders/{id}` are writes the fleet may take (so they can reach a bad fleet).
const ORDERS: &str = r#"
[[rule]]
methods = ["POST"]
path = "/orders/{id}"
class = "fleet-ok"
writes = "fleet"
why = "orders are database rows"
"#;

/// `timeouts.first_byte` for these tests.
const FIRST_BYTE: Duration = Duration::from_millis(500);

/// `timeouts.idle` for these tests.
const IDLE: Duration = Duration::from_millis(800);

struct Proxy {
    _routes: TempDir,
    srv: RunningServer,
    /// A well-behaved ide, for the "is anything stuck" check (absent when the ide is the
    /// faulty one).
    ide: Option<Upstream>,
}

impl Proxy {
    async fn start(fleet: &[SocketAddr], ide: Option<SocketAddr>) -> Proxy {
        let routes = manifest_dir();
        routes.write("20-orders.toml", ORDERS);
        let (ide_up, ide_addr) = match ide {
            Some(a) => (None, Some(a)),
            None => {
                let up = upstream("ide").await;
                let a = up.addr;
                (Some(up), Some(a))
            }
        };
        let mut cfg = config(Role::Serve, routes.path(), fleet, ide_addr);
        cfg.timeouts.first_byte = FIRST_BYTE;
        cfg.timeouts.idle = IDLE;
        let srv = start(cfg).await;
        Proxy {
            _routes: routes,
            srv,
            ide: ide_up,
        }
    }

    fn url(&self, pq: &str) -> String {
        format!("http://{}{pq}", self.srv.addr)
    }

    async fn errors(&self, upstream: &str, kind: &str) -> u64 {
        upstream_errors(&metrics(&self.srv).await, upstream, kind)
    }

    /// Nothing is stuck: a request to the healthy ide is answered, and no admission slot
    /// stays taken.
    async fn assert_nothing_stuck(&self) {
        if self.ide.is_some() {
            let a = get(&self.url("/api/w1/files/after")).await;
            assert_eq!((a.status.as_u16(), a.server()), (200, "ide".to_string()));
        }
        let admin = format!("http://{}/admission", self.srv.admin_addr);
        let mut j = serde_json::Value::Null;
        for _ in 0..100 {
            j = get(&admin).await.json();
            if j["fleet"]["inflight"] == 0 && j["ide"]["inflight"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("admission slots still held after the faults: {j}");
    }
}

/// The value of `fleetgate_upstream_errors_total{upstream,kind}` (0 when absent).
fn upstream_errors(metrics: &str, upstream: &str, kind: &str) -> u64 {
    let (k, u) = (
        format!("kind=\"{kind}\""),
        format!("upstream=\"{upstream}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("fleetgate_upstream_errors_total{"))
        .filter(|l| l.contains(&k) && l.contains(&u))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A response, or what went wrong on the way.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    /// The body, or the error that cut it.
    body: Result<Bytes, String>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        match &self.body {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(e) => format!("<body error: {e}>"),
        }
    }
}

/// One request on `client` (with a small body for anything but GET); the transport
/// error as text when there is no response head.
async fn request(client: &HttpClient, method: &str, url: &str) -> Result<Got, String> {
    let body: TestBody = if method == "GET" {
        Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
    } else {
        Full::new(Bytes::from_static(b"{\"qty\":1}"))
            .map_err(|e| match e {})
            .boxed()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "no response head within 20 s".to_string())?
        .map_err(|e| format!("transport: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .map_err(|_| "body not done within 20 s".to_string())
        .and_then(|r| r.map(|c| c.to_bytes()).map_err(|e| e.to_string()));
    Ok(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
>;

/// A GET and a POST to a fleet whose only endpoint is `bad` (or `addr`).
async fn get_and_post(p: &Proxy) -> (Got, Got) {
    let c = client();
    let g = request(&c, "GET", &p.url("/threads/fault-get"))
        .await
        .expect("a response head");
    let o = request(&c, "POST", &p.url("/orders/fault-post"))
        .await
        .expect("a response head");
    (g, o)
}

/// The answer fleetgate makes up for a failed exchange: `status`, plain text, the target
/// stamp, the body naming the failure.
fn assert_made_up(g: &Got, status: u16, text: &str) {
    assert_eq!(g.status, status, "{g:?} {}", g.text());
    assert_eq!(g.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(g.header("x-fleetgate-target"), Some("fleet"));
    assert_eq!(g.text(), text);
}

#[tokio::test]
async fn a_refused_connect_is_502_with_retry_after_then_the_endpoint_is_ejected() {
    let dead = dead_port().await;
    let p = Proxy::start(&[dead], None).await;
    let (g, o) = get_and_post(&p).await;
    assert_made_up(&g, 502, "the upstream cannot be reached");
    assert!(g.header("retry-after").is_some(), "{g:?}");
    assert_eq!(g.header("x-fleetgate-required-role"), None, "a fleet error");
    // The refused connect ejected the only endpoint: the POST fails fast, unsent.
    assert_made_up(&o, 502, "the upstream cannot be reached");
    assert!(o.header("retry-after").is_some(), "{o:?}");
    assert_eq!(p.errors("fleet", "connect").await, 1);
    assert_eq!(p.errors("fleet", "no_endpoint").await, 1);
    let m = metrics(&p.srv).await;
    assert!(
        m.contains("fleetgate_upstream_ejections_total{upstream=\"fleet\"} 1"),
        "{m}"
    );
    p.assert_nothing_stuck().await;
    p.srv.shutdown().await;
}

/// Start a bad fleet in `mode`, send a GET and a POST through it, and check what every
/// fault must satisfy: counted as `kind` twice, the POST read at most once, nothing stuck.
async fn fault(mode: Mode, kind: &str) -> (Got, Got, BadUpstream) {
    let bad = BadUpstream::start(mode).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let (g, o) = get_and_post(&p).await;
    assert_eq!(
        p.errors("fleet", kind).await,
        2,
        "{mode:?}: counted as {kind}"
    );
    assert!(
        bad.count("/orders/fault-post") <= 1,
        "{mode:?}: the POST was sent twice: {:?}",
        bad.requests()
    );
    assert!(
        bad.connections() <= 2,
        "{mode:?}: one connection per request, no retry: {} connections",
        bad.connections()
    );
    p.assert_nothing_stuck().await;
    p.srv.shutdown().await;
    (g, o, bad)
}

/// An upstream that accepts and closes at once: the close races the request. When the
/// request was written first, the exchange failed (`protocol`); when the close was seen
/// first, the connection never became usable (`connect`), the endpoint is ejected and the
/// POST then fails fast (`no_endpoint`). Either way: two 502s, nothing retried.
#[tokio::test]
async fn accept_then_close_is_502_and_the_post_is_not_retried() {
    let bad = BadUpstream::start(Mode::AcceptClose).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let (g, o) = get_and_post(&p).await;
    for got in [&g, &o] {
        assert_eq!(got.status, 502, "{got:?}");
        let text = got.text();
        match got.header("retry-after") {
            None => assert_eq!(text, "the upstream connection failed"),
            Some(_) => assert_eq!(text, "the upstream cannot be reached"),
        }
    }
    let mut counted = 0;
    for kind in ["protocol", "connect", "no_endpoint"] {
        counted += p.errors("fleet", kind).await;
    }
    assert_eq!(counted, 2, "each failure counted once");
    assert!(
        bad.connections() <= 2,
        "one connection per request, no retry: {} connections",
        bad.connections()
    );
    p.assert_nothing_stuck().await;
    p.srv.shutdown().await;
}

#[tokio::test]
async fn a_reset_mid_head_is_502_protocol_and_the_post_is_not_retried() {
    let (g, o, bad) = fault(Mode::ResetMidHead, "protocol").await;
    assert_made_up(&g, 502, "the upstream connection failed");
    assert_made_up(&o, 502, "the upstream connection failed");
    assert_eq!(bad.count("/orders/fault-post"), 1, "{:?}", bad.requests());
    assert_eq!(bad.count("/threads/fault-get"), 1, "{:?}", bad.requests());
}

#[tokio::test]
async fn a_malformed_head_is_502_protocol() {
    let (g, o, bad) = fault(Mode::MalformedHead, "protocol").await;
    assert_made_up(&g, 502, "the upstream connection failed");
    assert_made_up(&o, 502, "the upstream connection failed");
    assert_eq!(bad.count("/orders/fault-post"), 1, "{:?}", bad.requests());
}

#[tokio::test]
async fn a_hang_before_the_head_is_504_after_first_byte_and_not_retried() {
    let started = Instant::now();
    let (g, o, bad) = fault(Mode::HangBeforeHead, "timeout").await;
    assert_made_up(&g, 504, "the upstream did not answer in time");
    assert_made_up(&o, 504, "the upstream did not answer in time");
    assert!(
        started.elapsed() >= 2 * FIRST_BYTE,
        "each waited timeouts.first_byte"
    );
    assert_eq!(bad.count("/orders/fault-post"), 1, "{:?}", bad.requests());
}

#[tokio::test]
async fn a_reset_mid_body_cuts_the_relayed_response_and_is_counted() {
    let (g, o, bad) = fault(Mode::ResetMidBody, "protocol").await;
    for r in [&g, &o] {
        // The head was relayed before the upstream died: the client sees its status,
        // and a body that ends short of its Content-Length (an error, never a clean end).
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-length"), Some("1000"));
        assert!(
            r.body.is_err(),
            "a truncated body must not end cleanly: {r:?}"
        );
    }
    assert_eq!(bad.count("/orders/fault-post"), 1, "{:?}", bad.requests());
}

#[tokio::test]
async fn a_body_stalled_mid_way_is_cut_after_the_idle_timeout_and_counted() {
    let started = Instant::now();
    let (g, o, bad) = fault(Mode::StallMidBody, "timeout").await;
    for r in [&g, &o] {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.body.is_err(),
            "a stalled body must not end cleanly: {r:?}"
        );
    }
    assert!(started.elapsed() >= 2 * IDLE, "each waited timeouts.idle");
    assert_eq!(bad.count("/orders/fault-post"), 1, "{:?}", bad.requests());
}

#[tokio::test]
async fn more_body_than_content_length_never_becomes_the_next_response() {
    let bad = BadUpstream::start(Mode::OverlongBody).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let c = client();
    for i in 0..20 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let path = if i % 2 == 0 {
            format!("/threads/over-{i}")
        } else {
            format!("/orders/over-{i}")
        };
        let g = request(&c, method, &p.url(&path))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(g.status, 200, "request {i}: {g:?}");
        assert_eq!(
            g.body.as_deref().ok(),
            Some(&b"hello"[..]),
            "request {i}: the announced 5 bytes, never the bytes after them"
        );
        assert_eq!(bad.count(&format!("/over-{i}")), 1, "{:?}", bad.requests());
    }
    // The surplus poisons the connection it arrived on: it is never reused, so every
    // request got a connection of its own.
    assert_eq!(bad.connections(), 20, "{:?}", bad.requests());
    p.assert_nothing_stuck().await;
    p.srv.shutdown().await;
}

/// What a request loop saw.
#[derive(Default, Debug)]
struct Seen {
    ok: usize,
    /// 502 from an unreachable endpoint (connect / no_endpoint).
    unreachable: usize,
    /// 502 from a connection that failed after the request was sent.
    failed: usize,
    other: Vec<String>,
    /// When each failure happened.
    failures_at: Vec<Instant>,
}

#[tokio::test]
async fn an_ide_flapping_every_second_fails_only_while_down_and_never_resends_a_post() {
    let ide = BadUpstream::flapping(Duration::from_secs(1)).await;
    let fleet = upstream("fleet").await;
    let p = Proxy::start(&[fleet.addr], Some(ide.addr)).await;
    let c = client();
    let mut seen = Seen::default();
    let mut sent_posts = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let path = format!("/api/w1/files/flap-{i}.txt");
        if method == "POST" {
            sent_posts.push(path.clone());
        }
        match request(&c, method, &p.url(&path)).await {
            Ok(g) if g.status == 200 && g.body.is_ok() => seen.ok += 1,
            Ok(g) if g.status == 502 => {
                assert_eq!(g.header("x-fleetgate-target"), Some("ide"), "{g:?}");
                if g.text() == "the ide upstream cannot be reached" {
                    assert_eq!(g.header("x-fleetgate-required-role"), Some("ide"));
                    assert!(g.header("retry-after").is_some(), "{g:?}");
                    seen.unreachable += 1;
                } else {
                    assert_eq!(g.text(), "the upstream connection failed");
                    seen.failed += 1;
                }
            }
            other => seen.other.push(format!("{method} {path}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.other.is_empty(), "only 200 or 502: {seen:?}");
    assert!(seen.ok > 0 && seen.unreachable > 0, "it flapped: {seen:?}");
    for path in &sent_posts {
        assert!(
            ide.count(path) <= 1,
            "{path} sent twice: {:?}",
            ide.requests()
        );
    }
    let m = metrics(&p.srv).await;
    let connect = upstream_errors(&m, "ide", "connect");
    let fast = upstream_errors(&m, "ide", "no_endpoint");
    assert!(connect >= 1, "{m}");
    assert_eq!(
        (connect + fast) as usize,
        seen.unreachable,
        "each unreachable answer counted once: {seen:?}"
    );
    assert_eq!(
        upstream_errors(&m, "ide", "protocol") as usize,
        seen.failed,
        "{seen:?}"
    );
    // Once it stays up, the probe re-admits it (back-off at most a few seconds here).
    let mut back = false;
    for _ in 0..150 {
        if let Ok(g) = request(&c, "GET", &p.url("/api/w1/files/back")).await {
            if g.status == 200 {
                back = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the ide is re-admitted when it comes back: {seen:?}");
    p.assert_nothing_stuck().await;
    eprintln!(
        "flapping ide: {} requests, {} ok, {} unreachable (connect {connect}, no_endpoint {fast}), {} failed mid-exchange",
        i, seen.ok, seen.unreachable, seen.failed
    );
    p.srv.shutdown().await;
}

#[tokio::test]
async fn a_dying_fleet_endpoint_loses_at_most_its_in_flight_requests_then_the_other_serves() {
    const WORKERS: usize = 8;
    let good = upstream("good").await;
    let dying = BadUpstream::start(Mode::Healthy).await;
    let p = Arc::new(Proxy::start(&[good.addr, dying.addr], None).await);
    let stop = Arc::new(AtomicBool::new(false));
    let posts = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (p, stop, posts) = (p.clone(), stop.clone(), posts.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen = Seen::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (method, path) = if n % 2 == 0 {
                        ("GET", format!("/threads/w{w}-{n}"))
                    } else {
                        ("POST", format!("/orders/w{w}-{n}"))
                    };
                    if method == "POST" {
                        posts.lock().unwrap().push(path.clone());
                    }
                    match request(&c, method, &p.url(&path)).await {
                        Ok(g) if g.status == 200 && g.body.is_ok() => seen.ok += 1,
                        Ok(g) if g.status == 502 => {
                            seen.failures_at.push(Instant::now());
                            if g.header("retry-after").is_some() {
                                seen.unreachable += 1;
                            } else {
                                seen.failed += 1;
                            }
                        }
                        other => seen.other.push(format!("{method} {path}: {other:?}")),
                    }
                }
                seen
            })
        })
        .collect();
    // Both endpoints take traffic, then one dies (listener gone, connections reset).
    let mut waited = 0;
    while (dying.requests().is_empty() || good.seen().is_empty()) && waited < 250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(!dying.requests().is_empty() && !good.seen().is_empty());
    let killed_at = Instant::now();
    dying.kill();
    // Its connection tasks see the kill within moments; after that nothing can arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served_by_dying = dying.requests().len();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let good_before_end = good.seen().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Seen::default();
    for l in loops {
        let s = l.await.unwrap();
        all.ok += s.ok;
        all.unreachable += s.unreachable;
        all.failed += s.failed;
        all.other.extend(s.other);
        all.failures_at.extend(s.failures_at);
    }
    assert!(all.other.is_empty(), "only 200 or 502: {all:?}");
    assert!(
        all.failures_at.iter().all(|t| *t >= killed_at),
        "nothing failed before the endpoint died: {all:?}"
    );
    // No retry to the other endpoint: the requests in flight on the dying endpoint, and
    // those that raced to connect to it before it was ejected, fail — at most two per
    // worker (one in flight, one connect), never more.
    let lost = all.unreachable + all.failed;
    assert!(
        lost <= 2 * WORKERS,
        "lost {lost} requests with {WORKERS} workers: {all:?}"
    );
    assert!(
        good.seen().len() > good_before_end,
        "the healthy endpoint kept serving"
    );
    assert_eq!(
        dying.requests().len(),
        served_by_dying,
        "nothing reaches a dead endpoint"
    );
    // Every POST reached at most one endpoint, once.
    let posts = posts.lock().unwrap().clone();
    let good_seen = good.seen();
    for path in &posts {
        let line = format!("POST {path}");
        let n = dying.requests().iter().filter(|r| **r == line).count()
            + good_seen.iter().filter(|s| s.path == *path).count();
        assert!(n <= 1, "{path} sent {n} times");
    }
    let h = get(&format!("http://{}/healthz", p.srv.admin_addr))
        .await
        .json();
    let eps = h["upstreams"]["fleet"]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let dead = eps
        .iter()
        .find(|e| e["address"] == dying.addr.to_string())
        .expect("the dead endpoint is listed");
    assert_eq!(dead["reachable"], false, "{h}");
    let m = metrics(&p.srv).await;
    assert!(
        m.contains("fleetgate_upstream_ejections_total{upstream=\"fleet\"} 1"),
        "{m}"
    );
    eprintln!(
        "dying endpoint: {} ok, {lost} lost ({} unreachable, {} failed mid-exchange) with {WORKERS} workers",
        all.ok, all.unreachable, all.failed
    );
    p.assert_nothing_stuck().await;
    let p = Arc::try_unwrap(p).ok().expect("loops ended");
    p.srv.shutdown().await;
}

/// Sequential requests reuse one keep-alive connection to the upstream.
#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let bad = BadUpstream::start(Mode::Healthy).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let client = client();
    for i in 0..5 {
        let g = request(&client, "GET", &p.url(&format!("/threads/{i}")))
            .await
            .unwrap();
        assert_eq!(g.status, 200);
    }
    assert_eq!(bad.count("/threads/"), 5);
    assert_eq!(
        bad.connections(),
        1,
        "one keep-alive connection served them all"
    );
    p.assert_nothing_stuck().await;
}

/// A reused keep-alive connection times its next response head as a new one does: the
/// first request is answered, the second (on the same upstream connection) hangs and is
/// `504` after `timeouts.first_byte`.
#[tokio::test]
async fn a_reused_connection_times_its_next_response_head() {
    let bad = BadUpstream::start(Mode::HangOnSecond).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let client = client();
    let first = request(&client, "GET", &p.url("/threads/1")).await.unwrap();
    assert_eq!(first.status, 200);
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        request(&client, "GET", &p.url("/threads/2")),
    )
    .await
    .expect("answered once timeouts.first_byte has passed")
    .unwrap();
    assert_made_up(&second, 504, "the upstream did not answer in time");
    assert_eq!(bad.connections(), 1, "both went over one connection");
    assert_eq!(p.errors("fleet", "timeout").await, 1);
}

/// An upstream that closes each keep-alive connection soon after answering: the closed
/// connection is never handed out again, every request is answered on a new one, and a
/// POST is sent once.
#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_not_reused() {
    let bad = BadUpstream::start(Mode::CloseAfterAnswer).await;
    let p = Proxy::start(&[bad.addr], None).await;
    let client = client();
    for i in 0..3 {
        let g = request(&client, "POST", &p.url(&format!("/orders/{i}")))
            .await
            .unwrap();
        assert_eq!(g.status, 200, "request {i}");
        // Longer than the upstream keeps the connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(bad.count("POST /orders/"), 3, "{:?}", bad.requests());
    assert_eq!(bad.connections(), 3);
    assert_eq!(p.errors("fleet", "protocol").await, 0);
    p.assert_nothing_stuck().await;
}
