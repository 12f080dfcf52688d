//! Diff: how the application's routes move between two manifests.
//!
//! Every application route is assessed under the old and the new manifest the way
//! drift assesses it ([`drift::assess`]: its generic probe, without headers or query),
//! and a route is reported when its class or its winning rule changes. Rules are
//! compared by what they match (methods, pattern with parameter names erased, `when`
//! conditions), not by where they are written, so a rule that moves to another line or
//! file is the same rule. A route whose generic class stays but some of whose parameter
//! values change class (a carve-out added or removed under it, as drift's `partial`
//! finding sees them) is reported per value. [`diff`] also lists the rules only one
//! manifest has.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::drift::{self, shape_key, AppRoute};
use super::{base_name, Class, Condition, Manifest, Rule, When};

/// A rule as the diff names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `file:line`, the file name within its manifest directory (as in the lock file).
    pub rule: String,
    /// The methods as listed (`["*"]` for any).
    pub methods: Vec<String>,
    /// The pattern as written.
    pub path: String,
    pub class: &'static str,
    /// The `when` conditions, e.g. `query snapshot=*, header x-preview=1`; empty for
    /// none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub when: String,
}

impl RuleRef {
    fn new(rule: &Rule) -> RuleRef {
        RuleRef {
            rule: format!("{}:{}", base_name(&rule.file), rule.line),
            methods: rule.methods.names().into_iter().map(String::from).collect(),
            path: rule.path.clone(),
            class: rule.class.as_str(),
            when: when_text(&rule.when),
        }
    }
}

/// A route's class under one manifest and the rule that gave it (`None`: the default
/// class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub class: &'static str,
    pub rule: Option<RuleRef>,
}

/// One application route whose class or winning rule differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChange {
    pub method: String,
    pub route: String,
    /// 1-based line in the input the route came from; 0 when unknown.
    #[serde(skip)]
    pub line: u32,
    /// Index of the input the route came from (see [`drift::MergedRoutes::source`]).
    #[serde(skip)]
    pub source: usize,
    pub old: Outcome,
    pub new: Outcome,
}

/// One parameter value of an application route that changes class, e.g. `path` =
/// `public/*` of `GET /api/{ws}/tree/{*path}` when a carve-out is added under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueChange {
    pub method: String,
    pub route: String,
    #[serde(skip)]
    pub line: u32,
    #[serde(skip)]
    pub source: usize,
    pub param: String,
    /// The value as drift shows it (a catch-all's segments joined by `/`, `*` for any
    /// segment).
    pub value: String,
    pub old: &'static str,
    pub new: &'static str,
}

/// The counts of a [`RouteDiff`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Application routes compared.
    pub routes: usize,
    pub to_fleet_ok: usize,
    pub to_ide_only: usize,
    pub rule_changed: usize,
    pub values_to_fleet_ok: usize,
    pub values_to_ide_only: usize,
    pub rules_added: usize,
    pub rules_removed: usize,
}

/// Everything that differs; serializes as exactly `{"summary", "to_fleet_ok",
/// "to_ide_only", "rule_changed", "values_to_fleet_ok", "values_to_ide_only",
/// "rules_added", "rules_removed"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteDiff {
    pub summary: Summary,
    /// ide-only under the old manifest, fleet-ok under the new one: what a request
    /// writes may land on a stateless replica and be lost.
    pub to_fleet_ok: Vec<RouteChange>,
    /// fleet-ok before, ide-only now: more load on the single primary.
    pub to_ide_only: Vec<RouteChange>,
    /// The same class from another rule (or from the default instead of a rule, or
    /// the other way round).
    pub rule_changed: Vec<RouteChange>,
    /// Parameter values that were ide-only and are fleet-ok now (the route as a whole
    /// may keep its class): as dangerous as [`RouteDiff::to_fleet_ok`].
    pub values_to_fleet_ok: Vec<ValueChange>,
    /// Parameter values that were fleet-ok and are ide-only now.
    pub values_to_ide_only: Vec<ValueChange>,
    /// Rules of the new manifest that the old one does not have, in file order.
    pub rules_added: Vec<RuleRef>,
    /// Rules of the old manifest that the new one does not have, in file order.
    pub rules_removed: Vec<RuleRef>,
}

impl RouteDiff {
    /// Would anything that needs the ide be served by the fleet after the change?
    pub fn moves_to_fleet(&self) -> bool {
        !self.to_fleet_ok.is_empty() || !self.values_to_fleet_ok.is_empty()
    }

    /// Does any route or rule differ?
    pub fn is_empty(&self) -> bool {
        self.to_fleet_ok.is_empty()
            && self.to_ide_only.is_empty()
            && self.rule_changed.is_empty()
            && self.values_to_fleet_ok.is_empty()
            && self.values_to_ide_only.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
    }
}

/// What makes two rules the same rule: the methods (sorted), the pattern with
/// parameter names erased, the `when` conditions and the class. Where it is written
/// (file, line), its `why` and its other keys do not count.
type RuleKey = (Vec<String>, String, String, Class);

fn rule_key(rule: &Rule) -> RuleKey {
    let mut methods: Vec<String> = rule.methods.names().into_iter().map(String::from).collect();
    methods.sort();
    (
        methods,
        shape_key(&rule.segments),
        when_text(&rule.when),
        rule.class,
    )
}

/// `query a=*, header x-b=1`: conditions in the order written.
fn when_text(when: &When) -> String {
    let mut out = String::new();
    for (kind, conds) in [("query", &when.query), ("header", &when.header)] {
        for (name, cond) in conds {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let value = match cond {
                Condition::Present => "*",
                Condition::Equals(v) => v.as_str(),
            };
            let _ = write!(out, "{kind} {name}={value}");
        }
    }
    out
}

/// Compare the classes of `routes` under `old` and `new`; `source[i]` is the input
/// `routes[i]` came from (empty: all from input 0).
pub fn diff(old: &Manifest, new: &Manifest, routes: &[AppRoute], source: &[usize]) -> RouteDiff {
    let before_all = drift::assess_with_values(old, routes);
    let after_all = drift::assess_with_values(new, routes);
    let before: Vec<_> = before_all.iter().map(|(a, _)| a.clone()).collect();
    let after: Vec<_> = after_all.iter().map(|(a, _)| a.clone()).collect();
    let old_keys: Vec<RuleKey> = old.rules().iter().map(rule_key).collect();
    let new_keys: Vec<RuleKey> = new.rules().iter().map(rule_key).collect();

    let mut out = RouteDiff::default();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let same_rule = match (b.rule, a.rule) {
            (None, None) => true,
            (Some(x), Some(y)) => old_keys[x] == new_keys[y],
            _ => false,
        };
        if b.class == a.class && same_rule {
            continue;
        }
        let outcome = |m: &Manifest, class: Class, rule: Option<usize>| Outcome {
            class: class.as_str(),
            rule: rule.map(|k| RuleRef::new(&m.rules()[k])),
        };
        let change = RouteChange {
            method: a.method.clone(),
            route: a.route.clone(),
            line: a.line,
            source: source.get(i).copied().unwrap_or(0),
            old: outcome(old, b.class, b.rule),
            new: outcome(new, a.class, a.rule),
        };
        match (b.class, a.class) {
            (Class::IdeOnly, Class::FleetOk) => out.to_fleet_ok.push(change),
            (Class::FleetOk, Class::IdeOnly) => out.to_ide_only.push(change),
            _ => out.rule_changed.push(change),
        }
    }

    // Parameter values whose class differs, for values either manifest singles out.
    for (i, ((b, bv), (_, av))) in before_all.iter().zip(&after_all).enumerate() {
        let class_of = |partials: &[drift::Partial], generic: &'static str, p: &str, v: &str| {
            partials
                .iter()
                .find(|x| x.param == p)
                .and_then(|x| x.classes.get(v).copied())
                .unwrap_or(generic)
        };
        let (old_generic, new_generic) = (b.class.as_str(), after[i].class.as_str());
        let keys: BTreeSet<(&str, &str)> = bv
            .iter()
            .chain(av)
            .flat_map(|x| {
                x.classes
                    .keys()
                    .map(move |v| (x.param.as_str(), v.as_str()))
            })
            .collect();
        for (param, value) in keys {
            let was = class_of(bv, old_generic, param, value);
            let now = class_of(av, new_generic, param, value);
            if was == now || (was == old_generic && now == new_generic) {
                // Unchanged, or it only follows the route's own change (reported above).
                continue;
            }
            let change = ValueChange {
                method: b.method.clone(),
                route: b.route.clone(),
                line: b.line,
                source: source.get(i).copied().unwrap_or(0),
                param: param.to_string(),
                value: value.to_string(),
                old: was,
                new: now,
            };
            if now == Class::FleetOk.as_str() {
                out.values_to_fleet_ok.push(change);
            } else {
                out.values_to_ide_only.push(change);
            }
        }
    }

    // Rules one side has more often than the other (a multiset difference, so that two
    // identical rules in different files count twice).
    let only_in = |mine: &Manifest, keys: &[RuleKey], theirs: &[RuleKey]| -> Vec<RuleRef> {
        let mut left: HashMap<&RuleKey, usize> = HashMap::new();
        for k in theirs {
            *left.entry(k).or_default() += 1;
        }
        mine.rules()
            .iter()
            .zip(keys)
            .filter(|(_, k)| match left.get_mut(k) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .map(|(r, _)| RuleRef::new(r))
            .collect()
    };
    out.rules_added = only_in(new, &new_keys, &old_keys);
    out.rules_removed = only_in(old, &old_keys, &new_keys);
    out.summary = Summary {
        routes: routes.len(),
        to_fleet_ok: out.to_fleet_ok.len(),
        to_ide_only: out.to_ide_only.len(),
        rule_changed: out.rule_changed.len(),
        values_to_fleet_ok: out.values_to_fleet_ok.len(),
        values_to_ide_only: out.values_to_ide_only.len(),
        rules_added: out.rules_added.len(),
        rules_removed: out.rules_removed.len(),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::drift::parse_app_routes;

    fn manifest(text: &str) -> Manifest {
        Manifest::from_sources(&[("old/a.toml".into(), text.into())]).unwrap()
    }

    fn routes(text: &str) -> Vec<AppRoute> {
        parse_app_routes("app.txt", text).unwrap()
    }

    fn rule(methods: &str, path: &str, class: &str) -> String {
        let methods = if methods.is_empty() {
            String::new()
        } else {
            format!("methods = [{methods}]\n")
        };
        format!("[[rule]]\n{methods}path = \"{path}\"\nclass = \"{class}\"\nwhy = \"x\"\n")
    }

    fn names(changes: &[RouteChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.method, c.route))
            .collect()
    }

    const ROUTES: &str = "GET /a/{id}\nPOST /a/{id}\nGET /b\nGET /c/{*rest}\n";

    #[test]
    fn a_carve_out_under_a_route_is_reported_per_value() {
        let old = manifest(&rule("", "/c/{*r}", "ide-only"));
        let new = manifest(
            &(rule("", "/c/{*r}", "ide-only") + &rule("\"GET\"", "/c/public/{*r}", "fleet-ok")),
        );
        let d = diff(&old, &new, &routes(ROUTES), &[]);
        assert!(
            d.to_fleet_ok.is_empty(),
            "the route's generic class is unchanged"
        );
        assert_eq!(d.values_to_fleet_ok.len(), 1, "{d:?}");
        let v = &d.values_to_fleet_ok[0];
        assert_eq!((v.method.as_str(), v.route.as_str()), ("GET", "/c/{*rest}"));
        assert_eq!((v.param.as_str(), v.value.as_str()), ("rest", "public/*"));
        assert_eq!((v.old, v.new), ("ide-only", "fleet-ok"));
        assert!(d.moves_to_fleet());
        // And back: removing the carve-out moves the value to ide-only.
        let back = diff(&new, &old, &routes(ROUTES), &[]);
        assert_eq!(back.values_to_ide_only.len(), 1);
        assert!(!back.moves_to_fleet());
    }

    #[test]
    fn identical_manifests_differ_in_nothing() {
        let text = rule("\"GET\"", "/a/{x}", "ide-only") + &rule("", "/c/{*r}", "ide-only");
        let d = diff(&manifest(&text), &manifest(&text), &routes(ROUTES), &[]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.summary.routes, 4);
    }

    #[test]
    fn each_direction_and_rule_changes_are_grouped() {
        let old =
            manifest(&(rule("\"GET\"", "/a/{x}", "ide-only") + &rule("", "/c/{*r}", "ide-only")));
        let new = Manifest::from_sources(&[(
            "new/b.toml".into(),
            // GET /a/{id} loses its rule (default fleet-ok); POST /a/{id} gains one;
            // GET /c/{*rest} keeps its class from another rule.
            rule("\"POST\"", "/a/{x}", "ide-only") + &rule("\"GET\"", "/c/{*r}", "ide-only"),
        )])
        .unwrap();
        let d = diff(&old, &new, &routes(ROUTES), &[]);
        assert_eq!(names(&d.to_fleet_ok), vec!["GET /a/{id}"]);
        assert_eq!(names(&d.to_ide_only), vec!["POST /a/{id}"]);
        assert_eq!(names(&d.rule_changed), vec!["GET /c/{*rest}"]);
        let c = &d.to_fleet_ok[0];
        assert_eq!(c.old.class, "ide-only");
        assert_eq!(c.old.rule.as_ref().unwrap().rule, "a.toml:1");
        assert_eq!(
            c.new,
            Outcome {
                class: "fleet-ok",
                rule: None
            }
        );
        assert_eq!(
            d.rule_changed[0].new.rule.as_ref().unwrap().rule,
            "b.toml:6"
        );
        let added: Vec<&str> = d.rules_added.iter().map(|r| r.rule.as_str()).collect();
        let removed: Vec<&str> = d.rules_removed.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(added, vec!["b.toml:1", "b.toml:6"]);
        assert_eq!(removed, vec!["a.toml:1", "a.toml:6"]);
        assert_eq!(
            d.summary,
            Summary {
                routes: 4,
                to_fleet_ok: 1,
                to_ide_only: 1,
                rule_changed: 1,
                values_to_fleet_ok: 0,
                values_to_ide_only: 0,
                rules_added: 2,
                rules_removed: 2
            }
        );
    }

    #[test]
    fn a_moved_or_renamed_rule_is_the_same_rule() {
        let old = manifest(&(rule("\"GET\", \"POST\"", "/a/{x}", "ide-only")));
        // Another file, another line, parameter renamed, methods reordered, new `why`.
        let new = Manifest::from_sources(&[(
            "new/z.toml".into(),
            format!(
                "# moved\n\n{}",
                rule("\"POST\", \"GET\"", "/a/{id}", "ide-only").replace("\"x\"", "\"moved\"")
            ),
        )])
        .unwrap();
        let d = diff(&old, &new, &routes(ROUTES), &[]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_when_condition_or_class_makes_another_rule() {
        let base = rule("\"GET\"", "/b", "ide-only");
        let with_when = format!("{base}[rule.when]\nquery = {{ snapshot = \"*\" }}\n");
        let d = diff(
            &manifest(&base),
            &manifest(&with_when),
            &routes("GET /b\n"),
            &[],
        );
        // Without the query the conditional rule does not apply: the route falls to the
        // default, fleet-ok.
        assert_eq!(names(&d.to_fleet_ok), vec!["GET /b"]);
        assert_eq!(d.rules_added[0].when, "query snapshot=*");
        assert_eq!(d.rules_removed[0].when, "");

        let d = diff(
            &manifest(&base),
            &manifest(&rule("\"GET\"", "/b", "fleet-ok")),
            &routes("GET /b\n"),
            &[],
        );
        assert_eq!(names(&d.to_fleet_ok), vec!["GET /b"]);
        assert_eq!(
            d.to_fleet_ok[0].new.rule.as_ref().unwrap().class,
            "fleet-ok"
        );
        assert_eq!((d.rules_added.len(), d.rules_removed.len()), (1, 1));
    }

    #[test]
    fn a_changed_default_class_moves_unruled_routes_and_aliases_count() {
        let old = manifest("[manifest]\ndefault_class = \"ide-only\"\n");
        let new = manifest("[manifest]\ndefault_class = \"fleet-ok\"\n");
        let d = diff(&old, &new, &routes("GET /b\nPOST /x/{id}\n"), &[0, 1]);
        assert_eq!(names(&d.to_fleet_ok), vec!["GET /b", "POST /x/{id}"]);
        assert_eq!(d.to_fleet_ok[1].source, 1);
        assert_eq!(d.to_fleet_ok[1].line, 2);

        // An alias added in the new manifest sends an old prefix to a rule.
        let rules = rule("", "/api/{*r}", "ide-only");
        let aliased =
            format!("[manifest]\naliases = [{{ from = \"/v1\", to = \"/api\" }}]\n{rules}");
        let d = diff(
            &manifest(&rules),
            &manifest(&aliased),
            &routes("GET /v1/x\n"),
            &[],
        );
        assert_eq!(names(&d.to_ide_only), vec!["GET /v1/x"]);
        assert!(d.rules_added.is_empty() && d.rules_removed.is_empty());
    }

    #[test]
    fn json_shape_is_exact() {
        let old = manifest(&rule("\"GET\"", "/a/{x}", "ide-only"));
        let new = manifest("");
        let v = serde_json::to_value(diff(&old, &new, &routes("GET /a/1\n"), &[])).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            vec![
                "rule_changed",
                "rules_added",
                "rules_removed",
                "summary",
                "to_fleet_ok",
                "to_ide_only",
                "values_to_fleet_ok",
                "values_to_ide_only"
            ]
        );
        assert_eq!(
            v["to_fleet_ok"][0],
            serde_json::json!({"method": "GET", "route": "/a/1",
                "old": {"class": "ide-only", "rule": {"rule": "a.toml:1", "methods": ["GET"], "path": "/a/{x}", "class": "ide-only"}},
                "new": {"class": "fleet-ok", "rule": null}})
        );
        assert_eq!(
            v["summary"],
            serde_json::json!({"routes": 1, "to_fleet_ok": 1, "to_ide_only": 0, "rule_changed": 0,
                "values_to_fleet_ok": 0, "values_to_ide_only": 0, "rules_added": 0, "rules_removed": 1})
        );
    }
}
