//! The lbp compiler: lowers a checked policy (from `lbp-lang`) to the IR and runs
//! it, through the reference interpreter or Cranelift-compiled code (`jit`), or
//! compiles it to eBPF for the kernel's XDP hook (`bpf`).
//!
//! This crate does no I/O: it turns a tree into a program and tables, builds and
//! parses packets in memory, and runs policy tests. It never reads the clock or the
//! network; the runtime calls compiled policies through `lbp-abi` only.

pub mod bpf;
// Not API: public only for `tests/jit_differential.rs`, which checks the
// classifier's own lookup against the interpreter.
#[doc(hidden)]
pub mod classify;
pub mod error;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod lower;
pub mod packet;
pub mod pcap;
pub mod testing;
/// Header extraction lives in the ABI crate, so that the runtime shares it.
pub use lbp_abi::wire;

pub use error::CompileError;
pub use interp::{Engine, Interpreter};
pub use ir::Program;
pub use jit::Jit;
