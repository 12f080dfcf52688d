//! Compiling a parsed manifest: order rules by specificity, reject ambiguity, warn about
//! rules that can never win, and build one multi-pattern DFA over `METHOD path`.
//!
//! Pattern IDs are assigned in precedence order (ID 0 is the most specific rule), so
//! the classifier only has to pick the smallest matching ID whose conditions hold.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};
use sha2::{Digest, Sha256};

use super::load::ParsedManifest;
use super::packed::{pack, Packed};
use super::pattern::Segment;
use super::{
    base_name, first_file, Alias, Class, Condition, Diagnostic, LoadError, Methods, Rule, Severity,
    When,
};

/// At most this many aliases: a decision names the alias a tenant came from by a `u16`
/// index ([`super::TenantSource::Alias`]).
pub const MAX_ALIASES: usize = 1 << 16;

/// Upper bound on the memory the DFA construction may use.
const AUTOMATON_LIMIT_BYTES: usize = 512 << 20;

/// The hot part of a rule, by pattern ID.
#[derive(Debug, Clone, Copy)]
pub(super) struct PatternInfo {
    /// Index into `Manifest::rules`.
    pub rule: u32,
    /// Segment index of the tenant parameter, [`PatternInfo::NO_TENANT`] if none.
    pub tenant_segment: u16,
    pub class: Class,
    pub has_when: bool,
}

impl PatternInfo {
    pub const NO_TENANT: u16 = u16::MAX;

    fn new(index: usize, rule: &Rule) -> PatternInfo {
        PatternInfo {
            rule: index as u32,
            tenant_segment: rule
                .tenant_segment
                .and_then(|k| u16::try_from(k).ok())
                .unwrap_or(PatternInfo::NO_TENANT),
            class: rule.class,
            has_when: !rule.when.is_empty(),
        }
    }
}

/// Methods whose `"METHOD "` prefix is walked once at compile time.
pub(super) const COMMON_METHODS: [&str; 7] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The index of `method` in [`COMMON_METHODS`].
#[inline]
pub(super) fn common_method(method: &str) -> Option<usize> {
    match method {
        "GET" => Some(0),
        "HEAD" => Some(1),
        "POST" => Some(2),
        "PUT" => Some(3),
        "PATCH" => Some(4),
        "DELETE" => Some(5),
        "OPTIONS" => Some(6),
        _ => None,
    }
}

/// Walk `bytes` from `state` (no acceleration: only used at compile time).
fn walk<A: Automaton>(dfa: &A, mut state: StateID, bytes: &[u8]) -> StateID {
    for &b in bytes {
        state = dfa.next_state(state, b);
    }
    state
}

fn method_starts<A: Automaton>(dfa: &A, start: StateID) -> [StateID; COMMON_METHODS.len()] {
    COMMON_METHODS.map(|m| walk(dfa, walk(dfa, start, m.as_bytes()), b" "))
}

/// A loaded, checked and compiled manifest. Immutable; share it behind an `Arc`.
#[derive(Debug)]
pub struct Manifest {
    pub(super) rules: Vec<Rule>,
    /// Indexed by pattern ID (most specific first): what the classifier needs about
    /// each rule, packed so the per-request lookup touches 8 bytes, not a whole [`Rule`].
    pub(super) patterns: Vec<PatternInfo>,
    pub(super) default_class: Class,
    pub(super) aliases: Vec<Alias>,
    pub(super) automaton: Packed,
    /// Where every walk starts (in `automaton`).
    pub(super) start: u32,
    /// The state after `"{METHOD} "` for each of [`COMMON_METHODS`]: most requests
    /// start their walk there instead of at `start`.
    pub(super) method_starts: [u32; COMMON_METHODS.len()],
    warnings: Vec<Diagnostic>,
    digest: String,
    files: Vec<String>,
}

impl Manifest {
    /// Rules in load order (file-name order, then line).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_class(&self) -> Class {
        self.default_class
    }

    pub fn aliases(&self) -> &[Alias] {
        &self.aliases
    }

    /// Non-fatal problems: duplicate rules, rules that can never win.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// SHA-256 (hex) over the manifest files' base names and contents, in load order.
    /// Equal on every replica that runs the same manifest, wherever it is mounted.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The files the manifest was loaded from, in load order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Rule indices in precedence order, most specific first.
    pub fn precedence(&self) -> impl Iterator<Item = usize> + '_ {
        self.patterns.iter().map(|p| p.rule as usize)
    }

    /// Heap bytes held by the compiled automaton.
    pub fn automaton_bytes(&self) -> usize {
        self.automaton.memory_usage()
    }
}

/// Compare two rules by specificity; `Greater` means `a` wins over `b`.
/// Segment by segment from the left: literal > `{param}` > `{*rest}`; then more
/// segments; then an explicit method list over `*`; then `when` conditions over none.
pub fn specificity(a: &Rule, b: &Rule) -> Ordering {
    for (sa, sb) in a.segments.iter().zip(&b.segments) {
        match sb.rank().cmp(&sa.rank()) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.segments
        .len()
        .cmp(&b.segments.len())
        .then_with(|| (!a.methods.is_any()).cmp(&!b.methods.is_any()))
        .then_with(|| (!a.when.is_empty()).cmp(&!b.when.is_empty()))
}

/// Total precedence order: specificity, then load order (earlier wins a tie).
pub fn precedence(rules: &[Rule], a: usize, b: usize) -> Ordering {
    specificity(&rules[b], &rules[a]).then(a.cmp(&b))
}

/// Does every request method accepted by `b` also match `a`?
fn methods_cover(a: &Methods, b: &Methods) -> bool {
    match (a, b) {
        (Methods::Any, _) => true,
        (Methods::List(_), Methods::Any) => false,
        (Methods::List(_), Methods::List(y)) => y.iter().all(|m| a.matches(m)),
    }
}

/// Could both condition sets hold for one request?
fn when_compatible(a: &When, b: &When) -> bool {
    let clash = |x: &[(String, Condition)], y: &[(String, Condition)]| {
        x.iter().any(|(k, cx)| {
            y.iter().any(|(l, cy)| {
                k == l && matches!((cx, cy), (Condition::Equals(v), Condition::Equals(w)) if v != w)
            })
        })
    };
    !clash(&a.query, &b.query) && !clash(&a.header, &b.header)
}

/// Does `b` holding imply `a` holds (a's conditions are a subset of b's)?
fn when_implied(a: &When, b: &When) -> bool {
    a.query.iter().all(|c| b.query.contains(c)) && a.header.iter().all(|c| b.header.contains(c))
}

/// The shape of a path pattern with parameter names erased: rules with equal
/// specificity can only overlap when their shapes are equal.
fn shape(rule: &Rule) -> String {
    let mut s = String::new();
    for seg in &rule.segments {
        s.push('/');
        match seg {
            Segment::Literal(l) => s.push_str(l),
            Segment::Param(_) => s.push_str("{}"),
            Segment::Rest(_) => s.push_str("{*}"),
        }
    }
    s
}

fn regex_for(rule: &Rule) -> String {
    let mut re = String::with_capacity(rule.path.len() * 2 + 16);
    match &rule.methods {
        Methods::Any => re.push_str("[^ ]+"),
        Methods::List(list) => {
            re.push_str("(?:");
            let mut first = true;
            let mut add = |m: &str, re: &mut String| {
                if !first {
                    re.push('|');
                }
                first = false;
                escape_into(m, re);
            };
            for m in list {
                add(m, &mut re);
            }
            if list.iter().any(|m| m == "GET") && !list.iter().any(|m| m == "HEAD") {
                add("HEAD", &mut re);
            }
            re.push(')');
        }
    }
    re.push(' ');
    if rule.segments.is_empty() {
        re.push('/');
    }
    for seg in &rule.segments {
        match seg {
            Segment::Literal(l) => {
                re.push('/');
                escape_into(l, &mut re);
            }
            Segment::Param(_) => re.push_str("/[^/]+"),
            Segment::Rest(_) => re.push_str("(?:/[^/]+)+"),
        }
    }
    re.push('$');
    re
}

fn escape_into(text: &str, re: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            re.push(b as char);
        } else {
            let _ = write!(re, "\\x{b:02X}");
        }
    }
}

fn digest_of(sources: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in sources {
        h.update(base_name(name).as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Determinize the rules' regexes (in precedence order) into one anchored dense DFA
/// that reports every pattern matching at the end of the input.
fn build_dense(regexes: &[String]) -> Result<dense::DFA<Vec<u32>>, String> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .minimize(false)
                .byte_classes(true)
                // `pack` finds the states worth accelerating itself; regex-automata's
                // own pass would only reorder the dense table, at a cost that grows
                // with the square of its size (0.45 of the 0.75 s that determinizing
                // 10,000 synthetic rules took with it).
                .accelerate(false)
                // A pathological manifest fails to load with a clear error instead of
                // exhausting memory (10,000 realistic rules need about 15 MiB).
                .dfa_size_limit(Some(AUTOMATON_LIMIT_BYTES))
                .determinize_size_limit(Some(AUTOMATON_LIMIT_BYTES)),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false).shrink(false))
        .build_many(regexes)
        .map_err(|e| e.to_string())
}

/// Check a parsed manifest across rules and build the automaton.
pub fn compile(parsed: ParsedManifest) -> Result<Manifest, LoadError> {
    let ParsedManifest {
        default_class,
        aliases,
        rules,
        sources,
    } = parsed;
    if aliases.len() > MAX_ALIASES {
        return Err(Diagnostic::error(
            first_file(&sources),
            0,
            format!(
                "{} aliases; a manifest may have at most {MAX_ALIASES}",
                aliases.len()
            ),
        )
        .into());
    }
    let mut diagnostics = check_overlaps(&rules);
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(LoadError { diagnostics });
    }

    let mut order: Vec<u32> = (0..rules.len() as u32).collect();
    order.sort_by(|&a, &b| precedence(&rules, a as usize, b as usize));
    let patterns: Vec<PatternInfo> = order
        .iter()
        .map(|&i| PatternInfo::new(i as usize, &rules[i as usize]))
        .collect();
    let regexes: Vec<String> = order
        .iter()
        .map(|&i| regex_for(&rules[i as usize]))
        .collect();

    let built = build_dense(&regexes);
    let fail = |e: &dyn std::fmt::Display| {
        LoadError::from(Diagnostic::error(
            first_file(&sources),
            0,
            format!("cannot compile the route automaton: {e}"),
        ))
    };
    let dense = built.map_err(|e| fail(&e))?;
    let anchored = start::Config::new().anchored(Anchored::Yes);
    let start = dense.start_state(&anchored).map_err(|e| fail(&e))?;
    let mut roots = vec![start];
    roots.extend(method_starts(&dense, start));
    let (automaton, starts) = pack(&dense, &roots).map_err(|e| fail(&e))?;
    drop(dense);
    let mut method_starts = [0; COMMON_METHODS.len()];
    method_starts.copy_from_slice(&starts[1..]);
    diagnostics.retain(|d| d.severity == Severity::Warning);
    Ok(Manifest {
        digest: digest_of(&sources),
        files: sources.into_iter().map(|s| s.0).collect(),
        rules,
        patterns,
        default_class,
        aliases,
        automaton,
        start: starts[0],
        method_starts,
        warnings: diagnostics,
    })
}

/// Find pairs of rules with equal specificity that can match the same request:
/// of different classes that is an error (ambiguity), of the same class a warning
/// when one of them can never win.
fn check_overlaps(rules: &[Rule]) -> Vec<Diagnostic> {
    let mut buckets: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        buckets.entry(shape(r)).or_default().push(i);
    }
    let mut keys: Vec<&String> = buckets.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let group = &buckets[key];
        for (n, &a) in group.iter().enumerate() {
            for &b in &group[n + 1..] {
                let (ra, rb) = (&rules[a], &rules[b]);
                if specificity(ra, rb) != Ordering::Equal
                    || !ra.methods.overlaps(&rb.methods)
                    || !when_compatible(&ra.when, &rb.when)
                {
                    continue;
                }
                if ra.class != rb.class {
                    out.push(Diagnostic::error(
                        rb.file.clone(),
                        rb.line,
                        format!(
                            "ambiguous rules: {} ({} {} {}) and {} ({} {} {}) can match the same request at equal specificity; make one more specific (a literal segment, an explicit method or a `when` condition)",
                            ra.location(),
                            ra.methods.names().join(","),
                            ra.path,
                            ra.class,
                            rb.location(),
                            rb.methods.names().join(","),
                            rb.path,
                            rb.class,
                        ),
                    ));
                } else if methods_cover(&ra.methods, &rb.methods)
                    && when_implied(&ra.when, &rb.when)
                {
                    let identical = ra.methods == rb.methods && ra.when == rb.when;
                    out.push(Diagnostic {
                        file: rb.file.clone(),
                        line: rb.line,
                        severity: Severity::Warning,
                        message: if identical {
                            format!("duplicate rule: {} already matches {} {}", ra.location(), ra.methods.names().join(","), ra.path)
                        } else {
                            format!("rule can never win: {} matches every request it matches and comes first", ra.location())
                        },
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::manifest::Manifest;

    fn src(text: &str) -> Vec<(String, String)> {
        vec![("routes/a.toml".into(), text.into())]
    }

    #[test]
    fn ambiguity_names_both_rules() {
        let e = Manifest::from_sources(&src(
            "[[rule]]\npath = \"/api/{ws}/files\"\nclass = \"ide-only\"\nwhy = \"x\"\n\n[[rule]]\npath = \"/api/{id}/files\"\nclass = \"fleet-ok\"\nwhy = \"y\"\n",
        ))
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("routes/a.toml:6: error: ambiguous rules: routes/a.toml:1 "),
            "{msg}"
        );
        assert!(msg.contains("and routes/a.toml:6 "), "{msg}");
    }

    #[test]
    fn precedence_breaks_what_would_otherwise_be_ambiguous() {
        // Explicit method over `*`, `when` over none, literal over param: all fine.
        let m = Manifest::from_sources(&src(concat!(
            "[[rule]]\npath = \"/a/{x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/a/{x}\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/a/{x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n[rule.when]\nquery = { q = \"*\" }\n",
            "[[rule]]\npath = \"/a/lit\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
        )))
        .unwrap();
        assert!(m.warnings().is_empty(), "{:?}", m.warnings());
    }

    #[test]
    fn disjoint_methods_or_conditions_are_not_ambiguous() {
        Manifest::from_sources(&src(concat!(
            "[[rule]]\nmethods = [\"POST\"]\npath = \"/a/{x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/a/{y}\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"PUT\"]\npath = \"/b\"\nclass = \"ide-only\"\nwhy = \"x\"\n[rule.when]\nheader = { v = \"1\" }\n",
            "[[rule]]\nmethods = [\"PUT\"]\npath = \"/b\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n[rule.when]\nheader = { v = \"2\" }\n",
        )))
        .unwrap();
        // HEAD is implied by GET, so GET vs HEAD overlaps.
        let e = Manifest::from_sources(&src(concat!(
            "[[rule]]\nmethods = [\"HEAD\"]\npath = \"/a\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/a\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
        )))
        .unwrap_err();
        assert!(e.to_string().contains("ambiguous"));
    }

    #[test]
    fn duplicates_and_shadowed_rules_warn() {
        let m = Manifest::from_sources(&src(concat!(
            "[[rule]]\nmethods = [\"GET\", \"POST\"]\npath = \"/a/{x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\"]\npath = \"/a/{y}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
            "[[rule]]\nmethods = [\"GET\", \"POST\"]\npath = \"/a/{z}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
        )))
        .unwrap();
        let w: Vec<String> = m.warnings().iter().map(|d| d.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().any(
            |d| d.starts_with("routes/a.toml:6: warning: rule can never win: routes/a.toml:1")
        ));
        assert!(w
            .iter()
            .any(|d| d.starts_with("routes/a.toml:11: warning: duplicate rule: routes/a.toml:1")));
    }

    #[test]
    fn at_most_max_aliases() {
        use crate::manifest::load::ParsedManifest;
        use crate::manifest::{Alias, Class};
        let parsed = |n: usize| ParsedManifest {
            default_class: Class::FleetOk,
            aliases: (0..n)
                .map(|i| Alias {
                    from: format!("/a{i}"),
                    to: "/b".into(),
                })
                .collect(),
            rules: Vec::new(),
            sources: vec![("a.toml".into(), String::new())],
        };
        assert!(super::compile(parsed(super::MAX_ALIASES)).is_ok());
        let e = super::compile(parsed(super::MAX_ALIASES + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.toml: error: 65537 aliases; a manifest may have at most 65536"
        );
    }

    /// The packed automaton is the dense DFA re-encoded: from the start, every input
    /// ends with the same patterns (however it is split into parts), on manifests with
    /// long literals, parameters, catch-alls, method lists and `*`, and none.
    #[test]
    fn packed_automaton_agrees_with_the_dense_dfa() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        use regex_automata::dfa::Automaton;
        use regex_automata::util::{primitives::StateID, start};
        use regex_automata::Anchored;

        let mut github = String::new();
        for (i, line) in include_str!("../../benches/data/github.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
        {
            let (method, path) = line.split_once(' ').unwrap();
            let class = if i % 3 == 0 { "ide-only" } else { "fleet-ok" };
            github.push_str(&format!(
                "[[rule]]\nmethods = [\"{method}\"]\npath = \"{path}\"\nclass = \"{class}\"\nwhy = \"x\"\n"
            ));
        }
        let mut synthetic = String::new();
        for i in 0..400 {
            let methods = ["[\"GET\"]", "[\"POST\", \"PUT\"]", "[\"*\"]"][i % 3];
            let tail = ["{*rest}", "{id}", "x.y~z"][i % 3];
            synthetic.push_str(&format!(
                "[[rule]]\nmethods = {methods}\npath = \"/svc{}/{{ws}}/r{i}/{tail}\"\nclass = \"ide-only\"\nwhy = \"x\"\n",
                i % 7
            ));
        }
        let tiny = "[[rule]]\npath = \"/{x}\"\nclass = \"ide-only\"\nwhy = \"x\"\n\
                    [[rule]]\npath = \"/\"\nclass = \"ide-only\"\nwhy = \"x\"\n";
        let mut rng = SmallRng::seed_from_u64(5);
        for text in [github.as_str(), &synthetic, tiny, ""] {
            let m = Manifest::from_sources(&src(text)).unwrap();
            let regexes: Vec<String> = m
                .patterns
                .iter()
                .map(|p| super::regex_for(&m.rules[p.rule as usize]))
                .collect();
            let dense = super::build_dense(&regexes).unwrap();
            let anchored = start::Config::new().anchored(Anchored::Yes);
            let start = dense.start_state(&anchored).unwrap();
            let (packed, starts) = super::pack(&dense, &[start]).unwrap();
            let expected = |mut s: StateID, input: &[u8]| {
                for &b in input {
                    s = dense.next_state(s, b);
                }
                let s = dense.next_eoi_state(s);
                if !dense.is_match_state(s) {
                    return Vec::new();
                }
                let mut pids: Vec<u32> = (0..dense.match_len(s))
                    .map(|i| dense.match_pattern(s, i).as_u32())
                    .collect();
                pids.sort_unstable();
                pids
            };
            let mut matched = 0;
            for _ in 0..1000 {
                // A random walk that mostly stays alive, with an occasional random byte.
                let mut input = Vec::new();
                let mut s = start;
                while !dense.is_dead_state(s) && input.len() < 120 {
                    let can_end = dense.is_match_state(dense.next_eoi_state(s));
                    if rng.gen_ratio(1, if can_end { 3 } else { 100 }) {
                        break;
                    }
                    // Uniform over live byte classes, so `/` ends a parameter soon.
                    let live: Vec<u8> = (0..=255u8)
                        .filter(|&b| !dense.is_dead_state(dense.next_state(s, b)))
                        .collect();
                    let classes = dense.byte_classes();
                    let mut reps = live.clone();
                    reps.dedup_by_key(|b| classes.get(*b));
                    let b = if live.is_empty() || rng.gen_ratio(1, 30) {
                        rng.gen()
                    } else {
                        let class = classes.get(reps[rng.gen_range(0..reps.len())]);
                        let members: Vec<u8> = live
                            .iter()
                            .copied()
                            .filter(|&b| classes.get(b) == class)
                            .collect();
                        members[rng.gen_range(0..members.len())]
                    };
                    input.push(b);
                    s = dense.next_state(s, b);
                }
                for end in 0..=input.len() {
                    let input = &input[..end];
                    let want = expected(start, input);
                    matched += !want.is_empty() as usize;
                    let (a, rest) = input.split_at(rng.gen_range(0..=input.len()));
                    let (b, c) = rest.split_at(rng.gen_range(0..=rest.len()));
                    for parts in [&[input][..], &[a, b, c][..], &[&[][..], input, &[]][..]] {
                        let got = match packed.matches(packed.walk(starts[0], parts)) {
                            super::super::packed::Matches::None => Vec::new(),
                            super::super::packed::Matches::One(p) => vec![p],
                            super::super::packed::Matches::Many(p) => p.to_vec(),
                        };
                        assert_eq!(
                            got,
                            want,
                            "{:?} as {parts:?}",
                            String::from_utf8_lossy(input)
                        );
                    }
                }
            }
            assert!(text.is_empty() || matched > 100, "{matched}");
        }
    }

    #[test]
    fn common_method_indexes_common_methods() {
        for (i, m) in super::COMMON_METHODS.iter().enumerate() {
            assert_eq!(super::common_method(m), Some(i));
        }
        assert_eq!(super::common_method("get"), None);
        assert_eq!(super::common_method("PROPFIND"), None);
    }

    #[test]
    fn digest_ignores_the_directory() {
        let a = Manifest::from_sources(&[("x/r.toml".into(), String::new())]).unwrap();
        let b = Manifest::from_sources(&[("/etc/y/r.toml".into(), String::new())]).unwrap();
        let c = Manifest::from_sources(&[("/etc/y/s.toml".into(), String::new())]).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest().len(), 64);
    }
}
