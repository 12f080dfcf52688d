//! `fleetgate demo`: start [`crate::demo`] (two sample upstreams and the proxy on
//! loopback) and print what to try, until Ctrl-C.

use super::exit;
use super::run::{on_runtime, termination_signal};
use crate::config::{Config, LogFormat};
use crate::demo::{routes_dir, start};

/// Returns the process exit code.
pub fn demo() -> i32 {
    on_runtime(LogFormat::Human, "info", Config::default().runtime, async {
        let routes = routes_dir();
        let demo = match start(&routes).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{e}");
                return exit::CONFIG;
            }
        };
        let base = format!("http://{}", demo.server.addr);
        let admin = format!("http://{}", demo.server.admin_addr);
        println!("fleetgate demo (role serve, manifest {})", routes.display());
        println!("  proxy      {base}");
        println!("  admin      {admin}");
        println!("  fleet app  http://{}", demo.fleet);
        println!("  ide app    http://{}", demo.ide);
        println!();
        println!(
            "Each sample app answers JSON naming itself (\"server\") and echoing what it received;"
        );
        println!(
            "the proxy stamps x-fleetgate-target and x-fleetgate-served-by on every response."
        );
        for ex in &demo.examples {
            println!();
            println!("# {}", ex.title);
            println!("{}", ex.curl(&base));
        }
        println!();
        println!("# admin endpoints");
        for p in ["/healthz", "/readyz", "/metrics", "/routes", "/version"] {
            println!("curl -s '{admin}{p}'");
        }
        println!();
        println!(
            "# change a route without a restart: edit or add a file in {}, then",
            routes.display()
        );
        println!("curl -s -X POST '{admin}/reload'");
        println!();
        println!("Ctrl-C stops the demo.");
        termination_signal().await;
        demo.server.shutdown().await;
        exit::OK
    })
}
