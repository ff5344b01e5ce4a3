use std::net::IpAddr;
use std::sync::Arc;

use lbp_abi::{Action, Decision, Fields, flow_hash, hash_field, present, stage, tcp_flag};

use super::route::{bytes_of, ip_of, link_local};
use super::*;
use crate::config::{Algorithm, Appliance, Backend, Interface, Mode, Route, Service};
use crate::conn::ConnTable;
use crate::generation::{Generation, Published};
use crate::neigh::{NeighAddr, NeighTable, Pending};
use crate::ring::mem::{MemHost, MemPort, host};
use crate::ring::{Desc, Frames, Port};
use crate::wire;
use crate::wire::testutil::{self, Spec, assert_checksums, build};

const M0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
const M1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const NS: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac_of(a: IpAddr) -> [u8; 6] {
    let b = bytes_of(a);
    [2, 0x11, b[12] ^ b[0], b[13], b[14], b[15]]
}

fn be(a: &str, port: Option<u16>, weight: u32) -> Backend {
    Backend {
        addr: ip(a),
        port,
        weight,
        agent: None,
    }
}

fn route(p: &str, len: u8, via: Option<&str>, dev: u32) -> Route {
    Route {
        prefix: ip(p),
        len,
        via: via.map(ip),
        dev,
    }
}

/// Interface 0 faces the clients, 1 the back ends. Service 0: NAT (Maglev,
/// to port 8080), service 1: DSR (round robin), service 2: IPv6 NAT.
fn appliance() -> Appliance {
    Appliance {
        interfaces: vec![
            Interface {
                name: "outside".into(),
                mac: M0,
                addrs: vec![(ip("198.18.0.1"), 24), (ip("2001:db8::1"), 64)],
            },
            Interface {
                name: "inside".into(),
                mac: M1,
                addrs: vec![(ip("198.19.0.1"), 24), (ip("2001:db8:1::1"), 64)],
            },
        ],
        services: vec![
            Service {
                name: "web".into(),
                vips: vec![ip("198.18.0.10")],
                mode: Mode::Nat {
                    to_port: Some(8080),
                },
                algorithm: Algorithm::Maglev,
                unknown_balance: false,
                backends: vec![be("198.19.0.11", None, 1), be("198.19.0.12", Some(9090), 1)],
                formula: None,
                health: Vec::new(),
            },
            Service {
                name: "dsr".into(),
                vips: vec![ip("198.18.0.20")],
                mode: Mode::Dsr,
                algorithm: Algorithm::RoundRobin,
                unknown_balance: false,
                backends: vec![be("198.19.0.21", None, 1), be("198.19.0.22", None, 1)],
                formula: None,
                health: Vec::new(),
            },
            Service {
                name: "web6".into(),
                vips: vec![ip("2001:db8::10")],
                mode: Mode::Nat { to_port: None },
                algorithm: Algorithm::LeastLoad,
                unknown_balance: true,
                backends: vec![be("2001:db8:1::11", None, 1)],
                formula: None,
                health: Vec::new(),
            },
        ],
        routes: vec![
            route("198.18.0.0", 24, None, 0),
            route("2001:db8::", 64, None, 0),
            route("198.19.0.0", 24, None, 1),
            route("2001:db8:1::", 64, None, 1),
            route("0.0.0.0", 0, Some("198.18.0.254"), 0),
        ],
        rules: Default::default(),
    }
}

/// The policy, by hand: what the compiled `.lbp` would decide for this
/// appliance (no filter rules), a packet that would be sent on with a TTL
/// of 1 or 0 expiring.
fn policy(f: &Fields) -> Decision {
    let d = pipeline(f);
    let sent_on = [Action::Balance as u32, Action::Forward as u32].contains(&d.action);
    if sent_on && lbp_abi::expires(f) {
        return Decision {
            action: Action::Expire as u32,
            hash: 0,
            ..d
        };
    }
    d
}

fn pipeline(f: &Fields) -> Decision {
    let dst = ip_of(f.ip_version, &f.ip_dst);
    let tcp = f.present & present::TCP != 0;
    let d = |action: Action, target: u32, st: u32| Decision {
        action: action as u32,
        target,
        rule: lbp_abi::NO_RULE,
        stage: st,
        hash: if action == Action::Balance {
            flow_hash(f, hash_field::ALL)
        } else {
            0
        },
    };
    if f.present & present::MALFORMED != 0 {
        return d(Action::Drop, 0, stage::MALFORMED);
    }
    if dst == ip("198.18.0.10") && tcp && f.dport == 80 {
        return d(Action::Balance, 0, stage::SERVICE);
    }
    if dst == ip("198.18.0.20") && tcp && f.dport == 80 {
        return d(Action::Balance, 1, stage::SERVICE);
    }
    if dst == ip("2001:db8::10") && tcp && f.dport == 80 {
        return d(Action::Balance, 2, stage::SERVICE);
    }
    if [ip("198.18.0.10"), ip("198.18.0.20"), ip("2001:db8::10")].contains(&dst) {
        let a = if tcp { Action::Reset } else { Action::Drop };
        return d(a, 0, stage::INVALID_ENTRY);
    }
    if [ip("198.18.0.1"), ip("198.19.0.1")].contains(&dst) {
        return d(Action::Local, 0, stage::OWN_ADDRESS);
    }
    match route_lookup(&appliance().routes, dst) {
        Some(r) => d(Action::Forward, r as u32, stage::ROUTE),
        None => d(Action::Drop, 0, stage::ROUTE),
    }
}

struct Out {
    tx: Vec<Vec<Vec<u8>>>,
    local: Vec<Vec<u8>>,
}

struct Rig {
    frames: Frames,
    ports: Vec<MemPort>,
    hosts: Vec<MemHost>,
    st: CoreState,
    shared: Shared,
    out: Outputs,
    published: Arc<Published>,
    reader: crate::generation::Reader,
}

impl Rig {
    fn new() -> Rig {
        let (p0, h0) = host(64);
        let (p1, h1) = host(64);
        let published = Arc::new(Published::new(
            Generation::new(Arc::new(policy), appliance()),
            2,
        ));
        let reader = published.register().unwrap();
        Rig {
            frames: Frames::new(128).unwrap(),
            ports: vec![p0, p1],
            hosts: vec![h0, h1],
            st: CoreState::new(Pending::with_defaults()),
            shared: Shared {
                conns: ConnTable::new(1024),
                neigh: NeighTable::new(64),
                xdp_flows: Default::default(),
            },
            out: Outputs::new(2, 64),
            published,
            reader,
        }
    }

    /// A rig whose neighbour table knows the client, gateway and back ends.
    fn known() -> Rig {
        let r = Rig::new();
        for a in [
            "198.18.0.50",
            "2001:db8::50",
            "198.19.0.11",
            "198.19.0.12",
            "198.19.0.21",
            "198.19.0.22",
            "2001:db8:1::11",
        ] {
            let mac = if a.ends_with("::50") || a.ends_with(".50") {
                CLIENT_MAC
            } else {
                mac_of(ip(a))
            };
            r.shared.neigh.set_permanent(&NeighAddr::from(ip(a)), mac);
        }
        r.shared
            .neigh
            .set_permanent(&NeighAddr::from(ip("198.18.0.254")), GW_MAC);
        r
    }

    /// One burst through real ports and descriptors, then the frame books.
    fn run(&mut self, input: &[(u32, Vec<u8>)], now: u64) -> Out {
        for (i, f) in input {
            assert!(self.hosts[*i as usize].inject(f));
        }
        let mut rx = Vec::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let mut buf = [Desc { addr: 0, len: 0 }; 32];
            let n = p.recv(&mut self.frames, &mut buf);
            rx.extend(buf[..n].iter().map(|&d| (d, i as u32)));
        }
        assert_eq!(rx.len(), input.len());
        let g = self.reader.enter();
        process_burst(
            g,
            &mut self.st,
            &self.shared,
            &mut self.frames,
            &rx,
            &mut self.out,
            now,
        );
        let (_, local) = self.out.hand_over(&mut self.ports, &mut self.frames);
        // Every frame is free again, except those held for a neighbour.
        assert!(self.st.balanced(), "{:?}", self.st.counters);
        assert_eq!(
            self.frames.free_count() as u64 + self.st.pending_len(),
            self.frames.count() as u64
        );
        Out {
            tx: self.hosts.iter().map(MemHost::take_all).collect(),
            local,
        }
    }
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut s = Spec::new(src, dst, 6);
    s.sport = sport;
    s.dport = dport;
    s.tcp_flags = flags;
    let mut f = build(&s).frame;
    f[..6].copy_from_slice(&M0);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f
}

fn fields(f: &[u8]) -> Fields {
    lbp_abi::wire::extract(f, 0)
}

fn checksums_ok(f: &[u8]) {
    let x = fields(f);
    assert_checksums(
        f,
        usize::from(x.l3_offset),
        usize::from(x.l4_offset),
        x.ip_proto,
    );
}

const SYN: u8 = tcp_flag::SYN;
const ACK: u8 = tcp_flag::ACK;

#[test]
fn nat_both_ways_ipv4_and_ipv6() {
    let mut r = Rig::known();
    for (client, vip, port_of) in [
        (
            "198.18.0.50",
            "198.18.0.10",
            [("198.19.0.11", 8080), ("198.19.0.12", 9090)],
        ),
        (
            "2001:db8::50",
            "2001:db8::10",
            [("2001:db8:1::11", 80), ("2001:db8:1::11", 80)],
        ),
    ] {
        let syn = tcp(client, vip, 40000, 80, SYN);
        let out = r.run(&[(0, syn.clone())], NS);
        assert!(out.tx[0].is_empty());
        assert_eq!(out.tx[1].len(), 1);
        let fwd = &out.tx[1][0];
        let x = fields(fwd);
        let backend = ip_of(x.ip_version, &x.ip_dst);
        let want_port = port_of.iter().find(|(a, _)| ip(a) == backend).unwrap().1;
        assert_eq!(x.dport, want_port);
        assert_eq!(ip_of(x.ip_version, &x.ip_src), ip(client));
        assert_eq!(x.sport, 40000);
        assert_eq!(x.ip_ttl, 63);
        assert_eq!(fwd[..6], mac_of(backend));
        assert_eq!(fwd[6..12], M1);
        checksums_ok(fwd);
        // The payload is untouched.
        assert_eq!(fwd[fwd.len() - 12..], syn[syn.len() - 12..]);

        // The back end answers: rewritten back to the VIP and port 80.
        let mut reply = tcp(&backend.to_string(), client, want_port, 40000, SYN | ACK);
        reply[6..12].copy_from_slice(&mac_of(backend));
        let out = r.run(&[(1, reply)], 2 * NS);
        assert_eq!(out.tx[0].len(), 1, "{:?}", r.st.counters);
        let back = &out.tx[0][0];
        let y = fields(back);
        assert_eq!(ip_of(y.ip_version, &y.ip_src), ip(vip));
        assert_eq!(y.sport, 80);
        assert_eq!(ip_of(y.ip_version, &y.ip_dst), ip(client));
        assert_eq!(y.dport, 40000);
        assert_eq!(back[..6], CLIENT_MAC);
        assert_eq!(back[6..12], M0);
        checksums_ok(back);
    }
    let c = &r.st.counters;
    assert_eq!(c.nat_return.packets, 2);
    assert_eq!(c.action(Action::Balance), 2);
    assert_eq!(c.service_new[0] + c.service_new[2], 2);
    assert_eq!(
        r.published.with_active(|g| g.loads.get(2, 0)),
        1,
        "least load counts new connections"
    );
}

#[test]
fn a_direct_connection_supersedes_a_nat_connection_of_the_same_tuple() {
    let mut r = Rig::known();
    let out = r.run(
        &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
        NS,
    );
    let x = fields(&out.tx[1][0]);
    let backend = ip_of(x.ip_version, &x.ip_dst).to_string();
    let bport = x.dport;
    // The client reuses its port for a connection straight to the back end.
    let direct = tcp("198.18.0.50", &backend, 40000, bport, SYN);
    let out = r.run(&[(0, direct)], 2 * NS);
    assert_eq!(out.tx[1].len(), 1, "routed to the back end");
    assert_eq!(r.st.counters.superseded, 1);
    // The back end's answer belongs to the new connection: not rewritten.
    let mut reply = tcp(&backend, "198.18.0.50", bport, 40000, SYN | ACK);
    reply[6..12].copy_from_slice(&mac_of(ip(&backend)));
    let out = r.run(&[(1, reply)], 3 * NS);
    let y = fields(&out.tx[0][0]);
    assert_eq!(ip_of(y.ip_version, &y.ip_src), ip(&backend));
    assert_eq!(y.sport, bport);
    assert_eq!(r.st.counters.nat_return.packets, 0);
}

#[test]
fn dsr_changes_the_macs_and_ttl_and_round_robins() {
    let mut r = Rig::known();
    let mut seen = Vec::new();
    for port in [40000, 40001, 40002] {
        let syn = tcp("198.18.0.50", "198.18.0.20", port, 80, SYN);
        let out = r.run(&[(0, syn.clone())], NS);
        let f = &out.tx[1][0];
        // Only the MACs change, and the TTL (with the header checksum).
        assert_eq!(f[12..22], syn[12..22]);
        assert_eq!(f[14 + 8], syn[14 + 8] - 1);
        assert_eq!(f[26..], syn[26..]);
        checksums_ok(f);
        assert_eq!(f[6..12], M1);
        seen.push(f[..6].to_vec());
    }
    let b21 = mac_of(ip("198.19.0.21")).to_vec();
    let b22 = mac_of(ip("198.19.0.22")).to_vec();
    assert_eq!(seen, vec![b21.clone(), b22, b21]);
    assert_eq!(r.st.counters.backend_new[1], vec![2, 1]);
}

#[test]
fn resets_for_invalid_entries_and_unknown_connections() {
    let mut r = Rig::known();
    // Wrong port on the VIP: the policy says reset.
    let seg = tcp("198.18.0.50", "198.18.0.10", 40000, 25, SYN);
    // A non-SYN of no connection to a service without `unknown balance`.
    let ack = tcp("198.18.0.50", "198.18.0.10", 40001, 80, ACK);
    // A RST of no connection: never answered.
    let rst = tcp("198.18.0.50", "198.18.0.10", 40002, 80, tcp_flag::RST | ACK);
    // UDP to the VIP: not an entry, dropped.
    let mut s = Spec::new("198.18.0.50", "198.18.0.10", 17);
    s.dport = 53;
    let udp = build(&s).frame;
    let out = r.run(&[(0, seg), (0, ack.clone()), (0, rst), (0, udp)], NS);
    assert_eq!(out.tx[0].len(), 2);
    assert!(out.tx[1].is_empty());
    for (f, sport) in out.tx[0].iter().zip([25u16, 80]) {
        let x = fields(f);
        assert_ne!(x.tcp_flags & tcp_flag::RST, 0);
        assert_eq!(ip_of(4, &x.ip_src), ip("198.18.0.10"));
        assert_eq!(ip_of(4, &x.ip_dst), ip("198.18.0.50"));
        assert_eq!(x.sport, sport);
        assert_eq!(f[..6], CLIENT_MAC, "MACs swapped");
        assert_eq!(f[6..12], M0);
        checksums_ok(f);
    }
    // The ACK's RST carries seq = SEG.ACK.
    let y = fields(&out.tx[0][1]);
    let seq_at = usize::from(y.l4_offset) + 4;
    assert_eq!(
        out.tx[0][1][seq_at..seq_at + 4],
        0x0a0b_0c0du32.to_be_bytes()
    );
    let c = &r.st.counters;
    assert_eq!(c.unknown_resets, 1);
    assert_eq!(c.dropped(DropReason::UnknownRst), 1);
    assert_eq!(c.dropped(DropReason::InvalidEntry), 1);
    assert_eq!(r.shared.conns.len(), 0, "nothing recorded");
}

#[test]
fn routing_decrements_the_ttl_and_rewrites_macs() {
    let mut r = Rig::known();
    let mut s = Spec::new("198.19.0.11", "198.18.0.50", 17);
    s.sport = 5353;
    let pkt = build(&s).frame;
    let mut far = Spec::new("198.19.0.11", "198.18.200.9", 17);
    far.dport = 9;
    let far = build(&far).frame;
    let mut dying = build(&Spec::new("198.19.0.11", "198.18.0.50", 17)).frame;
    dying[14 + 8] = 1;
    let l3 = 14;
    let c = testutil::ipv4_header_expected(&dying, l3);
    dying[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    let out = r.run(&[(1, pkt.clone()), (1, far), (1, dying.clone())], NS);
    assert_eq!(out.tx[0].len(), 2);
    let f = &out.tx[0][0];
    assert_eq!(fields(f).ip_ttl, 63);
    assert_eq!(f[..6], CLIENT_MAC);
    assert_eq!(f[6..12], M0);
    checksums_ok(f);
    // Everything but MACs, TTL and header checksum is as it came.
    assert_eq!(f[14..22], pkt[14..22]);
    assert_eq!(f[26..], pkt[26..]);
    // Beyond the connected network: the default route's gateway.
    assert_eq!(out.tx[0][1][..6], GW_MAC);
    // TTL 1 expires: answered out of the interface it came in by.
    assert_eq!(out.tx[1].len(), 1);
    assert_time_exceeded(&out.tx[1][0], &dying, "198.19.0.1");
    let c = &r.st.counters;
    assert_eq!(c.action(Action::Forward), 2);
    assert_eq!(c.action(Action::Expire), 1);
    assert_eq!((c.time_exceeded, c.dropped(DropReason::Ttl)), (1, 0));
}

/// `frame` with its TTL (hop limit) set to `ttl`, the IPv4 header checksum
/// updated.
fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    let l3 = usize::from(fields(&frame).l3_offset);
    if frame[l3] >> 4 == 4 {
        frame[l3 + 8] = ttl;
        let c = testutil::ipv4_header_expected(&frame, l3);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        frame[l3 + 7] = ttl;
    }
    frame
}

/// `answer` is the ICMP (ICMPv6) time exceeded from `from` about `orig`,
/// sent back to the sender's MAC, quoting `orig` from its IP header on.
fn assert_time_exceeded(answer: &[u8], orig: &[u8], from: &str) {
    let a = fields(answer);
    let o = fields(orig);
    let v6 = o.ip_version == 6;
    assert_eq!(a.ip_version, o.ip_version);
    assert_eq!(a.ip_proto, if v6 { PROTO_ICMPV6 } else { 1 });
    assert_eq!((a.icmp_type, a.icmp_code), (if v6 { 3 } else { 11 }, 0));
    assert_eq!(ip_of(a.ip_version, &a.ip_src), ip(from));
    assert_eq!(a.ip_dst, o.ip_src);
    assert_eq!(a.ip_ttl, 64);
    assert_eq!(answer[..6], orig[6..12], "back to the sender");
    assert_eq!(answer[6..12], orig[..6]);
    let quoted = usize::from(a.l4_offset) + 8;
    assert_eq!(answer[quoted..], orig[usize::from(o.l3_offset)..]);
    checksums_ok(answer);
}

#[test]
fn expired_packets_are_answered_with_time_exceeded() {
    let mut r = Rig::known();
    // Balanced (NAT, IPv4 and IPv6; DSR) with a TTL of 1 or 0: answered,
    // and no connection opened.
    let syn4 = with_ttl(tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN), 1);
    let syn6 = with_ttl(tcp("2001:db8::50", "2001:db8::10", 40000, 80, SYN), 1);
    let dsr = with_ttl(tcp("198.18.0.50", "198.18.0.20", 40000, 80, SYN), 0);
    let out = r.run(
        &[(0, syn4.clone()), (0, syn6.clone()), (0, dsr.clone())],
        NS,
    );
    assert!(out.tx[1].is_empty());
    assert_eq!(out.tx[0].len(), 3);
    assert_time_exceeded(&out.tx[0][0], &syn4, "198.18.0.1");
    assert_time_exceeded(&out.tx[0][1], &syn6, "2001:db8::1");
    assert_time_exceeded(&out.tx[0][2], &dsr, "198.18.0.1");
    assert_eq!(r.shared.conns.len(), 0);
    assert_eq!(r.st.counters.action(Action::Expire), 3);
    assert_eq!(r.st.counters.time_exceeded, 3);

    // TTL 2: balanced, and the back end sees 1 (DSR is a hop too).
    let out = r.run(
        &[(
            0,
            with_ttl(tcp("198.18.0.50", "198.18.0.20", 40000, 80, SYN), 2),
        )],
        NS,
    );
    assert_eq!(fields(&out.tx[1][0]).ip_ttl, 1);
    checksums_ok(&out.tx[1][0]);

    // NAT return traffic whose TTL runs out: answered to the back end,
    // quoting the reply as the back end sent it.
    let syn = tcp("198.18.0.50", "198.18.0.10", 40001, 80, SYN);
    let out = r.run(&[(0, syn)], NS);
    let x = fields(&out.tx[1][0]);
    let backend = ip_of(4, &x.ip_dst);
    let mut reply = tcp(
        &backend.to_string(),
        "198.18.0.50",
        x.dport,
        40001,
        SYN | ACK,
    );
    reply[6..12].copy_from_slice(&mac_of(backend));
    let reply = with_ttl(reply, 1);
    let out = r.run(&[(1, reply.clone())], NS);
    assert!(out.tx[0].is_empty());
    assert_time_exceeded(&out.tx[1][0], &reply, "198.19.0.1");

    // Never in answer to an ICMP error: dropped and counted.
    let mut err = build(&Spec::new("198.18.0.50", "198.19.0.11", 1)).frame;
    err[14 + 20] = 3;
    let err = with_ttl(err, 1);
    let out = r.run(&[(0, err)], NS);
    assert!(out.tx.iter().all(Vec::is_empty));
    let c = &r.st.counters;
    assert_eq!((c.time_exceeded, c.dropped(DropReason::Ttl)), (4, 1));
}

#[test]
fn time_exceeded_is_rate_limited() {
    let mut r = Rig::known();
    let burst: Vec<(u32, Vec<u8>)> = (0..30)
        .map(|i| {
            let mut s = Spec::new("198.18.0.50", "198.19.0.11", 17);
            s.sport = 1000 + i;
            (0, with_ttl(build(&s).frame, 1))
        })
        .collect();
    let t = 10 * NS;
    let first = r.run(&burst, t);
    let second = r.run(&burst, t);
    let sent = first.tx[0].len() + second.tx[0].len();
    assert_eq!(sent as u64, TIME_EXCEEDED_BURST);
    let c = &r.st.counters;
    assert_eq!(c.time_exceeded_limited, 60 - TIME_EXCEEDED_BURST);
    assert_eq!(c.dropped(DropReason::Ttl), 60 - TIME_EXCEEDED_BURST);
    // A millisecond later, one more; a second later, a whole burst again.
    let third = r.run(&burst, t + 1_000_000);
    assert_eq!(third.tx[0].len(), 1);
    let fourth = r.run(&burst, t + 2 * NS);
    assert_eq!(fourth.tx[0].len(), 30);
}

fn arp_request(sender_mac: [u8; 6], sender: &str, target: &str) -> Vec<u8> {
    let mut f = vec![0; 60];
    let (IpAddr::V4(s), IpAddr::V4(t)) = (ip(sender), ip(target)) else {
        unreachable!()
    };
    let n = wire::arp::build_request(&mut f, sender_mac, s, t).unwrap();
    f.truncate(n);
    f
}

#[test]
fn arp_requests_for_own_addresses_and_vips_are_answered() {
    let mut r = Rig::new();
    let out = r.run(
        &[
            (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.1")),
            (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.10")),
            (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.18.0.77")),
            // An address of the other interface is not answered here.
            (0, arp_request(CLIENT_MAC, "198.18.0.50", "198.19.0.1")),
        ],
        NS,
    );
    assert_eq!(out.tx[0].len(), 2);
    for (f, who) in out.tx[0].iter().zip(["198.18.0.1", "198.18.0.10"]) {
        let a = wire::arp::parse(f, 14).unwrap();
        assert_eq!(a.op, wire::arp::OP_REPLY);
        assert_eq!(IpAddr::V4(a.sender_ip), ip(who));
        assert_eq!(a.sender_mac, M0);
        assert_eq!(a.target_mac, CLIENT_MAC);
        assert_eq!(f[..6], CLIENT_MAC);
    }
    assert_eq!(r.st.counters.arp_replies, 2);
    assert_eq!(r.st.counters.neigh_consumed, 2);
    // The requester was learned.
    let n = r
        .shared
        .neigh
        .lookup(&NeighAddr::from(ip("198.18.0.50")), NS);
    assert_eq!(n.map(|n| n.mac), Some(CLIENT_MAC));
}

#[test]
fn a_held_packet_leaves_when_its_neighbour_answers_and_expires_otherwise() {
    let mut r = Rig::new();
    let mut s = Spec::new("198.18.0.50", "198.19.0.99", 17);
    s.dport = 7;
    let pkt = build(&s).frame;
    let out = r.run(&[(0, pkt.clone())], NS);
    // Held; an ARP request for the next hop goes out of interface 1.
    assert!(out.tx[0].is_empty());
    assert_eq!(out.tx[1].len(), 1);
    let req = &out.tx[1][0];
    let a = wire::arp::parse(req, 14).unwrap();
    assert_eq!(a.op, wire::arp::OP_REQUEST);
    assert_eq!(IpAddr::V4(a.target_ip), ip("198.19.0.99"));
    assert_eq!(IpAddr::V4(a.sender_ip), ip("198.19.0.1"));
    assert_eq!(req[..6], [0xff; 6]);
    assert_eq!(r.st.pending_len(), 1);
    // A second packet waits too, without a second request (rate limit).
    let out = r.run(&[(0, pkt.clone())], NS + 1000);
    assert!(out.tx[1].is_empty());
    assert_eq!(r.st.pending_len(), 2);
    // The neighbour answers: both leave, with its MAC.
    let peer = [2, 0, 0, 0, 0, 0x99];
    let mut reply = req.clone();
    let (IpAddr::V4(t), _) = (ip("198.19.0.99"), ()) else {
        unreachable!()
    };
    assert!(wire::arp::reply_in_place(&mut reply, 14, peer, t));
    let out = r.run(&[(1, reply)], 2 * NS);
    assert_eq!(out.tx[1].len(), 2);
    for f in &out.tx[1] {
        assert_eq!(f[..6], peer);
        assert_eq!(f[6..12], M1);
        assert_eq!(fields(f).ip_ttl, 63);
        checksums_ok(f);
    }
    assert_eq!(r.st.pending_len(), 0);
    // Another next hop never answers: its packet is freed after the hold.
    let s = Spec::new("198.18.0.50", "198.19.0.98", 17);
    r.run(&[(0, build(&s).frame)], 3 * NS);
    assert_eq!(r.st.pending_len(), 1);
    let out = r.run(&[], 10 * NS);
    assert!(out.tx.iter().all(Vec::is_empty));
    assert_eq!(r.st.pending_len(), 0);
    assert_eq!(r.st.counters.dropped(DropReason::NeighTimeout), 1);
}

#[test]
fn neighbour_solicitations_for_own_addresses_are_answered() {
    let mut r = Rig::new();
    let peer = [2, 0, 0, 0, 0, 0x66];
    let mut ns = vec![0; wire::ndp::NS_FRAME_LEN];
    let (IpAddr::V6(s), IpAddr::V6(t)) = (ip("2001:db8:1::66"), ip("2001:db8:1::1")) else {
        unreachable!()
    };
    wire::ndp::build_ns(&mut ns, peer, s, t).unwrap();
    let out = r.run(&[(1, ns)], NS);
    assert_eq!(out.tx[1].len(), 1);
    let f = &out.tx[1][0];
    let x = lbp_abi::wire::extract(f, 1);
    let na = wire::ndp::parse_na(f, usize::from(x.l3_offset), usize::from(x.l4_offset)).unwrap();
    assert_eq!(na.target, t);
    assert_eq!(na.target_ll, Some(M1));
    assert!(na.solicited);
    assert_eq!(f[..6], peer);
    assert_eq!(r.st.counters.nd_replies, 1);
    let n = r.shared.neigh.lookup(&NeighAddr::from(IpAddr::V6(s)), NS);
    assert_eq!(n.map(|n| n.mac), Some(peer));
}

/// What the core routes on its own (here the control plane's packets)
/// never goes to a martian destination, though the default route covers
/// most of them: dropped and counted as `Martian`.
#[test]
fn the_core_never_routes_to_a_martian() {
    let mut r = Rig::known();
    let dsts = [
        "224.0.0.251",
        "127.0.0.1",
        "255.255.255.255",
        "198.18.0.255",
        "169.254.1.1",
        "0.0.0.7",
        "ff02::1",
        "198.18.0.50",
    ];
    let mut rx = Vec::new();
    for dst in dsts {
        let src = if dst.contains(':') {
            "2001:db8::1"
        } else {
            "198.18.0.1"
        };
        let frame = tcp(src, dst, 40000, 80, SYN);
        let d = r.frames.alloc().unwrap();
        r.frames.slot_mut(d)[..frame.len()].copy_from_slice(&frame);
        let d = Desc {
            len: frame.len() as u32,
            ..d
        };
        rx.push((d, FROM_LOCAL));
    }
    let g = r.reader.enter();
    process_burst(g, &mut r.st, &r.shared, &mut r.frames, &rx, &mut r.out, NS);
    assert_eq!(r.st.counters.dropped(DropReason::Martian), 7);
    assert_eq!(r.st.counters.dropped(DropReason::NoRoute), 0);
    // Only the client's own address is routed out, on interface 0.
    assert_eq!(r.out.tx[0].len(), 1);
    assert!(r.out.tx[1].is_empty());
    let sent = fields(r.frames.packet(r.out.tx[0][0]));
    assert_eq!(ip_of(4, &sent.ip_dst), ip("198.18.0.50"));
    for q in &r.out.tx {
        for &d in q {
            r.frames.free(d);
        }
    }
    r.out.clear();
}

#[test]
fn local_and_malformed() {
    let mut r = Rig::known();
    let ssh = tcp("198.18.0.50", "198.18.0.1", 40000, 22, SYN);
    let mut bad_ihl = ssh.clone();
    bad_ihl[14] = 0x44;
    let out = r.run(
        &[
            (0, ssh.clone()),
            (0, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            (0, bad_ihl),
        ],
        NS,
    );
    assert_eq!(out.local, vec![ssh]);
    assert!(out.tx.iter().all(Vec::is_empty));
    assert_eq!(r.st.counters.dropped(DropReason::Malformed), 2);
    assert_eq!(r.st.counters.action(Action::Local), 1);
    assert_eq!(r.st.counters.rx.packets, 3);
}

#[test]
fn an_established_connection_keeps_its_back_end_after_a_weight_change() {
    let mut r = Rig::known();
    let out = r.run(
        &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
        NS,
    );
    let first = ip_of(4, &fields(&out.tx[1][0]).ip_dst);
    let idx = if first == ip("198.19.0.11") { 0 } else { 1 };
    // The control core takes that back end's weight to 0 (the same
    // compile: counters go on).
    let mut w = vec![vec![1, 1]];
    w[0][idx] = 0;
    let g = r.published.with_active(|g| g.reweighted(&w, &[]));
    r.published.publish(g);
    for (i, port) in (40001..40009).enumerate() {
        let out = r.run(
            &[
                (0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK)),
                (0, tcp("198.18.0.50", "198.18.0.10", port, 80, SYN)),
            ],
            2 * NS + i as u64,
        );
        assert_eq!(out.tx[1].len(), 2);
        assert_eq!(ip_of(4, &fields(&out.tx[1][0]).ip_dst), first, "sticks");
        assert_ne!(ip_of(4, &fields(&out.tx[1][1]).ip_dst), first, "weight 0");
    }
    assert_eq!(
        r.published.reclaim(),
        1,
        "the core moved past the old generation"
    );
    assert_eq!(r.st.counters.backend_new[0][idx], 1);
    assert_eq!(r.st.counters.backend_new[0][1 - idx], 8);
}

#[test]
fn a_connection_whose_back_end_left_or_went_into_maintenance_is_reset() {
    for maint in [false, true] {
        let mut r = Rig::known();
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
            NS,
        );
        let first = ip_of(4, &fields(&out.tx[1][0]).ip_dst);
        let idx = usize::from(first != ip("198.19.0.11"));
        // A reload that removes that back end (the pool reordered too), or
        // the same policy with it in maintenance.
        let g = if maint {
            let mut closed = vec![vec![false, false]];
            closed[0][idx] = true;
            r.published.with_active(|g| g.reweighted(&[], &closed))
        } else {
            let mut app = appliance();
            app.services[0].backends.remove(idx);
            app.services[0]
                .backends
                .insert(0, be("198.19.0.99", None, 1));
            Generation::new(Arc::new(policy), app)
        };
        r.published.publish(g);
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK))],
            2 * NS,
        );
        assert!(
            out.tx[1].is_empty(),
            "maint {maint}: not to the old back end"
        );
        assert_eq!(out.tx[0].len(), 1, "maint {maint}: a reset to the client");
        let f = fields(&out.tx[0][0]);
        assert_ne!(f.tcp_flags & tcp_flag::RST, 0, "maint {maint}");
        assert_eq!(r.st.counters.backend_gone, 1, "maint {maint}");
        // The client's next connection is balanced anew, never to it.
        let out = r.run(
            &[(0, tcp("198.18.0.50", "198.18.0.10", 40001, 80, SYN))],
            3 * NS,
        );
        assert_ne!(
            ip_of(4, &fields(&out.tx[1][0]).ip_dst),
            first,
            "maint {maint}"
        );
    }
}

#[test]
fn a_connection_keeps_its_back_end_when_a_reload_reorders_the_pool() {
    let mut r = Rig::known();
    let out = r.run(
        &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
        NS,
    );
    let first = fields(&out.tx[1][0]);
    let mut app = appliance();
    app.services[0].backends.reverse();
    app.services.swap(0, 1);
    // The policy's service index for the VIP follows the new order.
    let moved = |f: &Fields| {
        let mut d = policy(f);
        if d.action == Action::Balance as u32 {
            d.target = match d.target {
                0 => 1,
                1 => 0,
                t => t,
            };
        }
        d
    };
    r.published.publish(Generation::new(Arc::new(moved), app));
    let out = r.run(
        &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, ACK))],
        2 * NS,
    );
    let f = fields(&out.tx[1][0]);
    assert_eq!((f.ip_dst, f.dport), (first.ip_dst, first.dport), "sticks");
    assert_eq!(r.st.counters.backend_gone, 0);
}

#[test]
fn an_icmp_error_from_a_back_end_is_translated_for_the_client() {
    let mut r = Rig::known();
    let out = r.run(
        &[(0, tcp("198.18.0.50", "198.18.0.10", 40000, 80, SYN))],
        NS,
    );
    let fwd = out.tx[1][0].clone();
    let x = fields(&fwd);
    let backend = ip_of(4, &x.ip_dst);
    // The back end says "fragmentation needed" about the client's packet.
    let quoted = &fwd[14..14 + 28];
    let mut s = Spec::new(&backend.to_string(), "198.18.0.50", 1);
    s.payload = quoted.to_vec();
    let mut err = build(&s).frame;
    let l4 = 14 + 20;
    err[l4] = 3;
    err[l4 + 1] = 4;
    err[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let c = testutil::l4_expected(&err, 14, l4, 1);
    err[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    let out = r.run(&[(1, err)], 2 * NS);
    assert_eq!(out.tx[0].len(), 1, "{:?}", r.st.counters);
    let f = &out.tx[0][0];
    let y = fields(f);
    assert_eq!(ip_of(4, &y.ip_src), ip("198.18.0.10"));
    let e = wire::parse_icmp_error(f, 14, l4).unwrap();
    assert_eq!((e.dst, e.dport), (ip("198.18.0.10"), 80));
    assert_eq!((e.src, e.sport), (ip("198.18.0.50"), 40000));
    checksums_ok(f);
    assert_eq!(r.st.counters.icmp_errors, 1);
}

#[test]
fn link_local_address_from_the_mac() {
    // RFC 4291 appendix A: 02:00:00:00:00:a0 -> fe80::ff:fe00:a0.
    assert_eq!(IpAddr::V6(link_local(M0)), ip("fe80::ff:fe00:a0"));
    assert_eq!(
        IpAddr::V6(link_local([0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde])),
        ip("fe80::3656:78ff:fe9a:bcde")
    );
}
