//! The case corpus `tests/cases/*.lbp`: packet lines whose expected verdicts follow
//! the language brief, run by `lbp test` on its three back ends: the JIT, the
//! switching core (the policy's appliance on in-memory rings) and the reference
//! interpreter. Every line passes on all three except those listed in
//! `tests/cases/exceptions.md` (known disagreements, each with its reason), and
//! those must fail, so that a fix is noticed and its exception removed.

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

#[test]
fn case_corpus_fails_exactly_on_the_listed_exceptions_on_three_back_ends() {
    let cases = files("tests/cases", "lbp");
    assert!(cases.len() >= 10, "expected the case corpus, got {cases:?}");
    let mut args = vec!["test", "--format", "json"];
    args.extend(cases.iter().map(String::as_str));
    let out = lbp(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("not tested") && !stderr.contains("cannot compile"),
        "every case file must compile:\n{stderr}"
    );
    assert!(
        !stderr.contains("does not cross-check"),
        "the interpreter runs on the corpus:\n{stderr}"
    );

    let objects: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (summary, lines) = objects.split_last().expect("a summary line");
    let mut failed = BTreeSet::new();
    for o in lines {
        let place = format!("{}:{}", o["file"].as_str().unwrap(), o["line"]);
        let backends: Vec<&str> = o["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["backend"].as_str().unwrap())
            .collect();
        assert_eq!(
            backends,
            ["jit", "appliance", "interpreter"],
            "{place}: every line runs on the three back ends"
        );
        if o["passed"] != true {
            failed.insert(place);
        }
    }

    let expected = exceptions();
    let unexpected: Vec<&String> = failed.difference(&expected).collect();
    let fixed: Vec<&String> = expected.difference(&failed).collect();
    let fails: Vec<&serde_json::Value> = lines.iter().filter(|o| o["passed"] != true).collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "failing lines not in exceptions.md: {unexpected:?}\n\
         exceptions.md lines that now pass (remove them): {fixed:?}\n{fails:#?}\n{stderr}"
    );
    assert_eq!(summary["failed"], expected.len(), "{summary}");
    assert_eq!(summary["passed"], lines.len() - expected.len(), "{summary}");
    assert!(
        lines.len() >= 780,
        "expected at least 780 packet lines in the corpus, got {}",
        lines.len()
    );
    let code = if expected.is_empty() { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(code), "{stderr}");
}

#[test]
fn lbp_test_prints_each_back_ends_verdict_on_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.lbp");
    std::fs::write(
        &policy,
        "interface lan { address 198.18.1.1/24 }\n\
         interface wan { address 198.18.10.254/24 }\n\
         route 0.0.0.0/0 via 198.18.10.1 dev wan\n\
         test \"t\" {\n    icmp 198.18.1.5 -> 198.18.30.1 => local\n}\n",
    )
    .unwrap();
    let out = lbp(&["test", "--color", "never", policy.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for line in [
        "    expected: local",
        "    jit: forward dev wan",
        "    appliance: forward dev wan [sent to 198.18.30.1, ttl 63]",
        "    interpreter: forward dev wan",
        "0 passed, 1 failed",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    // Only the chosen back end runs.
    let out = lbp(&["test", "--backend", "appliance", policy.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("    appliance: forward dev wan"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("jit:") && !stdout.contains("interpreter:"),
        "{stdout}"
    );
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

/// `lbp test` decides with the JIT; the interpreter cross-checks it only while
/// filter rules x packet lines stay within the budget (20 million), or when
/// asked with `--check-interpreter`.
#[test]
fn the_interpreter_cross_checks_where_cheap_or_when_asked() {
    let mut src = String::from(
        "interface lan { address 198.18.1.1/24 }\n\
         interface wan { address 198.19.0.1/16 }\n\
         filter {\n",
    );
    for i in 0..10_000 {
        src += &format!(
            "    ip.src == 198.19.{}.{} && tcp.dport == {} => drop\n",
            i / 256,
            i % 256,
            1000 + i
        );
    }
    src += "}\ntest \"t\" {\n";
    for _ in 0..2_001 {
        src += "    icmp 198.19.0.5 -> 198.18.1.9 => forward dev lan\n";
    }
    src += "}\n";
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("big.lbp");
    std::fs::write(&policy, &src).unwrap();
    let policy = policy.to_str().unwrap();

    let backends = |out: &std::process::Output| -> Vec<Vec<String>> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|o| o.get("verdicts").is_some())
            .map(|o| {
                o["verdicts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["backend"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    // 10 000 rules x 2 001 lines: over the budget.
    let out = lbp(&["test", "--format", "json", policy]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("does not cross-check") && stderr.contains("--check-interpreter"),
        "{stderr}"
    );
    let seen = backends(&out);
    assert_eq!(seen.len(), 2_001);
    assert!(
        seen.iter().all(|b| b == &["jit", "appliance"]),
        "{:?}",
        seen[0]
    );

    let out = lbp(&["test", "--format", "json", "--check-interpreter", policy]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("does not cross-check"));
    let seen = backends(&out);
    assert_eq!(seen.len(), 2_001);
    assert!(
        seen.iter()
            .all(|b| b == &["jit", "appliance", "interpreter"]),
        "{:?}",
        seen[0]
    );
}
