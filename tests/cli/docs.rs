//! The language reference lists every diagnostic code the front end can emit.

use crate::root;

#[test]
fn every_diagnostic_code_is_documented() {
    let docs = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md");
    let mut missing = Vec::new();
    let mut seen = 0;
    // Every source file of the front end, wherever its modules live.
    let mut files = Vec::new();
    let mut dirs = vec![root().join("lang/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("lang/src").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for file in files {
        let src = std::fs::read_to_string(&file).expect("source file");
        for piece in src.split("\"lbp::").skip(1) {
            let code: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if code.matches("::").count() != 1 {
                continue;
            }
            seen += 1;
            let full = format!("lbp::{code}");
            if !docs.contains(&full) && !missing.contains(&full) {
                missing.push(full);
            }
        }
    }
    assert!(seen > 40, "found only {seen} codes in the sources");
    assert!(
        missing.is_empty(),
        "codes missing from docs/language.md: {missing:?}"
    );
}
