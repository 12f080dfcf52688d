//! What `serve` and `demo` share: logging, the main runtime, and waiting for SIGTERM or
//! SIGINT (Ctrl-C) before a graceful shutdown.
//!
//! The main runtime runs the admin listener, reloads, upstream probes and DNS refresh.
//! With `runtime.mode = "per-core"` the data listener has worker threads of its own (see
//! [`crate::server`]), so the main runtime is a single thread; with `"shared"` it is the
//! multi-threaded runtime that serves everything, with `runtime.workers` threads (0: one
//! per CPU, or `TOKIO_WORKER_THREADS`).

use std::future::Future;

use crate::config::{LogFormat, RuntimeMode, RuntimeSettings};

/// Start logging and the runtime, then run `main` on it; returns its exit code.
pub fn on_runtime<F>(format: LogFormat, level: &str, runtime: RuntimeSettings, main: F) -> i32
where
    F: Future<Output = i32>,
{
    crate::logging::init(format, level);
    let built = match runtime.mode {
        RuntimeMode::PerCore => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        RuntimeMode::Shared => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if runtime.workers > 0 {
                builder.worker_threads(runtime.workers);
            }
            builder.enable_all().build()
        }
    };
    let code = match built {
        Ok(rt) => rt.block_on(main),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            super::exit::FAILED
        }
    };
    crate::logging::flush();
    code
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
