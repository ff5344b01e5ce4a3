//! Expressions: precedence climbing over a flat row (from pest or from the
//! filter rule reader), operands and literals (addresses, prefixes, integers,
//! strings).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{BP_NEG, BP_NOT, Driver, P, Rule, fast};
use crate::ast::*;
use crate::diag::Diagnostic;

impl<'s> Driver<'s> {
    pub(super) fn expr(&mut self, p: P<'_>, base: usize) -> Expr {
        let span = self.span(&p, base);
        let rule = p.as_rule();
        let kind = match rule {
            Rule::value => {
                return self.expr(p.into_inner().next().expect("value has a child"), base);
            }
            Rule::expr => {
                let mut it = p.into_inner().peekable();
                return self.climb(&mut it, 0, base);
            }
            Rule::paren => ExprKind::Paren(Box::new(
                self.expr(p.into_inner().next().expect("inner"), base),
            )),
            Rule::set_lit => ExprKind::Set(p.into_inner().map(|e| self.expr(e, base)).collect()),
            Rule::ident => ExprKind::Name(p.as_str().to_string()),
            Rule::field => ExprKind::Field(p.as_str().to_string()),
            r => match self.literal(r, p.as_str(), span) {
                Some(l) => ExprKind::Lit(l),
                None => ExprKind::Error,
            },
        };
        Expr { kind, span }
    }

    /// Precedence climbing over the flat operator/operand row of an `expr`.
    /// Binding powers, loosest first: `||`, `&&`, prefix `!`, comparisons and `in`,
    /// `+ -`, `* /`, prefix `-`. Chains of one `&&`, `||` or arithmetic level are
    /// flattened, so a long chain does not nest. Recursion depth is bounded by the
    /// number of levels and of prefix operators, which `scan` limits.
    pub(super) fn climb<'i, T: Flat<'i>>(
        &mut self,
        it: &mut std::iter::Peekable<impl Iterator<Item = T>>,
        min_bp: u8,
        base: usize,
    ) -> Expr {
        let first = it
            .next()
            .expect("an expr starts with an operand or a prefix operator");
        let start = base + first.start();
        let mut lhs = match first.rule() {
            Rule::not_op | Rule::neg_op => {
                let is_not = first.rule() == Rule::not_op;
                let operand = self.climb(it, if is_not { BP_NOT } else { BP_NEG }, base);
                let span = Span::new(start, operand.span.end);
                let kind = if is_not {
                    ExprKind::Not(Box::new(operand))
                } else {
                    ExprKind::Neg(Box::new(operand))
                };
                Expr { kind, span }
            }
            _ => first.operand(self, base),
        };
        while let Some(op) = it.peek() {
            let (rule, text) = (op.rule(), op.text());
            let op_span = (op.start(), op.end());
            let (l_bp, r_bp) = infix_bp(rule, text);
            if l_bp < min_bp {
                break;
            }
            it.next();
            let rhs = self.climb(it, r_bp, base);
            let span = Span::new(lhs.span.start, rhs.span.end);
            let kind = match rule {
                Rule::or_op | Rule::and_op => {
                    let and = rule == Rule::and_op;
                    match lhs.kind {
                        ExprKind::And(mut xs) if and => {
                            xs.push(rhs);
                            ExprKind::And(xs)
                        }
                        ExprKind::Or(mut xs) if !and => {
                            xs.push(rhs);
                            ExprKind::Or(xs)
                        }
                        k => {
                            let l = Expr {
                                kind: k,
                                span: lhs.span,
                            };
                            if and {
                                ExprKind::And(vec![l, rhs])
                            } else {
                                ExprKind::Or(vec![l, rhs])
                            }
                        }
                    }
                }
                Rule::add_op | Rule::mul_op => {
                    let op = arith_op(text);
                    let level = |o: ArithOp| matches!(o, ArithOp::Mul | ArithOp::Div);
                    match lhs.kind {
                        ExprKind::Arith(f, mut rest)
                            if rest.first().is_some_and(|(o, _)| level(*o) == level(op)) =>
                        {
                            rest.push((op, rhs));
                            ExprKind::Arith(f, rest)
                        }
                        k => ExprKind::Arith(
                            Box::new(Expr {
                                kind: k,
                                span: lhs.span,
                            }),
                            vec![(op, rhs)],
                        ),
                    }
                }
                _ => {
                    // `a == b == c` reads as a chain in mathematics but would mean
                    // `(a == b) == c` here: refuse it rather than guess.
                    if matches!(lhs.kind, ExprKind::Cmp(..) | ExprKind::In(..)) {
                        self.diags.push(
                            Diagnostic::error("lbp::parse::chained_comparison", "comparisons do not chain")
                                .label(Span::new(base + op_span.0, base + op_span.1), "a second comparison")
                                .label(lhs.span, "already a comparison")
                                .help("join two comparisons with `&&`, or add parentheses to say which comes first"),
                        );
                    }
                    if rule == Rule::k_in {
                        ExprKind::In(Box::new(lhs), Box::new(rhs))
                    } else {
                        ExprKind::Cmp(Box::new(lhs), cmp_op(text), Box::new(rhs))
                    }
                }
            };
            lhs = Expr { kind, span };
        }
        lhs
    }

    /// A literal token (`rule` one of the literal rules, `s` its text).
    pub(super) fn literal(&mut self, rule: Rule, s: &str, span: Span) -> Option<Lit> {
        match rule {
            Rule::num_tok | Rule::hex_tok => self.classify(s, span),
            // The text with its quotes; what is between them is `str_inner`.
            Rule::string => Some(Lit::Str(unescape(&s[1..s.len() - 1]))),
            Rule::boolean => Some(Lit::Bool(s == "true")),
            Rule::ipv4 | Rule::ipv6 => Some(Lit::Addr(self.addr(s, span)?)),
            r => unreachable!("not a literal rule: {r:?}"),
        }
    }

    /// Decide what a number-like token is: an integer (`42`, `0x2a`), a range
    /// (`1024..65535`), a duration (`300ms`), a float (`0.5`), an address or prefix
    /// of either family, or a MAC address.
    pub(super) fn classify(&mut self, s: &str, span: Span) -> Option<Lit> {
        if s.contains(':') {
            if let Some((a, l)) = s.split_once('/') {
                return Some(Lit::Prefix {
                    addr: self.addr(a, span)?,
                    len: self.prefix_len(l, span)?,
                });
            }
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                let mut m = [0u8; 6];
                for (i, part) in parts.iter().enumerate() {
                    m[i] = u8::from_str_radix(part, 16).ok()?;
                }
                return Some(Lit::Mac(m));
            }
            return Some(Lit::Addr(self.addr(s, span)?));
        }
        if let Some((a, b)) = s.split_once("..") {
            return Some(Lit::Range(self.int(a, span)?.0, self.int(b, span)?.0));
        }
        if let Some((a, l)) = s.split_once('/') {
            return Some(Lit::Prefix {
                addr: self.addr(a, span)?,
                len: self.prefix_len(l, span)?,
            });
        }
        match s.matches('.').count() {
            0 => {}
            1 => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => return Some(Lit::Float(f)),
                _ => {
                    self.bad_literal(
                        "lbp::parse::bad_number",
                        format!("`{s}` is not a number"),
                        span,
                        "a number is written like `42`, `0x2a` or `0.5`",
                    );
                    return None;
                }
            },
            _ => return Some(Lit::Addr(self.addr(s, span)?)),
        }
        if s.starts_with("0x") {
            let (value, hex_digits) = self.int(s, span)?;
            return Some(Lit::Int { value, hex_digits });
        }
        let n = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if n == s.len() {
            let (value, hex_digits) = self.int(s, span)?;
            return Some(Lit::Int { value, hex_digits });
        }
        let unit = match &s[n..] {
            "us" => TimeUnit::Us,
            "ms" => TimeUnit::Ms,
            "s" => TimeUnit::S,
            "m" => TimeUnit::M,
            "h" => TimeUnit::H,
            other => {
                self.bad_literal(
                    "lbp::parse::bad_number",
                    format!("`{s}` is not a number or a duration"),
                    span,
                    &format!("`{other}` is not a unit; durations are written like `300ms`, `1s`, `5m` (units us, ms, s, m, h)"),
                );
                return None;
            }
        };
        let amount = self.int(&s[..n], span)?.0;
        if amount.checked_mul(unit.micros()).is_none() {
            self.bad_literal(
                "lbp::parse::bad_number",
                "duration too long",
                span,
                "durations are at most about 584 000 years",
            );
            return None;
        }
        Some(Lit::Duration { amount, unit })
    }

    pub(super) fn prefix_len(&mut self, l: &str, span: Span) -> Option<u32> {
        match l.parse::<u32>() {
            Ok(len) => Some(len),
            Err(_) => {
                self.bad_literal(
                    "lbp::parse::bad_number",
                    "prefix length too large",
                    span,
                    "a prefix length is at most 32 (IPv4) or 128 (IPv6)",
                );
                None
            }
        }
    }

    pub(super) fn int(&mut self, s: &str, span: Span) -> Option<(u64, u8)> {
        let r = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).map(|v| (v, h.len().min(255) as u8)),
            None => s.parse::<u64>().map(|v| (v, 0)),
        };
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.bad_literal(
                    "lbp::parse::bad_number",
                    "integer too large",
                    span,
                    "integers are at most 18446744073709551615",
                );
                None
            }
        }
    }

    pub(super) fn addr(&mut self, s: &str, span: Span) -> Option<IpAddr> {
        if s.contains(':') {
            match s.parse::<Ipv6Addr>() {
                Ok(a) => Some(IpAddr::V6(a)),
                Err(_) => {
                    self.bad_literal("lbp::parse::bad_address", format!("`{s}` is not an IPv6 address"), span, "an IPv6 address has eight groups of up to four hex digits; `::` stands for a run of zero groups, once");
                    None
                }
            }
        } else {
            match s.parse::<Ipv4Addr>() {
                Ok(a) => Some(IpAddr::V4(a)),
                Err(_) => {
                    self.bad_literal(
                        "lbp::parse::bad_address",
                        format!("`{s}` is not an IPv4 address"),
                        span,
                        "an IPv4 address is four numbers from 0 to 255, without leading zeros",
                    );
                    None
                }
            }
        }
    }

    pub(super) fn bad_literal(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Span,
        help: &str,
    ) {
        self.diags
            .push(Diagnostic::error(code, msg).label(span, "here").help(help));
    }
}

/// An element of a flat expression row, as [`Driver::climb`] reads it: a pest pair,
/// or a token of the filter rule reader ([`fast::Node`]).
pub(super) trait Flat<'i> {
    fn rule(&self) -> Rule;
    fn text(&self) -> &'i str;
    /// Start and end, relative to the `base` given to `climb`.
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// The operand this element is.
    fn operand(self, d: &mut Driver<'_>, base: usize) -> Expr;
}

impl<'i> Flat<'i> for P<'i> {
    fn rule(&self) -> Rule {
        self.as_rule()
    }
    fn text(&self) -> &'i str {
        self.as_str()
    }
    fn start(&self) -> usize {
        self.as_span().start()
    }
    fn end(&self) -> usize {
        self.as_span().end()
    }
    fn operand(self, d: &mut Driver<'_>, base: usize) -> Expr {
        d.expr(self, base)
    }
}

impl<'i> Flat<'i> for fast::Node<'i> {
    fn rule(&self) -> Rule {
        self.rule
    }
    fn text(&self) -> &'i str {
        self.text
    }
    fn start(&self) -> usize {
        self.start
    }
    fn end(&self) -> usize {
        self.end
    }
    /// What [`Driver::expr`] makes of the pair this node stands for.
    fn operand(self, d: &mut Driver<'_>, _base: usize) -> Expr {
        let span = Span::new(self.start, d.trim_end(self.start, self.end));
        let kind = match self.rule {
            Rule::paren => ExprKind::Paren(Box::new(d.climb(
                &mut self.kids.into_iter().peekable(),
                0,
                0,
            ))),
            Rule::set_lit => {
                ExprKind::Set(self.kids.into_iter().map(|e| e.operand(d, 0)).collect())
            }
            Rule::ident => ExprKind::Name(self.text.to_string()),
            Rule::field => ExprKind::Field(self.text.to_string()),
            r => match d.literal(r, self.text, span) {
                Some(l) => ExprKind::Lit(l),
                None => ExprKind::Error,
            },
        };
        Expr { kind, span }
    }
}

/// (left, right) binding powers of an infix operator; left-associative.
pub(super) fn infix_bp(rule: Rule, text: &str) -> (u8, u8) {
    match rule {
        Rule::or_op => (1, 2),
        Rule::and_op => (3, 4),
        Rule::cmp_op | Rule::k_in => (7, 8),
        Rule::add_op => (9, 10),
        Rule::mul_op => (11, 12),
        _ => unreachable!("not an infix operator: {rule:?} `{text}`"),
    }
}

pub(super) fn cmp_op(s: &str) -> CmpOp {
    match s {
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

pub(super) fn arith_op(s: &str) -> ArithOp {
    match s {
        "+" => ArithOp::Add,
        "-" => ArithOp::Sub,
        "*" => ArithOp::Mul,
        _ => ArithOp::Div,
    }
}

pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c) => out.push(c),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}
