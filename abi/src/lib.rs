//! The ABI between lbp's compiler and its runtime: plain `#[repr(C)]` data and one
//! function signature, with no dependencies.
//!
//! A switching core extracts a packet's header fields once into [`Fields`] (module
//! `wire` of the compiler crate does that, bounds-checked, in safe Rust), then calls
//! the compiled policy, which reads only `Fields` and the policy's own tables and
//! writes a [`Decision`]. The runtime depends on this crate, never on Cranelift.
#![forbid(unsafe_code)]

/// Bits of [`Fields::present`]: which headers the packet has.
pub mod present {
    /// An Ethernet header (always set for a frame of at least 14 bytes).
    pub const ETH: u32 = 1 << 0;
    /// An IPv4 header.
    pub const IP4: u32 = 1 << 1;
    /// An IPv6 header.
    pub const IP6: u32 = 1 << 2;
    /// A TCP header (not in a later fragment).
    pub const TCP: u32 = 1 << 3;
    /// A UDP header (not in a later fragment).
    pub const UDP: u32 = 1 << 4;
    /// An ICMP (IPv4) or ICMPv6 header (not in a later fragment).
    pub const ICMP: u32 = 1 << 5;
    /// The packet is a fragment, first or later (`ip.frag`).
    pub const FRAG: u32 = 1 << 6;
    /// The packet claims a header it is too short for, or a header is invalid
    /// (IPv4 IHL below 5, a total length beyond the frame, ...). Such a packet is
    /// dropped before the filter runs and counted as malformed.
    pub const MALFORMED: u32 = 1 << 7;
    /// An 802.1Q or 802.1ad tag was skipped.
    pub const VLAN: u32 = 1 << 8;
}

/// TCP flag bits of [`Fields::tcp_flags`] (as on the wire).
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// The header fields of one packet, extracted once, read by the compiled policy.
///
/// Addresses are 16 bytes in network order; an IPv4 address is stored
/// IPv4-mapped (`::ffff:a.b.c.d`), so that one 128-bit comparison serves both
/// families (the family itself is `ip_version`). A field of an absent header is 0
/// and its `present` bit is clear; the policy tests the bit first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// Bits of [`present`].
    pub present: u32,
    /// The frame's length, Ethernet header included (`pkt.len`).
    pub pkt_len: u32,
    /// Index of the receiving interface in the policy's interface list.
    pub in_iface: u32,
    /// IPv4 total length, or IPv6 payload length plus 40 (`ip.len`).
    pub ip_len: u32,
    /// The EtherType after any VLAN tags (`eth.type`).
    pub eth_type: u16,
    /// TCP or UDP source port (`l4.sport`, `tcp.sport`, `udp.sport`).
    pub sport: u16,
    /// TCP or UDP destination port.
    pub dport: u16,
    /// Offset of the IP header in the frame (for the runtime's rewrites).
    pub l3_offset: u16,
    /// Offset of the transport header in the frame, 0 if none.
    pub l4_offset: u16,
    /// 4 or 6; 0 without an IP header (`ip.version`).
    pub ip_version: u8,
    /// The protocol (IPv4) or upper-layer protocol after extension headers (IPv6).
    pub ip_proto: u8,
    /// TTL or hop limit (`ip.ttl`).
    pub ip_ttl: u8,
    /// TCP flags (bits of [`tcp_flag`]).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub ip_src: [u8; 16],
    pub ip_dst: [u8; 16],
}

/// What the policy decided for a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Discard silently.
    Drop = 0,
    /// TCP: answer with a RST; anything else is dropped.
    Reset = 1,
    /// Deliver to the control plane (the TAP pseudo-interface).
    Local = 2,
    /// Balance with service `target`.
    Balance = 3,
    /// Route: `target` is the index of the chosen route in the policy's route
    /// table (connected networks included).
    Forward = 4,
}

impl Action {
    pub fn from_u32(v: u32) -> Option<Action> {
        Some(match v {
            0 => Action::Drop,
            1 => Action::Reset,
            2 => Action::Local,
            3 => Action::Balance,
            4 => Action::Forward,
            _ => return None,
        })
    }
}

/// Why the pipeline decided as it did: which stage made the decision.
pub mod stage {
    /// The packet was malformed (dropped before the filter).
    pub const MALFORMED: u32 = 0;
    /// A filter rule decided; `Decision::rule` is its index.
    pub const FILTER: u32 = 1;
    /// A service entry matched (step 3).
    pub const SERVICE: u32 = 2;
    /// The destination is a virtual IP but no entry matched (step 4).
    pub const INVALID_ENTRY: u32 = 3;
    /// The destination is the appliance's own address (step 5).
    pub const OWN_ADDRESS: u32 = 4;
    /// Routing decided (step 6); no route is a drop at this stage.
    pub const ROUTE: u32 = 5;
}

/// The compiled policy's answer, written through the out pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decision {
    /// An [`Action`] as `u32`.
    pub action: u32,
    /// Service index (balance) or route index (forward); 0 otherwise.
    pub target: u32,
    /// The deciding filter rule's index, or [`NO_RULE`].
    pub rule: u32,
    /// One of [`stage`].
    pub stage: u32,
}

/// `Decision::rule` when no filter rule decided.
pub const NO_RULE: u32 = u32::MAX;

/// The signature of a compiled policy: reads `fields` and the tables behind
/// `tables` (a layout private to the compiled code and the crate that built it),
/// writes `out`. It never reads anything else, never loops, always returns.
pub type FilterFn =
    unsafe extern "C" fn(tables: *const u8, fields: *const Fields, out: *mut Decision);
