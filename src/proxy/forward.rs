//! The forward step, innermost in the proxy stack: [`Forward`] sends a routed request to
//! the pool of its target in the request's own snapshot and hands back the upstream's
//! response head with the body still unread ([`Answered`]). It owns the degrade fallback
//! (an unreachable ide serves a `degrade = true` GET/HEAD from the local pool instead)
//! and HTTP/1.1 `Upgrade` tunnels. The headers arrive already prepared by the layers
//! above it; the exchange with an endpoint is [`UpstreamClient`]'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::admission::Permit;
use crate::body::RequestBody;
use crate::proxy::context::{RequestContext, Route};
use crate::proxy::error::ProxyError;
use crate::proxy::target::Target;
use crate::upstream::{InFlight, Upstream, UpstreamClient, UpstreamError};

/// What [`Forward`] hands back as the body of the upstream's response: the body itself,
/// still unread, and what the respond step records about the exchange.
pub struct Answered {
    pub body: Incoming,
    /// Counts the request against its endpoint until dropped (with the response body).
    pub inflight: InFlight,
    /// The ide was unreachable and the local pool answered instead (a degrade rule).
    pub degraded: bool,
    /// The admission slot, held until the response body ends.
    pub permit: Option<Permit>,
}

/// The future of [`Forward`]: the one allocation the stack makes per request.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Answered>, ProxyError>> + Send>>;

/// The innermost service: sends the request upstream (see the module docs).
///
/// Always ready: it applies no backpressure. Load is shed by admission control, with a
/// `503`, in a layer above it.
#[derive(Clone)]
pub struct Forward {
    client: Arc<UpstreamClient>,
}

impl Forward {
    pub fn new(client: Arc<UpstreamClient>) -> Forward {
        Forward { client }
    }

    async fn forward(
        self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Answered>, ProxyError> {
        // The context goes no further: the upstream request does not carry it.
        let cx = req
            .extensions_mut()
            .remove::<RequestContext>()
            .expect("requests reach the proxy stack only after routing");
        let route = cx.route;
        // The admission slot stays with the exchange, not with the request body.
        let mut permit = req.body_mut().take_permit();
        let upstream = route.target.upstream();
        let pool = cx.snapshot.pool(upstream).ok_or(ProxyError::Misdirected)?;
        let first_byte = cx.snapshot.config.timeouts.first_byte;

        // The client's side of an upgrade, kept for the tunnel.
        let client_upgrade = if route.upgrade {
            req.extensions_mut()
                .remove::<crate::upstream::upgrade::ClientUpgrade>()
        } else {
            None
        };
        // A degradable ide-only read keeps what it needs to be served locally instead.
        let fallback =
            degradable(&route, &req).then(|| (req.method().clone(), req.headers().clone()));

        let mut degraded = false;
        let mut sent = self
            .client
            .send(pool, req, cx.path.clone(), first_byte)
            .await;
        if let (Err(UpstreamError::Unreachable { .. }), Some((method, headers))) = (&sent, fallback)
        {
            let mut local = Request::new(RequestBody::empty());
            *local.method_mut() = method;
            *local.headers_mut() = headers;
            // Boxed: the fallback is rare, and inline it would double this future's size
            // (boxed for every request).
            match Box::pin(
                self.client
                    .send(&cx.snapshot.fleet, local, cx.path, first_byte),
            )
            .await
            {
                Ok(answer) => {
                    degraded = true;
                    sent = Ok(answer);
                }
                // The request needed the ide; its error is the answer.
                Err(e) => tracing::warn!(
                    kind = e.kind(),
                    "degrade fallback to the local pool failed as well"
                ),
            }
        }
        let answered_by = if degraded { Upstream::Fleet } else { upstream };
        let (mut resp, inflight) =
            sent.map_err(|error| ProxyError::Upstream { upstream, error })?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                // A WebSocket holds its slot for as long as the tunnel is open.
                Some(on) => self.client.tunnel(on, &mut resp, permit.take()),
                None => {
                    return Err(ProxyError::Upstream {
                        upstream: answered_by,
                        error: UpstreamError::Failed,
                    })
                }
            }
        }
        Ok(resp.map(|body| Answered {
            body,
            inflight,
            degraded,
            permit,
        }))
    }
}

/// Can this request be served locally when the ide is unreachable? A degrade rule's
/// GET or HEAD without a body, on its way to the ide.
fn degradable(route: &Route, req: &Request<RequestBody>) -> bool {
    route.degrade
        && route.target == Target::Ide
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && req.body().is_end_stream()
}

impl tower::Service<Request<RequestBody>> for Forward {
    type Response = Response<Answered>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> ResponseFuture {
        Box::pin(self.clone().forward(req))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::manifest::Class;
    use crate::metrics::Metrics;
    use crate::proxy::context::testing;

    fn forward() -> Forward {
        let metrics = Arc::new(Metrics::new());
        Forward::new(Arc::new(UpstreamClient::new(
            Config::default().timeouts.connect,
            metrics,
            1,
        )))
    }

    fn ide_request(method: Method, degrade: bool) -> Request<RequestBody> {
        let route = Route {
            class: Class::IdeOnly,
            rule_index: None,
            tenant: None,
            target: Target::Ide,
            degrade,
            upgrade: false,
        };
        testing::routed_request(
            method,
            "/api/w/files",
            route,
            testing::snapshot(4),
            RequestBody::empty(),
        )
    }

    fn failed_upstream(r: Result<Response<Answered>, ProxyError>) -> Option<Upstream> {
        match r {
            Err(ProxyError::Upstream { upstream, .. }) => Some(upstream),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_target_picks_the_pool_of_the_requests_snapshot() {
        let r = forward().oneshot(ide_request(Method::POST, false)).await;
        assert_eq!(failed_upstream(r), Some(Upstream::Ide));
        let req = testing::request(Method::GET, "/x", Target::Local, RequestBody::empty());
        let r = forward().oneshot(req).await;
        assert_eq!(failed_upstream(r), Some(Upstream::Fleet));
    }

    #[tokio::test]
    async fn a_failed_fallback_answers_with_the_ides_error() {
        // Both pools are unreachable: the degradable read tried the local pool, and the
        // answer is still the ide's (so it keeps x-fleetgate-required-role).
        let r = forward().oneshot(ide_request(Method::GET, true)).await;
        assert!(matches!(
            r,
            Err(ProxyError::Upstream {
                upstream: Upstream::Ide,
                error: UpstreamError::Unreachable { .. }
            })
        ));
    }
}
