//! The `fleetgate` command line: argument parsing only. Each subcommand is a function of
//! the library that returns the process exit code (usage errors exit 2, from clap). And
//! the process's allocator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

/// jemalloc (feature `jemalloc`, on by default): it keeps small objects of one size
/// together, apart from the buffers a parked connection frees, and returns freed pages to
/// the kernel on a clock of its own. See docs/performance.md for what it buys.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once when it starts (`_RJEM_MALLOC_CONF` in the environment
/// overrides any of them):
/// - `narenas:1`: one arena for all threads (each thread still has its own cache); more
///   arenas cost idle memory and bought nothing measurable on two workers.
/// - `background_thread:true`: a thread of jemalloc's own returns freed pages, so memory
///   comes back when the process goes idle, not at its next allocation.
/// - `dirty_decay_ms:500,muzzy_decay_ms:0`: freed pages go back to the kernel within about
///   half a second, in one step.
///
/// The value is a NUL-terminated string; jemalloc reads the symbol as a `const char *`,
/// which is what a `&u8` to its first byte is.
// SAFETY: the one definition of this name in the process (jemalloc's own is weak), of the
// type jemalloc declares for it, and never written.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static _rjem_malloc_conf: &u8 =
    &b"narenas:1,background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:0\0"[0];

use fleetgate::cli::canary::{self, CanaryArgs, CanaryFormat};
use fleetgate::cli::routes::{self, ClassifyArgs, ClassifyInput, DriftArgs, DriftFormat};
use fleetgate::cli::routes_diff::{self, DiffArgs, DiffFormat};

#[derive(Parser)]
#[command(
    name = "fleetgate",
    version,
    about = "Reverse-proxy sidecar and self-routing gateway: routes each request to the ide or the fleet by a compiled route manifest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (and its admin listener) until SIGTERM.
    Serve {
        /// The configuration file (TOML); FLEETGATE_* variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and the manifest it names, then exit (78 when invalid).
    Check {
        /// The configuration file (TOML); FLEETGATE_* variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the effective configuration (environment applied, paths resolved) as TOML.
        #[arg(long)]
        print: bool,
    },
    /// Start two sample upstreams and the proxy on loopback, and show where requests go.
    Demo,
    /// Check, query and compare the route manifest.
    #[command(subcommand)]
    Routes(Routes),
    /// Probe a running deployment: one GET/HEAD per application route, checking that each
    /// was routed (ide or fleet) as the local manifest says. Never sends a mutating request.
    ///
    /// Exit 0 when every probed route matched, 1 on a mismatch, an error or a route without
    /// routing stamps (unless --allow-unknown), 78 when the manifest or the app routes are
    /// invalid.
    Canary {
        /// The fleetgate to probe: http://host:port (plain http).
        #[arg(long, value_name = "URL")]
        target: String,
        /// The manifest directory the expected classes come from.
        #[arg(long, value_name = "DIR", default_value = "routes")]
        routes: PathBuf,
        /// The application's routes: `METHOD /path` lines, or an OpenAPI 3 document (JSON or YAML).
        #[arg(long, value_name = "FILE")]
        app_routes: PathBuf,
        #[arg(long, value_enum, default_value_t = CanaryFormat::Text)]
        format: CanaryFormat,
        /// What every {param} and {*rest} of a route is filled with.
        #[arg(long, value_name = "STR", default_value = canary::DEFAULT_PLACEHOLDER, value_parser = parse_placeholder)]
        placeholder: String,
        /// Requests in flight at most.
        #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
        /// Requests started per second at most.
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Per-request timeout (connect and response head), in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// A request header sent with every probe, e.g. auth (repeatable).
        #[arg(short = 'H', long = "header", value_name = "'Name: value'", value_parser = routes::parse_header_arg)]
        headers: Vec<(String, String)>,
        /// Routes answered without routing stamps do not fail the run.
        #[arg(long)]
        allow_unknown: bool,
    },
}

fn parse_placeholder(s: &str) -> Result<String, String> {
    canary::check_placeholder(s).map(|()| s.to_string())
}

#[derive(Subcommand)]
enum Routes {
    /// Load and check a manifest directory; print problems compiler-style (stdout).
    ///
    /// Exit 0 when it loads (warnings included), 1 on errors.
    Check {
        /// The manifest directory.
        #[arg(value_name = "DIR", default_value = "routes")]
        dir: PathBuf,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Classify one request (METHOD TARGET) or a batch of them.
    ///
    /// TARGET is a path with an optional ?query; the path is normalized first. Exit 1 when
    /// the method or target is rejected, 78 when the manifest does not load.
    Classify {
        /// The manifest directory.
        #[arg(long, value_name = "DIR", default_value = "routes")]
        routes: PathBuf,
        /// Print one JSON object instead of the human line.
        #[arg(long)]
        json: bool,
        /// A request header, for `when` conditions (repeatable).
        #[arg(short = 'H', long = "header", value_name = "'Name: value'", value_parser = routes::parse_header_arg)]
        headers: Vec<(String, String)>,
        /// Read `METHOD TARGET` lines from FILE (`-`: stdin); print one JSON object per line.
        #[arg(long, value_name = "FILE|-", conflicts_with_all = ["method", "target"])]
        batch: Option<PathBuf>,
        /// The request method, as sent (methods are case-sensitive).
        #[arg(required_unless_present = "batch")]
        method: Option<String>,
        /// The request target: a path with an optional ?query.
        #[arg(required_unless_present = "batch")]
        target: Option<String>,
    },
    /// Compare the manifest with the application's real routes (and a reviewed lock).
    ///
    /// Exit 0 without findings, 1 with findings, 78 when the manifest, the app routes or
    /// the lock cannot be read, 74 when --update cannot write the lock.
    Drift {
        /// The manifest directory.
        #[arg(long, value_name = "DIR", default_value = "routes")]
        routes: PathBuf,
        /// The application's routes: `METHOD /path` lines, an OpenAPI 3 document (JSON or
        /// YAML), or the JSON of the admin listener's `GET /routes/unlisted`. Repeatable: the
        /// routes of every file are checked together.
        #[arg(long, value_name = "FILE", required = true)]
        app_routes: Vec<PathBuf>,
        /// The lock file [default: DIR/app-routes.lock, used when it exists].
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Write the lock file with every route's current class.
        #[arg(long)]
        update: bool,
        #[arg(long, value_enum, default_value_t = DriftFormat::Text)]
        format: DriftFormat,
    },
    /// Show how the application's routes move between two manifests (a pull request's
    /// base and head): routes that change class, then routes that change rule.
    ///
    /// Exit 0 when no route moves from ide-only to fleet-ok, 1 when one does, 78 when a
    /// manifest or the app routes cannot be read.
    Diff {
        /// The application's routes, as for `routes drift --app-routes` (repeatable).
        #[arg(long, value_name = "FILE", required = true)]
        app_routes: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
        /// The manifest directory before the change (e.g. the base branch's).
        #[arg(value_name = "OLD_DIR")]
        old: PathBuf,
        /// The manifest directory after the change.
        #[arg(value_name = "NEW_DIR")]
        new: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Serve { config } => fleetgate::cli::serve::serve(config.as_deref()),
        Command::Check { config, print } => fleetgate::cli::check::check(config.as_deref(), *print),
        Command::Demo => fleetgate::cli::demo::demo(),
        Command::Routes(Routes::Check { dir, deny_warnings }) => routes::check(dir, *deny_warnings),
        Command::Routes(Routes::Classify {
            routes,
            json,
            headers,
            batch,
            method,
            target,
        }) => {
            let input = match (batch, method, target) {
                (Some(file), _, _) => ClassifyInput::Batch(file),
                (None, Some(method), Some(target)) => ClassifyInput::One { method, target },
                // clap requires METHOD and TARGET without --batch.
                _ => unreachable!("clap enforces METHOD TARGET or --batch"),
            };
            routes::classify(ClassifyArgs {
                routes,
                json: *json,
                headers,
                input,
            })
        }
        Command::Routes(Routes::Drift {
            routes,
            app_routes,
            lock,
            update,
            format,
        }) => routes::drift(DriftArgs {
            routes,
            app_routes,
            lock: lock.as_deref(),
            update: *update,
            format: *format,
        }),
        Command::Routes(Routes::Diff {
            app_routes,
            format,
            old,
            new,
        }) => routes_diff::diff(DiffArgs {
            old,
            new,
            app_routes,
            format: *format,
        }),
        Command::Canary {
            target,
            routes,
            app_routes,
            format,
            placeholder,
            concurrency,
            rate,
            timeout,
            headers,
            allow_unknown,
        } => canary::canary(CanaryArgs {
            target: target.clone(),
            routes: routes.clone(),
            app_routes: app_routes.clone(),
            format: *format,
            placeholder: placeholder.clone(),
            concurrency: usize::from(*concurrency),
            rate: *rate,
            timeout: Duration::from_millis(*timeout),
            headers: headers.clone(),
            allow_unknown: *allow_unknown,
        }),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
