//! TLS loading and policy: the certificate chain and private key named by `[tls]`, read
//! into a rustls `ServerConfig` with ALPN `h2` and `http/1.1`. Knows nothing of sockets:
//! the server wraps the result in an acceptor, and a reload builds a new one aside (the
//! next handshake uses it; open connections keep theirs).
//!
//! The cipher policy is written out here, not inherited: [`provider`] is rustls' *ring*
//! provider cut down to [`CIPHER_SUITES`] and [`KX_GROUPS`], and [`PROTOCOL_VERSIONS`] is
//! TLS 1.3 and 1.2. The upstream client (`crate::upstream::tls`) uses the same policy.
//!
//! Session resumption is stateful: an in-memory cache of [`SESSION_CACHE`] sessions per
//! server configuration (TLS 1.2 session IDs; in TLS 1.3 the tickets sent are references
//! into that cache). No stateless session tickets: their encryption key would have to be
//! rotated and shared, and a ticket key that lives as long as the process undoes the
//! forward secrecy of every session it sealed. A reload builds a new configuration and so
//! an empty cache: clients do one full handshake after it.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{ConfigError, TlsFiles};

/// The protocol versions offered and accepted: TLS 1.3 and TLS 1.2, nothing older.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The cipher suites, in preference order: AEADs only, forward-secret (ECDHE) key exchange
/// only. A server honours the client's order among them.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The key exchange groups, in preference order.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] =
    &[kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];

/// Sessions the server remembers for resumption (per server configuration).
pub const SESSION_CACHE: usize = 1024;

/// The crypto provider of every TLS connection fleetgate makes or accepts: *ring* with
/// exactly [`CIPHER_SUITES`] and [`KX_GROUPS`].
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups: KX_GROUPS.to_vec(),
        ..rustls::crypto::ring::default_provider()
    })
}

/// Read `files` into a server configuration. `origin` says where a key was set, for
/// errors (the key is `tls.cert` or `tls.key`, the message names the resolved path); see
/// `Config::key_origin`.
pub fn load_server_config(
    files: &TlsFiles,
    origin: impl Fn(&str) -> String,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        origin: origin(key),
        key: key.to_string(),
        message,
    };
    let open = |key: &str, path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open("tls.cert", &files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                "tls.cert",
                format!("{}: invalid PEM: {e}", files.cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "tls.cert",
            format!(
                "expected a PEM file with at least one CERTIFICATE block: {}",
                files.cert.display()
            ),
        ));
    }
    let key = rustls_pemfile::private_key(&mut open("tls.key", &files.key)?)
        .map_err(|e| {
            err(
                "tls.key",
                format!("{}: invalid PEM: {e}", files.key.display()),
            )
        })?
        .ok_or_else(|| {
            err(
                "tls.key",
                format!(
                    "expected a PEM file with a PRIVATE KEY block: {}",
                    files.key.display()
                ),
            )
        })?;
    let mut sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| err("tls.cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "tls.key",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateful resumption only (see the module docs); rustls' default ticketer is the one
    // that never produces a ticket, and it stays.
    sc.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    debug_assert!(!sc.ticketer.enabled());
    Ok(Arc::new(sc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_policy_is_the_listed_suites_and_groups_without_tickets() {
        let dir = std::env::temp_dir().join(format!("fleetgate-tls-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).unwrap();
        std::fs::write(&files.key, ck.key_pair.serialize_pem()).unwrap();
        let sc = load_server_config(&files, |_| "test".into()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let suites: Vec<_> = sc
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let listed: Vec<_> = CIPHER_SUITES.iter().map(|s| s.suite()).collect();
        assert_eq!(suites, listed);
        assert_eq!(suites.len(), 9);
        assert!(CIPHER_SUITES.iter().all(|s| matches!(
            s.version().version,
            rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
        )));
        let groups: Vec<_> = sc
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        use rustls::NamedGroup::{secp256r1, secp384r1, X25519};
        assert_eq!(groups, vec![X25519, secp256r1, secp384r1]);
        assert!(!sc.ticketer.enabled(), "no stateless session tickets");
        assert_eq!(
            sc.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn file_errors_name_the_key_where_it_was_set() {
        let files = TlsFiles {
            cert: "/nonexistent/fleetgate-cert.pem".into(),
            key: "/nonexistent/fleetgate-key.pem".into(),
        };
        let e = load_server_config(&files, |k| format!("f.toml:{}", k.len())).unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("f.toml:8", "tls.cert")
        );
        assert!(e.message.contains("/nonexistent/fleetgate-cert.pem"), "{e}");
    }
}
