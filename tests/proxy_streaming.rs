//! Streaming through the proxy: SSE event by event, WebSocket tunnels, 256 MiB up and
//! down in bounded memory, HTTP/2 prior knowledge (h2c), and HTTP/2 over TLS.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::Role;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Bytes that may sit between the test's two ends: kernel socket buffers on the two
/// loopback connections (the receive side may autotune to several MiB each) plus the
/// proxy's own buffers. A proxy that buffered bodies would reach the whole 256 MiB.
const IN_FLIGHT_BOUND: u64 = 48 * MIB;

#[tokio::test]
async fn sse_events_arrive_one_by_one_while_the_upstream_is_still_streaming() {
    let setup = Setup::serve_without_ide().await;
    let req = http::Request::get(setup.url("/events/sse"))
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event arrives while the upstream holds the second")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        Bytes::from_static(b"data: 1\n\n")
    );
    setup.fleet.state.release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"data: 2\n\n"));
    setup.shutdown().await;
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let setup = Setup::serve().await;
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{}/ws/term/1", setup.srv.addr)),
    )
    .await
    .unwrap()
    .expect("websocket handshake through the proxy");
    assert_eq!(resp.headers()["x-fleetgate-target"], "ide");
    for i in 0..3 {
        let text = format!("hello {i}");
        ws.send(Message::Text(text.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::Text(text));
    }
    ws.send(Message::Binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::Binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();
    assert_eq!(setup.ide().seen().len(), 1);
    assert_eq!(setup.ide().seen()[0].headers["upgrade"], "websocket");
    drop(ws);
    setup.shutdown().await;
}

/// A WebSocket opened on a keep-alive connection that had been parked: the connection is
/// served again, and after the `101` its task hands the stream to the tunnel.
#[tokio::test]
async fn websocket_on_a_connection_that_was_parked() {
    let setup = Setup::serve().await;
    let mut s = setup.connect().await;
    get_200(&mut s, "/threads").await;
    gauge_reaches(&setup, PARKED, 1).await;
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{}/ws/term/1", setup.srv.addr), s),
    )
    .await
    .unwrap()
    .expect("websocket handshake on the parked connection");
    ws.send(Message::Text("after parking".into()))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::Text("after parking".into()));
    ws.close(None).await.unwrap();
    drop(ws);
    setup.shutdown().await;
}

#[tokio::test]
async fn a_256_mib_upload_streams_through_in_bounded_memory() {
    // Role ide: the upload is a write to the local application.
    let setup = Setup::role(Role::Ide).start().await;
    let total = 256 * MIB;
    let max_gap = Arc::new(AtomicU64::new(0));
    let body = counting_upload(total, setup.fleet.state.clone(), max_gap.clone());
    let req = http::Request::post(setup.url("/upload"))
        .body(body.boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(90), client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, total.to_string());
    let gap = max_gap.load(Ordering::Relaxed);
    println!(
        "upload: at most {:.1} MiB between client and upstream",
        gap as f64 / MIB as f64
    );
    assert!(gap < IN_FLIGHT_BOUND, "{gap} bytes in flight");
    setup.shutdown().await;
}

#[tokio::test]
async fn a_256_mib_download_streams_through_in_bounded_memory() {
    let setup = Setup::serve_without_ide().await;
    let req = http::Request::get(setup.url("/download/256"))
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let got = setup.fleet.state.client_received.clone();
    let read = async {
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                got.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), read)
        .await
        .unwrap();
    assert_eq!(got.load(Ordering::Relaxed), 256 * MIB);
    let gap = setup.fleet.state.max_gap.load(Ordering::Relaxed);
    println!(
        "download: at most {:.1} MiB between upstream and client",
        gap as f64 / MIB as f64
    );
    assert!(gap < IN_FLIGHT_BOUND, "{gap} bytes in flight");
    setup.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_h2c() {
    let setup = Setup::serve().await;
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    for (path, server) in [("/api/w1/files/x", "ide"), ("/api/w1/runs/1", "fleet")] {
        let req = http::Request::get(setup.url(path))
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .unwrap();
        let resp = h2.request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["server"], server);
    }
    let seen = setup.ide().seen();
    assert_eq!(seen[0].headers["via"], "2 test-node");
    assert!(
        seen[0].headers.contains_key("host"),
        "HTTP/1.1 upstreams get a Host header"
    );
    setup.shutdown().await;
}

/// A serve node with `[tls]` (a self-signed certificate for `localhost`), and a client
/// TLS stream to it offering `alpn` (none when `None`).
struct TlsProxy {
    setup: Setup,
    cert: rcgen::CertifiedKey,
    _dir: TempDir,
}

impl TlsProxy {
    async fn start() -> TlsProxy {
        let dir = TempDir::new("tls");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_pem = dir.write("cert.pem", &cert.cert.pem());
        let key_pem = dir.write("key.pem", &cert.key_pair.serialize_pem());
        let setup = Setup::role(Role::Serve)
            .config(|c| {
                c.tls = Some(fleetgate::config::TlsFiles {
                    cert: cert_pem,
                    key: key_pem,
                })
            })
            .start()
            .await;
        TlsProxy {
            setup,
            cert,
            _dir: dir,
        }
    }

    async fn connect(
        &self,
        alpn: Option<&[u8]>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = self.setup.connect().await;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), alpn);
        stream
    }
}

/// Over TLS, ALPN picks the protocol: `h2`, `http/1.1` (served without version
/// detection), or none offered (the first decrypted bytes say it). An idle HTTP/1.1
/// connection over TLS is parked, and serves again.
#[tokio::test]
async fn http1_over_tls_with_and_without_alpn() {
    let p = TlsProxy::start().await;
    for alpn in [Some(&b"http/1.1"[..]), None] {
        let stream = p.connect(alpn).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        for round in 0..3 {
            if round == 2 {
                gauge_reaches(&p.setup, PARKED, 1).await;
            }
            let req = http::Request::get("/threads")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "ALPN {alpn:?}");
            assert_eq!(resp.version(), http::Version::HTTP_11);
            resp.into_body().collect().await.unwrap();
        }
        // Closed by the client (it is parked no more).
        drop(sender);
        conn.await.unwrap().unwrap();
    }
    p.setup.shutdown().await;
}

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let p = TlsProxy::start().await;
    // With ALPN `h2`, and without ALPN (HTTP/2 with prior knowledge over TLS: the first
    // decrypted bytes say it).
    for alpn in [Some(&b"h2"[..]), None] {
        let stream = p.connect(alpn).await;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let port = p.setup.srv.addr.port();
        let req = http::Request::get(format!("https://localhost:{port}/threads"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "ALPN {alpn:?}");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-fleetgate-target"], "fleet");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"server\":\"fleet\""));
        drop(sender);
    }
    let seen = p.setup.fleet.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    p.setup.shutdown().await;
}
