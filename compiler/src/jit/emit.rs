//! Small pieces of code generation: loads from `Fields`, `present` bits and the
//! packet's family, compile-time truths, 128-bit address compares and ranges.

use super::translate::{
    AddrKey, Fam, Translator, Truth, addr_offset, field_flags, int_offset, mac_offset,
};
use crate::ir::{AddrField, IntField, MacField};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, InstBuilder, Type, Value, types};

impl<'a> Translator<'a> {
    /// An integer constant of type `ty`, zero-extended as Cranelift wants it.
    pub(super) fn konst(&mut self, ty: Type, v: u64) -> Value {
        let v = match ty.bits() {
            8 => v & 0xff,
            16 => v & 0xffff,
            32 => v & 0xffff_ffff,
            _ => v,
        };
        self.b.ins().iconst(ty, v as i64)
    }

    pub(super) fn load(&mut self, ty: Type, off: i32) -> Value {
        self.b.ins().load(ty, field_flags(), self.fields, off)
    }

    /// The big-endian `u32` at `off` (the IPv4 address in a mapped field).
    pub(super) fn load_be32(&mut self, off: i32) -> Value {
        let x = self.load(types::I32, off);
        if cfg!(target_endian = "little") {
            self.b.ins().bswap(x)
        } else {
            x
        }
    }

    pub(super) fn load_be64(&mut self, off: i32) -> Value {
        let x = self.load(types::I64, off);
        if cfg!(target_endian = "little") {
            self.b.ins().bswap(x)
        } else {
            x
        }
    }

    /// An integer field, zero-extended to I64 (as `interp::int_field`).
    pub(super) fn int_field(&mut self, field: IntField) -> Value {
        let (off, width) = int_offset(field);
        let fl = field_flags();
        match width {
            1 => self.b.ins().uload8(types::I64, fl, self.fields, off),
            2 => self.b.ins().uload16(types::I64, fl, self.fields, off),
            _ => self.b.ins().uload32(fl, self.fields, off),
        }
    }

    /// `(x & mask != 0) == expect`, as 0 or 1.
    pub(super) fn bit_test(&mut self, x: Value, mask: u32, expect: bool) -> Value {
        let m = self.b.ins().band_imm_u(x, i64::from(mask));
        let c = if expect {
            IntCC::NotEqual
        } else {
            IntCC::Equal
        };
        self.b.ins().icmp_imm_u(c, m, 0)
    }

    /// `present & need != 0` (`interp::has`), or `None` when it is known to hold
    /// (`need` is 0, or includes a bit of `self.known`).
    pub(super) fn need(&mut self, need: u32) -> Option<Value> {
        (need != 0 && need & self.known == 0).then(|| self.has(need))
    }

    pub(super) fn has(&mut self, bits: u32) -> Value {
        let m = self.b.ins().band_imm_u(self.present, i64::from(bits));
        self.b.ins().icmp_imm_u(IntCC::NotEqual, m, 0)
    }

    /// Whether `need` holds (`need` 0: always), known without a test where
    /// `self.known` says so.
    pub(super) fn need_t(&mut self, need: u32) -> Truth {
        match self.need(need) {
            Some(v) => Truth::Test(v),
            None => Truth::Known(true),
        }
    }

    pub(super) fn and_need(&mut self, need: u32, v: Value) -> Value {
        match self.need(need) {
            Some(h) => self.b.ins().band(h, v),
            None => v,
        }
    }

    pub(super) fn branch_need(&mut self, need: u32, v: Value, t: Block, f: Block) {
        let r = self.and_need(need, v);
        self.b.ins().brif(r, t, &[], f, &[]);
    }

    /// Go on in a new block only if `need` holds, else to `f`.
    pub(super) fn guard_need(&mut self, need: u32, f: Block) {
        if let Some(h) = self.need(need) {
            let next = self.b.create_block();
            self.b.ins().brif(h, next, &[], f, &[]);
            self.b.switch_to_block(next);
        }
    }

    /// (is4, is6): which of `interp::addr`'s cases applies, as 0 or 1 values
    /// (for code emitted with `Fam::Any`; computed once before the filter).
    pub(super) fn family(&mut self) -> (Value, Value) {
        match self.fam {
            Fam::Any => {}
            Fam::V4 | Fam::V6 | Fam::NoIp => {
                let one = self.b.ins().iconst(types::I8, 1);
                let zero = self.b.ins().iconst(types::I8, 0);
                return match self.fam {
                    Fam::V4 => (one, zero),
                    Fam::V6 => (zero, one),
                    _ => (zero, zero),
                };
            }
        }
        match self.fam_vals {
            Some(v) => v,
            None => self.compute_family(),
        }
    }

    /// Whether the packet is IPv6 (`v6`) or IPv4.
    pub(super) fn is_fam(&mut self, v6: bool) -> Truth {
        match self.fam {
            Fam::Any => {
                let (is4, is6) = self.family();
                Truth::Test(if v6 { is6 } else { is4 })
            }
            Fam::V4 => Truth::Known(!v6),
            Fam::V6 => Truth::Known(v6),
            Fam::NoIp => Truth::Known(false),
        }
    }

    /// Whether the packet is IPv4 or IPv6.
    pub(super) fn is_ip(&mut self) -> Truth {
        match self.fam {
            Fam::Any => {
                let (is4, is6) = self.family();
                Truth::Test(self.b.ins().bor(is4, is6))
            }
            Fam::V4 | Fam::V6 => Truth::Known(true),
            Fam::NoIp => Truth::Known(false),
        }
    }

    pub(super) fn t_and(&mut self, a: Truth, b: Truth) -> Truth {
        match (a, b) {
            (Truth::Known(false), _) | (_, Truth::Known(false)) => Truth::Known(false),
            (Truth::Known(true), x) | (x, Truth::Known(true)) => x,
            (Truth::Test(x), Truth::Test(y)) => Truth::Test(self.b.ins().band(x, y)),
        }
    }

    pub(super) fn t_not(&mut self, a: Truth) -> Truth {
        match a {
            Truth::Known(k) => Truth::Known(!k),
            Truth::Test(x) => Truth::Test(self.b.ins().bxor_imm_u(x, 1)),
        }
    }

    /// Ends the current block: to `t` if `c` holds, else to `f`.
    pub(super) fn branch_t(&mut self, c: Truth, t: Block, f: Block) {
        match c {
            Truth::Known(k) => {
                self.b.ins().jump(if k { t } else { f }, &[]);
            }
            Truth::Test(v) => {
                self.b.ins().brif(v, t, &[], f, &[]);
            }
        }
    }

    /// The destination's IPv4 word (bytes 12..16) in native order. Loaded where
    /// used (a load is cheaper than a register held across the filter).
    pub(super) fn dst4(&mut self) -> Value {
        self.load(types::I32, addr_offset(AddrField::Dst) + 12)
    }

    /// The destination's two IPv6 words (bytes 0..8, 8..16) in native order.
    pub(super) fn dst_words(&mut self) -> (Value, Value) {
        let off = addr_offset(AddrField::Dst);
        (self.load(types::I64, off), self.load(types::I64, off + 8))
    }

    /// The packet's address for a helper, for a packet of the family `v6` (or
    /// IPv4), or with `None` of the family `is4` says (IPv6 when it is 0).
    pub(super) fn addr_key(&mut self, field: AddrField, v6: Option<bool>) -> AddrKey {
        let off = addr_offset(field);
        match v6 {
            Some(false) => {
                let a4 = self.load_be32(off + 12);
                AddrKey {
                    fam: self.b.ins().iconst(types::I32, 4),
                    hi: self.b.ins().iconst(types::I64, 0),
                    lo: self.b.ins().uextend(types::I64, a4),
                }
            }
            Some(true) => AddrKey {
                fam: self.b.ins().iconst(types::I32, 6),
                hi: self.load_be64(off),
                lo: self.load_be64(off + 8),
            },
            None => {
                let (is4, _) = self.family();
                let a4 = self.load_be32(off + 12);
                let a4 = self.b.ins().uextend(types::I64, a4);
                let hi6 = self.load_be64(off);
                let lo6 = self.load_be64(off + 8);
                let four = self.b.ins().iconst(types::I32, 4);
                let six = self.b.ins().iconst(types::I32, 6);
                let zero = self.b.ins().iconst(types::I64, 0);
                AddrKey {
                    fam: self.b.ins().select(is4, four, six),
                    hi: self.b.ins().select(is4, zero, hi6),
                    lo: self.b.ins().select(is4, a4, lo6),
                }
            }
        }
    }

    /// The 16 bytes at `off` equal `a` (big-endian), as two 64-bit compares.
    pub(super) fn eq128_const(&mut self, off: i32, a: u128) -> Value {
        let bytes = a.to_be_bytes();
        let mut h = [0u8; 8];
        let mut l = [0u8; 8];
        h.copy_from_slice(&bytes[..8]);
        l.copy_from_slice(&bytes[8..]);
        let xh = self.load(types::I64, off);
        let xl = self.load(types::I64, off + 8);
        let ch = self.konst(types::I64, u64::from_ne_bytes(h));
        let cl = self.konst(types::I64, u64::from_ne_bytes(l));
        let eh = self.b.ins().icmp(IntCC::Equal, xh, ch);
        let el = self.b.ins().icmp(IntCC::Equal, xl, cl);
        self.b.ins().band(eh, el)
    }

    /// A MAC field as a native u32 (bytes 0..4) and u16 (bytes 4..6), in I32s.
    pub(super) fn mac_words(&mut self, field: MacField) -> (Value, Value) {
        let off = mac_offset(field);
        let w32 = self.load(types::I32, off);
        let w16 = self
            .b
            .ins()
            .uload16(types::I32, field_flags(), self.fields, off + 4);
        (w32, w16)
    }

    pub(super) fn mac_eq(&mut self, field: MacField, m: [u8; 6]) -> Value {
        let (w32, w16) = self.mac_words(field);
        let c32 = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
        let c16 = u16::from_ne_bytes([m[4], m[5]]);
        let c32 = self.konst(types::I32, u64::from(c32));
        let c16 = self.konst(types::I32, u64::from(c16));
        let a = self.b.ins().icmp(IntCC::Equal, w32, c32);
        let b = self.b.ins().icmp(IntCC::Equal, w16, c16);
        self.b.ins().band(a, b)
    }

    /// Whether `x` (of type `ty`) lies in any of the inclusive ranges, as 0 or 1.
    pub(super) fn any_range(
        &mut self,
        ty: Type,
        x: Value,
        ranges: impl Iterator<Item = (u64, u64)>,
    ) -> Value {
        let max = match ty.bits() {
            32 => u64::from(u32::MAX),
            _ => u64::MAX,
        };
        let mut acc: Option<Value> = None;
        for (lo, hi) in ranges {
            let m = if lo > hi {
                self.b.ins().iconst(types::I8, 0)
            } else if lo == hi {
                let c = self.konst(ty, lo);
                self.b.ins().icmp(IntCC::Equal, x, c)
            } else if lo == 0 && hi >= max {
                self.b.ins().iconst(types::I8, 1)
            } else if lo == 0 {
                let c = self.konst(ty, hi);
                self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, x, c)
            } else if hi >= max {
                let c = self.konst(ty, lo);
                self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, x, c)
            } else {
                // lo <= x <= hi as one unsigned compare: x - lo <= hi - lo.
                let l = self.konst(ty, lo);
                let d = self.b.ins().isub(x, l);
                let w = self.konst(ty, hi - lo);
                self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, d, w)
            };
            acc = Some(match acc {
                Some(a) => self.b.ins().bor(a, m),
                None => m,
            });
        }
        match acc {
            Some(a) => a,
            None => self.b.ins().iconst(types::I8, 0),
        }
    }

    pub(super) fn const128(&mut self, v: u128) -> Value {
        let lo = self.konst(types::I64, v as u64);
        let hi = self.konst(types::I64, (v >> 64) as u64);
        self.b.ins().iconcat(lo, hi)
    }

    pub(super) fn in_range128(&mut self, x: Value, lo: u128, hi: u128) -> Value {
        if lo > hi {
            return self.b.ins().iconst(types::I8, 0);
        }
        if lo == hi {
            let c = self.const128(lo);
            return self.b.ins().icmp(IntCC::Equal, x, c);
        }
        // lo <= x <= hi as one unsigned compare: x - lo <= hi - lo.
        let l = self.const128(lo);
        let d = self.b.ins().isub(x, l);
        let w = self.const128(hi.wrapping_sub(lo));
        self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, d, w)
    }
}
