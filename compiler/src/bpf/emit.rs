//! The eBPF back end's building blocks: the generator's state, loads from the
//! `Fields` on the stack, the family dispatch, and compare trees over sorted
//! ranges (integers, MACs as 48-bit integers, addresses as one or two 64-bit
//! words).
//!
//! Registers: the decision uses R0–R5 only (R1 the value under test, R2 the
//! low word of a 128-bit one, R3–R5 constants and temporaries) and keeps
//! R6–R9 for its caller. Every load reads the `Fields` at a fixed offset from
//! the frame pointer, so the verifier knows each one is in bounds.

use std::mem::offset_of;

use super::FIELDS_OFF;
use crate::ir::{AddrField, CmpOp, IntField, MacField, Program};
use lbp_abi::bpf::{Asm, Label, MapSpec, op, reg::*};
use lbp_abi::{Fields, present};

/// The generator: the assembler, the maps so far, the program, and the
/// labels of the shared exits.
pub(super) struct Gen<'a> {
    pub a: &'a mut Asm,
    pub maps: &'a mut Vec<MapSpec>,
    pub prog: &'a Program,
    /// The end: the `Decision` on the stack is complete.
    pub done: Label,
    /// Reset, or drop for a packet that is no TCP or is a RST (the action
    /// word is `Reset`; the block makes it `Drop` where it must).
    pub reset: Label,
    /// Forward: expire when the TTL is 1 or 0.
    pub forward: Label,
    /// Balance, per hash mask: expire, or store the flow hash.
    pub balance: Vec<(u32, Label)>,
}

/// Where an integer field is in `Fields`: its size (an [`op`] size) and offset.
pub(super) fn int_loc(f: IntField) -> (u8, usize) {
    match f {
        IntField::InIface => (op::W, offset_of!(Fields, in_iface)),
        IntField::PktLen => (op::W, offset_of!(Fields, pkt_len)),
        IntField::EthType => (op::H, offset_of!(Fields, eth_type)),
        IntField::IpVersion => (op::B, offset_of!(Fields, ip_version)),
        IntField::IpProto => (op::B, offset_of!(Fields, ip_proto)),
        IntField::IpTtl => (op::B, offset_of!(Fields, ip_ttl)),
        IntField::IpLen => (op::W, offset_of!(Fields, ip_len)),
        IntField::Sport => (op::H, offset_of!(Fields, sport)),
        IntField::Dport => (op::H, offset_of!(Fields, dport)),
        IntField::IcmpType => (op::B, offset_of!(Fields, icmp_type)),
        IntField::IcmpCode => (op::B, offset_of!(Fields, icmp_code)),
    }
}

/// The largest value of an integer field.
pub(super) fn int_max(f: IntField) -> u64 {
    match int_loc(f).0 {
        op::B => 0xff,
        op::H => 0xffff,
        _ => 0xffff_ffff,
    }
}

pub(super) fn addr_off(f: AddrField) -> usize {
    match f {
        AddrField::Src => offset_of!(Fields, ip_src),
        AddrField::Dst => offset_of!(Fields, ip_dst),
    }
}

pub(super) fn mac_off(f: MacField) -> usize {
    match f {
        MacField::Src => offset_of!(Fields, eth_src),
        MacField::Dst => offset_of!(Fields, eth_dst),
    }
}

/// The frame-pointer offset of byte `off` of the `Fields`.
pub(super) fn at(off: usize) -> i16 {
    FIELDS_OFF + off as i16
}

/// The jump opcode of a comparison, and of its negation.
pub(super) fn jop(o: CmpOp, negate: bool) -> u8 {
    match (o, negate) {
        (CmpOp::Eq, false) | (CmpOp::Ne, true) => op::JEQ,
        (CmpOp::Ne, false) | (CmpOp::Eq, true) => op::JNE,
        (CmpOp::Lt, false) | (CmpOp::Ge, true) => op::JLT,
        (CmpOp::Le, false) | (CmpOp::Gt, true) => op::JLE,
        (CmpOp::Gt, false) | (CmpOp::Le, true) => op::JGT,
        (CmpOp::Ge, false) | (CmpOp::Lt, true) => op::JGE,
    }
}

impl Gen<'_> {
    /// `reg = Fields.<size at off>`, zero-extended.
    pub fn ld(&mut self, size: u8, reg: u8, off: usize) {
        self.a.ldx(size, reg, FP, at(off));
    }

    pub fn load_int(&mut self, reg: u8, f: IntField) {
        let (size, off) = int_loc(f);
        self.ld(size, reg, off);
    }

    /// `reg` = word `i` (0..4) of an address field, as a big-endian number.
    pub fn addr_word(&mut self, reg: u8, f: AddrField, i: usize) {
        self.ld(op::W, reg, addr_off(f) + 4 * i);
        self.a.be(reg, 32);
    }

    /// R1 = the address's high 64 bits, R2 its low 64 bits (R5 clobbered).
    pub fn load128(&mut self, f: AddrField) {
        for (reg, i) in [(R1, 0), (R2, 2)] {
            self.addr_word(reg, f, i);
            self.a.alu_imm(op::LSH, reg, 32);
            self.addr_word(R5, f, i + 1);
            self.a.alu(op::OR, reg, R5);
        }
    }

    /// `reg` = a MAC field as a 48-bit big-endian number (`tmp` clobbered).
    /// Read as three 16-bit halves: `eth_dst` is only 2-aligned, and the
    /// verifier wants every stack access aligned to its size.
    pub fn load_mac(&mut self, reg: u8, tmp: u8, f: MacField) {
        let off = mac_off(f);
        self.ld(op::H, reg, off);
        self.a.be(reg, 16);
        for i in [2, 4] {
            self.a.alu_imm(op::LSH, reg, 16);
            self.ld(op::H, tmp, off + i);
            self.a.be(tmp, 16);
            self.a.alu(op::OR, reg, tmp);
        }
    }

    /// Go to `f` unless the packet has one of the headers in `need` (an
    /// empty need always holds). R1 clobbered.
    pub fn need(&mut self, need: u32, f: Label) {
        if need == 0 {
            return;
        }
        self.ld(op::W, R1, offset_of!(Fields, present));
        self.a.alu32_imm(op::AND, R1, need as i32);
        self.a.jmp32_imm(op::JEQ, R1, 0, f);
    }

    /// Go to `l4` for an IPv4 packet, `l6` for an IPv6 one (as
    /// `interp::addr` reads the family: `ip_version` and its `present`
    /// bit), else to `none`. R1, R2 clobbered.
    pub fn family(&mut self, l4: Label, l6: Label, none: Label) {
        let try6 = self.a.label();
        self.ld(op::B, R1, offset_of!(Fields, ip_version));
        self.ld(op::W, R2, offset_of!(Fields, present));
        self.a.jmp_imm(op::JNE, R1, 4, try6);
        self.a.jmp_imm(op::JSET, R2, present::IP4 as i32, l4);
        self.a.ja(none);
        self.a.bind(try6);
        self.a.jmp_imm(op::JNE, R1, 6, none);
        self.a.jmp_imm(op::JSET, R2, present::IP6 as i32, l6);
        self.a.ja(none);
    }

    /// `if reg <op> value goto l`, unsigned 64-bit (`tmp` holds a constant
    /// that does not fit a sign-extended immediate).
    pub fn jcmp(&mut self, o: u8, reg: u8, value: u64, tmp: u8, l: Label) {
        if value <= i32::MAX as u64 {
            self.a.jmp_imm(o, reg, value as i32, l);
        } else {
            self.a.ld_imm64(tmp, value);
            self.a.jmp(o, reg, tmp, l);
        }
    }

    /// Go to `t` when `reg` is in one of the sorted disjoint inclusive
    /// `ranges`, else to `f`: a bisection tree (`tmp` clobbered).
    pub fn tree(&mut self, reg: u8, tmp: u8, ranges: &[(u64, u64)], t: Label, f: Label) {
        if ranges.len() <= 3 {
            for &(lo, hi) in ranges {
                if lo == hi {
                    self.jcmp(op::JEQ, reg, lo, tmp, t);
                    continue;
                }
                if lo > 0 {
                    self.jcmp(op::JLT, reg, lo, tmp, f);
                }
                self.jcmp(op::JLE, reg, hi, tmp, t);
            }
            self.a.ja(f);
            return;
        }
        let mid = ranges.len() / 2;
        let (lo, hi) = ranges[mid];
        let left = self.a.label();
        self.jcmp(op::JLT, reg, lo, tmp, left);
        self.jcmp(op::JLE, reg, hi, tmp, t);
        self.tree(reg, tmp, &ranges[mid + 1..], t, f);
        self.a.bind(left);
        self.tree(reg, tmp, &ranges[..mid], t, f);
    }

    /// Go to `yes` when (R1, R2) as a 128-bit number is below `c` (or at most
    /// `c`, when `or_equal`), else to `no`. R3, R4 clobbered.
    fn cmp128(&mut self, c: u128, or_equal: bool, yes: Label, no: Label) {
        let (hi, lo) = ((c >> 64) as u64, c as u64);
        self.a.ld_imm64(R3, hi);
        self.a.jmp(op::JLT, R1, R3, yes);
        self.a.jmp(op::JGT, R1, R3, no);
        let o = if or_equal { op::JLE } else { op::JLT };
        self.jcmp(o, R2, lo, R4, yes);
        self.a.ja(no);
    }

    /// [`Gen::tree`] over 128-bit values in (R1 high, R2 low). R3–R4 clobbered.
    pub fn tree128(&mut self, ranges: &[(u128, u128)], t: Label, f: Label) {
        if ranges.is_empty() {
            self.a.ja(f);
            return;
        }
        let mid = ranges.len() / 2;
        let (lo, hi) = ranges[mid];
        let left = self.a.label();
        let not_below = self.a.label();
        let right = self.a.label();
        if lo > 0 {
            self.cmp128(lo, false, left, not_below);
        }
        self.a.bind(not_below);
        self.cmp128(hi, true, t, right);
        self.a.bind(right);
        self.tree128(&ranges[mid + 1..], t, f);
        self.a.bind(left);
        self.tree128(&ranges[..mid], t, f);
    }

    /// Fall through when the address field's top `len` bits (of its family's
    /// width: 32 for IPv4, in word 3) equal those of `net`, else go to `no`.
    /// The family is the caller's. R1 clobbered.
    pub fn prefix(&mut self, f: AddrField, v6: bool, net: u128, len: u8, no: Label) {
        let (first, words) = if v6 { (0, 4) } else { (3, 1) };
        for w in 0..words {
            let bits = (i32::from(len) - 32 * w as i32).clamp(0, 32);
            if bits == 0 {
                break;
            }
            let shift_words = (words - 1 - w) * 32;
            let word = (net >> shift_words) as u32;
            self.addr_word(R1, f, first + w);
            let shift = 32 - bits;
            if shift > 0 {
                self.a.alu32_imm(op::RSH, R1, shift);
            }
            self.a.jmp32_imm(op::JNE, R1, (word >> shift) as i32, no);
        }
    }

    /// Write the whole `Decision` but its hash.
    pub fn store(&mut self, action: lbp_abi::Action, target: u32, rule: u32, stage: u32) {
        let d = super::DECISION_OFF;
        self.a.st_imm(op::W, FP, d, action as i32);
        self.a.st_imm(op::W, FP, d + 4, target as i32);
        self.a.st_imm(op::W, FP, d + 8, rule as i32);
        self.a.st_imm(op::W, FP, d + 12, stage as i32);
    }

    /// The balance exit of a service (by its hash mask).
    pub fn balance_exit(&mut self, service: u32) -> Label {
        let mask = self
            .prog
            .services
            .get(service as usize)
            .map_or(lbp_abi::hash_field::ALL, |s| s.hash_mask);
        if let Some(&(_, l)) = self.balance.iter().find(|(m, _)| *m == mask) {
            return l;
        }
        let l = self.a.label();
        self.balance.push((mask, l));
        l
    }
}
