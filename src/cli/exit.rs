//! The process exit codes of every subcommand (after sysexits.h where one fits).

/// Success.
pub const OK: i32 = 0;
/// The command ran and found problems (route drift, a manifest with errors).
pub const FINDINGS: i32 = 1;
/// Any other failure (e.g. `serve` cannot bind its address; the runtime cannot start).
pub const FAILED: i32 = 1;
/// The command line itself is wrong (clap exits with it too).
pub const USAGE: i32 = 2;
/// A file could not be written (`EX_IOERR`).
pub const IO_ERROR: i32 = 74;
/// The configuration, a file it names or the manifest is invalid (`EX_CONFIG`).
pub const CONFIG: i32 = 78;
