//! The ABI between lbp's compiler and its runtime: plain `#[repr(C)]` data and one
//! function signature, with no dependencies.
//!
//! A switching core extracts a packet's header fields once into [`Fields`] (module
//! [`wire`] does that, bounds-checked, in safe Rust), then calls
//! the compiled policy, which reads only `Fields` and the policy's own tables and
//! writes a [`Decision`]. The runtime depends on this crate, never on Cranelift.
//!
//! Besides that, the few things both sides name in the same words: a service's
//! [`Mode`] and [`Algorithm`], and a pool's weight formula ([`weight`]) and health
//! checks ([`health`]), which the compiler lowers and the runtime's control
//! module uses; and the Internet [`checksum`], which the runtime's packet
//! rewriting and the tests' frame builders share; and the eBPF instruction
//! encoding and assembler ([`bpf`]), which the compiler's eBPF back end emits
//! with and the runtime loads from.
#![forbid(unsafe_code)]

pub mod bpf;
pub mod checksum;
pub mod health;
pub mod martian;
pub mod weight;
pub mod wire;

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
    /// The packet would be balanced or forwarded, but its TTL (hop limit) is 1
    /// or 0 ([`expires`]): it is not sent on. The runtime answers it with an
    /// ICMP (ICMPv6) time exceeded, as a router does, except where RFC 1812 and
    /// RFC 4443 forbid an answer (an ICMP error, a later fragment, a source that
    /// is not one host) or the rate limit is reached. `target`, `rule` and
    /// `stage` are those of the balance or forward decision it replaces.
    Expire = 5,
    /// Hand the packet to the switching core's application number `target`
    /// ([`app`]: the built-in ones first, then those a program registered),
    /// which owns the frame from there (a filter rule's `app NAME`).
    App = 6,
}

/// The applications that run on a switching core, by the number a decision's
/// `target` names them with. The built-in ones have the first numbers; a
/// program that registers more (`lbp_runtime::app::Registry`) numbers them
/// after these, and hands the whole list to the checker and the compiler.
pub mod app {
    /// The built-in applications, in number order: `echo` (UDP echo, RFC 862)
    /// and `icmp` (ICMP and ICMPv6 echo replies).
    pub const BUILTIN: &[&str] = &["echo", "icmp"];

    /// The number of the built-in application called `name`.
    pub fn index(name: &str) -> Option<u32> {
        BUILTIN.iter().position(|n| *n == name).map(|i| i as u32)
    }
}

/// Whether a packet with these fields expires instead of being sent on: its TTL
/// or hop limit is 1 or 0, so a hop that decrements it would reach 0 (RFC 1812
/// 5.3.1, RFC 8200 3). Every packet the appliance sends onward (balanced,
/// forwarded, NAT return traffic, relayed ICMP errors) is held to it.
pub fn expires(f: &Fields) -> bool {
    f.ip_ttl <= 1
}

impl Action {
    pub fn from_u32(v: u32) -> Option<Action> {
        Some(match v {
            0 => Action::Drop,
            1 => Action::Reset,
            2 => Action::Local,
            3 => Action::Balance,
            4 => Action::Forward,
            5 => Action::Expire,
            6 => Action::App,
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
    /// Routing refused a martian destination (see [`crate::martian`]): a drop.
    pub const MARTIAN: u32 = 6;
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
    /// For `Balance`: [`flow_hash`] of the packet over the service's hash fields
    /// (the whole 5-tuple unless the service says `balance hash(...)`), which the
    /// runtime feeds to the service's algorithm; 0 for every other action.
    pub hash: u32,
}

/// How a balanced packet reaches its back end (a service's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rewrite the destination address (and port: the back end's own `port`,
    /// else `to_port`, else the packet's), and the source of the replies back.
    Nat { to_port: Option<u16> },
    /// Direct server return: rewrite the MAC addresses only; the back end holds
    /// the virtual IP and answers the client itself.
    Dsr,
}

/// How a new connection's back end is chosen (a service's `balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Weighted Maglev consistent hashing of `Decision::hash`.
    Maglev,
    /// Weighted round robin.
    RoundRobin,
    /// The back end with the least load per unit of weight.
    LeastLoad,
    /// `hash(FIELD, ...)`: Maglev over the hash of the listed fields (the
    /// compiled policy already hashed just those into `Decision::hash`).
    Hash,
}

/// Bits of a service's hash-field mask: which fields [`flow_hash`] mixes.
pub mod hash_field {
    /// `ip.src`
    pub const SRC: u32 = 1 << 0;
    /// `ip.dst`
    pub const DST: u32 = 1 << 1;
    /// `ip.proto`
    pub const PROTO: u32 = 1 << 2;
    /// `l4.sport`
    pub const SPORT: u32 = 1 << 3;
    /// `l4.dport`
    pub const DPORT: u32 = 1 << 4;
    /// The 5-tuple.
    pub const ALL: u32 = SRC | DST | PROTO | SPORT | DPORT;
}

/// The hash a new connection's back end is chosen by: the fields of `mask` (bits
/// of [`hash_field`]) mixed in a fixed order with fixed constants, so that every
/// appliance, core and run computes the same value for the same flow (Maglev
/// hashing behind ECMP relies on it). Addresses are mixed as their 16-byte
/// `Fields` form, ports as `Fields` holds them (0 without TCP or UDP).
pub fn flow_hash(f: &Fields, mask: u32) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    fn mix(h: u64, w: u64) -> u64 {
        (h.rotate_left(27) ^ w).wrapping_mul(K)
    }
    fn words(a: &[u8; 16]) -> (u64, u64) {
        let (hi, lo) = a.split_at(8);
        let hi = hi.try_into().map_or(0, u64::from_be_bytes);
        let lo = lo.try_into().map_or(0, u64::from_be_bytes);
        (hi, lo)
    }
    let mut h: u64 = 0x6c62_7020_666c_6f77;
    if mask & hash_field::SRC != 0 {
        let (a, b) = words(&f.ip_src);
        h = mix(mix(h, a), b);
    }
    if mask & hash_field::DST != 0 {
        let (a, b) = words(&f.ip_dst);
        h = mix(mix(h, a), b);
    }
    let mut w = 0u64;
    if mask & hash_field::PROTO != 0 {
        w |= u64::from(f.ip_proto) << 32;
    }
    if mask & hash_field::SPORT != 0 {
        w |= u64::from(f.sport) << 16;
    }
    if mask & hash_field::DPORT != 0 {
        w |= u64::from(f.dport);
    }
    h = mix(h, w);
    // A final avalanche, so that every input bit reaches the high bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// `Decision::rule` when no filter rule decided.
pub const NO_RULE: u32 = u32::MAX;

/// The signature of a compiled policy: reads `fields` and the tables behind
/// `tables` (a layout private to the compiled code and the crate that built it),
/// writes `out`. It never reads anything else, never loops, always returns.
pub type FilterFn =
    unsafe extern "C" fn(tables: *const u8, fields: *const Fields, out: *mut Decision);

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(sport: u16) -> Fields {
        let mut f = Fields {
            ip_version: 4,
            ip_proto: 6,
            sport,
            dport: 80,
            ..Fields::default()
        };
        f.ip_src[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 1, 5]);
        f.ip_dst[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 10]);
        f
    }

    #[test]
    fn the_flow_hash_is_fixed_and_reads_only_its_fields() {
        let a = fields(40000);
        // Fixed across builds and machines: a change here changes every
        // appliance's back-end choice.
        assert_eq!(
            flow_hash(&a, hash_field::ALL),
            flow_hash(&fields(40000), hash_field::ALL)
        );
        assert_ne!(
            flow_hash(&a, hash_field::ALL),
            flow_hash(&fields(40001), hash_field::ALL)
        );
        assert_eq!(
            flow_hash(&a, hash_field::SRC),
            flow_hash(&fields(40001), hash_field::SRC)
        );
        // Spread: 4 096 source ports over 16 buckets, none far from 256.
        let mut buckets = [0u32; 16];
        for p in 0..4096u16 {
            buckets[(flow_hash(&fields(p), hash_field::ALL) >> 28) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (192..=320).contains(&n)),
            "{buckets:?}"
        );
    }
}
