//! Per-packet decision cost: the JIT, the reference interpreter, and a hand-written
//! Rust function implementing policies/web.lbp directly (the practical floor), on a
//! fixed mixed packet corpus; then how the JIT's cost and compile time grow with
//! the number of rules and set entries.
//!
//! The eBPF back end (`bpf::Mode::TestFields`, run by the kernel through
//! `BPF_PROG_TEST_RUN` with a repeat count) is measured on the same corpus and
//! policies when the bench may load programs (root): the kernel's mean time per
//! run, and the same less an empty program's (the test run's own cost).
//!
//! `cargo bench -p lbp-compiler --bench decide` prints ns/packet and the ratios.
//! Without `--bench` (as `cargo test --all-targets` runs it) it only checks that
//! the three agree on the corpus (and the eBPF program, as root).

use lbp_abi::{Action, Decision, Fields, NO_RULE, present, stage, tcp_flag};
use lbp_compiler::interp::{Engine, Interpreter};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::{Program, bpf, jit, lower, wire};
use lbp_runtime::ring::bpf::{map_lookup_bytes, xdp_test_run_repeat};
use std::hint::black_box;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Instant;

fn program(src: &str) -> Program {
    let a = lbp_lang::analyze(src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
    lower::lower(&a.policy).expect("lowers")
}

/// A deterministic xorshift generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A mixed corpus: mostly TCP to the web service, some UDP, ICMP, IPv6, routed
/// traffic, blocked sources and truncated frames.
fn corpus(n: usize) -> Vec<Fields> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let r = rng.below(100);
            let client: IpAddr = format!("198.18.{}.{}", 1 + rng.below(200), 1 + rng.below(250))
                .parse()
                .unwrap();
            let spec = match r {
                0..=59 => {
                    let mut p = PacketSpec::new(Proto::Tcp, client, "198.18.0.10".parse().unwrap());
                    p.sport = 1024 + rng.below(60000) as u16;
                    p.dport = if rng.below(2) == 0 { 80 } else { 443 };
                    p.tcp_flags = if rng.below(4) == 0 {
                        tcp_flag::SYN
                    } else {
                        tcp_flag::ACK
                    };
                    p
                }
                60..=64 => {
                    let mut p = PacketSpec::new(
                        Proto::Tcp,
                        "198.18.99.7".parse().unwrap(),
                        "198.18.0.10".parse().unwrap(),
                    );
                    p.sport = 40000;
                    p.dport = 80;
                    p.tcp_flags = tcp_flag::SYN;
                    p
                }
                65..=74 => {
                    let mut p = PacketSpec::new(Proto::Udp, client, "198.18.0.10".parse().unwrap());
                    p.sport = 5353;
                    p.dport = 53;
                    p
                }
                75..=82 => PacketSpec::new(Proto::Icmp, client, "198.18.2.11".parse().unwrap()),
                83..=87 => {
                    let mut p = PacketSpec::new(Proto::Tcp, client, "198.18.0.1".parse().unwrap());
                    p.sport = 40000;
                    p.dport = 22;
                    p.tcp_flags = tcp_flag::SYN;
                    p
                }
                88..=93 => {
                    let mut p = PacketSpec::new(
                        Proto::Tcp,
                        "2001:db8:1::5".parse().unwrap(),
                        "2001:db8:2::10".parse().unwrap(),
                    );
                    p.sport = 40000;
                    p.dport = 443;
                    p
                }
                _ => {
                    let mut p = PacketSpec::new(Proto::Tcp, client, "198.18.0.10".parse().unwrap());
                    p.len = Some(30);
                    p
                }
            };
            wire::extract(&build(&spec), 0)
        })
        .collect()
}

fn v4(f: &[u8; 16]) -> Option<u32> {
    f[..12]
        .eq(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
        .then(|| u32::from_be_bytes([f[12], f[13], f[14], f[15]]))
}

fn d(action: Action, target: u32, rule: u32, stage: u32) -> Decision {
    Decision {
        action: action as u32,
        target,
        rule,
        stage,
        hash: 0,
    }
}

/// policies/web.lbp, by hand. Routes: 0 client (connected), 1 servers (connected),
/// 2 `route 198.18.2.0/24`, 3 the default route.
fn web(f: &Fields) -> Decision {
    if f.present & present::MALFORMED != 0 || f.present & present::ETH == 0 {
        return d(Action::Drop, 0, NO_RULE, stage::MALFORMED);
    }
    let ip4 = f.present & present::IP4 != 0;
    let ip6 = f.present & present::IP6 != 0;
    let tcp = f.present & present::TCP != 0;
    let src4 = if ip4 { v4(&f.ip_src) } else { None };
    let dst4 = if ip4 { v4(&f.ip_dst) } else { None };
    // ip.src in { 198.18.99.0/24, 2001:db8:bad::/48 } => drop
    let src6 = u128::from_be_bytes(f.ip_src);
    if src4.is_some_and(|s| s >> 8 == 0x00c6_1263) || (ip6 && src6 >> 80 == 0x2001_0db8_0bad) {
        return d(Action::Drop, 0, 0, stage::FILTER);
    }
    // tcp.syn && tcp.fin => drop
    if tcp && f.tcp_flags & tcp_flag::SYN != 0 && f.tcp_flags & tcp_flag::FIN != 0 {
        return d(Action::Drop, 0, 1, stage::FILTER);
    }
    // ip.dst == 198.18.0.1 && tcp.dport in admin_ports && !(ip.src in admin_nets) => drop
    if dst4 == Some(0xc612_0001)
        && tcp
        && (f.dport == 22 || f.dport == 8022)
        && src4.is_none_or(|s| s >> 4 != 0x0c61_2010)
    {
        return d(Action::Drop, 0, 2, stage::FILTER);
    }
    // ip.dst == vip && icmp.type == 8 => local
    if dst4 == Some(0xc612_000a) && f.present & present::ICMP != 0 && f.icmp_type == 8 {
        return d(Action::Local, 0, 3, stage::FILTER);
    }
    let Some(dst) = dst4 else {
        return d(Action::Drop, 0, NO_RULE, stage::ROUTE);
    };
    if dst == 0xc612_000a {
        if tcp && f.ip_proto == 6 && (f.dport == 80 || f.dport == 443) {
            let mut b = d(Action::Balance, 0, NO_RULE, stage::SERVICE);
            b.hash = lbp_abi::flow_hash(f, lbp_abi::hash_field::ALL);
            return b;
        }
        let a = if tcp && f.tcp_flags & tcp_flag::RST == 0 {
            Action::Reset
        } else {
            Action::Drop
        };
        return d(a, 0, NO_RULE, stage::INVALID_ENTRY);
    }
    if dst == 0xc612_0001 || dst == 0xc612_0201 {
        return d(Action::Local, 0, NO_RULE, stage::OWN_ADDRESS);
    }
    let route = match dst >> 8 {
        0x00c6_1200 => 0,
        0x00c6_1202 => 1,
        _ => 3,
    };
    d(Action::Forward, route, NO_RULE, stage::ROUTE)
}

struct Hand;
impl Engine for Hand {
    fn decide(&self, f: &Fields) -> Decision {
        web(f)
    }
}

/// ns per packet, best of `runs` passes over the corpus.
fn measure(b: &dyn Engine, corpus: &[Fields], runs: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        for f in corpus {
            black_box(b.decide(black_box(f)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / corpus.len() as f64);
    }
    best
}

/// A policy with `n` filter rules and a set of `n` prefixes (as benches/check.rs
/// of the front end generates them).
fn big_policy(n: usize) -> String {
    let mut s = String::from(
        "interface client { address 198.18.0.1/24 }\ninterface servers { address 198.18.2.1/24 }\nset blocked = {\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    198.{}.{}.{}/32,\n",
            18 + (i >> 16) % 2,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s.push_str("}\npool web {\n    backend 198.18.2.11\n}\nservice http {\n    vip 198.18.0.10 tcp port 80, 443\n    pool web\n}\nfilter {\n    ip.src in blocked => drop\n");
    for i in 0..n {
        let (a, b) = ((i >> 8) & 255, i & 255);
        s.push_str(&match i % 4 {
            0 => format!(
                "    ip.src in 198.19.{a}.{b}/32 && tcp.dport == {} => drop\n",
                1 + i % 65535
            ),
            1 => format!(
                "    ip.dst == 198.18.{a}.{b} && tcp.dport in {{ 22, 8022, {} }} => reset\n",
                1024 + i % 60000
            ),
            2 => format!("    udp.dport in 5000..6000 && !(ip.src in 198.18.{a}.0/24) => drop\n"),
            _ => format!(
                "    in.iface == client && icmp.type == 8 && ip.ttl < {} => local\n",
                1 + i % 255
            ),
        });
    }
    s.push_str("}\nroute 198.18.2.0/24 dev servers\nroute 0.0.0.0/0 via 198.18.0.254 dev client\n");
    s
}

/// A policy's eBPF program (`Mode::TestFields`), loaded; `Err` says why not
/// (beyond the back end's limits, or no right to load programs).
struct Ebpf(lbp_runtime::ring::bpf::Loaded);

impl Ebpf {
    fn load(prog: &Program) -> Result<Ebpf, String> {
        let p = bpf::compile(prog, bpf::Mode::TestFields).map_err(|e| e.to_string())?;
        lbp_runtime::ring::bpf::Loaded::xdp("lbp_bench", &p.prog, &p.maps)
            .map(Ebpf)
            .map_err(|e| format!("not loaded: {e}"))
    }

    /// The decision on `f`, and the kernel's mean ns per run over `repeat`.
    fn run(&self, f: &Fields, repeat: u32) -> (Decision, u32) {
        let (r, ns) = xdp_test_run_repeat(self.0.prog.as_fd(), &bpf::fields_to_bytes(f), repeat)
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.action, 2, "the test mode passes every frame");
        let out = map_lookup_bytes(&self.0.maps[0], &0u32.to_ne_bytes())
            .expect("the out map")
            .expect("its entry");
        (bpf::out_from_bytes(&out).expect("an out value").0, ns)
    }

    /// ns per packet over every 16th packet of the corpus (the kernel's mean
    /// over [`REPEAT`] runs of each). A repeated test run swaps the kernel's
    /// XDP dispatcher twice (an RCU grace period each): few calls, many
    /// repeats.
    fn measure(&self, corpus: &[Fields]) -> f64 {
        let sample: Vec<&Fields> = corpus.iter().step_by(16).collect();
        let total: u64 = sample
            .iter()
            .map(|f| u64::from(self.run(f, REPEAT).1))
            .sum();
        total as f64 / sample.len() as f64
    }
}

/// Runs per test-run call when measuring the eBPF back end.
const REPEAT: u32 = 5_000;

/// The test run's own cost: an XDP program that returns at once, run on a
/// frame the size of a `Fields`.
fn empty_program_ns(corpus: &[Fields]) -> Option<f64> {
    use lbp_abi::bpf::{Asm, xdp};
    let mut a = Asm::new();
    a.ret(xdp::PASS);
    let p = a.finish().ok()?;
    let l = lbp_runtime::ring::bpf::Loaded::xdp("lbp_empty", &p, &[]).ok()?;
    let sample: Vec<&Fields> = corpus.iter().step_by(256).collect();
    let mut total = 0u64;
    for f in &sample {
        let frame = bpf::fields_to_bytes(f);
        total += u64::from(xdp_test_run_repeat(l.prog.as_fd(), &frame, REPEAT).ok()?.1);
    }
    Some(total as f64 / sample.len() as f64)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/web.lbp"))
        .expect("web.lbp");
    let prog = program(&src);
    let interp = Interpreter::new(&prog);
    let compiled = jit::compile(&prog).expect("compiles");
    let corpus = corpus(if bench { 4096 } else { 512 });
    for f in &corpus {
        let want = interp.decide(f);
        assert_eq!(
            web(f),
            want,
            "the hand-written web.lbp disagrees with the interpreter on {f:?}"
        );
        assert_eq!(
            compiled.decide(f),
            want,
            "the JIT disagrees with the interpreter on {f:?}"
        );
    }
    let ebpf = Ebpf::load(&prog);
    match &ebpf {
        Ok(e) => {
            for f in &corpus {
                assert_eq!(
                    e.run(f, 1).0,
                    interp.decide(f),
                    "the eBPF program disagrees with the interpreter on {f:?}"
                );
            }
        }
        Err(why) => println!("decide bench: the eBPF back end is not measured: {why}"),
    }
    if !bench {
        println!(
            "decide bench: JIT, interpreter, hand-written{} agree on {} packets (run `cargo bench -p lbp-compiler --bench decide` to measure)",
            if ebpf.is_ok() { " and eBPF" } else { "" },
            corpus.len()
        );
        return;
    }
    let runs = 200;
    let hand = measure(&Hand, &corpus, runs);
    let jit_ns = measure(&compiled, &corpus, runs);
    let interp_ns = measure(&interp, &corpus, runs);
    println!(
        "policies/web.lbp, {} mixed packets, best of {runs} passes:",
        corpus.len()
    );
    println!("  hand-written  {hand:8.2} ns/packet");
    println!(
        "  JIT           {jit_ns:8.2} ns/packet   {:.2}x the hand-written (target <= 1.5x)",
        jit_ns / hand
    );
    println!(
        "  interpreter   {interp_ns:8.2} ns/packet   {:.1}x the JIT (target >= 10x)",
        interp_ns / jit_ns
    );
    let empty = ebpf.as_ref().ok().and_then(|_| empty_program_ns(&corpus));
    let ebpf_line = |e: &Ebpf, corpus: &[Fields]| -> String {
        let ns = e.measure(corpus);
        match empty {
            Some(x) => format!(
                "{ns:8.2} ns/packet in the kernel's test run, {:8.2} less an empty program's {x:.2}",
                ns - x
            ),
            None => format!("{ns:8.2} ns/packet in the kernel's test run"),
        }
    };
    if let Ok(e) = &ebpf {
        println!("  eBPF          {}", ebpf_line(e, &corpus));
    }

    println!("growth with rules and set entries (JIT, same corpus):");
    let mut base = None;
    for n in [10usize, 1_000, 10_000, 100_000] {
        let prog = program(&big_policy(n));
        let t = Instant::now();
        let compiled = match jit::compile(&prog) {
            Ok(c) => c,
            Err(e) => {
                println!("  {n:>7} rules: not compiled: {e}");
                continue;
            }
        };
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let ns = measure(&compiled, &corpus, runs);
        let b = *base.get_or_insert(ns);
        // The interpreter tests rule by rule: measured on the smaller filters.
        let interp = if n <= 10_000 {
            let i = Interpreter::new(&prog);
            let ins = measure(&i, &corpus[..512], 3);
            format!(
                ", interpreter {ins:10.1} ns/packet ({:6.1}x the JIT)",
                ins / ns
            )
        } else {
            String::new()
        };
        println!(
            "  {n:>7} rules: {ns:10.1} ns/packet ({:8.1}x the 10-rule cost; target <= 2x), compile {compile_ms:8.1} ms (target < 1000 ms){interp}",
            ns / b
        );
        if ebpf.is_ok() {
            match Ebpf::load(&prog) {
                Ok(e) => println!("  {n:>7} rules, eBPF: {}", ebpf_line(&e, &corpus)),
                Err(why) => println!("  {n:>7} rules, eBPF: {why}"),
            }
        }
    }
}
