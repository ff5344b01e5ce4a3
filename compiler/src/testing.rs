//! Policy tests (`test` blocks): build each packet line into a frame, run it
//! through every back end, and compare with the expected verdict.
//!
//! A back end of a test is a [`Tester`]: it gets each packet line's frame in
//! order, one test block at a time (a block is one fresh appliance), and answers
//! with a verdict in the test syntax. The compiler's back ends (the interpreter
//! and the JIT) are testers through [`Decider`], which decides the packet and
//! then applies the connection-table rule the runtime applies after the
//! compiled policy, modelled here: a TCP packet balanced to a service opens a
//! connection when it is a SYN (without ACK); a later non-SYN packet of a known
//! connection is balanced; one of no known connection is reset (`unknown
//! reset`, the default), or balanced (`unknown balance`); a RST of no known
//! connection is dropped (a RST is never answered). UDP packets balanced to a
//! service are always balanced. The switching core is a tester too (the `lbp`
//! package's `testbed`, on the runtime's `testbed`), with the real table.

use crate::interp::Engine;
use crate::ir::{Addr, Program};
use crate::packet::{PacketSpec, Proto, build};
use crate::wire::extract;
use lbp_abi::{Action, Decision, Fields, NO_RULE, tcp_flag};
use lbp_lang::ast::{self, ExprKind, Item, Lit, PacketOpt, Span};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// One back end's answer to one packet line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// In the test syntax: `drop`, `balance web`, `forward dev wan`, ...
    pub text: String,
    /// The filter rule that decided, if one did (index in the program).
    pub rule: Option<u32>,
    /// What the verdict leaves out (a drop's reason, where a frame went), if
    /// the back end knows more.
    pub detail: Option<String>,
}

/// A back end of `lbp test`.
pub trait Tester {
    /// A new test block: forget every connection, as a freshly started
    /// appliance.
    fn begin(&mut self);
    /// The verdict on `frame`, received on interface `in_iface` (an index, or
    /// `u32::MAX` for none); `fields` is `extract(frame, in_iface)`.
    fn verdict(&mut self, frame: &[u8], in_iface: u32, fields: &Fields) -> Verdict;
}

/// A compiler back end as a [`Tester`]: its decision, then the modelled
/// connection-table rule (see the module documentation).
pub struct Decider<'a> {
    prog: &'a Program,
    backend: &'a dyn Engine,
    conns: HashSet<Conn>,
}

impl std::fmt::Debug for Decider<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Decider<'a> {
    pub fn new(prog: &'a Program, backend: &'a dyn Engine) -> Decider<'a> {
        Decider {
            prog,
            backend,
            conns: HashSet::new(),
        }
    }
}

impl Tester for Decider<'_> {
    fn begin(&mut self) {
        self.conns.clear();
    }

    fn verdict(&mut self, _frame: &[u8], _in_iface: u32, fields: &Fields) -> Verdict {
        let d = self.backend.decide(fields);
        Verdict {
            text: verdict(self.prog, fields, d, &mut self.conns),
            rule: (d.rule != NO_RULE).then_some(d.rule),
            detail: None,
        }
    }
}

/// The result of one packet line.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub test: String,
    /// The packet line's span in the source.
    pub span: Span,
    pub expected: String,
    /// Each back end's name and verdict (with the deciding rule's span, if any).
    pub got: Vec<(String, String, Option<Span>)>,
    /// Each back end's detail, where it gave one (same order as `got`).
    pub details: Vec<Option<String>>,
}

impl Outcome {
    /// Every back end gave the expected verdict.
    pub fn passed(&self) -> bool {
        self.got.iter().all(|(_, v, _)| *v == self.expected)
    }
    /// The back ends disagree among themselves.
    pub fn disagreement(&self) -> bool {
        self.got.windows(2).any(|w| w[0].1 != w[1].1)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed()).count()
    }
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

type Conn = (u8, Addr, u16, Addr, u16);

/// Run every test of `policy` (already lowered to `prog`) through `testers`,
/// each named.
pub fn run(
    policy: &ast::Policy,
    prog: &Program,
    testers: &mut [(&str, &mut dyn Tester)],
) -> Result<Report, String> {
    let consts = consts(policy);
    let mut report = Report::default();
    for item in &policy.items {
        let Item::Test(t) = item else { continue };
        for (_, tester) in testers.iter_mut() {
            tester.begin();
        }
        for p in &t.packets {
            let (frame, fields) = packet_fields(p, prog, &consts)?;
            let mut got = Vec::with_capacity(testers.len());
            let mut details = Vec::with_capacity(testers.len());
            for (name, tester) in testers.iter_mut() {
                let v = tester.verdict(&frame, fields.in_iface, &fields);
                let rule = v
                    .rule
                    .and_then(|r| prog.rules.get(r as usize))
                    .map(|r| r.span);
                got.push((name.to_string(), v.text, rule));
                details.push(v.detail);
            }
            report.outcomes.push(Outcome {
                test: t.name.clone(),
                span: p.span,
                expected: expected_verdict(&p.verdict),
                got,
                details,
            });
        }
    }
    Ok(report)
}

/// Run every test of `policy` through the compiler back ends `backends` (each
/// with its modelled connection table).
pub fn run_backends(
    policy: &ast::Policy,
    prog: &Program,
    backends: &[(&str, &dyn Engine)],
) -> Result<Report, String> {
    let mut deciders: Vec<(&str, Decider)> = backends
        .iter()
        .map(|&(n, b)| (n, Decider::new(prog, b)))
        .collect();
    let mut testers: Vec<(&str, &mut dyn Tester)> = deciders
        .iter_mut()
        .map(|(n, d)| (*n, d as &mut dyn Tester))
        .collect();
    run(policy, prog, &mut testers)
}

/// The policy's consts by name (for resolving test packet lines).
pub fn consts(policy: &ast::Policy) -> HashMap<&str, &ast::Expr> {
    policy
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Const(c) => Some((c.name.name.as_str(), &c.value)),
            _ => None,
        })
        .collect()
}

/// A test line's verdict as `verdict` writes decisions (`balance web`, `forward dev
/// wan`, `drop`, ...).
pub fn expected_verdict(v: &ast::Verdict) -> String {
    match (v.kind.name.as_str(), &v.arg) {
        ("balance", Some(s)) => format!("balance {}", s.name),
        ("forward", Some(i)) => format!("forward dev {}", i.name),
        ("app", Some(a)) => format!("app {}", a.name),
        (k, _) => k.to_string(),
    }
}

/// A decision as a verdict of the test syntax, after the connection-table rule.
pub fn verdict(prog: &Program, f: &Fields, d: Decision, conns: &mut HashSet<Conn>) -> String {
    match Action::from_u32(d.action) {
        Some(Action::Drop) | None => "drop".into(),
        Some(Action::Reset) => "reset".into(),
        Some(Action::Local) => "local".into(),
        Some(Action::Expire) => "expire".into(),
        Some(Action::App) => match prog.apps.get(d.target as usize) {
            Some(name) => format!("app {name}"),
            None => "drop".into(),
        },
        Some(Action::Forward) => {
            let dev = prog
                .routes
                .get(d.target as usize)
                .and_then(|r| prog.interfaces.get(r.dev as usize));
            format!("forward dev {}", dev.map_or("?", |i| i.name.as_str()))
        }
        Some(Action::Balance) => {
            let Some(svc) = prog.services.get(d.target as usize) else {
                return "drop".into();
            };
            let balance = format!("balance {}", svc.name);
            let (Some(src), Some(dst)) = (
                crate::interp::addr(f, crate::ir::AddrField::Src),
                crate::interp::addr(f, crate::ir::AddrField::Dst),
            ) else {
                return balance;
            };
            if f.present & lbp_abi::present::TCP == 0 {
                return balance;
            }
            let key = (f.ip_proto, src, f.sport, dst, f.dport);
            let syn = f.tcp_flags & tcp_flag::SYN != 0 && f.tcp_flags & tcp_flag::ACK == 0;
            if syn {
                conns.insert(key);
                balance
            } else if conns.contains(&key) || svc.unknown_balance {
                balance
            } else if f.tcp_flags & tcp_flag::RST != 0 {
                "drop".into()
            } else {
                "reset".into()
            }
        }
    }
}

fn value_addr(
    e: &ast::Expr,
    consts: &HashMap<&str, &ast::Expr>,
    depth: u32,
) -> Result<IpAddr, String> {
    match &e.kind {
        ExprKind::Lit(Lit::Addr(a)) => Ok(*a),
        ExprKind::Name(n) if depth < 64 => match consts.get(n.as_str()) {
            Some(c) => value_addr(c, consts, depth + 1),
            None => Err(format!("`{n}` is not an address const")),
        },
        _ => Err("expected an address".into()),
    }
}

fn value_int(e: &ast::Expr, consts: &HashMap<&str, &ast::Expr>, depth: u32) -> Result<u64, String> {
    match &e.kind {
        ExprKind::Lit(Lit::Int { value, .. }) => Ok(*value),
        ExprKind::Name(n) if depth < 64 => match consts.get(n.as_str()) {
            Some(c) => value_int(c, consts, depth + 1),
            None => Err(format!("`{n}` is not an integer const")),
        },
        _ => Err("expected an integer".into()),
    }
}

/// Build a test packet line into a frame and extract its fields.
pub fn packet_fields(
    p: &ast::Packet,
    prog: &Program,
    consts: &HashMap<&str, &ast::Expr>,
) -> Result<(Vec<u8>, Fields), String> {
    let proto = match p.proto.name.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        other => return Err(format!("unknown protocol `{other}`")),
    };
    let src = value_addr(&p.src.addr, consts, 0)?;
    let dst = value_addr(&p.dst.addr, consts, 0)?;
    let mut spec = PacketSpec::new(proto, src, dst);
    let fit = |v: u64, max: u64, what: &str| -> Result<u64, String> {
        if v > max {
            Err(format!("{what} {v} is above {max}"))
        } else {
            Ok(v)
        }
    };
    if let Some(port) = &p.src.port {
        spec.sport = fit(value_int(port, consts, 0)?, 65535, "port")? as u16;
    }
    if let Some(port) = &p.dst.port {
        spec.dport = fit(value_int(port, consts, 0)?, 65535, "port")? as u16;
    }
    let mut on = None;
    for o in &p.opts {
        match o {
            PacketOpt::Flag(f) => {
                spec.tcp_flags |= match f.name.as_str() {
                    "syn" => tcp_flag::SYN,
                    "ack" => tcp_flag::ACK,
                    "fin" => tcp_flag::FIN,
                    "rst" => tcp_flag::RST,
                    "psh" => tcp_flag::PSH,
                    "urg" => tcp_flag::URG,
                    other => return Err(format!("unknown flag `{other}`")),
                }
            }
            PacketOpt::Type(e) => {
                spec.icmp_type = Some(fit(value_int(e, consts, 0)?, 255, "ICMP type")? as u8)
            }
            PacketOpt::Code(e) => {
                spec.icmp_code = fit(value_int(e, consts, 0)?, 255, "ICMP code")? as u8
            }
            PacketOpt::Ttl(e) => spec.ttl = fit(value_int(e, consts, 0)?, 255, "TTL")? as u8,
            // A frame is at most an IP packet of 65535 bytes behind an Ethernet header
            // with two VLAN tags.
            PacketOpt::Len(e) => {
                spec.len = Some(fit(value_int(e, consts, 0)?, 65535 + 22, "length")? as usize)
            }
            PacketOpt::On(i) => {
                on = Some(
                    prog.interfaces
                        .iter()
                        .position(|x| x.name == i.name)
                        .ok_or_else(|| format!("no interface `{}`", i.name))?
                        as u32,
                )
            }
        }
    }
    // Without `on`, the packet arrives where a reply to its source would leave.
    let in_iface = on
        .or_else(|| {
            crate::interp::route(prog, Addr::from_ip(src)).map(|r| prog.routes[r as usize].dev)
        })
        .unwrap_or(u32::MAX);
    let frame = build(&spec);
    let fields = extract(&frame, in_iface);
    Ok((frame, fields))
}
