//! Logging: `tracing` with a human or JSON formatter, the level from `RUST_LOG` or the
//! config's `log_level`, and the access log (one event per request, target
//! `fleetgate::access`, emitted when the response body ends so bytes and duration are known).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber once. Later calls (tests start many servers) do nothing.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        // The access line has its own `target` field (local|fleet|ide); JSON lines carry no
        // tracing target, and access lines are told apart by `"message": "access"`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .try_init(),
        LogFormat::Human => builder.with_target(true).try_init(),
    };
}

/// Everything the access log line says about one request.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `x-request-id` (set by fleetgate when the client sent none).
    pub request_id: &'a str,
    pub class: &'a str,
    pub rule_file: &'a str,
    pub rule_line: u32,
    pub target: &'a str,
    /// The ide was unreachable and a degrade rule served it locally.
    pub degraded: bool,
    /// `global`, `tenant` or `queue-timeout` when admission control shed it; `-` otherwise.
    pub shed: &'a str,
    pub upstream: Option<std::net::SocketAddr>,
    pub status: u16,
    pub duration: std::time::Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tenant: &'a str,
    /// `false` when the response body did not end normally (client gone, upstream reset).
    pub complete: bool,
}

/// Emit one access-log event.
pub fn access(r: &AccessRecord<'_>) {
    let upstream = tracing::field::display(OptAddr(r.upstream));
    tracing::info!(
        target: "fleetgate::access",
        method = r.method,
        path = r.path,
        request_id = r.request_id,
        class = r.class,
        rule_file = r.rule_file,
        rule_line = r.rule_line,
        target = r.target,
        degraded = r.degraded,
        shed = r.shed,
        upstream = upstream,
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        tenant = r.tenant,
        complete = r.complete,
        "access"
    );
}

struct OptAddr(Option<std::net::SocketAddr>);

impl std::fmt::Display for OptAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}
