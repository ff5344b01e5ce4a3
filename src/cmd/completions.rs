//! `lbp completions`: print a shell completion script for the whole command
//! line. The caller hands in the clap command, so that this module needs nothing
//! of `main.rs`.

use std::process::ExitCode;

/// Arguments of `lbp completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    shell: clap_complete::Shell,
}

/// Print the completion script of `cli`, the whole `lbp` command.
pub fn run(args: CompletionsArgs, mut cli: clap::Command) -> Result<ExitCode, String> {
    clap_complete::generate(args.shell, &mut cli, "lbp", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
