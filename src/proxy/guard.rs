//! The guard step: the super_read_only guard, between target and admission. A stateless
//! replica must never accept a write it would silently lose.
//!
//! A request is *mutating* when its method is not GET, HEAD, OPTIONS or TRACE, unless its
//! rule says `read_only_safe = true` (a POST that only reads, e.g. a query endpoint).
//!
//! * **Runtime switch** (`super_read_only`, any role): every mutating request on this
//!   node is refused — `503`, `Retry-After`, `x-fleetgate-guard: super-read-only` — while
//!   reads keep flowing. For failover and maintenance.
//! * **Structural** (always on in role serve): a mutating request that would reach the
//!   fleet only because no rule matched (the default class), or that matched a fleet-ok
//!   rule without `writes = "fleet"`, is an *unlisted write*: with
//!   `guard.unlisted_writes = "ide"` it is sent to the ide instead ("a wasted hop beats
//!   lost data"; `421` when no ide is configured), with `"refuse"` it is answered `503`
//!   with `x-fleetgate-guard: unlisted-write`.
//!
//! It is a named step rather than a tower layer because it can change the target: the
//! route the later steps (admission's bulkhead, the forward step's pool, the stamps and
//! the metrics) see must be the guarded one, and the step runs before the request
//! context is built. [`check`] is pure; the switch is runtime state
//! ([`crate::state::Runtime::super_read_only`]).

use http::Method;

use crate::config::{Guard, Role, UnlistedWrites};
use crate::manifest::{Class, Rule, Writes};
use crate::proxy::context::Route;
use crate::proxy::error::{GuardReason, ProxyError};
use crate::proxy::target::Target;

/// What the guard did to a request that it did not simply pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An unlisted write, sent to the ide instead of the fleet.
    Redirect,
    /// Refused: `503` (or `421` for an unlisted write with no ide to send it to).
    Refuse,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Redirect => "redirect",
            Action::Refuse => "refuse",
        }
    }
}

/// The guard's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unchanged.
    Pass,
    /// Sent to the ide instead.
    Redirect(Route),
    /// Refused with this error, for this reason.
    Refuse(ProxyError, GuardReason),
}

/// Does this request change state? See the module docs.
pub fn is_mutating(method: &Method, rule: Option<&Rule>) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && !rule.is_some_and(|r| r.read_only_safe)
}

/// Decide what happens to a routed request (see the module docs).
pub fn check(
    method: &Method,
    route: Route,
    rule: Option<&Rule>,
    role: Role,
    ide_configured: bool,
    settings: &Guard,
    super_read_only: bool,
) -> Verdict {
    if !is_mutating(method, rule) {
        return Verdict::Pass;
    }
    if super_read_only {
        let e = ProxyError::Guard {
            reason: GuardReason::SuperReadOnly,
            retry_after: settings.retry_after,
        };
        return Verdict::Refuse(e, GuardReason::SuperReadOnly);
    }
    let declared_fleet_write =
        rule.is_some_and(|r| r.class == Class::FleetOk && r.writes == Some(Writes::Fleet));
    if role != Role::Serve || route.target != Target::Fleet || declared_fleet_write {
        return Verdict::Pass;
    }
    // An unlisted write on its way to the fleet.
    match settings.unlisted_writes {
        UnlistedWrites::Ide if ide_configured => Verdict::Redirect(Route {
            target: Target::Ide,
            degrade: false,
            ..route
        }),
        UnlistedWrites::Ide => Verdict::Refuse(ProxyError::Misdirected, GuardReason::UnlistedWrite),
        UnlistedWrites::Refuse => Verdict::Refuse(
            ProxyError::Guard {
                reason: GuardReason::UnlistedWrite,
                retry_after: settings.retry_after,
            },
            GuardReason::UnlistedWrite,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, RequestParts};

    const MANIFEST: &str = r#"
[[rule]]
path = "/files/{*p}"
class = "ide-only"
why = "disk"

[[rule]]
path = "/threads/{*p}"
class = "fleet-ok"
writes = "fleet"
why = "rows"

[[rule]]
path = "/runs/{*p}"
class = "fleet-ok"
why = "rows, read only"

[[rule]]
methods = ["POST"]
path = "/search"
class = "fleet-ok"
read_only_safe = true
why = "a query in a POST body"
"#;

    /// The guard's verdict for `method path` on a node of `role`, as a short word.
    fn outcome(
        role: Role,
        method: &str,
        path: &str,
        unlisted: UnlistedWrites,
        ide: bool,
        switch: bool,
    ) -> &'static str {
        let m = Manifest::from_sources(&[("g.toml".into(), MANIFEST.into())]).unwrap();
        let d = m.classify(&RequestParts {
            method,
            path,
            query: None,
            headers: &crate::manifest::classify::NoHeaders,
        });
        let Some(target) = crate::proxy::target::route(role, d.class, ide) else {
            return "421 (role table)";
        };
        let route = Route {
            class: d.class,
            rule_index: d.rule_index,
            tenant: None,
            target,
            degrade: false,
            upgrade: false,
        };
        let settings = Guard {
            unlisted_writes: unlisted,
            super_read_only: false,
            retry_after: 5,
        };
        let method: Method = method.parse().unwrap();
        match check(&method, route, d.rule, role, ide, &settings, switch) {
            Verdict::Pass => match target {
                Target::Ide => "ide",
                Target::Fleet => "fleet",
                Target::Local => "local",
            },
            Verdict::Redirect(r) => {
                assert_eq!(r.target, Target::Ide);
                "ide (redirected)"
            }
            Verdict::Refuse(ProxyError::Misdirected, _) => "421",
            Verdict::Refuse(e, GuardReason::UnlistedWrite) => {
                assert_eq!(e.status(), 503);
                "503 unlisted-write"
            }
            Verdict::Refuse(e, GuardReason::SuperReadOnly) => {
                assert_eq!(e.status(), 503);
                "503 super-read-only"
            }
        }
    }

    /// The decision table of docs/operations.md, row by row.
    #[test]
    fn the_decision_table() {
        use Role::*;
        use UnlistedWrites::{Ide as ToIde, Refuse};
        #[rustfmt::skip]
        let cases: &[(Role, &str, &str, UnlistedWrites, bool, bool, &str)] = &[
            // role serve, switch off
            (Serve, "GET", "/unknown", ToIde, true, false, "fleet"),
            (Serve, "POST", "/unknown", ToIde, true, false, "ide (redirected)"),
            (Serve, "DELETE", "/unknown", ToIde, true, false, "ide (redirected)"),
            (Serve, "POST", "/unknown", ToIde, false, false, "421"),
            (Serve, "POST", "/unknown", Refuse, true, false, "503 unlisted-write"),
            (Serve, "POST", "/threads/1", ToIde, true, false, "fleet"),
            (Serve, "PUT", "/runs/1", ToIde, true, false, "ide (redirected)"),
            (Serve, "PUT", "/runs/1", Refuse, true, false, "503 unlisted-write"),
            (Serve, "GET", "/runs/1", Refuse, true, false, "fleet"),
            (Serve, "POST", "/search", Refuse, true, false, "fleet"),
            (Serve, "POST", "/files/a", ToIde, true, false, "ide"),
            (Serve, "OPTIONS", "/unknown", Refuse, true, false, "fleet"),
            (Serve, "TRACE", "/unknown", Refuse, true, false, "fleet"),
            // role serve, switch on: every write refused, reads and read-only-safe pass
            (Serve, "POST", "/threads/1", ToIde, true, true, "503 super-read-only"),
            (Serve, "POST", "/files/a", ToIde, true, true, "503 super-read-only"),
            (Serve, "POST", "/unknown", ToIde, true, true, "503 super-read-only"),
            (Serve, "GET", "/files/a", ToIde, true, true, "ide"),
            (Serve, "POST", "/search", ToIde, true, true, "fleet"),
            // other roles: no structural guard (their writes stay local), switch applies
            (Ide, "POST", "/unknown", Refuse, false, false, "local"),
            (All, "PUT", "/runs/1", Refuse, false, false, "local"),
            (Worker, "POST", "/unknown", Refuse, false, false, "local"),
            (Ide, "POST", "/files/a", ToIde, false, true, "503 super-read-only"),
            (Worker, "GET", "/unknown", ToIde, false, true, "local"),
        ];
        for &(role, method, path, unlisted, ide, switch, want) in cases {
            assert_eq!(
                outcome(role, method, path, unlisted, ide, switch),
                want,
                "{role} {method} {path} unlisted_writes={} ide={ide} switch={switch}",
                unlisted.as_str()
            );
        }
    }
}
