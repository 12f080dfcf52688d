//! `fleetgate canary`: probe a running deployment with one read-only request per
//! application route and check that each was routed where the local manifest says.
//!
//! For every app route whose method is GET or HEAD (any other route is skipped: the canary
//! never sends a mutating request), the route's `{param}` and `{*rest}` are filled with a
//! placeholder, the concrete path is classified with the local manifest (the **expected**
//! class), and one request goes to the target. The verdict comes from the response stamps
//! (`x-fleetgate-target`, `x-fleetgate-served-by`), never from the application's status: a
//! `404` for the placeholder id is fine.
//!
//! The pure parts — [`probe_method`], [`fill_path`], [`expected_class`], [`verdict`] — are
//! separate functions; [`run`] does the probing and returns a [`Report`], [`canary`] is
//! the command (prints, returns the exit code).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every probed route was routed as expected |
//! | 1 | a mismatch, an error, or a route without stamps (unless `--allow-unknown`) |
//! | 2 | usage: a bad `--target`, `--placeholder`, `--concurrency`, `--rate` or header |
//! | 78 | the manifest does not load, or the app-routes file is unreadable or malformed |

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::exit;
use super::routes::{input_error, load, plural, print_stdout, read_input, xml_escape};
use crate::manifest::drift::{self, AppRoute};
use crate::manifest::{Class, HeaderSource, Manifest, RequestParts, Segment};
use crate::proxy::error::REQUIRED_ROLE;
use crate::proxy::headers::{X_FLEETGATE_SERVED_BY, X_FLEETGATE_TARGET};

/// `canary --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CanaryFormat {
    /// One line per probed route, then the summary line.
    #[default]
    Text,
    /// One object: `target`, `routes` (one entry per app route) and `summary`.
    Json,
    /// JUnit XML: one testcase per app route (skipped ones marked skipped).
    Junit,
}

/// What `fleetgate canary` is asked to do.
#[derive(Debug, Clone)]
pub struct CanaryArgs {
    /// `http://host:port` (an optional path prefix is kept; no query).
    pub target: String,
    /// The manifest directory the expected classes come from.
    pub routes: PathBuf,
    /// The application's routes (as `routes drift` reads them).
    pub app_routes: PathBuf,
    pub format: CanaryFormat,
    /// What every `{param}` and `{*rest}` is filled with.
    pub placeholder: String,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests started per second at most.
    pub rate: u32,
    /// Per request: connect and response head.
    pub timeout: Duration,
    /// Extra request headers (lower-case names), sent with every probe and used when
    /// classifying (for `when` conditions).
    pub headers: Vec<(String, String)>,
    /// A route without stamps does not fail the run.
    pub allow_unknown: bool,
}

impl CanaryArgs {
    /// The defaults of the command line for everything but the three paths.
    pub fn new(
        target: impl Into<String>,
        routes: impl Into<PathBuf>,
        app_routes: impl Into<PathBuf>,
    ) -> CanaryArgs {
        CanaryArgs {
            target: target.into(),
            routes: routes.into(),
            app_routes: app_routes.into(),
            format: CanaryFormat::Text,
            placeholder: DEFAULT_PLACEHOLDER.to_string(),
            concurrency: 4,
            rate: 20,
            timeout: Duration::from_millis(5000),
            headers: Vec::new(),
            allow_unknown: false,
        }
    }
}

pub const DEFAULT_PLACEHOLDER: &str = "canary";

/// The only methods the canary can send. There is deliberately no other variant: a
/// mutating request cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMethod {
    Get,
    Head,
}

impl ProbeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMethod::Get => "GET",
            ProbeMethod::Head => "HEAD",
        }
    }

    fn method(self) -> Method {
        match self {
            ProbeMethod::Get => Method::GET,
            ProbeMethod::Head => Method::HEAD,
        }
    }
}

/// How a route of `method` is probed: GET and HEAD as themselves, any-method (`*`) with
/// GET; `None` (skipped) for everything else.
pub fn probe_method(method: &str) -> Option<ProbeMethod> {
    match method {
        "GET" => Some(ProbeMethod::Get),
        "HEAD" => Some(ProbeMethod::Head),
        "*" => Some(ProbeMethod::Get),
        _ => None,
    }
}

/// A placeholder must be one path segment that needs no escaping and survives
/// normalization: RFC 3986 unreserved characters, not `.` or `..`.
pub fn check_placeholder(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("the placeholder is empty".into());
    }
    if p == "." || p == ".." {
        return Err(format!("the placeholder {p:?} is a dot segment"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
    {
        return Err(format!(
            "the placeholder {p:?} contains {c:?}; use letters, digits, '-', '.', '_' or '~'"
        ));
    }
    Ok(())
}

/// The concrete path of a route pattern: every `{param}` and `{*rest}` is `placeholder`.
pub fn fill_path(segments: &[Segment], placeholder: &str) -> String {
    if segments.is_empty() {
        return "/".to_string();
    }
    let mut path = String::new();
    for seg in segments {
        path.push('/');
        match seg {
            Segment::Literal(s) => path.push_str(s),
            Segment::Param(_) | Segment::Rest(_) => path.push_str(placeholder),
        }
    }
    path
}

struct Headers<'a>(&'a [(String, String)]);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.header(name)
    }
}

/// The class the manifest gives a probe (`path` is normalized first, as fleetgate does),
/// with the deciding rule's `file:line` (`None`: the default class).
pub fn expected_class(
    manifest: &Manifest,
    method: ProbeMethod,
    path: &str,
    headers: &[(String, String)],
) -> Result<(Class, Option<String>), String> {
    let (raw, query) = crate::path::split_target(path);
    let normalized = crate::path::normalize(raw).map_err(|e| e.to_string())?;
    let headers = Headers(headers);
    let d = manifest.classify(&RequestParts {
        method: method.as_str(),
        path: &normalized,
        query,
        headers: &headers,
    });
    Ok((d.class, d.rule.map(|r| r.location())))
}

/// How one probe turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Routed where the manifest says.
    Matched,
    /// Routed to the other side; why.
    Mismatched(String),
    /// No routing stamps to judge by; why.
    Unknown(String),
    /// No routing decision to judge: a transport error or fleetgate's own refusal.
    Error(String),
}

impl Verdict {
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Matched => "ok",
            Verdict::Mismatched(_) => "mismatch",
            Verdict::Unknown(_) => "unknown",
            Verdict::Error(_) => "error",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Verdict::Matched => "",
            Verdict::Mismatched(m) | Verdict::Unknown(m) | Verdict::Error(m) => m,
        }
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Judge one response: was a request of class `expected` routed to its side?
///
/// * `421`, `508`, and `502` with `x-fleetgate-required-role` are fleetgate refusing or
///   failing to route: errors.
/// * No `x-fleetgate-target` and no `x-fleetgate-served-by`: unknown.
/// * `x-fleetgate-served-by` without a target: fleetgate answered before routing (`400`,
///   `431`, …): an error.
/// * ide-only: `x-fleetgate-target: ide`, or `local` from an `ide@`/`all@` node.
/// * fleet-ok: `x-fleetgate-target: fleet|local`, not served by an `ide@` node.
pub fn verdict(expected: Class, status: StatusCode, headers: &HeaderMap) -> Verdict {
    let target = header_str(headers, X_FLEETGATE_TARGET.as_str());
    let served = header_str(headers, X_FLEETGATE_SERVED_BY.as_str());
    let required = header_str(headers, REQUIRED_ROLE);
    match status.as_u16() {
        421 => {
            return Verdict::Error(format!(
                "421 from fleetgate: this node cannot serve it (required role: {})",
                required.unwrap_or("?")
            ))
        }
        508 => return Verdict::Error("508 from fleetgate: a routing loop".into()),
        502 if required.is_some() => {
            return Verdict::Error(format!(
                "502 from fleetgate: the {} is unreachable",
                required.unwrap_or("ide")
            ))
        }
        _ => {}
    }
    let (target, served) = match (target, served) {
        (None, None) => {
            return Verdict::Unknown(
                "no routing stamps (stamps switched off at the edge, or not a fleetgate)".into(),
            )
        }
        (None, Some(s)) => {
            return Verdict::Error(format!(
                "{} from fleetgate {s} before it chose a target",
                status.as_u16()
            ))
        }
        (Some(t), s) => (t, s),
    };
    let by_ide = served.is_some_and(|s| s.starts_with("ide@"));
    let by_ide_or_all = by_ide || served.is_some_and(|s| s.starts_with("all@"));
    match (expected, target) {
        (Class::IdeOnly, "ide") => Verdict::Matched,
        (Class::IdeOnly, "local") if by_ide_or_all => Verdict::Matched,
        (Class::IdeOnly, "local") => match served {
            Some(s) => Verdict::Mismatched(format!(
                "answered locally by {s}, which is not an ide (or all) node"
            )),
            None => Verdict::Unknown("x-fleetgate-target: local without served-by".into()),
        },
        (Class::IdeOnly, "fleet") => Verdict::Mismatched("routed to the fleet".into()),
        (Class::FleetOk, "fleet" | "local") if by_ide => Verdict::Mismatched(format!(
            "served by the ide node {}",
            served.unwrap_or_default()
        )),
        (Class::FleetOk, "fleet" | "local") => Verdict::Matched,
        (Class::FleetOk, "ide") => Verdict::Mismatched("routed to the ide".into()),
        (_, other) => Verdict::Unknown(format!("unrecognized x-fleetgate-target {other:?}")),
    }
}

/// One probe sent (or refused before sending).
#[derive(Debug, Clone)]
pub struct Probe {
    pub method: ProbeMethod,
    /// The concrete path.
    pub path: String,
    pub expected: Class,
    /// The deciding rule's `file:line` (`None`: the default class).
    pub rule: Option<String>,
    pub status: Option<u16>,
    pub target: Option<String>,
    pub served_by: Option<String>,
    pub verdict: Verdict,
}

/// One app route and its probe (`None`: skipped, not GET/HEAD).
#[derive(Debug, Clone)]
pub struct RouteResult {
    /// The route's method, upper-case.
    pub method: String,
    /// The route pattern.
    pub route: String,
    /// Its line in the app-routes file (0: unknown).
    pub line: u32,
    pub probe: Option<Probe>,
}

/// The tallies of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub probed: usize,
    pub matched: usize,
    pub mismatched: usize,
    pub unknown: usize,
    pub errors: usize,
    pub skipped: usize,
}

/// The outcome of a canary run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The app-routes file, as named in messages.
    pub app_name: String,
    /// The probed base URL.
    pub target: String,
    pub allow_unknown: bool,
    pub routes: Vec<RouteResult>,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.routes {
            let Some(p) = &r.probe else {
                c.skipped += 1;
                continue;
            };
            c.probed += 1;
            match p.verdict {
                Verdict::Matched => c.matched += 1,
                Verdict::Mismatched(_) => c.mismatched += 1,
                Verdict::Unknown(_) => c.unknown += 1,
                Verdict::Error(_) => c.errors += 1,
            }
        }
        c
    }

    /// Does this route fail the run?
    fn fails(&self, p: &Probe) -> bool {
        match p.verdict {
            Verdict::Matched => false,
            Verdict::Unknown(_) => !self.allow_unknown,
            Verdict::Mismatched(_) | Verdict::Error(_) => true,
        }
    }

    /// The routes that fail the run.
    pub fn failures(&self) -> impl Iterator<Item = &RouteResult> {
        self.routes
            .iter()
            .filter(|r| r.probe.as_ref().is_some_and(|p| self.fails(p)))
    }

    pub fn is_ok(&self) -> bool {
        self.failures().next().is_none()
    }

    pub fn exit_code(&self) -> i32 {
        if self.is_ok() {
            exit::OK
        } else {
            exit::FINDINGS
        }
    }

    /// `canary: N routes probed, M matched, K mismatched, U unknown, E errors (S skipped: not GET/HEAD)`.
    pub fn summary(&self) -> String {
        let c = self.counts();
        format!(
            "canary: {} probed, {} matched, {} mismatched, {} unknown, {} errors ({} skipped: not GET/HEAD){}",
            plural(c.probed, "route"),
            c.matched,
            c.mismatched,
            c.unknown,
            c.errors,
            c.skipped,
            if c.unknown > 0 && self.allow_unknown {
                "; unknown allowed"
            } else {
                ""
            }
        )
    }

    fn at(&self, line: u32) -> String {
        if line > 0 {
            format!("{}:{line}", self.app_name)
        } else {
            self.app_name.clone()
        }
    }

    pub fn render(&self, format: CanaryFormat) -> String {
        match format {
            CanaryFormat::Text => self.text(),
            CanaryFormat::Json => {
                let mut s = serde_json::to_string(&self.json()).expect("plain data serializes");
                s.push('\n');
                s
            }
            CanaryFormat::Junit => self.junit(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.routes {
            if let Some(p) = &r.probe {
                let _ = writeln!(
                    out,
                    "{}: {}: {}",
                    self.at(r.line),
                    p.verdict.kind(),
                    describe(r, p)
                );
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    fn json(&self) -> CanaryJson<'_> {
        let c = self.counts();
        CanaryJson {
            target: &self.target,
            routes: self
                .routes
                .iter()
                .map(|r| {
                    let p = r.probe.as_ref();
                    RouteJson {
                        method: &r.method,
                        route: &r.route,
                        line: r.line,
                        verdict: p.map_or("skipped", |p| p.verdict.kind()),
                        message: p.map_or("not GET/HEAD", |p| p.verdict.message()),
                        probe_method: p.map(|p| p.method.as_str()),
                        path: p.map(|p| p.path.as_str()),
                        expected: p.map(|p| p.expected.as_str()),
                        rule: p.and_then(|p| p.rule.as_deref()),
                        status: p.and_then(|p| p.status),
                        target: p.and_then(|p| p.target.as_deref()),
                        served_by: p.and_then(|p| p.served_by.as_deref()),
                    }
                })
                .collect(),
            summary: SummaryJson {
                counts: c,
                ok: self.is_ok(),
            },
        }
    }

    fn junit(&self) -> String {
        let (mut failures, mut errors, mut skipped) = (0, 0, 0);
        let mut cases = String::new();
        for r in &self.routes {
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\"",
                xml_escape(&self.app_name),
                xml_escape(&format!("{} {}", r.method, r.route)),
                xml_escape(&self.app_name),
            );
            if r.line > 0 {
                let _ = write!(cases, " line=\"{}\"", r.line);
            }
            let Some(p) = &r.probe else {
                skipped += 1;
                cases.push_str(
                    ">\n      <skipped message=\"not GET/HEAD: never probed\"/>\n    </testcase>\n",
                );
                continue;
            };
            if !self.fails(p) {
                cases.push_str("/>\n");
                continue;
            }
            let element = if matches!(p.verdict, Verdict::Error(_)) {
                errors += 1;
                "error"
            } else {
                failures += 1;
                "failure"
            };
            let _ = write!(
                cases,
                ">\n      <{element} type=\"{}\" message=\"{}\">{}</{element}>\n    </testcase>\n",
                p.verdict.kind(),
                xml_escape(p.verdict.message()),
                xml_escape(&format!("{}: {}", self.at(r.line), describe(r, p)))
            );
        }
        let tests = self.routes.len();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            xml,
            "<testsuites name=\"fleetgate canary\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">"
        );
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">",
            xml_escape(&format!("canary {} against {}", self.app_name, self.target))
        );
        xml.push_str(&cases);
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

/// `GET /api/{ws}/x as GET /api/canary/x: expected ide-only (routes/a.toml:3); routed to
/// the fleet [404, target fleet, served by serve@edge]`.
fn describe(r: &RouteResult, p: &Probe) -> String {
    let mut s = format!(
        "{} {} as {} {}: expected {} ({})",
        r.method,
        r.route,
        p.method.as_str(),
        p.path,
        p.expected,
        p.rule.as_deref().unwrap_or("default class")
    );
    if !p.verdict.message().is_empty() {
        let _ = write!(s, "; {}", p.verdict.message());
    }
    let mut seen = Vec::new();
    if let Some(st) = p.status {
        seen.push(st.to_string());
    }
    if let Some(t) = &p.target {
        seen.push(format!("target {t}"));
    }
    if let Some(b) = &p.served_by {
        seen.push(format!("served by {b}"));
    }
    if !seen.is_empty() {
        let _ = write!(s, " [{}]", seen.join(", "));
    }
    s
}

#[derive(Serialize)]
struct CanaryJson<'a> {
    target: &'a str,
    routes: Vec<RouteJson<'a>>,
    summary: SummaryJson,
}

#[derive(Serialize)]
struct RouteJson<'a> {
    method: &'a str,
    route: &'a str,
    line: u32,
    /// `ok`, `mismatch`, `unknown`, `error` or `skipped`.
    verdict: &'static str,
    message: &'a str,
    probe_method: Option<&'static str>,
    path: Option<&'a str>,
    expected: Option<&'static str>,
    rule: Option<&'a str>,
    status: Option<u16>,
    target: Option<&'a str>,
    served_by: Option<&'a str>,
}

#[derive(Serialize)]
struct SummaryJson {
    #[serde(flatten)]
    counts: Counts,
    ok: bool,
}

/// The base URL probes are sent to: `http://authority` plus an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base(String);

/// Parse `--target`: plain `http://host[:port][/prefix]`, no query.
pub fn parse_target(url: &str) -> Result<Base, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--target {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "--target {url:?}: https is not supported; probe the plain-http listener (e.g. from inside the cluster, or through a port-forward)"
            ))
        }
        Some(other) => return Err(format!("--target {url:?}: unsupported scheme {other:?}")),
        None => {
            return Err(format!(
                "--target {url:?} needs a scheme and a host, e.g. http://127.0.0.1:8080"
            ))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("--target {url:?} has no host"));
    };
    if uri.query().is_some() {
        return Err(format!("--target {url:?} must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(Base(format!("http://{authority}{prefix}")))
}

impl Base {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One probe to send: where in the report it goes and what to ask.
struct Planned {
    index: usize,
    method: ProbeMethod,
    path: String,
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// Send one read-only request; the status and headers of the answer (its body is not
/// read: an SSE route would never end).
async fn send(
    client: &ProbeClient,
    uri: Uri,
    method: ProbeMethod,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<(StatusCode, HeaderMap), String> {
    let mut req = Request::builder()
        .method(method.method())
        .uri(uri)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers.clone();
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("no response within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(error_chain(&e)),
        Ok(Ok(resp)) => {
            let (parts, _body) = resp.into_parts();
            Ok((parts.status, parts.headers))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The request headers of every probe: the `-H` headers and, unless given, a
/// `user-agent` that names the canary.
fn probe_headers(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("-H: {name:?} is not a valid header name"))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("-H {name}: {value:?} is not a valid header value"))?;
        map.append(n, v);
    }
    if !map.contains_key(USER_AGENT) {
        map.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("fleetgate-canary/", env!("CARGO_PKG_VERSION"))),
        );
    }
    Ok(map)
}

fn usage(message: String) -> i32 {
    eprintln!("fleetgate canary: {message}");
    exit::USAGE
}

/// Plan the probes of `routes`: the expected class of each GET/HEAD route's concrete path
/// (routes whose path does not normalize get an error verdict and are not sent).
fn plan(
    manifest: &Manifest,
    routes: &[AppRoute],
    placeholder: &str,
    headers: &[(String, String)],
) -> (Vec<RouteResult>, Vec<Planned>) {
    let mut results = Vec::with_capacity(routes.len());
    let mut planned = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let probe = probe_method(&route.method).map(|method| {
            let path = fill_path(&route.segments, placeholder);
            let (expected, rule, verdict) = match expected_class(manifest, method, &path, headers) {
                Ok((class, rule)) => {
                    planned.push(Planned {
                        index,
                        method,
                        path: path.clone(),
                    });
                    // Replaced by the answer's verdict.
                    (class, rule, Verdict::Error("not sent".into()))
                }
                Err(e) => (
                    Class::FleetOk,
                    None,
                    Verdict::Error(format!("the probe path does not normalize: {e}")),
                ),
            };
            Probe {
                method,
                path,
                expected,
                rule,
                status: None,
                target: None,
                served_by: None,
                verdict,
            }
        });
        results.push(RouteResult {
            method: route.method.clone(),
            route: route.path.clone(),
            line: route.line,
            probe,
        });
    }
    (results, planned)
}

/// Run the canary: read the manifest and the app routes, probe, and return the report.
/// `Err` is the exit code of a usage or input error (already printed on stderr).
pub async fn run(args: &CanaryArgs) -> Result<Report, i32> {
    check_placeholder(&args.placeholder).map_err(|e| usage(format!("--placeholder: {e}")))?;
    let base = parse_target(&args.target).map_err(usage)?;
    if args.concurrency == 0 {
        return Err(usage("--concurrency must be at least 1".into()));
    }
    if args.rate == 0 {
        return Err(usage("--rate must be at least 1".into()));
    }
    if args.timeout.is_zero() {
        return Err(usage("--timeout must be at least 1 ms".into()));
    }
    let headers = probe_headers(&args.headers).map_err(usage)?;

    let manifest = load(&args.routes)?;
    let app_name = args.app_routes.display().to_string();
    let text = read_input(&args.app_routes, &app_name, "the application's routes")?;
    let routes = drift::parse_app_routes(&app_name, &text).map_err(input_error)?;

    let (mut results, planned) = plan(&manifest, &routes, &args.placeholder, &args.headers);

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(args.timeout));
    let client: ProbeClient = Client::builder(TokioExecutor::new()).build(connector);
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let headers = Arc::new(headers);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut next = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in planned {
        tokio::time::sleep_until(next).await;
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // The next start is one interval after this one actually started.
        next = next.max(Instant::now()) + interval;
        let uri: Result<Uri, _> = format!("{}{}", base.as_str(), p.path).parse();
        let (client, headers, timeout) = (client.clone(), headers.clone(), args.timeout);
        tasks.spawn(async move {
            let answer = match uri {
                Ok(uri) => send(&client, uri, p.method, &headers, timeout).await,
                Err(e) => Err(format!("not a valid request URI: {e}")),
            };
            drop(slot);
            (p.index, answer)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (index, answer) = done.expect("a probe task does not panic");
        let probe = results[index]
            .probe
            .as_mut()
            .expect("only planned routes are sent");
        match answer {
            Err(e) => probe.verdict = Verdict::Error(e),
            Ok((status, headers)) => {
                probe.status = Some(status.as_u16());
                probe.target = header_str(&headers, X_FLEETGATE_TARGET.as_str()).map(String::from);
                probe.served_by =
                    header_str(&headers, X_FLEETGATE_SERVED_BY.as_str()).map(String::from);
                probe.verdict = verdict(probe.expected, status, &headers);
            }
        }
    }
    Ok(Report {
        app_name,
        target: base.as_str().to_string(),
        allow_unknown: args.allow_unknown,
        routes: results,
    })
}

/// `fleetgate canary`: run, print the report (text: on stdout with the summary line;
/// json/junit: the document on stdout, the summary on stderr) and return the exit code.
pub fn canary(args: CanaryArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetgate canary: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    let report = match rt.block_on(run(&args)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if report.counts().probed == 0 {
        eprintln!(
            "note: {} has no GET or HEAD route: nothing was probed",
            report.app_name
        );
    }
    if args.format != CanaryFormat::Text {
        eprintln!("{}", report.summary());
    }
    print_stdout(&report.render(args.format), report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(pattern: &str) -> Vec<Segment> {
        drift::parse_app_routes("t", &format!("GET {pattern}"))
            .unwrap()
            .remove(0)
            .segments
    }

    #[test]
    fn only_get_and_head_are_probed() {
        assert_eq!(probe_method("GET"), Some(ProbeMethod::Get));
        assert_eq!(probe_method("HEAD"), Some(ProbeMethod::Head));
        assert_eq!(probe_method("*"), Some(ProbeMethod::Get));
        for m in [
            "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get",
        ] {
            assert_eq!(probe_method(m), None, "{m}");
        }
    }

    #[test]
    fn paths_are_filled_with_the_placeholder() {
        assert_eq!(
            fill_path(&segments("/api/{ws}/files/{*path}"), "canary"),
            "/api/canary/files/canary"
        );
        assert_eq!(
            fill_path(&segments("/users/:id/edit"), "x"),
            "/users/x/edit"
        );
        assert_eq!(fill_path(&segments("/health"), "x"), "/health");
        assert_eq!(fill_path(&[], "x"), "/");
    }

    #[test]
    fn placeholders() {
        assert!(check_placeholder("canary").is_ok());
        assert!(check_placeholder("id-1_a.b~").is_ok());
        assert!(check_placeholder("").is_err());
        assert!(check_placeholder(".").is_err());
        assert!(check_placeholder("..").is_err());
        assert!(check_placeholder("a/b").is_err());
        assert!(check_placeholder("a b").is_err());
        assert!(check_placeholder("%41").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            parse_target("http://edge:80/prefix/").unwrap().as_str(),
            "http://edge:80/prefix"
        );
        assert!(parse_target("https://edge")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_target("edge:8080").is_err());
        assert!(parse_target("/just/a/path").is_err());
        assert!(parse_target("http://edge/?a=1").is_err());
    }

    #[test]
    fn expected_classes_come_from_the_manifest() {
        let m = Manifest::from_sources(&[(
            "routes/a.toml".into(),
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{ws}/files/{*p}\"\nclass = \"ide-only\"\nwhy = \"disk\"\n[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{ws}/files/canary\"\nclass = \"fleet-ok\"\nwhy = \"a literal that equals the placeholder\"\n[rule.when]\nheader = { \"x-s\" = \"1\" }\n"
                .into(),
        )])
        .unwrap();
        let ide = expected_class(&m, ProbeMethod::Head, "/api/canary/files/x", &[]).unwrap();
        assert_eq!(ide, (Class::IdeOnly, Some("routes/a.toml:1".into())));
        let dflt = expected_class(&m, ProbeMethod::Get, "/other", &[]).unwrap();
        assert_eq!(dflt, (Class::FleetOk, None));
        // -H headers take part in `when` conditions.
        let h = [("x-s".to_string(), "1".to_string())];
        assert_eq!(
            expected_class(&m, ProbeMethod::Get, "/api/canary/files/canary", &h)
                .unwrap()
                .0,
            Class::FleetOk
        );
        assert!(expected_class(&m, ProbeMethod::Get, "/a/%2F", &[]).is_err());
    }

    fn answer(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn judge(expected: Class, status: u16, pairs: &[(&str, &str)]) -> Verdict {
        verdict(
            expected,
            StatusCode::from_u16(status).unwrap(),
            &answer(pairs),
        )
    }

    const T: &str = "x-fleetgate-target";
    const S: &str = "x-fleetgate-served-by";

    #[test]
    fn ide_only_verdicts() {
        use Class::IdeOnly;
        // The edge forwarded to an inner ide fleetgate, whose served-by is kept.
        assert_eq!(
            judge(
                IdeOnly,
                404,
                &[
                    (T, "ide"),
                    (S, "ide@inner"),
                    ("x-fleetgate-forwarded-via", "serve@edge")
                ]
            ),
            Verdict::Matched
        );
        // The edge forwarded to a plain ide upstream.
        assert_eq!(
            judge(IdeOnly, 200, &[(T, "ide"), (S, "serve@edge")]),
            Verdict::Matched
        );
        // The probed node answered itself.
        assert_eq!(
            judge(IdeOnly, 200, &[(T, "local"), (S, "ide@n")]),
            Verdict::Matched
        );
        assert_eq!(
            judge(IdeOnly, 200, &[(T, "local"), (S, "all@n")]),
            Verdict::Matched
        );
        assert!(matches!(
            judge(IdeOnly, 200, &[(T, "fleet"), (S, "serve@edge")]),
            Verdict::Mismatched(m) if m.contains("fleet")
        ));
        assert!(matches!(
            judge(IdeOnly, 200, &[(T, "local"), (S, "worker@w1")]),
            Verdict::Mismatched(m) if m.contains("worker@w1")
        ));
    }

    #[test]
    fn fleet_ok_verdicts() {
        use Class::FleetOk;
        assert_eq!(
            judge(FleetOk, 404, &[(T, "fleet"), (S, "serve@edge")]),
            Verdict::Matched
        );
        assert_eq!(
            judge(FleetOk, 200, &[(T, "local"), (S, "worker@w1")]),
            Verdict::Matched
        );
        assert_eq!(
            judge(FleetOk, 200, &[(T, "local"), (S, "all@n")]),
            Verdict::Matched
        );
        assert!(matches!(
            judge(FleetOk, 200, &[(T, "ide"), (S, "ide@inner")]),
            Verdict::Mismatched(m) if m.contains("ide")
        ));
        assert!(matches!(
            judge(FleetOk, 200, &[(T, "local"), (S, "ide@n")]),
            Verdict::Mismatched(m) if m.contains("ide@n")
        ));
    }

    #[test]
    fn unknowns_and_errors() {
        use Class::*;
        assert!(matches!(judge(IdeOnly, 200, &[]), Verdict::Unknown(_)));
        assert!(matches!(judge(FleetOk, 404, &[]), Verdict::Unknown(_)));
        assert!(matches!(
            judge(FleetOk, 200, &[(T, "elsewhere"), (S, "serve@e")]),
            Verdict::Unknown(_)
        ));
        // Refusals before any target was chosen.
        assert!(matches!(
            judge(IdeOnly, 421, &[(S, "worker@w"), ("x-fleetgate-required-role", "ide")]),
            Verdict::Error(m) if m.starts_with("421")
        ));
        assert!(matches!(
            judge(FleetOk, 508, &[(S, "serve@e")]),
            Verdict::Error(m) if m.starts_with("508")
        ));
        assert!(matches!(
            judge(FleetOk, 400, &[(S, "serve@e")]),
            Verdict::Error(m) if m.starts_with("400")
        ));
        // The ide unreachable: the decision was right, but nothing answered.
        assert!(matches!(
            judge(IdeOnly, 502, &[(T, "ide"), (S, "serve@e"), ("x-fleetgate-required-role", "ide")]),
            Verdict::Error(m) if m.starts_with("502")
        ));
        // An application's own 5xx, routed right, is a match: only routing is checked.
        assert_eq!(
            judge(FleetOk, 500, &[(T, "fleet"), (S, "serve@e")]),
            Verdict::Matched
        );
    }

    fn sample_report(allow_unknown: bool) -> Report {
        let probe = |verdict| Probe {
            method: ProbeMethod::Get,
            path: "/api/canary/x".into(),
            expected: Class::IdeOnly,
            rule: Some("routes/a.toml:3".into()),
            status: Some(404),
            target: Some("fleet".into()),
            served_by: Some("serve@edge".into()),
            verdict,
        };
        let route = |method: &str, line, probe| RouteResult {
            method: method.into(),
            route: "/api/{ws}/x".into(),
            line,
            probe,
        };
        Report {
            app_name: "app.txt".into(),
            target: "http://edge:80".into(),
            allow_unknown,
            routes: vec![
                route("GET", 1, Some(probe(Verdict::Matched))),
                route(
                    "HEAD",
                    2,
                    Some(probe(Verdict::Mismatched("routed to the fleet".into()))),
                ),
                route("GET", 3, Some(probe(Verdict::Unknown("no stamps".into())))),
                route("POST", 4, None),
            ],
        }
    }

    #[test]
    fn text_report_and_summary() {
        let r = sample_report(false);
        let text = r.render(CanaryFormat::Text);
        assert!(
            text.contains("app.txt:2: mismatch: HEAD /api/{ws}/x as GET /api/canary/x: expected ide-only (routes/a.toml:3); routed to the fleet [404, target fleet, served by serve@edge]"),
            "{text}"
        );
        assert!(!text.contains("POST"), "{text}");
        assert!(text.ends_with(
            "canary: 3 routes probed, 1 matched, 1 mismatched, 1 unknown, 0 errors (1 skipped: not GET/HEAD)\n"
        ), "{text}");
        assert_eq!(r.exit_code(), exit::FINDINGS);
        assert_eq!(r.failures().count(), 2);
    }

    #[test]
    fn unknown_can_be_allowed() {
        let mut r = sample_report(true);
        assert_eq!(r.failures().count(), 1);
        r.routes.remove(1);
        assert!(r.is_ok());
        assert_eq!(r.exit_code(), exit::OK);
        assert!(r.summary().ends_with("; unknown allowed"));
    }

    #[test]
    fn json_report() {
        let v: serde_json::Value =
            serde_json::from_str(&sample_report(false).render(CanaryFormat::Json)).unwrap();
        assert_eq!(v["target"], "http://edge:80");
        assert_eq!(v["routes"].as_array().unwrap().len(), 4);
        assert_eq!(v["routes"][1]["verdict"], "mismatch");
        assert_eq!(v["routes"][1]["expected"], "ide-only");
        assert_eq!(v["routes"][1]["served_by"], "serve@edge");
        assert_eq!(v["routes"][3]["verdict"], "skipped");
        assert_eq!(v["routes"][3]["path"], serde_json::Value::Null);
        assert_eq!(
            v["summary"],
            serde_json::json!({"probed": 3, "matched": 1, "mismatched": 1, "unknown": 1,
                "errors": 0, "skipped": 1, "ok": false})
        );
    }

    #[test]
    fn junit_report() {
        let xml = sample_report(false).render(CanaryFormat::Junit);
        assert!(xml.contains(
            "<testsuites name=\"fleetgate canary\" tests=\"4\" failures=\"2\" errors=\"0\" skipped=\"1\">"
        ), "{xml}");
        assert!(
            xml.contains("name=\"GET /api/{ws}/x\" file=\"app.txt\" line=\"1\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<failure type=\"mismatch\" message=\"routed to the fleet\">"),
            "{xml}"
        );
        assert!(xml.contains("<skipped message="), "{xml}");
    }
}
