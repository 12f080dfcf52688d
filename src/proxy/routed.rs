//! The routed request: what the front of the pipeline (normalize, classify, target)
//! decided, carried in the request's extensions to every layer of the stack behind it.
//!
//! DESIGN.md §1: the decision is computed once per request and travels with it; no later
//! step re-parses the path. [`Gateway::handle`](super::Gateway::handle) inserts one
//! [`Routed`] into the extensions of every request it hands to the stack; a layer reads it
//! with [`Routed::of`]:
//!
//! ```text
//! let routed = Routed::of(req.extensions());
//! routed.decision.target      // local | fleet | ide
//! routed.tenant()             // the rule's tenant parameter, a slice of routed.path
//! routed.rule()               // the winning rule (None: the default class applied)
//! routed.snapshot.config      // the config this request sees from start to end
//! ```
//!
//! It is one extension, not four, so routing a request costs one small allocation in the
//! extension map rather than one per value.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::Extensions;

use crate::manifest::{Class, Rule};
use crate::proxy::headers::ClientSide;
use crate::proxy::target::Target;
use crate::proxy::Snapshot;

/// The routing decision for one request: small, owned and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    pub class: Class,
    /// Index of the winning rule in the snapshot's manifest; `None`: the default class.
    pub rule_index: Option<usize>,
    /// Where the rule's tenant parameter sits in the normalized path (byte span).
    pub tenant: Option<(u32, u32)>,
    /// Where the role table sends it.
    pub target: Target,
    /// The rule allows serving it locally when the ide is unreachable (GET/HEAD only).
    pub degrade: bool,
}

impl RouteDecision {
    /// The tenant, as a slice of the normalized `path` the decision was made on.
    pub fn tenant<'p>(&self, path: &'p str) -> Option<&'p str> {
        let (start, end) = self.tenant?;
        path.get(start as usize..end as usize)
    }
}

/// The extension every request in the stack carries.
#[derive(Clone)]
pub struct Routed {
    pub decision: RouteDecision,
    /// The snapshot the request was classified against; it keeps it to the end.
    pub snapshot: Arc<Snapshot>,
    /// The canonical request target: sent upstream as is.
    pub path: PathAndQuery,
    /// The downstream connection, for the forwarding headers.
    pub client: ClientSide,
}

impl Routed {
    /// The routing facts of a request in the stack.
    ///
    /// # Panics
    /// When the request was not routed: only [`Gateway::handle`](super::Gateway::handle)
    /// feeds the stack, and it always attaches a `Routed`.
    pub fn of(extensions: &Extensions) -> &Routed {
        extensions
            .get::<Routed>()
            .expect("requests reach the proxy stack only after routing")
    }

    /// The tenant named by the winning rule's tenant parameter, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.decision.tenant(self.path.path())
    }

    /// The winning rule; `None` when the manifest's default class applied.
    pub fn rule(&self) -> Option<&Rule> {
        self.decision
            .rule_index
            .and_then(|i| self.snapshot.manifest.rules().get(i))
    }
}

/// Helpers for the unit tests of the stack's layers.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::Config;
    use crate::manifest::Manifest;

    /// A snapshot for node `n1` with an empty manifest and `max_hops` hops allowed.
    pub fn snapshot(max_hops: usize) -> Arc<Snapshot> {
        let mut config = Config {
            node_id: "n1".into(),
            ..Config::default()
        };
        config.limits.max_hops = max_hops;
        let manifest = Manifest::from_sources(&[("r.toml".into(), String::new())])
            .expect("an empty manifest loads");
        Arc::new(Snapshot::new(Arc::new(config), manifest))
    }

    /// A request for `path` routed to `target`, as `Gateway::handle` would hand it over.
    pub fn request<B>(
        method: http::Method,
        path: &'static str,
        target: Target,
        body: B,
    ) -> http::Request<B> {
        let decision = RouteDecision {
            class: Class::FleetOk,
            rule_index: None,
            tenant: None,
            target,
            degrade: false,
        };
        routed_request(method, path, decision, body)
    }

    pub fn routed_request<B>(
        method: http::Method,
        path: &'static str,
        decision: RouteDecision,
        body: B,
    ) -> http::Request<B> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .expect("a valid request");
        req.extensions_mut().insert(Routed {
            decision,
            snapshot: snapshot(4),
            path: PathAndQuery::from_static(path),
            client: ClientSide {
                ip: "192.0.2.7".parse().unwrap(),
                tls: false,
                version: http::Version::HTTP_11,
            },
        });
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_is_a_span_of_the_normalized_path() {
        let d = RouteDecision {
            class: Class::IdeOnly,
            rule_index: None,
            tenant: Some((5, 7)),
            target: Target::Ide,
            degrade: false,
        };
        assert_eq!(d.tenant("/api/w1/files"), Some("w1"));
        assert_eq!(
            d.tenant("/api"),
            None,
            "a span outside the path is no tenant"
        );
        let none = RouteDecision { tenant: None, ..d };
        assert_eq!(none.tenant("/api/w1/files"), None);
    }
}
