//! The `fleetgate routes …` subcommands: `check`, `classify` and `drift`.
//!
//! `main.rs` parses the command line; the functions here do the work, print, and return
//! the process exit code ([`super::exit`]).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: a clean manifest, a classified request, no drift findings |
//! | 1 | `check`: the manifest has errors (or warnings with `--deny-warnings`); `classify`: the target or method was rejected; `drift`: findings |
//! | 2 | usage (clap), or an unreadable `--batch` file |
//! | 74 | `drift --update` could not write the lock file |
//! | 78 | `classify` / `drift`: the manifest does not load; `drift`: the app-routes or lock file is unreadable or malformed |
//!
//! Streams: `routes check` prints its diagnostics and summary on stdout (they are its
//! result). `classify` and `drift` print their result on stdout and everything else
//! (manifest diagnostics, input errors, notes) on stderr, so stdout stays parseable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::exit;
use crate::manifest::drift::{self, Drift, Lock, Report};
use crate::manifest::{
    is_header_name, is_token, Diagnostic, HeaderSource, Manifest, RequestParts, Severity,
};

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn count(diags: &[Diagnostic], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

/// Exit code for an output error: a closed pipe (`| head`) is not worth a message.
fn output_failed(e: io::Error) -> i32 {
    if e.kind() != io::ErrorKind::BrokenPipe {
        eprintln!("fleetgate: cannot write output: {e}");
    }
    exit::FINDINGS
}

/// Write `text` to stdout and return `code`, or the exit code for an output error.
pub(super) fn print_stdout(text: &str, code: i32) -> i32 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) => output_failed(e),
    }
}

/// `fleetgate routes check DIR [--deny-warnings]`.
pub fn check(dir: &Path, deny_warnings: bool) -> i32 {
    let (code, text) = match Manifest::load_dir(dir) {
        Ok(m) => {
            let warnings = m.warnings().len();
            let denied = deny_warnings && warnings > 0;
            let mut text = String::new();
            for w in m.warnings() {
                let _ = writeln!(text, "{w}");
            }
            let _ = writeln!(
                text,
                "{}: {}: {} in {}, 0 errors, {}{}",
                dir.display(),
                if denied { "failed" } else { "ok" },
                plural(m.rules().len(), "rule"),
                plural(m.files().len(), "file"),
                plural(warnings, "warning"),
                if denied {
                    " (warnings denied by --deny-warnings)".to_string()
                } else {
                    format!(" (digest {})", &m.digest()[..12.min(m.digest().len())])
                },
            );
            (if denied { exit::FINDINGS } else { exit::OK }, text)
        }
        Err(e) => {
            let mut text = String::new();
            for d in &e.diagnostics {
                let _ = writeln!(text, "{d}");
            }
            let _ = writeln!(
                text,
                "{}: failed: {}, {}; the manifest does not load",
                dir.display(),
                plural(count(&e.diagnostics, Severity::Error), "error"),
                plural(count(&e.diagnostics, Severity::Warning), "warning"),
            );
            (exit::FINDINGS, text)
        }
    };
    print_stdout(&text, code)
}

/// Load the manifest for `classify` and `drift`; one that does not load is printed on
/// stderr and is a configuration error.
pub(super) fn load(dir: &Path) -> Result<Manifest, i32> {
    Manifest::load_dir(dir).map_err(|e| {
        for d in &e.diagnostics {
            eprintln!("{d}");
        }
        eprintln!(
            "fleetgate: the manifest in {} does not load ({})",
            dir.display(),
            plural(count(&e.diagnostics, Severity::Error), "error")
        );
        exit::CONFIG
    })
}

/// Parse a `-H 'Name: value'` argument; the name must be a valid header name.
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', found {arg:?}"))?;
    let name = name.trim();
    if !is_header_name(name) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// What `routes classify` is asked to classify.
pub enum ClassifyInput<'a> {
    One {
        method: &'a str,
        target: &'a str,
    },
    /// `METHOD TARGET` lines from a file, or from stdin for `-`.
    Batch(&'a Path),
}

pub struct ClassifyArgs<'a> {
    pub routes: &'a Path,
    pub json: bool,
    pub headers: &'a [(String, String)],
    pub input: ClassifyInput<'a>,
}

#[derive(Serialize)]
struct ClassifiedJson<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    class: &'static str,
    default: bool,
    rule: Option<RuleJson<'a>>,
    tenant: Option<&'a str>,
}

#[derive(Serialize)]
struct RuleJson<'a> {
    file: &'a str,
    line: u32,
    methods: Vec<&'a str>,
    path: &'a str,
}

#[derive(Serialize)]
struct RejectedJson<'a> {
    method: &'a str,
    target: &'a str,
    error: &'a str,
}

/// The `-H` headers, as a [`HeaderSource`] (names compare case-insensitively).
struct Headers<'a>(&'a [(String, String)]);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.header(name)
    }
}

/// Classify one request and render it (one JSON object, or the human line); `Err` is
/// why the method or target was rejected.
fn classify_one(
    m: &Manifest,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    json: bool,
) -> Result<String, String> {
    if !is_token(method) {
        return Err(format!("method {method:?} is not an HTTP token"));
    }
    let (raw_path, query) = crate::path::split_target(target);
    let path: Cow<'_, str> = crate::path::normalize(raw_path).map_err(|e| e.to_string())?;
    let headers = Headers(headers);
    let d = m.classify(&RequestParts {
        method,
        path: &path,
        query,
        headers: &headers,
    });
    if json {
        let rule = d.rule.map(|r| RuleJson {
            file: &r.file,
            line: r.line,
            methods: r.methods.names(),
            path: &r.path,
        });
        let obj = ClassifiedJson {
            method,
            target,
            path: &path,
            class: d.class.as_str(),
            default: d.is_default(),
            rule,
            tenant: d.tenant,
        };
        Ok(serde_json::to_string(&obj).expect("plain data serializes"))
    } else {
        let mut line = d.class.as_str().to_string();
        match d.rule {
            None => line.push_str("  (default)"),
            Some(r) => {
                let _ = write!(
                    line,
                    "  {}  {} {}",
                    r.location(),
                    r.methods.names().join(","),
                    r.path
                );
            }
        }
        if let Some(t) = d.tenant {
            let _ = write!(line, "  tenant={t}");
        }
        Ok(line)
    }
}

fn rejected_json(method: &str, target: &str, error: &str) -> String {
    serde_json::to_string(&RejectedJson {
        method,
        target,
        error,
    })
    .expect("plain data serializes")
}

/// `fleetgate routes classify`.
pub fn classify(args: ClassifyArgs<'_>) -> i32 {
    let m = match load(args.routes) {
        Ok(m) => m,
        Err(code) => return code,
    };
    match args.input {
        ClassifyInput::One { method, target } => {
            let (code, line) = match classify_one(&m, method, target, args.headers, args.json) {
                Ok(line) => (exit::OK, line),
                Err(e) if args.json => (exit::FINDINGS, rejected_json(method, target, &e)),
                Err(e) => {
                    eprintln!("fleetgate: rejected {method} {target}: {e}");
                    return exit::FINDINGS;
                }
            };
            print_stdout(&format!("{line}\n"), code)
        }
        ClassifyInput::Batch(file) => classify_batch(&m, file, args.headers),
    }
}

fn classify_batch(m: &Manifest, file: &Path, headers: &[(String, String)]) -> i32 {
    let mut input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        match fs::File::open(file) {
            Ok(f) => Box::new(io::BufReader::new(f)),
            Err(e) => {
                eprintln!("fleetgate: cannot read --batch {}: {e}", file.display());
                return exit::USAGE;
            }
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = out.flush();
                eprintln!("fleetgate: cannot read --batch {}: {e}", file.display());
                return exit::USAGE;
            }
        }
        line_no += 1;
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let line = match words[..] {
            [method, target] => classify_one(m, method, target, headers, true)
                .unwrap_or_else(|e| rejected_json(method, target, &e)),
            _ => rejected_json(
                words[0],
                &words[1..].join(" "),
                &format!("line {line_no}: expected 'METHOD TARGET'"),
            ),
        };
        if let Err(e) = writeln!(out, "{line}") {
            return output_failed(e);
        }
    }
    match out.flush() {
        Ok(()) => exit::OK,
        Err(e) => output_failed(e),
    }
}

/// `routes drift --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DriftFormat {
    /// One line per finding, then a summary.
    #[default]
    Text,
    /// Exactly `{"stale":[…],"partial":[…],"unreviewed":[…],"changed":[…]}`.
    Json,
    /// JUnit XML: one testcase per app route and per stale rule.
    Junit,
}

pub struct DriftArgs<'a> {
    pub routes: &'a Path,
    /// One or more route inputs (`--app-routes`, repeatable): route lists, OpenAPI
    /// documents, unlisted-requests tables. Merged in order by
    /// [`drift::merge_app_routes`].
    pub app_routes: &'a [PathBuf],
    /// Default: `ROUTES/app-routes.lock`, used when it exists (always by `--update`).
    pub lock: Option<&'a Path>,
    pub update: bool,
    pub format: DriftFormat,
}

/// Read a `drift` input file; one that cannot be read is a configuration error.
pub(super) fn read_input(path: &Path, name: &str, what: &str) -> Result<String, i32> {
    fs::read_to_string(path).map_err(|e| {
        eprintln!("{name}: error: cannot read {what}: {e}");
        exit::CONFIG
    })
}

/// A malformed `drift` input: its diagnostic on stderr, a configuration error.
pub(super) fn input_error(d: Diagnostic) -> i32 {
    eprintln!("{d}");
    exit::CONFIG
}

/// The `--app-routes` files of `drift` and `diff`, read, parsed and merged.
pub(super) struct AppRoutes {
    /// The files as named in messages, in the order given.
    pub names: Vec<String>,
    pub merged: drift::MergedRoutes,
}

/// Read, parse and merge the `--app-routes` files ([`drift::merge_app_routes`]); notes
/// about dropped routes go to stderr. A file that cannot be read or parsed is printed
/// on stderr and is a configuration error.
pub(super) fn read_app_routes(paths: &[PathBuf]) -> Result<AppRoutes, i32> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut inputs = Vec::with_capacity(names.len());
    for (path, name) in paths.iter().zip(&names) {
        let text = read_input(path, name, "the application's routes")?;
        inputs.push(drift::parse_app_routes(name, &text).map_err(input_error)?);
    }
    let merged = drift::merge_app_routes(inputs);
    for (k, name) in names.iter().enumerate() {
        let (covered, duplicates) = (merged.covered[k], merged.duplicates[k]);
        if covered > 0 {
            eprintln!(
                "note: {name}: {} covered by declared routes, not checked again",
                plural(covered, "observed route")
            );
        }
        if duplicates > 0 {
            eprintln!(
                "note: {name}: {} already given by an earlier --app-routes file",
                plural(duplicates, "route")
            );
        }
    }
    Ok(AppRoutes { names, merged })
}

/// `fleetgate routes drift`.
pub fn drift(args: DriftArgs<'_>) -> i32 {
    let m = match load(args.routes) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let AppRoutes {
        names: app_names,
        merged,
    } = match read_app_routes(args.app_routes) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let routes = merged.routes;

    let lock_path: PathBuf = args
        .lock
        .map(Path::to_path_buf)
        .unwrap_or_else(|| args.routes.join("app-routes.lock"));
    let lock_name = lock_path.display().to_string();
    let lock = if args.update {
        None
    } else if lock_path.exists() {
        let text = match read_input(&lock_path, &lock_name, "the lock file") {
            Ok(t) => t,
            Err(code) => return code,
        };
        match Lock::parse(&lock_name, &text) {
            Ok(l) => Some(l),
            Err(d) => return input_error(d),
        }
    } else if args.lock.is_some() {
        eprintln!(
            "note: {lock_name} does not exist: every route is unreviewed (write it with --update)"
        );
        Some(Lock::default())
    } else {
        None
    };

    let mut result = drift::check(&m, &routes, lock.as_ref());
    if args.update {
        let text = drift::render_lock(&m, &result.assessed);
        if let Err(e) = fs::write(&lock_path, text) {
            eprintln!("{lock_name}: error: cannot write the lock file: {e}");
            return exit::IO_ERROR;
        }
        eprintln!(
            "wrote {lock_name}: {}",
            plural(result.assessed.len(), "route")
        );
        result.report.unreviewed.clear();
        result.report.changed.clear();
    }

    let ctx = DriftContext {
        manifest: &m,
        app_names: &app_names,
        source: routes
            .iter()
            .zip(&merged.source)
            .map(|(r, &k)| ((r.method.as_str(), r.path.as_str()), k))
            .collect(),
        lock_name: (args.update || lock.is_some()).then_some(lock_name.as_str()),
    };
    let text = match args.format {
        DriftFormat::Text => drift_text(&ctx, &result),
        DriftFormat::Json => {
            let mut s = serde_json::to_string(&result.report).expect("plain data serializes");
            s.push('\n');
            s
        }
        DriftFormat::Junit => drift_junit(&ctx, &result),
    };
    let code = if result.report.is_clean() {
        exit::OK
    } else {
        exit::FINDINGS
    };
    print_stdout(&text, code)
}

struct DriftContext<'a> {
    manifest: &'a Manifest,
    /// The `--app-routes` files, in order.
    app_names: &'a [String],
    /// `(method, route)` -> index in `app_names` of the file the route came from
    /// (merged routes are unique by method and route).
    source: HashMap<(&'a str, &'a str), usize>,
    /// The lock file compared with (or written), if any.
    lock_name: Option<&'a str>,
}

impl DriftContext<'_> {
    /// The file a route came from.
    fn file_of(&self, method: &str, route: &str) -> &str {
        let k = self.source.get(&(method, route)).copied().unwrap_or(0);
        self.app_names.get(k).map_or("", String::as_str)
    }

    /// `app-routes.txt:12` (or just the file when the line is unknown).
    fn at(&self, method: &str, route: &str, line: u32) -> String {
        let file = self.file_of(method, route);
        if line > 0 {
            format!("{file}:{line}")
        } else {
            file.to_string()
        }
    }
}

/// One finding: where it points, its kind, the route it is about (`None` for a stale
/// rule) and the message.
struct Finding {
    at: String,
    kind: &'static str,
    route: Option<(String, String)>,
    message: String,
}

fn findings(ctx: &DriftContext<'_>, report: &Report) -> Vec<Finding> {
    let lock = ctx.lock_name.unwrap_or("the lock");
    let mut out = Vec::new();
    for s in &report.stale {
        out.push(Finding {
            at: s.rule.clone(),
            kind: "stale",
            route: None,
            message: format!(
                "rule {} {} ({}) matches no application route",
                s.methods.join(","),
                s.path,
                s.class
            ),
        });
    }
    for p in &report.partial {
        let values: Vec<String> = p
            .classes
            .iter()
            .map(|(v, c)| format!("{v} -> {c}"))
            .collect();
        out.push(Finding {
            at: ctx.at(&p.method, &p.route, p.line),
            kind: "partial",
            route: Some((p.method.clone(), p.route.clone())),
            message: format!(
                "{} {}: the class depends on {{{}}}: {}; otherwise {}",
                p.method,
                p.route,
                p.param,
                values.join(", "),
                p.otherwise
            ),
        });
    }
    for u in &report.unreviewed {
        out.push(Finding {
            at: ctx.at(&u.method, &u.route, u.line),
            kind: "unreviewed",
            route: Some((u.method.clone(), u.route.clone())),
            message: format!(
                "{} {} is not in {lock}; it would be {} ({})",
                u.method, u.route, u.class, u.rule
            ),
        });
    }
    for c in &report.changed {
        out.push(Finding {
            at: ctx.at(&c.method, &c.route, c.line),
            kind: "changed",
            route: Some((c.method.clone(), c.route.clone())),
            message: format!(
                "{} {} was {} in {lock}, now {} ({})",
                c.method, c.route, c.was, c.now, c.rule
            ),
        });
    }
    out
}

fn drift_text(ctx: &DriftContext<'_>, result: &Drift) -> String {
    let mut text = String::new();
    for f in findings(ctx, &result.report) {
        let _ = writeln!(text, "{}: {}: {}", f.at, f.kind, f.message);
    }
    let r = &result.report;
    let scope = format!(
        "{}, {}, {}",
        plural(result.assessed.len(), "app route"),
        plural(ctx.manifest.rules().len(), "rule"),
        ctx.lock_name
            .map_or_else(|| "no lock".to_string(), |l| format!("lock {l}")),
    );
    if r.is_clean() {
        let _ = writeln!(text, "drift: ok ({scope})");
    } else {
        let _ = writeln!(
            text,
            "drift: {} stale, {} partial, {} unreviewed, {} changed ({scope})",
            r.stale.len(),
            r.partial.len(),
            r.unreviewed.len(),
            r.changed.len()
        );
    }
    text
}

/// Escape text for XML 1.0 content and attributes; characters XML 1.0 cannot carry
/// (most control characters) become U+FFFD.
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn drift_junit(ctx: &DriftContext<'_>, result: &Drift) -> String {
    let all = findings(ctx, &result.report);
    let mut cases = String::new();
    let mut tests = 0;
    let mut failures = 0;
    let mut case =
        |classname: &str, name: &str, file_line: Option<(&str, u32)>, found: &[&Finding]| {
            tests += 1;
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(classname),
                xml_escape(name)
            );
            if let Some((file, line)) = file_line {
                let _ = write!(cases, " file=\"{}\"", xml_escape(file));
                if line > 0 {
                    let _ = write!(cases, " line=\"{line}\"");
                }
            }
            if found.is_empty() {
                cases.push_str("/>\n");
                return;
            }
            failures += 1;
            let mut kinds: Vec<&str> = found.iter().map(|f| f.kind).collect();
            kinds.dedup();
            let body: Vec<String> = found
                .iter()
                .map(|f| format!("{}: {}: {}", f.at, f.kind, f.message))
                .collect();
            let _ = write!(
                cases,
                ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                xml_escape(&kinds.join(",")),
                xml_escape(&found[0].message),
                xml_escape(&body.join("\n"))
            );
        };
    for a in &result.assessed {
        let found: Vec<&Finding> = all
            .iter()
            .filter(|f| {
                f.route
                    .as_ref()
                    .is_some_and(|(m, r)| *m == a.method && *r == a.route)
            })
            .collect();
        let file = ctx.file_of(&a.method, &a.route);
        case(
            file,
            &format!("{} {}", a.method, a.route),
            Some((file, a.line)),
            &found,
        );
    }
    for (f, s) in all
        .iter()
        .filter(|f| f.route.is_none())
        .zip(&result.report.stale)
    {
        let (file, line) = s
            .rule
            .rsplit_once(':')
            .map(|(file, line)| (file, line.parse().unwrap_or(0)))
            .unwrap_or((s.rule.as_str(), 0));
        case(
            file,
            &format!("stale rule {} {} {}", s.rule, s.methods.join(","), s.path),
            Some((file, line)),
            &[f],
        );
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"fleetgate routes drift\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">"
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
        xml_escape(&format!("drift {}", ctx.app_names.join(", ")))
    );
    xml.push_str(&cases);
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header_arg("X-Preview: 1").unwrap(),
            ("x-preview".to_string(), "1".to_string())
        );
        assert_eq!(
            parse_header_arg("accept:text/event-stream").unwrap(),
            ("accept".to_string(), "text/event-stream".to_string())
        );
        assert_eq!(parse_header_arg("x-empty:").unwrap().1, "");
        assert!(parse_header_arg("no colon").is_err());
        assert!(parse_header_arg("bad name: 1").is_err());
        assert!(parse_header_arg(": 1").is_err());
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            xml_escape("<a href=\"x\">&'\u{1}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{FFFD}&lt;/a&gt;"
        );
    }

    fn classify_line(
        json: bool,
        method: &str,
        target: &str,
        headers: &[(String, String)],
    ) -> Result<String, String> {
        let m = Manifest::from_sources(&[(
            "routes/a.toml".into(),
            "[manifest]\naliases = [{ from = \"/v1\", to = \"/api\" }]\n[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{ws}/files/{*path}\"\nclass = \"ide-only\"\ntenant = \"ws\"\nwhy = \"disk\"\n[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{ws}/files/{*path}\"\nclass = \"fleet-ok\"\ntenant = \"ws\"\nwhy = \"s3\"\n[rule.when]\nquery = { snapshot = \"*\" }\nheader = { \"x-s\" = \"1\" }\n"
                .into(),
        )])
        .unwrap();
        classify_one(&m, method, target, headers, json)
    }

    #[test]
    fn human_and_json_lines() {
        assert_eq!(
            classify_line(false, "GET", "/v1/w1/files/a/../b", &[]).unwrap(),
            "ide-only  routes/a.toml:3  GET /api/{ws}/files/{*path}  tenant=w1"
        );
        assert_eq!(
            classify_line(false, "POST", "/x", &[]).unwrap(),
            "fleet-ok  (default)"
        );
        let v: serde_json::Value = serde_json::from_str(
            &classify_line(
                true,
                "GET",
                "/api/w1/files/%61?snapshot=1",
                &[("x-s".into(), "1".into())],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"method": "GET", "target": "/api/w1/files/%61?snapshot=1", "path": "/api/w1/files/a",
                "class": "fleet-ok", "default": false,
                "rule": {"file": "routes/a.toml", "line": 9, "methods": ["GET"], "path": "/api/{ws}/files/{*path}"},
                "tenant": "w1"})
        );
        assert_eq!(
            classify_line(true, "GET", "/a%2Fb", &[]).unwrap_err(),
            "encoded slash (%2F) in path"
        );
        assert!(classify_line(true, "G(T", "/a", &[])
            .unwrap_err()
            .contains("not an HTTP token"));
        assert_eq!(
            rejected_json("GET", "/a%zz", "invalid percent-escape"),
            r#"{"method":"GET","target":"/a%zz","error":"invalid percent-escape"}"#
        );
    }
}
