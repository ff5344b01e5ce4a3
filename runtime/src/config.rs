//! What the runtime needs to know of a policy beyond its compiled filter: the
//! interfaces, services, pools and routes, as plain data.
//!
//! The `lbp` binary fills it from the compiler's lowered policy; the runtime never
//! sees the IR. Indices agree with the compiled policy's [`lbp_abi::Decision`]:
//! `Fields::in_iface` and a route's `dev` index [`Appliance::interfaces`], a
//! `Balance` decision's `target` indexes [`Appliance::services`], and a `Forward`
//! decision's `target` indexes [`Appliance::routes`].

use std::net::IpAddr;
use std::sync::Arc;

/// One appliance's configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appliance {
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
    /// Connected networks first, then the `route` items, as the compiled policy
    /// numbers them.
    pub routes: Vec<Route>,
    /// The filter rules, as the compiled policy numbers them (a decision's
    /// `rule`), for counters and for what a reload changed. Shared: the
    /// generations of one compile do not copy them.
    pub rules: Arc<[Rule]>,
}

/// A filter rule as written: its line in the policy file (1-based) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub line: u32,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    /// The name in the policy.
    pub name: String,
    /// The interface's MAC: the policy's, or the bound OS interface's.
    pub mac: [u8; 6],
    /// Addresses with their connected network's prefix length.
    pub addrs: Vec<(IpAddr, u8)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    /// The virtual IPs (the ARP / neighbour code answers for them).
    pub vips: Vec<IpAddr>,
    pub mode: Mode,
    pub algorithm: Algorithm,
    /// `unknown balance`: a TCP segment that is not a SYN and belongs to no known
    /// connection is balanced; otherwise (the default) it is answered with a RST.
    pub unknown_balance: bool,
    /// The pool's back ends (a service without a pool has none: its packets are
    /// dropped).
    pub backends: Vec<Backend>,
    /// The pool's weight formula (`weight = EXPR`), for the control module.
    pub formula: Option<Formula>,
    /// The pool's health checks, for the control module.
    pub health: Vec<Check>,
}

impl Service {
    /// The port a client's frame to port `vport` leaves for back end `be`
    /// with: under NAT the back end's own port, else the service's `to
    /// port`, else `vport`; 0 under DSR (the port is not rewritten).
    pub fn backend_port(&self, be: &Backend, vport: u16) -> u16 {
        match self.mode {
            Mode::Nat { to_port } => be.port.or(to_port).unwrap_or(vport),
            Mode::Dsr => 0,
        }
    }
}

/// A pool's health check, as the compiler lowers it.
pub use lbp_abi::health::Check;

/// A pool's weight formula, as the compiler lowers it.
pub use lbp_abi::weight::Formula;

/// `mode` and `balance` are the ABI's: the compiler lowers them, the runtime
/// acts on them.
pub use lbp_abi::{Algorithm, Mode};

#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub addr: IpAddr,
    /// The port to rewrite to (NAT), if the back end names one.
    pub port: Option<u16>,
    /// The static weight (the control core may publish other weights).
    pub weight: u32,
    /// `agent N`: the TCP port of the back end's HAProxy-style agent, polled
    /// by the control module ([`crate::control::probe::AgentPoller`]).
    pub agent: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub prefix: IpAddr,
    pub len: u8,
    /// The next hop; `None` for a connected network (the destination itself is
    /// the next hop).
    pub via: Option<IpAddr>,
    /// Index into [`Appliance::interfaces`].
    pub dev: u32,
}
