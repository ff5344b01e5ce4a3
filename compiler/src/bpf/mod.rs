//! The eBPF back end: a policy compiled to an XDP program, beside the
//! Cranelift JIT and with the same decision semantics (the reference is
//! `interp.rs`). lbp emits the instructions itself (`lbp_abi::bpf::Asm`); the
//! runtime loads them (`lbp_runtime::ring::bpf::Loaded`). No clang or LLVM.
//!
//! The program has two parts: `extract` reads the frame into a [`Fields`] on
//! the stack, every access bounds-checked (the same fields as
//! `lbp_abi::wire::extract`), and the decision reads that `Fields` and the
//! policy's maps and makes a [`Decision`] on the stack.
//!
//! The decision is one straight pipeline of compare-and-branch code, as
//! `interp::decide` reads (files by stage, each readable alone):
//!
//! - `decide.rs`: the skeleton: malformed drop, the filter rules in order,
//!   the shared exits (reset-or-drop, TTL expiry, the flow hash of a balance);
//! - `filter.rs`: one condition as jumping code (`&&`, `||`, `!` short-circuit;
//!   every leaf kind of the IR, a test of an absent header false);
//! - `tail.rs`: service entries, virtual IPs without an entry, own addresses,
//!   martian destinations and the longest-prefix route, per family;
//! - `emit.rs`: loads from the `Fields`, the family dispatch, the compare
//!   trees (sets of ranges by bisection, 128-bit addresses as two 64-bit words).
//!
//! Sets are bisection trees inline (a packet walks one path of `log n`
//! compares); routes are a ranked compare chain when a family has at most
//! [`ROUTES_INLINE_MAX`] of them, else an LPM trie map per family. Groups of
//! rules of exact atoms are merged into hash maps as the JIT merges them into
//! tables (`merged.rs`); the other rules are inline, and a policy beyond
//! [`MAX_RULES`] inline rules, [`MAX_SET_RANGES`] or [`MAX_INSNS`] is
//! refused with [`BpfError::Limit`] (the runtime then decides on the
//! switching cores).
//!
//! The verifier sees a program without loops whose every jump is forward and
//! within 16-bit offsets (a program is at most [`MAX_INSNS`] instructions), that
//! reads only its own stack and its maps' values after a null check.
//!
//! [`Fields`]: lbp_abi::Fields
//! [`Decision`]: lbp_abi::Decision

use std::fmt;
use std::mem::{offset_of, size_of};

use crate::classify::{Classifier, MERGE_MIN};
use crate::ir::Program;
use lbp_abi::bpf::{Asm, AsmError, MapKind, MapSpec, Program as Insns, helper, op, reg::*, xdp};
use lbp_abi::{Decision, Fields};

mod balance;
mod decide;
mod emit;
pub mod extract;
mod fast;
mod filter;
mod flows;
mod merged;
mod reset;
mod tail;

/// The most filter rules compiled inline (those not merged into a hash map).
pub const MAX_RULES: usize = 2_000;
/// The most ranges (or MACs) of one set, per family, tested inline by
/// bisection.
pub const MAX_SET_RANGES: usize = 4_096;
/// The most service entries, own addresses and directed broadcasts, tested as
/// compare chains.
pub const MAX_TAIL_ENTRIES: usize = 1_024;
/// A family with at most this many routes is a compare chain; more go to an
/// LPM trie map of that family.
pub const ROUTES_INLINE_MAX: usize = 16;
/// The most routes per family (the LPM trie's size).
pub const MAX_ROUTES: usize = 65_536;
/// The longest program: every jump then fits the 16-bit offset, and the
/// verifier's work stays well below its budget of a million instructions.
pub const MAX_INSNS: usize = 32_000;

/// Where the `Fields` is on the stack (`FP + FIELDS_OFF`, 4-aligned as the
/// struct).
pub const FIELDS_OFF: i16 = -80;
/// Where the `Decision` is, just below the `Fields` (so that the test modes
/// write both to the out map as one value).
pub const DECISION_OFF: i16 = FIELDS_OFF - size_of::<Decision>() as i16;
/// A u32 key of 0 for the out map.
const OUT_KEY_OFF: i16 = DECISION_OFF - 4;
/// Scratch bytes for map keys (an LPM key is 4 + 16 bytes).
pub(crate) const SCRATCH_OFF: i16 = OUT_KEY_OFF - 24;

/// The size of a test run's out value: the `Decision`, then the `Fields`.
pub const OUT_VALUE_SIZE: usize = size_of::<Decision>() + size_of::<Fields>();

/// What the program is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fields extracted from the frame (`extract::emit_extract`); the
    /// `Decision` and the `Fields` written to the out map (map 0, one entry);
    /// returns `XDP_PASS`.
    Test,
    /// The frame IS a `Fields` (its bytes, [`fields_to_bytes`]), copied to the
    /// stack: the decision alone, tested on any `Fields`. Out map and verdict
    /// as [`Mode::Test`]. A frame shorter than a `Fields` is `XDP_ABORTED`.
    TestFields,
    /// The XDP fast path (`fast`): decides in the kernel what needs no
    /// switching core (a `drop` is `XDP_DROP`), and redirects the rest to
    /// the cores' AF_XDP sockets.
    Fast,
}

/// [`Mode::Test`]'s second map (an array of one u32): the receiving
/// interface's number in the policy, which the test run stores before
/// running the program (the frame cannot carry it).
pub const IN_IFACE_MAP: &str = "in_iface";

/// `R0` = the value of the key at `FP + key` in map `map`, or 0.
pub(super) fn lookup(a: &mut Asm, map: u32, key: i16) {
    a.ld_map(R1, map);
    a.mov(R2, FP);
    a.alu_imm(op::ADD, R2, i32::from(key));
    a.call(helper::MAP_LOOKUP_ELEM);
}

/// The key at `FP + key` of map `map` set to the value at `FP + value`
/// (`BPF_ANY`), or removed when `value` is `None`.
pub(super) fn update(a: &mut Asm, map: u32, key: i16, value: Option<i16>) {
    a.ld_map(R1, map);
    a.mov(R2, FP);
    a.alu_imm(op::ADD, R2, i32::from(key));
    match value {
        Some(v) => {
            a.mov(R3, FP);
            a.alu_imm(op::ADD, R3, i32::from(v));
            a.mov_imm(R4, 0);
            a.call(helper::MAP_UPDATE_ELEM);
        }
        None => a.call(helper::MAP_DELETE_ELEM),
    }
}

/// `Fields::in_iface` from entry 0 of map `map` (left 0 when absent).
fn in_iface_from_map(a: &mut Asm, map: u32) {
    let none = a.label();
    a.st_imm(op::W, FP, OUT_KEY_OFF, 0);
    lookup(a, map, OUT_KEY_OFF);
    a.jmp_imm(op::JEQ, R0, 0, none);
    a.ldx(op::W, R1, R0, 0);
    a.stx(
        op::W,
        FP,
        FIELDS_OFF + offset_of!(Fields, in_iface) as i16,
        R1,
    );
    a.bind(none);
}

/// Why a policy has no eBPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BpfError {
    /// The policy is beyond the back end's limits (the message says which):
    /// it runs on the switching cores.
    Limit(String),
    /// A bug in lbp: the program could not be assembled.
    Internal(String),
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::Limit(m) => write!(f, "beyond the eBPF back end's limits: {m}"),
            BpfError::Internal(m) => write!(f, "internal error in the eBPF back end: {m}"),
        }
    }
}

impl std::error::Error for BpfError {}

/// A compiled eBPF program and the maps it names by number.
#[derive(Clone, Debug, Default)]
pub struct BpfProgram {
    pub prog: Insns,
    pub maps: Vec<MapSpec>,
    /// How many filter rules it tests one by one: those not merged into a
    /// group's hash map (each costs every frame about a nanosecond; a group
    /// costs one lookup).
    pub inline_rules: usize,
}

impl BpfProgram {
    /// The disassembly, one instruction a line, then the maps.
    pub fn disassemble(&self) -> String {
        let mut s = self.prog.disassemble();
        for (i, m) in self.maps.iter().enumerate() {
            s += &format!(
                "; map[{i}] {}: {:?}, key {} bytes, value {} bytes, {} entries ({} filled)\n",
                m.name,
                m.kind,
                m.key_size,
                m.value_size,
                m.max_entries,
                m.entries.len()
            );
        }
        s
    }

    /// The number of instruction slots.
    pub fn len(&self) -> usize {
        self.prog.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prog.insns.is_empty()
    }
}

/// Compile `prog` to an XDP program for `mode`.
pub fn compile(prog: &Program, mode: Mode) -> Result<BpfProgram, BpfError> {
    let cls = Classifier::build(prog, MERGE_MIN);
    let merged = merged::plan(&cls, prog.rules.len());
    if merged.inline() > MAX_RULES {
        return Err(BpfError::Limit(format!(
            "{} filter rules that are not merged into tables, at most {MAX_RULES} are compiled to eBPF",
            merged.inline()
        )));
    }
    let mut a = Asm::new();
    let array = |name: &str, value_size: usize| MapSpec {
        name: name.into(),
        kind: MapKind::Array,
        key_size: 4,
        value_size: value_size as u32,
        max_entries: 1,
        entries: Vec::new(),
    };
    let mut maps = Vec::new();
    let abort = a.label();
    let cores = a.label();
    let mut fast_maps = None;
    match mode {
        Mode::Test => {
            maps.push(array("out", OUT_VALUE_SIZE));
            maps.push(array(IN_IFACE_MAP, size_of::<u32>()));
            zero(&mut a, FIELDS_OFF, size_of::<Fields>());
            a.mov(R6, R1);
            extract::emit_extract(&mut a, FIELDS_OFF);
            in_iface_from_map(&mut a, 1);
        }
        Mode::TestFields => {
            maps.push(array("out", OUT_VALUE_SIZE));
            zero(&mut a, FIELDS_OFF, size_of::<Fields>());
            copy_frame_fields(&mut a, abort);
        }
        Mode::Fast => {
            let m = fast::maps(&mut maps, prog);
            fast_maps = Some(m);
            fast::entry(&mut a);
            zero(&mut a, FIELDS_OFF, size_of::<Fields>());
            a.mov(R6, R1);
            extract::emit_extract(&mut a, FIELDS_OFF);
            fast::before_policy(&mut a, m, cores);
        }
    }
    zero(&mut a, DECISION_OFF, size_of::<Decision>());
    let done = a.label();
    decide::emit(&mut a, &mut maps, prog, &merged, done)?;
    a.bind(done);
    if let Some(m) = fast_maps {
        fast::act(&mut a, m, prog.services.len() as u32, cores);
    } else {
        // The test modes: the out map's entry 0 = the Decision and the Fields.
        a.st_imm(op::W, FP, OUT_KEY_OFF, 0);
        update(&mut a, 0, OUT_KEY_OFF, Some(DECISION_OFF));
        a.ret(xdp::PASS);
    }
    a.bind(abort);
    a.ret(xdp::ABORTED);
    // Before compaction (unreachable code gone) the program may be longer
    // than after, but its jumps must already fit their offsets.
    let emitted = a.len();
    if emitted > 2 * MAX_INSNS {
        return Err(too_long(emitted));
    }
    let prog = match a.finish() {
        Ok(p) => compact(&p),
        Err(AsmError::TooFar { .. }) => return Err(too_long(emitted)),
        Err(e) => return Err(BpfError::Internal(format!("assembling: {e}"))),
    };
    if prog.insns.len() > MAX_INSNS {
        return Err(too_long(prog.insns.len()));
    }
    Ok(BpfProgram {
        prog,
        maps,
        inline_rules: merged.inline(),
    })
}

fn too_long(n: usize) -> BpfError {
    BpfError::Limit(format!(
        "the program would be {n} instructions, at most {MAX_INSNS}"
    ))
}

/// `p` without the instructions no path reaches (the verifier refuses
/// them) and without jumps to the next instruction; every jump and map
/// reference renumbered. The generator may leave both behind: a leaf's
/// code ends in explicit jumps whether or not the next label follows.
fn compact(p: &Insns) -> Insns {
    let n = p.insns.len();
    let wide = |i: usize| p.insns[i].code == op::LD | op::IMM | op::DW;
    let class = |i: usize| p.insns[i].code & 0x07;
    let is_jump = |i: usize| matches!(class(i), op::JMP | op::JMP32);
    let target = |i: usize| (i as i64 + 1 + i64::from(p.insns[i].off)) as usize;
    let mut reach = vec![false; n];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if i >= n || reach[i] {
            continue;
        }
        reach[i] = true;
        if wide(i) {
            if i + 1 < n {
                reach[i + 1] = true;
            }
            stack.push(i + 2);
            continue;
        }
        if !is_jump(i) {
            stack.push(i + 1);
            continue;
        }
        match p.insns[i].code & 0xf0 {
            op::EXIT => {}
            op::CALL => stack.push(i + 1),
            op::JA => stack.push(target(i)),
            _ => {
                stack.push(i + 1);
                stack.push(target(i));
            }
        }
    }
    let noop = |i: usize| p.insns[i].code == op::JMP | op::JA && p.insns[i].off == 0;
    let keep: Vec<bool> = (0..n)
        .map(|i| reach[i] && !(is_jump(i) && noop(i)))
        .collect();
    // new_pos[i]: the kept instructions before i (for a dropped one, the
    // position of the next kept one).
    let mut new_pos = vec![0usize; n + 1];
    for i in 0..n {
        new_pos[i + 1] = new_pos[i] + usize::from(keep[i]);
    }
    let mut insns = Vec::with_capacity(new_pos[n]);
    let mut i = 0;
    while i < n {
        if keep[i] {
            let mut x = p.insns[i];
            let op_ = x.code & 0xf0;
            if !wide(i) && is_jump(i) && op_ != op::CALL && op_ != op::EXIT {
                let t = target(i).min(n);
                x.off = (new_pos[t] as i64 - new_pos[i] as i64 - 1) as i16;
            }
            insns.push(x);
            if wide(i) && i + 1 < n {
                insns.push(p.insns[i + 1]);
                i += 1;
            }
        }
        i += 1;
    }
    let map_refs = p
        .map_refs
        .iter()
        .filter(|&&r| keep[r])
        .map(|&r| new_pos[r])
        .collect();
    Insns { insns, map_refs }
}

/// Zero `len` bytes (a multiple of 4) of the stack from `FP + off`.
fn zero(a: &mut Asm, off: i16, len: usize) {
    for i in (0..len as i16).step_by(4) {
        a.st_imm(op::W, FP, off + i, 0);
    }
}

/// `Mode::TestFields`' prologue: the frame's first `size_of::<Fields>()`
/// bytes to the stack at `FIELDS_OFF`, or `abort` when the frame is shorter.
fn copy_frame_fields(a: &mut Asm, abort: lbp_abi::bpf::Label) {
    let n = size_of::<Fields>() as i32;
    a.ldx(op::W, R2, R1, xdp::DATA);
    a.ldx(op::W, R3, R1, xdp::DATA_END);
    a.mov(R4, R2);
    a.alu_imm(op::ADD, R4, n);
    a.jmp(op::JGT, R4, R3, abort);
    for i in (0..n as i16).step_by(4) {
        a.ldx(op::W, R5, R2, i);
        a.stx(op::W, FP, FIELDS_OFF + i, R5);
    }
}

/// A `Fields` as the bytes of its `#[repr(C)]` layout (the frame of a
/// [`Mode::TestFields`] run).
pub fn fields_to_bytes(f: &Fields) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<Fields>()];
    let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
    put(offset_of!(Fields, present), &f.present.to_ne_bytes());
    put(offset_of!(Fields, pkt_len), &f.pkt_len.to_ne_bytes());
    put(offset_of!(Fields, in_iface), &f.in_iface.to_ne_bytes());
    put(offset_of!(Fields, ip_len), &f.ip_len.to_ne_bytes());
    put(offset_of!(Fields, eth_type), &f.eth_type.to_ne_bytes());
    put(offset_of!(Fields, sport), &f.sport.to_ne_bytes());
    put(offset_of!(Fields, dport), &f.dport.to_ne_bytes());
    put(offset_of!(Fields, l3_offset), &f.l3_offset.to_ne_bytes());
    put(offset_of!(Fields, l4_offset), &f.l4_offset.to_ne_bytes());
    put(offset_of!(Fields, ip_version), &[f.ip_version]);
    put(offset_of!(Fields, ip_proto), &[f.ip_proto]);
    put(offset_of!(Fields, ip_ttl), &[f.ip_ttl]);
    put(offset_of!(Fields, tcp_flags), &[f.tcp_flags]);
    put(offset_of!(Fields, icmp_type), &[f.icmp_type]);
    put(offset_of!(Fields, icmp_code), &[f.icmp_code]);
    put(offset_of!(Fields, eth_src), &f.eth_src);
    put(offset_of!(Fields, eth_dst), &f.eth_dst);
    put(offset_of!(Fields, ip_src), &f.ip_src);
    put(offset_of!(Fields, ip_dst), &f.ip_dst);
    b
}

/// The inverse of [`fields_to_bytes`]; `None` when `b` is too short.
pub fn fields_from_bytes(b: &[u8]) -> Option<Fields> {
    if b.len() < size_of::<Fields>() {
        return None;
    }
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let arr = |o: usize| -> [u8; 16] { b[o..o + 16].try_into().unwrap_or([0; 16]) };
    let mac = |o: usize| -> [u8; 6] { b[o..o + 6].try_into().unwrap_or([0; 6]) };
    Some(Fields {
        present: u32_at(offset_of!(Fields, present)),
        pkt_len: u32_at(offset_of!(Fields, pkt_len)),
        in_iface: u32_at(offset_of!(Fields, in_iface)),
        ip_len: u32_at(offset_of!(Fields, ip_len)),
        eth_type: u16_at(offset_of!(Fields, eth_type)),
        sport: u16_at(offset_of!(Fields, sport)),
        dport: u16_at(offset_of!(Fields, dport)),
        l3_offset: u16_at(offset_of!(Fields, l3_offset)),
        l4_offset: u16_at(offset_of!(Fields, l4_offset)),
        ip_version: b[offset_of!(Fields, ip_version)],
        ip_proto: b[offset_of!(Fields, ip_proto)],
        ip_ttl: b[offset_of!(Fields, ip_ttl)],
        tcp_flags: b[offset_of!(Fields, tcp_flags)],
        icmp_type: b[offset_of!(Fields, icmp_type)],
        icmp_code: b[offset_of!(Fields, icmp_code)],
        eth_src: mac(offset_of!(Fields, eth_src)),
        eth_dst: mac(offset_of!(Fields, eth_dst)),
        ip_src: arr(offset_of!(Fields, ip_src)),
        ip_dst: arr(offset_of!(Fields, ip_dst)),
    })
}

/// A test run's out value: the `Decision` and the `Fields` the program
/// decided on; `None` when `b` is too short.
pub fn out_from_bytes(b: &[u8]) -> Option<(Decision, Fields)> {
    let d = size_of::<Decision>();
    if b.len() < OUT_VALUE_SIZE {
        return None;
    }
    let w = |i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let dec = Decision {
        action: w(0),
        target: w(1),
        rule: w(2),
        stage: w(3),
        hash: w(4),
    };
    Some((dec, fields_from_bytes(&b[d..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_bytes_round_trip_and_layout_holds() {
        let mut f = Fields {
            present: 0x1234_5678,
            pkt_len: 99,
            in_iface: 3,
            ip_len: 1500,
            eth_type: 0x86dd,
            sport: 4000,
            dport: 80,
            l3_offset: 14,
            l4_offset: 34,
            ip_version: 6,
            ip_proto: 17,
            ip_ttl: 64,
            tcp_flags: 0x12,
            icmp_type: 8,
            icmp_code: 1,
            ..Fields::default()
        };
        f.eth_src = [1, 2, 3, 4, 5, 6];
        f.eth_dst = [7, 8, 9, 10, 11, 12];
        f.ip_src = [0xa5; 16];
        f.ip_dst[15] = 1;
        assert_eq!(fields_from_bytes(&fields_to_bytes(&f)), Some(f));
        assert_eq!(size_of::<Fields>() % 4, 0);
        assert_eq!(DECISION_OFF + size_of::<Decision>() as i16, FIELDS_OFF);
        const { assert!(SCRATCH_OFF >= -512 && SCRATCH_OFF % 8 == 0) };
        assert_eq!(FIELDS_OFF + size_of::<Fields>() as i16, -4);
    }
}
