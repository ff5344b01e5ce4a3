//! Header extraction in eBPF: the frame's fields into a `Fields` on the stack,
//! as `lbp_abi::wire::extract` does in Rust.
//!
//! [`emit_extract`] emits straight-line code with forward jumps only: the two
//! VLAN tags and the eight IPv6 extension headers `wire` may walk are unrolled.
//! Every check of `wire` is made as `wire` makes it, on the same lengths (the
//! frame's for the Ethernet and IP headers, the IP length field's for extension
//! and transport headers), and every packet read is preceded by the check the
//! verifier needs, `ptr + n > data_end`, on the pointer it reads through. Where
//! `wire` bounds by the IP length, that check is implied by `wire`'s and never
//! fails at run time; it is there for the verifier.
//!
//! Registers while it runs: `r6` the context (kept), `r7` `data`, `r8`
//! `data_end`, `r9` the `present` bits; `r0`–`r5` scratch. Offsets within the
//! frame are scalars; a pointer is `data + offset`, and every variable offset
//! has a small known bound (the IP header's offset masked to 5 bits, IHL, the
//! walk's offset masked to 15 bits, which the walk never exceeds: 8 headers of
//! at most 2 KiB), so the verifier can follow it. Fields are stored when their
//! header has passed its checks, so a header that fails contributes nothing,
//! as in `wire`.
//!
//! The verifier's work stays linear in the code, not in the paths through it
//! (about 2 100 instructions processed for about 500): the Fields are zeroed
//! with a register the verifier cannot tell is 0, so every path leaves the
//! same kind of stack behind and the states at the end are equal (the code
//! that follows is verified once or twice, not once per header path); the IP
//! header's and the walk's offsets are widened (`Extract::widen`) so
//! that the VLAN tag counts and the sequences of extension header kinds do not
//! each make a state of their own; and the walk tests a header number by a
//! bit mask (`Extract::extension_bit`), so the kinds do not split it
//! either.

use std::mem::{offset_of, size_of};

use lbp_abi::bpf::{Asm, Label, op, reg::*, xdp};
use lbp_abi::wire::layout::{eth, icmp, ipv4, ipv6, proto, tcp, udp};
use lbp_abi::wire::{MAX_EXT_HEADERS, MAX_VLAN_TAGS};
use lbp_abi::{Fields, present};

/// `bpf_xdp_get_buff_len` (`enum bpf_func_id` 188, Linux 5.18): the frame's
/// length, without privileges a pointer subtraction would need.
const XDP_GET_BUFF_LEN: i32 = 188;

const DATA: u8 = R7;
const END: u8 = R8;
const PRESENT: u8 = R9;

/// The walk's offset is masked to this; it never exceeds
/// `MAX_EXT_HEADERS` headers of at most 2 048 bytes (a hop-by-hop length byte
/// of 255), 16 384, so the mask changes no value.
const WALK_MASK: i32 = 0x7fff;
const _: () = assert!(MAX_EXT_HEADERS * 256 * 8 <= WALK_MASK as usize);

/// The IP header's offset is masked to this; it is at most 22.
const L3_MASK: i32 = 0x1f;
const _: () = assert!(eth::HEADER_LEN + MAX_VLAN_TAGS * eth::TAG_LEN <= L3_MASK as usize);

/// `present::FRAG` from the IPv4 MF bit, by a right shift.
const MF_TO_FRAG: i32 = (ipv4::MF.trailing_zeros() - present::FRAG.trailing_zeros()) as i32;
const _: () = assert!((ipv4::MF as u32) >> MF_TO_FRAG == present::FRAG);

/// Emits code that reads the frame of the XDP context in `r6` and writes a
/// complete [`Fields`] at `fields` (an offset from the frame pointer, negative
/// and 8-byte aligned), equal to what `lbp_abi::wire::extract(frame, 0)`
/// computes: every byte is written, `in_iface` is 0 (the caller stores it).
/// Clobbers `r0`–`r5` and `r7`–`r9`; `r6` is kept.
pub fn emit_extract(a: &mut Asm, fields: i16) {
    debug_assert!(
        fields % 8 == 0 && fields <= -(size_of::<Fields>() as i16) && fields >= -512,
        "Fields at fp{fields} must be 8-byte aligned and inside the stack"
    );
    let bad = a.label();
    let done = a.label();
    let mut e = Extract {
        a,
        fields,
        bad,
        done,
    };
    e.prologue();
    let ipv4 = e.a.label();
    let ipv6 = e.a.label();
    e.ethernet(ipv4, ipv6);
    let l4 = L4 {
        tcp: e.a.label(),
        udp: e.a.label(),
        icmp: e.a.label(),
    };
    e.a.bind(ipv6);
    e.ipv6(&l4);
    e.a.bind(ipv4);
    e.ipv4(&l4);
    e.transport(&l4);
    e.epilogue();
}

/// Where the transport headers are parsed: entered with `r1` the transport
/// header's offset in the frame and `r2` the IP packet's end there.
struct L4 {
    tcp: Label,
    udp: Label,
    icmp: Label,
}

struct Extract<'a> {
    a: &'a mut Asm,
    fields: i16,
    /// Sets `present::MALFORMED`, then `done`.
    bad: Label,
    /// Stores `present` and ends.
    done: Label,
}

impl Extract<'_> {
    /// The stack offset of the `Fields` byte at `off`.
    fn slot(&self, off: usize) -> i16 {
        self.fields + off as i16
    }

    /// `*(size *)&fields[off] = src`.
    fn store(&mut self, size: u8, off: usize, src: u8) {
        let at = self.slot(off);
        self.a.stx(size, FP, at, src);
    }

    /// `*(size *)&fields[off] = imm`.
    fn store_imm(&mut self, size: u8, off: usize, imm: i32) {
        let at = self.slot(off);
        self.a.st_imm(size, FP, at, imm);
    }

    /// Copies `n` bytes at `src + src_off` to `fields[off..off + n]`, through
    /// `r0`, in the widest stores the stack's alignment allows.
    fn copy(&mut self, src: u8, src_off: i16, off: usize, n: usize) {
        let mut done = 0;
        while done < n {
            let at = self.slot(off + done);
            let size = [8, 4, 2, 1]
                .into_iter()
                .find(|&s| done + s <= n && at.rem_euclid(s as i16) == 0)
                .unwrap_or(1);
            let code = match size {
                8 => op::DW,
                4 => op::W,
                2 => op::H,
                _ => op::B,
            };
            self.a.ldx(code, R0, src, src_off + done as i16);
            self.a.stx(code, FP, at, R0);
            done += size;
        }
    }

    /// `dst = be16(*(u16 *)(src + off))`: a network-order field as a number.
    fn load_be16(&mut self, dst: u8, src: u8, off: usize) {
        self.a.ldx(op::H, dst, src, off as i16);
        self.a.be(dst, 16);
    }

    /// Malformed unless `n` bytes from the packet pointer `ptr` are in the
    /// frame; after it, the verifier lets `ptr + 0..n` be read.
    fn need(&mut self, ptr: u8, n: usize) {
        self.a.mov(R0, ptr);
        self.a.alu_imm(op::ADD, R0, n as i32);
        self.a.jmp(op::JGT, R0, END, self.bad);
    }

    /// `dst = data + off` (`off` a register holding a frame offset).
    fn at_offset(&mut self, dst: u8, off: u8) {
        self.a.mov(dst, DATA);
        self.a.alu(op::ADD, dst, off);
    }

    /// `reg &= mask`, where `reg` is known to fit `mask` (so its value does
    /// not change), and the verifier made to forget all it knew of `reg` but
    /// that mask: `reg` has the same bounds on every path through here, so
    /// the paths' states are equal when they meet and the code after is
    /// verified once for them all, not once for each value `reg` may hold
    /// (each VLAN tag count, each sequence of extension header kinds). The
    /// forgetting: `reg ^= x ^ x`, with `x` 16 bits read from the packet
    /// through `ptr` (readable 2 bytes on) and copied into `tmp`; the
    /// verifier tracks bits, not equal values, so it sees 16 unknown bits.
    fn widen(&mut self, reg: u8, mask: i32, ptr: u8, tmp: u8) {
        debug_assert!((0..=0xffff).contains(&mask));
        self.a.ldx(op::H, R0, ptr, 0);
        self.a.mov(tmp, R0);
        self.a.alu(op::XOR, R0, tmp);
        self.a.alu(op::XOR, reg, R0);
        self.a.alu_imm(op::AND, reg, mask);
    }

    /// `present |= bits`.
    fn set(&mut self, bits: u32) {
        self.a.alu_imm(op::OR, PRESENT, bits as i32);
    }

    /// `data`, `data_end`, a zeroed `Fields`, `pkt_len`.
    fn prologue(&mut self) {
        self.a.ldx(op::W, DATA, R6, xdp::DATA);
        self.a.ldx(op::W, END, R6, xdp::DATA_END);
        self.a.mov(R1, R6);
        self.a.call(XDP_GET_BUFF_LEN);
        // r1 = 0, which the verifier takes for any value (see `widen`).
        self.a.mov(R1, R0);
        self.a.alu(op::XOR, R1, R0);
        let size = size_of::<Fields>();
        let mut off = 0;
        while off < size {
            let (code, n) = if size - off >= 8 {
                (op::DW, 8)
            } else {
                (op::W, 4)
            };
            self.store(code, off, R1);
            off += n;
        }
        // The whole frame's length; a frame in fragments (which a program
        // loaded without `BPF_F_XDP_HAS_FRAGS` is never given on a live
        // interface) would have headers past `data_end` that read as cut.
        self.store(op::W, offset_of!(Fields, pkt_len), R0);
        self.a.mov_imm(PRESENT, 0);
    }

    /// The Ethernet header and up to [`MAX_VLAN_TAGS`] tags; then to `ipv4`
    /// or `ipv6` with `r2` the IP header's offset, or `done`.
    fn ethernet(&mut self, ipv4: Label, ipv6: Label) {
        self.need(DATA, eth::HEADER_LEN);
        self.copy(DATA, eth::DST as i16, offset_of!(Fields, eth_dst), 6);
        self.copy(DATA, eth::SRC as i16, offset_of!(Fields, eth_src), 6);
        self.set(present::ETH);
        self.load_be16(R1, DATA, eth::ETHERTYPE);
        self.a.mov_imm(R2, eth::HEADER_LEN as i32);
        let untagged = self.a.label();
        for i in 0..MAX_VLAN_TAGS {
            let l3 = eth::HEADER_LEN + i * eth::TAG_LEN;
            let tag = self.a.label();
            self.a.jmp_imm(op::JEQ, R1, i32::from(eth::TYPE_VLAN), tag);
            self.a
                .jmp_imm(op::JNE, R1, i32::from(eth::TYPE_QINQ), untagged);
            self.a.bind(tag);
            // The tag starts where the EtherType field would have been.
            self.need(DATA, l3 + eth::TAG_LEN);
            self.load_be16(R1, DATA, l3 + eth::TAG_NEXT_TYPE);
            self.a.mov_imm(R2, (l3 + eth::TAG_LEN) as i32);
            self.set(present::VLAN);
        }
        self.a.bind(untagged);
        self.widen(R2, L3_MASK, DATA, R3);
        self.store(op::H, offset_of!(Fields, eth_type), R1);
        self.a.jmp_imm(op::JEQ, R1, i32::from(eth::TYPE_IPV4), ipv4);
        self.a.jmp_imm(op::JEQ, R1, i32::from(eth::TYPE_IPV6), ipv6);
        self.a.ja(self.done);
    }

    /// `r3` = `data + r2`, the IP header: malformed if the frame holds less
    /// than `min` bytes of it or its version nibble is not `version`.
    fn ip_header(&mut self, min: usize, version: i32) {
        self.at_offset(R3, R2);
        self.need(R3, min);
        self.a.ldx(op::B, R0, R3, 0);
        self.a.alu_imm(op::RSH, R0, 4);
        self.a.jmp_imm(op::JNE, R0, version, self.bad);
    }

    /// `r2` the IPv4 header's offset: the header, then a transport header
    /// unless a later fragment.
    fn ipv4(&mut self, l4: &L4) {
        let bad = self.bad;
        self.ip_header(ipv4::MIN_HEADER_LEN, 4);
        // r4: the header length, IHL * 4.
        self.a.ldx(op::B, R4, R3, ipv4::VER_IHL as i16);
        self.a.alu_imm(op::AND, R4, 0x0f);
        self.a.alu_imm(op::LSH, R4, 2);
        self.a
            .jmp_imm(op::JLT, R4, ipv4::MIN_HEADER_LEN as i32, bad);
        self.a.mov(R0, R3);
        self.a.alu(op::ADD, R0, R4);
        self.a.jmp(op::JGT, R0, END, bad);
        // r5: the total length, at least the header, at most the frame.
        self.load_be16(R5, R3, ipv4::TOTAL_LEN);
        self.a.jmp(op::JLT, R5, R4, bad);
        self.a.mov(R0, R3);
        self.a.alu(op::ADD, R0, R5);
        self.a.jmp(op::JGT, R0, END, bad);

        self.set(present::IP4);
        self.store_imm(op::B, offset_of!(Fields, ip_version), 4);
        self.copy(R3, ipv4::PROTOCOL as i16, offset_of!(Fields, ip_proto), 1);
        self.copy(R3, ipv4::TTL as i16, offset_of!(Fields, ip_ttl), 1);
        self.store(op::W, offset_of!(Fields, ip_len), R5);
        for (from, to) in [
            (ipv4::SRC, offset_of!(Fields, ip_src)),
            (ipv4::DST, offset_of!(Fields, ip_dst)),
        ] {
            // ::ffff:a.b.c.d
            self.store_imm(op::H, to + 10, 0xffff);
            self.copy(R3, from as i16, to + 12, 4);
        }
        self.store(op::H, offset_of!(Fields, l3_offset), R2);

        // A later fragment has no transport header; MF alone marks a first one.
        let later = self.a.label();
        self.load_be16(R0, R3, ipv4::FLAGS_FRAG);
        self.a.mov(R1, R0);
        self.a.alu_imm(op::AND, R1, i32::from(ipv4::OFFSET_MASK));
        self.a.jmp_imm(op::JNE, R1, 0, later);
        self.a.alu_imm(op::AND, R0, i32::from(ipv4::MF));
        self.a.alu_imm(op::RSH, R0, MF_TO_FRAG);
        self.a.alu(op::OR, PRESENT, R0);

        self.a.ldx(op::B, R0, R3, ipv4::PROTOCOL as i16);
        self.a.mov(R1, R2);
        self.a.alu(op::ADD, R1, R4);
        self.a.alu(op::ADD, R2, R5);
        self.a.jmp_imm(op::JEQ, R0, i32::from(proto::TCP), l4.tcp);
        self.a.jmp_imm(op::JEQ, R0, i32::from(proto::UDP), l4.udp);
        self.a.jmp_imm(op::JEQ, R0, i32::from(proto::ICMP), l4.icmp);
        self.a.ja(self.done);

        self.a.bind(later);
        self.set(present::FRAG);
        self.a.ja(self.done);
    }

    /// `r2` the IPv6 header's offset: the fixed header, the extension headers,
    /// then a transport header unless a later fragment.
    fn ipv6(&mut self, l4: &L4) {
        let bad = self.bad;
        self.ip_header(ipv6::HEADER_LEN, 6);
        // r4: the payload length, within the frame.
        self.load_be16(R4, R3, ipv6::PAYLOAD_LEN);
        self.a.mov(R0, R3);
        self.a.alu(op::ADD, R0, R4);
        self.a.alu_imm(op::ADD, R0, ipv6::HEADER_LEN as i32);
        self.a.jmp(op::JGT, R0, END, bad);

        self.set(present::IP6);
        self.store_imm(op::B, offset_of!(Fields, ip_version), 6);
        self.copy(R3, ipv6::HOP_LIMIT as i16, offset_of!(Fields, ip_ttl), 1);
        self.a.mov(R0, R4);
        self.a.alu_imm(op::ADD, R0, ipv6::HEADER_LEN as i32);
        self.store(op::W, offset_of!(Fields, ip_len), R0);
        self.copy(R3, ipv6::SRC as i16, offset_of!(Fields, ip_src), 16);
        self.copy(R3, ipv6::DST as i16, offset_of!(Fields, ip_dst), 16);
        self.store(op::H, offset_of!(Fields, l3_offset), R2);

        // The walk: r1 the payload's offset in the frame, r2 its length, r3
        // the offset in it of the header r4 names.
        self.a.mov(R1, R2);
        self.a.alu_imm(op::ADD, R1, ipv6::HEADER_LEN as i32);
        self.a.mov(R2, R4);
        self.a.ldx(op::B, R4, R3, ipv6::NEXT_HEADER as i16);
        self.a.mov_imm(R3, 0);
        let walked = self.a.label();
        let later = self.a.label();
        for _ in 0..MAX_EXT_HEADERS {
            self.ext_header(walked, later);
        }
        // More extension headers than the walk takes.
        self.extension_bit(walked);
        self.a.jmp_imm(op::JNE, R0, 0, bad);

        self.a.bind(walked);
        self.store(op::B, offset_of!(Fields, ip_proto), R4);
        // r1: the transport header's offset in the frame; r2: the IP end.
        self.a.mov(R0, R1);
        self.a.alu(op::ADD, R1, R3);
        self.a.alu(op::ADD, R2, R0);
        self.a.jmp_imm(op::JEQ, R4, i32::from(proto::TCP), l4.tcp);
        self.a.jmp_imm(op::JEQ, R4, i32::from(proto::UDP), l4.udp);
        self.a
            .jmp_imm(op::JEQ, R4, i32::from(proto::ICMPV6), l4.icmp);
        self.a.ja(self.done);

        // A later fragment: the fragment header's next header is the protocol,
        // and what follows is fragment data. r5 points at that header.
        self.a.bind(later);
        self.a.ldx(op::B, R0, R5, ipv6::EXT_NEXT as i16);
        self.store(op::B, offset_of!(Fields, ip_proto), R0);
        self.a.ja(self.done);
    }

    /// One step of `wire::walk_ipv6_ext`: to `walked` if `r4` names no
    /// extension header; else the header at `r3` is checked against the
    /// payload length (`r2`), `r3` moves past it and `r4` is its next header;
    /// to `later` (with `r5` pointing at it) at a later fragment's header.
    fn ext_header(&mut self, walked: Label, later: Label) {
        let bad = self.bad;
        let (frag, ah, have_len) = (self.a.label(), self.a.label(), self.a.label());
        self.extension_bit(walked);
        self.a.jmp_imm(op::JEQ, R0, 0, walked);
        // Every extension header is at least 8 bytes: one that does not fit in
        // 8 fails `wire`'s checks (a missing length byte, or a length past
        // the payload) whatever its type.
        self.a.mov(R0, R3);
        self.a.alu_imm(op::ADD, R0, 8);
        self.a.jmp(op::JGT, R0, R2, bad);
        self.a.mov(R5, DATA);
        self.a.alu(op::ADD, R5, R1);
        self.a.alu(op::ADD, R5, R3);
        self.need(R5, 8);
        self.a.jmp_imm(op::JEQ, R4, i32::from(ipv6::FRAGMENT), frag);
        self.a.ldx(op::B, R0, R5, ipv6::EXT_LEN as i16);
        self.a.jmp_imm(op::JEQ, R4, i32::from(ipv6::AH), ah);
        // Hop-by-hop, routing, destination options: (len + 1) * 8.
        self.a.alu_imm(op::ADD, R0, 1);
        self.a.alu_imm(op::LSH, R0, 3);
        self.a.ja(have_len);
        // AH: (len + 2) * 4.
        self.a.bind(ah);
        self.a.alu_imm(op::ADD, R0, 2);
        self.a.alu_imm(op::LSH, R0, 2);
        self.a.ja(have_len);
        // Fragment: 8 bytes, which fit; a non-zero offset ends the walk.
        self.a.bind(frag);
        self.set(present::FRAG);
        self.load_be16(R0, R5, ipv6::FRAG_OFFSET);
        self.a.alu_imm(op::RSH, R0, 3);
        self.a.jmp_imm(op::JNE, R0, 0, later);
        self.a.mov_imm(R0, ipv6::FRAG_HEADER_LEN as i32);
        self.a.bind(have_len);
        self.a.alu(op::ADD, R3, R0);
        self.a.jmp(op::JGT, R3, R2, bad);
        self.widen(R3, WALK_MASK, R5, R4);
        self.a.ldx(op::B, R4, R5, ipv6::EXT_NEXT as i16);
    }

    /// `r0` = 1 if `r4` is an extension header's number, else 0; to `none`
    /// if it is beyond the mask. A bit test, not a comparison per kind: the
    /// verifier learns nothing of `r4` from it, so the walk's paths do not
    /// split on the kind before they must.
    fn extension_bit(&mut self, none: Label) {
        self.a.jmp_imm(op::JGT, R4, 63, none);
        self.a.ld_imm64(R0, EXTENSION_MASK);
        self.a.alu(op::RSH, R0, R4);
        self.a.alu_imm(op::AND, R0, 1);
    }

    /// The transport headers (`r1` the header's offset in the frame, `r2` the
    /// IP packet's end), then `bad` and `done`.
    fn transport(&mut self, l4: &L4) {
        let bad = self.bad;
        let l4_done = self.a.label();

        self.a.bind(l4.tcp);
        self.segment(tcp::MIN_HEADER_LEN);
        // r4: the header length, data offset * 4, within the segment.
        self.a.ldx(op::B, R4, R3, tcp::DATA_OFF as i16);
        self.a.alu_imm(op::RSH, R4, 4);
        self.a.alu_imm(op::LSH, R4, 2);
        self.a.jmp_imm(op::JLT, R4, tcp::MIN_HEADER_LEN as i32, bad);
        self.a.jmp(op::JLT, R2, R4, bad);
        self.ports(tcp::SPORT, tcp::DPORT);
        self.a.ldx(op::B, R0, R3, tcp::FLAGS as i16);
        self.a.alu_imm(op::AND, R0, i32::from(tcp::FLAG_MASK));
        self.store(op::B, offset_of!(Fields, tcp_flags), R0);
        self.set(present::TCP);
        self.a.ja(l4_done);

        self.a.bind(l4.udp);
        self.segment(udp::HEADER_LEN);
        self.ports(udp::SPORT, udp::DPORT);
        self.set(present::UDP);
        self.a.ja(l4_done);

        self.a.bind(l4.icmp);
        self.segment(icmp::MIN_LEN);
        self.copy(R3, icmp::TYPE as i16, offset_of!(Fields, icmp_type), 1);
        self.copy(R3, icmp::CODE as i16, offset_of!(Fields, icmp_code), 1);
        self.set(present::ICMP);

        self.a.bind(l4_done);
        self.store(op::H, offset_of!(Fields, l4_offset), R1);
        self.a.ja(self.done);

        self.a.bind(bad);
        self.set(present::MALFORMED);
    }

    /// `r2` becomes the segment's length (IP end - `r1`), malformed below
    /// `min`; `r3` points at the segment, `min` bytes readable.
    fn segment(&mut self, min: usize) {
        self.a.alu(op::SUB, R2, R1);
        self.a.jmp_imm(op::JLT, R2, min as i32, self.bad);
        self.at_offset(R3, R1);
        self.need(R3, min);
    }

    fn ports(&mut self, sport: usize, dport: usize) {
        self.load_be16(R0, R3, sport);
        self.store(op::H, offset_of!(Fields, sport), R0);
        self.load_be16(R0, R3, dport);
        self.store(op::H, offset_of!(Fields, dport), R0);
    }

    /// `done`: `present` stored. Every path ends here, and it is a jump
    /// target, so the verifier compares the paths' states here.
    fn epilogue(&mut self) {
        self.a.bind(self.done);
        self.store(op::W, offset_of!(Fields, present), PRESENT);
    }
}

/// The extension headers `wire::walk_ipv6_ext` walks, one bit per number
/// (all below 64).
const EXTENSION_MASK: u64 = {
    let kinds = [
        ipv6::HOP_BY_HOP,
        ipv6::ROUTING,
        ipv6::FRAGMENT,
        ipv6::AH,
        ipv6::DEST_OPTS,
    ];
    let mut mask = 0u64;
    let mut i = 0;
    while i < kinds.len() {
        assert!(kinds[i] < 64);
        mask |= 1 << kinds[i];
        i += 1;
    }
    mask
};
const _: () = assert!(size_of::<Fields>().is_multiple_of(4));
