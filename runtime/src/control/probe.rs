//! The health checks as they run: one prober thread per (back end, check),
//! off the control core's loop, reporting each result on a channel that the
//! control core drains without waiting.
//!
//! A `tcp` check passes when a TCP connection to the back end's check port
//! opens within the timeout; an `http` check when, on such a connection, a
//! `GET PATH HTTP/1.0` is answered within the timeout by a status line with
//! the expected status (any 2xx or 3xx when none is given). The check port is
//! the check's `port`, else the back end's own `port`; a check with neither is
//! not run. An `icmp` check passes when an echo request to the back end's
//! address is answered by its echo reply within the timeout ([`super::ping`]);
//! it needs no port. A prober sleeps in slices of at most 50 ms, so
//! [`Prober`]'s drop stops it within that, or once the check under way ends (at
//! most three times its timeout: connect, write, read).
//!
//! Beside them, the pollers of HAProxy-style agents (`backend ... agent PORT`,
//! HAProxy's `agent-check`): one thread per back end with an agent, which
//! every [`AGENT_INTERVAL`] (2 s, HAProxy's `agent-inter` default) connects to
//! the agent's port (within 1 s), reads one line (at most 1024 bytes, up to
//! the first newline or the end of the stream, within 1 s) and parses it
//! ([`super::agent::parse_agent_reply`]). A poll that fails gives `None`: as
//! in HAProxy, an agent that does not answer says nothing about its back end
//! (the health checks say whether it is reachable).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lbp_abi::health::{Check, Kind};

use super::agent::{AgentReply, parse_agent_reply};
use super::ping::ping;
use crate::config::Appliance;

/// One check of one back end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The service and the back end's index in it.
    pub service: usize,
    pub backend: usize,
    /// Where to check (port 0 for an `icmp` check).
    pub addr: SocketAddr,
    pub check: Check,
}

/// The checks to run for `app`: every check of every service's pool, for
/// each of its back ends: ICMP checks for all, TCP and HTTP checks for those
/// that have a port to check.
pub fn targets(app: &Appliance) -> Vec<Target> {
    let mut out = Vec::new();
    for (s, svc) in app.services.iter().enumerate() {
        for check in &svc.health {
            for (b, be) in svc.backends.iter().enumerate() {
                let port = match check.kind {
                    Kind::Icmp => 0,
                    Kind::Tcp | Kind::Http { .. } => {
                        let Some(port) = check.port.or(be.port) else {
                            continue;
                        };
                        port
                    }
                };
                out.push(Target {
                    service: s,
                    backend: b,
                    addr: SocketAddr::new(be.addr, port),
                    check: check.clone(),
                });
            }
        }
    }
    out
}

/// Whether `status_line` (`HTTP/1.x NNN ...`) has the status `expect`, or any
/// 2xx or 3xx without one.
pub fn status_ok(status_line: &str, expect: Option<u16>) -> bool {
    let mut w = status_line.split_whitespace();
    let (Some(proto), Some(code)) = (w.next(), w.next()) else {
        return false;
    };
    let Ok(code) = code.parse::<u16>() else {
        return false;
    };
    proto.starts_with("HTTP/")
        && match expect {
            Some(e) => code == e,
            None => (200..400).contains(&code),
        }
}

/// Run one check now; true when it passes.
pub fn check_once(t: &Target) -> bool {
    let timeout = Duration::from_micros(t.check.timeout_us.max(1_000));
    match &t.check.kind {
        Kind::Icmp => ping(t.addr.ip(), timeout),
        Kind::Tcp => TcpStream::connect_timeout(&t.addr, timeout).is_ok(),
        Kind::Http { path, expect } => http_check(t.addr, path, *expect, timeout),
    }
}

/// An `http` check of `addr`: `GET path` answered with the status `expect`
/// (any 2xx or 3xx without one), each step within `timeout`.
fn http_check(addr: SocketAddr, path: &str, expect: Option<u16>, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let host = addr.ip();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbp-health\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    // The status line is in the first bytes; read at most 512.
    let mut buf = [0u8; 512];
    let mut got = 0;
    let end = Instant::now() + timeout;
    while got < buf.len() && Instant::now() < end {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    status_ok(text.lines().next().unwrap_or(""), expect)
}

/// The running probers; dropping it stops and joins them.
#[derive(Debug)]
pub struct Prober {
    results: Receiver<(usize, bool)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A prober's or poller's thread: `poll` at once, then every `interval`,
/// each result sent as `(i, result)`, until `stop` is set or nobody listens;
/// sleeps in slices of at most 50 ms so that `stop` is seen soon.
fn repeat<T>(
    i: usize,
    interval: Duration,
    tx: Sender<(usize, T)>,
    stop: Arc<AtomicBool>,
    mut poll: impl FnMut() -> T,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if tx.send((i, poll())).is_err() {
            return;
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
        }
    }
}

impl Prober {
    /// Start one prober thread per target (named `lbp-health`).
    pub fn start(targets: &[Target]) -> std::io::Result<Prober> {
        let (tx, results) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Prober {
            results,
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(targets.len()),
        };
        for (i, t) in targets.iter().enumerate() {
            let (t, tx, stop) = (t.clone(), tx.clone(), Arc::clone(&stop));
            p.threads.push(
                std::thread::Builder::new()
                    .name("lbp-health".into())
                    .spawn(move || {
                        let interval = Duration::from_micros(t.check.interval_us.max(10_000));
                        repeat(i, interval, tx, stop, || check_once(&t))
                    })?,
            );
        }
        Ok(p)
    }

    /// The results that arrived since the last call: (target index, passed).
    pub fn results(&self) -> Vec<(usize, bool)> {
        self.results.try_iter().collect()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How often an agent is polled: HAProxy's `agent-inter` default.
pub const AGENT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a poll may wait for the agent's connection, and then for its line.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an agent's reply that is read.
pub const AGENT_MAX_REPLY: usize = 1024;

/// One back end's HAProxy-style agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTarget {
    /// The service and the back end's index in it.
    pub service: usize,
    pub backend: usize,
    /// The back end's address with its agent's port.
    pub addr: SocketAddr,
}

/// The agents to poll for `app`: every back end with an `agent` port, at its
/// address.
pub fn agent_targets(app: &Appliance) -> Vec<AgentTarget> {
    let mut out = Vec::new();
    for (s, svc) in app.services.iter().enumerate() {
        for (b, be) in svc.backends.iter().enumerate() {
            if let Some(port) = be.agent {
                out.push(AgentTarget {
                    service: s,
                    backend: b,
                    addr: SocketAddr::new(be.addr, port),
                });
            }
        }
    }
    out
}

/// Poll the agent at `addr` once: its reply, or `None` when the connection or
/// the read failed or timed out (see the module documentation).
pub fn poll_agent(addr: SocketAddr) -> Option<AgentReply> {
    let mut s = TcpStream::connect_timeout(&addr, AGENT_TIMEOUT).ok()?;
    let end = Instant::now() + AGENT_TIMEOUT;
    let mut buf = [0u8; AGENT_MAX_REPLY];
    let mut got = 0;
    while got < buf.len() && !buf[..got].contains(&b'\n') {
        let left = end.checked_duration_since(Instant::now())?;
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(parse_agent_reply(&String::from_utf8_lossy(&buf[..got])))
}

/// The running agent pollers; dropping it stops and joins them.
#[derive(Debug)]
pub struct AgentPoller {
    results: Receiver<(usize, Option<AgentReply>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AgentPoller {
    /// Start one poller thread per target (named `lbp-agent-check`), each
    /// polling its agent at once and then every [`AGENT_INTERVAL`].
    pub fn start(targets: &[AgentTarget]) -> std::io::Result<AgentPoller> {
        AgentPoller::start_every(targets, AGENT_INTERVAL)
    }

    fn start_every(targets: &[AgentTarget], interval: Duration) -> std::io::Result<AgentPoller> {
        let (tx, results) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = AgentPoller {
            results,
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(targets.len()),
        };
        for (i, t) in targets.iter().enumerate() {
            let (addr, tx, stop) = (t.addr, tx.clone(), Arc::clone(&stop));
            p.threads.push(
                std::thread::Builder::new()
                    .name("lbp-agent-check".into())
                    .spawn(move || repeat(i, interval, tx, stop, || poll_agent(addr)))?,
            );
        }
        Ok(p)
    }

    /// The replies that arrived since the last call, without waiting:
    /// (target index, the reply or `None` for a failed poll).
    pub fn results(&self) -> Vec<(usize, Option<AgentReply>)> {
        self.results.try_iter().collect()
    }
}

impl Drop for AgentPoller {
    /// Stops the pollers: within 50 ms, or once the poll under way ends (at
    /// most 2 s: connect, read).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Algorithm, Backend, Mode, Service};
    use std::net::{IpAddr, TcpListener};

    #[test]
    fn status_lines() {
        assert!(status_ok("HTTP/1.1 200 OK", None));
        assert!(status_ok("HTTP/1.0 302 Found", None));
        assert!(!status_ok("HTTP/1.1 503 Unavailable", None));
        assert!(status_ok("HTTP/1.1 204 No Content", Some(204)));
        assert!(!status_ok("HTTP/1.1 200 OK", Some(204)));
        assert!(!status_ok("SSH-2.0-OpenSSH", None));
        assert!(!status_ok("HTTP/1.1 abc", None));
        assert!(!status_ok("", None));
    }

    fn app(port: Option<u16>, checks: Vec<Check>) -> Appliance {
        Appliance {
            services: vec![Service {
                name: "web".into(),
                vips: vec![IpAddr::from([127, 0, 0, 1])],
                mode: Mode::Dsr,
                algorithm: Algorithm::Maglev,
                unknown_balance: false,
                backends: vec![Backend {
                    addr: IpAddr::from([127, 0, 0, 1]),
                    port,
                    weight: 1,
                    agent: Some(5555),
                }],
                formula: None,
                health: checks,
            }],
            ..Appliance::default()
        }
    }

    #[test]
    fn targets_take_the_check_port_else_the_back_ends() {
        let mut with_port = Check::new(Kind::Tcp);
        with_port.port = Some(9000);
        let plain = Check::new(Kind::Tcp);
        let t = targets(&app(Some(8080), vec![with_port.clone(), plain.clone()]));
        let ports: Vec<u16> = t.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, vec![9000, 8080]);
        // No port anywhere: not run; ICMP needs none.
        let t = targets(&app(None, vec![plain, Check::new(Kind::Icmp)]));
        assert_eq!(
            t,
            vec![Target {
                service: 0,
                backend: 0,
                addr: "127.0.0.1:0".parse().unwrap(),
                check: Check::new(Kind::Icmp),
            }]
        );
    }

    /// Checks against servers on loopback: a listener passes a TCP check, a
    /// closed port fails it; an HTTP server passes or fails by its status.
    #[test]
    fn checks_on_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        let closed = {
            let c = TcpListener::bind("127.0.0.1:0").unwrap();
            c.local_addr().unwrap()
        };
        let mut tcp = Check::new(Kind::Tcp);
        tcp.timeout_us = 500_000;
        let target = |addr, check: &Check| Target {
            service: 0,
            backend: 0,
            addr,
            check: check.clone(),
        };
        assert!(check_once(&target(open, &tcp)));
        assert!(!check_once(&target(closed, &tcp)));
        // An HTTP server that answers 204 to one request.
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
            }
        });
        let mut http = tcp.clone();
        http.kind = Kind::Http {
            path: "/healthz".into(),
            expect: Some(204),
        };
        assert!(check_once(&target(open, &http)));
        http.kind = Kind::Http {
            path: "/".into(),
            expect: Some(200),
        };
        assert!(!check_once(&target(open, &http)));
        server.join().unwrap();
    }

    #[test]
    fn probers_report_and_stop() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tcp = Check::new(Kind::Tcp);
        tcp.interval_us = 20_000;
        tcp.timeout_us = 200_000;
        let t = vec![Target {
            service: 0,
            backend: 0,
            addr: l.local_addr().unwrap(),
            check: tcp,
        }];
        let p = Prober::start(&t).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while seen.len() < 3 && Instant::now() < end {
            seen.extend(p.results());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            seen.len() >= 3 && seen.iter().all(|&r| r == (0, true)),
            "{seen:?}"
        );
        drop(p);
    }

    #[test]
    fn agent_targets_take_the_agent_port() {
        let mut a = app(Some(8080), Vec::new());
        let mut second = a.services[0].backends[0].clone();
        second.addr = IpAddr::from([127, 0, 0, 2]);
        second.agent = None;
        a.services[0].backends.push(second);
        let mut other = a.services[0].clone();
        other.backends.reverse();
        a.services.push(other);
        let t = agent_targets(&a);
        let want = |service, backend| AgentTarget {
            service,
            backend,
            addr: "127.0.0.1:5555".parse().unwrap(),
        };
        assert_eq!(t, vec![want(0, 0), want(1, 1)]);
    }

    /// An agent on loopback that answers each connection with `reply` (or
    /// nothing, closing at once, for an empty one).
    fn agent_server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.write_all(reply);
            }
        });
        addr
    }

    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn reply(line: &str) -> Option<AgentReply> {
        Some(parse_agent_reply(line))
    }

    #[test]
    fn agents_on_loopback() {
        assert_eq!(poll_agent(agent_server(b"drain\n")), reply("drain"));
        assert_eq!(poll_agent(agent_server(b"50%\n")), reply("50%"));
        // No newline, then the end of the stream: the line is what came.
        assert_eq!(poll_agent(agent_server(b"up 75%")), reply("up 75%"));
        // More than 1024 bytes without a newline: the first 1024 are read.
        let long: &'static [u8] = Box::leak(
            format!("{} drain\n", "x".repeat(2_000))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert_eq!(poll_agent(agent_server(long)), reply(""));
        assert_eq!(poll_agent(closed_port()), None);
    }

    #[test]
    fn a_silent_agent_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts (the backlog does), never writes.
        let start = Instant::now();
        assert_eq!(poll_agent(addr), None);
        let took = start.elapsed();
        assert!(
            took >= AGENT_TIMEOUT && took < AGENT_TIMEOUT * 2,
            "{took:?}"
        );
        drop(l);
    }

    #[test]
    fn agent_pollers_report_and_stop() {
        let t: Vec<AgentTarget> = [
            agent_server(b"drain\n"),
            agent_server(b"50%\n"),
            closed_port(),
        ]
        .into_iter()
        .enumerate()
        .map(|(b, addr)| AgentTarget {
            service: 0,
            backend: b,
            addr,
        })
        .collect();
        let p = AgentPoller::start_every(&t, Duration::from_millis(20)).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut seen: Vec<Vec<Option<AgentReply>>> = vec![Vec::new(); 3];
        while seen.iter().any(|s| s.len() < 2) && Instant::now() < end {
            for (i, r) in p.results() {
                seen[i].push(r);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(seen.iter().all(|s| s.len() >= 2), "{seen:?}");
        assert!(seen[0].iter().all(|r| *r == reply("drain")), "{seen:?}");
        assert!(seen[1].iter().all(|r| *r == reply("50%")), "{seen:?}");
        assert!(seen[2].iter().all(Option::is_none), "{seen:?}");
        let start = Instant::now();
        drop(p);
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn agent_pollers_start_at_once_and_then_every_interval() {
        let t = vec![AgentTarget {
            service: 0,
            backend: 0,
            addr: agent_server(b"up\n"),
        }];
        let p = AgentPoller::start(&t).unwrap();
        let end = Instant::now() + Duration::from_millis(1_500);
        let mut seen = Vec::new();
        while Instant::now() < end {
            seen.extend(p.results());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first poll at once, the second not before 2 s.
        assert_eq!(seen, vec![(0, reply("up"))]);
    }
}
