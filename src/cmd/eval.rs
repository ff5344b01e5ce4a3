//! `lbp eval`: decide every packet of a pcap capture with a policy, as the
//! interpreter does, and print one line per packet (text or JSON): the verdict and
//! the rule or stage that gave it.

use super::common::{Format, load, stage_name};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    policy: PathBuf,
    /// A pcap capture (Ethernet).
    #[arg(long)]
    pcap: PathBuf,
    /// The interface the packets arrive on (default: where a reply to the
    /// source would leave, as in tests).
    #[arg(long)]
    on: Option<String>,
    /// Output: text, or one JSON object per line.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: EvalArgs) -> Result<ExitCode, String> {
    let EvalArgs {
        policy,
        pcap,
        on,
        format,
    } = args;
    let (src, analysis, prog) = load(&policy)?;
    let _ = src;
    let bytes = std::fs::read(&pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let frames =
        lbp_compiler::pcap::frames(&bytes).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let on = match on {
        Some(name) => Some(
            prog.interfaces
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| format!("no interface `{name}` in the policy"))? as u32,
        ),
        None => None,
    };
    let mut conns = std::collections::HashSet::new();
    let mut stdout = std::io::stdout().lock();
    for (i, frame) in frames.iter().enumerate() {
        let mut fields = lbp_compiler::wire::extract(frame.data, u32::MAX);
        fields.in_iface = on
            .or_else(|| {
                let src = lbp_compiler::interp::addr(&fields, lbp_compiler::ir::AddrField::Src)?;
                lbp_compiler::interp::route(&prog, src).map(|r| prog.routes[r as usize].dev)
            })
            .unwrap_or(u32::MAX);
        let d = lbp_compiler::interp::decide(&prog, &fields);
        let verdict = lbp_compiler::testing::verdict(&prog, &fields, d, &mut conns);
        let mut words = verdict.split(' ');
        let action = words.next().unwrap_or("drop");
        let rule = (d.rule != lbp_abi::NO_RULE)
            .then(|| prog.rules.get(d.rule as usize))
            .flatten();
        let rule_text = rule.map(|r| {
            let (line, _) = lbp_lang::diag::line_col(&src, r.span.start);
            (
                d.rule,
                line,
                src.get(r.span.start..r.span.end)
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
        });
        let _ = &analysis;
        let line = match format {
            Format::Json => {
                let mut o = serde_json::json!({ "packet": i + 1, "action": action, "stage": stage_name(d.stage) });
                match action {
                    "balance" => {
                        o["service"] = serde_json::json!(words.next());
                        o["hash"] = serde_json::json!(format!("{:08x}", d.hash));
                    }
                    "forward" => o["interface"] = serde_json::json!(words.nth(1)),
                    _ => {}
                }
                o["rule"] = match &rule_text {
                    Some((n, line, text)) => {
                        serde_json::json!({ "index": n, "line": line, "text": text })
                    }
                    None => serde_json::Value::Null,
                };
                o.to_string()
            }
            Format::Human => {
                let by = match &rule_text {
                    Some((_, line, text)) => format!("  (rule at line {line}: {text})"),
                    None => format!("  ({})", stage_name(d.stage)),
                };
                format!("{:>6}  {verdict}{by}", i + 1)
            }
        };
        let _ = writeln!(stdout, "{line}");
    }
    Ok(ExitCode::SUCCESS)
}
