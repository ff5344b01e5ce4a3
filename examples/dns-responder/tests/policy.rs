//! The example's policy under the example's binary: `dns-responder` is `lbp`
//! with one more application, so `dns.lbp` (which plain `lbp` refuses for its
//! `app dns`) checks clean, is formatted, passes its tests on every back end,
//! and `explain` names the application; a misspelt application is still
//! `lbp::name::unknown_app`, with the registered names in its help.

use std::process::{Command, Output};

fn responder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dns-responder"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("dns-responder runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_policy_checks_clean_is_formatted_and_passes_its_tests() {
    let o = responder(&["check", "--deny-warnings", "dns.lbp"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = responder(&["fmt", "--check", "dns.lbp"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = responder(&["test", "dns.lbp"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("8 passed, 0 failed"), "{}", text(&o));
}

#[test]
fn explain_names_the_application() {
    let o = responder(&[
        "explain",
        "dns.lbp",
        "udp [2001:db8::2]:40000 -> [2001:db8::1]:53",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("app dns"), "{}", text(&o));
}

#[test]
fn an_unknown_application_lists_the_registered_ones() {
    let dir = std::env::temp_dir().join(format!("lbp-dns-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.lbp");
    std::fs::write(
        &bad,
        "interface a { address 198.18.0.1/24 }\nfilter {\n    udp.dport == 53 => app resolver\n}\n",
    )
    .unwrap();
    let o = responder(&["check", "--color", "never", bad.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("error[lbp::name::unknown_app]"), "{t}");
    assert!(t.contains("echo, icmp and dns"), "{t}");
}
