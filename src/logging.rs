//! Logging: `tracing` with a human or JSON formatter, the level from `RUST_LOG` or the
//! config's `log_level`, and the access log (one line per request, target
//! `fleetgate::access`, written when the response body ends so bytes and duration are known).
//!
//! Lines go to stderr. Access lines are gathered and written in batches (when 32 KiB are
//! pending, and at least every 100 ms), so a request does not pay for a `write(2)` of its
//! own; any other event first writes what is pending and then itself, so lines keep their
//! order. [`flush`] writes what is pending (the process calls it before it exits).
//!
//! With the JSON format, [`access`] does not go through `tracing`'s formatter: once the
//! filter says the line is wanted, it prints the line itself straight into the pending batch,
//! byte for byte what the JSON layer would print (the tests compare the two), without
//! allocating. The human format goes through `tracing`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Json, JsonFields};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};
use tracing_subscriber::EnvFilter;

const ACCESS_TARGET: &str = "fleetgate::access";
/// Pending access lines are written once they reach this size.
const BATCH_BYTES: usize = 32 * 1024;
/// ... or after this long.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The access lines not written yet, and the clock their timestamps are printed with.
struct Batch {
    lines: Vec<u8>,
    clock: Clock,
}

static PENDING: Mutex<Batch> = Mutex::new(Batch {
    lines: Vec::new(),
    clock: Clock::new(),
});

/// `init` installed the JSON formatter: [`access`] prints its lines itself.
static DIRECT_JSON: AtomicBool = AtomicBool::new(false);

fn pending() -> MutexGuard<'static, Batch> {
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
    write_out(&mut pending().lines);
}

/// The writer of one event: batched (access lines) or direct (everything else).
pub enum LineWriter {
    Batched,
    Direct,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut batch = pending();
        let p = &mut batch.lines;
        match self {
            LineWriter::Batched => {
                p.extend_from_slice(buf);
                if p.len() >= BATCH_BYTES {
                    write_out(p);
                }
            }
            LineWriter::Direct => {
                write_out(p);
                // An error is not passed on: tracing would report it with `eprintln!`,
                // which panics when stderr is gone (its reader closed the pipe), in
                // whichever task was logging (the SIGTERM handler, say). A log that cannot
                // be written is lost; the process goes on.
                let _ = std::io::stderr().write_all(buf);
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

/// The filter for `log_level` (when `RUST_LOG` is not set). rustls is held to errors: it
/// warns on every TLS connection whose client sends an IP address as its server name
/// (which many clients do), and any client could fill the log with those.
fn directives(level: &str) -> String {
    match level {
        "off" | "error" => level.to_string(),
        _ => format!("{level},rustls=error"),
    }
}

/// Install the global subscriber once. Later calls (tests start many servers) do nothing.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrLines)
        // tracing reports its own errors with `eprintln!`, which panics without a stderr.
        .log_internal_errors(false)
        .with_ansi(ansi);
    let installed = match format {
        // The access line has its own `target` field (local|fleet|ide); JSON lines carry no
        // tracing target, and access lines are told apart by `"message": "access"`.
        LogFormat::Json => json_layout(builder).try_init(),
        LogFormat::Human => builder.with_target(true).try_init(),
    };
    if installed.is_ok() {
        DIRECT_JSON.store(format == LogFormat::Json, Ordering::Relaxed);
        let _ = std::thread::Builder::new()
            .name("fleetgate-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    }
}

/// The JSON layout: one flat object a line, no tracing target, no span. [`json_line`] prints
/// access lines in the same layout.
fn json_layout<T, F, W>(
    builder: SubscriberBuilder<DefaultFields, Format<Full, T>, F, W>,
) -> SubscriberBuilder<JsonFields, Format<Json, T>, F, W> {
    builder
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
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

/// Write one access line, if the filter (`RUST_LOG` or `log_level`) lets `info` events of
/// `fleetgate::access` through.
pub fn access(r: &AccessRecord<'_>) {
    if !DIRECT_JSON.load(Ordering::Relaxed) {
        return access_event(r);
    }
    if !access_wanted() {
        return;
    }
    let now = SystemTime::now();
    let mut batch = pending();
    let Batch { lines, clock } = &mut *batch;
    if !json_line(lines, clock, now, r) {
        // A clock before 1970 or after 9999: let tracing print it.
        drop(batch);
        return access_event(r);
    }
    if lines.len() >= BATCH_BYTES {
        write_out(lines);
    }
}

/// Whether the subscriber takes `info` events of `fleetgate::access`: the question the
/// event's own callsite asks, with the same field names (a directive may name fields).
fn access_wanted() -> bool {
    tracing::enabled!(
        kind: tracing::metadata::Kind::EVENT,
        target: ACCESS_TARGET,
        tracing::Level::INFO,
        {
            message, method, path, request_id, class, rule_file, rule_line, target, degraded,
            shed, upstream, status, duration_ms, bytes_in, bytes_out, tenant, complete
        }
    )
}

/// The access line as a `tracing` event: the human format (and JSON when `init` did not
/// install the subscriber). The tests check that its JSON line is what [`json_line`] prints.
fn access_event(r: &AccessRecord<'_>) {
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

/// Append `r` as the JSON layer prints it (keys in the event's field order, strings escaped
/// as serde_json escapes them, `duration_ms` as serde_json prints an f64) and a newline.
/// `false` (and nothing appended) when `now` is outside 1970..=9999.
fn json_line(out: &mut Vec<u8>, clock: &mut Clock, now: SystemTime, r: &AccessRecord<'_>) -> bool {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let Some(second) = clock.second(since_epoch.as_secs()) else {
        return false;
    };
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(second);
    out.push(b'.');
    push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
    out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"message\":\"access\",\"method\":");
    push_str(out, r.method);
    out.extend_from_slice(b",\"path\":");
    push_str(out, r.path);
    out.extend_from_slice(b",\"request_id\":");
    push_str(out, r.request_id);
    out.extend_from_slice(b",\"class\":");
    push_str(out, r.class);
    out.extend_from_slice(b",\"rule_file\":");
    push_str(out, r.rule_file);
    out.extend_from_slice(b",\"rule_line\":");
    push_u64(out, u64::from(r.rule_line));
    out.extend_from_slice(b",\"target\":");
    push_str(out, r.target);
    out.extend_from_slice(b",\"degraded\":");
    push_bool(out, r.degraded);
    out.extend_from_slice(b",\"shed\":");
    push_str(out, r.shed);
    out.extend_from_slice(b",\"upstream\":\"");
    push_addr(out, r.upstream);
    out.extend_from_slice(b"\",\"status\":");
    push_u64(out, u64::from(r.status));
    out.extend_from_slice(b",\"duration_ms\":");
    push_f64(out, r.duration.as_secs_f64() * 1000.0);
    out.extend_from_slice(b",\"bytes_in\":");
    push_u64(out, r.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    push_u64(out, r.bytes_out);
    out.extend_from_slice(b",\"tenant\":");
    push_str(out, r.tenant);
    out.extend_from_slice(b",\"complete\":");
    push_bool(out, r.complete);
    out.extend_from_slice(b"}\n");
    true
}

/// A JSON string: `"` and `\` escaped, the named control characters as `\n` etc., the
/// others as `\u00xx`; everything else (DEL, non-ASCII) as it is.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    // Nearly every value needs no escape: find that out in one pass with no early exit (so
    // it is vectorized), then copy it at once.
    let clean = bytes.iter().fold(true, |clean, &b| {
        clean & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if clean {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn push_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    push_padded(out, n, 1);
}

/// `n` in decimal, zero-padded to at least `width` digits (at most 20).
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    // Two digits at a time: "00", "01", ... "99".
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else if n > 0 {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[start.min(digits.len() - width)..]);
}

/// As serde_json prints an f64: the shortest form that reads back the same, `null` when it
/// is not finite.
fn push_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// As `OptAddr` displays it.
fn push_addr(out: &mut Vec<u8>, addr: Option<std::net::SocketAddr>) {
    match addr {
        None => out.push(b'-'),
        Some(std::net::SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
            out.push(b':');
            push_u64(out, u64::from(a.port()));
        }
        // Rare enough for `Display` (no allocation: the buffer only grows when it must).
        Some(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// The UTC date and time to the second (`2026-12-01T10:20:30`), printed once a second.
struct Clock {
    /// Seconds since the epoch `text` is for; `u64::MAX` before the first line.
    at: u64,
    text: [u8; 19],
}

/// 9999-12-31T23:59:59: the last second with a four-digit year.
const LAST_SECOND: u64 = 253_402_300_799;

impl Clock {
    const fn new() -> Self {
        Clock {
            at: u64::MAX,
            text: [0; 19],
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS` of `secs` after the epoch; `None` after year 9999.
    fn second(&mut self, secs: u64) -> Option<&[u8; 19]> {
        if secs > LAST_SECOND {
            return None;
        }
        if secs != self.at {
            self.text = civil(secs);
            self.at = secs;
        }
        Some(&self.text)
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` after the epoch, a year of at most four digits.
fn civil(secs: u64) -> [u8; 19] {
    const DAYS_IN_400_YEARS: u64 = 400 * 365 + 97;
    fn leap(year: u64) -> bool {
        year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
    }
    let mut days = secs / 86_400;
    let in_day = secs % 86_400;
    // Any 400 consecutive years have the same number of days.
    let mut year = 1970 + 400 * (days / DAYS_IN_400_YEARS);
    days %= DAYS_IN_400_YEARS;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let mut month_lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if leap(year) {
        month_lengths[1] = 29;
    }
    let mut month = 1;
    for len in month_lengths {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, days + 1);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day / 60 % 60);
    put(17, 2, in_day % 60);
    text
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

    use proptest::prelude::*;
    use std::sync::Arc;

    /// For the tests that look at the pending batch.
    static BATCH_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn rustls_is_held_to_errors_unless_everything_is_quieter() {
        assert_eq!(directives("info"), "info,rustls=error");
        assert_eq!(directives("debug"), "debug,rustls=error");
        assert_eq!(directives("error"), "error");
        assert_eq!(directives("off"), "off");
        for level in ["trace", "debug", "info", "warn", "error", "off"] {
            EnvFilter::try_new(directives(level)).expect("a valid filter");
        }
    }
    #[test]
    fn access_lines_wait_for_a_batch_and_other_lines_write_them_first() {
        let _one_at_a_time = BATCH_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        flush();
        LineWriter::Batched.write_all(b"access 1\n").unwrap();
        LineWriter::Batched.write_all(b"access 2\n").unwrap();
        assert_eq!(pending().lines.as_slice(), b"access 1\naccess 2\n");
        // Any other event writes what is pending, then itself: nothing is left behind.
        LineWriter::Direct.write_all(b"warning\n").unwrap();
        assert!(pending().lines.is_empty());
        // A full batch is written at once.
        let line = vec![b'x'; 1024];
        for _ in 0..BATCH_BYTES / 1024 {
            LineWriter::Batched.write_all(&line).unwrap();
        }
        assert!(pending().lines.is_empty());
    }

    /// Lines a subscriber printed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The time the JSON layer's own clock is replaced with.
    struct FixedTime(SystemTime);

    impl tracing_subscriber::fmt::time::FormatTime for FixedTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            // tracing-subscriber's own `SystemTime` timer prints `now()` like this; its
            // `DateTime` is private, so its digits are checked against `httpdate` below.
            let since = self.0.duration_since(UNIX_EPOCH).unwrap();
            let date = civil(since.as_secs());
            write!(
                w,
                "{}.{:06}Z",
                std::str::from_utf8(&date).unwrap(),
                since.subsec_micros()
            )
        }
    }

    /// The line `tracing`'s JSON layer (as `init` sets it up) prints for `r` at `now`.
    fn through_tracing(r: &AccessRecord<'_>, now: SystemTime) -> String {
        through_tracing_filtered(r, now, "info")
    }

    fn through_tracing_filtered(r: &AccessRecord<'_>, now: SystemTime, directives: &str) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = json_layout(
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(directives))
                .with_timer(FixedTime(now))
                .with_writer(move || writer.clone())
                .with_ansi(false),
        )
        .finish();
        tracing::subscriber::with_default(subscriber, || access_event(r));
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn direct(r: &AccessRecord<'_>, now: SystemTime) -> String {
        let mut out = Vec::new();
        assert!(json_line(&mut out, &mut Clock::new(), now, r));
        String::from_utf8(out).unwrap()
    }

    fn record<'a>(path: &'a str, request_id: &'a str, tenant: &'a str) -> AccessRecord<'a> {
        AccessRecord {
            method: "GET",
            path,
            request_id,
            class: "fleet-ok",
            rule_file: "routes/20-fleet.toml",
            rule_line: 17,
            target: "fleet",
            degraded: false,
            shed: "-",
            upstream: Some("10.0.3.7:3000".parse().unwrap()),
            status: 200,
            duration: Duration::from_micros(1834),
            bytes_in: 0,
            bytes_out: 512,
            tenant,
            complete: true,
        }
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn json_access_lines_are_what_the_tracing_json_layer_prints() {
        let now = at(1_795_947_630, 123_456_789);
        let nasty = [
            "/api/acme/threads",
            "",
            "/a\"b\\c/\u{7f}\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1b}\u{1f} end",
            "/caf\u{e9}/\u{65e5}\u{672c}/\u{1f600}/\u{2028}\u{2029}/\u{feff}",
            "\\u0041 \"quoted\" {\"json\":true}",
            "</script><script>alert(1)</script>",
        ];
        for (i, s) in nasty.iter().enumerate() {
            let r = record(
                s,
                nasty[(i + 1) % nasty.len()],
                nasty[(i + 2) % nasty.len()],
            );
            assert_eq!(direct(&r, now), through_tracing(&r, now));
        }
        let mut r = record("/", "-", "-");
        for upstream in [
            None,
            Some("[::1]:8080".parse().unwrap()),
            Some("[fe80::1%3]:80".parse().unwrap()),
            Some("0.0.0.0:0".parse().unwrap()),
            Some("255.255.255.255:65535".parse().unwrap()),
        ] {
            r.upstream = upstream;
            for (degraded, complete) in [(true, false), (false, true)] {
                r.degraded = degraded;
                r.complete = complete;
                assert_eq!(direct(&r, now), through_tracing(&r, now));
            }
        }
        r.rule_line = u32::MAX;
        r.status = 0;
        r.bytes_in = u64::MAX;
        r.bytes_out = 0;
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(1_000),
            Duration::from_millis(1),
            Duration::from_secs(90_000),
            Duration::MAX,
        ] {
            r.duration = duration;
            assert_eq!(direct(&r, now), through_tracing(&r, now));
        }
        let line = direct(&r, now);
        assert!(
            line.starts_with("{\"timestamp\":\"2026-11-29T10:20:30.123456Z\",\"level\":\"INFO\","),
            "{line}"
        );
        assert!(line.ends_with("}\n"), "{line}");
    }

    #[test]
    fn the_filter_decides_as_it_does_for_the_event() {
        let _one_at_a_time = BATCH_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        flush();
        DIRECT_JSON.store(true, Ordering::Relaxed);
        let r = record("/api/acme/threads", "4f0c", "acme");
        let now = SystemTime::now();
        for (directives, wanted) in [
            ("info", true),
            ("warn", false),
            ("info,fleetgate::access=off", false),
            ("info,fleetgate::access=warn", false),
            ("off,fleetgate::access=info", true),
            ("fleetgate=debug", true),
            ("fleetgate::proxy=debug", false),
            ("fleetgate::access[{status}]=info", true),
            ("fleetgate::access[{no_such_field}]=info", false),
        ] {
            let by_tracing = !through_tracing_filtered(&r, now, directives).is_empty();
            assert_eq!(by_tracing, wanted, "{directives}");
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(directives))
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::with_default(subscriber, || access(&r));
            let written = std::mem::take(&mut pending().lines);
            assert_eq!(!written.is_empty(), wanted, "{directives}");
            if wanted {
                let line = String::from_utf8(written).unwrap();
                assert!(
                    line.starts_with("{\"timestamp\":") && line.ends_with("\"complete\":true}\n"),
                    "{line}"
                );
            }
        }
        // No subscriber at all: nothing.
        access(&r);
        assert!(pending().lines.is_empty());
        DIRECT_JSON.store(false, Ordering::Relaxed);
    }

    #[test]
    fn numbers_print_as_display_prints_them() {
        let mut out = Vec::new();
        for n in (0..100_000u64).chain([u64::MAX, u64::MAX - 1, 10u64.pow(19), 99_999_999_999]) {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            out.clear();
            push_padded(&mut out, n % 1_000_000, 6);
            assert_eq!(out, format!("{:06}", n % 1_000_000).as_bytes());
        }
    }

    #[test]
    fn the_clock_prints_utc_with_microseconds() {
        let mut out = Vec::new();
        let r = record("/", "-", "-");
        json_line(&mut out, &mut Clock::new(), at(0, 999), &r);
        assert!(out.starts_with(b"{\"timestamp\":\"1970-01-01T00:00:00.000000Z\""));
        out.clear();
        json_line(
            &mut out,
            &mut Clock::new(),
            at(951_825_599, 999_999_999),
            &r,
        );
        assert!(out.starts_with(b"{\"timestamp\":\"2000-02-29T11:59:59.999999Z\""));
        out.clear();
        assert!(json_line(
            &mut out,
            &mut Clock::new(),
            at(LAST_SECOND, 0),
            &r
        ));
        assert!(out.starts_with(b"{\"timestamp\":\"9999-12-31T23:59:59.000000Z\""));
        out.clear();
        assert!(!json_line(
            &mut out,
            &mut Clock::new(),
            at(LAST_SECOND + 1, 0),
            &r
        ));
        assert!(!json_line(
            &mut out,
            &mut Clock::new(),
            UNIX_EPOCH - Duration::from_secs(1),
            &r
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_warm_buffer_takes_a_line_without_allocating() {
        let r = record("/api/acme/threads", "4f0c", "acme");
        let mut clock = Clock::new();
        let mut out = Vec::with_capacity(4096);
        let now = SystemTime::now();
        json_line(&mut out, &mut clock, now, &r);
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        out.clear();
        json_line(&mut out, &mut clock, now, &r);
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
    }

    /// `YYYY-MM-DDTHH:MM:SS` read back from `httpdate`'s `Sun, 06 Nov 1994 08:49:37 GMT`.
    fn httpdate_civil(secs: u64) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let text = httpdate::fmt_http_date(at(secs, 0));
        let parts: Vec<&str> = text.split(' ').collect();
        let month = MONTHS.iter().position(|m| *m == parts[2]).unwrap() + 1;
        format!("{}-{month:02}-{}T{}", parts[3], parts[1], parts[4])
    }

    proptest! {
        #[test]
        fn any_second_up_to_9999_is_the_date_httpdate_says(secs in 0..=LAST_SECOND) {
            let ours = civil(secs);
            prop_assert_eq!(std::str::from_utf8(&ours).unwrap(), httpdate_civil(secs));
        }

        #[test]
        fn any_strings_print_as_tracing_prints_them_and_parse_back(
            path in any::<String>(),
            // Heavy on what must be escaped.
            request_id in "[\\x00-\\x1f\\x7f\"\\\\a-z/%\u{e9}\u{2028}\u{1f600}]{0,40}",
            tenant in any::<String>(),
            nanos in any::<u64>(),
            numbers in (any::<u32>(), any::<u16>(), any::<u64>(), 0..100_000u64),
        ) {
            let mut r = record(&path, &request_id, &tenant);
            r.duration = Duration::from_nanos(nanos);
            (r.rule_line, r.status, r.bytes_in, r.bytes_out) = numbers;
            let now = SystemTime::now();
            let line = direct(&r, now);
            prop_assert_eq!(&line, &through_tracing(&r, now));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(v["path"].as_str(), Some(path.as_str()));
            prop_assert_eq!(v["request_id"].as_str(), Some(request_id.as_str()));
            prop_assert_eq!(v["tenant"].as_str(), Some(tenant.as_str()));
            // serde_json's own parser may be off by an ulp (no `float_roundtrip`): read the
            // number's text with Rust's.
            let ms = line.split("\"duration_ms\":").nth(1).unwrap().split(',').next().unwrap();
            prop_assert_eq!(ms.parse::<f64>().unwrap(), r.duration.as_secs_f64() * 1000.0);
            prop_assert!(v["duration_ms"].is_f64());
        }
    }
}
