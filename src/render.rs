//! Diagnostics for people: the text `lbp check` prints, plain (ASCII, no
//! colour: `--color never`, piped) or fancy (Unicode and ANSI colours, on a
//! terminal). The format is miette's graphical report (`miette::
//! GraphicalReportHandler`, width 100, no links), which the goldens in
//! `tests/ui` pin down byte for byte; lbp draws it itself, because miette's
//! generic drawing (trait objects, a `String` per styled piece, a copy of every
//! line) was most of the cost of printing many diagnostics.
//!
//! A diagnostic is shown through an [`Excerpt`] of its file: the lines its labels
//! touch with one line of context, long lines cut down around the labels' ends.
//! [`Renderer::render`] draws the excerpt itself: snippets, line numbers,
//! underlines, labels' messages, the gutter of labels across lines. miette is
//! still used for two things: laying out a message or help that it would wrap
//! (textwrap's rules; lbp draws the snippets between), and, whole, a diagnostic
//! whose excerpt has a character lbp does not know the width of (two columns
//! wide, such as CJK, or an escape) or a label message of several lines. The
//! unit tests compare lbp's drawing with miette's on generated diagnostics.

use lbp_lang::Diagnostic;
use lbp_lang::diag::LineIndex;
use std::fmt::Write as _;
use std::path::Path;

/// A policy's text, its name and its line index, built once for all of its
/// diagnostics.
#[derive(Debug)]
pub struct Source<'a> {
    pub name: String,
    pub text: &'a str,
    pub lines: LineIndex,
}

impl<'a> Source<'a> {
    pub fn new(file: &Path, text: &'a str) -> Source<'a> {
        Source {
            name: file.display().to_string(),
            text,
            lines: LineIndex::new(text),
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        self.lines.line_col(self.text, offset)
    }
}

/// Renders diagnostics for people, set up once. Plain output is deterministic
/// (no colour, ASCII art, fixed width), which the golden tests rely on.
#[derive(Debug)]
pub struct Renderer {
    theme: &'static Theme,
    /// miette's handler, for what lbp does not draw itself.
    handler: miette::GraphicalReportHandler,
    /// The same handler without wrapping: for a diagnostic whose message and
    /// help are one short line each, which wrapping leaves as they are.
    unwrapped: miette::GraphicalReportHandler,
    ellipsis: &'static str,
}

/// Text that miette's wrapping at 100 columns leaves as it is: one line, short,
/// without tabs or surrounding whitespace.
fn fits(text: &str) -> bool {
    text.len() <= 80 && !text.contains(['\n', '\r', '\t']) && text.trim() == text
}

/// The characters and ANSI styles of a drawing: miette's ASCII theme without
/// colours, or its Unicode theme with ANSI colours.
#[derive(Debug)]
struct Theme {
    hbar: char,
    vbar: char,
    vbar_break: char,
    uarrow: char,
    ltop: char,
    lbot: char,
    underbar: char,
    underline: char,
    lcross: char,
    rarrow: char,
    error: &'static str,
    warning: &'static str,
    /// Escape sequences that start a style ("" for none); a style ends with
    /// `RESET`.
    error_style: &'static str,
    warning_style: &'static str,
    help_style: &'static str,
    link_style: &'static str,
    linum_style: &'static str,
    /// The labels' styles, in turn by position.
    highlights: &'static [&'static str],
}

const RESET: &str = "\x1b[0m";

static PLAIN: Theme = Theme {
    hbar: '-',
    vbar: '|',
    vbar_break: ':',
    uarrow: '^',
    ltop: ',',
    lbot: '`',
    underbar: '|',
    underline: '^',
    lcross: '|',
    rarrow: '>',
    error: "x",
    warning: "!",
    error_style: "",
    warning_style: "",
    help_style: "",
    link_style: "",
    linum_style: "",
    highlights: &[""],
};

static FANCY: Theme = Theme {
    hbar: '─',
    vbar: '│',
    vbar_break: '·',
    uarrow: '▲',
    ltop: '╭',
    lbot: '╰',
    underbar: '┬',
    underline: '─',
    lcross: '├',
    rarrow: '▶',
    error: "×",
    warning: "⚠",
    error_style: "\x1b[31m",
    warning_style: "\x1b[33m",
    help_style: "\x1b[36m",
    link_style: "\x1b[36;1;4m",
    linum_style: "\x1b[2m",
    highlights: &["\x1b[35;1m", "\x1b[33;1m", "\x1b[32;1m"],
};

/// Start `style` (nothing when plain).
fn open(out: &mut String, style: &str) {
    out.push_str(style);
}

/// End `style`.
fn close(out: &mut String, style: &str) {
    if !style.is_empty() {
        out.push_str(RESET);
    }
}

fn push_n(out: &mut String, c: char, n: usize) {
    for _ in 0..n {
        out.push(c);
    }
}

/// The columns character `c` takes, as miette counts them (tabs aside), or
/// `None` for one lbp does not draw itself (an escape, or a width it does not
/// know).
fn width(c: char) -> Option<usize> {
    match c {
        ' '..='~' => Some(1),
        '\x1b' => None,
        '\0'..='\x1f' | '\x7f' => Some(0),
        // Latin-1 letters and signs, Latin Extended-A and -B, the euro sign and
        // the ellipsis: one column each.
        '\u{a0}'..='\u{ac}' | '\u{ae}'..='\u{24f}' | '€' | '…' => Some(1),
        _ => None,
    }
}

/// The columns of `text`, tabs to the next multiple of 4, or `None` when a
/// character has no known width.
fn columns(text: &str) -> Option<usize> {
    if plain(text) {
        return Some(text.len());
    }
    let mut column = 0;
    for c in text.chars() {
        column += if c == '\t' { 4 - column % 4 } else { width(c)? };
    }
    Some(column)
}

/// Text of printable ASCII characters only: a column each.
fn plain(text: &str) -> bool {
    text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// One line of a snippet: its 1-based number, where it starts in the excerpt
/// and its length there (with its line break), and its text (without).
struct Line {
    number: usize,
    offset: usize,
    length: usize,
    text: std::ops::Range<usize>,
}

/// A label as drawn: span in the excerpt, message, primary, style.
#[derive(Clone, Copy)]
struct Mark<'a> {
    start: usize,
    end: usize,
    message: Option<&'a str>,
    primary: bool,
    style: &'static str,
}

impl Mark<'_> {
    /// miette tells labels apart by message and span.
    fn same(&self, other: &Mark) -> bool {
        self.start == other.start && self.end == other.end && self.message == other.message
    }
}

impl Line {
    fn end(&self) -> usize {
        self.offset + self.length
    }
    /// The label lies within this line.
    fn holds(&self, m: &Mark) -> bool {
        m.start >= self.offset && m.end <= self.end()
    }
    fn starts_here(&self, m: &Mark) -> bool {
        m.start >= self.offset && m.start < self.end()
    }
    fn ends_here(&self, m: &Mark) -> bool {
        let end = m.start + (m.end - m.start).max(1);
        end > self.offset && end <= self.end()
    }
    /// The label is drawn on this line.
    fn touches(&self, m: &Mark) -> bool {
        let end = m.start + (m.end - m.start).max(1);
        self.starts_here(m) || (m.start < self.offset && end > self.end()) || self.ends_here(m)
    }
    /// The label needs the gutter on this line (it reaches across lines).
    fn in_gutter(&self, m: &Mark) -> bool {
        self.touches(m) && !(self.starts_here(m) && self.ends_here(m))
    }
    /// The gutter's tests: the label starts here or after; it ends here; it
    /// passes this line by.
    fn starts_at_or_after(&self, m: &Mark) -> bool {
        m.start >= self.offset
    }
    fn ends(&self, m: &Mark) -> bool {
        m.end >= self.offset && m.end <= self.end()
    }
    fn flyby(&self, m: &Mark) -> bool {
        m.start < self.offset && m.end > self.end()
    }
}

impl Renderer {
    pub fn new(fancy: bool) -> Renderer {
        let theme = if fancy {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::none()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        Renderer {
            theme: if fancy { &FANCY } else { &PLAIN },
            unwrapped: handler.clone().with_wrap_lines(false),
            handler,
            ellipsis: if fancy { "…" } else { "..." },
        }
    }

    /// Append one diagnostic of `source`, as `lbp check` prints it, to `out`.
    pub fn render(&self, source: &Source, d: &Diagnostic, out: &mut String) {
        self.render_with(source, d, out, false);
    }

    /// [`Renderer::render`], with miette drawing every diagnostic when `miette`.
    fn render_with(&self, source: &Source, d: &Diagnostic, out: &mut String, miette: bool) {
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
        let at = out.len();
        if miette || self.draw(&excerpt, d, out).is_none() {
            out.truncate(at);
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
        }
        out.push('\n');
    }

    /// Draw the report of `d` below its first line, as miette does, or `None`
    /// (with part of it written) for what is left to miette.
    fn draw(&self, ex: &Excerpt, d: &Diagnostic, out: &mut String) -> Option<()> {
        let t = self.theme;
        let short = |s: &str| fits(s) && !s.is_empty() && columns(s).is_some();
        let words = if short(&d.message) && d.help.as_deref().is_none_or(short) {
            None
        } else {
            // Text miette wraps (or treats specially): its handler lays out the
            // message and the help, alone, and lbp draws the snippets between.
            let handler = if fits(&d.message) && d.help.as_deref().is_none_or(fits) {
                &self.unwrapped
            } else {
                &self.handler
            };
            let mut message = String::new();
            let _ = handler.render_report(&mut message, &Words { d, help: false });
            let mut help = String::new();
            if d.help.is_some() {
                let _ = handler.render_report(&mut help, &Words { d, help: true });
                help.drain(..help.find('\n').map_or(help.len(), |i| i + 1));
            }
            Some((message, help))
        };
        // The message.
        if let Some((message, _)) = &words {
            out.push_str(message);
        } else {
            let (icon, style) = match d.severity {
                lbp_lang::diag::Severity::Error => (t.error, t.error_style),
                lbp_lang::diag::Severity::Warning => (t.warning, t.warning_style),
            };
            out.push_str("  ");
            open(out, style);
            out.push_str(icon);
            close(out, style);
            out.push(' ');
            out.push_str(&d.message);
            out.push('\n');
        }
        // The labels by position, styled in turn.
        let mut marks: Vec<Mark> = Vec::with_capacity(ex.labels.len());
        for (message, span, primary) in &ex.labels {
            if span.end > ex.text.len() || message.is_some_and(|m| m.contains('\n')) {
                return None;
            }
            marks.push(Mark {
                start: span.start,
                end: span.end,
                message: *message,
                primary: *primary,
                style: "",
            });
        }
        marks.sort_by_key(|m| m.start);
        for (i, m) in marks.iter_mut().enumerate() {
            m.style = t.highlights[i % t.highlights.len()];
        }
        // The snippets: a label's lines with one line of context, labels whose
        // snippets reach each other in one.
        let mut snippets: Vec<(usize, usize, usize, usize)> = Vec::new();
        for m in &marks {
            let (from, _, line, count) = ex.context(m.start, m.end);
            if let Some(left) = snippets.last_mut()
                && left.2 + left.3 >= line
            {
                left.1 = left.1.max(m.end);
                let (_, _, line, count) = ex.context(left.0, left.1);
                (left.2, left.3) = (line, count);
                continue;
            }
            let _ = from;
            snippets.push((m.start, m.end, line, count));
        }
        let mut lines: Vec<Line> = Vec::new();
        for &(start, end, _, _) in &snippets {
            self.snippet(ex, start, end, &marks, &mut lines, out)?;
        }
        // The help.
        if let Some((_, help)) = &words {
            out.push_str(help);
        } else if let Some(help) = &d.help {
            open(out, t.help_style);
            out.push_str("  help: ");
            close(out, t.help_style);
            out.push_str(help);
            out.push('\n');
        }
        Some(())
    }

    /// Draw the snippet of excerpt bytes `start..end` with the labels on its
    /// lines; `lines` is scratch space.
    fn snippet(
        &self,
        ex: &Excerpt,
        start: usize,
        end: usize,
        marks: &[Mark],
        lines: &mut Vec<Line>,
        out: &mut String,
    ) -> Option<()> {
        let t = self.theme;
        let (from, to, _, _) = ex.context(start, end);
        ex.split(from, to, lines);
        for l in lines.iter() {
            columns(&ex.text[l.text.clone()])?;
        }
        // The gutter: as wide as the most labels across lines on one line.
        let gutter = lines
            .iter()
            .map(|l| {
                marks
                    .iter()
                    .filter(|m| !l.holds(m) && l.in_gutter(m))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let width = lines.last().map_or(0, |l| l.number).to_string().len();
        // The header names the primary label's place.
        push_n(out, ' ', width + 2);
        out.push(t.ltop);
        out.push(t.hbar);
        let inside = |m: &&Mark| start <= m.start && m.end <= end;
        let primary = marks
            .iter()
            .filter(inside)
            .find(|m| m.primary)
            .or_else(|| marks.iter().find(inside));
        let (line, column) = match primary {
            Some(m) => ex.place(m.start),
            None => (ex.lines[from].1, 0),
        };
        out.push('[');
        open(out, t.link_style);
        let _ = write!(out, "{}:{}:{}", ex.name, line + 1, column + 1);
        close(out, t.link_style);
        out.push_str("]\n");
        let mut here: Vec<Mark> = Vec::new();
        let mut bars: Vec<(Mark, usize)> = Vec::new();
        for l in lines.iter() {
            let text = &ex.text[l.text.clone()];
            out.push(' ');
            open(out, t.linum_style);
            let _ = write!(out, "{:width$}", l.number);
            close(out, t.linum_style);
            out.push(' ');
            out.push(t.vbar);
            out.push(' ');
            self.line_gutter(gutter, l, marks, out);
            let mut column = 0;
            if plain(text) {
                out.push_str(text);
            } else {
                for c in text.chars() {
                    if c == '\t' {
                        let n = 4 - column % 4;
                        push_n(out, ' ', n);
                        column += n;
                    } else {
                        out.push(c);
                        column += width_of(c);
                    }
                }
            }
            out.push('\n');
            here.clear();
            here.extend(marks.iter().filter(|m| l.touches(m) && l.holds(m)));
            if here.is_empty() {
                self.ends(gutter, width, l, marks, out);
                continue;
            }
            // The underlines.
            let gap = |out: &mut String| {
                out.push(' ');
                push_n(out, ' ', width);
                out.push(' ');
                out.push(t.vbar_break);
                out.push(' ');
            };
            gap(out);
            self.highlight_gutter(gutter, l, marks, out);
            let mut highest = 0;
            bars.clear();
            for m in &here {
                let from = visual(text, m.start - l.offset, true).max(highest);
                let to = if m.start == m.end {
                    from + 1
                } else {
                    visual(text, m.end - l.offset, false).max(from + 1)
                };
                let bar = (from + to) / 2;
                open(out, m.style);
                push_n(out, ' ', from.saturating_sub(highest));
                push_n(out, t.underline, bar - from);
                out.push(if m.start == m.end {
                    t.uarrow
                } else if m.message.is_some() {
                    t.underbar
                } else {
                    t.underline
                });
                push_n(out, t.underline, to - bar - 1);
                close(out, m.style);
                highest = highest.max(to);
                bars.push((*m, bar));
            }
            out.push('\n');
            // The labels' messages, the last first.
            for m in here.iter().rev() {
                let Some(message) = m.message else { continue };
                gap(out);
                self.highlight_gutter(gutter, l, marks, out);
                let mut at = 1;
                for (other, bar) in &bars {
                    while at < bar + 1 {
                        out.push(' ');
                        at += 1;
                    }
                    if !other.same(m) {
                        open(out, other.style);
                        out.push(t.vbar);
                        close(out, other.style);
                        at += 1;
                    } else {
                        open(out, m.style);
                        out.push(t.lbot);
                        out.push(t.hbar);
                        out.push(t.hbar);
                        out.push(' ');
                        open(out, m.style);
                        out.push_str(message);
                        close(out, m.style);
                        close(out, m.style);
                        out.push('\n');
                        break;
                    }
                }
            }
            self.ends(gutter, width, l, marks, out);
        }
        push_n(out, ' ', width + 2);
        out.push(t.lbot);
        push_n(out, t.hbar, 4);
        out.push('\n');
        Some(())
    }
}

impl Renderer {
    /// The gutter after a line's number: where labels across lines start,
    /// end, or pass by.
    fn line_gutter(&self, gutter: usize, l: &Line, marks: &[Mark], out: &mut String) {
        if gutter == 0 {
            return;
        }
        let t = self.theme;
        // miette pads to the gutter's width counting the escape sequences' characters too.
        let mut chars = 0;
        let mut arrow = false;
        let styled = |out: &mut String, style: &str, c: char, n: usize| -> usize {
            open(out, style);
            push_n(out, c, n);
            close(out, style);
            n + if style.is_empty() {
                0
            } else {
                style.len() + RESET.len()
            }
        };
        for (i, m) in marks.iter().filter(|m| l.in_gutter(m)).enumerate() {
            let corner = if l.starts_at_or_after(m) {
                t.ltop
            } else if l.ends(m) {
                if m.message.is_some() {
                    t.lcross
                } else {
                    t.lbot
                }
            } else {
                if l.flyby(m) {
                    chars += styled(out, m.style, t.vbar, 1);
                } else {
                    out.push(' ');
                    chars += 1;
                }
                continue;
            };
            chars += styled(out, m.style, corner, 1);
            chars += styled(out, m.style, t.hbar, gutter.saturating_sub(i));
            chars += styled(out, m.style, t.rarrow, 1);
            arrow = true;
            break;
        }
        push_n(
            out,
            ' ',
            if arrow { 1 } else { 3 } + gutter.saturating_sub(chars),
        );
    }

    /// The gutter of a row below a line (underlines, messages).
    fn highlight_gutter(&self, gutter: usize, l: &Line, marks: &[Mark], out: &mut String) {
        if gutter == 0 {
            return;
        }
        let t = self.theme;
        let mut columns = 0;
        for (i, m) in marks.iter().filter(|m| l.in_gutter(m)).enumerate() {
            if !l.holds(m) && l.ends(m) {
                let n = gutter.saturating_sub(i) + 2;
                open(out, m.style);
                out.push(t.lbot);
                close(out, m.style);
                open(out, m.style);
                push_n(out, t.hbar, n);
                close(out, m.style);
                columns += n + 1;
                break;
            }
            open(out, m.style);
            out.push(t.vbar);
            close(out, m.style);
            columns += 1;
        }
        push_n(out, ' ', (gutter + 3).saturating_sub(columns));
    }

    /// The messages of labels across lines that end on line `l`.
    fn ends(&self, gutter: usize, width: usize, l: &Line, marks: &[Mark], out: &mut String) {
        let t = self.theme;
        for m in marks {
            let Some(message) = m.message else { continue };
            if !l.touches(m) || l.holds(m) || !l.ends(m) || l.starts_at_or_after(m) {
                continue;
            }
            out.push(' ');
            push_n(out, ' ', width);
            out.push(' ');
            out.push(t.vbar_break);
            out.push(' ');
            self.highlight_gutter(gutter, l, marks, out);
            open(out, m.style);
            out.push(t.hbar);
            close(out, m.style);
            out.push(' ');
            open(out, m.style);
            out.push_str(message);
            close(out, m.style);
            out.push('\n');
        }
    }
}

/// The width of a character already known to have one.
fn width_of(c: char) -> usize {
    width(c).unwrap_or(0)
}

/// The column where byte `offset` of line `text` is drawn (an offset inside a
/// character moves back at a start, on at an end; one past the text is one
/// column past its end).
fn visual(text: &str, offset: usize, start: bool) -> usize {
    let mut i = offset;
    while i <= text.len() && !text.is_char_boundary(i) {
        if start {
            i -= 1;
        } else {
            i += 1;
        }
    }
    let columns = columns(&text[..i.min(text.len())]).unwrap_or(0);
    if i > text.len() { columns + 1 } else { columns }
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
struct Excerpt<'a> {
    name: &'a str,
    text: String,
    /// Each line of `text`: where it starts in `text`, its 0-based line in the
    /// file, and its run of consecutive file lines (a new run after a gap).
    lines: Vec<(usize, usize, usize)>,
    /// The labels: message, span in `text`, primary.
    labels: Vec<(Option<&'a str>, std::ops::Range<usize>, bool)>,
    /// The file column (0-based, in characters) of each label's start, by its
    /// offset in `text`: miette names the primary label's position.
    columns: Vec<(usize, usize)>,
}

impl<'a> Excerpt<'a> {
    fn new(source: &'a Source, d: &'a Diagnostic, ellipsis: &str) -> Excerpt<'a> {
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
        let mut here: Vec<usize> = Vec::new();
        for (run, &(a, b)) in runs.iter().enumerate() {
            for line in a..=b {
                lines.push((text.len(), line, run));
                let range = index.line_range(line);
                let at = points.partition_point(|&(l, _)| l < line);
                here.clear();
                here.extend(
                    points[at..]
                        .iter()
                        .take_while(|&&(l, _)| l == line)
                        .map(|&(_, p)| p),
                );
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
                let message = (!l.message.is_empty()).then_some(l.message.as_str());
                (message, start..map(e).max(start), i == 0)
            })
            .collect();
        Excerpt {
            name: &source.name,
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
pub fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl miette::SourceCode for Excerpt<'_> {
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
            self.name.to_string(),
            &self.text.as_bytes()[data_start..data_end],
            (data_start, data_end - data_start).into(),
            line,
            column,
            run_end - from + 1,
        )))
    }
}

/// The words of a diagnostic, for miette to lay out: its message (and
/// severity) with no source, or (`help`) an empty message and its help.
#[derive(Debug)]
struct Words<'a> {
    d: &'a Diagnostic,
    help: bool,
}

impl std::fmt::Display for Words<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.help { Ok(()) } else { self.d.fmt(f) }
    }
}

impl std::error::Error for Words<'_> {}

impl miette::Diagnostic for Words<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(self.d)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        if self.help {
            miette::Diagnostic::help(self.d)
        } else {
            None
        }
    }
}

/// A diagnostic as miette renders it: its labels moved into its excerpt, and
/// without miette's code header (the first line already has it).
#[derive(Debug)]
struct Shown<'a> {
    d: &'a Diagnostic,
    excerpt: &'a Excerpt<'a>,
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
                    miette::LabeledSpan::new_primary_with_span(text.map(String::from), span)
                } else {
                    miette::LabeledSpan::new_with_span(text.map(String::from), span)
                }
            },
        )))
    }
}

impl Excerpt<'_> {
    /// The snippet of bytes `start..end` as miette reads it with one line of
    /// context: its first and last excerpt lines, the file line (0-based) of the
    /// first, and the lines to the end of its run (how far miette takes it to
    /// reach).
    fn context(&self, start: usize, end: usize) -> (usize, usize, usize, usize) {
        let first = self.line_at(start);
        let last = self.line_at(end.saturating_sub(1).max(start));
        let run = |i: usize| self.lines.get(i).map_or(0, |l| l.2);
        let from = if first > 0 && run(first - 1) == run(first) {
            first - 1
        } else {
            first
        };
        let to = if last + 1 < self.lines.len() && run(last + 1) == run(last) {
            last + 1
        } else {
            last
        };
        let mut run_end = to;
        while run_end + 1 < self.lines.len() && run(run_end + 1) == run(to) {
            run_end += 1;
        }
        let line = self.lines.get(from).map_or(0, |l| l.1);
        (from, to, line, run_end - from + 1)
    }

    /// The file line and column (0-based) miette names for a label starting at
    /// byte `start`.
    fn place(&self, start: usize) -> (usize, usize) {
        let first = self.line_at(start);
        let line_start = self.lines.get(first).map_or(0, |l| l.0);
        let column = self
            .columns
            .iter()
            .find(|c| c.0 == start)
            .map_or_else(|| self.text[line_start..start].chars().count(), |c| c.1);
        (self.lines.get(first).map_or(0, |l| l.1), column)
    }

    /// Excerpt lines `from..=to` as miette splits them: at LF and CRLF (a lone
    /// CR is text), numbered from the file line of `from`.
    fn split(&self, from: usize, to: usize, lines: &mut Vec<Line>) {
        lines.clear();
        let start = self.lines.get(from).map_or(0, |l| l.0);
        let end = self.line_end(to);
        let bytes = self.text.as_bytes();
        let mut number = self.lines.get(from).map_or(0, |l| l.1);
        let mut line_start = start;
        let mut p = start;
        while p < end {
            let Some(i) = bytes[p..end].iter().position(|&b| b == b'\n' || b == b'\r') else {
                // The last line, without a line break.
                number += 1;
                lines.push(Line {
                    number,
                    offset: line_start,
                    length: end - line_start,
                    text: line_start..end,
                });
                break;
            };
            p += i + 1;
            let text_end = if bytes[p - 1] == b'\n' {
                p - 1
            } else if p < end && bytes[p] == b'\n' {
                p += 1;
                p - 2
            } else {
                // A lone CR is text; one at the very end ends the last line
                // without counting it (as miette does).
                if p >= end {
                    lines.push(Line {
                        number,
                        offset: line_start,
                        length: p - line_start,
                        text: line_start..p,
                    });
                }
                continue;
            };
            number += 1;
            lines.push(Line {
                number,
                offset: line_start,
                length: p - line_start,
                text: line_start..text_end,
            });
            line_start = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbp_lang::ast::Span;

    /// lbp's drawing equals miette's, byte for byte, plain and fancy: miette's
    /// handler stays in the renderer (for what lbp does not draw) and is the
    /// oracle here, on generated texts (tabs, CRLF, lone CR, multi-byte and wide
    /// characters, long lines) with generated labels (empty, at line ends, at
    /// the end of the file, several on a line, on lines near and far apart) and
    /// messages.
    #[test]
    fn draws_as_miette_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        let pieces = [
            "a",
            "port",
            " ",
            "  ",
            "\t",
            "\n",
            "\n",
            "\r\n",
            "é",
            "€",
            "…",
            "中",
            "\r",
            "{",
            "}",
            "==",
            "198.18.0.1",
        ];
        let messages = ["", "here", "this one", "a longer label message with `code`"];
        let helps = [
            "use a port from 1 to 65535",
            "",
            "a help that is much longer than eighty characters, which miette wraps at its width of one hundred",
            "two\nlines",
        ];
        let mut drawn = 0;
        for round in 0..4000 {
            let mut text = String::new();
            let len = [20, 200, 600, 3000][round % 4];
            while text.len() < len {
                let p = pieces[next(pieces.len())];
                if round % 4 == 3 && p.contains('\n') && next(20) != 0 {
                    continue;
                }
                if round % 3 == 0 && !p.is_ascii() {
                    continue;
                }
                text.push_str(p);
            }
            let mut d = if next(3) == 0 {
                Diagnostic::warning("lbp::test::random", "a warning")
            } else {
                Diagnostic::error("lbp::test::random", "an error message")
            };
            for _ in 0..1 + next(4) {
                let start = if next(8) == 0 {
                    text.len()
                } else {
                    next(text.len() + 1)
                };
                let end = start + [0, 1, 3, 10, 40][next(5)];
                d = d.label(Span::new(start, end), messages[next(messages.len())]);
            }
            if next(2) == 0 {
                d = d.help(helps[next(helps.len())]);
            }
            let source = Source::new(Path::new("random.lbp"), &text);
            for fancy in [false, true] {
                let r = Renderer::new(fancy);
                let (mut ours, mut theirs) = (String::new(), String::new());
                r.render_with(&source, &d, &mut ours, false);
                r.render_with(&source, &d, &mut theirs, true);
                assert_eq!(ours, theirs, "{text:?}\n{d:?}\nfancy: {fancy}\n{theirs}");
                let ex = Excerpt::new(&source, &d, r.ellipsis);
                let mut scratch = String::new();
                drawn += r.draw(&ex, &d, &mut scratch).is_some() as usize;
            }
        }
        // Most diagnostics are drawn by lbp, not handed to miette (the rest
        // have characters two columns wide).
        assert!(drawn > 3000, "lbp drew {drawn} of 8000");
    }

    /// Every diagnostic of the golden tests (`tests/ui`) is drawn by lbp, not
    /// handed to miette: the goldens check lbp's drawing.
    #[test]
    fn goldens_are_drawn_by_lbp() {
        let mut count = 0;
        for entry in std::fs::read_dir("tests/ui").unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "lbp") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let source = Source::new(&path, &text);
            for d in &lbp_lang::analyze(&text).diagnostics {
                for fancy in [false, true] {
                    let r = Renderer::new(fancy);
                    let ex = Excerpt::new(&source, d, r.ellipsis);
                    let mut out = String::new();
                    assert!(
                        r.draw(&ex, d, &mut out).is_some(),
                        "{}: {d:?}",
                        path.display()
                    );
                    count += 1;
                }
            }
        }
        assert!(count > 100, "{count} diagnostics");
    }
}
