//! The IR: a checked policy lowered to what a packet decision needs, and nothing
//! else. Names are resolved to indices, constants folded, sets turned into tables,
//! and every condition node keeps the span of the source it came from.
//!
//! Semantics of a condition (the reference is `interp.rs`): a test that reads a
//! field of a header the packet does not have is false. Every leaf therefore
//! carries the `present` bits it needs (`need`, satisfied when any of them is set).

use lbp_lang::ast::Span;

/// An index into [`Program::sets`].
pub type SetId = u32;

/// A lowered policy.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
    /// Routes, connected networks first, then the `route` items in source order.
    pub routes: Vec<Route>,
    /// The filter rules of every `filter` block, in order.
    pub rules: Vec<Rule>,
    pub sets: Vec<Set>,
    pub pools: Vec<Pool>,
    /// The switching core's applications by number (`Action::App`'s): the
    /// names the policy was lowered with, built-in ones first.
    pub apps: Vec<String>,
}

/// A pool of back ends (for the runtime; the filter never reads it).
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
    /// `weight = EXPR`: how the control module turns a load report into a
    /// weight (consts folded in, input names resolved).
    pub formula: Option<Formula>,
    /// The `health` lines, in order.
    pub health: Vec<Check>,
}

/// A pool's health checks: the ABI's, run by the runtime's control module.
pub use lbp_abi::health::{Check, Kind as HealthKind};

/// A lowered weight formula: the ABI's, evaluated by the runtime's control module.
pub use lbp_abi::weight::Formula;

#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: Addr,
    /// `weight N`, default 1.
    pub weight: u32,
    /// `port N`: the port NAT rewrites to for this back end.
    pub port: Option<u16>,
    /// `agent N`: the TCP port of the back end's agent (HAProxy's agent check),
    /// polled by the runtime's control module.
    pub agent: Option<u16>,
}

/// A service's `mode` and `balance`, as the runtime takes them.
pub use lbp_abi::{Algorithm, Mode};

#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    /// Addresses as written (with their connected network's length).
    pub addrs: Vec<(Addr, u8)>,
    pub mac: Option<[u8; 6]>,
}

/// An address of either family. IPv4 is kept as `u32`, IPv6 as `u128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addr {
    V4(u32),
    V6(u128),
}

impl Addr {
    pub fn from_ip(ip: std::net::IpAddr) -> Addr {
        match ip {
            std::net::IpAddr::V4(a) => Addr::V4(a.into()),
            std::net::IpAddr::V6(a) => Addr::V6(a.into()),
        }
    }
    pub fn to_ip(self) -> std::net::IpAddr {
        match self {
            Addr::V4(a) => std::net::IpAddr::V4(a.into()),
            Addr::V6(a) => std::net::IpAddr::V6(a.into()),
        }
    }
    /// Whether `self/len` contains `other`.
    pub fn contains(self, len: u8, other: Addr) -> bool {
        match (self, other) {
            (Addr::V4(n), Addr::V4(a)) => len == 0 || (n ^ a) >> (32 - u32::from(len.min(32))) == 0,
            (Addr::V6(n), Addr::V6(a)) => {
                len == 0 || (n ^ a) >> (128 - u32::from(len.min(128))) == 0
            }
            _ => false,
        }
    }
}

/// A service entry: (virtual IP, IP protocol number, port ranges inclusive).
pub type Entry = (Addr, u8, Vec<(u16, u16)>);

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub entries: Vec<Entry>,
    /// `unknown balance`: a TCP non-SYN of no known connection is balanced too.
    pub unknown_balance: bool,
    /// The fields its flow hash mixes (bits of `lbp_abi::hash_field`).
    pub hash_mask: u32,
    /// Index into [`Program::pools`].
    pub pool: Option<u32>,
    /// `mode`, default `nat` (keeping the port).
    pub mode: Mode,
    /// `balance`, default `maglev`.
    pub algorithm: Algorithm,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub prefix: Addr,
    pub len: u8,
    pub via: Option<Addr>,
    /// Index into [`Program::interfaces`].
    pub dev: u32,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub cond: Cond,
    pub action: Action,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop filtering; go on to the service stage.
    Accept,
    Drop,
    Reset,
    Local,
    /// Skip services and local delivery; route.
    Forward,
    /// Balance with service N.
    Balance(u32),
    /// Hand to the switching core's application N (`Program::apps`).
    App(u32),
}

/// An integer field of the packet, as read from `Fields`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntField {
    InIface,
    PktLen,
    EthType,
    IpVersion,
    IpProto,
    IpTtl,
    IpLen,
    Sport,
    Dport,
    IcmpType,
    IcmpCode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrField {
    Src,
    Dst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MacField {
    Src,
    Dst,
}

/// Comparison operators are the language's own.
pub use lbp_lang::ast::CmpOp;

/// `a op b` on integers.
pub fn compare(op: CmpOp, a: u64, b: u64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// A condition node with its source span.
#[derive(Clone, Debug)]
pub struct Cond {
    pub kind: CondKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum CondKind {
    Const(bool),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// `need` holds and `field op value`.
    Int {
        need: u32,
        field: IntField,
        op: CmpOp,
        value: u64,
    },
    /// `need` holds and the field is in the integer set.
    IntIn {
        need: u32,
        field: IntField,
        set: SetId,
    },
    /// `need` holds and `(tcp_flags & mask != 0) == expect`.
    Flag {
        need: u32,
        mask: u8,
        expect: bool,
    },
    /// `need` holds and `(present & bit != 0) == expect` (for `ip.frag`).
    Bit {
        need: u32,
        bit: u32,
        expect: bool,
    },
    /// `need` holds and the address is (or is not, for `!=`) equal.
    AddrEq {
        need: u32,
        field: AddrField,
        addr: Addr,
        eq: bool,
    },
    /// `need` holds and the address is in the prefix set.
    AddrIn {
        need: u32,
        field: AddrField,
        set: SetId,
    },
    MacEq {
        field: MacField,
        mac: [u8; 6],
        eq: bool,
    },
    MacIn {
        field: MacField,
        set: SetId,
    },
    /// Two integer fields compared: `need` holds and `a op b`.
    IntFields {
        need: u32,
        a: IntField,
        op: CmpOp,
        b: IntField,
    },
    /// `ip.src == ip.dst` (or `!=`), for an IP packet.
    AddrFields {
        eq: bool,
    },
    /// `eth.src == eth.dst` (or `!=`).
    MacFields {
        eq: bool,
    },
}

/// A table a condition consults.
#[derive(Clone, Debug)]
pub enum Set {
    /// Disjoint, sorted, inclusive ranges.
    Int(Vec<(u64, u64)>),
    /// Disjoint, sorted, inclusive address ranges per family.
    Prefix {
        v4: Vec<(u32, u32)>,
        v6: Vec<(u128, u128)>,
    },
    Mac(Vec<[u8; 6]>),
}

impl Set {
    pub fn contains_int(&self, v: u64) -> bool {
        match self {
            Set::Int(r) => match r.binary_search_by(|&(lo, _)| lo.cmp(&v)) {
                Ok(_) => true,
                Err(0) => false,
                Err(i) => r[i - 1].1 >= v,
            },
            _ => false,
        }
    }
    pub fn contains_addr(&self, a: Addr) -> bool {
        fn find<T: Ord + Copy>(r: &[(T, T)], v: T) -> bool {
            match r.binary_search_by(|&(lo, _)| lo.cmp(&v)) {
                Ok(_) => true,
                Err(0) => false,
                Err(i) => r[i - 1].1 >= v,
            }
        }
        match (self, a) {
            (Set::Prefix { v4, .. }, Addr::V4(x)) => find(v4, x),
            (Set::Prefix { v6, .. }, Addr::V6(x)) => find(v6, x),
            _ => false,
        }
    }
}

/// Merge inclusive ranges into a sorted disjoint list.
pub fn merge<T: Ord + Copy + One>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        if let Some(last) = out.last_mut()
            && (lo <= last.1 || last.1.succ() == Some(lo))
        {
            if hi > last.1 {
                last.1 = hi;
            }
            continue;
        }
        out.push((lo, hi));
    }
    out
}

/// The successor of an integer, if any (for merging adjacent ranges).
pub trait One {
    fn succ(self) -> Option<Self>
    where
        Self: Sized;
}

impl One for u64 {
    fn succ(self) -> Option<u64> {
        self.checked_add(1)
    }
}
impl One for u32 {
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
}
impl One for u128 {
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// The inclusive address range of `addr/len`.
pub fn prefix_range(addr: Addr, len: u8) -> (Addr, Addr) {
    match addr {
        Addr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            (Addr::V4(a & mask), Addr::V4(a | !mask))
        }
        Addr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            (Addr::V6(a & mask), Addr::V6(a | !mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_search() {
        let s = Set::Int(merge(vec![(10u64, 20u64), (5, 9), (30, 30), (18, 25)]));
        let Set::Int(r) = &s else { unreachable!() };
        assert_eq!(r, &vec![(5, 25), (30, 30)]);
        for v in 0..40 {
            assert_eq!(s.contains_int(v), (5..=25).contains(&v) || v == 30, "{v}");
        }
    }

    #[test]
    fn prefixes_contain() {
        let net = Addr::V4(0xc612_0000);
        assert!(net.contains(15, Addr::V4(0xc613_ffff)));
        assert!(!net.contains(15, Addr::V4(0xc614_0000)));
        assert!(net.contains(0, Addr::V4(1)));
        assert!(!net.contains(0, Addr::V6(1)));
        assert_eq!(
            prefix_range(Addr::V4(0xc612_0001), 24),
            (Addr::V4(0xc612_0000), Addr::V4(0xc612_00ff))
        );
    }
}
