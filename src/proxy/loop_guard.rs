//! The loop guard layer (DESIGN.md §5): a request whose `x-fleetgate-via` already names
//! this node, or already lists `limits.max_hops` nodes, is answered `508 Loop Detected`
//! ([`ProxyError::LoopDetected`], [`ProxyError::TooManyHops`]) and never reaches the
//! layers below it.
//!
//! The check is [`headers::check_loop`], against the node id and hop limit of the
//! request's own snapshot ([`Routed`]); this module only puts it in the stack. The
//! `x-fleetgate-via` entry that the next hop checks is added by
//! [`forward_headers`](super::forward_headers).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use crate::error::ProxyError;
use crate::proxy::headers;
use crate::proxy::routed::Routed;

/// Wraps a service in a [`LoopGuard`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopGuardLayer;

impl LoopGuardLayer {
    pub fn new() -> LoopGuardLayer {
        LoopGuardLayer
    }
}

impl<S> Layer<S> for LoopGuardLayer {
    type Service = LoopGuard<S>;

    fn layer(&self, inner: S) -> LoopGuard<S> {
        LoopGuard { inner }
    }
}

/// Answers looping requests with `508`; passes the others on unchanged.
#[derive(Debug, Clone)]
pub struct LoopGuard<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for LoopGuard<S>
where
    S: Service<Request<B>, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let node = &Routed::of(req.extensions()).snapshot.node;
        match headers::check_loop(req.headers(), node) {
            Ok(()) => ResponseFuture::Passed {
                inner: self.inner.call(req),
            },
            Err(error) => ResponseFuture::Looped { error: Some(error) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, or the `508` answer.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F> {
        Passed { #[pin] inner: F },
        Looped { error: Option<ProxyError> },
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Passed { inner } => inner.poll(cx),
            ResponseFutureProj::Looped { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http::{Method, Response};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::proxy::headers::X_FLEETGATE_VIA;
    use crate::proxy::routed::testing;
    use crate::proxy::target::Target;

    /// The guard over a counting inner service (node `n1`, four hops allowed).
    async fn guard(via: Option<&'static str>) -> (Result<Response<()>, ProxyError>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, ProxyError>(Response::new(())) }
        });
        let mut req = testing::request(Method::GET, "/x", Target::Fleet, ());
        if let Some(v) = via {
            req.headers_mut()
                .insert(X_FLEETGATE_VIA, v.parse().unwrap());
        }
        let result = LoopGuardLayer::new().layer(inner).oneshot(req).await;
        (result, calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn passes_requests_that_do_not_loop() {
        let (r, calls) = guard(None).await;
        assert!(r.is_ok());
        assert_eq!(calls, 1);
        let (r, calls) = guard(Some("edge, gw")).await;
        assert!(r.is_ok());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn answers_508_on_its_own_node_id_without_calling_inner() {
        let (r, calls) = guard(Some("edge, n1")).await;
        let e = r.unwrap_err();
        assert_eq!(e, ProxyError::LoopDetected);
        assert_eq!(e.status().as_u16(), 508);
        assert_eq!(calls, 0);
    }

    #[tokio::test]
    async fn answers_508_past_max_hops_without_calling_inner() {
        let (r, calls) = guard(Some("a, b, c, d")).await;
        assert_eq!(r.unwrap_err(), ProxyError::TooManyHops);
        assert_eq!(calls, 0);
    }
}
