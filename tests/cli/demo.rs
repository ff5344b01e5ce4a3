//! `lbp demo`: as root, a run of 300 requests succeeds, names the three back ends
//! with counts that add up to 300, and leaves no namespace behind; as another
//! user, it refuses at once with a message saying it needs root. The root case
//! is skipped (with a `SKIPPED` line) when the tests do not run as root.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::skip;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run a command with a time limit (killed by its PID when over): its output,
/// and the PID it had.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, u32) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let pid = child.id();
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = t_out.join().expect("reader");
    let stderr = t_err.join().expect("reader");
    (
        Output {
            status,
            stdout,
            stderr,
        },
        pid,
    )
}

#[test]
fn demo_as_root_spreads_300_requests_and_cleans_up() {
    if !is_root() {
        skip(
            "demo::demo_as_root_spreads_300_requests_and_cleans_up",
            "needs root",
        );
        return;
    }
    for tool in ["ip", "ethtool"] {
        if Command::new(tool).arg("-V").output().is_err() {
            skip(
                "demo::demo_as_root_spreads_300_requests_and_cleans_up",
                &format!("the `{tool}` command is missing"),
            );
            return;
        }
    }
    let started = Instant::now();
    let (out, pid) = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_lbp")).args(["demo", "--requests", "300"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("demo: {:.1?}\n{stdout}", started.elapsed());
    assert!(
        out.status.success(),
        "lbp demo failed ({:?})\n{context}",
        out.status
    );

    // One line per back end: `  b1  198.18.2.11  1  <count>  ...`.
    let mut counts = Vec::new();
    for name in ["b1", "b2", "b3"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for back end {name}\n{context}"));
        let count: usize = line
            .split_whitespace()
            .nth(3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}\n{context}"));
        counts.push(count);
    }
    assert_eq!(
        counts.iter().sum::<usize>(),
        300,
        "counts {counts:?}\n{context}"
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "a back end got nothing: {counts:?}\n{context}"
    );
    assert!(
        stdout.contains("lbp: final"),
        "no final stats line\n{context}"
    );

    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let prefix = format!("lbpdemo-{pid}-");
    let left: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn demo_without_root_says_it_needs_root() {
    let bin = env!("CARGO_BIN_EXE_lbp");
    let mut cmd = if is_root() {
        let has_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
        if !has_setpriv {
            skip(
                "demo::demo_without_root_says_it_needs_root",
                "as root, and no setpriv",
            );
            return;
        }
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            bin,
            "demo",
        ]);
        c
    } else {
        let mut c = Command::new(bin);
        c.arg("demo");
        c
    };
    let (out, _) = run_bounded(&mut cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if is_root() && stderr.contains("setpriv:") {
        // The unprivileged user cannot reach the binary (e.g. a private target
        // directory): nothing to check here.
        skip(
            "demo::demo_without_root_says_it_needs_root",
            &format!(
                "the unprivileged user cannot run the binary: {}",
                stderr.trim()
            ),
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("needs root"), "stderr: {stderr}");
    assert!(stderr.contains("namespaces"), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
