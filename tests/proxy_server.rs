//! Server hygiene (431, 400, header-read timeout, connection limit), the admin listener,
//! probes on the data port, and graceful shutdown.

mod support;

use std::time::Duration;

use fleetgate::config::Role;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.limits.max_header_bytes = 8192)
        .start()
        .await;
    let big = "a".repeat(20_000);
    let req = format!("GET /threads HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let out = raw(setup.srv.addr, req.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(setup.fleet.seen().is_empty());
    setup.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let setup = Setup::serve_without_ide().await;
    let out = raw(setup.srv.addr, b"GET /a b c d\r\nhost x\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let out = raw(
        setup.srv.addr,
        b"GET /a/%2e%2e/%2E%2e/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("above the root"), "{text}");
    let out = raw(
        setup.srv.addr,
        b"OPTIONS * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(setup.fleet.seen().is_empty());
    setup.shutdown().await;
}

#[tokio::test]
async fn a_slow_head_is_cut_off_after_header_read() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.header_read = Duration::from_millis(300))
        .start()
        .await;
    // Half a head, then silence: the proxy closes (or answers 408), it does not wait forever.
    let mut s = setup.connect().await;
    s.write_all(b"GET /threads HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy gives up on a slow head")
        .ok();
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Not a byte at all (not even an HTTP/2 preface): closed as well.
    let mut s = setup.connect().await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("a silent connection is closed")
        .ok();
    // Half an HTTP/2 preface.
    let mut s = setup.connect().await;
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("a stalled preface is closed")
        .ok();
    assert!(setup.fleet.seen().is_empty());
    setup.shutdown().await;
}

#[tokio::test]
async fn max_connections_bounds_the_connections_served() {
    // Four per-core workers share the one slot: whichever socket the kernel queues the
    // second connection on, it is served once the first is gone.
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.limits.max_connections = 1;
            c.runtime.workers = 4;
        })
        .start()
        .await;
    let request = b"GET /threads HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = setup.connect().await;
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The first connection stays open (keep-alive): the second is not served meanwhile.
    let mut second = setup.connect().await;
    second.write_all(request).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served beyond max_connections");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once the first connection is gone")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    setup.shutdown().await;
}

/// A burst opens an upstream connection for each of its concurrent requests; once idle
/// for a second, those beyond `upstreams.max_idle_per_endpoint` are closed, and the ones
/// kept serve the next requests.
#[tokio::test]
async fn idle_upstream_connections_beyond_the_bound_are_closed() {
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.upstreams.max_idle_per_endpoint = 2;
            c.runtime.workers = 1;
        })
        .start()
        .await;
    // Six requests held at the upstream at once: six upstream connections.
    let url = setup.url("/threads/hold");
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    assert_eq!(
        until_open(&setup.fleet, 6).await,
        6,
        "one a concurrent request"
    );
    // Released (watchdog: 10 s; a handler may not wait yet when first told).
    for _ in 0..1000 {
        if burst.iter().all(|t| t.is_finished()) {
            break;
        }
        setup.fleet.state.release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for answer in burst {
        assert_eq!(answer.await.unwrap().status, 200);
    }
    // A second after the burst, the bound leaves two.
    assert_eq!(until_open(&setup.fleet, 2).await, 2);
    for _ in 0..3 {
        assert_eq!(get(&setup.url("/threads")).await.status, 200);
    }
    assert_eq!(
        setup.fleet.open_connections(),
        2,
        "the kept ones were reused"
    );
    setup.shutdown().await;
}

/// Wait (at most 10 s) until `upstream` has `n` connections open; how many it has.
async fn until_open(upstream: &Upstream, n: usize) -> usize {
    for _ in 0..1000 {
        if upstream.open_connections() == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    upstream.open_connections()
}

/// `connections` keep-alive clients each make `rounds` requests at once; all are answered.
async fn many_connections_are_served(setup: &Setup, connections: usize, rounds: usize) {
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let url = setup.url(&format!("/threads/c{i}"));
            tokio::spawn(async move {
                use http_body_util::BodyExt;
                let c = client();
                for _ in 0..rounds {
                    let req = http::Request::get(&url)
                        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
                        .unwrap();
                    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
                        .await
                        .expect("an answer within 20 s")
                        .expect("an answer");
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.expect("the body");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(setup.fleet.seen().len(), connections * rounds);
}

#[tokio::test]
async fn per_core_workers_share_the_port_and_end_with_the_server() {
    use fleetgate::config::RuntimeMode;
    use std::sync::atomic::Ordering;
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.runtime.mode = RuntimeMode::PerCore;
            c.runtime.workers = 3;
        })
        .start()
        .await;
    let running = setup.srv.running_workers();
    assert_eq!(running.load(Ordering::Relaxed), 3);
    many_connections_are_served(&setup, 24, 5).await;
    setup.shutdown().await;
    // Every worker thread has stopped its runtime (and with it the connections on it).
    assert_eq!(running.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_second_server_on_a_port_in_use_fails_to_start_rather_than_share_it() {
    use fleetgate::config::RuntimeMode;
    let setup = Setup::serve_without_ide().await;
    for mode in [RuntimeMode::PerCore, RuntimeMode::Shared] {
        let mut second = config(Role::Serve, setup.routes.path(), &[setup.fleet.addr], None);
        second.listen = setup.srv.addr;
        second.runtime.mode = mode;
        match fleetgate::server::start(second).await {
            Err(fleetgate::server::StartError::Io(m)) => {
                assert!(m.contains("(listen)"), "{m}")
            }
            Err(e) => panic!("{mode:?}: {e}"),
            Ok(_) => panic!("{mode:?}: a second server shares the port"),
        }
    }
    setup.shutdown().await;
}

#[tokio::test]
async fn the_shared_runtime_serves_on_the_callers_runtime() {
    use fleetgate::config::RuntimeMode;
    use std::sync::atomic::Ordering;
    let setup = Setup::role(Role::Serve)
        .config(|c| c.runtime.mode = RuntimeMode::Shared)
        .start()
        .await;
    let running = setup.srv.running_workers();
    assert_eq!(running.load(Ordering::Relaxed), 1);
    many_connections_are_served(&setup, 24, 5).await;
    setup.shutdown().await;
    assert_eq!(running.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_admin_listener_answers_health_readiness_metrics_version_and_routes() {
    let setup = Setup::serve().await;
    let admin = setup.admin_url("");
    get(&setup.url("/api/w1/files/a")).await;
    get(&setup.url("/api/w1/runs/1")).await;

    let h = get(&format!("{admin}/healthz")).await;
    assert_eq!(h.status, 200);
    let j = h.json();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["role"], "serve");
    assert_eq!(j["node_id"], "test-node");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(j["manifest_digest"], setup.srv.snapshot().manifest.digest());
    assert_eq!(j["upstreams"]["fleet"]["reachable"], true);
    assert_eq!(
        j["upstreams"]["ide"]["endpoints"][0]["address"],
        setup.ide().addr.to_string()
    );

    assert_eq!(get(&format!("{admin}/readyz")).await.status, 200);
    assert_eq!(
        get(&format!("{admin}/version")).await.json()["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get(&format!("{admin}/nope")).await.status, 404);
    assert_eq!(
        send("POST", &format!("{admin}/healthz"), &[]).await.status,
        405
    );

    let m = metrics(&setup.srv).await;
    for want in [
        r#"fleetgate_requests_total{class="ide-only",code="200",target="ide"} 1"#,
        r#"fleetgate_requests_total{class="fleet-ok",code="200",target="fleet"} 1"#,
        r#"fleetgate_request_duration_seconds_count{class="fleet-ok",target="fleet"} 1"#,
        "fleetgate_connections_active",
    ] {
        assert!(m.contains(want), "{want} in\n{m}");
    }

    let r = get(&format!("{admin}/routes")).await.json();
    assert_eq!(r["default_class"], "fleet-ok");
    assert_eq!(r["aliases"][0]["from"], "/v1");
    assert_eq!(r["digest"], j["manifest_digest"]);
    let rules = r["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    let carve = rules
        .iter()
        .find(|r| r["path"] == "/api/{ws}/runs/{id}")
        .unwrap();
    assert_eq!(carve["class"], "fleet-ok");
    assert_eq!(carve["methods"][0], "GET");
    assert_eq!(carve["tenant"], "ws");
    assert!(carve["file"].as_str().unwrap().ends_with("10-test.toml"));
    assert!(carve["line"].as_u64().unwrap() > 0);
    for key in ["why", "degrade", "writes", "read_only_safe", "when"] {
        assert!(carve.get(key).is_some(), "{key}");
    }
    setup.shutdown().await;
}

#[tokio::test]
async fn probes_on_the_data_port_are_answered_not_forwarded() {
    let setup = Setup::serve_without_ide().await;
    let a = get(&setup.url("/healthz")).await;
    assert_eq!(
        (a.status.as_u16(), a.json()["role"].as_str()),
        (200, Some("serve"))
    );
    assert_eq!(get(&setup.url("/readyz")).await.status, 200);
    assert!(setup.fleet.seen().is_empty());
    setup.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_fails_readiness_and_finishes_the_request_in_flight() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.drain_delay = Duration::from_millis(200))
        .start()
        .await;
    let fleet = &setup.fleet;
    let addr = setup.srv.addr;
    let admin = setup.srv.admin_addr;
    let in_flight = tokio::spawn(async move { get(&format!("http://{addr}/hold")).await });
    // Wait until the upstream has the request.
    for _ in 0..200 {
        if !fleet.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fleet.seen().len(), 1);
    let handle = setup.srv.shutdown_handle();
    let stopped = tokio::spawn(setup.srv.wait());
    handle.trigger();
    let r = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(r.status, 503, "readiness fails first");
    assert_eq!(r.json()["status"], "draining");
    fleet.state.release.notify_one();
    let a = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.server(), "fleet");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops once the request is done")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_closes_streams_that_outlive_the_shutdown_timeout() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.shutdown = Duration::from_millis(300))
        .start()
        .await;
    let req = http::Request::get(setup.url("/events/sse"))
        .body(http_body_util::BodyExt::boxed(
            http_body_util::Empty::new().map_err(|e| match e {}),
        ))
        .unwrap();
    use http_body_util::BodyExt;
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), setup.shutdown())
        .await
        .expect("shutdown is bounded by timeouts.shutdown");
    let end = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap();
    assert!(end.is_err(), "the unfinished stream is cut, not completed");
}

/// A plain connection's protocol is picked from its first bytes before hyper reads
/// anything: a first byte that could begin the HTTP/2 preface (`P`, as in `POST`) goes
/// through version detection, which must still serve HTTP/1.1 when the rest arrives later.
#[tokio::test]
async fn an_http1_request_whose_first_byte_could_begin_http2_is_served() {
    let setup = Setup::serve_without_ide().await;
    let mut s = setup.connect().await;
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(
        b"UT /threads HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    assert!(
        text.contains("x-request-id"),
        "answered by the data path: {text}"
    );
    setup.shutdown().await;
}

/// The HTTP/2 preface split across writes is still HTTP/2 (h2c, prior knowledge): the
/// server answers with its SETTINGS frame.
#[tokio::test]
async fn a_split_http2_preface_is_served_as_http2() {
    let setup = Setup::serve_without_ide().await;
    let mut s = setup.connect().await;
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The rest of the preface, then an empty SETTINGS frame.
    s.write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("the server answers")
        .unwrap();
    assert_eq!(head[3], 0x04, "a SETTINGS frame: {head:?}");
    assert_eq!(head[4] & 0x01, 0, "not an ACK: the server's own SETTINGS");
    drop(s);
    setup.shutdown().await;
}

/// Plain HTTP/1.1 (the common case, served without version detection) and h2c prior
/// knowledge on the same port.
#[tokio::test]
async fn http1_and_h2c_share_the_port() {
    let setup = Setup::serve_without_ide().await;
    let out = raw(
        setup.srv.addr,
        b"GET /threads HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client
        .get(setup.url("/threads").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    setup.shutdown().await;
}

/// HTTP/1.1 keep-alive: every head is timed by `header_read`, not only the first, while
/// a response slower than `header_read` is not cut (no head is awaited during it).
#[tokio::test]
async fn later_heads_are_timed_and_slow_responses_are_not() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.header_read = Duration::from_millis(300))
        .start()
        .await;
    let mut s = setup.connect().await;
    for _ in 0..2 {
        s.write_all(b"GET /threads/sleep/700 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_one_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Half a head, then silence.
    s.write_all(b"GET /threads HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the proxy gives up on a slow later head")
        .ok();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(setup.fleet.seen().len(), 2);
    setup.shutdown().await;
}

/// An idle HTTP/1.1 keep-alive connection is parked (hyper's connection let go) and
/// serves its next request; a head that had begun before the parking keeps its bytes.
#[tokio::test]
async fn idle_connections_are_parked_and_serve_again() {
    let setup = Setup::role(Role::Serve).start().await;
    let mut s = setup.connect().await;
    get_200(&mut s, "/threads/1").await;
    gauge_reaches(&setup, PARKED, 1).await;

    // Woken by a whole request.
    get_200(&mut s, "/threads/2").await;
    assert_eq!(gauge(&setup, PARKED).await, 0);

    // Half a head, read by hyper before the connection is parked (its bytes come back
    // from hyper then), the rest after.
    s.write_all(b"GET /threads/3 HTTP/1.1\r\nho").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    s.write_all(b"st: x\r\nx-part: two\r\n\r\n").await.unwrap();
    assert!(read_one_response(&mut s).await.starts_with("HTTP/1.1 200"));

    let seen = setup.fleet.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/threads/1", "/threads/2", "/threads/3"]);
    assert_eq!(seen[2].headers["x-part"], "two");
    setup.shutdown().await;
}

/// Shutdown closes a parked connection (a FIN, no answer) and does not wait for it.
#[tokio::test]
async fn shutdown_closes_parked_connections() {
    let setup = Setup::role(Role::Serve).start().await;
    let mut s = setup.connect().await;
    get_200(&mut s, "/threads").await;
    gauge_reaches(&setup, PARKED, 1).await;
    let handle = setup.srv.shutdown_handle();
    handle.trigger();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("a parked connection is closed by the drain")
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    tokio::time::timeout(Duration::from_secs(10), setup.srv.wait())
        .await
        .expect("shutdown does not wait for parked connections");
}

/// `header_read` still bounds a parked connection: it is closed once the next head is late.
#[tokio::test]
async fn a_parked_connection_is_closed_when_its_next_head_is_late() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.header_read = Duration::from_millis(2500))
        .start()
        .await;
    let mut s = setup.connect().await;
    get_200(&mut s, "/threads").await;
    gauge_reaches(&setup, PARKED, 1).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed once header_read has passed")
        .ok();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    gauge_reaches(&setup, PARKED, 0).await;
    setup.shutdown().await;
}

/// `timeouts.park_after = 0` turns parking off: an idle connection keeps hyper's
/// connection (longer than the default second) and serves on.
#[tokio::test]
async fn park_after_zero_never_parks() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.park_after = Duration::ZERO)
        .start()
        .await;
    let mut s = setup.connect().await;
    for _ in 0..2 {
        get_200(&mut s, "/threads").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(gauge(&setup, PARKED).await, 0);
    }
    setup.shutdown().await;
}

/// A short `timeouts.park_after` parks sooner: here before `header_read` (600 ms) closes
/// the idle connection, which the default second would not.
#[tokio::test]
async fn a_short_park_after_parks_sooner() {
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.timeouts.park_after = Duration::from_millis(20);
            c.timeouts.header_read = Duration::from_millis(600);
        })
        .start()
        .await;
    let mut s = setup.connect().await;
    for _ in 0..3 {
        get_200(&mut s, "/threads").await;
        gauge_reaches(&setup, PARKED, 1).await;
    }
    assert_eq!(setup.fleet.seen().len(), 3);
    setup.shutdown().await;
}
