//! Packet-level code the switching cores act with: checksums, NAT rewrite, ICMP
//! error translation, routing rewrites (MACs, TTL), TCP resets, ARP and IPv6
//! neighbour discovery.
//!
//! Everything here is a pure function over a frame (`&[u8]` / `&mut [u8]`, the
//! Ethernet header at offset 0): no system calls, no allocation, no clock. Header
//! extraction is not here (the policy's `extract` fills `lbp_abi::Fields`); the
//! functions take the offsets it found (`l3_off`, `l4_off`) and check every header
//! they touch again themselves, so a wrong offset gives a refusal, never a bad write.
//!
//! Addresses are `std::net::IpAddr` (or `Ipv4Addr` / `Ipv6Addr` where only one
//! family makes sense); a family that does not match the packet is refused.
//!
//! Panic contract: no function of this module panics, whatever the bytes and the
//! offsets. Every read and write goes through `get` / `get_mut`, offsets are compared
//! with the frame length before any arithmetic on them, and the only loops are
//! bounded by constants (IPv6 extension headers, ND options) or by the frame length.
//! A function that cannot do its work returns `false` / `None` and leaves the frame
//! as it was: all checks happen before the first write.
//!
//! - [`checksum`]: the Internet checksum, pseudo-headers, RFC 1624 updates
//!   (`lbp_abi::checksum`, the one implementation, re-exported).
//! - [`nat`]: address and port rewrite of TCP/UDP (and ICMP) packets, both ways.
//! - [`icmp`]: the connection an ICMP error is about, and its NAT translation.
//! - [`route`]: Ethernet addresses, TTL / hop limit.
//! - [`reset`]: the TCP RST that answers a segment, built in place.
//! - [`time_exceeded`]: the ICMP / ICMPv6 time exceeded that answers a packet
//!   whose TTL ran out, built in place.
//! - [`view`]: [`Packet`], a frame's IP packet checked once from extract's
//!   fields, and the rewrites above on it without parsing again (what the
//!   switching cores use).
//! - [`arp`]: ARP requests and replies (Ethernet / IPv4).
//! - [`ndp`]: IPv6 neighbour solicitations and advertisements.

pub(crate) mod arp;
pub(crate) mod icmp;
pub(crate) mod nat;
pub(crate) mod ndp;
pub(crate) mod reset;
pub(crate) mod route;
pub(crate) mod time_exceeded;
pub(crate) mod view;

#[cfg(test)]
pub(crate) mod testutil;

pub use icmp::{IcmpError, icmp_error_rewrite, parse_icmp_error};
/// The Internet checksum: the one implementation, in `lbp_abi` (extraction's crate,
/// which the frame builders of the tests share too).
pub use lbp_abi::checksum;
pub use nat::{Side, rewrite, set_dst, set_src};
pub use reset::reset_in_place;
pub use route::{decrement_ttl, set_macs};
pub use time_exceeded::time_exceeded_in_place;
pub use view::Packet;

/// Header layouts: field offsets from the start of each header (the extraction's
/// table, shared).
use lbp_abi::wire::layout as field;

/// A validated IP header: where it is, where its packet ends, what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpHeader {
    /// 4 or 6.
    version: u8,
    /// Offset of the IP header in the frame.
    l3: usize,
    /// Offset one past the IP packet's last byte (the IP length field, not the
    /// frame length: Ethernet padding is not part of the packet).
    end: usize,
    /// The upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// Offset of the upper-layer header, `None` in a later fragment.
    l4: Option<usize>,
    /// The packet is a fragment (first or later).
    fragment: bool,
}

/// Parses and checks the IP header at `l3` in `frame`: version, header length,
/// length field within the frame, IPv6 extension headers (bounded). `None` for
/// anything else or anything inconsistent.
fn parse_ip(frame: &[u8], l3: usize) -> Option<IpHeader> {
    use field::{ipv4, ipv6};
    if l3 > frame.len() {
        return None;
    }
    let version = u8_at(frame, l3)? >> 4;
    match version {
        4 => {
            let ihl = usize::from(u8_at(frame, l3 + ipv4::VER_IHL)? & 0x0f) * 4;
            let total = usize::from(u16_at(frame, l3 + ipv4::TOTAL_LEN)?);
            if ihl < ipv4::MIN_HEADER_LEN || total < ihl || l3 + total > frame.len() {
                return None;
            }
            let flags = u16_at(frame, l3 + ipv4::FLAGS_FRAG)?;
            let later = flags & ipv4::OFFSET_MASK != 0;
            Some(IpHeader {
                version,
                l3,
                end: l3 + total,
                proto: u8_at(frame, l3 + ipv4::PROTOCOL)?,
                l4: (!later).then_some(l3 + ihl),
                fragment: later || flags & ipv4::MF != 0,
            })
        }
        6 => {
            let payload = usize::from(u16_at(frame, l3 + ipv6::PAYLOAD_LEN)?);
            let end = l3 + ipv6::HEADER_LEN + payload;
            if end > frame.len() {
                return None;
            }
            let (proto, l4, fragment) = walk_ipv6_ext(frame, l3, end)?;
            Some(IpHeader {
                version,
                l3,
                end,
                proto,
                l4,
                fragment,
            })
        }
        _ => None,
    }
}

/// Walks the IPv6 extension headers of the header at `l3`, staying below `end`,
/// with extraction's walk (`lbp_abi::wire::walk_ipv6_ext`, bounded by its
/// `MAX_EXT_HEADERS`). Returns the upper-layer protocol, its offset (`None` in a
/// later fragment) and whether a fragment header was seen.
fn walk_ipv6_ext(frame: &[u8], l3: usize, end: usize) -> Option<(u8, Option<usize>, bool)> {
    use field::ipv6;
    let next = u8_at(frame, l3 + ipv6::NEXT_HEADER)?;
    let payload = frame.get(l3 + ipv6::HEADER_LEN..end)?;
    let upper = lbp_abi::wire::walk_ipv6_ext(payload, next).ok()?;
    let l4 = upper.offset.map(|at| l3 + ipv6::HEADER_LEN + at);
    Some((upper.proto, l4, upper.fragment))
}

fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    array_at(b, at).map(u16::from_be_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_be_bytes)
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

fn put_u8(b: &mut [u8], at: usize, v: u8) -> Option<()> {
    *b.get_mut(at)? = v;
    Some(())
}

fn put_u16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    put_array(b, at, &v.to_be_bytes())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) -> Option<()> {
    put_array(b, at, &v.to_be_bytes())
}

fn put_array<const N: usize>(b: &mut [u8], at: usize, v: &[u8; N]) -> Option<()> {
    b.get_mut(at..)?.first_chunk_mut::<N>()?.copy_from_slice(v);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::testutil::{Spec, build};
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Every function of the module on every sample frame with single bytes
    /// changed to hostile values, at every length: never a panic, and a function
    /// that refuses leaves the bytes as they were.
    #[test]
    fn no_panic_on_mutations() {
        let mut samples = Vec::new();
        for (a, b) in [("198.18.0.1", "198.19.0.2"), ("2001:db8::1", "2001:db8::2")] {
            for proto in [6, 17, if a.contains(':') { 58 } else { 1 }] {
                let mut s = Spec::new(a, b, proto);
                s.vlan = true;
                s.ip_options = 8;
                s.payload = b"xyz".to_vec();
                samples.push(build(&s));
            }
        }
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let mac = [2, 0, 0, 0, 0, 1];
        for b in samples {
            let mut frame = b.frame.clone();
            for i in 0..frame.len() {
                let saved = frame[i];
                for value in [0u8, 1, 0x05, 0x0f, 0x44, 0x4f, 0x60, 0x80, 0xff] {
                    frame[i] = value;
                    for n in [i, i + 1, frame.len()] {
                        let cut = &frame[..n];
                        for addr in [v4, v6] {
                            for l4 in [0, b.l4] {
                                let mut f = cut.to_vec();
                                if !set_dst(&mut f, b.l3, l4, addr, 1) {
                                    assert_eq!(f, cut);
                                }
                                let _ = set_src(&mut f, b.l3, l4, addr, 1);
                                let mut f = cut.to_vec();
                                let _ = icmp_error_rewrite(
                                    &mut f,
                                    b.l3,
                                    l4,
                                    Some((Side::Dst, addr)),
                                    Side::Src,
                                    addr,
                                    1,
                                );
                            }
                        }
                        let _ = parse_icmp_error(cut, b.l3, b.l4);
                        for addr in [v4, v6] {
                            let mut f = cut.to_vec();
                            f.resize(2048, 0);
                            let before = f.clone();
                            if time_exceeded_in_place(&mut f, n, b.l3, addr).is_none() {
                                assert_eq!(f, before);
                            }
                        }
                        let mut f = cut.to_vec();
                        if reset_in_place(&mut f, n, b.l3, b.l4).is_none() {
                            assert_eq!(f, cut);
                        }
                        let mut f = cut.to_vec();
                        let _ = decrement_ttl(&mut f, b.l3);
                        let _ = set_macs(&mut f, mac, mac);
                        let _ = arp::parse(cut, b.l3);
                        let _ =
                            arp::reply_in_place(&mut f, b.l3, mac, Ipv4Addr::new(198, 19, 0, 2));
                        let _ = ndp::parse_ns(cut, b.l3, b.l4);
                        let _ = ndp::parse_na(cut, b.l3, b.l4);
                        let mut f = frame.clone();
                        let _ = ndp::na_from_ns_in_place(
                            &mut f,
                            n,
                            b.l3,
                            b.l4,
                            mac,
                            Ipv6Addr::LOCALHOST,
                        );
                    }
                }
                frame[i] = saved;
            }
        }
    }

    #[test]
    fn parse_ip_headers() {
        let mut s = Spec::new("198.18.0.1", "198.19.0.2", 6);
        s.ip_options = 4;
        let b = build(&s);
        let h = parse_ip(&b.frame, b.l3).unwrap();
        assert_eq!(
            (h.version, h.proto, h.l4, h.end, h.fragment),
            (4, 6, Some(b.l4), b.frame.len(), false)
        );
        // Ethernet padding after the packet is not part of it.
        let mut padded = b.frame.clone();
        padded.extend_from_slice(&[0xee; 10]);
        assert_eq!(parse_ip(&padded, b.l3).unwrap().end, b.frame.len());
        // IHL below 5, total length beyond the frame.
        let mut f = b.frame.clone();
        f[b.l3] = 0x44;
        assert_eq!(parse_ip(&f, b.l3), None);
        let mut f = b.frame.clone();
        f[b.l3 + 3] = f[b.l3 + 3].wrapping_add(1);
        assert_eq!(parse_ip(&f, b.l3), None);

        let mut s = Spec::new("2001:db8::1", "2001:db8::2", 17);
        s.ip_options = 8;
        let b = build(&s);
        let h = parse_ip(&b.frame, b.l3).unwrap();
        assert_eq!((h.version, h.proto, h.l4), (6, 17, Some(b.l3 + 48)));
        // Nine destination-options headers are too many; eight are fine.
        for (k, ok) in [(8, true), (9, false)] {
            let mut f = b.frame[..b.l3 + 40].to_vec();
            f[b.l3 + 6] = 60;
            for i in 0..k {
                f.extend_from_slice(&[if i + 1 == k { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
            }
            f.extend_from_slice(&b.frame[b.l4..]);
            let plen = (f.len() - b.l3 - 40) as u16;
            f[b.l3 + 4..b.l3 + 6].copy_from_slice(&plen.to_be_bytes());
            assert_eq!(parse_ip(&f, b.l3).is_some(), ok, "{k} headers");
        }
    }
}
