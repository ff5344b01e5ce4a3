//! What several subcommands share: reading a policy file, the output options
//! (`--format`, `--color`), printing diagnostics for people (drawn by
//! `lbp::render`) or as JSON lines, and loading a policy (read, check, lower)
//! for the subcommands that run it.

use lbp::render::{Renderer, Source, floor_char_boundary};
use lbp_compiler::{CompileError, Program};
use lbp_lang::Diagnostic;
use lbp_lang::diag::LineIndex;
use lbp_runtime::app::Registry;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;

/// How `check`, `fmt`, `parse` and `test` print diagnostics.
#[derive(clap::Args, Debug)]
pub struct Output {
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Colours and Unicode in human output: auto (on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
}

/// Diagnostics (or `eval`'s lines) for people, or as JSON.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Human,
    Json,
}

/// Whether human output has colours and Unicode.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Read, check and lower a policy whose `app NAME` may name the applications
/// of `apps`. Diagnostics of a broken policy are printed.
pub fn load(file: &Path, apps: &Registry) -> Result<(String, lbp_lang::Analysis, Program), String> {
    let src = read(file)?;
    let (analysis, prog) = analyze(&src, apps);
    if analysis.has_errors() {
        let out = Output {
            format: Format::Human,
            color: Color::Auto,
        };
        report(&out, file, &src, &analysis.diagnostics);
        return Err(format!("{}: the policy has errors", file.display()));
    }
    let prog = prog.map_err(|e| cannot_compile(file, &src, &e))?;
    Ok((src, analysis, prog))
}

/// Compile a lowered policy; an error is printed as a diagnostic of `file`.
pub fn compile(file: &Path, src: &str, prog: &Program) -> Result<lbp_compiler::Jit, String> {
    lbp_compiler::jit::compile(prog).map_err(|e| cannot_compile(file, src, &e))
}

/// Print why `file` cannot be lowered or compiled, like every diagnostic (on
/// stderr), and return the line that ends the command.
pub fn cannot_compile(file: &Path, src: &str, e: &CompileError) -> String {
    let out = Output {
        format: Format::Human,
        color: Color::Auto,
    };
    report(&out, file, src, &[e.diagnostic()]);
    format!("{}: cannot compile", file.display())
}

/// Check a policy whose `app NAME` may name the applications of `apps`, and
/// lower it when it has no errors (else the lowering's result is an error
/// that says so).
pub fn analyze(src: &str, apps: &Registry) -> (lbp_lang::Analysis, Result<Program, CompileError>) {
    let names = apps.names();
    let analysis = lbp_lang::analyze_with(src, &names);
    let prog = if analysis.has_errors() {
        Err(CompileError::new(
            lbp_compiler::error::code::HAS_ERRORS,
            "the policy has errors",
        ))
    } else {
        lbp_compiler::lower::lower_with(&analysis.policy, &names)
    };
    (analysis, prog)
}

/// How `eval` and `explain` name the stage of the pipeline that decided.
pub fn stage_name(stage: u32) -> &'static str {
    match stage {
        lbp_abi::stage::MALFORMED => "malformed packet",
        lbp_abi::stage::FILTER => "filter rule",
        lbp_abi::stage::SERVICE => "service entry",
        lbp_abi::stage::INVALID_ENTRY => "virtual IP without a matching entry",
        lbp_abi::stage::OWN_ADDRESS => "the appliance's own address",
        _ => "routing",
    }
}

/// A file's text; an unreadable or non-UTF-8 file is an error naming it (for
/// invalid UTF-8, the line and column where it starts). A UTF-8 byte order mark
/// at the start is not part of the text: the file is read without it, so that
/// diagnostics' lines and columns are those an editor shows.
pub fn read(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text(bytes).map_err(|e| format!("{}: {e}", file.display()))
}

/// A file's bytes as text, without a leading byte order mark.
pub fn text(mut bytes: Vec<u8>) -> Result<String, String> {
    if bytes.starts_with(b"\xef\xbb\xbf") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&e.as_bytes()[..at]).unwrap_or_default();
        let (line, column) = lbp_lang::diag::line_col(valid, valid.len());
        format!("not UTF-8 text: line {line}, column {column} (byte {at}) is not a valid character")
    })
}

/// Print diagnostics: human (fancy on a terminal, plain when piped) on stderr, or
/// JSON lines on stdout. The file's lines are indexed once, so the cost is linear
/// in the file's size plus the diagnostics' excerpts.
pub fn report(out: &Output, file: &Path, src: &str, diags: &[Diagnostic]) {
    let source = Source::new(file, src);
    match out.format {
        Format::Json => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let mut text = String::new();
            for d in diags {
                text.clear();
                write_json(&mut text, &source, d);
                text.push('\n');
                let _ = stdout.write_all(text.as_bytes());
            }
        }
        Format::Human => {
            let renderer = Renderer::new(fancy(out.color));
            let mut stderr = std::io::BufWriter::new(std::io::stderr().lock());
            let mut text = String::new();
            for d in diags {
                text.clear();
                renderer.render(&source, d, &mut text);
                let _ = stderr.write_all(text.as_bytes());
            }
        }
    }
}

/// A file that cannot be read, reported the way its diagnostics would be: a line
/// on stderr, or a JSON object (code `lbp::io::read`) on stdout.
pub fn report_unreadable(out: &Output, file: &Path, why: &str) {
    match out.format {
        Format::Json => {
            let o = serde_json::json!({
                "code": "lbp::io::read",
                "severity": "error",
                "message": why,
                "file": file.display().to_string(),
            });
            println!("{o}");
        }
        Format::Human => eprintln!("lbp: {why}"),
    }
}

/// Diagnostics for people as `lbp check` prints them (`fancy`: colours and
/// Unicode), with its count line: what `lbp reload` sends back to the
/// operator's terminal.
pub fn render_all(file: &Path, src: &str, diags: &[Diagnostic], fancy: bool) -> String {
    let source = Source::new(file, src);
    let renderer = Renderer::new(fancy);
    let mut out = String::new();
    for d in diags {
        renderer.render(&source, d, &mut out);
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    out.push_str(&summary(errors, diags.len() - errors, 1));
    out.push('\n');
    out
}

/// `lbp check`'s last line: "2 errors, 1 warning in 1 file".
pub fn summary(errors: usize, warnings: usize, files: usize) -> String {
    let plural = |n: usize, w: &str| {
        if n == 1 {
            format!("{n} {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    format!(
        "{}, {} in {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(files, "file")
    )
}

/// Whether human output on stderr gets colours and Unicode.
pub fn fancy(color: Color) -> bool {
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// How a column is counted: in characters (`lbp check`), or in UTF-16 code
/// units (the Language Server Protocol's positions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Columns {
    Chars,
    Utf16,
}

/// The 1-based line and column of byte `offset` of `text`, whose lines `lines`
/// indexes.
pub fn position(lines: &LineIndex, text: &str, offset: usize, columns: Columns) -> (usize, usize) {
    match columns {
        Columns::Chars => lines.line_col(text, offset),
        Columns::Utf16 => {
            let offset = floor_char_boundary(text, offset.min(text.len()));
            let line = lines.line_of(offset);
            let start = lines.line_range(line).start.min(offset);
            (line + 1, text[start..offset].encode_utf16().count() + 1)
        }
    }
}

/// Where a diagnostic is, as `lbp check --format json` and `lbp lsp` report it:
/// 1-based lines and columns of its primary span's start and end, and of each
/// label's start.
#[derive(Debug)]
pub struct Placed {
    pub start: (usize, usize),
    pub end: (usize, usize),
    pub labels: Vec<(usize, usize)>,
}

pub fn place(lines: &LineIndex, text: &str, d: &Diagnostic, columns: Columns) -> Placed {
    let at = |offset| position(lines, text, offset, columns);
    let span = d.span();
    Placed {
        start: at(span.start),
        end: at(span.end),
        labels: d.labels.iter().map(|l| at(l.span.start)).collect(),
    }
}

/// One diagnostic as a JSON object, written directly (building
/// `serde_json::Value`s cost more than checking the file did): keys in
/// alphabetical order, as `serde_json` writes a map.
fn write_json(out: &mut String, source: &Source, d: &Diagnostic) {
    let span = d.span();
    let placed = place(&source.lines, source.text, d, Columns::Chars);
    let ((line, column), (end_line, end_column)) = (placed.start, placed.end);
    out.push_str("{\"code\":");
    json_str(out, d.code);
    let _ = write!(
        out,
        ",\"column\":{column},\"end_column\":{end_column},\"end_line\":{end_line},\"file\":"
    );
    json_str(out, &source.name);
    out.push_str(",\"help\":");
    match &d.help {
        Some(help) => json_str(out, help),
        None => out.push_str("null"),
    }
    out.push_str(",\"labels\":[");
    for (i, (l, &(line, column))) in d.labels.iter().zip(&placed.labels).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"column\":{column},\"line\":{line},\"message\":");
        json_str(out, &l.message);
        let _ = write!(
            out,
            ",\"span\":{{\"end\":{},\"start\":{}}}}}",
            l.span.end, l.span.start
        );
    }
    let _ = write!(out, "],\"line\":{line},\"message\":");
    json_str(out, &d.message);
    out.push_str(",\"severity\":");
    json_str(out, d.severity.as_str());
    let _ = write!(
        out,
        ",\"span\":{{\"end\":{},\"start\":{}}}}}",
        span.end, span.start
    );
}

/// A JSON string (quoted and escaped as `serde_json` does).
pub fn json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// The secret shared by the agents and the appliance, from `file`: its bytes
/// without surrounding whitespace, at least 16 of them.
pub fn read_secret(file: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < 16 {
        return Err(format!(
            "{}: the secret has {} bytes; use at least 16",
            file.display(),
            secret.len()
        ));
    }
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbp_lang::ast::Span;

    /// Any diagnostic on any text renders, plain and fancy, without a panic:
    /// labels anywhere (inside a character, past the end, empty, across lines,
    /// far along lines of 100 000 characters), CRLF, tabs, multi-byte text; and
    /// the line each label starts on is shown with its number.
    #[test]
    fn any_diagnostic_renders() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        let pieces = ["a", "é", "\t", "\r\n", "\n", "€€", " ", "word", "}"];
        for round in 0..300 {
            let mut text = String::new();
            let len = if round % 10 == 0 { 100_000 } else { 400 };
            while text.len() < len {
                let p = pieces[next(pieces.len())];
                // Long lines: few newlines in the big texts.
                if round % 10 == 0 && p.contains('\n') && next(1000) != 0 {
                    continue;
                }
                text.push_str(p);
            }
            let mut d = Diagnostic::error("lbp::test::random", "a message");
            for _ in 0..1 + next(4) {
                let start = next(text.len() + 3);
                let reach = if next(2) == 0 { 5 } else { 3000 };
                let end = start + next(reach);
                d = d.label(Span::new(start, end), "here");
            }
            if next(2) == 0 {
                d = d.help("some help");
            }
            let source = Source::new(Path::new("random.lbp"), &text);
            for fancy in [false, true] {
                let mut out = String::new();
                Renderer::new(fancy).render(&source, &d, &mut out);
                let longest = out.lines().map(|l| l.chars().count()).max().unwrap_or(0);
                assert!(longest < 2000, "a line of {longest} characters");
                if !fancy {
                    let start = d.labels[0].span.start.min(text.len());
                    let (line, _) = source.line_col(start);
                    assert!(out.contains(&format!("{line} |")), "line {line}:\n{out}");
                }
            }
            let mut json = String::new();
            write_json(&mut json, &source, &d);
            assert!(
                serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                "{json}"
            );
        }
    }
}
