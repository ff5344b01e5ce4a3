//! Fuzz the packet path differentially: any frame, through `wire::extract` and
//! then through the reference interpreter and the JIT of a stock or case-corpus
//! policy (compiled as usual, and with every mergeable rule merged into tables),
//! must give the same decision, without a panic or a fault.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lbp_compiler::interp::Backend;
use std::sync::OnceLock;

struct Compiled {
    prog: lbp_compiler::Program,
    jit: lbp_compiler::Jit,
    merged: lbp_compiler::Jit,
}

fn policies() -> &'static Vec<Compiled> {
    static P: OnceLock<Vec<Compiled>> = OnceLock::new();
    P.get_or_init(|| {
        let mut names: Vec<_> = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/cases"),
        ]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .collect();
        names.sort();
        names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "lbp"))
            .map(|p| {
                let src = std::fs::read_to_string(p).unwrap();
                let a = lbp_lang::analyze(&src);
                let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
                let jit = lbp_compiler::jit::compile(&prog).unwrap();
                let merged = lbp_compiler::jit::compile_with(&prog, 1).unwrap();
                Compiled { prog, jit, merged }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let all = policies();
    let c = &all[sel as usize % all.len()];
    let in_iface = u32::from(sel >> 4) % (c.prog.interfaces.len() as u32 + 1);
    let fields = lbp_compiler::wire::extract(frame, in_iface);
    let want = lbp_compiler::interp::decide(&c.prog, &fields);
    assert_eq!(c.jit.decide(&fields), want, "JIT and interpreter disagree on {fields:?}");
    assert_eq!(c.merged.decide(&fields), want, "merged JIT and interpreter disagree on {fields:?}");
});
