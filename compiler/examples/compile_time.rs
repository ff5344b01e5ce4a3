//! How long each stage of compiling a policy takes: parse, check, lower, JIT
//! (the path `lbp run` and `lbp reload` take before a generation is published).
//!
//! cargo run --release -p lbp-compiler --example compile_time -- POLICY... [--runs N]
//!
//! Prints one line per policy: its rules, then the best of N runs (3 by default)
//! of each stage in milliseconds and their total.

use std::time::{Duration, Instant};

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn main() -> Result<(), String> {
    let mut runs = 3usize;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("--runs takes a number")?;
        } else {
            files.push(a);
        }
    }
    if files.is_empty() {
        return Err("usage: compile_time POLICY... [--runs N]".into());
    }
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "policy", "rules", "parse", "check", "lower", "jit", "total ms"
    );
    for path in &files {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut best = [Duration::MAX; 5];
        let mut rules = 0;
        for _ in 0..runs.max(1) {
            let (parsed, parse) = timed(|| lbp_lang::parse::parse(&src));
            let (diags, check) = timed(|| lbp_lang::check::check(&parsed.policy));
            if diags
                .iter()
                .chain(&parsed.diagnostics)
                .any(|d| d.severity == lbp_lang::diag::Severity::Error)
            {
                return Err(format!("{path}: the policy has errors"));
            }
            let (prog, lower) = timed(|| lbp_compiler::lower::lower(&parsed.policy));
            let prog = prog.map_err(|e| format!("{path}: {e}"))?;
            rules = prog.rules.len();
            let (jit, jit_time) = timed(|| lbp_compiler::jit::compile(&prog));
            jit.map_err(|e| format!("{path}: {e}"))?;
            let total = parse + check + lower + jit_time;
            for (b, t) in best.iter_mut().zip([parse, check, lower, jit_time, total]) {
                *b = (*b).min(t);
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let name = std::path::Path::new(path)
            .file_name()
            .map_or(path.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "{name:<28} {rules:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            ms(best[0]),
            ms(best[1]),
            ms(best[2]),
            ms(best[3]),
            ms(best[4])
        );
    }
    Ok(())
}
