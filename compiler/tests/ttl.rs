//! A packet that would be balanced or forwarded with a TTL (hop limit) of 1 or 0
//! expires (`lbp_abi::expires`): the interpreter and the JIT say `Expire` with
//! the target, rule and stage of the decision it replaces and no hash, on every
//! way the JIT reaches a balance or forward exit (filter rules inline and
//! merged, services and routes inline and through helpers, either hash), and
//! leave every other decision as it is.

use lbp_abi::{Action, Decision, Fields, present, tcp_flag};
use lbp_compiler::interp::{self, Engine};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::{jit, lower, wire};
use std::fmt::Write;
use std::net::IpAddr;

/// A policy with every kind of balance and forward exit: `big` makes the
/// service and route tables large enough for the JIT's helpers, and adds enough
/// rules of one shape to be merged.
fn policy(big: bool) -> String {
    let mut p = String::from(
        "interface client { address 198.18.0.1/24, 2001:db8::1/64 }\n\
         interface servers { address 198.18.2.1/24, 2001:db8:2::1/64 }\n\
         pool web { backend 198.18.2.11\n backend 2001:db8:2::11 }\n\
         service http { vip 198.18.0.10 tcp port 80\n vip 2001:db8::10 tcp port 80\n pool web }\n\
         service sticky { vip 198.18.0.11 udp port 53\n pool web\n balance hash(ip.src) }\n\
         filter {\n\
         tcp.dport == 8080 => balance http\n\
         tcp.dport == 9090 => forward\n\
         tcp.dport == 22 => drop\n",
    );
    if big {
        for i in 0..12 {
            writeln!(
                p,
                "ip.src == 198.18.50.{i} && tcp.dport == 7000 => balance sticky"
            )
            .unwrap();
        }
    }
    p.push_str("}\n");
    if big {
        for i in 0..20 {
            writeln!(
                p,
                "service s{i} {{ vip 198.18.3.{i} tcp port 80\n pool web }}"
            )
            .unwrap();
            writeln!(p, "route 198.18.{}.0/24 via 198.18.2.254", 100 + i).unwrap();
            writeln!(p, "route 2001:db8:{:x}::/48 via 2001:db8:2::fe", 0x100 + i).unwrap();
        }
    }
    p.push_str("route 0.0.0.0/0 via 198.18.0.254\nroute ::/0 via 2001:db8::fe\n");
    p
}

fn packets() -> Vec<(Proto, &'static str, &'static str, u16, u16)> {
    vec![
        (Proto::Tcp, "198.18.0.5", "198.18.0.10", 40000, 80),
        (Proto::Tcp, "2001:db8::5", "2001:db8::10", 40000, 80),
        (Proto::Udp, "198.18.0.5", "198.18.0.11", 40000, 53),
        (Proto::Tcp, "198.18.0.5", "198.18.3.7", 40000, 80),
        (Proto::Tcp, "198.18.0.5", "198.18.9.9", 40000, 8080),
        (Proto::Tcp, "198.18.0.5", "198.18.0.10", 40000, 9090),
        (Proto::Tcp, "198.18.0.5", "198.18.9.9", 40000, 22),
        (Proto::Tcp, "198.18.50.3", "198.18.9.9", 40000, 7000),
        (Proto::Tcp, "198.18.0.5", "198.18.0.10", 40000, 25),
        (Proto::Udp, "198.18.0.5", "198.18.0.10", 40000, 25),
        (Proto::Tcp, "198.18.0.5", "198.18.0.1", 40000, 22),
        (Proto::Icmp, "198.18.0.5", "198.18.2.11", 0, 0),
        (Proto::Icmp, "198.18.0.5", "198.18.105.1", 0, 0),
        (Proto::Icmpv6, "2001:db8::5", "2001:db8:105::1", 0, 0),
        (Proto::Icmpv6, "2001:db8::5", "2001:db8:77::1", 0, 0),
        (Proto::Udp, "198.18.0.5", "203.0.113.9", 40000, 53),
    ]
}

fn fields(p: &(Proto, &str, &str, u16, u16), ttl: u8) -> Fields {
    let src: IpAddr = p.1.parse().unwrap();
    let dst: IpAddr = p.2.parse().unwrap();
    let mut spec = PacketSpec::new(p.0, src, dst);
    spec.sport = p.3;
    spec.dport = p.4;
    spec.ttl = ttl;
    if p.0 == Proto::Tcp {
        spec.tcp_flags = tcp_flag::SYN;
    }
    let f = wire::extract(&build(&spec), 0);
    assert_eq!(f.present & present::MALFORMED, 0, "{p:?}");
    f
}

#[test]
fn expiry_is_the_same_on_every_exit_of_both_back_ends() {
    let (mut expired, mut kept) = (0, 0);
    for big in [false, true] {
        for merge_min in [1, 8, usize::MAX] {
            let src = policy(big);
            let a = lbp_lang::analyze(&src);
            assert!(!a.has_errors(), "{:?}\n{src}", a.diagnostics);
            let prog = lower::lower(&a.policy).unwrap();
            let j = jit::compile_with(&prog, merge_min).unwrap();
            for p in packets() {
                let alive = interp::decide(&prog, &fields(&p, 64));
                for ttl in [0, 1, 2, 255] {
                    let f = fields(&p, ttl);
                    let d = interp::decide(&prog, &f);
                    assert_eq!(
                        j.decide(&f),
                        d,
                        "{p:?} ttl {ttl} big {big} merge {merge_min}"
                    );
                    let sent_on =
                        [Action::Balance as u32, Action::Forward as u32].contains(&alive.action);
                    if ttl <= 1 && sent_on {
                        expired += 1;
                        let want = Decision {
                            action: Action::Expire as u32,
                            hash: 0,
                            ..alive
                        };
                        assert_eq!(d, want, "{p:?} ttl {ttl}");
                    } else {
                        kept += 1;
                        assert_eq!(d, alive, "{p:?} ttl {ttl}");
                    }
                }
            }
        }
    }
    assert!(
        expired >= 60 && kept >= 100,
        "{expired} expired, {kept} kept"
    );
}
