//! Per-request classification: feed `METHOD path` through the compiled DFA, then pick
//! the most specific matching rule whose `when` conditions hold. No allocation; the
//! automaton's work is proportional to the path length, not the number of rules.

use super::compile::{common_method, PatternInfo};
use super::packed::Matches;
use super::{Class, Manifest, Rule};

/// Header lookup for `[rule.when] header = {…}` conditions.
pub trait HeaderSource {
    /// Value of the header `name` (lower-case), if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
}

/// No headers at all.
pub struct NoHeaders;

impl HeaderSource for NoHeaders {
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
}

impl HeaderSource for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HeaderSource for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// The parts of a request that classification looks at.
pub struct RequestParts<'a> {
    /// Upper-case method, e.g. `GET`.
    pub method: &'a str,
    /// The **normalized** path (see [`crate::path`]), without the query.
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a dyn HeaderSource,
}

/// The outcome of classifying one request.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub class: Class,
    /// The winning rule; `None` means the manifest's `default_class` applied.
    pub rule: Option<&'a Rule>,
    /// Index of the winning rule in [`Manifest::rules`].
    pub rule_index: Option<usize>,
    /// The value of the rule's `tenant` parameter in this request's path (after alias
    /// rewriting: it may come from an alias's `to`).
    pub tenant: Option<&'a str>,
    /// Where `tenant` is, as a span of the classified path or of an alias's `to`
    /// (resolve it with [`Manifest::tenant_text`]); `Some` exactly when `tenant` is.
    pub tenant_at: Option<TenantAt>,
}

/// Two decisions are equal when they name the same rule (by index) and tenant (text and
/// span).
impl PartialEq for Decision<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.rule_index == other.rule_index
            && self.tenant == other.tenant
            && self.tenant_at == other.tenant_at
    }
}

impl Eq for Decision<'_> {}

impl Decision<'_> {
    pub fn is_default(&self) -> bool {
        self.rule.is_none()
    }
}

/// The text a [`TenantAt`] span is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// The normalized request path that was classified.
    Path,
    /// `Manifest::aliases()[i].to`: the tenant segment was put there by the alias.
    Alias(u16),
}

/// Where a decision's tenant is: bytes `start..end` of its [`TenantSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantAt {
    pub source: TenantSource,
    pub start: u32,
    pub end: u32,
}

impl Manifest {
    /// Classify one request. `req.path` must already be normalized
    /// ([`crate::path::normalize`]); a trailing slash is ignored and aliases are applied
    /// here. Allocation-free; the automaton visits each byte of `METHOD path` once.
    pub fn classify<'a>(&'a self, req: &RequestParts<'a>) -> Decision<'a> {
        let path = self.rewrite(req.path);
        let (prefix, rest) = (path.prefix.as_bytes(), path.rest.as_bytes());
        // Most requests carry a common method whose `"METHOD "` prefix was walked at
        // compile time; others walk it here.
        let eoi = match common_method(req.method) {
            Some(i) if prefix.is_empty() => self.automaton.walk(self.method_starts[i], &[rest]),
            Some(i) => self.automaton.walk(self.method_starts[i], &[prefix, rest]),
            None if req.method.as_bytes().contains(&b' ') => {
                // Not a method token (HTTP parsers never produce one); it must not be
                // able to spell out part of the canonical `METHOD path` string.
                return self.default_decision();
            }
            None => {
                let method = req.method.as_bytes();
                self.automaton
                    .walk(self.start, &[method, b" ", prefix, rest])
            }
        };
        match self.best_match(eoi, req) {
            None => self.default_decision(),
            Some(pid) => {
                let info = self.patterns[pid];
                let index = info.rule as usize;
                let tenant = (info.tenant_segment != PatternInfo::NO_TENANT)
                    .then(|| path.segment(usize::from(info.tenant_segment)))
                    .flatten();
                Decision {
                    class: info.class,
                    rule: Some(&self.rules[index]),
                    rule_index: Some(index),
                    tenant: tenant.map(|(text, _)| text),
                    tenant_at: tenant.map(|(_, at)| at),
                }
            }
        }
    }

    fn default_decision(&self) -> Decision<'_> {
        Decision {
            class: self.default_class,
            rule: None,
            rule_index: None,
            tenant: None,
            tenant_at: None,
        }
    }

    /// The text of a decision's [`TenantAt`]: a slice of `path`, the normalized request
    /// path that was classified, or of the alias's `to`. `None` when the span is not
    /// inside that text.
    pub fn tenant_text<'a>(&'a self, at: TenantAt, path: &'a str) -> Option<&'a str> {
        let text = match at.source {
            TenantSource::Path => path,
            TenantSource::Alias(i) => self.aliases.get(usize::from(i))?.to.as_str(),
        };
        text.get(at.start as usize..at.end as usize)
    }

    /// The most specific pattern (lowest ID) that a request ending at `eoi` matches and
    /// whose `when` conditions hold.
    #[inline]
    fn best_match(&self, eoi: u32, req: &RequestParts<'_>) -> Option<usize> {
        let holds = |pid: usize| {
            let info = self.patterns[pid];
            !info.has_when || when_holds(&self.rules[info.rule as usize], req)
        };
        match self.automaton.matches(eoi) {
            Matches::None => None,
            Matches::One(pid) => Some(pid as usize).filter(|&p| holds(p)),
            Matches::Many(pids) => pids.iter().map(|&p| p as usize).find(|&p| holds(p)),
        }
    }

    /// The path as the matcher sees it: a trailing slash dropped, then the alias with the
    /// longest `from` that is a whole-segment prefix applied (aliases are kept longest
    /// first). The result is `prefix + rest` without building a new string.
    #[inline]
    pub fn rewrite<'a>(&'a self, path: &'a str) -> Rewritten<'a> {
        let path = trim_trailing_slash(path);
        for (i, alias) in self.aliases.iter().enumerate() {
            if let Some(rest) = alias.strip_from(path) {
                // Fits: `compile` accepts at most `MAX_ALIASES` aliases.
                let i = i as u16;
                // `to = "/"` followed by more segments contributes nothing of its own.
                let prefix = if rest.is_empty() || alias.to != "/" {
                    alias.to.as_str()
                } else {
                    ""
                };
                return Rewritten {
                    alias: Some(i),
                    prefix,
                    rest,
                    rest_at: alias.from.len(),
                };
            }
        }
        Rewritten {
            alias: None,
            prefix: "",
            rest: path,
            rest_at: 0,
        }
    }
}

/// A request path as the matcher sees it (see [`Manifest::rewrite`]): `prefix` followed
/// by `rest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten<'a> {
    /// The alias applied, as an index into [`Manifest::aliases`].
    pub alias: Option<u16>,
    /// The applied alias's `to` (empty when that is `/` and more segments follow), or
    /// empty without an alias: byte offsets into `prefix` are offsets into `to`.
    pub prefix: &'a str,
    /// The rest of the path: what follows the alias's `from`, or the whole path; without
    /// its trailing slash.
    pub rest: &'a str,
    /// Where `rest` begins in the path given to [`Manifest::rewrite`].
    pub rest_at: usize,
}

impl<'a> Rewritten<'a> {
    /// The non-empty segments of `prefix + rest`, in order.
    pub fn segments(&self) -> impl Iterator<Item = &'a str> {
        let (prefix, rest) = (self.prefix, self.rest);
        prefix
            .split('/')
            .chain(rest.split('/'))
            .filter(|s| !s.is_empty())
    }

    /// The `k`-th (0-based) non-empty segment of `prefix + rest` and where it is: in the
    /// alias's `to`, or in the path given to [`Manifest::rewrite`] (`None` also when its
    /// offsets there do not fit in `u32`).
    pub fn segment(&self, mut k: usize) -> Option<(&'a str, TenantAt)> {
        if let Some(i) = self.alias {
            if let Some((start, end)) = find_segment(self.prefix, &mut k) {
                return located(self.prefix, start, end, TenantSource::Alias(i), 0);
            }
        }
        let (start, end) = find_segment(self.rest, &mut k)?;
        located(self.rest, start, end, TenantSource::Path, self.rest_at)
    }
}

/// The span of the `k`-th non-empty segment of `part`; otherwise `k` less the number of
/// segments `part` has.
fn find_segment(part: &str, k: &mut usize) -> Option<(usize, usize)> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'/' {
            i += 1;
        }
        if *k == 0 {
            return Some((start, i));
        }
        *k -= 1;
    }
    None
}

/// `part[start..end]`, with its span in `source`, where `part` begins at byte `base`.
fn located(
    part: &str,
    start: usize,
    end: usize,
    source: TenantSource,
    base: usize,
) -> Option<(&str, TenantAt)> {
    let at = TenantAt {
        source,
        start: u32::try_from(base + start).ok()?,
        end: u32::try_from(base + end).ok()?,
    };
    Some((&part[start..end], at))
}

/// `/a/b/` -> `/a/b`; `/` stays `/`.
pub(super) fn trim_trailing_slash(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

/// Do all of the rule's `when` conditions hold for this request?
pub(crate) fn when_holds(rule: &Rule, req: &RequestParts<'_>) -> bool {
    rule.when
        .header
        .iter()
        .all(|(name, cond)| cond.holds(req.headers.header(name)))
        && rule.when.query.iter().all(|(name, cond)| {
            // Query values are compared decoded.
            cond.holds_with(req.query.and_then(|q| query_value(q, name)), decoded_eq)
        })
}

/// The raw value of the first `name=value` pair of a query string whose decoded key is `name`.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decoded_eq(k, name).then_some(v)
    })
}

/// Compare a form-encoded query component with a plain string without allocating.
fn decoded_eq(raw: &str, plain: &str) -> bool {
    let mut want = plain.bytes();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'+' => b' ',
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 2;
                    h << 4 | l
                }
                _ => b'%',
            },
            other => other,
        };
        if want.next() != Some(b) {
            return false;
        }
        i += 1;
    }
    want.next().is_none()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"
aliases = [{ from = "/v2", to = "/api" }]

[[rule]]
path = "/api/{ws}/files/{*path}"
class = "ide-only"
why = "working copy"
tenant = "ws"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/files/{name}/meta"
class = "fleet-ok"
why = "metadata row"
tenant = "ws"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/runs"
class = "ide-only"
why = "live run list"
[rule.when]
query = { live = "1" }
header = { "x-preview" = "*" }

[[rule]]
path = "/"
class = "ide-only"
why = "the ide's landing page"
"#;

    fn manifest() -> Manifest {
        Manifest::from_sources(&[("r.toml".into(), MANIFEST.into())]).unwrap()
    }

    fn classify<'a>(m: &'a Manifest, method: &'a str, path: &'a str) -> Decision<'a> {
        m.classify(&RequestParts {
            method,
            path,
            query: None,
            headers: &NoHeaders,
        })
    }

    #[test]
    fn most_specific_rule_wins_and_tenant_is_extracted() {
        let m = manifest();
        let d = classify(&m, "PUT", "/api/w1/files/a/b/c");
        assert_eq!(
            (d.class, d.rule_index, d.tenant),
            (Class::IdeOnly, Some(0), Some("w1"))
        );
        let d = classify(&m, "GET", "/api/w1/files/a/meta");
        assert_eq!(
            (d.class, d.rule_index, d.tenant),
            (Class::FleetOk, Some(1), Some("w1"))
        );
        // HEAD matches GET rules; other methods fall through to the wildcard.
        assert_eq!(
            classify(&m, "HEAD", "/api/w1/files/a/meta").rule_index,
            Some(1)
        );
        assert_eq!(
            classify(&m, "POST", "/api/w1/files/a/meta").rule_index,
            Some(0)
        );
        // `{*path}` needs at least one segment.
        assert!(classify(&m, "GET", "/api/w1/files").is_default());
    }

    #[test]
    fn trailing_slash_and_aliases() {
        let m = manifest();
        assert_eq!(
            classify(&m, "GET", "/api/w1/files/a/meta/").rule_index,
            Some(1)
        );
        let d = classify(&m, "GET", "/v2/w9/files/x");
        assert_eq!((d.rule_index, d.tenant), (Some(0), Some("w9")));
        // An alias replaces whole segments only.
        assert!(classify(&m, "GET", "/v2x/w9/files/x").is_default());
        assert_eq!(classify(&m, "GET", "/").rule_index, Some(3));
        assert_eq!(classify(&m, "GET", "/v2").class, Class::FleetOk);
    }

    #[test]
    fn a_method_with_a_space_matches_nothing() {
        let m = manifest();
        assert!(classify(&m, "GET /api/w1/files/x", "/").is_default());
    }

    #[test]
    fn the_longest_alias_wins_whatever_the_file_order() {
        let rules = "[[rule]]\npath = \"/api/{*r}\"\nclass = \"ide-only\"\nwhy = \"x\"\n";
        let a = "[manifest]\naliases = [{ from = \"/old\", to = \"/legacy\" }]\n";
        let b = "[manifest]\naliases = [{ from = \"/old/api\", to = \"/api\" }]\n";
        for order in [[a, b], [b, a]] {
            let m = Manifest::from_sources(&[
                ("1.toml".into(), order[0].into()),
                ("2.toml".into(), order[1].into()),
                ("3.toml".into(), rules.into()),
            ])
            .unwrap();
            assert_eq!(classify(&m, "GET", "/old/api/k").class, Class::IdeOnly);
            assert!(classify(&m, "GET", "/old/k").is_default());
        }
    }

    #[test]
    fn when_conditions_must_all_hold() {
        let m = manifest();
        let preview = vec![("X-Preview".to_string(), "yes".to_string())];
        let none: Vec<(String, String)> = Vec::new();
        let with = |query, headers: &Vec<(String, String)>| {
            m.classify(&RequestParts {
                method: "GET",
                path: "/api/w1/runs",
                query,
                headers,
            })
            .rule_index
        };
        let headers = &preview;
        assert_eq!(with(Some("a=2&live=1"), headers), Some(2));
        assert_eq!(with(Some("live=%31"), headers), Some(2));
        assert_eq!(with(Some("live=2"), headers), None);
        assert_eq!(with(Some("live=1"), &none), None);
        assert_eq!(with(None, headers), None);
    }

    const TENANTS: &str = r#"
[manifest]
aliases = [
    { from = "/v2", to = "/api" },
    { from = "/shared", to = "/api/team" },
    { from = "/top", to = "/" },
    { from = "/old", to = "/o9" },
]

[[rule]]
path = "/api/{ws}/files/{*path}"
class = "ide-only"
why = "working copy"
tenant = "ws"

[[rule]]
path = "/api/{ws}"
class = "fleet-ok"
why = "workspace row"
tenant = "ws"

[[rule]]
path = "/{org}/x"
class = "fleet-ok"
why = "org row"
tenant = "org"
"#;

    /// Classify `path`; check that `tenant_at` resolves to `tenant` and return both.
    fn tenant_of<'a>(m: &'a Manifest, path: &'a str) -> (Option<&'a str>, Option<TenantAt>) {
        let d = classify(m, "GET", path);
        assert_eq!(d.tenant_at.is_some(), d.tenant.is_some(), "{path}");
        if let Some(at) = d.tenant_at {
            assert_eq!(m.tenant_text(at, path), d.tenant, "{path}: {at:?}");
        }
        (d.tenant, d.tenant_at)
    }

    fn at(source: TenantSource, start: u32, end: u32) -> Option<TenantAt> {
        Some(TenantAt { source, start, end })
    }

    fn alias_index(m: &Manifest, from: &str) -> TenantSource {
        let i = m.aliases().iter().position(|a| a.from == from).unwrap();
        TenantSource::Alias(i as u16)
    }

    #[test]
    fn tenant_without_an_alias_is_a_span_of_the_path() {
        let m = Manifest::from_sources(&[("t.toml".into(), TENANTS.into())]).unwrap();
        assert_eq!(
            tenant_of(&m, "/api/w1/files/a"),
            (Some("w1"), at(TenantSource::Path, 5, 7))
        );
        assert_eq!(
            tenant_of(&m, "/o1/x"),
            (Some("o1"), at(TenantSource::Path, 1, 3))
        );
        assert_eq!(tenant_of(&m, "/nothing/here"), (None, None));
    }

    #[test]
    fn tenant_after_an_alias_is_a_span_of_the_request_path() {
        let m = Manifest::from_sources(&[("t.toml".into(), TENANTS.into())]).unwrap();
        // `/v2/w9/files/x` is classified as `/api/w9/files/x`: the tenant is where the
        // request has it, not where the rewritten path would.
        assert_eq!(
            tenant_of(&m, "/v2/w9/files/x"),
            (Some("w9"), at(TenantSource::Path, 4, 6))
        );
        // `to = "/"` adds no segment: `/top/o2/x` is `/o2/x`.
        assert_eq!(
            tenant_of(&m, "/top/o2/x"),
            (Some("o2"), at(TenantSource::Path, 5, 7))
        );
    }

    #[test]
    fn tenant_inside_an_alias_replacement_is_a_span_of_its_to() {
        let m = Manifest::from_sources(&[("t.toml".into(), TENANTS.into())]).unwrap();
        let shared = alias_index(&m, "/shared");
        // `/shared/files/x` is `/api/team/files/x`: "team" is only in the alias.
        assert_eq!(
            tenant_of(&m, "/shared/files/x"),
            (Some("team"), at(shared, 5, 9))
        );
        assert_eq!(tenant_of(&m, "/shared"), (Some("team"), at(shared, 5, 9)));
        // `/old/x` is `/o9/x`.
        assert_eq!(
            tenant_of(&m, "/old/x"),
            (Some("o9"), at(alias_index(&m, "/old"), 1, 3))
        );
    }

    #[test]
    fn tenant_with_a_trailing_slash() {
        let m = Manifest::from_sources(&[("t.toml".into(), TENANTS.into())]).unwrap();
        assert_eq!(
            tenant_of(&m, "/api/w1/"),
            (Some("w1"), at(TenantSource::Path, 5, 7))
        );
        assert_eq!(
            tenant_of(&m, "/v2/w9/"),
            (Some("w9"), at(TenantSource::Path, 4, 6))
        );
        assert_eq!(
            tenant_of(&m, "/shared/"),
            (Some("team"), at(alias_index(&m, "/shared"), 5, 9))
        );
    }

    #[test]
    fn tenant_text_outside_its_source_is_none() {
        let m = Manifest::from_sources(&[("t.toml".into(), TENANTS.into())]).unwrap();
        let span = |source, start, end| TenantAt { source, start, end };
        assert_eq!(m.tenant_text(span(TenantSource::Path, 5, 7), "/api"), None);
        assert_eq!(
            m.tenant_text(span(TenantSource::Path, 3, 2), "/api/w1"),
            None
        );
        assert_eq!(
            m.tenant_text(span(TenantSource::Alias(9), 0, 1), "/a"),
            None
        );
        assert_eq!(
            m.tenant_text(span(alias_index(&m, "/shared"), 5, 10), "/a"),
            None
        );
        // Not on a character boundary.
        assert_eq!(m.tenant_text(span(TenantSource::Path, 1, 2), "/é"), None);
    }

    #[test]
    fn decoded_query_comparison() {
        assert!(decoded_eq("a+b%20c", "a b c"));
        assert!(!decoded_eq("a%2", "a%"));
        assert!(decoded_eq("100%", "100%"));
        assert!(!decoded_eq("ab", "abc"));
        assert_eq!(query_value("x=1&y&z=3", "y"), Some(""));
        assert_eq!(query_value("x=1", "y"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const WORDS: [&str; 3] = ["a", "b", "t"];

        fn words(range: std::ops::Range<usize>) -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(&WORDS[..]), range)
                .prop_map(|w| format!("/{}", w.join("/")))
        }

        /// Aliases over a small alphabet (`to` may be `/`) and rules whose first parameter
        /// is the tenant; all rules have one class, so no manifest is ambiguous.
        fn manifest() -> impl Strategy<Value = String> {
            let aliases = prop::collection::vec((words(1..3), words(0..3)), 0..4);
            let rules =
                prop::collection::vec((prop::collection::vec(0u8..4, 1..4), any::<bool>()), 1..6);
            (aliases, rules).prop_map(|(aliases, rules)| {
                let mut text = String::from("[manifest]\naliases = [");
                let mut seen = Vec::new();
                for (from, to) in aliases {
                    if !seen.contains(&from) {
                        text.push_str(&format!("{{ from = {from:?}, to = {to:?} }},"));
                        seen.push(from);
                    }
                }
                text.push_str("]\n");
                for (segments, rest) in rules {
                    let mut path = String::new();
                    let mut tenant = None;
                    for (i, s) in segments.iter().enumerate() {
                        match WORDS.get(usize::from(*s)) {
                            Some(w) => path.push_str(&format!("/{w}")),
                            None => {
                                path.push_str(&format!("/{{p{i}}}"));
                                tenant.get_or_insert(i);
                            }
                        }
                    }
                    if rest {
                        path.push_str("/{*rest}");
                    }
                    text.push_str(&format!(
                        "[[rule]]\npath = {path:?}\nclass = \"ide-only\"\nwhy = \"x\"\n"
                    ));
                    if let Some(i) = tenant {
                        text.push_str(&format!("tenant = \"p{i}\"\n"));
                    }
                }
                text
            })
        }

        fn request_path() -> impl Strategy<Value = String> {
            (
                prop::collection::vec(prop::sample::select(vec!["a", "b", "t", "xy"]), 0..6),
                any::<bool>(),
            )
                .prop_map(|(segs, slash)| {
                    let mut p: String = segs.iter().map(|s| format!("/{s}")).collect();
                    if p.is_empty() || slash {
                        p.push('/');
                    }
                    p
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// `tenant_text(tenant_at, path)` is the tenant, and the span is a whole
            /// segment of the request path or of the applied alias's `to`.
            #[test]
            fn tenant_at_resolves_to_the_tenant(
                text in manifest(),
                paths in prop::collection::vec(request_path(), 1..12),
            ) {
                let m = Manifest::from_sources(&[("p.toml".into(), text.clone())])
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                for path in &paths {
                    let d = classify(&m, "GET", path);
                    prop_assert_eq!(d.tenant_at.is_some(), d.tenant.is_some());
                    let Some(at) = d.tenant_at else { continue };
                    prop_assert_eq!(m.tenant_text(at, path), d.tenant, "{} {:?}\n{}", path, at, text);
                    // The tenant is segment k of the rewritten path.
                    let k = d.rule.and_then(|r| r.tenant_segment);
                    let rewritten = m.rewrite(path);
                    prop_assert_eq!(k.and_then(|k| rewritten.segments().nth(k)), d.tenant);
                    let whole = match at.source {
                        TenantSource::Path => path.as_str(),
                        TenantSource::Alias(i) => {
                            prop_assert_eq!(rewritten.alias, Some(i));
                            m.aliases()[usize::from(i)].to.as_str()
                        }
                    };
                    let (start, end) = (at.start as usize, at.end as usize);
                    prop_assert!(start > 0 && whole.as_bytes()[start - 1] == b'/');
                    prop_assert!(end == whole.len() || whole.as_bytes()[end] == b'/');
                }
            }
        }
    }
}
