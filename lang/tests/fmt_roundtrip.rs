//! Property test of the canonical formatter: random policies (every construct of the
//! grammar, with random comments, whitespace and blank lines) keep their syntax tree
//! and all their comments through `format_source`, and formatting is idempotent.
//!
//! The generator reads its decisions from a tape of random numbers that proptest
//! draws and shrinks; a number that is missing (the tape ran out) or zero always
//! picks the simplest choice, so shrinking the tape gives smaller policies.

use lbp_lang::fmt::format_source;
use lbp_lang::parse::parse;
use proptest::prelude::*;

/// What the last thing written was, to decide whether the next token may be glued
/// to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// Start of a line (after indentation) or of the file: no separator needed.
    Fresh,
    Word,
    /// Punctuation that may touch its neighbours: `( ) { } [ ] , : = == => -> && ...`.
    Punct,
    /// `/`, which must never touch a literal (`1.2.3.4/2` would be a prefix).
    Slash,
}

struct Gen {
    tape: Vec<u32>,
    pos: usize,
    out: String,
    prev: Prev,
    /// Inside a test packet: a packet is one line when its next line starts with
    /// a protocol, so no line break goes before such a word there.
    in_packet: bool,
}

const NAMES: &[&str] = &[
    "web",
    "client",
    "servers",
    "blocked",
    "admin_ports",
    "admin_nets",
    "x",
    "_y2",
    "cafe",
    "http",
    "tcp",
    "pool",
    "drop",
    "weight",
    "cpu",
    "mem",
    "clients",
    "Face",
    "a_very_long_name_for_a_thing",
];
const COMMENT_CHARS: &[&str] = &[
    "a", "b", "z", " ", " ", "#", "\"", "'", "{", "}", "=>", "->", "é", "ü", "→", "\\", "0", "9",
    ":", "@12..34", "\t", "(", ")", ",", "*",
];
const STRING_PARTS: &[&str] = &[
    "a", "web", " ", "\\\"", "\\\\", "\\n", "\\t", "#", "é", "→", "{", "}", "@1..2", ":", "'",
    "\t", "=>",
];

impl Gen {
    fn new(tape: Vec<u32>) -> Gen {
        Gen {
            tape,
            pos: 0,
            out: String::new(),
            prev: Prev::Fresh,
            in_packet: false,
        }
    }

    // ---- choices -----------------------------------------------------------------

    /// A number below `n`; 0 when the tape has run out.
    fn pick(&mut self, n: usize) -> usize {
        let v = self.tape.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        if n == 0 { 0 } else { v as usize % n }
    }

    /// True with the given probability in percent; false when the tape has run out.
    fn chance(&mut self, percent: usize) -> bool {
        self.pick(100) >= 100 - percent
    }

    /// An index into `weights`, chosen with those weights; 0 when the tape ran out.
    fn weighted(&mut self, weights: &[usize]) -> usize {
        let total: usize = weights.iter().sum();
        let mut r = self.pick(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        0
    }

    fn one<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.pick(xs.len())]
    }

    /// A field of the language's one table.
    fn field(&mut self) -> &'static str {
        let fields = lbp_lang::check::FIELDS;
        fields[self.pick(fields.len())].name
    }

    // ---- raw text ----------------------------------------------------------------

    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn indent(&mut self) -> &'static str {
        ["    ", "  ", "\t", " ", "        "][self.weighted(&[6, 2, 1, 1, 1])]
    }

    /// A comment, without its line end.
    fn comment(&mut self) -> String {
        let mut c = String::from("#");
        for _ in 0..self.pick(12) {
            c.push_str(self.one(COMMENT_CHARS));
        }
        match self.weighted(&[8, 1, 1]) {
            1 => c.push_str("   "),
            2 => c.push_str(" \t"),
            _ => {}
        }
        c
    }

    fn newline(&mut self) {
        let nl = if self.chance(5) { "\r\n" } else { "\n" };
        self.raw(nl);
    }

    /// A line end, optionally with a trailing comment and blank lines, then the
    /// indentation of the next line (`indented`: inside an item, never column 0).
    fn line_break(&mut self, indented: bool) {
        if self.chance(15) {
            let c = self.comment();
            let sp = self.one(&[" ", "  ", "\t", ""]);
            self.raw(sp);
            self.raw(&c);
        }
        self.newline();
        for _ in 0..self.weighted(&[8, 3, 1]) {
            if self.chance(30) {
                let ws = self.one(&[" ", "\t", "  "]);
                self.raw(ws);
            }
            self.newline();
        }
        if self.chance(15) {
            // Own-line comments, maybe separated by blank lines.
            for _ in 0..1 + self.pick(3) {
                if indented {
                    let ind = self.indent();
                    self.raw(ind);
                }
                let c = self.comment();
                self.raw(&c);
                self.newline();
                if self.chance(20) {
                    self.newline();
                }
            }
        }
        if indented {
            let ind = self.indent();
            self.raw(ind);
        }
        self.prev = Prev::Fresh;
    }

    /// The separator before a token inside a statement.
    fn sep(&mut self, this: Prev, breakable: bool) {
        if self.prev == Prev::Fresh {
            return;
        }
        let can_glue = self.prev != Prev::Slash
            && this != Prev::Slash
            && (self.prev == Prev::Punct || this == Prev::Punct);
        let br = if breakable { 1 } else { 0 };
        match self.weighted(&[70, if can_glue { 15 } else { 0 }, 4, 3, 5 * br, 3 * br]) {
            0 => self.raw(" "),
            1 => {}
            2 => self.raw("  "),
            3 => self.raw("\t"),
            4 => {
                self.newline();
                let ind = self.indent();
                self.raw(ind);
            }
            _ => {
                // A comment in the middle of a statement.
                self.raw(" ");
                let c = self.comment();
                self.raw(&c);
                self.newline();
                let ind = self.indent();
                self.raw(ind);
            }
        }
    }

    fn word(&mut self, s: &str) {
        let proto = matches!(s, "tcp" | "udp" | "icmp" | "icmpv6");
        self.sep(Prev::Word, !(self.in_packet && proto));
        self.raw(s);
        self.prev = Prev::Word;
    }

    fn punct(&mut self, s: &str) {
        let kind = if s == "/" { Prev::Slash } else { Prev::Punct };
        self.sep(kind, true);
        self.raw(s);
        self.prev = kind;
    }

    // ---- literals ----------------------------------------------------------------

    fn name(&mut self) -> String {
        self.one(NAMES).to_string()
    }

    fn int(&mut self) -> String {
        let v: u64 = match self.weighted(&[5, 3, 1, 1]) {
            0 => [0u64, 1, 8, 22, 80, 443, 1500, 8080, 65535][self.pick(9)],
            1 => self.pick(100_000) as u64,
            2 => u64::MAX,
            _ => (self.pick(1 << 30) as u64) << 30 | self.pick(1 << 30) as u64,
        };
        match self.weighted(&[6, 1, 3]) {
            0 => v.to_string(),
            1 => format!("00{v}"),
            _ => {
                let digits = format!("{v:x}");
                let pad = "0".repeat(self.pick(4));
                let digits = if self.chance(50) {
                    digits.to_uppercase()
                } else {
                    digits
                };
                format!("0x{pad}{digits}")
            }
        }
    }

    fn float(&mut self) -> String {
        let fs = [
            "0.5",
            "1.0",
            "1.50",
            "3.14159",
            "0.000001",
            "100000000000000000000.0",
            "2.25",
            "10.0",
        ];
        self.one(&fs).to_string()
    }

    fn ipv4(&mut self) -> String {
        let mut parts = Vec::new();
        for _ in 0..4 {
            let b = match self.weighted(&[3, 1, 1]) {
                0 => self.pick(256),
                1 => 0,
                _ => 255,
            };
            parts.push(b.to_string());
        }
        parts.join(".")
    }

    fn ipv6(&mut self) -> String {
        let mut g = [0u16; 8];
        match self.weighted(&[3, 1, 1, 1]) {
            0 => {
                g[0] = 0x2001;
                g[1] = 0xdb8;
                for x in g.iter_mut().skip(2) {
                    if self.chance(50) {
                        *x = self.pick(0x10000) as u16;
                    }
                }
            }
            1 => g[7] = 1,
            2 => {
                g[0] = 0xfe80;
                g[7] = self.pick(0x10000) as u16;
            }
            _ => {
                // IPv4-mapped
                g[5] = 0xffff;
                g[6] = self.pick(0x10000) as u16;
                g[7] = self.pick(0x10000) as u16;
            }
        }
        let addr = std::net::Ipv6Addr::from(g);
        match self.weighted(&[4, 2, 1]) {
            0 => addr.to_string(),
            1 => {
                // Eight groups, some zero-padded, mixed case.
                let groups: Vec<String> = g
                    .iter()
                    .map(|x| {
                        if self.chance(30) {
                            format!("{x:04X}")
                        } else {
                            format!("{x:x}")
                        }
                    })
                    .collect();
                groups.join(":")
            }
            _ => addr.to_string().to_uppercase(),
        }
    }

    fn prefix4(&mut self) -> String {
        let len = self.pick(33);
        format!("{}/{len}", self.ipv4())
    }

    fn prefix6(&mut self) -> String {
        let len = self.pick(129);
        format!("{}/{len}", self.ipv6())
    }

    fn mac(&mut self) -> String {
        let bytes: Vec<String> = (0..6)
            .map(|_| {
                let b = self.pick(256);
                if self.chance(30) {
                    format!("{b:02X}")
                } else {
                    format!("{b:02x}")
                }
            })
            .collect();
        bytes.join(":")
    }

    fn range(&mut self) -> String {
        let a = self.pick(70000);
        let b = self.pick(70000);
        if self.chance(20) {
            format!("0x{a:x}..0x{b:X}")
        } else {
            format!("{a}..{b}")
        }
    }

    fn duration(&mut self) -> String {
        let unit = self.one(&["ms", "s", "us", "m", "h"]);
        let zeros = if self.chance(10) { "0" } else { "" };
        format!("{zeros}{}{unit}", self.pick(1000))
    }

    fn string(&mut self) -> String {
        let mut s = String::from("\"");
        for _ in 0..self.pick(8) {
            s.push_str(self.one(STRING_PARTS));
        }
        s.push('"');
        s
    }

    /// Any literal, as source text.
    fn literal(&mut self) -> String {
        match self.pick(13) {
            0 => self.int(),
            1 => self.float(),
            2 => self.ipv4(),
            3 => self.ipv6(),
            4 => self.prefix4(),
            5 => self.prefix6(),
            6 => self.mac(),
            7 => self.range(),
            8 => self.duration(),
            9 => self.string(),
            10 => self.one(&["true", "false"]).to_string(),
            11 => self.int(),
            _ => self.prefix4(),
        }
    }

    /// An address-like value: an address, a prefix or a name.
    fn addr_value(&mut self, prefixes: bool) -> String {
        match self.weighted(&[
            4,
            2,
            if prefixes { 3 } else { 0 },
            if prefixes { 2 } else { 0 },
            1,
        ]) {
            0 => self.ipv4(),
            1 => self.ipv6(),
            2 => self.prefix4(),
            3 => self.prefix6(),
            _ => self.name(),
        }
    }

    // ---- expressions (following the grammar's levels) -----------------------------

    fn expr(&mut self, depth: u32) {
        let n = if depth > 0 {
            self.weighted(&[6, 2, 1])
        } else {
            0
        };
        for i in 0..=n {
            if i > 0 {
                self.punct("||");
            }
            self.and_expr(depth);
        }
    }

    fn and_expr(&mut self, depth: u32) {
        let n = if depth > 0 {
            self.weighted(&[5, 3, 1])
        } else {
            0
        };
        for i in 0..=n {
            if i > 0 {
                self.punct("&&");
            }
            self.not_expr(depth, 0);
        }
    }

    fn not_expr(&mut self, depth: u32, nots: u32) {
        if nots < 2 && self.chance(15) {
            self.punct("!");
            self.not_expr(depth, nots + 1);
        } else {
            self.cmp_expr(depth);
        }
    }

    fn cmp_expr(&mut self, depth: u32) {
        match self.weighted(&[2, 4, 3]) {
            0 => self.sum(depth),
            1 => {
                self.sum(depth);
                let op = self.one(&["==", "!=", "<", "<=", ">", ">="]);
                self.punct(op);
                self.sum(depth);
            }
            _ => {
                self.sum(depth);
                self.word("in");
                match self.weighted(&[3, 2, 1, 1, 1]) {
                    0 => self.set_lit(),
                    1 => {
                        let p = if self.chance(70) {
                            self.prefix4()
                        } else {
                            self.prefix6()
                        };
                        self.word(&p);
                    }
                    2 => {
                        let r = self.range();
                        self.word(&r);
                    }
                    3 => {
                        let n = self.name();
                        self.word(&n);
                    }
                    _ => self.sum(depth),
                }
            }
        }
    }

    fn sum(&mut self, depth: u32) {
        let n = if depth > 0 {
            self.weighted(&[6, 2, 1])
        } else {
            0
        };
        self.product(depth);
        for _ in 0..n {
            let op = self.one(&["+", "-"]);
            self.punct(op);
            self.product(depth);
        }
    }

    fn product(&mut self, depth: u32) {
        let n = if depth > 0 {
            self.weighted(&[6, 2, 1])
        } else {
            0
        };
        self.unary(depth, 0);
        for _ in 0..n {
            let op = self.one(&["*", "/"]);
            self.punct(op);
            self.unary(depth, 0);
        }
    }

    fn unary(&mut self, depth: u32, negs: u32) {
        if negs < 2 && self.chance(10) {
            self.punct("-");
            self.unary(depth, negs + 1);
        } else {
            self.atom(depth);
        }
    }

    fn atom(&mut self, depth: u32) {
        let deeper = if depth > 0 { 1 } else { 0 };
        match self.weighted(&[4, 3, 2, 2 * deeper, deeper]) {
            0 => {
                let f = self.field();
                self.word(f);
            }
            1 => {
                let l = self.literal();
                self.word(&l);
            }
            2 => {
                let n = self.name();
                self.word(&n);
            }
            3 => {
                self.punct("(");
                self.expr(depth - 1);
                self.punct(")");
            }
            _ => self.set_lit(),
        }
    }

    /// An inline set `{ e, ... }`, maybe empty, maybe with a trailing comma.
    fn set_lit(&mut self) {
        self.punct("{");
        let n = self.weighted(&[1, 3, 3, 2, 1]);
        for i in 0..n {
            if i > 0 {
                self.punct(",");
            }
            // Elements are literals and names only.
            let e = if self.chance(15) {
                self.name()
            } else {
                self.literal()
            };
            self.word(&e);
        }
        if n > 0 && self.chance(20) {
            self.punct(",");
        }
        self.punct("}");
    }

    /// A weight formula: arithmetic only.
    fn arith(&mut self, depth: u32) {
        let n = self.weighted(&[3, 3, 2]);
        self.arith_product(depth);
        for _ in 0..n {
            let op = self.one(&["+", "-"]);
            self.punct(op);
            self.arith_product(depth);
        }
    }

    fn arith_product(&mut self, depth: u32) {
        let n = self.weighted(&[3, 2, 1]);
        self.arith_unary(depth);
        for _ in 0..n {
            let op = self.one(&["*", "/"]);
            self.punct(op);
            self.arith_unary(depth);
        }
    }

    fn arith_unary(&mut self, depth: u32) {
        if self.chance(10) {
            self.punct("-");
        }
        match self.weighted(&[3, 3, if depth > 0 { 2 } else { 0 }, 1]) {
            0 => {
                let n = self.one(&["weight", "cpu", "mem", "clients", "rps", "exec_ms"]);
                self.word(n);
            }
            1 => {
                let n = if self.chance(70) {
                    self.int()
                } else {
                    self.float()
                };
                self.word(&n);
            }
            2 => {
                self.punct("(");
                self.arith(depth - 1);
                self.punct(")");
            }
            _ => {
                let n = self.name();
                self.word(&n);
            }
        }
    }

    // ---- items -------------------------------------------------------------------

    fn policy(&mut self) {
        match self.weighted(&[6, 1, 1, 1]) {
            1 => self.raw("\n\n"),
            2 => {
                let c = self.comment();
                self.raw(&c);
                self.newline();
            }
            3 => self.raw("  \n"),
            _ => {}
        }
        self.prev = Prev::Fresh;
        let n = self.pick(9);
        for i in 0..n {
            if i > 0 {
                if self.chance(5) {
                    self.raw(" ");
                    self.prev = Prev::Fresh;
                } else {
                    self.line_break(false);
                }
            }
            self.item();
        }
        match self.weighted(&[3, 3, 1, 1, 1]) {
            1 => self.raw("\n"),
            2 => self.raw("\n\n\n"),
            3 => {
                let c = self.comment();
                self.raw("  ");
                self.raw(&c);
            }
            4 => {
                let c = self.comment();
                self.raw("\n\n");
                self.raw(&c);
                self.raw("\n");
            }
            _ => {}
        }
    }

    fn item(&mut self) {
        match self.pick(8) {
            0 => self.const_item(),
            1 => self.route(),
            2 => self.set_item(),
            3 => self.block("interface", Gen::iface_stmt),
            4 => self.block("pool", Gen::pool_stmt),
            5 => self.block("service", Gen::service_stmt),
            6 => self.block("filter", Gen::filter_rule),
            _ => self.block("test", Gen::packet),
        }
    }

    fn const_item(&mut self) {
        self.word("const");
        let n = self.name();
        self.word(&n);
        self.punct("=");
        match self.weighted(&[3, 2, 1]) {
            0 => {
                let l = self.literal();
                self.word(&l);
            }
            1 => self.expr(2),
            _ => self.arith(2),
        }
    }

    fn route(&mut self) {
        self.word("route");
        let p = match self.weighted(&[4, 2, 1]) {
            0 => self.prefix4(),
            1 => self.prefix6(),
            _ => self.name(),
        };
        self.word(&p);
        if self.chance(60) {
            self.word("via");
            let v = self.addr_value(false);
            self.word(&v);
        }
        if self.chance(60) {
            self.word("dev");
            let d = self.name();
            self.word(&d);
        }
    }

    fn set_item(&mut self) {
        self.word("set");
        let n = self.name();
        self.word(&n);
        if self.chance(30) {
            self.punct(":");
            let t = self.one(&["prefix", "port", "address", "int"]);
            self.word(t);
        }
        self.punct("=");
        self.punct("{");
        let n = match self.weighted(&[1, 4, 3, 2]) {
            0 => 0,
            1 => 1 + self.pick(3),
            2 => 3 + self.pick(5),
            _ => 8 + self.pick(12),
        };
        let kind = self.pick(5);
        for i in 0..n {
            if i > 0 {
                self.punct(",");
                if self.chance(10) {
                    self.line_break(true);
                }
            }
            let e = match kind {
                0 => self.prefix4(),
                1 => self.int(),
                2 => self.addr_value(true),
                3 => self.range(),
                _ => self.literal(),
            };
            self.word(&e);
        }
        if n > 0 && self.chance(25) {
            self.punct(",");
        }
        if self.chance(10) {
            self.line_break(true);
        }
        self.punct("}");
    }

    /// `HEAD {` statements `}`.
    fn block(&mut self, kind: &str, stmt: fn(&mut Gen)) {
        self.word(kind);
        match kind {
            "filter" => {}
            "test" => {
                let s = self.string();
                self.word(&s);
            }
            _ => {
                let n = self.name();
                self.word(&n);
            }
        }
        self.punct("{");
        let n = self.weighted(&[1, 4, 3, 2]) + if self.chance(20) { self.pick(6) } else { 0 };
        for i in 0..n {
            // Between statements: a line break (maybe with comments and blank
            // lines), or only a space, or (right after `{`) nothing.
            match self.weighted(&[8, 1, if i == 0 { 1 } else { 0 }]) {
                0 => self.line_break(true),
                1 => self.raw(" "),
                _ => {}
            }
            self.prev = Prev::Fresh;
            stmt(self);
        }
        match self.weighted(&[5, 2, 1]) {
            0 => {
                self.line_break(false);
            }
            1 => self.raw(" "),
            _ => {}
        }
        self.prev = Prev::Fresh;
        self.punct("}");
    }

    fn iface_stmt(&mut self) {
        match self.weighted(&[3, 1, 1]) {
            0 => {
                self.word("address");
                for i in 0..1 + self.weighted(&[3, 2, 1]) {
                    if i > 0 {
                        self.punct(",");
                    }
                    let a = self.addr_value(true);
                    self.word(&a);
                }
            }
            1 => {
                self.word("mac");
                let m = self.mac();
                self.word(&m);
            }
            _ => {
                self.word("mtu");
                let n = self.int();
                self.word(&n);
            }
        }
    }

    fn pool_stmt(&mut self) {
        match self.weighted(&[4, 2, 1]) {
            0 => {
                self.word("backend");
                let a = match self.weighted(&[4, 2, 1]) {
                    0 => self.ipv4(),
                    1 => self.ipv6(),
                    _ => self.one(&["web", "cafe", "x"]).to_string(),
                };
                self.word(&a);
                for _ in 0..self.weighted(&[3, 2, 2]) {
                    let k = self.one(&["weight", "port"]);
                    self.word(k);
                    let v = self.int();
                    self.word(&v);
                }
            }
            1 => {
                self.word("health");
                let k = self.one(&["tcp", "http", "udp"]);
                self.word(k);
                for _ in 0..self.weighted(&[1, 2, 2, 1]) {
                    let key = self.one(&[
                        "port", "interval", "timeout", "path", "rise", "fall", "expect",
                    ]);
                    self.word(key);
                    let v = match key {
                        "interval" | "timeout" => self.duration(),
                        "path" => self.string(),
                        _ => self.int(),
                    };
                    self.word(&v);
                }
            }
            _ => {
                self.word("weight");
                self.punct("=");
                self.arith(2);
            }
        }
    }

    fn service_stmt(&mut self) {
        match self.pick(5) {
            0 => {
                self.word("vip");
                let a = match self.weighted(&[3, 2, 1]) {
                    0 => self.ipv4(),
                    1 => self.ipv6(),
                    _ => self.one(&["vip", "web"]).to_string(),
                };
                self.word(&a);
                let p = self.one(&["tcp", "udp", "icmp", "sctp"]);
                self.word(p);
                let ports = self.weighted(&[1, 3, 2, 1]);
                if ports > 0 {
                    self.word("port");
                    for i in 0..ports {
                        if i > 0 {
                            self.punct(",");
                        }
                        let v = if self.chance(80) {
                            self.int()
                        } else {
                            self.name()
                        };
                        self.word(&v);
                    }
                }
            }
            1 => {
                self.word("pool");
                let n = self.name();
                self.word(&n);
            }
            2 => {
                self.word("balance");
                if self.chance(40) {
                    self.word("hash");
                    self.punct("(");
                    for i in 0..1 + self.pick(3) {
                        if i > 0 {
                            self.punct(",");
                        }
                        let f = self.field();
                        self.word(f);
                    }
                    self.punct(")");
                } else {
                    let a = self.one(&["maglev", "round_robin", "least_load"]);
                    self.word(a);
                }
            }
            3 => {
                self.word("mode");
                let m = self.one(&["nat", "dsr"]);
                self.word(m);
                if self.chance(50) {
                    self.word("to");
                    self.word("port");
                    let p = self.int();
                    self.word(&p);
                }
            }
            _ => {
                self.word("unknown");
                let u = self.one(&["reset", "balance"]);
                self.word(u);
            }
        }
    }

    fn filter_rule(&mut self) {
        self.expr(3);
        self.punct("=>");
        if self.chance(20) {
            self.word("balance");
            let n = self.name();
            self.word(&n);
        } else {
            let a = self.one(&["drop", "accept", "reset", "local", "forward"]);
            self.word(a);
        }
    }

    fn endpoint(&mut self) {
        match self.weighted(&[4, 2, 1, 1, 2]) {
            0 => {
                let a = self.ipv4();
                self.word(&a);
                self.port();
            }
            1 => {
                self.punct("[");
                let a = self.ipv6();
                self.word(&a);
                self.punct("]");
                self.port();
            }
            2 => {
                self.punct("[");
                let a = self.ipv6();
                self.word(&a);
                self.punct("]");
            }
            3 => {
                let a = self.ipv6();
                self.word(&a);
            }
            _ => {
                let n = self.name();
                self.word(&n);
                self.port();
            }
        }
    }

    fn port(&mut self) {
        if self.chance(70) {
            self.punct(":");
            let p = if self.chance(85) {
                self.int()
            } else {
                self.name()
            };
            self.word(&p);
        }
    }

    fn packet(&mut self) {
        let p = self.one(&["tcp", "udp", "icmp", "icmpv6"]);
        self.word(p);
        self.in_packet = true;
        self.packet_rest();
        self.in_packet = false;
    }

    fn packet_rest(&mut self) {
        self.endpoint();
        self.punct("->");
        self.endpoint();
        for _ in 0..self.weighted(&[3, 3, 2, 1]) {
            match self.pick(7) {
                0 | 1 => {
                    let f = self.one(&["syn", "ack", "fin", "rst", "psh", "urg"]);
                    self.word(f);
                }
                2 => {
                    let k = self.one(&["type", "code"]);
                    self.word(k);
                    let v = self.int();
                    self.word(&v);
                }
                3 => {
                    self.word("ttl");
                    let v = self.int();
                    self.word(&v);
                }
                4 => {
                    self.word("len");
                    let v = self.int();
                    self.word(&v);
                }
                _ => {
                    self.word("on");
                    let n = self.name();
                    self.word(&n);
                }
            }
        }
        self.punct("=>");
        match self.weighted(&[4, 1, 1]) {
            0 => {
                let v = self.one(&["drop", "reset", "local"]);
                self.word(v);
            }
            1 => {
                self.word("balance");
                let n = self.name();
                self.word(&n);
            }
            _ => {
                self.word("forward");
                self.word("dev");
                let n = self.name();
                self.word(&n);
            }
        }
    }
}

fn generate(tape: Vec<u32>) -> String {
    let mut g = Gen::new(tape);
    g.policy();
    g.out
}

/// A `{:?}` rendering with every span (`@start..end`) removed.
fn strip_spans(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let a = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let after = &tail[a..];
        match after.strip_prefix("..") {
            Some(b) if a > 0 => {
                let n = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                if n > 0 {
                    rest = &b[n..];
                } else {
                    out.push('@');
                    rest = tail;
                }
            }
            _ => {
                out.push('@');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn comments(src: &str) -> Vec<String> {
    parse(src)
        .comments
        .iter()
        .map(|c| src[c.start..c.end].trim_end().to_string())
        .collect()
}

fn check(src: &str) -> Result<(), TestCaseError> {
    let before = parse(src);
    prop_assert!(
        before.diagnostics.is_empty(),
        "generated source does not parse: {:#?}\n{}",
        before.diagnostics,
        src
    );
    let formatted = match format_source(src) {
        Ok(f) => f,
        Err(d) => {
            return Err(TestCaseError::fail(format!(
                "format_source refused: {d:#?}\n{src}"
            )));
        }
    };
    let after = parse(&formatted);
    prop_assert!(
        after.diagnostics.is_empty(),
        "formatted text does not parse: {:#?}\n{}",
        after.diagnostics,
        formatted
    );
    prop_assert_eq!(
        strip_spans(&format!("{:?}", before.policy)),
        strip_spans(&format!("{:?}", after.policy)),
        "the tree changed\n--- source ---\n{}\n--- formatted ---\n{}",
        src,
        formatted
    );
    prop_assert_eq!(
        before.comments.len(),
        after.comments.len(),
        "comments lost\n{}\n---\n{}",
        src,
        formatted
    );
    prop_assert_eq!(
        comments(src),
        comments(&formatted),
        "comments changed\n{}\n---\n{}",
        src,
        formatted
    );
    let again = format_source(&formatted).map_err(|d| TestCaseError::fail(format!("{d:#?}")))?;
    prop_assert_eq!(
        &again,
        &formatted,
        "not idempotent\n--- source ---\n{}",
        src
    );
    check_layout(&formatted).map_err(|e| TestCaseError::fail(format!("{e}\n--- source ---\n{src}")))
}

/// Layout invariants of formatted text.
fn check_layout(formatted: &str) -> Result<(), TestCaseError> {
    if !formatted.is_empty() {
        prop_assert!(
            formatted.ends_with('\n') && !formatted.ends_with("\n\n"),
            "bad file end:\n{}",
            formatted
        );
        prop_assert!(
            !formatted.starts_with('\n'),
            "blank first line:\n{}",
            formatted
        );
    }
    let lines: Vec<&str> = formatted.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        prop_assert!(
            !l.ends_with(' ') && !l.ends_with('\t'),
            "trailing whitespace on line {}:\n{}",
            i + 1,
            formatted
        );
        prop_assert!(
            !l.contains('\r'),
            "carriage return on line {}:\n{}",
            i + 1,
            formatted
        );
        if l.is_empty() {
            let prev = lines.get(i.wrapping_sub(1)).copied().unwrap_or("");
            let next = lines.get(i + 1).copied().unwrap_or("");
            prop_assert!(
                !prev.is_empty(),
                "two blank lines at line {}:\n{}",
                i + 1,
                formatted
            );
            let code = prev.split_once("  #").map_or(prev, |(code, _)| code);
            let opens = code.ends_with(" {");
            prop_assert!(
                !opens || prev.trim_start().starts_with('#'),
                "blank after {{ at {}:\n{}",
                i + 1,
                formatted
            );
            prop_assert!(
                next != "}",
                "blank before }} at line {}:\n{}",
                i + 1,
                formatted
            );
        }
    }
    Ok(())
}

proptest! {
    // 256 cases (a few seconds in debug mode); PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn formatting_keeps_the_tree_and_the_comments(tape in prop::collection::vec(any::<u32>(), 0..3000)) {
        let src = generate(tape);
        check(&src)?;
    }
}

#[test]
fn the_span_stripper() {
    assert_eq!(
        strip_spans("Ident { name: \"a\", span: @12..13 }"),
        "Ident { name: \"a\", span:  }"
    );
    assert_eq!(strip_spans("@1..2@3..4 @x @5.. a@b"), " @x @5.. a@b");
}

/// Every construct shows up in the generated policies (the generator is not stuck
/// on a narrow corner).
#[test]
fn the_generator_covers_the_grammar() {
    let mut all = String::new();
    let mut tree = String::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200 {
        let tape: Vec<u32> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect();
        let src = generate(tape);
        let p = parse(&src);
        assert!(p.diagnostics.is_empty(), "{:#?}\n{src}", p.diagnostics);
        tree.push_str(&format!("{:?}", p.policy));
        all.push_str(&src);
    }
    for needle in [
        "Interface(",
        "Address(",
        "Mac(",
        "Mtu(",
        "Const(",
        "Set(SetDef",
        "ty: Some",
        "Pool(Pool",
        "Backend(",
        "Health(",
        "Weight(",
        "Service(",
        "Vip {",
        "Balance(Named",
        "Balance(Hash",
        "Mode {",
        "to_port: Some",
        "Unknown(",
        "Filter(",
        "Route(",
        "via: Some",
        "dev: Some",
        "Test(",
        "Flag(",
        "Type(",
        "Code(",
        "Ttl(",
        "Len(",
        "On(",
        "Paren(",
        "Not(",
        "Neg(",
        "And(",
        "Or(",
        "Cmp(",
        "In(",
        "Arith(",
        "Set([",
        "Set([])",
        "Float(",
        "Addr(",
        "Prefix {",
        "Mac([",
        "Range(",
        "Duration {",
        "Str(",
        "Bool(",
        "hex_digits: 0",
        "Field(",
        "Name(",
        "service: Some",
        "arg: Some",
    ] {
        assert!(
            tree.contains(needle),
            "no {needle} in 200 generated policies"
        );
    }
    assert!(
        tree.split("hex_digits: ")
            .skip(1)
            .any(|rest| !rest.starts_with('0')),
        "no hex literal"
    );
    assert!(all.contains("\r\n") && all.contains("\n\n") && all.contains("#"));
    assert!(all.contains("[2001:db8:") || all.contains("[2001:DB8:"));
}
