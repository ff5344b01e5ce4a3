//! ARP for IPv4 over Ethernet (RFC 826): parse a request or reply, turn a request
//! for one of our addresses into its reply in place, build a broadcast request.
//!
//! Only hardware type 1 (Ethernet) with protocol type 0x0800, lengths 6 and 4, is
//! accepted. Which addresses are ours, and what to learn from a packet, is the
//! neighbour table's business (`neigh`), not this module's.

use std::net::Ipv4Addr;

use super::field::eth;
use super::{array_at, put_array, put_u16, u8_at, u16_at};

/// ARP packet layout, from the start of the ARP header.
mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const LEN: usize = 28;
}

/// `op` of a request.
pub const OP_REQUEST: u16 = 1;
/// `op` of a reply.
pub const OP_REPLY: u16 = 2;

/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Length of a frame [`build_request`] writes (Ethernet header and ARP packet, no
/// padding: the transmitting device pads to the minimum frame).
pub const REQUEST_LEN: usize = eth::HEADER_LEN + field::LEN;

/// An ARP packet's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// [`OP_REQUEST`], [`OP_REPLY`] or another value.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

/// Parses the ARP packet at `l3_off` (after the Ethernet header and any VLAN
/// tags). `None` when it is not Ethernet/IPv4 ARP or is cut short.
#[must_use]
pub fn parse(frame: &[u8], l3_off: usize) -> Option<Arp> {
    if l3_off > frame.len() || l3_off + field::LEN > frame.len() {
        return None;
    }
    let a = l3_off;
    if u16_at(frame, a + field::HTYPE)? != 1
        || u16_at(frame, a + field::PTYPE)? != eth::TYPE_IPV4
        || u8_at(frame, a + field::HLEN)? != 6
        || u8_at(frame, a + field::PLEN)? != 4
    {
        return None;
    }
    Some(Arp {
        op: u16_at(frame, a + field::OP)?,
        sender_mac: array_at(frame, a + field::SHA)?,
        sender_ip: Ipv4Addr::from(array_at::<4>(frame, a + field::SPA)?),
        target_mac: array_at(frame, a + field::THA)?,
        target_ip: Ipv4Addr::from(array_at::<4>(frame, a + field::TPA)?),
    })
}

/// Turns the ARP request at `l3_off` for `our_ip` into the reply that says
/// `our_ip` is at `our_mac`, in place: Ethernet to the requester from `our_mac`
/// (VLAN tags kept), op 2, sender and target swapped. The frame keeps its length.
/// False, with the frame untouched, when it is not a request for `our_ip`.
pub fn reply_in_place(frame: &mut [u8], l3_off: usize, our_mac: [u8; 6], our_ip: Ipv4Addr) -> bool {
    reply(frame, l3_off, our_mac, our_ip).is_some()
}

fn reply(frame: &mut [u8], l3_off: usize, our_mac: [u8; 6], our_ip: Ipv4Addr) -> Option<()> {
    let req = parse(frame, l3_off)?;
    if req.op != OP_REQUEST || req.target_ip != our_ip || l3_off < eth::HEADER_LEN {
        return None;
    }
    let a = l3_off;
    put_array(frame, eth::DST, &req.sender_mac)?;
    put_array(frame, eth::SRC, &our_mac)?;
    put_u16(frame, a + field::OP, OP_REPLY)?;
    put_array(frame, a + field::SHA, &our_mac)?;
    put_array(frame, a + field::SPA, &our_ip.octets())?;
    put_array(frame, a + field::THA, &req.sender_mac)?;
    put_array(frame, a + field::TPA, &req.sender_ip.octets())
}

/// Writes into `buf` a broadcast request asking who has `target`, from
/// `our_mac` / `our_ip`; returns its length ([`REQUEST_LEN`]), or `None` when `buf`
/// is too short (nothing written).
pub fn build_request(
    buf: &mut [u8],
    our_mac: [u8; 6],
    our_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Option<usize> {
    let buf = buf.get_mut(..REQUEST_LEN)?;
    put_array(buf, eth::DST, &BROADCAST)?;
    put_array(buf, eth::SRC, &our_mac)?;
    put_u16(buf, eth::ETHERTYPE, eth::TYPE_ARP)?;
    let a = eth::HEADER_LEN;
    put_array(buf, a + field::HTYPE, &[0, 1, 0x08, 0x00, 6, 4])?;
    put_u16(buf, a + field::OP, OP_REQUEST)?;
    put_array(buf, a + field::SHA, &our_mac)?;
    put_array(buf, a + field::SPA, &our_ip.octets())?;
    put_array(buf, a + field::THA, &[0; 6])?;
    put_array(buf, a + field::TPA, &target.octets())?;
    Some(REQUEST_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

    /// A request from 198.18.0.1 (PEER_MAC) for 198.18.0.254, as bytes, with an
    /// optional VLAN tag and Ethernet padding to 60 bytes.
    fn request(vlan: bool) -> (Vec<u8>, usize) {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x06]);
        let l3 = f.len();
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[198, 18, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[198, 18, 0, 254]);
        f.resize(60.max(f.len()), 0);
        (f, l3)
    }

    #[test]
    fn parse_request() {
        let (f, l3) = request(false);
        let a = parse(&f, l3).unwrap();
        assert_eq!(
            a,
            Arp {
                op: OP_REQUEST,
                sender_mac: PEER_MAC,
                sender_ip: Ipv4Addr::new(198, 18, 0, 1),
                target_mac: [0; 6],
                target_ip: Ipv4Addr::new(198, 18, 0, 254),
            }
        );
        // Not Ethernet / IPv4.
        for (at, v) in [(0, 6), (3, 0xdd), (4, 8), (5, 16)] {
            let mut g = f.clone();
            g[l3 + at] = v;
            assert_eq!(parse(&g, l3), None);
        }
    }

    #[test]
    fn request_to_reply() {
        for vlan in [false, true] {
            let (mut f, l3) = request(vlan);
            let before = f.clone();
            let ours = Ipv4Addr::new(198, 18, 0, 254);
            assert!(!reply_in_place(
                &mut f,
                l3,
                OUR_MAC,
                Ipv4Addr::new(198, 18, 0, 253)
            ));
            assert_eq!(f, before);
            assert!(reply_in_place(&mut f, l3, OUR_MAC, ours));
            assert_eq!(f.len(), before.len());
            assert_eq!(&f[0..6], &PEER_MAC);
            assert_eq!(&f[6..12], &OUR_MAC);
            assert_eq!(&f[12..l3], &before[12..l3], "tags and EtherType kept");
            let r = parse(&f, l3).unwrap();
            assert_eq!(
                r,
                Arp {
                    op: OP_REPLY,
                    sender_mac: OUR_MAC,
                    sender_ip: ours,
                    target_mac: PEER_MAC,
                    target_ip: Ipv4Addr::new(198, 18, 0, 1),
                }
            );
            // A reply is not answered.
            let again = f.clone();
            assert!(!reply_in_place(
                &mut f,
                l3,
                OUR_MAC,
                Ipv4Addr::new(198, 18, 0, 1)
            ));
            assert_eq!(f, again);
        }
    }

    #[test]
    fn build_and_parse_request() {
        let mut buf = [0u8; 64];
        let n = build_request(
            &mut buf,
            OUR_MAC,
            Ipv4Addr::new(198, 18, 0, 254),
            Ipv4Addr::new(198, 18, 0, 7),
        )
        .unwrap();
        assert_eq!(n, 42);
        assert_eq!(
            &buf[0..14],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x99, 8, 6
            ]
        );
        let a = parse(&buf[..n], 14).unwrap();
        assert_eq!(a.op, OP_REQUEST);
        assert_eq!(a.sender_mac, OUR_MAC);
        assert_eq!(a.sender_ip, Ipv4Addr::new(198, 18, 0, 254));
        assert_eq!(a.target_ip, Ipv4Addr::new(198, 18, 0, 7));
        let mut small = [0u8; 41];
        assert_eq!(
            build_request(
                &mut small,
                OUR_MAC,
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::LOCALHOST
            ),
            None
        );
        assert_eq!(small, [0; 41]);
    }

    #[test]
    fn truncations_never_panic() {
        let (f, l3) = request(true);
        for n in 0..=f.len() {
            let mut g = f[..n].to_vec();
            assert_eq!(parse(&g, l3).is_some(), n >= l3 + 28, "cut at {n}");
            let ok = reply_in_place(&mut g, l3, OUR_MAC, Ipv4Addr::new(198, 18, 0, 254));
            assert_eq!(ok, n >= l3 + 28);
            assert_eq!(parse(&g, usize::MAX), None);
            assert!(!reply_in_place(
                &mut g,
                usize::MAX - 3,
                OUR_MAC,
                Ipv4Addr::LOCALHOST
            ));
        }
    }
}
