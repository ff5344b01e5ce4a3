//! The stages after the filter: service entries, virtual IPs without an entry,
//! own addresses, martian destinations and the longest-prefix route, inline
//! when small, through helpers when large.

use super::exit::pair_const;
use super::limits::INLINE_TAIL_MAX;
use super::tables::{Entry, Helper, NO_L4, NO_ROUTE, SVC_NO_ENTRY, Tables};
use super::translate::{AddrKey, OFF_DPORT, OFF_IP_PROTO, Translator, field_flags, ne_words};
use crate::ir::{Addr, AddrField};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use lbp_abi::{Action as A, NO_RULE, present, stage};

impl<'a> Translator<'a> {
    /// The tail for packets of one family (`v6` or IPv4); ends the current block.
    pub(super) fn family_tail(&mut self, v6: bool, with_services: Value) {
        let tables: &'a Tables = self.tables;
        let fam_of = |a: &Addr| matches!(a, Addr::V6(_)) == v6;
        let route = self.b.create_block();
        let services = self.b.create_block();
        self.b.ins().brif(with_services, services, &[], route, &[]);

        // Services (and virtual IPs without a matching entry).
        self.b.switch_to_block(services);
        let own = self.b.create_block();
        let vips: Vec<&(Addr, Vec<Entry>)> =
            tables.services.iter().filter(|(a, _)| fam_of(a)).collect();
        let n_entries: usize = vips.iter().map(|(_, es)| es.len()).sum();
        let n_ports: usize = vips
            .iter()
            .flat_map(|(_, es)| es.iter())
            .map(|e| e.ports.len())
            .sum();
        if vips.is_empty() {
            self.b.ins().jump(own, &[]);
        } else if n_entries <= INLINE_TAIL_MAX && n_ports <= 4 * INLINE_TAIL_MAX {
            let invalid = self.b.create_block();
            for (vip, entries) in vips {
                let hit = self.b.create_block();
                let next = self.b.create_block();
                let e = self.dst_eq(*vip);
                self.b.ins().brif(e, hit, &[], next, &[]);
                self.b.switch_to_block(hit);
                let check = self.b.create_block();
                let l4 = self.has(present::TCP | present::UDP);
                self.b.ins().brif(l4, check, &[], invalid, &[]);
                self.b.switch_to_block(check);
                let proto =
                    self.b
                        .ins()
                        .uload8(types::I32, field_flags(), self.fields, OFF_IP_PROTO);
                let dport = self
                    .b
                    .ins()
                    .uload16(types::I32, field_flags(), self.fields, OFF_DPORT);
                for en in entries {
                    let bal = self.b.create_block();
                    let nxt = self.b.create_block();
                    let p = self
                        .b
                        .ins()
                        .icmp_imm_u(IntCC::Equal, proto, i64::from(en.proto));
                    let m = self.any_range(
                        types::I32,
                        dport,
                        en.ports
                            .iter()
                            .map(|&(lo, hi)| (u64::from(lo), u64::from(hi))),
                    );
                    let m = self.b.ins().band(p, m);
                    self.b.ins().brif(m, bal, &[], nxt, &[]);
                    self.b.switch_to_block(bal);
                    self.exit_const(A::Balance, en.service, NO_RULE, stage::SERVICE);
                    self.b.switch_to_block(nxt);
                }
                self.b.ins().jump(invalid, &[]);
                self.b.switch_to_block(next);
            }
            self.b.ins().jump(own, &[]);
            self.b.switch_to_block(invalid);
            self.exit_invalid_entry();
        } else {
            let key = self.dst_key(v6);
            let l4 = self.has(present::TCP | present::UDP);
            let proto = self
                .b
                .ins()
                .uload8(types::I32, field_flags(), self.fields, OFF_IP_PROTO);
            let none = self.b.ins().iconst(types::I32, NO_L4);
            let proto = self.b.ins().select(l4, proto, none);
            let dport = self
                .b
                .ins()
                .uload16(types::I32, field_flags(), self.fields, OFF_DPORT);
            let r = self.call(Helper::Service, &[key.fam, key.hi, key.lo, proto, dport]);
            let balance = self.b.create_block();
            let not_svc = self.b.create_block();
            let is_svc =
                self.b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, r, i64::from(SVC_NO_ENTRY));
            self.b.ins().brif(is_svc, balance, &[], not_svc, &[]);

            self.b.switch_to_block(balance);
            let a = self.b.ins().iconst(types::I32, A::Balance as i64);
            let w0 = self.pair(a, r);
            let w1 = self.konst(types::I64, pair_const(NO_RULE, stage::SERVICE));
            self.exit_balance(w0, w1);

            self.b.switch_to_block(not_svc);
            let invalid = self.b.create_block();
            let is_vip = self
                .b
                .ins()
                .icmp_imm_u(IntCC::Equal, r, i64::from(SVC_NO_ENTRY));
            self.b.ins().brif(is_vip, invalid, &[], own, &[]);

            self.b.switch_to_block(invalid);
            self.exit_invalid_entry();
        }

        // Own addresses.
        self.b.switch_to_block(own);
        let owns: Vec<Addr> = tables.own.iter().copied().filter(|a| fam_of(a)).collect();
        if owns.is_empty() {
            self.b.ins().jump(route, &[]);
        } else {
            let r = if owns.len() <= INLINE_TAIL_MAX {
                let mut acc: Option<Value> = None;
                for a in owns {
                    let e = self.dst_eq(a);
                    acc = Some(match acc {
                        Some(x) => self.b.ins().bor(x, e),
                        None => e,
                    });
                }
                acc.unwrap_or_else(|| self.b.ins().iconst(types::I8, 0))
            } else {
                let key = self.dst_key(v6);
                self.call(Helper::Own, &[key.fam, key.hi, key.lo])
            };
            let local = self.b.create_block();
            self.b.ins().brif(r, local, &[], route, &[]);
            self.b.switch_to_block(local);
            self.exit_const(A::Local, 0, NO_RULE, stage::OWN_ADDRESS);
        }

        // Martian destinations are refused before any route.
        self.b.switch_to_block(route);
        self.martian_check(v6);

        // The longest matching route.
        let n_routes = if v6 {
            tables.routes6.iter().map(|g| g.nets.len()).sum::<usize>()
        } else {
            tables.routes4.iter().map(|g| g.nets.len()).sum::<usize>()
        };
        if n_routes == 0 {
            self.exit_const(A::Drop, 0, NO_RULE, stage::ROUTE);
            return;
        }
        let r = if n_routes <= INLINE_TAIL_MAX {
            // (match, route index) by rank: longest written prefix first, and in
            // a group the keys are distinct, so at most one of them matches.
            let mut ranked: Vec<(Option<Value>, u32)> = Vec::new();
            if v6 {
                for g in &tables.routes6 {
                    for &(key, idx) in &g.nets {
                        let m = self.dst_masked6(key, g.shift);
                        ranked.push((m, idx));
                    }
                }
            } else {
                for g in &tables.routes4 {
                    for &(key, idx) in &g.nets {
                        let m = self.dst_masked4(key, g.shift);
                        ranked.push((m, idx));
                    }
                }
            }
            // A select chain from the lowest rank up: the best match wins.
            let mut r = self.konst(types::I32, u64::from(NO_ROUTE));
            for (m, idx) in ranked.into_iter().rev() {
                let c = self.konst(types::I32, u64::from(idx));
                r = match m {
                    Some(m) => self.b.ins().select(m, c, r),
                    None => c,
                };
            }
            r
        } else {
            let key = self.dst_key(v6);
            self.call(Helper::Route, &[key.fam, key.hi, key.lo])
        };
        let none = self
            .b
            .ins()
            .icmp_imm_u(IntCC::Equal, r, i64::from(NO_ROUTE));
        let drop = self.b.ins().iconst(types::I32, A::Drop as i64);
        let fwd = self.b.ins().iconst(types::I32, A::Forward as i64);
        let expire = self.b.ins().iconst(types::I32, A::Expire as i64);
        let e = self.expires();
        let fwd = self.b.ins().select(e, expire, fwd);
        let a = self.b.ins().select(none, drop, fwd);
        let zero = self.b.ins().iconst(types::I32, 0);
        let t = self.b.ins().select(none, zero, r);
        let rule = self.konst(types::I32, u64::from(NO_RULE));
        let s = self.b.ins().iconst(types::I32, i64::from(stage::ROUTE));
        self.exit_with(a, t, rule, s);
    }

    /// Exit with `drop` at [`stage::MARTIAN`] when the destination (of the
    /// family `v6`, or IPv4) is martian ([`crate::interp::martian`]); else go on in a
    /// new current block. The fixed prefixes are masked compares; the
    /// directed broadcasts are compares too, or one helper call for the
    /// whole test when there are more than [`INLINE_TAIL_MAX`] of them.
    pub(super) fn martian_check(&mut self, v6: bool) {
        let tables: &'a Tables = self.tables;
        let m = if !v6 && tables.broadcasts.len() > INLINE_TAIL_MAX {
            let key = self.dst_key(false);
            let r = self.call(Helper::Martian, &[key.fam, key.hi, key.lo]);
            self.b.ins().icmp_imm_u(IntCC::NotEqual, r, 0)
        } else {
            let mut tests: Vec<Option<Value>> = Vec::new();
            if v6 {
                for &(net, len, _) in &lbp_abi::martian::V6 {
                    let shift = 128 - u32::from(len);
                    tests.push(self.dst_masked6(net >> shift, shift));
                }
            } else {
                for &(net, len, _) in &lbp_abi::martian::V4 {
                    let shift = 32 - u32::from(len);
                    tests.push(self.dst_masked4(net >> shift, shift));
                }
                for &b in &tables.broadcasts {
                    tests.push(Some(self.dst_eq(Addr::V4(b))));
                }
            }
            let mut acc: Option<Value> = None;
            for t in tests.into_iter().flatten() {
                acc = Some(match acc {
                    Some(x) => self.b.ins().bor(x, t),
                    None => t,
                });
            }
            acc.unwrap_or_else(|| self.b.ins().iconst(types::I8, 0))
        };
        let refuse = self.b.create_block();
        let go_on = self.b.create_block();
        self.b.ins().brif(m, refuse, &[], go_on, &[]);
        self.b.switch_to_block(refuse);
        self.exit_const(A::Drop, 0, NO_RULE, stage::MARTIAN);
        self.b.switch_to_block(go_on);
    }

    pub(super) fn exit_invalid_entry(&mut self) {
        let a = self.reset_or_drop();
        let t = self.b.ins().iconst(types::I32, 0);
        let rule = self.konst(types::I32, u64::from(NO_RULE));
        let s = self
            .b
            .ins()
            .iconst(types::I32, i64::from(stage::INVALID_ENTRY));
        self.exit_with(a, t, rule, s);
    }

    /// The destination equals `a` (of the family the caller knows it has), as 0
    /// or 1, compared on its native-order words.
    pub(super) fn dst_eq(&mut self, a: Addr) -> Value {
        match a {
            Addr::V4(a) => {
                let c = u32::from_ne_bytes(a.to_be_bytes());
                let d = self.dst4();
                self.b.ins().icmp_imm_u(IntCC::Equal, d, i64::from(c))
            }
            Addr::V6(a) => {
                let (h, l) = ne_words(a);
                let (dh, dl) = self.dst_words();
                let c = self.konst(types::I64, h);
                let eh = self.b.ins().icmp(IntCC::Equal, dh, c);
                let c = self.konst(types::I64, l);
                let el = self.b.ins().icmp(IntCC::Equal, dl, c);
                self.b.ins().band(eh, el)
            }
        }
    }

    /// `dst >> shift == key` for an IPv4 destination, as a masked compare of the
    /// native-order word; `None` when it always holds (shift 32).
    pub(super) fn dst_masked4(&mut self, key: u32, shift: u32) -> Option<Value> {
        if shift >= 32 {
            return None;
        }
        let mask = u32::MAX << shift;
        let net = key << shift;
        let m = u32::from_ne_bytes(mask.to_be_bytes());
        let n = u32::from_ne_bytes(net.to_be_bytes());
        let d = self.dst4();
        let x = if mask == u32::MAX {
            d
        } else {
            self.b.ins().band_imm_u(d, i64::from(m))
        };
        Some(self.b.ins().icmp_imm_u(IntCC::Equal, x, i64::from(n)))
    }

    /// `dst >> shift == key` for an IPv6 destination; `None` when it always holds.
    pub(super) fn dst_masked6(&mut self, key: u128, shift: u32) -> Option<Value> {
        if shift >= 128 {
            return None;
        }
        let mask = u128::MAX << shift;
        let net = key << shift;
        let (mh, ml) = ne_words(mask);
        let (nh, nl) = ne_words(net);
        let mut acc: Option<Value> = None;
        let (dh, dl) = self.dst_words();
        for (w, m, n) in [(dh, mh, nh), (dl, ml, nl)] {
            if m == 0 {
                continue;
            }
            let x = if m == u64::MAX {
                w
            } else {
                let mc = self.konst(types::I64, m);
                self.b.ins().band(w, mc)
            };
            let nc = self.konst(types::I64, n);
            let e = self.b.ins().icmp(IntCC::Equal, x, nc);
            acc = Some(match acc {
                Some(a) => self.b.ins().band(a, e),
                None => e,
            });
        }
        acc
    }

    /// The destination as a helper receives it, for a packet known to be of the
    /// family `v6` (or IPv4).
    pub(super) fn dst_key(&mut self, v6: bool) -> AddrKey {
        self.addr_key(AddrField::Dst, Some(v6))
    }
}
