//! End-to-end tests of the `lbp` binary: one test binary for all of them.

mod agent;
mod apps;
mod cases;
mod compiler;
mod core_differential;
mod demo;
mod diagnostics;
mod docs;
mod e2e;
mod editors;
mod eval;
mod examples;
mod generations;
mod lsp;
mod netns;
mod policies;
mod reload;
mod run;
mod topology;
mod ui;
mod xdp_balance;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests run with relative paths from here, so that file
/// names in golden output do not depend on where the checkout lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `lbp ARGS...` from the repository root.
pub fn lbp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .output()
        .expect("the lbp binary runs")
}

/// `head` (a policy's declarations) and a filter of `rules` rules that
/// neither merge nor match a test's packets: beyond the eBPF back end's
/// limits at 2 001.
pub fn wide_policy(head: &str, rules: u32) -> String {
    // A range atom (`ip.ttl > 200`, more values than an exact set) in every rule: the eBPF back end tests such rules one
    // by one (it merges only rules of exact atoms), which is what the limits
    // are about.
    let mut src = format!("{head}filter {{\n");
    for i in 0..rules {
        src.push_str(&format!(
            "    tcp.dport == {} && ip.ttl > 200 => drop\n",
            1 + i
        ));
    }
    src + "}\n"
}

/// The files of `dir` (relative to the root) with extension `ext`, sorted.
pub fn files(dir: &str, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(dir))
        .expect("directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            Path::new(dir)
                .join(p.file_name().expect("a file name"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}
