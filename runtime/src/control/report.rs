//! Load reports from the agents on the back ends: their wire form, their
//! authentication, and the guard against replays.
//!
//! A report is one UDP datagram of text, two lines:
//!
//! ```text
//! lbp-report 1 198.18.2.11 1765051200123456 clients=12 cpu=0.42 mem=0.3 exec_ms=8.5 rps=230
//! 5f1c...(64 hex digits)
//! ```
//!
//! The first line: the format's name and version, the back end the report is
//! about, the time the agent sent it (microseconds since the Unix epoch, which
//! is also its sequence number: strictly increasing per agent), then the load
//! as `key=value` (each of the five once; all numbers finite and not negative,
//! `cpu` and `mem` at most 1). The second line is HMAC-SHA-256 of the first
//! line's bytes (without its newline) under the secret shared by the agents and
//! the appliance, in lower-case hex.
//!
//! [`decode`] checks the size, the MAC (in constant time, before reading
//! anything else) and the syntax. [`ReplayGuard::admit`] then refuses a report
//! not newer than the last one admitted for the same back end (a replay) and
//! one sent too long before or after the control module's clock (stale). A
//! refused report changes nothing; the caller counts it by [`Refused`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use lbp_abi::weight::{BadValue, Load};
use sha2::Sha256;

/// The largest datagram taken: anything longer is malformed.
pub const MAX_REPORT: usize = 512;

/// How far a report's time may be from the control module's clock (both ways),
/// in microseconds: 30 s.
pub const DEFAULT_WINDOW_US: u64 = 30_000_000;

const MAGIC: &str = "lbp-report";
const VERSION: &str = "1";

/// One load report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// The back end it is about.
    pub backend: IpAddr,
    /// When the agent sent it, in microseconds since the Unix epoch.
    pub sent_us: u64,
    pub load: Load,
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too long, not two lines, not text, or a field out of form.
    Malformed(String),
    /// The MAC does not match: a forged report, or another secret.
    Forged,
    /// Not newer than the last report admitted for its back end.
    Replayed,
    /// Sent too long before (or after) the control module's time.
    Stale,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Malformed(why) => write!(f, "malformed report: {why}"),
            Refused::Forged => write!(f, "report with a wrong MAC"),
            Refused::Replayed => write!(f, "replayed report"),
            Refused::Stale => write!(f, "stale report"),
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Number formatting that reads back to the same value, with an exponent for
/// very large or small values (so that any finite load fits a report).
fn num(v: f64) -> String {
    format!("{v:?}")
}

/// The datagram of `r` under `key`.
pub fn encode(r: &Report, key: &[u8]) -> Vec<u8> {
    let mut line = format!("{MAGIC} {VERSION} {} {}", r.backend, r.sent_us);
    for (k, v) in Load::KEYS.iter().zip(r.load.values()) {
        line += &format!(" {k}={}", num(v));
    }
    let mut m = mac(key);
    m.update(line.as_bytes());
    let tag = hex(&m.finalize().into_bytes());
    format!("{line}\n{tag}\n").into_bytes()
}

fn malformed(why: impl Into<String>) -> Refused {
    Refused::Malformed(why.into())
}

/// Check and read one datagram under `key` (see the module documentation).
pub fn decode(datagram: &[u8], key: &[u8]) -> Result<Report, Refused> {
    if datagram.len() > MAX_REPORT {
        return Err(malformed(format!(
            "{} bytes, above {MAX_REPORT}",
            datagram.len()
        )));
    }
    let text = std::str::from_utf8(datagram).map_err(|_| malformed("not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let (line, tag) = text
        .split_once('\n')
        .ok_or_else(|| malformed("not two lines"))?;
    let tag = unhex(tag.trim_end()).ok_or_else(|| malformed("the MAC is not hex"))?;
    let mut m = mac(key);
    m.update(line.as_bytes());
    m.verify_slice(&tag).map_err(|_| Refused::Forged)?;

    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(malformed("not an lbp report"));
    }
    if words.next() != Some(VERSION) {
        return Err(malformed("unknown version"));
    }
    let backend: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| malformed("no back-end address"))?;
    let sent_us: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| malformed("no time"))?;
    let mut load = Load::default();
    let mut seen = [false; 5];
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| malformed(format!("`{w}` is not key=value")))?;
        let v: f64 = v
            .parse()
            .map_err(|_| malformed(format!("`{k}` is not a number")))?;
        let i = load.set(k, v).map_err(|e| match e {
            BadValue::UnknownKey => malformed(format!("unknown key `{k}`")),
            BadValue::OutOfRange(why) => malformed(format!("`{k}` {why}")),
        })?;
        if seen[i] {
            return Err(malformed(format!("`{k}` twice")));
        }
        seen[i] = true;
    }
    if seen.contains(&false) {
        return Err(malformed("a load value is missing"));
    }
    Ok(Report {
        backend,
        sent_us,
        load,
    })
}

/// The last report time admitted per back end.
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<IpAddr, u64>,
}

impl ReplayGuard {
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// Admit `r` at the control module's time `now_us` if it is newer than the
    /// last report admitted for its back end and within `window_us` of
    /// `now_us`; a refused report leaves the guard as it was.
    pub fn admit(&mut self, r: &Report, now_us: u64, window_us: u64) -> Result<(), Refused> {
        if r.sent_us.abs_diff(now_us) > window_us {
            return Err(Refused::Stale);
        }
        match self.last.get(&r.backend) {
            Some(&last) if r.sent_us <= last => Err(Refused::Replayed),
            _ => {
                self.last.insert(r.backend, r.sent_us);
                Ok(())
            }
        }
    }

    /// Forget back ends not in `keep` (after a reload removed some).
    pub fn retain(&mut self, keep: &[IpAddr]) {
        self.last.retain(|a, _| keep.contains(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a shared secret";
    const NOW: u64 = 1_765_051_200_000_000;

    fn report(at: u64) -> Report {
        Report {
            backend: IpAddr::from([198, 18, 2, 11]),
            sent_us: at,
            load: Load {
                clients: 12.0,
                cpu: 0.42,
                mem: 0.3,
                exec_ms: 8.5,
                rps: 230.0,
            },
        }
    }

    #[test]
    fn round_trip() {
        let d = encode(&report(NOW), KEY);
        assert!(d.len() <= MAX_REPORT);
        assert_eq!(decode(&d, KEY), Ok(report(NOW)));
        // Extreme values still fit and read back exactly.
        let mut big = report(NOW);
        big.load.rps = 1e300;
        big.load.exec_ms = 1e-300;
        big.load.clients = f64::MAX;
        let d = encode(&big, KEY);
        assert!(d.len() <= MAX_REPORT, "{} bytes", d.len());
        assert_eq!(decode(&d, KEY), Ok(big));
        let v6 = Report {
            backend: "2001:db8::11".parse().unwrap(),
            ..report(NOW)
        };
        assert_eq!(decode(&encode(&v6, KEY), KEY), Ok(v6));
    }

    #[test]
    fn a_forged_or_altered_report_is_refused() {
        let d = encode(&report(NOW), KEY);
        assert_eq!(decode(&d, b"another secret"), Err(Refused::Forged));
        // One changed byte of the load: the MAC no longer matches.
        let text = String::from_utf8(d)
            .unwrap()
            .replace("cpu=0.42", "cpu=0.02");
        assert_eq!(decode(text.as_bytes(), KEY), Err(Refused::Forged));
    }

    /// A datagram with a valid MAC over `line`.
    fn signed(line: &str) -> Vec<u8> {
        let mut m = mac(KEY);
        m.update(line.as_bytes());
        format!("{line}\n{}\n", hex(&m.finalize().into_bytes())).into_bytes()
    }

    #[test]
    fn malformed_reports_are_refused_with_a_reason() {
        let ok = "lbp-report 1 198.18.2.11 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1";
        assert!(decode(&signed(ok), KEY).is_ok());
        for (line, why) in [
            (
                "lbp-report 2 198.18.2.11 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                "version",
            ),
            (
                "lbp-report 1 nowhere 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                "address",
            ),
            (
                "lbp-report 1 198.18.2.11 -5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                "time",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=1 cpu=1.5 mem=0.5 exec_ms=1 rps=1",
                "above 1",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=-1 cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                ">= 0",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=NaN cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                ">= 0",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=inf cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                ">= 0",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1",
                "missing",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=1 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1",
                "twice",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps=1 x=1",
                "unknown key",
            ),
            (
                "lbp-report 1 198.18.2.11 5 clients=1 cpu=0.5 mem=0.5 exec_ms=1 rps",
                "key=value",
            ),
            ("haproxy 1 198.18.2.11 5", "not an lbp report"),
        ] {
            match decode(&signed(line), KEY) {
                Err(Refused::Malformed(m)) => assert!(m.contains(why), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for bad in [
            &b"one line only"[..],
            b"\xff\xfe\n00",
            b"lbp-report 1\nnot hex",
            &[b'a'; MAX_REPORT + 1][..],
            b"",
        ] {
            assert!(
                matches!(decode(bad, KEY), Err(Refused::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replays_and_stale_reports_change_nothing() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.admit(&report(NOW), NOW, DEFAULT_WINDOW_US), Ok(()));
        // The same report again, or an older one: a replay.
        assert_eq!(
            g.admit(&report(NOW), NOW + 1, DEFAULT_WINDOW_US),
            Err(Refused::Replayed)
        );
        assert_eq!(
            g.admit(&report(NOW - 1), NOW + 1, DEFAULT_WINDOW_US),
            Err(Refused::Replayed)
        );
        // Too old or too far ahead: stale, and the guard is unchanged.
        let old = NOW - DEFAULT_WINDOW_US - 1;
        assert_eq!(
            g.admit(&report(old), NOW, DEFAULT_WINDOW_US),
            Err(Refused::Stale)
        );
        let ahead = NOW + 2 * DEFAULT_WINDOW_US;
        assert_eq!(
            g.admit(&report(ahead), NOW, DEFAULT_WINDOW_US),
            Err(Refused::Stale)
        );
        assert_eq!(
            g.admit(&report(NOW + 1), NOW + 1, DEFAULT_WINDOW_US),
            Ok(())
        );
        // Another back end has its own sequence.
        let other = Report {
            backend: IpAddr::from([198, 18, 2, 12]),
            ..report(NOW)
        };
        assert_eq!(g.admit(&other, NOW, DEFAULT_WINDOW_US), Ok(()));
        g.retain(&[other.backend]);
        assert_eq!(g.admit(&report(NOW), NOW, DEFAULT_WINDOW_US), Ok(()));
    }
}
