//! Test packet lines as the whole policy sees them, and one packet line checked
//! on its own against a policy ([`check_packet_line`], what `lbp explain` runs:
//! the same checks and the same diagnostics as a line in a `test` block).
//!
//! The arrival interface: without `on IFACE`, a test packet arrives on the
//! interface through which the appliance would route a reply to its source. A
//! source with no route (no connected network, no `route` line, no default
//! route holds it) arrives on no interface, which a real packet never does:
//! every comparison of `in.iface` with an interface is then false (and `!=`
//! true). When the filter reads `in.iface`, such a line would test rules the
//! appliance never runs as written, so it is an error
//! (`lbp::check::no_arrival_interface`) that asks for `on IFACE`. When no rule
//! reads `in.iface`, nothing after the filter depends on the arrival interface
//! (services, local delivery and routing look at the destination), and the
//! line stands as written.

use super::checker::{Checker, Value};
use super::types::{APPLICATIONS, Fam, TCP_FLAGS, Ty, VERDICTS, list};
use super::values::contains;
use crate::ast::{Expr, ExprKind, IfaceStmtKind, Item, Lit, Packet, PacketOpt, Policy, Span};
use crate::diag::{Diagnostic, did_you_mean, suggest};
use crate::vocab::protocol_names;
use std::collections::HashMap;
use std::net::IpAddr;

/// Check one test packet line `p` against `policy` (already checked on its
/// own), exactly as `check` checks a line of a `test` block: its protocol,
/// addresses and ports, options, verdict and arrival interface. Only the
/// line's own diagnostics are returned, with the spans `p` has; a diagnostic
/// may also point into the policy (the rule that reads `in.iface`).
pub fn check_packet_line(policy: &Policy, p: &Packet) -> Vec<Diagnostic> {
    check_packet_line_with(policy, p, APPLICATIONS)
}

/// [`check_packet_line`] where `app NAME` may name the applications `apps`
/// (see [`super::check_with`]).
pub fn check_packet_line_with(policy: &Policy, p: &Packet, apps: &[&str]) -> Vec<Diagnostic> {
    let mut c = Checker {
        apps: Some(apps),
        ..Checker::default()
    };
    c.collect(policy);
    c.diags.clear();
    c.packet(p);
    c.arrivals(policy, std::iter::once(p));
    c.diags
}

/// How deep a chain of consts naming consts is followed (a cycle is reported
/// elsewhere; this only has to stop).
const MAX_CONST_CHAIN: u32 = 64;

impl<'a> Checker<'a> {
    pub(super) fn packet(&mut self, p: &'a Packet) {
        let proto = p.proto.name.as_str();
        let known: Vec<&str> = protocol_names().collect();
        if !known.contains(&proto) {
            let d = self.err(
                "lbp::name::unknown_protocol",
                format!("unknown protocol `{proto}`"),
                p.proto.span,
                "not a protocol",
            );
            d.help = Some(suggest(
                proto,
                known.iter().copied(),
                "test packets are tcp, udp, icmp or icmpv6",
            ));
        }
        let has_ports = matches!(proto, "tcp" | "udp");
        let mut fams = Vec::new();
        for ep in [&p.src, &p.dst] {
            match self.value(&ep.addr) {
                Ty::Addr(f) => fams.push((f, ep.addr.span)),
                Ty::Unknown => {}
                t => {
                    self.mismatch(ep.addr.span, "an address", t);
                }
            }
            match (&ep.port, has_ports) {
                (Some(port), true) if self.expect_value(port, Ty::Int) => {
                    self.port_value(port);
                }
                (Some(port), false) if known.contains(&proto) => {
                    self.err(
                        "lbp::check::port_not_applicable",
                        format!("{proto} has no ports"),
                        port.span,
                        "a port",
                    )
                    .set_help("remove the `:PORT`");
                }
                (None, true) => {
                    self.err(
                        "lbp::check::missing_port",
                        format!("a {proto} test packet needs a port"),
                        ep.span,
                        "no port",
                    )
                    .set_help("write ADDRESS:PORT, or [IPv6]:PORT");
                }
                _ => {}
            }
        }
        if let [(a, _), (b, bs)] = fams[..] {
            if a != b {
                self.err(
                    "lbp::type::family_mismatch",
                    format!(
                        "the packet goes from an {} to an {} address",
                        a.name(),
                        b.name()
                    ),
                    bs,
                    format!("{} address", b.name()),
                )
                .also(p.src.addr.span, format!("{} address", a.name()))
                .set_help(
                    "a packet's source and destination are of one family: both IPv4 or both IPv6",
                );
            } else if proto == "icmp" && a == Fam::V6 {
                self.err(
                    "lbp::type::family_mismatch",
                    "ICMP over IPv6 is `icmpv6`",
                    p.proto.span,
                    "`icmp` is ICMP for IPv4",
                )
                .also(bs, "an IPv6 address")
                .set_help("write `icmpv6`");
            } else if proto == "icmpv6" && a == Fam::V4 {
                self.err(
                    "lbp::type::family_mismatch",
                    "ICMPv6 needs IPv6 addresses",
                    p.proto.span,
                    "`icmpv6` is ICMP for IPv6",
                )
                .also(bs, "an IPv4 address")
                .set_help("write `icmp`");
            }
        }
        let mut seen: HashMap<String, Span> = HashMap::new();
        for o in &p.opts {
            let (key, span) = match o {
                PacketOpt::Flag(f) => {
                    if !TCP_FLAGS.contains(&f.name.as_str()) {
                        let d = self.err(
                            "lbp::name::unknown_flag",
                            format!("unknown option or TCP flag `{}`", f.name),
                            f.span,
                            "not a flag",
                        );
                        d.help = Some(
                            match did_you_mean(
                                &f.name,
                                TCP_FLAGS
                                    .iter()
                                    .copied()
                                    .chain(["type", "code", "ttl", "len", "on"]),
                            ) {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => "TCP flags are syn, ack, fin, rst, psh and urg".into(),
                            },
                        );
                    } else if proto != "tcp" && known.contains(&proto) {
                        self.err(
                            "lbp::check::flag_not_applicable",
                            format!("{proto} has no TCP flags"),
                            f.span,
                            "a TCP flag",
                        )
                        .set_help(format!("remove `{}`, or make the packet `tcp`", f.name));
                    }
                    (f.name.clone(), f.span)
                }
                PacketOpt::Type(e) | PacketOpt::Code(e) => {
                    let key = if matches!(o, PacketOpt::Type(_)) {
                        "type"
                    } else {
                        "code"
                    };
                    if !proto.starts_with("icmp") && known.contains(&proto) {
                        self.err(
                            "lbp::check::option_not_applicable",
                            format!("`{key}` is for ICMP packets"),
                            e.span,
                            "not ICMP",
                        );
                    } else if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 255, format!("an ICMP {key}").as_str());
                    }
                    (key.to_string(), e.span)
                }
                PacketOpt::Ttl(e) => {
                    if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 255, "a TTL");
                    }
                    ("ttl".to_string(), e.span)
                }
                PacketOpt::Len(e) => {
                    if self.expect_value(e, Ty::Int) {
                        self.int_bounds(e, 0, 65535, "a packet length");
                    }
                    ("len".to_string(), e.span)
                }
                PacketOpt::On(i) => {
                    self.iface_ref(i);
                    ("on".to_string(), i.span)
                }
            };
            if let Some(prev) = seen.insert(key.clone(), span) {
                self.err(
                    "lbp::check::duplicate_option",
                    format!("`{key}` is given twice"),
                    span,
                    "again here",
                )
                .also(prev, "first here")
                .set_help("keep one of them");
            }
        }
        let v = &p.verdict;
        match (v.kind.name.as_str(), &v.arg) {
            ("balance", Some(s)) => self.service_ref(s),
            ("app", Some(n)) => self.app_ref(n),
            ("app", None) => {
                let apps = list(self.apps(), "or");
                self.err(
                    "lbp::check::app_name",
                    "`app` needs the application expected to take the packet",
                    v.span,
                    "no application",
                )
                .set_help(format!("write `=> app NAME`: {apps}"));
            }
            ("forward", Some(i)) => {
                self.iface_ref(i);
            }
            ("balance", None) => {
                self.err(
                    "lbp::check::balance_service",
                    "`balance` needs the service expected to take the packet",
                    v.span,
                    "no service",
                )
                .set_help("write `=> balance SERVICE`");
            }
            ("forward", None) => {
                self.err(
                    "lbp::check::forward_dev",
                    "`forward` needs the interface the packet is expected to leave by",
                    v.span,
                    "no interface",
                )
                .set_help("write `=> forward dev INTERFACE`");
            }
            (k, _) if VERDICTS.contains(&k) => {}
            (k, _) => {
                let d = self.err(
                    "lbp::name::unknown_verdict",
                    format!("unknown verdict `{k}`"),
                    v.kind.span,
                    "not a verdict",
                );
                d.help = Some(match did_you_mean(k, VERDICTS.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None if k == "accept" => "`accept` only ends the filter; a test expects where the packet ends up: balance SERVICE, local, forward dev INTERFACE, drop, reset, expire or app NAME".into(),
                    None => "verdicts are drop, reset, local, balance SERVICE, forward dev INTERFACE, expire and app NAME".into(),
                });
            }
        }
    }

    /// The arrival interface check (see the module documentation) on every
    /// packet line of `packets`.
    pub(super) fn arrivals(
        &mut self,
        policy: &'a Policy,
        packets: impl Iterator<Item = &'a Packet>,
    ) {
        let Some(reads) = reads_in_iface(policy) else {
            return;
        };
        let mut networks: Vec<(IpAddr, u32)> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for item in &policy.items {
            match item {
                Item::Interface(i) => {
                    names.push(&i.name.name);
                    for s in &i.stmts {
                        if let IfaceStmtKind::Address(addrs) = &s.kind {
                            networks.extend(addrs.iter().filter_map(|a| self.prefix_of(a, 0)));
                        }
                    }
                }
                Item::Route(r) => networks.extend(self.prefix_of(&r.prefix, 0)),
                _ => {}
            }
        }
        for p in packets {
            if p.opts.iter().any(|o| matches!(o, PacketOpt::On(_))) {
                continue;
            }
            let Some(src) = self.addr_of(&p.src.addr, 0) else {
                continue;
            };
            if networks.iter().any(|&(n, l)| contains(n, l, src)) {
                continue;
            }
            let help = match names.as_slice() {
                [] => {
                    "add an interface, and `on IFACE` to say the packet arrives on it".to_string()
                }
                [one] => format!(
                    "write `on {one}` to say where the packet arrives, or add a route to its source"
                ),
                many => format!(
                    "write `on IFACE` ({}) to say where the packet arrives, or add a route to its source",
                    many.join(", ")
                ),
            };
            self.err(
                "lbp::check::no_arrival_interface",
                format!(
                    "the source {src} has no route, so this packet would arrive on no interface, and the filter reads `in.iface`"
                ),
                p.src.addr.span,
                "no route to this source",
            )
            .also(reads, "the arrival interface is read here")
            .set_help(help);
        }
    }

    /// A prefix, literal or through consts.
    fn prefix_of(&self, e: &Expr, depth: u32) -> Option<(IpAddr, u32)> {
        match &e.kind {
            ExprKind::Lit(Lit::Prefix { addr, len }) => Some((*addr, *len)),
            ExprKind::Paren(x) => self.prefix_of(x, depth),
            ExprKind::Name(n) if depth < MAX_CONST_CHAIN => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.prefix_of(&c.value, depth + 1),
                _ => None,
            },
            _ => None,
        }
    }

    /// An address, literal or through consts.
    fn addr_of(&self, e: &Expr, depth: u32) -> Option<IpAddr> {
        match &e.kind {
            ExprKind::Lit(Lit::Addr(a)) => Some(*a),
            ExprKind::Paren(x) => self.addr_of(x, depth),
            ExprKind::Name(n) if depth < MAX_CONST_CHAIN => match self.values.get(n.as_str()) {
                Some(Value::Const(c)) => self.addr_of(&c.value, depth + 1),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Where the filter first reads `in.iface`, if it does.
fn reads_in_iface(policy: &Policy) -> Option<Span> {
    policy
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Filter(f) => Some(f),
            _ => None,
        })
        .flat_map(|f| &f.rules)
        .find_map(|r| field_span(&r.cond, "in.iface"))
}

/// The span of the first use of field `name` in `e`.
fn field_span(e: &Expr, name: &str) -> Option<Span> {
    match &e.kind {
        ExprKind::Field(f) if f == name => Some(e.span),
        ExprKind::Paren(x) | ExprKind::Not(x) | ExprKind::Neg(x) => field_span(x, name),
        ExprKind::And(xs) | ExprKind::Or(xs) | ExprKind::Set(xs) => {
            xs.iter().find_map(|x| field_span(x, name))
        }
        ExprKind::Cmp(a, _, b) | ExprKind::In(a, b) => {
            field_span(a, name).or_else(|| field_span(b, name))
        }
        ExprKind::Arith(a, rest) => {
            field_span(a, name).or_else(|| rest.iter().find_map(|(_, x)| field_span(x, name)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
interface lan { address 198.18.1.1/24 }
interface wan { address 198.18.10.1/24 }
service web { vip 198.18.1.10 tcp port 80\n pool p }
pool p { backend 198.18.1.11 }
filter {
    in.iface == wan && tcp.dport == 22 => drop
}
";

    /// The errors of `policy` with a test of one packet line.
    fn codes(policy: &str, line: &str) -> Vec<&'static str> {
        let src = format!("{policy}test \"t\" {{\n    {line}\n}}\n");
        let a = crate::analyze(&src);
        a.diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code)
            .collect()
    }

    #[test]
    fn a_source_without_route_needs_on_when_the_filter_reads_in_iface() {
        let line = "tcp 203.0.113.5:40000 -> 198.18.1.1:22 syn => drop";
        assert_eq!(codes(POLICY, line), ["lbp::check::no_arrival_interface"]);
        let on = "tcp 203.0.113.5:40000 -> 198.18.1.1:22 syn on wan => drop";
        assert!(codes(POLICY, on).is_empty());
        // A routed source arrives where its route leaves.
        let routed = "tcp 198.18.10.5:40000 -> 198.18.1.1:22 syn => drop";
        assert!(codes(POLICY, routed).is_empty());
        let with_default = format!("{POLICY}route 0.0.0.0/0 via 198.18.10.254\n");
        assert!(codes(&with_default, line).is_empty());
        // The arrival interface changes nothing without a rule that reads it.
        let plain = POLICY.replace("in.iface == wan && ", "");
        assert!(codes(&plain, line).is_empty());
        // Through consts too.
        let consts = "const net = 198.18.20.0/24\nconst client = 198.18.20.7\n";
        let via_const = format!("{consts}{POLICY}route net via 198.18.10.254\n");
        let l = "tcp client:40000 -> 198.18.1.1:22 syn => drop";
        assert!(codes(&via_const, l).is_empty());
        let unrouted = format!("{consts}{POLICY}");
        assert_eq!(codes(&unrouted, l), ["lbp::check::no_arrival_interface"]);
    }

    #[test]
    fn one_line_is_checked_as_in_a_test_block() {
        let policy = crate::parse::parse(POLICY).policy;
        let line = |l: &str| {
            let src = format!("test \"t\" {{\n{l}\n}}\n");
            let parsed = crate::parse::parse(&src);
            assert!(parsed.diagnostics.is_empty(), "{l}");
            let Some(Item::Test(t)) = parsed.policy.items.first() else {
                panic!("{l}")
            };
            let mut codes: Vec<&str> = check_packet_line(&policy, &t.packets[0])
                .iter()
                .map(|d| d.code)
                .collect();
            codes.sort_unstable();
            codes
        };
        assert!(line("tcp 198.18.1.5:40000 -> 198.18.1.10:80 syn => balance web").is_empty());
        assert_eq!(
            line("tcp 198.18.1.5:40000 -> [2001:db8::1]:80 syn => drop"),
            ["lbp::type::family_mismatch"]
        );
        assert_eq!(
            line("tcp 198.18.1.5 -> 198.18.1.10:80 syn => drop"),
            ["lbp::check::missing_port"]
        );
        assert_eq!(
            line("tcp 198.18.1.5:1 -> 198.18.1.10:80 ttl 3 ttl 4 => drop"),
            ["lbp::check::duplicate_option"]
        );
        assert_eq!(
            line("tcp 198.18.1.5:1 -> 198.18.1.10:80 => balance nope"),
            ["lbp::name::undefined"]
        );
        assert_eq!(
            line("tcp 203.0.113.5:1 -> 198.18.1.10:80 => drop"),
            ["lbp::check::no_arrival_interface"]
        );
    }
}
