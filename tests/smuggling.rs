//! Request smuggling, through real sockets: raw HTTP/1.1 bytes and raw HTTP/2 frames to
//! fleetgate, a byte-recording HTTP/1.1 upstream behind it. For every case the client
//! gets a 400 (an HTTP/2 stream or connection error is the same refusal) or a correct
//! response, and the upstream never frames a request the client's bytes did not frame as
//! one, nor receives framing a backend could read two ways. The cases and their outcomes
//! are listed in docs/reliability.md.

mod support;

use std::time::Duration;

use support::h2raw::{self, Outcome, RawH2};
use support::recording::RecordingUpstream;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO_MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"

[[rule]]
path = "/echo/{*rest}"
class = "fleet-ok"
writes = "fleet"
why = "a stateless echo that takes writes"
"#;

struct Bench {
    _routes: TempDir,
    upstream: RecordingUpstream,
    srv: fleetgate::server::RunningServer,
}

async fn bench() -> Bench {
    let routes = TempDir::new("smuggling");
    routes.write("10-echo.toml", ECHO_MANIFEST);
    let upstream = RecordingUpstream::start().await;
    let mut cfg = config(
        fleetgate::config::Role::Serve,
        routes.path(),
        &[upstream.addr],
        None,
    );
    cfg.timeouts.header_read = Duration::from_secs(2);
    let srv = start(cfg).await;
    Bench {
        _routes: routes,
        upstream,
        srv,
    }
}

/// What the client must see for one case.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A 400 first; nothing of the case reaches the upstream.
    Refused,
    /// `n` answers of 200 and exactly `n` requests of the case upstream, the first with
    /// this body.
    Forwarded(usize, &'static str),
    /// One answer of 200, one request upstream with this body, then the proxy closes the
    /// connection: what follows the body is never read as a request.
    ForwardedThenClosed(&'static str),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        want,
    }
}

/// Statuses of the HTTP/1.1 responses in `bytes`, in order.
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(bytes) else {
            return out;
        };
        let code = resp.code.unwrap();
        out.push(code);
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        if n + len > bytes.len() {
            return out;
        }
        bytes = &bytes[n + len..];
    }
}

/// Write `bytes`, then read until the server closes or is quiet for 1.5 s. The bytes read,
/// and whether the server closed the connection.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            Ok(_) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn h1_cases() -> Vec<Case> {
    use Want::*;
    let smuggled = "GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n";
    vec![
        // CL.TE and TE.CL: both framings present. Refused (RFC 9112 §6.1 lets a server
        // reject them and requires closing the connection either way).
        case("cl-te", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 44\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), ForwardedThenClosed("")),
        case("te-cl", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n2a\r\n{smuggled}\r\n0\r\n\r\n"), Refused),
        case("te-cl-chunked-wins", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"), ForwardedThenClosed("hello")),
        // TE.TE: obfuscated Transfer-Encoding.
        case("te-xchunked", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\ncontent-length: 5\r\n\r\nhello{smuggled}"), Refused),
        case("te-space-before-colon", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\ncontent-length: 5\r\n\r\nhello{smuggled}"), Refused),
        case("te-chunked-then-identity", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Refused),
        case("te-identity-only", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Refused),
        case("te-chunked-twice", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Refused),
        case("te-quoted", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: \"chunked\"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Refused),
        case("te-vertical-tab", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Refused),
        case("te-in-http10", format!("POST /echo/CASE HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"), Refused),
        case("te-upper-case", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(1, "hello")),
        case("te-tab-ows", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\tchunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(1, "hello")),
        // Content-Length: repeated, conflicting, not a plain decimal.
        case("cl-duplicate-equal", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello", Forwarded(1, "hello")),
        case("cl-conflicting", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 44\r\n\r\nhello{smuggled}"), Refused),
        case("cl-list-conflicting", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 44\r\n\r\nhello{smuggled}"), Refused),
        case("cl-plus-sign", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello{smuggled}"), Refused),
        case("cl-negative", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n{smuggled}"), Refused),
        case("cl-hex", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 0x5\r\n\r\nhello{smuggled}"), Refused),
        case("cl-overflow", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999999\r\n\r\nhello", Refused),
        case("cl-trailing-junk", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5 x\r\n\r\nhello{smuggled}"), Refused),
        // Line folding and line endings.
        case("obs-fold", "GET /echo/CASE HTTP/1.1\r\nhost: x\r\nx-a: one\r\n two\r\n\r\n", Refused),
        case("obs-fold-te", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: identity\r\n chunked\r\n\r\nhello{smuggled}"), Refused),
        case("bare-cr-in-value", "GET /echo/CASE HTTP/1.1\r\nhost: x\r\nx-a: one\rtwo\r\n\r\n", Refused),
        case("bare-cr-line-ends", "GET /echo/CASE HTTP/1.1\rhost: x\r\r", Refused),
        case("bare-lf-line-ends", "GET /echo/CASE HTTP/1.1\nhost: x\n\n", Forwarded(1, "")),
        case("nul-in-value", "GET /echo/CASE HTTP/1.1\r\nhost: x\r\nx-a: one\0two\r\n\r\n", Refused),
        case("space-in-field-name", "GET /echo/CASE HTTP/1.1\r\nhost: x\r\nx a: one\r\n\r\n", Refused),
        // Chunked bodies: sizes and extensions.
        case("chunk-size-not-hex", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", Refused),
        case("chunk-size-overflow", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", Refused),
        case("chunk-size-negative", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", Refused),
        case("chunk-size-leading-space", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", Refused),
        case("chunk-extension", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n", Forwarded(1, "hello")),
        case("chunk-extension-bare-lf", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n{smuggled}"), Refused),
        case("chunk-data-too-long", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{smuggled}"), Refused),
        case("chunk-trailer-fields", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-smuggled: 1\r\n\r\n", Forwarded(1, "hello")),
        // Bodies that contain a request, and requests pipelined after a body.
        case("request-inside-body", format!("POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{smuggled}", smuggled.len()), Forwarded(1, "GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n")),
        case("get-with-body", format!("GET /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{smuggled}", smuggled.len()), Forwarded(1, "GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n")),
        case("pipelined-after-body", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /echo/CASE-2 HTTP/1.1\r\nhost: x\r\n\r\n", Forwarded(2, "hello")),
        case("pipelined-after-chunked", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /echo/CASE-2 HTTP/1.1\r\nhost: x\r\n\r\n", Forwarded(2, "hello")),
        // Hop-by-hop tricks on the framing fields themselves.
        case("connection-names-content-length", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nhello", Forwarded(1, "hello")),
        case("connection-names-te", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\nconnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(1, "hello")),
        // Expect: 100-continue with the body sent at once, and an unknown expectation.
        case("expect-continue-body-at-once", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\nhello", Forwarded(1, "hello")),
        case("expect-unknown", "POST /echo/CASE HTTP/1.1\r\nhost: x\r\nexpect: 200-ok\r\ncontent-length: 5\r\n\r\nhello", Forwarded(1, "hello")),
        // Not HTTP/1.1 at all.
        case("http09", "GET /echo/CASE\r\n\r\n", Refused),
        case("version-2-in-h1", "GET /echo/CASE HTTP/2.0\r\nhost: x\r\n\r\n", Refused),
    ]
}

#[tokio::test]
async fn http1_framing_attacks_never_reach_the_upstream_as_a_second_request() {
    let bench = bench().await;
    let cases = h1_cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let runs = cases.iter().enumerate().map(|(i, c)| {
        let marker = format!("c{i:02}");
        let bytes = String::from_utf8_lossy(&c.bytes)
            .replace("CASE", &marker)
            .replace("SMUGGLED", &format!("{marker}-smug"));
        let addr = bench.srv.addr;
        async move { exchange(addr, bytes.as_bytes()).await }
    });
    let answers = futures_util::future::join_all(runs).await;

    let mut failures = Vec::new();
    for (i, (c, (answer, closed))) in cases.iter().zip(&answers).enumerate() {
        let marker = format!("c{i:02}");
        let seen = bench.upstream.requests_with(&marker);
        let got = statuses(answer);
        let smuggled: Vec<_> = seen.iter().filter(|r| r.target.contains("-smug")).collect();
        let anomalies: Vec<_> = seen.iter().flat_map(|r| r.anomalies.clone()).collect();
        let ok = smuggled.is_empty()
            && anomalies.is_empty()
            && match c.want {
                Want::Refused => got.first() == Some(&400) && seen.is_empty(),
                Want::ForwardedThenClosed(body) => {
                    got == [200] && *closed && seen.len() == 1 && seen[0].body == body.as_bytes()
                }
                Want::Forwarded(n, body) => {
                    let finals: Vec<_> = got.iter().filter(|s| **s >= 200).collect();
                    let body = body.replace("SMUGGLED", &format!("{marker}-smug"));
                    finals.len() == n
                        && finals.iter().all(|s| **s == 200)
                        && seen.len() == n
                        && seen[0].body == body.as_bytes()
                }
            };
        if !ok {
            failures.push(format!(
                "{} ({marker}): want {:?}, client got {got:?}, upstream framed {:?}, anomalies {anomalies:?}",
                c.name,
                c.want,
                seen.iter().map(|r| (&r.method, &r.target, String::from_utf8_lossy(&r.body))).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        bench
            .upstream
            .requests()
            .iter()
            .all(|r| r.method != "<invalid>"),
        "the upstream received bytes it could not parse: {:?}",
        bench.upstream.requests()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    bench.srv.shutdown().await;
}

/// Expect: 100-continue on a request the proxy refuses without reading its body: the
/// body sent after the refusal is never read as a request.
#[tokio::test]
async fn a_refused_expect_continue_body_is_not_read_as_a_request() {
    let bench = bench().await;
    let mut s = tokio::net::TcpStream::connect(bench.srv.addr)
        .await
        .unwrap();
    // Two Host fields: refused before anything is forwarded or any 100 is sent.
    s.write_all(b"POST /echo/e1 HTTP/1.1\r\nhost: x\r\nhost: y\r\nexpect: 100-continue\r\ncontent-length: 39\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(statuses(&buf[..n]).first(), Some(&400));
    let _ = s
        .write_all(b"GET /echo/e1-smuggled HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(
        statuses(&rest).is_empty(),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(bench.upstream.requests_with("e1").is_empty());
    bench.srv.shutdown().await;
}

/// One HTTP/2 case: request fields and DATA frames on stream 1.
struct H2Case {
    name: &'static str,
    extra: Vec<(&'static str, &'static str)>,
    path: &'static str,
    data: Vec<&'static [u8]>,
    /// `None`: refused; `Some(body)`: forwarded once with this body.
    want: Option<&'static [u8]>,
}

fn h2_cases() -> Vec<H2Case> {
    let c =
        |name, path, extra: Vec<(&'static str, &'static str)>, data: Vec<&'static [u8]>, want| {
            H2Case {
                name,
                extra,
                path,
                data,
                want,
            }
        };
    vec![
        c(
            "h2-cl-shorter-than-data",
            "/echo/CASE",
            vec![("content-length", "5")],
            vec![b"hello", b"GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n"],
            None,
        ),
        c(
            "h2-cl-longer-than-data",
            "/echo/CASE",
            vec![("content-length", "50")],
            vec![b"hello"],
            None,
        ),
        c(
            "h2-cl-not-a-number",
            "/echo/CASE",
            vec![("content-length", "5x")],
            vec![b"hello"],
            None,
        ),
        c(
            "h2-transfer-encoding",
            "/echo/CASE",
            vec![("transfer-encoding", "chunked")],
            vec![b"0\r\n\r\nGET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n"],
            None,
        ),
        c(
            "h2-connection",
            "/echo/CASE",
            vec![("connection", "keep-alive")],
            vec![],
            None,
        ),
        c(
            "h2-keep-alive",
            "/echo/CASE",
            vec![("keep-alive", "timeout=5")],
            vec![],
            None,
        ),
        c(
            "h2-upgrade",
            "/echo/CASE",
            vec![("upgrade", "websocket")],
            vec![],
            None,
        ),
        c(
            "h2-te-gzip",
            "/echo/CASE",
            vec![("te", "gzip")],
            vec![],
            None,
        ),
        c(
            "h2-crlf-in-value",
            "/echo/CASE",
            vec![("x-a", "one\r\n\r\nGET /echo/SMUGGLED HTTP/1.1\r\nhost: x")],
            vec![],
            None,
        ),
        c(
            "h2-lf-in-value",
            "/echo/CASE",
            vec![("x-a", "one\nx-b: two")],
            vec![],
            None,
        ),
        c(
            "h2-crlf-in-path",
            "/echo/CASE HTTP/1.1\r\nhost: x\r\n\r\nGET /echo/SMUGGLED",
            vec![],
            vec![],
            None,
        ),
        c("h2-space-in-path", "/echo/CASE x", vec![], vec![], None),
        c(
            "h2-upper-case-name",
            "/echo/CASE",
            vec![("X-Upper", "1")],
            vec![],
            None,
        ),
        c(
            "h2-colon-in-name",
            "/echo/CASE",
            vec![("x:a", "1")],
            vec![],
            None,
        ),
        c(
            "h2-body-is-a-request",
            "/echo/CASE",
            vec![("content-length", "AUTO")],
            vec![b"GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n"],
            Some(b"GET /echo/SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n"),
        ),
        c(
            "h2-te-trailers",
            "/echo/CASE",
            vec![("te", "trailers")],
            vec![],
            Some(b""),
        ),
    ]
}

#[tokio::test]
async fn http2_requests_downgraded_to_http1_keep_their_framing() {
    let bench = bench().await;
    let cases = h2_cases();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let marker = format!("h{i:02}");
        let path = c
            .path
            .replace("CASE", &marker)
            .replace("SMUGGLED", &format!("{marker}-smug"));
        let method = if c.data.is_empty() { "GET" } else { "POST" };
        let data: Vec<Vec<u8>> = c
            .data
            .iter()
            .map(|d| {
                String::from_utf8_lossy(d)
                    .replace("SMUGGLED", &format!("{marker}-smug"))
                    .into_bytes()
            })
            .collect();
        let total = data.iter().map(|d| d.len()).sum::<usize>().to_string();
        let extra: Vec<(&str, &str)> = c
            .extra
            .iter()
            .map(|(k, v)| (*k, if *v == "AUTO" { total.as_str() } else { *v }))
            .collect();
        let fields = h2raw::request_fields(method, &path, "x", &extra);
        let data_refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let mut conn = RawH2::connect(bench.srv.addr).await;
        conn.request(1, &fields, &data_refs).await;
        let outcome = conn.outcome(1, Duration::from_secs(5)).await;
        // Give the upstream a moment to frame anything that was sent to it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = bench.upstream.requests_with(&marker);
        let clean = seen
            .iter()
            .all(|r| !r.target.contains("-smug") && r.anomalies.is_empty());
        let ok = clean
            && match c.want {
                None => outcome.refused() && seen.iter().all(|r| r.body.len() <= 5),
                Some(body) => {
                    let body = String::from_utf8_lossy(body)
                        .replace("SMUGGLED", &format!("{marker}-smug"));
                    outcome == Outcome::Status(200)
                        && seen.len() == 1
                        && seen[0].body == body.as_bytes()
                }
            };
        if !ok {
            failures.push(format!(
                "{} ({marker}): want {}, got {outcome:?}, upstream framed {:?}",
                c.name,
                if c.want.is_some() {
                    "forwarded"
                } else {
                    "refused"
                },
                seen.iter()
                    .map(|r| (&r.target, String::from_utf8_lossy(&r.body), &r.anomalies))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    bench.srv.shutdown().await;
}
