//! What the differential tests of the compiler's back ends share: random
//! `Fields` aimed at a policy's own constants (a seeded xorshift generator, so
//! a failure reproduces), the stock policies and the case corpus, and random
//! policies as source text (proptest strategies). Each test binary that
//! includes it (`mod policygen;`) uses a part, so unused items are allowed here.
#![allow(dead_code)]

use lbp_abi::{Fields, present};
use lbp_compiler::ir::{Addr, Cond, CondKind, Program, Set};
use lbp_compiler::lower;
use lbp_lang::ast;
use lbp_lang::check::{FIELDS, FieldInfo, Ty};
use proptest::prelude::*;
use std::path::PathBuf;

// ---------------------------------------------------------------------------
// Random fields
// ---------------------------------------------------------------------------

/// xorshift64*: small, seeded, good enough to pick test values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        xs.get(self.below(xs.len() as u64) as usize)
    }
}

/// The constants a policy talks about, to aim random packets at.
#[derive(Default, Debug)]
pub struct Pool {
    addrs: Vec<Addr>,
    ints: Vec<u64>,
    macs: Vec<[u8; 6]>,
    ifaces: u32,
}

impl Pool {
    pub fn of(prog: &Program) -> Pool {
        let mut p = Pool {
            ifaces: prog.interfaces.len() as u32,
            ..Pool::default()
        };
        for i in &prog.interfaces {
            p.addrs.extend(i.addrs.iter().map(|&(a, _)| a));
            p.macs.extend(i.mac);
        }
        for s in &prog.services {
            for (vip, proto, ports) in &s.entries {
                p.addrs.push(*vip);
                p.ints.push(u64::from(*proto));
                for &(lo, hi) in ports {
                    p.ints.extend([u64::from(lo), u64::from(hi)]);
                }
            }
        }
        for r in &prog.routes {
            p.addrs.push(r.prefix);
            p.addrs.extend(r.via);
            let (_, hi) = lbp_compiler::ir::prefix_range(r.prefix, r.len);
            p.addrs.push(hi);
        }
        for s in &prog.sets {
            match s {
                Set::Int(r) => {
                    for &(lo, hi) in r {
                        p.ints.extend([lo, hi]);
                    }
                }
                Set::Prefix { v4, v6 } => {
                    for &(lo, hi) in v4 {
                        p.addrs.extend([Addr::V4(lo), Addr::V4(hi)]);
                    }
                    for &(lo, hi) in v6 {
                        p.addrs.extend([Addr::V6(lo), Addr::V6(hi)]);
                    }
                }
                Set::Mac(ms) => p.macs.extend(ms),
            }
        }
        for r in &prog.rules {
            p.cond(&r.cond);
        }
        p
    }

    pub fn cond(&mut self, c: &Cond) {
        match &c.kind {
            CondKind::Not(x) => self.cond(x),
            CondKind::And(xs) | CondKind::Or(xs) => xs.iter().for_each(|x| self.cond(x)),
            CondKind::Int { value, .. } => self.ints.push(*value),
            CondKind::AddrEq { addr, .. } => self.addrs.push(*addr),
            CondKind::MacEq { mac, .. } => self.macs.push(*mac),
            _ => {}
        }
    }

    pub fn int(&self, r: &mut Rng, max: u64) -> u64 {
        let v = match r.below(4) {
            0 | 1 => match r.pick(&self.ints) {
                Some(&v) => match r.below(4) {
                    0 => v.wrapping_sub(1),
                    1 => v.wrapping_add(1),
                    _ => v,
                },
                None => r.next(),
            },
            2 => *r
                .pick(&[0, 1, 4, 6, 8, 17, 22, 53, 80, 443, 0x0800, 0x86dd])
                .unwrap_or(&0),
            _ => r.next(),
        };
        if v > max { r.next() % (max + 1) } else { v }
    }

    pub fn mac(&self, r: &mut Rng) -> [u8; 6] {
        match (r.below(3), r.pick(&self.macs)) {
            (0 | 1, Some(&m)) => m,
            _ => {
                let v = r.next().to_ne_bytes();
                [v[0], v[1], v[2], v[3], v[4], v[5]]
            }
        }
    }

    /// A 16-byte address field of family `fam` (4 or 6).
    pub fn addr(&self, r: &mut Rng, fam: u8) -> [u8; 16] {
        let mut b = [0u8; 16];
        let from_pool = r.pick(&self.addrs).copied().filter(|_| r.chance(70));
        let a = match from_pool {
            Some(a) => a,
            None if fam == 4 => Addr::V4(r.next() as u32),
            None => Addr::V6(u128::from(r.next()) << 64 | u128::from(r.next())),
        };
        // Sometimes step to a neighbour, or keep only the high bits.
        let a = match (a, r.below(6)) {
            (Addr::V4(x), 0) => Addr::V4(x.wrapping_add(1)),
            (Addr::V4(x), 1) => Addr::V4(x.wrapping_sub(1)),
            (Addr::V4(x), 2) => {
                let keep = r.below(33) as u32;
                let mask = if keep == 0 {
                    0
                } else {
                    u32::MAX << (32 - keep)
                };
                Addr::V4((x & mask) | (r.next() as u32 & !mask))
            }
            (Addr::V6(x), 0) => Addr::V6(x.wrapping_add(1)),
            (Addr::V6(x), 1) => Addr::V6(x.wrapping_sub(1)),
            (Addr::V6(x), 2) => {
                let keep = r.below(129) as u32;
                let mask = if keep == 0 {
                    0
                } else {
                    u128::MAX << (128 - keep)
                };
                let noise = u128::from(r.next()) << 64 | u128::from(r.next());
                Addr::V6((x & mask) | (noise & !mask))
            }
            (a, _) => a,
        };
        match a {
            Addr::V4(x) => {
                b[10] = 0xff;
                b[11] = 0xff;
                b[12..].copy_from_slice(&x.to_be_bytes());
                if r.chance(5) {
                    // Not properly mapped: the interpreter reads only bytes 12..16.
                    b[r.below(12) as usize] ^= 0x5a;
                }
            }
            Addr::V6(x) => b = x.to_be_bytes(),
        }
        b
    }

    pub fn fields(&self, r: &mut Rng) -> Fields {
        if r.chance(3) {
            // Anything at all.
            let mut f = Fields {
                present: r.next() as u32,
                pkt_len: r.next() as u32,
                in_iface: r.next() as u32,
                ip_len: r.next() as u32,
                eth_type: r.next() as u16,
                sport: r.next() as u16,
                dport: r.next() as u16,
                ip_version: r.next() as u8,
                ip_proto: r.next() as u8,
                ip_ttl: r.next() as u8,
                tcp_flags: r.next() as u8,
                icmp_type: r.next() as u8,
                icmp_code: r.next() as u8,
                ..Fields::default()
            };
            f.eth_src = self.mac(r);
            f.eth_dst = self.mac(r);
            f.ip_src = self.addr(r, 6);
            f.ip_dst = self.addr(r, 6);
            return f;
        }
        let mut f = Fields::default();
        let mut p = 0;
        if !r.chance(3) {
            p |= present::ETH;
        }
        if r.chance(3) {
            p |= present::MALFORMED;
        }
        if r.chance(10) {
            p |= present::VLAN;
        }
        // The IP family: mostly one, sometimes none, rarely both bits.
        let fam = match r.below(20) {
            0 => 0,
            1 => 46,
            2..=10 => 4,
            _ => 6,
        };
        match fam {
            4 => p |= present::IP4,
            6 => p |= present::IP6,
            46 => p |= present::IP4 | present::IP6,
            _ => {}
        }
        f.ip_version = match (fam, r.below(12)) {
            (_, 0) => r.next() as u8 % 16,
            (4, _) => 4,
            (6, _) => 6,
            (46, _) => *r.pick(&[4, 6]).unwrap_or(&4),
            _ => 0,
        };
        if r.chance(10) {
            p |= present::FRAG;
        }
        p |= match r.below(10) {
            0..=4 => present::TCP,
            5..=7 => present::UDP,
            8 => present::ICMP,
            _ => 0,
        };
        if r.chance(3) {
            p |= present::TCP | present::UDP;
        }
        f.present = p;
        f.ip_proto = match r.below(6) {
            0 => r.next() as u8,
            _ if p & present::TCP != 0 => 6,
            _ if p & present::UDP != 0 => 17,
            _ if p & present::ICMP != 0 => *r.pick(&[1, 58]).unwrap_or(&1),
            _ => self.int(r, 255) as u8,
        };
        let addr_fam = if f.ip_version == 4 { 4 } else { 6 };
        f.ip_src = self.addr(r, addr_fam);
        f.ip_dst = if r.chance(5) {
            f.ip_src
        } else {
            self.addr(r, addr_fam)
        };
        f.in_iface = if r.chance(80) {
            r.below(u64::from(self.ifaces) + 1) as u32
        } else {
            r.next() as u32
        };
        f.pkt_len = self.int(r, 0xffff_ffff) as u32;
        f.ip_len = self.int(r, 0xffff_ffff) as u32;
        f.eth_type = self.int(r, 0xffff) as u16;
        f.sport = self.int(r, 0xffff) as u16;
        f.dport = self.int(r, 0xffff) as u16;
        f.ip_ttl = self.int(r, 255) as u8;
        f.tcp_flags = r.next() as u8 & 0x3f;
        f.icmp_type = self.int(r, 255) as u8;
        f.icmp_code = self.int(r, 255) as u8;
        f.eth_src = self.mac(r);
        f.eth_dst = if r.chance(5) { f.eth_src } else { self.mac(r) };
        f
    }
}

// ---------------------------------------------------------------------------
// Stock policies
// ---------------------------------------------------------------------------

/// The `.lbp` files of a directory of the workspace, by name.
pub fn lbp_files(dir: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lbp"))
        .map(|p| {
            let name = p
                .strip_prefix(dir.parent().unwrap())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let src = std::fs::read_to_string(&p).unwrap();
            (name, src)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no policies in {}", dir.display());
    out
}

pub fn stock_policies() -> Vec<(String, String)> {
    lbp_files("policies")
}

/// The stock policies and the case corpus (`tests/cases`, whose expectations the
/// CLI tests check; here only the back ends' agreement matters).
pub fn all_policies() -> Vec<(String, String)> {
    let mut v = stock_policies();
    v.extend(lbp_files("tests/cases"));
    v
}

pub fn load(name: &str, src: &str) -> (ast::Policy, Program) {
    let a = lbp_lang::analyze(src);
    assert!(!a.has_errors(), "{name}: {:?}", a.diagnostics);
    let prog = lower::lower(&a.policy).unwrap_or_else(|e| panic!("{name}: {e}"));
    (a.policy, prog)
}

/// What the differential tests decide for each policy: the fields of every
/// test packet line of `policy`, then `random` random fields aimed at its
/// constants (the policy's name seeds them), each with what it is (`test
/// NAME` or `random packet N`), to say which one failed.
pub fn policy_fields(
    name: &str,
    policy: &ast::Policy,
    prog: &Program,
    random: usize,
) -> Vec<(String, Fields)> {
    let consts = lbp_compiler::testing::consts(policy);
    let mut out = Vec::new();
    for item in &policy.items {
        let ast::Item::Test(t) = item else { continue };
        for p in &t.packets {
            let (_, f) = lbp_compiler::testing::packet_fields(p, prog, &consts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((format!("test {:?}", t.name), f));
        }
    }
    let pool = Pool::of(prog);
    let mut r = Rng::new(seed_of(name));
    out.extend((0..random).map(|i| (format!("random packet {i}"), pool.fields(&mut r))));
    out
}

pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Random policies, as source text
// ---------------------------------------------------------------------------

pub fn v4() -> impl Strategy<Value = std::net::Ipv4Addr> {
    (
        0..4u8,
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(10),
            Just(11),
            Just(255),
            any::<u8>()
        ],
    )
        .prop_map(|(c, d)| std::net::Ipv4Addr::new(198, 18, c, d))
}

pub fn v6() -> impl Strategy<Value = std::net::Ipv6Addr> {
    (
        0..4u16,
        prop_oneof![Just(0u16), Just(1), Just(0x10), Just(0xffff), any::<u16>()],
    )
        .prop_map(|(c, d)| std::net::Ipv6Addr::new(0x2001, 0xdb8, c, 0, 0, 0, 0, d))
}

pub fn addr() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => v4().prop_map(|a| a.to_string()),
        2 => v6().prop_map(|a| a.to_string()),
    ]
}

pub fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (v4(), prop::sample::select(vec![0u32, 8, 16, 22, 24, 25, 31, 32])).prop_map(|(a, l)| {
            let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            format!("{}/{l}", std::net::Ipv4Addr::from(u32::from(a) & m))
        }),
        2 => (v6(), prop::sample::select(vec![0u32, 16, 32, 48, 64, 120, 127, 128])).prop_map(|(a, l)| {
            let m = if l == 0 { 0 } else { u128::MAX << (128 - l) };
            format!("{}/{l}", std::net::Ipv6Addr::from(u128::from(a) & m))
        }),
    ]
}

pub fn port() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![0u32, 1, 22, 53, 79, 80, 81, 443, 8080, 65535]),
        0..=65535u32,
    ]
}

pub fn port_range() -> impl Strategy<Value = String> {
    (port(), 0..300u32).prop_map(|(lo, w)| format!("{lo}..{}", (lo + w).min(65535)))
}

pub fn port_elem() -> impl Strategy<Value = String> {
    prop_oneof![port().prop_map(|p| p.to_string()), port_range()]
}

pub fn mac() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..4u8).prop_map(|i| format!("02:00:00:00:00:0{i}")),
        any::<[u8; 6]>().prop_map(|m| m.map(|b| format!("{b:02x}")).join(":")),
    ]
}

/// The language's fields (its one table) that `keep` takes, by name.
pub fn fields(keep: impl Fn(&FieldInfo) -> bool) -> Vec<&'static str> {
    FIELDS.iter().filter(|f| keep(f)).map(|f| f.name).collect()
}

pub fn int_leaf() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let port_fields = prop::sample::select(fields(|f| f.port));
    let byte_fields = prop::sample::select(fields(|f| f.ty == Ty::Int && f.max == 255));
    prop_oneof![
        (port_fields.clone(), op.clone(), port()).prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        (
            byte_fields,
            op.clone(),
            prop_oneof![Just(0u32), Just(1), Just(8), 0..=255u32]
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        (
            op.clone(),
            prop::sample::select(vec!["tcp", "udp", "icmp", "icmpv6", "6", "17"])
        )
            .prop_map(|(o, v)| format!("ip.proto {o} {v}")),
        (op.clone(), prop::sample::select(vec![0u32, 4, 6, 15]))
            .prop_map(|(o, v)| format!("ip.version {o} {v}")),
        (
            op.clone(),
            prop::sample::select(vec![0u32, 0x0800, 0x86dd, 0x0806, 65535])
        )
            .prop_map(|(o, v)| format!("eth.type {o} {v:#x}")),
        (
            // The lengths: integers wider than a byte that are no port (and
            // not the EtherType, whose values are chosen above).
            prop::sample::select(fields(|f| f.ty == Ty::Int
                && f.max > 255
                && !f.port
                && f.name != "eth.type")),
            op.clone(),
            prop_oneof![Just(0u32), Just(60), Just(1500), 0..=65535u32]
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        (port_fields.clone(), port_range()).prop_map(|(f, r)| format!("{f} in {r}")),
        (
            port_fields.clone(),
            prop::collection::vec(port_elem(), 0..7)
        )
            .prop_map(|(f, xs)| format!("{f} in {{ {} }}", xs.join(", "))),
        port_fields.clone().prop_map(|f| format!("{f} in ports")),
        (
            prop::sample::select(vec!["ip.ttl", "icmp.type"]),
            prop::collection::vec(0..=255u32, 1..7)
        )
            .prop_map(|(f, xs)| format!(
                "{f} in {{ {} }}",
                xs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )),
        (port_fields.clone(), op.clone(), port_fields).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (
            prop::sample::select(vec!["pkt.len", "ip.ttl", "ip.len", "icmp.type"]),
            op,
            prop::sample::select(vec!["ip.len", "icmp.code", "tcp.dport", "pkt.len"])
        )
            .prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        prop::sample::select(vec![
            "in.iface == a",
            "in.iface != b",
            "in.iface in { a, b }",
            "in.iface in { b }"
        ])
        .prop_map(String::from),
    ]
}

pub fn addr_leaf() -> impl Strategy<Value = String> {
    let field = prop::sample::select(fields(|f| matches!(f.ty, Ty::Addr(_))));
    let eq = prop::sample::select(vec!["==", "!="]);
    prop_oneof![
        (field.clone(), eq.clone(), addr()).prop_map(|(f, o, a)| format!("{f} {o} {a}")),
        (field.clone(), eq.clone()).prop_map(|(f, o)| format!("{f} {o} vip")),
        (field.clone(), prefix()).prop_map(|(f, p)| format!("{f} in {p}")),
        field.clone().prop_map(|f| format!("{f} in nets")),
        (
            field,
            prop::collection::vec(prop_oneof![addr(), prefix()], 0..12)
        )
            .prop_map(|(f, xs)| format!("{f} in {{ {} }}", xs.join(", "))),
        eq.prop_map(|o| format!("ip.src {o} ip.dst")),
    ]
}

pub fn other_leaf() -> impl Strategy<Value = String> {
    let flag = prop::sample::select(fields(|f| f.ty == Ty::Bool && f.name != "ip.frag"));
    let mfield = prop::sample::select(fields(|f| f.ty == Ty::Mac));
    let eq = prop::sample::select(vec!["==", "!="]);
    prop_oneof![
        flag.clone().prop_map(String::from),
        (flag, eq.clone(), any::<bool>()).prop_map(|(f, o, b)| format!("{f} {o} {b}")),
        Just("ip.frag".to_string()),
        (eq.clone(), any::<bool>()).prop_map(|(o, b)| format!("ip.frag {o} {b}")),
        (mfield.clone(), eq.clone(), mac()).prop_map(|(f, o, m)| format!("{f} {o} {m}")),
        mfield.clone().prop_map(|f| format!("{f} in macs")),
        (mfield, prop::collection::vec(mac(), 1..7))
            .prop_map(|(f, xs)| format!("{f} in {{ {} }}", xs.join(", "))),
        eq.prop_map(|o| format!("eth.src {o} eth.dst")),
        prop::sample::select(vec!["true", "false"]).prop_map(String::from),
    ]
}

pub fn cond() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => int_leaf(), 3 => addr_leaf(), 2 => other_leaf()];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..5)
                .prop_map(|xs| format!("({})", xs.join(" && "))),
            prop::collection::vec(inner.clone(), 2..5)
                .prop_map(|xs| format!("({})", xs.join(" || "))),
            inner.prop_map(|x| format!("!({x})")),
        ]
    })
}

pub fn action() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "accept",
        "drop",
        "reset",
        "local",
        "forward",
        "balance s0",
        "balance s1",
    ])
    .prop_map(String::from)
}

pub fn iface(name: &'static str, net: u8) -> impl Strategy<Value = String> {
    (
        1..255u8,
        prop::sample::select(vec![16u8, 24, 28, 30]),
        prop::option::of(1..0xffffu16),
        prop::option::of(mac()),
    )
        .prop_map(move |(h, len, v6, m)| {
            let mut s = format!("interface {name} {{\n    address 198.18.{net}.{h}/{len}");
            if let Some(x) = v6 {
                s += &format!(", 2001:db8:{net}::{x:x}/64");
            }
            if let Some(m) = m {
                s += &format!("\n    mac {m}");
            }
            s + "\n}\n"
        })
}

pub fn vip_line(ports: std::ops::Range<u32>) -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("vip".to_string()), addr()],
        prop::sample::select(vec!["tcp", "udp"]),
        prop::option::weighted(
            0.9,
            prop::collection::btree_set(ports.clone(), 1..4).prop_map(|s| s.into_iter().collect()),
        ),
        prop::option::of(ports.clone()),
    )
        .prop_map(|(a, proto, ps, range): (_, _, Option<Vec<u32>>, _)| {
            let mut elems: Vec<String> =
                ps.unwrap_or_default().iter().map(u32::to_string).collect();
            if let Some(lo) = range.filter(|_| !elems.is_empty()) {
                elems.push(format!("{}..{}", lo + 5000, lo + 5010));
            }
            if elems.is_empty() {
                format!("    vip {a} {proto}\n")
            } else {
                format!("    vip {a} {proto} port {}\n", elems.join(", "))
            }
        })
}

prop_compose! {
    pub fn policy()(
        a in iface("a", 1),
        b in iface("b", 2),
        vip in v4(),
        ports in prop::collection::vec(port_elem(), 0..9),
        nets in prop::collection::vec(prop_oneof![addr(), prefix()], 0..14),
        macs in prop::collection::vec(mac(), 0..7),
        s0 in prop::collection::vec(vip_line(0..1000), 1..3),
        s1 in prop::collection::vec(vip_line(1000..2000), 1..3),
        rules in prop::collection::vec((cond(), action()), 0..10),
        routes in prop::collection::vec((prefix(), prop::sample::select(vec!["a", "b"])), 0..5),
    ) -> String {
        let mut s = String::new();
        s += &a;
        s += &b;
        s += &format!("const vip = {vip}\n");
        s += &format!("set ports: port = {{ {} }}\n", ports.join(", "));
        s += &format!("set nets: prefix = {{ {} }}\n", nets.join(", "));
        s += &format!("set macs: mac = {{ {} }}\n", macs.join(", "));
        s += "pool p {\n    backend 198.18.2.11\n    backend 2001:db8:2::11\n}\n";
        for (name, lines) in [("s0", s0), ("s1", s1)] {
            s += &format!("service {name} {{\n{}    pool p\n    balance maglev\n    mode nat\n}}\n", lines.concat());
        }
        s += "filter {\n";
        for (c, a) in rules {
            s += &format!("    {c} => {a}\n");
        }
        s += "}\n";
        for (p, dev) in routes {
            s += &format!("route {p} dev {dev}\n");
        }
        s
    }
}

/// A rule of one of a few shapes: conjunctions of one to three tests, each an
/// equality, a set, a range, a flag or a negated set, over narrow domains.
pub fn shaped_rule() -> impl Strategy<Value = String> {
    let port = || 20..30u32;
    let net = || 0..4u32;
    let test = prop_oneof![
        port().prop_map(|p| format!("tcp.dport == {p}")),
        (port(), port()).prop_map(|(a, b)| format!("tcp.dport in {{ {a}, {b} }}")),
        (port(), 1..6u32).prop_map(|(a, n)| format!("l4.dport in {a}..{}", a + n)),
        net().prop_map(|n| format!("ip.src == 198.18.{n}.5")),
        net().prop_map(|n| format!("ip.src in 198.18.{n}.0/24")),
        net().prop_map(|n| format!("!(ip.src in 198.18.{n}.0/24)")),
        net().prop_map(|n| format!("ip.dst in 2001:db8:{n}::/48")),
        (60..70u32).prop_map(|t| format!("ip.ttl < {t}")),
        (60..70u32).prop_map(|t| format!("ip.ttl >= {t}")),
        (0..3u32).prop_map(|t| format!("icmp.type == {t}")),
        prop::sample::select(vec![
            "tcp.syn",
            "!tcp.ack",
            "ip.frag",
            "in.iface == a",
            "udp.dport != 53"
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(test, 1..4).prop_map(|ts| ts.join(" && "))
}
