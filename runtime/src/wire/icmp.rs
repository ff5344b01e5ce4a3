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
fn parse_with(frame: &[u8], outer: &IpHeader, l4_off: usize) -> Option<(IcmpError, IpHeader)> {
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
    icmp_rewrite(
        frame, l3_off, l4_off, outer, inner_side, inner_addr, inner_port,
    )
    .is_some()
}

fn same_family(version: u8, a: IpAddr) -> bool {
    matches!((version, a), (4, IpAddr::V4(_)) | (6, IpAddr::V6(_)))
}

fn icmp_rewrite(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    outer: Option<(Side, IpAddr)>,
    inner_side: Side,
    inner_addr: IpAddr,
    inner_port: u16,
) -> Option<()> {
    let ip = parse_ip(frame, l3)?;
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
