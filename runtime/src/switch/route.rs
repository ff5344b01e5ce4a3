//! Routing a frame towards its next hop: longest-prefix match over the
//! interfaces' networks and the static routes, the source address for what the
//! core originates, and the neighbour lookup (or the held frame and the ARP
//! request / neighbour solicitation) before transmit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::counters::DropReason;
use super::{Burst, Held};
use crate::config::{Interface, Route};
use crate::neigh::{NeighAddr, NeighState};
use crate::ring::Desc;
use crate::wire;

/// An address from its 16-byte `Fields` form (IPv4-mapped for version 4).
pub(super) fn ip_of(version: u8, a: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// The 16-byte form of an address (IPv4-mapped).
pub(crate) fn bytes_of(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// An address stored in the 16-byte form without its version: IPv4-mapped is
/// taken as IPv4.
pub fn ip_from_bytes(a: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Whether `a` lies in `prefix/len` (of the same family).
pub fn prefix_contains(prefix: IpAddr, len: u8, a: IpAddr) -> bool {
    match (prefix, a) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (u32::from(p) ^ u32::from(a)) & mask == 0
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            (u128::from(p) ^ u128::from(a)) & mask == 0
        }
        _ => false,
    }
}

/// The longest-prefix route for `dst` (the first of equal lengths), as the
/// compiled policy chooses, for destinations the policy did not route (back ends,
/// clients of NAT return traffic). A linear scan: route tables here are small.
pub fn route_lookup(routes: &[Route], dst: IpAddr) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, r) in routes.iter().enumerate() {
        if prefix_contains(r.prefix, r.len, dst) && best.is_none_or(|(_, l)| r.len > l) {
            best = Some((i, r.len));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether routing refuses `dst` (the compiled policy's rule, for what the core
/// routes itself: back ends, NAT return traffic, the control plane's packets).
pub(crate) fn martian(ifaces: &[Interface], dst: IpAddr) -> bool {
    let connected = ifaces.iter().flat_map(|i| i.addrs.iter().copied());
    lbp_abi::martian::martian(dst, connected).is_some()
}

/// The address of `iface` to send a request for `target` from: one whose
/// connected network holds `target`, else any of the family; for IPv6 on an
/// interface without an IPv6 address, the link-local address made from its
/// MAC (RFC 4291, modified EUI-64), as any IPv6 host solicits from.
pub(super) fn source_for(iface: &Interface, target: IpAddr) -> Option<IpAddr> {
    let same = |a: &IpAddr| a.is_ipv4() == target.is_ipv4();
    iface
        .addrs
        .iter()
        .find(|(a, l)| prefix_contains(*a, *l, target))
        .or_else(|| iface.addrs.iter().find(|(a, _)| same(a)))
        .map(|(a, _)| *a)
        .or_else(|| target.is_ipv6().then(|| IpAddr::V6(link_local(iface.mac))))
}

/// The IPv6 link-local address of an interface with MAC `m`: fe80::/64 and
/// the MAC with ff:fe in its middle and the universal/local bit inverted.
pub(super) fn link_local(m: [u8; 6]) -> Ipv6Addr {
    let w = |a: u8, b: u8| u16::from_be_bytes([a, b]);
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        w(m[0] ^ 2, m[1]),
        w(m[2], 0xff),
        w(0xfe, m[3]),
        w(m[4], m[5]),
    )
}

/// Whether `a` is on a connected network of `iface`.
pub(super) fn on_link(iface: &Interface, a: IpAddr) -> bool {
    iface.addrs.iter().any(|(p, l)| prefix_contains(*p, *l, a))
}

/// Whether `a` is reached out of interface `dev` without a gateway: its route
/// names `dev` and no `via` (a `route P dev X` puts P on X's link).
pub(super) fn routed_on_link(routes: &[Route], dev: u32, a: IpAddr) -> bool {
    route_lookup(routes, a).is_some_and(|i| routes[i].dev == dev && routes[i].via.is_none())
}

impl Burst<'_> {
    /// Send `d` out of `dev` to the next hop `nh`: MACs set, or held waiting for
    /// the neighbour (with a request sent, rate limited).
    pub(super) fn send_to(&mut self, d: Desc, nh: IpAddr, dev: u32) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(dev as usize) else {
            return self.drop_frame(d, DropReason::NoRoute);
        };
        let na = NeighAddr::from(nh);
        if let Some(n) = self.shared.neigh.lookup(&na, self.now) {
            if n.state == NeighState::Stale && self.shared.neigh.should_request(&na, self.now) {
                self.request(iface, dev, nh);
            }
            wire::set_macs(self.frames.packet_mut(d), iface.mac, n.mac);
            return self.tx(dev, d);
        }
        match self.st.pending.push(&na, Held { desc: d, dev }, self.now) {
            Ok(()) => self.st.counters.held += 1,
            Err(h) => self.drop_frame(h.desc, DropReason::PendingFull),
        }
        if self.shared.neigh.should_request(&na, self.now) {
            self.request(iface, dev, nh);
        }
    }

    /// Send an ARP request / neighbour solicitation for `target` out of `dev`.
    pub(super) fn request(&mut self, iface: &Interface, dev: u32, target: IpAddr) {
        let Some(src) = source_for(iface, target) else {
            return;
        };
        let Some(mut d) = self.frames.alloc() else {
            return;
        };
        self.st.counters.made += 1;
        let slot = self.frames.slot_mut(d);
        let len = match (src, target) {
            (IpAddr::V4(s), IpAddr::V4(t)) => wire::arp::build_request(slot, iface.mac, s, t),
            (IpAddr::V6(s), IpAddr::V6(t)) => wire::ndp::build_ns(slot, iface.mac, s, t),
            _ => None,
        };
        match len {
            Some(n) => {
                d.len = n as u32;
                self.st.counters.neigh_requests += 1;
                self.tx(dev, d);
            }
            None => self.free(d),
        }
    }

    /// Route `d` to `dst` by the longest prefix, then [`Burst::send_to`]; a
    /// martian destination is dropped.
    pub(super) fn route_to(&mut self, d: Desc, dst: IpAddr) {
        let g = self.g;
        if martian(&g.appliance.interfaces, dst) {
            return self.drop_frame(d, DropReason::Martian);
        }
        match route_lookup(&g.appliance.routes, dst) {
            Some(i) => {
                let r = &g.appliance.routes[i];
                self.send_to(d, r.via.unwrap_or(dst), r.dev);
            }
            None => self.drop_frame(d, DropReason::NoRoute),
        }
    }
}
