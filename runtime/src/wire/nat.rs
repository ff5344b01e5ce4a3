//! NAT rewrite of one address and one port of an IPv4 or IPv6 packet, with the
//! checksums that cover them updated incrementally (RFC 1624): the IPv4 header
//! checksum, and the TCP, UDP or ICMPv6 checksum through its pseudo-header.
//!
//! [`set_dst`] turns client -> virtual IP into client -> back end; [`set_src`] turns
//! back end -> client into virtual IP -> client. Because the updates are
//! incremental, they need neither the payload nor the whole datagram: a first
//! fragment's UDP checksum (which covers every fragment) comes out right.
//!
//! What is rewritten, by protocol (the protocol after any IPv6 extension headers):
//! - TCP, UDP: address and port, IP and transport checksums. A UDP-over-IPv4
//!   checksum of 0 (none) stays 0; a UDP checksum that comes out 0 is written 0xffff.
//! - ICMPv6: the address and the ICMPv6 checksum (its pseudo-header); `port` is
//!   ignored. ICMP over IPv4: the address only (its checksum covers no IP field).
//! - A later fragment (no transport header; the caller passes `l4_off == 0`) and any
//!   other protocol: the address only.
//!
//! Not handled: IPv6 routing headers (whose final destination is what the
//! pseudo-header uses) are not looked into; IPv6 jumbograms are refused.

use std::net::IpAddr;

use super::checksum::{update_bytes, update16};
use super::field::{ipv4, ipv6, proto, tcp, udp};
use super::{IpHeader, parse_ip, put_array, put_u16, u16_at};

/// Which end of a packet a rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Src,
    Dst,
}

/// Rewrites the destination address and port of the packet whose IP header is at
/// `l3_off` and transport header at `l4_off` (0 when it has none: a later
/// fragment). False, with the frame untouched, when the headers do not check out,
/// the offsets do not match them, or `addr` is of the other family.
pub fn set_dst(frame: &mut [u8], l3_off: usize, l4_off: usize, addr: IpAddr, port: u16) -> bool {
    rewrite(frame, l3_off, l4_off, Side::Dst, addr, port)
}

/// Rewrites the source address and port; see [`set_dst`].
pub fn set_src(frame: &mut [u8], l3_off: usize, l4_off: usize, addr: IpAddr, port: u16) -> bool {
    rewrite(frame, l3_off, l4_off, Side::Src, addr, port)
}

/// [`set_src`] or [`set_dst`], by `side`.
pub fn rewrite(
    frame: &mut [u8],
    l3_off: usize,
    l4_off: usize,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> bool {
    match parse_ip(frame, l3_off) {
        Some(ip) => rewrite_ip(frame, &ip, l4_off, side, addr, port),
        None => false,
    }
}

/// [`rewrite`] of a packet whose header is already checked.
pub(super) fn rewrite_ip(
    frame: &mut [u8],
    ip: &IpHeader,
    l4_off: usize,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> bool {
    let Some(plan) = plan(frame, ip, l4_off) else {
        return false;
    };
    apply(frame, ip, plan, side, addr, port).is_some()
}

/// What a rewrite touches beyond the IP header.
#[derive(Clone, Copy, Debug)]
pub(super) enum L4 {
    /// Nothing.
    None,
    /// A port at `port_base` (+0 source, +2 destination) and, when `csum` is set,
    /// a checksum over a pseudo-header. `udp`: a result of 0 is written 0xffff.
    Ports {
        port_base: usize,
        csum: Option<usize>,
        udp: bool,
    },
    /// Only a checksum over a pseudo-header (ICMPv6).
    Pseudo { csum: usize },
}

/// Checks `l4_off` against the parsed header and decides what to update.
pub(super) fn plan(frame: &[u8], ip: &IpHeader, l4_off: usize) -> Option<L4> {
    let Some(l4) = ip.l4 else {
        // A later fragment: there is no transport header to point at.
        return (l4_off == 0).then_some(L4::None);
    };
    if l4_off != 0 && l4_off != l4 {
        return None;
    }
    match (ip.proto, ip.version) {
        (proto::TCP, _) => {
            if l4_off == 0 || l4 + tcp::MIN_HEADER_LEN > ip.end {
                return None;
            }
            Some(L4::Ports {
                port_base: l4,
                csum: Some(l4 + tcp::CHECKSUM),
                udp: false,
            })
        }
        (proto::UDP, _) => {
            if l4_off == 0 || l4 + udp::HEADER_LEN > ip.end {
                return None;
            }
            let at = l4 + udp::CHECKSUM;
            let none = ip.version == 4 && u16_at(frame, at)? == 0;
            Some(L4::Ports {
                port_base: l4,
                csum: (!none).then_some(at),
                udp: true,
            })
        }
        (proto::ICMPV6, 6) => {
            if l4_off == 0 || l4 + 4 > ip.end {
                return None;
            }
            Some(L4::Pseudo { csum: l4 + 2 })
        }
        _ => Some(L4::None),
    }
}

/// Offset of the source or destination address in the IP header.
fn addr_offset(version: u8, side: Side) -> usize {
    match (version, side) {
        (4, Side::Src) => ipv4::SRC,
        (4, Side::Dst) => ipv4::DST,
        (_, Side::Src) => ipv6::SRC,
        (_, Side::Dst) => ipv6::DST,
    }
}

/// Performs the rewrite planned by [`plan`]. Every write is within the ranges
/// `parse_ip` and `plan` checked, so once the family matches nothing fails
/// half-way.
pub(super) fn apply(
    frame: &mut [u8],
    ip: &IpHeader,
    l4: L4,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Option<()> {
    let at = ip.l3 + addr_offset(ip.version, side);
    match (ip.version, addr) {
        (4, IpAddr::V4(a)) => {
            let new = a.octets();
            let old: [u8; 4] = super::array_at(frame, at)?;
            put_array(frame, at, &new)?;
            let c = ip.l3 + ipv4::CHECKSUM;
            put_u16(frame, c, update_bytes(u16_at(frame, c)?, &old, &new))?;
            update_l4(frame, l4, side, &old, &new, port)
        }
        (6, IpAddr::V6(a)) => {
            let new = a.octets();
            let old: [u8; 16] = super::array_at(frame, at)?;
            put_array(frame, at, &new)?;
            update_l4(frame, l4, side, &old, &new, port)
        }
        _ => None,
    }
}

fn update_l4<const N: usize>(
    frame: &mut [u8],
    l4: L4,
    side: Side,
    old: &[u8; N],
    new: &[u8; N],
    port: u16,
) -> Option<()> {
    match l4 {
        L4::None => Some(()),
        L4::Pseudo { csum } => {
            let c = update_bytes(u16_at(frame, csum)?, old, new);
            put_u16(frame, csum, c)
        }
        L4::Ports {
            port_base,
            csum,
            udp,
        } => {
            let port_at = port_base
                + match side {
                    Side::Src => tcp::SPORT,
                    Side::Dst => tcp::DPORT,
                };
            let old_port = u16_at(frame, port_at)?;
            put_u16(frame, port_at, port)?;
            if let Some(csum) = csum {
                let c = update_bytes(u16_at(frame, csum)?, old, new);
                let mut c = update16(c, old_port, port);
                if udp && c == 0 {
                    c = 0xffff;
                }
                put_u16(frame, csum, c)?;
            }
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{
        Built, Spec, assert_checksums, build, folded_sum, ipv4_header_expected, l4_stored,
    };
    use proptest::prelude::*;

    fn specs() -> Vec<Spec> {
        let mut v = Vec::new();
        for (src, dst) in [
            ("198.18.0.10", "198.19.255.1"),
            ("2001:db8:c::10", "2001:db8:f::1"),
        ] {
            for proto in [6, 17] {
                for (vlan, opts) in [(false, 0), (true, 12)] {
                    let mut s = Spec::new(src, dst, proto);
                    s.vlan = vlan;
                    s.ip_options = opts;
                    s.tcp_options = if proto == 6 { 12 } else { 0 };
                    v.push(s);
                }
            }
        }
        // Odd payload length.
        let mut s = Spec::new("198.18.0.10", "198.19.255.1", 17);
        s.payload = b"odd".to_vec();
        v.push(s);
        v
    }

    /// The same packet with other addresses and ports, built from scratch.
    fn rebuilt(spec: &Spec, side: Side, addr: IpAddr, port: u16) -> Built {
        let mut s = spec.clone();
        match side {
            Side::Src => (s.src, s.sport) = (addr, port),
            Side::Dst => (s.dst, s.dport) = (addr, port),
        }
        build(&s)
    }

    #[test]
    fn rewrite_equals_packet_built_from_scratch() {
        for spec in specs() {
            let b = build(&spec);
            let (backend, vip): (IpAddr, IpAddr) = if spec.src.is_ipv4() {
                (
                    "198.18.7.7".parse().unwrap(),
                    "198.19.0.80".parse().unwrap(),
                )
            } else {
                (
                    "2001:db8:b::7".parse().unwrap(),
                    "2001:db8:ffff::80".parse().unwrap(),
                )
            };
            let mut f = b.frame.clone();
            assert!(set_dst(&mut f, b.l3, b.l4, backend, 8080), "{spec:?}");
            assert_checksums(&f, b.l3, b.l4, spec.proto);
            assert_eq!(f, rebuilt(&spec, Side::Dst, backend, 8080).frame);

            let mut f = b.frame.clone();
            assert!(set_src(&mut f, b.l3, b.l4, vip, 443), "{spec:?}");
            assert_checksums(&f, b.l3, b.l4, spec.proto);
            assert_eq!(f, rebuilt(&spec, Side::Src, vip, 443).frame);
        }
    }

    #[test]
    fn family_mismatch_and_bad_offsets_refused() {
        for spec in specs() {
            let b = build(&spec);
            let other: IpAddr = if spec.src.is_ipv4() {
                "2001:db8::1".parse().unwrap()
            } else {
                "198.18.0.1".parse().unwrap()
            };
            let same = spec.dst;
            let mut f = b.frame.clone();
            assert!(!set_dst(&mut f, b.l3, b.l4, other, 1));
            assert!(!set_src(&mut f, b.l3, b.l4, other, 1));
            assert!(!set_dst(&mut f, b.l3, b.l4 + 4, same, 1));
            assert!(!set_dst(&mut f, b.l3 + 4, b.l4, same, 1));
            assert!(!set_dst(&mut f, b.l3, usize::MAX, same, 1));
            assert!(!set_dst(&mut f, usize::MAX, b.l4, same, 1));
            // A TCP/UDP packet without its transport offset would lose its checksum.
            assert!(!set_dst(&mut f, b.l3, 0, same, 1));
            assert_eq!(f, b.frame);
        }
    }

    #[test]
    fn udp4_without_checksum_stays_without() {
        let mut spec = Spec::new("198.18.0.10", "198.19.255.1", 17);
        spec.udp_no_checksum = true;
        let b = build(&spec);
        let mut f = b.frame.clone();
        assert!(set_dst(
            &mut f,
            b.l3,
            b.l4,
            "198.18.9.9".parse().unwrap(),
            53
        ));
        assert_eq!(l4_stored(&f, b.l4, 17), 0);
        assert_eq!(&f[b.l4 + 2..b.l4 + 4], &53u16.to_be_bytes());
        assert_checksums(&f, b.l3, 0, 17);
    }

    /// A port chosen so that the UDP checksum of the result is 0 in ones'
    /// complement: it must be written 0xffff.
    #[test]
    fn udp_zero_result_written_ffff() {
        for (src, dst, new) in [
            ("198.18.0.10", "198.19.255.1", "198.18.3.3"),
            ("2001:db8::10", "2001:db8::1", "2001:db8::3"),
        ] {
            let spec = Spec::new(src, dst, 17);
            let b = build(&spec);
            let new: IpAddr = new.parse().unwrap();
            // The sum of everything but the destination port, after the rewrite.
            let mut probe = rebuilt(&spec, Side::Dst, new, 0).frame;
            probe[b.l4 + 6] = 0;
            probe[b.l4 + 7] = 0;
            let mut p = Vec::new();
            if new.is_ipv4() {
                p.extend_from_slice(&probe[b.l3 + 12..b.l3 + 20]);
                p.extend_from_slice(&[0, 17]);
                p.extend_from_slice(&((probe.len() - b.l4) as u16).to_be_bytes());
            } else {
                p.extend_from_slice(&probe[b.l3 + 8..b.l3 + 40]);
                p.extend_from_slice(&((probe.len() - b.l4) as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, 17]);
            }
            p.extend_from_slice(&probe[b.l4..]);
            let ps = folded_sum(&p);
            // S + port = 0xffff (ones' complement): the checksum is !0xffff = 0.
            let port = 0xffff - ps;
            let mut f = b.frame.clone();
            assert!(set_dst(&mut f, b.l3, b.l4, new, port));
            assert_eq!(l4_stored(&f, b.l4, 17), 0xffff);
            assert_checksums(&f, b.l3, b.l4, 17);
        }
    }

    #[test]
    fn later_fragment_gets_ip_rewrite_only() {
        // IPv4: fragment offset 1 (8 bytes).
        let b = build(&Spec::new("198.18.0.10", "198.19.255.1", 17));
        let mut f = b.frame.clone();
        f[b.l3 + 6..b.l3 + 8].copy_from_slice(&0x0001u16.to_be_bytes());
        let c = ipv4_header_expected(&f, b.l3);
        f[b.l3 + 10..b.l3 + 12].copy_from_slice(&c.to_be_bytes());
        let before = f.clone();
        let new: IpAddr = "198.18.3.3".parse().unwrap();
        assert!(!set_dst(&mut f, b.l3, b.l4, new, 9), "no transport header");
        assert!(set_dst(&mut f, b.l3, 0, new, 9));
        assert_eq!(&f[b.l3 + 16..b.l3 + 20], &[198, 18, 3, 3]);
        assert_checksums(&f, b.l3, 0, 17);
        assert_eq!(&f[b.l4..], &before[b.l4..], "fragment data untouched");

        // IPv6: the hop-by-hop header turned into a fragment header, offset 1.
        let mut spec = Spec::new("2001:db8::10", "2001:db8::1", 17);
        spec.ip_options = 8;
        let b = build(&spec);
        let mut f = b.frame.clone();
        f[b.l3 + 6] = 44;
        f[b.l3 + 40..b.l3 + 48].copy_from_slice(&[17, 0, 0, 8, 0, 0, 0, 1]);
        let before = f.clone();
        let new: IpAddr = "2001:db8::3".parse().unwrap();
        assert!(set_src(&mut f, b.l3, 0, new, 9));
        assert_eq!(&f[b.l3 + 8..b.l3 + 24], &new_octets(new));
        assert_eq!(&f[b.l3 + 24..], &before[b.l3 + 24..]);
    }

    fn new_octets(a: IpAddr) -> Vec<u8> {
        match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    #[test]
    fn icmp_echo() {
        // ICMPv6: the address is in its pseudo-header.
        let b = build(&Spec::new("2001:db8::10", "2001:db8::1", 58));
        let mut f = b.frame.clone();
        assert!(set_dst(
            &mut f,
            b.l3,
            b.l4,
            "2001:db8::77".parse().unwrap(),
            1
        ));
        assert_checksums(&f, b.l3, b.l4, 58);
        assert_eq!(&f[b.l4 + 4..], &b.frame[b.l4 + 4..], "identifier kept");
        // ICMP over IPv4: the header checksum only.
        let b = build(&Spec::new("198.18.0.10", "198.19.255.1", 1));
        let mut f = b.frame.clone();
        assert!(set_src(
            &mut f,
            b.l3,
            b.l4,
            "198.18.1.1".parse().unwrap(),
            1
        ));
        assert_checksums(&f, b.l3, b.l4, 1);
        assert_eq!(&f[b.l4..], &b.frame[b.l4..]);
    }

    #[test]
    fn truncations_never_panic() {
        for spec in specs() {
            let b = build(&spec);
            for n in 0..=b.frame.len() {
                let mut f = b.frame[..n].to_vec();
                let ok = set_dst(&mut f, b.l3, b.l4, spec.src, 7);
                assert_eq!(ok, n == b.frame.len(), "cut at {n}");
                if !ok {
                    assert_eq!(f, b.frame[..n]);
                }
                let _ = set_src(&mut f, b.l3, 0, spec.dst, 7);
                let _ = set_src(&mut f, n, n, spec.dst, 7);
            }
        }
    }

    fn addr_strategy(v6: bool) -> BoxedStrategy<IpAddr> {
        if v6 {
            any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
        } else {
            any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
        }
    }

    fn case() -> impl Strategy<Value = (Spec, IpAddr, u16, IpAddr, u16)> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0usize..3,
            0usize..40,
        )
            .prop_flat_map(|(v6, tcp, vlan, opts, plen)| {
                (
                    addr_strategy(v6),
                    addr_strategy(v6),
                    any::<(u16, u16)>(),
                    addr_strategy(v6),
                    any::<u16>(),
                    addr_strategy(v6),
                    any::<u16>(),
                    proptest::collection::vec(any::<u8>(), plen),
                )
                    .prop_map(
                        move |(src, dst, (sp, dp), a1, p1, a2, p2, payload)| {
                            let mut s = Spec::new("0.0.0.0", "0.0.0.0", if tcp { 6 } else { 17 });
                            (s.src, s.dst, s.sport, s.dport) = (src, dst, sp, dp);
                            s.vlan = vlan;
                            s.ip_options = opts * 4 * if v6 { 2 } else { 1 };
                            s.payload = payload;
                            (s, a1, p1, a2, p2)
                        },
                    )
            })
    }

    proptest! {
        /// client -> VIP becomes client -> back end (exactly the packet built
        /// for that), and back; back end -> client becomes VIP -> client, and back.
        #[test]
        fn round_trips_restore_bytes((spec, a1, p1, a2, p2) in case()) {
            let b = build(&spec);
            let mut f = b.frame.clone();
            prop_assert!(set_dst(&mut f, b.l3, b.l4, a1, p1));
            assert_checksums(&f, b.l3, b.l4, spec.proto);
            prop_assert_eq!(&f, &rebuilt(&spec, Side::Dst, a1, p1).frame);
            prop_assert!(set_dst(&mut f, b.l3, b.l4, spec.dst, spec.dport));
            prop_assert_eq!(&f, &b.frame);

            prop_assert!(set_src(&mut f, b.l3, b.l4, a2, p2));
            assert_checksums(&f, b.l3, b.l4, spec.proto);
            prop_assert_eq!(&f, &rebuilt(&spec, Side::Src, a2, p2).frame);
            prop_assert!(set_src(&mut f, b.l3, b.l4, spec.src, spec.sport));
            prop_assert_eq!(&f, &b.frame);

            // set_dst then set_src: a NAT'ed packet, then its addresses swapped back.
            prop_assert!(set_dst(&mut f, b.l3, b.l4, a1, p1));
            prop_assert!(set_src(&mut f, b.l3, b.l4, a2, p2));
            assert_checksums(&f, b.l3, b.l4, spec.proto);
            prop_assert!(set_dst(&mut f, b.l3, b.l4, spec.dst, spec.dport));
            prop_assert!(set_src(&mut f, b.l3, b.l4, spec.src, spec.sport));
            prop_assert_eq!(&f, &b.frame);
        }
    }
}
