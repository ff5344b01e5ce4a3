//! The canonical formatter behind `lbp fmt`.
//!
//! [`format_source`] parses a policy and prints its syntax tree back in the one
//! canonical layout: 4-space indentation, one statement per line, single spaces
//! between tokens, literals in their canonical spelling, short blocks and sets on
//! one line, and the `=>` of consecutive filter rules aligned. Every comment is
//! kept: a comment alone on its line stays on its own line, before whatever followed
//! it; a comment after code stays at the end of that line; a comment from the middle
//! of a statement moves to the line before the statement. Blank lines between
//! statements and items are kept, collapsed to one. The output parses to the same
//! tree as the input (spans aside), and formatting it again changes nothing. The
//! module does no I/O and never panics on a source that parsed.

use crate::Diagnostic;
use crate::ast::*;
use std::net::IpAddr;

/// A block or named set prints on one line only if that line fits in this many
/// columns.
const MAX_WIDTH: usize = 100;
/// A filter rule whose condition is wider than this is left out of `=>` alignment.
const MAX_ALIGNED_COND: usize = 60;
const INDENT: &str = "    ";

/// Format a policy source canonically. Refuses (returns the diagnostics) when the
/// source has syntax errors.
pub fn format_source(src: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = crate::parse::parse(src);
    if !parsed.diagnostics.is_empty() {
        return Err(parsed.diagnostics);
    }
    let mut comments = parsed.comments;
    comments.sort();
    let mut p = Printer {
        src,
        comments: &comments,
        next: 0,
        prev_end: 0,
        first: true,
        out: String::new(),
    };
    for item in &parsed.policy.items {
        p.item(item);
    }
    p.top_level_comments(usize::MAX);
    Ok(p.out)
}

/// What one output line holds (before indentation and a trailing comment).
enum Body {
    Comment(String),
    Code(String),
    /// A filter rule, kept in two parts so that runs of rules can align their `=>`.
    Rule {
        cond: String,
        action: String,
    },
}

impl Body {
    fn one_line(&self) -> String {
        match self {
            Body::Comment(t) | Body::Code(t) => t.clone(),
            Body::Rule { cond, action } => format!("{cond} => {action}"),
        }
    }
}

struct Line {
    /// A blank line goes before this one.
    blank: bool,
    body: Body,
    trailing: Option<String>,
}

/// Walks the tree in source order. Before a node that starts a line is printed,
/// every comment that starts before the node's end and is not printed yet is
/// printed on its own line; after the node, a comment that follows it on the same
/// source line becomes its trailing comment.
struct Printer<'a> {
    src: &'a str,
    /// All comment spans, sorted.
    comments: &'a [Span],
    /// Index of the first comment not printed yet.
    next: usize,
    /// Source offset of the end of the last thing printed (code or comment); the
    /// source between it and the next line's start tells whether a blank line
    /// separated them.
    prev_end: usize,
    /// The next line is the first of the file or of a block: no blank line before it.
    first: bool,
    out: String,
}

impl Printer<'_> {
    // ---- items -------------------------------------------------------------------

    fn item(&mut self, item: &Item) {
        match item {
            Item::Const(c) => {
                let text = format!("const {} = {}", c.name.name, self.expr(&c.value));
                self.simple_item(c.span, &text);
            }
            Item::Route(r) => {
                let mut text = format!("route {}", self.expr(&r.prefix));
                if let Some(via) = &r.via {
                    text.push_str(" via ");
                    text.push_str(&self.expr(via));
                }
                if let Some(dev) = &r.dev {
                    text.push_str(" dev ");
                    text.push_str(&dev.name);
                }
                self.simple_item(r.span, &text);
            }
            Item::Set(s) => self.set_item(s),
            Item::Interface(i) => {
                let entries = i
                    .stmts
                    .iter()
                    .map(|s| (s.span, Body::Code(self.iface_stmt(s))))
                    .collect();
                let open = self.open_brace_after(i.name.span.end);
                self.block(i.span, format!("interface {}", i.name.name), open, entries);
            }
            Item::Pool(p) => {
                let entries = p
                    .stmts
                    .iter()
                    .map(|s| (s.span, Body::Code(self.pool_stmt(s))))
                    .collect();
                let open = self.open_brace_after(p.name.span.end);
                self.block(p.span, format!("pool {}", p.name.name), open, entries);
            }
            Item::Service(s) => {
                let entries = s
                    .stmts
                    .iter()
                    .map(|st| (st.span, Body::Code(self.service_stmt(st))))
                    .collect();
                let open = self.open_brace_after(s.name.span.end);
                self.block(s.span, format!("service {}", s.name.name), open, entries);
            }
            Item::Filter(f) => {
                let entries = f
                    .rules
                    .iter()
                    .map(|r| {
                        (
                            r.span,
                            Body::Rule {
                                cond: self.expr(&r.cond),
                                action: action(&r.action),
                            },
                        )
                    })
                    .collect();
                let open = self.open_brace_after(f.span.start + "filter".len());
                self.block(f.span, "filter".to_string(), open, entries);
            }
            Item::Test(t) => {
                let entries = t
                    .packets
                    .iter()
                    .map(|p| (p.span, Body::Code(self.packet(p))))
                    .collect();
                let open = self.open_brace_after(t.name_span.end);
                self.block(t.span, format!("test {}", quote(&t.name)), open, entries);
            }
        }
    }

    /// An item printed on one line: `const`, `route`, a short `set`.
    fn simple_item(&mut self, span: Span, text: &str) {
        let span = self.code_span(span);
        self.top_level_comments(span.end);
        let blank = self.blank_before(span.start);
        self.prev_end = self.prev_end.max(span.end);
        let trailing = self.trailing(span.end);
        self.emit(0, blank, text, trailing);
    }

    fn set_item(&mut self, s: &SetDef) {
        let mut head = format!("set {}", s.name.name);
        if let Some(ty) = &s.ty {
            head.push_str(": ");
            head.push_str(&ty.name);
        }
        head.push_str(" =");
        let elems: Vec<String> = s.elems.iter().map(|e| self.expr(e)).collect();
        let one_line = format!("{head} {}", inline_set(&elems));
        let entries = s
            .elems
            .iter()
            .zip(elems)
            .map(|(e, t)| (e.span, Body::Code(format!("{t},"))))
            .collect();
        let open = s.body.start + 1;
        let close = s.body.end.saturating_sub(1).max(open);
        self.braced(s.span, head, open, close, Some(one_line), entries);
    }

    /// A block item: `HEAD { STMT... }`.
    fn block(&mut self, span: Span, head: String, open: usize, entries: Vec<(Span, Body)>) {
        let one_line = match entries.as_slice() {
            [] => Some(format!("{head} {{}}")),
            [(_, b)] => Some(format!("{head} {{ {} }}", b.one_line())),
            _ => None,
        };
        let close = span.end.saturating_sub(1).max(open);
        self.braced(span, head, open, close, one_line, entries);
    }

    /// Print `HEAD { ... }`: as `one_line` if given, it fits and no comment is
    /// inside the braces; otherwise the head, one entry per line, and `}`. `open` is
    /// the offset just after `{`, `close` the offset of `}`.
    fn braced(
        &mut self,
        span: Span,
        head: String,
        open: usize,
        close: usize,
        one_line: Option<String>,
        entries: Vec<(Span, Body)>,
    ) {
        let span = self.code_span(span);
        // Comments between the item's start and its `{` move before the item.
        self.top_level_comments(open);
        let blank = self.blank_before(span.start);
        // Every comment before `open` is printed: the next one is the first after.
        let comment_inside = self
            .comments
            .get(self.next)
            .is_some_and(|c| c.start < close);
        if let Some(line) = one_line.filter(|l| width(l) <= MAX_WIDTH && !comment_inside) {
            self.prev_end = self.prev_end.max(span.end);
            let trailing = self.trailing(span.end);
            self.emit(0, blank, &line, trailing);
            return;
        }
        self.prev_end = self.prev_end.max(open);
        let trailing = self.trailing(open);
        self.emit(0, blank, &format!("{head} {{"), trailing);
        let lines = self.body(entries, close);
        self.emit_lines(1, &lines);
        self.prev_end = self.prev_end.max(span.end);
        let trailing = self.trailing(span.end);
        self.emit(0, false, "}", trailing);
    }

    /// The lines of a block body: each entry with the comments before it, then the
    /// comments before the closing `}`.
    fn body(&mut self, entries: Vec<(Span, Body)>, close: usize) -> Vec<Line> {
        self.first = true;
        let mut lines = Vec::new();
        for (span, body) in entries {
            let span = self.code_span(span);
            self.own_line_comments(span.end, &mut lines);
            let blank = self.blank_before(span.start);
            self.prev_end = self.prev_end.max(span.end);
            let trailing = self.trailing(span.end);
            lines.push(Line {
                blank,
                body,
                trailing,
            });
            self.first = false;
        }
        self.own_line_comments(close, &mut lines);
        self.first = false;
        lines
    }

    // ---- comments and blank lines ------------------------------------------------

    /// Every comment not printed yet that starts before `limit`, as own-line lines.
    fn own_line_comments(&mut self, limit: usize, lines: &mut Vec<Line>) {
        while let Some(&c) = self.comments.get(self.next) {
            if c.start >= limit {
                break;
            }
            let blank = self.blank_before(c.start);
            lines.push(Line {
                blank,
                body: Body::Comment(self.comment_text(c)),
                trailing: None,
            });
            self.next += 1;
            self.prev_end = self.prev_end.max(c.end);
            self.first = false;
        }
    }

    fn top_level_comments(&mut self, limit: usize) {
        let mut lines = Vec::new();
        self.own_line_comments(limit, &mut lines);
        self.emit_lines(0, &lines);
    }

    /// The next comment, if it follows `end` on the same line with nothing but
    /// spaces (or a list's comma) between.
    fn trailing(&mut self, end: usize) -> Option<String> {
        let c = *self.comments.get(self.next)?;
        let gap = self.src.get(end..c.start)?;
        if !gap.bytes().all(|b| matches!(b, b' ' | b'\t' | b',')) {
            return None;
        }
        self.next += 1;
        self.prev_end = self.prev_end.max(c.end);
        Some(self.comment_text(c))
    }

    fn comment_text(&self, c: Span) -> String {
        self.src
            .get(c.start..c.end)
            .unwrap_or("#")
            .trim_end()
            .to_string()
    }

    /// `span` without the whitespace and comments at its end. (The parser's spans
    /// of rules that end in an optional or repeated part take in the trivia after
    /// them: `const a = 1  # c` spans up to the end of the line.)
    fn code_span(&self, span: Span) -> Span {
        let mut end = span.end.min(self.src.len());
        loop {
            let trimmed = match self.src.get(span.start..end) {
                Some(s) => span.start + s.trim_end_matches([' ', '\t', '\r', '\n']).len(),
                None => return span,
            };
            // If that is inside a comment, the comment is trivia too: code cannot
            // end inside a comment.
            let i = self.comments.partition_point(|c| c.start < trimmed);
            match i.checked_sub(1).map(|i| self.comments[i]) {
                Some(c) if c.start >= span.start && c.end >= trimmed => end = c.start,
                _ => return Span::new(span.start, trimmed),
            }
        }
    }

    /// Whether the source has a blank line between the last thing printed and `start`.
    fn blank_before(&self, start: usize) -> bool {
        if self.first || start <= self.prev_end {
            return false;
        }
        let mut newline = false;
        for b in self
            .src
            .as_bytes()
            .get(self.prev_end..start)
            .unwrap_or_default()
        {
            match b {
                b'\n' if newline => return true,
                b'\n' => newline = true,
                b' ' | b'\t' | b'\r' => {}
                _ => newline = false,
            }
        }
        false
    }

    /// The offset just after the `{` that opens a block, searching from `from` (the
    /// end of the block's name) past whitespace and comments.
    fn open_brace_after(&self, from: usize) -> usize {
        let b = self.src.as_bytes();
        let mut i = from;
        while i < b.len() {
            match b[i] {
                b'{' => return i + 1,
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        from
    }

    // ---- output ------------------------------------------------------------------

    fn emit(&mut self, depth: usize, blank: bool, text: &str, trailing: Option<String>) {
        if blank && !self.out.is_empty() {
            self.out.push('\n');
        }
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        if let Some(t) = trailing {
            self.out.push_str("  ");
            self.out.push_str(&t);
        }
        self.out.push('\n');
        self.first = false;
    }

    /// Emit lines, aligning the `=>` of each run of filter rules (rules not
    /// separated by a blank line or a comment line).
    fn emit_lines(&mut self, depth: usize, lines: &[Line]) {
        let mut i = 0;
        while i < lines.len() {
            let mut j = i + 1;
            if matches!(lines[i].body, Body::Rule { .. }) {
                while j < lines.len()
                    && !lines[j].blank
                    && matches!(lines[j].body, Body::Rule { .. })
                {
                    j += 1;
                }
            }
            let run = &lines[i..j];
            let align = run
                .iter()
                .filter_map(|l| match &l.body {
                    Body::Rule { cond, .. } => Some(width(cond)),
                    _ => None,
                })
                .filter(|&w| w <= MAX_ALIGNED_COND)
                .max()
                .unwrap_or(0);
            for l in run {
                let text = match &l.body {
                    Body::Rule { cond, action } if width(cond) <= MAX_ALIGNED_COND => {
                        let pad = align - width(cond);
                        format!("{cond}{} => {action}", " ".repeat(pad))
                    }
                    b => b.one_line(),
                };
                self.emit(depth, l.blank, &text, l.trailing.clone());
            }
            i = j;
        }
    }

    // ---- statements --------------------------------------------------------------

    fn iface_stmt(&self, s: &IfaceStmt) -> String {
        match &s.kind {
            IfaceStmtKind::Address(addrs) => format!("address {}", self.list(addrs)),
            IfaceStmtKind::Mac(e) => format!("mac {}", self.expr(e)),
            IfaceStmtKind::Mtu(e) => format!("mtu {}", self.expr(e)),
        }
    }

    fn pool_stmt(&self, s: &PoolStmt) -> String {
        match &s.kind {
            PoolStmtKind::Backend(b) => {
                let mut t = format!("backend {}", self.expr(&b.addr));
                self.opts(&b.opts, &mut t);
                t
            }
            PoolStmtKind::Health(h) => {
                let mut t = format!("health {}", h.kind.name);
                self.opts(&h.opts, &mut t);
                t
            }
            PoolStmtKind::Weight(e) => format!("weight = {}", self.expr(e)),
        }
    }

    fn opts(&self, opts: &[Opt], out: &mut String) {
        for o in opts {
            out.push(' ');
            out.push_str(&o.key.name);
            out.push(' ');
            out.push_str(&self.expr(&o.value));
        }
    }

    fn service_stmt(&self, s: &ServiceStmt) -> String {
        match &s.kind {
            ServiceStmtKind::Vip { addr, proto, ports } => {
                let mut t = format!("vip {} {}", self.expr(addr), proto.name);
                if !ports.is_empty() {
                    t.push_str(" port ");
                    t.push_str(&self.list(ports));
                }
                t
            }
            ServiceStmtKind::Pool(p) => format!("pool {}", p.name),
            ServiceStmtKind::Balance(Balance::Named(alg)) => format!("balance {}", alg.name),
            ServiceStmtKind::Balance(Balance::Hash { fields, .. }) => {
                let fields: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                format!("balance hash({})", fields.join(", "))
            }
            ServiceStmtKind::Mode { kind, to_port } => match to_port {
                Some(p) => format!("mode {} to port {}", kind.name, self.expr(p)),
                None => format!("mode {}", kind.name),
            },
            ServiceStmtKind::Unknown(u) => format!("unknown {}", u.name),
        }
    }

    fn packet(&self, p: &Packet) -> String {
        let mut t = format!(
            "{} {} -> {}",
            p.proto.name,
            self.endpoint(&p.src),
            self.endpoint(&p.dst)
        );
        for o in &p.opts {
            t.push(' ');
            match o {
                PacketOpt::Flag(f) => t.push_str(&f.name),
                PacketOpt::Type(e) => t.push_str(&format!("type {}", self.expr(e))),
                PacketOpt::Code(e) => t.push_str(&format!("code {}", self.expr(e))),
                PacketOpt::Ttl(e) => t.push_str(&format!("ttl {}", self.expr(e))),
                PacketOpt::Len(e) => t.push_str(&format!("len {}", self.expr(e))),
                PacketOpt::On(i) => t.push_str(&format!("on {}", i.name)),
            }
        }
        t.push_str(" => ");
        let v = &p.verdict;
        match &v.arg {
            Some(arg) if v.kind.name == "forward" => {
                t.push_str(&format!("forward dev {}", arg.name))
            }
            Some(arg) => t.push_str(&format!("{} {}", v.kind.name, arg.name)),
            None => t.push_str(&v.kind.name),
        }
        t
    }

    fn endpoint(&self, ep: &Endpoint) -> String {
        let addr = self.expr(&ep.addr);
        let Some(port) = &ep.port else { return addr };
        let port = self.expr(port);
        match &ep.addr.kind {
            ExprKind::Lit(Lit::Addr(IpAddr::V6(_))) => format!("[{addr}]:{port}"),
            // `name:port` would read as one IPv6 address if the port has colons.
            ExprKind::Name(_) if port.contains(':') => format!("{addr} :{port}"),
            _ => format!("{addr}:{port}"),
        }
    }

    // ---- expressions -------------------------------------------------------------

    fn list(&self, es: &[Expr]) -> String {
        es.iter()
            .map(|e| self.expr(e))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn expr(&self, e: &Expr) -> String {
        let mut out = String::new();
        self.write_expr(e, &mut out);
        out
    }

    fn write_expr(&self, e: &Expr, out: &mut String) {
        match &e.kind {
            ExprKind::Lit(l) => self.write_lit(l, e.span, out),
            ExprKind::Name(n) | ExprKind::Field(n) => out.push_str(n),
            ExprKind::Set(elems) => {
                let elems: Vec<String> = elems.iter().map(|x| self.expr(x)).collect();
                out.push_str(&inline_set(&elems));
            }
            ExprKind::Paren(x) => {
                out.push('(');
                self.write_expr(x, out);
                out.push(')');
            }
            ExprKind::Not(x) => {
                out.push('!');
                self.write_expr(x, out);
            }
            ExprKind::Neg(x) => {
                out.push('-');
                self.write_expr(x, out);
            }
            ExprKind::And(parts) | ExprKind::Or(parts) => {
                let op = if matches!(e.kind, ExprKind::And(_)) {
                    " && "
                } else {
                    " || "
                };
                for (i, x) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(op);
                    }
                    self.write_expr(x, out);
                }
            }
            ExprKind::Cmp(a, op, b) => {
                self.write_expr(a, out);
                out.push(' ');
                out.push_str(op.as_str());
                out.push(' ');
                self.write_expr(b, out);
            }
            ExprKind::In(a, b) => {
                self.write_expr(a, out);
                out.push_str(" in ");
                self.write_expr(b, out);
            }
            ExprKind::Arith(first, rest) => {
                self.write_expr(first, out);
                for (op, x) in rest {
                    out.push(' ');
                    out.push_str(op.as_str());
                    out.push(' ');
                    self.write_expr(x, out);
                }
            }
            // Only in trees with syntax errors, which are never formatted.
            ExprKind::Error => out.push_str(self.source(e.span)),
        }
    }

    fn write_lit(&self, l: &Lit, span: Span, out: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = match l {
            Lit::Int {
                value,
                hex_digits: 0,
            } => write!(out, "{value}"),
            Lit::Int { value, hex_digits } => {
                write!(out, "0x{value:0width$x}", width = usize::from(*hex_digits))
            }
            Lit::Float(f) => {
                let s = f.to_string();
                if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    // Not finite (a huge literal): keep it as written.
                    out.push_str(self.source(span));
                } else if s.contains('.') {
                    out.push_str(&s);
                } else {
                    out.push_str(&s);
                    out.push_str(".0");
                }
                Ok(())
            }
            Lit::Addr(a) => write!(out, "{a}"),
            Lit::Prefix { addr, len } => write!(out, "{addr}/{len}"),
            Lit::Mac(m) => write!(
                out,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Lit::Range(a, b) => write!(out, "{a}..{b}"),
            Lit::Duration { amount, unit } => write!(out, "{amount}{}", unit.as_str()),
            Lit::Str(s) => {
                out.push_str(&quote(s));
                Ok(())
            }
            Lit::Bool(b) => write!(out, "{b}"),
        };
    }

    fn source(&self, span: Span) -> &str {
        self.src.get(span.start..span.end).unwrap_or("")
    }
}

fn action(a: &Action) -> String {
    match &a.service {
        Some(s) => format!("{} {}", a.kind.name, s.name),
        None => a.kind.name.clone(),
    }
}

fn inline_set(elems: &[String]) -> String {
    if elems.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", elems.join(", "))
    }
}

/// A string literal: `"` and `\` escaped, newline as `\n`, tab as `\t`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Width in columns (characters; the language is ASCII outside strings and comments).
fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(src: &str) -> String {
        match format_source(src) {
            Ok(s) => s,
            Err(d) => panic!("does not parse: {d:#?}\n{src}"),
        }
    }

    /// Format, and check that formatting again gives the same text.
    fn stable(src: &str) -> String {
        let once = fmt(src);
        assert_eq!(fmt(&once), once, "not idempotent; first pass:\n{once}");
        once
    }

    #[test]
    fn refuses_syntax_errors() {
        let err = format_source("pool p {\n    backend 1.2.3.4 wieght 3\n}\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].code, "lbp::parse::syntax");
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(fmt(""), "");
        assert_eq!(fmt("\n\n  \n"), "");
        assert_eq!(fmt("\n\n# a   \n\n\n# b\t\n\n"), "# a\n\n# b\n");
        assert_eq!(fmt("# no newline at the end"), "# no newline at the end\n");
    }

    #[test]
    fn the_normative_example_is_stable() {
        let src = include_str!("../../policies/web.lbp");
        let out = stable(src);
        let before = crate::parse::parse(src);
        let after = crate::parse::parse(&out);
        assert_eq!(before.comments.len(), after.comments.len());
        assert_eq!(
            strip_spans(&format!("{:?}", before.policy)),
            strip_spans(&format!("{:?}", after.policy))
        );
        assert_eq!(out, WEB_FORMATTED);
    }

    #[test]
    fn layout_of_blocks() {
        let out = stable(
            "interface   client{address 198.18.0.1/24,2001:DB8:0::1/64\n}\n\n\n\nfilter{}\npool p {\n\n  backend 10.0.0.1 port 80 weight 2\n\n\n  backend 10.0.0.2\n\n}",
        );
        assert_eq!(
            out,
            "interface client { address 198.18.0.1/24, 2001:db8::1/64 }\n\nfilter {}\npool p {\n    backend 10.0.0.1 port 80 weight 2\n\n    backend 10.0.0.2\n}\n"
        );
        // A block too long for one line.
        let long = format!(
            "pool {} {{ backend 10.0.0.1 weight 3 agent  5555 port 8080 }}\n",
            "p".repeat(70)
        );
        assert_eq!(
            stable(&long),
            format!(
                "pool {} {{\n    backend 10.0.0.1 weight 3 agent 5555 port 8080\n}}\n",
                "p".repeat(70)
            )
        );
        // Several statements on one line.
        assert_eq!(
            stable(
                "service s { vip 198.18.0.10 tcp port 80,443 pool web balance hash( ip.src ,l4.sport ) mode dsr unknown balance }"
            ),
            "service s {\n    vip 198.18.0.10 tcp port 80, 443\n    pool web\n    balance hash(ip.src, l4.sport)\n    mode dsr\n    unknown balance\n}\n"
        );
    }

    #[test]
    fn literals_are_canonical() {
        // `0X1` is not an integer literal.
        assert!(format_source("const a = 0X1").is_err());
        let src = "const a = 0x00Ff\nconst b = 007\nconst c = 1.50\nconst d = 2001:0DB8:0000::0001\nconst e = 02:AB:00:00:00:01\nconst f = 0x10..020\nconst g = 0300ms\nconst h = \"a\\\"b\\\\c\\nd\\te\"\nconst i = true\nconst j = ::FFFF:1.2.3.4/96\nconst k = 100000000000000000000.0\n";
        assert_eq!(
            stable(src),
            "const a = 0x00ff\nconst b = 7\nconst c = 1.5\nconst d = 2001:db8::1\nconst e = 02:ab:00:00:00:01\nconst f = 16..20\nconst g = 300ms\nconst h = \"a\\\"b\\\\c\\nd\\te\"\nconst i = true\nconst j = ::ffff:1.2.3.4/96\nconst k = 100000000000000000000.0\n"
        );
    }

    #[test]
    fn expressions_keep_their_grouping() {
        let out = stable(
            "filter {\n !  (ip.src in {1.2.3.4,5.6.7.8,}) &&-x<-  - 1||tcp.dport in 1..2 => balance   web\n ip.src in {} => drop }\n",
        );
        assert_eq!(
            out,
            "filter {\n    !(ip.src in { 1.2.3.4, 5.6.7.8 }) && -x < --1 || tcp.dport in 1..2 => balance web\n    ip.src in {} => drop\n}\n"
        );
    }

    #[test]
    fn alignment_runs() {
        let src = "filter {\n  a => drop\n  bbbb == 1 => drop\n\n  cc => accept\n  # x\n  d => local   # why\n  eeeeeeee in { 1, 2 } => drop\n}\n";
        assert_eq!(
            stable(src),
            "filter {\n    a         => drop\n    bbbb == 1 => drop\n\n    cc => accept\n    # x\n    d                    => local  # why\n    eeeeeeee in { 1, 2 } => drop\n}\n"
        );
    }

    #[test]
    fn comments_survive_everywhere() {
        let src = "# head\n\nconst a = # inside\n  1 # after a\n\n\n# before pool\npool # in head\n p { # after brace\n\n  # own\n  backend 1.2.3.4 # after backend\n  weight = 1 +\n  # in expr\n  2\n\n  # last\n\n}   # after close\nset s = { 1, # one\n  # two\n  2 }\nfilter { # only\n}\n# end";
        let out = stable(src);
        assert_eq!(
            out,
            "# head\n\n# inside\nconst a = 1  # after a\n\n# before pool\n# in head\npool p {  # after brace\n    # own\n    backend 1.2.3.4  # after backend\n    # in expr\n    weight = 1 + 2\n\n    # last\n}  # after close\nset s = {\n    1,  # one\n    # two\n    2,\n}\nfilter {  # only\n}\n# end\n"
        );
    }

    #[test]
    fn long_sets_break() {
        let elems: Vec<String> = (0..12).map(|i| format!("198.18.{i}.0/24")).collect();
        let src = format!("set blocked: prefix = {{ {} }}", elems.join(", "));
        let out = stable(&src);
        let mut want = "set blocked: prefix = {\n".to_string();
        for e in &elems {
            want.push_str(&format!("    {e},\n"));
        }
        want.push_str("}\n");
        assert_eq!(out, want);
        assert_eq!(stable("set e = {  }"), "set e = {}\n");
    }

    #[test]
    fn packets() {
        let src = "test \"t\\\"q\" {\n udp [2001:DB8::1] : 53 -> client:80 ttl 3 syn on c len 9 type 8 code 0 => forward dev s\n icmpv6 ::1 -> [::2] => reset\n tcp a:b -> 1.2.3.4:80 => balance web }\n";
        assert_eq!(
            stable(src),
            "test \"t\\\"q\" {\n    udp [2001:db8::1]:53 -> client:80 ttl 3 syn on c len 9 type 8 code 0 => forward dev s\n    icmpv6 ::1 -> ::2 => reset\n    tcp a:b -> 1.2.3.4:80 => balance web\n}\n"
        );
        // A name with a port that contains colons keeps a space before the colon.
        assert_eq!(
            stable("test \"x\" { tcp ab: cd::1 -> c => drop }"),
            "test \"x\" { tcp ab :cd::1 -> c => drop }\n"
        );
    }

    #[test]
    fn crlf_sources() {
        assert_eq!(
            stable("# c \r\nconst a = 1\r\n\r\nconst b = 2 # t\r\n"),
            "# c\nconst a = 1\n\nconst b = 2  # t\n"
        );
    }

    /// policies/web.lbp (the normative example) formatted. The 76-column filter rule
    /// takes no part in the alignment of `=>`.
    const WEB_FORMATTED: &str = r#"# An HTTP service on one virtual IP, two back ends, one blocked network.

interface client { address 198.18.0.1/24 }
interface servers { address 198.18.2.1/24 }

const vip = 198.18.0.10

set blocked = { 198.18.99.0/24, 2001:db8:bad::/48 }
set admin_ports = { 22, 8022 }
set admin_nets = { 198.18.1.0/28 }

pool web {
    backend 198.18.2.11 weight 3
    backend 198.18.2.12
    health tcp port 8080 interval 1s timeout 300ms
    # Evaluated by the control module on every load report from a back end's agent.
    # Inputs: clients, cpu (0..1), mem (0..1), exec_ms, rps, and `weight` (the static one).
    weight = weight * (1 - cpu) * 100 / (1 + clients)
}

service http {
    vip 198.18.0.10 tcp port 80, 443
    pool web
    balance maglev  # also: round_robin, least_load, hash(ip.src)
    mode nat to port 8080  # nat: rewrite destination (and port); dsr: rewrite MAC only
}

filter {
    ip.src in blocked               => drop
    tcp.syn && tcp.fin              => drop
    ip.dst == 198.18.0.1 && tcp.dport in admin_ports && !(ip.src in admin_nets) => drop
    ip.dst == vip && icmp.type == 8 => local
}

route 198.18.2.0/24 dev servers
route 0.0.0.0/0 via 198.18.0.254 dev client

test "a blocked network is dropped" {
    tcp 198.18.99.7:40000 -> 198.18.0.10:80 syn => drop
    tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn fin => drop
}
test "pings to the virtual IP reach the control plane" {
    icmp 198.18.1.5 -> 198.18.0.10 type 8 => local
}
test "the web service is balanced" { tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn => balance http }
test "a port that is no service entry is reset" {
    tcp 198.18.1.5:40000 -> 198.18.0.10:25 syn => reset
}
test "UDP to the virtual IP is no service entry" { udp 198.18.1.5:5353 -> 198.18.0.10:80 => drop }
test "the appliance's own address is local" {
    tcp 198.18.1.2:40000 -> 198.18.0.1:22 syn => local
    tcp 198.18.1.99:40000 -> 198.18.0.1:22 syn => drop
}
test "back-end networks are routed" { icmp 198.18.1.5 -> 198.18.2.11 => forward dev servers }
"#;

    fn strip_spans(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('@') {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            let n = tail
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(tail.len());
            rest = &tail[n..];
        }
        out.push_str(rest);
        out
    }
}
