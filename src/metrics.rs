//! Prometheus metrics: one [`Metrics`] per running server, with its own `Registry`
//! (never the process-global default), rendered as text by the admin listener.
//!
//! Label values are bounded: `class` is `ide-only|fleet-ok|none`, `target` is
//! `local|fleet|ide|none`, `code` a status code, `upstream` `fleet|ide`, `kind` one
//! of the error kinds of `UpstreamError::kind`, `tls` or `no_endpoint`, `result` `ok|error`;
//! `fleetgate_manifest_info` has exactly one series, the live manifest's digest.

use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// `fleetgate_requests_total{class,target,code}`
    pub requests: IntCounterVec,
    /// `fleetgate_request_duration_seconds{class,target}` (until the response body ends)
    pub duration: HistogramVec,
    /// `fleetgate_upstream_errors_total{upstream,kind}`
    pub upstream_errors: IntCounterVec,
    /// `fleetgate_connections_active`
    pub connections_active: IntGauge,
    /// `fleetgate_connections_parked`
    pub connections_parked: IntGauge,
    /// `fleetgate_upstream_ejections_total{upstream}`
    pub ejections: IntCounterVec,
    /// `fleetgate_reload_total{result}`
    pub reloads: IntCounterVec,
    /// `fleetgate_reload_last_success_timestamp_seconds`
    pub reload_last_success: Gauge,
    /// `fleetgate_admission_shed_total{target,reason}`
    pub admission_shed: IntCounterVec,
    /// `fleetgate_admission_wait_seconds`: time queued for a slot (admitted or shed).
    pub admission_wait: Histogram,
    /// `fleetgate_admission_inflight{target}`, set when scraped.
    pub admission_inflight: IntGaugeVec,
    /// `fleetgate_admission_queued{target}`, set when scraped.
    pub admission_queued: IntGaugeVec,
    /// `fleetgate_tenants_active{target}`, set when scraped.
    pub tenants_active: IntGaugeVec,
    /// `fleetgate_guard_total{action,reason}`
    pub guard: IntCounterVec,
    /// `fleetgate_super_read_only`: 1 while the switch is on.
    pub super_read_only: IntGauge,
    /// `fleetgate_version_skew`: 1 while a peer with another manifest digest was seen in
    /// the last 5 minutes (set when scraped).
    pub version_skew: IntGauge,
    /// `fleetgate_skewed_requests_total`: requests that carried another manifest digest.
    pub skewed_requests: prometheus::IntCounter,
    /// `fleetgate_unlisted_total{method_kind}`: requests that matched no rule.
    pub unlisted: IntCounterVec,
    /// `fleetgate_manifest_info{digest}`: 1 for the live digest, no other series.
    manifest_info: IntGaugeVec,
    /// The digest `manifest_info` shows (to remove its series on a change).
    manifest_digest: Mutex<String>,
    /// The per-request series, resolved once each (a label lookup per request is a
    /// hash and a lock): `requests_total` by (class, target, code), `duration` by
    /// (class, target).
    request_series: Vec<OnceLock<prometheus::IntCounter>>,
    duration_series: Vec<OnceLock<prometheus::Histogram>>,
}

/// The `class` and `target` label values, in the order of the series tables.
const CLASSES: [&str; 3] = ["ide-only", "fleet-ok", "none"];
const TARGETS: [&str; 4] = ["local", "fleet", "ide", "none"];
/// Status codes 100..=599 have a slot each.
const CODES: usize = 500;

/// The label values known ahead, whose series [`Metrics::new`] creates at 0. They mirror
/// the enums of the layers above (`Upstream`, `UpstreamError::kind`, `ShedReason`,
/// `guard::Action` with `GuardReason`); `tests/deploy.rs` checks that they agree.
///
/// `upstream` of `upstream_errors_total`, `upstream_ejections_total` and `target` of
/// `admission_shed_total`.
pub const UPSTREAMS: [&str; 2] = ["fleet", "ide"];
/// `kind` of `fleetgate_upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 7] = [
    "connect",
    "tls",
    "no_endpoint",
    "timeout",
    "protocol",
    "client_timeout",
    "client_abort",
];
/// `reason` of `fleetgate_admission_shed_total`.
pub const SHED_REASONS: [&str; 3] = ["global", "tenant", "queue-timeout"];
/// `(action, reason)` of `fleetgate_guard_total`: the switch only refuses; an unlisted
/// write is redirected to the ide or refused.
pub const GUARD_OUTCOMES: [(&str, &str); 3] = [
    ("redirect", "unlisted-write"),
    ("refuse", "unlisted-write"),
    ("refuse", "super-read-only"),
];
/// `method_kind` of `fleetgate_unlisted_total`.
pub const METHOD_KINDS: [&str; 2] = ["read", "write"];
/// `result` of `fleetgate_reload_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];
/// The `(class, target)` pairs a forwarded request can have in some role (the role
/// table), and the answers fleetgate itself gives for them once a target is chosen
/// (`502` upstream unreachable or failed, `503` shed or guarded, `504` no response
/// head): `fleetgate_requests_total` has these series at 0 from start-up, so an error
/// ratio sees the first failure; `fleetgate_request_duration_seconds` has these pairs
/// too (empty), so that every family is in `/metrics` from start-up. Other codes are the
/// application's, not knowable ahead.
pub const ROUTED: [(&str, &str); 4] = [
    ("fleet-ok", "fleet"),
    ("ide-only", "ide"),
    ("fleet-ok", "local"),
    ("ide-only", "local"),
];
pub const OWN_ERROR_CODES: [&str; 3] = ["502", "503", "504"];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "fleetgate_requests_total",
                "Requests answered, by class, target and status code.",
            ),
            &["class", "target", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "fleetgate_request_duration_seconds",
                "Time from request head to the end of the response body.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
            &["class", "target"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "fleetgate_upstream_errors_total",
                "Failed upstream exchanges, by upstream and kind.",
            ),
            &["upstream", "kind"],
        )
        .expect("valid metric");
        let connections_active = IntGauge::new(
            "fleetgate_connections_active",
            "Open downstream connections.",
        )
        .expect("valid metric");
        let connections_parked = IntGauge::new(
            "fleetgate_connections_parked",
            "Idle HTTP/1.1 client connections held without HTTP buffers until they send again.",
        )
        .expect("valid metric");
        let ejections = IntCounterVec::new(
            Opts::new(
                "fleetgate_upstream_ejections_total",
                "Endpoints ejected after a failed connect.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "fleetgate_reload_total",
                "Reload attempts (SIGHUP, POST /reload, file watch), by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let reload_last_success = Gauge::new(
            "fleetgate_reload_last_success_timestamp_seconds",
            "Unix time of the last successful load of the configuration and manifest (start included).",
        )
        .expect("valid metric");
        let manifest_info = IntGaugeVec::new(
            Opts::new(
                "fleetgate_manifest_info",
                "The live manifest: always 1, labelled with its digest.",
            ),
            &["digest"],
        )
        .expect("valid metric");
        let admission_shed = IntCounterVec::new(
            Opts::new(
                "fleetgate_admission_shed_total",
                "Requests refused by admission control (503), by bulkhead and reason.",
            ),
            &["target", "reason"],
        )
        .expect("valid metric");
        let admission_wait = Histogram::with_opts(
            HistogramOpts::new(
                "fleetgate_admission_wait_seconds",
                "Time requests waited in a tenant queue for a slot (admitted or shed).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["target"]).expect("valid metric")
        };
        let admission_inflight = gauge(
            "fleetgate_admission_inflight",
            "Requests holding a slot of the bulkhead (fleet: the fleet pool or local application; ide).",
        );
        let admission_queued = gauge(
            "fleetgate_admission_queued",
            "Requests waiting for a slot of the bulkhead.",
        );
        let tenants_active = gauge(
            "fleetgate_tenants_active",
            "Tenants with requests in flight or waiting, per bulkhead.",
        );
        let guard = IntCounterVec::new(
            Opts::new(
                "fleetgate_guard_total",
                "Writes the super_read_only guard redirected to the ide or refused, by action and reason.",
            ),
            &["action", "reason"],
        )
        .expect("valid metric");
        let super_read_only = IntGauge::new(
            "fleetgate_super_read_only",
            "1 while this node's super_read_only switch is on (writes refused).",
        )
        .expect("valid metric");
        let version_skew = IntGauge::new(
            "fleetgate_version_skew",
            "1 while a request carrying another manifest digest was seen in the last 5 minutes.",
        )
        .expect("valid metric");
        let skewed_requests = prometheus::IntCounter::new(
            "fleetgate_skewed_requests_total",
            "Requests from another fleetgate whose manifest digest differs from this node's.",
        )
        .expect("valid metric");
        let unlisted = IntCounterVec::new(
            Opts::new(
                "fleetgate_unlisted_total",
                "Requests that matched no manifest rule (the default class applied), by read or write.",
            ),
            &["method_kind"],
        )
        .expect("valid metric");
        // Every series whose label values are known ahead exists from start-up at 0, so
        // that `rate()`/`increase()` see the first event and alerts work before it.
        for kind in METHOD_KINDS {
            unlisted.with_label_values(&[kind]);
        }
        for result in RELOAD_RESULTS {
            reloads.with_label_values(&[result]);
        }
        for (action, reason) in GUARD_OUTCOMES {
            guard.with_label_values(&[action, reason]);
        }
        for upstream in UPSTREAMS {
            ejections.with_label_values(&[upstream]);
            for kind in UPSTREAM_ERROR_KINDS {
                upstream_errors.with_label_values(&[upstream, kind]);
            }
            for reason in SHED_REASONS {
                admission_shed.with_label_values(&[upstream, reason]);
            }
        }
        for (class, target) in ROUTED {
            duration.with_label_values(&[class, target]);
            for code in OWN_ERROR_CODES {
                requests.with_label_values(&[class, target, code]);
            }
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(connections_active.clone()),
            Box::new(connections_parked.clone()),
            Box::new(ejections.clone()),
            Box::new(reloads.clone()),
            Box::new(reload_last_success.clone()),
            Box::new(manifest_info.clone()),
            Box::new(admission_shed.clone()),
            Box::new(admission_wait.clone()),
            Box::new(admission_inflight.clone()),
            Box::new(admission_queued.clone()),
            Box::new(tenants_active.clone()),
            Box::new(guard.clone()),
            Box::new(super_read_only.clone()),
            Box::new(version_skew.clone()),
            Box::new(skewed_requests.clone()),
            Box::new(unlisted.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            connections_active,
            connections_parked,
            ejections,
            reloads,
            reload_last_success,
            admission_shed,
            admission_wait,
            admission_inflight,
            admission_queued,
            tenants_active,
            guard,
            super_read_only,
            version_skew,
            skewed_requests,
            unlisted,
            manifest_info,
            manifest_digest: Mutex::new(String::new()),
            request_series: (0..CLASSES.len() * TARGETS.len() * CODES)
                .map(|_| OnceLock::new())
                .collect(),
            duration_series: (0..CLASSES.len() * TARGETS.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Count one answered request and observe its duration. `class` and `target` are
    /// label values (`ide-only|fleet-ok|none`, `local|fleet|ide|none`).
    pub fn record_request(&self, class: &str, target: &str, code: http::StatusCode, seconds: f64) {
        let ci = CLASSES.iter().position(|c| *c == class);
        let ti = TARGETS.iter().position(|t| *t == target);
        let in_table = (100..600).contains(&code.as_u16());
        let (Some(ci), Some(ti), true) = (ci, ti, in_table) else {
            // Not a known label value: the slow path, still correct.
            self.requests
                .with_label_values(&[class, target, code.as_str()])
                .inc();
            self.duration
                .with_label_values(&[class, target])
                .observe(seconds);
            return;
        };
        let pair = ci * TARGETS.len() + ti;
        let slot = pair * CODES + usize::from(code.as_u16() - 100);
        self.request_series[slot]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[class, target, code.as_str()])
            })
            .inc();
        self.duration_series[pair]
            .get_or_init(|| self.duration.with_label_values(&[class, target]))
            .observe(seconds);
    }

    /// A snapshot with manifest `digest` went live (at start or by a reload).
    pub fn set_manifest(&self, digest: &str) {
        let mut live = self
            .manifest_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *live != digest {
            let _ = self.manifest_info.remove_label_values(&[live.as_str()]);
            *live = digest.to_string();
        }
        self.manifest_info.with_label_values(&[digest]).set(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.reload_last_success.set(now);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_requests_land_in_their_series() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.record_request("fleet-ok", "fleet", http::StatusCode::OK, 0.001);
        }
        m.record_request(
            "ide-only",
            "none",
            http::StatusCode::MISDIRECTED_REQUEST,
            0.0,
        );
        m.record_request("other", "x", http::StatusCode::OK, 0.0);
        m.record_request(
            "none",
            "none",
            http::StatusCode::from_u16(799).unwrap(),
            0.0,
        );
        let text = String::from_utf8(m.render()).unwrap();
        for want in [
            r#"fleetgate_requests_total{class="fleet-ok",code="200",target="fleet"} 3"#,
            r#"fleetgate_requests_total{class="ide-only",code="421",target="none"} 1"#,
            r#"fleetgate_requests_total{class="other",code="200",target="x"} 1"#,
            r#"fleetgate_requests_total{class="none",code="799",target="none"} 1"#,
            r#"fleetgate_request_duration_seconds_count{class="fleet-ok",target="fleet"} 3"#,
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    /// The value of the one sample line `series` (name and labels, labels in the
    /// encoder's sorted order), if it is there.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn known_series_exist_at_zero_from_start() {
        let m = Metrics::new();
        let text = String::from_utf8(m.render()).unwrap();
        let mut want = Vec::new();
        for kind in ["read", "write"] {
            want.push(format!(
                "fleetgate_unlisted_total{{method_kind=\"{kind}\"}}"
            ));
        }
        for result in ["ok", "error"] {
            want.push(format!("fleetgate_reload_total{{result=\"{result}\"}}"));
        }
        for (action, reason) in [
            ("redirect", "unlisted-write"),
            ("refuse", "unlisted-write"),
            ("refuse", "super-read-only"),
        ] {
            want.push(format!(
                "fleetgate_guard_total{{action=\"{action}\",reason=\"{reason}\"}}"
            ));
        }
        for upstream in ["fleet", "ide"] {
            want.push(format!(
                "fleetgate_upstream_ejections_total{{upstream=\"{upstream}\"}}"
            ));
            for kind in [
                "connect",
                "tls",
                "no_endpoint",
                "timeout",
                "protocol",
                "client_timeout",
                "client_abort",
            ] {
                want.push(format!(
                    "fleetgate_upstream_errors_total{{kind=\"{kind}\",upstream=\"{upstream}\"}}"
                ));
            }
            for reason in ["global", "tenant", "queue-timeout"] {
                want.push(format!(
                    "fleetgate_admission_shed_total{{reason=\"{reason}\",target=\"{upstream}\"}}"
                ));
            }
        }
        for (class, target) in [("fleet-ok", "fleet"), ("ide-only", "ide")] {
            for code in ["502", "503", "504"] {
                want.push(format!(
                    "fleetgate_requests_total{{class=\"{class}\",code=\"{code}\",target=\"{target}\"}}"
                ));
            }
        }
        for plain in [
            "fleetgate_connections_active",
            "fleetgate_connections_parked",
            "fleetgate_super_read_only",
            "fleetgate_version_skew",
            "fleetgate_skewed_requests_total",
            "fleetgate_admission_wait_seconds_count",
            r#"fleetgate_request_duration_seconds_count{class="fleet-ok",target="fleet"}"#,
            r#"fleetgate_request_duration_seconds_bucket{class="ide-only",target="ide",le="+Inf"}"#,
        ] {
            want.push(plain.to_string());
        }
        for series in &want {
            assert_eq!(sample(&text, series), Some(0.0), "{series} = 0 in\n{text}");
        }
        // A series made at start-up is the one the hot path later counts in.
        m.record_request("ide-only", "ide", http::StatusCode::BAD_GATEWAY, 0.01);
        m.guard
            .with_label_values(&["refuse", "super-read-only"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert_eq!(
            sample(
                &text,
                r#"fleetgate_requests_total{class="ide-only",code="502",target="ide"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"fleetgate_guard_total{action="refuse",reason="super-read-only"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            text.matches(r#"{class="ide-only",code="502",target="ide"}"#)
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn manifest_info_has_one_series() {
        let m = Metrics::new();
        m.set_manifest("aaa");
        m.set_manifest("bbb");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("fleetgate_manifest_info{digest=\"bbb\"} 1"),
            "{text}"
        );
        assert!(!text.contains("digest=\"aaa\""), "{text}");
        assert!(
            text.contains("fleetgate_reload_total{result=\"error\"} 0"),
            "{text}"
        );
    }
}
