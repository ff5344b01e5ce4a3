//! The checker's state, shared by the passes in the sibling files: the names
//! defined in each namespace, the types found so far, the connected networks
//! and service entries that later checks compare, and the diagnostics; with the
//! three ways a check reports ([`Checker::err`], [`Checker::warn`] and
//! [`Checker::mismatch`]).

use super::types::{APPLICATIONS, Ty};
use crate::ast::{Const, Interface, Pool, Service, SetDef, Span};
use crate::diag::Diagnostic;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
    /// A filter condition: fields, names of values, no arithmetic.
    Filter,
    /// A pool's weight formula: inputs and consts, arithmetic.
    Weight,
    /// A value in a statement: literals and consts only.
    Value,
}

#[derive(Clone, Copy)]
pub(super) enum Value<'a> {
    Iface(&'a Interface),
    Const(&'a Const),
    Set(&'a SetDef),
}

impl Value<'_> {
    pub(super) fn span(&self) -> Span {
        match self {
            Value::Iface(i) => i.name.span,
            Value::Const(c) => c.name.span,
            Value::Set(s) => s.name.span,
        }
    }
}

/// A service entry as claimed: (service, virtual IP, protocol, port ranges,
/// span).
pub(super) type Claim<'a> = (&'a str, IpAddr, &'a str, Vec<(u64, u64)>, Span);

#[derive(Default)]
pub(super) struct Checker<'a> {
    pub(super) diags: Vec<Diagnostic>,
    pub(super) values: HashMap<&'a str, Value<'a>>,
    pub(super) pools: HashMap<&'a str, &'a Pool>,
    pub(super) services: HashMap<&'a str, &'a Service>,
    pub(super) used: HashSet<&'a str>,
    /// Value names defined more than once (reported where defined again).
    pub(super) ambiguous: HashSet<&'a str>,
    pub(super) used_pools: HashSet<&'a str>,
    pub(super) const_tys: HashMap<&'a str, Ty>,
    /// Types of named sets, once computed (a set may be used by many rules).
    pub(super) set_tys: HashMap<&'a str, Ty>,
    pub(super) resolving: Vec<&'a str>,
    /// Connected networks: (address, length, interface name).
    pub(super) connected: Vec<(IpAddr, u32, &'a str)>,
    /// Where each interface address was first written.
    pub(super) address_spans: HashMap<(IpAddr, u32), Span>,
    /// Service entries: (service, vip address, protocol, port ranges, span).
    pub(super) claims: Vec<Claim<'a>>,
    /// Set once an unconditional filter rule has been seen.
    pub(super) unconditional: Option<Span>,
    pub(super) unreachable_reported: bool,
    /// The applications `app NAME` may name; `None`: [`APPLICATIONS`].
    pub(super) apps: Option<&'a [&'a str]>,
}

impl<'a> Checker<'a> {
    /// The applications `app NAME` may name.
    pub(super) fn apps(&self) -> &'a [&'a str] {
        self.apps.unwrap_or(APPLICATIONS)
    }

    pub(super) fn err(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::error(code, msg).label(span, label));
        self.diags.last_mut().expect("just pushed")
    }

    pub(super) fn warn(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::warning(code, msg).label(span, label));
        self.diags.last_mut().expect("just pushed")
    }

    pub(super) fn mismatch(&mut self, span: Span, expected: &str, found: Ty) -> &mut Diagnostic {
        self.err(
            "lbp::type::mismatch",
            format!("expected {expected}, found {}", found.describe()),
            span,
            format!("this is {}", found.describe()),
        )
    }
}
