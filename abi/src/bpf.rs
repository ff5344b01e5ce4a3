//! eBPF instructions: their encoding, an assembler with labels and map
//! references, and a disassembler. Plain data and no I/O: the compiler's eBPF
//! back end and the runtime's own small programs (the AF_XDP redirect, the
//! traffic generator's) assemble here; the runtime loads what comes out
//! (`lbp_runtime::ring::bpf`), resolving map references to descriptors.
//!
//! The encoding is the kernel's (`struct bpf_insn`, Documentation/bpf/
//! standardization/instruction-set.rst): an 8-bit opcode made of a class, a
//! size or operation and a mode or source; two 4-bit registers; a signed
//! 16-bit offset; a signed 32-bit immediate. `r0` is the return value and a
//! helper's result, `r1`–`r5` the arguments (clobbered by a call), `r6`–`r9`
//! kept across calls, `r10` the read-only frame pointer (512 bytes of stack
//! below it).

use std::fmt::{self, Write as _};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    /// The opcode.
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    /// The offset (memory access, jump).
    pub off: i16,
    /// The immediate.
    pub imm: i32,
}

impl Insn {
    pub fn dst(self) -> u8 {
        self.regs & 0x0f
    }
    pub fn src(self) -> u8 {
        self.regs >> 4
    }
}

/// Encode one instruction.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// Opcode parts: classes, sizes, modes, sources, and the ALU and jump
/// operations. An opcode is `class | size | mode` for loads and stores and
/// `class | operation | source` for ALU and jumps.
pub mod op {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;

    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;

    pub const IMM: u8 = 0x00;
    pub const MEM: u8 = 0x60;
    pub const ATOMIC: u8 = 0xc0;

    /// The operand is the immediate.
    pub const K: u8 = 0x00;
    /// The operand is the src register.
    pub const X: u8 = 0x08;

    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const NEG: u8 = 0x80;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const ARSH: u8 = 0xc0;
    /// Byte swap: with `X` to big endian (`be16`...), with `K` to little.
    pub const END: u8 = 0xd0;

    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const JSGT: u8 = 0x60;
    pub const JSGE: u8 = 0x70;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    pub const JSLT: u8 = 0xc0;
    pub const JSLE: u8 = 0xd0;

    /// Atomic immediates (`imm` of a `STX | ATOMIC` instruction).
    pub const ATOMIC_ADD: i32 = 0x00;
    pub const ATOMIC_FETCH: i32 = 0x01;
    pub const CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;
}

/// `src` of a `ld_imm64` whose immediate is a map's descriptor.
pub const PSEUDO_MAP_FD: u8 = 1;

/// Helper function numbers (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const MAP_UPDATE_ELEM: i32 = 2;
    pub const MAP_DELETE_ELEM: i32 = 3;
    pub const KTIME_GET_NS: i32 = 5;
    pub const KTIME_GET_COARSE_NS: i32 = 160;
    pub const GET_PRANDOM_U32: i32 = 7;
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    pub const REDIRECT: i32 = 23;
    pub const CSUM_DIFF: i32 = 28;
    pub const XDP_ADJUST_HEAD: i32 = 44;
    pub const REDIRECT_MAP: i32 = 51;
    pub const XDP_ADJUST_TAIL: i32 = 65;
    pub const FIB_LOOKUP: i32 = 69;
}

/// XDP verdicts (`enum xdp_action`).
pub mod xdp {
    pub const ABORTED: i32 = 0;
    pub const DROP: i32 = 1;
    pub const PASS: i32 = 2;
    pub const TX: i32 = 3;
    pub const REDIRECT: i32 = 4;

    /// Offsets in `struct xdp_md`.
    pub const DATA: i16 = 0;
    pub const DATA_END: i16 = 4;
    pub const DATA_META: i16 = 8;
    pub const INGRESS_IFINDEX: i16 = 12;
    pub const RX_QUEUE_INDEX: i16 = 16;
    pub const EGRESS_IFINDEX: i16 = 20;
}

/// What the XDP fast path's program (the compiler's eBPF back end, fast
/// mode) and the runtime that loads it agree on: the names of the maps the
/// runtime fills or reads, and the layout of its counters.
pub mod fast {
    /// The interface's XSK map (queue to AF_XDP socket), the runtime's own.
    pub const XSK: &str = "xsk";
    /// OS interface index (u32) to the policy's interface index (u32), with
    /// [`IFACE_KNOWN`] or'ed in, and [`IFACE_TX`] where the program may
    /// answer on the interface itself; a frame of an interface not in it goes
    /// to the switching cores. An array of [`IFACE_SLOTS`] indexed by the OS
    /// index (a lookup the kernel inlines); an interface whose index is
    /// beyond it is in [`IFACES_HIGH`]. Filled by the runtime.
    pub const IFACES: &str = "ifaces";
    /// OS interface indexes [`IFACES`] holds: those below it.
    pub const IFACE_SLOTS: u32 = 1024;
    /// [`IFACES`] for OS interface indexes from [`IFACE_SLOTS`] on (a hash).
    pub const IFACES_HIGH: &str = "ifaces_high";
    /// In an [`IFACES`] value: the entry names an interface (an empty array
    /// entry is 0).
    pub const IFACE_KNOWN: u32 = 1 << 30;
    /// In an [`IFACES`] value: the program may send a frame back out of the
    /// interface it came in on (`XDP_TX`: a TCP reset). Without it such a
    /// frame goes to the switching cores, which send it through their rings.
    pub const IFACE_TX: u32 = 1 << 31;
    /// The addresses of NAT back ends (16 bytes, the `Fields` form) to 1:
    /// their traffic (return traffic, and SYNs that end an earlier
    /// connection) is the connection table's, so it goes to the cores. Filled
    /// by the runtime from each generation.
    pub const NAT_BACKENDS: &str = "nat_backends";
    /// How many addresses `NAT_BACKENDS` holds at most.
    pub const NAT_BACKENDS_MAX: u32 = 65_536;
    /// A filter before [`NAT_BACKENDS`]: a bit per [`nat_filter_bit`] of
    /// every NAT back end's address, in [`NAT_FILTER_WORDS`] u64 words (an
    /// array, whose lookup the kernel inlines). An address whose bit is clear
    /// is no NAT back end, and the hash lookup is skipped: most frames pay
    /// a few instructions, not two hash lookups.
    pub const NAT_FILTER: &str = "nat_filter";
    /// Words of [`NAT_FILTER`]: 65 536 bits.
    pub const NAT_FILTER_WORDS: u32 = 1024;
    /// The multiplier of [`nat_filter_bit`].
    pub const NAT_FILTER_MUL: u32 = 0x9e37_79b1;

    /// An address's bit in [`NAT_FILTER`] (the 16-byte `Fields` form): its
    /// last four bytes, as a native-order u32, times [`NAT_FILTER_MUL`]
    /// (wrapping), the product's high 16 bits.
    pub fn nat_filter_bit(addr: &[u8; 16]) -> u32 {
        let w = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        w.wrapping_mul(NAT_FILTER_MUL) >> 16
    }
    /// Per-CPU counters (a per-CPU array): slot to [`Counter`].
    pub const COUNTERS: &str = "counters";

    /// One counter slot's value.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Counter {
        pub packets: u64,
        pub bytes: u64,
    }

    /// Every frame the program saw.
    pub const SEEN: u32 = 0;
    /// Frames it sent to the switching cores, of those seen. The program
    /// leaves this slot alone (a map lookup less per frame): the runtime
    /// derives it, [`SEEN`] less the frames decided in XDP ([`ACTIONS`]).
    pub const TO_CORES: u32 = 1;
    /// Frames it decided itself, by `lbp_abi::Action` number: slot
    /// `ACTIONS + action` (drops, resets, and frames balanced in XDP).
    pub const ACTIONS: u32 = 2;
    /// Drops by the deciding `lbp_abi::stage`: slot `STAGES + stage`.
    pub const STAGES: u32 = 10;
    /// Frames decided by filter rule `r`: slot `RULES + r`.
    pub const RULES: u32 = 20;

    /// The number of counter slots for a policy of `rules` filter rules
    /// (the back ends' slots, [`BalService::counters`], come after them).
    pub fn slots(rules: usize) -> u32 {
        RULES + u32::try_from(rules).unwrap_or(u32::MAX - RULES)
    }

    // Balancing in XDP (DSR and NAT services of `balance maglev` or `hash`;
    // NAT replies stay with the cores, which find the flow by its reply
    // record in [`FLOWS`]). The
    // tables are the active generation's, in two buffers: the runtime fills
    // the one the program does not read, waits for a grace period, and flips
    // [`BAL_ACTIVE`]. Every `BAL_*` map is sized by the runtime (the specs'
    // sizes are placeholders); [`FLOWS`] outlives the programs.

    /// An array of one u32: the buffer (0 or 1) the program reads.
    pub const BAL_ACTIVE: &str = "bal_active";
    /// An array of [`BalService`], key `buffer * services + service`.
    pub const BAL_SERVICES: &str = "bal_services";
    /// An array of u32: each service's Maglev table, its entries a back-end
    /// index in the service ([`NO_BACKEND`] for none), key
    /// [`BalService::maglev_base`] `+ hash % maglev_len`.
    pub const BAL_MAGLEV: &str = "bal_maglev";
    /// An array of [`BalBackend`], key [`BalService::backend_base`] `+ b`.
    pub const BAL_BACKENDS: &str = "bal_backends";
    /// A hash of [`ServingKey`] to the back end's index in the service
    /// (u32): the back ends that still serve a service (not in
    /// maintenance), which established flows keep.
    pub const BAL_SERVING: &str = "bal_serving";
    /// The flow table: an array of [`FLOW_BUCKETS`] [`FlowBucket`]s of
    /// [`FLOW_WAYS`] records each (a set-associative cache, as a CPU's), then
    /// one entry more whose first 8 bytes are the key of [`flow_hash`]
    /// (random, chosen by the runtime). A flow's record is in the bucket
    /// [`flow_place`] names: its [`Flow`], the back end each flow balanced in
    /// XDP was given. Shared by every generation's program (a reload moves
    /// no flow). A NAT flow also has a reply record: keyed as its back end's
    /// replies (back end to client), it names the virtual IP and port
    /// ([`FLOW_REPLY`]), so that the cores translate the replies (it is
    /// seen when its flow begins, not with the replies). A new record takes
    /// an empty way of its bucket, else the way seen longest ago: a bucket's
    /// 8 ways are an LRU of their own. Needs Linux 5.12 (`BPF_CMPXCHG`).
    pub const FLOWS: &str = "flows";
    /// Records per bucket.
    pub const FLOW_WAYS: usize = 8;
    /// Buckets (a power of two).
    pub const FLOW_BUCKETS: u32 = 32_768;
    /// The flow table's room: records in all.
    pub const FLOWS_MAX: u32 = FLOW_BUCKETS * FLOW_WAYS as u32;
    /// [`FlowBucket::tags`] of a way being written (a real tag is odd, an
    /// empty way's 0).
    pub const FLOW_BUSY: u32 = 2;

    /// One bucket of [`FLOWS`]: first a cache line of tags and times, so that
    /// a lookup that misses reads one line.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowBucket {
        /// Per way: 0 empty, [`FLOW_BUSY`] being written, else the tag
        /// ([`flow_place`]) of its record's key.
        pub tags: [u32; FLOW_WAYS],
        /// Per way: when its flow was last seen, in units of 2^30 ns of the
        /// coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`); 0 when empty.
        pub seen: [u32; FLOW_WAYS],
        pub slots: [FlowSlot; FLOW_WAYS],
    }

    /// One record of a [`FlowBucket`] (one cache line).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowSlot {
        pub key: FlowKey,
        pub flow: Flow,
    }

    const _: () = assert!(
        size_of::<FlowSlot>() == 64
            && size_of::<FlowBucket>() == 64 * (FLOW_WAYS + 1)
            && FLOW_BUCKETS.is_power_of_two()
    );

    /// The multiplier of [`flow_hash`].
    pub const FLOW_HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The hash of flow key `key` (its five 64-bit words in the host's
    /// order) under `seed`: per word, `h = ((h ^ w) * FLOW_HASH_MUL)`, then
    /// `h ^= h >> 32`. The program computes the same.
    pub fn flow_hash(seed: u64, key: &[u8; 40]) -> u64 {
        let mut h = seed;
        for w in key.chunks_exact(8) {
            let w = u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]));
            h = (h ^ w).wrapping_mul(FLOW_HASH_MUL);
            h ^= h >> 32;
        }
        h
    }

    /// A hash's bucket (its low bits) and tag (its high 32 bits, odd).
    pub fn flow_place(h: u64) -> (u32, u32) {
        ((h as u32) & (FLOW_BUCKETS - 1), (h >> 32) as u32 | 1)
    }

    /// A Maglev entry of no back end.
    pub const NO_BACKEND: u32 = u32::MAX;

    /// One service in one buffer.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct BalService {
        /// [`SVC_XDP`] when XDP balances it (else the cores do).
        pub flags: u32,
        /// The first entry of its Maglev table in [`BAL_MAGLEV`].
        pub maglev_base: u32,
        /// Its Maglev table's size (0: the cores decide).
        pub maglev_len: u32,
        /// Its first back end in [`BAL_BACKENDS`].
        pub backend_base: u32,
        /// Its first back end's counter slots: back end `b` counts its new
        /// flows in `counters + 2 b` and its frames in `counters + 2 b + 1`.
        pub counters: u32,
        /// The publication this entry belongs to (never 0, never the same
        /// twice in a process): a [`Flow`] of the same stamp names its back
        /// end by index, still serving.
        pub stamp: u32,
    }
    /// In [`BalService::flags`]: balanced in XDP.
    pub const SVC_XDP: u32 = 1;
    /// In [`BalService::flags`]: NAT (the destination address and port are
    /// rewritten, and a reply record is kept), else DSR.
    pub const SVC_NAT: u32 = 2;

    /// One back end in one buffer: its address and how to reach it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct BalBackend {
        /// The `Fields` form (IPv4 mapped).
        pub addr: [u8; 16],
        pub dst_mac: [u8; 6],
        pub src_mac: [u8; 6],
        /// The OS index of the interface it is reached by.
        pub ifindex: u32,
        /// [`BACKEND_READY`], [`BACKEND_NEW`].
        pub flags: u32,
        /// NAT: the port to rewrite the destination port to (host order),
        /// 0 to keep the packet's.
        pub port: u16,
        pub pad: u16,
    }
    /// In [`BalBackend::flags`]: XDP may send its established flows to it
    /// (its neighbour's MAC is usable, the interface allows the program to
    /// transmit).
    pub const BACKEND_READY: u32 = 1;
    /// In [`BalBackend::flags`]: XDP may also give it new flows (its
    /// neighbour is confirmed: a stale one is the cores' to re-confirm, so
    /// new flows go to them meanwhile).
    pub const BACKEND_NEW: u32 = 2;

    /// [`BAL_SERVING`]'s key.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ServingKey {
        pub buffer: u32,
        pub service: u32,
        pub addr: [u8; 16],
    }

    /// [`FLOWS`]'s key: a connection as the switching cores' table keys it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowKey {
        pub client: [u8; 16],
        pub vip: [u8; 16],
        pub client_port: u16,
        pub vport: u16,
        pub version: u8,
        pub proto: u8,
        pub pad: [u8; 2],
    }

    /// [`FLOWS`]'s value: the back end's address, and its index in the
    /// service as of publication `stamp` ([`BalService::stamp`]); a flow of
    /// an older stamp finds its back end again by address in
    /// [`BAL_SERVING`] (and takes the new stamp).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Flow {
        pub backend: [u8; 16],
        pub stamp: u32,
        pub index: u32,
    }
    /// In [`Flow::index`], with [`Flow::stamp`] 0: a NAT flow's reply
    /// record; [`Flow::backend`] is the virtual IP and the index's low 16
    /// bits its port (host order).
    pub const FLOW_REPLY: u32 = 1 << 31;
}

/// Registers by name.
pub mod reg {
    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R7: u8 = 7;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
    /// The frame pointer (read only).
    pub const FP: u8 = 10;
}

/// A map a program uses, as the loader creates it: the program names it by its
/// position in the program's map list ([`Asm::ld_map`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// A name for people (the kernel keeps the first 15 bytes).
    pub name: String,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// What the loader writes into it before the program runs.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The map types lbp's programs use (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash,
    Array,
    PercpuArray,
    LruHash,
    /// Longest-prefix match; the key is a 32-bit prefix length then the
    /// address bytes.
    LpmTrie,
    Xsk,
}

impl MapKind {
    /// The kernel's `BPF_MAP_TYPE_*` number.
    pub fn number(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PercpuArray => 6,
            MapKind::LruHash => 9,
            MapKind::LpmTrie => 11,
            MapKind::Xsk => 17,
        }
    }

    /// The `map_flags` the type needs (an LPM trie must not preallocate).
    pub fn flags(self) -> u32 {
        match self {
            MapKind::LpmTrie => 1, // BPF_F_NO_PREALLOC
            _ => 0,
        }
    }
}

/// A jump target inside a program under assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(u32);

/// Why a program could not be assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A jump names a label that was never bound.
    Unbound,
    /// A jump's distance does not fit the 16-bit offset.
    TooFar { at: usize, distance: i64 },
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::Unbound => f.write_str("a jump to a label that was never bound"),
            AsmError::TooFar { at, distance } => write!(
                f,
                "the jump at instruction {at} spans {distance} instructions (at most 32767)"
            ),
        }
    }
}

impl std::error::Error for AsmError {}

/// An assembled program: its instructions, and where they load a map's
/// descriptor (the immediate there is the map's number until
/// [`Program::resolve`] puts the descriptor in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub insns: Vec<Insn>,
    /// Indices of `ld_imm64` instructions naming a map by number.
    pub map_refs: Vec<usize>,
}

impl Program {
    /// The instructions with map number `n` replaced by `fds[n]`. A number
    /// without a descriptor is an error (the map list is the caller's).
    pub fn resolve(&self, fds: &[i32]) -> Result<Vec<Insn>, String> {
        let mut out = self.insns.clone();
        for &at in &self.map_refs {
            let Some(n) = out.get(at).map(|x| x.imm) else {
                return Err(format!("a map reference at {at}, past the program's end"));
            };
            let fd = usize::try_from(n)
                .ok()
                .and_then(|i| fds.get(i))
                .ok_or_else(|| format!("the program names map {n}, of {} given", fds.len()))?;
            out[at].imm = *fd;
        }
        Ok(out)
    }

    /// The disassembly (see [`disassemble`]).
    pub fn disassemble(&self) -> String {
        disassemble(&self.insns, &self.map_refs)
    }
}

/// A program under assembly: instructions, labels bound to positions, and
/// jumps to labels patched by [`Asm::finish`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Where each label is bound (`None` until [`Asm::bind`]).
    labels: Vec<Option<usize>>,
    /// Jumps to labels: (instruction, label).
    jumps: Vec<(usize, u32)>,
    map_refs: Vec<usize>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// The number of instruction slots so far (`ld_imm64` takes two).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A new label, bound later (or earlier, for a backward jump) by [`Asm::bind`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() as u32 - 1)
    }

    /// Bind `l` to the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0 as usize] = Some(self.insns.len());
    }

    /// Append one raw instruction.
    pub fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(insn(code, dst, src, off, imm));
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.raw(op::ALU64 | op::MOV | op::K, dst, 0, 0, imm);
    }

    /// `dst = src` (64-bit).
    pub fn mov(&mut self, dst: u8, src: u8) {
        self.raw(op::ALU64 | op::MOV | op::X, dst, src, 0, 0);
    }

    /// `dst = imm` for any 64-bit value (`ld_imm64`, two slots).
    pub fn ld_imm64(&mut self, dst: u8, imm: u64) {
        self.raw(op::LD | op::IMM | op::DW, dst, 0, 0, imm as u32 as i32);
        self.raw(0, 0, 0, 0, (imm >> 32) as u32 as i32);
    }

    /// `dst = map number n` (`ld_imm64` with [`PSEUDO_MAP_FD`], two slots).
    pub fn ld_map(&mut self, dst: u8, n: u32) {
        self.map_refs.push(self.insns.len());
        self.raw(op::LD | op::IMM | op::DW, dst, PSEUDO_MAP_FD, 0, n as i32);
        self.raw(0, 0, 0, 0, 0);
    }

    /// `dst op= imm`, 64-bit (`op` one of [`op`]'s ALU operations).
    pub fn alu_imm(&mut self, o: u8, dst: u8, imm: i32) {
        self.raw(op::ALU64 | o | op::K, dst, 0, 0, imm);
    }

    /// `dst op= src`, 64-bit.
    pub fn alu(&mut self, o: u8, dst: u8, src: u8) {
        self.raw(op::ALU64 | o | op::X, dst, src, 0, 0);
    }

    /// `dst op= imm`, 32-bit (the upper half is zeroed).
    pub fn alu32_imm(&mut self, o: u8, dst: u8, imm: i32) {
        self.raw(op::ALU | o | op::K, dst, 0, 0, imm);
    }

    /// `dst op= src`, 32-bit (the upper half is zeroed).
    pub fn alu32(&mut self, o: u8, dst: u8, src: u8) {
        self.raw(op::ALU | o | op::X, dst, src, 0, 0);
    }

    /// `dst = bswap(dst)` to big endian on a little-endian host, over `bits`
    /// (16, 32 or 64); the bits above are zeroed.
    pub fn be(&mut self, dst: u8, bits: i32) {
        self.raw(op::ALU | op::END | op::X, dst, 0, 0, bits);
    }

    /// `sum` = the ones' complement of its 16-bit fold: the Internet checksum
    /// of a sum of 16-bit words (at most 32 bits); `tmp` is clobbered.
    pub fn csum_fold(&mut self, sum: u8, tmp: u8) {
        for _ in 0..2 {
            self.mov(tmp, sum);
            self.alu_imm(op::RSH, tmp, 16);
            self.alu_imm(op::AND, sum, 0xffff);
            self.alu(op::ADD, sum, tmp);
        }
        self.alu_imm(op::XOR, sum, 0xffff);
    }

    /// `dst = *(size *)(src + off)` (`size` one of [`op::B`], `H`, `W`, `DW`).
    pub fn ldx(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.raw(op::LDX | op::MEM | size, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.raw(op::STX | op::MEM | size, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) {
        self.raw(op::ST | op::MEM | size, dst, 0, off, imm);
    }

    /// `lock *(size *)(dst + off) += src` (`size` W or DW).
    pub fn atomic_add(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.raw(op::STX | op::ATOMIC | size, dst, src, off, op::ATOMIC_ADD);
    }

    /// `r0 = cmpxchg((size *)(dst + off), r0, src)`: where the memory holds
    /// `r0`, `src` is stored; `r0` gets what it held (`size` W or DW).
    pub fn cmpxchg(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.raw(op::STX | op::ATOMIC | size, dst, src, off, op::CMPXCHG);
    }

    /// `if dst op imm goto l` (64-bit compare; `op` one of [`op`]'s jumps).
    pub fn jmp_imm(&mut self, o: u8, dst: u8, imm: i32, l: Label) {
        self.jump_to(op::JMP | o | op::K, dst, 0, imm, l);
    }

    /// `if dst op src goto l` (64-bit compare).
    pub fn jmp(&mut self, o: u8, dst: u8, src: u8, l: Label) {
        self.jump_to(op::JMP | o | op::X, dst, src, 0, l);
    }

    /// `if (u32)dst op imm goto l` (32-bit compare).
    pub fn jmp32_imm(&mut self, o: u8, dst: u8, imm: i32, l: Label) {
        self.jump_to(op::JMP32 | o | op::K, dst, 0, imm, l);
    }

    /// `if (u32)dst op (u32)src goto l` (32-bit compare).
    pub fn jmp32(&mut self, o: u8, dst: u8, src: u8, l: Label) {
        self.jump_to(op::JMP32 | o | op::X, dst, src, 0, l);
    }

    /// `goto l`.
    pub fn ja(&mut self, l: Label) {
        self.jump_to(op::JMP | op::JA, 0, 0, 0, l);
    }

    fn jump_to(&mut self, code: u8, dst: u8, src: u8, imm: i32, l: Label) {
        self.jumps.push((self.insns.len(), l.0));
        self.raw(code, dst, src, 0, imm);
    }

    /// `call helper` (a number of [`helper`]).
    pub fn call(&mut self, helper: i32) {
        self.raw(op::JMP | op::CALL, 0, 0, 0, helper);
    }

    /// `exit` (the program returns `r0`).
    pub fn exit(&mut self) {
        self.raw(op::JMP | op::EXIT, 0, 0, 0, 0);
    }

    /// `r0 = v; exit`.
    pub fn ret(&mut self, v: i32) {
        self.mov_imm(reg::R0, v);
        self.exit();
    }

    /// The program, every jump patched to its label.
    pub fn finish(mut self) -> Result<Program, AsmError> {
        for &(at, l) in &self.jumps {
            let to = self.labels[l as usize].ok_or(AsmError::Unbound)?;
            let distance = to as i64 - at as i64 - 1;
            self.insns[at].off =
                i16::try_from(distance).map_err(|_| AsmError::TooFar { at, distance })?;
        }
        Ok(Program {
            insns: self.insns,
            map_refs: self.map_refs,
        })
    }
}

fn size_name(size: u8) -> &'static str {
    match size & 0x18 {
        op::W => "u32",
        op::H => "u16",
        op::B => "u8",
        _ => "u64",
    }
}

fn alu_name(o: u8) -> &'static str {
    match o & 0xf0 {
        op::ADD => "+=",
        op::SUB => "-=",
        op::MUL => "*=",
        op::DIV => "/=",
        op::OR => "|=",
        op::AND => "&=",
        op::LSH => "<<=",
        op::RSH => ">>=",
        op::MOD => "%=",
        op::XOR => "^=",
        op::MOV => "=",
        op::ARSH => "s>>=",
        _ => "?=",
    }
}

fn jmp_name(o: u8) -> &'static str {
    match o & 0xf0 {
        op::JEQ => "==",
        op::JGT => ">",
        op::JGE => ">=",
        op::JSET => "&",
        op::JNE => "!=",
        op::JSGT => "s>",
        op::JSGE => "s>=",
        op::JLT => "<",
        op::JLE => "<=",
        op::JSLT => "s<",
        op::JSLE => "s<=",
        _ => "?",
    }
}

fn helper_name(n: i32) -> Option<&'static str> {
    Some(match n {
        helper::MAP_LOOKUP_ELEM => "map_lookup_elem",
        helper::MAP_UPDATE_ELEM => "map_update_elem",
        helper::MAP_DELETE_ELEM => "map_delete_elem",
        helper::KTIME_GET_NS => "ktime_get_ns",
        helper::GET_PRANDOM_U32 => "get_prandom_u32",
        helper::GET_SMP_PROCESSOR_ID => "get_smp_processor_id",
        helper::REDIRECT => "redirect",
        helper::CSUM_DIFF => "csum_diff",
        helper::XDP_ADJUST_HEAD => "xdp_adjust_head",
        helper::REDIRECT_MAP => "redirect_map",
        helper::XDP_ADJUST_TAIL => "xdp_adjust_tail",
        helper::FIB_LOOKUP => "fib_lookup",
        _ => return None,
    })
}

/// One line per instruction, numbered, in the kernel verifier's notation
/// (`r2 = *(u32 *)(r1 + 16)`, `if r2 > 0x5 goto +3 <9>`). `ld_imm64` takes two
/// numbers; at the indices in `map_refs` its immediate is shown as a map number.
pub fn disassemble(insns: &[Insn], map_refs: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < insns.len() {
        let x = insns[i];
        let (d, s) = (x.dst(), x.src());
        let class = x.code & 0x07;
        let _ = write!(out, "{i:5}: ");
        let text = match class {
            op::LD if x.code == op::LD | op::IMM | op::DW => {
                let hi = insns.get(i + 1).map_or(0, |n| n.imm as u32);
                let v = u64::from(hi) << 32 | u64::from(x.imm as u32);
                let t = if map_refs.contains(&i) || s == PSEUDO_MAP_FD {
                    format!("r{d} = map[{}] ll", x.imm)
                } else {
                    format!("r{d} = {v:#x} ll")
                };
                i += 1;
                t
            }
            op::LDX => format!("r{d} = *({} *)(r{s} {:+})", size_name(x.code), x.off),
            op::STX if x.code & 0xe0 == op::ATOMIC && x.imm == op::CMPXCHG => format!(
                "r0 = cmpxchg(({} *)(r{d} {:+}), r0, r{s})",
                size_name(x.code),
                x.off
            ),
            op::STX if x.code & 0xe0 == op::ATOMIC => format!(
                "lock *({} *)(r{d} {:+}) {} r{s}",
                size_name(x.code),
                x.off,
                if x.imm & op::ATOMIC_FETCH != 0 {
                    "fetch +="
                } else {
                    "+="
                }
            ),
            op::STX => format!("*({} *)(r{d} {:+}) = r{s}", size_name(x.code), x.off),
            op::ST => format!("*({} *)(r{d} {:+}) = {}", size_name(x.code), x.off, x.imm),
            op::ALU | op::ALU64 => {
                let w = if class == op::ALU { "w" } else { "r" };
                let o = x.code & 0xf0;
                if o == op::END {
                    let to = if x.code & op::X != 0 { "be" } else { "le" };
                    format!("r{d} = {to}{} r{d}", x.imm)
                } else if o == op::NEG {
                    format!("{w}{d} = -{w}{d}")
                } else if x.code & op::X != 0 {
                    format!("{w}{d} {} {w}{s}", alu_name(o))
                } else {
                    format!("{w}{d} {} {:#x}", alu_name(o), x.imm)
                }
            }
            op::JMP | op::JMP32 => {
                let o = x.code & 0xf0;
                let target = i as i64 + 1 + i64::from(x.off);
                let w = if class == op::JMP32 { "w" } else { "r" };
                match o {
                    op::JA => format!("goto {:+} <{target}>", x.off),
                    op::CALL => match helper_name(x.imm) {
                        Some(n) => format!("call {n}#{}", x.imm),
                        None => format!("call #{}", x.imm),
                    },
                    op::EXIT => "exit".to_string(),
                    _ if x.code & op::X != 0 => format!(
                        "if {w}{d} {} {w}{s} goto {:+} <{target}>",
                        jmp_name(o),
                        x.off
                    ),
                    _ => format!(
                        "if {w}{d} {} {:#x} goto {:+} <{target}>",
                        jmp_name(o),
                        x.imm,
                        x.off
                    ),
                }
            }
            _ => format!("(unknown opcode {:#04x})", x.code),
        };
        out.push_str(&text);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_patch_forward_and_backward_jumps() {
        let mut a = Asm::new();
        let top = a.label();
        let out = a.label();
        a.bind(top);
        a.jmp_imm(op::JEQ, reg::R1, 0, out); // 0
        a.alu_imm(op::SUB, reg::R1, 1); // 1
        a.ja(top); // 2
        a.bind(out);
        a.ret(xdp::PASS); // 3, 4
        let p = a.finish().unwrap();
        assert_eq!(p.insns[0].off, 2);
        assert_eq!(p.insns[2].off, -3);
        assert_eq!(p.insns[3], insn(0xb7, 0, 0, 0, 2));
        assert_eq!(p.insns[4], insn(0x95, 0, 0, 0, 0));
    }

    #[test]
    fn unbound_label_and_long_jump_are_errors() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound));
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        for _ in 0..40_000 {
            a.mov_imm(0, 0);
        }
        a.bind(l);
        a.exit();
        assert!(matches!(a.finish(), Err(AsmError::TooFar { at: 0, .. })));
    }

    #[test]
    fn map_references_resolve_to_descriptors() {
        let mut a = Asm::new();
        a.ld_map(reg::R1, 1);
        a.ld_map(reg::R2, 0);
        a.exit();
        let p = a.finish().unwrap();
        assert_eq!(p.map_refs, vec![0, 2]);
        let r = p.resolve(&[7, 9]).unwrap();
        assert_eq!((r[0].imm, r[0].src(), r[2].imm), (9, PSEUDO_MAP_FD, 7));
        assert!(p.resolve(&[7]).is_err());
    }

    #[test]
    fn disassembly_reads_like_the_verifier() {
        let mut a = Asm::new();
        let l = a.label();
        a.ldx(op::W, reg::R2, reg::R1, xdp::RX_QUEUE_INDEX);
        a.ld_map(reg::R1, 0);
        a.jmp_imm(op::JGT, reg::R2, 5, l);
        a.ld_imm64(reg::R3, 0x1_0000_0002);
        a.be(reg::R2, 16);
        a.call(helper::REDIRECT_MAP);
        a.bind(l);
        a.ret(xdp::DROP);
        let text = a.finish().unwrap().disassemble();
        let want = "    0: r2 = *(u32 *)(r1 +16)\n    1: r1 = map[0] ll\n    3: if r2 > 0x5 goto +4 <8>\n    4: r3 = 0x100000002 ll\n    6: r2 = be16 r2\n    7: call redirect_map#51\n    8: r0 = 0x1\n    9: exit\n";
        assert_eq!(text, want);
    }
}
