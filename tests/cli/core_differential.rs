//! The switching core against the reference interpreter: random frames aimed
//! at the stock policies and the case corpus go through the policy's appliance
//! (one core on in-memory rings, deciding with the JIT), and what the core did
//! with each must follow from the interpreter's decision for the same fields
//! (`Outcome::follows`): the core asked the policy and got that decision, and the
//! frame ended where that action may end (a reset back to its sender, a balanced
//! frame on its way to a back end of the service, a forwarded one out of the
//! route's interface, a drop for one of the action's reasons), or the core
//! rightly handled it before the policy (ARP, neighbour discovery, malformed,
//! NAT return traffic). Frames come in short flows (a SYN, later segments, the
//! back end's answer) so that the connection table is exercised too, and some
//! are damaged byte by byte.
//!
//! Random choices come from a seeded xorshift generator: a failure names its
//! policy and seed and reproduces.

use crate::{files, root};
use lbp::testbed::{CoreTester, Shared};
use lbp_abi::tcp_flag;
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::{Program, interp, jit, lower};
use lbp_runtime::config::Appliance;
use lbp_runtime::testbed::Fate;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// xorshift64*: small, seeded, good enough to pick test values.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The addresses and ports a policy talks about, to aim frames at.
struct Aims {
    addrs: Vec<IpAddr>,
    ports: Vec<u16>,
    /// The services' entries.
    entries: Vec<Entry>,
}

/// A service entry: address, protocol number (0: any), port ranges.
type Entry = (IpAddr, u8, Vec<(u16, u16)>);

impl Aims {
    fn of(a: &Appliance, prog: &Program) -> Aims {
        let mut addrs: Vec<IpAddr> = Vec::new();
        for i in &a.interfaces {
            for &(x, _) in &i.addrs {
                addrs.push(x);
                addrs.push(bump(x, 1));
                addrs.push(bump(x, 9));
            }
        }
        for s in &a.services {
            addrs.extend(&s.vips);
            addrs.extend(s.backends.iter().map(|b| b.addr));
        }
        for r in &a.routes {
            addrs.push(bump(r.prefix, 5));
            addrs.extend(r.via);
        }
        addrs.extend([
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 5)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        ]);
        let mut ports = vec![0, 22, 53, 80, 443, 1024, 8080, 40000, 65535];
        ports.extend(
            a.services
                .iter()
                .flat_map(|s| s.backends.iter().filter_map(|b| b.port)),
        );
        let entries = prog
            .services
            .iter()
            .flat_map(|s| s.entries.iter())
            .map(|(a, proto, ports)| (a.to_ip(), *proto, ports.clone()))
            .collect();
        Aims {
            addrs,
            ports,
            entries,
        }
    }

    /// An address of `family` (4 or 6) the policy names, or near one.
    fn addr(&self, r: &mut Rng, v4: bool) -> IpAddr {
        let same: Vec<IpAddr> = self
            .addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == v4)
            .collect();
        let a = r.pick(&same);
        if r.chance(20) {
            bump(a, r.below(4) as u8)
        } else {
            a
        }
    }
}

/// `a` plus `n` in its last byte.
fn bump(a: IpAddr, n: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let mut o = v.octets();
            o[3] = o[3].wrapping_add(n);
            IpAddr::V4(o.into())
        }
        IpAddr::V6(v) => {
            let mut o = v.octets();
            o[15] = o[15].wrapping_add(n);
            IpAddr::V6(o.into())
        }
    }
}

/// A random packet of the policy's addresses and ports.
fn spec(r: &mut Rng, aims: &Aims) -> PacketSpec {
    let v4 = r.chance(65);
    let proto = match r.below(10) {
        0..=5 => Proto::Tcp,
        6..=7 => Proto::Udp,
        _ if v4 => Proto::Icmp,
        _ => Proto::Icmpv6,
    };
    let mut s = PacketSpec::new(proto, aims.addr(r, v4), aims.addr(r, v4));
    s.sport = if r.chance(50) {
        r.pick(&aims.ports)
    } else {
        1024 + r.below(60000) as u16
    };
    s.dport = r.pick(&aims.ports);
    let any = r.next() as u8;
    s.tcp_flags = r.pick(&[
        tcp_flag::SYN,
        tcp_flag::SYN,
        tcp_flag::ACK,
        tcp_flag::ACK | tcp_flag::PSH,
        tcp_flag::FIN | tcp_flag::ACK,
        tcp_flag::RST,
        tcp_flag::SYN | tcp_flag::ACK,
        any,
    ]);
    if r.chance(15) {
        s.icmp_type = Some(r.pick(&[0, 3, 5, 8, 11, 128, 129, 135, 136, any]));
    }
    s.ttl = r.pick(&[64, 64, 64, 64, 64, 64, 64, 2, 1, 0, 255]);
    if r.chance(10) {
        s.len = Some(r.below(1600));
    }
    // A third of the packets go to a service's entry, from a client.
    if !aims.entries.is_empty() && r.chance(35) {
        let (vip, proto, ports) = &aims.entries[r.below(aims.entries.len())];
        s.proto = match proto {
            17 => Proto::Udp,
            6 => Proto::Tcp,
            _ if r.chance(50) => Proto::Udp,
            _ => Proto::Tcp,
        };
        s.src = aims.addr(r, vip.is_ipv4());
        s.dst = *vip;
        if let Some(&(lo, hi)) = ports.get(r.below(ports.len().max(1))) {
            s.dport = lo + (r.below(usize::from(hi - lo) + 1) as u16);
        }
        s.icmp_type = None;
        s.len = None;
    }
    s
}

/// Check `frames` frames on the policy `name`; count each verdict the core gave
/// (its first word), and `connection` for traffic of a known connection, in
/// `seen`.
fn check_policy(
    name: &str,
    src: &str,
    seed: u64,
    frames: usize,
    seen: &mut BTreeMap<String, usize>,
) -> usize {
    let a = lbp_lang::analyze(src);
    assert!(!a.has_errors(), "{name} has errors");
    let prog: Program = lower::lower(&a.policy).unwrap_or_else(|e| panic!("{name}: {e}"));
    let jit = Arc::new(jit::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}")));
    let mut core = CoreTester::new(&prog, src, Arc::new(Shared(jit))).expect("a test bed");
    let bed = core.testbed();
    let app = bed.appliance().clone();
    let aims = Aims::of(&app, &prog);
    let ports = app.interfaces.len() as u32 + 1;
    let mut r = Rng::new(seed);
    let mut checked = 0;
    let mut queue: Vec<(Vec<u8>, u32)> = Vec::new();
    for i in 0..frames {
        if i % 40 == 0 {
            bed.restart();
        }
        let (mut frame, port) = match queue.pop() {
            Some(q) => q,
            None => (build(&spec(&mut r, &aims)), r.below(ports as usize) as u32),
        };
        if r.chance(4) && !frame.is_empty() {
            let at = r.below(frame.len());
            frame[at] ^= 1 << r.below(8);
        }
        let o = bed.send(&frame, port);
        let want = interp::decide(&prog, &o.fields);
        if let Err(e) = o.follows(&want, &app) {
            panic!(
                "{name}, seed {seed}, frame {i} on port {port}: {e}\nfields {:?}\noutcome {o:?}",
                o.fields
            );
        }
        checked += 1;
        let verdict = o.verdict(&app);
        let word = verdict.split(' ').next().unwrap_or_default().to_string();
        *seen.entry(word).or_default() += 1;
        if o.connection {
            *seen.entry("connection".into()).or_default() += 1;
        }
        // Go on with the flow: the client's next segment, or the back end's
        // answer to a frame the core balanced.
        if let Some(Fate::Sent { iface, frame: sent }) = o.fate() {
            if o.balanced.is_some() && r.chance(60) {
                if let Some(back) = lbp::testbed::backend_answer(sent) {
                    queue.push((back, *iface));
                }
            } else if r.chance(30) {
                let mut next = frame.clone();
                let f = &o.fields;
                if f.present & lbp_abi::present::TCP != 0 {
                    let flags = usize::from(f.l4_offset) + 13;
                    if let Some(b) = next.get_mut(flags) {
                        *b = tcp_flag::ACK;
                    }
                }
                queue.push((next, port));
            }
        }
    }
    checked
}

#[test]
fn the_core_acts_on_the_interpreters_decision_for_random_frames() {
    let mut policies = files("policies", "lbp");
    policies.extend(files("tests/cases", "lbp"));
    let mut total = 0;
    let mut seen = BTreeMap::new();
    for (k, name) in policies.iter().enumerate() {
        let src = std::fs::read_to_string(root().join(name)).expect("readable policy");
        total += check_policy(name, &src, 0x6c62_7000 + k as u64, 600, &mut seen);
    }
    assert!(total >= 10_000, "only {total} frames checked");
    // Every way a frame can end was taken, often.
    for what in [
        "drop",
        "reset",
        "local",
        "balance",
        "forward",
        "expire",
        "connection",
    ] {
        let n = seen.get(what).copied().unwrap_or(0);
        assert!(n >= 20, "only {n} frames of {what}: {seen:?}");
    }
}
