//! The Cranelift back end: a [`Program`] compiled to one native function with the
//! [`lbp_abi::FilterFn`] signature, plus the tables it reads.
//!
//! The generated function implements the whole pipeline of [`interp::decide`]
//! (malformed check, filter rules, service entries, virtual IPs without an entry,
//! own addresses, martian destinations, longest-prefix route) and must agree with
//! it on every `Fields` value, `Decision` fields included. It reads only the
//! `Fields` it is given and the [`Tables`] behind its first argument, writes only
//! the `Decision`, has no loops and cannot trap.
//!
//! What is inlined and what is a call:
//!
//! - Inlined: the malformed check, every filter condition over integer fields, TCP
//!   flags, `present` bits, address and MAC equality (an IPv4 address is compared on
//!   the low 32 bits of the IPv4-mapped field, exactly as [`interp::addr`] reads it;
//!   an IPv6 one as two 64-bit words), field-to-field comparisons, `!`, `&&` and `||`
//!   as short-circuit branches, and set membership for small sets (at most
//!   [`INLINE_MAX`] ranges or MACs per family) as a chain of range tests.
//! - Inlined when small (at most [`INLINE_TAIL_MAX`] entries of the packet's
//!   family): the stages after the filter. The family (`ip_version` and the
//!   IP4/IP6 bits) and the destination's words are loaded once in the entry block
//!   and shared by the rules and the stages; the service stage is a chain of
//!   virtual-IP compares then protocol and port-range compares per entry, the
//!   own-address check a chain of compares, and the route lookup a chain of masked
//!   compares ranked longest written prefix first (ties: the first route), folded
//!   into selects.
//! - Calls to `extern "C"` helpers in this module (imported by symbol): membership in
//!   larger sets (binary search over the sorted ranges), and for larger tables the
//!   service stage (one binary search by virtual IP), the own-address check and the
//!   route lookup (longest prefix first, a binary search per prefix length). Each
//!   helper takes the tables by reference and the value by value, never panics,
//!   never allocates.
//!
//! Ownership: each [`Jit`] owns its `JITModule` (freed with `free_memory` when the
//! `Jit` is dropped, and also when compilation fails half-way) and its boxed
//! [`Tables`], whose address is stable for the life of the `Jit`.
//!
//! [`interp::decide`]: crate::interp::decide
//! [`interp::addr`]: crate::interp::addr

use crate::classify::Classifier;
pub use crate::classify::MERGE_MIN;
use crate::interp::Backend;
use crate::ir::{
    self, Addr, AddrField, CmpOp, Cond, CondKind, IntField, MacField, Program, Set, SetId,
};
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, Type, UserFuncName, Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use lbp_abi::{Action as A, Decision, Fields, FilterFn, NO_RULE, present, stage, tcp_flag};
use std::collections::BTreeMap;
use std::fmt;
use std::mem::offset_of;
use std::sync::{Mutex, PoisonError};

/// Sets with at most this many ranges (or MACs) per family are tested inline;
/// larger ones through a helper call.
pub const INLINE_MAX: usize = 4;

/// Per family, at most this many service entries, own addresses or routes are
/// tested inline in the stages after the filter; larger tables through a helper.
pub const INLINE_TAIL_MAX: usize = 16;

/// Conditions nested deeper than this are refused (the checker's limit on nesting
/// keeps real policies far below it); it bounds the translator's recursion.
const MAX_DEPTH: u32 = 1000;
/// The most condition nodes and rules compiled into one function (see `compile`).
/// Measured here: 10 000 rules of ~5 nodes compile in 2 s; 40 000 rules of 3 nodes
/// took 128 s.
pub const MAX_COND_NODES: usize = 60_000;
pub const MAX_RULES: usize = 12_000;

fn cond_nodes(c: &Cond) -> usize {
    // Iterative, so that no condition can exhaust the stack here.
    let mut stack = vec![c];
    let mut n = 0;
    while let Some(c) = stack.pop() {
        n += 1;
        match &c.kind {
            CondKind::Not(x) => stack.push(x),
            CondKind::And(xs) | CondKind::Or(xs) => stack.extend(xs.iter()),
            _ => {}
        }
    }
    n
}

/// What the service helper returns when the destination is a virtual IP but no
/// entry matched.
const SVC_NO_ENTRY: u32 = u32::MAX - 1;
/// What the service helper returns when the destination is no virtual IP.
const SVC_NO_VIP: u32 = u32::MAX;
/// What the route helper returns when no route matches.
const NO_ROUTE: u32 = u32::MAX;
/// A protocol number no packet has: the service helper's `proto` without TCP or UDP.
const NO_L4: i64 = 0x100;

/// A compiled policy: native code and its tables.
pub struct Jit {
    func: FilterFn,
    tables: Box<Tables>,
    code: Code,
    code_size: usize,
}

impl fmt::Debug for Jit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jit")
            .field("func", &(self.func as *const u8))
            .field("code_size", &self.code_size)
            .field("tables", &self.tables)
            .field("code", &self.code)
            .finish()
    }
}

impl Jit {
    /// The native function. It may be called, with [`Jit::tables`] as its first
    /// argument, only while this `Jit` is alive: dropping it frees the code.
    pub fn filter_fn(&self) -> FilterFn {
        self.func
    }

    /// The tables argument for [`Jit::filter_fn`].
    pub fn tables(&self) -> *const u8 {
        let t: &Tables = &self.tables;
        (t as *const Tables).cast()
    }

    /// The size of the generated machine code in bytes.
    pub fn code_size(&self) -> usize {
        self.code_size
    }
}

impl Backend for Jit {
    fn decide(&self, fields: &Fields) -> Decision {
        let mut out = std::mem::MaybeUninit::<Decision>::uninit();
        // SAFETY: `self.func` was generated by `compile` for exactly the tables in
        // `self.tables`, which are boxed (stable address), never mutated, and live as
        // long as `self`; the code is freed only when `self` is dropped, which cannot
        // happen during this borrow. The function reads only `*fields` and the tables,
        // writes only `*out` (both valid pointers here), has no loops, and its
        // helpers never panic, so no unwinding crosses the `extern "C"` boundary.
        // Every path of the function ends in `exit_words` or the balance exit, which
        // store all 20 bytes of the `Decision` (five `u32`, no padding), so `out` is
        // initialized when it returns.
        unsafe {
            (self.func)(self.tables(), fields, out.as_mut_ptr());
            out.assume_init()
        }
    }
}

/// The `JITModule` that owns a policy's code. Dropping it frees the code: a module
/// dropped without `free_memory` would leak its pages.
///
/// The module is touched only while compiling and when dropped; the mutex (never
/// locked: both use `get_mut`) only makes `Jit` `Sync`, since `JITModule` is `Send`
/// but not `Sync`, so that a compiled policy can be shared between cores.
struct Code(Mutex<Option<JITModule>>);

impl Code {
    fn module(&mut self) -> Result<&mut JITModule, String> {
        self.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .ok_or_else(|| "the JIT module is gone".to_string())
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        let module = self.0.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = module.take() {
            // SAFETY: the only pointer into this module's memory is the `FilterFn`
            // held by the `Jit` that owns this `Code` (or none, when compilation
            // failed). That `Jit` is being dropped, so no call through it is running
            // or can start; pointers handed out by `Jit::filter_fn` are documented
            // to be valid only while the `Jit` lives.
            unsafe { module.free_memory() };
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code")
    }
}

// ---------------------------------------------------------------------------
// Tables and helpers
// ---------------------------------------------------------------------------

/// Everything the generated code looks up, reached through its `tables` argument.
/// Private to this module: only the generated code and the helpers read it (the
/// helpers take it by reference, so they need no `unsafe`).
#[derive(Debug)]
struct Tables {
    sets: Vec<SetTable>,
    /// Service entries by virtual IP, sorted by address. Each list keeps the
    /// interpreter's order: services in order, entries in order.
    services: Vec<(Addr, Vec<Entry>)>,
    /// The interfaces' addresses, sorted, without duplicates.
    own: Vec<Addr>,
    /// The directed broadcasts of the interfaces' IPv4 networks
    /// ([`lbp_abi::martian`]), sorted, without duplicates.
    broadcasts: Vec<u32>,
    routes4: Vec<RouteGroup<u32>>,
    routes6: Vec<RouteGroup<u128>>,
    /// Filter rules merged into tables by shape, and the rules left inline.
    classifier: Classifier,
    /// Per rule, its action as [`rule_code`] encodes it (read after a merged
    /// rule decided).
    rule_codes: Vec<u32>,
    /// Per service, the fields of its flow hash.
    hash_masks: Vec<u32>,
}

/// A rule's action for the generated code: the kind in the low 3 bits
/// (`CODE_*`), the service of `balance` above them.
fn rule_code(a: ir::Action) -> u32 {
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
const CODE_ACCEPT: u32 = 0;
const CODE_FORWARD: u32 = 1;
const CODE_DROP: u32 = 2;
const CODE_RESET: u32 = 3;
const CODE_LOCAL: u32 = 4;
const CODE_BALANCE: u32 = 5;
const CODE_APP: u32 = 6;

#[derive(Debug)]
enum SetTable {
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
struct Entry {
    service: u32,
    proto: u8,
    ports: Vec<(u16, u16)>,
}

/// The routes of one prefix length (as written) of one family.
#[derive(Debug)]
struct RouteGroup<T> {
    /// The bits dropped from an address to get its key (`width - min(len, width)`).
    shift: u32,
    /// (key, route index), sorted by key; the first route of each key.
    nets: Vec<(T, u32)>,
}

/// A MAC address as the generated code loads it: the first four bytes as a native
/// `u32` in the low half, the last two as a native `u16` above them.
fn mac_key(m: [u8; 6]) -> u64 {
    u64::from(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]))
        | u64::from(u16::from_ne_bytes([m[4], m[5]])) << 32
}

/// The address a helper receives: family 4 with the address in `lo`, or family 6
/// with the high and low 64 bits.
fn addr_of(fam: u32, hi: u64, lo: u64) -> Addr {
    if fam == 4 {
        Addr::V4(lo as u32)
    } else {
        Addr::V6(u128::from(hi) << 64 | u128::from(lo))
    }
}

fn in_ranges<T: Ord + Copy>(r: &[(T, T)], v: T) -> bool {
    let i = r.partition_point(|&(lo, _)| lo <= v);
    i > 0 && r.get(i - 1).is_some_and(|&(_, hi)| v <= hi)
}

fn lookup<T: Ord + Copy>(r: &[RouteGroup<T>], v: T, shr: fn(T, u32) -> T) -> u32 {
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

fn shr32(v: u32, s: u32) -> u32 {
    v.checked_shr(s).unwrap_or(0)
}

fn shr128(v: u128, s: u32) -> u128 {
    v.checked_shr(s).unwrap_or(0)
}

#[inline(never)]
extern "C" fn lbp_jit_int_in(t: &Tables, set: u32, v: u64) -> u32 {
    match t.sets.get(set as usize) {
        Some(SetTable::Int(r)) => u32::from(in_ranges(r, v)),
        _ => 0,
    }
}

#[inline(never)]
extern "C" fn lbp_jit_addr_in(t: &Tables, set: u32, fam: u32, hi: u64, lo: u64) -> u32 {
    match (t.sets.get(set as usize), addr_of(fam, hi, lo)) {
        (Some(SetTable::Prefix { v4, .. }), Addr::V4(a)) => u32::from(in_ranges(v4, a)),
        (Some(SetTable::Prefix { v6, .. }), Addr::V6(a)) => u32::from(in_ranges(v6, a)),
        _ => 0,
    }
}

#[inline(never)]
extern "C" fn lbp_jit_mac_in(t: &Tables, set: u32, mac: u64) -> u32 {
    match t.sets.get(set as usize) {
        Some(SetTable::Mac(ms)) => u32::from(ms.binary_search(&mac).is_ok()),
        _ => 0,
    }
}

/// The service stage: the index of the first service with an entry for
/// (destination, protocol, port), else [`SVC_NO_ENTRY`] when the destination is a
/// virtual IP, else [`SVC_NO_VIP`]. `proto` is [`NO_L4`] without TCP or UDP.
#[inline(never)]
extern "C" fn lbp_jit_service(
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
extern "C" fn lbp_jit_group(t: &Tables, f: &Fields, group: u32, h: u64, below: u32) -> u32 {
    t.classifier
        .groups
        .get(group as usize)
        .and_then(|g| g.lookup(f, h, below))
        .unwrap_or(below)
}

/// A rule's [`rule_code`] (that of `drop` for an index out of range).
#[inline(never)]
extern "C" fn lbp_jit_rule_code(t: &Tables, rule: u32) -> u32 {
    t.rule_codes
        .get(rule as usize)
        .copied()
        .unwrap_or(CODE_DROP)
}

/// The flow hash of a packet balanced by `service`.
#[inline(never)]
extern "C" fn lbp_jit_flow_hash(t: &Tables, f: &Fields, service: u32) -> u32 {
    let mask = t
        .hash_masks
        .get(service as usize)
        .copied()
        .unwrap_or(lbp_abi::hash_field::ALL);
    lbp_abi::flow_hash(f, mask)
}

#[inline(never)]
extern "C" fn lbp_jit_own(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    u32::from(t.own.binary_search(&addr_of(fam, hi, lo)).is_ok())
}

/// Whether routing refuses the destination ([`crate::interp::martian`]): 1 or 0.
#[inline(never)]
extern "C" fn lbp_jit_martian(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    let a = addr_of(fam, hi, lo);
    let bcast = matches!(a, Addr::V4(v) if t.broadcasts.binary_search(&v).is_ok());
    u32::from(bcast || lbp_abi::martian::fixed(a.to_ip()).is_some())
}

#[inline(never)]
extern "C" fn lbp_jit_route(t: &Tables, fam: u32, hi: u64, lo: u64) -> u32 {
    match addr_of(fam, hi, lo) {
        Addr::V4(a) => lookup(&t.routes4, a, shr32),
        Addr::V6(a) => lookup(&t.routes6, a, shr128),
    }
}

/// The helpers the generated code may import, by symbol name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Helper {
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
    const ALL: [Helper; 10] = [
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

    fn name(self) -> &'static str {
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

    fn address(self) -> *const u8 {
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
    fn params(self) -> &'static [Type] {
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

fn build_tables(prog: &Program, merge_min: usize) -> Result<Tables, String> {
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
        return Err("too many services".into());
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
        return Err("too many routes".into());
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

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

/// Compile a lowered policy to native code, merging rules of one shape into
/// tables when at least [`MERGE_MIN`] rules share it.
pub fn compile(prog: &Program) -> Result<Jit, String> {
    compile_with(prog, MERGE_MIN)
}

/// Compile, merging rules of one shape when at least `merge_min` share it
/// (`usize::MAX`: never; 1: whenever possible, as the differential tests do).
pub fn compile_with(prog: &Program, merge_min: usize) -> Result<Jit, String> {
    compile_inner(prog, false, merge_min, false).map(|(jit, _)| jit)
}

/// The Cranelift IR (CLIF) of a policy's function, as generated before
/// optimisation (`lbp compile --emit clif`).
pub fn clif(prog: &Program) -> Result<String, String> {
    compile_inner(prog, true, MERGE_MIN, false).map(|(_, clif)| clif.unwrap_or_default())
}

/// Compile, `generic`: with the filter emitted once for every family even when
/// it is small enough to be emitted once per family (so that the tests cover
/// both forms).
fn compile_inner(
    prog: &Program,
    keep_clif: bool,
    merge_min: usize,
    generic: bool,
) -> Result<(Jit, Option<String>), String> {
    if prog.rules.len() >= NO_RULE as usize {
        return Err("too many rules".into());
    }
    if size_of::<usize>() != 8 {
        return Err("lbp's JIT needs a 64-bit host".into());
    }
    let tables = Box::new(build_tables(prog, merge_min)?);
    // The rules left inline are one function, and Cranelift's cost grows faster
    // than linearly with its size (10 000 rules: 1.6 s and 180 MB; 100 000: out
    // of 24 GB). Refuse, with a clear error, what cannot be compiled in bounded
    // memory.
    let inline = &tables.classifier.inline;
    let nodes: usize = inline
        .iter()
        .filter_map(|&i| prog.rules.get(i as usize))
        .map(|r| cond_nodes(&r.cond))
        .sum();
    if nodes > MAX_COND_NODES || inline.len() > MAX_RULES {
        return Err(format!(
            "the filter is too large to compile: {} rules could not be merged into tables ({nodes} condition nodes; the limits are {MAX_RULES} rules and {MAX_COND_NODES} nodes); rules that are conjunctions of field tests (`==`, `in`, comparisons, flags, negated `in`) merge",
            inline.len()
        ));
    }

    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift setting {k}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    set(&mut flags, "enable_verifier", verify)?;
    let isa = cranelift_native::builder()
        .map_err(|e| format!("this host is not supported by Cranelift: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("Cranelift: {e}"))?;
    let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
    for h in Helper::ALL {
        builder.symbol(h.name(), h.address());
    }
    // From here on, dropping `code` (on any error) frees whatever was emitted.
    let mut code = Code(Mutex::new(Some(JITModule::new(builder))));
    let module = code.module()?;

    let ptr = module.target_config().pointer_type();
    let mut helpers = Vec::with_capacity(Helper::ALL.len());
    for h in Helper::ALL {
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.params
            .extend(h.params().iter().map(|&t| AbiParam::new(t)));
        sig.returns.push(AbiParam::new(types::I32));
        let id = module
            .declare_function(h.name(), Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        helpers.push(id);
    }

    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr); 3]);
    let func_id = module
        .declare_function("lbp_filter", Linkage::Local, &sig)
        .map_err(|e| e.to_string())?;

    let mut ctx: Context = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, func_id.as_u32());
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let specialize = nodes <= SPECIALIZE_MAX_NODES && !generic;
        let t = Translator::new(b, module, prog, &tables, helpers, specialize)?;
        t.translate_program()?;
    }
    let clif = keep_clif.then(|| ctx.func.display().to_string());
    module
        .define_function(func_id, &mut ctx)
        .map_err(|e| format!("Cranelift: {e:?}"))?;
    let code_size = ctx
        .compiled_code()
        .map_or(0, |c| c.code_info().total_size as usize);
    module.clear_context(&mut ctx);
    module
        .finalize_definitions()
        .map_err(|e| format!("Cranelift: {e}"))?;
    let entry = module.get_finalized_function(func_id);
    // SAFETY: `entry` is the start of the function just defined and finalized in
    // `module`, whose signature is three pointer parameters and no result in the
    // host's default calling convention (`make_signature`), which is `extern "C"`:
    // exactly `FilterFn`. The code stays mapped and executable until `Code::drop`
    // frees it, and `Code` lives in the same `Jit` as the pointer.
    let func = unsafe { std::mem::transmute::<*const u8, FilterFn>(entry) };
    Ok((
        Jit {
            func,
            tables,
            code,
            code_size,
        },
        clif,
    ))
}

const OFF_PRESENT: i32 = offset_of!(Fields, present) as i32;
const OFF_IP_VERSION: i32 = offset_of!(Fields, ip_version) as i32;
const OFF_IP_PROTO: i32 = offset_of!(Fields, ip_proto) as i32;
const OFF_IP_TTL: i32 = offset_of!(Fields, ip_ttl) as i32;
const OFF_DPORT: i32 = offset_of!(Fields, dport) as i32;
const OFF_TCP_FLAGS: i32 = offset_of!(Fields, tcp_flags) as i32;

fn addr_offset(f: AddrField) -> i32 {
    (match f {
        AddrField::Src => offset_of!(Fields, ip_src),
        AddrField::Dst => offset_of!(Fields, ip_dst),
    }) as i32
}

fn mac_offset(f: MacField) -> i32 {
    (match f {
        MacField::Src => offset_of!(Fields, eth_src),
        MacField::Dst => offset_of!(Fields, eth_dst),
    }) as i32
}

/// The offset and width in bytes of an integer field.
fn int_offset(f: IntField) -> (i32, u8) {
    let (off, width) = match f {
        IntField::InIface => (offset_of!(Fields, in_iface), 4),
        IntField::PktLen => (offset_of!(Fields, pkt_len), 4),
        IntField::EthType => (offset_of!(Fields, eth_type), 2),
        IntField::IpVersion => (offset_of!(Fields, ip_version), 1),
        IntField::IpProto => (offset_of!(Fields, ip_proto), 1),
        IntField::IpTtl => (offset_of!(Fields, ip_ttl), 1),
        IntField::IpLen => (offset_of!(Fields, ip_len), 4),
        IntField::Sport => (offset_of!(Fields, sport), 2),
        IntField::Dport => (offset_of!(Fields, dport), 2),
        IntField::IcmpType => (offset_of!(Fields, icmp_type), 1),
        IntField::IcmpCode => (offset_of!(Fields, icmp_code), 1),
    };
    (off as i32, width)
}

fn cc(op: CmpOp) -> IntCC {
    match op {
        CmpOp::Eq => IntCC::Equal,
        CmpOp::Ne => IntCC::NotEqual,
        CmpOp::Lt => IntCC::UnsignedLessThan,
        CmpOp::Le => IntCC::UnsignedLessThanOrEqual,
        CmpOp::Gt => IntCC::UnsignedGreaterThan,
        CmpOp::Ge => IntCC::UnsignedGreaterThanOrEqual,
    }
}

/// Loads from `Fields`: never trapping (the pointer is valid), not necessarily
/// aligned (addresses and MACs are read in words at odd offsets), and read-only.
fn field_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

/// The two 64-bit words of a big-endian 128-bit value as native-order loads of
/// its bytes 0..8 and 8..16 read them.
fn ne_words(v: u128) -> (u64, u64) {
    let b = v.to_be_bytes();
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    l.copy_from_slice(&b[8..]);
    (u64::from_ne_bytes(h), u64::from_ne_bytes(l))
}

/// A packet address as a helper receives it (see [`addr_of`]).
struct AddrKey {
    fam: Value,
    hi: Value,
    lo: Value,
}

/// Translates one [`Program`] into the body of the filter function.
struct Translator<'a> {
    b: FunctionBuilder<'a>,
    module: &'a mut JITModule,
    prog: &'a Program,
    tables: &'a Tables,
    /// Declared in the module, in the order of `Helper::ALL`.
    helper_ids: Vec<FuncId>,
    /// Imported into the function on first use.
    helper_refs: [Option<FuncRef>; Helper::ALL.len()],
    tables_ptr: Value,
    fields: Value,
    out: Value,
    /// `Fields::present`, loaded once in the entry block (which dominates all).
    present: Value,
    /// The packet's family where the code being emitted runs (see [`Fam`]).
    fam: Fam,
    /// With `Fam::Any`: `interp::addr`'s two cases (IPv4, IPv6) as 0 or 1,
    /// computed once before the filter from `ip_version` and the IP4/IP6 bits.
    fam_vals: Option<(Value, Value)>,
    /// `present` bits known to be set where the code being emitted runs (ETH
    /// after the malformed check, the family's bit in a family's copy, and the
    /// needs of the conjuncts already passed in an `&&` chain): a need that
    /// includes one of them holds without a test.
    known: u32,
    /// Whether the filter is emitted once per family (see [`SPECIALIZE_MAX_NODES`]).
    specialize: bool,
    /// The block that stores a `balance` decision and its flow hash, with the
    /// decision's first two words as I64 parameters; created on first use.
    balance_exit: Option<Block>,
}

/// Which of `interp::addr`'s cases the packet is in, where known at compile
/// time: small filters are emitted once per family, so that an address test
/// becomes one compare (or a constant) and the family is tested once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    /// Not known: tested at run time (`is4`, `is6`).
    Any,
    V4,
    V6,
    /// Neither IPv4 nor IPv6.
    NoIp,
}

/// A condition known at compile time, or a 0/1 value computed at run time.
#[derive(Clone, Copy, Debug)]
enum Truth {
    Known(bool),
    Test(Value),
}

/// Filters whose inline rules have at most this many condition nodes are
/// emitted once per family (three copies; the one for packets without IP folds
/// almost every address test away); larger ones once, testing the family at run
/// time, so that compile time stays linear in the rules.
pub const SPECIALIZE_MAX_NODES: usize = 2_000;

/// A condition node's `need`, and the `present` bits that hold where its
/// condition held (for a node that always tests its need).
fn implied_bits(c: &Cond) -> u32 {
    let one = |n: u32| if n.is_power_of_two() { n } else { 0 };
    match &c.kind {
        CondKind::Int { need, .. }
        | CondKind::IntIn { need, .. }
        | CondKind::Flag { need, .. }
        | CondKind::AddrEq { need, .. }
        | CondKind::AddrIn { need, .. }
        | CondKind::IntFields { need, .. } => one(*need),
        CondKind::Bit { need, bit, expect } => one(*need) | if *expect { one(*bit) } else { 0 },
        _ => 0,
    }
}

impl<'a> Translator<'a> {
    fn new(
        mut b: FunctionBuilder<'a>,
        module: &'a mut JITModule,
        prog: &'a Program,
        tables: &'a Tables,
        helper_ids: Vec<FuncId>,
        specialize: bool,
    ) -> Result<Translator<'a>, String> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let &[tables_ptr, fields, out] = b.block_params(entry) else {
            return Err("the filter function must have three parameters".into());
        };
        let present = b.ins().load(types::I32, field_flags(), fields, OFF_PRESENT);
        if helper_ids.len() != Helper::ALL.len() {
            return Err("every helper must be declared".into());
        }
        Ok(Translator {
            b,
            module,
            prog,
            tables,
            helper_ids,
            helper_refs: [None; Helper::ALL.len()],
            tables_ptr,
            fields,
            out,
            present,
            fam: Fam::Any,
            fam_vals: None,
            known: present::ETH,
            specialize,
            balance_exit: None,
        })
    }

    /// The whole pipeline of `interp::decide`.
    fn translate_program(mut self) -> Result<(), String> {
        // Malformed, or no Ethernet header: drop before the filter.
        let first = self.b.create_block();
        let malformed = self.b.create_block();
        let m = self
            .b
            .ins()
            .band_imm_u(self.present, i64::from(present::MALFORMED | present::ETH));
        let ok = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, m, i64::from(present::ETH));
        self.b.ins().brif(ok, first, &[], malformed, &[]);
        self.b.switch_to_block(malformed);
        self.exit_const(A::Drop, 0, NO_RULE, stage::MALFORMED);

        self.b.switch_to_block(first);
        if self.specialize {
            // The family once, then the filter and the stages after it once per
            // family, each knowing it.
            let w4 = self.b.create_block();
            let w6 = self.b.create_block();
            let not4 = self.b.create_block();
            let w_none = self.b.create_block();
            let (is4, is6) = self.compute_family();
            self.b.ins().brif(is4, w4, &[], not4, &[]);
            self.b.switch_to_block(not4);
            self.b.ins().brif(is6, w6, &[], w_none, &[]);
            for (fam, block, bit) in [
                (Fam::V4, w4, present::IP4),
                (Fam::V6, w6, present::IP6),
                (Fam::NoIp, w_none, 0),
            ] {
                self.b.switch_to_block(block);
                self.fam = fam;
                self.known = present::ETH | bit;
                self.translate_filter_and_tail()?;
            }
        } else {
            let vals = self.compute_family();
            self.fam_vals = Some(vals);
            self.fam = Fam::Any;
            self.translate_filter_and_tail()?;
        }

        if let Some(block) = self.balance_exit {
            self.translate_balance_exit(block);
        }
        self.b.seal_all_blocks();
        let config = self.module.target_config();
        self.b.finalize(config);
        Ok(())
    }

    /// `interp::addr`'s two cases (IPv4, IPv6) as 0 or 1, from `ip_version` and
    /// the IP4/IP6 bits.
    fn compute_family(&mut self) -> (Value, Value) {
        let ver = self
            .b
            .ins()
            .uload8(types::I32, field_flags(), self.fields, OFF_IP_VERSION);
        let v4 = self.b.ins().icmp_imm_u(IntCC::Equal, ver, 4);
        let v6 = self.b.ins().icmp_imm_u(IntCC::Equal, ver, 6);
        let p4 = self.has(present::IP4);
        let p6 = self.has(present::IP6);
        let is4 = self.b.ins().band(v4, p4);
        let is6 = self.b.ins().band(v6, p6);
        (is4, is6)
    }

    /// The filter rules then the stages after them, from the current block, for
    /// packets of `self.fam`.
    fn translate_filter_and_tail(&mut self) -> Result<(), String> {
        // After the filter: a block with one I32 parameter, 1 to go through the
        // service and local stages, 0 (`forward`) to route at once.
        let after = self.b.create_block();
        let with_services = self.b.append_block_param(after, types::I32);
        let known = self.known;

        let tables: &'a Tables = self.tables;
        let cls = &tables.classifier;
        let mut cur = self.b.create_block();
        self.b.ins().jump(cur, &[]);
        if cls.groups.is_empty() {
            for (i, rule) in self.prog.rules.iter().enumerate() {
                self.b.switch_to_block(cur);
                let hit = self.b.create_block();
                let next = self.b.create_block();
                self.translate_cond(&rule.cond, hit, next, 0)?;
                self.b.switch_to_block(hit);
                self.translate_action(i as u32, rule.action, after);
                cur = next;
            }
            self.b.switch_to_block(cur);
            let one = self.b.ins().iconst(types::I32, 1);
            self.b.ins().jump(after, &[BlockArg::Value(one)]);
        } else {
            // The merged rules' answer first; then the inline rules in order,
            // each tested only while its index is below that answer.
            self.b.switch_to_block(cur);
            let best = self.translate_groups();
            let merged = self.b.create_block();
            cur = self.b.create_block();
            self.b.ins().jump(cur, &[]);
            for &i in &cls.inline {
                let Some(rule) = self.prog.rules.get(i as usize) else {
                    return Err(format!("no rule {i}"));
                };
                self.b.switch_to_block(cur);
                let test = self.b.create_block();
                let hit = self.b.create_block();
                let next = self.b.create_block();
                let later =
                    self.b
                        .ins()
                        .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, best, i64::from(i));
                self.b.ins().brif(later, merged, &[], test, &[]);
                self.b.switch_to_block(test);
                self.translate_cond(&rule.cond, hit, next, 0)?;
                self.b.switch_to_block(hit);
                self.translate_action(i, rule.action, after);
                cur = next;
            }
            self.b.switch_to_block(cur);
            self.b.ins().jump(merged, &[]);
            self.b.switch_to_block(merged);
            self.translate_merged(best, after);
        }
        self.known = known;

        self.b.switch_to_block(after);
        match self.fam {
            Fam::Any => self.translate_tail(with_services),
            Fam::V4 => self.family_tail(false, with_services),
            Fam::V6 => self.family_tail(true, with_services),
            Fam::NoIp => self.exit_const(A::Drop, 0, NO_RULE, stage::ROUTE),
        }
        Ok(())
    }

    /// The block every `balance` decision ends in: its first two words (the
    /// parameters), then the flow hash over the service's fields; or, for a
    /// packet that expires, `Expire` with the same target, rule and stage and
    /// no hash.
    fn translate_balance_exit(&mut self, block: Block) {
        self.b.switch_to_block(block);
        let p = self.b.block_params(block).to_vec();
        let &[w0, w1] = p.as_slice() else {
            return;
        };
        let expired = self.b.create_block();
        let live = self.b.create_block();
        let e = self.expires();
        self.b.ins().brif(e, expired, &[], live, &[]);
        self.b.switch_to_block(expired);
        let target = self.word_high(w0);
        let a = self.konst(types::I32, A::Expire as u64);
        let w0e = self.pair(a, target);
        self.exit_words(w0e, w1);

        self.b.switch_to_block(live);
        self.store_words(w0, w1);
        let all = self
            .prog
            .services
            .iter()
            .all(|s| s.hash_mask == lbp_abi::hash_field::ALL);
        let h = if all {
            self.flow_hash_5tuple()
        } else {
            let target = self.word_high(w0);
            self.call(Helper::FlowHash, &[self.fields, target])
        };
        self.b.ins().store(
            MemFlagsData::trusted(),
            h,
            self.out,
            offset_of!(Decision, hash) as i32,
        );
        self.b.ins().return_(&[]);
    }

    /// The merged groups, in order: for each, its needs and (for a group with
    /// exact fields) the key's hash and filter bit inline, exactly as
    /// `classify::Group::admit` computes them, and the helper only for packets
    /// the filter admits. Returns the lowest merged rule that holds, or
    /// `NO_RULE`.
    fn translate_groups(&mut self) -> Value {
        use crate::classify::{
            AtomField, FILTER_WORD_SHIFT, HASH_FINISH_MUL, HASH_MUL, HASH_ROT, HASH_SEED,
        };
        let tables: &'a Tables = self.tables;
        let mut best = self.konst(types::I32, u64::from(NO_RULE));
        for (gi, g) in tables.classifier.groups.iter().enumerate() {
            let (exact, needs, filter) = g.plan();
            let mut ok = Truth::Known(true);
            for &n in needs {
                let h = self.need_t(n);
                ok = self.t_and(ok, h);
            }
            if exact.iter().any(|(f, _)| matches!(f, AtomField::Addr(_))) {
                let fam = self.is_ip();
                ok = self.t_and(ok, fam);
            }
            if let Truth::Known(false) = ok {
                // No packet of this family can match the group.
                continue;
            }
            let probe = self.b.create_block();
            let next = self.b.create_block();
            let r = self.b.append_block_param(next, types::I32);
            match ok {
                Truth::Test(c) => {
                    self.b
                        .ins()
                        .brif(c, probe, &[], next, &[BlockArg::Value(best)]);
                }
                Truth::Known(_) => {
                    self.b.ins().jump(probe, &[]);
                }
            }
            self.b.switch_to_block(probe);
            let gidx = self.konst(types::I32, gi as u64);
            if exact.is_empty() || filter.is_empty() {
                let zero = self.b.ins().iconst(types::I64, 0);
                let r = self.call(Helper::Group, &[self.fields, gidx, zero, best]);
                self.b.ins().jump(next, &[BlockArg::Value(r)]);
            } else {
                let mix = |t: &mut Self, h: Value, w: Value| {
                    let x = t.b.ins().rotl_imm_u(h, i64::from(HASH_ROT));
                    let x = t.b.ins().bxor(x, w);
                    t.b.ins().imul_imm_s(x, HASH_MUL as i64)
                };
                let mut h = self.b.ins().iconst(types::I64, HASH_SEED as i64);
                for &(field, _) in exact {
                    let (lo, hi) = self.atom_words(field);
                    h = mix(self, h, lo);
                    h = mix(self, h, hi);
                }
                let s = self.b.ins().ushr_imm_u(h, 32);
                let x = self.b.ins().bxor(h, s);
                let x = self.b.ins().imul_imm_s(x, HASH_FINISH_MUL as i64);
                let s = self.b.ins().ushr_imm_u(x, 32);
                let h = self.b.ins().bxor(x, s);
                // The filter's word and bit.
                let idx = self.b.ins().ushr_imm_u(h, i64::from(FILTER_WORD_SHIFT));
                let idx = self
                    .b
                    .ins()
                    .band_imm_u(idx, (filter.len() as u64).wrapping_sub(1) as i64);
                let off = self.b.ins().ishl_imm_u(idx, 3);
                let base = self.b.ins().iconst(types::I64, filter.as_ptr() as i64);
                let addr = self.b.ins().iadd(base, off);
                // The generated code reads the filter at a constant address: a
                // Vec in the boxed `Tables`, never changed after compilation and
                // freed only with the code; `idx` is masked below its length, a
                // power of two, so the load stays inside it.
                let flags = MemFlagsData::new()
                    .with_notrap()
                    .with_readonly()
                    .with_aligned();
                let word = self.b.ins().load(types::I64, flags, addr, 0);
                let bit = self.b.ins().ushr(word, h);
                let bit = self.b.ins().band_imm_u(bit, 1);
                let call = self.b.create_block();
                self.b
                    .ins()
                    .brif(bit, call, &[], next, &[BlockArg::Value(best)]);
                self.b.switch_to_block(call);
                let r = self.call(Helper::Group, &[self.fields, gidx, h, best]);
                self.b.ins().jump(next, &[BlockArg::Value(r)]);
            }
            self.b.switch_to_block(next);
            best = r;
        }
        best
    }

    /// A field's value as `classify::value` gives it, as the two 64-bit words the
    /// key hash mixes: the low word, and the high word with the family tag in its
    /// top byte (tag 0 but for addresses). For an address the packet must be IPv4
    /// or IPv6 (the caller checked).
    fn atom_words(&mut self, field: crate::classify::AtomField) -> (Value, Value) {
        use crate::classify::AtomField;
        match field {
            AtomField::Int(k) => {
                let v = self.int_field(k.field());
                let zero = self.b.ins().iconst(types::I64, 0);
                (v, zero)
            }
            AtomField::Addr(src) => {
                let which = if src { AddrField::Src } else { AddrField::Dst };
                let off = addr_offset(which);
                // Only what the family needs is loaded (an unused load stays in
                // the code).
                let v4 = |t: &mut Self| {
                    let a4 = t.load_be32(off + 12);
                    let a4 = t.b.ins().uextend(types::I64, a4);
                    let tag4 = t.b.ins().iconst(types::I64, 4i64 << 56);
                    (a4, tag4)
                };
                let v6 = |t: &mut Self| {
                    let hi6 = t.load_be64(off);
                    let lo6 = t.load_be64(off + 8);
                    let tag6 = t.b.ins().iconst(types::I64, 6i64 << 56);
                    (lo6, t.b.ins().bxor(hi6, tag6))
                };
                match self.is_fam(false) {
                    Truth::Known(true) => v4(self),
                    Truth::Known(false) => v6(self),
                    Truth::Test(is4) => {
                        let (a4, tag4) = v4(self);
                        let (lo6, hi6) = v6(self);
                        let lo = self.b.ins().select(is4, a4, lo6);
                        let hi = self.b.ins().select(is4, tag4, hi6);
                        (lo, hi)
                    }
                }
            }
            AtomField::Mac(src) => {
                let which = if src { MacField::Src } else { MacField::Dst };
                let off = mac_offset(which);
                let a = self.load_be32(off);
                let a = self.b.ins().uextend(types::I64, a);
                let b = self
                    .b
                    .ins()
                    .uload16(types::I32, field_flags(), self.fields, off + 4);
                let b = if cfg!(target_endian = "little") {
                    let b16 = self.b.ins().ireduce(types::I16, b);
                    let b16 = self.b.ins().bswap(b16);
                    self.b.ins().uextend(types::I64, b16)
                } else {
                    self.b.ins().uextend(types::I64, b)
                };
                let a = self.b.ins().ishl_imm_u(a, 16);
                let v = self.b.ins().bor(a, b);
                let zero = self.b.ins().iconst(types::I64, 0);
                (v, zero)
            }
            AtomField::Flags(mask) => {
                let flags =
                    self.b
                        .ins()
                        .uload8(types::I32, field_flags(), self.fields, OFF_TCP_FLAGS);
                let m = self.b.ins().band_imm_u(flags, i64::from(mask));
                let v = self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0);
                let v = self.b.ins().uextend(types::I64, v);
                let zero = self.b.ins().iconst(types::I64, 0);
                (v, zero)
            }
            AtomField::Bit(bit) => {
                let m = self.b.ins().band_imm_u(self.present, i64::from(bit));
                let v = self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0);
                let v = self.b.ins().uextend(types::I64, v);
                let zero = self.b.ins().iconst(types::I64, 0);
                (v, zero)
            }
        }
    }

    /// After a merged rule decided (`best`, or `NO_RULE` when none did): its
    /// action, read from the rule codes.
    fn translate_merged(&mut self, best: Value, after: Block) {
        let none = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, best, i64::from(NO_RULE));
        let pass = self.b.create_block();
        let decided = self.b.create_block();
        let one = self.b.ins().iconst(types::I32, 1);
        self.b
            .ins()
            .brif(none, after, &[BlockArg::Value(one)], decided, &[]);
        self.b.switch_to_block(decided);
        let code = self.call(Helper::RuleCode, &[best]);
        let kind = self.b.ins().band_imm_u(code, 7);
        let is_pass = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, kind, i64::from(CODE_DROP));
        let stop = self.b.create_block();
        self.b.ins().brif(is_pass, pass, &[], stop, &[]);
        // accept (0) goes on to the services, forward (1) routes at once.
        self.b.switch_to_block(pass);
        let with_services = self.b.ins().bxor_imm_u(kind, 1);
        self.b.ins().jump(after, &[BlockArg::Value(with_services)]);

        self.b.switch_to_block(stop);
        let is_balance = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, kind, i64::from(CODE_BALANCE));
        let balance = self.b.create_block();
        let other = self.b.create_block();
        self.b.ins().brif(is_balance, balance, &[], other, &[]);
        self.b.switch_to_block(balance);
        let target = self.b.ins().ushr_imm_u(code, 3);
        let a = self.konst(types::I32, A::Balance as u64);
        let w0 = self.pair(a, target);
        let s = self.konst(types::I32, u64::from(stage::FILTER));
        let w1 = self.pair(best, s);
        self.exit_balance(w0, w1);

        self.b.switch_to_block(other);
        let is_reset = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, kind, i64::from(CODE_RESET));
        let is_local = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, kind, i64::from(CODE_LOCAL));
        let is_app = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, kind, i64::from(CODE_APP));
        let reset = self.reset_or_drop();
        let local = self.konst(types::I32, A::Local as u64);
        let app = self.konst(types::I32, A::App as u64);
        let drop = self.konst(types::I32, A::Drop as u64);
        let a = self.b.ins().select(is_local, local, drop);
        let a = self.b.ins().select(is_app, app, a);
        let a = self.b.ins().select(is_reset, reset, a);
        // The application's number for `app`, 0 for the others.
        let zero = self.konst(types::I32, 0);
        let app_target = self.b.ins().ushr_imm_u(code, 3);
        let target = self.b.ins().select(is_app, app_target, zero);
        let stage = self.konst(types::I32, u64::from(stage::FILTER));
        self.exit_with(a, target, best, stage);
    }

    /// The block of a rule whose condition held.
    fn translate_action(&mut self, i: u32, action: ir::Action, after: Block) {
        match action {
            ir::Action::Accept | ir::Action::Forward => {
                let services = u32::from(action == ir::Action::Accept);
                let v = self.b.ins().iconst(types::I32, i64::from(services));
                self.b.ins().jump(after, &[BlockArg::Value(v)]);
            }
            ir::Action::Drop => self.exit_const(A::Drop, 0, i, stage::FILTER),
            ir::Action::Local => self.exit_const(A::Local, 0, i, stage::FILTER),
            ir::Action::Balance(s) => self.exit_const(A::Balance, s, i, stage::FILTER),
            ir::Action::App(a) => self.exit_const(A::App, a, i, stage::FILTER),
            ir::Action::Reset => {
                let a = self.reset_or_drop();
                let t = self.b.ins().iconst(types::I32, 0);
                let r = self.b.ins().iconst(types::I32, i64::from(i));
                let s = self.b.ins().iconst(types::I32, i64::from(stage::FILTER));
                self.exit_with(a, t, r, s);
            }
        }
    }

    /// Steps 3 to 6, after the filter; `with_services` is 0 after `forward`.
    ///
    /// The packet's family is decided once; each family then has its own service,
    /// own-address and route stages, inlined as straight-line compares of the
    /// destination words loaded in the entry block when the family's table is
    /// small (at most [`INLINE_TAIL_MAX`] entries), else through a helper call.
    fn translate_tail(&mut self, with_services: Value) {
        let (is4, is6) = self.family();
        let some = self.b.ins().bor(is4, is6);
        let have = self.b.create_block();
        let not_ip = self.b.create_block();
        self.b.ins().brif(some, have, &[], not_ip, &[]);
        self.b.switch_to_block(not_ip);
        self.exit_const(A::Drop, 0, NO_RULE, stage::ROUTE);

        self.b.switch_to_block(have);
        let t4 = self.b.create_block();
        let t6 = self.b.create_block();
        // Here is4 || is6 holds: !is4 means IPv6.
        self.b.ins().brif(is4, t4, &[], t6, &[]);
        self.b.switch_to_block(t4);
        self.family_tail(false, with_services);
        self.b.switch_to_block(t6);
        self.family_tail(true, with_services);
    }

    /// The tail for packets of one family (`v6` or IPv4); ends the current block.
    fn family_tail(&mut self, v6: bool, with_services: Value) {
        let tables: &'a Tables = self.tables;
        let fam_of = |a: &Addr| matches!(a, Addr::V6(_)) == v6;
        let route = self.b.create_block();
        let services = self.b.create_block();
        self.b.ins().brif(with_services, services, &[], route, &[]);

        // Services (and virtual IPs without a matching entry).
        self.b.switch_to_block(services);
        let own = self.b.create_block();
        let vips: Vec<&(Addr, Vec<Entry>)> =
            tables.services.iter().filter(|(a, _)| fam_of(a)).collect();
        let n_entries: usize = vips.iter().map(|(_, es)| es.len()).sum();
        let n_ports: usize = vips
            .iter()
            .flat_map(|(_, es)| es.iter())
            .map(|e| e.ports.len())
            .sum();
        if vips.is_empty() {
            self.b.ins().jump(own, &[]);
        } else if n_entries <= INLINE_TAIL_MAX && n_ports <= 4 * INLINE_TAIL_MAX {
            let invalid = self.b.create_block();
            for (vip, entries) in vips {
                let hit = self.b.create_block();
                let next = self.b.create_block();
                let e = self.dst_eq(*vip);
                self.b.ins().brif(e, hit, &[], next, &[]);
                self.b.switch_to_block(hit);
                let check = self.b.create_block();
                let l4 = self.has(present::TCP | present::UDP);
                self.b.ins().brif(l4, check, &[], invalid, &[]);
                self.b.switch_to_block(check);
                let proto =
                    self.b
                        .ins()
                        .uload8(types::I32, field_flags(), self.fields, OFF_IP_PROTO);
                let dport = self
                    .b
                    .ins()
                    .uload16(types::I32, field_flags(), self.fields, OFF_DPORT);
                for en in entries {
                    let bal = self.b.create_block();
                    let nxt = self.b.create_block();
                    let p = self
                        .b
                        .ins()
                        .icmp_imm_u(IntCC::Equal, proto, i64::from(en.proto));
                    let m = self.any_range(
                        types::I32,
                        dport,
                        en.ports
                            .iter()
                            .map(|&(lo, hi)| (u64::from(lo), u64::from(hi))),
                    );
                    let m = self.b.ins().band(p, m);
                    self.b.ins().brif(m, bal, &[], nxt, &[]);
                    self.b.switch_to_block(bal);
                    self.exit_const(A::Balance, en.service, NO_RULE, stage::SERVICE);
                    self.b.switch_to_block(nxt);
                }
                self.b.ins().jump(invalid, &[]);
                self.b.switch_to_block(next);
            }
            self.b.ins().jump(own, &[]);
            self.b.switch_to_block(invalid);
            self.exit_invalid_entry();
        } else {
            let key = self.dst_key(v6);
            let l4 = self.has(present::TCP | present::UDP);
            let proto = self
                .b
                .ins()
                .uload8(types::I32, field_flags(), self.fields, OFF_IP_PROTO);
            let none = self.b.ins().iconst(types::I32, NO_L4);
            let proto = self.b.ins().select(l4, proto, none);
            let dport = self
                .b
                .ins()
                .uload16(types::I32, field_flags(), self.fields, OFF_DPORT);
            let r = self.call(Helper::Service, &[key.fam, key.hi, key.lo, proto, dport]);
            let balance = self.b.create_block();
            let not_svc = self.b.create_block();
            let is_svc =
                self.b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, r, i64::from(SVC_NO_ENTRY));
            self.b.ins().brif(is_svc, balance, &[], not_svc, &[]);

            self.b.switch_to_block(balance);
            let a = self.b.ins().iconst(types::I32, A::Balance as i64);
            let w0 = self.pair(a, r);
            let w1 = self.konst(types::I64, pair_const(NO_RULE, stage::SERVICE));
            self.exit_balance(w0, w1);

            self.b.switch_to_block(not_svc);
            let invalid = self.b.create_block();
            let is_vip = self
                .b
                .ins()
                .icmp_imm_u(IntCC::Equal, r, i64::from(SVC_NO_ENTRY));
            self.b.ins().brif(is_vip, invalid, &[], own, &[]);

            self.b.switch_to_block(invalid);
            self.exit_invalid_entry();
        }

        // Own addresses.
        self.b.switch_to_block(own);
        let owns: Vec<Addr> = tables.own.iter().copied().filter(|a| fam_of(a)).collect();
        if owns.is_empty() {
            self.b.ins().jump(route, &[]);
        } else {
            let r = if owns.len() <= INLINE_TAIL_MAX {
                let mut acc: Option<Value> = None;
                for a in owns {
                    let e = self.dst_eq(a);
                    acc = Some(match acc {
                        Some(x) => self.b.ins().bor(x, e),
                        None => e,
                    });
                }
                acc.unwrap_or_else(|| self.b.ins().iconst(types::I8, 0))
            } else {
                let key = self.dst_key(v6);
                self.call(Helper::Own, &[key.fam, key.hi, key.lo])
            };
            let local = self.b.create_block();
            self.b.ins().brif(r, local, &[], route, &[]);
            self.b.switch_to_block(local);
            self.exit_const(A::Local, 0, NO_RULE, stage::OWN_ADDRESS);
        }

        // Martian destinations are refused before any route.
        self.b.switch_to_block(route);
        self.martian_check(v6);

        // The longest matching route.
        let n_routes = if v6 {
            tables.routes6.iter().map(|g| g.nets.len()).sum::<usize>()
        } else {
            tables.routes4.iter().map(|g| g.nets.len()).sum::<usize>()
        };
        if n_routes == 0 {
            self.exit_const(A::Drop, 0, NO_RULE, stage::ROUTE);
            return;
        }
        let r = if n_routes <= INLINE_TAIL_MAX {
            // (match, route index) by rank: longest written prefix first, and in
            // a group the keys are distinct, so at most one of them matches.
            let mut ranked: Vec<(Option<Value>, u32)> = Vec::new();
            if v6 {
                for g in &tables.routes6 {
                    for &(key, idx) in &g.nets {
                        let m = self.dst_masked6(key, g.shift);
                        ranked.push((m, idx));
                    }
                }
            } else {
                for g in &tables.routes4 {
                    for &(key, idx) in &g.nets {
                        let m = self.dst_masked4(key, g.shift);
                        ranked.push((m, idx));
                    }
                }
            }
            // A select chain from the lowest rank up: the best match wins.
            let mut r = self.konst(types::I32, u64::from(NO_ROUTE));
            for (m, idx) in ranked.into_iter().rev() {
                let c = self.konst(types::I32, u64::from(idx));
                r = match m {
                    Some(m) => self.b.ins().select(m, c, r),
                    None => c,
                };
            }
            r
        } else {
            let key = self.dst_key(v6);
            self.call(Helper::Route, &[key.fam, key.hi, key.lo])
        };
        let none = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, r, i64::from(NO_ROUTE));
        let drop = self.b.ins().iconst(types::I32, A::Drop as i64);
        let fwd = self.b.ins().iconst(types::I32, A::Forward as i64);
        let expire = self.b.ins().iconst(types::I32, A::Expire as i64);
        let e = self.expires();
        let fwd = self.b.ins().select(e, expire, fwd);
        let a = self.b.ins().select(none, drop, fwd);
        let zero = self.b.ins().iconst(types::I32, 0);
        let t = self.b.ins().select(none, zero, r);
        let rule = self.konst(types::I32, u64::from(NO_RULE));
        let s = self.b.ins().iconst(types::I32, i64::from(stage::ROUTE));
        self.exit_with(a, t, rule, s);
    }

    /// Exit with `drop` at [`stage::MARTIAN`] when the destination (of the
    /// family `v6`, or IPv4) is martian ([`crate::interp::martian`]); else go on in a
    /// new current block. The fixed prefixes are masked compares; the
    /// directed broadcasts are compares too, or one helper call for the
    /// whole test when there are more than [`INLINE_TAIL_MAX`] of them.
    fn martian_check(&mut self, v6: bool) {
        let tables: &'a Tables = self.tables;
        let m = if !v6 && tables.broadcasts.len() > INLINE_TAIL_MAX {
            let key = self.dst_key(false);
            let r = self.call(Helper::Martian, &[key.fam, key.hi, key.lo]);
            self.b.ins().icmp_imm_u(IntCC::NotEqual, r, 0)
        } else {
            let mut tests: Vec<Option<Value>> = Vec::new();
            if v6 {
                for &(net, len, _) in &lbp_abi::martian::V6 {
                    let shift = 128 - u32::from(len);
                    tests.push(self.dst_masked6(net >> shift, shift));
                }
            } else {
                for &(net, len, _) in &lbp_abi::martian::V4 {
                    let shift = 32 - u32::from(len);
                    tests.push(self.dst_masked4(net >> shift, shift));
                }
                for &b in &tables.broadcasts {
                    tests.push(Some(self.dst_eq(Addr::V4(b))));
                }
            }
            let mut acc: Option<Value> = None;
            for t in tests.into_iter().flatten() {
                acc = Some(match acc {
                    Some(x) => self.b.ins().bor(x, t),
                    None => t,
                });
            }
            acc.unwrap_or_else(|| self.b.ins().iconst(types::I8, 0))
        };
        let refuse = self.b.create_block();
        let go_on = self.b.create_block();
        self.b.ins().brif(m, refuse, &[], go_on, &[]);
        self.b.switch_to_block(refuse);
        self.exit_const(A::Drop, 0, NO_RULE, stage::MARTIAN);
        self.b.switch_to_block(go_on);
    }

    fn exit_invalid_entry(&mut self) {
        let a = self.reset_or_drop();
        let t = self.b.ins().iconst(types::I32, 0);
        let rule = self.konst(types::I32, u64::from(NO_RULE));
        let s = self
            .b
            .ins()
            .iconst(types::I32, i64::from(stage::INVALID_ENTRY));
        self.exit_with(a, t, rule, s);
    }

    /// The destination equals `a` (of the family the caller knows it has), as 0
    /// or 1, compared on its native-order words.
    fn dst_eq(&mut self, a: Addr) -> Value {
        match a {
            Addr::V4(a) => {
                let c = u32::from_ne_bytes(a.to_be_bytes());
                let d = self.dst4();
                self.b.ins().icmp_imm_u(IntCC::Equal, d, i64::from(c))
            }
            Addr::V6(a) => {
                let (h, l) = ne_words(a);
                let (dh, dl) = self.dst_words();
                let c = self.konst(types::I64, h);
                let eh = self.b.ins().icmp(IntCC::Equal, dh, c);
                let c = self.konst(types::I64, l);
                let el = self.b.ins().icmp(IntCC::Equal, dl, c);
                self.b.ins().band(eh, el)
            }
        }
    }

    /// `dst >> shift == key` for an IPv4 destination, as a masked compare of the
    /// native-order word; `None` when it always holds (shift 32).
    fn dst_masked4(&mut self, key: u32, shift: u32) -> Option<Value> {
        if shift >= 32 {
            return None;
        }
        let mask = u32::MAX << shift;
        let net = key << shift;
        let m = u32::from_ne_bytes(mask.to_be_bytes());
        let n = u32::from_ne_bytes(net.to_be_bytes());
        let d = self.dst4();
        let x = if mask == u32::MAX {
            d
        } else {
            self.b.ins().band_imm_u(d, i64::from(m))
        };
        Some(self.b.ins().icmp_imm_u(IntCC::Equal, x, i64::from(n)))
    }

    /// `dst >> shift == key` for an IPv6 destination; `None` when it always holds.
    fn dst_masked6(&mut self, key: u128, shift: u32) -> Option<Value> {
        if shift >= 128 {
            return None;
        }
        let mask = u128::MAX << shift;
        let net = key << shift;
        let (mh, ml) = ne_words(mask);
        let (nh, nl) = ne_words(net);
        let mut acc: Option<Value> = None;
        let (dh, dl) = self.dst_words();
        for (w, m, n) in [(dh, mh, nh), (dl, ml, nl)] {
            if m == 0 {
                continue;
            }
            let x = if m == u64::MAX {
                w
            } else {
                let mc = self.konst(types::I64, m);
                self.b.ins().band(w, mc)
            };
            let nc = self.konst(types::I64, n);
            let e = self.b.ins().icmp(IntCC::Equal, x, nc);
            acc = Some(match acc {
                Some(a) => self.b.ins().band(a, e),
                None => e,
            });
        }
        acc
    }

    /// The destination as a helper receives it, for a packet known to be of the
    /// family `v6` (or IPv4).
    fn dst_key(&mut self, v6: bool) -> AddrKey {
        self.addr_key(AddrField::Dst, Some(v6))
    }

    /// Branch to `t` if the condition holds, else to `f`; ends the current block.
    fn translate_cond(&mut self, c: &Cond, t: Block, f: Block, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("condition nested too deeply".into());
        }
        match &c.kind {
            CondKind::Const(v) => {
                self.b.ins().jump(if *v { t } else { f }, &[]);
            }
            CondKind::Not(x) => self.translate_cond(x, f, t, depth + 1)?,
            CondKind::And(xs) => self.translate_chain(xs, true, t, f, depth)?,
            CondKind::Or(xs) => self.translate_chain(xs, false, t, f, depth)?,
            CondKind::Int {
                need,
                field,
                op,
                value,
            } => {
                self.guard_need(*need, f);
                let x = self.int_field(*field);
                let v = self.konst(types::I64, *value);
                let r = self.b.ins().icmp(cc(*op), x, v);
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::IntFields { need, a, op, b } => {
                self.guard_need(*need, f);
                let x = self.int_field(*a);
                let y = self.int_field(*b);
                let r = self.b.ins().icmp(cc(*op), x, y);
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::Flag { need, mask, expect } => {
                self.guard_need(*need, f);
                let fl = self
                    .b
                    .ins()
                    .uload8(types::I32, field_flags(), self.fields, OFF_TCP_FLAGS);
                let r = self.bit_test(fl, u32::from(*mask), *expect);
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::Bit { need, bit, expect } => {
                self.guard_need(*need, f);
                let r = self.bit_test(self.present, *bit, *expect);
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::AddrEq {
                need,
                field,
                addr,
                eq,
            } => self.translate_addr_eq(*need, *field, *addr, *eq, t, f),
            CondKind::AddrFields { eq } => self.translate_addr_fields(*eq, t, f),
            CondKind::MacEq { field, mac, eq } => {
                // `has(ETH)` always holds here: the malformed check let only
                // packets with an Ethernet header through.
                let r = self.mac_eq(*field, *mac);
                let r = if *eq {
                    r
                } else {
                    self.b.ins().bxor_imm_u(r, 1)
                };
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::MacFields { eq } => {
                let (s32, s16) = self.mac_words(MacField::Src);
                let (d32, d16) = self.mac_words(MacField::Dst);
                let a = self.b.ins().icmp(IntCC::Equal, s32, d32);
                let b = self.b.ins().icmp(IntCC::Equal, s16, d16);
                let r = self.b.ins().band(a, b);
                let r = if *eq {
                    r
                } else {
                    self.b.ins().bxor_imm_u(r, 1)
                };
                self.b.ins().brif(r, t, &[], f, &[]);
            }
            CondKind::IntIn { need, field, set } => {
                self.translate_int_in(*need, *field, *set, t, f)?
            }
            CondKind::AddrIn { need, field, set } => {
                self.translate_addr_in(*need, *field, *set, t, f)?
            }
            CondKind::MacIn { field, set } => self.translate_mac_in(*field, *set, t, f)?,
        }
        Ok(())
    }

    /// `&&` (`all`) or `||` chains, short-circuit.
    fn translate_chain(
        &mut self,
        xs: &[Cond],
        all: bool,
        t: Block,
        f: Block,
        depth: u32,
    ) -> Result<(), String> {
        if xs.is_empty() {
            self.b.ins().jump(if all { t } else { f }, &[]);
            return Ok(());
        }
        // In an `&&` chain, the block after a conjunct is reached only when it
        // held: its needs are known there. Adjacent tests of single TCP flags
        // with one need are one compare of the flags byte (one branch: for
        // `tcp.syn && tcp.fin` the first test alone is unpredictable).
        let known = self.known;
        let mut i = 0;
        while i < xs.len() {
            let mut flags = None;
            if all {
                let mut j = i;
                let (mut set, mut clear, mut need0) = (0u8, 0u8, None);
                while let Some(CondKind::Flag { need, mask, expect }) = xs.get(j).map(|x| &x.kind) {
                    if !mask.is_power_of_two() || need0.is_some_and(|n| n != *need) {
                        break;
                    }
                    need0 = Some(*need);
                    if *expect {
                        set |= mask;
                    } else {
                        clear |= mask;
                    }
                    j += 1;
                }
                if j >= i + 2
                    && let Some(need) = need0
                {
                    flags = Some((j, need, set, clear));
                }
            }
            let end = flags.map_or(i + 1, |(j, ..)| j);
            let next = if end == xs.len() {
                t
            } else {
                self.b.create_block()
            };
            match flags {
                Some((_, need, set, clear)) => {
                    self.guard_need(need, f);
                    let fl =
                        self.b
                            .ins()
                            .uload8(types::I32, field_flags(), self.fields, OFF_TCP_FLAGS);
                    let m = self.b.ins().band_imm_u(fl, i64::from(set | clear));
                    // A bit both set and clear: never (`set` has a bit the
                    // masked byte cannot equal).
                    let want = if set & clear != 0 {
                        0x100
                    } else {
                        i64::from(set)
                    };
                    let r = self.b.ins().icmp_imm_u(IntCC::Equal, m, want);
                    self.b.ins().brif(r, next, &[], f, &[]);
                }
                None => {
                    let x = &xs[i];
                    if !all {
                        let next = if end == xs.len() { f } else { next };
                        self.translate_cond(x, t, next, depth + 1)?;
                    } else {
                        self.translate_cond(x, next, f, depth + 1)?;
                    }
                }
            }
            if end < xs.len() {
                self.b.switch_to_block(next);
                if all {
                    for x in &xs[i..end] {
                        self.known |= implied_bits(x);
                    }
                }
            }
            i = end;
        }
        self.known = known;
        Ok(())
    }

    fn translate_addr_eq(
        &mut self,
        need: u32,
        field: AddrField,
        addr: Addr,
        eq: bool,
        t: Block,
        f: Block,
    ) {
        let off = addr_offset(field);
        let v6 = matches!(addr, Addr::V6(_));
        let fam = self.is_fam(v6);
        let same = match fam {
            Truth::Known(false) => Truth::Known(false),
            _ => {
                let e = match (addr, field) {
                    (_, AddrField::Dst) => self.dst_eq(addr),
                    (Addr::V4(a), AddrField::Src) => {
                        let x = self.load(types::I32, off + 12);
                        let c = u32::from_ne_bytes(a.to_be_bytes());
                        let c = self.konst(types::I32, u64::from(c));
                        self.b.ins().icmp(IntCC::Equal, x, c)
                    }
                    (Addr::V6(a), AddrField::Src) => self.eq128_const(off, a),
                };
                self.t_and(fam, Truth::Test(e))
            }
        };
        let r = if eq {
            // Equal implies the packet has an address of the literal's family.
            same
        } else {
            let some = self.is_ip();
            let ne = self.t_not(same);
            self.t_and(some, ne)
        };
        let n = self.need_t(need);
        let r = self.t_and(n, r);
        self.branch_t(r, t, f);
    }

    fn translate_addr_fields(&mut self, eq: bool, t: Block, f: Block) {
        let (s, d) = (addr_offset(AddrField::Src), addr_offset(AddrField::Dst));
        let eq4 = |me: &mut Self| {
            let s4 = me.load(types::I32, s + 12);
            let d4 = me.load(types::I32, d + 12);
            me.b.ins().icmp(IntCC::Equal, s4, d4)
        };
        let eq6 = |me: &mut Self| {
            let sh = me.load(types::I64, s);
            let dh = me.load(types::I64, d);
            let sl = me.load(types::I64, s + 8);
            let dl = me.load(types::I64, d + 8);
            let eh = me.b.ins().icmp(IntCC::Equal, sh, dh);
            let el = me.b.ins().icmp(IntCC::Equal, sl, dl);
            me.b.ins().band(eh, el)
        };
        let same = match self.fam {
            Fam::NoIp => {
                // Neither `==` nor `!=` holds without an address.
                self.b.ins().jump(f, &[]);
                return;
            }
            Fam::V4 => eq4(self),
            Fam::V6 => eq6(self),
            Fam::Any => {
                let (is4, _) = self.family();
                let e4 = eq4(self);
                let e6 = eq6(self);
                self.b.ins().select(is4, e4, e6)
            }
        };
        let same = if eq {
            same
        } else {
            self.b.ins().bxor_imm_u(same, 1)
        };
        let some = self.is_ip();
        let r = self.t_and(some, Truth::Test(same));
        self.branch_t(r, t, f);
    }

    fn translate_int_in(
        &mut self,
        need: u32,
        field: IntField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), String> {
        let ranges = match self.set(set)? {
            SetTable::Int(r) => r,
            _ => {
                self.b.ins().jump(f, &[]);
                return Ok(());
            }
        };
        if ranges.len() <= INLINE_MAX {
            self.guard_need(need, f);
            let x = self.int_field(field);
            let r = self.any_range(types::I64, x, ranges.iter().map(|&(lo, hi)| (lo, hi)));
            self.b.ins().brif(r, t, &[], f, &[]);
        } else {
            self.guard_need(need, f);
            let x = self.int_field(field);
            let s = self.b.ins().iconst(types::I32, i64::from(set));
            let r = self.call(Helper::IntIn, &[s, x]);
            self.b.ins().brif(r, t, &[], f, &[]);
        }
        Ok(())
    }

    fn translate_addr_in(
        &mut self,
        need: u32,
        field: AddrField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), String> {
        let (v4, v6) = match self.set(set)? {
            SetTable::Prefix { v4, v6 } => (v4, v6),
            _ => {
                self.b.ins().jump(f, &[]);
                return Ok(());
            }
        };
        match self.fam {
            Fam::Any => {}
            Fam::NoIp => {
                self.b.ins().jump(f, &[]);
                return Ok(());
            }
            Fam::V4 | Fam::V6 => {
                // One family: only its ranges.
                let is6 = self.fam == Fam::V6;
                let n = if is6 { v6.len() } else { v4.len() };
                if n == 0 {
                    self.b.ins().jump(f, &[]);
                } else if n <= INLINE_MAX {
                    self.guard_need(need, f);
                    let off = addr_offset(field);
                    let m = if is6 {
                        self.in_v6_ranges(off, v6)
                    } else {
                        self.in_v4_ranges(off, v4)
                    };
                    self.b.ins().brif(m, t, &[], f, &[]);
                } else {
                    self.guard_need(need, f);
                    let key = self.addr_key(field, Some(is6));
                    let s = self.b.ins().iconst(types::I32, i64::from(set));
                    let r = self.call(Helper::AddrIn, &[s, key.fam, key.hi, key.lo]);
                    self.b.ins().brif(r, t, &[], f, &[]);
                }
                return Ok(());
            }
        }
        let (is4, is6) = self.family();
        if v4.len() <= INLINE_MAX && v6.len() <= INLINE_MAX && !v4.is_empty() && !v6.is_empty() {
            // Both families: decide the family first, so that an IPv4 packet
            // never pays for the 128-bit compares.
            let off = addr_offset(field);
            self.guard_need(need, f);
            let b4 = self.b.create_block();
            let not4 = self.b.create_block();
            let b6 = self.b.create_block();
            self.b.ins().brif(is4, b4, &[], not4, &[]);
            self.b.switch_to_block(b4);
            let m = self.in_v4_ranges(off, v4);
            self.b.ins().brif(m, t, &[], f, &[]);
            self.b.switch_to_block(not4);
            self.b.ins().brif(is6, b6, &[], f, &[]);
            self.b.switch_to_block(b6);
            let m = self.in_v6_ranges(off, v6);
            self.b.ins().brif(m, t, &[], f, &[]);
        } else if v4.len() <= INLINE_MAX && v6.len() <= INLINE_MAX {
            let off = addr_offset(field);
            let m4 = if v4.is_empty() {
                None
            } else {
                let m = self.in_v4_ranges(off, v4);
                Some(self.b.ins().band(is4, m))
            };
            let m6 = if v6.is_empty() {
                None
            } else {
                let m = self.in_v6_ranges(off, v6);
                Some(self.b.ins().band(is6, m))
            };
            let r = match (m4, m6) {
                (Some(a), Some(b)) => self.b.ins().bor(a, b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => {
                    self.b.ins().jump(f, &[]);
                    return Ok(());
                }
            };
            self.branch_need(need, r, t, f);
        } else {
            let some = self.b.ins().bor(is4, is6);
            let g = self.and_need(need, some);
            let call = self.b.create_block();
            self.b.ins().brif(g, call, &[], f, &[]);
            self.b.switch_to_block(call);
            let key = self.addr_key(field, None);
            let s = self.b.ins().iconst(types::I32, i64::from(set));
            let r = self.call(Helper::AddrIn, &[s, key.fam, key.hi, key.lo]);
            self.b.ins().brif(r, t, &[], f, &[]);
        }
        Ok(())
    }

    /// Whether the IPv4 address at `off` (the low word of the mapped field) is in
    /// one of `ranges` (not empty), as 0 or 1.
    fn in_v4_ranges(&mut self, off: i32, ranges: &[(u32, u32)]) -> Value {
        let x = self.load_be32(off + 12);
        self.any_range(
            types::I32,
            x,
            ranges
                .iter()
                .map(|&(lo, hi)| (u64::from(lo), u64::from(hi))),
        )
    }

    /// Whether the IPv6 address at `off` is in one of `ranges` (not empty), as 0
    /// or 1.
    fn in_v6_ranges(&mut self, off: i32, ranges: &[(u128, u128)]) -> Value {
        let hi = self.load_be64(off);
        if ranges
            .iter()
            .all(|&(lo, hi)| lo as u64 == 0 && hi as u64 == u64::MAX)
        {
            // Prefixes of at most 64 bits: the upper word decides.
            let words = ranges
                .iter()
                .map(|&(lo, h)| ((lo >> 64) as u64, (h >> 64) as u64));
            return self.any_range(types::I64, hi, words);
        }
        let lo = self.load_be64(off + 8);
        let x = self.b.ins().iconcat(lo, hi);
        let mut acc = self.b.ins().iconst(types::I8, 0);
        for &(lo, hi) in ranges {
            let m = self.in_range128(x, lo, hi);
            acc = self.b.ins().bor(acc, m);
        }
        acc
    }

    fn translate_mac_in(
        &mut self,
        field: MacField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), String> {
        let keys = match self.set(set)? {
            SetTable::Mac(k) if !k.is_empty() => k,
            _ => {
                self.b.ins().jump(f, &[]);
                return Ok(());
            }
        };
        // `has(ETH)` holds (see `MacEq`).
        let (w32, w16) = self.mac_words(field);
        let lo = self.b.ins().uextend(types::I64, w32);
        let hi = self.b.ins().uextend(types::I64, w16);
        let hi = self.b.ins().ishl_imm_u(hi, 32);
        let x = self.b.ins().bor(lo, hi);
        if keys.len() <= INLINE_MAX {
            let r = self.any_range(types::I64, x, keys.iter().map(|&k| (k, k)));
            self.b.ins().brif(r, t, &[], f, &[]);
        } else {
            let s = self.b.ins().iconst(types::I32, i64::from(set));
            let r = self.call(Helper::MacIn, &[s, x]);
            self.b.ins().brif(r, t, &[], f, &[]);
        }
        Ok(())
    }

    // --- small pieces -----------------------------------------------------

    fn set(&self, id: SetId) -> Result<&'a SetTable, String> {
        let tables: &'a Tables = self.tables;
        tables
            .sets
            .get(id as usize)
            .ok_or_else(|| format!("set {id} does not exist"))
    }

    /// An integer constant of type `ty`, zero-extended as Cranelift wants it.
    fn konst(&mut self, ty: Type, v: u64) -> Value {
        let v = match ty.bits() {
            8 => v & 0xff,
            16 => v & 0xffff,
            32 => v & 0xffff_ffff,
            _ => v,
        };
        self.b.ins().iconst(ty, v as i64)
    }

    fn load(&mut self, ty: Type, off: i32) -> Value {
        self.b.ins().load(ty, field_flags(), self.fields, off)
    }

    /// The big-endian `u32` at `off` (the IPv4 address in a mapped field).
    fn load_be32(&mut self, off: i32) -> Value {
        let x = self.load(types::I32, off);
        if cfg!(target_endian = "little") {
            self.b.ins().bswap(x)
        } else {
            x
        }
    }

    /// `lbp_abi::flow_hash(fields, hash_field::ALL)`, inline: the same mixing, in
    /// the same order, with the same constants (the differential tests compare
    /// the two on every balanced packet).
    fn flow_hash_5tuple(&mut self) -> Value {
        const K: i64 = 0x9e37_79b9_7f4a_7c15_u64 as i64;
        let mut h = self.b.ins().iconst(types::I64, 0x6c62_7020_666c_6f77);
        let mix = |t: &mut Self, h: Value, w: Value| {
            let r = t.b.ins().rotl_imm_u(h, 27);
            let x = t.b.ins().bxor(r, w);
            t.b.ins().imul_imm_s(x, K)
        };
        for field in [AddrField::Src, AddrField::Dst] {
            let off = addr_offset(field);
            let a = self.load_be64(off);
            let b = self.load_be64(off + 8);
            h = mix(self, h, a);
            h = mix(self, h, b);
        }
        let proto = self
            .b
            .ins()
            .uload8(types::I64, field_flags(), self.fields, OFF_IP_PROTO);
        let sport = self.b.ins().uload16(
            types::I64,
            field_flags(),
            self.fields,
            offset_of!(Fields, sport) as i32,
        );
        let dport = self
            .b
            .ins()
            .uload16(types::I64, field_flags(), self.fields, OFF_DPORT);
        let proto = self.b.ins().ishl_imm_u(proto, 32);
        let sport = self.b.ins().ishl_imm_u(sport, 16);
        let w = self.b.ins().bor(proto, sport);
        let w = self.b.ins().bor(w, dport);
        h = mix(self, h, w);
        for k in [
            0xff51_afd7_ed55_8ccd_u64 as i64,
            0xc4ce_b9fe_1a85_ec53_u64 as i64,
        ] {
            let s = self.b.ins().ushr_imm_u(h, 33);
            h = self.b.ins().bxor(h, s);
            h = self.b.ins().imul_imm_s(h, k);
        }
        let s = self.b.ins().ushr_imm_u(h, 33);
        h = self.b.ins().bxor(h, s);
        self.b.ins().ireduce(types::I32, h)
    }

    fn load_be64(&mut self, off: i32) -> Value {
        let x = self.load(types::I64, off);
        if cfg!(target_endian = "little") {
            self.b.ins().bswap(x)
        } else {
            x
        }
    }

    /// An integer field, zero-extended to I64 (as `interp::int_field`).
    fn int_field(&mut self, field: IntField) -> Value {
        let (off, width) = int_offset(field);
        let fl = field_flags();
        match width {
            1 => self.b.ins().uload8(types::I64, fl, self.fields, off),
            2 => self.b.ins().uload16(types::I64, fl, self.fields, off),
            _ => self.b.ins().uload32(fl, self.fields, off),
        }
    }

    /// `(x & mask != 0) == expect`, as 0 or 1.
    fn bit_test(&mut self, x: Value, mask: u32, expect: bool) -> Value {
        let m = self.b.ins().band_imm_u(x, i64::from(mask));
        let c = if expect {
            IntCC::NotEqual
        } else {
            IntCC::Equal
        };
        self.b.ins().icmp_imm_u(c, m, 0)
    }

    /// `present & need != 0` (`interp::has`), or `None` when it is known to hold
    /// (`need` is 0, or includes a bit of `self.known`).
    fn need(&mut self, need: u32) -> Option<Value> {
        (need != 0 && need & self.known == 0).then(|| self.has(need))
    }

    fn has(&mut self, bits: u32) -> Value {
        let m = self.b.ins().band_imm_u(self.present, i64::from(bits));
        self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0)
    }

    /// Whether `need` holds (`need` 0: always), known without a test where
    /// `self.known` says so.
    fn need_t(&mut self, need: u32) -> Truth {
        match self.need(need) {
            Some(v) => Truth::Test(v),
            None => Truth::Known(true),
        }
    }

    fn and_need(&mut self, need: u32, v: Value) -> Value {
        match self.need(need) {
            Some(h) => self.b.ins().band(h, v),
            None => v,
        }
    }

    fn branch_need(&mut self, need: u32, v: Value, t: Block, f: Block) {
        let r = self.and_need(need, v);
        self.b.ins().brif(r, t, &[], f, &[]);
    }

    /// Go on in a new block only if `need` holds, else to `f`.
    fn guard_need(&mut self, need: u32, f: Block) {
        if let Some(h) = self.need(need) {
            let next = self.b.create_block();
            self.b.ins().brif(h, next, &[], f, &[]);
            self.b.switch_to_block(next);
        }
    }

    /// (is4, is6): which of `interp::addr`'s cases applies, as 0 or 1 values
    /// (for code emitted with `Fam::Any`; computed once before the filter).
    fn family(&mut self) -> (Value, Value) {
        match self.fam {
            Fam::Any => {}
            Fam::V4 | Fam::V6 | Fam::NoIp => {
                let one = self.b.ins().iconst(types::I8, 1);
                let zero = self.b.ins().iconst(types::I8, 0);
                return match self.fam {
                    Fam::V4 => (one, zero),
                    Fam::V6 => (zero, one),
                    _ => (zero, zero),
                };
            }
        }
        match self.fam_vals {
            Some(v) => v,
            None => self.compute_family(),
        }
    }

    /// Whether the packet is IPv6 (`v6`) or IPv4.
    fn is_fam(&mut self, v6: bool) -> Truth {
        match self.fam {
            Fam::Any => {
                let (is4, is6) = self.family();
                Truth::Test(if v6 { is6 } else { is4 })
            }
            Fam::V4 => Truth::Known(!v6),
            Fam::V6 => Truth::Known(v6),
            Fam::NoIp => Truth::Known(false),
        }
    }

    /// Whether the packet is IPv4 or IPv6.
    fn is_ip(&mut self) -> Truth {
        match self.fam {
            Fam::Any => {
                let (is4, is6) = self.family();
                Truth::Test(self.b.ins().bor(is4, is6))
            }
            Fam::V4 | Fam::V6 => Truth::Known(true),
            Fam::NoIp => Truth::Known(false),
        }
    }

    fn t_and(&mut self, a: Truth, b: Truth) -> Truth {
        match (a, b) {
            (Truth::Known(false), _) | (_, Truth::Known(false)) => Truth::Known(false),
            (Truth::Known(true), x) | (x, Truth::Known(true)) => x,
            (Truth::Test(x), Truth::Test(y)) => Truth::Test(self.b.ins().band(x, y)),
        }
    }

    fn t_not(&mut self, a: Truth) -> Truth {
        match a {
            Truth::Known(k) => Truth::Known(!k),
            Truth::Test(x) => Truth::Test(self.b.ins().bxor_imm_u(x, 1)),
        }
    }

    /// Ends the current block: to `t` if `c` holds, else to `f`.
    fn branch_t(&mut self, c: Truth, t: Block, f: Block) {
        match c {
            Truth::Known(k) => {
                self.b.ins().jump(if k { t } else { f }, &[]);
            }
            Truth::Test(v) => {
                self.b.ins().brif(v, t, &[], f, &[]);
            }
        }
    }

    /// The destination's IPv4 word (bytes 12..16) in native order. Loaded where
    /// used (a load is cheaper than a register held across the filter).
    fn dst4(&mut self) -> Value {
        self.load(types::I32, addr_offset(AddrField::Dst) + 12)
    }

    /// The destination's two IPv6 words (bytes 0..8, 8..16) in native order.
    fn dst_words(&mut self) -> (Value, Value) {
        let off = addr_offset(AddrField::Dst);
        (self.load(types::I64, off), self.load(types::I64, off + 8))
    }

    /// The packet's address for a helper, for a packet of the family `v6` (or
    /// IPv4), or with `None` of the family `is4` says (IPv6 when it is 0).
    fn addr_key(&mut self, field: AddrField, v6: Option<bool>) -> AddrKey {
        let off = addr_offset(field);
        match v6 {
            Some(false) => {
                let a4 = self.load_be32(off + 12);
                AddrKey {
                    fam: self.b.ins().iconst(types::I32, 4),
                    hi: self.b.ins().iconst(types::I64, 0),
                    lo: self.b.ins().uextend(types::I64, a4),
                }
            }
            Some(true) => AddrKey {
                fam: self.b.ins().iconst(types::I32, 6),
                hi: self.load_be64(off),
                lo: self.load_be64(off + 8),
            },
            None => {
                let (is4, _) = self.family();
                let a4 = self.load_be32(off + 12);
                let a4 = self.b.ins().uextend(types::I64, a4);
                let hi6 = self.load_be64(off);
                let lo6 = self.load_be64(off + 8);
                let four = self.b.ins().iconst(types::I32, 4);
                let six = self.b.ins().iconst(types::I32, 6);
                let zero = self.b.ins().iconst(types::I64, 0);
                AddrKey {
                    fam: self.b.ins().select(is4, four, six),
                    hi: self.b.ins().select(is4, zero, hi6),
                    lo: self.b.ins().select(is4, a4, lo6),
                }
            }
        }
    }

    /// The 16 bytes at `off` equal `a` (big-endian), as two 64-bit compares.
    fn eq128_const(&mut self, off: i32, a: u128) -> Value {
        let bytes = a.to_be_bytes();
        let mut h = [0u8; 8];
        let mut l = [0u8; 8];
        h.copy_from_slice(&bytes[..8]);
        l.copy_from_slice(&bytes[8..]);
        let xh = self.load(types::I64, off);
        let xl = self.load(types::I64, off + 8);
        let ch = self.konst(types::I64, u64::from_ne_bytes(h));
        let cl = self.konst(types::I64, u64::from_ne_bytes(l));
        let eh = self.b.ins().icmp(IntCC::Equal, xh, ch);
        let el = self.b.ins().icmp(IntCC::Equal, xl, cl);
        self.b.ins().band(eh, el)
    }

    /// A MAC field as a native u32 (bytes 0..4) and u16 (bytes 4..6), in I32s.
    fn mac_words(&mut self, field: MacField) -> (Value, Value) {
        let off = mac_offset(field);
        let w32 = self.load(types::I32, off);
        let w16 = self
            .b
            .ins()
            .uload16(types::I32, field_flags(), self.fields, off + 4);
        (w32, w16)
    }

    fn mac_eq(&mut self, field: MacField, m: [u8; 6]) -> Value {
        let (w32, w16) = self.mac_words(field);
        let c32 = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
        let c16 = u16::from_ne_bytes([m[4], m[5]]);
        let c32 = self.konst(types::I32, u64::from(c32));
        let c16 = self.konst(types::I32, u64::from(c16));
        let a = self.b.ins().icmp(IntCC::Equal, w32, c32);
        let b = self.b.ins().icmp(IntCC::Equal, w16, c16);
        self.b.ins().band(a, b)
    }

    /// Whether `x` (of type `ty`) lies in any of the inclusive ranges, as 0 or 1.
    fn any_range(&mut self, ty: Type, x: Value, ranges: impl Iterator<Item = (u64, u64)>) -> Value {
        let max = match ty.bits() {
            32 => u64::from(u32::MAX),
            _ => u64::MAX,
        };
        let mut acc: Option<Value> = None;
        for (lo, hi) in ranges {
            let m = if lo > hi {
                self.b.ins().iconst(types::I8, 0)
            } else if lo == hi {
                let c = self.konst(ty, lo);
                self.b.ins().icmp(IntCC::Equal, x, c)
            } else if lo == 0 && hi >= max {
                self.b.ins().iconst(types::I8, 1)
            } else if lo == 0 {
                let c = self.konst(ty, hi);
                self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, x, c)
            } else if hi >= max {
                let c = self.konst(ty, lo);
                self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, x, c)
            } else {
                // lo <= x <= hi as one unsigned compare: x - lo <= hi - lo.
                let l = self.konst(ty, lo);
                let d = self.b.ins().isub(x, l);
                let w = self.konst(ty, hi - lo);
                self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, d, w)
            };
            acc = Some(match acc {
                Some(a) => self.b.ins().bor(a, m),
                None => m,
            });
        }
        match acc {
            Some(a) => a,
            None => self.b.ins().iconst(types::I8, 0),
        }
    }

    fn const128(&mut self, v: u128) -> Value {
        let lo = self.konst(types::I64, v as u64);
        let hi = self.konst(types::I64, (v >> 64) as u64);
        self.b.ins().iconcat(lo, hi)
    }

    fn in_range128(&mut self, x: Value, lo: u128, hi: u128) -> Value {
        if lo > hi {
            return self.b.ins().iconst(types::I8, 0);
        }
        if lo == hi {
            let c = self.const128(lo);
            return self.b.ins().icmp(IntCC::Equal, x, c);
        }
        // lo <= x <= hi as one unsigned compare: x - lo <= hi - lo.
        let l = self.const128(lo);
        let d = self.b.ins().isub(x, l);
        let w = self.const128(hi.wrapping_sub(lo));
        self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, d, w)
    }

    /// `lbp_abi::expires`: the TTL (hop limit) is 1 or 0.
    fn expires(&mut self) -> Value {
        let ttl = self
            .b
            .ins()
            .uload8(types::I32, field_flags(), self.fields, OFF_IP_TTL);
        self.b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, ttl, 1)
    }

    /// `interp::reset_or_drop`: Reset for a TCP packet that is no RST, else Drop.
    fn reset_or_drop(&mut self) -> Value {
        let fl = self
            .b
            .ins()
            .uload8(types::I32, field_flags(), self.fields, OFF_TCP_FLAGS);
        let no_rst = self.bit_test(fl, u32::from(tcp_flag::RST), false);
        let c = self.and_need(present::TCP, no_rst);
        let reset = self.b.ins().iconst(types::I32, A::Reset as i64);
        let drop = self.b.ins().iconst(types::I32, A::Drop as i64);
        self.b.ins().select(c, reset, drop)
    }

    fn call(&mut self, h: Helper, args: &[Value]) -> Value {
        // `Helper::ALL` lists the variants in declaration order, and `new` checked
        // that every helper was declared: `h as usize` indexes both.
        let i = h as usize;
        let fref = match self.helper_refs[i] {
            Some(r) => r,
            None => {
                let r = self
                    .module
                    .declare_func_in_func(self.helper_ids[i], self.b.func);
                self.helper_refs[i] = Some(r);
                r
            }
        };
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.tables_ptr);
        all.extend_from_slice(args);
        let inst = self.b.ins().call(fref, &all);
        self.b.inst_results(inst)[0]
    }

    /// Ends the current block: stores a decision (not `balance`: its hash is 0)
    /// and returns.
    fn exit_with(&mut self, action: Value, target: Value, rule: Value, stage: Value) {
        let w0 = self.pair(action, target);
        let w1 = self.pair(rule, stage);
        self.exit_words(w0, w1);
    }

    fn exit_const(&mut self, action: A, target: u32, rule: u32, stage: u32) {
        let w0 = self.konst(types::I64, pair_const(action as u32, target));
        let w1 = self.konst(types::I64, pair_const(rule, stage));
        if action == A::Balance {
            self.exit_balance(w0, w1);
        } else {
            self.exit_words(w0, w1);
        }
    }

    /// Ends the current block in the `balance` exit, with the decision's first
    /// two words (see [`pair_const`]).
    fn exit_balance(&mut self, w0: Value, w1: Value) {
        let block = match self.balance_exit {
            Some(b) => b,
            None => {
                let b = self.b.create_block();
                self.b.append_block_param(b, types::I64);
                self.b.append_block_param(b, types::I64);
                self.balance_exit = Some(b);
                b
            }
        };
        self.b
            .ins()
            .jump(block, &[BlockArg::Value(w0), BlockArg::Value(w1)]);
    }

    /// Stores the decision's first two words, a hash of 0, and returns.
    fn exit_words(&mut self, w0: Value, w1: Value) {
        self.store_words(w0, w1);
        let zero = self.b.ins().iconst(types::I32, 0);
        self.b.ins().store(
            MemFlagsData::trusted(),
            zero,
            self.out,
            offset_of!(Decision, hash) as i32,
        );
        self.b.ins().return_(&[]);
    }

    /// Stores (action, target) and (rule, stage), each pair as one I64.
    fn store_words(&mut self, w0: Value, w1: Value) {
        // `Decision` is aligned to 4 bytes only.
        let flags = MemFlagsData::new().with_notrap();
        let (a, r) = (
            offset_of!(Decision, action) as i32,
            offset_of!(Decision, rule) as i32,
        );
        self.b.ins().store(flags, w0, self.out, a);
        self.b.ins().store(flags, w1, self.out, r);
    }

    /// Two I32 values as the I64 whose native store writes `lo` then `hi`.
    fn pair(&mut self, lo: Value, hi: Value) -> Value {
        let lo = self.b.ins().uextend(types::I64, lo);
        let hi = self.b.ins().uextend(types::I64, hi);
        let (first, second) = if cfg!(target_endian = "little") {
            (lo, hi)
        } else {
            (hi, lo)
        };
        let second = self.b.ins().ishl_imm_u(second, 32);
        self.b.ins().bor(first, second)
    }

    /// The I32 a native store of the I64 `w` writes at offset 4 (the second of
    /// [`Translator::pair`]).
    fn word_high(&mut self, w: Value) -> Value {
        let x = if cfg!(target_endian = "little") {
            self.b.ins().ushr_imm_u(w, 32)
        } else {
            w
        };
        self.b.ins().ireduce(types::I32, x)
    }
}

/// Two `u32` fields, laid out one after the other, as the `u64` whose native
/// store writes them.
fn pair_const(lo: u32, hi: u32) -> u64 {
    let mut x = [0u8; 8];
    x[..4].copy_from_slice(&lo.to_ne_bytes());
    x[4..].copy_from_slice(&hi.to_ne_bytes());
    u64::from_ne_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp;
    use crate::ir::{Interface, Route, Rule, Service};
    use lbp_lang::ast::Span;

    fn cond(kind: CondKind) -> Cond {
        Cond {
            kind,
            span: Span::default(),
        }
    }

    fn rule(kind: CondKind, action: ir::Action) -> Rule {
        Rule {
            cond: cond(kind),
            action,
            span: Span::default(),
        }
    }

    fn mapped(a: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a.to_be_bytes());
        b
    }

    fn v4_fields(dst: u32) -> Fields {
        Fields {
            present: present::ETH | present::IP4 | present::TCP,
            ip_version: 4,
            ip_proto: 6,
            ip_ttl: 64,
            dport: 80,
            ip_dst: mapped(dst),
            ..Fields::default()
        }
    }

    fn agree(prog: &Program, fields: &[Fields]) {
        let jit = compile(prog).unwrap();
        for f in fields {
            assert_eq!(jit.decide(f), interp::decide(prog, f), "{f:?}");
        }
    }

    #[test]
    fn empty_program() {
        let prog = Program::default();
        let mut f = v4_fields(0xc612_0001);
        let jit = compile(&prog).unwrap();
        assert_eq!(
            jit.decide(&f),
            Decision {
                action: A::Drop as u32,
                target: 0,
                rule: NO_RULE,
                stage: stage::ROUTE,
                hash: 0
            }
        );
        f.present |= present::MALFORMED;
        assert_eq!(jit.decide(&f).stage, stage::MALFORMED);
    }

    /// Martian destinations are dropped at their own stage, before any route
    /// (here default routes of both families), with the directed broadcasts
    /// inline (one interface) and through the helper (twenty).
    #[test]
    fn martian_destinations_are_refused_before_any_route() {
        for n in [1u32, 20] {
            let prog = Program {
                interfaces: (0..n)
                    .map(|i| Interface {
                        name: format!("i{i}"),
                        addrs: vec![
                            (Addr::V4(0xc612_0001 + (i << 8)), 24),
                            (Addr::V6(0x2001_0db8 << 96 | 1), 64),
                        ],
                        mac: None,
                    })
                    .collect(),
                routes: vec![
                    Route {
                        prefix: Addr::V4(0),
                        len: 0,
                        via: None,
                        dev: 0,
                    },
                    Route {
                        prefix: Addr::V6(0),
                        len: 0,
                        via: None,
                        dev: 0,
                    },
                ],
                ..Program::default()
            };
            let jit = compile(&prog).unwrap();
            let v4 = [
                (0x0000_0000, true),
                (0x0000_0001, true),
                (0x7f00_0001, true),
                (0xa9fe_0101, true),
                (0xe000_00fb, true),
                (0xefff_fffa, true),
                (0xffff_ffff, true),
                (0xc612_00ff, true),
                (0xc612_00fe, false),
                (0xc612_ffff, false),
                (0xf000_0001, false),
                (0x0100_0000, false),
                (0xc612_13ff, n == 20),
            ];
            // Both back ends agree, and drop exactly the martians at their stage.
            let expect = |f: &Fields, martian: bool| {
                let d = jit.decide(f);
                assert_eq!(d, interp::decide(&prog, f), "{f:?}");
                let want = if martian {
                    (stage::MARTIAN, A::Drop)
                } else {
                    (stage::ROUTE, A::Forward)
                };
                assert_eq!((d.stage, d.action), (want.0, want.1 as u32), "{f:?}, {n}");
            };
            for (dst, martian) in v4 {
                expect(&v4_fields(dst), martian);
            }
            let v6: [(u128, bool); 7] = [
                (0, true),
                (1, true),
                (0xfe80 << 112 | 5, true),
                (0xfebf << 112, true),
                (0xff02 << 112 | 1, true),
                (0x2001_0db8 << 96 | 0xffff, false),
                (2, false),
            ];
            for (dst, martian) in v6 {
                let f = Fields {
                    present: present::ETH | present::IP6 | present::UDP,
                    ip_version: 6,
                    ip_proto: 17,
                    ip_ttl: 64,
                    dport: 53,
                    ip_dst: dst.to_be_bytes(),
                    ..Fields::default()
                };
                expect(&f, martian);
            }
        }
    }

    #[test]
    fn ipv4_reads_only_the_low_word() {
        // The interpreter reads an IPv4 address from bytes 12..16 whatever the
        // first twelve hold; so does the JIT.
        let prog = Program {
            rules: vec![rule(
                CondKind::AddrEq {
                    need: present::IP4,
                    field: AddrField::Dst,
                    addr: Addr::V4(0x0a00_0001),
                    eq: true,
                },
                ir::Action::Drop,
            )],
            ..Program::default()
        };
        let mut f = v4_fields(0x0a00_0001);
        f.ip_dst[0] = 0x20;
        f.ip_dst[10] = 0;
        agree(&prog, &[f, v4_fields(0x0a00_0001), v4_fields(0x0a00_0002)]);
        assert_eq!(compile(&prog).unwrap().decide(&f).rule, 0);
    }

    #[test]
    fn routes_rank_by_written_length_and_first_wins() {
        let r = |prefix, len, dev| Route {
            prefix,
            len,
            via: None,
            dev,
        };
        let prog = Program {
            interfaces: vec![Interface {
                name: "a".into(),
                addrs: vec![],
                mac: None,
            }],
            routes: vec![
                r(Addr::V4(0x0a00_0000), 8, 0),
                r(Addr::V4(0x0a01_0000), 16, 0),
                r(Addr::V4(0x0a01_0000), 16, 0),
                r(Addr::V4(0x0a01_0203), 40, 0), // a hand-built IR only
                r(Addr::V4(0), 0, 0),
                r(Addr::V6(1), 128, 0),
            ],
            ..Program::default()
        };
        let fs: Vec<Fields> = [0x0a00_0001, 0x0a01_0001, 0x0a01_0203, 0x0b00_0000]
            .into_iter()
            .map(v4_fields)
            .collect();
        agree(&prog, &fs);
    }

    #[test]
    fn services_and_big_sets_go_through_helpers() {
        let vip = Addr::V4(0x0a00_000a);
        let prog = Program {
            services: vec![
                Service {
                    name: "a".into(),
                    entries: vec![(vip, 6, vec![(443, 443)])],
                    unknown_balance: false,
                    hash_mask: lbp_abi::hash_field::ALL,
                    pool: None,
                    mode: ir::Mode::Dsr,
                    algorithm: ir::Algorithm::Maglev,
                },
                Service {
                    name: "b".into(),
                    entries: vec![(vip, 6, vec![(80, 80), (8000, 8100)])],
                    unknown_balance: false,
                    hash_mask: lbp_abi::hash_field::ALL,
                    pool: None,
                    mode: ir::Mode::Dsr,
                    algorithm: ir::Algorithm::Maglev,
                },
            ],
            sets: vec![Set::Int((0..10).map(|i| (i * 100, i * 100 + 5)).collect())],
            rules: vec![rule(
                CondKind::IntIn {
                    need: present::TCP,
                    field: IntField::Sport,
                    set: 0,
                },
                ir::Action::Local,
            )],
            ..Program::default()
        };
        let mut fs = Vec::new();
        for dport in [80, 443, 25, 8050] {
            for sport in [0, 5, 6, 505, 900, 905, 906] {
                let mut f = v4_fields(0x0a00_000a);
                f.dport = dport;
                f.sport = sport;
                fs.push(f);
                f.tcp_flags = tcp_flag::RST;
                fs.push(f);
            }
        }
        agree(&prog, &fs);
    }

    /// Every range boundary of sets on both paths (inline and helper), both
    /// families, both fields.
    #[test]
    fn set_boundaries_inline_and_through_helpers() {
        let v6 = |x: u128| 0x2001_0db8_u128 << 96 | x;
        for n in [1u32, INLINE_MAX as u32, INLINE_MAX as u32 + 3] {
            let v4r: Vec<(u32, u32)> = (0..n).map(|i| (i * 100 + 10, i * 100 + 10 + i)).collect();
            let v6r: Vec<(u128, u128)> = (0..n)
                .map(|i| {
                    (
                        v6(u128::from(i) * 100),
                        v6(u128::from(i) * 100 + u128::from(i)),
                    )
                })
                .collect();
            let ints: Vec<(u64, u64)> = v4r.iter().map(|&(a, b)| (a.into(), b.into())).collect();
            let macs: Vec<[u8; 6]> = (0..n).map(|i| [2, 0, 0, 0, 0, i as u8]).collect();
            let prog = Program {
                sets: vec![
                    Set::Prefix {
                        v4: v4r.clone(),
                        v6: v6r.clone(),
                    },
                    Set::Int(ints),
                    Set::Mac(macs),
                ],
                rules: vec![
                    rule(
                        CondKind::AddrIn {
                            need: present::IP4 | present::IP6,
                            field: AddrField::Src,
                            set: 0,
                        },
                        ir::Action::Drop,
                    ),
                    rule(
                        CondKind::AddrIn {
                            need: present::IP4 | present::IP6,
                            field: AddrField::Dst,
                            set: 0,
                        },
                        ir::Action::Local,
                    ),
                    rule(
                        CondKind::IntIn {
                            need: present::TCP,
                            field: IntField::Dport,
                            set: 1,
                        },
                        ir::Action::Reset,
                    ),
                    rule(
                        CondKind::MacIn {
                            field: MacField::Dst,
                            set: 2,
                        },
                        ir::Action::Balance(7),
                    ),
                ],
                ..Program::default()
            };
            let mut fs = Vec::new();
            let mut edge4 = Vec::new();
            for &(lo, hi) in &v4r {
                edge4.extend([lo - 1, lo, hi, hi + 1]);
            }
            let mut edge6 = Vec::new();
            for &(lo, hi) in &v6r {
                edge6.extend([lo - 1, lo, hi, hi + 1]);
            }
            for (k, &a) in edge4.iter().enumerate() {
                let mut f = v4_fields(a);
                f.ip_src = mapped(a);
                fs.push(f);
                f.ip_src = mapped(0);
                fs.push(f);
                f.ip_dst = mapped(0);
                f.dport = a as u16;
                f.eth_dst = [2, 0, 0, 0, 0, k as u8];
                fs.push(f);
            }
            for &a in &edge6 {
                let mut f = Fields {
                    present: present::ETH | present::IP6 | present::UDP,
                    ip_version: 6,
                    ip_src: a.to_be_bytes(),
                    ..Fields::default()
                };
                fs.push(f);
                f.ip_dst = f.ip_src;
                f.ip_src = [0; 16];
                fs.push(f);
            }
            agree(&prog, &fs);
        }
    }

    #[test]
    fn a_missing_set_is_an_error_not_a_panic() {
        let prog = Program {
            rules: vec![rule(
                CondKind::MacIn {
                    field: MacField::Src,
                    set: 3,
                },
                ir::Action::Drop,
            )],
            ..Program::default()
        };
        assert!(compile(&prog).unwrap_err().contains("set 3"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut c = cond(CondKind::Const(true));
        for _ in 0..=MAX_DEPTH {
            c = cond(CondKind::Not(Box::new(c)));
        }
        let prog = Program {
            rules: vec![Rule {
                cond: c,
                action: ir::Action::Drop,
                span: Span::default(),
            }],
            ..Program::default()
        };
        assert!(compile(&prog).is_err());
    }

    #[test]
    fn a_jit_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Jit>();
        let jit = std::sync::Arc::new(compile(&Program::default()).unwrap());
        let f = v4_fields(1);
        let d = jit.decide(&f);
        let other = std::sync::Arc::clone(&jit);
        let got = std::thread::spawn(move || other.decide(&f)).join().unwrap();
        assert_eq!(got, d);
    }

    #[test]
    fn helper_order_matches_the_enum() {
        for (i, h) in Helper::ALL.into_iter().enumerate() {
            assert_eq!(h as usize, i);
        }
    }

    /// Runs of single-flag tests in an `&&` (one compare of the flags byte),
    /// with flags expected set, clear, and both, on every flags byte.
    #[test]
    fn flag_runs_agree_on_every_flags_byte() {
        let src = "interface a { address 198.18.0.1/24 }
filter {
    tcp.syn && tcp.ack == false && ip.ttl > 1 => drop
    tcp.fin && tcp.fin == false => reset
    tcp.rst == false && tcp.psh && tcp.urg == false && tcp.ack => local
    tcp.psh && tcp.urg => drop
    tcp.syn != true && tcp.ack != false => forward
}
route 0.0.0.0/0 dev a
";
        let a = lbp_lang::analyze(src);
        assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
        let prog = crate::lower::lower(&a.policy).unwrap();
        let jit = compile(&prog).unwrap();
        let mut decided = std::collections::HashSet::new();
        for flags in 0..=255u8 {
            for tcp in [true, false] {
                let mut f = v4_fields(0xc612_0005);
                f.tcp_flags = flags;
                f.ip_ttl = 64;
                if !tcp {
                    f.present &= !present::TCP;
                }
                let want = interp::decide(&prog, &f);
                assert_eq!(jit.decide(&f), want, "{f:?}");
                decided.insert(want.rule);
            }
        }
        // Every rule but the contradiction (1) and `forward` (which routes, no
        // rule in the decision) decided some packet.
        let want: std::collections::HashSet<u32> = [0, 2, 3, NO_RULE].into();
        assert_eq!(decided, want);
    }

    /// The test packets of the stock policies and the case corpus, and variants
    /// of them in every family (version and IP4/IP6 bits disagreeing included),
    /// give the interpreter's decision with the filter emitted once per family
    /// and once for all (the form larger filters get), merged or not.
    #[test]
    fn family_copies_and_the_generic_filter_agree() {
        use lbp_lang::ast::Item;
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut files = Vec::new();
        for dir in ["policies", "tests/cases"] {
            let rd = std::fs::read_dir(format!("{root}/{dir}")).unwrap();
            for e in rd {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "lbp") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut packets, mut specialized) = (0, 0);
        for path in &files {
            let src = std::fs::read_to_string(path).unwrap();
            let a = lbp_lang::analyze(&src);
            if a.has_errors() {
                continue;
            }
            let Ok(prog) = crate::lower::lower(&a.policy) else {
                continue;
            };
            let consts = crate::testing::consts(&a.policy);
            let mut fields = Vec::new();
            for item in &a.policy.items {
                let Item::Test(t) = item else { continue };
                for p in &t.packets {
                    if let Ok((_, f)) = crate::testing::packet_fields(p, &prog, &consts) {
                        fields.push(f);
                    }
                }
            }
            let base = fields.len();
            for i in 0..base * 8 {
                let mut f = fields[i % base];
                let r = next();
                f.ip_version = [4, 6, 0, 4, 6, 5][(r % 6) as usize];
                f.present ^= (r >> 8) as u32 & (present::IP4 | present::IP6 | present::TCP);
                if r >> 16 & 3 == 0 {
                    std::mem::swap(&mut f.ip_src, &mut f.ip_dst);
                }
                if r >> 18 & 3 == 0 {
                    f.tcp_flags = (r >> 24) as u8;
                }
                if r >> 20 & 3 == 0 {
                    f.ip_dst[..12].copy_from_slice(&f.ip_src[..12]);
                }
                if r >> 22 & 3 == 0 {
                    // The same IPv4 word under different upper words.
                    f.ip_dst[12..].copy_from_slice(&f.ip_src[12..]);
                    f.ip_src[(r >> 32) as usize % 12] ^= 1;
                }
                fields.push(f);
            }
            let mut jits = Vec::new();
            for merge_min in [MERGE_MIN, 1] {
                for generic in [false, true] {
                    let (jit, _) = compile_inner(&prog, false, merge_min, generic)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    jits.push((jit, merge_min, generic));
                }
            }
            specialized += usize::from(base > 0);
            for f in &fields {
                let want = interp::decide(&prog, f);
                for (jit, merge_min, generic) in &jits {
                    assert_eq!(
                        jit.decide(f),
                        want,
                        "{} (merge_min {merge_min}, generic {generic}): {f:?}",
                        path.display()
                    );
                    // Every field is written (`Jit::decide` relies on it): a
                    // decision filled with another value beforehand ends the same.
                    let mut out = Decision {
                        action: 0x5a5a_5a5a,
                        target: 0x5a5a_5a5a,
                        rule: 0x5a5a_5a5a,
                        stage: 0x5a5a_5a5a,
                        hash: 0x5a5a_5a5a,
                    };
                    // SAFETY: the function of a live `Jit` with its own tables, a
                    // valid `Fields` and a valid, writable `Decision`.
                    unsafe { (jit.filter_fn())(jit.tables(), f, &mut out) };
                    assert_eq!(out, want, "{} (filled): {f:?}", path.display());
                }
                packets += 1;
            }
        }
        assert!(
            specialized > 10 && packets > 3000,
            "{specialized} {packets}"
        );
    }
}
