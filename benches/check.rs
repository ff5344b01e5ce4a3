//! Front-end benchmark: parse + check time of generated policies with 10, 1 000,
//! 10 000 and 100 000 filter rules and as many set entries.
//!
//! `cargo bench --bench check` prints, for each size, the best of several runs of
//! parsing alone (the baseline, measured in the same run) and of parse + check, the
//! cost per rule, and the ratio of per-rule cost to the 1 000-rule policy, then
//! whether 100 000 rules check in under one second. Run without `--bench` (as
//! `cargo test --all-targets` does) it only checks the generated policies are clean.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A policy with `n` filter rules of several shapes and a set of `n` prefixes.
fn policy(n: usize) -> String {
    let mut s = String::with_capacity(n * 64);
    s.push_str("interface client { address 198.18.0.1/24 }\ninterface servers { address 198.18.2.1/24 }\n\n");
    s.push_str("set blocked = {\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "    198.{}.{}.{}/32,",
            18 + (i >> 16) % 2,
            (i >> 8) & 255,
            i & 255
        );
    }
    s.push_str("}\n\npool web {\n    backend 198.18.2.11 weight 3\n    backend 198.18.2.12\n    weight = weight * (1 - cpu) * 100 / (1 + clients)\n}\n\n");
    s.push_str("service http {\n    vip 198.18.0.10 tcp port 80, 443\n    pool web\n    balance maglev\n    mode nat to port 8080\n}\n\nfilter {\n    ip.src in blocked => drop\n");
    for i in 0..n {
        let (a, b) = ((i >> 8) & 255, i & 255);
        let _ = match i % 4 {
            0 => writeln!(
                s,
                "    ip.src in 198.19.{a}.{b}/32 && tcp.dport == {} => drop",
                1 + i % 65535
            ),
            1 => writeln!(
                s,
                "    ip.dst == 198.18.{a}.{b} && tcp.dport in {{ 22, 8022, {} }} => reset",
                1024 + i % 60000
            ),
            2 => writeln!(
                s,
                "    udp.dport in 5000..6000 && !(ip.src in 198.18.{a}.0/24) => drop"
            ),
            _ => writeln!(
                s,
                "    in.iface == client && icmp.type == 8 && ip.ttl < {} => local",
                1 + i % 255
            ),
        };
    }
    s.push_str(
        "}\n\nroute 198.18.2.0/24 dev servers\nroute 0.0.0.0/0 via 198.18.0.254 dev client\n",
    );
    s
}

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if bench {
        &[10, 1_000, 10_000, 100_000]
    } else {
        &[10, 1_000]
    };
    for &n in sizes {
        let a = lbp_lang::analyze(&policy(n));
        assert!(
            a.diagnostics.is_empty(),
            "generated policy of {n} rules is not clean: {:?}",
            &a.diagnostics[..1]
        );
    }
    if !bench {
        println!(
            "check bench: generated policies are clean (run `cargo bench --bench check` to measure)"
        );
        return;
    }
    println!(
        "{:>8} {:>10} {:>12} {:>14} {:>12} {:>10} {:>14}",
        "rules", "bytes", "parse ms", "parse+check ms", "check/parse", "ns/rule", "per-rule ratio"
    );
    let mut per_rule_1000 = None;
    let mut at_100k = Duration::ZERO;
    for &n in sizes {
        let src = policy(n);
        let runs = if n >= 100_000 { 3 } else { 10 };
        let parse = best(runs, || {
            std::hint::black_box(lbp_lang::parse::parse(std::hint::black_box(&src)));
        });
        let full = best(runs, || {
            std::hint::black_box(lbp_lang::analyze(std::hint::black_box(&src)));
        });
        let per_rule = full.as_nanos() as f64 / n as f64;
        if n == 1_000 {
            per_rule_1000 = Some(per_rule);
        }
        if n == 100_000 {
            at_100k = full;
        }
        let ratio = per_rule_1000.map_or("-".to_string(), |b| format!("{:.2}x", per_rule / b));
        println!(
            "{n:>8} {:>10} {:>12.2} {:>14.2} {:>11.2}x {:>10.0} {:>14}",
            src.len(),
            parse.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            full.as_secs_f64() / parse.as_secs_f64(),
            per_rule,
            ratio
        );
    }
    let verdict = if at_100k < Duration::from_secs(1) {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "100000 rules + 100000 set entries: parse+check {:.0} ms; target < 1000 ms: {verdict}",
        at_100k.as_secs_f64() * 1e3
    );
}
