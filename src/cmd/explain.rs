//! `lbp explain`: the decision for one packet, written as a test line, with the
//! rules that did not match, the rule that let it past the filter, and the rule
//! that decided, shown in the policy's source.

use super::common::{load, stage_name};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    policy: PathBuf,
    packet: String,
}

pub fn run(args: ExplainArgs) -> Result<ExitCode, String> {
    let ExplainArgs { policy, packet } = args;
    let (src, analysis, prog) = load(&policy)?;
    let line = if packet.contains("=>") {
        packet.clone()
    } else {
        format!("{packet} => drop")
    };
    let wrapped = format!("test \"explain\" {{\n{line}\n}}\n");
    let parsed = lbp_lang::parse::parse(&wrapped);
    let pkt = match (parsed.diagnostics.first(), parsed.policy.items.first()) {
        (None, Some(lbp_lang::ast::Item::Test(t))) if t.packets.len() == 1 => &t.packets[0],
        (Some(d), _) => {
            return Err(format!(
                "the packet `{packet}` is not a test line: {}",
                d.message
            ));
        }
        _ => return Err(format!("the packet `{packet}` is not one test line")),
    };
    let consts = lbp_compiler::testing::consts(&analysis.policy);
    let (_, fields) = lbp_compiler::testing::packet_fields(pkt, &prog, &consts)?;
    let (d, missed, passed_by) = lbp_compiler::interp::trace(&prog, &fields);
    let verdict =
        lbp_compiler::testing::verdict(&prog, &fields, d, &mut std::collections::HashSet::new());
    let name = policy.display().to_string();
    println!("decision: {verdict}");
    println!("stage:    {}", stage_name(d.stage));
    if d.action == lbp_abi::Action::Balance as u32 {
        println!("hash:     {:08x}", d.hash);
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
    Ok(ExitCode::SUCCESS)
}
