//! The stages after the filter, per family of the destination (a packet
//! without IP is dropped at `stage::ROUTE`): service entries (grouped by
//! virtual IP, in the policy's order), a virtual IP without a matching entry
//! (reset or drop), own addresses (local), martian destinations
//! (`lbp_abi::martian`: the fixed list, then the interfaces' directed
//! broadcasts) and the longest-prefix route: a chain of masked compares
//! ranked longest prefix first (ties: the first route) when the family has
//! at most `ROUTES_INLINE_MAX` routes, else one lookup in an LPM trie map of
//! the family (keyed by prefix length and address bytes; the first route of
//! a prefix wins, as in the interpreter).

use std::mem::offset_of;

use super::emit::{Gen, addr_off, at};
use super::{BpfError, DECISION_OFF, MAX_ROUTES, MAX_TAIL_ENTRIES, ROUTES_INLINE_MAX, SCRATCH_OFF};
use crate::ir::{Addr, AddrField};
use lbp_abi::bpf::{Label, MapKind, MapSpec, op, reg::*};
use lbp_abi::{Action as A, Fields, NO_RULE, present, stage};

/// A service entry of one virtual IP: (service, protocol, port ranges).
type Entry<'p> = (u32, u8, &'p [(u16, u16)]);

/// An address as a 128-bit number of its family, and whether it is IPv6.
fn split(a: Addr) -> (bool, u128) {
    match a {
        Addr::V4(x) => (false, u128::from(x)),
        Addr::V6(x) => (true, x),
    }
}

fn width(v6: bool) -> u8 {
    if v6 { 128 } else { 32 }
}

impl Gen<'_> {
    /// The tail: `services` (bound here) is where an accepted packet goes,
    /// `route` (bound here) where a `forward` rule sends it.
    pub fn tail(&mut self, services: Label, route: Label) -> Result<(), BpfError> {
        let nonip = self.a.label();
        let s = [self.a.label(), self.a.label()];
        let m = [self.a.label(), self.a.label()];
        self.a.bind(services);
        self.family(s[0], s[1], nonip);
        self.a.bind(route);
        self.family(m[0], m[1], nonip);
        self.a.bind(nonip);
        self.store(A::Drop, 0, NO_RULE, stage::ROUTE);
        self.a.ja(self.done);
        for v6 in [false, true] {
            let i = usize::from(v6);
            self.a.bind(s[i]);
            self.services(v6)?;
            self.own(v6)?;
            self.a.bind(m[i]);
            self.martian(v6)?;
            self.route(v6)?;
        }
        Ok(())
    }

    /// Service entries and virtual IPs without an entry; falls through when
    /// the destination is no virtual IP.
    fn services(&mut self, v6: bool) -> Result<(), BpfError> {
        // (virtual IP, [(service, protocol, port ranges)]) in first-seen order.
        let mut vips: Vec<(u128, Vec<Entry>)> = Vec::new();
        let mut n = 0;
        for (si, svc) in self.prog.services.iter().enumerate() {
            for (vip, proto, ports) in &svc.entries {
                let (fam, x) = split(*vip);
                if fam != v6 {
                    continue;
                }
                n += 1 + ports.len();
                let e = (si as u32, *proto, ports.as_slice());
                match vips.iter_mut().find(|(v, _)| *v == x) {
                    Some((_, es)) => es.push(e),
                    None => vips.push((x, vec![e])),
                }
            }
        }
        tail_limit(n, "service entries and port ranges")?;
        if vips.is_empty() {
            return Ok(());
        }
        let invalid = self.a.label();
        let after = self.a.label();
        for (vip, entries) in vips {
            let next = self.a.label();
            self.prefix(AddrField::Dst, v6, vip, width(v6), next);
            self.ld(op::W, R1, offset_of!(Fields, present));
            self.a
                .alu32_imm(op::AND, R1, (present::TCP | present::UDP) as i32);
            self.a.jmp32_imm(op::JEQ, R1, 0, invalid);
            for (svc, proto, ports) in entries {
                let (hit, skip) = (self.a.label(), self.a.label());
                self.ld(op::B, R1, offset_of!(Fields, ip_proto));
                self.a.jmp32_imm(op::JNE, R1, i32::from(proto), skip);
                self.ld(op::H, R1, offset_of!(Fields, dport));
                let r: Vec<(u64, u64)> = ports
                    .iter()
                    .map(|&(lo, hi)| (u64::from(lo), u64::from(hi)))
                    .collect();
                self.tree(R1, R3, &r, hit, skip);
                self.a.bind(hit);
                self.store(A::Balance, svc, NO_RULE, stage::SERVICE);
                let l = self.balance_exit(svc);
                self.a.ja(l);
                self.a.bind(skip);
            }
            self.a.ja(invalid);
            self.a.bind(next);
        }
        self.a.ja(after);
        self.a.bind(invalid);
        self.store(A::Reset, 0, NO_RULE, stage::INVALID_ENTRY);
        self.a.ja(self.reset);
        self.a.bind(after);
        Ok(())
    }

    /// The appliance's own addresses are local; falls through otherwise.
    fn own(&mut self, v6: bool) -> Result<(), BpfError> {
        let mut own: Vec<u128> = Vec::new();
        for i in &self.prog.interfaces {
            for &(a, _) in &i.addrs {
                let (fam, x) = split(a);
                if fam == v6 && !own.contains(&x) {
                    own.push(x);
                }
            }
        }
        tail_limit(own.len(), "own addresses")?;
        for x in own {
            let next = self.a.label();
            self.prefix(AddrField::Dst, v6, x, width(v6), next);
            self.store(A::Local, 0, NO_RULE, stage::OWN_ADDRESS);
            self.a.ja(self.done);
            self.a.bind(next);
        }
        Ok(())
    }

    /// Martian destinations are dropped; falls through otherwise.
    fn martian(&mut self, v6: bool) -> Result<(), BpfError> {
        let mut nets: Vec<(u128, u8)> = if v6 {
            lbp_abi::martian::V6
                .iter()
                .map(|&(n, l, _)| (n, l))
                .collect()
        } else {
            lbp_abi::martian::V4
                .iter()
                .map(|&(n, l, _)| (u128::from(n), l))
                .collect()
        };
        if !v6 {
            for i in &self.prog.interfaces {
                for &(a, l) in &i.addrs {
                    if let Some(b) = lbp_abi::martian::directed_broadcast(a.to_ip(), l) {
                        let b = (u128::from(b), 32);
                        if !nets.contains(&b) {
                            nets.push(b);
                        }
                    }
                }
            }
        }
        tail_limit(nets.len(), "directed broadcasts")?;
        let drop = self.a.label();
        let after = self.a.label();
        for (net, len) in nets {
            let next = self.a.label();
            self.prefix(AddrField::Dst, v6, net, len, next);
            self.a.ja(drop);
            self.a.bind(next);
        }
        self.a.ja(after);
        self.a.bind(drop);
        self.store(A::Drop, 0, NO_RULE, stage::MARTIAN);
        self.a.ja(self.done);
        self.a.bind(after);
        Ok(())
    }

    /// The longest-prefix route, or a drop at `stage::ROUTE`.
    fn route(&mut self, v6: bool) -> Result<(), BpfError> {
        let mut routes: Vec<(u32, u128, u8)> = self
            .prog
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (fam, x) = split(r.prefix);
                (fam == v6).then_some((i as u32, x, r.len.min(width(v6))))
            })
            .collect();
        if routes.len() > MAX_ROUTES {
            return Err(BpfError::Limit(format!(
                "{} routes of one family, at most {MAX_ROUTES}",
                routes.len()
            )));
        }
        let none = self.a.label();
        if routes.len() <= ROUTES_INLINE_MAX {
            // Longest first; the sort is stable, so the first of a length wins.
            routes.sort_by_key(|&(_, _, len)| std::cmp::Reverse(len));
            for (i, net, len) in routes {
                let next = self.a.label();
                self.prefix(AddrField::Dst, v6, net, len, next);
                self.store(A::Forward, i, NO_RULE, stage::ROUTE);
                self.a.ja(self.forward);
                self.a.bind(next);
            }
        } else {
            let map = self.lpm_map(v6, &routes);
            // The key: the full prefix length, then the address as in `Fields`.
            let words = if v6 { 0..4 } else { 3..4 };
            self.a.st_imm(op::W, FP, SCRATCH_OFF, i32::from(width(v6)));
            for (k, w) in words.enumerate() {
                self.a
                    .ldx(op::W, R1, FP, at(addr_off(AddrField::Dst) + 4 * w));
                self.a.stx(op::W, FP, SCRATCH_OFF + 4 + 4 * k as i16, R1);
            }
            super::lookup(self.a, map, SCRATCH_OFF);
            self.a.jmp_imm(op::JEQ, R0, 0, none);
            self.a.ldx(op::W, R1, R0, 0);
            self.store(A::Forward, 0, NO_RULE, stage::ROUTE);
            self.a.stx(op::W, FP, DECISION_OFF + 4, R1);
            self.a.ja(self.forward);
        }
        self.a.bind(none);
        self.store(A::Drop, 0, NO_RULE, stage::ROUTE);
        self.a.ja(self.done);
        Ok(())
    }

    /// An LPM trie of the family's routes (index, network, length): key the
    /// prefix length then the address bytes, value the route's index; the
    /// first route of a prefix is kept. Its map number.
    fn lpm_map(&mut self, v6: bool, routes: &[(u32, u128, u8)]) -> u32 {
        let bytes = if v6 { 16 } else { 4 };
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &(i, net, len) in routes {
            let w = u32::from(width(v6));
            let mask = if len == 0 {
                0
            } else {
                (u128::MAX >> (128 - w)) & !((1u128 << (w - u32::from(len))) - 1)
            };
            let addr = (net & mask).to_be_bytes();
            let mut key = u32::from(len).to_ne_bytes().to_vec();
            key.extend_from_slice(&addr[16 - bytes..]);
            if seen.insert(key.clone()) {
                entries.push((key, i.to_ne_bytes().to_vec()));
            }
        }
        self.maps.push(MapSpec {
            name: if v6 { "routes6" } else { "routes4" }.into(),
            kind: MapKind::LpmTrie,
            key_size: 4 + bytes as u32,
            value_size: 4,
            max_entries: entries.len() as u32,
            entries,
        });
        self.maps.len() as u32 - 1
    }
}

fn tail_limit(n: usize, what: &str) -> Result<(), BpfError> {
    if n > MAX_TAIL_ENTRIES {
        return Err(BpfError::Limit(format!(
            "{n} {what} in one family, at most {MAX_TAIL_ENTRIES} are tested inline"
        )));
    }
    Ok(())
}
