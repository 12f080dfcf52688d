//! Prometheus metrics: one [`Metrics`] per running server, with its own `Registry`
//! (never the process-global default), rendered as text by the admin listener.
//!
//! Label values are bounded: `class` is `ide-only|fleet-ok|none`, `target` is
//! `local|fleet|ide|none`, `code` a status code, `upstream` `fleet|ide`, `kind` one
//! of the error kinds of [`crate::error::ProxyError::kind`] or `no_endpoint`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
    /// `fleetgate_upstream_ejections_total{upstream}`
    pub ejections: IntCounterVec,
}

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
        let ejections = IntCounterVec::new(
            Opts::new(
                "fleetgate_upstream_ejections_total",
                "Endpoints ejected after a failed connect.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(connections_active.clone()),
            Box::new(ejections.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            connections_active,
            ejections,
        }
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
