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
    let Some(ip) = parse_ip(frame, l3_off) else {
        return false;
    };
    let Some(plan) = plan(frame, &ip, l4_off) else {
        return false;
    };
    apply(frame, &ip, plan, side, addr, port).is_some()
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
