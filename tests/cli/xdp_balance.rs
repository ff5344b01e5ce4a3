//! Balancing in XDP (DSR and NAT services of `balance maglev`), held to the
//! switching core: the fast path's program, in the kernel's test run, with
//! the tables the runtime publishes (`lbp_runtime::ring::fastbal`), sends
//! each new flow to the back end the core sends it to, with the very frame
//! the core sends (TTL or hop limit decreased, checksum, MACs of the next
//! hop; for NAT the destination address and port and the transport
//! checksum), and leaves NAT replies to a core that finds the flow by its
//! reply record; keeps a flow on its back end across new weights; lets a flow go
//! when its back end goes into maintenance (TCP to the cores, which reset
//! it; UDP balanced anew); leaves to the cores what they must decide (a
//! round-robin service, a TCP segment of no flow it knows, a back end whose neighbour
//! is unknown, new flows while it is stale); and counts what it balanced
//! per back end. Needs root (loading programs); skipped otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use lbp_abi::bpf::fast as slot;
use lbp_abi::{Action, Decision, Fields};
use lbp_compiler::bpf::{self, Mode};
use lbp_compiler::ir::Program;
use lbp_lab::require_netns;
use lbp_lab::testing::frame::checksum_oracle;
use lbp_runtime::config::Appliance;
use lbp_runtime::generation::{Decide, Generation};
use lbp_runtime::neigh::{Learned, NeighAddr, NeighTable};
use lbp_runtime::ring::bpf::{XskMap, xdp_test_run};
use lbp_runtime::ring::fastbal::{Out, Sizes, tables};
use lbp_runtime::ring::fastpath::{FastPath, flows_map};
use lbp_runtime::testbed::{Fate, Testbed, neighbour_mac};

use crate::core_differential::Rng;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// The OS index the test run receives on (the namespace's loopback) and the
/// one given to the servers' interface (a redirect).
const CLIENT_IFINDEX: u32 = 1;
const SERVERS_IFINDEX: u32 = 7;
/// The policy's virtual IPs.
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 100, 1));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));

const POLICY: &str = r#"
interface client { address 198.18.0.1/16
    address 2001:db8:2::1/64 }
interface servers { address 198.19.0.1/24
    address 2001:db8:1::1/64 }

pool web {
    backend 198.19.0.11
    backend 198.19.0.12
    backend 198.19.0.13 weight 2
}
pool web6 {
    backend 2001:db8:1::11
    backend 2001:db8:1::12
}
pool natweb {
    backend 198.19.0.11 port 8080
    backend 198.19.0.12
    backend 198.19.0.13 weight 2 port 8081
}
pool natweb6 {
    backend 2001:db8:1::11 port 8443
    backend 2001:db8:1::12
}

service dns {
    vip 198.19.100.1 udp port 53
    pool web
    balance maglev
    mode dsr
}
service http {
    vip 198.19.100.1 tcp port 80
    pool web
    balance maglev
    mode dsr
}
service http6 {
    vip 2001:db8:100::1 tcp port 80
    pool web6
    balance maglev
    mode dsr
}
service natted {
    vip 198.19.100.2 udp port 53
    pool web
    balance maglev
    mode nat
}
service nattcp {
    vip 198.19.100.2 tcp port 80
    pool natweb
    balance maglev
    mode nat to port 9000
}
service nat6 {
    vip 2001:db8:100::2 tcp port 443
    pool natweb6
    balance maglev
    mode nat
}
service nat6u {
    vip 2001:db8:100::2 udp port 53
    pool web6
    balance maglev
    mode nat
}
service rr {
    vip 198.19.100.3 udp port 53
    pool web
    balance round_robin
    mode nat
}
"#;

/// The interpreter as the generation's policy.
struct Interp(Program);

impl Decide for Interp {
    fn decide(&self, f: &Fields) -> Decision {
        lbp_compiler::interp::decide(&self.0, f)
    }
}

fn lowered(src: &str) -> Program {
    let a = lbp_lang::analyze(src);
    if let Some(d) = a.diagnostics.iter().find(|d| d.is_error()) {
        panic!("{}: {}", d.code, d.message);
    }
    lbp_compiler::lower::lower(&a.policy).expect("lowers")
}

fn appliance(prog: &Program, src: &str) -> Appliance {
    let mut app = lbp::appliance::appliance(prog, src);
    for (i, iface) in app.interfaces.iter_mut().enumerate() {
        iface.mac = [0x02, 0, 0x5e, 0, 0, 0x10 + i as u8];
    }
    app
}

/// An Ethernet frame to the appliance's client interface: IPv4 or IPv6 (by
/// the addresses), UDP (`flags` None) or TCP with `flags`, 8 bytes of data.
fn frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: Option<u8>) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    match flags {
        None => {
            l4.extend_from_slice(&16u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        Some(fl) => {
            l4.extend_from_slice(&1000u32.to_be_bytes());
            l4.extend_from_slice(&2000u32.to_be_bytes());
            l4.extend_from_slice(&[0x50, fl, 0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    l4.extend_from_slice(b"lbp-test");
    let proto = if flags.is_some() { 6 } else { 17 };
    let mut f = vec![0x02, 0, 0x5e, 0, 0, 0x10, 0x02, 0, 0x5e, 0, 0, 0x99];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let len = (20 + l4.len()) as u16;
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&len.to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum_oracle(&ip, 0);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(&l4);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// The appliance's fast path with balancing tables published.
struct Bench {
    prog: Program,
    app: Appliance,
    fast: FastPath,
    fd: OwnedFd,
    _xsk: XskMap,
    flows: lbp_runtime::ring::bpf::LoadedMap,
    outs: Vec<Option<Out>>,
}

impl Bench {
    fn new(neigh: &NeighTable) -> Bench {
        Bench::of(POLICY, neigh, flows_map().unwrap())
    }

    /// The fast path of policy `src` with the flows map `flows` (a reload
    /// hands the new program the flows of the old one).
    fn of(src: &str, neigh: &NeighTable, flows: lbp_runtime::ring::bpf::LoadedMap) -> Bench {
        let prog = lowered(src);
        let app = appliance(&prog, src);
        let p = bpf::compile(&prog, Mode::Fast).expect("compiles to eBPF");
        let sizes = Sizes::of(&app);
        let mut fast = FastPath::new("lbp_bal_test", p.prog.clone(), &p.maps, sizes).unwrap();
        fast.set_interfaces(&[(CLIENT_IFINDEX, slot::IFACE_TX)])
            .unwrap();
        let g = Generation::new(Arc::new(Interp(prog.clone())), app.clone());
        fast.set_nat_backends(&g.nat_backends).unwrap();
        let outs = vec![
            Some(Out {
                ifindex: CLIENT_IFINDEX,
                tx: true,
            }),
            Some(Out {
                ifindex: SERVERS_IFINDEX,
                tx: true,
            }),
        ];
        fast.publish_balance(&tables(&g, neigh, &outs, 0, &sizes))
            .unwrap();
        let xsk = XskMap::new(1).unwrap();
        let fd = fast.load_for(&xsk, &flows).expect("the verifier takes it");
        Bench {
            prog,
            app,
            fast,
            fd,
            _xsk: xsk,
            flows,
            outs,
        }
    }

    /// A switching core running the same policy and appliance.
    fn core(&self) -> Testbed {
        Testbed::new(Arc::new(Interp(self.prog.clone())), self.app.clone()).unwrap()
    }

    fn publish(&mut self, g: &Generation, neigh: &NeighTable) {
        let sizes = Sizes::of(&self.app);
        self.fast
            .publish_balance(&tables(g, neigh, &self.outs, 0, &sizes))
            .unwrap();
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = xdp_test_run(self.fd.as_fd(), frame).expect("test run");
        (r.action, r.frame)
    }

    fn counter(&self, s: u32) -> u64 {
        self.fast
            .counters()
            .unwrap()
            .get(s as usize)
            .map_or(0, |c| c.packets)
    }
}

fn backends() -> Vec<IpAddr> {
    [
        "198.19.0.11",
        "198.19.0.12",
        "198.19.0.13",
        "2001:db8:1::11",
        "2001:db8:1::12",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect()
}

fn known_neighbours() -> NeighTable {
    let n = NeighTable::new(64);
    for a in backends() {
        assert!(n.set_permanent(&NeighAddr::from(a), neighbour_mac(a)));
    }
    n
}

/// The back end a frame the appliance sent went to (by its MAC).
fn backend_of(sent: &[u8]) -> Option<IpAddr> {
    backends()
        .into_iter()
        .find(|&a| sent[..6] == neighbour_mac(a))
}

fn client(i: u32) -> IpAddr {
    IpAddr::from([198, 18, (i >> 8) as u8 + 1, i as u8])
}

fn client6(i: u32) -> IpAddr {
    format!("2001:db8:2::{:x}", 0x100 + i).parse().unwrap()
}

#[test]
fn new_flows_go_where_the_core_sends_them_with_the_cores_frame() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let mut core = b.core();
    let mut per_backend = std::collections::BTreeMap::new();
    let mut cases = Vec::new();
    for i in 0..400u32 {
        let port = 1024 + (i * 7919 % 60000) as u16;
        cases.push(frame(client(i), VIP, port, 53, None));
        cases.push(frame(client(i), VIP, port, 80, Some(0x02)));
        cases.push(frame(client6(i), VIP6, port, 80, Some(0x02)));
    }
    for f in &cases {
        let sent = balanced_alike(&b, &mut core, f, "");
        *per_backend
            .entry(backend_of(&sent).unwrap())
            .or_insert(0u32) += 1;
    }
    // Maglev with 1:1:2 and 1:1: every back end has flows.
    assert_eq!(per_backend.len(), 5, "{per_backend:?}");
    let n = cases.len() as u64;
    assert_eq!(b.counter(slot::ACTIONS + Action::Balance as u32), n);
    assert_eq!(b.counter(slot::SEEN), n);
    assert_eq!(b.counter(slot::TO_CORES), 0);
    // Per back end: new flows and frames (slots after the rules').
    let base = Sizes::of(&b.app).counters;
    let (mut new, mut frames) = (0, 0);
    for k in 0..Sizes::of(&b.app).backends {
        new += b.counter(base + 2 * k);
        frames += b.counter(base + 2 * k + 1);
    }
    assert_eq!((new, frames), (n, n));

    // The same flows again (the TCP ones with ACK): known, same back end,
    // not new.
    for f in &cases {
        let mut f = f.clone();
        let tcp = f[23] == 6 || f[20] == 6;
        if tcp {
            let at = if f[12] == 0x08 {
                14 + 20 + 13
            } else {
                14 + 40 + 13
            };
            f[at] = 0x10;
        }
        let (action, left) = b.run(&f);
        assert_eq!(action, XDP_REDIRECT);
        let out = core.send(&f, 0);
        let Some(Fate::Sent { frame: sent, .. }) = out.fates.first() else {
            panic!("the core did not send it on: {:?}", out.fates);
        };
        assert_eq!(&left, sent);
    }
    let mut new2 = 0;
    for k in 0..Sizes::of(&b.app).backends {
        new2 += b.counter(base + 2 * k);
    }
    assert_eq!(new2, n, "no new flow counted for known ones");
}

#[test]
fn what_the_cores_must_decide_goes_to_them_untouched() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let rr_vip: IpAddr = "198.19.100.3".parse().unwrap();
    for f in [
        // Round robin: the cores' counter.
        frame(client(1), rr_vip, 4000, 53, None),
        // A TCP segment of no flow known here (an ACK), a SYN-ACK.
        frame(client(2), VIP, 4000, 80, Some(0x10)),
        frame(client(2), VIP, 4000, 80, Some(0x12)),
    ] {
        let (action, left) = b.run(&f);
        assert_eq!((action, &left), (XDP_PASS, &f));
    }
    // TTL 1: the cores answer it.
    let mut f = frame(client(3), VIP, 4000, 53, None);
    f[22] = 1;
    let c = checksum_oracle(&[&f[14..24], &[0, 0], &f[26..34]].concat(), 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(b.run(&f), (XDP_PASS, f.clone()));
    assert_eq!(b.counter(slot::ACTIONS + Action::Balance as u32), 0);

    // Neighbours unknown: nothing is sent from XDP; stale: known flows go,
    // new ones are the cores' (which re-confirm the neighbour).
    let mut b2 = Bench::new(&NeighTable::new(64));
    let udp = frame(client(4), VIP, 4000, 53, None);
    assert_eq!(b2.run(&udp).0, XDP_PASS);
    let g = Generation::new(Arc::new(Interp(b2.prog.clone())), b2.app.clone());
    b2.publish(&g, &neigh);
    assert_eq!(b2.run(&udp).0, XDP_REDIRECT, "known now");
    let stale = NeighTable::new(64);
    for a in backends() {
        stale.learn(&NeighAddr::from(a), neighbour_mac(a), Learned::Request, 0);
    }
    b2.publish(&g, &stale);
    assert_eq!(b2.run(&udp).0, XDP_REDIRECT, "an established flow goes on");
    let other = frame(client(5), VIP, 4001, 53, None);
    assert_eq!(b2.run(&other), (XDP_PASS, other.clone()), "a new one waits");
}

#[test]
fn flows_keep_their_back_end_until_it_leaves() {
    require_netns!();
    let neigh = known_neighbours();
    let mut b = Bench::new(&neigh);
    let g = Generation::new(Arc::new(Interp(b.prog.clone())), b.app.clone());
    let flows: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32)
        .map(|i| {
            let port = 2000 + i as u16;
            (
                frame(client(i), VIP, port, 53, None),
                frame(client(i), VIP, port, 80, Some(0x02)),
            )
        })
        .collect();
    let first: Vec<(IpAddr, IpAddr)> = flows
        .iter()
        .map(|(u, t)| {
            let (a, x) = b.run(u);
            let (c, y) = b.run(t);
            assert_eq!((a, c), (XDP_REDIRECT, XDP_REDIRECT));
            (backend_of(&x).unwrap(), backend_of(&y).unwrap())
        })
        .collect();
    // New weights 5:1:0 (the third back end's new flows go elsewhere): every
    // flow keeps its back end.
    let g2 = g.reweighted(&[vec![5, 1, 0], vec![5, 1, 0]], &[]);
    b.publish(&g2, &neigh);
    let ack = |t: &[u8]| {
        let mut t = t.to_vec();
        t[14 + 20 + 13] = 0x10;
        t
    };
    for ((u, t), (bu, bt)) in flows.iter().zip(&first) {
        assert_eq!(backend_of(&b.run(u).1), Some(*bu), "UDP flow moved");
        assert_eq!(backend_of(&b.run(&ack(t)).1), Some(*bt), "TCP flow moved");
    }
    // The third back end in maintenance: its UDP flows go elsewhere, its
    // TCP ones to the cores (which reset them); the others stay.
    let third: IpAddr = "198.19.0.13".parse().unwrap();
    let closed = vec![vec![false, false, true], vec![false, false, true]];
    let g3 = g2.reweighted(&[vec![5, 1, 0], vec![5, 1, 0]], &closed);
    b.publish(&g3, &neigh);
    let (mut moved, mut to_cores) = (0, 0);
    for ((u, t), (bu, bt)) in flows.iter().zip(&first) {
        let (a, x) = b.run(u);
        assert_eq!(a, XDP_REDIRECT);
        if *bu == third {
            assert_ne!(backend_of(&x), Some(third));
            moved += 1;
        } else {
            assert_eq!(backend_of(&x), Some(*bu));
        }
        let t = ack(t);
        let (a, y) = b.run(&t);
        if *bt == third {
            assert_eq!((a, &y), (XDP_PASS, &t));
            to_cores += 1;
        } else {
            assert_eq!((a, backend_of(&y)), (XDP_REDIRECT, Some(*bt)));
        }
    }
    assert!(moved > 20 && to_cores > 20, "{moved} {to_cores}");
}

#[test]
fn a_back_end_on_the_receiving_interface_is_sent_with_xdp_tx() {
    require_netns!();
    let neigh = known_neighbours();
    let mut b = Bench::new(&neigh);
    // The servers' interface is the one frames come in by.
    b.outs[1] = Some(Out {
        ifindex: CLIENT_IFINDEX,
        tx: true,
    });
    let g = Generation::new(Arc::new(Interp(b.prog.clone())), b.app.clone());
    b.publish(&g, &neigh);
    let f = frame(client(9), VIP, 999, 53, None);
    assert_eq!(b.run(&f).0, XDP_TX);
    // An interface the program may not transmit on: the cores send.
    b.outs[1] = Some(Out {
        ifindex: SERVERS_IFINDEX,
        tx: false,
    });
    b.publish(&g, &neigh);
    let f = frame(client(10), VIP, 999, 53, None);
    assert_eq!(b.run(&f), (XDP_PASS, f.clone()));
}

/// A reload that reorders the pool and drops a back end: the new program,
/// with the old one's flows, keeps every flow whose back end still serves
/// on it (found again by address), and lets the dropped one's flows go.
#[test]
fn a_reload_that_reorders_the_pool_moves_no_flow() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let flows: Vec<Vec<u8>> = (0..300u32)
        .map(|i| frame(client(i), VIP, 3000 + i as u16, 53, None))
        .collect();
    let first: Vec<IpAddr> = flows
        .iter()
        .map(|f| backend_of(&b.run(f).1).unwrap())
        .collect();
    // The same pool in another order, without 198.19.0.12, and a new one.
    let reloaded = POLICY.replace(
        "    backend 198.19.0.11\n    backend 198.19.0.12\n    backend 198.19.0.13 weight 2\n",
        "    backend 198.19.0.14\n    backend 198.19.0.13 weight 2\n    backend 198.19.0.11\n",
    );
    assert_ne!(reloaded, POLICY);
    let Bench { flows: shared, .. } = b;
    neigh.set_permanent(
        &NeighAddr::from("198.19.0.14".parse::<IpAddr>().unwrap()),
        neighbour_mac("198.19.0.14".parse().unwrap()),
    );
    let b2 = Bench::of(&reloaded, &neigh, shared);
    let gone: IpAddr = "198.19.0.12".parse().unwrap();
    let mut moved = 0;
    for (f, was) in flows.iter().zip(&first) {
        let (action, left) = b2.run(f);
        assert_eq!(action, XDP_REDIRECT);
        let now = backend_of_any(&left).unwrap_or_else(|| panic!("sent to {:02x?}", &left[..6]));
        if *was == gone {
            assert_ne!(now, gone);
            moved += 1;
        } else {
            assert_eq!(now, *was, "a flow moved across the reload");
        }
    }
    assert!(moved > 20, "{moved} flows of the dropped back end");
}

/// The back end a frame went to, among the IPv4 ones of either policy.
fn backend_of_any(sent: &[u8]) -> Option<IpAddr> {
    (11..=14)
        .map(|i| IpAddr::from([198, 19, 0, i]))
        .find(|&a| sent[..6] == neighbour_mac(a))
}

/// Hostile frames (the balanced frames of the first test, each with one
/// byte changed, 20 times over): whatever XDP sends to a back end, the core
/// sends there too, byte for byte; whatever it leaves to the cores, it
/// leaves untouched; nothing else comes out of it.
#[test]
fn hostile_frames_are_balanced_as_the_core_balances_them_or_left_to_it() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let mut core = b.core();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = |n: u64| rng.next() % n;
    let (mut sent, mut passed, mut other) = (0u32, 0u32, 0u32);
    for i in 0..300u32 {
        let port = 1024 + i as u16;
        let bases = [
            frame(client(i), VIP, port, 53, None),
            frame(client(i), VIP, port, 80, Some(0x02)),
            frame(client6(i), VIP6, port, 80, Some(0x02)),
        ];
        for base in bases {
            for _ in 0..20 {
                let mut f = base.clone();
                let at = next(f.len() as u64) as usize;
                f[at] = next(256) as u8;
                let (action, left) = b.run(&f);
                match action {
                    // To a back end (a redirect to the servers' interface)
                    // or a reset back out of the client's (XDP_TX).
                    XDP_REDIRECT | XDP_TX => {
                        let out = core.send(&f, 0);
                        let iface = if action == XDP_TX { 0 } else { 1 };
                        match out.fates.first() {
                            Some(Fate::Sent { iface: i, frame }) if *i == iface => {
                                assert_eq!(&left, frame, "from {f:02x?}")
                            }
                            _ => panic!(
                                "XDP sent {f:02x?} out of interface {iface}; the core: {:?}",
                                out.fates
                            ),
                        }
                        if action == XDP_REDIRECT {
                            sent += 1;
                        } else {
                            other += 1;
                        }
                    }
                    XDP_PASS => {
                        assert_eq!(left, f, "left to the cores untouched");
                        passed += 1;
                    }
                    _ => {
                        // A drop: the policy's (bpf_fast holds drops to the
                        // interpreter).
                        other += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "hostile: {sent} sent to a back end as the core sends them, {passed} left to the cores, {other} dropped or reset"
    );
    assert!(
        sent > 5000 && passed > 0 && other > 1000,
        "{sent} {passed} {other}"
    );
}

/// A flow the fast path balanced, then left to the cores (its back end's
/// neighbour forgotten: only the cores find it again): the core, which has
/// no connection for it, finds the flow's back end in the fast path's flow
/// table and sends its segments there, instead of resetting it; a SYN of
/// the same tuple is a new connection, balanced by the core's own table.
#[test]
fn a_flow_left_to_the_cores_keeps_its_back_end_there() {
    require_netns!();
    let neigh = known_neighbours();
    let mut b = Bench::new(&neigh);
    let mut core = b.core();
    core.set_xdp_flows(b.flows.try_clone().unwrap());
    let g = Generation::new(Arc::new(Interp(b.prog.clone())), b.app.clone());
    let mut kept = 0;
    for i in 0..50u32 {
        let syn = frame(client(i), VIP, 5000 + i as u16, 80, Some(0x02));
        b.publish(&g, &neigh);
        let (action, sent) = b.run(&syn);
        assert_eq!(action, XDP_REDIRECT);
        let to = backend_of(&sent).unwrap();
        // The neighbours forgotten: XDP leaves the segments to the cores.
        b.publish(&g, &NeighTable::new(64));
        let mut ack = syn.clone();
        ack[14 + 20 + 13] = 0x10;
        assert_eq!(b.run(&ack), (XDP_PASS, ack.clone()));
        let out = core.send(&ack, 0);
        match out.fates.first() {
            Some(Fate::Sent { iface: 1, frame }) => {
                assert_eq!(backend_of(frame), Some(to), "segment {i}");
                kept += 1;
            }
            f => panic!("segment {i}: the core did {f:?}, not send it to its back end"),
        }
    }
    assert_eq!(kept, 50);
    assert_eq!(core.counters().unknown_resets, 0);
}

/// `f` through the core, which must send it to the servers, and through
/// XDP, which must redirect it there with the same frame; that frame.
fn balanced_alike(b: &Bench, core: &mut Testbed, f: &[u8], what: &str) -> Vec<u8> {
    let out = core.send(f, 0);
    let Some(Fate::Sent {
        iface: 1,
        frame: sent,
    }) = out.fates.first()
    else {
        panic!(
            "{what}the core did not send {f:02x?} to the servers: {:?}",
            out.fates
        );
    };
    let (action, left) = b.run(f);
    assert_eq!(
        action, XDP_REDIRECT,
        "{what}XDP sends it to the servers' interface"
    );
    assert_eq!(&left, sent, "{what}the frame XDP sends is the core's");
    left
}

/// `f` (from [`frame`]) with its transport checksum computed (UDP's too).
fn checksummed(mut f: Vec<u8>) -> Vec<u8> {
    let v4 = f[12] == 0x08;
    let (l3, l4) = if v4 { (14, 34) } else { (14, 54) };
    let proto = if v4 { f[l3 + 9] } else { f[l3 + 6] };
    let len = if v4 {
        usize::from(u16::from_be_bytes([f[16], f[17]])) - 20
    } else {
        usize::from(u16::from_be_bytes([f[18], f[19]]))
    };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut pseudo = Vec::new();
    if v4 {
        pseudo.extend_from_slice(&f[26..34]);
    } else {
        pseudo.extend_from_slice(&f[22..54]);
    }
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo.extend_from_slice(&f[l4..l4 + len]);
    let mut c = checksum_oracle(&pseudo, 0);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// Whether the IPv4 header checksum and the transport checksum of `f` are
/// right (a UDP checksum of 0 over IPv4 counts as right).
fn checksums_hold(f: &[u8]) -> bool {
    let v4 = f[12] == 0x08;
    if v4 && checksum_oracle(&f[14..34], 0) != 0 {
        return false;
    }
    let l4 = if v4 { 34 } else { 54 };
    let proto = if v4 { f[23] } else { f[20] };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    if v4 && proto == 17 && f[at..at + 2] == [0, 0] {
        return true;
    }
    checksummed(f.to_vec()) == f
}

/// The answer of a back end to `sent` (a frame the appliance sent it): the
/// addresses and ports swapped, its checksum right, into the servers'
/// interface.
fn reply_to(sent: &[u8]) -> Vec<u8> {
    let mut r = sent.to_vec();
    let v4 = r[12] == 0x08;
    let (src, len, l4) = if v4 { (26, 4, 34) } else { (22, 16, 54) };
    let a = r[src..src + len].to_vec();
    let b = r[src + len..src + 2 * len].to_vec();
    r[src..src + len].copy_from_slice(&b);
    r[src + len..src + 2 * len].copy_from_slice(&a);
    let (sp, dp) = (r[l4..l4 + 2].to_vec(), r[l4 + 2..l4 + 4].to_vec());
    r[l4..l4 + 2].copy_from_slice(&dp);
    r[l4 + 2..l4 + 4].copy_from_slice(&sp);
    let proto = if v4 { r[23] } else { r[20] };
    if proto == 6 {
        // A SYN-ACK.
        r[l4 + 13] = 0x12;
    }
    if v4 {
        r[22] = 64;
        r[24..26].copy_from_slice(&[0, 0]);
        let c = checksum_oracle(&r[14..34], 0);
        r[24..26].copy_from_slice(&c.to_be_bytes());
    } else {
        r[21] = 64;
    }
    checksummed(r)
}

#[test]
fn nat_flows_are_rewritten_as_the_core_does_and_their_replies_found_by_a_core() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let mut core = b.core();
    // A core that never saw the flows, with the flows map; and one without.
    let mut other = b.core();
    other.set_xdp_flows(b.flows.try_clone().unwrap());
    let mut blind = b.core();
    let vip: IpAddr = "198.19.100.2".parse().unwrap();
    let vip6: IpAddr = "2001:db8:100::2".parse().unwrap();
    let mut cases = Vec::new();
    // Few clients (the cores' neighbour tables answer the replies), many
    // ports.
    for i in 0..200u32 {
        let port = 1024 + (i * 7919 % 60000) as u16;
        let (c, c6) = (client(i % 16), client6(i % 16));
        // UDP over IPv4 with a checksum and without one (0 stays 0).
        cases.push(checksummed(frame(c, vip, port, 53, None)));
        cases.push(frame(c, vip, port + 1, 53, None));
        cases.push(checksummed(frame(c, vip, port, 80, Some(0x02))));
        cases.push(checksummed(frame(c6, vip6, port, 443, Some(0x02))));
        cases.push(checksummed(frame(c6, vip6, port, 53, None)));
    }
    let mut ports = std::collections::BTreeSet::new();
    for (n, f) in cases.iter().enumerate() {
        let left = balanced_alike(&b, &mut core, f, &format!("case {n}: "));
        let zero = f[12] == 0x08 && f[23] == 17 && f[40..42] == [0, 0];
        assert!(
            zero || checksums_hold(&left),
            "case {n}: checksums of {left:02x?}"
        );
        let l4 = if left[12] == 0x08 { 34 } else { 54 };
        ports.insert(u16::from_be_bytes([left[l4 + 2], left[l4 + 3]]));

        // The back end's reply: a core that never saw the flow translates
        // it as the core that balanced it would, from the reply record.
        let reply = reply_to(&left);
        let want = core.send(&reply, 1);
        let Some(Fate::Sent {
            iface: 0,
            frame: want,
        }) = want.fates.first()
        else {
            panic!(
                "case {n}: the balancing core did not send the reply to the client: {:?}",
                want.fates
            );
        };
        let got = other.send(&reply, 1);
        assert_eq!(
            got.fates.first(),
            Some(&Fate::Sent {
                iface: 0,
                frame: want.clone()
            }),
            "case {n}: the reply through a core that did not balance the flow"
        );
        let blind = blind.send(&reply, 1);
        assert_ne!(
            blind.fates.first(),
            Some(&Fate::Sent {
                iface: 0,
                frame: want.clone()
            }),
            "case {n}: a core without the flows map cannot translate it"
        );
    }
    // Ports: kept (53, 443), the back end's (8080, 8081, 8443) and the
    // service's `to port` (9000).
    for p in [53, 443, 8080, 8081, 8443, 9000] {
        assert!(ports.contains(&p), "port {p} in {ports:?}");
    }
    assert_eq!(other.counters().xdp_adopted, cases.len() as u64);
    assert_eq!(b.counter(slot::TO_CORES), 0);
}

/// Two NAT services of one virtual IP on the same back ends and port: one
/// balanced in XDP (maglev), one on the cores (round robin).
const TWO_NAT: &str = r#"
interface client { address 198.18.0.1/16 }
interface servers { address 198.19.0.1/24 }
pool natweb {
    backend 198.19.0.11 port 8080
    backend 198.19.0.12 port 8080
}
service fast {
    vip 198.19.100.2 tcp port 80
    pool natweb
    balance maglev
    mode nat
}
service slow {
    vip 198.19.100.2 tcp port 81
    pool natweb
    balance round_robin
    mode nat
}
"#;

/// A client port that served a connection the cores balanced, which ended
/// (a RST), then opens one to another service that XDP balances to the same
/// back end and port: the back end's SYN-ACK answers the new flow and is
/// translated as its (port 80), not the ended one's (port 81), by a core
/// with the flows map. Without XDP's records (a core without the map) the
/// ended connection still translates it, as it did the retransmitted SYN-ACK
/// of a connection the client closed early.
#[test]
fn a_syn_ack_on_a_tuple_whose_connection_ended_is_the_new_flows() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::of(TWO_NAT, &neigh, flows_map().unwrap());
    let mut core = b.core();
    core.set_xdp_flows(b.flows.try_clone().unwrap());
    let mut blind = b.core();
    let vip: IpAddr = "198.19.100.2".parse().unwrap();
    let c = client(7);
    let src_port = |f: &[u8]| u16::from_be_bytes([f[34], f[35]]);
    let mut tried = 0;
    for port in 40_000u16..40_064 {
        // The cores' connection to port 81, then its end.
        let syn81 = checksummed(frame(c, vip, port, 81, Some(0x02)));
        let rst81 = checksummed(frame(c, vip, port, 81, Some(0x04)));
        let mut on_core = None;
        for t in [&mut core, &mut blind] {
            let out = t.send(&syn81, 0);
            let Some(Fate::Sent { iface: 1, frame }) = out.fates.first() else {
                panic!("the core did not balance {port}: {:?}", out.fates);
            };
            on_core = backend_of(frame);
            t.send(&rst81, 0);
        }
        // XDP balances the new SYN to port 80.
        let syn80 = checksummed(frame(c, vip, port, 80, Some(0x02)));
        let (action, sent) = b.run(&syn80);
        assert!(
            action == XDP_TX || action == XDP_REDIRECT,
            "{port}: {action}"
        );
        if backend_of(&sent) != on_core {
            continue;
        }
        tried += 1;
        let syn_ack = reply_to(&sent);
        // By the client's interface (a spoofed back end): not taken over.
        let adopted = core.counters().xdp_adopted;
        core.send(&syn_ack, 0);
        assert_eq!(
            core.counters().xdp_adopted,
            adopted,
            "{port}: by the client side"
        );
        let got = core.send(&syn_ack, 1);
        let Some(Fate::Sent { iface: 0, frame }) = got.fates.first() else {
            panic!(
                "{port}: the SYN-ACK was not sent to the client: {:?}",
                got.fates
            );
        };
        assert_eq!(
            src_port(frame),
            80,
            "{port}: translated as the ended flow's"
        );
        assert!(checksums_hold(frame), "{port}: {frame:02x?}");
        let got = blind.send(&syn_ack, 1);
        let Some(Fate::Sent { iface: 0, frame }) = got.fates.first() else {
            panic!(
                "{port}: a core without the map did not translate it: {:?}",
                got.fates
            );
        };
        assert_eq!(src_port(frame), 81, "{port}: without the map");
    }
    assert!(
        tried >= 8,
        "only {tried} ports met the same back end on both paths"
    );
    assert_eq!(core.counters().xdp_adopted, tried);
}

/// An address in the `Fields` form (IPv4 mapped).
fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The flows map's key of an IPv4 flow of protocol `proto` from `c:port` to
/// `vip:vport` (`lbp_abi::bpf::fast::FlowKey`).
fn flow_key(c: IpAddr, vip: IpAddr, port: u16, vport: u16, proto: u8) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(&mapped(c));
    key[16..32].copy_from_slice(&mapped(vip));
    key[32..34].copy_from_slice(&port.to_ne_bytes());
    key[34..36].copy_from_slice(&vport.to_ne_bytes());
    key[36..38].copy_from_slice(&[4, proto]);
    key
}

/// A reply record outlives a flow that moved: when the flow's own record
/// names another back end, the old back end's reply is not taken over (it
/// would move a live connection to it), and a core leaves it untranslated.
#[test]
fn a_reply_record_is_taken_over_only_for_the_flows_back_end() {
    require_netns!();
    let neigh = known_neighbours();
    let b = Bench::of(TWO_NAT, &neigh, flows_map().unwrap());
    let mut core = b.core();
    core.set_xdp_flows(b.flows.try_clone().unwrap());
    let vip: IpAddr = "198.19.100.2".parse().unwrap();
    for (i, port) in (41_000u16..41_016).enumerate() {
        let c = client(i as u32);
        let (action, sent) = b.run(&checksummed(frame(c, vip, port, 80, Some(0x02))));
        assert!(
            action == XDP_TX || action == XDP_REDIRECT,
            "{port}: {action}"
        );
        let to = backend_of(&sent).expect("sent to a back end");
        let other = backends()
            .into_iter()
            .take(2)
            .find(|&a| a != to)
            .expect("two back ends");
        // The flow's record now names the other back end.
        let key = flow_key(c, vip, port, 80, 6);
        let flow = lbp_abi::bpf::fast::Flow {
            backend: mapped(other),
            stamp: 1,
            index: 0,
        };
        let seen = lbp_runtime::ring::fastbal::flow_clock();
        lbp_runtime::ring::fastbal::set_record(&b.flows, &key, &flow, seen).unwrap();
        let got = core.send(&reply_to(&sent), 1);
        let translated = got.fates.iter().any(
            |f| matches!(f, Fate::Sent { iface: 0, frame } if frame[26..30] == mapped(vip)[12..]),
        );
        assert!(
            !translated,
            "{port}: taken over from a stale reply record: {:?}",
            got.fates
        );
    }
    assert_eq!(core.counters().xdp_adopted, 0);
}

/// The flow table is a set-associative cache: a new flow whose bucket's
/// ways are all taken replaces the one seen longest ago, and only it; a
/// flow's packet marks it seen now, so it outlives flows idle longer.
#[test]
fn a_full_bucket_gives_the_way_seen_longest_ago_to_a_new_flow() {
    require_netns!();
    use lbp_runtime::ring::fastbal::{flow_bucket, flow_clock, set_record, xdp_flows_each};
    let neigh = known_neighbours();
    let b = Bench::new(&neigh);
    let key_of = |c: IpAddr, port: u16| flow_key(c, VIP, port, 53, 17);
    // Ten UDP flows to `dns` that share one bucket (the map's hash key is
    // random: found by trying).
    let want = flow_bucket(&b.flows, &key_of(client(0), 1024)).unwrap();
    let mut flows = vec![(client(0), 1024u16)];
    'search: for i in 0..64u32 {
        for port in 1025..=u16::MAX {
            if flow_bucket(&b.flows, &key_of(client(i), port)) == Some(want) {
                flows.push((client(i), port));
                if flows.len() == 10 {
                    break 'search;
                }
            }
        }
    }
    assert_eq!(flows.len(), 10, "ten flows of one bucket");
    let recorded = || {
        let mut v = Vec::new();
        xdp_flows_each(&b.flows, |x| {
            v.push((x.key.client, x.key.client_port, x.seen));
            true
        })
        .unwrap();
        v
    };
    let has = |v: &[([u8; 16], u16, u32)], (c, port): (IpAddr, u16)| {
        v.iter()
            .find(|x| x.0 == mapped(c) && x.1 == port)
            .map(|x| x.2)
    };
    // The first eight fill the bucket, seen 5 to 60 units ago; the fourth
    // (index 3) longest ago.
    let now = flow_clock();
    for (n, &(c, port)) in flows[..8].iter().enumerate() {
        let age = if n == 3 { 60 } else { 5 + n as u32 };
        let flow = slot::Flow {
            backend: mapped(backends()[0]),
            stamp: 1,
            index: 0,
        };
        let seen = now
            .checked_sub(age)
            .expect("the coarse clock past 60 units (the machine up for over a minute)");
        set_record(&b.flows, &key_of(c, port), &flow, seen).unwrap();
    }
    assert_eq!(recorded().len(), 8);
    // The ninth takes the fourth's way.
    let (c, port) = flows[8];
    let (action, _) = b.run(&frame(c, VIP, port, 53, None));
    assert!(action == XDP_TX || action == XDP_REDIRECT, "{action}");
    let v = recorded();
    assert_eq!(v.len(), 8, "{v:?}");
    assert!(has(&v, flows[3]).is_none(), "the way seen longest ago kept");
    let seen = has(&v, flows[8]).expect("the new flow recorded");
    assert!(seen.abs_diff(flow_clock()) <= 1, "seen {seen}");
    for n in [0, 1, 2, 4, 5, 6, 7] {
        assert!(has(&v, flows[n]).is_some(), "flow {n} lost");
    }
    // A packet of the eighth (seen 12 units ago, now the longest) marks it
    // seen now; the tenth flow then takes the way of the seventh (11 units
    // ago), not the eighth's.
    let (c, port) = flows[7];
    let (action, _) = b.run(&frame(c, VIP, port, 53, None));
    assert!(action == XDP_TX || action == XDP_REDIRECT, "{action}");
    let seen = has(&recorded(), flows[7]).unwrap();
    assert!(seen.abs_diff(flow_clock()) <= 1, "seen {seen}");
    let (c, port) = flows[9];
    b.run(&frame(c, VIP, port, 53, None));
    let v = recorded();
    assert!(has(&v, flows[9]).is_some() && has(&v, flows[7]).is_some());
    assert!(has(&v, flows[6]).is_none(), "{v:?}");
    assert_eq!(v.len(), 8);
}
