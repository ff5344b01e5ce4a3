//! The `.lbp` policy language: grammar, syntax tree, name resolution, type checking
//! and the canonical formatter.
//!
//! This crate turns text into a checked [`ast::Policy`] and a list of
//! [`diag::Diagnostic`]s. It does no I/O, knows nothing of Cranelift or packets, and
//! never panics on any input: every mistake is a diagnostic. pest's types stay
//! inside [`parse`].
#![forbid(unsafe_code)]

// pest is built without its `std` feature (which adds a stack probe to every rule
// call and halves parsing speed); its generated code then names `alloc`.
extern crate alloc;

pub mod ast;
pub mod check;
pub mod diag;
pub mod fmt;
pub mod parse;
pub mod query;
pub mod vocab;

pub use diag::{Diagnostic, Severity};

/// Everything known about one source file after parsing and checking.
#[derive(Debug)]
pub struct Analysis {
    pub policy: ast::Policy,
    pub comments: Vec<ast::Span>,
    /// Parse and check diagnostics, sorted by location.
    pub diagnostics: Vec<Diagnostic>,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parse and check a policy, reporting every diagnostic found.
pub fn analyze(src: &str) -> Analysis {
    analyze_with(src, check::APPLICATIONS)
}

/// [`analyze`] for an appliance whose switching cores run the applications
/// `apps` (see [`check::check_with`]).
pub fn analyze_with(src: &str, apps: &[&str]) -> Analysis {
    let parsed = parse::parse(src);
    let mut diagnostics = parsed.diagnostics;
    diagnostics.extend(check::check_with(&parsed.policy, apps));
    diag::sort(&mut diagnostics);
    Analysis {
        policy: parsed.policy,
        comments: parsed.comments,
        diagnostics,
    }
}
