//! TLS to upstreams, against real TLS upstreams (hyper over tokio-rustls) with
//! certificates made here by private CAs: the configured CA bundle is trusted (and only
//! it), names and IP addresses are checked, a failed handshake is `502` counted as kind
//! `tls`, a client certificate is presented for mutual TLS, and a reload that swaps the CA
//! bundle applies to the next request without reusing connections made under the old one.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::{Role, TlsFiles, UpstreamUrl};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::net::TcpListener;

/// A private certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate issued by a [`Ca`], with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (IP literals become IP addresses in the certificate).
    fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .unwrap()
            .unwrap()
    }
}

/// What a TLS upstream saw of one completed handshake.
#[derive(Debug, Clone)]
struct Hello {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    client_cert: bool,
}

/// An HTTP/1.1 upstream over TLS. Its server configuration can be replaced; each new
/// connection uses the current one.
struct TlsUpstream {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    handshakes: Arc<Mutex<Vec<Hello>>>,
    failed: Arc<AtomicUsize>,
}

fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder.with_single_cert(leaf.chain(), leaf.key()).unwrap();
    // Offers h2 too: what gets negotiated shows what fleetgate offered.
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(sc)
}

impl TlsUpstream {
    /// Listen on 127.0.0.1 (and, when `also_v6`, on [::1] with the same port if it can).
    async fn start(config: Arc<rustls::ServerConfig>, also_v6: bool) -> TlsUpstream {
        let (v4, v6) = bind_pair(also_v6).await;
        let up = TlsUpstream {
            addr: v4.local_addr().unwrap(),
            config: Arc::new(Mutex::new(config)),
            handshakes: Arc::new(Mutex::new(Vec::new())),
            failed: Arc::new(AtomicUsize::new(0)),
        };
        for listener in std::iter::once(v4).chain(v6) {
            let (config, handshakes, failed) =
                (up.config.clone(), up.handshakes.clone(), up.failed.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.lock().unwrap().clone());
                    let (handshakes, failed) = (handshakes.clone(), failed.clone());
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        };
                        let conn = tls.get_ref().1;
                        handshakes.lock().unwrap().push(Hello {
                            sni: conn.server_name().map(String::from),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                            client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                        });
                        let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                            let body = serde_json::json!({
                                "server": "tls-upstream",
                                "path": req.uri().path(),
                            });
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body.to_string()),
                            )))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        }
        up
    }

    fn set_config(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.lock().unwrap() = config;
    }

    fn handshakes(&self) -> Vec<Hello> {
        self.handshakes.lock().unwrap().clone()
    }

    fn url(&self, host: &str) -> UpstreamUrl {
        UpstreamUrl::parse(&format!("https://{host}:{}", self.addr.port())).unwrap()
    }
}

/// A listener on 127.0.0.1 and, when asked and possible, one on [::1] with the same port
/// (so that a name resolving to both reaches the same upstream).
async fn bind_pair(also_v6: bool) -> (TcpListener, Option<TcpListener>) {
    for _ in 0..20 {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        if !also_v6 {
            return (v4, None);
        }
        let port = v4.local_addr().unwrap().port();
        match TcpListener::bind(("::1", port)).await {
            Ok(v6) => return (v4, Some(v6)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => return (v4, None), // no IPv6 loopback here
        }
    }
    panic!("no port free on both 127.0.0.1 and [::1]");
}

/// fleetgate (role serve) whose fleet pool is `fleet`, with `tweak` applied.
async fn fleetgate(
    fleet: UpstreamUrl,
    tweak: impl FnOnce(&mut fleetgate::config::Config) + Send + 'static,
) -> Setup {
    Setup::role(Role::Serve)
        .config(move |c| {
            c.upstreams.fleet = vec![fleet];
            c.timeouts.connect = Duration::from_secs(5);
            tweak(c);
        })
        .start()
        .await
}

/// `fleetgate_upstream_errors_total{upstream="fleet",kind}`.
async fn fleet_errors(setup: &Setup, kind: &str) -> u64 {
    let text = metrics(&setup.srv).await;
    text.lines()
        .filter(|l| l.starts_with("fleetgate_upstream_errors_total{"))
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")) && l.contains("upstream=\"fleet\""))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
        .sum()
}

async fn reload(setup: &Setup) -> Answer {
    send("POST", &setup.admin_url("/reload"), &[]).await
}

#[tokio::test]
async fn an_ip_endpoint_is_reached_over_tls_with_the_configured_ca() {
    let dir = TempDir::new("up-tls-ok");
    let ca = Ca::new("fleetgate test CA");
    let up = TlsUpstream::start(server_config(&ca.issue(&["127.0.0.1"]), None), false).await;
    let ca_file = dir.write("ca.pem", &ca.pem());
    let setup = fleetgate(up.url("127.0.0.1"), move |c| {
        c.upstreams.ca_file = Some(ca_file)
    })
    .await;

    let a = get(&setup.url("/threads")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.server(), "tls-upstream");
    assert_eq!(a.json()["path"], "/threads");
    let hellos = up.handshakes();
    assert_eq!(hellos.len(), 1, "{hellos:?}");
    assert_eq!(
        hellos[0].alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "fleetgate offers http/1.1 only"
    );
    assert_eq!(hellos[0].sni, None, "no SNI for an IP address");
    assert!(!hellos[0].client_cert);
    assert_eq!(fleet_errors(&setup, "tls").await, 0);
    setup.shutdown().await;
}

#[tokio::test]
async fn a_dns_name_is_sent_as_sni_and_checked() {
    let dir = TempDir::new("up-tls-dns");
    let ca = Ca::new("fleetgate test CA");
    let up = TlsUpstream::start(server_config(&ca.issue(&["localhost"]), None), true).await;
    let ca_file = dir.write("ca.pem", &ca.pem());
    let setup = fleetgate(up.url("localhost"), move |c| {
        c.upstreams.ca_file = Some(ca_file)
    })
    .await;
    let a = get(&setup.url("/threads")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.server(), "tls-upstream");
    let hellos = up.handshakes();
    assert_eq!(hellos[0].sni.as_deref(), Some("localhost"), "{hellos:?}");
    setup.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_a_502_of_kind_tls() {
    let dir = TempDir::new("up-tls-bad");
    let ca = Ca::new("fleetgate test CA");
    let other = Ca::new("another CA");
    let up = TlsUpstream::start(server_config(&ca.issue(&["127.0.0.1"]), None), false).await;
    // A certificate for a name, not for the address fleetgate connects to.
    let misnamed = TlsUpstream::start(server_config(&ca.issue(&["localhost"]), None), false).await;
    let right = dir.write("ca.pem", &ca.pem());
    let wrong = dir.write("other.pem", &other.pem());

    let cases: Vec<(&str, UpstreamUrl, Option<PathBuf>)> = vec![
        ("system roots only", up.url("127.0.0.1"), None),
        ("another CA", up.url("127.0.0.1"), Some(wrong)),
        ("name mismatch", misnamed.url("127.0.0.1"), Some(right)),
    ];
    for (case, url, ca_file) in cases {
        let setup = fleetgate(url, move |c| c.upstreams.ca_file = ca_file).await;
        for n in 1..=2 {
            let a = get(&setup.url("/threads")).await;
            assert_eq!(a.status, 502, "{case}: {:?}", a.body);
            assert!(a.header("retry-after").is_some(), "{case}");
            assert_eq!(fleet_errors(&setup, "tls").await, n, "{case}");
        }
        // A handshake failure does not eject the endpoint: nothing is failed fast.
        assert_eq!(fleet_errors(&setup, "no_endpoint").await, 0, "{case}");
        assert_eq!(fleet_errors(&setup, "connect").await, 0, "{case}");
        setup.shutdown().await;
    }
    assert!(up.handshakes().is_empty() && misnamed.handshakes().is_empty());
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    let dir = TempDir::new("up-tls-mtls");
    let ca = Ca::new("fleetgate test CA");
    let clients = Ca::new("client CA");
    let up = TlsUpstream::start(
        server_config(&ca.issue(&["127.0.0.1"]), Some(&clients)),
        false,
    )
    .await;
    let ca_file = dir.write("ca.pem", &ca.pem());
    let client = clients.issue(&["fleetgate.test"]);
    let files = TlsFiles {
        cert: dir.write("client.pem", &client.cert_pem),
        key: dir.write("client.key", &client.key_pem),
    };

    let (ca2, files2) = (ca_file.clone(), files.clone());
    let setup = fleetgate(up.url("127.0.0.1"), move |c| {
        c.upstreams.ca_file = Some(ca2);
        c.upstreams.client_auth = Some(files2);
    })
    .await;
    let a = get(&setup.url("/threads")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(up.handshakes()[0].client_cert, "the upstream saw it");
    setup.shutdown().await;

    // Without one the upstream refuses the connection.
    let setup = fleetgate(up.url("127.0.0.1"), move |c| {
        c.upstreams.ca_file = Some(ca_file)
    })
    .await;
    let a = get(&setup.url("/threads")).await;
    assert_eq!(a.status, 502, "{:?}", a.body);
    assert_eq!(up.handshakes().len(), 1, "no second handshake completed");
    setup.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_swaps_the_ca_bundle_applies_to_the_next_request_on_new_connections() {
    let dir = TempDir::new("up-tls-reload");
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let up = TlsUpstream::start(server_config(&first.issue(&["127.0.0.1"]), None), false).await;
    let ca_file = dir.write("ca.pem", &first.pem());
    let ca = ca_file.clone();
    let setup = fleetgate(up.url("127.0.0.1"), move |c| c.upstreams.ca_file = Some(ca)).await;
    let settle = || tokio::time::sleep(Duration::from_millis(100));

    assert_eq!(get(&setup.url("/a")).await.status, 200);
    settle().await;
    // A reload that changes nothing keeps the pooled connection.
    assert_eq!(reload(&setup).await.status, 200);
    assert_eq!(get(&setup.url("/b")).await.status, 200);
    assert_eq!(
        up.handshakes().len(),
        1,
        "the keep-alive connection was reused"
    );

    // Trust only the second CA: the open connection (verified under the first) must not
    // carry the next request; a new handshake fails.
    std::fs::write(&ca_file, second.pem()).unwrap();
    assert_eq!(reload(&setup).await.status, 200);
    let a = get(&setup.url("/c")).await;
    assert_eq!(a.status, 502, "{:?}", a.body);
    assert_eq!(fleet_errors(&setup, "tls").await, 1);

    // The upstream moves to a certificate of the second CA: served again.
    up.set_config(server_config(&second.issue(&["127.0.0.1"]), None));
    let a = get(&setup.url("/d")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(up.handshakes().len(), 2);

    // A bundle that is no PEM is refused on reload; the live settings keep serving.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let r = reload(&setup).await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(
        text.contains("upstreams.ca_file") && text.contains(&ca_file.display().to_string()),
        "{text}"
    );
    settle().await;
    assert_eq!(get(&setup.url("/e")).await.status, 200);
    setup.shutdown().await;
}

#[tokio::test]
async fn an_endpoints_scheme_changes_on_reload() {
    // Configuration read from a file, so that a reload reads the new scheme.
    let dir = TempDir::new("up-tls-scheme");
    let ca = Ca::new("fleetgate test CA");
    let up = TlsUpstream::start(server_config(&ca.issue(&["127.0.0.1"]), None), false).await;
    let plain = upstream("plain").await;
    let routes = manifest_dir();
    dir.write("ca.pem", &ca.pem());
    let write = |fleet: String| {
        dir.write(
            "fleetgate.toml",
            &format!(
                "node_id = \"n1\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 routes = {:?}\naccess_log = false\n\
                 [upstreams]\nfleet = [\"{fleet}\"]\nca_file = \"ca.pem\"\n\
                 [timeouts]\ndrain_delay = 0\n",
                routes.path().display().to_string()
            ),
        )
    };
    let file = write(plain.url().to_string());
    let config = fleetgate::config::Config::load_with(Some(&file), &|_| None).unwrap();
    let srv = start(config).await;
    let url = |p: &str| format!("http://{}{p}", srv.addr);
    let admin = format!("http://{}/reload", srv.admin_addr);

    assert_eq!(get(&url("/x")).await.server(), "plain");
    write(up.url("127.0.0.1").to_string());
    assert_eq!(send("POST", &admin, &[]).await.status, 200);
    assert_eq!(get(&url("/x")).await.server(), "tls-upstream");
    write(plain.url().to_string());
    assert_eq!(send("POST", &admin, &[]).await.status, 200);
    assert_eq!(get(&url("/x")).await.server(), "plain");
    srv.shutdown().await;
}

#[test]
fn a_bad_ca_file_exits_78_naming_file_line_and_key() {
    let dir = TempDir::new("up-tls-cli");
    let routes = manifest_dir();
    let cfg = dir.write(
        "fleetgate.toml",
        &format!(
            "routes = {:?}\n[upstreams]\nfleet = [\"https://127.0.0.1:1\"]\nca_file = \"missing-ca.pem\"\n",
            routes.path().display().to_string()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env_remove("FLEETGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let resolved = dir.path().join("missing-ca.pem").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{}:4: error: key `upstreams.ca_file`",
            cfg.display()
        )) && stderr.contains(&resolved),
        "{stderr}"
    );
}

#[test]
fn an_https_upstream_without_ca_file_needs_system_roots() {
    let dir = TempDir::new("up-tls-noroots");
    let routes = manifest_dir();
    let empty = dir.write("empty-bundle.pem", "");
    let cfg = dir.write(
        "fleetgate.toml",
        &format!(
            "routes = {:?}\n[upstreams]\nfleet = [\"https://127.0.0.1:1\"]\n",
            routes.path().display().to_string()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env_remove("FLEETGATE_CONFIG")
        .env_remove("SSL_CERT_DIR")
        // The system store, as rustls-native-certs reads it, is this empty file.
        .env("SSL_CERT_FILE", &empty)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3: error: key `upstreams.fleet`",
            cfg.display()
        )) && stderr.contains("upstreams.ca_file"),
        "{stderr}"
    );
}
