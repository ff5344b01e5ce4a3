//! `lbp demo`: lbp's main job on a built-in policy (`demo.lbp`), on a fresh
//! machine. It builds a small network in namespaces of its own (a client, the
//! appliance with two interfaces, three back ends behind a bridge), runs
//! `lbp run` in the appliance's namespace, sends HTTP requests through the
//! virtual IP, prints how they were spread over the back ends, and removes
//! everything again.
//!
//! ```text
//!  <p>-client         <p>-app                <p>-switch       <p>-b1 .. <p>-b3
//!  eth0 ──────────── client  servers ──────── p-app ─ br0 ─ p-bN ── eth0 198.18.2.1N
//!  198.18.0.2         (lbp run binds both)
//! ```
//!
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 only; nothing leaves the
//! namespaces. The back ends' HTTP servers are threads of this process that
//! entered their namespaces; the client is a thread that entered the client's.
//! Every wait is bounded, and every namespace, thread and process is removed by a
//! guard's `Drop`, also on error and on Ctrl-C (SIGINT sets a flag the loops
//! check). What it is not: a test suite (`tests/cli/e2e.rs`) or a benchmark.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `println!` that ignores a closed stdout (`lbp demo | head` must still tear
/// down: SIGPIPE is ignored while the demo runs).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(io::stdout(), $($t)*);
    }};
}

/// The built-in policy.
const POLICY: &str = include_str!("demo.lbp");

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const BLOCKED4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
/// The back ends: name, IPv4 and IPv6 address, weight (as in `demo.lbp`).
const BACKENDS: [(&str, &str, &str, u32); 3] = [
    ("b1", "198.18.2.11", "2001:db8:2::11", 1),
    ("b2", "198.18.2.12", "2001:db8:2::12", 2),
    ("b3", "198.18.2.13", "2001:db8:2::13", 3),
];
/// Requests over IPv6 after the IPv4 ones.
const V6_REQUESTS: usize = 5;
/// The whole run's time limits.
const READY_WAIT: Duration = Duration::from_secs(20);
const REQUEST_BUDGET: Duration = Duration::from_secs(25);
const KEEP_LIMIT: Duration = Duration::from_secs(600);

/// Arguments of `lbp demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// HTTP requests to send through the IPv4 virtual IP.
    #[arg(long, default_value_t = 600, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,
    /// NIC rings for `lbp run` (see `lbp run --help`).
    #[arg(long, value_enum, default_value = "auto")]
    rings: Rings,
    /// After the summary, keep the network and lbp running (until Ctrl-C, at most
    /// ten minutes) to try it by hand.
    #[arg(long)]
    keep: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Rings {
    Auto,
    Xdp,
    Uring,
}

/// Set by SIGINT, SIGTERM or SIGHUP.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// SIGINT, SIGTERM and SIGHUP set the flag (the demo then tears down); SIGPIPE
/// is ignored (a closed stdout must not skip the teardown).
fn install_signal_handlers() {
    // SAFETY: sigaction is plain data; all-zero is a valid value (empty mask, no
    // flags), then the handler is filled in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); `sa`
        // is valid for the call and the old action is not asked for.
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
    // SAFETY: ignoring a signal has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// `lbp demo`.
pub fn main(args: DemoArgs) -> ExitCode {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "lbp demo: needs root: it creates network namespaces and veth pairs and runs \
             `lbp run` in them (try `sudo lbp demo`)"
        );
        return ExitCode::FAILURE;
    }
    for (tool, package) in [("ip", "iproute2"), ("ethtool", "ethtool")] {
        if Command::new(tool).arg("-V").output().is_err() {
            eprintln!("lbp demo: the `{tool}` command is missing (install {package})");
            return ExitCode::FAILURE;
        }
    }
    install_signal_handlers();
    match demo(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lbp demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the demo made, removed on drop in field order: lbp first, then the
/// servers, then the namespaces, then the policy file.
struct Demo {
    lbp: Option<LbpChild>,
    servers: Servers,
    namespaces: Vec<Netns>,
    policy: RemoveFile,
}

fn demo(args: &DemoArgs) -> Result<bool, String> {
    let prefix = format!("lbpdemo-{}", std::process::id());
    let policy = RemoveFile(std::env::temp_dir().join(format!("{prefix}.lbp")));
    std::fs::write(&policy.0, POLICY).map_err(|e| format!("{}: {e}", policy.0.display()))?;
    let mut d = Demo {
        lbp: None,
        servers: Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        },
        namespaces: Vec::new(),
        policy,
    };

    say!("lbp demo: building the network (namespaces {prefix}-*)");
    for tag in ["client", "app", "switch", "b1", "b2", "b3"] {
        d.namespaces.push(Netns::new(&format!("{prefix}-{tag}"))?);
        check_interrupt()?;
    }
    let [client, app, switch, b1, b2, b3] = &d.namespaces[..] else {
        return Err("namespaces".into());
    };
    veth(app, "client", client, "eth0")?;
    client.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"])?;
    client.ip(&["addr", "add", "198.18.0.66/24", "dev", "eth0"])?;
    client.ip(&["addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad"])?;
    client.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
    client.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"])?;
    switch.ip(&["link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    veth(app, "servers", switch, "p-app")?;
    switch.ip(&["link", "set", "p-app", "master", "br0"])?;
    for (i, (ns, (_, a4, a6, _))) in [b1, b2, b3].into_iter().zip(BACKENDS).enumerate() {
        let port = format!("p-b{}", i + 1);
        veth(ns, "eth0", switch, &port)?;
        switch.ip(&["link", "set", &port, "master", "br0"])?;
        ns.ip(&["addr", "add", &format!("{a4}/24"), "dev", "eth0"])?;
        ns.ip(&["addr", "add", &format!("{a6}/64"), "dev", "eth0", "nodad"])?;
        ns.ip(&["route", "add", "default", "via", "198.18.2.1"])?;
        ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"])?;
        check_interrupt()?;
    }
    // The appliance's kernel leaves the two interfaces' frames to lbp: no IPv6 and
    // no ARP answers there, and (when nft exists) an ingress chain that drops what
    // the kernel would see besides lbp's packet sockets (io_uring rings).
    for ifname in ["client", "servers"] {
        app.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")?;
        app.sysctl(&format!("net.ipv4.conf.{ifname}.arp_ignore"), "8")?;
    }
    let rules = "table netdev lbpdemo {\n\
        chain in_client { type filter hook ingress device client priority 0; policy drop; }\n\
        chain in_servers { type filter hook ingress device servers priority 0; policy drop; }\n}\n";
    if let Err(e) = app.nft(rules) {
        say!("lbp demo: note: no nftables ingress chain ({e}); fine with AF_XDP rings");
    }
    d.servers.start(&[b1, b2, b3])?;

    // lbp run in the appliance's namespace.
    let rings = format!("{:?}", args.rings).to_lowercase();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find lbp's binary: {e}"))?;
    let mut cmd = app.command(&exe.to_string_lossy());
    // Its control socket beside the policy (lbp removes it when it stops).
    let control = d.policy.0.with_extension("sock");
    cmd.arg("run")
        .arg(&d.policy.0)
        .arg("--control")
        .arg(&control)
        .args(["--rings", &rings, "--max-connections", "65536"])
        .args(["--tap", "lbp0", "--stats-interval", "0"]);
    say!("lbp demo: starting lbp run --rings {rings} on the built-in policy");
    let lbp = d.lbp.insert(LbpChild::start(cmd)?);
    say!("{}", lbp.ready);

    // The traffic, from a thread in the client's namespace.
    let n = args.requests as usize;
    let t = client.within(move || Traffic::send(n))?;

    let lbp = d.lbp.as_mut().ok_or("lbp")?;
    // Ctrl-C ends `--keep` normally: only an interruption before here fails.
    let ok = report(&t, n, lbp.alive()) && !interrupted();
    if args.keep && !interrupted() {
        say!(
            "lbp demo: kept running; try `sudo ip netns exec {prefix}-client curl http://{VIP4}/` \
             (Ctrl-C ends it, ten minutes at most)"
        );
        let end = Instant::now() + KEEP_LIMIT;
        while !interrupted() && Instant::now() < end && lbp.alive() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let status = lbp.stop();
    match lbp.final_line() {
        Some(line) => say!("  {line}"),
        None => say!("  lbp: no final summary (exit status {status:?})"),
    }
    let clean = status.is_some_and(|s| s.success());
    if !clean {
        say!("lbp demo: lbp run did not end cleanly: {status:?}");
        for line in lbp.stderr_tail(20) {
            say!("  | {line}");
        }
    }
    drop(d);
    say!("lbp demo: removed the namespaces {prefix}-*");
    let ok = ok && clean;
    say!("lbp demo: {}", if ok { "OK" } else { "FAILED" });
    Ok(ok)
}

fn check_interrupt() -> Result<(), String> {
    if interrupted() {
        return Err("interrupted".into());
    }
    Ok(())
}

/// Print the summary; whether every request succeeded and the spread is right.
fn report(t: &Traffic, n: usize, lbp_alive: bool) -> bool {
    let mut ok = lbp_alive;
    let secs = t.secs;
    let served: usize = t.counts.iter().sum();
    let total_w: u32 = BACKENDS.iter().map(|b| b.3).sum();
    say!(
        "lbp demo: {served} of {n} requests to {VIP4}:80 answered in {secs:.2} s ({:.0} requests/s, one connection at a time)",
        served as f64 / secs.max(1e-3)
    );
    say!("  back end  address       weight  requests  share  (weight's share)");
    for (&(name, a4, _, w), &c) in BACKENDS.iter().zip(&t.counts) {
        let want = f64::from(w) / f64::from(total_w);
        let share = c as f64 / served.max(1) as f64;
        // 15 % of the weight's share, or 4.5 standard deviations of a random
        // spread of that many requests when they are too few for 15 % to mean
        // much (Maglev hashes each connection: the spread is random). With three
        // back ends, three deviations failed about one run in a hundred; 4.5
        // fail about one in fifty thousand, and still catch weights ignored
        // (an even split puts b1 at 33 %, over 16.7 % + 4.5 sigma = 26 % at 300
        // requests).
        let sigma = (want * (1.0 - want) / served.max(1) as f64).sqrt();
        let within = (share - want).abs() <= (0.15 * want).max(4.5 * sigma);
        ok &= within;
        say!(
            "  {name:<8}  {a4:<12}  {w:>6}  {c:>8}  {:>4.1} %  ({:.1} %){}",
            share * 100.0,
            want * 100.0,
            if within { "" } else { "  <- off" }
        );
    }
    say!(
        "  refused {}, timeouts {}, other errors {}",
        t.refused,
        t.timeouts,
        t.other
    );
    for e in t.errors.iter().take(5) {
        say!("    {e}");
    }
    ok &= served == n;
    if interrupted() {
        say!("  interrupted: the IPv6, closed-port and blocked-source checks did not run");
        return false;
    }
    let v6_ok = t.v6.iter().filter(|r| r.is_ok()).count();
    let names: Vec<&str> =
        t.v6.iter()
            .map(|r| r.as_deref().unwrap_or("error"))
            .collect();
    say!(
        "  IPv6 [{VIP6}]:80: {v6_ok} of {V6_REQUESTS} answered ({})",
        names.join(" ")
    );
    ok &= v6_ok == V6_REQUESTS;
    say!("  {VIP4}:25 (no service): {}", t.port25);
    ok &= t.port25.starts_with("refused");
    say!("  from the blocked {BLOCKED4}: {}", t.blocked);
    ok &= t.blocked.starts_with("no answer");
    if !lbp_alive {
        say!("  lbp run ended during the demo");
    }
    ok
}

/// What the client saw.
#[derive(Debug, Default)]
struct Traffic {
    counts: [usize; 3],
    /// How long the IPv4 requests took.
    secs: f64,
    refused: usize,
    timeouts: usize,
    other: usize,
    errors: Vec<String>,
    v6: Vec<Result<String, String>>,
    port25: String,
    blocked: String,
}

impl Traffic {
    /// `n` requests to the IPv4 virtual IP, then the IPv6 ones, the non-service
    /// port and the blocked source; bounded by `REQUEST_BUDGET` and Ctrl-C.
    fn send(n: usize) -> Traffic {
        let mut t = Traffic::default();
        let started = Instant::now();
        let end = started + REQUEST_BUDGET;
        let vip4 = SocketAddr::new(VIP4.into(), 80);
        for _ in 0..n {
            if interrupted() {
                t.errors.push("interrupted".into());
                break;
            }
            if Instant::now() >= end {
                let secs = REQUEST_BUDGET.as_secs();
                t.errors
                    .push(format!("stopped: the {secs} s budget is spent"));
                break;
            }
            match http_get(None, vip4) {
                Ok(body) => match BACKENDS.iter().position(|b| b.0 == body) {
                    Some(i) => t.counts[i] += 1,
                    None => {
                        t.other += 1;
                        t.errors.push(format!("unexpected answer {body:?}"));
                    }
                },
                Err(e) => {
                    match e.kind() {
                        ErrorKind::ConnectionRefused => t.refused += 1,
                        ErrorKind::TimedOut | ErrorKind::WouldBlock => t.timeouts += 1,
                        _ => t.other += 1,
                    }
                    t.errors.push(e.to_string());
                }
            }
        }
        t.secs = started.elapsed().as_secs_f64();
        if interrupted() {
            return t;
        }
        for _ in 0..V6_REQUESTS {
            let r = http_get(None, SocketAddr::new(VIP6.into(), 80));
            t.v6.push(r.map_err(|e| e.to_string()));
        }
        let at = Instant::now();
        t.port25 = match http_get(None, SocketAddr::new(VIP4.into(), 25)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                format!(
                    "refused after {} ms (reset by lbp)",
                    at.elapsed().as_millis()
                )
            }
            Err(e) => format!("{e} (expected: refused)"),
            Ok(body) => format!("answered {body:?} (expected: refused)"),
        };
        t.blocked = match http_get(Some(BLOCKED4.into()), vip4) {
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                "no answer within 2 s (dropped by the filter)".into()
            }
            Err(e) => format!("{e} (expected: no answer)"),
            Ok(body) => format!("answered by {body} (expected: no answer)"),
        };
        t
    }
}

/// One HTTP/1.0 GET over a new connection (from `from` when given): the body.
fn http_get(from: Option<IpAddr>, to: SocketAddr) -> io::Result<String> {
    let timeout = Duration::from_secs(2);
    let mut s = match from {
        None => TcpStream::connect_timeout(&to, timeout)?,
        Some(ip) => connect_from(ip, to, timeout)?,
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lbp-demo\r\n\r\n")?;
    let mut resp = Vec::new();
    s.take(16 * 1024).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("not an HTTP 200 answer: {text:?}"),
        )),
    }
}

/// A TCP connection from the local address `from` (IPv4 only), bounded by
/// `timeout`: `ip netns exec`-free, with `curl --interface` semantics.
fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let (IpAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "IPv4 only"));
    };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: `remote` is a valid sockaddr_in of `len` bytes for the call.
    let r = unsafe { libc::connect(fd, (&raw const remote).cast(), len) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(io::Error::last_os_error());
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(ErrorKind::TimedOut, "connection timed out"));
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Run a command; its stderr as the error when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str) -> Result<Netns, String> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Write `value` to `/proc/sys/<key with / for .>` from inside the namespace.
    fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let v = value.to_string();
        let p = path.clone();
        self.within(move || std::fs::write(p, v))?
            .map_err(|e| format!("{}: {path}: {e}", self.name))
    }

    fn nft(&self, rules: &str) -> Result<(), String> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(())
    }

    /// Run `f` on a thread that entered the namespace, and return its result.
    fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = self.path();
        std::thread::spawn(move || enter(&path).map(|()| f()))
            .join()
            .map_err(|_| format!("a thread in {} panicked", self.name))?
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Move the calling thread into the namespace at `path`.
fn enter(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: `f` is an open namespace file for the call's duration; setns
    // changes only the calling thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// A veth pair from `a`'s `a_if` to `b`'s `b_if`, both up, transmit checksum
/// offload off on both (AF_XDP sees the bytes, not the offload request).
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), String> {
    run(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]))?;
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        run(ns.command("ethtool").args(["-K", ifname, "tx", "off"]))?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// The back ends' HTTP servers, one thread each; stopped and joined on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A server on `[::]:8080` in each namespace, answering with the back end's
    /// name; returns once all listen.
    fn start(&mut self, backends: &[&Netns]) -> Result<(), String> {
        for (ns, (name, ..)) in backends.iter().zip(BACKENDS) {
            let (path, stop) = (ns.path(), self.stop.clone());
            let (tx, rx) = mpsc::channel();
            self.threads.push(std::thread::spawn(move || {
                let bound = enter(&path).and_then(|()| {
                    let l = TcpListener::bind("[::]:8080").map_err(|e| e.to_string())?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Ok(l)
                });
                let l = match bound {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = answer(s, name);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| format!("back end {name}: the server did not start"))?
                .map_err(|e| format!("back end {name}: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Read one request head (bounded) and answer with the back end's name.
fn answer(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}\n",
        name.len() + 1
    );
    s.write_all(reply.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)
}

/// `lbp run`, stopped (SIGTERM, then SIGKILL) by its PID on drop; its stderr
/// lines are collected by a thread.
struct LbpChild {
    child: Option<Child>,
    ready: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl LbpChild {
    /// Start it and wait (bounded, and for Ctrl-C) for its `lbp: ready` line.
    fn start(mut cmd: Command) -> Result<LbpChild, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start lbp run: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut lbp = LbpChild {
            child: Some(child),
            ready: String::new(),
            stderr: Arc::new(Mutex::new(Vec::new())),
        };
        let lines = lbp.stderr.clone();
        if let Some(stderr) = stderr {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().take(100_000) {
                    let Ok(line) = line else { break };
                    let mut v = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if v.len() >= 1000 {
                        v.remove(0);
                    }
                    v.push(line);
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().take(100) {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let end = Instant::now() + READY_WAIT;
        while Instant::now() < end && !interrupted() && lbp.alive() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("lbp: ready") => {
                    lbp.ready = line;
                    return Ok(lbp);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let why = if interrupted() {
            "interrupted"
        } else {
            "lbp run did not get ready"
        };
        lbp.stop();
        Err(format!(
            "{why}; its stderr:\n{}",
            lbp.stderr_tail(20).join("\n")
        ))
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then wait up to ten seconds; SIGKILL if it does not end.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own child's PID, not yet reaped (try_wait saw it
        // running), so the PID cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    fn stderr_tail(&self, n: usize) -> Vec<String> {
        let v = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        v[v.len().saturating_sub(n)..].to_vec()
    }

    fn final_line(&self) -> Option<String> {
        let v = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .rev()
            .find(|l| l.starts_with("lbp: final"))
            .cloned()
    }
}

impl Drop for LbpChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file removed on drop.
struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
