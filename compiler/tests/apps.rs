//! `app NAME` (a switching core's application): the checker's names are the
//! runtime's numbers (`lbp_abi::app::BUILTIN`), and the interpreter and the
//! JIT decide `Action::App` with the application's number as the target, the
//! deciding rule and the filter stage, on rules compiled one by one and merged,
//! and never turn it into `Expire` (the application answers; nothing is sent
//! on).

use lbp_abi::{Action, Decision, app, stage};
use lbp_compiler::interp::{self, Backend};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::{jit, lower, wire};
use std::fmt::Write;

#[test]
fn the_checker_knows_the_runtime_s_applications_by_their_numbers() {
    assert_eq!(lbp_lang::check::APPLICATIONS, app::BUILTIN);
    for (i, name) in app::BUILTIN.iter().enumerate() {
        assert_eq!(app::index(name), Some(i as u32));
    }
    assert_eq!(app::index("nope"), None);
}

/// A packet (protocol, source, destination port) and the application and
/// rule expected to take it.
type Case<'a> = (Proto, &'a str, u16, Option<(u32, u32)>);

#[test]
fn both_back_ends_decide_app_inline_and_merged() {
    let mut src = String::from(
        "interface lan { address 198.18.1.1/24, 2001:db8:1::1/64 }\n\
         interface wan { address 198.18.10.254/24 }\nfilter {\n",
    );
    // Twelve rules of one shape (merged), alternating applications, then an
    // inline one.
    for i in 0..12 {
        let name = app::BUILTIN[i % 2];
        writeln!(
            src,
            "ip.src == 198.18.1.{i} && udp.dport == 7 => app {name}"
        )
        .unwrap();
    }
    src.push_str("icmp.type == 8 => app icmp\nicmp.type == 128 => app icmp\n}\n");
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics);
    let prog = lower::lower(&a.policy).unwrap();
    let mut apps = 0;
    for merge_min in [1, 8, usize::MAX] {
        let j = jit::compile_with(&prog, merge_min).unwrap();
        let mut cases: Vec<Case> = Vec::new();
        let srcs: Vec<String> = (0..14).map(|i| format!("198.18.1.{i}")).collect();
        for (i, s) in srcs.iter().enumerate() {
            let want = (i < 12).then_some(((i % 2) as u32, i as u32));
            cases.push((Proto::Udp, s, 7, want));
            cases.push((Proto::Udp, s, 8, None));
        }
        cases.push((Proto::Icmp, "198.18.1.5", 0, Some((1, 12))));
        cases.push((Proto::Icmpv6, "2001:db8:1::5", 0, Some((1, 13))));
        for (proto, s, dport, want) in cases {
            for ttl in [1, 64] {
                let src_ip: std::net::IpAddr = s.parse().unwrap();
                let dst = if src_ip.is_ipv4() {
                    "198.18.10.9"
                } else {
                    "2001:db8:1::9"
                };
                let mut spec = PacketSpec::new(proto, src_ip, dst.parse().unwrap());
                spec.sport = 40000;
                spec.dport = dport;
                spec.ttl = ttl;
                let f = wire::extract(&build(&spec), 0);
                let d = interp::decide(&prog, &f);
                assert_eq!(j.decide(&f), d, "{s} {dport} ttl {ttl} merge {merge_min}");
                if let Some((target, rule)) = want {
                    apps += 1;
                    let expect = Decision {
                        action: Action::App as u32,
                        target,
                        rule,
                        stage: stage::FILTER,
                        hash: 0,
                    };
                    assert_eq!(d, expect, "{s} {dport} ttl {ttl}");
                } else {
                    assert_ne!(d.action, Action::App as u32, "{s} {dport}");
                }
            }
        }
    }
    assert_eq!(apps, 3 * 2 * 14);
}
