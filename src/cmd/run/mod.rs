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
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lbp_runtime::app::Registry;
use lbp_runtime::config::Appliance;
use lbp_runtime::conn::ConnTable;
use lbp_runtime::control::socket::ControlSocket;
use lbp_runtime::generation::{Decide, Generation, Published};
use lbp_runtime::neigh::NeighTable;
use lbp_runtime::run::{
    BindSpec, BoundKind, Control, Core, DROP_NAMES, LOCAL_LINK, LocalSide, Rings, Snapshot, Totals,
    bind, monotonic_ns,
};
use lbp_runtime::switch::Shared;

mod api;
mod control;
mod fast;
mod host;
use api::Sources;
use control::{Controller, JitPolicy};
use fast::{Datapath, Fast, XdpTx};
use host::{STOP, hint, install_signal_handlers, make_tap, os_mac, parse_cpus, rx_queues};

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
    /// Where packets are decided: the policy compiled to eBPF decides in the
    /// kernel's XDP hook on the interfaces bound with AF_XDP, and what it
    /// cannot decide goes to the switching cores (`xdp`; `auto` does so where
    /// the policy fits the eBPF back end's limits), or the switching cores
    /// decide everything (`cores`).
    #[arg(long, value_enum, default_value = "auto")]
    datapath: Datapath,
    /// Whether the XDP fast path may send frames out of an interface itself
    /// (XDP_TX or a redirect: the TCP resets it decides, the DSR frames it
    /// balances), or leaves those frames to the switching cores. `auto`: on
    /// every interface but a veth, whose peer takes such frames only while
    /// it runs an XDP program of its own (otherwise they are counted as sent
    /// and lost), which lbp cannot see from its side.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_tx: XdpTx,
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
    /// The control socket (`lbp reload`, `stats`, `drain` ... talk to it);
    /// mode 0600, root only.
    #[arg(long, value_name = "PATH", default_value = crate::cmd::ctl::DEFAULT_CONTROL)]
    control: PathBuf,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address (off by
    /// default).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
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

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("lbp: {msg}");
    ExitCode::FAILURE
}

/// `lbp run`.
/// `lbp run`, whose switching cores run `apps` (each core its own instances).
pub fn main(args: RunArgs, apps: &Registry) -> ExitCode {
    match start(&args, apps) {
        Ok(code) => code,
        Err(msg) => fail(msg),
    }
}

fn start(args: &RunArgs, apps: &Registry) -> Result<ExitCode, String> {
    install_signal_handlers()?;
    let policy_path =
        std::path::absolute(&args.policy).map_err(|e| format!("{}: {e}", args.policy.display()))?;
    let (src, _, prog) = super::common::load(&args.policy, apps)?;
    let jit = super::common::compile(&args.policy, &src, &prog)?;
    let datapath = if args.bare {
        Datapath::Cores
    } else {
        args.datapath
    };
    let (fast_prog, fast_warning) =
        fast::compile(&prog, datapath).map_err(|e| format!("{}: {e}", args.policy.display()))?;
    let mut app = crate::appliance::appliance(&prog, &src);
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
            let all = lbp_runtime::sys::allowed_cpus();
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
    let shared = Arc::new(Shared {
        conns: ConnTable::new(args.max_connections.max(1)),
        neigh: NeighTable::new(4096),
        xdp_flows: Default::default(),
    });
    let policy: Arc<dyn Decide + Send + Sync> = Arc::new(JitPolicy(jit));
    let published = Arc::new(Published::new(
        Generation::new(policy, app.clone()),
        switch_cpus.len(),
    ));
    let agent_reports = match (&args.reports, &args.secret_file) {
        (Some(addr), Some(secret)) => Some(open_reports(*addr, secret)?),
        _ => None,
    };
    let control_sock = if args.bare {
        None
    } else {
        Some(ControlSocket::bind(&args.control).map_err(|e| {
            format!(
                "--control {}: cannot create the control socket: {e}",
                args.control.display()
            )
        })?)
    };
    let metrics = match args.metrics {
        Some(a) => Some(TcpListener::bind(a).map_err(|e| format!("--metrics {a}: {e}"))?),
        None => None,
    };

    // The XDP fast path, before the cores start (their rings hold what it
    // sends them meanwhile).
    let ifindexes: Vec<u32> = os_names
        .iter()
        .map(|n| lbp_runtime::ring::bpf::ifindex(n).unwrap_or(0))
        .collect();
    let tx: Vec<bool> = os_names
        .iter()
        .map(|n| match args.xdp_tx {
            XdpTx::On => true,
            XdpTx::Off => false,
            XdpTx::Auto => lbp_runtime::sys::driver(n).is_ok_and(|d| d != "veth"),
        })
        .collect();
    let mut fast = Fast::new(bound.redirects, &ifindexes, &tx);
    // `auto` on io_uring rings alone has nothing to say: the fast path needs
    // an AF_XDP interface.
    if datapath == Datapath::Xdp || (datapath == Datapath::Auto && fast.has_xdp()) {
        let installed = if fast.has_xdp() {
            published.with_active(|g| fast.install(fast_prog.as_ref(), g, &shared))
        } else {
            Err("no interface is bound with AF_XDP (--rings xdp)".to_string())
        };
        match (installed, datapath) {
            (Err(e), Datapath::Xdp) => {
                return Err(format!("--datapath xdp: {e}"));
            }
            (Err(e), _) => eprintln!("lbp: warning: {e}; every frame goes to the switching cores"),
            (Ok(()), _) => {
                if let Some(w) = &fast_warning {
                    eprintln!("lbp: warning: {w}");
                }
            }
        }
    }

    // The switching cores.
    let kinds = bound.kinds.clone();
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
        core.set_apps(apps.instances());
        reports.push(core.report());
        let started = Arc::clone(&started);
        let bare = args.bare;
        let h = std::thread::Builder::new()
            .name(format!("lbp-core{c}"))
            .spawn(move || -> Result<Snapshot, String> {
                if let Err(e) = lbp_runtime::sys::pin_thread(cpu) {
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
    // The control core: this thread, and the threads it starts (API, where a
    // reload compiles; metrics; health checks and agents), never a switching core's CPU.
    if let Err(e) = lbp_runtime::sys::pin_thread(control_cpu) {
        eprintln!("lbp: control: cannot pin to CPU {control_cpu}: {e}");
    }
    let refs = control.clone();
    let mut controller =
        Controller::new(control, app.clone(), policy_path, args.bare, agent_reports)?;
    controller.tap = tap_name.clone();
    controller.fast = fast;
    let sources = Sources {
        datapath,
        apps: apps.clone(),
        control: refs,
        view: Arc::clone(&controller.view),
    };
    let (commands_tx, commands) = std::sync::mpsc::sync_channel(64);
    let mut helpers = Vec::new();
    if let Some(sock) = control_sock {
        let src = sources.clone();
        helpers.push(
            std::thread::Builder::new()
                .name("lbp-api".into())
                .spawn(move || api::serve(sock, src, commands_tx))
                .map_err(|e| format!("cannot start the API thread: {e}"))?,
        );
    }
    if let Some(listener) = metrics {
        let src = sources.clone();
        helpers.push(
            std::thread::Builder::new()
                .name("lbp-metrics".into())
                .spawn(move || api::serve_metrics(listener, src))
                .map_err(|e| format!("cannot start the metrics thread: {e}"))?,
        );
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
            ) + if controller.fast.is_on() {
                ", xdp fast path on"
            } else {
                ""
            }
        );
        let _ = std::io::stdout().flush();
        let bare = args.bare;
        let mut last = controller.control.totals();
        controller.run(
            &commands,
            args.stats_interval,
            &handles,
            |control, secs, _| {
                let now = control.totals();
                eprintln!("lbp: stats: {}", summary(&now, Some((&last, secs)), bare));
                last = now;
            },
        );
        if let Some(c) = controller.report_counts() {
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

    // Stop: the API, cores, then ports (in the cores), XDP programs, TAP.
    STOP.store(true, Ordering::SeqCst);
    for h in helpers {
        let _ = h.join();
    }
    let fast_counters = controller.fast.counters();
    let fast_ran = fast_counters
        .get(lbp_abi::bpf::fast::SEEN as usize)
        .is_some_and(|c| c.packets > 0)
        || controller.fast.is_on();
    let redirects = controller.fast.take_redirects();
    drop(controller);
    let mut snaps = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => snaps.push(s),
            Ok(Err(e)) => start_error = start_error.or(Some(e)),
            Err(_) => start_error = start_error.or(Some("a switching core panicked".into())),
        }
    }
    drop(redirects);
    drop(tap);
    let mut totals = Totals {
        connections: shared.conns.len() as u64,
        ..Totals::default()
    };
    for s in &snaps {
        totals.add(s);
    }
    // The fast path's own counters, on the same line (what it dropped or
    // answered never reached a core).
    let fast_line = if fast_ran {
        let n = |slot: u32| fast_counters.get(slot as usize).map_or(0, |c| c.packets);
        use lbp_abi::bpf::fast::{ACTIONS, SEEN, TO_CORES};
        format!(
            "; xdp fast path: seen {}, to the cores {}, dropped {}, reset {}, balanced {}",
            n(SEEN),
            n(TO_CORES),
            n(ACTIONS + lbp_abi::Action::Drop as u32),
            n(ACTIONS + lbp_abi::Action::Reset as u32),
            n(ACTIONS + lbp_abi::Action::Balance as u32)
        )
    } else {
        String::new()
    };
    eprintln!(
        "lbp: final: {}{fast_line}",
        summary(&totals, None, args.bare)
    );
    match start_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Open the reports socket (non-blocking) and read the secret.
fn open_reports(addr: std::net::SocketAddr, secret: &Path) -> Result<(UdpSocket, Vec<u8>), String> {
    let key = super::common::read_secret(secret)?;
    let sock = UdpSocket::bind(addr).map_err(|e| format!("--reports {addr}: {e}"))?;
    sock.set_nonblocking(true)
        .map_err(|e| format!("--reports {addr}: {e}"))?;
    Ok((sock, key))
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
