//! Expressions: the type of every expression in its context (a filter
//! condition, a weight formula, or a value in a statement), names resolved to
//! consts, sets, interfaces, protocol names or weight inputs; and the rules of
//! comparisons and membership tests: operands of one type, an order only on
//! numbers, and constants within the range of the field they are compared
//! with.

use super::checker::{Checker, Ctx, Value};
use super::types::{Elem, FIELDS, Fam, FieldInfo, PROTOCOLS, Ty, WEIGHT_INPUTS, field};
use super::values::{const_zero, expr_text};
use crate::ast::{ArithOp, CmpOp, Expr, ExprKind, Lit, SetDef, Span};
use crate::diag::{did_you_mean, suggest};

impl<'a> Checker<'a> {
    /// The type of a value in a statement (a literal or a const).
    pub(super) fn value(&mut self, e: &'a Expr) -> Ty {
        let t = self.ty(e, Ctx::Value);
        if let ExprKind::Lit(Lit::Prefix { .. }) = e.kind {
            // lengths are checked in ty(); host bits only where a network is meant
        }
        t
    }

    /// Like `value`, without reporting (for a second look at something already checked).
    pub(super) fn value_quiet(&mut self, e: &'a Expr) -> Ty {
        let n = self.diags.len();
        let t = self.ty(e, Ctx::Value);
        self.diags.truncate(n);
        t
    }

    /// Check that a value has type `want`; returns whether it does.
    pub(super) fn expect_value(&mut self, e: &'a Expr, want: Ty) -> bool {
        let t = self.value(e);
        if t == want {
            return true;
        }
        if t != Ty::Unknown {
            self.mismatch(e.span, want.describe(), t);
        }
        false
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

    pub(super) fn ty(&mut self, e: &'a Expr, ctx: Ctx) -> Ty {
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
