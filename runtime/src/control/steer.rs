//! Weights steered by the agents' load reports: what the control core keeps
//! between reports, and when it publishes.
//!
//! [`Steering::take`] checks one datagram ([`super::report::decode`], then the
//! replay guard) and files its load under every service back end with that
//! address; [`Steering::weights_to_publish`] recomputes every service's
//! weights ([`super::weights::weights`]: reports go stale after the silence
//! limit) and returns them when they differ from the last published ones and
//! the last publication is at least the minimum gap old, so that a storm of
//! reports cannot make the control core rebuild Maglev tables without pause.
//! Pure: datagrams and times are passed in; the caller owns the socket and
//! publishes the generation.

use std::collections::HashMap;
use std::net::IpAddr;

use super::report::{ReplayGuard, decode};
use super::weights::{Admin, BackendState, weights};
use crate::config::Appliance;

/// The least time between two publications for reports, in milliseconds.
pub const DEFAULT_MIN_GAP_MS: u64 = 500;

/// What became of the reports taken so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerCounts {
    pub admitted: u64,
    pub malformed: u64,
    pub forged: u64,
    pub replayed: u64,
    pub stale: u64,
    /// Authentic reports about an address that is no back end of the policy.
    pub unknown_backend: u64,
    /// Formula results that were no number (the static weight was used).
    pub undefined: u64,
    /// Weight tables handed out for publication.
    pub publications: u64,
}

/// The control core's state for steering weights by reports.
#[derive(Debug)]
pub struct Steering {
    key: Vec<u8>,
    guard: ReplayGuard,
    /// `states[s][b]`: back end `b` of service `s`.
    states: Vec<Vec<BackendState>>,
    /// A back end's address to its (service, index) places.
    places: HashMap<IpAddr, Vec<(usize, usize)>>,
    /// The weights last handed out (the static ones at first).
    current: Vec<Vec<u32>>,
    last_publish_ms: Option<u64>,
    pub silence_ms: u64,
    pub min_gap_ms: u64,
    pub window_us: u64,
    pub counts: SteerCounts,
}

impl Steering {
    /// Steering for `app`'s services, reports authenticated with `key`.
    pub fn new(app: &Appliance, key: &[u8]) -> Steering {
        let mut places: HashMap<IpAddr, Vec<(usize, usize)>> = HashMap::new();
        for (s, svc) in app.services.iter().enumerate() {
            for (b, be) in svc.backends.iter().enumerate() {
                places.entry(be.addr).or_default().push((s, b));
            }
        }
        Steering {
            key: key.to_vec(),
            guard: ReplayGuard::new(),
            states: app
                .services
                .iter()
                .map(|s| vec![BackendState::default(); s.backends.len()])
                .collect(),
            places,
            current: app
                .services
                .iter()
                .map(|s| s.backends.iter().map(|b| b.weight).collect())
                .collect(),
            last_publish_ms: None,
            silence_ms: super::weights::DEFAULT_SILENCE_MS,
            min_gap_ms: DEFAULT_MIN_GAP_MS,
            window_us: super::report::DEFAULT_WINDOW_US,
            counts: SteerCounts::default(),
        }
    }

    /// Take one datagram, at wall-clock time `now_us` (for the replay guard)
    /// and control-core time `now_ms` (for staleness of the load).
    pub fn take(&mut self, datagram: &[u8], now_us: u64, now_ms: u64) {
        use super::report::Refused;
        let r = match decode(datagram, &self.key) {
            Ok(r) => r,
            Err(Refused::Forged) => {
                self.counts.forged += 1;
                return;
            }
            Err(_) => {
                self.counts.malformed += 1;
                return;
            }
        };
        let Some(places) = self.places.get(&r.backend) else {
            self.counts.unknown_backend += 1;
            return;
        };
        match self.guard.admit(&r, now_us, self.window_us) {
            Ok(()) => {}
            Err(Refused::Replayed) => {
                self.counts.replayed += 1;
                return;
            }
            Err(_) => {
                self.counts.stale += 1;
                return;
            }
        }
        self.counts.admitted += 1;
        // A report is as old as its own time says (a report held back on the
        // way is no fresher for arriving late), never newer than now.
        let age_ms = now_us.saturating_sub(r.sent_us) / 1_000;
        let at = now_ms.saturating_sub(age_ms);
        for &(s, b) in places {
            self.states[s][b].report = Some((r.load, at));
        }
    }

    /// The state of back end `b` of service `s` (operator state, health), for
    /// the control core to change.
    pub fn state_mut(&mut self, s: usize, b: usize) -> Option<&mut BackendState> {
        self.states.get_mut(s)?.get_mut(b)
    }

    /// Carry the back ends' state over a reload from `old` to `new`: a back end
    /// still in a service of the same name (same address and port) keeps its
    /// operator state, weight override, health and last report; a new one
    /// starts ready, up and unreported. The replay guard and the counts stay.
    /// The weights last handed out become `new`'s static ones; call
    /// [`Steering::weights_now`] for what to publish with it.
    pub fn reload(&mut self, old: &Appliance, new: &Appliance) {
        let mut states: Vec<Vec<BackendState>> = new
            .services
            .iter()
            .map(|s| vec![BackendState::default(); s.backends.len()])
            .collect();
        for (os, osvc) in old.services.iter().enumerate() {
            let Some(ns) = new.services.iter().position(|n| n.name == osvc.name) else {
                continue;
            };
            let map = super::diff::backend_map(osvc, &new.services[ns]);
            for (ob, nb) in map.into_iter().enumerate() {
                if let (Some(nb), Some(st)) = (nb, self.states.get(os).and_then(|v| v.get(ob))) {
                    states[ns][nb] = st.clone();
                }
            }
        }
        let mut places: HashMap<IpAddr, Vec<(usize, usize)>> = HashMap::new();
        for (s, svc) in new.services.iter().enumerate() {
            for (b, be) in svc.backends.iter().enumerate() {
                places.entry(be.addr).or_default().push((s, b));
            }
        }
        self.guard
            .retain(&places.keys().copied().collect::<Vec<_>>());
        self.states = states;
        self.places = places;
        self.current = new
            .services
            .iter()
            .map(|s| s.backends.iter().map(|b| b.weight).collect())
            .collect();
    }

    /// Every back end's state, `[service][backend]`.
    pub fn states(&self) -> &[Vec<BackendState>] {
        &self.states
    }

    /// The weights last handed out, `[service][backend]`.
    pub fn current(&self) -> &[Vec<u32>] {
        &self.current
    }

    /// Back ends in maintenance, `[service][backend]`: their connections are
    /// reset.
    pub fn closed(&self) -> Vec<Vec<bool>> {
        self.states
            .iter()
            .map(|v| v.iter().map(|st| st.admin == Admin::Maint).collect())
            .collect()
    }

    /// Every service's weights at `now_ms`, now, whatever the minimum gap: for
    /// an operator's command or a reload. They become the current ones.
    pub fn weights_now(&mut self, app: &Appliance, now_ms: u64) -> Vec<Vec<u32>> {
        let (next, undefined) = self.compute(app, now_ms);
        self.counts.undefined += undefined;
        self.counts.publications += 1;
        self.last_publish_ms = Some(now_ms);
        self.current = next.clone();
        next
    }

    /// The weights at `now_ms`, and how many formula results were undefined.
    fn compute(&self, app: &Appliance, now_ms: u64) -> (Vec<Vec<u32>>, u64) {
        let mut undefined = 0;
        let next = app
            .services
            .iter()
            .zip(&self.states)
            .map(|(svc, st)| {
                let w = weights(svc, st, now_ms, self.silence_ms);
                undefined += w.undefined;
                w.weights
            })
            .collect();
        (next, undefined as u64)
    }

    /// Every service's weights at `now_ms`, if they differ from the last ones
    /// handed out and the minimum gap has passed since; they are then the
    /// current ones.
    pub fn weights_to_publish(&mut self, app: &Appliance, now_ms: u64) -> Option<Vec<Vec<u32>>> {
        if let Some(last) = self.last_publish_ms
            && now_ms.saturating_sub(last) < self.min_gap_ms
        {
            return None;
        }
        let (next, undefined) = self.compute(app, now_ms);
        if next == self.current {
            return None;
        }
        self.counts.undefined += undefined;
        self.counts.publications += 1;
        self.last_publish_ms = Some(now_ms);
        self.current = next.clone();
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::report::{Report, encode};
    use lbp_abi::weight::Load;

    const KEY: &[u8] = b"a shared secret of some length";
    const T0: u64 = 1_765_051_200_000_000;

    /// One service with back ends .11 (weight 1) and .12 (weight 2), formula
    /// `weight * (1 - cpu) * 10`.
    fn app() -> Appliance {
        Appliance {
            services: vec![crate::control::weights::tests::svc_with(&[
                (11, 1),
                (12, 2),
            ])],
            ..Appliance::default()
        }
    }

    fn datagram(last: u8, cpu: f64, at: u64, key: &[u8]) -> Vec<u8> {
        encode(
            &Report {
                backend: IpAddr::from([198, 18, 2, last]),
                sent_us: at,
                load: Load {
                    cpu,
                    ..Load::default()
                },
            },
            key,
        )
    }

    #[test]
    fn reports_steer_weights_at_a_bounded_rate() {
        let a = app();
        let mut st = Steering::new(&a, KEY);
        // Nothing reported: the static weights are already current.
        assert_eq!(st.weights_to_publish(&a, 0), None);
        st.take(&datagram(11, 0.5, T0, KEY), T0, 0);
        st.take(&datagram(12, 0.0, T0, KEY), T0, 0);
        assert_eq!(st.weights_to_publish(&a, 0), Some(vec![vec![5, 20]]));
        // A new report within the gap waits; after it, it is published.
        st.take(&datagram(11, 0.9, T0 + 1, KEY), T0 + 1, 100);
        assert_eq!(st.weights_to_publish(&a, 100), None);
        assert_eq!(st.weights_to_publish(&a, 600), Some(vec![vec![1, 20]]));
        // Unchanged weights are not published again.
        assert_eq!(st.weights_to_publish(&a, 2_000), None);
        // Silent agents: back to the static weights.
        assert_eq!(st.weights_to_publish(&a, 60_000), Some(vec![vec![1, 2]]));
        assert_eq!(st.counts.admitted, 3);
        assert_eq!(st.counts.publications, 3);
    }

    /// A report held back on the way counts from when it was sent.
    #[test]
    fn a_late_report_is_as_old_as_its_time() {
        let a = app();
        let mut st = Steering::new(&a, KEY);
        // Sent 6 s before it arrives: admitted (within the replay window) but
        // already older than the silence limit.
        st.take(&datagram(11, 0.5, T0 - 6_000_000, KEY), T0, 10_000);
        assert_eq!(st.counts.admitted, 1);
        assert_eq!(st.weights_to_publish(&a, 10_000), None);
        st.take(&datagram(11, 0.5, T0 - 1_000_000, KEY), T0, 10_000);
        assert_eq!(st.weights_to_publish(&a, 10_000), Some(vec![vec![5, 2]]));
    }

    #[test]
    fn forged_replayed_stale_and_unknown_reports_change_nothing() {
        let a = app();
        let mut st = Steering::new(&a, KEY);
        st.take(&datagram(11, 0.5, T0, b"not the key at all"), T0, 0);
        st.take(&datagram(13, 0.5, T0, KEY), T0, 0);
        st.take(b"garbage", T0, 0);
        let old = T0 - 2 * crate::control::report::DEFAULT_WINDOW_US;
        st.take(&datagram(11, 0.5, old, KEY), T0, 0);
        assert_eq!(st.weights_to_publish(&a, 0), None);
        st.take(&datagram(11, 0.5, T0, KEY), T0, 0);
        st.take(&datagram(11, 0.0, T0, KEY), T0, 0);
        assert_eq!(st.weights_to_publish(&a, 0), Some(vec![vec![5, 2]]));
        let c = st.counts;
        assert_eq!(
            (
                c.forged,
                c.unknown_backend,
                c.malformed,
                c.stale,
                c.replayed,
                c.admitted
            ),
            (1, 1, 1, 1, 1, 1)
        );
    }
}
