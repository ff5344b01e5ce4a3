//! `lbp test`: run the `test` blocks of policies through every back end (the JIT
//! and the interpreter) and print each failure, or a disagreement between the
//! back ends, with the packet, the expected verdict and what each back end gave.

use super::common::{Output, read, report};
use lbp_lang::Diagnostic;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    out: Output,
}

pub fn run(args: TestArgs) -> Result<ExitCode, String> {
    let TestArgs { files, out } = args;
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        let src = read(file)?;
        let name = file.display().to_string();
        let analysis = lbp_lang::analyze(&src);
        if analysis.has_errors() {
            let errors: Vec<Diagnostic> = analysis
                .diagnostics
                .into_iter()
                .filter(|d| d.is_error())
                .collect();
            report(&out, file, &src, &errors);
            eprintln!("{name}: not tested: the policy has errors");
            failed += 1;
            continue;
        }
        let prog = lbp_compiler::lower::lower(&analysis.policy)
            .map_err(|e| format!("{name}: cannot compile: {e}"))?;
        let interp = lbp_compiler::Interpreter::new(&prog);
        let jit = lbp_compiler::jit::compile(&prog)
            .map_err(|e| format!("{name}: cannot compile: {e}"))?;
        let backends: [(&str, &dyn lbp_compiler::Backend); 2] =
            [("jit", &jit), ("interpreter", &interp)];
        let result = lbp_compiler::testing::run(&analysis.policy, &prog, &backends)
            .map_err(|e| format!("{name}: {e}"))?;
        for o in &result.outcomes {
            if o.passed() && !o.disagreement() {
                continue;
            }
            let (line, col) = lbp_lang::diag::line_col(&src, o.span.start);
            let text = src.get(o.span.start..o.span.end).unwrap_or("").trim();
            println!("FAIL {name}:{line}:{col}: test \"{}\"", o.test);
            println!("    packet:   {text}");
            println!("    expected: {}", o.expected);
            for (backend, verdict, rule) in &o.got {
                let by = rule.map(|r| {
                    let (l, _) = lbp_lang::diag::line_col(&src, r.start);
                    format!(
                        " (rule at line {l}: {})",
                        src.get(r.start..r.end).unwrap_or("").trim()
                    )
                });
                println!("    {backend}: {verdict}{}", by.unwrap_or_default());
            }
            if o.disagreement() {
                println!("    the back ends disagree");
            }
        }
        passed += result.passed();
        failed += result.failed()
            + result
                .outcomes
                .iter()
                .filter(|o| o.passed() && o.disagreement())
                .count();
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
