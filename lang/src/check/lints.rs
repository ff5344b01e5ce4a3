//! Declaration checks that need the whole policy: what an operator expects
//! `lbp check` to refuse or question in interfaces, pools, services and routes
//! even though every name resolves and every type fits.
//!
//! Run once after the item pass, when every interface address, const, pool
//! and service is known. The rule for the severity: a declaration that cannot
//! work as written is an error (a back end the appliance never sends to, a
//! port nothing listens on, a pool that takes no connection, a route never
//! used); one that works but is probably not what was meant is a warning.
//!
//! - back ends and virtual IPs that are no unicast host address (unspecified,
//!   loopback, link-local, multicast, the limited broadcast or an interface
//!   network's directed broadcast: the martian list of `lbp_abi::martian`,
//!   which the compiler's tests hold this copy to), or the appliance's own
//!   address;
//! - DSR back ends the appliance cannot reach at layer 2;
//! - a pool whose back ends all have weight 0, or all those of a virtual IP's
//!   family;
//! - port 0 where a server's port is meant, and a port listed twice on one
//!   `vip` line;
//! - two routes of the same prefix (two default routes of one family), and a
//!   route whose every address is martian;
//! - a weight formula that may divide by zero for some load report.

use super::checker::{Checker, Value};
use super::types::{Fam, WEIGHT_INPUTS};
use super::values::{const_zero, contains, network};
use crate::ast::{
    ArithOp, Expr, ExprKind, Item, Lit, Policy, Pool, PoolStmtKind, Route, Service,
    ServiceStmtKind, Span,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// Why an address is no unicast host address: the same list, in the same
/// order, as `lbp_abi::martian` (the compiler's tests compare the two).
pub fn martian_kind(a: IpAddr, connected: &[(IpAddr, u32, &str)]) -> Option<&'static str> {
    let fixed = match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            if o[0] == 0 {
                Some("an unspecified (\"this network\") address")
            } else if o[0] == 127 {
                Some("a loopback address")
            } else if o[0] == 169 && o[1] == 254 {
                Some("a link-local address")
            } else if o[0] >> 4 == 0xe {
                Some("a multicast address")
            } else if v.is_broadcast() {
                Some("a broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            if v.is_unspecified() {
                Some("an unspecified (\"this network\") address")
            } else if v.is_loopback() {
                Some("a loopback address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if s[0] >> 8 == 0xff {
                Some("a multicast address")
            } else {
                None
            }
        }
    };
    fixed.or_else(|| directed_broadcast_of(a, connected).map(|_| "a broadcast address"))
}

/// The interface whose IPv4 network (of length at most 30) has `a` as its
/// directed broadcast.
fn directed_broadcast_of<'n>(a: IpAddr, connected: &[(IpAddr, u32, &'n str)]) -> Option<&'n str> {
    let IpAddr::V4(v) = a else { return None };
    connected.iter().find_map(|&(n, l, name)| match n {
        IpAddr::V4(n) if l <= 30 => {
            (u32::from(n) | (u32::MAX >> l) == u32::from(v)).then_some(name)
        }
        _ => None,
    })
}

/// The range of values an expression of a weight formula can take, with
/// infinite ends where it is unbounded.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Interval {
    lo: f64,
    hi: f64,
}

const ANY: Interval = Interval {
    lo: f64::NEG_INFINITY,
    hi: f64::INFINITY,
};

impl Interval {
    fn point(v: f64) -> Interval {
        Interval { lo: v, hi: v }
    }
    fn has_zero(self) -> bool {
        self.lo <= 0.0 && 0.0 <= self.hi
    }
    fn checked(lo: f64, hi: f64) -> Interval {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            ANY
        } else {
            Interval { lo, hi }
        }
    }
    fn neg(self) -> Interval {
        Interval::checked(-self.hi, -self.lo)
    }
    fn add(self, o: Interval) -> Interval {
        Interval::checked(self.lo + o.lo, self.hi + o.hi)
    }
    fn sub(self, o: Interval) -> Interval {
        Interval::checked(self.lo - o.hi, self.hi - o.lo)
    }
    fn mul(self, o: Interval) -> Interval {
        // An end is a bound, not a value: 0 times an unbounded end is 0.
        let m = |a: f64, b: f64| if a == 0.0 || b == 0.0 { 0.0 } else { a * b };
        let p = [
            m(self.lo, o.lo),
            m(self.lo, o.hi),
            m(self.hi, o.lo),
            m(self.hi, o.hi),
        ];
        Interval::checked(
            p.iter().copied().fold(f64::INFINITY, f64::min),
            p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    }
    /// `self / o`, where the values of `o` that are 0 are left out (they are
    /// reported; the formula's value is then undefined anyway).
    fn div(self, o: Interval) -> Interval {
        let inv = |v: f64| if v.is_infinite() { 0.0 } else { 1.0 / v };
        let r = if o.lo > 0.0 || o.hi < 0.0 {
            Interval::checked(inv(o.hi), inv(o.lo))
        } else if o.lo == 0.0 && o.hi > 0.0 {
            Interval::checked(inv(o.hi), f64::INFINITY)
        } else if o.hi == 0.0 && o.lo < 0.0 {
            Interval::checked(f64::NEG_INFINITY, inv(o.lo))
        } else {
            ANY
        };
        self.mul(r)
    }
}

impl<'a> Checker<'a> {
    /// The declaration checks; see the module documentation.
    pub(super) fn lints(&mut self, policy: &'a Policy) {
        let routes: Vec<&'a Route> = policy
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Route(r) => Some(r),
                _ => None,
            })
            .collect();
        for item in &policy.items {
            match item {
                Item::Pool(p) => self.lint_pool(p),
                Item::Service(s) => self.lint_service(s, &routes),
                _ => {}
            }
        }
        self.lint_routes(&routes);
    }

    /// The interface that has `a` as one of its addresses.
    fn own_address(&self, a: IpAddr) -> Option<&'a str> {
        self.connected
            .iter()
            .find(|(x, _, _)| *x == a)
            .map(|&(_, _, n)| n)
    }

    fn const_prefix(&self, e: &Expr) -> Option<(IpAddr, u32)> {
        match &e.kind {
            ExprKind::Lit(Lit::Prefix { addr, len }) => Some((*addr, *len)),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_prefix(&c.value),
                _ => None,
            },
            _ => None,
        }
    }

    fn const_num(&self, e: &Expr) -> Option<f64> {
        match &e.kind {
            ExprKind::Lit(Lit::Float(f)) => Some(*f),
            ExprKind::Paren(x) => self.const_num(x),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_num(&c.value),
                _ => None,
            },
            _ => self.const_int(e).map(|v| v as f64),
        }
    }

    /// Port 0 where a server's port is meant.
    fn port_zero(&mut self, e: &Expr, what: &str, help: &str) {
        if matches!(self.const_range(e), Some((0, 0))) {
            self.err(
                "lbp::check::port_zero",
                format!("port 0 cannot be {what}"),
                e.span,
                "port 0",
            )
            .set_help(format!(
                "TCP and UDP port 0 is reserved: no server listens on it and no client sends to it; {help}"
            ));
        }
    }

    fn lint_pool(&mut self, p: &'a Pool) {
        let mut weights: Vec<(u64, Option<Span>)> = Vec::new();
        for s in &p.stmts {
            match &s.kind {
                PoolStmtKind::Backend(b) => {
                    if let Some(a) = self.const_addr(&b.addr) {
                        self.backend_address(a, b.addr.span);
                    }
                    let mut w = (1, None);
                    for o in &b.opts {
                        match o.key.name.as_str() {
                            "weight" => {
                                w = (self.const_int(&o.value).unwrap_or(1), Some(o.value.span))
                            }
                            "port" => self.port_zero(
                                &o.value,
                                "a back end's port",
                                "remove `port 0` to send to the port the service chooses",
                            ),
                            _ => {}
                        }
                    }
                    weights.push(w);
                }
                PoolStmtKind::Health(h) => {
                    for o in &h.opts {
                        if o.key.name == "port" {
                            self.port_zero(
                                &o.value,
                                "a health check's port",
                                "remove `port 0` to check the back end's own port",
                            );
                        }
                    }
                }
                PoolStmtKind::Weight(_) => {}
            }
        }
        if !weights.is_empty() && weights.iter().all(|&(w, _)| w == 0) {
            let d = self.err(
                "lbp::check::zero_weights",
                format!("every back end of the pool `{}` has weight 0", p.name.name),
                p.name.span,
                "no back end can take a connection",
            );
            if let Some(&(_, Some(first))) = weights.first() {
                d.also(first, "weight 0");
            }
            d.set_help(
                "a back end of weight 0 takes no new connections, so a service with this pool \
                 would drop all its traffic (until an operator sets a weight); give at least one \
                 back end a weight above 0, and keep `weight 0` for back ends held in reserve",
            );
        }
        let Some(formula) = p.stmts.iter().find_map(|s| match &s.kind {
            PoolStmtKind::Weight(e) => Some(e),
            _ => None,
        }) else {
            return;
        };
        // The `weight` input is a back end's static weight.
        let (lo, hi) = weights
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(w, _)| {
                (lo.min(w as f64), hi.max(w as f64))
            });
        let static_w = if weights.is_empty() {
            Interval::point(1.0)
        } else {
            Interval { lo, hi }
        };
        self.formula_range(formula, static_w);
    }

    /// The range of a weight formula's expression; reports each division whose
    /// divisor can be 0 for some load report. `None` where something in it is
    /// already an error (an unknown name, a value of the wrong type): no
    /// follow-on report.
    fn formula_range(&mut self, e: &'a Expr, static_w: Interval) -> Option<Interval> {
        Some(match &e.kind {
            ExprKind::Paren(x) => self.formula_range(x, static_w)?,
            ExprKind::Neg(x) => self.formula_range(x, static_w)?.neg(),
            ExprKind::Name(n) => match n.as_str() {
                "cpu" | "mem" => Interval { lo: 0.0, hi: 1.0 },
                "clients" | "exec_ms" | "rps" => Interval {
                    lo: 0.0,
                    hi: f64::INFINITY,
                },
                "weight" => static_w,
                _ => Interval::point(self.const_num(e)?),
            },
            ExprKind::Arith(first, rest) => {
                let mut v = self.formula_range(first, static_w);
                for (op, x) in rest {
                    let r = self.formula_range(x, static_w);
                    if let (ArithOp::Div, Some(r)) = (op, r) {
                        self.divisor(x, r);
                    }
                    v = match (v, r) {
                        (Some(v), Some(r)) => Some(match op {
                            ArithOp::Add => v.add(r),
                            ArithOp::Sub => v.sub(r),
                            ArithOp::Mul => v.mul(r),
                            ArithOp::Div => v.div(r),
                        }),
                        _ => None,
                    };
                }
                v?
            }
            _ => Interval::point(self.const_num(e)?),
        })
    }

    fn divisor(&mut self, x: &'a Expr, r: Interval) {
        // A literal zero is reported where the formula is typed.
        if !r.has_zero() || const_zero(x) {
            return;
        }
        if r.lo == 0.0 && r.hi == 0.0 {
            self.err(
                "lbp::type::division_by_zero",
                "division by zero",
                x.span,
                "always zero",
            )
            .set_help("divide by something that cannot be zero, such as `(1 + clients)`, or remove the division");
            return;
        }
        let mut inner = x;
        while let ExprKind::Paren(y) = &inner.kind {
            inner = y;
        }
        let label = match &inner.kind {
            ExprKind::Name(n) if n == "weight" => "0 for a back end of weight 0".to_string(),
            ExprKind::Name(n) if WEIGHT_INPUTS.contains(&n.as_str()) => {
                format!("0 when a report says {n} = 0")
            }
            _ => "can be 0".to_string(),
        };
        self.warn(
            "lbp::check::may_divide_by_zero",
            "this division can divide by zero",
            x.span,
            label,
        )
        .set_help(
            "for a report that makes the divisor 0 the quotient is infinite (0 / 0: not a number); \
             a formula whose result is infinite or not a number leaves the back end at its static \
             weight, and is counted; divide by something that stays above 0, such as `(1 + cpu)`",
        );
    }

    /// A back end must be a unicast host the appliance can send to, and not
    /// the appliance itself.
    fn backend_address(&mut self, a: IpAddr, span: Span) {
        if self.martian_address(a, span, "lbp::check::backend_address", "the back end") {
            return;
        }
        if let Some(iface) = self.own_address(a) {
            self.err(
                "lbp::check::backend_address",
                format!("the back end {a} is the appliance's own address"),
                span,
                format!("an address of interface `{iface}`"),
            )
            .set_help(
                "the appliance would balance connections to itself; write the server's address",
            );
        }
    }

    /// Reports `a` under `code` when it is no unicast host address; returns
    /// whether it did.
    fn martian_address(&mut self, a: IpAddr, span: Span, code: &'static str, what: &str) -> bool {
        let Some(kind) = martian_kind(a, &self.connected) else {
            return false;
        };
        let role = if what == "the back end" {
            "a back end is a server's unicast address"
        } else {
            "a virtual IP is a unicast address clients connect to"
        };
        self.err(code, format!("{what} {a} is {kind}"), span, kind)
            .set_help(format!(
                "{role}: lbp never routes to an unspecified, loopback, link-local, multicast or \
                 broadcast address"
            ));
        true
    }

    fn lint_service(&mut self, s: &'a Service, routes: &[&'a Route]) {
        let mut dsr: Option<Span> = None;
        let mut pool: Option<&'a Pool> = None;
        let mut vips: Vec<(IpAddr, Span)> = Vec::new();
        for st in &s.stmts {
            match &st.kind {
                ServiceStmtKind::Vip { addr, ports, .. } => {
                    if let Some(a) = self.const_addr(addr) {
                        self.vip_address(a, addr.span);
                        vips.push((a, addr.span));
                    }
                    self.vip_ports(ports, addr);
                }
                ServiceStmtKind::Mode { kind, to_port } => {
                    if kind.name == "dsr" && dsr.is_none() {
                        dsr = Some(st.span);
                    }
                    if let Some(p) = to_port
                        && kind.name == "nat"
                    {
                        self.port_zero(
                            p,
                            "the port to rewrite to",
                            "remove `to port 0` to keep the destination port",
                        );
                    }
                }
                ServiceStmtKind::Pool(name) if pool.is_none() => {
                    pool = self.pools.get(name.name.as_str()).copied();
                }
                _ => {}
            }
        }
        if let (Some(mode), Some(pool)) = (dsr, pool) {
            self.dsr_backends(s, pool, mode, routes);
        }
        if let Some(pool) = pool {
            self.zero_weights_of_family(pool, &vips);
        }
    }

    /// A virtual IP is balanced to the pool's back ends of its family: when
    /// those all have weight 0 (and the pool has others, else the pool itself
    /// is reported), it takes no connection.
    fn zero_weights_of_family(&mut self, pool: &'a Pool, vips: &[(IpAddr, Span)]) {
        let mut weights: Vec<(Fam, u64)> = Vec::new();
        for st in &pool.stmts {
            if let PoolStmtKind::Backend(b) = &st.kind
                && let Some(a) = self.const_addr(&b.addr)
            {
                let w = b
                    .opts
                    .iter()
                    .find(|o| o.key.name == "weight")
                    .map_or(Some(1), |o| self.const_int(&o.value));
                weights.push((Fam::of(&a), w.unwrap_or(1)));
            }
        }
        if weights.iter().all(|&(_, w)| w == 0) {
            return;
        }
        let mut reported: Vec<Fam> = Vec::new();
        for &(a, span) in vips {
            let f = Fam::of(&a);
            let mut of_fam = weights.iter().filter(|(bf, _)| *bf == f).peekable();
            if reported.contains(&f) || of_fam.peek().is_none() || !of_fam.all(|&(_, w)| w == 0) {
                continue;
            }
            reported.push(f);
            self.err(
                "lbp::check::zero_weights",
                format!(
                    "every {} back end of the pool `{}` has weight 0",
                    f.name(),
                    pool.name.name
                ),
                span,
                format!("no {} back end can take a connection", f.name()),
            )
            .also(pool.name.span, "the pool")
            .set_help(format!(
                "a virtual IP is balanced to the back ends of its own family, and one of weight 0 \
                 takes no new connections: give at least one {} back end a weight above 0",
                f.name()
            ));
        }
    }

    fn vip_address(&mut self, a: IpAddr, span: Span) {
        if self.martian_address(a, span, "lbp::check::vip_address", "the virtual IP") {
            return;
        }
        if let Some(iface) = self.own_address(a) {
            self.warn(
                "lbp::check::vip_is_interface_address",
                format!("the virtual IP {a} is also an address of interface `{iface}`"),
                span,
                "the appliance's own address",
            )
            .set_help(
                "service entries come before local delivery: a packet to this address that no \
                 entry matches is reset (TCP) or dropped, never delivered to the control plane; \
                 give the service an address of its own if the appliance should stay reachable here",
            );
        }
    }

    /// Port 0, and a port listed twice, on one `vip` line.
    fn vip_ports(&mut self, ports: &'a [Expr], addr: &Expr) {
        let mut seen: Vec<((u64, u64), Span)> = Vec::new();
        for p in ports {
            self.port_zero(
                p,
                "a service's port",
                "write the port the service answers on",
            );
            let Some((lo, hi)) = self.const_range(p) else {
                continue;
            };
            if lo > hi || hi > 65535 {
                continue;
            }
            if let Some(&((l2, h2), first)) =
                seen.iter().find(|((l2, h2), _)| lo <= *h2 && *l2 <= hi)
            {
                let (a, b) = (lo.max(l2), hi.min(h2));
                let what = if a == b {
                    format!("port {a}")
                } else {
                    format!("ports {a}..{b}")
                };
                let on = self
                    .const_addr(addr)
                    .map_or(String::new(), |a| format!(" of {a}"));
                self.err(
                    "lbp::check::duplicate_vip_entry",
                    format!("{what}{on} is listed twice on this line"),
                    p.span,
                    "listed again here",
                )
                .also(first, "first here")
                .set_help("list each port of a virtual IP once");
            }
            seen.push(((lo, hi), p.span));
        }
    }

    /// Direct server return rewrites only the MAC address: each back end must be
    /// on a network the appliance reaches without a gateway.
    fn dsr_backends(&mut self, s: &'a Service, pool: &'a Pool, mode: Span, routes: &[&'a Route]) {
        for st in &pool.stmts {
            let PoolStmtKind::Backend(b) = &st.kind else {
                continue;
            };
            let Some(a) = self.const_addr(&b.addr) else {
                continue;
            };
            if martian_kind(a, &self.connected).is_some() || self.own_address(a).is_some() {
                continue; // reported as a bad back end address
            }
            if self.connected.iter().any(|&(n, l, _)| contains(n, l, a)) {
                continue;
            }
            // A route with `dev` and no `via` says the network is on that link.
            let on_link = routes.iter().any(|r| {
                r.via.is_none()
                    && r.dev.is_some()
                    && self
                        .const_prefix(&r.prefix)
                        .is_some_and(|(n, l)| contains(n, l, a))
            });
            if on_link {
                continue;
            }
            let via = routes
                .iter()
                .filter_map(|r| {
                    let (n, l) = self.const_prefix(&r.prefix)?;
                    let g = self.const_addr(r.via.as_ref()?)?;
                    contains(n, l, a).then_some((l, g))
                })
                .max_by_key(|&(l, _)| l);
            let d = self.err(
                "lbp::check::dsr_not_connected",
                format!("the DSR back end {a} is not on a connected network"),
                b.addr.span,
                match via {
                    Some((_, g)) => format!("reached only through the gateway {g}"),
                    None => "on no interface's network".to_string(),
                },
            );
            d.also(
                mode,
                format!("service `{}` uses direct server return", s.name.name),
            );
            d.set_help(
                "direct server return rewrites only the MAC address, so the appliance must reach \
                 the back end on one of its own links: give an interface an address in the back \
                 end's network (or write `route NETWORK dev INTERFACE`), or use `mode nat`",
            );
        }
    }

    /// What every address of the network `net/len` is, when all of it is
    /// martian (a route to it is never used).
    fn martian_prefix(&self, net: IpAddr, len: u32) -> Option<&'static str> {
        // The length of the martian block `net` falls in.
        let block = match net {
            IpAddr::V4(v) => match v.octets() {
                [0 | 127, ..] => 8,
                [169, 254, ..] => 16,
                [224..=239, ..] => 4,
                _ => 32,
            },
            IpAddr::V6(v) => match v.segments()[0] {
                0xfe80..=0xfebf => 10,
                0xff00..=0xffff => 8,
                _ => 128,
            },
        };
        if len < block {
            return None;
        }
        martian_kind(net, &self.connected)
    }

    /// Two routes with the same prefix: the first always wins; a route whose
    /// every address is martian is never used.
    fn lint_routes(&mut self, routes: &[&'a Route]) {
        let mut seen: HashMap<(IpAddr, u32), Span> = HashMap::new();
        for r in routes {
            let Some((n, l)) = self.const_prefix(&r.prefix) else {
                continue;
            };
            if l > Fam::of(&n).max_len() {
                continue;
            }
            let key = (network(n, l), l);
            if let Some(kind) = self.martian_prefix(key.0, l) {
                self.err(
                    "lbp::check::martian_route",
                    format!("the route {}/{l} is never used", key.0),
                    r.prefix.span,
                    format!("every address in it is {kind}"),
                )
                .set_help(
                    "routing never forwards to an unspecified, loopback, link-local, multicast or \
                     broadcast destination, whatever the routes say; remove the route",
                );
            }
            let Some(&first) = seen.get(&key) else {
                seen.insert(key, r.span);
                continue;
            };
            let msg = if l == 0 {
                format!("a second {} default route", Fam::of(&n).name())
            } else {
                format!("a second route for {}/{l}", key.0)
            };
            self.err("lbp::check::duplicate_route", msg, r.span, "never used")
                .also(first, "this route is always chosen")
                .set_help(
                    "lbp has no route metrics and no ECMP: of two routes with the same prefix the \
                 first is always chosen; keep one of them",
                );
        }
    }
}
