//! lbp's own traffic generator and packet counter, for benchmarks and tests: no
//! xdp-tools, no libbpf, no clang; raw bpf(2) with programs assembled here.
//!
//! The [`Generator`] sends copies of one frame out of an interface by one of two
//! [`Method`]s, chosen by [`Method::detect`] or by the caller:
//!
//! - **Live frames** (`live`): a tiny XDP program run with `BPF_PROG_RUN` in
//!   live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+): the kernel
//!   copies the given frame into pages of its own, runs the program on each copy
//!   `repeat` times, and because the program returns `XDP_TX` the kernel
//!   transmits every copy out of the interface named by the context's
//!   `ingress_ifindex` (XDP_TX becomes a redirect to that interface). On veth
//!   the peer must run NAPI (an XDP program or GRO enabled on it), else the
//!   kernel drops the frames. The kernel does not say how many frames left. Some
//!   kernels refuse this mode (EPERM), and [`live_frames_available`] asks.
//! - **Clone** (`clone`): one frame per batch through an `AF_PACKET` socket,
//!   turned into up to [`MAX_BATCH`] frames by a tcx egress program that clones
//!   it out of the interface (Linux 6.6+). About half the rate of live frames
//!   on veth (every frame is a socket buffer, which the peer's XDP copies), and
//!   it says how many frames the interface accepted and refused.
//!
//! The interface's ifindex is resolved in the calling thread's network
//! namespace. [`Generator::open`] with `flows` makes every frame a new flow
//! (IPv4 TCP or UDP): a number per frame, from a map counter, goes into the
//! source port and the low 16 bits of the source address, with the IPv4 and
//! TCP/UDP checksums updated incrementally. A [`Counter`] on the far side says
//! how many arrived.
//!
//! The [`Counter`] is an XDP program attached to a receiving interface that adds
//! each IPv4 and IPv6 frame (packets and bytes) to an array map and drops it;
//! other frames (ARP, for one) pass to the kernel, so neighbour resolution still
//! works. It is read with `BPF_MAP_LOOKUP_ELEM`, so the sink counts without a
//! socket. The [`Reflector`] is the trivial `XDP_TX` program, for a reference rate.
//! Attached programs go through [`lbp_runtime::ring::bpf::Attachment`] (a bpf link, so
//! they are detached when dropped or when the process dies); the clone program
//! has a tcx link of its own, also gone with the process.
//!
//! The instruction encoding and the assembler are [`lbp_abi::bpf`]'s (lbp has
//! one; this crate adds a small wrapper with its programs' common pieces), the
//! system call, program loading and map access [`lbp_runtime::ring::bpf`]'s,
//! and the seed socket is
//! [`lbp_runtime::ring::uring`]'s; this crate has the programs and the commands
//! only it uses (test runs, program info). Its only `unsafe` is the seed's
//! `sendto` (and the address it takes). It lives outside `lbp-runtime`, which
//! ships the appliance: a generator is for benchmarks and tests only.
//!
//! This is not a packet crafting library: [`udp4_frame`] builds the one frame
//! the benchmarks need.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use std::ops::{Deref, DerefMut};

use lbp_abi::bpf::{Asm, Insn, Label, helper, op, reg::*, xdp};
use lbp_runtime::ring::bpf::{
    Attachment, XdpMode, load_xdp, map_create, map_lookup, owned, sys_bpf,
};
use lbp_runtime::wire::checksum;

mod clone;
mod live;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// The largest batch: the kernel's largest live-frames batch
/// (`TEST_XDP_MAX_BATCH`), and the most clones one seed makes.
pub const MAX_BATCH: u32 = 256;

/// Frames per `BPF_PROG_RUN` call in [`Generator::run_for`]: small enough to
/// check the clock often (tens of milliseconds at millions per second).
const CHUNK: u32 = 1 << 16;

// ---------------------------------------------------------------- assembly

/// A program under assembly (lbp's one assembler, [`lbp_abi::bpf::Asm`], which
/// it derefs to) with one exit its jumps may take, `out`, where
/// [`Gen::finish`] puts `r0 = verdict; exit`. A program uses at most one map,
/// number 0, whose descriptor `finish` puts in.
struct Gen {
    a: Asm,
    out: Label,
}

impl Deref for Gen {
    type Target = Asm;
    fn deref(&self) -> &Asm {
        &self.a
    }
}

impl DerefMut for Gen {
    fn deref_mut(&mut self) -> &mut Asm {
        &mut self.a
    }
}

impl Gen {
    fn new() -> Gen {
        let mut a = Asm::new();
        let out = a.label();
        Gen { a, out }
    }

    /// `if dst op imm goto out`.
    fn jump_out_imm(&mut self, o: u8, dst: u8, imm: i32) {
        let out = self.out;
        self.a.jmp_imm(o, dst, imm, out);
    }

    /// `if dst op src goto out`.
    fn jump_out(&mut self, o: u8, dst: u8, src: u8) {
        let out = self.out;
        self.a.jmp(o, dst, src, out);
    }

    /// `r6 = ctx; r7 = data; r8 = data_end`, then, if the frame has at least
    /// `head.len()` bytes, write `head` over its start (else jump to `out`).
    ///
    /// Live frames come from a page pool that the kernel recycles without
    /// copying the frame in again, and a receiver that forwards a frame
    /// rewrites it in place (MAC addresses, TTL, checksum): without this, a
    /// recycled page would go out with the previous trip's headers.
    fn restore(&mut self, head: &[u8]) {
        self.mov(R6, R1);
        self.ldx(op::W, R7, R6, xdp::DATA);
        self.ldx(op::W, R8, R6, xdp::DATA_END);
        self.mov(R2, R7);
        self.alu_imm(op::ADD, R2, head.len() as i32);
        self.jump_out(op::JGT, R2, R8);
        let mut at = 0usize;
        for w in head.chunks(4) {
            let off = at as i16;
            match *w {
                [a, b, c, d] => self.st_imm(op::W, R7, off, i32::from_ne_bytes([a, b, c, d])),
                [a, b] => self.st_imm(op::H, R7, off, half(a, b)),
                [a, b, c] => {
                    self.st_imm(op::H, R7, off, half(a, b));
                    self.st_imm(op::B, R7, off + 2, i32::from(c));
                }
                [a] => self.st_imm(op::B, R7, off, i32::from(a)),
                _ => {}
            }
            at += w.len();
        }
    }

    /// `lock *(u64 *)(dst + off) += src`, `src` = the old value.
    fn atomic_fetch_add(&mut self, dst: u8, off: i16, src: u8) {
        let code = op::STX | op::ATOMIC | op::DW;
        self.raw(code, dst, src, off, op::ATOMIC_ADD | op::ATOMIC_FETCH);
    }

    /// `r0 = map value for key 0`, or 0; map 0 is an array map. Clobbers r1-r5.
    fn lookup_key0(&mut self) {
        self.ld_map(R1, 0);
        self.st_imm(op::W, FP, -4, 0);
        self.mov(R2, FP);
        self.alu_imm(op::ADD, R2, -4);
        self.call(helper::MAP_LOOKUP_ELEM);
    }

    /// RFC 1624 eqn. 3 on the 16-bit checksum at `base + at`: for each (old, new)
    /// register pair, `HC' = ~(~HC + ~old + new)`; with `l4`, a result of 0 is
    /// written as 0xffff (the same ones' complement zero; UDP's rule). Words are
    /// loaded in host order on both sides, which the ones' complement sum does
    /// not mind. Clobbers r0 and r1.
    fn csum_update(&mut self, base: u8, at: i16, pairs: &[(u8, u8)], l4: bool) {
        self.ldx(op::H, R0, base, at);
        self.alu_imm(op::XOR, R0, 0xffff);
        for &(old, new) in pairs {
            self.mov(R1, old);
            self.alu_imm(op::XOR, R1, 0xffff);
            self.alu(op::ADD, R0, R1);
            self.alu(op::ADD, R0, new);
        }
        self.csum_fold(R0, R1);
        if l4 {
            let nonzero = self.label();
            self.jmp_imm(op::JNE, R0, 0, nonzero);
            self.mov_imm(R0, 0xffff);
            self.bind(nonzero);
        }
        self.stx(op::H, base, at, R0);
    }

    /// Write the flow number in register `flow` into the frame at register
    /// `base` (its first `f.need` bytes checked readable and writable): its low
    /// 16 bits into the source port, the next 16 into the low half of the
    /// source address, both checksums updated. Clobbers r0-r5.
    fn write_flow(&mut self, flow: u8, base: u8, f: FlowFields) {
        // r2 = new port word, r3 = new address word, r4 / r5 = the old ones.
        self.mov(R2, flow);
        self.alu_imm(op::AND, R2, 0xffff);
        self.mov(R3, flow);
        self.alu_imm(op::RSH, R3, 16);
        self.alu_imm(op::AND, R3, 0xffff);
        self.ldx(op::H, R4, base, f.sport);
        self.ldx(op::H, R5, base, f.src_low);
        self.csum_update(base, f.ip_csum, &[(R5, R3)], false);
        if let Some(at) = f.l4_csum {
            self.csum_update(base, at, &[(R5, R3), (R4, R2)], true);
        }
        self.stx(op::H, base, f.sport, R2);
        self.stx(op::H, base, f.src_low, R3);
    }

    /// Append `out: r0 = verdict; exit`; the instructions with every jump
    /// patched and map 0 (if the program names it) resolved to `map`.
    fn finish(mut self, verdict: i32, map: Option<RawFd>) -> io::Result<Vec<Insn>> {
        let out = self.out;
        self.a.bind(out);
        self.a.ret(verdict);
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let prog = self.a.finish().map_err(|e| invalid(e.to_string()))?;
        prog.resolve(map.as_slice()).map_err(invalid)
    }
}

/// Two frame bytes as the immediate of a half-word store.
fn half(a: u8, b: u8) -> i32 {
    i32::from(u16::from_ne_bytes([a, b]))
}

/// `r0 = verdict; exit`.
fn constant_program(verdict: i32) -> io::Result<Vec<Insn>> {
    Gen::new().finish(verdict, None)
}

/// How much of a frame the generator programs rewrite on each run: its headers
/// (Ethernet, IPv4 with options or IPv6, TCP or UDP), never more than 128 bytes.
fn head_len(frame: &[u8]) -> usize {
    frame.len().min(128)
}

/// The plain generator: restore the frame's headers, then `XDP_TX`.
fn tx_program(frame: &[u8]) -> io::Result<Vec<Insn>> {
    let mut a = Gen::new();
    a.restore(&frame[..head_len(frame)]);
    a.finish(xdp::TX, None)
}

/// The counter: IPv4 and IPv6 frames are added to the map's entry 0 (packets
/// at offset 0, bytes at 8) and dropped; anything else passes.
///
/// ```text
/// r6 = r1; r7 = ctx->data; r8 = ctx->data_end
/// r2 = r7 + 14; if r2 > r8 goto pass
/// r2 = *(u16 *)(r7 + 12)               ; ethertype, as loaded (host order)
/// if r2 == 0x0008 goto count           ; 0x0800 in network order
/// if r2 != 0xdd86 goto pass            ; 0x86dd in network order
/// count: r0 = lookup(map, 0); if r0 == 0 goto drop
/// lock *(u64 *)(r0 + 0) += 1; lock *(u64 *)(r0 + 8) += r8 - r7
/// drop: r0 = XDP_DROP; exit
/// pass: r0 = XDP_PASS; exit
/// ```
fn counter_program(map: RawFd) -> io::Result<Vec<Insn>> {
    let ethertype = |net: u16| i32::from(u16::from_ne_bytes(net.to_be_bytes()));
    let mut a = Gen::new();
    let (count, drop) = (a.label(), a.label());
    a.mov(R6, R1);
    a.ldx(op::W, R7, R6, xdp::DATA);
    a.ldx(op::W, R8, R6, xdp::DATA_END);
    a.mov(R2, R7);
    a.alu_imm(op::ADD, R2, 14);
    a.jump_out(op::JGT, R2, R8);
    a.ldx(op::H, R2, R7, 12);
    a.jmp_imm(op::JEQ, R2, ethertype(0x0800), count);
    a.jump_out_imm(op::JNE, R2, ethertype(0x86dd));
    a.bind(count);
    a.lookup_key0();
    a.jmp_imm(op::JEQ, R0, 0, drop);
    a.mov_imm(R1, 1);
    a.atomic_add(op::DW, R0, 0, R1);
    a.mov(R1, R8);
    a.alu(op::SUB, R1, R7);
    a.atomic_add(op::DW, R0, 8, R1);
    a.bind(drop);
    a.ret(xdp::DROP);
    a.finish(xdp::PASS, Some(map))
}

/// Where the flow variant writes, in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowFields {
    /// IPv4 header checksum.
    ip_csum: i16,
    /// The low 16 bits of the IPv4 source address.
    src_low: i16,
    /// TCP or UDP source port.
    sport: i16,
    /// TCP or UDP checksum, `None` for UDP without one (zero).
    l4_csum: Option<i16>,
    /// Bytes the program must be able to touch.
    need: i32,
}

/// Locate the fields of an Ethernet + IPv4 + TCP/UDP frame (no VLAN tag).
fn flow_fields(frame: &[u8]) -> Option<FlowFields> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let proto = frame[23];
    let l4 = 14 + ihl;
    let (csum_at, hdr) = match proto {
        6 => (l4 + 16, 20),
        17 => (l4 + 6, 8),
        _ => return None,
    };
    if ihl < 20 || frame.len() < l4 + hdr {
        return None;
    }
    let l4_csum = if proto == 17 && frame[csum_at..csum_at + 2] == [0, 0] {
        None
    } else {
        Some(csum_at as i16)
    };
    Some(FlowFields {
        ip_csum: 24,
        src_low: 28,
        sport: l4 as i16,
        l4_csum,
        need: (l4 + hdr) as i32,
    })
}

/// The new-flow generator: as `tx_program`, after writing a
/// per-frame number `c` (from an atomic fetch-add on the map's entry 0) into the
/// source port (`c & 0xffff`) and the low half of the source address
/// (`(c >> 16) & 0xffff`), checksums updated. Frames too short go out unchanged.
fn flow_program(map: RawFd, frame: &[u8], f: FlowFields) -> io::Result<Vec<Insn>> {
    let mut a = Gen::new();
    a.restore(&frame[..head_len(frame)]);
    a.mov(R2, R7);
    a.alu_imm(op::ADD, R2, f.need);
    a.jump_out(op::JGT, R2, R8);
    a.lookup_key0();
    a.jump_out_imm(op::JEQ, R0, 0);
    a.mov_imm(R9, 1);
    a.atomic_fetch_add(R0, 0, R9);
    a.write_flow(R9, R7, f);
    a.finish(xdp::TX, Some(map))
}

// ---------------------------------------------------------------- loading

/// A one-entry array map with `value_size`-byte values, zeroed.
fn array_map(value_size: u32) -> io::Result<OwnedFd> {
    map_create(BPF_MAP_TYPE_ARRAY, 4, value_size, 1)
}

/// Entry 0 of a one-entry array map of u64 words.
fn read_words<const N: usize>(map: BorrowedFd<'_>) -> io::Result<[u64; N]> {
    let mut value = [0u64; N];
    map_lookup(map, &0u32, &mut value)?;
    Ok(value)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The kernel's id of the program `prog` (as `bpftool prog` shows it).
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_prog_info: `type` (u32), then `id` (u32); the kernel fills at
    // most `info_len` bytes.
    let mut info = [0u32; 64];
    let mut a = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<[u32; 64]>() as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info[1])
}

#[repr(C)]
#[derive(Default)]
struct GetByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Whether a program with id `id` is still loaded anywhere in the kernel.
/// Programs are freed after an RCU grace period: poll briefly after a drop.
pub fn prog_loaded(id: u32) -> io::Result<bool> {
    let mut a = GetByIdAttr {
        id,
        ..GetByIdAttr::default()
    };
    match sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut a) {
        Ok(fd) => {
            drop(owned(fd));
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- generator

/// How a [`Generator`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `BPF_PROG_RUN` of an XDP program in live-frames mode: the kernel
    /// transmits what the program returns, as XDP frames (Linux 5.18+; some
    /// kernels refuse it).
    LiveFrames,
    /// One frame through an `AF_PACKET` socket per batch, cloned out of the
    /// interface by a tcx egress program (Linux 6.6+; see [`clone`]).
    Clone,
}

impl Method {
    /// Both methods, fastest first.
    pub const ALL: [Method; 2] = [Method::LiveFrames, Method::Clone];

    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Method::LiveFrames => "live-frames",
            Method::Clone => "clone",
        }
    }

    /// The method named `s` (as [`Method::name`] gives it).
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The fastest method the kernel offers on `ifindex`: live frames where
    /// [`live_frames_available`] says so, else clone.
    pub fn detect(ifindex: u32) -> Method {
        match live_frames_available(ifindex) {
            Ok(()) => Method::LiveFrames,
            Err(_) => Method::Clone,
        }
    }
}

/// Whether the kernel runs XDP programs in live-frames mode on `ifindex`: one
/// test run of a program that drops its frame (nothing is transmitted). The
/// error is the kernel's refusal (EPERM on some kernels, EINVAL before 5.18).
pub fn live_frames_available(ifindex: u32) -> io::Result<()> {
    let prog = load_xdp("lbp_gen_probe", &constant_program(xdp::DROP)?)?;
    live::test_run(prog.as_fd(), ifindex, &[0u8; 60], 1, 1)
}

#[derive(Debug)]
enum Engine {
    Live(live::Live),
    Clone(clone::Cloner),
}

/// Sends copies of one frame out of an interface at kernel speed, by either
/// [`Method`] (see the crate documentation). One per sending thread.
#[derive(Debug)]
pub struct Generator {
    engine: Engine,
}

impl Generator {
    /// Frames accepted: an Ethernet header up to a 1 500-byte payload.
    pub const FRAME_LEN: std::ops::RangeInclusive<usize> = 14..=1514;

    /// Frames per kernel batch (live frames) or per seed (clone) when the
    /// caller passes 0.
    pub const DEFAULT_BATCH: u32 = 64;

    fn check(frame: &[u8]) -> io::Result<()> {
        if Self::FRAME_LEN.contains(&frame.len()) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a generator frame has 14 to 1514 bytes, not {}",
                    frame.len()
                ),
            ))
        }
    }

    /// A generator sending `frame` unchanged out of `ifindex` (an interface of
    /// the calling thread's network namespace), by the method [`Method::detect`]
    /// finds.
    pub fn new(ifindex: u32, frame: &[u8]) -> io::Result<Generator> {
        Self::open(Method::detect(ifindex), ifindex, frame, false)
    }

    /// A generator that makes each frame a new flow (see [`Generator::open`]),
    /// by the method [`Method::detect`] finds.
    pub fn with_flows(ifindex: u32, frame: &[u8]) -> io::Result<Generator> {
        Self::open(Method::detect(ifindex), ifindex, frame, true)
    }

    /// A generator sending `frame` out of `ifindex` by `method`. With `flows`,
    /// `frame` must be Ethernet + IPv4 + TCP or UDP, and frame `n` gets its
    /// source port and the low half of its source address from flow number `n`
    /// (2^32 distinct flows, sources in the /16 of `frame`'s source).
    pub fn open(method: Method, ifindex: u32, frame: &[u8], flows: bool) -> io::Result<Generator> {
        Self::check(frame)?;
        let fields = if flows {
            Some(flow_fields(frame).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the flow generator needs an Ethernet + IPv4 + TCP/UDP frame",
                )
            })?)
        } else {
            None
        };
        let engine = match method {
            Method::LiveFrames => Engine::Live(live::Live::new(ifindex, frame, fields)?),
            Method::Clone => Engine::Clone(clone::Cloner::new(ifindex, frame, fields)?),
        };
        Ok(Generator { engine })
    }

    /// How this generator sends.
    pub fn method(&self) -> Method {
        match self.engine {
            Engine::Live(_) => Method::LiveFrames,
            Engine::Clone(_) => Method::Clone,
        }
    }

    /// Send `count` frames, `batch` (1 to [`MAX_BATCH`]; 0 for
    /// [`Generator::DEFAULT_BATCH`]) per kernel batch or seed; returns how many
    /// were handed to the interface. Live frames: the kernel does not say, and
    /// this is `count`. Clone: the clones the interface accepted (those it
    /// refused are counted by [`Generator::refused`]).
    pub fn run(&self, count: u64, batch: u32) -> io::Result<u64> {
        if batch > MAX_BATCH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("batch {batch} is above {MAX_BATCH}"),
            ));
        }
        let batch = if batch == 0 {
            Self::DEFAULT_BATCH
        } else {
            batch
        };
        match &self.engine {
            Engine::Live(l) => l.run(count, batch),
            Engine::Clone(c) => c.run(count, batch),
        }
    }

    /// Send for `time` (and at most `max` frames); returns frames sent.
    pub fn run_for(&self, time: Duration, max: u64, batch: u32) -> io::Result<u64> {
        let end = Instant::now() + time;
        let mut sent = 0u64;
        while sent < max && Instant::now() < end {
            sent += self.run((max - sent).min(u64::from(CHUNK)), batch)?;
        }
        Ok(sent)
    }

    /// Frames the interface refused so far (clone: a full transmit ring, an
    /// interface down); always 0 for live frames, whose kernel does not say.
    pub fn refused(&self) -> io::Result<u64> {
        match &self.engine {
            Engine::Live(_) => Ok(0),
            Engine::Clone(c) => Ok(c.slot()?.refused),
        }
    }

    /// Set the flow variant's next flow number (its low 16 bits become the
    /// source port, the next 16 the low half of the source address, both as
    /// written in host byte order). No effect on a plain generator.
    pub fn set_next_flow(&self, n: u64) -> io::Result<()> {
        match &self.engine {
            Engine::Live(l) => l.set_next_flow(n),
            Engine::Clone(c) => c.set_next_flow(n),
        }
    }

    /// The flow variant's next flow number (a plain generator's stays as set):
    /// it starts at 0 (or as set) and grows by one per frame.
    pub fn next_flow(&self) -> io::Result<u64> {
        match &self.engine {
            Engine::Live(l) => l.next_flow(),
            Engine::Clone(c) => Ok(c.slot()?.next_flow),
        }
    }

    /// The loaded program's kernel id.
    pub fn prog_id(&self) -> io::Result<u32> {
        match &self.engine {
            Engine::Live(l) => prog_id(l.prog()),
            Engine::Clone(c) => prog_id(c.prog()),
        }
    }
}

// ---------------------------------------------------------------- sink side

/// Packets and bytes a [`Counter`] has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// IPv4 and IPv6 frames.
    pub packets: u64,
    /// Their bytes, Ethernet header included.
    pub bytes: u64,
}

/// Counts (and drops) the IP frames arriving on an interface; see the crate
/// documentation. Detached on drop.
#[derive(Debug)]
pub struct Counter {
    // Field order is drop order: detach first.
    attachment: Attachment,
    prog: OwnedFd,
    map: OwnedFd,
}

impl Counter {
    /// Load the counter and attach it to `ifindex` (native XDP where the driver
    /// has it, generic otherwise).
    pub fn attach(ifindex: u32) -> io::Result<Counter> {
        let map = array_map(16)?;
        let prog = load_xdp("lbp_count", &counter_program(map.as_raw_fd())?)?;
        let attachment = Attachment::attach_fd(ifindex, prog.as_fd())?;
        Ok(Counter {
            attachment,
            prog,
            map,
        })
    }

    /// The counts so far.
    pub fn read(&self) -> io::Result<Count> {
        let [packets, bytes] = read_words::<2>(self.map.as_fd())?;
        Ok(Count { packets, bytes })
    }

    /// Where the program runs.
    pub fn mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The loaded program's kernel id.
    pub fn prog_id(&self) -> io::Result<u32> {
        prog_id(self.prog.as_fd())
    }
}

/// The trivial `r0 = XDP_TX; exit` program attached to an interface: every frame
/// goes back out where it came from, unchanged. Detached on drop.
#[derive(Debug)]
pub struct Reflector {
    attachment: Attachment,
    prog: OwnedFd,
}

impl Reflector {
    /// Load and attach the reflector to `ifindex`.
    pub fn attach(ifindex: u32) -> io::Result<Reflector> {
        Reflector::attach_verdict(ifindex, xdp::TX)
    }

    /// An XDP program that passes every frame on, attached to `ifindex`: a
    /// veth takes frames its peer's XDP program sends (XDP_TX, a redirect)
    /// only when it runs an XDP program itself.
    pub fn attach_pass(ifindex: u32) -> io::Result<Reflector> {
        Reflector::attach_verdict(ifindex, xdp::PASS)
    }

    /// The least an XDP forwarder does, attached to `ifindex`: every frame
    /// of at least 14 bytes gets destination MAC `dst_mac` and is redirected
    /// out of interface `out` (the kernel's redirect ceiling, beside which
    /// an XDP load balancer that redirects is measured).
    pub fn attach_redirect(ifindex: u32, out: u32, dst_mac: [u8; 6]) -> io::Result<Reflector> {
        let mut a = Asm::new();
        let short = a.label();
        a.ldx(op::W, R2, R1, xdp::DATA);
        a.ldx(op::W, R3, R1, xdp::DATA_END);
        a.mov(R4, R2);
        a.alu_imm(op::ADD, R4, 14);
        a.jmp(op::JGT, R4, R3, short);
        for (i, pair) in dst_mac.chunks(2).enumerate() {
            a.st_imm(op::H, R2, 2 * i as i16, half(pair[0], pair[1]));
        }
        a.mov_imm(R1, out as i32);
        a.mov_imm(R2, 0);
        a.call(helper::REDIRECT);
        a.exit();
        a.bind(short);
        a.ret(xdp::DROP);
        let insns = a
            .finish()
            .map_err(|e| io::Error::other(format!("assembling: {e}")))?
            .insns;
        let prog = load_xdp("lbp_xdp_redirect", &insns)?;
        let attachment = Attachment::attach_fd(ifindex, prog.as_fd())?;
        Ok(Reflector { attachment, prog })
    }

    fn attach_verdict(ifindex: u32, verdict: i32) -> io::Result<Reflector> {
        let prog = load_xdp("lbp_xdp_const", &constant_program(verdict)?)?;
        let attachment = Attachment::attach_fd(ifindex, prog.as_fd())?;
        Ok(Reflector { attachment, prog })
    }

    /// Where the program runs.
    pub fn mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The loaded program's kernel id.
    pub fn prog_id(&self) -> io::Result<u32> {
        prog_id(self.prog.as_fd())
    }
}

// ---------------------------------------------------------------- frames

/// An Ethernet + IPv4 + UDP frame with `payload` zero bytes, both checksums
/// computed (a UDP checksum of 0 is sent as 0xffff). `payload` is capped so the
/// frame stays within [`Generator::FRAME_LEN`].
pub fn udp4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: usize,
) -> Vec<u8> {
    let payload = payload.min(1514 - 42);
    let udp_len = (8 + payload) as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + usize::from(ip_len));
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let ip_csum = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(14 + usize::from(ip_len), 0);
    let acc = checksum::pseudo_v4(src, dst, 17, udp_len);
    let mut c = !checksum::fold(checksum::sum(acc, &f[34..]));
    if c == 0 {
        c = 0xffff;
    }
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbp_abi::bpf::insn;
    use lbp_lab::testing::frame::checksum_oracle;

    const XDP_TX: i32 = xdp::TX;

    // Whole opcodes, for the interpreter below.
    const MOV_X: u8 = op::ALU64 | op::MOV | op::X;
    const MOV_K: u8 = op::ALU64 | op::MOV | op::K;
    const ADD_K: u8 = op::ALU64 | op::ADD | op::K;
    const ADD_X: u8 = op::ALU64 | op::ADD | op::X;
    const AND_K: u8 = op::ALU64 | op::AND | op::K;
    const RSH_K: u8 = op::ALU64 | op::RSH | op::K;
    const XOR_K: u8 = op::ALU64 | op::XOR | op::K;
    const LDX_W: u8 = op::LDX | op::MEM | op::W;
    const LDX_H: u8 = op::LDX | op::MEM | op::H;
    const STX_H: u8 = op::STX | op::MEM | op::H;
    const ST_W: u8 = op::ST | op::MEM | op::W;
    const ST_H: u8 = op::ST | op::MEM | op::H;
    const ST_B: u8 = op::ST | op::MEM | op::B;
    const LD_DW: u8 = op::LD | op::IMM | op::DW;
    const ATOMIC_DW: u8 = op::STX | op::ATOMIC | op::DW;
    const JGT_X: u8 = op::JMP | op::JGT | op::X;
    const JEQ_K: u8 = op::JMP | op::JEQ | op::K;
    const JNE_K: u8 = op::JMP | op::JNE | op::K;
    const CALL: u8 = op::JMP | op::CALL;
    const EXIT: u8 = op::JMP | op::EXIT;

    fn folded_sum(data: &[u8]) -> u16 {
        !checksum_oracle(data, 0)
    }

    fn folded_sum_from(initial: u32, data: &[u8]) -> u16 {
        !checksum_oracle(data, initial)
    }

    const A: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 1];
    const B: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 2];

    fn frame() -> Vec<u8> {
        udp4_frame(
            A,
            B,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            1000,
            2000,
            18,
        )
    }

    /// An independent check (the test oracle): the checksums of a frame verify
    /// to zero.
    fn verifies(f: &[u8]) -> bool {
        let ip_ok = folded_sum(&f[14..34]) == 0xffff;
        let len = (f.len() - 34) as u32;
        let pseudo = u32::from(folded_sum(&f[26..34])) + 17 + len;
        ip_ok && folded_sum_from(pseudo, &f[34..]) == 0xffff
    }

    #[test]
    fn udp_frame_is_well_formed() {
        let f = frame();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &B);
        assert_eq!(&f[6..12], &A);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
        assert!(verifies(&f));
        let big = udp4_frame(A, B, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 99_999);
        assert!(Generator::FRAME_LEN.contains(&big.len()));
        assert!(verifies(&big));
    }

    #[test]
    fn flow_fields_of_frames() {
        let f = frame();
        let ff = flow_fields(&f).unwrap();
        assert_eq!((ff.ip_csum, ff.src_low, ff.sport), (24, 28, 34));
        assert_eq!(ff.l4_csum, Some(40));
        assert_eq!(ff.need, 42);
        let mut z = f.clone();
        z[40] = 0;
        z[41] = 0;
        assert_eq!(flow_fields(&z).unwrap().l4_csum, None);
        // Not IPv4, truncated, not TCP/UDP, bad header length: refused.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(flow_fields(&arp), None);
        assert_eq!(flow_fields(&f[..38]), None);
        let mut icmp = f.clone();
        icmp[23] = 1;
        assert_eq!(flow_fields(&icmp), None);
        let mut ihl = f.clone();
        ihl[14] = 0x44;
        assert_eq!(flow_fields(&ihl), None);
        assert_eq!(flow_fields(&[]), None);
    }

    /// A small interpreter of exactly the instructions `flow_program` uses, so the
    /// checksum arithmetic is checked here without the kernel.
    fn interpret(prog: &[Insn], pkt: &mut [u8], counter: &mut u64) -> i32 {
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        // Registers holding "pointers": r7 = packet base (0), r8 = end.
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 1000, "runaway program");
            let i = prog[pc];
            let (d, s) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm) as u64;
            pc += 1;
            match i.code {
                MOV_X => r[d] = r[s],
                MOV_K => r[d] = imm,
                ADD_K => r[d] = r[d].wrapping_add(imm),
                ADD_X => r[d] = r[d].wrapping_add(r[s]),
                AND_K => r[d] &= imm,
                RSH_K => r[d] >>= imm,
                XOR_K => r[d] ^= imm,
                LDX_W if s == 6 => r[d] = if i.off == 0 { 0 } else { pkt.len() as u64 },
                LDX_H => {
                    let at = (r[s] as i64 + i64::from(i.off)) as usize;
                    r[d] = u64::from(u16::from_ne_bytes([pkt[at], pkt[at + 1]]));
                }
                STX_H => {
                    let at = (r[d] as i64 + i64::from(i.off)) as usize;
                    pkt[at..at + 2].copy_from_slice(&(r[s] as u16).to_ne_bytes());
                }
                LD_DW => {
                    r[d] = 0;
                    pc += 1;
                }
                ST_W | ST_H | ST_B if d == 7 => {
                    let at = i.off as usize;
                    let b = i.imm.to_ne_bytes();
                    let n = match i.code {
                        ST_W => 4,
                        ST_H => 2,
                        _ => 1,
                    };
                    let src = match n {
                        4 => b,
                        // Narrow stores take the low bytes of the value.
                        2 => {
                            let v = (i.imm as u16).to_ne_bytes();
                            [v[0], v[1], 0, 0]
                        }
                        _ => [i.imm as u8, 0, 0, 0],
                    };
                    pkt[at..at + n].copy_from_slice(&src[..n]);
                }
                ST_W => {}        // the stack key
                CALL => r[0] = 1, // a non-null map value
                ATOMIC_DW => {
                    assert_eq!(i.imm, op::ATOMIC_ADD | op::ATOMIC_FETCH);
                    let old = *counter;
                    *counter += r[s];
                    r[s] = old;
                }
                JGT_X => {
                    if r[d] > r[s] {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JEQ_K | JNE_K => {
                    if (r[d] == imm) == (i.code == JEQ_K) {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                EXIT => return r[0] as i32,
                c => panic!("opcode {c:#x} not interpreted"),
            }
        }
    }

    #[test]
    fn flow_program_makes_distinct_flows_with_valid_checksums() {
        let base = frame();
        let ff = flow_fields(&base).unwrap();
        let prog = flow_program(3, &base, ff).unwrap();
        let mut counter = 0x0001_fffe_u64;
        let mut seen = std::collections::HashSet::new();
        let mut pkt = base.clone();
        for _ in 0..5 {
            // Frames may be fresh copies or reused ones: try both.
            for p in [&mut base.clone(), &mut pkt] {
                let before = counter;
                assert_eq!(interpret(&prog, p, &mut counter), XDP_TX);
                assert_eq!(counter, before + 1);
                assert!(verifies(p), "bad checksum after flow {before:#x}");
                assert_eq!(&p[26..28], &[198, 18], "source stays in its /16");
                assert!(seen.insert((p[28], p[29], p[34], p[35])));
                assert_eq!(&p[30..34], &base[30..34]);
                assert_eq!(&p[36..38], &base[36..38]);
            }
        }
        // A truncated frame goes out unchanged, and takes no number.
        let mut short = base[..40].to_vec();
        let before = counter;
        assert_eq!(interpret(&prog, &mut short, &mut counter), XDP_TX);
        assert_eq!((counter, &short[..]), (before, &base[..40]));
    }

    #[test]
    fn programs_restore_headers_a_forwarder_rewrote() {
        let base = frame();
        // What a forwarding receiver does to the page in place: new MACs, TTL
        // down by one, IPv4 checksum updated.
        let mut fwd = base.clone();
        fwd[0..12].copy_from_slice(&[9; 12]);
        fwd[22] -= 1;
        fwd[24] = fwd[24].wrapping_add(1);
        let mut n = 0;
        let tx = tx_program(&base).unwrap();
        assert_eq!(interpret(&tx, &mut fwd, &mut n), XDP_TX);
        assert_eq!(fwd, base);
        // Odd lengths use half-word and byte stores.
        for len in [14, 15, 17, 59, 61, 200] {
            let long: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut f = vec![0xee; len];
            assert_eq!(
                interpret(&tx_program(&long).unwrap(), &mut f, &mut n),
                XDP_TX
            );
            let h = head_len(&long);
            assert_eq!(&f[..h], &long[..h], "length {len}");
        }
        let mut fwd = base.clone();
        fwd[0..12].copy_from_slice(&[9; 12]);
        fwd[22] -= 1;
        let flows = flow_program(3, &base, flow_fields(&base).unwrap()).unwrap();
        assert_eq!(interpret(&flows, &mut fwd, &mut n), XDP_TX);
        assert_eq!((&fwd[..12], fwd[22]), (&base[..12], base[22]));
        assert!(verifies(&fwd));
    }

    #[test]
    fn flow_program_without_udp_checksum_leaves_it_zero() {
        let mut base = frame();
        base[40] = 0;
        base[41] = 0;
        let prog = flow_program(3, &base, flow_fields(&base).unwrap()).unwrap();
        let mut counter = 77;
        let mut p = base.clone();
        assert_eq!(interpret(&prog, &mut p, &mut counter), XDP_TX);
        assert_eq!(&p[40..42], &[0, 0]);
        assert_eq!(folded_sum(&p[14..34]), 0xffff);
        assert_ne!(&p[28..30], &base[28..30]);
    }

    #[test]
    fn encodings() {
        assert_eq!(size_of::<Insn>(), 8);
        let p = constant_program(XDP_TX).unwrap();
        assert_eq!(p, vec![insn(0xb7, 0, 0, 0, 3), insn(0x95, 0, 0, 0, 0)]);
        let c = counter_program(5).unwrap();
        // Every jump lands inside the program.
        for (n, i) in c.iter().enumerate() {
            if i.code & 0x07 == 0x05 && i.code != CALL && i.code != EXIT {
                let t = n as i64 + 1 + i64::from(i.off);
                assert!((0..c.len() as i64).contains(&t), "jump at {n} to {t}");
            }
        }
        assert_eq!(c.last().unwrap().code, EXIT);
    }
}
