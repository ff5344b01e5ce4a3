//! The Internet checksum (RFC 1071): the full computation over bytes, the IPv4 and
//! IPv6 pseudo-headers of TCP, UDP and ICMPv6, and the incremental update of
//! RFC 1624 (eqn. 3) for a changed 16-bit word, 32-bit value or 16-byte address.
//!
//! Sums are carried as `u64` partial sums (`sum`) and folded to 16 bits at the end
//! (`fold`); a checksum is the complement of the folded sum. Nothing here reads a
//! frame or knows where a checksum field is: that is the callers' business.
//!
//! The one implementation of lbp (the runtime's `wire::checksum` is this module);
//! tests check it against `checksum_oracle`s written apart from it.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds the 16-bit big-endian words of `data` to `acc`; an odd last byte is
/// padded with a zero byte on the right. Never overflows for any slice shorter
/// than 2^48 bytes.
#[must_use]
pub fn sum(acc: u64, data: &[u8]) -> u64 {
    let mut acc = acc;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [hi, lo] = w {
            acc += u64::from(u16::from_be_bytes([*hi, *lo]));
        }
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a partial sum to 16 bits with end-around carry (ones' complement
/// addition). The result is not complemented.
#[must_use]
pub fn fold(acc: u64) -> u16 {
    // Each step shrinks a value above 0xffff; five steps reach 16 bits from any
    // u64 (four are not enough for sums near u64::MAX).
    let mut s = acc;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The Internet checksum of `data` (the value to store in a checksum field that
/// was zero while summing).
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Partial sum of the IPv4 pseudo-header: source, destination, protocol and the
/// upper-layer length.
#[must_use]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u64::from(proto) + u64::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
/// destination, upper-layer length (32 bits) and next header.
#[must_use]
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, len: u32) -> u64 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(proto)
}

/// RFC 1624 eqn. 3: the checksum `hc` after a 16-bit word of the covered data
/// changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[must_use]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for a 32-bit value at an even offset (two words).
#[must_use]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    update_bytes(hc, &old.to_be_bytes(), &new.to_be_bytes())
}

/// [`update16`] for an array at an even offset of the covered data (an address:
/// 4 or 16 bytes). With an odd `N` the last byte counts as the high byte of a word,
/// which is right when the array starts at an even offset.
#[must_use]
pub fn update_bytes<const N: usize>(hc: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    // ~m summed word by word is the complement of the sum of the old words, and
    // ones' complement sums commute: add (~sum(old)) once.
    let old_sum = fold(sum(0, old));
    !fold(u64::from(!hc) + u64::from(!old_sum) + sum(0, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example of RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to
    /// ddf2 (folded).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn fold_extremes() {
        // 2^16 = 1 in ones' complement arithmetic, so u64::MAX = 2^64 - 1 is a
        // multiple of 0xffff: a non-zero zero, 0xffff.
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff_ffff_0000_ffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0), 0);
    }

    #[test]
    fn odd_length_pads_right() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(checksum(&[]), 0xffff);
    }

    /// A known IPv4 header (the checksum field holds the value a full computation
    /// gives): summing it with its checksum gives 0xffff.
    #[test]
    fn ipv4_header_verifies() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&h);
        assert_eq!(c, 0xb861); // the classic worked example
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(fold(sum(0, &h)), 0xffff);
    }

    #[test]
    fn pseudo_headers() {
        let a = Ipv4Addr::new(198, 18, 0, 1);
        let b = Ipv4Addr::new(198, 18, 0, 2);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&a.octets());
        bytes.extend_from_slice(&b.octets());
        bytes.extend_from_slice(&[0, 6, 0x01, 0x02]);
        assert_eq!(fold(pseudo_v4(a, b, 6, 0x0102)), fold(sum(0, &bytes)));

        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:ffff::2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&a.octets());
        bytes.extend_from_slice(&b.octets());
        bytes.extend_from_slice(&[0, 1, 0x02, 0x03, 0, 0, 0, 17]);
        assert_eq!(fold(pseudo_v6(&a, &b, 17, 0x1_0203)), fold(sum(0, &bytes)));
    }

    proptest! {
        /// An incremental update equals a full recomputation (both as "the sum
        /// with the checksum in it verifies").
        #[test]
        fn incremental_matches_full(
            mut data in proptest::collection::vec(any::<u8>(), 32..64),
            at in 0usize..8,
            w in any::<u16>(),
            v in any::<u32>(),
            a in any::<[u8; 16]>(),
        ) {
            let at = at * 2;
            let before = checksum(&data);

            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&w.to_be_bytes());
            let inc = update16(before, old, w);
            prop_assert_eq!(fold(sum(u64::from(inc), &data)), 0xffff);

            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            let inc2 = update32(inc, old, v);
            prop_assert_eq!(fold(sum(u64::from(inc2), &data)), 0xffff);

            let old: [u8; 16] = data[at..at + 16].try_into().unwrap();
            data[at..at + 16].copy_from_slice(&a);
            let inc3 = update_bytes(inc2, &old, &a);
            prop_assert_eq!(fold(sum(u64::from(inc3), &data)), 0xffff);
        }
    }
}
