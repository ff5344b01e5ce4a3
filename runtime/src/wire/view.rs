//! [`Packet`]: a frame's IP packet checked once, then acted on without parsing it
//! again (the way smoltcp's `Packet::new_checked` wraps a buffer).
//!
//! A switching core has already parsed every frame it holds: `lbp_abi::wire::
//! extract` wrote the offsets, lengths and protocol into `Fields`. `Packet::new`
//! takes those and checks them against the frame once (the version nibble, the
//! header length, the packet within the frame); for TCP, UDP and ICMP the
//! transport offset is extract's, so IPv6 extension headers are not walked a
//! second time. What the fields do not say (the upper-layer offset of another
//! protocol over IPv6, or of a later fragment) comes from the same parse the
//! offset-taking functions use. The result is the header [`parse_ip`] would
//! give, which a test holds for every frame extract accepts.
//!
//! The rewrites then take that header instead of `(l3_off, l4_off)`: NAT
//! ([`Packet::rewrite`]), the TTL ([`Packet::decrement_ttl`]), the ICMP error
//! about a connection and its translation ([`Packet::icmp_error`],
//! [`Packet::icmp_error_rewrite`]), and the answers built in place
//! ([`Packet::reset`], [`Packet::time_exceeded`]). Each still refuses what its
//! module refuses, with the frame untouched; wrong fields give a refusal, never
//! a write outside the packet.

use std::net::IpAddr;

use lbp_abi::{Fields, present};

use super::field::ipv4;
use super::icmp::{self, IcmpError};
use super::nat::{self, Side};
use super::{IpHeader, parse_ip, reset, route, time_exceeded, u8_at};

/// An IP packet in a frame buffer, checked: see the module documentation.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The frame's buffer; the frame is its first `len` bytes (an answer built
    /// in place may use more).
    buf: &'a mut [u8],
    len: usize,
    ip: IpHeader,
}

impl<'a> Packet<'a> {
    /// The packet `f` describes (extract's fields of `buf[..len]`). `None` when
    /// `f` says malformed or no IP, or does not match the frame.
    pub fn new(buf: &'a mut [u8], len: usize, f: &Fields) -> Option<Packet<'a>> {
        let frame = buf.get(..len)?;
        let ip = from_fields(frame, f)?;
        Some(Packet { buf, len, ip })
    }

    /// The packet whose IP header is at `l3` in `buf[..len]`, parsed (for
    /// frames without extract's fields).
    pub fn parse(buf: &'a mut [u8], len: usize, l3: usize) -> Option<Packet<'a>> {
        let ip = parse_ip(buf.get(..len)?, l3)?;
        Some(Packet { buf, len, ip })
    }

    /// 4 or 6.
    pub fn version(&self) -> u8 {
        self.ip.version
    }

    fn frame(&self) -> &[u8] {
        // `new` and `parse` checked `len <= buf.len()`.
        &self.buf[..self.len]
    }

    fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The transport offset the offset-taking functions expect: the upper
    /// layer's, or 0 in a later fragment.
    fn l4_off(&self) -> usize {
        self.ip.l4.unwrap_or(0)
    }

    /// NAT: the address (and, for TCP and UDP, the port) on `side` becomes
    /// `addr` / `port`, checksums updated ([`nat`]). False, frame untouched,
    /// when `addr` is of the other family or the transport header is not
    /// whole.
    pub fn rewrite(&mut self, side: Side, addr: IpAddr, port: u16) -> bool {
        let (ip, l4) = (self.ip, self.l4_off());
        nat::rewrite_ip(self.frame_mut(), &ip, l4, side, addr, port)
    }

    /// Decrement the TTL or hop limit ([`route`]); false, frame untouched, when
    /// it would reach 0.
    pub fn decrement_ttl(&mut self) -> bool {
        let ip = self.ip;
        route::decrement_ip(self.frame_mut(), &ip).is_some()
    }

    /// The ICMP error this packet is and the connection it is about
    /// ([`icmp::parse_icmp_error`]).
    pub fn icmp_error(&self) -> Option<IcmpError> {
        icmp::parse_with(self.frame(), &self.ip, self.l4_off()).map(|(e, _)| e)
    }

    /// Translate the ICMP error this packet is ([`icmp::icmp_error_rewrite`]).
    pub fn icmp_error_rewrite(
        &mut self,
        outer: Option<(Side, IpAddr)>,
        inner_side: Side,
        inner_addr: IpAddr,
        inner_port: u16,
    ) -> bool {
        let (ip, l4) = (self.ip, self.l4_off());
        icmp::rewrite_ip(
            self.frame_mut(),
            &ip,
            l4,
            outer,
            inner_side,
            inner_addr,
            inner_port,
        )
        .is_some()
    }

    /// The TCP reset that answers this segment, built in place
    /// ([`reset::reset_in_place`]): its frame length, or `None` with the frame
    /// untouched.
    pub fn reset(self) -> Option<usize> {
        let l4 = self.l4_off();
        reset::reset_ip(self.buf.get_mut(..self.len)?, &self.ip, l4)
    }

    /// The time exceeded that answers this packet from `ours`, built in place
    /// ([`time_exceeded::time_exceeded_in_place`]; it may use the buffer beyond
    /// the frame): its frame length, or `None` with the frame untouched.
    pub fn time_exceeded(self, ours: IpAddr) -> Option<usize> {
        time_exceeded::time_exceeded_ip(self.buf, self.len, &self.ip, ours)
    }
}

/// The header `parse_ip` would give for the frame, from extract's fields:
/// checked against the frame, not parsed again where the fields say enough.
fn from_fields(frame: &[u8], f: &Fields) -> Option<IpHeader> {
    if f.present & present::MALFORMED != 0 || f.present & (present::IP4 | present::IP6) == 0 {
        return None;
    }
    let l3 = usize::from(f.l3_offset);
    let version = u8_at(frame, l3)? >> 4;
    let end = l3.checked_add(usize::try_from(f.ip_len).ok()?)?;
    if version != f.ip_version || end > frame.len() {
        return None;
    }
    let header = match version {
        4 => usize::from(u8_at(frame, l3)? & 0x0f) * 4,
        6 => super::field::ipv6::HEADER_LEN,
        _ => return None,
    };
    if header < ipv4::MIN_HEADER_LEN || l3 + header > end {
        return None;
    }
    let l4 = usize::from(f.l4_offset);
    let has_l4 = f.present & (present::TCP | present::UDP | present::ICMP) != 0;
    if has_l4 && l4 >= l3 + header && l4 <= end {
        return Some(IpHeader {
            version,
            l3,
            end,
            proto: f.ip_proto,
            l4: Some(l4),
            fragment: f.present & present::FRAG != 0,
        });
    }
    // Another protocol, or a later fragment: what the fields do not say.
    parse_ip(frame, l3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{Spec, build};

    /// Sample frames of every shape the rewrites meet, as the mutation tests
    /// of the wire module build them.
    fn samples() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for (a, b) in [("198.18.0.1", "198.19.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let icmp = if a.contains(':') { 58 } else { 1 };
            for proto in [6, 17, icmp, 47] {
                for (vlan, opts) in [(false, 0), (true, 8)] {
                    let mut s = Spec::new(a, b, proto);
                    s.vlan = vlan;
                    s.ip_options = opts;
                    s.payload = b"xyz".to_vec();
                    v.push(build(&s).frame);
                }
            }
        }
        v
    }

    /// For every frame extract takes as IP (samples, each byte set to hostile
    /// values, every length), the header from the fields is the header
    /// `parse_ip` finds.
    #[test]
    fn fields_give_the_parsed_header() {
        let mut compared = 0;
        for mut frame in samples() {
            for i in 0..frame.len() {
                let saved = frame[i];
                for value in [
                    saved, 0, 1, 0x05, 0x0f, 0x11, 0x2c, 0x3a, 0x45, 0x60, 0x80, 0xff,
                ] {
                    frame[i] = value;
                    for n in [i, i + 1, frame.len()] {
                        let cut = &frame[..n];
                        let f = lbp_abi::wire::extract(cut, 0);
                        let ours = from_fields(cut, &f);
                        if f.present & present::MALFORMED != 0
                            || f.present & (present::IP4 | present::IP6) == 0
                        {
                            assert_eq!(ours, None);
                            continue;
                        }
                        let parsed = parse_ip(cut, usize::from(f.l3_offset));
                        assert_eq!(ours, parsed, "frame {cut:02x?}");
                        compared += 1;
                    }
                }
                frame[i] = saved;
            }
        }
        assert!(compared > 5_000, "{compared} frames compared");
    }

    /// Each operation on the view does what the offset-taking function does
    /// on the same frame: the same answer and the same bytes.
    #[test]
    fn operations_equal_the_offset_functions() {
        use crate::wire::{
            decrement_ttl, icmp_error_rewrite, parse_icmp_error, reset_in_place, rewrite,
            time_exceeded_in_place,
        };
        let v4: IpAddr = "198.18.9.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        let mut checked = 0;
        for frame in samples() {
            let f = lbp_abi::wire::extract(&frame, 0);
            let (l3, l4, n) = (
                usize::from(f.l3_offset),
                usize::from(f.l4_offset),
                frame.len(),
            );
            let ours = if f.ip_version == 4 { v4 } else { v6 };
            for addr in [v4, v6] {
                for side in [Side::Src, Side::Dst] {
                    let (mut a, mut b) = (frame.clone(), frame.clone());
                    let via_view = Packet::new(&mut a, n, &f).unwrap().rewrite(side, addr, 7);
                    assert_eq!(via_view, rewrite(&mut b, l3, l4, side, addr, 7));
                    assert_eq!(a, b);
                    let (mut a, mut b) = (frame.clone(), frame.clone());
                    let outer = Some((side, addr));
                    let via_view = Packet::new(&mut a, n, &f)
                        .unwrap()
                        .icmp_error_rewrite(outer, side, addr, 7);
                    assert_eq!(
                        via_view,
                        icmp_error_rewrite(&mut b, l3, l4, outer, side, addr, 7)
                    );
                    assert_eq!(a, b);
                }
            }
            let (mut a, mut b) = (frame.clone(), frame.clone());
            assert_eq!(
                Packet::new(&mut a, n, &f).unwrap().decrement_ttl(),
                decrement_ttl(&mut b, l3)
            );
            assert_eq!(a, b);
            let mut a = frame.clone();
            assert_eq!(
                Packet::new(&mut a, n, &f).unwrap().icmp_error(),
                parse_icmp_error(&frame, l3, l4)
            );
            let (mut a, mut b) = (frame.clone(), frame.clone());
            assert_eq!(
                Packet::new(&mut a, n, &f).unwrap().reset(),
                reset_in_place(&mut b, n, l3, l4)
            );
            assert_eq!(a, b);
            let (mut a, mut b) = (frame.clone(), frame.clone());
            a.resize(2048, 0);
            b.resize(2048, 0);
            let via_view = Packet::new(&mut a, n, &f).unwrap().time_exceeded(ours);
            assert_eq!(via_view, time_exceeded_in_place(&mut b, n, l3, ours));
            assert_eq!(a, b);
            checked += 1;
        }
        assert_eq!(checked, 16);
    }

    /// Fields that do not match the frame give no packet, not a wrong one.
    #[test]
    fn fields_of_another_frame_are_refused() {
        let v4 = build(&Spec::new("198.18.0.1", "198.19.0.2", 6)).frame;
        let v6 = build(&Spec::new("2001:db8::1", "2001:db8::2", 6)).frame;
        let f4 = lbp_abi::wire::extract(&v4, 0);
        let mut b = v6.clone();
        assert!(Packet::new(&mut b, v6.len(), &f4).is_none(), "version");
        let mut b = v4.clone();
        assert!(
            Packet::new(&mut b, 30, &f4).is_none(),
            "packet beyond the frame"
        );
        assert!(
            Packet::new(&mut b, v4.len() + 1, &f4).is_none(),
            "frame beyond the buffer"
        );
        let mut bad = f4;
        bad.l3_offset = u16::MAX;
        assert!(Packet::new(&mut b, v4.len(), &bad).is_none(), "offset");
        let mut bad = f4;
        bad.ip_len = u32::MAX;
        assert!(Packet::new(&mut b, v4.len(), &bad).is_none(), "length");
        // A transport offset inside the IP header is not taken: parsed instead.
        let mut bad = f4;
        bad.l4_offset = 16;
        let p = Packet::new(&mut b, v4.len(), &bad).unwrap();
        assert_eq!(p.ip.l4, Some(34));
    }
}
