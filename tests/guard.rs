//! The super_read_only guard through real sockets: unlisted writes go to the ide (or are
//! refused), declared fleet writes reach the fleet, the runtime switch refuses every
//! write while reads flow, and the switch survives a reload.

mod support;

use fleetgate::config::{Role, UnlistedWrites};
use http_body_util::BodyExt;
use support::*;

/// Rules for writes, next to the test manifest's (`/api/{ws}/…` ide-only, runs fleet-ok).
const WRITES: &str = r#"
[[rule]]
path = "/threads/{*rest}"
class = "fleet-ok"
writes = "fleet"
why = "threads are rows; any replica may write them"

[[rule]]
methods = ["POST"]
path = "/search"
class = "fleet-ok"
read_only_safe = true
why = "a query in a POST body; it writes nothing"

[[rule]]
path = "/accounts/{id}"
class = "fleet-ok"
why = "read by any replica; writes were never declared fleet-safe"
"#;

async fn with_writes(setup: Setup) -> Setup {
    setup.routes.write("20-writes.toml", WRITES);
    let a = send("POST", &setup.admin_url("/reload"), &[]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    setup
}

/// (status, who served, x-fleetgate-target, x-fleetgate-guard)
async fn outcome(setup: &Setup, method: &str, path: &str) -> (u16, String, String, String) {
    let a = send(method, &setup.url(path), &[]).await;
    let h = |n: &str| a.header(n).unwrap_or("-").to_string();
    let server = if a.status == 200 {
        a.server()
    } else {
        "-".into()
    };
    (
        a.status.as_u16(),
        server,
        h("x-fleetgate-target"),
        h("x-fleetgate-guard"),
    )
}

fn row(status: u16, server: &str, target: &str, guard: &str) -> (u16, String, String, String) {
    (status, server.into(), target.into(), guard.into())
}

#[tokio::test]
async fn role_serve_sends_unlisted_writes_to_the_ide() {
    let setup = with_writes(Setup::serve().await).await;
    assert_eq!(
        outcome(&setup, "GET", "/unknown/1").await,
        row(200, "fleet", "fleet", "-")
    );
    assert_eq!(
        outcome(&setup, "POST", "/unknown/1").await,
        row(200, "ide", "ide", "-")
    );
    assert_eq!(
        outcome(&setup, "DELETE", "/accounts/7").await,
        row(200, "ide", "ide", "-")
    );
    assert_eq!(
        outcome(&setup, "GET", "/accounts/7").await,
        row(200, "fleet", "fleet", "-")
    );
    assert_eq!(
        outcome(&setup, "POST", "/threads/9").await,
        row(200, "fleet", "fleet", "-")
    );
    assert_eq!(
        outcome(&setup, "POST", "/search").await,
        row(200, "fleet", "fleet", "-")
    );
    assert_eq!(
        outcome(&setup, "POST", "/api/w1/files/a").await,
        row(200, "ide", "ide", "-")
    );
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_guard_total{action="redirect",reason="unlisted-write"} 2"#),
        "{m}"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn unlisted_writes_can_be_refused_and_without_an_ide_they_are_misdirected() {
    let setup = with_writes(
        Setup::role(Role::Serve)
            .with_ide()
            .config(|c| c.guard.unlisted_writes = UnlistedWrites::Refuse)
            .start()
            .await,
    )
    .await;
    let a = send("POST", &setup.url("/unknown/1"), &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("x-fleetgate-guard"), Some("unlisted-write"));
    assert_eq!(a.header("retry-after"), Some("5"));
    assert_eq!(outcome(&setup, "POST", "/threads/9").await.0, 200);
    assert!(setup.fleet.seen().iter().all(|s| s.path != "/unknown/1"));
    assert!(setup.ide().seen().is_empty(), "refused, not redirected");
    setup.shutdown().await;

    let setup = with_writes(Setup::serve_without_ide().await).await;
    let a = send("PUT", &setup.url("/unknown/1"), &[]).await;
    assert_eq!(a.status, 421);
    assert_eq!(a.header("x-fleetgate-required-role"), Some("ide"));
    assert_eq!(outcome(&setup, "GET", "/unknown/1").await.0, 200);
    setup.shutdown().await;
}

#[tokio::test]
async fn other_roles_write_locally() {
    let setup = with_writes(Setup::role(Role::Ide).start().await).await;
    assert_eq!(
        outcome(&setup, "POST", "/unknown/1").await,
        row(200, "fleet", "local", "-")
    );
    setup.shutdown().await;
}

async fn switch(setup: &Setup, on: bool) -> Answer {
    let body = format!("{{\"enabled\": {on}}}");
    let req = http::Request::post(setup.admin_url("/super-read-only"))
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn the_switch_refuses_every_write_keeps_reads_and_survives_a_reload() {
    let setup = with_writes(Setup::serve().await).await;
    let healthz = || async { get(&setup.admin_url("/healthz")).await.json() };
    assert_eq!(healthz().await["super_read_only"], false);

    // Reads run throughout: flipping the switch never fails one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = tokio::spawn({
        let (url, stop) = (setup.url("/threads/9"), stop.clone());
        async move {
            let (mut ok, mut bad) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if get(&url).await.status == 200 {
                    ok += 1;
                } else {
                    bad += 1;
                }
            }
            (ok, bad)
        }
    });
    let a = switch(&setup, true).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["super_read_only"], true);
    for (method, path) in [
        ("POST", "/threads/9"),
        ("POST", "/api/w1/files/a"),
        ("DELETE", "/unknown/1"),
    ] {
        let a = send(method, &setup.url(path), &[]).await;
        assert_eq!(a.status, 503, "{method} {path}");
        assert_eq!(a.header("x-fleetgate-guard"), Some("super-read-only"));
        assert!(a.header("retry-after").is_some());
    }
    assert_eq!(
        outcome(&setup, "GET", "/threads/9").await.0,
        200,
        "reads flow"
    );
    assert_eq!(outcome(&setup, "GET", "/api/w1/files/a").await.1, "ide");
    assert_eq!(
        outcome(&setup, "POST", "/search").await.0,
        200,
        "read_only_safe passes"
    );
    assert_eq!(healthz().await["super_read_only"], true);
    let m = metrics(&setup.srv).await;
    assert!(m.contains("fleetgate_super_read_only 1"), "{m}");
    assert!(
        m.contains(r#"fleetgate_guard_total{action="refuse",reason="super-read-only"} 3"#),
        "{m}"
    );

    // A reload does not undo the operator's switch.
    assert_eq!(
        send("POST", &setup.admin_url("/reload"), &[]).await.status,
        200
    );
    assert_eq!(healthz().await["super_read_only"], true);
    assert_eq!(
        send("POST", &setup.url("/threads/9"), &[]).await.status,
        503
    );

    assert_eq!(switch(&setup, false).await.status, 200);
    assert_eq!(outcome(&setup, "POST", "/threads/9").await.0, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, bad) = reads.await.unwrap();
    assert!(
        ok > 0 && bad == 0,
        "reads during the flips: {ok} ok, {bad} failed"
    );
    assert!(metrics(&setup.srv)
        .await
        .contains("fleetgate_super_read_only 0"));
    // A malformed body changes nothing.
    let req = send("POST", &setup.admin_url("/super-read-only"), &[]).await;
    assert_eq!(req.status, 400);
    assert_eq!(healthz().await["super_read_only"], false);
    setup.shutdown().await;
}

#[tokio::test]
async fn unlisted_requests_fill_the_runtime_drift_table_that_drift_reads() {
    let setup = Setup::serve().await;
    for path in ["/exports/e1", "/exports/e2", "/exports/e3"] {
        assert_eq!(get(&setup.url(path)).await.status, 200);
    }
    assert_eq!(
        send("POST", &setup.url("/exports/e9"), &[]).await.status,
        200
    );
    assert_eq!(
        get(&setup.url("/api/w1/files/a")).await.status,
        200,
        "listed: not counted"
    );
    let a = get(&setup.admin_url("/routes/unlisted")).await;
    let j = a.json();
    assert_eq!(j["total"]["read"], 3, "{j}");
    assert_eq!(j["total"]["write"], 1, "{j}");
    let top = &j["routes"][0];
    assert_eq!(
        (top["method"].as_str(), top["path"].as_str()),
        (Some("GET"), Some("/exports/{}"))
    );
    assert_eq!(top["count"], 3);
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_unlisted_total{method_kind="read"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fleetgate_unlisted_total{method_kind="write"} 1"#),
        "{m}"
    );

    // The captured table is extra input for the drift check: the routes the manifest
    // misses are named.
    let dir = TempDir::new("unlisted");
    let captured = dir.write("unlisted.json", std::str::from_utf8(&a.body).unwrap());
    let listed = dir.write("app-routes.txt", "GET /api/{ws}/files/{*path}\n");
    // A reviewed lock that knows the listed route only.
    let lock = dir.write("app-routes.lock", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["routes", "drift", "--routes"])
        .arg(setup.routes.path())
        .arg("--app-routes")
        .arg(&listed)
        .arg("--app-routes")
        .arg(&captured)
        .arg("--lock")
        .arg(&lock)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("unlisted.json") && text.contains("/exports/{p1}"),
        "{text}"
    );
    setup.shutdown().await;
}
