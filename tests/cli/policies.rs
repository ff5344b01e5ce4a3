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

#[test]
fn stock_policies_pass_their_tests() {
    let policies = files("policies", "lbp");
    let mut args = vec!["test"];
    args.extend(policies.iter().map(String::as_str));
    let out = lbp(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    let n: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(
        n >= 60,
        "expected many test packets across the stock policies, got {n}"
    );
}

#[test]
fn a_wrong_expectation_fails_the_test_run() {
    let src = std::fs::read_to_string(crate::root().join("policies/web.lbp")).unwrap();
    let wrong = src.replace("198.18.0.10:25 syn => reset", "198.18.0.10:25 syn => drop");
    assert_ne!(src, wrong, "the line to break is in web.lbp");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.lbp");
    std::fs::write(&path, wrong).unwrap();
    let out = lbp(&["test", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("expected: drop") && stdout.contains("interpreter: reset"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("1 failed"), "{stdout}");
}
