//! The connection table: which back end each connection (5-tuple) was given, shared
//! by the switching cores, with idle timeouts per protocol and TCP state and a
//! defined behaviour when full.
//!
//! It is a fixed array of buckets of [`SLOTS`] entries each, sized once by
//! [`ConnTable::new`]; it never grows and never allocates after construction.
//! Each bucket has its own spin lock, held for a scan of a few entries, so cores
//! touching different connections do not wait on each other and no one ever
//! sleeps. A key may live in either of two buckets ("two choices", which lets the
//! table fill far more evenly than one); both are derived from the client's
//! address, port and protocol only, so that the reply a back end sends (which
//! names the client but not the virtual IP) finds its connection in the same two
//! buckets ([`ConnTable::lookup_reverse`], for NAT). The price: one client
//! address and port can hold at most `2 * SLOTS` connections at once (to
//! different virtual services), which only a hostile client reaches, and only at
//! its own expense. Time is passed in as `now`, nanoseconds of a monotonic
//! clock the caller reads.
//!
//! When a new connection finds no room, the table reclaims an expired entry, else
//! evicts the entry least worth keeping (closing, then half-open, then non-TCP,
//! then established; the oldest first), but never one more valuable than the
//! newcomer: a SYN never pushes out a live established connection. Then the answer
//! is [`Insert::NotRecorded`] and the caller forwards statelessly.
//!
//! It is not a TCP implementation: states are what a middlebox can infer from the
//! flags it sees, enough to pick timeouts and eviction order.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use lbp_abi::tcp_flag;

use crate::balance::hash_words;

/// Entries per bucket.
pub const SLOTS: usize = 8;

/// IP protocol numbers the table treats specially.
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const NS: u64 = 1_000_000_000;

/// A small spin lock: for critical sections of a few dozen instructions on cores
/// that must not sleep. Spinning threads re-read the flag (no stores) until it is
/// released. If the holder has been descheduled (only possible when two threads
/// share a CPU, as in tests), a waiter yields the CPU after a while rather than
/// burning its whole time slice.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through a `SpinGuard`, and at most one guard
// exists at a time (it is created only by winning the `locked` flag with an
// Acquire exchange and the flag is cleared with Release when it drops), so
// sharing the lock between threads hands `T` from one thread to another but never
// to two at once: `T: Send` is what that needs.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SpinGuard { lock: self };
            }
            while self.locked.load(Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock (see `SpinLock`), so no other
        // reference to the value exists while it lives.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through
        // the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A connection as a client sees it: addresses in their 16-byte form (IPv4 as
/// IPv4-mapped IPv6, as in `lbp_abi::Fields`), the IP version (4 or 6), the IP
/// protocol and the ports (0 for protocols without ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub client: [u8; 16],
    pub vip: [u8; 16],
    pub client_port: u16,
    pub vport: u16,
    pub version: u8,
    pub proto: u8,
}

impl ConnKey {
    /// The key of the connection a client's frame with fields `f` belongs to.
    pub fn of_client(f: &lbp_abi::Fields) -> ConnKey {
        ConnKey {
            client: f.ip_src,
            vip: f.ip_dst,
            client_port: f.sport,
            vport: f.dport,
            version: f.ip_version,
            proto: f.ip_proto,
        }
    }
}

/// A packet a back end sends back to a client through the appliance (NAT):
/// source back-end address and port, destination client address and port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReverseKey {
    pub backend: [u8; 16],
    pub client: [u8; 16],
    pub backend_port: u16,
    pub client_port: u16,
    pub version: u8,
    pub proto: u8,
}

/// Where a connection goes: the service and back end (indices in the active
/// generation's tables) and, for NAT, the back end's address and port (what the
/// destination is rewritten to, and what [`ConnTable::lookup_reverse`] matches;
/// zero in DSR mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub service: u32,
    pub backend: u32,
    pub backend_addr: [u8; 16],
    pub backend_port: u16,
}

impl Target {
    /// A NAT connection (its back end answers through the appliance).
    pub fn is_nat(&self) -> bool {
        self.backend_port != 0
    }
}

/// What the table infers about a connection from the packets it has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum State {
    /// Not TCP (UDP, ICMP, any other protocol): one idle timeout per protocol.
    #[default]
    Other,
    /// TCP: the client's SYN seen, nothing confirms the handshake yet.
    SynSent,
    /// TCP: the back end's SYN-ACK seen too (NAT mode sees both directions).
    SynRecv,
    /// TCP: the client acknowledged the handshake (or the connection was picked up
    /// mid-flow).
    Established,
    /// TCP: a FIN seen from either side.
    FinWait,
    /// TCP: a RST seen.
    Closed,
}

impl State {
    /// How much an entry in this state is worth keeping: the lower, the sooner it
    /// is evicted. A newcomer may only evict entries of its own rank or lower.
    fn rank(self) -> u8 {
        match self {
            State::Closed | State::FinWait => 0,
            State::SynSent | State::SynRecv => 1,
            State::Other => 2,
            State::Established => 3,
        }
    }

    /// The state of a new entry made for a packet of protocol `proto` with TCP
    /// flags `flags`, sent by the client.
    pub fn initial(proto: u8, flags: u8) -> State {
        if proto != PROTO_TCP {
            State::Other
        } else if flags & tcp_flag::RST != 0 {
            State::Closed
        } else if flags & tcp_flag::SYN != 0 {
            State::SynSent
        } else if flags & tcp_flag::FIN != 0 {
            State::FinWait
        } else {
            State::Established
        }
    }

    /// The state after a packet with TCP flags `flags`, sent by the client
    /// (`from_client`) or by the back end.
    pub fn next(self, flags: u8, from_client: bool) -> State {
        use State::*;
        if self == Other {
            return Other;
        }
        let syn = flags & tcp_flag::SYN != 0;
        let ack = flags & tcp_flag::ACK != 0;
        if flags & tcp_flag::RST != 0 {
            return Closed;
        }
        if syn && !ack && from_client {
            // A new attempt on the same tuple (port reuse after a close), or a
            // retransmission. A stray SYN does not demote an established entry.
            return if self == Established {
                Established
            } else {
                SynSent
            };
        }
        if syn && ack && !from_client {
            return if self == SynSent { SynRecv } else { self };
        }
        if flags & tcp_flag::FIN != 0 {
            return if self == Closed { Closed } else { FinWait };
        }
        if ack && !syn && from_client && matches!(self, SynSent | SynRecv) {
            return Established;
        }
        // The back end acknowledges (or sends data) after its SYN-ACK only
        // once the client's ACK completed the handshake: the way a core
        // learns it when that ACK never came its way (the XDP fast path
        // sent it).
        if ack && !syn && !from_client && self == SynRecv {
            return Established;
        }
        self
    }
}

/// Idle timeouts, in nanoseconds: an entry not seen for this long is expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP half-open (SYN seen, handshake not completed). Default 5 s.
    pub tcp_syn: u64,
    /// TCP established. Default 15 min (IPVS's default).
    pub tcp_established: u64,
    /// TCP after a FIN. Default 30 s.
    pub tcp_fin: u64,
    /// TCP after a RST. Default 5 s.
    pub tcp_close: u64,
    /// UDP. Default 60 s.
    pub udp: u64,
    /// Any other protocol (ICMP echo, GRE, ...). Default 10 s.
    pub other: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn: 5 * NS,
            tcp_established: 900 * NS,
            tcp_fin: 30 * NS,
            tcp_close: 5 * NS,
            udp: 60 * NS,
            other: 10 * NS,
        }
    }
}

impl Timeouts {
    /// The idle timeout of an entry of protocol `proto` in state `state`.
    pub fn of(&self, proto: u8, state: State) -> u64 {
        match state {
            State::Other if proto == PROTO_UDP => self.udp,
            State::Other => self.other,
            State::SynSent | State::SynRecv => self.tcp_syn,
            State::Established => self.tcp_established,
            State::FinWait => self.tcp_fin,
            State::Closed => self.tcp_close,
        }
    }
}

/// One connection's entry, as lookups return it (a copy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub target: Target,
    pub state: State,
    /// The latest `now` of a packet that touched the entry.
    pub last_seen: u64,
}

/// The outcome of [`ConnTable::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Recorded as a new connection.
    New(Conn),
    /// The key was already there (another core recorded it first): this is its
    /// entry, updated by the packet; use its target, not the one just chosen.
    Existing(Conn),
    /// No room without evicting something worth more: forward statelessly.
    NotRecorded,
}

/// Counters since construction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Live entries now.
    pub len: usize,
    /// New entries recorded.
    pub inserts: u64,
    /// Live entries evicted to make room.
    pub evictions: u64,
    /// Expired entries removed (by lookups, inserts reusing them, or sweeps).
    pub expired: u64,
    /// New connections not recorded for lack of room.
    pub refusals: u64,
    /// Entries removed because a new connection took over their back end's
    /// 4-tuple (see [`ConnTable::insert`] and [`ConnTable::supersede`]).
    pub superseded: u64,
    /// Ended TCP connections whose client port a new SYN reused: removed, so
    /// that the new connection is balanced afresh.
    pub reused: u64,
}

/// Slot `j` of the higher (`which`) or lower bucket of a pair.
#[inline]
fn pick<'a>(
    lo: &'a mut [Slot; SLOTS],
    hi: &'a mut [Slot; SLOTS],
    which: bool,
    j: usize,
) -> &'a mut Slot {
    if which {
        &mut hi[j % SLOTS]
    } else {
        &mut lo[j % SLOTS]
    }
}

#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    key: ConnKey,
    conn: Conn,
}

impl Slot {
    /// Whether this slot holds the connection whose back end's packets have the
    /// reverse key `rkey`.
    fn answers_to(&self, rkey: &ReverseKey) -> bool {
        self.used
            && self.key.client == rkey.client
            && self.key.client_port == rkey.client_port
            && self.key.proto == rkey.proto
            && self.key.version == rkey.version
            && self.conn.target.backend_addr == rkey.backend
            && self.conn.target.backend_port == rkey.backend_port
    }
}

const EMPTY_SLOT: Slot = Slot {
    used: false,
    key: ConnKey {
        client: [0; 16],
        vip: [0; 16],
        client_port: 0,
        vport: 0,
        version: 0,
        proto: 0,
    },
    conn: Conn {
        target: Target {
            service: 0,
            backend: 0,
            backend_addr: [0; 16],
            backend_port: 0,
        },
        state: State::Other,
        last_seen: 0,
    },
};

type Bucket = SpinLock<[Slot; SLOTS]>;

/// The connection table. See the module documentation.
pub struct ConnTable {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
    max: usize,
    timeouts: Timeouts,
    len: AtomicUsize,
    sweep_cursor: AtomicUsize,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    refusals: AtomicU64,
    superseded: AtomicU64,
    reused: AtomicU64,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("buckets", &self.buckets.len())
            .field("max", &self.max)
            .field("timeouts", &self.timeouts)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A seed that differs between processes, without a system call of our own:
/// std's `RandomState` is seeded from the OS once per thread.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6c62_705f_636f_6e6eu64)
}

#[inline]
fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

impl ConnTable {
    /// A table for at most `max_connections` live entries (at least 1), with the
    /// default timeouts and a random hash seed.
    pub fn new(max_connections: usize) -> ConnTable {
        ConnTable::with_config(max_connections, Timeouts::default(), random_seed())
    }

    /// A table with explicit timeouts and hash seed. The table has room for at
    /// least 1.25 times `max_connections` entries (so the two buckets a key may
    /// go to are seldom both full) and never holds more than `max_connections`.
    pub fn with_config(max_connections: usize, timeouts: Timeouts, seed: u64) -> ConnTable {
        let max = max_connections.max(1);
        let want = (max / 4).saturating_add(max).div_ceil(SLOTS).max(2);
        let nbuckets = want
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 2));
        let buckets = (0..nbuckets)
            .map(|_| SpinLock::new([EMPTY_SLOT; SLOTS]))
            .collect();
        ConnTable {
            buckets,
            mask: nbuckets - 1,
            seed,
            max,
            timeouts,
            len: AtomicUsize::new(0),
            sweep_cursor: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// The two buckets (distinct: there are at least two) a connection of this
    /// client address, port, protocol and version may live in.
    #[inline]
    fn buckets_of(
        &self,
        client: &[u8; 16],
        client_port: u16,
        proto: u8,
        version: u8,
    ) -> (usize, usize) {
        let (a, b) = addr_words(client);
        let meta = u64::from(client_port) | u64::from(proto) << 16 | u64::from(version) << 24;
        let h = hash_words(&[a, b, meta], self.seed);
        let i1 = h as usize & self.mask;
        let i2 = (i1 ^ ((h >> 32) as usize | 1)) & self.mask;
        (i1, i2)
    }

    #[inline]
    fn expired_at(&self, slot: &Slot, now: u64) -> bool {
        now.saturating_sub(slot.conn.last_seen) >= self.timeouts.of(slot.key.proto, slot.conn.state)
    }

    /// Remove an expired entry found by a lookup or a sweep.
    #[inline]
    fn drop_expired(&self, slot: &mut Slot) {
        slot.used = false;
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// Find `key`'s live entry, update its state from the client's packet with TCP
    /// flags `tcp_flags` (ignored for other protocols) and its last-seen time, and
    /// return a copy. An expired entry is removed and not returned, and so is a
    /// TCP connection that ended (a FIN or RST seen) when a new SYN reuses its
    /// tuple: that is a new connection, to be balanced afresh.
    pub fn lookup(&self, key: &ConnKey, tcp_flags: u8, now: u64) -> Option<Conn> {
        let (i1, i2) = self.buckets_of(&key.client, key.client_port, key.proto, key.version);
        for i in [i1, i2] {
            let mut bucket = self.buckets[i].lock();
            if let Some(slot) = bucket.iter_mut().find(|s| s.used && s.key == *key) {
                if self.expired_at(slot, now) {
                    self.drop_expired(slot);
                    return None;
                }
                if key.proto == PROTO_TCP
                    && tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN
                    && matches!(slot.conn.state, State::FinWait | State::Closed)
                {
                    // The client reuses the port of a connection that ended: a
                    // new connection, balanced afresh (the policy and weights in
                    // force now choose its back end).
                    slot.used = false;
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                slot.conn.state = slot.conn.state.next(tcp_flags, true);
                slot.conn.last_seen = slot.conn.last_seen.max(now);
                return Some(slot.conn);
            }
        }
        None
    }

    /// Find the connection a back end's packet (NAT return traffic) belongs to,
    /// update it as [`ConnTable::lookup`] does (as a packet from the back end), and
    /// return its key (whose `vip` and `vport` the source is rewritten to) and
    /// entry. Two connections never share the back end's view of the tuple: the
    /// newer supersedes the older when it is inserted.
    pub fn lookup_reverse(
        &self,
        rkey: &ReverseKey,
        tcp_flags: u8,
        now: u64,
    ) -> Option<(ConnKey, Conn)> {
        let (i1, i2) = self.buckets_of(&rkey.client, rkey.client_port, rkey.proto, rkey.version);
        for i in [i1, i2] {
            let mut bucket = self.buckets[i].lock();
            let found = bucket.iter_mut().find(|s| s.answers_to(rkey));
            if let Some(slot) = found {
                if self.expired_at(slot, now) {
                    self.drop_expired(slot);
                    return None;
                }
                slot.conn.state = slot.conn.state.next(tcp_flags, false);
                slot.conn.last_seen = slot.conn.last_seen.max(now);
                return Some((slot.key, slot.conn));
            }
        }
        None
    }

    /// The entry a back end's packet of reverse key `rkey` would find (as
    /// [`ConnTable::lookup_reverse`]), if live at `now`, without touching it.
    pub fn peek_reverse(&self, rkey: &ReverseKey, now: u64) -> Option<(ConnKey, Conn)> {
        let (i1, i2) = self.buckets_of(&rkey.client, rkey.client_port, rkey.proto, rkey.version);
        for i in [i1, i2] {
            let bucket = self.buckets[i].lock();
            if let Some(slot) = bucket.iter().find(|s| s.answers_to(rkey)) {
                return (!self.expired_at(slot, now)).then_some((slot.key, slot.conn));
            }
        }
        None
    }

    /// `key`'s entry if live at `now`, without touching it.
    pub fn peek(&self, key: &ConnKey, now: u64) -> Option<Conn> {
        let (i1, i2) = self.buckets_of(&key.client, key.client_port, key.proto, key.version);
        for i in [i1, i2] {
            let bucket = self.buckets[i].lock();
            if let Some(slot) = bucket.iter().find(|s| s.used && s.key == *key) {
                return (!self.expired_at(slot, now)).then_some(slot.conn);
            }
        }
        None
    }

    /// Record a new connection `key` -> `target`, first seen in a client packet
    /// with TCP flags `tcp_flags` at `now`. See [`Insert`] for the outcomes.
    ///
    /// A new NAT connection supersedes every other entry that answers to the same
    /// reverse key (the same client address and port to the same back-end address
    /// and port through another virtual service): the back end sees one 4-tuple,
    /// and has just been sent a SYN for it, so whatever it answers belongs to the
    /// new connection. Without this, its answers would be rewritten as the old
    /// connection's (seen after 3 000 connections to one service, when a client
    /// port came round again to another service on the same back end).
    pub fn insert(&self, key: &ConnKey, target: Target, tcp_flags: u8, now: u64) -> Insert {
        let (i1, i2) = self.buckets_of(&key.client, key.client_port, key.proto, key.version);
        // Lock both buckets, lower index first (every path that holds two locks
        // takes them in this order, so two inserts cannot deadlock).
        let (lo, hi) = (i1.min(i2), i1.max(i2));
        let mut g_lo = self.buckets[lo].lock();
        let mut g_hi = self.buckets[hi].lock();
        let r = self.insert_locked(&mut g_lo, &mut g_hi, key, target, tcp_flags, now);
        if matches!(r, Insert::New(_)) && target.is_nat() {
            let rkey = ReverseKey {
                backend: target.backend_addr,
                client: key.client,
                backend_port: target.backend_port,
                client_port: key.client_port,
                version: key.version,
                proto: key.proto,
            };
            self.supersede_locked(&mut g_lo, &mut g_hi, &rkey, Some(key));
        }
        r
    }

    /// Remove every entry whose reverse key is `rkey` (a client that opens a new
    /// connection straight to a back end from the same address and port as an
    /// earlier NAT connection to it ends that one: the two would share the back
    /// end's 4-tuple, and its answers would be taken for the old one's); returns
    /// how many. [`ConnTable::insert`] does the same for a new NAT connection.
    pub fn supersede(&self, rkey: &ReverseKey) -> usize {
        let (i1, i2) = self.buckets_of(&rkey.client, rkey.client_port, rkey.proto, rkey.version);
        // Both locks, lower index first (as `insert` takes them).
        let (lo, hi) = (i1.min(i2), i1.max(i2));
        let mut g_lo = self.buckets[lo].lock();
        let mut g_hi = self.buckets[hi].lock();
        self.supersede_locked(&mut g_lo, &mut g_hi, rkey, None)
    }

    /// [`ConnTable::supersede`] in a locked bucket pair, sparing `keep`'s entry.
    fn supersede_locked(
        &self,
        g_lo: &mut [Slot; SLOTS],
        g_hi: &mut [Slot; SLOTS],
        rkey: &ReverseKey,
        keep: Option<&ConnKey>,
    ) -> usize {
        let mut n = 0;
        for slot in g_lo.iter_mut().chain(g_hi.iter_mut()) {
            if slot.answers_to(rkey) && Some(&slot.key) != keep {
                slot.used = false;
                n += 1;
            }
        }
        self.len.fetch_sub(n, Ordering::Relaxed);
        self.superseded.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// [`ConnTable::insert`] with both buckets locked.
    fn insert_locked(
        &self,
        g_lo: &mut [Slot; SLOTS],
        g_hi: &mut [Slot; SLOTS],
        key: &ConnKey,
        target: Target,
        tcp_flags: u8,
        now: u64,
    ) -> Insert {
        let state = State::initial(key.proto, tcp_flags);
        let fresh = Conn {
            target,
            state,
            last_seen: now,
        };

        // One pass over both buckets: the key itself, the best expired entry (the
        // oldest), a free slot (in the emptier bucket), the best victim.
        let mut existing: Option<(bool, usize)> = None;
        let mut expired: Option<(bool, usize, u64)> = None;
        let mut free: [Option<usize>; 2] = [None, None];
        let mut free_count = [0usize; 2];
        let mut victim: Option<(bool, usize, (u8, u64))> = None;
        let rank = state.rank();
        for (which, bucket) in [(false, &*g_lo), (true, &*g_hi)] {
            for (j, s) in bucket.iter().enumerate() {
                if !s.used {
                    free[usize::from(which)].get_or_insert(j);
                    free_count[usize::from(which)] += 1;
                    continue;
                }
                if s.key == *key {
                    existing = Some((which, j));
                    continue;
                }
                if self.expired_at(s, now) {
                    if expired.is_none_or(|e| s.conn.last_seen < e.2) {
                        expired = Some((which, j, s.conn.last_seen));
                    }
                    continue;
                }
                let worth = (s.conn.state.rank(), s.conn.last_seen);
                if worth.0 <= rank && victim.is_none_or(|v| worth < v.2) {
                    victim = Some((which, j, worth));
                }
            }
        }

        if let Some((which, j)) = existing {
            let s = pick(g_lo, g_hi, which, j);
            if !self.expired_at(s, now) {
                s.conn.state = s.conn.state.next(tcp_flags, true);
                s.conn.last_seen = s.conn.last_seen.max(now);
                return Insert::Existing(s.conn);
            }
            // The same tuple again after its entry expired: a new connection.
            s.conn = fresh;
            self.expired.fetch_add(1, Ordering::Relaxed);
            self.inserts.fetch_add(1, Ordering::Relaxed);
            return Insert::New(fresh);
        }

        let place = |s: &mut Slot| {
            s.used = true;
            s.key = *key;
            s.conn = fresh;
        };
        if let Some((which, j, _)) = expired {
            place(pick(g_lo, g_hi, which, j));
            self.expired.fetch_add(1, Ordering::Relaxed);
            self.inserts.fetch_add(1, Ordering::Relaxed);
            return Insert::New(fresh);
        }
        let emptier = free_count[1] > free_count[0];
        let free_slot = free[usize::from(emptier)]
            .map(|j| (emptier, j))
            .or(free[usize::from(!emptier)].map(|j| (!emptier, j)));
        if let Some((which, j)) = free_slot
            && self
                .len
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.max).then_some(n + 1)
                })
                .is_ok()
        {
            place(pick(g_lo, g_hi, which, j));
            self.inserts.fetch_add(1, Ordering::Relaxed);
            return Insert::New(fresh);
        }
        if let Some((which, j, _)) = victim {
            place(pick(g_lo, g_hi, which, j));
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.inserts.fetch_add(1, Ordering::Relaxed);
            return Insert::New(fresh);
        }
        self.refusals.fetch_add(1, Ordering::Relaxed);
        Insert::NotRecorded
    }

    /// Remove `key`'s entry (live or not); returns it if there was one.
    pub fn remove(&self, key: &ConnKey) -> Option<Conn> {
        let (i1, i2) = self.buckets_of(&key.client, key.client_port, key.proto, key.version);
        for i in [i1, i2] {
            let mut bucket = self.buckets[i].lock();
            if let Some(slot) = bucket.iter_mut().find(|s| s.used && s.key == *key) {
                slot.used = false;
                self.len.fetch_sub(1, Ordering::Relaxed);
                return Some(slot.conn);
            }
        }
        None
    }

    /// Remove the expired entries of the next `budget` buckets (cycling through
    /// the table across calls); returns how many were removed. The control core
    /// calls this periodically so that idle entries do not wait for a lookup or an
    /// insert to find them; a full pass takes [`ConnTable::buckets`] buckets.
    pub fn sweep(&self, now: u64, budget: usize) -> usize {
        let n = budget.min(self.buckets.len());
        let start = self.sweep_cursor.fetch_add(n, Ordering::Relaxed);
        let mut removed = 0;
        for k in 0..n {
            let mut bucket = self.buckets[start.wrapping_add(k) & self.mask].lock();
            for slot in bucket.iter_mut() {
                if slot.used && self.expired_at(slot, now) {
                    self.drop_expired(slot);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Call `f` with every live entry at `now` (expired ones are skipped), one
    /// bucket at a time: each bucket's lock is held only to copy its entries
    /// out, never while `f` runs. For the control core (`lbp conns`, the
    /// counters per back end); entries that change meanwhile may be seen before
    /// or after the change.
    pub fn for_each(&self, now: u64, mut f: impl FnMut(&ConnKey, &Conn)) {
        for bucket in self.buckets.iter() {
            let copy = *bucket.lock();
            for slot in copy.iter() {
                if slot.used && !self.expired_at(slot, now) {
                    f(&slot.key, &slot.conn);
                }
            }
        }
    }

    /// Live (or expired but not yet removed) entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the table holds (`max_connections`).
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// The number of buckets (a power of two).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Counters since construction.
    pub fn stats(&self) -> ConnStats {
        ConnStats {
            len: self.len(),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            superseded: self.superseded.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
