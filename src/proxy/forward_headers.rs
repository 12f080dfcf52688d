//! The header hygiene layer, both directions of one hop.
//!
//! On the way up, before the inner service sees the request: hop-by-hop headers and every
//! header named in `Connection` are removed (an HTTP/1.1 `Upgrade` keeps `Upgrade` and
//! `Connection: upgrade` for the tunnel handshake); `Host` is set from an HTTP/2
//! `:authority`; `x-forwarded-for` is appended, `x-forwarded-proto` and
//! `x-forwarded-host` set, `via` appended; a W3C `traceparent` is kept when valid and
//! created otherwise; this node is appended to `x-fleetgate-via` and its manifest digest
//! set in `x-fleetgate-manifest`.
//!
//! On the way back: the response's hop-by-hop headers are removed (a `101 Switching
//! Protocols` keeps its `Upgrade`).
//!
//! The rules themselves live in [`headers`]; this module applies them in the stack, with
//! the client side and node values of the request's [`RequestContext`]. Response stamps
//! (`x-fleetgate-target`, `-served-by`, …) are not here: they go on fleetgate's own
//! answers too, so the respond step adds them.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::proxy::context::RequestContext;
use crate::proxy::headers;

/// Wraps a service in [`ForwardHeaders`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardHeadersLayer;

impl ForwardHeadersLayer {
    pub fn new() -> ForwardHeadersLayer {
        ForwardHeadersLayer
    }
}

impl<S> Layer<S> for ForwardHeadersLayer {
    type Service = ForwardHeaders<S>;

    fn layer(&self, inner: S) -> ForwardHeaders<S> {
        ForwardHeaders { inner }
    }
}

/// Rewrites a request's headers for the next hop, and the response's for the client.
#[derive(Debug, Clone)]
pub struct ForwardHeaders<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ForwardHeaders<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let cx = RequestContext::of(&parts.extensions);
        headers::strip_hop_by_hop(&mut parts.headers, cx.route.upgrade);
        headers::prepare_upstream_request(
            &mut parts.headers,
            parts.uri.authority(),
            &cx.client,
            &cx.snapshot.node,
        );
        ResponseFuture {
            inner: self.inner.call(Request::from_parts(parts, body)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; strips the response's hop-by-hop headers.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut resp = ready!(self.project().inner.poll(cx))?;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use http::header::{CONNECTION, HOST, UPGRADE, VIA};
    use http::{HeaderMap, Method};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::proxy::context::{testing, RequestContext};
    use crate::proxy::error::ProxyError;
    use crate::proxy::headers::{
        TRACEPARENT, X_FLEETGATE_MANIFEST, X_FLEETGATE_VIA, X_FORWARDED_FOR, X_FORWARDED_HOST,
        X_FORWARDED_PROTO,
    };
    use crate::proxy::target::Target;

    /// Run `req` through the layer over an inner service that records the headers it
    /// saw and answers with `answer`.
    async fn through(req: Request<()>, answer: Response<()>) -> (HeaderMap, Response<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut answer = Some(answer);
        let inner = service_fn(move |req: Request<()>| {
            tx.send(req.headers().clone()).unwrap();
            let resp = answer.take().expect("called once");
            async move { Ok::<_, ProxyError>(resp) }
        });
        let resp = ForwardHeadersLayer::new()
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        (rx.recv().unwrap(), resp)
    }

    #[tokio::test]
    async fn rewrites_request_headers_before_the_inner_service_sees_them() {
        let mut req = testing::request(Method::POST, "/api/x", Target::Fleet, ());
        let h = req.headers_mut();
        h.insert(HOST, "app.example".parse().unwrap());
        h.insert(CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        h.insert(X_FLEETGATE_VIA, "edge".parse().unwrap());

        let (seen, _) = through(req, Response::new(())).await;
        assert!(!seen.contains_key(CONNECTION));
        assert!(!seen.contains_key("x-secret"));
        assert_eq!(seen[X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
        assert_eq!(seen[X_FORWARDED_HOST], "app.example");
        assert_eq!(seen[X_FORWARDED_PROTO], "http");
        assert_eq!(seen[VIA], "1.1 n1");
        assert_eq!(seen[X_FLEETGATE_VIA], "edge, n1");
        assert_eq!(
            seen[X_FLEETGATE_MANIFEST],
            testing::snapshot(4).manifest.digest()
        );
        assert!(seen.contains_key(TRACEPARENT));
    }

    #[tokio::test]
    async fn keeps_the_upgrade_handshake() {
        let mut req = testing::request(Method::GET, "/ws", Target::Fleet, ());
        req.headers_mut()
            .insert(CONNECTION, "Upgrade".parse().unwrap());
        req.headers_mut()
            .insert(UPGRADE, "websocket".parse().unwrap());
        // The front of the data path decided it: an upgrade.
        req.extensions_mut()
            .get_mut::<RequestContext>()
            .unwrap()
            .route
            .upgrade = true;
        let mut switching = Response::new(());
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        switching
            .headers_mut()
            .insert(CONNECTION, "upgrade".parse().unwrap());
        switching
            .headers_mut()
            .insert(UPGRADE, "websocket".parse().unwrap());

        let (seen, resp) = through(req, switching).await;
        assert_eq!(seen[UPGRADE], "websocket");
        assert_eq!(seen[CONNECTION], "upgrade");
        assert_eq!(resp.headers()[UPGRADE], "websocket");
        assert_eq!(resp.headers()[CONNECTION], "upgrade");
    }

    #[tokio::test]
    async fn strips_hop_by_hop_headers_from_the_response() {
        let req = testing::request(Method::GET, "/x", Target::Fleet, ());
        let mut resp = Response::new(());
        let h = resp.headers_mut();
        h.insert(CONNECTION, "close, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());

        let (_, resp) = through(req, resp).await;
        let names: Vec<_> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }
}
