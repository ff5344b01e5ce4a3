use super::*;
use crate::ast::*;

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
    let p =
        parse("const a = 300.1.2.3\nconst b = 2001:db8:::1\nconst c = 99999999999999999999999\n");
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
