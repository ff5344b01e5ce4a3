//! What an agent on a back end measures, from the texts the kernel and the
//! server give it: CPU and memory utilisation from `/proc/stat` and
//! `/proc/meminfo`, the clients being served from `/proc/net/tcp{,6}`
//! (established connections on the server's port), and the mean execution
//! time and request rate from a file the server writes (`key=value` lines).
//! Pure parsing; `lbp agent` reads the files and sends the reports.
//!
//! And the other way round: what an agent that an operator already runs for
//! HAProxy's `agent-check` answers ([`parse_agent_reply`]), for the back ends
//! with `agent PORT` in the policy (polled by [`super::probe::AgentPoller`]).

use super::weights::{Admin, BackendState};

/// What one reply of an HAProxy-style agent says; `None` where it says
/// nothing (the back end's state keeps what it had).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentReply {
    /// `75%`: the back end's weight is that percent of its static weight.
    pub percent: Option<u32>,
    /// `ready`, `drain`, `maint`: the back end's administrative state.
    pub admin: Option<Admin>,
    /// `up` (Some(true)); `down`, `fail`, `stopped` (Some(false)).
    pub up: Option<bool>,
}

/// Parse an agent's reply, HAProxy's agent-check protocol: the first line
/// (up to `\r` or `\n`) holds words separated by spaces, tabs or commas, in
/// any order, case-insensitive: a percentage `N%` (digits, then `%`), `ready`,
/// `drain`, `maint`, `up`, and `down`, `fail` or `stopped` (all three down).
/// A `#` starts a message, which is ignored (`down#disk full`). Unknown words
/// (HAProxy's `maxconn:N`, garbage, a percentage too large for a `u32`) are
/// skipped; when two words set the same thing, the later one wins.
pub fn parse_agent_reply(line: &str) -> AgentReply {
    let line = line.split(['\r', '\n']).next().unwrap_or("");
    let line = line.split('#').next().unwrap_or("");
    let mut r = AgentReply::default();
    for word in line.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        if let Some(digits) = word.strip_suffix('%') {
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && let Ok(p) = digits.parse::<u32>()
            {
                r.percent = Some(p);
            }
            continue;
        }
        let w = word.to_ascii_lowercase();
        match w.as_str() {
            "ready" => r.admin = Some(Admin::Ready),
            "drain" => r.admin = Some(Admin::Drain),
            "maint" => r.admin = Some(Admin::Maint),
            "up" => r.up = Some(true),
            "down" | "fail" | "stopped" => r.up = Some(false),
            _ => {}
        }
    }
    r
}

/// The CPU time counters of `/proc/stat`'s first line: (busy, total) jiffies.
pub fn cpu_times(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().next()?;
    let mut words = line.split_whitespace();
    if words.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = words.map(|w| w.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in
    // user and nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle.min(total), total))
}

/// CPU utilisation between two [`cpu_times`] samples, 0 to 1 (0 when no time
/// passed).
pub fn cpu_utilisation(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total > 0.0 {
        (busy / total).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Memory utilisation from `/proc/meminfo`: 1 - MemAvailable / MemTotal.
pub fn mem_utilisation(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let total = field("MemTotal")?;
    let avail = field("MemAvailable")?;
    if total <= 0.0 {
        return None;
    }
    Some((1.0 - avail / total).clamp(0.0, 1.0))
}

/// Established TCP connections whose local port is `port`, in the text of
/// `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn established_on(proc_net_tcp: &str, port: u16) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|l| {
            let mut w = l.split_whitespace();
            let (Some(_), Some(local), Some(_), Some(state)) =
                (w.next(), w.next(), w.next(), w.next())
            else {
                return false;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            state == "01" && local_port == Some(port)
        })
        .count()
}

/// The server's own figures, from a file of `key=value` lines (`exec_ms`,
/// `rps`, and `clients` to override the count of connections); unknown keys,
/// blank lines and `#` comments are skipped, a value that is no finite number
/// >= 0 is an error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerStats {
    pub exec_ms: Option<f64>,
    pub rps: Option<f64>,
    pub clients: Option<f64>,
}

/// Parse a server stats file (see [`ServerStats`]).
pub fn server_stats(text: &str) -> Result<ServerStats, String> {
    let mut s = ServerStats::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not key=value", n + 1))?;
        let slot = match k.trim() {
            "exec_ms" => &mut s.exec_ms,
            "rps" => &mut s.rps,
            "clients" => &mut s.clients,
            _ => continue,
        };
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("line {}: `{}` is not a number", n + 1, k.trim()))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("line {}: `{}` is not >= 0", n + 1, k.trim()));
        }
        *slot = Some(v);
    }
    Ok(s)
}

impl BackendState {
    /// Take what an HAProxy-style agent answered: `ready`, `drain` and `maint`
    /// set the administrative state (as the operator's command does), `up`
    /// and `down` the agent's own up/down flag (the health checks' flag is
    /// apart: the back end takes connections only when both are up), and a
    /// percentage the weight relative to the static weight. What the reply
    /// does not mention stays as it was; a failed poll is no reply and should
    /// not be applied at all.
    pub fn apply_agent(&mut self, r: &AgentReply) {
        if let Some(a) = r.admin {
            self.admin = a;
        }
        if let Some(up) = r.up {
            self.agent_down = !up;
        }
        if let Some(p) = r.percent {
            self.agent_percent = Some(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(percent: Option<u32>, admin: Option<Admin>, up: Option<bool>) -> AgentReply {
        AgentReply { percent, admin, up }
    }

    #[test]
    fn agent_reply_words() {
        let p = parse_agent_reply;
        assert_eq!(p("75%\n"), reply(Some(75), None, None));
        assert_eq!(p("0%"), reply(Some(0), None, None));
        assert_eq!(p("150%"), reply(Some(150), None, None));
        assert_eq!(p("ready"), reply(None, Some(Admin::Ready), None));
        assert_eq!(p("drain\n"), reply(None, Some(Admin::Drain), None));
        assert_eq!(p("maint\r\n"), reply(None, Some(Admin::Maint), None));
        assert_eq!(p("up"), reply(None, None, Some(true)));
        for down in ["down", "fail", "stopped"] {
            assert_eq!(p(down), reply(None, None, Some(false)), "{down}");
        }
        // Case-insensitive.
        assert_eq!(p("DRAIN"), reply(None, Some(Admin::Drain), None));
        assert_eq!(p("Up"), reply(None, None, Some(true)));
    }

    #[test]
    fn agent_reply_mixtures_and_messages() {
        let p = parse_agent_reply;
        assert_eq!(p("75% drain"), reply(Some(75), Some(Admin::Drain), None));
        assert_eq!(p("up, ready"), reply(None, Some(Admin::Ready), Some(true)));
        assert_eq!(
            p("\t50%,maint  down\r\n"),
            reply(Some(50), Some(Admin::Maint), Some(false))
        );
        // HAProxy's maxconn is not ours: skipped.
        assert_eq!(p("maxconn:30 80%"), reply(Some(80), None, None));
        // The later word wins.
        assert_eq!(p("up down 10% 20%"), reply(Some(20), None, Some(false)));
        // A message after `#`, with or without a space.
        assert_eq!(p("down#disk full"), reply(None, None, Some(false)));
        assert_eq!(p("fail # up 90% ready"), reply(None, None, Some(false)));
        // Only the first line counts.
        assert_eq!(p("drain\nup 10%\n"), reply(None, Some(Admin::Drain), None));
    }

    #[test]
    fn agent_reply_garbage() {
        let p = parse_agent_reply;
        let none = AgentReply::default();
        assert_eq!(p(""), none);
        assert_eq!(p("\n"), none);
        assert_eq!(p("   ,,\t "), none);
        assert_eq!(p("#only a message"), none);
        assert_eq!(p("%"), none);
        assert_eq!(p("-5%"), none);
        assert_eq!(p("7.5%"), none);
        assert_eq!(p("x%"), none);
        assert_eq!(p("99999999999%"), none);
        assert_eq!(p("upp dra1n readyy"), none);
        assert_eq!(p("HTTP/1.1 200 OK"), none);
        assert_eq!(p("\u{fffd}\u{0}ready\u{7f}"), none);
        // A long line: every word read, the last one wins.
        let long = format!("{}drain", "x,".repeat(5_000));
        assert!(long.len() > 10_000);
        assert_eq!(p(&long), reply(None, Some(Admin::Drain), None));
        let long = "9".repeat(10_240) + "%";
        assert_eq!(p(&long), none);
    }

    #[test]
    fn cpu_from_proc_stat() {
        let a = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let b = "cpu  200 0 100 900 50 0 0 0 0 0\n";
        let (ta, tb) = (cpu_times(a).unwrap(), cpu_times(b).unwrap());
        assert_eq!(ta, (150, 1000));
        assert_eq!(tb, (300, 1250));
        // 150 busy of 250 jiffies.
        assert!((cpu_utilisation(ta, tb) - 0.6).abs() < 1e-9);
        assert_eq!(cpu_utilisation(tb, tb), 0.0);
        assert_eq!(cpu_times("intr 1 2 3"), None);
        assert_eq!(cpu_times("cpu 1 2"), None);
        assert_eq!(cpu_times("cpu x y z w"), None);
        assert_eq!(cpu_times(""), None);
    }

    #[test]
    fn memory_from_meminfo() {
        let m = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert!((mem_utilisation(m).unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(mem_utilisation("MemTotal: 0 kB\nMemAvailable: 0 kB"), None);
        assert_eq!(mem_utilisation("MemTotal: 10 kB"), None);
    }

    #[test]
    fn clients_from_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B0212C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0B0212C6:1F90 0501C6C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0B0212C6:1F90 0601C6C6:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0B0212C6:0016 0601C6C6:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: garbage
";
        // Two established on port 8080 (0x1F90); the listener (0A) and port 22
        // do not count.
        assert_eq!(established_on(t, 8080), 2);
        assert_eq!(established_on(t, 22), 1);
        assert_eq!(established_on("", 80), 0);
    }

    #[test]
    fn server_stats_file() {
        let s = server_stats("# from the server\nexec_ms = 8.5\nrps=230\nother=1\n\n").unwrap();
        assert_eq!(
            s,
            ServerStats {
                exec_ms: Some(8.5),
                rps: Some(230.0),
                clients: None
            }
        );
        assert!(server_stats("rps=-1").is_err());
        assert!(server_stats("rps=NaN").is_err());
        assert!(server_stats("rps").is_err());
        assert!(server_stats("exec_ms=fast").is_err());
    }
}
