//! `lbp demo`: lbp's main job on a built-in policy (`demo.lbp`), on a fresh
//! machine. It builds a small network in namespaces of its own (a client, the
//! appliance with two interfaces, three back ends behind a bridge), runs
//! `lbp run` in the appliance's namespace, and shows the control module at
//! work in steps (`steps.rs`), each a check with its figures: the split
//! following the weights, a hot reload to other weights while requests flow,
//! a back end's server stopped and brought back by the health check, a drain,
//! agents' load reports steering the weights through the pool's formula, the
//! switching core's echo application, and the filter. On a terminal a live view
//! (`view.rs`) shows lbp's and the client's numbers under the steps' lines.
//! The summary gives every step's result; the exit status says whether all
//! held. Then it removes everything again.
//!
//! ```text
//!  <p>-client         <p>-app                <p>-switch       <p>-b1 .. <p>-b3
//!  eth0 ──────────── client  servers ──────── p-app ─ br0 ─ p-bN ── eth0 198.18.2.1N
//!  198.18.0.2         (lbp run binds both)
//! ```
//!
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 only; nothing leaves the
//! namespaces. The back ends' HTTP servers are threads of this process that
//! entered their namespaces; the client is a thread that entered the client's;
//! the back ends' agents are `lbp agent` processes in their namespaces.
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

/// `println!` above the live view (on a terminal), ignoring a closed stdout
/// (`lbp demo | head` must still tear down: SIGPIPE is ignored while the demo
/// runs).
macro_rules! say {
    ($($t:tt)*) => {{
        view::say(&format!($($t)*));
    }};
}

mod child;
mod net;
mod servers;
mod steps;
mod traffic;
mod view;

use child::{Kids, LbpChild, RemoveFile};
use net::{Netns, veth};
use servers::Servers;
use steps::{Outcome, STEPS};
use traffic::Load;

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
/// The whole run's time limits.
const READY_WAIT: Duration = Duration::from_secs(20);
const KEEP_LIMIT: Duration = Duration::from_secs(600);
/// The client's requests per second at most: during the steps, and with
/// `--keep`.
const MAX_RATE: u32 = 1000;
const KEEP_RATE: u32 = 20;

/// Arguments of `lbp demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// HTTP requests through the IPv4 virtual IP in each phase whose split
    /// over the back ends is checked (eight phases).
    #[arg(long, default_value_t = 600, value_name = "N",
          value_parser = clap::value_parser!(u32).range(100..=100_000))]
    requests: u32,
    /// NIC rings for `lbp run` (see `lbp run --help`).
    #[arg(long, value_enum, default_value = "auto")]
    rings: Rings,
    /// After the steps, keep the network and lbp running (until Ctrl-C, at most
    /// ten minutes) to try it by hand; the commands to try are printed.
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
    // Without the handlers Ctrl-C would still end the demo, only without its
    // teardown: nothing to do but go on.
    let _ = lbp_runtime::sys::on_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP], on_signal);
    lbp_runtime::sys::sigpipe(true);
}

/// `lbp demo`.
pub fn main(args: DemoArgs) -> ExitCode {
    if lbp_runtime::sys::euid() != 0 {
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

/// Everything the demo made, removed on drop in field order: the live view and
/// the client first, then the agents, lbp, the servers, the namespaces, and the
/// files.
struct Demo {
    live: Option<view::Live>,
    load: Option<Arc<Load>>,
    agents: Kids,
    lbp: Option<LbpChild>,
    servers: Servers,
    namespaces: Vec<Netns>,
    policy: RemoveFile,
    reload: RemoveFile,
    secret: RemoveFile,
}

fn demo(args: &DemoArgs) -> Result<bool, String> {
    let prefix = format!("lbpdemo-{}", std::process::id());
    let file = |ext: &str| RemoveFile(std::env::temp_dir().join(format!("{prefix}.{ext}")));
    let mut d = Demo {
        live: None,
        load: None,
        agents: Kids::default(),
        lbp: None,
        servers: Servers::new(),
        namespaces: Vec::new(),
        policy: file("lbp"),
        reload: file("reload.lbp"),
        secret: file("secret"),
    };
    write_file(&d.policy.0, POLICY)?;
    write_file(&d.reload.0, &steps::reloaded())?;
    write_file(&d.secret.0, &secret()?)?;

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
        .args(["--tap", "lbp0", "--stats-interval", "0"])
        .args(["--reports", &format!("0.0.0.0:{}", steps::REPORTS_PORT)])
        .arg("--secret-file")
        .arg(&d.secret.0);
    say!("lbp demo: starting lbp run --rings {rings} on the built-in policy");
    let lbp = d.lbp.insert(LbpChild::start(cmd)?);
    say!("{}", lbp.ready);

    // The client's requests, from a thread in the client's namespace, and (on a
    // terminal) the live view.
    let load = Arc::new(Load::start(client.path()));
    d.load = Some(load.clone());
    d.live = view::Live::start(control.clone(), load.clone());
    let lbp = d.lbp.as_ref().ok_or("lbp")?;
    let mut cx = steps::Ctx {
        load: &load,
        lbp,
        control: &control,
        client,
        backends: [b1, b2, b3],
        servers: &d.servers,
        agents: &mut d.agents,
        exe: &exe,
        secret: &d.secret.0,
        reload_policy: &d.reload.0,
        n: u64::from(args.requests),
    };
    let outcomes = steps::run(&mut cx);
    // Ctrl-C ends `--keep` normally: only an interruption before here fails.
    let steps_interrupted = interrupted();
    let lbp = d.lbp.as_mut().ok_or("lbp")?;
    if args.keep && !interrupted() {
        keep(&prefix, &exe, &control, &load, lbp);
    }
    load.pause();
    // The live view off the screen before the summary.
    d.live = None;
    let alive = lbp.alive();
    let status = lbp.stop();
    summary(&outcomes, steps_interrupted);
    match lbp.final_line() {
        Some(line) => say!("  {line}"),
        None => say!("  lbp: no final summary (exit status {status:?})"),
    }
    // On a terminal, Ctrl-C reaches lbp run too (the same process group): it
    // then ends on its own, cleanly.
    let clean = (alive || interrupted()) && status.is_some_and(|s| s.success());
    if !clean {
        say!(
            "lbp demo: lbp run did not end cleanly (running until the end: {alive}; exit status {status:?})"
        );
        for line in lbp.stderr_tail(20) {
            say!("  | {line}");
        }
    }
    drop(d);
    say!("lbp demo: removed the namespaces {prefix}-*");
    let held = outcomes.iter().filter(|o| o.held).count();
    let ok = clean && !steps_interrupted && held == STEPS.len();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.held && !o.interrupted)
        .map(|o| o.name)
        .collect();
    if ok {
        say!("lbp demo: OK: all {held} steps held");
    } else if steps_interrupted && failed.is_empty() {
        say!(
            "lbp demo: interrupted (Ctrl-C): {held} of {} steps held before",
            STEPS.len()
        );
    } else {
        say!(
            "lbp demo: FAILED: {held} of {} steps held{}{}",
            STEPS.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join(", "))
            },
            if steps_interrupted {
                "; interrupted (Ctrl-C)"
            } else {
                ""
            }
        );
    }
    Ok(ok)
}

fn check_interrupt() -> Result<(), String> {
    if interrupted() {
        return Err("interrupted".into());
    }
    Ok(())
}

/// Write a file of the demo's (readable by root only: the agents' secret is
/// one of them).
fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A new secret for the agents' reports: 32 hexadecimal digits from the
/// kernel's random numbers.
fn secret() -> Result<String, String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `--keep`: the commands to try, then wait for Ctrl-C (ten minutes at most)
/// while the client sends a few requests a second.
fn keep(
    prefix: &str,
    exe: &std::path::Path,
    control: &std::path::Path,
    load: &Load,
    lbp: &mut LbpChild,
) {
    let (exe, control) = (exe.display(), control.display());
    let b2 = BACKENDS[1].1;
    say!(
        "lbp demo: kept running (Ctrl-C ends it and removes everything; ten minutes at most). Try:"
    );
    for c in [
        format!("sudo {exe} stats --control {control} --watch"),
        format!("sudo {exe} backends --control {control}"),
        format!("sudo {exe} drain {b2} --control {control}"),
        format!("sudo {exe} undrain {b2} --control {control}"),
        format!("sudo ip netns exec {prefix}-client curl http://{VIP4}/"),
        format!("sudo ip netns exec {prefix}-client curl 'http://[{VIP6}]/'"),
    ] {
        say!("  {c}");
    }
    load.set_rate(KEEP_RATE);
    load.phase("kept running", None);
    let end = Instant::now() + KEEP_LIMIT;
    while !interrupted() && Instant::now() < end && lbp.alive() {
        std::thread::sleep(Duration::from_millis(100));
    }
    load.pause();
}

/// Every step's result and figures.
fn summary(outcomes: &[Outcome], interrupted: bool) {
    say!("lbp demo: summary");
    for name in STEPS {
        match outcomes.iter().find(|o| o.name == name) {
            Some(o) if o.interrupted => say!("  {name:<8} {:<6}  interrupted (Ctrl-C)", "-"),
            Some(o) => say!(
                "  {name:<8} {:<6}  {}",
                if o.held { "held" } else { "FAILED" },
                o.figures
            ),
            None if interrupted => say!("  {name:<8} {:<6}  interrupted before it ran", "-"),
            None => say!("  {name:<8} {:<6}  did not run", "-"),
        }
    }
}
