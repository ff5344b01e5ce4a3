//! The library half of the `lbp` package: the parts of the tool that meet both
//! the compiler and the runtime, shared by the binary (`src/main.rs`), the CLI
//! tests and the fuzz targets. It reads no arguments or environment and prints
//! nothing; that is the binary's.
//!
//! - `appliance`: a lowered program as the runtime's configuration.
//! - `testbed`: a policy's appliance, one switching core on in-memory rings, as
//!   a back end of policy tests (`lbp_compiler::testing::Tester`).
//! - `render`: diagnostics for people, as `lbp check` prints them.

pub mod appliance;
pub mod render;
pub mod testbed;
