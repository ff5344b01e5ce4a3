//! `balance` and its return traffic: the connection table, a new back end by
//! the service's algorithm, NAT and DSR rewriting, NAT replies translated back,
//! and the TCP reset for a segment of no connection.

use lbp_abi::{Decision, Fields, present, tcp_flag};

use super::Burst;
use super::counters::DropReason;
use super::expire::Hop;
use super::route::{bytes_of, ip_from_bytes, ip_of};
use crate::balance::least_load;
use crate::config::{Algorithm, Mode, Service};
use crate::conn::{ConnKey, Insert, ReverseKey, State, Target};
use crate::ring::Desc;
use crate::wire::{Packet, Side};

impl Burst<'_> {
    /// NAT return traffic; true when handled.
    pub(super) fn nat_return(&mut self, d: Desc, f: &Fields) -> bool {
        let g = self.g;
        let src = ip_of(f.ip_version, &f.ip_src);
        if !g.is_nat_backend(&src) {
            return false;
        }
        let rkey = ReverseKey {
            backend: f.ip_src,
            client: f.ip_dst,
            backend_port: f.sport,
            client_port: f.dport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        // A SYN from the back end on a connection that ended answers a new
        // SYN of the tuple: one the XDP fast path balanced (its records say
        // so) replaces it; without them the ended one still translates it (a
        // SYN-ACK retransmitted after the client's early FIN).
        if f.present & present::TCP != 0
            && f.tcp_flags & (tcp_flag::SYN | tcp_flag::RST) == tcp_flag::SYN
            && self.shared.xdp_flows.get().is_some()
            && self
                .shared
                .conns
                .peek_reverse(&rkey, self.now)
                .is_some_and(|(_, c)| matches!(c.state, State::FinWait | State::Closed))
        {
            let _ = self.adopt_reply(f);
        }
        let found = self
            .shared
            .conns
            .lookup_reverse(&rkey, f.tcp_flags, self.now)
            .or_else(|| {
                self.adopt_reply(f)?;
                self.shared
                    .conns
                    .lookup_reverse(&rkey, f.tcp_flags, self.now)
            });
        let Some((key, _)) = found else {
            return false;
        };
        self.st.counters.nat_return.add(d.len);
        let vip = ip_of(key.version, &key.vip);
        // The TTL first: an expired reply is answered as the back end sent it.
        match self.hop(d, f, |p| p.rewrite(Side::Src, vip, key.vport)) {
            Hop::On => self.route_to(d, ip_of(f.ip_version, &f.ip_dst)),
            Hop::Expired => {}
            Hop::Refused => self.drop_frame(d, DropReason::Rewrite),
        }
        true
    }

    /// A reply of a NAT flow the XDP fast path balanced (no connection
    /// here, or one that ended): the flow taken into this table from its
    /// reply record, if the flow's own record still sends the client's
    /// packets to this back end (a reply record outlives a flow that moved)
    /// and the back end still serves a NAT service of that virtual IP.
    /// Only a TCP or UDP packet to no virtual IP, by the interface the back
    /// end is reached by, can be a reply (a back end that is a client of a
    /// virtual IP itself sends there): a back end's other traffic, and a
    /// host elsewhere that takes a back end's address, cost no lookup in the
    /// kernel's map.
    fn adopt_reply(&mut self, f: &Fields) -> Option<()> {
        let flows = self.shared.xdp_flows.get()?;
        let g = self.g;
        let backend = ip_of(f.ip_version, &f.ip_src);
        if f.present & (present::TCP | present::UDP) == 0
            || g.is_vip(&ip_of(f.ip_version, &f.ip_dst))
            || crate::switch::route_lookup(&g.appliance.routes, backend)
                .and_then(|r| g.appliance.routes.get(r))
                .is_none_or(|r| r.dev != f.in_iface)
        {
            return None;
        }
        let (vip, vport) = crate::ring::fastbal::xdp_reply(flows, f)?;
        let vip_ip = ip_of(f.ip_version, &vip);
        let (s, b) =
            g.appliance
                .services
                .iter()
                .enumerate()
                .find_map(|(s, svc)| {
                    if !matches!(svc.mode, Mode::Nat { .. }) || !svc.vips.contains(&vip_ip) {
                        return None;
                    }
                    let b = svc.backends.iter().position(|be| {
                        be.addr == backend && svc.backend_port(be, vport) == f.sport
                    })?;
                    let t = Target {
                        service: s as u32,
                        backend: b as u32,
                        backend_addr: f.ip_src,
                        backend_port: f.sport,
                    };
                    Some((s, self.still_serves(s, svc, &t)?))
                })?;
        let key = ConnKey {
            client: f.ip_dst,
            vip,
            client_port: f.dport,
            vport,
            version: f.ip_version,
            proto: f.ip_proto,
        };
        if crate::ring::fastbal::xdp_backend(flows, &key)? != f.ip_src {
            return None;
        }
        let target = Target {
            service: s as u32,
            backend: b as u32,
            backend_addr: f.ip_src,
            backend_port: f.sport,
        };
        // Recorded as its opening when this is the back end's SYN-ACK (a
        // TCP flow is one whose SYN XDP saw), else as established (taken
        // over mid-flow: a core's entry expired while the client's packets
        // went by XDP). A connection of the same tuple still here is an
        // earlier one (XDP balanced a new SYN of the tuple): replaced, as a
        // SYN replaces it on the cores.
        let flags = match f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) {
            _ if f.present & present::TCP == 0 => 0,
            x if x == tcp_flag::SYN | tcp_flag::ACK => tcp_flag::SYN,
            _ => tcp_flag::ACK,
        };
        self.shared.conns.remove(&key);
        let _ = self.shared.conns.insert(&key, target, flags, self.now);
        self.st.counters.xdp_adopted += 1;
        Some(())
    }

    /// Answer a TCP segment with a RST out of the interface it came in by;
    /// anything that cannot be answered (not TCP, a RST, a fragment) is dropped
    /// as `why`.
    pub(super) fn reset(&mut self, d: Desc, f: &Fields, why: DropReason) {
        if f.present & present::TCP == 0 {
            return self.drop_frame(d, why);
        }
        let buf = self.frames.packet_mut(d);
        let len = buf.len();
        match Packet::new(buf, len, f).and_then(Packet::reset) {
            Some(n) => self.tx(
                f.in_iface,
                Desc {
                    addr: d.addr,
                    len: n as u32,
                },
            ),
            None => self.drop_frame(d, why),
        }
    }

    /// A new connection's back end by the service's algorithm.
    pub(super) fn choose(&mut self, s: usize, svc: &Service, hash: u32) -> Option<usize> {
        let t = self.g.services.get(s)?;
        let b = match svc.algorithm {
            Algorithm::Maglev | Algorithm::Hash => {
                t.maglev.as_ref()?.lookup(u64::from(hash))? as usize
            }
            Algorithm::RoundRobin => self.st.wrr.get_mut(s)?.as_mut()?.pick()?,
            Algorithm::LeastLoad => {
                let loads = &mut self.st.loads;
                loads.clear();
                for b in 0..t.weights.len().min(loads.capacity()) {
                    loads.push(self.g.loads.get(s, b));
                }
                least_load(loads, &t.weights, u64::from(hash))?
            }
        };
        (b < svc.backends.len()).then_some(b)
    }

    /// The index in service `s` (of the active generation) of the back end an
    /// established connection was given, if that back end still serves: it is
    /// one of the service's back ends (same address, and same port when the
    /// back end names one) and not in maintenance. Usually a compare at the
    /// connection's own index; after a reload reordered the pool, a scan.
    pub(super) fn still_serves(&self, s: usize, svc: &Service, t: &Target) -> Option<usize> {
        let addr = ip_from_bytes(&t.backend_addr);
        let same = |be: &crate::config::Backend| {
            be.addr == addr && (t.backend_port == 0 || be.port.is_none_or(|p| p == t.backend_port))
        };
        let b = t.backend as usize;
        let b = if t.service as usize == s && svc.backends.get(b).is_some_and(same) {
            b
        } else {
            svc.backends.iter().position(same)?
        };
        let closed = self.g.services.get(s)?.closed.get(b).copied();
        (!closed.unwrap_or(false)).then_some(b)
    }

    /// The back end the XDP fast path gave the flow of `f` (a service `s`
    /// it balances), if it still serves (a system call: only for a frame of
    /// no connection here).
    fn xdp_flow(&self, s: usize, svc: &Service, f: &Fields) -> Option<(Target, usize)> {
        let flows = self.shared.xdp_flows.get()?;
        let addr = crate::ring::fastbal::xdp_flow(flows, f)?;
        let t = Target {
            service: s as u32,
            backend: u32::MAX,
            backend_addr: addr,
            backend_port: 0,
        };
        let b = self.still_serves(s, svc, &t)?;
        Some((
            Target {
                backend: b as u32,
                backend_port: svc.backend_port(&svc.backends[b], f.dport),
                ..t
            },
            b,
        ))
    }

    pub(super) fn balance(&mut self, d: Desc, f: &Fields, dec: &Decision) {
        let g = self.g;
        let s = dec.target as usize;
        let Some(svc) = g.appliance.services.get(s) else {
            return self.drop_frame(d, DropReason::NoBackend);
        };
        let key = ConnKey::of_client(f);
        let known = self.shared.conns.lookup(&key, f.tcp_flags, self.now);
        let tcp = f.present & present::TCP != 0;
        let mut opened = None;
        if let Some(c) = known {
            match self.still_serves(s, svc, &c.target) {
                Some(b) => opened = Some((c.target, b)),
                None => {
                    // Its back end left the policy or is in maintenance: the
                    // client should learn at once, not time out.
                    self.shared.conns.remove(&key);
                    self.st.counters.backend_gone += 1;
                    if tcp {
                        if f.tcp_flags & tcp_flag::RST != 0 {
                            return self.drop_frame(d, DropReason::NoBackend);
                        }
                        return self.reset(d, f, DropReason::NoBackend);
                    }
                }
            }
        }
        // No connection here: a flow balanced in XDP keeps its back end (the
        // fast path left it to the cores).
        let syn = f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN;
        if opened.is_none()
            && !(tcp && syn)
            && let Some((t, b)) = self.xdp_flow(s, svc, f)
        {
            let _ = self.shared.conns.insert(&key, t, f.tcp_flags, self.now);
            self.st.counters.xdp_adopted += 1;
            opened = Some((t, b));
        }
        let (target, b) = match opened {
            Some(t) => t,
            None => {
                // Only a SYN without ACK opens a connection (a SYN-ACK to a
                // virtual IP answers nothing the appliance balanced).
                let syn = f.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;
                if tcp && !syn && !svc.unknown_balance {
                    if f.tcp_flags & tcp_flag::RST != 0 {
                        return self.drop_frame(d, DropReason::UnknownRst);
                    }
                    self.st.counters.unknown_resets += 1;
                    return self.reset(d, f, DropReason::UnknownRst);
                }
                let Some(b) = self.choose(s, svc, dec.hash) else {
                    return self.drop_frame(d, DropReason::NoBackend);
                };
                let be = &svc.backends[b];
                let port = svc.backend_port(be, f.dport);
                let chosen = Target {
                    service: s as u32,
                    backend: b as u32,
                    backend_addr: bytes_of(be.addr),
                    backend_port: port,
                };
                match self
                    .shared
                    .conns
                    .insert(&key, chosen, f.tcp_flags, self.now)
                {
                    Insert::Existing(c) => match self.still_serves(s, svc, &c.target) {
                        Some(b) => (c.target, b),
                        None => (chosen, b),
                    },
                    r => {
                        if r == Insert::NotRecorded {
                            self.st.counters.conn_full += 1;
                        }
                        if svc.algorithm == Algorithm::LeastLoad {
                            g.loads.add(s, b);
                        }
                        let c = &mut self.st.counters;
                        c.new_connections += 1;
                        if let Some(n) = c.service_new.get_mut(s) {
                            *n += 1;
                        }
                        if let Some(n) = c.backend_new.get_mut(s).and_then(|v| v.get_mut(b)) {
                            *n += 1;
                        }
                        (chosen, b)
                    }
                }
            }
        };
        if let Some(t) = self
            .st
            .counters
            .backend_traffic
            .get_mut(s)
            .and_then(|v| v.get_mut(b))
        {
            t.add(d.len);
        }
        let backend = ip_from_bytes(&target.backend_addr);
        // NAT or DSR, the appliance is a hop: the TTL first, so that an expired
        // packet (which the policy normally caught as `Expire`) is answered as
        // it came.
        let nat = matches!(svc.mode, Mode::Nat { .. });
        let port = target.backend_port;
        match self.hop(d, f, |p| !nat || p.rewrite(Side::Dst, backend, port)) {
            Hop::On => self.route_to(d, backend),
            Hop::Expired => {}
            Hop::Refused => self.drop_frame(d, DropReason::Rewrite),
        }
    }
}
