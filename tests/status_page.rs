//! The status page on the admin listener: `GET /` and `GET /status.json` over plain HTTP,
//! and what a person sees when headless Chromium renders the page against a running
//! fleetgate that has served requests, refused one reload and applied another.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A rule that does not load: its class is not a class, and it looks like markup.
const BAD_RULE: &str = r#"
[[rule]]
path = "/broken"
class = "<b>bold</b>"
why = "a reload must refuse this"
"#;

async fn status(setup: &Setup) -> Value {
    let a = get(&setup.admin_url("/status.json")).await;
    assert_eq!(a.status, 200);
    a.json()
}

/// The rule of `status` whose pattern is `path`: (index, location, requests).
fn rule(status: &Value, path: &str) -> (usize, String, u64) {
    let rules = status["routes"]["rules"].as_array().expect("routes.rules");
    let r = rules
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no rule {path} in {rules:?}"));
    (
        r["index"].as_u64().unwrap() as usize,
        r["location"].as_str().unwrap().to_string(),
        r["requests"].as_u64().unwrap(),
    )
}

async fn send_n(setup: &Setup, path: &str, n: usize, expect_server: &str) {
    for _ in 0..n {
        let a = get(&setup.url(path)).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
        assert_eq!(a.server(), expect_server, "{path}");
    }
}

async fn post(setup: &Setup, path: &str, body: &str) -> Answer {
    use http_body_util::{BodyExt, Full};
    let req = http::Request::post(setup.admin_url(path))
        .body(
            Full::new(bytes::Bytes::from(body.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20 s")
        .expect("answer");
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn the_page_is_self_contained_and_locked_down() {
    let setup = Setup::serve().await;
    let a = get(&setup.admin_url("/")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = a.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'unsafe-inline'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let html = std::str::from_utf8(&a.body).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("loading…"),
        "says it is loading before the script runs"
    );
    assert!(html.contains("fetch(\"status.json\""));
    for external in [
        "http://",
        "https://",
        "src=",
        "<link",
        "@import",
        "innerHTML",
    ] {
        assert!(
            !html.contains(external),
            "the page must load nothing else and write data only as text: found {external}"
        );
    }

    let j = get(&setup.admin_url("/status.json")).await;
    assert_eq!(j.status, 200);
    assert_eq!(j.header("content-type"), Some("application/json"));
    assert_eq!(j.header("cache-control"), Some("no-store"));
    assert_eq!(j.header("x-content-type-options"), Some("nosniff"));

    // The data listener does not serve the page: `/` there is a request like any other.
    let data = get(&setup.url("/")).await;
    assert_eq!(data.server(), "fleet");
    let head = send("HEAD", &setup.admin_url("/"), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    setup.shutdown().await;
}

#[tokio::test]
async fn status_json_counts_requests_per_rule_and_keeps_the_last_ten_reloads() {
    let setup = Setup::serve().await;
    let s = status(&setup).await;
    assert_eq!(s["role"], "serve");
    assert_eq!(s["node_id"], "test-node");
    assert_eq!(s["status"], "ok");
    assert_eq!(s["manifest"]["digest"], setup.manifest_digest());
    assert_eq!(s["manifest"]["serial"], 1);
    assert_eq!(s["manifest"]["rules"], 4);
    assert!(s["manifest"]["loaded_at_unix"].as_f64().unwrap() > 0.0);
    assert_eq!(s["version_skew"], false);
    assert_eq!(s["guard"]["super_read_only"], false);
    assert_eq!(s["guard"]["unlisted_writes"], "ide");
    assert_eq!(s["reloads"], serde_json::json!([]));
    assert_eq!(s["routes"]["unlisted_requests"], 0);
    assert!(s["admission"].is_object());
    let fleet_eps = s["upstreams"]["fleet"]["endpoints"].as_array().unwrap();
    assert_eq!(fleet_eps.len(), 1);
    assert_eq!(fleet_eps[0]["address"], setup.fleet.addr.to_string());
    assert_eq!(fleet_eps[0]["reachable"], true);
    assert!(s["upstreams"]["ide"]["endpoints"].is_array());
    let (_, _, zero) = rule(&s, "/api/{ws}/{*rest}");
    assert_eq!(zero, 0);
    let (_, _, zero) = rule(&s, "/preview/{id}");
    assert_eq!(zero, 0);
    let flags = &s["routes"]["rules"][2]["flags"];
    assert_eq!(s["routes"]["rules"][2]["path"], "/preview/{id}");
    assert_eq!(flags, &serde_json::json!(["degrade"]), "{s}");

    send_n(&setup, "/api/w1/files/a", 3, "ide").await;
    send_n(&setup, "/v1/w1/files/b", 1, "ide").await; // through the alias
    send_n(&setup, "/api/w1/runs/7", 2, "fleet").await;
    send_n(&setup, "/nothing/listed/here", 1, "fleet").await;
    let _ = get(&setup.admin_url("/healthz")).await; // not a data-path request
    let s = status(&setup).await;
    assert_eq!(rule(&s, "/api/{ws}/{*rest}").2, 4);
    assert_eq!(rule(&s, "/api/{ws}/runs/{id}").2, 2);
    assert_eq!(rule(&s, "/preview/{id}").2, 0);
    assert_eq!(s["routes"]["unlisted_requests"], 1);
    assert_eq!(s["unlisted"]["routes"][0]["path"], "/nothing/listed/here");
    assert_eq!(s["unlisted"]["total"]["read"], 1);

    // A reload that leaves the manifest as it was keeps counting; a refused one changes
    // nothing; a new manifest starts from zero.
    let ok = post(&setup, "/reload", "").await;
    assert_eq!(ok.status, 200);
    let s = status(&setup).await;
    assert_eq!(s["manifest"]["serial"], 2);
    assert_eq!(
        rule(&s, "/api/{ws}/{*rest}").2,
        4,
        "same digest: counts go on"
    );
    setup.routes.write("20-bad.toml", BAD_RULE);
    let bad = post(&setup, "/reload", "").await;
    assert_eq!(bad.status, 422);
    let s = status(&setup).await;
    assert_eq!(rule(&s, "/api/{ws}/{*rest}").2, 4);
    let reloads = s["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 2);
    assert_eq!(reloads[0]["ok"], false, "newest first");
    assert_eq!(reloads[0]["trigger"], "POST /reload");
    assert_eq!(reloads[0]["digest"], Value::Null);
    let message = reloads[0]["error"].as_str().unwrap();
    assert!(
        message.contains("20-bad.toml:4") && message.contains("key 'class'"),
        "{message}"
    );
    assert_eq!(reloads[1]["ok"], true);
    assert_eq!(reloads[1]["digest"], setup.manifest_digest());
    assert_eq!(reloads[1]["serial"], 2);
    assert_eq!(reloads[1]["error"], Value::Null);

    std::fs::remove_file(setup.routes.path().join("20-bad.toml")).unwrap();
    setup.routes.write("20-reports.toml", REPORTS_RULE);
    assert_eq!(post(&setup, "/reload", "").await.status, 200);
    let s = status(&setup).await;
    assert_eq!(s["manifest"]["rules"], 5);
    assert_eq!(
        rule(&s, "/api/{ws}/{*rest}").2,
        0,
        "a new manifest counts anew"
    );
    assert_eq!(rule(&s, "/reports/{id}").2, 0);
    assert_eq!(s["routes"]["unlisted_requests"], 0);
    send_n(&setup, "/reports/9", 2, "ide").await;
    assert_eq!(rule(&status(&setup).await, "/reports/{id}").2, 2);

    // The ring keeps the last ten attempts, newest first.
    for _ in 0..10 {
        assert_eq!(post(&setup, "/reload", "").await.status, 200);
    }
    let s = status(&setup).await;
    let reloads = s["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 10);
    let serials: Vec<u64> = reloads
        .iter()
        .map(|r| r["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, (4..=13).rev().collect::<Vec<u64>>());
    assert_eq!(s["manifest"]["serial"], 13);

    // The guard's switch and what it refused.
    assert_eq!(
        post(&setup, "/super-read-only", r#"{"enabled": true}"#)
            .await
            .status,
        200
    );
    let refused = send("POST", &setup.url("/api/w1/runs/7"), &[]).await;
    assert_eq!(refused.status, 503);
    let s = status(&setup).await;
    assert_eq!(s["guard"]["super_read_only"], true);
    // Every known outcome is listed from start-up (at 0); only this one was counted.
    let counted: Vec<_> = s["guard"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["count"] != 0)
        .cloned()
        .collect();
    assert_eq!(
        counted,
        [serde_json::json!({"action": "refuse", "reason": "super-read-only", "count": 1})]
    );
    setup.shutdown().await;
}

/// A headless Chromium, killed (and its profile removed) when dropped.
struct Browser {
    child: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chromium` on PATH, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "this test renders the status page in headless Chromium, and `chromium` is not \
             on PATH: install it (Debian: `apt-get install chromium`)"
        )
    })
}

/// Render `url` in headless Chromium and return the DOM after its scripts ran: the
/// page's fetches are network requests, during which virtual time stands still, so the
/// budget covers a few refresh rounds however slow the machine is. Bounded by `limit`.
fn dump_dom(url: &str, limit: Duration) -> String {
    let profile = TempDir::new("chromium");
    let out_path = profile.path().join("dom.html");
    let err_path = profile.path().join("stderr.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = std::fs::File::create(&err_path).unwrap();
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--virtual-time-budget=6000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path())
        .env("XDG_CACHE_HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("chromium starts");
    let mut browser = Browser {
        child,
        _profile: profile,
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            panic!(
                "chromium did not finish within {limit:?}; stderr:\n{}",
                tail(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}); stderr:\n{}",
        tail(&err_path)
    );
    dom
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The element of `dom` that starts at `start` (an opening tag's unique prefix), up to
/// and including the first `end` after it.
fn element<'d>(dom: &'d str, start: &str, end: &str) -> &'d str {
    let at = dom
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in the rendered page:\n{dom}"));
    let rest = &dom[at..];
    let stop = rest
        .find(end)
        .unwrap_or_else(|| panic!("no {end} after {start}"));
    &rest[..stop + end.len()]
}

// Several threads: the blocking wait for Chromium must not stop the proxy under test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_role_digest_counts_reloads_and_the_switch_in_chromium() {
    let browser = chromium();
    let setup = Setup::serve().await;

    // A refused reload (its message looks like markup), then one that adds a rule.
    setup.routes.write("20-bad.toml", BAD_RULE);
    let refused = post(&setup, "/reload", "").await;
    assert_eq!(refused.status, 422);
    std::fs::remove_file(setup.routes.path().join("20-bad.toml")).unwrap();
    setup.routes.write("20-reports.toml", REPORTS_RULE);
    let applied = post(&setup, "/reload", "").await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    let digest = setup.manifest_digest();

    // Requests on the manifest now live: ide-only, fleet-ok, one that no rule names.
    send_n(&setup, "/api/w1/files/a", 3, "ide").await;
    send_n(&setup, "/api/w1/runs/7", 2, "fleet").await;
    send_n(&setup, "/nothing/listed/here", 1, "fleet").await;
    let s = status(&setup).await;
    let (_, ide_rule, _) = rule(&s, "/api/{ws}/{*rest}");
    let (_, fleet_rule, _) = rule(&s, "/api/{ws}/runs/{id}");
    let (_, reports_rule, _) = rule(&s, "/reports/{id}");

    assert_eq!(
        post(&setup, "/super-read-only", r#"{"enabled": true}"#)
            .await
            .status,
        200
    );

    let url = setup.admin_url("/");
    assert!(browser.is_file());
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, Duration::from_secs(60)))
        .await
        .unwrap();

    // The page loaded its data and says so.
    assert!(
        element(&dom, "<span id=\"freshness\"", "</span>").contains(">live<"),
        "the page did not get /status.json:\n{dom}"
    );
    assert!(element(&dom, "<span id=\"updated\"", "</span>").contains("last updated"));
    assert_eq!(
        element(&dom, "<strong id=\"role\"", "</strong>"),
        "<strong id=\"role\">serve</strong>"
    );
    assert!(element(&dom, "<strong id=\"node-id\"", "</strong>").contains(">test-node<"));
    assert_eq!(
        element(&dom, "<code class=\"digest\" id=\"digest\"", "</code>"),
        format!("<code class=\"digest\" id=\"digest\">{digest}</code>")
    );

    // Route rows: the count a person reads is the number of requests sent.
    let requests_cell = |location: &str| {
        let row = element(&dom, &format!("<tr data-rule=\"{location}\""), "</tr>");
        let cell = row.rsplit("<td class=\"num\">").next().unwrap();
        cell.trim_end_matches("</tr>")
            .trim_end_matches("</td>")
            .to_string()
    };
    assert_eq!(requests_cell(&ide_rule), "3");
    assert_eq!(requests_cell(&fleet_rule), "2");
    assert_eq!(requests_cell(&reports_rule), "0");
    assert_eq!(requests_cell("unlisted"), "1");
    let ide_row = element(&dom, &format!("<tr data-rule=\"{ide_rule}\""), "</tr>");
    assert!(ide_row.contains(">/api/{ws}/{*rest}<") && ide_row.contains(">ide-only<"));
    assert!(ide_row.contains(">tenant={ws}<"), "{ide_row}");

    // The unlisted routes table.
    let unlisted = element(&dom, "<tbody id=\"unlisted\"", "</tbody>");
    assert!(unlisted.contains(">/nothing/listed/here<"), "{unlisted}");

    // Reloads, newest first: the applied one with its digest, then the refused one with
    // its message, shown as text (the markup in it is escaped, not rendered).
    let reloads = element(&dom, "<tbody id=\"reloads\"", "</tbody>");
    let applied_at = reloads.find(&digest).expect("the applied reload's digest");
    let refused_at = reloads
        .find("20-bad.toml:4: error: key 'class'")
        .unwrap_or_else(|| panic!("the refused reload's message:\n{reloads}"));
    assert!(applied_at < refused_at, "newest first:\n{reloads}");
    assert!(reloads.contains("&lt;b&gt;bold&lt;/b&gt;"), "{reloads}");
    assert!(
        !dom.contains("<b>bold</b>"),
        "data must never become markup"
    );
    assert_eq!(reloads.matches(">error</td>").count(), 1);
    assert_eq!(reloads.matches(">ok</td>").count(), 1);

    // The switch an operator flipped.
    let switch = element(&dom, "<dd id=\"super-read-only\"", "</dd>");
    assert!(switch.contains("on: writes refused"), "{switch}");
    assert!(element(&dom, "<dd id=\"unlisted-writes\"", "</dd>").contains(">ide<"));

    // Upstreams: both healthy.
    let ups = element(&dom, "<tbody id=\"upstreams\"", "</tbody>");
    assert!(
        ups.contains(&setup.fleet.addr.to_string()) && ups.contains(&setup.ide().addr.to_string())
    );
    assert_eq!(ups.matches(">healthy<").count(), 2, "{ups}");
    setup.shutdown().await;
}
