//! Test support for the `wire` tests: frame builders, and expected checksums
//! computed with the test oracle (`checksum_oracle`, written apart from
//! `checksum`, so that the code under test is never its own judge).

use std::net::IpAddr;

/// The folded ones' complement sum of `data` (0xffff over data holding a right
/// checksum), by the tests' oracle (`lbp_lab`'s `checksum_oracle`).
pub fn folded_sum(data: &[u8]) -> u16 {
    !lbp_lab::testing::frame::checksum_oracle(data, 0)
}

/// `true` when the IPv4 header at `l3` sums (checksum included) to 0xffff.
pub fn ipv4_header_ok(frame: &[u8], l3: usize) -> bool {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    folded_sum(&frame[l3..l3 + ihl]) == 0xffff
}

/// The IPv4 header checksum of the header at `l3`, computed from scratch.
pub fn ipv4_header_expected(frame: &[u8], l3: usize) -> u16 {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let mut h = frame[l3..l3 + ihl].to_vec();
    h[10] = 0;
    h[11] = 0;
    !folded_sum(&h)
}

/// The pseudo-header bytes for the transport segment at `l4` of the packet at
/// `l3` (the packet's own length field bounds the segment).
fn pseudo(frame: &[u8], l3: usize, l4: usize, proto: u8) -> (Vec<u8>, usize) {
    let mut p = Vec::new();
    if frame[l3] >> 4 == 4 {
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        let end = l3 + total;
        p.extend_from_slice(&frame[l3 + 12..l3 + 20]);
        p.push(0);
        p.push(proto);
        p.extend_from_slice(&((end - l4) as u16).to_be_bytes());
        (p, end)
    } else {
        let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        let end = l3 + 40 + plen;
        p.extend_from_slice(&frame[l3 + 8..l3 + 40]);
        p.extend_from_slice(&((end - l4) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        (p, end)
    }
}

/// The TCP / UDP / ICMPv6 checksum of the segment at `l4`, computed from scratch
/// (the checksum field taken as zero; a UDP result of 0 given as 0xffff). ICMP
/// over IPv4 (proto 1) has no pseudo-header.
pub fn l4_expected(frame: &[u8], l3: usize, l4: usize, proto: u8) -> u16 {
    let (mut bytes, end) = pseudo(frame, l3, l4, proto);
    if proto == 1 {
        bytes.clear();
    }
    let csum_at = match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    let mut seg = frame[l4..end].to_vec();
    seg[csum_at] = 0;
    seg[csum_at + 1] = 0;
    bytes.extend_from_slice(&seg);
    let c = !folded_sum(&bytes);
    if proto == 17 && c == 0 { 0xffff } else { c }
}

/// The checksum field of the transport header at `l4`.
pub fn l4_stored(frame: &[u8], l4: usize, proto: u8) -> u16 {
    let at = l4
        + match proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// A packet to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// An 802.1Q tag.
    pub vlan: bool,
    /// Bytes of IPv4 options (a multiple of 4) / an 8-byte hop-by-hop header in
    /// IPv6 when non-zero.
    pub ip_options: usize,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Bytes of TCP options (a multiple of 4).
    pub tcp_options: usize,
    pub payload: Vec<u8>,
    /// Leave the UDP checksum 0 (IPv4 only).
    pub udp_no_checksum: bool,
}

impl Spec {
    pub fn new(src: &str, dst: &str, proto: u8) -> Spec {
        Spec {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport: 40000,
            dport: 80,
            vlan: false,
            ip_options: 0,
            tcp_flags: 0x18,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            tcp_options: 0,
            payload: b"hello, world".to_vec(),
            udp_no_checksum: false,
        }
    }
}

/// A built frame with its offsets.
#[derive(Clone, Debug)]
pub struct Built {
    pub frame: Vec<u8>,
    pub l3: usize,
    pub l4: usize,
}

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Builds an Ethernet frame from `spec`, every checksum right (computed with the
/// independent code above).
pub fn build(spec: &Spec) -> Built {
    let v6 = matches!(spec.src, IpAddr::V6(_));
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B); // dst
    f.extend_from_slice(&MAC_A); // src
    if spec.vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    }
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let l3 = f.len();

    let mut l4h = Vec::new();
    match spec.proto {
        6 => {
            l4h.extend_from_slice(&spec.sport.to_be_bytes());
            l4h.extend_from_slice(&spec.dport.to_be_bytes());
            l4h.extend_from_slice(&spec.seq.to_be_bytes());
            l4h.extend_from_slice(&spec.ack.to_be_bytes());
            l4h.push((((20 + spec.tcp_options) / 4) as u8) << 4);
            l4h.push(spec.tcp_flags);
            l4h.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
            // options: NOPs, then a final EOL
            for i in 0..spec.tcp_options {
                l4h.push(if i + 1 == spec.tcp_options { 0 } else { 1 });
            }
        }
        17 => {
            l4h.extend_from_slice(&spec.sport.to_be_bytes());
            l4h.extend_from_slice(&spec.dport.to_be_bytes());
            l4h.extend_from_slice(&((8 + spec.payload.len()) as u16).to_be_bytes());
            l4h.extend_from_slice(&[0, 0]);
        }
        _ => {
            // ICMP echo request-like header: type, code, csum, id, seq
            l4h.extend_from_slice(&[if v6 { 128 } else { 8 }, 0, 0, 0, 0, 7, 0, 1]);
        }
    }
    let seg_len = l4h.len() + spec.payload.len();

    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ihl = 20 + spec.ip_options;
            f.push(0x40 | (ihl / 4) as u8);
            f.push(0);
            f.extend_from_slice(&((ihl + seg_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, spec.proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            for i in 0..spec.ip_options {
                f.push(if i + 1 == spec.ip_options { 0 } else { 1 });
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ext = if spec.ip_options > 0 { 8 } else { 0 };
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&((ext + seg_len) as u16).to_be_bytes());
            f.push(if ext > 0 { 0 } else { spec.proto });
            f.push(64);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            if ext > 0 {
                // hop-by-hop with PadN
                f.extend_from_slice(&[spec.proto, 0, 1, 4, 0, 0, 0, 0]);
            }
        }
        _ => panic!("mixed families in a test spec"),
    }
    let l4 = f.len();
    f.extend_from_slice(&l4h);
    f.extend_from_slice(&spec.payload);
    if !v6 {
        let c = ipv4_header_expected(&f, l3);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if !(spec.proto == 17 && spec.udp_no_checksum && !v6) {
        let c = l4_expected(&f, l3, l4, spec.proto);
        let at = l4
            + match spec.proto {
                6 => 16,
                17 => 6,
                _ => 2,
            };
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    Built { frame: f, l3, l4 }
}

/// Asserts that the IP header checksum (IPv4) and the transport checksum of the
/// built packet equal an independent computation from scratch.
pub fn assert_checksums(frame: &[u8], l3: usize, l4: usize, proto: u8) {
    if frame[l3] >> 4 == 4 {
        assert!(ipv4_header_ok(frame, l3), "IPv4 header checksum");
        assert_eq!(
            u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]),
            ipv4_header_expected(frame, l3)
        );
    }
    if l4 != 0 {
        assert_eq!(
            l4_stored(frame, l4, proto),
            l4_expected(frame, l3, l4, proto),
            "transport checksum"
        );
    }
}
