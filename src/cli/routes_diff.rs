//! `fleetgate routes diff --app-routes FILE OLD_DIR NEW_DIR`: how the application's
//! routes move between two manifests, for a pull request review.
//!
//! The comparison is [`crate::manifest::diff`]; this file reads the inputs and renders
//! the result as text, Markdown (a pull request comment) or JSON.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | no route moves from ide-only to fleet-ok (other changes may be listed) |
//! | 1 | some route moves from ide-only to fleet-ok |
//! | 2 | usage (clap) |
//! | 78 | a manifest does not load, or an app-routes file cannot be read or parsed |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::exit;
use super::routes::{load, plural, print_stdout, read_app_routes, AppRoutes};
use crate::manifest::diff::{self, Outcome, RouteChange, RouteDiff, RuleRef, ValueChange};

/// `routes diff --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiffFormat {
    /// Grouped lines, then a summary line.
    #[default]
    Text,
    /// A pull request comment: a heading, a summary line, one table per group.
    Markdown,
    /// One JSON object: `{"summary", "to_fleet_ok", "to_ide_only", "rule_changed",
    /// "values_to_fleet_ok", "values_to_ide_only", "rules_added", "rules_removed"}`.
    Json,
}

pub struct DiffArgs<'a> {
    pub old: &'a Path,
    pub new: &'a Path,
    /// One or more route inputs, as for `routes drift --app-routes`.
    pub app_routes: &'a [PathBuf],
    pub format: DiffFormat,
}

/// `fleetgate routes diff`.
pub fn diff(args: DiffArgs<'_>) -> i32 {
    // Both manifests are loaded before giving up, so that one run shows every error.
    let (old, new) = (load(args.old), load(args.new));
    let (Ok(old), Ok(new)) = (old, new) else {
        return exit::CONFIG;
    };
    let AppRoutes { names, merged } = match read_app_routes(args.app_routes) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = diff::diff(&old, &new, &merged.routes, &merged.source);
    let ctx = Context {
        old: args.old.display().to_string(),
        new: args.new.display().to_string(),
        app_names: names,
    };
    let text = match args.format {
        DiffFormat::Text => render_text(&ctx, &result),
        DiffFormat::Markdown => render_markdown(&ctx, &result),
        DiffFormat::Json => {
            let mut s = serde_json::to_string(&result).expect("plain data serializes");
            s.push('\n');
            s
        }
    };
    let code = if result.moves_to_fleet() {
        exit::FINDINGS
    } else {
        exit::OK
    };
    print_stdout(&text, code)
}

struct Context {
    old: String,
    new: String,
    app_names: Vec<String>,
}

impl Context {
    /// `app-routes.txt:12`, where a route came from (just the file when the line is
    /// unknown).
    fn at(&self, c: &RouteChange) -> String {
        self.at_line(c.source, c.line)
    }

    fn at_line(&self, source: usize, line: u32) -> String {
        let file = self.app_names.get(source).map_or("", String::as_str);
        if line > 0 {
            format!("{file}:{line}")
        } else {
            file.to_string()
        }
    }
}

/// The three groups of route changes, in the order a reviewer reads them: title (text,
/// Markdown), why it matters, the changes.
fn groups(d: &RouteDiff) -> [(&'static str, &'static str, &'static str, &[RouteChange]); 3] {
    [
        (
            "ide-only -> fleet-ok",
            "ide-only → fleet-ok",
            "These routes may now be served by a stateless replica: what they write there may be lost.",
            &d.to_fleet_ok,
        ),
        (
            "fleet-ok -> ide-only",
            "fleet-ok → ide-only",
            "These routes now go to the single primary: more load on it.",
            &d.to_ide_only,
        ),
        (
            "same class, another rule",
            "Same class, another rule",
            "The class is unchanged; the rule that decides it is not.",
            &d.rule_changed,
        ),
    ]
}

/// The two groups of parameter values that change class: title (text, Markdown), why
/// it matters, the changes.
fn value_groups(d: &RouteDiff) -> [(&'static str, &'static str, &'static str, &[ValueChange]); 2] {
    [
        (
            "parameter values ide-only -> fleet-ok",
            "Parameter values ide-only → fleet-ok",
            "Requests with these values may now be served by a stateless replica, although the route as a whole keeps its class.",
            &d.values_to_fleet_ok,
        ),
        (
            "parameter values fleet-ok -> ide-only",
            "Parameter values fleet-ok → ide-only",
            "Requests with these values now go to the single primary.",
            &d.values_to_ide_only,
        ),
    ]
}

/// `1 ide-only -> fleet-ok, 0 fleet-ok -> ide-only, 2 with another rule; rules: 1
/// added, 0 removed (85 app routes)`, or the same saying that nothing changed.
fn summary(d: &RouteDiff, arrow: &str) -> String {
    let s = &d.summary;
    let mut routes = if s.to_fleet_ok + s.to_ide_only + s.rule_changed == 0 {
        "no route changes class or rule".to_string()
    } else {
        format!(
            "{} ide-only {arrow} fleet-ok, {} fleet-ok {arrow} ide-only, {} with another rule",
            plural(s.to_fleet_ok, "route"),
            s.to_ide_only,
            s.rule_changed
        )
    };
    if s.values_to_fleet_ok + s.values_to_ide_only > 0 {
        let _ = write!(
            routes,
            "; {} ide-only {arrow} fleet-ok, {} fleet-ok {arrow} ide-only",
            plural(s.values_to_fleet_ok, "parameter value"),
            s.values_to_ide_only
        );
    }
    let rules = if s.rules_added + s.rules_removed == 0 {
        "no rule added or removed".to_string()
    } else {
        format!(
            "rules: {} added, {} removed",
            s.rules_added, s.rules_removed
        )
    };
    format!("{routes}; {rules} ({})", plural(s.routes, "app route"))
}

fn rule_text(r: &RuleRef) -> String {
    let mut s = format!("{} {} {}", r.rule, r.methods.join(","), r.path);
    if !r.when.is_empty() {
        let _ = write!(s, " when {}", r.when);
    }
    s
}

fn outcome_text(o: &Outcome) -> String {
    match &o.rule {
        Some(r) => format!("{} ({})", o.class, rule_text(r)),
        None => format!("{} (default)", o.class),
    }
}

fn render_text(ctx: &Context, d: &RouteDiff) -> String {
    let mut text = String::new();
    for (title, _, why, changes) in groups(d) {
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(text, "{title} ({}): {why}", changes.len());
        for c in changes {
            let _ = writeln!(
                text,
                "  {}: {} {}: {} -> {}",
                ctx.at(c),
                c.method,
                c.route,
                outcome_text(&c.old),
                outcome_text(&c.new)
            );
        }
    }
    for (title, _, why, changes) in value_groups(d) {
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(text, "{title} ({}): {why}", changes.len());
        for v in changes {
            let _ = writeln!(
                text,
                "  {}: {} {} with {} = {}: {} -> {}",
                ctx.at_line(v.source, v.line),
                v.method,
                v.route,
                v.param,
                v.value,
                v.old,
                v.new
            );
        }
    }
    for (title, rules) in [
        ("rules added", &d.rules_added),
        ("rules removed", &d.rules_removed),
    ] {
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(text, "{title} ({}):", rules.len());
        for r in rules {
            let _ = writeln!(text, "  {} ({})", rule_text(r), r.class);
        }
    }
    let _ = writeln!(
        text,
        "diff {} -> {}: {}",
        ctx.old,
        ctx.new,
        summary(d, "->")
    );
    text
}

/// `text` as a Markdown code span that is safe in a table cell: a backtick fence longer
/// than any run of backticks inside, and `|` escaped (GitHub-flavoured tables split
/// cells on `|` even inside code spans).
fn md_code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}").replace('|', "\\|")
}

fn md_rule(r: &RuleRef) -> String {
    let mut s = format!(
        "{} {}",
        md_code(&r.rule),
        md_code(&format!("{} {}", r.methods.join(","), r.path))
    );
    if !r.when.is_empty() {
        let _ = write!(s, " when {}", md_code(&r.when));
    }
    s
}

fn md_outcome(o: &Outcome) -> String {
    match &o.rule {
        Some(r) => format!("**{}** by {}", o.class, md_rule(r)),
        None => format!("**{}** (default class)", o.class),
    }
}

fn render_markdown(ctx: &Context, d: &RouteDiff) -> String {
    let mut md = String::from("### fleetgate routes diff\n\n");
    let s = &d.summary;
    let lead = if d.moves_to_fleet() {
        "**Warning:** "
    } else {
        ""
    };
    let line = summary(d, "→");
    let mut first = line.chars();
    let capital: String = first
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(first)
        .collect();
    let _ = writeln!(md, "{lead}{capital}.\n");
    let _ = writeln!(
        md,
        "The application's routes ({}) classified by the manifest in {} (before) and {} (after).\n",
        ctx.app_names
            .iter()
            .map(|n| md_code(n))
            .collect::<Vec<_>>()
            .join(", "),
        md_code(&ctx.old),
        md_code(&ctx.new)
    );
    for (_, title, why, changes) in groups(d) {
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(md, "#### {title} ({})\n\n{why}\n", changes.len());
        md.push_str("| Route | Before | After |\n|---|---|---|\n");
        for c in changes {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                md_code(&format!("{} {}", c.method, c.route)),
                md_outcome(&c.old),
                md_outcome(&c.new)
            );
        }
        md.push('\n');
    }
    for (_, title, why, changes) in value_groups(d) {
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(md, "#### {title} ({})\n\n{why}\n", changes.len());
        md.push_str("| Route | Parameter | Value | Before | After |\n|---|---|---|---|---|\n");
        for v in changes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | **{}** | **{}** |",
                md_code(&format!("{} {}", v.method, v.route)),
                md_code(&v.param),
                md_code(&v.value),
                v.old,
                v.new
            );
        }
        md.push('\n');
    }
    if s.rules_added + s.rules_removed > 0 {
        let _ = writeln!(
            md,
            "#### Rules added and removed ({})\n",
            s.rules_added + s.rules_removed
        );
        md.push_str("| | Rule | Methods | Pattern | Class |\n|---|---|---|---|---|\n");
        for (what, rules) in [("added", &d.rules_added), ("removed", &d.rules_removed)] {
            for r in rules {
                let mut pattern = md_code(&r.path);
                if !r.when.is_empty() {
                    let _ = write!(pattern, " when {}", md_code(&r.when));
                }
                let _ = writeln!(
                    md,
                    "| {what} | {} | {} | {} | {} |",
                    md_code(&r.rule),
                    md_code(&r.methods.join(",")),
                    pattern,
                    r.class
                );
            }
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_tables() {
        assert_eq!(md_code("GET /a/{id}"), "`GET /a/{id}`");
        assert_eq!(md_code("/a|b"), "`/a\\|b`");
        assert_eq!(md_code("/a`b"), "``/a`b``");
        assert_eq!(md_code("`x``"), "``` `x`` ```");
    }
}
