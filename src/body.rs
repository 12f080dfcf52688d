//! Body wrappers on both sides of the proxy: streaming with an idle timeout between
//! chunks, byte counting, and the end-of-response hook that writes the access log.
//!
//! * [`RequestBody`] is what the upstream receives: the client's body, frame by frame,
//!   failing with [`BodyError::IdleTimeout`] when the client stalls, and waking the
//!   first-byte timer when it ends.
//! * [`ResponseBody`] is what the client receives: a short local answer, or the upstream's
//!   body frame by frame, failing (so hyper aborts the connection / resets the stream)
//!   when the upstream stalls or resets mid-body — never a silently truncated success.
//!   When it ends or is dropped it hands the byte count to its [`OnComplete`] hook.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::admission::Permit;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a streamed body failed.
#[derive(Debug)]
pub enum BodyError {
    /// No chunk within `timeouts.idle`.
    IdleTimeout,
    /// The client's side of the exchange failed (it went away mid-upload).
    Client(hyper::Error),
    /// The upstream's side failed (reset or closed mid-body).
    Upstream(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::IdleTimeout => f.write_str("no body data within the idle timeout"),
            BodyError::Client(e) => write!(f, "client body: {e}"),
            BodyError::Upstream(e) => write!(f, "upstream body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::IdleTimeout => None,
            BodyError::Client(e) | BodyError::Upstream(e) => Some(e),
        }
    }
}

/// Shared between a streamed request body and the request's forwarder.
#[derive(Default)]
pub struct RequestProgress {
    bytes: AtomicU64,
    sent: Notify,
}

impl RequestProgress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Resolves once the request body has been read to its end.
    pub async fn sent(&self) {
        self.sent.notified().await
    }
}

/// The request body sent upstream.
pub struct RequestBody {
    inner: Option<Incoming>,
    idle: Duration,
    /// Armed when the client's body is polled and has nothing: the idle clock only runs
    /// while the proxy is waiting for the client, not while the upstream is slow to read.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    progress: Option<Arc<RequestProgress>>,
    /// The admission slot, carried from the admit step to the forward step (which takes
    /// it out before the body is sent, and keeps it with the response).
    permit: Option<Permit>,
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            idle: Duration::ZERO,
            timer: None,
            waiting: false,
            progress: None,
            permit: None,
        }
    }

    /// Carry an admission slot along with the request (no allocation).
    pub fn hold_permit(&mut self, permit: Permit) {
        self.permit = Some(permit);
    }

    /// The admission slot the request carries, if any.
    pub fn take_permit(&mut self) -> Option<Permit> {
        self.permit.take()
    }

    /// Wrap the client's body. Returns the progress handle when there is a body to stream.
    pub fn new(body: Incoming, idle: Duration) -> (RequestBody, Option<Arc<RequestProgress>>) {
        if body.is_end_stream() {
            return (RequestBody::empty(), None);
        }
        let progress = Arc::new(RequestProgress::default());
        let wrapped = RequestBody {
            inner: Some(body),
            idle,
            timer: None,
            waiting: false,
            progress: Some(progress.clone()),
            permit: None,
        };
        (wrapped, Some(progress))
    }

    /// The progress handle, while the body is still being streamed.
    pub fn progress(&self) -> Option<&Arc<RequestProgress>> {
        self.progress.as_ref()
    }

    fn finish(&mut self) {
        self.inner = None;
        self.timer = None;
        if let Some(p) = self.progress.take() {
            p.sent.notify_one();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if let Some(p) = &this.progress {
                        p.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                this.waiting = false;
                if this.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::IdleTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// Called once when a response body has ended (or was dropped early).
pub trait OnComplete: Send + 'static {
    /// `bytes`: body bytes handed to the client; `complete`: the body reached its end.
    fn complete(self, bytes: u64, complete: bool);

    /// The upstream's body failed after its head was relayed (`stalled`: it sent nothing
    /// for the idle timeout; else its connection failed). Called at most once, before
    /// [`OnComplete::complete`].
    fn upstream_failed(&mut self, _stalled: bool) {}
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(Incoming),
}

pin_project_lite::pin_project! {
    /// The body of every response sent to a client.
    pub struct ResponseBody<C: OnComplete> {
        kind: Kind,
        idle: Duration,
        // Armed when the upstream's body is polled and has nothing (see RequestBody).
        #[pin]
        timer: Option<Sleep>,
        waiting: bool,
        bytes: u64,
        done: Option<C>,
    }

    impl<C: OnComplete> PinnedDrop for ResponseBody<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                done.complete(*this.bytes, false);
            }
        }
    }
}

impl<C: OnComplete> ResponseBody<C> {
    pub fn empty() -> Self {
        Self::with_kind(Kind::Empty, Duration::ZERO)
    }

    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Self::empty();
        }
        Self::with_kind(Kind::Full(Some(bytes)), Duration::ZERO)
    }

    pub fn upstream(body: Incoming, idle: Duration) -> Self {
        if body.is_end_stream() {
            return Self::empty();
        }
        Self::with_kind(Kind::Upstream(body), idle)
    }

    fn with_kind(kind: Kind, idle: Duration) -> Self {
        ResponseBody {
            kind,
            idle,
            timer: None,
            waiting: false,
            bytes: 0,
            done: None,
        }
    }

    /// Attach the end-of-response hook. A body that has nothing to send (or that hyper
    /// will not poll, `no_body`: HEAD, 204, 304, 101) completes right away.
    pub fn on_complete(mut self, done: C, no_body: bool) -> Self {
        if no_body || matches!(self.kind, Kind::Empty) {
            done.complete(0, true);
        } else {
            self.done = Some(done);
        }
        self
    }
}

impl<C: OnComplete> Body for ResponseBody<C> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let polled = match this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(inner) => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Pending => {
                    let deadline = Instant::now() + *this.idle;
                    if this.timer.is_none() {
                        this.timer.set(Some(tokio::time::sleep_until(deadline)));
                    }
                    let mut timer = this.timer.as_mut().as_pin_mut().expect("timer set");
                    if !*this.waiting {
                        *this.waiting = true;
                        timer.as_mut().reset(deadline);
                    }
                    ready!(timer.poll(cx));
                    tracing::warn!(
                        idle_ms = this.idle.as_millis() as u64,
                        "upstream body stalled; aborting the response"
                    );
                    *this.kind = Kind::Empty;
                    if let Some(done) = this.done.as_mut() {
                        done.upstream_failed(true);
                    }
                    return Poll::Ready(Some(Err(BodyError::IdleTimeout)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    *this.waiting = false;
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream body failed; aborting the response");
                    *this.kind = Kind::Empty;
                    if let Some(done) = this.done.as_mut() {
                        done.upstream_failed(false);
                    }
                    return Poll::Ready(Some(Err(BodyError::Upstream(e))));
                }
                Poll::Ready(None) => Poll::Ready(None),
            },
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                *this.bytes += d.len() as u64;
            }
        }
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => match this.kind {
                Kind::Empty => true,
                Kind::Full(b) => b.is_none(),
                Kind::Upstream(b) => b.is_end_stream(),
            },
            _ => false,
        };
        if ended {
            if let Some(done) = this.done.take() {
                done.complete(*this.bytes, true);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
        }
    }
}
