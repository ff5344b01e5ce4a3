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
mod tests {
    use super::*;
    use lbp_abi::tcp_flag::{ACK, FIN, RST, SYN};

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a);
        x
    }

    fn key(client: u32, cport: u16, vport: u16, proto: u8) -> ConnKey {
        ConnKey {
            client: v4(client.to_be_bytes()),
            vip: v4([198, 18, 0, 10]),
            client_port: cport,
            vport,
            version: 4,
            proto,
        }
    }

    /// A target derived from the key, so a reader can check it got the right one.
    fn target_of(k: &ConnKey) -> Target {
        let h = hash_words(
            &[
                u64::from(k.client_port),
                u64::from(k.vport),
                u64::from(k.client[15]),
            ],
            5,
        );
        Target {
            service: (h >> 40) as u32,
            backend: h as u32,
            backend_addr: v4([198, 19, 0, (h >> 8) as u8]),
            backend_port: 8000 + (h >> 16) as u16 % 100,
        }
    }

    fn table(max: usize) -> ConnTable {
        ConnTable::with_config(max, Timeouts::default(), 0xfeed)
    }

    #[test]
    fn insert_lookup_remove() {
        let t = table(1000);
        let k = key(0xc612_0001, 40000, 80, PROTO_TCP);
        assert_eq!(t.lookup(&k, SYN, 0), None);
        let tg = target_of(&k);
        let Insert::New(c) = t.insert(&k, tg, SYN, 10) else {
            panic!("not new")
        };
        assert_eq!(c.target, tg);
        assert_eq!(c.state, State::SynSent);
        assert_eq!(t.len(), 1);
        // A second insert of the same key (another core raced) returns the first.
        let other = Target { backend: 99, ..tg };
        assert!(matches!(t.insert(&k, other, SYN, 11), Insert::Existing(c) if c.target == tg));
        let c = t.lookup(&k, ACK, 20).unwrap();
        assert_eq!(
            (c.target, c.state, c.last_seen),
            (tg, State::Established, 20)
        );
        // Time going backwards (another core's older clock read) does not rewind.
        assert_eq!(t.lookup(&k, ACK, 15).unwrap().last_seen, 20);
        // Other keys differing in one field are different connections.
        for k2 in [
            ConnKey { vport: 81, ..k },
            ConnKey {
                client_port: 40001,
                ..k
            },
            ConnKey {
                proto: PROTO_UDP,
                ..k
            },
            ConnKey { version: 6, ..k },
            ConnKey {
                vip: v4([198, 18, 0, 11]),
                ..k
            },
        ] {
            assert_eq!(t.lookup(&k2, ACK, 20), None);
        }
        assert_eq!(t.remove(&k).map(|c| c.target), Some(tg));
        assert_eq!(t.remove(&k), None);
        assert_eq!(t.lookup(&k, ACK, 21), None);
        assert!(t.is_empty());
        let s = t.stats();
        assert_eq!(
            (s.inserts, s.evictions, s.refusals, s.expired),
            (1, 0, 0, 0)
        );
    }

    #[test]
    fn reverse_lookup_for_nat_return_traffic() {
        let t = table(100);
        let k = key(0xc612_0002, 5555, 443, PROTO_TCP);
        let tg = target_of(&k);
        assert!(matches!(t.insert(&k, tg, SYN, 0), Insert::New(_)));
        let r = ReverseKey {
            backend: tg.backend_addr,
            client: k.client,
            backend_port: tg.backend_port,
            client_port: k.client_port,
            version: 4,
            proto: PROTO_TCP,
        };
        let (k2, c) = t.lookup_reverse(&r, SYN | ACK, 1).unwrap();
        assert_eq!(k2, k);
        assert_eq!(c.state, State::SynRecv);
        assert_eq!(t.lookup(&k, ACK, 2).unwrap().state, State::Established);
        // Wrong back-end port, address, client port or protocol: no match.
        for r2 in [
            ReverseKey {
                backend_port: tg.backend_port.wrapping_add(1),
                ..r
            },
            ReverseKey {
                backend: v4([198, 19, 9, 9]),
                ..r
            },
            ReverseKey {
                client_port: 5556,
                ..r
            },
            ReverseKey {
                proto: PROTO_UDP,
                ..r
            },
        ] {
            assert_eq!(t.lookup_reverse(&r2, ACK, 3), None);
        }
        // A FIN from the back end moves the connection to FinWait.
        assert_eq!(
            t.lookup_reverse(&r, FIN | ACK, 4).unwrap().1.state,
            State::FinWait
        );
    }

    #[test]
    fn a_new_nat_connection_supersedes_one_with_the_same_back_end_tuple() {
        let t = table(100);
        // The same client address and port to two services (ports 80 and 81) that
        // NAT to the same back-end address and port.
        let k80 = key(0xc612_0002, 50688, 80, PROTO_TCP);
        let k81 = ConnKey { vport: 81, ..k80 };
        let tg = Target {
            service: 1,
            backend: 2,
            backend_addr: v4([198, 18, 2, 13]),
            backend_port: 8080,
        };
        assert!(matches!(t.insert(&k81, tg, SYN, 0), Insert::New(_)));
        let r = ReverseKey {
            backend: tg.backend_addr,
            client: k80.client,
            backend_port: 8080,
            client_port: 50688,
            version: 4,
            proto: PROTO_TCP,
        };
        let tg80 = Target { service: 0, ..tg };
        assert!(matches!(t.insert(&k80, tg80, SYN, NS), Insert::New(_)));
        // The back end's answer is the new connection's; the old one is gone.
        assert_eq!(t.lookup_reverse(&r, SYN | ACK, 2 * NS).unwrap().0, k80);
        assert_eq!(t.lookup(&k81, ACK, 2 * NS), None);
        assert_eq!((t.len(), t.stats().superseded), (1, 1));
        // A different back-end port is another tuple: both live.
        let k82 = ConnKey { vport: 82, ..k80 };
        let tg82 = Target {
            backend_port: 8081,
            ..tg
        };
        assert!(matches!(t.insert(&k82, tg82, SYN, 3 * NS), Insert::New(_)));
        assert_eq!(t.len(), 2);
        // DSR entries (no back-end port: answers bypass the appliance) keep the
        // virtual IP as the destination, so never share a tuple: both live.
        let dsr = Target {
            backend_port: 0,
            ..tg
        };
        let d1 = ConnKey { vport: 90, ..k80 };
        let d2 = ConnKey { vport: 91, ..k80 };
        assert!(matches!(t.insert(&d1, dsr, SYN, 4 * NS), Insert::New(_)));
        assert!(matches!(t.insert(&d2, dsr, SYN, 4 * NS), Insert::New(_)));
        assert_eq!((t.len(), t.stats().superseded), (4, 1));
    }

    #[test]
    fn tcp_states_follow_flags() {
        use State::*;
        assert_eq!(State::initial(PROTO_TCP, SYN), SynSent);
        assert_eq!(State::initial(PROTO_TCP, ACK), Established);
        assert_eq!(State::initial(PROTO_TCP, FIN | ACK), FinWait);
        assert_eq!(State::initial(PROTO_TCP, RST), Closed);
        assert_eq!(State::initial(PROTO_UDP, SYN), Other);
        assert_eq!(SynSent.next(SYN | ACK, false), SynRecv);
        assert_eq!(SynSent.next(SYN | ACK, true), SynSent);
        assert_eq!(SynRecv.next(ACK, true), Established);
        assert_eq!(SynSent.next(ACK, true), Established);
        assert_eq!(SynSent.next(ACK, false), SynSent);
        assert_eq!(Established.next(SYN, true), Established);
        assert_eq!(Established.next(FIN | ACK, false), FinWait);
        assert_eq!(FinWait.next(ACK, true), FinWait);
        assert_eq!(FinWait.next(SYN, true), SynSent);
        assert_eq!(Established.next(RST, true), Closed);
        assert_eq!(Closed.next(FIN, true), Closed);
        assert_eq!(Closed.next(SYN, true), SynSent);
        assert_eq!(Other.next(RST, true), Other);
        // Every flag combination from every state gives a state, no panic.
        for s in [Other, SynSent, SynRecv, Established, FinWait, Closed] {
            for f in 0..=255u8 {
                let _ = s.next(f, true);
                let _ = s.next(f, false);
            }
        }
    }

    #[test]
    fn idle_timeouts_per_protocol_and_state() {
        let to = Timeouts::default();
        let t = table(100);
        let syn = key(1, 1, 80, PROTO_TCP);
        let est = key(2, 2, 80, PROTO_TCP);
        let fin = key(3, 3, 80, PROTO_TCP);
        let udp = key(4, 4, 53, PROTO_UDP);
        let icmp = key(5, 0, 0, 1);
        for (k, f) in [(&syn, SYN), (&est, SYN), (&fin, SYN), (&udp, 0), (&icmp, 0)] {
            assert!(matches!(t.insert(k, target_of(k), f, 0), Insert::New(_)));
        }
        t.lookup(&est, ACK, 1).unwrap();
        t.lookup(&fin, ACK, 1).unwrap();
        t.lookup(&fin, FIN | ACK, 1).unwrap();
        assert!(to.tcp_syn <= 10 * NS && to.tcp_established >= 120 * NS);
        assert!(to.tcp_fin < to.tcp_established && (30 * NS..=60 * NS).contains(&to.udp));
        // Just before each timeout: alive (peek does not refresh).
        assert!(t.peek(&syn, to.tcp_syn - 1).is_some());
        assert!(t.peek(&syn, to.tcp_syn).is_none());
        assert!(t.peek(&fin, 1 + to.tcp_fin - 1).is_some());
        assert!(t.peek(&fin, 1 + to.tcp_fin).is_none());
        assert!(t.peek(&udp, to.udp - 1).is_some());
        assert!(t.peek(&udp, to.udp).is_none());
        assert!(t.peek(&icmp, to.other).is_none());
        // Traffic refreshes: a UDP flow seen every 50 s lives on.
        let mut now = 0;
        for _ in 0..10 {
            now += to.udp - NS;
            assert!(t.lookup(&udp, 0, now).is_some());
        }
        // The established connection outlives everything but its own timeout.
        assert!(t.peek(&est, 1 + to.tcp_established - 1).is_some());
        assert_eq!(t.lookup(&est, ACK, 1 + to.tcp_established), None);
        assert_eq!(t.stats().expired, 1);
        // A sweep at the end removes the rest; len counts them out.
        let removed = t.sweep(now + to.udp, t.buckets());
        assert_eq!(removed, 4);
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 5);
    }

    #[test]
    fn sweep_is_bounded_and_cycles() {
        let t = table(4096);
        for i in 0..2000u32 {
            let k = key(i, 1000 + (i % 50) as u16, 80, PROTO_UDP);
            assert!(matches!(t.insert(&k, target_of(&k), 0, 0), Insert::New(_)));
        }
        assert_eq!(t.len(), 2000);
        let later = Timeouts::default().udp;
        let nb = t.buckets();
        let mut total = 0;
        let mut calls = 0;
        while total < 2000 {
            let r = t.sweep(later, 16);
            // 16 buckets hold at most 16 * SLOTS entries.
            assert!(r <= 16 * SLOTS);
            total += r;
            calls += 1;
            assert!(calls <= nb / 16, "sweep did not finish in one pass");
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.sweep(later, 0), 0);
    }

    #[test]
    fn full_table_prefers_established_and_reuses_expired() {
        // 10 entries in 2 buckets: every key's two choices are the whole table, so
        // "oldest" is global and exactly testable.
        let t = table(10);
        assert_eq!(t.buckets(), 2);
        let est: Vec<ConnKey> = (0..10).map(|i| key(100 + i, 2000, 80, PROTO_TCP)).collect();
        for (i, k) in est.iter().enumerate() {
            assert!(matches!(
                t.insert(k, target_of(k), SYN, i as u64),
                Insert::New(_)
            ));
            t.lookup(k, ACK, i as u64).unwrap();
        }
        assert_eq!(t.len(), 10);
        // A new SYN cannot push out a live established connection.
        let s1 = key(500, 3000, 80, PROTO_TCP);
        assert_eq!(t.insert(&s1, target_of(&s1), SYN, 20), Insert::NotRecorded);
        // Nor can a UDP flow.
        let u1 = key(501, 53, 53, PROTO_UDP);
        assert_eq!(t.insert(&u1, target_of(&u1), 0, 20), Insert::NotRecorded);
        assert_eq!(t.stats().refusals, 2);
        assert_eq!(t.len(), 10);
        for k in &est {
            assert!(t.peek(k, 20).is_some());
        }
        // A connection picked up mid-flow (established) evicts the oldest.
        let m1 = key(502, 3001, 80, PROTO_TCP);
        assert!(matches!(
            t.insert(&m1, target_of(&m1), ACK, 21),
            Insert::New(_)
        ));
        assert!(t.peek(&est[0], 21).is_none());
        assert!(t.peek(&est[1], 21).is_some());
        assert_eq!(t.stats().evictions, 1);
        // Close one by RST: it is now the first to go, even though it is newest.
        t.lookup(&est[9], RST, 22).unwrap();
        assert!(matches!(
            t.insert(&s1, target_of(&s1), SYN, 23),
            Insert::New(_)
        ));
        assert!(t.peek(&est[9], 23).is_none());
        assert!(t.peek(&s1, 23).is_some());
        // Half-open versus half-open: the oldest goes first.
        let s2 = key(503, 3002, 80, PROTO_TCP);
        assert_eq!(
            t.insert(&s2, target_of(&s2), SYN, 24),
            Insert::New(Conn {
                target: target_of(&s2),
                state: State::SynSent,
                last_seen: 24
            })
        );
        assert!(t.peek(&s1, 24).is_none(), "older half-open entry evicted");
        assert_eq!(t.len(), 10);
        assert_eq!(t.stats().evictions, 3);
        // Once the established entries expire, new SYNs reuse their slots.
        let late = 25 + Timeouts::default().tcp_established;
        for i in 0..9u32 {
            let k = key(600 + i, 4000, 80, PROTO_TCP);
            assert!(
                matches!(t.insert(&k, target_of(&k), SYN, late), Insert::New(_)),
                "{i}"
            );
        }
        let s = t.stats();
        assert_eq!(s.len, 10);
        assert_eq!(s.evictions, 3);
        assert!(s.expired >= 9, "{s:?}");
    }

    #[test]
    fn full_bucket_in_a_large_table() {
        // The same client address and port to many virtual ports: all these keys
        // share their two buckets, 2 * SLOTS entries in all.
        let t = table(10_000);
        let ks: Vec<ConnKey> = (0..3 * SLOTS as u16)
            .map(|p| key(7, 7777, 1000 + p, PROTO_TCP))
            .collect();
        let mut new = 0;
        for k in &ks {
            match t.insert(k, target_of(k), ACK, 1) {
                Insert::New(_) => new += 1,
                Insert::NotRecorded => {}
                Insert::Existing(_) => panic!("distinct keys"),
            }
        }
        // All established and equally old: eviction picks among them, so every
        // insert succeeds, but only 2 * SLOTS stay.
        assert_eq!(new, ks.len());
        assert_eq!(t.len(), 2 * SLOTS);
        assert_eq!(t.stats().evictions, SLOTS as u64);
        // A SYN to the same buckets is refused; one from another client is not.
        let s = key(7, 7777, 9, PROTO_TCP);
        assert_eq!(t.insert(&s, target_of(&s), SYN, 2), Insert::NotRecorded);
        let s = key(8, 7777, 9, PROTO_TCP);
        assert!(matches!(
            t.insert(&s, target_of(&s), SYN, 2),
            Insert::New(_)
        ));
    }

    #[test]
    fn hostile_keys_and_times_do_not_panic() {
        let t = ConnTable::new(64);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut removed = 0u64;
        for _ in 0..20_000 {
            let r = next();
            let k = ConnKey {
                // Arbitrary bytes, but from a small pool so keys repeat.
                client: (u128::from(r % 16) << 100 | 0xffff).to_le_bytes(),
                vip: u128::from(next() % 4)
                    .wrapping_mul(u128::MAX / 3)
                    .to_le_bytes(),
                client_port: (r >> 16) as u16 % 8,
                vport: (r >> 32) as u16 % 4,
                version: (r >> 48) as u8 & 0x82,
                proto: (r >> 56) as u8 & 0x13,
            };
            let now = next() % (2000 * NS);
            match r % 5 {
                0 | 1 => {
                    let _ = t.insert(&k, target_of(&k), (r >> 8) as u8, now);
                }
                2 => {
                    if let Some(c) = t.lookup(&k, (r >> 8) as u8, now) {
                        assert_eq!(c.target, target_of(&k));
                    }
                }
                3 => {
                    let _ = t.sweep(now, (r >> 20) as usize % 100);
                }
                _ => {
                    removed += u64::from(t.remove(&k).is_some());
                }
            }
            assert!(t.len() <= 64);
        }
        // Every entry ever inserted is live, expired, evicted or removed; and the
        // count of live entries agrees with the slots.
        let s = t.stats();
        assert!(
            s.inserts > 1000 && s.evictions > 0 && s.expired > 0 && removed > 0,
            "{s:?}"
        );
        assert_eq!(
            s.inserts,
            s.len as u64 + s.expired + s.evictions + s.superseded + removed
        );
        let live: usize = t
            .buckets
            .iter()
            .map(|b| b.lock().iter().filter(|s| s.used).count())
            .sum();
        assert_eq!(live, s.len);
    }

    #[test]
    fn concurrent_inserts_and_lookups_see_only_their_own_values() {
        let t = table(20_000);
        let threads = 4u32;
        let per = 3000u32;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for th in 0..threads {
                let t = &t;
                workers.push(s.spawn(move || {
                    let mut x = 0x9e37_79b9u64 + u64::from(th);
                    for i in 0..per {
                        // Keys are shared between threads (half of them collide on
                        // purpose): whoever inserts first wins, and all must agree.
                        let owner = if i % 2 == 0 { th } else { 0 };
                        let k = key(owner * 100_000 + i, (i % 64) as u16 + 1, 80, PROTO_TCP);
                        let now = u64::from(i);
                        match t.insert(&k, target_of(&k), SYN, now) {
                            Insert::New(c) | Insert::Existing(c) => {
                                assert_eq!(c.target, target_of(&k))
                            }
                            Insert::NotRecorded => panic!("table has room"),
                        }
                        assert_eq!(
                            t.lookup(&k, ACK, now).map(|c| c.target),
                            Some(target_of(&k))
                        );
                        // Look up some random earlier key of any thread.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let j = (x % u64::from(i + 1)) as u32;
                        let o = (x >> 32) as u32 % threads;
                        let o = if j.is_multiple_of(2) { o } else { 0 };
                        let k2 = key(o * 100_000 + j, (j % 64) as u16 + 1, 80, PROTO_TCP);
                        if let Some(c) = t.lookup(&k2, ACK, now) {
                            assert_eq!(c.target, target_of(&k2));
                        }
                    }
                }));
            }
            // The control core sweeps meanwhile (nothing is expired: no effect
            // except lock traffic).
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(t.sweep(per as u64, 64), 0);
                    std::thread::yield_now();
                }
            });
            // Let the workers finish (a failed assertion in one is re-raised
            // here), then stop the sweeper.
            let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            stop.store(true, Ordering::Relaxed);
            for r in results {
                if let Err(e) = r {
                    std::panic::resume_unwind(e);
                }
            }
        });
        let distinct = per / 2 * threads + per / 2;
        assert_eq!(t.len(), distinct as usize);
        assert_eq!(t.stats().inserts, u64::from(distinct));
        for th in 0..threads {
            for i in 0..per {
                let owner = if i % 2 == 0 { th } else { 0 };
                let k = key(owner * 100_000 + i, (i % 64) as u16 + 1, 80, PROTO_TCP);
                assert_eq!(
                    t.peek(&k, u64::from(per)).map(|c| c.target),
                    Some(target_of(&k))
                );
            }
        }
    }

    #[test]
    fn concurrent_churn_on_a_tiny_table() {
        // Two buckets, 10 entries, 4 threads inserting, looking up, removing and
        // sweeping keys from one small pool: every lock is contended and entries
        // are evicted and expired all the time. Whatever a thread finds must be
        // exactly what was inserted for that key, and the count must stay exact.
        let t = ConnTable::with_config(
            10,
            Timeouts {
                tcp_established: 50,
                udp: 30,
                ..Timeouts::default()
            },
            7,
        );
        std::thread::scope(|s| {
            for th in 0..4u64 {
                let t = &t;
                s.spawn(move || {
                    let mut x = 0x2545_f491_4f6c_dd1d ^ th;
                    for step in 0..20_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let proto = if x & 1 == 0 { PROTO_TCP } else { PROTO_UDP };
                        let k = key((x >> 8) as u32 % 24, (x >> 16) as u16 % 3, 80, proto);
                        let now = step;
                        let found = match (x >> 32) % 4 {
                            0 => match t.insert(&k, target_of(&k), ACK, now) {
                                Insert::New(c) | Insert::Existing(c) => Some(c),
                                Insert::NotRecorded => None,
                            },
                            1 => t.lookup(&k, ACK, now),
                            2 => t.remove(&k),
                            _ => {
                                t.sweep(now, 1);
                                None
                            }
                        };
                        if let Some(c) = found {
                            assert_eq!(c.target, target_of(&k));
                        }
                        assert!(t.len() <= 10);
                    }
                });
            }
        });
        let live: usize = t
            .buckets
            .iter()
            .map(|b| b.lock().iter().filter(|s| s.used).count())
            .sum();
        assert_eq!(live, t.len());
        let st = t.stats();
        assert!(st.evictions > 0 && st.expired > 0, "{st:?}");
    }
}
