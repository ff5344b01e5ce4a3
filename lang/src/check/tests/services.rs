//! Services: their statements, address families and the entries they claim.

use super::{all, and, error, one, service};

#[test]
fn a_service_needs_a_virtual_ip_and_a_pool() {
    assert_eq!(
        all(&and("service bare {\n    balance maglev\n}")),
        [
            error(
                "lbp::check::missing_pool",
                "the service `bare` has no pool",
                &[(7, "bare", "no `pool` line")],
                "add `pool NAME` naming the back ends to balance to",
            ),
            error(
                "lbp::check::missing_vip",
                "the service `bare` has no virtual IP",
                &[(7, "bare", "no `vip` line")],
                "add `vip ADDRESS tcp port N`",
            )
        ]
    );
}

#[test]
fn a_service_entry_is_tcp_or_udp() {
    assert_eq!(
        one(&service(&["vip 198.18.1.10 tpc port 80", "pool web"])),
        error(
            "lbp::name::unknown_protocol",
            "a service entry is tcp or udp, not `tpc`",
            &[(4, "tpc", "not tcp or udp")],
            "did you mean `tcp`?",
        )
    );
}

#[test]
fn a_virtual_ip_is_an_address_not_a_prefix() {
    assert_eq!(
        one(&service(&["vip 198.18.1.0/24 tcp port 80", "pool web"])),
        error(
            "lbp::type::mismatch",
            "expected an address, found an IPv4 prefix",
            &[(4, "198.18.1.0/24", "this is an IPv4 prefix")],
            "a virtual IP is one address: write it without a length",
        )
    );
}

#[test]
fn a_service_has_one_pool() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "pool web"
        ])),
        error(
            "lbp::check::duplicate_statement",
            "`pool` is given twice",
            &[
                (6, "pool web", "given again here"),
                (5, "pool web", "first given here")
            ],
            "a service balances to one pool: keep one `pool` line (a pool holds any number of back ends)",
        )
    );
}

#[test]
fn an_unknown_algorithm_suggests_the_nearest_one() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "balance maglve"
        ])),
        error(
            "lbp::name::unknown_algorithm",
            "unknown balance algorithm `maglve`",
            &[(6, "maglve", "not an algorithm")],
            "did you mean `maglev`?",
        )
    );
}

#[test]
fn balance_hash_needs_its_fields() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "balance hash"
        ])),
        error(
            "lbp::check::hash_fields",
            "`balance hash` needs the fields to hash",
            &[(6, "hash", "no fields")],
            "write for example `balance hash(ip.src)`",
        )
    );
}

#[test]
fn balance_hash_takes_only_hash_fields() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "balance hash(ip.ttl)"
        ])),
        error(
            "lbp::name::unknown_field",
            "cannot hash on `ip.ttl`",
            &[(6, "ip.ttl", "not a hash field")],
            "did you mean `ip.dst`?",
        )
    );
}

#[test]
fn an_unknown_mode_suggests_the_nearest_mode() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "mode nta"
        ])),
        error(
            "lbp::name::unknown_mode",
            "unknown mode `nta`",
            &[(6, "nta", "not a mode")],
            "did you mean `nat`?",
        )
    );
}

#[test]
fn direct_server_return_cannot_rewrite_the_port() {
    assert_eq!(
        one(&service(&[
            "vip 198.18.1.10 tcp port 80",
            "pool web",
            "mode dsr to port 8080"
        ])),
        error(
            "lbp::check::dsr_port",
            "direct server return cannot rewrite the port",
            &[(6, "8080", "a port rewrite")],
            "DSR rewrites only MAC addresses; remove `to port`, or use `mode nat to port N`",
        )
    );
}

#[test]
fn an_ipv6_virtual_ip_needs_an_ipv6_back_end() {
    assert_eq!(
        one(&service(&["vip 2001:db8::10 tcp port 80", "pool web"])),
        error(
            "lbp::type::family_mismatch",
            "the IPv6 virtual IP has no IPv6 back end to balance to",
            &[
                (4, "2001:db8::10", "IPv6 virtual IP"),
                (5, "web", "pool `web` has only IPv4 back ends"),
                (2, "198.18.1.11", "an IPv4 back end")
            ],
            "NAT keeps the address family: add IPv6 back ends to the pool, or use a pool of IPv6 back ends for this virtual IP",
        )
    );
}

#[test]
fn a_port_above_65535_on_a_vip_line_is_an_error() {
    assert_eq!(
        one(&service(&["vip 198.18.1.10 tcp port 70000", "pool web"])),
        error(
            "lbp::type::port_range",
            "port 70000 is above 65535",
            &[(4, "70000", "not a port")],
            "ports are 0 to 65535",
        )
    );
}

#[test]
fn two_services_cannot_claim_one_entry() {
    assert_eq!(
        one(&and(
            "service api {\n    vip 198.18.1.10 tcp port 80\n    pool web\n}"
        )),
        error(
            "lbp::check::duplicate_vip_entry",
            "198.18.1.10 tcp port 80 is claimed twice",
            &[
                (8, "vip 198.18.1.10 tcp port 80", "claimed again here"),
                (4, "vip 198.18.1.10 tcp port 80", "claimed by service `www`")
            ],
            "each (virtual IP, protocol, port) belongs to exactly one service: narrow one of the port lists (a filter rule `... => balance SERVICE` can still send some of the traffic to the other service)",
        )
    );
}
