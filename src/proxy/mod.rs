//! The request pipeline: the life of one request as a sequence of named steps
//! (DESIGN.md §1):
//!
//! ```text
//! normalize -> probe short-circuit -> classify -> target -> [guard, admit: later] -> forward -> respond
//! ```
//!
//! [`Gateway::handle`] reads top to bottom in that order. Each step either passes the
//! request on or answers it with a [`ProxyError`] (mapped to HTTP in [`crate::error`]).
//! The manifest and reloadable config are one [`Snapshot`] behind an `ArcSwap`, loaded
//! once per request, so a request sees one consistent snapshot from start to end. The
//! decision travels in an [`Exchange`], which becomes the response body's completion
//! hook: metrics and the access log are written when the body ends.
//!
//! * [`headers`]: hygiene, forwarding headers, loop guard, stamps.
//! * [`target`]: the role table.
//! * [`upstream`]: pools, balancing, ejection, DNS.
//! * [`forward`]: the client, timeouts, retries, upgrade tunnels.
//! * [`body`]: streaming bodies with idle timeouts and byte counts.

pub mod body;
pub mod forward;
pub mod headers;
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
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;

use crate::config::Config;
use crate::error::ProxyError;
use crate::manifest::{Class, Manifest, RequestParts};
use crate::metrics::Metrics;
use body::{OnComplete, RequestBody, RequestProgress, ResponseBody};
use forward::Forwarder;
use headers::{ClientSide, NodeHeaders, Stamp};
use target::{Route, Target};
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
    pub forwarder: Forwarder,
    pub metrics: Arc<Metrics>,
    phase: AtomicU8,
}

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
            target::Upstream::Fleet,
            config.upstreams.fleet.clone(),
            metrics.clone(),
        ));
        let ide = config
            .upstreams
            .ide
            .clone()
            .map(|u| Arc::new(Pool::new(target::Upstream::Ide, vec![u], metrics.clone())));
        let forwarder = Forwarder::new(&config.timeouts, metrics.clone());
        Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config, manifest)),
            fleet,
            ide,
            forwarder,
            metrics,
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

    fn pool(&self, t: Target) -> &Pool {
        match t {
            Target::Ide => self
                .ide
                .as_deref()
                .expect("the role table only picks ide when configured"),
            Target::Local | Target::Fleet => &self.fleet,
        }
    }

    /// Handle one request from the data listener.
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
        let pq = match normalized_target(&parts.uri) {
            Ok(pq) => pq,
            Err(e) => return ex.reject(e),
        };
        ex.path = pq.clone();

        // 2. probe short-circuit: /healthz and /readyz are answered here, never forwarded.
        if let Some((status, json)) = crate::admin::probe(self, pq.path()) {
            return probe_response(status, json);
        }

        // 3. classify (no allocation).
        let decision = snap.manifest.classify(&RequestParts {
            method: parts.method.as_str(),
            path: pq.path(),
            query: pq.query(),
            headers: &parts.headers,
        });
        ex.class = Some(decision.class);
        ex.rule = decision.rule_index;
        ex.tenant = decision.tenant.and_then(|t| span_in(pq.path(), t));
        let degrade = decision.rule.is_some_and(|r| r.degrade);

        // 4. target: the role table.
        let ide_configured = self.ide.is_some();
        let target = match target::route(snap.config.role, decision.class, ide_configured) {
            Route::Forward(t) => t,
            Route::Misdirected => return ex.reject(ProxyError::Misdirected),
        };
        ex.target = Some(target);

        // (Later issues slot in here: the super_read_only guard, then admission control.)

        // 5. forward: loop guard, header hygiene, streaming, upgrades, timeouts.
        if let Err(e) = headers::check_loop(&parts.headers, &snap.node) {
            return ex.reject(e);
        }
        let upgrade = headers::is_upgrade_request(parts.version, &parts.headers);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        let client = ClientSide {
            ip: conn.remote.ip(),
            tls: conn.tls,
            version: parts.version,
        };
        headers::forward_request(
            &mut parts.headers,
            parts.uri.authority(),
            &client,
            &snap.node,
        );

        // A degradable ide-only read keeps what it needs to be served locally instead.
        let degradable = degrade
            && target == Target::Ide
            && matches!(parts.method, Method::GET | Method::HEAD)
            && body.is_end_stream();
        let fallback = degradable.then(|| (parts.method.clone(), parts.headers.clone()));

        let idle = snap.config.timeouts.idle;
        let (req_body, progress) = RequestBody::new(body, idle);
        ex.progress = progress.clone();
        let request = Request::from_parts(parts, req_body);
        let mut sent = self
            .forwarder
            .send(self.pool(target), request, pq.clone(), progress.as_deref())
            .await;
        let mut degraded = false;
        if let (Err(ProxyError::Unreachable { .. }), Some((method, headers))) = (&sent, fallback) {
            let mut req = Request::new(RequestBody::empty());
            *req.method_mut() = method;
            *req.headers_mut() = headers;
            // Served locally: through the fleet pool, marked degraded.
            ex.target = Some(Target::Fleet);
            degraded = true;
            sent = self.forwarder.send(&self.fleet, req, pq, None).await;
        }
        let (mut resp, inflight) = match sent {
            Ok(r) => r,
            Err(e) => return ex.reject_with(e, degraded),
        };

        // 6. respond: tunnel, hygiene, stamps; metrics and access log when the body ends.
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match client_upgrade {
                Some(on) => self.forwarder.tunnel(on, &mut resp),
                None => {
                    return ex.reject(ProxyError::UpstreamFailed {
                        upstream: target.upstream(),
                    })
                }
            }
        }
        ex.upstream = Some(inflight.endpoint().addr);
        ex.inflight = Some(inflight);
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
        let stamp = Stamp {
            target: Some(ex.target.unwrap_or(target)),
            degraded,
        };
        headers::stamp_response(resp.headers_mut(), &snap.node, &stamp);
        ex.status = resp.status();
        let no_body = ex.method == Method::HEAD
            || resp.status().is_informational()
            || resp.status() == StatusCode::NO_CONTENT
            || resp.status() == StatusCode::NOT_MODIFIED;
        let (head, body) = resp.into_parts();
        Response::from_parts(
            head,
            ResponseBody::upstream(body, idle).on_complete(ex, no_body),
        )
    }
}

/// The canonical request target for the upstream: the normalized path plus the query,
/// unchanged. Reuses the client's bytes when the path was already canonical.
fn normalized_target(uri: &http::Uri) -> Result<PathAndQuery, ProxyError> {
    let Some(pq) = uri.path_and_query() else {
        return Err(ProxyError::BadTarget);
    };
    if !pq.path().starts_with('/') {
        return Err(ProxyError::BadTarget);
    }
    match crate::path::normalize(pq.path()).map_err(ProxyError::BadPath)? {
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
