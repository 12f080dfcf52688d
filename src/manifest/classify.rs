//! Per-request classification: feed `METHOD path` through the compiled DFA, then pick
//! the most specific matching rule whose `when` conditions hold. No allocation; the
//! automaton's work is proportional to the path length, not the number of rules.

use regex_automata::dfa::Automaton;

use regex_automata::util::primitives::StateID;

use super::compile::{Dfa, PatternInfo, COMMON_METHODS};
use super::{Class, Condition, Manifest, Rule};

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
    /// The value of the rule's `tenant` parameter in this request's path.
    pub tenant: Option<&'a str>,
}

/// Two decisions are equal when they name the same rule (by index) and tenant.
impl PartialEq for Decision<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.rule_index == other.rule_index
            && self.tenant == other.tenant
    }
}

impl Eq for Decision<'_> {}

impl Decision<'_> {
    pub fn is_default(&self) -> bool {
        self.rule.is_none()
    }
}

impl Manifest {
    /// Classify one request. `req.path` must already be normalized
    /// ([`crate::path::normalize`]); a trailing slash is ignored and aliases are applied
    /// here. Allocation-free; the automaton visits each byte of `METHOD path` once.
    pub fn classify<'a>(&'a self, req: &RequestParts<'a>) -> Decision<'a> {
        if req.method.as_bytes().contains(&b' ') {
            // Not a method token (HTTP parsers never produce one); it must not be able
            // to spell out part of the canonical `METHOD path` string.
            return self.default_decision();
        }
        let Rewritten { prefix, rest, .. } = self.rewrite(req.path);
        // Most requests carry a common method whose `"METHOD "` prefix was walked at
        // compile time; others walk it here.
        let (state, input) = match COMMON_METHODS.iter().position(|m| *m == req.method) {
            Some(i) => (
                self.method_starts[i],
                [&b""[..], b"", prefix.as_bytes(), rest.as_bytes()],
            ),
            None => (
                self.start,
                [
                    req.method.as_bytes(),
                    b" ",
                    prefix.as_bytes(),
                    rest.as_bytes(),
                ],
            ),
        };
        let best = match &self.dfa {
            Dfa::Dense(dfa) => self.best_match(dfa, state, &input, req),
            Dfa::Sparse(dfa) => self.best_match(dfa, state, &input, req),
        };
        match best {
            None => self.default_decision(),
            Some(pid) => {
                let info = self.patterns[pid];
                let index = info.rule as usize;
                Decision {
                    class: info.class,
                    rule: Some(&self.rules[index]),
                    rule_index: Some(index),
                    tenant: (info.tenant_segment != PatternInfo::NO_TENANT)
                        .then(|| nth_segment(prefix, rest, usize::from(info.tenant_segment)))
                        .flatten(),
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
        }
    }

    /// Walk the DFA over the concatenated input; return the most specific matching
    /// pattern (lowest ID) whose `when` conditions hold.
    ///
    /// Inside a parameter the DFA loops on every byte but `/`; such states are
    /// "accelerated", and the walk jumps to the next byte that can leave the state with
    /// `memchr` instead of stepping through a long id or hash byte by byte.
    #[inline]
    fn best_match<A: Automaton>(
        &self,
        dfa: &A,
        mut state: StateID,
        input: &[&[u8]; 4],
        req: &RequestParts<'_>,
    ) -> Option<usize> {
        if dfa.is_dead_state(state) {
            return None;
        }
        for part in input {
            let mut at = 0;
            while at < part.len() {
                state = dfa.next_state(state, part[at]);
                at += 1;
                if dfa.is_special_state(state) {
                    if dfa.is_dead_state(state) {
                        return None;
                    }
                    if dfa.is_accel_state(state) {
                        let rest = &part[at..];
                        let skip = match *dfa.accelerator(state) {
                            [a] => memchr::memchr(a, rest),
                            [a, b] => memchr::memchr2(a, b, rest),
                            [a, b, c] => memchr::memchr3(a, b, c, rest),
                            _ => Some(0),
                        };
                        at += skip.unwrap_or(rest.len());
                    }
                }
            }
        }
        state = dfa.next_eoi_state(state);
        if !dfa.is_match_state(state) {
            return None;
        }
        let mut best: Option<usize> = None;
        for i in 0..dfa.match_len(state) {
            let pid = dfa.match_pattern(state, i).as_usize();
            if best.is_some_and(|b| b < pid) {
                continue;
            }
            let info = self.patterns[pid];
            if !info.has_when || when_holds(&self.rules[info.rule as usize], req) {
                best = Some(pid);
            }
        }
        best
    }

    /// The path as the matcher sees it: a trailing slash dropped, then the alias with the
    /// longest `from` that is a whole-segment prefix applied (aliases are kept longest
    /// first). The result is `prefix + rest` without building a new string.
    #[inline]
    pub fn rewrite<'a>(&'a self, path: &'a str) -> Rewritten<'a> {
        let path = trim_trailing_slash(path);
        for (i, alias) in self.aliases.iter().enumerate() {
            if let Some(rest) = alias.strip_from(path) {
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
    pub alias: Option<usize>,
    /// The applied alias's `to` (empty when that is `/` and more segments follow), or
    /// empty without an alias. Byte offsets into `prefix` are offsets into `to`.
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
}

/// `/a/b/` -> `/a/b`; `/` stays `/`.
pub(super) fn trim_trailing_slash(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

/// The `k`-th (0-based) non-empty segment of `prefix + rest`.
pub(super) fn nth_segment<'a>(prefix: &'a str, rest: &'a str, mut k: usize) -> Option<&'a str> {
    for part in [prefix, rest] {
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
            if k == 0 {
                return Some(&part[start..i]);
            }
            k -= 1;
        }
    }
    None
}

/// Do all of the rule's `when` conditions hold for this request?
pub(super) fn when_holds(rule: &Rule, req: &RequestParts<'_>) -> bool {
    rule.when
        .header
        .iter()
        .all(|(name, cond)| cond.holds(req.headers.header(name)))
        && rule.when.query.iter().all(|(name, cond)| {
            let value = req.query.and_then(|q| query_value(q, name));
            match (cond, value) {
                (Condition::Present, Some(v)) => !v.is_empty(),
                (Condition::Equals(want), Some(v)) => decoded_eq(v, want),
                (_, None) => false,
            }
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

    #[test]
    fn decoded_query_comparison() {
        assert!(decoded_eq("a+b%20c", "a b c"));
        assert!(!decoded_eq("a%2", "a%"));
        assert!(decoded_eq("100%", "100%"));
        assert!(!decoded_eq("ab", "abc"));
        assert_eq!(query_value("x=1&y&z=3", "y"), Some(""));
        assert_eq!(query_value("x=1", "y"), None);
    }
}
