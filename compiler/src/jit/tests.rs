use super::limits::MAX_DEPTH;
use super::tables::Helper;
use super::*;
use crate::interp;
use crate::interp::Engine;
use crate::ir::{
    self, Addr, AddrField, Cond, CondKind, IntField, Interface, MacField, Program, Route, Rule,
    Service, Set,
};
use lbp_abi::{Action as A, Decision, Fields, NO_RULE, present, stage, tcp_flag};
use lbp_lang::ast::Span;

fn cond(kind: CondKind) -> Cond {
    Cond {
        kind,
        span: Span::default(),
    }
}

fn rule(kind: CondKind, action: ir::Action) -> Rule {
    Rule {
        cond: cond(kind),
        action,
        span: Span::default(),
    }
}

fn mapped(a: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[10] = 0xff;
    b[11] = 0xff;
    b[12..].copy_from_slice(&a.to_be_bytes());
    b
}

fn v4_fields(dst: u32) -> Fields {
    Fields {
        present: present::ETH | present::IP4 | present::TCP,
        ip_version: 4,
        ip_proto: 6,
        ip_ttl: 64,
        dport: 80,
        ip_dst: mapped(dst),
        ..Fields::default()
    }
}

fn agree(prog: &Program, fields: &[Fields]) {
    let jit = compile(prog).unwrap();
    for f in fields {
        assert_eq!(jit.decide(f), interp::decide(prog, f), "{f:?}");
    }
}

#[test]
fn empty_program() {
    let prog = Program::default();
    let mut f = v4_fields(0xc612_0001);
    let jit = compile(&prog).unwrap();
    assert_eq!(
        jit.decide(&f),
        Decision {
            action: A::Drop as u32,
            target: 0,
            rule: NO_RULE,
            stage: stage::ROUTE,
            hash: 0
        }
    );
    f.present |= present::MALFORMED;
    assert_eq!(jit.decide(&f).stage, stage::MALFORMED);
}

/// Martian destinations are dropped at their own stage, before any route
/// (here default routes of both families), with the directed broadcasts
/// inline (one interface) and through the helper (twenty).
#[test]
fn martian_destinations_are_refused_before_any_route() {
    for n in [1u32, 20] {
        let prog = Program {
            interfaces: (0..n)
                .map(|i| Interface {
                    name: format!("i{i}"),
                    addrs: vec![
                        (Addr::V4(0xc612_0001 + (i << 8)), 24),
                        (Addr::V6(0x2001_0db8 << 96 | 1), 64),
                    ],
                    mac: None,
                })
                .collect(),
            routes: vec![
                Route {
                    prefix: Addr::V4(0),
                    len: 0,
                    via: None,
                    dev: 0,
                },
                Route {
                    prefix: Addr::V6(0),
                    len: 0,
                    via: None,
                    dev: 0,
                },
            ],
            ..Program::default()
        };
        let jit = compile(&prog).unwrap();
        let v4 = [
            (0x0000_0000, true),
            (0x0000_0001, true),
            (0x7f00_0001, true),
            (0xa9fe_0101, true),
            (0xe000_00fb, true),
            (0xefff_fffa, true),
            (0xffff_ffff, true),
            (0xc612_00ff, true),
            (0xc612_00fe, false),
            (0xc612_ffff, false),
            (0xf000_0001, false),
            (0x0100_0000, false),
            (0xc612_13ff, n == 20),
        ];
        // Both back ends agree, and drop exactly the martians at their stage.
        let expect = |f: &Fields, martian: bool| {
            let d = jit.decide(f);
            assert_eq!(d, interp::decide(&prog, f), "{f:?}");
            let want = if martian {
                (stage::MARTIAN, A::Drop)
            } else {
                (stage::ROUTE, A::Forward)
            };
            assert_eq!((d.stage, d.action), (want.0, want.1 as u32), "{f:?}, {n}");
        };
        for (dst, martian) in v4 {
            expect(&v4_fields(dst), martian);
        }
        let v6: [(u128, bool); 7] = [
            (0, true),
            (1, true),
            (0xfe80 << 112 | 5, true),
            (0xfebf << 112, true),
            (0xff02 << 112 | 1, true),
            (0x2001_0db8 << 96 | 0xffff, false),
            (2, false),
        ];
        for (dst, martian) in v6 {
            let f = Fields {
                present: present::ETH | present::IP6 | present::UDP,
                ip_version: 6,
                ip_proto: 17,
                ip_ttl: 64,
                dport: 53,
                ip_dst: dst.to_be_bytes(),
                ..Fields::default()
            };
            expect(&f, martian);
        }
    }
}

#[test]
fn ipv4_reads_only_the_low_word() {
    // The interpreter reads an IPv4 address from bytes 12..16 whatever the
    // first twelve hold; so does the JIT.
    let prog = Program {
        rules: vec![rule(
            CondKind::AddrEq {
                need: present::IP4,
                field: AddrField::Dst,
                addr: Addr::V4(0x0a00_0001),
                eq: true,
            },
            ir::Action::Drop,
        )],
        ..Program::default()
    };
    let mut f = v4_fields(0x0a00_0001);
    f.ip_dst[0] = 0x20;
    f.ip_dst[10] = 0;
    agree(&prog, &[f, v4_fields(0x0a00_0001), v4_fields(0x0a00_0002)]);
    assert_eq!(compile(&prog).unwrap().decide(&f).rule, 0);
}

#[test]
fn routes_rank_by_written_length_and_first_wins() {
    let r = |prefix, len, dev| Route {
        prefix,
        len,
        via: None,
        dev,
    };
    let prog = Program {
        interfaces: vec![Interface {
            name: "a".into(),
            addrs: vec![],
            mac: None,
        }],
        routes: vec![
            r(Addr::V4(0x0a00_0000), 8, 0),
            r(Addr::V4(0x0a01_0000), 16, 0),
            r(Addr::V4(0x0a01_0000), 16, 0),
            r(Addr::V4(0x0a01_0203), 40, 0), // a hand-built IR only
            r(Addr::V4(0), 0, 0),
            r(Addr::V6(1), 128, 0),
        ],
        ..Program::default()
    };
    let fs: Vec<Fields> = [0x0a00_0001, 0x0a01_0001, 0x0a01_0203, 0x0b00_0000]
        .into_iter()
        .map(v4_fields)
        .collect();
    agree(&prog, &fs);
}

#[test]
fn services_and_big_sets_go_through_helpers() {
    let vip = Addr::V4(0x0a00_000a);
    let prog = Program {
        services: vec![
            Service {
                name: "a".into(),
                entries: vec![(vip, 6, vec![(443, 443)])],
                unknown_balance: false,
                hash_mask: lbp_abi::hash_field::ALL,
                pool: None,
                mode: ir::Mode::Dsr,
                algorithm: ir::Algorithm::Maglev,
            },
            Service {
                name: "b".into(),
                entries: vec![(vip, 6, vec![(80, 80), (8000, 8100)])],
                unknown_balance: false,
                hash_mask: lbp_abi::hash_field::ALL,
                pool: None,
                mode: ir::Mode::Dsr,
                algorithm: ir::Algorithm::Maglev,
            },
        ],
        sets: vec![Set::Int((0..10).map(|i| (i * 100, i * 100 + 5)).collect())],
        rules: vec![rule(
            CondKind::IntIn {
                need: present::TCP,
                field: IntField::Sport,
                set: 0,
            },
            ir::Action::Local,
        )],
        ..Program::default()
    };
    let mut fs = Vec::new();
    for dport in [80, 443, 25, 8050] {
        for sport in [0, 5, 6, 505, 900, 905, 906] {
            let mut f = v4_fields(0x0a00_000a);
            f.dport = dport;
            f.sport = sport;
            fs.push(f);
            f.tcp_flags = tcp_flag::RST;
            fs.push(f);
        }
    }
    agree(&prog, &fs);
}

/// Every range boundary of sets on both paths (inline and helper), both
/// families, both fields.
#[test]
fn set_boundaries_inline_and_through_helpers() {
    let v6 = |x: u128| 0x2001_0db8_u128 << 96 | x;
    for n in [1u32, INLINE_MAX as u32, INLINE_MAX as u32 + 3] {
        let v4r: Vec<(u32, u32)> = (0..n).map(|i| (i * 100 + 10, i * 100 + 10 + i)).collect();
        let v6r: Vec<(u128, u128)> = (0..n)
            .map(|i| {
                (
                    v6(u128::from(i) * 100),
                    v6(u128::from(i) * 100 + u128::from(i)),
                )
            })
            .collect();
        let ints: Vec<(u64, u64)> = v4r.iter().map(|&(a, b)| (a.into(), b.into())).collect();
        let macs: Vec<[u8; 6]> = (0..n).map(|i| [2, 0, 0, 0, 0, i as u8]).collect();
        let prog = Program {
            sets: vec![
                Set::Prefix {
                    v4: v4r.clone(),
                    v6: v6r.clone(),
                },
                Set::Int(ints),
                Set::Mac(macs),
            ],
            rules: vec![
                rule(
                    CondKind::AddrIn {
                        need: present::IP4 | present::IP6,
                        field: AddrField::Src,
                        set: 0,
                    },
                    ir::Action::Drop,
                ),
                rule(
                    CondKind::AddrIn {
                        need: present::IP4 | present::IP6,
                        field: AddrField::Dst,
                        set: 0,
                    },
                    ir::Action::Local,
                ),
                rule(
                    CondKind::IntIn {
                        need: present::TCP,
                        field: IntField::Dport,
                        set: 1,
                    },
                    ir::Action::Reset,
                ),
                rule(
                    CondKind::MacIn {
                        field: MacField::Dst,
                        set: 2,
                    },
                    ir::Action::Balance(7),
                ),
            ],
            ..Program::default()
        };
        let mut fs = Vec::new();
        let mut edge4 = Vec::new();
        for &(lo, hi) in &v4r {
            edge4.extend([lo - 1, lo, hi, hi + 1]);
        }
        let mut edge6 = Vec::new();
        for &(lo, hi) in &v6r {
            edge6.extend([lo - 1, lo, hi, hi + 1]);
        }
        for (k, &a) in edge4.iter().enumerate() {
            let mut f = v4_fields(a);
            f.ip_src = mapped(a);
            fs.push(f);
            f.ip_src = mapped(0);
            fs.push(f);
            f.ip_dst = mapped(0);
            f.dport = a as u16;
            f.eth_dst = [2, 0, 0, 0, 0, k as u8];
            fs.push(f);
        }
        for &a in &edge6 {
            let mut f = Fields {
                present: present::ETH | present::IP6 | present::UDP,
                ip_version: 6,
                ip_src: a.to_be_bytes(),
                ..Fields::default()
            };
            fs.push(f);
            f.ip_dst = f.ip_src;
            f.ip_src = [0; 16];
            fs.push(f);
        }
        agree(&prog, &fs);
    }
}

#[test]
fn a_missing_set_is_an_error_not_a_panic() {
    let prog = Program {
        rules: vec![rule(
            CondKind::MacIn {
                field: MacField::Src,
                set: 3,
            },
            ir::Action::Drop,
        )],
        ..Program::default()
    };
    assert!(compile(&prog).unwrap_err().message().contains("set 3"));
}

#[test]
fn deep_nesting_is_refused() {
    let mut c = cond(CondKind::Const(true));
    for _ in 0..=MAX_DEPTH {
        c = cond(CondKind::Not(Box::new(c)));
    }
    let prog = Program {
        rules: vec![Rule {
            cond: c,
            action: ir::Action::Drop,
            span: Span::default(),
        }],
        ..Program::default()
    };
    assert!(compile(&prog).is_err());
}

#[test]
fn a_jit_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Jit>();
    let jit = std::sync::Arc::new(compile(&Program::default()).unwrap());
    let f = v4_fields(1);
    let d = jit.decide(&f);
    let other = std::sync::Arc::clone(&jit);
    let got = std::thread::spawn(move || other.decide(&f)).join().unwrap();
    assert_eq!(got, d);
}

#[test]
fn helper_order_matches_the_enum() {
    for (i, h) in Helper::ALL.into_iter().enumerate() {
        assert_eq!(h as usize, i);
    }
}

/// Runs of single-flag tests in an `&&` (one compare of the flags byte),
/// with flags expected set, clear, and both, on every flags byte.
#[test]
fn flag_runs_agree_on_every_flags_byte() {
    let src = "interface a { address 198.18.0.1/24 }
filter {
tcp.syn && tcp.ack == false && ip.ttl > 1 => drop
tcp.fin && tcp.fin == false => reset
tcp.rst == false && tcp.psh && tcp.urg == false && tcp.ack => local
tcp.psh && tcp.urg => drop
tcp.syn != true && tcp.ack != false => forward
}
route 0.0.0.0/0 dev a
";
    let a = lbp_lang::analyze(src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
    let prog = crate::lower::lower(&a.policy).unwrap();
    let jit = compile(&prog).unwrap();
    let mut decided = std::collections::HashSet::new();
    for flags in 0..=255u8 {
        for tcp in [true, false] {
            let mut f = v4_fields(0xc612_0005);
            f.tcp_flags = flags;
            f.ip_ttl = 64;
            if !tcp {
                f.present &= !present::TCP;
            }
            let want = interp::decide(&prog, &f);
            assert_eq!(jit.decide(&f), want, "{f:?}");
            decided.insert(want.rule);
        }
    }
    // Every rule but the contradiction (1) and `forward` (which routes, no
    // rule in the decision) decided some packet.
    let want: std::collections::HashSet<u32> = [0, 2, 3, NO_RULE].into();
    assert_eq!(decided, want);
}

/// The test packets of the stock policies and the case corpus, and variants
/// of them in every family (version and IP4/IP6 bits disagreeing included),
/// give the interpreter's decision with the filter emitted once per family
/// and once for all (the form larger filters get), merged or not.
#[test]
fn family_copies_and_the_generic_filter_agree() {
    use lbp_lang::ast::Item;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files = Vec::new();
    for dir in ["policies", "tests/cases"] {
        let rd = std::fs::read_dir(format!("{root}/{dir}")).unwrap();
        for e in rd {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "lbp") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut packets, mut specialized) = (0, 0);
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let a = lbp_lang::analyze(&src);
        if a.has_errors() {
            continue;
        }
        let Ok(prog) = crate::lower::lower(&a.policy) else {
            continue;
        };
        let consts = crate::testing::consts(&a.policy);
        let mut fields = Vec::new();
        for item in &a.policy.items {
            let Item::Test(t) = item else { continue };
            for p in &t.packets {
                if let Ok((_, f)) = crate::testing::packet_fields(p, &prog, &consts) {
                    fields.push(f);
                }
            }
        }
        let base = fields.len();
        for i in 0..base * 8 {
            let mut f = fields[i % base];
            let r = next();
            f.ip_version = [4, 6, 0, 4, 6, 5][(r % 6) as usize];
            f.present ^= (r >> 8) as u32 & (present::IP4 | present::IP6 | present::TCP);
            if r >> 16 & 3 == 0 {
                std::mem::swap(&mut f.ip_src, &mut f.ip_dst);
            }
            if r >> 18 & 3 == 0 {
                f.tcp_flags = (r >> 24) as u8;
            }
            if r >> 20 & 3 == 0 {
                f.ip_dst[..12].copy_from_slice(&f.ip_src[..12]);
            }
            if r >> 22 & 3 == 0 {
                // The same IPv4 word under different upper words.
                f.ip_dst[12..].copy_from_slice(&f.ip_src[12..]);
                f.ip_src[(r >> 32) as usize % 12] ^= 1;
            }
            fields.push(f);
        }
        let mut jits = Vec::new();
        for merge_min in [MERGE_MIN, 1] {
            for generic in [false, true] {
                let (jit, _) = compile_inner(&prog, false, merge_min, generic)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                jits.push((jit, merge_min, generic));
            }
        }
        specialized += usize::from(base > 0);
        for f in &fields {
            let want = interp::decide(&prog, f);
            for (jit, merge_min, generic) in &jits {
                assert_eq!(
                    jit.decide(f),
                    want,
                    "{} (merge_min {merge_min}, generic {generic}): {f:?}",
                    path.display()
                );
                // Every field is written (`Jit::decide` relies on it): a
                // decision filled with another value beforehand ends the same.
                let mut out = Decision {
                    action: 0x5a5a_5a5a,
                    target: 0x5a5a_5a5a,
                    rule: 0x5a5a_5a5a,
                    stage: 0x5a5a_5a5a,
                    hash: 0x5a5a_5a5a,
                };
                // SAFETY: the function of a live `Jit` with its own tables, a
                // valid `Fields` and a valid, writable `Decision`.
                unsafe { (jit.filter_fn())(jit.tables(), f, &mut out) };
                assert_eq!(out, want, "{} (filled): {f:?}", path.display());
            }
            packets += 1;
        }
    }
    assert!(
        specialized > 10 && packets > 3000,
        "{specialized} {packets}"
    );
}
