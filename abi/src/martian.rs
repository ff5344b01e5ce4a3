//! Martian destinations (RFC 1812, section 5.3.7; RFC 3927, section 7; RFC 4291,
//! sections 2.5.2, 2.5.3, 2.5.6 and 2.7): addresses a router never forwards a
//! packet to, whatever its routes say.
//!
//! One list for every part of lbp: the compiled policy's routing step (the
//! interpreter and the JIT decide `drop` at [`crate::stage::MARTIAN`]), the
//! switching core when it routes a packet the policy did not route (to a back
//! end, NAT return traffic, the control plane's own packets), and `lbp check`,
//! which refuses such addresses as back ends and virtual IPs (its copy of the
//! list is held to this one by a test in the compiler).
//!
//! The addresses: "this network" `0.0.0.0/8` and `::`, loopback `127.0.0.0/8`
//! and `::1`, link-local `169.254.0.0/16` and `fe80::/10`, multicast
//! `224.0.0.0/4` and `ff00::/8`, the limited broadcast `255.255.255.255`, and
//! the directed broadcast (the all-ones host) of each IPv4 network of the
//! appliance's interfaces up to /30 (a /31 or /32 has none, RFC 3021).

use std::net::IpAddr;

/// Why a destination is martian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `0.0.0.0/8` or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`, or a connected network's directed broadcast.
    Broadcast,
}

impl Kind {
    /// The words `lbp check` and the documentation use.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Unspecified => "an unspecified (\"this network\") address",
            Kind::Loopback => "a loopback address",
            Kind::LinkLocal => "a link-local address",
            Kind::Multicast => "a multicast address",
            Kind::Broadcast => "a broadcast address",
        }
    }
}

/// The IPv4 martian prefixes (network, length) but the directed broadcasts.
pub const V4: [(u32, u8, Kind); 5] = [
    (0x0000_0000, 8, Kind::Unspecified),
    (0x7f00_0000, 8, Kind::Loopback),
    (0xa9fe_0000, 16, Kind::LinkLocal),
    (0xe000_0000, 4, Kind::Multicast),
    (0xffff_ffff, 32, Kind::Broadcast),
];

/// The IPv6 martian prefixes (network, length).
pub const V6: [(u128, u8, Kind); 4] = [
    (0, 128, Kind::Unspecified),
    (1, 128, Kind::Loopback),
    (0xfe80 << 112, 10, Kind::LinkLocal),
    (0xff << 120, 8, Kind::Multicast),
];

fn in4(net: u32, len: u8, a: u32) -> bool {
    len == 0 || (net ^ a) >> (32 - u32::from(len.min(32))) == 0
}

fn in6(net: u128, len: u8, a: u128) -> bool {
    len == 0 || (net ^ a) >> (128 - u32::from(len.min(128))) == 0
}

/// The directed broadcast of the network of `addr/len`: its all-ones host, for
/// an IPv4 network of length at most 30; `None` otherwise.
pub fn directed_broadcast(addr: IpAddr, len: u8) -> Option<u32> {
    match addr {
        IpAddr::V4(a) if len <= 30 => Some(u32::from(a) | (u32::MAX >> len)),
        _ => None,
    }
}

/// Whether `dst` is martian whatever the interfaces: see the module
/// documentation.
pub fn fixed(dst: IpAddr) -> Option<Kind> {
    match dst {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            V4.iter()
                .find(|&&(n, l, _)| in4(n, l, a))
                .map(|&(_, _, k)| k)
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            V6.iter()
                .find(|&&(n, l, _)| in6(n, l, a))
                .map(|&(_, _, k)| k)
        }
    }
}

/// Whether `dst` is martian for an appliance whose interfaces have the
/// addresses `connected` (address, prefix length), and why.
pub fn martian(dst: IpAddr, connected: impl IntoIterator<Item = (IpAddr, u8)>) -> Option<Kind> {
    if let Some(k) = fixed(dst) {
        return Some(k);
    }
    let IpAddr::V4(d) = dst else { return None };
    let d = u32::from(d);
    connected
        .into_iter()
        .any(|(a, l)| directed_broadcast(a, l) == Some(d))
        .then_some(Kind::Broadcast)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_fixed_martians() {
        for (a, k) in [
            ("0.0.0.0", Kind::Unspecified),
            ("0.1.2.3", Kind::Unspecified),
            ("127.0.0.1", Kind::Loopback),
            ("127.255.255.254", Kind::Loopback),
            ("169.254.7.7", Kind::LinkLocal),
            ("224.0.0.1", Kind::Multicast),
            ("239.255.255.250", Kind::Multicast),
            ("255.255.255.255", Kind::Broadcast),
            ("::", Kind::Unspecified),
            ("::1", Kind::Loopback),
            ("fe80::1", Kind::LinkLocal),
            ("febf::1", Kind::LinkLocal),
            ("ff02::1", Kind::Multicast),
        ] {
            assert_eq!(fixed(ip(a)), Some(k), "{a}");
        }
        for a in [
            "198.18.0.1",
            "1.0.0.0",
            "126.255.255.255",
            "169.253.0.1",
            "223.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "2001:db8::1",
            "::2",
            "fec0::1",
            "fe7f::1",
        ] {
            assert_eq!(fixed(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn directed_broadcasts_of_connected_networks_up_to_30() {
        let conn = [
            (ip("198.18.0.1"), 24),
            (ip("198.18.1.1"), 31),
            (ip("198.18.2.1"), 30),
            (ip("2001:db8::1"), 64),
        ];
        let m = |a: &str| martian(ip(a), conn);
        assert_eq!(m("198.18.0.255"), Some(Kind::Broadcast));
        assert_eq!(m("198.18.2.3"), Some(Kind::Broadcast));
        assert_eq!(m("198.18.0.254"), None);
        assert_eq!(m("198.18.1.1"), None, "a /31 has no broadcast");
        assert_eq!(m("198.18.1.0"), None);
        assert_eq!(m("2001:db8::ffff:ffff:ffff:ffff"), None);
        assert_eq!(m("127.0.0.1"), Some(Kind::Loopback));
    }
}
