//! Memory given back to the kernel after a wave of connections goes idle.
//!
//! A parked connection frees hyper's buffers (see `crate::server`), but glibc's allocator
//! keeps freed memory in its arenas, resident, unless it lies at the very top of a heap:
//! after a burst of connections has gone idle, the process would stay at the burst's
//! size. So when enough connections have been parked since the last look (once a second),
//! `malloc_trim(0)` hands the whole free pages inside every arena back to the kernel. It
//! walks every arena, so it runs on a blocking thread, never on a worker.
//!
//! With the feature `jemalloc` (the default), the binary's allocator is jemalloc, which
//! returns freed pages by itself (its background thread, `src/main.rs`): then nothing
//! here runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Connections parked since the last trim (all servers of the process).
static PARKED_SINCE_TRIM: AtomicUsize = AtomicUsize::new(0);

/// Parked connections that make a trim worth it: each frees about 16 KiB (hyper's two
/// buffers), so this is about 4 MiB.
const TRIM_AFTER_PARKED: usize = 256;

/// How often the trimmer looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A connection was parked (its buffers freed).
pub fn parked() {
    PARKED_SINCE_TRIM.fetch_add(1, Ordering::Relaxed);
}

/// Trim the allocator's arenas whenever enough connections were parked since the last
/// look; until `stop`.
pub async fn give_back_freed(mut stop: watch::Receiver<bool>) {
    if cfg!(feature = "jemalloc") {
        return;
    }
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if PARKED_SINCE_TRIM.load(Ordering::Relaxed) < TRIM_AFTER_PARKED {
            continue;
        }
        PARKED_SINCE_TRIM.store(0, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Return the free pages of every arena to the kernel (glibc); elsewhere nothing.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc locks each
    // arena while it walks it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc"))))]
fn trim() {}
