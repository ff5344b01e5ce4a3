//! The stages after the filter (services, virtual IPs without an entry, own
//! addresses, longest-prefix route) on random hand-built programs of 1 to 40
//! entries per table, so that both the JIT's inline code (small tables) and its
//! helper calls (large ones) are compared with the interpreter, for both families.

use lbp_abi::{Fields, present, tcp_flag};
use lbp_compiler::interp::{self, Engine};
use lbp_compiler::ir::{self, Addr, Cond, CondKind, Interface, Program, Route, Rule, Service};
use lbp_compiler::jit;
use lbp_lang::ast::Span;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Addresses from a small space, so that tables and packets collide often.
fn addr(r: &mut Rng, v6: bool) -> Addr {
    if v6 {
        let base = 0x2001_0db8_u128 << 96;
        Addr::V6(base | u128::from(r.below(4)) << 64 | u128::from(r.below(16)))
    } else {
        Addr::V4(0xc612_0000 | (r.below(4) as u32) << 8 | r.below(16) as u32)
    }
}

fn any_addr(r: &mut Rng) -> Addr {
    let v6 = r.below(2) == 0;
    addr(r, v6)
}

fn program(r: &mut Rng) -> Program {
    let n_svc = 1 + r.below(20) as usize;
    let services = (0..n_svc)
        .map(|i| Service {
            name: format!("s{i}"),
            entries: (0..1 + r.below(3))
                .map(|_| {
                    let proto = if r.below(2) == 0 { 6 } else { 17 };
                    let ports = (0..r.below(4))
                        .map(|_| {
                            let lo = r.below(100) as u16;
                            (lo, lo + r.below(3) as u16)
                        })
                        .collect();
                    (any_addr(r), proto, ports)
                })
                .collect(),
            unknown_balance: false,
            hash_mask: lbp_abi::hash_field::ALL,
            pool: None,
            mode: ir::Mode::Dsr,
            algorithm: ir::Algorithm::Maglev,
        })
        .collect();
    let n_own = 1 + r.below(40);
    let interfaces = vec![Interface {
        name: "a".into(),
        addrs: (0..n_own).map(|_| (any_addr(r), 24)).collect(),
        mac: None,
    }];
    let n_routes = 1 + r.below(40);
    let routes = (0..n_routes)
        .map(|_| {
            let v6 = r.below(2) == 0;
            let len = if v6 {
                [0, 64, 96, 120, 126, 128, 130][r.below(7) as usize]
            } else {
                [0, 8, 16, 24, 29, 30, 32, 33][r.below(8) as usize]
            };
            Route {
                prefix: addr(r, v6),
                len,
                via: None,
                dev: 0,
            }
        })
        .collect();
    let cond = |kind| Cond {
        kind,
        span: Span::default(),
    };
    let rules = match r.below(3) {
        0 => vec![],
        1 => vec![Rule {
            cond: cond(CondKind::Flag {
                need: present::TCP,
                mask: tcp_flag::SYN,
                expect: true,
            }),
            action: ir::Action::Forward,
            span: Span::default(),
        }],
        _ => vec![Rule {
            cond: cond(CondKind::Flag {
                need: present::TCP,
                mask: tcp_flag::FIN,
                expect: true,
            }),
            action: ir::Action::Accept,
            span: Span::default(),
        }],
    };
    Program {
        interfaces,
        services,
        routes,
        rules,
        sets: vec![],
        pools: vec![],
        apps: vec![],
    }
}

fn fields(r: &mut Rng, prog: &Program) -> Fields {
    let mut pool: Vec<Addr> = Vec::new();
    for s in &prog.services {
        pool.extend(s.entries.iter().map(|e| e.0));
    }
    pool.extend(prog.interfaces[0].addrs.iter().map(|a| a.0));
    for rt in &prog.routes {
        pool.push(rt.prefix);
        pool.push(ir::prefix_range(rt.prefix, rt.len).1);
    }
    let dst = if r.below(3) == 0 {
        any_addr(r)
    } else {
        pool[r.below(pool.len() as u64) as usize]
    };
    let mut f = Fields {
        present: present::ETH,
        ..Fields::default()
    };
    match dst {
        Addr::V4(a) => {
            f.ip_dst[10] = 0xff;
            f.ip_dst[11] = 0xff;
            f.ip_dst[12..].copy_from_slice(&a.to_be_bytes());
            f.ip_version = 4;
            f.present |= present::IP4;
        }
        Addr::V6(a) => {
            f.ip_dst = a.to_be_bytes();
            f.ip_version = 6;
            f.present |= present::IP6;
        }
    }
    match r.below(10) {
        0 => f.ip_version = 0,
        1 => f.present &= !(present::IP4 | present::IP6),
        _ => {}
    }
    match r.below(4) {
        0 => {
            f.present |= present::TCP;
            f.ip_proto = 6;
        }
        1 => {
            f.present |= present::UDP;
            f.ip_proto = 17;
        }
        2 => {
            f.present |= present::TCP;
            f.ip_proto = 17;
        }
        _ => f.ip_proto = [1, 6, 17][r.below(3) as usize],
    }
    f.dport = r.below(105) as u16;
    f.tcp_flags = [0, tcp_flag::RST, tcp_flag::SYN, tcp_flag::FIN][r.below(4) as usize];
    // Mostly alive; 0 and 1 expire where the packet would be balanced or routed.
    f.ip_ttl = [64, 64, 2, 1, 0][r.below(5) as usize];
    f
}

#[test]
fn tails_of_1_to_40_entries_agree_with_the_interpreter() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..300 {
        let prog = program(&mut r);
        let j = jit::compile(&prog).unwrap();
        for _ in 0..400 {
            let f = fields(&mut r, &prog);
            assert_eq!(j.decide(&f), interp::decide(&prog, &f), "{prog:?}\n{f:?}");
        }
    }
}
