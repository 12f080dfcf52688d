//! The data path: the life of one request, as a sequence of named steps.
//!
//! ```text
//! normalize   normalize.rs      one canonical path, one authority       400
//! probe       crate::health     /healthz, /readyz answered here, never shed
//! loop guard  headers.rs        x-fleetgate-via names this node          508
//! classify    crate::manifest   compiled manifest, no allocation; unlisted requests
//!                               counted (crate::unlisted)
//! target      target.rs         the role table                           421
//! guard       guard.rs          super_read_only; unlisted writes → ide   503 / 421
//! ── the stack (tower layers, outermost first) ─────────────────────────────────
//! admit       admission.rs      a slot of the target's bulkhead, or     503
//! headers     forward_headers.rs hop-by-hop hygiene, x-forwarded-*, via, traceparent
//! forward     forward.rs        pool of the target, degrade fallback, tunnels  502 / 504
//! ── respond   exchange.rs       stamps; metrics and access log when the body ends
//! ```
//!
//! [`Proxy::handle`] loads the live snapshot once per request; the request keeps it to
//! its end, in its [`RequestContext`] (with the routing decision, [`Route`]). Every error
//! becomes an answer in one place, [`error`].
//!
//! Allocation: the layers' futures are named types; the innermost [`Forward`] future is
//! the one boxed future of the stack.

pub mod admission;
pub mod context;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod forward_headers;
pub mod guard;
pub mod headers;
pub mod normalize;
pub mod service;
pub mod target;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::manifest::RequestParts;
use crate::path::NormalizeOptions;
use crate::state::State;
use crate::upstream::Upstream;
use admission::{Admission, AdmissionLayer};
pub use context::{RequestContext, Route};
pub use error::{GuardReason, ProxyError};
pub use exchange::{Body, Exchange};
use forward::Forward;
use forward_headers::{ForwardHeaders, ForwardHeadersLayer};
use headers::ClientSide;
pub use service::ProxyService;

/// Everything from admission to the upstream's response head, as one service.
pub type ProxyStack = Admission<ForwardHeaders<Forward>>;

/// Per-connection facts the data path needs.
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The peer's IP as a header value, for `x-forwarded-for`.
    pub remote_ip_value: http::HeaderValue,
    pub tls: bool,
    /// Set by the first request; the server closes connections that send none in time.
    pub seen_request: AtomicBool,
    /// Requests begun on this connection whose responses have not ended.
    requests_open: AtomicU32,
    /// When the connection last had no request open (accepted, or its last response
    /// ended), in ms of [`clock_ms`](crate::upstream::pool::clock_ms).
    idle_since_ms: AtomicU64,
    /// Upgraded connections handed from the connection's task to the tunnel.
    pub handover: crate::upstream::upgrade::Handover,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            remote,
            remote_ip_value: headers::ip_header_value(remote.ip()),
            tls,
            seen_request: AtomicBool::new(false),
            requests_open: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(crate::upstream::pool::clock_ms()),
            handover: crate::upstream::upgrade::Handover::default(),
        }
    }

    /// A request begins on this connection; it is open until the guard is dropped (with
    /// its response body, or its exchange when answered early).
    pub fn begin_request(self: &Arc<Self>) -> OpenRequest {
        self.seen_request.store(true, Ordering::Relaxed);
        self.requests_open.fetch_add(1, Ordering::Relaxed);
        OpenRequest(self.clone())
    }

    /// Since when no request has been open on this connection (ms of
    /// [`clock_ms`](crate::upstream::pool::clock_ms)): since it was accepted or its last
    /// response ended; `None` while a request is open (no head is awaited then). The
    /// server's lazy clock reads it when it fires, instead of arming a timer for every head.
    pub fn idle_since_ms(&self) -> Option<u64> {
        if self.requests_open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.idle_since_ms.load(Ordering::Relaxed))
    }
}

/// A request open on its connection (see [`ConnInfo::begin_request`]).
pub struct OpenRequest(Arc<ConnInfo>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(crate::upstream::pool::clock_ms(), Ordering::Relaxed);
        self.0.requests_open.fetch_sub(1, Ordering::Release);
    }
}

/// The data path of one server.
pub struct Proxy {
    state: Arc<State>,
    /// Built once; cloned (an `Arc`) for each request.
    stack: ProxyStack,
}

impl Proxy {
    pub fn new(state: Arc<State>) -> Proxy {
        let rt = &state.runtime;
        let stack = ServiceBuilder::new()
            // (The guard step, before the stack, has already refused what it refuses: a
            // refused write never takes a slot.) Admission first: a shed request is answered before anything is rewritten,
            // forwarded or read from its body.
            .layer(AdmissionLayer::new(
                rt.bulkheads.clone(),
                rt.metrics.clone(),
            ))
            .layer(ForwardHeadersLayer::new())
            .service(Forward::new(state.runtime.client.clone()));
        Proxy { state, stack }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Handle one request from the data listener: the steps of the module docs, in order.
    pub async fn handle(&self, req: Request<Incoming>, conn: &Arc<ConnInfo>) -> Response<Body> {
        let open = conn.begin_request();
        let snap = self.state.snapshot();
        let (mut parts, body) = req.into_parts();
        let mut ex = Exchange::new(
            self.state.runtime.metrics.clone(),
            snap.clone(),
            &parts,
            open,
        );

        // normalize: one canonical path, used for classification and upstream alike.
        let options = NormalizeOptions {
            allow_encoded_slash: snap.config.allow_encoded_slash,
        };
        let path = match normalize::normalized_target(&parts.uri, options) {
            Ok(pq) => pq,
            Err(e) => return ex.reject(e),
        };
        ex.path = path.clone();

        // probe: /healthz and /readyz are answered here, never forwarded.
        if let Some((status, json)) = crate::health::probe(&self.state, path.path()) {
            return probe_response(status, json);
        }

        // authority: one Host, the one the upstream gets (probes above need none); and a
        // body with one framing.
        if let Err(e) = normalize::authority(parts.version, &parts.uri, &mut parts.headers)
            .and_then(|()| normalize::framing(parts.version, &parts.headers))
        {
            return ex.reject(e);
        }

        // loop guard: a request that already passed through this node goes no further.
        if let Err(e) = headers::check_loop(&parts.headers, &snap.node) {
            return ex.reject(e);
        }

        // skew: a request from another fleetgate names its manifest; a different one means
        // a rollout is half done (reported, see crate::health).
        if let Some(peer) = parts.headers.get(&headers::X_FLEETGATE_MANIFEST) {
            if peer != snap.node.manifest {
                self.skewed(
                    peer,
                    parts.headers.get(&headers::X_FLEETGATE_GENERATION),
                    conn,
                    &snap,
                );
            }
        }

        // classify (no allocation).
        let decision = snap.manifest.classify(&RequestParts {
            method: parts.method.as_str(),
            path: path.path(),
            query: path.query(),
            headers: &parts.headers,
        });
        ex.class = Some(decision.class);
        snap.rule_hits.hit(decision.rule_index);
        if decision.rule.is_none() {
            // Drift seen at run time: a request no rule names.
            self.unlisted(parts.method.as_str(), path.path());
        }

        // target: the role table.
        let ide_configured = snap.pool(Upstream::Ide).is_some();
        let Some(target) = target::route(snap.config.role, decision.class, ide_configured) else {
            return ex.reject(ProxyError::Misdirected);
        };
        let mut route = Route {
            class: decision.class,
            rule_index: decision.rule_index,
            tenant: decision.tenant_at,
            target,
            degrade: decision.rule.is_some_and(|r| r.degrade),
            upgrade: headers::is_upgrade_request(parts.version, &parts.headers),
        };
        ex.route = Some(route);
        if route.upgrade {
            // The client's side of the switch, for the tunnel (see upgrade.rs).
            let hyper = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            if let Some(client) = conn.handover.client_upgrade(hyper) {
                parts.extensions.insert(client);
            }
        }

        // guard: writes that a stateless replica would lose go to the ide, or nowhere.
        let verdict = guard::check(
            &parts.method,
            route,
            decision.rule,
            snap.config.role,
            ide_configured,
            &snap.config.guard,
            self.state.runtime.super_read_only(),
        );
        match verdict {
            guard::Verdict::Pass => {}
            guard::Verdict::Redirect(guarded) => {
                self.guarded(
                    guard::Action::Redirect,
                    GuardReason::UnlistedWrite,
                    &parts.method,
                    path.path(),
                    decision.rule,
                );
                route = guarded;
                ex.route = Some(route);
            }
            guard::Verdict::Refuse(e, reason) => {
                self.guarded(
                    guard::Action::Refuse,
                    reason,
                    &parts.method,
                    path.path(),
                    decision.rule,
                );
                if e == ProxyError::Misdirected {
                    ex.route = None;
                }
                return ex.reject(e);
            }
        }

        // The decision is made; from here on it travels with the request.
        let client = ClientSide {
            ip: conn.remote.ip(),
            ip_value: conn.remote_ip_value.clone(),
            tls: conn.tls,
            version: parts.version,
        };
        let (body, progress) = RequestBody::new(body, snap.config.timeouts.idle);
        ex.progress = progress;
        parts.extensions.insert(RequestContext {
            route,
            snapshot: snap,
            path,
            client,
        });
        let routed = Request::from_parts(parts, body);

        // the stack: (guard,) admit, headers, forward.
        let answer = self.stack.clone().oneshot(routed).await;

        // respond: stamps; metrics and access log when the body ends.
        match answer {
            Ok(resp) => ex.respond(resp),
            Err(e) => ex.reject(e),
        }
    }
}

impl Proxy {
    /// Count a request that matched no rule and remember its (method, path shape).
    fn unlisted(&self, method: &str, path: &str) {
        let rt = &self.state.runtime;
        let kind = crate::unlisted::MethodKind::of(method);
        rt.metrics
            .unlisted
            .with_label_values(&[kind.as_str()])
            .inc();
        let mut buf = crate::unlisted::ShapeBuf::new();
        rt.unlisted
            .record(method, crate::unlisted::path_shape(path, &mut buf));
    }

    /// Record a request that carried another fleetgate's manifest digest.
    fn skewed(
        &self,
        digest: &HeaderValue,
        generation: Option<&HeaderValue>,
        conn: &ConnInfo,
        snap: &crate::state::Snapshot,
    ) {
        let rt = &self.state.runtime;
        rt.metrics.skewed_requests.inc();
        let ip = conn.remote.ip();
        let trusted = snap.config.trusted_peers.iter().any(|n| n.contains(&ip));
        let text = |v: &HeaderValue| {
            let s = v.to_str().unwrap_or("(not text)");
            // Bounded: a client could send anything.
            s.get(..s.len().min(80)).unwrap_or(s).to_string()
        };
        let generation = generation.map_or_else(|| "unknown".to_string(), text);
        rt.skew.record(&text(digest), &generation, ip, trusted);
    }

    /// Count and log what the guard did to a request.
    fn guarded(
        &self,
        action: guard::Action,
        reason: GuardReason,
        method: &http::Method,
        path: &str,
        rule: Option<&crate::manifest::Rule>,
    ) {
        self.state
            .runtime
            .metrics
            .guard
            .with_label_values(&[action.as_str(), reason.as_str()])
            .inc();
        let rule = rule.map_or_else(|| "(default class)".to_string(), |r| r.location());
        tracing::info!(
            action = action.as_str(),
            reason = reason.as_str(),
            method = method.as_str(),
            path,
            rule = %rule,
            "guard"
        );
    }
}

fn probe_response(status: StatusCode, json: Bytes) -> Response<Body> {
    let mut r = Response::new(ResponseBody::full(json));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A response of ours with a body that is not an exchange (the panic handler's 500).
pub fn plain_response(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(text.as_bytes()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
