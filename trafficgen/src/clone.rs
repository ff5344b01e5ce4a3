//! The clone method: a tcx egress program that turns one frame into many.
//!
//! The generator opens an `AF_PACKET` socket on its interface with a socket mark
//! of its own ([`SEED_MARK`]) and sends the frame through it, an ordinary
//! transmission through `dev_queue_xmit`. A traffic-control program linked to
//! the interface's egress (a tcx link, Linux 6.6+) sees each frame leave: one
//! without the mark passes untouched; the marked one (the seed) has its mark
//! cleared and is cloned out of the same interface (`bpf_clone_redirect`) as
//! many times as the map says, then dropped. A clone is a new socket buffer
//! sharing the seed's data, so one system call sends up to [`MAX_BATCH`] frames
//! and the kernel copies none of them. The clones pass the egress hook again,
//! unmarked, and go out.
//!
//! The flow variant gives each clone a flow of its own, as the live-frames flow
//! program does: before each clone it writes a flow number into the seed's
//! source port and the low half of its source address and updates both
//! checksums (the kernel gives the seed data of its own after each clone, so
//! the clones already sent keep theirs).
//!
//! The map (one entry, [`Slot`]) is shared with user space: the next flow
//! number, the clones the interface accepted and those it refused (a full veth
//! ring, an interface down), and how many clones the next seed makes.
//!
//! Frames sent this way are socket buffers from the start, so a veth peer with
//! an XDP program copies each into a page of its own before running it (the
//! live-frames method hands it an XDP frame): the receiving side does somewhat
//! more work per frame with this method.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::{FlowFields, Gen, MAX_BATCH, array_map};
use lbp_abi::bpf::{Insn, Label, op, reg::*};
use lbp_runtime::ring::bpf::{
    BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_EGRESS, link_create, load_program, map_lookup, map_update,
};
use lbp_runtime::ring::uring::{packet_socket, setsockopt_int};

/// The socket mark of a seed frame ("lbpg"): only frames with it are cloned.
pub(super) const SEED_MARK: u32 = 0x6c62_7067;

/// `struct __sk_buff` offsets the program reads and writes.
mod skb {
    pub const MARK: i16 = 8;
    pub const DATA: i16 = 76;
    pub const DATA_END: i16 = 80;
}

const BPF_FUNC_CLONE_REDIRECT: i32 = 13;

/// tcx verdicts: go on to the next program (and out), or drop.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;

/// The map's one value, as user space and the program see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Slot {
    /// The next flow number (the flow variant takes one per clone).
    pub next_flow: u64,
    /// Clones the interface accepted.
    pub sent: u64,
    /// Clones the interface refused.
    pub refused: u64,
    /// Clones the next seed makes (at most [`MAX_BATCH`]).
    pub per_seed: u64,
}

mod slot {
    pub const NEXT_FLOW: i16 = 0;
    pub const SENT: i16 = 8;
    pub const REFUSED: i16 = 16;
    pub const PER_SEED: i16 = 24;
}

/// The egress program, for map `map` and interface `ifindex`; with `flows`,
/// each clone is a new flow.
///
/// ```text
///     r6 = skb
///     if skb->mark != SEED_MARK goto next
///     skb->mark = 0                          ; the clones are not seeds
///     r0 = lookup(map, 0); if r0 == 0 goto drop
///     fp[-16] = r0; fp[-24] = r0->per_seed
///     [flows] fp[-8] = fetch_add(r0->next_flow, per_seed)
///     r7 = 0 (clone number); r8 = 0 (accepted)
/// loop:
///     if r7 >= fp[-24] goto done; if r7 >= MAX_BATCH goto done
///     [flows] r9 = data; bounds check;
///             rewrite source port and address to flow fp[-8] + r7, checksums
///     if clone_redirect(skb, ifindex, 0) == 0: r8 += 1
///     r7 += 1; goto loop
/// done:
///     r0 = fp[-16]; r0->sent += r8; r0->refused += r7 - r8
/// drop: r0 = TCX_DROP; exit
/// next: r0 = TCX_NEXT; exit
/// ```
pub(super) fn clone_program(
    map: RawFd,
    ifindex: u32,
    flows: Option<FlowFields>,
) -> io::Result<Vec<Insn>> {
    let mut a = Gen::new();
    let (lp, done, drop, counted) = (a.label(), a.label(), a.label(), a.label());
    a.mov(R6, R1);
    a.ldx(op::W, R2, R6, skb::MARK);
    a.jump_out_imm(op::JNE, R2, SEED_MARK as i32);
    a.mov_imm(R2, 0);
    a.stx(op::W, R6, skb::MARK, R2);
    a.lookup_key0();
    a.jmp_imm(op::JEQ, R0, 0, drop);
    a.stx(op::DW, FP, -16, R0);
    a.ldx(op::DW, R3, R0, slot::PER_SEED);
    a.stx(op::DW, FP, -24, R3);
    if flows.is_some() {
        a.mov(R2, R3);
        a.atomic_fetch_add(R0, slot::NEXT_FLOW, R2);
        a.stx(op::DW, FP, -8, R2);
    }
    a.mov_imm(R7, 0);
    a.mov_imm(R8, 0);
    a.bind(lp);
    a.ldx(op::DW, R3, FP, -24);
    a.jmp(op::JGE, R7, R3, done);
    a.jmp_imm(op::JGE, R7, MAX_BATCH as i32, done);
    if let Some(f) = flows {
        rewrite_flow(&mut a, f, done);
    }
    a.mov(R1, R6);
    a.mov_imm(R2, ifindex as i32);
    a.mov_imm(R3, 0);
    a.call(BPF_FUNC_CLONE_REDIRECT);
    // Accepted (0): counted.
    a.jmp_imm(op::JNE, R0, 0, counted);
    a.alu_imm(op::ADD, R8, 1);
    a.bind(counted);
    a.alu_imm(op::ADD, R7, 1);
    a.ja(lp);
    a.bind(done);
    a.ldx(op::DW, R0, FP, -16);
    a.atomic_add(op::DW, R0, slot::SENT, R8);
    a.alu(op::SUB, R7, R8);
    a.atomic_add(op::DW, R0, slot::REFUSED, R7);
    a.bind(drop);
    a.ret(TCX_DROP);
    a.finish(TCX_NEXT, Some(map))
}

/// The flow variant's rewrite of the seed before clone `r7`: write flow
/// `fp[-8] + r7` into the source port (low 16 bits) and the low half of the
/// source address (next 16), both checksums updated; jumps to `done` if the
/// frame is too short. Clobbers r0-r5 and r9.
///
/// The seed's data is its own when written: the kernel unshares a program's
/// packet before the program runs (a program that writes packet data gets
/// that prologue) and after each `bpf_clone_redirect` (the clone keeps the old
/// copy), so no write reaches a clone already sent. The packet pointers are
/// loaded again after each clone, as the verifier requires.
fn rewrite_flow(a: &mut Gen, f: FlowFields, done: Label) {
    a.ldx(op::W, R9, R6, skb::DATA);
    a.ldx(op::W, R3, R6, skb::DATA_END);
    a.mov(R2, R9);
    a.alu_imm(op::ADD, R2, f.need);
    a.jmp(op::JGT, R2, R3, done);
    a.ldx(op::DW, R1, FP, -8);
    a.alu(op::ADD, R1, R7);
    a.write_flow(R1, R9, f);
}

/// A loaded and linked clone program with its map and seed socket.
#[derive(Debug)]
pub(super) struct Cloner {
    // Field order is drop order: unlink first.
    // Held only to keep the program linked; closing it unlinks.
    _link: OwnedFd,
    prog: OwnedFd,
    map: OwnedFd,
    sock: OwnedFd,
    ifindex: u32,
    frame: Vec<u8>,
    flows: bool,
}

impl Cloner {
    /// Load the program for `frame` on `ifindex` (flows: see [`clone_program`]),
    /// link it to the interface's egress and open the seed socket. Each error
    /// names the kernel feature that failed.
    pub(super) fn new(ifindex: u32, frame: &[u8], flows: Option<FlowFields>) -> io::Result<Cloner> {
        let map = array_map(size_of::<Slot>() as u32)?;
        let insns = clone_program(map.as_raw_fd(), ifindex, flows)?;
        let name = if flows.is_some() {
            "lbp_gen_cflows"
        } else {
            "lbp_gen_clone"
        };
        let prog = load_program(BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_EGRESS, name, &insns)
            .map_err(|e| feature("a tc classifier program with bpf_clone_redirect", e))?;
        let link = link_create(ifindex, prog.as_fd(), BPF_TCX_EGRESS, 0)
            .map_err(|e| feature("a tcx egress link (BPF_LINK_CREATE, Linux 6.6+)", e))?;
        let sock =
            seed_socket(ifindex).map_err(|e| feature("an AF_PACKET socket with SO_MARK", e))?;
        Ok(Cloner {
            _link: link,
            prog,
            map,
            sock,
            ifindex,
            frame: frame.to_vec(),
            flows: flows.is_some(),
        })
    }

    pub(super) fn slot(&self) -> io::Result<Slot> {
        let mut s = Slot::default();
        map_lookup(self.map.as_fd(), &0u32, &mut s)?;
        Ok(s)
    }

    fn set_slot(&self, s: &Slot) -> io::Result<()> {
        map_update(self.map.as_fd(), &0u32, s)
    }

    /// Send `count` frames, `batch` (1 to [`MAX_BATCH`]) clones per seed; returns
    /// how many the interface accepted (the rest are counted as refused).
    pub(super) fn run(&self, count: u64, batch: u32) -> io::Result<u64> {
        let batch = u64::from(batch.clamp(1, MAX_BATCH));
        let start = self.slot()?;
        let mut per = start.per_seed;
        let mut asked = 0u64;
        while asked < count {
            let n = (count - asked).min(batch);
            if n != per {
                // The program runs only inside this thread's sends: nothing
                // else writes the slot between this read and the update.
                let mut s = self.slot()?;
                s.per_seed = n;
                self.set_slot(&s)?;
                per = n;
            }
            self.send_seed()?;
            asked += n;
        }
        let end = self.slot()?;
        if end.sent + end.refused == start.sent + start.refused && count > 0 {
            return Err(io::Error::other(
                "the clone program did not run on the seed frames (is another tcx program \
                 on the interface dropping them?)",
            ));
        }
        Ok(end.sent - start.sent)
    }

    /// One seed frame through the seed socket. The program drops the seed
    /// after cloning it, so the kernel answers ENOBUFS for it: that is success.
    /// The socket does not block: a full send buffer (EAGAIN) is tried again,
    /// a bounded number of times.
    fn send_seed(&self) -> io::Result<()> {
        let mut again = 0;
        loop {
            match self.send_once() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && again < 10_000 => {
                    again += 1;
                    std::thread::yield_now();
                }
                r => return r,
            }
        }
    }

    fn send_once(&self) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_ll is valid; the fields are set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ethertype(&self.frame).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&self.frame[..6]);
        // SAFETY: `frame` and `to` are live for the call, with their lengths.
        let r = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                self.frame.as_ptr() as *const libc::c_void,
                self.frame.len(),
                0,
                &to as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(()),
            _ => Err(e),
        }
    }

    pub(super) fn set_next_flow(&self, n: u64) -> io::Result<()> {
        if !self.flows {
            return Ok(());
        }
        let mut s = self.slot()?;
        s.next_flow = n;
        self.set_slot(&s)
    }

    pub(super) fn prog(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }
}

/// The frame's ethertype (0 for a frame shorter than an Ethernet header).
fn ethertype(frame: &[u8]) -> u16 {
    match frame {
        [_, _, _, _, _, _, _, _, _, _, _, _, a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// `e`, saying which kernel feature failed.
fn feature(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("the clone generator needs {what}: {e}"))
}

/// A raw `AF_PACKET` socket for sending only (it receives nothing) on
/// `ifindex`, whose frames carry [`SEED_MARK`].
fn seed_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let (sock, _) = packet_socket(ifindex, false, false)?;
    if !setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_MARK, SEED_MARK as i32) {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow_fields, udp4_frame};
    use std::net::Ipv4Addr;

    fn programs() -> Vec<Vec<Insn>> {
        let f = udp4_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            1,
            2,
            18,
        );
        vec![
            clone_program(3, 7, None).unwrap(),
            clone_program(3, 7, flow_fields(&f)).unwrap(),
        ]
    }

    /// Every jump lands inside the program, the one backward jump is the
    /// loop's, and the program ends in an exit.
    #[test]
    fn jumps_land_inside_and_one_loop() {
        for p in programs() {
            let mut back = 0;
            for (n, i) in p.iter().enumerate() {
                let class = i.code & 0x07;
                let jmp = class == op::JMP
                    && i.code != op::JMP | op::CALL
                    && i.code != op::JMP | op::EXIT;
                if jmp {
                    let t = n as i64 + 1 + i64::from(i.off);
                    assert!((0..p.len() as i64).contains(&t), "jump at {n} to {t}");
                    if t <= n as i64 {
                        assert_eq!(i.code, op::JMP | op::JA, "only the loop jumps back");
                        back += 1;
                    }
                }
            }
            assert_eq!(back, 1);
            assert_eq!(p.last().unwrap().code, op::JMP | op::EXIT);
            // The loop is bounded by a constant the verifier can see.
            assert!(
                p.iter()
                    .any(|i| i.code == op::JMP | op::JGE | op::K && i.imm == MAX_BATCH as i32)
            );
        }
    }

    #[test]
    fn slot_layout_matches_the_program() {
        assert_eq!(size_of::<Slot>(), 32);
        assert_eq!(
            std::mem::offset_of!(Slot, next_flow),
            slot::NEXT_FLOW as usize
        );
        assert_eq!(std::mem::offset_of!(Slot, sent), slot::SENT as usize);
        assert_eq!(std::mem::offset_of!(Slot, refused), slot::REFUSED as usize);
        assert_eq!(
            std::mem::offset_of!(Slot, per_seed),
            slot::PER_SEED as usize
        );
        assert_eq!(ethertype(&[0; 13]), 0);
        assert_eq!(
            ethertype(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 6]),
            0x0806
        );
    }
}
