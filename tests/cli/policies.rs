//! The stock policies: every one checks clean and is formatted.

use crate::{files, lbp};

#[test]
fn stock_policies_check_clean() {
    let policies = files("policies", "lbp");
    assert!(policies.len() >= 6, "expected at least six stock policies");
    let mut args = vec!["check", "--deny-warnings", "--color", "never"];
    args.extend(policies.iter().map(String::as_str));
    let out = lbp(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stock_policies_are_formatted() {
    let policies = files("policies", "lbp");
    let mut args = vec!["fmt", "--check"];
    args.extend(policies.iter().map(String::as_str));
    let out = lbp(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fmt_check_reports_an_unformatted_file_and_fmt_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messy.lbp");
    std::fs::write(
        &path,
        "interface   a {address 198.18.0.1/24}\n\n\n\nfilter {\n tcp.dport==23=>drop\n}\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    assert_eq!(lbp(&["fmt", "--check", p]).status.code(), Some(1));
    assert_eq!(lbp(&["fmt", p]).status.code(), Some(0));
    assert_eq!(lbp(&["fmt", "--check", p]).status.code(), Some(0));
    assert_eq!(lbp(&["check", p]).status.code(), Some(0));
}

#[test]
fn parse_emits_the_ast() {
    let out = lbp(&["parse", "policies/web.lbp", "--emit", "ast"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Service(") && text.contains("\"http\""));
}
