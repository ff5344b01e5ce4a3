//! Write the frames of every test packet line of the given policies as seeds for
//! the `decide` fuzz target: one file per frame, a selector byte then the frame.
//!
//! cargo run -p lbp-compiler --example fuzz_seeds -- OUT_DIR POLICY...
//! (`fuzz/seeds.sh` runs it on the policies of the `decide` target's list.)

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().ok_or("usage: fuzz_seeds OUT_DIR POLICY...")?);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut n = 0;
    for (p, path) in args.enumerate() {
        let src = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let a = lbp_lang::analyze(&src);
        let prog = lbp_compiler::lower::lower(&a.policy).map_err(|e| e.to_string())?;
        let consts = lbp_compiler::testing::consts(&a.policy);
        for item in &a.policy.items {
            let lbp_lang::ast::Item::Test(t) = item else {
                continue;
            };
            for pkt in &t.packets {
                let (frame, _) = lbp_compiler::testing::packet_fields(pkt, &prog, &consts)?;
                let mut seed = vec![p as u8];
                seed.extend_from_slice(&frame);
                std::fs::write(out.join(format!("seed-{n:04}")), seed)
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
        }
    }
    println!("{n} seeds written to {}", out.display());
    Ok(())
}
