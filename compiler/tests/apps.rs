//! `app NAME` (a switching core's application): the checker's names are the
//! runtime's numbers (`lbp_abi::app::BUILTIN`), and the interpreter and the
//! JIT decide `Action::App` with the application's number as the target, the
//! deciding rule and the filter stage, on rules compiled one by one and merged,
//! and never turn it into `Expire` (the application answers; nothing is sent
//! on).

use lbp_abi::{Action, Decision, app, stage};
use lbp_compiler::interp::{self, Engine};
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

/// A program's own applications (a registry: the built-in ones first) are
/// known to the checker only when it is given them, are numbered by their
/// place after the built-in ones, and both back ends decide those numbers;
/// the verdict names them.
#[test]
fn registered_applications_are_numbered_after_the_built_in_ones() {
    let apps = ["echo", "icmp", "dns", "syncookie"];
    let src = "interface lan { address 198.18.1.1/24 }\nfilter {\n\
               udp.dport == 53 => app dns\n\
               tcp.dport == 80 => app syncookie\n\
               udp.dport == 7 => app echo\n}\n";
    let plain = lbp_lang::analyze(src);
    let codes: Vec<&str> = plain.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["lbp::name::unknown_app"; 2]);
    let a = lbp_lang::analyze_with(src, &apps);
    assert!(!a.has_errors(), "{:?}", a.diagnostics);
    let prog = lower::lower_with(&a.policy, &apps).unwrap();
    assert_eq!(prog.apps, apps);
    let j = jit::compile(&prog).unwrap();
    for (proto, dport, target, rule) in [
        (Proto::Udp, 53, 2, 0),
        (Proto::Tcp, 80, 3, 1),
        (Proto::Udp, 7, 0, 2),
    ] {
        let mut spec = PacketSpec::new(
            proto,
            "198.18.1.5".parse().unwrap(),
            "198.18.1.1".parse().unwrap(),
        );
        spec.sport = 40000;
        spec.dport = dport;
        let f = wire::extract(&build(&spec), 0);
        let d = interp::decide(&prog, &f);
        assert_eq!(j.decide(&f), d);
        assert_eq!(
            (d.action, d.target, d.rule),
            (Action::App as u32, target, rule)
        );
        let v = lbp_compiler::testing::verdict(&prog, &f, d, &mut Default::default());
        assert_eq!(v, format!("app {}", apps[target as usize]));
    }
    // Lowered without them, the policy's names are unknown: an error, not a
    // panic or a wrong number.
    assert!(lower::lower(&a.policy).is_err());
}
