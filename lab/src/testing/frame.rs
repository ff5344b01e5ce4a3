//! The few frame helpers the ring tests share: the Internet checksum, MAC
//! addresses as text, and turning a UDP/IPv4 frame around. Not a packet
//! library: the runtime's `wire` module is the product's.

/// The tests' oracle of the Internet checksum: written apart from lbp's one
/// implementation (`lbp_abi::checksum`), so that the code under test is never its
/// own judge. The checksum of `data` with `sum` (a pseudo-header's sum, or 0)
/// added: the one's complement of the one's complement sum (an odd last byte is
/// the high byte of a word). Over data that holds its checksum, 0 when right.
pub fn checksum_oracle(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A MAC address as `ip` writes it (`02:00:5e:00:00:01`).
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A MAC address from its text (`02:00:5e:00:00:01`); panics on anything else.
pub fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next().unwrap_or_else(|| panic!("MAC {s:?}"));
        *b = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("MAC {s:?}"));
    }
    assert!(parts.next().is_none(), "MAC {s:?}");
    m
}

/// Turn an IPv4 frame around: swap MACs, addresses and (for UDP and TCP) ports.
/// Both checksums stay right: a one's complement sum does not depend on order.
pub fn reflect(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let (dst, src) = f[..12].split_at_mut(6);
    dst.swap_with_slice(src);
    let (s, d) = f[26..34].split_at_mut(4);
    s.swap_with_slice(d);
    if f[23] == 17 || f[23] == 6 {
        let (s, d) = f[l4..l4 + 4].split_at_mut(2);
        s.swap_with_slice(d);
    }
}

/// Write a complete UDP checksum into a UDP/IPv4 frame. A local sender on veth
/// hands the wire only a partial one (checksum offload), which XDP sees as is;
/// the kernel would finish it, but a frame sent back over AF_XDP must carry it.
pub fn set_udp_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let ulen = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
    let end = (l4 + ulen).min(f.len());
    f[l4 + 6] = 0;
    f[l4 + 7] = 0;
    let mut pseudo: u32 = 17 + ulen as u32;
    for c in f[26..34].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    let ck = match checksum_oracle(&f[l4..end], pseudo) {
        0 => 0xffff,
        c => c,
    };
    f[l4 + 6..l4 + 8].copy_from_slice(&ck.to_be_bytes());
}

/// A UDP/IPv4 frame's destination port and payload.
pub fn udp4(frame: &[u8]) -> Option<(u16, &[u8])> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    if ihl < 20 || frame.len() < l4 + 8 {
        return None;
    }
    let dport = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
    Some((dport, &frame[l4 + 8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_header_that_holds_it_is_zero() {
        // An IPv4 header with its checksum (RFC 1071's example style).
        let mut h = [
            0x45, 0, 0, 0x1c, 0, 1, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let c = checksum_oracle(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum_oracle(&h, 0), 0);
        assert_eq!(checksum_oracle(&[0xff], 0), !0xff00u16);
    }

    #[test]
    fn macs_round_trip() {
        let m = [0x02, 0x00, 0x5e, 0xe0, 0x00, 0x0a];
        assert_eq!(mac_str(m), "02:00:5e:e0:00:0a");
        assert_eq!(mac(&mac_str(m)), m);
    }

    #[test]
    fn udp_checksum_verifies_and_reflect_keeps_it() {
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&32u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&[198, 18, 0, 1]);
        f[34..36].copy_from_slice(&9001u16.to_be_bytes());
        f[36..38].copy_from_slice(&9000u16.to_be_bytes());
        f[38..40].copy_from_slice(&12u16.to_be_bytes());
        f[42..].copy_from_slice(b"ping");
        set_udp_checksum(&mut f);
        let pseudo = |f: &[u8]| {
            f[26..34]
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum::<u32>()
                + 17
                + 12
        };
        assert_eq!(checksum_oracle(&f[34..], pseudo(&f)), 0);
        assert_eq!(udp4(&f), Some((9000, &b"ping"[..])));
        reflect(&mut f);
        assert_eq!(udp4(&f), Some((9001, &b"ping"[..])));
        assert_eq!(f[26..30], [198, 18, 0, 1]);
        assert_eq!(checksum_oracle(&f[34..], pseudo(&f)), 0);
    }
}
