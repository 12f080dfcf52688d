//! `fleetgate serve [--config FILE]`: load the configuration, start the server, serve
//! until SIGTERM or SIGINT, then shut down gracefully (exit 0). Configuration or manifest
//! errors exit 78 before anything listens.

use std::path::Path;

use super::exit;
use super::run::{on_runtime, termination_signal};
use crate::config::Config;
use crate::server::StartError;

/// Returns the process exit code.
pub fn serve(config: Option<&Path>) -> i32 {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let (format, level) = (config.log_format, config.log_level.clone());
    on_runtime(format, &level, config.runtime, async move {
        let role = config.role;
        let node = config.node_id.clone();
        let server = match crate::server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return match e {
                    StartError::Config(_) => exit::CONFIG,
                    StartError::Io(_) => exit::FAILED,
                };
            }
        };
        tracing::info!(
            listen = %server.addr,
            admin = %server.admin_addr,
            role = role.as_str(),
            node_id = %node,
            manifest = server.snapshot().manifest.digest(),
            "fleetgate serving"
        );
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            termination_signal().await;
            handle.trigger();
        });
        server.wait().await;
        exit::OK
    })
}
