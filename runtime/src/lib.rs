//! The lbp runtime: switching cores polling NIC rings (AF_XDP, io_uring over
//! AF_PACKET, in-memory), the connection table, header rewrite, routing and ARP.
//!
//! Not built yet: this crate holds its place in the workspace. It will never import
//! Cranelift; it calls compiled policies only through the shared ABI.
