//! Network namespaces for the runtime's tests: made by the test, removed when the
//! guard is dropped (also when the test fails). Addresses used inside them come
//! from 198.18.0.0/15 and 2001:db8::/32 only. The namespace guard and its helpers
//! are the CLI tests' (`tests/cli/netns.rs`, included here by path: one copy for
//! both crates); this adds the skip macro and a plain veth pair.
#![allow(dead_code)]

#[path = "../../../tests/cli/netns.rs"]
pub mod netns;

pub use netns::{Netns, run, skip, unavailable};

/// Skip a test (with a line saying so) when namespaces are unavailable, or one
/// of the commands named is not on `PATH`; under CI, fail it instead (see
/// [`netns::skip`]): there every tool is installed and a skip is a test that
/// did not run.
#[macro_export]
macro_rules! require_netns {
    ($($tool:literal),* $(,)?) => {
        if let Some(why) = support::unavailable().or_else(|| support::missing(&[$($tool),*])) {
            support::skip(
                module_path!(),
                &format!("needs root and network namespaces ({why})"),
            );
            return;
        }
    };
}

/// Which of `tools` is not on `PATH`, said as a reason; `None` when all are.
pub fn missing(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let gone: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .collect();
    (!gone.is_empty()).then(|| format!("`{}` missing", gone.join("`, `")))
}

/// A veth pair from `a` (interface `a_if`) to `b` (interface `b_if`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
