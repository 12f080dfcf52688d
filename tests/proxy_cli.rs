//! The real binary: `check` and `serve` configuration errors (exit 78, file/line/key in
//! the message), environment overrides, `check --print`, SIGTERM (exit 0), curl against
//! `serve` (and that its allocator runs with the compiled-in settings), and the examples
//! `fleetgate demo` prints.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use fleetgate::config::Config;
use support::*;

const EXE: &str = env!("CARGO_BIN_EXE_fleetgate");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (code, stdout, stderr) = run_in(None, args, env);
    (code, format!("{stdout}{stderr}"))
}

/// Run the binary (in `cwd`, when given): exit code, stdout, stderr.
fn run_in(
    cwd: Option<&std::path::Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut c = Command::new(EXE);
    c.args(args).stdin(Stdio::null());
    if let Some(dir) = cwd {
        c.current_dir(dir);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("FLEETGATE_CONFIG");
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn valid_config(
    _dir: &TempDir,
    routes: &std::path::Path,
    listen: u16,
    admin: u16,
    fleet: u16,
) -> String {
    format!(
        "node_id = \"cli-1\"\nrole = \"serve\"\nlisten = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         routes = \"{}\"\nlog_format = \"json\"\n[upstreams]\nfleet = [\"http://127.0.0.1:{fleet}\"]\n\
         [timeouts]\ndrain_delay = 0\n",
        routes.display()
    )
}

#[test]
fn check_accepts_a_valid_configuration() {
    let routes = manifest_dir();
    let dir = TempDir::new("cli");
    let cfg = dir.write("ok.toml", &valid_config(&dir, routes.path(), 1, 2, 3));
    let (code, out) = run(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn configuration_errors_exit_78_naming_file_line_and_key() {
    let routes = manifest_dir();
    let dir = TempDir::new("cli");
    let base = valid_config(&dir, routes.path(), 1, 2, 3);
    let cases = [
        (
            "unknown.toml",
            format!("{base}[limits]\nmax_hopz = 3\n"),
            "limits.max_hopz",
            "unknown key",
        ),
        (
            "badvalue.toml",
            base.replace("role = \"serve\"", "role = \"edge\""),
            "role",
            "serve, ide, worker, all",
        ),
        (
            "badtype.toml",
            format!("{base}connect = \"soon\"\n"),
            "timeouts.connect",
            "integer",
        ),
        ("syntax.toml", format!("{base}= nope\n"), "", ""),
    ];
    for (name, text, key, expected) in cases {
        let cfg = dir.write(name, &text);
        for cmd in ["check", "serve"] {
            let (code, out) = run(&[cmd, "--config", cfg.to_str().unwrap()], &[]);
            assert_eq!(code, 78, "{cmd} {name}: {out}");
            assert!(out.contains(name), "{cmd} {name}: names the file: {out}");
            assert!(
                out.contains(key) && out.contains(expected),
                "{cmd} {name}: {out}"
            );
            let line_no = text
                .lines()
                .position(|l| l.contains(key.rsplit('.').next().unwrap()))
                .map(|i| i + 1);
            if let (false, Some(n)) = (key.is_empty(), line_no) {
                assert!(
                    out.contains(&format!("{name}:{n}:")),
                    "{cmd} {name}: names line {n}: {out}"
                );
            }
        }
    }
    let (code, out) = run(&["check", "--config", "/nonexistent/fleetgate.toml"], &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("/nonexistent/fleetgate.toml"));
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let routes = manifest_dir();
    let dir = TempDir::new("cli");
    let cfg = dir.write("ok.toml", &valid_config(&dir, routes.path(), 1, 2, 3));
    let (code, out) = run(
        &["check", "--config", cfg.to_str().unwrap()],
        &[("FLEETGATE_LISTEN", "not-an-address")],
    );
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("FLEETGATE_LISTEN") && out.contains("listen"),
        "{out}"
    );
    let (code, out) = run(
        &["check"],
        &[
            ("FLEETGATE_ROUTES", routes.path().to_str().unwrap()),
            ("FLEETGATE_ROLE", "worker"),
        ],
    );
    assert_eq!(code, 0, "no file: defaults plus the environment: {out}");
    assert!(out.contains("worker"), "{out}");
}

#[test]
fn check_print_writes_the_effective_configuration_as_toml() {
    let routes = manifest_dir();
    let dir = TempDir::new("cli");
    let cfg = dir.write("ok.toml", &valid_config(&dir, routes.path(), 1, 2, 3));
    let token = dir.write("admin-token", "s3cret-admin-token\n");
    let env = [
        ("FLEETGATE_LIMITS_MAX_HOPS", "7"),
        ("FLEETGATE_ADMIN_TOKEN_FILE", token.to_str().unwrap()),
    ];
    let (code, stdout, stderr) = run_in(
        None,
        &["check", "--config", cfg.to_str().unwrap(), "--print"],
        &env,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.starts_with("ok: "),
        "the summary goes to stderr: {stderr}"
    );
    assert!(stdout.contains("\n[limits]\n"), "{stdout}");
    assert!(
        stdout.contains("max_hops = 7\n"),
        "the environment override is visible: {stdout}"
    );
    assert!(
        stdout.contains("shutdown = 30000\n"),
        "defaults are printed too: {stdout}"
    );
    assert!(
        stdout.contains(&format!("token_file = \"{}\"\n", token.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "never the token: {stdout}");
    let printed = Config::from_toml("printed.toml", &stdout, &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    let env_lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let loaded = Config::load_with(Some(&cfg), &env_lookup).unwrap();
    assert_eq!(
        Config {
            file: loaded.file.clone(),
            ..printed
        },
        loaded
    );

    let (code, stdout, _) = run_in(None, &["check", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ok: "), "without --print: {stdout}");

    std::fs::write(&token, "\n").unwrap();
    let (code, stdout, stderr) = run_in(
        None,
        &["check", "--config", cfg.to_str().unwrap(), "--print"],
        &env,
    );
    assert_eq!(code, 78, "an empty token file: {stderr}");
    assert!(
        stdout.is_empty(),
        "nothing printed when the check fails: {stdout}"
    );
    assert!(
        stderr.contains("admin.token_file") && stderr.contains(&token.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("conf/routes")).unwrap();
    dir.write("conf/routes/10-test.toml", MANIFEST);
    let cfg = dir.write("conf/fleetgate.toml", "routes = \"routes\"\n");
    let resolved = dir.path().join("conf/routes");
    let elsewhere = TempDir::new("cwd");
    for (cwd, config) in [
        (elsewhere.path(), cfg.to_str().unwrap()),
        (dir.path(), "conf/fleetgate.toml"),
    ] {
        let (code, stdout, stderr) = run_in(Some(cwd), &["check", "--config", config], &[]);
        assert_eq!(code, 0, "in {}: {stdout}{stderr}", cwd.display());
        assert!(
            stdout.contains(&format!("manifest {} (", resolved.display())),
            "names the resolved directory: {stdout}"
        );
    }

    // From the environment: against the working directory.
    let (code, stdout, stderr) = run_in(
        Some(dir.path()),
        &["check", "--config", cfg.to_str().unwrap()],
        &[("FLEETGATE_ROUTES", "conf/routes")],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = run_in(
        Some(elsewhere.path()),
        &["check", "--config", cfg.to_str().unwrap()],
        &[("FLEETGATE_ROUTES", "conf/routes")],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&elsewhere.path().join("conf/routes").display().to_string()),
        "names the resolved path: {stderr}"
    );

    // A file that is not there is named by its resolved path.
    let missing = dir.write("conf/missing.toml", "routes = \"nowhere\"\n");
    let (code, _, stderr) = run_in(
        Some(elsewhere.path()),
        &["check", "--config", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 78, "{stderr}");
    let nowhere = dir.path().join("conf/nowhere");
    assert!(
        stderr.contains(&nowhere.display().to_string()),
        "names {}: {stderr}",
        nowhere.display()
    );
}

#[test]
fn check_reports_every_problem_with_the_files_the_configuration_names() {
    let dir = TempDir::new("cli");
    let cfg = dir.write(
        "files.toml",
        "routes = \"no-routes\"\n[tls]\ncert = \"no-cert.pem\"\nkey = \"no-key.pem\"\n\
         [admin]\ntoken_file = \"no-token\"\n",
    );
    let (code, stdout, stderr) = run_in(None, &["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    for (key, file) in [
        ("tls.cert", "no-cert.pem"),
        ("admin.token_file", "no-token"),
        ("", "no-routes"),
    ] {
        let resolved = dir.path().join(file).display().to_string();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(key) && l.contains(&resolved)),
            "{key} {resolved}: {stderr}"
        );
    }
}

#[test]
fn a_broken_manifest_exits_78_with_its_diagnostic() {
    let routes = TempDir::new("badroutes");
    routes.write(
        "10-bad.toml",
        "[[rule]]\npath = \"/x\"\nclass = \"nowhere\"\nwhy = \"?\"\n",
    );
    let dir = TempDir::new("cli");
    let cfg = dir.write("ok.toml", &valid_config(&dir, routes.path(), 1, 2, 3));
    for cmd in ["check", "serve"] {
        let (code, out) = run(&[cmd, "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 78, "{cmd}: {out}");
        assert!(out.contains("10-bad.toml"), "{cmd}: {out}");
    }
}

/// Poll `url` until it answers 200 (bounded).
fn wait_ready(admin: u16) -> bool {
    use std::io::{Read, Write};
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The names of process `pid`'s threads, once one is named `want` (or after a 10 s
/// watchdog).
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
fn thread_names_once(pid: u32, want: &str) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..200 {
        names = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .map(|n| n.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n == want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    names
}

/// `fleetgate serve` on free ports in front of a test upstream, its stderr piped, once
/// ready (it is killed, and the test fails, if it is not); what it uses lives as long.
struct Serving {
    child: std::process::Child,
    listen: u16,
    _routes: TempDir,
    _dir: TempDir,
    _fleet: Upstream,
}

async fn start_serve() -> Serving {
    let routes = manifest_dir();
    let fleet = upstream("fleet").await;
    let dir = TempDir::new("cli");
    let (listen, admin) = (free_port(), free_port());
    let cfg = dir.write(
        "serve.toml",
        &valid_config(&dir, routes.path(), listen, admin, fleet.addr.port()),
    );
    let mut child = Command::new(EXE)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = tokio::task::spawn_blocking(move || wait_ready(admin))
        .await
        .unwrap();
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve did not become ready");
    }
    Serving {
        child,
        listen,
        _routes: routes,
        _dir: dir,
        _fleet: fleet,
    }
}

/// SIGTERM, then the exit code: `None` if the process had not exited within a 10 s
/// watchdog (it is killed then).
async fn terminate(mut child: std::process::Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })
    .await
    .unwrap()
}

/// A supervisor that stops reading fleetgate's stderr (it closed the pipe) must not keep
/// SIGTERM from shutting it down: the shutdown's log lines cannot be written, and are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_when_stderr_is_gone() {
    let mut serving = start_serve().await;
    // Its reader gone: every later write to stderr fails with EPIPE.
    drop(serving.child.stderr.take());
    let code = terminate(serving.child).await;
    assert_eq!(code, Some(0), "exit 0 after SIGTERM with stderr closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_curl_and_exits_0_on_sigterm() {
    // (`mut` for the jemalloc check below, which kills the child when it fails.)
    #[cfg_attr(not(all(target_os = "linux", feature = "jemalloc")), allow(unused_mut))]
    let mut serving = start_serve().await;
    let listen = serving.listen;

    // The allocator runs with the settings compiled into the binary (src/main.rs): its
    // background thread exists only if jemalloc read them.
    #[cfg(all(target_os = "linux", feature = "jemalloc"))]
    {
        let pid = serving.child.id();
        let threads =
            tokio::task::spawn_blocking(move || thread_names_once(pid, "jemalloc_bg_thd"))
                .await
                .unwrap();
        if !threads.iter().any(|n| n == "jemalloc_bg_thd") {
            let _ = serving.child.kill();
            let _ = serving.child.wait();
            panic!("no jemalloc background thread: {threads:?}");
        }
    }

    let a = get(&format!("http://127.0.0.1:{listen}/api/w1/runs/1")).await;
    assert_eq!((a.status.as_u16(), a.server()), (200, "fleet".to_string()));
    assert_eq!(a.header("x-fleetgate-served-by"), Some("serve@cli-1"));

    let curl = Command::new("curl").arg("--version").output();
    if curl.is_ok_and(|o| o.status.success()) {
        for extra in [None, Some("--http2-prior-knowledge")] {
            let mut c = Command::new("curl");
            c.args(["-s", "-i", "--max-time", "10"]);
            if let Some(e) = extra {
                c.arg(e);
            }
            let out = c
                .arg(format!("http://127.0.0.1:{listen}/api/w1/runs/1"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
            assert!(
                text.contains("x-fleetgate-target: fleet"),
                "curl {extra:?}: {text}"
            );
            assert!(
                text.contains("\"server\":\"fleet\""),
                "curl {extra:?}: {text}"
            );
        }
    } else {
        println!("note: curl is not installed; skipping the curl part of this test");
    }

    let code = terminate(serving.child).await;
    assert_eq!(code, Some(0), "exit 0 after SIGTERM");
}

#[tokio::test]
async fn demo_examples_show_what_they_advertise() {
    let routes = fleetgate::demo::routes_dir();
    if !routes.join("10-workspace.toml").exists() && std::fs::read_dir(&routes).is_err() {
        println!("note: no shipped routes/ directory; skipping");
        return;
    }
    let demo = fleetgate::demo::start(&routes).await.expect("demo starts");
    assert!(demo.examples.len() >= 3, "{:?}", demo.examples);
    let base = format!("http://{}", demo.server.addr);
    for ex in &demo.examples {
        let url = format!("{base}{}", ex.target);
        let headers: Vec<(&str, &str)> = ex
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let a = send(ex.method, &url, &headers).await;
        assert_eq!(
            a.status.as_u16(),
            ex.expect_status,
            "{}: {}",
            ex.title,
            ex.curl(&base)
        );
        assert_eq!(
            a.header("x-fleetgate-target"),
            ex.expect_target,
            "{}",
            ex.title
        );
        if let Some(server) = ex.expect_server {
            assert_eq!(a.server(), server, "{}", ex.title);
        }
        assert!(ex.curl(&base).starts_with("curl "));
    }
    assert!(demo
        .examples
        .iter()
        .any(|e| e.title.starts_with("ide-only")));
    assert!(demo
        .examples
        .iter()
        .any(|e| e.title.starts_with("fleet-ok")));
    assert!(demo.examples.iter().any(|e| e.expect_status == 508));
    demo.server.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_manifest_of_a_running_serve() {
    let routes = manifest_dir();
    let fleet = upstream("fleet").await;
    let ide = upstream("ide").await;
    let dir = TempDir::new("cli-hup");
    let (listen, admin) = (free_port(), free_port());
    let fleet_line = format!("fleet = [\"http://127.0.0.1:{}\"]\n", fleet.addr.port());
    let text = valid_config(&dir, routes.path(), listen, admin, fleet.addr.port()).replace(
        &fleet_line,
        &format!("{fleet_line}ide = \"http://{}\"\n", ide.addr),
    );
    assert!(text.contains("ide = "), "{text}");
    let cfg = dir.write("serve.toml", &text);
    let mut child = Command::new(EXE)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = tokio::task::spawn_blocking(move || wait_ready(admin))
        .await
        .unwrap();
    assert!(ready, "serve became ready");
    let url = format!("http://127.0.0.1:{listen}/reports/1");
    assert_eq!(get(&url).await.server(), "fleet");

    routes.write(
        "20-reports.toml",
        "[[rule]]\npath = \"/reports/{id}\"\nclass = \"ide-only\"\nwhy = \"rendered from the working copy\"\n",
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut server = String::new();
    for _ in 0..100 {
        server = get(&url).await.server();
        if server == "ide" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(server, "ide", "SIGHUP reloaded the manifest");
}
