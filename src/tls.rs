//! TLS loading: the certificate chain and private key named by `[tls]`, read into a
//! rustls `ServerConfig` with ALPN `h2` and `http/1.1`. Knows nothing of sockets: the
//! server wraps the result in an acceptor, and a reload builds a new one aside (the next
//! handshake uses it; open connections keep theirs).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, TlsFiles};

/// Read `files` into a server configuration. `origin` names the configuration file in
/// errors (the key is `tls.cert` or `tls.key`, the message names the resolved path).
pub fn load_server_config(
    files: &TlsFiles,
    origin: &str,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        origin: origin.to_string(),
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "tls.key",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}
