//! The command line of `lbp` (clap): the `Command` enum and a dispatch that
//! hands each subcommand to its module in `cmd`, with the applications the
//! switching cores run. [`main`] is the `lbp` binary; [`main_with`] is the same
//! tool with more applications, for a program of one's own.
//!
//! This module and `cmd` are the only parts of lbp that read arguments and the
//! environment, print, or exit.

use crate::cmd::{
    agent, check, compile, completions, ctl, demo, editors, eval, explain, fmt, lsp, parse, run,
    test,
};
use clap::{CommandFactory, Parser, Subcommand};
use lbp_runtime::app::Registry;
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
    Check(check::CheckArgs),
    /// Format policies canonically, in place (or only check with --check).
    Fmt(fmt::FmtArgs),
    /// Parse a policy and print a stage, for debugging.
    Parse(parse::ParseArgs),
    /// Run the `test` blocks of policies through every back end.
    Test(test::TestArgs),
    /// Decide every packet of a pcap capture with a policy, one line per packet.
    Eval(eval::EvalArgs),
    /// Explain the decision for one packet, written as a test line
    /// (`"tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn"`).
    Explain(explain::ExplainArgs),
    /// Print a compiler stage of a policy, for debugging.
    Compile(compile::CompileArgs),
    /// Run the appliance: bind the policy's interfaces and switch packets until
    /// SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Show lbp at work on a built-in policy, in network namespaces of its own:
    /// build a client, the appliance and three back ends, send HTTP requests
    /// through the virtual IP, print the spread, remove everything (needs root).
    Demo(demo::DemoArgs),
    /// Run on a back end: send its load (CPU, memory, clients, the server's
    /// own figures) to the appliance's control module, authenticated, once per
    /// interval.
    Agent(agent::AgentArgs),
    /// Reload a running appliance's policy (default: the file it runs, read
    /// again): compiled by the appliance, published without losing a packet or
    /// a connection; on errors the running policy stays (exit 1). SIGHUP to
    /// `lbp run` does the same.
    Reload(ctl::ReloadArgs),
    /// A running appliance's counters: per switching core, service, back end
    /// and filter rule.
    Stats(ctl::StatsArgs),
    /// A running appliance's connections.
    Conns(ctl::ConnsArgs),
    /// A running appliance's back ends: state, health, agent, last report,
    /// weight.
    Backends(ctl::BackendsArgs),
    /// Change a running appliance: `set weight SERVICE BACKEND N|auto`.
    Set(ctl::SetArgs),
    /// Drain a back end: no new connections; its connections stay.
    Drain(ctl::StateArgs),
    /// Undo `drain` or `maint`: the back end takes new connections again.
    Undrain(ctl::StateArgs),
    /// Take a back end out of service: no new connections, and its connections
    /// are reset.
    Maint(ctl::StateArgs),
    /// Serve the Language Server Protocol over standard input and output, for
    /// editors: diagnostics, completion, hover, definitions, references,
    /// outline, formatting and quick fixes.
    Lsp(lsp::LspArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Editor support files: `generate` writes the syntax files of VS Code, Vim
    /// and Emacs from the language's tables.
    Editors(editors::EditorsArgs),
}

/// The `lbp` command-line tool with the built-in applications: what the `lbp`
/// binary's `main` runs.
pub fn main() -> ExitCode {
    main_with(Registry::builtin())
}

/// The whole `lbp` command-line tool (its arguments read from the process),
/// whose policies may hand packets to the applications `apps` (`app NAME`):
/// `check`, `test`, `eval`, `explain`, `compile`, `run` (and `reload` of a
/// running appliance) and `lsp` know their names, and every switching core
/// of `run` and of `test`'s appliance runs its own instances. A program of
/// one's own calls it from its `main` with the built-in applications and its
/// own (see `examples/dns-responder/`):
///
/// ```no_run
/// use lbp::app::{App, Ctx, Fields, Frame, Registry};
///
/// /// Frees every frame the policy hands it (`=> app sink`).
/// struct Sink;
///
/// impl App for Sink {
///     fn name(&self) -> &'static str {
///         "sink"
///     }
///     fn frame(&mut self, frame: Frame, _: &Fields, ctx: &mut Ctx<'_>) {
///         ctx.free(frame);
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     lbp::main_with(Registry::builtin().with(|| Box::new(Sink)))
/// }
/// ```
pub fn main_with(apps: Registry) -> ExitCode {
    // Output piped into a program that stops reading (`lbp ... | head`) ends lbp
    // quietly, as it does any other command-line tool, instead of a panic.
    lbp_runtime::sys::sigpipe(false);
    let cli = Cli::parse();
    match dispatch(cli, &apps) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("lbp: {msg}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli, apps: &Registry) -> Result<ExitCode, String> {
    match cli.command {
        Command::Check(args) => check::run(args, apps),
        Command::Fmt(args) => fmt::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Test(args) => test::run(args, apps),
        Command::Eval(args) => eval::run(args, apps),
        Command::Explain(args) => explain::run(args, apps),
        Command::Compile(args) => compile::run(args, apps),
        Command::Run(args) => Ok(run::main(args, apps)),
        Command::Demo(args) => Ok(demo::main(args)),
        Command::Agent(args) => agent::run(args),
        Command::Reload(args) => ctl::reload(args),
        Command::Stats(args) => ctl::stats(args),
        Command::Conns(args) => ctl::conns(args),
        Command::Backends(args) => ctl::backends(args),
        Command::Set(args) => ctl::set(args),
        Command::Drain(args) => ctl::state(args, "drain"),
        Command::Undrain(args) => ctl::state(args, "ready"),
        Command::Maint(args) => ctl::state(args, "maint"),
        Command::Lsp(args) => lsp::run(args, apps),
        Command::Completions(args) => completions::run(args, Cli::command()),
        Command::Editors(args) => editors::run(args),
    }
}
