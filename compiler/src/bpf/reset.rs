//! The fast path's TCP reset: the segment's frame turned, in place, into the
//! RST that answers it, exactly as the switching cores build it
//! (`lbp_runtime::wire::reset_in_place`, RFC 9293 section 3.10.7.1):
//! Ethernet addresses, IP addresses and ports swapped, VLAN tags kept; with
//! ACK the RST carries `seq = SEG.ACK`, else `seq = 0`, `ack = SEG.SEQ +
//! SEG.LEN` and RST|ACK; no options, no payload, window 0; a fresh IPv4
//! header (identification 0, DF, TTL 64) or IPv6 header (hop limit 64,
//! extension headers dropped); both checksums from scratch.
//!
//! What the cores would not answer (a RST, a fragment, a TCP header not whole
//! inside its IP packet), and what this code does not try (a header beyond
//! the first 4 KiB), jumps to `cores`: they decide it again and drop it or
//! answer it. The checksums are ones' complement sums of 16-bit words loaded
//! in the host's order, which give the right bytes when stored back in that
//! order (RFC 1071); the one constant word, the pseudo-header's protocol plus
//! length, is written in the host's order too.

use std::mem::offset_of;

use lbp_abi::bpf::{Asm, Label, op, reg::*, xdp};
use lbp_abi::{Fields, present, tcp_flag};

use super::FIELDS_OFF;

/// Where the new frame's length is left for the caller (a u32).
pub(super) const NEW_LEN_OFF: i16 = -160;
/// The answer's ports, sequence and acknowledgment numbers and flags, as
/// they go on the wire.
const SPORT_OFF: i16 = -162;
const DPORT_OFF: i16 = -164;
const SEQ_OFF: i16 = -168;
const ACK_OFF: i16 = -172;
const FLAGS_OFF: i16 = -176;

/// TTL and hop limit of a reset (`wire::reset::RESET_TTL`).
const RESET_TTL: i32 = 64;
/// The largest transport offset answered here.
const MAX_L4: i32 = 4096;

fn field(off: usize) -> i16 {
    FIELDS_OFF + off as i16
}

/// Rewrite the frame (context at `FP + ctx`) into its reset and leave the
/// new length at [`NEW_LEN_OFF`]; or jump to `cores`.
pub(super) fn emit(a: &mut Asm, ctx: i16, cores: Label) {
    // What the cores would not answer.
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.mov(R3, R2);
    a.alu_imm(op::AND, R3, present::TCP as i32);
    a.jmp_imm(op::JEQ, R3, 0, cores);
    a.alu_imm(op::AND, R2, present::FRAG as i32);
    a.jmp_imm(op::JNE, R2, 0, cores);
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, tcp_flags)));
    a.alu_imm(op::AND, R2, i32::from(tcp_flag::RST));
    a.jmp_imm(op::JNE, R2, 0, cores);

    // R6 data, R7 data end, R8 l3, R9 l4 (both bounded for the verifier).
    a.ldx(op::DW, R1, FP, ctx);
    a.ldx(op::W, R6, R1, xdp::DATA);
    a.ldx(op::W, R7, R1, xdp::DATA_END);
    a.ldx(op::H, R8, FP, field(offset_of!(Fields, l3_offset)));
    a.jmp_imm(op::JGT, R8, 64, cores);
    a.jmp_imm(op::JLT, R8, 14, cores);
    a.ldx(op::H, R9, FP, field(offset_of!(Fields, l4_offset)));
    a.jmp_imm(op::JGT, R9, MAX_L4, cores);

    // The segment's TCP header, whole inside the frame and the IP packet.
    a.mov(R4, R6);
    a.alu(op::ADD, R4, R9);
    a.mov(R5, R4);
    a.alu_imm(op::ADD, R5, 20);
    a.jmp(op::JGT, R5, R7, cores);
    a.ldx(op::B, R3, R4, 12);
    a.alu_imm(op::RSH, R3, 4);
    a.alu_imm(op::LSH, R3, 2);
    a.jmp_imm(op::JLT, R3, 20, cores);
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, ip_len)));
    a.alu(op::ADD, R2, R8);
    a.mov(R5, R9);
    a.alu(op::ADD, R5, R3);
    a.jmp(op::JGT, R5, R2, cores);
    // R2 = the payload's length (the IP packet's end less the header's).
    a.alu(op::SUB, R2, R5);

    // The answer's ports (swapped), numbers and flags, on the stack.
    a.ldx(op::H, R3, R4, 0);
    a.stx(op::H, FP, DPORT_OFF, R3);
    a.ldx(op::H, R3, R4, 2);
    a.stx(op::H, FP, SPORT_OFF, R3);
    a.ldx(op::B, R5, FP, field(offset_of!(Fields, tcp_flags)));
    let no_ack = a.label();
    let numbers = a.label();
    a.mov(R3, R5);
    a.alu_imm(op::AND, R3, i32::from(tcp_flag::ACK));
    a.jmp_imm(op::JEQ, R3, 0, no_ack);
    a.ldx(op::W, R3, R4, 8);
    a.stx(op::W, FP, SEQ_OFF, R3);
    a.st_imm(op::W, FP, ACK_OFF, 0);
    a.st_imm(op::B, FP, FLAGS_OFF, i32::from(tcp_flag::RST));
    a.ja(numbers);
    a.bind(no_ack);
    // ack = SEG.SEQ + payload + SYN + FIN, in host order, then back.
    a.ldx(op::W, R3, R4, 4);
    a.be(R3, 32);
    a.alu(op::ADD, R3, R2);
    for bit in [tcp_flag::SYN, tcp_flag::FIN] {
        let skip = a.label();
        a.mov(R0, R5);
        a.alu_imm(op::AND, R0, i32::from(bit));
        a.jmp_imm(op::JEQ, R0, 0, skip);
        a.alu_imm(op::ADD, R3, 1);
        a.bind(skip);
    }
    a.be(R3, 32);
    a.stx(op::W, FP, ACK_OFF, R3);
    a.st_imm(op::W, FP, SEQ_OFF, 0);
    a.st_imm(
        op::B,
        FP,
        FLAGS_OFF,
        i32::from(tcp_flag::RST | tcp_flag::ACK),
    );
    a.bind(numbers);

    // Ethernet addresses in bounds (the verifier wants their own check).
    a.mov(R5, R6);
    a.alu_imm(op::ADD, R5, 12);
    a.jmp(op::JGT, R5, R7, cores);
    // The new headers: R4 the IP header, checked for the answer's length
    // in each family (a path of its own each, so that the verifier knows
    // the bound on each).
    a.mov(R4, R6);
    a.alu(op::ADD, R4, R8);
    let v6 = a.label();
    let tcp = a.label();
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, ip_version)));
    a.jmp_imm(op::JNE, R2, 4, v6);
    headers_fit(a, 40, cores);
    swap_macs(a);
    // IPv4: 45 00 | 00 28 | 00 00 | 40 00 | 40 06 | csum | dst | src.
    for (at, b) in [(0, 0x45), (1, 0), (2, 0), (3, 40), (6, 0x40), (7, 0)] {
        a.st_imm(op::B, R4, at, b);
    }
    a.st_imm(op::H, R4, 4, 0);
    a.st_imm(op::B, R4, 8, RESET_TTL);
    a.st_imm(op::B, R4, 9, 6);
    a.st_imm(op::H, R4, 10, 0);
    swap_addrs(a, 12, 1);
    sum_words(a, R4, 0, 10);
    a.csum_fold(R0, R1);
    a.stx(op::H, R4, 10, R0);
    tcp_after(a, 12, 1, 20);
    a.ja(tcp);

    a.bind(v6);
    headers_fit(a, 60, cores);
    swap_macs(a);
    // IPv6: 60 00 00 00 | 00 14 | 06 | 40 | dst | src.
    for (at, b) in [(0, 0x60), (1, 0), (2, 0), (3, 0), (4, 0), (5, 20)] {
        a.st_imm(op::B, R4, at, b);
    }
    a.st_imm(op::B, R4, 6, 6);
    a.st_imm(op::B, R4, 7, RESET_TTL);
    swap_addrs(a, 8, 4);
    tcp_after(a, 8, 4, 40);

    // The TCP header at R5; R9 the addresses' sum.
    a.bind(tcp);
    a.ldx(op::H, R2, FP, SPORT_OFF);
    a.stx(op::H, R5, 0, R2);
    a.ldx(op::H, R2, FP, DPORT_OFF);
    a.stx(op::H, R5, 2, R2);
    a.ldx(op::W, R2, FP, SEQ_OFF);
    a.stx(op::W, R5, 4, R2);
    a.ldx(op::W, R2, FP, ACK_OFF);
    a.stx(op::W, R5, 8, R2);
    a.st_imm(op::B, R5, 12, 5 << 4);
    a.ldx(op::B, R2, FP, FLAGS_OFF);
    a.stx(op::B, R5, 13, R2);
    for at in [14, 16, 18] {
        a.st_imm(op::H, R5, at, 0);
    }
    sum_words(a, R5, 0, 10);
    a.alu(op::ADD, R0, R9);
    // Protocol 6 and length 20, as the host loads the words 00 06 and 00 14.
    let pseudo = u16::from_ne_bytes([0, 6]) as i32 + u16::from_ne_bytes([0, 20]) as i32;
    a.alu_imm(op::ADD, R0, pseudo);
    a.csum_fold(R0, R1);
    a.stx(op::H, R5, 16, R0);
}

/// The IP header at `R4` gets the segment's addresses swapped, as `words`
/// 32-bit words each (the last ones of the `Fields` form: 1 for IPv4, 4 for
/// IPv6) from `at`: the new source (the old destination), then the new
/// destination.
fn swap_addrs(a: &mut Asm, at: i16, words: usize) {
    for (k, i) in (4 - words..4).enumerate() {
        let k = 4 * k as i16;
        a.ldx(op::W, R2, FP, field(offset_of!(Fields, ip_dst) + 4 * i));
        a.stx(op::W, R4, at + k, R2);
        a.ldx(op::W, R2, FP, field(offset_of!(Fields, ip_src) + 4 * i));
        a.stx(op::W, R4, at + 4 * words as i16 + k, R2);
    }
}

/// After an IP header of `ip_len` bytes at `R4` whose addresses (`words`
/// 32-bit words each) start at `at`: `R9` = the addresses' sum (for the
/// pseudo-header), `R5` = the TCP header, and the answer's length stored.
fn tcp_after(a: &mut Asm, at: i16, words: i16, ip_len: i32) {
    sum_words(a, R4, at, 4 * words);
    a.mov(R9, R0);
    a.mov(R5, R4);
    a.alu_imm(op::ADD, R5, ip_len);
    new_len(a, ip_len + 20);
}

/// The answer's length, the IP header's offset (`R8`) plus `headers` (IP
/// and TCP), at [`NEW_LEN_OFF`]: a number, not a difference of packet
/// pointers, which the verifier allows only with CAP_PERFMON.
fn new_len(a: &mut Asm, headers: i32) {
    a.mov(R2, R8);
    a.alu_imm(op::ADD, R2, headers);
    a.stx(op::W, FP, NEW_LEN_OFF, R2);
}

/// The IP header at `R4` and the TCP header after it, `len` bytes in all,
/// inside the frame (`R7` its end); else to `cores`.
fn headers_fit(a: &mut Asm, len: i32, cores: Label) {
    a.mov(R5, R4);
    a.alu_imm(op::ADD, R5, len);
    a.jmp(op::JGT, R5, R7, cores);
}

/// The frame's (`R6`) Ethernet addresses swapped.
fn swap_macs(a: &mut Asm) {
    a.ldx(op::W, R0, R6, 0);
    a.ldx(op::H, R1, R6, 4);
    a.ldx(op::W, R2, R6, 6);
    a.ldx(op::H, R3, R6, 10);
    a.stx(op::W, R6, 0, R2);
    a.stx(op::H, R6, 4, R3);
    a.stx(op::W, R6, 6, R0);
    a.stx(op::H, R6, 10, R1);
}

/// `R0` = the sum of `n` 16-bit words at `base + at` (as the host loads
/// them); uses `R1`.
fn sum_words(a: &mut Asm, base: u8, at: i16, n: i16) {
    a.mov_imm(R0, 0);
    for i in 0..n {
        a.ldx(op::H, R1, base, at + 2 * i);
        a.alu(op::ADD, R0, R1);
    }
}
