//! Test packet lines: protocol, addresses and ports, options, verdicts and
//! the arrival interface.

use super::{and, error, line, one};

#[test]
fn a_packet_line_without_arrow_is_a_syntax_error() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 198.18.1.10:80 => drop")),
        error(
            "lbp::parse::syntax",
            "expected `->`, found `198.18.1.10:80`",
            &[(8, "198.18.1.10:80", "expected `->`")],
            "a test line is `PROTO SRC[:PORT] -> DST[:PORT] [FLAGS] => VERDICT`, for example `tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn => balance web`",
        )
    );
}

#[test]
fn an_unknown_verdict_suggests_the_nearest_one() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 => dorp")),
        error(
            "lbp::name::unknown_verdict",
            "unknown verdict `dorp`",
            &[(8, "dorp", "not a verdict")],
            "did you mean `drop`?",
        )
    );
}

#[test]
fn accept_is_no_verdict() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 => accept")),
        error(
            "lbp::name::unknown_verdict",
            "unknown verdict `accept`",
            &[(8, "accept", "not a verdict")],
            "`accept` only ends the filter; a test expects where the packet ends up: balance SERVICE, local, forward dev INTERFACE, drop, reset, expire or app NAME",
        )
    );
}

#[test]
fn an_unknown_protocol_suggests_the_nearest_one() {
    assert_eq!(
        one(&line("tpc 198.18.1.5:1 -> 198.18.1.10:80 => drop")),
        error(
            "lbp::name::unknown_protocol",
            "unknown protocol `tpc`",
            &[(8, "tpc", "not a protocol")],
            "did you mean `tcp`?",
        )
    );
}

#[test]
fn a_tcp_packet_needs_ports() {
    assert_eq!(
        one(&line("tcp 198.18.1.5 -> 198.18.1.10:80 => drop")),
        error(
            "lbp::check::missing_port",
            "a tcp test packet needs a port",
            &[(8, "198.18.1.5", "no port")],
            "write ADDRESS:PORT, or [IPv6]:PORT",
        )
    );
}

#[test]
fn an_icmp_packet_has_no_ports() {
    assert_eq!(
        one(&line("icmp 198.18.1.5:1 -> 198.18.1.10 => drop")),
        error(
            "lbp::check::port_not_applicable",
            "icmp has no ports",
            &[(8, "1", "a port")],
            "remove the `:PORT`",
        )
    );
}

#[test]
fn a_packet_goes_between_addresses_of_one_family() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> [2001:db8::1]:80 => drop")),
        error(
            "lbp::type::family_mismatch",
            "the packet goes from an IPv4 to an IPv6 address",
            &[
                (8, "2001:db8::1", "IPv6 address"),
                (8, "198.18.1.5", "IPv4 address")
            ],
            "a packet's source and destination are of one family: both IPv4 or both IPv6",
        )
    );
}

#[test]
fn icmp_over_ipv6_is_icmpv6() {
    assert_eq!(
        one(&line("icmp 2001:db8::5 -> 2001:db8::1 => drop")),
        error(
            "lbp::type::family_mismatch",
            "ICMP over IPv6 is `icmpv6`",
            &[
                (8, "icmp", "`icmp` is ICMP for IPv4"),
                (8, "2001:db8::1", "an IPv6 address")
            ],
            "write `icmpv6`",
        )
    );
}

#[test]
fn a_udp_packet_has_no_tcp_flags() {
    assert_eq!(
        one(&line("udp 198.18.1.5:1 -> 198.18.1.10:53 syn => drop")),
        error(
            "lbp::check::flag_not_applicable",
            "udp has no TCP flags",
            &[(8, "syn", "a TCP flag")],
            "remove `syn`, or make the packet `tcp`",
        )
    );
}

#[test]
fn an_unknown_flag_suggests_the_nearest_one() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 sny => drop")),
        error(
            "lbp::name::unknown_flag",
            "unknown option or TCP flag `sny`",
            &[(8, "sny", "not a flag")],
            "did you mean `syn`?",
        )
    );
}

#[test]
fn a_ttl_above_255_is_out_of_range() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 ttl 300 => drop")),
        error(
            "lbp::type::out_of_range",
            "300 is out of range for a TTL",
            &[(8, "300", "not in 0..255")],
            "a TTL is between 0 and 255",
        )
    );
}

#[test]
fn forward_needs_the_interface() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 => forward")),
        error(
            "lbp::check::forward_dev",
            "`forward` needs the interface the packet is expected to leave by",
            &[(8, "forward", "no interface")],
            "write `=> forward dev INTERFACE`",
        )
    );
}

#[test]
fn balance_needs_the_service() {
    assert_eq!(
        one(&line("tcp 198.18.1.5:1 -> 198.18.1.10:80 => balance")),
        error(
            "lbp::check::balance_service",
            "`balance` needs the service expected to take the packet",
            &[(8, "balance", "no service")],
            "write `=> balance SERVICE`",
        )
    );
}

#[test]
fn a_source_without_route_needs_on_when_the_filter_reads_in_iface() {
    assert_eq!(
        one(&and(
            "filter {\n    in.iface == lan && tcp.dport == 22 => drop\n}\ntest \"t\" {\n    tcp 203.0.113.5:1 -> 198.18.1.10:22 => drop\n}"
        )),
        error(
            "lbp::check::no_arrival_interface",
            "the source 203.0.113.5 has no route, so this packet would arrive on no interface, and the filter reads `in.iface`",
            &[
                (11, "203.0.113.5", "no route to this source"),
                (8, "in.iface", "the arrival interface is read here")
            ],
            "write `on lan` to say where the packet arrives, or add a route to its source",
        )
    );
}
