//! The flow table ([`fast::FLOWS`]) as the fast path's program reads and
//! writes it: a set-associative cache in an array map, [`fast::FLOW_WAYS`]
//! records per bucket, in place of a kernel LRU hash, whose insert (a
//! bucket lock, a free-list pop, an eviction) cost more than the rest of a
//! new flow's work. A lookup reads one bucket's line of tags (a miss costs
//! no more), a record takes its key's way or the way of its bucket seen
//! longest ago.
//!
//! A way being written is claimed first (its tag set to
//! [`fast::FLOW_BUSY`] by compare-and-exchange, from the tag it was seen
//! with): two CPUs never write one way at once, and a record is not
//! overwritten by a CPU that chose its way before another took it. The tag
//! is stored last; a reader copies the record out and then loads the tag
//! again, so a record rewritten meanwhile is a miss, never half of two
//! flows (the eBPF JIT keeps the order of loads and stores, and x86-64,
//! which lbp's fast path is built for, does not reorder loads with loads or
//! stores with stores). Where a claim fails, the frame goes to the cores,
//! which balance it as XDP would.

use std::mem::offset_of;

use lbp_abi::bpf::fast::{self, FLOW_WAYS, FlowBucket, FlowSlot};
use lbp_abi::bpf::{Asm, Label, helper, op, reg::*};

use super::lookup;

/// The bucket (a map value pointer, spilled).
const BUCKET_OFF: i16 = -384;
/// The key's tag (u32).
const TAG_OFF: i16 = -376;
/// The way of the key's record, or `FLOW_WAYS` (u32).
const WAY_OFF: i16 = -464;
/// Now, in [`FlowBucket::seen`]'s unit (u32).
const NOW_OFF: i16 = -468;
/// An index into the map (u32).
const IDX_OFF: i16 = -472;
/// The found record's [`fast::Flow`], copied out (24 bytes, 8-aligned).
const COPY_OFF: i16 = -496;

const WAYS: i32 = FLOW_WAYS as i32;

/// Whether [`find`] reads the clock (a helper call) or uses the time the
/// run's first `find` read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Now {
    Read,
    Kept,
}

fn tag0() -> i16 {
    offset_of!(FlowBucket, tags) as i16
}

fn seen0() -> i16 {
    offset_of!(FlowBucket, seen) as i16
}

fn slot0() -> i16 {
    offset_of!(FlowBucket, slots) as i16
}

/// Find the record of the flow key at `FP + key` (40 bytes, 8-aligned) in
/// map `flows`: `R0` = a copy of its [`fast::Flow`] (on the stack, taken
/// while its way held the key's tag throughout), or 0; its way noted (for
/// [`record`] and [`forget`]) and, when found, its time seen set to now. A
/// map that cannot be read jumps to `cores`. [`Now::Kept`]: a `find` before
/// it in the same run has read the clock already.
pub(super) fn find(a: &mut Asm, flows: u32, key: i16, cores: Label, now: Now) {
    if now == Now::Read {
        a.call(helper::KTIME_GET_COARSE_NS);
        a.alu_imm(op::RSH, R0, 30);
        a.stx(op::W, FP, NOW_OFF, R0);
    }
    // The hash's key, then the hash.
    a.st_imm(op::W, FP, IDX_OFF, fast::FLOW_BUCKETS as i32);
    lookup(a, flows, IDX_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    a.ldx(op::DW, R2, R0, 0);
    a.ld_imm64(R4, fast::FLOW_HASH_MUL);
    for i in 0..5 {
        a.ldx(op::DW, R3, FP, key + 8 * i);
        a.alu(op::XOR, R2, R3);
        a.alu(op::MUL, R2, R4);
        a.mov(R3, R2);
        a.alu_imm(op::RSH, R3, 32);
        a.alu(op::XOR, R2, R3);
    }
    // Its place (`fast::flow_place`).
    a.mov(R3, R2);
    a.alu_imm(op::RSH, R3, 32);
    a.alu32_imm(op::OR, R3, 1);
    a.stx(op::W, FP, TAG_OFF, R3);
    a.alu32_imm(op::AND, R2, (fast::FLOW_BUCKETS - 1) as i32);
    a.stx(op::W, FP, IDX_OFF, R2);
    lookup(a, flows, IDX_OFF);
    a.jmp_imm(op::JEQ, R0, 0, cores);
    a.stx(op::DW, FP, BUCKET_OFF, R0);
    // The ways whose tag is the key's, their keys compared.
    let found = a.label();
    let miss = a.label();
    let done = a.label();
    a.ldx(op::W, R1, FP, TAG_OFF);
    for w in 0..FLOW_WAYS as i16 {
        let next = a.label();
        a.ldx(op::W, R2, R0, tag0() + 4 * w);
        a.jmp(op::JNE, R2, R1, next);
        for i in 0..5 {
            a.ldx(op::DW, R2, R0, slot0() + 64 * w + 8 * i);
            a.ldx(op::DW, R3, FP, key + 8 * i);
            a.jmp(op::JNE, R2, R3, next);
        }
        a.mov_imm(R2, i32::from(w));
        a.ja(found);
        a.bind(next);
    }
    a.bind(miss);
    a.st_imm(op::W, FP, WAY_OFF, WAYS);
    a.mov_imm(R0, 0);
    a.ja(done);
    a.bind(found);
    a.stx(op::W, FP, WAY_OFF, R2);
    // The record copied out, then the tag again: still the key's?
    a.mov(R1, R2);
    a.alu_imm(op::LSH, R1, 6);
    a.alu(op::ADD, R1, R0);
    let at = slot0() + offset_of!(FlowSlot, flow) as i16;
    for i in 0..3 {
        a.ldx(op::DW, R3, R1, at + 8 * i);
        a.stx(op::DW, FP, COPY_OFF + 8 * i, R3);
    }
    way_word(a, R4, R0, R2);
    a.ldx(op::W, R3, R4, tag0());
    a.ldx(op::W, R5, FP, TAG_OFF);
    a.jmp(op::JNE, R3, R5, miss);
    // Seen now (written only when it changed: the line stays shared).
    let fresh = a.label();
    a.ldx(op::W, R3, R4, seen0());
    a.ldx(op::W, R5, FP, NOW_OFF);
    a.jmp(op::JEQ, R3, R5, fresh);
    a.stx(op::W, R4, seen0(), R5);
    a.bind(fresh);
    a.mov(R0, FP);
    a.alu_imm(op::ADD, R0, i32::from(COPY_OFF));
    a.bind(done);
}

/// Record the [`fast::Flow`] at `FP + flow` (24 bytes, 8-aligned) for the
/// key at `FP + key`, after [`find`] of that key: in its way while that
/// still holds it, else in an empty way or the way seen longest ago. A way
/// another CPU is writing, or takes first, jumps to `busy`.
pub(super) fn record(a: &mut Asm, key: i16, flow: i16, busy: Label) {
    a.ldx(op::DW, R1, FP, BUCKET_OFF);
    let choose = a.label();
    let claimed = a.label();
    a.ldx(op::W, R2, FP, WAY_OFF);
    a.jmp_imm(op::JGE, R2, WAYS, choose);
    // Its own way, claimed from its own tag (another CPU may have given it
    // to another flow since).
    way_word(a, R4, R1, R2);
    a.ldx(op::W, R0, FP, TAG_OFF);
    claim(a, R4);
    a.jmp(op::JEQ, R0, R5, claimed);
    // The way seen longest ago (an empty one's time is 0), claimed from the
    // tag it was seen with.
    a.bind(choose);
    a.ldx(op::W, R3, R1, seen0());
    a.mov_imm(R2, 0);
    for w in 1..FLOW_WAYS as i16 {
        let older = a.label();
        a.ldx(op::W, R4, R1, seen0() + 4 * w);
        a.jmp(op::JGE, R4, R3, older);
        a.mov(R3, R4);
        a.mov_imm(R2, i32::from(w));
        a.bind(older);
    }
    way_word(a, R4, R1, R2);
    a.ldx(op::W, R0, R4, tag0());
    a.jmp_imm(op::JEQ, R0, fast::FLOW_BUSY as i32, busy);
    claim(a, R4);
    a.jmp(op::JNE, R0, R5, busy);
    // The record, its time, then its tag.
    a.bind(claimed);
    a.alu_imm(op::LSH, R2, 6);
    a.alu(op::ADD, R1, R2);
    for i in 0..5 {
        a.ldx(op::DW, R3, FP, key + 8 * i);
        a.stx(op::DW, R1, slot0() + 8 * i, R3);
    }
    let at = slot0() + offset_of!(FlowSlot, flow) as i16;
    for i in 0..3 {
        a.ldx(op::DW, R3, FP, flow + 8 * i);
        a.stx(op::DW, R1, at + 8 * i, R3);
    }
    a.ldx(op::W, R3, FP, NOW_OFF);
    a.stx(op::W, R4, seen0(), R3);
    a.ldx(op::W, R3, FP, TAG_OFF);
    a.stx(op::W, R4, tag0(), R3);
}

/// Forget the record [`find`] found (nothing when it found none, or when
/// another CPU took the way meanwhile): claimed from its tag, its time
/// cleared, then its tag; a [`record`] after it chooses a way anew.
pub(super) fn forget(a: &mut Asm) {
    let done = a.label();
    a.ldx(op::W, R2, FP, WAY_OFF);
    a.jmp_imm(op::JGE, R2, WAYS, done);
    a.ldx(op::DW, R3, FP, BUCKET_OFF);
    way_word(a, R1, R3, R2);
    a.ldx(op::W, R0, FP, TAG_OFF);
    claim(a, R1);
    a.jmp(op::JNE, R0, R5, done);
    a.st_imm(op::W, R1, seen0(), 0);
    a.st_imm(op::W, R1, tag0(), 0);
    a.st_imm(op::W, FP, WAY_OFF, WAYS);
    a.bind(done);
}

/// `dst` = `bucket` + 4 `way`: the way's tag at `dst + tag0()`, its time
/// at `dst + seen0()` (`dst` not `way`).
fn way_word(a: &mut Asm, dst: u8, bucket: u8, way: u8) {
    a.mov(dst, way);
    a.alu_imm(op::LSH, dst, 2);
    a.alu(op::ADD, dst, bucket);
}

/// Claim the way whose tag is at `at + tag0()` from the tag `R0` holds:
/// afterwards `R0` == `R5` when it was claimed (`R3` clobbered).
fn claim(a: &mut Asm, at: u8) {
    a.mov(R5, R0);
    a.mov_imm(R3, fast::FLOW_BUSY as i32);
    a.cmpxchg(op::W, at, tag0(), R3);
}
