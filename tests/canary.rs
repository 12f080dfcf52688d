//! `fleetgate canary` against a real deployment on loopback: an edge fleetgate (role
//! serve) whose ide upstream is an inner fleetgate (role ide) in front of the ide
//! application, and a fleet application. The canary passes, sends nothing but GET/HEAD,
//! and fails, naming the route, once the deployment's manifest mis-classifies one.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetgate::cli::canary::{self, CanaryArgs, CanaryFormat, Verdict};
use fleetgate::config::Role;
use fleetgate::reload::Trigger;
use fleetgate::server::RunningServer;
use support::*;

const EXE: &str = env!("CARGO_BIN_EXE_fleetgate");

const MANIFEST: &str = r#"
[manifest]
default_class = "fleet-ok"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/files/{*path}"
class = "ide-only"
why = "reads the working copy"

[[rule]]
path = "/api/{ws}/terminals/{id}"
class = "ide-only"
why = "a process on the ide"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/runs/{id}"
class = "fleet-ok"
why = "database rows"

[[rule]]
methods = ["GET"]
path = "/api/{ws}/reports"
class = "fleet-ok"
why = "rendered from the database"
"#;

const APP_ROUTES: &str = "\
# the application's routes, as `routes drift` reads them
GET /api/{ws}/files/{*path}
HEAD /api/{ws}/files/{*path}
GET /api/{ws}/terminals/{id}
GET /api/{ws}/runs/{id}
GET /api/{ws}/reports
GET /about
POST /api/{ws}/files/{*path}
DELETE /api/{ws}/runs/{id}
PUT,PATCH /api/{ws}/terminals/{id}
";

const MUTATING: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// The two fleetgates, the two applications, and the canary's own files.
struct Deployment {
    fleet: Upstream,
    ide: Upstream,
    inner: RunningServer,
    edge: RunningServer,
    _inner_routes: TempDir,
    edge_routes: TempDir,
    /// The canary's manifest (`routes/`) and `app-routes.txt`.
    work: TempDir,
}

impl Deployment {
    async fn start() -> Deployment {
        let fleet = upstream("fleet").await;
        let ide = upstream("ide").await;

        let inner_routes = TempDir::new("canary-inner");
        inner_routes.write("10-routes.toml", MANIFEST);
        let mut cfg = config(Role::Ide, inner_routes.path(), &[ide.addr], None);
        cfg.node_id = "inner".into();
        let inner = start(cfg).await;

        let edge_routes = TempDir::new("canary-edge");
        edge_routes.write("10-routes.toml", MANIFEST);
        let mut cfg = config(
            Role::Serve,
            edge_routes.path(),
            &[fleet.addr],
            Some(inner.addr),
        );
        cfg.node_id = "edge".into();
        let edge = start(cfg).await;

        let work = TempDir::new("canary-work");
        std::fs::create_dir_all(work.path().join("routes")).unwrap();
        work.write("routes/10-routes.toml", MANIFEST);
        work.write("app-routes.txt", APP_ROUTES);
        Deployment {
            fleet,
            ide,
            inner,
            edge,
            _inner_routes: inner_routes,
            edge_routes,
            work,
        }
    }

    fn edge_url(&self) -> String {
        format!("http://{}", self.edge.addr)
    }

    fn args(&self, target: &str) -> CanaryArgs {
        let mut a = CanaryArgs::new(
            target,
            self.work.path().join("routes"),
            self.work.path().join("app-routes.txt"),
        );
        a.rate = 200;
        a.timeout = Duration::from_secs(5);
        a
    }

    /// Every method either application has seen.
    fn methods_seen(&self) -> Vec<String> {
        let mut all: Vec<String> = self.fleet.seen().into_iter().map(|s| s.method).collect();
        all.extend(self.ide.seen().into_iter().map(|s| s.method));
        all
    }

    async fn shutdown(self) {
        self.edge.shutdown().await;
        self.inner.shutdown().await;
    }
}

/// Run the real binary with `args`; (exit code, stdout, stderr).
async fn run_binary(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(EXE).args(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn binary_args(d: &Deployment, extra: &[&str]) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut v = vec![
        "canary".to_string(),
        "--target".into(),
        d.edge_url(),
        "--routes".into(),
        path(&d.work.path().join("routes")),
        "--app-routes".into(),
        path(&d.work.path().join("app-routes.txt")),
        "--rate".into(),
        "200".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test]
async fn a_correct_deployment_passes_and_nothing_is_written() {
    let d = Deployment::start().await;
    let mut args = d.args(&d.edge_url());
    args.headers = vec![("authorization".into(), "Bearer canary-token".into())];
    let report = canary::run(&args).await.expect("the canary runs");

    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{}", report.render(CanaryFormat::Text));
    assert_eq!(report.exit_code(), 0);
    let c = report.counts();
    assert_eq!(
        (c.probed, c.matched, c.skipped),
        (6, 6, 4),
        "{}",
        report.summary()
    );

    // ide-only answers come from the inner ide fleetgate, fleet-ok ones from the edge.
    let probe = |method: &str, route: &str| {
        report
            .routes
            .iter()
            .find(|r| r.method == method && r.route == route)
            .and_then(|r| r.probe.clone())
            .unwrap_or_else(|| panic!("{method} {route} was probed"))
    };
    let files = probe("GET", "/api/{ws}/files/{*path}");
    assert_eq!(files.path, "/api/canary/files/canary");
    assert_eq!(files.target.as_deref(), Some("ide"));
    assert_eq!(files.served_by.as_deref(), Some("ide@inner"));
    assert_eq!(files.status, Some(200));
    let runs = probe("GET", "/api/{ws}/runs/{id}");
    assert_eq!(runs.target.as_deref(), Some("fleet"));
    assert_eq!(runs.served_by.as_deref(), Some("serve@edge"));
    assert_eq!(
        probe("HEAD", "/api/{ws}/files/{*path}").verdict,
        Verdict::Matched
    );

    // The applications saw the probes, with the -H header, and never a mutating method.
    let ide_paths: Vec<String> = d.ide.seen().into_iter().map(|s| s.path).collect();
    assert!(ide_paths.contains(&"/api/canary/terminals/canary".to_string()));
    let fleet_seen = d.fleet.seen();
    assert!(fleet_seen.iter().any(|s| s.path == "/api/canary/reports"
        && s.headers["authorization"] == "Bearer canary-token"
        && s.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("fleetgate-canary/")));
    let methods = d.methods_seen();
    assert_eq!(methods.len(), 6, "{methods:?}");
    assert!(
        methods.iter().all(|m| m == "GET" || m == "HEAD"),
        "{methods:?}"
    );

    // The real binary agrees.
    let (code, stdout, stderr) = run_binary(binary_args(&d, &[])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("app-routes.txt:2: ok: GET /api/{ws}/files/{*path} as GET /api/canary/files/canary: expected ide-only"), "{stdout}");
    assert!(
        stdout.ends_with(
            "canary: 6 routes probed, 6 matched, 0 mismatched, 0 unknown, 0 errors (4 skipped: not GET/HEAD)\n"
        ),
        "{stdout}"
    );
    let methods = d.methods_seen();
    assert_eq!(methods.len(), 12, "{methods:?}");
    assert!(!methods.iter().any(|m| MUTATING.contains(&m.as_str())));
    d.shutdown().await;
}

#[tokio::test]
async fn a_misclassified_route_in_the_deployment_fails_the_canary() {
    let d = Deployment::start().await;
    assert!(canary::run(&d.args(&d.edge_url())).await.unwrap().is_ok());

    // The deployment's edge now sends the terminals to the fleet; the canary's manifest
    // still says ide-only.
    d.edge_routes.write(
        "10-routes.toml",
        &MANIFEST.replace(
            "class = \"ide-only\"\nwhy = \"a process on the ide\"",
            "class = \"fleet-ok\"\nwhy = \"a process on the ide\"",
        ),
    );
    let reloaded = d.edge.reloader.reload(Trigger::Admin).await.unwrap();
    assert!(reloaded.manifest_changed);

    let report = canary::run(&d.args(&d.edge_url())).await.unwrap();
    assert_eq!(report.exit_code(), 1);
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1, "{}", report.render(CanaryFormat::Text));
    assert_eq!(failures[0].method, "GET");
    assert_eq!(failures[0].route, "/api/{ws}/terminals/{id}");
    let p = failures[0].probe.as_ref().unwrap();
    assert_eq!(p.verdict, Verdict::Mismatched("routed to the fleet".into()));
    assert_eq!(p.target.as_deref(), Some("fleet"));
    let c = report.counts();
    assert_eq!((c.matched, c.mismatched), (5, 1));

    // Through the binary: exit 1, the route named in the text and in the JUnit report.
    let (code, stdout, stderr) = run_binary(binary_args(&d, &[])).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("app-routes.txt:4: mismatch: GET /api/{ws}/terminals/{id} as GET /api/canary/terminals/canary: expected ide-only (") 
            && stdout.contains("routed to the fleet [200, target fleet, served by serve@edge]"),
        "{stdout}"
    );
    assert!(stdout.contains("1 mismatched"), "{stdout}");
    let (code, stdout, stderr) = run_binary(binary_args(&d, &["--format", "junit"])).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("failures=\"1\""), "{stdout}");
    assert!(
        stdout.contains("name=\"GET /api/{ws}/terminals/{id}\" file="),
        "{stdout}"
    );
    assert!(
        stderr.contains("canary: 6 routes probed, 5 matched, 1 mismatched"),
        "{stderr}"
    );

    assert!(!d
        .methods_seen()
        .iter()
        .any(|m| MUTATING.contains(&m.as_str())));
    d.shutdown().await;
}

#[tokio::test]
async fn no_stamps_is_unknown_and_transport_errors_are_errors() {
    let d = Deployment::start().await;
    // The fleet application itself is no fleetgate: nothing is stamped.
    let mut args = d.args(&format!("http://{}", d.fleet.addr));
    let report = canary::run(&args).await.unwrap();
    let c = report.counts();
    assert_eq!((c.probed, c.unknown), (6, 6), "{}", report.summary());
    assert_eq!(report.exit_code(), 1);
    args.allow_unknown = true;
    assert_eq!(canary::run(&args).await.unwrap().exit_code(), 0);

    let dead = dead_port().await;
    let report = canary::run(&d.args(&format!("http://{dead}")))
        .await
        .unwrap();
    assert_eq!(report.counts().errors, 6, "{}", report.summary());
    assert_eq!(report.exit_code(), 1);

    // Usage and input errors.
    assert_eq!(
        canary::run(&d.args("https://edge.example"))
            .await
            .unwrap_err(),
        2
    );
    let mut bad = d.args(&d.edge_url());
    bad.app_routes = d.work.write("bad.txt", "GET\n");
    assert_eq!(canary::run(&bad).await.unwrap_err(), 78);
    let mut bad = d.args(&d.edge_url());
    bad.routes = d.work.path().join("missing");
    assert_eq!(canary::run(&bad).await.unwrap_err(), 78);
    let (code, _, stderr) = run_binary(binary_args(&d, &["--placeholder", "a/b"])).await;
    assert_eq!(code, 2, "{stderr}");
    d.shutdown().await;
}
