//! The `fleetgate` command line: argument parsing only. Each subcommand is a function of
//! the library that returns the process exit code (usage errors exit 2, from clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetgate::cli::routes::{self, ClassifyArgs, ClassifyInput, DriftArgs, DriftFormat};

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
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
