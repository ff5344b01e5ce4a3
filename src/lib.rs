//! The library half of the `lbp` package: the parts of the tool that meet both
//! the compiler and the runtime, shared by the binary (`src/main.rs`), the CLI
//! tests and the fuzz targets, and the command-line tool itself.
//!
//! - [`main`] and [`main_with`]: the whole `lbp` command-line tool (the `cli`
//!   module and its subcommands in `cmd`, the only code that reads arguments
//!   and the environment, prints, or exits). `main` is what the `lbp` binary
//!   runs; `main_with` is the same tool whose policies may also hand packets
//!   to applications of one's own (`app NAME`), for a program that adds some
//!   ([`app`], and `examples/dns-responder/`).
//! - [`app`]: what writing and registering a switching core's application
//!   takes.
//! - `appliance`: a lowered program as the runtime's configuration.
//! - `testbed`: a policy's appliance, one switching core on in-memory rings, as
//!   a back end of policy tests (`lbp_compiler::testing::Tester`).
//! - `render`: diagnostics for people, as `lbp check` prints them.

#![forbid(unsafe_code)]

// The subcommands name the package's library as `lbp`, as they did when they
// were the binary's.
extern crate self as lbp;

mod cli;
mod cmd;

pub use cli::{main, main_with};

/// Writing an application for the switching cores and registering it:
/// implement [`App`] (a [`Frame`] comes in with its [`Fields`]; end it with
/// [`Ctx::reply`], [`Ctx::send`] or [`Ctx::free`]), add it to the built-in
/// applications with [`Registry::with`], and run [`crate::main_with`] with
/// the registry. [`layout`], [`turn_ip_around`], [`pseudo`] and [`checksum`]
/// are what the built-in applications answer with.
pub mod app {
    pub use lbp_abi::Fields;
    pub use lbp_runtime::app::{
        ALLOC_BUDGET, ANSWER_TTL, App, AppCounters, Apps, Ctx, Frame, IPV6_HEADER, Layout,
        OUT_CAPACITY, Registry, layout, pseudo, reply_or_free, turn_ip_around,
    };
    pub use lbp_runtime::wire::checksum;
}

pub mod appliance;
pub mod render;
pub mod testbed;
