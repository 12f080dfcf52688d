//! The normalize step: the request target in its one canonical form (see [`crate::path`]),
//! used both to classify the request and as the request line sent upstream, so that the
//! proxy and the upstream cannot disagree about what a path means.

use std::borrow::Cow;

use bytes::Bytes;
use http::uri::PathAndQuery;

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

#[cfg(test)]
mod tests {
    use super::*;

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
