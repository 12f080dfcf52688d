//! The one place where proxy errors become HTTP answers: status code, a short plain-text
//! reason, and the headers that go with it (`Retry-After`, `x-fleetgate-required-role`).
//! Every answer fleetgate makes up itself, instead of relaying the upstream's, comes from
//! [`ProxyError::to_response`].

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::path::PathError;
use crate::proxy::body::{OnComplete, ResponseBody};
use crate::proxy::target::Upstream;

pub const REQUIRED_ROLE: &str = "x-fleetgate-required-role";

/// Why a request was not (fully) proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The path is not in a canonical form we accept (DESIGN.md §6).
    BadPath(PathError),
    /// The request carries no usable path (authority-form, `*`).
    BadTarget,
    /// `x-fleetgate-via` already names this node.
    LoopDetected,
    /// `x-fleetgate-via` names more hops than `limits.max_hops` allows.
    TooManyHops,
    /// This role cannot serve an ide-only request and no ide is configured.
    Misdirected,
    /// No endpoint of the pool could be connected to (refused, timed out, or all ejected).
    Unreachable {
        upstream: Upstream,
        retry_after: u32,
    },
    /// The upstream accepted the request but sent no response head within `first_byte`.
    FirstByteTimeout { upstream: Upstream },
    /// The upstream connection failed after the request was (partly) sent.
    UpstreamFailed { upstream: Upstream },
    /// The client stopped sending its body for longer than `timeouts.idle`.
    RequestBodyTimeout,
    /// The client's body failed (it went away).
    RequestBodyAborted,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadPath(_) | ProxyError::BadTarget | ProxyError::RequestBodyAborted => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::LoopDetected | ProxyError::TooManyHops => StatusCode::LOOP_DETECTED,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Unreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::FirstByteTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The short reason sent as the plain-text body.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadPath(e) => e.as_str(),
            ProxyError::BadTarget => "request target must be an absolute path",
            ProxyError::LoopDetected => {
                "loop detected: this request already passed through this fleetgate node"
            }
            ProxyError::TooManyHops => "loop detected: too many fleetgate hops (limits.max_hops)",
            ProxyError::Misdirected => {
                "this route needs the ide replica, which this node cannot reach or does not know"
            }
            ProxyError::Unreachable {
                upstream: Upstream::Ide,
                ..
            } => "the ide upstream cannot be reached",
            ProxyError::Unreachable { .. } => "the upstream cannot be reached",
            ProxyError::FirstByteTimeout { .. } => "the upstream did not answer in time",
            ProxyError::UpstreamFailed { .. } => "the upstream connection failed",
            ProxyError::RequestBodyTimeout => "request body idle for too long",
            ProxyError::RequestBodyAborted => "request body aborted",
        }
    }

    /// The `kind` label of `fleetgate_upstream_errors_total`, for upstream errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Unreachable { .. } => "connect",
            ProxyError::FirstByteTimeout { .. } => "timeout",
            ProxyError::UpstreamFailed { .. } => "protocol",
            ProxyError::RequestBodyTimeout => "client_timeout",
            ProxyError::RequestBodyAborted => "client_abort",
            _ => "none",
        }
    }

    /// The upstream pool the error came from, for errors of an upstream exchange.
    pub fn upstream(&self) -> Option<Upstream> {
        match self {
            ProxyError::Unreachable { upstream, .. }
            | ProxyError::FirstByteTimeout { upstream }
            | ProxyError::UpstreamFailed { upstream } => Some(*upstream),
            _ => None,
        }
    }

    /// Does the ide role have to answer this? (`x-fleetgate-required-role: ide`)
    fn needs_ide(&self) -> bool {
        matches!(
            self,
            ProxyError::Misdirected
                | ProxyError::Unreachable {
                    upstream: Upstream::Ide,
                    ..
                }
        )
    }

    /// The complete answer; the pipeline adds the response stamps.
    pub fn to_response<C: OnComplete>(&self) -> Response<ResponseBody<C>> {
        let body = match self {
            ProxyError::BadPath(e) => Bytes::from(format!("bad request: {e}\n")),
            _ => Bytes::from_static(self.reason().as_bytes()),
        };
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.needs_ide() {
            h.insert(REQUIRED_ROLE, HeaderValue::from_static("ide"));
        }
        if let ProxyError::Unreachable { retry_after, .. } = self {
            h.insert(RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
        }
        resp
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProxyError {}
