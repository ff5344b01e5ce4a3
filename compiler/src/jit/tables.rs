//! The tables the generated code reads ([`Tables`], built from a [`Program`] by
//! [`build_tables`]) and the `extern "C"` helpers it calls for what is too large
//! to inline: set membership, the service stage, own addresses, routes, merged
//! rule groups and the flow hash.

use crate::classify::Classifier;
use crate::error::{CompileError, code};
use crate::ir::{self, Addr, Program, Set};
use cranelift_codegen::ir::{Type, types};
use lbp_abi::Fields;
use std::collections::BTreeMap;

/// What the service helper returns when the destination is a virtual IP but no
/// entry matched.
pub(super) const SVC_NO_ENTRY: u32 = u32::MAX - 1;
/// What the service helper returns when the destination is no virtual IP.
pub(super) const SVC_NO_VIP: u32 = u32::MAX;
/// What the route helper returns when no route matches.
pub(super) const NO_ROUTE: u32 = u32::MAX;
/// A protocol number no packet has: the service helper's `proto` without TCP or UDP.
pub(super) const NO_L4: i64 = 0x100;

/// Everything the generated code looks up, reached through its `tables` argument.
/// Private to this module: only the generated code and the helpers read it (the
/// helpers take it by reference, so they need no `unsafe`).
#[derive(Debug)]
pub(super) struct Tables {
    pub(super) sets: Vec<SetTable>,
    /// Service entries by virtual IP, sorted by address. Each list keeps the
    /// interpreter's order: services in order, entries in order.
    pub(super) services: Vec<(Addr, Vec<Entry>)>,
    /// The interfaces' addresses, sorted, without duplicates.
    pub(super) own: Vec<Addr>,
    /// The directed broadcasts of the interfaces' IPv4 networks
    /// ([`lbp_abi::martian`]), sorted, without duplicates.
    pub(super) broadcasts: Vec<u32>,
    pub(super) routes4: Vec<RouteGroup<u32>>,
    pub(super) routes6: Vec<RouteGroup<u128>>,
    /// Filter rules merged into tables by shape, and the rules left inline.
    pub(super) classifier: Classifier,
    /// Per rule, its action as [`rule_code`] encodes it (read after a merged
    /// rule decided).
    pub(super) rule_codes: Vec<u32>,
    /// Per service, the fields of its flow hash.
    pub(super) hash_masks: Vec<u32>,
}

/// A rule's action for the generated code: the kind in the low 3 bits
/// (`CODE_*`), the service of `balance` above them.
pub(super) fn rule_code(a: ir::Action) -> u32 {
    match a {
        ir::Action::Accept => CODE_ACCEPT,
        ir::Action::Forward => CODE_FORWARD,
        ir::Action::Drop => CODE_DROP,
        ir::Action::Reset => CODE_RESET,
        ir::Action::Local => CODE_LOCAL,
        ir::Action::Balance(s) => CODE_BALANCE | s << 3,
        ir::Action::App(a) => CODE_APP | a << 3,
    }
}
pub(super) const CODE_ACCEPT: u32 = 0;
pub(super) const CODE_FORWARD: u32 = 1;
pub(super) const CODE_DROP: u32 = 2;
pub(super) const CODE_RESET: u32 = 3;
pub(super) const CODE_LOCAL: u32 = 4;
pub(super) const CODE_BALANCE: u32 = 5;
pub(super) const CODE_APP: u32 = 6;

#[derive(Debug)]
pub(super) enum SetTable {
    /// Sorted, disjoint, inclusive ranges.
    Int(Vec<(u64, u64)>),
    Prefix {
        v4: Vec<(u32, u32)>,
        v6: Vec<(u128, u128)>,
    },
    /// Sorted [`mac_key`]s.
    Mac(Vec<u64>),
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) service: u32,
    pub(super) proto: u8,
    pub(super) ports: Vec<(u16, u16)>,
}

/// The routes of one prefix length (as written) of one family.
#[derive(Debug)]
pub(super) struct RouteGroup<T> {
    /// The bits dropped from an address to get its key (`width - min(len, width)`).
    pub(super) shift: u32,
    /// (key, route index), sorted by key; the first route of each key.
    pub(super) nets: Vec<(T, u32)>,
}

/// A MAC address as the generated code loads it: the first four bytes as a native
/// `u32` in the low half, the last two as a native `u16` above them.
pub(super) fn mac_key(m: [u8; 6]) -> u64 {
    u64::from(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]))
        | u64::from(u16::from_ne_bytes([m[4], m[5]])) << 32
}

/// The address a helper receives: family 4 with the address in `lo`, or family 6
/// with the high and low 64 bits.
pub(super) fn addr_of(fam: u32, hi: u64, lo: u64) -> Addr {
    if fam == 4 {
        Addr::V4(lo as u32)
    } else {
        Addr::V6(u128::from(hi) << 64 | u128::from(lo))
    }
}

pub(super) fn in_ranges<T: Ord + Copy>(r: &[(T, T)], v: T) -> bool {
    let i = r.partition_point(|&(lo, _)| lo <= v);
    i > 0 && r.get(i - 1).is_some_and(|&(_, hi)| v <= hi)
}

pub(super) fn lookup<T: Ord + Copy>(r: &[RouteGroup<T>], v: T, shr: fn(T, u32) -> T) -> u32 {
    for g in r {
        let k = shr(v, g.shift);
        if let Ok(i) = g.nets.binary_search_by(|&(n, _)| n.cmp(&k))
            && let Some(&(_, idx)) = g.nets.get(i)
        {
            return idx;
        }
    }
    NO_ROUTE
}

pub(super) fn shr32(v: u32, s: u32) -> u32 {
    v.checked_shr(s).unwrap_or(0)
}

pub(super) fn shr128(v: u128, s: u32) -> u128 {
    v.checked_shr(s).unwrap_or(0)
}

#[inline(never)]
pub(super) extern "C" fn lbp_jit_int_in(t: &Tables, set: u32, v: u64) -> u32 {
    match t.sets.get(set as usize) {
        Some(SetTable::Int(r)) => u32::from(in_ranges(r, v)),
        _ => 0,
    }
}

#[inline(never)]
pub(super) extern "C" fn lbp_jit_addr_in(t: &Tables, set: u32, fam: u32, hi: u64, lo: u64) -> u32 {
    match (t.sets.get(set as usize), addr_of(fam, hi, lo)) {
        (Some(SetTable::Prefix { v4, .. }), Addr::V4(a)) => u32::from(in_ranges(v4, a)),
        (Some(SetTable::Prefix { v6, .. }), Addr::V6(a)) => u32::from(in_ranges(v6, a)),
        _ => 0,
    }
}

#[inline(never)]
pub(super) extern "C" fn lbp_jit_mac_in(t: &Tables, set: u32, mac: u64) -> u32 {
    match t.sets.get(set as usize) {
        Some(SetTable::Mac(ms)) => u32::from(ms.binary_search(&mac).is_ok()),
        _ => 0,
    }
}

/// The service stage: the index of the first service with an entry for
/// (destination, protocol, port), else [`SVC_NO_ENTRY`] when the destination is a
/// virtual IP, else [`SVC_NO_VIP`]. `proto` is [`NO_L4`] without TCP or UDP.
#[inline(never)]
pub(super) extern "C" fn lbp_jit_service(
    t: &Tables,
    fam: u32,
    hi: u64,
    lo: u64,
    proto: u32,
    dport: u32,
) -> u32 {
    let dst = addr_of(fam, hi, lo);
    let Ok(i) = t.services.binary_search_by(|(a, _)| a.cmp(&dst)) else {
        return SVC_NO_VIP;
    };
    let Some((_, entries)) = t.services.get(i) else {
        return SVC_NO_VIP;
    };
    for e in entries {
        if u32::from(e.proto) == proto
            && e.ports
                .iter()
                .any(|&(lo, hi)| u32::from(lo) <= dport && dport <= u32::from(hi))
        {
            return e.service;
        }
    }
    SVC_NO_ENTRY
}

/// One merged group's lookup, after the generated code admitted the packet
/// (its needs hold and its filter has the key's hash `h`): the lowest rule of
/// the group below `below` whose condition holds, else `below`.
#[inline(never)]
pub(super) extern "C" fn lbp_jit_group(
    t: &Tables,
    f: &Fields,
    group: u32,
    h: u64,
    below: u32,
) -> u32 {
    t.classifier
        .groups
        .get(group as usize)
        .and_then(|g| g.lookup(f, h, below))
        .unwrap_or(below)
}

/// A rule's [`rule_code`] (that of `drop` for an index out of range).
#[inline(never)]
pub(super) extern "C" fn lbp_jit_rule_code(t: &Tables, rule: u32) -> u32 {
    t.rule_codes
        .get(rule as usize)
        .copied()
        .unwrap_or(CODE_DROP)
}

/// The flow hash of a packet balanced by `service`.
#[inline(never)]
pub(super) extern "C" fn lbp_jit_flow_hash(t: &Tables, f: &Fields, service: u32) -> u32 {
    let mask = t
        .hash_masks
        .get(service as usize)
        .copied()
        .unwrap_or(lbp_abi::hash_field::ALL);
    lbp_abi::flow_hash(f, mask)
}

#[inline(never)]
pub(super) extern "C" fn lbp_jit_own(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    u32::from(t.own.binary_search(&addr_of(fam, hi, lo)).is_ok())
}

/// Whether routing refuses the destination ([`crate::interp::martian`]): 1 or 0.
#[inline(never)]
pub(super) extern "C" fn lbp_jit_martian(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    let a = addr_of(fam, hi, lo);
    let bcast = matches!(a, Addr::V4(v) if t.broadcasts.binary_search(&v).is_ok());
    u32::from(bcast || lbp_abi::martian::fixed(a.to_ip()).is_some())
}

#[inline(never)]
pub(super) extern "C" fn lbp_jit_route(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    match addr_of(fam, hi, lo) {
        Addr::V4(a) => lookup(&t.routes4, a, shr32),
        Addr::V6(a) => lookup(&t.routes6, a, shr128),
    }
}

/// The helpers the generated code may import, by symbol name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Helper {
    IntIn,
    AddrIn,
    MacIn,
    Service,
    Own,
    Martian,
    Route,
    RuleCode,
    FlowHash,
    Group,
}

impl Helper {
    pub(super) const ALL: [Helper; 10] = [
        Helper::IntIn,
        Helper::AddrIn,
        Helper::MacIn,
        Helper::Service,
        Helper::Own,
        Helper::Martian,
        Helper::Route,
        Helper::RuleCode,
        Helper::FlowHash,
        Helper::Group,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Helper::IntIn => "lbp_jit_int_in",
            Helper::AddrIn => "lbp_jit_addr_in",
            Helper::MacIn => "lbp_jit_mac_in",
            Helper::Service => "lbp_jit_service",
            Helper::Own => "lbp_jit_own",
            Helper::Martian => "lbp_jit_martian",
            Helper::Route => "lbp_jit_route",
            Helper::RuleCode => "lbp_jit_rule_code",
            Helper::FlowHash => "lbp_jit_flow_hash",
            Helper::Group => "lbp_jit_group",
        }
    }

    pub(super) fn address(self) -> *const u8 {
        match self {
            Helper::IntIn => lbp_jit_int_in as *const u8,
            Helper::AddrIn => lbp_jit_addr_in as *const u8,
            Helper::MacIn => lbp_jit_mac_in as *const u8,
            Helper::Service => lbp_jit_service as *const u8,
            Helper::Own => lbp_jit_own as *const u8,
            Helper::Martian => lbp_jit_martian as *const u8,
            Helper::Route => lbp_jit_route as *const u8,
            Helper::RuleCode => lbp_jit_rule_code as *const u8,
            Helper::FlowHash => lbp_jit_flow_hash as *const u8,
            Helper::Group => lbp_jit_group as *const u8,
        }
    }

    /// Parameter types after the tables pointer (`u32` is I32, `u64` is I64).
    pub(super) fn params(self) -> &'static [Type] {
        use types::{I32, I64};
        match self {
            Helper::IntIn => &[I32, I64],
            Helper::AddrIn => &[I32, I32, I64, I64],
            Helper::MacIn => &[I32, I64],
            Helper::Service => &[I32, I64, I64, I32, I32],
            Helper::Own | Helper::Martian | Helper::Route => &[I32, I64, I64],
            Helper::RuleCode => &[I32],
            Helper::FlowHash => &[I64, I32],
            // The `Fields` pointer (the JIT refuses hosts whose pointers are not
            // 64 bits wide), the group, the key's hash, the best rule so far.
            Helper::Group => &[I64, I32, I64, I32],
        }
    }
}

pub(super) fn build_tables(prog: &Program, merge_min: usize) -> Result<Tables, CompileError> {
    let sets = prog
        .sets
        .iter()
        .map(|s| match s {
            Set::Int(r) => SetTable::Int(ir::merge(r.clone())),
            Set::Prefix { v4, v6 } => SetTable::Prefix {
                v4: ir::merge(v4.clone()),
                v6: ir::merge(v6.clone()),
            },
            Set::Mac(ms) => {
                let mut keys: Vec<u64> = ms.iter().map(|&m| mac_key(m)).collect();
                keys.sort_unstable();
                keys.dedup();
                SetTable::Mac(keys)
            }
        })
        .collect();

    if prog.services.len() >= SVC_NO_ENTRY as usize {
        return Err(CompileError::new(code::TOO_MANY, "too many services"));
    }
    let mut by_vip: BTreeMap<Addr, Vec<Entry>> = BTreeMap::new();
    for (s, svc) in prog.services.iter().enumerate() {
        for (vip, proto, ports) in &svc.entries {
            by_vip.entry(*vip).or_default().push(Entry {
                service: s as u32,
                proto: *proto,
                ports: ports.clone(),
            });
        }
    }

    let mut own: Vec<Addr> = prog
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(|&(a, _)| a))
        .collect();
    own.sort_unstable();
    own.dedup();
    let mut broadcasts: Vec<u32> = prog
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter())
        .filter_map(|&(a, l)| lbp_abi::martian::directed_broadcast(a.to_ip(), l))
        .collect();
    broadcasts.sort_unstable();
    broadcasts.dedup();

    if prog.routes.len() >= NO_ROUTE as usize {
        return Err(CompileError::new(code::TOO_MANY, "too many routes"));
    }
    // By prefix length as written (the interpreter ranks by it), longest first; in
    // each, the first route of each network.
    let mut g4: BTreeMap<u8, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut g6: BTreeMap<u8, BTreeMap<u128, u32>> = BTreeMap::new();
    for (i, r) in prog.routes.iter().enumerate() {
        match r.prefix {
            Addr::V4(n) => {
                let key = shr32(n, 32 - u32::from(r.len.min(32)));
                g4.entry(r.len).or_default().entry(key).or_insert(i as u32);
            }
            Addr::V6(n) => {
                let key = shr128(n, 128 - u32::from(r.len.min(128)));
                g6.entry(r.len).or_default().entry(key).or_insert(i as u32);
            }
        }
    }
    let routes4 = g4
        .into_iter()
        .rev()
        .map(|(len, nets)| RouteGroup {
            shift: 32 - u32::from(len.min(32)),
            nets: nets.into_iter().collect(),
        })
        .collect();
    let routes6 = g6
        .into_iter()
        .rev()
        .map(|(len, nets)| RouteGroup {
            shift: 128 - u32::from(len.min(128)),
            nets: nets.into_iter().collect(),
        })
        .collect();

    Ok(Tables {
        sets,
        services: by_vip.into_iter().collect(),
        own,
        broadcasts,
        routes4,
        routes6,
        classifier: Classifier::build(prog, merge_min),
        rule_codes: prog.rules.iter().map(|r| rule_code(r.action)).collect(),
        hash_masks: prog.services.iter().map(|s| s.hash_mask).collect(),
    })
}
