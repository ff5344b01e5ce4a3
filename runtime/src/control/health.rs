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

    /// A state that is `up` or down as given, as for a back end whose several
    /// checks are combined elsewhere (it is up only when all of them are).
    pub fn known(up: bool) -> Health {
        Health {
            rise: 1,
            fall: 1,
            up,
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
