//! The io_uring back end: a [`Port`] over AF_PACKET sockets, for interfaces
//! without XDP.
//!
//! Two raw packet sockets (`SOCK_RAW`) bound to one interface. The receiving one
//! takes every protocol (`ETH_P_ALL`), with `PACKET_IGNORE_OUTGOING` (it does not
//! see the interface's transmits, ours included) and `PACKET_VNET_HDR`: each
//! packet comes after a 10-byte `virtio_net_hdr`, which says when the sender left
//! the transport checksum to offload (a local stack behind veth does); the port
//! completes such checksums in software, so a forwarded packet never carries a
//! partial one. The sending socket is bound to protocol 0 (it receives nothing)
//! and asks for `PACKET_QDISC_BYPASS` (kept off if refused). Receive is one
//! multishot `recv` into a provided buffer ring; transmit is one `send` per frame,
//! all queued by [`Port::send`] and submitted by one `io_uring_enter` in
//! [`Port::flush`]. Nothing blocks: submissions never wait, completions are
//! peeked (with cooperative task running, `io_uring_enter` is called when the
//! kernel flags completions to post). SQPOLL is a constructor option.
//!
//! A received frame's [`Desc`] starts 10 bytes into its slot (the header's room).
//!
//! **Buffers are lent, not copied.** The provided buffer ring holds frames of the
//! core's [`Frames`]: the kernel writes each packet straight into a frame the core
//! then owns, so a received packet is never copied in user space (the kernel's own
//! copy out of the skb remains, as on every AF_PACKET path). The cost is
//! bookkeeping, kept exact: every buffer id maps to the frame lent under it
//! (`lent`), every send in flight to its frame (`tx`); a frame goes back to the
//! free list only when its completion says the kernel is done with it. The price
//! of lending is that the kernel holds addresses into the core's memory, so
//! [`UringPort::open`] is `unsafe`: the `Frames` must outlive the port. (A private
//! ring copied into frames would have been safe to build, at one memcpy per
//! packet; lending was chosen so that this port, like the AF_XDP one, delivers
//! into the core's memory with no copy of its own, and the unsafety is confined to
//! one documented contract at construction.)
//!
//! Multishot receive on AF_PACKET can end without an error (a completion without
//! `IORING_CQE_F_MORE`), and ends with `ENOBUFS` when the buffer ring runs dry; the
//! port re-arms it on the next [`Port::recv`] once it has buffers again, and counts
//! the re-arms. Packets longer than a frame (GRO/GSO on the interface) are dropped
//! and counted: the interface's offloads should be off.
//!
//! What it is not: it does not open queues (AF_PACKET sees the whole interface,
//! so one port per interface, polled by one core), does not read frames from other
//! interfaces, and does not use `PACKET_MMAP` rings.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, types};

use super::{Desc, FRAME_SIZE, Frames, Port, PortStats};
use crate::wire::checksum;

// From <linux/if_packet.h> (not all in the libc crate).
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// `struct virtio_net_hdr` (10 bytes) before each received packet; its first byte
/// holds the flags, `csum_start` and `csum_offset` are at bytes 6 and 8 (native
/// endian, as the kernel writes them for a packet socket).
const VNET_HDR: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;

/// `user_data` of the multishot receive; sends carry their `tx` slot index.
const RECV_TAG: u64 = u64::MAX;
/// The buffer group id of the provided buffer ring (one ring per io_uring).
const BGID: u16 = 0;
/// The socket receive buffer requested: room for bursts while the ring is dry.
const RCVBUF: libc::c_int = 4 << 20;

/// How a [`UringPort`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Frames lent to the kernel for receive (the provided buffer ring's size).
    /// Rounded up to a power of two, between 8 and 32 768.
    pub rx_buffers: u16,
    /// Sends in flight at most (frames queued or submitted, not yet completed).
    pub tx_slots: u32,
    /// Run a kernel submission thread (SQPOLL) with this idle time in
    /// milliseconds; `None` (the default): submit with `io_uring_enter`.
    pub sqpoll_idle_ms: Option<u32>,
    /// Ask for `PACKET_QDISC_BYPASS` (silently kept off if refused).
    pub qdisc_bypass: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            rx_buffers: 256,
            tx_slots: 256,
            sqpoll_idle_ms: None,
            qdisc_bypass: true,
        }
    }
}

/// Counters of this back end beyond [`PortStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// Times the multishot receive was armed (the first time included).
    pub arms: u64,
    /// Receive completions with an error (`ENOBUFS` included).
    pub rx_errors: u64,
    /// Receive completions that said the buffer ring was empty.
    pub rx_nobufs: u64,
    /// Packets longer than a frame, dropped.
    pub rx_truncated: u64,
    /// Received packets whose transport checksum the sender had left to offload
    /// (a local stack behind veth, say), completed by the port.
    pub rx_csum_completed: u64,
    /// Send completions with an error (the frame is freed all the same).
    pub tx_errors: u64,
    /// Whether `PACKET_QDISC_BYPASS` was accepted.
    pub qdisc_bypass: bool,
}

/// What [`UringPort::close`] could not give back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Frames returned to the free list (lent, received-not-taken, sent).
    pub returned: usize,
    /// Frames whose fate the kernel did not report in time; left off the free
    /// list (leaked rather than risk the kernel still using them).
    pub leaked: usize,
}

/// The provided buffer ring: `entries` `io_uring_buf` records in page-aligned
/// memory of our own, the tail in the first record's last field.
struct BufRing {
    map: memmap2::MmapMut,
    entries: u16,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        let bytes = usize::from(entries) * size_of::<types::BufRingEntry>();
        Ok(BufRing {
            map: memmap2::MmapMut::map_anon(bytes)?,
            entries,
            tail: 0,
        })
    }

    fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Write a buffer at the local tail (not yet visible to the kernel).
    fn push(&mut self, addr: u64, len: u32, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let base = self.map.as_mut_ptr().cast::<types::BufRingEntry>();
        // SAFETY: `idx < entries` and the mapping holds `entries` records, suitably
        // aligned (page-aligned start, 16-byte records). The kernel reads only the
        // records between its head and the published tail, and this one is past
        // the published tail, so no one else reads it now.
        let e = unsafe { &mut *base.add(idx) };
        // The tail lives in the first record's last field: write the other
        // fields only, so that setting record 0 does not clobber the tail.
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every pushed buffer visible to the kernel.
    fn publish(&mut self) {
        let base = self.map.as_ptr().cast::<types::BufRingEntry>();
        // SAFETY: `base` is the first record of the registered ring; `tail` gives
        // the address of its tail field, a u16 inside our mapping, 2-byte aligned.
        // The kernel reads it concurrently, hence the atomic release store, which
        // orders the record writes above before it.
        unsafe {
            let tail = types::BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }
}

/// An io_uring-driven AF_PACKET port on one interface. See the module doc.
pub struct UringPort {
    ring: IoUring,
    sock: OwnedFd,
    tx_sock: OwnedFd,
    ifindex: u32,
    /// The `Frames` this port lends from: its base address and length.
    base: usize,
    frames_len: usize,
    bufs: BufRing,
    /// Frame lent under each buffer id; `None` when the id is free.
    lent: Vec<Option<Desc>>,
    free_bids: Vec<u16>,
    /// Received frames not yet handed to the core (at most `rx_buffers`).
    ready: VecDeque<Desc>,
    armed: bool,
    /// Frame of each send in flight, by slot; `None` when the slot is free.
    tx: Vec<Option<Desc>>,
    free_tx: Vec<u32>,
    stats: PortStats,
    extra: UringStats,
    /// Kernel drops read from PACKET_STATISTICS (which resets on read).
    kernel_drops: std::cell::Cell<u64>,
}

impl std::fmt::Debug for UringPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringPort")
            .field("ifindex", &self.ifindex)
            .field("armed", &self.armed)
            .field("lent", &self.lent_count())
            .field("tx_in_flight", &(self.tx.len() - self.free_tx.len()))
            .field("stats", &self.stats)
            .field("extra", &self.extra)
            .finish()
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `setsockopt` of one `int` option: whether the kernel accepted it.
pub fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: `v` is a live c_int and its size is passed; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Open an AF_PACKET raw socket bound to `ifindex`. A receiving socket takes
/// every protocol, not its own transmits, and prefixes each packet with a
/// `virtio_net_hdr`; a sending socket is bound to protocol 0 and so receives
/// nothing (the traffic generator's seed socket is one). Returns whether
/// `PACKET_QDISC_BYPASS` was accepted.
pub fn packet_socket(ifindex: u32, rx: bool, qdisc_bypass: bool) -> io::Result<(OwnedFd, bool)> {
    // Protocol 0 at creation: the socket receives nothing until bound, so no frame
    // of another interface slips in between socket() and bind().
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut bypass = false;
    if rx {
        for opt in [PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR] {
            if !setsockopt_int(&sock, libc::SOL_PACKET, opt, 1) {
                return Err(io::Error::last_os_error());
            }
        }
        if !setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF) {
            let _ = setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
    } else {
        bypass = qdisc_bypass && setsockopt_int(&sock, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = if rx {
        (libc::ETH_P_ALL as u16).to_be()
    } else {
        0
    };
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    cvt(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok((sock, bypass))
}

/// Complete a checksum the sender left to offload (`VIRTIO_NET_HDR_F_NEEDS_CSUM`):
/// the field at `start + offset` holds the pseudo-header sum; the one's complement
/// sum from `start` to the end, folded and inverted, goes there. Returns false
/// when the offsets do not fit the packet (the packet is then left as it is).
fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset) else {
        return false;
    };
    if field + 2 > pkt.len() {
        return false;
    }
    let sum = checksum::fold(checksum::sum(0, &pkt[start..]));
    // 0 and 0xffff are the same in one's complement; UDP reserves 0 for "none".
    let c = match !sum {
        0 => 0xffff,
        c => c,
    };
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string alive for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

impl UringPort {
    /// Open a port on interface `name` (in the calling thread's network
    /// namespace), lend `cfg.rx_buffers` frames of `frames` to the kernel and arm
    /// the receive.
    ///
    /// # Safety
    ///
    /// `frames` must stay alive (its mapping in place) until this port is dropped
    /// or [closed](UringPort::close): the kernel writes received packets into the
    /// frames lent to it. Every later call must pass the same `Frames` (this is
    /// checked: a call with another one does nothing).
    pub unsafe fn open(name: &str, frames: &mut Frames, cfg: UringConfig) -> io::Result<UringPort> {
        let ifindex = ifindex(name)?;
        let entries = cfg.rx_buffers.clamp(8, 1 << 15).next_power_of_two();
        let tx_slots = cfg.tx_slots.clamp(1, 1 << 15);
        let (sock, _) = packet_socket(ifindex, true, false)?;
        let (tx_sock, bypass) = packet_socket(ifindex, false, cfg.qdisc_bypass)?;
        let sq = (tx_slots + 8).next_power_of_two();
        let cq = (2 * (u32::from(entries) + tx_slots) + 16).next_power_of_two();
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        match cfg.sqpoll_idle_ms {
            Some(ms) => {
                b.setup_sqpoll(ms);
            }
            None => {
                // Completions are posted when we enter the kernel (no interrupting
                // task work); the TASKRUN flag tells us when that is needed.
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
        }
        let ring = b.build(sq)?;
        let bufs = BufRing::new(entries)?;
        // SAFETY: the ring memory is ours, page-aligned, `entries` records long, and
        // lives in `self.bufs` until Drop unregisters it (Drop unregisters before
        // the field is dropped).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.addr(), entries, BGID, 0)?;
        }
        let mut port = UringPort {
            ring,
            sock,
            tx_sock,
            ifindex,
            base: frames.base() as usize,
            frames_len: frames.len_bytes(),
            bufs,
            lent: vec![None; usize::from(entries)],
            free_bids: (0..entries).rev().collect(),
            ready: VecDeque::with_capacity(usize::from(entries)),
            armed: false,
            tx: vec![None; tx_slots as usize],
            free_tx: (0..tx_slots).rev().collect(),
            stats: PortStats::default(),
            extra: UringStats {
                qdisc_bypass: bypass,
                ..UringStats::default()
            },
            kernel_drops: std::cell::Cell::new(0),
        };
        port.refill(frames);
        port.arm();
        port.ring.submit()?;
        Ok(port)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// This back end's own counters.
    pub fn uring_stats(&self) -> UringStats {
        self.extra
    }

    /// Frames lent to the kernel for receive now.
    pub fn lent_count(&self) -> usize {
        self.lent.len() - self.free_bids.len()
    }

    /// Sends queued or in flight now.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.len() - self.free_tx.len()
    }

    fn same_frames(&self, frames: &mut Frames) -> bool {
        frames.base() as usize == self.base && frames.len_bytes() == self.frames_len
    }

    /// Lend free frames to the kernel until every buffer id is in use (or the free
    /// list is empty).
    fn refill(&mut self, frames: &mut Frames) {
        let mut pushed = false;
        while let Some(&bid) = self.free_bids.last() {
            let Some(d) = frames.alloc() else { break };
            self.free_bids.pop();
            let room = FRAME_SIZE as u64 - d.addr % FRAME_SIZE as u64;
            self.bufs.push(self.base as u64 + d.addr, room as u32, bid);
            self.lent[usize::from(bid)] = Some(d);
            pushed = true;
        }
        if pushed {
            self.bufs.publish();
        }
    }

    /// Queue the multishot receive if it is not running and has buffers.
    fn arm(&mut self) {
        if self.armed || self.lent_count() == 0 {
            return;
        }
        let e = opcode::RecvMulti::new(types::Fd(self.sock.as_raw_fd()), BGID)
            .flags(libc::MSG_TRUNC)
            .build()
            .user_data(RECV_TAG);
        // SAFETY: the receive writes only into provided buffers (frames lent under
        // the contract of `open`); the socket lives as long as the ring.
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            self.armed = true;
            self.extra.arms += 1;
        }
    }

    /// Enter the kernel if something waits: submissions, or (cooperative task
    /// running) completions to be posted.
    fn kick(&mut self) {
        let mut sq = self.ring.submission();
        sq.sync();
        let needed = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
        drop(sq);
        if needed {
            // EBUSY / EAGAIN: the completion queue is full or the kernel is short
            // of memory; reaping below makes room, the next call retries.
            let _ = self.ring.submit();
        }
    }

    /// Take every completion: received frames to `ready`, sent frames back to the
    /// free list.
    fn reap(&mut self, frames: &mut Frames) {
        let cq = self.ring.completion();
        for cqe in cq {
            let res = cqe.result();
            let flags = cqe.flags();
            if cqe.user_data() == RECV_TAG {
                if !cqueue::more(flags) {
                    self.armed = false;
                }
                let taken = cqueue::buffer_select(flags)
                    .and_then(|bid| Some((bid, self.lent.get_mut(usize::from(bid))?.take()?)));
                if let Some((bid, _)) = taken {
                    self.free_bids.push(bid);
                }
                match (res, taken) {
                    (n, Some((_, d))) if n >= 0 => {
                        let room = FRAME_SIZE as u64 - d.addr % FRAME_SIZE as u64;
                        if n as u64 > room || (n as usize) < VNET_HDR {
                            self.extra.rx_truncated += 1;
                            self.stats.rx_dropped += 1;
                            frames.free(d);
                        } else {
                            let d = Desc {
                                addr: d.addr + VNET_HDR as u64,
                                len: n as u32 - VNET_HDR as u32,
                            };
                            let h = d.addr as usize - VNET_HDR;
                            let mem = frames.slot_mut(Desc {
                                addr: h as u64,
                                len: 0,
                            });
                            let flags = mem[0];
                            let start = usize::from(u16::from_ne_bytes([mem[6], mem[7]]));
                            let offset = usize::from(u16::from_ne_bytes([mem[8], mem[9]]));
                            if flags & VNET_F_NEEDS_CSUM != 0 {
                                self.extra.rx_csum_completed += 1;
                                complete_checksum(frames.packet_mut(d), start, offset);
                            }
                            self.stats.rx_packets += 1;
                            self.stats.rx_bytes += u64::from(d.len);
                            self.ready.push_back(d);
                        }
                    }
                    (n, taken) => {
                        if let Some((_, d)) = taken {
                            frames.free(d);
                        }
                        if n < 0 {
                            self.extra.rx_errors += 1;
                            if -n == libc::ENOBUFS {
                                self.extra.rx_nobufs += 1;
                            }
                        }
                    }
                }
            } else if let Some(d) = self
                .tx
                .get_mut(cqe.user_data() as usize)
                .and_then(Option::take)
            {
                self.free_tx.push(cqe.user_data() as u32);
                if res >= 0 {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += u64::from(d.len);
                } else {
                    self.extra.tx_errors += 1;
                }
                frames.free(d);
            }
        }
    }

    /// Read and reset the kernel's drop counter (PACKET_STATISTICS).
    fn read_kernel_drops(&self) {
        let mut st = [0u32; 2];
        let mut len = size_of_val(&st) as libc::socklen_t;
        // SAFETY: `st` is a live tpacket_stats-sized buffer and `len` its size.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st[1]));
        }
    }

    /// Stop the port and give every frame it holds back to `frames`: cancel the
    /// receive and the sends, take the last completions, withdraw the buffer ring.
    pub fn close(mut self, frames: &mut Frames) -> CloseReport {
        if !self.same_frames(frames) {
            return CloseReport {
                returned: 0,
                leaked: self.lent_count() + self.ready.len() + self.tx_in_flight(),
            };
        }
        let mut report = CloseReport::default();
        for d in self.ready.drain(..) {
            frames.free(d);
            report.returned += 1;
        }
        // Submit what is queued, so the cancellation below sees it.
        let _ = self.ring.submit();
        let cancelled = self.cancel_all();
        let before = frames.free_count();
        self.reap(frames);
        for d in self.ready.drain(..) {
            frames.free(d);
        }
        // Sends not cancelled complete on their own: wait for them, briefly.
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while self.tx_in_flight() > 0 && std::time::Instant::now() < deadline {
            let _ = self.ring.submit_and_wait(1);
            self.reap(frames);
        }
        report.returned += frames.free_count() - before;
        let withdrawn = self.ring.submitter().unregister_buf_ring(BGID).is_ok();
        if cancelled && withdrawn {
            for d in self.lent.iter_mut().filter_map(Option::take) {
                frames.free(d);
                report.returned += 1;
            }
        }
        report.leaked = self.lent.iter().flatten().count() + self.tx_in_flight();
        // Nothing is lent any more (or it is leaked for good).
        self.lent.iter_mut().for_each(|l| *l = None);
        self.tx.iter_mut().for_each(|l| *l = None);
        report
    }

    /// Cancel every request and wait (bounded) until they are gone.
    fn cancel_all(&self) -> bool {
        let r = self.ring.submitter().register_sync_cancel(
            Some(Duration::from_millis(500).into()),
            types::CancelBuilder::any(),
        );
        match r {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::ENOENT),
        }
    }
}

impl Port for UringPort {
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize {
        if !self.same_frames(frames) {
            return 0;
        }
        if self.ready.len() < out.len() {
            if !self.armed {
                self.read_kernel_drops();
            }
            self.refill(frames);
            self.arm();
            self.kick();
            self.reap(frames);
            self.refill(frames);
        }
        let n = out.len().min(self.ready.len());
        for (slot, d) in out.iter_mut().zip(self.ready.drain(..n)) {
            *slot = d;
        }
        n
    }

    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize {
        if !self.same_frames(frames) {
            return 0;
        }
        let mut taken = 0;
        for &d in descs {
            let Some(&slot) = self.free_tx.last() else {
                break;
            };
            let room = FRAME_SIZE as u64 - d.addr % FRAME_SIZE as u64;
            let in_map = (d.addr as usize) < self.frames_len;
            if !in_map || u64::from(d.len) > room {
                // A descriptor that names no packet: taken and freed (ignored by
                // `free` when outside the mapping), counted as a send error.
                frames.free(d);
                self.extra.tx_errors += 1;
                taken += 1;
                continue;
            }
            let e = opcode::Send::new(
                types::Fd(self.tx_sock.as_raw_fd()),
                (self.base + d.addr as usize) as *const u8,
                d.len,
            )
            .build()
            .user_data(u64::from(slot));
            // SAFETY: the send reads `d.len` bytes of frame `d`, inside the mapping
            // (checked above), which the port owns until the completion arrives
            // (recorded in `tx` below) and which outlives the port (`open`).
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                break;
            }
            self.free_tx.pop();
            self.tx[slot as usize] = Some(d);
            taken += 1;
        }
        self.stats.tx_full += (descs.len() - taken) as u64;
        taken
    }

    fn flush(&mut self, frames: &mut Frames) {
        if !self.same_frames(frames) {
            return;
        }
        self.kick();
        self.reap(frames);
        // Frames just freed by sends go straight back to the receive ring.
        self.refill(frames);
    }

    fn stats(&self) -> PortStats {
        self.read_kernel_drops();
        let mut s = self.stats;
        s.rx_dropped += self.kernel_drops.get();
        s
    }
}

impl Drop for UringPort {
    fn drop(&mut self) {
        // Stop the kernel from writing into lent frames before the buffer ring's
        // memory and the ring go: cancel every request, then withdraw the ring.
        // Frames still lent are lost to their `Frames` (use `close` to get them back).
        if self.lent.iter().any(Option::is_some) || self.armed {
            let _ = self.cancel_all();
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

#[cfg(test)]
mod tests {
    use super::complete_checksum;
    use crate::wire::testutil::folded_sum;

    #[test]
    fn completes_an_offloaded_udp_checksum() {
        // IPv4 198.18.0.2 -> 198.18.0.1, UDP 9001 -> 9000, 5 bytes of payload (odd).
        let mut pkt = vec![0u8; 14 + 20];
        pkt[26..30].copy_from_slice(&[198, 18, 0, 2]);
        pkt[30..34].copy_from_slice(&[198, 18, 0, 1]);
        let udp_len = 8 + 5u16;
        pkt.extend_from_slice(&9001u16.to_be_bytes());
        pkt.extend_from_slice(&9000u16.to_be_bytes());
        pkt.extend_from_slice(&udp_len.to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(b"hello");
        // The pseudo-header sum, as a sender with checksum offload leaves it.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&pkt[26..34]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let ph = folded_sum(&pseudo);
        pkt[40..42].copy_from_slice(&ph.to_be_bytes());
        assert!(complete_checksum(&mut pkt, 34, 6));
        // Verify independently: pseudo-header + segment (with the checksum) sums
        // to 0xffff.
        let mut all = pseudo.clone();
        all.extend_from_slice(&pkt[34..]);
        assert_eq!(folded_sum(&all), 0xffff);
        assert_ne!(&pkt[40..42], &[0, 0]);
    }

    #[test]
    fn refuses_offsets_outside_the_packet() {
        let mut pkt = vec![0xabu8; 40];
        let before = pkt.clone();
        assert!(!complete_checksum(&mut pkt, 39, 0));
        assert!(!complete_checksum(&mut pkt, 30, 20));
        assert!(!complete_checksum(&mut pkt, usize::MAX, 2));
        assert_eq!(pkt, before);
    }
}
