//! Declarations: interfaces (addresses, MAC, MTU), consts, sets and their
//! elements, pools (back ends, options, the weight formula) with their health
//! checks, and routes.

use super::checker::{Checker, Ctx, Value};
use super::types::{Elem, Fam, HEALTH_KINDS, SET_TYPES, Ty};
use super::values::{contains, expr_text, network};
use crate::ast::{
    Const, Expr, ExprKind, Health, IfaceStmtKind, Interface, Lit, Opt, Pool, PoolStmtKind, Route,
    SetDef, Span,
};
use crate::diag::suggest;
use std::collections::HashMap;
use std::net::IpAddr;

impl<'a> Checker<'a> {
    pub(super) fn interface(&mut self, i: &'a Interface) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for s in &i.stmts {
            let key = match &s.kind {
                IfaceStmtKind::Address(addrs) => {
                    for a in addrs {
                        match self.value(a) {
                            Ty::Prefix(_) => {
                                if let ExprKind::Lit(Lit::Prefix { addr, len }) = a.kind {
                                    if let Some(&(_, _, other)) = self
                                        .connected
                                        .iter()
                                        .find(|(x, l, _)| *x == addr && *l == len)
                                    {
                                        let first = self
                                            .address_spans
                                            .get(&(addr, len))
                                            .copied()
                                            .unwrap_or_default();
                                        let d = self.err("lbp::check::duplicate_address", format!("the address {addr}/{len} is already on interface `{other}`"), a.span, "used twice");
                                        d.also(first, format!("on `{other}` here"));
                                        d.set_help("an address belongs to one interface: give each interface its own address");
                                    } else {
                                        self.address_spans.insert((addr, len), a.span);
                                    }
                                    self.connected.push((addr, len, &i.name.name));
                                }
                            }
                            Ty::Addr(fam) => {
                                let l = fam.max_len() / 4 * 3; // a plausible example length
                                let d = self.err(
                                    "lbp::type::missing_length",
                                    "an interface address needs its prefix length",
                                    a.span,
                                    "no prefix length",
                                );
                                d.help = Some(format!(
                                    "write the connected network's length, for example `{}/{}`",
                                    &expr_text(a),
                                    if fam == Fam::V4 { 24 } else { l.min(64) }
                                ));
                            }
                            Ty::Unknown => {}
                            t => {
                                self.mismatch(a.span, "an address with its prefix length", t);
                            }
                        }
                    }
                    "address"
                }
                IfaceStmtKind::Mac(m) => {
                    self.expect_value(m, Ty::Mac);
                    "mac"
                }
                IfaceStmtKind::Mtu(m) => {
                    if self.expect_value(m, Ty::Int) {
                        self.int_bounds(m, 68, 65535, "an MTU");
                    }
                    "mtu"
                }
            };
            if key != "address"
                && let Some(prev) = seen.insert(key, s.span)
            {
                self.err(
                    "lbp::check::duplicate_statement",
                    format!("`{key}` is given twice"),
                    s.span,
                    "given again here",
                )
                .also(prev, "first given here")
                .set_help("keep one of them");
            }
        }
    }

    /// The type of a const, computed once (consts may name other consts).
    pub(super) fn const_ty(&mut self, c: &'a Const) -> Ty {
        if let Some(t) = self.const_tys.get(c.name.name.as_str()) {
            return *t;
        }
        if let Some(i) = self.resolving.iter().position(|n| *n == c.name.name) {
            let path: Vec<String> = self.resolving[i..]
                .iter()
                .chain([&c.name.name.as_str()])
                .map(|n| format!("`{n}`"))
                .collect();
            self.err(
                "lbp::name::cycle",
                format!("the const `{}` is defined in terms of itself", c.name.name),
                c.name.span,
                "defined in terms of itself",
            )
            .set_help(format!(
                "the definitions go round in a circle ({}); give one of them a value",
                path.join(" -> ")
            ));
            self.const_tys.insert(&c.name.name, Ty::Unknown);
            return Ty::Unknown;
        }
        self.resolving.push(&c.name.name);
        let t = match &c.value.kind {
            ExprKind::Set(_) => {
                self.err(
                    "lbp::type::const_set",
                    "a const cannot hold a set",
                    c.value.span,
                    "a set",
                )
                .set_help(format!("write `set {} = {{ ... }}`", c.name.name));
                Ty::Unknown
            }
            _ => self.ty(&c.value, Ctx::Value),
        };
        self.resolving.pop();
        self.const_tys.insert(&c.name.name, t);
        t
    }

    pub(super) fn set_def(&mut self, s: &'a SetDef) -> Ty {
        let declared = match &s.ty {
            None => None,
            Some(t) => match SET_TYPES.iter().find(|(n, _)| *n == t.name) {
                Some((_, e)) => Some(*e),
                None => {
                    let d = self.err(
                        "lbp::type::unknown_type",
                        format!("unknown set type `{}`", t.name),
                        t.span,
                        "not a type",
                    );
                    d.help = Some(suggest(
                        &t.name,
                        SET_TYPES.iter().map(|(n, _)| *n),
                        "set types are prefix, address, port, int, mac, interface and string",
                    ));
                    Some(Elem::Unknown)
                }
            },
        };
        if s.elems.is_empty() && declared.is_none() {
            self.err(
                "lbp::type::empty_set",
                format!(
                    "the type of the empty set `{}` cannot be inferred",
                    s.name.name
                ),
                s.body,
                "empty",
            )
            .set_help(format!(
                "give its type: `set {}: prefix = {{}}`",
                s.name.name
            ));
            return Ty::Set(Elem::Unknown);
        }
        Ty::Set(self.elements(&s.elems, declared))
    }

    /// Type the elements of a set; report mixed kinds. Returns the element kind.
    pub(super) fn elements(&mut self, elems: &'a [Expr], declared: Option<Elem>) -> Elem {
        let mut kind: Option<(Elem, Span)> = declared.map(|e| (e, Span::default()));
        let mut seen: HashMap<LitKey, Span> = HashMap::new();
        for e in elems {
            if !matches!(
                e.kind,
                ExprKind::Lit(_) | ExprKind::Name(_) | ExprKind::Error
            ) {
                self.err(
                    "lbp::type::set_element",
                    "a set element must be a value",
                    e.span,
                    "not a value",
                )
                .set_help(
                    "set elements are literals or const names; conditions belong in filter rules",
                );
                continue;
            }
            if let ExprKind::Name(n) = &e.kind
                && let Some(Value::Set(_)) = self.values.get(n.as_str())
            {
                self.err("lbp::type::set_element", format!("a set cannot contain the set `{n}`"), e.span, "a set")
                    .set_help("sets do not nest: list the elements here, or test both sets (`x in a || x in b`)");
                continue;
            }
            // Elements are values: literals, consts, interfaces, protocol names.
            let t = self.ty(e, Ctx::Filter);
            if matches!(e.kind, ExprKind::Lit(Lit::Prefix { .. })) {
                self.host_bits(e);
            }
            let Some(el) = t.elem() else {
                self.err("lbp::type::set_element", format!("{} cannot be a set element", t.describe()), e.span, "here")
                    .set_help("sets hold integers and ranges, addresses and prefixes, MAC addresses, interfaces or strings");
                continue;
            };
            if el == Elem::Unknown {
                continue;
            }
            match kind {
                None => kind = Some((el, e.span)),
                Some((Elem::Unknown, _)) => {}
                Some((k, first)) if k != el => {
                    let d = self.err(
                        "lbp::type::mixed_set",
                        format!(
                            "a set cannot mix {} with {}",
                            elem_plural(k),
                            elem_plural(el)
                        ),
                        e.span,
                        format!("this is {}", t.describe()),
                    );
                    if first != Span::default() {
                        d.labels.push(crate::diag::Label {
                            span: first,
                            message: format!("the set holds {} from here", elem_plural(k)),
                        });
                        d.help = Some(format!(
                            "a set holds one kind of value: put the {} in a set of their own",
                            elem_plural(el)
                        ));
                    } else {
                        d.help = Some(format!("the set is declared to hold {}", elem_plural(k)));
                    }
                }
                Some(_) => {}
            }
            if let ExprKind::Lit(l) = &e.kind
                && let Some(key) = lit_key(l)
                && let Some(prev) = seen.insert(key, e.span)
            {
                self.warn(
                    "lbp::check::duplicate_element",
                    "this element is in the set twice",
                    e.span,
                    "again here",
                )
                .also(prev, "first here");
            }
        }
        kind.map_or(Elem::Unknown, |(k, _)| k)
    }

    pub(super) fn pool(&mut self, p: &'a Pool) {
        let mut backends: HashMap<(IpAddr, Option<u64>), Span> = HashMap::new();
        let mut weight_def: Option<Span> = None;
        let mut count = 0;
        for s in &p.stmts {
            match &s.kind {
                PoolStmtKind::Backend(b) => {
                    count += 1;
                    let t = self.value(&b.addr);
                    if !matches!(t, Ty::Addr(_) | Ty::Unknown) {
                        let d = self.mismatch(b.addr.span, "an address", t);
                        if matches!(t, Ty::Prefix(_)) {
                            d.help = Some(
                                "a back end is one host: write its address without a length".into(),
                            );
                        }
                    }
                    let mut port = None;
                    self.opts(&b.opts, |c, o| match o.key.name.as_str() {
                        "weight" => {
                            if c.expect_value(&o.value, Ty::Int) {
                                c.int_bounds(&o.value, 0, 65535, "a weight");
                            }
                        }
                        "agent" => {
                            if c.expect_value(&o.value, Ty::Int) {
                                c.agent_port(&o.value);
                            }
                        }
                        _ => {
                            if c.expect_value(&o.value, Ty::Int) {
                                port = c.port_value(&o.value);
                            }
                        }
                    });
                    if let Some(addr) = self.const_addr(&b.addr)
                        && let Some(prev) = backends.insert((addr, port), b.addr.span)
                    {
                        self.err(
                            "lbp::check::duplicate_backend",
                            format!("the back end {addr} is in the pool twice"),
                            b.addr.span,
                            "again here",
                        )
                        .also(prev, "first here")
                        .set_help(
                            "list each back end once; to send it more traffic, give it `weight N`",
                        );
                    }
                }
                PoolStmtKind::Health(h) => self.health(h),
                PoolStmtKind::Weight(e) => {
                    if let Some(prev) = weight_def.replace(s.span) {
                        self.err(
                            "lbp::check::duplicate_statement",
                            "a pool has one weight formula",
                            s.span,
                            "a second one",
                        )
                        .also(prev, "first here")
                        .set_help("keep one of them");
                    }
                    let t = self.ty(e, Ctx::Weight);
                    if !matches!(t, Ty::Int | Ty::Num | Ty::Unknown) {
                        self.mismatch(e.span, "a number", t).help = Some(
                            "a weight formula computes a number, e.g. `weight * (1 - cpu)`".into(),
                        );
                    }
                }
            }
        }
        if count == 0 {
            self.warn(
                "lbp::check::empty_pool",
                format!("the pool `{}` has no back ends", p.name.name),
                p.name.span,
                "no `backend` lines",
            )
            .set_help("traffic for a service with this pool is dropped; add `backend ADDRESS`");
        }
    }

    /// Check `key value` options for duplicates, then each with `each`.
    fn opts(&mut self, opts: &'a [Opt], mut each: impl FnMut(&mut Self, &'a Opt)) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for o in opts {
            if let Some(prev) = seen.insert(&o.key.name, o.key.span) {
                self.err(
                    "lbp::check::duplicate_option",
                    format!("`{}` is given twice", o.key.name),
                    o.key.span,
                    "again here",
                )
                .also(prev, "first here")
                .set_help("keep one of them");
            }
            each(self, o);
        }
    }

    fn health(&mut self, h: &'a Health) {
        let kind = h.kind.name.as_str();
        if !HEALTH_KINDS.contains(&kind) {
            let d = self.err(
                "lbp::name::unknown_health",
                format!("unknown health check `{kind}`"),
                h.kind.span,
                "not a health check",
            );
            d.help = Some(suggest(
                kind,
                HEALTH_KINDS.iter().copied(),
                "health checks are tcp, http and icmp",
            ));
        }
        let (mut interval, mut timeout) = (None, None);
        self.opts(&h.opts, |c, o| {
            let key = o.key.name.as_str();
            let applies = match key {
                "port" => kind != "icmp",
                "path" | "expect" => kind == "http",
                _ => true,
            };
            if !applies && HEALTH_KINDS.contains(&kind) {
                c.err(
                    "lbp::check::option_not_applicable",
                    format!("`{key}` does not apply to `health {kind}`"),
                    o.key.span,
                    "not for this check",
                )
                .set_help(if key == "port" {
                    "an icmp check has no port"
                } else {
                    "`path` and `expect` are options of `health http`"
                });
            }
            match key {
                "port" => {
                    if c.expect_value(&o.value, Ty::Int) {
                        c.port_value(&o.value);
                    }
                }
                "interval" | "timeout" => {
                    if c.expect_value(&o.value, Ty::Duration) {
                        let us = duration_us(&o.value);
                        if us == Some(0) {
                            c.err(
                                "lbp::type::out_of_range",
                                format!("the {key} must be longer than zero"),
                                o.value.span,
                                "zero",
                            );
                        }
                        if key == "interval" {
                            interval = us.map(|u| (u, o.value.span))
                        } else {
                            timeout = us.map(|u| (u, o.value.span))
                        }
                    }
                }
                "path" => {
                    if c.expect_value(&o.value, Ty::Str)
                        && let ExprKind::Lit(Lit::Str(s)) = &o.value.kind
                        && !s.starts_with('/')
                    {
                        c.err(
                            "lbp::check::bad_path",
                            "an HTTP health check path starts with `/`",
                            o.value.span,
                            "no leading `/`",
                        )
                        .set_help(format!("write \"/{s}\""));
                    }
                }
                "expect" => {
                    if c.expect_value(&o.value, Ty::Int) {
                        c.int_bounds(&o.value, 100, 599, "an HTTP status");
                    }
                }
                _ => {
                    if c.expect_value(&o.value, Ty::Int) {
                        c.int_bounds(&o.value, 1, 100, format!("`{key}`").as_str());
                    }
                }
            }
        });
        if let (Some((i, _)), Some((t, ts))) = (interval, timeout)
            && t > i
        {
            self.warn(
                "lbp::check::timeout_exceeds_interval",
                "the health check timeout is longer than its interval",
                ts,
                "longer than the interval",
            )
            .set_help("checks would overlap; make the timeout at most the interval");
        }
    }

    pub(super) fn route(&mut self, r: &'a Route) {
        let fam = match self.value(&r.prefix) {
            Ty::Prefix(f) => {
                self.host_bits(&r.prefix);
                Some(f)
            }
            Ty::Unknown => None,
            t => {
                let d = self.mismatch(r.prefix.span, "a prefix", t);
                if let Ty::Addr(f) = t {
                    d.help = Some(format!(
                        "a host route has the full length: `{}/{}`",
                        expr_text(&r.prefix),
                        f.max_len()
                    ));
                }
                None
            }
        };
        let dev = r.dev.as_ref().and_then(|d| self.iface_ref(d));
        if let Some(via) = &r.via {
            match self.value(via) {
                Ty::Addr(vf) => {
                    if let Some(pf) = fam
                        && pf != vf
                    {
                        self.err(
                            "lbp::type::family_mismatch",
                            format!(
                                "an {} route cannot go via an {} gateway",
                                pf.name(),
                                vf.name()
                            ),
                            via.span,
                            format!("{} gateway", vf.name()),
                        )
                        .also(r.prefix.span, format!("{} prefix", pf.name()))
                        .set_help(format!(
                            "an {} route needs the {} address of a neighbour as its gateway",
                            pf.name(),
                            pf.name()
                        ));
                    } else if let Some(gw) = self.const_addr(via) {
                        let reach: Vec<&str> = self
                            .connected
                            .iter()
                            .filter(|(a, l, _)| contains(*a, *l, gw))
                            .map(|(_, _, n)| *n)
                            .collect();
                        let ok = match dev {
                            Some(d) => reach.contains(&d.name.name.as_str()),
                            None => !reach.is_empty(),
                        };
                        if !ok {
                            let where_ = dev.map_or("any interface's".to_string(), |d| {
                                format!("interface `{}`'s", d.name.name)
                            });
                            let nets: Vec<String> = self
                                .connected
                                .iter()
                                .filter(|(a, _, n)| {
                                    Fam::of(a) == vf && dev.is_none_or(|d| d.name.name == *n)
                                })
                                .map(|(a, l, _)| format!("{}/{l}", network(*a, *l)))
                                .collect();
                            let help = if nets.is_empty() {
                                "a gateway must be a neighbour: give the interface an address in the gateway's network".to_string()
                            } else {
                                format!(
                                    "a gateway must be a neighbour, on {}: fix the address, or give the interface an address in the gateway's network",
                                    nets.join(" or ")
                                )
                            };
                            self.err(
                                "lbp::check::unreachable_gateway",
                                format!("the gateway {gw} is not on {where_} connected network"),
                                via.span,
                                "not reachable",
                            )
                            .set_help(help);
                        }
                    }
                }
                Ty::Unknown => {}
                t => {
                    self.mismatch(via.span, "a gateway address", t);
                }
            }
        } else if r.dev.is_none() {
            self.err(
                "lbp::check::route_target",
                "a route needs `via ADDRESS` or `dev INTERFACE`",
                r.span,
                "no target",
            )
            .set_help("write `route PREFIX via GATEWAY` or `route PREFIX dev INTERFACE`");
        }
    }
}

/// What makes two set elements the same, cheaply hashed.
#[derive(PartialEq, Eq, Hash)]
enum LitKey {
    Int(u64),
    Range(u64, u64),
    Addr(IpAddr),
    Prefix(IpAddr, u32),
    Mac([u8; 6]),
    Str(String),
}

fn lit_key(l: &Lit) -> Option<LitKey> {
    Some(match l {
        Lit::Int { value, .. } => LitKey::Int(*value),
        Lit::Range(a, b) => LitKey::Range(*a, *b),
        Lit::Addr(a) => LitKey::Addr(*a),
        Lit::Prefix { addr, len } => LitKey::Prefix(*addr, *len),
        Lit::Mac(m) => LitKey::Mac(*m),
        Lit::Str(s) => LitKey::Str(s.clone()),
        _ => return None,
    })
}

fn elem_plural(e: Elem) -> &'static str {
    match e {
        Elem::Int => "integers",
        Elem::Prefix => "addresses",
        Elem::Mac => "MAC addresses",
        Elem::Iface => "interfaces",
        Elem::Str => "strings",
        Elem::Unknown => "values",
    }
}

fn duration_us(e: &Expr) -> Option<u64> {
    match e.kind {
        ExprKind::Lit(Lit::Duration { amount, unit }) => amount.checked_mul(unit.micros()),
        _ => None,
    }
}
