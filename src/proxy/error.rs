//! The one place where proxy errors become HTTP answers: status code, a short plain-text
//! reason, the headers that go with it (`Retry-After`, `x-fleetgate-required-role`), and
//! the `kind` label it is counted under. Every answer fleetgate makes up itself, instead
//! of relaying the upstream's, comes from [`ProxyError::to_response`]; the stages only say
//! what went wrong.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::admission::ShedReason;
use crate::body::{OnComplete, ResponseBody};
use crate::path::PathError;
use crate::upstream::{Upstream, UpstreamError};

pub const REQUIRED_ROLE: &str = "x-fleetgate-required-role";
pub const SHED: &str = "x-fleetgate-shed";
pub const GUARD: &str = "x-fleetgate-guard";

/// Why the super_read_only guard refused a request (`x-fleetgate-guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardReason {
    /// A write that would reach the fleet only because no rule said it may.
    UnlistedWrite,
    /// The node's super_read_only switch is on.
    SuperReadOnly,
}

impl GuardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardReason::UnlistedWrite => "unlisted-write",
            GuardReason::SuperReadOnly => "super-read-only",
        }
    }
}

/// Why a request was not (fully) proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The path is not in a canonical form we accept (see `crate::path`).
    BadPath(PathError),
    /// The request carries no usable path (authority-form, `*`).
    BadTarget,
    /// No, several, invalid or disagreeing `Host` / `:authority` (see
    /// `normalize::authority`).
    BadAuthority(&'static str),
    /// An HTTP/1 body that could be framed two ways (see `normalize::framing`). The
    /// connection is closed after the answer.
    BadFraming(&'static str),
    /// `x-fleetgate-via` already names this node.
    LoopDetected,
    /// `x-fleetgate-via` names more hops than `limits.max_hops` allows.
    TooManyHops,
    /// This role cannot serve an ide-only request and no ide is configured.
    Misdirected,
    /// The super_read_only guard refused it (a write). Never forwarded.
    Guard {
        reason: GuardReason,
        /// Seconds (`guard.retry_after`).
        retry_after: u32,
    },
    /// Admission control refused it: no slot of the target's bulkhead within the queue
    /// bounds. Never forwarded, its body never read.
    Shed {
        reason: ShedReason,
        /// Seconds, from the measured drain rate (already clamped and jittered).
        retry_after: u32,
    },
    /// The exchange with an upstream failed.
    Upstream {
        upstream: Upstream,
        error: UpstreamError,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadPath(_)
            | ProxyError::BadTarget
            | ProxyError::BadAuthority(_)
            | ProxyError::BadFraming(_) => StatusCode::BAD_REQUEST,
            ProxyError::LoopDetected | ProxyError::TooManyHops => StatusCode::LOOP_DETECTED,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Shed { .. } | ProxyError::Guard { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { error, .. } => match error {
                UpstreamError::Unreachable { .. } | UpstreamError::Failed => {
                    StatusCode::BAD_GATEWAY
                }
                UpstreamError::FirstByteTimeout => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
                UpstreamError::RequestBodyAborted => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The short reason sent as the plain-text body.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadPath(e) => e.as_str(),
            ProxyError::BadTarget => "request target must be an absolute path",
            ProxyError::BadAuthority(why) | ProxyError::BadFraming(why) => why,
            ProxyError::LoopDetected => {
                "loop detected: this request already passed through this fleetgate node"
            }
            ProxyError::TooManyHops => "loop detected: too many fleetgate hops (limits.max_hops)",
            ProxyError::Misdirected => {
                "this route needs the ide replica, which this node cannot reach or does not know"
            }
            ProxyError::Guard { reason, .. } => match reason {
                GuardReason::UnlistedWrite => {
                    "this write matches no rule that lets the fleet take it; refused (guard.unlisted_writes = \"refuse\")"
                }
                GuardReason::SuperReadOnly => {
                    "this node is super_read_only: writes are refused while reads keep flowing; retry later"
                }
            },
            ProxyError::Shed { reason, .. } => match reason {
                ShedReason::Global => {
                    "overloaded: every slot of this upstream is taken; retry later"
                }
                ShedReason::Tenant => {
                    "overloaded: this tenant already has its share of this upstream; retry later"
                }
                ShedReason::QueueTimeout => {
                    "overloaded: no slot of this upstream became free in time; retry later"
                }
            },
            ProxyError::Upstream { upstream, error } => match (upstream, error) {
                (Upstream::Ide, UpstreamError::Unreachable { .. }) => {
                    "the ide upstream cannot be reached"
                }
                (_, UpstreamError::Unreachable { .. }) => "the upstream cannot be reached",
                (_, UpstreamError::FirstByteTimeout) => "the upstream did not answer in time",
                (_, UpstreamError::Failed) => "the upstream connection failed",
                (_, UpstreamError::RequestBodyTimeout) => "request body idle for too long",
                (_, UpstreamError::RequestBodyAborted) => "request body aborted",
            },
        }
    }

    /// Does the ide role have to answer this? (`x-fleetgate-required-role: ide`)
    fn needs_ide(&self) -> bool {
        matches!(
            self,
            ProxyError::Misdirected
                | ProxyError::Upstream {
                    upstream: Upstream::Ide,
                    error: UpstreamError::Unreachable { .. },
                }
        )
    }

    /// The `x-fleetgate-shed` reason, for a shed request.
    pub fn shed_reason(&self) -> Option<&'static str> {
        match self {
            ProxyError::Shed { reason, .. } => Some(reason.as_str()),
            _ => None,
        }
    }

    /// Was the request refused before it was routed (so it has no target)?
    pub fn before_routing(&self) -> bool {
        matches!(
            self,
            ProxyError::BadPath(_)
                | ProxyError::BadTarget
                | ProxyError::BadAuthority(_)
                | ProxyError::BadFraming(_)
                | ProxyError::LoopDetected
                | ProxyError::TooManyHops
        )
    }

    /// The complete answer; the respond step adds the response stamps.
    pub fn to_response<C: OnComplete>(&self) -> Response<ResponseBody<C>> {
        let body = match self {
            ProxyError::BadPath(e) => Bytes::from(format!("bad request: {e}\n")),
            ProxyError::BadAuthority(why) | ProxyError::BadFraming(why) => {
                Bytes::from(format!("bad request: {why}\n"))
            }
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
        if let ProxyError::BadFraming(_) = self {
            // HTTP/1 only: what follows on this connection cannot be trusted to start a
            // request (RFC 9112 §6.1).
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        match self {
            ProxyError::Upstream {
                error: UpstreamError::Unreachable { retry_after },
                ..
            } => {
                h.insert(RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
            }
            ProxyError::Shed {
                reason,
                retry_after,
            } => {
                h.insert(RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
                h.insert(SHED, HeaderValue::from_static(reason.as_str()));
            }
            ProxyError::Guard {
                reason,
                retry_after,
            } => {
                h.insert(RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
                h.insert(GUARD, HeaderValue::from_static(reason.as_str()));
            }
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl OnComplete for Nothing {
        fn complete(self, _: u64, _: bool) {}
    }

    fn answer(e: ProxyError) -> Response<ResponseBody<Nothing>> {
        e.to_response()
    }

    #[test]
    fn an_unreachable_ide_says_which_role_is_needed_and_when_to_retry() {
        let r = answer(ProxyError::Upstream {
            upstream: Upstream::Ide,
            error: UpstreamError::Unreachable { retry_after: 3 },
        });
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()[REQUIRED_ROLE], "ide");
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        let r = answer(ProxyError::Upstream {
            upstream: Upstream::Fleet,
            error: UpstreamError::Unreachable { retry_after: 0 },
        });
        assert!(!r.headers().contains_key(REQUIRED_ROLE));
        assert_eq!(r.headers()[RETRY_AFTER], "1", "never less than a second");
    }

    #[test]
    fn a_shed_answer_says_why_and_when_to_retry() {
        let r = answer(ProxyError::Shed {
            reason: ShedReason::QueueTimeout,
            retry_after: 4,
        });
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "4");
        assert_eq!(r.headers()[SHED], "queue-timeout");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn statuses() {
        let up = |error| ProxyError::Upstream {
            upstream: Upstream::Fleet,
            error,
        };
        assert_eq!(up(UpstreamError::FirstByteTimeout).status(), 504);
        assert_eq!(up(UpstreamError::Failed).status(), 502);
        assert_eq!(up(UpstreamError::RequestBodyTimeout).status(), 408);
        assert_eq!(up(UpstreamError::RequestBodyAborted).status(), 400);
        assert_eq!(ProxyError::LoopDetected.status(), 508);
        assert_eq!(ProxyError::Misdirected.status(), 421);
        assert_eq!(
            answer(ProxyError::Misdirected).headers()[REQUIRED_ROLE],
            "ide"
        );
    }
}
