//! ARP and IPv6 neighbour discovery on a switching core: learning senders,
//! releasing the frames that waited for them, and answering for the
//! interfaces' addresses and the virtual IPs.

use std::net::IpAddr;

use lbp_abi::Fields;

use super::counters::DropReason;
use super::route::{on_link, routed_on_link};
use super::{Burst, l3_after_tags, push_bounded};
use crate::config::Interface;
use crate::neigh::{Learned, NeighAddr};
use crate::ring::Desc;
use crate::wire;

impl Burst<'_> {
    /// Record `addr` at `mac` and release what waited for it.
    pub(super) fn learn(&mut self, addr: IpAddr, mac: [u8; 6], how: Learned) {
        let na = NeighAddr::from(addr);
        if !self.shared.neigh.learn(&na, mac, how, self.now) {
            return;
        }
        self.st.counters.neigh_learned += 1;
        let Burst {
            g, st, frames, out, ..
        } = self;
        let c = &mut st.counters;
        st.pending.take_ready(&na, |h| {
            c.unheld += 1;
            let src = g.appliance.interfaces.get(h.dev as usize).map(|i| i.mac);
            let queued = match (src, out.tx.get_mut(h.dev as usize)) {
                (Some(src), Some(q)) => {
                    wire::set_macs(frames.packet_mut(h.desc), src, mac);
                    push_bounded(q, h.desc)
                }
                _ => Err(h.desc),
            };
            match queued {
                Ok(()) => c.to_tx += 1,
                Err(d) => {
                    frames.free(d);
                    c.freed += 1;
                    c.drops[DropReason::QueueFull as usize] += 1;
                }
            }
        });
    }

    /// Whether `a` is one of `iface`'s addresses or a virtual IP.
    pub(super) fn answers_for(&self, iface: &Interface, a: IpAddr) -> bool {
        iface.addrs.iter().any(|(x, _)| *x == a) || self.g.is_vip(&a)
    }

    pub(super) fn arp(&mut self, d: Desc, in_iface: u32) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(in_iface as usize) else {
            return self.drop_frame(d, DropReason::NotOurs);
        };
        let l3 = l3_after_tags(self.frames.packet(d));
        let Some(a) = wire::arp::parse(self.frames.packet(d), l3) else {
            return self.drop_frame(d, DropReason::Malformed);
        };
        let sender = IpAddr::V4(a.sender_ip);
        let target = IpAddr::V4(a.target_ip);
        let for_us = self.answers_for(iface, target);
        let neighbour =
            on_link(iface, sender) || routed_on_link(&g.appliance.routes, in_iface, sender);
        if !a.sender_ip.is_unspecified() && neighbour {
            match a.op {
                wire::arp::OP_REPLY => self.learn(sender, a.sender_mac, Learned::Reply),
                wire::arp::OP_REQUEST if for_us => {
                    self.learn(sender, a.sender_mac, Learned::Request)
                }
                _ => {}
            }
        }
        if a.op == wire::arp::OP_REQUEST
            && for_us
            && wire::arp::reply_in_place(self.frames.packet_mut(d), l3, iface.mac, a.target_ip)
        {
            self.st.counters.arp_replies += 1;
            return self.tx(in_iface, d);
        }
        self.st.counters.neigh_consumed += 1;
        self.free(d);
    }

    pub(super) fn ndp(&mut self, d: Desc, f: &Fields) {
        let g = self.g;
        let Some(iface) = g.appliance.interfaces.get(f.in_iface as usize) else {
            return self.drop_frame(d, DropReason::NotOurs);
        };
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        if f.icmp_type == wire::ndp::TYPE_NA {
            let Some(na) = wire::ndp::parse_na(self.frames.packet(d), l3, l4) else {
                return self.drop_frame(d, DropReason::Malformed);
            };
            if let Some(mac) = na.target_ll {
                let how = if na.solicited {
                    Learned::Reply
                } else {
                    Learned::Request
                };
                self.learn(IpAddr::V6(na.target), mac, how);
            }
            self.st.counters.neigh_consumed += 1;
            return self.free(d);
        }
        let Some(ns) = wire::ndp::parse_ns(self.frames.packet(d), l3, l4) else {
            return self.drop_frame(d, DropReason::Malformed);
        };
        let target = IpAddr::V6(ns.target);
        if !self.answers_for(iface, target) {
            self.st.counters.neigh_consumed += 1;
            return self.free(d);
        }
        if let (false, Some(mac)) = (ns.src.is_unspecified(), ns.source_ll) {
            self.learn(IpAddr::V6(ns.src), mac, Learned::Request);
        }
        let len = d.len as usize;
        match wire::ndp::na_from_ns_in_place(
            self.frames.slot_mut(d),
            len,
            l3,
            l4,
            iface.mac,
            ns.target,
        ) {
            Some(n) => {
                self.st.counters.nd_replies += 1;
                let d = Desc {
                    addr: d.addr,
                    len: n as u32,
                };
                self.tx(f.in_iface, d);
            }
            None => {
                self.st.counters.neigh_consumed += 1;
                self.free(d);
            }
        }
    }
}
