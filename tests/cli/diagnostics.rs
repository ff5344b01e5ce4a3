//! How diagnostics are printed, whatever the input: lines too long to draw,
//! labels far apart, plain ASCII, byte order marks, invalid UTF-8, files that
//! cannot be read (issue 10, items 1, 5 and 7).

use crate::lbp;
use std::fmt::Write as _;

/// A policy of one very long line: a set of `n` prefixes, the tenth listed again
/// at the end (a warning whose labels lie past column 65 535).
fn long_line_policy(n: usize) -> (String, usize) {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "198.{}.{}.{}/32",
                18 + (i >> 16) % 2,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    let line = format!("set blocked = {{ {}, {} }}", items.join(", "), items[10]);
    let column = line.rfind(&items[10]).unwrap() + 1;
    (
        format!(
            "interface a {{ address 198.18.0.1/24 }}\n{line}\nfilter {{\n    ip.src in blocked => drop\n}}\n"
        ),
        column,
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Item 1: miette panicked ("Formatting argument out of range") on a label past
/// column 65 535; every command that prints diagnostics went down with it.
#[test]
fn a_diagnostic_far_along_a_long_line_is_printed_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.lbp");
    let (policy, column) = long_line_policy(6000);
    assert!(column > 70_000);
    std::fs::write(&path, &policy).unwrap();
    let file = path.to_str().unwrap();
    for color in ["never", "always"] {
        let out = lbp(&["check", "--color", color, file]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "a warning only: {text}");
        assert!(!text.contains("panicked"), "{text}");
        assert!(
            text.starts_with(&format!(
                "{file}:2:{column}: warning[lbp::check::duplicate_element]"
            )),
            "{text}"
        );
        assert!(
            text.contains("first here") && text.contains("again here"),
            "{text}"
        );
        // The long line is shown in pieces around the labels, not whole.
        let longest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(longest < 600, "a line of {longest} characters");
    }
    let json = lbp(&["check", "--format", "json", file]);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8(json.stdout).unwrap().trim()).unwrap();
    assert_eq!(line["line"], 2);
    assert_eq!(line["column"], column);
    // A broken policy of the same shape, through `lbp test` (which prints its
    // errors the same way).
    let broken = policy.replace("filter {", "filter {\n    ip.src in nosuch => drop");
    std::fs::write(&path, broken).unwrap();
    let out = lbp(&["test", "--color", "never", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Item 5: miette was handed the whole file for each diagnostic and drew every
/// line between two labels when the first lay more than half-way down to the
/// second (so 20 000 diagnostics took minutes). A diagnostic now shows the lines
/// around its labels only.
#[test]
fn a_diagnostic_shows_the_lines_around_its_labels_only() {
    let mut policy = String::from("pool web {\n    backend 198.18.2.11\n}\n");
    for i in 4..60 {
        let _ = writeln!(policy, "# before {i}");
    }
    policy.push_str("service http {\n    vip 198.18.0.10 tcp port 80\n    pool web\n}\n");
    for i in 64..110 {
        let _ = writeln!(policy, "# between {i}");
    }
    policy.push_str("service http {\n    vip 198.18.0.11 tcp port 80\n    pool web\n}\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("far.lbp");
    std::fs::write(&path, &policy).unwrap();
    let out = lbp(&["check", "--color", "never", path.to_str().unwrap()]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("60 | service http {") && text.contains("110 | service http {"),
        "{text}"
    );
    assert!(text.contains("# before 59"), "context line: {text}");
    assert!(text.contains("# between 109"), "context line: {text}");
    assert!(!text.contains("# between 80"), "{text}");
}

/// Item 7: `--color never` drew Unicode boxes; it is plain ASCII.
#[test]
fn color_never_is_plain_ascii() {
    let out = lbp(&["check", "--color", "never", "tests/ui/undefined-pool.lbp"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(",-[tests/ui/undefined-pool.lbp:10:10]"),
        "{text}"
    );
    assert!(text.is_ascii(), "{text}");
    let fancy = lbp(&["check", "--color", "always", "tests/ui/undefined-pool.lbp"]);
    assert!(stderr(&fancy).contains('╭'), "{}", stderr(&fancy));
}

/// Item 7: a UTF-8 byte order mark was an invisible "found ``" at 1:1. It is
/// accepted, and diagnostics keep the lines and columns an editor shows.
#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("bom.lbp");
    let policy = std::fs::read("policies/web.lbp")
        .or_else(|_| std::fs::read(crate::root().join("policies/web.lbp")))
        .unwrap();
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(&policy);
    std::fs::write(&clean, &bytes).unwrap();
    let out = lbp(&["check", clean.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let test = lbp(&["test", clean.to_str().unwrap()]);
    assert_eq!(test.status.code(), Some(0), "{}", stderr(&test));

    let broken = dir.path().join("broken.lbp");
    std::fs::write(
        &broken,
        "\u{feff}pool web {\n    backend 198.18.2.11\n}\nservice http {\n    vip 198.18.0.10 tcp port 80\n    pool nosuch\n}\n",
    )
    .unwrap();
    let out = lbp(&["check", "--color", "never", broken.to_str().unwrap()]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}:6:10: error[", broken.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:1:6: warning[", broken.display())),
        "{text}"
    );
    assert_eq!(text.matches(": error[").count(), 1, "{text}");
}

/// Item 7: invalid UTF-8 was reported as a byte offset only; it names the line
/// and column.
#[test]
fn invalid_utf8_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.lbp");
    std::fs::write(&path, b"# ok\n# caf\xe9 au lait\n").unwrap();
    let out = lbp(&["check", path.to_str().unwrap()]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("line 2, column 6"), "{text}");
}

/// Item 7: `check a b` stopped at the first file it could not read. It reports
/// it, checks the others, and fails.
#[test]
fn check_reports_an_unreadable_file_and_goes_on() {
    let out = lbp(&[
        "check",
        "--color",
        "never",
        "tests/ui/no-such-file.lbp",
        "tests/ui/undefined-pool.lbp",
        "policies/web.lbp",
    ]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("tests/ui/no-such-file.lbp: "), "{text}");
    assert!(
        text.contains("tests/ui/undefined-pool.lbp:10:10: error[lbp::name::undefined]"),
        "{text}"
    );
    assert!(text.contains("in 3 files"), "{text}");
    let json = lbp(&[
        "check",
        "--format",
        "json",
        "tests/ui/no-such-file.lbp",
        "tests/ui/undefined-pool.lbp",
    ]);
    assert_eq!(json.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["code"], "lbp::io::read");
    assert_eq!(lines[0]["file"], "tests/ui/no-such-file.lbp");
    assert_eq!(lines[1]["code"], "lbp::name::undefined");
}
