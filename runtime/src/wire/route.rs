//! The rewrites of a routed (or direct-server-return) packet: Ethernet source and
//! destination, and the IPv4 TTL / IPv6 hop limit, decremented with the IPv4
//! header checksum updated incrementally (RFC 1624). Route lookup and neighbour
//! resolution are elsewhere (the policy, `neigh`).

use super::checksum::update16;
use super::field::{eth, ipv4, ipv6};
use super::{IpHeader, put_array, put_u8, put_u16, u8_at, u16_at};

/// Writes the Ethernet source and destination addresses. False (nothing written)
/// when the frame is shorter than an Ethernet header.
pub fn set_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) -> bool {
    if frame.len() < eth::HEADER_LEN {
        return false;
    }
    put_array(frame, eth::DST, &dst).is_some() && put_array(frame, eth::SRC, &src).is_some()
}

/// Decrements the TTL (IPv4, header checksum updated) or hop limit (IPv6) of the
/// IP header at `l3_off`. False, with nothing written, when it would reach 0 (the
/// packet must not be forwarded; an ICMP time-exceeded is the caller's choice), or
/// when there is no IPv4 / IPv6 header there.
pub fn decrement_ttl(frame: &mut [u8], l3_off: usize) -> bool {
    decrement(frame, l3_off).is_some()
}

/// [`decrement_ttl`] of a packet whose header is already checked.
pub(super) fn decrement_ip(frame: &mut [u8], ip: &IpHeader) -> Option<()> {
    decrement(frame, ip.l3)
}

fn decrement(frame: &mut [u8], l3: usize) -> Option<()> {
    if l3 > frame.len() {
        return None;
    }
    match u8_at(frame, l3)? >> 4 {
        4 => {
            let ihl = usize::from(u8_at(frame, l3)? & 0x0f) * 4;
            if ihl < ipv4::MIN_HEADER_LEN || l3 + ihl > frame.len() {
                return None;
            }
            let ttl = u8_at(frame, l3 + ipv4::TTL)?;
            if ttl <= 1 {
                return None;
            }
            // TTL is the high byte of the word it shares with the protocol.
            let old = u16_at(frame, l3 + ipv4::TTL)?;
            let new = old - 0x0100;
            let c = l3 + ipv4::CHECKSUM;
            let csum = update16(u16_at(frame, c)?, old, new);
            put_u16(frame, l3 + ipv4::TTL, new)?;
            put_u16(frame, c, csum)
        }
        6 => {
            if l3 + ipv6::HEADER_LEN > frame.len() {
                return None;
            }
            let hop = u8_at(frame, l3 + ipv6::HOP_LIMIT)?;
            if hop <= 1 {
                return None;
            }
            put_u8(frame, l3 + ipv6::HOP_LIMIT, hop - 1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{Spec, assert_checksums, build};

    #[test]
    fn macs() {
        let b = build(&Spec::new("198.18.0.1", "198.18.1.1", 6));
        let mut f = b.frame.clone();
        assert!(set_macs(&mut f, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]));
        assert_eq!(&f[0..12], &[7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6]);
        assert_eq!(&f[12..], &b.frame[12..]);
        let mut short = [0u8; 13];
        assert!(!set_macs(&mut short, [1; 6], [2; 6]));
        assert_eq!(short, [0; 13]);
    }

    #[test]
    fn ttl_v4_all_values() {
        for opts in [0, 8] {
            let mut spec = Spec::new("198.18.0.1", "198.18.1.1", 17);
            spec.ip_options = opts;
            spec.vlan = opts > 0;
            let b = build(&spec);
            for ttl in 0..=255u8 {
                let mut f = b.frame.clone();
                f[b.l3 + 8] = ttl;
                let c = crate::wire::testutil::ipv4_header_expected(&f, b.l3);
                f[b.l3 + 10..b.l3 + 12].copy_from_slice(&c.to_be_bytes());
                let before = f.clone();
                let ok = decrement_ttl(&mut f, b.l3);
                assert_eq!(ok, ttl > 1, "ttl {ttl}");
                if ok {
                    assert_eq!(f[b.l3 + 8], ttl - 1);
                    assert_checksums(&f, b.l3, b.l4, 17);
                } else {
                    assert_eq!(f, before);
                }
            }
        }
    }

    #[test]
    fn hop_limit_v6() {
        let b = build(&Spec::new("2001:db8::1", "2001:db8:1::1", 6));
        let mut f = b.frame.clone();
        assert!(decrement_ttl(&mut f, b.l3));
        assert_eq!(f[b.l3 + 7], 63);
        assert_checksums(&f, b.l3, b.l4, 6);
        f[b.l3 + 7] = 1;
        let before = f.clone();
        assert!(!decrement_ttl(&mut f, b.l3));
        assert_eq!(f, before);
    }

    #[test]
    fn truncations_never_panic() {
        for spec in [
            Spec::new("198.18.0.1", "198.18.1.1", 6),
            Spec::new("2001:db8::1", "2001:db8:1::1", 17),
        ] {
            let b = build(&spec);
            for n in 0..=b.frame.len() {
                let mut f = b.frame[..n].to_vec();
                let ok = decrement_ttl(&mut f, b.l3);
                // The fixed header must be whole; the payload need not be.
                let need = b.l3 + if b.frame[b.l3] >> 4 == 4 { 20 } else { 40 };
                assert_eq!(ok, n >= need, "cut at {n}");
                let _ = set_macs(&mut f, [0; 6], [0; 6]);
                let _ = decrement_ttl(&mut f, usize::MAX);
            }
        }
    }
}
