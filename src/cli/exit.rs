//! Process exit codes (sysexits.h where one fits).
/// Success.
pub const OK: i32 = 0;
/// The command ran and found problems (drift, manifest errors).
pub const FINDINGS: i32 = 1;
/// Bad command-line usage (clap).
pub const USAGE: i32 = 2;
/// A file could not be written (`EX_IOERR`).
pub const IO_ERROR: i32 = 74;
/// Invalid configuration or manifest (`EX_CONFIG`).
pub const CONFIG: i32 = 78;
