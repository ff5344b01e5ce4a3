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
use super::{array_at, parse_ip, put_array, put_u8, put_u16, put_u32, u8_at, u16_at, u32_at};

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
