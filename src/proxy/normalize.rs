//! The normalize step: the request target in its one canonical form (see [`crate::path`]),
//! used both to classify the request and as the request line sent upstream, so that the
//! proxy and the upstream cannot disagree about what a path means; and the authority in
//! one form, so that they cannot disagree about which host it is for ([`authority`]); and
//! the body's framing in one reading ([`framing`]).

use std::borrow::Cow;

use bytes::Bytes;
use http::uri::PathAndQuery;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Version};

use crate::path::NormalizeOptions;
use crate::proxy::error::ProxyError;

/// The canonical request target for the upstream: the normalized path plus the query,
/// unchanged. Reuses the client's bytes when the path was already canonical.
pub fn normalized_target(
    uri: &http::Uri,
    options: NormalizeOptions,
) -> Result<PathAndQuery, ProxyError> {
    let Some(pq) = uri.path_and_query() else {
        return Err(ProxyError::BadTarget);
    };
    if !pq.path().starts_with('/') {
        return Err(ProxyError::BadTarget);
    }
    match crate::path::normalize_with(pq.path(), options).map_err(ProxyError::BadPath)? {
        Cow::Borrowed(_) => Ok(pq.clone()),
        Cow::Owned(mut p) => {
            if let Some(q) = pq.query() {
                p.push('?');
                p.push_str(q);
            }
            PathAndQuery::from_maybe_shared(Bytes::from(p)).map_err(|_| ProxyError::BadTarget)
        }
    }
}

/// Make the request's authority one thing (RFC 9112 §3.2, §3.2.2; RFC 9113 §8.3.1):
///
/// * an absolute-form target (`GET http://host/path`): its authority replaces every `Host`;
/// * HTTP/1.1 otherwise: exactly one `Host`, a valid authority (`400` for none, two, or
///   `Host: a b`); HTTP/1.0: at most one, valid;
/// * HTTP/2: `host`, when sent next to `:authority`, must name the same authority.
///
/// On success the request carries at most one valid `Host`, the one the upstream gets.
pub fn authority(
    version: Version,
    uri: &http::Uri,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let first = hosts.next().cloned();
    let repeated = hosts.next().is_some();
    if version == Version::HTTP_2 {
        if repeated {
            return Err(ProxyError::BadAuthority("more than one host header"));
        }
        if let (Some(a), Some(h)) = (uri.authority(), &first) {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
                return Err(ProxyError::BadAuthority(":authority and host disagree"));
            }
        }
        return match first {
            Some(h) if !valid_authority(&h) => Err(ProxyError::BadAuthority("invalid host header")),
            _ => Ok(()),
        };
    }
    if let Some(a) = uri.authority() {
        // Absolute form: the target's authority wins over any Host (RFC 9112 §3.2.2).
        let v = HeaderValue::from_str(a.as_str())
            .map_err(|_| ProxyError::BadAuthority("invalid authority in the request target"))?;
        headers.insert(HOST, v);
        return Ok(());
    }
    if repeated {
        return Err(ProxyError::BadAuthority("more than one host header"));
    }
    match first {
        None if version == Version::HTTP_11 => Err(ProxyError::BadAuthority("missing host header")),
        None => Ok(()),
        Some(h) if valid_authority(&h) => Ok(()),
        Some(_) => Err(ProxyError::BadAuthority("invalid host header")),
    }
}

/// Refuse an HTTP/1 request whose body could be framed two ways (RFC 9112 §6.1, §6.3).
///
/// hyper already refuses a `Transfer-Encoding` whose final coding is not `chunked`,
/// conflicting `Content-Length` values and `Transfer-Encoding` in HTTP/1.0. What it
/// accepts and we refuse, as Envoy does by default: both `Transfer-Encoding` and
/// `Content-Length` (CL.TE / TE.CL: hyper would follow `Transfer-Encoding`, a lenient
/// backend behind another hop might follow the length), and any `Transfer-Encoding`
/// other than exactly one `chunked` (`chunked, chunked`, `gzip, chunked`: a coding we
/// would pass on undecoded). The connection is closed after the `400`.
pub fn framing(version: Version, headers: &HeaderMap) -> Result<(), ProxyError> {
    if version == Version::HTTP_2 {
        // h2 frames bodies itself; the h2 layer refuses connection-specific fields and a
        // content-length that disagrees with the DATA frames.
        return Ok(());
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(coding) = codings.next() else {
        return Ok(());
    };
    if headers.contains_key(CONTENT_LENGTH) {
        return Err(ProxyError::BadFraming(
            "both transfer-encoding and content-length",
        ));
    }
    let only_chunked = codings.next().is_none()
        && coding
            .to_str()
            .is_ok_and(|c| c.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"));
    if !only_chunked {
        return Err(ProxyError::BadFraming(
            "transfer-encoding other than a single chunked",
        ));
    }
    Ok(())
}

/// `host[:port]` as RFC 9110 §7.2 allows it: a non-empty authority without userinfo.
fn valid_authority(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    if b.is_empty() || b.contains(&b'@') {
        return false;
    }
    // The common `name[:port]` form is checked here without building an `Authority`
    // (which copies the bytes); anything else goes through http's own parser.
    let (host, port) = match b.iter().position(|&c| c == b':') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let plain_host = !host.is_empty()
        && host
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    let plain_port =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit));
    (plain_host && plain_port) || http::uri::Authority::try_from(b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        version: Version,
        target: &str,
        hosts: &[&str],
    ) -> Result<Option<String>, &'static str> {
        let uri: http::Uri = target.parse().unwrap();
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        match authority(version, &uri, &mut h) {
            Ok(()) => {
                assert!(h.get_all(HOST).iter().count() <= 1);
                Ok(h.get(HOST).map(|v| v.to_str().unwrap().to_string()))
            }
            Err(ProxyError::BadAuthority(why)) => Err(why),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn the_authority_is_one_thing() {
        use Version as V;
        assert_eq!(
            check(V::HTTP_11, "/a", &["app.example"]),
            Ok(Some("app.example".into()))
        );
        assert_eq!(
            check(V::HTTP_11, "/a", &["app.example:8080"]),
            Ok(Some("app.example:8080".into()))
        );
        assert_eq!(check(V::HTTP_11, "/a", &[]), Err("missing host header"));
        assert_eq!(
            check(V::HTTP_11, "/a", &["a", "b"]),
            Err("more than one host header")
        );
        assert_eq!(
            check(V::HTTP_11, "/a", &["a", "a"]),
            Err("more than one host header")
        );
        assert_eq!(
            check(V::HTTP_11, "/a", &["a b"]),
            Err("invalid host header")
        );
        assert_eq!(
            check(V::HTTP_11, "/a", &["user@evil"]),
            Err("invalid host header")
        );
        assert_eq!(check(V::HTTP_11, "/a", &[""]), Err("invalid host header"));
        assert_eq!(check(V::HTTP_10, "/a", &[]), Ok(None));
        // Absolute form: the target's authority replaces Host, whatever it said.
        assert_eq!(
            check(V::HTTP_11, "http://real.example/a", &["other", "more"]),
            Ok(Some("real.example".into()))
        );
        // HTTP/2: host must agree with :authority.
        assert_eq!(check(V::HTTP_2, "http://app.example/a", &[]), Ok(None));
        assert_eq!(
            check(V::HTTP_2, "http://app.example/a", &["APP.example"]),
            Ok(Some("APP.example".into()))
        );
        assert_eq!(
            check(V::HTTP_2, "http://app.example/a", &["evil"]),
            Err(":authority and host disagree")
        );
    }

    #[test]
    fn a_body_has_one_framing() {
        let h = |fields: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in fields {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let ok = |fields: &[(&str, &str)]| framing(Version::HTTP_11, &h(fields)).is_ok();
        assert!(ok(&[]));
        assert!(ok(&[("content-length", "5")]));
        assert!(ok(&[("transfer-encoding", "chunked")]));
        assert!(ok(&[("transfer-encoding", "Chunked ")]));
        assert!(!ok(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "5")
        ]));
        assert!(!ok(&[("transfer-encoding", "chunked, chunked")]));
        assert!(!ok(&[("transfer-encoding", "gzip, chunked")]));
        assert!(!ok(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ]));
        // HTTP/2 has no transfer codings; its own layer checks content-length.
        assert!(framing(Version::HTTP_2, &h(&[("content-length", "5")])).is_ok());
    }

    fn target(uri: &str, allow_encoded_slash: bool) -> Result<String, ProxyError> {
        let uri: http::Uri = uri.parse().unwrap();
        normalized_target(
            &uri,
            NormalizeOptions {
                allow_encoded_slash,
            },
        )
        .map(|pq| pq.to_string())
    }

    #[test]
    fn the_target_is_normalized_and_the_query_kept() {
        assert_eq!(
            target("/a/./b//c/../d?x=%2F&y", false).unwrap(),
            "/a/b/d?x=%2F&y"
        );
        assert_eq!(target("/a/%62", false).unwrap(), "/a/b");
    }

    #[test]
    fn encoded_slashes_are_refused_unless_allowed() {
        assert!(matches!(
            target("/a%2fb", false),
            Err(ProxyError::BadPath(_))
        ));
        assert_eq!(target("/a%2fb", true).unwrap(), "/a%2Fb");
    }
}
