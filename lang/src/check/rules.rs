//! Filter rules: the condition, which must be true or false; rules that can
//! never match (an always-false condition, or any rule after one that takes
//! every packet); and the action with the service or application it names.

use super::checker::{Checker, Ctx};
use super::types::{ACTIONS, Ty, list};
use super::values::const_truth;
use crate::ast::{ExprKind, FilterRule};
use crate::diag::suggest;

impl<'a> Checker<'a> {
    pub(super) fn rule(&mut self, r: &'a FilterRule) {
        if let Some(prior) = self.unconditional
            && !self.unreachable_reported
        {
            self.unreachable_reported = true;
            self.warn(
                "lbp::check::unreachable_rule",
                "this rule can never match",
                r.span,
                "unreachable",
            )
            .also(prior, "every packet stops at this rule");
            if let Some(d) = self.diags.last_mut() {
                d.help = Some("rules are tried in order and the first match decides; move this rule above, or narrow the earlier one".into());
            }
        }
        let t = self.ty(&r.cond, Ctx::Filter);
        if !matches!(t, Ty::Bool | Ty::Unknown) {
            let d = self.mismatch(r.cond.span, "a condition (true or false)", t);
            d.help = Some(match r.cond.kind {
                ExprKind::Field(ref name) => match t {
                    Ty::Addr(_) => format!("compare it: `{name} == 198.18.0.1`, or `{name} in 198.18.0.0/15`"),
                    Ty::Int => format!("compare it, for example `{name} == 80`"),
                    _ => format!("compare it, for example `{name} == ...`"),
                },
                _ => "a rule's condition is a comparison, an `in` test, a flag such as `tcp.syn`, or a combination with && || !".into(),
            });
        }
        match const_truth(&r.cond) {
            Some(true) if self.unconditional.is_none() => self.unconditional = Some(r.span),
            Some(false) => {
                self.warn(
                    "lbp::check::never_matches",
                    "this rule's condition is always false",
                    r.cond.span,
                    "always false",
                )
                .set_help("remove the rule");
            }
            _ => {}
        }
        let a = &r.action;
        match (a.kind.name.as_str(), &a.service) {
            ("balance", Some(s)) => self.service_ref(s),
            ("balance", None) => {
                self.err(
                    "lbp::check::balance_service",
                    "`balance` needs the service to balance with",
                    a.span,
                    "no service",
                )
                .set_help("write `balance SERVICE`");
            }
            ("app", Some(n)) => self.app_ref(n),
            ("app", None) => {
                let apps = list(self.apps(), "or");
                self.err(
                    "lbp::check::app_name",
                    "`app` needs the application to hand the packet to",
                    a.span,
                    "no application",
                )
                .set_help(format!("write `app NAME`: {apps}"));
            }
            (k, _) if ACTIONS.contains(&k) => {}
            (k, _) => {
                let d = self.err(
                    "lbp::name::unknown_action",
                    format!("unknown action `{k}`"),
                    a.kind.span,
                    "not an action",
                );
                d.help = Some(suggest(
                    k,
                    ACTIONS.iter().copied(),
                    "actions are accept, drop, reset, local, forward, balance SERVICE and app NAME",
                ));
            }
        }
    }
}
