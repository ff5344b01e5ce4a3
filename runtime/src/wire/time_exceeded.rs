//! The ICMP time exceeded (IPv4: type 11, ICMPv6: type 3; code 0, "in transit")
//! that answers a packet whose TTL or hop limit ran out, built in place over the
//! packet's own frame (RFC 792, RFC 1812 section 4.3.2, RFC 4443 section 3.3).
//!
//! The answer goes back where the packet came from: Ethernet addresses swapped,
//! VLAN tags kept (they lie between the Ethernet addresses and `l3_off`). It
//! quotes the packet from its IP header on, as much as fits in 576 bytes of IPv4
//! (RFC 1812 4.3.2.3) or the 1280 bytes of the IPv6 minimum MTU (RFC 4443 2.4(c)).
//! IPv4: a 20-byte header, TOS 0xc0 (internetwork control, as Linux sends its
//! errors), identification 0, no fragmentation flags, TTL 64; IPv6: traffic class
//! and flow label 0, hop limit 64. Both checksums are computed from scratch (the
//! ICMPv6 one over the pseudo-header).
//!
//! Never answered (RFC 1812 4.3.2.7, RFC 4443 2.4(e)): an ICMP error (IPv4 types
//! 3, 4, 5, 11, 12 and types not defined by RFC 792 and its successors, that is
//! above 18; ICMPv6 types below 128) or an ICMP packet whose header is not there;
//! a later fragment; a packet sent to a link-layer broadcast or multicast
//! address; a source that is not one host (unspecified, loopback, multicast,
//! IPv4 limited broadcast or class E). Whether an answer is rate limited is the
//! caller's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, fold, pseudo_v6, sum};
use super::field::{eth, icmp, ipv4, ipv6, proto};
use super::{IpHeader, array_at, parse_ip, put_array, put_u8, put_u16, put_u32, u8_at};

/// ICMP (IPv4) time exceeded.
pub const TYPE_V4: u8 = 11;
/// ICMPv6 time exceeded.
pub const TYPE_V6: u8 = 3;
/// TTL / hop limit of the answers.
pub const ANSWER_TTL: u8 = 64;
/// The largest IPv4 answer (RFC 1812 4.3.2.3).
const MAX_V4: usize = 576;
/// The largest IPv6 answer: the minimum MTU (RFC 4443 2.4(c)).
const MAX_V6: usize = 1280;
/// The ICMP header before the quoted packet: type, code, checksum, 4 unused bytes.
const ICMP_HEADER_LEN: usize = 8;
/// IPv4 TOS of the answers: precedence "internetwork control".
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// Whether an ICMP (`version` 4) or ICMPv6 message of this type is an error
/// message, which is never answered with another.
pub fn is_error_message(version: u8, icmp_type: u8) -> bool {
    match version {
        4 => matches!(icmp_type, 3 | 4 | 5 | 11 | 12) || icmp_type > 18,
        _ => icmp_type < 128,
    }
}

/// Whether `a` may be answered: one host, not unspecified, loopback, multicast,
/// the IPv4 limited broadcast or class E.
fn one_host(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_unspecified() || v.is_loopback() || v.octets()[0] >= 224),
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_loopback() || v.is_multicast()),
    }
}

/// Turns the packet in `frame[..len]` (IP header at `l3_off`) into the time
/// exceeded that answers it, from `our_ip` (of the packet's family) to the
/// packet's source. `frame` is the frame's whole buffer: the answer may be
/// longer than `len` (it adds 28 or 48 bytes of headers, within the limits
/// above). Returns the answer's frame length, or `None`, with the frame
/// untouched, when the packet must not or cannot be answered (see the module
/// documentation), `our_ip` is of the other family, or the buffer is too short.
pub fn time_exceeded_in_place(
    frame: &mut [u8],
    len: usize,
    l3_off: usize,
    our_ip: IpAddr,
) -> Option<usize> {
    let ip = parse_ip(frame.get(..len)?, l3_off)?;
    time_exceeded_ip(frame, len, &ip, our_ip)
}

/// [`time_exceeded_in_place`] of a packet whose header (within `frame[..len]`)
/// is already checked.
pub(super) fn time_exceeded_ip(
    frame: &mut [u8],
    len: usize,
    ip: &IpHeader,
    our_ip: IpAddr,
) -> Option<usize> {
    let ip = *ip;
    let l3_off = ip.l3;
    if ip.end > len {
        return None;
    }
    if l3_off < eth::HEADER_LEN || ip.l4.is_none() {
        return None;
    }
    let mac_dst: [u8; 6] = array_at(frame, eth::DST)?;
    let mac_src: [u8; 6] = array_at(frame, eth::SRC)?;
    if mac_dst[0] & 1 != 0 {
        return None;
    }
    let icmp_proto = if ip.version == 4 {
        proto::ICMP
    } else {
        proto::ICMPV6
    };
    if ip.proto == icmp_proto {
        let at = ip.l4?;
        if at + icmp::MIN_LEN > ip.end || is_error_message(ip.version, u8_at(frame, at)?) {
            return None;
        }
    }
    let l3 = l3_off;
    let (header, max) = match ip.version {
        4 => (ipv4::MIN_HEADER_LEN, MAX_V4),
        _ => (ipv6::HEADER_LEN, MAX_V6),
    };
    let quoted = (ip.end - l3).min(max - header - ICMP_HEADER_LEN);
    let l4 = l3 + header;
    let total = l4 + ICMP_HEADER_LEN + quoted;
    if total > frame.len() {
        return None;
    }
    let src = match ip.version {
        4 => IpAddr::V4(Ipv4Addr::from(array_at::<4>(frame, l3 + ipv4::SRC)?)),
        _ => IpAddr::V6(Ipv6Addr::from(array_at::<16>(frame, l3 + ipv6::SRC)?)),
    };
    if !one_host(src) || src.is_ipv4() != our_ip.is_ipv4() {
        return None;
    }
    // Checked above: the quoted bytes, and the headers before them, fit.
    frame.copy_within(l3..l3 + quoted, l4 + ICMP_HEADER_LEN);
    match (our_ip, src) {
        (IpAddr::V4(ours), IpAddr::V4(src)) => {
            put_u8(frame, l3 + ipv4::VER_IHL, 0x45)?;
            put_u8(frame, l3 + ipv4::TOS, TOS_INTERNETWORK_CONTROL)?;
            put_u16(frame, l3 + ipv4::TOTAL_LEN, (total - l3) as u16)?;
            put_u16(frame, l3 + ipv4::IDENT, 0)?;
            put_u16(frame, l3 + ipv4::FLAGS_FRAG, 0)?;
            put_u8(frame, l3 + ipv4::TTL, ANSWER_TTL)?;
            put_u8(frame, l3 + ipv4::PROTOCOL, proto::ICMP)?;
            put_u16(frame, l3 + ipv4::CHECKSUM, 0)?;
            put_array(frame, l3 + ipv4::SRC, &ours.octets())?;
            put_array(frame, l3 + ipv4::DST, &src.octets())?;
            let c = checksum(frame.get(l3..l4)?);
            put_u16(frame, l3 + ipv4::CHECKSUM, c)?;
            write_icmp(frame, l4, total, TYPE_V4, 0)?;
        }
        (IpAddr::V6(ours), IpAddr::V6(src)) => {
            let payload = (total - l4) as u16;
            put_u32(frame, l3 + ipv6::VER_TC_FLOW, 0x6000_0000)?;
            put_u16(frame, l3 + ipv6::PAYLOAD_LEN, payload)?;
            put_u8(frame, l3 + ipv6::NEXT_HEADER, proto::ICMPV6)?;
            put_u8(frame, l3 + ipv6::HOP_LIMIT, ANSWER_TTL)?;
            put_array(frame, l3 + ipv6::SRC, &ours.octets())?;
            put_array(frame, l3 + ipv6::DST, &src.octets())?;
            let p = pseudo_v6(&ours, &src, proto::ICMPV6, u32::from(payload));
            write_icmp(frame, l4, total, TYPE_V6, p)?;
        }
        // Checked above: one family.
        _ => return None,
    }
    put_array(frame, eth::DST, &mac_src)?;
    put_array(frame, eth::SRC, &mac_dst)?;
    Some(total)
}

/// Writes the ICMP header at `l4` (the quoted packet already follows it, up to
/// `end`) and its checksum over the message, starting from `pseudo` (0 for
/// IPv4).
fn write_icmp(frame: &mut [u8], l4: usize, end: usize, ty: u8, pseudo: u64) -> Option<()> {
    put_u8(frame, l4 + icmp::TYPE, ty)?;
    put_u8(frame, l4 + icmp::CODE, 0)?;
    put_u16(frame, l4 + icmp::CHECKSUM, 0)?;
    put_u32(frame, l4 + icmp::CHECKSUM + 2, 0)?;
    let c = !fold(sum(pseudo, frame.get(l4..end)?));
    put_u16(frame, l4 + icmp::CHECKSUM, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{Spec, assert_checksums, build, folded_sum};

    const OURS4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
    const OURS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));

    fn answer(spec: &Spec, ours: IpAddr) -> Option<(Vec<u8>, Vec<u8>, usize)> {
        let b = build(spec);
        let mut buf = b.frame.clone();
        buf.resize(2048, 0xee);
        let n = time_exceeded_in_place(&mut buf, b.frame.len(), b.l3, ours)?;
        buf.truncate(n);
        Some((b.frame, buf, b.l3))
    }

    #[test]
    fn ipv4_answer_quotes_the_packet() {
        for vlan in [false, true] {
            let mut s = Spec::new("198.18.1.5", "198.18.40.9", 17);
            s.vlan = vlan;
            s.payload = vec![7; 30];
            let (orig, a, l3) = answer(&s, OURS4).unwrap();
            // Ethernet addresses swapped, tags kept.
            assert_eq!(&a[..6], &orig[6..12]);
            assert_eq!(&a[6..12], &orig[..6]);
            assert_eq!(&a[12..l3], &orig[12..l3]);
            assert_eq!(a.len(), l3 + 28 + (orig.len() - l3));
            assert_eq!(a[l3], 0x45);
            assert_eq!(a[l3 + 8], ANSWER_TTL);
            assert_eq!(a[l3 + 9], 1);
            assert_eq!(&a[l3 + 12..l3 + 16], &[198, 18, 1, 1]);
            assert_eq!(&a[l3 + 16..l3 + 20], &[198, 18, 1, 5]);
            assert_eq!((a[l3 + 20], a[l3 + 21]), (TYPE_V4, 0));
            assert_eq!(&a[l3 + 28..], &orig[l3..]);
            assert_checksums(&a, l3, l3 + 20, 1);
            assert_eq!(folded_sum(&a[l3 + 20..]), 0xffff);
        }
    }

    #[test]
    fn ipv6_answer_quotes_the_packet() {
        let mut s = Spec::new("2001:db8:1::5", "2001:db8:40::9", 6);
        s.payload = vec![1; 10];
        let (orig, a, l3) = answer(&s, OURS6).unwrap();
        assert_eq!(a.len(), l3 + 48 + (orig.len() - l3));
        assert_eq!(a[l3 + 6], 58);
        assert_eq!(a[l3 + 7], ANSWER_TTL);
        assert_eq!(&a[l3 + 24..l3 + 40], &orig[l3 + 8..l3 + 24]);
        assert_eq!((a[l3 + 40], a[l3 + 41]), (TYPE_V6, 0));
        assert_eq!(&a[l3 + 48..], &orig[l3..]);
        assert_checksums(&a, l3, l3 + 40, 58);
    }

    #[test]
    fn long_packets_are_quoted_up_to_the_limits() {
        for (src, dst, proto, limit) in [
            ("198.18.1.5", "198.18.40.9", 17, MAX_V4),
            ("2001:db8:1::5", "2001:db8:40::9", 17, MAX_V6),
        ] {
            let mut s = Spec::new(src, dst, proto);
            s.payload = vec![3; 1400];
            let ours = if src.contains(':') { OURS6 } else { OURS4 };
            let (orig, a, l3) = answer(&s, ours).unwrap();
            assert_eq!(a.len() - l3, limit);
            let hdr = if src.contains(':') { 48 } else { 28 };
            assert_eq!(&a[l3 + hdr..], &orig[l3..l3 + limit - hdr]);
            assert_checksums(&a, l3, l3 + hdr - 8, if hdr == 48 { 58 } else { 1 });
        }
    }

    /// The answer to `b`'s frame with `edit` applied, or `None`; a refusal
    /// leaves the buffer as it was.
    fn answer_edited(
        spec: &Spec,
        ours: IpAddr,
        edit: impl Fn(&mut [u8], usize, usize),
    ) -> Option<usize> {
        let b = build(spec);
        let mut buf = b.frame.clone();
        edit(&mut buf, b.l3, b.l4);
        let n = buf.len();
        buf.resize(2048, 0xee);
        let before = buf.clone();
        let r = time_exceeded_in_place(&mut buf, n, b.l3, ours);
        if r.is_none() {
            assert_eq!(buf, before);
        }
        r
    }

    #[test]
    fn what_is_never_answered() {
        let v4 = Spec::new("198.18.1.5", "198.18.40.9", 1);
        let v6 = Spec::new("2001:db8:1::5", "2001:db8:40::9", 58);
        let set_type = |t: u8| move |f: &mut [u8], _: usize, l4: usize| f[l4] = t;
        // ICMP errors are not answered; echo requests and replies are.
        for ty in [3u8, 4, 5, 11, 12, 40] {
            assert_eq!(answer_edited(&v4, OURS4, set_type(ty)), None, "type {ty}");
        }
        for ty in [0u8, 8, 13] {
            assert!(
                answer_edited(&v4, OURS4, set_type(ty)).is_some(),
                "type {ty}"
            );
        }
        for ty in [1u8, 2, 3, 4, 100] {
            assert_eq!(answer_edited(&v6, OURS6, set_type(ty)), None, "type {ty}");
        }
        for ty in [128u8, 129] {
            assert!(
                answer_edited(&v6, OURS6, set_type(ty)).is_some(),
                "type {ty}"
            );
        }
        // An ICMP packet too short for its header: not known not to be an error.
        let cut = |f: &mut [u8], l3: usize, _: usize| {
            f[l3 + 2..l3 + 4].copy_from_slice(&22u16.to_be_bytes());
        };
        assert_eq!(answer_edited(&v4, OURS4, cut), None);
        // Sources that are not one host.
        let none = |_: &mut [u8], _: usize, _: usize| {};
        for src in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.5",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            let s = Spec::new(src, "198.18.40.9", 17);
            assert_eq!(answer_edited(&s, OURS4, none), None, "{src}");
        }
        for src in ["::", "::1", "ff02::1"] {
            let s = Spec::new(src, "2001:db8:40::9", 17);
            assert_eq!(answer_edited(&s, OURS6, none), None, "{src}");
        }
        // Our address of the other family.
        let udp = Spec::new("198.18.1.5", "198.18.40.9", 17);
        assert_eq!(answer_edited(&udp, OURS6, none), None);
        assert!(answer_edited(&udp, OURS4, none).is_some());
        // A later fragment; a first one is answered.
        let later = |f: &mut [u8], l3: usize, _: usize| f[l3 + 6..l3 + 8].copy_from_slice(&[0, 8]);
        assert_eq!(answer_edited(&udp, OURS4, later), None);
        let first = |f: &mut [u8], l3: usize, _: usize| f[l3 + 6] = 0x20;
        assert!(answer_edited(&udp, OURS4, first).is_some());
        // Sent to a link-layer broadcast or multicast address.
        let bcast = |f: &mut [u8], _: usize, _: usize| f[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(answer_edited(&udp, OURS4, bcast), None);
        let mcast = |f: &mut [u8], _: usize, _: usize| f[0] = 0x33;
        assert_eq!(answer_edited(&udp, OURS4, mcast), None);
    }

    #[test]
    fn no_panic_on_truncation_or_short_buffers() {
        for (src, dst, ours) in [
            ("198.18.1.5", "198.18.40.9", OURS4),
            ("2001:db8:1::5", "2001:db8:40::9", OURS6),
        ] {
            let b = build(&Spec::new(src, dst, 6));
            for n in 0..=b.frame.len() {
                for room in [n, n + 20, n + 48, 2048] {
                    let mut buf = b.frame[..n].to_vec();
                    buf.resize(room, 0);
                    let before = buf.clone();
                    match time_exceeded_in_place(&mut buf, n, b.l3, ours) {
                        Some(m) => assert!(m <= room && n == b.frame.len()),
                        None => assert_eq!(buf, before),
                    }
                    let _ = time_exceeded_in_place(&mut buf, n, usize::MAX, ours);
                    let _ = time_exceeded_in_place(&mut buf, room + 1, b.l3, ours);
                }
            }
        }
    }
}
