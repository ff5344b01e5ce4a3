//! Unit tests of the checker. Each checks a small policy as `lbp check` does
//! (the parser, then the checker: [`crate::analyze`]) and states the
//! diagnostics it draws whole: code, severity, message, every label (the line
//! it starts on, the text it covers, its message) and the help, so that a test
//! fails when any of them changes. One file per family of diagnostics, named
//! after the file of the checker that reports it; `lint_codes.rs` holds
//! `lints.rs`'s tables of codes.

mod decls;
mod expr;
mod lint_codes;
mod lints;
mod names;
mod packets;
mod services;

use crate::analyze;
use crate::diag::{Diagnostic, Severity};

/// A diagnostic as a test states it.
#[derive(Debug, PartialEq)]
struct Seen {
    code: &'static str,
    severity: Severity,
    message: String,
    /// Each label: the line it starts on (from 1), the text it covers, its
    /// message. The first is the primary one.
    labels: Vec<(usize, String, String)>,
    help: Option<String>,
}

fn seen(src: &str, d: &Diagnostic) -> Seen {
    Seen {
        code: d.code,
        severity: d.severity,
        message: d.message.clone(),
        labels: d
            .labels
            .iter()
            .map(|l| {
                let line = src[..l.span.start].matches('\n').count() + 1;
                (
                    line,
                    src[l.span.start..l.span.end].to_string(),
                    l.message.clone(),
                )
            })
            .collect(),
        help: d.help.clone(),
    }
}

/// Every diagnostic of `src`, in the order `lbp check` prints them.
fn all(src: &str) -> Vec<Seen> {
    analyze(src)
        .diagnostics
        .iter()
        .map(|d| seen(src, d))
        .collect()
}

/// The one diagnostic of `src`.
#[track_caller]
fn one(src: &str) -> Seen {
    let mut all = all(src);
    assert_eq!(all.len(), 1, "one diagnostic expected:\n{all:#?}\n{src}");
    all.remove(0)
}

/// The labels as a test states them: line, text, message.
type Labels<'a> = &'a [(usize, &'a str, &'a str)];
/// The help, or `None`.
type Help = Option<&'static str>;

fn error(code: &'static str, message: &str, labels: Labels, help: impl Into<Help>) -> Seen {
    Seen {
        code,
        severity: Severity::Error,
        message: message.to_string(),
        labels: labels
            .iter()
            .map(|&(line, text, label)| (line, text.to_string(), label.to_string()))
            .collect(),
        help: help.into().map(str::to_string),
    }
}

fn warning(code: &'static str, message: &str, labels: Labels, help: impl Into<Help>) -> Seen {
    Seen {
        severity: Severity::Warning,
        ..error(code, message, labels, help)
    }
}

/// A policy that checks clean: an interface, a pool of one back end and a
/// service that balances to it (lines 1 to 6).
const BASE: &str = "\
interface lan { address 198.18.1.1/24 }
pool web { backend 198.18.1.11 }
service www {
    vip 198.18.1.10 tcp port 80
    pool web
}
";

/// [`BASE`] and `extra` (from line 7).
fn and(extra: &str) -> String {
    format!("{BASE}{extra}\n")
}

/// [`BASE`] and a filter of one rule (on line 8).
fn rule(rule: &str) -> String {
    and(&format!("filter {{\n    {rule}\n}}"))
}

/// [`BASE`] and a test of one packet line (on line 8).
fn line(line: &str) -> String {
    and(&format!("test \"t\" {{\n    {line}\n}}"))
}

fn lines(stmts: &[&str]) -> String {
    stmts.iter().map(|s| format!("    {s}\n")).collect()
}

/// [`BASE`] with the pool `web` of these statements (from line 3).
fn pool(stmts: &[&str]) -> String {
    format!(
        "interface lan {{ address 198.18.1.1/24 }}\npool web {{\n{}}}\nservice www {{\n    vip 198.18.1.10 tcp port 80\n    pool web\n}}\n",
        lines(stmts)
    )
}

/// [`BASE`] with the service `www` of these statements (from line 4).
fn service(stmts: &[&str]) -> String {
    format!(
        "interface lan {{ address 198.18.1.1/24 }}\npool web {{ backend 198.18.1.11 }}\nservice www {{\n{}}}\n",
        lines(stmts)
    )
}

#[test]
fn the_base_policy_checks_clean() {
    assert_eq!(all(BASE), []);
    assert_eq!(all(&pool(&["backend 198.18.1.11"])), []);
    assert_eq!(
        all(&service(&["vip 198.18.1.10 tcp port 80", "pool web"])),
        []
    );
}
