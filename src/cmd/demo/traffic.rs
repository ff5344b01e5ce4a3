//! The demo's client: a thread in the client's namespace that sends HTTP
//! requests through the virtual IP, one connection at a time, for as long as
//! the demo runs; and the one-off probes (IPv6 requests, the UDP echo, the
//! closed port, the blocked source).
//!
//! The requests are counted in phases: the demo opens a phase, and each request
//! counts in the phase that was open when it started. So a phase's figures are
//! exactly the requests sent under one state of the appliance (before a reload,
//! after it, while a back end is out ...), whatever was in flight when the
//! state changed.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};

use super::net::enter;
use super::*;

/// What the client saw in one phase.
#[derive(Clone, Debug, Default)]
pub(super) struct Tally {
    /// Answered, per back end (`BACKENDS` order).
    pub(super) counts: [u64; 3],
    pub(super) refused: u64,
    pub(super) timeouts: u64,
    pub(super) other: u64,
    /// The first few errors' texts.
    pub(super) errors: Vec<String>,
    /// When its first request started and its last one ended.
    pub(super) first: Option<Instant>,
    pub(super) last: Option<Instant>,
}

impl Tally {
    pub(super) fn served(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(super) fn failed(&self) -> u64 {
        self.refused + self.timeouts + self.other
    }

    pub(super) fn total(&self) -> u64 {
        self.served() + self.failed()
    }

    /// Requests per second over the phase.
    pub(super) fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => self.total() as f64 / (b - a).as_secs_f64().max(1e-3),
            _ => 0.0,
        }
    }

    /// `N of M answered`.
    pub(super) fn answered(&self) -> String {
        format!("{} of {} answered", self.served(), self.total())
    }

    /// The failures as one phrase: `0 failed` or `3 failed (refused 3)`.
    pub(super) fn failures(&self) -> String {
        if self.failed() == 0 {
            return "0 failed".into();
        }
        let mut kinds = Vec::new();
        for (n, what) in [
            (self.refused, "refused"),
            (self.timeouts, "timed out"),
            (self.other, "other"),
        ] {
            if n > 0 {
                kinds.push(format!("{what} {n}"));
            }
        }
        format!("{} failed ({})", self.failed(), kinds.join(", "))
    }

    fn record(&mut self, r: io::Result<String>, started: Instant) {
        self.first.get_or_insert(started);
        self.last = Some(Instant::now());
        let e = match r {
            Ok(body) => match BACKENDS.iter().position(|b| b.0 == body) {
                Some(i) => {
                    self.counts[i] += 1;
                    return;
                }
                None => {
                    self.other += 1;
                    format!("unexpected answer {body:?}")
                }
            },
            Err(e) => {
                match e.kind() {
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => {
                        self.refused += 1;
                    }
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => self.timeouts += 1,
                    _ => self.other += 1,
                }
                e.to_string()
            }
        };
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

/// No phase open: the client waits.
const PAUSED: usize = usize::MAX;

struct Shared {
    stop: AtomicBool,
    /// The phase new requests count in, or `PAUSED`.
    phase: AtomicUsize,
    /// The phase of the request in flight (`PAUSED`: none).
    busy: AtomicUsize,
    /// At most this many requests per second.
    rate: AtomicU32,
    /// At most this many requests in the open phase.
    limit: AtomicU64,
    tallies: Mutex<Vec<(String, Tally)>>,
}

/// The client's request loop, stopped and joined on drop.
pub(super) struct Load {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Start the loop on a thread in the namespace at `ns_path`, paused.
    pub(super) fn start(ns_path: String) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            phase: AtomicUsize::new(PAUSED),
            busy: AtomicUsize::new(PAUSED),
            rate: AtomicU32::new(MAX_RATE),
            limit: AtomicU64::new(u64::MAX),
            tallies: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter(&ns_path) {
                let mut t = s.tallies.lock().unwrap_or_else(|e| e.into_inner());
                t.push(("no client".into(), Tally::default()));
                t[0].1.errors.push(e);
                return;
            }
            run(&s);
        });
        Load {
            shared,
            thread: Some(thread),
        }
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, Vec<(String, Tally)>> {
        self.shared
            .tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Open a new phase called `name` of at most `limit` requests; its index.
    pub(super) fn phase(&self, name: &str, limit: Option<u64>) -> usize {
        let mut t = self.tallies();
        t.push((name.to_string(), Tally::default()));
        let p = t.len() - 1;
        self.shared
            .limit
            .store(limit.unwrap_or(u64::MAX), Ordering::SeqCst);
        self.shared.phase.store(p, Ordering::SeqCst);
        p
    }

    /// Close the open phase (no new requests until the next one).
    pub(super) fn pause(&self) {
        self.shared.phase.store(PAUSED, Ordering::SeqCst);
    }

    /// At most `n` requests per second from now on.
    pub(super) fn set_rate(&self, n: u32) {
        self.shared.rate.store(n.max(1), Ordering::SeqCst);
    }

    /// Phase `p`'s figures so far.
    pub(super) fn tally(&self, p: usize) -> Tally {
        self.tallies()
            .get(p)
            .map(|t| t.1.clone())
            .unwrap_or_default()
    }

    /// The open phase's name and figures, or the last one's (its name then says
    /// it ended).
    pub(super) fn current(&self) -> Option<(String, Tally)> {
        let p = self.shared.phase.load(Ordering::SeqCst);
        let t = self.tallies();
        match t.get(p) {
            Some(x) => Some(x.clone()),
            None => t.last().map(|(n, x)| (format!("{n} (ended)"), x.clone())),
        }
    }

    /// Wait until phase `p` has `n` requests (bounded by `limit` and Ctrl-C);
    /// whether it has.
    pub(super) fn wait_for(&self, p: usize, n: u64, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if self.tally(p).total() >= n {
                return true;
            }
            if interrupted() || Instant::now() >= end || self.thread_ended() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Phase `p`'s final figures: once no request of it is in flight any more
    /// (a phase after it must have been opened, or the client paused).
    pub(super) fn finish(&self, p: usize) -> Tally {
        // A request ends within its timeouts (connect, then read: 4 s).
        let end = Instant::now() + Duration::from_secs(5);
        while self.shared.busy.load(Ordering::SeqCst) == p && Instant::now() < end && !interrupted()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.tally(p)
    }

    fn thread_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The request loop: one request at a time while a phase is open, at most
/// `rate` a second; ends on stop, Ctrl-C, or after the longest the demo runs.
fn run(s: &Shared) {
    let vip4 = SocketAddr::new(VIP4.into(), 80);
    let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(300);
    let mut next = Instant::now();
    while !s.stop.load(Ordering::SeqCst) && !interrupted() && Instant::now() < end {
        let p = s.phase.load(Ordering::SeqCst);
        if p == PAUSED {
            std::thread::sleep(Duration::from_millis(5));
            next = Instant::now();
            continue;
        }
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        let gap = Duration::from_secs(1) / s.rate.load(Ordering::SeqCst).max(1);
        next = (next + gap).max(now);
        // In flight from here; a phase closed meanwhile is not counted in
        // (`Load::finish` saw `busy` free after closing it).
        s.busy.store(p, Ordering::SeqCst);
        let full = || {
            s.tallies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(p)
                .is_none_or(|t| t.1.total() >= s.limit.load(Ordering::SeqCst))
        };
        if s.phase.load(Ordering::SeqCst) != p || full() {
            s.busy.store(PAUSED, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let r = http_get(None, vip4);
        if let Some(t) = s
            .tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(p)
        {
            t.1.record(r, now);
        }
        s.busy.store(PAUSED, Ordering::SeqCst);
    }
}

/// One HTTP/1.0 GET over a new connection (from `from` when given): the body.
pub(super) fn http_get(from: Option<IpAddr>, to: SocketAddr) -> io::Result<String> {
    let timeout = Duration::from_secs(2);
    let mut s = match from {
        None => TcpStream::connect_timeout(&to, timeout)?,
        Some(ip) => connect_from(ip, to, timeout)?,
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // An error after the connection opened names it (its port in `lbp conns`).
    let local = s.local_addr()?;
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{local} -> {to}: {e}"));
    s.write_all(b"GET / HTTP/1.0\r\nHost: lbp-demo\r\n\r\n")
        .map_err(named)?;
    let mut resp = Vec::new();
    s.take(16 * 1024).read_to_end(&mut resp).map_err(named)?;
    let text = String::from_utf8_lossy(&resp);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("not an HTTP 200 answer: {text:?}"),
        )),
    }
}

/// `n` UDP datagrams to `to`, each with its own data; how many came back with
/// the same data (each waited for at most 500 ms, sent at most three times),
/// and the median round trip of the answered ones.
pub(super) fn udp_echo(to: SocketAddr, n: usize) -> Result<(usize, Duration), String> {
    let bind: SocketAddr = if to.is_ipv4() {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    } else {
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("a UDP socket: {e}"))?;
    s.connect(to).map_err(|e| format!("UDP {to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let (mut answered, mut rtts) = (0, Vec::new());
    let mut buf = [0u8; 512];
    for i in 0..n {
        if interrupted() {
            break;
        }
        let data = format!("lbp demo echo {i} to {to}");
        'tries: for _ in 0..3 {
            let at = Instant::now();
            s.send(data.as_bytes())
                .map_err(|e| format!("UDP {to}: {e}"))?;
            while let Ok(len) = s.recv(&mut buf) {
                // An answer to an earlier try of another datagram is skipped.
                if &buf[..len] == data.as_bytes() {
                    answered += 1;
                    rtts.push(at.elapsed());
                    break 'tries;
                }
            }
        }
    }
    rtts.sort();
    Ok((
        answered,
        rtts.get(rtts.len() / 2).copied().unwrap_or_default(),
    ))
}

/// A TCP connection from the local address `from` (IPv4 only), bounded by
/// `timeout`: `ip netns exec`-free, with `curl --interface` semantics.
pub(super) fn connect_from(
    from: IpAddr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let (IpAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "IPv4 only"));
    };
    lbp_runtime::sys::tcp_connect_from(src, dst, timeout)
}
