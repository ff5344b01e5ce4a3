//! The neighbour table (ARP for IPv4, neighbour discovery for IPv6): which MAC
//! address an on-link IP address has, learned from replies and from requests'
//! sender fields, aged by time; and [`Pending`], the per-core queue of packets
//! held while a resolution is outstanding.
//!
//! [`NeighTable`] is shared by the switching cores. Every forwarded packet looks up
//! its next hop, so lookups are pure reads: each bucket is a sequence lock over
//! atomic words, and readers never write to shared memory (no cache line bounces
//! between cores that resolve the same gateway). Writers (learning, the request
//! rate limit, static entries) are rare and take the bucket's sequence as a lock.
//! There is no `unsafe` here. States are computed from timestamps at lookup time
//! (`now`, nanoseconds of a monotonic clock the caller reads): an entry confirmed
//! by a reply is [`NeighState::Reachable`] for [`NeighTimes::reachable`], then
//! [`NeighState::Stale`] (still used, but worth re-confirming: the caller sends a
//! request when [`NeighTable::should_request`] says so) until it is forgotten;
//! a stale entry whose re-confirmation goes unanswered is forgotten sooner.
//!
//! It does not build or parse ARP / NDP packets (see `wire`), and it is not the
//! kernel's state machine (no DELAY / PROBE states, no unicast-then-broadcast
//! probe counting): what a load balancer needs to forward to routers and back
//! ends, with bounded memory.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::balance::hash_words;

/// A MAC address.
pub type Mac = [u8; 6];

const NS: u64 = 1_000_000_000;

/// Entries per bucket.
const WAYS: usize = 4;

/// "No time recorded" in a time word.
const NEVER: u64 = u64::MAX;

/// An IP address as the table keys it: the version (4 or 6) and the 16-byte form
/// (IPv4 as IPv4-mapped IPv6, as in `lbp_abi::Fields`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NeighAddr {
    pub version: u8,
    pub addr: [u8; 16],
}

impl NeighAddr {
    /// An IPv4 address.
    pub fn v4(a: [u8; 4]) -> NeighAddr {
        NeighAddr::from(IpAddr::from(a))
    }

    /// An IPv6 address.
    pub fn v6(a: [u8; 16]) -> NeighAddr {
        NeighAddr {
            version: 6,
            addr: a,
        }
    }
}

impl From<IpAddr> for NeighAddr {
    fn from(ip: IpAddr) -> NeighAddr {
        match ip {
            IpAddr::V4(a) => NeighAddr {
                version: 4,
                addr: a.to_ipv6_mapped().octets(),
            },
            IpAddr::V6(a) => NeighAddr::v6(a.octets()),
        }
    }
}

/// A neighbour entry's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NeighState {
    /// A request was sent, no answer yet: no MAC to use.
    Incomplete,
    /// Confirmed by a reply within [`NeighTimes::reachable`].
    Reachable,
    /// Known but not recently confirmed (or learned from a request only): use it,
    /// and re-confirm.
    Stale,
    /// Configured; never ages, never evicted.
    Permanent,
}

impl NeighState {
    fn code(self) -> u64 {
        match self {
            NeighState::Incomplete => 1,
            NeighState::Reachable => 2,
            NeighState::Stale => 3,
            NeighState::Permanent => 4,
        }
    }

    fn from_code(c: u64) -> Option<NeighState> {
        match c {
            1 => Some(NeighState::Incomplete),
            2 => Some(NeighState::Reachable),
            3 => Some(NeighState::Stale),
            4 => Some(NeighState::Permanent),
            _ => None,
        }
    }

    /// Eviction order: lower goes first.
    fn rank(self) -> u8 {
        match self {
            NeighState::Incomplete => 0,
            NeighState::Stale => 1,
            NeighState::Reachable => 2,
            NeighState::Permanent => 3,
        }
    }
}

/// A usable neighbour: its MAC and state (never `Incomplete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Mac,
    pub state: NeighState,
}

/// How a mapping was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// An ARP reply or a solicited neighbour advertisement: confirms reachability.
    Reply,
    /// The sender fields of a request (or an unsolicited advertisement): the
    /// mapping is recorded as stale; it never pushes other entries out.
    Request,
}

/// Timers, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighTimes {
    /// How long a reply keeps an entry reachable. Default 30 s.
    pub reachable: u64,
    /// How long after its last confirmation an entry is forgotten. Default 5 min.
    pub forget: u64,
    /// How long an incomplete entry waits for an answer. Default 3 s.
    pub incomplete: u64,
    /// The least time between two requests for one address. Default 1 s.
    pub request_interval: u64,
    /// How long a stale entry stays usable after a re-confirming request went
    /// unanswered. Default 3 s.
    pub probe: u64,
}

impl Default for NeighTimes {
    fn default() -> NeighTimes {
        NeighTimes {
            reachable: 30 * NS,
            forget: 300 * NS,
            incomplete: 3 * NS,
            request_interval: NS,
            probe: 3 * NS,
        }
    }
}

/// One entry's words: address (two), `mac | state << 48 | version << 56`, the
/// time of the last confirmation (or of creation, when incomplete), the time of
/// the last request sent, and the time since which a request is unanswered.
#[derive(Debug)]
struct Slot {
    w: [AtomicU64; 6],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Data {
    addr: NeighAddr,
    mac: Mac,
    state: Option<NeighState>,
    confirmed: u64,
    last_request: u64,
    unanswered: u64,
}

fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

impl Slot {
    fn new() -> Slot {
        Slot {
            w: [0, 0, 0, 0, NEVER, NEVER].map(AtomicU64::new),
        }
    }

    /// Whether the slot holds `a` (a racy read; validated by the caller's
    /// sequence check).
    #[inline]
    fn holds(&self, a: &NeighAddr) -> bool {
        let [lo, hi] = addr_words(&a.addr);
        let meta = self.w[2].load(Ordering::Relaxed);
        self.w[0].load(Ordering::Relaxed) == lo
            && self.w[1].load(Ordering::Relaxed) == hi
            && (meta >> 56) as u8 == a.version
            && (meta >> 48) & 0xff != 0
    }

    #[inline]
    fn load(&self) -> Data {
        let lo = self.w[0].load(Ordering::Relaxed).to_le_bytes();
        let hi = self.w[1].load(Ordering::Relaxed).to_le_bytes();
        let meta = self.w[2].load(Ordering::Relaxed);
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&lo);
        addr[8..].copy_from_slice(&hi);
        let m = meta.to_le_bytes();
        Data {
            addr: NeighAddr {
                version: (meta >> 56) as u8,
                addr,
            },
            mac: [m[0], m[1], m[2], m[3], m[4], m[5]],
            state: NeighState::from_code((meta >> 48) & 0xff),
            confirmed: self.w[3].load(Ordering::Relaxed),
            last_request: self.w[4].load(Ordering::Relaxed),
            unanswered: self.w[5].load(Ordering::Relaxed),
        }
    }

    /// Only under the bucket's write lock.
    fn store(&self, d: &Data) {
        let [lo, hi] = addr_words(&d.addr.addr);
        let mut m = [0u8; 8];
        m[..6].copy_from_slice(&d.mac);
        let meta = u64::from_le_bytes(m)
            | d.state.map_or(0, NeighState::code) << 48
            | u64::from(d.addr.version) << 56;
        self.w[0].store(lo, Ordering::Relaxed);
        self.w[1].store(hi, Ordering::Relaxed);
        self.w[2].store(meta, Ordering::Relaxed);
        self.w[3].store(d.confirmed, Ordering::Relaxed);
        self.w[4].store(d.last_request, Ordering::Relaxed);
        self.w[5].store(d.unanswered, Ordering::Relaxed);
    }
}

/// A bucket: a sequence lock (odd while a writer is inside) over `WAYS` slots.
#[derive(Debug)]
struct Bucket {
    seq: AtomicU64,
    slots: [Slot; WAYS],
}

/// Holds a bucket's sequence at `seq + 1` (odd); dropping it publishes `seq + 2`.
struct WriteGuard<'a> {
    bucket: &'a Bucket,
    seq: u64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.bucket
            .seq
            .store(self.seq.wrapping_add(2), Ordering::Release);
    }
}

impl Bucket {
    /// Run `f` over a consistent snapshot of the slots (retrying while a writer
    /// is, or was, inside).
    #[inline]
    fn read<R>(&self, f: impl Fn(&[Slot; WAYS]) -> R) -> R {
        let mut spins = 0u32;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = f(&self.slots);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return r;
                }
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn write(&self) -> WriteGuard<'_> {
        let mut spins = 0u32;
        loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(
                        s,
                        s.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                // Readers that see any of the writes below must also see the odd
                // sequence number (and retry).
                fence(Ordering::Release);
                return WriteGuard {
                    bucket: self,
                    seq: s,
                };
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The effective state of an entry at `now`; `None` for a free slot or an entry
/// that has timed out.
fn effective(d: &Data, now: u64, t: &NeighTimes) -> Option<NeighState> {
    let state = d.state?;
    let age = now.saturating_sub(d.confirmed);
    match state {
        NeighState::Permanent => Some(state),
        NeighState::Incomplete => (age < t.incomplete).then_some(state),
        NeighState::Reachable | NeighState::Stale => {
            if age >= t.forget
                || (d.unanswered != NEVER && now.saturating_sub(d.unanswered) >= t.probe)
            {
                None
            } else if state == NeighState::Reachable && age < t.reachable {
                Some(NeighState::Reachable)
            } else {
                Some(NeighState::Stale)
            }
        }
    }
}

/// The shared neighbour table. See the module documentation.
#[derive(Debug)]
pub struct NeighTable {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
    times: NeighTimes,
    refusals: AtomicU64,
}

/// Where a new entry goes in a write-locked bucket.
enum Room {
    At(usize),
    Full,
}

impl NeighTable {
    /// A table with room for at least `capacity` entries (buckets of four, twice
    /// as many slots as asked for, so a bucket seldom fills) and default timers.
    pub fn new(capacity: usize) -> NeighTable {
        NeighTable::with_times(capacity, NeighTimes::default(), 0x6e65_6967_6862_6f72)
    }

    /// A table with explicit timers and hash seed.
    pub fn with_times(capacity: usize, times: NeighTimes, seed: u64) -> NeighTable {
        let want = capacity.max(1).saturating_mul(2).div_ceil(WAYS);
        let n = want
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 2));
        let buckets = (0..n)
            .map(|_| Bucket {
                seq: AtomicU64::new(0),
                slots: std::array::from_fn(|_| Slot::new()),
            })
            .collect();
        NeighTable {
            buckets,
            mask: n - 1,
            seed,
            times,
            refusals: AtomicU64::new(0),
        }
    }

    #[inline]
    fn bucket(&self, a: &NeighAddr) -> &Bucket {
        let [lo, hi] = addr_words(&a.addr);
        let h = hash_words(&[lo, hi, u64::from(a.version)], self.seed);
        &self.buckets[h as usize & self.mask]
    }

    /// The MAC to send to `addr` at `now`, if one is known: state `Reachable`,
    /// `Stale` (use it, and ask [`NeighTable::should_request`] whether to
    /// re-confirm) or `Permanent`. A pure read.
    #[inline]
    pub fn lookup(&self, addr: &NeighAddr, now: u64) -> Option<Neighbour> {
        let d = self
            .bucket(addr)
            .read(|slots| slots.iter().find(|s| s.holds(addr)).map(Slot::load))?;
        match effective(&d, now, &self.times)? {
            NeighState::Incomplete => None,
            state => Some(Neighbour { mac: d.mac, state }),
        }
    }

    /// The state of `addr`'s entry at `now` (including `Incomplete`).
    pub fn state(&self, addr: &NeighAddr, now: u64) -> Option<NeighState> {
        let d = self
            .bucket(addr)
            .read(|slots| slots.iter().find(|s| s.holds(addr)).map(Slot::load))?;
        effective(&d, now, &self.times)
    }

    /// [`NeighTable::room`] for `addr` in a locked bucket, a refusal counted
    /// when there is none: the slot, what it holds, and that entry's state if it
    /// is `addr`'s.
    fn claim<'b>(
        &self,
        b: &'b Bucket,
        addr: &NeighAddr,
        now: u64,
        rank: u8,
        may_evict: bool,
    ) -> Option<(&'b Slot, Data, Option<NeighState>)> {
        let Room::At(i) = self.room(b, addr, now, rank, may_evict) else {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let slot = &b.slots[i];
        let old = slot.load();
        let current = if old.addr == *addr {
            effective(&old, now, &self.times)
        } else {
            None
        };
        Some((slot, old, current))
    }

    /// Find room for `addr` (rank `rank`) in a locked bucket: its own slot, a free
    /// or timed-out one, else (if `may_evict`) the least valuable entry of rank
    /// at most `rank` (oldest first). Permanent entries are never chosen.
    fn room(&self, b: &Bucket, addr: &NeighAddr, now: u64, rank: u8, may_evict: bool) -> Room {
        let mut free = None;
        let mut victim: Option<(usize, (u8, u64))> = None;
        for (i, s) in b.slots.iter().enumerate() {
            let d = s.load();
            if d.state.is_some() && d.addr == *addr {
                return Room::At(i);
            }
            match effective(&d, now, &self.times) {
                None => {
                    free.get_or_insert(i);
                }
                Some(st) => {
                    let worth = (st.rank(), d.confirmed);
                    if st != NeighState::Permanent
                        && worth.0 <= rank
                        && victim.is_none_or(|v| worth < v.1)
                    {
                        victim = Some((i, worth));
                    }
                }
            }
        }
        match (free, victim) {
            (Some(i), _) => Room::At(i),
            (None, Some((i, _))) if may_evict => Room::At(i),
            _ => Room::Full,
        }
    }

    /// Record that `addr` has MAC `mac`, learned at `now` as `how` says. Returns
    /// whether it was recorded (not if the bucket has no room for it, or the
    /// address has a permanent entry).
    pub fn learn(&self, addr: &NeighAddr, mac: Mac, how: Learned, now: u64) -> bool {
        let b = self.bucket(addr);
        let _w = b.write();
        let (rank, may_evict) = match how {
            Learned::Reply => (NeighState::Reachable.rank(), true),
            Learned::Request => (NeighState::Stale.rank(), false),
        };
        let Some((slot, old, current)) = self.claim(b, addr, now, rank, may_evict) else {
            return false;
        };
        let (state, confirmed) = match (how, current) {
            (_, Some(NeighState::Permanent)) => return false,
            (Learned::Reply, _) => (NeighState::Reachable, now),
            // A request from a neighbour whose confirmed MAC is unchanged leaves
            // the entry as it is: it proves nothing about reachability.
            (Learned::Request, Some(st @ (NeighState::Reachable | NeighState::Stale)))
                if old.mac == mac =>
            {
                (st, old.confirmed)
            }
            (Learned::Request, _) => (NeighState::Stale, now),
        };
        let keep_requests = current.is_some();
        slot.store(&Data {
            addr: *addr,
            mac,
            state: Some(state),
            confirmed,
            last_request: if keep_requests {
                old.last_request
            } else {
                NEVER
            },
            unanswered: if how == Learned::Reply || !keep_requests {
                NEVER
            } else {
                old.unanswered
            },
        });
        true
    }

    /// Configure a permanent entry (evicting the least valuable entry of its
    /// bucket if need be; `false` only if the bucket is all permanent entries).
    pub fn set_permanent(&self, addr: &NeighAddr, mac: Mac) -> bool {
        let b = self.bucket(addr);
        let _w = b.write();
        let Room::At(i) = self.room(b, addr, 0, NeighState::Permanent.rank(), true) else {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        b.slots[i].store(&Data {
            addr: *addr,
            mac,
            state: Some(NeighState::Permanent),
            confirmed: 0,
            last_request: NEVER,
            unanswered: NEVER,
        });
        true
    }

    /// Forget `addr` (whatever its state). Returns whether there was an entry.
    pub fn remove(&self, addr: &NeighAddr) -> bool {
        let b = self.bucket(addr);
        let _w = b.write();
        for s in &b.slots {
            let d = s.load();
            if d.state.is_some() && d.addr == *addr {
                s.store(&Data::default());
                return true;
            }
        }
        false
    }

    /// Should the caller send a request (ARP request / neighbour solicitation) for
    /// `addr` now? True at most once per [`NeighTimes::request_interval`] per
    /// address, and only when the address is not known, incomplete, or stale
    /// (never for reachable or permanent entries). A `true` is recorded as a
    /// request sent: an unknown address gets an incomplete entry, and a stale
    /// one starts waiting for its answer ([`NeighTimes::probe`]). `false` also
    /// when the table has no room to track the request (counted as a refusal).
    pub fn should_request(&self, addr: &NeighAddr, now: u64) -> bool {
        let b = self.bucket(addr);
        // The common "asked less than a second ago" answer, without writing.
        let recent = b.read(|slots| {
            slots
                .iter()
                .find(|s| s.holds(addr))
                .map(|s| (s.load(), effective(&s.load(), now, &self.times)))
        });
        if let Some((d, Some(st))) = recent {
            if matches!(st, NeighState::Reachable | NeighState::Permanent) {
                return false;
            }
            if d.last_request != NEVER
                && now.saturating_sub(d.last_request) < self.times.request_interval
            {
                return false;
            }
        }
        let _w = b.write();
        let rank = NeighState::Incomplete.rank();
        let Some((slot, old, current)) = self.claim(b, addr, now, rank, true) else {
            return false;
        };
        let d = match current {
            Some(NeighState::Reachable | NeighState::Permanent) => return false,
            Some(_)
                if old.last_request != NEVER
                    && now.saturating_sub(old.last_request) < self.times.request_interval =>
            {
                return false;
            }
            Some(NeighState::Incomplete) => Data {
                last_request: now,
                ..old
            },
            Some(NeighState::Stale) => Data {
                last_request: now,
                unanswered: if old.unanswered == NEVER {
                    now
                } else {
                    old.unanswered
                },
                ..old
            },
            None => Data {
                addr: *addr,
                mac: [0; 6],
                state: Some(NeighState::Incomplete),
                confirmed: now,
                last_request: now,
                unanswered: NEVER,
            },
        };
        slot.store(&d);
        true
    }

    /// Free the slots of timed-out entries (all buckets; the table is small).
    /// Returns how many were freed. Optional: writers reuse timed-out slots anyway.
    pub fn sweep(&self, now: u64) -> usize {
        let mut freed = 0;
        for b in self.buckets.iter() {
            let _w = b.write();
            for s in &b.slots {
                let d = s.load();
                if d.state.is_some() && effective(&d, now, &self.times).is_none() {
                    s.store(&Data::default());
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Entries alive at `now` (a scan; for the control core and tests).
    pub fn len(&self, now: u64) -> usize {
        self.buckets
            .iter()
            .map(|b| {
                b.read(|slots| {
                    slots
                        .iter()
                        .filter(|s| effective(&s.load(), now, &self.times).is_some())
                        .count()
                })
            })
            .sum()
    }

    /// Slots in all (the most entries the table can hold).
    pub fn slots(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Entries not recorded (or requests not tracked) for lack of room.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The timers in force.
    pub fn times(&self) -> &NeighTimes {
        &self.times
    }
}

/// Packets waiting for an address to resolve, per switching core (not shared).
///
/// Bounded per address (`per_address`, like the kernel's `unres_qlen`) and in
/// total, with a deadline each (`now + hold`). Ownership is never lost: every
/// item pushed comes back exactly once, either refused by [`Pending::push`]
/// (`Err(item)`), or through the callback of [`Pending::take_ready`] (the answer
/// arrived), [`Pending::expire`] (too late: the caller frees it) or
/// [`Pending::drain`] (shutdown). Dropping a `Pending` drops what is still in it,
/// so a caller whose items are frame descriptors drains it first. All memory is
/// allocated by [`Pending::new`]; nothing here allocates or panics afterwards.
/// Addresses are found by a linear scan of `max_addresses` groups: meant for
/// tens of outstanding resolutions, not thousands.
#[derive(Debug)]
pub struct Pending<T> {
    addrs: Box<[Option<NeighAddr>]>,
    counts: Box<[usize]>,
    items: Box<[Option<(T, u64)>]>,
    per_address: usize,
    max_total: usize,
    total: usize,
    hold: u64,
}

impl<T> Pending<T> {
    /// Room for `per_address` items for each of `max_addresses` addresses, at most
    /// `max_total` in all, each held `hold` nanoseconds.
    pub fn new(
        max_addresses: usize,
        per_address: usize,
        max_total: usize,
        hold: u64,
    ) -> Pending<T> {
        let groups = max_addresses.max(1);
        let per = per_address.max(1);
        Pending {
            addrs: vec![None; groups].into_boxed_slice(),
            counts: vec![0; groups].into_boxed_slice(),
            items: (0..groups.saturating_mul(per)).map(|_| None).collect(),
            per_address: per,
            max_total,
            total: 0,
            hold,
        }
    }

    /// 64 addresses, 3 packets each, 128 in all, held 3 s.
    pub fn with_defaults() -> Pending<T> {
        Pending::new(64, 3, 128, 3 * NS)
    }

    fn group(&self, addr: &NeighAddr) -> Option<usize> {
        self.addrs.iter().position(|a| a.as_ref() == Some(addr))
    }

    /// Hold `item` until `addr` resolves or `now + hold` passes. `Err(item)` (the
    /// caller keeps it, typically to free it) when this address already has
    /// `per_address` items waiting, or the total is reached, or no address group
    /// is free.
    pub fn push(&mut self, addr: &NeighAddr, item: T, now: u64) -> Result<(), T> {
        if self.total >= self.max_total {
            return Err(item);
        }
        let g = match self.group(addr) {
            Some(g) => g,
            None => match self.addrs.iter().position(Option::is_none) {
                Some(g) => {
                    self.addrs[g] = Some(*addr);
                    g
                }
                None => return Err(item),
            },
        };
        let n = self.counts[g];
        if n >= self.per_address {
            return Err(item);
        }
        match self.items.get_mut(g * self.per_address + n) {
            Some(slot) => *slot = Some((item, now.saturating_add(self.hold))),
            None => return Err(item),
        }
        self.counts[g] = n + 1;
        self.total += 1;
        Ok(())
    }

    /// `addr` resolved: hand its waiting items to `out`, oldest first. Returns how
    /// many.
    pub fn take_ready(&mut self, addr: &NeighAddr, mut out: impl FnMut(T)) -> usize {
        let Some(g) = self.group(addr) else { return 0 };
        let n = self.counts[g];
        let base = g * self.per_address;
        for slot in self.items.iter_mut().skip(base).take(n) {
            if let Some((item, _)) = slot.take() {
                out(item);
            }
        }
        self.counts[g] = 0;
        self.addrs[g] = None;
        self.total -= n;
        n
    }

    /// Hand every item whose deadline is at or before `now` to `out` (oldest
    /// first per address). Returns how many.
    pub fn expire(&mut self, now: u64, mut out: impl FnMut(T)) -> usize {
        // Called on every burst: nothing to scan in the usual case.
        if self.total == 0 {
            return 0;
        }
        let mut expired = 0;
        for g in 0..self.addrs.len() {
            let n = self.counts[g];
            if n == 0 {
                continue;
            }
            let base = g * self.per_address;
            let mut kept = 0;
            for j in 0..n {
                let Some(entry) = self.items.get_mut(base + j).and_then(Option::take) else {
                    continue;
                };
                if entry.1 <= now {
                    out(entry.0);
                    expired += 1;
                } else {
                    if let Some(dst) = self.items.get_mut(base + kept) {
                        *dst = Some(entry);
                    }
                    kept += 1;
                }
            }
            self.counts[g] = kept;
            if kept == 0 {
                self.addrs[g] = None;
            }
        }
        self.total -= expired;
        expired
    }

    /// Hand every item to `out` (shutdown). Returns how many.
    pub fn drain(&mut self, mut out: impl FnMut(T)) -> usize {
        self.expire(u64::MAX, &mut out)
    }

    /// Items waiting in all.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Items waiting for `addr`.
    pub fn waiting(&self, addr: &NeighAddr) -> usize {
        self.group(addr).map_or(0, |g| self.counts[g])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;

    const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];

    fn gw() -> NeighAddr {
        NeighAddr::v4([198, 18, 0, 1])
    }

    #[test]
    fn addresses_keep_families_apart() {
        let v4 = NeighAddr::v4([198, 18, 0, 1]);
        let mapped = NeighAddr::v6(v4.addr);
        assert_ne!(v4, mapped);
        assert_eq!(NeighAddr::from("198.18.0.1".parse::<IpAddr>().unwrap()), v4);
        let t = NeighTable::new(16);
        assert!(t.learn(&v4, MAC_A, Learned::Reply, 0));
        assert_eq!(t.lookup(&mapped, 0), None);
        assert!(t.learn(&mapped, MAC_B, Learned::Reply, 0));
        assert_eq!(t.lookup(&v4, 0).unwrap().mac, MAC_A);
        assert_eq!(t.lookup(&mapped, 0).unwrap().mac, MAC_B);
    }

    #[test]
    fn resolution_and_aging() {
        let tm = NeighTimes::default();
        let t = NeighTable::new(16);
        let a = gw();
        assert_eq!(t.lookup(&a, 0), None);
        // Unknown: ask, once per second.
        assert!(t.should_request(&a, 0));
        assert_eq!(t.state(&a, 0), Some(NeighState::Incomplete));
        assert_eq!(t.lookup(&a, 0), None);
        assert!(!t.should_request(&a, tm.request_interval - 1));
        assert!(t.should_request(&a, tm.request_interval));
        // The reply arrives.
        assert!(t.learn(&a, MAC_A, Learned::Reply, 2 * NS));
        let n = t.lookup(&a, 2 * NS).unwrap();
        assert_eq!((n.mac, n.state), (MAC_A, NeighState::Reachable));
        assert!(!t.should_request(&a, 3 * NS), "reachable: no request");
        // Reachable for 30 s, then stale.
        assert_eq!(
            t.lookup(&a, 2 * NS + tm.reachable - 1).unwrap().state,
            NeighState::Reachable
        );
        let stale_at = 2 * NS + tm.reachable;
        assert_eq!(t.lookup(&a, stale_at).unwrap().state, NeighState::Stale);
        // A stale entry is used and re-confirmed; a reply makes it reachable.
        assert!(t.should_request(&a, stale_at));
        assert!(!t.should_request(&a, stale_at + 1));
        assert!(t.learn(&a, MAC_A, Learned::Reply, stale_at + 1000));
        assert_eq!(
            t.lookup(&a, stale_at + 1000).unwrap().state,
            NeighState::Reachable
        );
        // Unused and unconfirmed: forgotten after `forget`.
        let last = stale_at + 1000;
        assert_eq!(
            t.lookup(&a, last + tm.forget - 1).unwrap().state,
            NeighState::Stale
        );
        assert_eq!(t.lookup(&a, last + tm.forget), None);
        assert_eq!(t.len(last + tm.forget), 0);
        assert_eq!(t.sweep(last + tm.forget), 1);
    }

    #[test]
    fn unanswered_reconfirmation_forgets_a_stale_entry() {
        let tm = NeighTimes::default();
        let t = NeighTable::new(16);
        let a = gw();
        assert!(t.learn(&a, MAC_A, Learned::Reply, 0));
        let s = tm.reachable;
        assert!(t.should_request(&a, s));
        assert!(t.lookup(&a, s + tm.probe - 1).is_some());
        // More requests do not restart the probe clock.
        assert!(t.should_request(&a, s + tm.request_interval));
        assert_eq!(t.lookup(&a, s + tm.probe), None);
        // An incomplete entry gives up after `incomplete`.
        let b = NeighAddr::v4([198, 18, 0, 2]);
        assert!(t.should_request(&b, 0));
        assert_eq!(t.state(&b, tm.incomplete - 1), Some(NeighState::Incomplete));
        assert_eq!(t.state(&b, tm.incomplete), None);
        // ... and asking again starts over.
        assert!(t.should_request(&b, tm.incomplete));
    }

    #[test]
    fn learning_from_requests() {
        let t = NeighTable::new(16);
        let a = gw();
        // A request's sender: recorded, but stale.
        assert!(t.learn(&a, MAC_A, Learned::Request, 0));
        assert_eq!(t.lookup(&a, 0).unwrap().state, NeighState::Stale);
        // A reply confirms; a later request with the same MAC does not demote it.
        assert!(t.learn(&a, MAC_A, Learned::Reply, 1));
        assert!(t.learn(&a, MAC_A, Learned::Request, 2));
        assert_eq!(t.lookup(&a, 2).unwrap().state, NeighState::Reachable);
        // A request with a new MAC replaces it, as stale.
        assert!(t.learn(&a, MAC_B, Learned::Request, 3));
        assert_eq!(
            t.lookup(&a, 3),
            Some(Neighbour {
                mac: MAC_B,
                state: NeighState::Stale
            })
        );
        // An incomplete entry is completed by a request.
        let b = NeighAddr::v4([198, 18, 0, 3]);
        assert!(t.should_request(&b, 0));
        assert!(t.learn(&b, MAC_A, Learned::Request, 1));
        assert_eq!(t.lookup(&b, 1).unwrap().mac, MAC_A);
    }

    #[test]
    fn permanent_entries() {
        let t = NeighTable::new(16);
        let a = gw();
        assert!(t.set_permanent(&a, MAC_A));
        assert!(!t.learn(&a, MAC_B, Learned::Reply, 5));
        assert_eq!(
            t.lookup(&a, u64::MAX),
            Some(Neighbour {
                mac: MAC_A,
                state: NeighState::Permanent
            })
        );
        assert!(!t.should_request(&a, 100));
        assert!(t.remove(&a));
        assert!(!t.remove(&a));
        assert_eq!(t.lookup(&a, 0), None);
    }

    /// Addresses that share one bucket (searched with the table's own hash).
    fn same_bucket(t: &NeighTable, n: usize) -> Vec<NeighAddr> {
        let first = NeighAddr::v4([198, 18, 1, 0]);
        let target = t.bucket(&first) as *const Bucket;
        let mut out = vec![first];
        for i in 1..=u16::MAX {
            let a = NeighAddr::v4([198, 18, 2 + (i >> 8) as u8, i as u8]);
            if std::ptr::eq(t.bucket(&a), target) {
                out.push(a);
                if out.len() == n {
                    break;
                }
            }
        }
        assert_eq!(out.len(), n);
        out
    }

    #[test]
    fn full_bucket_keeps_the_most_valuable() {
        let t = NeighTable::new(64);
        let a = same_bucket(&t, WAYS + 3);
        // Fill with reachable entries, oldest first.
        for (i, x) in a[..WAYS].iter().enumerate() {
            assert!(t.learn(x, MAC_A, Learned::Reply, i as u64));
        }
        // Neither a request nor an unknown address can push reachable ones out.
        assert!(!t.learn(&a[WAYS], MAC_B, Learned::Request, 10));
        assert!(!t.should_request(&a[WAYS], 10));
        assert_eq!(t.refusals(), 2);
        // A reply does: it evicts the oldest.
        assert!(t.learn(&a[WAYS], MAC_B, Learned::Reply, 11));
        assert_eq!(t.lookup(&a[0], 11), None);
        assert!(t.lookup(&a[1], 11).is_some());
        // Once the entries have timed out, even an incomplete entry takes a slot.
        let late = 11 + t.times().forget;
        assert!(t.should_request(&a[WAYS + 1], late));
        assert_eq!(t.state(&a[WAYS + 1], late), Some(NeighState::Incomplete));
        // Permanent entries fill the bucket; then nothing else fits.
        for x in &a[..WAYS] {
            assert!(t.set_permanent(x, MAC_A));
        }
        assert!(!t.set_permanent(&a[WAYS + 2], MAC_A));
        assert!(!t.learn(&a[WAYS + 2], MAC_A, Learned::Reply, late));
    }

    #[test]
    fn concurrent_lookups_see_whole_entries() {
        // One writer flips an entry between two MACs and states while readers
        // look it up: a reader must see one of the two written entries whole,
        // never a mix.
        let t = NeighTable::new(8);
        let a = gw();
        let mac_for = |k: u8| [k, k, k, k, k, k];
        assert!(t.learn(&a, mac_for(1), Learned::Reply, 0));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut readers = Vec::new();
            for _ in 0..2 {
                readers.push(s.spawn(|| {
                    let mut seen = HashSet::new();
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) || n < 1000 {
                        let e = t.lookup(&a, 1).unwrap();
                        let k = e.mac[0];
                        assert!(e.mac == mac_for(k), "torn MAC {:?}", e.mac);
                        // Odd MACs are learned by reply, even ones by request.
                        let want = if k % 2 == 1 {
                            NeighState::Reachable
                        } else {
                            NeighState::Stale
                        };
                        assert_eq!(e.state, want);
                        seen.insert(k);
                        n += 1;
                        if n > 5_000_000 {
                            break;
                        }
                    }
                    seen.len()
                }));
            }
            for i in 0..20_000u32 {
                let k = (i % 200) as u8 + 1;
                let how = if k % 2 == 1 {
                    Learned::Reply
                } else {
                    Learned::Request
                };
                assert!(t.learn(&a, mac_for(k), how, 1));
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                let seen = r.join().unwrap();
                assert!(seen >= 1);
            }
        });
    }

    #[test]
    fn pending_bounds_and_order() {
        let mut p: Pending<u32> = Pending::new(2, 3, 5, 100);
        let (a, b, c) = (
            gw(),
            NeighAddr::v4([198, 18, 0, 2]),
            NeighAddr::v4([198, 18, 0, 3]),
        );
        for i in 0..3 {
            assert_eq!(p.push(&a, i, 0), Ok(()));
        }
        assert_eq!(p.push(&a, 3, 0), Err(3), "per-address bound");
        assert_eq!(p.push(&b, 10, 50), Ok(()));
        assert_eq!(p.push(&c, 20, 50), Err(20), "no free address group");
        assert_eq!(p.push(&b, 11, 60), Ok(()));
        assert_eq!(p.push(&b, 12, 60), Err(12), "total bound");
        assert_eq!(p.len(), 5);
        assert_eq!((p.waiting(&a), p.waiting(&b), p.waiting(&c)), (3, 2, 0));
        let mut got = Vec::new();
        assert_eq!(p.take_ready(&a, |x| got.push(x)), 3);
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(p.take_ready(&a, |x| got.push(x)), 0);
        // a's group is free again: c can use it.
        assert_eq!(p.push(&c, 20, 100), Ok(()));
        // Deadlines: b's first at 150, second at 160, c's at 200.
        got.clear();
        assert_eq!(p.expire(149, |x| got.push(x)), 0);
        assert_eq!(p.expire(150, |x| got.push(x)), 1);
        assert_eq!(got, [10]);
        assert_eq!(p.waiting(&b), 1);
        assert_eq!(p.expire(199, |x| got.push(x)), 1);
        assert_eq!(got, [10, 11]);
        assert_eq!(p.drain(|x| got.push(x)), 1);
        assert_eq!(got, [10, 11, 20]);
        assert!(p.is_empty());
        // Hostile sizes: zero everything, no panic, everything refused.
        let mut z: Pending<u8> = Pending::new(0, 0, 0, u64::MAX);
        assert_eq!(z.push(&a, 1, u64::MAX), Err(1));
        assert_eq!(z.expire(u64::MAX, |_| {}), 0);
    }

    #[test]
    fn pending_never_loses_an_item() {
        // Random pushes, answers and expiries: every item comes back exactly once.
        let mut p: Pending<u64> = Pending::new(8, 3, 16, 1000);
        let addrs: Vec<NeighAddr> = (0..12).map(|i| NeighAddr::v4([198, 18, 0, i])).collect();
        let mut back = vec![0u8; 50_000];
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut now = 0u64;
        for id in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % 50;
            let a = &addrs[(x >> 8) as usize % addrs.len()];
            if let Err(r) = p.push(a, id, now) {
                back[r as usize] += 1;
            }
            match (x >> 20) % 8 {
                0 => {
                    p.take_ready(&addrs[(x >> 30) as usize % addrs.len()], |i| {
                        back[i as usize] += 1
                    });
                }
                1 => {
                    p.expire(now, |i| back[i as usize] += 1);
                }
                _ => {}
            }
            assert!(p.len() <= 16);
        }
        let left = p.len();
        assert_eq!(p.drain(|i| back[i as usize] += 1), left);
        assert!(
            back.iter().all(|&n| n == 1),
            "an item came back other than once"
        );
    }
}
