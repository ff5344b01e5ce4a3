//! Hot reload under load: the control thread publishes 10 000 generations, each
//! a freshly compiled policy, while two switching cores forward traffic on
//! in-memory rings. Checked: every packet comes out once and was decided by
//! exactly one complete generation (its compiled policy and its appliance
//! together); a core's generations only go forward; every retired generation's
//! policy (its JIT code) is dropped once no core can use it, and resident
//! memory stays flat over the flips.
//!
//! How a packet tells its generation. Generation `k` is compiled from
//! [`policy_text`]`(k)`: two NAT services, `web` (virtual IP 198.18.0.10) and
//! `other` (198.18.0.20), that rewrite the destination port to `WEB_PORT + k`
//! and `OTHER_PORT + k`. Even generations send `web` to 198.18.2.11 and
//! `other` to 198.18.2.13 and declare `web` first; odd ones send them to
//! 198.18.2.12 and 198.18.2.14 and declare `other` first, so the compiled
//! code's service index for a virtual IP flips with the parity. A packet that
//! leaves a core has its generation in its destination port and the parity
//! of that generation in its address, and its client (source address and
//! port, which NAT keeps) says which virtual IP it was sent to. A core that
//! decided with the code of one generation and acted with the appliance of the
//! next would send a packet to the other service, with its port and address:
//! caught. Every packet is a new flow (no connection entry decides it), so the
//! generation that balanced it is the one the core read for its burst.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lbp_abi::{Decision, Fields};
use lbp_compiler::Engine as _;
use lbp_compiler::ir::{Addr, Program};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_runtime::config::{Appliance, Backend, Interface, Route, Service};
use lbp_runtime::conn::ConnTable;
use lbp_runtime::generation::{Decide, Generation, Published};
use lbp_runtime::neigh::{NeighAddr, NeighTable};
use lbp_runtime::ring::Frames;
use lbp_runtime::ring::mem::{MemHost, MemPort, host};
use lbp_runtime::run::{Control, Core, CoreIo, monotonic_ns};
use lbp_runtime::switch::Shared;

/// Generations published after the first. Each is compiled from its text
/// (a new JIT module every time): about 0.7 ms in a release build, 2 to 3 ms
/// in a debug one, which is most of the test's time.
const FLIPS: u64 = 10_000;
/// Resident memory is first measured after this many flips (allocators and
/// caches warmed up), then after the last.
const WARM_UP: u64 = 1_000;
/// How much resident memory may grow between the two measurements. A leaked
/// JIT module costs at least a page of code: 9 000 of them are over 35 MiB.
const RSS_GROWTH_MAX: u64 = 16 << 20;
/// Switching cores, each with its own reader, frames and ports.
const CORES: usize = 2;
/// Packets offered to each core per flip.
const PER_FLIP: u64 = 8;
/// Packets of one core injected and not yet collected, at most: with the
/// rings below, no wire can overflow (none is lost for want of room).
const OUTSTANDING_MAX: u64 = 256;
/// Every this many flips the control thread waits for the cores to move past
/// everything retired, and checks that it all was freed.
const DRAIN_EVERY: u64 = 100;

const WEB_PORT: u16 = 10_000;
const OTHER_PORT: u16 = 40_000;
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
/// The back ends of (web, other) in even and odd generations.
const EVEN: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 2, 11), Ipv4Addr::new(198, 18, 2, 13)];
const ODD: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 2, 12), Ipv4Addr::new(198, 18, 2, 14)];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x99];

/// The policy of generation `k`: see the module documentation.
fn policy_text(k: u64) -> String {
    let [web_be, other_be] = if k.is_multiple_of(2) { EVEN } else { ODD };
    let web = format!(
        "service web {{\n    vip {WEB_VIP} udp port 80\n    pool web_pool\n    \
         balance round_robin\n    mode nat to port {}\n}}\n",
        u64::from(WEB_PORT) + k
    );
    let other = format!(
        "service other {{\n    vip {OTHER_VIP} udp port 80\n    pool other_pool\n    \
         balance round_robin\n    mode nat to port {}\n}}\n",
        u64::from(OTHER_PORT) + k
    );
    let services = if k.is_multiple_of(2) {
        web + &other
    } else {
        other + &web
    };
    format!(
        "interface client {{\n    mac 02:00:00:00:01:01\n    address 198.18.0.1/24\n}}\n\
         interface servers {{\n    mac 02:00:00:00:02:01\n    address 198.18.2.1/24\n}}\n\
         pool web_pool {{ backend {web_be} }}\n\
         pool other_pool {{ backend {other_be} }}\n\
         {services}"
    )
}

/// Which service and generation an output port names.
fn generation_of(port: u16) -> Option<(usize, u64)> {
    let flips = WEB_PORT..=WEB_PORT + FLIPS as u16;
    if flips.contains(&port) {
        return Some((0, u64::from(port - WEB_PORT)));
    }
    let flips = OTHER_PORT..=OTHER_PORT + FLIPS as u16;
    flips
        .contains(&port)
        .then(|| (1, u64::from(port - OTHER_PORT)))
}

/// A compiled policy that records its drop in `states.of[k]` (and fails a
/// second drop).
struct Tracked {
    jit: lbp_compiler::Jit,
    k: usize,
    states: Arc<States>,
}

/// Each generation's policy: unborn, live or dropped; and how many live.
struct States {
    of: Vec<AtomicU8>,
    live: AtomicUsize,
}

const UNBORN: u8 = 0;
const LIVE: u8 = 1;
const DROPPED: u8 = 2;

impl Decide for Tracked {
    fn decide(&self, f: &Fields) -> Decision {
        self.jit.decide(f)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let was = self.states.of[self.k].swap(DROPPED, Ordering::SeqCst);
        assert_eq!(was, LIVE, "generation {} dropped twice", self.k);
        self.states.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The appliance a lowered policy describes, as `src/appliance.rs` builds it
/// for `lbp run` (the binary's modules are not importable from here).
fn appliance(prog: &Program) -> Appliance {
    let interfaces = prog
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            mac: i.mac.unwrap_or([0; 6]),
            addrs: i.addrs.iter().map(|&(a, l)| (a.to_ip(), l)).collect(),
        })
        .collect();
    let services = prog
        .services
        .iter()
        .map(|s| {
            let mut vips: Vec<Addr> = s.entries.iter().map(|e| e.0).collect();
            vips.sort_unstable();
            vips.dedup();
            let pool = s.pool.and_then(|p| prog.pools.get(p as usize));
            Service {
                name: s.name.clone(),
                vips: vips.into_iter().map(Addr::to_ip).collect(),
                mode: s.mode,
                algorithm: s.algorithm,
                unknown_balance: s.unknown_balance,
                backends: pool
                    .map(|p| {
                        p.backends
                            .iter()
                            .map(|b| Backend {
                                addr: b.addr.to_ip(),
                                port: b.port,
                                weight: b.weight,
                                agent: b.agent,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                formula: pool.and_then(|p| p.formula.clone()),
                health: pool.map(|p| p.health.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let routes = prog
        .routes
        .iter()
        .map(|r| Route {
            prefix: r.prefix.to_ip(),
            len: r.len,
            via: r.via.map(Addr::to_ip),
            dev: r.dev,
        })
        .collect();
    Appliance {
        interfaces,
        services,
        routes,
        ..Appliance::default()
    }
}

/// Generation `k`, compiled from its text now (a new JIT module every time).
fn generation(k: u64, states: &Arc<States>) -> Generation {
    let src = policy_text(k);
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{:?}", a.diagnostics);
    let prog = lbp_compiler::lower::lower(&a.policy).expect("lowers");
    let jit = lbp_compiler::jit::compile(&prog).expect("compiles");
    let app = appliance(&prog);
    let was = states.of[k as usize].swap(LIVE, Ordering::SeqCst);
    assert_eq!(was, UNBORN);
    states.live.fetch_add(1, Ordering::SeqCst);
    let policy = Tracked {
        jit,
        k: k as usize,
        states: Arc::clone(states),
    };
    Generation::new(Arc::new(policy), app)
}

/// The client of packet `m` of core `c`: a new flow per packet. Even packets
/// go to `web`, odd ones to `other`.
fn client(c: usize, m: u64) -> (Ipv4Addr, u16) {
    let hi = u32::try_from(m >> 15).expect("few packets");
    assert!(hi < 1 << 16);
    (
        Ipv4Addr::from(u32::from_be_bytes([10, c as u8, 0, 0]) | hi),
        1024 + (m & 0x7fff) as u16,
    )
}

/// Inverse of [`client`].
fn packet_of(src: Ipv4Addr, sport: u16) -> Option<(usize, u64)> {
    let o = src.octets();
    if o[0] != 10 || !(1024..1024 + 0x8000).contains(&sport) {
        return None;
    }
    let hi = u64::from(u16::from_be_bytes([o[2], o[3]]));
    Some((usize::from(o[1]), hi << 15 | u64::from(sport - 1024)))
}

fn frame(c: usize, m: u64) -> Vec<u8> {
    let (src, sport) = client(c, m);
    let vip = if m.is_multiple_of(2) {
        WEB_VIP
    } else {
        OTHER_VIP
    };
    let mut p = PacketSpec::new(Proto::Udp, IpAddr::V4(src), IpAddr::V4(vip));
    p.sport = sport;
    p.dport = 80;
    p.eth_dst = [0x02, 0, 0, 0, 0x01, 0x01];
    build(&p)
}

/// The resident set in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmRSS line");
    kb << 10
}

/// One core's traffic as the test sees it.
struct Lane {
    client: MemHost,
    servers: MemHost,
    /// Packets injected (the next packet's number).
    injected: u64,
    collected: u64,
    /// The newest generation this core's output has shown.
    newest: u64,
}

/// Everything checked about the packets that came out.
struct Seen {
    /// Per core, per packet: came out already.
    out: Vec<Vec<bool>>,
    /// Per generation: packets it decided.
    by_generation: Vec<u64>,
}

impl Seen {
    /// Check one packet that left core `c` towards the back ends.
    fn check(&mut self, c: usize, lane: &mut Lane, f: &[u8], published: u64) {
        assert!(f.len() >= 42 && f[12..14] == [0x08, 0x00], "an IPv4 frame");
        let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let (src, dst) = (ip(26), ip(30));
        let (sport, dport) = (port(34), port(36));
        let (from, m) = packet_of(src, sport).expect("a client of the test");
        assert_eq!(from, c, "core {c} sent a packet of core {from}");
        assert!(m < lane.injected, "core {c}: packet {m} was never sent");
        assert!(
            !self.out[c][m as usize],
            "core {c}: packet {m} came out twice"
        );
        self.out[c][m as usize] = true;
        let sent_to = if m.is_multiple_of(2) { 0 } else { 1 };
        let Some((service, k)) = generation_of(dport) else {
            panic!("core {c}: packet {m} to {dst}:{dport}, the port of no generation");
        };
        assert!(k <= published, "generation {k} is not published yet");
        let backends = if k.is_multiple_of(2) { EVEN } else { ODD };
        assert_eq!(
            (service, dst),
            (sent_to, backends[sent_to]),
            "core {c}: packet {m} to {} left for {dst}:{dport}: the code and the \
             appliance of different generations decided it (its port names \
             generation {k} of service {service})",
            [WEB_VIP, OTHER_VIP][sent_to],
        );
        assert!(
            k >= lane.newest,
            "core {c} went back from generation {} to {k}",
            lane.newest
        );
        lane.newest = k;
        self.by_generation[k as usize] += 1;
        lane.collected += 1;
    }
}

/// Offer this flip's packets to every core and check what came out.
fn exchange(lanes: &mut [Lane], seen: &mut Seen, published: u64, inject: bool) {
    for (c, lane) in lanes.iter_mut().enumerate() {
        while let Some(f) = lane.servers.take() {
            seen.check(c, lane, &f, published);
        }
        if !inject {
            continue;
        }
        for _ in 0..PER_FLIP {
            if lane.injected - lane.collected >= OUTSTANDING_MAX
                || !lane.client.inject(&frame(c, lane.injected))
            {
                break;
            }
            lane.injected += 1;
        }
    }
}

/// Reclaim until nothing retired is left (the cores keep entering new
/// bursts), for at most 10 s; then every generation but the active one must
/// have been dropped.
fn drain(control: &Control, states: &States, active: u64) {
    let start = Instant::now();
    while control.published.retired_len() > 0 && start.elapsed() < Duration::from_secs(10) {
        control.tick(0, monotonic_ns());
        thread::yield_now();
    }
    assert_eq!(
        control.published.retired_len(),
        0,
        "the cores moved on but retired generations were not freed"
    );
    let live: Vec<usize> = states
        .of
        .iter()
        .enumerate()
        .filter(|(_, s)| s.load(Ordering::SeqCst) == LIVE)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(live, vec![active as usize], "only the active policy lives");
}

/// Sets its flag when dropped, also by a panic.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Set in the process [`generations_flip_under_traffic_and_each_packet_sees_exactly_one`]
/// runs itself in.
const ALONE: &str = "LBP_GENERATIONS_ALONE";

#[test]
fn generations_flip_under_traffic_and_each_packet_sees_exactly_one() {
    // Resident memory is the process's: the test runs in a process of its own
    // (this test binary, given only this test), so that what other tests
    // running beside it allocate does not count as its growth.
    if std::env::var_os(ALONE).is_none() {
        let name = module_path!()
            .split_once("::")
            .map_or("generations", |(_, m)| m)
            .to_owned()
            + "::generations_flip_under_traffic_and_each_packet_sees_exactly_one";
        let status = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(ALONE, "1")
            .status()
            .expect("the test binary runs");
        assert!(status.success(), "{name}, run alone, failed: {status}");
        return;
    }
    let started = Instant::now();
    let states = Arc::new(States {
        of: (0..=FLIPS).map(|_| AtomicU8::new(UNBORN)).collect(),
        live: AtomicUsize::new(0),
    });
    let published = Arc::new(Published::new(generation(0, &states), CORES));
    let shared = Arc::new(Shared {
        conns: ConnTable::new(1 << 16),
        neigh: NeighTable::new(64),
        xdp_flows: Default::default(),
    });
    for a in EVEN.into_iter().chain(ODD) {
        assert!(
            shared
                .neigh
                .set_permanent(&NeighAddr::from(IpAddr::V4(a)), BACKEND_MAC)
        );
    }
    let mut lanes = Vec::new();
    let mut cores = Vec::new();
    for _ in 0..CORES {
        let (p0, client) = host(OUTSTANDING_MAX as usize);
        let (p1, servers) = host(2 * OUTSTANDING_MAX as usize);
        let core: Core<MemPort, MemPort> = Core::new(
            CoreIo::new(vec![p0, p1], Frames::new(512).expect("frames")),
            None,
            published.register().expect("a reader per core"),
            Arc::clone(&shared),
        );
        cores.push(core);
        lanes.push(Lane {
            client,
            servers,
            injected: 0,
            collected: 0,
            newest: 0,
        });
    }
    let control = Control {
        published: Arc::clone(&published),
        shared: Arc::clone(&shared),
        reports: cores.iter().map(Core::report).collect(),
    };
    let most = (FLIPS * PER_FLIP) as usize;
    let mut seen = Seen {
        out: vec![vec![false; most]; CORES],
        by_generation: vec![0; FLIPS as usize + 1],
    };
    let stop = AtomicBool::new(false);
    let finished = Mutex::new(Vec::new());

    thread::scope(|s| {
        for mut core in cores {
            let (stop, finished) = (&stop, &finished);
            s.spawn(move || {
                // Busy polling as `Core::run` does, but yielding when idle: the
                // test shares few CPUs with the control thread.
                while !stop.load(Ordering::Relaxed) {
                    if core.step(monotonic_ns()) == 0 {
                        thread::yield_now();
                    }
                }
                // One more step returns what the ports completed.
                core.step(monotonic_ns());
                let frames = core.frames_free();
                let snap = core.finish();
                finished.lock().unwrap().push((frames, snap));
            });
        }
        // A failed check below stops the cores too (the scope waits for them).
        let stopper = StopOnDrop(&stop);

        let mut rss_warm = 0;
        let mut retired_most = 0;
        for k in 1..=FLIPS {
            exchange(&mut lanes, &mut seen, k - 1, true);
            let g = generation(k, &states);
            assert_eq!(published.publish(g), k);
            // The control loop's housekeeping, which reclaims.
            control.tick(k, monotonic_ns());
            retired_most = retired_most.max(published.retired_len());
            assert!(published.retired_len() <= DRAIN_EVERY as usize);
            // The live policies are the active one and the retired ones, the
            // newest: everything older than the oldest retired one is gone.
            let live = |s: &AtomicU8| s.load(Ordering::SeqCst) == LIVE;
            let newest_live = states.of[..=k as usize]
                .iter()
                .rev()
                .take_while(|s| live(s))
                .count();
            let all_live = states.live.load(Ordering::SeqCst);
            assert_eq!(
                (newest_live, all_live),
                (published.retired_len() + 1, published.retired_len() + 1),
                "live policies after flip {k}"
            );
            if k % DRAIN_EVERY == 0 {
                drain(&control, &states, k);
            }
            if k == WARM_UP {
                rss_warm = rss();
            }
        }
        let rss_end = rss();

        // Every packet comes out (bounded wait), then the cores stop.
        let start = Instant::now();
        while lanes.iter().any(|l| l.collected < l.injected)
            && start.elapsed() < Duration::from_secs(10)
        {
            exchange(&mut lanes, &mut seen, FLIPS, false);
            thread::yield_now();
        }
        drop(stopper);
        for (c, l) in lanes.iter().enumerate() {
            assert_eq!(l.collected, l.injected, "core {c} lost packets");
            assert!(l.injected > 0);
        }
        let grew = rss_end.saturating_sub(rss_warm);
        eprintln!(
            "generations: {FLIPS} flips in {:.1?}; packets {:?}; at most {retired_most} \
             retired at once; RSS {} KiB after {WARM_UP} flips, {} KiB after {FLIPS}",
            started.elapsed(),
            lanes.iter().map(|l| l.injected).collect::<Vec<_>>(),
            rss_warm >> 10,
            rss_end >> 10,
        );
        assert!(
            grew < RSS_GROWTH_MAX,
            "resident memory grew by {} KiB over {} flips: retired code is not freed",
            grew >> 10,
            FLIPS - WARM_UP
        );
    });

    // The cores are gone: nothing holds back reclamation, and each core's
    // books balance.
    published.reclaim();
    assert_eq!(published.retired_len(), 0);
    for ((free, count), snap) in finished.into_inner().unwrap() {
        assert_eq!(free, count, "frames leaked");
        let c = &snap.counters;
        assert_eq!(c.rx.packets, c.to_tx, "every packet received was sent");
        assert_eq!(snap.lp.tx_refused, 0);
    }
    let live: Vec<usize> = (0..=FLIPS as usize)
        .filter(|&k| states.of[k].load(Ordering::SeqCst) != DROPPED)
        .collect();
    assert_eq!(live, vec![FLIPS as usize], "only the active policy lives");
    // Flips happened while packets flowed: many generations decided some.
    let deciding = seen.by_generation.iter().filter(|&&n| n > 0).count();
    eprintln!("generations: {deciding} generations decided packets");
    assert!(
        deciding > 100,
        "only {deciding} generations decided packets"
    );
    drop(control);
    drop(published);
    assert_eq!(states.live.load(Ordering::SeqCst), 0);
}
