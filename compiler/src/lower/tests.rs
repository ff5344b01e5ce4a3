use super::*;

/// The lowering reads every field of the language's one table, in its
/// order, as a value of the field's type.
#[test]
fn every_field_of_the_language_lowers_as_its_type() {
    use lbp_lang::check::{FIELDS, Ty};
    let names: Vec<&str> = FIELD_KINDS.iter().map(|(n, _)| *n).collect();
    let table: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(names, table);
    for (f, (_, kind)) in FIELDS.iter().zip(FIELD_KINDS) {
        let fits = matches!(
            (f.ty, kind),
            (Ty::Int | Ty::Iface, FieldKind::Int(..))
                | (Ty::Bool, FieldKind::Flag(_) | FieldKind::Frag)
                | (Ty::Addr(_), FieldKind::Addr(_))
                | (Ty::Mac, FieldKind::Mac(_))
        );
        assert!(fits, "{} is {:?} but lowers as {kind:?}", f.name, f.ty);
    }
}

fn lowered(src: &str) -> Program {
    let a = lbp_lang::analyze(src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics.first());
    lower(&a.policy).expect("lowers")
}

#[test]
fn weight_formulas_are_lowered_with_inputs_before_consts() {
    use lbp_abi::weight::{Load, weight};
    let p = lowered(
        "interface a { address 198.18.0.1/24 }
const scale = 100
const cpu = 7
pool web {
backend 198.18.0.21 weight 3
weight = weight * (1 - cpu) * scale / (1 + clients)
}
pool flat {
backend 198.18.0.22
weight = -(-2.5)
}
pool none {
backend 198.18.0.23
}
",
    );
    let f = p.pools[0].formula.as_ref().expect("a formula");
    // `cpu` is the input, not the const 7: 3 * 0.5 * 100 / 5 = 30.
    let load = Load {
        clients: 4.0,
        cpu: 0.5,
        ..Load::default()
    };
    assert_eq!(weight(f, &load, 3), Ok(30));
    let flat = p.pools[1].formula.as_ref().expect("a formula");
    assert_eq!(weight(flat, &Load::default(), 1), Ok(3));
    assert_eq!(p.pools[2].formula, None);
}

#[test]
fn health_lines_are_lowered_with_defaults() {
    let p = lowered(
        "interface a { address 198.18.0.1/24 }
const every = 500ms
pool web {
backend 198.18.0.21
health tcp port 8080 interval 1s timeout 300ms
health http port 8080 path \"/healthz\" expect 204 interval every rise 5 fall 1
health icmp
}
",
    );
    let h = &p.pools[0].health;
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].kind, HealthKind::Tcp);
    assert_eq!(h[0].port, Some(8080));
    assert_eq!((h[0].interval_us, h[0].timeout_us), (1_000_000, 300_000));
    assert_eq!((h[0].rise, h[0].fall), (2, 3));
    assert_eq!(
        h[1].kind,
        HealthKind::Http {
            path: "/healthz".into(),
            expect: Some(204)
        }
    );
    // The timeout defaults to the interval, here a const.
    assert_eq!((h[1].interval_us, h[1].timeout_us), (500_000, 500_000));
    assert_eq!((h[1].rise, h[1].fall), (5, 1));
    assert_eq!(h[2], Check::new(HealthKind::Icmp));
}

/// A formula chain too long to evaluate without a deep stack is refused
/// with an error, not a crash.
#[test]
fn a_too_long_weight_formula_is_an_error() {
    let long = vec!["1"; 300].join(" + ");
    let src = format!(
        "interface a {{ address 198.18.0.1/24 }}\npool p {{\n    backend 198.18.0.5\n    weight = weight + {long}\n}}\n"
    );
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics);
    let e = lower(&a.policy).unwrap_err();
    assert!(e.to_string().contains("weight formula"), "{e}");
    let ok = vec!["1"; 200].join(" + ");
    let src = src.replace(&long, &ok);
    let a = lbp_lang::analyze(&src);
    assert!(lower(&a.policy).is_ok());
}

/// The checker's list of weight inputs and the ABI's are the same names.
#[test]
fn weight_inputs_agree_with_the_checker() {
    let abi: Vec<&str> = Input::ALL.iter().map(|i| i.name()).collect();
    assert_eq!(abi, lbp_lang::check::WEIGHT_INPUTS);
}

#[test]
fn pools_modes_and_algorithms_are_lowered_for_the_runtime() {
    let p = lowered(
        "interface a { address 198.18.0.1/24 }
service late {
vip 198.18.0.11 udp port 53
pool dns
balance hash(ip.src, l4.dport)
mode dsr
}
pool web {
backend 198.18.0.21 weight 3 port 8081
backend 2001:db8::22 agent 5555
}
pool dns {
backend 198.18.0.31
}
service http {
vip 198.18.0.10 tcp port 80
pool web
balance round_robin
mode nat to port 8080
}
service plain {
vip 198.18.0.12 tcp port 81
pool web
}
",
    );
    assert_eq!(p.pools.len(), 2);
    let web = &p.pools[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.backends.len(), 2);
    assert_eq!(web.backends[0].addr, Addr::V4(0xc612_0015));
    assert_eq!(
        (web.backends[0].weight, web.backends[0].port),
        (3, Some(8081))
    );
    assert_eq!((web.backends[1].weight, web.backends[1].port), (1, None));
    assert_eq!(
        (web.backends[0].agent, web.backends[1].agent),
        (None, Some(5555))
    );
    // A service may name a pool declared after it.
    let late = &p.services[0];
    assert_eq!(late.pool, Some(1));
    assert_eq!(late.mode, Mode::Dsr);
    assert_eq!(late.algorithm, Algorithm::Hash);
    assert_eq!(late.hash_mask, hash_field::SRC | hash_field::DPORT);
    let http = &p.services[1];
    assert_eq!(http.pool, Some(0));
    assert_eq!(
        http.mode,
        Mode::Nat {
            to_port: Some(8080)
        }
    );
    assert_eq!(http.algorithm, Algorithm::RoundRobin);
    assert_eq!(http.hash_mask, hash_field::ALL);
    let plain = &p.services[2];
    assert_eq!(plain.mode, Mode::Nat { to_port: None });
    assert_eq!(plain.algorithm, Algorithm::Maglev);
}
