//! The filter rule reader: one well-formed filter rule read without pest.
//!
//! A policy can hold 100 000 filter rules, and reading each through pest costs
//! several microseconds (a parser state per statement, a checkpoint per tried
//! alternative, a pair per token), which a reload pays in full. This reader takes
//! the grammar's `filter_rule` (lbp.pest) as it is written, rule for rule and
//! alternative for alternative in pest's order, and reads a well-formed rule in one
//! pass. It only ever says "here is the rule pest would read" or "not mine": on
//! anything it does not accept it gives up without a trace, and the driver reads the
//! statement with pest as before, so every syntax error and its message still come
//! from one place. Literals, precedence and the tree are built by the driver's own
//! code (`climb`, `classify`), shared with the pest path.
//!
//! That both readers give the same tree, spans and diagnostics is tested on the
//! stock policies, the case corpus and random rules (`tests` in `parse`).

use super::Rule;

/// A token or group of a flat expression, as pest's pairs would give it: operators
/// and operands in a row, a parenthesis or set with its contents inside.
pub(super) struct Node<'s> {
    pub rule: Rule,
    pub text: &'s str,
    pub start: usize,
    pub end: usize,
    /// A parenthesis: the flat expression inside. A set: its elements.
    pub kids: Vec<Node<'s>>,
}

/// A filter rule read by [`read_rule`]; offsets are absolute.
pub(super) struct RawRule<'s> {
    pub cond: Vec<Node<'s>>,
    /// The action word (`drop`, `balance`, ...).
    pub kind: (usize, usize),
    /// `balance SERVICE`: the service's name.
    pub service: Option<(usize, usize)>,
    /// The action and the whole rule end here (as pest's pairs would: a `balance
    /// SERVICE` action takes the whitespace and comments after its service).
    pub end: usize,
}

struct Reader<'s> {
    src: &'s str,
    b: &'s [u8],
    p: usize,
}

/// Read the filter rule at `pos`, or None when it is not well formed (or is a form
/// this reader leaves to pest).
pub(super) fn read_rule(src: &str, pos: usize) -> Option<RawRule<'_>> {
    let mut r = Reader {
        src,
        b: src.as_bytes(),
        p: pos,
    };
    let mut cond = Vec::new();
    r.expr(&mut cond, 0)?;
    r.skip();
    if !r.b[r.p..].starts_with(b"=>") {
        return None;
    }
    r.p += 2;
    r.skip();
    // action = { balance_action | ident };
    // balance_action = { (k_balance | app_word) ~ ident ~ !"." }
    let at = r.p;
    let word = [&b"balance"[..], b"app"].into_iter().find(|w| r.keyword(w));
    if let Some(w) = word {
        r.p += w.len();
        r.skip();
        if let Some(e) = r.ident_end(r.p) {
            let service = (r.p, e);
            r.p = e;
            r.skip();
            if r.at(r.p) != b'.' {
                return Some(RawRule {
                    cond,
                    kind: (at, at + w.len()),
                    service: Some(service),
                    end: r.p,
                });
            }
        }
        r.p = at;
    }
    let e = r.ident_end(at)?;
    Some(RawRule {
        cond,
        kind: (at, e),
        service: None,
        end: e,
    })
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Deeper than this, the reader leaves the statement to pest (which the driver's
/// nesting limit already bounds); it keeps this reader's recursion small.
const MAX_DEPTH: usize = 64;

impl<'s> Reader<'s> {
    /// The byte at `i`, or 0 past the end (0 matches nothing in the grammar).
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// pest's implicit skip: whitespace (space, tab, CR, LF) and `#` comments.
    fn skip(&mut self) {
        loop {
            match self.at(self.p) {
                b' ' | b'\t' | b'\r' | b'\n' => self.p += 1,
                b'#' => {
                    self.p = self.src[self.p..]
                        .find('\n')
                        .map_or(self.b.len(), |n| self.p + n)
                }
                _ => return,
            }
        }
    }

    /// `word` at the reader's position as a whole word (`k_...` rules).
    fn keyword(&self, word: &[u8]) -> bool {
        self.b[self.p..].starts_with(word) && !ident_char(self.at(self.p + word.len()))
    }

    /// `ident = @{ (ASCII_ALPHA | "_") ~ ident_char* }` at `i`: its end.
    fn ident_end(&self, i: usize) -> Option<usize> {
        let c = self.at(i);
        if !(c.is_ascii_alphabetic() || c == b'_') {
            return None;
        }
        let mut e = i + 1;
        while ident_char(self.at(e)) {
            e += 1;
        }
        Some(e)
    }

    fn push(&self, out: &mut Vec<Node<'s>>, rule: Rule, start: usize, end: usize) {
        self.push_group(out, rule, start, end, Vec::new());
    }

    /// A node with contents (a parenthesis, a set) from `start` to `end`.
    fn push_group(
        &self,
        out: &mut Vec<Node<'s>>,
        rule: Rule,
        start: usize,
        end: usize,
        kids: Vec<Node<'s>>,
    ) {
        out.push(Node {
            rule,
            text: &self.src[start..end],
            start,
            end,
            kids,
        });
    }

    /// `expr = { prefix_op* ~ primary ~ (infix_op ~ prefix_op* ~ primary)* }`,
    /// flat into `out`. Leaves the position after the last operand.
    fn expr(&mut self, out: &mut Vec<Node<'s>>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        loop {
            // prefix_op = _{ not_op | neg_op }; not_op = @{ "!" ~ !"=" }, neg_op = @{ "-" ~ !">" }
            loop {
                let (c, n) = (self.at(self.p), self.at(self.p + 1));
                let rule = match c {
                    b'!' if n != b'=' => Rule::not_op,
                    b'-' if n != b'>' => Rule::neg_op,
                    _ => break,
                };
                self.push(out, rule, self.p, self.p + 1);
                self.p += 1;
                self.skip();
            }
            self.primary(out, depth)?;
            let after = self.p;
            self.skip();
            let Some((rule, len)) = self.infix() else {
                self.p = after;
                return Some(());
            };
            self.push(out, rule, self.p, self.p + len);
            self.p += len;
            self.skip();
        }
    }

    /// `infix_op = _{ and_op | cmp_op | k_in | or_op | add_op | mul_op }` at the
    /// position: the operator's rule and length.
    fn infix(&self) -> Option<(Rule, usize)> {
        let (c, n) = (self.at(self.p), self.at(self.p + 1));
        Some(match (c, n) {
            (b'&', b'&') => (Rule::and_op, 2),
            (b'=', b'=') | (b'!', b'=') | (b'<', b'=') | (b'>', b'=') => (Rule::cmp_op, 2),
            (b'<', _) | (b'>', _) => (Rule::cmp_op, 1),
            (b'i', b'n') if !ident_char(self.at(self.p + 2)) => (Rule::k_in, 2),
            (b'|', b'|') => (Rule::or_op, 2),
            (b'+', _) => (Rule::add_op, 1),
            (b'-', _) if n != b'>' => (Rule::add_op, 1),
            (b'*', _) | (b'/', _) => (Rule::mul_op, 1),
            _ => return None,
        })
    }

    /// `primary = _{ field | paren | set_lit | literal | ident }`.
    fn primary(&mut self, out: &mut Vec<Node<'s>>, depth: usize) -> Option<()> {
        let start = self.p;
        // field = @{ ident ~ "." ~ ident }
        if let Some(e) = self.ident_end(start)
            && self.at(e) == b'.'
            && let Some(e2) = self.ident_end(e + 1)
        {
            self.push(out, Rule::field, start, e2);
            self.p = e2;
            return Some(());
        }
        match self.at(start) {
            // paren = { "(" ~ expr ~ ")" }
            b'(' => {
                self.p += 1;
                self.skip();
                let mut kids = Vec::new();
                self.expr(&mut kids, depth + 1)?;
                self.skip();
                if self.at(self.p) != b')' {
                    return None;
                }
                self.p += 1;
                self.push_group(out, Rule::paren, start, self.p, kids);
                Some(())
            }
            // set_lit = { "{" ~ (set_elem ~ ("," ~ set_elem)* ~ ","?)? ~ "}" }
            b'{' => {
                self.p += 1;
                self.skip();
                let mut kids = Vec::new();
                if self.at(self.p) != b'}' {
                    loop {
                        self.set_elem(&mut kids)?;
                        self.skip();
                        match self.at(self.p) {
                            b',' => {
                                self.p += 1;
                                self.skip();
                                if self.at(self.p) == b'}' {
                                    break;
                                }
                            }
                            b'}' => break,
                            _ => return None,
                        }
                    }
                }
                self.p += 1;
                self.push_group(out, Rule::set_lit, start, self.p, kids);
                Some(())
            }
            _ => self.set_elem(out),
        }
    }

    /// `set_elem = _{ literal | ident }`.
    fn set_elem(&mut self, out: &mut Vec<Node<'s>>) -> Option<()> {
        let start = self.p;
        if let Some((rule, end)) = self.literal() {
            self.push(out, rule, start, end);
            self.p = end;
            return Some(());
        }
        let end = self.ident_end(start)?;
        self.push(out, Rule::ident, start, end);
        self.p = end;
        Some(())
    }

    /// `literal = _{ &ASCII_DIGIT ~ num_tok | hex_tok | &"\"" ~ string | &("t" |
    /// "f") ~ boolean | no_literal }` at the position: the token's rule and end.
    fn literal(&self) -> Option<(Rule, usize)> {
        let p = self.p;
        let c = self.at(p);
        if c.is_ascii_digit() {
            return Some((Rule::num_tok, self.num_tok(p)));
        }
        if let Some(e) = self.hex_tok(p) {
            return Some((Rule::hex_tok, e));
        }
        if c == b'"' {
            return self.string(p).map(|e| (Rule::string, e));
        }
        for word in [&b"true"[..], b"false"] {
            if self.b[p..].starts_with(word) && !ident_char(self.at(p + word.len())) {
                return Some((Rule::boolean, p + word.len()));
            }
        }
        None
    }

    /// `num_tok = @{ ASCII_DIGIT ~ ASCII_HEX_DIGIT* ~ (("." | ":" | "x") ~
    /// (ASCII_HEX_DIGIT | ":" | "." | "x")* ~ ("/" ~ ASCII_DIGIT+)?)? ~ (ASCII_ALPHA
    /// ~ ident_char*)? }`, from a digit at `p`: its end.
    fn num_tok(&self, p: usize) -> usize {
        let mut e = p + 1;
        while self.at(e).is_ascii_hexdigit() {
            e += 1;
        }
        if matches!(self.at(e), b'.' | b':' | b'x') {
            e += 1;
            while matches!(self.at(e), b':' | b'.' | b'x') || self.at(e).is_ascii_hexdigit() {
                e += 1;
            }
            e = self.slash_len(e);
        }
        if self.at(e).is_ascii_alphabetic() {
            e += 1;
            while ident_char(self.at(e)) {
                e += 1;
            }
        }
        e
    }

    /// `("/" ~ ASCII_DIGIT+)?` at `e`: the end, `e` itself when absent.
    fn slash_len(&self, e: usize) -> usize {
        if self.at(e) == b'/' && self.at(e + 1).is_ascii_digit() {
            let mut e = e + 2;
            while self.at(e).is_ascii_digit() {
                e += 1;
            }
            e
        } else {
            e
        }
    }

    /// `hex_tok = @{ &(ASCII_HEX_DIGIT* ~ ":") ~ (ASCII_HEX_DIGIT | ":" | ".")+ ~
    /// ("/" ~ ASCII_DIGIT+)? }` at `p`: its end.
    fn hex_tok(&self, p: usize) -> Option<usize> {
        let mut q = p;
        while self.at(q).is_ascii_hexdigit() {
            q += 1;
        }
        if self.at(q) != b':' {
            return None;
        }
        let mut e = p;
        while matches!(self.at(e), b':' | b'.') || self.at(e).is_ascii_hexdigit() {
            e += 1;
        }
        Some(self.slash_len(e))
    }

    /// `string = ${ "\"" ~ str_inner ~ "\"" }`, `str_inner = @{ (!("\"" | "\\" |
    /// "\n") ~ ANY | "\\" ~ ("\"" | "\\" | "n" | "t"))* }` at `p`: its end.
    fn string(&self, p: usize) -> Option<usize> {
        let mut e = p + 1;
        loop {
            match self.at(e) {
                b'"' => return Some(e + 1),
                b'\\' if matches!(self.at(e + 1), b'"' | b'\\' | b'n' | b't') => e += 2,
                b'\\' | b'\n' => return None,
                0 if e >= self.b.len() => return None,
                _ => e += 1,
            }
        }
    }
}
