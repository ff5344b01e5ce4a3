//! `icmp`: echo replies (ICMP type 0, ICMPv6 type 129) to echo requests (type
//! 8, ICMPv6 128, code 0) for the appliance's addresses and virtual IPs, on the
//! switching core: the request turned around in its own frame, identifier,
//! sequence number and data kept (RFC 792, RFC 4443 4.2), the ICMP checksum
//! computed anew (for ICMPv6 over the pseudo-header).
//!
//! Freed unanswered: anything but a whole unfragmented echo request of code 0
//! without IPv6 extension headers; a wrong checksum; a destination that is not
//! the appliance's; a source that is not one host.

use lbp_abi::Fields;

use super::{App, Ctx, Frame, Layout, pseudo, reply_or_free, turn_ip_around};
use crate::wire::checksum::{checksum, fold, sum};

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// The ICMP echo application.
#[derive(Clone, Copy, Debug, Default)]
pub struct Icmp;

impl App for Icmp {
    fn name(&self) -> &'static str {
        "icmp"
    }

    fn frame(&mut self, frame: Frame, f: &Fields, ctx: &mut Ctx<'_>) {
        reply_or_free(ctx, frame, f, answer);
    }
}

fn answer(ctx: &mut Ctx<'_>, frame: &mut Frame, l: &Layout) -> bool {
    let p = ctx.packet(frame);
    let v6 = l.src.is_ipv6();
    let (proto, request, reply) = if v6 {
        (PROTO_ICMPV6, 128, 129)
    } else {
        (PROTO_ICMP, 8, 0)
    };
    if l.proto != proto || l.end - l.l4 < 8 {
        return false;
    }
    let m = &p[l.l4..l.end];
    if m[0] != request || m[1] != 0 {
        return false;
    }
    let acc = if v6 { pseudo(l) } else { 0 };
    if fold(sum(acc, m)) != 0xffff {
        return false;
    }
    if !ctx.is_ours(l.dst) || !ctx.is_unicast_host(l.src) {
        return false;
    }
    let end = l.end;
    let p = ctx.packet_mut(frame);
    turn_ip_around(p, l);
    // The pseudo-header's sum does not change with the swap.
    let m = &mut p[l.l4..l.end];
    m[0] = reply;
    m[2..4].copy_from_slice(&[0, 0]);
    let c = if v6 { !fold(sum(acc, m)) } else { checksum(m) };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frame.set_len(end);
    true
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Bench, CLIENT_MAC, icmp, view};
    use crate::wire::testutil::assert_checksums;

    #[test]
    fn answers_echo_requests_over_both_families() {
        for (client, ours, proto, reply) in [
            ("198.18.1.5", "198.18.0.10", 1, 0),
            ("198.18.1.5", "198.18.0.1", 1, 0),
            ("2001:db8:1::5", "2001:db8::10", 58, 129),
            ("2001:db8:1::5", "2001:db8::1", 58, 129),
        ] {
            let mut b = Bench::new();
            let q = icmp(client, ours, None, b"abcdefgh");
            let (dev, a) = b.run(0, &q).expect("an answer");
            assert_eq!(dev, 0);
            let v = view(&a);
            assert_eq!(
                (v.src, v.dst),
                (ours.parse().unwrap(), client.parse().unwrap())
            );
            assert_eq!(a[v.l4], reply);
            // Identifier, sequence number and data kept.
            assert_eq!(&a[v.l4 + 4..], &q[v.l4 + 4..]);
            assert_eq!(&a[0..6], &CLIENT_MAC);
            assert_checksums(&a, v.l3, v.l4, proto);
            b.assert_books();
        }
    }

    #[test]
    fn refuses_what_it_must_not_answer() {
        let mut b = Bench::new();
        // Not an echo request (an echo reply; a request of code 1).
        assert!(
            b.run(0, &icmp("198.18.1.5", "198.18.0.10", Some((0, 0)), b"x"))
                .is_none()
        );
        assert!(
            b.run(0, &icmp("198.18.1.5", "198.18.0.10", Some((8, 1)), b"x"))
                .is_none()
        );
        // Bad checksum, over both families.
        for (c, o) in [
            ("198.18.1.5", "198.18.0.10"),
            ("2001:db8:1::5", "2001:db8::10"),
        ] {
            let mut q = icmp(c, o, None, b"abcd");
            let n = q.len();
            q[n - 1] ^= 0x40;
            assert!(b.run(0, &q).is_none());
        }
        // Not ours; from a multicast source.
        assert!(
            b.run(0, &icmp("198.18.1.5", "198.18.7.7", None, b"x"))
                .is_none()
        );
        assert!(
            b.run(0, &icmp("ff02::1", "2001:db8::10", None, b"x"))
                .is_none()
        );
        b.assert_books();
    }
}
