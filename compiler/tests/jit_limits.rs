//! A policy too large to compile into one function is refused with an error, at
//! once, instead of exhausting memory in the code generator.

#[test]
fn a_huge_filter_is_refused_not_compiled() {
    let mut src = String::from("interface a { address 198.18.0.1/24 }\nfilter {\n");
    for i in 0..40_000u32 {
        src.push_str(&format!(
            "    ip.src == 198.19.{}.{} && tcp.dport == {} => drop\n",
            (i >> 8) & 255,
            i & 255,
            1 + i % 65535
        ));
    }
    src.push_str("}\n");
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors());
    let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
    let err = lbp_compiler::jit::compile(&prog).err().expect("refused");
    assert!(err.contains("too large to compile"), "{err}");
}
