//! Building snapshots and hot reload.
//!
//! [`build_snapshot`] is the one function that turns a configuration (file + environment)
//! and the files it names (routes directory, TLS certificate and key, the upstreams' CA
//! bundle and client certificate, admin token) into a
//! [`Snapshot`]; the server calls it once at start, and [`Reloader::reload`] calls it for
//! every reload, with the live snapshot as `previous` so that upstream pools adopt their
//! endpoints.
//!
//! A reload is all or nothing. The new snapshot is built aside; only when every part of
//! it is valid is it swapped in. A manifest error, a configuration error, an unreadable
//! certificate, or a change of a key that needs a restart (`listen`, `admin_listen`,
//! `role`, … see `Config::restart_only_changes`) refuses the whole reload: the old
//! snapshot stays live, the error is logged, counted (`fleetgate_reload_total{result=
//! "error"}`) and shown in `/healthz` until the next successful reload. Requests in flight
//! finish on the snapshot they started with; connections, streams and tunnels are never
//! touched.
//!
//! Triggers: `SIGHUP` (the server), `POST /reload` (the admin listener), and the opt-in
//! file watch ([`Reloader::watch`], `[reload] watch = true`), which polls the files'
//! sizes and modification times every `reload.watch_interval` and reloads once they have
//! been stable for one interval. Polling, rather than inotify, sees Kubernetes ConfigMap
//! updates (an atomic symlink swap) and needs no platform code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::config::{self, Config, ConfigError};
use crate::manifest::{LoadError, Manifest};
use crate::metrics::Metrics;
use crate::state::{
    AdminToken, NodeHeaders, ReloadAttempt, ReloadStatus, RuleHits, Snapshot, State,
};
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{Pool, Upstream};

/// Where the configuration of each reload comes from.
#[derive(Clone)]
pub enum ConfigSource {
    /// Read the file (or `FLEETGATE_CONFIG`, or none) and the environment again.
    Load(Option<PathBuf>),
    /// A configuration built in code (tests, `fleetgate demo`): kept as is; a reload
    /// re-reads the files it names.
    Fixed(Arc<Config>),
}

impl ConfigSource {
    /// The source that reproduces `config`: its file when it was read from one.
    pub fn of(config: &Config) -> ConfigSource {
        match &config.file {
            Some(path) => ConfigSource::Load(Some(path.clone())),
            None => ConfigSource::Fixed(Arc::new(config.clone())),
        }
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::Load(path) => Config::load(path.as_deref()),
            ConfigSource::Fixed(config) => Ok(Config::clone(config)),
        }
    }
}

/// Why a snapshot could not be built. Its `Display` is the message an operator sees
/// (`file:line: …` for the manifest and the configuration).
#[derive(Debug)]
pub enum BuildError {
    Config(ConfigError),
    Manifest(LoadError),
    /// The new configuration changes keys that only a restart can change.
    RestartNeeded(Vec<&'static str>),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => write!(f, "{e}"),
            BuildError::Manifest(e) => write!(f, "{e}"),
            BuildError::RestartNeeded(keys) => write!(
                f,
                "these keys changed but take effect only after a restart: {}; nothing was reloaded",
                keys.join(", ")
            ),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

impl From<LoadError> for BuildError {
    fn from(e: LoadError) -> Self {
        BuildError::Manifest(e)
    }
}

/// Build a snapshot from `config` and the files it names. `previous`: the live snapshot
/// on a reload (its pools are adopted, its restart-only keys must not change).
pub async fn build_snapshot(
    config: Config,
    previous: Option<&Snapshot>,
    metrics: &Arc<Metrics>,
) -> Result<Snapshot, BuildError> {
    if let Some(prev) = previous {
        let keys = prev.config.restart_only_changes(&config);
        if !keys.is_empty() {
            return Err(BuildError::RestartNeeded(keys));
        }
    }
    let manifest = Manifest::load_dir(&config.routes)?;
    for w in manifest.warnings() {
        tracing::warn!("{w}");
    }
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::load_server_config(files, |k| {
            config.key_origin(k)
        })?),
        None => None,
    };
    let admin_token = config::read_admin_token(&config)?.map(AdminToken::new);
    // The upstream TLS settings of the live snapshot, kept when the files did not change.
    let live_tls = previous.and_then(|p| p.pools().find_map(|pool| pool.tls.as_ref()));
    let upstream_tls = UpstreamTls::load(&config, live_tls.map(|t| &t.settings))?;
    let fleet = Pool::adopt(
        Upstream::Fleet,
        config.upstreams.fleet.clone(),
        upstream_tls.as_ref(),
        previous.map(|p| &p.fleet),
        metrics.clone(),
    )
    .await;
    let ide = match &config.upstreams.ide {
        Some(url) => Some(
            Pool::adopt(
                Upstream::Ide,
                vec![url.clone()],
                upstream_tls.as_ref(),
                previous.and_then(|p| p.ide.as_ref()),
                metrics.clone(),
            )
            .await,
        ),
        None => None,
    };
    Ok(Snapshot {
        serial: previous.map_or(1, |p| p.serial + 1),
        loaded_at: SystemTime::now(),
        node: NodeHeaders::new(&config, manifest.digest()),
        rule_hits: RuleHits::carry(&manifest, previous),
        config: Arc::new(config),
        manifest,
        fleet,
        ide,
        tls,
        admin_token,
    })
}

/// What set a reload off (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Admin,
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "POST /reload",
            Trigger::Watch => "file watch",
        }
    }
}

/// A successful reload.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub digest: String,
    pub serial: u64,
    /// Did the manifest digest change?
    pub manifest_changed: bool,
}

/// Reloads the state of a running server, one reload at a time.
pub struct Reloader {
    state: Arc<State>,
    source: ConfigSource,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(state: Arc<State>, source: ConfigSource) -> Reloader {
        Reloader {
            state,
            source,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Build a new snapshot aside and swap it in; on any error keep the live one.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, BuildError> {
        let _one = self.one_at_a_time.lock().await;
        let live = self.state.snapshot();
        let rt = &self.state.runtime;
        let built = match self.source.load() {
            Ok(config) => build_snapshot(config, Some(&live), &rt.metrics).await,
            Err(e) => Err(BuildError::Config(e)),
        };
        match built {
            Ok(next) => {
                let done = Reloaded {
                    digest: next.manifest.digest().to_string(),
                    serial: next.serial,
                    manifest_changed: next.manifest.digest() != live.manifest.digest(),
                };
                self.state.swap(next);
                rt.metrics.reloads.with_label_values(&["ok"]).inc();
                rt.set_reload_status(ReloadStatus::default());
                rt.record_reload(ReloadAttempt {
                    at: SystemTime::now(),
                    trigger: trigger.as_str(),
                    applied: Some((done.digest.clone(), done.serial)),
                    error: None,
                });
                tracing::info!(
                    trigger = trigger.as_str(),
                    digest = %done.digest,
                    serial = done.serial,
                    manifest_changed = done.manifest_changed,
                    "reloaded"
                );
                Ok(done)
            }
            Err(e) => {
                rt.metrics.reloads.with_label_values(&["error"]).inc();
                let at = SystemTime::now();
                rt.set_reload_status(ReloadStatus {
                    last_error: Some(e.to_string()),
                    last_error_at: Some(at),
                });
                rt.record_reload(ReloadAttempt {
                    at,
                    trigger: trigger.as_str(),
                    applied: None,
                    error: Some(e.to_string()),
                });
                tracing::error!(
                    trigger = trigger.as_str(),
                    "reload refused, the previous configuration stays live: {e}"
                );
                Err(e)
            }
        }
    }

    /// Poll the watched files every `reload.watch_interval` of the live configuration;
    /// reload when they changed and have then stayed the same for one interval. Runs
    /// until `stop` fires.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut applied = self.fingerprint();
        let mut pending: Option<Vec<FileStamp>> = None;
        loop {
            let interval = self.state.snapshot().config.reload.watch_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let now = self.fingerprint();
            if now == applied {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                // Changed since the last look: wait until it settles.
                pending = Some(now);
                continue;
            }
            pending = None;
            // Success or not, this state of the files has been tried.
            let _ = self.reload(Trigger::Watch).await;
            applied = self.fingerprint();
        }
    }

    /// Size and modification time of every file a reload reads.
    fn fingerprint(&self) -> Vec<FileStamp> {
        let snap = self.state.snapshot();
        let c = &snap.config;
        let mut paths: Vec<PathBuf> = Vec::new();
        if let ConfigSource::Load(Some(file)) = &self.source {
            paths.push(file.clone());
        }
        if let Ok(entries) = std::fs::read_dir(&c.routes) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            paths.extend(names);
        }
        if let Some(tls) = &c.tls {
            paths.push(tls.cert.clone());
            paths.push(tls.key.clone());
        }
        if let Some(token) = &c.admin.token_file {
            paths.push(token.clone());
        }
        paths.extend(c.upstreams.ca_file.iter().cloned());
        if let Some(client) = &c.upstreams.client_auth {
            paths.push(client.cert.clone());
            paths.push(client.key.clone());
        }
        paths.into_iter().map(|p| FileStamp::of(&p)).collect()
    }
}

/// What the watch compares: a path, and its size and mtime (None: unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    seen: Option<(u64, SystemTime)>,
}

impl FileStamp {
    fn of(path: &Path) -> FileStamp {
        // Follows symlinks: a ConfigMap's `..data` swap changes what they point at.
        let seen = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        FileStamp {
            path: path.to_path_buf(),
            seen,
        }
    }
}
