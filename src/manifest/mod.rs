//! The route manifest: loading TOML rule files, compiling them into one automaton,
//! and classifying requests as `ide-only` or `fleet-ok`.
//!
//! * [`pattern`] parses the path-pattern syntax into segments.
//! * [`load`] reads a directory of TOML files into rules with their `file:line`.
//! * [`compile`] orders rules by specificity, checks ambiguity, and builds the DFA.
//! * `packed` re-encodes that DFA into the compact form the classifier walks.
//! * [`classify`] is the per-request lookup (no allocation, cost independent of rule count).
//! * [`drift`] compares the manifest with the application's real route list.
//! * [`diff`] compares how two manifests classify the application's routes.

pub mod classify;
pub mod compile;
pub mod diff;
pub mod drift;
pub mod load;
mod packed;
pub mod pattern;

use std::fmt;
use std::path::Path;

pub use classify::{Decision, HeaderSource, RequestParts, Rewritten, TenantAt, TenantSource};
pub use compile::Manifest;
pub use pattern::Segment;

/// Is `s` an RFC 9110 `token`, what an HTTP method is made of (`GET`, `M-SEARCH`)?
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Is `name` a valid HTTP header name (any case)?
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// Where a request may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Needs the single stateful primary (the ide).
    IdeOnly,
    /// Any stateless replica can serve it.
    FleetOk,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::IdeOnly => "ide-only",
            Class::FleetOk => "fleet-ok",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        match s {
            "ide-only" => Some(Class::IdeOnly),
            "fleet-ok" => Some(Class::FleetOk),
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side a write accepted by this rule belongs to (guard input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    Ide,
    Fleet,
}

/// The methods a rule applies to. `GET` always implies `HEAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    Any,
    /// Upper-case method names as written (HEAD is implied by GET when matching).
    List(Vec<String>),
}

impl Methods {
    /// Does a request with this method match? (`HEAD` matches `GET` rules.)
    pub fn matches(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::List(list) => list
                .iter()
                .any(|m| m == method || (method == "HEAD" && m == "GET")),
        }
    }

    pub fn is_any(&self) -> bool {
        matches!(self, Methods::Any)
    }

    /// Can one request carry a method that both this set and a rule or route serving
    /// `method` accept? A `GET` also serves `HEAD`, so `HEAD` and `GET` overlap either way.
    pub fn overlaps_method(&self, method: &str) -> bool {
        self.matches(method)
            || (method == "GET"
                && matches!(self, Methods::List(l) if l.iter().any(|m| m == "HEAD")))
    }

    /// Can one request carry a method that both method sets accept?
    pub fn overlaps(&self, other: &Methods) -> bool {
        match other {
            Methods::Any => true,
            Methods::List(list) => list.iter().any(|m| self.overlaps_method(m)),
        }
    }

    /// The methods as listed in the manifest (`["*"]` for any).
    pub fn names(&self) -> Vec<&str> {
        match self {
            Methods::Any => vec!["*"],
            Methods::List(l) => l.iter().map(String::as_str).collect(),
        }
    }
}

/// A `[rule.when]` condition value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `"*"`: present and non-empty.
    Present,
    /// Exactly this value.
    Equals(String),
}

impl Condition {
    pub fn holds(&self, value: Option<&str>) -> bool {
        self.holds_with(value, |v, want| v == want)
    }

    /// [`Condition::holds`], comparing a present value with the wanted one by `equals`.
    #[inline]
    pub(crate) fn holds_with(
        &self,
        value: Option<&str>,
        equals: impl Fn(&str, &str) -> bool,
    ) -> bool {
        match (self, value) {
            (Condition::Present, Some(v)) => !v.is_empty(),
            (Condition::Equals(want), Some(v)) => equals(v, want),
            (_, None) => false,
        }
    }
}

/// `[rule.when]`: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    /// Query parameter name -> condition.
    pub query: Vec<(String, Condition)>,
    /// Lower-case header name -> condition.
    pub header: Vec<(String, Condition)>,
}

impl When {
    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.header.is_empty()
    }
}

/// One `[[rule]]` of the manifest, as loaded and validated.
#[derive(Debug, Clone)]
pub struct Rule {
    /// File the rule came from, as displayed in messages (e.g. `routes/10-ide.toml`).
    pub file: String,
    /// 1-based line of the `[[rule]]` header.
    pub line: u32,
    pub methods: Methods,
    /// The pattern as written.
    pub path: String,
    pub segments: Vec<Segment>,
    pub class: Class,
    pub why: String,
    /// Name of the `{param}` that names the tenant.
    pub tenant: Option<String>,
    /// Index into `segments` of the tenant parameter.
    pub tenant_segment: Option<usize>,
    pub degrade: bool,
    pub writes: Option<Writes>,
    pub read_only_safe: bool,
    pub when: When,
}

impl Rule {
    /// `file:line`, how rules are named in every message.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A path-prefix rewrite applied before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub from: String,
    pub to: String,
}

impl Alias {
    /// What follows `from` in `path`, if `from` is a whole-segment prefix of it: `/v1`
    /// gives `""` for `/v1` and `/x` for `/v1/x`, but does not apply to `/v10`.
    #[inline]
    pub fn strip_from<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.from.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in a manifest, printed compiler-style: `file:line: error: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    /// An error at `file:line` (line 0: the file as a whole).
    pub fn error(file: impl Into<String>, line: u32, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line,
            severity: Severity::Error,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.line > 0 {
            write!(f, "{}:{}: {}: {}", self.file, self.line, sev, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, sev, self.message)
        }
    }
}

/// A manifest that did not load: every error found (and the warnings seen on the way).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in &self.diagnostics {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// A load that failed for this one reason.
impl From<Diagnostic> for LoadError {
    fn from(d: Diagnostic) -> LoadError {
        LoadError {
            diagnostics: vec![d],
        }
    }
}

/// Where a problem of the manifest as a whole is reported: its first file.
fn first_file(sources: &[(String, String)]) -> String {
    sources.first().map(|s| s.0.clone()).unwrap_or_default()
}

/// The file name of `path` without its directories: how a manifest file is named where
/// the directory must not matter (the digest, the lock file).
fn base_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

impl Manifest {
    /// Load, validate and compile every `*.toml` file of `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> Result<Manifest, LoadError> {
        let sources = load::read_dir(dir)?;
        Manifest::from_sources(&sources)
    }

    /// Compile from in-memory `(display name, TOML text)` pairs, in the given order.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Manifest, LoadError> {
        let parsed = load::parse_sources(sources)?;
        compile::compile(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("GET"));
        assert!(is_token("get"));
        assert!(is_token("M-SEARCH"));
        assert!(!is_token(""));
        assert!(!is_token("GE T"));
        assert!(!is_token("GE(T"));
        assert!(!is_token("GÉT"));
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("X-Preview"));
        assert!(is_header_name("accept"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("bad name"));
        assert!(!is_header_name("x:y"));
    }

    #[test]
    fn method_overlap_with_get_implying_head() {
        let list = |l: &[&str]| Methods::List(l.iter().map(|m| m.to_string()).collect());
        assert!(list(&["HEAD"]).overlaps_method("GET"));
        assert!(list(&["GET"]).overlaps_method("HEAD"));
        assert!(!list(&["POST"]).overlaps_method("GET"));
        assert!(!list(&["HEAD"]).overlaps_method("POST"));
        assert!(Methods::Any.overlaps_method("PATCH"));
        assert!(list(&["HEAD"]).overlaps(&list(&["GET"])));
        assert!(list(&["GET"]).overlaps(&list(&["HEAD"])));
        assert!(list(&["POST", "GET"]).overlaps(&list(&["PUT", "GET"])));
        assert!(!list(&["POST"]).overlaps(&list(&["GET"])));
        assert!(list(&["POST"]).overlaps(&Methods::Any));
        assert!(Methods::Any.overlaps(&list(&["DELETE"])));
    }
}
