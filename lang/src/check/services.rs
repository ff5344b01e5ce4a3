//! Services: each statement of a `service` block (virtual IPs, pool, balance
//! algorithm, mode, the `unknown` policy), the address families of its virtual
//! IPs against its pool's back ends, and, once every service is read, the
//! (virtual IP, protocol, port) entries that two lines or two services claim.

use super::checker::Checker;
use super::types::{ALGORITHMS, Fam, HASH_FIELDS, Ty};
use crate::ast::{Balance, Pool, PoolStmtKind, Service, ServiceStmtKind, Span};
use crate::diag::{did_you_mean, suggest};
use crate::vocab::{MODES, UNKNOWN_POLICIES, VIP_PROTOCOLS};
use std::collections::HashMap;
use std::net::IpAddr;

impl<'a> Checker<'a> {
    pub(super) fn service(&mut self, s: &'a Service) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut vips: Vec<(Fam, Span)> = Vec::new();
        let mut pool: Option<&'a Pool> = None;
        let mut pool_span = None;
        let mut mode_dsr = false;
        for st in &s.stmts {
            let key = match &st.kind {
                ServiceStmtKind::Vip { addr, proto, ports } => {
                    let t = self.value(addr);
                    let ip = match t {
                        Ty::Addr(f) => {
                            vips.push((f, addr.span));
                            self.const_addr(addr)
                        }
                        Ty::Unknown => None,
                        t => {
                            let d = self.mismatch(addr.span, "an address", t);
                            if matches!(t, Ty::Prefix(_)) {
                                d.help = Some(
                                    "a virtual IP is one address: write it without a length".into(),
                                );
                            }
                            None
                        }
                    };
                    let p = proto.name.as_str();
                    let proto_ok = VIP_PROTOCOLS.contains(&p);
                    if !proto_ok {
                        let d = self.err(
                            "lbp::name::unknown_protocol",
                            format!("a service entry is tcp or udp, not `{p}`"),
                            proto.span,
                            "not tcp or udp",
                        );
                        if let Some(m) = did_you_mean(p, VIP_PROTOCOLS.iter().copied()) {
                            d.help = Some(format!("did you mean `{m}`?"));
                        }
                    }
                    let mut ranges = Vec::new();
                    for port in ports {
                        match self.value(port) {
                            Ty::Int => {
                                if let Some(v) = self.port_value(port) {
                                    ranges.push((v, v));
                                }
                            }
                            Ty::Range => {
                                if let Some(r) = self.port_range(port) {
                                    ranges.push(r);
                                }
                            }
                            Ty::Unknown => {}
                            t => {
                                self.mismatch(port.span, "a port or a port range", t);
                            }
                        }
                    }
                    if ports.is_empty() {
                        ranges.push((0, 65535));
                    }
                    if let (Some(ip), true) = (ip, proto_ok) {
                        self.claims.push((&s.name.name, ip, p, ranges, st.span));
                    }
                    "vip"
                }
                ServiceStmtKind::Pool(name) => {
                    match self.pools.get(name.name.as_str()) {
                        Some(p) => {
                            pool = Some(*p);
                            pool_span = Some(name.span);
                            self.used_pools.insert(&name.name);
                        }
                        None => {
                            let mut cands: Vec<&'a str> = self.pools.keys().copied().collect();
                            cands.sort_unstable();
                            let suggestion = did_you_mean(&name.name, cands);
                            // The misspelled name most likely meant the suggestion: do not also call it unused.
                            if let Some(m) = suggestion {
                                self.used_pools.insert(m);
                            }
                            let d = self.err(
                                "lbp::name::undefined",
                                format!("no pool named `{}`", name.name),
                                name.span,
                                "not defined",
                            );
                            d.help = Some(match suggestion {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => {
                                    format!("define it: `pool {} {{ backend ADDRESS }}`", name.name)
                                }
                            });
                        }
                    }
                    "pool"
                }
                ServiceStmtKind::Balance(b) => {
                    match b {
                        Balance::Named(n) => {
                            if n.name == "hash" {
                                self.err(
                                    "lbp::check::hash_fields",
                                    "`balance hash` needs the fields to hash",
                                    n.span,
                                    "no fields",
                                )
                                .set_help("write for example `balance hash(ip.src)`");
                            } else if !ALGORITHMS.contains(&n.name.as_str()) {
                                let d = self.err(
                                    "lbp::name::unknown_algorithm",
                                    format!("unknown balance algorithm `{}`", n.name),
                                    n.span,
                                    "not an algorithm",
                                );
                                d.help = Some(suggest(
                                    &n.name,
                                    ALGORITHMS.iter().copied(),
                                    "algorithms are maglev, round_robin, least_load and hash(FIELD, ...)",
                                ));
                            }
                        }
                        Balance::Hash { fields, .. } => {
                            for f in fields {
                                if !HASH_FIELDS.contains(&f.name.as_str()) {
                                    let d = self.err(
                                        "lbp::name::unknown_field",
                                        format!("cannot hash on `{}`", f.name),
                                        f.span,
                                        "not a hash field",
                                    );
                                    d.help = Some(
                                        match did_you_mean(&f.name, HASH_FIELDS.iter().copied()) {
                                            Some(m) => format!("did you mean `{m}`?"),
                                            None => format!(
                                                "hash fields are {}",
                                                HASH_FIELDS.join(", ")
                                            ),
                                        },
                                    );
                                }
                            }
                        }
                    }
                    "balance"
                }
                ServiceStmtKind::Mode { kind, to_port } => {
                    match kind.name.as_str() {
                        "nat" => {}
                        "dsr" => {
                            mode_dsr = true;
                            if let Some(p) = to_port {
                                self.err("lbp::check::dsr_port", "direct server return cannot rewrite the port", p.span, "a port rewrite")
                                    .set_help("DSR rewrites only MAC addresses; remove `to port`, or use `mode nat to port N`");
                            }
                        }
                        other => {
                            let d = self.err(
                                "lbp::name::unknown_mode",
                                format!("unknown mode `{other}`"),
                                kind.span,
                                "not a mode",
                            );
                            d.help = Some(suggest(
                                other,
                                MODES.iter().copied(),
                                "modes are `nat` (rewrite the destination) and `dsr` (rewrite the MAC only)",
                            ));
                        }
                    }
                    if let Some(p) = to_port
                        && kind.name != "dsr"
                        && self.expect_value(p, Ty::Int)
                    {
                        self.port_value(p);
                    }
                    "mode"
                }
                ServiceStmtKind::Unknown(u) => {
                    if !UNKNOWN_POLICIES.contains(&u.name.as_str()) {
                        let d = self.err(
                            "lbp::name::unknown_policy",
                            format!("`unknown` is `reset` or `balance`, not `{}`", u.name),
                            u.span,
                            "not reset or balance",
                        );
                        if let Some(m) = did_you_mean(&u.name, UNKNOWN_POLICIES.iter().copied()) {
                            d.help = Some(format!("did you mean `{m}`?"));
                        }
                    }
                    "unknown"
                }
            };
            if key != "vip"
                && let Some(prev) = seen.insert(key, st.span)
            {
                self.err("lbp::check::duplicate_statement", format!("`{key}` is given twice"), st.span, "given again here")
                    .also(prev, "first given here")
                    .set_help(if key == "pool" {
                        "a service balances to one pool: keep one `pool` line (a pool holds any number of back ends)"
                    } else {
                        "keep one of them"
                    });
            }
        }
        // Only when no `vip` line is written: a `vip` line with a bad address has its own error.
        if s.stmts
            .iter()
            .all(|s| !matches!(s.kind, ServiceStmtKind::Vip { .. }))
        {
            self.err(
                "lbp::check::missing_vip",
                format!("the service `{}` has no virtual IP", s.name.name),
                s.name.span,
                "no `vip` line",
            )
            .set_help("add `vip ADDRESS tcp port N`");
        }
        if !seen.contains_key("pool") {
            self.err(
                "lbp::check::missing_pool",
                format!("the service `{}` has no pool", s.name.name),
                s.name.span,
                "no `pool` line",
            )
            .set_help("add `pool NAME` naming the back ends to balance to");
        }
        // A virtual IP is balanced to the pool's back ends of its own family (no
        // NAT46, and DSR keeps the IP header), so every virtual IP's family needs
        // at least one back end. A service with an IPv4 and an IPv6 virtual IP
        // balances each to the back ends of its family.
        if let (Some(pool), Some(ps)) = (pool, pool_span) {
            let mut backend_fams: Vec<(Fam, Span)> = Vec::new();
            for st in &pool.stmts {
                if let PoolStmtKind::Backend(b) = &st.kind
                    && let Ty::Addr(bf) = self.value_quiet(&b.addr)
                {
                    backend_fams.push((bf, b.addr.span));
                }
            }
            if let Some(&(other, other_span)) = backend_fams.first()
                && let Some(&(vf, vspan)) = vips
                    .iter()
                    .find(|(vf, _)| backend_fams.iter().all(|(bf, _)| bf != vf))
            {
                let mode = if mode_dsr {
                    "direct server return"
                } else {
                    "NAT"
                };
                self.err(
                    "lbp::type::family_mismatch",
                    format!("the {} virtual IP has no {} back end to balance to", vf.name(), vf.name()),
                    vspan,
                    format!("{} virtual IP", vf.name()),
                )
                .also(ps, format!("pool `{}` has only {} back ends", pool.name.name, other.name()))
                .also(other_span, format!("an {} back end", other.name()))
                .set_help(format!(
                    "{mode} keeps the address family: add {} back ends to the pool, or use a pool of {} back ends for this virtual IP",
                    vf.name(),
                    vf.name()
                ));
            }
        }
    }

    /// Two services (or two lines) must not claim the same (address, protocol, port).
    pub(super) fn services_claims(&mut self) {
        let mut by_key: HashMap<(IpAddr, &str), Vec<usize>> = HashMap::new();
        for (i, c) in self.claims.iter().enumerate() {
            by_key.entry((c.1, c.2)).or_default().push(i);
        }
        let mut groups: Vec<Vec<usize>> = by_key.into_values().collect();
        groups.sort();
        for g in groups {
            for (n, &j) in g.iter().enumerate() {
                for &i in &g[..n] {
                    let (a, b) = (&self.claims[i], &self.claims[j]);
                    let overlap = b.3.iter().find_map(|&(lo, hi)| {
                        a.3.iter()
                            .find(|&&(l2, h2)| lo <= h2 && l2 <= hi)
                            .map(|&(l2, h2)| (lo.max(l2), hi.min(h2)))
                    });
                    if let Some((lo, hi)) = overlap {
                        let ports = if lo == hi {
                            format!("port {lo}")
                        } else {
                            format!("ports {lo}..{hi}")
                        };
                        let msg = format!("{} {} {ports} is claimed twice", b.1, b.2);
                        let who = if a.0 == b.0 {
                            format!("already claimed by service `{}`", a.0)
                        } else {
                            format!("claimed by service `{}`", a.0)
                        };
                        let (sa, sb) = (a.4, b.4);
                        self.err(
                            "lbp::check::duplicate_vip_entry",
                            msg,
                            sb,
                            "claimed again here",
                        )
                        .also(sa, who);
                        if let Some(d) = self.diags.last_mut() {
                            d.help = Some("each (virtual IP, protocol, port) belongs to exactly one service: narrow one of the port lists (a filter rule `... => balance SERVICE` can still send some of the traffic to the other service)".into());
                        }
                        break;
                    }
                }
            }
        }
    }
}
