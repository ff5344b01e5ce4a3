//! The decision's skeleton, as `interp::decide`: malformed drop, the filter
//! rules in order, the stages after the filter (`tail.rs`), and the shared
//! exits every decision ends in: reset-or-drop, a forward's TTL expiry, and a
//! balance's expiry or flow hash (`lbp_abi::flow_hash`, computed here in eBPF
//! over the service's hash fields).
//!
//! Every decision stores the `Decision`'s first four words with immediates
//! (the hash word is zeroed beforehand) and jumps to one of the exits, which
//! end at `done`.

use std::mem::offset_of;

use super::emit::{Gen, addr_off};
use super::merged::{BEST_OFF, Merged};
use super::{BpfError, DECISION_OFF};
use crate::ir::{Action, AddrField, Program};
use lbp_abi::Decision;
use lbp_abi::bpf::{Asm, Label, MapSpec, op, reg::*};
use lbp_abi::{Action as A, Fields, NO_RULE, hash_field, present, stage, tcp_flag};

/// Emit the decision for the `Fields` at `FIELDS_OFF` into the `Decision` at
/// `DECISION_OFF` (zeroed by the caller); ends by jumping to `done`. Maps it
/// needs are appended to `maps`.
pub(super) fn emit(
    a: &mut Asm,
    maps: &mut Vec<MapSpec>,
    prog: &Program,
    merged: &Merged,
    done: Label,
) -> Result<(), BpfError> {
    let reset = a.label();
    let forward = a.label();
    let mut g = Gen {
        a,
        maps,
        prog,
        done,
        reset,
        forward,
        balance: Vec::new(),
    };
    g.malformed();
    let (services, route) = (g.a.label(), g.a.label());
    // Merged groups first (`merged.rs`); a rule left inline is tested only
    // while the groups' answer is not a lower rule.
    g.merged_lookups(merged);
    let (dispatch, tail) = (g.a.label(), g.a.label());
    for (i, r) in prog.rules.iter().enumerate() {
        if merged.merged[i] {
            continue;
        }
        if (i as u32) > merged.first {
            g.a.ldx(op::W, R1, FP, BEST_OFF);
            g.a.jmp32_imm(op::JLT, R1, i as i32, dispatch);
        }
        let next = g.a.label();
        g.cond(&r.cond, false, next)?;
        g.rule_action(Some(i as u32), r.action, services, route);
        g.a.bind(next);
    }
    if merged.first != u32::MAX {
        g.a.ldx(op::W, R1, FP, BEST_OFF);
        g.a.jmp32_imm(op::JEQ, R1, -1, tail);
        g.a.bind(dispatch);
        g.merged_dispatch(merged, tail, services, route);
    }
    g.a.bind(tail);
    g.tail(services, route)?;
    g.exits();
    Ok(())
}

impl Gen<'_> {
    /// A packet marked malformed, or without Ethernet, is dropped at
    /// `stage::MALFORMED`.
    fn malformed(&mut self) {
        let bad = self.a.label();
        let ok = self.a.label();
        self.ld(op::W, R1, offset_of!(Fields, present));
        self.a
            .jmp32_imm(op::JSET, R1, present::MALFORMED as i32, bad);
        self.a.jmp32_imm(op::JSET, R1, present::ETH as i32, ok);
        self.a.bind(bad);
        self.store(A::Drop, 0, NO_RULE, stage::MALFORMED);
        self.a.ja(self.done);
        self.a.bind(ok);
    }

    /// What rule `i` does when its condition holds (`None`: a merged rule,
    /// whose index is at `merged::BEST_OFF`).
    pub(super) fn rule_action(
        &mut self,
        i: Option<u32>,
        action: Action,
        services: Label,
        route: Label,
    ) {
        let s = stage::FILTER;
        let (a, target, exit) = match action {
            Action::Accept => return self.a.ja(services),
            Action::Forward => return self.a.ja(route),
            Action::Drop => (A::Drop, 0, self.done),
            Action::Reset => (A::Reset, 0, self.reset),
            Action::Local => (A::Local, 0, self.done),
            Action::App(n) => (A::App, n, self.done),
            Action::Balance(svc) => (A::Balance, svc, self.balance_exit(svc)),
        };
        self.store(a, target, i.unwrap_or(0), s);
        if i.is_none() {
            self.a.ldx(op::W, R1, FP, BEST_OFF);
            self.a.stx(
                op::W,
                FP,
                DECISION_OFF + offset_of!(Decision, rule) as i16,
                R1,
            );
        }
        self.a.ja(exit);
    }

    /// The shared exits, after the last decision.
    fn exits(&mut self) {
        let d = DECISION_OFF;
        // Reset: only TCP that is no RST is answered; the rest is dropped.
        let to_drop = self.a.label();
        self.a.bind(self.reset);
        self.ld(op::W, R1, offset_of!(Fields, present));
        self.a.alu32_imm(op::AND, R1, present::TCP as i32);
        self.a.jmp32_imm(op::JEQ, R1, 0, to_drop);
        self.ld(op::B, R1, offset_of!(Fields, tcp_flags));
        self.a
            .jmp32_imm(op::JSET, R1, i32::from(tcp_flag::RST), to_drop);
        self.a.ja(self.done);
        self.a.bind(to_drop);
        self.a.st_imm(op::W, FP, d, A::Drop as i32);
        self.a.ja(self.done);

        // Forward: expire at a TTL of 1 or 0.
        let expire = self.a.label();
        self.a.bind(self.forward);
        self.ld(op::B, R1, offset_of!(Fields, ip_ttl));
        self.a.jmp_imm(op::JLE, R1, 1, expire);
        self.a.ja(self.done);

        // Balance: expire, or the flow hash over the service's fields.
        let balance = std::mem::take(&mut self.balance);
        for (mask, l) in balance {
            self.a.bind(l);
            self.ld(op::B, R1, offset_of!(Fields, ip_ttl));
            self.a.jmp_imm(op::JLE, R1, 1, expire);
            self.flow_hash(mask);
            self.a.stx(op::W, FP, d + 16, R1);
            self.a.ja(self.done);
        }
        self.a.bind(expire);
        self.a.st_imm(op::W, FP, d, A::Expire as i32);
        self.a.ja(self.done);
    }

    /// R1 = `lbp_abi::flow_hash` of the packet over the fields of `mask`
    /// (its low 32 bits are the hash). R2–R5 clobbered.
    fn flow_hash(&mut self, mask: u32) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        self.a.ld_imm64(R1, 0x6c62_7020_666c_6f77);
        self.a.ld_imm64(R4, K);
        for (bit, field) in [
            (hash_field::SRC, AddrField::Src),
            (hash_field::DST, AddrField::Dst),
        ] {
            if mask & bit != 0 {
                for half in [0, 2] {
                    self.word64(R2, field, half);
                    self.mix();
                }
            }
        }
        self.a.mov_imm(R2, 0);
        let parts = [
            (hash_field::PROTO, op::B, offset_of!(Fields, ip_proto), 32),
            (hash_field::SPORT, op::H, offset_of!(Fields, sport), 16),
            (hash_field::DPORT, op::H, offset_of!(Fields, dport), 0),
        ];
        for (bit, size, off, shift) in parts {
            if mask & bit != 0 {
                self.ld(size, R3, off);
                if shift > 0 {
                    self.a.alu_imm(op::LSH, R3, shift);
                }
                self.a.alu(op::OR, R2, R3);
            }
        }
        self.mix();
        // The final avalanche.
        for k in [0xff51_afd7_ed55_8ccd_u64, 0xc4ce_b9fe_1a85_ec53] {
            self.xor_shift33();
            self.a.ld_imm64(R4, k);
            self.a.alu(op::MUL, R1, R4);
        }
        self.xor_shift33();
    }

    /// R1 = (R1 rotated left by 27 ^ R2) * R4. R3 clobbered.
    fn mix(&mut self) {
        self.a.mov(R3, R1);
        self.a.alu_imm(op::LSH, R3, 27);
        self.a.alu_imm(op::RSH, R1, 37);
        self.a.alu(op::OR, R1, R3);
        self.a.alu(op::XOR, R1, R2);
        self.a.alu(op::MUL, R1, R4);
    }

    /// R1 ^= R1 >> 33. R3 clobbered.
    fn xor_shift33(&mut self) {
        self.a.mov(R3, R1);
        self.a.alu_imm(op::RSH, R3, 33);
        self.a.alu(op::XOR, R1, R3);
    }

    /// `reg` = words `i` and `i + 1` of an address as a big-endian 64-bit
    /// number. R5 clobbered.
    fn word64(&mut self, reg: u8, f: AddrField, i: usize) {
        self.ld(op::W, reg, addr_off(f) + 4 * i);
        self.a.be(reg, 32);
        self.a.alu_imm(op::LSH, reg, 32);
        self.ld(op::W, R5, addr_off(f) + 4 * (i + 1));
        self.a.be(R5, 32);
        self.a.alu(op::OR, reg, R5);
    }
}
