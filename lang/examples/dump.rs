fn main() {
    let path = std::env::args().nth(1).unwrap();
    let src = std::fs::read_to_string(path).unwrap();
    let a = lbp_lang::analyze(&src);
    println!("{:#?}", a.policy);
    for d in &a.diagnostics {
        println!("{d:?}");
    }
}
