//! ICMP and ICMPv6 errors: which connection an error is about, and its NAT
//! translation.
//!
//! An error (ICMP destination unreachable 3, time exceeded 11, parameter problem
//! 12; ICMPv6 destination unreachable 1, packet too big 2, time exceeded 3,
//! parameter problem 4) carries the start of the packet that caused it: its IP
//! header and at least 8 bytes of what follows. [`parse_icmp_error`] reads that
//! inner header's 5-tuple, so the runtime can find the connection; the tuple is the
//! offending packet's as it was sent (for an error about a reply, the source is the
//! back end). [`icmp_error_rewrite`] translates an error in both its headers: an
//! outer address (the IPv4 header checksum updated), an inner address and port
//! (the inner IPv4 header checksum and, when its bytes are there, the inner
//! TCP/UDP checksum updated), then the outer ICMP checksum recomputed over the
//! whole message (with the IPv6 pseudo-header for ICMPv6).
//!
//! Informational messages (echo, ND) are not errors here. The inner packet may be
//! truncated: its own length field is not checked against the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, fold, pseudo_v6, sum};
use super::field::{icmp, ipv4, ipv6, proto, tcp, udp};
use super::nat::{L4, Side, apply};
use super::{IpHeader, array_at, parse_ip, put_u16, u8_at, u16_at, walk_ipv6_ext};

/// An ICMP error and the 5-tuple of the packet it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The inner packet's source and destination (the family of the outer packet).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The inner packet's protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The inner TCP/UDP ports; 0 when the inner packet is not TCP or UDP, or its
    /// ports are not there.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the inner IP header in the frame.
    pub inner_l3: usize,
    /// Offset of the inner TCP/UDP header, 0 when it has none (see the ports).
    pub inner_l4: usize,
}

fn is_error(version: u8, icmp_type: u8) -> bool {
    match version {
        4 => matches!(icmp_type, 3 | 11 | 12),
        _ => matches!(icmp_type, 1..=4),
    }
}

/// Parses the ICMP (IPv4) or ICMPv6 error whose IP header is at `l3_off` and ICMP
/// header at `l4_off`. `None` when it is not an error of the kinds above, or its
/// inner IP header is not whole, or of the other family.
#[must_use]
pub fn parse_icmp_error(frame: &[u8], l3_off: usize, l4_off: usize) -> Option<IcmpError> {
    let outer = parse_ip(frame, l3_off)?;
    parse_with(frame, &outer, l4_off).map(|(e, _)| e)
}

/// [`parse_icmp_error`] from an already parsed outer header; also gives the inner
/// header as an [`IpHeader`] bounded by the outer packet.
pub(super) fn parse_with(
    frame: &[u8],
    outer: &IpHeader,
    l4_off: usize,
) -> Option<(IcmpError, IpHeader)> {
    let want = if outer.version == 4 {
        proto::ICMP
    } else {
        proto::ICMPV6
    };
    if outer.proto != want || outer.l4 != Some(l4_off) || l4_off == 0 {
        return None;
    }
    if l4_off + icmp::HEADER_LEN > outer.end {
        return None;
    }
    let icmp_type = u8_at(frame, l4_off + icmp::TYPE)?;
    let icmp_code = u8_at(frame, l4_off + icmp::CODE)?;
    if !is_error(outer.version, icmp_type) {
        return None;
    }
    let l3 = l4_off + icmp::HEADER_LEN;
    let end = outer.end;
    if u8_at(frame, l3)? >> 4 != outer.version {
        return None;
    }
    let (src, dst, inner) = if outer.version == 4 {
        let ihl = usize::from(u8_at(frame, l3)? & 0x0f) * 4;
        if ihl < ipv4::MIN_HEADER_LEN || l3 + ihl > end {
            return None;
        }
        let later = u16_at(frame, l3 + ipv4::FLAGS_FRAG)? & ipv4::OFFSET_MASK != 0;
        let src: [u8; 4] = array_at(frame, l3 + ipv4::SRC)?;
        let dst: [u8; 4] = array_at(frame, l3 + ipv4::DST)?;
        let h = IpHeader {
            version: 4,
            l3,
            end,
            proto: u8_at(frame, l3 + ipv4::PROTOCOL)?,
            l4: (!later).then_some(l3 + ihl),
            fragment: later,
        };
        (
            IpAddr::V4(Ipv4Addr::from(src)),
            IpAddr::V4(Ipv4Addr::from(dst)),
            h,
        )
    } else {
        if l3 + ipv6::HEADER_LEN > end {
            return None;
        }
        let src: [u8; 16] = array_at(frame, l3 + ipv6::SRC)?;
        let dst: [u8; 16] = array_at(frame, l3 + ipv6::DST)?;
        let (proto, l4, fragment) = walk_ipv6_ext(frame, l3, end)?;
        let h = IpHeader {
            version: 6,
            l3,
            end,
            proto,
            l4,
            fragment,
        };
        (
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
            h,
        )
    };
    // Ports only for TCP/UDP with at least the 4 port bytes present.
    let ports_at = match (inner.proto, inner.l4) {
        (proto::TCP | proto::UDP, Some(at)) if at + 4 <= end => Some(at),
        _ => None,
    };
    let (sport, dport) = match ports_at {
        Some(at) => (u16_at(frame, at)?, u16_at(frame, at + 2)?),
        None => (0, 0),
    };
    let inner = IpHeader {
        l4: ports_at,
        ..inner
    };
    Some((
        IcmpError {
            icmp_type,
            icmp_code,
            src,
            dst,
            proto: inner.proto,
            sport,
            dport,
            inner_l3: l3,
            inner_l4: ports_at.unwrap_or(0),
        },
        inner,
    ))
}

/// NAT-translates the ICMP error at `l3_off` / `l4_off`: when `outer` is given, the
/// outer packet's address on that side becomes that address; the inner packet's
/// address and port on `inner_side` become `inner_addr` / `inner_port` (the port
/// only when the inner packet is TCP/UDP with its ports there). Checksums as in
/// the module documentation. False, with the frame untouched, when it is not an
/// error [`parse_icmp_error`] accepts or an address is of the other family.
///
/// For an error a back end B sends about its reply B:bp -> C:cp, translated for
/// the client: `outer = Some((Side::Src, VIP))`, `inner_side = Side::Src`,
/// `(VIP, vport)`. For an error a client sends about VIP:vport -> C:cp, forwarded
/// to the back end: `outer = Some((Side::Dst, B))`, `inner_side = Side::Src`,
/// `(B, bp)`. For an error a router beyond the back ends sends about C -> B:bp:
/// `outer = None`, `inner_side = Side::Dst`, `(VIP, vport)`.
pub fn icmp_error_rewrite(
    frame: &mut [u8],
    l3_off: usize,
    l4_off: usize,
    outer: Option<(Side, IpAddr)>,
    inner_side: Side,
    inner_addr: IpAddr,
    inner_port: u16,
) -> bool {
    let Some(ip) = parse_ip(frame, l3_off) else {
        return false;
    };
    rewrite_ip(
        frame, &ip, l4_off, outer, inner_side, inner_addr, inner_port,
    )
    .is_some()
}

fn same_family(version: u8, a: IpAddr) -> bool {
    matches!((version, a), (4, IpAddr::V4(_)) | (6, IpAddr::V6(_)))
}

/// [`icmp_error_rewrite`] of a packet whose outer header is already checked.
pub(super) fn rewrite_ip(
    frame: &mut [u8],
    ip: &IpHeader,
    l4: usize,
    outer: Option<(Side, IpAddr)>,
    inner_side: Side,
    inner_addr: IpAddr,
    inner_port: u16,
) -> Option<()> {
    let ip = *ip;
    let l3 = ip.l3;
    let (_, inner) = parse_with(frame, &ip, l4)?;
    if !same_family(ip.version, inner_addr) {
        return None;
    }
    if let Some((_, a)) = outer
        && !same_family(ip.version, a)
    {
        return None;
    }
    // Inner transport checksum: only when its field is inside the message, and not
    // a UDP-over-IPv4 checksum of 0.
    let inner_plan = match inner.l4 {
        Some(at) => {
            let (csum_at, udp) = if inner.proto == proto::TCP {
                (at + tcp::CHECKSUM, false)
            } else {
                (at + udp::CHECKSUM, true)
            };
            let present = csum_at + 2 <= inner.end;
            let none = udp && inner.version == 4 && present && u16_at(frame, csum_at)? == 0;
            L4::Ports {
                port_base: at,
                csum: (present && !none).then_some(csum_at),
                udp,
            }
        }
        None => L4::None,
    };
    if let Some((side, a)) = outer {
        apply(frame, &ip, L4::None, side, a, 0)?;
    }
    apply(
        frame, &inner, inner_plan, inner_side, inner_addr, inner_port,
    )?;

    // The outer ICMP checksum, over the whole message.
    let csum_at = l4 + icmp::CHECKSUM;
    put_u16(frame, csum_at, 0)?;
    let msg = frame.get(l4..ip.end)?;
    let c = if ip.version == 4 {
        checksum(msg)
    } else {
        let src = Ipv6Addr::from(array_at::<16>(frame, l3 + ipv6::SRC)?);
        let dst = Ipv6Addr::from(array_at::<16>(frame, l3 + ipv6::DST)?);
        let len = u32::try_from(msg.len()).ok()?;
        !fold(sum(pseudo_v6(&src, &dst, proto::ICMPV6, len), msg))
    };
    put_u16(frame, csum_at, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{Built, Spec, assert_checksums, build, l4_expected};

    /// An ICMP error from `src` to `dst` (type, code) carrying the first
    /// `keep` bytes of `inner`'s IP packet; every checksum computed from scratch.
    fn error(inner: &Built, src: &str, dst: &str, t: u8, c: u8, keep: usize, vlan: bool) -> Built {
        let v6 = inner.frame[inner.l3] >> 4 == 6;
        let mut s = Spec::new(src, dst, if v6 { 58 } else { 1 });
        s.vlan = vlan;
        let ip = &inner.frame[inner.l3..];
        s.payload = ip[..keep.min(ip.len())].to_vec();
        let mut b = build(&s);
        // type, code, checksum, then 4 bytes (MTU 1400 for "too big" kinds)
        b.frame[b.l4..b.l4 + 8].copy_from_slice(&[t, c, 0, 0, 0, 0, 0x05, 0x78]);
        let proto = if v6 { 58 } else { 1 };
        let sum = l4_expected(&b.frame, b.l3, b.l4, proto);
        b.frame[b.l4 + 2..b.l4 + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp(src: &str, sp: u16, dst: &str, dp: u16) -> Spec {
        let mut s = Spec::new(src, dst, 6);
        (s.sport, s.dport) = (sp, dp);
        s
    }

    fn udp(src: &str, sp: u16, dst: &str, dp: u16) -> Spec {
        let mut s = tcp(src, sp, dst, dp);
        s.proto = 17;
        s
    }

    #[test]
    fn parse_inner_tuple() {
        // IPv4, inner TCP cut to header + 8 bytes, inner IP options.
        let mut inner = tcp("198.18.5.5", 8080, "198.18.0.1", 40000);
        inner.ip_options = 8;
        let e = error(
            &build(&inner),
            "198.18.5.5",
            "198.18.0.1",
            3,
            4,
            28 + 8,
            true,
        );
        let got = parse_icmp_error(&e.frame, e.l3, e.l4).unwrap();
        assert_eq!(
            (
                got.icmp_type,
                got.icmp_code,
                got.src,
                got.dst,
                got.proto,
                got.sport,
                got.dport
            ),
            (3, 4, ip("198.18.5.5"), ip("198.18.0.1"), 6, 8080, 40000)
        );
        assert_eq!((got.inner_l3, got.inner_l4), (e.l4 + 8, e.l4 + 8 + 28));

        // IPv6, inner UDP whole, with a hop-by-hop header.
        let mut inner = udp("2001:db8::1", 5353, "2001:db8:f::80", 53);
        inner.ip_options = 8;
        let e = error(
            &build(&inner),
            "2001:db8:9::1",
            "2001:db8::1",
            2,
            0,
            1280,
            false,
        );
        let got = parse_icmp_error(&e.frame, e.l3, e.l4).unwrap();
        assert_eq!(
            (got.src, got.dst, got.proto, got.sport, got.dport),
            (ip("2001:db8::1"), ip("2001:db8:f::80"), 17, 5353, 53)
        );
        assert_eq!(got.inner_l4, got.inner_l3 + 48);

        // Inner ICMP: no ports.
        let inner = Spec::new("198.18.0.1", "198.18.5.5", 1);
        let e = error(&build(&inner), "198.18.9.9", "198.18.0.1", 11, 0, 28, false);
        let got = parse_icmp_error(&e.frame, e.l3, e.l4).unwrap();
        assert_eq!(
            (got.proto, got.sport, got.dport, got.inner_l4),
            (1, 0, 0, 0)
        );
    }

    #[test]
    fn not_errors() {
        // Echo requests are not errors.
        for (a, b) in [("198.18.0.1", "198.18.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let e = build(&Spec::new(a, b, if a.contains(':') { 58 } else { 1 }));
            assert_eq!(parse_icmp_error(&e.frame, e.l3, e.l4), None);
        }
        let inner = build(&tcp("198.18.5.5", 1, "198.18.0.1", 2));
        let e = error(&inner, "198.18.5.5", "198.18.0.1", 3, 1, 28, false);
        assert!(parse_icmp_error(&e.frame, e.l3, e.l4).is_some());
        for t in [0u8, 4, 5, 8, 13] {
            let mut f = e.frame.clone();
            f[e.l4] = t;
            assert_eq!(parse_icmp_error(&f, e.l3, e.l4), None, "type {t}");
        }
        // Inner header of the other family; inner header cut short.
        let mut f = e.frame.clone();
        f[e.l4 + 8] = 0x65;
        assert_eq!(parse_icmp_error(&f, e.l3, e.l4), None);
        let e = error(&inner, "198.18.5.5", "198.18.0.1", 3, 1, 19, false);
        assert_eq!(parse_icmp_error(&e.frame, e.l3, e.l4), None);
        // Wrong offsets.
        let e = error(&inner, "198.18.5.5", "198.18.0.1", 3, 1, 28, false);
        assert_eq!(parse_icmp_error(&e.frame, e.l3, e.l4 + 8), None);
        assert_eq!(parse_icmp_error(&e.frame, e.l3, 0), None);
    }

    /// Each translation gives exactly the error built from scratch around the
    /// translated packet.
    #[test]
    fn rewrite_equals_error_built_from_scratch() {
        struct Case {
            inner: Spec,
            outer: (&'static str, &'static str),
            keep: usize,
            vlan: bool,
            rw_outer: Option<(Side, &'static str)>,
            rw_inner: (Side, &'static str, u16),
            want_inner: Spec,
            want_outer: (&'static str, &'static str),
        }
        let cases = [
            // A back end's "fragmentation needed" about its reply, for the client.
            Case {
                inner: tcp("198.18.5.5", 8080, "198.18.0.1", 40000),
                outer: ("198.18.5.5", "198.18.0.1"),
                keep: 28,
                vlan: false,
                rw_outer: Some((Side::Src, "198.19.0.80")),
                rw_inner: (Side::Src, "198.19.0.80", 80),
                want_inner: tcp("198.19.0.80", 80, "198.18.0.1", 40000),
                want_outer: ("198.19.0.80", "198.18.0.1"),
            },
            // A client's "port unreachable" about a reply, for the back end (whole
            // inner UDP packet: its checksum is updated too).
            Case {
                inner: udp("198.19.0.80", 53, "198.18.0.1", 5000),
                outer: ("198.18.0.1", "198.19.0.80"),
                keep: 1500,
                vlan: true,
                rw_outer: Some((Side::Dst, "198.18.5.5")),
                rw_inner: (Side::Src, "198.18.5.5", 5353),
                want_inner: udp("198.18.5.5", 5353, "198.18.0.1", 5000),
                want_outer: ("198.18.0.1", "198.18.5.5"),
            },
            // A router's "packet too big" about client -> back end, for the client.
            Case {
                inner: tcp("2001:db8::1", 40000, "2001:db8:b::5", 8080),
                outer: ("2001:db8:9::1", "2001:db8::1"),
                keep: 1280,
                vlan: false,
                rw_outer: None,
                rw_inner: (Side::Dst, "2001:db8:f::80", 443),
                want_inner: tcp("2001:db8::1", 40000, "2001:db8:f::80", 443),
                want_outer: ("2001:db8:9::1", "2001:db8::1"),
            },
            // IPv6 back end's "unreachable" about its UDP reply, tagged, cut short.
            Case {
                inner: udp("2001:db8:b::5", 5353, "2001:db8::1", 6000),
                outer: ("2001:db8:b::5", "2001:db8::1"),
                keep: 46,
                vlan: true,
                rw_outer: Some((Side::Src, "2001:db8:f::80")),
                rw_inner: (Side::Src, "2001:db8:f::80", 53),
                want_inner: udp("2001:db8:f::80", 53, "2001:db8::1", 6000),
                want_outer: ("2001:db8:f::80", "2001:db8::1"),
            },
        ];
        for c in cases {
            let e = error(&build(&c.inner), c.outer.0, c.outer.1, 3, 4, c.keep, c.vlan);
            let want = error(
                &build(&c.want_inner),
                c.want_outer.0,
                c.want_outer.1,
                3,
                4,
                c.keep,
                c.vlan,
            );
            let mut f = e.frame.clone();
            let outer = c.rw_outer.map(|(s, a)| (s, ip(a)));
            assert!(icmp_error_rewrite(
                &mut f,
                e.l3,
                e.l4,
                outer,
                c.rw_inner.0,
                ip(c.rw_inner.1),
                c.rw_inner.2
            ));
            assert_eq!(f, want.frame, "{:?}", c.inner);
            assert_checksums(&f, e.l3, e.l4, if c.outer.0.contains(':') { 58 } else { 1 });
        }
    }

    #[test]
    fn rewrite_refusals_leave_frame() {
        let inner = build(&tcp("198.18.5.5", 8080, "198.18.0.1", 40000));
        let e = error(&inner, "198.18.5.5", "198.18.0.1", 3, 4, 28, false);
        let mut f = e.frame.clone();
        let v6 = ip("2001:db8::1");
        let v4 = ip("198.19.0.80");
        assert!(!icmp_error_rewrite(
            &mut f,
            e.l3,
            e.l4,
            None,
            Side::Src,
            v6,
            1
        ));
        assert!(!icmp_error_rewrite(
            &mut f,
            e.l3,
            e.l4,
            Some((Side::Src, v6)),
            Side::Src,
            v4,
            1
        ));
        assert!(!icmp_error_rewrite(
            &mut f,
            e.l3,
            e.l4 + 1,
            None,
            Side::Src,
            v4,
            1
        ));
        assert_eq!(f, e.frame);
        // An echo request is no error.
        let echo = build(&Spec::new("198.18.0.1", "198.18.0.2", 1));
        let mut f = echo.frame.clone();
        assert!(!icmp_error_rewrite(
            &mut f,
            echo.l3,
            echo.l4,
            None,
            Side::Src,
            v4,
            1
        ));
        assert_eq!(f, echo.frame);
    }

    #[test]
    fn truncations_never_panic() {
        let samples = [
            error(
                &build(&tcp("198.18.5.5", 1, "198.18.0.1", 2)),
                "198.18.5.5",
                "198.18.0.1",
                3,
                4,
                28,
                true,
            ),
            error(
                &build(&udp("2001:db8::1", 1, "2001:db8::2", 2)),
                "2001:db8::3",
                "2001:db8::1",
                1,
                4,
                1280,
                false,
            ),
        ];
        for e in samples {
            let a = if e.frame[e.l3] >> 4 == 4 {
                ip("198.19.0.1")
            } else {
                ip("2001:db8::9")
            };
            for n in 0..=e.frame.len() {
                let mut f = e.frame[..n].to_vec();
                let full = n == e.frame.len();
                assert_eq!(
                    parse_icmp_error(&f, e.l3, e.l4).is_some(),
                    full,
                    "cut at {n}"
                );
                let ok =
                    icmp_error_rewrite(&mut f, e.l3, e.l4, Some((Side::Dst, a)), Side::Src, a, 9);
                assert_eq!(ok, full);
                if !full {
                    assert_eq!(f, e.frame[..n]);
                }
                // The inner header's length field claiming more than is there.
                let _ = parse_icmp_error(&f, e.l3, usize::MAX);
            }
        }
    }
}
