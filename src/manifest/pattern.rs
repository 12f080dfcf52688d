//! Path-pattern syntax: `/literal/{param}/{*rest}` parsed into [`Segment`]s.
//!
//! `{name}` matches exactly one non-empty segment, `{*name}` one or more trailing
//! segments (so it must be last), anything else is a literal segment. A trailing
//! slash in the pattern is ignored, as it is in request paths.

use std::fmt;

/// One `/`-separated piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Segment {
    /// Specificity rank within one position: literal beats param beats rest.
    pub fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param(_) => 1,
            Segment::Rest(_) => 2,
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Literal(s) => f.write_str(s),
            Segment::Param(s) => write!(f, "{{{s}}}"),
            Segment::Rest(s) => write!(f, "{{*{s}}}"),
        }
    }
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    Empty,
    NotAbsolute,
    EmptySegment,
    UnbalancedBraces(String),
    MixedSegment(String),
    EmptyParamName,
    InvalidParamName(String),
    DuplicateParam(String),
    RestNotLast(String),
    InvalidByte(char),
    DotSegment,
    NotCanonical { written: String, canonical: String },
    InvalidLiteral { written: String, reason: String },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Empty => f.write_str("empty pattern; expected a path starting with '/'"),
            PatternError::NotAbsolute => f.write_str("pattern must start with '/'"),
            PatternError::EmptySegment => {
                f.write_str("empty segment ('//') in pattern; paths are matched after merging slashes")
            }
            PatternError::UnbalancedBraces(s) => write!(f, "unbalanced braces in segment '{s}'"),
            PatternError::MixedSegment(s) => write!(
                f,
                "segment '{s}' mixes literal text and a parameter; a parameter must be a whole segment"
            ),
            PatternError::EmptyParamName => f.write_str("empty parameter name '{}'"),
            PatternError::InvalidParamName(s) => write!(
                f,
                "invalid parameter name '{s}'; expected letters, digits, '_' or '-'"
            ),
            PatternError::DuplicateParam(s) => write!(f, "duplicate parameter name '{s}'"),
            PatternError::RestNotLast(s) => {
                write!(f, "catch-all '{{*{s}}}' must be the last segment")
            }
            PatternError::NotCanonical { written, canonical } => write!(
                f,
                "literal segment '{written}' is not in normalized form; request paths carry it as '{canonical}'"
            ),
            PatternError::InvalidLiteral { written, reason } => {
                write!(f, "literal segment '{written}' can never match: {reason}")
            }
            PatternError::DotSegment => f.write_str(
                "'.' and '..' segments never reach the matcher: paths are normalized first",
            ),
            PatternError::InvalidByte(c) => write!(
                f,
                "character {c:?} cannot appear in a normalized path; write the path as requests carry it after normalization"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// Parse a pattern into segments. `/` alone gives no segments.
pub fn parse(pattern: &str) -> Result<Vec<Segment>, PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    let body = pattern.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
    if pattern.contains("//") {
        return Err(PatternError::EmptySegment);
    }
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut out: Vec<Segment> = Vec::new();
    if body.is_empty() {
        return Ok(out);
    }
    for raw in body.split('/') {
        if raw.is_empty() {
            return Err(PatternError::EmptySegment);
        }
        if let Some(Segment::Rest(name)) = out.last() {
            return Err(PatternError::RestNotLast(name.clone()));
        }
        let seg = parse_segment(raw)?;
        if let Segment::Param(name) | Segment::Rest(name) = &seg {
            let dup = out
                .iter()
                .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name));
            if dup {
                return Err(PatternError::DuplicateParam(name.clone()));
            }
        }
        out.push(seg);
    }
    Ok(out)
}

fn parse_segment(raw: &str) -> Result<Segment, PatternError> {
    let opens = raw.matches('{').count();
    let closes = raw.matches('}').count();
    if opens == 0 && closes == 0 {
        if let Some(c) = raw
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || matches!(c, ' ' | '?' | '#' | '\\'))
        {
            return Err(PatternError::InvalidByte(c));
        }
        if raw == "." || raw == ".." {
            return Err(PatternError::DotSegment);
        }
        // A literal must be written as a normalized request path carries it, or it
        // could never match (`%7E` is `~` after normalization, `%c3` is `%C3`).
        let single = format!("/{raw}");
        return match crate::path::normalize(&single) {
            Ok(canonical) if canonical == single => Ok(Segment::Literal(raw.to_string())),
            Ok(canonical) => Err(PatternError::NotCanonical {
                written: raw.to_string(),
                canonical: canonical[1..].to_string(),
            }),
            Err(e) => Err(PatternError::InvalidLiteral {
                written: raw.to_string(),
                reason: e.to_string(),
            }),
        };
    }
    if opens != 1 || closes != 1 {
        return Err(PatternError::UnbalancedBraces(raw.to_string()));
    }
    let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        let open = raw.find('{').unwrap_or(0);
        let close = raw.find('}').unwrap_or(0);
        return Err(if close < open {
            PatternError::UnbalancedBraces(raw.to_string())
        } else {
            PatternError::MixedSegment(raw.to_string())
        });
    };
    let (rest, name) = match inner.strip_prefix('*') {
        Some(n) => (true, n),
        None => (false, inner),
    };
    if name.is_empty() {
        return Err(PatternError::EmptyParamName);
    }
    if !name.bytes().all(is_name_byte) {
        return Err(PatternError::InvalidParamName(name.to_string()));
    }
    Ok(if rest {
        Segment::Rest(name.to_string())
    } else {
        Segment::Param(name.to_string())
    })
}

/// Does the pattern match a path given as its non-empty segments? A literal equals its
/// segment, `{param}` takes any one segment, `{*rest}` one or more.
pub fn matches(pattern: &[Segment], path: &[&str]) -> bool {
    let mut i = 0;
    for seg in pattern {
        match seg {
            Segment::Literal(l) => {
                if path.get(i) != Some(&l.as_str()) {
                    return false;
                }
            }
            Segment::Param(_) => {
                if i >= path.len() {
                    return false;
                }
            }
            Segment::Rest(_) => return i < path.len(),
        }
        i += 1;
    }
    i == path.len()
}

/// May this byte appear in a parameter name (ASCII letters and digits, `_`, `-`)?
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Render segments back to the canonical pattern text.
pub fn render(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "/".to_string();
    }
    let mut s = String::new();
    for seg in segments {
        s.push('/');
        s.push_str(&seg.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.into())
    }

    #[test]
    fn parses_all_segment_kinds() {
        assert_eq!(
            parse("/api/{ws}/files/{*path}").unwrap(),
            vec![
                lit("api"),
                Segment::Param("ws".into()),
                lit("files"),
                Segment::Rest("path".into())
            ]
        );
        assert_eq!(parse("/").unwrap(), vec![]);
        assert_eq!(parse("/a/").unwrap(), vec![lit("a")]);
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert_eq!(parse(""), Err(PatternError::Empty));
        assert_eq!(parse("api"), Err(PatternError::NotAbsolute));
        assert_eq!(parse("/a//b"), Err(PatternError::EmptySegment));
        assert_eq!(parse("//"), Err(PatternError::EmptySegment));
        assert_eq!(parse("/a//"), Err(PatternError::EmptySegment));
        assert!(matches!(
            parse("/{a"),
            Err(PatternError::UnbalancedBraces(_))
        ));
        assert!(matches!(
            parse("/a}"),
            Err(PatternError::UnbalancedBraces(_))
        ));
        assert!(matches!(
            parse("/}a{"),
            Err(PatternError::UnbalancedBraces(_))
        ));
        assert!(matches!(parse("/x{a}"), Err(PatternError::MixedSegment(_))));
        assert_eq!(parse("/{}"), Err(PatternError::EmptyParamName));
        assert_eq!(parse("/{*}"), Err(PatternError::EmptyParamName));
        assert!(matches!(
            parse("/{*a}/b"),
            Err(PatternError::RestNotLast(_))
        ));
        assert!(matches!(
            parse("/{a}/{a}"),
            Err(PatternError::DuplicateParam(_))
        ));
        assert!(matches!(
            parse("/{a}/{*a}"),
            Err(PatternError::DuplicateParam(_))
        ));
        assert!(matches!(
            parse("/{a b}"),
            Err(PatternError::InvalidParamName(_))
        ));
        assert!(matches!(parse("/a?b"), Err(PatternError::InvalidByte('?'))));
        assert!(matches!(
            parse("/caf%c3%a9"),
            Err(PatternError::NotCanonical { .. })
        ));
        assert!(matches!(
            parse("/%7Euser"),
            Err(PatternError::NotCanonical { .. })
        ));
        assert!(matches!(
            parse("/a%2Fb"),
            Err(PatternError::InvalidLiteral { .. })
        ));
        assert!(parse("/caf%C3%A9").is_ok());
    }

    #[test]
    fn matching_segments() {
        let m = |p: &str, path: &[&str]| matches(&parse(p).unwrap(), path);
        assert!(m("/", &[]));
        assert!(!m("/", &["a"]));
        assert!(m("/a/{x}", &["a", "b"]));
        assert!(!m("/a/{x}", &["a"]));
        assert!(!m("/a/{x}", &["b", "b"]));
        assert!(!m("/a/{x}", &["a", "b", "c"]));
        assert!(m("/a/{*x}", &["a", "b", "c"]));
        assert!(!m("/a/{*x}", &["a"]));
    }

    #[test]
    fn render_round_trips() {
        for p in ["/", "/a", "/a/{b}/{*c}"] {
            assert_eq!(render(&parse(p).unwrap()), p);
        }
    }
}
