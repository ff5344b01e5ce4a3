//! [`Mode::Fast`](super::Mode::Fast): the program that runs on the
//! appliance's interfaces in place of the plain AF_XDP redirect, and decides
//! in the kernel what needs no switching core.
//!
//! Around the decision (extract, then `decide`) it adds:
//!
//! - before it, the receiving interface (the OS index to the policy's, from
//!   the [`fast::IFACES`] map the runtime fills; an interface not there goes
//!   to the cores), and the frames the cores must see whatever the policy
//!   says, because they act on them before the policy runs: ARP, IPv6
//!   neighbour solicitations and advertisements, ICMP errors (which may be
//!   about a balanced connection), and traffic from or to a NAT back end (its
//!   return traffic, and a SYN that ends an earlier connection of the same
//!   tuple: the connection table's business; [`fast::NAT_BACKENDS`], behind
//!   the bit filter [`fast::NAT_FILTER`], so that most frames skip its hash);
//! - after it, the action: a `drop` is counted and dropped here
//!   (`XDP_DROP`); a `reset` (a filter rule's, or a virtual IP's port
//!   without a service) is answered here with the RST the cores would send
//!   (`reset.rs`, `XDP_TX` on the receiving interface, where the runtime
//!   allows it: [`fast::IFACE_TX`]); everything else goes
//!   to the switching cores through the interface's XSK map, as the redirect
//!   program sends it.
//!
//! Counters are per CPU ([`fast::COUNTERS`], the layout of
//! `lbp_abi::bpf::fast`): frames seen, sent to the cores, decided here by
//! action, drops by stage, and by filter rule.

use std::mem::{offset_of, size_of};

use lbp_abi::bpf::{Asm, Label, MapKind, MapSpec, fast, helper, op, reg::*, xdp};
use lbp_abi::{Action, Decision, Fields, present};

use super::{DECISION_OFF, FIELDS_OFF, lookup};
use crate::ir::Program;

/// Where the XDP context is kept (the decision may use every register).
const CTX_OFF: i16 = -136;
/// A map key (u32).
const KEY_OFF: i16 = -140;
/// The receiving interface's [`fast::IFACE_TX`] bit (a u32).
const TX_OFF: i16 = -144;
/// An address's bit in [`fast::NAT_FILTER`] (a u32).
const BIT_OFF: i16 = -148;

/// The numbers of the fast path's own maps in the program's map list.
#[derive(Clone, Copy, Debug)]
pub(super) struct Maps {
    xsk: u32,
    ifaces: u32,
    ifaces_high: u32,
    nat: u32,
    nat_filter: u32,
    counters: u32,
    pub(super) bal_active: u32,
    pub(super) bal_services: u32,
    pub(super) bal_maglev: u32,
    pub(super) bal_backends: u32,
    pub(super) bal_serving: u32,
    pub(super) flows: u32,
}

/// Add the fast path's maps to `maps`.
pub(super) fn maps(maps: &mut Vec<MapSpec>, prog: &Program) -> Maps {
    let mut add = |name: &str, kind, key_size, value_size, max_entries| {
        maps.push(MapSpec {
            name: name.into(),
            kind,
            key_size,
            value_size,
            max_entries,
            entries: Vec::new(),
        });
        maps.len() as u32 - 1
    };
    Maps {
        // Sized by the runtime's queues: the spec is a placeholder.
        xsk: add(fast::XSK, MapKind::Xsk, 4, 4, 1),
        ifaces: add(fast::IFACES, MapKind::Array, 4, 4, fast::IFACE_SLOTS),
        ifaces_high: add(fast::IFACES_HIGH, MapKind::Hash, 4, 4, 256),
        nat: add(
            fast::NAT_BACKENDS,
            MapKind::Hash,
            16,
            1,
            fast::NAT_BACKENDS_MAX,
        ),
        nat_filter: add(
            fast::NAT_FILTER,
            MapKind::Array,
            4,
            8,
            fast::NAT_FILTER_WORDS,
        ),
        counters: add(
            fast::COUNTERS,
            MapKind::PercpuArray,
            4,
            size_of::<fast::Counter>() as u32,
            fast::slots(prog.rules.len()),
        ),
        // Sized by the runtime for each generation (placeholders).
        bal_active: add(fast::BAL_ACTIVE, MapKind::Array, 4, 4, 1),
        bal_services: add(
            fast::BAL_SERVICES,
            MapKind::Array,
            4,
            size_of::<fast::BalService>() as u32,
            1,
        ),
        bal_maglev: add(fast::BAL_MAGLEV, MapKind::Array, 4, 4, 1),
        bal_backends: add(
            fast::BAL_BACKENDS,
            MapKind::Array,
            4,
            size_of::<fast::BalBackend>() as u32,
            1,
        ),
        bal_serving: add(
            fast::BAL_SERVING,
            MapKind::Hash,
            size_of::<fast::ServingKey>() as u32,
            4,
            1,
        ),
        // The runtime's own, shared by every generation's program.
        flows: add(
            fast::FLOWS,
            MapKind::Array,
            4,
            size_of::<fast::FlowBucket>() as u32,
            fast::FLOW_BUCKETS + 1,
        ),
    }
}

fn field(off: usize) -> i16 {
    FIELDS_OFF + off as i16
}

fn decision(off: usize) -> i16 {
    DECISION_OFF + off as i16
}

/// The program's start: keep the context (`R1`).
pub(super) fn entry(a: &mut Asm) {
    a.stx(op::DW, FP, CTX_OFF, R1);
}

/// After extraction: the receiving interface into the `Fields` (a frame of
/// an interface not in the map goes to the cores uncounted), the frame
/// counted as seen, and the frames the cores must see sent to `cores`.
pub(super) fn before_policy(a: &mut Asm, m: Maps, cores: Label) {
    // in_iface from the OS interface index: the array below IFACE_SLOTS,
    // the hash from there on.
    a.ldx(op::DW, R1, FP, CTX_OFF);
    a.ldx(op::W, R2, R1, xdp::INGRESS_IFINDEX);
    a.stx(op::W, FP, KEY_OFF, R2);
    let high = a.label();
    let found = a.label();
    a.jmp_imm(op::JGE, R2, fast::IFACE_SLOTS as i32, high);
    lookup(a, m.ifaces, KEY_OFF);
    a.ja(found);
    a.bind(high);
    lookup(a, m.ifaces_high, KEY_OFF);
    a.bind(found);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    a.ldx(op::W, R2, R0, 0);
    a.mov(R3, R2);
    a.alu32_imm(op::AND, R3, fast::IFACE_KNOWN as i32);
    a.jmp_imm(op::JEQ, R3, 0, cores);
    a.mov(R3, R2);
    a.alu32_imm(op::AND, R3, fast::IFACE_TX as i32);
    a.stx(op::W, FP, TX_OFF, R3);
    a.alu32_imm(op::AND, R2, !(fast::IFACE_TX | fast::IFACE_KNOWN) as i32);
    a.stx(op::W, FP, field(offset_of!(Fields, in_iface)), R2);
    count(a, m, Slot::Fixed(fast::SEEN));

    let policy = a.label();
    a.ldx(op::W, R2, FP, field(offset_of!(Fields, present)));
    let flag = |a: &mut Asm, bit: u32, set: bool, to: Label| {
        a.mov(R3, R2);
        a.alu_imm(op::AND, R3, bit as i32);
        a.jmp_imm(if set { op::JNE } else { op::JEQ }, R3, 0, to);
    };
    flag(a, present::ETH, false, cores);
    // Malformed: the decision drops it as the cores would (before anything).
    flag(a, present::MALFORMED, true, policy);
    a.ldx(op::H, R3, FP, field(offset_of!(Fields, eth_type)));
    a.jmp_imm(op::JEQ, R3, 0x0806, cores);
    // ICMP errors (v4: 3, 11, 12; v6: 1-4) and neighbour discovery (135, 136).
    let not_icmp = a.label();
    flag(a, present::ICMP, false, not_icmp);
    a.ldx(op::B, R3, FP, field(offset_of!(Fields, icmp_type)));
    a.ldx(op::B, R4, FP, field(offset_of!(Fields, ip_version)));
    let v6 = a.label();
    a.jmp_imm(op::JNE, R4, 4, v6);
    for t in [3, 11, 12] {
        a.jmp_imm(op::JEQ, R3, t, cores);
    }
    a.ja(not_icmp);
    a.bind(v6);
    a.jmp_imm(op::JEQ, R3, 135, cores);
    a.jmp_imm(op::JEQ, R3, 136, cores);
    a.mov(R4, R3);
    a.alu_imm(op::SUB, R4, 1);
    a.jmp_imm(op::JLT, R4, 4, cores);
    a.bind(not_icmp);
    // From or to a NAT back end: the connection table's.
    flag(a, present::IP4 | present::IP6, false, policy);
    // The filter's bit of each address first (`fast::nat_filter_bit`): the
    // hash is looked up only where it is set.
    for which in [offset_of!(Fields, ip_src), offset_of!(Fields, ip_dst)] {
        let clear = a.label();
        a.ldx(op::W, R2, FP, field(which) + 12);
        a.alu32_imm(op::MUL, R2, fast::NAT_FILTER_MUL as i32);
        a.alu32_imm(op::RSH, R2, 16);
        a.mov(R3, R2);
        a.alu32_imm(op::RSH, R3, 6);
        a.stx(op::W, FP, KEY_OFF, R3);
        a.stx(op::W, FP, BIT_OFF, R2);
        lookup(a, m.nat_filter, KEY_OFF);
        a.jmp_imm(op::JEQ, R0, 0, cores);
        a.ldx(op::DW, R3, R0, 0);
        a.ldx(op::W, R2, FP, BIT_OFF);
        a.alu32_imm(op::AND, R2, 63);
        a.alu(op::RSH, R3, R2);
        a.alu_imm(op::AND, R3, 1);
        a.jmp_imm(op::JEQ, R3, 0, clear);
        lookup(a, m.nat, field(which));
        a.jmp_imm(op::JNE, R0, 0, cores);
        a.bind(clear);
    }
    a.bind(policy);
}

/// After the decision: a drop is counted and dropped; a reset the cores
/// would send is built here and sent back (`XDP_TX`); a balance of a
/// service balanced here goes to its back end (`balance.rs`); anything
/// else, and whatever jumped to `cores`, goes to the switching cores.
/// `services`: the policy's number of services.
pub(super) fn act(a: &mut Asm, m: Maps, services: u32, cores: Label) {
    let not_balance = a.label();
    a.ldx(op::W, R2, FP, decision(offset_of!(Decision, action)));
    a.jmp_imm(op::JNE, R2, Action::Balance as i32, not_balance);
    super::balance::emit(a, m, services, CTX_OFF, cores);
    a.bind(not_balance);
    let not_drop = a.label();
    a.ldx(op::W, R2, FP, decision(offset_of!(Decision, action)));
    a.jmp_imm(op::JNE, R2, Action::Drop as i32, not_drop);
    count(a, m, Slot::Fixed(fast::ACTIONS + Action::Drop as u32));
    count(
        a,
        m,
        Slot::Plus(fast::STAGES, decision(offset_of!(Decision, stage))),
    );
    count_rule(a, m);
    a.ret(xdp::DROP);

    a.bind(not_drop);
    a.jmp_imm(op::JNE, R2, Action::Reset as i32, cores);
    a.ldx(op::W, R2, FP, TX_OFF);
    a.jmp_imm(op::JEQ, R2, 0, cores);
    super::reset::emit(a, CTX_OFF, cores);
    // The frame cut to the reset's length (it only shrinks, to 54 bytes or
    // more: the helper refuses only below 14). Should it refuse, the frame,
    // rewritten already, is dropped and counted as a drop.
    a.ldx(op::DW, R1, FP, CTX_OFF);
    a.ldx(op::W, R2, FP, super::reset::NEW_LEN_OFF);
    a.ldx(op::W, R3, FP, field(offset_of!(Fields, pkt_len)));
    a.alu(op::SUB, R2, R3);
    a.call(helper::XDP_ADJUST_TAIL);
    let cut = a.label();
    a.jmp_imm(op::JEQ, R0, 0, cut);
    count(a, m, Slot::Fixed(fast::ACTIONS + Action::Drop as u32));
    a.ret(xdp::DROP);
    a.bind(cut);
    count(a, m, Slot::Fixed(fast::ACTIONS + Action::Reset as u32));
    count_rule(a, m);
    a.ret(xdp::TX);
    // Not counted here (one map lookup less per frame): the runtime derives
    // the frames sent to the cores from those seen and decided here.
    a.bind(cores);
    a.ldx(op::DW, R1, FP, CTX_OFF);
    a.ldx(op::W, R2, R1, xdp::RX_QUEUE_INDEX);
    a.ld_map(R1, m.xsk);
    a.mov_imm(R3, xdp::PASS);
    a.call(helper::REDIRECT_MAP);
    a.exit();
}

/// The deciding rule's counter, if a rule decided.
fn count_rule(a: &mut Asm, m: Maps) {
    let no_rule = a.label();
    a.ldx(op::W, R2, FP, decision(offset_of!(Decision, rule)));
    a.jmp32_imm(op::JEQ, R2, lbp_abi::NO_RULE as i32, no_rule);
    count(
        a,
        m,
        Slot::Plus(fast::RULES, decision(offset_of!(Decision, rule))),
    );
    a.bind(no_rule);
}

/// A counter slot: a constant, or a constant plus a u32 on the stack (a
/// slot beyond the map's is not counted).
pub(super) enum Slot {
    Fixed(u32),
    Plus(u32, i16),
}

/// One more frame of `pkt_len` bytes in `slot`.
pub(super) fn count(a: &mut Asm, m: Maps, slot: Slot) {
    match slot {
        Slot::Fixed(n) => a.st_imm(op::W, FP, KEY_OFF, n as i32),
        Slot::Plus(base, at) => {
            a.ldx(op::W, R2, FP, at);
            a.alu32_imm(op::ADD, R2, base as i32);
            a.stx(op::W, FP, KEY_OFF, R2);
        }
    }
    lookup(a, m.counters, KEY_OFF);
    let skip = a.label();
    a.jmp_imm(op::JEQ, R0, 0, skip);
    a.ldx(op::DW, R1, R0, 0);
    a.alu_imm(op::ADD, R1, 1);
    a.stx(op::DW, R0, 0, R1);
    a.ldx(op::W, R1, FP, field(offset_of!(Fields, pkt_len)));
    a.ldx(op::DW, R2, R0, 8);
    a.alu(op::ADD, R2, R1);
    a.stx(op::DW, R0, 8, R2);
    a.bind(skip);
}
