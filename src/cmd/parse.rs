//! `lbp parse`: parse one policy and print a stage of it (the syntax tree), for
//! debugging the parser.

use super::common::{Output, read, report};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp parse`.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    file: PathBuf,
    #[arg(long, value_enum, default_value = "ast")]
    emit: Emit,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Emit {
    Ast,
}

pub fn run(args: ParseArgs) -> Result<ExitCode, String> {
    let ParseArgs {
        file,
        emit: Emit::Ast,
        out,
    } = args;
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
