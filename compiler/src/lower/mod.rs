//! Lowering: a policy that passed `lbp check` to the IR ([`Program`]).
//!
//! Names become indices, consts are folded, sets become sorted range tables, and
//! each comparison becomes a leaf that names the packet field, the headers it
//! needs, and a constant. Lowering assumes the checker found no error; on a tree it
//! cannot lower (which a checked tree never is) it returns a message, not a panic.

use crate::error::{CompileError, code};
use crate::ir::*;
use lbp_abi::weight::Input;
use lbp_abi::{hash_field, present};
use lbp_lang::ast::{self, ArithOp, ExprKind, Item, Lit, Span};
use std::collections::HashMap;

/// Lower a checked policy, whose `app NAME` names a built-in application
/// (`lbp_abi::app::BUILTIN`).
pub fn lower(policy: &ast::Policy) -> Result<Program, CompileError> {
    lower_with(policy, lbp_abi::app::BUILTIN)
}

/// Lower a policy checked with these applications
/// (`lbp_lang::check::check_with`): `app NAME` is numbered by its place in
/// `apps`, the switching cores' order.
pub fn lower_with(policy: &ast::Policy, apps: &[&str]) -> Result<Program, CompileError> {
    let mut l = Lowerer::default();
    l.prog.apps = apps.iter().map(|a| a.to_string()).collect();
    for item in &policy.items {
        match item {
            Item::Interface(i) => {
                l.ifaces
                    .insert(&i.name.name, l.prog.interfaces.len() as u32);
                let mut addrs = Vec::new();
                let mut mac = None;
                for s in &i.stmts {
                    match &s.kind {
                        ast::IfaceStmtKind::Address(a) => {
                            for e in a {
                                if let ExprKind::Lit(Lit::Prefix { addr, len }) = &e.kind {
                                    addrs.push((Addr::from_ip(*addr), *len as u8));
                                }
                            }
                        }
                        ast::IfaceStmtKind::Mac(m) => {
                            if let ExprKind::Lit(Lit::Mac(m)) = &m.kind {
                                mac = Some(*m);
                            }
                        }
                        ast::IfaceStmtKind::Mtu(_) => {}
                    }
                }
                l.prog.interfaces.push(Interface {
                    name: i.name.name.clone(),
                    addrs,
                    mac,
                });
            }
            Item::Const(c) => {
                l.consts.insert(&c.name.name, &c.value);
            }
            Item::Set(s) => {
                l.set_defs.insert(&s.name.name, s);
            }
            Item::Service(s) => {
                l.services.insert(&s.name.name, l.services.len() as u32);
            }
            Item::Pool(p) => {
                let pool = l.pool(p)?;
                l.prog.pools.push(pool);
            }
            _ => {}
        }
    }
    // Connected networks come first among the routes.
    for (dev, iface) in l.prog.interfaces.clone().iter().enumerate() {
        for &(addr, len) in &iface.addrs {
            let (net, _) = prefix_range(addr, len);
            l.prog.routes.push(Route {
                prefix: net,
                len,
                via: None,
                dev: dev as u32,
            });
        }
    }
    for item in &policy.items {
        match item {
            Item::Service(s) => {
                let svc = l.service(s)?;
                l.prog.services.push(svc);
            }
            Item::Route(r) => {
                let route = l.route(r)?;
                l.prog.routes.push(route);
            }
            Item::Filter(f) => {
                for r in &f.rules {
                    let cond = l.cond(&r.cond)?;
                    let action = match (r.action.kind.name.as_str(), &r.action.service) {
                        ("accept", _) => Action::Accept,
                        ("drop", _) => Action::Drop,
                        ("reset", _) => Action::Reset,
                        ("local", _) => Action::Local,
                        ("forward", _) => Action::Forward,
                        ("balance", Some(s)) => Action::Balance(l.service_index(&s.name)?),
                        ("app", Some(a)) => Action::App(
                            apps.iter()
                                .position(|n| *n == a.name)
                                .map(|i| i as u32)
                                .ok_or_else(|| format!("unknown application `{}`", a.name))?,
                        ),
                        (other, _) => {
                            return Err(CompileError::new(
                                code::INTERNAL,
                                format!("unknown action `{other}`"),
                            ));
                        }
                    };
                    l.prog.rules.push(Rule {
                        cond,
                        action,
                        span: r.span,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(l.prog)
}

#[derive(Default)]
struct Lowerer<'a> {
    prog: Program,
    ifaces: HashMap<&'a str, u32>,
    consts: HashMap<&'a str, &'a ast::Expr>,
    set_defs: HashMap<&'a str, &'a ast::SetDef>,
    set_ids: HashMap<&'a str, SetId>,
    services: HashMap<&'a str, u32>,
}

/// A constant value, after folding.
#[derive(Clone, Debug)]
enum Val {
    Int(u64),
    Bool(bool),
    Addr(Addr),
    Prefix(Addr, u8),
    Range(u64, u64),
    Mac([u8; 6]),
    Iface(u32),
    Str,
    Float,
    Duration,
}

const IP: u32 = present::IP4 | present::IP6;

/// What a packet field is, for lowering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    Int(IntField, u32),
    Flag(u8),
    Frag,
    Addr(AddrField),
    Mac(MacField),
}

/// How each packet field of the language (`lbp_lang::check::FIELDS`, in its
/// order; a test holds the two equal) is read: the IR field or flag, and the
/// headers it needs.
const FIELD_KINDS: &[(&str, FieldKind)] = {
    use FieldKind as K;
    use lbp_abi::tcp_flag as t;
    &[
        ("in.iface", K::Int(IntField::InIface, 0)),
        ("pkt.len", K::Int(IntField::PktLen, 0)),
        ("eth.src", K::Mac(MacField::Src)),
        ("eth.dst", K::Mac(MacField::Dst)),
        ("eth.type", K::Int(IntField::EthType, present::ETH)),
        ("ip.version", K::Int(IntField::IpVersion, IP)),
        ("ip.src", K::Addr(AddrField::Src)),
        ("ip.dst", K::Addr(AddrField::Dst)),
        ("ip.proto", K::Int(IntField::IpProto, IP)),
        ("ip.ttl", K::Int(IntField::IpTtl, IP)),
        ("ip.len", K::Int(IntField::IpLen, IP)),
        ("ip.frag", K::Frag),
        ("tcp.sport", K::Int(IntField::Sport, present::TCP)),
        ("tcp.dport", K::Int(IntField::Dport, present::TCP)),
        ("tcp.syn", K::Flag(t::SYN)),
        ("tcp.ack", K::Flag(t::ACK)),
        ("tcp.fin", K::Flag(t::FIN)),
        ("tcp.rst", K::Flag(t::RST)),
        ("tcp.psh", K::Flag(t::PSH)),
        ("tcp.urg", K::Flag(t::URG)),
        ("udp.sport", K::Int(IntField::Sport, present::UDP)),
        ("udp.dport", K::Int(IntField::Dport, present::UDP)),
        ("icmp.type", K::Int(IntField::IcmpType, present::ICMP)),
        ("icmp.code", K::Int(IntField::IcmpCode, present::ICMP)),
        (
            "l4.sport",
            K::Int(IntField::Sport, present::TCP | present::UDP),
        ),
        (
            "l4.dport",
            K::Int(IntField::Dport, present::TCP | present::UDP),
        ),
    ]
};

fn field_kind(name: &str) -> Option<FieldKind> {
    FIELD_KINDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, k)| k)
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        o => o,
    }
}

impl<'a> Lowerer<'a> {
    fn service_index(&self, name: &str) -> Result<u32, CompileError> {
        self.services
            .get(name)
            .copied()
            .ok_or_else(|| CompileError::from(format!("no service `{name}`")))
    }

    fn iface_index(&self, name: &str) -> Result<u32, CompileError> {
        self.ifaces
            .get(name)
            .copied()
            .ok_or_else(|| CompileError::from(format!("no interface `{name}`")))
    }

    /// The constant value of a value expression (a literal or a name).
    fn val(&self, e: &ast::Expr, depth: u32) -> Result<Val, CompileError> {
        if depth > 64 {
            return Err(CompileError::new(code::INTERNAL, "const chain too long"));
        }
        Ok(match &e.kind {
            ExprKind::Lit(l) => match l {
                Lit::Int { value, .. } => Val::Int(*value),
                Lit::Bool(b) => Val::Bool(*b),
                Lit::Addr(a) => Val::Addr(Addr::from_ip(*a)),
                Lit::Prefix { addr, len } => {
                    Val::Prefix(Addr::from_ip(*addr), (*len).min(128) as u8)
                }
                Lit::Range(a, b) => Val::Range(*a, *b),
                Lit::Mac(m) => Val::Mac(*m),
                Lit::Str(_) => Val::Str,
                Lit::Float(_) => Val::Float,
                Lit::Duration { .. } => Val::Duration,
            },
            ExprKind::Name(n) => {
                if let Some(c) = self.consts.get(n.as_str()) {
                    return self.val(c, depth + 1);
                }
                if let Some(&i) = self.ifaces.get(n.as_str()) {
                    return Ok(Val::Iface(i));
                }
                match n.as_str() {
                    "tcp" => Val::Int(6),
                    "udp" => Val::Int(17),
                    "icmp" => Val::Int(1),
                    "icmpv6" => Val::Int(58),
                    _ => {
                        return Err(CompileError::new(
                            code::INTERNAL,
                            format!("`{n}` has no constant value"),
                        ));
                    }
                }
            }
            ExprKind::Paren(x) => return self.val(x, depth + 1),
            _ => return Err(CompileError::new(code::INTERNAL, "not a constant")),
        })
    }

    fn addr(&self, e: &ast::Expr) -> Result<Addr, CompileError> {
        match self.val(e, 0)? {
            Val::Addr(a) => Ok(a),
            v => Err(CompileError::new(
                code::INTERNAL,
                format!("expected an address, found {v:?}"),
            )),
        }
    }

    fn service(&mut self, s: &ast::Service) -> Result<Service, CompileError> {
        let mut entries = Vec::new();
        let mut unknown_balance = false;
        let mut hash_mask = hash_field::ALL;
        let mut pool = None;
        let mut mode = Mode::Nat { to_port: None };
        let mut algorithm = Algorithm::Maglev;
        for st in &s.stmts {
            match &st.kind {
                ast::ServiceStmtKind::Vip { addr, proto, ports } => {
                    let a = self.addr(addr)?;
                    let p = if proto.name == "udp" { 17 } else { 6 };
                    let mut ranges = Vec::new();
                    for port in ports {
                        match self.val(port, 0)? {
                            Val::Int(v) => ranges.push((v as u16, v as u16)),
                            Val::Range(lo, hi) => ranges.push((lo as u16, hi as u16)),
                            v => {
                                return Err(CompileError::new(
                                    code::INTERNAL,
                                    format!("not a port: {v:?}"),
                                ));
                            }
                        }
                    }
                    if ports.is_empty() {
                        ranges.push((0, u16::MAX));
                    }
                    entries.push((a, p, ranges));
                }
                ast::ServiceStmtKind::Unknown(u) => unknown_balance = u.name == "balance",
                ast::ServiceStmtKind::Pool(p) => {
                    pool = self
                        .prog
                        .pools
                        .iter()
                        .position(|x| x.name == p.name)
                        .map(|i| i as u32);
                }
                ast::ServiceStmtKind::Mode { kind, to_port } => {
                    mode = if kind.name == "dsr" {
                        Mode::Dsr
                    } else {
                        let to_port = match to_port {
                            Some(e) => match self.val(e, 0)? {
                                Val::Int(v) => Some(u16::try_from(v).map_err(|_| "not a port")?),
                                v => {
                                    return Err(CompileError::new(
                                        code::INTERNAL,
                                        format!("not a port: {v:?}"),
                                    ));
                                }
                            },
                            None => None,
                        };
                        Mode::Nat { to_port }
                    };
                }
                ast::ServiceStmtKind::Balance(ast::Balance::Named(n)) => {
                    algorithm = match n.name.as_str() {
                        "round_robin" => Algorithm::RoundRobin,
                        "least_load" => Algorithm::LeastLoad,
                        _ => Algorithm::Maglev,
                    };
                }
                ast::ServiceStmtKind::Balance(ast::Balance::Hash { fields, .. }) => {
                    algorithm = Algorithm::Hash;
                    hash_mask = fields.iter().fold(0, |m, f| {
                        m | match f.name.as_str() {
                            "ip.src" => hash_field::SRC,
                            "ip.dst" => hash_field::DST,
                            "ip.proto" => hash_field::PROTO,
                            "l4.sport" => hash_field::SPORT,
                            "l4.dport" => hash_field::DPORT,
                            _ => 0,
                        }
                    });
                }
            }
        }
        Ok(Service {
            name: s.name.name.clone(),
            entries,
            unknown_balance,
            hash_mask,
            pool,
            mode,
            algorithm,
        })
    }

    /// A weight formula: input names first (they take precedence over consts
    /// of the same name), then consts, numbers, `+ - * /` and negation.
    fn formula(&self, e: &ast::Expr, depth: u32) -> Result<Formula, CompileError> {
        if depth > 256 {
            return Err(CompileError::new(
                code::FORMULA,
                "the weight formula is nested too deeply (at most 256 terms and levels)",
            )
            .at(e.span, "too deep here"));
        }
        let sub = |x: &ast::Expr| self.formula(x, depth + 1).map(Box::new);
        Ok(match &e.kind {
            ExprKind::Lit(Lit::Int { value, .. }) => Formula::Num(*value as f64),
            ExprKind::Lit(Lit::Float(v)) => Formula::Num(*v),
            ExprKind::Name(n) => match (Input::from_name(n), self.consts.get(n.as_str())) {
                (Some(i), _) => Formula::Input(i),
                (None, Some(c)) => return self.formula(c, depth + 1),
                (None, None) => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("`{n}` is no weight input"),
                    ));
                }
            },
            ExprKind::Paren(x) => return self.formula(x, depth + 1),
            ExprKind::Neg(x) => Formula::Neg(sub(x)?),
            ExprKind::Arith(first, rest) => {
                // A chain `a + b + c ...` becomes a tree as deep as it is long:
                // each term counts as one level, so that no formula can make
                // the evaluation (or a clone or drop) exhaust the stack.
                let mut acc = self.formula(first, depth + 1)?;
                for (k, (op, x)) in rest.iter().enumerate() {
                    let d = depth + 1 + k as u32;
                    if d > 256 {
                        return Err(CompileError::new(
                            code::FORMULA,
                            "the weight formula is too long (at most 256 terms and levels)",
                        )
                        .at(x.span, "the limit is passed here"));
                    }
                    let (a, b) = (Box::new(acc), Box::new(self.formula(x, d + 1)?));
                    acc = match op {
                        ArithOp::Add => Formula::Add(a, b),
                        ArithOp::Sub => Formula::Sub(a, b),
                        ArithOp::Mul => Formula::Mul(a, b),
                        ArithOp::Div => Formula::Div(a, b),
                    };
                }
                acc
            }
            _ => return Err(CompileError::new(code::INTERNAL, "not a weight formula")),
        })
    }

    /// The literal behind `e` (through consts and parentheses).
    fn literal<'e>(&'e self, e: &'e ast::Expr, depth: u32) -> Result<&'e Lit, CompileError> {
        if depth > 64 {
            return Err(CompileError::new(code::INTERNAL, "const chain too long"));
        }
        match &e.kind {
            ExprKind::Lit(l) => Ok(l),
            ExprKind::Paren(x) => self.literal(x, depth + 1),
            ExprKind::Name(n) => match self.consts.get(n.as_str()) {
                Some(c) => self.literal(c, depth + 1),
                None => Err(CompileError::new(
                    code::INTERNAL,
                    format!("`{n}` has no constant value"),
                )),
            },
            _ => Err(CompileError::new(code::INTERNAL, "not a constant")),
        }
    }

    /// A `health` line, options left out at their defaults (the timeout at
    /// the interval).
    fn health(&self, h: &ast::Health) -> Result<Check, CompileError> {
        let int = |e: &ast::Expr| match self.literal(e, 0)? {
            Lit::Int { value, .. } => Ok(*value),
            _ => Err(CompileError::new(
                code::INTERNAL,
                format!("not a number: {:?}", e.kind),
            )),
        };
        let us = |e: &ast::Expr| match self.literal(e, 0)? {
            Lit::Duration { amount, unit } => {
                let per = match unit {
                    ast::TimeUnit::Us => 1,
                    ast::TimeUnit::Ms => 1_000,
                    ast::TimeUnit::S => 1_000_000,
                    ast::TimeUnit::M => 60_000_000,
                    ast::TimeUnit::H => 3_600_000_000,
                };
                amount
                    .checked_mul(per)
                    .ok_or_else(|| CompileError::from("duration out of range"))
            }
            _ => Err(CompileError::new(
                code::INTERNAL,
                format!("not a duration: {:?}", e.kind),
            )),
        };
        let small =
            |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} out of range"));
        let (mut path, mut expect) = (String::from("/"), None);
        let mut c = Check::new(HealthKind::Tcp);
        let mut timeout = None;
        for o in &h.opts {
            match o.key.name.as_str() {
                "port" => {
                    c.port = Some(u16::try_from(int(&o.value)?).map_err(|_| "port out of range")?)
                }
                "interval" => c.interval_us = us(&o.value)?,
                "timeout" => timeout = Some(us(&o.value)?),
                "rise" => c.rise = small(int(&o.value)?, "rise")?,
                "fall" => c.fall = small(int(&o.value)?, "fall")?,
                "expect" => {
                    expect = Some(u16::try_from(int(&o.value)?).map_err(|_| "status out of range")?)
                }
                "path" => match self.literal(&o.value, 0)? {
                    Lit::Str(p) => path = p.clone(),
                    _ => return Err(CompileError::new(code::INTERNAL, "`path` takes a string")),
                },
                other => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("unknown health option `{other}`"),
                    ));
                }
            }
        }
        c.timeout_us = timeout.unwrap_or(c.interval_us);
        c.kind = match h.kind.name.as_str() {
            "tcp" => HealthKind::Tcp,
            "http" => HealthKind::Http { path, expect },
            "icmp" => HealthKind::Icmp,
            other => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    format!("unknown health check `{other}`"),
                ));
            }
        };
        Ok(c)
    }

    fn pool(&mut self, p: &ast::Pool) -> Result<Pool, CompileError> {
        let mut backends = Vec::new();
        let mut formula = None;
        let mut health = Vec::new();
        for st in &p.stmts {
            let b = match &st.kind {
                ast::PoolStmtKind::Backend(b) => b,
                ast::PoolStmtKind::Weight(e) => {
                    formula = Some(self.formula(e, 0)?);
                    continue;
                }
                ast::PoolStmtKind::Health(h) => {
                    health.push(self.health(h)?);
                    continue;
                }
            };
            let addr = self.addr(&b.addr)?;
            let mut weight = 1;
            let mut port = None;
            let mut agent = None;
            for o in &b.opts {
                let v = match self.val(&o.value, 0)? {
                    Val::Int(v) => v,
                    v => {
                        return Err(CompileError::new(
                            code::INTERNAL,
                            format!("`{}` takes a number, not {v:?}", o.key.name),
                        ));
                    }
                };
                match o.key.name.as_str() {
                    "weight" => weight = u32::try_from(v).map_err(|_| "weight out of range")?,
                    "port" => port = Some(u16::try_from(v).map_err(|_| "port out of range")?),
                    "agent" => {
                        agent = Some(u16::try_from(v).map_err(|_| "agent port out of range")?)
                    }
                    other => {
                        return Err(CompileError::new(
                            code::INTERNAL,
                            format!("unknown back-end option `{other}`"),
                        ));
                    }
                }
            }
            backends.push(Backend {
                addr,
                weight,
                port,
                agent,
            });
        }
        Ok(Pool {
            name: p.name.name.clone(),
            backends,
            formula,
            health,
        })
    }

    fn route(&mut self, r: &ast::Route) -> Result<Route, CompileError> {
        let (prefix, len) = match self.val(&r.prefix, 0)? {
            Val::Prefix(a, l) => (a, l),
            v => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    format!("not a prefix: {v:?}"),
                ));
            }
        };
        let via = r.via.as_ref().map(|v| self.addr(v)).transpose()?;
        let dev = match (&r.dev, via) {
            (Some(d), _) => self.iface_index(&d.name)?,
            (None, Some(gw)) => self
                .prog
                .interfaces
                .iter()
                .position(|i| i.addrs.iter().any(|&(a, l)| a.contains(l, gw)))
                .ok_or_else(|| format!("no interface reaches {}", gw.to_ip()))?
                as u32,
            (None, None) => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    "a route without via or dev",
                ));
            }
        };
        Ok(Route {
            prefix: prefix_range(prefix, len).0,
            len,
            via,
            dev,
        })
    }

    fn new_set(&mut self, set: Set) -> SetId {
        self.prog.sets.push(set);
        (self.prog.sets.len() - 1) as SetId
    }

    /// The table of a set (named or inline) of the given elements.
    fn set_table(&mut self, elems: &[ast::Expr]) -> Result<Set, CompileError> {
        let (mut ints, mut v4, mut v6, mut macs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in elems {
            match self.val(e, 0)? {
                Val::Int(v) => ints.push((v, v)),
                Val::Range(a, b) => ints.push((a, b)),
                Val::Iface(i) => ints.push((u64::from(i), u64::from(i))),
                Val::Addr(a) => match a {
                    Addr::V4(x) => v4.push((x, x)),
                    Addr::V6(x) => v6.push((x, x)),
                },
                Val::Prefix(a, l) => match prefix_range(a, l) {
                    (Addr::V4(lo), Addr::V4(hi)) => v4.push((lo, hi)),
                    (Addr::V6(lo), Addr::V6(hi)) => v6.push((lo, hi)),
                    _ => {}
                },
                Val::Mac(m) => macs.push(m),
                v => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("not a set element: {v:?}"),
                    ));
                }
            }
        }
        Ok(if !macs.is_empty() {
            macs.sort_unstable();
            macs.dedup();
            Set::Mac(macs)
        } else if !v4.is_empty() || !v6.is_empty() {
            Set::Prefix {
                v4: merge(v4),
                v6: merge(v6),
            }
        } else {
            Set::Int(merge(ints))
        })
    }

    /// The set an `in` refers to: a named set, an inline set, a prefix or a range.
    fn set_of(&mut self, e: &'a ast::Expr) -> Result<SetId, CompileError> {
        match &e.kind {
            ExprKind::Name(n) if self.set_defs.contains_key(n.as_str()) => {
                if let Some(&id) = self.set_ids.get(n.as_str()) {
                    return Ok(id);
                }
                let def = self.set_defs[n.as_str()];
                let table = self.set_table(&def.elems)?;
                let id = self.new_set(table);
                self.set_ids.insert(&def.name.name, id);
                Ok(id)
            }
            ExprKind::Set(elems) => {
                let table = self.set_table(elems)?;
                Ok(self.new_set(table))
            }
            ExprKind::Paren(x) => self.set_of(x),
            _ => {
                let table = self.set_table(std::slice::from_ref(e))?;
                Ok(self.new_set(table))
            }
        }
    }

    fn cond(&mut self, e: &'a ast::Expr) -> Result<Cond, CompileError> {
        let span = e.span;
        let kind = match &e.kind {
            ExprKind::Paren(x) => return self.cond(x),
            ExprKind::Lit(Lit::Bool(b)) => CondKind::Const(*b),
            ExprKind::Name(_) => match self.val(e, 0)? {
                Val::Bool(b) => CondKind::Const(b),
                v => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("not a condition: {v:?}"),
                    ));
                }
            },
            ExprKind::Not(x) => CondKind::Not(Box::new(self.cond(x)?)),
            ExprKind::And(xs) => {
                CondKind::And(xs.iter().map(|x| self.cond(x)).collect::<Result<_, _>>()?)
            }
            ExprKind::Or(xs) => {
                CondKind::Or(xs.iter().map(|x| self.cond(x)).collect::<Result<_, _>>()?)
            }
            ExprKind::Field(f) => match field_kind(f) {
                Some(FieldKind::Flag(mask)) => CondKind::Flag {
                    need: present::TCP,
                    mask,
                    expect: true,
                },
                Some(FieldKind::Frag) => CondKind::Bit {
                    need: IP,
                    bit: present::FRAG,
                    expect: true,
                },
                _ => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("`{f}` is not a condition"),
                    ));
                }
            },
            ExprKind::Cmp(a, op, b) => self.compare(a, *op, b)?,
            ExprKind::In(a, b) => self.member(a, b)?,
            _ => return Err(CompileError::new(code::INTERNAL, "not a condition")),
        };
        Ok(Cond { kind, span })
    }

    fn compare(
        &mut self,
        a: &'a ast::Expr,
        op: CmpOp,
        b: &'a ast::Expr,
    ) -> Result<CondKind, CompileError> {
        let unparen = |e: &'a ast::Expr| -> &'a ast::Expr {
            let mut e = e;
            while let ExprKind::Paren(x) = &e.kind {
                e = x;
            }
            e
        };
        let (a, b) = (unparen(a), unparen(b));
        let span = a.span.to(b.span);
        if let Some(kind) = self.bool_compare(a, op, b, span)? {
            return Ok(kind);
        }
        let (field, op, other) = match (&a.kind, &b.kind) {
            (ExprKind::Field(f), _) => (f, op, b),
            (_, ExprKind::Field(f)) => (f, flip(op), a),
            _ => {
                // Both sides constant: fold.
                let (x, y) = (self.val(a, 0)?, self.val(b, 0)?);
                let r = match (x, y) {
                    (Val::Int(x), Val::Int(y)) => compare(op, x, y),
                    (Val::Bool(x), Val::Bool(y)) => compare(op, u64::from(x), u64::from(y)),
                    (Val::Addr(x), Val::Addr(y)) => (x == y) == (op == CmpOp::Eq),
                    (Val::Mac(x), Val::Mac(y)) => (x == y) == (op == CmpOp::Eq),
                    (Val::Iface(x), Val::Iface(y)) => compare(op, u64::from(x), u64::from(y)),
                    (x, y) => {
                        return Err(CompileError::new(
                            code::INTERNAL,
                            format!("cannot fold {x:?} and {y:?}"),
                        ));
                    }
                };
                return Ok(CondKind::Const(r));
            }
        };
        let kind = field_kind(field)
            .ok_or_else(|| CompileError::from(format!("unknown field `{field}`")))?;
        if let ExprKind::Field(g) = &other.kind {
            return self.field_pair(field, op, g, span);
        }
        let v = self.val(other, 0)?;
        Ok(match (kind, v) {
            (FieldKind::Int(f, need), Val::Int(x)) => CondKind::Int {
                need,
                field: f,
                op,
                value: x,
            },
            (FieldKind::Int(f, need), Val::Iface(x)) => CondKind::Int {
                need,
                field: f,
                op,
                value: u64::from(x),
            },
            (FieldKind::Flag(mask), Val::Bool(x)) => match op {
                CmpOp::Eq => CondKind::Flag {
                    need: present::TCP,
                    mask,
                    expect: x,
                },
                CmpOp::Ne => CondKind::Flag {
                    need: present::TCP,
                    mask,
                    expect: !x,
                },
                _ => return Err(CompileError::new(code::INTERNAL, "booleans have no order")),
            },
            (FieldKind::Frag, Val::Bool(x)) => match op {
                CmpOp::Eq => CondKind::Bit {
                    need: IP,
                    bit: present::FRAG,
                    expect: x,
                },
                CmpOp::Ne => CondKind::Bit {
                    need: IP,
                    bit: present::FRAG,
                    expect: !x,
                },
                _ => return Err(CompileError::new(code::INTERNAL, "booleans have no order")),
            },
            // Any IP packet has the field; an address of the other family is not
            // equal (so `!=` holds for it).
            (FieldKind::Addr(f), Val::Addr(x)) => CondKind::AddrEq {
                need: IP,
                field: f,
                addr: x,
                eq: op == CmpOp::Eq,
            },
            (FieldKind::Mac(f), Val::Mac(m)) => CondKind::MacEq {
                field: f,
                mac: m,
                eq: op == CmpOp::Eq,
            },
            (_, v) => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    format!("cannot compare `{field}` with {v:?}"),
                ));
            }
        })
    }

    /// A comparison of two fields (`ip.src == ip.dst`, `tcp.sport < tcp.dport`).
    fn field_pair(
        &mut self,
        a: &str,
        op: CmpOp,
        b: &str,
        span: Span,
    ) -> Result<CondKind, CompileError> {
        let (Some(x), Some(y)) = (field_kind(a), field_kind(b)) else {
            return Err(CompileError::new(
                code::INTERNAL,
                format!("unknown field `{a}` or `{b}`"),
            ));
        };
        Ok(match (x, y) {
            // Both fields must be present: the needs of both sides, intersected
            // where they share a header, or both required.
            (FieldKind::Int(fa, na), FieldKind::Int(fb, nb)) => {
                // Both headers must be there: the leaf needs `na`, and a presence
                // test beside it needs `nb`.
                let leaf = CondKind::IntFields {
                    need: na,
                    a: fa,
                    op,
                    b: fb,
                };
                if nb == 0 || nb == na {
                    leaf
                } else {
                    CondKind::And(vec![
                        Cond {
                            kind: CondKind::Bit {
                                need: 0,
                                bit: nb,
                                expect: true,
                            },
                            span,
                        },
                        Cond { kind: leaf, span },
                    ])
                }
            }
            (FieldKind::Addr(_), FieldKind::Addr(_)) => CondKind::AddrFields {
                eq: op == CmpOp::Eq,
            },
            (FieldKind::Mac(_), FieldKind::Mac(_)) => CondKind::MacFields {
                eq: op == CmpOp::Eq,
            },
            _ => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    format!("cannot compare `{a}` with `{b}`"),
                ));
            }
        })
    }

    /// A boolean operand: the condition saying its header is present (for a flag
    /// field), and its value. None: not a boolean.
    fn bool_operand(
        &mut self,
        e: &'a ast::Expr,
    ) -> Result<Option<(Option<Cond>, Cond, bool)>, CompileError> {
        let span = e.span;
        let c = |kind| Cond { kind, span };
        Ok(Some(match &e.kind {
            ExprKind::Field(f) => match field_kind(f) {
                Some(FieldKind::Flag(mask)) => (
                    Some(c(CondKind::Bit {
                        need: 0,
                        bit: present::TCP,
                        expect: true,
                    })),
                    c(CondKind::Flag {
                        need: present::TCP,
                        mask,
                        expect: true,
                    }),
                    true,
                ),
                Some(FieldKind::Frag) => (
                    Some(c(CondKind::Bit {
                        need: 0,
                        bit: IP,
                        expect: true,
                    })),
                    c(CondKind::Bit {
                        need: IP,
                        bit: present::FRAG,
                        expect: true,
                    }),
                    true,
                ),
                _ => return Ok(None),
            },
            ExprKind::Lit(Lit::Bool(b)) => (None, c(CondKind::Const(*b)), false),
            ExprKind::Name(_) => match self.val(e, 0) {
                Ok(Val::Bool(b)) => (None, c(CondKind::Const(b)), false),
                _ => return Ok(None),
            },
            ExprKind::Cmp(..)
            | ExprKind::In(..)
            | ExprKind::And(_)
            | ExprKind::Or(_)
            | ExprKind::Not(_) => (None, self.cond(e)?, false),
            _ => return Ok(None),
        }))
    }

    /// `a == b` or `a != b` of two booleans, unless it is a flag field against a
    /// constant (which the field path handles with one leaf). Both headers must be
    /// present for a flag's value to be compared at all.
    fn bool_compare(
        &mut self,
        a: &'a ast::Expr,
        op: CmpOp,
        b: &'a ast::Expr,
        span: Span,
    ) -> Result<Option<CondKind>, CompileError> {
        let (Some((pa, va, fa)), Some((pb, vb, fb))) =
            (self.bool_operand(a)?, self.bool_operand(b)?)
        else {
            return Ok(None);
        };
        let constant = |v: &Cond| matches!(v.kind, CondKind::Const(_));
        if (fa && constant(&vb)) || (fb && constant(&va)) {
            return Ok(None);
        }
        let c = |kind| Cond { kind, span };
        let not = |x: &Cond| c(CondKind::Not(Box::new(x.clone())));
        let same = match op {
            CmpOp::Eq => true,
            CmpOp::Ne => false,
            _ => return Err(CompileError::new(code::INTERNAL, "booleans have no order")),
        };
        let value = if same {
            c(CondKind::Or(vec![
                c(CondKind::And(vec![va.clone(), vb.clone()])),
                c(CondKind::And(vec![not(&va), not(&vb)])),
            ]))
        } else {
            c(CondKind::Or(vec![
                c(CondKind::And(vec![va.clone(), not(&vb)])),
                c(CondKind::And(vec![not(&va), vb.clone()])),
            ]))
        };
        let mut all: Vec<Cond> = pa.into_iter().chain(pb).collect();
        all.push(value);
        Ok(Some(if all.len() == 1 {
            all.pop().map(|x| x.kind).unwrap_or(CondKind::Const(false))
        } else {
            CondKind::And(all)
        }))
    }

    fn member(&mut self, a: &'a ast::Expr, b: &'a ast::Expr) -> Result<CondKind, CompileError> {
        let mut a = a;
        while let ExprKind::Paren(x) = &a.kind {
            a = x;
        }
        let ExprKind::Field(field) = &a.kind else {
            // A constant in a set: fold.
            let v = self.val(a, 0)?;
            let set = self.set_of(b)?;
            let s = &self.prog.sets[set as usize];
            let r = match v {
                Val::Int(x) => s.contains_int(x),
                Val::Iface(x) => s.contains_int(u64::from(x)),
                Val::Addr(x) => s.contains_addr(x),
                Val::Mac(m) => matches!(s, Set::Mac(ms) if ms.contains(&m)),
                v => {
                    return Err(CompileError::new(
                        code::INTERNAL,
                        format!("cannot test {v:?} for membership"),
                    ));
                }
            };
            return Ok(CondKind::Const(r));
        };
        let kind = field_kind(field)
            .ok_or_else(|| CompileError::from(format!("unknown field `{field}`")))?;
        let set = self.set_of(b)?;
        Ok(match kind {
            FieldKind::Int(f, need) => CondKind::IntIn {
                need,
                field: f,
                set,
            },
            FieldKind::Addr(f) => CondKind::AddrIn {
                need: IP,
                field: f,
                set,
            },
            FieldKind::Mac(f) => CondKind::MacIn { field: f, set },
            _ => {
                return Err(CompileError::new(
                    code::INTERNAL,
                    format!("`{field}` cannot be tested with `in`"),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests;
