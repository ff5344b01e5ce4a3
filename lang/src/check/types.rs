//! The language's types and the checker's tables.
//!
//! [`Ty`] is the type of an expression, [`Elem`] the kind of a set's elements,
//! [`Fam`] an address family. The tables hold what the language knows by name:
//! every packet field with its type and largest value ([`FIELDS`]), the inputs
//! of a weight formula, the protocol names usable as values, the actions,
//! verdicts, applications, balance algorithms, health checks, TCP flags and set
//! types. `crate::vocab` re-exports them for the tools that need the words.

use std::net::IpAddr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fam {
    V4,
    V6,
    /// Either family: the type of `ip.src` and `ip.dst`.
    Any,
}

impl Fam {
    pub fn of(a: &IpAddr) -> Fam {
        if a.is_ipv4() { Fam::V4 } else { Fam::V6 }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Fam::V4 => "IPv4",
            Fam::V6 => "IPv6",
            Fam::Any => "IP",
        }
    }
    pub(super) fn max_len(self) -> u32 {
        match self {
            Fam::V4 => 32,
            Fam::V6 | Fam::Any => 128,
        }
    }
}

/// The element kind of a set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Elem {
    /// Integers and integer ranges (ports, protocol numbers, ...).
    Int,
    /// Addresses and prefixes, of either family.
    Prefix,
    Mac,
    Iface,
    Str,
    Unknown,
}

/// The type of an expression.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    Bool,
    Int,
    Num,
    Addr(Fam),
    Prefix(Fam),
    Mac,
    Duration,
    Str,
    Iface,
    Range,
    Set(Elem),
    /// Already reported; silences follow-on errors.
    Unknown,
}

impl Ty {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "true or false",
            Ty::Int => "an integer",
            Ty::Num => "a number",
            Ty::Addr(Fam::V4) => "an IPv4 address",
            Ty::Addr(Fam::V6) => "an IPv6 address",
            Ty::Addr(Fam::Any) => "an address",
            Ty::Prefix(Fam::V4) => "an IPv4 prefix",
            Ty::Prefix(Fam::V6) => "an IPv6 prefix",
            Ty::Prefix(Fam::Any) => "a prefix",
            Ty::Mac => "a MAC address",
            Ty::Duration => "a duration",
            Ty::Str => "a string",
            Ty::Iface => "an interface",
            Ty::Range => "a range",
            Ty::Set(Elem::Int) => "a set of integers",
            Ty::Set(Elem::Prefix) => "a set of addresses and prefixes",
            Ty::Set(Elem::Mac) => "a set of MAC addresses",
            Ty::Set(Elem::Iface) => "a set of interfaces",
            Ty::Set(Elem::Str) => "a set of strings",
            Ty::Set(Elem::Unknown) => "a set",
            Ty::Unknown => "unknown",
        }
    }
    pub(super) fn elem(self) -> Option<Elem> {
        Some(match self {
            Ty::Int | Ty::Range => Elem::Int,
            Ty::Addr(_) | Ty::Prefix(_) => Elem::Prefix,
            Ty::Mac => Elem::Mac,
            Ty::Iface => Elem::Iface,
            Ty::Str => Elem::Str,
            Ty::Unknown => Elem::Unknown,
            _ => return None,
        })
    }
}

/// A packet field: its name, type, largest value (integers), whether it is a
/// port, and what it means in the words of the language reference.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    pub name: &'static str,
    pub ty: Ty,
    pub max: u64,
    pub port: bool,
    pub meaning: &'static str,
}

const fn f(name: &'static str, ty: Ty, max: u64, port: bool, meaning: &'static str) -> FieldInfo {
    FieldInfo {
        name,
        ty,
        max,
        port,
        meaning,
    }
}

/// Every packet field of the language: the one table the checker, the
/// lowering (`lbp_compiler::lower`, which holds a test that every field
/// lowers), the editor support and the property tests' generators read.
pub const FIELDS: &[FieldInfo] = &[
    f(
        "in.iface",
        Ty::Iface,
        0,
        false,
        "the interface the packet arrived on",
    ),
    f(
        "pkt.len",
        Ty::Int,
        65535,
        false,
        "the frame's length, Ethernet header included",
    ),
    f("eth.src", Ty::Mac, 0, false, "source MAC address"),
    f("eth.dst", Ty::Mac, 0, false, "destination MAC address"),
    f(
        "eth.type",
        Ty::Int,
        65535,
        false,
        "the EtherType after any VLAN tags (0x0800 IPv4, 0x86dd IPv6)",
    ),
    f("ip.version", Ty::Int, 15, false, "the IP version: 4 or 6"),
    f(
        "ip.src",
        Ty::Addr(Fam::Any),
        0,
        false,
        "source address, of either family",
    ),
    f(
        "ip.dst",
        Ty::Addr(Fam::Any),
        0,
        false,
        "destination address, of either family",
    ),
    f(
        "ip.proto",
        Ty::Int,
        255,
        false,
        "the protocol, compared with a number or tcp, udp, icmp, icmpv6; for IPv6 the upper-layer protocol after any extension headers",
    ),
    f(
        "ip.ttl",
        Ty::Int,
        255,
        false,
        "the TTL; the hop limit for IPv6",
    ),
    f(
        "ip.len",
        Ty::Int,
        65575,
        false,
        "IPv4 total length; IPv6 payload length plus 40",
    ),
    f(
        "ip.frag",
        Ty::Bool,
        0,
        false,
        "the packet is a fragment, first or later (IPv4 MF or offset, IPv6 fragment header)",
    ),
    f("tcp.sport", Ty::Int, 65535, true, "TCP source port"),
    f("tcp.dport", Ty::Int, 65535, true, "TCP destination port"),
    f("tcp.syn", Ty::Bool, 0, false, "the TCP SYN flag"),
    f("tcp.ack", Ty::Bool, 0, false, "the TCP ACK flag"),
    f("tcp.fin", Ty::Bool, 0, false, "the TCP FIN flag"),
    f("tcp.rst", Ty::Bool, 0, false, "the TCP RST flag"),
    f("tcp.psh", Ty::Bool, 0, false, "the TCP PSH flag"),
    f("tcp.urg", Ty::Bool, 0, false, "the TCP URG flag"),
    f("udp.sport", Ty::Int, 65535, true, "UDP source port"),
    f("udp.dport", Ty::Int, 65535, true, "UDP destination port"),
    f(
        "icmp.type",
        Ty::Int,
        255,
        false,
        "ICMP or ICMPv6 type, whichever is present",
    ),
    f(
        "icmp.code",
        Ty::Int,
        255,
        false,
        "ICMP or ICMPv6 code, whichever is present",
    ),
    f(
        "l4.sport",
        Ty::Int,
        65535,
        true,
        "TCP or UDP source port, whichever is present",
    ),
    f(
        "l4.dport",
        Ty::Int,
        65535,
        true,
        "TCP or UDP destination port, whichever is present",
    ),
];

pub fn field(name: &str) -> Option<&'static FieldInfo> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Fields a service may hash on with `balance hash(...)`.
pub const HASH_FIELDS: &[&str] = &["ip.src", "ip.dst", "ip.proto", "l4.sport", "l4.dport"];

/// Inputs of a pool's `weight = ...` expression.
pub const WEIGHT_INPUTS: &[&str] = &["clients", "cpu", "mem", "exec_ms", "rps", "weight"];

/// Protocol names usable as values (`ip.proto == tcp`).
pub const PROTOCOLS: &[(&str, u64)] = &[("tcp", 6), ("udp", 17), ("icmp", 1), ("icmpv6", 58)];

pub const ACTIONS: &[&str] = &[
    "accept", "drop", "reset", "local", "forward", "balance", "app",
];

pub const VERDICTS: &[&str] = &[
    "drop", "reset", "local", "balance", "forward", "expire", "app",
];

/// The built-in applications a switching core runs (`=> app NAME`), as the
/// runtime numbers them (`lbp_abi::app::BUILTIN`; a compiler test holds the
/// two equal). A program that registers more checks with
/// [`check_with`](super::check_with).
pub const APPLICATIONS: &[&str] = &["echo", "icmp"];

/// `a, b and c` (with `word` before the last name).
pub(super) fn list(names: &[&str], word: &str) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} {word} {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => "none".to_string(),
    }
}

pub const ALGORITHMS: &[&str] = &["maglev", "round_robin", "least_load", "hash"];

pub const HEALTH_KINDS: &[&str] = &["tcp", "http", "icmp"];

pub const TCP_FLAGS: &[&str] = &["syn", "ack", "fin", "rst", "psh", "urg"];

pub(super) const SET_TYPES: &[(&str, Elem)] = &[
    ("prefix", Elem::Prefix),
    ("address", Elem::Prefix),
    ("port", Elem::Int),
    ("int", Elem::Int),
    ("mac", Elem::Mac),
    ("interface", Elem::Iface),
    ("string", Elem::Str),
];
