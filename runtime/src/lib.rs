//! The lbp runtime: switching cores polling NIC rings (AF_XDP, io_uring over
//! AF_PACKET, in-memory), the connection table, back-end choice, header rewrite,
//! routing and ARP.
//!
//! It never imports Cranelift or the compiler's IR: compiled policies are called
//! through `lbp-abi` only. Module map:
//!
//! - `ring`: frame memory ([`ring::Frames`]), the [`ring::Port`] trait, and its back
//!   ends (in memory, AF_XDP, io_uring over AF_PACKET).
//! - `wire`: packet views, checksums, NAT rewrite, and the packets the appliance
//!   writes itself (TCP resets, ARP and neighbour replies).
//! - `conn`: the connection table shared by the switching cores.
//! - `balance`: back-end choice (Maglev, weighted round robin, least load, hash).
//! - `config`: the interfaces, services, pools and routes, as plain data.
//! - `neigh`: the neighbour (ARP / NDP) table and packets waiting for a resolution.
//! - `control`: the control core's decisions as pure functions (back-end
//!   health from check results, so far).
//! - `generation`: what the control core may replace (policy, configuration,
//!   weight tables) and its publication to the switching cores.
//! - `switch`: a switching core's per-burst work: ARP / ND, policy, acting.
//! - `sys`: the operating-system calls the `lbp` command makes beyond the
//!   standard library (signals, CPU affinity, ...), as safe functions.
//! - `app`: applications that run inside a switching core's loop on its own
//!   frames (`app NAME`): the frame handle and its ownership rules, and the
//!   built-in `echo` (UDP, RFC 862) and `icmp` (echo replies).
//! - `testbed`: one switching core on in-memory rings, a frame at a time, and
//!   what became of each frame (`lbp test`'s appliance back end, the
//!   differential tests and fuzz target).
//! - `run`: the loops of `lbp run`: a switching core over its ports, the bare
//!   forwarder, the control core's housekeeping, binding interfaces to rings.

pub mod app;
pub mod balance;
pub mod config;
pub mod conn;
pub mod control;
pub mod generation;
pub mod neigh;
pub mod ring;
pub mod run;
pub mod switch;
pub mod sys;
pub mod testbed;
pub mod wire;
