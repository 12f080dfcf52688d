//! What `serve` and `demo` share: logging, the multi-threaded runtime, and waiting for
//! SIGTERM or SIGINT (Ctrl-C) before a graceful shutdown.

use std::future::Future;

use crate::config::LogFormat;

/// Start logging and the runtime, then run `main` on it; returns its exit code.
pub fn on_runtime<F>(format: LogFormat, level: &str, main: F) -> i32
where
    F: Future<Output = i32>,
{
    crate::logging::init(format, level);
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
