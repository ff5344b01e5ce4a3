//! Golden diagnostic tests: every `tests/ui/NAME.lbp` is checked and its rendered
//! diagnostics (stderr, plain) must equal `tests/ui/NAME.stderr` exactly. Set
//! `LBP_BLESS=1` to write the expected files from the current output.

use crate::{files, lbp, root};

#[test]
fn ui_golden() {
    let bless = std::env::var_os("LBP_BLESS").is_some();
    let cases = files("tests/ui", "lbp");
    assert!(
        cases.len() >= 40,
        "expected at least 40 ui cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeMap::new();
    for case in &cases {
        let out = lbp(&["check", "--color", "never", case]);
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 output");
        let expected_path = root().join(case.replace(".lbp", ".stderr"));
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{case}: expected exit 1 (a broken policy), got {:?}",
                out.status.code()
            ));
        }
        // The first diagnostic's code names the mistake the case is about.
        let first = stderr.lines().next().unwrap_or("").to_string();
        let code = first
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("")
            .to_string();
        codes
            .entry(code)
            .or_insert_with(Vec::new)
            .push(case.clone());
        if bless {
            std::fs::write(&expected_path, &stderr).expect("write expected output");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{case}: output differs\n--- expected\n{expected}\n--- actual\n{stderr}"
            )),
            Err(_) => failures.push(format!(
                "{case}: no {} (run with LBP_BLESS=1)",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} ui cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        codes.len() >= 25,
        "the ui cases should exercise many distinct diagnostics; got {}: {codes:?}",
        codes.len()
    );
}

#[test]
fn json_output_has_one_object_per_diagnostic() {
    let case = "tests/ui/undefined-pool.lbp";
    let human = lbp(&["check", "--color", "never", case]);
    let json = lbp(&["check", "--format", "json", case]);
    assert_eq!(json.status.code(), Some(1));
    let text = String::from_utf8(json.stdout).unwrap();
    let n_human = String::from_utf8(human.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("tests/ui/"))
        .count();
    let objects: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(objects.len(), n_human);
    let o = &objects[0];
    for key in [
        "code", "severity", "message", "file", "line", "column", "span", "help",
    ] {
        assert!(o.get(key).is_some(), "missing {key} in {o}");
    }
    assert_eq!(o["file"], case);
    assert!(o["code"].as_str().unwrap().starts_with("lbp::"));
    assert!(o["span"]["end"].as_u64().unwrap() >= o["span"]["start"].as_u64().unwrap());
}

#[test]
fn warnings_fail_only_when_denied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warn.lbp");
    std::fs::write(
        &path,
        "interface a { address 198.18.0.1/24 }\nconst unused_thing = 80\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let ok = lbp(&["check", p]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("lbp::name::unused"));
    let denied = lbp(&["check", "--deny-warnings", p]);
    assert_eq!(denied.status.code(), Some(1));
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let missing = lbp(&["check", "tests/ui/no-such-file.lbp"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-file.lbp"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.lbp");
    std::fs::write(&path, [0x66, 0x6f, 0xff, 0xfe, 0x00]).unwrap();
    let bad = lbp(&["check", path.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not UTF-8"));
}
