//! Rules merged by shape into hash tables ([`crate::classify`]): the group
//! lookups and how their best rule combines with the rules left inline.

use super::tables::{CODE_APP, CODE_BALANCE, CODE_DROP, CODE_LOCAL, CODE_RESET, Helper, Tables};
use super::translate::{OFF_TCP_FLAGS, Translator, Truth, addr_offset, field_flags, mac_offset};
use crate::ir::{AddrField, MacField};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, BlockArg, InstBuilder, MemFlagsData, Value, types};
use lbp_abi::{Action as A, NO_RULE, stage};

impl<'a> Translator<'a> {
    /// The merged groups, in order: for each, its needs, guards and (for a
    /// group with exact fields) the key's hash and filter bits inline, exactly
    /// as `classify::Group::admit` computes them, and the helper only for
    /// packets the filter admits. Returns the lowest merged rule that holds, or
    /// `NO_RULE`.
    pub(super) fn translate_groups(&mut self) -> Value {
        use crate::classify::{FILTER_BIT2_SHIFT, FILTER_WORD_SHIFT, HASH_FINISH_MUL, HASH_SEED};
        let tables: &'a Tables = self.tables;
        let mut best = self.konst(types::I32, u64::from(NO_RULE));
        for (gi, g) in tables.classifier.groups.iter().enumerate() {
            let plan = g.plan();
            let mut ok = Truth::Known(true);
            for &n in plan.needs {
                let h = self.need_t(n);
                ok = self.t_and(ok, h);
            }
            if plan.ip {
                let fam = self.is_ip();
                ok = self.t_and(ok, fam);
            }
            if let Truth::Known(false) = ok {
                // No packet of this family can match the group.
                continue;
            }
            for guard in plan.guards {
                let x = self.int_field(guard.field);
                let r = self.any_range(types::I64, x, guard.ranges.iter().copied());
                ok = self.t_and(ok, Truth::Test(r));
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
            let filter = plan.filter;
            if plan.exact.is_empty() || filter.is_empty() {
                let zero = self.b.ins().iconst(types::I64, 0);
                let r = self.call(Helper::Group, &[self.fields, gidx, zero, best]);
                self.b.ins().jump(next, &[BlockArg::Value(r)]);
            } else {
                let mut h = self.b.ins().iconst(types::I64, HASH_SEED as i64);
                for &(field, _) in plan.exact {
                    h = self.hash_field(h, field);
                }
                let s = self.b.ins().ushr_imm_u(h, 32);
                let x = self.b.ins().bxor(h, s);
                let x = self.b.ins().imul_imm_s(x, HASH_FINISH_MUL as i64);
                let s = self.b.ins().ushr_imm_u(x, 32);
                let h = self.b.ins().bxor(x, s);
                // The filter's word and bits.
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
                // Both bits: `word >> h` and `word >> (h >> 6)` (shift amounts
                // are taken mod 64), each bit 0.
                let b1 = self.b.ins().ushr(word, h);
                let h2 = self.b.ins().ushr_imm_u(h, i64::from(FILTER_BIT2_SHIFT));
                let b2 = self.b.ins().ushr(word, h2);
                let both = self.b.ins().band(b1, b2);
                let bit = self.b.ins().band_imm_u(both, 1);
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

    /// One mix of the key hash (`classify::keys::mix`).
    fn mix(&mut self, h: Value, w: Value) -> Value {
        use crate::classify::{HASH_MUL, HASH_ROT};
        let x = self.b.ins().rotl_imm_u(h, i64::from(HASH_ROT));
        let x = self.b.ins().bxor(x, w);
        self.b.ins().imul_imm_s(x, HASH_MUL as i64)
    }

    /// `h` with the packet's value of `field` mixed in, as
    /// `classify::keys::hash_val` does: an IPv4 address as one word with its
    /// tag on top, an IPv6 address as two, any other field as one word. For an
    /// address the packet must be IPv4 or IPv6 (the caller checked).
    pub(super) fn hash_field(&mut self, h: Value, field: crate::classify::AtomField) -> Value {
        use crate::classify::AtomField;
        let AtomField::Addr(src) = field else {
            let w = self.field_word(field);
            return self.mix(h, w);
        };
        let which = if src { AddrField::Src } else { AddrField::Dst };
        let off = addr_offset(which);
        // Only what the family needs is loaded (an unused load stays in the
        // code).
        let v4 = |t: &mut Self| {
            let a4 = t.load_be32(off + 12);
            let a4 = t.b.ins().uextend(types::I64, a4);
            let w = t.b.ins().bor_imm_u(a4, 4i64 << 56);
            t.mix(h, w)
        };
        let v6 = |t: &mut Self| {
            let hi6 = t.load_be64(off);
            let lo6 = t.load_be64(off + 8);
            let x = t.mix(h, lo6);
            let w = t.b.ins().bxor_imm_u(hi6, 6i64 << 56);
            t.mix(x, w)
        };
        match self.is_fam(false) {
            Truth::Known(true) => v4(self),
            Truth::Known(false) => v6(self),
            Truth::Test(is4) => {
                let h4 = v4(self);
                let h6 = v6(self);
                self.b.ins().select(is4, h4, h6)
            }
        }
    }

    /// The value of a field other than an address as `classify::value` gives
    /// it (below 2^64, tag 0), as one 64-bit word.
    fn field_word(&mut self, field: crate::classify::AtomField) -> Value {
        use crate::classify::AtomField;
        match field {
            AtomField::Int(k) => self.int_field(k.field()),
            AtomField::Addr(_) => {
                // Addresses are mixed by `hash_field`; never reached.
                self.b.ins().iconst(types::I64, 0)
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
                self.b.ins().bor(a, b)
            }
            AtomField::Flags(mask) => {
                let flags =
                    self.b
                        .ins()
                        .uload8(types::I32, field_flags(), self.fields, OFF_TCP_FLAGS);
                let m = self.b.ins().band_imm_u(flags, i64::from(mask));
                let v = self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0);
                self.b.ins().uextend(types::I64, v)
            }
            AtomField::Bit(bit) => {
                let m = self.b.ins().band_imm_u(self.present, i64::from(bit));
                let v = self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0);
                self.b.ins().uextend(types::I64, v)
            }
        }
    }

    /// The rule code of rule `rule` (an index a group returned), loaded from
    /// the rule codes as `lbp_jit_rule_code` reads it.
    fn rule_code(&mut self, rule: Value) -> Value {
        let codes: &'a [u32] = &self.tables.rule_codes;
        if codes.is_empty() {
            return self.call(Helper::RuleCode, &[rule]);
        }
        // The generated code reads the codes at a constant address: a Vec in
        // the boxed `Tables`, never changed after compilation and freed only
        // with the code; the index is held below its length.
        let last = self.konst(types::I32, codes.len() as u64 - 1);
        let i = self.b.ins().umin(rule, last);
        let i = self.b.ins().uextend(types::I64, i);
        let off = self.b.ins().ishl_imm_u(i, 2);
        let base = self.b.ins().iconst(types::I64, codes.as_ptr() as i64);
        let addr = self.b.ins().iadd(base, off);
        let flags = MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_aligned();
        self.b.ins().load(types::I32, flags, addr, 0)
    }

    /// After a merged rule decided (`best`, or `NO_RULE` when none did): its
    /// action, read from the rule codes.
    pub(super) fn translate_merged(&mut self, best: Value, after: Block) {
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
        let code = self.rule_code(best);
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
}
