//! The respond step: one request's journey, kept until its response body ends. It stamps
//! the response (`x-fleetgate-target`, `-served-by`, `-degraded`), and when the body has
//! ended (or the client went away) records the metrics and writes the access-log line,
//! so that duration and byte counts are those of the whole exchange.
//!
//! The target it reports is the routing decision of the target step, never rewritten: a
//! degraded answer says `target=ide` plus `x-fleetgate-degraded: 1`; a request refused
//! before it was routed (bad path, loop) reports no target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Response, StatusCode};

use crate::admission::Permit;
use crate::body::{OnComplete, RequestProgress, ResponseBody};
use crate::manifest::Class;
use crate::metrics::Metrics;
use crate::proxy::context::Route;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::Answered;
use crate::proxy::headers::{self, Stamp};
use crate::proxy::target::Target;
use crate::proxy::OpenRequest;
use crate::state::Snapshot;
use crate::upstream::{InFlight, Upstream, UpstreamError};

/// The body of every response the data listener sends.
pub type Body = ResponseBody<Exchange>;

/// One request's journey (see the module docs).
pub struct Exchange {
    metrics: Arc<Metrics>,
    snap: Arc<Snapshot>,
    start: Instant,
    method: Method,
    pub(super) path: PathAndQuery,
    request_id: Option<HeaderValue>,
    pub(super) class: Option<Class>,
    pub(super) route: Option<Route>,
    degraded: bool,
    upstream: Option<SocketAddr>,
    status: StatusCode,
    pub(super) progress: Option<Arc<RequestProgress>>,
    inflight: Option<InFlight>,
    /// The admission slot: released when the exchange ends (dropped with it).
    permit: Option<Permit>,
    /// Why admission control refused the request, if it did.
    shed: Option<&'static str>,
    /// The request counts as open on its connection until the exchange ends.
    _open: OpenRequest,
}

impl Exchange {
    pub fn new(
        metrics: Arc<Metrics>,
        snap: Arc<Snapshot>,
        parts: &http::request::Parts,
        open: OpenRequest,
    ) -> Exchange {
        Exchange {
            metrics,
            snap,
            start: Instant::now(),
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            request_id: parts.headers.get("x-request-id").cloned(),
            class: None,
            route: None,
            degraded: false,
            upstream: None,
            status: StatusCode::OK,
            progress: None,
            inflight: None,
            permit: None,
            shed: None,
            _open: open,
        }
    }

    fn target(&self) -> Option<Target> {
        self.route.map(|r| r.target)
    }

    /// An upstream's answer: stamp it and attach the completion hook.
    pub fn respond(mut self, resp: Response<Answered>) -> Response<Body> {
        let (mut head, answered) = resp.into_parts();
        self.degraded = answered.degraded;
        self.upstream = Some(answered.inflight.endpoint().addr);
        self.inflight = Some(answered.inflight);
        self.permit = answered.permit;
        let stamp = Stamp {
            target: self.target(),
            degraded: self.degraded,
        };
        headers::stamp_response(&mut head.headers, &self.snap.node, &stamp);
        self.status = head.status;
        let no_body = self.method == Method::HEAD
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        let idle = self.snap.config.timeouts.idle;
        let body = ResponseBody::upstream(answered.body, idle).on_complete(self, no_body);
        Response::from_parts(head, body)
    }

    /// A request refused, or one the stack could not forward: answer it ourselves.
    pub fn reject(mut self, e: ProxyError) -> Response<Body> {
        if e.before_routing() {
            self.route = None;
        }
        self.shed = e.shed_reason();
        let mut resp: Response<Body> = e.to_response();
        let stamp = Stamp {
            target: self.target(),
            degraded: false,
        };
        headers::stamp_response(resp.headers_mut(), &self.snap.node, &stamp);
        self.status = resp.status();
        let no_body = self.method == Method::HEAD;
        resp.map(|b| b.on_complete(self, no_body))
    }
}

impl OnComplete for Exchange {
    /// Count a response body the upstream cut (after its head was relayed) like a failed
    /// exchange: `timeout` when it stalled, `protocol` when its connection failed.
    fn upstream_failed(&mut self, stalled: bool) {
        let Some(target) = self.target() else { return };
        let upstream = if self.degraded {
            Upstream::Fleet
        } else {
            target.upstream()
        };
        let error = if stalled {
            UpstreamError::FirstByteTimeout
        } else {
            UpstreamError::Failed
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[upstream.as_str(), error.kind()])
            .inc();
    }

    fn complete(self, bytes_out: u64, complete: bool) {
        let class = self.class.map_or("none", Class::as_str);
        let target = self.target().map_or("none", Target::as_str);
        let elapsed = self.start.elapsed();
        self.metrics
            .record_request(class, target, self.status, elapsed.as_secs_f64());
        if !self.snap.config.access_log {
            return;
        }
        let rule = self
            .route
            .and_then(|r| r.rule_index)
            .and_then(|i| self.snap.manifest.rules().get(i));
        let path = self.path.path();
        let tenant = self
            .route
            .and_then(|r| r.tenant(&self.snap.manifest, path))
            .unwrap_or("-");
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        crate::logging::access(&crate::logging::AccessRecord {
            method: self.method.as_str(),
            path,
            request_id,
            class,
            rule_file: rule.map_or("-", |r| r.file.as_str()),
            rule_line: rule.map_or(0, |r| r.line),
            target,
            degraded: self.degraded,
            shed: self.shed.unwrap_or("-"),
            upstream: self.upstream,
            status: self.status.as_u16(),
            duration: elapsed,
            bytes_in: self.progress.as_ref().map_or(0, |p| p.bytes()),
            bytes_out,
            tenant,
            complete,
        });
    }
}
