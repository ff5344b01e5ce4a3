//! A back end's health as its checks see it: HAProxy's rise and fall counts.
//!
//! A back end starts up (the policy named it; traffic must not wait for a first
//! check). `fall` consecutive failed checks take it down: it gets no new
//! connections. `rise` consecutive good checks bring it back. A check's result
//! is all this sees: which check it was (TCP connect, HTTP status, an agent's
//! answer) and its timeout are the prober's business. Pure: no clock, no socket.

/// The defaults of `rise` and `fall` (HAProxy's 2 and 3).
pub use lbp_abi::health::{DEFAULT_FALL, DEFAULT_RISE};

/// What one check result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The back end went down: no new connections from now on.
    WentDown,
    /// The back end came back up.
    CameUp,
}

/// The health state of one back end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results against the current state (failures while up,
    /// successes while down).
    streak: u32,
}

impl Health {
    /// A back end that is up, with `rise` and `fall` (each at least 1; 0 is
    /// taken as 1).
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
        }
    }

    /// Whether the back end takes new connections.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive results against the current state so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Record one check's result; returns the change it made, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Change> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Change::CameUp } else { Change::WentDown })
    }
}

impl Default for Health {
    fn default() -> Health {
        Health::new(DEFAULT_RISE, DEFAULT_FALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state after each of `results`, as 'U' (up) or 'D' (down).
    fn trace(mut h: Health, results: &str) -> String {
        results
            .chars()
            .map(|c| {
                h.observe(c == '+');
                if h.is_up() { 'U' } else { 'D' }
            })
            .collect()
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_and_rises_after_rise() {
        let h = Health::default();
        assert!(h.is_up());
        assert_eq!(trace(h, "--+---"), "UUUUUD");
        assert_eq!(trace(h, "---+-++"), "UUDDDDU");
        // A good check while down restarts nothing but the count of goods; a
        // failure between goods starts it again.
        assert_eq!(trace(h, "---+-+-++"), "UUDDDDDDU");
    }

    #[test]
    fn reports_each_change_once() {
        let mut h = Health::new(1, 1);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), Some(Change::WentDown));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), Some(Change::CameUp));
        assert_eq!(h.streak(), 0);
    }

    #[test]
    fn zero_counts_are_one() {
        let mut h = Health::new(0, 0);
        assert_eq!(h.observe(false), Some(Change::WentDown));
        assert_eq!(h.observe(true), Some(Change::CameUp));
    }
}

/// The health of back ends that have several checks: one state per check
/// (each with its own rise and fall), and a back end is up only when all of
/// its checks are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Per check: its back end (service, index) and its state.
    checks: Vec<((usize, usize), Health)>,
}

impl Checks {
    /// One state per check: `checks` gives each check's back end (service,
    /// index), rise and fall, in the order results will name them.
    pub fn new(checks: impl IntoIterator<Item = ((usize, usize), u32, u32)>) -> Checks {
        Checks {
            checks: checks
                .into_iter()
                .map(|(b, rise, fall)| (b, Health::new(rise, fall)))
                .collect(),
        }
    }

    /// Like [`Checks::new`], but the checks of back ends for which `down`
    /// holds start down (after a reload: a back end down before stays down
    /// until `rise` checks pass).
    pub fn starting(
        checks: impl IntoIterator<Item = ((usize, usize), u32, u32)>,
        down: impl Fn((usize, usize)) -> bool,
    ) -> Checks {
        let mut c = Checks::new(checks);
        for (b, h) in &mut c.checks {
            if down(*b) {
                h.up = false;
            }
        }
        c
    }

    /// Record the result of check `i`: when it changed the state of its back
    /// end as a whole, that back end and whether it is now up. A check's
    /// change moves its back end only when all its other checks are up.
    pub fn observe(&mut self, i: usize, ok: bool) -> Option<((usize, usize), bool)> {
        let (backend, health) = self.checks.get_mut(i)?;
        let backend = *backend;
        let up = health.observe(ok)? == Change::CameUp;
        let others_up = self
            .checks
            .iter()
            .enumerate()
            .all(|(j, (b, h))| j == i || *b != backend || h.is_up());
        others_up.then_some((backend, up))
    }

    /// Whether every check of `backend` is up (true for one without checks).
    pub fn is_up(&self, backend: (usize, usize)) -> bool {
        self.checks
            .iter()
            .filter(|(b, _)| *b == backend)
            .all(|(_, h)| h.is_up())
    }
}

#[cfg(test)]
mod checks_tests {
    use super::*;

    /// A TCP check that passes and an HTTP check that fails on the same back
    /// end: the back end goes down after the HTTP check's `fall`, whatever the
    /// TCP check says, and comes back only when both are up.
    #[test]
    fn a_back_end_is_up_only_when_all_its_checks_are() {
        // Check 0: TCP on (0, 0), rise 2 fall 3; check 1: HTTP on (0, 0), rise
        // 1 fall 2; check 2: TCP on (0, 1).
        let mut c = Checks::new([((0, 0), 2, 3), ((0, 0), 1, 2), ((0, 1), 2, 3)]);
        assert!(c.is_up((0, 0)) && c.is_up((0, 1)) && c.is_up((5, 5)));
        assert_eq!(c.observe(0, true), None);
        assert_eq!(c.observe(1, false), None);
        assert_eq!(c.observe(0, true), None);
        assert_eq!(c.observe(1, false), Some(((0, 0), false)));
        // The TCP check passing keeps nothing up.
        assert_eq!(c.observe(0, true), None);
        assert!(!c.is_up((0, 0)));
        // The other back end is unaffected.
        assert!(c.is_up((0, 1)));
        // HTTP passes again (rise 1): up.
        assert_eq!(c.observe(1, true), Some(((0, 0), true)));
        // Both down, then one back: still down until both are.
        for _ in 0..3 {
            c.observe(0, false);
        }
        assert!(!c.is_up((0, 0)));
        assert_eq!(c.observe(1, false), None);
        assert_eq!(c.observe(1, false), None);
        assert_eq!(c.observe(1, true), None);
        assert_eq!(c.observe(0, true), None);
        assert_eq!(c.observe(0, true), Some(((0, 0), true)));
        // A result for a check that does not exist changes nothing.
        assert_eq!(c.observe(9, false), None);
    }
}
