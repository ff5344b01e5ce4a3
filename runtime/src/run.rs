//! The appliance's loops: a switching core's busy-poll loop over its ports
//! ([`Core`]), the bare forwarder on the same rings, the control core's
//! housekeeping ([`Control`]), and the binding of a policy's interfaces to NIC
//! rings ([`bind`]: AF_XDP, falling back to io_uring over AF_PACKET).
//!
//! A [`Core`] owns its [`Frames`], one [`Port`] per interface (its own receive
//! queue on each, and a transmit path), and its [`CoreState`]. One iteration
//! ([`Core::step`]): announce the burst to the generation reader, receive up to
//! [`BURST`] frames from every port (and, every few iterations, from the local
//! TAP), run [`process_burst`], hand each interface's output to its port (a frame
//! a port refuses is freed and counted), write the `local` output to the TAP, and
//! flush every port. The loop never sleeps; it stops when the stop flag is set.
//! The time is read by the caller's clock once per iteration, never inside
//! `process_burst`.
//!
//! The local (TAP) side: the kernel sees the appliance's own addresses on the
//! TAP, and the core plays the router at the other end of that link. Frames
//! decided `local` get the TAP's MAC as destination and [`LocalLink::router_mac`]
//! as source before they are written. What the kernel writes: an ARP request or
//! neighbour solicitation for any address other than its own is answered at once
//! with `router_mac` (proxy, so every destination is one hop away for the
//! kernel); IP frames enter `process_burst` with `in_iface` [`FROM_LOCAL`], which
//! routes them without the filter. Only the core that polls the TAP reads from
//! it; any core may write to it (the TAP is behind a mutex: the control plane's
//! path is not a fast one).
//!
//! Counters the control core reads: each core copies its [`Counters`] and its
//! ports' [`PortStats`] into a [`Report`] every [`REPORT_NS`] (when the lock is
//! free; the copy allocates a little, which is why it is not per burst).
//!
//! Not here: threads, pinning, signals and printing (the `lbp` binary does them),
//! hot reload and health checks (the control loop's [`Control::tick`] is where
//! they will go).

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::generation::{Published, Reader};
use crate::neigh::Pending;
use crate::ring::bpf::XdpRedirect;
use crate::ring::uring::{UringConfig, UringPort};
use crate::ring::xdp::{XdpOptions, XdpPort};
use crate::ring::{Desc, Frames, Port, PortStats};
use crate::switch::{CoreState, Counters, DropReason, Outputs, Shared, process_burst};
use crate::wire;

pub use crate::switch::FROM_LOCAL;

/// Frames received from one port per iteration.
pub const BURST: usize = 32;

/// How often a core publishes its counters (nanoseconds).
pub const REPORT_NS: u64 = 50_000_000;

/// The TAP is read every this many iterations (a `read` per burst would cost
/// more than the burst; answers from the kernel wait at most that long).
pub const LOCAL_POLL_EVERY: u32 = 16;

/// Nanoseconds of the monotonic clock (`CLOCK_MONOTONIC`, through
/// [`Instant`]), counted from the first call plus one second, so that no time
/// the cores see is 0.
pub fn monotonic_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1_000_000_000)
}

/// The MACs of the link between the cores and the kernel's TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalLink {
    /// The TAP's own MAC (the kernel's side).
    pub tap_mac: [u8; 6],
    /// The MAC the kernel sees for every address behind the TAP (the cores).
    pub router_mac: [u8; 6],
}

/// Locally administered MACs ("lbp" in bytes 1 to 3).
pub const LOCAL_LINK: LocalLink = LocalLink {
    tap_mac: [0x02, 0x6c, 0x62, 0x70, 0x00, 0x01],
    router_mac: [0x02, 0x6c, 0x62, 0x70, 0x00, 0x02],
};

/// A core's way to the control plane.
#[derive(Debug)]
pub struct LocalSide<L> {
    pub port: Arc<Mutex<L>>,
    /// Whether this core receives from it (exactly one core should).
    pub poll: bool,
    pub link: LocalLink,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A port's state stays consistent across a panic elsewhere (each method
    // leaves it whole between calls): ignore poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters beyond the switch's, kept by the loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Iterations run.
    pub iterations: u64,
    /// Frames a port (or the TAP) refused to take, freed.
    pub tx_refused: u64,
    /// ARP requests / neighbour solicitations from the kernel answered.
    pub local_neigh_answers: u64,
    /// Frames from the kernel neither answered nor IP (freed).
    pub local_other: u64,
    /// Bare forwarder: frames sent back out.
    pub bare_forwarded: u64,
}

/// What a core last published for the control core.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub lp: LoopCounters,
    /// Per interface.
    pub ports: Vec<PortStats>,
    /// The TAP's, for the core that polls it.
    pub local: Option<PortStats>,
}

/// One core's published [`Snapshot`].
#[derive(Debug, Default)]
pub struct Report {
    snap: Mutex<Snapshot>,
}

impl Report {
    /// A copy of the latest snapshot.
    pub fn get(&self) -> Snapshot {
        lock(&self.snap).clone()
    }
}

/// Frame memory and ports of one core. The ports are declared (so dropped)
/// before the frames: an io_uring port's kernel side writes into them until it
/// is dropped.
#[derive(Debug)]
pub struct CoreIo<P> {
    ports: Vec<P>,
    frames: Frames,
}

impl<P: Port> CoreIo<P> {
    /// `ports[i]` serves interface `i` of the appliance; all use `frames`.
    pub fn new(ports: Vec<P>, frames: Frames) -> CoreIo<P> {
        CoreIo { ports, frames }
    }

    /// The ports.
    pub fn ports(&self) -> &[P] {
        &self.ports
    }
}

/// A switching core: see the module documentation.
#[derive(Debug)]
pub struct Core<P: Port, L: Port> {
    // Field order is drop order: ports before frames (see `CoreIo`).
    ports: Vec<P>,
    local: Option<LocalSide<L>>,
    frames: Frames,
    reader: Reader,
    state: CoreState,
    shared: Arc<Shared>,
    rx: Vec<(Desc, u32)>,
    buf: Vec<Desc>,
    answers: Vec<Desc>,
    out: Outputs,
    lp: LoopCounters,
    report: Arc<Report>,
    last_report: u64,
}

impl<P: Port, L: Port> Core<P, L> {
    /// A core over `io`, reading generations through `reader`. Its output queues
    /// hold twice what one iteration can receive, so that frames released from
    /// the neighbour queue find room too.
    pub fn new(
        io: CoreIo<P>,
        local: Option<LocalSide<L>>,
        reader: Reader,
        shared: Arc<Shared>,
    ) -> Core<P, L> {
        let n = io.ports.len();
        let per_iteration = (n + 1) * BURST;
        Core {
            ports: io.ports,
            local,
            frames: io.frames,
            reader,
            state: CoreState::new(Pending::with_defaults()),
            shared,
            rx: Vec::with_capacity(per_iteration),
            buf: vec![Desc { addr: 0, len: 0 }; BURST],
            answers: Vec::with_capacity(BURST),
            out: Outputs::new(n, 2 * per_iteration),
            lp: LoopCounters::default(),
            report: Arc::new(Report::default()),
            last_report: 0,
        }
    }

    /// Run these applications (`app NAME`) instead of the built-in ones: the
    /// core's own instances of a [`crate::app::Registry`]'s, before it starts.
    pub fn set_apps(&mut self, apps: crate::app::Apps) {
        self.state.apps = apps;
    }

    /// The handle the control core reads this core's counters through.
    pub fn report(&self) -> Arc<Report> {
        Arc::clone(&self.report)
    }

    /// The core's counters now.
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// The loop's own counters now.
    pub fn loop_counters(&self) -> LoopCounters {
        self.lp
    }

    /// Frames on the free list now, and the total.
    pub fn frames_free(&self) -> (usize, usize) {
        (self.frames.free_count(), self.frames.count())
    }

    /// One iteration at time `now`; returns the frames received.
    pub fn step(&mut self, now: u64) -> usize {
        let g = self.reader.enter();
        self.rx.clear();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let n = p.recv(&mut self.frames, &mut self.buf);
            self.rx.extend(self.buf[..n].iter().map(|&d| (d, i as u32)));
        }
        let mut received = self.rx.len();
        if let Some(l) = &self.local
            && l.poll
            && self
                .lp
                .iterations
                .is_multiple_of(u64::from(LOCAL_POLL_EVERY))
        {
            let mut tap = lock(&l.port);
            let n = tap.recv(&mut self.frames, &mut self.buf);
            received += n;
            self.answers.clear();
            for &d in &self.buf[..n] {
                match from_kernel(&mut self.frames, d, &l.link) {
                    Kernel::Answered(d) => {
                        self.lp.local_neigh_answers += 1;
                        self.answers.push(d);
                    }
                    Kernel::Ip => self.rx.push((d, FROM_LOCAL)),
                    Kernel::Other => {
                        self.lp.local_other += 1;
                        self.frames.free(d);
                    }
                }
            }
            let taken = tap.send(&mut self.frames, &self.answers);
            tap.flush(&mut self.frames);
            drop(tap);
            refuse(&mut self.frames, &mut self.lp, &self.answers[taken..]);
        }
        process_burst(
            g,
            &mut self.state,
            &self.shared,
            &mut self.frames,
            &self.rx,
            &mut self.out,
            now,
        );
        for (p, q) in self.ports.iter_mut().zip(&self.out.tx) {
            if q.is_empty() {
                continue;
            }
            let taken = p.send(&mut self.frames, q);
            refuse(&mut self.frames, &mut self.lp, &q[taken..]);
        }
        if !self.out.local.is_empty() {
            match &self.local {
                Some(l) => {
                    for &d in &self.out.local {
                        wire::set_macs(
                            self.frames.packet_mut(d),
                            l.link.router_mac,
                            l.link.tap_mac,
                        );
                    }
                    let mut tap = lock(&l.port);
                    let taken = tap.send(&mut self.frames, &self.out.local);
                    tap.flush(&mut self.frames);
                    drop(tap);
                    refuse(&mut self.frames, &mut self.lp, &self.out.local[taken..]);
                }
                None => {
                    refuse(&mut self.frames, &mut self.lp, &self.out.local);
                }
            }
        }
        for p in &mut self.ports {
            p.flush(&mut self.frames);
        }
        self.out.clear();
        self.lp.iterations += 1;
        if now.saturating_sub(self.last_report) >= REPORT_NS {
            self.publish(now);
        }
        received
    }

    fn publish(&mut self, now: u64) {
        if let Ok(mut s) = self.report.snap.try_lock() {
            s.counters.clone_from(&self.state.counters);
            s.lp = self.lp;
            s.ports.clear();
            s.ports.extend(self.ports.iter().map(Port::stats));
            s.local = self
                .local
                .as_ref()
                .filter(|l| l.poll)
                .and_then(|l| l.port.try_lock().ok().map(|t| t.stats()));
            self.last_report = now;
        }
    }

    /// Run until `stop` is set, reading `clock` once per iteration.
    pub fn run(&mut self, stop: &AtomicBool, mut clock: impl FnMut() -> u64) {
        while !stop.load(Ordering::Relaxed) {
            let now = clock();
            self.step(now);
        }
        let now = clock();
        self.last_report = 0;
        self.publish(now.max(REPORT_NS));
    }

    /// The bare forwarder, one iteration: receive from every port, swap the
    /// MACs, send each frame out of the *other* interface of a two-interface
    /// appliance (the way a service's traffic crosses it), or back out of the
    /// same interface otherwise. No policy, no tables. Returns the frames
    /// received.
    pub fn step_bare(&mut self) -> usize {
        let n = self.ports.len();
        let mut received = 0;
        for i in 0..n {
            let got = self.ports[i].recv(&mut self.frames, &mut self.buf);
            received += got;
            let to = bare_peer(i, n);
            for &d in &self.buf[..got] {
                let f = self.frames.packet_mut(d);
                if f.len() >= 12 {
                    let mut dst = [0u8; 6];
                    dst.copy_from_slice(&f[..6]);
                    f.copy_within(6..12, 0);
                    f[6..12].copy_from_slice(&dst);
                }
                self.out.tx[to].push(d);
            }
        }
        for (p, q) in self.ports.iter_mut().zip(&self.out.tx) {
            if q.is_empty() {
                continue;
            }
            let taken = p.send(&mut self.frames, q);
            self.lp.bare_forwarded += taken as u64;
            refuse(&mut self.frames, &mut self.lp, &q[taken..]);
        }
        for p in &mut self.ports {
            p.flush(&mut self.frames);
        }
        self.out.clear();
        self.lp.iterations += 1;
        received
    }

    /// Run the bare forwarder until `stop` is set.
    pub fn run_bare(&mut self, stop: &AtomicBool, mut clock: impl FnMut() -> u64) {
        while !stop.load(Ordering::Relaxed) {
            self.step_bare();
            if self.lp.iterations.is_multiple_of(1024) {
                let now = clock();
                if now.saturating_sub(self.last_report) >= REPORT_NS {
                    self.publish(now);
                }
            }
        }
        self.last_report = 0;
        self.publish(clock().max(REPORT_NS));
    }

    /// Stop: free the frames waiting for a neighbour; the last snapshot.
    pub fn finish(mut self) -> Snapshot {
        self.state.drain(&mut self.frames);
        self.last_report = 0;
        self.publish(REPORT_NS);
        self.report.get()
    }
}

/// Where the bare forwarder sends a frame received on interface `i` of `n`.
pub fn bare_peer(i: usize, n: usize) -> usize {
    if n == 2 { 1 - i } else { i }
}

enum Kernel {
    /// A neighbour answer made in place (maybe a new length).
    Answered(Desc),
    Ip,
    Other,
}

/// Classify a frame the kernel wrote to the TAP, answering its ARP requests and
/// neighbour solicitations in place with `link.router_mac`.
fn from_kernel(frames: &mut Frames, d: Desc, link: &LocalLink) -> Kernel {
    let f = lbp_abi::wire::extract(frames.packet(d), FROM_LOCAL);
    if f.present & lbp_abi::present::ETH == 0 || f.present & lbp_abi::present::MALFORMED != 0 {
        return Kernel::Other;
    }
    if f.eth_type == 0x0806 {
        let Some(a) = wire::arp::parse(frames.packet(d), 14) else {
            return Kernel::Other;
        };
        // Not a probe or an announcement of the kernel's own address.
        if a.op == wire::arp::OP_REQUEST
            && !a.sender_ip.is_unspecified()
            && a.sender_ip != a.target_ip
            && wire::arp::reply_in_place(frames.packet_mut(d), 14, link.router_mac, a.target_ip)
        {
            return Kernel::Answered(d);
        }
        return Kernel::Other;
    }
    if f.ip_version == 6
        && f.ip_proto == 58
        && f.present & lbp_abi::present::ICMP != 0
        && matches!(f.icmp_type, wire::ndp::TYPE_NS | wire::ndp::TYPE_NA)
    {
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        if f.icmp_type == wire::ndp::TYPE_NS
            && let Some(ns) = wire::ndp::parse_ns(frames.packet(d), l3, l4)
            && !ns.src.is_unspecified()
            && ns.src != ns.target
        {
            let len = d.len as usize;
            if let Some(n) = wire::ndp::na_from_ns_in_place(
                frames.slot_mut(d),
                len,
                l3,
                l4,
                link.router_mac,
                ns.target,
            ) {
                return Kernel::Answered(Desc {
                    addr: d.addr,
                    len: n as u32,
                });
            }
        }
        return Kernel::Other;
    }
    // Multicast and broadcast (IPv6 router solicitations, MLD reports): for
    // the link between the kernel and the cores only, never routed.
    let group = frames.packet(d).first().is_some_and(|b| b & 1 != 0);
    if !group && f.present & (lbp_abi::present::IP4 | lbp_abi::present::IP6) != 0 {
        Kernel::Ip
    } else {
        Kernel::Other
    }
}

/// The control core's view: housekeeping of the shared tables and the
/// generations, and the cores' counters.
#[derive(Clone, Debug)]
pub struct Control {
    pub published: Arc<Published>,
    pub shared: Arc<Shared>,
    pub reports: Vec<Arc<Report>>,
}

/// What one [`Control::tick`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub conns_expired: usize,
    pub neigh_freed: usize,
    pub generations_freed: usize,
}

/// Connection-table buckets swept per tick.
pub const SWEEP_BUDGET: usize = 4096;

/// Every this many ticks the neighbour table (a full scan) is swept too.
pub const NEIGH_SWEEP_EVERY: u64 = 10;

impl Control {
    /// One housekeeping round (the control core runs it every 100 ms): a
    /// bounded sweep of the connection table, every [`NEIGH_SWEEP_EVERY`] ticks
    /// one of the neighbour table, and the reclaim of retired generations.
    /// Hot reload and health checks will be driven from here too.
    pub fn tick(&self, n: u64, now: u64) -> Tick {
        Tick {
            conns_expired: self.shared.conns.sweep(now, SWEEP_BUDGET),
            neigh_freed: if n.is_multiple_of(NEIGH_SWEEP_EVERY) {
                self.shared.neigh.sweep(now)
            } else {
                0
            },
            generations_freed: self.published.reclaim(),
        }
    }

    /// Every core's counters added up.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for r in &self.reports {
            t.add(&r.get());
        }
        t.connections = self.shared.conns.len() as u64;
        t
    }
}

/// The sums the summary lines print.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames routed from the control plane, and written to it.
    pub from_local: u64,
    pub to_local: u64,
    pub drops: [u64; DropReason::COUNT],
    pub tx_refused: u64,
    /// Frames the kernel dropped at the ports before the core saw them (for
    /// AF_XDP: fill ring empty or RX ring full; for io_uring: socket drops).
    pub rx_dropped: u64,
    pub new_connections: u64,
    pub connections: u64,
    pub bare_forwarded: u64,
}

impl Totals {
    /// Add one core's snapshot.
    pub fn add(&mut self, s: &Snapshot) {
        for p in &s.ports {
            self.rx_packets += p.rx_packets;
            self.tx_packets += p.tx_packets;
            self.rx_dropped += p.rx_dropped;
        }
        let c = &s.counters;
        self.from_local += c.from_local.packets;
        self.to_local += c.to_local;
        for (t, d) in self.drops.iter_mut().zip(c.drops) {
            *t += d;
        }
        self.tx_refused += s.lp.tx_refused;
        self.new_connections += c.service_new.iter().sum::<u64>();
        self.bare_forwarded += s.lp.bare_forwarded;
    }

    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum::<u64>() + self.tx_refused
    }
}

/// Every drop reason, in `DropReason as usize` order, with a short name.
pub const DROP_NAMES: [(DropReason, &str); DropReason::COUNT] = [
    (DropReason::Malformed, "malformed"),
    (DropReason::Filter, "filter"),
    (DropReason::InvalidEntry, "invalid-entry"),
    (DropReason::NoRoute, "no-route"),
    (DropReason::Ttl, "ttl"),
    (DropReason::NeighTimeout, "neigh-timeout"),
    (DropReason::PendingFull, "pending-full"),
    (DropReason::NoBackend, "no-backend"),
    (DropReason::UnknownRst, "unknown-rst"),
    (DropReason::Rewrite, "rewrite"),
    (DropReason::QueueFull, "queue-full"),
    (DropReason::NotOurs, "not-ours"),
    (DropReason::BadDecision, "bad-decision"),
    (DropReason::Martian, "martian"),
];

// ---- Binding ------------------------------------------------------------------

/// A NIC port of either kind.
// The variants differ in size, but ports are made once and live in a Vec: no
// copy of one is ever on a hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum NicPort {
    Xdp(XdpPort),
    Uring(UringPort),
}

impl Port for NicPort {
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize {
        match self {
            NicPort::Xdp(p) => p.recv(frames, out),
            NicPort::Uring(p) => p.recv(frames, out),
        }
    }
    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize {
        match self {
            NicPort::Xdp(p) => p.send(frames, descs),
            NicPort::Uring(p) => p.send(frames, descs),
        }
    }
    fn flush(&mut self, frames: &mut Frames) {
        match self {
            NicPort::Xdp(p) => p.flush(frames),
            NicPort::Uring(p) => p.flush(frames),
        }
    }
    fn stats(&self) -> PortStats {
        match self {
            NicPort::Xdp(p) => p.stats(),
            NicPort::Uring(p) => p.stats(),
        }
    }
}

/// Which rings to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rings {
    /// AF_XDP, falling back to io_uring per interface when attach or bind fails.
    Auto,
    Xdp,
    Uring,
}

/// What [`bind`] binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    /// The OS interface of each appliance interface, in the appliance's order.
    pub os_names: Vec<String>,
    /// Switching cores (core `c` receives from queue `c` of every interface).
    pub cores: usize,
    pub rings: Rings,
    /// Frames each AF_XDP socket keeps lent for receiving, and its RX ring size
    /// (a power of two; see [`XdpOptions::new`] for why it is deep by default).
    pub rx_ring: u32,
}

impl BindSpec {
    /// The default receive depth of an AF_XDP socket.
    pub const DEFAULT_RX_RING: u32 = XdpOptions::RX_DEPTH;
}

/// How one interface was bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundKind {
    /// AF_XDP; the XDP mode ("driver" / "generic") and whether zero-copy.
    Xdp { mode: &'static str, zero_copy: bool },
    /// io_uring over AF_PACKET; why XDP was not used (auto), if it was tried.
    Uring { xdp_error: Option<String> },
}

/// Interfaces bound to rings: each core's ports, and the XDP programs (detached
/// when this is dropped, after the ports).
#[derive(Debug)]
pub struct Bound {
    pub cores: Vec<CoreIo<NicPort>>,
    pub kinds: Vec<BoundKind>,
    pub redirects: Vec<Option<XdpRedirect>>,
}

/// A binding error, naming the interface.
#[derive(Debug)]
pub struct BindError {
    pub os_name: String,
    pub what: String,
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.os_name, self.what, self.error)
    }
}

impl std::error::Error for BindError {}

/// Frames per core: room for every port's receive lending (`rx_ring` each) and
/// transmit ring, plus the core's own queues.
pub fn frames_per_core(interfaces: usize, rx_ring: u32) -> usize {
    let x = XdpOptions::with_rx_depth(0, 0, rx_ring);
    interfaces * (x.fill_target as usize + x.tx_size as usize) + 4096
}

fn xdp_mode_name(r: &XdpRedirect) -> &'static str {
    match r.attachment().mode() {
        crate::ring::bpf::XdpMode::Driver => "driver",
        crate::ring::bpf::XdpMode::Generic => "generic",
    }
}

/// Bind every interface of `spec` for `spec.cores` cores. On any error,
/// everything bound so far is released (programs detached) before returning.
/// io_uring serves one core only (AF_PACKET sees the whole interface): with
/// more cores, an interface that cannot take AF_XDP is an error.
pub fn bind(spec: &BindSpec) -> Result<Bound, BindError> {
    let cores = spec.cores.max(1);
    let n = spec.os_names.len();
    let mut frames = Vec::with_capacity(cores);
    for _ in 0..cores {
        frames.push(
            Frames::new(frames_per_core(n, spec.rx_ring)).map_err(|e| BindError {
                os_name: String::new(),
                what: "frame memory".into(),
                error: e,
            })?,
        );
    }
    let mut ports: Vec<Vec<NicPort>> = (0..cores).map(|_| Vec::with_capacity(n)).collect();
    let mut kinds = Vec::with_capacity(n);
    let mut redirects = Vec::with_capacity(n);
    // On an early return, ports drop first (declared later: dropped earlier),
    // then the redirects, then the frames.
    for name in &spec.os_names {
        let err = |what: &str, error: io::Error| BindError {
            os_name: name.clone(),
            what: what.into(),
            error,
        };
        let ifindex = crate::ring::bpf::ifindex(name).map_err(|e| err("no such interface", e))?;
        let mut xdp_error = None;
        if spec.rings != Rings::Uring {
            match bind_xdp(ifindex, spec.rx_ring, &mut frames, &ports) {
                Ok((r, ps)) => {
                    let zero_copy = matches!(ps.first(), Some(NicPort::Xdp(p)) if p.zero_copy());
                    kinds.push(BoundKind::Xdp {
                        mode: xdp_mode_name(&r),
                        zero_copy,
                    });
                    for (c, p) in ps.into_iter().enumerate() {
                        ports[c].push(p);
                    }
                    redirects.push(Some(r));
                    continue;
                }
                Err((what, e)) => {
                    if spec.rings == Rings::Xdp || cores > 1 {
                        return Err(err(what, e));
                    }
                    xdp_error = Some(format!("{what}: {e}"));
                }
            }
        }
        if cores > 1 {
            return Err(err(
                "io_uring serves one switching core only",
                io::Error::from(io::ErrorKind::Unsupported),
            ));
        }
        // SAFETY: the port lives in `ports`, then in the core's `CoreIo` /
        // `Core`, both of which drop their ports before the `Frames` they were
        // opened on (field order), and use no other `Frames` with them.
        let p = unsafe { UringPort::open(name, &mut frames[0], UringConfig::default()) }
            .map_err(|e| err("io_uring over AF_PACKET", e))?;
        ports[0].push(NicPort::Uring(p));
        kinds.push(BoundKind::Uring { xdp_error });
        redirects.push(None);
    }
    let cores = ports
        .into_iter()
        .zip(frames)
        .map(|(p, f)| CoreIo::new(p, f))
        .collect();
    Ok(Bound {
        cores,
        kinds,
        redirects,
    })
}

/// Attach the redirect program and open one socket per core (queue = core).
/// A core's first AF_XDP socket registers its frames as the UMEM; its later
/// ones (other interfaces) share it.
fn bind_xdp(
    ifindex: u32,
    rx_ring: u32,
    frames: &mut [Frames],
    bound: &[Vec<NicPort>],
) -> Result<(XdpRedirect, Vec<NicPort>), (&'static str, io::Error)> {
    let r = XdpRedirect::attach(ifindex, frames.len() as u32)
        .map_err(|e| ("attach the XDP program", e))?;
    let mut ps = Vec::with_capacity(frames.len());
    for (q, f) in frames.iter_mut().enumerate() {
        let opts = XdpOptions::with_rx_depth(ifindex, q as u32, rx_ring);
        let share = bound.get(q).and_then(|ports| {
            ports.iter().find_map(|p| match p {
                NicPort::Xdp(x) => Some(x),
                NicPort::Uring(_) => None,
            })
        });
        let p = XdpPort::open(f, &opts, share).map_err(|e| ("bind an AF_XDP socket", e))?;
        r.insert(q as u32, std::os::fd::AsFd::as_fd(&p))
            .map_err(|e| ("insert the socket in the XSK map", e))?;
        ps.push(NicPort::Xdp(p));
    }
    Ok((r, ps))
}

/// The addresses the TAP should carry: every interface's (with its prefix) and
/// every virtual IP (as a host address), deduplicated.
pub fn local_addresses(a: &crate::config::Appliance) -> Vec<(IpAddr, u8)> {
    let mut v: Vec<(IpAddr, u8)> = a
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .collect();
    for s in &a.services {
        for &vip in &s.vips {
            if !v.iter().any(|(x, _)| *x == vip) {
                v.push((vip, if vip.is_ipv4() { 32 } else { 128 }));
            }
        }
    }
    v.dedup();
    v
}

/// Free the frames a port refused to take, counting them.
fn refuse(frames: &mut Frames, lp: &mut LoopCounters, refused: &[Desc]) {
    for &d in refused {
        lp.tx_refused += 1;
        frames.free(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Appliance, Interface, Route};
    use crate::conn::ConnTable;
    use crate::generation::Generation;
    use crate::neigh::{NeighAddr, NeighTable};
    use crate::ring::mem::{MemHost, MemPort, host};
    use crate::switch::route_lookup;
    use crate::wire::testutil::{Spec, assert_checksums, build};
    use lbp_abi::{Action, Decision, Fields, stage};

    const M0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
    const M1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];
    const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x60];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn appliance() -> Appliance {
        let route = |p: &str, len, dev| Route {
            prefix: ip(p),
            len,
            via: None,
            dev,
        };
        Appliance {
            interfaces: vec![
                Interface {
                    name: "outside".into(),
                    mac: M0,
                    addrs: vec![(ip("198.18.0.1"), 24)],
                },
                Interface {
                    name: "inside".into(),
                    mac: M1,
                    addrs: vec![(ip("198.19.0.1"), 24)],
                },
            ],
            services: vec![],
            routes: vec![route("198.18.0.0", 24, 0), route("198.19.0.0", 24, 1)],
            rules: Default::default(),
        }
    }

    /// Own address: local; else routed.
    fn policy(f: &Fields) -> Decision {
        let dst = if f.ip_version == 4 {
            IpAddr::V4(std::net::Ipv4Addr::new(
                f.ip_dst[12],
                f.ip_dst[13],
                f.ip_dst[14],
                f.ip_dst[15],
            ))
        } else {
            IpAddr::V6(f.ip_dst.into())
        };
        let d = |a: Action, target, st| Decision {
            action: a as u32,
            target,
            rule: lbp_abi::NO_RULE,
            stage: st,
            hash: 0,
        };
        if dst == ip("198.18.0.1") || dst == ip("198.19.0.1") {
            return d(Action::Local, 0, stage::OWN_ADDRESS);
        }
        match route_lookup(&appliance().routes, dst) {
            Some(r) => d(Action::Forward, r as u32, stage::ROUTE),
            None => d(Action::Drop, 0, stage::ROUTE),
        }
    }

    struct Rig {
        core: Core<MemPort, MemPort>,
        hosts: Vec<MemHost>,
        tap: MemHost,
        shared: Arc<Shared>,
        published: Arc<Published>,
    }

    /// A core over two in-memory interfaces (wires of `capacity` frames) and an
    /// in-memory TAP, with the client and server neighbours known.
    fn rig(capacity: usize) -> Rig {
        let (p0, h0) = host(capacity);
        let (p1, h1) = host(capacity);
        let (tp, tap) = host(64);
        let published = Arc::new(Published::new(
            Generation::new(Arc::new(policy), appliance()),
            2,
        ));
        let shared = Arc::new(Shared {
            conns: ConnTable::new(1024),
            neigh: NeighTable::new(64),
            xdp_flows: Default::default(),
        });
        shared
            .neigh
            .set_permanent(&NeighAddr::from(ip("198.18.0.50")), CLIENT_MAC);
        shared
            .neigh
            .set_permanent(&NeighAddr::from(ip("198.19.0.60")), SERVER_MAC);
        let local = LocalSide {
            port: Arc::new(Mutex::new(tp)),
            poll: true,
            link: LOCAL_LINK,
        };
        let core = Core::new(
            CoreIo::new(vec![p0, p1], Frames::new(256).unwrap()),
            Some(local),
            published.register().unwrap(),
            Arc::clone(&shared),
        );
        Rig {
            core,
            hosts: vec![h0, h1],
            tap,
            shared,
            published,
        }
    }

    fn udp(src: &str, dst: &str, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let mut s = Spec::new(src, dst, 17);
        s.sport = 4000;
        s.dport = 53;
        let mut f = build(&s).frame;
        f[..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
        f
    }

    fn ttl(f: &[u8]) -> u8 {
        f[14 + 8]
    }

    /// Every frame is back on the free list once the core has finished.
    fn no_leak(r: Rig) {
        let (free, count) = {
            let mut core = r.core;
            // One idle step returns what the ports completed.
            core.step(10_000_000_000);
            let f = core.frames_free();
            drop(core.finish());
            f
        };
        assert_eq!(free, count, "frames leaked");
        drop(r.published);
    }

    #[test]
    fn frames_are_routed_between_ports_in_bounded_iterations() {
        let mut r = rig(64);
        let pkt = udp("198.18.0.50", "198.19.0.60", M0, CLIENT_MAC);
        for _ in 0..5 {
            assert!(r.hosts[0].inject(&pkt));
        }
        let back = udp("198.19.0.60", "198.18.0.50", M1, SERVER_MAC);
        assert!(r.hosts[1].inject(&back));
        let mut got = 0;
        for i in 0..3 {
            got += r.core.step(1_000_000_000 + i);
        }
        assert_eq!(got, 6);
        let out1 = r.hosts[1].take_all();
        assert_eq!(out1.len(), 5);
        for f in &out1 {
            assert_eq!(f[..6], SERVER_MAC);
            assert_eq!(f[6..12], M1);
            assert_eq!(ttl(f), ttl(&pkt) - 1);
            assert_eq!(f[14 + 12..], pkt[14 + 12..], "addresses and payload kept");
            assert_checksums(f, 14, 34, 17);
        }
        let out0 = r.hosts[0].take_all();
        assert_eq!(out0.len(), 1);
        assert_eq!(out0[0][..6], CLIENT_MAC);
        let c = r.core.counters();
        assert_eq!(c.rx.packets, 6);
        assert_eq!(c.action(Action::Forward), 6);
        assert_eq!(r.core.loop_counters().iterations, 3);
        assert_eq!(r.core.loop_counters().tx_refused, 0);
        no_leak(r);
    }

    #[test]
    fn local_traffic_goes_through_the_tap_and_the_kernels_answers_are_routed() {
        let mut r = rig(64);
        // A ping to the appliance's own address reaches the TAP, addressed to it.
        let mut s = Spec::new("198.18.0.50", "198.18.0.1", 1);
        s.payload = vec![8, 0, 0, 0, 0, 1, 0, 1];
        let mut ping = build(&s).frame;
        ping[..6].copy_from_slice(&M0);
        ping[6..12].copy_from_slice(&CLIENT_MAC);
        assert!(r.hosts[0].inject(&ping));
        r.core.step(1_000_000_000);
        let to_kernel = r.tap.take_all();
        assert_eq!(to_kernel.len(), 1);
        assert_eq!(to_kernel[0][..6], LOCAL_LINK.tap_mac);
        assert_eq!(to_kernel[0][6..12], LOCAL_LINK.router_mac);
        assert_eq!(to_kernel[0][12..], ping[12..]);

        // The kernel asks for the client's MAC on the TAP: the core answers for it.
        let mut arp = vec![0; 60];
        let (IpAddr::V4(a), IpAddr::V4(b)) = (ip("198.18.0.1"), ip("198.18.0.50")) else {
            unreachable!()
        };
        let n = wire::arp::build_request(&mut arp, LOCAL_LINK.tap_mac, a, b).unwrap();
        arp.truncate(n);
        assert!(r.tap.inject(&arp));
        // The kernel's reply: routed out of `outside`, TTL untouched.
        let reply = udp(
            "198.18.0.1",
            "198.18.0.50",
            LOCAL_LINK.router_mac,
            LOCAL_LINK.tap_mac,
        );
        assert!(r.tap.inject(&reply));
        // An MLD report to a multicast group: stays on the TAP's link.
        let mut mld = Spec::new("fe80::1", "ff02::16", 58);
        mld.payload = vec![143, 0, 0, 0, 0, 0, 0, 0];
        let mut mld = build(&mld).frame;
        mld[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0x16]);
        assert!(r.tap.inject(&mld));
        // The TAP is polled every LOCAL_POLL_EVERY iterations: run a full round.
        for i in 0..u64::from(LOCAL_POLL_EVERY) {
            r.core.step(1_000_000_001 + i);
        }
        let answers = r.tap.take_all();
        assert_eq!(answers.len(), 1);
        let ans = wire::arp::parse(&answers[0], 14).unwrap();
        assert_eq!(ans.op, wire::arp::OP_REPLY);
        assert_eq!(ans.sender_mac, LOCAL_LINK.router_mac);
        assert_eq!(IpAddr::V4(ans.sender_ip), ip("198.18.0.50"));
        assert_eq!(answers[0][..6], LOCAL_LINK.tap_mac);
        let out0 = r.hosts[0].take_all();
        assert_eq!(out0.len(), 1);
        assert_eq!(out0[0][..6], CLIENT_MAC);
        assert_eq!(out0[0][6..12], M0);
        assert_eq!(ttl(&out0[0]), ttl(&reply));
        assert_eq!(out0[0][12..], reply[12..]);
        assert!(r.hosts[1].take_all().is_empty());
        assert_eq!(r.core.counters().from_local.packets, 1);
        assert_eq!(r.core.loop_counters().local_neigh_answers, 1);
        assert_eq!(r.core.loop_counters().local_other, 1);
        assert_eq!(r.core.counters().dropped(DropReason::NoRoute), 0);
        no_leak(r);
    }

    #[test]
    fn frames_a_port_refuses_are_freed_and_counted() {
        let mut r = rig(4);
        let pkt = udp("198.18.0.50", "198.19.0.60", M0, CLIENT_MAC);
        for _ in 0..4 {
            assert!(r.hosts[0].inject(&pkt));
        }
        r.core.step(1_000_000_000);
        // The outgoing wire holds 4; fill it again before it is read.
        for _ in 0..4 {
            assert!(r.hosts[0].inject(&pkt));
        }
        r.core.step(1_000_000_001);
        assert_eq!(r.hosts[1].take_all().len(), 4);
        assert_eq!(r.core.loop_counters().tx_refused, 4);
        no_leak(r);
    }

    #[test]
    fn the_bare_forwarder_swaps_macs_towards_the_other_interface() {
        let mut r = rig(64);
        let pkt = udp("198.18.0.50", "198.19.0.60", M0, CLIENT_MAC);
        assert!(r.hosts[0].inject(&pkt));
        assert!(r.hosts[1].inject(&pkt));
        assert_eq!(r.core.step_bare(), 2);
        for h in &r.hosts {
            let out = h.take_all();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0][..6], CLIENT_MAC);
            assert_eq!(out[0][6..12], M0);
            assert_eq!(out[0][12..], pkt[12..]);
        }
        assert_eq!(r.core.loop_counters().bare_forwarded, 2);
        assert_eq!(bare_peer(0, 3), 0);
        assert_eq!(bare_peer(1, 2), 0);
        no_leak(r);
    }

    #[test]
    fn run_stops_on_the_flag_and_reports_to_the_control_core() {
        let mut r = rig(64);
        let pkt = udp("198.18.0.50", "198.19.0.60", M0, CLIENT_MAC);
        for _ in 0..10 {
            assert!(r.hosts[0].inject(&pkt));
        }
        let control = Control {
            published: Arc::clone(&r.published),
            shared: Arc::clone(&r.shared),
            reports: vec![r.core.report()],
        };
        let stop = AtomicBool::new(false);
        let mut t = 1_000_000_000u64;
        let mut calls = 0;
        r.core.run(&stop, || {
            calls += 1;
            if calls == 20 {
                stop.store(true, Ordering::Relaxed);
            }
            t += REPORT_NS;
            t
        });
        assert_eq!(r.core.loop_counters().iterations, 20);
        let tot = control.totals();
        assert_eq!(tot.rx_packets, 10);
        assert_eq!(tot.tx_packets, 10);
        assert_eq!(tot.dropped(), 0);
        // A new generation is reclaimed once the core has entered past it.
        control
            .published
            .publish(Generation::new(Arc::new(policy), appliance()));
        assert_eq!(control.tick(0, t).generations_freed, 0);
        r.core.step(t + 1);
        assert_eq!(control.tick(1, t + 2).generations_freed, 1);
        assert_eq!(r.hosts[1].take_all().len(), 10);
        no_leak(r);
    }

    #[test]
    fn local_addresses_hold_interfaces_and_vips() {
        let mut a = appliance();
        a.services.push(crate::config::Service {
            name: "s".into(),
            vips: vec![ip("198.18.0.10"), ip("198.18.0.1")],
            mode: crate::config::Mode::Dsr,
            algorithm: crate::config::Algorithm::Maglev,
            unknown_balance: false,
            backends: vec![],
            formula: None,
            health: Vec::new(),
        });
        assert_eq!(
            local_addresses(&a),
            vec![
                (ip("198.18.0.1"), 24),
                (ip("198.19.0.1"), 24),
                (ip("198.18.0.10"), 32)
            ]
        );
    }

    #[test]
    fn the_clock_moves_forward_and_is_never_zero() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a >= 1_000_000_000);
        assert!(b >= a);
    }
}
