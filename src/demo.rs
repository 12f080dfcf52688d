//! `fleetgate demo`: two sample upstreams in-process (a "fleet" replica and an "ide", each
//! answering JSON with its own name and what it received) and the proxy in role serve
//! with the shipped `routes/`, all on loopback ports. Prints ready-to-paste `curl` lines
//! whose examples are picked from the manifest at start (so they stay true when the
//! manifest changes), then runs until Ctrl-C.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Config, UpstreamUrl};
use crate::manifest::classify::NoHeaders;
use crate::manifest::{Class, Manifest, Methods, RequestParts, Rule, Segment};
use crate::server::{self, RunningServer};

/// One printed example and what it must show.
#[derive(Debug, Clone)]
pub struct Example {
    pub title: String,
    pub method: &'static str,
    /// Request target (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub expect_status: u16,
    /// `x-fleetgate-target` expected on the response, if any.
    pub expect_target: Option<&'static str>,
    /// Name of the sample upstream that must answer (`fleet` / `ide`), if any.
    pub expect_server: Option<&'static str>,
}

impl Example {
    /// The `curl` command line for this example against `base` (`http://127.0.0.1:PORT`).
    pub fn curl(&self, base: &str) -> String {
        let mut s = String::from("curl -si");
        if self.method != "GET" {
            s.push_str(&format!(" -X {}", self.method));
        }
        for (k, v) in &self.headers {
            s.push_str(&format!(" -H '{k}: {v}'"));
        }
        s.push_str(&format!(" '{base}{}'", self.target));
        s
    }
}

/// The running demo.
pub struct Demo {
    pub server: RunningServer,
    pub fleet: SocketAddr,
    pub ide: SocketAddr,
    pub examples: Vec<Example>,
}

/// `./routes` when it exists, else the `routes/` of the source checkout.
pub fn routes_dir() -> PathBuf {
    let local = PathBuf::from("routes");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("routes")
    }
}

/// Start the two sample upstreams and the proxy (role serve) on loopback ports.
pub async fn start(routes: &Path) -> Result<Demo, String> {
    let manifest = Manifest::load_dir(routes).map_err(|e| e.to_string())?;
    let fleet = sample_upstream("fleet").await?;
    let ide = sample_upstream("ide").await?;
    let node_id = "demo-serve";
    let mut config = Config {
        node_id: node_id.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes: routes.to_path_buf(),
        ..Config::default()
    };
    config.upstreams.fleet = vec![url(fleet)];
    config.upstreams.ide = Some(url(ide));
    config.timeouts.drain_delay = Duration::ZERO;
    config.timeouts.shutdown = Duration::from_secs(2);
    let server = server::start(config).await.map_err(|e| e.to_string())?;
    let examples = examples(&manifest, node_id);
    Ok(Demo {
        server,
        fleet,
        ide,
        examples,
    })
}

fn url(addr: SocketAddr) -> UpstreamUrl {
    UpstreamUrl::http(addr.ip().to_string(), addr.port())
}

/// A sample application: answers every request with JSON naming itself and echoing
/// method, path, query and headers.
async fn sample_upstream(name: &'static str) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(echo(name, &req))
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn echo(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let body = json!({
        "server": name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut out = serde_json::to_vec_pretty(&body).unwrap_or_default();
    out.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A concrete path for a pattern: parameters become `demo`, a rest parameter `a/b`.
fn sample_path(segments: &[Segment]) -> String {
    let mut p = String::new();
    for s in segments {
        p.push('/');
        match s {
            Segment::Literal(l) => p.push_str(l),
            Segment::Param(_) => p.push_str("demo"),
            Segment::Rest(_) => p.push_str("a/b"),
        }
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// Does `rule`'s pattern (ignoring `when`) match the concrete `path`?
fn pattern_matches(rule: &Rule, path: &str) -> bool {
    let mut parts = path.split('/').filter(|s| !s.is_empty()).peekable();
    for seg in &rule.segments {
        match seg {
            Segment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
            Segment::Param(_) => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Segment::Rest(_) => return parts.next().is_some(),
        }
    }
    parts.next().is_none()
}

fn gets(rule: &Rule) -> bool {
    match &rule.methods {
        Methods::Any => true,
        m => m.matches("GET"),
    }
}

/// Pick the examples from the manifest; each is checked against the classifier.
pub fn examples(m: &Manifest, node_id: &str) -> Vec<Example> {
    let classify = |path: &str| {
        m.classify(&RequestParts {
            method: "GET",
            path,
            query: None,
            headers: &NoHeaders,
        })
        .class
    };
    let candidates = |class: Class| {
        m.rules()
            .iter()
            .filter(move |r| r.class == class && gets(r) && r.when.is_empty())
            .map(|r| (r, sample_path(&r.segments)))
    };
    let mut out = Vec::new();
    if let Some((rule, path)) =
        candidates(Class::IdeOnly).find(|(_, p)| classify(p) == Class::IdeOnly)
    {
        out.push(Example {
            title: format!(
                "ide-only ({}:{} {}): served by the ide",
                rule.file, rule.line, rule.path
            ),
            method: "GET",
            target: path,
            headers: vec![],
            expect_status: 200,
            expect_target: Some("ide"),
            expect_server: Some("ide"),
        });
    }
    // A fleet-ok path that an ide-only pattern would also match: a carve-out.
    let under_ide_pattern = |r: &Rule, p: &str| {
        m.rules().iter().any(|i| {
            i.class == Class::IdeOnly && gets(i) && !std::ptr::eq(i, r) && pattern_matches(i, p)
        })
    };
    let carve_out = candidates(Class::FleetOk)
        .find(|(r, p)| classify(p) == Class::FleetOk && under_ide_pattern(r, p));
    let fleet = candidates(Class::FleetOk)
        .find(|(r, p)| classify(p) == Class::FleetOk && !under_ide_pattern(r, p))
        .map(|(r, p)| (format!("{}:{} {}", r.file, r.line, r.path), p))
        .or_else(|| {
            let p = "/demo/unlisted".to_string();
            (classify(&p) == Class::FleetOk).then(|| ("unlisted, the default class".to_string(), p))
        });
    if let Some((why, path)) = &fleet {
        out.push(Example {
            title: format!("fleet-ok ({why}): served by the fleet"),
            method: "GET",
            target: path.clone(),
            headers: vec![],
            expect_status: 200,
            expect_target: Some("fleet"),
            expect_server: Some("fleet"),
        });
    }
    if let Some((rule, path)) = carve_out {
        out.push(Example {
            title: format!(
                "carve-out ({}:{} {}): a fleet-ok read under an ide-only pattern",
                rule.file, rule.line, rule.path
            ),
            method: "GET",
            target: path,
            headers: vec![],
            expect_status: 200,
            expect_target: Some("fleet"),
            expect_server: Some("fleet"),
        });
    }
    if let Some((_, path)) = fleet {
        out.push(Example {
            title: "loop guard: a request that already passed this node gets 508".into(),
            method: "GET",
            target: path,
            headers: vec![("x-fleetgate-via".into(), node_id.into())],
            expect_status: 508,
            expect_target: None,
            expect_server: None,
        });
    }
    out
}
