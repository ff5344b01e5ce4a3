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

mod balance;
mod counters;
mod expire;
mod neighbours;
mod route;
#[cfg(test)]
mod tests;

pub use counters::{Counters, DropReason, PktBytes};
pub(crate) use route::{bytes_of, martian};
pub use route::{ip_from_bytes, prefix_contains, route_lookup};

use lbp_abi::{Action, Decision, Fields, present, stage};

use crate::app::Apps;
use crate::balance::Wrr;
use crate::config::Algorithm;
use crate::conn::ConnTable;
use crate::generation::Generation;
use crate::neigh::{NeighTable, Pending};
use crate::ring::{Desc, Frames};
use crate::wire;
use route::ip_of;

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

/// State shared by all switching cores (lives across generations; the loads of
/// least-load services live in the generation, sized for its pools).
#[derive(Debug)]
pub struct Shared {
    pub conns: ConnTable,
    pub neigh: NeighTable,
    /// The XDP fast path's flows (`lbp_abi::bpf::fast::FLOWS`), once it
    /// runs: a TCP segment of a DSR service that no connection of the table
    /// knows may belong to a flow balanced in XDP (which left it to the
    /// cores, its back end's neighbour to be re-confirmed, or the fast path
    /// gone): it keeps that back end instead of a reset.
    pub xdp_flows: std::sync::OnceLock<crate::ring::bpf::LoadedMap>,
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
    /// Outside `lbp run` (the test bed, tests): hand each interface's queue to
    /// its port and flush it, freeing what a port does not take (how many, the
    /// result's first part), and copy the local queue's frames out before
    /// freeing them (the second part). The queues are empty after.
    pub fn hand_over<P: crate::ring::Port>(
        &mut self,
        ports: &mut [P],
        frames: &mut Frames,
    ) -> (usize, Vec<Vec<u8>>) {
        let mut refused = 0;
        for (p, q) in ports.iter_mut().zip(&self.tx) {
            let n = p.send(frames, q);
            for &d in &q[n..] {
                frames.free(d);
            }
            refused += q.len() - n;
            p.flush(frames);
        }
        let local = self
            .local
            .iter()
            .map(|&d| frames.packet(d).to_vec())
            .collect();
        for &d in &self.local {
            frames.free(d);
        }
        self.clear();
        (refused, local)
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

    // ---- Sending ------------------------------------------------------------

    // ---- Before the policy: ICMP errors, NAT return ----------------------------

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
}
