//! The target step: the role table, where a request of a given class goes for the role
//! of the replica this fleetgate fronts. Pure and tiny; the data path calls it once per
//! request, and the answer travels in the request context.
//!
//! | role | fleet-ok | ide-only |
//! |---|---|---|
//! | serve | fleet pool | ide upstream; 421 when none is configured |
//! | ide, all | local | local |
//! | worker | local | 421 |

use http::HeaderValue;

use crate::config::Role;
use crate::manifest::Class;
use crate::upstream::Upstream;

/// Where a request is sent. `Local` and `Fleet` both use the `fleet` upstream pool: in role
/// serve that pool is the fleet (or the sidecar's one replica), in the other roles it is
/// the application right behind this fleetgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Local,
    Fleet,
    Ide,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Fleet => "fleet",
            Target::Ide => "ide",
        }
    }

    /// The `x-fleetgate-target` value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// The upstream pool this target uses.
    pub fn upstream(self) -> Upstream {
        match self {
            Target::Ide => Upstream::Ide,
            Target::Local | Target::Fleet => Upstream::Fleet,
        }
    }
}

/// The role table: where a request of `class` goes on a replica of `role`.
/// `ide_configured`: the snapshot has an ide pool. `None`: this replica cannot serve it
/// and knows no ide (`421 Misdirected Request`).
pub fn route(role: Role, class: Class, ide_configured: bool) -> Option<Target> {
    match (role, class) {
        (Role::Serve, Class::FleetOk) => Some(Target::Fleet),
        (Role::Serve, Class::IdeOnly) if ide_configured => Some(Target::Ide),
        (Role::Serve, Class::IdeOnly) => None,
        (Role::Ide | Role::All, _) => Some(Target::Local),
        (Role::Worker, Class::FleetOk) => Some(Target::Local),
        (Role::Worker, Class::IdeOnly) => None,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Class::*;
        use Target::*;
        let forward = Some;
        let misdirected = None;
        let cases = [
            (Role::Serve, FleetOk, true, forward(Fleet)),
            (Role::Serve, IdeOnly, true, forward(Ide)),
            (Role::Serve, IdeOnly, false, misdirected),
            (Role::Ide, FleetOk, false, forward(Local)),
            (Role::Ide, IdeOnly, true, forward(Local)),
            (Role::Worker, FleetOk, true, forward(Local)),
            (Role::Worker, IdeOnly, true, misdirected),
            (Role::All, FleetOk, false, forward(Local)),
            (Role::All, IdeOnly, false, forward(Local)),
        ];
        for (role, class, ide, want) in cases {
            assert_eq!(route(role, class, ide), want, "{role} {class} ide={ide}");
        }
    }
}
