//! `lbp agent`: runs on a back end and sends its load to the appliance's
//! control module, one authenticated report per interval (see
//! `lbp_runtime::control::report` for the wire form and
//! `lbp_runtime::control::agent` for what is measured and from where).
//!
//! CPU and memory come from `/proc`; the clients from the established TCP
//! connections on `--port`; the mean execution time and request rate from
//! `--stats-file`, a file of `key=value` lines the server writes (0 without
//! one). `--load` replaces any of them with fixed numbers, for tests and
//! demonstrations. `--count` bounds the number of reports.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lbp_abi::weight::{BadValue, Load};
use lbp_runtime::control::{agent, report};

/// Arguments of `lbp agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Where the appliance's control module takes reports (UDP).
    #[arg(long, value_name = "ADDR:PORT")]
    report_to: SocketAddr,
    /// A file holding the secret shared with the appliance (surrounding
    /// whitespace ignored; at least 16 bytes).
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
    /// This back end's address, as the policy names it.
    #[arg(long, value_name = "ADDR")]
    backend: IpAddr,
    /// Time between reports: a number and `ms` or `s` (`500ms`, `1s`).
    #[arg(long, default_value = "1s", value_parser = interval)]
    interval: Duration,
    /// The server's port: its established connections are the clients.
    #[arg(long)]
    port: Option<u16>,
    /// A file of `key=value` lines the server writes (`exec_ms`, `rps`,
    /// `clients`), read before each report.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,
    /// Fixed values instead of measured ones, as `key=value,...` (`clients`,
    /// `cpu`, `mem`, `exec_ms`, `rps`).
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = fixed_load)]
    load: Option<Fixed>,
    /// Stop after this many intervals (one report each, unless measuring
    /// failed; default: until killed).
    #[arg(long)]
    count: Option<u64>,
}

/// `--load`: the values given, each optional, in the order of `Load::KEYS`.
#[derive(Clone, Debug, Default)]
struct Fixed([Option<f64>; 5]);

fn fixed_load(s: &str) -> Result<Fixed, String> {
    let mut f = Fixed::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not key=value"))?;
        let v: f64 = v.parse().map_err(|_| format!("`{k}`: not a number"))?;
        let i = Load::default().set(k, v).map_err(|e| match e {
            BadValue::UnknownKey => {
                format!("unknown key `{k}` (one of {})", Load::KEYS.join(", "))
            }
            BadValue::OutOfRange(_) => format!("`{k}`: {v} is out of range"),
        })?;
        f.0[i] = Some(v);
    }
    Ok(f)
}

fn interval(s: &str) -> Result<Duration, String> {
    let (num, per_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else {
        return Err("a number and `ms` or `s`, such as 500ms or 1s".into());
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a whole number"))?;
    let ms = n.saturating_mul(per_ms);
    if !(10..=3_600_000).contains(&ms) {
        return Err("between 10ms and 3600s".into());
    }
    Ok(Duration::from_millis(ms))
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The measured load, `cpu_before` the last `/proc/stat` sample (updated).
fn measure(a: &AgentArgs, cpu_before: &mut Option<(u64, u64)>) -> Result<Load, String> {
    let mut l = Load::default();
    let now = agent::cpu_times(&read("/proc/stat")?).ok_or("/proc/stat: no cpu line")?;
    if let Some(before) = cpu_before.replace(now) {
        l.cpu = agent::cpu_utilisation(before, now);
    }
    l.mem = agent::mem_utilisation(&read("/proc/meminfo")?).ok_or("/proc/meminfo: no totals")?;
    if let Some(port) = a.port {
        let mut n = 0;
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // A kernel without IPv6 has no tcp6 table.
            if let Ok(text) = std::fs::read_to_string(f) {
                n += agent::established_on(&text, port);
            }
        }
        l.clients = n as f64;
    }
    if let Some(path) = &a.stats_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let s = agent::server_stats(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        l.exec_ms = s.exec_ms.unwrap_or(0.0);
        l.rps = s.rps.unwrap_or(0.0);
        if let Some(c) = s.clients {
            l.clients = c;
        }
    }
    if let Some(Fixed(v)) = &a.load {
        for (i, fixed) in v.iter().enumerate() {
            if let Some(x) = fixed {
                *l.field_mut(i) = *x;
            }
        }
    }
    Ok(l)
}

/// Run the agent.
pub fn run(a: AgentArgs) -> Result<ExitCode, String> {
    let secret = super::common::read_secret(&a.secret_file)?;
    let bind: SocketAddr = if a.report_to.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("a UDP socket: {e}"))?;
    // A first CPU sample, so that the first report has a utilisation too.
    let mut cpu_before = read("/proc/stat").ok().and_then(|t| agent::cpu_times(&t));
    std::thread::sleep(Duration::from_millis(100));
    let mut sent = 0u64;
    let mut last_us = 0u64;
    let mut next = Instant::now();
    loop {
        // A file being rewritten or briefly missing costs one report, not
        // the agent.
        let load = match measure(&a, &mut cpu_before) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("lbp agent: {e}; no report this time");
                None
            }
        };
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970")?
            .as_micros() as u64;
        // Strictly increasing even if the clock steps back a little.
        last_us = now_us.max(last_us + 1);
        // A send error (no route yet, the appliance restarting) is reported
        // and the agent goes on: the next report may get through.
        if let Some(load) = load {
            let r = report::Report {
                backend: a.backend,
                sent_us: last_us,
                load,
            };
            if let Err(e) = sock.send_to(&report::encode(&r, &secret), a.report_to) {
                eprintln!("lbp agent: sending to {}: {e}", a.report_to);
            }
        }
        sent += 1;
        if a.count.is_some_and(|c| sent >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        // The next report on the interval's grid (not an interval after this
        // one was done); after a stall, start the grid again rather than send
        // the missed reports at once.
        next += a.interval;
        let now = Instant::now();
        if next < now {
            next = now + a.interval;
        }
        std::thread::sleep(next - now);
    }
}
