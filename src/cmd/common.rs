//! What several subcommands share: reading a policy file, the output options
//! (`--format`, `--color`), printing diagnostics for people or as JSON lines, and
//! loading a policy (read, check, lower) for the subcommands that run it.

use lbp_lang::Diagnostic;
use lbp_lang::diag::LineIndex;
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

/// Read, check and lower a policy. Diagnostics of a broken policy are printed.
pub fn load(file: &Path) -> Result<(String, lbp_lang::Analysis, lbp_compiler::Program), String> {
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

/// A policy's text, its name and its line index, built once for all of its
/// diagnostics.
struct Source<'a> {
    name: String,
    text: &'a str,
    lines: LineIndex,
}

impl<'a> Source<'a> {
    fn new(file: &Path, text: &'a str) -> Source<'a> {
        Source {
            name: file.display().to_string(),
            text,
            lines: LineIndex::new(text),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        self.lines.line_col(self.text, offset)
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

/// Renders diagnostics for people with miette's handler, set up once. Plain
/// output is deterministic (no colour, ASCII art, fixed width), which the golden
/// tests rely on. miette is shown only an [`Excerpt`] of the file, so that one
/// diagnostic costs what it shows.
struct Renderer {
    handler: miette::GraphicalReportHandler,
    /// The same handler without wrapping: for a diagnostic whose message and
    /// help are one short line each, which wrapping leaves as they are (it is
    /// a third of miette's time).
    unwrapped: miette::GraphicalReportHandler,
    ellipsis: &'static str,
}

/// Text that miette's wrapping at 100 columns leaves as it is: one line, short,
/// without tabs or surrounding whitespace.
fn fits(text: &str) -> bool {
    text.len() <= 80 && !text.contains(['\n', '\r', '\t']) && text.trim() == text
}

impl Renderer {
    fn new(fancy: bool) -> Renderer {
        let theme = if fancy {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::none()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        Renderer {
            unwrapped: handler.clone().with_wrap_lines(false),
            handler,
            ellipsis: if fancy { "…" } else { "..." },
        }
    }

    /// Append one diagnostic, as `lbp check` prints it, to `out`.
    fn render(&self, source: &Source, d: &Diagnostic, out: &mut String) {
        let (line, col) = source.line_col(d.span().start);
        let excerpt = Excerpt::new(source, d, self.ellipsis);
        let _ = writeln!(
            out,
            "{}:{line}:{col}: {}[{}]: {}",
            source.name,
            d.severity.as_str(),
            d.code,
            d.message
        );
        let shown = Shown {
            d,
            excerpt: &excerpt,
        };
        let handler = if fits(&d.message) && d.help.as_deref().is_none_or(fits) {
            &self.unwrapped
        } else {
            &self.handler
        };
        let _ = handler.render_report(out, &shown);
        out.push('\n');
    }
}

/// The most characters of a source line shown whole; a longer line is shown as
/// pieces around the labels' ends, the rest left out (an ellipsis in its place).
/// It keeps miette's drawing within the widths it can format (a label past
/// column 65 535 made it panic) and the output readable.
const LONG_LINE: usize = 160;
/// Bytes kept on each side of a label's start or end on a long line.
const KEEP: usize = 40;
/// Labels whose excerpts are at most this many lines apart are shown in one
/// snippet, with the lines between them.
const GAP: usize = 2;

/// The part of a file one diagnostic shows: the lines its labels touch, one line
/// of context around them, long lines cut down, with the labels' spans moved
/// into this text. Lines of the file keep their numbers.
#[derive(Debug)]
struct Excerpt {
    name: String,
    text: String,
    /// Each line of `text`: where it starts in `text`, its 0-based line in the
    /// file, and its run of consecutive file lines (a new run after a gap).
    lines: Vec<(usize, usize, usize)>,
    /// The labels: message, span in `text`, primary.
    labels: Vec<(Option<String>, std::ops::Range<usize>, bool)>,
    /// The file column (0-based, in characters) of each label's start, by its
    /// offset in `text`: miette names the primary label's position.
    columns: Vec<(usize, usize)>,
}

impl Excerpt {
    fn new(source: &Source, d: &Diagnostic, ellipsis: &str) -> Excerpt {
        let src = source.text;
        let index = &source.lines;
        let last = index.lines() - 1;
        let clamp = |o: usize| floor_char_boundary(src, o.min(src.len()));
        let spans: Vec<(usize, usize)> = d
            .labels
            .iter()
            .map(|l| {
                let start = clamp(l.span.start);
                (start, clamp(l.span.end).max(start))
            })
            .collect();
        // The file lines to show, as runs of consecutive lines.
        let mut ranges: Vec<(usize, usize)> = spans
            .iter()
            .map(|&(s, e)| {
                let first = index.line_of(s);
                let end = index.line_of(e.saturating_sub(1).max(s));
                (first.saturating_sub(1), (end + 1).min(last))
            })
            .collect();
        ranges.sort_unstable();
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (a, b) in ranges {
            match runs.last_mut() {
                Some(run) if a <= run.1 + 1 + GAP => run.1 = run.1.max(b),
                _ => runs.push((a, b)),
            }
        }
        // The labels' ends by line: the points a long line keeps.
        let mut points: Vec<(usize, usize)> = spans
            .iter()
            .flat_map(|&(s, e)| [(index.line_of(s), s), (index.line_of(e), e)])
            .collect();
        points.sort_unstable();
        let mut text = String::new();
        let mut lines = Vec::new();
        // (file start, file end, excerpt start) of each piece of a line shown.
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        for (run, &(a, b)) in runs.iter().enumerate() {
            for line in a..=b {
                lines.push((text.len(), line, run));
                let range = index.line_range(line);
                let at = points.partition_point(|&(l, _)| l < line);
                let here: Vec<usize> = points[at..]
                    .iter()
                    .take_while(|&&(l, _)| l == line)
                    .map(|&(_, p)| p)
                    .collect();
                let mut shown = range.start;
                for (s, e) in kept(src, range.clone(), &here) {
                    if s > shown {
                        text.push_str(ellipsis);
                    }
                    pieces.push((s, e, text.len()));
                    text.push_str(&src[s..e]);
                    shown = e;
                }
                if shown < range.end {
                    text.push_str(ellipsis);
                }
                if range.end < src.len() {
                    text.push('\n');
                }
            }
        }
        let map = |o: usize| -> usize {
            let i = pieces.partition_point(|p| p.0 <= o).saturating_sub(1);
            pieces
                .get(i)
                .map_or(0, |&(s, e, at)| at + o.clamp(s, e) - s)
        };
        let mut columns = Vec::new();
        let labels = d
            .labels
            .iter()
            .zip(&spans)
            .enumerate()
            .map(|(i, (l, &(s, e)))| {
                let start = map(s);
                columns.push((start, source.line_col(s).1 - 1));
                let message = (!l.message.is_empty()).then(|| l.message.clone());
                (message, start..map(e).max(start), i == 0)
            })
            .collect();
        Excerpt {
            name: source.name.clone(),
            text,
            lines,
            labels,
            columns,
        }
    }

    /// The excerpt line holding byte `offset` of `text`.
    fn line_at(&self, offset: usize) -> usize {
        self.lines
            .partition_point(|l| l.0 <= offset)
            .saturating_sub(1)
    }

    /// Where excerpt line `i` ends, its newline included.
    fn line_end(&self, i: usize) -> usize {
        self.lines.get(i + 1).map_or(self.text.len(), |l| l.0)
    }
}

/// The byte ranges of line `range` of `src` to show: all of it when short, else
/// pieces of `KEEP` bytes around each of `points` (or its beginning when none),
/// merged when close, on character boundaries.
fn kept(src: &str, range: std::ops::Range<usize>, points: &[usize]) -> Vec<(usize, usize)> {
    let line = &src[range.clone()];
    if line.len() <= LONG_LINE || line.chars().count() <= LONG_LINE {
        return vec![(range.start, range.end)];
    }
    let floor = |o: usize| floor_char_boundary(src, o);
    let ceil = |mut o: usize| {
        while o < range.end && !src.is_char_boundary(o) {
            o += 1;
        }
        o.min(range.end)
    };
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let wanted: Vec<(usize, usize)> = if points.is_empty() {
        vec![(range.start, range.start + 2 * KEEP)]
    } else {
        points
            .iter()
            .map(|&p| (p.saturating_sub(KEEP), p + KEEP))
            .collect()
    };
    for (s, e) in wanted {
        let (s, e) = (floor(s.max(range.start)), ceil(e.min(range.end)));
        match pieces.last_mut() {
            Some(last) if s <= last.1 + 8 => last.1 = last.1.max(e),
            _ => pieces.push((s, e)),
        }
    }
    pieces
}

/// The largest character boundary of `s` at or before `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl miette::SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let start = span.offset();
        let end = start + span.len();
        if end > self.text.len() {
            return Err(miette::MietteError::OutOfBounds);
        }
        let first = self.line_at(start);
        let last = self.line_at(end.saturating_sub(1).max(start));
        let run = |i: usize| self.lines.get(i).map_or(0, |l| l.2);
        let mut from = first;
        while from > 0 && first - from < before && run(from - 1) == run(first) {
            from -= 1;
        }
        let mut to = last;
        while to + 1 < self.lines.len() && to - last < after && run(to + 1) == run(last) {
            to += 1;
        }
        let line_start = self.lines.get(from).map_or(0, |l| l.0);
        let (data_start, column) = if before == 0 {
            let column = self
                .columns
                .iter()
                .find(|c| c.0 == start)
                .map_or_else(|| self.text[line_start..start].chars().count(), |c| c.1);
            (start, column)
        } else {
            (line_start, 0)
        };
        let data_end = self.line_end(to);
        let line = self.lines.get(from).map_or(0, |l| l.1);
        // miette shows two labels in one snippet when the first one's lines reach
        // the second's: counted to the end of the run, they do within a run.
        let mut run_end = to;
        while run_end + 1 < self.lines.len() && run(run_end + 1) == run(to) {
            run_end += 1;
        }
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[data_start..data_end],
            (data_start, data_end - data_start).into(),
            line,
            column,
            run_end - from + 1,
        )))
    }
}

/// A diagnostic as miette renders it: its labels moved into its excerpt, and
/// without miette's code header (the first line already has it).
#[derive(Debug)]
struct Shown<'a> {
    d: &'a Diagnostic,
    excerpt: &'a Excerpt,
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.d.fmt(f)
    }
}

impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(self.d)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        miette::Diagnostic::help(self.d)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.excerpt)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.excerpt.labels.iter().map(
            |(text, span, primary)| {
                let span = miette::SourceSpan::new(span.start.into(), span.len());
                if *primary {
                    miette::LabeledSpan::new_primary_with_span(text.clone(), span)
                } else {
                    miette::LabeledSpan::new_with_span(text.clone(), span)
                }
            },
        )))
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
