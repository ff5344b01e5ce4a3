//! Ending the function: storing a decision (constant, `balance` with its flow
//! hash, `reset` or `drop`, `expire`) and calling helpers.

use super::tables::Helper;
use super::translate::{
    OFF_DPORT, OFF_IP_PROTO, OFF_IP_TTL, OFF_TCP_FLAGS, Translator, addr_offset, field_flags,
};
use crate::ir::AddrField;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, BlockArg, InstBuilder, MemFlagsData, Value, types};
use cranelift_module::Module;
use lbp_abi::{Action as A, Decision, Fields, present, tcp_flag};
use std::mem::offset_of;

impl<'a> Translator<'a> {
    /// The block every `balance` decision ends in: its first two words (the
    /// parameters), then the flow hash over the service's fields; or, for a
    /// packet that expires, `Expire` with the same target, rule and stage and
    /// no hash.
    pub(super) fn translate_balance_exit(&mut self, block: Block) {
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

    /// `lbp_abi::flow_hash(fields, hash_field::ALL)`, inline: the same mixing, in
    /// the same order, with the same constants (the differential tests compare
    /// the two on every balanced packet).
    pub(super) fn flow_hash_5tuple(&mut self) -> Value {
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

    /// `lbp_abi::expires`: the TTL (hop limit) is 1 or 0.
    pub(super) fn expires(&mut self) -> Value {
        let ttl = self
            .b
            .ins()
            .uload8(types::I32, field_flags(), self.fields, OFF_IP_TTL);
        self.b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, ttl, 1)
    }

    /// `interp::reset_or_drop`: Reset for a TCP packet that is no RST, else Drop.
    pub(super) fn reset_or_drop(&mut self) -> Value {
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

    pub(super) fn call(&mut self, h: Helper, args: &[Value]) -> Value {
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
    pub(super) fn exit_with(&mut self, action: Value, target: Value, rule: Value, stage: Value) {
        let w0 = self.pair(action, target);
        let w1 = self.pair(rule, stage);
        self.exit_words(w0, w1);
    }

    pub(super) fn exit_const(&mut self, action: A, target: u32, rule: u32, stage: u32) {
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
    pub(super) fn exit_balance(&mut self, w0: Value, w1: Value) {
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
    pub(super) fn exit_words(&mut self, w0: Value, w1: Value) {
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
    pub(super) fn store_words(&mut self, w0: Value, w1: Value) {
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
    pub(super) fn pair(&mut self, lo: Value, hi: Value) -> Value {
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
    pub(super) fn word_high(&mut self, w: Value) -> Value {
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
pub(super) fn pair_const(lo: u32, hi: u32) -> u64 {
    let mut x = [0u8; 8];
    x[..4].copy_from_slice(&lo.to_ne_bytes());
    x[4..].copy_from_slice(&hi.to_ne_bytes());
    u64::from_ne_bytes(x)
}
