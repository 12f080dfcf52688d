//! The request context: what the front of the data path (normalize, classify, target)
//! decided, carried in the request's extensions to every layer behind it.
//!
//! The decision is computed once per request and travels with it; no later step re-parses
//! the path or re-reads headers to find out what was decided. [`Proxy::handle`](super::Proxy::handle)
//! (super::Proxy::handle) inserts one [`RequestContext`] into the extensions of every
//! request it hands to the stack; a layer reads it with [`RequestContext::of`]:
//!
//! ```text
//! let cx = RequestContext::of(req.extensions());
//! cx.route.target             // local | fleet | ide
//! cx.route.upgrade            // an HTTP/1.1 Upgrade (WebSocket) handshake
//! cx.tenant()                 // the rule's tenant parameter
//! cx.rule()                   // the winning rule (None: the default class applied)
//! cx.snapshot.config          // the snapshot this request sees from start to end
//! ```
//!
//! It is one extension, not several, so routing a request costs one small allocation in
//! the extension map rather than one per value.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::Extensions;

use crate::manifest::{Class, Manifest, Rule, TenantAt};
use crate::proxy::headers::ClientSide;
use crate::proxy::target::Target;
use crate::state::Snapshot;

/// Where one request goes and why: small, owned and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub class: Class,
    /// Index of the winning rule in the snapshot's manifest; `None`: the default class.
    pub rule_index: Option<usize>,
    /// Where the rule's tenant parameter is: a span of the normalized path, or of the
    /// replacement text of the alias that applied.
    pub tenant: Option<TenantAt>,
    /// Where the role table sends it.
    pub target: Target,
    /// The rule allows serving it locally when the ide is unreachable (GET/HEAD only).
    pub degrade: bool,
    /// An HTTP/1.1 `Upgrade` handshake (WebSocket), decided from the client's headers
    /// before any layer rewrote them.
    pub upgrade: bool,
}

impl Route {
    /// The tenant, given the manifest and the normalized `path` the decision was made on.
    pub fn tenant<'a>(&self, manifest: &'a Manifest, path: &'a str) -> Option<&'a str> {
        manifest.tenant_text(self.tenant?, path)
    }
}

/// The extension every request in the stack carries.
#[derive(Clone)]
pub struct RequestContext {
    pub route: Route,
    /// The snapshot the request was classified against; it keeps it to the end.
    pub snapshot: Arc<Snapshot>,
    /// The canonical request target: sent upstream as is.
    pub path: PathAndQuery,
    /// The downstream connection, for the forwarding headers.
    pub client: ClientSide,
}

impl RequestContext {
    /// The context of a request in the stack.
    ///
    /// # Panics
    /// When the request was not routed: only [`Proxy::handle`](super::Proxy::handle)
    /// feeds the stack, and it always attaches a `RequestContext`.
    pub fn of(extensions: &Extensions) -> &RequestContext {
        extensions
            .get::<RequestContext>()
            .expect("requests reach the proxy stack only after routing")
    }

    /// The tenant named by the winning rule's tenant parameter, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.route.tenant(&self.snapshot.manifest, self.path.path())
    }

    /// The winning rule; `None` when the manifest's default class applied.
    pub fn rule(&self) -> Option<&Rule> {
        self.route
            .rule_index
            .and_then(|i| self.snapshot.manifest.rules().get(i))
    }
}

/// Helpers for the unit tests of the stack's layers.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::upstream::{Pool, Upstream};

    /// A snapshot for node `n1` with an empty manifest, `max_hops` hops allowed, and
    /// pools whose one DNS name is never resolved (every pick fails fast).
    pub fn snapshot(max_hops: usize) -> Arc<Snapshot> {
        let mut config = Config {
            node_id: "n1".into(),
            ..Config::default()
        };
        config.limits.max_hops = max_hops;
        let manifest = crate::manifest::Manifest::from_sources(&[("r.toml".into(), String::new())])
            .expect("an empty manifest loads");
        let metrics = Arc::new(Metrics::new());
        let unresolved = || vec![crate::config::UpstreamUrl::http("unresolved.invalid", 80)];
        Arc::new(Snapshot {
            serial: 1,
            loaded_at: std::time::SystemTime::now(),
            node: crate::state::NodeHeaders::new(&config, manifest.digest()),
            rule_hits: crate::state::RuleHits::new(&manifest),
            config: Arc::new(config),
            manifest,
            fleet: Arc::new(Pool::new(Upstream::Fleet, unresolved(), metrics.clone())),
            ide: Some(Arc::new(Pool::new(Upstream::Ide, unresolved(), metrics))),
            tls: None,
            admin_token: None,
        })
    }

    /// A request for `path` routed to `target`, as `Proxy::handle` would hand it over.
    pub fn request<B>(
        method: http::Method,
        path: &'static str,
        target: Target,
        body: B,
    ) -> http::Request<B> {
        let route = Route {
            class: Class::FleetOk,
            rule_index: None,
            tenant: None,
            target,
            degrade: false,
            upgrade: false,
        };
        routed_request(method, path, route, snapshot(4), body)
    }

    pub fn routed_request<B>(
        method: http::Method,
        path: &'static str,
        route: Route,
        snapshot: Arc<Snapshot>,
        body: B,
    ) -> http::Request<B> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .expect("a valid request");
        req.extensions_mut().insert(RequestContext {
            route,
            snapshot,
            path: PathAndQuery::from_static(path),
            client: ClientSide {
                ip: "192.0.2.7".parse().unwrap(),
                ip_value: crate::proxy::headers::ip_header_value("192.0.2.7".parse().unwrap()),
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

    use crate::manifest::classify::NoHeaders;
    use crate::manifest::RequestParts;

    /// The context `Proxy::handle` would build for `GET path` with this manifest.
    fn context_for(manifest: &str, path: &'static str) -> RequestContext {
        let m = Manifest::from_sources(&[("r.toml".into(), manifest.into())]).unwrap();
        let d = m.classify(&RequestParts {
            method: "GET",
            path,
            query: None,
            headers: &NoHeaders,
        });
        let route = Route {
            class: d.class,
            rule_index: d.rule_index,
            tenant: d.tenant_at,
            target: Target::Ide,
            degrade: false,
            upgrade: false,
        };
        let base = testing::snapshot(4);
        let snapshot = Arc::new(Snapshot {
            serial: base.serial,
            loaded_at: base.loaded_at,
            config: base.config.clone(),
            node: base.node.clone(),
            rule_hits: crate::state::RuleHits::new(&m),
            manifest: m,
            fleet: base.fleet.clone(),
            ide: base.ide.clone(),
            tls: None,
            admin_token: None,
        });
        let req = testing::routed_request(http::Method::GET, path, route, snapshot, ());
        req.extensions().get::<RequestContext>().unwrap().clone()
    }

    const ALIASED: &str = r#"
[manifest]
aliases = [{ from = "/v1", to = "/api" }, { from = "/acme-files", to = "/api/acme/files" }]

[[rule]]
path = "/api/{ws}/files/{*p}"
class = "ide-only"
tenant = "ws"
why = "the working copy"
"#;

    #[test]
    fn the_tenant_is_found_in_the_path_or_in_the_alias_that_put_it_there() {
        assert_eq!(context_for(ALIASED, "/api/w1/files/a").tenant(), Some("w1"));
        assert_eq!(
            context_for(ALIASED, "/v1/w2/files/a/b/").tenant(),
            Some("w2")
        );
        assert_eq!(
            context_for(ALIASED, "/acme-files/src/main.rs").tenant(),
            Some("acme"),
            "the tenant segment came from the alias's replacement text"
        );
        assert_eq!(context_for(ALIASED, "/other").tenant(), None);
    }
}
