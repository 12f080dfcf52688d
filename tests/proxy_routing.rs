//! Routing by role, error answers (421/502/504/508), degrade, header hygiene in both
//! directions, the normalized path upstream, retries and the fleet pool.

mod support;

use std::time::Duration;

use fleetgate::config::Role;
use support::*;

#[tokio::test]
async fn role_serve_routes_ide_only_to_ide_and_fleet_ok_to_fleet() {
    let setup = Setup::serve().await;
    let base = setup.url("");
    for (path, server, target) in [
        ("/api/w1/files/a.txt", "ide", "ide"),
        ("/api/w1/runs/7", "fleet", "fleet"), // the carve-out
        ("/v1/w1/files/a.txt", "ide", "ide"), // alias
        ("/threads/1", "fleet", "fleet"),     // unlisted: default class
        ("/ws/term/1", "ide", "ide"),
    ] {
        let a = get(&format!("{base}{path}")).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.server(), server, "{path}");
        assert_eq!(a.header("x-fleetgate-target"), Some(target), "{path}");
        assert_eq!(
            a.header("x-fleetgate-served-by"),
            Some("serve@test-node"),
            "{path}"
        );
    }
    setup.shutdown().await;
}

#[tokio::test]
async fn roles_ide_and_all_serve_everything_locally() {
    for role in [Role::Ide, Role::All] {
        let setup = Setup::role(role).fleet_named("local").start().await;
        for path in ["/api/w1/files/a", "/api/w1/runs/1", "/other"] {
            let a = get(&setup.url(path)).await;
            assert_eq!(
                (a.status.as_u16(), a.server()),
                (200, "local".to_string()),
                "{role} {path}"
            );
            assert_eq!(a.header("x-fleetgate-target"), Some("local"));
            assert_eq!(
                a.header("x-fleetgate-served-by"),
                Some(format!("{role}@test-node").as_str())
            );
        }
        setup.shutdown().await;
    }
}

#[tokio::test]
async fn role_worker_serves_fleet_ok_locally_and_refuses_ide_only_with_421() {
    let setup = Setup::role(Role::Worker).fleet_named("local").start().await;
    let local = &setup.fleet;
    let a = get(&setup.url("/api/w1/runs/1")).await;
    assert_eq!((a.status.as_u16(), a.server()), (200, "local".to_string()));
    assert_eq!(a.header("x-fleetgate-target"), Some("local"));
    let a = get(&setup.url("/api/w1/files/a")).await;
    assert_eq!(a.status, 421);
    assert_eq!(a.header("x-fleetgate-required-role"), Some("ide"));
    assert!(a.header("content-type").unwrap().starts_with("text/plain"));
    assert!(!a.body.is_empty());
    assert_eq!(local.seen().len(), 1, "the 421 was not forwarded");
    setup.shutdown().await;
}

#[tokio::test]
async fn role_serve_without_ide_answers_421() {
    let setup = Setup::serve_without_ide().await;
    let a = get(&setup.url("/api/w1/files/a")).await;
    assert_eq!(a.status, 421);
    assert_eq!(a.header("x-fleetgate-required-role"), Some("ide"));
    assert_eq!(a.header("x-fleetgate-served-by"), Some("serve@test-node"));
    setup.shutdown().await;
}

#[tokio::test]
async fn unreachable_ide_gives_502_with_retry_after_and_required_role() {
    let setup = Setup::role(Role::Serve)
        .with_unreachable_ide()
        .start()
        .await;
    for _ in 0..2 {
        // First a refused connect, then the ejected endpoint: both 502.
        let a = get(&setup.url("/api/w1/files/a")).await;
        assert_eq!(a.status, 502);
        assert_eq!(a.header("x-fleetgate-required-role"), Some("ide"));
        let retry: u32 = a.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1);
        assert_eq!(a.header("x-fleetgate-target"), Some("ide"));
    }
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_upstream_errors_total{kind="connect",upstream="ide"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fleetgate_requests_total{class="ide-only",code="502",target="ide"} 2"#),
        "{m}"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn degrade_rule_is_served_locally_when_the_ide_is_unreachable() {
    let setup = Setup::role(Role::Serve)
        .with_unreachable_ide()
        .start()
        .await;
    for _ in 0..2 {
        let a = get(&setup.url("/preview/9")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.server(), "fleet");
        assert_eq!(a.header("x-fleetgate-degraded"), Some("1"));
        assert_eq!(
            a.header("x-fleetgate-target"),
            Some("ide"),
            "the stamp keeps the routing decision"
        );
    }
    let head = send("HEAD", &setup.url("/preview/9"), &[]).await;
    assert_eq!(
        (head.status.as_u16(), head.header("x-fleetgate-degraded")),
        (200, Some("1"))
    );
    // Not a read: no degrade.
    let a = send("DELETE", &setup.url("/preview/9"), &[]).await;
    assert_ne!(a.header("x-fleetgate-degraded"), Some("1"));
    // Rules without degrade still fail.
    let a = get(&setup.url("/api/w1/files/a")).await;
    assert_eq!(a.status, 502);
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_requests_total{class="ide-only",code="200",target="ide"} 3"#),
        "degraded answers are counted under the decision's target: {m}"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn a_degrade_rule_with_no_local_pool_either_answers_the_ides_502() {
    let dead = dead_port().await;
    let setup = Setup::role(Role::Serve)
        .with_unreachable_ide()
        .config(move |c| c.upstreams.fleet = vec![url(dead)])
        .start()
        .await;
    let a = get(&setup.url("/preview/9")).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.header("x-fleetgate-required-role"), Some("ide"));
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.header("x-fleetgate-degraded"), None);
    assert_eq!(a.header("x-fleetgate-target"), Some("ide"));
    setup.shutdown().await;
}

#[tokio::test]
async fn every_request_carries_a_request_id_to_the_upstream_and_back() {
    let setup = Setup::serve_without_ide().await;
    let a = get(&setup.url("/threads")).await;
    let id = a
        .header("x-request-id")
        .expect("a generated id")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    let b = send(
        "GET",
        &setup.url("/threads"),
        &[("x-request-id", "client-id-1")],
    )
    .await;
    assert_eq!(
        b.header("x-request-id"),
        Some("client-id-1"),
        "the client's id is kept"
    );
    let seen = setup.fleet.seen();
    assert_eq!(seen[0].headers["x-request-id"], id.as_str());
    assert_eq!(seen[1].headers["x-request-id"], "client-id-1");
    // fleetgate's own answers carry it too.
    let c = send(
        "GET",
        &setup.url("/threads"),
        &[("x-fleetgate-via", "test-node")],
    )
    .await;
    assert_eq!(c.status, 508);
    assert!(c.header("x-request-id").is_some());
    setup.shutdown().await;
}

#[tokio::test]
async fn reachable_ide_serves_degrade_rules_itself() {
    let setup = Setup::serve().await;
    let a = get(&setup.url("/preview/9")).await;
    assert_eq!(
        (a.server().as_str(), a.header("x-fleetgate-degraded")),
        ("ide", None)
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn loop_guard_answers_508() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.limits.max_hops = 3)
        .start()
        .await;
    let fleet = &setup.fleet;
    let url = setup.url("/threads");
    let a = send("GET", &url, &[("x-fleetgate-via", "edge-1, test-node")]).await;
    assert_eq!(a.status, 508);
    assert_eq!(
        a.header("x-fleetgate-target"),
        None,
        "refused before routing: no target"
    );
    let a = send("GET", &url, &[("x-fleetgate-via", "a, b, c")]).await;
    assert_eq!(a.status, 508, "too many hops");
    let a = send("GET", &url, &[("x-fleetgate-via", "a, b")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(fleet.seen().len(), 1);
    assert_eq!(
        fleet.seen()[0].headers["x-fleetgate-via"],
        "a, b, test-node"
    );
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_requests_total{class="none",code="508",target="none"} 2"#),
        "{m}"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_reach_the_upstream() {
    let setup = Setup::serve_without_ide().await;
    let digest = setup.manifest_digest();
    let url = setup.url("/threads");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    send(
        "GET",
        &url,
        &[
            ("host", "app.example"),
            ("x-forwarded-for", "203.0.113.9"),
            ("via", "1.1 cdn"),
            ("traceparent", tp),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("te", "trailers"),
        ],
    )
    .await;
    send("GET", &url, &[]).await;
    let seen = setup.fleet.seen();
    let h = &seen[0].headers;
    assert_eq!(h["host"], "app.example");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example");
    let via: Vec<_> = h
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(via, ["1.1 cdn", "1.1 test-node"]);
    assert_eq!(h["traceparent"], tp);
    assert_eq!(h["x-fleetgate-via"], "test-node");
    assert_eq!(h["x-fleetgate-manifest"], digest.as_str());
    assert!(!h.contains_key("x-private"), "named in Connection");
    assert!(!h.contains_key("te"));
    let created = seen[1].headers["traceparent"].to_str().unwrap();
    assert_eq!(created.len(), 55, "{created}");
    assert!(created.starts_with("00-") && created.ends_with("-01"));
    setup.shutdown().await;
}

#[tokio::test]
async fn response_stamps_and_repeated_headers() {
    let setup = Setup::serve_without_ide().await;
    let a = get(&setup.url("/cookies")).await;
    let cookies: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert!(
        !a.headers.contains_key("keep-alive"),
        "hop-by-hop stripped from responses"
    );
    assert_eq!(a.header("x-fleetgate-target"), Some("fleet"));
    assert_eq!(a.header("x-fleetgate-served-by"), Some("serve@test-node"));
    setup.shutdown().await;
}

#[tokio::test]
async fn response_stamps_can_be_switched_off() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.response_stamps = false)
        .start()
        .await;
    let a = get(&setup.url("/threads")).await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("x-fleetgate-target").is_none() && a.header("x-fleetgate-served-by").is_none()
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn chained_fleetgates_keep_the_inner_served_by() {
    let inner = Setup::role(Role::All).fleet_named("app").start().await;
    let app = &inner.fleet;
    let mut outer_cfg = config(Role::Serve, inner.routes.path(), &[inner.srv.addr], None);
    outer_cfg.node_id = "edge".into();
    let outer = start(outer_cfg).await;
    let a = get(&format!("http://{}/threads", outer.addr)).await;
    assert_eq!(a.server(), "app");
    assert_eq!(a.header("x-fleetgate-served-by"), Some("all@test-node"));
    assert_eq!(a.header("x-fleetgate-forwarded-via"), Some("serve@edge"));
    assert_eq!(
        a.header("x-fleetgate-target"),
        Some("fleet"),
        "the outer decision"
    );
    assert_eq!(app.seen()[0].headers["x-fleetgate-via"], "edge, test-node");
    outer.shutdown().await;
    inner.shutdown().await;
}

#[tokio::test]
async fn the_upstream_receives_the_normalized_path_and_the_query_unchanged() {
    let setup = Setup::serve().await;
    let (fleet, ide) = (&setup.fleet, setup.ide());
    let base = setup.url("");
    // Classified by the normalized path: the carve-out, not the ide-only wildcard.
    for raw in [
        "/api/w1/x/../runs/5?q=a%2Fb&z",
        "/api/w1//runs/5?q=a%2Fb&z",
        "/api/w1/%72uns/5?q=a%2Fb&z",
    ] {
        let a = get(&format!("{base}{raw}")).await;
        assert_eq!(a.server(), "fleet", "{raw}");
    }
    for s in fleet.seen() {
        assert_eq!(s.path, "/api/w1/runs/5");
        assert_eq!(s.query.as_deref(), Some("q=a%2Fb&z"));
    }
    for bad in ["/api/w1/runs%2F5", "/api/%zz", "/../etc"] {
        let a = get(&format!("{base}{bad}")).await;
        assert_eq!(a.status, 400, "{bad}");
    }
    assert_eq!(fleet.seen().len() + ide.seen().len(), 3);
    setup.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.first_byte = Duration::from_millis(200))
        .start()
        .await;
    let a = get(&setup.url("/hold")).await;
    assert_eq!(a.status, 504);
    setup.fleet.state.release.notify_one();
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_upstream_errors_total{kind="timeout",upstream="fleet"} 1"#),
        "{m}"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn a_reset_mid_body_fails_the_client_response() {
    let setup = Setup::serve_without_ide().await;
    let req = http::Request::get(setup.url("/reset"))
        .body(http_body_util::BodyExt::boxed(
            http_body_util::Empty::new().map_err(|e| match e {}),
        ))
        .unwrap();
    use http_body_util::BodyExt;
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let r = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap();
    assert!(
        r.is_err(),
        "a truncated body must be an error, not a short success"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn a_request_the_upstream_saw_is_never_retried() {
    // Role ide: writes go to the local application (in role serve the guard would send
    // an unlisted POST to the ide).
    let setup = Setup::role(Role::Ide).start().await;
    let fleet = &setup.fleet;
    for method in ["POST", "GET"] {
        let before = fleet.seen().len();
        let a = send(method, &setup.url("/drop"), &[]).await;
        assert_eq!(a.status, 502, "{method}");
        assert_eq!(
            fleet.seen().len(),
            before + 1,
            "{method} reached the upstream exactly once"
        );
    }
    setup.shutdown().await;
}

#[tokio::test]
async fn fleet_pool_balances_ejects_refusing_endpoints_and_readmits_them() {
    let routes = manifest_dir();
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dead = dead_port().await;
    let srv = start(config(
        Role::Serve,
        routes.path(),
        &[a.addr, b.addr, dead],
        None,
    ))
    .await;
    let mut failures = 0;
    for _ in 0..40 {
        let r = get(&format!("http://{}/threads", srv.addr)).await;
        if r.status != 200 {
            assert_eq!(r.status, 502);
            failures += 1;
        }
    }
    assert!(
        failures <= 1,
        "the refusing endpoint is ejected after one failure: {failures}"
    );
    assert!(
        !a.seen().is_empty() && !b.seen().is_empty(),
        "both live endpoints are used"
    );
    let health = get(&format!("http://{}/healthz", srv.admin_addr))
        .await
        .json();
    let eps = health["upstreams"]["fleet"]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let dead_ep = eps
        .iter()
        .find(|e| e["address"] == dead.to_string())
        .unwrap();
    if failures == 1 {
        assert_eq!(dead_ep["reachable"], false);
        // Something listens there again: a probe re-admits it.
        let _back = tokio::net::TcpListener::bind(dead).await.unwrap();
        let mut readmitted = false;
        for _ in 0..100 {
            let h = get(&format!("http://{}/healthz", srv.admin_addr))
                .await
                .json();
            let e = h["upstreams"]["fleet"]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["address"] == dead.to_string())
                .cloned()
                .unwrap();
            if e["reachable"] == true {
                readmitted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(readmitted, "a successful probe re-admits the endpoint");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_dns_name_upstream_is_resolved() {
    // The fleet upstream by name: localhost at its port.
    let setup = Setup::role(Role::Serve)
        .config(|c| c.upstreams.fleet[0].host = "localhost".into())
        .start()
        .await;
    let mut ok = 0;
    for _ in 0..5 {
        // localhost may also resolve to ::1, where nothing listens: ejected after one try.
        if get(&setup.url("/threads")).await.status == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 4, "{ok}");
    setup.shutdown().await;
}

#[tokio::test]
async fn an_upstream_body_idle_longer_than_timeouts_idle_is_aborted() {
    use http_body_util::BodyExt;
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.idle = Duration::from_millis(300))
        .start()
        .await;
    let req = http::Request::get(setup.url("/events/sse"))
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: 1\n\n");
    // The upstream holds the second event: the proxy gives up after the idle timeout.
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap();
    assert!(rest.is_err(), "a stalled stream ends with an error");
    setup.fleet.state.release.notify_one();
    setup.shutdown().await;
}

#[tokio::test]
async fn a_client_body_idle_longer_than_timeouts_idle_gets_408() {
    let setup = Setup::role(Role::Ide)
        .config(|c| c.timeouts.idle = Duration::from_millis(300))
        .start()
        .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = setup.connect().await;
    s.write_all(b"POST /threads HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer after the idle timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    setup.shutdown().await;
}
