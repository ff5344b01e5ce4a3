//! `echo`: the UDP echo service (RFC 862) on the switching core. A datagram to
//! one of the appliance's addresses or virtual IPs is sent back to its sender
//! with the same data, turned around in its own frame: addresses and ports
//! swapped, a fresh TTL (hop limit). Swapping leaves the UDP checksum right
//! (the pseudo-header's sum does not depend on the order of the addresses), so
//! only the IPv4 header checksum is computed anew.
//!
//! Freed unanswered: anything but a whole unfragmented UDP datagram without
//! IPv6 extension headers; a wrong UDP checksum (or none over IPv6); a
//! destination that is not the appliance's; a source that is not one host; a
//! source port 0 or 7 (another echo service: two echo services answering each
//! other would loop).

use lbp_abi::Fields;

use super::{App, Ctx, Frame, Layout, pseudo, reply_or_free, turn_ip_around};
use crate::wire::checksum::{fold, sum};

const PROTO_UDP: u8 = 17;
/// The echo service's port.
pub const ECHO_PORT: u16 = 7;

/// The UDP echo application.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl App for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn frame(&mut self, frame: Frame, f: &Fields, ctx: &mut Ctx<'_>) {
        reply_or_free(ctx, frame, f, answer);
    }
}

/// Turn the datagram in `frame` into its echo; false (the frame untouched)
/// when it is not to be answered.
fn answer(ctx: &mut Ctx<'_>, frame: &mut Frame, l: &Layout) -> bool {
    let p = ctx.packet(frame);
    if l.proto != PROTO_UDP || l.end - l.l4 < 8 {
        return false;
    }
    let u = &p[l.l4..l.end];
    let sport = u16::from_be_bytes([u[0], u[1]]);
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    let stored = u16::from_be_bytes([u[6], u[7]]);
    if ulen != u.len() || sport == 0 || sport == ECHO_PORT {
        return false;
    }
    // A checksum of 0 is "none" over IPv4 (and then echoed as none); IPv6
    // requires one (RFC 8200 8.1).
    if (stored != 0 || l.src.is_ipv6()) && fold(sum(pseudo(l), u)) != 0xffff {
        return false;
    }
    if !ctx.is_ours(l.dst) || !ctx.is_unicast_host(l.src) {
        return false;
    }
    let end = l.end;
    let p = ctx.packet_mut(frame);
    turn_ip_around(p, l);
    let (s, d) = p[l.l4..l.l4 + 4].split_at_mut(2);
    s.swap_with_slice(d);
    frame.set_len(end);
    true
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Bench, udp};
    use crate::wire::testutil::assert_checksums;

    #[test]
    fn echoes_udp_over_both_families() {
        for (client, vip) in [
            ("198.18.1.5", "198.18.0.10"),
            ("2001:db8:1::5", "2001:db8::10"),
            ("198.18.1.5", "198.18.0.1"),
        ] {
            let mut b = Bench::new();
            let q = udp(client, vip, 40000, 7, b"ping", false);
            let out = b.run(0, &q).expect("an answer");
            let a = super::super::tests::view(&out.1);
            assert_eq!(out.0, 0, "back out of the receiving interface");
            assert_eq!(
                (a.src, a.dst),
                (vip.parse().unwrap(), client.parse().unwrap())
            );
            assert_eq!((a.sport, a.dport), (7, 40000));
            assert_eq!(&out.1[out.1.len() - 4..], b"ping");
            assert_eq!(&out.1[0..6], &super::super::tests::CLIENT_MAC);
            assert_eq!(&out.1[6..12], &super::super::tests::IFACE_MAC);
            assert_checksums(&out.1, a.l3, a.l4, 17);
            assert_eq!(a.ttl, 64);
            b.assert_books();
        }
    }

    #[test]
    fn an_ipv4_datagram_without_checksum_is_echoed_without() {
        let mut b = Bench::new();
        let q = udp("198.18.1.5", "198.18.0.10", 40000, 7, b"x", true);
        let out = b.run(0, &q).expect("an answer");
        let a = super::super::tests::view(&out.1);
        assert_eq!(&out.1[a.l4 + 6..a.l4 + 8], &[0, 0]);
        assert_checksums(&out.1[..a.l4], a.l3, 0, 17);
    }

    #[test]
    fn refuses_what_it_must_not_answer() {
        let mut b = Bench::new();
        // Bad checksum.
        let mut q = udp("198.18.1.5", "198.18.0.10", 40000, 7, b"ping", false);
        let n = q.len();
        q[n - 1] ^= 1;
        assert!(b.run(0, &q).is_none());
        // From another echo service, from port 0.
        for sport in [0, 7] {
            let q = udp("198.18.1.5", "198.18.0.10", sport, 7, b"ping", false);
            assert!(b.run(0, &q).is_none());
        }
        // To an address that is not the appliance's; from a broadcast source.
        let q = udp("198.18.1.5", "198.18.0.99", 40000, 7, b"ping", false);
        assert!(b.run(0, &q).is_none());
        let q = udp("255.255.255.255", "198.18.0.10", 40000, 7, b"ping", false);
        assert!(b.run(0, &q).is_none());
        // IPv6 without a checksum.
        let mut q = udp("2001:db8:1::5", "2001:db8::10", 40000, 7, b"ping", false);
        let l4 = 14 + 40;
        q[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        assert!(b.run(0, &q).is_none());
        b.assert_books();
    }
}
