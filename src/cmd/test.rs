//! `lbp test`: run the `test` blocks of policies through the back ends and print
//! each failure, or a disagreement between the back ends, with the packet, the
//! expected verdict and what each back end gave.
//!
//! The back ends: the JIT, which decides; the switching core (`appliance`: the
//! policy's appliance on in-memory rings, deciding with the same JIT code, so
//! that a verdict is what `lbp run` does with the packet: its connection table,
//! NAT return, resets, the TAP, drops); and the reference interpreter, which
//! cross-checks the JIT where that is cheap (at most [`INTERPRETER_BUDGET`] rule
//! tests: the number of filter rules times the packet lines) or when asked
//! (`--check-interpreter`, or `--backend interpreter`). A line passes when every
//! back end gives the expected verdict.

use super::common::{Format, Output, read, report};
use lbp::testbed::{CoreTester, Shared};
use lbp_compiler::testing::{Decider, Outcome, Tester};
use lbp_lang::Diagnostic;
use lbp_lang::ast::Item;
use lbp_runtime::app::Registry;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The interpreter cross-checks the JIT by default while filter rules times
/// packet lines stay at most this (about a fifth of a second of interpreting).
pub const INTERPRETER_BUDGET: usize = 20_000_000;

/// A back end of `lbp test`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName {
    /// The Cranelift JIT's decision, with the connection-table rule modelled.
    Jit,
    /// The switching core: the policy's appliance on in-memory rings.
    Appliance,
    /// The reference interpreter's decision, with the connection-table rule
    /// modelled.
    Interpreter,
}

/// Arguments of `lbp test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Run only these back ends (repeatable). Default: the JIT, the appliance,
    /// and the interpreter where it is cheap.
    #[arg(long = "backend", value_enum)]
    backends: Vec<BackendName>,
    /// Cross-check with the interpreter however large the policy.
    #[arg(long)]
    check_interpreter: bool,
    #[command(flatten)]
    out: Output,
}

pub fn run(args: TestArgs, apps: &Registry) -> Result<ExitCode, String> {
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for file in &args.files {
        let src = read(file)?;
        let name = file.display().to_string();
        let (analysis, prog) = super::common::analyze(&src, apps);
        if analysis.has_errors() {
            let errors: Vec<Diagnostic> = analysis
                .diagnostics
                .into_iter()
                .filter(|d| d.is_error())
                .collect();
            let _ = stdout.flush();
            report(&args.out, file, &src, &errors);
            eprintln!("{name}: not tested: the policy has errors");
            failed += 1;
            continue;
        }
        let prog = prog.map_err(|e| super::common::cannot_compile(file, &src, &e))?;
        let lines: usize = analysis
            .policy
            .items
            .iter()
            .map(|i| match i {
                Item::Test(t) => t.packets.len(),
                _ => 0,
            })
            .sum();
        let chosen = |b| args.backends.is_empty() || args.backends.contains(&b);
        let interpret = args.check_interpreter
            || args.backends.contains(&BackendName::Interpreter)
            || (args.backends.is_empty()
                && prog.rules.len().saturating_mul(lines) <= INTERPRETER_BUDGET);
        if args.backends.is_empty() && !interpret {
            eprintln!(
                "{name}: the interpreter does not cross-check the JIT here ({} rules x {lines} \
                 packet lines); --check-interpreter runs it",
                prog.rules.len()
            );
        }

        let jit = Arc::new(super::common::compile(file, &src, &prog)?);
        let interp = lbp_compiler::Interpreter::new(&prog);
        let mut jit_tester = Decider::new(&prog, &*jit);
        let mut interp_tester = Decider::new(&prog, &interp);
        let mut core = CoreTester::with_apps(&prog, &src, Arc::new(Shared(jit.clone())), apps)
            .map_err(|e| format!("{name}: cannot start the appliance's test bed: {e}"))?;
        let mut testers: Vec<(&str, &mut dyn Tester)> = Vec::new();
        if chosen(BackendName::Jit) {
            testers.push(("jit", &mut jit_tester));
        }
        if chosen(BackendName::Appliance) {
            testers.push(("appliance", &mut core));
        }
        if interpret {
            testers.push(("interpreter", &mut interp_tester));
        }
        let result = lbp_compiler::testing::run(&analysis.policy, &prog, &mut testers)
            .map_err(|e| format!("{name}: {e}"))?;

        let lines = LineIndex::new(&src);
        for o in &result.outcomes {
            match args.out.format {
                Format::Json => {
                    let _ = writeln!(stdout, "{}", json(&name, &src, &lines, o));
                }
                Format::Human if o.passed() && !o.disagreement() => {}
                Format::Human => human(&mut stdout, &name, &src, &lines, o),
            }
        }
        let failures = result
            .outcomes
            .iter()
            .filter(|o| !o.passed() || o.disagreement())
            .count();
        passed += result.outcomes.len() - failures;
        failed += failures;
    }
    match args.out.format {
        Format::Json => {
            let summary = serde_json::json!({ "passed": passed, "failed": failed });
            let _ = writeln!(stdout, "{summary}");
        }
        Format::Human => {
            let _ = writeln!(stdout, "{passed} passed, {failed} failed");
        }
    }
    let _ = stdout.flush();
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The start of each line of a text, found once.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(src: &str) -> LineIndex {
        LineIndex(
            std::iter::once(0)
                .chain(src.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    /// 1-based line and column (in characters) of byte `at`.
    fn line_col(&self, src: &str, at: usize) -> (usize, usize) {
        let line = self.0.partition_point(|&s| s <= at);
        let start = self.0[line - 1];
        let col = src.get(start..at).map_or(0, |s| s.chars().count());
        (line, col + 1)
    }
}

fn text(src: &str, span: lbp_lang::ast::Span) -> &str {
    src.get(span.start..span.end).unwrap_or("").trim()
}

fn human(out: &mut impl Write, name: &str, src: &str, lines: &LineIndex, o: &Outcome) {
    let (line, col) = lines.line_col(src, o.span.start);
    let _ = writeln!(out, "FAIL {name}:{line}:{col}: test \"{}\"", o.test);
    let _ = writeln!(out, "    packet:   {}", text(src, o.span));
    let _ = writeln!(out, "    expected: {}", o.expected);
    for ((backend, verdict, rule), detail) in o.got.iter().zip(&o.details) {
        let by = rule.map(|r| {
            let (l, _) = lines.line_col(src, r.start);
            format!(" (rule at line {l}: {})", text(src, r))
        });
        let detail = detail.as_ref().map(|d| format!(" [{d}]"));
        let _ = writeln!(
            out,
            "    {backend}: {verdict}{}{}",
            by.unwrap_or_default(),
            detail.unwrap_or_default()
        );
    }
    if o.disagreement() {
        let _ = writeln!(out, "    the back ends disagree");
    }
}

fn json(name: &str, src: &str, lines: &LineIndex, o: &Outcome) -> serde_json::Value {
    let (line, column) = lines.line_col(src, o.span.start);
    let verdicts: Vec<serde_json::Value> = o
        .got
        .iter()
        .zip(&o.details)
        .map(|((backend, verdict, rule), detail)| {
            let rule = rule.map(|r| {
                serde_json::json!({
                    "line": lines.line_col(src, r.start).0,
                    "text": text(src, r),
                })
            });
            serde_json::json!({
                "backend": backend,
                "verdict": verdict,
                "rule": rule,
                "detail": detail,
            })
        })
        .collect();
    serde_json::json!({
        "file": name,
        "line": line,
        "column": column,
        "test": o.test,
        "packet": text(src, o.span),
        "expected": o.expected,
        "passed": o.passed() && !o.disagreement(),
        "agree": !o.disagreement(),
        "verdicts": verdicts,
    })
}
