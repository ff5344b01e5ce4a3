//! The checks that need the whole policy (`lints.rs`), and the warnings on
//! filter rules that can never match.

use super::{and, error, one, pool, rule, service, warning};

#[test]
fn a_loopback_back_end_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 127.0.0.1"])),
        error(
            "lbp::check::backend_address",
            "the back end 127.0.0.1 is a loopback address",
            &[(3, "127.0.0.1", "a loopback address")],
            "a back end is a server's unicast address: lbp never routes to an unspecified, loopback, link-local, multicast or broadcast address",
        )
    );
}

#[test]
fn the_appliances_own_address_is_no_back_end() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.1"])),
        error(
            "lbp::check::backend_address",
            "the back end 198.18.1.1 is the appliance's own address",
            &[(3, "198.18.1.1", "an address of interface `lan`")],
            "the appliance would balance connections to itself; write the server's address",
        )
    );
}

#[test]
fn a_multicast_virtual_ip_is_an_error() {
    assert_eq!(
        one(&service(&["vip 224.0.0.5 tcp port 80", "pool web"])),
        error(
            "lbp::check::vip_address",
            "the virtual IP 224.0.0.5 is a multicast address",
            &[(4, "224.0.0.5", "a multicast address")],
            "a virtual IP is a unicast address clients connect to: lbp never routes to an unspecified, loopback, link-local, multicast or broadcast address",
        )
    );
}

#[test]
fn a_virtual_ip_on_an_interface_is_a_warning() {
    assert_eq!(
        one(&service(&["vip 198.18.1.1 tcp port 80", "pool web"])),
        warning(
            "lbp::check::vip_is_interface_address",
            "the virtual IP 198.18.1.1 is also an address of interface `lan`",
            &[(4, "198.18.1.1", "the appliance's own address")],
            "service entries come before local delivery: a packet to this address that no entry matches is reset (TCP) or dropped, never delivered to the control plane; give the service an address of its own if the appliance should stay reachable here",
        )
    );
}

#[test]
fn a_pool_of_weight_0_only_is_an_error() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11 weight 0"])),
        error(
            "lbp::check::zero_weights",
            "every back end of the pool `web` has weight 0",
            &[
                (2, "web", "no back end can take a connection"),
                (3, "0", "weight 0")
            ],
            "a back end of weight 0 takes no new connections, so a service with this pool would drop all its traffic (until an operator sets a weight); give at least one back end a weight above 0, and keep `weight 0` for back ends held in reserve",
        )
    );
}

#[test]
fn port_0_on_a_vip_line_is_an_error() {
    assert_eq!(
        one(&service(&["vip 198.18.1.10 tcp port 0", "pool web"])),
        error(
            "lbp::check::port_zero",
            "port 0 cannot be a service's port",
            &[(4, "0", "port 0")],
            "TCP and UDP port 0 is reserved: no server listens on it and no client sends to it; write the port the service answers on",
        )
    );
}

#[test]
fn a_port_twice_on_a_vip_line_is_an_error() {
    assert_eq!(
        one(&service(&["vip 198.18.1.10 tcp port 80, 80", "pool web"])),
        error(
            "lbp::check::duplicate_vip_entry",
            "port 80 of 198.18.1.10 is listed twice on this line",
            &[(4, "80", "listed again here"), (4, "80", "first here")],
            "list each port of a virtual IP once",
        )
    );
}

#[test]
fn a_dsr_back_end_behind_a_gateway_is_an_error() {
    assert_eq!(
        one(&and(
            "pool far { backend 203.0.113.11 }\nservice dsr {\n    vip 198.18.1.20 tcp port 80\n    pool far\n    mode dsr\n}\nroute 203.0.113.0/24 via 198.18.1.254"
        )),
        error(
            "lbp::check::dsr_not_connected",
            "the DSR back end 203.0.113.11 is not on a connected network",
            &[
                (
                    7,
                    "203.0.113.11",
                    "reached only through the gateway 198.18.1.254"
                ),
                (11, "mode dsr", "service `dsr` uses direct server return")
            ],
            "direct server return rewrites only the MAC address, so the appliance must reach the back end on one of its own links: give an interface an address in the back end's network (or write `route NETWORK dev INTERFACE`), or use `mode nat`",
        )
    );
}

#[test]
fn a_second_default_route_is_never_used() {
    assert_eq!(
        one(&and(
            "route 0.0.0.0/0 via 198.18.1.254\nroute 0.0.0.0/0 via 198.18.1.253"
        )),
        error(
            "lbp::check::duplicate_route",
            "a second IPv4 default route",
            &[
                (8, "route 0.0.0.0/0 via 198.18.1.253", "never used"),
                (
                    7,
                    "route 0.0.0.0/0 via 198.18.1.254",
                    "this route is always chosen"
                )
            ],
            "lbp has no route metrics and no ECMP: of two routes with the same prefix the first is always chosen; keep one of them",
        )
    );
}

#[test]
fn a_route_to_loopback_is_never_used() {
    assert_eq!(
        one(&and("route 127.0.0.0/8 via 198.18.1.254")),
        error(
            "lbp::check::martian_route",
            "the route 127.0.0.0/8 is never used",
            &[(
                7,
                "127.0.0.0/8",
                "every address in it is a loopback address"
            )],
            "routing never forwards to an unspecified, loopback, link-local, multicast or broadcast destination, whatever the routes say; remove the route",
        )
    );
}

#[test]
fn a_divisor_that_can_be_0_is_a_warning() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11", "weight = weight / cpu"])),
        warning(
            "lbp::check::may_divide_by_zero",
            "this division can divide by zero",
            &[(4, "cpu", "0 when a report says cpu = 0")],
            "for a report that makes the divisor 0 the quotient is infinite (0 / 0: not a number); a formula whose result is infinite or not a number leaves the back end at its static weight, and is counted; divide by something that stays above 0, such as `(1 + cpu)`",
        )
    );
}

#[test]
fn a_rule_after_one_that_takes_every_packet_is_unreachable() {
    assert_eq!(
        one(&and(
            "filter {\n    true => drop\n    tcp.dport == 22 => accept\n}"
        )),
        warning(
            "lbp::check::unreachable_rule",
            "this rule can never match",
            &[
                (9, "tcp.dport == 22 => accept", "unreachable"),
                (8, "true => drop", "every packet stops at this rule")
            ],
            "rules are tried in order and the first match decides; move this rule above, or narrow the earlier one",
        )
    );
}

#[test]
fn an_always_false_condition_is_a_warning() {
    assert_eq!(
        one(&rule("false => drop")),
        warning(
            "lbp::check::never_matches",
            "this rule's condition is always false",
            &[(8, "false", "always false")],
            "remove the rule",
        )
    );
}
