//! Fuzz the packet path differentially: any frame, through `wire::extract` and
//! then through the reference interpreter and the JIT of a stock or case-corpus
//! policy (compiled as usual, and with every mergeable rule merged into tables),
//! must give the same decision, without a panic or a fault. The same frame then
//! goes through the switching core (the policy's appliance on in-memory rings,
//! freshly started, deciding with the JIT): what the core did with it must follow
//! from the interpreter's decision (`Outcome::follows`), every frame must be
//! accounted for, and when the core balanced it, the back end's answer goes back
//! through the core too (NAT return traffic) under the same rule.
#![no_main]

use lbp_compiler::interp::Engine;
use lbp_runtime::testbed::{Fate, Testbed};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};

struct Compiled {
    prog: lbp_compiler::Program,
    jit: Arc<lbp_compiler::Jit>,
    merged: lbp_compiler::Jit,
    core: Mutex<Testbed>,
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
                let jit = Arc::new(lbp_compiler::jit::compile(&prog).unwrap());
                let merged = lbp_compiler::jit::compile_with(&prog, 1).unwrap();
                let policy = Arc::new(lbp::testbed::Shared(jit.clone()));
                let core = Testbed::new(policy, lbp::appliance::appliance(&prog, &src)).unwrap();
                Compiled {
                    prog,
                    jit,
                    merged,
                    core: Mutex::new(core),
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let all = policies();
    let c = &all[sel as usize % all.len()];
    let in_iface = u32::from(sel >> 4) % (c.prog.interfaces.len() as u32 + 1);
    let fields = lbp_compiler::wire::extract(frame, in_iface);
    let want = lbp_compiler::interp::decide(&c.prog, &fields);
    assert_eq!(
        c.jit.decide(&fields),
        want,
        "JIT and interpreter disagree on {fields:?}"
    );
    assert_eq!(
        c.merged.decide(&fields),
        want,
        "merged JIT and interpreter disagree on {fields:?}"
    );

    let mut core = c.core.lock().unwrap();
    core.restart();
    let app = core.appliance().clone();
    let o = core.send(frame, in_iface);
    let want = lbp_compiler::interp::decide(&c.prog, &o.fields);
    if let Err(e) = o.follows(&want, &app) {
        panic!("the switching core: {e}\n{o:?}");
    }
    if let (Some(Fate::Sent { iface, frame: sent }), Some(_)) = (o.fate(), o.balanced) {
        if let Some(back) = lbp::testbed::backend_answer(sent) {
            let r = core.send(&back, *iface);
            let want = lbp_compiler::interp::decide(&c.prog, &r.fields);
            if let Err(e) = r.follows(&want, &app) {
                panic!("the switching core, the back end's answer: {e}\n{r:?}");
            }
        }
    }
});
