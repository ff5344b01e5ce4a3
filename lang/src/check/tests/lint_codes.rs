//! `lints.rs`'s checks, by code: every kind of address, port, weight and
//! route each one refuses or questions.

use crate::analyze;

/// The codes of a policy's diagnostics, with their severity.
fn codes(src: &str) -> Vec<String> {
    analyze(src)
        .diagnostics
        .iter()
        .map(|d| format!("{}:{}", if d.is_error() { "E" } else { "W" }, d.code))
        .collect()
}

const BASE: &str = "interface lan { address 198.18.0.1/24 }\n\
                    interface srv { address 198.18.2.1/24, 2001:db8:2::1/64 }\n";

fn with(extra: &str) -> Vec<String> {
    codes(&format!("{BASE}{extra}"))
}

fn svc(pool_body: &str, service_extra: &str) -> Vec<String> {
    with(&format!(
        "pool p {{\n{pool_body}\n}}\nservice s {{\n vip 198.18.0.10 tcp port 80\n pool p\n{service_extra}\n}}\n"
    ))
}

#[test]
fn a_clean_policy_draws_nothing() {
    assert_eq!(svc("backend 198.18.2.11", ""), Vec::<String>::new());
    assert_eq!(svc("backend 198.18.2.11", "mode dsr"), Vec::<String>::new());
}

#[test]
fn martian_and_own_back_ends_are_errors() {
    for a in [
        "0.0.0.0",
        "127.0.0.1",
        "169.254.1.1",
        "224.0.0.5",
        "255.255.255.255",
        "198.18.2.255",
        "198.18.2.1",
    ] {
        assert_eq!(
            svc(&format!("backend {a}"), ""),
            ["E:lbp::check::backend_address"],
            "{a}"
        );
    }
}

#[test]
fn martian_virtual_ips_are_errors_and_an_interface_address_a_warning() {
    let vip = |a: &str| {
        with(&format!(
            "pool p {{ backend 198.18.2.11 }}\nservice s {{\n vip {a} tcp port 80\n pool p\n}}\n"
        ))
    };
    for a in [
        "0.0.0.0",
        "127.0.0.1",
        "239.1.1.1",
        "255.255.255.255",
        "198.18.0.255",
    ] {
        assert_eq!(vip(a), ["E:lbp::check::vip_address"], "{a}");
    }
    assert_eq!(
        vip("198.18.0.1"),
        ["W:lbp::check::vip_is_interface_address"]
    );
}

#[test]
fn ipv6_special_addresses() {
    let six = |b: &str| {
        with(&format!(
            "pool p {{ backend {b} }}\nservice s {{\n vip 2001:db8:2::80 tcp port 80\n pool p\n}}\n"
        ))
    };
    for a in ["::", "::1", "fe80::1", "ff02::1", "2001:db8:2::1"] {
        assert_eq!(six(a), ["E:lbp::check::backend_address"], "{a}");
    }
    assert_eq!(six("2001:db8:2::11"), Vec::<String>::new());
}

#[test]
fn dsr_back_ends_must_be_on_a_link() {
    let far = "backend 198.18.9.11";
    assert_eq!(svc(far, "mode dsr"), ["E:lbp::check::dsr_not_connected"]);
    // The same back end under NAT is fine (routed).
    assert_eq!(svc(far, "mode nat"), Vec::<String>::new());
    // Reached through a gateway: still an error; on a device route: fine.
    let routed = |route: &str| {
        with(&format!(
            "pool p {{ backend 198.18.9.11 }}\nservice s {{\n vip 198.18.0.10 tcp port 80\n pool p\n mode dsr\n}}\n{route}\n"
        ))
    };
    assert_eq!(
        routed("route 198.18.9.0/24 via 198.18.2.254"),
        ["E:lbp::check::dsr_not_connected"]
    );
    assert_eq!(routed("route 198.18.9.0/24 dev srv"), Vec::<String>::new());
}

#[test]
fn a_pool_of_zero_weights_is_an_error() {
    assert_eq!(
        svc(
            "backend 198.18.2.11 weight 0\nbackend 198.18.2.12 weight 0",
            ""
        ),
        ["E:lbp::check::zero_weights"]
    );
    assert_eq!(
        svc("backend 198.18.2.11 weight 0\nbackend 198.18.2.12", ""),
        Vec::<String>::new()
    );
}

#[test]
fn a_family_of_zero_weights_is_an_error_for_its_virtual_ip() {
    let mixed = |w6: &str| {
        with(&format!(
            "pool p {{\nbackend 198.18.2.11\nbackend 2001:db8:2::11{w6}\n}}\nservice s {{\n vip 198.18.0.10 tcp port 80\n vip 2001:db8:2::80 tcp port 80\n pool p\n}}\n"
        ))
    };
    assert_eq!(mixed(" weight 0"), ["E:lbp::check::zero_weights"]);
    assert_eq!(mixed(" weight 2"), Vec::<String>::new());
}

#[test]
fn port_zero_is_an_error_where_a_server_port_is_meant() {
    for (pool, service) in [
        ("backend 198.18.2.11 port 0", ""),
        ("backend 198.18.2.11\nhealth tcp port 0", ""),
        ("backend 198.18.2.11", "mode nat to port 0"),
    ] {
        assert_eq!(
            svc(pool, service),
            ["E:lbp::check::port_zero"],
            "{pool} {service}"
        );
    }
    let vip0 = with(
        "pool p { backend 198.18.2.11 }\nservice s {\n vip 198.18.0.10 udp port 0, 53\n pool p\n}\n",
    );
    assert_eq!(vip0, ["E:lbp::check::port_zero"]);
    // A range that starts at 0 is a range of ports, not port 0.
    let range = with(
        "pool p { backend 198.18.2.11 }\nservice s {\n vip 198.18.0.10 udp port 0..1023\n pool p\n}\n",
    );
    assert_eq!(range, Vec::<String>::new());
}

#[test]
fn a_port_twice_on_one_vip_line_is_an_error() {
    for ports in [
        "80, 80",
        "80, 443, 80",
        "1..100, 80",
        "8000..8100, 8050..9000",
    ] {
        let got = with(&format!(
            "pool p {{ backend 198.18.2.11 }}\nservice s {{\n vip 198.18.0.10 tcp port {ports}\n pool p\n}}\n"
        ));
        assert_eq!(got, ["E:lbp::check::duplicate_vip_entry"], "{ports}");
    }
}

#[test]
fn a_route_to_martians_only_is_an_error() {
    for r in [
        "route 224.0.0.0/4 dev lan",
        "route 239.1.0.0/16 dev lan",
        "route 127.0.0.0/8 dev lan",
        "route 169.254.0.0/16 dev lan",
        "route 0.0.0.0/8 dev lan",
        "route 255.255.255.255/32 dev lan",
        "route 198.18.0.255/32 dev lan",
        "route ff00::/8 dev srv",
        "route fe80::/64 dev srv",
        "route ::1/128 dev srv",
    ] {
        assert_eq!(
            with(&format!("{r}\n")),
            ["E:lbp::check::martian_route"],
            "{r}"
        );
    }
    for r in [
        "route 0.0.0.0/0 via 198.18.0.254",
        "route 192.0.0.0/2 dev lan",
        "route 224.0.0.0/3 dev lan",
        "route ::/0 via 2001:db8:2::fe",
        "route fe80::/9 dev srv",
        "route 198.18.0.254/32 dev lan",
    ] {
        assert_eq!(with(&format!("{r}\n")), Vec::<String>::new(), "{r}");
    }
}

#[test]
fn two_routes_of_one_prefix_are_an_error() {
    assert_eq!(
        with("route 0.0.0.0/0 via 198.18.0.254\nroute 0.0.0.0/0 via 198.18.0.253\n"),
        ["E:lbp::check::duplicate_route"]
    );
    assert_eq!(
        with("route ::/0 via 2001:db8:2::fe\nroute 0.0.0.0/0 via 198.18.0.254\n"),
        Vec::<String>::new()
    );
    // A route over a connected network is allowed (the language brief's example).
    assert_eq!(with("route 198.18.2.0/24 dev srv\n"), Vec::<String>::new());
}

#[test]
fn divisions_that_can_be_zero_are_warnings() {
    let f = |formula: &str, weights: &str| {
        svc(
            &format!("backend 198.18.2.11{weights}\nbackend 198.18.2.12\nweight = {formula}"),
            "",
        )
    };
    let warn = ["W:lbp::check::may_divide_by_zero"];
    for bad in [
        "weight / cpu",
        "100 / (1 - mem)",
        "weight * 100 / (clients + rps)",
        "100 / (exec_ms - 5)",
        "1 / (cpu * clients)",
    ] {
        assert_eq!(f(bad, ""), warn, "{bad}");
    }
    assert_eq!(f("100 / weight", " weight 0"), warn);
    for good in [
        "weight * (1 - cpu) * 100 / (1 + clients)",
        "weight * 10000 / ((10 + exec_ms) * (1 + rps / 100))",
        "100 / weight",
        "100 / (2 - cpu)",
        "weight * 100000 / (1000 + rps)",
        "100 / (0.5 + cpu * cpu)",
    ] {
        assert_eq!(f(good, ""), Vec::<String>::new(), "{good}");
    }
    // A const that is 0 is as much a division by zero as a literal.
    let z = codes(&format!(
        "{BASE}const none = 0\npool p {{\nbackend 198.18.2.11\nweight = weight / none\n}}\nservice s {{\n vip 198.18.0.10 tcp port 80\n pool p\n}}\n"
    ));
    assert_eq!(z, ["E:lbp::type::division_by_zero"]);
}
