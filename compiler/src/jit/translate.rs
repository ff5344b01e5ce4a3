//! The [`Translator`]: its state, the field offsets it loads from, and the
//! function's skeleton (entry block, the family, the filter, then the stages
//! after it).

use super::tables::{Helper, Tables};
use crate::error::{CompileError, code};
use crate::ir::{self, AddrField, CmpOp, Cond, CondKind, IntField, MacField, Program};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};
use lbp_abi::{Action as A, Fields, NO_RULE, present, stage};
use std::mem::offset_of;

pub(super) const OFF_PRESENT: i32 = offset_of!(Fields, present) as i32;
pub(super) const OFF_IP_VERSION: i32 = offset_of!(Fields, ip_version) as i32;
pub(super) const OFF_IP_PROTO: i32 = offset_of!(Fields, ip_proto) as i32;
pub(super) const OFF_IP_TTL: i32 = offset_of!(Fields, ip_ttl) as i32;
pub(super) const OFF_DPORT: i32 = offset_of!(Fields, dport) as i32;
pub(super) const OFF_TCP_FLAGS: i32 = offset_of!(Fields, tcp_flags) as i32;

pub(super) fn addr_offset(f: AddrField) -> i32 {
    (match f {
        AddrField::Src => offset_of!(Fields, ip_src),
        AddrField::Dst => offset_of!(Fields, ip_dst),
    }) as i32
}

pub(super) fn mac_offset(f: MacField) -> i32 {
    (match f {
        MacField::Src => offset_of!(Fields, eth_src),
        MacField::Dst => offset_of!(Fields, eth_dst),
    }) as i32
}

/// The offset and width in bytes of an integer field.
pub(super) fn int_offset(f: IntField) -> (i32, u8) {
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

pub(super) fn cc(op: CmpOp) -> IntCC {
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
pub(super) fn field_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

/// The two 64-bit words of a big-endian 128-bit value as native-order loads of
/// its bytes 0..8 and 8..16 read them.
pub(super) fn ne_words(v: u128) -> (u64, u64) {
    let b = v.to_be_bytes();
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    l.copy_from_slice(&b[8..]);
    (u64::from_ne_bytes(h), u64::from_ne_bytes(l))
}

/// A packet address as a helper receives it (see [`addr_of`](super::tables::addr_of)).
pub(super) struct AddrKey {
    pub(super) fam: Value,
    pub(super) hi: Value,
    pub(super) lo: Value,
}

/// Translates one [`Program`] into the body of the filter function.
pub(super) struct Translator<'a> {
    pub(super) b: FunctionBuilder<'a>,
    pub(super) module: &'a mut JITModule,
    pub(super) prog: &'a Program,
    pub(super) tables: &'a Tables,
    /// Declared in the module, in the order of `Helper::ALL`.
    pub(super) helper_ids: Vec<FuncId>,
    /// Imported into the function on first use.
    pub(super) helper_refs: [Option<FuncRef>; Helper::ALL.len()],
    pub(super) tables_ptr: Value,
    pub(super) fields: Value,
    pub(super) out: Value,
    /// `Fields::present`, loaded once in the entry block (which dominates all).
    pub(super) present: Value,
    /// The packet's family where the code being emitted runs (see [`Fam`]).
    pub(super) fam: Fam,
    /// With `Fam::Any`: `interp::addr`'s two cases (IPv4, IPv6) as 0 or 1,
    /// computed once before the filter from `ip_version` and the IP4/IP6 bits.
    pub(super) fam_vals: Option<(Value, Value)>,
    /// `present` bits known to be set where the code being emitted runs (ETH
    /// after the malformed check, the family's bit in a family's copy, and the
    /// needs of the conjuncts already passed in an `&&` chain): a need that
    /// includes one of them holds without a test.
    pub(super) known: u32,
    /// Whether the filter is emitted once per family (see [`SPECIALIZE_MAX_NODES`](super::SPECIALIZE_MAX_NODES)).
    pub(super) specialize: bool,
    /// The block that stores a `balance` decision and its flow hash, with the
    /// decision's first two words as I64 parameters; created on first use.
    pub(super) balance_exit: Option<Block>,
}

/// Which of `interp::addr`'s cases the packet is in, where known at compile
/// time: small filters are emitted once per family, so that an address test
/// becomes one compare (or a constant) and the family is tested once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fam {
    /// Not known: tested at run time (`is4`, `is6`).
    Any,
    V4,
    V6,
    /// Neither IPv4 nor IPv6.
    NoIp,
}

/// A condition known at compile time, or a 0/1 value computed at run time.
#[derive(Clone, Copy, Debug)]
pub(super) enum Truth {
    Known(bool),
    Test(Value),
}

/// A condition node's `need`, and the `present` bits that hold where its
/// condition held (for a node that always tests its need).
pub(super) fn implied_bits(c: &Cond) -> u32 {
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
    pub(super) fn new(
        mut b: FunctionBuilder<'a>,
        module: &'a mut JITModule,
        prog: &'a Program,
        tables: &'a Tables,
        helper_ids: Vec<FuncId>,
        specialize: bool,
    ) -> Result<Translator<'a>, CompileError> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let &[tables_ptr, fields, out] = b.block_params(entry) else {
            return Err(CompileError::new(
                code::INTERNAL,
                "the filter function must have three parameters",
            ));
        };
        let present = b.ins().load(types::I32, field_flags(), fields, OFF_PRESENT);
        if helper_ids.len() != Helper::ALL.len() {
            return Err(CompileError::new(
                code::INTERNAL,
                "every helper must be declared",
            ));
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
    pub(super) fn translate_program(mut self) -> Result<(), CompileError> {
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
    pub(super) fn compute_family(&mut self) -> (Value, Value) {
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
    pub(super) fn translate_filter_and_tail(&mut self) -> Result<(), CompileError> {
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
            // The inline rules before every merged rule first (a rule that
            // holds there decides without a lookup); then the merged rules'
            // answer; then the other inline rules in order, each tested only
            // while its index is below that answer.
            let first_merged = cls.first_merged();
            let split = cls.inline.partition_point(|&i| i < first_merged);
            let (before, after_groups) = cls.inline.split_at(split);
            for &i in before {
                let Some(rule) = self.prog.rules.get(i as usize) else {
                    return Err(CompileError::new(code::INTERNAL, format!("no rule {i}")));
                };
                self.b.switch_to_block(cur);
                let hit = self.b.create_block();
                let next = self.b.create_block();
                self.translate_cond(&rule.cond, hit, next, 0)?;
                self.b.switch_to_block(hit);
                self.translate_action(i, rule.action, after);
                cur = next;
            }
            self.b.switch_to_block(cur);
            let best = self.translate_groups();
            let merged = self.b.create_block();
            cur = self.b.create_block();
            self.b.ins().jump(cur, &[]);
            for &i in after_groups {
                let Some(rule) = self.prog.rules.get(i as usize) else {
                    return Err(CompileError::new(code::INTERNAL, format!("no rule {i}")));
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

    /// The block of a rule whose condition held.
    pub(super) fn translate_action(&mut self, i: u32, action: ir::Action, after: Block) {
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
    pub(super) fn translate_tail(&mut self, with_services: Value) {
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
}
