//! Header extraction in eBPF: the frame's fields into a `Fields` on the stack,
//! as `lbp_abi::wire::extract` does in Rust.
