//! Names: the definitions of the four namespaces (values: interfaces, consts
//! and sets; pools; services; tests), each collected once before the items are
//! checked, with the duplicates and reserved names reported there; the
//! references a statement makes by name (an interface, a service, an
//! application); and, after every item, the definitions never used.
//!
//! Names used in expressions are resolved where expressions are typed
//! (`expr.rs`).

use super::checker::{Checker, Value};
use super::types::{PROTOCOLS, list};
use crate::ast::{Ident, Interface, Item, Policy, Span};
use crate::diag::{did_you_mean, suggest};
use std::collections::HashMap;

impl<'a> Checker<'a> {
    pub(super) fn collect(&mut self, policy: &'a Policy) {
        let mut tests: HashMap<&str, Span> = HashMap::new();
        for item in &policy.items {
            match item {
                Item::Interface(i) => self.define_value(&i.name, Value::Iface(i)),
                Item::Const(c) => self.define_value(&c.name, Value::Const(c)),
                Item::Set(s) => self.define_value(&s.name, Value::Set(s)),
                // The first definition stands; the second is reported.
                Item::Pool(p) => match self.pools.get(p.name.name.as_str()) {
                    Some(prev) => {
                        let first = prev.name.span;
                        self.duplicate("pool", &p.name, first);
                    }
                    None => {
                        self.pools.insert(&p.name.name, p);
                    }
                },
                Item::Service(s) => match self.services.get(s.name.name.as_str()) {
                    Some(prev) => {
                        let first = prev.name.span;
                        self.duplicate("service", &s.name, first);
                    }
                    None => {
                        self.services.insert(&s.name.name, s);
                    }
                },
                Item::Test(t) => {
                    if let Some(prev) = tests.get(t.name.as_str()).copied() {
                        self.err(
                            "lbp::name::duplicate",
                            format!("the test \"{}\" is defined twice", t.name),
                            t.name_span,
                            "defined again here",
                        )
                        .also(prev, "first defined here")
                        .set_help("test names are unique: rename one of them");
                    } else {
                        tests.insert(&t.name, t.name_span);
                    }
                }
                Item::Filter(_) | Item::Route(_) => {}
            }
        }
    }

    fn define_value(&mut self, name: &'a Ident, v: Value<'a>) {
        // Interfaces too: `in.iface == tcp` and `ip.proto == tcp` share the namespace.
        if let Some((p, _)) = PROTOCOLS.iter().find(|(p, _)| *p == name.name).or(
            if matches!(name.name.as_str(), "true" | "false") {
                Some(&("", 0))
            } else {
                None
            },
        ) {
            let what = if p.is_empty() {
                "a boolean literal"
            } else {
                "a protocol name"
            };
            self.err(
                "lbp::name::reserved",
                format!("`{}` is {what} and cannot be redefined", name.name),
                name.span,
                "reserved name",
            )
            .set_help("choose another name");
            return;
        }
        if let Some(prev) = self.values.get(name.name.as_str()).copied() {
            let kind = match v {
                Value::Iface(_) => "interface",
                Value::Const(_) => "const",
                Value::Set(_) => "set",
            };
            self.duplicate(kind, name, prev.span());
            // Which of the two a use means is unknown: uses are not checked against
            // either (that would only report follow-on mismatches).
            self.ambiguous.insert(&name.name);
            return;
        }
        self.values.insert(&name.name, v);
    }

    fn duplicate(&mut self, kind: &str, name: &Ident, first: Span) {
        let help = match kind {
            "pool" => {
                "pool names are unique: rename one of the pools, or merge their back ends into one"
            }
            "service" => "service names are unique: rename one of the services",
            _ => "interfaces, consts and sets share one namespace: rename one of them",
        };
        self.err(
            "lbp::name::duplicate",
            format!("the name `{}` is defined twice", name.name),
            name.span,
            format!("{kind} `{}` defined again here", name.name),
        )
        .also(first, "first defined here")
        .set_help(help);
    }

    pub(super) fn iface_ref(&mut self, i: &Ident) -> Option<&'a Interface> {
        match self.values.get(i.name.as_str()) {
            Some(Value::Iface(x)) => Some(*x),
            Some(_) => {
                self.err(
                    "lbp::type::mismatch",
                    format!("`{}` is not an interface", i.name),
                    i.span,
                    "not an interface",
                );
                None
            }
            None => {
                let cands: Vec<&str> = self
                    .values
                    .iter()
                    .filter(|(_, v)| matches!(v, Value::Iface(_)))
                    .map(|(k, _)| *k)
                    .collect();
                let d = self.err(
                    "lbp::name::undefined",
                    format!("no interface named `{}`", i.name),
                    i.span,
                    "not defined",
                );
                d.help = Some(suggest(
                    &i.name,
                    cands,
                    format!(
                        "define it: `interface {} {{ address ADDRESS/LENGTH }}`",
                        i.name
                    ),
                ));
                None
            }
        }
    }

    pub(super) fn service_ref(&mut self, s: &Ident) {
        if !self.services.contains_key(s.name.as_str()) {
            let cands: Vec<&str> = self.services.keys().copied().collect();
            let d = self.err(
                "lbp::name::undefined",
                format!("no service named `{}`", s.name),
                s.span,
                "not defined",
            );
            if let Some(m) = did_you_mean(&s.name, cands) {
                d.help = Some(format!("did you mean `{m}`?"));
            }
        }
    }

    /// The application of `app NAME` (an action or a test verdict).
    pub(super) fn app_ref(&mut self, n: &Ident) {
        let apps = self.apps();
        if apps.contains(&n.name.as_str()) {
            return;
        }
        let d = self.err(
            "lbp::name::unknown_app",
            format!("unknown application `{}`", n.name),
            n.span,
            "no such application",
        );
        d.help = Some(suggest(
            &n.name,
            apps.iter().copied(),
            format!(
                "the switching core's applications are {}",
                list(apps, "and")
            ),
        ));
    }

    pub(super) fn unused(&mut self) {
        let mut unused: Vec<(Span, String, &str)> = Vec::new();
        for (name, v) in &self.values {
            let kind = match v {
                Value::Const(_) => "const",
                Value::Set(_) => "set",
                Value::Iface(_) => continue,
            };
            if !self.used.contains(name) {
                unused.push((v.span(), name.to_string(), kind));
            }
        }
        for (name, p) in &self.pools {
            if !self.used_pools.contains(name) {
                unused.push((p.name.span, name.to_string(), "pool"));
            }
        }
        unused.sort();
        for (span, name, kind) in unused {
            let help = if kind == "pool" {
                "use it in a service (`pool NAME`), or remove it"
            } else {
                "use it in a rule, or remove it"
            };
            self.warn(
                "lbp::name::unused",
                format!("the {kind} `{name}` is never used"),
                span,
                "never used",
            )
            .set_help(help);
        }
    }
}
