//! The key table: every configuration key, once — its dotted name as written in the file,
//! the environment variables that override it, how a value is validated (or what was
//! expected), and where it lands in [`Config`]. Reading the file, applying the
//! environment and printing the effective configuration all walk this table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    valid_node_id, Config, ConfigError, LogFormat, Role, RuntimeMode, SkewPolicy, TlsFiles,
    UnlistedWrites, UpstreamUrl,
};

/// A value as found, not yet typed.
pub(super) enum Raw<'v> {
    /// Written in the file, whose directory is given (relative paths resolve against it).
    File(&'v toml::Value, &'v Path),
    /// From an environment variable (relative paths resolve against the working
    /// directory).
    Env(String),
}

/// The configuration while the keys are applied: `tls.cert` and `tls.key` (and
/// `upstreams.client_cert` and `upstreams.client_key`) become one [`TlsFiles`] only once
/// both are known.
pub(super) struct Draft {
    pub config: Config,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// One configuration key.
pub(super) struct Key {
    /// The dotted name: `limits.max_hops`. The part before the dot is its table.
    pub name: &'static str,
    /// The environment variables that override it; the first one set wins.
    pub env: &'static [&'static str],
    /// Validate a raw value and store it, or say what was expected.
    pub set: fn(&mut Draft, Raw<'_>) -> Result<(), String>,
    /// The effective value as TOML; `None` when an optional key is not set.
    pub get: fn(&Config) -> Option<toml::Value>,
}

impl Key {
    /// The table the key is written in (`""` at the top level).
    pub fn table(&self) -> &'static str {
        self.name.split_once('.').map_or("", |(table, _)| table)
    }

    /// The name within its table.
    pub fn leaf(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(_, leaf)| leaf)
    }
}

/// Every key, grouped by table, in the order of the documentation.
pub(super) const KEYS: &[Key] = &[
    Key {
        name: "node_id",
        env: &["FLEETGATE_NODE_ID"],
        set: |d, r| put(&mut d.config.node_id, node_id(r)),
        get: |c| text(&c.node_id),
    },
    Key {
        name: "role",
        env: &["FLEETGATE_ROLE"],
        set: |d, r| put(&mut d.config.role, role(r)),
        get: |c| text(c.role.as_str()),
    },
    Key {
        name: "listen",
        env: &["FLEETGATE_LISTEN"],
        set: |d, r| put(&mut d.config.listen, socket_addr(r)),
        get: |c| text(&c.listen.to_string()),
    },
    Key {
        name: "admin_listen",
        env: &["FLEETGATE_ADMIN_LISTEN"],
        set: |d, r| put(&mut d.config.admin_listen, socket_addr(r)),
        get: |c| text(&c.admin_listen.to_string()),
    },
    Key {
        name: "routes",
        env: &["FLEETGATE_ROUTES"],
        set: |d, r| put(&mut d.config.routes, path(r, "a directory path")),
        get: |c| path_text(&c.routes),
    },
    Key {
        name: "log_format",
        env: &["FLEETGATE_LOG_FORMAT"],
        set: |d, r| put(&mut d.config.log_format, log_format(r)),
        get: |c| text(c.log_format.as_str()),
    },
    Key {
        name: "log_level",
        env: &["FLEETGATE_LOG_LEVEL"],
        set: |d, r| put(&mut d.config.log_level, log_level(r)),
        get: |c| text(&c.log_level),
    },
    Key {
        name: "access_log",
        env: &["FLEETGATE_ACCESS_LOG"],
        set: |d, r| put(&mut d.config.access_log, boolean(r)),
        get: |c| flag(c.access_log),
    },
    Key {
        name: "response_stamps",
        env: &["FLEETGATE_RESPONSE_STAMPS"],
        set: |d, r| put(&mut d.config.response_stamps, boolean(r)),
        get: |c| flag(c.response_stamps),
    },
    Key {
        name: "allow_encoded_slash",
        env: &["FLEETGATE_ALLOW_ENCODED_SLASH"],
        set: |d, r| put(&mut d.config.allow_encoded_slash, boolean(r)),
        get: |c| flag(c.allow_encoded_slash),
    },
    Key {
        name: "generation",
        env: &["FLEETGATE_GENERATION"],
        set: |d, r| put(&mut d.config.generation, generation(r)),
        get: |c| text(&c.generation),
    },
    Key {
        name: "readiness_on_skew",
        env: &["FLEETGATE_READINESS_ON_SKEW"],
        set: |d, r| put(&mut d.config.readiness_on_skew, skew_policy(r)),
        get: |c| text(c.readiness_on_skew.as_str()),
    },
    Key {
        name: "trusted_peers",
        env: &["FLEETGATE_TRUSTED_PEERS"],
        set: |d, r| put(&mut d.config.trusted_peers, cidr_list(r)),
        get: |c| {
            Some(toml::Value::Array(
                c.trusted_peers
                    .iter()
                    .map(|n| toml::Value::String(n.to_string()))
                    .collect(),
            ))
        },
    },
    Key {
        name: "upstreams.fleet",
        env: &["FLEETGATE_FLEET_UPSTREAMS", "FLEETGATE_UPSTREAMS_FLEET"],
        set: |d, r| put(&mut d.config.upstreams.fleet, upstream_list(r)),
        get: |c| {
            let urls = c.upstreams.fleet.iter().map(|u| u.to_string().into());
            Some(toml::Value::Array(urls.collect()))
        },
    },
    Key {
        name: "upstreams.ide",
        env: &["FLEETGATE_IDE_UPSTREAM", "FLEETGATE_UPSTREAMS_IDE"],
        set: |d, r| put(&mut d.config.upstreams.ide, optional_upstream(r)),
        get: |c| c.upstreams.ide.as_ref().and_then(|u| text(&u.to_string())),
    },
    Key {
        name: "upstreams.dns_refresh",
        env: &["FLEETGATE_UPSTREAMS_DNS_REFRESH"],
        set: |d, r| put(&mut d.config.upstreams.dns_refresh, millis(r, 100)),
        get: |c| ms(c.upstreams.dns_refresh),
    },
    Key {
        name: "upstreams.max_idle_per_endpoint",
        env: &["FLEETGATE_UPSTREAMS_MAX_IDLE_PER_ENDPOINT"],
        set: |d, r| {
            put(
                &mut d.config.upstreams.max_idle_per_endpoint,
                size(r, 0, 100_000, ""),
            )
        },
        get: |c| int(c.upstreams.max_idle_per_endpoint),
    },
    Key {
        name: "upstreams.ca_file",
        env: &["FLEETGATE_UPSTREAMS_CA_FILE"],
        set: |d, r| {
            put(
                &mut d.config.upstreams.ca_file,
                path(r, "a PEM file path").map(Some),
            )
        },
        get: |c| c.upstreams.ca_file.as_deref().and_then(path_text),
    },
    Key {
        name: "upstreams.client_cert",
        env: &["FLEETGATE_UPSTREAMS_CLIENT_CERT"],
        set: |d, r| put(&mut d.client_cert, path(r, "a PEM file path").map(Some)),
        get: |c| {
            let files = c.upstreams.client_auth.as_ref();
            files.and_then(|t| path_text(&t.cert))
        },
    },
    Key {
        name: "upstreams.client_key",
        env: &["FLEETGATE_UPSTREAMS_CLIENT_KEY"],
        set: |d, r| put(&mut d.client_key, path(r, "a PEM file path").map(Some)),
        get: |c| {
            let files = c.upstreams.client_auth.as_ref();
            files.and_then(|t| path_text(&t.key))
        },
    },
    Key {
        name: "timeouts.connect",
        env: &["FLEETGATE_TIMEOUTS_CONNECT"],
        set: |d, r| put(&mut d.config.timeouts.connect, millis(r, 1)),
        get: |c| ms(c.timeouts.connect),
    },
    Key {
        name: "timeouts.first_byte",
        env: &["FLEETGATE_TIMEOUTS_FIRST_BYTE"],
        set: |d, r| put(&mut d.config.timeouts.first_byte, millis(r, 1)),
        get: |c| ms(c.timeouts.first_byte),
    },
    Key {
        name: "timeouts.idle",
        env: &["FLEETGATE_TIMEOUTS_IDLE"],
        set: |d, r| put(&mut d.config.timeouts.idle, millis(r, 1)),
        get: |c| ms(c.timeouts.idle),
    },
    Key {
        name: "timeouts.send",
        env: &["FLEETGATE_TIMEOUTS_SEND"],
        set: |d, r| put(&mut d.config.timeouts.send, millis(r, 1)),
        get: |c| ms(c.timeouts.send),
    },
    Key {
        name: "timeouts.header_read",
        env: &["FLEETGATE_TIMEOUTS_HEADER_READ"],
        set: |d, r| put(&mut d.config.timeouts.header_read, millis(r, 1)),
        get: |c| ms(c.timeouts.header_read),
    },
    Key {
        name: "timeouts.park_after",
        env: &["FLEETGATE_TIMEOUTS_PARK_AFTER"],
        set: |d, r| put(&mut d.config.timeouts.park_after, millis(r, 0)),
        get: |c| ms(c.timeouts.park_after),
    },
    Key {
        name: "timeouts.shutdown",
        env: &["FLEETGATE_TIMEOUTS_SHUTDOWN"],
        set: |d, r| put(&mut d.config.timeouts.shutdown, millis(r, 0)),
        get: |c| ms(c.timeouts.shutdown),
    },
    Key {
        name: "timeouts.drain_delay",
        env: &["FLEETGATE_TIMEOUTS_DRAIN_DELAY"],
        set: |d, r| put(&mut d.config.timeouts.drain_delay, millis(r, 0)),
        get: |c| ms(c.timeouts.drain_delay),
    },
    Key {
        name: "limits.max_header_bytes",
        env: &["FLEETGATE_LIMITS_MAX_HEADER_BYTES"],
        set: |d, r| {
            put(
                &mut d.config.limits.max_header_bytes,
                size(r, 8192, 1 << 20, " (bytes)"),
            )
        },
        get: |c| int(c.limits.max_header_bytes),
    },
    Key {
        name: "limits.max_connections",
        env: &["FLEETGATE_LIMITS_MAX_CONNECTIONS"],
        set: |d, r| {
            put(
                &mut d.config.limits.max_connections,
                size(r, 1, 1_000_000, ""),
            )
        },
        get: |c| int(c.limits.max_connections),
    },
    Key {
        name: "limits.max_hops",
        env: &["FLEETGATE_LIMITS_MAX_HOPS"],
        set: |d, r| put(&mut d.config.limits.max_hops, size(r, 1, 64, "")),
        get: |c| int(c.limits.max_hops),
    },
    Key {
        name: "tls.cert",
        env: &["FLEETGATE_TLS_CERT"],
        set: |d, r| put(&mut d.tls_cert, path(r, "a PEM file path").map(Some)),
        get: |c| c.tls.as_ref().and_then(|t| path_text(&t.cert)),
    },
    Key {
        name: "tls.key",
        env: &["FLEETGATE_TLS_KEY"],
        set: |d, r| put(&mut d.tls_key, path(r, "a PEM file path").map(Some)),
        get: |c| c.tls.as_ref().and_then(|t| path_text(&t.key)),
    },
    Key {
        name: "reload.watch",
        env: &["FLEETGATE_RELOAD_WATCH"],
        set: |d, r| put(&mut d.config.reload.watch, boolean(r)),
        get: |c| flag(c.reload.watch),
    },
    Key {
        name: "reload.watch_interval",
        env: &["FLEETGATE_RELOAD_WATCH_INTERVAL"],
        set: |d, r| put(&mut d.config.reload.watch_interval, millis(r, 100)),
        get: |c| ms(c.reload.watch_interval),
    },
    Key {
        name: "runtime.mode",
        env: &["FLEETGATE_RUNTIME_MODE"],
        set: |d, r| put(&mut d.config.runtime.mode, runtime_mode(r)),
        get: |c| text(c.runtime.mode.as_str()),
    },
    Key {
        name: "runtime.workers",
        env: &["FLEETGATE_RUNTIME_WORKERS"],
        set: |d, r| put(&mut d.config.runtime.workers, size(r, 0, 1024, "")),
        get: |c| int(c.runtime.workers),
    },
    Key {
        name: "admin.token_file",
        env: &["FLEETGATE_ADMIN_TOKEN_FILE"],
        set: |d, r| {
            put(
                &mut d.config.admin.token_file,
                path(r, "a file path").map(Some),
            )
        },
        get: |c| c.admin.token_file.as_deref().and_then(path_text),
    },
    Key {
        name: "admission.max_inflight",
        env: &["FLEETGATE_ADMISSION_MAX_INFLIGHT"],
        set: |d, r| {
            put(
                &mut d.config.admission.max_inflight,
                size(r, 0, 1_000_000, ""),
            )
        },
        get: |c| int(c.admission.max_inflight),
    },
    Key {
        name: "admission.ide_max_inflight",
        env: &["FLEETGATE_ADMISSION_IDE_MAX_INFLIGHT"],
        set: |d, r| {
            put(
                &mut d.config.admission.ide_max_inflight,
                size(r, 0, 1_000_000, ""),
            )
        },
        get: |c| int(c.admission.ide_max_inflight),
    },
    Key {
        name: "admission.tenant_header",
        env: &["FLEETGATE_ADMISSION_TENANT_HEADER"],
        set: |d, r| put(&mut d.config.admission.tenant_header, header_name(r)),
        get: |c| c.admission.tenant_header.as_deref().and_then(text),
    },
    Key {
        name: "admission.queue_per_tenant",
        env: &["FLEETGATE_ADMISSION_QUEUE_PER_TENANT"],
        set: |d, r| {
            put(
                &mut d.config.admission.queue_per_tenant,
                size(r, 0, 100_000, ""),
            )
        },
        get: |c| int(c.admission.queue_per_tenant),
    },
    Key {
        name: "admission.queue_timeout",
        env: &["FLEETGATE_ADMISSION_QUEUE_TIMEOUT"],
        set: |d, r| put(&mut d.config.admission.queue_timeout, millis(r, 0)),
        get: |c| ms(c.admission.queue_timeout),
    },
    Key {
        name: "admission.retry_after_min",
        env: &["FLEETGATE_ADMISSION_RETRY_AFTER_MIN"],
        set: |d, r| {
            put(
                &mut d.config.admission.retry_after_min,
                integer(r, 1, 3600, " (seconds)").map(|n| n as u32),
            )
        },
        get: |c| int(c.admission.retry_after_min as usize),
    },
    Key {
        name: "admission.retry_after_max",
        env: &["FLEETGATE_ADMISSION_RETRY_AFTER_MAX"],
        set: |d, r| {
            put(
                &mut d.config.admission.retry_after_max,
                integer(r, 1, 3600, " (seconds)").map(|n| n as u32),
            )
        },
        get: |c| int(c.admission.retry_after_max as usize),
    },
    Key {
        name: "admission.weights",
        env: &["FLEETGATE_ADMISSION_WEIGHTS"],
        set: |d, r| put(&mut d.config.admission.weights, weights(r)),
        get: |c| {
            let table: toml::map::Map<String, toml::Value> = c
                .admission
                .weights
                .iter()
                .map(|(t, w)| (t.clone(), toml::Value::Integer(i64::from(*w))))
                .collect();
            Some(toml::Value::Table(table))
        },
    },
    Key {
        name: "guard.unlisted_writes",
        env: &["FLEETGATE_GUARD_UNLISTED_WRITES"],
        set: |d, r| put(&mut d.config.guard.unlisted_writes, unlisted_writes(r)),
        get: |c| text(c.guard.unlisted_writes.as_str()),
    },
    Key {
        name: "guard.super_read_only",
        env: &[
            "FLEETGATE_SUPER_READ_ONLY",
            "FLEETGATE_GUARD_SUPER_READ_ONLY",
        ],
        set: |d, r| put(&mut d.config.guard.super_read_only, boolean(r)),
        get: |c| flag(c.guard.super_read_only),
    },
    Key {
        name: "guard.retry_after",
        env: &["FLEETGATE_GUARD_RETRY_AFTER"],
        set: |d, r| {
            put(
                &mut d.config.guard.retry_after,
                integer(r, 1, 3600, " (seconds)").map(|n| n as u32),
            )
        },
        get: |c| int(c.guard.retry_after as usize),
    },
];

impl Draft {
    /// The built-in defaults, their relative paths resolved against the working directory.
    pub fn new() -> Draft {
        let mut config = Config::default();
        config.routes = resolve(None, &config.routes);
        Draft {
            config,
            tls_cert: None,
            tls_key: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// The configuration, once every key has been applied. `tls_origin` names where the
    /// first `tls` key came from.
    pub fn finish(self, tls_origin: Option<String>) -> Result<Config, ConfigError> {
        let mut config = self.config;
        if config.readiness_on_skew == SkewPolicy::Fail && config.trusted_peers.is_empty() {
            return Err(ConfigError {
                origin: config.origin(),
                key: "readiness_on_skew".to_string(),
                message: "\"fail\" needs trusted_peers: otherwise any client could take this node out of rotation by sending another manifest digest".to_string(),
            });
        }
        let a = &config.admission;
        if a.retry_after_min > a.retry_after_max {
            return Err(ConfigError {
                origin: config.origin(),
                key: "admission.retry_after_max".to_string(),
                message: format!(
                    "expected at least retry_after_min ({}), got {}",
                    a.retry_after_min, a.retry_after_max
                ),
            });
        }
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (cert, _) => {
                let missing = if cert.is_none() {
                    "tls.cert"
                } else {
                    "tls.key"
                };
                return Err(ConfigError {
                    origin: tls_origin.unwrap_or_else(|| "environment".to_string()),
                    key: missing.to_string(),
                    message: "expected both tls.cert and tls.key (PEM files), one is missing"
                        .to_string(),
                });
            }
        };
        config.upstreams.client_auth = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (cert, _) => {
                let (set, missing) = if cert.is_none() {
                    ("upstreams.client_key", "upstreams.client_cert")
                } else {
                    ("upstreams.client_cert", "upstreams.client_key")
                };
                return Err(ConfigError {
                    origin: config.key_origin(set),
                    key: missing.to_string(),
                    message: format!(
                        "expected both upstreams.client_cert and upstreams.client_key (PEM files), only {set} is set"
                    ),
                });
            }
        };
        Ok(config)
    }
}

// ---------------------------------------------------------------------------------------
// Validation: each function turns a raw value into its type or says what was expected.

/// Store a validated value.
fn put<T>(slot: &mut T, value: Result<T, String>) -> Result<(), String> {
    *slot = value?;
    Ok(())
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
        Raw::File(toml::Value::String(s), _) => Ok(s.clone()),
        Raw::File(v, _) => Err(format!("expected {what} (a string), got {}", describe(v))),
    }
}

fn boolean(raw: Raw<'_>) -> Result<bool, String> {
    match raw {
        Raw::Env(s) => match s.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(format!("expected true or false, got {other:?}")),
        },
        Raw::File(toml::Value::Boolean(b), _) => Ok(*b),
        Raw::File(v, _) => Err(format!("expected true or false, got {}", describe(v))),
    }
}

fn integer(raw: Raw<'_>, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let expected = || format!("expected an integer from {min} to {max}{unit}");
    let n: i64 = match raw {
        Raw::Env(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{}, got {s:?}", expected()))?,
        Raw::File(toml::Value::Integer(i), _) => *i,
        Raw::File(v, _) => return Err(format!("{}, got {}", expected(), describe(v))),
    };
    if n < min as i64 || (n as u64) > max {
        return Err(format!("{}, got {n}", expected()));
    }
    Ok(n as u64)
}

fn size(raw: Raw<'_>, min: u64, max: u64, unit: &str) -> Result<usize, String> {
    integer(raw, min, max, unit).map(|n| n as usize)
}

fn millis(raw: Raw<'_>, min: u64) -> Result<Duration, String> {
    integer(raw, min, 86_400_000, " (milliseconds)").map(Duration::from_millis)
}

fn node_id(raw: Raw<'_>) -> Result<String, String> {
    let s = string(raw, "a node id")?;
    if valid_node_id(&s) {
        Ok(s)
    } else {
        Err(format!(
            "expected a node id of letters, digits, '.', '-', '_' or ':' (1-128 bytes), got {s:?}"
        ))
    }
}

fn role(raw: Raw<'_>) -> Result<Role, String> {
    let s = string(raw, "one of serve, ide, worker, all")?;
    Role::parse(s.trim())
        .ok_or_else(|| format!("expected one of serve, ide, worker, all, got {s:?}"))
}

fn generation(raw: Raw<'_>) -> Result<String, String> {
    let s = string(raw, "a generation like \"2026-11-30.3\"")?;
    let s = s.trim().to_string();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'+'));
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "expected a generation of letters, digits, '.', '-', '_', ':' or '+' (1-64 bytes), got {s:?}"
        ))
    }
}

fn skew_policy(raw: Raw<'_>) -> Result<SkewPolicy, String> {
    match string(raw, "report or fail")?.trim() {
        "report" => Ok(SkewPolicy::Report),
        "fail" => Ok(SkewPolicy::Fail),
        other => Err(format!("expected report or fail, got {other:?}")),
    }
}

/// A list of CIDRs (`["10.0.0.0/8", "fd00::/8"]`; comma-separated in the environment); a
/// bare address is a /32 (or /128).
fn cidr_list(raw: Raw<'_>) -> Result<Vec<ipnet::IpNet>, String> {
    const EXPECTED: &str = "expected a list of CIDRs like [\"10.0.0.0/8\"]";
    let items: Vec<String> = match raw {
        Raw::Env(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Raw::File(toml::Value::Array(a), _) => a
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!("{EXPECTED}, got {}", describe(other))),
            })
            .collect::<Result<_, _>>()?,
        Raw::File(v, _) => return Err(format!("{EXPECTED}, got {}", describe(v))),
    };
    items
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{EXPECTED}, got {s:?}"))
        })
        .collect()
}

fn unlisted_writes(raw: Raw<'_>) -> Result<UnlistedWrites, String> {
    match string(raw, "ide or refuse")?.trim() {
        "ide" => Ok(UnlistedWrites::Ide),
        "refuse" => Ok(UnlistedWrites::Refuse),
        other => Err(format!("expected ide or refuse, got {other:?}")),
    }
}

fn log_format(raw: Raw<'_>) -> Result<LogFormat, String> {
    match string(raw, "human or json")?.as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("expected human or json, got {other:?}")),
    }
}

fn runtime_mode(raw: Raw<'_>) -> Result<RuntimeMode, String> {
    match string(raw, "per-core or shared")?.as_str() {
        "per-core" => Ok(RuntimeMode::PerCore),
        "shared" => Ok(RuntimeMode::Shared),
        other => Err(format!("expected per-core or shared, got {other:?}")),
    }
}

fn log_level(raw: Raw<'_>) -> Result<String, String> {
    let s = string(raw, "a log level")?;
    match s.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(s),
        _ => Err(format!(
            "expected one of error, warn, info, debug, trace, off, got {s:?}"
        )),
    }
}

fn socket_addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    let s = string(raw, "a socket address like \"0.0.0.0:8080\"")?;
    s.trim().parse().map_err(|_| {
        format!("expected a socket address like \"0.0.0.0:8080\" (IP:port), got {s:?}")
    })
}

/// A file or directory path, resolved: against the directory of the file it is written
/// in, or against the working directory when it comes from the environment.
fn path(raw: Raw<'_>, what: &str) -> Result<PathBuf, String> {
    let base = match raw {
        Raw::File(_, dir) => Some(dir),
        Raw::Env(_) => None,
    };
    let s = string(raw, what)?;
    if s.is_empty() {
        Err(format!("expected {what}, got an empty string"))
    } else {
        Ok(resolve(base, Path::new(&s)))
    }
}

/// `p` made absolute against `base`, or against the working directory without one.
fn resolve(base: Option<&Path>, p: &Path) -> PathBuf {
    let joined = base.map_or_else(|| p.to_path_buf(), |dir| dir.join(p));
    std::path::absolute(&joined).unwrap_or(joined)
}

fn optional_upstream(raw: Raw<'_>) -> Result<Option<UpstreamUrl>, String> {
    let s = string(raw, "an upstream URL")?;
    if s.trim().is_empty() {
        Ok(None)
    } else {
        UpstreamUrl::parse(s.trim()).map(Some)
    }
}

fn upstream_list(raw: Raw<'_>) -> Result<Vec<UpstreamUrl>, String> {
    let items: Vec<String> = match raw {
        Raw::Env(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Raw::File(toml::Value::Array(a), _) => a
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected a list of upstream URLs (strings), got {}",
                    describe(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Raw::File(toml::Value::String(s), _) => vec![s.clone()],
        Raw::File(v, _) => {
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
    if list.iter().any(|u| u.tls != list[0].tls) {
        return Err(
            "expected every upstream of the list to use the same scheme, got both http and https"
                .into(),
        );
    }
    if list.len() > 1 && list.iter().any(|u| u.ip().is_none()) {
        return Err(
            "expected either several IP endpoints or exactly one DNS name, got a DNS name in a list of several"
                .into(),
        );
    }
    Ok(list)
}

/// A lower-case HTTP header name; an empty string unsets it.
fn header_name(raw: Raw<'_>) -> Result<Option<String>, String> {
    let s = string(raw, "a header name like \"x-tenant-id\"")?;
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Ok(None);
    }
    if http::HeaderName::from_bytes(s.as_bytes()).is_err() {
        return Err(format!(
            "expected a header name like \"x-tenant-id\", got {s:?}"
        ));
    }
    Ok(Some(s))
}

/// Tenant weights: a table `{ "tenant" = 4 }` in the file, `tenant=4,other=2` in the
/// environment; each weight from 1 to 1000.
fn weights(raw: Raw<'_>) -> Result<Vec<(String, u32)>, String> {
    const EXPECTED: &str =
        "expected tenant weights like { \"big-customer\" = 4 } (integers from 1 to 1000)";
    let pairs: Vec<(String, i64)> = match raw {
        Raw::Env(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (t, w) = p
                    .split_once('=')
                    .ok_or_else(|| format!("{EXPECTED}, got {p:?}"))?;
                let w = w
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{EXPECTED}, got {p:?}"))?;
                Ok((t.trim().to_string(), w))
            })
            .collect::<Result<_, String>>()?,
        Raw::File(toml::Value::Table(t), _) => t
            .iter()
            .map(|(k, v)| match v {
                toml::Value::Integer(w) => Ok((k.clone(), *w)),
                other => Err(format!("{EXPECTED}, got {} for {k:?}", describe(other))),
            })
            .collect::<Result<_, String>>()?,
        Raw::File(v, _) => return Err(format!("{EXPECTED}, got {}", describe(v))),
    };
    pairs
        .into_iter()
        .map(|(tenant, w)| {
            if tenant.is_empty() {
                return Err(format!("{EXPECTED}, got an empty tenant name"));
            }
            if !(1..=1000).contains(&w) {
                return Err(format!("{EXPECTED}, got {w} for {tenant:?}"));
            }
            Ok((tenant, w as u32))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Values as TOML, for printing the effective configuration.

fn text(s: &str) -> Option<toml::Value> {
    Some(toml::Value::String(s.to_string()))
}

fn path_text(p: &Path) -> Option<toml::Value> {
    text(&p.to_string_lossy())
}

fn flag(b: bool) -> Option<toml::Value> {
    Some(toml::Value::Boolean(b))
}

fn int(n: usize) -> Option<toml::Value> {
    Some(toml::Value::Integer(n as i64))
}

fn ms(d: Duration) -> Option<toml::Value> {
    Some(toml::Value::Integer(d.as_millis() as i64))
}
