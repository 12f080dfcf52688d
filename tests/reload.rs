//! Hot reload against real sockets: rules, upstreams and certificates change while
//! requests, a WebSocket and an SSE stream keep flowing; bad reloads change nothing.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::{Config, Role};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::*;
use tokio_tungstenite::tungstenite::Message;

async fn reload(setup: &Setup) -> Answer {
    send("POST", &setup.admin_url("/reload"), &[]).await
}

async fn healthz(setup: &Setup) -> serde_json::Value {
    get(&setup.admin_url("/healthz")).await.json()
}

#[tokio::test]
async fn a_reload_adds_a_rule_while_a_websocket_and_an_sse_stream_stay_open() {
    let setup = Setup::serve().await;
    let old_digest = setup.manifest_digest();
    assert_eq!(get(&setup.url("/reports/1")).await.server(), "fleet");

    // A WebSocket to the ide and an SSE stream from the fleet, opened before the reload.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/term/1", setup.srv.addr))
            .await
            .expect("websocket through the proxy");
    let req = http::Request::get(setup.url("/events/sse"))
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let mut sse = client().request(req).await.unwrap().into_body();
    let first = sse.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"data: 1\n\n"));

    setup.routes.write("20-reports.toml", REPORTS_RULE);
    let a = reload(&setup).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let j = a.json();
    assert_ne!(j["digest"], old_digest.as_str());
    assert_eq!(j["digest"], setup.manifest_digest().as_str());
    assert_eq!(j["manifest_changed"], true);

    // New requests follow the new rule.
    let a = get(&setup.url("/reports/1")).await;
    assert_eq!(
        (a.server().as_str(), a.header("x-fleetgate-target")),
        ("ide", Some("ide"))
    );

    // The streams opened before it are untouched.
    ws.send(Message::Text("after the reload".into()))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::Text("after the reload".into()));
    setup.fleet.state.release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), sse.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"data: 2\n\n"));

    let h = healthz(&setup).await;
    assert_eq!(h["manifest"]["digest"], setup.manifest_digest().as_str());
    assert_eq!(h["manifest"]["serial"], 2);
    assert!(h["last_reload_error"].is_null(), "{h}");
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_reload_total{result="ok"} 1"#),
        "{m}"
    );
    let info = format!(
        "fleetgate_manifest_info{{digest=\"{}\"}} 1",
        setup.manifest_digest()
    );
    assert!(m.contains(&info), "{m}");
    assert!(!m.contains(&old_digest), "one manifest_info series: {m}");
    ws.close(None).await.unwrap();
    setup.shutdown().await;
}

#[tokio::test]
async fn a_bad_manifest_is_refused_and_the_old_rules_keep_serving() {
    let setup = Setup::serve().await;
    let digest = setup.manifest_digest();
    setup.routes.write(
        "30-broken.toml",
        "[[rule]]\npath = \"/api/{ws}/oops/{\"\nclass = \"ide-only\"\nwhy = \"broken\"\n",
    );
    let a = reload(&setup).await;
    assert_eq!(a.status, 422);
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert!(text.contains("30-broken.toml:2"), "file:line in {text}");
    assert_eq!(
        setup.manifest_digest(),
        digest,
        "the old snapshot stays live"
    );
    assert_eq!(get(&setup.url("/api/w1/files/a")).await.server(), "ide");
    assert_eq!(get(&setup.url("/api/w1/runs/7")).await.server(), "fleet");

    let h = healthz(&setup).await;
    let err = h["last_reload_error"]["message"].as_str().unwrap();
    assert!(err.contains("30-broken.toml:2"), "{h}");
    let m = metrics(&setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_reload_total{result="error"} 1"#),
        "{m}"
    );

    // Fixed, the next reload succeeds and clears the error.
    std::fs::remove_file(setup.routes.path().join("30-broken.toml")).unwrap();
    assert_eq!(reload(&setup).await.status, 200);
    assert!(healthz(&setup).await["last_reload_error"].is_null());
    setup.shutdown().await;
}

/// A proxy started from a configuration file, so that a reload re-reads it.
struct FromFile {
    dir: TempDir,
    setup: Setup,
}

fn config_text(routes: &std::path::Path, fleet: &[std::net::SocketAddr], extra: &str) -> String {
    let fleet: Vec<String> = fleet.iter().map(|a| format!("\"http://{a}\"")).collect();
    format!(
        "node_id = \"reload-1\"\nrole = \"serve\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         routes = \"{}\"\naccess_log = false\n{extra}\n[upstreams]\nfleet = [{}]\n[timeouts]\ndrain_delay = 0\nshutdown = 2000\n",
        routes.display(),
        fleet.join(", ")
    )
}

async fn from_file(fleet: &[std::net::SocketAddr], extra: &str) -> FromFile {
    let dir = TempDir::new("reload-cfg");
    let routes = manifest_dir();
    let path = dir.write("fleetgate.toml", &config_text(routes.path(), fleet, extra));
    let config = Config::load_with(Some(&path), &|_| None).expect("valid config");
    let srv = start(config).await;
    let fleet = upstream("unused").await;
    FromFile {
        dir,
        setup: Setup {
            routes,
            fleet,
            ide: None,
            srv,
        },
    }
}

impl FromFile {
    fn rewrite(&self, fleet: &[std::net::SocketAddr], extra: &str) {
        self.dir.write(
            "fleetgate.toml",
            &config_text(self.setup.routes.path(), fleet, extra),
        );
    }
}

#[tokio::test]
async fn endpoints_added_and_removed_by_reload_under_a_request_loop_lose_nothing() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let f = from_file(&[a.addr], "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| request_loop(f.setup.url("/threads"), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Add b: it starts taking traffic.
    f.rewrite(&[a.addr, b.addr], "");
    assert_eq!(reload(&f.setup).await.status, 200);
    let mut waited = 0;
    while b.seen().is_empty() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(!b.seen().is_empty(), "the added endpoint takes traffic");

    // Remove a: it gets no new requests.
    f.rewrite(&[b.addr], "");
    assert_eq!(reload(&f.setup).await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a_after = a.seen().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let total = requests_answered(loops).await;
    assert!(total > 20, "the loop ran ({total} requests)");
    assert_eq!(
        a.seen().len(),
        a_after,
        "the removed endpoint gets no new requests"
    );
    let h = healthz(&f.setup).await;
    assert_eq!(
        h["upstreams"]["fleet"]["configured"][0],
        format!("http://{}", b.addr)
    );
    f.setup.shutdown().await;
}

#[tokio::test]
async fn a_bad_config_key_and_a_restart_only_change_are_refused() {
    let fleet = upstream("fleet").await;
    let f = from_file(&[fleet.addr], "").await;
    let digest = f.setup.manifest_digest();

    f.rewrite(&[fleet.addr], "bogus_key = 1");
    let a = reload(&f.setup).await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status, 422, "{text}");
    assert!(
        text.contains("fleetgate.toml:7") && text.contains("bogus_key"),
        "{text}"
    );

    f.rewrite(&[fleet.addr], "[timeouts_typo]\nconnect = 5");
    assert_eq!(reload(&f.setup).await.status, 422);

    // role needs a restart: the whole reload is refused, nothing else applied either.
    let other = upstream("other").await;
    let text = config_text(f.setup.routes.path(), &[other.addr], "")
        .replace("role = \"serve\"", "role = \"ide\"");
    f.dir.write("fleetgate.toml", &text);
    let a = reload(&f.setup).await;
    let body = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status, 422, "{body}");
    assert!(body.contains("role") && body.contains("restart"), "{body}");
    assert_eq!(
        get(&f.setup.url("/threads")).await.server(),
        "fleet",
        "old upstreams still serve"
    );
    assert_eq!(f.setup.manifest_digest(), digest);
    let m = metrics(&f.setup.srv).await;
    assert!(
        m.contains(r#"fleetgate_reload_total{result="error"} 3"#),
        "{m}"
    );
    f.setup.shutdown().await;
}

#[tokio::test]
async fn fifty_reloads_under_a_request_loop_fail_no_request() {
    let setup = Setup::serve().await;
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = ["/threads", "/api/w1/files/x", "/reports/9"]
        .into_iter()
        .map(|p| request_loop(setup.url(p), stop.clone()))
        .collect();
    let reloads = AtomicUsize::new(0);
    for i in 0..50 {
        if i % 2 == 0 {
            setup.routes.write("20-reports.toml", REPORTS_RULE);
        } else {
            std::fs::remove_file(setup.routes.path().join("20-reports.toml")).unwrap();
        }
        let a = reload(&setup).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        reloads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = requests_answered(loops).await;
    assert!(total >= 50, "the loops ran ({total} requests)");
    assert_eq!(healthz(&setup).await["manifest"]["serial"], 51);
    setup.shutdown().await;
}

#[tokio::test]
async fn the_file_watch_reloads_a_changed_manifest() {
    let setup = Setup::role(Role::Serve)
        .with_ide()
        .config(|c| {
            c.reload.watch = true;
            c.reload.watch_interval = Duration::from_millis(100);
        })
        .start()
        .await;
    assert_eq!(get(&setup.url("/reports/1")).await.server(), "fleet");
    setup.routes.write("20-reports.toml", REPORTS_RULE);
    let mut server = String::new();
    for _ in 0..100 {
        server = get(&setup.url("/reports/1")).await.server();
        if server == "ide" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server, "ide", "the watch picked up the new rule");
    // A broken file is tried once and refused; the rule stays.
    setup
        .routes
        .write("30-broken.toml", "[[rule]]\npath = \"/x/{\"\n");
    for _ in 0..100 {
        if !healthz(&setup).await["last_reload_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = healthz(&setup).await;
    assert!(
        h["last_reload_error"]["message"]
            .as_str()
            .unwrap()
            .contains("30-broken.toml"),
        "{h}"
    );
    assert_eq!(get(&setup.url("/reports/1")).await.server(), "ide");
    setup.shutdown().await;
}

/// A TLS client that trusts `ca` (self-signed leaf) and speaks HTTP/1.1.
async fn tls_client(
    setup: &Setup,
    trust: &[&rcgen::CertifiedKey],
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots.add(c.cert.der().clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector
        .connect(name, setup.connect().await)
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, presented)
}

async fn tls_get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let req = http::Request::get("/threads")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_clients_while_open_ones_keep_working() {
    let dir = TempDir::new("tls-rotate");
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.write("cert.pem", &first.cert.pem());
    let key = dir.write("key.pem", &first.key_pair.serialize_pem());
    let (c, k) = (cert.clone(), key.clone());
    let setup = Setup::role(Role::Serve)
        .config(move |cfg| cfg.tls = Some(fleetgate::config::TlsFiles { cert: c, key: k }))
        .start()
        .await;

    let (mut open, presented) = tls_client(&setup, &[&first]).await;
    assert_eq!(presented, first.cert.der().to_vec());
    assert_eq!(tls_get(&mut open).await, 200);

    // A missing certificate is refused; the old one stays.
    std::fs::remove_file(&cert).unwrap();
    let a = reload(&setup).await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status, 422, "{text}");
    assert!(
        text.contains("tls.cert") && text.contains("cert.pem"),
        "{text}"
    );
    let (_, presented) = tls_client(&setup, &[&first]).await;
    assert_eq!(presented, first.cert.der().to_vec());

    // Rotated: the next handshake gets the new certificate.
    dir.write("cert.pem", &second.cert.pem());
    dir.write("key.pem", &second.key_pair.serialize_pem());
    assert_eq!(reload(&setup).await.status, 200);
    let (mut fresh, presented) = tls_client(&setup, &[&first, &second]).await;
    assert_eq!(
        presented,
        second.cert.der().to_vec(),
        "a new client sees the new certificate"
    );
    assert_eq!(tls_get(&mut fresh).await, 200);
    assert_eq!(
        tls_get(&mut open).await,
        200,
        "the open connection keeps working"
    );
    drop((open, fresh));
    setup.shutdown().await;
}

#[tokio::test]
async fn a_reload_resizes_a_bulkhead_and_keeps_the_slots_held() {
    let fleet = upstream("fleet").await;
    let one = "[admission]\nmax_inflight = 1\nqueue_per_tenant = 0\n";
    let f = from_file(&[fleet.addr], one).await;
    let hold = f.setup.url("/threads/hold");
    let held = tokio::spawn(async move { get(&hold).await });
    while fleet.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = get(&f.setup.url("/threads")).await;
    assert_eq!(a.status, 503, "one slot, taken");

    f.rewrite(
        &[fleet.addr],
        "[admission]\nmax_inflight = 2\nqueue_per_tenant = 0\n",
    );
    assert_eq!(reload(&f.setup).await.status, 200);
    assert_eq!(
        get(&f.setup.url("/threads")).await.status,
        200,
        "the second slot"
    );
    let j = get(&f.setup.admin_url("/admission")).await.json();
    assert_eq!(j["fleet"]["max_inflight"], 2, "{j}");
    assert_eq!(
        j["fleet"]["inflight"], 1,
        "the held request kept its slot: {j}"
    );

    // Disabled by reload: nothing is shed, the held request still finishes.
    f.rewrite(&[fleet.addr], "[admission]\nmax_inflight = 0\n");
    assert_eq!(reload(&f.setup).await.status, 200);
    assert!(get(&f.setup.admin_url("/admission")).await.json()["fleet"].is_null());
    fleet.state.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    f.setup.shutdown().await;
}

#[tokio::test]
async fn guard_settings_change_by_reload() {
    let fleet = upstream("fleet").await;
    let f = from_file(&[fleet.addr], "").await;
    // No ide upstream: an unlisted write has nowhere to go.
    assert_eq!(
        send("POST", &f.setup.url("/exports/1"), &[]).await.status,
        421
    );
    f.rewrite(
        &[fleet.addr],
        "[guard]\nunlisted_writes = \"refuse\"\nretry_after = 7\n",
    );
    assert_eq!(reload(&f.setup).await.status, 200);
    let a = send("POST", &f.setup.url("/exports/1"), &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("x-fleetgate-guard"), Some("unlisted-write"));
    assert_eq!(a.header("retry-after"), Some("7"));
    // The switch from the file applies when the file's value changes.
    f.rewrite(&[fleet.addr], "[guard]\nsuper_read_only = true\n");
    assert_eq!(reload(&f.setup).await.status, 200);
    let a = send("POST", &f.setup.url("/exports/1"), &[]).await;
    assert_eq!(a.header("x-fleetgate-guard"), Some("super-read-only"));
    assert_eq!(
        get(&f.setup.url("/exports/1")).await.status,
        200,
        "reads flow"
    );
    f.setup.shutdown().await;
}
