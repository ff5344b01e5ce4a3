//! `lbp`: the command-line tool of the lbp load balancer. The tool itself is
//! the library's `cli` module (`lbp::main`), so that a program of one's own can
//! be the same tool with more applications on the switching cores
//! (`lbp::main_with`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lbp::main()
}
