//! Header extraction: one bounds-checked pass over an Ethernet frame that fills the
//! ABI's [`Fields`], the only thing a compiled policy or the interpreter reads.
//!
//! What it parses: Ethernet II; up to two VLAN tags (802.1Q `0x8100`, 802.1ad
//! `0x88a8`); IPv4 (options skipped) or IPv6 with up to [`MAX_EXT_HEADERS`] extension
//! headers (hop-by-hop 0, routing 43, fragment 44, AH 51, destination options 60);
//! then TCP, UDP, ICMP (protocol 1 over IPv4) or ICMPv6 (next header 58 over IPv6).
//! Any other EtherType yields only the Ethernet fields; any other protocol yields no
//! transport fields and is not malformed. A later fragment (non-zero offset) has no
//! transport header. Checksums are not verified, and options are not interpreted.
//!
//! Malformed: the frame is shorter than a header it claims (Ethernet, a VLAN tag,
//! the IP header with its options, an extension header, the transport header with
//! its options), or a length or version field contradicts the bytes: IPv4 version
//! not 4, IHL below 5, total length below the header length or beyond the frame;
//! IPv6 version not 6, payload length beyond the frame; TCP data offset below 5 or
//! beyond the IP payload; more than [`MAX_EXT_HEADERS`] extension headers. Then
//! [`present::MALFORMED`] is set; the header that failed contributes nothing (its
//! `present` bit clear, its fields 0), the headers before it are kept. Extension and
//! transport headers are bounded by the IP length field, never by the frame: bytes
//! after the IP packet (Ethernet padding) are not payload.
//!
//! Panic contract: [`extract`] never panics, whatever the bytes. It is safe Rust,
//! reads only through `get`/`first_chunk`, allocates nothing, and its only loops are
//! bounded by constants (2 VLAN tags, 8 extension headers).

use crate::{Fields, present};

/// At most this many VLAN tags are skipped; a third tag is an unknown EtherType.
pub const MAX_VLAN_TAGS: usize = 2;
/// At most this many IPv6 extension headers are walked; a packet with more is
/// malformed (the transport header could otherwise hide behind a long chain).
pub const MAX_EXT_HEADERS: usize = 8;

/// Header layouts: field offsets from the start of each header, and the protocol
/// numbers that go with them. Public so that the runtime's packet rewriting
/// (`lbp-runtime`'s `wire`) uses the same table as extraction; facts from the
/// RFCs named, nothing lbp-specific.
pub mod layout {
    /// Ethernet II, its EtherTypes, and the 802.1Q / 802.1ad tag.
    pub mod eth {
        pub const DST: usize = 0;
        pub const SRC: usize = 6;
        pub const ETHERTYPE: usize = 12;
        pub const HEADER_LEN: usize = 14;
        /// A VLAN tag: TCI (2 bytes), then the next EtherType (2 bytes).
        pub const TAG_LEN: usize = 4;
        pub const TAG_NEXT_TYPE: usize = 2;
        pub const TYPE_IPV4: u16 = 0x0800;
        pub const TYPE_ARP: u16 = 0x0806;
        pub const TYPE_IPV6: u16 = 0x86dd;
        pub const TYPE_VLAN: u16 = 0x8100;
        pub const TYPE_QINQ: u16 = 0x88a8;
    }

    /// IPv4 (RFC 791).
    pub mod ipv4 {
        pub const VER_IHL: usize = 0;
        pub const TOS: usize = 1;
        pub const TOTAL_LEN: usize = 2;
        pub const IDENT: usize = 4;
        pub const FLAGS_FRAG: usize = 6;
        pub const TTL: usize = 8;
        pub const PROTOCOL: usize = 9;
        pub const CHECKSUM: usize = 10;
        pub const SRC: usize = 12;
        pub const DST: usize = 16;
        pub const MIN_HEADER_LEN: usize = 20;
        pub const DF: u16 = 0x4000;
        pub const MF: u16 = 0x2000;
        pub const OFFSET_MASK: u16 = 0x1fff;
    }

    /// IPv6 (RFC 8200) and its extension headers.
    pub mod ipv6 {
        pub const VER_TC_FLOW: usize = 0;
        pub const PAYLOAD_LEN: usize = 4;
        pub const NEXT_HEADER: usize = 6;
        pub const HOP_LIMIT: usize = 7;
        pub const SRC: usize = 8;
        pub const DST: usize = 24;
        pub const HEADER_LEN: usize = 40;

        pub const HOP_BY_HOP: u8 = 0;
        pub const ROUTING: u8 = 43;
        pub const FRAGMENT: u8 = 44;
        pub const AH: u8 = 51;
        pub const DEST_OPTS: u8 = 60;
        pub const NO_NEXT: u8 = 59;

        /// Every extension header starts with next header and a length byte.
        pub const EXT_NEXT: usize = 0;
        pub const EXT_LEN: usize = 1;
        pub const FRAG_HEADER_LEN: usize = 8;
        pub const FRAG_OFFSET: usize = 2;
        pub use crate::wire::MAX_EXT_HEADERS;
    }

    /// IP protocol numbers.
    pub mod proto {
        pub const ICMP: u8 = 1;
        pub const TCP: u8 = 6;
        pub const UDP: u8 = 17;
        pub const ICMPV6: u8 = 58;
    }

    /// TCP (RFC 9293).
    pub mod tcp {
        pub const SPORT: usize = 0;
        pub const DPORT: usize = 2;
        pub const SEQ: usize = 4;
        pub const ACK: usize = 8;
        pub const DATA_OFF: usize = 12;
        pub const FLAGS: usize = 13;
        pub const WINDOW: usize = 14;
        pub const CHECKSUM: usize = 16;
        pub const URGENT: usize = 18;
        pub const MIN_HEADER_LEN: usize = 20;
        /// FIN, SYN, RST, PSH, ACK, URG.
        pub const FLAG_MASK: u8 = 0x3f;
    }

    /// UDP (RFC 768).
    pub mod udp {
        pub const SPORT: usize = 0;
        pub const DPORT: usize = 2;
        pub const CHECKSUM: usize = 6;
        pub const HEADER_LEN: usize = 8;
    }

    /// ICMP and ICMPv6: the common first bytes.
    pub mod icmp {
        pub const TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const CHECKSUM: usize = 2;
        /// Type, code and checksum.
        pub const MIN_LEN: usize = 4;
        /// Type, code, checksum and the 4-byte field that precedes the body.
        pub const HEADER_LEN: usize = 8;
    }
}

use layout::{eth, icmp, ipv4, ipv6, proto, tcp, udp};

/// A header failed its checks; the caller sets [`present::MALFORMED`].
struct Malformed;

type Parse<T> = Result<T, Malformed>;

/// Extracts the header fields of `frame`, received on interface `in_iface`.
///
/// Never panics; see the module documentation for what is parsed and what is
/// malformed.
#[must_use]
pub fn extract(frame: &[u8], in_iface: u32) -> Fields {
    let mut f = Fields {
        pkt_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        in_iface,
        ..Fields::default()
    };
    if parse_ethernet(frame, &mut f).is_err() {
        f.present |= present::MALFORMED;
    }
    f
}

fn parse_ethernet(frame: &[u8], f: &mut Fields) -> Parse<()> {
    if frame.len() < eth::HEADER_LEN {
        return Err(Malformed);
    }
    f.eth_dst = bytes(frame, eth::DST)?;
    f.eth_src = bytes(frame, eth::SRC)?;
    f.present |= present::ETH;

    let mut ethertype = be16(frame, eth::ETHERTYPE)?;
    let mut l3 = eth::HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != eth::TYPE_VLAN && ethertype != eth::TYPE_QINQ {
            break;
        }
        // The tag starts where the EtherType field would have been (l3 - 2).
        if frame.len() < l3 + eth::TAG_LEN {
            return Err(Malformed);
        }
        ethertype = be16(frame, l3 + eth::TAG_NEXT_TYPE)?;
        l3 += eth::TAG_LEN;
        f.present |= present::VLAN;
    }
    f.eth_type = ethertype;

    let ip = frame.get(l3..).ok_or(Malformed)?;
    match ethertype {
        eth::TYPE_IPV4 => parse_ipv4(ip, l3, f),
        eth::TYPE_IPV6 => parse_ipv6(ip, l3, f),
        _ => Ok(()),
    }
}

/// `ip` starts at the IPv4 header, which is at offset `l3` in the frame.
fn parse_ipv4(ip: &[u8], l3: usize, f: &mut Fields) -> Parse<()> {
    if ip.len() < ipv4::MIN_HEADER_LEN {
        return Err(Malformed);
    }
    let ver_ihl = byte(ip, ipv4::VER_IHL)?;
    let header_len = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || header_len < ipv4::MIN_HEADER_LEN || ip.len() < header_len {
        return Err(Malformed);
    }
    let total_len = be16(ip, ipv4::TOTAL_LEN)?;
    if usize::from(total_len) < header_len || usize::from(total_len) > ip.len() {
        return Err(Malformed);
    }
    let src: [u8; 4] = bytes(ip, ipv4::SRC)?;
    let dst: [u8; 4] = bytes(ip, ipv4::DST)?;
    let flags_frag = be16(ip, ipv4::FLAGS_FRAG)?;
    let proto = byte(ip, ipv4::PROTOCOL)?;

    f.present |= present::IP4;
    f.ip_version = 4;
    f.ip_proto = proto;
    f.ip_ttl = byte(ip, ipv4::TTL)?;
    f.ip_len = u32::from(total_len);
    f.ip_src = ipv4_mapped(src);
    f.ip_dst = ipv4_mapped(dst);
    f.l3_offset = offset(l3)?;

    let frag_offset = flags_frag & ipv4::OFFSET_MASK;
    if flags_frag & ipv4::MF != 0 || frag_offset != 0 {
        f.present |= present::FRAG;
    }
    if frag_offset != 0 {
        return Ok(());
    }
    let payload = ip
        .get(header_len..usize::from(total_len))
        .ok_or(Malformed)?;
    parse_l4(payload, l3 + header_len, proto, false, f)
}

/// `ip` starts at the IPv6 header, which is at offset `l3` in the frame.
fn parse_ipv6(ip: &[u8], l3: usize, f: &mut Fields) -> Parse<()> {
    if ip.len() < ipv6::HEADER_LEN {
        return Err(Malformed);
    }
    if byte(ip, ipv6::VER_TC_FLOW)? >> 4 != 6 {
        return Err(Malformed);
    }
    let payload_len = usize::from(be16(ip, ipv6::PAYLOAD_LEN)?);
    // Bounded by the IPv6 payload length: trailing Ethernet padding is not payload.
    let payload = ip
        .get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + payload_len)
        .ok_or(Malformed)?;

    f.present |= present::IP6;
    f.ip_version = 6;
    f.ip_ttl = byte(ip, ipv6::HOP_LIMIT)?;
    f.ip_len = u32::try_from(payload_len + ipv6::HEADER_LEN).map_err(|_| Malformed)?;
    f.ip_src = bytes(ip, ipv6::SRC)?;
    f.ip_dst = bytes(ip, ipv6::DST)?;
    f.l3_offset = offset(l3)?;

    let next = byte(ip, ipv6::NEXT_HEADER)?;
    let upper = match walk_ipv6_ext(payload, next) {
        Ok(upper) => upper,
        Err(e) => {
            // A fragment header before the one that failed is kept.
            if e.fragment {
                f.present |= present::FRAG;
            }
            return Err(Malformed);
        }
    };
    if upper.fragment {
        f.present |= present::FRAG;
    }
    f.ip_proto = upper.proto;
    // A later fragment: what follows is fragment data, not headers.
    let Some(at) = upper.offset else {
        return Ok(());
    };
    if upper.proto == ipv6::NO_NEXT {
        return Ok(());
    }
    let segment = payload.get(at..).ok_or(Malformed)?;
    parse_l4(segment, l3 + ipv6::HEADER_LEN + at, upper.proto, true, f)
}

/// Where an IPv6 packet's extension headers lead: what [`walk_ipv6_ext`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// The upper-layer protocol (in a later fragment, the fragment header's next
    /// header).
    pub proto: u8,
    /// Offset of the upper-layer header from the end of the fixed IPv6 header,
    /// `None` in a later fragment (what follows is fragment data).
    pub offset: Option<usize>,
    /// A fragment header was seen (first or later fragment).
    pub fragment: bool,
}

/// The IPv6 extension headers are malformed: one does not fit the payload, or
/// there are more than [`MAX_EXT_HEADERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadExtHeaders {
    /// A fragment header was seen before the failure.
    pub fragment: bool,
}

/// Walks the IPv6 extension headers (hop-by-hop, routing, fragment, AH,
/// destination options) of a packet whose fixed header names `next`; `payload` is
/// the IPv6 payload (after the 40-byte header, bounded by the payload length
/// field, never by the frame). [`BadExtHeaders`] when an extension header does not
/// fit the payload or there are more than [`MAX_EXT_HEADERS`] of them. The one walk
/// of lbp: extraction and the runtime's rewriting both use it.
///
/// # Errors
///
/// [`BadExtHeaders`], as above.
pub fn walk_ipv6_ext(payload: &[u8], next: u8) -> Result<Ipv6Upper, BadExtHeaders> {
    let mut next = next;
    let mut at = 0; // offset in `payload` of the header `next` names
    let mut fragment = false;
    let bad = |fragment| BadExtHeaders { fragment };
    for _ in 0..MAX_EXT_HEADERS {
        let ext_len = match next {
            ipv6::HOP_BY_HOP | ipv6::ROUTING | ipv6::DEST_OPTS => {
                (usize::from(byte(payload, at + ipv6::EXT_LEN).map_err(|_| bad(fragment))?) + 1) * 8
            }
            ipv6::AH => {
                (usize::from(byte(payload, at + ipv6::EXT_LEN).map_err(|_| bad(fragment))?) + 2) * 4
            }
            ipv6::FRAGMENT => ipv6::FRAG_HEADER_LEN,
            _ => break,
        };
        if payload.len() < at + ext_len {
            return Err(bad(fragment));
        }
        let header_next = byte(payload, at + ipv6::EXT_NEXT).map_err(|_| bad(fragment))?;
        if next == ipv6::FRAGMENT {
            fragment = true;
            let frag_offset =
                be16(payload, at + ipv6::FRAG_OFFSET).map_err(|_| bad(fragment))? >> 3;
            if frag_offset != 0 {
                return Ok(Ipv6Upper {
                    proto: header_next,
                    offset: None,
                    fragment,
                });
            }
        }
        next = header_next;
        at += ext_len;
    }
    if is_ipv6_extension(next) {
        return Err(bad(fragment));
    }
    Ok(Ipv6Upper {
        proto: next,
        offset: Some(at),
        fragment,
    })
}

fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        ipv6::HOP_BY_HOP | ipv6::ROUTING | ipv6::FRAGMENT | ipv6::AH | ipv6::DEST_OPTS
    )
}

/// `seg` is the IP payload from the transport header on, at offset `l4` in the
/// frame.
fn parse_l4(seg: &[u8], l4: usize, proto: u8, is_v6: bool, f: &mut Fields) -> Parse<()> {
    match (proto, is_v6) {
        (proto::TCP, _) => {
            if seg.len() < tcp::MIN_HEADER_LEN {
                return Err(Malformed);
            }
            let header_len = usize::from(byte(seg, tcp::DATA_OFF)? >> 4) * 4;
            if header_len < tcp::MIN_HEADER_LEN || seg.len() < header_len {
                return Err(Malformed);
            }
            f.sport = be16(seg, tcp::SPORT)?;
            f.dport = be16(seg, tcp::DPORT)?;
            f.tcp_flags = byte(seg, tcp::FLAGS)? & tcp::FLAG_MASK;
            f.present |= present::TCP;
        }
        (proto::UDP, _) => {
            if seg.len() < udp::HEADER_LEN {
                return Err(Malformed);
            }
            f.sport = be16(seg, udp::SPORT)?;
            f.dport = be16(seg, udp::DPORT)?;
            f.present |= present::UDP;
        }
        (proto::ICMP, false) | (proto::ICMPV6, true) => {
            if seg.len() < icmp::MIN_LEN {
                return Err(Malformed);
            }
            f.icmp_type = byte(seg, icmp::TYPE)?;
            f.icmp_code = byte(seg, icmp::CODE)?;
            f.present |= present::ICMP;
        }
        _ => return Ok(()),
    }
    f.l4_offset = offset(l4)?;
    Ok(())
}

fn ipv4_mapped(a: [u8; 4]) -> [u8; 16] {
    let [b0, b1, b2, b3] = a;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b0, b1, b2, b3]
}

/// A frame offset as stored in [`Fields`]; offsets are bounded by 22 + 40 + 8
/// extension headers of at most 2 KiB, so this never fails in practice.
fn offset(at: usize) -> Parse<u16> {
    u16::try_from(at).map_err(|_| Malformed)
}

fn byte(s: &[u8], at: usize) -> Parse<u8> {
    s.get(at).copied().ok_or(Malformed)
}

fn be16(s: &[u8], at: usize) -> Parse<u16> {
    bytes(s, at).map(u16::from_be_bytes)
}

fn bytes<const N: usize>(s: &[u8], at: usize) -> Parse<[u8; N]> {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<N>)
        .copied()
        .ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_flag;

    // `extract` does not verify checksums, so most checksum fields here are 0.
    const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    /// Ethernet + IPv4 (10.0.0.1 -> 10.0.0.2, TTL 64) + TCP 12345 -> 80, SYN|ACK,
    /// 4 bytes of payload.
    static TCP4: [u8; 58] = [
        // Ethernet
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: ver/ihl, tos, total len 44, id, flags/frag, ttl, proto, csum
        0x45, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x06, 0x66, 0xca, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        // TCP: ports, seq, ack, doff 5, flags SYN|ACK, window, csum, urg
        0x30, 0x39, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, //
        0x50, 0x12, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, //
        // payload
        b'a', b'b', b'c', b'd',
    ];

    /// Ethernet + IPv4 with 8 bytes of options (IHL 7) + UDP 53 -> 5353.
    static UDP4_OPTIONS: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IHL 7, total 36
        0x47, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x05, 0x11, 0x00, 0x00, //
        0xc0, 0x00, 0x02, 0x01, 0xc6, 0x33, 0x64, 0x07, //
        // options: router alert (4 bytes), then NOP x3, EOL
        0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, //
        // UDP: 53 -> 5353, length 8, csum 0
        0x00, 0x35, 0x14, 0xe9, 0x00, 0x08, 0x00, 0x00,
    ];

    /// Ethernet + IPv4 + ICMP echo request, total length 28, then 18 bytes of
    /// Ethernet padding up to the 60-byte minimum frame.
    static ICMP4_PADDED: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00, //
        // Ethernet padding
        0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
        0xee, 0xee, 0xee,
    ];

    /// Ethernet + 802.1ad + 802.1Q + IPv4 + UDP 1000 -> 2000.
    static QINQ_UDP4: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x88, 0xa8, 0x00, 0x64, // S-tag, VID 100
        0x81, 0x00, 0x00, 0xc8, // C-tag, VID 200
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x03, 0xe8, 0x07, 0xd0, 0x00, 0x08, 0x00, 0x00,
    ];

    /// Ethernet + IPv6 (2001:db8::1 -> 2001:db8::2, hop limit 255) + hop-by-hop
    /// (8 bytes) + fragment header (offset 0, M set) + TCP 443 -> 40000, FIN|ACK.
    static TCP6_EXT: [u8; 90] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd,
        // IPv6: payload length 36, next header 0 (hop-by-hop), hop limit 255
        0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0xff, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        // hop-by-hop: next 44, len 0 (8 bytes), PadN
        0x2c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, //
        // fragment: next 6, reserved, offset 0 + M, identification
        0x06, 0x00, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, //
        // TCP
        0x01, 0xbb, 0x9c, 0x40, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, //
        0x50, 0x11, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    /// Ethernet + IPv6 + ICMPv6 echo request (8 bytes), hop limit 64.
    static ICMP6: [u8; 62] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x08, 0x3a, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    /// Ethernet ARP request (28 bytes of ARP).
    static ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    fn v4(a: [u8; 4]) -> [u8; 16] {
        std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = last;
        a
    }

    #[test]
    fn tcp_over_ipv4() {
        let f = extract(&TCP4, 3);
        assert_eq!(
            f,
            Fields {
                present: present::ETH | present::IP4 | present::TCP,
                pkt_len: 58,
                in_iface: 3,
                ip_len: 44,
                eth_type: 0x0800,
                sport: 12345,
                dport: 80,
                l3_offset: 14,
                l4_offset: 34,
                ip_version: 4,
                ip_proto: 6,
                ip_ttl: 64,
                tcp_flags: tcp_flag::SYN | tcp_flag::ACK,
                icmp_type: 0,
                icmp_code: 0,
                eth_src: MAC_SRC,
                eth_dst: MAC_DST,
                ip_src: v4([10, 0, 0, 1]),
                ip_dst: v4([10, 0, 0, 2]),
            }
        );
    }

    /// Which present bits a prefix of `TCP4` of length `n` must give.
    fn expected_tcp4_prefix(n: usize) -> u32 {
        use present::*;
        match n {
            58 => ETH | IP4 | TCP,
            // Cut anywhere after the Ethernet header: the total length (44) no
            // longer fits, so the IPv4 header itself is refused.
            14..=57 => ETH | MALFORMED,
            _ => MALFORMED,
        }
    }

    #[test]
    fn every_truncation_of_tcp_over_ipv4() {
        for n in 0..=TCP4.len() {
            let f = extract(&TCP4[..n], 0);
            assert_eq!(f.present, expected_tcp4_prefix(n), "cut at {n}");
            assert_eq!(f.pkt_len as usize, n);
            if n < 14 {
                assert_eq!(
                    f,
                    Fields {
                        present: present::MALFORMED,
                        pkt_len: n as u32,
                        ..Fields::default()
                    }
                );
            }
        }
    }

    /// Truncation where the IP length field is consistent with the cut: shrink the
    /// total length with the frame, so that the failing header is the TCP one.
    #[test]
    fn every_truncation_of_tcp_inside_a_consistent_ipv4_packet() {
        for n in 34..=TCP4.len() {
            let mut frame = TCP4;
            let total = (n - 14) as u16;
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            let f = extract(&frame[..n], 0);
            let want = if n < 54 {
                present::ETH | present::IP4 | present::MALFORMED
            } else {
                present::ETH | present::IP4 | present::TCP
            };
            assert_eq!(f.present, want, "cut at {n}");
            assert_eq!(f.ip_len as usize, n - 14);
            if n < 54 {
                assert_eq!((f.sport, f.dport, f.tcp_flags, f.l4_offset), (0, 0, 0, 0));
            }
        }
    }

    #[test]
    fn ipv4_header_checks() {
        // Version 6 in an IPv4 EtherType.
        let mut frame = TCP4;
        frame[14] = 0x65;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // IHL below 5.
        let mut frame = TCP4;
        frame[14] = 0x44;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // IHL 15 (60 bytes) does not fit the 44 bytes after the Ethernet header.
        let mut frame = TCP4;
        frame[14] = 0x4f;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // Total length below the header length.
        let mut frame = TCP4;
        frame[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // Total length one beyond the frame.
        let mut frame = TCP4;
        frame[16..18].copy_from_slice(&45u16.to_be_bytes());
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // Total length 20: a header-only packet; TCP is cut off by the length field.
        let mut frame = TCP4;
        frame[16..18].copy_from_slice(&20u16.to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::MALFORMED);
        assert_eq!(f.ip_len, 20);
    }

    #[test]
    fn tcp_header_checks() {
        // Data offset 4.
        let mut frame = TCP4;
        frame[46] = 0x40;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::MALFORMED);
        // Data offset 6 (24 bytes) fits in the 24 bytes of IP payload.
        let mut frame = TCP4;
        frame[46] = 0x60;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::IP4 | present::TCP
        );
        // Data offset 7 (28 bytes) does not.
        let mut frame = TCP4;
        frame[46] = 0x70;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::IP4 | present::MALFORMED
        );
        // ECE and CWR are not TCP flags of the language.
        let mut frame = TCP4;
        frame[47] = 0xff;
        assert_eq!(extract(&frame, 0).tcp_flags, 0x3f);
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let f = extract(&UDP4_OPTIONS, 1);
        assert_eq!(f.present, present::ETH | present::IP4 | present::UDP);
        assert_eq!((f.sport, f.dport), (53, 5353));
        assert_eq!((f.l3_offset, f.l4_offset), (14, 42));
        assert_eq!((f.ip_len, f.ip_ttl, f.ip_proto), (36, 5, 17));
        assert_eq!(f.ip_src, v4([192, 0, 2, 1]));
        assert_eq!(f.ip_dst, v4([198, 51, 100, 7]));
        // Every cut is malformed (the total length no longer fits).
        for n in 0..UDP4_OPTIONS.len() {
            let f = extract(&UDP4_OPTIONS[..n], 0);
            assert_ne!(f.present & present::MALFORMED, 0, "cut at {n}");
        }
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let f = extract(&ICMP4_PADDED, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::ICMP);
        assert_eq!((f.pkt_len, f.ip_len), (60, 28));
        assert_eq!((f.icmp_type, f.icmp_code, f.l4_offset), (8, 0, 34));

        // A UDP datagram claimed to be 26 bytes long (20 + 6) is cut inside the UDP
        // header, even though the padding would supply the missing bytes.
        let mut frame = ICMP4_PADDED;
        frame[16..18].copy_from_slice(&26u16.to_be_bytes());
        frame[23] = 17;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::MALFORMED);
        // Likewise a TCP segment within a 28-byte IPv4 packet.
        frame[16..18].copy_from_slice(&28u16.to_be_bytes());
        frame[23] = 6;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::MALFORMED);
    }

    #[test]
    fn icmp_needs_four_bytes() {
        for total in 20..=28u16 {
            let mut frame = ICMP4_PADDED;
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            let f = extract(&frame, 0);
            let want = if total >= 24 {
                present::ETH | present::IP4 | present::ICMP
            } else {
                present::ETH | present::IP4 | present::MALFORMED
            };
            assert_eq!(f.present, want, "total length {total}");
        }
    }

    #[test]
    fn protocol_numbers_follow_the_family() {
        // Protocol 58 over IPv4 is not ICMP, and not malformed.
        let mut frame = ICMP4_PADDED;
        frame[23] = 58;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4);
        assert_eq!((f.ip_proto, f.l4_offset), (58, 0));
        // Next header 1 over IPv6 is not ICMP either.
        let mut frame = ICMP6;
        frame[20] = 1;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6);
        assert_eq!((f.ip_proto, f.l4_offset), (1, 0));
        // An unknown protocol (GRE) with an empty payload: fine.
        let mut frame = TCP4;
        frame[23] = 47;
        frame[16..18].copy_from_slice(&20u16.to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4);
        assert_eq!(f.ip_proto, 47);
    }

    #[test]
    fn ipv4_fragments() {
        // First fragment (MF set, offset 0): a fragment with its TCP header.
        let mut frame = TCP4;
        frame[20] = 0x20;
        let f = extract(&frame, 0);
        assert_eq!(
            f.present,
            present::ETH | present::IP4 | present::FRAG | present::TCP
        );
        assert_eq!(f.dport, 80);
        // Later fragment (offset 1 = 8 bytes, MF set): no transport header.
        let mut frame = TCP4;
        frame[20..22].copy_from_slice(&0x2001u16.to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::FRAG);
        assert_eq!((f.sport, f.dport, f.tcp_flags, f.l4_offset), (0, 0, 0, 0));
        assert_eq!(f.ip_proto, 6);
        // Last fragment (offset non-zero, MF clear), with a payload too short to be
        // a TCP header: not malformed, it is not a TCP header.
        let mut frame = TCP4;
        frame[20..22].copy_from_slice(&0x00b9u16.to_be_bytes());
        frame[16..18].copy_from_slice(&23u16.to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP4 | present::FRAG);
        // DF alone is not a fragment.
        let mut frame = TCP4;
        frame[20] = 0x40;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::IP4 | present::TCP
        );
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let f = extract(&QINQ_UDP4, 0);
        assert_eq!(
            f.present,
            present::ETH | present::VLAN | present::IP4 | present::UDP
        );
        assert_eq!((f.eth_type, f.l3_offset, f.l4_offset), (0x0800, 22, 42));
        assert_eq!((f.sport, f.dport), (1000, 2000));
        // A tag cut short.
        for n in 14..18 {
            let f = extract(&QINQ_UDP4[..n], 0);
            assert_eq!(f.present, present::ETH | present::MALFORMED, "cut at {n}");
        }
        for n in 18..22 {
            let f = extract(&QINQ_UDP4[..n], 0);
            assert_eq!(
                f.present,
                present::ETH | present::VLAN | present::MALFORMED,
                "cut at {n}"
            );
        }
        // A single 802.1Q tag.
        let mut frame = [0u8; 46];
        frame[..12].copy_from_slice(&QINQ_UDP4[..12]);
        frame[12..].copy_from_slice(&QINQ_UDP4[16..]);
        let f = extract(&frame, 0);
        assert_eq!(
            f.present,
            present::ETH | present::VLAN | present::IP4 | present::UDP
        );
        assert_eq!((f.l3_offset, f.l4_offset), (18, 38));
        // A third tag is not skipped: its EtherType is reported, nothing more.
        let mut frame = QINQ_UDP4;
        frame[20..22].copy_from_slice(&0x8100u16.to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::VLAN);
        assert_eq!(f.eth_type, 0x8100);
    }

    #[test]
    fn arp_is_ethernet_only() {
        let f = extract(&ARP, 2);
        assert_eq!(
            f,
            Fields {
                present: present::ETH,
                pkt_len: 42,
                in_iface: 2,
                eth_type: 0x0806,
                eth_dst: [0xff; 6],
                eth_src: MAC_SRC,
                ..Fields::default()
            }
        );
        // Even a bare Ethernet header of an unknown type is fine.
        let f = extract(&ARP[..14], 0);
        assert_eq!(f.present, present::ETH);
    }

    #[test]
    fn tcp_over_ipv6_with_hop_by_hop_and_fragment() {
        let f = extract(&TCP6_EXT, 7);
        assert_eq!(
            f,
            Fields {
                present: present::ETH | present::IP6 | present::FRAG | present::TCP,
                pkt_len: 90,
                in_iface: 7,
                ip_len: 76,
                eth_type: 0x86dd,
                sport: 443,
                dport: 40000,
                l3_offset: 14,
                l4_offset: 70,
                ip_version: 6,
                ip_proto: 6,
                ip_ttl: 255,
                tcp_flags: tcp_flag::FIN | tcp_flag::ACK,
                icmp_type: 0,
                icmp_code: 0,
                eth_src: MAC_SRC,
                eth_dst: MAC_DST,
                ip_src: v6(1),
                ip_dst: v6(2),
            }
        );
    }

    #[test]
    fn every_truncation_of_ipv6_extension_headers() {
        // Keep the payload length consistent with the cut, so that each cut falls
        // inside the header it names.
        for n in 54..=TCP6_EXT.len() {
            let mut frame = TCP6_EXT;
            frame[18..20].copy_from_slice(&((n - 54) as u16).to_be_bytes());
            let f = extract(&frame[..n], 0);
            use present::*;
            let want = match n {
                54..=61 => ETH | IP6 | MALFORMED,
                62..=69 => ETH | IP6 | MALFORMED,
                70..=89 => ETH | IP6 | FRAG | MALFORMED,
                _ => ETH | IP6 | FRAG | TCP,
            };
            assert_eq!(f.present, want, "cut at {n}");
            // The upper-layer protocol is known once the chain is walked.
            assert_eq!(f.ip_proto, if n < 70 { 0 } else { 6 }, "cut at {n}");
        }
        // And every plain cut of the frame: the payload length no longer fits.
        for n in 0..TCP6_EXT.len() {
            let f = extract(&TCP6_EXT[..n], 0);
            assert_ne!(f.present & present::MALFORMED, 0, "cut at {n}");
            assert_eq!(f.present & present::IP6, 0, "cut at {n}");
        }
    }

    #[test]
    fn ipv6_later_fragment_has_no_transport_header() {
        let mut frame = TCP6_EXT;
        // Offset 185 (in 8-byte units), M clear.
        frame[64..66].copy_from_slice(&(185u16 << 3).to_be_bytes());
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::FRAG);
        assert_eq!((f.ip_proto, f.sport, f.dport, f.l4_offset), (6, 0, 0, 0));
        // Atomic fragment (offset 0, M clear): still a fragment header.
        let mut frame = TCP6_EXT;
        frame[65] = 0;
        let f = extract(&frame, 0);
        assert_eq!(
            f.present,
            present::ETH | present::IP6 | present::FRAG | present::TCP
        );
    }

    #[test]
    fn ipv6_extension_header_lengths() {
        // Hop-by-hop naming TCP next but claiming 24 bytes: the TCP header would
        // start at 78 and has 12 bytes left: malformed.
        let mut frame = TCP6_EXT;
        frame[54] = 6;
        frame[55] = 2;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::MALFORMED);
        // Hop-by-hop claiming 2 KiB: truncated.
        let mut frame = TCP6_EXT;
        frame[55] = 255;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::MALFORMED);
        // AH: (len + 2) * 4 bytes. Replace the fragment header by an 8-byte AH
        // header (len 0), the smallest one: (0 + 2) * 4 = 8.
        let mut frame = TCP6_EXT;
        frame[54] = 51;
        frame[62..64].copy_from_slice(&[6, 0]);
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::TCP);
        assert_eq!(f.l4_offset, 70);
        // An AH len of 1 means 12 bytes: the TCP header starts 4 bytes later and no
        // longer fits.
        frame[63] = 1;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::MALFORMED);
        // IPv6 + a 12-byte AH (len 1) + UDP: the UDP header is at 54 + 12.
        let mut frame = ICMP6[..54].to_vec();
        frame[18..20].copy_from_slice(&20u16.to_be_bytes());
        frame[20] = 51;
        frame.extend_from_slice(&[17, 1, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0x04, 0xd2, 0x10, 0xe1, 0, 8, 0, 0]);
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::UDP);
        assert_eq!(
            (f.l4_offset, f.sport, f.dport, f.ip_proto),
            (66, 1234, 4321, 17)
        );
    }

    #[test]
    fn ipv6_too_many_extension_headers() {
        // IPv6 + k destination-options headers (8 bytes each) + UDP.
        fn frame(k: usize) -> Vec<u8> {
            let mut v = ICMP6[..54].to_vec();
            let plen = (k * 8 + 8) as u16;
            v[18..20].copy_from_slice(&plen.to_be_bytes());
            v[20] = if k == 0 { 17 } else { 60 };
            for i in 0..k {
                let next = if i + 1 == k { 17 } else { 60 };
                v.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            v.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
            v
        }
        for k in 0..=MAX_EXT_HEADERS {
            let f = extract(&frame(k), 0);
            assert_eq!(
                f.present,
                present::ETH | present::IP6 | present::UDP,
                "{k} headers"
            );
            assert_eq!(f.l4_offset as usize, 54 + 8 * k);
        }
        let f = extract(&frame(MAX_EXT_HEADERS + 1), 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::MALFORMED);
    }

    #[test]
    fn ipv6_no_next_header_and_checks() {
        let mut frame = ICMP6;
        frame[20] = 59;
        let f = extract(&frame, 0);
        assert_eq!(f.present, present::ETH | present::IP6);
        assert_eq!(f.ip_proto, 59);
        // Version 4 in an IPv6 EtherType.
        let mut frame = ICMP6;
        frame[14] = 0x40;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
        // Payload length beyond the frame.
        let mut frame = ICMP6;
        frame[19] = 9;
        assert_eq!(
            extract(&frame, 0).present,
            present::ETH | present::MALFORMED
        );
    }

    #[test]
    fn icmpv6() {
        let f = extract(&ICMP6, 0);
        assert_eq!(f.present, present::ETH | present::IP6 | present::ICMP);
        assert_eq!((f.icmp_type, f.icmp_code), (128, 0));
        assert_eq!((f.ip_len, f.ip_ttl, f.ip_proto), (48, 64, 58));
        assert_eq!((f.l3_offset, f.l4_offset), (14, 54));
        for n in 0..ICMP6.len() {
            let f = extract(&ICMP6[..n], 0);
            assert_ne!(f.present & present::MALFORMED, 0, "cut at {n}");
        }
    }

    /// Every byte value at every position of every sample frame, at every length:
    /// never a panic, and `pkt_len` always the frame's length.
    #[test]
    fn no_panic_on_mutations() {
        let samples: [&[u8]; 7] = [
            &TCP4,
            &UDP4_OPTIONS,
            &ICMP4_PADDED,
            &QINQ_UDP4,
            &TCP6_EXT,
            &ICMP6,
            &ARP,
        ];
        for sample in samples {
            let mut frame = sample.to_vec();
            for i in 0..frame.len() {
                let saved = frame[i];
                for value in [0u8, 1, 0x0f, 0x3a, 0x45, 0x60, 0x7f, 0x80, 0xff] {
                    frame[i] = value;
                    for n in [i, i + 1, frame.len()] {
                        let f = extract(&frame[..n], 0);
                        assert_eq!(f.pkt_len as usize, n);
                    }
                }
                frame[i] = saved;
            }
        }
    }
}
