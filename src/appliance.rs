//! The runtime's view of a policy: the lowered program's interfaces, services,
//! pools and routes turned into `lbp_runtime::config::Appliance`, and the JIT
//! behind the runtime's filter call. This is the one place where the compiler's
//! IR and the runtime meet.

use lbp_compiler::ir::{Addr, Program};
use lbp_runtime::config::{Appliance, Backend, Interface, Route, Rule, Service};

/// The appliance a lowered policy describes (`src` is the policy's text, for
/// the rules' line numbers). An interface without a `mac` in the policy gets
/// all zeros here; `lbp run` fills in the bound OS interface's.
pub fn appliance(prog: &Program, src: &str) -> Appliance {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(src.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let rules = prog
        .rules
        .iter()
        .map(|r| Rule {
            line: line_starts.partition_point(|&s| s <= r.span.start) as u32,
            text: src
                .get(r.span.start..r.span.end)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    let interfaces = prog
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            mac: i.mac.unwrap_or([0; 6]),
            addrs: i.addrs.iter().map(|&(a, l)| (a.to_ip(), l)).collect(),
        })
        .collect();
    let services = prog
        .services
        .iter()
        .map(|s| {
            let mut vips: Vec<Addr> = s.entries.iter().map(|e| e.0).collect();
            vips.sort_unstable();
            vips.dedup();
            let pool = s.pool.and_then(|p| prog.pools.get(p as usize));
            let backends = pool
                .map(|p| {
                    p.backends
                        .iter()
                        .map(|b| Backend {
                            addr: b.addr.to_ip(),
                            port: b.port,
                            weight: b.weight,
                            agent: b.agent,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Service {
                name: s.name.clone(),
                vips: vips.into_iter().map(Addr::to_ip).collect(),
                mode: s.mode,
                algorithm: s.algorithm,
                unknown_balance: s.unknown_balance,
                backends,
                formula: pool.and_then(|p| p.formula.clone()),
                health: pool.map(|p| p.health.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let routes = prog
        .routes
        .iter()
        .map(|r| Route {
            prefix: r.prefix.to_ip(),
            len: r.len,
            via: r.via.map(Addr::to_ip),
            dev: r.dev,
        })
        .collect();
    Appliance {
        interfaces,
        services,
        routes,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbp_runtime::config::{Algorithm, Mode};

    #[test]
    fn the_web_policy_becomes_an_appliance() {
        let src = include_str!("../policies/web.lbp");
        let a = lbp_lang::analyze(src);
        assert!(!a.has_errors());
        let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
        let app = appliance(&prog, src);
        assert_eq!(app.interfaces.len(), 2);
        assert_eq!(app.interfaces[1].name, "servers");
        assert_eq!(
            app.interfaces[1].addrs,
            vec![("198.18.2.1".parse().unwrap(), 24)]
        );
        let http = &app.services[0];
        assert_eq!(
            http.vips,
            vec!["198.18.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            http.mode,
            Mode::Nat {
                to_port: Some(8080)
            }
        );
        assert_eq!(http.algorithm, Algorithm::Maglev);
        let weights: Vec<u32> = http.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, vec![3, 1]);
        // Connected networks first, then the routes in order.
        assert_eq!(app.routes.len(), 4);
        assert_eq!(app.routes[3].via, Some("198.18.0.254".parse().unwrap()));
        assert_eq!(app.routes[3].dev, 0);
    }
}
