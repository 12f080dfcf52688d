//! The command-line subcommands, one file each, as library functions that return the
//! process exit code; the exit codes are defined once, in [`exit`].

pub mod canary;
pub mod check;
pub mod demo;
pub mod exit;
pub mod routes;
pub mod routes_diff;
pub mod run;
pub mod serve;
