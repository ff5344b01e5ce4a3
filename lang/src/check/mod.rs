//! Checking: name resolution and type checking of a parsed [`Policy`].
//!
//! `check` reads the tree and returns every diagnostic it finds; it never stops at
//! the first. It resolves names in four namespaces (values: interfaces, consts and
//! sets; pools; services; tests), types every expression, and checks the rules of
//! the language that are not syntax: port and prefix ranges, address families,
//! host bits, mixed sets, unreachable rules, overlapping service entries, and so on.
//! It does not rewrite the tree.
//!
//! The passes, in the order [`check_with`] runs them, and where each lives:
//!
//! 1. the definitions of every namespace (`names.rs`);
//! 2. each item: interfaces, consts, sets, pools and health checks, routes
//!    (`decls.rs`), services (`services.rs`), filter rules (`rules.rs`), test
//!    packet lines (`packets.rs`); then the service entries two services claim
//!    (`services.rs`), the checks that need the whole policy (`lints.rs`) and
//!    the test packets' arrival interfaces (`packets.rs`);
//! 3. the definitions never used (`names.rs`).
//!
//! Every pass is a method of the one `Checker` (`checker.rs`, with its ways to
//! report). The passes type expressions with `expr.rs`, read constant values
//! and check their bounds with `values.rs`, and look words and types up in
//! `types.rs`. The unit tests are in `tests/`, a file per family of
//! diagnostics.

mod checker;
mod decls;
mod expr;
mod lints;
mod names;
mod packets;
mod rules;
mod services;
#[cfg(test)]
mod tests;
mod types;
mod values;

use crate::ast::{Item, Policy};
use crate::diag::Diagnostic;
use checker::Checker;
pub use lints::martian_kind;
pub use packets::{check_packet_line, check_packet_line_with};
pub use types::{
    ACTIONS, ALGORITHMS, APPLICATIONS, Elem, FIELDS, Fam, FieldInfo, HASH_FIELDS, HEALTH_KINDS,
    PROTOCOLS, TCP_FLAGS, Ty, VERDICTS, WEIGHT_INPUTS, field,
};
pub use values::{const_truth, contains, network};

/// Check a policy; returns the diagnostics in the order found (callers sort).
/// `app NAME` may name the built-in applications ([`APPLICATIONS`]).
pub fn check(policy: &Policy) -> Vec<Diagnostic> {
    check_with(policy, APPLICATIONS)
}

/// [`check`] for an appliance whose switching cores run the applications
/// `apps` (a program's registry: the built-in ones and its own), which `app
/// NAME` may name.
pub fn check_with(policy: &Policy, apps: &[&str]) -> Vec<Diagnostic> {
    let mut c = Checker {
        apps: Some(apps),
        ..Checker::default()
    };
    c.collect(policy);
    for item in &policy.items {
        c.item(item);
    }
    c.services_claims();
    c.lints(policy);
    let packets = policy.items.iter().flat_map(|i| match i {
        Item::Test(t) => t.packets.as_slice(),
        _ => &[],
    });
    c.arrivals(policy, packets);
    c.unused();
    c.diags
}

impl<'a> Checker<'a> {
    /// Pass 2 on one item.
    fn item(&mut self, item: &'a Item) {
        match item {
            Item::Interface(i) => self.interface(i),
            Item::Const(c) => {
                self.const_ty(c);
            }
            Item::Set(s) => {
                self.set_def(s);
            }
            Item::Pool(p) => self.pool(p),
            Item::Service(s) => self.service(s),
            Item::Filter(f) => {
                for r in &f.rules {
                    self.rule(r);
                }
            }
            Item::Route(r) => self.route(r),
            Item::Test(t) => {
                for p in &t.packets {
                    self.packet(p);
                }
            }
        }
    }
}
