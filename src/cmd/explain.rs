//! `lbp explain`: the decision for one packet, written as a test line, with the
//! rules that did not match, the rule that let it past the filter, and the rule
//! that decided, shown in the policy's source.
//!
//! The line is checked as a line of a `test` block is
//! (`lbp_lang::check::check_packet_line`: the same checks, the same
//! diagnostics), so a line `lbp check` would refuse is refused here, never
//! decided as some other packet. A line with `=> VERDICT` is a one-line test:
//! the verdict is checked, then compared with the decision, and a different one
//! fails (exit 1).

use super::common::{Color, Format, Output, load, report, stage_name};
use lbp_lang::Diagnostic;
use lbp_lang::ast::{Item, Span};
use lbp_runtime::app::Registry;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `lbp explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    policy: PathBuf,
    /// One test packet line, `PROTO SRC -> DST [OPTION...]`, optionally ending in
    /// `=> VERDICT`: then the decision must be that verdict.
    packet: String,
}

pub fn run(args: ExplainArgs, apps: &Registry) -> Result<ExitCode, String> {
    let ExplainArgs { policy, packet } = args;
    let (src, analysis, prog) = load(&policy, apps)?;
    let name = policy.display().to_string();
    // What the user wrote, and the test line parsed (with a verdict).
    let written = packet.trim();
    if written.contains(['\n', '\r']) {
        return Err(format!("the packet `{packet}` is not one test line"));
    }
    let expects = written.contains("=>");
    let line = if expects {
        written.to_string()
    } else {
        format!("{written} => drop")
    };

    // The line is parsed after a comment as long as the policy, so that its
    // spans lie past every span of the policy: a diagnostic's label belongs to
    // the line or to the policy by its position alone.
    let head = format!("#{}\ntest \"explain\" {{\n", " ".repeat(src.len()));
    let at = head.len();
    let wrapped = format!("{head}{line}\n}}\n");
    let parsed = lbp_lang::parse::parse(&wrapped);
    let pkt = match parsed.policy.items.as_slice() {
        [Item::Test(t)] if t.packets.len() == 1 => Some(&t.packets[0]),
        _ => None,
    };
    let mut diags = parsed.diagnostics.clone();
    if !diags.iter().any(Diagnostic::is_error) {
        match pkt {
            Some(p) => diags.extend(lbp_lang::check::check_packet_line_with(
                &analysis.policy,
                p,
                &apps.names(),
            )),
            None => diags.push(
                Diagnostic::error("lbp::parse::syntax", "expected one test packet line")
                    .label(Span::new(at, at + line.len()), "not one packet line"),
            ),
        }
    }
    lbp_lang::diag::sort(&mut diags);
    let diags: Vec<Diagnostic> = diags
        .into_iter()
        .map(|d| on_the_line(d, at, written.len(), &src, &name))
        .collect();
    if !diags.is_empty() {
        let out = Output {
            format: Format::Human,
            color: Color::Auto,
        };
        report(&out, Path::new("packet"), written, &diags);
    }
    let pkt = match pkt {
        Some(p) if !diags.iter().any(Diagnostic::is_error) => p,
        _ => return Err(format!("the packet `{packet}` is not a valid test line")),
    };

    let consts = lbp_compiler::testing::consts(&analysis.policy);
    let (_, fields) = lbp_compiler::testing::packet_fields(pkt, &prog, &consts)?;
    let (d, missed, passed_by) = lbp_compiler::interp::trace(&prog, &fields);
    let verdict =
        lbp_compiler::testing::verdict(&prog, &fields, d, &mut std::collections::HashSet::new());
    println!("decision: {verdict}");
    println!("stage:    {}", stage_name(d.stage));
    if d.action == lbp_abi::Action::Balance as u32 {
        println!("hash:     {:08x}", d.hash);
    }
    if d.action == lbp_abi::Action::Expire as u32 {
        println!("ttl:      {}: {}", fields.ip_ttl, expired_because(&prog, d));
    }
    let show = |i: u32, what: &str| {
        let r = &prog.rules[i as usize];
        let (l, c) = lbp_lang::diag::line_col(&src, r.span.start);
        let text = src.get(r.span.start..r.span.end).unwrap_or("").trim();
        println!("  {name}:{l}:{c}  {what}: {text}");
    };
    if !missed.is_empty() {
        println!("rules that did not match:");
        for &i in &missed {
            show(i, "no match");
        }
    }
    if let Some(p) = passed_by {
        println!("let past the filter by:");
        show(p, "matched");
    }
    if d.rule != lbp_abi::NO_RULE {
        let r = &prog.rules[d.rule as usize];
        let (l, c) = lbp_lang::diag::line_col(&src, r.span.start);
        let line_start = src[..r.span.start].rfind('\n').map_or(0, |n| n + 1);
        let line_end = src[r.span.start..]
            .find('\n')
            .map_or(src.len(), |n| r.span.start + n);
        let width = src[r.span.start..r.span.end.min(line_end)]
            .chars()
            .count()
            .max(1);
        println!("decided by the rule at {name}:{l}:{c}:");
        println!("{l:>6} | {}", &src[line_start..line_end]);
        println!("{:>6} | {}{}", "", " ".repeat(c - 1), "^".repeat(width));
    }
    if expects {
        let want = lbp_compiler::testing::expected_verdict(&pkt.verdict);
        if want != verdict {
            println!("expected: {want}: the decision differs");
            return Ok(ExitCode::FAILURE);
        }
        println!("expected: {want}: as decided");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an `Expire` decision replaced: "balanced by SERVICE" or "routed out of
/// IFACE", and what the appliance does instead.
fn expired_because(prog: &lbp_compiler::Program, d: lbp_abi::Decision) -> String {
    let t = d.target as usize;
    let would = if d.stage == lbp_abi::stage::ROUTE {
        let dev = prog
            .routes
            .get(t)
            .and_then(|r| prog.interfaces.get(r.dev as usize));
        format!("routed out of {}", dev.map_or("?", |i| i.name.as_str()))
    } else {
        let svc = prog.services.get(t);
        format!("balanced by {}", svc.map_or("?", |s| s.name.as_str()))
    };
    format!(
        "the packet would be {would}, but its TTL runs out here: the appliance answers with an ICMP time exceeded"
    )
}

/// `d` with its labels on the packet line (`line_len` bytes from `at` in the
/// parsed text) moved to the line's own offsets; a label in the policy (`src`,
/// shown as `name`) becomes a note in the help, with its place.
fn on_the_line(mut d: Diagnostic, at: usize, line_len: usize, src: &str, name: &str) -> Diagnostic {
    let mut notes = Vec::new();
    d.labels.retain_mut(|l| {
        if l.span.start >= at {
            let start = (l.span.start - at).min(line_len);
            let end = (l.span.end.max(l.span.start) - at).min(line_len);
            l.span = Span::new(start, end);
            true
        } else {
            let (line, col) = lbp_lang::diag::line_col(src, l.span.start.min(src.len()));
            notes.push(format!("{} at {name}:{line}:{col}", l.message));
            false
        }
    });
    if !notes.is_empty() {
        let help = d.help.take().into_iter().chain(notes).collect::<Vec<_>>();
        d.help = Some(help.join("; "));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_the_policy_become_notes() {
        let src = "filter {\n    in.iface == wan => drop\n}\n";
        let d = Diagnostic::error("lbp::check::no_arrival_interface", "m")
            .label(Span::new(110, 115), "on the line")
            .label(Span::new(13, 21), "read here")
            .help("write `on wan`");
        let d = on_the_line(d, 100, 30, src, "p.lbp");
        assert_eq!(d.labels.len(), 1);
        assert_eq!(d.labels[0].span, Span::new(10, 15));
        assert_eq!(
            d.help.as_deref(),
            Some("write `on wan`; read here at p.lbp:2:5")
        );
    }
}
