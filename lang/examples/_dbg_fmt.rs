fn main() {
    let src = std::env::args()
        .nth(1)
        .unwrap()
        .replace("\\r", "\r")
        .replace("\\n", "\n");
    let p = lbp_lang::parse::parse(&src);
    println!("{:?}\n{:?}\n{:?}", p.policy, p.comments, p.diagnostics);
    match lbp_lang::fmt::format_source(&src) {
        Ok(s) => print!("-----\n{s}-----\n"),
        Err(e) => println!("{e:?}"),
    }
}
