//! TTL: the decrement on everything the core sends on, and when it runs out,
//! an ICMP / ICMPv6 time exceeded (rate limited, RFC 1812's exceptions) or a
//! drop; relaying ICMP errors about balanced connections.

use lbp_abi::{Fields, present, tcp_flag};

use super::counters::DropReason;
use super::route::{bytes_of, ip_from_bytes, ip_of, source_for};
use super::{Burst, TIME_EXCEEDED_BURST, TIME_EXCEEDED_GAP_NS};
use crate::config::Mode;
use crate::conn::{ConnKey, ReverseKey};
use crate::ring::Desc;
use crate::wire::{Packet, Side};

/// What became of a packet sent on as a hop ([`Burst::hop`]).
pub(super) enum Hop {
    /// Decremented and rewritten: send it.
    On,
    /// Its TTL ran out: answered or dropped already.
    Expired,
    /// Not rewritten: the caller drops it.
    Refused,
}

impl Burst<'_> {
    pub(super) fn expire(&mut self) {
        let Burst { st, frames, .. } = self;
        let c = &mut st.counters;
        st.pending.expire(self.now, |h| {
            frames.free(h.desc);
            c.unheld += 1;
            c.freed += 1;
            c.drops[DropReason::NeighTimeout as usize] += 1;
        });
    }

    /// Decrement the TTL (hop limit) of a packet about to be sent on; false when
    /// it runs out: the frame is then answered with a time exceeded or dropped
    /// ([`Burst::expired`]).
    pub(super) fn ttl(&mut self, d: Desc, f: &Fields) -> bool {
        match self.hop(d, f, |_| true) {
            Hop::On => true,
            Hop::Expired => false,
            Hop::Refused => {
                self.drop_frame(d, DropReason::Ttl);
                false
            }
        }
    }

    /// A packet the appliance sends on, on one checked view of its frame
    /// (`wire::Packet`, from its fields): the TTL (hop limit) decremented,
    /// then `rewrite`. `Expired`: it ran out, and the frame is answered or
    /// dropped ([`Burst::expired`]). `Refused`: the fields do not describe the
    /// frame, or `rewrite` said no; the frame is the caller's to drop.
    pub(super) fn hop(
        &mut self,
        d: Desc,
        f: &Fields,
        rewrite: impl FnOnce(&mut Packet<'_>) -> bool,
    ) -> Hop {
        let buf = self.frames.packet_mut(d);
        let len = buf.len();
        let Some(mut p) = Packet::new(buf, len, f) else {
            return Hop::Refused;
        };
        if !p.decrement_ttl() {
            self.expired(d, f);
            return Hop::Expired;
        }
        if rewrite(&mut p) {
            Hop::On
        } else {
            Hop::Refused
        }
    }

    /// A packet whose TTL (hop limit) ran out where the appliance would have
    /// sent it on (the policy's `Expire`, or a packet the core forwards itself):
    /// answered with an ICMP (ICMPv6) time exceeded from the receiving
    /// interface's address, back out of that interface to the sender, unless the
    /// packet must not be answered (`wire::time_exceeded`) or the rate limit
    /// says no; otherwise dropped (`Ttl`).
    pub(super) fn expired(&mut self, d: Desc, f: &Fields) {
        let g = self.g;
        let src = ip_of(f.ip_version, &f.ip_src);
        let ours = g
            .appliance
            .interfaces
            .get(f.in_iface as usize)
            .and_then(|i| source_for(i, src));
        let Some(ours) = ours else {
            return self.drop_frame(d, DropReason::Ttl);
        };
        if !self.time_exceeded_allowed() {
            self.st.counters.time_exceeded_limited += 1;
            return self.drop_frame(d, DropReason::Ttl);
        }
        let len = d.len as usize;
        match Packet::new(self.frames.slot_mut(d), len, f).and_then(|p| p.time_exceeded(ours)) {
            Some(n) => {
                self.st.counters.time_exceeded += 1;
                let d = Desc {
                    addr: d.addr,
                    len: n as u32,
                };
                self.tx(f.in_iface, d);
            }
            None => {
                // Not sent: give the token back.
                let tat = &mut self.st.time_exceeded_tat;
                *tat = tat.saturating_sub(TIME_EXCEEDED_GAP_NS);
                self.drop_frame(d, DropReason::Ttl)
            }
        }
    }

    /// The time exceeded rate limit (GCRA): at most [`TIME_EXCEEDED_PER_SEC`]
    /// per second and core, in bursts of up to [`TIME_EXCEEDED_BURST`]; takes
    /// one answer's worth when it says yes.
    pub(super) fn time_exceeded_allowed(&mut self) -> bool {
        let tat = &mut self.st.time_exceeded_tat;
        let window = TIME_EXCEEDED_GAP_NS * (TIME_EXCEEDED_BURST - 1);
        if *tat > self.now.saturating_add(window) {
            return false;
        }
        *tat = (*tat).max(self.now) + TIME_EXCEEDED_GAP_NS;
        true
    }

    /// An ICMP error about a balanced connection; true when handled.
    pub(super) fn icmp_error(&mut self, d: Desc, f: &Fields) -> bool {
        let buf = self.frames.packet_mut(d);
        let len = buf.len();
        let Some(e) = Packet::new(buf, len, f).and_then(|p| p.icmp_error()) else {
            return false;
        };
        let g = self.g;
        let outer_src = ip_of(f.ip_version, &f.ip_src);
        let outer_dst = ip_of(f.ip_version, &f.ip_dst);
        if g.is_vip(&outer_dst) {
            // From the client side, about a packet the service sent to a client:
            // inner VIP:vport -> C:cp.
            let key = ConnKey {
                client: bytes_of(e.dst),
                vip: bytes_of(e.src),
                client_port: e.dport,
                vport: e.sport,
                version: f.ip_version,
                proto: e.proto,
            };
            let Some(c) = self.shared.conns.peek(&key, self.now) else {
                return false;
            };
            let Some(svc) = g.appliance.services.get(c.target.service as usize) else {
                return false;
            };
            let b = ip_from_bytes(&c.target.backend_addr);
            self.st.counters.icmp_errors += 1;
            // A hop in either mode; an error that expires is never answered.
            let nat = matches!(svc.mode, Mode::Nat { .. });
            let port = c.target.backend_port;
            let rewrite = |p: &mut Packet<'_>| {
                !nat || p.icmp_error_rewrite(Some((Side::Dst, b)), Side::Src, b, port)
            };
            match self.hop(d, f, rewrite) {
                Hop::On => self.route_to(d, b),
                Hop::Expired => {}
                Hop::Refused => self.drop_frame(d, DropReason::Rewrite),
            }
            return true;
        }
        if g.is_nat_backend(&e.dst) {
            // About a packet sent to a back end: inner C:cp -> B:bp.
            let rkey = ReverseKey {
                backend: bytes_of(e.dst),
                client: bytes_of(e.src),
                backend_port: e.dport,
                client_port: e.sport,
                version: f.ip_version,
                proto: e.proto,
            };
            let Some((key, _)) = self.shared.conns.lookup_reverse(&rkey, 0, self.now) else {
                return false;
            };
            let vip = ip_of(key.version, &key.vip);
            let outer = (outer_src == e.dst).then_some((Side::Src, vip));
            self.st.counters.icmp_errors += 1;
            let buf = self.frames.packet_mut(d);
            let len = buf.len();
            let translated = Packet::new(buf, len, f)
                .is_some_and(|mut p| p.icmp_error_rewrite(outer, Side::Dst, vip, key.vport));
            if !translated {
                self.drop_frame(d, DropReason::Rewrite);
                return true;
            }
            if self.ttl(d, f) {
                self.route_to(d, outer_dst);
            }
            return true;
        }
        false
    }

    /// A TCP SYN (not SYN-ACK) sent straight to a NAT back end's address and
    /// port ends an earlier NAT connection of the same client address and port to
    /// that back end: both have the same 4-tuple at the back end, and without
    /// this its answers to the new connection would be rewritten as the old
    /// one's (seen with a client port reused after 3 000 connections through the
    /// virtual IP).
    pub(super) fn supersede(&mut self, f: &Fields) {
        if f.present & present::TCP == 0
            || f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) != tcp_flag::SYN
            || !self.g.is_nat_backend(&ip_of(f.ip_version, &f.ip_dst))
        {
            return;
        }
        let rkey = ReverseKey {
            backend: f.ip_dst,
            client: f.ip_src,
            backend_port: f.dport,
            client_port: f.sport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        self.st.counters.superseded += self.shared.conns.supersede(&rkey) as u64;
    }
}
