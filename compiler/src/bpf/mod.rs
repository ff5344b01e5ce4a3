//! The eBPF back end: a policy compiled to an XDP program, beside the
//! Cranelift JIT and with the same decision semantics (the reference is
//! `interp.rs`). lbp emits the instructions itself (`lbp_abi::bpf::Asm`); the
//! runtime loads them (`lbp_runtime::ring::bpf::Loaded`). No clang or LLVM.
//!
//! The program has two parts: `extract` reads the frame into a [`Fields`] on
//! the stack, every access bounds-checked (the same fields as
//! `lbp_abi::wire::extract`), and the decision reads that `Fields` and the
//! policy's maps and makes a [`Decision`].
//!
//! [`Fields`]: lbp_abi::Fields
//! [`Decision`]: lbp_abi::Decision

use lbp_abi::bpf::{MapSpec, Program};

pub mod extract;

/// A compiled eBPF program and the maps it names by number.
#[derive(Clone, Debug, Default)]
pub struct BpfProgram {
    pub prog: Program,
    pub maps: Vec<MapSpec>,
}
