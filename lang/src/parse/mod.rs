//! Parsing: source text to [`Policy`], with every syntax error found on the way.
//!
//! pest parses one statement at a time; this driver walks items and block bodies
//! itself. After a bad statement it records one diagnostic, skips to the end of the
//! line (never past the `}` that closes the block) and goes on, so one run reports
//! every broken statement of a file. pest's types never leave this module.
//!
//! Here: the driver over items and blocks. `items.rs` builds statements from
//! pest's pairs, `expr.rs` expressions and literals, `recover.rs` the
//! diagnostics and recovery after a syntax error, and `fast.rs` the filter rule
//! reader that reads well-formed rules without pest.

mod expr;
mod fast;
mod items;
mod recover;
#[cfg(test)]
mod tests;

pub(crate) use expr::unescape;

use pest::Parser as _;
use pest::iterators::Pair;
use recover::{detailed, furthest};

use crate::ast::*;
use crate::diag::{Diagnostic, did_you_mean};
use crate::vocab::ITEM_KEYWORDS;

#[derive(pest_derive::Parser)]
#[grammar = "lbp.pest"]
struct Grammar;

/// The result of parsing: the tree (as much of it as could be read), the spans of
/// all comments (for the formatter), and the syntax errors.
#[derive(Debug, Default)]
pub struct Parsed {
    pub policy: Policy,
    pub comments: Vec<Span>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Bracket nesting (and negations in front of brackets) deeper than this is refused
/// before pest sees it, so that no input can exhaust the stack.
pub const MAX_NESTING: usize = 48;

/// Parse a whole policy.
pub fn parse(src: &str) -> Parsed {
    parse_with(src, true)
}

/// Parse with pest alone, without the filter rule reader (`fast`): the reference the
/// reader is tested against.
#[doc(hidden)]
pub fn parse_with_pest_only(src: &str) -> Parsed {
    parse_with(src, false)
}

/// Whether the filter rule reader reads a well-formed rule at `pos` (for tests:
/// that the reader is used, not only that it agrees).
#[doc(hidden)]
pub fn rule_is_read_fast(src: &str, pos: usize) -> bool {
    fast::read_rule(src, pos).is_some()
}

fn parse_with(src: &str, fast: bool) -> Parsed {
    let scanned = scan(src);
    let mut p = Driver {
        src: scanned.safe.as_deref().unwrap_or(src),
        diags: Vec::new(),
        fast,
    };
    if let Some(at) = scanned.too_deep {
        p.diags.push(
            Diagnostic::error(
                "lbp::parse::too_deep",
                format!("nesting deeper than {MAX_NESTING} levels"),
            )
            .label(Span::new(at, at + 1), "too deeply nested")
            .help("split the expression into named sets or several rules"),
        );
    }
    let policy = p.policy();
    Parsed {
        policy,
        comments: scanned.comments,
        diagnostics: p.diags,
    }
}

/// What [`scan`] found.
struct Scanned {
    comments: Vec<Span>,
    /// The first place where nesting exceeds [`MAX_NESTING`].
    too_deep: Option<usize>,
    /// When nesting exceeds the limit: the source with every bracket (and its
    /// partner) and prefix operator beyond the limit replaced by a space. The rest
    /// of the file then parses as usual, with the same offsets, so one too-deep
    /// expression does not hide the other diagnostics of the file, and pest never
    /// nests deeper than the limit.
    safe: Option<String>,
}

/// Find comments, and the places where nesting exceeds [`MAX_NESTING`]. Levels are
/// brackets (parentheses, sets, the brackets of an IPv6 address) and prefix `!` or
/// `-` in front of them; the braces of an item's block are not a level.
fn scan(src: &str) -> Scanned {
    let b = src.as_bytes();
    let mut comments = Vec::new();
    // Each open bracket's cost (itself and the prefix operators before it), and
    // whether it was blanked.
    let mut levels: Vec<(usize, bool)> = Vec::new();
    let (mut total, mut run) = (0usize, 0usize);
    let mut too_deep = None;
    let mut blank = Vec::new();
    // The last byte outside whitespace and comments: a `{` after `=` opens a set.
    let mut last = 0u8;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                comments.push(Span::new(i, end));
                i = end;
                continue;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                run = 0;
            }
            b'!' | b'-' if b.get(i + 1) != Some(if c == b'!' { &b'=' } else { &b'>' }) => {
                if total + run < MAX_NESTING {
                    run += 1;
                } else {
                    too_deep.get_or_insert(i);
                    blank.push(i);
                }
            }
            b'(' | b'{' | b'[' => {
                let block = c == b'{' && levels.is_empty() && last != b'=';
                let cost = if block { 0 } else { 1 + run };
                if total + cost <= MAX_NESTING {
                    levels.push((cost, false));
                    total += cost;
                } else {
                    too_deep.get_or_insert(i);
                    blank.push(i);
                    levels.push((0, true));
                }
                run = 0;
            }
            b')' | b'}' | b']' => {
                if let Some((cost, blanked)) = levels.pop() {
                    total -= cost;
                    if blanked {
                        blank.push(i);
                    }
                }
                run = 0;
            }
            c if c.is_ascii_whitespace() => {}
            _ => run = 0,
        }
        if !c.is_ascii_whitespace() {
            last = c;
        }
        i += 1;
    }
    let safe = (!blank.is_empty()).then(|| {
        let mut bytes = b.to_vec();
        for at in blank {
            bytes[at] = b' ';
        }
        // Only ASCII punctuation became ASCII spaces: still UTF-8.
        String::from_utf8(bytes).unwrap_or_default()
    });
    Scanned {
        comments,
        too_deep,
        safe,
    }
}

/// The statements of a block being read.
enum Body {
    Iface(Vec<IfaceStmt>),
    Pool(Vec<PoolStmt>),
    Service(Vec<ServiceStmt>),
    Filter(Vec<FilterRule>),
    Test(Vec<Packet>),
}

struct Driver<'s> {
    src: &'s str,
    diags: Vec<Diagnostic>,
    /// Read well-formed filter rules with [`fast::read_rule`].
    fast: bool,
}

type P<'i> = Pair<'i, Rule>;

impl<'s> Driver<'s> {
    // ---- the item and block walk -------------------------------------------------

    fn policy(&mut self) -> Policy {
        let mut items = Vec::new();
        // A UTF-8 byte order mark at the start (some editors write one) is not text.
        let mut pos = self.skip_trivia(if self.src.starts_with('\u{feff}') {
            3
        } else {
            0
        });
        while pos < self.src.len() {
            let word = self.word_at(pos);
            let next = match word {
                "interface" | "pool" | "service" | "filter" | "test" => {
                    self.block_item(word, pos, &mut items)
                }
                "const" => self.simple_item(Rule::const_item, pos, &mut items),
                "set" => self.simple_item(Rule::set_item, pos, &mut items),
                "route" => self.simple_item(Rule::route_item, pos, &mut items),
                _ => {
                    let found = self.found_at(pos);
                    let mut d = Diagnostic::error(
                        "lbp::parse::unknown_item",
                        format!("expected an item, found {found}"),
                    )
                    .label(self.token_span(pos), "not an item");
                    d = match did_you_mean(word, ITEM_KEYWORDS.iter().copied()) {
                        Some(s) if !word.is_empty() => d.help(format!("did you mean `{s}`?")),
                        _ => d.help("a policy is made of interface, const, set, pool, service, filter, route and test items"),
                    };
                    self.diags.push(d);
                    None
                }
            };
            pos = match next {
                Some(end) => end,
                None => self.next_item_start(pos + 1),
            };
            pos = self.skip_trivia(pos);
        }
        Policy { items }
    }
    /// Parse a one-statement item. Returns the end, or None after an error.
    fn simple_item(&mut self, rule: Rule, pos: usize, items: &mut Vec<Item>) -> Option<usize> {
        let pair = self.run(rule, pos)?;
        let end = pos + pair.as_span().end();
        let item = match rule {
            Rule::const_item => self.const_item(pair, pos),
            Rule::set_item => self.set_item(pair, pos),
            _ => self.route_item(pair, pos),
        };
        items.extend(item);
        Some(end)
    }
    fn block_item(&mut self, word: &str, start: usize, items: &mut Vec<Item>) -> Option<usize> {
        let (head_rule, stmt_rule, line_rule) = match word {
            "interface" => (Rule::interface_head, Rule::iface_stmt, Rule::iface_line),
            "pool" => (Rule::pool_head, Rule::pool_stmt, Rule::pool_line),
            "service" => (Rule::service_head, Rule::service_stmt, Rule::service_line),
            "filter" => (Rule::filter_head, Rule::filter_rule, Rule::filter_line),
            _ => (Rule::test_head, Rule::packet, Rule::packet_line),
        };
        let head = self.run(head_rule, start)?;
        let head_end = start + head.as_span().end();
        let open = Span::new(head_end - 1, head_end);
        // Statements are built as they are read, so that pest's pairs of one
        // statement are gone before the next is parsed.
        let mut body = match word {
            "interface" => Body::Iface(Vec::new()),
            "pool" => Body::Pool(Vec::new()),
            "service" => Body::Service(Vec::new()),
            "filter" => Body::Filter(Vec::new()),
            _ => Body::Test(Vec::new()),
        };
        let mut pos = head_end;
        // Start and end of the statement just read, if it was well formed.
        let mut prev: Option<(usize, usize)> = None;
        let end = loop {
            pos = self.skip_trivia(pos);
            if pos >= self.src.len() || (pos > head_end && self.item_starts_at(pos)) {
                let mut d = Diagnostic::error(
                    "lbp::parse::unclosed_block",
                    format!("this `{word}` block is never closed"),
                )
                .label(open, "opened here")
                .help("add a `}` at the end of the block");
                if pos < self.src.len() {
                    d = d.label(
                        self.token_span(pos),
                        format!("the block must end before this `{}`", self.word_at(pos)),
                    );
                }
                self.diags.push(d);
                break self.src[..pos].trim_end().len();
            }
            if self.src.as_bytes()[pos] == b'}' {
                break pos + 1;
            }
            if let Body::Filter(rules) = &mut body
                && self.fast
                && let Some(raw) = fast::read_rule(self.src, pos)
            {
                let end = raw.end;
                prev = Some((pos, end));
                rules.push(self.raw_rule(raw, pos));
                pos = end;
                continue;
            }
            match self.run_quiet(stmt_rule, pos) {
                Ok((mut pair, at)) => {
                    let mut stmt_end = pos + pair.as_span().end();
                    // A test packet is one line. If its parse ran on into a line that
                    // starts another packet (`=> balance` without its service took the
                    // next line's `tcp` for one), read the packet's own line alone.
                    if stmt_rule == Rule::packet
                        && self.ran_into_next_packet(pos, self.trim_end(pos, stmt_end))
                    {
                        let eol = self.src[pos..]
                            .find('\n')
                            .map_or(self.src.len(), |n| pos + n);
                        if let Some(p) = Grammar::parse(Rule::packet_line, &self.src[pos..eol])
                            .ok()
                            .and_then(|mut ps| ps.next()?.into_inner().next())
                        {
                            stmt_end = pos + p.as_span().end();
                            pair = p;
                        }
                    }
                    prev = Some((pos, stmt_end));
                    pos = stmt_end;
                    match &mut body {
                        Body::Iface(v) => v.extend(self.iface_stmt(pair, at)),
                        Body::Pool(v) => v.extend(self.pool_stmt(pair, at)),
                        Body::Service(v) => v.extend(self.service_stmt(pair, at)),
                        Body::Filter(v) => v.extend(self.rule(pair, at)),
                        Body::Test(v) => v.extend(self.packet(pair, at)),
                    }
                }
                Err(e) => {
                    // A word left over on the line of a complete statement belongs to
                    // that statement (`backend A wieght 3`, `vip A tcp ports 80`): say
                    // what the statement could go on with, not which statements exist.
                    // And when a test packet's parse ran on into a line that starts
                    // the next packet (`syn drop` read as two flags, then the next
                    // line's `tcp` as a third), what is missing is at the end of the
                    // packet's own line.
                    let continued = match prev.take() {
                        Some((ps, pe)) if !self.src[self.trim_end(ps, pe)..pos].contains('\n') => {
                            Some(ps)
                        }
                        _ if stmt_rule == Rule::packet
                            && self.ran_into_next_packet(pos, furthest(&e, pos)) =>
                        {
                            Some(pos)
                        }
                        _ => None,
                    };
                    let at = match continued
                        .and_then(|start| self.continuation_error(line_rule, start, stmt_rule))
                    {
                        Some(at) => at,
                        None => self.push_pest_error(e, pos, stmt_rule),
                    };
                    pos = self.recover_in_block(pos, at.max(pos));
                }
            }
        };
        items.push(self.finish_block(body, head, start, end));
        Some(end)
    }
    /// The item of a block whose body has been read.
    fn finish_block(&mut self, body: Body, head: P<'s>, start: usize, end: usize) -> Item {
        let span = Span::new(start, end);
        let base = start; // pairs of the head are relative to `start`
        match body {
            Body::Iface(stmts) => Item::Interface(Interface {
                name: self.ident(head.into_inner().nth(1).expect("head has a name"), base),
                stmts,
                span,
            }),
            Body::Pool(stmts) => Item::Pool(Pool {
                name: self.ident(head.into_inner().nth(1).expect("head has a name"), base),
                stmts,
                span,
            }),
            Body::Service(stmts) => Item::Service(Service {
                name: self.ident(head.into_inner().nth(1).expect("head has a name"), base),
                stmts,
                span,
            }),
            Body::Filter(rules) => Item::Filter(Filter { rules, span }),
            Body::Test(packets) => {
                let s = head.into_inner().nth(1).expect("head has a name");
                let name_span = self.span(&s, base);
                let name = unescape(s.into_inner().next().map_or("", |p| p.as_str()));
                Item::Test(Test {
                    name,
                    name_span,
                    packets,
                    span,
                })
            }
        }
    }
    /// Run a rule at `pos`; on failure record the error and return None.
    fn run(&mut self, rule: Rule, pos: usize) -> Option<P<'s>> {
        match self.run_quiet(rule, pos) {
            Ok((pair, _)) => Some(pair),
            Err(e) => {
                self.push_pest_error(e, pos, rule);
                None
            }
        }
    }
    fn run_quiet(
        &self,
        rule: Rule,
        pos: usize,
    ) -> Result<(P<'s>, usize), pest::error::Error<Rule>> {
        match Grammar::parse(rule, &self.src[pos..]) {
            Ok(mut pairs) => Ok((
                pairs.next().expect("a successful parse yields its rule"),
                pos,
            )),
            // Parse again, tracking literal tokens (`->`, `=>`, `{`) too, so that the
            // error can name the punctuation that is missing. Only on the error path:
            // the tracking doubles the cost of a parse.
            Err(_) => detailed(|| Grammar::parse(rule, &self.src[pos..])).map(|mut pairs| {
                (
                    pairs.next().expect("a successful parse yields its rule"),
                    pos,
                )
            }),
        }
    }
    // ---- building the tree -------------------------------------------------------

    fn span(&self, p: &P<'_>, base: usize) -> Span {
        let s = p.as_span();
        let start = base + s.start();
        Span::new(start, self.trim_end(start, base + s.end()))
    }
    /// `end` moved back over trailing whitespace and comments: pest's implicit
    /// whitespace after a statement's last token (before an optional part that is
    /// absent) belongs to the statement's pair but not to what the operator wrote.
    fn trim_end(&self, start: usize, end: usize) -> usize {
        // Common case first: a span that ends in a token. (pest's implicit skip
        // consumes whitespace and comments; a comment runs to a newline, which the
        // skip takes too, or to the end of the source.)
        if end < self.src.len()
            && end > start
            && !self.src.as_bytes()[end - 1].is_ascii_whitespace()
        {
            return end;
        }
        let mut end = start + self.src[start..end].trim_end().len();
        loop {
            let line_start = self.src[start..end]
                .rfind('\n')
                .map_or(start, |n| start + n + 1);
            match comment_start(&self.src[line_start..end]) {
                Some(h) => end = line_start + self.src[line_start..line_start + h].trim_end().len(),
                None => return end,
            }
        }
    }
    // ---- expressions -------------------------------------------------------------
}

/// Where a comment starts on a line (a `#` outside a string), if it has one.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => return Some(i),
            _ => {}
        }
    }
    None
}

const BP_NOT: u8 = 5;

const BP_NEG: u8 = 13;

/// Punctuation of statements (not operators), named when it is what is missing.
const STRUCTURAL: &[&str] = &["->", "=>", "{", "}", "(", ")", "[", "]", ",", "="];
