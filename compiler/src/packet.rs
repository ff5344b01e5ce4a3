//! Test-packet construction: [`build`] turns a [`PacketSpec`] (what a `packet` line
//! of an `lbp test` block or a test corpus describes) into an Ethernet frame that
//! [`crate::wire::extract`] reads back field for field.
//!
//! Frames are Ethernet II without VLAN tags, then IPv4 (20 bytes, no options, DF
//! clear, id 0, header checksum) or IPv6 (40 bytes, no extension headers), chosen by
//! the family of `src`, then TCP (20 bytes), UDP (8) or ICMP/ICMPv6 (8), each with a
//! correct checksum, then zero bytes of payload as `len` asks. It is not a general
//! packet crafter: no options, no fragments, no tunnels. It allocates the frame and
//! never panics; `len` is honoured exactly, so a huge `len` allocates that much (the
//! caller bounds it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lbp_abi::tcp_flag;

/// The transport protocol of a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP (protocol 1); an echo request unless `icmp_type` says otherwise.
    Icmp,
    /// ICMPv6 (next header 58); an echo request unless `icmp_type` says otherwise.
    Icmpv6,
}

impl Proto {
    /// The IP protocol number, whatever the family: `Icmp` over IPv6 is protocol
    /// 1 (which `wire` does not read as ICMP), `Icmpv6` over IPv4 is 58.
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Proto::Tcp => TCP_HEADER_LEN,
            Proto::Udp | Proto::Icmp | Proto::Icmpv6 => 8,
        }
    }
}

/// What a test packet looks like. Fields that do not apply to `proto` (ports for
/// ICMP, flags for UDP, ...) are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketSpec {
    pub proto: Proto,
    /// Its family decides the IP version; see [`build`] for a `dst` of the other.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Bits of [`tcp_flag`] (bits 0x40 and 0x80 are written as given).
    pub tcp_flags: u8,
    /// `None`: echo request (8 for ICMP, 128 for ICMPv6).
    pub icmp_type: Option<u8>,
    pub icmp_code: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The frame's exact length, Ethernet header included; `None`: headers only.
    pub len: Option<usize>,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
}

impl PacketSpec {
    /// TTL 64, ports 0, no flags, echo request, no padding, Ethernet source
    /// 02:00:00:00:00:01 and destination 02:00:00:00:00:02.
    pub fn new(proto: Proto, src: IpAddr, dst: IpAddr) -> PacketSpec {
        PacketSpec {
            proto,
            src,
            dst,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: None,
            icmp_code: 0,
            ttl: 64,
            len: None,
            eth_src: [0x02, 0, 0, 0, 0, 0x01],
            eth_dst: [0x02, 0, 0, 0, 0, 0x02],
        }
    }
}

const ETH_HEADER_LEN: usize = 14;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// The source and destination, both of the source's family.
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Addrs {
    /// Mixed families: an IPv4 `dst` in an IPv6 packet becomes `::ffff:a.b.c.d`;
    /// an IPv6 `dst` in an IPv4 packet becomes its IPv4 form if it is
    /// IPv4-mapped, else 0.0.0.0. (The checker refuses mixed families in tests.)
    fn of(spec: &PacketSpec) -> Addrs {
        match (spec.src, spec.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Addrs::V4(s, d),
            (IpAddr::V4(s), IpAddr::V6(d)) => {
                Addrs::V4(s, d.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => Addrs::V6(s, d),
            (IpAddr::V6(s), IpAddr::V4(d)) => Addrs::V6(s, d.to_ipv6_mapped()),
        }
    }
}

/// Builds the frame `spec` describes.
///
/// `len`: when at least the headers' length, zero payload is added after the
/// transport header and the IP and UDP lengths and all checksums account for it;
/// if the IP length field cannot count that far (IPv4 total length or IPv6 payload
/// length above 65535), the IP packet stops at the largest length it can state and
/// the rest of the frame is zero bytes after it (Ethernet padding, to `wire`).
/// When smaller than the headers, the complete frame is built and then cut to
/// `len` bytes: a deliberately truncated packet, which `wire` finds malformed.
pub fn build(spec: &PacketSpec) -> Vec<u8> {
    let addrs = Addrs::of(spec);
    let ip_header_len = match addrs {
        Addrs::V4(..) => IPV4_HEADER_LEN,
        Addrs::V6(..) => IPV6_HEADER_LEN,
    };
    let l4_header_len = spec.proto.header_len();
    let headers_len = ETH_HEADER_LEN + ip_header_len + l4_header_len;
    let frame_len = spec.len.unwrap_or(headers_len);
    // The IPv4 total length counts the IP header, the IPv6 payload length does not.
    let max_segment_len = match addrs {
        Addrs::V4(..) => usize::from(u16::MAX) - IPV4_HEADER_LEN,
        Addrs::V6(..) => usize::from(u16::MAX),
    };
    let payload_len = frame_len
        .saturating_sub(headers_len)
        .min(max_segment_len - l4_header_len);
    let segment_len = l4_header_len + payload_len;

    let mut frame = Vec::with_capacity(frame_len.max(headers_len));
    frame.extend_from_slice(&spec.eth_dst);
    frame.extend_from_slice(&spec.eth_src);
    let ethertype = match addrs {
        Addrs::V4(..) => ETHERTYPE_IPV4,
        Addrs::V6(..) => ETHERTYPE_IPV6,
    };
    frame.extend_from_slice(&ethertype.to_be_bytes());

    let proto = spec.proto.number();
    let pseudo_sum = match addrs {
        Addrs::V4(src, dst) => {
            let header = ipv4_header(spec, src, dst, segment_len);
            frame.extend_from_slice(&header);
            ipv4_pseudo_header_sum(src, dst, proto, segment_len)
        }
        Addrs::V6(src, dst) => {
            frame.extend_from_slice(&ipv6_header(spec, src, dst, segment_len));
            ipv6_pseudo_header_sum(src, dst, proto, segment_len)
        }
    };

    let l4_start = frame.len();
    match spec.proto {
        Proto::Tcp => {
            let ack = if spec.tcp_flags & tcp_flag::ACK != 0 {
                1u32
            } else {
                0
            };
            frame.extend_from_slice(&spec.sport.to_be_bytes());
            frame.extend_from_slice(&spec.dport.to_be_bytes());
            frame.extend_from_slice(&1u32.to_be_bytes()); // sequence number
            frame.extend_from_slice(&ack.to_be_bytes());
            frame.push(((TCP_HEADER_LEN / 4) as u8) << 4); // data offset
            frame.push(spec.tcp_flags);
            frame.extend_from_slice(&u16::MAX.to_be_bytes()); // window
            frame.extend_from_slice(&[0, 0]); // checksum, below
            frame.extend_from_slice(&[0, 0]); // urgent pointer
        }
        Proto::Udp => {
            frame.extend_from_slice(&spec.sport.to_be_bytes());
            frame.extend_from_slice(&spec.dport.to_be_bytes());
            frame.extend_from_slice(&length16(segment_len).to_be_bytes());
            frame.extend_from_slice(&[0, 0]); // checksum, below
        }
        Proto::Icmp | Proto::Icmpv6 => {
            let echo = if spec.proto == Proto::Icmp {
                ICMP_ECHO_REQUEST
            } else {
                ICMPV6_ECHO_REQUEST
            };
            frame.push(spec.icmp_type.unwrap_or(echo));
            frame.push(spec.icmp_code);
            frame.extend_from_slice(&[0, 0]); // checksum, below
            frame.extend_from_slice(&[0, 0, 0, 0]); // identifier and sequence 0
        }
    }
    frame.resize(l4_start + segment_len, 0);

    let initial = match spec.proto {
        // ICMP (for IPv4) has no pseudo-header.
        Proto::Icmp => 0,
        Proto::Tcp | Proto::Udp | Proto::Icmpv6 => pseudo_sum,
    };
    let checksum_at = match spec.proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        Proto::Icmp | Proto::Icmpv6 => 2,
    };
    let segment = frame.get(l4_start..).unwrap_or_default();
    let mut checksum = finish(sum(segment, initial));
    if spec.proto == Proto::Udp && checksum == 0 {
        // 0 means "no checksum" for UDP over IPv4 and is invalid over IPv6.
        checksum = 0xffff;
    }
    if let Some(slot) = frame.get_mut(l4_start + checksum_at..l4_start + checksum_at + 2) {
        slot.copy_from_slice(&checksum.to_be_bytes());
    }

    // Pads beyond the largest IP packet, or cuts a deliberately truncated frame.
    frame.resize(frame_len, 0);
    frame
}

fn ipv4_header(spec: &PacketSpec, src: Ipv4Addr, dst: Ipv4Addr, segment_len: usize) -> [u8; 20] {
    let total = length16(IPV4_HEADER_LEN + segment_len).to_be_bytes();
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    let mut h = [
        0x45, // version 4, IHL 5
        0x00, // DSCP, ECN
        total[0],
        total[1],
        0x00, // identification
        0x00,
        0x00, // flags (DF clear), fragment offset 0
        0x00,
        spec.ttl,
        spec.proto.number(),
        0x00, // header checksum, below
        0x00,
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
    ];
    let [c0, c1] = finish(sum(&h, 0)).to_be_bytes();
    h[10] = c0;
    h[11] = c1;
    h
}

fn ipv6_header(spec: &PacketSpec, src: Ipv6Addr, dst: Ipv6Addr, segment_len: usize) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60; // version 6, traffic class 0, flow label 0
    h[4..6].copy_from_slice(&length16(segment_len).to_be_bytes());
    h[6] = spec.proto.number();
    h[7] = spec.ttl;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

fn ipv4_pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment_len: usize) -> u32 {
    let len = length16(segment_len).to_be_bytes();
    let s = sum(&src.octets(), 0);
    let s = sum(&dst.octets(), s);
    sum(&[0, proto, len[0], len[1]], s)
}

fn ipv6_pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment_len: usize) -> u32 {
    let len = u32::try_from(segment_len).unwrap_or(u32::MAX).to_be_bytes();
    let s = sum(&src.octets(), 0);
    let s = sum(&dst.octets(), s);
    let s = sum(&len, s);
    sum(&[0, 0, 0, proto], s)
}

/// A length for a 16-bit field; `build` keeps lengths within range beforehand.
fn length16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with zero) to
/// `acc`, folding carries so that the accumulator never overflows.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [hi, lo] = *w {
            acc += u32::from(u16::from_be_bytes([hi, lo]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The Internet checksum of a running sum: folded and complemented.
fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::extract;
    use lbp_abi::{Fields, present};

    /// The plain textbook checksum, written independently of `sum`/`finish`: sum
    /// all 16-bit words in a u64, fold, complement. Data that includes a correct
    /// checksum gives 0.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut total: u64 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = data[i] as u64;
            let lo = if i + 1 < data.len() {
                data[i + 1] as u64
            } else {
                0
            };
            total += (hi << 8) | lo;
            i += 2;
        }
        while total >> 16 != 0 {
            total = (total & 0xffff) + (total >> 16);
        }
        !(total as u16)
    }

    /// Checks every checksum of a frame `build` made (untruncated, no VLAN).
    fn assert_checksums(frame: &[u8], proto: Proto) {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[14..];
        let (segment, mut pseudo) = if ethertype == 0x0800 {
            assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum");
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let seg = &ip[20..total];
            let mut p = Vec::new();
            p.extend_from_slice(&ip[12..20]);
            p.extend_from_slice(&[0, ip[9]]);
            p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            (seg, p)
        } else {
            assert_eq!(ethertype, 0x86dd);
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let seg = &ip[40..40 + plen];
            let mut p = Vec::new();
            p.extend_from_slice(&ip[8..40]);
            p.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, ip[6]]);
            (seg, p)
        };
        if proto == Proto::Icmp {
            pseudo.clear();
        }
        pseudo.extend_from_slice(segment);
        assert_eq!(internet_checksum(&pseudo), 0, "{proto:?} checksum");
    }

    fn mapped(a: &str) -> [u8; 16] {
        a.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped().octets()
    }

    fn v6(a: &str) -> [u8; 16] {
        a.parse::<Ipv6Addr>().unwrap().octets()
    }

    fn spec(proto: Proto, src: &str, dst: &str) -> PacketSpec {
        PacketSpec::new(proto, src.parse().unwrap(), dst.parse().unwrap())
    }

    #[test]
    fn new_has_the_documented_defaults() {
        let s = spec(Proto::Tcp, "10.0.0.1", "10.0.0.2");
        assert_eq!((s.ttl, s.sport, s.dport, s.tcp_flags), (64, 0, 0, 0));
        assert_eq!((s.icmp_type, s.icmp_code, s.len), (None, 0, None));
        assert_eq!(s.eth_src, [2, 0, 0, 0, 0, 1]);
        assert_eq!(s.eth_dst, [2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn tcp_over_ipv4_round_trips() {
        let mut s = spec(Proto::Tcp, "192.0.2.1", "198.51.100.7");
        s.sport = 40000;
        s.dport = 443;
        s.tcp_flags = tcp_flag::SYN;
        s.ttl = 17;
        s.eth_src = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        s.eth_dst = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
        let frame = build(&s);
        assert_eq!(frame.len(), 54);
        assert_checksums(&frame, Proto::Tcp);
        assert_eq!(
            extract(&frame, 5),
            Fields {
                present: present::ETH | present::IP4 | present::TCP,
                pkt_len: 54,
                in_iface: 5,
                ip_len: 40,
                eth_type: 0x0800,
                sport: 40000,
                dport: 443,
                l3_offset: 14,
                l4_offset: 34,
                ip_version: 4,
                ip_proto: 6,
                ip_ttl: 17,
                tcp_flags: tcp_flag::SYN,
                icmp_type: 0,
                icmp_code: 0,
                eth_src: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
                eth_dst: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                ip_src: mapped("192.0.2.1"),
                ip_dst: mapped("198.51.100.7"),
            }
        );
        // IPv4 details: DF clear, id 0; TCP details: seq 1, ack 0, window 65535.
        assert_eq!(&frame[18..22], &[0, 0, 0, 0]);
        assert_eq!(&frame[38..46], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&frame[48..50], &[0xff, 0xff]);
    }

    #[test]
    fn udp_over_ipv6_round_trips() {
        let mut s = spec(Proto::Udp, "2001:db8::1", "2001:db8:ffff::53");
        s.sport = 5353;
        s.dport = 53;
        s.ttl = 1;
        let frame = build(&s);
        assert_eq!(frame.len(), 62);
        assert_checksums(&frame, Proto::Udp);
        assert_eq!(
            extract(&frame, 0),
            Fields {
                present: present::ETH | present::IP6 | present::UDP,
                pkt_len: 62,
                in_iface: 0,
                ip_len: 48,
                eth_type: 0x86dd,
                sport: 5353,
                dport: 53,
                l3_offset: 14,
                l4_offset: 54,
                ip_version: 6,
                ip_proto: 17,
                ip_ttl: 1,
                tcp_flags: 0,
                icmp_type: 0,
                icmp_code: 0,
                eth_src: [2, 0, 0, 0, 0, 1],
                eth_dst: [2, 0, 0, 0, 0, 2],
                ip_src: v6("2001:db8::1"),
                ip_dst: v6("2001:db8:ffff::53"),
            }
        );
    }

    #[test]
    fn every_family_and_protocol_round_trips() {
        let pairs = [("10.1.2.3", "10.3.2.1"), ("fe80::1", "2001:db8::42")];
        let protos = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Icmpv6];
        for (src, dst) in pairs {
            let is_v6 = src.contains(':');
            for proto in protos {
                let mut s = spec(proto, src, dst);
                s.sport = 1234;
                s.dport = 4321;
                s.ttl = 200;
                let frame = build(&s);
                assert_checksums(&frame, proto);
                let f = extract(&frame, 9);
                let l4_bit = match (proto, is_v6) {
                    (Proto::Tcp, _) => present::TCP,
                    (Proto::Udp, _) => present::UDP,
                    (Proto::Icmp, false) | (Proto::Icmpv6, true) => present::ICMP,
                    // The other family's ICMP is an unknown protocol to `wire`.
                    _ => 0,
                };
                let ip_bit = if is_v6 { present::IP6 } else { present::IP4 };
                assert_eq!(f.present, present::ETH | ip_bit | l4_bit, "{src} {proto:?}");
                assert_eq!(f.ip_proto, proto.number());
                assert_eq!(f.ip_ttl, 200);
                assert_eq!(f.pkt_len as usize, frame.len());
                assert_eq!(f.in_iface, 9);
                let (want_src, want_dst) = if is_v6 {
                    (v6(src), v6(dst))
                } else {
                    (mapped(src), mapped(dst))
                };
                assert_eq!((f.ip_src, f.ip_dst), (want_src, want_dst));
                let ports = if matches!(proto, Proto::Tcp | Proto::Udp) {
                    (1234, 4321)
                } else {
                    (0, 0)
                };
                assert_eq!((f.sport, f.dport), ports);
            }
        }
    }

    #[test]
    fn every_tcp_flag_combination_round_trips() {
        for flags in 0..=0x3fu8 {
            for src in ["10.0.0.1", "2001:db8::1"] {
                let dst = if src.contains(':') {
                    "2001:db8::2"
                } else {
                    "10.0.0.2"
                };
                let mut s = spec(Proto::Tcp, src, dst);
                s.tcp_flags = flags;
                let frame = build(&s);
                assert_checksums(&frame, Proto::Tcp);
                let f = extract(&frame, 0);
                assert_eq!(f.tcp_flags, flags);
                let l4 = f.l4_offset as usize;
                let ack = u32::from_be_bytes(frame[l4 + 8..l4 + 12].try_into().unwrap());
                assert_eq!(ack, u32::from(flags & tcp_flag::ACK != 0));
            }
        }
    }

    #[test]
    fn icmp_type_and_code() {
        let s = spec(Proto::Icmp, "10.0.0.1", "10.0.0.2");
        let f = extract(&build(&s), 0);
        assert_eq!((f.icmp_type, f.icmp_code), (8, 0));
        let s = spec(Proto::Icmpv6, "2001:db8::1", "2001:db8::2");
        let f = extract(&build(&s), 0);
        assert_eq!((f.icmp_type, f.icmp_code), (128, 0));

        for (proto, src, dst) in [
            (Proto::Icmp, "10.0.0.1", "10.0.0.2"),
            (Proto::Icmpv6, "2001:db8::1", "2001:db8::2"),
        ] {
            let mut s = spec(proto, src, dst);
            s.icmp_type = Some(3);
            s.icmp_code = 4;
            let frame = build(&s);
            assert_checksums(&frame, proto);
            let f = extract(&frame, 0);
            assert_eq!(f.present & present::ICMP, present::ICMP);
            assert_eq!((f.icmp_type, f.icmp_code), (3, 4));
        }
    }

    #[test]
    fn len_pads_with_payload() {
        let cases = [
            (Proto::Tcp, "10.0.0.1", "10.0.0.2", 54),
            (Proto::Udp, "10.0.0.1", "10.0.0.2", 42),
            (Proto::Icmp, "10.0.0.1", "10.0.0.2", 42),
            (Proto::Tcp, "2001:db8::1", "2001:db8::2", 74),
            (Proto::Udp, "2001:db8::1", "2001:db8::2", 62),
            (Proto::Icmpv6, "2001:db8::1", "2001:db8::2", 62),
        ];
        for (proto, src, dst, headers) in cases {
            for len in [headers, headers + 1, 60, 64, 1500, 9000] {
                if len < headers {
                    continue;
                }
                let mut s = spec(proto, src, dst);
                s.len = Some(len);
                s.tcp_flags = tcp_flag::ACK | tcp_flag::PSH;
                let frame = build(&s);
                assert_eq!(frame.len(), len);
                assert!(frame[headers..].iter().all(|&b| b == 0));
                assert_checksums(&frame, proto);
                let f = extract(&frame, 0);
                assert_eq!(f.present & present::MALFORMED, 0, "{proto:?} {len}");
                assert_eq!(f.pkt_len as usize, len);
                assert_eq!(f.ip_len as usize, len - 14, "{proto:?} {len}");
                if proto == Proto::Udp {
                    let l4 = f.l4_offset as usize;
                    let udp_len = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]);
                    assert_eq!(udp_len as usize, len - l4);
                }
            }
        }
    }

    #[test]
    fn len_beyond_the_largest_ip_packet_pads_after_it() {
        for (src, dst, ip_len) in [
            ("10.0.0.1", "10.0.0.2", 65535),
            ("2001:db8::1", "2001:db8::2", 65535 + 40),
        ] {
            let mut s = spec(Proto::Udp, src, dst);
            s.len = Some(70000);
            let frame = build(&s);
            assert_eq!(frame.len(), 70000);
            assert_checksums(&frame, Proto::Udp);
            let f = extract(&frame, 0);
            assert_eq!(f.present & present::MALFORMED, 0);
            assert_eq!(f.present & present::UDP, present::UDP);
            assert_eq!(f.ip_len, ip_len);
        }
    }

    #[test]
    fn len_below_the_headers_truncates() {
        for (proto, src, dst) in [
            (Proto::Tcp, "10.0.0.1", "10.0.0.2"),
            (Proto::Udp, "10.0.0.1", "10.0.0.2"),
            (Proto::Icmp, "10.0.0.1", "10.0.0.2"),
            (Proto::Tcp, "2001:db8::1", "2001:db8::2"),
            (Proto::Udp, "2001:db8::1", "2001:db8::2"),
            (Proto::Icmpv6, "2001:db8::1", "2001:db8::2"),
        ] {
            let full = build(&spec(proto, src, dst));
            for len in 0..full.len() {
                let mut s = spec(proto, src, dst);
                s.len = Some(len);
                let frame = build(&s);
                assert_eq!(frame, &full[..len]);
                let f = extract(&frame, 0);
                assert_ne!(f.present & present::MALFORMED, 0, "{proto:?} cut at {len}");
                assert_eq!(f.pkt_len as usize, len);
            }
        }
    }

    #[test]
    fn mixed_families_follow_the_source() {
        // IPv6 source, IPv4 destination: the destination is mapped.
        let f = extract(&build(&spec(Proto::Udp, "2001:db8::1", "10.0.0.2")), 0);
        assert_eq!(f.ip_version, 6);
        assert_eq!(f.ip_dst, mapped("10.0.0.2"));
        // IPv4 source, IPv4-mapped IPv6 destination: its IPv4 form.
        let f = extract(&build(&spec(Proto::Udp, "10.0.0.1", "::ffff:10.0.0.2")), 0);
        assert_eq!(f.ip_version, 4);
        assert_eq!(f.ip_dst, mapped("10.0.0.2"));
        // IPv4 source, other IPv6 destination: 0.0.0.0.
        let frame = build(&spec(Proto::Udp, "10.0.0.1", "2001:db8::2"));
        assert_checksums(&frame, Proto::Udp);
        let f = extract(&frame, 0);
        assert_eq!(f.ip_dst, mapped("0.0.0.0"));
    }

    #[test]
    fn checksum_helpers_agree_with_the_textbook() {
        // RFC 1071's example words, then odd lengths and carries.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data, 0)), internet_checksum(&data));
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
        for n in 0..64 {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + 200) as u8).collect();
            assert_eq!(finish(sum(&v, 0)), internet_checksum(&v), "{n} bytes");
        }
    }
}
