//! `fleetgate check [--config FILE] [--print]`: validate the configuration, the files it
//! names and the manifest without serving; optionally print the effective configuration
//! (which holds the admin token file's path, never the token).

use std::path::Path;

use super::exit;
use crate::config::{read_admin_token, Config};
use crate::manifest::Manifest;

/// Check everything `serve` would load: the configuration (file and environment), the
/// TLS files (`[tls]`, and the upstreams' CA bundle and client certificate), the admin
/// token file and the manifest. Each problem goes to stderr, and any
/// makes the exit code [`exit::CONFIG`].
///
/// With `print`, a successful check writes the effective configuration (environment
/// applied, paths resolved, defaults included) to stdout as TOML, and the `ok:` summary to
/// stderr, so that stdout is a configuration file.
pub fn check(config: Option<&Path>, print: bool) -> i32 {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let mut ok = true;
    let mut problem = |e: &dyn std::fmt::Display| {
        eprintln!("{e}");
        ok = false;
    };
    if let Some(Err(e)) = cfg
        .tls
        .as_ref()
        .map(|f| crate::tls::load_server_config(f, |k| cfg.key_origin(k)))
    {
        problem(&e);
    }
    if let Err(e) = crate::upstream::tls::UpstreamTls::load(&cfg, None) {
        problem(&e);
    }
    if let Err(e) = read_admin_token(&cfg) {
        problem(&e);
    }
    let manifest = match Manifest::load_dir(&cfg.routes) {
        Ok(m) => {
            for w in m.warnings() {
                eprintln!("{w}");
            }
            Some(m)
        }
        Err(e) => {
            problem(&e);
            None
        }
    };
    let Some(m) = manifest.filter(|_| ok) else {
        return exit::CONFIG;
    };
    let summary = format!(
        "ok: {} (role {}, node {}), manifest {} ({} rules, digest {})",
        cfg.origin(),
        cfg.role,
        cfg.node_id,
        cfg.routes.display(),
        m.rules().len(),
        m.digest()
    );
    if print {
        print!("{}", cfg.to_toml());
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    exit::OK
}
