//! Large filters: rules of one shape merge into tables and compile at any size;
//! a filter too large to compile into one function after merging is refused with
//! an error, at once, instead of exhausting memory in the code generator.

use lbp_compiler::interp::{self, Engine};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::wire;

fn program(rules: impl Iterator<Item = String>) -> lbp_compiler::Program {
    source_and_program(rules).1
}

fn source_and_program(rules: impl Iterator<Item = String>) -> (String, lbp_compiler::Program) {
    let mut src = String::from("interface a { address 198.18.0.1/24 }\nfilter {\n");
    for r in rules {
        src.push_str(&r);
    }
    src.push_str("}\n");
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
    let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
    (src, prog)
}

#[test]
fn a_huge_filter_of_one_shape_is_merged_and_compiled() {
    let n = 40_000u32;
    let prog = program((0..n).map(|i| {
        format!(
            "    ip.src == 198.19.{}.{} && tcp.dport == {} => drop\n",
            (i >> 8) & 255,
            i & 255,
            1 + i % 65535
        )
    }));
    let jit = lbp_compiler::jit::compile(&prog).expect("merged rules compile");
    for i in [0u32, 1, 777, n - 1] {
        let mut p = PacketSpec::new(
            Proto::Tcp,
            format!("198.19.{}.{}", (i >> 8) & 255, i & 255)
                .parse()
                .unwrap(),
            "198.18.0.1".parse().unwrap(),
        );
        for dport in [1 + (i % 65535) as u16, 2 + (i % 65535) as u16] {
            p.dport = dport;
            let f = wire::extract(&build(&p), 0);
            let d = jit.decide(&f);
            assert_eq!(d, interp::decide(&prog, &f), "rule {i}, port {dport}");
            assert_eq!(
                d.rule == i,
                dport == 1 + (i % 65535) as u16,
                "rule {i}: {d:?}"
            );
        }
    }
}

#[test]
fn a_huge_filter_that_cannot_merge_is_refused_not_compiled() {
    let (src, prog) = source_and_program((0..40_000u32).map(|i| {
        format!(
            "    ip.src == 198.19.{}.{} || tcp.dport == {} => drop\n",
            (i >> 8) & 255,
            i & 255,
            1 + i % 65535
        )
    }));
    let err = lbp_compiler::jit::compile(&prog).expect_err("refused");
    assert_eq!(err.code(), "lbp::compile::too_large", "{err}");
    assert!(err.message().contains("too large to compile"), "{err}");
    assert!(err.help().is_some_and(|h| h.contains("merge")), "{err:?}");
    // The rule that passes the limit (12 000 rules that cannot merge): the
    // 12 001st, whose port is 12 001.
    let span = err.span().expect("the error points at a rule");
    assert_eq!(
        &src[span.start..span.end],
        "ip.src == 198.19.46.224 || tcp.dport == 12001",
        "{err:?}"
    );
    let d = err.diagnostic();
    assert_eq!(d.code, err.code());
    assert_eq!(d.span(), span);
}
