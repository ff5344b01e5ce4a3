//! `lbp`: the command-line tool of the lbp load balancer.
//!
//! This binary is the only part of lbp that reads arguments and the environment,
//! prints, or exits. Each subcommand is a thin shell around the library crates.

mod appliance;
mod demo;
mod run;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lbp_lang::Diagnostic;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "lbp", version, about = "A programmable software load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check policies; report every problem found.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Format policies canonically, in place (or only check with --check).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Parse a policy and print a stage, for debugging.
    Parse {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "ast")]
        emit: Emit,
        #[command(flatten)]
        out: Output,
    },
    /// Run the `test` blocks of policies through every back end.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Decide every packet of a pcap capture with a policy, one line per packet.
    Eval {
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
    },
    /// Explain the decision for one packet, written as a test line
    /// (`"tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn"`).
    Explain { policy: PathBuf, packet: String },
    /// Print a compiler stage of a policy, for debugging.
    Compile {
        policy: PathBuf,
        #[arg(long, value_enum, default_value = "ir")]
        emit: Stage,
    },
    /// Run the appliance: bind the policy's interfaces and switch packets until
    /// SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Show lbp at work on a built-in policy, in network namespaces of its own:
    /// build a client, the appliance and three back ends, send HTTP requests
    /// through the virtual IP, print the spread, remove everything (needs root).
    Demo(demo::DemoArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(clap::Args, Debug)]
struct Output {
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Colours and Unicode in human output: auto (on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Human,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Stage {
    /// The lowered IR.
    Ir,
    /// The Cranelift IR of the compiled function.
    Clif,
    /// What the runtime is given besides the filter: interfaces, services with
    /// their back ends, routes.
    Runtime,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Emit {
    Ast,
}

fn main() -> ExitCode {
    // Output piped into a program that stops reading (`lbp ... | head`) ends lbp
    // quietly, as it does any other command-line tool, instead of a panic.
    // SAFETY: setting a signal's disposition to its default has no preconditions;
    // no other thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("lbp: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Check {
            files,
            deny_warnings,
            out,
        } => {
            let mut failed = false;
            let (mut errors, mut warnings) = (0, 0);
            for file in &files {
                let src = read(file)?;
                let analysis = lbp_lang::analyze(&src);
                report(&out, file, &src, &analysis.diagnostics);
                for d in &analysis.diagnostics {
                    if d.is_error() {
                        errors += 1;
                    } else {
                        warnings += 1;
                    }
                }
            }
            failed |= errors > 0 || (deny_warnings && warnings > 0);
            if out.format == Format::Human && (errors > 0 || warnings > 0) {
                eprintln!("{}", summary(errors, warnings, files.len()));
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Fmt { files, check, out } => {
            let mut failed = false;
            for file in &files {
                let src = read(file)?;
                match lbp_lang::fmt::format_source(&src) {
                    Err(diags) => {
                        report(&out, file, &src, &diags);
                        failed = true;
                    }
                    Ok(formatted) if formatted != src => {
                        if check {
                            eprintln!(
                                "{}: not formatted (run `lbp fmt {}`)",
                                file.display(),
                                file.display()
                            );
                            failed = true;
                        } else {
                            std::fs::write(file, formatted)
                                .map_err(|e| format!("{}: {e}", file.display()))?;
                        }
                    }
                    Ok(_) => {}
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Parse {
            file,
            emit: Emit::Ast,
            out,
        } => {
            let src = read(&file)?;
            let parsed = lbp_lang::parse::parse(&src);
            report(&out, &file, &src, &parsed.diagnostics);
            println!("{:#?}", parsed.policy);
            Ok(if parsed.diagnostics.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Test { files, out } => {
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
        Command::Eval {
            policy,
            pcap,
            on,
            format,
        } => {
            let (src, analysis, prog) = load(&policy)?;
            let _ = src;
            let bytes = std::fs::read(&pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
            let frames = lbp_compiler::pcap::frames(&bytes)
                .map_err(|e| format!("{}: {e}", pcap.display()))?;
            let on = match on {
                Some(name) => Some(
                    prog.interfaces
                        .iter()
                        .position(|i| i.name == name)
                        .ok_or_else(|| format!("no interface `{name}` in the policy"))?
                        as u32,
                ),
                None => None,
            };
            let mut conns = std::collections::HashSet::new();
            let mut stdout = std::io::stdout().lock();
            for (i, frame) in frames.iter().enumerate() {
                let mut fields = lbp_compiler::wire::extract(frame.data, u32::MAX);
                fields.in_iface = on
                    .or_else(|| {
                        let src =
                            lbp_compiler::interp::addr(&fields, lbp_compiler::ir::AddrField::Src)?;
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
        Command::Explain { policy, packet } => {
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
            let verdict = lbp_compiler::testing::verdict(
                &prog,
                &fields,
                d,
                &mut std::collections::HashSet::new(),
            );
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
        Command::Compile { policy, emit } => {
            let (_, _, prog) = load(&policy)?;
            match emit {
                Stage::Ir => println!("{prog:#?}"),
                Stage::Clif => {
                    let clif = lbp_compiler::jit::clif(&prog)
                        .map_err(|e| format!("{}: cannot compile: {e}", policy.display()))?;
                    print!("{clif}");
                }
                Stage::Runtime => println!("{:#?}", appliance::appliance(&prog)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => Ok(run::main(args)),
        Command::Demo(args) => Ok(demo::main(args)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lbp", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Read, check and lower a policy. Diagnostics of a broken policy are printed.
fn load(file: &PathBuf) -> Result<(String, lbp_lang::Analysis, lbp_compiler::Program), String> {
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

fn stage_name(stage: u32) -> &'static str {
    match stage {
        lbp_abi::stage::MALFORMED => "malformed packet",
        lbp_abi::stage::FILTER => "filter rule",
        lbp_abi::stage::SERVICE => "service entry",
        lbp_abi::stage::INVALID_ENTRY => "virtual IP without a matching entry",
        lbp_abi::stage::OWN_ADDRESS => "the appliance's own address",
        _ => "routing",
    }
}

fn read(file: &PathBuf) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 text (byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn summary(errors: usize, warnings: usize, files: usize) -> String {
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

/// Print diagnostics: human (fancy on a terminal, plain when piped) on stderr, or
/// JSON lines on stdout.
fn report(out: &Output, file: &std::path::Path, src: &str, diags: &[Diagnostic]) {
    let name = file.display().to_string();
    match out.format {
        Format::Json => {
            let mut stdout = std::io::stdout().lock();
            for d in diags {
                let _ = writeln!(stdout, "{}", to_json(&name, src, d));
            }
        }
        Format::Human => {
            let fancy = match out.color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => {
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            let mut stderr = std::io::stderr().lock();
            for d in diags {
                let _ = write!(stderr, "{}", render(&name, src, d, fancy));
            }
        }
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
