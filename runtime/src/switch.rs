//! A switching core's per-burst work: for each received frame, ARP / neighbour
//! discovery, NAT return traffic and ICMP errors about balanced connections, the
//! compiled policy, and the action it decided (drop, reset, local, balance,
//! forward, expire), down to the transmit queue of an interface.
//!
//! [`process_burst`] is pure in the DPDK l3fwd sense: no system call, no clock
//! read (`now` is passed in, nanoseconds of a monotonic clock), no allocation on
//! the per-packet path (queues are preallocated in [`Outputs`] and [`CoreState`];
//! per-core tables are rebuilt only when a new [`Generation`] is seen, at the
//! start of a burst). It never touches a NIC: the caller receives the burst from
//! its ports and flushes [`Outputs`] to them afterwards.
//!
//! Ownership: every frame handed in ends the burst in exactly one place: an
//! interface's transmit queue, the local (TAP) queue, the core's queue of frames
//! waiting for a neighbour ([`CoreState`]'s `Pending`), or the free list. The
//! [`Counters`] keep the books (`frames_in + made + unheld == to_tx + to_local +
//! freed + held`); [`CoreState::balanced`] checks them, and debug builds assert it
//! after every burst.
//!
//! The order of checks on a packet:
//! 1. Too short for Ethernet, or `extract` says malformed: dropped (malformed).
//!    A frame the control plane sent (`in_iface` [`FROM_LOCAL`]) is then routed
//!    and nothing else (IP only; no TTL change).
//! 2. ARP: the sender learned (if on a connected network of the receiving
//!    interface, or routed out of it without a gateway) and its waiting packets released; a request for an address of
//!    the receiving interface or a virtual IP answered in place; anything else
//!    consumed.
//! 3. ICMPv6 neighbour solicitation / advertisement: the same for IPv6.
//! 4. An ICMP error about a balanced connection: to a virtual IP (from the
//!    client side) it goes to the connection's back end (NAT: translated); about
//!    a packet sent to a NAT back end, it is translated back and routed to the
//!    client. Not found: on to the policy.
//! 5. NAT return traffic: a packet whose source is a NAT back end and whose
//!    reverse tuple is in the connection table gets its source rewritten to the
//!    virtual IP and port, and is routed to the client. Checked before the
//!    policy: the policy sees only traffic that is not a reply it already
//!    balanced (the language says return traffic "is recognised by the
//!    connection table"); a back end's own new connections miss and go on.
//! 6. The policy, then its action. Balance: connection table, else (a SYN
//!    without ACK, any
//!    non-TCP, or `unknown balance`) a new back end by the service's algorithm;
//!    a TCP non-SYN of no connection is reset (a RST is dropped). Then the TTL
//!    is decremented (NAT and DSR alike: the appliance is a hop), NAT rewrites
//!    the destination, DSR only the MACs. Forward: TTL, route, neighbour.
//!    Expire (the policy saw a TTL of 1 or 0 on a packet it would balance or
//!    forward): an ICMP / ICMPv6 time exceeded goes back out of the receiving
//!    interface to the sender, from that interface's address, unless RFC 1812
//!    forbids it (`wire::time_exceeded`) or the rate limit is reached
//!    ([`TIME_EXCEEDED_PER_SEC`]); else the packet is dropped (`Ttl`). A packet
//!    the core sends on by itself (NAT return traffic, relayed ICMP errors)
//!    whose TTL runs out is treated the same way.
//!
//! Sending towards a next hop: the neighbour table gives the MAC (a stale entry
//! is used, and re-confirmed); an unknown one holds the frame in the core's
//! pending queue and sends an ARP request / neighbour solicitation (rate limited
//! by the neighbour table; a solicitation on an interface without an IPv6
//! address comes from its link-local address). Held frames leave when the answer arrives (step 2 or
//! 3, in any later burst) or when they time out (freed at the start of a burst).
//!
//! Not here: ICMP errors the appliance would originate other than time exceeded
//! (fragmentation needed, destination unreachable), fragment reassembly (a later
//! fragment of a balanced flow has no ports and is balanced on its own), IPv6
//! router discovery, VLAN-aware forwarding (tags are kept as they came).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use lbp_abi::{Action, Decision, Fields, present, stage, tcp_flag};

use crate::app::Apps;
use crate::balance::{Wrr, least_load};
use crate::config::{Algorithm, Interface, Mode, Route, Service};
use crate::conn::{ConnKey, ConnTable, Insert, ReverseKey, Target};
use crate::generation::Generation;
use crate::neigh::{Learned, NeighAddr, NeighState, NeighTable, Pending};
use crate::ring::{Desc, Frames};
use crate::wire::{self, Side};

const ETHERTYPE_ARP: u16 = 0x0806;
const ETH_HEADER_LEN: usize = 14;
const PROTO_ICMPV6: u8 = 58;

/// ICMP time exceeded answers per second and switching core, at most (Linux's
/// default global rate, `net.ipv4.icmp_msgs_per_sec`).
pub const TIME_EXCEEDED_PER_SEC: u64 = 1000;
/// How many answers may leave at once after a quiet time (Linux's
/// `icmp_msgs_burst`).
pub const TIME_EXCEEDED_BURST: u64 = 50;
const TIME_EXCEEDED_GAP_NS: u64 = 1_000_000_000 / TIME_EXCEEDED_PER_SEC;

/// The `in_iface` of a frame that the control plane (the TAP) sent: it skips
/// ARP / ND, NAT return and the policy, and is routed (see `lbp run`).
pub const FROM_LOCAL: u32 = u32::MAX;

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Too short, or a header `extract` refused; also an ARP / ND packet that does
    /// not parse.
    Malformed,
    /// A filter rule said `drop` (or `reset` of something that cannot be reset).
    Filter,
    /// To a virtual IP with no matching service entry (and not TCP).
    InvalidEntry,
    /// No route, or a route to an interface that does not exist.
    NoRoute,
    /// TTL / hop limit would reach 0.
    Ttl,
    /// Waited for a neighbour resolution too long.
    NeighTimeout,
    /// No room in the pending queue for one more frame waiting for a neighbour.
    PendingFull,
    /// A balanced packet whose service has no back end of non-zero weight.
    NoBackend,
    /// A TCP RST that belongs to no connection (never answered).
    UnknownRst,
    /// A NAT / ICMP rewrite or a reset the wire code refused (family mismatch,
    /// inconsistent headers).
    Rewrite,
    /// An output queue was full.
    QueueFull,
    /// ARP / ND not for us, or received on an interface the configuration does
    /// not have.
    NotOurs,
    /// The policy returned an action number that does not exist.
    BadDecision,
    /// Routing refused a martian destination ([`lbp_abi::martian`]): loopback,
    /// multicast, broadcast, link-local or unspecified.
    Martian,
}

impl DropReason {
    /// The number of reasons (the length of [`Counters::drops`]).
    pub const COUNT: usize = 14;

    /// Every reason, in counter order (`ALL[r as usize] == r`).
    pub const ALL: [DropReason; DropReason::COUNT] = {
        use DropReason::*;
        [
            Malformed,
            Filter,
            InvalidEntry,
            NoRoute,
            Ttl,
            NeighTimeout,
            PendingFull,
            NoBackend,
            UnknownRst,
            Rewrite,
            QueueFull,
            NotOurs,
            BadDecision,
            Martian,
        ]
    };
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PktBytes {
    pub packets: u64,
    pub bytes: u64,
}

impl PktBytes {
    fn add(&mut self, len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
    }
}

/// One core's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received (handed to `process_burst`).
    pub rx: PktBytes,
    /// By the policy's action, indexed by `Action as usize`.
    pub actions: [PktBytes; 7],
    /// Frames from the control plane ([`FROM_LOCAL`]) routed out.
    pub from_local: PktBytes,
    /// NAT return traffic rewritten back to the virtual IP.
    pub nat_return: PktBytes,
    /// ICMP errors about a balanced connection, sent on to its back end or client.
    pub icmp_errors: u64,
    /// ICMP (ICMPv6) time exceeded sent, in answer to a packet whose TTL (hop
    /// limit) ran out where the appliance would have sent it on. An expired
    /// packet not answered is a drop for [`DropReason::Ttl`].
    pub time_exceeded: u64,
    /// Expired packets not answered because of the rate limit
    /// ([`TIME_EXCEEDED_PER_SEC`], [`TIME_EXCEEDED_BURST`]); counted in the
    /// `Ttl` drops too.
    pub time_exceeded_limited: u64,
    /// NAT connections ended by a new direct connection with the same 4-tuple at
    /// the back end.
    pub superseded: u64,
    /// Drops by [`DropReason`] (index `reason as usize`).
    pub drops: [u64; DropReason::COUNT],
    /// TCP non-SYN segments of no connection answered with a RST.
    pub unknown_resets: u64,
    /// New connections the table had no room for (forwarded statelessly).
    pub conn_full: u64,
    pub arp_replies: u64,
    pub nd_replies: u64,
    /// Neighbour mappings learned (or refreshed).
    pub neigh_learned: u64,
    /// ARP requests and neighbour solicitations sent.
    pub neigh_requests: u64,
    /// ARP / ND packets consumed without an answer (replies, others' requests).
    pub neigh_consumed: u64,
    /// New connections, all services, since the core started.
    pub new_connections: u64,
    /// Established connections reset on their next packet because their back
    /// end left the policy or went into maintenance (a non-TCP one is balanced
    /// anew instead, and counted here too).
    pub backend_gone: u64,
    /// The id of the generation the core runs now.
    pub generation: u64,
    /// The compile ([`Generation::serial`]) the per-service, per-back-end and
    /// per-rule counters below belong to: they start from zero when a reload
    /// brings another policy (indices change meaning), not on a weight change.
    pub serial: u64,
    /// New connections per service (index as in the active generation).
    pub service_new: Vec<u64>,
    /// New connections per back end, `[service][backend]`.
    pub backend_new: Vec<Vec<u64>>,
    /// Balanced packets per back end, `[service][backend]`.
    pub backend_traffic: Vec<Vec<PktBytes>>,
    /// Packets per filter rule (the rule that decided them), index as in the
    /// policy.
    pub rules: Vec<PktBytes>,
    // Frame accounting.
    /// Frames the core allocated itself (ARP requests, solicitations).
    pub made: u64,
    /// Frames put on a transmit queue.
    pub to_tx: u64,
    /// Frames put on the local queue.
    pub to_local: u64,
    /// Frames returned to the free list.
    pub freed: u64,
    /// Frames put in the pending queue.
    pub held: u64,
    /// Frames taken out of the pending queue (released or expired).
    pub unheld: u64,
}

impl Counters {
    /// Drops for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Packets of action `a`.
    pub fn action(&self, a: Action) -> u64 {
        self.actions[a as usize].packets
    }
}

/// Per-back-end loads for least-load services, shared by the cores: each core
/// adds one per new connection; the control core may overwrite them with
/// reported loads ([`Loads::set`]). Indexed `[service][backend]` within fixed
/// bounds chosen at start-up; a back end out of bounds reads 0.
#[derive(Debug)]
pub struct Loads {
    per_service: usize,
    words: Box<[AtomicU64]>,
}

impl Loads {
    /// Room for `services` services of at most `backends` back ends.
    pub fn new(services: usize, backends: usize) -> Loads {
        Loads {
            per_service: backends,
            words: (0..services.saturating_mul(backends))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn word(&self, s: usize, b: usize) -> Option<&AtomicU64> {
        if b >= self.per_service {
            return None;
        }
        self.words
            .get(s.checked_mul(self.per_service)?.checked_add(b)?)
    }

    /// The load of back end `b` of service `s`.
    pub fn get(&self, s: usize, b: usize) -> u64 {
        self.word(s, b).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Set the load of back end `b` of service `s` (control core).
    pub fn set(&self, s: usize, b: usize, v: u64) {
        if let Some(w) = self.word(s, b) {
            w.store(v, Ordering::Relaxed);
        }
    }

    pub(crate) fn add(&self, s: usize, b: usize) {
        if let Some(w) = self.word(s, b) {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// State shared by all switching cores (lives across generations; the loads of
/// least-load services live in the generation, sized for its pools).
#[derive(Debug)]
pub struct Shared {
    pub conns: ConnTable,
    pub neigh: NeighTable,
}

/// A frame waiting for its next hop's MAC, and the interface it leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub desc: Desc,
    pub dev: u32,
}

/// One switching core's own state.
#[derive(Debug)]
pub struct CoreState {
    pub counters: Counters,
    /// The core's applications (`app NAME`), its own instances.
    pub apps: Apps,
    pending: Pending<Held>,
    /// Per service: the round robin of a `RoundRobin` service.
    wrr: Vec<Option<Wrr>>,
    /// Scratch for least-load: the loads of one service's back ends.
    loads: Vec<u64>,
    /// The id of the generation the per-core tables were built for.
    gen_id: Option<u64>,
    /// The time exceeded rate limit: the theoretical arrival time (ns) of the
    /// next answer (GCRA).
    time_exceeded_tat: u64,
}

impl CoreState {
    /// A core's state with `pending` as its queue of frames waiting for a
    /// neighbour (`Pending::with_defaults()` is a good default).
    pub fn new(pending: Pending<Held>) -> CoreState {
        CoreState {
            counters: Counters::default(),
            apps: Apps::builtin(),
            pending,
            wrr: Vec::new(),
            loads: Vec::new(),
            gen_id: None,
            time_exceeded_tat: 0,
        }
    }

    /// Frames held waiting for a neighbour now.
    pub fn pending_len(&self) -> u64 {
        self.counters.held - self.counters.unheld
    }

    /// The frame books balance: every frame in is in exactly one place out.
    pub fn balanced(&self) -> bool {
        let c = &self.counters;
        c.rx.packets + c.made + c.unheld == c.to_tx + c.to_local + c.freed + c.held
    }

    /// Return every held frame to `frames` (shutdown).
    pub fn drain(&mut self, frames: &mut Frames) {
        let c = &mut self.counters;
        self.pending.drain(|h| {
            frames.free(h.desc);
            c.unheld += 1;
            c.freed += 1;
        });
    }

    /// Rebuild the per-core tables for a new generation (at a burst boundary;
    /// this allocates).
    fn adopt(&mut self, g: &Generation) {
        self.wrr = g
            .appliance
            .services
            .iter()
            .zip(&g.services)
            .map(|(s, t)| (s.algorithm == Algorithm::RoundRobin).then(|| Wrr::new(&t.weights)))
            .collect();
        let most = g
            .appliance
            .services
            .iter()
            .map(|s| s.backends.len())
            .max()
            .unwrap_or(0);
        self.loads = Vec::with_capacity(most);
        let c = &mut self.counters;
        if c.serial != g.serial {
            c.serial = g.serial;
            c.service_new.clear();
            c.backend_new.clear();
            c.backend_traffic.clear();
            c.rules.clear();
        }
        let n = g.appliance.services.len();
        c.service_new.resize(n, 0);
        c.backend_new.resize(n, Vec::new());
        c.backend_traffic.resize(n, Vec::new());
        for ((v, t), s) in c
            .backend_new
            .iter_mut()
            .zip(c.backend_traffic.iter_mut())
            .zip(&g.appliance.services)
        {
            v.resize(s.backends.len(), 0);
            t.resize(s.backends.len(), PktBytes::default());
        }
        c.rules.resize(g.appliance.rules.len(), PktBytes::default());
        c.generation = g.id;
        self.gen_id = Some(g.id);
    }
}

/// What a burst produced: frames to transmit per interface, and frames for the
/// local (TAP) side. The caller sends them to its ports (freeing what a port
/// refuses) and clears the queues before the next burst.
#[derive(Debug)]
pub struct Outputs {
    /// Per interface (index as in the configuration).
    pub tx: Vec<Vec<Desc>>,
    pub local: Vec<Desc>,
}

impl Outputs {
    /// Queues for `interfaces` interfaces, each holding up to `capacity` frames
    /// (a burst's size plus room for released and generated frames).
    pub fn new(interfaces: usize, capacity: usize) -> Outputs {
        Outputs {
            tx: (0..interfaces)
                .map(|_| Vec::with_capacity(capacity))
                .collect(),
            local: Vec::with_capacity(capacity),
        }
    }

    /// Empty every queue (keeping their memory).
    pub fn clear(&mut self) {
        for q in &mut self.tx {
            q.clear();
        }
        self.local.clear();
    }
}

/// Push without ever growing the queue.
fn push_bounded(q: &mut Vec<Desc>, d: Desc) -> Result<(), Desc> {
    if q.len() < q.capacity() {
        q.push(d);
        Ok(())
    } else {
        Err(d)
    }
}

/// Process one burst: `rx` holds each received frame with the index of the
/// interface it came from. See the module documentation.
pub fn process_burst(
    g: &Generation,
    state: &mut CoreState,
    shared: &Shared,
    frames: &mut Frames,
    rx: &[(Desc, u32)],
    out: &mut Outputs,
    now: u64,
) {
    if state.gen_id != Some(g.id) {
        state.adopt(g);
    }
    let mut b = Burst {
        g,
        st: state,
        shared,
        frames,
        out,
        now,
    };
    b.expire();
    for &(d, iface) in rx {
        b.packet(d, iface);
    }
    b.apps_poll();
    debug_assert!(b.st.balanced(), "frame accounting: {:?}", b.st.counters);
}

/// An address from its 16-byte `Fields` form (IPv4-mapped for version 4).
fn ip_of(version: u8, a: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// The 16-byte form of an address (IPv4-mapped).
fn bytes_of(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// An address stored in the 16-byte form without its version: IPv4-mapped is
/// taken as IPv4.
pub fn ip_from_bytes(a: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Whether `a` lies in `prefix/len` (of the same family).
pub fn prefix_contains(prefix: IpAddr, len: u8, a: IpAddr) -> bool {
    match (prefix, a) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (u32::from(p) ^ u32::from(a)) & mask == 0
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            (u128::from(p) ^ u128::from(a)) & mask == 0
        }
        _ => false,
    }
}

/// The longest-prefix route for `dst` (the first of equal lengths), as the
/// compiled policy chooses, for destinations the policy did not route (back ends,
/// clients of NAT return traffic). A linear scan: route tables here are small.
pub fn route_lookup(routes: &[Route], dst: IpAddr) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, r) in routes.iter().enumerate() {
        if prefix_contains(r.prefix, r.len, dst) && best.is_none_or(|(_, l)| r.len > l) {
            best = Some((i, r.len));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether routing refuses `dst` (the compiled policy's rule, for what the core
/// routes itself: back ends, NAT return traffic, the control plane's packets).
fn martian(ifaces: &[Interface], dst: IpAddr) -> bool {
    let connected = ifaces.iter().flat_map(|i| i.addrs.iter().copied());
    lbp_abi::martian::martian(dst, connected).is_some()
}

/// The address of `iface` to send a request for `target` from: one whose
/// connected network holds `target`, else any of the family; for IPv6 on an
/// interface without an IPv6 address, the link-local address made from its
/// MAC (RFC 4291, modified EUI-64), as any IPv6 host solicits from.
fn source_for(iface: &Interface, target: IpAddr) -> Option<IpAddr> {
    let same = |a: &IpAddr| a.is_ipv4() == target.is_ipv4();
    iface
        .addrs
        .iter()
        .find(|(a, l)| prefix_contains(*a, *l, target))
        .or_else(|| iface.addrs.iter().find(|(a, _)| same(a)))
        .map(|(a, _)| *a)
        .or_else(|| target.is_ipv6().then(|| IpAddr::V6(link_local(iface.mac))))
}

/// The IPv6 link-local address of an interface with MAC `m`: fe80::/64 and
/// the MAC with ff:fe in its middle and the universal/local bit inverted.
fn link_local(m: [u8; 6]) -> Ipv6Addr {
    let w = |a: u8, b: u8| u16::from_be_bytes([a, b]);
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        w(m[0] ^ 2, m[1]),
        w(m[2], 0xff),
        w(0xfe, m[3]),
        w(m[4], m[5]),
    )
}

/// Whether `a` is on a connected network of `iface`.
fn on_link(iface: &Interface, a: IpAddr) -> bool {
    iface.addrs.iter().any(|(p, l)| prefix_contains(*p, *l, a))
}

/// Whether `a` is reached out of interface `dev` without a gateway: its route
/// names `dev` and no `via` (a `route P dev X` puts P on X's link).
fn routed_on_link(routes: &[Route], dev: u32, a: IpAddr) -> bool {
    route_lookup(routes, a).is_some_and(|i| routes[i].dev == dev && routes[i].via.is_none())
}

/// The offset of the layer-3 header after the Ethernet header and up to two
/// VLAN tags (what `extract` skips).
fn l3_after_tags(frame: &[u8]) -> usize {
    let mut at = ETH_HEADER_LEN;
    let mut ty = frame
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    for _ in 0..lbp_abi::wire::MAX_VLAN_TAGS {
        if ty != 0x8100 && ty != 0x88a8 {
            break;
        }
        ty = frame
            .get(at + 2..at + 4)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        at += 4;
    }
    at
}

struct Burst<'a> {
    g: &'a Generation,
    st: &'a mut CoreState,
    shared: &'a Shared,
    frames: &'a mut Frames,
    out: &'a mut Outputs,
    now: u64,
}

impl Burst<'_> {
    fn drop_frame(&mut self, d: Desc, why: DropReason) {
        self.st.counters.drops[why as usize] += 1;
        self.free(d);
    }

    fn free(&mut self, d: Desc) {
        self.frames.free(d);
        self.st.counters.freed += 1;
    }

    fn tx(&mut self, dev: u32, d: Desc) {
        match self.out.tx.get_mut(dev as usize) {
            Some(q) => match push_bounded(q, d) {
                Ok(()) => self.st.counters.to_tx += 1,
                Err(d) => self.drop_frame(d, DropReason::QueueFull),
            },
            None => self.drop_frame(d, DropReason::NoRoute),
        }
    }

    fn expire(&mut self) {
        let Burst { st, frames, .. } = self;
        let c = &mut st.counters;
        st.pending.expire(self.now, |h| {
            frames.free(h.desc);
            c.unheld += 1;
            c.freed += 1;
            c.drops[DropReason::NeighTimeout as usize] += 1;
        });
    }

    fn packet(&mut self, d: Desc, in_iface: u32) {
        self.st.counters.rx.add(d.len);
        let f = lbp_abi::wire::extract(self.frames.packet(d), in_iface);
        if f.present & present::ETH == 0 || f.present & present::MALFORMED != 0 {
            return self.drop_frame(d, DropReason::Malformed);
        }
        if in_iface == FROM_LOCAL {
            return self.routed_from_local(d, &f);
        }
        if f.eth_type == ETHERTYPE_ARP {
            return self.arp(d, in_iface);
        }
        if f.ip_version == 6
            && f.ip_proto == PROTO_ICMPV6
            && f.present & present::ICMP != 0
            && matches!(f.icmp_type, wire::ndp::TYPE_NS | wire::ndp::TYPE_NA)
        {
            return self.ndp(d, &f);
        }
        if f.present & (present::IP4 | present::IP6) != 0 {
            if f.present & present::ICMP != 0 && self.icmp_error(d, &f) {
                return;
            }
            if self.nat_return(d, &f) {
                return;
            }
            self.supersede(&f);
        }
        let dec = self.g.policy.decide(&f);
        self.act(d, &f, &dec);
    }

    /// A frame the control plane (the TAP) sent: no filter, no TTL change (the
    /// kernel made it), routed by the longest prefix. Anything but IP (its ARP and
    /// neighbour discovery are answered by the caller) is dropped.
    fn routed_from_local(&mut self, d: Desc, f: &Fields) {
        if f.present & (present::IP4 | present::IP6) == 0 {
            return self.drop_frame(d, DropReason::NotOurs);
        }
        self.st.counters.from_local.add(d.len);
        self.route_to(d, ip_of(f.ip_version, &f.ip_dst));
    }

    // ---- ARP and neighbour discovery --------------------------------------

    /// Record `addr` at `mac` and release what waited for it.
    fn learn(&mut self, addr: IpAddr, mac: [u8; 6], how: Learned) {
        let na = NeighAddr::from(addr);
        if !self.shared.neigh.learn(&na, mac, how, self.now) {
            return;
        }
        self.st.counters.neigh_learned += 1;
        let Burst {
            g, st, frames, out, ..
        } = self;
        let c = &mut st.counters;
        st.pending.take_ready(&na, |h| {
            c.unheld += 1;
            let src = g.appliance.interfaces.get(h.dev as usize).map(|i| i.mac);
            let queued = match (src, out.tx.get_mut(h.dev as usize)) {
                (Some(src), Some(q)) => {
                    wire::set_macs(frames.packet_mut(h.desc), src, mac);
                    push_bounded(q, h.desc)
                }
                _ => Err(h.desc),
            };
            match queued {
                Ok(()) => c.to_tx += 1,
                Err(d) => {
                    frames.free(d);
                    c.freed += 1;
                    c.drops[DropReason::QueueFull as usize] += 1;
                }
            }
        });
    }

    /// Whether `a` is one of `iface`'s addresses or a virtual IP.
    fn answers_for(&self, iface: &Interface, a: IpAddr) -> bool {
        iface.addrs.iter().any(|(x, _)| *x == a) || self.g.is_vip(&a)
    }

    fn arp(&mut self, d: Desc, in_iface: u32) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(in_iface as usize) else {
            return self.drop_frame(d, DropReason::NotOurs);
        };
        let l3 = l3_after_tags(self.frames.packet(d));
        let Some(a) = wire::arp::parse(self.frames.packet(d), l3) else {
            return self.drop_frame(d, DropReason::Malformed);
        };
        let sender = IpAddr::V4(a.sender_ip);
        let target = IpAddr::V4(a.target_ip);
        let for_us = self.answers_for(iface, target);
        let neighbour =
            on_link(iface, sender) || routed_on_link(&g.appliance.routes, in_iface, sender);
        if !a.sender_ip.is_unspecified() && neighbour {
            match a.op {
                wire::arp::OP_REPLY => self.learn(sender, a.sender_mac, Learned::Reply),
                wire::arp::OP_REQUEST if for_us => {
                    self.learn(sender, a.sender_mac, Learned::Request)
                }
                _ => {}
            }
        }
        if a.op == wire::arp::OP_REQUEST
            && for_us
            && wire::arp::reply_in_place(self.frames.packet_mut(d), l3, iface.mac, a.target_ip)
        {
            self.st.counters.arp_replies += 1;
            return self.tx(in_iface, d);
        }
        self.st.counters.neigh_consumed += 1;
        self.free(d);
    }

    fn ndp(&mut self, d: Desc, f: &Fields) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(f.in_iface as usize) else {
            return self.drop_frame(d, DropReason::NotOurs);
        };
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        if f.icmp_type == wire::ndp::TYPE_NA {
            let Some(na) = wire::ndp::parse_na(self.frames.packet(d), l3, l4) else {
                return self.drop_frame(d, DropReason::Malformed);
            };
            if let Some(mac) = na.target_ll {
                let how = if na.solicited {
                    Learned::Reply
                } else {
                    Learned::Request
                };
                self.learn(IpAddr::V6(na.target), mac, how);
            }
            self.st.counters.neigh_consumed += 1;
            return self.free(d);
        }
        let Some(ns) = wire::ndp::parse_ns(self.frames.packet(d), l3, l4) else {
            return self.drop_frame(d, DropReason::Malformed);
        };
        let target = IpAddr::V6(ns.target);
        if !self.answers_for(iface, target) {
            self.st.counters.neigh_consumed += 1;
            return self.free(d);
        }
        if let (false, Some(mac)) = (ns.src.is_unspecified(), ns.source_ll) {
            self.learn(IpAddr::V6(ns.src), mac, Learned::Request);
        }
        let len = d.len as usize;
        match wire::ndp::na_from_ns_in_place(
            self.frames.slot_mut(d),
            len,
            l3,
            l4,
            iface.mac,
            ns.target,
        ) {
            Some(n) => {
                self.st.counters.nd_replies += 1;
                let d = Desc {
                    addr: d.addr,
                    len: n as u32,
                };
                self.tx(f.in_iface, d);
            }
            None => {
                self.st.counters.neigh_consumed += 1;
                self.free(d);
            }
        }
    }

    // ---- Sending ------------------------------------------------------------

    /// Send `d` out of `dev` to the next hop `nh`: MACs set, or held waiting for
    /// the neighbour (with a request sent, rate limited).
    fn send_to(&mut self, d: Desc, nh: IpAddr, dev: u32) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(dev as usize) else {
            return self.drop_frame(d, DropReason::NoRoute);
        };
        let na = NeighAddr::from(nh);
        if let Some(n) = self.shared.neigh.lookup(&na, self.now) {
            if n.state == NeighState::Stale && self.shared.neigh.should_request(&na, self.now) {
                self.request(iface, dev, nh);
            }
            wire::set_macs(self.frames.packet_mut(d), iface.mac, n.mac);
            return self.tx(dev, d);
        }
        match self.st.pending.push(&na, Held { desc: d, dev }, self.now) {
            Ok(()) => self.st.counters.held += 1,
            Err(h) => self.drop_frame(h.desc, DropReason::PendingFull),
        }
        if self.shared.neigh.should_request(&na, self.now) {
            self.request(iface, dev, nh);
        }
    }

    /// Send an ARP request / neighbour solicitation for `target` out of `dev`.
    fn request(&mut self, iface: &Interface, dev: u32, target: IpAddr) {
        let Some(src) = source_for(iface, target) else {
            return;
        };
        let Some(mut d) = self.frames.alloc() else {
            return;
        };
        self.st.counters.made += 1;
        let slot = self.frames.slot_mut(d);
        let len = match (src, target) {
            (IpAddr::V4(s), IpAddr::V4(t)) => wire::arp::build_request(slot, iface.mac, s, t),
            (IpAddr::V6(s), IpAddr::V6(t)) => wire::ndp::build_ns(slot, iface.mac, s, t),
            _ => None,
        };
        match len {
            Some(n) => {
                d.len = n as u32;
                self.st.counters.neigh_requests += 1;
                self.tx(dev, d);
            }
            None => self.free(d),
        }
    }

    /// Route `d` to `dst` by the longest prefix, then [`Burst::send_to`]; a
    /// martian destination is dropped.
    fn route_to(&mut self, d: Desc, dst: IpAddr) {
        let g = self.g;
        if martian(&g.appliance.interfaces, dst) {
            return self.drop_frame(d, DropReason::Martian);
        }
        match route_lookup(&g.appliance.routes, dst) {
            Some(i) => {
                let r = &g.appliance.routes[i];
                self.send_to(d, r.via.unwrap_or(dst), r.dev);
            }
            None => self.drop_frame(d, DropReason::NoRoute),
        }
    }

    /// Decrement the TTL (hop limit) of a packet about to be sent on; false when
    /// it runs out: the frame is then answered with a time exceeded or dropped
    /// ([`Burst::expired`]).
    fn ttl(&mut self, d: Desc, f: &Fields) -> bool {
        if wire::decrement_ttl(self.frames.packet_mut(d), usize::from(f.l3_offset)) {
            true
        } else {
            self.expired(d, f);
            false
        }
    }

    /// A packet whose TTL (hop limit) ran out where the appliance would have
    /// sent it on (the policy's `Expire`, or a packet the core forwards itself):
    /// answered with an ICMP (ICMPv6) time exceeded from the receiving
    /// interface's address, back out of that interface to the sender, unless the
    /// packet must not be answered (`wire::time_exceeded`) or the rate limit
    /// says no; otherwise dropped (`Ttl`).
    fn expired(&mut self, d: Desc, f: &Fields) {
        let g = self.g;
        let src = ip_of(f.ip_version, &f.ip_src);
        let ours = g
            .appliance
            .interfaces
            .get(f.in_iface as usize)
            .and_then(|i| source_for(i, src));
        let Some(ours) = ours else {
            return self.drop_frame(d, DropReason::Ttl);
        };
        if !self.time_exceeded_allowed() {
            self.st.counters.time_exceeded_limited += 1;
            return self.drop_frame(d, DropReason::Ttl);
        }
        let len = d.len as usize;
        match wire::time_exceeded_in_place(
            self.frames.slot_mut(d),
            len,
            usize::from(f.l3_offset),
            ours,
        ) {
            Some(n) => {
                self.st.counters.time_exceeded += 1;
                let d = Desc {
                    addr: d.addr,
                    len: n as u32,
                };
                self.tx(f.in_iface, d);
            }
            None => {
                // Not sent: give the token back.
                let tat = &mut self.st.time_exceeded_tat;
                *tat = tat.saturating_sub(TIME_EXCEEDED_GAP_NS);
                self.drop_frame(d, DropReason::Ttl)
            }
        }
    }

    /// The time exceeded rate limit (GCRA): at most [`TIME_EXCEEDED_PER_SEC`]
    /// per second and core, in bursts of up to [`TIME_EXCEEDED_BURST`]; takes
    /// one answer's worth when it says yes.
    fn time_exceeded_allowed(&mut self) -> bool {
        let tat = &mut self.st.time_exceeded_tat;
        let window = TIME_EXCEEDED_GAP_NS * (TIME_EXCEEDED_BURST - 1);
        if *tat > self.now.saturating_add(window) {
            return false;
        }
        *tat = (*tat).max(self.now) + TIME_EXCEEDED_GAP_NS;
        true
    }

    // ---- Before the policy: ICMP errors, NAT return ----------------------------

    /// An ICMP error about a balanced connection; true when handled.
    fn icmp_error(&mut self, d: Desc, f: &Fields) -> bool {
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        let Some(e) = wire::parse_icmp_error(self.frames.packet(d), l3, l4) else {
            return false;
        };
        let g = self.g;
        let outer_src = ip_of(f.ip_version, &f.ip_src);
        let outer_dst = ip_of(f.ip_version, &f.ip_dst);
        if g.is_vip(&outer_dst) {
            // From the client side, about a packet the service sent to a client:
            // inner VIP:vport -> C:cp.
            let key = ConnKey {
                client: bytes_of(e.dst),
                vip: bytes_of(e.src),
                client_port: e.dport,
                vport: e.sport,
                version: f.ip_version,
                proto: e.proto,
            };
            let Some(c) = self.shared.conns.peek(&key, self.now) else {
                return false;
            };
            let Some(svc) = g.appliance.services.get(c.target.service as usize) else {
                return false;
            };
            let b = ip_from_bytes(&c.target.backend_addr);
            self.st.counters.icmp_errors += 1;
            // A hop in either mode; an error that expires is never answered.
            if !self.ttl(d, f) {
                return true;
            }
            if matches!(svc.mode, Mode::Nat { .. }) {
                let frame = self.frames.packet_mut(d);
                if !wire::icmp_error_rewrite(
                    frame,
                    l3,
                    l4,
                    Some((Side::Dst, b)),
                    Side::Src,
                    b,
                    c.target.backend_port,
                ) {
                    self.drop_frame(d, DropReason::Rewrite);
                    return true;
                }
            }
            self.route_to(d, b);
            return true;
        }
        if g.is_nat_backend(&e.dst) {
            // About a packet sent to a back end: inner C:cp -> B:bp.
            let rkey = ReverseKey {
                backend: bytes_of(e.dst),
                client: bytes_of(e.src),
                backend_port: e.dport,
                client_port: e.sport,
                version: f.ip_version,
                proto: e.proto,
            };
            let Some((key, _)) = self.shared.conns.lookup_reverse(&rkey, 0, self.now) else {
                return false;
            };
            let vip = ip_of(key.version, &key.vip);
            let outer = (outer_src == e.dst).then_some((Side::Src, vip));
            self.st.counters.icmp_errors += 1;
            let frame = self.frames.packet_mut(d);
            if !wire::icmp_error_rewrite(frame, l3, l4, outer, Side::Dst, vip, key.vport) {
                self.drop_frame(d, DropReason::Rewrite);
                return true;
            }
            if self.ttl(d, f) {
                self.route_to(d, outer_dst);
            }
            return true;
        }
        false
    }

    /// A TCP SYN (not SYN-ACK) sent straight to a NAT back end's address and
    /// port ends an earlier NAT connection of the same client address and port to
    /// that back end: both have the same 4-tuple at the back end, and without
    /// this its answers to the new connection would be rewritten as the old
    /// one's (seen with a client port reused after 3 000 connections through the
    /// virtual IP).
    fn supersede(&mut self, f: &Fields) {
        if f.present & present::TCP == 0
            || f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) != tcp_flag::SYN
            || !self.g.is_nat_backend(&ip_of(f.ip_version, &f.ip_dst))
        {
            return;
        }
        let rkey = ReverseKey {
            backend: f.ip_dst,
            client: f.ip_src,
            backend_port: f.dport,
            client_port: f.sport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        self.st.counters.superseded += self.shared.conns.supersede(&rkey) as u64;
    }

    /// NAT return traffic; true when handled.
    fn nat_return(&mut self, d: Desc, f: &Fields) -> bool {
        let g = self.g;
        let src = ip_of(f.ip_version, &f.ip_src);
        if !g.is_nat_backend(&src) {
            return false;
        }
        let rkey = ReverseKey {
            backend: f.ip_src,
            client: f.ip_dst,
            backend_port: f.sport,
            client_port: f.dport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        let Some((key, _)) = self
            .shared
            .conns
            .lookup_reverse(&rkey, f.tcp_flags, self.now)
        else {
            return false;
        };
        self.st.counters.nat_return.add(d.len);
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        let vip = ip_of(key.version, &key.vip);
        // The TTL first: an expired reply is answered as the back end sent it.
        if !self.ttl(d, f) {
            return true;
        }
        if !wire::set_src(self.frames.packet_mut(d), l3, l4, vip, key.vport) {
            self.drop_frame(d, DropReason::Rewrite);
            return true;
        }
        self.route_to(d, ip_of(f.ip_version, &f.ip_dst));
        true
    }

    // ---- The policy's actions -------------------------------------------------

    fn act(&mut self, d: Desc, f: &Fields, dec: &Decision) {
        let Some(action) = Action::from_u32(dec.action) else {
            return self.drop_frame(d, DropReason::BadDecision);
        };
        let c = &mut self.st.counters;
        c.actions[action as usize].add(d.len);
        if let Some(r) = c.rules.get_mut(dec.rule as usize) {
            r.add(d.len);
        }
        match action {
            Action::Drop => {
                let why = match dec.stage {
                    stage::MALFORMED => DropReason::Malformed,
                    stage::INVALID_ENTRY => DropReason::InvalidEntry,
                    stage::ROUTE => DropReason::NoRoute,
                    stage::MARTIAN => DropReason::Martian,
                    _ => DropReason::Filter,
                };
                self.drop_frame(d, why);
            }
            Action::Reset => {
                let why = if dec.stage == stage::INVALID_ENTRY {
                    DropReason::InvalidEntry
                } else {
                    DropReason::Filter
                };
                self.reset(d, f, why);
            }
            Action::Local => match push_bounded(&mut self.out.local, d) {
                Ok(()) => self.st.counters.to_local += 1,
                Err(d) => self.drop_frame(d, DropReason::QueueFull),
            },
            Action::Balance => self.balance(d, f, dec),
            Action::Expire => self.expired(d, f),
            Action::App => self.app(d, f, dec.target),
            Action::Forward => {
                let g = self.g;
                let Some(r) = g.appliance.routes.get(dec.target as usize) else {
                    return self.drop_frame(d, DropReason::NoRoute);
                };
                if self.ttl(d, f) {
                    let dst = ip_of(f.ip_version, &f.ip_dst);
                    self.send_to(d, r.via.unwrap_or(dst), r.dev);
                }
            }
        }
    }

    /// Hand `d` to application `n` (the policy's `app NAME`), then send what
    /// it gave back. No such application: dropped (`BadDecision`).
    fn app(&mut self, d: Desc, f: &Fields, n: u32) {
        let g = self.g;
        let before = self.st.apps.made_and_freed();
        let r = self
            .st
            .apps
            .deliver(n as usize, d, f.in_iface, f, self.frames, &g.appliance);
        if let Err(d) = r {
            return self.drop_frame(d, DropReason::BadDecision);
        }
        self.apps_books(before);
    }

    /// Every application's per-burst poll, then what they sent.
    fn apps_poll(&mut self) {
        let g = self.g;
        let before = self.st.apps.made_and_freed();
        self.st.apps.poll(self.now, self.frames, &g.appliance);
        self.apps_books(before);
    }

    /// Bring the frames the applications made and freed since `before` into
    /// the core's books, and send the frames they queued.
    fn apps_books(&mut self, before: (u64, u64)) {
        let (made, freed) = self.st.apps.made_and_freed();
        self.st.counters.made += made - before.0;
        self.st.counters.freed += freed - before.1;
        let mut out = std::mem::take(&mut self.st.apps.out);
        for &(d, fate) in &out {
            match fate {
                crate::app::Fate::Tx(dev) => self.tx(dev, d),
                crate::app::Fate::Route(dst) => self.route_to(d, dst),
            }
        }
        out.clear();
        self.st.apps.out = out;
    }

    /// Answer a TCP segment with a RST out of the interface it came in by;
    /// anything that cannot be answered (not TCP, a RST, a fragment) is dropped
    /// as `why`.
    fn reset(&mut self, d: Desc, f: &Fields, why: DropReason) {
        if f.present & present::TCP == 0 {
            return self.drop_frame(d, why);
        }
        let len = d.len as usize;
        match wire::reset_in_place(
            self.frames.packet_mut(d),
            len,
            usize::from(f.l3_offset),
            usize::from(f.l4_offset),
        ) {
            Some(n) => self.tx(
                f.in_iface,
                Desc {
                    addr: d.addr,
                    len: n as u32,
                },
            ),
            None => self.drop_frame(d, why),
        }
    }

    /// A new connection's back end by the service's algorithm.
    fn choose(&mut self, s: usize, svc: &Service, hash: u32) -> Option<usize> {
        let t = self.g.services.get(s)?;
        let b = match svc.algorithm {
            Algorithm::Maglev | Algorithm::Hash => {
                t.maglev.as_ref()?.lookup(u64::from(hash))? as usize
            }
            Algorithm::RoundRobin => self.st.wrr.get_mut(s)?.as_mut()?.pick()?,
            Algorithm::LeastLoad => {
                let loads = &mut self.st.loads;
                loads.clear();
                for b in 0..t.weights.len().min(loads.capacity()) {
                    loads.push(self.g.loads.get(s, b));
                }
                least_load(loads, &t.weights, u64::from(hash))?
            }
        };
        (b < svc.backends.len()).then_some(b)
    }

    /// The index in service `s` (of the active generation) of the back end an
    /// established connection was given, if that back end still serves: it is
    /// one of the service's back ends (same address, and same port when the
    /// back end names one) and not in maintenance. Usually a compare at the
    /// connection's own index; after a reload reordered the pool, a scan.
    fn still_serves(&self, s: usize, svc: &Service, t: &Target) -> Option<usize> {
        let addr = ip_from_bytes(&t.backend_addr);
        let same = |be: &crate::config::Backend| {
            be.addr == addr && (t.backend_port == 0 || be.port.is_none_or(|p| p == t.backend_port))
        };
        let b = t.backend as usize;
        let b = if t.service as usize == s && svc.backends.get(b).is_some_and(same) {
            b
        } else {
            svc.backends.iter().position(same)?
        };
        let closed = self.g.services.get(s)?.closed.get(b).copied();
        (!closed.unwrap_or(false)).then_some(b)
    }

    fn balance(&mut self, d: Desc, f: &Fields, dec: &Decision) {
        let g = self.g;
        let s = dec.target as usize;
        let Some(svc) = g.appliance.services.get(s) else {
            return self.drop_frame(d, DropReason::NoBackend);
        };
        let key = ConnKey {
            client: f.ip_src,
            vip: f.ip_dst,
            client_port: f.sport,
            vport: f.dport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        let known = self.shared.conns.lookup(&key, f.tcp_flags, self.now);
        let tcp = f.present & present::TCP != 0;
        let mut opened = None;
        if let Some(c) = known {
            match self.still_serves(s, svc, &c.target) {
                Some(b) => opened = Some((c.target, b)),
                None => {
                    // Its back end left the policy or is in maintenance: the
                    // client should learn at once, not time out.
                    self.shared.conns.remove(&key);
                    self.st.counters.backend_gone += 1;
                    if tcp {
                        if f.tcp_flags & tcp_flag::RST != 0 {
                            return self.drop_frame(d, DropReason::NoBackend);
                        }
                        return self.reset(d, f, DropReason::NoBackend);
                    }
                }
            }
        }
        let (target, b) = match opened {
            Some(t) => t,
            None => {
                // Only a SYN without ACK opens a connection (a SYN-ACK to a
                // virtual IP answers nothing the appliance balanced).
                let syn = f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;
                if tcp && !syn && !svc.unknown_balance {
                    if f.tcp_flags & tcp_flag::RST != 0 {
                        return self.drop_frame(d, DropReason::UnknownRst);
                    }
                    self.st.counters.unknown_resets += 1;
                    return self.reset(d, f, DropReason::UnknownRst);
                }
                let Some(b) = self.choose(s, svc, dec.hash) else {
                    return self.drop_frame(d, DropReason::NoBackend);
                };
                let be = &svc.backends[b];
                let port = match svc.mode {
                    Mode::Nat { to_port } => be.port.or(to_port).unwrap_or(f.dport),
                    Mode::Dsr => 0,
                };
                let chosen = Target {
                    service: s as u32,
                    backend: b as u32,
                    backend_addr: bytes_of(be.addr),
                    backend_port: port,
                };
                match self
                    .shared
                    .conns
                    .insert(&key, chosen, f.tcp_flags, self.now)
                {
                    Insert::Existing(c) => match self.still_serves(s, svc, &c.target) {
                        Some(b) => (c.target, b),
                        None => (chosen, b),
                    },
                    r => {
                        if r == Insert::NotRecorded {
                            self.st.counters.conn_full += 1;
                        }
                        if svc.algorithm == Algorithm::LeastLoad {
                            g.loads.add(s, b);
                        }
                        let c = &mut self.st.counters;
                        c.new_connections += 1;
                        if let Some(n) = c.service_new.get_mut(s) {
                            *n += 1;
                        }
                        if let Some(n) = c.backend_new.get_mut(s).and_then(|v| v.get_mut(b)) {
                            *n += 1;
                        }
                        (chosen, b)
                    }
                }
            }
        };
        if let Some(t) = self
            .st
            .counters
            .backend_traffic
            .get_mut(s)
            .and_then(|v| v.get_mut(b))
        {
            t.add(d.len);
        }
        let backend = ip_from_bytes(&target.backend_addr);
        // NAT or DSR, the appliance is a hop: the TTL first, so that an expired
        // packet (which the policy normally caught as `Expire`) is answered as
        // it came.
        if !self.ttl(d, f) {
            return;
        }
        if let Mode::Nat { .. } = svc.mode {
            let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
            if !wire::set_dst(
                self.frames.packet_mut(d),
                l3,
                l4,
                backend,
                target.backend_port,
            ) {
                return self.drop_frame(d, DropReason::Rewrite);
            }
        }
        self.route_to(d, backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Appliance, Backend, Route, Service};
    use crate::generation::Published;
    use crate::ring::Port;
    use crate::ring::mem::{MemHost, MemPort, host};
    use lbp_abi::{flow_hash, hash_field};
    use std::sync::Arc;

    use crate::wire::testutil::{self, Spec, assert_checksums, build};

    const M0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
    const M1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
    const NS: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac_of(a: IpAddr) -> [u8; 6] {
        let b = bytes_of(a);
        [2, 0x11, b[12] ^ b[0], b[13], b[14], b[15]]
    }

    fn be(a: &str, port: Option<u16>, weight: u32) -> Backend {
        Backend {
            addr: ip(a),
            port,
            weight,
            agent: None,
        }
    }

    fn route(p: &str, len: u8, via: Option<&str>, dev: u32) -> Route {
        Route {
            prefix: ip(p),
            len,
            via: via.map(ip),
            dev,
        }
    }

    /// Interface 0 faces the clients, 1 the back ends. Service 0: NAT (Maglev,
    /// to port 8080), service 1: DSR (round robin), service 2: IPv6 NAT.
    fn appliance() -> Appliance {
        Appliance {
            interfaces: vec![
                Interface {
                    name: "outside".into(),
                    mac: M0,
                    addrs: vec![(ip("198.18.0.1"), 24), (ip("2001:db8::1"), 64)],
                },
                Interface {
                    name: "inside".into(),
                    mac: M1,
                    addrs: vec![(ip("198.19.0.1"), 24), (ip("2001:db8:1::1"), 64)],
                },
            ],
            services: vec![
                Service {
                    name: "web".into(),
                    vips: vec![ip("198.18.0.10")],
                    mode: Mode::Nat {
                        to_port: Some(8080),
                    },
                    algorithm: Algorithm::Maglev,
                    unknown_balance: false,
                    backends: vec![be("198.19.0.11", None, 1), be("198.19.0.12", Some(9090), 1)],
                    formula: None,
                    health: Vec::new(),
                },
                Service {
                    name: "dsr".into(),
                    vips: vec![ip("198.18.0.20")],
                    mode: Mode::Dsr,
                    algorithm: Algorithm::RoundRobin,
                    unknown_balance: false,
                    backends: vec![be("198.19.0.21", None, 1), be("198.19.0.22", None, 1)],
                    formula: None,
                    health: Vec::new(),
                },
                Service {
                    name: "web6".into(),
                    vips: vec![ip("2001:db8::10")],
                    mode: Mode::Nat { to_port: None },
                    algorithm: Algorithm::LeastLoad,
                    unknown_balance: true,
                    backends: vec![be("2001:db8:1::11", None, 1)],
                    formula: None,
                    health: Vec::new(),
                },
            ],
            routes: vec![
                route("198.18.0.0", 24, None, 0),
                route("2001:db8::", 64, None, 0),
                route("198.19.0.0", 24, None, 1),
                route("2001:db8:1::", 64, None, 1),
                route("0.0.0.0", 0, Some("198.18.0.254"), 0),
            ],
            rules: Default::default(),
        }
    }

    /// The policy, by hand: what the compiled `.lbp` would decide for this
    /// appliance (no filter rules), a packet that would be sent on with a TTL
    /// of 1 or 0 expiring.
    fn policy(f: &Fields) -> Decision {
        let d = pipeline(f);
        let sent_on = [Action::Balance as u32, Action::Forward as u32].contains(&d.action);
        if sent_on && lbp_abi::expires(f) {
            return Decision {
                action: Action::Expire as u32,
                hash: 0,
                ..d
            };
        }
        d
    }

    fn pipeline(f: &Fields) -> Decision {
        let dst = ip_of(f.ip_version, &f.ip_dst);
        let tcp = f.present & present::TCP != 0;
        let d = |action: Action, target: u32, st: u32| Decision {
            action: action as u32,
            target,
            rule: lbp_abi::NO_RULE,
            stage: st,
            hash: if action == Action::Balance {
                flow_hash(f, hash_field::ALL)
            } else {
                0
            },
        };
        if f.present & present::MALFORMED != 0 {
            return d(Action::Drop, 0, stage::MALFORMED);
        }
        if dst == ip("198.18.0.10") && tcp && f.dport == 80 {
            return d(Action::Balance, 0, stage::SERVICE);
        }
        if dst == ip("198.18.0.20") && tcp && f.dport == 80 {
            return d(Action::Balance, 1, stage::SERVICE);
        }
        if dst == ip("2001:db8::10") && tcp && f.dport == 80 {
            return d(Action::Balance, 2, stage::SERVICE);
        }
        if [ip("198.18.0.10"), ip("198.18.0.20"), ip("2001:db8::10")].contains(&dst) {
            let a = if tcp { Action::Reset } else { Action::Drop };
            return d(a, 0, stage::INVALID_ENTRY);
        }
        if [ip("198.18.0.1"), ip("198.19.0.1")].contains(&dst) {
            return d(Action::Local, 0, stage::OWN_ADDRESS);
        }
        match route_lookup(&appliance().routes, dst) {
            Some(r) => d(Action::Forward, r as u32, stage::ROUTE),
            None => d(Action::Drop, 0, stage::ROUTE),
        }
    }

    struct Out {
        tx: Vec<Vec<Vec<u8>>>,
        local: Vec<Vec<u8>>,
    }

    struct Rig {
        frames: Frames,
        ports: Vec<MemPort>,
        hosts: Vec<MemHost>,
        st: CoreState,
        shared: Shared,
        out: Outputs,
        published: Arc<Published>,
        reader: crate::generation::Reader,
    }

    impl Rig {
        fn new() -> Rig {
            let (p0, h0) = host(64);
            let (p1, h1) = host(64);
            let published = Arc::new(Published::new(
                Generation::new(Arc::new(policy), appliance()),
                2,
            ));
            let reader = published.register().unwrap();
            Rig {
                frames: Frames::new(128).unwrap(),
                ports: vec![p0, p1],
                hosts: vec![h0, h1],
                st: CoreState::new(Pending::with_defaults()),
                shared: Shared {
                    conns: ConnTable::new(1024),
                    neigh: NeighTable::new(64),
                },
                out: Outputs::new(2, 64),
                published,
                reader,
            }
        }

        /// A rig whose neighbour table knows the client, gateway and back ends.
        fn known() -> Rig {
            let r = Rig::new();
            for a in [
                "198.18.0.50",
                "2001:db8::50",
                "198.19.0.11",
                "198.19.0.12",
                "198.19.0.21",
                "198.19.0.22",
                "2001:db8:1::11",
            ] {
                let mac = if a.ends_with("::50") || a.ends_with(".50") {
                    CLIENT_MAC
                } else {
                    mac_of(ip(a))
                };
                r.shared.neigh.set_permanent(&NeighAddr::from(ip(a)), mac);
            }
            r.shared
                .neigh
                .set_permanent(&NeighAddr::from(ip("198.18.0.254")), GW_MAC);
            r
        }

        /// One burst through real ports and descriptors, then the frame books.
        fn run(&mut self, input: &[(u32, Vec<u8>)], now: u64) -> Out {
            for (i, f) in input {
                assert!(self.hosts[*i as usize].inject(f));
            }
            let mut rx = Vec::new();
            for (i, p) in self.ports.iter_mut().enumerate() {
                let mut buf = [Desc { addr: 0, len: 0 }; 32];
                let n = p.recv(&mut self.frames, &mut buf);
                rx.extend(buf[..n].iter().map(|&d| (d, i as u32)));
            }
            assert_eq!(rx.len(), input.len());
            let g = self.reader.enter();
            process_burst(
                g,
                &mut self.st,
                &self.shared,
                &mut self.frames,
                &rx,
                &mut self.out,
                now,
            );
            for (i, p) in self.ports.iter_mut().enumerate() {
                let q = &self.out.tx[i];
                let n = p.send(&mut self.frames, q);
                for &d in &q[n..] {
                    self.frames.free(d);
                }
                p.flush(&mut self.frames);
            }
            let local = self
                .out
                .local
                .iter()
                .map(|&d| self.frames.packet(d).to_vec())
                .collect();
            for &d in &self.out.local {
                self.frames.free(d);
            }
            self.out.clear();
            // Every frame is free again, except those held for a neighbour.
            assert!(self.st.balanced(), "{:?}", self.st.counters);
            assert_eq!(
                self.frames.free_count() as u64 + self.st.pending_len(),
                self.frames.count() as u64
            );
            Out {
                tx: self.hosts.iter().map(MemHost::take_all).collect(),
                local,
            }
        }
    }

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut s = Spec::new(src, dst, 6);
        s.sport = sport;
        s.dport = dport;
        s.tcp_flags = flags;
        let mut f = build(&s).frame;
        f[..6].copy_from_slice(&M0);
        f[6..12].copy_from_slice(&CLIENT_MAC);
        f
    }

    fn fields(f: &[u8]) -> Fields {
        lbp_abi::wire::extract(f, 0)
    }

    fn checksums_ok(f: &[u8]) {
        let x = fields(f);
        assert_checksums(
            f,
            usize::from(x.l3_offset),
            usize::from(x.l4_offset),
            x.ip_proto,
        );
    }

    const SYN: u8 = tcp_flag::SYN;
    const ACK: u8 = tcp_flag::ACK;

    #[test]
    fn nat_both_ways_ipv4_and_ipv6() {
        let mut r = Rig::known();
        for (client, vip, port_of) in [
            (
                "198.18.0.50",
                "198.18.0.10",
                [("198.19.0.11", 8080), ("198.19.0.12", 9090)],
            ),
            (
                "2001:db8::50",
                "2001:db8::10",
                [("2001:db8:1::11", 80), ("2001:db8:1::11", 80)],
            ),
        ] {
            let syn = tcp(client, vip, 40000, 80, SYN);
            let out = r.run(&[(0, syn.clone())], NS);
            assert!(out.tx[0].is_empty());
            assert_eq!(out.tx[1].len(), 1);
            let fwd = &out.tx[1][0];
            let x = fields(fwd);
            let backend = ip_of(x.ip_version, &x.ip_dst);
            let want_port = port_of.iter().find(|(a, _)| ip(a) == backend).unwrap().1;
            assert_eq!(x.dport, want_port);
            assert_eq!(ip_of(x.ip_version, &x.ip_src), ip(client));
            assert_eq!(x.sport, 40000);
            assert_eq!(x.ip_ttl, 63);
            assert_eq!(fwd[..6], mac_of(backend));
            assert_eq!(fwd[6..12], M1);
            checksums_ok(fwd);
            // The payload is untouched.
            assert_eq!(fwd[fwd.len() - 12..], syn[syn.len() - 12..]);

            // The back end answers: rewritten back to the VIP and port 80.
            let mut reply = tcp(&backend.to_string(), client, want_port, 40000, SYN | ACK);
            reply[6..12].copy_from_slice(&mac_of(backend));
            let out = r.run(&[(1, reply)], 2 * NS);
            assert_eq!(out.tx[0].len(), 1, "{:?}", r.st.counters);
            let back = &out.tx[0][0];
            let y = fields(back);
            assert_eq!(ip_of(y.ip_version, &y.ip_src), ip(vip));
            assert_eq!(y.sport, 80);
            assert_eq!(ip_of(y.ip_version, &y.ip_dst), ip(client));
            assert_eq!(y.dport, 40000);
            assert_eq!(back[..6], CLIENT_MAC);
            assert_eq!(back[6..12], M0);
            checksums_ok(back);
        }
        let c = &r.st.counters;
        assert_eq!(c.nat_return.packets, 2);
        assert_eq!(c.action(Action::Balance), 2);
        assert_eq!(c.service_new[0] + c.service_new[2], 2);
        assert_eq!(
            r.published.with_active(|g| g.loads.get(2, 0)),
            1,
            "least load counts new connections"
        );
    }

    #[test]
    fn a_direct_connection_supersedes_a_nat_connection_of_the_same_tuple() {
        let mut r = Rig::known();
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
            NS,
        );
        let x = fields(&out.tx[1][0]);
        let backend = ip_of(x.ip_version, &x.ip_dst).to_string();
        let bport = x.dport;
        // The client reuses its port for a connection straight to the back end.
        let direct = tcp("198.18.0.50", &backend, 40000, bport, SYN);
        let out = r.run(&[(0, direct)], 2 * NS);
        assert_eq!(out.tx[1].len(), 1, "routed to the back end");
        assert_eq!(r.st.counters.superseded, 1);
        // The back end's answer belongs to the new connection: not rewritten.
        let mut reply = tcp(&backend, "198.18.0.50", bport, 40000, SYN | ACK);
        reply[6..12].copy_from_slice(&mac_of(ip(&backend)));
        let out = r.run(&[(1, reply)], 3 * NS);
        let y = fields(&out.tx[0][0]);
        assert_eq!(ip_of(y.ip_version, &y.ip_src), ip(&backend));
        assert_eq!(y.sport, bport);
        assert_eq!(r.st.counters.nat_return.packets, 0);
    }

    #[test]
    fn dsr_changes_the_macs_and_ttl_and_round_robins() {
        let mut r = Rig::known();
        let mut seen = Vec::new();
        for port in [40000, 40001, 40002] {
            let syn = tcp("198.18.0.50", "198.18.0.20", port, 80, SYN);
            let out = r.run(&[(0, syn.clone())], NS);
            let f = &out.tx[1][0];
            // Only the MACs change, and the TTL (with the header checksum).
            assert_eq!(f[12..22], syn[12..22]);
            assert_eq!(f[14 + 8], syn[14 + 8] - 1);
            assert_eq!(f[26..], syn[26..]);
            checksums_ok(f);
            assert_eq!(f[6..12], M1);
            seen.push(f[..6].to_vec());
        }
        let b21 = mac_of(ip("198.19.0.21")).to_vec();
        let b22 = mac_of(ip("198.19.0.22")).to_vec();
        assert_eq!(seen, vec![b21.clone(), b22, b21]);
        assert_eq!(r.st.counters.backend_new[1], vec![2, 1]);
    }

    #[test]
    fn resets_for_invalid_entries_and_unknown_connections() {
        let mut r = Rig::known();
        // Wrong port on the VIP: the policy says reset.
        let seg = tcp("198.18.0.50", "198.18.0.10", 40000, 25, SYN);
        // A non-SYN of no connection to a service without `unknown balance`.
        let ack = tcp("198.18.0.50", "198.18.0.10", 40001, 80, ACK);
        // A RST of no connection: never answered.
        let rst = tcp("198.18.0.50", "198.18.0.10", 40002, 80, tcp_flag::RST | ACK);
        // UDP to the VIP: not an entry, dropped.
        let mut s = Spec::new("198.18.0.50", "198.18.0.10", 17);
        s.dport = 53;
        let udp = build(&s).frame;
        let out = r.run(&[(0, seg), (0, ack.clone()), (0, rst), (0, udp)], NS);
        assert_eq!(out.tx[0].len(), 2);
        assert!(out.tx[1].is_empty());
        for (f, sport) in out.tx[0].iter().zip([25u16, 80]) {
            let x = fields(f);
            assert_ne!(x.tcp_flags & tcp_flag::RST, 0);
            assert_eq!(ip_of(4, &x.ip_src), ip("198.18.0.10"));
            assert_eq!(ip_of(4, &x.ip_dst), ip("198.18.0.50"));
            assert_eq!(x.sport, sport);
            assert_eq!(f[..6], CLIENT_MAC, "MACs swapped");
            assert_eq!(f[6..12], M0);
            checksums_ok(f);
        }
        // The ACK's RST carries seq = SEG.ACK.
        let y = fields(&out.tx[0][1]);
        let seq_at = usize::from(y.l4_offset) + 4;
        assert_eq!(
            out.tx[0][1][seq_at..seq_at + 4],
            0x0a0b_0c0du32.to_be_bytes()
        );
        let c = &r.st.counters;
        assert_eq!(c.unknown_resets, 1);
        assert_eq!(c.dropped(DropReason::UnknownRst), 1);
        assert_eq!(c.dropped(DropReason::InvalidEntry), 1);
        assert_eq!(r.shared.conns.len(), 0, "nothing recorded");
    }

    #[test]
    fn routing_decrements_the_ttl_and_rewrites_macs() {
        let mut r = Rig::known();
        let mut s = Spec::new("198.19.0.11", "198.18.0.50", 17);
        s.sport = 5353;
        let pkt = build(&s).frame;
        let mut far = Spec::new("198.19.0.11", "198.18.200.9", 17);
        far.dport = 9;
        let far = build(&far).frame;
        let mut dying = build(&Spec::new("198.19.0.11", "198.18.0.50", 17)).frame;
        dying[14 + 8] = 1;
        let l3 = 14;
        let c = testutil::ipv4_header_expected(&dying, l3);
        dying[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let out = r.run(&[(1, pkt.clone()), (1, far), (1, dying.clone())], NS);
        assert_eq!(out.tx[0].len(), 2);
        let f = &out.tx[0][0];
        assert_eq!(fields(f).ip_ttl, 63);
        assert_eq!(f[..6], CLIENT_MAC);
        assert_eq!(f[6..12], M0);
        checksums_ok(f);
        // Everything but MACs, TTL and header checksum is as it came.
        assert_eq!(f[14..22], pkt[14..22]);
        assert_eq!(f[26..], pkt[26..]);
        // Beyond the connected network: the default route's gateway.
        assert_eq!(out.tx[0][1][..6], GW_MAC);
        // TTL 1 expires: answered out of the interface it came in by.
        assert_eq!(out.tx[1].len(), 1);
        assert_time_exceeded(&out.tx[1][0], &dying, "198.19.0.1");
        let c = &r.st.counters;
        assert_eq!(c.action(Action::Forward), 2);
        assert_eq!(c.action(Action::Expire), 1);
        assert_eq!((c.time_exceeded, c.dropped(DropReason::Ttl)), (1, 0));
    }

    /// `frame` with its TTL (hop limit) set to `ttl`, the IPv4 header checksum
    /// updated.
    fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
        let l3 = usize::from(fields(&frame).l3_offset);
        if frame[l3] >> 4 == 4 {
            frame[l3 + 8] = ttl;
            let c = testutil::ipv4_header_expected(&frame, l3);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            frame[l3 + 7] = ttl;
        }
        frame
    }

    /// `answer` is the ICMP (ICMPv6) time exceeded from `from` about `orig`,
    /// sent back to the sender's MAC, quoting `orig` from its IP header on.
    fn assert_time_exceeded(answer: &[u8], orig: &[u8], from: &str) {
        let a = fields(answer);
        let o = fields(orig);
        let v6 = o.ip_version == 6;
        assert_eq!(a.ip_version, o.ip_version);
        assert_eq!(a.ip_proto, if v6 { PROTO_ICMPV6 } else { 1 });
        assert_eq!((a.icmp_type, a.icmp_code), (if v6 { 3 } else { 11 }, 0));
        assert_eq!(ip_of(a.ip_version, &a.ip_src), ip(from));
        assert_eq!(a.ip_dst, o.ip_src);
        assert_eq!(a.ip_ttl, 64);
        assert_eq!(answer[..6], orig[6..12], "back to the sender");
        assert_eq!(answer[6..12], orig[..6]);
        let quoted = usize::from(a.l4_offset) + 8;
        assert_eq!(answer[quoted..], orig[usize::from(o.l3_offset)..]);
        checksums_ok(answer);
    }

    #[test]
    fn expired_packets_are_answered_with_time_exceeded() {
        let mut r = Rig::known();
        // Balanced (NAT, IPv4 and IPv6; DSR) with a TTL of 1 or 0: answered,
        // and no connection opened.
        let syn4 = with_ttl(tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN), 1);
        let syn6 = with_ttl(tcp("2001:db8::50", "2001:db8::10", 40000, 80, SYN), 1);
        let dsr = with_ttl(tcp("198.18.0.50", "198.18.0.20", 40000, 80, SYN), 0);
        let out = r.run(
            &[(0, syn4.clone()), (0, syn6.clone()), (0, dsr.clone())],
            NS,
        );
        assert!(out.tx[1].is_empty());
        assert_eq!(out.tx[0].len(), 3);
        assert_time_exceeded(&out.tx[0][0], &syn4, "198.18.0.1");
        assert_time_exceeded(&out.tx[0][1], &syn6, "2001:db8::1");
        assert_time_exceeded(&out.tx[0][2], &dsr, "198.18.0.1");
        assert_eq!(r.shared.conns.len(), 0);
        assert_eq!(r.st.counters.action(Action::Expire), 3);
        assert_eq!(r.st.counters.time_exceeded, 3);

        // TTL 2: balanced, and the back end sees 1 (DSR is a hop too).
        let out = r.run(
            &[(
                0,
                with_ttl(tcp("198.18.0.50", "198.18.0.20", 40000, 80, SYN), 2),
            )],
            NS,
        );
        assert_eq!(fields(&out.tx[1][0]).ip_ttl, 1);
        checksums_ok(&out.tx[1][0]);

        // NAT return traffic whose TTL runs out: answered to the back end,
        // quoting the reply as the back end sent it.
        let syn = tcp("198.18.0.50", "198.18.0.10", 40001, 80, SYN);
        let out = r.run(&[(0, syn)], NS);
        let x = fields(&out.tx[1][0]);
        let backend = ip_of(4, &x.ip_dst);
        let mut reply = tcp(
            &backend.to_string(),
            "198.18.0.50",
            x.dport,
            40001,
            SYN | ACK,
        );
        reply[6..12].copy_from_slice(&mac_of(backend));
        let reply = with_ttl(reply, 1);
        let out = r.run(&[(1, reply.clone())], NS);
        assert!(out.tx[0].is_empty());
        assert_time_exceeded(&out.tx[1][0], &reply, "198.19.0.1");

        // Never in answer to an ICMP error: dropped and counted.
        let mut err = build(&Spec::new("198.18.0.50", "198.19.0.11", 1)).frame;
        err[14 + 20] = 3;
        let err = with_ttl(err, 1);
        let out = r.run(&[(0, err)], NS);
        assert!(out.tx.iter().all(Vec::is_empty));
        let c = &r.st.counters;
        assert_eq!((c.time_exceeded, c.dropped(DropReason::Ttl)), (4, 1));
    }

    #[test]
    fn time_exceeded_is_rate_limited() {
        let mut r = Rig::known();
        let burst: Vec<(u32, Vec<u8>)> = (0..30)
            .map(|i| {
                let mut s = Spec::new("198.18.0.50", "198.19.0.11", 17);
                s.sport = 1000 + i;
                (0, with_ttl(build(&s).frame, 1))
            })
            .collect();
        let t = 10 * NS;
        let first = r.run(&burst, t);
        let second = r.run(&burst, t);
        let sent = first.tx[0].len() + second.tx[0].len();
        assert_eq!(sent as u64, TIME_EXCEEDED_BURST);
        let c = &r.st.counters;
        assert_eq!(c.time_exceeded_limited, 60 - TIME_EXCEEDED_BURST);
        assert_eq!(c.dropped(DropReason::Ttl), 60 - TIME_EXCEEDED_BURST);
        // A millisecond later, one more; a second later, a whole burst again.
        let third = r.run(&burst, t + 1_000_000);
        assert_eq!(third.tx[0].len(), 1);
        let fourth = r.run(&burst, t + 2 * NS);
        assert_eq!(fourth.tx[0].len(), 30);
    }

    fn arp_request(sender_mac: [u8; 6], sender: &str, target: &str) -> Vec<u8> {
        let mut f = vec![0; 60];
        let (IpAddr::V4(s), IpAddr::V4(t)) = (ip(sender), ip(target)) else {
            unreachable!()
        };
        let n = wire::arp::build_request(&mut f, sender_mac, s, t).unwrap();
        f.truncate(n);
        f
    }

    #[test]
    fn arp_requests_for_own_addresses_and_vips_are_answered() {
        let mut r = Rig::new();
        let out = r.run(
            &[
                (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.1")),
                (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.10")),
                (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.77")),
                // An address of the other interface is not answered here.
                (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.19.0.1")),
            ],
            NS,
        );
        assert_eq!(out.tx[0].len(), 2);
        for (f, who) in out.tx[0].iter().zip(["198.18.0.1", "198.18.0.10"]) {
            let a = wire::arp::parse(f, 14).unwrap();
            assert_eq!(a.op, wire::arp::OP_REPLY);
            assert_eq!(IpAddr::V4(a.sender_ip), ip(who));
            assert_eq!(a.sender_mac, M0);
            assert_eq!(a.target_mac, CLIENT_MAC);
            assert_eq!(f[..6], CLIENT_MAC);
        }
        assert_eq!(r.st.counters.arp_replies, 2);
        assert_eq!(r.st.counters.neigh_consumed, 2);
        // The requester was learned.
        let n = r
            .shared
            .neigh
            .lookup(&NeighAddr::from(ip("198.18.0.50")), NS);
        assert_eq!(n.map(|n| n.mac), Some(CLIENT_MAC));
    }

    #[test]
    fn a_held_packet_leaves_when_its_neighbour_answers_and_expires_otherwise() {
        let mut r = Rig::new();
        let mut s = Spec::new("198.18.0.50", "198.19.0.99", 17);
        s.dport = 7;
        let pkt = build(&s).frame;
        let out = r.run(&[(0, pkt.clone())], NS);
        // Held; an ARP request for the next hop goes out of interface 1.
        assert!(out.tx[0].is_empty());
        assert_eq!(out.tx[1].len(), 1);
        let req = &out.tx[1][0];
        let a = wire::arp::parse(req, 14).unwrap();
        assert_eq!(a.op, wire::arp::OP_REQUEST);
        assert_eq!(IpAddr::V4(a.target_ip), ip("198.19.0.99"));
        assert_eq!(IpAddr::V4(a.sender_ip), ip("198.19.0.1"));
        assert_eq!(req[..6], [0xff; 6]);
        assert_eq!(r.st.pending_len(), 1);
        // A second packet waits too, without a second request (rate limit).
        let out = r.run(&[(0, pkt.clone())], NS + 1000);
        assert!(out.tx[1].is_empty());
        assert_eq!(r.st.pending_len(), 2);
        // The neighbour answers: both leave, with its MAC.
        let peer = [2, 0, 0, 0, 0, 0x99];
        let mut reply = req.clone();
        let (IpAddr::V4(t), _) = (ip("198.19.0.99"), ()) else {
            unreachable!()
        };
        assert!(wire::arp::reply_in_place(&mut reply, 14, peer, t));
        let out = r.run(&[(1, reply)], 2 * NS);
        assert_eq!(out.tx[1].len(), 2);
        for f in &out.tx[1] {
            assert_eq!(f[..6], peer);
            assert_eq!(f[6..12], M1);
            assert_eq!(fields(f).ip_ttl, 63);
            checksums_ok(f);
        }
        assert_eq!(r.st.pending_len(), 0);
        // Another next hop never answers: its packet is freed after the hold.
        let s = Spec::new("198.18.0.50", "198.19.0.98", 17);
        r.run(&[(0, build(&s).frame)], 3 * NS);
        assert_eq!(r.st.pending_len(), 1);
        let out = r.run(&[], 10 * NS);
        assert!(out.tx.iter().all(Vec::is_empty));
        assert_eq!(r.st.pending_len(), 0);
        assert_eq!(r.st.counters.dropped(DropReason::NeighTimeout), 1);
    }

    #[test]
    fn neighbour_solicitations_for_own_addresses_are_answered() {
        let mut r = Rig::new();
        let peer = [2, 0, 0, 0, 0, 0x66];
        let mut ns = vec![0; wire::ndp::NS_FRAME_LEN];
        let (IpAddr::V6(s), IpAddr::V6(t)) = (ip("2001:db8:1::66"), ip("2001:db8:1::1")) else {
            unreachable!()
        };
        wire::ndp::build_ns(&mut ns, peer, s, t).unwrap();
        let out = r.run(&[(1, ns)], NS);
        assert_eq!(out.tx[1].len(), 1);
        let f = &out.tx[1][0];
        let x = lbp_abi::wire::extract(f, 1);
        let na =
            wire::ndp::parse_na(f, usize::from(x.l3_offset), usize::from(x.l4_offset)).unwrap();
        assert_eq!(na.target, t);
        assert_eq!(na.target_ll, Some(M1));
        assert!(na.solicited);
        assert_eq!(f[..6], peer);
        assert_eq!(r.st.counters.nd_replies, 1);
        let n = r.shared.neigh.lookup(&NeighAddr::from(IpAddr::V6(s)), NS);
        assert_eq!(n.map(|n| n.mac), Some(peer));
    }

    /// What the core routes on its own (here the control plane's packets)
    /// never goes to a martian destination, though the default route covers
    /// most of them: dropped and counted as `Martian`.
    #[test]
    fn the_core_never_routes_to_a_martian() {
        let mut r = Rig::known();
        let dsts = [
            "224.0.0.251",
            "127.0.0.1",
            "255.255.255.255",
            "198.18.0.255",
            "169.254.1.1",
            "0.0.0.7",
            "ff02::1",
            "198.18.0.50",
        ];
        let mut rx = Vec::new();
        for dst in dsts {
            let src = if dst.contains(':') {
                "2001:db8::1"
            } else {
                "198.18.0.1"
            };
            let frame = tcp(src, dst, 40000, 80, SYN);
            let d = r.frames.alloc().unwrap();
            r.frames.slot_mut(d)[..frame.len()].copy_from_slice(&frame);
            let d = Desc {
                len: frame.len() as u32,
                ..d
            };
            rx.push((d, FROM_LOCAL));
        }
        let g = r.reader.enter();
        process_burst(g, &mut r.st, &r.shared, &mut r.frames, &rx, &mut r.out, NS);
        assert_eq!(r.st.counters.dropped(DropReason::Martian), 7);
        assert_eq!(r.st.counters.dropped(DropReason::NoRoute), 0);
        // Only the client's own address is routed out, on interface 0.
        assert_eq!(r.out.tx[0].len(), 1);
        assert!(r.out.tx[1].is_empty());
        let sent = fields(r.frames.packet(r.out.tx[0][0]));
        assert_eq!(ip_of(4, &sent.ip_dst), ip("198.18.0.50"));
        for q in &r.out.tx {
            for &d in q {
                r.frames.free(d);
            }
        }
        r.out.clear();
    }

    #[test]
    fn local_and_malformed() {
        let mut r = Rig::known();
        let ssh = tcp("198.18.0.50", "198.18.0.1", 40000, 22, SYN);
        let mut bad_ihl = ssh.clone();
        bad_ihl[14] = 0x44;
        let out = r.run(
            &[
                (0, ssh.clone()),
                (0, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
                (0, bad_ihl),
            ],
            NS,
        );
        assert_eq!(out.local, vec![ssh]);
        assert!(out.tx.iter().all(Vec::is_empty));
        assert_eq!(r.st.counters.dropped(DropReason::Malformed), 2);
        assert_eq!(r.st.counters.action(Action::Local), 1);
        assert_eq!(r.st.counters.rx.packets, 3);
    }

    #[test]
    fn an_established_connection_keeps_its_back_end_after_a_weight_change() {
        let mut r = Rig::known();
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
            NS,
        );
        let first = ip_of(4, &fields(&out.tx[1][0]).ip_dst);
        let idx = if first == ip("198.19.0.11") { 0 } else { 1 };
        // The control core takes that back end's weight to 0 (the same
        // compile: counters go on).
        let mut w = vec![vec![1, 1]];
        w[0][idx] = 0;
        let g = r.published.with_active(|g| g.reweighted(&w, &[]));
        r.published.publish(g);
        for (i, port) in (40001..40009).enumerate() {
            let out = r.run(
                &[
                    (0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK)),
                    (0, tcp("198.18.0.50", "198.18.0.10", port, 80, SYN)),
                ],
                2 * NS + i as u64,
            );
            assert_eq!(out.tx[1].len(), 2);
            assert_eq!(ip_of(4, &fields(&out.tx[1][0]).ip_dst), first, "sticks");
            assert_ne!(ip_of(4, &fields(&out.tx[1][1]).ip_dst), first, "weight 0");
        }
        assert_eq!(
            r.published.reclaim(),
            1,
            "the core moved past the old generation"
        );
        assert_eq!(r.st.counters.backend_new[0][idx], 1);
        assert_eq!(r.st.counters.backend_new[0][1 - idx], 8);
    }

    #[test]
    fn a_connection_whose_back_end_left_or_went_into_maintenance_is_reset() {
        for maint in [false, true] {
            let mut r = Rig::known();
            let out = r.run(
                &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
                NS,
            );
            let first = ip_of(4, &fields(&out.tx[1][0]).ip_dst);
            let idx = usize::from(first != ip("198.19.0.11"));
            // A reload that removes that back end (the pool reordered too), or
            // the same policy with it in maintenance.
            let g = if maint {
                let mut closed = vec![vec![false, false]];
                closed[0][idx] = true;
                r.published.with_active(|g| g.reweighted(&[], &closed))
            } else {
                let mut app = appliance();
                app.services[0].backends.remove(idx);
                app.services[0]
                    .backends
                    .insert(0, be("198.19.0.99", None, 1));
                Generation::new(Arc::new(policy), app)
            };
            r.published.publish(g);
            let out = r.run(
                &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK))],
                2 * NS,
            );
            assert!(
                out.tx[1].is_empty(),
                "maint {maint}: not to the old back end"
            );
            assert_eq!(out.tx[0].len(), 1, "maint {maint}: a reset to the client");
            let f = fields(&out.tx[0][0]);
            assert_ne!(f.tcp_flags & tcp_flag::RST, 0, "maint {maint}");
            assert_eq!(r.st.counters.backend_gone, 1, "maint {maint}");
            // The client's next connection is balanced anew, never to it.
            let out = r.run(
                &[(0, tcp("198.18.0.50", "198.18.0.10", 40001, 80, SYN))],
                3 * NS,
            );
            assert_ne!(
                ip_of(4, &fields(&out.tx[1][0]).ip_dst),
                first,
                "maint {maint}"
            );
        }
    }

    #[test]
    fn a_connection_keeps_its_back_end_when_a_reload_reorders_the_pool() {
        let mut r = Rig::known();
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
            NS,
        );
        let first = fields(&out.tx[1][0]);
        let mut app = appliance();
        app.services[0].backends.reverse();
        app.services.swap(0, 1);
        // The policy's service index for the VIP follows the new order.
        let moved = |f: &Fields| {
            let mut d = policy(f);
            if d.action == Action::Balance as u32 {
                d.target = match d.target {
                    0 => 1,
                    1 => 0,
                    t => t,
                };
            }
            d
        };
        r.published.publish(Generation::new(Arc::new(moved), app));
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK))],
            2 * NS,
        );
        let f = fields(&out.tx[1][0]);
        assert_eq!((f.ip_dst, f.dport), (first.ip_dst, first.dport), "sticks");
        assert_eq!(r.st.counters.backend_gone, 0);
    }

    #[test]
    fn an_icmp_error_from_a_back_end_is_translated_for_the_client() {
        let mut r = Rig::known();
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
            NS,
        );
        let fwd = out.tx[1][0].clone();
        let x = fields(&fwd);
        let backend = ip_of(4, &x.ip_dst);
        // The back end says "fragmentation needed" about the client's packet.
        let quoted = &fwd[14..14 + 28];
        let mut s = Spec::new(&backend.to_string(), "198.18.0.50", 1);
        s.payload = quoted.to_vec();
        let mut err = build(&s).frame;
        let l4 = 14 + 20;
        err[l4] = 3;
        err[l4 + 1] = 4;
        err[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
        let c = testutil::l4_expected(&err, 14, l4, 1);
        err[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        let out = r.run(&[(1, err)], 2 * NS);
        assert_eq!(out.tx[0].len(), 1, "{:?}", r.st.counters);
        let f = &out.tx[0][0];
        let y = fields(f);
        assert_eq!(ip_of(4, &y.ip_src), ip("198.18.0.10"));
        let e = wire::parse_icmp_error(f, 14, l4).unwrap();
        assert_eq!((e.dst, e.dport), (ip("198.18.0.10"), 80));
        assert_eq!((e.src, e.sport), (ip("198.18.0.50"), 40000));
        checksums_ok(f);
        assert_eq!(r.st.counters.icmp_errors, 1);
    }

    #[test]
    fn link_local_address_from_the_mac() {
        // RFC 4291 appendix A: 02:00:00:00:00:a0 -> fe80::ff:fe00:a0.
        assert_eq!(IpAddr::V6(link_local(M0)), ip("fe80::ff:fe00:a0"));
        assert_eq!(
            IpAddr::V6(link_local([0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde])),
            ip("fe80::3656:78ff:fe9a:bcde")
        );
    }
}
