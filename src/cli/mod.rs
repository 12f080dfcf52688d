//! The command-line subcommands, one file each; exit codes defined once.
pub mod demo;
pub mod exit;
pub mod run;
pub mod serve;
