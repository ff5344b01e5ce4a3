//! Filter conditions: comparisons, `!`, `&&` and `||` as short-circuit
//! branches, address and MAC equality, set membership inline or through a
//! helper.

use super::limits::{INLINE_MAX, MAX_DEPTH};
use super::tables::{Helper, SetTable, Tables};
use super::translate::{
    Fam, OFF_TCP_FLAGS, Translator, Truth, addr_offset, cc, field_flags, implied_bits,
};
use crate::error::{CompileError, code};
use crate::ir::{Addr, AddrField, Cond, CondKind, IntField, MacField, SetId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, InstBuilder, Value, types};

impl<'a> Translator<'a> {
    /// Branch to `t` if the condition holds, else to `f`; ends the current block.
    pub(super) fn translate_cond(
        &mut self,
        c: &Cond,
        t: Block,
        f: Block,
        depth: u32,
    ) -> Result<(), CompileError> {
        if depth > MAX_DEPTH {
            return Err(CompileError::new(
                code::TOO_DEEP,
                "a condition is nested too deeply to compile",
            )
            .at(c.span, "nested too deeply here"));
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
    pub(super) fn translate_chain(
        &mut self,
        xs: &[Cond],
        all: bool,
        t: Block,
        f: Block,
        depth: u32,
    ) -> Result<(), CompileError> {
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

    pub(super) fn translate_addr_eq(
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

    pub(super) fn translate_addr_fields(&mut self, eq: bool, t: Block, f: Block) {
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

    pub(super) fn translate_int_in(
        &mut self,
        need: u32,
        field: IntField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), CompileError> {
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

    pub(super) fn translate_addr_in(
        &mut self,
        need: u32,
        field: AddrField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), CompileError> {
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
    pub(super) fn in_v4_ranges(&mut self, off: i32, ranges: &[(u32, u32)]) -> Value {
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
    pub(super) fn in_v6_ranges(&mut self, off: i32, ranges: &[(u128, u128)]) -> Value {
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

    pub(super) fn translate_mac_in(
        &mut self,
        field: MacField,
        set: SetId,
        t: Block,
        f: Block,
    ) -> Result<(), CompileError> {
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

    pub(super) fn set(&self, id: SetId) -> Result<&'a SetTable, CompileError> {
        let tables: &'a Tables = self.tables;
        tables
            .sets
            .get(id as usize)
            .ok_or_else(|| CompileError::from(format!("set {id} does not exist")))
    }
}
