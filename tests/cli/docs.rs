//! The language reference lists every diagnostic code the front end can emit.

use crate::root;

#[test]
fn every_diagnostic_code_is_documented() {
    let docs = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md");
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in ["lang/src/check.rs", "lang/src/parse.rs"] {
        let src = std::fs::read_to_string(root().join(file)).expect("source file");
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
