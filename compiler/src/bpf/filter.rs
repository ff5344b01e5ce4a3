//! A filter condition as jumping code: `cond(c, jump_if, target)` goes to
//! `target` when `c` is `jump_if` and falls through otherwise, so `&&`, `||`
//! and `!` short-circuit without materialising a truth value. Each leaf is
//! tested as `interp::eval` reads it: its `need` first (a test of a header the
//! packet lacks is false), then the family where it reads an address (an
//! address of a packet without IP makes the leaf false), then the compare.

use std::mem::offset_of;

use super::BpfError;
use super::MAX_SET_RANGES;
use super::emit::{Gen, addr_off, int_max, jop, mac_off};
use crate::ir::{Addr, AddrField, Cond, CondKind, Set, compare};
use lbp_abi::bpf::{Label, op, reg::*};
use lbp_abi::{Fields, present};

impl Gen<'_> {
    /// Go to `target` when `c` is `jump_if`; fall through otherwise.
    pub fn cond(&mut self, c: &Cond, jump_if: bool, target: Label) -> Result<(), BpfError> {
        match &c.kind {
            CondKind::Const(b) => {
                if *b == jump_if {
                    self.a.ja(target);
                }
            }
            CondKind::Not(x) => self.cond(x, !jump_if, target)?,
            // `&&` jumping when false, and `||` jumping when true: each
            // operand may jump alone.
            CondKind::And(xs) if !jump_if => {
                for x in xs {
                    self.cond(x, false, target)?;
                }
            }
            CondKind::Or(xs) if jump_if => {
                for x in xs {
                    self.cond(x, true, target)?;
                }
            }
            // `&&` jumping when true, `||` when false: every operand but the
            // last decides the other way to a label after the last.
            CondKind::And(xs) | CondKind::Or(xs) => {
                let Some((last, init)) = xs.split_last() else {
                    // The empty `&&` is true, the empty `||` false.
                    let value = matches!(c.kind, CondKind::And(_));
                    if value == jump_if {
                        self.a.ja(target);
                    }
                    return Ok(());
                };
                let skip = self.a.label();
                for x in init {
                    self.cond(x, !jump_if, skip)?;
                }
                self.cond(last, jump_if, target)?;
                self.a.bind(skip);
            }
            _ => {
                let skip = self.a.label();
                let (t, f) = if jump_if {
                    (target, skip)
                } else {
                    (skip, target)
                };
                self.leaf(c, t, f)?;
                self.a.bind(skip);
            }
        }
        Ok(())
    }

    /// A leaf: go to `t` when it holds, else to `f` (never falls through).
    fn leaf(&mut self, c: &Cond, t: Label, f: Label) -> Result<(), BpfError> {
        let present_off = offset_of!(Fields, present);
        match &c.kind {
            CondKind::Int {
                need,
                field,
                op: o,
                value,
            } => {
                self.need(*need, f);
                let max = int_max(*field);
                if *value > max {
                    // Every value of the field is below the constant.
                    let holds = compare(*o, 0, *value);
                    self.a.ja(if holds { t } else { f });
                    return Ok(());
                }
                self.load_int(R1, *field);
                self.a
                    .jmp32_imm(jop(*o, false), R1, *value as u32 as i32, t);
                self.a.ja(f);
            }
            CondKind::IntIn { need, field, set } => {
                self.need(*need, f);
                let max = int_max(*field);
                let ranges: Vec<(u64, u64)> = match self.set(*set)? {
                    Set::Int(r) => r
                        .iter()
                        .filter(|&&(lo, _)| lo <= max)
                        .map(|&(lo, hi)| (lo, hi.min(max)))
                        .collect(),
                    _ => Vec::new(),
                };
                limit(ranges.len())?;
                self.load_int(R1, *field);
                self.tree(R1, R3, &ranges, t, f);
            }
            CondKind::Flag { need, mask, expect } => {
                self.need(*need, f);
                self.ld(op::B, R1, offset_of!(Fields, tcp_flags));
                self.bits(R1, u32::from(*mask), *expect, t, f);
            }
            CondKind::Bit { need, bit, expect } => {
                self.need(*need, f);
                self.ld(op::W, R1, present_off);
                self.bits(R1, *bit, *expect, t, f);
            }
            CondKind::AddrEq {
                need,
                field,
                addr,
                eq,
            } => {
                self.need(*need, f);
                let (yes, no) = if *eq { (t, f) } else { (f, t) };
                let (l4, l6) = (self.a.label(), self.a.label());
                self.family(l4, l6, f);
                for (v6, l) in [(false, l4), (true, l6)] {
                    self.a.bind(l);
                    match (*addr, v6) {
                        (Addr::V4(a), false) => self.prefix(*field, false, u128::from(a), 32, no),
                        (Addr::V6(a), true) => self.prefix(*field, true, a, 128, no),
                        // Another family: never equal.
                        _ => {
                            self.a.ja(no);
                            continue;
                        }
                    }
                    self.a.ja(yes);
                }
            }
            CondKind::AddrIn { need, field, set } => {
                self.need(*need, f);
                let (v4, v6) = match self.set(*set)? {
                    Set::Prefix { v4, v6 } => (v4.clone(), v6.clone()),
                    _ => (Vec::new(), Vec::new()),
                };
                limit(v4.len().max(v6.len()))?;
                // A family the set has no range of: false at once, without
                // loading the address.
                let l4 = if v4.is_empty() { f } else { self.a.label() };
                let l6 = if v6.is_empty() { f } else { self.a.label() };
                self.family(l4, l6, f);
                if !v4.is_empty() {
                    self.a.bind(l4);
                    self.addr_word(R1, *field, 3);
                    let r4: Vec<(u64, u64)> = v4
                        .iter()
                        .map(|&(lo, hi)| (u64::from(lo), u64::from(hi)))
                        .collect();
                    self.tree(R1, R3, &r4, t, f);
                }
                if !v6.is_empty() {
                    self.a.bind(l6);
                    self.load128(*field);
                    self.tree128(&v6, t, f);
                }
            }
            CondKind::MacEq { field, mac, eq } => {
                self.need(present::ETH, f);
                let (yes, no) = if *eq { (t, f) } else { (f, t) };
                self.load_mac(R1, R2, *field);
                self.jcmp(op::JEQ, R1, mac48(*mac), R3, yes);
                self.a.ja(no);
            }
            CondKind::MacIn { field, set } => {
                self.need(present::ETH, f);
                let mut macs: Vec<(u64, u64)> = match self.set(*set)? {
                    Set::Mac(ms) => ms.iter().map(|&m| (mac48(m), mac48(m))).collect(),
                    _ => Vec::new(),
                };
                macs.sort_unstable();
                macs.dedup();
                limit(macs.len())?;
                self.load_mac(R1, R2, *field);
                self.tree(R1, R3, &macs, t, f);
            }
            CondKind::IntFields { need, a, op: o, b } => {
                self.need(*need, f);
                self.load_int(R1, *a);
                self.load_int(R2, *b);
                self.a.jmp32(jop(*o, false), R1, R2, t);
                self.a.ja(f);
            }
            CondKind::AddrFields { eq } => {
                let (yes, no) = if *eq { (t, f) } else { (f, t) };
                let (l4, l6) = (self.a.label(), self.a.label());
                self.family(l4, l6, f);
                for (words, l) in [(3..4, l4), (0..4, l6)] {
                    self.a.bind(l);
                    for w in words {
                        self.ld(op::W, R1, addr_off(AddrField::Src) + 4 * w);
                        self.ld(op::W, R2, addr_off(AddrField::Dst) + 4 * w);
                        self.a.jmp32(op::JNE, R1, R2, no);
                    }
                    self.a.ja(yes);
                }
            }
            CondKind::MacFields { eq } => {
                self.need(present::ETH, f);
                let (yes, no) = if *eq { (t, f) } else { (f, t) };
                let (s, d) = (
                    mac_off(crate::ir::MacField::Src),
                    mac_off(crate::ir::MacField::Dst),
                );
                for off in [0, 2, 4] {
                    self.ld(op::H, R1, s + off);
                    self.ld(op::H, R2, d + off);
                    self.a.jmp32(op::JNE, R1, R2, no);
                }
                self.a.ja(yes);
            }
            CondKind::Const(_) | CondKind::Not(_) | CondKind::And(_) | CondKind::Or(_) => {
                return Err(BpfError::Internal("a compound condition as a leaf".into()));
            }
        }
        Ok(())
    }

    /// Go to `t` when `(reg & mask != 0) == expect`, else to `f`.
    fn bits(&mut self, reg: u8, mask: u32, expect: bool, t: Label, f: Label) {
        let (set, clear) = if expect { (t, f) } else { (f, t) };
        self.a.jmp32_imm(op::JSET, reg, mask as i32, set);
        self.a.ja(clear);
    }

    fn set(&self, id: u32) -> Result<&Set, BpfError> {
        self.prog
            .sets
            .get(id as usize)
            .ok_or_else(|| BpfError::Internal(format!("set {id} out of range")))
    }
}

/// A MAC as a 48-bit big-endian number.
fn mac48(m: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&m);
    u64::from_be_bytes(b)
}

fn limit(n: usize) -> Result<(), BpfError> {
    if n > MAX_SET_RANGES {
        return Err(BpfError::Limit(format!(
            "a set of {n} ranges in one family, at most {MAX_SET_RANGES} are tested inline"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::CmpOp;

    #[test]
    fn macs_are_48_bit_numbers_and_jumps_negate() {
        assert_eq!(mac48([1, 2, 3, 4, 5, 6]), 0x0102_0304_0506);
        for o in [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ] {
            assert_ne!(jop(o, false), jop(o, true));
        }
    }
}
