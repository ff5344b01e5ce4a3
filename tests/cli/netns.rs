//! The lab's test support ([`lbp_lab::testing`]) under the name the CLI tests
//! use: network namespaces made by a test and removed when their guard is
//! dropped, the can-it-run check and the skip convention (`SKIPPED: <test>:
//! <why>`, a failure under `LBP_CI`), veth pairs, nftables rules, and child
//! processes (the ready line, stopping by PID). Addresses used inside the
//! namespaces come from 198.18.0.0/15 and 2001:db8::/32 only.

#[allow(unused_imports)] // Each test file takes what it needs.
pub use lbp_lab::testing::{Netns, enter, nft, run, skip, stop, unavailable, veth, wait_for_line};
