//! The control module: what the control core decides, apart from the sockets,
//! timers and processes that feed it (issue 9 of the project builds it up).
//!
//! Every decision here is a pure function or a small state machine, tested
//! without sockets: the health of a back end from its check results
//! ([`health`]), what changes between two configurations with the map of
//! back ends across a reload ([`diff`]), and a service's weights from the
//! policy, the operator's state, health and load reports ([`weights`]), and the
//! agents' load reports on the wire: authenticated, replay-protected ([`report`]),
//! what an agent measures on its back end ([`agent`]), and the steering of
//! weights by reports, published at a bounded rate ([`steer`]). At its edge:
//! the health checks' prober threads ([`probe`], with the ICMP echo check of
//! [`ping`]) and the control socket's mechanics ([`socket`]: who may connect,
//! how much and how long a request may be). The control core's loop in the `lbp` binary (reload, the operator's
//! commands, publication of generations) sits at the edge and calls these.

pub mod agent;
pub mod diff;
pub mod health;
pub(crate) mod ping;
pub mod probe;
pub mod report;
pub mod socket;
pub mod steer;
pub mod weights;
