//! The control loop of `lbp run`, on the control core: housekeeping, the
//! agents' reports and the health checks, the operator's commands, reloads, and
//! the publication of every new generation.
//!
//! Everything that may take long happens elsewhere: a reload's policy is read,
//! checked and compiled on the API thread ([`compile`]), which hands the loop a
//! ready [`Compiled`]; health checks and agents are polled by their own threads.
//! The loop itself only drains bounded queues (reports, check results, at most
//! [`COMMANDS_PER_TICK`] commands), builds generations (the Maglev tables,
//! milliseconds) and publishes them, so that no flood of requests or reports
//! can hold back a publication.
//!
//! What it knows of the back ends (operator state, overrides, health, reports)
//! is [`Steering`]'s; [`Steering::reload`] carries it across a reload. The
//! loop shares a [`View`] of it with the API and metrics threads, refreshed on
//! every tick and after every change.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lbp_abi::{Decision, Fields};
use lbp_compiler::Engine;
use lbp_runtime::app::Registry;
use lbp_runtime::config::Appliance;
use lbp_runtime::control::diff::{Diff, backend_text, diff};
use lbp_runtime::control::health::Checks;
use lbp_runtime::control::probe::{self, AgentPoller, Prober};
use lbp_runtime::control::report;
use lbp_runtime::control::steer::{SteerCounts, Steering};
use lbp_runtime::control::weights::{Admin, BackendState};
use lbp_runtime::generation::{Decide, Generation};
use lbp_runtime::run::{Control, monotonic_ns};

use super::fast::{Datapath, Fast};
use super::host::STOP;

/// The compiled policy as the runtime calls it.
pub struct JitPolicy(pub lbp_compiler::jit::Jit);

impl Decide for JitPolicy {
    fn decide(&self, f: &Fields) -> Decision {
        Engine::decide(&self.0, f)
    }
}

/// A policy checked, lowered and compiled, ready to publish.
pub struct Compiled {
    pub policy: Arc<dyn Decide + Send + Sync>,
    pub app: Appliance,
    pub path: PathBuf,
    /// When the request arrived, and how long reading and compiling took.
    pub requested: Instant,
    pub compile: Duration,
    /// The XDP fast path's program (`--datapath`), and why there is none when
    /// `auto` left it off.
    pub fast: Option<lbp_compiler::bpf::BpfProgram>,
    pub fast_warning: Option<String>,
}

/// Read, check, lower and compile the policy at `path`. A policy with errors
/// gives its diagnostics rendered exactly as `lbp check` prints them (`fancy`:
/// with colours and Unicode), with the count line.
pub fn compile(
    path: &Path,
    fancy: bool,
    apps: &Registry,
    datapath: Datapath,
    requested: Instant,
) -> Result<Compiled, String> {
    let src = super::super::common::read(path)?;
    let (analysis, prog) = super::super::common::analyze(&src, apps);
    if analysis.has_errors() {
        return Err(super::super::common::render_all(
            path,
            &src,
            &analysis.diagnostics,
            fancy,
        ));
    }
    let render = |e: lbp_compiler::CompileError| {
        super::super::common::render_all(path, &src, &[e.diagnostic()], fancy)
    };
    let prog = prog.map_err(render)?;
    let jit = lbp_compiler::jit::compile(&prog).map_err(render)?;
    let (fast, fast_warning) = super::fast::compile(&prog, datapath)
        .map_err(|e| format!("{}: {e}; the running policy stays", path.display()))?;
    let app = crate::appliance::appliance(&prog, &src);
    Ok(Compiled {
        policy: Arc::new(JitPolicy(jit)),
        app,
        path: path.to_path_buf(),
        requested,
        compile: requested.elapsed(),
        fast,
        fast_warning,
    })
}

/// A reply to the API thread: a line or more for people, and the data for
/// `--json`; or an error.
pub type Reply = Result<(String, serde_json::Value), String>;

/// What the API thread asks of the control loop.
pub enum Command {
    /// Publish a compiled policy.
    Publish(Box<Compiled>, Sender<Reply>),
    /// Change a back end's operator state or weight override.
    Set(SetBackend, Sender<Reply>),
    /// Bring the view up to now (the XDP fast path's counters are read by
    /// the control loop, each tick): answered once it is.
    Refresh(Sender<()>),
}

/// An operator's change to back ends.
#[derive(Clone, Debug)]
pub struct SetBackend {
    /// `addr` or `addr:port` (`[v6]:port`).
    pub backend: String,
    /// Only in this service (else in every service that has the back end).
    pub service: Option<String>,
    pub change: Change,
}

#[derive(Clone, Copy, Debug)]
pub enum Change {
    Admin(Admin),
    /// `None`: back to the computed weight.
    Weight(Option<u32>),
}

/// Reloads refused, wherever they were refused (a policy with errors on the
/// API thread, a change the running appliance cannot take here).
pub static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

/// A `Command::Refresh` is queued and not yet answered: a `stats` meanwhile
/// queues no other (a control loop slow to answer does not fill the queue
/// with them).
pub static REFRESH_PENDING: AtomicBool = AtomicBool::new(false);

/// Commands taken per tick at most.
pub const COMMANDS_PER_TICK: usize = 16;

/// Reports taken per tick at most: a flood cannot hold the loop.
const REPORTS_PER_TICK: usize = 4096;

/// How often the loop does its housekeeping.
const TICK: Duration = Duration::from_millis(100);

/// What the API and metrics threads see of the control loop.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The configuration in force (the policy's, with the bound MACs).
    pub app: Arc<Appliance>,
    pub policy_path: PathBuf,
    /// The active generation and its compile serial.
    pub generation: u64,
    pub serial: u64,
    /// Per service and back end.
    pub states: Vec<Vec<BackendState>>,
    pub weights: Vec<Vec<u32>>,
    /// Which back ends have health checks / an agent.
    pub checked: Vec<Vec<bool>>,
    pub agents: Vec<Vec<bool>>,
    pub reloads: u64,
    pub reload_failures: u64,
    pub reports: SteerCounts,
    /// The control module's clock now (to age reports), ms.
    pub now_ms: u64,
    /// The XDP fast path's counters (`lbp_abi::bpf::fast`'s slots); empty
    /// when it never ran.
    pub fast: Vec<lbp_abi::bpf::fast::Counter>,
    /// Whether a fast-path program runs now.
    pub fast_on: bool,
}

/// The running health checks and their states.
struct Probes {
    targets: Vec<probe::Target>,
    prober: Prober,
    health: Checks,
}

/// The running agent pollers.
struct Agents {
    targets: Vec<probe::AgentTarget>,
    poller: AgentPoller,
}

/// The control loop's state.
pub struct Controller {
    pub control: Control,
    app: Appliance,
    policy_path: PathBuf,
    /// The MAC of each bound interface (policy order), for a reloaded policy's
    /// interfaces that name none.
    os_macs: Vec<[u8; 6]>,
    bare: bool,
    steering: Steering,
    reports: Option<UdpSocket>,
    probes: Option<Probes>,
    agents: Option<Agents>,
    reloads: u64,
    /// The TAP's name, whose kernel routes follow the policy's.
    pub tap: Option<String>,
    /// The XDP fast path (`--datapath`).
    pub fast: Fast,
    /// The fast path's last publication error (said once).
    fast_error: Option<String>,
    pub view: Arc<Mutex<View>>,
}

fn now_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

impl Controller {
    /// The control loop's state for the appliance `app` started from
    /// `policy_path`; `reports`: the agents' socket and the shared key.
    pub fn new(
        control: Control,
        app: Appliance,
        policy_path: PathBuf,
        bare: bool,
        reports: Option<(UdpSocket, Vec<u8>)>,
    ) -> Result<Controller, String> {
        let (sock, key) = match reports {
            Some((s, k)) => (Some(s), k),
            None => (None, Vec::new()),
        };
        let os_macs = app.interfaces.iter().map(|i| i.mac).collect();
        let mut c = Controller {
            control,
            steering: Steering::new(&app, &key),
            app,
            policy_path,
            os_macs,
            bare,
            reports: sock,
            probes: None,
            agents: None,
            reloads: 0,
            tap: None,
            fast: Fast::new(Vec::new(), &[], &[]),
            fast_error: None,
            view: Arc::new(Mutex::new(View::default())),
        };
        c.start_checks()?;
        c.refresh_view();
        Ok(c)
    }

    /// (Re)start the health checks and agent pollers for the current
    /// configuration, if they differ from the running ones. Checks of a back end
    /// that is down start down.
    fn start_checks(&mut self) -> Result<(), String> {
        let (targets, agent_targets) = if self.bare {
            (Vec::new(), Vec::new())
        } else {
            (probe::targets(&self.app), probe::agent_targets(&self.app))
        };
        if self.probes.as_ref().map(|p| &p.targets) != Some(&targets) {
            self.probes = None;
            if !targets.is_empty() {
                let prober = Prober::start(&targets)
                    .map_err(|e| format!("starting the health checks: {e}"))?;
                let states = self.steering.states();
                let health = Checks::starting(
                    targets
                        .iter()
                        .map(|t| ((t.service, t.backend), t.check.rise, t.check.fall)),
                    |(s, b)| {
                        states
                            .get(s)
                            .and_then(|v| v.get(b))
                            .is_some_and(|st| st.down)
                    },
                );
                self.probes = Some(Probes {
                    targets,
                    prober,
                    health,
                });
            }
        }
        if self.agents.as_ref().map(|a| &a.targets) != Some(&agent_targets) {
            self.agents = None;
            if !agent_targets.is_empty() {
                let poller = AgentPoller::start(&agent_targets)
                    .map_err(|e| format!("starting the agent checks: {e}"))?;
                self.agents = Some(Agents {
                    targets: agent_targets,
                    poller,
                });
            }
        }
        Ok(())
    }

    /// Run until the stop flag is set or a core ends on its own: commands as
    /// they come, housekeeping and steering every tick, a summary line every
    /// `interval` seconds (0: none).
    pub fn run<T>(
        &mut self,
        commands: &Receiver<Command>,
        interval: u64,
        cores: &[std::thread::JoinHandle<T>],
        mut summary: impl FnMut(&Control, f64, bool),
    ) {
        let mut n = 0u64;
        let mut next_tick = Instant::now() + TICK;
        let mut last_summary = Instant::now();
        while !STOP.load(Ordering::SeqCst) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut taken = 0;
            match commands.recv_timeout(wait) {
                Ok(c) => {
                    self.command(c);
                    taken += 1;
                    while taken < COMMANDS_PER_TICK {
                        match commands.try_recv() {
                            Ok(c) => {
                                self.command(c);
                                taken += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            if Instant::now() < next_tick {
                continue;
            }
            next_tick = Instant::now() + TICK;
            n += 1;
            self.control.tick(n, monotonic_ns());
            self.steer();
            self.publish_fast();
            self.refresh_view();
            if cores.iter().any(|h| h.is_finished()) {
                break;
            }
            if interval > 0 && last_summary.elapsed() >= Duration::from_secs(interval) {
                summary(&self.control, last_summary.elapsed().as_secs_f64(), false);
                last_summary = Instant::now();
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Publish(compiled, reply) => {
                let r = self.reload(*compiled);
                if r.is_err() {
                    RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(r);
            }
            Command::Set(set, reply) => {
                let _ = reply.send(self.set(&set));
            }
            Command::Refresh(reply) => {
                self.refresh_view();
                REFRESH_PENDING.store(false, Ordering::Release);
                let _ = reply.send(());
                return;
            }
        }
        self.refresh_view();
    }

    /// Make a compiled policy the running one: refuse changes a running
    /// appliance cannot take, carry the back ends' state over, publish, and
    /// wait (bounded) until every core runs it.
    fn reload(&mut self, mut c: Compiled) -> Reply {
        if self.bare {
            return Err("the bare forwarder runs no policy to reload".into());
        }
        for (i, iface) in c.app.interfaces.iter_mut().enumerate() {
            if iface.mac == [0; 6]
                && let Some(m) = self.os_macs.get(i)
            {
                iface.mac = *m;
            }
        }
        let changes = diff(&self.app, &c.app);
        if !changes.interfaces_changed.is_empty() {
            return Err(format!(
                "{}: interfaces cannot change while the appliance runs (they are bound to \
                 NIC rings): {}; restart `lbp run` for that; the running policy stays",
                c.path.display(),
                changes.interfaces_changed.join(", ")
            ));
        }
        self.steering.reload(&self.app, &c.app);
        let weights = self.steering.weights_now(&c.app, now_ms());
        let closed = self.steering.closed();
        let g = Generation::with_weights(c.policy, c.app.clone(), &weights).closing(&closed);
        let serial = g.serial;
        let id = self.control.published.publish(g);
        let active = self.wait_active(id).map(|_| c.requested.elapsed());
        // The cores run the new policy: now the fast path's program.
        let fast_warning = match self.fast.has_xdp() {
            true => {
                let Controller { control, fast, .. } = self;
                control
                    .published
                    .with_active(|g| fast.install(c.fast.as_ref(), g, &control.shared))
                    .err()
                    .or(c.fast_warning)
            }
            false => None,
        };
        if let Some(tap) = &self.tap {
            super::host::sync_tap_routes(tap, &self.app, &c.app);
        }
        let old = std::mem::replace(&mut self.app, c.app);
        self.policy_path = c.path.clone();
        self.reloads += 1;
        let warn = self.start_checks().err();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut text = match active {
            Some(d) => format!(
                "lbp: reloaded: generation {id}, active on all cores in {:.1} ms (compile {:.1} ms)",
                ms(d),
                ms(c.compile)
            ),
            None => format!(
                "lbp: reloaded: generation {id} published, not yet active on every core after 2 s \
                 (compile {:.1} ms)",
                ms(c.compile)
            ),
        };
        text.push('\n');
        text.push_str(&changes.to_string());
        for w in warn.into_iter().chain(fast_warning) {
            eprintln!("lbp: warning: {w}");
            text.push_str(&format!("\nlbp: warning: {w}"));
        }
        eprintln!(
            "lbp: reload: generation {id} from {} ({} -> {} services)",
            self.policy_path.display(),
            old.services.len(),
            self.app.services.len()
        );
        let data = serde_json::json!({
            "generation": id,
            "serial": serial,
            "policy": self.policy_path.display().to_string(),
            "active_ms": active.map(ms),
            "compile_ms": ms(c.compile),
            "changes": diff_json(&changes),
        });
        Ok((text, data))
    }

    /// Wait until every core entered a burst in generation `id` (how long that
    /// took); `None` after 2 s.
    fn wait_active(&self, id: u64) -> Option<Duration> {
        let start = Instant::now();
        while !self.control.published.all_at_least(id) {
            if start.elapsed() > Duration::from_secs(2) {
                return None;
            }
            std::hint::spin_loop();
            if start.elapsed() > Duration::from_millis(1) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Some(start.elapsed())
    }

    fn set(&mut self, set: &SetBackend) -> Reply {
        let mut hits = Vec::new();
        for (s, svc) in self.app.services.iter().enumerate() {
            if set.service.as_ref().is_some_and(|n| *n != svc.name) {
                continue;
            }
            for (b, be) in svc.backends.iter().enumerate() {
                if backend_matches(&set.backend, be) {
                    hits.push((s, b));
                }
            }
        }
        if hits.is_empty() {
            return Err(match &set.service {
                Some(s) if !self.app.services.iter().any(|v| v.name == *s) => {
                    format!("no service `{s}`")
                }
                Some(s) => format!("service `{s}` has no back end `{}`", set.backend),
                None => format!("no service has a back end `{}`", set.backend),
            });
        }
        let mut names = Vec::new();
        for &(s, b) in &hits {
            if let Some(st) = self.steering.state_mut(s, b) {
                match set.change {
                    Change::Admin(a) => st.admin = a,
                    Change::Weight(w) => st.weight_override = w,
                }
            }
            names.push(format!(
                "{} {}",
                self.app.services[s].name,
                backend_text(&self.app.services[s].backends[b])
            ));
        }
        let id = self.publish_weights(true);
        let what = match set.change {
            Change::Admin(Admin::Ready) => "ready".to_string(),
            Change::Admin(Admin::Drain) => "draining".to_string(),
            Change::Admin(Admin::Maint) => "in maintenance".to_string(),
            Change::Weight(Some(w)) => format!("weight {w}"),
            Change::Weight(None) => "weight computed".to_string(),
        };
        let text = format!(
            "lbp: {} now {what}{}",
            names.join(", "),
            id.map(|id| format!(" (generation {id})"))
                .unwrap_or_default()
        );
        eprintln!("{text}");
        Ok((
            text,
            serde_json::json!({ "backends": names, "state": what, "generation": id }),
        ))
    }

    /// Publish the weights (and back ends in maintenance) the steering state
    /// calls for: at once when `now`, else only when they changed and the
    /// minimum gap passed. The new generation's id.
    fn publish_weights(&mut self, now: bool) -> Option<u64> {
        let t = now_ms();
        let weights = if now {
            Some(self.steering.weights_now(&self.app, t))
        } else {
            self.steering.weights_to_publish(&self.app, t)
        }?;
        let closed = self.steering.closed();
        let g = self
            .control
            .published
            .with_active(|g| g.reweighted(&weights, &closed));
        let id = self.control.published.publish(g);
        self.publish_fast();
        let text: Vec<String> = self
            .app
            .services
            .iter()
            .zip(&weights)
            .map(|(s, ws)| {
                let ws: Vec<String> = ws.iter().map(u32::to_string).collect();
                format!("{} {}", s.name, ws.join(" "))
            })
            .collect();
        eprintln!("lbp: weights: generation {id}: {}", text.join("; "));
        Some(id)
    }

    /// The active generation's balancing tables to the XDP fast path (a
    /// failure is said, and XDP keeps the tables it has).
    fn publish_fast(&mut self) {
        let Controller { control, fast, .. } = self;
        let r = control
            .published
            .with_active(|g| fast.publish(g, &control.shared));
        // Said once, not every tick it lasts.
        match r {
            Err(e) if self.fast_error.as_ref() != Some(&e) => {
                eprintln!("lbp: warning: {e}");
                self.fast_error = Some(e);
            }
            Err(_) => {}
            Ok(()) => self.fast_error = None,
        }
    }

    /// Take the waiting reports, check results and agent replies; publish new
    /// weights if they call for it.
    fn steer(&mut self) {
        let mut buf = [0u8; report::MAX_REPORT + 1];
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let t = now_ms();
        if let Some(sock) = &self.reports {
            for _ in 0..REPORTS_PER_TICK {
                match sock.recv(&mut buf) {
                    Ok(n) => self.steering.take(&buf[..n], now_us, t),
                    Err(_) => break,
                }
            }
        }
        let mut admin_changed = false;
        if let Some(p) = &mut self.probes {
            for (i, ok) in p.prober.results() {
                let Some(((s, b), up)) = p.health.observe(i, ok) else {
                    continue;
                };
                let Some(st) = self.steering.state_mut(s, b) else {
                    continue;
                };
                st.down = !up;
                let svc = &self.app.services[s];
                eprintln!(
                    "lbp: health: service {} back end {} is {}",
                    svc.name,
                    backend_text(&svc.backends[b]),
                    if up { "up" } else { "down" }
                );
            }
        }
        if let Some(a) = &self.agents {
            for (i, reply) in a.poller.results() {
                let (Some(t), Some(reply)) = (a.targets.get(i), reply) else {
                    continue;
                };
                let Some(st) = self.steering.state_mut(t.service, t.backend) else {
                    continue;
                };
                let before = st.clone();
                st.apply_agent(&reply);
                if *st != before {
                    admin_changed |= st.admin != before.admin;
                    let svc = &self.app.services[t.service];
                    eprintln!(
                        "lbp: agent: service {} back end {}: {reply:?}",
                        svc.name,
                        backend_text(&svc.backends[t.backend])
                    );
                }
            }
        }
        self.publish_weights(admin_changed);
    }

    fn refresh_view(&self) {
        let g = self.control.published.with_active(|g| {
            (
                g.id,
                g.serial,
                g.services.iter().map(|t| t.weights.clone()).collect(),
            )
        });
        let (generation, serial, weights): (u64, u64, Vec<Vec<u32>>) = g;
        let per = |targets: &mut dyn Iterator<Item = (usize, usize)>| {
            let mut v: Vec<Vec<bool>> = self
                .app
                .services
                .iter()
                .map(|s| vec![false; s.backends.len()])
                .collect();
            for (s, b) in targets {
                if let Some(x) = v.get_mut(s).and_then(|v| v.get_mut(b)) {
                    *x = true;
                }
            }
            v
        };
        let checked = per(&mut self
            .probes
            .iter()
            .flat_map(|p| p.targets.iter().map(|t| (t.service, t.backend))));
        let agents = per(&mut self
            .agents
            .iter()
            .flat_map(|a| a.targets.iter().map(|t| (t.service, t.backend))));
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if v.serial != serial {
            v.app = Arc::new(self.app.clone());
        }
        v.policy_path = self.policy_path.clone();
        v.generation = generation;
        v.serial = serial;
        v.states = self.steering.states().to_vec();
        v.weights = weights;
        v.checked = checked;
        v.agents = agents;
        v.reloads = self.reloads;
        v.reload_failures = RELOAD_FAILURES.load(Ordering::Relaxed);
        v.reports = self.steering.counts;
        v.now_ms = now_ms();
        v.fast = self.fast.counters();
        v.fast_on = self.fast.is_on();
    }

    /// What the reports did, for the final line.
    pub fn report_counts(&self) -> Option<SteerCounts> {
        self.reports.as_ref().map(|_| self.steering.counts)
    }
}

/// Whether the operator's `text` names back end `b`: its address (any port),
/// or its `addr:port`.
fn backend_matches(text: &str, b: &lbp_runtime::config::Backend) -> bool {
    if text == backend_text(b) {
        return true;
    }
    text.parse::<std::net::IpAddr>().is_ok_and(|a| a == b.addr)
}

fn diff_json(d: &Diff) -> serde_json::Value {
    serde_json::json!({
        "services_added": d.services_added,
        "services_removed": d.services_removed,
        "services_changed": d.services_changed.iter().map(|c| serde_json::json!({
            "name": c.name,
            "settings": c.settings,
            "backends_added": c.backends_added,
            "backends_removed": c.backends_removed,
            "weights": c.weights.iter().map(|(b, o, n)| serde_json::json!({"backend": b, "old": o, "new": n})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "routes_added": d.routes_added,
        "routes_removed": d.routes_removed,
        "rules_added": d.rules_added,
        "rules_removed": d.rules_removed,
    })
}
