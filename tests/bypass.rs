//! Classification bypass, through real sockets: encoding tricks in the request target
//! (HTTP/1.1 request line and HTTP/2 `:path`) that could make fleetgate and an upstream
//! disagree about a path. For each, the request is refused with `400`, or exactly one
//! upstream — the one its class picks — receives exactly the normalized path that was
//! classified. Byte-recording upstreams on both sides; the table is in
//! docs/reliability.md.

mod support;

use std::time::Duration;

use fleetgate::config::Role;
use support::h2raw::{self, Outcome, RawH2};
use support::recording::RecordingUpstream;
use support::*;

/// Where a request must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Refused,
    /// The fleet upstream receives this request target.
    Fleet(&'static str),
    /// The ide upstream receives this request target.
    Ide(&'static str),
}

use Want::*;

/// `(request target as sent, outcome)`, for `GET` over HTTP/1.1. The manifest is
/// [`MANIFEST`]: `/api/{ws}/{*rest}` is ide-only with the carve-out `GET
/// /api/{ws}/runs/{id}` fleet-ok; everything unlisted is fleet-ok.
const H1_CASES: &[(&str, Want)] = &[
    // The baseline: the carve-out and the wildcard it carves from.
    ("/api/ws1/runs/7", Fleet("/api/ws1/runs/7")),
    ("/api/ws1/files/a", Ide("/api/ws1/files/a")),
    // Dot segments, raw and encoded, climbing out of the carve-out.
    ("/api/ws1/runs/7/../../files/a", Ide("/api/ws1/files/a")),
    ("/api/ws1/runs/%2e%2e/files", Ide("/api/ws1/files")),
    ("/api/ws1/runs/%2E%2E/files", Ide("/api/ws1/files")),
    ("/api/ws1/runs/.%2e/files", Ide("/api/ws1/files")),
    ("/api/ws1/runs/7/%2e/x", Ide("/api/ws1/runs/7/x")),
    ("/api/ws1/files/%2e%2e/runs/7", Fleet("/api/ws1/runs/7")),
    ("/api/ws1/files/%2e%2e/%2e%2e/runs/7", Ide("/api/runs/7")),
    ("/preview/../api/ws1/files/a", Ide("/api/ws1/files/a")),
    ("/../api/ws1/files", Refused),
    ("/api/%2e%2e/%2e%2e/%2e%2e/x", Refused),
    // Double encoding: decoded once, the rest is data (an upstream that decodes twice
    // would be wrong on its own).
    (
        "/api/ws1/runs/%252e%252e",
        Fleet("/api/ws1/runs/%252e%252e"),
    ),
    (
        "/api/ws1/runs/%252e%252e/files",
        Ide("/api/ws1/runs/%252e%252e/files"),
    ),
    // Overlong and invalid UTF-8 escapes that lenient decoders read as `.` or `/`.
    ("/api/ws1/runs/%C0%AE%C0%AE/files", Refused),
    ("/api/ws1/runs/x%c0%af..%c0%af..%c0%affiles", Refused),
    ("/api/ws1/runs/%E0%80%AE%E0%80%AE", Refused),
    ("/api/ws1/runs/%ED%A0%80", Refused),
    ("/api/ws1/runs/%C3", Refused),
    ("/api/ws1/runs/%c3%a9", Fleet("/api/ws1/runs/%C3%A9")),
    ("/api/ws1/runs/%u002e%u002e", Refused),
    // Encoded and raw separators.
    ("/api/ws1/runs/a%2F..%2F..%2Ffiles", Refused),
    ("/api/ws1/runs/a%2f..%2f..%2ffiles", Refused),
    ("/api/ws1/runs/a%5C..%5C..%5Cfiles", Refused),
    ("/api/ws1/runs/a\\..\\..\\files", Refused),
    ("//api//ws1//files//a", Ide("/api/ws1/files/a")),
    ("/api/ws1/runs/7//..//..//files", Ide("/api/ws1/files")),
    ("/api///ws1/runs/7", Fleet("/api/ws1/runs/7")),
    // Path parameters: dot segments with parameters are refused (servlet containers read
    // `..;x` as `..`); parameters elsewhere are data of their segment.
    ("/api/ws1/runs/..;/files", Refused),
    ("/api/ws1/runs/.;/../files", Refused),
    ("/api/ws1/runs/%2e%2e;x/files", Refused),
    ("/api/ws1/runs/..%3b/files", Refused),
    ("/api/ws1/runs/..%3B/files", Refused),
    (
        "/api/ws1/runs/7;jsessionid=abc",
        Fleet("/api/ws1/runs/7;jsessionid=abc"),
    ),
    ("/api/ws1;x/files/a", Ide("/api/ws1;x/files/a")),
    // Unreserved characters spelled as escapes are decoded before matching.
    ("/api/ws1/r%75ns/7", Fleet("/api/ws1/runs/7")),
    ("/api/ws1/%66iles/a", Ide("/api/ws1/files/a")),
    ("/%61pi/ws1/files/a", Ide("/api/ws1/files/a")),
    ("/api/ws1/runs/%7e", Fleet("/api/ws1/runs/~")),
    // Reserved characters stay escaped, as data of their segment.
    ("/api/ws1/runs/7%3Fx", Fleet("/api/ws1/runs/7%3Fx")),
    ("/api/ws1/runs/7%23x", Fleet("/api/ws1/runs/7%23x")),
    ("/api/ws1/runs/7%20x", Fleet("/api/ws1/runs/7%20x")),
    // Control bytes, raw and escaped; raw non-ASCII.
    ("/api/ws1/files/a%00", Refused),
    ("/api/ws1/files/a%0d%0aX-Injected:%201", Refused),
    ("/api/ws1/files/a%7f", Refused),
    ("/api/ws1/files/\u{e9}", Refused),
    // A fragment is not part of a request target: it is dropped, never resolved.
    ("/api/ws1/runs/7#/../../files", Fleet("/api/ws1/runs/7")),
    // The query is not part of the path.
    (
        "/api/ws1/runs/7?x=../../files",
        Fleet("/api/ws1/runs/7?x=../../files"),
    ),
    // Trailing slashes are kept for the upstream and ignored by matching.
    ("/api/ws1/runs/7/", Fleet("/api/ws1/runs/7/")),
    // Aliases change classification only; the upstream gets the path as normalized.
    ("/v1/ws1/files/a", Ide("/v1/ws1/files/a")),
    ("/v1/ws1/runs/7", Fleet("/v1/ws1/runs/7")),
    ("/v1/ws1/runs/7/../../files", Ide("/v1/ws1/files")),
    // Absolute-form targets: the path is normalized the same way, sent in origin form.
    (
        "http://other.example/api/ws1/files/a",
        Ide("/api/ws1/files/a"),
    ),
    (
        "http://other.example/api/ws1/runs/7/../../files",
        Ide("/api/ws1/files"),
    ),
    (
        "http://other.example/api/ws1/runs/7",
        Fleet("/api/ws1/runs/7"),
    ),
    // Not a path at all.
    ("*", Refused),
    ("api/ws1/files/a", Refused),
];

struct Bench {
    _routes: TempDir,
    fleet: RecordingUpstream,
    ide: RecordingUpstream,
    srv: fleetgate::server::RunningServer,
}

async fn bench() -> Bench {
    let routes = manifest_dir();
    let fleet = RecordingUpstream::start().await;
    let ide = RecordingUpstream::start().await;
    let srv = start(config(
        Role::Serve,
        routes.path(),
        &[fleet.addr],
        Some(ide.addr),
    ))
    .await;
    Bench {
        _routes: routes,
        fleet,
        ide,
        srv,
    }
}

/// Where the requests sent since `before` (fleet, ide counts) went.
fn landed(b: &Bench, before: (usize, usize)) -> (Vec<String>, Vec<String>) {
    let targets = |u: &RecordingUpstream, from: usize| {
        u.requests()[from..]
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    };
    (targets(&b.fleet, before.0), targets(&b.ide, before.1))
}

fn counts(b: &Bench) -> (usize, usize) {
    (b.fleet.requests().len(), b.ide.requests().len())
}

fn verdict(
    want: Want,
    refused: bool,
    forwarded_ok: bool,
    fleet: &[String],
    ide: &[String],
) -> bool {
    match want {
        Refused => refused && fleet.is_empty() && ide.is_empty(),
        Fleet(p) => forwarded_ok && fleet == [p] && ide.is_empty(),
        Ide(p) => forwarded_ok && ide == [p] && fleet.is_empty(),
    }
}

#[tokio::test]
async fn encoding_tricks_in_the_request_line_are_refused_or_forwarded_as_classified() {
    assert!(H1_CASES.len() >= 40, "{} cases", H1_CASES.len());
    let b = bench().await;
    let mut failures = Vec::new();
    for (target, want) in H1_CASES {
        let before = counts(&b);
        let request =
            format!("GET {target} HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n");
        let answer = raw(b.srv.addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (fleet, ide) = landed(&b, before);
        if !verdict(*want, status == 400, status == 200, &fleet, &ide) {
            failures.push(format!(
                "{target:?}: want {want:?}, got {status}, fleet {fleet:?}, ide {ide:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        H1_CASES.len(),
        failures.join("\n")
    );
    b.srv.shutdown().await;
}

/// The same tricks in an HTTP/2 `:path` (h2c, raw frames, so nothing is cleaned up by a
/// client library first).
const H2_CASES: &[(&str, Want)] = &[
    ("/api/ws1/runs/7", Fleet("/api/ws1/runs/7")),
    ("/api/ws1/runs/%2e%2e/files", Ide("/api/ws1/files")),
    ("/api/ws1/runs/7/../../files/a", Ide("/api/ws1/files/a")),
    ("//api//ws1//files", Ide("/api/ws1/files")),
    ("/api/ws1/runs/..;/files", Refused),
    ("/api/ws1/runs/%2e%2e%3b/files", Refused),
    ("/api/ws1/runs/%C0%AE%C0%AE/files", Refused),
    ("/api/ws1/runs/a%2F..%2F..%2Ffiles", Refused),
    ("/api/ws1/runs/a\\..\\files", Refused),
    ("/api/ws1/files/a%00", Refused),
    (
        "/api/ws1/runs/7 HTTP/1.1\r\nhost: x\r\n\r\nGET /api/ws1/files",
        Refused,
    ),
    ("/api/ws1/runs/7#/../../files", Fleet("/api/ws1/runs/7")),
    ("/v1/ws1/runs/7/../../files", Ide("/v1/ws1/files")),
    ("api/ws1/files", Refused),
    ("", Refused),
];

#[tokio::test]
async fn encoding_tricks_in_the_h2_path_are_refused_or_forwarded_as_classified() {
    let b = bench().await;
    let mut failures = Vec::new();
    for (path, want) in H2_CASES {
        let before = counts(&b);
        let mut conn = RawH2::connect(b.srv.addr).await;
        let fields = h2raw::request_fields("GET", path, "app.example", &[]);
        conn.request(1, &fields, &[]).await;
        let outcome = conn.outcome(1, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (fleet, ide) = landed(&b, before);
        if !verdict(
            *want,
            outcome.refused(),
            outcome == Outcome::Status(200),
            &fleet,
            &ide,
        ) {
            failures.push(format!(
                "{path:?}: want {want:?}, got {outcome:?}, fleet {fleet:?}, ide {ide:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        H2_CASES.len(),
        failures.join("\n")
    );
    b.srv.shutdown().await;
}
