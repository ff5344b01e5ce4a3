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

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
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

mod child;
mod net;
mod servers;
mod traffic;

use child::{LbpChild, RemoveFile};
use net::{Netns, veth};
use servers::Servers;
use traffic::Traffic;

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
    client.add_address("eth0", "198.18.0.2/24")?;
    client.add_address("eth0", "198.18.0.66/24")?;
    client.add_address("eth0", "2001:db8::2/64")?;
    client.add_default_route("198.18.0.1")?;
    client.add_default_route("2001:db8::1")?;
    switch.add_bridge("br0")?;
    switch.link_up("br0")?;
    veth(app, "servers", switch, "p-app")?;
    switch.set_master("p-app", "br0")?;
    for (i, (ns, (_, a4, a6, _))) in [b1, b2, b3].into_iter().zip(BACKENDS).enumerate() {
        let port = format!("p-b{}", i + 1);
        veth(ns, "eth0", switch, &port)?;
        switch.set_master(&port, "br0")?;
        ns.add_address("eth0", &format!("{a4}/24"))?;
        ns.add_address("eth0", &format!("{a6}/64"))?;
        ns.add_default_route("198.18.2.1")?;
        ns.add_default_route("2001:db8:2::1")?;
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
    let mut cmd = app.command(&exe);
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
