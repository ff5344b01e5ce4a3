//! Checking: name resolution and type checking of a parsed [`Policy`].
//!
//! `check` reads the tree and returns every diagnostic it finds; it never stops at
//! the first. It resolves names in four namespaces (values: interfaces, consts and
//! sets; pools; services; tests), types every expression, and checks the rules of
//! the language that are not syntax: port and prefix ranges, address families,
//! host bits, mixed sets, unreachable rules, overlapping service entries, and so on.
//! It does not rewrite the tree.

use crate::ast::*;
use crate::diag::{Diagnostic, did_you_mean, suggest};
use crate::vocab::{MODES, UNKNOWN_POLICIES, VIP_PROTOCOLS, protocol_names};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

mod lints;
mod packets;
pub use lints::martian_kind;
pub use packets::{check_packet_line, check_packet_line_with};

/// Check a policy; returns the diagnostics in the order found (callers sort).
/// `app NAME` may name the built-in applications ([`APPLICATIONS`]).
pub fn check(policy: &Policy) -> Vec<Diagnostic> {
    check_with(policy, APPLICATIONS)
}

/// [`check`] for an appliance whose switching cores run the applications
/// `apps` (a program's registry: the built-in ones and its own), which `app
/// NAME` may name.
pub fn check_with(policy: &Policy, apps: &[&str]) -> Vec<Diagnostic> {
    let mut c = Checker {
        apps: Some(apps),
        ..Checker::default()
    };
    c.collect(policy);
    for item in &policy.items {
        c.item(item);
    }
    c.services_claims();
    c.lints(policy);
    let packets = policy.items.iter().flat_map(|i| match i {
        Item::Test(t) => t.packets.as_slice(),
        _ => &[],
    });
    c.arrivals(policy, packets);
    c.unused();
    c.diags
}

// ---- types ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fam {
    V4,
    V6,
    /// Either family: the type of `ip.src` and `ip.dst`.
    Any,
}

impl Fam {
    pub fn of(a: &IpAddr) -> Fam {
        if a.is_ipv4() { Fam::V4 } else { Fam::V6 }
    }
    fn name(self) -> &'static str {
        match self {
            Fam::V4 => "IPv4",
            Fam::V6 => "IPv6",
            Fam::Any => "IP",
        }
    }
    fn max_len(self) -> u32 {
        match self {
            Fam::V4 => 32,
            Fam::V6 | Fam::Any => 128,
        }
    }
}

/// The element kind of a set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Elem {
    /// Integers and integer ranges (ports, protocol numbers, ...).
    Int,
    /// Addresses and prefixes, of either family.
    Prefix,
    Mac,
    Iface,
    Str,
    Unknown,
}

/// The type of an expression.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    Bool,
    Int,
    Num,
    Addr(Fam),
    Prefix(Fam),
    Mac,
    Duration,
    Str,
    Iface,
    Range,
    Set(Elem),
    /// Already reported; silences follow-on errors.
    Unknown,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "true or false",
            Ty::Int => "an integer",
            Ty::Num => "a number",
            Ty::Addr(Fam::V4) => "an IPv4 address",
            Ty::Addr(Fam::V6) => "an IPv6 address",
            Ty::Addr(Fam::Any) => "an address",
            Ty::Prefix(Fam::V4) => "an IPv4 prefix",
            Ty::Prefix(Fam::V6) => "an IPv6 prefix",
            Ty::Prefix(Fam::Any) => "a prefix",
            Ty::Mac => "a MAC address",
            Ty::Duration => "a duration",
            Ty::Str => "a string",
            Ty::Iface => "an interface",
            Ty::Range => "a range",
            Ty::Set(Elem::Int) => "a set of integers",
            Ty::Set(Elem::Prefix) => "a set of addresses and prefixes",
            Ty::Set(Elem::Mac) => "a set of MAC addresses",
            Ty::Set(Elem::Iface) => "a set of interfaces",
            Ty::Set(Elem::Str) => "a set of strings",
            Ty::Set(Elem::Unknown) => "a set",
            Ty::Unknown => "unknown",
        }
    }
    fn elem(self) -> Option<Elem> {
        Some(match self {
            Ty::Int | Ty::Range => Elem::Int,
            Ty::Addr(_) | Ty::Prefix(_) => Elem::Prefix,
            Ty::Mac => Elem::Mac,
            Ty::Iface => Elem::Iface,
            Ty::Str => Elem::Str,
            Ty::Unknown => Elem::Unknown,
            _ => return None,
        })
    }
}

/// A packet field: its name, type, largest value (integers) and whether it is a port.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    pub name: &'static str,
    pub ty: Ty,
    pub max: u64,
    pub port: bool,
}

const fn f(name: &'static str, ty: Ty, max: u64, port: bool) -> FieldInfo {
    FieldInfo {
        name,
        ty,
        max,
        port,
    }
}

/// Every packet field of the language.
pub const FIELDS: &[FieldInfo] = &[
    f("in.iface", Ty::Iface, 0, false),
    f("pkt.len", Ty::Int, 65535, false),
    f("eth.src", Ty::Mac, 0, false),
    f("eth.dst", Ty::Mac, 0, false),
    f("eth.type", Ty::Int, 65535, false),
    f("ip.version", Ty::Int, 15, false),
    f("ip.src", Ty::Addr(Fam::Any), 0, false),
    f("ip.dst", Ty::Addr(Fam::Any), 0, false),
    f("ip.proto", Ty::Int, 255, false),
    f("ip.ttl", Ty::Int, 255, false),
    f("ip.len", Ty::Int, 65575, false),
    f("ip.frag", Ty::Bool, 0, false),
    f("tcp.sport", Ty::Int, 65535, true),
    f("tcp.dport", Ty::Int, 65535, true),
    f("tcp.syn", Ty::Bool, 0, false),
    f("tcp.ack", Ty::Bool, 0, false),
    f("tcp.fin", Ty::Bool, 0, false),
    f("tcp.rst", Ty::Bool, 0, false),
    f("tcp.psh", Ty::Bool, 0, false),
    f("tcp.urg", Ty::Bool, 0, false),
    f("udp.sport", Ty::Int, 65535, true),
    f("udp.dport", Ty::Int, 65535, true),
    f("icmp.type", Ty::Int, 255, false),
    f("icmp.code", Ty::Int, 255, false),
    f("l4.sport", Ty::Int, 65535, true),
    f("l4.dport", Ty::Int, 65535, true),
];

pub fn field(name: &str) -> Option<&'static FieldInfo> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Fields a service may hash on with `balance hash(...)`.
pub const HASH_FIELDS: &[&str] = &["ip.src", "ip.dst", "ip.proto", "l4.sport", "l4.dport"];
/// Inputs of a pool's `weight = ...` expression.
pub const WEIGHT_INPUTS: &[&str] = &["clients", "cpu", "mem", "exec_ms", "rps", "weight"];
/// Protocol names usable as values (`ip.proto == tcp`).
pub const PROTOCOLS: &[(&str, u64)] = &[("tcp", 6), ("udp", 17), ("icmp", 1), ("icmpv6", 58)];
pub const ACTIONS: &[&str] = &[
    "accept", "drop", "reset", "local", "forward", "balance", "app",
];
pub const VERDICTS: &[&str] = &[
    "drop", "reset", "local", "balance", "forward", "expire", "app",
];
/// The built-in applications a switching core runs (`=> app NAME`), as the
/// runtime numbers them (`lbp_abi::app::BUILTIN`; a compiler test holds the
/// two equal). A program that registers more checks with [`check_with`].
pub const APPLICATIONS: &[&str] = &["echo", "icmp"];
/// `a, b and c` (with `word` before the last name).
fn list(names: &[&str], word: &str) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} {word} {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => "none".to_string(),
    }
}
pub const ALGORITHMS: &[&str] = &["maglev", "round_robin", "least_load", "hash"];
pub const HEALTH_KINDS: &[&str] = &["tcp", "http", "icmp"];
pub const TCP_FLAGS: &[&str] = &["syn", "ack", "fin", "rst", "psh", "urg"];
const SET_TYPES: &[(&str, Elem)] = &[
    ("prefix", Elem::Prefix),
    ("address", Elem::Prefix),
    ("port", Elem::Int),
    ("int", Elem::Int),
    ("mac", Elem::Mac),
    ("interface", Elem::Iface),
    ("string", Elem::Str),
];

// ---- the checker ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// A filter condition: fields, names of values, no arithmetic.
    Filter,
    /// A pool's weight formula: inputs and consts, arithmetic.
    Weight,
    /// A value in a statement: literals and consts only.
    Value,
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Iface(&'a Interface),
    Const(&'a Const),
    Set(&'a SetDef),
}

impl Value<'_> {
    fn span(&self) -> Span {
        match self {
            Value::Iface(i) => i.name.span,
            Value::Const(c) => c.name.span,
            Value::Set(s) => s.name.span,
        }
    }
}

/// A service entry as claimed: (service, virtual IP, protocol, port ranges,
/// span).
type Claim<'a> = (&'a str, IpAddr, &'a str, Vec<(u64, u64)>, Span);

#[derive(Default)]
struct Checker<'a> {
    diags: Vec<Diagnostic>,
    values: HashMap<&'a str, Value<'a>>,
    pools: HashMap<&'a str, &'a Pool>,
    services: HashMap<&'a str, &'a Service>,
    used: HashSet<&'a str>,
    /// Value names defined more than once (reported where defined again).
    ambiguous: HashSet<&'a str>,
    used_pools: HashSet<&'a str>,
    const_tys: HashMap<&'a str, Ty>,
    /// Types of named sets, once computed (a set may be used by many rules).
    set_tys: HashMap<&'a str, Ty>,
    resolving: Vec<&'a str>,
    /// Connected networks: (address, length, interface name).
    connected: Vec<(IpAddr, u32, &'a str)>,
    /// Where each interface address was first written.
    address_spans: HashMap<(IpAddr, u32), Span>,
    /// Service entries: (service, vip address, protocol, port ranges, span).
    claims: Vec<Claim<'a>>,
    /// Set once an unconditional filter rule has been seen.
    unconditional: Option<Span>,
    unreachable_reported: bool,
    /// The applications `app NAME` may name; `None`: [`APPLICATIONS`].
    apps: Option<&'a [&'a str]>,
}

impl<'a> Checker<'a> {
    /// The applications `app NAME` may name.
    fn apps(&self) -> &'a [&'a str] {
        self.apps.unwrap_or(APPLICATIONS)
    }

    fn err(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::error(code, msg).label(span, label));
        self.diags.last_mut().expect("just pushed")
    }

    fn warn(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::warning(code, msg).label(span, label));
        self.diags.last_mut().expect("just pushed")
    }

    fn mismatch(&mut self, span: Span, expected: &str, found: Ty) -> &mut Diagnostic {
        self.err(
            "lbp::type::mismatch",
            format!("expected {expected}, found {}", found.describe()),
            span,
            format!("this is {}", found.describe()),
        )
    }

    // ---- pass 1: definitions -------------------------------------------------------

    fn collect(&mut self, policy: &'a Policy) {
        let mut tests: HashMap<&str, Span> = HashMap::new();
        for item in &policy.items {
            match item {
                Item::Interface(i) => self.define_value(&i.name, Value::Iface(i)),
                Item::Const(c) => self.define_value(&c.name, Value::Const(c)),
                Item::Set(s) => self.define_value(&s.name, Value::Set(s)),
                // The first definition stands; the second is reported.
                Item::Pool(p) => match self.pools.get(p.name.name.as_str()) {
                    Some(prev) => {
                        let first = prev.name.span;
                        self.duplicate("pool", &p.name, first);
                    }
                    None => {
                        self.pools.insert(&p.name.name, p);
                    }
                },
                Item::Service(s) => match self.services.get(s.name.name.as_str()) {
                    Some(prev) => {
                        let first = prev.name.span;
                        self.duplicate("service", &s.name, first);
                    }
                    None => {
                        self.services.insert(&s.name.name, s);
                    }
                },
                Item::Test(t) => {
                    if let Some(prev) = tests.get(t.name.as_str()).copied() {
                        self.err(
                            "lbp::name::duplicate",
                            format!("the test \"{}\" is defined twice", t.name),
                            t.name_span,
                            "defined again here",
                        )
                        .also(prev, "first defined here")
                        .set_help("test names are unique: rename one of them");
                    } else {
                        tests.insert(&t.name, t.name_span);
                    }
                }
                Item::Filter(_) | Item::Route(_) => {}
            }
        }
    }

    fn define_value(&mut self, name: &'a Ident, v: Value<'a>) {
        // Interfaces too: `in.iface == tcp` and `ip.proto == tcp` share the namespace.
        if let Some((p, _)) = PROTOCOLS.iter().find(|(p, _)| *p == name.name).or(
            if matches!(name.name.as_str(), "true" | "false") {
                Some(&("", 0))
            } else {
                None
            },
        ) {
            let what = if p.is_empty() {
                "a boolean literal"
            } else {
                "a protocol name"
            };
            self.err(
                "lbp::name::reserved",
                format!("`{}` is {what} and cannot be redefined", name.name),
                name.span,
                "reserved name",
            )
            .set_help("choose another name");
            return;
        }
        if let Some(prev) = self.values.get(name.name.as_str()).copied() {
            let kind = match v {
                Value::Iface(_) => "interface",
                Value::Const(_) => "const",
                Value::Set(_) => "set",
            };
            self.duplicate(kind, name, prev.span());
            // Which of the two a use means is unknown: uses are not checked against
            // either (that would only report follow-on mismatches).
            self.ambiguous.insert(&name.name);
            return;
        }
        self.values.insert(&name.name, v);
    }

    fn duplicate(&mut self, kind: &str, name: &Ident, first: Span) {
        let help = match kind {
            "pool" => {
                "pool names are unique: rename one of the pools, or merge their back ends into one"
            }
            "service" => "service names are unique: rename one of the services",
            _ => "interfaces, consts and sets share one namespace: rename one of them",
        };
        self.err(
            "lbp::name::duplicate",
            format!("the name `{}` is defined twice", name.name),
            name.span,
            format!("{kind} `{}` defined again here", name.name),
        )
        .also(first, "first defined here")
        .set_help(help);
    }

    // ---- pass 2: items -------------------------------------------------------------

    fn item(&mut self, item: &'a Item) {
        match item {
            Item::Interface(i) => self.interface(i),
            Item::Const(c) => {
                self.const_ty(c);
            }
            Item::Set(s) => {
                self.set_def(s);
            }
            Item::Pool(p) => self.pool(p),
            Item::Service(s) => self.service(s),
            Item::Filter(f) => {
                for r in &f.rules {
                    self.rule(r);
                }
            }
            Item::Route(r) => self.route(r),
            Item::Test(t) => {
                for p in &t.packets {
                    self.packet(p);
                }
            }
        }
    }

    fn interface(&mut self, i: &'a Interface) {
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
                                    &format_expr_lit(a),
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
    fn const_ty(&mut self, c: &'a Const) -> Ty {
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

    fn set_def(&mut self, s: &'a SetDef) -> Ty {
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
    fn elements(&mut self, elems: &'a [Expr], declared: Option<Elem>) -> Elem {
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

    fn pool(&mut self, p: &'a Pool) {
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

    fn service(&mut self, s: &'a Service) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut vips: Vec<(Fam, Span)> = Vec::new();
        let mut pool: Option<&'a Pool> = None;
        let mut pool_span = None;
        let mut mode_dsr = false;
        for st in &s.stmts {
            let key = match &st.kind {
                ServiceStmtKind::Vip { addr, proto, ports } => {
                    let t = self.value(addr);
                    let ip = match t {
                        Ty::Addr(f) => {
                            vips.push((f, addr.span));
                            self.const_addr(addr)
                        }
                        Ty::Unknown => None,
                        t => {
                            let d = self.mismatch(addr.span, "an address", t);
                            if matches!(t, Ty::Prefix(_)) {
                                d.help = Some(
                                    "a virtual IP is one address: write it without a length".into(),
                                );
                            }
                            None
                        }
                    };
                    let p = proto.name.as_str();
                    let proto_ok = VIP_PROTOCOLS.contains(&p);
                    if !proto_ok {
                        let d = self.err(
                            "lbp::name::unknown_protocol",
                            format!("a service entry is tcp or udp, not `{p}`"),
                            proto.span,
                            "not tcp or udp",
                        );
                        if let Some(m) = did_you_mean(p, VIP_PROTOCOLS.iter().copied()) {
                            d.help = Some(format!("did you mean `{m}`?"));
                        }
                    }
                    let mut ranges = Vec::new();
                    for port in ports {
                        match self.value(port) {
                            Ty::Int => {
                                if let Some(v) = self.port_value(port) {
                                    ranges.push((v, v));
                                }
                            }
                            Ty::Range => {
                                if let Some(r) = self.port_range(port) {
                                    ranges.push(r);
                                }
                            }
                            Ty::Unknown => {}
                            t => {
                                self.mismatch(port.span, "a port or a port range", t);
                            }
                        }
                    }
                    if ports.is_empty() {
                        ranges.push((0, 65535));
                    }
                    if let (Some(ip), true) = (ip, proto_ok) {
                        self.claims.push((&s.name.name, ip, p, ranges, st.span));
                    }
                    "vip"
                }
                ServiceStmtKind::Pool(name) => {
                    match self.pools.get(name.name.as_str()) {
                        Some(p) => {
                            pool = Some(*p);
                            pool_span = Some(name.span);
                            self.used_pools.insert(&name.name);
                        }
                        None => {
                            let mut cands: Vec<&'a str> = self.pools.keys().copied().collect();
                            cands.sort_unstable();
                            let suggestion = did_you_mean(&name.name, cands);
                            // The misspelled name most likely meant the suggestion: do not also call it unused.
                            if let Some(m) = suggestion {
                                self.used_pools.insert(m);
                            }
                            let d = self.err(
                                "lbp::name::undefined",
                                format!("no pool named `{}`", name.name),
                                name.span,
                                "not defined",
                            );
                            d.help = Some(match suggestion {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => {
                                    format!("define it: `pool {} {{ backend ADDRESS }}`", name.name)
                                }
                            });
                        }
                    }
                    "pool"
                }
                ServiceStmtKind::Balance(b) => {
                    match b {
                        Balance::Named(n) => {
                            if n.name == "hash" {
                                self.err(
                                    "lbp::check::hash_fields",
                                    "`balance hash` needs the fields to hash",
                                    n.span,
                                    "no fields",
                                )
                                .set_help("write for example `balance hash(ip.src)`");
                            } else if !ALGORITHMS.contains(&n.name.as_str()) {
                                let d = self.err(
                                    "lbp::name::unknown_algorithm",
                                    format!("unknown balance algorithm `{}`", n.name),
                                    n.span,
                                    "not an algorithm",
                                );
                                d.help = Some(suggest(
                                    &n.name,
                                    ALGORITHMS.iter().copied(),
                                    "algorithms are maglev, round_robin, least_load and hash(FIELD, ...)",
                                ));
                            }
                        }
                        Balance::Hash { fields, .. } => {
                            for f in fields {
                                if !HASH_FIELDS.contains(&f.name.as_str()) {
                                    let d = self.err(
                                        "lbp::name::unknown_field",
                                        format!("cannot hash on `{}`", f.name),
                                        f.span,
                                        "not a hash field",
                                    );
                                    d.help = Some(
                                        match did_you_mean(&f.name, HASH_FIELDS.iter().copied()) {
                                            Some(m) => format!("did you mean `{m}`?"),
                                            None => format!(
                                                "hash fields are {}",
                                                HASH_FIELDS.join(", ")
                                            ),
                                        },
                                    );
                                }
                            }
                        }
                    }
                    "balance"
                }
                ServiceStmtKind::Mode { kind, to_port } => {
                    match kind.name.as_str() {
                        "nat" => {}
                        "dsr" => {
                            mode_dsr = true;
                            if let Some(p) = to_port {
                                self.err("lbp::check::dsr_port", "direct server return cannot rewrite the port", p.span, "a port rewrite")
                                    .set_help("DSR rewrites only MAC addresses; remove `to port`, or use `mode nat to port N`");
                            }
                        }
                        other => {
                            let d = self.err(
                                "lbp::name::unknown_mode",
                                format!("unknown mode `{other}`"),
                                kind.span,
                                "not a mode",
                            );
                            d.help = Some(suggest(
                                other,
                                MODES.iter().copied(),
                                "modes are `nat` (rewrite the destination) and `dsr` (rewrite the MAC only)",
                            ));
                        }
                    }
                    if let Some(p) = to_port
                        && kind.name != "dsr"
                        && self.expect_value(p, Ty::Int)
                    {
                        self.port_value(p);
                    }
                    "mode"
                }
                ServiceStmtKind::Unknown(u) => {
                    if !UNKNOWN_POLICIES.contains(&u.name.as_str()) {
                        let d = self.err(
                            "lbp::name::unknown_policy",
                            format!("`unknown` is `reset` or `balance`, not `{}`", u.name),
                            u.span,
                            "not reset or balance",
                        );
                        if let Some(m) = did_you_mean(&u.name, UNKNOWN_POLICIES.iter().copied()) {
                            d.help = Some(format!("did you mean `{m}`?"));
                        }
                    }
                    "unknown"
                }
            };
            if key != "vip"
                && let Some(prev) = seen.insert(key, st.span)
            {
                self.err("lbp::check::duplicate_statement", format!("`{key}` is given twice"), st.span, "given again here")
                    .also(prev, "first given here")
                    .set_help(if key == "pool" {
                        "a service balances to one pool: keep one `pool` line (a pool holds any number of back ends)"
                    } else {
                        "keep one of them"
                    });
            }
        }
        // Only when no `vip` line is written: a `vip` line with a bad address has its own error.
        if s.stmts
            .iter()
            .all(|s| !matches!(s.kind, ServiceStmtKind::Vip { .. }))
        {
            self.err(
                "lbp::check::missing_vip",
                format!("the service `{}` has no virtual IP", s.name.name),
                s.name.span,
                "no `vip` line",
            )
            .set_help("add `vip ADDRESS tcp port N`");
        }
        if !seen.contains_key("pool") {
            self.err(
                "lbp::check::missing_pool",
                format!("the service `{}` has no pool", s.name.name),
                s.name.span,
                "no `pool` line",
            )
            .set_help("add `pool NAME` naming the back ends to balance to");
        }
        // A virtual IP is balanced to the pool's back ends of its own family (no
        // NAT46, and DSR keeps the IP header), so every virtual IP's family needs
        // at least one back end. A service with an IPv4 and an IPv6 virtual IP
        // balances each to the back ends of its family.
        if let (Some(pool), Some(ps)) = (pool, pool_span) {
            let mut backend_fams: Vec<(Fam, Span)> = Vec::new();
            for st in &pool.stmts {
                if let PoolStmtKind::Backend(b) = &st.kind
                    && let Ty::Addr(bf) = self.value_quiet(&b.addr)
                {
                    backend_fams.push((bf, b.addr.span));
                }
            }
            if let Some(&(other, other_span)) = backend_fams.first()
                && let Some(&(vf, vspan)) = vips
                    .iter()
                    .find(|(vf, _)| backend_fams.iter().all(|(bf, _)| bf != vf))
            {
                let mode = if mode_dsr {
                    "direct server return"
                } else {
                    "NAT"
                };
                self.err(
                    "lbp::type::family_mismatch",
                    format!("the {} virtual IP has no {} back end to balance to", vf.name(), vf.name()),
                    vspan,
                    format!("{} virtual IP", vf.name()),
                )
                .also(ps, format!("pool `{}` has only {} back ends", pool.name.name, other.name()))
                .also(other_span, format!("an {} back end", other.name()))
                .set_help(format!(
                    "{mode} keeps the address family: add {} back ends to the pool, or use a pool of {} back ends for this virtual IP",
                    vf.name(),
                    vf.name()
                ));
            }
        }
    }

    /// Two services (or two lines) must not claim the same (address, protocol, port).
    fn services_claims(&mut self) {
        let mut by_key: HashMap<(IpAddr, &str), Vec<usize>> = HashMap::new();
        for (i, c) in self.claims.iter().enumerate() {
            by_key.entry((c.1, c.2)).or_default().push(i);
        }
        let mut groups: Vec<Vec<usize>> = by_key.into_values().collect();
        groups.sort();
        for g in groups {
            for (n, &j) in g.iter().enumerate() {
                for &i in &g[..n] {
                    let (a, b) = (&self.claims[i], &self.claims[j]);
                    let overlap = b.3.iter().find_map(|&(lo, hi)| {
                        a.3.iter()
                            .find(|&&(l2, h2)| lo <= h2 && l2 <= hi)
                            .map(|&(l2, h2)| (lo.max(l2), hi.min(h2)))
                    });
                    if let Some((lo, hi)) = overlap {
                        let ports = if lo == hi {
                            format!("port {lo}")
                        } else {
                            format!("ports {lo}..{hi}")
                        };
                        let msg = format!("{} {} {ports} is claimed twice", b.1, b.2);
                        let who = if a.0 == b.0 {
                            format!("already claimed by service `{}`", a.0)
                        } else {
                            format!("claimed by service `{}`", a.0)
                        };
                        let (sa, sb) = (a.4, b.4);
                        self.err(
                            "lbp::check::duplicate_vip_entry",
                            msg,
                            sb,
                            "claimed again here",
                        )
                        .also(sa, who);
                        if let Some(d) = self.diags.last_mut() {
                            d.help = Some("each (virtual IP, protocol, port) belongs to exactly one service: narrow one of the port lists (a filter rule `... => balance SERVICE` can still send some of the traffic to the other service)".into());
                        }
                        break;
                    }
                }
            }
        }
    }

    fn rule(&mut self, r: &'a FilterRule) {
        if let Some(prior) = self.unconditional
            && !self.unreachable_reported
        {
            self.unreachable_reported = true;
            self.warn(
                "lbp::check::unreachable_rule",
                "this rule can never match",
                r.span,
                "unreachable",
            )
            .also(prior, "every packet stops at this rule");
            if let Some(d) = self.diags.last_mut() {
                d.help = Some("rules are tried in order and the first match decides; move this rule above, or narrow the earlier one".into());
            }
        }
        let t = self.ty(&r.cond, Ctx::Filter);
        if !matches!(t, Ty::Bool | Ty::Unknown) {
            let d = self.mismatch(r.cond.span, "a condition (true or false)", t);
            d.help = Some(match r.cond.kind {
                ExprKind::Field(ref name) => match t {
                    Ty::Addr(_) => format!("compare it: `{name} == 198.18.0.1`, or `{name} in 198.18.0.0/15`"),
                    Ty::Int => format!("compare it, for example `{name} == 80`"),
                    _ => format!("compare it, for example `{name} == ...`"),
                },
                _ => "a rule's condition is a comparison, an `in` test, a flag such as `tcp.syn`, or a combination with && || !".into(),
            });
        }
        match const_truth(&r.cond) {
            Some(true) if self.unconditional.is_none() => self.unconditional = Some(r.span),
            Some(false) => {
                self.warn(
                    "lbp::check::never_matches",
                    "this rule's condition is always false",
                    r.cond.span,
                    "always false",
                )
                .set_help("remove the rule");
            }
            _ => {}
        }
        let a = &r.action;
        match (a.kind.name.as_str(), &a.service) {
            ("balance", Some(s)) => self.service_ref(s),
            ("balance", None) => {
                self.err(
                    "lbp::check::balance_service",
                    "`balance` needs the service to balance with",
                    a.span,
                    "no service",
                )
                .set_help("write `balance SERVICE`");
            }
            ("app", Some(n)) => self.app_ref(n),
            ("app", None) => {
                let apps = list(self.apps(), "or");
                self.err(
                    "lbp::check::app_name",
                    "`app` needs the application to hand the packet to",
                    a.span,
                    "no application",
                )
                .set_help(format!("write `app NAME`: {apps}"));
            }
            (k, _) if ACTIONS.contains(&k) => {}
            (k, _) => {
                let d = self.err(
                    "lbp::name::unknown_action",
                    format!("unknown action `{k}`"),
                    a.kind.span,
                    "not an action",
                );
                d.help = Some(suggest(
                    k,
                    ACTIONS.iter().copied(),
                    "actions are accept, drop, reset, local, forward, balance SERVICE and app NAME",
                ));
            }
        }
    }

    /// The application of `app NAME` (an action or a test verdict).
    fn app_ref(&mut self, n: &Ident) {
        let apps = self.apps();
        if apps.contains(&n.name.as_str()) {
            return;
        }
        let d = self.err(
            "lbp::name::unknown_app",
            format!("unknown application `{}`", n.name),
            n.span,
            "no such application",
        );
        d.help = Some(suggest(
            &n.name,
            apps.iter().copied(),
            format!(
                "the switching core's applications are {}",
                list(apps, "and")
            ),
        ));
    }

    fn service_ref(&mut self, s: &Ident) {
        if !self.services.contains_key(s.name.as_str()) {
            let cands: Vec<&str> = self.services.keys().copied().collect();
            let d = self.err(
                "lbp::name::undefined",
                format!("no service named `{}`", s.name),
                s.span,
                "not defined",
            );
            if let Some(m) = did_you_mean(&s.name, cands) {
                d.help = Some(format!("did you mean `{m}`?"));
            }
        }
    }

    fn iface_ref(&mut self, i: &Ident) -> Option<&'a Interface> {
        match self.values.get(i.name.as_str()) {
            Some(Value::Iface(x)) => Some(*x),
            Some(_) => {
                self.err(
                    "lbp::type::mismatch",
                    format!("`{}` is not an interface", i.name),
                    i.span,
                    "not an interface",
                );
                None
            }
            None => {
                let cands: Vec<&str> = self
                    .values
                    .iter()
                    .filter(|(_, v)| matches!(v, Value::Iface(_)))
                    .map(|(k, _)| *k)
                    .collect();
                let d = self.err(
                    "lbp::name::undefined",
                    format!("no interface named `{}`", i.name),
                    i.span,
                    "not defined",
                );
                d.help = Some(suggest(
                    &i.name,
                    cands,
                    format!(
                        "define it: `interface {} {{ address ADDRESS/LENGTH }}`",
                        i.name
                    ),
                ));
                None
            }
        }
    }

    fn route(&mut self, r: &'a Route) {
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
                        format_expr_lit(&r.prefix),
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

    fn packet(&mut self, p: &'a Packet) {
        let proto = p.proto.name.as_str();
        let known: Vec<&str> = protocol_names().collect();
        if !known.contains(&proto) {
            let d = self.err(
                "lbp::name::unknown_protocol",
                format!("unknown protocol `{proto}`"),
                p.proto.span,
                "not a protocol",
            );
            d.help = Some(suggest(
                proto,
                known.iter().copied(),
                "test packets are tcp, udp, icmp or icmpv6",
            ));
        }
        let has_ports = matches!(proto, "tcp" | "udp");
        let mut fams = Vec::new();
        for ep in [&p.src, &p.dst] {
            match self.value(&ep.addr) {
                Ty::Addr(f) => fams.push((f, ep.addr.span)),
                Ty::Unknown => {}
                t => {
                    self.mismatch(ep.addr.span, "an address", t);
                }
            }
            match (&ep.port, has_ports) {
                (Some(port), true) if self.expect_value(port, Ty::Int) => {
                    self.port_value(port);
                }
                (Some(port), false) if known.contains(&proto) => {
                    self.err(
                        "lbp::check::port_not_applicable",
                        format!("{proto} has no ports"),
                        port.span,
                        "a port",
                    )
                    .set_help("remove the `:PORT`");
                }
                (None, true) => {
                    self.err(
                        "lbp::check::missing_port",
                        format!("a {proto} test packet needs a port"),
                        ep.span,
                        "no port",
                    )
                    .set_help("write ADDRESS:PORT, or [IPv6]:PORT");
                }
                _ => {}
            }
        }
        if let [(a, _), (b, bs)] = fams[..] {
            if a != b {
                self.err(
                    "lbp::type::family_mismatch",
                    format!(
                        "the packet goes from an {} to an {} address",
                        a.name(),
                        b.name()
                    ),
                    bs,
                    format!("{} address", b.name()),
                )
                .also(p.src.addr.span, format!("{} address", a.name()))
                .set_help(
                    "a packet's source and destination are of one family: both IPv4 or both IPv6",
                );
            } else if proto == "icmp" && a == Fam::V6 {
                self.err(
                    "lbp::type::family_mismatch",
                    "ICMP over IPv6 is `icmpv6`",
                    p.proto.span,
                    "`icmp` is ICMP for IPv4",
                )
                .also(bs, "an IPv6 address")
                .set_help("write `icmpv6`");
            } else if proto == "icmpv6" && a == Fam::V4 {
                self.err(
                    "lbp::type::family_mismatch",
                    "ICMPv6 needs IPv6 addresses",
                    p.proto.span,
                    "`icmpv6` is ICMP for IPv6",
                )
                .also(bs, "an IPv4 address")
                .set_help("write `icmp`");
            }
        }
        let mut seen: HashMap<String, Span> = HashMap::new();
        for o in &p.opts {
            let (key, span) = match o {
                PacketOpt::Flag(f) => {
                    if !TCP_FLAGS.contains(&f.name.as_str()) {
                        let d = self.err(
                            "lbp::name::unknown_flag",
                            format!("unknown option or TCP flag `{}`", f.name),
                            f.span,
                            "not a flag",
                        );
                        d.help = Some(
                            match did_you_mean(
                                &f.name,
                                TCP_FLAGS
                                    .iter()
                                    .copied()
                                    .chain(["type", "code", "ttl", "len", "on"]),
                            ) {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => "TCP flags are syn, ack, fin, rst, psh and urg".into(),
                            },
                        );
                    } else if proto != "tcp" && known.contains(&proto) {
                        self.err(
                            "lbp::check::flag_not_applicable",
                            format!("{proto} has no TCP flags"),
                            f.span,
                            "a TCP flag",
                        )
                        .set_help(format!("remove `{}`, or make the packet `tcp`", f.name));
                    }
                    (f.name.clone(), f.span)
                }
                PacketOpt::Type(e) | PacketOpt::Code(e) => {
                    let key = if matches!(o, PacketOpt::Type(_)) {
                        "type"
                    } else {
                        "code"
                    };
                    if !proto.starts_with("icmp") && known.contains(&proto) {
                        self.err(
                            "lbp::check::option_not_applicable",
                            format!("`{key}` is for ICMP packets"),
                            e.span,
                            "not ICMP",
                        );
                    } else if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 255, format!("an ICMP {key}").as_str());
                    }
                    (key.to_string(), e.span)
                }
                PacketOpt::Ttl(e) => {
                    if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 255, "a TTL");
                    }
                    ("ttl".to_string(), e.span)
                }
                PacketOpt::Len(e) => {
                    if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 65535, "a packet length");
                    }
                    ("len".to_string(), e.span)
                }
                PacketOpt::On(i) => {
                    self.iface_ref(i);
                    ("on".to_string(), i.span)
                }
            };
            if let Some(prev) = seen.insert(key.clone(), span) {
                self.err(
                    "lbp::check::duplicate_option",
                    format!("`{key}` is given twice"),
                    span,
                    "again here",
                )
                .also(prev, "first here")
                .set_help("keep one of them");
            }
        }
        let v = &p.verdict;
        match (v.kind.name.as_str(), &v.arg) {
            ("balance", Some(s)) => self.service_ref(s),
            ("app", Some(n)) => self.app_ref(n),
            ("app", None) => {
                let apps = list(self.apps(), "or");
                self.err(
                    "lbp::check::app_name",
                    "`app` needs the application expected to take the packet",
                    v.span,
                    "no application",
                )
                .set_help(format!("write `=> app NAME`: {apps}"));
            }
            ("forward", Some(i)) => {
                self.iface_ref(i);
            }
            ("balance", None) => {
                self.err(
                    "lbp::check::balance_service",
                    "`balance` needs the service expected to take the packet",
                    v.span,
                    "no service",
                )
                .set_help("write `=> balance SERVICE`");
            }
            ("forward", None) => {
                self.err(
                    "lbp::check::forward_dev",
                    "`forward` needs the interface the packet is expected to leave by",
                    v.span,
                    "no interface",
                )
                .set_help("write `=> forward dev INTERFACE`");
            }
            (k, _) if VERDICTS.contains(&k) => {}
            (k, _) => {
                let d = self.err(
                    "lbp::name::unknown_verdict",
                    format!("unknown verdict `{k}`"),
                    v.kind.span,
                    "not a verdict",
                );
                d.help = Some(match did_you_mean(k, VERDICTS.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None if k == "accept" => "`accept` only ends the filter; a test expects where the packet ends up: balance SERVICE, local, forward dev INTERFACE, drop, reset, expire or app NAME".into(),
                    None => "verdicts are drop, reset, local, balance SERVICE, forward dev INTERFACE, expire and app NAME".into(),
                });
            }
        }
    }

    // ---- pass 3 --------------------------------------------------------------------

    fn unused(&mut self) {
        let mut unused: Vec<(Span, String, &str)> = Vec::new();
        for (name, v) in &self.values {
            let kind = match v {
                Value::Const(_) => "const",
                Value::Set(_) => "set",
                Value::Iface(_) => continue,
            };
            if !self.used.contains(name) {
                unused.push((v.span(), name.to_string(), kind));
            }
        }
        for (name, p) in &self.pools {
            if !self.used_pools.contains(name) {
                unused.push((p.name.span, name.to_string(), "pool"));
            }
        }
        unused.sort();
        for (span, name, kind) in unused {
            let help = if kind == "pool" {
                "use it in a service (`pool NAME`), or remove it"
            } else {
                "use it in a rule, or remove it"
            };
            self.warn(
                "lbp::name::unused",
                format!("the {kind} `{name}` is never used"),
                span,
                "never used",
            )
            .set_help(help);
        }
    }

    // ---- expressions ---------------------------------------------------------------

    /// The type of a value in a statement (a literal or a const).
    fn value(&mut self, e: &'a Expr) -> Ty {
        let t = self.ty(e, Ctx::Value);
        if let ExprKind::Lit(Lit::Prefix { .. }) = e.kind {
            // lengths are checked in ty(); host bits only where a network is meant
        }
        t
    }

    /// Like `value`, without reporting (for a second look at something already checked).
    fn value_quiet(&mut self, e: &'a Expr) -> Ty {
        let n = self.diags.len();
        let t = self.ty(e, Ctx::Value);
        self.diags.truncate(n);
        t
    }

    /// Check that a value has type `want`; returns whether it does.
    fn expect_value(&mut self, e: &'a Expr, want: Ty) -> bool {
        let t = self.value(e);
        if t == want {
            return true;
        }
        if t != Ty::Unknown {
            self.mismatch(e.span, want.describe(), t);
        }
        false
    }

    /// The integer a value stands for, if it is known here.
    fn const_int(&self, e: &Expr) -> Option<u64> {
        match &e.kind {
            ExprKind::Lit(Lit::Int { value, .. }) => Some(*value),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_int(&c.value),
                _ => PROTOCOLS.iter().find(|(p, _)| p == n).map(|(_, v)| *v),
            },
            ExprKind::Paren(x) => self.const_int(x),
            _ => None,
        }
    }

    /// The value of integer arithmetic on constants, if it is exact.
    fn const_arith(&self, e: &Expr) -> Option<i128> {
        match &e.kind {
            ExprKind::Paren(x) => self.const_arith(x),
            ExprKind::Neg(x) => self.const_arith(x)?.checked_neg(),
            ExprKind::Arith(first, rest) => {
                let mut v = self.const_arith(first)?;
                for (op, x) in rest {
                    let y = self.const_arith(x)?;
                    v = match op {
                        ArithOp::Add => v.checked_add(y)?,
                        ArithOp::Sub => v.checked_sub(y)?,
                        ArithOp::Mul => v.checked_mul(y)?,
                        ArithOp::Div if y != 0 && v % y == 0 => v / y,
                        ArithOp::Div => return None,
                    };
                }
                Some(v)
            }
            _ => self.const_int(e).map(i128::from),
        }
    }

    fn const_range(&self, e: &Expr) -> Option<(u64, u64)> {
        match &e.kind {
            ExprKind::Lit(Lit::Range(a, b)) => Some((*a, *b)),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_range(&c.value),
                _ => None,
            },
            _ => self.const_int(e).map(|v| (v, v)),
        }
    }

    fn const_addr(&self, e: &Expr) -> Option<IpAddr> {
        match &e.kind {
            ExprKind::Lit(Lit::Addr(a)) => Some(*a),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_addr(&c.value),
                _ => None,
            },
            _ => None,
        }
    }

    fn port_value(&mut self, e: &Expr) -> Option<u64> {
        let v = self.const_int(e)?;
        if v > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("port {v} is above 65535"),
                e.span,
                "not a port",
            )
            .set_help("ports are 0 to 65535");
            return None;
        }
        Some(v)
    }

    /// An agent check's port: a port a server listens on, so 1 to 65535.
    fn agent_port(&mut self, e: &Expr) {
        let Some(v) = self.const_int(e) else { return };
        if v == 0 || v > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("agent port {v} is out of range"),
                e.span,
                "not 1 to 65535",
            )
            .set_help("an agent listens on a port from 1 to 65535, e.g. `agent 5555`");
        }
    }

    fn port_range(&mut self, e: &Expr) -> Option<(u64, u64)> {
        let (lo, hi) = self.const_range(e)?;
        if lo > hi {
            // already reported where the range is written
            return None;
        }
        if hi > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("port {hi} is above 65535"),
                e.span,
                "not a port range",
            )
            .set_help("ports are 0 to 65535");
            return None;
        }
        Some((lo, hi))
    }

    fn int_bounds(&mut self, e: &Expr, lo: u64, hi: u64, what: &str) {
        if let Some(v) = self.const_int(e)
            && !(lo..=hi).contains(&v)
        {
            self.err(
                "lbp::type::out_of_range",
                format!("{v} is out of range for {what}"),
                e.span,
                format!("not in {lo}..{hi}"),
            )
            .set_help(format!("{what} is between {lo} and {hi}"));
        }
    }

    fn host_bits(&mut self, e: &Expr) {
        if let ExprKind::Lit(Lit::Prefix { addr, len }) = e.kind
            && len <= Fam::of(&addr).max_len()
        {
            let net = network(addr, len);
            if net != addr {
                self.err(
                    "lbp::type::host_bits",
                    format!("the prefix {addr}/{len} has host bits set"),
                    e.span,
                    "host bits set",
                )
                .set_help(format!("did you mean `{net}/{len}`?"));
            }
        }
    }

    fn resolve_name(&mut self, name: &'a str, span: Span, ctx: Ctx) -> Ty {
        if ctx == Ctx::Weight && WEIGHT_INPUTS.contains(&name) {
            return Ty::Num;
        }
        if self.ambiguous.contains(name) {
            self.used.insert(name);
            return Ty::Unknown;
        }
        match self.values.get(name).copied() {
            Some(Value::Const(c)) => {
                self.used.insert(name);
                return self.const_ty(c);
            }
            Some(Value::Set(s)) if ctx != Ctx::Value || self.resolving.is_empty() => {
                self.used.insert(name);
                return self.set_ty_quiet(s);
            }
            Some(Value::Iface(_)) if ctx == Ctx::Filter => return Ty::Iface,
            Some(v) => {
                let what = match v {
                    Value::Iface(_) => "an interface",
                    Value::Set(_) => "a set",
                    Value::Const(_) => "a const",
                };
                let d = self.err(
                    "lbp::type::mismatch",
                    format!("`{name}` is {what}, which cannot be used here"),
                    span,
                    what.to_string(),
                );
                if ctx == Ctx::Weight {
                    d.help = Some(format!(
                        "a weight formula uses the inputs {} and consts",
                        WEIGHT_INPUTS.join(", ")
                    ));
                }
                return Ty::Unknown;
            }
            None => {}
        }
        if ctx != Ctx::Weight
            && let Some((_, _)) = PROTOCOLS.iter().find(|(p, _)| *p == name)
        {
            return Ty::Int;
        }
        if ctx == Ctx::Weight {
            let d = self.err(
                "lbp::name::unknown_input",
                format!("unknown weight input `{name}`"),
                span,
                "not an input",
            );
            d.help = Some(match did_you_mean(name, WEIGHT_INPUTS.iter().copied()) {
                Some(m) => format!(
                    "did you mean `{m}`? The inputs are {}",
                    WEIGHT_INPUTS.join(", ")
                ),
                None => format!("the inputs are {}", WEIGHT_INPUTS.join(", ")),
            });
            return Ty::Unknown;
        }
        let mut cands: Vec<&'a str> = self.values.keys().copied().collect();
        cands.sort_unstable();
        let suggestion = did_you_mean(
            name,
            cands.into_iter().chain(PROTOCOLS.iter().map(|(p, _)| *p)),
        );
        // The misspelled use most likely meant the suggestion: do not also call it unused.
        if let Some(m) = suggestion {
            self.used.insert(m);
        }
        let d = self.err(
            "lbp::name::undefined",
            format!("`{name}` is not defined"),
            span,
            "not defined",
        );
        d.help = Some(match suggestion {
            Some(m) => format!("did you mean `{m}`?"),
            None if name.contains('.') => "fields are written like `ip.src`".into(),
            None => "define it with `const` or `set`".into(),
        });
        Ty::Unknown
    }

    /// The type of a named set (its elements are checked once, where it is defined).
    fn set_ty_quiet(&mut self, s: &'a SetDef) -> Ty {
        if let Some(t) = self.set_tys.get(s.name.name.as_str()) {
            return *t;
        }
        let n = self.diags.len();
        let t = self.set_def(s);
        self.diags.truncate(n);
        self.set_tys.insert(&s.name.name, t);
        t
    }

    fn ty(&mut self, e: &'a Expr, ctx: Ctx) -> Ty {
        match &e.kind {
            ExprKind::Error => Ty::Unknown,
            ExprKind::Lit(l) => match l {
                Lit::Int { .. } => Ty::Int,
                Lit::Float(_) => Ty::Num,
                Lit::Addr(a) => Ty::Addr(Fam::of(a)),
                Lit::Prefix { addr, len } => {
                    let fam = Fam::of(addr);
                    if *len > fam.max_len() {
                        self.err(
                            "lbp::type::prefix_len",
                            format!(
                                "prefix length {len} is above {} for {}",
                                fam.max_len(),
                                fam.name()
                            ),
                            e.span,
                            "too long",
                        )
                        .set_help(format!(
                            "an {} prefix is at most /{}",
                            fam.name(),
                            fam.max_len()
                        ));
                        return Ty::Unknown;
                    }
                    Ty::Prefix(fam)
                }
                Lit::Mac(_) => Ty::Mac,
                Lit::Range(a, b) => {
                    if a > b {
                        self.err(
                            "lbp::type::empty_range",
                            format!("the range {a}..{b} is empty"),
                            e.span,
                            "empty",
                        )
                        .set_help(format!("write {b}..{a}"));
                    }
                    Ty::Range
                }
                Lit::Duration { .. } => Ty::Duration,
                Lit::Str(_) => Ty::Str,
                Lit::Bool(_) => Ty::Bool,
            },
            ExprKind::Name(n) => self.resolve_name(n, e.span, ctx),
            ExprKind::Field(name) => {
                if ctx != Ctx::Filter {
                    let d = self.err(
                        "lbp::type::field_here",
                        format!("the packet field `{name}` cannot be used here"),
                        e.span,
                        "a packet field",
                    );
                    d.help = Some(if ctx == Ctx::Weight {
                        format!(
                            "a weight formula uses the inputs {}",
                            WEIGHT_INPUTS.join(", ")
                        )
                    } else {
                        "only filter rules look at packets".into()
                    });
                    return Ty::Unknown;
                }
                match field(name) {
                    Some(f) => f.ty,
                    None => {
                        let d = self.err(
                            "lbp::name::unknown_field",
                            format!("unknown field `{name}`"),
                            e.span,
                            "not a field",
                        );
                        d.help = Some(suggest(
                            name,
                            FIELDS.iter().map(|f| f.name),
                            "see the field list in docs/language.md",
                        ));
                        Ty::Unknown
                    }
                }
            }
            ExprKind::Set(elems) => {
                if ctx == Ctx::Weight {
                    self.err(
                        "lbp::type::mismatch",
                        "a set cannot be used in a weight formula",
                        e.span,
                        "a set",
                    );
                    return Ty::Unknown;
                }
                if elems.is_empty() {
                    return Ty::Set(Elem::Unknown);
                }
                Ty::Set(self.elements(elems, None))
            }
            ExprKind::Paren(x) => self.ty(x, ctx),
            ExprKind::Not(x) => {
                let t = self.ty(x, ctx);
                if !matches!(t, Ty::Bool | Ty::Unknown) {
                    self.mismatch(x.span, "true or false after `!`", t);
                }
                Ty::Bool
            }
            ExprKind::And(xs) | ExprKind::Or(xs) => {
                let op = if matches!(e.kind, ExprKind::And(_)) {
                    "&&"
                } else {
                    "||"
                };
                for x in xs {
                    let t = self.ty(x, ctx);
                    if !matches!(t, Ty::Bool | Ty::Unknown) {
                        let d = self.mismatch(
                            x.span,
                            &format!("a condition on each side of `{op}`"),
                            t,
                        );
                        if let ExprKind::Field(name) = &x.kind {
                            d.help = Some(format!("compare it, for example `{name} == ...`"));
                        }
                    }
                }
                Ty::Bool
            }
            ExprKind::Neg(_) | ExprKind::Arith(..) if ctx != Ctx::Weight => {
                // The operands still get checked (and the names in them count as used).
                match &e.kind {
                    ExprKind::Neg(x) => {
                        self.ty(x, ctx);
                    }
                    ExprKind::Arith(first, rest) => {
                        self.ty(first, ctx);
                        for (_, x) in rest {
                            self.ty(x, ctx);
                        }
                    }
                    _ => {}
                }
                let help = match self.const_arith(e) {
                    Some(v) if v >= 0 => {
                        format!("arithmetic is not evaluated here; write the value itself: `{v}`")
                    }
                    _ => {
                        "filter rules compare fields with values; compute constants by hand".into()
                    }
                };
                self.err(
                    "lbp::type::arithmetic",
                    "arithmetic is only for weight formulas",
                    e.span,
                    "arithmetic",
                )
                .set_help(help);
                Ty::Unknown
            }
            ExprKind::Neg(x) => {
                let t = self.ty(x, ctx);
                self.numeric(x.span, t)
            }
            ExprKind::Arith(first, rest) => {
                let t = self.ty(first, ctx);
                let mut out = self.numeric(first.span, t);
                for (op, x) in rest {
                    let t = self.ty(x, ctx);
                    if self.numeric(x.span, t) == Ty::Unknown {
                        out = Ty::Unknown;
                    }
                    if *op == ArithOp::Div && const_zero(x) {
                        self.err("lbp::type::division_by_zero", "division by zero", x.span, "always zero")
                            .set_help("divide by something that cannot be zero, such as `(1 + clients)`, or remove the division");
                    }
                }
                if out == Ty::Unknown {
                    Ty::Unknown
                } else {
                    Ty::Num
                }
            }
            ExprKind::Cmp(a, op, b) => {
                if ctx == Ctx::Weight {
                    self.err(
                        "lbp::type::mismatch",
                        "a weight formula computes a number, not a comparison",
                        e.span,
                        "a comparison",
                    );
                    return Ty::Unknown;
                }
                let ta = self.ty(a, ctx);
                let tb = self.ty(b, ctx);
                self.compare(a, *op, b, ta, tb);
                Ty::Bool
            }
            ExprKind::In(a, b) => {
                if ctx == Ctx::Weight {
                    self.err(
                        "lbp::type::mismatch",
                        "a weight formula computes a number, not a membership test",
                        e.span,
                        "`in`",
                    );
                    return Ty::Unknown;
                }
                let ta = self.ty(a, ctx);
                let tb = self.ty(b, ctx);
                self.membership(a, b, ta, tb);
                Ty::Bool
            }
        }
    }

    fn numeric(&mut self, span: Span, t: Ty) -> Ty {
        match t {
            Ty::Int | Ty::Num => Ty::Num,
            Ty::Unknown => Ty::Unknown,
            t => {
                self.mismatch(span, "a number", t);
                Ty::Unknown
            }
        }
    }

    fn compare(&mut self, a: &'a Expr, op: CmpOp, b: &'a Expr, ta: Ty, tb: Ty) {
        if ta == Ty::Unknown || tb == Ty::Unknown {
            return;
        }
        // Comparisons live in filter rules, where every number is an integer: a
        // fractional constant against a field would only hide an off-by-one.
        if matches!((ta, tb), (Ty::Int, Ty::Num) | (Ty::Num, Ty::Int)) {
            let (num, int) = if ta == Ty::Num { (a, b) } else { (b, a) };
            self.err(
                "lbp::type::mismatch",
                "packet fields hold integers; this is a fractional number",
                num.span,
                "a number with a fraction",
            )
            .also(int.span, "an integer")
            .set_help("compare with an integer: `ip.ttl > 63.5` is `ip.ttl >= 64`");
            return;
        }
        let same = match (ta, tb) {
            (Ty::Addr(_), Ty::Addr(_)) => true,
            (x, y) => x == y,
        };
        if !same {
            let d = self.err(
                "lbp::type::mismatch",
                format!("cannot compare {} with {}", ta.describe(), tb.describe()),
                b.span,
                format!("this is {}", tb.describe()),
            );
            d.labels.push(crate::diag::Label {
                span: a.span,
                message: format!("this is {}", ta.describe()),
            });
            if matches!((ta, tb), (Ty::Addr(_), Ty::Prefix(_) | Ty::Set(_))) {
                d.help = Some(format!(
                    "to test membership, write `{} in {}`",
                    expr_text(a),
                    expr_text(b)
                ));
            } else if let (Ty::Int, Ty::Range | Ty::Set(_)) = (ta, tb) {
                d.help = Some(format!(
                    "to test membership, write `{} in {}`",
                    expr_text(a),
                    expr_text(b)
                ));
            }
            return;
        }
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) && !matches!(ta, Ty::Int | Ty::Num | Ty::Duration) {
            self.err(
                "lbp::type::ordering",
                format!("{} values have no order", kind_word(ta)),
                a.span.to(b.span),
                format!("`{}` on {}", op.as_str(), ta.describe()),
            )
            .set_help(if matches!(ta, Ty::Addr(_)) {
                "to test a range of addresses, use `in PREFIX`"
            } else {
                "use `==` or `!=`"
            });
            return;
        }
        // A field against a constant out of the field's range can never match.
        for (x, y) in [(a, b), (b, a)] {
            if let ExprKind::Field(name) = &x.kind
                && let Some(fi) = field(name)
                && fi.ty == Ty::Int
            {
                self.field_bound(fi, y);
            }
        }
    }

    /// A constant (or every element of a set) compared with field `fi` must fit it.
    fn field_bound(&mut self, fi: &FieldInfo, y: &'a Expr) {
        let check = |c: &mut Self, v: u64, span: Span, at_use: Option<Span>| {
            if v > fi.max {
                let d = if fi.port {
                    c.err(
                        "lbp::type::port_range",
                        format!("port {v} is above 65535"),
                        span,
                        "not a port",
                    )
                } else {
                    c.err(
                        "lbp::type::out_of_range",
                        format!("{v} is out of range for `{}`", fi.name),
                        span,
                        format!("`{}` is at most {}", fi.name, fi.max),
                    )
                };
                if let Some(u) = at_use {
                    d.labels.push(crate::diag::Label {
                        span: u,
                        message: format!("compared with `{}` here", fi.name),
                    });
                }
                d.help = Some(format!(
                    "`{}` is between 0 and {}; this can never match",
                    fi.name, fi.max
                ));
            }
        };
        match &y.kind {
            ExprKind::Set(elems) => {
                for el in elems {
                    if let Some((_, hi)) = self.const_range(el) {
                        check(self, hi, el.span, None);
                    }
                }
            }
            ExprKind::Name(n) if matches!(self.values.get(n.as_str()), Some(Value::Set(_))) => {
                if let Some(Value::Set(s)) = self.values.get(n.as_str()).copied() {
                    for el in &s.elems {
                        if let Some((_, hi)) = self.const_range(el) {
                            check(self, hi, el.span, Some(y.span));
                        }
                    }
                }
            }
            _ => {
                if let Some((_, hi)) = self.const_range(y) {
                    check(self, hi, y.span, None);
                }
            }
        }
    }

    fn membership(&mut self, a: &'a Expr, b: &'a Expr, ta: Ty, tb: Ty) {
        if ta == Ty::Unknown || tb == Ty::Unknown {
            return;
        }
        let ok = matches!(
            (ta, tb),
            (_, Ty::Set(Elem::Unknown))
                | (Ty::Addr(_), Ty::Prefix(_) | Ty::Set(Elem::Prefix))
                | (Ty::Int, Ty::Range | Ty::Set(Elem::Int))
                | (Ty::Mac, Ty::Set(Elem::Mac))
                | (Ty::Iface, Ty::Set(Elem::Iface))
                | (Ty::Str, Ty::Set(Elem::Str))
        );
        if !ok {
            let d = self.err(
                "lbp::type::mismatch",
                format!("{} cannot be in {}", ta.describe(), tb.describe()),
                b.span,
                format!("this is {}", tb.describe()),
            );
            d.labels.push(crate::diag::Label {
                span: a.span,
                message: format!("this is {}", ta.describe()),
            });
            if !matches!(tb, Ty::Set(_) | Ty::Prefix(_) | Ty::Range) {
                d.help = Some(
                    "`in` takes a set, a prefix or a range; to compare with one value, use `==`"
                        .into(),
                );
            }
            return;
        }
        if let ExprKind::Lit(Lit::Prefix { .. }) = b.kind {
            self.host_bits(b);
        }
        if let ExprKind::Field(name) = &a.kind
            && let Some(fi) = field(name)
            && fi.ty == Ty::Int
        {
            self.field_bound(fi, b);
        }
    }
}

// ---- helpers ----------------------------------------------------------------------

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

fn kind_word(t: Ty) -> &'static str {
    match t {
        Ty::Addr(_) => "address",
        Ty::Prefix(_) => "prefix",
        Ty::Mac => "MAC address",
        Ty::Bool => "boolean",
        Ty::Iface => "interface",
        Ty::Str => "string",
        Ty::Set(_) => "set",
        Ty::Range => "range",
        _ => "these",
    }
}

fn duration_us(e: &Expr) -> Option<u64> {
    match e.kind {
        ExprKind::Lit(Lit::Duration { amount, unit }) => amount.checked_mul(unit.micros()),
        _ => None,
    }
}

fn const_zero(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Lit(Lit::Int { value: 0, .. }) => true,
        ExprKind::Lit(Lit::Float(f)) => *f == 0.0,
        ExprKind::Paren(x) => const_zero(x),
        _ => false,
    }
}

/// The truth of a condition that does not depend on the packet, if it is constant.
pub fn const_truth(e: &Expr) -> Option<bool> {
    match &e.kind {
        ExprKind::Lit(Lit::Bool(b)) => Some(*b),
        ExprKind::Paren(x) => const_truth(x),
        ExprKind::Not(x) => const_truth(x).map(|b| !b),
        ExprKind::And(xs) => {
            let v: Vec<Option<bool>> = xs.iter().map(const_truth).collect();
            if v.contains(&Some(false)) {
                Some(false)
            } else if v.iter().all(|x| *x == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        ExprKind::Or(xs) => {
            let v: Vec<Option<bool>> = xs.iter().map(const_truth).collect();
            if v.contains(&Some(true)) {
                Some(true)
            } else if v.iter().all(|x| *x == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `addr` with its host bits (those beyond `len`) cleared.
pub fn network(addr: IpAddr, len: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Whether `net/len` contains `addr`.
pub fn contains(net: IpAddr, len: u32, addr: IpAddr) -> bool {
    net.is_ipv4() == addr.is_ipv4() && network(net, len) == network(addr, len)
}

fn format_expr_lit(e: &Expr) -> String {
    expr_text(e)
}

/// A short rendering of a simple expression, for help texts.
fn expr_text(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Name(n) | ExprKind::Field(n) => n.clone(),
        ExprKind::Lit(Lit::Addr(a)) => a.to_string(),
        ExprKind::Lit(Lit::Prefix { addr, len }) => format!("{addr}/{len}"),
        ExprKind::Lit(Lit::Int { value, .. }) => value.to_string(),
        ExprKind::Lit(Lit::Range(a, b)) => format!("{a}..{b}"),
        ExprKind::Set(_) => "{ ... }".into(),
        _ => "...".into(),
    }
}
