//! Parsing: source text to [`Policy`], with every syntax error found on the way.
//!
//! pest parses one statement at a time; this driver walks items and block bodies
//! itself. After a bad statement it records one diagnostic, skips to the end of the
//! line (never past the `}` that closes the block) and goes on, so one run reports
//! every broken statement of a file. pest's types never leave this module.

use crate::ast::*;
use crate::diag::{Diagnostic, did_you_mean};
use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod fast;

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

const ITEM_KEYWORDS: &[&str] = &[
    "interface",
    "const",
    "set",
    "pool",
    "service",
    "filter",
    "route",
    "test",
];

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

    /// Re-read the statement at `start` as a whole line (`line_rule` is the statement
    /// followed by the end of input) and report where it stops. None if the line
    /// parses, which does not happen when the statement left a word on its line.
    fn continuation_error(
        &mut self,
        line_rule: Rule,
        start: usize,
        stmt_rule: Rule,
    ) -> Option<usize> {
        let eol = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |n| start + n);
        match detailed(|| Grammar::parse(line_rule, &self.src[start..eol])) {
            Ok(_) => None,
            Err(e) => Some(self.push_pest_error(e, start, stmt_rule)),
        }
    }

    /// Whether the text from `start` to `err` crosses into a line that reads like the
    /// start of another packet (`tcp ...`, `udp ...`) or the end of the test.
    fn ran_into_next_packet(&self, start: usize, err: usize) -> bool {
        let Some(n) = self.src[start..err.min(self.src.len())].find('\n') else {
            return false;
        };
        let next = self.skip_trivia(start + n);
        next <= err
            && (self.src[next..].starts_with('}')
                || matches!(self.word_at(next), "tcp" | "udp" | "icmp" | "icmpv6"))
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

    /// Turn a pest error into a diagnostic; returns the absolute error position.
    fn push_pest_error(&mut self, e: pest::error::Error<Rule>, base: usize, rule: Rule) -> usize {
        let rel = match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
        let mut at = base + rel;
        let mut expected: Vec<String> = match &e.variant {
            ErrorVariant::ParsingError { positives, .. } => positives
                .iter()
                .filter_map(|r| describe(*r))
                .map(String::from)
                .collect(),
            ErrorVariant::CustomError { .. } => Vec::new(),
        };
        // pest places the error after the last *rule* that failed; a literal token
        // such as `->` or `=>` that failed further on is the better explanation.
        if let Some(pa) = e.parse_attempts() {
            let tokens: Vec<String> = pa
                .expected_tokens()
                .into_iter()
                .map(|t| t.to_string())
                // not whitespace, comments, built-in classes (ASCII_DIGIT) or char ranges
                .filter(|t| {
                    !t.trim().is_empty()
                        && t != "#"
                        && t != "BUILTIN_RULE"
                        && !(t.chars().count() == 4 && t.contains(".."))
                })
                .collect();
            if pa.max_position > rel && !tokens.is_empty() {
                at = base + pa.max_position;
                expected = tokens.iter().map(|t| format!("`{t}`")).collect();
            } else if pa.max_position == rel {
                // Where rules were tried too, name the punctuation that no rule stands
                // for: `tcp.dport == 23 drop` lacks its `=>`. (Operator tokens are
                // already named by their rules: "a comparison", "`&&`".)
                expected.extend(
                    tokens
                        .iter()
                        .filter(|t| STRUCTURAL.contains(&t.as_str()))
                        .map(|t| format!("`{t}`")),
                );
            }
        }
        if expected.len() > 1 {
            // "`port` or `weight`" next to "the end of the line": list the keywords one by one.
            expected = expected.into_iter().flat_map(split_keywords).collect();
        }
        expected.sort_unstable();
        expected.dedup();
        if expected.is_empty() {
            expected.push(describe(rule).unwrap_or("a statement").to_string());
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let found = self.found_at(at);
        let list = join_or(&expected);
        let mut d = Diagnostic::error(
            "lbp::parse::syntax",
            format!("expected {list}, found {found}"),
        )
        .label(self.token_span(at), format!("expected {list}"));
        let word = self.word_at(at);
        // Every keyword named in the expectations, e.g. `port` and `weight` out of
        // "`port` or `weight`", is a candidate for a misspelling.
        let keywords: Vec<&str> = expected
            .iter()
            .flat_map(|e| e.split('`').skip(1).step_by(2))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        if let Some(s) = did_you_mean(word, keywords.iter().copied()).filter(|_| !word.is_empty()) {
            d = d.help(format!("did you mean `{s}`?"));
        } else if self.src[at.min(self.src.len())..].starts_with('=')
            && expected.contains(&"a comparison")
        {
            d = d.help("to compare two values, write `==`");
        } else if let Some(w) = self
            .verdict_word_near(at)
            .filter(|_| expected.contains(&"`=>`"))
        {
            d = d.help(format!("write `=> {w}`"));
        } else if expected == ["`\"`"] {
            d = d.help("a string ends with `\"` on the line where it starts");
        } else if let Some(h) = block_help(rule) {
            d = d.help(h);
        }
        self.diags.push(d);
        at
    }

    /// An action or verdict word at `at`, or just before it on its line (`syn drop`
    /// followed by the end of the line): the `=>` before it is what is missing.
    fn verdict_word_near(&self, at: usize) -> Option<&'s str> {
        let at = at.min(self.src.len());
        let before = self.src[..at].trim_end_matches([' ', '\t']);
        // The word's start: after the last character that is not a word character
        // (which may be longer than a byte).
        let start = before
            .char_indices()
            .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |(n, c)| n + c.len_utf8());
        [self.word_at(at), &before[start..]].into_iter().find(|w| {
            matches!(
                *w,
                "accept" | "drop" | "reset" | "local" | "forward" | "balance" | "expire"
            )
        })
    }

    /// After a bad statement at or before `at`: the end of that line, but never past
    /// an unmatched `}` on it (it closes the block).
    fn recover_in_block(&self, stmt_start: usize, at: usize) -> usize {
        let b = self.src.as_bytes();
        // Braces count from the statement's start: the `{` of a one-line block
        // (`pool p { backend A weight }`) is not the statement's.
        let line_start = self.src[..at]
            .rfind('\n')
            .map_or(0, |n| n + 1)
            .max(stmt_start.min(at));
        let mut depth = 0i32;
        let mut i = line_start;
        while i < b.len() && b[i] != b'\n' {
            match b[i] {
                b'#' => break,
                b'{' => depth += 1,
                b'}' if depth == 0 && i >= at => return i,
                b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        let eol = self.src[at..].find('\n').map_or(b.len(), |n| at + n);
        eol.max(at + 1).min(b.len())
    }

    /// The next line (at or after `pos`) that starts, in column 0, an item.
    fn next_item_start(&self, pos: usize) -> usize {
        let mut i = pos.min(self.src.len());
        loop {
            // By bytes: `pos` may sit inside a multi-byte character.
            match self.src.as_bytes()[i..].iter().position(|&b| b == b'\n') {
                None => return self.src.len(),
                Some(n) => {
                    i += n + 1;
                    if self.item_starts_at(i) {
                        return i;
                    }
                }
            }
        }
    }

    /// Whether an item starts at `pos`, in column 0 (a block body's statements are
    /// not items even when they share a keyword, like `pool NAME` in a service).
    fn item_starts_at(&self, pos: usize) -> bool {
        if pos > 0 && self.src.as_bytes().get(pos - 1) != Some(&b'\n') {
            return false;
        }
        match self.word_at(pos) {
            "const" | "set" | "route" => true,
            "interface" => self.run_quiet(Rule::interface_head, pos).is_ok(),
            "pool" => self.run_quiet(Rule::pool_head, pos).is_ok(),
            "service" => self.run_quiet(Rule::service_head, pos).is_ok(),
            "filter" => self.run_quiet(Rule::filter_head, pos).is_ok(),
            "test" => self.run_quiet(Rule::test_head, pos).is_ok(),
            _ => false,
        }
    }

    fn skip_trivia(&self, mut pos: usize) -> usize {
        let b = self.src.as_bytes();
        while pos < b.len() {
            if b[pos].is_ascii_whitespace() {
                pos += 1;
            } else if b[pos] == b'#' {
                pos = self.src[pos..].find('\n').map_or(b.len(), |n| pos + n);
            } else {
                break;
            }
        }
        pos
    }

    fn word_at(&self, pos: usize) -> &'s str {
        let rest = &self.src[pos.min(self.src.len())..];
        let n = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..n]
    }

    /// The span of the token at `pos` (a word, a number or address, or one
    /// character), for labels.
    fn token_span(&self, pos: usize) -> Span {
        let pos = pos.min(self.src.len());
        let rest = &self.src[pos..];
        let w = if rest.starts_with(|c: char| c.is_ascii_digit()) {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/')))
                .unwrap_or(rest.len())
        } else {
            self.word_at(pos).len()
        };
        let n = if w > 0 {
            w
        } else {
            self.src[pos..]
                .chars()
                .next()
                .map_or(0, |c| if c == '\n' { 0 } else { c.len_utf8() })
        };
        Span::new(pos, pos + n)
    }

    fn found_at(&self, pos: usize) -> String {
        let s = self.token_span(pos);
        if pos >= self.src.len() {
            "end of file".into()
        } else if s.is_empty() {
            "end of line".into()
        } else {
            format!("`{}`", &self.src[s.start..s.end])
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

    fn ident(&self, p: P<'_>, base: usize) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p, base),
        }
    }

    fn const_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let name = self.ident(it.next()?, base);
        let value = self.expr(it.next()?, base);
        Some(Item::Const(Const { name, value, span }))
    }

    fn set_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let name = self.ident(it.next()?, base);
        let mut ty = None;
        let mut body = it.next()?;
        if body.as_rule() == Rule::ident {
            ty = Some(self.ident(body, base));
            body = it.next()?;
        }
        let body_span = self.span(&body, base);
        let elems = body.into_inner().map(|e| self.expr(e, base)).collect();
        Some(Item::Set(SetDef {
            name,
            ty,
            elems,
            body: body_span,
            span,
        }))
    }

    fn route_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let prefix = self.expr(it.next()?, base);
        let (mut via, mut dev) = (None, None);
        while let Some(k) = it.next() {
            match k.as_rule() {
                Rule::k_via => via = Some(self.expr(it.next()?, base)),
                _ => dev = Some(self.ident(it.next()?, base)),
            }
        }
        Some(Item::Route(Route {
            prefix,
            via,
            dev,
            span,
        }))
    }

    fn iface_stmt(&mut self, p: P<'_>, base: usize) -> Option<IfaceStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let rule = inner.as_rule();
        let mut vals: Vec<Expr> = inner
            .into_inner()
            .skip(1)
            .map(|v| self.expr(v, base))
            .collect();
        let kind = match rule {
            Rule::iface_address => IfaceStmtKind::Address(vals),
            Rule::iface_mac => IfaceStmtKind::Mac(vals.pop()?),
            _ => IfaceStmtKind::Mtu(vals.pop()?),
        };
        Some(IfaceStmt { kind, span })
    }

    fn opt(&mut self, p: P<'_>, base: usize) -> Option<Opt> {
        let mut it = p.into_inner();
        let key = it.next()?;
        let key = Ident {
            name: key.as_str().to_string(),
            span: self.span(&key, base),
        };
        let value = self.expr(it.next()?, base);
        Some(Opt { key, value })
    }

    fn pool_stmt(&mut self, p: P<'_>, base: usize) -> Option<PoolStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let kind = match inner.as_rule() {
            Rule::weight_def => PoolStmtKind::Weight(self.expr(inner.into_inner().nth(1)?, base)),
            Rule::backend => {
                let mut it = inner.into_inner().skip(1);
                let addr = self.expr(it.next()?, base);
                let opts = it
                    .filter_map(|o| self.opt(o.into_inner().next()?, base))
                    .collect();
                PoolStmtKind::Backend(Backend { addr, opts })
            }
            _ => {
                let mut it = inner.into_inner().skip(1);
                let kind = self.ident(it.next()?, base);
                let opts = it.filter_map(|o| self.opt(o, base)).collect();
                PoolStmtKind::Health(Health { kind, opts })
            }
        };
        Some(PoolStmt { kind, span })
    }

    fn service_stmt(&mut self, p: P<'_>, base: usize) -> Option<ServiceStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let rule = inner.as_rule();
        let mut it = inner.into_inner().skip(1);
        let kind = match rule {
            Rule::vip => {
                let addr = self.expr(it.next()?, base);
                let proto = self.ident(it.next()?, base);
                let ports = it
                    .filter(|p| p.as_rule() == Rule::value)
                    .map(|v| self.expr(v, base))
                    .collect();
                ServiceStmtKind::Vip { addr, proto, ports }
            }
            Rule::pool_ref => ServiceStmtKind::Pool(self.ident(it.next()?, base)),
            Rule::balance => {
                let b = it.next()?;
                if b.as_rule() == Rule::hash_alg {
                    let hspan = self.span(&b, base);
                    let fields = b
                        .into_inner()
                        .skip(1)
                        .map(|f| self.ident(f, base))
                        .collect();
                    ServiceStmtKind::Balance(Balance::Hash {
                        fields,
                        span: hspan,
                    })
                } else {
                    ServiceStmtKind::Balance(Balance::Named(self.ident(b, base)))
                }
            }
            Rule::mode => {
                let kind = self.ident(it.next()?, base);
                let to_port = it
                    .find(|p| p.as_rule() == Rule::value)
                    .map(|v| self.expr(v, base));
                ServiceStmtKind::Mode { kind, to_port }
            }
            _ => ServiceStmtKind::Unknown(self.ident(it.next()?, base)),
        };
        Some(ServiceStmt { kind, span })
    }

    fn rule(&mut self, p: P<'_>, base: usize) -> Option<FilterRule> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let cond = self.expr(it.next()?, base);
        let a = it.next()?;
        let aspan = self.span(&a, base);
        let inner = a.into_inner().next()?;
        let action = if inner.as_rule() == Rule::balance_action {
            let mut bi = inner.into_inner();
            let kind = self.ident(bi.next()?, base);
            let service = Some(self.ident(bi.next()?, base));
            Action {
                kind,
                service,
                span: aspan,
            }
        } else {
            Action {
                kind: self.ident(inner, base),
                service: None,
                span: aspan,
            }
        };
        Some(FilterRule { cond, action, span })
    }

    /// The tree of a filter rule read by [`fast::read_rule`], as [`Driver::rule`]
    /// builds it from pest's pairs.
    fn raw_rule(&mut self, raw: fast::RawRule<'_>, start: usize) -> FilterRule {
        let span = Span::new(start, self.trim_end(start, raw.end));
        let cond = self.climb(&mut raw.cond.into_iter().peekable(), 0, 0);
        let word = |(s, e): (usize, usize)| Ident {
            name: self.src[s..e].to_string(),
            span: Span::new(s, self.trim_end(s, e)),
        };
        let kind = word(raw.kind);
        let service = raw.service.map(word);
        let action = Action {
            span: Span::new(kind.span.start, self.trim_end(kind.span.start, raw.end)),
            kind,
            service,
        };
        FilterRule { cond, action, span }
    }

    fn packet(&mut self, p: P<'_>, base: usize) -> Option<Packet> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let proto = self.ident(it.next()?, base);
        let src = self.endpoint(it.next()?, base)?;
        let dst = self.endpoint(it.next()?, base)?;
        let mut opts = Vec::new();
        let mut verdict = None;
        for o in it {
            if o.as_rule() == Rule::verdict {
                let vspan = self.span(&o, base);
                let inner = o.into_inner().next()?;
                verdict = Some(match inner.as_rule() {
                    Rule::ident => Verdict {
                        kind: self.ident(inner, base),
                        arg: None,
                        span: vspan,
                    },
                    _ => {
                        let mut vi = inner.into_inner();
                        let kind = self.ident(vi.next()?, base);
                        let arg = vi.last().map(|a| self.ident(a, base));
                        Verdict {
                            kind,
                            arg,
                            span: vspan,
                        }
                    }
                });
                continue;
            }
            let o = o.into_inner().next()?;
            let rule = o.as_rule();
            if rule == Rule::flag {
                opts.push(PacketOpt::Flag(self.ident(o, base)));
                continue;
            }
            let v = o.into_inner().nth(1)?;
            opts.push(match rule {
                Rule::opt_type => PacketOpt::Type(self.expr(v, base)),
                Rule::opt_code => PacketOpt::Code(self.expr(v, base)),
                Rule::opt_ttl => PacketOpt::Ttl(self.expr(v, base)),
                Rule::opt_len => PacketOpt::Len(self.expr(v, base)),
                _ => PacketOpt::On(self.ident(v, base)),
            });
        }
        Some(Packet {
            proto,
            src,
            dst,
            opts,
            verdict: verdict?,
            span,
        })
    }

    fn endpoint(&mut self, p: P<'_>, base: usize) -> Option<Endpoint> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let addr = self.expr(it.next()?, base);
        let port = it.next().map(|v| self.expr(v, base));
        Some(Endpoint { addr, port, span })
    }

    // ---- expressions -------------------------------------------------------------

    fn expr(&mut self, p: P<'_>, base: usize) -> Expr {
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
    fn climb<'i, T: Flat<'i>>(
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
    fn literal(&mut self, rule: Rule, s: &str, span: Span) -> Option<Lit> {
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
    fn classify(&mut self, s: &str, span: Span) -> Option<Lit> {
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

    fn prefix_len(&mut self, l: &str, span: Span) -> Option<u32> {
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

    fn int(&mut self, s: &str, span: Span) -> Option<(u64, u8)> {
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

    fn addr(&mut self, s: &str, span: Span) -> Option<IpAddr> {
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

    fn bad_literal(&mut self, code: &'static str, msg: impl Into<String>, span: Span, help: &str) {
        self.diags
            .push(Diagnostic::error(code, msg).label(span, "here").help(help));
    }
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

/// An element of a flat expression row, as [`Driver::climb`] reads it: a pest pair,
/// or a token of the filter rule reader ([`fast::Node`]).
trait Flat<'i> {
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

/// Run a parse with pest's detailed error tracking on. The switch is global, so it
/// is turned on only around a parse already known to fail, and one such parse runs
/// at a time: two threads parsing at once (tests, a language server) must not turn
/// it off under each other, which would change the error messages. A parse that
/// runs meanwhile without asking for detail may get it; that changes only its
/// error's detail, never whether it parses, and such an error is re-read here.
fn detailed<T>(f: impl FnOnce() -> T) -> T {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let out = f();
    pest::set_error_detail(false);
    out
}

const BP_NOT: u8 = 5;
const BP_NEG: u8 = 13;

/// (left, right) binding powers of an infix operator; left-associative.
fn infix_bp(rule: Rule, text: &str) -> (u8, u8) {
    match rule {
        Rule::or_op => (1, 2),
        Rule::and_op => (3, 4),
        Rule::cmp_op | Rule::k_in => (7, 8),
        Rule::add_op => (9, 10),
        Rule::mul_op => (11, 12),
        _ => unreachable!("not an infix operator: {rule:?} `{text}`"),
    }
}

fn cmp_op(s: &str) -> CmpOp {
    match s {
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

fn arith_op(s: &str) -> ArithOp {
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

/// The furthest position a failed parse reached, relative to the text parsed from `base`, made absolute.
fn furthest(e: &pest::error::Error<Rule>, base: usize) -> usize {
    let rel = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    base + e
        .parse_attempts()
        .map_or(rel, |pa| pa.max_position.max(rel))
}

/// Punctuation of statements (not operators), named when it is what is missing.
const STRUCTURAL: &[&str] = &["->", "=>", "{", "}", "(", ")", "[", "]", ",", "="];

/// "`a`, `b` or `c`" as its keywords; any other description as it is.
fn split_keywords(d: String) -> Vec<String> {
    let parts: Vec<&str> = d.split(", ").flat_map(|p| p.split(" or ")).collect();
    let keyword = |p: &&str| {
        p.len() > 2
            && p.starts_with('`')
            && p.ends_with('`')
            && !p[1..p.len() - 1].contains(['`', ' '])
    };
    if parts.len() > 1 && parts.iter().all(keyword) {
        parts.into_iter().map(String::from).collect()
    } else {
        vec![d]
    }
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What a rule stands for, in an error message. None: not worth naming.
fn describe(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::ident => "a name",
        Rule::field => "a field such as `ip.src`",
        Rule::value
        | Rule::num_tok
        | Rule::hex_tok
        | Rule::ipv6
        | Rule::ipv4
        | Rule::string
        | Rule::boolean
        | Rule::no_literal => "a value",
        Rule::expr | Rule::paren | Rule::set_lit => "an expression",
        Rule::or_op => "`||`",
        Rule::and_op => "`&&`",
        Rule::not_op => "`!`",
        Rule::neg_op => "`-`",
        Rule::cmp_op => "a comparison",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::k_interface => "`interface`",
        Rule::k_const => "`const`",
        Rule::k_set => "`set`",
        Rule::k_pool => "`pool`",
        Rule::k_service => "`service`",
        Rule::k_filter => "`filter`",
        Rule::k_route => "`route`",
        Rule::k_test => "`test`",
        Rule::k_address => "`address`",
        Rule::k_mac => "`mac`",
        Rule::k_mtu => "`mtu`",
        Rule::k_backend => "`backend`",
        Rule::k_weight => "`weight`",
        Rule::k_port => "`port`",
        Rule::k_agent => "`agent`",
        Rule::k_health => "`health`",
        Rule::k_vip => "`vip`",
        Rule::k_balance => "`balance`",
        Rule::k_hash => "`hash`",
        Rule::k_mode => "`mode`",
        Rule::k_to => "`to`",
        Rule::k_unknown => "`unknown`",
        Rule::k_via => "`via`",
        Rule::k_dev => "`dev`",
        Rule::k_forward => "`forward`",
        Rule::k_in => "`in`",
        Rule::k_true => "`true`",
        Rule::k_false => "`false`",
        Rule::k_type => "`type`",
        Rule::k_code => "`code`",
        Rule::k_ttl => "`ttl`",
        Rule::k_len => "`len`",
        Rule::k_on => "`on`",
        Rule::health_key | Rule::health_opt => {
            "a health option (port, interval, timeout, path, rise, fall, expect)"
        }
        Rule::backend_opt | Rule::opt_weight | Rule::opt_port | Rule::opt_agent => {
            "`agent`, `port` or `weight`"
        }
        Rule::EOI => "the end of the line",
        Rule::interface_head
        | Rule::pool_head
        | Rule::service_head
        | Rule::filter_head
        | Rule::test_head => "`{`",
        Rule::const_item => "a constant definition `const NAME = VALUE`",
        Rule::set_item => "a set definition `set NAME = { ... }`",
        Rule::route_item => "a route `route PREFIX [via ADDRESS] [dev INTERFACE]`",
        Rule::iface_stmt | Rule::iface_address | Rule::iface_mac | Rule::iface_mtu => {
            "`address`, `mac` or `mtu`"
        }
        Rule::pool_stmt | Rule::weight_def | Rule::backend | Rule::health => {
            "`backend`, `health` or `weight`"
        }
        Rule::service_stmt
        | Rule::vip
        | Rule::pool_ref
        | Rule::balance
        | Rule::mode
        | Rule::unknown => "`vip`, `pool`, `balance`, `mode` or `unknown`",
        Rule::filter_rule => "a rule `CONDITION => ACTION`",
        Rule::action | Rule::balance_action => "an action",
        Rule::packet => "a packet line `PROTO SRC -> DST [OPTIONS] => VERDICT`",
        Rule::endpoint => "an address",
        Rule::verdict | Rule::verdict_balance | Rule::verdict_forward => "a verdict",
        Rule::hash_alg => "`hash(...)`",
        _ => return None,
    })
}

fn block_help(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::iface_stmt => "an interface block holds `address A/L, ...`, `mac M` and `mtu N`",
        Rule::pool_stmt => {
            "a pool block holds `backend ADDRESS [weight N] [port N] [agent N]`, `health KIND [OPTIONS]` and `weight = EXPRESSION`"
        }
        Rule::service_stmt => {
            "a service block holds `vip ADDRESS PROTO port P, ...`, `pool NAME`, `balance ALGORITHM`, `mode nat|dsr` and `unknown reset|balance`"
        }
        Rule::filter_rule => {
            "a filter rule is `CONDITION => ACTION`, for example `tcp.dport == 23 => drop`"
        }
        Rule::packet => {
            "a test line is `PROTO SRC[:PORT] -> DST[:PORT] [FLAGS] => VERDICT`, for example `tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn => balance web`"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "filter {{ {}tcp.syn{} => drop }}",
            "(".repeat(500),
            ")".repeat(500)
        );
        let p = parse(&deep);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].code, "lbp::parse::too_deep");
        let nots = format!("filter {{ {}(tcp.syn) => drop }}", "!".repeat(500));
        assert_eq!(parse(&nots).diagnostics[0].code, "lbp::parse::too_deep");
    }

    #[test]
    fn nesting_at_the_limit_parses_on_a_small_stack() {
        // Exactly MAX_NESTING levels (`!` and `(` each one), inside a block whose
        // braces are not a level.
        let n = MAX_NESTING / 2;
        let src = format!(
            "filter {{\n  {}tcp.syn{} => drop\n}}\n",
            "!(".repeat(n),
            ")".repeat(n)
        );
        let h = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || parse(&src).diagnostics.len())
            .unwrap();
        assert_eq!(h.join().unwrap(), 0);
    }

    #[test]
    fn the_limit_counts_brackets_not_blocks() {
        let rule = |n: usize| {
            format!(
                "set s = {{ 1 }}\nfilter {{\n  {}tcp.dport in s{} => drop\n}}\n",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        assert!(parse(&rule(MAX_NESTING)).diagnostics.is_empty());
        let over = parse(&rule(MAX_NESTING + 1));
        assert_eq!(over.diagnostics.len(), 1, "{:?}", over.diagnostics);
        assert_eq!(over.diagnostics[0].code, "lbp::parse::too_deep");
        // A set item's braces are a level.
        let set = format!(
            "set s = {}1{}\n",
            "{".repeat(MAX_NESTING + 1),
            "}".repeat(MAX_NESTING + 1)
        );
        assert_eq!(parse(&set).diagnostics[0].code, "lbp::parse::too_deep");
    }

    #[test]
    fn too_deep_does_not_hide_the_other_diagnostics() {
        let src = format!(
            "filter {{\n  {}tcp.syn{} => drop\n  tcp.dport == => drop\n}}\npol web {{ }}\n",
            "(".repeat(300),
            ")".repeat(300)
        );
        let p = parse(&src);
        let codes: Vec<&str> = p.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            [
                "lbp::parse::too_deep",
                "lbp::parse::syntax",
                "lbp::parse::unknown_item"
            ],
            "{:?}",
            p.diagnostics
        );
        // The rule itself is still read (its spans are the source's).
        let Some(Item::Filter(f)) = p.policy.items.first() else {
            panic!("no filter: {:?}", p.policy);
        };
        assert_eq!(
            &src[f.rules[0].action.span.start..f.rules[0].action.span.end],
            "drop"
        );
    }

    #[test]
    fn a_character_of_several_bytes_before_an_error_is_no_panic() {
        // The `=>` hint looks back for a word before the error; `é` is two bytes.
        let p = parse("filter {\n    &&\nforward\n,local eth.type 300ms\tt\n\"open  \u{e9}\n}\n");
        assert!(p.diagnostics.iter().any(|d| d.code == "lbp::parse::syntax"));
    }

    #[test]
    fn a_byte_order_mark_is_not_text() {
        let p = parse("\u{feff}filter { tcp.dport == 23 => drop }\n");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!(p.policy.items.len(), 1);
        // Only at the start.
        assert!(!parse("filter { }\n\u{feff}").diagnostics.is_empty());
    }

    #[test]
    fn one_error_per_broken_statement() {
        let src = "pool p {\n  backend 1.2.3.4 wieght 3\n  backend 1.2.3.5\n  helth tcp\n}\nservice s { vip 1.2.3.4 tcp port 80\n pool p }\n";
        let p = parse(src);
        assert_eq!(p.diagnostics.len(), 2, "{:#?}", p.diagnostics);
        let Item::Pool(pool) = &p.policy.items[0] else {
            panic!()
        };
        assert_eq!(pool.stmts.len(), 2);
        assert!(matches!(p.policy.items[1], Item::Service(_)));
    }

    #[test]
    fn unclosed_block_stops_at_the_next_item() {
        let src = "pool p {\n  backend 1.2.3.4\n\nservice s {\n  pool p\n}\n";
        let p = parse(src);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].code, "lbp::parse::unclosed_block");
        assert_eq!(p.policy.items.len(), 2);
    }

    #[test]
    fn literals_decode() {
        let src = "const a = 0x0800\nconst b = 2001:db8::1\nconst c = 198.18.0.0/15\nconst d = 02:00:00:00:00:01\nconst e = 300ms\nconst f = 1024..65535\nconst g = 0.5\nconst h = \"a\\\"b\"\n";
        let p = parse(src);
        assert!(p.diagnostics.is_empty(), "{:#?}", p.diagnostics);
        let lits: Vec<Lit> = p
            .policy
            .items
            .iter()
            .map(|i| match i {
                Item::Const(c) => match &c.value.kind {
                    ExprKind::Lit(l) => l.clone(),
                    k => panic!("{k:?}"),
                },
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            lits[0],
            Lit::Int {
                value: 0x800,
                hex_digits: 4
            }
        );
        assert_eq!(lits[1], Lit::Addr("2001:db8::1".parse().unwrap()));
        assert_eq!(
            lits[2],
            Lit::Prefix {
                addr: "198.18.0.0".parse().unwrap(),
                len: 15
            }
        );
        assert_eq!(lits[3], Lit::Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            lits[4],
            Lit::Duration {
                amount: 300,
                unit: TimeUnit::Ms
            }
        );
        assert_eq!(lits[5], Lit::Range(1024, 65535));
        assert_eq!(lits[6], Lit::Float(0.5));
        assert_eq!(lits[7], Lit::Str("a\"b".into()));
    }

    #[test]
    fn bad_literals_are_diagnosed() {
        let p = parse(
            "const a = 300.1.2.3\nconst b = 2001:db8:::1\nconst c = 99999999999999999999999\n",
        );
        let codes: Vec<_> = p.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            [
                "lbp::parse::bad_address",
                "lbp::parse::bad_address",
                "lbp::parse::bad_number"
            ]
        );
    }
}
