//! `lbp run`: the appliance process. Checks and compiles the policy, binds its
//! interfaces to NIC rings (`lbp_runtime::run::bind`), creates the TAP that
//! carries the appliance's own addresses, starts the switching cores (one thread
//! each, pinned), and runs the control loop on the calling thread until SIGINT
//! or SIGTERM; then stops the cores, releases everything (XDP programs detached,
//! TAP removed) and prints a final summary.
//!
//! This is the binary's side: arguments, threads, CPU pinning, signals and
//! printing. The loops themselves are `lbp_runtime::run`; the compiled policy
//! reaches them through [`JitPolicy`], so the runtime never sees Cranelift.
//!
//! Output: exactly one line on stdout, `lbp: ready: ...`, once the ports are
//! bound and every switching core runs; everything else (fallbacks, periodic
//! summaries, the final summary, errors) goes to stderr. Exit status 0 after a
//! signal, 1 on any error at start.

use std::io::Write;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lbp_abi::{Decision, Fields};
use lbp_compiler::Backend;
use lbp_runtime::config::Appliance;
use lbp_runtime::conn::ConnTable;
use lbp_runtime::control::health::Checks;
use lbp_runtime::control::probe::{self, Prober};
use lbp_runtime::control::report;
use lbp_runtime::control::steer::Steering;
use lbp_runtime::generation::{Decide, Generation, Published};
use lbp_runtime::neigh::NeighTable;
use lbp_runtime::ring::tap::{Tap, TapConfig};
use lbp_runtime::run::{
    BindSpec, BoundKind, Control, Core, DROP_NAMES, LOCAL_LINK, LocalSide, Rings, Snapshot, Totals,
    bind, local_addresses, monotonic_ns,
};
use lbp_runtime::switch::{Loads, Shared};

/// Arguments of `lbp run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The policy to run.
    policy: PathBuf,
    /// Bind the policy's interface POLICY_NAME to the OS interface OS_NAME
    /// (default: the OS interface of the same name). Repeatable.
    #[arg(long = "iface", value_name = "POLICY_NAME=OS_NAME")]
    iface: Vec<String>,
    /// CPU ids (`0,2`, `1-3`): the first runs the control loop, each other one a
    /// switching core. One CPU: both share it. Default: the CPUs lbp may run
    /// on, as many switching cores as the interfaces have receive queues.
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Size of the connection table.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_connections: usize,
    /// Receive depth of each AF_XDP socket: frames lent to the kernel and RX
    /// ring entries (a power of two, 64 to 65 536). Deep, so that bursts do not
    /// overflow it; each switching core holds about 2 KiB times this per
    /// interface.
    #[arg(long, default_value_t = BindSpec::DEFAULT_RX_RING, value_name = "N",
          value_parser = parse_rx_ring)]
    rx_ring: u32,
    /// NIC rings: AF_XDP (falling back to io_uring over AF_PACKET per interface
    /// when XDP cannot attach or bind), AF_XDP only, or io_uring only.
    #[arg(long, value_enum, default_value = "auto")]
    rings: RingsArg,
    /// Name of the TAP interface that carries the appliance's own addresses.
    #[arg(long, default_value = "lbp0", value_name = "NAME")]
    tap: String,
    /// Seconds between summary lines on stderr (0: none).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    stats_interval: u64,
    /// Run lbp's bare forwarder instead of the policy (receive, swap MACs,
    /// transmit out of the other interface of a two-interface policy, or out of
    /// the same one otherwise); no TAP. For benchmarks.
    #[arg(long)]
    bare: bool,
    /// Take load reports from the back ends' agents (`lbp agent`) on this UDP
    /// address (an address of the appliance, reached through the TAP, or
    /// 0.0.0.0), and steer the weights of pools with a `weight =` formula by
    /// them. Needs --secret-file.
    #[arg(long, value_name = "ADDR:PORT", requires = "secret_file")]
    reports: Option<std::net::SocketAddr>,
    /// The secret the agents share with the appliance (a file; surrounding
    /// whitespace ignored; at least 16 bytes).
    #[arg(long, value_name = "FILE", requires = "reports")]
    secret_file: Option<PathBuf>,
}

/// `--rx-ring`: a power of two from 64 to 65 536.
fn parse_rx_ring(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (64..=65536).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: expected a power of two from 64 to 65536")),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum RingsArg {
    Auto,
    Xdp,
    Uring,
}

/// The compiled policy as the runtime calls it.
struct JitPolicy(lbp_compiler::jit::Jit);

impl Decide for JitPolicy {
    fn decide(&self, f: &Fields) -> Decision {
        Backend::decide(&self.0, f)
    }
}

/// Set by SIGINT and SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<(), String> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; all-zero is a valid value (empty
        // mask, no flags), then the handler is filled in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // `sa` is valid for the call and the old action is not asked for.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(format!(
                "cannot install a signal handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid and its size is passed; pid 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return vec![0];
    }
    // SAFETY: CPU_ISSET reads the set, in bounds for every id below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pin the calling thread to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE by `parse_cpus`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid and its size is passed; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `0,2,4-6` to CPU ids, in order, without repeats.
fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--cores `{s}`: expected CPU ids like `0,1` or `0-3`");
    let mut v: Vec<usize> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        for c in a..=b {
            if !v.contains(&c) {
                v.push(c);
            }
        }
    }
    if v.is_empty() {
        return Err(bad());
    }
    Ok(v)
}

/// Receive queues of an OS interface (1 when unknown).
fn rx_queues(os_name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{os_name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The MAC of an OS interface, from sysfs.
fn os_mac(os_name: &str) -> Result<[u8; 6], String> {
    let path = format!("/sys/class/net/{os_name}/address");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no such interface `{os_name}` (no {path})"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{path}: not a MAC address: `{}`", text.trim()));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("{path}: not a MAC address"))?;
    }
    Ok(mac)
}

/// What an errno usually means at start.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (lbp run needs root: CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF)"
        }
        Some(libc::EBUSY) => " (the interface is in use: another XDP program or TAP holds it)",
        Some(libc::ENODEV) | Some(libc::ENXIO) => " (no such interface)",
        _ => "",
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("lbp: {msg}");
    ExitCode::FAILURE
}

/// `lbp run`.
pub fn main(args: RunArgs) -> ExitCode {
    match start(&args) {
        Ok(code) => code,
        Err(msg) => fail(msg),
    }
}

fn start(args: &RunArgs) -> Result<ExitCode, String> {
    install_signal_handlers()?;
    let (_, _, prog) = super::common::load(&args.policy)?;
    let jit = lbp_compiler::jit::compile(&prog)
        .map_err(|e| format!("{}: cannot compile: {e}", args.policy.display()))?;
    let mut app = crate::appliance::appliance(&prog);
    if app.interfaces.is_empty() {
        return Err(format!(
            "{}: the policy has no interface to run on",
            args.policy.display()
        ));
    }

    // Policy interfaces to OS interfaces.
    let mut os_names: Vec<String> = app.interfaces.iter().map(|i| i.name.clone()).collect();
    for m in &args.iface {
        let Some((p, o)) = m.split_once('=') else {
            return Err(format!("--iface `{m}`: expected POLICY_NAME=OS_NAME"));
        };
        let Some(i) = app.interfaces.iter().position(|i| i.name == p) else {
            return Err(format!("--iface `{m}`: the policy has no interface `{p}`"));
        };
        os_names[i] = o.to_string();
    }
    for (iface, os) in app.interfaces.iter_mut().zip(&os_names) {
        let mac = os_mac(os).map_err(|e| format!("interface `{}`: {e}", iface.name))?;
        if iface.mac == [0; 6] {
            iface.mac = mac;
        }
    }

    // Cores: the first is control, the others switching.
    let cpus = match &args.cores {
        Some(s) => parse_cpus(s)?,
        None => {
            let all = allowed_cpus();
            let queues = os_names.iter().map(|n| rx_queues(n)).min().unwrap_or(1);
            let switching = all.len().saturating_sub(1).clamp(1, queues);
            let mut v = all;
            v.truncate(if v.len() == 1 { 1 } else { 1 + switching });
            v
        }
    };
    let control_cpu = cpus[0];
    let switch_cpus: Vec<usize> = if cpus.len() == 1 {
        vec![cpus[0]]
    } else {
        cpus[1..].to_vec()
    };

    let rings = match args.rings {
        RingsArg::Auto => Rings::Auto,
        RingsArg::Xdp => Rings::Xdp,
        RingsArg::Uring => Rings::Uring,
    };
    let bound = bind(&BindSpec {
        os_names: os_names.clone(),
        cores: switch_cpus.len(),
        rings,
        rx_ring: args.rx_ring,
    })
    .map_err(|e| {
        let who = app
            .interfaces
            .iter()
            .zip(&os_names)
            .find(|(_, o)| **o == e.os_name)
            .map(|(i, _)| format!("interface `{}` (OS `{}`)", i.name, e.os_name))
            .unwrap_or_else(|| e.os_name.clone());
        format!("{who}: {}: {}{}", e.what, e.error, hint(&e.error))
    })?;
    for ((iface, os), kind) in app.interfaces.iter().zip(&os_names).zip(&bound.kinds) {
        if let BoundKind::Uring {
            xdp_error: Some(why),
        } = kind
        {
            eprintln!(
                "lbp: interface `{}` (OS `{os}`): AF_XDP unavailable ({why}); using io_uring over AF_PACKET",
                iface.name
            );
        }
    }

    // The TAP: the appliance's own addresses, for the programs of this box.
    let tap = if args.bare {
        None
    } else {
        Some(make_tap(&args.tap, &app)?)
    };
    let tap_name = tap.as_ref().map(|t| t.name().to_string());
    let tap = tap.map(|t| Arc::new(Mutex::new(t)));

    // Tables and the first generation.
    let most_backends = app
        .services
        .iter()
        .map(|s| s.backends.len())
        .max()
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        conns: ConnTable::new(args.max_connections.max(1)),
        neigh: NeighTable::new(4096),
        loads: Loads::new(app.services.len(), most_backends),
    });
    let policy: Arc<dyn Decide + Send + Sync> = Arc::new(JitPolicy(jit));
    let published = Arc::new(Published::new(
        Generation::new(Arc::clone(&policy), app.clone()),
        switch_cpus.len(),
    ));
    let mut steering = open_steering(args, &app)?;

    // The switching cores.
    let kinds = bound.kinds.clone();
    let mut redirects = bound.redirects;
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(switch_cpus.len());
    let mut reports = Vec::with_capacity(switch_cpus.len());
    for (c, (io, &cpu)) in bound.cores.into_iter().zip(&switch_cpus).enumerate() {
        let Some(reader) = published.register() else {
            STOP.store(true, Ordering::SeqCst);
            break;
        };
        let local = tap.as_ref().map(|t| LocalSide {
            port: Arc::clone(t),
            poll: c == 0,
            link: LOCAL_LINK,
        });
        let mut core = Core::new(io, local, reader, Arc::clone(&shared));
        reports.push(core.report());
        let started = Arc::clone(&started);
        let bare = args.bare;
        let h = std::thread::Builder::new()
            .name(format!("lbp-core{c}"))
            .spawn(move || -> Result<Snapshot, String> {
                if let Err(e) = pin(cpu) {
                    STOP.store(true, Ordering::SeqCst);
                    return Err(format!("switching core {c}: cannot pin to CPU {cpu}: {e}"));
                }
                started.fetch_add(1, Ordering::SeqCst);
                if bare {
                    core.run_bare(&STOP, monotonic_ns);
                } else {
                    core.run(&STOP, monotonic_ns);
                }
                Ok(core.finish())
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                STOP.store(true, Ordering::SeqCst);
                eprintln!("lbp: cannot start switching core {c}: {e}");
                break;
            }
        }
    }
    let control = Control {
        published: Arc::clone(&published),
        shared: Arc::clone(&shared),
        reports,
    };
    if let Err(e) = pin(control_cpu) {
        eprintln!("lbp: control: cannot pin to CPU {control_cpu}: {e}");
    }

    // Ready once every core runs (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < switch_cpus.len()
        && !STOP.load(Ordering::SeqCst)
        && Instant::now() < deadline
        && !handles.iter().any(|h| h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut start_error = None;
    if started.load(Ordering::SeqCst) == switch_cpus.len() && handles.len() == switch_cpus.len() {
        println!(
            "lbp: ready: {}",
            ready_details(
                &app,
                &os_names,
                &kinds,
                &switch_cpus,
                control_cpu,
                &tap_name,
                args.bare
            )
        );
        let _ = std::io::stdout().flush();
        control_loop(
            &control,
            args.stats_interval,
            args.bare,
            &handles,
            steering.as_mut().map(|s| (s, &policy, &app)),
        );
        if let Some(r) = steering.as_ref().filter(|r| r.sock.is_some()) {
            let c = r.steering.counts;
            eprintln!(
                "lbp: reports: admitted {}, forged {}, replayed {}, stale {}, malformed {}, \
                 unknown back end {}, undefined weights {}, weight publications {}",
                c.admitted,
                c.forged,
                c.replayed,
                c.stale,
                c.malformed,
                c.unknown_backend,
                c.undefined,
                c.publications
            );
        }
    } else if !STOP.load(Ordering::SeqCst) {
        start_error = Some("the switching cores did not start".to_string());
    }

    // Stop: cores, then ports (in the cores), XDP programs, TAP.
    STOP.store(true, Ordering::SeqCst);
    let mut snaps = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => snaps.push(s),
            Ok(Err(e)) => start_error = start_error.or(Some(e)),
            Err(_) => start_error = start_error.or(Some("a switching core panicked".into())),
        }
    }
    redirects.clear();
    drop(tap);
    let mut totals = Totals {
        connections: shared.conns.len() as u64,
        ..Totals::default()
    };
    for s in &snaps {
        totals.add(s);
    }
    eprintln!("lbp: final: {}", summary(&totals, None, args.bare));
    match start_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What the control loop steers the weights by: the agents' reports (their
/// socket) and the health checks (their probers), with the steering state.
struct Reports {
    sock: Option<UdpSocket>,
    probes: Option<Probes>,
    steering: Steering,
}

/// The running health checks and their states (a back end is up when all of
/// its checks are).
struct Probes {
    prober: Prober,
    health: Checks,
}

/// The steering of `lbp run`: reports when `--reports` is given, health checks
/// when the policy has any (none for the bare forwarder).
fn open_steering(args: &RunArgs, app: &Appliance) -> Result<Option<Reports>, String> {
    let reports = match (&args.reports, &args.secret_file) {
        (Some(addr), Some(secret)) => Some(open_reports(*addr, secret)?),
        _ => None,
    };
    let targets = if args.bare {
        Vec::new()
    } else {
        probe::targets(app)
    };
    if reports.is_none() && targets.is_empty() {
        return Ok(None);
    }
    let (sock, key) = match reports {
        Some((sock, key)) => (Some(sock), key),
        None => (None, Vec::new()),
    };
    let steering = Steering::new(app, &key);
    let probes = if targets.is_empty() {
        None
    } else {
        let prober =
            Prober::start(&targets).map_err(|e| format!("starting the health checks: {e}"))?;
        let health = Checks::new(
            targets
                .iter()
                .map(|t| ((t.service, t.backend), t.check.rise, t.check.fall)),
        );
        Some(Probes { prober, health })
    };
    Ok(Some(Reports {
        sock,
        probes,
        steering,
    }))
}

/// Open the reports socket (non-blocking) and read the secret.
fn open_reports(addr: std::net::SocketAddr, secret: &Path) -> Result<(UdpSocket, Vec<u8>), String> {
    let key = super::common::read_secret(secret)?;
    let sock = UdpSocket::bind(addr).map_err(|e| format!("--reports {addr}: {e}"))?;
    sock.set_nonblocking(true)
        .map_err(|e| format!("--reports {addr}: {e}"))?;
    Ok((sock, key))
}

/// Reports taken per control tick at most: a flood cannot hold the loop.
const REPORTS_PER_TICK: usize = 4096;

/// Take the waiting reports and publish new weights if they call for it.
fn steer(
    r: &mut Reports,
    control: &Control,
    policy: &Arc<dyn Decide + Send + Sync>,
    app: &Appliance,
) {
    let mut buf = [0u8; report::MAX_REPORT + 1];
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let now_ms = monotonic_ns() / 1_000_000;
    if let Some(sock) = &r.sock {
        for _ in 0..REPORTS_PER_TICK {
            match sock.recv(&mut buf) {
                Ok(n) => r.steering.take(&buf[..n], now_us, now_ms),
                Err(_) => break,
            }
        }
    }
    if let Some(p) = &mut r.probes {
        for (i, ok) in p.prober.results() {
            let Some(((s, b), up)) = p.health.observe(i, ok) else {
                continue;
            };
            let Some(st) = r.steering.state_mut(s, b) else {
                continue;
            };
            st.down = !up;
            let svc = &app.services[s];
            eprintln!(
                "lbp: health: service {} back end {} is {}",
                svc.name,
                svc.backends[b].addr,
                if up { "up" } else { "down" }
            );
        }
    }
    if let Some(w) = r.steering.weights_to_publish(app, now_ms) {
        let text: Vec<String> = app
            .services
            .iter()
            .zip(&w)
            .map(|(s, ws)| {
                let ws: Vec<String> = ws.iter().map(u32::to_string).collect();
                format!("{} {}", s.name, ws.join(" "))
            })
            .collect();
        let id = control.published.publish(Generation::with_weights(
            Arc::clone(policy),
            app.clone(),
            &w,
        ));
        eprintln!("lbp: weights: generation {id}: {}", text.join("; "));
    }
}

/// The control loop: housekeeping every 100 ms, the reports and health checks
/// (new weights published here), a summary line every `interval` seconds,
/// until the stop flag is set or a core ends on its own.
fn control_loop<T>(
    control: &Control,
    interval: u64,
    bare: bool,
    cores: &[std::thread::JoinHandle<T>],
    mut reports: Option<(&mut Reports, &Arc<dyn Decide + Send + Sync>, &Appliance)>,
) {
    let mut n = 0u64;
    let mut last = control.totals();
    let mut last_at = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
        control.tick(n, monotonic_ns());
        if let Some((r, policy, app)) = reports.as_mut() {
            steer(r, control, policy, app);
        }
        if cores.iter().any(|h| h.is_finished()) {
            break;
        }
        if interval > 0 && last_at.elapsed() >= Duration::from_secs(interval) {
            let now = control.totals();
            let secs = last_at.elapsed().as_secs_f64();
            eprintln!("lbp: stats: {}", summary(&now, Some((&last, secs)), bare));
            last = now;
            last_at = Instant::now();
        }
    }
}

/// One summary line: rates against `prev` over `secs` seconds, or totals.
fn summary(t: &Totals, prev: Option<(&Totals, f64)>, bare: bool) -> String {
    let mut s = match prev {
        Some((p, secs)) => {
            let rate = |a: u64, b: u64| ((a.saturating_sub(b)) as f64 / secs.max(1e-3)) as u64;
            format!(
                "in {} pps, out {} pps",
                rate(t.rx_packets, p.rx_packets),
                rate(t.tx_packets, p.tx_packets)
            )
        }
        None => format!("in {} packets, out {} packets", t.rx_packets, t.tx_packets),
    };
    if bare {
        s += &format!(", forwarded {}", t.bare_forwarded);
    } else {
        s += &format!(
            ", to tap {}, from tap {}, new connections {}, connections {}",
            t.to_local, t.from_local, t.new_connections, t.connections
        );
    }
    let mut reasons: Vec<String> = DROP_NAMES
        .iter()
        .filter(|(r, _)| t.drops[*r as usize] > 0)
        .map(|(r, name)| format!("{name} {}", t.drops[*r as usize]))
        .collect();
    if t.tx_refused > 0 {
        reasons.push(format!("tx-full {}", t.tx_refused));
    }
    if t.rx_dropped > 0 {
        // Not the core's: the kernel found no room at the port (for AF_XDP,
        // an empty fill ring or a full RX ring).
        s += &format!(", dropped by the kernel before the core {}", t.rx_dropped);
    }
    s += &format!(", drops {}", t.dropped());
    if !reasons.is_empty() {
        s += &format!(" ({})", reasons.join(", "));
    }
    s
}

fn ready_details(
    app: &Appliance,
    os_names: &[String],
    kinds: &[BoundKind],
    switch_cpus: &[usize],
    control_cpu: usize,
    tap: &Option<String>,
    bare: bool,
) -> String {
    let ifaces: Vec<String> = app
        .interfaces
        .iter()
        .zip(os_names)
        .zip(kinds)
        .map(|((i, os), k)| {
            let how = match k {
                BoundKind::Xdp { mode, zero_copy } => format!(
                    "xdp {mode} {}",
                    if *zero_copy { "zero-copy" } else { "copy" }
                ),
                BoundKind::Uring { .. } => "io_uring".to_string(),
            };
            if i.name == *os {
                format!("{} {how}", i.name)
            } else {
                format!("{}={os} {how}", i.name)
            }
        })
        .collect();
    let cores = switch_cpus
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let n = switch_cpus.len();
    format!(
        "{} interface{} ({}), {n} switching core{} (cpu {cores}), control on cpu {control_cpu}{}{}",
        app.interfaces.len(),
        if app.interfaces.len() == 1 { "" } else { "s" },
        ifaces.join(", "),
        if n == 1 { "" } else { "s" },
        match tap {
            Some(t) => format!(", tap {t}"),
            None => String::new(),
        },
        if bare { ", bare forwarder" } else { "" },
    )
}

/// Create the TAP with the appliance's addresses and the kernel routes that
/// send replies back through it. The first IPv4 address and the IPv6 ones are
/// set by `Tap::create` (ioctls); further IPv4 addresses and the policy's
/// routes beyond its connected networks are added with `ip` (a warning if that
/// fails: the TAP still works for the first address).
fn make_tap(name: &str, app: &Appliance) -> Result<Tap, String> {
    let addrs = local_addresses(app);
    let first_v4 = addrs.iter().find_map(|&(a, l)| match a {
        IpAddr::V4(v) => Some((v, l)),
        IpAddr::V6(_) => None,
    });
    let ipv6 = addrs
        .iter()
        .filter_map(|&(a, l)| match a {
            IpAddr::V6(v) => Some((v, l)),
            IpAddr::V4(_) => None,
        })
        .collect();
    let tap = Tap::create(&TapConfig {
        name: name.to_string(),
        mac: LOCAL_LINK.tap_mac,
        mtu: 1500,
        ipv4: first_v4,
        ipv6,
    })
    .map_err(|e| format!("cannot create the TAP `{name}`: {e}{}", hint(&e)))?;
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for &(a, l) in &addrs {
        if a.is_ipv4() && Some(a) != first_v4.map(|(v, _)| IpAddr::V4(v)) {
            cmds.push(vec![
                "addr".into(),
                "add".into(),
                format!("{a}/{l}"),
                "dev".into(),
                name.into(),
            ]);
        }
    }
    for r in app.routes.iter().filter(|r| r.via.is_some()) {
        let fam = if r.prefix.is_ipv4() { "-4" } else { "-6" };
        cmds.push(vec![
            fam.into(),
            "route".into(),
            "replace".into(),
            format!("{}/{}", r.prefix, r.len),
            "dev".into(),
            name.into(),
            "metric".into(),
            "1024".into(),
        ]);
    }
    for c in cmds {
        match Command::new("ip").args(&c).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lbp: warning: ip {}: {}",
                c.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("lbp: warning: ip {}: {e}", c.join(" ")),
        }
    }
    Ok(tap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_ring_depths() {
        assert_eq!(parse_rx_ring("64"), Ok(64));
        assert_eq!(parse_rx_ring("16384"), Ok(16384));
        assert_eq!(parse_rx_ring("65536"), Ok(65536));
        for bad in ["0", "32", "1000", "131072", "-1", "many", ""] {
            assert!(parse_rx_ring(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpus("2-4,1,3").unwrap(), vec![2, 3, 4, 1]);
        assert_eq!(parse_cpus("5").unwrap(), vec![5]);
        for bad in ["", "a", "3-1", "1,,2", "99999"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_lines_name_the_drop_reasons() {
        let mut t = Totals {
            rx_packets: 300,
            tx_packets: 200,
            ..Totals::default()
        };
        t.drops[lbp_runtime::switch::DropReason::NoRoute as usize] = 7;
        let prev = Totals::default();
        let line = summary(&t, Some((&prev, 2.0)), false);
        assert!(line.starts_with("in 150 pps, out 100 pps"), "{line}");
        assert!(line.ends_with("drops 7 (no-route 7)"), "{line}");
        assert!(summary(&t, None, true).contains("forwarded 0"));
        assert!(!line.contains("before the core"), "{line}");
        t.rx_dropped = 5;
        let line = summary(&t, None, true);
        assert!(
            line.contains("dropped by the kernel before the core 5, drops 7"),
            "{line}"
        );
    }
}
