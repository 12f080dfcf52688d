//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), shared with the seed-corpus
//! replay test (`seeds`), the classifier property tests (`props`) and the path property
//! tests.
//!
//! Each entry point takes the fuzzer's raw bytes, runs one library function on them and
//! asserts its invariants. It panics only when an invariant is broken (that is the bug
//! report); any input the library rejects with an error is fine.
//!
//! Input formats:
//!
//! * [`normalize_path`], [`parse_pattern`]: the bytes are the path / pattern (invalid
//!   UTF-8 is replaced by U+FFFD, which is itself invalid in both).
//! * [`load_manifest`]: TOML text. A line starting with `#--- ` starts a new file named by
//!   the rest of the line (a TOML comment, so a single-file seed is plain TOML); text
//!   before the first such line is the file `00-fuzz.toml`.
//! * [`classify`]: line 1 is the method, line 2 the request target (`/path?query`), the
//!   remaining lines `name: value` headers. It is classified against [`CLASSIFY_MANIFEST`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::OnceLock;

use super::reference;
use crate::manifest::classify::NoHeaders;
use crate::manifest::compile::specificity;
use crate::manifest::pattern::{self, Segment};
use crate::manifest::{
    is_token, Class, Decision, Manifest, Methods, RequestParts, Rule, Severity, Writes,
};
use crate::path::{self, NormalizeOptions, PathError};

// ---------------------------------------------------------------------------------------
// normalize_path

/// Fuzz body: normalize the input (whole, and its path part) with both option sets.
pub fn normalize_path(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let (path_part, query) = path::split_target(&input);
    assert!(!path_part.contains('?'), "split_target({input:?})");
    match query {
        Some(q) => assert_eq!(format!("{path_part}?{q}"), input, "split_target"),
        None => assert_eq!(path_part, input, "split_target"),
    }
    check_normalize(&input);
    if query.is_some() {
        check_normalize(path_part);
    }
}

/// Every normalization invariant for one input, with the default and the permissive
/// options: agreement with [`reference_normalize`], the canonical-form rules, idempotence,
/// `Cow::Borrowed` exactly for unchanged input, and the default options being stricter.
pub fn check_normalize(input: &str) {
    let strict = check_normalize_with(input, NormalizeOptions::default());
    let lenient = check_normalize_with(
        input,
        NormalizeOptions {
            allow_encoded_slash: true,
        },
    );
    // The options differ only on encoded slashes: what the default accepts, the
    // permissive options accept identically, and other errors are the same.
    match strict {
        Err(PathError::EncodedSlash | PathError::EncodedBackslash) => {}
        _ => assert_eq!(strict, lenient, "options disagree on {input:?}"),
    }
}

fn check_normalize_with(input: &str, opts: NormalizeOptions) -> Result<String, PathError> {
    let got = path::normalize_with(input, opts);
    let want = reference_normalize(input, opts);
    let got_plain = got.as_deref().map(str::to_owned).map_err(|e| *e);
    assert_eq!(
        got_plain, want,
        "normalize_with({input:?}, {opts:?}) vs reference"
    );
    if let Ok(out) = &got {
        assert_canonical_path(out, opts);
        assert_eq!(
            matches!(out, Cow::Borrowed(_)),
            **out == *input,
            "Cow::Borrowed exactly when unchanged: {input:?} -> {out:?}"
        );
        match path::normalize_with(out, opts) {
            Ok(Cow::Borrowed(again)) if again == &**out => {}
            other => panic!("not idempotent: {input:?} -> {out:?} -> {other:?}"),
        }
        assert_eq!(
            out.ends_with('/'),
            ends_as_directory(input),
            "trailing slash of {input:?} -> {out:?}"
        );
    }
    got_plain
}

/// Does the input end in a way that keeps a trailing slash (`/`, or a `.`/`..` segment,
/// possibly encoded)?
fn ends_as_directory(input: &str) -> bool {
    let last = input.rsplit('/').next().unwrap_or("");
    matches!(
        last.to_ascii_lowercase().as_str(),
        "" | "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// Assert the canonical-form rules ([`crate::path`]) on a normalizer output.
pub fn assert_canonical_path(out: &str, opts: NormalizeOptions) {
    let b = out.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "must start with '/': {out:?}");
    assert!(!out.contains("//"), "repeated slash in {out:?}");
    let body = out[1..].strip_suffix('/').unwrap_or(&out[1..]);
    if !body.is_empty() {
        for seg in body.split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "segment {seg:?} in {out:?}"
            );
        }
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        assert!(
            (0x21..0x7f).contains(&c) && !matches!(c, b'\\' | b'#' | b'?'),
            "byte {c:#04x} in {out:?}"
        );
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).expect("escape cut short");
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "escape not in upper-case hex in {out:?}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !unreserved(v),
                "escaped unreserved {:?} in {out:?}",
                v as char
            );
            assert!(!(v < 0x20 || v == 0x7f), "escaped control byte in {out:?}");
            if !opts.allow_encoded_slash {
                assert!(v != b'/' && v != b'\\', "encoded slash in {out:?}");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A deliberately plain second implementation of the normalization rules (decode each
/// segment into a new string, keep a stack of segments), to check [`path::normalize_with`]
/// against, including which error is reported (the left-most one).
pub fn reference_normalize(input: &str, opts: NormalizeOptions) -> Result<String, PathError> {
    let rest = input.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut stack: Vec<String> = Vec::new();
    let mut trailing_slash = true;
    for raw in rest.split('/') {
        let seg = reference_segment(raw, opts)?;
        // A servlet container strips `;parameters` (raw `;` or `%3B`) before resolving
        // dot segments: a dot segment with parameters is refused.
        let before_params = seg
            .split(';')
            .next()
            .unwrap_or("")
            .split("%3B")
            .next()
            .unwrap_or("");
        if (before_params == "." || before_params == "..") && seg.len() > before_params.len() {
            return Err(PathError::DotSegmentParameters);
        }
        trailing_slash = matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => stack.push(seg),
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if trailing_slash && !stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn reference_segment(raw: &str, opts: NormalizeOptions) -> Result<String, PathError> {
    let b = raw.as_bytes();
    // The byte of the escape at `j`, if there is a complete one.
    let escaped = |j: usize| -> Option<u8> {
        let hex = raw.get(j + 1..j + 3)?;
        (b[j] == b'%' && hex.chars().all(|h| h.is_ascii_hexdigit()))
            .then(|| u8::from_str_radix(hex, 16).unwrap())
    };
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let v = escaped(i).ok_or(PathError::InvalidEscape)?;
            if v >= 0x80 {
                // A UTF-8 lead byte announces its length by its leading ones; the whole
                // sequence must be escaped and decode.
                let n = match v.leading_ones() {
                    n @ 2..=4 => n as usize,
                    _ => return Err(PathError::InvalidUtf8),
                };
                let seq: Vec<u8> = (0..n)
                    .map(|k| escaped(i + 3 * k))
                    .collect::<Option<_>>()
                    .ok_or(PathError::InvalidUtf8)?;
                std::str::from_utf8(&seq).map_err(|_| PathError::InvalidUtf8)?;
                for x in seq {
                    out.push_str(&format!("%{x:02X}"));
                }
                i += 3 * n;
                continue;
            }
            match v {
                0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                b'/' if !opts.allow_encoded_slash => return Err(PathError::EncodedSlash),
                b'\\' if !opts.allow_encoded_slash => return Err(PathError::EncodedBackslash),
                v if unreserved(v) => out.push(v as char),
                v => out.push_str(&format!("%{v:02X}")),
            }
            i += 3;
        } else if c.is_ascii_control() {
            return Err(PathError::ControlByte);
        } else if !c.is_ascii() || matches!(c, b'\\' | b' ' | b'#' | b'?') {
            return Err(PathError::InvalidByte);
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// parse_pattern

/// Fuzz body: parse a route pattern; what parses must round-trip through `render` and
/// be something a normalized request path can actually match.
pub fn parse_pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let segments = match pattern::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "empty message for {e:?}");
            return;
        }
    };
    let rendered = pattern::render(&segments);
    assert_eq!(
        pattern::parse(&rendered).as_ref(),
        Ok(&segments),
        "render/parse round trip of {text:?} via {rendered:?}"
    );
    assert!(
        *text == rendered || *text == format!("{rendered}/"),
        "{text:?} parsed to something else: {rendered:?}"
    );
    check_segments(&text, &segments);
}

/// Structural invariants of parsed segments.
fn check_segments(text: &str, segments: &[Segment]) {
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Literal(l) => {
                assert!(!l.is_empty(), "empty literal in {text:?}");
                assert!(!l.contains(['/', '{', '}']), "literal {l:?} in {text:?}");
                // A literal that is not in canonical form can never equal a segment of a
                // normalized request path: the rule would silently never match.
                let as_path = format!("/{l}");
                let lenient = NormalizeOptions {
                    allow_encoded_slash: true,
                };
                assert!(
                    matches!(
                        path::normalize_with(&as_path, lenient),
                        Ok(Cow::Borrowed(_))
                    ),
                    "pattern {text:?} accepted literal segment {l:?}, which no normalized \
                     request path contains ({:?})",
                    path::normalize_with(&as_path, lenient)
                );
            }
            Segment::Param(n) | Segment::Rest(n) => {
                assert!(!n.is_empty(), "empty name in {text:?}");
                assert!(
                    n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                    "name {n:?} in {text:?}"
                );
                assert!(!names.contains(&n.as_str()), "duplicate {n:?} in {text:?}");
                names.push(n);
                if matches!(seg, Segment::Rest(_)) {
                    assert_eq!(i + 1, segments.len(), "{{*{n}}} not last in {text:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// load_manifest

/// Split fuzz input into manifest files (see the module docs).
pub fn manifest_sources(text: &str) -> Vec<(String, String)> {
    let mut sources = vec![("00-fuzz.toml".to_string(), String::new())];
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("#--- ") {
            let name = name.trim();
            let mut name = if name.is_empty() {
                format!("{:02}-fuzz.toml", sources.len())
            } else {
                name.to_string()
            };
            // Names must be unique for `file:line` to mean something.
            while sources.iter().any(|(n, _)| *n == name) {
                name.push('~');
            }
            sources.push((name, String::new()));
        } else {
            sources.last_mut().expect("never empty").1.push_str(line);
        }
    }
    if sources.len() > 1 && sources[0].1.is_empty() {
        sources.remove(0);
    }
    sources
}

/// Fuzz body: load a manifest from one or more TOML texts and check what comes out.
pub fn load_manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let sources = manifest_sources(&text);
    let loaded = Manifest::from_sources(&sources);
    match &loaded {
        Ok(m) => check_manifest(m, &sources),
        Err(e) => {
            assert!(
                e.diagnostics.iter().any(|d| d.severity == Severity::Error),
                "a failed load reports an error: {e:?}"
            );
            for d in &e.diagnostics {
                assert!(!d.message.is_empty(), "{d:?}");
                check_location(&sources, &d.file, d.line, true);
            }
            assert!(!e.to_string().is_empty());
        }
    }
    // Loading is deterministic.
    let again = Manifest::from_sources(&sources);
    match (&loaded, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a.digest(), b.digest(), "digest not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("loading the same sources twice gave different outcomes"),
    }
    // Precedence never depends on file order: the reversed load order must load (or
    // fail) alike and give every probe request the same class.
    if sources.len() > 1 {
        let reversed: Vec<(String, String)> = sources.iter().rev().cloned().collect();
        let other = Manifest::from_sources(&reversed);
        match (&loaded, &other) {
            (Ok(a), Ok(b)) => {
                for (method, path) in probes(a).into_iter().chain(probes(b)) {
                    let ca = a.classify(&request(&method, &path)).class;
                    let cb = b.classify(&request(&method, &path)).class;
                    assert_eq!(ca, cb, "{method} {path}: class depends on file order");
                }
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "file order changes whether the manifest loads: {:?} vs {:?}",
                a.as_ref().err().map(ToString::to_string),
                b.as_ref().err().map(ToString::to_string)
            ),
        }
    }
}

/// A `file:line` named in a rule or diagnostic must exist in the sources.
fn check_location(sources: &[(String, String)], file: &str, line: u32, diagnostic: bool) {
    let Some((_, text)) = sources.iter().find(|(n, _)| n == file) else {
        panic!("{file:?} is not one of the loaded files");
    };
    let lines = text.matches('\n').count() as u32 + 1;
    assert!(
        line <= lines,
        "{file}:{line} is past the end ({lines} lines)"
    );
    if !diagnostic {
        assert!(line >= 1, "{file}:{line}: rules have 1-based lines");
    }
}

fn request<'a>(method: &'a str, path: &'a str) -> RequestParts<'a> {
    RequestParts {
        method,
        path,
        query: None,
        headers: &NoHeaders,
    }
}

fn check_manifest(m: &Manifest, sources: &[(String, String)]) {
    let names: Vec<&String> = sources.iter().map(|(n, _)| n).collect();
    assert!(m.files().iter().eq(names.iter().copied()), "files()");
    assert_eq!(m.digest().len(), 64, "digest is hex SHA-256");
    assert!(m.digest().bytes().all(|b| b.is_ascii_hexdigit()));
    for w in m.warnings() {
        assert_eq!(w.severity, Severity::Warning, "{w}");
        check_location(sources, &w.file, w.line, true);
    }
    let mut order: Vec<usize> = m.precedence().collect();
    order.sort_unstable();
    assert!(
        order.iter().copied().eq(0..m.rules().len()),
        "precedence() is not a permutation of the rules"
    );
    for rule in m.rules() {
        check_rule(rule, sources);
    }
    // Every rule without conditions is reachable from its own example path: the path
    // matches it, so the decision must come from a rule at least as specific.
    for (i, rule) in m.rules().iter().enumerate() {
        let Some((method, path)) = example_request(m, rule) else {
            continue;
        };
        let req = request(method, &path);
        let d = m.classify(&req);
        check_decision(m, &req, &d);
        let winner = d
            .rule
            .unwrap_or_else(|| panic!("{method} {path} matches rule {i} but got the default"));
        assert_ne!(
            specificity(winner, rule),
            Ordering::Less,
            "{method} {path}: less specific {} beat {}",
            winner.location(),
            rule.location()
        );
        if winner.class != rule.class {
            // Different classes at equal specificity would have been an ambiguity error.
            assert_eq!(
                specificity(winner, rule),
                Ordering::Greater,
                "{method} {path}: {} and {} tie with different classes",
                winner.location(),
                rule.location()
            );
        }
    }
}

fn check_rule(rule: &Rule, sources: &[(String, String)]) {
    let at = rule.location();
    check_location(sources, &rule.file, rule.line, false);
    assert_eq!(
        pattern::parse(&rule.path).as_ref(),
        Ok(&rule.segments),
        "{at}: segments"
    );
    assert!(!rule.why.trim().is_empty(), "{at}: why is required");
    match (&rule.tenant, rule.tenant_segment) {
        (None, None) => {}
        (Some(t), Some(k)) => assert_eq!(
            rule.segments.get(k),
            Some(&Segment::Param(t.clone())),
            "{at}: tenant segment"
        ),
        (t, k) => panic!("{at}: tenant {t:?} loaded with tenant segment {k:?}"),
    }
    if let Methods::List(list) = &rule.methods {
        assert!(!list.is_empty(), "{at}: empty method list");
        for (i, m) in list.iter().enumerate() {
            assert!(is_token(m) && m != "*", "{at}: method {m:?}");
            assert!(!list[..i].contains(m), "{at}: duplicate method {m:?}");
        }
    }
    if rule.degrade {
        assert_eq!(rule.class, Class::IdeOnly, "{at}: degrade on fleet-ok");
        assert!(
            matches!(&rule.methods, Methods::List(l) if l.iter().all(|m| m == "GET" || m == "HEAD")),
            "{at}: degrade on a rule that accepts writes"
        );
    }
    if rule.writes == Some(Writes::Fleet) {
        assert_eq!(
            rule.class,
            Class::FleetOk,
            "{at}: writes = fleet on ide-only"
        );
    }
}

/// A method and normalized path that `rule` matches, unless the rule has conditions or
/// an alias would rewrite the path away from it.
fn example_request<'r>(m: &Manifest, rule: &'r Rule) -> Option<(&'r str, String)> {
    if !rule.when.is_empty() {
        return None;
    }
    let method = match &rule.methods {
        Methods::Any => "GET",
        Methods::List(l) => l.first()?.as_str(),
    };
    let path = example_path(&rule.segments);
    let lenient = NormalizeOptions {
        allow_encoded_slash: true,
    };
    if !matches!(path::normalize_with(&path, lenient), Ok(Cow::Borrowed(_))) {
        return None;
    }
    if m.rewrite(&path).alias.is_some() {
        return None;
    }
    Some((method, path))
}

/// A path the pattern matches: its literals, `p` for each `{param}`, `r/s` for `{*rest}`.
fn example_path(segments: &[Segment]) -> String {
    let mut path = String::new();
    for seg in segments {
        path.push('/');
        path.push_str(match seg {
            Segment::Literal(l) => l,
            Segment::Param(_) => "p",
            Segment::Rest(_) => "r/s",
        });
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Requests derived from every rule (with their conditions dropped), also reached through
/// every alias, for comparing two manifests.
fn probes(m: &Manifest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in m.rules() {
        let path = example_path(&rule.segments);
        for method in rule.methods.names() {
            let method = if method == "*" { "DELETE" } else { method };
            out.push((method.to_string(), path.clone()));
        }
    }
    let direct = out.len();
    for alias in m.aliases() {
        out.push(("GET".to_string(), alias.from.clone()));
        for i in 0..direct {
            let (method, path) = &out[i];
            let through = format!("{}{}", alias.from.trim_end_matches('/'), path);
            out.push((method.clone(), through));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// classify

/// The fixed manifest the `classify` target classifies against: aliases, the root, a
/// catch-all with carve-outs, method lists, and `when` conditions on headers and query.
pub const CLASSIFY_MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"
aliases = [{ from = "/v1/workspaces", to = "/ws" }]

[[rule]]
path = "/"
methods = ["GET"]
class = "ide-only"
why = "the editor shell is served by the primary"

[[rule]]
path = "/editor/{*rest}"
class = "ide-only"
why = "editor assets are built on the primary"

[[rule]]
path = "/editor/static/{*rest}"
methods = ["GET"]
class = "fleet-ok"
why = "static assets are in object storage"

[[rule]]
path = "/ws/{ws}/{*rest}"
class = "ide-only"
tenant = "ws"
why = "a workspace lives in one working copy"

[[rule]]
path = "/ws/{ws}/builds/{id}"
methods = ["GET"]
class = "fleet-ok"
tenant = "ws"
why = "build records are database rows"

[[rule]]
path = "/ws/{ws}/builds/{id}"
methods = ["GET"]
class = "ide-only"
tenant = "ws"
why = "a live build log streams from the primary"
[rule.when]
query = { follow = "*" }

[[rule]]
path = "/ws/{ws}/comments"
methods = ["GET", "POST"]
class = "fleet-ok"
tenant = "ws"
writes = "fleet"
why = "comments are database rows"

[[rule]]
path = "/ws/{ws}/comments"
methods = ["GET"]
class = "ide-only"
tenant = "ws"
why = "comment previews render the working copy"
[rule.when]
header = { "x-preview" = "on" }

[[rule]]
path = "/ws/{ws}/files/{name}"
methods = ["GET"]
class = "ide-only"
tenant = "ws"
degrade = true
why = "files are read from the working copy"

[[rule]]
path = "/admin/{section}"
class = "ide-only"
why = "administration happens on the primary"
"#;

fn classify_manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        Manifest::from_sources(&[("fuzz.toml".into(), CLASSIFY_MANIFEST.into())])
            .unwrap_or_else(|e| panic!("the embedded classify manifest must load:\n{e}"))
    })
}

/// Fuzz body: method, target and headers (see the module docs), normalized the way the
/// proxy does, then classified against [`CLASSIFY_MANIFEST`].
pub fn classify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let method = lines.next().unwrap_or("");
    let Some(target) = lines.next() else {
        return;
    };
    // hyper only hands over methods that are RFC 9110 tokens.
    if !is_token(method) {
        return;
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let (raw_path, query) = path::split_target(target);
    let Ok(path) = path::normalize(raw_path) else {
        return;
    };
    let m = classify_manifest();
    let req = RequestParts {
        method,
        path: &path,
        query,
        headers: &headers,
    };
    let d = m.classify(&req);
    check_decision(m, &req, &d);
    assert_eq!(m.classify(&req), d, "classification is deterministic");

    // A trailing slash is ignored for matching.
    let toggled = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p.to_string(),
        Some(_) => "/".to_string(),
        None => format!("{path}/"),
    };
    let other = m.classify(&RequestParts {
        path: &toggled,
        ..req
    });
    assert_eq!(other, d, "{path:?} and {toggled:?} classify differently");

    // HEAD matches GET rules (and this manifest has no HEAD-only rules).
    if method == "HEAD" || method == "GET" {
        let flipped = if method == "HEAD" { "GET" } else { "HEAD" };
        let other = m.classify(&RequestParts {
            method: flipped,
            ..req
        });
        assert_eq!(other, d, "{method} and {flipped} classify differently");
    }
}

/// Invariants of one decision: it agrees with the brute-force matcher, the winning rule
/// accepts the method and matches the path (checked here independently), its class and
/// tenant are reported, and the default applies only when no unconditional rule matches.
pub fn check_decision(m: &Manifest, req: &RequestParts<'_>, d: &Decision<'_>) {
    let what = format!("{} {} ?{:?}", req.method, req.path, req.query);
    assert_eq!(*d, reference::classify(m, req), "{what}: DFA vs reference");
    let segs = path_segments(m, req.path);
    match (d.rule, d.rule_index) {
        (Some(rule), Some(i)) => {
            assert!(std::ptr::eq(rule, &m.rules()[i]), "{what}: rule_index");
            assert!(rule.methods.matches(req.method), "{what}: method");
            assert_eq!(d.class, rule.class, "{what}: class");
            assert!(
                pattern::matches(&rule.segments, &segs),
                "{what}: {} does not match",
                rule.location()
            );
            for (name, cond) in &rule.when.header {
                assert!(
                    cond.holds(req.headers.header(name)),
                    "{what}: header {name}"
                );
            }
            if !rule.when.query.is_empty() {
                assert!(req.query.is_some(), "{what}: query condition without query");
            }
            let tenant = rule
                .tenant_segment
                .map(|k| segs.get(k).copied().unwrap_or("<missing segment>"));
            assert_eq!(d.tenant, tenant, "{what}: tenant");
            assert_eq!(
                d.tenant_at.and_then(|at| m.tenant_text(at, req.path)),
                d.tenant,
                "{what}: tenant_at {:?} does not resolve to the tenant",
                d.tenant_at
            );
            // Nothing more specific that needs no conditions may match.
            for other in m.rules() {
                if other.when.is_empty()
                    && other.methods.matches(req.method)
                    && pattern::matches(&other.segments, &segs)
                {
                    assert_ne!(
                        specificity(other, rule),
                        Ordering::Greater,
                        "{what}: {} beat the more specific {}",
                        rule.location(),
                        other.location()
                    );
                }
            }
        }
        (None, None) => {
            assert_eq!(d.class, m.default_class(), "{what}: default class");
            assert_eq!(d.tenant, None, "{what}: tenant without rule");
            assert_eq!(d.tenant_at, None, "{what}: tenant_at without rule");
            for rule in m.rules() {
                let conditions_hold = rule.when.query.is_empty()
                    && rule
                        .when
                        .header
                        .iter()
                        .all(|(name, cond)| cond.holds(req.headers.header(name)));
                assert!(
                    !(conditions_hold
                        && rule.methods.matches(req.method)
                        && pattern::matches(&rule.segments, &segs)),
                    "{what}: default although {} matches",
                    rule.location()
                );
            }
        }
        _ => panic!("{what}: rule and rule_index disagree: {d:?}"),
    }
}

/// The segments a normalized path is matched with: trailing slash dropped, aliases
/// applied ([`Manifest::rewrite`], itself checked by [`check_rewrite`]).
fn path_segments<'a>(m: &'a Manifest, path: &'a str) -> Vec<&'a str> {
    check_rewrite(m, path);
    m.rewrite(path).segments().collect()
}

/// [`Manifest::rewrite`] of a normalized path obeys the alias rules, stated on segments
/// rather than bytes: the alias applied is one whose `from` segments begin the path's, no
/// alias with more `from` segments also does, and the result is its `to` segments
/// followed by the path's remaining ones, `rest` being a slice of the path at `rest_at`.
/// Without an alias no `from` begins the path and the segments are unchanged.
pub fn check_rewrite(m: &Manifest, path: &str) {
    fn split(p: &str) -> Vec<&str> {
        p.split('/').filter(|s| !s.is_empty()).collect()
    }
    let segs = split(path);
    let applies = |from: &str| segs.starts_with(&split(from));
    let got = m.rewrite(path);
    let got_segs: Vec<&str> = got.segments().collect();
    assert_eq!(
        path.get(got.rest_at..got.rest_at + got.rest.len()),
        Some(got.rest),
        "{path:?}: rest is not the path at rest_at: {got:?}"
    );
    match got.alias {
        Some(i) => {
            let alias = &m.aliases()[usize::from(i)];
            assert!(applies(&alias.from), "{path:?}: {alias:?} does not apply");
            let n = split(&alias.from).len();
            for other in m.aliases() {
                assert!(
                    !(applies(&other.from) && split(&other.from).len() > n),
                    "{path:?}: {alias:?} applied although the longer {other:?} does"
                );
            }
            let mut want = split(&alias.to);
            want.extend_from_slice(&segs[n..]);
            assert_eq!(got_segs, want, "{path:?} through {alias:?}");
        }
        None => {
            for alias in m.aliases() {
                assert!(!applies(&alias.from), "{path:?}: {alias:?} not applied");
            }
            assert_eq!(got_segs, segs, "{path:?} without an alias");
            assert_eq!(got.rest_at, 0, "{path:?} without an alias");
        }
    }
}
