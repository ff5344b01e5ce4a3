//! `lbp check`: parse and check policies, report every diagnostic, and end with a
//! count of errors and warnings. A file that cannot be read is reported (it
//! counts as an error) and the others are still checked.

use super::common::{Format, Output, read, report, report_unreadable, summary};
use lbp_runtime::app::Registry;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    #[command(flatten)]
    out: Output,
}

pub fn run(args: CheckArgs, apps: &Registry) -> Result<ExitCode, String> {
    let CheckArgs {
        files,
        deny_warnings,
        out,
    } = args;
    let mut failed = false;
    let (mut errors, mut warnings) = (0, 0);
    let names = apps.names();
    for file in &files {
        let src = match read(file) {
            Ok(src) => src,
            Err(why) => {
                report_unreadable(&out, file, &why);
                errors += 1;
                continue;
            }
        };
        let analysis = lbp_lang::analyze_with(&src, &names);
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
