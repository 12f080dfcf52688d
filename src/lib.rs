//! fleetgate: a reverse-proxy sidecar and self-routing gateway.
//!
//! Every request is classified against a compiled route manifest ([`manifest`]) as
//! ide-only or fleet-ok, after its path is brought into one canonical form ([`path`]).
pub mod admin;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod routes_cmd;
pub mod server;
#[cfg(any(test, fuzzing))]
pub mod testing;
pub mod tls;
