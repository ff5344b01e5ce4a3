//! The Cranelift back end against the reference interpreter: the stock policies on
//! their own test packets and on thousands of random `Fields`, random policies
//! generated as source text (proptest), and `testing::run` with both back ends.
//!
//! Random `Fields` are drawn from a seeded xorshift generator, so a failure
//! reproduces; addresses, ports and MACs come half from the policy's own constants
//! (and their neighbours) and half at random, so that every branch is taken.
//! The generators are `policygen/mod.rs`, shared with the eBPF back end's test.

mod policygen;

use lbp_compiler::interp::{self, Engine, Interpreter};
use lbp_compiler::{jit, lower, testing};
use lbp_lang::check::{FIELDS, Ty};
use policygen::{
    Pool, Rng, action, all_policies, cond, lbp_files, load, policy, policy_fields, seed_of,
    shaped_rule, stock_policies,
};
use proptest::prelude::*;

#[test]
fn policies_agree_on_test_packets_and_random_fields() {
    let mut total = 0;
    for (name, src) in all_policies() {
        let (policy, prog) = load(&name, &src);
        let jit = jit::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every rule that can be merged into a table, merged.
        let merged = jit::compile_with(&prog, 1).unwrap_or_else(|e| panic!("{name}: {e}"));

        let random = if name.starts_with("policies") {
            5000
        } else {
            1000
        };
        for (what, f) in policy_fields(&name, &policy, &prog, random) {
            let want = interp::decide(&prog, &f);
            assert_eq!(jit.decide(&f), want, "{name}, {what}: {f:?}");
            assert_eq!(merged.decide(&f), want, "{name} merged, {what}: {f:?}");
            total += 1;
        }
    }
    assert!(total > 5000);
}

#[test]
fn the_case_corpus_gives_the_same_verdicts_on_both_back_ends() {
    let mut lines = 0;
    for (name, src) in lbp_files("tests/cases") {
        let (policy, prog) = load(&name, &src);
        let jit = jit::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}"));
        let merged = jit::compile_with(&prog, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        let interp = Interpreter::new(&prog);
        let backends: [(&str, &dyn Engine); 3] = [
            ("interp", &interp),
            ("jit", &jit),
            ("jit, rules merged", &merged),
        ];
        let report = testing::run_backends(&policy, &prog, &backends).unwrap();
        for o in &report.outcomes {
            assert!(!o.disagreement(), "{name}, test {:?}: {:?}", o.test, o.got);
        }
        lines += report.outcomes.len();
    }
    assert!(lines > 100, "only {lines} packet lines in tests/cases");
}

#[test]
fn stock_policy_tests_pass_on_both_back_ends() {
    for (name, src) in stock_policies() {
        let (policy, prog) = load(&name, &src);
        let jit = jit::compile(&prog).unwrap_or_else(|e| panic!("{name}: {e}"));
        let interp = Interpreter::new(&prog);
        let backends: [(&str, &dyn Engine); 2] = [("interp", &interp), ("jit", &jit)];
        let report = testing::run_backends(&policy, &prog, &backends).unwrap();
        assert!(!report.outcomes.is_empty(), "{name} has no test packets");
        for o in &report.outcomes {
            assert!(
                o.passed() && !o.disagreement(),
                "{name}, test {:?}: expected {}, got {:?}",
                o.test,
                o.expected,
                o.got
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_global_rejects: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_policies_agree(src in policy(), seed in any::<u64>()) {
        let a = lbp_lang::analyze(&src);
        prop_assume!(!a.has_errors());
        let prog = lower::lower(&a.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let jit = jit::compile(&prog).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let merged = jit::compile_with(&prog, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pool = Pool::of(&prog);
        let mut r = Rng::new(seed);
        for _ in 0..300 {
            let f = pool.fields(&mut r);
            let want = interp::decide(&prog, &f);
            prop_assert_eq!(jit.decide(&f), want, "{:?}", f);
            prop_assert_eq!(merged.decide(&f), want, "merged: {:?}", f);
        }
    }

    /// Many rules of a few shapes, over narrow value domains so that rules share
    /// keys and overlap: merged into tables (at the default threshold and at 1)
    /// they must decide as the interpreter, rule by rule, does.
    #[test]
    fn merged_rules_agree(rules in prop::collection::vec((shaped_rule(), action()), 8..80), seed in any::<u64>()) {
        let mut src = String::from("interface a { address 198.18.1.1/24, 2001:db8:1::1/64 }\ninterface b { address 198.18.2.1/24 }\npool p {\n    backend 198.18.2.11\n}\nservice s0 {\n    vip 198.18.0.10 tcp port 80\n    pool p\n}\nservice s1 {\n    vip 198.18.0.11 udp port 53\n    pool p\n}\nfilter {\n");
        for (c, a) in &rules {
            src += &format!("    {c} => {a}\n");
        }
        src += "}\nroute 0.0.0.0/0 via 198.18.2.254 dev b\n";
        let a = lbp_lang::analyze(&src);
        prop_assume!(!a.has_errors());
        let prog = lower::lower(&a.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pool = Pool::of(&prog);
        for min in [1, 4, jit::MERGE_MIN] {
            let jit = jit::compile_with(&prog, min).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // The classifier's own (scalar, Rust) lookup: the lowest merged rule
            // whose condition holds, rule by rule.
            let cls = lbp_compiler::classify::Classifier::build(&prog, min);
            let mut r = Rng::new(seed);
            for _ in 0..400 {
                let f = pool.fields(&mut r);
                prop_assert_eq!(jit.decide(&f), interp::decide(&prog, &f), "merge_min {}: {:?}\n{}", min, f, src);
                let first_merged = (0..prog.rules.len() as u32)
                    .filter(|i| !cls.inline.contains(i))
                    .find(|&i| interp::eval(&prog, &prog.rules[i as usize].cond, &f));
                prop_assert_eq!(cls.lookup(&f), first_merged, "classifier, merge_min {}: {:?}\n{}", min, f, src);
            }
        }
    }
}

/// Large groups of the shapes a growing filter has (a blocklist first, exact
/// keys, a range primary with a negated atom, ranges of a one-byte field indexed
/// by a table of its values, ranges up to the field's maximum, and guards):
/// every TTL, ICMP type and a sweep of ports around each bound decide as the
/// interpreter does, merged at the default threshold and at 1.
#[test]
fn large_groups_agree_on_every_small_value() {
    let mut src = String::from(
        "interface client { address 198.18.0.1/24, 2001:db8:1::1/64 }\ninterface servers { address 198.18.2.1/24 }\nset blocked = {\n",
    );
    for i in 0..40 {
        src += &format!("    198.18.{}.{}/32,\n", i / 8, 3 * i);
    }
    src += "}\nfilter {\n    ip.src in blocked => drop\n";
    for i in 0..400u32 {
        let (a, b) = ((i >> 4) & 7, i & 15);
        src += &match i % 8 {
            0 => format!(
                "    ip.src in 198.19.{a}.{b}/32 && tcp.dport == {} => drop\n",
                1 + i % 50
            ),
            1 => format!(
                "    ip.dst == 198.18.{a}.{b} && tcp.dport in {{ 22, 8022, {} }} => reset\n",
                1024 + i % 60
            ),
            2 => format!(
                "    udp.dport in {}..{} && !(ip.src in 198.18.{a}.0/24) => drop\n",
                5000 + i % 7,
                5100 + i % 11
            ),
            3 => format!(
                "    in.iface == client && icmp.type == {} && ip.ttl < {} => local\n",
                8 * (i % 2),
                1 + (i * 7) % 255
            ),
            4 => format!(
                "    icmp.type == {} && ip.ttl >= {} => drop\n",
                i % 4,
                200 + i % 50
            ),
            5 => format!(
                "    ip.proto == 17 && ip.ttl in {}..{} => reset\n",
                (i * 3) % 200,
                (i * 3) % 200 + 20
            ),
            6 => format!(
                "    tcp.dport in {}..{} && ip.ttl > {} => local\n",
                100 * (i % 9),
                100 * (i % 9) + 40,
                i % 130
            ),
            _ => format!(
                "    ip.dst in 2001:db8:{a}::/48 && tcp.dport >= {} => drop\n",
                60000 + i % 7
            ),
        };
    }
    src += "}\nroute 198.18.2.0/24 dev servers\nroute 0.0.0.0/0 via 198.18.0.254 dev client\n";
    let (_, prog) = load("large groups", &src);
    let jits = [
        jit::compile(&prog).expect("compiles"),
        jit::compile_with(&prog, 1).expect("compiles merged"),
    ];
    let pool = Pool::of(&prog);
    let mut r = Rng::new(seed_of("large groups"));
    let ports: Vec<u16> = [
        0u16, 1, 21, 22, 23, 80, 1024, 5000, 5100, 8022, 60000, 65535,
    ]
    .into_iter()
    .chain((0..9).flat_map(|k| [100 * k, 100 * k + 40, 100 * k + 41]))
    .chain((5000..5020).chain(5095..5115))
    .chain((1..=60).map(|k| 1023 + k))
    .collect();
    let mut decided = std::collections::HashSet::new();
    for i in 0..1000 {
        let mut f = pool.fields(&mut r);
        for ttl in 0..=255u8 {
            f.ip_ttl = ttl;
            f.icmp_type = ttl % 10;
            f.dport = ports[(i + usize::from(ttl)) % ports.len()];
            let want = interp::decide(&prog, &f);
            decided.insert(want.rule);
            for (j, jit) in jits.iter().enumerate() {
                assert_eq!(jit.decide(&f), want, "back end {j}, packet {i}: {f:?}");
            }
        }
    }
    // The sweep reaches many rules, of every kind.
    let kinds: std::collections::BTreeSet<u32> = decided
        .iter()
        .filter(|&&r| (1..=400).contains(&r))
        .map(|r| (r - 1) % 8)
        .collect();
    assert!(
        decided.len() > 60 && kinds.len() == 8,
        "{} rules decided, of the kinds {kinds:?}",
        decided.len()
    );
}

/// Every field of the language's one table lowers, compiles, and decides alike
/// on both back ends: a policy with one rule per field, on random packets
/// made from its own values.
#[test]
fn every_field_lowers_compiles_and_agrees() {
    let mut src = String::from(
        "interface a { address 198.18.0.1/24, 2001:db8::1/64 }\ninterface b { address 198.18.1.1/24 }\nfilter {\n",
    );
    for (i, f) in FIELDS.iter().enumerate() {
        let test = match f.ty {
            Ty::Bool => f.name.to_string(),
            Ty::Iface => format!("{} == b", f.name),
            Ty::Addr(_) => format!("{} in {{ 198.18.0.{i}, 2001:db8::{i} }}", f.name),
            Ty::Mac => format!("{} == 02:00:00:00:00:{i:02x}", f.name),
            _ => format!("{} == {}", f.name, (i as u64) % (f.max + 1)),
        };
        let action = ["drop", "reset", "local", "accept"][i % 4];
        src.push_str(&format!("    {test} => {action}\n"));
    }
    src.push_str("}\n");
    let (_, prog) = load("every field", &src);
    assert_eq!(prog.rules.len(), FIELDS.len());
    let jit = jit::compile(&prog).expect("compiles");
    let merged = jit::compile_with(&prog, 1).expect("compiles merged");
    let pool = Pool::of(&prog);
    let mut r = Rng::new(seed_of("every field"));
    let mut hit = vec![false; FIELDS.len()];
    for i in 0..20_000 {
        let f = pool.fields(&mut r);
        let want = interp::decide(&prog, &f);
        assert_eq!(jit.decide(&f), want, "random packet {i}: {f:?}");
        assert_eq!(merged.decide(&f), want, "merged, random packet {i}: {f:?}");
        if let Some(h) = hit.get_mut(want.rule as usize) {
            *h = true;
        }
    }
    let missed: Vec<&str> = FIELDS
        .iter()
        .zip(&hit)
        .filter(|(_, h)| !**h)
        .map(|(f, _)| f.name)
        .collect();
    // Most rules decide some packet (a rule can be shadowed by an earlier one
    // for every packet the pool makes, but not most of them).
    assert!(
        missed.len() <= FIELDS.len() / 4,
        "rules never matched: {missed:?}"
    );
}

/// The property tests' conditions use every field of the language.
#[test]
fn the_generator_writes_every_field() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[9; 32]),
    );
    let strategy = cond();
    let mut text = String::new();
    for _ in 0..3000 {
        text.push_str(&strategy.new_tree(&mut runner).unwrap().current());
        text.push('\n');
    }
    let words: std::collections::HashSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .collect();
    let missing: Vec<&str> = FIELDS
        .iter()
        .map(|f| f.name)
        .filter(|n| !words.contains(n))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

/// The generator must mostly produce policies that check clean, or the property
/// above tests little: count them on a fixed sample.
#[test]
fn random_policies_mostly_check_clean() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = policy();
    let mut clean = 0;
    let mut first_error = None;
    for _ in 0..200 {
        let src = strategy.new_tree(&mut runner).unwrap().current();
        let a = lbp_lang::analyze(&src);
        if a.has_errors() {
            if first_error.is_none() {
                first_error = Some((src, a.diagnostics));
            }
        } else {
            clean += 1;
        }
    }
    assert!(
        clean >= 120,
        "only {clean}/200 check clean; first error: {first_error:#?}"
    );
}
