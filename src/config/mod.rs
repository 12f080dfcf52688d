//! Typed configuration: the TOML file, `FLEETGATE_*` environment overrides, and
//! validation into one [`Config`].
//!
//! Every key has a built-in default, may be set in the file, and may be overridden by an
//! environment variable (environment wins). Anything invalid — an unknown key, a value of
//! the wrong type or out of range — is one [`ConfigError`] that names where the value came
//! from (`file:line` or the environment variable), the key, and what was expected; the
//! CLI prints it and exits with 78 (`EX_CONFIG`). Relative paths (`routes`, `tls.cert`,
//! `tls.key`, `upstreams.ca_file`, `upstreams.client_cert`, `upstreams.client_key`,
//! `admin.token_file`) written in the file are resolved against the file's directory;
//! from the environment or the defaults, against the working directory.
//! [`Config`] holds them resolved, so every message about these files names the path
//! actually used.
//!
//! This module owns the typed [`Config`] and its parts, their defaults and
//! [`ConfigError`]. Each key is declared once, in the key table (`keys`): its name, its
//! environment variables, its validation and its field. `file` reads the file against that
//! table (and writes a configuration back in the same layout); `env` applies the
//! environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::Written;
use keys::{Draft, Raw, KEYS};

mod env;
mod file;
mod keys;

/// The role of the replica this fleetgate fronts: where each class of request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Ide,
    Worker,
    All,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Ide => "ide",
            Role::Worker => "worker",
            Role::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "serve" => Some(Role::Serve),
            "ide" => Some(Role::Ide),
            "worker" => Some(Role::Worker),
            "all" => Some(Role::All),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// `runtime.mode`: how the data listener's connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeMode {
    /// One single-threaded runtime per worker thread, each with its own listening socket
    /// on the same address (`SO_REUSEPORT`, the kernel spreads new connections) and its
    /// own upstream keep-alive pool: a connection and its upstream connections stay on
    /// one thread.
    PerCore,
    /// One multi-threaded, work-stealing runtime for every connection.
    Shared,
}

impl RuntimeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeMode::PerCore => "per-core",
            RuntimeMode::Shared => "shared",
        }
    }
}

/// `[runtime]`: the threads that serve the data listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub mode: RuntimeMode,
    /// Worker threads; 0 means one per CPU available to the process (cgroup quotas
    /// included).
    pub workers: usize,
}

impl RuntimeSettings {
    /// The number of worker threads to start (`workers`, or the CPUs when 0).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// One upstream as configured: `http://host[:port]` or `https://host[:port]`. A host that
/// is not an IP literal is resolved with the system resolver and re-resolved every
/// `upstreams.dns_refresh`; over `https` its certificate is checked against that name
/// (an IP literal: against an IP address in the certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    /// `https`: TLS to this upstream (see `upstreams.ca_file`).
    pub tls: bool,
}

impl UpstreamUrl {
    /// A plain `http://host:port` upstream.
    pub fn http(host: impl Into<String>, port: u16) -> UpstreamUrl {
        UpstreamUrl {
            host: host.into(),
            port,
            tls: false,
        }
    }

    /// Parse `http://host[:port][/]` or `https://host[:port][/]` (ports 80 and 443 by
    /// default).
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        let expected = || {
            format!(
                "expected an upstream URL like \"http://127.0.0.1:3000\" or \"https://app.internal\", got {s:?}"
            )
        };
        let (rest, tls, default_port) = if let Some(rest) = s.strip_prefix("http://") {
            (rest, false, 80)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (rest, true, 443)
        } else {
            return Err(expected());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(expected());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(expected)?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(expected)?,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| expected())?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(expected());
        }
        let url = UpstreamUrl { host, port, tls };
        if tls
            && url.ip().is_none()
            && rustls::pki_types::DnsName::try_from(url.host.as_str()).is_err()
        {
            return Err(format!(
                "expected a DNS name or an IP address to check the upstream's certificate against, got {:?}",
                url.host
            ));
        }
        Ok(url)
    }

    /// The IP address when the host is a literal (no DNS needed).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The default of `upstreams.max_idle_per_endpoint`.
pub const DEFAULT_MAX_IDLE_PER_ENDPOINT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// The fleet pool; in roles ide/worker/all this is the local application.
    pub fleet: Vec<UpstreamUrl>,
    /// The ide upstream (role serve only).
    pub ide: Option<UpstreamUrl>,
    /// How often DNS names are re-resolved.
    pub dns_refresh: Duration,
    /// Idle keep-alive connections kept per endpoint and worker thread; a connection
    /// whose response ends beyond it closes the least recently used one (0: none kept).
    pub max_idle_per_endpoint: usize,
    /// The PEM bundle of the certificate authorities `https` upstreams are checked
    /// against; when set, the only ones trusted. `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain and key fleetgate presents to `https` upstreams
    /// (`upstreams.client_cert`, `upstreams.client_key`), for mutual TLS.
    pub client_auth: Option<TlsFiles>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    /// The longest a client may leave fleetgate's writes unread (a full socket) before
    /// the connection is closed: the slow-reader limit.
    pub send: Duration,
    pub header_read: Duration,
    /// How long an HTTP/1.1 connection with no request open keeps hyper's connection
    /// (and its buffers) before it is parked; zero: never parked.
    pub park_after: Duration,
    pub shutdown: Duration,
    pub drain_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_hops: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[reload]`: reloading the configuration and the manifest while serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Reload when the configuration file or the manifest changes on disk.
    pub watch: bool,
    /// How often the files are looked at when `watch` is on.
    pub watch_interval: Duration,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admin {
    /// The file holding the admin token (read by [`read_admin_token`]; the configuration
    /// itself only ever holds the path).
    pub token_file: Option<PathBuf>,
}

/// `[admission]`: admission control, one bulkhead per target with per-tenant fairness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Requests in flight to the fleet (role serve) or the local application (other
    /// roles); `0` disables this bulkhead.
    pub max_inflight: usize,
    /// Requests in flight to the ide upstream; `0` disables this bulkhead.
    pub ide_max_inflight: usize,
    /// The request header that names the tenant (lower case); else the matched rule's
    /// `tenant` parameter; else one anonymous bucket.
    pub tenant_header: Option<String>,
    /// Requests of one tenant that may wait for a slot.
    pub queue_per_tenant: usize,
    /// How long a request may wait for a slot.
    pub queue_timeout: Duration,
    /// Bounds of `Retry-After` on shed answers, in seconds.
    pub retry_after_min: u32,
    pub retry_after_max: u32,
    /// Weighted shares of named tenants (others weigh 1), in the order written.
    pub weights: Vec<(String, u32)>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_inflight: 1024,
            ide_max_inflight: 256,
            tenant_header: None,
            queue_per_tenant: 64,
            queue_timeout: Duration::from_millis(250),
            retry_after_min: 1,
            retry_after_max: 30,
            weights: Vec::new(),
        }
    }
}

/// What the guard does with a write that would reach the fleet only because no rule
/// matched (or a fleet-ok rule without `writes = "fleet"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlistedWrites {
    /// Forward it to the ide ("a wasted hop beats lost data").
    Ide,
    /// Answer `503` + `Retry-After` + `x-fleetgate-guard: unlisted-write`.
    Refuse,
}

impl UnlistedWrites {
    pub fn as_str(self) -> &'static str {
        match self {
            UnlistedWrites::Ide => "ide",
            UnlistedWrites::Refuse => "refuse",
        }
    }
}

/// `[guard]`: the super_read_only guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    pub unlisted_writes: UnlistedWrites,
    /// Refuse every mutating request on this node (the switch's value at start; a
    /// reload applies it only when it changed in the file).
    pub super_read_only: bool,
    /// `Retry-After` on the guard's `503`s, in seconds.
    pub retry_after: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            unlisted_writes: UnlistedWrites::Ide,
            super_read_only: false,
            retry_after: 5,
        }
    }
}

/// What a detected version skew does to readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkewPolicy {
    /// Report it (`/healthz`, `fleetgate_version_skew`); readiness is unaffected.
    Report,
    /// Also fail `/readyz` while a trusted peer with another manifest digest was seen.
    Fail,
}

impl SkewPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SkewPolicy::Report => "report",
            SkewPolicy::Fail => "fail",
        }
    }
}

/// The validated configuration of one fleetgate process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from, if any (for messages).
    pub file: Option<PathBuf>,
    pub node_id: String,
    pub role: Role,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub routes: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    pub access_log: bool,
    /// Stamp `x-fleetgate-target` / `-served-by` on responses (off at an internet edge).
    pub response_stamps: bool,
    /// Pass `%2F` / `%5C` in paths through (kept encoded) instead of answering `400`.
    pub allow_encoded_slash: bool,
    pub upstreams: Upstreams,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tls: Option<TlsFiles>,
    pub reload: Reload,
    pub runtime: RuntimeSettings,
    pub admin: Admin,
    pub admission: Admission,
    pub guard: Guard,
    /// This deployment's generation (`FLEETGATE_GENERATION`, set per deploy): sent on
    /// forwarded requests as `x-fleetgate-generation`, shown by `/version`.
    pub generation: String,
    /// `readiness_on_skew`
    pub readiness_on_skew: SkewPolicy,
    /// Peers whose manifest digest may fail readiness (`trusted_peers`, CIDRs).
    pub trusted_peers: Vec<ipnet::IpNet>,
    /// Where each key that was set came from, for messages about the files it names.
    pub origins: KeyOrigins,
}

/// Where each key that was set came from: `file:line` or `environment variable X`. Not
/// part of a configuration's value: two configurations that differ only in where their
/// keys were written are equal.
#[derive(Debug, Clone, Default)]
pub struct KeyOrigins(Vec<(&'static str, String)>);

impl KeyOrigins {
    fn record(&mut self, key: &'static str, origin: String) {
        self.0.push((key, origin));
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, o)| o.as_str())
    }
}

impl PartialEq for KeyOrigins {
    fn eq(&self, _: &KeyOrigins) -> bool {
        true
    }
}

impl Eq for KeyOrigins {}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: None,
            node_id: default_node_id(),
            role: Role::Serve,
            listen: "0.0.0.0:8080".parse().unwrap(),
            admin_listen: "127.0.0.1:9901".parse().unwrap(),
            routes: PathBuf::from("routes"),
            log_format: LogFormat::Human,
            log_level: "info".to_string(),
            access_log: true,
            response_stamps: true,
            allow_encoded_slash: false,
            upstreams: Upstreams {
                fleet: vec![UpstreamUrl::http("127.0.0.1", 3000)],
                ide: None,
                dns_refresh: Duration::from_millis(5000),
                max_idle_per_endpoint: DEFAULT_MAX_IDLE_PER_ENDPOINT,
                ca_file: None,
                client_auth: None,
            },
            timeouts: Timeouts {
                connect: Duration::from_millis(3000),
                first_byte: Duration::from_millis(60_000),
                idle: Duration::from_millis(120_000),
                send: Duration::from_millis(60_000),
                header_read: Duration::from_millis(10_000),
                park_after: Duration::from_millis(1000),
                shutdown: Duration::from_millis(30_000),
                drain_delay: Duration::from_millis(5000),
            },
            limits: Limits {
                max_header_bytes: 65536,
                max_connections: 20_000,
                max_hops: 4,
            },
            tls: None,
            reload: Reload {
                watch: false,
                watch_interval: Duration::from_millis(1000),
            },
            runtime: RuntimeSettings {
                mode: RuntimeMode::PerCore,
                workers: 0,
            },
            admin: Admin::default(),
            admission: Admission::default(),
            guard: Guard::default(),
            generation: "unknown".to_string(),
            readiness_on_skew: SkewPolicy::Report,
            trusted_peers: Vec::new(),
            origins: KeyOrigins::default(),
        }
    }
}

fn default_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if valid_node_id(&host) {
        host
    } else {
        "fleetgate".to_string()
    }
}

fn valid_node_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// A configuration problem: where, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `path/to/file.toml:LINE`, `path/to/file.toml`, or `environment variable FLEETGATE_X`.
    pub origin: String,
    /// The dotted key (`timeouts.connect`), empty when the whole file is at fault.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: error: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}: error: key `{}`: {}",
                self.origin, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Load the configuration: built-in defaults, then `path` (or `FLEETGATE_CONFIG` when
    /// `path` is `None`), then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os(env::CONFIG_FILE).map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        Config::load_with(path.as_deref(), &env::process)
    }

    /// [`Config::load`] with an explicit environment lookup (tests).
    pub fn load_with(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        match path {
            None => Config::from_toml("(defaults)", "", env),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    origin: name.clone(),
                    key: String::new(),
                    message: format!("cannot read the configuration file: {e}"),
                })?;
                let mut cfg = Config::from_toml(&name, &text, env)?;
                cfg.file = Some(p.to_path_buf());
                Ok(cfg)
            }
        }
    }

    /// Parse and validate the TOML `text` of the file `file_name`, applying `env`.
    /// `file_name` names the file in messages, and relative paths written in the file are
    /// resolved against its directory; relative paths from `env` or the defaults against
    /// the working directory.
    pub fn from_toml(
        file_name: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let written = Written::parse(text).map_err(|e| file::error(file_name, text, &e))?;
        let dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
        let mut draft = Draft::new();
        let mut tls_origin = None;
        for key in KEYS {
            let (origin, raw) = match env::first_set(env, key.env) {
                Some((var, value)) => (env::origin(var), Raw::Env(value)),
                None => match written.get(key) {
                    Some(v) => (
                        file::origin(file_name, text, v.span().start),
                        Raw::File(v.get_ref(), dir),
                    ),
                    None => continue,
                },
            };
            if let Err(message) = (key.set)(&mut draft, raw) {
                return Err(ConfigError {
                    origin,
                    key: key.name.to_string(),
                    message,
                });
            }
            if key.table() == "tls" && tls_origin.is_none() {
                tls_origin = Some(origin.clone());
            }
            draft.config.origins.record(key.name, origin);
        }
        draft.finish(tls_origin)
    }

    /// The configuration in the file format: every key, defaults included, top-level keys
    /// first and then one `[table]` each; an optional key that is not set is a comment.
    /// [`Config::from_toml`] reads it back to an equal configuration.
    pub fn to_toml(&self) -> String {
        file::render(self)
    }

    /// The keys that differ between `self`, the running configuration, and `new`, a
    /// reloaded one, but only take effect at start: `listen`, `admin_listen`, `role`,
    /// `node_id`, `tls` (switching TLS on or off; new cert/key paths or contents reload),
    /// `limits.max_connections`, `log_format`, `log_level` and `reload.watch`. Empty when
    /// `new` can replace `self` while serving.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let changed = [
            ("listen", self.listen != new.listen),
            ("admin_listen", self.admin_listen != new.admin_listen),
            ("role", self.role != new.role),
            ("node_id", self.node_id != new.node_id),
            ("tls", self.tls.is_some() != new.tls.is_some()),
            (
                "limits.max_connections",
                self.limits.max_connections != new.limits.max_connections,
            ),
            ("log_format", self.log_format != new.log_format),
            ("log_level", self.log_level != new.log_level),
            ("reload.watch", self.reload.watch != new.reload.watch),
            ("runtime.mode", self.runtime.mode != new.runtime.mode),
            (
                "runtime.workers",
                self.runtime.workers != new.runtime.workers,
            ),
        ];
        changed
            .into_iter()
            .filter_map(|(key, differs)| differs.then_some(key))
            .collect()
    }

    /// Where `key` was set, for a message about it: `file:line`, `environment variable
    /// X`, or (set in code, or not set) the configuration file.
    pub fn key_origin(&self, key: &str) -> String {
        match self.origins.get(key) {
            Some(origin) => origin.to_string(),
            None => self.origin(),
        }
    }

    /// The configuration file for messages (`(defaults)` when none).
    pub fn origin(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "(defaults)".to_string(),
        }
    }
}

/// The admin token: the content of `admin.token_file` without surrounding whitespace, or
/// `None` when no token file is configured. An unreadable or empty file is an error (key
/// `admin.token_file`) naming the resolved path; the token itself never appears in an
/// error.
pub fn read_admin_token(config: &Config) -> Result<Option<String>, ConfigError> {
    let Some(path) = &config.admin.token_file else {
        return Ok(None);
    };
    let error = |message: String| ConfigError {
        origin: config.origin(),
        key: "admin.token_file".to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        error(format!(
            "cannot read the admin token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(error(format!(
            "expected an admin token in {}, got an empty file",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
}

#[cfg(test)]
mod tests;
