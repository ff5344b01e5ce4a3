//! Questions an editor asks about a parsed policy: which names it declares and
//! where, where each of them is used, which field or name stands at an offset,
//! and what a field means.
//!
//! It reads the tree as the parser left it (a policy with errors included) and
//! resolves names the way the checker does, by namespace: interfaces, consts and
//! sets share one, pools and services have their own. It does no I/O and never
//! panics; `lbp lsp` is its user.

use crate::ast::*;
use crate::check::{FIELDS, Fam, FieldInfo, Ty, WEIGHT_INPUTS};

/// The namespace a name is declared and looked up in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Namespace {
    /// Interfaces, consts and sets.
    Value,
    Pool,
    Service,
}

/// What an item declares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeclKind {
    Interface,
    Const,
    Set,
    Pool,
    Service,
}

impl DeclKind {
    pub fn namespace(self) -> Namespace {
        match self {
            DeclKind::Interface | DeclKind::Const | DeclKind::Set => Namespace::Value,
            DeclKind::Pool => Namespace::Pool,
            DeclKind::Service => Namespace::Service,
        }
    }
    /// The item keyword: `interface`, `const`, ...
    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Interface => "interface",
            DeclKind::Const => "const",
            DeclKind::Set => "set",
            DeclKind::Pool => "pool",
            DeclKind::Service => "service",
        }
    }
}

/// A declared name: its kind, the name's span, and the whole item's span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decl<'a> {
    pub kind: DeclKind,
    pub name: &'a str,
    pub name_span: Span,
    pub span: Span,
}

/// What stands at a place of the text: a use of a name, or a packet field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Use<'a> {
    Name(Namespace, &'a str),
    Field(&'a str),
}

/// Every name the policy declares, in source order (a name declared twice is
/// listed twice; the first is the one the checker keeps).
pub fn declarations(policy: &Policy) -> Vec<Decl<'_>> {
    policy
        .items
        .iter()
        .filter_map(|item| {
            let (kind, name, span) = match item {
                Item::Interface(x) => (DeclKind::Interface, &x.name, x.span),
                Item::Const(x) => (DeclKind::Const, &x.name, x.span),
                Item::Set(x) => (DeclKind::Set, &x.name, x.span),
                Item::Pool(x) => (DeclKind::Pool, &x.name, x.span),
                Item::Service(x) => (DeclKind::Service, &x.name, x.span),
                Item::Filter(_) | Item::Route(_) | Item::Test(_) => return None,
            };
            Some(Decl {
                kind,
                name: &name.name,
                name_span: name.span,
                span,
            })
        })
        .collect()
}

/// The declaration a name of `ns` resolves to, if any.
pub fn resolve<'a>(decls: &[Decl<'a>], ns: Namespace, name: &str) -> Option<Decl<'a>> {
    decls
        .iter()
        .find(|d| d.kind.namespace() == ns && d.name == name)
        .copied()
}

/// Every use of a name or a field, in source order: names where the grammar
/// allows one of a namespace (a bare name in an expression is a value; a weight
/// input in a weight formula is not a name), fields in conditions and in
/// `balance hash(...)`.
pub fn uses(policy: &Policy) -> Vec<(Use<'_>, Span)> {
    let mut out = Vec::new();
    for item in &policy.items {
        Walk { out: &mut out }.item(item);
    }
    out
}

/// The use or declaration at byte `offset` (a span's end counts, so that the
/// cursor just after a name finds it).
pub fn at<'a>(decls: &[Decl<'a>], uses: &[(Use<'a>, Span)], offset: usize) -> Option<Use<'a>> {
    let inside = |s: Span| s.start <= offset && offset <= s.end;
    decls
        .iter()
        .find(|d| inside(d.name_span))
        .map(|d| Use::Name(d.kind.namespace(), d.name))
        .or_else(|| uses.iter().find(|(_, s)| inside(*s)).map(|(u, _)| *u))
}

struct Walk<'o, 'a> {
    out: &'o mut Vec<(Use<'a>, Span)>,
}

impl<'a> Walk<'_, 'a> {
    fn name(&mut self, ns: Namespace, id: &'a Ident) {
        self.out.push((Use::Name(ns, &id.name), id.span));
    }

    fn item(&mut self, item: &'a Item) {
        match item {
            Item::Interface(i) => {
                for s in &i.stmts {
                    match &s.kind {
                        IfaceStmtKind::Address(v) => v.iter().for_each(|e| self.expr(e, false)),
                        IfaceStmtKind::Mac(e) | IfaceStmtKind::Mtu(e) => self.expr(e, false),
                    }
                }
            }
            Item::Const(c) => self.expr(&c.value, false),
            Item::Set(s) => s.elems.iter().for_each(|e| self.expr(e, false)),
            Item::Pool(p) => {
                for s in &p.stmts {
                    match &s.kind {
                        PoolStmtKind::Backend(b) => {
                            self.expr(&b.addr, false);
                            b.opts.iter().for_each(|o| self.expr(&o.value, false));
                        }
                        PoolStmtKind::Health(h) => {
                            h.opts.iter().for_each(|o| self.expr(&o.value, false))
                        }
                        PoolStmtKind::Weight(e) => self.expr(e, true),
                    }
                }
            }
            Item::Service(s) => {
                for st in &s.stmts {
                    match &st.kind {
                        ServiceStmtKind::Vip { addr, ports, .. } => {
                            self.expr(addr, false);
                            ports.iter().for_each(|e| self.expr(e, false));
                        }
                        ServiceStmtKind::Pool(p) => self.name(Namespace::Pool, p),
                        ServiceStmtKind::Balance(Balance::Hash { fields, .. }) => {
                            for f in fields {
                                self.out.push((Use::Field(&f.name), f.span));
                            }
                        }
                        ServiceStmtKind::Mode {
                            to_port: Some(e), ..
                        } => self.expr(e, false),
                        _ => {}
                    }
                }
            }
            Item::Filter(f) => {
                for r in &f.rules {
                    self.expr(&r.cond, false);
                    if let Some(s) = &r.action.service {
                        self.name(Namespace::Service, s);
                    }
                }
            }
            Item::Route(r) => {
                self.expr(&r.prefix, false);
                if let Some(v) = &r.via {
                    self.expr(v, false);
                }
                if let Some(d) = &r.dev {
                    self.name(Namespace::Value, d);
                }
            }
            Item::Test(t) => {
                for p in &t.packets {
                    for end in [&p.src, &p.dst] {
                        self.expr(&end.addr, false);
                        if let Some(port) = &end.port {
                            self.expr(port, false);
                        }
                    }
                    for o in &p.opts {
                        match o {
                            PacketOpt::Type(e)
                            | PacketOpt::Code(e)
                            | PacketOpt::Ttl(e)
                            | PacketOpt::Len(e) => self.expr(e, false),
                            PacketOpt::On(i) => self.name(Namespace::Value, i),
                            PacketOpt::Flag(_) => {}
                        }
                    }
                    if let Some(arg) = &p.verdict.arg {
                        match p.verdict.kind.name.as_str() {
                            "balance" => self.name(Namespace::Service, arg),
                            "forward" => self.name(Namespace::Value, arg),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// An expression's names and fields. The parser bounds nesting, so the
    /// recursion is bounded too.
    fn expr(&mut self, e: &'a Expr, weight: bool) {
        match &e.kind {
            ExprKind::Name(n) if !(weight && WEIGHT_INPUTS.contains(&n.as_str())) => {
                self.out.push((Use::Name(Namespace::Value, n), e.span));
            }
            ExprKind::Field(f) => self.out.push((Use::Field(f), e.span)),
            ExprKind::Set(v) | ExprKind::And(v) | ExprKind::Or(v) => {
                v.iter().for_each(|x| self.expr(x, weight))
            }
            ExprKind::Paren(x) | ExprKind::Not(x) | ExprKind::Neg(x) => self.expr(x, weight),
            ExprKind::Cmp(a, _, b) | ExprKind::In(a, b) => {
                self.expr(a, weight);
                self.expr(b, weight);
            }
            ExprKind::Arith(first, rest) => {
                self.expr(first, weight);
                rest.iter().for_each(|(_, x)| self.expr(x, weight));
            }
            ExprKind::Lit(_) | ExprKind::Name(_) | ExprKind::Error => {}
        }
    }
}

/// A field's meaning, one line.
pub fn field_meaning(name: &str) -> Option<&'static str> {
    crate::check::field(name).map(|f| f.meaning)
}

/// A field's type as the language reference names it, with its values:
/// `port (0..65535)`, `address (either family)`, `bool`.
pub fn field_type(f: &FieldInfo) -> String {
    let name = match f.ty {
        Ty::Int if f.port => "port",
        Ty::Int => "integer",
        Ty::Bool => "bool",
        Ty::Mac => "MAC address",
        Ty::Iface => "interface",
        Ty::Addr(Fam::Any) => "address (either family)",
        Ty::Addr(_) => "address",
        _ => "value",
    };
    if f.ty == Ty::Int {
        format!("{name} (0..{})", f.max)
    } else {
        name.to_string()
    }
}

/// The words before the dot of the fields: `in`, `pkt`, `eth`, ...
pub fn field_groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = FIELDS
        .iter()
        .filter_map(|f| f.name.split_once('.').map(|(g, _)| g))
        .collect();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_meaning_and_no_other_name_has_one() {
        for f in FIELDS {
            let m = field_meaning(f.name).unwrap_or_default();
            assert!(m.len() > 10, "{} has no meaning: {m:?}", f.name);
        }
        assert_eq!(field_meaning("tcp.flags"), None);
    }

    #[test]
    fn uses_and_declarations() {
        let src = "interface eth0 { address 198.18.0.1/24 }\nset web = { 80, 443 }\npool p { backend 198.18.0.2 weight w\n weight = cpu * w }\nconst w = 3\nservice s { vip 198.18.0.10 tcp port web pool p }\nfilter { tcp.dport in web => balance s }\nroute 0.0.0.0/0 via 198.18.0.254 dev eth0\n";
        let parsed = crate::parse::parse(src);
        let decls = declarations(&parsed.policy);
        let names: Vec<&str> = decls.iter().map(|d| d.name).collect();
        assert_eq!(names, ["eth0", "web", "p", "w", "s"]);
        let uses = uses(&parsed.policy);
        let text = |s: Span| &src[s.start..s.end];
        let found: Vec<(Use, &str)> = uses.iter().map(|(u, s)| (*u, text(*s))).collect();
        assert_eq!(
            found,
            [
                (Use::Name(Namespace::Value, "w"), "w"),
                (Use::Name(Namespace::Value, "w"), "w"),
                (Use::Name(Namespace::Value, "web"), "web"),
                (Use::Name(Namespace::Pool, "p"), "p"),
                (Use::Field("tcp.dport"), "tcp.dport"),
                (Use::Name(Namespace::Value, "web"), "web"),
                (Use::Name(Namespace::Service, "s"), "s"),
                (Use::Name(Namespace::Value, "eth0"), "eth0"),
            ]
        );
        let web = src.find("in web").unwrap() + 4;
        assert_eq!(
            at(&decls, &uses, web),
            Some(Use::Name(Namespace::Value, "web"))
        );
        let d = resolve(&decls, Namespace::Value, "web").unwrap();
        assert_eq!(text(d.name_span), "web");
        assert_eq!(d.kind, DeclKind::Set);
        assert_eq!(
            field_groups(),
            ["in", "pkt", "eth", "ip", "tcp", "udp", "icmp", "l4"]
        );
    }
}
