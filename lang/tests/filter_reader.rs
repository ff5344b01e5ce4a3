//! The filter rule reader (`parse/fast.rs`) against pest: for every policy in the
//! repository and for generated rules, parsing with the reader and with pest alone
//! gives the same tree, spans, comments and diagnostics; and the reader does read
//! the well-formed rules (it is not a path that always gives up).

use lbp_lang::parse::{Parsed, parse, parse_with_pest_only, rule_is_read_fast};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::path::{Path, PathBuf};

fn same(src: &str, what: &str) {
    let a: Parsed = parse(src);
    let b: Parsed = parse_with_pest_only(src);
    assert_eq!(a.policy, b.policy, "{what}: trees differ\n{src}");
    assert_eq!(a.comments, b.comments, "{what}: comments differ\n{src}");
    assert_eq!(
        a.diagnostics, b.diagnostics,
        "{what}: diagnostics differ\n{src:?}"
    );
}

fn lbp_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") && !p.ends_with(".git") {
                lbp_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "lbp") {
            out.push(p);
        }
    }
}

#[test]
fn every_policy_in_the_repository_parses_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for d in ["policies", "tests", "src", "docs", "examples", "benches"] {
        lbp_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 100, "found only {} policies", files.len());
    let mut rules = 0;
    for f in &files {
        // Only text is a policy.
        let Ok(src) = std::fs::read_to_string(f) else {
            continue;
        };
        same(&src, &f.display().to_string());
        rules += parse(&src)
            .policy
            .items
            .iter()
            .filter_map(|i| match i {
                lbp_lang::ast::Item::Filter(f) => Some(f.rules.len()),
                _ => None,
            })
            .sum::<usize>();
    }
    assert!(
        rules > 100,
        "only {rules} filter rules in the repository's policies"
    );
}

/// A deterministic generator, so that a failure reproduces.
struct Rng(TestRng);

impl Rng {
    fn new(seed: u8) -> Rng {
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn chance(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// What may stand between two tokens (pest's implicit skip, or nothing).
const TRIVIA: &[&str] = &[
    "",
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n    ",
    " # note\n    ",
    "\r\n",
];

const FIELDS: &[&str] = &[
    "ip.src",
    "ip.dst",
    "tcp.dport",
    "udp.sport",
    "ip6.src",
    "in.iface",
    "ip.ttl",
    "icmp.type",
    "tcp.flags",
    "eth.type",
    "a.b",
];
const LITERALS: &[&str] = &[
    "1",
    "42",
    "0x2a",
    "0x",
    "1024..2048",
    "1..",
    "300ms",
    "5m",
    "7q",
    "0.5",
    "1.2.3",
    "1e5",
    "198.18.0.1",
    "198.18.0.0/15",
    "198.18.0.1/",
    "255.255.255.256",
    "fe80::1",
    "2001:db8::/32",
    "::",
    "::1",
    "aa:bb:cc:dd:ee:ff",
    "ab:cd",
    "12:34:56:78:9a:bc",
    "true",
    "false",
    "\"text\"",
    "\"a\\\"b\"",
    "99999999999999999999",
    "0.0.0.0/33",
];
const NAMES: &[&str] = &[
    "blocked", "web", "x", "_y", "true1", "falsey", "face", "f", "t", "in1", "balance", "drop",
    "app",
];
const INFIX: &[&str] = &[
    "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in", "+", "-", "*", "/",
];
const ACTIONS: &[&str] = &[
    "drop",
    "accept",
    "reset",
    "local",
    "forward",
    "balance web",
    "balance",
    "balance http",
    "dorp",
    "app echo",
    "app",
    "app icmp",
];

fn operand(r: &mut Rng, depth: u32, out: &mut String) {
    match r.next() % 10 {
        0..=2 => out.push_str(r.pick(FIELDS)),
        3..=5 => out.push_str(r.pick(LITERALS)),
        6 => out.push_str(r.pick(NAMES)),
        7 if depth < 4 => {
            out.push('(');
            out.push_str(r.pick(TRIVIA));
            expr(r, depth + 1, out);
            out.push_str(r.pick(TRIVIA));
            out.push(')');
        }
        _ => {
            out.push('{');
            let n = r.next() % 4;
            for i in 0..n {
                out.push_str(r.pick(TRIVIA));
                out.push_str(if r.chance(2) {
                    r.pick(LITERALS)
                } else {
                    r.pick(NAMES)
                });
                out.push_str(r.pick(TRIVIA));
                if i + 1 < n || r.chance(3) {
                    out.push(',');
                }
            }
            out.push_str(r.pick(TRIVIA));
            out.push('}');
        }
    }
}

fn expr(r: &mut Rng, depth: u32, out: &mut String) {
    let terms = 1 + r.next() % 4;
    for i in 0..terms {
        if i > 0 {
            out.push_str(r.pick(&[" ", " ", "", "\n    "]));
            out.push_str(r.pick(INFIX));
            out.push_str(r.pick(&[" ", " ", "", "\n    "]));
        }
        while r.chance(6) {
            out.push_str(r.pick(&["!", "-", "! ", "- "]));
        }
        operand(r, depth, out);
    }
}

/// A well-formed-looking rule: an expression, `=>` and an action, with trivia.
fn rule(r: &mut Rng) -> String {
    let mut s = String::new();
    expr(r, 0, &mut s);
    s.push_str(r.pick(TRIVIA));
    s.push_str("=>");
    s.push_str(r.pick(TRIVIA));
    s.push_str(r.pick(ACTIONS));
    s
}

#[test]
fn generated_rules_parse_the_same() {
    let mut r = Rng::new(1);
    let mut read = 0;
    let n = 20_000;
    for _ in 0..n {
        let rules: Vec<String> = (0..1 + r.next() % 3).map(|_| rule(&mut r)).collect();
        let body = rules.join(r.pick(&["\n    ", " ", "\n    # between\n    "]));
        let src = format!("filter {{\n    {body}\n}}\n");
        if rule_is_read_fast(&src, "filter {\n    ".len()) {
            read += 1;
        }
        same(&src, "generated");
    }
    // Most generated rules are well formed; the reader must read them, not leave
    // them all to pest.
    assert!(
        read > n / 4,
        "the reader read only {read} of {n} generated policies' first rule"
    );
}

#[test]
fn generated_token_soups_parse_the_same() {
    // Any order of tokens: mostly broken statements, which the reader must leave to
    // pest so that every error keeps its message.
    let mut r = Rng::new(2);
    let tokens: Vec<&str> = [FIELDS, LITERALS, NAMES, INFIX, ACTIONS]
        .concat()
        .into_iter()
        .chain([
            "(", ")", "{", "}", ",", "=>", "->", ".", "!", "-", "\"open", "é", "#",
        ])
        .collect();
    for _ in 0..20_000 {
        let mut body = String::new();
        for _ in 0..1 + r.next() % 12 {
            body.push_str(r.pick(&tokens));
            body.push_str(r.pick(TRIVIA));
        }
        let src = format!("filter {{\n    {body}\n}}\nfilter {{ ip.src == 1.2.3.4 => drop }}\n");
        same(&src, "soup");
    }
}
