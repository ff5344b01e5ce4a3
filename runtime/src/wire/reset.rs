//! The TCP reset that answers a segment, built in place over the segment's own
//! frame (RFC 9293 section 3.10.7.1, "connection does not exist").
//!
//! The answer goes back where the segment came from: Ethernet addresses, IP
//! addresses and ports swapped; VLAN tags kept (they lie between the Ethernet
//! addresses and `l3_off`, and are not touched). If the segment had ACK, the RST
//! carries `seq = SEG.ACK` and no ACK flag; otherwise `seq = 0`,
//! `ack = SEG.SEQ + SEG.LEN` (payload length, plus one for SYN and one for FIN),
//! flags RST|ACK. No options, no payload, window 0. IPv4: a fresh 20-byte header
//! (options dropped), identification 0, DF, TTL 64. IPv6: a 40-byte header with
//! traffic class and flow label 0 and hop limit 64 (extension headers dropped).
//! Both checksums are computed from scratch.
//!
//! Never answered: a RST, a fragment (first or later: the segment length is not
//! known), anything not a whole TCP header inside its IP packet.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, fold, pseudo_v4, pseudo_v6, sum};
use super::field::{eth, ipv4, ipv6, proto, tcp};
use super::{
    IpHeader, array_at, parse_ip, put_array, put_u8, put_u16, put_u32, u8_at, u16_at, u32_at,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Default TTL / hop limit of the resets we send.
pub const RESET_TTL: u8 = 64;

/// Turns the TCP segment in `frame[..len]` (IP header at `l3_off`, TCP header at
/// `l4_off`) into the RST that answers it. Returns the RST frame's length (never
/// more than `len`), or `None`, with the frame untouched, when the segment must
/// not or cannot be answered (see the module documentation).
pub fn reset_in_place(frame: &mut [u8], len: usize, l3_off: usize, l4_off: usize) -> Option<usize> {
    let frame = frame.get_mut(..len)?;
    let ip = parse_ip(frame, l3_off)?;
    reset_ip(frame, &ip, l4_off)
}

/// [`reset_in_place`] of the frame `frame` (exactly the frame) whose header is
/// already checked.
pub(super) fn reset_ip(frame: &mut [u8], ip: &IpHeader, l4_off: usize) -> Option<usize> {
    let l3_off = ip.l3;
    if ip.proto != proto::TCP || ip.fragment || ip.l4 != Some(l4_off) {
        return None;
    }
    if l3_off < eth::HEADER_LEN {
        return None;
    }
    let l4 = l4_off;
    let doff = usize::from(u8_at(frame, l4 + tcp::DATA_OFF)? >> 4) * 4;
    if doff < tcp::MIN_HEADER_LEN || l4 + doff > ip.end {
        return None;
    }
    let flags = u8_at(frame, l4 + tcp::FLAGS)?;
    if flags & RST != 0 {
        return None;
    }
    let sport = u16_at(frame, l4 + tcp::SPORT)?;
    let dport = u16_at(frame, l4 + tcp::DPORT)?;
    let seg_seq = u32_at(frame, l4 + tcp::SEQ)?;
    let seg_ack = u32_at(frame, l4 + tcp::ACK)?;
    // Bounded by the IP packet's length: < 2^16, the cast below cannot truncate.
    let payload = (ip.end - l4 - doff) as u32;
    let (seq, ack, out_flags) = if flags & ACK != 0 {
        (seg_ack, 0, RST)
    } else {
        let seg_len = payload + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        (0, seg_seq.wrapping_add(seg_len), RST | ACK)
    };

    let mac_dst: [u8; 6] = array_at(frame, eth::DST)?;
    let mac_src: [u8; 6] = array_at(frame, eth::SRC)?;
    let l3 = l3_off;
    let total = if ip.version == 4 {
        let src: [u8; 4] = array_at(frame, l3 + ipv4::SRC)?;
        let dst: [u8; 4] = array_at(frame, l3 + ipv4::DST)?;
        let new_l4 = l3 + ipv4::MIN_HEADER_LEN;
        let total = new_l4 + tcp::MIN_HEADER_LEN;
        // Within `len`: the original had a header at least as long as each of these.
        if total > frame.len() {
            return None;
        }
        put_u8(frame, l3 + ipv4::VER_IHL, 0x45)?;
        put_u8(frame, l3 + ipv4::TOS, 0)?;
        put_u16(frame, l3 + ipv4::TOTAL_LEN, 40)?;
        put_u16(frame, l3 + ipv4::IDENT, 0)?;
        put_u16(frame, l3 + ipv4::FLAGS_FRAG, ipv4::DF)?;
        put_u8(frame, l3 + ipv4::TTL, RESET_TTL)?;
        put_u8(frame, l3 + ipv4::PROTOCOL, proto::TCP)?;
        put_u16(frame, l3 + ipv4::CHECKSUM, 0)?;
        put_array(frame, l3 + ipv4::SRC, &dst)?;
        put_array(frame, l3 + ipv4::DST, &src)?;
        let c = checksum(frame.get(l3..new_l4)?);
        put_u16(frame, l3 + ipv4::CHECKSUM, c)?;
        write_tcp(frame, new_l4, dport, sport, seq, ack, out_flags)?;
        let p = pseudo_v4(Ipv4Addr::from(dst), Ipv4Addr::from(src), proto::TCP, 20);
        fill_tcp_csum(frame, new_l4, p)?;
        total
    } else {
        let src: [u8; 16] = array_at(frame, l3 + ipv6::SRC)?;
        let dst: [u8; 16] = array_at(frame, l3 + ipv6::DST)?;
        let new_l4 = l3 + ipv6::HEADER_LEN;
        let total = new_l4 + tcp::MIN_HEADER_LEN;
        if total > frame.len() {
            return None;
        }
        put_u32(frame, l3 + ipv6::VER_TC_FLOW, 0x6000_0000)?;
        put_u16(frame, l3 + ipv6::PAYLOAD_LEN, 20)?;
        put_u8(frame, l3 + ipv6::NEXT_HEADER, proto::TCP)?;
        put_u8(frame, l3 + ipv6::HOP_LIMIT, RESET_TTL)?;
        put_array(frame, l3 + ipv6::SRC, &dst)?;
        put_array(frame, l3 + ipv6::DST, &src)?;
        write_tcp(frame, new_l4, dport, sport, seq, ack, out_flags)?;
        let p = pseudo_v6(&Ipv6Addr::from(dst), &Ipv6Addr::from(src), proto::TCP, 20);
        fill_tcp_csum(frame, new_l4, p)?;
        total
    };
    put_array(frame, eth::DST, &mac_src)?;
    put_array(frame, eth::SRC, &mac_dst)?;
    Some(total)
}

/// Writes a 20-byte TCP header at `at` with a zero checksum.
fn write_tcp(
    frame: &mut [u8],
    at: usize,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Option<()> {
    put_u16(frame, at + tcp::SPORT, sport)?;
    put_u16(frame, at + tcp::DPORT, dport)?;
    put_u32(frame, at + tcp::SEQ, seq)?;
    put_u32(frame, at + tcp::ACK, ack)?;
    put_u8(frame, at + tcp::DATA_OFF, 5 << 4)?;
    put_u8(frame, at + tcp::FLAGS, flags)?;
    put_u16(frame, at + tcp::WINDOW, 0)?;
    put_u16(frame, at + tcp::CHECKSUM, 0)?;
    put_u16(frame, at + tcp::URGENT, 0)
}

/// Fills the checksum of the 20-byte TCP header at `at`, given the pseudo-header's
/// partial sum.
fn fill_tcp_csum(frame: &mut [u8], at: usize, pseudo: u64) -> Option<()> {
    let c = !fold(sum(pseudo, frame.get(at..at + tcp::MIN_HEADER_LEN)?));
    put_u16(frame, at + tcp::CHECKSUM, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{MAC_A, MAC_B, Spec, assert_checksums, build};

    fn be32(f: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(f[at..at + 4].try_into().unwrap())
    }

    /// Resets `spec`'s segment and checks what every RST has in common; returns
    /// the RST frame and its TCP offset.
    fn reset(spec: &Spec) -> (Vec<u8>, usize) {
        let b = build(spec);
        let mut f = b.frame.clone();
        let n = reset_in_place(&mut f, b.frame.len(), b.l3, b.l4).expect("answered");
        f.truncate(n);
        let v4 = spec.src.is_ipv4();
        let l4 = b.l3 + if v4 { 20 } else { 40 };
        assert_eq!(n, l4 + 20);
        assert_eq!(&f[0..6], &MAC_A);
        assert_eq!(&f[6..12], &MAC_B);
        assert_eq!(
            &f[12..b.l3],
            &b.frame[12..b.l3],
            "VLAN tag and EtherType kept"
        );
        let (sa, da) = if v4 { (12, 16) } else { (8, 24) };
        let alen = if v4 { 4 } else { 16 };
        let o = &b.frame;
        assert_eq!(
            &f[b.l3 + sa..b.l3 + sa + alen],
            &o[b.l3 + da..b.l3 + da + alen]
        );
        assert_eq!(
            &f[b.l3 + da..b.l3 + da + alen],
            &o[b.l3 + sa..b.l3 + sa + alen]
        );
        if v4 {
            assert_eq!(&f[b.l3..b.l3 + 10], &[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6]);
        } else {
            assert_eq!(&f[b.l3..b.l3 + 8], &[0x60, 0, 0, 0, 0, 20, 6, 64]);
        }
        assert_eq!(&f[l4..l4 + 2], &o[b.l4 + 2..b.l4 + 4]);
        assert_eq!(&f[l4 + 2..l4 + 4], &o[b.l4..b.l4 + 2]);
        assert_eq!(f[l4 + 12], 0x50, "no options");
        assert_eq!(&f[l4 + 14..l4 + 16], &[0, 0], "window 0");
        assert_eq!(&f[l4 + 18..l4 + 20], &[0, 0], "urgent 0");
        assert_checksums(&f, b.l3, l4, 6);
        (f, l4)
    }

    fn all_shapes(src: &str, dst: &str) -> Vec<Spec> {
        let mut v = Vec::new();
        for (vlan, opts, tcp_opts) in [(false, 0, 0), (true, 8, 12)] {
            let mut s = Spec::new(src, dst, 6);
            s.vlan = vlan;
            s.ip_options = opts;
            s.tcp_options = tcp_opts;
            v.push(s);
        }
        v
    }

    #[test]
    fn segment_with_ack() {
        for (src, dst) in [
            ("198.18.0.1", "198.19.0.80"),
            ("2001:db8::1", "2001:db8::80"),
        ] {
            for mut s in all_shapes(src, dst) {
                s.tcp_flags = 0x18; // PSH|ACK
                let (f, l4) = reset(&s);
                assert_eq!(be32(&f, l4 + 4), s.ack, "seq = SEG.ACK");
                assert_eq!(be32(&f, l4 + 8), 0);
                assert_eq!(f[l4 + 13], RST);
            }
        }
    }

    #[test]
    fn segment_without_ack() {
        for (src, dst) in [
            ("198.18.0.1", "198.19.0.80"),
            ("2001:db8::1", "2001:db8::80"),
        ] {
            for mut s in all_shapes(src, dst) {
                // (flags, payload length, expected SEG.LEN)
                for (flags, plen, seg_len) in [
                    (SYN, 0, 1),
                    (SYN, 7, 8),
                    (SYN | FIN, 3, 5),
                    (FIN, 0, 1),
                    (0, 10, 10),
                    (0x08, 1, 1), // PSH only
                ] {
                    s.tcp_flags = flags;
                    s.payload = vec![0xab; plen];
                    s.seq = 0xffff_fffe;
                    let (f, l4) = reset(&s);
                    assert_eq!(be32(&f, l4 + 4), 0);
                    assert_eq!(
                        be32(&f, l4 + 8),
                        s.seq.wrapping_add(seg_len),
                        "flags {flags:#x}"
                    );
                    assert_eq!(f[l4 + 13], RST | ACK);
                }
            }
        }
    }

    #[test]
    fn never_answers_reset_or_fragment() {
        for (src, dst) in [
            ("198.18.0.1", "198.19.0.80"),
            ("2001:db8::1", "2001:db8::80"),
        ] {
            for flags in [RST, RST | ACK, RST | SYN] {
                let mut s = Spec::new(src, dst, 6);
                s.tcp_flags = flags;
                let b = build(&s);
                let mut f = b.frame.clone();
                assert_eq!(reset_in_place(&mut f, b.frame.len(), b.l3, b.l4), None);
                assert_eq!(f, b.frame);
            }
        }
        // IPv4 first fragment (MF).
        let b = build(&Spec::new("198.18.0.1", "198.19.0.80", 6));
        let mut f = b.frame.clone();
        f[b.l3 + 6] = 0x20;
        let before = f.clone();
        assert_eq!(reset_in_place(&mut f, before.len(), b.l3, b.l4), None);
        assert_eq!(f, before);
        // UDP is not TCP.
        let b = build(&Spec::new("198.18.0.1", "198.19.0.80", 17));
        let mut f = b.frame.clone();
        assert_eq!(reset_in_place(&mut f, b.frame.len(), b.l3, b.l4), None);
        assert_eq!(f, b.frame);
    }

    #[test]
    fn bad_offsets_and_lengths() {
        let b = build(&Spec::new("198.18.0.1", "198.19.0.80", 6));
        let mut f = b.frame.clone();
        let n = f.len();
        assert_eq!(reset_in_place(&mut f, n + 1, b.l3, b.l4), None);
        assert_eq!(reset_in_place(&mut f, n, b.l3, b.l4 + 1), None);
        assert_eq!(reset_in_place(&mut f, n, b.l3, 0), None);
        assert_eq!(reset_in_place(&mut f, n, usize::MAX, usize::MAX), None);
        assert_eq!(reset_in_place(&mut f, n, 0, b.l4), None);
        assert_eq!(f, b.frame);
        // Data offset below 5.
        f[b.l4 + 12] = 0x40;
        let before = f.clone();
        assert_eq!(reset_in_place(&mut f, n, b.l3, b.l4), None);
        assert_eq!(f, before);
    }

    #[test]
    fn truncations_never_panic() {
        for (src, dst) in [
            ("198.18.0.1", "198.19.0.80"),
            ("2001:db8::1", "2001:db8::80"),
        ] {
            for s in all_shapes(src, dst) {
                let b = build(&s);
                for n in 0..=b.frame.len() {
                    let mut f = b.frame.clone();
                    let r = reset_in_place(&mut f, n, b.l3, b.l4);
                    assert_eq!(r.is_some(), n == b.frame.len(), "cut at {n}");
                    let mut g = b.frame[..n].to_vec();
                    let _ = reset_in_place(&mut g, n, b.l3, b.l4);
                    let _ = reset_in_place(&mut g, usize::MAX, b.l3, b.l4);
                }
            }
        }
    }
}
