//! The `FLEETGATE_*` environment overrides: for each key, the first of its variables that
//! is set wins over the file, and a bad value is reported naming that variable. The
//! environment is read through a lookup function so tests need not touch the process.

/// The variable naming the configuration file when no `--config` is given.
pub(super) const CONFIG_FILE: &str = "FLEETGATE_CONFIG";

/// The process environment; a variable that is not valid UTF-8 counts as unset.
pub(super) fn process(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// The first of `vars` that `env` has, with its value.
pub(super) fn first_set(
    env: &dyn Fn(&str) -> Option<String>,
    vars: &[&'static str],
) -> Option<(&'static str, String)> {
    vars.iter()
        .find_map(|&var| env(var).map(|value| (var, value)))
}

/// How messages name a variable.
pub(super) fn origin(var: &str) -> String {
    format!("environment variable {var}")
}

/// The variable the naming rule gives a dotted key: `timeouts.connect` →
/// `FLEETGATE_TIMEOUTS_CONNECT`.
#[cfg(test)]
pub(super) fn canonical(key: &str) -> String {
    format!("FLEETGATE_{}", key.replace('.', "_").to_ascii_uppercase())
}
