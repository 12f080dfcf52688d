//! The command-line subcommands, one file each; exit codes defined once.
pub mod exit;
