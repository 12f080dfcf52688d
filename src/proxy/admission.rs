//! The admit step: a tower layer that takes a slot of the target's bulkhead before a
//! request goes any further, or answers `503` without touching it.
//!
//! The bulkhead (one per upstream: the fleet pool, or the local application in roles ide,
//! worker and all; and the ide) is runtime state that survives reloads
//! ([`crate::state::Bulkheads`]); the scheduler behind it is [`crate::admission`]. This
//! layer only decides who the tenant is and what happens to the request:
//!
//! * the tenant: the value of `admission.tenant_header` when the request carries it, else
//!   the matched rule's `tenant` path parameter, else the anonymous bucket;
//! * admitted at once, or after waiting in its tenant's queue: the slot
//!   ([`crate::admission::Permit`]) travels with the request body
//!   ([`RequestBody::hold_permit`]) to the forward step, which keeps it with the response
//!   body (or, for a WebSocket, with the tunnel) until the exchange ends, so a slot is
//!   held until the last byte, not until the head. No allocation on the way;
//! * shed: [`ProxyError::Shed`] (`503`, `Retry-After`, `x-fleetgate-shed`); the request
//!   is never forwarded and its body is never read.
//!
//! A cancelled client drops this layer's future: its queue place (or a slot already
//! handed to it) is freed at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};

use crate::admission::{Acquire, Waiting};
use crate::body::RequestBody;
use crate::metrics::Metrics;
use crate::proxy::context::RequestContext;
use crate::proxy::error::ProxyError;
use crate::state::Bulkheads;

/// Wraps a service in [`Admission`].
#[derive(Clone)]
pub struct AdmissionLayer {
    bulkheads: Arc<Bulkheads>,
    metrics: Arc<Metrics>,
}

impl AdmissionLayer {
    pub fn new(bulkheads: Arc<Bulkheads>, metrics: Arc<Metrics>) -> AdmissionLayer {
        AdmissionLayer { bulkheads, metrics }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            bulkheads: self.bulkheads.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Admits, queues or sheds each request (see the module docs).
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    bulkheads: Arc<Bulkheads>,
    metrics: Arc<Metrics>,
}

/// The tenant of a request: the configured header, else the rule's tenant parameter.
/// Borrowed: choosing a tenant allocates nothing.
fn tenant_of<'a>(req: &'a Request<RequestBody>, cx: &'a RequestContext) -> Option<&'a str> {
    let header = cx.snapshot.config.admission.tenant_header.as_deref();
    header
        .and_then(|name| req.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .or_else(|| cx.tenant())
}

impl<S> Service<Request<RequestBody>> for Admission<S>
where
    S: Service<Request<RequestBody>, Error = ProxyError> + Clone,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<RequestBody>) -> Self::Future {
        let cx = RequestContext::of(req.extensions());
        let upstream = cx.route.target.upstream();
        let Some(bulkhead) = self.bulkheads.get(upstream) else {
            // This bulkhead is disabled (`max_inflight = 0`).
            return ResponseFuture::called(self.inner.call(req));
        };
        let acquired = bulkhead.try_acquire(tenant_of(&req, cx));
        match acquired {
            Acquire::Admitted(permit) => {
                req.body_mut().hold_permit(permit);
                ResponseFuture::called(self.inner.call(req))
            }
            Acquire::Queued(waiting) => {
                // The inner service was made ready for this call; the clone waits.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(
                    waiting,
                    inner,
                    req,
                    upstream.as_str(),
                    self.metrics.clone(),
                )
            }
            Acquire::Shed(shed) => {
                self.metrics
                    .admission_shed
                    .with_label_values(&[upstream.as_str(), shed.reason.as_str()])
                    .inc();
                ResponseFuture::shed(ProxyError::Shed {
                    reason: shed.reason,
                    retry_after: shed.retry_after,
                })
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Admission`]: the inner call, a wait for a slot, or a shed answer.
    pub struct ResponseFuture<S: Service<Request<RequestBody>>> {
        #[pin]
        state: State<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<RequestBody>>> {
        Called { #[pin] future: S::Future },
        Waiting {
            waiting: Waiting,
            call: Option<(S, Request<RequestBody>)>,
            target: &'static str,
            metrics: Arc<Metrics>,
        },
        Shed { error: Option<ProxyError> },
    }
}

impl<S: Service<Request<RequestBody>>> ResponseFuture<S> {
    fn called(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Called { future },
        }
    }

    fn waiting(
        waiting: Waiting,
        inner: S,
        req: Request<RequestBody>,
        target: &'static str,
        metrics: Arc<Metrics>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiting,
                call: Some((inner, req)),
                target,
                metrics,
            },
        }
    }

    fn shed(error: ProxyError) -> Self {
        ResponseFuture {
            state: State::Shed { error: Some(error) },
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<RequestBody>, Error = ProxyError>,
{
    type Output = Result<S::Response, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Shed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")))
                }
                StateProj::Waiting {
                    waiting,
                    call,
                    target,
                    metrics,
                } => {
                    let outcome = ready!(Pin::new(waiting).poll(cx));
                    match outcome {
                        Ok((permit, waited)) => {
                            observe_wait(metrics, waited);
                            let (mut inner, mut req) =
                                call.take().expect("polled after completion");
                            req.body_mut().hold_permit(permit);
                            let future = inner.call(req);
                            this.state.set(State::Called { future });
                        }
                        Err(shed) => {
                            metrics
                                .admission_shed
                                .with_label_values(&[target, shed.reason.as_str()])
                                .inc();
                            return Poll::Ready(Err(ProxyError::Shed {
                                reason: shed.reason,
                                retry_after: shed.retry_after,
                            }));
                        }
                    }
                }
            }
        }
    }
}

fn observe_wait(metrics: &Metrics, waited: Duration) {
    metrics.admission_wait.observe(waited.as_secs_f64());
}
