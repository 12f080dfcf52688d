//! Reading manifest files: a directory of TOML files, in file-name order, into
//! validated [`Rule`]s that remember their `file:line`. Everything that can be checked
//! on one rule alone is checked here; checks across rules live in [`super::compile`].

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::classify::trim_trailing_slash;
use super::pattern::{self, Segment};
use super::{
    first_file, is_header_name, is_token, Alias, Class, Condition, Diagnostic, LoadError, Methods,
    Rule, Severity, When, Writes,
};

/// The manifest as read from its files, before compilation.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub default_class: Class,
    pub aliases: Vec<Alias>,
    pub rules: Vec<Rule>,
    /// `(display name, text)` of every file, in load order (the digest covers them).
    pub sources: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    manifest: Option<RawManifest>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    default_class: Option<Spanned<String>>,
    #[serde(default)]
    aliases: Vec<Spanned<RawAlias>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlias {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    path: Option<Spanned<String>>,
    class: Option<Spanned<String>>,
    why: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    degrade: Option<Spanned<bool>>,
    writes: Option<Spanned<String>>,
    read_only_safe: Option<bool>,
    when: Option<Spanned<RawWhen>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default)]
    query: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    header: BTreeMap<String, Spanned<String>>,
}

/// Read every `*.toml` file of `dir` in file-name order.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let shown = dir.display().to_string();
    let fail = |message: String| LoadError::from(Diagnostic::error(shown.clone(), 0, message));
    let entries =
        fs::read_dir(dir).map_err(|e| fail(format!("cannot read manifest directory: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fail(format!("cannot read manifest directory: {e}")))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") && path.is_file() {
            names.push(path);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(fail("no *.toml manifest files in this directory".into()));
    }
    let mut out = Vec::with_capacity(names.len());
    for path in names {
        let name = path.display().to_string();
        let text = fs::read_to_string(&path)
            .map_err(|e| Diagnostic::error(name.clone(), 0, format!("cannot read file: {e}")))?;
        out.push((name, text));
    }
    Ok(out)
}

/// Byte offsets where each line starts, to turn spans into 1-based line numbers.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Lines(starts)
    }

    fn line_of(&self, offset: usize) -> u32 {
        self.0.partition_point(|&start| start <= offset) as u32
    }
}

struct FileCtx<'a> {
    name: &'a str,
    lines: Lines,
    diags: &'a mut Vec<Diagnostic>,
}

impl FileCtx<'_> {
    fn line_of(&self, offset: usize) -> u32 {
        self.lines.line_of(offset)
    }

    fn error(&mut self, offset: usize, message: String) {
        self.diags
            .push(Diagnostic::error(self.name, self.line_of(offset), message));
    }
}

/// Parse and validate every file; collect all errors rather than stopping at the first.
pub fn parse_sources(sources: &[(String, String)]) -> Result<ParsedManifest, LoadError> {
    let mut diags = Vec::new();
    let mut default_class: Option<(Class, String)> = None;
    let mut aliases = Vec::new();
    let mut rules = Vec::new();

    for (name, text) in sources {
        let mut cx = FileCtx {
            name,
            lines: Lines::new(text),
            diags: &mut diags,
        };
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let mut message = e.message().trim().to_string();
                if message.is_empty() {
                    // The TOML parser reports some lexical errors without a message.
                    message = match text.get(offset..).and_then(|t| t.chars().next()) {
                        Some(c) => format!("invalid TOML: unexpected character {c:?}"),
                        None => "invalid TOML: unexpected end of file".to_string(),
                    };
                }
                cx.error(offset, message);
                continue;
            }
        };
        if let Some(m) = raw.manifest {
            if let Some(dc) = m.default_class {
                match Class::parse(dc.get_ref()) {
                    Some(class) => {
                        let here = format!("{name}:{}", cx.line_of(dc.span().start));
                        match &default_class {
                            Some((prev, at)) if *prev != class => cx.error(
                                dc.span().start,
                                format!(
                                    "key 'default_class': \"{}\" contradicts \"{}\" set at {at}",
                                    class, prev
                                ),
                            ),
                            Some(_) => {}
                            None => default_class = Some((class, here)),
                        }
                    }
                    None => cx.error(
                        dc.span().start,
                        format!(
                            "key 'default_class': expected \"ide-only\" or \"fleet-ok\", found {:?}",
                            dc.get_ref()
                        ),
                    ),
                }
            }
            for a in m.aliases {
                let offset = a.span().start;
                let a = a.into_inner();
                match validate_alias(&a.from, &a.to) {
                    Ok(()) => aliases.push(Alias {
                        from: trim_trailing_slash(&a.from).to_string(),
                        to: trim_trailing_slash(&a.to).to_string(),
                    }),
                    Err(msg) => cx.error(offset, format!("key 'aliases': {msg}")),
                }
            }
        }
        for spanned in raw.rule {
            let offset = spanned.span().start;
            if let Some(rule) = validate_rule(&mut cx, offset, spanned.into_inner()) {
                rules.push(rule);
            }
        }
    }

    // Two aliases with the same `from` are ambiguous.
    for (i, a) in aliases.iter().enumerate() {
        if aliases[..i].iter().any(|b| b.from == a.from) {
            diags.push(Diagnostic::error(
                first_file(sources),
                0,
                format!("alias from \"{}\" is defined twice", a.from),
            ));
        }
    }

    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(LoadError { diagnostics: diags });
    }
    // The longest matching `from` wins, whatever the file order: sort longest first.
    aliases.sort_by(|a, b| {
        b.from
            .len()
            .cmp(&a.from.len())
            .then_with(|| a.from.cmp(&b.from))
    });
    Ok(ParsedManifest {
        default_class: default_class.map(|d| d.0).unwrap_or(Class::FleetOk),
        aliases,
        rules,
        sources: sources.to_vec(),
    })
}

fn validate_alias(from: &str, to: &str) -> Result<(), String> {
    for (key, p) in [("from", from), ("to", to)] {
        let segs = pattern::parse(p).map_err(|e| format!("'{key}' = {p:?}: {e}"))?;
        if segs.iter().any(|s| !matches!(s, Segment::Literal(_))) {
            return Err(format!(
                "'{key}' = {p:?}: an alias is a literal path prefix, without parameters"
            ));
        }
    }
    if trim_trailing_slash(from) == "/" {
        return Err("'from' = \"/\" would rewrite every path".into());
    }
    Ok(())
}

/// Is `m` an HTTP method token (RFC 9110 `token`), written in upper case?
fn valid_method(m: &str) -> bool {
    is_token(m) && !m.bytes().any(|b| b.is_ascii_lowercase())
}

fn validate_rule(cx: &mut FileCtx<'_>, offset: usize, raw: RawRule) -> Option<Rule> {
    let errors_before = cx.diags.len();
    let line = cx.line_of(offset);

    let methods = match raw.methods {
        None => Methods::Any,
        Some(list) => {
            let at = list.span().start;
            let list = list.into_inner();
            if list.is_empty() {
                cx.error(
                    at,
                    "key 'methods': empty list; omit the key for all methods".into(),
                );
                Methods::Any
            } else if list.len() == 1 && list[0].get_ref() == "*" {
                Methods::Any
            } else {
                let mut names: Vec<String> = Vec::new();
                for m in list {
                    let text = m.get_ref();
                    if text == "*" {
                        cx.error(
                            m.span().start,
                            "key 'methods': \"*\" must be the only entry".into(),
                        );
                    } else if !valid_method(text) {
                        cx.error(
                            m.span().start,
                            format!("key 'methods': {text:?} is not an upper-case ASCII HTTP method name"),
                        );
                    } else if !names.iter().any(|n| n == text) {
                        names.push(text.clone());
                    }
                }
                Methods::List(names)
            }
        }
    };

    let (path, segments, path_ok) = match raw.path {
        None => {
            cx.error(
                offset,
                "rule has no 'path'; expected a pattern like \"/api/{id}\"".into(),
            );
            (String::new(), Vec::new(), false)
        }
        Some(p) => match pattern::parse(p.get_ref()) {
            Ok(segs) => (p.get_ref().clone(), segs, true),
            Err(e) => {
                cx.error(
                    p.span().start,
                    format!("key 'path' = {:?}: {e}", p.get_ref()),
                );
                (p.get_ref().clone(), Vec::new(), false)
            }
        },
    };

    let class = match raw.class {
        None => {
            cx.error(
                offset,
                "rule has no 'class'; expected \"ide-only\" or \"fleet-ok\"".into(),
            );
            Class::FleetOk
        }
        Some(c) => Class::parse(c.get_ref()).unwrap_or_else(|| {
            cx.error(
                c.span().start,
                format!(
                    "key 'class': expected \"ide-only\" or \"fleet-ok\", found {:?}",
                    c.get_ref()
                ),
            );
            Class::FleetOk
        }),
    };

    let why = match raw.why {
        Some(w) if !w.get_ref().trim().is_empty() => w.into_inner(),
        Some(w) => {
            cx.error(
                w.span().start,
                "key 'why' is empty; say why the route has this class".into(),
            );
            String::new()
        }
        None => {
            cx.error(
                offset,
                "rule has no 'why'; every rule must say why it has its class".into(),
            );
            String::new()
        }
    };

    let mut tenant_segment = None;
    let tenant = raw.tenant.map(|t| {
        tenant_segment = segments
            .iter()
            .position(|s| matches!(s, Segment::Param(n) if n == t.get_ref()));
        if tenant_segment.is_none() && path_ok {
            cx.error(
                t.span().start,
                format!(
                    "key 'tenant' = {:?} names no {{param}} of path {:?}",
                    t.get_ref(),
                    path
                ),
            );
        }
        t.into_inner()
    });

    let degrade = match raw.degrade {
        Some(d) if *d.get_ref() => {
            let reads_only =
                matches!(&methods, Methods::List(l) if l.iter().all(|m| m == "GET" || m == "HEAD"));
            if !reads_only {
                cx.error(
                    d.span().start,
                    "key 'degrade': only GET/HEAD rules may degrade; set methods = [\"GET\"]"
                        .into(),
                );
            }
            if class != Class::IdeOnly {
                cx.error(
                    d.span().start,
                    "key 'degrade': only ide-only rules can degrade".into(),
                );
            }
            true
        }
        _ => false,
    };

    let writes = raw.writes.and_then(|w| match w.get_ref().as_str() {
        "ide" => Some(Writes::Ide),
        "fleet" if class == Class::FleetOk => Some(Writes::Fleet),
        "fleet" => {
            cx.error(
                w.span().start,
                "key 'writes' = \"fleet\" on an ide-only rule; ide-only requests never reach the fleet".into(),
            );
            None
        }
        other => {
            cx.error(
                w.span().start,
                format!("key 'writes': expected \"ide\" or \"fleet\", found {other:?}"),
            );
            None
        }
    });

    let mut when = When::default();
    if let Some(w) = raw.when {
        let w = w.into_inner();
        for (name, value) in w.query {
            if name.is_empty() {
                cx.error(
                    value.span().start,
                    "key 'when.query': empty parameter name".into(),
                );
            }
            when.query.push((name, condition(value.into_inner())));
        }
        for (name, value) in w.header {
            if !is_header_name(&name) {
                cx.error(
                    value.span().start,
                    format!("key 'when.header': {name:?} is not a valid header name"),
                );
            }
            when.header
                .push((name.to_ascii_lowercase(), condition(value.into_inner())));
        }
    }

    if cx.diags.len() > errors_before {
        return None;
    }
    Some(Rule {
        file: cx.name.to_string(),
        line,
        methods,
        path,
        segments,
        class,
        why,
        tenant,
        tenant_segment,
        degrade,
        writes,
        read_only_safe: raw.read_only_safe.unwrap_or(false),
        when,
    })
}

fn condition(value: String) -> Condition {
    if value == "*" {
        Condition::Present
    } else {
        Condition::Equals(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Result<ParsedManifest, LoadError> {
        parse_sources(&[("routes/a.toml".into(), text.into())])
    }

    fn first_error(text: &str) -> String {
        parse_one(text).unwrap_err().diagnostics[0].to_string()
    }

    #[test]
    fn loads_rules_with_lines_and_defaults() {
        let m = parse_one(
            "[manifest]\ndefault_class = \"ide-only\"\naliases = [{ from = \"/v1\", to = \"/api\" }]\n\n[[rule]]\npath = \"/api/{ws}/files/{*p}\"\nclass = \"ide-only\"\nwhy = \"disk\"\ntenant = \"ws\"\n\n[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{ws}/runs\"\nclass = \"fleet-ok\"\nwhy = \"db\"\n[rule.when]\nquery = { branch = \"*\" }\nheader = { \"X-Preview\" = \"1\" }\n",
        )
        .unwrap();
        assert_eq!(m.default_class, Class::IdeOnly);
        assert_eq!(
            m.aliases,
            vec![Alias {
                from: "/v1".into(),
                to: "/api".into()
            }]
        );
        assert_eq!(m.rules.len(), 2);
        assert_eq!(m.rules[0].line, 5);
        assert_eq!(m.rules[0].methods, Methods::Any);
        assert_eq!(m.rules[0].tenant_segment, Some(1));
        assert_eq!(m.rules[1].line, 11);
        assert_eq!(
            m.rules[1].when.query,
            vec![("branch".into(), Condition::Present)]
        );
        assert_eq!(
            m.rules[1].when.header,
            vec![("x-preview".into(), Condition::Equals("1".into()))]
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e =
            first_error("[[rule]]\npath = \"/a\"\nclass = \"fleet-ok\"\nwhy = \"x\"\nbogus = 1\n");
        assert!(
            e.starts_with("routes/a.toml:5: error: unknown field `bogus`"),
            "{e}"
        );
        let e = first_error("[[rule]]\npath = \"/a\"\nclass = \"fleet-ok\"\n");
        assert_eq!(
            e,
            "routes/a.toml:1: error: rule has no 'why'; every rule must say why it has its class"
        );
        let e = first_error("\n[[rule]]\npath = \"/a/{x\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n");
        assert!(e.starts_with("routes/a.toml:3: error: key 'path'"), "{e}");
        let e = first_error(
            "[[rule]]\npath = \"/a/{x}\"\nclass = \"fleet-ok\"\nwhy = \"x\"\ntenant = \"y\"\n",
        );
        assert!(e.contains("key 'tenant' = \"y\" names no {param}"), "{e}");
        let e = first_error(
            "[[rule]]\nmethods = [\"gét\"]\npath = \"/a\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n",
        );
        assert!(e.contains("not an upper-case ASCII HTTP method"), "{e}");
        let e = first_error("[[rule]]\npath = \"/a\"\nclass = \"both\"\nwhy = \"x\"\n");
        assert!(e.starts_with("routes/a.toml:3: error: key 'class'"), "{e}");
        let e = first_error(
            "[[rule]]\npath = \"/a\"\nclass = \"ide-only\"\nwhy = \"x\"\ndegrade = true\n",
        );
        assert!(e.contains("only GET/HEAD rules may degrade"), "{e}");
        let e = first_error("[manifest]\naliases = [{ from = \"/{x}\", to = \"/api\" }]\n");
        assert!(e.contains("literal path prefix"), "{e}");
        let e = first_error(
            "[[rule]]\npath = \"/a\"\nclass = \"ide-only\"\nwhy = \"x\"\nwrites = \"fleet\"\n",
        );
        assert!(e.contains("writes"), "{e}");
    }

    #[test]
    fn collects_errors_from_every_file() {
        let e = parse_sources(&[
            (
                "a.toml".into(),
                "[[rule]]\npath = \"a\"\nclass = \"fleet-ok\"\nwhy = \"x\"\n".into(),
            ),
            ("b.toml".into(), "not toml at all = = =".into()),
        ])
        .unwrap_err();
        assert_eq!(e.diagnostics.len(), 2);
        assert_eq!(e.diagnostics[0].file, "a.toml");
        assert_eq!(e.diagnostics[1].file, "b.toml");
    }

    #[test]
    fn toml_errors_without_a_message_still_say_something() {
        let e = first_error("a = 1\n#x\u{5}y\n");
        assert_eq!(
            e,
            "routes/a.toml:2: error: invalid TOML: unexpected character '\\u{5}'"
        );
    }

    #[test]
    fn contradicting_default_class_is_an_error() {
        let e = parse_sources(&[
            (
                "a.toml".into(),
                "[manifest]\ndefault_class = \"fleet-ok\"\n".into(),
            ),
            (
                "b.toml".into(),
                "[manifest]\ndefault_class = \"ide-only\"\n".into(),
            ),
        ])
        .unwrap_err();
        assert!(e.diagnostics[0].to_string().contains("contradicts"), "{e}");
    }
}
