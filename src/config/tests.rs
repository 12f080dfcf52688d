//! Unit tests of the configuration: the file, the environment, validation messages.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml("f.toml", text, &|_| None)
}

#[test]
fn defaults_without_file() {
    let c = Config::load_with(None, &|_| None).unwrap();
    assert_eq!(c.role, Role::Serve);
    assert_eq!(c.limits.max_hops, 4);
    assert_eq!(c.upstreams.fleet[0].port, 3000);
}

#[test]
fn full_file_parses() {
    let c = parse(
        r#"
node_id = "serve-1"
role = "worker"
listen = "127.0.0.1:8080"
[upstreams]
fleet = ["http://10.0.0.1:3000", "http://10.0.0.2:3000"]
ide = "http://ide.internal:3000"
[timeouts]
connect = 100
[limits]
max_hops = 2
"#,
    )
    .unwrap();
    assert_eq!(c.role, Role::Worker);
    assert_eq!(c.upstreams.fleet.len(), 2);
    assert_eq!(c.upstreams.ide.as_ref().unwrap().host, "ide.internal");
    assert_eq!(c.timeouts.connect, Duration::from_millis(100));
    assert_eq!(c.limits.max_hops, 2);
}

#[test]
fn allow_encoded_slash_from_file_and_environment() {
    assert!(!parse("").unwrap().allow_encoded_slash);
    assert!(
        parse("allow_encoded_slash = true\n")
            .unwrap()
            .allow_encoded_slash
    );
    let env = |k: &str| (k == "FLEETGATE_ALLOW_ENCODED_SLASH").then(|| "yes".to_string());
    assert!(Config::load_with(None, &env).unwrap().allow_encoded_slash);
    let e = parse("allow_encoded_slash = \"maybe\"\n").unwrap_err();
    assert_eq!(e.key, "allow_encoded_slash");
}

#[test]
fn max_idle_per_endpoint_from_file_and_environment() {
    assert_eq!(parse("").unwrap().upstreams.max_idle_per_endpoint, 64);
    let c = parse("[upstreams]\nmax_idle_per_endpoint = 0\n").unwrap();
    assert_eq!(c.upstreams.max_idle_per_endpoint, 0, "0 keeps none");
    let env =
        |k: &str| (k == "FLEETGATE_UPSTREAMS_MAX_IDLE_PER_ENDPOINT").then(|| "500".to_string());
    let c = Config::load_with(None, &env).unwrap();
    assert_eq!(c.upstreams.max_idle_per_endpoint, 500);
    let e = parse("[upstreams]\nmax_idle_per_endpoint = -1\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:2", "upstreams.max_idle_per_endpoint")
    );
    assert!(e.to_string().contains("from 0 to 100000"), "{e}");
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse("role = \"serve\"\n[timeouts]\nconect = 5\n").unwrap_err();
    assert_eq!(e.origin, "f.toml:3");
    assert_eq!(e.key, "timeouts.conect");
    assert!(e.message.contains("unknown key"), "{e}");
}

#[test]
fn bad_value_names_line_key_and_expectation() {
    let e = parse("\n\nlisten = \"nope\"\n").unwrap_err();
    assert_eq!(e.origin, "f.toml:3");
    assert_eq!(e.key, "listen");
    assert!(e.to_string().contains("expected a socket address"), "{e}");
    let e = parse("[limits]\nmax_hops = -1\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:2", "limits.max_hops")
    );
    let e = parse("role = \"edge\"").unwrap_err();
    assert!(e.to_string().contains("serve, ide, worker, all"));
}

#[test]
fn environment_wins_and_is_named() {
    let env = |k: &str| match k {
        "FLEETGATE_ROLE" => Some("ide".to_string()),
        "FLEETGATE_FLEET_UPSTREAMS" => Some("http://127.0.0.1:1, http://127.0.0.1:2".into()),
        _ => None,
    };
    let c = Config::from_toml("f.toml", "role = \"serve\"", &env).unwrap();
    assert_eq!(c.role, Role::Ide);
    assert_eq!(c.upstreams.fleet.len(), 2);
    let env = |k: &str| (k == "FLEETGATE_LISTEN").then(|| "x".to_string());
    let e = Config::from_toml("f.toml", "", &env).unwrap_err();
    assert_eq!(e.origin, "environment variable FLEETGATE_LISTEN");
}

#[test]
fn upstream_urls() {
    assert_eq!(
        UpstreamUrl::parse("http://[::1]:8080/").unwrap(),
        UpstreamUrl::http("::1", 8080)
    );
    assert!(UpstreamUrl::parse("ftp://x:1").is_err());
    assert!(UpstreamUrl::parse("http://x:1/path").is_err());
    assert!(parse("[upstreams]\nfleet = [\"http://a:1\", \"http://b:1\"]").is_err());
}

#[test]
fn https_upstream_urls() {
    let u = UpstreamUrl::parse("https://app.internal").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.tls),
        ("app.internal", 443, true)
    );
    assert_eq!(u.to_string(), "https://app.internal:443");
    let u = UpstreamUrl::parse("https://[::1]:8443/").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 8443, true));
    assert_eq!(UpstreamUrl::parse("http://a").unwrap().port, 80);
    let e = UpstreamUrl::parse("https://bad_name!:443").unwrap_err();
    assert!(e.contains("DNS name"), "{e}");

    let e = parse("[upstreams]\nfleet = [\"http://10.0.0.1:1\", \"https://10.0.0.2:1\"]\n")
        .unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:2", "upstreams.fleet")
    );
    assert!(e.message.contains("same scheme"), "{e}");
    let c = parse("[upstreams]\nfleet = [\"https://10.0.0.1:1\", \"https://10.0.0.2:1\"]\nide = \"https://ide.internal\"\n").unwrap();
    assert!(c.upstreams.fleet.iter().all(|u| u.tls));
    assert!(c.upstreams.ide.unwrap().tls);
}

#[test]
fn upstream_tls_files_resolve_like_tls_cert_and_need_both_client_files() {
    let text = "[upstreams]\nca_file = \"ca.pem\"\nclient_cert = \"tls/client.pem\"\nclient_key = \"/abs/client.key\"\n";
    let c = Config::from_toml("/etc/fg/fleetgate.toml", text, &|_| None).unwrap();
    assert_eq!(
        c.upstreams.ca_file.as_deref(),
        Some(Path::new("/etc/fg/ca.pem"))
    );
    let client = c.upstreams.client_auth.clone().unwrap();
    assert_eq!(client.cert, Path::new("/etc/fg/tls/client.pem"));
    assert_eq!(client.key, Path::new("/abs/client.key"));
    assert_eq!(
        c.key_origin("upstreams.ca_file"),
        "/etc/fg/fleetgate.toml:2"
    );
    assert_eq!(c.key_origin("upstreams.fleet"), c.origin(), "not set");
    let printed = c.to_toml();
    assert_eq!(
        Config::from_toml("/x/f.toml", &printed, &|_| None).unwrap(),
        c,
        "{printed}"
    );

    let env = |k: &str| (k == "FLEETGATE_UPSTREAMS_CA_FILE").then(|| "env-ca.pem".to_string());
    let c = Config::from_toml("/etc/fg/fleetgate.toml", text, &env).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.upstreams.ca_file, Some(cwd.join("env-ca.pem")));
    assert_eq!(
        c.key_origin("upstreams.ca_file"),
        "environment variable FLEETGATE_UPSTREAMS_CA_FILE"
    );

    let e = parse("[upstreams]\nfleet = \"https://10.0.0.1\"\n\nclient_cert = \"c.pem\"\n")
        .unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:4", "upstreams.client_key")
    );
    assert!(
        e.message.contains("only upstreams.client_cert is set"),
        "{e}"
    );
}

#[test]
fn tls_needs_both_files() {
    let e = parse("[tls]\ncert = \"c.pem\"\n").unwrap_err();
    assert_eq!(e.key, "tls.key");
}

#[test]
fn dotted_keys_and_inline_tables() {
    let c = parse(
        "upstreams.fleet = [\"http://127.0.0.1:1\"]\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
    )
    .unwrap();
    assert_eq!(c.upstreams.fleet[0].port, 1);
    assert!(c.tls.is_some());
    let c = parse("tls.cert = \"c.pem\"\ntls.key = \"k.pem\"\n").unwrap();
    assert!(c.tls.is_some());
    let e = parse("upstreams.flet = 1\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:1", "upstreams.flet")
    );
    assert!(e.message.contains("expected one of `fleet`, `ide`"), "{e}");
}

#[test]
fn unknown_tables_and_tables_of_the_wrong_shape() {
    let e = parse("role = \"serve\"\n\n[foo]\nx = 1\n").unwrap_err();
    assert_eq!((e.origin.as_str(), e.key.as_str()), ("f.toml:3", "foo"));
    assert!(e.message.starts_with("unknown key `foo`"), "{e}");
    assert!(
        e.message.contains("`timeouts`"),
        "names the tables too: {e}"
    );
    let e = parse("upstreams = 5\n").unwrap_err();
    assert_eq!(e.key, "upstreams");
    assert!(e.message.contains("expected a table of `fleet`"), "{e}");
    let e = parse("timeouts = 1979-05-27\n").unwrap_err();
    assert_eq!(e.key, "timeouts");
    assert!(e.message.contains("got a date-time"), "{e}");
    let e = parse("[limits]\nmax_hops = 2\n[upstreams.x]\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:3", "upstreams.x")
    );
}

#[test]
fn the_key_table_is_consistent() {
    let mut seen_tables: Vec<&str> = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        assert!(
            key.name.matches('.').count() <= 1,
            "{}: one level of tables",
            key.name
        );
        assert!(
            KEYS[..i].iter().all(|k| k.name != key.name),
            "{} declared twice",
            key.name
        );
        assert!(
            key.env.contains(&env::canonical(key.name).as_str()),
            "{}: {:?} lacks the variable of the naming rule",
            key.name,
            key.env
        );
        if seen_tables.last() != Some(&key.table()) {
            assert!(
                !seen_tables.contains(&key.table()),
                "the keys of [{}] are not together",
                key.table()
            );
            seen_tables.push(key.table());
        }
    }
    assert_eq!(seen_tables[0], "", "top-level keys come first");
}

#[test]
fn to_toml_reads_back_to_the_same_configuration() {
    let text = r#"
node_id = "serve-1"
role = "worker"
listen = "127.0.0.1:8081"
admin_listen = "[::1]:9902"
routes = "/etc/fleetgate/routes"
log_format = "json"
log_level = "debug"
access_log = false
response_stamps = false
allow_encoded_slash = true
[upstreams]
fleet = ["http://10.0.0.1:3000", "http://[fd00::1]:3000"]
ide = "http://ide.internal:3000"
dns_refresh = 250
max_idle_per_endpoint = 3
[timeouts]
connect = 1
first_byte = 2
idle = 3
header_read = 4
shutdown = 0
drain_delay = 6
[limits]
max_header_bytes = 8192
max_connections = 7
max_hops = 8
[tls]
cert = "/tls/a \"quoted\" cert.pem"
key = "/tls/key.pem"
[reload]
watch = true
watch_interval = 250
[admin]
token_file = "/run/secrets/fleetgate-admin"
"#;
    let c = parse(text).unwrap();
    let printed = c.to_toml();
    assert_eq!(parse(&printed).unwrap(), c, "{printed}");

    let defaults = parse("").unwrap();
    let printed = defaults.to_toml();
    assert_eq!(parse(&printed).unwrap(), defaults, "{printed}");
    for key in KEYS {
        assert!(
            printed.contains(&format!("{} = ", key.leaf()))
                || printed.contains(&format!("# {} is not set", key.leaf())),
            "{} is printed: {printed}",
            key.name
        );
    }
    assert!(printed.contains("\n[upstreams]\nfleet = [\"http://127.0.0.1:3000\"]\n"));
    assert!(printed.contains("# ide is not set"), "{printed}");
    assert!(
        printed.contains("\n[admin]\n# token_file is not set\n"),
        "{printed}"
    );
}

#[test]
fn relative_paths_in_the_file_resolve_against_its_directory() {
    let text = "routes = \"r\"\n[tls]\ncert = \"tls/c.pem\"\nkey = \"/abs/k.pem\"\n";
    let c = Config::from_toml("/etc/fg/fleetgate.toml", text, &|_| None).unwrap();
    assert_eq!(c.routes, Path::new("/etc/fg/r"));
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/etc/fg/tls/c.pem"));
    assert_eq!(tls.key, Path::new("/abs/k.pem"), "absolute paths stay");

    let cwd = std::env::current_dir().unwrap();
    let c = Config::from_toml("conf/fleetgate.toml", "routes = \"./r\"", &|_| None).unwrap();
    assert_eq!(c.routes, cwd.join("conf/r"), "a relative file name");
}

#[test]
fn relative_paths_from_the_environment_and_defaults_resolve_against_the_working_directory() {
    let cwd = std::env::current_dir().unwrap();
    let c = parse("").unwrap();
    assert_eq!(c.routes, cwd.join("routes"), "the default");
    let env = |k: &str| match k {
        "FLEETGATE_ROUTES" => Some("env/routes".to_string()),
        "FLEETGATE_TLS_CERT" => Some("c.pem".to_string()),
        _ => None,
    };
    let text = "routes = \"r\"\n[tls]\nkey = \"k.pem\"\n";
    let c = Config::from_toml("/etc/fg/fleetgate.toml", text, &env).unwrap();
    assert_eq!(c.routes, cwd.join("env/routes"));
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, cwd.join("c.pem"), "from the environment");
    assert_eq!(tls.key, Path::new("/etc/fg/k.pem"), "from the file");
}

#[test]
fn reload_and_admin_keys() {
    let c = parse("").unwrap();
    assert_eq!(
        c.reload,
        Reload {
            watch: false,
            watch_interval: Duration::from_millis(1000)
        }
    );
    assert_eq!(c.admin.token_file, None);

    let c = Config::from_toml(
        "/etc/fg/f.toml",
        "[reload]\nwatch = true\nwatch_interval = 100\n[admin]\ntoken_file = \"token\"\n",
        &|_| None,
    )
    .unwrap();
    assert!(c.reload.watch);
    assert_eq!(c.reload.watch_interval, Duration::from_millis(100));
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/etc/fg/token"))
    );

    let env = |k: &str| match k {
        "FLEETGATE_RELOAD_WATCH" => Some("on".to_string()),
        "FLEETGATE_RELOAD_WATCH_INTERVAL" => Some("2500".to_string()),
        "FLEETGATE_ADMIN_TOKEN_FILE" => Some("/run/secrets/admin".to_string()),
        _ => None,
    };
    let c = Config::from_toml("f.toml", "[reload]\nwatch = false\n", &env).unwrap();
    assert!(c.reload.watch);
    assert_eq!(c.reload.watch_interval, Duration::from_millis(2500));
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/run/secrets/admin"))
    );

    let e = parse("[reload]\nwatch = true\nwatch_interval = 50\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:3", "reload.watch_interval")
    );
    assert!(e.message.contains("from 100 to"), "{e}");
    assert!(e.message.contains("(milliseconds), got 50"), "{e}");
    let e = parse("[reload]\nwatch = \"sometimes\"\n").unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("f.toml:2", "reload.watch")
    );
    let e = parse("[admin]\ntoken_file = \"\"\n").unwrap_err();
    assert_eq!(e.key, "admin.token_file");
    assert!(e.message.contains("got an empty string"), "{e}");
    let e = parse("[admin]\ntoken = \"x\"\n").unwrap_err();
    assert_eq!(e.key, "admin.token");
    assert!(e.message.contains("expected one of `token_file`"), "{e}");
    let env = |k: &str| (k == "FLEETGATE_RELOAD_WATCH_INTERVAL").then(|| "99".to_string());
    let e = Config::from_toml("f.toml", "", &env).unwrap_err();
    assert_eq!(
        e.origin,
        "environment variable FLEETGATE_RELOAD_WATCH_INTERVAL"
    );
}

/// A file in a fresh temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fleetgate-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[test]
fn admin_token_is_read_trimmed_and_never_shown() {
    const SECRET: &str = "s3cret-admin-token";
    let file = TempFile::new("token", &format!("  {SECRET}\n\n"));
    let config_file = file.0.with_file_name("fleetgate.toml");
    let text = "[admin]\ntoken_file = \"token\"\n";
    let c = Config::from_toml(config_file.to_str().unwrap(), text, &|_| None).unwrap();
    assert_eq!(c.admin.token_file.as_deref(), Some(file.0.as_path()));
    assert_eq!(read_admin_token(&c).unwrap().as_deref(), Some(SECRET));
    assert!(!format!("{c:?}").contains(SECRET));
    assert!(!c.to_toml().contains(SECRET));
    assert!(c.to_toml().contains(&file.0.display().to_string()));

    assert_eq!(read_admin_token(&parse("").unwrap()).unwrap(), None);
}

#[test]
fn an_unreadable_or_empty_admin_token_file_is_an_error_naming_it() {
    let empty = TempFile::new("token", " \n\t\n");
    let mut c = parse("").unwrap();
    c.admin.token_file = Some(empty.0.clone());
    let e = read_admin_token(&c).unwrap_err();
    assert_eq!(e.key, "admin.token_file");
    assert!(e.message.contains(&empty.0.display().to_string()), "{e}");
    assert!(e.message.contains("empty"), "{e}");

    let missing = empty.0.with_file_name("missing");
    c.admin.token_file = Some(missing.clone());
    let e = read_admin_token(&c).unwrap_err();
    assert_eq!(e.key, "admin.token_file");
    assert!(e.message.contains(&missing.display().to_string()), "{e}");
    assert!(e
        .to_string()
        .starts_with("(defaults): error: key `admin.token_file`"));
}

#[test]
fn restart_only_changes_name_the_keys_a_reload_cannot_apply() {
    let running = parse("").unwrap();
    assert!(running.restart_only_changes(&running.clone()).is_empty());

    let restart_only = [
        ("listen", "listen = \"127.0.0.1:1\""),
        ("admin_listen", "admin_listen = \"127.0.0.1:2\""),
        ("role", "role = \"worker\""),
        ("node_id", "node_id = \"not-this-host\""),
        ("tls", "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\""),
        ("limits.max_connections", "[limits]\nmax_connections = 5"),
        ("log_format", "log_format = \"json\""),
        ("log_level", "log_level = \"debug\""),
        ("reload.watch", "[reload]\nwatch = true"),
    ];
    for (key, text) in restart_only {
        let new = parse(text).unwrap();
        assert_eq!(running.restart_only_changes(&new), vec![key], "{text}");
        assert_eq!(
            new.restart_only_changes(&running),
            vec![key],
            "{text} (back)"
        );
    }

    let reloadable = [
        "routes = \"elsewhere\"",
        "access_log = false",
        "response_stamps = false",
        "allow_encoded_slash = true",
        "[upstreams]\nfleet = [\"http://10.0.0.9:80\"]\nide = \"http://10.0.0.8:80\"\ndns_refresh = 100",
        "[upstreams]\nfleet = [\"https://10.0.0.9\"]\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"",
        "[timeouts]\nconnect = 1\nfirst_byte = 1\nidle = 1\nheader_read = 1\nshutdown = 1\ndrain_delay = 1",
        "[limits]\nmax_header_bytes = 8192\nmax_hops = 9",
        "[reload]\nwatch_interval = 100",
        "[admin]\ntoken_file = \"t\"",
    ];
    for text in reloadable {
        let new = parse(text).unwrap();
        assert_ne!(new, running, "{text}");
        assert!(running.restart_only_changes(&new).is_empty(), "{text}");
    }

    let tls = parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
    let other = parse("[tls]\ncert = \"c2.pem\"\nkey = \"k2.pem\"\n").unwrap();
    assert!(
        tls.restart_only_changes(&other).is_empty(),
        "new TLS files reload"
    );

    let everything = parse(
        "node_id = \"not-this-host\"\nrole = \"all\"\nlisten = \"127.0.0.1:1\"\nlog_level = \"off\"\n[limits]\nmax_connections = 1\n",
    )
    .unwrap();
    assert_eq!(
        running.restart_only_changes(&everything),
        vec![
            "listen",
            "role",
            "node_id",
            "limits.max_connections",
            "log_level"
        ]
    );
}

#[test]
fn the_documentation_lists_every_key_its_variables_and_the_restart_only_keys() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    for key in KEYS {
        assert!(
            doc.contains(&format!("| `{}` |", key.name)),
            "{} has a row in the key table",
            key.name
        );
        for var in key.env {
            assert!(doc.contains(&format!("`{var}`")), "{var} is documented");
        }
    }
    let everything_changed = Config {
        node_id: "other".into(),
        role: Role::All,
        listen: "127.0.0.1:1".parse().unwrap(),
        admin_listen: "127.0.0.1:2".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        }),
        limits: Limits {
            max_connections: 1,
            ..Config::default().limits
        },
        log_format: LogFormat::Json,
        log_level: "off".into(),
        reload: Reload {
            watch: true,
            ..Config::default().reload
        },
        ..Config::default()
    };
    let restart_only = Config::default().restart_only_changes(&everything_changed);
    assert_eq!(restart_only.len(), 9);
    for key in restart_only {
        assert!(
            doc.lines()
                .any(|l| l.starts_with(&format!("| `{key}` ")) && l.ends_with("| restart |")),
            "{key} is in the restart table"
        );
    }
}

#[test]
fn admission_keys_from_file_and_environment() {
    let text = r#"
[admission]
max_inflight = 32
ide_max_inflight = 0
tenant_header = "X-Tenant-Id"
queue_per_tenant = 8
queue_timeout = 100
retry_after_min = 2
retry_after_max = 9

[admission.weights]
"big-customer" = 4
small = 1
"#;
    let c = parse(text).unwrap();
    let a = &c.admission;
    assert_eq!((a.max_inflight, a.ide_max_inflight), (32, 0));
    assert_eq!(a.tenant_header.as_deref(), Some("x-tenant-id"));
    assert_eq!(a.queue_per_tenant, 8);
    assert_eq!(a.queue_timeout, Duration::from_millis(100));
    assert_eq!((a.retry_after_min, a.retry_after_max), (2, 9));
    assert_eq!(
        a.weights,
        vec![("big-customer".to_string(), 4), ("small".to_string(), 1)]
    );
    // The printed configuration reads back to the same thing, weights included.
    let back = Config::from_toml("p.toml", &c.to_toml(), &|_| None).unwrap();
    assert_eq!(back.admission, c.admission);

    let env = |k: &str| match k {
        "FLEETGATE_ADMISSION_MAX_INFLIGHT" => Some("7".to_string()),
        "FLEETGATE_ADMISSION_WEIGHTS" => Some("a=2, b=3".to_string()),
        _ => None,
    };
    let c = Config::from_toml("f.toml", text, &env).unwrap();
    assert_eq!(c.admission.max_inflight, 7);
    assert_eq!(
        c.admission.weights,
        vec![("a".to_string(), 2), ("b".to_string(), 3)]
    );
}

#[test]
fn admission_values_are_validated() {
    let e = parse("[admission]\nretry_after_min = 10\nretry_after_max = 5\n").unwrap_err();
    assert_eq!(e.key, "admission.retry_after_max", "{e}");
    let e = parse("[admission]\ntenant_header = \"x tenant\"\n").unwrap_err();
    assert_eq!(e.key, "admission.tenant_header", "{e}");
    assert!(e.origin.ends_with("f.toml:2"), "{e}");
    let e = parse("[admission.weights]\nbig = 0\n").unwrap_err();
    assert!(e.to_string().contains("1 to 1000"), "{e}");
    let e = parse("[admission]\nweights = 3\n").unwrap_err();
    assert_eq!(e.key, "admission.weights", "{e}");
    let e = parse("[admission]\nmax_inflght = 3\n").unwrap_err();
    assert!(e.to_string().contains("unknown key `max_inflght`"), "{e}");
}

#[test]
fn readiness_on_skew_fail_needs_trusted_peers() {
    let e = parse("readiness_on_skew = \"fail\"\n").unwrap_err();
    assert_eq!(e.key, "readiness_on_skew", "{e}");
    assert!(e.message.contains("trusted_peers"), "{e}");
    let c = parse(
        "readiness_on_skew = \"fail\"\ntrusted_peers = [\"10.1.0.0/16\", \"192.0.2.7\"]\ngeneration = \"g-7\"\n",
    )
    .unwrap();
    assert_eq!(c.readiness_on_skew, SkewPolicy::Fail);
    assert_eq!(c.trusted_peers.len(), 2);
    assert!(c.trusted_peers[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!(c.generation, "g-7");
    let back = Config::from_toml("p.toml", &c.to_toml(), &|_| None).unwrap();
    assert_eq!(back.trusted_peers, c.trusted_peers);
    let e = parse("trusted_peers = [\"10.1.0.0/33\"]\n").unwrap_err();
    assert_eq!(e.key, "trusted_peers", "{e}");
    let e = parse("generation = \"a b\"\n").unwrap_err();
    assert_eq!(e.key, "generation", "{e}");
}
