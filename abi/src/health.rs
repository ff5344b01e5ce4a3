//! A pool's health checks (`health KIND ...` lines), as the compiler lowers
//! them and the control module runs them against each back end.

// The defaults of the options a `health` line leaves out are HAProxy's: a
// check every 2 s, as long to answer (the timeout defaults to the interval), up
// after 2 good checks, down after 3 failed ones.

/// The default time between checks, in microseconds.
pub const DEFAULT_INTERVAL_US: u64 = 2_000_000;
/// The default `rise`: good checks in a row to come back up.
pub const DEFAULT_RISE: u32 = 2;
/// The default `fall`: failed checks in a row to go down.
pub const DEFAULT_FALL: u32 = 3;

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP connection that opens.
    Tcp,
    /// An HTTP `GET path` answered with status `expect` (any 2xx or 3xx when
    /// `None`).
    Http { path: String, expect: Option<u16> },
    /// An ICMP (or ICMPv6) echo request answered.
    Icmp,
}

/// One `health` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub kind: Kind,
    /// The port to check (`tcp`, `http`); `None`: the back end's own port (a
    /// check with neither is not run).
    pub port: Option<u16>,
    /// Microseconds between checks.
    pub interval_us: u64,
    /// Microseconds to wait for an answer.
    pub timeout_us: u64,
    /// Good checks in a row that bring a back end back.
    pub rise: u32,
    /// Failed checks in a row that take it out.
    pub fall: u32,
}

impl Check {
    /// A check of `kind` with every option at its default.
    pub fn new(kind: Kind) -> Check {
        Check {
            kind,
            port: None,
            interval_us: DEFAULT_INTERVAL_US,
            timeout_us: DEFAULT_INTERVAL_US,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}
