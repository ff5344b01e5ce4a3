//! What a switching core counts: drops by reason, packets and bytes per
//! interface, and the frame books that must balance after every burst.

use lbp_abi::Action;

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
    pub(super) fn add(&mut self, len: u32) {
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
    /// Flows the XDP fast path balanced that this core took into its table:
    /// a packet it left to the cores, or a NAT reply.
    pub xdp_adopted: u64,
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
