//! Header hygiene and stamps: hop-by-hop stripping in both directions,
//! `x-forwarded-*`, `via`, W3C `traceparent`, the `x-fleetgate-via` loop guard, the
//! manifest digest on forwarded requests, and the `x-fleetgate-*` response stamps.
//!
//! The per-node values (node id, `role@node`, `via` entries, digest) are built once per
//! snapshot in [`NodeHeaders`], so the common request costs no formatting.

use std::io::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, Entry, HeaderName, HOST};
use http::{HeaderMap, HeaderValue, Version};

use crate::proxy::error::ProxyError;
use crate::proxy::target::Target;
pub use crate::state::NodeHeaders;

pub const X_FLEETGATE_VIA: HeaderName = HeaderName::from_static("x-fleetgate-via");
pub const X_FLEETGATE_MANIFEST: HeaderName = HeaderName::from_static("x-fleetgate-manifest");
pub const X_FLEETGATE_GENERATION: HeaderName = HeaderName::from_static("x-fleetgate-generation");
pub const X_FLEETGATE_TARGET: HeaderName = HeaderName::from_static("x-fleetgate-target");
pub const X_FLEETGATE_SERVED_BY: HeaderName = HeaderName::from_static("x-fleetgate-served-by");
pub const X_FLEETGATE_FORWARDED_VIA: HeaderName =
    HeaderName::from_static("x-fleetgate-forwarded-via");
pub const X_FLEETGATE_DEGRADED: HeaderName = HeaderName::from_static("x-fleetgate-degraded");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers of RFC 9110 §7.6.1, plus the legacy `proxy-connection` and the
/// proxy credentials of RFC 2616 §13.5.1 (`proxy-authorization` is meant for this hop,
/// never for the application; `proxy-authenticate` likewise on the way back).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Loop guard: `508` when `x-fleetgate-via` already names this node or holds
/// `max_hops` entries or more (this node would be one hop too many).
pub fn check_loop(headers: &HeaderMap, node: &NodeHeaders) -> Result<(), ProxyError> {
    let mut hops = 0usize;
    for value in headers.get_all(&X_FLEETGATE_VIA) {
        let Ok(s) = value.to_str() else {
            hops += 1;
            continue;
        };
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == node.node_id {
                return Err(ProxyError::LoopDetected);
            }
            hops += 1;
        }
    }
    if hops >= node.max_hops {
        return Err(ProxyError::TooManyHops);
    }
    Ok(())
}

/// Is this an HTTP/1.1 `Upgrade` (WebSocket) request?
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers and every header named in `Connection`. With `upgrade`,
/// `Upgrade` survives and `Connection: upgrade` is set again, for the tunnel handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names says which are there: most messages carry none of them, or
    // only `connection`, and a removal costs a hashed lookup each.
    let mut present = [false; 8];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        // No `connection` either, so no names listed in one.
        return;
    }
    // Names listed in Connection; common tokens are static names, so this rarely allocates.
    let mut named: [Option<HeaderName>; 8] = Default::default();
    let mut extra: Vec<HeaderName> = Vec::new();
    let mut n = 0;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(s) = value.to_str() else { continue };
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                if n < named.len() {
                    named[n] = Some(name);
                    n += 1;
                } else {
                    extra.push(name);
                }
            }
        }
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named.iter().flatten().chain(extra.iter()) {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Marks `authorization`, `proxy-authorization` and `cookie` sensitive: no log of the
/// headers prints them (and HPACK never indexes them). One pass over the headers.
pub fn mark_credentials_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
        {
            value.set_sensitive(true);
        }
    }
}

/// What the forwarding headers say about the client side of this request.
#[derive(Debug, Clone)]
pub struct ClientSide {
    pub ip: IpAddr,
    /// `ip` as a header value, built once per connection ([`ip_header_value`]) so that
    /// appending it to `x-forwarded-for` costs no allocation per request.
    pub ip_value: HeaderValue,
    pub tls: bool,
    pub version: Version,
}

/// `ip` as a header value whose clones share one buffer (cloning it never allocates).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let mut ip_buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut ip_buf[..]);
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    let shared = bytes::Bytes::from(ip_buf[..len].to_vec());
    // The first clone of a `Bytes` made from a `Vec` moves it into a shared buffer; do it
    // here, once, instead of on the first request.
    let _ = shared.clone();
    HeaderValue::from_maybe_shared(shared).expect("an IP is header-safe")
}

/// Prepare the headers of a request about to go upstream (hop-by-hop already stripped).
pub fn prepare_upstream_request(
    headers: &mut HeaderMap,
    authority: Option<&http::uri::Authority>,
    client: &ClientSide,
    node: &NodeHeaders,
) {
    // Host: HTTP/2 clients send :authority instead; HTTP/1.1 upstreams need Host.
    // (Each lookup hashes the name: one per header, through the entry when it is both
    // read and written.)
    let host = match headers.entry(HOST) {
        Entry::Occupied(e) => Some(e.get().clone()),
        Entry::Vacant(e) => authority
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .map(|v| e.insert(v).clone()),
    };
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if client.tls { "https" } else { "http" }),
    );
    append_list(headers, X_FORWARDED_FOR, &client.ip_value);
    let via = match client.version {
        Version::HTTP_10 => &node.via_10,
        Version::HTTP_2 => &node.via_2,
        _ => &node.via_11,
    };
    headers.append(header::VIA, via.clone());
    match headers.entry(TRACEPARENT) {
        Entry::Occupied(e) if valid_traceparent(e.get()) => {}
        Entry::Occupied(mut e) => {
            e.insert(new_traceparent());
        }
        Entry::Vacant(e) => {
            e.insert(new_traceparent());
        }
    }
    append_list(headers, X_FLEETGATE_VIA, &node.node);
    headers.insert(X_FLEETGATE_MANIFEST, node.manifest.clone());
    headers.insert(X_FLEETGATE_GENERATION, node.generation.clone());
}

/// Append `value` to the comma-separated list in `name`, folding repeated lines into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    let mut entry = match headers.entry(name) {
        Entry::Vacant(e) => {
            e.insert(value.clone());
            return;
        }
        Entry::Occupied(e) => e,
    };
    let mut buf = BytesMut::with_capacity(128);
    for v in entry.iter() {
        if v.is_empty() {
            continue;
        }
        if !buf.is_empty() {
            buf.put_slice(b", ");
        }
        buf.put_slice(v.as_bytes());
    }
    if !buf.is_empty() {
        buf.put_slice(b", ");
    }
    buf.put_slice(value.as_bytes());
    let joined = HeaderValue::from_maybe_shared(buf.freeze()).expect("joined header values");
    entry.insert(joined);
}

/// `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, ids not all zero.
fn valid_traceparent(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    if b.len() < 55 {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    hex(&b[0..2])
        && &b[0..2] != b"ff"
        && b[2] == b'-'
        && hex(&b[3..35])
        && nonzero(&b[3..35])
        && b[35] == b'-'
        && hex(&b[36..52])
        && nonzero(&b[36..52])
        && b[52] == b'-'
        && hex(&b[53..55])
        && (b.len() == 55 || (&b[0..2] != b"00" && b[55] == b'-'))
}

fn new_traceparent() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    for i in 0..32 {
        out[3 + i] = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
    }
    out[35] = b'-';
    for i in 0..16 {
        out[36 + i] = HEX[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    out[52..].copy_from_slice(b"-01");
    HeaderValue::from_bytes(&out).expect("hex is header-safe")
}

/// What to stamp on a response.
pub struct Stamp {
    pub target: Option<Target>,
    pub degraded: bool,
}

/// Add `x-fleetgate-target`, `x-fleetgate-served-by` (or, when an inner fleetgate already
/// answered, append to `x-fleetgate-forwarded-via`) and `x-fleetgate-degraded`.
pub fn stamp_response(headers: &mut HeaderMap, node: &NodeHeaders, stamp: &Stamp) {
    if !node.stamps {
        return;
    }
    if let Some(t) = stamp.target {
        headers.insert(X_FLEETGATE_TARGET, t.header_value());
    }
    if headers.contains_key(&X_FLEETGATE_SERVED_BY) {
        append_list(headers, X_FLEETGATE_FORWARDED_VIA, &node.served_by);
    } else {
        headers.insert(X_FLEETGATE_SERVED_BY, node.served_by.clone());
    }
    if stamp.degraded {
        headers.insert(X_FLEETGATE_DEGRADED, HeaderValue::from_static("1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn node(max_hops: usize) -> NodeHeaders {
        let mut c = Config {
            node_id: "n1".into(),
            ..Config::default()
        };
        c.limits.max_hops = max_hops;
        NodeHeaders::new(&c, "sha256:abc")
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(KEEP_ALIVE, "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn credentials_are_marked_sensitive_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer app".parse().unwrap());
        h.append(header::COOKIE, "a=1".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic Zm9v".parse().unwrap());
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        mark_credentials_sensitive(&mut h);
        for (name, value) in &h {
            assert_eq!(value.is_sensitive(), name != header::ACCEPT, "{name}");
        }
        assert!(format!("{h:?}").contains("Sensitive"));
        assert!(!format!("{h:?}").contains("Zm9v"));
    }

    /// The one-pass strip agrees with removing every hop-by-hop name and every name that
    /// `connection` lists, one by one.
    fn strip_reference(h: &mut HeaderMap, upgrade: bool) {
        let upgrade_value = upgrade.then(|| h.get(header::UPGRADE).cloned()).flatten();
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed.iter().chain(HOP_BY_HOP.iter()) {
            h.remove(name);
        }
        if let Some(v) = upgrade_value {
            h.insert(header::UPGRADE, v);
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }

    proptest::proptest! {
        #[test]
        fn strip_agrees_with_removing_each_name(
            names in proptest::collection::vec(0usize..14, 0..10),
            listed in proptest::collection::vec(0usize..14, 0..4),
            upgrade: bool,
        ) {
            const POOL: [&str; 14] = [
                "connection", "proxy-connection", "keep-alive", "te", "transfer-encoding",
                "upgrade", "proxy-authorization", "proxy-authenticate", "host", "accept",
                "x-secret", "authorization", "cookie", "close",
            ];
            let mut h = HeaderMap::new();
            for &i in &names {
                if POOL[i] != "connection" {
                    h.append(POOL[i], HeaderValue::from_static("v"));
                }
            }
            if !listed.is_empty() {
                let tokens: Vec<&str> = listed.iter().map(|&i| POOL[i]).collect();
                h.append(header::CONNECTION, tokens.join(", ").parse().unwrap());
            }
            let mut expected = h.clone();
            strip_reference(&mut expected, upgrade);
            strip_hop_by_hop(&mut h, upgrade);
            proptest::prop_assert_eq!(h, expected);
        }
    }

    #[test]
    fn proxy_credentials_stop_here() {
        let mut h = HeaderMap::new();
        h.insert(header::PROXY_AUTHORIZATION, "Basic Zm9v".parse().unwrap());
        h.insert(header::PROXY_AUTHENTICATE, "Basic".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer app".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(
            h.contains_key(header::AUTHORIZATION),
            "the application's own credentials pass"
        );
    }

    #[test]
    fn upgrade_survives_for_tunnels() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade_request(Version::HTTP_11, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn loop_guard() {
        let n = node(2);
        let mut h = HeaderMap::new();
        assert!(check_loop(&h, &n).is_ok());
        h.insert(X_FLEETGATE_VIA, "a".parse().unwrap());
        assert!(check_loop(&h, &n).is_ok());
        h.insert(X_FLEETGATE_VIA, "a, n1".parse().unwrap());
        assert_eq!(check_loop(&h, &n), Err(ProxyError::LoopDetected));
        h.insert(X_FLEETGATE_VIA, "a, b".parse().unwrap());
        assert_eq!(check_loop(&h, &n), Err(ProxyError::TooManyHops));
    }

    /// A client on 127.0.0.1.
    fn loopback_client(tls: bool, version: Version) -> ClientSide {
        let ip = "127.0.0.1".parse().unwrap();
        ClientSide {
            ip,
            ip_value: ip_header_value(ip),
            tls,
            version,
        }
    }

    #[test]
    fn forwarding_headers() {
        let n = node(4);
        let mut h = HeaderMap::new();
        h.insert(HOST, "example.com".parse().unwrap());
        h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, "10.0.0.2".parse().unwrap());
        h.insert(X_FLEETGATE_VIA, "edge".parse().unwrap());
        let client = loopback_client(false, Version::HTTP_11);
        prepare_upstream_request(&mut h, None, &client, &n);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "example.com");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::VIA], "1.1 n1");
        assert_eq!(h[X_FLEETGATE_VIA], "edge, n1");
        assert_eq!(h[X_FLEETGATE_MANIFEST], "sha256:abc");
        assert!(valid_traceparent(&h[TRACEPARENT]), "{:?}", h[TRACEPARENT]);
    }

    #[test]
    fn host_from_the_authority_and_traceparent_kept_or_replaced() {
        let n = node(4);
        let client = loopback_client(true, Version::HTTP_2);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let authority: http::uri::Authority = "api.example:8443".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, tp.parse().unwrap());
        prepare_upstream_request(&mut h, Some(&authority), &client, &n);
        assert_eq!(h[HOST], "api.example:8443");
        assert_eq!(h[X_FORWARDED_HOST], "api.example:8443");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[header::VIA], "2 n1");
        assert_eq!(h[TRACEPARENT], tp, "a valid traceparent is kept");

        let mut h = HeaderMap::new();
        h.insert(HOST, "kept.example".parse().unwrap());
        h.insert(TRACEPARENT, "garbage".parse().unwrap());
        h.append(TRACEPARENT, tp.parse().unwrap());
        prepare_upstream_request(&mut h, Some(&authority), &client, &n);
        assert_eq!(h[HOST], "kept.example", "a Host is never replaced");
        assert_eq!(h.get_all(TRACEPARENT).iter().count(), 1);
        assert!(valid_traceparent(&h[TRACEPARENT]));
        assert_ne!(
            h[TRACEPARENT], tp,
            "the first value decides; an invalid one is replaced"
        );
    }

    #[test]
    fn traceparent_is_kept_when_valid() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(&HeaderValue::from_static(tp)));
        assert!(!valid_traceparent(&HeaderValue::from_static(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        )));
        assert!(!valid_traceparent(&HeaderValue::from_static("garbage")));
    }

    #[test]
    fn served_by_is_kept_from_inner_fleetgate() {
        let n = node(4);
        let mut h = HeaderMap::new();
        h.insert(X_FLEETGATE_SERVED_BY, "ide@inner".parse().unwrap());
        let stamp = Stamp {
            target: Some(Target::Ide),
            degraded: false,
        };
        stamp_response(&mut h, &n, &stamp);
        assert_eq!(h[X_FLEETGATE_SERVED_BY], "ide@inner");
        assert_eq!(h[X_FLEETGATE_FORWARDED_VIA], "serve@n1");
        assert_eq!(h[X_FLEETGATE_TARGET], "ide");
    }
}
