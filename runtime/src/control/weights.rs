//! A service's weights from what the control module knows of its back ends:
//! the policy's static weights, the operator's state and overrides, health, and
//! the agents' load reports through the pool's weight formula, and what an
//! HAProxy-style agent (`agent PORT`) answered ([`BackendState::apply_agent`]).
//!
//! For each back end, the first rule that applies gives its weight:
//!
//! 1. drained, in maintenance, down by its health checks, or down by its
//!    HAProxy-style agent: 0 (no new connections; what becomes of the existing
//!    ones is not a weight's business);
//! 2. a weight the operator set (`lbp set weight`): that weight;
//! 3. a percentage from its HAProxy-style agent (`75%`): that percent of the
//!    static weight, as HAProxy applies it to the configured weight, rounded
//!    and held to 65535. It stands until the agent says otherwise (an agent
//!    that does not answer changes nothing, as in HAProxy), and it wins over
//!    load reports: the back end's own agent knows its capacity best;
//! 4. a pool with a formula and a report younger than the silence limit: the
//!    formula's weight ([`lbp_abi::weight::weight`]), or the static weight when
//!    the result is undefined (counted in [`Weights::undefined`]);
//! 5. otherwise its static weight (a back end whose agent fell silent returns to
//!    it once its last report is older than the silence limit).
//!
//! And one rule for the pool: when every back end that takes connections (not
//! drained, not in maintenance, up) got 0 from rules 2 to 4, those take their
//! static weights instead, so that a pool whose back ends all report full load
//! (or whose agents all answer `0%`) still serves. Pure: the time is passed in.

use lbp_abi::weight::{Load, weight};

use crate::config::Service;

/// How long a load report counts: after this, the back end returns to its
/// static weight (five report intervals of an agent at its default 1 s).
pub const DEFAULT_SILENCE_MS: u64 = 5_000;

/// The operator's state of a back end (HAProxy's `set server ... state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admin {
    /// Takes new connections.
    #[default]
    Ready,
    /// Takes no new connections; its connections stay.
    Drain,
    /// Out of service: no new connections, and its connections are reset.
    Maint,
}

/// What the control module knows of one back end beyond the policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendState {
    pub admin: Admin,
    /// Down by its health checks (see [`super::health::Checks`]).
    pub down: bool,
    /// A weight the operator set; it wins over reports and the static weight.
    pub weight_override: Option<u32>,
    /// The last load report and when it arrived (milliseconds on the control
    /// module's clock).
    pub report: Option<(Load, u64)>,
    /// Down by its HAProxy-style agent (`down`, `fail`, `stopped`) until it
    /// answers `up`.
    pub agent_down: bool,
    /// The last percentage its HAProxy-style agent answered (`75%`): the
    /// weight is that percent of the static weight.
    pub agent_percent: Option<u32>,
}

impl BackendState {
    /// Whether the back end may take new connections at all.
    pub fn takes_connections(&self) -> bool {
        self.admin == Admin::Ready && !self.down && !self.agent_down
    }
}

/// `percent` of the static weight `weight`, rounded, held to 65535.
fn percent_of(weight: u32, percent: u32) -> u32 {
    let w = (u64::from(weight) * u64::from(percent) + 50) / 100;
    w.min(65_535) as u32
}

/// A service's computed weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Weights {
    /// One per back end of the service, same index.
    pub weights: Vec<u32>,
    /// Back ends whose formula result was undefined (they got their static
    /// weight).
    pub undefined: usize,
}

/// The weights of `svc`'s back ends, given their `states` (same index; a
/// missing state counts as the default: ready, up, no report) at time `now_ms`,
/// reports older than `silence_ms` ignored. See the module documentation.
pub fn weights(svc: &Service, states: &[BackendState], now_ms: u64, silence_ms: u64) -> Weights {
    let default = BackendState::default();
    let mut out = Weights::default();
    for (i, b) in svc.backends.iter().enumerate() {
        let st = states.get(i).unwrap_or(&default);
        let w = if !st.takes_connections() {
            0
        } else if let Some(w) = st.weight_override {
            w
        } else if let Some(p) = st.agent_percent {
            percent_of(b.weight, p)
        } else {
            let fresh = st
                .report
                .filter(|&(_, at)| now_ms.saturating_sub(at) < silence_ms);
            match (&svc.formula, fresh) {
                (Some(f), Some((load, _))) => match weight(f, &load, b.weight) {
                    Ok(w) => w,
                    Err(_) => {
                        out.undefined += 1;
                        b.weight
                    }
                },
                _ => b.weight,
            }
        };
        out.weights.push(w);
    }
    let serving = |i: usize| states.get(i).unwrap_or(&default).takes_connections();
    let any_serving = (0..svc.backends.len()).any(serving);
    if any_serving && out.weights.iter().all(|&w| w == 0) {
        for (i, b) in svc.backends.iter().enumerate() {
            if serving(i) {
                out.weights[i] = b.weight;
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Algorithm, Backend, Mode};
    use lbp_abi::weight::{Formula, Input};
    use std::net::IpAddr;

    /// A service "web" with back ends 198.18.2.LAST of the given static
    /// weights and the formula `weight * (1 - cpu) * 10` (the steering tests
    /// use it too).
    pub(crate) fn svc_with(backends: &[(u8, u32)]) -> Service {
        let f = Formula::Mul(
            Box::new(Formula::Mul(
                Box::new(Formula::Input(Input::Weight)),
                Box::new(Formula::Sub(
                    Box::new(Formula::Num(1.0)),
                    Box::new(Formula::Input(Input::Cpu)),
                )),
            )),
            Box::new(Formula::Num(10.0)),
        );
        Service {
            name: "web".into(),
            vips: vec![IpAddr::from([198, 18, 0, 10])],
            mode: Mode::Dsr,
            algorithm: Algorithm::Maglev,
            unknown_balance: false,
            backends: backends
                .iter()
                .map(|&(last, weight)| Backend {
                    addr: IpAddr::from([198, 18, 2, last]),
                    port: None,
                    weight,
                    agent: None,
                })
                .collect(),
            formula: Some(f),
            health: Vec::new(),
        }
    }

    /// Three back ends of static weights 1, 2, 3.
    fn svc() -> Service {
        svc_with(&[(1, 1), (2, 2), (3, 3)])
    }

    fn report(cpu: f64, at: u64) -> Option<(Load, u64)> {
        Some((
            Load {
                cpu,
                ..Load::default()
            },
            at,
        ))
    }

    #[test]
    fn static_weights_without_reports() {
        let w = weights(&svc(), &[], 0, DEFAULT_SILENCE_MS);
        assert_eq!(w.weights, vec![1, 2, 3]);
        assert_eq!(w.undefined, 0);
    }

    #[test]
    fn reports_go_through_the_formula_until_they_go_stale() {
        let mut st = vec![BackendState::default(); 3];
        st[0].report = report(0.5, 1_000);
        st[2].report = report(0.9, 1_000);
        let w = weights(&svc(), &st, 2_000, DEFAULT_SILENCE_MS);
        // 1 * 0.5 * 10 = 5; no report: 2; 3 * 0.1 * 10 = 3.
        assert_eq!(w.weights, vec![5, 2, 3]);
        // Silent for the whole limit: static again.
        let w = weights(&svc(), &st, 1_000 + DEFAULT_SILENCE_MS, DEFAULT_SILENCE_MS);
        assert_eq!(w.weights, vec![1, 2, 3]);
    }

    #[test]
    fn operator_state_health_and_overrides() {
        let mut st = vec![BackendState::default(); 3];
        st[0].admin = Admin::Drain;
        st[1].weight_override = Some(7);
        st[1].report = report(0.0, 0);
        st[2].down = true;
        let w = weights(&svc(), &st, 0, DEFAULT_SILENCE_MS);
        assert_eq!(w.weights, vec![0, 7, 0]);
        st[1].admin = Admin::Maint;
        // Nothing takes connections: all zero, and no fallback.
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![0, 0, 0]
        );
    }

    #[test]
    fn a_pool_all_at_zero_serves_by_static_weights() {
        let mut st = vec![BackendState::default(); 3];
        for s in &mut st {
            s.report = report(1.0, 0);
        }
        st[0].admin = Admin::Drain;
        let w = weights(&svc(), &st, 0, DEFAULT_SILENCE_MS);
        assert_eq!(w.weights, vec![0, 2, 3]);
    }

    #[test]
    fn an_undefined_result_keeps_the_static_weight_and_is_counted() {
        let mut s = svc();
        s.formula = Some(Formula::Div(
            Box::new(Formula::Num(1.0)),
            Box::new(Formula::Input(Input::Rps)),
        ));
        let mut st = vec![BackendState::default(); 3];
        st[1].report = report(0.0, 0);
        let w = weights(&s, &st, 0, DEFAULT_SILENCE_MS);
        assert_eq!(w.weights, vec![1, 2, 3]);
        assert_eq!(w.undefined, 1);
    }

    fn agent(line: &str) -> super::super::agent::AgentReply {
        super::super::agent::parse_agent_reply(line)
    }

    #[test]
    fn an_agent_sets_the_state_and_leaves_the_rest() {
        let mut st = BackendState::default();
        st.apply_agent(&agent("drain"));
        assert_eq!(st.admin, Admin::Drain);
        assert!(!st.takes_connections());
        st.apply_agent(&agent("75%"));
        // A percentage alone leaves the state drained.
        assert_eq!((st.admin, st.agent_percent), (Admin::Drain, Some(75)));
        st.apply_agent(&agent("ready"));
        assert!(st.takes_connections());
        assert_eq!(st.agent_percent, Some(75));
        st.apply_agent(&agent("maint"));
        assert_eq!(st.admin, Admin::Maint);
        st.apply_agent(&agent("ready"));
        // Down by the agent, up again.
        st.apply_agent(&agent("down#disk full"));
        assert!(st.agent_down && !st.takes_connections());
        st.apply_agent(&agent("50%"));
        assert!(st.agent_down);
        st.apply_agent(&agent("up"));
        assert!(!st.agent_down && st.takes_connections());
        // An empty or garbage reply changes nothing.
        let before = st.clone();
        st.apply_agent(&agent(""));
        st.apply_agent(&agent("garbage, maxconn:3"));
        assert_eq!(st, before);
    }

    #[test]
    fn the_agents_up_and_the_health_checks_up_are_apart() {
        let mut st = BackendState {
            down: true,
            ..BackendState::default()
        };
        st.apply_agent(&agent("up"));
        // The agent's `up` does not override the health checks.
        assert!(!st.takes_connections());
        st.down = false;
        assert!(st.takes_connections());
        st.apply_agent(&agent("stopped"));
        assert!(!st.takes_connections());
        assert!(!st.down);
    }

    #[test]
    fn an_agents_percentage_is_of_the_static_weight() {
        let mut st = vec![BackendState::default(); 3];
        st[0].apply_agent(&agent("50%"));
        st[1].apply_agent(&agent("150%"));
        st[2].apply_agent(&agent("fail"));
        // 50% of 1 rounds to 1; 150% of 2 is 3; down is 0.
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![1, 3, 0]
        );
        // The percentage wins over a fresh report, the override over both.
        st[1].report = report(0.9, 0);
        st[2].apply_agent(&agent("up 33%"));
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![1, 3, 1]
        );
        st[1].weight_override = Some(9);
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![1, 9, 1]
        );
        // Held to 65535.
        assert_eq!(percent_of(60_000, 200), 65_535);
        assert_eq!(percent_of(65_535, u32::MAX), 65_535);
        assert_eq!(percent_of(3, 0), 0);
        assert_eq!(percent_of(10, 75), 8);
    }

    #[test]
    fn a_pool_whose_agents_all_answer_zero_serves_by_static_weights() {
        let mut st = vec![BackendState::default(); 3];
        for s in &mut st {
            s.apply_agent(&agent("0%"));
        }
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![1, 2, 3]
        );
        st[0].apply_agent(&agent("100%"));
        assert_eq!(
            weights(&svc(), &st, 0, DEFAULT_SILENCE_MS).weights,
            vec![1, 0, 0]
        );
    }
}
