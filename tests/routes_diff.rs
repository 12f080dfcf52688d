//! `fleetgate routes diff --app-routes FILE OLD_DIR NEW_DIR`, driven through the built
//! binary on manifests written to temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fleetgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fleetgate")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory under cargo's per-target scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("routes_diff-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A test case's files: `old/routes.toml`, `new/routes.toml` and `app-routes.txt`.
struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str, old: &str, new: &str, app_routes: &str) -> Case {
        let dir = scratch(name);
        for (sub, text) in [("old", old), ("new", new)] {
            fs::create_dir_all(dir.join(sub)).unwrap();
            fs::write(dir.join(sub).join("routes.toml"), text).unwrap();
        }
        fs::write(dir.join("app-routes.txt"), app_routes).unwrap();
        Case { dir }
    }

    fn run(&self, format: &str) -> Output {
        let app = self.dir.join("app-routes.txt");
        let (old, new) = (self.dir.join("old"), self.dir.join("new"));
        fleetgate(&[
            "routes",
            "diff",
            "--app-routes",
            s(&app),
            "--format",
            format,
            s(&old),
            s(&new),
        ])
    }

    fn json(&self) -> serde_json::Value {
        let o = self.run("json");
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&o)))
    }
}

fn rule(methods: &str, path: &str, class: &str) -> String {
    let methods = if methods.is_empty() {
        String::new()
    } else {
        format!("methods = [{methods}]\n")
    };
    format!("[[rule]]\n{methods}path = \"{path}\"\nclass = \"{class}\"\nwhy = \"test\"\n\n")
}

const APP: &str = "\
GET /api/{ws}/files/{*path}
PUT /api/{ws}/files/{*path}
GET /api/{ws}/threads/{id}
POST /api/{ws}/threads
GET /health
";

/// Files are ide-only, threads fleet-ok (by the default class).
fn base() -> String {
    rule("", "/api/{ws}/files/{*rest}", "ide-only")
}

#[test]
fn ide_only_to_fleet_ok_is_listed_first_and_exits_1() {
    // A carve-out sends file reads to the fleet: PUT stays on the ide.
    let new = base() + &rule("\"GET\"", "/api/{ws}/files/{*rest}", "fleet-ok");
    let case = Case::new("to-fleet", &base(), &new, APP);

    let o = case.run("text");
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ide-only -> fleet-ok (1): "), "{out}");
    assert!(
        lines[1].ends_with(
            "app-routes.txt:1: GET /api/{ws}/files/{*path}: ide-only (routes.toml:1 * /api/{ws}/files/{*rest}) -> fleet-ok (routes.toml:6 GET /api/{ws}/files/{*rest})"
        ),
        "{out}"
    );
    assert_eq!(lines[2], "rules added (1):");
    assert_eq!(
        lines[3],
        "  routes.toml:6 GET /api/{ws}/files/{*rest} (fleet-ok)"
    );
    assert!(
        lines[4].ends_with(
            "1 route ide-only -> fleet-ok, 0 fleet-ok -> ide-only, 0 with another rule; rules: 1 added, 0 removed (5 app routes)"
        ),
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");

    let v = case.json();
    assert_eq!(v["summary"]["to_fleet_ok"], 1);
    assert_eq!(v["to_fleet_ok"][0]["route"], "/api/{ws}/files/{*path}");
    assert_eq!(v["to_ide_only"], serde_json::json!([]));
}

#[test]
fn fleet_ok_to_ide_only_exits_0_and_is_grouped_apart() {
    // Threads move to the ide, and so does the health check (default class flips).
    let new = format!(
        "[manifest]\ndefault_class = \"ide-only\"\n\n{}{}",
        base(),
        rule("\"POST\"", "/api/{ws}/threads", "fleet-ok")
    );
    let case = Case::new("to-ide", &base(), &new, APP);
    let o = case.run("text");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("ide-only -> fleet-ok ("), "{out}");
    let v = case.json();
    let moved: Vec<&str> = v["to_ide_only"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["route"].as_str().unwrap())
        .collect();
    assert_eq!(moved, vec!["/api/{ws}/threads/{id}", "/health"]);
    assert_eq!(v["to_ide_only"][0]["old"]["rule"], serde_json::Value::Null);
    assert_eq!(v["to_ide_only"][0]["new"]["class"], "ide-only");
    // POST /api/{ws}/threads keeps fleet-ok, from a rule instead of the default.
    assert_eq!(v["rule_changed"][0]["route"], "/api/{ws}/threads");
    assert_eq!(v["rule_changed"][0]["new"]["rule"]["rule"], "routes.toml:9");
    assert_eq!(v["summary"]["to_fleet_ok"], 0);
}

#[test]
fn both_directions_in_reviewing_order() {
    let old = base() + &rule("", "/api/{ws}/threads/{*rest}", "ide-only");
    let new = rule("\"PUT\"", "/api/{ws}/files/{*rest}", "ide-only")
        + &rule("\"GET\"", "/health", "ide-only");
    let case = Case::new("both", &old, &new, APP);
    let o = case.run("text");
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {out}"))
    };
    assert!(
        at("ide-only -> fleet-ok (2)") < at("fleet-ok -> ide-only (1)"),
        "{out}"
    );
    assert!(
        at("fleet-ok -> ide-only (1)") < at("same class, another rule (1)"),
        "{out}"
    );
    assert!(
        at("same class, another rule (1)") < at("rules added (2)"),
        "{out}"
    );
    assert!(at("rules added (2)") < at("rules removed (2)"), "{out}");
    // PUT files keeps ide-only from the narrower rule.
    assert!(out.contains("PUT /api/{ws}/files/{*path}: ide-only (routes.toml:1 * /api/{ws}/files/{*rest}) -> ide-only (routes.toml:1 PUT /api/{ws}/files/{*rest})"), "{out}");
}

#[test]
fn a_rule_change_alone_exits_0() {
    let new = base() + &rule("\"GET\"", "/api/{ws}/files/{*rest}", "ide-only");
    let case = Case::new("rule-only", &base(), &new, APP);
    let o = case.run("text");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let v = case.json();
    assert_eq!(
        v["summary"],
        serde_json::json!({"routes": 5, "to_fleet_ok": 0, "to_ide_only": 0, "rule_changed": 1,
            "values_to_fleet_ok": 0, "values_to_ide_only": 0, "rules_added": 1, "rules_removed": 0})
    );
    assert_eq!(v["rule_changed"][0]["method"], "GET");
    assert_eq!(v["rule_changed"][0]["old"]["rule"]["rule"], "routes.toml:1");
}

#[test]
fn no_change_says_so_in_every_format() {
    // Moving a rule down (a comment above it) and renaming its parameter changes nothing.
    let new = format!(
        "# files\n\n{}",
        rule("", "/api/{w}/files/{*tail}", "ide-only")
    );
    let case = Case::new("none", &base(), &new, APP);
    let o = case.run("text");
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.ends_with(
            ": no route changes class or rule; no rule added or removed (5 app routes)\n"
        ),
        "{out}"
    );
    let o = case.run("markdown");
    assert_eq!(code(&o), 0);
    let md = stdout(&o);
    assert!(md.starts_with("### fleetgate routes diff\n\nNo route changes class or rule; no rule added or removed (5 app routes).\n"), "{md}");
    assert!(!md.contains("| Route |"), "{md}");
    let v = case.json();
    for list in [
        "to_fleet_ok",
        "to_ide_only",
        "rule_changed",
        "rules_added",
        "rules_removed",
    ] {
        assert_eq!(v[list], serde_json::json!([]), "{list}");
    }
}

#[test]
fn markdown_is_a_pr_comment_with_escaped_pipes() {
    let old = rule("", "/x|y/{*rest}", "ide-only") + &rule("", "/a`b", "ide-only");
    let new = rule("\"PUT\"", "/x|y/{*rest}", "ide-only");
    let case = Case::new(
        "markdown",
        &old,
        &new,
        "GET /x|y/{id}\nPUT /x|y/{id}\nGET /a`b\n",
    );
    let o = case.run("markdown");
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let md = stdout(&o);
    assert!(md.starts_with("### fleetgate routes diff\n\n**Warning:** 2 routes ide-only → fleet-ok, 0 fleet-ok → ide-only, 1 with another rule; rules: 1 added, 2 removed (3 app routes).\n"), "{md}");
    assert!(md.contains("\n#### ide-only → fleet-ok (2)\n"), "{md}");
    assert!(
        md.contains("\n| Route | Before | After |\n|---|---|---|\n"),
        "{md}"
    );
    assert!(
        md.contains("| `GET /x\\|y/{id}` | **ide-only** by `routes.toml:1` `* /x\\|y/{*rest}` | **fleet-ok** (default class) |"),
        "{md}"
    );
    assert!(md.contains("| ``GET /a`b`` | "), "{md}");
    assert!(
        md.contains("| removed | `routes.toml:1` | `*` | `/x\\|y/{*rest}` | ide-only |"),
        "{md}"
    );
    // Every table row has as many unescaped cell separators as its header.
    let mut columns = 0;
    for line in md.lines() {
        if !line.starts_with('|') {
            columns = 0;
            continue;
        }
        let cells = line.replace("\\|", "").matches('|').count();
        if columns == 0 {
            columns = cells;
        }
        assert_eq!(cells, columns, "{line}");
    }
}

#[test]
fn json_shape_is_stable() {
    let new = base() + &rule("\"GET\"", "/api/{ws}/files/{*rest}", "fleet-ok");
    let case = Case::new("json", &base(), &new, APP);
    let v = case.json();
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
        serde_json::json!({"method": "GET", "route": "/api/{ws}/files/{*path}",
            "old": {"class": "ide-only", "rule": {"rule": "routes.toml:1", "methods": ["*"], "path": "/api/{ws}/files/{*rest}", "class": "ide-only"}},
            "new": {"class": "fleet-ok", "rule": {"rule": "routes.toml:6", "methods": ["GET"], "path": "/api/{ws}/files/{*rest}", "class": "fleet-ok"}}})
    );
    assert_eq!(
        v["rules_added"],
        serde_json::json!([{"rule": "routes.toml:6", "methods": ["GET"], "path": "/api/{ws}/files/{*rest}", "class": "fleet-ok"}])
    );
}

#[test]
fn a_broken_new_manifest_exits_78_with_file_and_line() {
    let broken = base() + "[[rule]]\npath = \"/b/{x\"\nclass = \"ide-only\"\nwhy = \"x\"\n";
    let case = Case::new("broken", &base(), &broken, APP);
    let o = case.run("markdown");
    assert_eq!(code(&o), 78, "{}{}", stdout(&o), stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    let new_file = case.dir.join("new").join("routes.toml");
    assert!(
        err.contains(&format!("{}:7: error: key 'path'", new_file.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the manifest in {} does not load",
            case.dir.join("new").display()
        )),
        "{err}"
    );

    // Both broken: both are reported.
    fs::write(case.dir.join("old").join("routes.toml"), "[[rule]]\n").unwrap();
    let o = case.run("text");
    assert_eq!(code(&o), 78);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "the manifest in {} does not load",
            case.dir.join("old").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the manifest in {} does not load",
            case.dir.join("new").display()
        )),
        "{err}"
    );
}

#[test]
fn bad_app_routes_and_usage_errors() {
    let case = Case::new("bad-app", &base(), &base(), "GET /a\nGET\n");
    let o = case.run("text");
    assert_eq!(code(&o), 78);
    let err = stderr(&o);
    assert!(
        err.contains("app-routes.txt:2: error: expected 'METHOD /path'"),
        "{err}"
    );

    let o = fleetgate(&[
        "routes",
        "diff",
        "--app-routes",
        s(&case.dir.join("missing.txt")),
        s(&case.dir.join("old")),
        s(&case.dir.join("new")),
    ]);
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).contains("missing.txt: error: cannot read the application's routes"),
        "{}",
        stderr(&o)
    );

    // Without --app-routes, or with one directory: usage.
    let o = fleetgate(&[
        "routes",
        "diff",
        s(&case.dir.join("old")),
        s(&case.dir.join("new")),
    ]);
    assert_eq!(code(&o), 2);
    let o = fleetgate(&[
        "routes",
        "diff",
        "--app-routes",
        "x",
        s(&case.dir.join("old")),
    ]);
    assert_eq!(code(&o), 2);
}

#[test]
fn the_shipped_manifest_against_itself_and_an_openapi_input() {
    let root = env!("CARGO_MANIFEST_DIR");
    let routes = Path::new(root).join("routes");
    let o = fleetgate(&[
        "routes",
        "diff",
        "--app-routes",
        s(&routes.join("app-routes.txt")),
        s(&routes),
        s(&routes),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o)
            .contains(": no route changes class or rule; no rule added or removed (85 app routes)"),
        "{}",
        stdout(&o)
    );

    let dir = scratch("openapi");
    fs::write(
        dir.join("api.yaml"),
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /api/{ws}/files/{path}:\n    get: {}\n",
    )
    .unwrap();
    fs::create_dir_all(dir.join("old")).unwrap();
    fs::create_dir_all(dir.join("new")).unwrap();
    fs::write(dir.join("old/r.toml"), base()).unwrap();
    fs::write(dir.join("new/r.toml"), "[manifest]\n").unwrap();
    let o = fleetgate(&[
        "routes",
        "diff",
        "--app-routes",
        s(&dir.join("api.yaml")),
        s(&dir.join("old")),
        s(&dir.join("new")),
    ]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("api.yaml:4: GET /api/{ws}/files/{path}: ide-only"),
        "{}",
        stdout(&o)
    );
}

/// A fleet-ok carve-out added under an ide-only wildcard leaves the route's generic class
/// alone, but moves some of its values: reported per value, and the exit code is 1.
#[test]
fn a_carve_out_under_a_route_moves_its_values_and_fails() {
    let old = rule("", "/api/{ws}/tree/{*path}", "ide-only");
    let new = old.clone() + &rule("\"GET\"", "/api/{ws}/tree/public/{*rest}", "fleet-ok");
    let case = Case::new("carve-out", &old, &new, "GET /api/{ws}/tree/{*path}\n");
    let text = case.run("text");
    assert_eq!(code(&text), 1, "{}", stdout(&text));
    assert!(
        stdout(&text)
            .contains("GET /api/{ws}/tree/{*path} with path = public/*: ide-only -> fleet-ok"),
        "{}",
        stdout(&text)
    );
    let v = case.json();
    assert_eq!(v["to_fleet_ok"], serde_json::json!([]));
    assert_eq!(
        v["values_to_fleet_ok"],
        serde_json::json!([{"method": "GET", "route": "/api/{ws}/tree/{*path}", "param": "path",
            "value": "public/*", "old": "ide-only", "new": "fleet-ok"}])
    );
    let md = stdout(&case.run("markdown"));
    assert!(md.contains("**Warning:**"), "{md}");
    assert!(
        md.contains(
            "| `GET /api/{ws}/tree/{*path}` | `path` | `public/*` | **ide-only** | **fleet-ok** |"
        ),
        "{md}"
    );
}
