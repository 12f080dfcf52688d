//! Typed configuration: the TOML file, `FLEETGATE_*` environment overrides, and
//! validation into one [`Config`].
//!
//! Every key has a built-in default, may be set in the file, and may be overridden by an
//! environment variable (environment wins). Anything invalid — an unknown key, a value of
//! the wrong type or out of range — is one [`ConfigError`] that names where the value came
//! from (`file:line` or the environment variable), the key, and what was expected; the
//! CLI prints it and exits with 78 (`EX_CONFIG`). Relative paths (`routes`, `tls.cert`,
//! `tls.key`) are resolved against the working directory of the process.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Exit code for configuration errors (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// The role of the replica this fleetgate fronts (DESIGN.md §4).
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

/// One upstream as configured: `http://host:port`. A host that is not an IP literal is
/// resolved with the system resolver and re-resolved every `upstreams.dns_refresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
}

impl UpstreamUrl {
    /// Parse `http://host[:port][/]`.
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        let expected =
            || format!("expected an upstream URL like \"http://127.0.0.1:3000\", got {s:?}");
        let rest = s.strip_prefix("http://").ok_or_else(|| {
            if s.starts_with("https://") {
                format!("https upstreams are not supported (plain http only), got {s:?}")
            } else {
                expected()
            }
        })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(expected());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(expected)?;
            let port = match after {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(expected)?,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| expected())?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(expected());
        }
        Ok(UpstreamUrl { host, port })
    }

    /// The IP address when the host is a literal (no DNS needed).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// The fleet pool; in roles ide/worker/all this is the local application.
    pub fleet: Vec<UpstreamUrl>,
    /// The ide upstream (role serve only).
    pub ide: Option<UpstreamUrl>,
    /// How often DNS names are re-resolved.
    pub dns_refresh: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub header_read: Duration,
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
}

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
                fleet: vec![UpstreamUrl {
                    host: "127.0.0.1".into(),
                    port: 3000,
                }],
                ide: None,
                dns_refresh: Duration::from_millis(5000),
            },
            timeouts: Timeouts {
                connect: Duration::from_millis(3000),
                first_byte: Duration::from_millis(60_000),
                idle: Duration::from_millis(120_000),
                header_read: Duration::from_millis(10_000),
                shutdown: Duration::from_millis(30_000),
                drain_delay: Duration::from_millis(5000),
            },
            limits: Limits {
                max_header_bytes: 65536,
                max_connections: 20_000,
                max_hops: 4,
            },
            tls: None,
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

// ---------------------------------------------------------------------------------------
// The file as written: every leaf keeps its span so messages can name the line.

type Val = Option<Spanned<toml::Value>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node_id: Val,
    role: Val,
    listen: Val,
    admin_listen: Val,
    routes: Val,
    log_format: Val,
    log_level: Val,
    access_log: Val,
    response_stamps: Val,
    allow_encoded_slash: Val,
    #[serde(default)]
    upstreams: RawUpstreams,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstreams {
    fleet: Val,
    ide: Val,
    dns_refresh: Val,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Val,
    first_byte: Val,
    idle: Val,
    header_read: Val,
    shutdown: Val,
    drain_delay: Val,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Val,
    max_connections: Val,
    max_hops: Val,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Val,
    key: Val,
}

/// Where settings come from: the file's text (for line numbers) and an environment lookup.
struct Sources<'a> {
    file_name: String,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A value from either source, not yet typed.
enum Raw<'v> {
    File(&'v toml::Value),
    Env(String),
}

impl Sources<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn file_origin(&self, span: std::ops::Range<usize>) -> String {
        format!("{}:{}", self.file_name, self.line_of(span.start))
    }

    /// Resolve one key: the environment variable wins over the file; `parse` turns the raw
    /// value into `T` or says what was expected.
    fn get<T>(
        &self,
        key: &str,
        envs: &[&str],
        file: &Val,
        parse: impl Fn(Raw<'_>) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        for var in envs {
            if let Some(v) = (self.env)(var) {
                return parse(Raw::Env(v)).map(Some).map_err(|message| ConfigError {
                    origin: format!("environment variable {var}"),
                    key: key.to_string(),
                    message,
                });
            }
        }
        match file {
            None => Ok(None),
            Some(sp) => parse(Raw::File(sp.get_ref()))
                .map(Some)
                .map_err(|message| ConfigError {
                    origin: self.file_origin(sp.span()),
                    key: key.to_string(),
                    message,
                }),
        }
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn string(raw: Raw<'_>, what: &str) -> Result<String, String> {
    match raw {
        Raw::Env(s) => Ok(s),
        Raw::File(toml::Value::String(s)) => Ok(s.clone()),
        Raw::File(v) => Err(format!("expected {what} (a string), got {}", describe(v))),
    }
}

fn boolean(raw: Raw<'_>) -> Result<bool, String> {
    match raw {
        Raw::Env(s) => match s.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(format!("expected true or false, got {other:?}")),
        },
        Raw::File(toml::Value::Boolean(b)) => Ok(*b),
        Raw::File(v) => Err(format!("expected true or false, got {}", describe(v))),
    }
}

fn integer(raw: Raw<'_>, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let expected = || format!("expected an integer from {min} to {max}{unit}");
    let n: i64 = match raw {
        Raw::Env(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{}, got {s:?}", expected()))?,
        Raw::File(toml::Value::Integer(i)) => *i,
        Raw::File(v) => return Err(format!("{}, got {}", expected(), describe(v))),
    };
    if n < min as i64 || (n as u64) > max {
        return Err(format!("{}, got {n}", expected()));
    }
    Ok(n as u64)
}

fn millis(raw: Raw<'_>, min: u64) -> Result<Duration, String> {
    integer(raw, min, 86_400_000, " (milliseconds)").map(Duration::from_millis)
}

fn socket_addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    let s = string(raw, "a socket address like \"0.0.0.0:8080\"")?;
    s.trim().parse().map_err(|_| {
        format!("expected a socket address like \"0.0.0.0:8080\" (IP:port), got {s:?}")
    })
}

fn upstream_list(raw: Raw<'_>) -> Result<Vec<UpstreamUrl>, String> {
    let items: Vec<String> = match raw {
        Raw::Env(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Raw::File(toml::Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected a list of upstream URLs (strings), got {}",
                    describe(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Raw::File(toml::Value::String(s)) => vec![s.clone()],
        Raw::File(v) => {
            return Err(format!(
                "expected a list of upstream URLs like [\"http://127.0.0.1:3000\"], got {}",
                describe(v)
            ))
        }
    };
    if items.is_empty() {
        return Err("expected at least one upstream URL, got an empty list".into());
    }
    let list = items
        .iter()
        .map(|s| UpstreamUrl::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if list.len() > 1 && list.iter().any(|u| u.ip().is_none()) {
        return Err(
            "expected either several IP endpoints or exactly one DNS name, got a DNS name in a list of several"
                .into(),
        );
    }
    Ok(list)
}

impl Config {
    /// Load the configuration: built-in defaults, then `path` (or `FLEETGATE_CONFIG` when
    /// `path` is `None`), then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        let from_env = std::env::var_os("FLEETGATE_CONFIG").map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        Config::load_with(path.as_deref(), &env)
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

    /// Parse and validate TOML text named `file_name` (for messages), applying `env`.
    pub fn from_toml(
        file_name: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let src = Sources {
            file_name: file_name.to_string(),
            text,
            env,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(&src, &e))?;
        let mut c = Config::default();

        if let Some(v) = src.get("node_id", &["FLEETGATE_NODE_ID"], &raw.node_id, |r| {
            let s = string(r, "a node id")?;
            if valid_node_id(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "expected a node id of letters, digits, '.', '-', '_' or ':' (1-128 bytes), got {s:?}"
                ))
            }
        })? {
            c.node_id = v;
        }
        if let Some(v) = src.get("role", &["FLEETGATE_ROLE"], &raw.role, |r| {
            let s = string(r, "one of serve, ide, worker, all")?;
            Role::parse(s.trim())
                .ok_or_else(|| format!("expected one of serve, ide, worker, all, got {s:?}"))
        })? {
            c.role = v;
        }
        if let Some(v) = src.get("listen", &["FLEETGATE_LISTEN"], &raw.listen, socket_addr)? {
            c.listen = v;
        }
        if let Some(v) = src.get(
            "admin_listen",
            &["FLEETGATE_ADMIN_LISTEN"],
            &raw.admin_listen,
            socket_addr,
        )? {
            c.admin_listen = v;
        }
        if let Some(v) = src.get("routes", &["FLEETGATE_ROUTES"], &raw.routes, |r| {
            let s = string(r, "a directory path")?;
            if s.is_empty() {
                Err("expected a directory path, got an empty string".into())
            } else {
                Ok(PathBuf::from(s))
            }
        })? {
            c.routes = v;
        }
        if let Some(v) = src.get(
            "log_format",
            &["FLEETGATE_LOG_FORMAT"],
            &raw.log_format,
            |r| match string(r, "human or json")?.as_str() {
                "human" => Ok(LogFormat::Human),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("expected human or json, got {other:?}")),
            },
        )? {
            c.log_format = v;
        }
        if let Some(v) = src.get("log_level", &["FLEETGATE_LOG_LEVEL"], &raw.log_level, |r| {
            let s = string(r, "a log level")?;
            match s.as_str() {
                "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(s),
                _ => Err(format!(
                    "expected one of error, warn, info, debug, trace, off, got {s:?}"
                )),
            }
        })? {
            c.log_level = v;
        }
        if let Some(v) = src.get(
            "access_log",
            &["FLEETGATE_ACCESS_LOG"],
            &raw.access_log,
            boolean,
        )? {
            c.access_log = v;
        }
        if let Some(v) = src.get(
            "response_stamps",
            &["FLEETGATE_RESPONSE_STAMPS"],
            &raw.response_stamps,
            boolean,
        )? {
            c.response_stamps = v;
        }
        if let Some(v) = src.get(
            "allow_encoded_slash",
            &["FLEETGATE_ALLOW_ENCODED_SLASH"],
            &raw.allow_encoded_slash,
            boolean,
        )? {
            c.allow_encoded_slash = v;
        }

        let u = &raw.upstreams;
        if let Some(v) = src.get(
            "upstreams.fleet",
            &["FLEETGATE_FLEET_UPSTREAMS", "FLEETGATE_UPSTREAMS_FLEET"],
            &u.fleet,
            upstream_list,
        )? {
            c.upstreams.fleet = v;
        }
        if let Some(v) = src.get(
            "upstreams.ide",
            &["FLEETGATE_IDE_UPSTREAM", "FLEETGATE_UPSTREAMS_IDE"],
            &u.ide,
            |r| {
                let s = string(r, "an upstream URL")?;
                if s.trim().is_empty() {
                    Ok(None)
                } else {
                    UpstreamUrl::parse(s.trim()).map(Some)
                }
            },
        )? {
            c.upstreams.ide = v;
        }
        if let Some(v) = src.get(
            "upstreams.dns_refresh",
            &["FLEETGATE_UPSTREAMS_DNS_REFRESH"],
            &u.dns_refresh,
            |r| millis(r, 100),
        )? {
            c.upstreams.dns_refresh = v;
        }

        let t = &raw.timeouts;
        let tm = &mut c.timeouts;
        for (key, env, val, slot, min) in [
            (
                "timeouts.connect",
                "FLEETGATE_TIMEOUTS_CONNECT",
                &t.connect,
                &mut tm.connect,
                1,
            ),
            (
                "timeouts.first_byte",
                "FLEETGATE_TIMEOUTS_FIRST_BYTE",
                &t.first_byte,
                &mut tm.first_byte,
                1,
            ),
            (
                "timeouts.idle",
                "FLEETGATE_TIMEOUTS_IDLE",
                &t.idle,
                &mut tm.idle,
                1,
            ),
            (
                "timeouts.header_read",
                "FLEETGATE_TIMEOUTS_HEADER_READ",
                &t.header_read,
                &mut tm.header_read,
                1,
            ),
            (
                "timeouts.shutdown",
                "FLEETGATE_TIMEOUTS_SHUTDOWN",
                &t.shutdown,
                &mut tm.shutdown,
                0,
            ),
            (
                "timeouts.drain_delay",
                "FLEETGATE_TIMEOUTS_DRAIN_DELAY",
                &t.drain_delay,
                &mut tm.drain_delay,
                0,
            ),
        ] {
            if let Some(v) = src.get(key, &[env], val, |r| millis(r, min))? {
                *slot = v;
            }
        }

        let l = &raw.limits;
        if let Some(v) = src.get(
            "limits.max_header_bytes",
            &["FLEETGATE_LIMITS_MAX_HEADER_BYTES"],
            &l.max_header_bytes,
            |r| integer(r, 8192, 1 << 20, " (bytes)"),
        )? {
            c.limits.max_header_bytes = v as usize;
        }
        if let Some(v) = src.get(
            "limits.max_connections",
            &["FLEETGATE_LIMITS_MAX_CONNECTIONS"],
            &l.max_connections,
            |r| integer(r, 1, 1_000_000, ""),
        )? {
            c.limits.max_connections = v as usize;
        }
        if let Some(v) = src.get(
            "limits.max_hops",
            &["FLEETGATE_LIMITS_MAX_HOPS"],
            &l.max_hops,
            |r| integer(r, 1, 64, ""),
        )? {
            c.limits.max_hops = v as usize;
        }

        let empty = RawTls::default();
        let tls = raw.tls.as_ref().map(|s| s.get_ref()).unwrap_or(&empty);
        let path_of = |r: Raw<'_>| {
            let s = string(r, "a PEM file path")?;
            if s.is_empty() {
                Err("expected a PEM file path, got an empty string".to_string())
            } else {
                Ok(PathBuf::from(s))
            }
        };
        let cert = src.get("tls.cert", &["FLEETGATE_TLS_CERT"], &tls.cert, path_of)?;
        let key = src.get("tls.key", &["FLEETGATE_TLS_KEY"], &tls.key, path_of)?;
        c.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (cert, _) => {
                let missing = if cert.is_none() {
                    "tls.cert"
                } else {
                    "tls.key"
                };
                let origin = match &raw.tls {
                    Some(sp) => src.file_origin(sp.span()),
                    None => "environment".to_string(),
                };
                return Err(ConfigError {
                    origin,
                    key: missing.to_string(),
                    message: "expected both tls.cert and tls.key (PEM files), one is missing"
                        .to_string(),
                });
            }
        };
        Ok(c)
    }

    /// The configuration file for messages (`(defaults)` when none).
    pub fn origin(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "(defaults)".to_string(),
        }
    }
}

/// Turn a TOML syntax or shape error into a [`ConfigError`] naming line and key.
fn toml_error(src: &Sources<'_>, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    let (origin, key) = match e.span() {
        Some(span) => {
            let key = key_at(src.text, span.start);
            (src.file_origin(span), key)
        }
        None => (src.file_name.clone(), String::new()),
    };
    let message = if let Some(rest) = msg.strip_prefix("unknown field ") {
        format!("unknown key {rest}")
    } else {
        msg
    };
    ConfigError {
        origin,
        key,
        message,
    }
}

/// The dotted key written at `offset`: the enclosing `[table]` plus the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match table {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}

/// `fleetgate check [--config FILE]`: validate the configuration, the TLS files and the
/// manifest without serving. Prints one line per problem; returns the exit code.
pub fn check_main(config: Option<&Path>) -> i32 {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(Err(e)) = cfg
        .tls
        .as_ref()
        .map(|f| crate::tls::load_server_config(f, &cfg.origin()))
    {
        eprintln!("{e}");
        return EXIT_CONFIG;
    }
    match crate::manifest::Manifest::load_dir(&cfg.routes) {
        Ok(m) => {
            for w in m.warnings() {
                eprintln!("{w}");
            }
            println!(
                "ok: {} (role {}, node {}), manifest {} ({} rules, digest {})",
                cfg.origin(),
                cfg.role,
                cfg.node_id,
                cfg.routes.display(),
                m.rules().len(),
                m.digest()
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_CONFIG
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml("f.toml", text, &|_| None)
    }

    #[test]
    fn defaults_without_file() {
        let c = Config::load_with(None, &|_| None).unwrap();
        assert_eq!(c.role, Role::Serve);
        assert_eq!(c.limits.max_hops, 4);
        assert_eq!(c.upstreams.fleet[0].port, 3000);
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
node_id = "serve-1"
role = "worker"
listen = "127.0.0.1:8080"
[upstreams]
fleet = ["http://10.0.0.1:3000", "http://10.0.0.2:3000"]
ide = "http://ide.internal:3000"
[timeouts]
connect = 100
[limits]
max_hops = 2
"#,
        )
        .unwrap();
        assert_eq!(c.role, Role::Worker);
        assert_eq!(c.upstreams.fleet.len(), 2);
        assert_eq!(c.upstreams.ide.as_ref().unwrap().host, "ide.internal");
        assert_eq!(c.timeouts.connect, Duration::from_millis(100));
        assert_eq!(c.limits.max_hops, 2);
    }

    #[test]
    fn allow_encoded_slash_from_file_and_environment() {
        assert!(!parse("").unwrap().allow_encoded_slash);
        assert!(
            parse("allow_encoded_slash = true\n")
                .unwrap()
                .allow_encoded_slash
        );
        let env = |k: &str| (k == "FLEETGATE_ALLOW_ENCODED_SLASH").then(|| "yes".to_string());
        assert!(Config::load_with(None, &env).unwrap().allow_encoded_slash);
        let e = parse("allow_encoded_slash = \"maybe\"\n").unwrap_err();
        assert_eq!(e.key, "allow_encoded_slash");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse("role = \"serve\"\n[timeouts]\nconect = 5\n").unwrap_err();
        assert_eq!(e.origin, "f.toml:3");
        assert_eq!(e.key, "timeouts.conect");
        assert!(e.message.contains("unknown key"), "{e}");
    }

    #[test]
    fn bad_value_names_line_key_and_expectation() {
        let e = parse("\n\nlisten = \"nope\"\n").unwrap_err();
        assert_eq!(e.origin, "f.toml:3");
        assert_eq!(e.key, "listen");
        assert!(e.to_string().contains("expected a socket address"), "{e}");
        let e = parse("[limits]\nmax_hops = -1\n").unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("f.toml:2", "limits.max_hops")
        );
        let e = parse("role = \"edge\"").unwrap_err();
        assert!(e.to_string().contains("serve, ide, worker, all"));
    }

    #[test]
    fn environment_wins_and_is_named() {
        let env = |k: &str| match k {
            "FLEETGATE_ROLE" => Some("ide".to_string()),
            "FLEETGATE_FLEET_UPSTREAMS" => Some("http://127.0.0.1:1, http://127.0.0.1:2".into()),
            _ => None,
        };
        let c = Config::from_toml("f.toml", "role = \"serve\"", &env).unwrap();
        assert_eq!(c.role, Role::Ide);
        assert_eq!(c.upstreams.fleet.len(), 2);
        let env = |k: &str| (k == "FLEETGATE_LISTEN").then(|| "x".to_string());
        let e = Config::from_toml("f.toml", "", &env).unwrap_err();
        assert_eq!(e.origin, "environment variable FLEETGATE_LISTEN");
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            UpstreamUrl::parse("http://[::1]:8080/").unwrap(),
            UpstreamUrl {
                host: "::1".into(),
                port: 8080
            }
        );
        assert!(UpstreamUrl::parse("https://x:1").is_err());
        assert!(UpstreamUrl::parse("http://x:1/path").is_err());
        assert!(parse("[upstreams]\nfleet = [\"http://a:1\", \"http://b:1\"]").is_err());
    }

    #[test]
    fn tls_needs_both_files() {
        let e = parse("[tls]\ncert = \"c.pem\"\n").unwrap_err();
        assert_eq!(e.key, "tls.key");
    }
}
