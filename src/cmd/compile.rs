//! `lbp compile`: print a compiler stage of a policy (the lowered IR, the
//! Cranelift IR, the eBPF program of the XDP fast path, or the appliance the
//! runtime is given), for debugging.

use super::common::load;
use crate::appliance;
use lbp_runtime::app::Registry;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lbp compile`.
#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    policy: PathBuf,
    #[arg(long, value_enum, default_value = "ir")]
    emit: Stage,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Stage {
    /// The lowered IR.
    Ir,
    /// The Cranelift IR of the compiled function.
    Clif,
    /// The eBPF program of the XDP fast path (`lbp run --datapath`),
    /// disassembled, and its maps.
    Bpf,
    /// What the runtime is given besides the filter: interfaces, services with
    /// their back ends, routes.
    Runtime,
}

pub fn run(args: CompileArgs, apps: &Registry) -> Result<ExitCode, String> {
    let CompileArgs { policy, emit } = args;
    let (src, _, prog) = load(&policy, apps)?;
    match emit {
        Stage::Ir => println!("{prog:#?}"),
        Stage::Clif => {
            let clif = lbp_compiler::jit::clif(&prog)
                .map_err(|e| super::common::cannot_compile(&policy, &src, &e))?;
            print!("{clif}");
        }
        Stage::Bpf => {
            let p = lbp_compiler::bpf::compile(&prog, lbp_compiler::bpf::Mode::Fast).map_err(|e| {
                format!(
                    "{}: no eBPF program: {e} (`lbp run` decides it on the switching cores alone)",
                    policy.display()
                )
            })?;
            print!("{}", p.disassemble());
        }
        Stage::Runtime => println!("{:#?}", appliance::appliance(&prog, &src)),
    }
    Ok(ExitCode::SUCCESS)
}
