//! What changes between two configurations of the appliance, and how the back
//! ends of one map onto the other's.
//!
//! A reload compares the running [`Appliance`] with the new one: services are
//! matched by name, a service's back ends by address and port, interfaces by
//! name, routes by prefix. The [`Diff`] says what was added, removed or
//! changed (what `lbp reload` reports), and [`backend_map`] tells, for each back
//! end of a service before the reload, its index after it, or that it is gone:
//! what the connection table needs so that an established connection keeps its
//! back end across the swap, and what resets the connections of a back end that
//! left. Pure: no I/O.

use std::fmt;
use std::net::IpAddr;

use crate::config::{Appliance, Backend, Service};

/// A back end's identity across configurations: its address and port.
fn key(b: &Backend) -> (IpAddr, Option<u16>) {
    (b.addr, b.port)
}

/// For each back end of `old` (by index), its index among `new`'s back ends,
/// or `None` when `new` has no back end with its address and port.
pub fn backend_map(old: &Service, new: &Service) -> Vec<Option<usize>> {
    old.backends
        .iter()
        .map(|b| new.backends.iter().position(|n| key(n) == key(b)))
        .collect()
}

/// What changed in one service that is in both configurations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceChange {
    pub name: String,
    /// Its virtual IPs, mode, algorithm, `unknown` handling, weight formula or
    /// health checks changed.
    pub settings: bool,
    /// Back ends new in this service, as `addr` or `addr:port`.
    pub backends_added: Vec<String>,
    /// Back ends no longer in it.
    pub backends_removed: Vec<String>,
    /// Back ends whose static weight changed: (back end, old, new).
    pub weights: Vec<(String, u32, u32)>,
}

impl ServiceChange {
    fn is_empty(&self) -> bool {
        !self.settings
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.weights.is_empty()
    }
}

/// The differences between two configurations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub services_changed: Vec<ServiceChange>,
    pub interfaces_changed: Vec<String>,
    pub routes_added: usize,
    pub routes_removed: usize,
    /// Filter rules (by their text, wherever they stand) new in `new`, and
    /// gone from `old`: a changed rule counts as one removed and one added.
    pub rules_added: usize,
    pub rules_removed: usize,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// Whether only static weights changed: the new weights can be published
    /// without touching anything else.
    pub fn weights_only(&self) -> bool {
        self.services_added.is_empty()
            && self.services_removed.is_empty()
            && self.interfaces_changed.is_empty()
            && self.routes_added == 0
            && self.routes_removed == 0
            && self.rules_added == 0
            && self.rules_removed == 0
            && self.services_changed.iter().all(|c| {
                !c.settings && c.backends_added.is_empty() && c.backends_removed.is_empty()
            })
    }
}

/// A back end as operators write it: `addr`, `addr:port` or `[v6]:port`.
pub fn backend_text(b: &Backend) -> String {
    match (b.addr, b.port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

fn service_change(old: &Service, new: &Service) -> ServiceChange {
    let mut c = ServiceChange {
        name: new.name.clone(),
        settings: old.vips != new.vips
            || old.mode != new.mode
            || old.algorithm != new.algorithm
            || old.unknown_balance != new.unknown_balance
            || old.formula != new.formula
            || old.health != new.health,
        ..ServiceChange::default()
    };
    for (i, to) in backend_map(old, new).into_iter().enumerate() {
        let b = &old.backends[i];
        match to {
            None => c.backends_removed.push(backend_text(b)),
            Some(j) if new.backends[j].weight != b.weight => {
                c.weights
                    .push((backend_text(b), b.weight, new.backends[j].weight));
            }
            Some(_) => {}
        }
    }
    for (j, from) in backend_map(new, old).into_iter().enumerate() {
        if from.is_none() {
            c.backends_added.push(backend_text(&new.backends[j]));
        }
    }
    c
}

/// What changed from `old` to `new`.
pub fn diff(old: &Appliance, new: &Appliance) -> Diff {
    let mut d = Diff::default();
    for s in &new.services {
        match old.services.iter().find(|o| o.name == s.name) {
            None => d.services_added.push(s.name.clone()),
            Some(o) => {
                let c = service_change(o, s);
                if !c.is_empty() {
                    d.services_changed.push(c);
                }
            }
        }
    }
    for o in &old.services {
        if !new.services.iter().any(|s| s.name == o.name) {
            d.services_removed.push(o.name.clone());
        }
    }
    for i in &new.interfaces {
        if old.interfaces.iter().find(|o| o.name == i.name) != Some(i) {
            d.interfaces_changed.push(i.name.clone());
        }
    }
    for o in &old.interfaces {
        if !new.interfaces.iter().any(|i| i.name == o.name) {
            d.interfaces_changed.push(o.name.clone());
        }
    }
    // A route by prefix, next hop and device, the device by name (indices
    // change when interfaces are reordered).
    fn route<'a>(
        app: &'a Appliance,
        r: &crate::config::Route,
    ) -> (IpAddr, u8, Option<IpAddr>, Option<&'a str>) {
        let dev = app.interfaces.get(r.dev as usize).map(|i| i.name.as_str());
        (r.prefix, r.len, r.via, dev)
    }
    d.routes_added = new
        .routes
        .iter()
        .filter(|r| !old.routes.iter().any(|o| route(old, o) == route(new, r)))
        .count();
    d.routes_removed = old
        .routes
        .iter()
        .filter(|o| !new.routes.iter().any(|r| route(old, o) == route(new, r)))
        .count();
    let mut count: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for r in new.rules.iter() {
        *count.entry(r.text.as_str()).or_default() += 1;
    }
    for r in old.rules.iter() {
        *count.entry(r.text.as_str()).or_default() -= 1;
    }
    for n in count.values() {
        if *n > 0 {
            d.rules_added += *n as usize;
        } else {
            d.rules_removed += n.unsigned_abs() as usize;
        }
    }
    d
}

impl fmt::Display for Diff {
    /// One line per change, or "no change".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no change");
        }
        let mut lines = Vec::new();
        for s in &self.services_added {
            lines.push(format!("service {s}: added"));
        }
        for s in &self.services_removed {
            lines.push(format!("service {s}: removed"));
        }
        for c in &self.services_changed {
            if c.settings {
                lines.push(format!("service {}: settings changed", c.name));
            }
            for b in &c.backends_added {
                lines.push(format!("service {}: back end {b} added", c.name));
            }
            for b in &c.backends_removed {
                lines.push(format!("service {}: back end {b} removed", c.name));
            }
            for (b, old, new) in &c.weights {
                lines.push(format!(
                    "service {}: back end {b} weight {old} -> {new}",
                    c.name
                ));
            }
        }
        for i in &self.interfaces_changed {
            lines.push(format!("interface {i}: changed"));
        }
        if self.routes_added + self.routes_removed > 0 {
            lines.push(format!(
                "routes: {} added, {} removed",
                self.routes_added, self.routes_removed
            ));
        }
        if self.rules_added + self.rules_removed > 0 {
            lines.push(format!(
                "filter rules: {} added, {} removed",
                self.rules_added, self.rules_removed
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Algorithm, Mode, Route};

    fn backend(last: u8, port: Option<u16>, weight: u32) -> Backend {
        Backend {
            addr: IpAddr::from([198, 18, 2, last]),
            port,
            weight,
            agent: None,
        }
    }

    fn service(name: &str, backends: Vec<Backend>) -> Service {
        Service {
            name: name.into(),
            vips: vec![IpAddr::from([198, 18, 0, 10])],
            mode: Mode::Dsr,
            algorithm: Algorithm::Maglev,
            unknown_balance: false,
            backends,
            formula: None,
            health: Vec::new(),
        }
    }

    fn appliance(services: Vec<Service>) -> Appliance {
        Appliance {
            services,
            ..Appliance::default()
        }
    }

    #[test]
    fn back_ends_map_by_address_and_port() {
        let old = service(
            "web",
            vec![
                backend(11, None, 1),
                backend(12, Some(8080), 1),
                backend(13, None, 1),
            ],
        );
        let new = service(
            "web",
            vec![
                backend(13, None, 5),
                backend(12, Some(8081), 1),
                backend(11, None, 1),
            ],
        );
        // .11 moved to index 2, .12's port changed (another back end), .13 to 0.
        assert_eq!(backend_map(&old, &new), vec![Some(2), None, Some(0)]);
        let d = diff(&appliance(vec![old]), &appliance(vec![new]));
        assert_eq!(d.services_changed.len(), 1);
        let c = &d.services_changed[0];
        assert_eq!(c.backends_removed, vec!["198.18.2.12:8080"]);
        assert_eq!(c.backends_added, vec!["198.18.2.12:8081"]);
        assert_eq!(c.weights, vec![("198.18.2.13".to_string(), 1, 5)]);
        assert!(!c.settings);
        assert!(!d.weights_only());
        assert_eq!(
            d.to_string(),
            "service web: back end 198.18.2.12:8081 added\n\
             service web: back end 198.18.2.12:8080 removed\n\
             service web: back end 198.18.2.13 weight 1 -> 5"
        );
    }

    #[test]
    fn weights_only_and_no_change() {
        let a = appliance(vec![service("web", vec![backend(11, None, 1)])]);
        assert!(diff(&a, &a).is_empty());
        assert_eq!(diff(&a, &a).to_string(), "no change");
        let b = appliance(vec![service("web", vec![backend(11, None, 3)])]);
        let d = diff(&a, &b);
        assert!(d.weights_only() && !d.is_empty());
        let mut c = b.clone();
        c.services[0].mode = Mode::Nat { to_port: None };
        assert!(!diff(&a, &c).weights_only());
        assert!(diff(&a, &c).services_changed[0].settings);
        let mut f = a.clone();
        f.services[0].formula = Some(crate::config::Formula::Num(1.0));
        assert!(diff(&a, &f).services_changed[0].settings);
    }

    #[test]
    fn services_interfaces_and_routes() {
        let mut a = appliance(vec![service("web", vec![]), service("dns", vec![])]);
        a.routes.push(Route {
            prefix: IpAddr::from([198, 18, 3, 0]),
            len: 24,
            via: None,
            dev: 0,
        });
        let mut b = appliance(vec![service("web", vec![]), service("ntp", vec![])]);
        b.routes.push(Route {
            prefix: IpAddr::from([198, 18, 4, 0]),
            len: 24,
            via: None,
            dev: 0,
        });
        b.interfaces.push(crate::config::Interface {
            name: "client".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![],
        });
        let d = diff(&a, &b);
        assert_eq!(d.services_added, vec!["ntp"]);
        assert_eq!(d.services_removed, vec!["dns"]);
        assert!(d.services_changed.is_empty());
        assert_eq!(d.interfaces_changed, vec!["client"]);
        assert_eq!((d.routes_added, d.routes_removed), (1, 1));
        assert!(!d.weights_only());
        assert_eq!(
            d.to_string(),
            "service ntp: added\nservice dns: removed\ninterface client: changed\n\
             routes: 1 added, 1 removed"
        );
    }
}
