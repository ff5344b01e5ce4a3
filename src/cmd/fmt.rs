//! `lbp fmt`: rewrite policies in the canonical format, or with `--check` only
//! say which files are not formatted.

use super::common::{Output, read, report};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp fmt`.
#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Change nothing; exit 1 if a file is not formatted.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    out: Output,
}

pub fn run(args: FmtArgs) -> Result<ExitCode, String> {
    let FmtArgs { files, check, out } = args;
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
