//! The eBPF back end against the reference interpreter, in the kernel: every
//! stock and corpus policy compiles to an XDP program that passes the
//! verifier; the programs decide as the interpreter on the policies' test
//! packets, on random `Fields` and on random policies (each `Fields` run
//! through `BPF_PROG_TEST_RUN` in `Mode::TestFields`, the frame being the
//! `Fields` itself); the case corpus runs with the eBPF program as a fourth
//! back end of `testing::run`, on the real frames of its packet lines
//! (`Mode::Test`: extraction in eBPF too, its fields checked against
//! `wire::extract`) and on their fields; a policy beyond the limits gets
//! `BpfError::Limit`. Needs root (loading programs); skipped otherwise.

mod policygen;

use std::os::fd::AsFd;

use lbp_abi::{Decision, Fields};
use lbp_compiler::bpf::{self, BpfError, BpfProgram, Mode};
use lbp_compiler::interp::{self, Engine, Interpreter};
use lbp_compiler::ir::Program;
use lbp_compiler::testing::{self, Decider, Tester, Verdict};
use lbp_compiler::{jit, lower};
use lbp_lab::require_netns;
use lbp_runtime::ring::bpf::{Loaded, map_lookup_bytes, map_update_bytes, xdp_test_run};
use policygen::{Pool, Rng, all_policies, load, policy, policy_fields, seed_of};
use proptest::prelude::*;

/// A policy's eBPF program, loaded (its maps created and filled).
struct Bpf {
    loaded: Loaded,
    mode: Mode,
}

impl Bpf {
    fn load(prog: &Program, mode: Mode) -> Result<Bpf, String> {
        let p = bpf::compile(prog, mode).map_err(|e| e.to_string())?;
        Bpf::load_compiled(&p, mode)
    }

    fn load_compiled(p: &BpfProgram, mode: Mode) -> Result<Bpf, String> {
        let loaded = Loaded::xdp("lbp_decide", &p.prog, &p.maps).map_err(|e| e.to_string())?;
        Ok(Bpf { loaded, mode })
    }

    /// One test run on `frame`: the decision and the fields the program
    /// decided on, from the out map.
    fn run(&self, frame: &[u8]) -> (Decision, Fields) {
        let r = xdp_test_run(self.loaded.prog.as_fd(), frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e}", frame.len()));
        assert_eq!(r.action, 2, "the test modes pass every frame");
        let out = map_lookup_bytes(&self.loaded.maps[0], &0u32.to_ne_bytes())
            .expect("reading the out map")
            .expect("entry 0 of the out array");
        bpf::out_from_bytes(&out).expect("an out value")
    }

    /// `Mode::Test`: one test run on a real frame received on `in_iface`
    /// (stored in the program's in_iface map first).
    fn run_frame(&self, frame: &[u8], in_iface: u32) -> (Decision, Fields) {
        assert_eq!(self.mode, Mode::Test);
        map_update_bytes(
            &self.loaded.maps[1],
            &0u32.to_ne_bytes(),
            &in_iface.to_ne_bytes(),
        )
        .expect("setting the receiving interface");
        self.run(frame)
    }
}

/// `Mode::TestFields`: the decision on any `Fields`.
impl Engine for Bpf {
    fn decide(&self, f: &Fields) -> Decision {
        assert_eq!(self.mode, Mode::TestFields);
        let (d, echoed) = self.run(&bpf::fields_to_bytes(f));
        assert_eq!(echoed, *f, "the program decided on other fields");
        d
    }
}

/// The eBPF back end as a back end of policy tests: the frame's decision (in
/// `Mode::TestFields`, the extracted fields' decision) through the modelled
/// connection table, as the other compiler back ends.
struct BpfTester<'a> {
    prog: &'a Program,
    bpf: &'a Bpf,
    /// `Mode::TestFields`, for frames the kernel runs no XDP program on
    /// (shorter than an Ethernet header), when `bpf` is `Mode::Test`.
    short: Option<&'a Bpf>,
    conns:
        std::collections::HashSet<(u8, lbp_compiler::ir::Addr, u16, lbp_compiler::ir::Addr, u16)>,
}

impl Tester for BpfTester<'_> {
    fn begin(&mut self) {
        self.conns.clear();
    }

    fn verdict(&mut self, frame: &[u8], in_iface: u32, fields: &Fields) -> Verdict {
        let (d, _) = match self.bpf.mode {
            Mode::TestFields => self.bpf.run(&bpf::fields_to_bytes(fields)),
            Mode::Test if frame.len() < 14 => {
                let short = self.short.expect("a TestFields program for short frames");
                short.run(&bpf::fields_to_bytes(fields))
            }
            Mode::Test => {
                let (d, extracted) = self.bpf.run_frame(frame, in_iface);
                // The eBPF extraction's fields are the harness's.
                let want = lbp_abi::wire::extract(frame, in_iface);
                assert_eq!(extracted, want, "extracted in eBPF: {frame:02x?}");
                (d, extracted)
            }
            Mode::Fast => unreachable!("a test mode"),
        };
        Verdict {
            text: testing::verdict(self.prog, fields, d, &mut self.conns),
            rule: (d.rule != lbp_abi::NO_RULE).then_some(d.rule),
            detail: Some(format!("stage {}", d.stage)),
        }
    }
}

fn compile_load(name: &str, prog: &Program) -> Bpf {
    Bpf::load(prog, Mode::TestFields).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_stock_and_corpus_policy_compiles_and_loads() {
    require_netns!();
    let mut loaded = 0;
    for (name, src) in all_policies() {
        let (_, prog) = load(&name, &src);
        for mode in [Mode::TestFields, Mode::Test] {
            let p = bpf::compile(&prog, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
            Bpf::load_compiled(&p, mode).unwrap_or_else(|e| panic!("{name}, {mode:?}: {e}"));
            if mode == Mode::TestFields {
                eprintln!("{name}: {} instructions, {} maps", p.len(), p.maps.len());
            }
        }
        loaded += 1;
    }
    assert!(loaded > 20, "only {loaded} policies");
}

#[test]
fn policies_agree_on_test_packets_and_random_fields() {
    require_netns!();
    let mut total = 0;
    for (name, src) in all_policies() {
        let (policy, prog) = load(&name, &src);
        let bpf = compile_load(&name, &prog);
        let random = if name.starts_with("policies") {
            3000
        } else {
            1000
        };
        for (what, f) in policy_fields(&name, &policy, &prog, random) {
            let want = interp::decide(&prog, &f);
            assert_eq!(bpf.decide(&f), want, "{name}, {what}: {f:?}");
            total += 1;
        }
    }
    eprintln!("{total} fields decided alike");
    assert!(total > 20_000);
}

#[test]
fn the_case_corpus_runs_on_the_ebpf_back_end_as_a_fourth_tester() {
    require_netns!();
    let mut lines = 0;
    for (name, src) in policygen::lbp_files("tests/cases") {
        for mode in [Mode::Test, Mode::TestFields] {
            let (policy, prog) = load(&name, &src);
            let bpf = Bpf::load(&prog, mode).unwrap_or_else(|e| panic!("{name}, {mode:?}: {e}"));
            let short = compile_load(&name, &prog);
            let jit = jit::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}"));
            let interp = Interpreter::new(&prog);
            let mut by_interp = Decider::new(&prog, &interp);
            let mut by_jit = Decider::new(&prog, &jit);
            let mut by_bpf = BpfTester {
                prog: &prog,
                bpf: &bpf,
                short: Some(&short),
                conns: Default::default(),
            };
            let mut testers: [(&str, &mut dyn Tester); 3] = [
                ("interp", &mut by_interp),
                ("jit", &mut by_jit),
                ("bpf", &mut by_bpf),
            ];
            let report = testing::run(&policy, &prog, &mut testers).unwrap();
            for o in &report.outcomes {
                assert!(
                    !o.disagreement(),
                    "{name}, {mode:?}, test {:?}: {:?}",
                    o.test,
                    o.got
                );
            }
            lines += report.outcomes.len();
        }
    }
    assert!(lines > 100, "only {lines} packet lines in tests/cases");
}

/// Every field of the language, one rule each, and the flow hash over every
/// combination of hash fields: decided alike on random packets.
#[test]
fn every_field_and_every_hash_mask_agree() {
    require_netns!();
    use lbp_lang::check::{FIELDS, HASH_FIELDS, Ty};
    let mut src = String::from(
        "interface a { address 198.18.0.1/24, 2001:db8::1/64 }\ninterface b { address 198.18.1.1/24 }\npool p {\n    backend 198.18.1.11\n    backend 2001:db8::11\n}\n",
    );
    for m in 1..32usize {
        let fields: Vec<&str> = (0..5)
            .filter(|b| m & (1 << b) != 0)
            .map(|b| HASH_FIELDS[b])
            .collect();
        src += &format!(
            "service h{m} {{\n    vip 198.18.0.{v} tcp\n    vip 198.18.0.{v} udp port 53\n    vip 2001:db8::{m:x}:1 tcp\n    pool p\n    balance hash({})\n}}\n",
            fields.join(", "),
            v = 100 + m,
        );
    }
    src += "filter {\n";
    for (i, f) in FIELDS.iter().enumerate() {
        let test = match f.ty {
            Ty::Bool => f.name.to_string(),
            Ty::Iface => format!("{} == b", f.name),
            Ty::Addr(_) => format!("{} in {{ 198.18.0.{i}, 2001:db8::{i} }}", f.name),
            Ty::Mac => format!("{} == 02:00:00:00:00:{i:02x}", f.name),
            _ => format!("{} == {}", f.name, (i as u64) % (f.max + 1)),
        };
        let action = [
            "drop",
            "reset",
            "local",
            "accept",
            "balance h31",
            "app echo",
        ][i % 6];
        src.push_str(&format!("    {test} => {action}\n"));
    }
    src += "}\nroute 0.0.0.0/0 dev a\nroute ::/0 dev a\n";
    let (_, prog) = load("every field", &src);
    let bpf = compile_load("every field", &prog);
    let pool = Pool::of(&prog);
    let mut r = Rng::new(seed_of("every field, bpf"));
    let mut hashed = std::collections::HashSet::new();
    for i in 0..20_000 {
        let f = pool.fields(&mut r);
        let want = interp::decide(&prog, &f);
        assert_eq!(bpf.decide(&f), want, "random packet {i}: {f:?}");
        if want.hash != 0 {
            hashed.insert(want.target);
        }
    }
    assert!(hashed.len() > 20, "only {} services balanced", hashed.len());
}

/// Many routes of each family go through the LPM tries (longest prefix, the
/// first route of a prefix) and agree with the interpreter.
#[test]
fn many_routes_use_lpm_tries_and_agree() {
    require_netns!();
    let mut src = String::from(
        "interface a { address 198.18.0.1/24, 2001:db8::1/64 }\ninterface b { address 198.18.1.1/24, 2001:db8:1::1/64 }\n",
    );
    let mut r = Rng::new(7);
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let len = [0, 8, 16, 20, 24, 28, 32][(r.next() % 7) as usize];
        let a = std::net::Ipv4Addr::from(
            ((198u32 << 24) | (18 << 16) | (r.next() as u32 & 0xffff))
                & (u32::MAX.checked_shl(32 - len).unwrap_or(0)),
        );
        let dev = if i % 2 == 0 { "a" } else { "b" };
        if seen.insert(format!("{a}/{len}")) {
            src += &format!("route {a}/{len} dev {dev}\n");
        }
        let len6 = [0u32, 32, 48, 56, 64, 100, 128][(r.next() % 7) as usize];
        let x = (0x2001_0db8u128 << 96)
            | u128::from(r.next() & 0xffff) << 64
            | u128::from(r.next() & 0xff);
        let m = u128::MAX.checked_shl(128 - len6).unwrap_or(0);
        let net = format!("{}/{len6}", std::net::Ipv6Addr::from(x & m));
        if seen.insert(net.clone()) {
            src += &format!("route {net} dev {dev}\n");
        }
    }
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
    let prog = lower::lower(&a.policy).unwrap();
    let p = bpf::compile(&prog, Mode::TestFields).unwrap();
    assert_eq!(p.maps.len(), 3, "the out map and two LPM tries");
    let bpf = Bpf::load_compiled(&p, Mode::TestFields).unwrap();
    let pool = Pool::of(&prog);
    let mut r = Rng::new(seed_of("routes"));
    let mut forwarded = 0;
    for i in 0..5000 {
        let f = pool.fields(&mut r);
        let want = interp::decide(&prog, &f);
        assert_eq!(bpf.decide(&f), want, "random packet {i}: {f:?}");
        forwarded += usize::from(want.action == lbp_abi::Action::Forward as u32);
    }
    assert!(forwarded > 500, "only {forwarded} forwarded");
}

#[test]
fn a_policy_beyond_the_limits_is_refused_with_a_reason() {
    let head = "interface a { address 198.18.0.1/24 }\nfilter {\n";
    // Rules of a range atom: not merged into a hash map, each tested inline.
    let rules: String = (0..=bpf::MAX_RULES)
        .map(|i| format!("    tcp.dport == {} && ip.ttl > 200 => drop\n", i % 60000))
        .collect();
    let (_, prog) = load("many rules", &format!("{head}{rules}}}\n"));
    match bpf::compile(&prog, Mode::TestFields) {
        Err(BpfError::Limit(m)) => assert!(m.contains("filter rules"), "{m}"),
        other => panic!("expected a limit, got {:?}", other.map(|p| p.len())),
    }
    // A set too large to test inline.
    let set: Vec<String> = (0..=bpf::MAX_SET_RANGES)
        .map(|i| format!("198.18.{}.{}", i / 128, 2 * (i % 128)))
        .collect();
    let src = format!("{head}    ip.src in {{ {} }} => drop\n}}\n", set.join(", "));
    let (_, prog) = load("a large set", &src);
    match bpf::compile(&prog, Mode::TestFields) {
        Err(BpfError::Limit(m)) => assert!(m.contains("a set of"), "{m}"),
        other => panic!("expected a limit, got {:?}", other.map(|p| p.len())),
    }
    // Rules few enough but code too long.
    let rules: String = (0..bpf::MAX_RULES)
        .map(|i| {
            format!("    tcp.dport == {i} && ip.src == 198.18.{}.{} && ip.dst != 2001:db8::{i:x} => drop\n", i / 256, i % 256)
        })
        .collect();
    let (_, prog) = load("long code", &format!("{head}{rules}}}\n"));
    match bpf::compile(&prog, Mode::TestFields) {
        Err(BpfError::Limit(m)) => assert!(m.contains("instructions"), "{m}"),
        other => panic!("expected a limit, got {:?}", other.map(|p| p.len())),
    }
}

/// The largest filter within the limits loads (the verifier accepts it).
#[test]
fn a_policy_at_the_limits_loads_and_agrees() {
    require_netns!();
    let head = "interface a { address 198.18.0.1/24 }\nfilter {\n";
    let rules: String = (0..bpf::MAX_RULES)
        .map(|i| format!("    tcp.dport == {} => drop\n", 1000 + i))
        .collect();
    let (_, prog) = load(
        "many rules",
        &format!("{head}{rules}}}\nroute 0.0.0.0/0 dev a\n"),
    );
    let p = bpf::compile(&prog, Mode::TestFields).expect("within the limits");
    eprintln!("{} rules: {} instructions", bpf::MAX_RULES, p.len());
    let bpf = Bpf::load_compiled(&p, Mode::TestFields).expect("loads");
    let pool = Pool::of(&prog);
    let mut r = Rng::new(3);
    for i in 0..2000 {
        let f = pool.fields(&mut r);
        assert_eq!(
            bpf.decide(&f),
            interp::decide(&prog, &f),
            "packet {i}: {f:?}"
        );
    }
}

/// Random policies (the JIT's generator) on random fields: eBPF and the
/// interpreter agree on every one.
#[test]
fn random_policies_agree() {
    require_netns!();
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 128,
        max_global_rejects: 4096,
        ..Config::default()
    });
    let checked = std::cell::Cell::new(0usize);
    runner
        .run(&(policy(), any::<u64>()), |(src, seed)| {
            let a = lbp_lang::analyze(&src);
            prop_assume!(!a.has_errors());
            let prog = lower::lower(&a.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bpf = Bpf::load(&prog, Mode::TestFields).map_err(TestCaseError::fail)?;
            let pool = Pool::of(&prog);
            let mut r = Rng::new(seed);
            for _ in 0..200 {
                let f = pool.fields(&mut r);
                prop_assert_eq!(
                    bpf.decide(&f),
                    interp::decide(&prog, &f),
                    "{:?}\n{}",
                    f,
                    src
                );
                checked.set(checked.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} generated fields decided alike", checked.get());
}

/// Filters of random conditions (the JIT's generator), grown until the
/// program nears `MAX_INSNS`: the verifier accepts what the limits admit.
#[test]
fn large_random_filters_within_the_limits_load() {
    require_netns!();
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]),
    );
    let strategy = (policygen::cond(), policygen::action());
    for round in 0..3 {
        let mut rules = String::new();
        let mut last = None;
        loop {
            for i in 0..50 {
                // A port test of its own, so that no rule is always true and
                // every rule's code stays reachable.
                let (c, a) = strategy.new_tree(&mut runner).unwrap().current();
                rules += &format!("    ({c}) && l4.sport == {i} => {a}\n");
            }
            let src = format!(
                "interface a {{ address 198.18.1.1/24, 2001:db8:1::1/64 }}\ninterface b {{ address 198.18.2.1/24 }}\nconst vip = 198.18.0.10\nset ports: port = {{ 22, 80, 443 }}\nset nets: prefix = {{ 198.18.0.0/16, 2001:db8::/32 }}\nset macs: mac = {{ 02:00:00:00:00:01 }}\npool p {{\n    backend 198.18.2.11\n    backend 2001:db8:2::11\n}}\nservice s0 {{\n    vip 198.18.0.10 tcp port 80\n    pool p\n}}\nservice s1 {{\n    vip 2001:db8::10 udp port 53\n    pool p\n}}\nfilter {{\n{rules}}}\nroute 0.0.0.0/0 dev b\n"
            );
            let a = lbp_lang::analyze(&src);
            if a.has_errors() {
                // Drop the batch that made it fail to check.
                let keep = rules.lines().count() - 50;
                rules = rules.lines().take(keep).map(|l| format!("{l}\n")).collect();
                continue;
            }
            let prog = lower::lower(&a.policy).unwrap();
            match bpf::compile(&prog, Mode::TestFields) {
                Ok(p) => last = Some((prog, p)),
                Err(BpfError::Limit(m)) => {
                    eprintln!("{m}");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (prog, p) = last.expect("a first batch within the limits");
        eprintln!(
            "round {round}: {} rules, {} instructions",
            prog.rules.len(),
            p.len()
        );
        let bpf = Bpf::load_compiled(&p, Mode::TestFields)
            .unwrap_or_else(|e| panic!("{} rules: {e}", prog.rules.len()));
        let pool = Pool::of(&prog);
        let mut r = Rng::new(round);
        for i in 0..500 {
            let f = pool.fields(&mut r);
            assert_eq!(
                bpf.decide(&f),
                interp::decide(&prog, &f),
                "packet {i}: {f:?}"
            );
        }
    }
}

/// Filters of many rules of exact atoms (ports, addresses of both families,
/// MACs, TCP flags, interfaces, small sets), of several shapes and actions,
/// with rules of range atoms between them: the eBPF back end merges the
/// exact groups into hash maps (far fewer instructions than rules) and
/// decides as the interpreter on random fields drawn from the policy's own
/// values.
#[test]
fn merged_exact_groups_agree_with_the_interpreter() {
    require_netns!();
    let mut r = Rng::new(seed_of("merged groups"));
    let mut rules = String::new();
    let actions = ["drop", "reset", "accept", "local", "forward", "balance s0"];
    for i in 0..1200u64 {
        let a = actions[(r.next() % actions.len() as u64) as usize];
        let port = 1 + r.next() % 400;
        let line = match r.next() % 9 {
            0 => format!("tcp.dport == {port} => {a}"),
            1 => format!(
                "ip.src == 198.18.{}.{} && udp.dport == {port} => {a}",
                r.next() % 4,
                r.next() % 250
            ),
            2 => format!("ip.dst == 2001:db8::{:x} => {a}", r.next() % 300),
            3 => format!("eth.src == 02:00:00:00:00:{:02x} => {a}", r.next() % 200),
            4 => format!("tcp.syn && tcp.sport == {port} => {a}"),
            5 => format!(
                "in.iface == {} && ip.proto == {} => {a}",
                ["a", "b"][(i % 2) as usize],
                r.next() % 20
            ),
            6 => format!(
                "tcp.dport in {{ {port}, {} }} && ip.ttl == {} => {a}",
                port + 1,
                r.next() % 70
            ),
            // Range atoms: inline, between the merged ones.
            7 => format!("tcp.dport in {port}..{} && ip.ttl > 200 => {a}", port + 50),
            _ => format!(
                "ip.src in 198.18.{}.0/24 && ip.len > {} => {a}",
                r.next() % 4,
                500 + port
            ),
        };
        rules += &format!("    {line}\n");
    }
    let src = format!(
        "interface a {{ address 198.18.1.1/24, 2001:db8:1::1/64 }}\ninterface b {{ address 198.18.2.1/24 }}\npool p {{\n    backend 198.18.2.11\n}}\nservice s0 {{\n    vip 198.18.0.10 tcp port 80\n    pool p\n}}\nfilter {{\n{rules}}}\nroute 0.0.0.0/0 dev b\n"
    );
    let a = lbp_lang::analyze(&src);
    assert!(
        !a.has_errors(),
        "{:?}",
        a.diagnostics.iter().find(|d| d.is_error())
    );
    let prog = lower::lower(&a.policy).unwrap();
    let p = bpf::compile(&prog, Mode::TestFields).unwrap_or_else(|e| panic!("{e}"));
    let inline = p.inline_rules;
    eprintln!(
        "{} rules, {inline} inline, {} instructions, {} maps",
        prog.rules.len(),
        p.len(),
        p.maps.len()
    );
    assert!(inline < prog.rules.len() / 2, "{inline} rules left inline");
    let bpf = Bpf::load_compiled(&p, Mode::TestFields).unwrap();
    let pool = Pool::of(&prog);
    let mut decided = std::collections::HashSet::new();
    for i in 0..30_000 {
        let f = pool.fields(&mut r);
        let want = interp::decide(&prog, &f);
        assert_eq!(bpf.decide(&f), want, "random packet {i}: {f:?}");
        decided.insert(want.rule);
    }
    eprintln!("{} distinct deciding rules", decided.len());
    assert!(decided.len() > 100, "only {} rules decided", decided.len());
}

/// More groups of exact rules than a program may have maps (64): the largest
/// are merged (`MAX_GROUPS` of `bpf::merged`), the others stay inline; the program
/// loads and decides as the interpreter.
#[test]
fn more_exact_shapes_than_maps_load_and_agree() {
    require_netns!();
    let a = [
        "ip.ttl == {v}",
        "ip.len == {w}",
        "ip.src == 198.18.9.{v}",
        "ip.dst == 198.18.9.{v}",
        "eth.src == 02:00:00:00:09:{x}",
        "eth.dst == 02:00:00:00:09:{x}",
    ];
    let b = [
        "tcp.dport == {w}",
        "tcp.sport == {w}",
        "udp.dport == {w}",
        "udp.sport == {w}",
        "icmp.type == {v}",
        "icmp.code == {v}",
    ];
    let mut shapes: Vec<String> = a.iter().chain(&b).map(|s| s.to_string()).collect();
    for (i, x) in a.iter().enumerate() {
        for y in &b {
            shapes.push(format!("{x} && {y}"));
        }
        for y in &a[i + 1..] {
            shapes.push(format!("{x} && {y}"));
        }
    }
    for (x, y) in [(0, 1), (2, 3), (4, 5)] {
        shapes.push(format!("{} && {}", b[x], b[y]));
    }
    assert!(shapes.len() > 64, "{} shapes", shapes.len());
    let mut rules = String::new();
    for (k, shape) in shapes.iter().enumerate() {
        // 8 rules of a shape (a group), of varied sizes so that the largest
        // are the merged ones.
        for j in 0..8 + k % 5 {
            let v = 1 + (k * 7 + j) % 200;
            let line = shape
                .replace("{v}", &v.to_string())
                .replace("{w}", &(1000 + v).to_string())
                .replace("{x}", &format!("{:02x}", v));
            rules += &format!("    {line} => drop\n");
        }
    }
    let src = format!(
        "interface a {{ address 198.18.1.1/24 }}\nfilter {{\n{rules}}}\nroute 0.0.0.0/0 via 198.18.1.254 dev a\n"
    );
    let (_, prog) = load("many shapes", &src);
    let p = bpf::compile(&prog, Mode::TestFields).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{} shapes, {} rules, {} inline, {} maps",
        shapes.len(),
        prog.rules.len(),
        p.inline_rules,
        p.maps.len()
    );
    assert!(p.maps.len() <= 64 - 12, "{} maps", p.maps.len());
    let bpf = Bpf::load_compiled(&p, Mode::TestFields).unwrap_or_else(|e| panic!("{e}"));
    let fast = bpf::compile(&prog, Mode::Fast).unwrap();
    assert!(fast.maps.len() <= 64, "fast path: {} maps", fast.maps.len());
    let pool = Pool::of(&prog);
    let mut r = Rng::new(seed_of("many shapes"));
    for i in 0..20_000 {
        let f = pool.fields(&mut r);
        let want = interp::decide(&prog, &f);
        assert_eq!(bpf.decide(&f), want, "random packet {i}: {f:?}");
    }
}
