//! What several subcommands share: reading a policy file, the output options
//! (`--format`, `--color`), printing diagnostics for people or as JSON lines, and
//! loading a policy (read, check, lower) for the subcommands that run it.

use lbp_lang::Diagnostic;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

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

/// Read, check and lower a policy. Diagnostics of a broken policy are printed.
pub fn load(file: &PathBuf) -> Result<(String, lbp_lang::Analysis, lbp_compiler::Program), String> {
    let src = read(file)?;
    let analysis = lbp_lang::analyze(&src);
    if analysis.has_errors() {
        let out = Output {
            format: Format::Human,
            color: Color::Auto,
        };
        report(&out, file, &src, &analysis.diagnostics);
        return Err(format!("{}: the policy has errors", file.display()));
    }
    let prog = lbp_compiler::lower::lower(&analysis.policy)
        .map_err(|e| format!("{}: cannot compile: {e}", file.display()))?;
    Ok((src, analysis, prog))
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

/// A file's text; an unreadable or non-UTF-8 file is an error naming it.
pub fn read(file: &PathBuf) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 text (byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Print diagnostics: human (fancy on a terminal, plain when piped) on stderr, or
/// JSON lines on stdout.
pub fn report(out: &Output, file: &Path, src: &str, diags: &[Diagnostic]) {
    let name = file.display().to_string();
    match out.format {
        Format::Json => {
            let mut stdout = std::io::stdout().lock();
            for d in diags {
                let _ = writeln!(stdout, "{}", to_json(&name, src, d));
            }
        }
        Format::Human => {
            let fancy = fancy(out.color);
            let mut stderr = std::io::stderr().lock();
            for d in diags {
                let _ = write!(stderr, "{}", render(&name, src, d, fancy));
            }
        }
    }
}

/// Diagnostics for people as `lbp check` prints them (`fancy`: colours and
/// Unicode), with its count line: what `lbp reload` sends back to the
/// operator's terminal.
pub fn render_all(file: &Path, src: &str, diags: &[Diagnostic], fancy: bool) -> String {
    let name = file.display().to_string();
    let mut out: String = diags.iter().map(|d| render(&name, src, d, fancy)).collect();
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

/// Render one diagnostic for people. Plain output is deterministic (no colour, ASCII
/// art, fixed width), which the golden tests rely on.
fn render(name: &str, src: &str, d: &Diagnostic, fancy: bool) -> String {
    let theme = if fancy {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let (line, col) = lbp_lang::diag::line_col(src, d.span().start);
    let report = miette::Report::new(Uncoded(d.clone()))
        .with_source_code(miette::NamedSource::new(name, src.to_string()));
    let mut out = format!(
        "{name}:{line}:{col}: {}[{}]: {}\n",
        d.severity.as_str(),
        d.code,
        d.message
    );
    let _ = handler.render_report(&mut out, report.as_ref());
    out.push('\n');
    out
}

fn to_json(name: &str, src: &str, d: &Diagnostic) -> String {
    let span = d.span();
    let (line, column) = lbp_lang::diag::line_col(src, span.start);
    let (end_line, end_column) = lbp_lang::diag::line_col(src, span.end);
    let labels: Vec<serde_json::Value> = d
        .labels
        .iter()
        .map(|l| {
            let (line, column) = lbp_lang::diag::line_col(src, l.span.start);
            serde_json::json!({ "message": l.message, "line": line, "column": column, "span": { "start": l.span.start, "end": l.span.end } })
        })
        .collect();
    serde_json::json!({
        "code": d.code,
        "severity": d.severity.as_str(),
        "message": d.message,
        "file": name,
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "span": { "start": span.start, "end": span.end },
        "labels": labels,
        "help": d.help,
    })
    .to_string()
}

/// A diagnostic shown without miette's code header: the first line already has it.
#[derive(Debug)]
struct Uncoded(Diagnostic);

impl std::fmt::Display for Uncoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Uncoded {}

impl miette::Diagnostic for Uncoded {
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(&self.0)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        miette::Diagnostic::help(&self.0)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        miette::Diagnostic::labels(&self.0)
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
