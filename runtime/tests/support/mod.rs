//! Network namespaces for the runtime's tests: made by the test, removed when the
//! guard is dropped (also when the test fails). Addresses used inside them come
//! from 198.18.0.0/15 and 2001:db8::/32 only. The namespace guard and its helpers
//! are the CLI tests' (`tests/cli/netns.rs`, included here by path: one copy for
//! both crates); this adds the skip macro and a plain veth pair.
#![allow(dead_code)]

#[path = "../../../tests/cli/netns.rs"]
pub mod netns;

pub use netns::{Netns, run, skip, unavailable};

/// Skip a test (with a line saying so) when namespaces are unavailable; under
/// CI, fail it instead (see [`netns::skip`]).
#[macro_export]
macro_rules! require_netns {
    () => {
        if let Some(why) = support::unavailable() {
            support::skip(
                module_path!(),
                &format!("needs root and network namespaces ({why})"),
            );
            return;
        }
    };
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
