//! Upstreams: the endpoints behind `upstreams.fleet` and `upstreams.ide` and the client
//! that talks to them. Runtime state that outlives a reload lives here: an endpoint's
//! health, ejection back-off and in-flight count ([`pool`]), and the keep-alive
//! connections of the shared client ([`keepalive`] for plain http, [`client`] for https). A reload builds new [`Pool`]s that adopt
//! the endpoints of the old ones whose address did not change. TLS to `https` upstreams
//! is [`tls`] (the settings) and [`client`] (the handshake). The client's side of an
//! `Upgrade` tunnel reaches [`client`]'s tunnel through [`upgrade`].
//!
//! Knows nothing of manifests or routing: the data path asks for a pool by [`Upstream`].

pub mod client;
pub mod keepalive;
pub mod pool;
pub mod tls;
pub mod upgrade;

pub use client::{TlsTarget, UpstreamClient, UpstreamError};
pub use pool::{Endpoint, InFlight, Pool};

/// The two upstream pools a fleetgate sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// The fleet pool; in roles ide, worker and all it is the local application.
    Fleet,
    /// The ide upstream (role serve).
    Ide,
}

impl Upstream {
    pub fn as_str(self) -> &'static str {
        match self {
            Upstream::Fleet => "fleet",
            Upstream::Ide => "ide",
        }
    }
}
