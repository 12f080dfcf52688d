//! The role table of DESIGN.md §4: where a request of a given class goes, for the role
//! of the replica this fleetgate fronts. Pure and tiny; the pipeline calls it once.

use http::HeaderValue;

use crate::config::Role;
use crate::manifest::Class;

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

/// The two upstream pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    Fleet,
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

/// The outcome of the role table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Forward(Target),
    /// This replica cannot serve it and knows no ide: `421`.
    Misdirected,
}

/// DESIGN.md §4, as code. `ide_configured`: an `upstreams.ide` is set.
pub fn route(role: Role, class: Class, ide_configured: bool) -> Route {
    match (role, class) {
        (Role::Serve, Class::FleetOk) => Route::Forward(Target::Fleet),
        (Role::Serve, Class::IdeOnly) if ide_configured => Route::Forward(Target::Ide),
        (Role::Serve, Class::IdeOnly) => Route::Misdirected,
        (Role::Ide | Role::All, _) => Route::Forward(Target::Local),
        (Role::Worker, Class::FleetOk) => Route::Forward(Target::Local),
        (Role::Worker, Class::IdeOnly) => Route::Misdirected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Class::*;
        use Route::*;
        use Target::*;
        let cases = [
            (Role::Serve, FleetOk, true, Forward(Fleet)),
            (Role::Serve, IdeOnly, true, Forward(Ide)),
            (Role::Serve, IdeOnly, false, Misdirected),
            (Role::Ide, FleetOk, false, Forward(Local)),
            (Role::Ide, IdeOnly, true, Forward(Local)),
            (Role::Worker, FleetOk, true, Forward(Local)),
            (Role::Worker, IdeOnly, true, Misdirected),
            (Role::All, FleetOk, false, Forward(Local)),
            (Role::All, IdeOnly, false, Forward(Local)),
        ];
        for (role, class, ide, want) in cases {
            assert_eq!(route(role, class, ide), want, "{role} {class} ide={ide}");
        }
    }
}
