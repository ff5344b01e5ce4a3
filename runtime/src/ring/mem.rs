//! In-memory ports, for tests and benchmarks of a switching core: no device, no
//! system call. A [`MemPort`] receives from one bounded wire and transmits onto
//! another. [`pair`] joins two ports (what one sends the other receives);
//! [`host`] joins a port to a [`MemHost`], the test's side, which pushes frames in
//! as bytes and collects what the port transmitted as bytes.
//!
//! A wire is a fixed array of `capacity` frame-sized slots allocated once: moving
//! frames allocates nothing. Received frames are copied into the core's
//! [`Frames`] at [`MEM_HEADROOM`] bytes into a slot, as AF_XDP does, so a core
//! tested here also meets descriptors that do not start at a slot's start.
//! Transmitted frames are copied onto the wire at `send` and stay owned by the
//! port until the next [`Port::flush`] returns them to the free list (as an
//! AF_XDP completion ring would); at most `capacity` frames wait so. Nothing here
//! blocks; a full wire refuses frames (`send` takes fewer, `inject` says no), and
//! a receive with no free frame leaves the frame on the wire.
//!
//! This is not a model of timing, loss or reordering: what fits is delivered, in
//! order.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Desc, FRAME_SIZE, Frames, Port, PortStats};

/// Where in its slot a received frame starts (AF_XDP's copy mode uses 256 too).
pub const MEM_HEADROOM: u64 = 256;

/// The longest frame a wire carries: what fits in a slot after the headroom.
pub const MAX_FRAME: usize = FRAME_SIZE - MEM_HEADROOM as usize;

/// A bounded FIFO of frames held as bytes, in `capacity` preallocated slots.
#[derive(Debug)]
struct Wire {
    bytes: Vec<u8>,
    lens: Vec<u32>,
    head: usize,
    len: usize,
}

impl Wire {
    fn new(capacity: usize) -> Wire {
        let capacity = capacity.max(1);
        Wire {
            bytes: vec![0; capacity * MAX_FRAME],
            lens: vec![0; capacity],
            head: 0,
            len: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Append a frame; false when full or the frame is longer than [`MAX_FRAME`].
    fn push(&mut self, frame: &[u8]) -> bool {
        if self.len == self.capacity() || frame.len() > MAX_FRAME {
            return false;
        }
        let i = (self.head + self.len) % self.capacity();
        self.bytes[i * MAX_FRAME..i * MAX_FRAME + frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len() as u32;
        self.len += 1;
        true
    }

    /// The oldest frame, without removing it.
    fn front(&self) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let i = self.head;
        Some(&self.bytes[i * MAX_FRAME..i * MAX_FRAME + self.lens[i] as usize])
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.capacity();
            self.len -= 1;
        }
    }
}

type Shared = Arc<Mutex<Wire>>;

fn lock(w: &Shared) -> MutexGuard<'_, Wire> {
    // A panic elsewhere while holding the lock leaves the wire consistent (every
    // update is a few field writes that cannot panic midway), so poison is ignored.
    w.lock().unwrap_or_else(|e| e.into_inner())
}

fn shared(capacity: usize) -> Shared {
    Arc::new(Mutex::new(Wire::new(capacity)))
}

/// An in-memory [`Port`]: receives from one wire, transmits onto another.
#[derive(Debug)]
pub struct MemPort {
    rx: Shared,
    tx: Shared,
    /// Sent frames not yet returned to the free list (done at `flush`).
    completed: Vec<Desc>,
    stats: PortStats,
}

impl MemPort {
    fn new(rx: Shared, tx: Shared) -> MemPort {
        let cap = lock(&tx).capacity();
        MemPort {
            rx,
            tx,
            completed: Vec::with_capacity(cap),
            stats: PortStats::default(),
        }
    }

    /// Frames sent and not yet returned to the free list by [`Port::flush`].
    pub fn in_flight(&self) -> usize {
        self.completed.len()
    }

    /// Frames waiting on the receive wire.
    pub fn rx_pending(&self) -> usize {
        lock(&self.rx).len
    }
}

/// Two ports joined back to back, each wire holding up to `capacity` frames.
pub fn pair(capacity: usize) -> (MemPort, MemPort) {
    let a_to_b = shared(capacity);
    let b_to_a = shared(capacity);
    (
        MemPort::new(b_to_a.clone(), a_to_b.clone()),
        MemPort::new(a_to_b, b_to_a),
    )
}

/// A port and the test's end of it, each wire holding up to `capacity` frames.
pub fn host(capacity: usize) -> (MemPort, MemHost) {
    let to_port = shared(capacity);
    let from_port = shared(capacity);
    (
        MemPort::new(to_port.clone(), from_port.clone()),
        MemHost { to_port, from_port },
    )
}

/// The test's side of a [`MemPort`]: frames in and out as bytes.
#[derive(Debug, Clone)]
pub struct MemHost {
    to_port: Shared,
    from_port: Shared,
}

impl MemHost {
    /// Offer a frame to the port's receive side; false when the wire is full or
    /// the frame is longer than [`MAX_FRAME`].
    pub fn inject(&self, frame: &[u8]) -> bool {
        lock(&self.to_port).push(frame)
    }

    /// The oldest frame the port transmitted, if any.
    pub fn take(&self) -> Option<Vec<u8>> {
        let mut w = lock(&self.from_port);
        let f = w.front()?.to_vec();
        w.pop_front();
        Some(f)
    }

    /// Every frame the port transmitted so far, oldest first.
    pub fn take_all(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.take()).collect()
    }

    /// Count and discard what the port transmitted (for benchmarks).
    pub fn discard(&self) -> usize {
        let mut w = lock(&self.from_port);
        let n = w.len;
        w.head = 0;
        w.len = 0;
        n
    }
}

impl Port for MemPort {
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize {
        let mut wire = lock(&self.rx);
        let mut n = 0;
        while n < out.len() {
            let Some(src) = wire.front() else { break };
            let Some(mut d) = frames.alloc() else { break };
            d.addr += MEM_HEADROOM;
            let slot = frames.slot_mut(d);
            let len = src.len().min(slot.len());
            slot[..len].copy_from_slice(&src[..len]);
            d.len = len as u32;
            wire.pop_front();
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            out[n] = d;
            n += 1;
        }
        n
    }

    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize {
        let mut wire = lock(&self.tx);
        let mut n = 0;
        for &d in descs {
            if self.completed.len() == self.completed.capacity() {
                break;
            }
            let p = frames.packet(d);
            if !wire.push(p) {
                break;
            }
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += p.len() as u64;
            self.completed.push(d);
            n += 1;
        }
        self.stats.tx_full += (descs.len() - n) as u64;
        n
    }

    fn flush(&mut self, frames: &mut Frames) {
        for d in self.completed.drain(..) {
            frames.free(d);
        }
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn host_in_port_out_round_trip() {
        let mut frames = Frames::new(8).unwrap();
        let (mut port, host) = host(4);
        assert!(host.inject(&frame(1, 60)));
        assert!(host.inject(&frame(2, 1514)));
        let mut got = [Desc { addr: 0, len: 0 }; 8];
        let n = port.recv(&mut frames, &mut got);
        assert_eq!(n, 2);
        assert_eq!(frames.packet(got[0]), &frame(1, 60)[..]);
        assert_eq!(frames.packet(got[1]), &frame(2, 1514)[..]);
        assert_eq!(got[0].addr % FRAME_SIZE as u64, MEM_HEADROOM);
        assert_eq!(frames.free_count(), 6);
        // Edit in place and send back out, in order.
        frames.packet_mut(got[0])[0] = 0xee;
        assert_eq!(port.send(&mut frames, &got[..2]), 2);
        assert_eq!(port.in_flight(), 2);
        assert_eq!(frames.free_count(), 6, "frames stay lent until flush");
        port.flush(&mut frames);
        assert_eq!(frames.free_count(), 8);
        let out = host.take_all();
        let mut want0 = frame(1, 60);
        want0[0] = 0xee;
        assert_eq!(out, vec![want0, frame(2, 1514)]);
        let s = port.stats();
        assert_eq!((s.rx_packets, s.rx_bytes), (2, 1574));
        assert_eq!((s.tx_packets, s.tx_bytes), (2, 1574));
    }

    #[test]
    fn pair_delivers_both_ways() {
        let mut fa = Frames::new(4).unwrap();
        let mut fb = Frames::new(4).unwrap();
        let (mut a, mut b) = pair(2);
        let mut d = fa.alloc().unwrap();
        d.len = 3;
        fa.packet_mut(d).copy_from_slice(b"abc");
        assert_eq!(a.send(&mut fa, &[d]), 1);
        a.flush(&mut fa);
        let mut got = [Desc { addr: 0, len: 0 }; 4];
        assert_eq!(b.recv(&mut fb, &mut got), 1);
        assert_eq!(fb.packet(got[0]), b"abc");
        assert_eq!(b.send(&mut fb, &got[..1]), 1);
        b.flush(&mut fb);
        assert_eq!(a.recv(&mut fa, &mut got), 1);
        assert_eq!(fa.packet(got[0]), b"abc");
        fa.free(got[0]);
        assert_eq!((fa.free_count(), fb.free_count()), (4, 4));
    }

    #[test]
    fn bounded_everywhere_and_nothing_lost() {
        let mut frames = Frames::new(3).unwrap();
        let (mut port, host) = host(2);
        assert!(host.inject(&frame(1, 64)));
        assert!(host.inject(&frame(2, 64)));
        assert!(!host.inject(&frame(3, 64)), "wire full");
        assert!(!host.inject(&vec![0; MAX_FRAME + 1]), "too long");
        assert!(!host.inject(&[]), "still full");
        let mut got = [Desc { addr: 0, len: 0 }; 1];
        assert_eq!(port.recv(&mut frames, &mut got), 1, "bounded by out");
        assert_eq!(port.rx_pending(), 1);
        // No free frame: the frame stays on the wire.
        let a = frames.alloc().unwrap();
        let b = frames.alloc().unwrap();
        assert_eq!(
            port.recv(&mut frames, &mut [Desc { addr: 0, len: 0 }; 4]),
            0
        );
        assert_eq!(port.rx_pending(), 1);
        frames.free(a);
        let mut two = [Desc { addr: 0, len: 0 }; 4];
        assert_eq!(port.recv(&mut frames, &mut two), 1);
        assert_eq!(frames.packet(two[0]), &frame(2, 64)[..]);
        // The transmit wire holds two frames; the third is refused and counted.
        let sent = [got[0], two[0], b];
        assert_eq!(port.send(&mut frames, &sent), 2);
        assert_eq!(port.stats().tx_full, 1);
        frames.free(b);
        port.flush(&mut frames);
        assert_eq!(frames.free_count(), 3);
        // Until the host takes them, the wire stays full.
        let mut c = frames.alloc().unwrap();
        c.len = 1;
        assert_eq!(port.send(&mut frames, &[c]), 0);
        assert_eq!(host.discard(), 2);
        assert_eq!(port.send(&mut frames, &[c]), 1);
        port.flush(&mut frames);
        assert_eq!(host.take_all().len(), 1);
        assert_eq!(frames.free_count(), 3);
    }

    #[test]
    fn unflushed_sends_are_bounded() {
        let mut frames = Frames::new(8).unwrap();
        let (mut port, host) = host(2);
        for round in 0..3 {
            let mut d = frames.alloc().unwrap();
            d.len = 10;
            let taken = port.send(&mut frames, &[d]);
            // The host drains the wire, but without a flush at most `capacity`
            // frames wait for completion.
            host.discard();
            if round < 2 {
                assert_eq!(taken, 1);
            } else {
                assert_eq!(taken, 0);
                frames.free(d);
            }
        }
        port.flush(&mut frames);
        assert_eq!(frames.free_count(), 8);
    }
}
