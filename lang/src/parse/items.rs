//! Building the AST's items and statements from what pest matched:
//! constants, sets, routes, interface, pool and service statements, filter
//! rules and test packet lines.

use super::{Driver, P, Rule, fast};
use crate::ast::*;

impl<'s> Driver<'s> {
    pub(super) fn ident(&self, p: P<'_>, base: usize) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p, base),
        }
    }

    pub(super) fn const_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let name = self.ident(it.next()?, base);
        let value = self.expr(it.next()?, base);
        Some(Item::Const(Const { name, value, span }))
    }

    pub(super) fn set_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let name = self.ident(it.next()?, base);
        let mut ty = None;
        let mut body = it.next()?;
        if body.as_rule() == Rule::ident {
            ty = Some(self.ident(body, base));
            body = it.next()?;
        }
        let body_span = self.span(&body, base);
        let elems = body.into_inner().map(|e| self.expr(e, base)).collect();
        Some(Item::Set(SetDef {
            name,
            ty,
            elems,
            body: body_span,
            span,
        }))
    }

    pub(super) fn route_item(&mut self, p: P<'_>, base: usize) -> Option<Item> {
        let span = self.span(&p, base);
        let mut it = p.into_inner().skip(1);
        let prefix = self.expr(it.next()?, base);
        let (mut via, mut dev) = (None, None);
        while let Some(k) = it.next() {
            match k.as_rule() {
                Rule::k_via => via = Some(self.expr(it.next()?, base)),
                _ => dev = Some(self.ident(it.next()?, base)),
            }
        }
        Some(Item::Route(Route {
            prefix,
            via,
            dev,
            span,
        }))
    }

    pub(super) fn iface_stmt(&mut self, p: P<'_>, base: usize) -> Option<IfaceStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let rule = inner.as_rule();
        let mut vals: Vec<Expr> = inner
            .into_inner()
            .skip(1)
            .map(|v| self.expr(v, base))
            .collect();
        let kind = match rule {
            Rule::iface_address => IfaceStmtKind::Address(vals),
            Rule::iface_mac => IfaceStmtKind::Mac(vals.pop()?),
            _ => IfaceStmtKind::Mtu(vals.pop()?),
        };
        Some(IfaceStmt { kind, span })
    }

    pub(super) fn opt(&mut self, p: P<'_>, base: usize) -> Option<Opt> {
        let mut it = p.into_inner();
        let key = it.next()?;
        let key = Ident {
            name: key.as_str().to_string(),
            span: self.span(&key, base),
        };
        let value = self.expr(it.next()?, base);
        Some(Opt { key, value })
    }

    pub(super) fn pool_stmt(&mut self, p: P<'_>, base: usize) -> Option<PoolStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let kind = match inner.as_rule() {
            Rule::weight_def => PoolStmtKind::Weight(self.expr(inner.into_inner().nth(1)?, base)),
            Rule::backend => {
                let mut it = inner.into_inner().skip(1);
                let addr = self.expr(it.next()?, base);
                let opts = it
                    .filter_map(|o| self.opt(o.into_inner().next()?, base))
                    .collect();
                PoolStmtKind::Backend(Backend { addr, opts })
            }
            _ => {
                let mut it = inner.into_inner().skip(1);
                let kind = self.ident(it.next()?, base);
                let opts = it.filter_map(|o| self.opt(o, base)).collect();
                PoolStmtKind::Health(Health { kind, opts })
            }
        };
        Some(PoolStmt { kind, span })
    }

    pub(super) fn service_stmt(&mut self, p: P<'_>, base: usize) -> Option<ServiceStmt> {
        let span = self.span(&p, base);
        let inner = p.into_inner().next()?;
        let rule = inner.as_rule();
        let mut it = inner.into_inner().skip(1);
        let kind = match rule {
            Rule::vip => {
                let addr = self.expr(it.next()?, base);
                let proto = self.ident(it.next()?, base);
                let ports = it
                    .filter(|p| p.as_rule() == Rule::value)
                    .map(|v| self.expr(v, base))
                    .collect();
                ServiceStmtKind::Vip { addr, proto, ports }
            }
            Rule::pool_ref => ServiceStmtKind::Pool(self.ident(it.next()?, base)),
            Rule::balance => {
                let b = it.next()?;
                if b.as_rule() == Rule::hash_alg {
                    let hspan = self.span(&b, base);
                    let fields = b
                        .into_inner()
                        .skip(1)
                        .map(|f| self.ident(f, base))
                        .collect();
                    ServiceStmtKind::Balance(Balance::Hash {
                        fields,
                        span: hspan,
                    })
                } else {
                    ServiceStmtKind::Balance(Balance::Named(self.ident(b, base)))
                }
            }
            Rule::mode => {
                let kind = self.ident(it.next()?, base);
                let to_port = it
                    .find(|p| p.as_rule() == Rule::value)
                    .map(|v| self.expr(v, base));
                ServiceStmtKind::Mode { kind, to_port }
            }
            _ => ServiceStmtKind::Unknown(self.ident(it.next()?, base)),
        };
        Some(ServiceStmt { kind, span })
    }

    pub(super) fn rule(&mut self, p: P<'_>, base: usize) -> Option<FilterRule> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let cond = self.expr(it.next()?, base);
        let a = it.next()?;
        let aspan = self.span(&a, base);
        let inner = a.into_inner().next()?;
        let action = if inner.as_rule() == Rule::balance_action {
            let mut bi = inner.into_inner();
            let kind = self.ident(bi.next()?, base);
            let service = Some(self.ident(bi.next()?, base));
            Action {
                kind,
                service,
                span: aspan,
            }
        } else {
            Action {
                kind: self.ident(inner, base),
                service: None,
                span: aspan,
            }
        };
        Some(FilterRule { cond, action, span })
    }

    /// The tree of a filter rule read by [`fast::read_rule`], as [`Driver::rule`]
    /// builds it from pest's pairs.
    pub(super) fn raw_rule(&mut self, raw: fast::RawRule<'_>, start: usize) -> FilterRule {
        let span = Span::new(start, self.trim_end(start, raw.end));
        let cond = self.climb(&mut raw.cond.into_iter().peekable(), 0, 0);
        let word = |(s, e): (usize, usize)| Ident {
            name: self.src[s..e].to_string(),
            span: Span::new(s, self.trim_end(s, e)),
        };
        let kind = word(raw.kind);
        let service = raw.service.map(word);
        let action = Action {
            span: Span::new(kind.span.start, self.trim_end(kind.span.start, raw.end)),
            kind,
            service,
        };
        FilterRule { cond, action, span }
    }

    pub(super) fn packet(&mut self, p: P<'_>, base: usize) -> Option<Packet> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let proto = self.ident(it.next()?, base);
        let src = self.endpoint(it.next()?, base)?;
        let dst = self.endpoint(it.next()?, base)?;
        let mut opts = Vec::new();
        let mut verdict = None;
        for o in it {
            if o.as_rule() == Rule::verdict {
                let vspan = self.span(&o, base);
                let inner = o.into_inner().next()?;
                verdict = Some(match inner.as_rule() {
                    Rule::ident => Verdict {
                        kind: self.ident(inner, base),
                        arg: None,
                        span: vspan,
                    },
                    _ => {
                        let mut vi = inner.into_inner();
                        let kind = self.ident(vi.next()?, base);
                        let arg = vi.last().map(|a| self.ident(a, base));
                        Verdict {
                            kind,
                            arg,
                            span: vspan,
                        }
                    }
                });
                continue;
            }
            let o = o.into_inner().next()?;
            let rule = o.as_rule();
            if rule == Rule::flag {
                opts.push(PacketOpt::Flag(self.ident(o, base)));
                continue;
            }
            let v = o.into_inner().nth(1)?;
            opts.push(match rule {
                Rule::opt_type => PacketOpt::Type(self.expr(v, base)),
                Rule::opt_code => PacketOpt::Code(self.expr(v, base)),
                Rule::opt_ttl => PacketOpt::Ttl(self.expr(v, base)),
                Rule::opt_len => PacketOpt::Len(self.expr(v, base)),
                _ => PacketOpt::On(self.ident(v, base)),
            });
        }
        Some(Packet {
            proto,
            src,
            dst,
            opts,
            verdict: verdict?,
            span,
        })
    }

    pub(super) fn endpoint(&mut self, p: P<'_>, base: usize) -> Option<Endpoint> {
        let span = self.span(&p, base);
        let mut it = p.into_inner();
        let addr = self.expr(it.next()?, base);
        let port = it.next().map(|v| self.expr(v, base));
        Some(Endpoint { addr, port, span })
    }
}
