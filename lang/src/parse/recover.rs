//! After a syntax error: the diagnostic in lbp's words (what was expected,
//! where, with a hint), and the recovery that skips to the next statement
//! without crossing the block's closing brace.

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};

use super::{Driver, Grammar, Rule, STRUCTURAL};
use crate::ast::*;
use crate::diag::{Diagnostic, did_you_mean};

impl<'s> Driver<'s> {
    /// Re-read the statement at `start` as a whole line (`line_rule` is the statement
    /// followed by the end of input) and report where it stops. None if the line
    /// parses, which does not happen when the statement left a word on its line.
    pub(super) fn continuation_error(
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
    pub(super) fn ran_into_next_packet(&self, start: usize, err: usize) -> bool {
        let Some(n) = self.src[start..err.min(self.src.len())].find('\n') else {
            return false;
        };
        let next = self.skip_trivia(start + n);
        next <= err
            && (self.src[next..].starts_with('}')
                || matches!(self.word_at(next), "tcp" | "udp" | "icmp" | "icmpv6"))
    }

    /// Turn a pest error into a diagnostic; returns the absolute error position.
    pub(super) fn push_pest_error(
        &mut self,
        e: pest::error::Error<Rule>,
        base: usize,
        rule: Rule,
    ) -> usize {
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
    pub(super) fn verdict_word_near(&self, at: usize) -> Option<&'s str> {
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
    pub(super) fn recover_in_block(&self, stmt_start: usize, at: usize) -> usize {
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
    pub(super) fn next_item_start(&self, pos: usize) -> usize {
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
    pub(super) fn item_starts_at(&self, pos: usize) -> bool {
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

    pub(super) fn skip_trivia(&self, mut pos: usize) -> usize {
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

    pub(super) fn word_at(&self, pos: usize) -> &'s str {
        let rest = &self.src[pos.min(self.src.len())..];
        let n = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..n]
    }

    /// The span of the token at `pos` (a word, a number or address, or one
    /// character), for labels.
    pub(super) fn token_span(&self, pos: usize) -> Span {
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

    pub(super) fn found_at(&self, pos: usize) -> String {
        let s = self.token_span(pos);
        if pos >= self.src.len() {
            "end of file".into()
        } else if s.is_empty() {
            "end of line".into()
        } else {
            format!("`{}`", &self.src[s.start..s.end])
        }
    }
}

/// Run a parse with pest's detailed error tracking on. The switch is global, so it
/// is turned on only around a parse already known to fail, and one such parse runs
/// at a time: two threads parsing at once (tests, a language server) must not turn
/// it off under each other, which would change the error messages. A parse that
/// runs meanwhile without asking for detail may get it; that changes only its
/// error's detail, never whether it parses, and such an error is re-read here.
pub(super) fn detailed<T>(f: impl FnOnce() -> T) -> T {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let out = f();
    pest::set_error_detail(false);
    out
}

/// The furthest position a failed parse reached, relative to the text parsed from `base`, made absolute.
pub(super) fn furthest(e: &pest::error::Error<Rule>, base: usize) -> usize {
    let rel = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    base + e
        .parse_attempts()
        .map_or(rel, |pa| pa.max_position.max(rel))
}

/// "`a`, `b` or `c`" as its keywords; any other description as it is.
pub(super) fn split_keywords(d: String) -> Vec<String> {
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

pub(super) fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What a rule stands for, in an error message. None: not worth naming.
pub(super) fn describe(r: Rule) -> Option<&'static str> {
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

pub(super) fn block_help(r: Rule) -> Option<&'static str> {
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
