//! Compiling and dropping a policy again and again keeps memory flat: a `Jit` frees
//! its code when dropped (a `JITModule` dropped without `free_memory` leaks at least
//! one page of code per policy).
//!
//! This is a test binary of its own, with one test, so that no other test thread
//! allocates while the resident set is measured.

use lbp_abi::{Fields, present};
use lbp_compiler::interp::{self, Engine};
use lbp_compiler::{jit, lower};
use std::path::PathBuf;

/// Resident pages, from `/proc/self/statm` (the second field).
fn resident_pages() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a resident page count")
}

#[test]
fn compile_drop_cycles_keep_memory_flat() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/web.lbp");
    let src = std::fs::read_to_string(&path).expect("policies/web.lbp");
    let analysis = lbp_lang::analyze(&src);
    assert!(!analysis.has_errors(), "{:?}", analysis.diagnostics);
    let prog = lower::lower(&analysis.policy).expect("web.lbp lowers");
    let f = Fields {
        present: present::ETH | present::IP4 | present::TCP,
        ip_version: 4,
        ip_proto: 6,
        dport: 80,
        ip_dst: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 10],
        ..Fields::default()
    };
    let expected = interp::decide(&prog, &f);

    let cycle = || {
        let jit = jit::compile(&prog).expect("web.lbp compiles");
        // Run the code, so that its pages are really mapped and touched.
        assert_eq!(jit.decide(&f), expected);
    };
    for _ in 0..50 {
        cycle();
    }
    let before = resident_pages();
    for _ in 0..1000 {
        cycle();
    }
    let after = resident_pages();
    let growth = after.saturating_sub(before);
    // A leak of the code alone would be at least 1000 pages.
    assert!(
        growth < 500,
        "resident set grew by {growth} pages over 1000 compile-drop cycles ({before} -> {after})"
    );
}
