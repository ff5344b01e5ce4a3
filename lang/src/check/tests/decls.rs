//! Declarations: interfaces, consts and sets, pools and their health checks,
//! routes.

use super::{and, error, one, pool, warning};

#[test]
fn an_interface_address_needs_its_length() {
    assert_eq!(
        one(&and("interface wan { address 203.0.113.1 }")),
        error(
            "lbp::type::missing_length",
            "an interface address needs its prefix length",
            &[(7, "203.0.113.1", "no prefix length")],
            "write the connected network's length, for example `203.0.113.1/24`",
        )
    );
}

#[test]
fn an_address_on_two_interfaces_is_an_error() {
    assert_eq!(
        one(&and("interface wan { address 198.18.1.1/24 }")),
        error(
            "lbp::check::duplicate_address",
            "the address 198.18.1.1/24 is already on interface `lan`",
            &[
                (7, "198.18.1.1/24", "used twice"),
                (1, "198.18.1.1/24", "on `lan` here")
            ],
            "an address belongs to one interface: give each interface its own address",
        )
    );
}

#[test]
fn a_statement_twice_in_an_interface_is_an_error() {
    assert_eq!(
        one(&and("interface wan {\n    mtu 1500\n    mtu 9000\n}")),
        error(
            "lbp::check::duplicate_statement",
            "`mtu` is given twice",
            &[
                (9, "mtu 9000", "given again here"),
                (8, "mtu 1500", "first given here")
            ],
            "keep one of them",
        )
    );
}

#[test]
fn an_mtu_below_68_is_out_of_range() {
    assert_eq!(
        one(&and("interface wan { mtu 40 }")),
        error(
            "lbp::type::out_of_range",
            "40 is out of range for an MTU",
            &[(7, "40", "not in 68..65535")],
            "an MTU is between 68 and 65535",
        )
    );
}

#[test]
fn a_const_cannot_hold_a_set() {
    assert_eq!(
        one(&and(
            "const ports = { 80, 443 }\nfilter {\n    tcp.dport in ports => drop\n}"
        )),
        error(
            "lbp::type::const_set",
            "a const cannot hold a set",
            &[(7, "{ 80, 443 }", "a set")],
            "write `set ports = { ... }`",
        )
    );
}

#[test]
fn the_type_of_an_empty_set_must_be_given() {
    assert_eq!(
        one(&and(
            "set none = {}\nfilter {\n    ip.src in none => drop\n}"
        )),
        error(
            "lbp::type::empty_set",
            "the type of the empty set `none` cannot be inferred",
            &[(7, "{}", "empty")],
            "give its type: `set none: prefix = {}`",
        )
    );
}

#[test]
fn an_unknown_set_type_suggests_the_nearest_type() {
    assert_eq!(
        one(&and(
            "set s: ports = { 80 }\nfilter {\n    tcp.dport in s => drop\n}"
        )),
        error(
            "lbp::type::unknown_type",
            "unknown set type `ports`",
            &[(7, "ports", "not a type")],
            "did you mean `port`?",
        )
    );
}

#[test]
fn an_element_twice_in_a_set_is_a_warning() {
    assert_eq!(
        one(&and(
            "set ports = { 80, 443, 80 }\nfilter {\n    tcp.dport in ports => drop\n}"
        )),
        warning(
            "lbp::check::duplicate_element",
            "this element is in the set twice",
            &[(7, "80", "again here"), (7, "80", "first here")],
            None,
        )
    );
}

#[test]
fn a_pool_without_back_ends_is_a_warning() {
    assert_eq!(
        one(&pool(&[])),
        warning(
            "lbp::check::empty_pool",
            "the pool `web` has no back ends",
            &[(2, "web", "no `backend` lines")],
            "traffic for a service with this pool is dropped; add `backend ADDRESS`",
        )
    );
}

#[test]
fn a_back_end_twice_in_a_pool_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "backend 198.18.1.11"])),
        error(
            "lbp::check::duplicate_backend",
            "the back end 198.18.1.11 is in the pool twice",
            &[
                (4, "198.18.1.11", "again here"),
                (3, "198.18.1.11", "first here")
            ],
            "list each back end once; to send it more traffic, give it `weight N`",
        )
    );
}

#[test]
fn a_back_end_is_an_address_not_a_prefix() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.0/24"])),
        error(
            "lbp::type::mismatch",
            "expected an address, found an IPv4 prefix",
            &[(3, "198.18.1.0/24", "this is an IPv4 prefix")],
            "a back end is one host: write its address without a length",
        )
    );
}

#[test]
fn a_weight_above_65535_is_out_of_range() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11 weight 70000"])),
        error(
            "lbp::type::out_of_range",
            "70000 is out of range for a weight",
            &[(3, "70000", "not in 0..65535")],
            "a weight is between 0 and 65535",
        )
    );
}

#[test]
fn an_option_twice_on_a_back_end_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11 weight 2 weight 3"])),
        error(
            "lbp::check::duplicate_option",
            "`weight` is given twice",
            &[(3, "weight", "again here"), (3, "weight", "first here")],
            "keep one of them",
        )
    );
}

#[test]
fn an_agent_port_of_0_is_out_of_range() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11 agent 0"])),
        error(
            "lbp::type::port_range",
            "agent port 0 is out of range",
            &[(3, "0", "not 1 to 65535")],
            "an agent listens on a port from 1 to 65535, e.g. `agent 5555`",
        )
    );
}

#[test]
fn an_unknown_health_check_suggests_the_nearest_kind() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "health tpc"])),
        error(
            "lbp::name::unknown_health",
            "unknown health check `tpc`",
            &[(4, "tpc", "not a health check")],
            "did you mean `tcp`?",
        )
    );
}

#[test]
fn an_icmp_health_check_has_no_port() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "health icmp port 80"])),
        error(
            "lbp::check::option_not_applicable",
            "`port` does not apply to `health icmp`",
            &[(4, "port", "not for this check")],
            "an icmp check has no port",
        )
    );
}

#[test]
fn an_http_health_check_path_starts_with_a_slash() {
    assert_eq!(
        one(&pool(&[
            "backend 198.18.1.11",
            "health http path \"status\""
        ])),
        error(
            "lbp::check::bad_path",
            "an HTTP health check path starts with `/`",
            &[(4, "\"status\"", "no leading `/`")],
            "write \"/status\"",
        )
    );
}

#[test]
fn an_http_status_above_599_is_out_of_range() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "health http expect 700"])),
        error(
            "lbp::type::out_of_range",
            "700 is out of range for an HTTP status",
            &[(4, "700", "not in 100..599")],
            "an HTTP status is between 100 and 599",
        )
    );
}

#[test]
fn a_health_check_interval_of_zero_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "health tcp interval 0s"])),
        error(
            "lbp::type::out_of_range",
            "the interval must be longer than zero",
            &[(4, "0s", "zero")],
            None,
        )
    );
}

#[test]
fn a_health_check_timeout_longer_than_its_interval_is_a_warning() {
    assert_eq!(
        one(&pool(&[
            "backend 198.18.1.11",
            "health tcp interval 1s timeout 2s"
        ])),
        warning(
            "lbp::check::timeout_exceeds_interval",
            "the health check timeout is longer than its interval",
            &[(4, "2s", "longer than the interval")],
            "checks would overlap; make the timeout at most the interval",
        )
    );
}

#[test]
fn a_route_needs_a_gateway_or_an_interface() {
    assert_eq!(
        one(&and("route 203.0.113.0/24")),
        error(
            "lbp::check::route_target",
            "a route needs `via ADDRESS` or `dev INTERFACE`",
            &[(7, "route 203.0.113.0/24", "no target")],
            "write `route PREFIX via GATEWAY` or `route PREFIX dev INTERFACE`",
        )
    );
}

#[test]
fn a_routes_gateway_must_be_on_a_connected_network() {
    assert_eq!(
        one(&and("route 203.0.113.0/24 via 198.18.9.1")),
        error(
            "lbp::check::unreachable_gateway",
            "the gateway 198.18.9.1 is not on any interface's connected network",
            &[(7, "198.18.9.1", "not reachable")],
            "a gateway must be a neighbour, on 198.18.1.0/24: fix the address, or give the interface an address in the gateway's network",
        )
    );
}

#[test]
fn a_route_to_an_address_suggests_the_host_route() {
    assert_eq!(
        one(&and("route 203.0.113.7 via 198.18.1.254")),
        error(
            "lbp::type::mismatch",
            "expected a prefix, found an IPv4 address",
            &[(7, "203.0.113.7", "this is an IPv4 address")],
            "a host route has the full length: `203.0.113.7/32`",
        )
    );
}

#[test]
fn an_ipv6_route_cannot_go_via_an_ipv4_gateway() {
    assert_eq!(
        one(&and("route 2001:db8::/32 via 198.18.1.254")),
        error(
            "lbp::type::family_mismatch",
            "an IPv6 route cannot go via an IPv4 gateway",
            &[
                (7, "198.18.1.254", "IPv4 gateway"),
                (7, "2001:db8::/32", "IPv6 prefix")
            ],
            "an IPv6 route needs the IPv6 address of a neighbour as its gateway",
        )
    );
}
