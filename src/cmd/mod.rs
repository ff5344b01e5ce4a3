//! The subcommands, one module each: its arguments (a clap `Args` struct, which
//! `main.rs` puts in its `Command` enum) and the function that runs it. What
//! several of them share (reading a file, the output options, printing
//! diagnostics, loading a policy) is `common`.

pub mod agent;
pub mod check;
mod common;
pub mod compile;
pub mod completions;
pub mod ctl;
pub mod demo;
pub mod editors;
pub mod eval;
pub mod explain;
pub mod fmt;
pub mod lsp;
pub mod parse;
pub mod run;
pub mod test;
