//! The worked examples in `examples/`: every policy checks clean (warnings
//! denied), is formatted, and passes its own tests; every example's README
//! names its policy files, and every `lbp` command line in a README is a real
//! subcommand with real options. The NAT web farm, whose addresses are the
//! end-to-end topology's, also runs end to end (root).
//!
//! A folder with a `Cargo.toml` is an application example: its policy names
//! an application plain `lbp` does not have, so here `lbp check` must refuse
//! it for that reason alone (`lbp::name::unknown_app`), and the example's own
//! tests check and test it with the example's binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::e2e::{Report, setup};
use crate::topology::{BACKENDS, BLOCKED4, Lbp, NAT4, curl, http_get, spread};
use crate::{lbp, root};

/// Every file under `examples/` (relative to the root) whose name ends with
/// `ext`, sorted; build output (`target`) is not looked at.
fn example_files(ext: &str) -> Vec<String> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("a readable folder") {
            let p = e.expect("a readable entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    walk(&p, ext, out);
                }
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root().join("examples"), ext, &mut v);
    let mut v: Vec<String> = v
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Whether the policy is an application example's (its folder has a crate).
fn needs_its_own_binary(policy: &str) -> bool {
    root()
        .join(policy)
        .parent()
        .is_some_and(|d| d.join("Cargo.toml").is_file())
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn there_are_worked_examples_and_an_application() {
    let policies = example_files(".lbp");
    for want in [
        "examples/nat-web-farm/",
        "examples/dsr-dns/",
        "examples/ipv6-service/",
        "examples/agents-health/",
        "examples/dns-responder/",
    ] {
        assert!(
            policies.iter().any(|p| p.starts_with(want)),
            "no policy in {want}: {policies:?}"
        );
    }
}

#[test]
fn example_policies_check_clean_are_formatted_and_pass_their_tests() {
    for p in example_files(".lbp") {
        if needs_its_own_binary(&p) {
            continue;
        }
        let o = lbp(&["check", "--deny-warnings", "--color", "never", &p]);
        assert_eq!(o.status.code(), Some(0), "lbp check {p}:\n{}", text(&o));
        let o = lbp(&["fmt", "--check", &p]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "lbp fmt --check {p}:\n{}",
            text(&o)
        );
        let o = lbp(&["test", "--color", "never", &p]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "lbp test {p}:\n{out}");
        assert!(out.contains(" passed, 0 failed"), "lbp test {p}:\n{out}");
        assert!(!out.contains(" 0 passed"), "{p} has no test lines:\n{out}");
    }
}

#[test]
fn application_examples_are_refused_by_plain_lbp_only_for_their_application() {
    let mut seen = 0;
    for p in example_files(".lbp")
        .into_iter()
        .filter(|p| needs_its_own_binary(p))
    {
        seen += 1;
        let o = lbp(&["check", "--format", "json", &p]);
        assert_eq!(o.status.code(), Some(1), "{p}: {}", text(&o));
        let codes: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&o.stderr).lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|d| d["code"].as_str().map(str::to_string))
            .collect();
        assert!(!codes.is_empty(), "{p}: no diagnostics: {}", text(&o));
        assert!(
            codes.iter().all(|c| c == "lbp::name::unknown_app"),
            "{p}: {codes:?}"
        );
    }
    assert!(seen >= 1, "the dns-responder example has a policy");
}

#[test]
fn every_example_has_a_readme_that_names_its_policies() {
    let mut dirs: Vec<PathBuf> = example_files(".lbp")
        .iter()
        .map(|p| Path::new(p).parent().expect("a folder").to_path_buf())
        .collect();
    dirs.dedup();
    for d in dirs {
        let readme = root().join(&d).join("README.md");
        let text = std::fs::read_to_string(&readme)
            .unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
        for p in example_files(".lbp") {
            if Path::new(&p).parent() == Some(d.as_path()) {
                let name = Path::new(&p).file_name().unwrap().to_string_lossy();
                assert!(
                    text.contains(name.as_ref()),
                    "{} does not mention {name}",
                    readme.display()
                );
            }
        }
    }
}

/// The command lines of a README: lines of its code (indented by four spaces,
/// or in a fenced block of no language or a shell's) that run `lbp` or an
/// example's binary, continuation lines joined; each as its words after the
/// program.
fn command_lines(readme: &str) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    // In a fenced block: whether it is shell (no language, or a shell's).
    let mut fenced: Option<bool> = None;
    let mut pending = String::new();
    for line in readme.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            fenced = match fenced {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "" | "sh" | "shell" | "console")),
            };
            continue;
        }
        let code = fenced.unwrap_or_else(|| line.starts_with("    "));
        if !code {
            pending.clear();
            continue;
        }
        let l = line.trim();
        if let Some(head) = l.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(l);
        lines.push(std::mem::take(&mut pending));
    }
    let mut out = Vec::new();
    for l in lines {
        let l = l.split(" #").next().unwrap_or("");
        let mut words = l.split_whitespace().peekable();
        // `sudo`, and `KEY=VALUE` assignments before the program.
        while let Some(w) = words.peek() {
            if *w == "sudo" || (w.contains('=') && !w.starts_with('-')) {
                words.next();
            } else {
                break;
            }
        }
        let Some(program) = words.next() else {
            continue;
        };
        let is_lbp = program == "lbp"
            || program.ends_with("/lbp")
            || program.ends_with("/dns-responder")
            || program == "dns-responder";
        if is_lbp {
            out.push(words.map(str::to_string).collect());
        }
    }
    out
}

#[test]
fn readme_command_lines_are_real() {
    let mut checked = 0;
    for readme in example_files("README.md") {
        let text = std::fs::read_to_string(root().join(&readme)).unwrap();
        for words in command_lines(&text) {
            let Some(sub) = words.first() else { continue };
            let help = lbp(&[sub, "--help"]);
            assert_eq!(
                help.status.code(),
                Some(0),
                "{readme}: `lbp {}`: no subcommand `{sub}`",
                words.join(" ")
            );
            let mut help = String::from_utf8_lossy(&help.stdout).into_owned();
            // A subcommand with subcommands of its own (`set weight`).
            if help.contains("\nCommands:")
                && let Some(next) = words.get(1)
            {
                let o = lbp(&[sub, next, "--help"]);
                assert_eq!(o.status.code(), Some(0), "{readme}: `lbp {sub} {next}`");
                help = String::from_utf8_lossy(&o.stdout).into_owned();
            }
            for w in words.iter().filter(|w| w.starts_with("--")) {
                let flag = w.split('=').next().unwrap();
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{readme}: `lbp {}`: `lbp {sub}` has no option {flag}",
                    words.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} command lines found");
}

#[test]
fn the_readme_command_reader_finds_continued_and_fenced_lines() {
    let text = "Run:\n\n    sudo X=1 lbp run a.lbp \\\n        --iface client=eth0\n\n\
                ```\nlbp stats --json   # counters\n```\n\nnot code: lbp nothing\n\
                \n    ip addr add 198.18.0.1/24 dev lo\n\n```toml\nlbp = { path = \"..\" }\n```\n";
    assert_eq!(
        command_lines(text),
        vec![
            vec!["run", "a.lbp", "--iface", "client=eth0"],
            vec!["stats", "--json"],
        ]
    );
}

/// The NAT web farm's policy on the end-to-end topology (same interfaces,
/// addresses and back ends): HTTP through the virtual IP reaches every server,
/// more often the heavier ones; the blocked source gets nothing; a ping to the
/// virtual IP is answered.
#[test]
fn the_nat_web_farm_runs_end_to_end() {
    let test = "examples::the_nat_web_farm_runs_end_to_end";
    let Some((_serial, topo)) = setup(test, "xwf") else {
        return;
    };
    let mut lbp = Lbp::start(
        &topo.app,
        "examples/nat-web-farm/web-farm.lbp",
        &[
            "--iface",
            "client=client",
            "--iface",
            "servers=servers",
            "--tap",
            "lbpwf",
            "--stats-interval",
            "0",
        ],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let c = &topo.client;
    let mut r = Report::default();
    let vip = SocketAddr::new(NAT4.into(), 80);
    r.check("1 200 connections spread by weight", {
        const N: usize = 1200;
        let (counts, errors) = c.within(move || spread(vip, N, Duration::from_secs(120)));
        let served: usize = counts.iter().sum();
        if errors.len() > N / 100 {
            Err(format!(
                "{} failed, first {:?}",
                errors.len(),
                errors.first()
            ))
        } else {
            // Weights 1, 2, 3: each within 30 % of its share.
            counts
                .iter()
                .enumerate()
                .find_map(|(i, &n)| {
                    let want = served as f64 * (i + 1) as f64 / 6.0;
                    ((n as f64 - want).abs() > want * 0.3).then(|| {
                        format!(
                            "{} served {n} of {served}, expected about {want:.0}",
                            BACKENDS[i].0
                        )
                    })
                })
                .map_or(Ok(()), Err)
        }
    });
    r.check(
        "HTTPS port 443 is balanced to port 8080 too",
        c.within(move || http_get(SocketAddr::new(NAT4.into(), 443), Duration::from_secs(3)))
            .map_err(|e| e.to_string())
            .and_then(|body| {
                if body.contains(":8080 ") {
                    Ok(())
                } else {
                    Err(format!("answered {body:?}"))
                }
            }),
    );
    r.check(
        "the blocked source gets no answer",
        match curl(
            c,
            "http://198.18.0.10:80/",
            &["--interface", &BLOCKED4.to_string()],
            2,
        ) {
            Ok(body) => Err(format!("served {body:?}")),
            Err(e) if e.contains("exit Some(28)") => Ok(()),
            Err(e) => Err(format!("expected a timeout: {e}")),
        },
    );
    r.check(
        "a ping to the virtual IP is answered",
        crate::e2e::pinged(c, NAT4.into()),
    );
    r.check("exits 0 on SIGTERM", lbp.stop_cleanly());
    let context = format!("lbp's stderr:\n{}\n{}", lbp.stderr_text(), topo.dump());
    drop(lbp);
    drop(topo);
    r.finish(&context);
}
