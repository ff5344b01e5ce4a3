//! What a value stands for where the checker can know it: the integer, range or
//! address a literal or a chain of consts gives, exact integer arithmetic, and
//! the truth of a condition that does not read the packet; the bounds such a
//! value must keep (ports, options' ranges, a prefix without host bits); and
//! the address arithmetic of networks.

use super::checker::{Checker, Value};
use super::types::{Fam, PROTOCOLS};
use crate::ast::{ArithOp, Expr, ExprKind, Lit};
use std::net::IpAddr;

impl<'a> Checker<'a> {
    /// The integer a value stands for, if it is known here.
    pub(super) fn const_int(&self, e: &Expr) -> Option<u64> {
        match &e.kind {
            ExprKind::Lit(Lit::Int { value, .. }) => Some(*value),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_int(&c.value),
                _ => PROTOCOLS.iter().find(|(p, _)| p == n).map(|(_, v)| *v),
            },
            ExprKind::Paren(x) => self.const_int(x),
            _ => None,
        }
    }

    /// The value of integer arithmetic on constants, if it is exact.
    pub(super) fn const_arith(&self, e: &Expr) -> Option<i128> {
        match &e.kind {
            ExprKind::Paren(x) => self.const_arith(x),
            ExprKind::Neg(x) => self.const_arith(x)?.checked_neg(),
            ExprKind::Arith(first, rest) => {
                let mut v = self.const_arith(first)?;
                for (op, x) in rest {
                    let y = self.const_arith(x)?;
                    v = match op {
                        ArithOp::Add => v.checked_add(y)?,
                        ArithOp::Sub => v.checked_sub(y)?,
                        ArithOp::Mul => v.checked_mul(y)?,
                        ArithOp::Div if y != 0 && v % y == 0 => v / y,
                        ArithOp::Div => return None,
                    };
                }
                Some(v)
            }
            _ => self.const_int(e).map(i128::from),
        }
    }

    pub(super) fn const_range(&self, e: &Expr) -> Option<(u64, u64)> {
        match &e.kind {
            ExprKind::Lit(Lit::Range(a, b)) => Some((*a, *b)),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_range(&c.value),
                _ => None,
            },
            _ => self.const_int(e).map(|v| (v, v)),
        }
    }

    pub(super) fn const_addr(&self, e: &Expr) -> Option<IpAddr> {
        match &e.kind {
            ExprKind::Lit(Lit::Addr(a)) => Some(*a),
            ExprKind::Name(n) => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.const_addr(&c.value),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn port_value(&mut self, e: &Expr) -> Option<u64> {
        let v = self.const_int(e)?;
        if v > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("port {v} is above 65535"),
                e.span,
                "not a port",
            )
            .set_help("ports are 0 to 65535");
            return None;
        }
        Some(v)
    }

    /// An agent check's port: a port a server listens on, so 1 to 65535.
    pub(super) fn agent_port(&mut self, e: &Expr) {
        let Some(v) = self.const_int(e) else { return };
        if v == 0 || v > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("agent port {v} is out of range"),
                e.span,
                "not 1 to 65535",
            )
            .set_help("an agent listens on a port from 1 to 65535, e.g. `agent 5555`");
        }
    }

    pub(super) fn port_range(&mut self, e: &Expr) -> Option<(u64, u64)> {
        let (lo, hi) = self.const_range(e)?;
        if lo > hi {
            // already reported where the range is written
            return None;
        }
        if hi > 65535 {
            self.err(
                "lbp::type::port_range",
                format!("port {hi} is above 65535"),
                e.span,
                "not a port range",
            )
            .set_help("ports are 0 to 65535");
            return None;
        }
        Some((lo, hi))
    }

    pub(super) fn int_bounds(&mut self, e: &Expr, lo: u64, hi: u64, what: &str) {
        if let Some(v) = self.const_int(e)
            && !(lo..=hi).contains(&v)
        {
            self.err(
                "lbp::type::out_of_range",
                format!("{v} is out of range for {what}"),
                e.span,
                format!("not in {lo}..{hi}"),
            )
            .set_help(format!("{what} is between {lo} and {hi}"));
        }
    }

    pub(super) fn host_bits(&mut self, e: &Expr) {
        if let ExprKind::Lit(Lit::Prefix { addr, len }) = e.kind
            && len <= Fam::of(&addr).max_len()
        {
            let net = network(addr, len);
            if net != addr {
                self.err(
                    "lbp::type::host_bits",
                    format!("the prefix {addr}/{len} has host bits set"),
                    e.span,
                    "host bits set",
                )
                .set_help(format!("did you mean `{net}/{len}`?"));
            }
        }
    }
}

pub(super) fn const_zero(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Lit(Lit::Int { value: 0, .. }) => true,
        ExprKind::Lit(Lit::Float(f)) => *f == 0.0,
        ExprKind::Paren(x) => const_zero(x),
        _ => false,
    }
}

/// The truth of a condition that does not depend on the packet, if it is constant.
pub fn const_truth(e: &Expr) -> Option<bool> {
    match &e.kind {
        ExprKind::Lit(Lit::Bool(b)) => Some(*b),
        ExprKind::Paren(x) => const_truth(x),
        ExprKind::Not(x) => const_truth(x).map(|b| !b),
        ExprKind::And(xs) => {
            let v: Vec<Option<bool>> = xs.iter().map(const_truth).collect();
            if v.contains(&Some(false)) {
                Some(false)
            } else if v.iter().all(|x| *x == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        ExprKind::Or(xs) => {
            let v: Vec<Option<bool>> = xs.iter().map(const_truth).collect();
            if v.contains(&Some(true)) {
                Some(true)
            } else if v.iter().all(|x| *x == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `addr` with its host bits (those beyond `len`) cleared.
pub fn network(addr: IpAddr, len: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Whether `net/len` contains `addr`.
pub fn contains(net: IpAddr, len: u32, addr: IpAddr) -> bool {
    net.is_ipv4() == addr.is_ipv4() && network(net, len) == network(addr, len)
}

/// A short rendering of a simple expression, for help texts.
pub(super) fn expr_text(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Name(n) | ExprKind::Field(n) => n.clone(),
        ExprKind::Lit(Lit::Addr(a)) => a.to_string(),
        ExprKind::Lit(Lit::Prefix { addr, len }) => format!("{addr}/{len}"),
        ExprKind::Lit(Lit::Int { value, .. }) => value.to_string(),
        ExprKind::Lit(Lit::Range(a, b)) => format!("{a}..{b}"),
        ExprKind::Set(_) => "{ ... }".into(),
        _ => "...".into(),
    }
}
