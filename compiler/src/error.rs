//! Why a checked policy could not be lowered or compiled: a stable code, a
//! message, and where in the source when the cause is there. Rendered like
//! every other diagnostic ([`CompileError::diagnostic`]).
//!
//! The lowering's errors are for trees the checker would have refused (a
//! checked policy never has them); the JIT's are real limits a checked policy
//! can reach (a filter too large to compile, too many services or routes).

use std::fmt;

use lbp_lang::ast::Span;
use lbp_lang::diag::Diagnostic;

/// The stable codes of [`CompileError`].
pub mod code {
    /// More filter rules than could be compiled as one function: those that
    /// could not merge into tables exceed the JIT's limits.
    pub const TOO_LARGE: &str = "lbp::compile::too_large";
    /// More rules, services or routes than a decision can number.
    pub const TOO_MANY: &str = "lbp::compile::too_many";
    /// A condition nested deeper than the JIT's bound.
    pub const TOO_DEEP: &str = "lbp::compile::too_deep";
    /// The host cannot run lbp's JIT: it needs 64-bit pointers and a CPU
    /// Cranelift supports.
    pub const HOST: &str = "lbp::compile::host";
    /// The policy has errors: it is not lowered.
    pub const HAS_ERRORS: &str = "lbp::compile::has_errors";
    /// What lbp cannot lower or compile although its checker accepted it: a
    /// bug in lbp (report it with the policy).
    pub const INTERNAL: &str = "lbp::compile::internal";
    /// A `weight =` formula longer or deeper than the lowering evaluates
    /// (256 terms and levels).
    pub const FORMULA: &str = "lbp::lower::formula";
}

/// A policy that cannot be lowered or compiled. See the module doc. One
/// pointer wide, so that results in the JIT's recursion stay small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError(Box<Detail>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Detail {
    code: &'static str,
    message: String,
    span: Option<Span>,
    label: String,
    help: Option<String>,
}

impl CompileError {
    pub fn new(code: &'static str, message: impl Into<String>) -> CompileError {
        CompileError(Box::new(Detail {
            code,
            message: message.into(),
            span: None,
            label: String::new(),
            help: None,
        }))
    }

    /// The cause's place in the source, and what to say there.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> CompileError {
        self.0.span = Some(span);
        self.0.label = label.into();
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> CompileError {
        self.0.help = Some(help.into());
        self
    }

    /// Stable code, one of [`code`].
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where in the policy, when the cause is there.
    pub fn span(&self) -> Option<Span> {
        self.0.span
    }

    pub fn help(&self) -> Option<&str> {
        self.0.help.as_deref()
    }

    /// The error as a diagnostic, to be rendered with the policy's source.
    pub fn diagnostic(&self) -> Diagnostic {
        let d = &self.0;
        let mut out = Diagnostic::error(d.code, d.message.clone());
        if let Some(span) = d.span {
            out = out.label(span, d.label.clone());
        }
        if let Some(h) = &d.help {
            out = out.help(h.clone());
        }
        out
    }
}

/// The message and the code: `MESSAGE [CODE]`.
impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.0.message, self.0.code)
    }
}

impl std::error::Error for CompileError {}

/// An internal error's message ([`code::INTERNAL`]).
impl From<String> for CompileError {
    fn from(message: String) -> CompileError {
        CompileError::new(code::INTERNAL, message)
    }
}

/// An internal error's message ([`code::INTERNAL`]).
impl From<&str> for CompileError {
    fn from(message: &str) -> CompileError {
        CompileError::new(code::INTERNAL, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diagnostic_carries_the_code_the_span_and_the_help() {
        let e = CompileError::new(code::TOO_LARGE, "too large")
            .at(Span { start: 3, end: 9 }, "here")
            .with_help("merge");
        let d = e.diagnostic();
        assert_eq!(d.code, "lbp::compile::too_large");
        assert_eq!(d.message, "too large");
        assert_eq!(d.span(), Span { start: 3, end: 9 });
        assert_eq!(d.help.as_deref(), Some("merge"));
        assert!(d.is_error());
        assert_eq!(e.to_string(), "too large [lbp::compile::too_large]");
    }

    #[test]
    fn without_a_span_there_is_no_label() {
        let d = CompileError::new(code::HOST, "no").diagnostic();
        assert!(d.labels.is_empty());
    }
}
