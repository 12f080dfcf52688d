//! The request pipeline: the life of one request as a sequence of named steps
//! (DESIGN.md §1):
//!
//! ```text
//! Gateway::handle                    the front: plain steps, in order
//!   1. normalize                      400
//!   2. probe short-circuit            /healthz, /readyz
//!   3. classify                       class, rule, tenant
//!   4. target                         local | fleet | ide | 421
//!      -> Request<RequestBody> with a `Routed` extension (the decision)
//!   5. ProxyStack (tower)            the back: one layer per concern
//!        [super_read_only guard]      later issue
//!        [admission control]          later issue
//!        LoopGuard                    508                  loop_guard.rs
//!        ForwardHeaders               header hygiene       forward_headers.rs
//!        Forward                      pool, degrade, 502/504, upgrades   forward.rs
//!      -> Response<Forwarded>, or a ProxyError
//!   6. respond                        stamps; metrics + access log at body end
//! ```
//!
//! [`Gateway::handle`] reads top to bottom in that order. Each step either passes the
//! request on or answers it with a [`ProxyError`], mapped to HTTP in one place
//! ([`crate::error`]). The manifest and reloadable config are one [`Snapshot`] behind an
//! `ArcSwap`, loaded once per request, so a request sees one consistent snapshot from
//! start to end.
//!
//! The decision is computed once, in steps 3 and 4, and travels with the request in its
//! extensions as a [`Routed`] (a [`RouteDecision`], the snapshot, the normalized path, the
//! client side); no layer re-parses the path. The stack ([`ProxyStack`]) is a
//! `tower::Service<Request<RequestBody>, Error = ProxyError>` built once in
//! [`Gateway::new`] with `ServiceBuilder`; each request calls a clone of it. Its layers
//! apply no backpressure (`poll_ready` is always ready): the guard and admission control
//! slot in above the loop guard and answer with `503` + `Retry-After` instead of waiting.
//!
//! Allocation: the layers' futures are named types; the innermost [`Forward`] future is
//! the one boxed future per request. The [`Exchange`] collects what happened and becomes
//! the response body's completion hook: metrics and the access log are written when the
//! body ends.
//!
//! * [`routed`]: the decision that travels in the request's extensions.
//! * [`loop_guard`]: the `508` layer.
//! * [`forward_headers`]: the header hygiene layer, both directions.
//! * [`forward`]: the innermost service: pool choice, degrade fallback, upgrade tunnels;
//!   the client, timeouts, retries.
//! * [`headers`]: the header rules: hygiene, forwarding headers, loop check, stamps.
//! * [`target`]: the role table.
//! * [`upstream`]: pools, balancing, ejection, DNS.
//! * [`body`]: streaming bodies with idle timeouts and byte counts.

pub mod body;
pub mod forward;
pub mod forward_headers;
pub mod headers;
pub mod loop_guard;
pub mod routed;
pub mod target;
pub mod upstream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt};

use crate::config::Config;
use crate::error::ProxyError;
use crate::manifest::{Class, Manifest, RequestParts};
use crate::metrics::Metrics;
use crate::path::NormalizeOptions;
use body::{OnComplete, RequestBody, RequestProgress, ResponseBody};
use forward::{Forward, Forwarded, Forwarder};
use forward_headers::{ForwardHeaders, ForwardHeadersLayer};
use headers::{ClientSide, NodeHeaders, Stamp};
use loop_guard::{LoopGuard, LoopGuardLayer};
pub use routed::{RouteDecision, Routed};
use target::{Route, Target, Upstream};
use upstream::{InFlight, Pool};

/// The body of every response the data listener sends.
pub type Body = ResponseBody<Exchange>;

/// Configuration and manifest as one consistent, swappable unit.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub manifest: Manifest,
    pub node: NodeHeaders,
}

impl Snapshot {
    pub fn new(config: Arc<Config>, manifest: Manifest) -> Snapshot {
        let node = NodeHeaders::new(&config, manifest.digest());
        Snapshot {
            config,
            manifest,
            node,
        }
    }
}

/// Where the process is in its life (readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Everything the data path shares across requests.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub fleet: Arc<Pool>,
    pub ide: Option<Arc<Pool>>,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Arc<Metrics>,
    /// Built once; cloned (a few `Arc`s) for each request.
    stack: ProxyStack,
    phase: AtomicU8,
}

/// Everything from the loop guard to the upstream's response head, as one service:
/// [`LoopGuard`] → [`ForwardHeaders`] → [`Forward`].
pub type ProxyStack = LoopGuard<ForwardHeaders<Forward>>;

/// Per-connection facts the pipeline needs.
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// Set by the first request; the server closes connections that send none in time.
    pub(crate) seen_request: AtomicBool,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            remote,
            tls,
            seen_request: AtomicBool::new(false),
        }
    }
}

impl Gateway {
    pub fn new(config: Arc<Config>, manifest: Manifest, metrics: Arc<Metrics>) -> Gateway {
        let fleet = Arc::new(Pool::new(
            Upstream::Fleet,
            config.upstreams.fleet.clone(),
            metrics.clone(),
        ));
        let ide = config
            .upstreams
            .ide
            .clone()
            .map(|u| Arc::new(Pool::new(Upstream::Ide, vec![u], metrics.clone())));
        let forwarder = Arc::new(Forwarder::new(&config.timeouts, metrics.clone()));
        let stack = ServiceBuilder::new()
            // The super_read_only guard, then admission control, go here, before the loop guard.
            .layer(LoopGuardLayer::new())
            .layer(ForwardHeadersLayer::new())
            .service(Forward::new(forwarder.clone(), fleet.clone(), ide.clone()));
        Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config, manifest)),
            fleet,
            ide,
            forwarder,
            metrics,
            stack,
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Handle one request from the data listener: the steps of DESIGN.md §1, in order.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<Body> {
        conn.seen_request.store(true, Ordering::Relaxed);
        let snap = self.snapshot.load_full();
        let (mut parts, body) = req.into_parts();
        let mut ex = Exchange::new(self.clone(), snap.clone(), &parts);

        // 1. normalize: one canonical path, used for classification and upstream alike.
        let options = NormalizeOptions {
            allow_encoded_slash: snap.config.allow_encoded_slash,
        };
        let path = match normalized_target(&parts.uri, options) {
            Ok(pq) => pq,
            Err(e) => return ex.reject(e),
        };
        ex.path = path.clone();

        // 2. probe short-circuit: /healthz and /readyz are answered here, never forwarded.
        if let Some((status, json)) = crate::admin::probe(self, path.path()) {
            return probe_response(status, json);
        }

        // 3. classify (no allocation).
        let classified = snap.manifest.classify(&RequestParts {
            method: parts.method.as_str(),
            path: path.path(),
            query: path.query(),
            headers: &parts.headers,
        });
        let tenant = classified.tenant.and_then(|t| span_in(path.path(), t));
        ex.class = Some(classified.class);
        ex.rule = classified.rule_index;
        ex.tenant = tenant;

        // 4. target: the role table.
        let ide_configured = self.ide.is_some();
        let target = match target::route(snap.config.role, classified.class, ide_configured) {
            Route::Forward(t) => t,
            Route::Misdirected => return ex.reject(ProxyError::Misdirected),
        };
        ex.target = Some(target);

        // The decision is made; from here on it travels with the request.
        let decision = RouteDecision {
            class: classified.class,
            rule_index: classified.rule_index,
            tenant,
            target,
            degrade: classified.rule.is_some_and(|r| r.degrade),
        };
        let client = ClientSide {
            ip: conn.remote.ip(),
            tls: conn.tls,
            version: parts.version,
        };
        let (body, progress) = RequestBody::new(body, snap.config.timeouts.idle);
        ex.progress = progress;
        parts.extensions.insert(Routed {
            decision,
            snapshot: snap,
            path,
            client,
        });
        let routed = Request::from_parts(parts, body);

        // 5. guard, admit, forward: the proxy stack (built in `Gateway::new`).
        let answer = self.stack.clone().oneshot(routed).await;

        // 6. respond: stamps; metrics and access log when the body ends.
        match answer {
            Ok(resp) => ex.respond(resp),
            Err(e) => ex.fail(e),
        }
    }
}

/// The canonical request target for the upstream: the normalized path plus the query,
/// unchanged. Reuses the client's bytes when the path was already canonical.
fn normalized_target(
    uri: &http::Uri,
    options: NormalizeOptions,
) -> Result<PathAndQuery, ProxyError> {
    let Some(pq) = uri.path_and_query() else {
        return Err(ProxyError::BadTarget);
    };
    if !pq.path().starts_with('/') {
        return Err(ProxyError::BadTarget);
    }
    match crate::path::normalize_with(pq.path(), options).map_err(ProxyError::BadPath)? {
        Cow::Borrowed(_) => Ok(pq.clone()),
        Cow::Owned(mut p) => {
            if let Some(q) = pq.query() {
                p.push('?');
                p.push_str(q);
            }
            PathAndQuery::from_maybe_shared(Bytes::from(p)).map_err(|_| ProxyError::BadTarget)
        }
    }
}

/// Where `part` (a sub-slice of `whole`) sits in it.
fn span_in(whole: &str, part: &str) -> Option<(u32, u32)> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= whole.len()).then_some((start as u32, end as u32))
}

fn probe_response(status: StatusCode, json: Bytes) -> Response<Body> {
    let mut r = Response::new(ResponseBody::full(json));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// One request's journey, kept until its response body ends; then it records metrics and
/// writes the access-log line.
pub struct Exchange {
    gw: Arc<Gateway>,
    snap: Arc<Snapshot>,
    start: Instant,
    method: Method,
    path: PathAndQuery,
    class: Option<Class>,
    rule: Option<usize>,
    tenant: Option<(u32, u32)>,
    target: Option<Target>,
    upstream: Option<SocketAddr>,
    status: StatusCode,
    progress: Option<Arc<RequestProgress>>,
    inflight: Option<InFlight>,
}

impl Exchange {
    fn new(gw: Arc<Gateway>, snap: Arc<Snapshot>, parts: &http::request::Parts) -> Exchange {
        Exchange {
            gw,
            snap,
            start: Instant::now(),
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            class: None,
            rule: None,
            tenant: None,
            target: None,
            upstream: None,
            status: StatusCode::OK,
            progress: None,
            inflight: None,
        }
    }

    /// Step 6 for an upstream's answer: stamp it and attach the completion hook.
    fn respond(mut self, resp: Response<Forwarded>) -> Response<Body> {
        let (mut head, forwarded) = resp.into_parts();
        if forwarded.degraded {
            // Served locally: through the fleet pool.
            self.target = Some(Target::Fleet);
        }
        self.upstream = Some(forwarded.inflight.endpoint().addr);
        self.inflight = Some(forwarded.inflight);
        let stamp = Stamp {
            target: self.target,
            degraded: forwarded.degraded,
        };
        headers::stamp_response(&mut head.headers, &self.snap.node, &stamp);
        self.status = head.status;
        let no_body = self.method == Method::HEAD
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        let idle = self.snap.config.timeouts.idle;
        let body = ResponseBody::upstream(forwarded.body, idle).on_complete(self, no_body);
        Response::from_parts(head, body)
    }

    /// Step 6 for a request the stack refused or could not forward.
    fn fail(mut self, e: ProxyError) -> Response<Body> {
        // An ide-bound request can fail on the fleet pool only in its degrade fallback.
        let degraded = self.target == Some(Target::Ide) && e.upstream() == Some(Upstream::Fleet);
        if degraded {
            self.target = Some(Target::Fleet);
        }
        self.reject_with(e, degraded)
    }

    /// Answer the request ourselves with `e`'s response.
    fn reject(self, e: ProxyError) -> Response<Body> {
        self.reject_with(e, false)
    }

    fn reject_with(mut self, e: ProxyError, degraded: bool) -> Response<Body> {
        let mut resp: Response<Body> = e.to_response();
        let stamp = Stamp {
            target: self.target,
            degraded,
        };
        headers::stamp_response(resp.headers_mut(), &self.snap.node, &stamp);
        self.status = resp.status();
        let no_body = self.method == Method::HEAD;
        resp.map(|b| b.on_complete(self, no_body))
    }
}

impl OnComplete for Exchange {
    fn complete(self, bytes_out: u64, complete: bool) {
        let class = self.class.map_or("none", Class::as_str);
        let target = self.target.map_or("none", Target::as_str);
        let m = &self.gw.metrics;
        m.requests
            .with_label_values(&[class, target, self.status.as_str()])
            .inc();
        let elapsed = self.start.elapsed();
        m.duration
            .with_label_values(&[class, target])
            .observe(elapsed.as_secs_f64());
        if !self.snap.config.access_log {
            return;
        }
        let rule = self.rule.and_then(|i| self.snap.manifest.rules().get(i));
        let path = self.path.path();
        let tenant = self
            .tenant
            .and_then(|(s, e)| path.get(s as usize..e as usize))
            .unwrap_or("-");
        crate::logging::access(&crate::logging::AccessRecord {
            method: self.method.as_str(),
            path,
            class,
            rule_file: rule.map_or("-", |r| r.file.as_str()),
            rule_line: rule.map_or(0, |r| r.line),
            target,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str, allow_encoded_slash: bool) -> Result<String, ProxyError> {
        let uri: http::Uri = uri.parse().unwrap();
        normalized_target(
            &uri,
            NormalizeOptions {
                allow_encoded_slash,
            },
        )
        .map(|pq| pq.to_string())
    }

    #[test]
    fn the_target_is_normalized_and_the_query_kept() {
        assert_eq!(
            target("/a/./b//c/../d?x=%2F&y", false).unwrap(),
            "/a/b/d?x=%2F&y"
        );
        assert_eq!(target("/a/%62", false).unwrap(), "/a/b");
    }

    #[test]
    fn encoded_slashes_are_refused_unless_allowed() {
        assert!(matches!(
            target("/a%2fb", false),
            Err(ProxyError::BadPath(_))
        ));
        assert_eq!(target("/a%2fb", true).unwrap(), "/a%2Fb");
    }
}
