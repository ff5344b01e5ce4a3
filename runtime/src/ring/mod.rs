//! NIC rings: the frame memory a switching core owns, and the [`Port`] trait that
//! moves frames between that memory and an interface.
//!
//! Ownership (as in the buffer-descriptor lists this design comes from): a frame
//! is a fixed-size slot of a core's [`Frames`], named by a [`Desc`]. Exactly one
//! party owns a frame at any time: the free list, a port (lent to the kernel or
//! the device: fill ring, transmit ring, in flight), or the core. `Port::recv`
//! hands frames to the core; `Port::send` takes them back (the port returns them
//! to the free list once the device is done with them); a core that drops a packet
//! returns its frame with [`Frames::free`]. A `Desc` is plain data: nothing stops
//! code from copying one, so the rule is kept by the core's loop, and checked by
//! [`Frames`] in debug builds (a double free panics there).
//!
//! All the ports of one core share that core's `Frames`, so a frame received on one
//! interface can be transmitted on any other without a copy (AF_XDP: one UMEM
//! shared by the core's sockets).

pub mod bpf;
pub mod fastbal;
pub mod fastpath;
pub mod mem;
pub mod tap;
pub mod uring;
pub mod xdp;

/// The size of one frame slot. A power of two, at least the largest frame lbp
/// handles (1 514 bytes plus VLAN tags), as AF_XDP's UMEM chunk size must be.
pub const FRAME_SIZE: usize = 2048;

/// A frame: its offset in the core's [`Frames`] and the length of the packet in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Byte offset of the frame's first byte from the start of the frame memory.
    /// Always a multiple of [`FRAME_SIZE`] plus a headroom below `FRAME_SIZE`.
    pub addr: u64,
    /// Packet length in bytes (at most `FRAME_SIZE` minus the headroom).
    pub len: u32,
}

impl Desc {
    /// The slot this frame lies in.
    pub fn slot(self) -> u64 {
        self.addr / FRAME_SIZE as u64
    }
}

/// Frame memory: `count` slots of [`FRAME_SIZE`] bytes in one mapping (page
/// aligned, as AF_XDP requires of a UMEM), and the free list.
pub struct Frames {
    map: memmap2::MmapMut,
    free: Vec<u64>,
    count: usize,
    #[cfg(debug_assertions)]
    owned_by_free_list: Vec<bool>,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("count", &self.count)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Frames {
    /// Map `count` frames, all on the free list.
    pub fn new(count: usize) -> std::io::Result<Frames> {
        let count = count.max(1);
        let map = memmap2::MmapMut::map_anon(count * FRAME_SIZE)?;
        let free = (0..count as u64)
            .rev()
            .map(|i| i * FRAME_SIZE as u64)
            .collect();
        Ok(Frames {
            map,
            free,
            count,
            #[cfg(debug_assertions)]
            owned_by_free_list: vec![true; count],
        })
    }

    /// The number of slots.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Frames on the free list now.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// The start of the mapping (for registering it as a UMEM).
    pub fn base(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The mapping's length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    /// Take a frame from the free list: its slot's start, length 0.
    pub fn alloc(&mut self) -> Option<Desc> {
        let addr = self.free.pop()?;
        #[cfg(debug_assertions)]
        {
            let s = (addr / FRAME_SIZE as u64) as usize;
            debug_assert!(self.owned_by_free_list[s]);
            self.owned_by_free_list[s] = false;
        }
        Some(Desc { addr, len: 0 })
    }

    /// Return a frame to the free list. A frame outside the mapping is ignored.
    pub fn free(&mut self, d: Desc) {
        let slot = d.slot();
        if slot as usize >= self.count {
            return;
        }
        #[cfg(debug_assertions)]
        {
            assert!(
                !self.owned_by_free_list[slot as usize],
                "frame {slot} freed twice"
            );
            self.owned_by_free_list[slot as usize] = true;
        }
        self.free.push(slot * FRAME_SIZE as u64);
    }

    /// The whole slot of a frame, from `d.addr` to the slot's end (so a packet may
    /// grow up to it). Empty for a frame outside the mapping.
    pub fn slot_mut(&mut self, d: Desc) -> &mut [u8] {
        let start = d.addr as usize;
        let end = (d.slot() as usize + 1) * FRAME_SIZE;
        self.map.get_mut(start..end).unwrap_or_default()
    }

    /// The packet in a frame (`d.len` bytes, clipped to the slot).
    pub fn packet(&self, d: Desc) -> &[u8] {
        let start = d.addr as usize;
        let slot_end = (d.slot() as usize + 1) * FRAME_SIZE;
        let end = (start + d.len as usize).min(slot_end);
        self.map.get(start..end).unwrap_or_default()
    }

    /// The packet in a frame, writable.
    pub fn packet_mut(&mut self, d: Desc) -> &mut [u8] {
        let start = d.addr as usize;
        let slot_end = (d.slot() as usize + 1) * FRAME_SIZE;
        let end = (start + d.len as usize).min(slot_end);
        self.map.get_mut(start..end).unwrap_or_default()
    }
}

/// Counters every port keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames `send` could not queue (transmit ring full); the caller still owns them.
    pub tx_full: u64,
    /// Receives the kernel or device dropped for want of a free frame, where known.
    pub rx_dropped: u64,
}

/// One receive queue and the transmit path of one interface, as a switching core
/// sees it. Never blocks: every method does what it can now and returns.
pub trait Port {
    /// Receive up to `out.len()` frames into `out`; returns how many. The core owns
    /// them from here. Also keeps the device supplied with free frames from `frames`
    /// (AF_XDP: the fill ring).
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize;

    /// Queue `descs` for transmission, in order; returns how many were taken (a
    /// prefix of `descs`). The port owns those now; the caller still owns the rest.
    /// Transmission may wait until [`Port::flush`].
    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize;

    /// Start the transmission of everything queued (AF_XDP: the `sendto` kick) and
    /// return the frames the device has finished with to `frames` (the completion
    /// ring).
    fn flush(&mut self, frames: &mut Frames);

    /// The port's counters.
    fn stats(&self) -> PortStats;
}
