//! fleetgate: a reverse-proxy sidecar and self-routing gateway. Every request is
//! classified against a compiled route manifest as ide-only or fleet-ok and sent where it
//! can be served.
//!
//! The modules form a line, bottom to top; nothing imports from a layer above it
//! (`tests/layering.rs` checks it):
//!
//! 1. **model**, no network: [`config`] (file + environment), [`manifest`] (load,
//!    compile, classify, drift), [`path`] (normalization), [`tls`] (certificate loading),
//!    [`metrics`], [`logging`], [`unlisted`] (the top-K table of requests no rule
//!    matched, and their path shapes).
//! 2. **runtime**: [`upstream`] (pools, endpoint health, the client), [`admission`]
//!    (bulkheads: fair per-tenant slots, queueing, shedding), [`body`] (streaming
//!    bodies), [`state`] (the swappable `Snapshot` and the runtime state that survives a
//!    swap), [`reload`] (build a snapshot, hot reload), [`health`] (`/healthz`, `/readyz`),
//!    [`memory`] (freed memory handed back to the kernel, under glibc's allocator).
//! 3. **data path**: [`proxy`], one module per step of a request's life (normalize,
//!    classify, target, forward headers, forward, respond) and one error mapping.
//! 4. **edges**: [`server`] (listeners, TLS, shutdown), [`admin`], [`cli`] (one module
//!    per subcommand, exit codes), [`demo`].
//!
//! Where a change belongs: a new config key in `config`, a new request step in `proxy`
//! (as a tower layer in `Proxy::new`'s stack, reading its settings from the request's
//! snapshot), state that must survive a reload in `state::Runtime`.
// One exception, `memory::trim` (glibc's malloc_trim, when the allocator is glibc's).
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, clippy::await_holding_lock)]

pub mod admin;
pub mod admission;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod health;
pub mod logging;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod state;
#[cfg(any(test, fuzzing))]
pub mod testing;
pub mod tls;
pub mod unlisted;
pub mod upstream;
