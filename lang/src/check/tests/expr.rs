//! Expressions: types in conditions and weight formulas, comparisons and
//! membership tests, and the ranges of literals and of the fields they are
//! compared with.

use super::{and, error, one, pool, rule};

#[test]
fn an_address_compared_with_a_prefix_suggests_in() {
    assert_eq!(
        one(&rule("ip.src == 198.18.99.0/24 => drop")),
        error(
            "lbp::type::mismatch",
            "cannot compare an address with an IPv4 prefix",
            &[
                (8, "198.18.99.0/24", "this is an IPv4 prefix"),
                (8, "ip.src", "this is an address")
            ],
            "to test membership, write `ip.src in 198.18.99.0/24`",
        )
    );
}

#[test]
fn a_port_compared_with_an_address_is_a_mismatch() {
    assert_eq!(
        one(&rule("tcp.dport == 198.18.1.10 => drop")),
        error(
            "lbp::type::mismatch",
            "cannot compare an integer with an IPv4 address",
            &[
                (8, "198.18.1.10", "this is an IPv4 address"),
                (8, "tcp.dport", "this is an integer")
            ],
            None,
        )
    );
}

#[test]
fn a_condition_that_is_no_boolean_suggests_a_comparison() {
    assert_eq!(
        one(&rule("ip.src => drop")),
        error(
            "lbp::type::mismatch",
            "expected a condition (true or false), found an address",
            &[(8, "ip.src", "this is an address")],
            "compare it: `ip.src == 198.18.0.1`, or `ip.src in 198.18.0.0/15`",
        )
    );
}

#[test]
fn addresses_have_no_order() {
    assert_eq!(
        one(&rule("ip.src < 198.18.1.10 => drop")),
        error(
            "lbp::type::ordering",
            "address values have no order",
            &[(8, "ip.src < 198.18.1.10", "`<` on an address")],
            "to test a range of addresses, use `in PREFIX`",
        )
    );
}

#[test]
fn an_integer_cannot_be_in_a_prefix() {
    assert_eq!(
        one(&rule("tcp.dport in 198.18.0.0/15 => drop")),
        error(
            "lbp::type::mismatch",
            "an integer cannot be in an IPv4 prefix",
            &[
                (8, "198.18.0.0/15", "this is an IPv4 prefix"),
                (8, "tcp.dport", "this is an integer")
            ],
            None,
        )
    );
}

#[test]
fn a_fraction_compared_with_a_field_is_refused() {
    assert_eq!(
        one(&rule("ip.ttl > 63.5 => drop")),
        error(
            "lbp::type::mismatch",
            "packet fields hold integers; this is a fractional number",
            &[
                (8, "63.5", "a number with a fraction"),
                (8, "ip.ttl", "an integer")
            ],
            "compare with an integer: `ip.ttl > 63.5` is `ip.ttl >= 64`",
        )
    );
}

#[test]
fn arithmetic_in_a_filter_rule_gives_the_value() {
    assert_eq!(
        one(&rule("tcp.dport == 80 + 1 => drop")),
        error(
            "lbp::type::arithmetic",
            "arithmetic is only for weight formulas",
            &[(8, "80 + 1", "arithmetic")],
            "arithmetic is not evaluated here; write the value itself: `81`",
        )
    );
}

#[test]
fn a_set_cannot_mix_addresses_and_integers() {
    assert_eq!(
        one(&and(
            "set s = { 198.18.0.1, 80 }\nfilter {\n    ip.src in s => drop\n}"
        )),
        error(
            "lbp::type::mixed_set",
            "a set cannot mix addresses with integers",
            &[
                (7, "80", "this is an integer"),
                (7, "198.18.0.1", "the set holds addresses from here")
            ],
            "a set holds one kind of value: put the integers in a set of their own",
        )
    );
}

#[test]
fn a_packet_field_in_a_const_is_refused() {
    assert_eq!(
        one(&and(
            "const c = ip.src\nfilter {\n    ip.dst == c => drop\n}"
        )),
        error(
            "lbp::type::field_here",
            "the packet field `ip.src` cannot be used here",
            &[(7, "ip.src", "a packet field")],
            "only filter rules look at packets",
        )
    );
}

#[test]
fn a_port_above_65535_can_never_match() {
    assert_eq!(
        one(&rule("tcp.dport == 70000 => drop")),
        error(
            "lbp::type::port_range",
            "port 70000 is above 65535",
            &[(8, "70000", "not a port")],
            "`tcp.dport` is between 0 and 65535; this can never match",
        )
    );
}

#[test]
fn a_port_above_65535_in_a_set_can_never_match() {
    assert_eq!(
        one(&and(
            "set ports = { 80, 70000 }\nfilter {\n    tcp.dport in ports => drop\n}"
        )),
        error(
            "lbp::type::port_range",
            "port 70000 is above 65535",
            &[
                (7, "70000", "not a port"),
                (9, "ports", "compared with `tcp.dport` here")
            ],
            "`tcp.dport` is between 0 and 65535; this can never match",
        )
    );
}

#[test]
fn a_constant_above_a_fields_largest_value_can_never_match() {
    assert_eq!(
        one(&rule("ip.ttl == 300 => drop")),
        error(
            "lbp::type::out_of_range",
            "300 is out of range for `ip.ttl`",
            &[(8, "300", "`ip.ttl` is at most 255")],
            "`ip.ttl` is between 0 and 255; this can never match",
        )
    );
}

#[test]
fn a_prefix_length_above_32_is_refused_for_ipv4() {
    assert_eq!(
        one(&rule("ip.src in 198.18.0.0/33 => drop")),
        error(
            "lbp::type::prefix_len",
            "prefix length 33 is above 32 for IPv4",
            &[(8, "198.18.0.0/33", "too long")],
            "an IPv4 prefix is at most /32",
        )
    );
}

#[test]
fn a_prefix_length_above_128_is_refused_for_ipv6() {
    assert_eq!(
        one(&rule("ip.src in 2001:db8::/129 => drop")),
        error(
            "lbp::type::prefix_len",
            "prefix length 129 is above 128 for IPv6",
            &[(8, "2001:db8::/129", "too long")],
            "an IPv6 prefix is at most /128",
        )
    );
}

#[test]
fn a_prefix_with_host_bits_suggests_its_network() {
    assert_eq!(
        one(&rule("ip.src in 198.18.1.1/24 => drop")),
        error(
            "lbp::type::host_bits",
            "the prefix 198.18.1.1/24 has host bits set",
            &[(8, "198.18.1.1/24", "host bits set")],
            "did you mean `198.18.1.0/24`?",
        )
    );
}

#[test]
fn an_empty_range_suggests_the_other_order() {
    assert_eq!(
        one(&rule("tcp.dport in 90..80 => drop")),
        error(
            "lbp::type::empty_range",
            "the range 90..80 is empty",
            &[(8, "90..80", "empty")],
            "write 80..90",
        )
    );
}

#[test]
fn an_unknown_weight_input_lists_the_inputs() {
    assert_eq!(
        one(&pool(&[
            "backend 198.18.1.11",
            "weight = weight * (1 - cpus)"
        ])),
        error(
            "lbp::name::unknown_input",
            "unknown weight input `cpus`",
            &[(4, "cpus", "not an input")],
            "did you mean `cpu`? The inputs are clients, cpu, mem, exec_ms, rps, weight",
        )
    );
}

#[test]
fn a_literal_division_by_zero_in_a_weight_formula_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "weight = cpu / 0"])),
        error(
            "lbp::type::division_by_zero",
            "division by zero",
            &[(4, "0", "always zero")],
            "divide by something that cannot be zero, such as `(1 + clients)`, or remove the division",
        )
    );
}

#[test]
fn a_comparison_is_no_weight_formula() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "weight = cpu > 1"])),
        error(
            "lbp::type::mismatch",
            "a weight formula computes a number, not a comparison",
            &[(4, "cpu > 1", "a comparison")],
            None,
        )
    );
}
