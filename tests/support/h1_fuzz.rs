//! The body of the `h1_request` fuzz target, shared with its seed replay
//! (`tests/fuzz_h1.rs`): raw client bytes go through a real fleetgate (in-process, on
//! loopback) to the byte-recording upstream, and what the upstream framed is checked
//! against what the client's bytes frame.
//!
//! The invariant: every request the upstream receives is one the client's bytes framed,
//! in order (same method, same decoded body), at most as many as the client sent, each
//! with clean framing (one `Host`, one length or `chunked`, no bare LF). The client's
//! bytes are framed here the way RFC 9112 lets a recipient frame them: `Transfer-Encoding:
//! chunked` overrides `Content-Length`, and then nothing after that request is trusted.
//! Anything else that is ambiguous ends the client's sequence.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

#[path = "recording.rs"]
#[allow(dead_code)]
mod recording;
use recording::{Recorded, RecordingUpstream};

const MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"

[[rule]]
path = "/{*rest}"
class = "fleet-ok"
writes = "fleet"
why = "every request goes to the recording upstream"
"#;

/// One fleetgate and one recording upstream, kept for every input of a fuzz run.
pub struct H1Harness {
    _runtime: tokio::runtime::Runtime,
    upstream: RecordingUpstream,
    addr: SocketAddr,
    _server: fleetgate::server::RunningServer,
    routes: PathBuf,
}

impl Drop for H1Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.routes);
    }
}

impl H1Harness {
    pub fn start() -> H1Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let routes = std::env::temp_dir().join(format!("fleetgate-h1fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&routes).unwrap();
        std::fs::write(routes.join("10-all.toml"), MANIFEST).unwrap();
        let (upstream, server) = runtime.block_on(async {
            let upstream = RecordingUpstream::start().await;
            let mut c = fleetgate::config::Config {
                node_id: "fuzz".into(),
                role: fleetgate::config::Role::Serve,
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_listen: "127.0.0.1:0".parse().unwrap(),
                routes: routes.clone(),
                access_log: false,
                ..fleetgate::config::Config::default()
            };
            c.upstreams.fleet = vec![fleetgate::config::UpstreamUrl::http(
                "127.0.0.1",
                upstream.addr.port(),
            )];
            c.timeouts.header_read = Duration::from_millis(500);
            c.timeouts.idle = Duration::from_millis(500);
            c.timeouts.drain_delay = Duration::ZERO;
            let server = fleetgate::server::start(c).await.expect("proxy starts");
            (upstream, server)
        });
        H1Harness {
            addr: server.addr,
            _runtime: runtime,
            upstream,
            _server: server,
            routes,
        }
    }

    /// Send `data` as one client connection (then half-close it), read everything the
    /// proxy answers, and check what reached the upstream.
    pub fn run(&self, data: &[u8]) {
        let before = self.upstream.requests().len();
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(data);
        let _ = s.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        // Every forwarded request was answered by the upstream before the proxy answered
        // the client, but give a request whose client went away a moment to land.
        std::thread::sleep(Duration::from_millis(5));
        let forwarded: Vec<Recorded> = self.upstream.requests()[before..].to_vec();
        let framed = client_requests(data);
        check(&framed, &forwarded, data);
    }
}

/// A request as the client's bytes frame it.
#[derive(Debug)]
struct Framed {
    method: String,
    body: Vec<u8>,
}

fn check(framed: &[Framed], forwarded: &[Recorded], data: &[u8]) {
    let show = || String::from_utf8_lossy(data).into_owned();
    assert!(
        forwarded.len() <= framed.len(),
        "the upstream framed {} requests, the client's bytes {}: {:?}\nforwarded: {forwarded:?}",
        forwarded.len(),
        framed.len(),
        show()
    );
    for (i, (f, c)) in forwarded.iter().zip(framed).enumerate() {
        assert!(
            f.anomalies.is_empty(),
            "request {i} forwarded with {:?}: {:?}",
            f.anomalies,
            show()
        );
        assert_eq!(
            f.method,
            c.method,
            "request {i} changed method: {:?}",
            show()
        );
        assert_eq!(f.body, c.body, "request {i} changed body: {:?}", show());
        assert!(
            f.target.starts_with('/'),
            "request {i} target {:?}: {:?}",
            f.target,
            show()
        );
    }
}

/// Frame `data` as a sequence of requests; stops at the first thing that is incomplete or
/// ambiguous.
fn client_requests(mut data: &[u8]) -> Vec<Framed> {
    let mut out = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(data) else {
            return out;
        };
        let method = req.method.unwrap_or_default().to_string();
        let values = |name: &str| -> Vec<&[u8]> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        let lengths = values("content-length");
        let codings = values("transfer-encoding");
        let rest = &data[head..];
        if !codings.is_empty() {
            // Only the last coding decides; anything but chunked as the final coding has
            // no length and is refused.
            let last = codings.last().unwrap();
            let final_coding = last.rsplit(|&b| b == b',').next().unwrap_or_default();
            if !String::from_utf8_lossy(final_coding)
                .trim()
                .eq_ignore_ascii_case("chunked")
            {
                return out;
            }
            let Some((body, _)) = chunked(rest) else {
                return out;
            };
            out.push(Framed { method, body });
            // After a message with Transfer-Encoding (all the more with a length too),
            // nothing more on this connection is trusted.
            return out;
        }
        let length = match lengths.as_slice() {
            [] => 0,
            [one, more @ ..] if more.iter().all(|m| m == one) => {
                match std::str::from_utf8(one)
                    .ok()
                    .and_then(|t| t.trim().parse::<usize>().ok())
                {
                    Some(n) => n,
                    None => return out,
                }
            }
            _ => return out,
        };
        if rest.len() < length {
            return out;
        }
        out.push(Framed {
            method,
            body: rest[..length].to_vec(),
        });
        data = &rest[length..];
    }
}

/// A chunked body (lenient about extensions and trailers): the body and the bytes used.
fn chunked(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = rest.len();
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = rest[..end].split(|&b| b == b';').next()?;
        let size = usize::from_str_radix(std::str::from_utf8(size_text).ok()?.trim(), 16).ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            loop {
                let end = rest.windows(2).position(|w| w == b"\r\n")?;
                rest = &rest[end + 2..];
                if end == 0 {
                    return Some((body, start - rest.len()));
                }
            }
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
