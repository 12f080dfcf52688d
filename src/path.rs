//! Request-path normalization: the security boundary between the proxy and its upstreams.
//!
//! The proxy classifies a request by its path and then forwards it; if the proxy and the
//! upstream disagree about what a path means (`/api/ws/x/../files`, `/api/ws//files`,
//! `%2e%2e`, `%2F`), classification can be bypassed. So every path is brought into one
//! canonical form, and that same form is both classified and sent upstream
//! Ambiguous input is rejected (the caller answers `400`).
//!
//! The canonical form:
//!
//! * starts with `/`;
//! * percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every
//!   other escape is kept with upper-case hex (`%c3%a9` becomes `%C3%A9`);
//! * no `.` or `..` segments (they are resolved, also when they only appear after
//!   decoding, e.g. `%2e%2E`); `..` above the root is an error;
//! * no empty segments (`//` is merged), except that a trailing slash is kept when the
//!   input ended in one (or in a `.`/`..` segment): `/a/` stays `/a/`, `/a/b/..` is `/a/`.
//!
//! Rejected: a `%` not followed by two hex digits; raw or escaped control bytes
//! (0x00-0x1F, 0x7F); escaped `/` and `\` (unless [`NormalizeOptions::allow_encoded_slash`]);
//! raw `\`, space, `#`, `?` and non-ASCII bytes; escapes of non-ASCII bytes that are not
//! valid UTF-8 (overlong forms such as `%C0%AE` for `.` or `%C0%AF` for `/`, which lenient
//! decoders turn into a dot segment or a separator; surrogates; truncated sequences); a segment whose part before its first
//! `;` (raw, or `%3B`) is `.` or `..` once decoded (`..;x`, `.;`, `%2e%2e;jsessionid=1`),
//! because Java servlet containers strip such path parameters and read a dot segment
//! there. Other printable ASCII passes as is.
//! When the input has several problems, the left-most one is reported.
//!
//! Normalizing a canonical path returns it borrowed, without allocating: clean paths
//! (the common case) cost one scan. The query string is not touched here; see
//! [`split_target`].

use std::borrow::Cow;
use std::fmt;

/// Why a path was rejected. `Display` is a short plain-text reason, usable as a `400` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidEscape,
    /// `%2F` (and encoded slashes are not allowed).
    EncodedSlash,
    /// `%5C` (and encoded slashes are not allowed).
    EncodedBackslash,
    /// A raw or percent-encoded byte in 0x00-0x1F or 0x7F.
    ControlByte,
    /// A raw `\`, space, `#`, `?` or non-ASCII byte.
    InvalidByte,
    /// A `..` segment that climbs above `/`.
    AboveRoot,
    /// A segment whose part before `;` is `.` or `..` (`..;x`, `.;`, `%2e%2e;`): servlet
    /// containers read it as a dot segment, so it could reach another route.
    DotSegmentParameters,
    /// Escaped non-ASCII bytes that are not UTF-8 (`%C0%AE`, an overlong `.`).
    InvalidUtf8,
}

impl PathError {
    /// The short reason, as used in `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path must start with '/'",
            PathError::InvalidEscape => "invalid percent-escape",
            PathError::EncodedSlash => "encoded slash (%2F) in path",
            PathError::EncodedBackslash => "encoded backslash (%5C) in path",
            PathError::ControlByte => "control byte in path",
            PathError::InvalidByte => "invalid byte in path",
            PathError::AboveRoot => "path goes above the root",
            PathError::DotSegmentParameters => "dot segment with ;parameters in path",
            PathError::InvalidUtf8 => "percent-escapes in path that are not UTF-8",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// Knobs for [`normalize_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalizeOptions {
    /// Keep `%2F` and `%5C` (as upper-case escapes) instead of rejecting them. Only for
    /// upstreams that treat an encoded slash as data inside a segment.
    pub allow_encoded_slash: bool,
}

/// Normalize a request path with the default options (encoded slashes rejected).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_with(path, NormalizeOptions::default())
}

/// Normalize a request path (the part before `?`) into the canonical form.
///
/// Returns `Cow::Borrowed(path)` exactly when `path` is already canonical.
pub fn normalize_with(path: &str, opts: NormalizeOptions) -> Result<Cow<'_, str>, PathError> {
    if is_canonical(path.as_bytes(), opts)? {
        Ok(Cow::Borrowed(path))
    } else {
        rebuild(path.as_bytes(), opts).map(Cow::Owned)
    }
}

/// Split an origin-form request target into the path and the query (without `?`).
///
/// `"/a?b=1"` gives `("/a", Some("b=1"))`, `"/a"` gives `("/a", None)` and `"/a?"` gives
/// `("/a", Some(""))`.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// What one percent-escape turns into.
enum Escape {
    /// An unreserved character: written decoded.
    Decoded(u8),
    /// Kept as an escape; `upper` is the two hex digits upper-cased, `canonical` tells
    /// whether they already were.
    Kept { upper: [u8; 2], canonical: bool },
}

/// Interpret the escape starting at `bytes[i] == b'%'`; it spans three bytes.
fn escape(bytes: &[u8], i: usize, opts: NormalizeOptions) -> Result<Escape, PathError> {
    let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
        (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => (hi, lo),
        _ => return Err(PathError::InvalidEscape),
    };
    let value = (hex_value(hi) << 4) | hex_value(lo);
    if is_control(value) {
        return Err(PathError::ControlByte);
    }
    if !opts.allow_encoded_slash {
        match value {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::EncodedBackslash),
            _ => {}
        }
    }
    if is_unreserved(value) {
        return Ok(Escape::Decoded(value));
    }
    let upper = [hi.to_ascii_uppercase(), lo.to_ascii_uppercase()];
    Ok(Escape::Kept {
        upper,
        canonical: upper == [hi, lo],
    })
}

/// How many bytes the escape at `bytes[i] == b'%'` spans together with the escapes that
/// must follow it: 3 for an escape of an ASCII byte; for a non-ASCII lead byte, its whole
/// UTF-8 sequence, which must be valid (no overlong form, no surrogate, nothing above
/// U+10FFFF, no missing continuation).
fn escape_span(bytes: &[u8], i: usize) -> Result<usize, PathError> {
    let value_at = |j: usize| -> Option<u8> {
        match (bytes.get(j), bytes.get(j + 1), bytes.get(j + 2)) {
            (Some(b'%'), Some(&hi), Some(&lo))
                if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() =>
            {
                Some((hex_value(hi) << 4) | hex_value(lo))
            }
            _ => None,
        }
    };
    let lead = value_at(i).ok_or(PathError::InvalidEscape)?;
    let len = match lead {
        0x00..=0x7f => return Ok(3),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Err(PathError::InvalidUtf8),
    };
    let mut seq = [lead, 0, 0, 0];
    for (k, slot) in seq.iter_mut().enumerate().take(len).skip(1) {
        *slot = value_at(i + 3 * k).ok_or(PathError::InvalidUtf8)?;
    }
    std::str::from_utf8(&seq[..len]).map_err(|_| PathError::InvalidUtf8)?;
    Ok(3 * len)
}

/// Check a raw byte other than `%` and `/`.
fn check_raw(b: u8) -> Result<(), PathError> {
    if is_control(b) {
        Err(PathError::ControlByte)
    } else if b >= 0x80 || matches!(b, b'\\' | b' ' | b'#' | b'?') {
        Err(PathError::InvalidByte)
    } else {
        Ok(())
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        b'a'..=b'f' => h - b'a' + 10,
        _ => h - b'A' + 10,
    }
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// Is `seg` (decoded, escapes upper-case) a dot segment carrying path parameters: its
/// part before the first `;` or `%3B` is `.` or `..`?
fn is_dot_segment_with_parameters(seg: &[u8]) -> bool {
    let semicolon = seg.iter().position(|&b| b == b';');
    let escaped = seg
        .windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'3' && w[2].eq_ignore_ascii_case(&b'B'));
    let end = match (semicolon, escaped) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return false,
    };
    is_dot_segment(&seg[..end])
}

/// One scan, no allocation: `Ok(true)` if `bytes` is already canonical, `Ok(false)` if it
/// is valid so far but needs rewriting (the rebuild then reports any later error), or the
/// first error met before that point.
fn is_canonical(bytes: &[u8], opts: NormalizeOptions) -> Result<bool, PathError> {
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut seg_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => {
                let seg = &bytes[seg_start..i];
                if is_dot_segment_with_parameters(seg) {
                    return Err(PathError::DotSegmentParameters);
                }
                if seg.is_empty() || is_dot_segment(seg) {
                    return Ok(false);
                }
                seg_start = i + 1;
                i += 1;
            }
            b'%' => {
                let span = escape_span(bytes, i)?;
                for at in (i..i + span).step_by(3) {
                    match escape(bytes, at, opts)? {
                        Escape::Decoded(_)
                        | Escape::Kept {
                            canonical: false, ..
                        } => return Ok(false),
                        Escape::Kept {
                            canonical: true, ..
                        } => {}
                    }
                }
                i += span;
            }
            b => {
                check_raw(b)?;
                i += 1;
            }
        }
    }
    // The last segment may be empty (a trailing slash, or the root itself).
    let last = &bytes[seg_start..];
    if is_dot_segment_with_parameters(last) {
        return Err(PathError::DotSegmentParameters);
    }
    Ok(!is_dot_segment(last))
}

/// Build the canonical form of a path that is not canonical yet (or report why it has none).
fn rebuild(bytes: &[u8], opts: NormalizeOptions) -> Result<String, PathError> {
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Invariant between segments: `out` is `/` followed by finished segments, each
    // followed by `/`. Only ASCII is ever pushed.
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    out.push(b'/');
    // Whether the last input segment asks for a trailing slash (empty, `.` or `..`).
    let mut ends_as_directory = true;
    for raw in bytes[1..].split(|&b| b == b'/') {
        let seg_start = out.len();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' {
                let span = escape_span(raw, i)?;
                for at in (i..i + span).step_by(3) {
                    match escape(raw, at, opts)? {
                        Escape::Decoded(b) => out.push(b),
                        Escape::Kept { upper, .. } => {
                            out.push(b'%');
                            out.extend_from_slice(&upper);
                        }
                    }
                }
                i += span;
            } else {
                check_raw(raw[i])?;
                out.push(raw[i]);
                i += 1;
            }
        }
        let seg = &out[seg_start..];
        if is_dot_segment_with_parameters(seg) {
            return Err(PathError::DotSegmentParameters);
        }
        ends_as_directory = seg.is_empty() || is_dot_segment(seg);
        if seg.is_empty() || seg == b"." {
            out.truncate(seg_start);
        } else if seg == b".." {
            out.truncate(seg_start);
            if out.len() == 1 {
                return Err(PathError::AboveRoot);
            }
            // Drop the previous segment: keep everything up to the `/` before it.
            let prev_slash = out[..out.len() - 1]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or(0);
            out.truncate(prev_slash + 1);
        } else {
            out.push(b'/');
        }
    }
    if !ends_as_directory && out.len() > 1 {
        out.pop();
    }
    // Every byte pushed is ASCII: raw bytes passed `check_raw` (< 0x80), decoded bytes are
    // unreserved characters, and escapes are `%` plus hex digits.
    Ok(String::from_utf8(out).expect("normalized path is ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: NormalizeOptions = NormalizeOptions {
        allow_encoded_slash: true,
    };

    /// `(input, Ok(expected) | Err(error))` for the default options.
    const CASES: &[(&str, Result<&str, PathError>)] = &[
        // Dot segments with servlet path parameters.
        (
            "/api/ws1/threads/..;/files",
            Err(PathError::DotSegmentParameters),
        ),
        ("/threads/.;/../files", Err(PathError::DotSegmentParameters)),
        ("/a/..;x", Err(PathError::DotSegmentParameters)),
        (
            "/a/%2e%2e;jsessionid=1/b",
            Err(PathError::DotSegmentParameters),
        ),
        ("/a/..%3Bx/b", Err(PathError::DotSegmentParameters)),
        ("/a/.%3b/b", Err(PathError::DotSegmentParameters)),
        ("/a/...;x", Ok("/a/...;x")),
        // Escaped non-ASCII must be UTF-8: overlong `.` and `/`, surrogates, truncation.
        ("/a/%C0%AE%C0%AE/b", Err(PathError::InvalidUtf8)),
        ("/a/x%c0%afy", Err(PathError::InvalidUtf8)),
        ("/a/%E0%80%AE", Err(PathError::InvalidUtf8)),
        ("/a/%ED%A0%80", Err(PathError::InvalidUtf8)),
        ("/a/%F5%80%80%80", Err(PathError::InvalidUtf8)),
        ("/a/%C3", Err(PathError::InvalidUtf8)),
        ("/a/%C3x", Err(PathError::InvalidUtf8)),
        ("/a/%A9", Err(PathError::InvalidUtf8)),
        ("/a/%c3%a9", Ok("/a/%C3%A9")),
        ("/a/%F0%9F%A6%80", Ok("/a/%F0%9F%A6%80")),
        ("/a/b;v=1/c", Ok("/a/b;v=1/c")),
        ("/a/;x", Ok("/a/;x")),
        // Already canonical.
        ("/", Ok("/")),
        ("/a", Ok("/a")),
        ("/a/", Ok("/a/")),
        ("/a/b/c", Ok("/a/b/c")),
        ("/a/...", Ok("/a/...")),
        ("/.a/a./..b", Ok("/.a/a./..b")),
        ("/a:b@c!$&'()*+,;=", Ok("/a:b@c!$&'()*+,;=")),
        ("/%C3%A9", Ok("/%C3%A9")),
        ("/%20%23%3F%25", Ok("/%20%23%3F%25")),
        // Not absolute.
        ("", Err(PathError::NotAbsolute)),
        ("a", Err(PathError::NotAbsolute)),
        ("a/b", Err(PathError::NotAbsolute)),
        ("*", Err(PathError::NotAbsolute)),
        ("http://h/a", Err(PathError::NotAbsolute)),
        ("%2F", Err(PathError::NotAbsolute)),
        // Unreserved escapes are decoded, the rest upper-cased.
        ("/%61%62c", Ok("/abc")),
        ("/%41%5a%30%39%2d%2E%5f%7E", Ok("/AZ09-._~")),
        ("/%c3%a9", Ok("/%C3%A9")),
        ("/%c3%A9/x", Ok("/%C3%A9/x")),
        ("/a%3fb", Ok("/a%3Fb")),
        ("/a%2a", Ok("/a%2A")),
        ("/%25", Ok("/%25")),
        ("/%2525", Ok("/%2525")),
        ("/%ff", Err(PathError::InvalidUtf8)),
        ("/%c3%A9", Ok("/%C3%A9")),
        // Invalid escapes.
        ("/%", Err(PathError::InvalidEscape)),
        ("/a%", Err(PathError::InvalidEscape)),
        ("/a%2", Err(PathError::InvalidEscape)),
        ("/%zz", Err(PathError::InvalidEscape)),
        ("/%g0", Err(PathError::InvalidEscape)),
        ("/%0g", Err(PathError::InvalidEscape)),
        ("/%%41", Err(PathError::InvalidEscape)),
        ("/%2/", Err(PathError::InvalidEscape)),
        ("/%+1", Err(PathError::InvalidEscape)),
        // Control bytes, raw and encoded.
        ("/a\0b", Err(PathError::ControlByte)),
        ("/%00", Err(PathError::ControlByte)),
        ("/a%0a", Err(PathError::ControlByte)),
        ("/a%0D%0A", Err(PathError::ControlByte)),
        ("/\t", Err(PathError::ControlByte)),
        ("/a\r\nb", Err(PathError::ControlByte)),
        ("/\x7f", Err(PathError::ControlByte)),
        ("/%7f", Err(PathError::ControlByte)),
        ("/%1F", Err(PathError::ControlByte)),
        // Encoded slash and backslash.
        ("/a%2Fb", Err(PathError::EncodedSlash)),
        ("/a%2fb", Err(PathError::EncodedSlash)),
        ("/a%5Cb", Err(PathError::EncodedBackslash)),
        ("/a%5cb", Err(PathError::EncodedBackslash)),
        ("/..%2F", Err(PathError::EncodedSlash)),
        // Invalid raw bytes.
        ("/a\\b", Err(PathError::InvalidByte)),
        ("/a b", Err(PathError::InvalidByte)),
        ("/a#b", Err(PathError::InvalidByte)),
        ("/a?b", Err(PathError::InvalidByte)),
        ("/é", Err(PathError::InvalidByte)),
        ("/\u{202e}", Err(PathError::InvalidByte)),
        ("\\a", Err(PathError::NotAbsolute)),
        // Dot segments.
        ("/.", Ok("/")),
        ("/./", Ok("/")),
        ("/a/.", Ok("/a/")),
        ("/a/./b", Ok("/a/b")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/../", Ok("/a/")),
        ("/a/b/../c", Ok("/a/c")),
        ("/a/..", Ok("/")),
        ("/a/../", Ok("/")),
        ("/a/b/../../c/", Ok("/c/")),
        ("/a/%2e%2E/b", Ok("/b")),
        ("/a/%2e", Ok("/a/")),
        ("/a/.%2e/b", Ok("/b")),
        ("/a/%2E./b", Ok("/b")),
        ("/a/%2e%2e%2e", Ok("/a/...")),
        ("/a/.b/..c", Ok("/a/.b/..c")),
        ("/..", Err(PathError::AboveRoot)),
        ("/../", Err(PathError::AboveRoot)),
        ("/../x", Err(PathError::AboveRoot)),
        ("/a/../../x", Err(PathError::AboveRoot)),
        ("/./../x", Err(PathError::AboveRoot)),
        ("/%2e%2e/x", Err(PathError::AboveRoot)),
        ("//../x", Err(PathError::AboveRoot)),
        // Repeated slashes.
        ("//", Ok("/")),
        ("///", Ok("/")),
        ("/a//b", Ok("/a/b")),
        ("//a", Ok("/a")),
        ("/a//", Ok("/a/")),
        ("/a///b//", Ok("/a/b/")),
        ("//a/.//../b", Ok("/b")),
        // The left-most problem is reported.
        ("/%zz/..%00", Err(PathError::InvalidEscape)),
        ("/../%zz", Err(PathError::AboveRoot)),
        ("/a/%zz/../../..", Err(PathError::InvalidEscape)),
        ("/x%2F/%00", Err(PathError::EncodedSlash)),
        // The route examples of the acceptance manifest.
        ("/api/p1/comments/../kernels/k1", Ok("/api/p1/kernels/k1")),
        ("/api/p1//kernels/k1", Ok("/api/p1/kernels/k1")),
        ("/api/p1/%6Bernels/k1", Ok("/api/p1/kernels/k1")),
        ("/api/p1/kernels%2Fk1", Err(PathError::EncodedSlash)),
        ("/api/p1/kernels/%qq", Err(PathError::InvalidEscape)),
        ("/../console", Err(PathError::AboveRoot)),
        ("/api/ws/x/../files", Ok("/api/ws/files")),
        ("/api/ws/x/%2e%2e/files", Ok("/api/ws/files")),
    ];

    #[test]
    fn table() {
        for &(input, want) in CASES {
            let got = normalize(input);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "normalize({input:?})");
            if let Ok(out) = got {
                assert_eq!(
                    matches!(out, Cow::Borrowed(_)),
                    out == input,
                    "borrowed exactly when unchanged: {input:?}"
                );
                assert!(
                    matches!(normalize(&out), Ok(Cow::Borrowed(_))),
                    "idempotent: {input:?}"
                );
            }
        }
    }

    #[test]
    fn allow_encoded_slash_keeps_them_upper_case() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/a%2Fb", Ok("/a%2Fb")),
            ("/a%2fb", Ok("/a%2Fb")),
            ("/a%5cb", Ok("/a%5Cb")),
            ("/a%2F..%2Fb", Ok("/a%2F..%2Fb")),
            ("/a%2F/../b", Ok("/b")),
            ("/%2F/", Ok("/%2F/")),
            ("/a/%2e%2e/%2f", Ok("/%2F")),
            ("/%2F%00", Err(PathError::ControlByte)),
            ("/../%2F", Err(PathError::AboveRoot)),
            ("/a%zz", Err(PathError::InvalidEscape)),
        ];
        for &(input, want) in cases {
            let got = normalize_with(input, ALLOW);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "{input:?}");
        }
        assert!(matches!(
            normalize_with("/a%2Fb", ALLOW),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in ["/", "/api/p1/kernels/k1", "/a/", "/%C3%A9/x", "/a/..b/.c/"] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(s)) if s == p),
                "{p}"
            );
        }
    }

    #[test]
    fn split_target_cases() {
        assert_eq!(split_target("/a?b=1"), ("/a", Some("b=1")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a?b?c"), ("/a", Some("b?c")));
        assert_eq!(split_target("?x"), ("", Some("x")));
        assert_eq!(split_target(""), ("", None));
    }

    #[test]
    fn display_is_short_plain_text() {
        use PathError::*;
        for e in [
            NotAbsolute,
            InvalidEscape,
            EncodedSlash,
            EncodedBackslash,
            ControlByte,
            InvalidByte,
            AboveRoot,
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && s.len() < 60 && s.is_ascii(), "{s}");
            assert!(!s.contains('\n'));
        }
        assert_eq!(InvalidEscape.to_string(), "invalid percent-escape");
    }
}
