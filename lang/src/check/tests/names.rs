//! Syntax errors (through the parser), names (undefined, reserved, cyclic,
//! unused) and duplicate definitions.

use super::{all, and, error, one, pool, rule, seen, service, warning};
use crate::check::{check, check_with};
use crate::parse::parse;

#[test]
fn a_broken_statement_is_a_syntax_error_with_the_blocks_help() {
    assert_eq!(
        one(&pool(&["backend 198.18.1.11 weight"])),
        error(
            "lbp::parse::syntax",
            "expected a value, found end of line",
            &[(3, "", "expected a value")],
            "a pool block holds `backend ADDRESS [weight N] [port N] [agent N]`, `health KIND [OPTIONS]` and `weight = EXPRESSION`",
        )
    );
}

#[test]
fn a_bad_ipv4_literal_is_reported_by_the_parser() {
    assert_eq!(
        one(&rule("ip.src == 198.18.1.300 => drop")),
        error(
            "lbp::parse::bad_address",
            "`198.18.1.300` is not an IPv4 address",
            &[(8, "198.18.1.300", "here")],
            "an IPv4 address is four numbers from 0 to 255, without leading zeros",
        )
    );
}

#[test]
fn a_condition_without_operand_is_a_syntax_error() {
    assert_eq!(
        one(&rule("ip.src == => drop")),
        error(
            "lbp::parse::syntax",
            "expected `!`, `(`, `-`, `{`, a field such as `ip.src`, a name, a value or an expression, found `=`",
            &[(
                8,
                "=",
                "expected `!`, `(`, `-`, `{`, a field such as `ip.src`, a name, a value or an expression"
            )],
            "a filter rule is `CONDITION => ACTION`, for example `tcp.dport == 23 => drop`",
        )
    );
}

#[test]
fn an_undefined_pool_suggests_the_nearest_name() {
    assert_eq!(
        one(&service(&["vip 198.18.1.10 tcp port 80", "pool wbe"])),
        error(
            "lbp::name::undefined",
            "no pool named `wbe`",
            &[(5, "wbe", "not defined")],
            "did you mean `web`?",
        )
    );
}

#[test]
fn an_undefined_service_in_an_action_suggests_the_nearest_name() {
    assert_eq!(
        one(&rule("tcp.dport == 80 => balance wwx")),
        error(
            "lbp::name::undefined",
            "no service named `wwx`",
            &[(8, "wwx", "not defined")],
            "did you mean `www`?",
        )
    );
}

#[test]
fn an_undefined_set_suggests_the_nearest_name() {
    assert_eq!(
        one(&and(
            "set blocked = { 203.0.113.0/24 }\nfilter {\n    ip.src in blockd => drop\n}"
        )),
        error(
            "lbp::name::undefined",
            "`blockd` is not defined",
            &[(9, "blockd", "not defined")],
            "did you mean `blocked`?",
        )
    );
}

#[test]
fn an_undefined_interface_suggests_the_nearest_name() {
    assert_eq!(
        one(&and("route 203.0.113.0/24 dev lam")),
        error(
            "lbp::name::undefined",
            "no interface named `lam`",
            &[(7, "lam", "not defined")],
            "did you mean `lan`?",
        )
    );
}

#[test]
fn a_const_where_an_interface_is_meant_is_a_mismatch() {
    assert_eq!(
        all(&and("const gw = 198.18.1.254\nroute 203.0.113.0/24 dev gw")),
        [
            warning(
                "lbp::name::unused",
                "the const `gw` is never used",
                &[(7, "gw", "never used")],
                "use it in a rule, or remove it",
            ),
            error(
                "lbp::type::mismatch",
                "`gw` is not an interface",
                &[(8, "gw", "not an interface")],
                None,
            )
        ]
    );
}

#[test]
fn an_unknown_field_suggests_the_nearest_field() {
    assert_eq!(
        one(&rule("ip.scr == 203.0.113.1 => drop")),
        error(
            "lbp::name::unknown_field",
            "unknown field `ip.scr`",
            &[(8, "ip.scr", "not a field")],
            "did you mean `ip.src`?",
        )
    );
}

#[test]
fn an_unknown_application_suggests_a_registered_one() {
    assert_eq!(
        one(&rule("udp.dport == 7 => app ecko")),
        error(
            "lbp::name::unknown_app",
            "unknown application `ecko`",
            &[(8, "ecko", "no such application")],
            "did you mean `echo`?",
        )
    );
}

#[test]
fn check_with_knows_the_applications_a_program_registers() {
    let src = rule("udp.dport == 53 => app dns");
    let policy = parse(&src).policy;
    assert_eq!(check_with(&policy, &["echo", "icmp", "dns"]), []);
    let built_in: Vec<_> = check(&policy).iter().map(|d| seen(&src, d)).collect();
    assert_eq!(
        built_in,
        [error(
            "lbp::name::unknown_app",
            "unknown application `dns`",
            &[(8, "dns", "no such application")],
            "the switching core's applications are echo and icmp",
        )]
    );
}

#[test]
fn an_unknown_action_suggests_the_nearest_action() {
    assert_eq!(
        one(&rule("tcp.dport == 22 => dorp")),
        error(
            "lbp::name::unknown_action",
            "unknown action `dorp`",
            &[(8, "dorp", "not an action")],
            "did you mean `drop`?",
        )
    );
}

#[test]
fn a_protocol_name_cannot_be_redefined() {
    assert_eq!(
        one(&and("const tcp = 6")),
        error(
            "lbp::name::reserved",
            "`tcp` is a protocol name and cannot be redefined",
            &[(7, "tcp", "reserved name")],
            "choose another name",
        )
    );
}

#[test]
fn consts_defined_in_terms_of_each_other_are_a_cycle() {
    assert_eq!(
        one(&and(
            "const a = b\nconst b = a\nfilter {\n    ip.dst == a => drop\n}"
        )),
        error(
            "lbp::name::cycle",
            "the const `a` is defined in terms of itself",
            &[(7, "a", "defined in terms of itself")],
            "the definitions go round in a circle (`a` -> `b` -> `a`); give one of them a value",
        )
    );
}

#[test]
fn an_unused_const_is_a_warning() {
    assert_eq!(
        one(&and("const admin = 203.0.113.7")),
        warning(
            "lbp::name::unused",
            "the const `admin` is never used",
            &[(7, "admin", "never used")],
            "use it in a rule, or remove it",
        )
    );
}

#[test]
fn an_unused_pool_is_a_warning() {
    assert_eq!(
        one(&and("pool spare { backend 198.18.1.12 }")),
        warning(
            "lbp::name::unused",
            "the pool `spare` is never used",
            &[(7, "spare", "never used")],
            "use it in a service (`pool NAME`), or remove it",
        )
    );
}

#[test]
fn two_pools_of_one_name_are_a_duplicate() {
    assert_eq!(
        one(&and("pool web { backend 198.18.1.12 }")),
        error(
            "lbp::name::duplicate",
            "the name `web` is defined twice",
            &[
                (7, "web", "pool `web` defined again here"),
                (2, "web", "first defined here")
            ],
            "pool names are unique: rename one of the pools, or merge their back ends into one",
        )
    );
}

#[test]
fn interfaces_and_consts_share_one_namespace() {
    assert_eq!(
        one(&and("const lan = 198.18.1.7")),
        error(
            "lbp::name::duplicate",
            "the name `lan` is defined twice",
            &[
                (7, "lan", "const `lan` defined again here"),
                (1, "lan", "first defined here")
            ],
            "interfaces, consts and sets share one namespace: rename one of them",
        )
    );
}

#[test]
fn two_tests_of_one_name_are_a_duplicate() {
    assert_eq!(
        one(&and(
            "test \"t\" {\n    tcp 198.18.1.5:1 -> 198.18.1.10:80 => balance www\n}\ntest \"t\" {\n    tcp 198.18.1.5:2 -> 198.18.1.10:80 => balance www\n}"
        )),
        error(
            "lbp::name::duplicate",
            "the test \"t\" is defined twice",
            &[
                (10, "\"t\"", "defined again here"),
                (7, "\"t\"", "first defined here")
            ],
            "test names are unique: rename one of them",
        )
    );
}
