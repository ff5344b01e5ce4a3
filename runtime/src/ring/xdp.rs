//! AF_XDP ports: one socket per (interface, receive queue), its rings mapped into
//! the process, the core's [`Frames`] registered as the UMEM.
//!
//! The first port of a core registers the UMEM; the core's later ports (other
//! interfaces or queues) bind with `XDP_SHARED_UMEM` and their own fill and
//! completion rings (supported since Linux 5.10), so a frame received on one
//! interface is transmitted on another without a copy. Zero-copy is tried first
//! when asked for and copy mode taken when the driver refuses it (veth does);
//! `XDP_USE_NEED_WAKEUP` is always asked for; busy polling is requested and
//! silently left off where the kernel refuses it.
//!
//! Ownership of a frame lent to a port, exactly: `recv` keeps `fill_target`
//! frames lent for receiving (fill ring, inside the kernel, or on the RX ring),
//! takes RX descriptors out to the core and tops the fill ring up from the free
//! list; `send` puts the core's frames on the TX ring; `flush` kicks the kernel and
//! returns completed frames to the free list. [`XdpPort::lent`] counts what the
//! port holds, so `free + lent + held by the core == count` at all times.
//! Frames a port holds when it is dropped are not returned (the kernel may still
//! own them); a core dropping ports for good drops its `Frames` with them.
//!
//! This module does not steer frames into the socket: that is the XDP program of
//! [`super::bpf`], whose map takes [`XdpPort`]'s descriptor.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Desc, FRAME_SIZE, Frames, Port, PortStats};

const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17): frames one copy-mode `sendto` may send.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// How to open an [`XdpPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpOptions {
    /// The interface (see [`super::bpf::ifindex`]).
    pub ifindex: u32,
    /// The receive queue.
    pub queue: u32,
    /// RX ring entries (a power of two).
    pub rx_size: u32,
    /// TX ring entries (a power of two).
    pub tx_size: u32,
    /// Fill ring entries (a power of two, at least twice `fill_target`).
    pub fill_size: u32,
    /// Completion ring entries (a power of two, at least twice `tx_size`).
    pub comp_size: u32,
    /// Frames kept lent to the kernel for receiving.
    pub fill_target: u32,
    /// Try zero-copy before copy mode.
    pub zero_copy: bool,
    /// Ask for busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`).
    pub busy_poll: bool,
}

impl XdpOptions {
    /// Defaults: an RX ring of 16 384 with as many frames lent for receiving
    /// (fill ring 32 768), a TX ring of 2 048 (completion 4 096), zero-copy
    /// tried, busy polling asked for.
    ///
    /// The deep receive side absorbs bursts: traffic reaches a port in bursts of
    /// milliseconds (a sender's time slice, a softirq round) at rates well above
    /// what one core forwards on average; with 2 048 frames lent, a burst of 1.4
    /// ms at 1.4 Mpps overflowed it and most frames were dropped by the kernel
    /// ("fill ring empty") while the core idled between bursts.
    /// `benches/dataplane.sh`, one flow counted where it leaves the appliance:
    /// 318 000 pps with 2 048, 670 000 with 8 192, 790 000 with 16 384.
    pub fn new(ifindex: u32, queue: u32) -> XdpOptions {
        XdpOptions::with_rx_depth(ifindex, queue, XdpOptions::RX_DEPTH)
    }

    /// The default receive depth: RX ring entries and frames lent for receiving.
    pub const RX_DEPTH: u32 = 16384;

    /// The defaults of [`XdpOptions::new`], receiving `depth` deep (RX ring and
    /// frames lent; the fill ring twice that).
    pub fn with_rx_depth(ifindex: u32, queue: u32, depth: u32) -> XdpOptions {
        XdpOptions {
            ifindex,
            queue,
            rx_size: depth,
            tx_size: 2048,
            fill_size: depth.saturating_mul(2),
            comp_size: 4096,
            fill_target: depth,
            zero_copy: true,
            busy_poll: true,
        }
    }

    fn check(&self) -> io::Result<()> {
        let sizes = [self.rx_size, self.tx_size, self.fill_size, self.comp_size];
        if sizes.iter().any(|s| !s.is_power_of_two())
            || self.fill_target == 0
            || self.fill_target > self.fill_size / 2
            || self.tx_size > self.comp_size / 2
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP ring sizes must be powers of two, fill ring at least twice the \
                 frames lent to it, completion ring at least twice the TX ring",
            ));
        }
        Ok(())
    }
}

/// A shared mapping of one ring, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to
        // the mapping after its ring is dropped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// One of the four rings: producer and consumer indices shared with the kernel,
/// and the entries, as the kernel's ring offsets place them in the mapping.
#[derive(Debug)]
struct Ring<T: Copy> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    size: u32,
    /// Our view of the index we do not own, refreshed when it runs short.
    cached_prod: u32,
    cached_cons: u32,
    _map: Mapping,
}

impl<T: Copy> Ring<T> {
    /// Map the ring of `size` entries at page offset `pgoff` of socket `fd`.
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel checks
        // the offset and the length against the ring it created.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping {
            ptr: ptr as *mut u8,
            len,
        };
        let at = |o: u64| map.ptr.wrapping_add(o as usize);
        let producer = at(off.producer) as *const AtomicU32;
        let consumer = at(off.consumer) as *const AtomicU32;
        let mut r = Ring {
            producer,
            consumer,
            flags: at(off.flags) as *const AtomicU32,
            entries: at(off.desc) as *mut T,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
        };
        r.cached_prod = r.prod().load(Ordering::Acquire);
        r.cached_cons = r.cons().load(Ordering::Acquire);
        Ok(r)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: `producer` points at an aligned u32 inside the live mapping
        // (offset given by the kernel); the kernel accesses it atomically too.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `prod`; the flags word is a u32 in the mapping.
        let f = unsafe { &*self.flags };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        self.entries
            .wrapping_add((index & (self.size - 1)) as usize)
    }

    // Producer side (fill, TX).

    /// Free entries, up to `want` (refreshing the consumer index if short).
    fn free(&mut self, want: u32) -> u32 {
        let mut free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.cons().load(Ordering::Acquire);
            free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Write entry `i` past the producer index (`i` below what `free` gave).
    fn put(&mut self, i: u32, v: T) {
        let p = self.slot(self.cached_prod.wrapping_add(i));
        // SAFETY: `p` is an entry inside the mapping; entries between the producer
        // and the consumer's wrap are ours to write until `submit` publishes them.
        unsafe { p.write_volatile(v) };
    }

    /// Publish `n` written entries.
    fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    /// Entries published and not yet consumed by the kernel.
    fn unconsumed(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    // Consumer side (RX, completion).

    /// Entries ready, up to `max`.
    fn ready(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n < max {
            self.cached_prod = self.prod().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max).min(self.size)
    }

    /// Entry `i` past the consumer index (`i` below what `ready` gave).
    fn get(&self, i: u32) -> T {
        let p = self.slot(self.cached_cons.wrapping_add(i));
        // SAFETY: `p` is an entry inside the mapping that the kernel published
        // (its producer store was observed with Acquire) and will not rewrite
        // before `release` hands it back.
        unsafe { p.read_volatile() }
    }

    /// Hand `n` read entries back to the kernel.
    fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.cons().store(self.cached_cons, Ordering::Release);
    }
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` is a live value of `size_of::<T>()` bytes for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An AF_XDP socket bound to one receive queue of one interface; a [`Port`].
#[derive(Debug)]
pub struct XdpPort {
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    fd: OwnedFd,
    umem_base: usize,
    umem_len: usize,
    fill_target: u32,
    /// Frames lent for receiving: put on the fill ring, not yet received.
    lent_rx: u32,
    /// Frames put on the TX ring, not yet completed.
    lent_tx: u32,
    zero_copy: bool,
    busy_poll: bool,
    tx_invalid: u64,
    stats: PortStats,
}

// SAFETY: the raw pointers point into mappings the port owns (unmapped only when
// it drops); the only other party touching them is the kernel, through the
// atomic ring protocol. Nothing is tied to the thread that made the port.
unsafe impl Send for XdpPort {}

impl XdpPort {
    /// Open a port on `opts.ifindex`, queue `opts.queue`, with `frames` as its
    /// UMEM. `share`: another port of the same core (same `frames`) whose UMEM
    /// this one shares; `None` for the core's first port, which registers it.
    /// The port lends itself `fill_target` frames from `frames` at once.
    pub fn open(
        frames: &mut Frames,
        opts: &XdpOptions,
        share: Option<&XdpPort>,
    ) -> io::Result<XdpPort> {
        opts.check()?;
        if let Some(s) = share {
            if s.umem_base != frames.base() as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a shared AF_XDP port must use the same Frames",
                ));
            }
            // Bind flags of a shared socket are the first socket's; none may be given.
            return Self::open_with(frames, opts, Some(s), libc::XDP_SHARED_UMEM);
        }
        let copy = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        if opts.zero_copy {
            let zc = libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP;
            if let Ok(p) = Self::open_with(frames, opts, None, zc) {
                return Ok(p);
            }
        }
        Self::open_with(frames, opts, None, copy)
    }

    fn open_with(
        frames: &mut Frames,
        opts: &XdpOptions,
        share: Option<&XdpPort>,
        bind_flags: u16,
    ) -> io::Result<XdpPort> {
        if frames.free_count() < opts.fill_target as usize {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "not enough free frames to fill an AF_XDP receive queue",
            ));
        }
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just created and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_base = frames.base() as usize;
        let umem_len = frames.len_bytes();
        if share.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem_base as u64,
                len: umem_len as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(fd.as_fd(), libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
        }
        let sol = libc::SOL_XDP;
        setsockopt(fd.as_fd(), sol, libc::XDP_UMEM_FILL_RING, &opts.fill_size)?;
        setsockopt(
            fd.as_fd(),
            sol,
            libc::XDP_UMEM_COMPLETION_RING,
            &opts.comp_size,
        )?;
        setsockopt(fd.as_fd(), sol, libc::XDP_RX_RING, &opts.rx_size)?;
        setsockopt(fd.as_fd(), sol, libc::XDP_TX_RING, &opts.tx_size)?;

        // SAFETY: an all-zero xdp_mmap_offsets is a valid value to be overwritten.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `optlen` are live and writable; the kernel writes at
        // most `optlen` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                sol,
                libc::XDP_MMAP_OFFSETS,
                &mut off as *mut libc::xdp_mmap_offsets as *mut libc::c_void,
                &mut optlen,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if optlen as usize != size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other("AF_XDP without ring flags (Linux < 5.4)"));
        }
        let rx = Ring::map(
            fd.as_fd(),
            &off.rx,
            opts.rx_size,
            libc::XDP_PGOFF_RX_RING as u64,
        )?;
        let tx = Ring::map(
            fd.as_fd(),
            &off.tx,
            opts.tx_size,
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let fill = Ring::map(
            fd.as_fd(),
            &off.fr,
            opts.fill_size,
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )?;
        let comp = Ring::map(
            fd.as_fd(),
            &off.cr,
            opts.comp_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;

        let mut busy_poll = false;
        if opts.busy_poll {
            let one: libc::c_int = 1;
            let usecs: libc::c_int = 20;
            let budget: libc::c_int = 64;
            busy_poll = setsockopt(fd.as_fd(), libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, &one).is_ok()
                && setsockopt(fd.as_fd(), libc::SOL_SOCKET, SO_BUSY_POLL, &usecs).is_ok()
                && setsockopt(fd.as_fd(), libc::SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget).is_ok();
        }
        // Let one copy-mode kick send a whole TX ring where the kernel allows it
        // (else it sends 32 and `flush` kicks again).
        let _ = setsockopt(fd.as_fd(), sol, XDP_MAX_TX_SKB_BUDGET, &opts.tx_size);

        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: bind_flags,
            sxdp_ifindex: opts.ifindex,
            sxdp_queue_id: opts.queue,
            sxdp_shared_umem_fd: share.map_or(0, |s| s.fd.as_raw_fd() as u32),
        };
        // SAFETY: `sa` is a live sockaddr_xdp of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_xdp as *const libc::sockaddr,
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let zero_copy = match share {
            Some(s) => s.zero_copy,
            None => bind_flags & libc::XDP_ZEROCOPY != 0,
        };
        let mut port = XdpPort {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem_base,
            umem_len,
            fill_target: opts.fill_target,
            lent_rx: 0,
            lent_tx: 0,
            zero_copy,
            busy_poll,
            tx_invalid: 0,
            stats: PortStats::default(),
        };
        port.refill(frames);
        Ok(port)
    }

    /// Whether the socket runs in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether the kernel took the busy-polling options.
    pub fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    /// Frames the port holds now (lent for receiving, or queued for transmission
    /// and not yet completed).
    pub fn lent(&self) -> usize {
        (self.lent_rx + self.lent_tx) as usize
    }

    /// Descriptors `send` took but could not transmit (outside the UMEM, empty,
    /// or crossing a frame's end); their frames went back to the free list.
    pub fn tx_invalid(&self) -> u64 {
        self.tx_invalid
    }

    fn same_umem(&self, frames: &mut Frames) -> bool {
        frames.base() as usize == self.umem_base && frames.len_bytes() == self.umem_len
    }

    /// Top the fill ring up to `fill_target` lent frames from the free list.
    fn refill(&mut self, frames: &mut Frames) {
        let want = self.fill_target.saturating_sub(self.lent_rx);
        if want == 0 {
            return;
        }
        let n = self.fill.free(want).min(frames.free_count() as u32);
        let mut put = 0;
        while put < n {
            let Some(d) = frames.alloc() else { break };
            self.fill.put(put, d.addr);
            put += 1;
        }
        self.fill.submit(put);
        self.lent_rx += put;
    }

    /// A receive syscall: wakes the kernel's receive side, or runs a busy poll.
    fn kick_rx(&self) {
        // SAFETY: a zero-length, non-blocking receive with no buffer and no
        // address; the kernel writes nothing.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// A send syscall: has the kernel transmit what is on the TX ring. Returns
    /// false when the kernel said to stop (device busy, no buffers, down).
    fn kick_tx(&self) -> bool {
        // SAFETY: a zero-length, non-blocking send with no buffer and no address.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        r >= 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
    }

    fn reap_completions(&mut self, frames: &mut Frames) {
        let n = self.comp.ready(self.comp.size);
        for i in 0..n {
            let addr = self.comp.get(i);
            frames.free(Desc { addr, len: 0 });
        }
        self.comp.release(n);
        self.lent_tx = self.lent_tx.saturating_sub(n);
    }
}

impl AsFd for XdpPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Port for XdpPort {
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize {
        if !self.same_umem(frames) {
            return 0;
        }
        let n = self.rx.ready(out.len().min(u32::MAX as usize) as u32);
        for (i, o) in out.iter_mut().take(n as usize).enumerate() {
            let d = self.rx.get(i as u32);
            *o = Desc {
                addr: d.addr,
                len: d.len,
            };
            self.stats.rx_bytes += u64::from(d.len);
        }
        self.rx.release(n);
        self.stats.rx_packets += u64::from(n);
        self.lent_rx = self.lent_rx.saturating_sub(n);
        self.refill(frames);
        // A busy poll runs only in zero-copy mode: Linux (6.18) marks no NAPI
        // on a copy-mode socket, so the syscall would do nothing there.
        if self.fill.needs_wakeup() || (self.busy_poll && self.zero_copy && n == 0) {
            self.kick_rx();
        }
        n as usize
    }

    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize {
        if !self.same_umem(frames) {
            return 0;
        }
        let want = descs.len().min(u32::MAX as usize) as u32;
        let n = self.tx.free(want);
        let mut put = 0;
        for &d in &descs[..n as usize] {
            let in_frame = (d.addr % FRAME_SIZE as u64) + u64::from(d.len);
            if d.len == 0 || d.slot() as usize >= frames.count() || in_frame > FRAME_SIZE as u64 {
                // The kernel would skip it without completing it: the frame
                // would be lost. Take it and free it here instead.
                self.tx_invalid += 1;
                frames.free(d);
                continue;
            }
            self.tx.put(
                put,
                libc::xdp_desc {
                    addr: d.addr,
                    len: d.len,
                    options: 0,
                },
            );
            put += 1;
            self.stats.tx_bytes += u64::from(d.len);
        }
        self.tx.submit(put);
        self.lent_tx += put;
        self.stats.tx_packets += u64::from(put);
        self.stats.tx_full += u64::from(want - n);
        n as usize
    }

    fn flush(&mut self, frames: &mut Frames) {
        if !self.same_umem(frames) {
            return;
        }
        // Copy mode sends a bounded batch per kick (EAGAIN: more to do), so kick
        // until the ring is drained, the kernel pushes back, or the bound is hit.
        let max_kicks = self.tx.size / 32 + 2;
        for _ in 0..max_kicks {
            if self.tx.unconsumed() == 0 {
                break;
            }
            if !self.zero_copy || self.tx.needs_wakeup() {
                if !self.kick_tx() {
                    break;
                }
            } else {
                break;
            }
            self.reap_completions(frames);
        }
        self.reap_completions(frames);
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        // SAFETY: an all-zero xdp_statistics is valid; the kernel overwrites it.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live and writable for the call.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                &mut st as *mut libc::xdp_statistics as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            s.rx_dropped = st.rx_dropped + st.rx_ring_full;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let ok = XdpOptions::new(1, 0);
        assert!(ok.check().is_ok());
        let mut bad = ok.clone();
        bad.rx_size = 1000;
        assert!(bad.check().is_err());
        let mut bad = ok.clone();
        bad.fill_target = bad.fill_size;
        assert!(
            bad.check().is_err(),
            "fill ring must be twice the frames lent"
        );
        let mut bad = ok;
        bad.comp_size = bad.tx_size;
        assert!(bad.check().is_err());
    }

    #[test]
    fn open_on_a_missing_interface_fails_cleanly() {
        let mut frames = Frames::new(64).unwrap();
        let mut o = XdpOptions::new(u32::MAX - 7, 0);
        o.fill_target = 16;
        let free = frames.free_count();
        assert!(XdpPort::open(&mut frames, &o, None).is_err());
        assert_eq!(frames.free_count(), free, "no frame lent on failure");
    }
}
