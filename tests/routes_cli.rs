//! `fleetgate routes check|classify|drift`, driven through the built binary on
//! temporary manifests, on the acceptance manifest and on the shipped `routes/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fleetgate_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fleetgate");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn fleetgate(args: &[&str]) -> Output {
    fleetgate_in(Path::new(ROOT), args, None)
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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("routes_cli-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir/routes/<name>` for every file, returns `dir/routes`.
fn manifest(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let routes = dir.join("routes");
    fs::create_dir_all(&routes).unwrap();
    for (name, text) in files {
        fs::write(routes.join(name), text).unwrap();
    }
    routes
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

const ACCEPTANCE: &str = "tests/data/acceptance-routes";

const WS: &str = r#"[manifest]
default_class = "fleet-ok"

[[rule]]
path = "/api/{ws}/git/{*rest}"
class = "ide-only"
tenant = "ws"
why = "git on the working copy"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/git/reviews"
class = "fleet-ok"
tenant = "ws"
why = "reviews are rows"

[[rule]]
methods = ["POST"]
path = "/api/{ws}/search"
class = "ide-only"
tenant = "ws"
why = "greps the working copy"
"#;

// ---------------------------------------------------------------- routes check

#[test]
fn check_passes_the_shipped_and_acceptance_manifests() {
    for dir in ["routes", ACCEPTANCE] {
        let o = fleetgate(&["routes", "check", dir]);
        assert_eq!(code(&o), 0, "{dir}: {}{}", stdout(&o), stderr(&o));
        let out = stdout(&o);
        let summary = out.lines().last().unwrap();
        assert!(summary.starts_with(&format!("{dir}: ok: ")), "{summary}");
        assert!(summary.contains(" 0 errors"), "{summary}");
    }
}

#[test]
fn check_reports_errors_compiler_style_and_exits_1() {
    let dir = scratch("check-errors");
    let routes = manifest(
        &dir,
        &[
            ("10-a.toml", WS),
            (
                "20-b.toml",
                "[[rule]]\npath = \"/x/{a\"\nclass = \"ide-only\"\nwhy = \"x\"\n\n[[rule]]\npath = \"/y\"\nclass = \"sometimes\"\nwhy = \"y\"\n",
            ),
        ],
    );
    let o = fleetgate(&["routes", "check", s(&routes)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    let b = routes.join("20-b.toml");
    assert!(
        out.contains(&format!("{}:2: error: key 'path'", b.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}:8: error: key 'class'", b.display())),
        "{out}"
    );
    let summary = out.lines().last().unwrap();
    assert_eq!(
        summary,
        format!(
            "{}: failed: 2 errors, 0 warnings; the manifest does not load",
            routes.display()
        )
    );
}

#[test]
fn check_warnings_pass_unless_denied() {
    let dir = scratch("check-warnings");
    let dup = format!(
        "{WS}\n[[rule]]\nmethods = [\"POST\"]\npath = \"/api/{{w}}/search\"\nclass = \"ide-only\"\nwhy = \"again\"\n"
    );
    let routes = manifest(&dir, &[("a.toml", &dup)]);
    let o = fleetgate(&["routes", "check", s(&routes)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains(": warning: duplicate rule"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("4 rules in 1 file, 0 errors, 1 warning"),
        "{out}"
    );

    let o = fleetgate(&["routes", "check", "--deny-warnings", s(&routes)]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("failed: 4 rules in 1 file, 0 errors, 1 warning (warnings denied"));
}

#[test]
fn check_of_a_missing_directory_fails_and_usage_errors_exit_2() {
    let o = fleetgate(&["routes", "check", "/nonexistent/fleetgate/routes"]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("error: cannot read manifest directory"),
        "{}",
        stdout(&o)
    );
    assert_eq!(code(&fleetgate(&["routes", "check", "--bogus"])), 2);
    assert_eq!(code(&fleetgate(&["routes", "frobnicate"])), 2);
}

// ------------------------------------------------------------- routes classify

#[test]
fn batch_classify_agrees_with_the_acceptance_cases() {
    let cases =
        fs::read_to_string(Path::new(ROOT).join("tests/data/acceptance-cases.txt")).unwrap();
    let cases: Vec<(&str, &str, &str)> = cases
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap(), w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    assert!(cases.len() >= 20);
    let batch: String = cases.iter().map(|(m, t, _)| format!("{m} {t}\n")).collect();
    let o = fleetgate_in(
        Path::new(ROOT),
        &["routes", "classify", "--routes", ACCEPTANCE, "--batch", "-"],
        Some(&batch),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), cases.len());
    for ((method, target, expect), line) in cases.iter().zip(lines) {
        let got = json(line);
        assert_eq!(got["method"], *method);
        assert_eq!(got["target"], *target);
        if *expect == "ERROR" {
            assert!(got["error"].is_string(), "{method} {target}: {line}");
            continue;
        }
        let mut parts = expect.split(',');
        assert_eq!(
            got["class"],
            parts.next().unwrap(),
            "{method} {target}: {line}"
        );
        let mut default = false;
        for p in parts {
            if p == "default" {
                default = true;
            } else if let Some(t) = p.strip_prefix("tenant=") {
                assert_eq!(got["tenant"], t, "{method} {target}: {line}");
            }
        }
        assert_eq!(got["default"], default, "{method} {target}: {line}");
        assert_eq!(got["rule"].is_null(), default, "{line}");
    }
}

#[test]
fn classify_prints_one_human_line() {
    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "GET",
        "/api/p1/kernels/k1",
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o),
        format!(
            "ide-only  {ACCEPTANCE}/10-primary.toml:23  * /api/{{project}}/kernels/{{*rest}}  tenant=p1\n"
        )
    );
    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "GET",
        "/elsewhere?a=1",
    ]);
    assert_eq!(stdout(&o), "fleet-ok  (default)\n");
}

#[test]
fn classify_json_has_exactly_the_documented_fields() {
    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "--json",
        "-H",
        "X-Preview: 1",
        "GET",
        "/api/p1/./notebooks/n1?tab=2",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(
        json(&out),
        serde_json::json!({
            "method": "GET",
            "target": "/api/p1/./notebooks/n1?tab=2",
            "path": "/api/p1/notebooks/n1",
            "class": "ide-only",
            "default": false,
            "rule": {"file": format!("{ACCEPTANCE}/10-primary.toml"), "line": 36, "methods": ["GET"],
                     "path": "/api/{project}/notebooks/{id}"},
            "tenant": "p1"
        })
    );
    // The same request without the header gets the default class.
    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "--json",
        "GET",
        "/api/p1/notebooks/n1",
    ]);
    let v = json(&stdout(&o));
    assert_eq!(v["class"], "fleet-ok");
    assert_eq!(v["default"], true);
    assert!(v["rule"].is_null() && v["tenant"].is_null());
}

#[test]
fn classify_reads_the_tenant_after_alias_rewriting() {
    let dir = scratch("tenant-alias");
    let aliases = "[manifest]\naliases = [{ from = \"/v1\", to = \"/api\" }, { from = \"/try\", to = \"/api/playground\" }]\n";
    let routes = manifest(&dir, &[("00-aliases.toml", aliases), ("10-ws.toml", WS)]);
    let tenant = |target: &str| {
        let o = fleetgate(&[
            "routes",
            "classify",
            "--routes",
            s(&routes),
            "--json",
            "GET",
            target,
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        json(&stdout(&o))["tenant"].clone()
    };
    // From the request's own text after the alias, and from the alias's `to`.
    assert_eq!(tenant("/v1/acme/git/log"), "acme");
    assert_eq!(tenant("/try/git/log/"), "playground");
    assert_eq!(tenant("/api/acme/git/log"), "acme");
}

#[test]
fn classify_rejects_bad_targets_and_methods_with_exit_1() {
    let o = fleetgate(&[
        "routes", "classify", "--routes", ACCEPTANCE, "--json", "GET", "/a/%2F/b",
    ]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        json(&stdout(&o)),
        serde_json::json!({"method": "GET", "target": "/a/%2F/b", "error": "encoded slash (%2F) in path"})
    );
    let o = fleetgate(&["routes", "classify", "--routes", ACCEPTANCE, "GET", "/../x"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("path goes above the root"),
        "{}",
        stderr(&o)
    );
    let o = fleetgate(&[
        "routes", "classify", "--routes", ACCEPTANCE, "--json", "GE(T", "/x",
    ]);
    assert_eq!(code(&o), 1);
    assert!(json(&stdout(&o))["error"]
        .as_str()
        .unwrap()
        .contains("not an HTTP token"));
    // Methods are case-sensitive: `get` is a valid token that no GET rule matches.
    let o = fleetgate(&[
        "routes", "classify", "--routes", ACCEPTANCE, "--json", "get", "/console",
    ]);
    assert_eq!(code(&o), 0);
    let v = json(&stdout(&o));
    assert_eq!(v["method"], "get");
    assert_eq!(v["class"], "ide-only"); // `/console` is a `*` rule
}

#[test]
fn classify_usage_and_config_errors() {
    // Missing TARGET, a malformed -H, METHOD with --batch: usage, exit 2.
    assert_eq!(
        code(&fleetgate(&[
            "routes", "classify", "--routes", ACCEPTANCE, "GET"
        ])),
        2
    );
    let o = fleetgate(&[
        "routes", "classify", "--routes", ACCEPTANCE, "-H", "nocolon", "GET", "/",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("expected 'Name: value'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        code(&fleetgate(&[
            "routes", "classify", "--routes", ACCEPTANCE, "--batch", "-", "GET", "/"
        ])),
        2
    );
    // A manifest that does not load: its diagnostics on stderr, exit 78.
    let dir = scratch("classify-bad-manifest");
    let routes = manifest(&dir, &[("a.toml", "[[rule]]\npath = \"/a\"\n")]);
    let o = fleetgate(&["routes", "classify", "--routes", s(&routes), "GET", "/a"]);
    assert_eq!(code(&o), 78);
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("a.toml:1: error: rule has no 'class'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn batch_from_a_file_keeps_order_and_reports_errors_inline() {
    let dir = scratch("batch-file");
    let file = dir.join("batch.txt");
    fs::write(
        &file,
        "# requests\n\nGET /console\r\nPOST\nGET /api/p1/kernels/%zz\n  HEAD /api/p1/notebooks/n1/source  \nGET /a b\n",
    )
    .unwrap();
    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "--batch",
        s(&file),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0]["class"], "ide-only");
    assert_eq!(
        lines[1],
        serde_json::json!({"method": "POST", "target": "", "error": "line 4: expected 'METHOD TARGET'"})
    );
    assert_eq!(lines[2]["error"], "invalid percent-escape");
    assert_eq!(lines[3]["tenant"], "p1");
    assert_eq!(lines[4]["target"], "/a b");
    assert!(lines[4]["error"].is_string());

    let o = fleetgate(&[
        "routes",
        "classify",
        "--routes",
        ACCEPTANCE,
        "--batch",
        "/nonexistent/batch",
    ]);
    assert_eq!(code(&o), 2);
}

#[test]
fn routes_defaults_to_the_routes_directory() {
    let dir = scratch("default-routes");
    manifest(&dir, &[("a.toml", WS)]);
    let o = fleetgate_in(
        &dir,
        &["routes", "classify", "POST", "/api/w9/search"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("ide-only  routes/a.toml:"),
        "{}",
        stdout(&o)
    );
    let o = fleetgate_in(&dir, &["routes", "check"], None);
    assert_eq!(code(&o), 0);
    fs::write(
        dir.join("app.txt"),
        "POST /api/{ws}/search\nGET /api/{ws}/git/{*p}\n",
    )
    .unwrap();
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "app.txt"], None);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("app.txt:2: partial: GET /api/{ws}/git/{*p}"),
        "{}",
        stdout(&o)
    );
}

// ---------------------------------------------------------------- routes drift

/// The drift check users copy: the shipped manifest against the shipped route list.
#[test]
fn shipped_routes_have_no_drift() {
    let o = fleetgate(&[
        "routes",
        "drift",
        "--routes",
        "routes",
        "--app-routes",
        "routes/app-routes.txt",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("drift: ok ("), "{}", stdout(&o));
}

const APP: &str = "\
# the app's routes
GET /api/{ws}/git/{*path}
POST /api/:ws/git/<path:rest>
GET /api/{ws}/tree
";

#[test]
fn drift_reports_stale_and_partial_in_text() {
    let dir = scratch("drift-text");
    let routes = manifest(&dir, &[("a.toml", WS)]);
    fs::write(dir.join("app.txt"), APP).unwrap();
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "app.txt"], None);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stdout(&o),
        "routes/a.toml:17: stale: rule POST /api/{ws}/search (ide-only) matches no application route\n\
         app.txt:2: partial: GET /api/{ws}/git/{*path}: the class depends on {path}: reviews -> fleet-ok; otherwise ide-only\n\
         drift: 1 stale, 1 partial, 0 unreviewed, 0 changed (3 app routes, 3 rules, no lock)\n"
    );
    assert!(routes.join("a.toml").exists());
}

#[test]
fn drift_json_has_exactly_four_arrays() {
    let dir = scratch("drift-json");
    manifest(&dir, &[("a.toml", WS)]);
    fs::write(dir.join("app.txt"), APP).unwrap();
    fs::write(dir.join("empty.lock"), "# nothing reviewed yet\n").unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--lock",
            "empty.lock",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("{\"stale\":["), "{out}");
    let v = json(&out);
    assert_eq!(v.as_object().unwrap().len(), 4);
    assert_eq!(
        v["stale"],
        serde_json::json!([{"rule": "routes/a.toml:17", "methods": ["POST"], "path": "/api/{ws}/search", "class": "ide-only"}])
    );
    assert_eq!(
        v["partial"],
        serde_json::json!([{"method": "GET", "route": "/api/{ws}/git/{*path}", "param": "path",
            "classes": {"reviews": "fleet-ok"}, "otherwise": "ide-only"}])
    );
    assert_eq!(v["unreviewed"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["unreviewed"][1],
        serde_json::json!({"method": "POST", "route": "/api/{ws}/git/{*rest}", "class": "ide-only", "rule": "routes/a.toml:4"})
    );
    assert_eq!(
        v["unreviewed"][2],
        serde_json::json!({"method": "GET", "route": "/api/{ws}/tree", "class": "fleet-ok", "rule": "default"})
    );
    assert_eq!(v["changed"], serde_json::json!([]));
}

#[test]
fn drift_update_writes_a_sorted_lock_and_then_detects_changes() {
    let dir = scratch("drift-lock");
    let routes = manifest(&dir, &[("a.toml", WS)]);
    let app = "GET /api/{ws}/tree\nPOST /api/{ws}/search\nPOST /api/{ws}/git/{*rest}\nGET /api/{ws}/git/reviews\n";
    fs::write(dir.join("app.txt"), app).unwrap();

    let o = fleetgate_in(
        &dir,
        &["routes", "drift", "--app-routes", "app.txt", "--update"],
        None,
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("wrote routes/app-routes.lock: 4 routes"),
        "{}",
        stderr(&o)
    );
    let lock = fs::read_to_string(routes.join("app-routes.lock")).unwrap();
    let body: Vec<&str> = lock.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(lock.starts_with("# fleetgate app-routes lock"), "{lock}");
    assert_eq!(
        body,
        vec![
            "GET /api/{ws}/git/reviews fleet-ok a.toml:10",
            "POST /api/{ws}/git/{*rest} ide-only a.toml:4",
            "POST /api/{ws}/search ide-only a.toml:17",
            "GET /api/{ws}/tree fleet-ok default",
        ]
    );

    // The default lock is used when it exists: clean.
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "app.txt"], None);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(
        stdout(&o),
        "drift: ok (4 app routes, 3 rules, lock routes/app-routes.lock)\n"
    );

    // The manifest moves the tree to the ide, the app gains a route.
    let ws2 = format!(
        "{WS}\n[[rule]]\nmethods = [\"GET\"]\npath = \"/api/{{ws}}/tree\"\nclass = \"ide-only\"\nwhy = \"disk\"\n"
    );
    fs::write(routes.join("a.toml"), ws2).unwrap();
    fs::write(
        dir.join("app.txt"),
        format!("{app}DELETE /api/{{ws}}/tree\n"),
    )
    .unwrap();
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "app.txt"], None);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stdout(&o),
        "app.txt:5: unreviewed: DELETE /api/{ws}/tree is not in routes/app-routes.lock; it would be fleet-ok (default)\n\
         app.txt:1: changed: GET /api/{ws}/tree was fleet-ok in routes/app-routes.lock, now ide-only (routes/a.toml:24)\n\
         drift: 0 stale, 0 partial, 1 unreviewed, 1 changed (5 app routes, 4 rules, lock routes/app-routes.lock)\n"
    );
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--format",
            "json",
        ],
        None,
    );
    let v = json(&stdout(&o));
    assert_eq!(
        v["changed"],
        serde_json::json!([{"method": "GET", "route": "/api/{ws}/tree", "was": "fleet-ok", "now": "ide-only",
            "rule": "routes/a.toml:24"}])
    );

    // --update with an explicit --lock path; after it nothing is unreviewed or changed.
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--lock",
            "other.lock",
            "--update",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(
        json(&stdout(&o)),
        serde_json::json!({"stale": [], "partial": [], "unreviewed": [], "changed": []})
    );
    let other = fs::read_to_string(dir.join("other.lock")).unwrap();
    assert!(
        other.contains(
            "\nDELETE /api/{ws}/tree fleet-ok default\nGET /api/{ws}/tree ide-only a.toml:24\n"
        ),
        "{other}"
    );
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--lock",
            "other.lock",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn drift_junit_is_one_testcase_per_route_and_stale_rule() {
    let dir = scratch("drift-junit");
    manifest(&dir, &[("a.toml", WS)]);
    fs::write(dir.join("app.txt"), APP).unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--format",
            "junit",
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    let xml = stdout(&o);
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuites>"));
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert!(xml.contains("tests=\"4\" failures=\"2\""), "{xml}");
    assert!(xml.contains(
        "<testcase classname=\"app.txt\" name=\"GET /api/{ws}/git/{*path}\" file=\"app.txt\" line=\"2\">\n      <failure type=\"partial\""
    ), "{xml}");
    assert!(xml.contains("reviews -&gt; fleet-ok"), "{xml}");
    assert!(xml.contains("<testcase classname=\"app.txt\" name=\"GET /api/{ws}/tree\" file=\"app.txt\" line=\"4\"/>"), "{xml}");
    assert!(xml.contains("name=\"stale rule routes/a.toml:17 POST /api/{ws}/search\" file=\"routes/a.toml\" line=\"17\">"), "{xml}");
    // Nothing unescaped: no `<`/`>`/`&` outside markup in attribute values or text.
    for line in xml.lines() {
        assert!(!line.contains(" -> "), "{line}");
    }
}

#[test]
fn drift_reads_openapi_yaml_and_json() {
    let dir = scratch("drift-openapi");
    manifest(&dir, &[("a.toml", WS)]);
    fs::write(
        dir.join("api.yaml"),
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /api/{ws}/search:\n    post:\n      responses:\n        200: {description: ok}\n  /api/{ws}/git/{ref}:\n    get: {}\n    post: {}\n",
    )
    .unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "api.yaml",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let v = json(&stdout(&o));
    assert_eq!(v["stale"], serde_json::json!([]));
    assert_eq!(
        v["partial"],
        serde_json::json!([{"method": "GET", "route": "/api/{ws}/git/{ref}", "param": "ref",
            "classes": {"reviews": "fleet-ok"}, "otherwise": "ide-only"}])
    );
    fs::write(
        dir.join("api.json"),
        r#"{"openapi": "3.1.0", "paths": {"/api/{ws}/search": {"post": {}}, "/api/{ws}/git/log": {"get": {}}, "/api/{ws}/git/reviews": {"get": {}}}}"#,
    )
    .unwrap();
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "api.json"], None);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn drift_input_errors_exit_78_with_file_and_line() {
    let dir = scratch("drift-errors");
    manifest(&dir, &[("a.toml", WS)]);
    fs::write(dir.join("bad.txt"), "GET /ok\nGET\n").unwrap();
    let o = fleetgate_in(&dir, &["routes", "drift", "--app-routes", "bad.txt"], None);
    assert_eq!(code(&o), 78);
    assert!(stdout(&o).is_empty());
    assert_eq!(
        stderr(&o),
        "bad.txt:2: error: expected 'METHOD /path' (e.g. 'GET /api/{id}'), found \"GET\"\n"
    );

    let o = fleetgate_in(
        &dir,
        &["routes", "drift", "--app-routes", "missing.txt"],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).starts_with("missing.txt: error: cannot read"),
        "{}",
        stderr(&o)
    );

    fs::write(dir.join("swagger.yaml"), "swagger: '2.0'\npaths: {}\n").unwrap();
    let o = fleetgate_in(
        &dir,
        &["routes", "drift", "--app-routes", "swagger.yaml"],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).starts_with("swagger.yaml:1: error: Swagger 2.0 is not supported"),
        "{}",
        stderr(&o)
    );

    fs::write(dir.join("app.txt"), "POST /api/{ws}/search\n").unwrap();
    fs::write(dir.join("broken.lock"), "POST /api/{ws}/search ide-only\n").unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--lock",
            "broken.lock",
        ],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).starts_with("broken.lock:1: error: expected 'METHOD PATH CLASS RULE'"),
        "{}",
        stderr(&o)
    );

    // A manifest that does not load: 78, not 1.
    let bad = scratch("drift-bad-manifest");
    manifest(&bad, &[("a.toml", "[[rule]]\n")]);
    fs::write(bad.join("app.txt"), "GET /\n").unwrap();
    let o = fleetgate_in(&bad, &["routes", "drift", "--app-routes", "app.txt"], None);
    assert_eq!(code(&o), 78);

    // Usage: --app-routes is required, --format must be known.
    assert_eq!(code(&fleetgate_in(&dir, &["routes", "drift"], None)), 2);
    assert_eq!(
        code(&fleetgate_in(
            &dir,
            &[
                "routes",
                "drift",
                "--app-routes",
                "app.txt",
                "--format",
                "xml"
            ],
            None
        )),
        2
    );
}

/// The admin listener's `GET /routes/unlisted` JSON, captured to a file, is checked
/// together with the application's route list: what the manifest does not know is
/// unreviewed, named by the JSON file.
#[test]
fn drift_reads_a_captured_unlisted_table_next_to_the_route_list() {
    use fleetgate::unlisted::{path_shape, ShapeBuf, UnlistedTable};

    let dir = scratch("drift-unlisted");
    manifest(&dir, &[("a.toml", WS)]);
    let app = "POST /api/{ws}/search\nPOST /api/{ws}/git/{*rest}\nGET /api/{ws}/git/reviews\nGET /api/{ws}/tree\n";
    fs::write(dir.join("app.txt"), app).unwrap();
    let o = fleetgate_in(
        &dir,
        &["routes", "drift", "--app-routes", "app.txt", "--update"],
        None,
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // What the data path records for requests that match no rule.
    let table = UnlistedTable::new(16);
    let mut buf = ShapeBuf::new();
    for (method, path, times) in [
        ("POST", "/api/w1/exports/e1", 12),
        ("GET", "/api/w1/tree", 5), // a listed route whose class is the default
        ("DELETE", "/api/w2/exports/e9/", 1),
    ] {
        for _ in 0..times {
            table.record(method, path_shape(path, &mut buf));
        }
    }
    fs::write(
        dir.join("unlisted.json"),
        serde_json::to_string_pretty(&table.to_json()).unwrap(),
    )
    .unwrap();

    let args = [
        "routes",
        "drift",
        "--app-routes",
        "app.txt",
        "--app-routes",
        "unlisted.json",
    ];
    let o = fleetgate_in(&dir, &args, None);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        "unlisted.json: unreviewed: POST /api/{p1}/exports/{p2} is not in routes/app-routes.lock; it would be fleet-ok (default)\n\
         unlisted.json: unreviewed: DELETE /api/{p1}/exports/{p2} is not in routes/app-routes.lock; it would be fleet-ok (default)\n\
         drift: 0 stale, 0 partial, 2 unreviewed, 0 changed (6 app routes, 3 rules, lock routes/app-routes.lock)\n"
    );
    assert_eq!(
        stderr(&o),
        "note: unlisted.json: 1 observed route covered by declared routes, not checked again\n"
    );

    let o = fleetgate_in(&dir, &[&args[..], &["--format", "json"]].concat(), None);
    assert_eq!(
        json(&stdout(&o))["unreviewed"],
        serde_json::json!([
            {"method": "POST", "route": "/api/{p1}/exports/{p2}", "class": "fleet-ok", "rule": "default"},
            {"method": "DELETE", "route": "/api/{p1}/exports/{p2}", "class": "fleet-ok", "rule": "default"}
        ])
    );

    let o = fleetgate_in(&dir, &[&args[..], &["--format", "junit"]].concat(), None);
    let xml = stdout(&o);
    assert!(
        xml.contains("<testsuite name=\"drift app.txt, unlisted.json\" tests=\"6\" failures=\"2\""),
        "{xml}"
    );
    assert!(xml.contains("<testcase classname=\"unlisted.json\" name=\"POST /api/{p1}/exports/{p2}\" file=\"unlisted.json\">"), "{xml}");
    assert!(xml.contains("<testcase classname=\"app.txt\" name=\"GET /api/{ws}/tree\" file=\"app.txt\" line=\"4\"/>"), "{xml}");

    // The same route in two files is checked once, from the first file.
    fs::write(
        dir.join("more.txt"),
        "GET /api/{id}/tree\nPUT /api/{ws}/tree\n",
    )
    .unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--app-routes",
            "more.txt",
        ],
        None,
    );
    assert_eq!(
        stdout(&o),
        "more.txt:2: unreviewed: PUT /api/{ws}/tree is not in routes/app-routes.lock; it would be fleet-ok (default)\n\
         drift: 0 stale, 0 partial, 1 unreviewed, 0 changed (5 app routes, 3 rules, lock routes/app-routes.lock)\n"
    );
    assert_eq!(
        stderr(&o),
        "note: more.txt: 1 route already given by an earlier --app-routes file\n"
    );

    // Every file must be readable and well-formed.
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--app-routes",
            "gone.json",
        ],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).starts_with("gone.json: error: cannot read"),
        "{}",
        stderr(&o)
    );
    fs::write(dir.join("bad.json"), r#"{"routes": [{"path": "/a"}]}"#).unwrap();
    let o = fleetgate_in(
        &dir,
        &[
            "routes",
            "drift",
            "--app-routes",
            "app.txt",
            "--app-routes",
            "bad.json",
        ],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(
        stderr(&o).starts_with("bad.json:1: error: expected an unlisted-routes table (GET /routes/unlisted): missing field `method`"),
        "{}",
        stderr(&o)
    );
}
