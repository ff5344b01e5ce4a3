//! The fast path's `balance`: services of `balance maglev` or `hash`, DSR
//! and NAT, balanced in XDP as the switching cores balance them. A NAT
//! flow's destination address and port become its back end's (checksums
//! updated as the cores' `wire::nat` does), and its reply record in the
//! flows map lets the cores translate the replies, which come back through
//! them.
//!
//! The runtime publishes the active generation's tables in the `BAL_*` maps
//! (`lbp_abi::bpf::fast`: per service its Maglev table, its back ends with
//! the next hop's MACs and interface, the back ends that still serve it) in
//! two buffers, and the program reads the one [`fast::BAL_ACTIVE`] names. A
//! flow keeps its back end in the [`fast::FLOWS`] table (`flows.rs`), which outlives the
//! programs (a reload moves no established flow), as long as that back end
//! still serves the service (a back end in maintenance or gone from the pool
//! loses its flows: TCP goes to the cores, which reset it; anything else is
//! balanced anew). A new flow is a TCP SYN (without ACK or RST: it replaces
//! the record of an earlier connection of the same tuple) or any other
//! protocol's packet of no flow known here; its back end is the Maglev table's entry for the
//! decision's flow hash, the very entry the cores would take.
//!
//! The frame leaves with its TTL (hop limit) decreased, the IPv4 checksum
//! updated (RFC 1624) and the MACs of the next hop, by `XDP_TX` when the back
//! end is reached by the receiving interface, else by a redirect to its
//! interface. Whatever is not ready (a fragment, a TTL the cores answer, a
//! service the cores balance, a back end whose neighbour is unknown or whose
//! interface the program may not send on, a TCP segment of no flow known
//! here) goes to the cores untouched.

use std::mem::{offset_of, size_of};

use lbp_abi::bpf::fast::{BalBackend, BalService, Flow, FlowKey, ServingKey};
use lbp_abi::bpf::{Asm, Label, fast, helper, op, reg::*, xdp};
use lbp_abi::{Decision, Fields, present, tcp_flag};

use super::fast::{Maps, Slot, count};
use super::{DECISION_OFF, FIELDS_OFF};
use super::{flows, lookup};

/// The flow's key (8-aligned).
const FLOW_KEY_OFF: i16 = -224;
/// A [`ServingKey`].
const SERVING_OFF: i16 = -256;
/// The buffer read (u32).
const BUF_OFF: i16 = -260;
/// The back end's index in its service (u32).
const B_OFF: i16 = -264;
/// 1 for a new flow (u32).
const NEW_OFF: i16 = -268;
/// A u32 map key.
const KEY_OFF: i16 = -272;
/// The service's [`BalService`] (24 bytes, 4-aligned).
const SVC_OFF: i16 = -296;
/// The back end's [`BalBackend`] (40 bytes, 4-aligned).
const BACKEND_OFF: i16 = -336;
/// A counter slot (u32): the back end's first.
const SLOT_OFF: i16 = -340;
/// The [`Flow`] to record (24 bytes, 8-aligned).
const FLOW_OFF: i16 = -368;
/// 1 when the flow is to be recorded (new, or of an older stamp).
const RECORD_OFF: i16 = -372;

const _: () = assert!(size_of::<FlowKey>() == 40 && size_of::<ServingKey>() == 24);
const _: () = assert!(size_of::<BalService>() <= 24 && size_of::<BalBackend>() <= 40);
const _: () = assert!(size_of::<Flow>() == 24);

fn field(off: usize) -> i16 {
    FIELDS_OFF + off as i16
}

fn decision(off: usize) -> i16 {
    DECISION_OFF + off as i16
}

fn svc(off: usize) -> i16 {
    SVC_OFF + off as i16
}

fn backend(off: usize) -> i16 {
    BACKEND_OFF + off as i16
}

/// Copy `len` bytes (a multiple of 4) from `src + from` to `FP + to` in
/// words, through `R2`.
fn copy(a: &mut Asm, src: u8, from: i16, to: i16, len: usize) {
    for i in (0..len as i16).step_by(4) {
        a.ldx(op::W, R2, src, from + i);
        a.stx(op::W, FP, to + i, R2);
    }
}

/// The flow key's two addresses (at `FLOW_KEY_OFF`) from the stack: its
/// `client` from `client`, its `vip` from `vip`.
fn key_addrs(a: &mut Asm, client: i16, vip: i16) {
    copy(
        a,
        FP,
        client,
        FLOW_KEY_OFF + offset_of!(FlowKey, client) as i16,
        16,
    );
    copy(
        a,
        FP,
        vip,
        FLOW_KEY_OFF + offset_of!(FlowKey, vip) as i16,
        16,
    );
}

/// Balance the frame (the decision is `Balance`) or jump to `cores`.
/// `services`: the policy's number of services; `ctx`: where the context is.
pub(super) fn emit(a: &mut Asm, m: Maps, services: u32, ctx: i16, cores: Label) {
    // Fragments and a TTL the cores answer.
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.alu_imm(op::AND, R2, present::FRAG as i32);
    a.jmp_imm(op::JNE, R2, 0, cores);
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, ip_ttl)));
    a.jmp_imm(op::JLE, R2, 1, cores);

    // The buffer, then the service in it.
    a.st_imm(op::W, FP, KEY_OFF, 0);
    lookup(a, m.bal_active, KEY_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    a.ldx(op::W, R2, R0, 0);
    a.stx(op::W, FP, BUF_OFF, R2);
    a.alu32_imm(op::MUL, R2, services as i32);
    a.ldx(op::W, R3, FP, decision(offset_of!(Decision, target)));
    a.alu32(op::ADD, R2, R3);
    a.stx(op::W, FP, KEY_OFF, R2);
    lookup(a, m.bal_services, KEY_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    copy(a, R0, 0, SVC_OFF, size_of::<BalService>());
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, flags)));
    a.alu_imm(op::AND, R2, fast::SVC_XDP as i32);
    a.jmp_imm(op::JEQ, R2, 0, cores);

    // The flow's key, as the cores' connection table keys it.
    for i in (0..size_of::<FlowKey>() as i16).step_by(8) {
        a.st_imm(op::DW, FP, FLOW_KEY_OFF + i, 0);
    }
    key_addrs(
        a,
        field(offset_of!(Fields, ip_src)),
        field(offset_of!(Fields, ip_dst)),
    );
    for (from, to, size) in [
        (
            offset_of!(Fields, sport),
            offset_of!(FlowKey, client_port),
            op::H,
        ),
        (offset_of!(Fields, dport), offset_of!(FlowKey, vport), op::H),
        (
            offset_of!(Fields, ip_version),
            offset_of!(FlowKey, version),
            op::B,
        ),
        (
            offset_of!(Fields, ip_proto),
            offset_of!(FlowKey, proto),
            op::B,
        ),
    ] {
        a.ldx(size, R2, FP, field(from));
        a.stx(size, FP, FLOW_KEY_OFF + to as i16, R2);
    }

    // A flow known here keeps its back end while that still serves: by its
    // index when it was recorded under these tables (its stamp), else found
    // again by address among those that serve, and recorded anew.
    let new = a.label();
    let have = a.label();
    flows::find(a, m.flows, FLOW_KEY_OFF, cores, flows::Now::Read);
    a.st_imm(op::W, FP, RECORD_OFF, 0);
    // A SYN (without ACK or RST) opens a connection anew, as the cores
    // re-balance a SYN of a tuple whose connection ended: the flow's record
    // is replaced.
    let not_syn = a.label();
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.alu_imm(op::AND, R2, present::TCP as i32);
    a.jmp_imm(op::JEQ, R2, 0, not_syn);
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, tcp_flags)));
    a.alu_imm(
        op::AND,
        R2,
        i32::from(tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST),
    );
    a.jmp_imm(op::JEQ, R2, i32::from(tcp_flag::SYN), new);
    a.bind(not_syn);
    a.jmp_imm(op::JEQ, R0, 0, new);
    let older = a.label();
    a.ldx(op::W, R2, R0, offset_of!(Flow, stamp) as i16);
    a.ldx(op::W, R3, FP, svc(offset_of!(BalService, stamp)));
    a.jmp(op::JNE, R2, R3, older);
    a.ldx(op::W, R2, R0, offset_of!(Flow, index) as i16);
    a.stx(op::W, FP, B_OFF, R2);
    a.st_imm(op::W, FP, NEW_OFF, 0);
    a.ja(have);
    a.bind(older);
    a.st_imm(op::W, FP, RECORD_OFF, 1);
    copy(
        a,
        R0,
        offset_of!(Flow, backend) as i16,
        SERVING_OFF + offset_of!(ServingKey, addr) as i16,
        16,
    );
    a.ldx(op::W, R2, FP, BUF_OFF);
    a.stx(
        op::W,
        FP,
        SERVING_OFF + offset_of!(ServingKey, buffer) as i16,
        R2,
    );
    a.ldx(op::W, R2, FP, decision(offset_of!(Decision, target)));
    a.stx(
        op::W,
        FP,
        SERVING_OFF + offset_of!(ServingKey, service) as i16,
        R2,
    );
    lookup(a, m.bal_serving, SERVING_OFF);
    let gone = a.label();
    a.jmp_imm(op::JEQ, R0, 0, gone);
    a.ldx(op::W, R2, R0, 0);
    a.stx(op::W, FP, B_OFF, R2);
    a.st_imm(op::W, FP, NEW_OFF, 0);
    a.ja(have);
    // Its back end no longer serves: the flow is forgotten.
    a.bind(gone);
    flows::forget(a);

    // A new flow: TCP only by a SYN without ACK (anything else of no flow
    // known here is the cores' to answer).
    a.bind(new);
    let pick = a.label();
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.alu_imm(op::AND, R2, present::TCP as i32);
    a.jmp_imm(op::JEQ, R2, 0, pick);
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, tcp_flags)));
    a.alu_imm(op::AND, R2, i32::from(tcp_flag::SYN | tcp_flag::ACK));
    a.jmp_imm(op::JNE, R2, i32::from(tcp_flag::SYN), cores);
    a.bind(pick);
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, maglev_len)));
    a.jmp_imm(op::JEQ, R2, 0, cores);
    a.ldx(op::W, R3, FP, decision(offset_of!(Decision, hash)));
    a.alu(op::MOD, R3, R2);
    a.ldx(op::W, R4, FP, svc(offset_of!(BalService, maglev_base)));
    a.alu32(op::ADD, R3, R4);
    a.stx(op::W, FP, KEY_OFF, R3);
    lookup(a, m.bal_maglev, KEY_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    a.ldx(op::W, R2, R0, 0);
    a.jmp32_imm(op::JEQ, R2, fast::NO_BACKEND as i32, cores);
    a.stx(op::W, FP, B_OFF, R2);
    a.st_imm(op::W, FP, NEW_OFF, 1);
    a.st_imm(op::W, FP, RECORD_OFF, 1);

    // The back end: ready to be sent to from here?
    a.bind(have);
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, backend_base)));
    a.ldx(op::W, R3, FP, B_OFF);
    a.alu32(op::ADD, R2, R3);
    a.stx(op::W, FP, KEY_OFF, R2);
    lookup(a, m.bal_backends, KEY_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    copy(a, R0, 0, BACKEND_OFF, size_of::<BalBackend>());
    // An established flow needs a usable neighbour, a new one a confirmed
    // one (NEW_OFF is 0 or 1: the flag tested is READY << NEW_OFF).
    const _: () = assert!(fast::BACKEND_NEW == fast::BACKEND_READY << 1);
    a.ldx(op::W, R2, FP, backend(offset_of!(BalBackend, flags)));
    a.ldx(op::W, R3, FP, NEW_OFF);
    a.alu32(op::RSH, R2, R3);
    a.alu_imm(op::AND, R2, fast::BACKEND_READY as i32);
    a.jmp_imm(op::JEQ, R2, 0, cores);
    packet_bounds(a, ctx, cores);
    nat_ready(a, cores);

    // Decided: the flow recorded (its back end's address, index and the
    // tables' stamp; `flows::record`), the counters, then the frame.
    let known = a.label();
    a.ldx(op::W, R2, FP, RECORD_OFF);
    a.jmp_imm(op::JEQ, R2, 0, known);
    copy(
        a,
        FP,
        backend(offset_of!(BalBackend, addr)),
        FLOW_OFF + offset_of!(Flow, backend) as i16,
        16,
    );
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, stamp)));
    a.stx(op::W, FP, FLOW_OFF + offset_of!(Flow, stamp) as i16, R2);
    a.ldx(op::W, R2, FP, B_OFF);
    a.stx(op::W, FP, FLOW_OFF + offset_of!(Flow, index) as i16, R2);
    flows::record(a, FLOW_KEY_OFF, FLOW_OFF, cores);
    reply_record(a, m, known, cores);
    a.bind(known);
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, counters)));
    a.ldx(op::W, R3, FP, B_OFF);
    a.alu32_imm(op::LSH, R3, 1);
    a.alu32(op::ADD, R2, R3);
    a.stx(op::W, FP, SLOT_OFF, R2);
    let counted = a.label();
    a.ldx(op::W, R2, FP, NEW_OFF);
    a.jmp_imm(op::JEQ, R2, 0, counted);
    count(a, m, Slot::Plus(0, SLOT_OFF));
    a.bind(counted);
    count(a, m, Slot::Plus(1, SLOT_OFF));
    count(
        a,
        m,
        Slot::Fixed(fast::ACTIONS + lbp_abi::Action::Balance as u32),
    );

    // The frame: bounds again (the helpers took the registers), the TTL,
    // NAT's rewrite, the MACs, out.
    packet_bounds(a, ctx, cores);
    l4_bounds(a, cores);
    let v6 = a.label();
    let macs = a.label();
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, ip_version)));
    a.jmp_imm(op::JNE, R2, 4, v6);
    // IPv4: the word of TTL and protocol, loaded in the host's order (the
    // TTL its low byte: eBPF runs in the host's order, little-endian on every
    // machine lbp is built for), and the checksum updated by RFC 1624's equation 3,
    // whose ones' complement sums give the same bytes in either order.
    a.ldx(op::H, R3, R4, 8);
    a.ldx(op::H, R5, R4, 10);
    a.alu_imm(op::XOR, R5, 0xffff);
    a.mov(R2, R3);
    a.alu_imm(op::XOR, R2, 0xffff);
    a.alu(op::ADD, R5, R2);
    a.alu_imm(op::SUB, R3, 1);
    a.alu(op::ADD, R5, R3);
    a.csum_fold(R5, R2);
    a.stx(op::H, R4, 8, R3);
    a.stx(op::H, R4, 10, R5);
    nat_rewrite(a, 4);
    a.ja(macs);
    a.bind(v6);
    a.ldx(op::B, R3, R4, 7);
    a.alu_imm(op::SUB, R3, 1);
    a.stx(op::B, R4, 7, R3);
    nat_rewrite(a, 6);
    a.bind(macs);
    // Destination then source MAC: the struct's 12 bytes from dst_mac on.
    const _: () = assert!(
        offset_of!(BalBackend, src_mac) == offset_of!(BalBackend, dst_mac) + 6
            && offset_of!(BalBackend, dst_mac) % 4 == 0
    );
    for i in (0..12i16).step_by(4) {
        a.ldx(op::W, R2, FP, backend(offset_of!(BalBackend, dst_mac)) + i);
        a.stx(op::W, R6, i, R2);
    }
    let redirect = a.label();
    a.ldx(op::W, R2, FP, backend(offset_of!(BalBackend, ifindex)));
    a.ldx(op::DW, R1, FP, ctx);
    a.ldx(op::W, R3, R1, xdp::INGRESS_IFINDEX);
    a.jmp(op::JNE, R2, R3, redirect);
    a.ret(xdp::TX);
    a.bind(redirect);
    a.mov(R1, R2);
    a.mov_imm(R2, 0);
    a.call(helper::REDIRECT);
    a.exit();
}

/// NAT: the transport header the rewrite touches is whole within the IP
/// packet (which is within the frame), as the cores' rewrite demands, and
/// TCP or UDP; else a jump to `cores`.
fn nat_ready(a: &mut Asm, cores: Label) {
    let done = a.label();
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, flags)));
    a.alu_imm(op::AND, R2, fast::SVC_NAT as i32);
    a.jmp_imm(op::JEQ, R2, 0, done);
    // The transport header's room by protocol in R3.
    let udp = a.label();
    let sized = a.label();
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.mov(R3, R2);
    a.alu_imm(op::AND, R3, present::TCP as i32);
    a.jmp_imm(op::JEQ, R3, 0, udp);
    a.mov_imm(R3, 20);
    a.ja(sized);
    a.bind(udp);
    a.alu_imm(op::AND, R2, present::UDP as i32);
    a.jmp_imm(op::JEQ, R2, 0, cores);
    a.mov_imm(R3, 8);
    a.bind(sized);
    // l4 >= l3 + the IP header, l4 + room <= l3 + ip_len <= the frame.
    a.ldx(op::H, R5, FP, field(offset_of!(Fields, l4_offset)));
    a.jmp_imm(op::JGT, R5, L4_MAX, cores);
    a.ldx(op::H, R8, FP, field(offset_of!(Fields, l3_offset)));
    a.mov(R2, R8);
    a.alu_imm(op::ADD, R2, 20);
    let v4 = a.label();
    a.ldx(op::B, R0, FP, field(offset_of!(Fields, ip_version)));
    a.jmp_imm(op::JEQ, R0, 4, v4);
    a.alu_imm(op::ADD, R2, 20);
    a.bind(v4);
    a.jmp(op::JLT, R5, R2, cores);
    a.alu(op::ADD, R5, R3);
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, ip_len)));
    a.alu(op::ADD, R2, R8);
    a.jmp(op::JGT, R5, R2, cores);
    a.ldx(op::W, R3, FP, field(offset_of!(Fields, pkt_len)));
    a.jmp(op::JGT, R2, R3, cores);
    a.bind(done);
}

/// The largest transport header offset NAT rewrites in XDP.
const L4_MAX: i32 = 255;

/// `R9` = the transport header and `R8` its checksum (NAT's, whole in the
/// frame), after `packet_bounds`; for DSR both point into the Ethernet
/// header (never written: the verifier sees no path through NAT's rewrite
/// without valid pointers).
fn l4_bounds(a: &mut Asm, cores: Label) {
    let nat = a.label();
    let done = a.label();
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, flags)));
    a.alu_imm(op::AND, R2, fast::SVC_NAT as i32);
    a.jmp_imm(op::JNE, R2, 0, nat);
    a.mov(R9, R6);
    a.mov(R8, R6);
    a.alu_imm(op::ADD, R8, 6);
    a.ja(done);
    a.bind(nat);
    a.ldx(op::H, R5, FP, field(offset_of!(Fields, l4_offset)));
    a.jmp_imm(op::JGT, R5, L4_MAX, cores);
    a.mov(R9, R6);
    a.alu(op::ADD, R9, R5);
    let udp = a.label();
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.alu_imm(op::AND, R2, present::TCP as i32);
    a.jmp_imm(op::JEQ, R2, 0, udp);
    a.mov(R5, R9);
    a.alu_imm(op::ADD, R5, 20);
    a.jmp(op::JGT, R5, R7, cores);
    a.mov(R8, R9);
    a.alu_imm(op::ADD, R8, 16);
    a.ja(done);
    a.bind(udp);
    a.mov(R5, R9);
    a.alu_imm(op::ADD, R5, 8);
    a.jmp(op::JGT, R5, R7, cores);
    a.mov(R8, R9);
    a.alu_imm(op::ADD, R8, 6);
    a.bind(done);
}

/// `dst` = the sum of the `n` 16-bit words at `src + off` (as loaded: the
/// ones' complement sum is the same in either byte order).
fn sum_words(a: &mut Asm, dst: u8, src: u8, off: i16, n: i16) {
    a.mov_imm(dst, 0);
    for i in 0..n {
        a.ldx(op::H, R3, src, off + 2 * i);
        a.alu(op::ADD, dst, R3);
    }
}

/// NAT's rewrite of an IPv`version` packet after its TTL (`R4` its IP
/// header, `R9` its transport header, `R8` the transport checksum): the
/// destination address and port to the back end's, the IPv4 checksum and
/// the transport checksum updated as the cores' `wire::nat` does (RFC 1624,
/// one update for the address and one for the port; a UDP result of 0
/// written 0xffff; an IPv4 UDP checksum of 0 left alone). Nothing for DSR.
fn nat_rewrite(a: &mut Asm, version: u8) {
    let done = a.label();
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, flags)));
    a.alu_imm(op::AND, R2, fast::SVC_NAT as i32);
    a.jmp_imm(op::JEQ, R2, 0, done);
    let (at, words, from) = if version == 4 {
        (16i16, 2i16, 12i16)
    } else {
        (24, 8, 0)
    };
    let new = backend(offset_of!(BalBackend, addr)) + from;
    if version == 6 {
        // `packet_bounds` took 40 bytes for IPv6; the verifier cannot tell.
        let whole = a.label();
        a.mov(R2, R4);
        a.alu_imm(op::ADD, R2, 40);
        a.jmp(op::JLE, R2, R7, whole);
        a.ret(xdp::DROP);
        a.bind(whole);
    }
    // R7 = ~fold(old), R0 = sum(new).
    sum_words(a, R7, R4, at, words);
    a.csum_fold(R7, R2);
    sum_words(a, R0, FP, new, words);
    if version == 4 {
        a.ldx(op::H, R5, R4, 10);
        a.alu_imm(op::XOR, R5, 0xffff);
        a.alu(op::ADD, R5, R7);
        a.alu(op::ADD, R5, R0);
        a.csum_fold(R5, R2);
        a.stx(op::H, R4, 10, R5);
    }
    for i in (0..2 * words).step_by(2) {
        a.ldx(op::H, R2, FP, new + i);
        a.stx(op::H, R4, at + i, R2);
    }
    // The port: the back end's, or the packet's (then rewritten as is).
    let ported = a.label();
    a.ldx(op::H, R1, R9, 2);
    a.ldx(op::H, R5, FP, backend(offset_of!(BalBackend, port)));
    a.be(R5, 16);
    a.jmp_imm(op::JNE, R5, 0, ported);
    a.mov(R5, R1);
    a.bind(ported);
    a.stx(op::H, R9, 2, R5);
    // The transport checksum.
    a.ldx(op::H, R3, R8, 0);
    if version == 4 {
        a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
        a.alu_imm(op::AND, R2, present::UDP as i32);
        let tcp = a.label();
        a.jmp_imm(op::JEQ, R2, 0, tcp);
        a.jmp_imm(op::JEQ, R3, 0, done);
        a.bind(tcp);
    }
    a.alu_imm(op::XOR, R3, 0xffff);
    a.alu(op::ADD, R3, R7);
    a.alu(op::ADD, R3, R0);
    a.csum_fold(R3, R2);
    a.alu_imm(op::XOR, R3, 0xffff);
    a.alu_imm(op::XOR, R1, 0xffff);
    a.alu(op::ADD, R3, R1);
    a.alu(op::ADD, R3, R5);
    a.csum_fold(R3, R2);
    let put = a.label();
    a.jmp_imm(op::JNE, R3, 0, put);
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    a.alu_imm(op::AND, R2, present::UDP as i32);
    a.jmp_imm(op::JEQ, R2, 0, put);
    a.mov_imm(R3, 0xffff);
    a.bind(put);
    a.stx(op::H, R8, 0, R3);
    a.bind(done);
}

/// A NAT flow's reply record, after its forward record (`FLOW_KEY_OFF`
/// and `FLOW_OFF` are reused): keyed as the back end's replies, naming the
/// virtual IP and port. Nothing for DSR.
fn reply_record(a: &mut Asm, m: Maps, done: Label, cores: Label) {
    a.ldx(op::W, R2, FP, svc(offset_of!(BalService, flags)));
    a.alu_imm(op::AND, R2, fast::SVC_NAT as i32);
    a.jmp_imm(op::JEQ, R2, 0, done);
    key_addrs(
        a,
        backend(offset_of!(BalBackend, addr)),
        field(offset_of!(Fields, ip_src)),
    );
    let ported = a.label();
    a.ldx(op::H, R2, FP, backend(offset_of!(BalBackend, port)));
    a.jmp_imm(op::JNE, R2, 0, ported);
    a.ldx(op::H, R2, FP, field(offset_of!(Fields, dport)));
    a.bind(ported);
    a.stx(
        op::H,
        FP,
        FLOW_KEY_OFF + offset_of!(FlowKey, client_port) as i16,
        R2,
    );
    a.ldx(op::H, R2, FP, field(offset_of!(Fields, sport)));
    a.stx(
        op::H,
        FP,
        FLOW_KEY_OFF + offset_of!(FlowKey, vport) as i16,
        R2,
    );
    copy(
        a,
        FP,
        field(offset_of!(Fields, ip_dst)),
        FLOW_OFF + offset_of!(Flow, backend) as i16,
        16,
    );
    a.st_imm(op::W, FP, FLOW_OFF + offset_of!(Flow, stamp) as i16, 0);
    a.ldx(op::H, R2, FP, field(offset_of!(Fields, dport)));
    a.alu32_imm(op::OR, R2, fast::FLOW_REPLY as i32);
    a.stx(op::W, FP, FLOW_OFF + offset_of!(Flow, index) as i16, R2);
    flows::find(a, m.flows, FLOW_KEY_OFF, cores, flows::Now::Kept);
    flows::record(a, FLOW_KEY_OFF, FLOW_OFF, cores);
}

/// `R6` = the frame's start (its Ethernet header whole), `R4` = its IP
/// header, whole in the frame (20 bytes for IPv4, 40 for IPv6), or a jump
/// to `cores`.
fn packet_bounds(a: &mut Asm, ctx: i16, cores: Label) {
    a.ldx(op::DW, R1, FP, ctx);
    a.ldx(op::W, R6, R1, xdp::DATA);
    a.ldx(op::W, R7, R1, xdp::DATA_END);
    a.mov(R5, R6);
    a.alu_imm(op::ADD, R5, 14);
    a.jmp(op::JGT, R5, R7, cores);
    a.ldx(op::H, R8, FP, field(offset_of!(Fields, l3_offset)));
    a.jmp_imm(op::JGT, R8, 64, cores);
    a.jmp_imm(op::JLT, R8, 14, cores);
    a.mov(R4, R6);
    a.alu(op::ADD, R4, R8);
    a.mov(R5, R4);
    a.alu_imm(op::ADD, R5, 40);
    let whole = a.label();
    a.jmp(op::JLE, R5, R7, whole);
    a.ldx(op::B, R2, FP, field(offset_of!(Fields, ip_version)));
    a.jmp_imm(op::JNE, R2, 4, cores);
    a.alu_imm(op::SUB, R5, 20);
    a.jmp(op::JGT, R5, R7, cores);
    a.bind(whole);
}
