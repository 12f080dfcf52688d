//! Logging: `tracing` with a human or JSON formatter, the level from `RUST_LOG` or the
//! config's `log_level`, and the access log (one event per request, target
//! `fleetgate::access`, emitted when the response body ends so bytes and duration are known).
//!
//! Lines go to stderr. Access lines are gathered and written in batches (when 32 KiB are
//! pending, and at least every 100 ms), so a request does not pay for a `write(2)` of its
//! own; any other event first writes what is pending and then itself, so lines keep their
//! order. [`flush`] writes what is pending (the process calls it before it exits).

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::config::LogFormat;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

const ACCESS_TARGET: &str = "fleetgate::access";
/// Pending access lines are written once they reach this size.
const BATCH_BYTES: usize = 32 * 1024;
/// ... or after this long.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::stderr().write_all(pending);
        pending.clear();
    }
}

/// Write the access lines not written yet.
pub fn flush() {
    write_out(&mut pending());
}

/// The writer of one event: batched (access lines) or direct (everything else).
pub enum LineWriter {
    Batched,
    Direct,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut p = pending();
        match self {
            LineWriter::Batched => {
                p.extend_from_slice(buf);
                if p.len() >= BATCH_BYTES {
                    write_out(&mut p);
                }
            }
            LineWriter::Direct => {
                write_out(&mut p);
                std::io::stderr().write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// stderr, with access lines batched.
struct StderrLines;

impl<'a> MakeWriter<'a> for StderrLines {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter::Direct
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        if meta.target() == ACCESS_TARGET {
            LineWriter::Batched
        } else {
            LineWriter::Direct
        }
    }
}

/// Install the global subscriber once. Later calls (tests start many servers) do nothing.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrLines)
        .with_ansi(ansi);
    let installed = match format {
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
    if installed.is_ok() {
        let _ = std::thread::Builder::new()
            .name("fleetgate-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    }
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
        target: ACCESS_TARGET,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_wait_for_a_batch_and_other_lines_write_them_first() {
        flush();
        LineWriter::Batched.write_all(b"access 1\n").unwrap();
        LineWriter::Batched.write_all(b"access 2\n").unwrap();
        assert_eq!(pending().as_slice(), b"access 1\naccess 2\n");
        // Any other event writes what is pending, then itself: nothing is left behind.
        LineWriter::Direct.write_all(b"warning\n").unwrap();
        assert!(pending().is_empty());
        // A full batch is written at once.
        let line = vec![b'x'; 1024];
        for _ in 0..BATCH_BYTES / 1024 {
            LineWriter::Batched.write_all(&line).unwrap();
        }
        assert!(pending().is_empty());
    }
}
