//! The case corpus `tests/cases/*.lbp`: packet lines whose expected verdicts follow
//! the language brief. Every line passes except those listed in
//! `tests/cases/exceptions.md` (known disagreements between the tool and the brief),
//! and those must fail, so that a fix is noticed and its exception removed.

use crate::{files, lbp, root};
use std::collections::BTreeSet;

/// The `FILE:LINE` places listed in `exceptions.md`: table rows whose first cell is
/// a place in `tests/cases/`.
fn exceptions() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("tests/cases/exceptions.md"))
        .expect("tests/cases/exceptions.md exists");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .map(|cell| cell.trim().trim_matches('`').to_string())
        .filter(|cell| {
            cell.starts_with("tests/cases/")
                && cell.rsplit_once(':').is_some_and(|(file, line)| {
                    file.ends_with(".lbp")
                        && !line.is_empty()
                        && line.bytes().all(|b| b.is_ascii_digit())
                })
        })
        .collect()
}

/// `FAIL tests/cases/x.lbp:12:5: test "..."` becomes `tests/cases/x.lbp:12`.
fn failed_place(line: &str) -> Option<String> {
    let rest = line.strip_prefix("FAIL ")?;
    let (place, _) = rest.split_once(": test ")?;
    let (file_line, _col) = place.rsplit_once(':')?;
    Some(file_line.to_string())
}

#[test]
fn case_corpus_fails_exactly_on_the_listed_exceptions() {
    let cases = files("tests/cases", "lbp");
    assert!(cases.len() >= 10, "expected the case corpus, got {cases:?}");
    let mut args = vec!["test", "--color", "never"];
    args.extend(cases.iter().map(String::as_str));
    let out = lbp(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("not tested") && !stderr.contains("cannot compile"),
        "every case file must compile:\n{stderr}"
    );

    let expected = exceptions();
    let failed: BTreeSet<String> = stdout.lines().filter_map(failed_place).collect();
    let unexpected: Vec<&String> = failed.difference(&expected).collect();
    let fixed: Vec<&String> = expected.difference(&failed).collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "failing lines not in exceptions.md: {unexpected:?}\n\
         exceptions.md lines that now pass (remove them): {fixed:?}\n{stdout}{stderr}"
    );

    let last = stdout.lines().last().unwrap_or_default();
    let counts: Vec<usize> = last.split(' ').filter_map(|w| w.parse().ok()).collect();
    let [passed, failed_count] = counts[..] else {
        panic!("no `N passed, N failed` line: {last:?}\n{stdout}{stderr}");
    };
    assert_eq!(
        last,
        format!("{passed} passed, {} failed", expected.len()),
        "{stdout}"
    );
    assert_eq!(failed_count, expected.len());
    assert!(
        passed >= 300,
        "expected at least 300 passing packet lines in the corpus, got {passed}"
    );
    assert!(
        passed + failed_count >= 330,
        "expected at least 330 packet lines in the corpus, got {}",
        passed + failed_count
    );
    let code = if expected.is_empty() { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(code), "{stdout}{stderr}");
}

#[test]
fn case_corpus_checks_clean_and_is_formatted() {
    let cases = files("tests/cases", "lbp");
    let mut check = vec!["check", "--format", "json"];
    check.extend(cases.iter().map(String::as_str));
    let out = lbp(&check);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // One warning is the point of a case: `pipeline-order.lbp` puts services on
    // the appliance's own addresses to test that entries come before local
    // delivery, which is what `vip_is_interface_address` warns about.
    let allowed = [
        "\"code\":\"lbp::check::vip_is_interface_address\"",
        "\"file\":\"tests/cases/pipeline-order.lbp\"",
    ];
    let unexpected: Vec<&str> = stderr
        .lines()
        .filter(|l| !allowed.iter().all(|a| l.contains(a)))
        .collect();
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    let mut fmt = vec!["fmt", "--check"];
    fmt.extend(cases.iter().map(String::as_str));
    let out = lbp(&fmt);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exceptions_parse() {
    assert_eq!(
        failed_place("FAIL tests/cases/a-b.lbp:113:5: test \"x: y\""),
        Some("tests/cases/a-b.lbp:113".to_string())
    );
    assert_eq!(failed_place("    expected: local"), None);
    // Every listed exception names a packet line of an existing case file.
    for place in exceptions() {
        let (file, line) = place.rsplit_once(':').unwrap();
        let text = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|_| panic!("{place}: no such case file"));
        let n: usize = line.parse().unwrap();
        let src = n
            .checked_sub(1)
            .and_then(|i| text.lines().nth(i))
            .unwrap_or_default();
        assert!(src.contains("=>"), "{place} is not a packet line: {src:?}");
    }
}
