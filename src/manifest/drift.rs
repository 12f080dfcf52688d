//! Drift: compare the manifest with the application's real route list.
//!
//! The application's routes come as a plain list (`METHOD /path` per line, in the
//! router styles `{id}`, `:id`, `<id>`, `<int:id>`, `*rest`), as an OpenAPI 3
//! document (JSON or YAML), or as observed at run time: the unlisted-requests table the
//! admin listener serves at `GET /routes/unlisted` (see `crate::unlisted`).
//! [`parse_app_routes`] turns each into [`AppRoute`]s with `{param}` / `{*rest}`
//! patterns, and [`merge_app_routes`] merges several inputs. [`check`] then reports:
//!
//! * **stale** — a rule that matches no application route (methods intersect, with GET
//!   implying HEAD, and the two patterns can match a common path);
//! * **partial** — an application route whose class depends on the value of one of its
//!   parameters, because some rule has a literal where the route has a parameter. It is
//!   found by classifying probe paths with the real classifier: every parameter takes a
//!   generic value (its own `{name}` text, which no literal can equal) and every literal
//!   that an overlapping rule has at its position (a catch-all also takes one and two
//!   generic segments and the tail of every overlapping rule). Probes are classified
//!   without headers or query, so rules with `when` conditions never make a route
//!   partial by themselves;
//! * **unreviewed** / **changed** — with a [`Lock`]: a route missing from the lock, or
//!   whose class (its generic probe's class) differs from the lock's.
//!
//! The lock file is a reviewed snapshot of every route's class; [`render_lock`] writes it
//! sorted by path, then method, one route a line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::classify::NoHeaders;
use super::pattern::{self, Segment};
use super::{base_name, is_token, Class, Diagnostic, Manifest, RequestParts, Rule};

/// At most this many probes per route for the full cross product of parameter values;
/// beyond it each parameter is varied alone, the others kept generic.
pub const PROBE_CAP: usize = 256;

/// The OpenAPI operation keys, in the order the specification lists them.
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One route the application serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRoute {
    /// Upper-case method.
    pub method: String,
    /// The route as a canonical manifest pattern, e.g. `/api/{ws}/files/{*path}`.
    pub path: String,
    pub segments: Vec<Segment>,
    /// 1-based line in the input it came from; 0 when unknown.
    pub line: u32,
    /// For a route observed at run time (an entry of the `GET /routes/unlisted` table):
    /// the requests it counted, an upper bound. `None` for a route the application
    /// declares (a route list or an OpenAPI document).
    pub seen: Option<u64>,
}

/// Parse an application route list; the format is detected by content: a JSON object
/// with a `routes` array and no `openapi` or `swagger` field is an unlisted-requests
/// table (`GET /routes/unlisted`, see [`crate::unlisted`]), any other document starting
/// with `{` is OpenAPI JSON, one with a top-level `openapi:` key is OpenAPI YAML,
/// anything else is a `METHOD /path` list. Duplicate routes are dropped.
pub fn parse_app_routes(file: &str, text: &str) -> Result<Vec<AppRoute>, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let routes = if text.trim_start().starts_with('{') {
        if looks_like_unlisted_table(text) {
            unlisted_routes(file, text)?
        } else {
            let doc: OpenApiDoc = serde_json::from_str(text).map_err(|e| {
                Diagnostic::error(
                    file,
                    e.line() as u32,
                    format!("expected an OpenAPI 3 document: {e}"),
                )
            })?;
            openapi_routes(file, text, doc)?
        }
    } else if looks_like_openapi_yaml(text) {
        let doc: OpenApiDoc = serde_yaml::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line() as u32).unwrap_or(0);
            Diagnostic::error(file, line, format!("expected an OpenAPI 3 document: {e}"))
        })?;
        openapi_routes(file, text, doc)?
    } else {
        text_routes(file, text)?
    };
    let mut seen = std::collections::HashSet::new();
    Ok(routes
        .into_iter()
        .filter(|r| seen.insert((r.method.clone(), r.path.clone())))
        .collect())
}

/// A JSON object with a `routes` array and without the fields that make an OpenAPI
/// document (`openapi`, `swagger`, `paths`). Invalid JSON is not a table: the OpenAPI
/// parser reports where it breaks.
fn looks_like_unlisted_table(text: &str) -> bool {
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(text) else {
        return false;
    };
    doc.get("routes").is_some_and(serde_json::Value::is_array)
        && !["openapi", "swagger", "paths"]
            .iter()
            .any(|k| doc.contains_key(*k))
}

/// The part of an unlisted-requests table that drift reads; other fields (`capacity`,
/// `total`, an entry's `method_kind`, `error`) are ignored.
#[derive(Deserialize)]
struct UnlistedDoc {
    routes: Vec<UnlistedEntry>,
}

#[derive(Deserialize)]
struct UnlistedEntry {
    method: String,
    path: String,
    count: Option<u64>,
}

/// The entries of an unlisted-requests table, in table order (highest count first).
/// A shape's `{}` segments become `{p1}`, `{p2}`, … and a final `{*}` becomes
/// `{*rest}`, so that every shape is a pattern; other segments are taken as written.
fn unlisted_routes(file: &str, text: &str) -> Result<Vec<AppRoute>, Diagnostic> {
    let doc: UnlistedDoc = serde_json::from_str(text).map_err(|e| {
        Diagnostic::error(
            file,
            e.line() as u32,
            format!("expected an unlisted-routes table (GET /routes/unlisted): {e}"),
        )
    })?;
    let mut out = Vec::with_capacity(doc.routes.len());
    for (i, entry) in doc.routes.into_iter().enumerate() {
        let at = |m: String| {
            Diagnostic::error(
                file,
                0,
                format!("routes[{i}] ({} {}): {m}", entry.method, entry.path),
            )
        };
        let method = parse_method(&entry.method).map_err(at)?;
        let named = name_shape_params(&entry.path);
        let segments = pattern::parse(&named).map_err(|e| at(e.to_string()))?;
        out.push(AppRoute {
            method,
            path: pattern::render(&segments),
            segments,
            line: 0,
            seen: Some(entry.count.unwrap_or(0)),
        });
    }
    Ok(out)
}

/// `/api/{}/exports/{}/{*}` -> `/api/{p1}/exports/{p2}/{*rest}`.
fn name_shape_params(shape: &str) -> String {
    let mut out = String::with_capacity(shape.len() + 8);
    let mut n = 0;
    for (i, seg) in shape.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg {
            "{}" => {
                n += 1;
                let _ = write!(out, "{{p{n}}}");
            }
            "{*}" => out.push_str("{*rest}"),
            _ => out.push_str(seg),
        }
    }
    out
}

fn looks_like_openapi_yaml(text: &str) -> bool {
    text.lines().any(|l| {
        ["openapi", "\"openapi\"", "'openapi'", "swagger"]
            .iter()
            .any(|k| {
                l.strip_prefix(k)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
            })
    })
}

fn text_routes(file: &str, text: &str) -> Result<Vec<AppRoute>, Diagnostic> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n as u32 + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let (Some(methods), Some(path), None) = (words.next(), words.next(), words.next()) else {
            return Err(Diagnostic::error(
                file,
                line,
                format!("expected 'METHOD /path' (e.g. 'GET /api/{{id}}'), found {content:?}"),
            ));
        };
        let segments = convert_path(path, false).map_err(|m| Diagnostic::error(file, line, m))?;
        let canonical = pattern::render(&segments);
        for m in methods.split(',') {
            let method = parse_method(m).map_err(|msg| Diagnostic::error(file, line, msg))?;
            out.push(AppRoute {
                method,
                path: canonical.clone(),
                segments: segments.clone(),
                line,
                seen: None,
            });
        }
    }
    Ok(out)
}

/// A `#` at the start of the line or after whitespace starts a comment (paths never
/// contain `#`).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            return &line[..i];
        }
    }
    line
}

/// An HTTP method token (RFC 9110), upper-cased: route tables are not requests, and
/// frameworks print methods in either case.
fn parse_method(m: &str) -> Result<String, String> {
    if m == "*" {
        return Err("'*' is not a method; list each method the route serves".into());
    }
    if !is_token(m) {
        return Err(format!(
            "expected an HTTP method such as GET or POST, found {m:?}"
        ));
    }
    Ok(m.to_ascii_uppercase())
}

/// Convert a router-style path into segments. `openapi` restricts the syntax to
/// OpenAPI's `{param}` (always one segment). A segment mixing text and a parameter
/// (`report.{format}`) becomes one parameter: it matches one segment whose value varies.
fn convert_path(raw: &str, openapi: bool) -> Result<Vec<Segment>, String> {
    if !raw.starts_with('/') {
        return Err(format!("path {raw:?} must start with '/'"));
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(format!("path {raw:?} contains whitespace"));
    }
    let mut canonical = String::new();
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        canonical.push('/');
        canonical.push_str(&convert_segment(seg, openapi));
    }
    if canonical.is_empty() {
        canonical.push('/');
    }
    pattern::parse(&canonical).map_err(|e| format!("path {raw:?}: {e}"))
}

fn param(name: &str) -> String {
    format!("{{{}}}", param_name(name))
}

fn rest(name: &str) -> String {
    format!("{{*{}}}", param_name(name))
}

/// Parameter names keep letters, digits, `_` and `-`; anything else becomes `_`.
fn param_name(name: &str) -> String {
    if name.is_empty() {
        return "param".into();
    }
    name.chars()
        .map(|c| {
            if u8::try_from(c).is_ok_and(pattern::is_name_byte) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn convert_segment(seg: &str, openapi: bool) -> String {
    if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        if !inner.contains(['{', '}']) {
            if openapi {
                return param(inner);
            }
            if let Some(name) = inner.strip_prefix('*') {
                return rest(name);
            }
            if let Some(name) = inner.strip_suffix("...") {
                return rest(name); // Go 1.22 ServeMux
            }
            // Starlette / FastAPI `{name:type}`; the `path` converter spans segments.
            return match inner.split_once(':') {
                Some((name, "path")) => rest(name),
                Some((name, _)) => param(name),
                None => param(inner),
            };
        }
    }
    if !openapi {
        // Flask / Werkzeug `<name>`, `<converter:name>`; `path` spans segments.
        if let Some(inner) = seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
            if !inner.contains(['<', '>']) {
                return match inner.rsplit_once(':') {
                    Some(("path", name)) => rest(name),
                    Some((_, name)) => param(name),
                    None => param(inner),
                };
            }
        }
        if let Some(name) = seg.strip_prefix(':') {
            return param(name); // Express, Gin, Rails
        }
        if let Some(name) = seg.strip_prefix('*') {
            return rest(if name.is_empty() { "rest" } else { name });
        }
    }
    // Text around a parameter: the segment as a whole is one parameter.
    let embedded = |open: char, close: char| {
        let start = seg.find(open)?;
        let len = seg[start + 1..].find(close)?;
        Some(&seg[start + 1..start + 1 + len])
    };
    if let Some(inner) = embedded('{', '}') {
        let name = inner.split(':').next().unwrap_or(inner);
        return param(name.trim_start_matches('*'));
    }
    if !openapi {
        if let Some(inner) = embedded('<', '>') {
            return param(inner.rsplit(':').next().unwrap_or(inner));
        }
    }
    seg.to_string()
}

/// The part of an OpenAPI document that drift reads.
#[derive(Deserialize)]
struct OpenApiDoc {
    openapi: Option<Version>,
    swagger: Option<Version>,
    paths: Option<BTreeMap<String, Option<PathItem>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Version {
    Text(String),
    Number(f64),
}

impl Version {
    fn text(&self) -> String {
        match self {
            Version::Text(s) => s.clone(),
            Version::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct PathItem {
    get: Option<serde::de::IgnoredAny>,
    put: Option<serde::de::IgnoredAny>,
    post: Option<serde::de::IgnoredAny>,
    delete: Option<serde::de::IgnoredAny>,
    options: Option<serde::de::IgnoredAny>,
    head: Option<serde::de::IgnoredAny>,
    patch: Option<serde::de::IgnoredAny>,
    trace: Option<serde::de::IgnoredAny>,
}

impl PathItem {
    fn operations(&self) -> impl Iterator<Item = &'static str> + '_ {
        let present = [
            self.get.is_some(),
            self.put.is_some(),
            self.post.is_some(),
            self.delete.is_some(),
            self.options.is_some(),
            self.head.is_some(),
            self.patch.is_some(),
            self.trace.is_some(),
        ];
        OPENAPI_METHODS
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(m, _)| *m)
    }
}

fn openapi_routes(file: &str, text: &str, doc: OpenApiDoc) -> Result<Vec<AppRoute>, Diagnostic> {
    match (&doc.openapi, &doc.swagger) {
        (Some(v), _) if v.text().starts_with('3') => {}
        (Some(v), _) => {
            return Err(Diagnostic::error(
                file,
                key_line(text, "openapi"),
                format!("'openapi' = {:?}: expected an OpenAPI 3.x document", v.text()),
            ))
        }
        (None, Some(_)) => {
            return Err(Diagnostic::error(
                file,
                key_line(text, "swagger"),
                "Swagger 2.0 is not supported: expected an OpenAPI 3 document (convert it, or list routes as 'METHOD /path' lines)",
            ))
        }
        (None, None) => {
            return Err(Diagnostic::error(
                file,
                1,
                "expected an OpenAPI 3 document with a top-level 'openapi' field, or a list of 'METHOD /path' lines",
            ))
        }
    }
    let Some(paths) = doc.paths else {
        return Err(Diagnostic::error(
            file,
            0,
            "OpenAPI document has no 'paths' object",
        ));
    };
    let mut out = Vec::new();
    for (path, item) in paths {
        let line = key_line(text, &path);
        let segments = convert_path(&path, true).map_err(|m| Diagnostic::error(file, line, m))?;
        let canonical = pattern::render(&segments);
        for op in item.iter().flat_map(PathItem::operations) {
            out.push(AppRoute {
                method: op.to_ascii_uppercase(),
                path: canonical.clone(),
                segments: segments.clone(),
                line,
                seen: None,
            });
        }
    }
    out.sort_by_key(|r| r.line);
    Ok(out)
}

/// The first line where `key` appears as a mapping key (JSON or YAML); 0 if none.
fn key_line(text: &str, key: &str) -> u32 {
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix(['"', '\'']).unwrap_or(t);
        if let Some(after) = t.strip_prefix(key) {
            let after = after.strip_prefix(['"', '\'']).unwrap_or(after);
            if after.trim_start().starts_with(':') {
                return n as u32 + 1;
            }
        }
    }
    0
}

/// Several route inputs merged into one list by [`merge_app_routes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedRoutes {
    pub routes: Vec<AppRoute>,
    /// `source[i]`: the index of the input `routes[i]` came from.
    pub source: Vec<usize>,
    /// Per input: routes dropped because an earlier input has the same method and
    /// shape (parameter names aside).
    pub duplicates: Vec<usize>,
    /// Per input: observed routes dropped because a declared route (of any input)
    /// covers them.
    pub covered: Vec<usize>,
}

/// Merge the route lists of several inputs, in order. A route is dropped when
///
/// * an earlier input has a route with the same method and shape (the same pattern up
///   to parameter names): the first one is kept, with its file and line; or
/// * it was observed at run time ([`AppRoute::seen`]) and a declared route covers it:
///   the same method (or GET for an observed HEAD), and every path the observed
///   pattern matches the declared one matches too (`/api/acme/runs` under
///   `/api/{ws}/runs`). The declared route is checked already, and the observation
///   says nothing more.
pub fn merge_app_routes(inputs: Vec<Vec<AppRoute>>) -> MergedRoutes {
    let mut merged = MergedRoutes {
        duplicates: vec![0; inputs.len()],
        covered: vec![0; inputs.len()],
        ..MergedRoutes::default()
    };
    let declared: Vec<(String, Vec<Segment>)> = inputs
        .iter()
        .flatten()
        .filter(|r| r.seen.is_none())
        .map(|r| (r.method.clone(), r.segments.clone()))
        .collect();
    let mut first_input: HashMap<(String, String), usize> = HashMap::new();
    for (k, routes) in inputs.into_iter().enumerate() {
        for route in routes {
            if route.seen.is_some()
                && declared.iter().any(|(method, segments)| {
                    (*method == route.method || (method == "GET" && route.method == "HEAD"))
                        && pattern_covers(segments, &route.segments)
                })
            {
                merged.covered[k] += 1;
                continue;
            }
            let key = (route.method.clone(), shape_key(&route.segments));
            match first_input.get(&key) {
                Some(&earlier) if earlier != k => {
                    merged.duplicates[k] += 1;
                    continue;
                }
                Some(_) => {}
                None => {
                    first_input.insert(key, k);
                }
            }
            merged.routes.push(route);
            merged.source.push(k);
        }
    }
    merged
}

/// The pattern with parameter names erased: `/a/{}/{*}`.
pub(crate) fn shape_key(segments: &[Segment]) -> String {
    let mut out = String::new();
    for seg in segments {
        out.push('/');
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Param(_) => out.push_str("{}"),
            Segment::Rest(_) => out.push_str("{*}"),
        }
    }
    out
}

/// Does `general` match every path that `specific` matches? A literal is covered by
/// the same literal or a parameter, a parameter by a parameter, and anything non-empty
/// by a catch-all; a catch-all only by a catch-all.
pub fn pattern_covers(general: &[Segment], specific: &[Segment]) -> bool {
    match (general.first(), specific.first()) {
        (None, None) => true,
        (Some(Segment::Rest(_)), Some(_)) => true,
        (_, Some(Segment::Rest(_))) | (None, _) | (_, None) => false,
        (Some(g), Some(s)) => {
            let ok = match (g, s) {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Literal(_), _) => false,
                (Segment::Param(_), _) => true,
                (Segment::Rest(_), _) => unreachable!("handled above"),
            };
            ok && pattern_covers(&general[1..], &specific[1..])
        }
    }
}

/// Can the two patterns match a common path? Literals must be equal, a `{param}`
/// matches any one segment, a `{*rest}` one or more.
pub fn patterns_overlap(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (Some(Segment::Rest(_)), _) => !b.is_empty(),
        (_, Some(Segment::Rest(_))) => !a.is_empty(),
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => {
            let same = match (x, y) {
                (Segment::Literal(l), Segment::Literal(m)) => l == m,
                _ => true,
            };
            same && patterns_overlap(&a[1..], &b[1..])
        }
    }
}

/// The route as the classifier sees it: its pattern text goes through
/// [`Manifest::rewrite`] like a request path (an alias's `from` is literal, so it can only
/// replace literal segments).
fn effective_segments(manifest: &Manifest, route: &AppRoute) -> Vec<Segment> {
    let path = manifest.rewrite(&route.path);
    if path.alias.is_none() {
        return route.segments.clone();
    }
    // A literal `to` followed by the tail of a valid pattern is a valid pattern.
    pattern::parse(&format!("{}{}", path.prefix, path.rest))
        .unwrap_or_else(|_| route.segments.clone())
}

/// A rule with no application route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    /// `file:line` of the rule.
    pub rule: String,
    pub methods: Vec<String>,
    pub path: String,
    pub class: &'static str,
}

/// An application route whose class depends on the value of `param`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partial {
    pub method: String,
    pub route: String,
    pub param: String,
    /// Value -> class, for the values that give a different class than `otherwise`.
    /// A catch-all's value is its segments joined by `/`, `*` standing for any segment.
    pub classes: BTreeMap<String, &'static str>,
    /// The class for every other value.
    pub otherwise: &'static str,
    #[serde(skip)]
    pub line: u32,
}

/// An application route that the lock does not list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreviewed {
    pub method: String,
    pub route: String,
    pub class: &'static str,
    /// `file:line` of the winning rule, or `default`.
    pub rule: String,
    #[serde(skip)]
    pub line: u32,
}

/// An application route whose class is not the one recorded in the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub method: String,
    pub route: String,
    pub was: &'static str,
    pub now: &'static str,
    /// `file:line` of the winning rule now, or `default`.
    pub rule: String,
    #[serde(skip)]
    pub line: u32,
}

/// Every finding; serializes as exactly `{"stale","partial","unreviewed","changed"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub stale: Vec<Stale>,
    pub partial: Vec<Partial>,
    pub unreviewed: Vec<Unreviewed>,
    pub changed: Vec<Changed>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.stale.is_empty()
            && self.partial.is_empty()
            && self.unreviewed.is_empty()
            && self.changed.is_empty()
    }
}

/// The class an application route gets now (its generic probe), and from which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub method: String,
    pub route: String,
    pub line: u32,
    pub class: Class,
    /// Index of the winning rule in [`Manifest::rules`]; `None` for the default class.
    pub rule: Option<usize>,
}

/// The outcome of a drift check.
#[derive(Debug, Clone)]
pub struct Drift {
    pub report: Report,
    /// One entry per application route, in input order.
    pub assessed: Vec<Assessment>,
}

/// Compare the manifest with the application's routes and, if given, the lock.
pub fn check(manifest: &Manifest, routes: &[AppRoute], lock: Option<&Lock>) -> Drift {
    let effective: Vec<Vec<Segment>> = routes
        .iter()
        .map(|r| effective_segments(manifest, r))
        .collect();

    let mut report = Report::default();
    for rule in manifest.rules() {
        let used = routes.iter().zip(&effective).any(|(r, eff)| {
            rule.methods.overlaps_method(&r.method) && patterns_overlap(&rule.segments, eff)
        });
        if !used {
            report.stale.push(Stale {
                rule: rule.location(),
                methods: rule.methods.names().into_iter().map(String::from).collect(),
                path: rule.path.clone(),
                class: rule.class.as_str(),
            });
        }
    }

    let mut assessed = Vec::with_capacity(routes.len());
    for (route, eff) in routes.iter().zip(&effective) {
        let probed = probe_route(manifest, route, eff);
        report.partial.extend(probed.partial);
        let now = probed.assessment;
        let rule_name = || rule_location(manifest, now.rule);
        if let Some(lock) = lock {
            match lock.get(&now.method, &now.route) {
                None => report.unreviewed.push(Unreviewed {
                    method: now.method.clone(),
                    route: now.route.clone(),
                    class: now.class.as_str(),
                    rule: rule_name(),
                    line: now.line,
                }),
                Some(entry) if entry.class != now.class => report.changed.push(Changed {
                    method: now.method.clone(),
                    route: now.route.clone(),
                    was: entry.class.as_str(),
                    now: now.class.as_str(),
                    rule: rule_name(),
                    line: now.line,
                }),
                Some(_) => {}
            }
        }
        assessed.push(now);
    }
    Drift { report, assessed }
}

/// The class each application route gets under `manifest` and the winning rule: the
/// assessment [`check`] makes (its generic probe, no headers or query), without the
/// findings. `fleetgate routes diff` compares two manifests with it.
pub fn assess(manifest: &Manifest, routes: &[AppRoute]) -> Vec<Assessment> {
    assess_with_values(manifest, routes)
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// [`assess`], plus for each route the parameter values that give another class than
/// its generic probe (the `partial` finding of [`check`]).
pub fn assess_with_values(
    manifest: &Manifest,
    routes: &[AppRoute],
) -> Vec<(Assessment, Vec<Partial>)> {
    routes
        .iter()
        .map(|r| {
            let p = probe_route(manifest, r, &effective_segments(manifest, r));
            (p.assessment, p.partial)
        })
        .collect()
}

fn rule_location(manifest: &Manifest, rule: Option<usize>) -> String {
    rule.map_or_else(|| "default".to_string(), |i| manifest.rules()[i].location())
}

/// The values one route parameter takes in probes; `values[0]` is the generic one.
struct ParamValues {
    name: String,
    values: Vec<Vec<String>>,
}

struct Probed {
    assessment: Assessment,
    partial: Vec<Partial>,
}

fn probe_route(manifest: &Manifest, route: &AppRoute, effective: &[Segment]) -> Probed {
    let params = param_values(manifest, &route.method, effective);
    let assignments = assignments(&params);

    let mut classes: HashMap<&[usize], Class> = HashMap::with_capacity(assignments.len());
    let mut base: Option<(Class, Option<usize>)> = None;
    for a in &assignments {
        let path = probe_path(&route.segments, &params, a);
        let d = manifest.classify(&RequestParts {
            method: &route.method,
            path: &path,
            query: None,
            headers: &NoHeaders,
        });
        if base.is_none() {
            base = Some((d.class, d.rule_index));
        }
        classes.insert(a.as_slice(), d.class);
    }
    let (base_class, base_rule) = base.expect("the generic probe always exists");

    // Parameter k's value v is reported when a probe with k = v gets the other class than
    // the generic probe while the same probe with k generic does not: v itself flips it.
    // (Every route with a differing probe has such a step on the way from the generic
    // probe to it.) Contexts with the other parameters generic come first.
    let mut changes: Vec<BTreeMap<String, &'static str>> = vec![BTreeMap::new(); params.len()];
    let mut ordered: Vec<&Vec<usize>> = assignments.iter().collect();
    ordered.sort_by_key(|a| a.iter().filter(|&&i| i != 0).count());
    for a in ordered {
        let class = classes[a.as_slice()];
        if class == base_class {
            continue;
        }
        for (k, &v) in a.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let mut generic = a.clone();
            generic[k] = 0;
            if classes.get(generic.as_slice()) == Some(&base_class) {
                let p = &params[k];
                changes[k]
                    .entry(display_value(&p.values[v], &p.name))
                    .or_insert(class.as_str());
            }
        }
    }
    let partial = params
        .iter()
        .zip(changes)
        .filter(|(_, c)| !c.is_empty())
        .map(|(p, classes)| Partial {
            method: route.method.clone(),
            route: route.path.clone(),
            param: p.name.clone(),
            classes,
            otherwise: base_class.as_str(),
            line: route.line,
        })
        .collect();
    Probed {
        assessment: Assessment {
            method: route.method.clone(),
            route: route.path.clone(),
            line: route.line,
            class: base_class,
            rule: base_rule,
        },
        partial,
    }
}

fn generic(name: &str) -> String {
    format!("{{{name}}}")
}

/// Collect, for each parameter of the (aliased) route, the literals that rules reachable
/// with this method have at its position.
fn param_values(manifest: &Manifest, method: &str, effective: &[Segment]) -> Vec<ParamValues> {
    let mut params: Vec<(usize, ParamValues)> = effective
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Segment::Param(n) => Some((
                i,
                ParamValues {
                    name: n.clone(),
                    values: vec![vec![generic(n)]],
                },
            )),
            Segment::Rest(n) => Some((
                i,
                ParamValues {
                    name: n.clone(),
                    values: vec![vec![generic(n)], vec![generic(n), generic(n)]],
                },
            )),
            Segment::Literal(_) => None,
        })
        .collect();
    let rules = manifest
        .rules()
        .iter()
        .filter(|r| r.methods.matches(method) && patterns_overlap(&r.segments, effective));
    for rule in rules {
        for (i, p) in params.iter_mut() {
            let i = *i;
            if rule.segments[..i.min(rule.segments.len())]
                .iter()
                .any(|s| matches!(s, Segment::Rest(_)))
            {
                break;
            }
            let value: Option<Vec<String>> = match (&effective[i], rule.segments.get(i)) {
                (Segment::Param(_), Some(Segment::Literal(l))) => Some(vec![l.clone()]),
                (Segment::Rest(_), Some(_)) => Some(concrete_tail(&rule.segments[i..], &p.name)),
                _ => None,
            };
            if let Some(v) = value {
                if !p.values.contains(&v) {
                    p.values.push(v);
                }
            }
        }
    }
    params.into_iter().map(|(_, p)| p).collect()
}

/// A rule's tail as concrete segments: literals as written, parameters generic.
fn concrete_tail(tail: &[Segment], name: &str) -> Vec<String> {
    tail.iter()
        .map(|s| match s {
            Segment::Literal(l) => l.clone(),
            Segment::Param(_) | Segment::Rest(_) => generic(name),
        })
        .collect()
}

/// Every combination of values (index vectors), the all-generic one first; or, when
/// that exceeds [`PROBE_CAP`], each parameter varied alone.
fn assignments(params: &[ParamValues]) -> Vec<Vec<usize>> {
    let total = params
        .iter()
        .try_fold(1usize, |acc, p| acc.checked_mul(p.values.len()));
    let mut out = vec![vec![0; params.len()]];
    if total.is_some_and(|t| t <= PROBE_CAP) {
        for (k, p) in params.iter().enumerate() {
            let mut more = Vec::new();
            for a in &out {
                for v in 1..p.values.len() {
                    let mut b = a.clone();
                    b[k] = v;
                    more.push(b);
                }
            }
            out.extend(more);
        }
    } else {
        for (k, p) in params.iter().enumerate() {
            for v in 1..p.values.len() {
                let mut b = vec![0; params.len()];
                b[k] = v;
                out.push(b);
            }
        }
    }
    out
}

/// Render the route's own segments with the chosen parameter values.
fn probe_path(segments: &[Segment], params: &[ParamValues], assignment: &[usize]) -> String {
    let mut path = String::new();
    let mut k = 0;
    for seg in segments {
        match seg {
            Segment::Literal(l) => {
                path.push('/');
                path.push_str(l);
            }
            Segment::Param(_) | Segment::Rest(_) => {
                for part in &params[k].values[assignment[k]] {
                    path.push('/');
                    path.push_str(part);
                }
                k += 1;
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn display_value(value: &[String], name: &str) -> String {
    let g = generic(name);
    value
        .iter()
        .map(|s| if *s == g { "*" } else { s.as_str() })
        .collect::<Vec<_>>()
        .join("/")
}

/// One reviewed route of a lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    pub method: String,
    pub route: String,
    pub class: Class,
    /// The winning rule when the lock was written: `file:line` (file name inside the
    /// manifest directory) or `default`. Informational; only the class is compared.
    pub rule: String,
}

/// A lock file: the reviewed class of every application route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    entries: HashMap<(String, String), LockEntry>,
}

pub const LOCK_HEADER: &str = "\
# fleetgate app-routes lock: the reviewed class of every application route.
# Generated by `fleetgate routes drift --update`; do not edit by hand. Review changes
# to this file like code: a changed class moves a route between the ide and the fleet.
# METHOD PATH CLASS RULE (rule: file:line in the manifest directory, or default)
";

impl Lock {
    /// Parse a lock file: `#` comments and blank lines are skipped, every other line
    /// is `METHOD PATH CLASS RULE`.
    pub fn parse(file: &str, text: &str) -> Result<Lock, Diagnostic> {
        let mut entries: HashMap<(String, String), LockEntry> = HashMap::new();
        let mut first_line: HashMap<(String, String), u32> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n as u32 + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [method, path, class, rule] = fields[..] else {
                return Err(Diagnostic::error(
                    file,
                    line,
                    format!("expected 'METHOD PATH CLASS RULE', found {content:?}"),
                ));
            };
            let method = parse_method(method).map_err(|m| Diagnostic::error(file, line, m))?;
            let route = pattern::parse(path)
                .map(|s| pattern::render(&s))
                .map_err(|e| Diagnostic::error(file, line, format!("path {path:?}: {e}")))?;
            let class = Class::parse(class).ok_or_else(|| {
                Diagnostic::error(
                    file,
                    line,
                    format!("expected class \"ide-only\" or \"fleet-ok\", found {class:?}"),
                )
            })?;
            let key = (method.clone(), route.clone());
            if let Some(prev) = first_line.get(&key) {
                return Err(Diagnostic::error(
                    file,
                    line,
                    format!("{method} {route} is listed twice (first at line {prev})"),
                ));
            }
            first_line.insert(key.clone(), line);
            entries.insert(
                key,
                LockEntry {
                    method,
                    route,
                    class,
                    rule: rule.to_string(),
                },
            );
        }
        Ok(Lock { entries })
    }

    pub fn get(&self, method: &str, route: &str) -> Option<&LockEntry> {
        self.entries.get(&(method.to_string(), route.to_string()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The lock-file text for these assessments: the header, then one
/// `METHOD PATH CLASS RULE` line per route, sorted by path, then method.
pub fn render_lock(manifest: &Manifest, assessed: &[Assessment]) -> String {
    let mut rows: Vec<(&str, &str, &str, String)> = assessed
        .iter()
        .map(|a| {
            let rule = a.rule.map_or_else(
                || "default".to_string(),
                |i| lock_rule_name(&manifest.rules()[i]),
            );
            (a.route.as_str(), a.method.as_str(), a.class.as_str(), rule)
        })
        .collect();
    rows.sort();
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut out = String::from(LOCK_HEADER);
    for (route, method, class, rule) in rows {
        let _ = writeln!(out, "{method} {route} {class} {rule}");
    }
    out
}

/// `file:line` with the file name only, so the lock does not depend on where the
/// manifest directory is when the command runs.
fn lock_rule_name(rule: &Rule) -> String {
    format!("{}:{}", base_name(&rule.file), rule.line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::from_sources(&[("routes/a.toml".into(), text.into())]).unwrap()
    }

    fn routes(text: &str) -> Vec<AppRoute> {
        parse_app_routes("app.txt", text).unwrap()
    }

    fn pairs(rs: &[AppRoute]) -> Vec<(String, String)> {
        rs.iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    }

    fn pair(m: &str, p: &str) -> (String, String) {
        (m.to_string(), p.to_string())
    }

    #[test]
    fn parses_every_router_style() {
        let rs = routes(concat!(
            "# comment\n",
            "\n",
            "GET /a/{id}/x\n",
            "get /b/:id   # trailing comment\n",
            "POST /c/<id>\n",
            "PUT /d/<int:id>/e\n",
            "GET /f/<path:rest>\n",
            "DELETE /g/*tail\n",
            "GET /h/*\n",
            "GET,HEAD /i/{name:int}/{p:path}\n",
            "PATCH /j/{*all}\n",
            "GET /k/report.{format}\n",
            "GET /k/\n",
            "GET /\n",
            "GET /a/{id}/x\n",
        ));
        assert_eq!(
            pairs(&rs),
            vec![
                pair("GET", "/a/{id}/x"),
                pair("GET", "/b/{id}"),
                pair("POST", "/c/{id}"),
                pair("PUT", "/d/{id}/e"),
                pair("GET", "/f/{*rest}"),
                pair("DELETE", "/g/{*tail}"),
                pair("GET", "/h/{*rest}"),
                pair("GET", "/i/{name}/{*p}"),
                pair("HEAD", "/i/{name}/{*p}"),
                pair("PATCH", "/j/{*all}"),
                pair("GET", "/k/{format}"),
                pair("GET", "/k"),
                pair("GET", "/"),
            ]
        );
        assert_eq!(rs[0].line, 3);
        assert_eq!(rs[1].line, 4);
    }

    #[test]
    fn bad_text_lines_name_file_and_line() {
        let e = parse_app_routes("app.txt", "GET /a\n\nGET\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "app.txt:3: error: expected 'METHOD /path' (e.g. 'GET /api/{id}'), found \"GET\""
        );
        let e = parse_app_routes("app.txt", "GET a/b\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("app.txt:1: error: path \"a/b\" must start with '/'"),
            "{e}"
        );
        let e = parse_app_routes("app.txt", "G(T /a\n").unwrap_err();
        assert!(e.to_string().contains("expected an HTTP method"), "{e}");
        let e = parse_app_routes("app.txt", "* /a\n").unwrap_err();
        assert!(e.to_string().contains("'*' is not a method"), "{e}");
        let e = parse_app_routes("app.txt", "GET /a/*x/b\n").unwrap_err();
        assert!(e.to_string().contains("must be the last segment"), "{e}");
        let e = parse_app_routes("app.txt", "GET /a /b\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    const OPENAPI_JSON: &str = r#"{
  "openapi": "3.0.3",
  "info": { "title": "t", "version": "1" },
  "paths": {
    "/pets": {
      "get": { "responses": { "200": { "description": "ok" } } },
      "post": { "responses": {} }
    },
    "/pets/{petId}": {
      "parameters": [ { "name": "petId", "in": "path" } ],
      "get": {},
      "delete": {}
    }
  }
}"#;

    const OPENAPI_YAML: &str = "\
openapi: 3.1.0
info:
  title: t
  version: '1'
paths:
  /pets:
    get:
      responses:
        200:
          description: ok
    post: {}
  /pets/{petId}:
    summary: one pet
    get: {}
    delete: {}
  /files/{name}.json:
    put: {}
";

    #[test]
    fn parses_openapi_json() {
        let rs = parse_app_routes("api.json", OPENAPI_JSON).unwrap();
        assert_eq!(
            pairs(&rs),
            vec![
                pair("GET", "/pets"),
                pair("POST", "/pets"),
                pair("GET", "/pets/{petId}"),
                pair("DELETE", "/pets/{petId}"),
            ]
        );
        assert_eq!(rs[0].line, 5);
        assert_eq!(rs[2].line, 9);
    }

    #[test]
    fn parses_openapi_yaml() {
        let rs = parse_app_routes("api.yaml", OPENAPI_YAML).unwrap();
        assert_eq!(
            pairs(&rs),
            vec![
                pair("GET", "/pets"),
                pair("POST", "/pets"),
                pair("GET", "/pets/{petId}"),
                pair("DELETE", "/pets/{petId}"),
                pair("PUT", "/files/{name}"),
            ]
        );
        assert_eq!(rs[4].line, 16);
    }

    #[test]
    fn rejects_documents_that_are_not_openapi_3() {
        let e = parse_app_routes("a.json", "{\"openapi\": \"3.0.0\", \"paths\": [1]}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a.json:1: error: expected an OpenAPI 3 document"),
            "{e}"
        );
        let e = parse_app_routes("a.yaml", "swagger: '2.0'\npaths: {}\n").unwrap_err();
        assert!(
            e.to_string().contains("Swagger 2.0 is not supported"),
            "{e}"
        );
        let e = parse_app_routes("a.json", "{\"paths\": {}}").unwrap_err();
        assert!(e.to_string().contains("top-level 'openapi' field"), "{e}");
        let e = parse_app_routes("a.json", "{\"openapi\": \"3.0.0\", \"paths\": {").unwrap_err();
        assert!(e.line >= 1, "{e}");
        let e = parse_app_routes("a.yaml", "openapi: 3.0.0\npaths:\n  /a b:\n    get: {}\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a.yaml:3: error: path \"/a b\" contains whitespace"),
            "{e}"
        );
    }

    const UNLISTED: &str = r#"{"capacity":256,"total":{"read":3,"write":12},"routes":[
{"method":"POST","path":"/api/{}/exports/{}","method_kind":"write","count":12,"error":0},
{"method":"GET","path":"/api/acme/reports","method_kind":"read","count":2,"error":1},
{"method":"GET","path":"/deep/{}/{*}","method_kind":"read","count":1,"error":0},
{"method":"GET","path":"/","method_kind":"read","count":1,"error":0}]}"#;

    #[test]
    fn parses_an_unlisted_table() {
        let rs = parse_app_routes("unlisted.json", UNLISTED).unwrap();
        assert_eq!(
            pairs(&rs),
            vec![
                pair("POST", "/api/{p1}/exports/{p2}"),
                pair("GET", "/api/acme/reports"),
                pair("GET", "/deep/{p1}/{*rest}"),
                pair("GET", "/"),
            ]
        );
        assert_eq!(rs[0].seen, Some(12));
        assert_eq!(rs[0].line, 0);
        // Only `method` and `path` are needed; an empty table has no routes.
        let rs =
            parse_app_routes("u.json", r#"{"routes":[{"method":"get","path":"/a/{}"}]}"#).unwrap();
        assert_eq!(pairs(&rs), vec![pair("GET", "/a/{p1}")]);
        assert_eq!(rs[0].seen, Some(0));
        assert!(parse_app_routes("u.json", r#"{"routes":[]}"#)
            .unwrap()
            .is_empty());
        // The table the unlisted module serves reads back.
        let t = crate::unlisted::UnlistedTable::new(4);
        t.record("DELETE", "/x/{}");
        let rs = parse_app_routes("u.json", &t.to_json().to_string()).unwrap();
        assert_eq!(pairs(&rs), vec![pair("DELETE", "/x/{p1}")]);
        assert_eq!(rs[0].seen, Some(1));
    }

    #[test]
    fn format_detection_tells_a_table_from_openapi() {
        // OpenAPI JSON, also one that happens to have a `routes` field.
        let rs = parse_app_routes("api.json", OPENAPI_JSON).unwrap();
        assert!(rs.iter().all(|r| r.seen.is_none()));
        let both = r#"{"openapi":"3.0.0","routes":[],"paths":{"/a":{"get":{}}}}"#;
        assert_eq!(
            pairs(&parse_app_routes("a.json", both).unwrap()),
            vec![pair("GET", "/a")]
        );
        // `routes` that is not an array: not a table, so an OpenAPI error.
        let e = parse_app_routes("a.json", r#"{"routes":{}}"#).unwrap_err();
        assert!(e.to_string().contains("top-level 'openapi' field"), "{e}");
        // A table with a malformed entry names the file and the entry.
        let e = parse_app_routes("u.json", r#"{"routes":[{"method":"GET"}]}"#).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "u.json:1: error: expected an unlisted-routes table (GET /routes/unlisted): missing field `path`"
            ),
            "{e}"
        );
        let e = parse_app_routes(
            "u.json",
            r#"{"routes":[{"method":"GET","path":"/a"},{"method":"GET","path":"a/{}"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "u.json: error: routes[1] (GET a/{}): pattern must start with '/'"
        );
        let e =
            parse_app_routes("u.json", r#"{"routes":[{"method":"G T","path":"/"}]}"#).unwrap_err();
        assert!(e.to_string().contains("expected an HTTP method"), "{e}");
    }

    #[test]
    fn merging_inputs_drops_duplicates_and_covered_observations() {
        let listed =
            routes("GET /api/{ws}/runs\nPOST /api/{ws}/exports/{id}\nGET /a/{x}\nGET /a/{y}\n");
        let observed = parse_app_routes(
            "u.json",
            r#"{"routes":[
                {"method":"GET","path":"/api/acme/runs"},
                {"method":"HEAD","path":"/api/{}/runs"},
                {"method":"POST","path":"/api/{}/exports/{}"},
                {"method":"POST","path":"/api/{}/exports/{}/{*}"},
                {"method":"DELETE","path":"/api/{}/runs"},
                {"method":"GET","path":"/b/{}"}]}"#,
        )
        .unwrap();
        let more = routes("GET /b/{id}\nGET /a/{z}\n");
        let m = merge_app_routes(vec![listed, observed, more]);
        assert_eq!(
            pairs(&m.routes),
            vec![
                pair("GET", "/api/{ws}/runs"),
                pair("POST", "/api/{ws}/exports/{id}"),
                // Same shape in one input: both kept, as in a single-file run.
                pair("GET", "/a/{x}"),
                pair("GET", "/a/{y}"),
                // A catch-all is not covered by a fixed-length route, another method
                // not by GET.
                pair("POST", "/api/{p1}/exports/{p2}/{*rest}"),
                pair("DELETE", "/api/{p1}/runs"),
                // A declared route of a later input covers an observation too.
                pair("GET", "/b/{id}"),
            ]
        );
        assert_eq!(m.source, vec![0, 0, 0, 0, 1, 1, 2]);
        assert_eq!(m.covered, vec![0, 4, 0]);
        // GET /a/{z} repeats a shape of the first input.
        assert_eq!(m.duplicates, vec![0, 0, 1]);

        // Observed first: a covered observation does not hide the declared route.
        let m = merge_app_routes(vec![
            parse_app_routes("u.json", r#"{"routes":[{"method":"GET","path":"/r/{}"}]}"#).unwrap(),
            routes("GET /r/{id}\n"),
        ]);
        assert_eq!(pairs(&m.routes), vec![pair("GET", "/r/{id}")]);
        assert_eq!(m.source, vec![1]);
    }

    #[test]
    fn cover_of_patterns() {
        let p = |s: &str| pattern::parse(s).unwrap();
        assert!(pattern_covers(&p("/a/{x}"), &p("/a/b")));
        assert!(pattern_covers(&p("/a/{x}"), &p("/a/{y}")));
        assert!(!pattern_covers(&p("/a/b"), &p("/a/{y}")));
        assert!(pattern_covers(&p("/a/{*x}"), &p("/a/b/{c}/{*d}")));
        assert!(!pattern_covers(&p("/a/{x}/{y}"), &p("/a/{*d}")));
        assert!(!pattern_covers(&p("/a/{*x}"), &p("/a")));
        assert!(!pattern_covers(&p("/a"), &p("/a/b")));
        assert!(pattern_covers(&p("/"), &p("/")));
    }

    #[test]
    fn overlap_of_patterns() {
        let p = |s: &str| pattern::parse(s).unwrap();
        assert!(patterns_overlap(&p("/a/{x}"), &p("/a/b")));
        assert!(!patterns_overlap(&p("/a/{x}"), &p("/a/b/c")));
        assert!(patterns_overlap(&p("/a/{*x}"), &p("/a/b/c")));
        assert!(!patterns_overlap(&p("/a/{*x}"), &p("/a")));
        assert!(patterns_overlap(&p("/{*x}"), &p("/{y}/{*z}")));
        assert!(!patterns_overlap(&p("/a/{*x}"), &p("/b/{*x}")));
        assert!(patterns_overlap(&p("/"), &p("/")));
        assert!(!patterns_overlap(&p("/"), &p("/{*x}")));
    }

    const MANIFEST: &str = r#"
[manifest]
aliases = [{ from = "/v1", to = "/api" }]

[[rule]]
path = "/api/{ws}/git/{*rest}"
class = "ide-only"
why = "git"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/git/reviews"
class = "fleet-ok"
why = "db"

[[rule]]
methods = ["POST"]
path = "/api/{ws}/search"
class = "ide-only"
why = "grep"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/tree"
class = "ide-only"
why = "disk"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/tree"
class = "fleet-ok"
why = "snapshot"
[rule.when]
query = { snapshot = "*" }

[[rule]]
methods = ["DELETE"]
path = "/old/{x}"
class = "ide-only"
why = "gone"
"#;

    #[test]
    fn stale_rules_match_no_route() {
        let m = manifest(MANIFEST);
        let rs = routes("GET /api/{ws}/git/{*path}\nGET /api/{ws}/tree\nGET /old/{x}\n");
        let d = check(&m, &rs, None);
        let stale: Vec<&str> = d.report.stale.iter().map(|s| s.rule.as_str()).collect();
        // POST search (no POST route) and DELETE /old (GET only) are stale; the `when`
        // rule overlaps GET /api/{ws}/tree and is not.
        assert_eq!(stale, vec!["routes/a.toml:16", "routes/a.toml:36"]);
        assert_eq!(d.report.stale[0].methods, vec!["POST"]);
        assert_eq!(d.report.stale[0].path, "/api/{ws}/search");
        assert_eq!(d.report.stale[0].class, "ide-only");
        // An aliased route reaches the rule it is rewritten to.
        let d = check(&m, &routes("POST /v1/{ws}/search\n"), None);
        assert!(!d.report.stale.iter().any(|s| s.path == "/api/{ws}/search"));
        // A HEAD rule is used by a GET route.
        let m2 = manifest(
            "[[rule]]\nmethods = [\"HEAD\"]\npath = \"/h\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
        );
        assert!(check(&m2, &routes("GET /h\n"), None)
            .report
            .stale
            .is_empty());
    }

    #[test]
    fn partial_routes_name_param_and_values() {
        let m = manifest(MANIFEST);
        let rs = routes("GET /api/{ws}/git/{*path}\nPOST /api/{ws}/git/{*path}\nGET /api/{ws}/tree\nGET /v1/{ws}/git/{*p}\n");
        let d = check(&m, &rs, None);
        let got: Vec<(&str, &str, &str)> = d
            .report
            .partial
            .iter()
            .map(|p| (p.method.as_str(), p.route.as_str(), p.param.as_str()))
            .collect();
        // POST is not partial (the carve-out is GET only); the `when` rule does not make
        // GET /api/{ws}/tree partial; the aliased route is partial like the original.
        assert_eq!(
            got,
            vec![
                ("GET", "/api/{ws}/git/{*path}", "path"),
                ("GET", "/v1/{ws}/git/{*p}", "p")
            ]
        );
        let p = &d.report.partial[0];
        assert_eq!(p.otherwise, "ide-only");
        assert_eq!(
            p.classes,
            BTreeMap::from([("reviews".to_string(), "fleet-ok")])
        );
        assert_eq!(p.line, 1);
        assert_eq!(d.assessed[0].class, Class::IdeOnly);
        assert_eq!(d.assessed[0].rule, Some(0));
    }

    #[test]
    fn partial_on_a_one_segment_param_and_only_the_param_that_matters() {
        let m = manifest(concat!(
            "[[rule]]\npath = \"/a/special/{q}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\npath = \"/a/{p}/z\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
        ));
        let d = check(&m, &routes("GET /a/{p}/{q}\n"), None);
        assert_eq!(d.report.partial.len(), 1, "{:?}", d.report.partial);
        let p = &d.report.partial[0];
        assert_eq!(p.param, "p");
        assert_eq!(
            p.classes,
            BTreeMap::from([("special".to_string(), "ide-only")])
        );
        assert_eq!(p.otherwise, "fleet-ok");
        assert_eq!(d.assessed[0].rule, None);
    }

    #[test]
    fn catch_all_depth_and_tails_are_probed() {
        let m = manifest(concat!(
            "[[rule]]\npath = \"/f/{a}/{b}/{c}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\npath = \"/f/secret/{*x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
        ));
        let d = check(&m, &routes("GET /f/{*path}\n"), None);
        assert_eq!(d.report.partial.len(), 1);
        assert_eq!(
            d.report.partial[0].classes,
            BTreeMap::from([
                ("*/*/*".to_string(), "ide-only"),
                ("secret/*".to_string(), "ide-only")
            ])
        );
        assert!(d.report.stale.is_empty());
    }

    #[test]
    fn many_literals_fall_back_to_one_parameter_at_a_time() {
        let mut text = String::new();
        for i in 0..20 {
            let _ = write!(
                text,
                "[[rule]]\npath = \"/m/l{i}/{{y}}\"\nclass = \"ide-only\"\nwhy = \"x\"\n[[rule]]\npath = \"/m/{{x}}/k{i}\"\nclass = \"ide-only\"\nwhy = \"x\"\n"
            );
        }
        let m = manifest(&text);
        let d = check(&m, &routes("GET /m/{x}/{y}\n"), None);
        let params: Vec<&str> = d.report.partial.iter().map(|p| p.param.as_str()).collect();
        assert_eq!(params, vec!["x", "y"]);
        assert_eq!(d.report.partial[0].classes.len(), 20);
    }

    #[test]
    fn lock_findings_and_round_trip() {
        let m = manifest(MANIFEST);
        let rs = routes(
            "GET /api/{ws}/tree\nGET /api/{ws}/git/reviews\nPOST /api/{ws}/search\nGET /zzz\n",
        );
        let d = check(&m, &rs, None);
        let text = render_lock(&m, &d.assessed);
        assert!(text.starts_with(LOCK_HEADER));
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            vec![
                "GET /api/{ws}/git/reviews fleet-ok a.toml:10",
                "POST /api/{ws}/search ide-only a.toml:16",
                "GET /api/{ws}/tree ide-only a.toml:22",
                "GET /zzz fleet-ok default",
            ]
        );
        let lock = Lock::parse("routes/app-routes.lock", &text).unwrap();
        assert_eq!(lock.len(), 4);
        let d2 = check(&m, &rs, Some(&lock));
        assert!(d2.report.unreviewed.is_empty() && d2.report.changed.is_empty());

        // An edited lock: one route missing, one with another class.
        let edited = text
            .replace("GET /zzz fleet-ok default\n", "")
            .replace("GET /api/{ws}/tree ide-only", "GET /api/{ws}/tree fleet-ok");
        let lock = Lock::parse("l", &edited).unwrap();
        let d3 = check(&m, &rs, Some(&lock));
        assert_eq!(
            d3.report.unreviewed,
            vec![Unreviewed {
                method: "GET".into(),
                route: "/zzz".into(),
                class: "fleet-ok",
                rule: "default".into(),
                line: 4
            }]
        );
        assert_eq!(
            d3.report.changed,
            vec![Changed {
                method: "GET".into(),
                route: "/api/{ws}/tree".into(),
                was: "fleet-ok",
                now: "ide-only",
                rule: "routes/a.toml:22".into(),
                line: 1
            }]
        );
    }

    #[test]
    fn malformed_lock_lines_are_errors() {
        let e = Lock::parse("x.lock", "# c\nGET /a fleet-ok\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.lock:2: error: expected 'METHOD PATH CLASS RULE', found \"GET /a fleet-ok\""
        );
        let e = Lock::parse("x.lock", "GET /a both default\n").unwrap_err();
        assert!(e.to_string().contains("expected class"), "{e}");
        let e = Lock::parse(
            "x.lock",
            "GET /a ide-only default\nGET /a/ ide-only default\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("listed twice (first at line 1)"),
            "{e}"
        );
    }

    #[test]
    fn json_shape_is_exact() {
        let m = manifest(MANIFEST);
        let d = check(
            &m,
            &routes("GET /api/{ws}/git/{*p}\n"),
            Some(&Lock::default()),
        );
        let v = serde_json::to_value(&d.report).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["changed", "partial", "stale", "unreviewed"]);
        assert_eq!(
            v["partial"][0],
            serde_json::json!({"method": "GET", "route": "/api/{ws}/git/{*p}", "param": "p",
                "classes": {"reviews": "fleet-ok"}, "otherwise": "ide-only"})
        );
        assert_eq!(
            v["unreviewed"][0],
            serde_json::json!({"method": "GET", "route": "/api/{ws}/git/{*p}", "class": "ide-only",
                "rule": "routes/a.toml:5"})
        );
        assert_eq!(
            v["stale"][0],
            serde_json::json!({"rule": "routes/a.toml:16", "methods": ["POST"],
                "path": "/api/{ws}/search", "class": "ide-only"})
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("{p}".to_string()),
            Just("{q}".to_string()),
        ]
    }

    fn rule_path() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(segs, rest)| {
            let mut seen = std::collections::HashSet::new();
            let mut p = String::new();
            for (i, s) in segs.iter().enumerate() {
                // Parameter names must be unique within a pattern.
                let s = if s.starts_with('{') && !seen.insert(s.clone()) {
                    format!("{{v{i}}}")
                } else {
                    s.clone()
                };
                p.push('/');
                p.push_str(&s);
            }
            if rest {
                p.push_str("/{*r}");
            }
            if p.is_empty() {
                p.push('/');
            }
            p
        })
    }

    fn rule_text() -> impl Strategy<Value = (String, Vec<&'static str>, bool)> {
        (
            rule_path(),
            prop::sample::subsequence(vec!["GET", "POST", "DELETE"], 0..3),
            any::<bool>(),
        )
    }

    fn build(rules: &[(String, Vec<&'static str>, bool)]) -> Option<Manifest> {
        let mut text = String::new();
        for (path, methods, ide) in rules {
            text.push_str("[[rule]]\n");
            if !methods.is_empty() {
                let list: Vec<String> = methods.iter().map(|m| format!("{m:?}")).collect();
                let _ = writeln!(text, "methods = [{}]", list.join(", "));
            }
            let class = if *ide { "ide-only" } else { "fleet-ok" };
            let _ = writeln!(text, "path = {path:?}\nclass = \"{class}\"\nwhy = \"x\"");
        }
        Manifest::from_sources(&[("routes/p.toml".into(), text)]).ok()
    }

    /// Does a naive matcher find a concrete path (over a small alphabet) that both
    /// patterns match?
    fn witness(a: &[Segment], b: &[Segment]) -> bool {
        let alphabet = ["a", "b", "c"];
        let mut paths: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..6 {
            let last: Vec<Vec<&str>> = paths
                .iter()
                .filter(|p| p.len() == paths.last().unwrap().len())
                .cloned()
                .collect();
            for p in last {
                for s in alphabet {
                    let mut q = p.clone();
                    q.push(s);
                    paths.push(q);
                }
            }
        }
        paths
            .iter()
            .any(|p| pattern::matches(a, p) && pattern::matches(b, p))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn overlap_agrees_with_a_naive_witness_search(a in rule_path(), b in rule_path()) {
            let (a, b) = (pattern::parse(&a).unwrap(), pattern::parse(&b).unwrap());
            prop_assert_eq!(patterns_overlap(&a, &b), witness(&a, &b));
        }

        /// A route list generated from the manifest's own rules is never stale, and a
        /// lock written from a check is clean when read back.
        #[test]
        fn own_rules_are_never_stale_and_the_lock_round_trips(rules in prop::collection::vec(rule_text(), 1..8)) {
            let Some(m) = build(&rules) else { return Ok(()) };
            let list: String = m
                .rules()
                .iter()
                .map(|r| format!("{} {}\n", r.methods.names().first().map_or("GET", |n| if *n == "*" { "PATCH" } else { n }), r.path))
                .collect();
            let rs = parse_app_routes("own.txt", &list).unwrap();
            let d = check(&m, &rs, None);
            prop_assert!(d.report.stale.is_empty(), "{:?}", d.report.stale);
            let lock = Lock::parse("l", &render_lock(&m, &d.assessed)).unwrap();
            let again = check(&m, &rs, Some(&lock));
            prop_assert!(again.report.unreviewed.is_empty() && again.report.changed.is_empty());
            // Partial findings only ever name values that change the class.
            for p in &d.report.partial {
                prop_assert!(p.classes.values().all(|c| *c != p.otherwise));
            }
        }
    }
}
