//! TLS to upstreams: the rustls client configuration of `https://` upstreams, built from
//! `[upstreams]` `ca_file`, `client_cert` and `client_key`.
//!
//! Trust: with `ca_file`, the certificates of that PEM bundle and nothing else (a private
//! CA does not also let every public CA vouch for the upstream); without it, the system's
//! root certificates, read from the operating system's store (`rustls-native-certs`: the
//! usual bundle files and directories, `SSL_CERT_FILE` and `SSL_CERT_DIR` when set), so
//! they follow the distribution's CA updates and nothing is fetched. An `https` upstream
//! with no `ca_file` and an empty system store is a configuration error.
//!
//! Policy: TLS 1.3 and 1.2 with the cipher suites and key exchange groups of
//! [`crate::tls`], ALPN `http/1.1` only (fleetgate speaks HTTP/1.1 to its upstreams). The
//! certificate is checked against the upstream's host name (sent as SNI), or, for an IP
//! literal, against an IP address in the certificate (no SNI is sent).
//!
//! Reload: [`UpstreamTls::load`] keeps the previous settings (and so the pools' open
//! connections) when the files' contents did not change; any change builds new settings,
//! and connections made under the old ones are never reused for a new request.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::config::{Config, ConfigError};

/// The client side of TLS to the upstreams of one configuration.
pub struct UpstreamTls {
    inputs: Inputs,
    config: Arc<rustls::ClientConfig>,
}

/// What the settings were built from: two loads with equal inputs build equal settings.
#[derive(PartialEq, Eq)]
struct Inputs {
    /// The CA bundle as read; `None`: the system's roots (when an upstream uses https).
    ca: Option<Vec<u8>>,
    system_roots: bool,
    /// The client certificate chain and key as read.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_file", &self.inputs.ca.is_some())
            .field("system_roots", &self.inputs.system_roots)
            .field("client_cert", &self.inputs.client.is_some())
            .finish()
    }
}

impl UpstreamTls {
    /// The settings of `config`: `None` when no upstream uses https and no upstream TLS
    /// file is configured. The files are read (and checked) every time; when their
    /// contents equal those `previous` was built from, `previous` itself is returned.
    /// Errors name the key, where it was set, and the resolved path.
    pub fn load(
        config: &Config,
        previous: Option<&Arc<UpstreamTls>>,
    ) -> Result<Option<Arc<UpstreamTls>>, ConfigError> {
        let u = &config.upstreams;
        let https = u.fleet.iter().chain(u.ide.iter()).find(|url| url.tls);
        if https.is_none() && u.ca_file.is_none() && u.client_auth.is_none() {
            return Ok(None);
        }
        let err = |key: &str, message: String| ConfigError {
            origin: config.key_origin(key),
            key: key.to_string(),
            message,
        };
        let read = |key: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
        };
        let inputs = Inputs {
            ca: match &u.ca_file {
                Some(path) => Some(read("upstreams.ca_file", path)?),
                None => None,
            },
            system_roots: u.ca_file.is_none() && https.is_some(),
            client: match &u.client_auth {
                Some(files) => Some((
                    read("upstreams.client_cert", &files.cert)?,
                    read("upstreams.client_key", &files.key)?,
                )),
                None => None,
            },
        };

        let mut roots = RootCertStore::empty();
        if let (Some(pem), Some(path)) = (&inputs.ca, &u.ca_file) {
            let certs = certificates(pem, path).map_err(|m| err("upstreams.ca_file", m))?;
            for (i, cert) in certs.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    err(
                        "upstreams.ca_file",
                        format!(
                            "{}: certificate {} is not a usable CA certificate: {e}",
                            path.display(),
                            i + 1
                        ),
                    )
                })?;
            }
        }
        if inputs.system_roots {
            let key = if u.fleet.iter().any(|url| url.tls) {
                "upstreams.fleet"
            } else {
                "upstreams.ide"
            };
            system_roots(&mut roots).map_err(|m| err(key, m))?;
        }
        let client = match (&inputs.client, &u.client_auth) {
            (Some((cert, key)), Some(files)) => Some((
                certificates(cert, &files.cert).map_err(|m| err("upstreams.client_cert", m))?,
                private_key(key, &files.key).map_err(|m| err("upstreams.client_key", m))?,
            )),
            _ => None,
        };

        if let Some(prev) = previous.filter(|p| p.inputs == inputs) {
            return Ok(Some(prev.clone()));
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
            .map_err(|e| err("upstreams.ca_file", e.to_string()))?
            .with_root_certificates(roots);
        let mut cc = match client {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                err(
                    "upstreams.client_key",
                    format!("the key does not fit the client certificate: {e}"),
                )
            })?,
            None => builder.with_no_client_auth(),
        };
        cc.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(UpstreamTls {
            inputs,
            config: Arc::new(cc),
        })))
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// Does it present a client certificate?
    pub fn has_client_cert(&self) -> bool {
        self.inputs.client.is_some()
    }
}

/// The CERTIFICATE blocks of a PEM file; at least one.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "expected a PEM file with at least one CERTIFICATE block: {}",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?
        .ok_or_else(|| {
            format!(
                "expected a PEM file with a PRIVATE KEY block: {}",
                path.display()
            )
        })
}

/// Add the system's root certificates to `roots`; an error when none can be used.
fn system_roots(roots: &mut RootCertStore) -> Result<(), String> {
    let found = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    for e in &found.errors {
        tracing::warn!(error = %e, "could not read part of the system's root certificates");
    }
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        return Err(format!(
            "an https upstream without upstreams.ca_file is checked against the system's root certificates, but none could be loaded ({why}; {ignored} unusable); install them or set upstreams.ca_file"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TlsFiles, UpstreamUrl};

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "fleetgate-upstream-tls-{tag}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn https_config() -> Config {
        let mut c = Config::default();
        c.upstreams.fleet = vec![UpstreamUrl::parse("https://127.0.0.1:8443").unwrap()];
        c
    }

    #[test]
    fn plain_http_needs_no_tls_settings() {
        assert!(UpstreamTls::load(&Config::default(), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn unchanged_files_keep_the_settings_and_changed_ones_replace_them() {
        let dir = Dir::new("reuse");
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let ca = dir.write("ca.pem", &a.cert.pem());
        let mut c = https_config();
        c.upstreams.ca_file = Some(ca);
        let first = UpstreamTls::load(&c, None).unwrap().unwrap();
        assert_eq!(
            first.client_config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
        let again = UpstreamTls::load(&c, Some(&first)).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "same contents, same settings");
        dir.write("ca.pem", &b.cert.pem());
        let changed = UpstreamTls::load(&c, Some(&first)).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first, &changed), "new contents, new settings");
    }

    #[test]
    fn bad_files_name_their_key_and_path() {
        let dir = Dir::new("bad");
        let not_pem = dir.write("junk.pem", "not a certificate\n");
        let mut c = https_config();
        c.upstreams.ca_file = Some(not_pem.clone());
        let e = UpstreamTls::load(&c, None).unwrap_err();
        assert_eq!(e.key, "upstreams.ca_file");
        assert!(e.message.contains(&not_pem.display().to_string()), "{e}");
        assert!(e.message.contains("CERTIFICATE"), "{e}");

        c.upstreams.ca_file = Some(dir.0.join("missing.pem"));
        let e = UpstreamTls::load(&c, None).unwrap_err();
        assert_eq!(e.key, "upstreams.ca_file");
        assert!(e.message.contains("cannot read"), "{e}");

        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        c.upstreams.ca_file = Some(dir.write("ca.pem", &a.cert.pem()));
        c.upstreams.client_auth = Some(TlsFiles {
            cert: dir.write("client.pem", &a.cert.pem()),
            key: dir.write("client.key", &b.key_pair.serialize_pem()),
        });
        let e = UpstreamTls::load(&c, None).unwrap_err();
        assert_eq!(e.key, "upstreams.client_key");
        assert!(e.message.contains("does not fit"), "{e}");

        c.upstreams.client_auth = Some(TlsFiles {
            cert: dir.write("client.pem", &a.cert.pem()),
            key: dir.write("client.key", &a.key_pair.serialize_pem()),
        });
        let ok = UpstreamTls::load(&c, None).unwrap().unwrap();
        assert!(ok.has_client_cert());
        assert!(ok.client_config().client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn files_are_checked_even_when_no_upstream_uses_https() {
        let mut c = Config::default();
        c.upstreams.ca_file = Some("/nonexistent/fleetgate-ca.pem".into());
        let e = UpstreamTls::load(&c, None).unwrap_err();
        assert_eq!(e.key, "upstreams.ca_file");
    }
}
