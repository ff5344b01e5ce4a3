//! The reference interpreter: the meaning of a compiled policy, written to be
//! obviously right rather than fast. The JIT must agree with it on every packet.
//!
//! The decision pipeline (the language brief's steps 2 to 6): malformed packets
//! are dropped before anything else; the filter rules run in order and the first
//! whose condition holds decides; then service entries, then virtual IPs without a
//! matching entry (TCP reset, else drop), then the appliance's own addresses
//! (local), then routing: a martian destination (loopback, multicast, broadcast,
//! link-local, unspecified) is dropped, else the longest matching route
//! (forward), else drop. A packet that
//! would be balanced or forwarded with a TTL of 1 or 0 expires.

use crate::ir::*;
use lbp_abi::{Action as A, Decision, Fields, NO_RULE, present, stage, tcp_flag};

/// A way to run a compiled policy on one packet.
pub trait Engine {
    fn decide(&self, fields: &Fields) -> Decision;
}

/// The reference interpreter over a [`Program`].
#[derive(Debug)]
pub struct Interpreter<'p> {
    prog: &'p Program,
}

impl<'p> Interpreter<'p> {
    pub fn new(prog: &'p Program) -> Interpreter<'p> {
        Interpreter { prog }
    }
}

impl Engine for Interpreter<'_> {
    fn decide(&self, f: &Fields) -> Decision {
        decide(self.prog, f)
    }
}

fn decision(action: A, target: u32, rule: u32, stage: u32) -> Decision {
    Decision {
        action: action as u32,
        target,
        rule,
        stage,
        hash: 0,
    }
}

/// `reset` for TCP (but never in answer to a RST); drop for anything else.
fn reset_or_drop(f: &Fields) -> A {
    if f.present & present::TCP != 0 && f.tcp_flags & tcp_flag::RST == 0 {
        A::Reset
    } else {
        A::Drop
    }
}

/// The packet's source or destination address.
pub fn addr(f: &Fields, which: AddrField) -> Option<Addr> {
    let b = match which {
        AddrField::Src => &f.ip_src,
        AddrField::Dst => &f.ip_dst,
    };
    match f.ip_version {
        4 if f.present & present::IP4 != 0 => {
            Some(Addr::V4(u32::from_be_bytes([b[12], b[13], b[14], b[15]])))
        }
        6 if f.present & present::IP6 != 0 => Some(Addr::V6(u128::from_be_bytes(*b))),
        _ => None,
    }
}

pub fn int_field(f: &Fields, field: IntField) -> u64 {
    u64::from(match field {
        IntField::InIface => f.in_iface,
        IntField::PktLen => f.pkt_len,
        IntField::EthType => u32::from(f.eth_type),
        IntField::IpVersion => u32::from(f.ip_version),
        IntField::IpProto => u32::from(f.ip_proto),
        IntField::IpTtl => u32::from(f.ip_ttl),
        IntField::IpLen => f.ip_len,
        IntField::Sport => u32::from(f.sport),
        IntField::Dport => u32::from(f.dport),
        IntField::IcmpType => u32::from(f.icmp_type),
        IntField::IcmpCode => u32::from(f.icmp_code),
    })
}

fn mac(f: &Fields, which: MacField) -> [u8; 6] {
    match which {
        MacField::Src => f.eth_src,
        MacField::Dst => f.eth_dst,
    }
}

/// Whether the packet has any of the headers in `need` (an empty need always holds).
fn has(f: &Fields, need: u32) -> bool {
    need == 0 || f.present & need != 0
}

/// The value of a condition on a packet.
pub fn eval(prog: &Program, c: &Cond, f: &Fields) -> bool {
    match &c.kind {
        CondKind::Const(b) => *b,
        CondKind::Not(x) => !eval(prog, x, f),
        CondKind::And(xs) => xs.iter().all(|x| eval(prog, x, f)),
        CondKind::Or(xs) => xs.iter().any(|x| eval(prog, x, f)),
        CondKind::Int {
            need,
            field,
            op,
            value,
        } => has(f, *need) && compare(*op, int_field(f, *field), *value),
        CondKind::IntIn { need, field, set } => {
            has(f, *need) && prog.sets[*set as usize].contains_int(int_field(f, *field))
        }
        CondKind::Flag { need, mask, expect } => {
            has(f, *need) && ((f.tcp_flags & mask != 0) == *expect)
        }
        CondKind::Bit { need, bit, expect } => has(f, *need) && ((f.present & bit != 0) == *expect),
        CondKind::AddrEq {
            need,
            field,
            addr: a,
            eq,
        } => has(f, *need) && addr(f, *field).is_some_and(|x| (x == *a) == *eq),
        CondKind::AddrIn { need, field, set } => {
            has(f, *need)
                && addr(f, *field).is_some_and(|x| prog.sets[*set as usize].contains_addr(x))
        }
        CondKind::MacEq { field, mac: m, eq } => {
            has(f, present::ETH) && ((mac(f, *field) == *m) == *eq)
        }
        CondKind::MacIn { field, set } => {
            has(f, present::ETH)
                && matches!(&prog.sets[*set as usize], Set::Mac(ms) if ms.contains(&mac(f, *field)))
        }
        CondKind::IntFields { need, a, op, b } => {
            has(f, *need) && compare(*op, int_field(f, *a), int_field(f, *b))
        }
        CondKind::AddrFields { eq } => match (addr(f, AddrField::Src), addr(f, AddrField::Dst)) {
            (Some(s), Some(d)) => (s == d) == *eq,
            _ => false,
        },
        CondKind::MacFields { eq } => has(f, present::ETH) && ((f.eth_src == f.eth_dst) == *eq),
    }
}

/// The whole decision for one packet: the pipeline's, with the flow hash of a
/// `balance` decision over its service's hash fields. A packet that would be
/// balanced or forwarded with a TTL (hop limit) of 1 or 0 expires instead
/// ([`lbp_abi::expires`]): `Expire`, with the target, rule and stage of the
/// decision it replaces and no hash.
pub fn decide(prog: &Program, f: &Fields) -> Decision {
    let mut d = pipeline(prog, f);
    if (d.action == A::Balance as u32 || d.action == A::Forward as u32) && lbp_abi::expires(f) {
        d.action = A::Expire as u32;
        return d;
    }
    if d.action == A::Balance as u32 {
        let mask = prog
            .services
            .get(d.target as usize)
            .map_or(lbp_abi::hash_field::ALL, |s| s.hash_mask);
        d.hash = lbp_abi::flow_hash(f, mask);
    }
    d
}

fn pipeline(prog: &Program, f: &Fields) -> Decision {
    if f.present & present::MALFORMED != 0 || f.present & present::ETH == 0 {
        return decision(A::Drop, 0, NO_RULE, stage::MALFORMED);
    }
    let mut skip_services = false;
    for (i, r) in prog.rules.iter().enumerate() {
        if !eval(prog, &r.cond, f) {
            continue;
        }
        let i = i as u32;
        match r.action {
            Action::Accept => break,
            Action::Drop => return decision(A::Drop, 0, i, stage::FILTER),
            Action::Reset => return decision(reset_or_drop(f), 0, i, stage::FILTER),
            Action::Local => return decision(A::Local, 0, i, stage::FILTER),
            Action::Balance(s) => return decision(A::Balance, s, i, stage::FILTER),
            Action::App(a) => return decision(A::App, a, i, stage::FILTER),
            Action::Forward => {
                skip_services = true;
                break;
            }
        }
    }
    let Some(dst) = addr(f, AddrField::Dst) else {
        // Not IP: nothing past the filter applies (ARP is the runtime's).
        return decision(A::Drop, 0, NO_RULE, stage::ROUTE);
    };
    if !skip_services {
        let l4 = f.present & (present::TCP | present::UDP) != 0;
        for (s, svc) in prog.services.iter().enumerate() {
            for (vip, proto, ports) in &svc.entries {
                if *vip == dst
                    && l4
                    && f.ip_proto == *proto
                    && ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&f.dport))
                {
                    return decision(A::Balance, s as u32, NO_RULE, stage::SERVICE);
                }
            }
        }
        if prog
            .services
            .iter()
            .any(|s| s.entries.iter().any(|(vip, _, _)| *vip == dst))
        {
            return decision(reset_or_drop(f), 0, NO_RULE, stage::INVALID_ENTRY);
        }
        if prog
            .interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|(a, _)| *a == dst))
        {
            return decision(A::Local, 0, NO_RULE, stage::OWN_ADDRESS);
        }
    }
    if martian(prog, dst) {
        return decision(A::Drop, 0, NO_RULE, stage::MARTIAN);
    }
    match route(prog, dst) {
        Some(r) => decision(A::Forward, r, NO_RULE, stage::ROUTE),
        None => decision(A::Drop, 0, NO_RULE, stage::ROUTE),
    }
}

/// Whether routing must refuse `dst` ([`lbp_abi::martian`]): loopback,
/// multicast, broadcast (limited, or an interface network's directed one),
/// link-local or unspecified. Checked before any route, so that no route (a
/// default route included) reaches such a destination.
pub fn martian(prog: &Program, dst: Addr) -> bool {
    let connected = prog
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(|&(a, l)| (a.to_ip(), l)));
    lbp_abi::martian::martian(dst.to_ip(), connected).is_some()
}

/// The decision, the filter rules tried that did not match (for `lbp explain`),
/// and the `accept` or `forward` rule that let the packet past the filter, if one
/// did.
pub fn trace(prog: &Program, f: &Fields) -> (Decision, Vec<u32>, Option<u32>) {
    let d = decide(prog, f);
    if d.stage == stage::MALFORMED {
        return (d, Vec::new(), None);
    }
    if d.rule != NO_RULE {
        return (d, (0..d.rule).collect(), None);
    }
    match prog.rules.iter().position(|r| eval(prog, &r.cond, f)) {
        Some(p) => (d, (0..p as u32).collect(), Some(p as u32)),
        None => (d, (0..prog.rules.len() as u32).collect(), None),
    }
}

/// The longest matching route (the first of equal length), by index.
pub fn route(prog: &Program, dst: Addr) -> Option<u32> {
    let mut best: Option<(u8, u32)> = None;
    for (i, r) in prog.routes.iter().enumerate() {
        if r.prefix.contains(r.len, dst) && best.is_none_or(|(l, _)| r.len > l) {
            best = Some((r.len, i as u32));
        }
    }
    best.map(|(_, i)| i)
}
