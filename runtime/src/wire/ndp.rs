//! IPv6 neighbour discovery (RFC 4861) on Ethernet: parse a neighbour
//! solicitation (NS) or advertisement (NA) with the checks of sections 7.1.1 and
//! 7.1.2 (hop limit 255, code 0, valid ICMPv6 checksum, target not multicast,
//! no zero-length option), turn an NS for one of our addresses into its NA in
//! place, and build an NS for a target to its solicited-node multicast address.
//!
//! Router discovery and redirects are not handled; nor is the neighbour cache
//! (`neigh` holds it).

use std::net::Ipv6Addr;

use super::checksum::{fold, pseudo_v6, sum};
use super::field::{eth, icmp, ipv6, proto};
use super::{array_at, parse_ip, put_array, put_u8, put_u16, put_u32, u8_at, u32_at};

/// NS and NA layout, from the start of the ICMPv6 header.
mod field {
    /// NA flags (R, S, O) in the 32-bit word after the checksum; reserved in NS.
    pub const FLAGS: usize = 4;
    pub const TARGET: usize = 8;
    pub const OPTIONS: usize = 24;
    /// An option: type, length in units of 8 bytes, then data.
    pub const OPT_TYPE: usize = 0;
    pub const OPT_LEN: usize = 1;
    pub const OPT_DATA: usize = 2;
}

pub const TYPE_NS: u8 = 135;
pub const TYPE_NA: u8 = 136;
/// Option types.
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;
/// NA flags.
pub const FLAG_ROUTER: u32 = 0x8000_0000;
pub const FLAG_SOLICITED: u32 = 0x4000_0000;
pub const FLAG_OVERRIDE: u32 = 0x2000_0000;

/// The hop limit every ND message is sent and received with.
pub const HOP_LIMIT: u8 = 255;
/// Length of an NS or NA with one link-layer address option.
const MSG_LEN: usize = field::OPTIONS + 8;
/// Length of the frame [`build_ns`] writes.
pub const NS_FRAME_LEN: usize = eth::HEADER_LEN + ipv6::HEADER_LEN + MSG_LEN;
/// At most this many options are looked at.
const MAX_OPTIONS: usize = 16;

/// A neighbour solicitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// The IPv6 source (unspecified `::` in duplicate address detection).
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The source link-layer address option.
    pub source_ll: Option<[u8; 6]>,
}

/// A neighbour advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The target link-layer address option.
    pub target_ll: Option<[u8; 6]>,
    pub router: bool,
    pub solicited: bool,
    pub override_: bool,
}

/// The checked ND message common to NS and NA.
struct Msg {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u32,
    /// The first link-layer option of the wanted type.
    ll: Option<[u8; 6]>,
    /// Any link-layer option of the wanted type was present.
    has_ll: bool,
}

fn parse_msg(frame: &[u8], l3: usize, l4: usize, want_type: u8, ll_type: u8) -> Option<Msg> {
    let ip = parse_ip(frame, l3)?;
    if ip.version != 6 || ip.proto != proto::ICMPV6 || ip.l4 != Some(l4) || l4 == 0 {
        return None;
    }
    if u8_at(frame, l3 + ipv6::HOP_LIMIT)? != HOP_LIMIT
        || u8_at(frame, l4 + icmp::TYPE)? != want_type
        || u8_at(frame, l4 + icmp::CODE)? != 0
        || l4 + field::OPTIONS > ip.end
    {
        return None;
    }
    let src = Ipv6Addr::from(array_at::<16>(frame, l3 + ipv6::SRC)?);
    let dst = Ipv6Addr::from(array_at::<16>(frame, l3 + ipv6::DST)?);
    let msg = frame.get(l4..ip.end)?;
    let len = u32::try_from(msg.len()).ok()?;
    if fold(sum(pseudo_v6(&src, &dst, proto::ICMPV6, len), msg)) != 0xffff {
        return None;
    }
    let target = Ipv6Addr::from(array_at::<16>(frame, l4 + field::TARGET)?);
    if target.is_multicast() {
        return None;
    }
    let mut ll = None;
    let mut has_ll = false;
    let mut at = field::OPTIONS;
    for _ in 0..MAX_OPTIONS {
        if at >= msg.len() {
            break;
        }
        let opt_len = usize::from(u8_at(msg, at + field::OPT_LEN)?) * 8;
        if opt_len == 0 || at + opt_len > msg.len() {
            return None;
        }
        if u8_at(msg, at + field::OPT_TYPE)? == ll_type {
            has_ll = true;
            if ll.is_none() && opt_len == 8 {
                ll = Some(array_at(msg, at + field::OPT_DATA)?);
            }
        }
        at += opt_len;
    }
    Some(Msg {
        src,
        dst,
        target,
        flags: u32_at(frame, l4 + field::FLAGS)?,
        ll,
        has_ll,
    })
}

/// Parses the neighbour solicitation whose IPv6 header is at `l3_off` and ICMPv6
/// header at `l4_off`. `None` when it is not a valid NS (including: from `::`
/// with a source link-layer option, or not to a solicited-node address).
#[must_use]
pub fn parse_ns(frame: &[u8], l3_off: usize, l4_off: usize) -> Option<Solicitation> {
    let m = parse_msg(frame, l3_off, l4_off, TYPE_NS, OPT_SOURCE_LL)?;
    if m.src.is_unspecified() && (m.has_ll || !is_solicited_node(&m.dst)) {
        return None;
    }
    Some(Solicitation {
        src: m.src,
        dst: m.dst,
        target: m.target,
        source_ll: m.ll,
    })
}

/// Parses a neighbour advertisement; see [`parse_ns`]. An NA to a multicast
/// address with the solicited flag is refused.
#[must_use]
pub fn parse_na(frame: &[u8], l3_off: usize, l4_off: usize) -> Option<Advertisement> {
    let m = parse_msg(frame, l3_off, l4_off, TYPE_NA, OPT_TARGET_LL)?;
    let solicited = m.flags & FLAG_SOLICITED != 0;
    if m.dst.is_multicast() && solicited {
        return None;
    }
    Some(Advertisement {
        src: m.src,
        dst: m.dst,
        target: m.target,
        target_ll: m.ll,
        router: m.flags & FLAG_ROUTER != 0,
        solicited,
        override_: m.flags & FLAG_OVERRIDE != 0,
    })
}

/// The solicited-node multicast address of `a`: ff02::1:ff00:0 with the low 24
/// bits of `a`.
#[must_use]
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

fn is_solicited_node(a: &Ipv6Addr) -> bool {
    a.octets()[..13] == solicited_node(a).octets()[..13]
}

/// The Ethernet address of IPv6 multicast address `a` (33:33 and its low 32 bits).
#[must_use]
pub fn multicast_mac(a: &Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Turns the neighbour solicitation in `frame[..len]` for `our_ip` into the
/// advertisement that answers it, in place: from `our_mac` and `our_ip`, to the
/// solicitor (its source link-layer option, else the frame's Ethernet source)
/// with the solicited and override flags, or to all nodes (ff02::1, override
/// only) when the solicitation came from `::`; hop limit 255, one target
/// link-layer option, ICMPv6 checksum computed. VLAN tags are kept; IPv6
/// extension headers are dropped. Returns the new frame length, which may exceed
/// `len` (up to `frame.len()`), or `None`, with the frame untouched, when it is
/// not a valid NS for `our_ip` or the buffer is too short.
pub fn na_from_ns_in_place(
    frame: &mut [u8],
    len: usize,
    l3_off: usize,
    l4_off: usize,
    our_mac: [u8; 6],
    our_ip: Ipv6Addr,
) -> Option<usize> {
    let ns = parse_ns(frame.get(..len)?, l3_off, l4_off)?;
    if ns.target != our_ip || l3_off < eth::HEADER_LEN {
        return None;
    }
    let (dst, dst_mac, flags) = if ns.src.is_unspecified() {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        (all, multicast_mac(&all), FLAG_OVERRIDE)
    } else {
        let mac = match ns.source_ll {
            Some(m) => m,
            None => array_at(frame, eth::SRC)?,
        };
        (ns.src, mac, FLAG_SOLICITED | FLAG_OVERRIDE)
    };
    let l4 = l3_off + ipv6::HEADER_LEN;
    let end = l4 + MSG_LEN;
    if end > frame.len() {
        return None;
    }
    put_array(frame, eth::DST, &dst_mac)?;
    put_array(frame, eth::SRC, &our_mac)?;
    write_msg(
        frame,
        l3_off,
        &our_ip,
        &dst,
        TYPE_NA,
        flags,
        &our_ip,
        OPT_TARGET_LL,
        &our_mac,
    )?;
    Some(end)
}

/// Writes into `buf` a neighbour solicitation for `target`, from `our_mac` /
/// `our_ip`, to `target`'s solicited-node multicast address (and its 33:33:ff
/// Ethernet address) with a source link-layer option. Returns its length
/// ([`NS_FRAME_LEN`]) or `None` when `buf` is too short (nothing written).
pub fn build_ns(
    buf: &mut [u8],
    our_mac: [u8; 6],
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let buf = buf.get_mut(..NS_FRAME_LEN)?;
    let dst = solicited_node(&target);
    put_array(buf, eth::DST, &multicast_mac(&dst))?;
    put_array(buf, eth::SRC, &our_mac)?;
    put_u16(buf, eth::ETHERTYPE, eth::TYPE_IPV6)?;
    write_msg(
        buf,
        eth::HEADER_LEN,
        &our_ip,
        &dst,
        TYPE_NS,
        0,
        &target,
        OPT_SOURCE_LL,
        &our_mac,
    )?;
    Some(NS_FRAME_LEN)
}

/// Writes the IPv6 header at `l3` and an NS/NA with one link-layer option after
/// it, checksum included.
#[allow(clippy::too_many_arguments)]
fn write_msg(
    frame: &mut [u8],
    l3: usize,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    msg_type: u8,
    flags: u32,
    target: &Ipv6Addr,
    opt_type: u8,
    mac: &[u8; 6],
) -> Option<()> {
    let l4 = l3 + ipv6::HEADER_LEN;
    // Check the whole range first: nothing is written if it does not fit.
    frame.get(l3..l4 + MSG_LEN)?;
    put_u32(frame, l3 + ipv6::VER_TC_FLOW, 0x6000_0000)?;
    put_u16(frame, l3 + ipv6::PAYLOAD_LEN, MSG_LEN as u16)?;
    put_u8(frame, l3 + ipv6::NEXT_HEADER, proto::ICMPV6)?;
    put_u8(frame, l3 + ipv6::HOP_LIMIT, HOP_LIMIT)?;
    put_array(frame, l3 + ipv6::SRC, &src.octets())?;
    put_array(frame, l3 + ipv6::DST, &dst.octets())?;
    put_u8(frame, l4 + icmp::TYPE, msg_type)?;
    put_u8(frame, l4 + icmp::CODE, 0)?;
    put_u16(frame, l4 + icmp::CHECKSUM, 0)?;
    put_u32(frame, l4 + field::FLAGS, flags)?;
    put_array(frame, l4 + field::TARGET, &target.octets())?;
    let opt = l4 + field::OPTIONS;
    put_u8(frame, opt + field::OPT_TYPE, opt_type)?;
    put_u8(frame, opt + field::OPT_LEN, 1)?;
    put_array(frame, opt + field::OPT_DATA, mac)?;
    let c = !fold(sum(
        pseudo_v6(src, dst, proto::ICMPV6, MSG_LEN as u32),
        frame.get(l4..l4 + MSG_LEN)?,
    ));
    put_u16(frame, l4 + icmp::CHECKSUM, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{l4_expected, l4_stored};

    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

    fn peer() -> Ipv6Addr {
        "2001:db8::11".parse().unwrap()
    }
    fn ours() -> Ipv6Addr {
        "2001:db8::ab:cdef".parse().unwrap()
    }

    /// The ICMPv6 checksum must equal an independent computation from scratch.
    fn assert_icmp6_checksum(f: &[u8], l3: usize) {
        let l4 = l3 + 40;
        assert_eq!(l4_stored(f, l4, 58), l4_expected(f, l3, l4, 58));
    }

    fn fix_checksum(f: &mut [u8], l3: usize) {
        let c = l4_expected(f, l3, l3 + 40, 58);
        f[l3 + 42..l3 + 44].copy_from_slice(&c.to_be_bytes());
    }

    /// The peer's NS for our address, as `build_ns` writes it, optionally with a
    /// VLAN tag inserted.
    fn ns(vlan: bool) -> (Vec<u8>, usize) {
        let mut f = vec![0u8; 128];
        let n = build_ns(&mut f, PEER_MAC, peer(), ours()).unwrap();
        f.truncate(n);
        if vlan {
            f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
            (f, 18)
        } else {
            (f, 14)
        }
    }

    #[test]
    fn built_ns() {
        let (f, l3) = ns(false);
        assert_eq!(f.len(), NS_FRAME_LEN);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]);
        assert_eq!(&f[6..14], &[2, 0, 0, 0, 0, 0x11, 0x86, 0xdd]);
        let want_dst: Ipv6Addr = "ff02::1:ffab:cdef".parse().unwrap();
        assert_eq!(&f[l3 + 24..l3 + 40], &want_dst.octets());
        assert_eq!(f[l3 + 7], 255);
        assert_icmp6_checksum(&f, l3);
        let s = parse_ns(&f, l3, l3 + 40).unwrap();
        assert_eq!(
            s,
            Solicitation {
                src: peer(),
                dst: want_dst,
                target: ours(),
                source_ll: Some(PEER_MAC),
            }
        );
        assert_eq!(build_ns(&mut [0u8; 85], OUR_MAC, ours(), peer()), None);
    }

    #[test]
    fn ns_to_na() {
        for vlan in [false, true] {
            let (mut f, l3) = ns(vlan);
            let len = f.len();
            let before = f.clone();
            assert_eq!(
                na_from_ns_in_place(&mut f, len, l3, l3 + 40, OUR_MAC, peer()),
                None
            );
            assert_eq!(f, before);
            let n = na_from_ns_in_place(&mut f, len, l3, l3 + 40, OUR_MAC, ours()).unwrap();
            assert_eq!(n, l3 + 72);
            f.truncate(n);
            assert_eq!(&f[0..6], &PEER_MAC);
            assert_eq!(&f[6..12], &OUR_MAC);
            assert_eq!(&f[12..l3], &before[12..l3]);
            assert_eq!(f[l3 + 7], 255);
            assert_icmp6_checksum(&f, l3);
            let a = parse_na(&f, l3, l3 + 40).unwrap();
            assert_eq!(
                a,
                Advertisement {
                    src: ours(),
                    dst: peer(),
                    target: ours(),
                    target_ll: Some(OUR_MAC),
                    router: false,
                    solicited: true,
                    override_: true,
                }
            );
            // An NA is not an NS.
            assert_eq!(parse_ns(&f, l3, l3 + 40), None);
        }
    }

    /// Duplicate address detection: from ::, no option; the NA goes to all nodes,
    /// not solicited, and is longer than the NS (the buffer has room).
    #[test]
    fn dad_ns_to_multicast_na() {
        let (mut f, l3) = ns(false);
        f[l3 + 8..l3 + 24].fill(0);
        f[l3 + 5] = 24;
        f.truncate(l3 + 64);
        fix_checksum(&mut f, l3);
        let s = parse_ns(&f, l3, l3 + 40).unwrap();
        assert!(s.src.is_unspecified() && s.source_ll.is_none());
        let len = f.len();
        assert_eq!(
            na_from_ns_in_place(&mut f, len, l3, l3 + 40, OUR_MAC, ours()),
            None,
            "no room"
        );
        f.resize(128, 0xee);
        let n = na_from_ns_in_place(&mut f, len, l3, l3 + 40, OUR_MAC, ours()).unwrap();
        f.truncate(n);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_icmp6_checksum(&f, l3);
        let a = parse_na(&f, l3, l3 + 40).unwrap();
        assert_eq!(a.dst, "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert!(!a.solicited && a.override_);

        // From :: with a source link-layer option is invalid.
        let (mut g, l3) = ns(false);
        g[l3 + 8..l3 + 24].fill(0);
        fix_checksum(&mut g, l3);
        assert_eq!(parse_ns(&g, l3, l3 + 40), None);
    }

    #[test]
    fn invalid_messages_refused() {
        let (f, l3) = ns(false);
        let l4 = l3 + 40;
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut g = f.clone();
        g[l4 + 2] ^= 1;
        cases.push(("bad checksum", g));
        let mut g = f.clone();
        g[l3 + 7] = 254;
        cases.push(("hop limit", g));
        let mut g = f.clone();
        g[l4 + 1] = 1;
        fix_checksum(&mut g, l3);
        cases.push(("code", g));
        let mut g = f.clone();
        g[l4 + 8] = 0xff;
        fix_checksum(&mut g, l3);
        cases.push(("multicast target", g));
        let mut g = f.clone();
        g[l4 + 25] = 0;
        fix_checksum(&mut g, l3);
        cases.push(("zero-length option", g));
        let mut g = f.clone();
        g[l4 + 25] = 2;
        fix_checksum(&mut g, l3);
        cases.push(("option past the end", g));
        for (what, mut g) in cases {
            assert_eq!(parse_ns(&g, l3, l4), None, "{what}");
            let len = g.len();
            let before = g.clone();
            assert_eq!(
                na_from_ns_in_place(&mut g, len, l3, l4, OUR_MAC, ours()),
                None
            );
            assert_eq!(g, before);
        }
        // Multicast NA with the solicited flag.
        let (mut f, l3) = ns(false);
        let len = f.len();
        na_from_ns_in_place(&mut f, len, l3, l3 + 40, OUR_MAC, ours()).unwrap();
        f[l3 + 24..l3 + 40].copy_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        fix_checksum(&mut f, l3);
        assert_eq!(parse_na(&f, l3, l3 + 40), None);
    }

    #[test]
    fn truncations_never_panic() {
        for vlan in [false, true] {
            let (f, l3) = ns(vlan);
            for n in 0..=f.len() {
                let full = n == f.len();
                assert_eq!(parse_ns(&f[..n], l3, l3 + 40).is_some(), full, "cut at {n}");
                let mut g = f.clone();
                let r = na_from_ns_in_place(&mut g, n, l3, l3 + 40, OUR_MAC, ours());
                assert_eq!(r.is_some(), full);
                let mut g = f[..n].to_vec();
                let _ = na_from_ns_in_place(&mut g, n, l3, l3 + 40, OUR_MAC, ours());
                let _ = na_from_ns_in_place(&mut g, usize::MAX, usize::MAX, 0, OUR_MAC, ours());
                let _ = parse_na(&g, l3, l3 + 40);
                let _ = build_ns(&mut g, OUR_MAC, ours(), peer());
            }
        }
    }
}
