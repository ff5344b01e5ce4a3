//! Merged rule groups as hash maps: the filter rules of one shape made of
//! exact atoms only (`classify`: `tcp.dport == 22 && ip.src == A`, a set of
//! a few values, a flag, an interface) become one BPF hash map from the
//! values of their fields to the lowest rule of that key, as the JIT merges
//! them into tables. A packet costs one lookup per group instead of a test
//! per rule.
//!
//! Before the rules: each group's needs (the headers its atoms test), its key
//! built on the stack (a 24-byte slot per field: a tag word, then the value),
//! its map looked up; the lowest answer over the groups is kept at
//! [`BEST_OFF`]. The rules left inline run in order as before, but a rule
//! whose index is above that answer is not tested: the answer's action is
//! taken (its class from the class map, then the action's code with the
//! rule's index from the stack). Groups with range atoms stay inline.

use std::mem::offset_of;

use super::emit::Gen;
use crate::classify::{AtomField, Classifier, ExactOnly, Val};
use crate::ir::Action;
use lbp_abi::bpf::{Label, MapKind, MapSpec, op, reg::*};
use lbp_abi::{Fields, present};

/// The key under construction (at most three 24-byte slots, 8-aligned).
const KEY_OFF: i16 = -456;
/// The lowest rule the groups answered (`u32::MAX` for none).
pub(super) const BEST_OFF: i16 = -460;
/// One field's slot in a key: a tag word (the address family, else 0), a
/// pad word, 16 bytes of value.
const SLOT: usize = 24;

/// The groups of `cls` made hash maps, and the rules they took.
pub(super) struct Merged<'c> {
    groups: Vec<ExactOnly<'c>>,
    /// Per rule: merged (no inline code).
    pub merged: Vec<bool>,
    /// The lowest merged rule (`u32::MAX` without).
    pub first: u32,
}

/// The most groups made hash maps: a program may use 64 maps, and the
/// others take at most 16 (the fast path's, the out maps, two LPM tries, the
/// rule-to-class map). The largest groups are merged, the others stay inline.
pub const MAX_GROUPS: usize = 40;

/// The groups of exact atoms of `cls`, for a filter of `rules` rules.
pub(super) fn plan(cls: &Classifier, rules: usize) -> Merged<'_> {
    let mut groups: Vec<ExactOnly> = cls.groups.iter().filter_map(|g| g.exact_only()).collect();
    // The largest first (ties by first rule, for a stable program).
    groups.sort_by_key(|g| (std::cmp::Reverse(g.rules.len()), g.rules.first().copied()));
    groups.truncate(MAX_GROUPS);
    let mut merged = vec![false; rules];
    for g in &groups {
        for &r in &g.rules {
            if let Some(m) = merged.get_mut(r as usize) {
                *m = true;
            }
        }
    }
    let first = merged
        .iter()
        .position(|&m| m)
        .map_or(u32::MAX, |r| r as u32);
    Merged {
        groups,
        merged,
        first,
    }
}

impl Merged<'_> {
    /// How many rules stay inline.
    pub(super) fn inline(&self) -> usize {
        self.merged.iter().filter(|&&m| !m).count()
    }
}

/// A key's bytes as the program builds them.
fn key_bytes(key: &[Val], exact: &[(AtomField, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT * exact.len());
    for (&(tag, v), &(field, _)) in key.iter().zip(exact) {
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(&u32::from(tag).to_ne_bytes());
        match field {
            AtomField::Int(_) | AtomField::Flags(_) | AtomField::Bit(_) => {
                slot[8..16].copy_from_slice(&(v as u64).to_ne_bytes())
            }
            AtomField::Addr(_) if tag == 4 => {
                slot[8..12].copy_from_slice(&(v as u32).to_be_bytes())
            }
            AtomField::Addr(_) => slot[8..24].copy_from_slice(&v.to_be_bytes()),
            AtomField::Mac(_) => slot[8..14].copy_from_slice(&v.to_be_bytes()[10..]),
        }
        out.extend_from_slice(&slot);
    }
    out
}

impl Gen<'_> {
    /// The groups' lookups; the lowest answer at [`BEST_OFF`].
    pub(super) fn merged_lookups(&mut self, m: &Merged) {
        if m.groups.is_empty() {
            return;
        }
        self.a.st_imm(op::W, FP, BEST_OFF, -1);
        for g in &m.groups {
            let k = g.exact.len();
            let entries: Vec<(Vec<u8>, Vec<u8>)> = g
                .keys
                .iter()
                .map(|(key, rule)| (key_bytes(&key[..k], g.exact), rule.to_ne_bytes().to_vec()))
                .collect();
            self.maps.push(MapSpec {
                name: format!("group{}", self.maps.len()),
                kind: MapKind::Hash,
                key_size: (SLOT * k) as u32,
                value_size: 4,
                max_entries: entries.len().max(1) as u32,
                entries,
            });
            let map = self.maps.len() as u32 - 1;
            let skip = self.a.label();
            // What every rule of the group needs.
            for &need in g.needs.iter().filter(|&&n| n != 0) {
                self.ld(op::W, R1, offset_of!(Fields, present));
                self.a.alu32_imm(op::AND, R1, need as i32);
                self.a.jmp32_imm(op::JEQ, R1, 0, skip);
            }
            if g.ip {
                self.ld(op::W, R1, offset_of!(Fields, present));
                self.a
                    .alu32_imm(op::AND, R1, (present::IP4 | present::IP6) as i32);
                self.a.jmp32_imm(op::JEQ, R1, 0, skip);
            }
            for i in (0..(SLOT * k) as i16).step_by(8) {
                self.a.st_imm(op::DW, FP, KEY_OFF + i, 0);
            }
            for (j, &(f, _)) in g.exact.iter().enumerate() {
                self.key_slot(KEY_OFF + (SLOT * j) as i16, f, skip);
            }
            super::lookup(self.a, map, KEY_OFF);
            self.a.jmp_imm(op::JEQ, R0, 0, skip);
            self.a.ldx(op::W, R1, R0, 0);
            self.a.ldx(op::W, R2, FP, BEST_OFF);
            self.a.jmp32(op::JGE, R1, R2, skip);
            self.a.stx(op::W, FP, BEST_OFF, R1);
            self.a.bind(skip);
        }
    }

    /// One field's slot of a key at `FP + off`, zeroed already; `skip` when
    /// the field has no value (an address of no IP header).
    fn key_slot(&mut self, off: i16, f: AtomField, skip: Label) {
        let flag = |g: &mut Self, word: usize, size: u8, mask: u32| {
            let zero = g.a.label();
            g.ld(size, R1, word);
            g.a.alu32_imm(op::AND, R1, mask as i32);
            g.a.jmp32_imm(op::JEQ, R1, 0, zero);
            g.a.st_imm(op::DW, FP, off + 8, 1);
            g.a.bind(zero);
        };
        match f {
            AtomField::Int(k) => {
                self.load_int(R1, k.field());
                self.a.stx(op::DW, FP, off + 8, R1);
            }
            AtomField::Flags(mask) => {
                flag(self, offset_of!(Fields, tcp_flags), op::B, u32::from(mask))
            }
            AtomField::Bit(bit) => flag(self, offset_of!(Fields, present), op::W, bit),
            AtomField::Mac(src) => {
                let at = if src {
                    offset_of!(Fields, eth_src)
                } else {
                    offset_of!(Fields, eth_dst)
                };
                for i in (0..6).step_by(2) {
                    self.ld(op::H, R1, at + i);
                    self.a.stx(op::H, FP, off + 8 + i as i16, R1);
                }
            }
            AtomField::Addr(src) => {
                let at = if src {
                    offset_of!(Fields, ip_src)
                } else {
                    offset_of!(Fields, ip_dst)
                };
                let (v6, done) = (self.a.label(), self.a.label());
                self.ld(op::B, R1, offset_of!(Fields, ip_version));
                self.ld(op::W, R2, offset_of!(Fields, present));
                self.a.jmp_imm(op::JNE, R1, 4, v6);
                self.a.alu32_imm(op::AND, R2, present::IP4 as i32);
                self.a.jmp32_imm(op::JEQ, R2, 0, skip);
                self.a.st_imm(op::W, FP, off, 4);
                self.ld(op::W, R1, at + 12);
                self.a.stx(op::W, FP, off + 8, R1);
                self.a.ja(done);
                self.a.bind(v6);
                self.a.jmp_imm(op::JNE, R1, 6, skip);
                self.a.alu32_imm(op::AND, R2, present::IP6 as i32);
                self.a.jmp32_imm(op::JEQ, R2, 0, skip);
                self.a.st_imm(op::W, FP, off, 6);
                for i in (0..16).step_by(4) {
                    self.ld(op::W, R1, at + i);
                    self.a.stx(op::W, FP, off + 8 + i as i16, R1);
                }
                self.a.bind(done);
            }
        }
    }

    /// The merged answer's action: its class from a map of rule to class,
    /// then that action with the rule's index from [`BEST_OFF`]. Reached by
    /// a jump; `none` when there is no answer (not reached then).
    pub(super) fn merged_dispatch(
        &mut self,
        m: &Merged,
        none: Label,
        services: Label,
        route: Label,
    ) {
        let mut classes: Vec<Action> = Vec::new();
        let mut entries = Vec::new();
        for (i, r) in self.prog.rules.iter().enumerate() {
            if !m.merged[i] {
                continue;
            }
            let c = match classes.iter().position(|&a| a == r.action) {
                Some(c) => c,
                None => {
                    classes.push(r.action);
                    classes.len() - 1
                }
            };
            entries.push((
                (i as u32).to_ne_bytes().to_vec(),
                (c as u32).to_ne_bytes().to_vec(),
            ));
        }
        self.maps.push(MapSpec {
            name: "rule_class".into(),
            kind: MapKind::Array,
            key_size: 4,
            value_size: 4,
            max_entries: self.prog.rules.len().max(1) as u32,
            entries,
        });
        let map = self.maps.len() as u32 - 1;
        super::lookup(self.a, map, BEST_OFF);
        self.a.jmp_imm(op::JEQ, R0, 0, none);
        self.a.ldx(op::W, R1, R0, 0);
        let labels: Vec<Label> = classes.iter().map(|_| self.a.label()).collect();
        for (c, &l) in labels.iter().enumerate() {
            self.a.jmp32_imm(op::JEQ, R1, c as i32, l);
        }
        self.a.ja(none);
        for (&action, &l) in classes.iter().zip(&labels) {
            self.a.bind(l);
            self.rule_action(None, action, services, route);
        }
    }
}
