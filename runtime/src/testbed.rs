//! One switching core on in-memory rings, driven one frame at a time, and what
//! became of each frame: the third back end of `lbp test` and of the case corpus,
//! and the harness of the differential tests and the `decide` fuzz target.
//!
//! A [`Testbed`] is an appliance of one core: a [`Generation`] (a compiled policy
//! behind [`Decide`] and its [`Appliance`]), the shared connection and neighbour
//! tables, [`Frames`], and one in-memory port per interface plus one more, the
//! *unknown* port (index `interfaces.len()`), where a frame arrives that comes
//! from no interface of the policy. [`Testbed::send`] puts a frame on a port's
//! receive ring, runs [`process_burst`] exactly as `lbp run` does (receive from
//! every port, process, hand the outputs to the ports, flush), and reads the
//! result from what left: which transmit ring a frame went out on and how it was
//! rewritten, the local (TAP) queue, or nothing, with the drop counted by reason.
//!
//! The testbed plays the neighbours: an ARP request or neighbour solicitation the
//! core sends is answered, as the host it asks for would (the MAC is
//! [`neighbour_mac`] of the address), and the core releases the frame it held in
//! a following burst. A frame still waiting after its neighbour had three chances
//! to answer is taken back ([`Fate::Unresolved`]): the core would drop it when the
//! wait ran out.
//!
//! The deciding rule is read from the core's per-rule counters, the balanced
//! service and back end from its per-back-end counters, and the policy's decision
//! is recorded by a wrapper around the policy, so that a caller can check that
//! the core acted on it ([`Outcome::follows`]). Nothing here is on the data path;
//! it allocates freely.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use lbp_abi::{Action, Decision, Fields, present, stage, tcp_flag};

use crate::app::Registry;
use crate::config::{Appliance, Mode};
use crate::conn::ConnTable;
use crate::generation::{Decide, Generation};
use crate::neigh::{NeighTable, Pending};
use crate::ring::mem::{MAX_FRAME, MemHost, MemPort, host};
use crate::ring::{Desc, Frames, Port};
use crate::switch::{
    CoreState, Counters, DropReason, Outputs, Shared, ip_from_bytes, process_burst,
};
use crate::wire;

/// Connections a testbed's table holds (a test block is a few hundred packets).
const CONNECTIONS: usize = 4096;
/// Neighbours its table holds.
const NEIGHBOURS: usize = 256;
/// Bursts after the first in which the neighbours may answer.
const ANSWER_ROUNDS: usize = 3;
/// The clock at the start, and its step per frame sent (1 ms: far below every
/// idle timeout, so a test block's connections live through it).
const START_NS: u64 = 1_000_000_000;
const STEP_NS: u64 = 1_000_000;

/// The MAC address the testbed's neighbour at `a` answers with: locally
/// administered, `02:4e` and the address's last four bytes.
pub fn neighbour_mac(a: IpAddr) -> [u8; 6] {
    let b = match a {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(v) => {
            let o = v.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x4e, b[0], b[1], b[2], b[3]]
}

/// Where a frame ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Put on the transmit ring of interface `iface` (the unknown port is
    /// `interfaces.len()`), as it left the core.
    Sent { iface: u32, frame: Vec<u8> },
    /// Put on the local queue, to the control plane (the TAP).
    Local { frame: Vec<u8> },
    /// Freed, counted under this reason.
    Dropped(Reason),
    /// Taken by the core itself: ARP or neighbour discovery it learned from,
    /// or that was not for it, and did not answer.
    Consumed,
    /// Still held, waiting for a neighbour that did not answer.
    Unresolved,
    /// Never received: longer than the rings' frames ([`MAX_FRAME`] bytes).
    TooLong(usize),
}

/// A drop's reason, as the index of its counter (`Counters::drops`), so that
/// reasons added to [`DropReason`] later are reported too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub usize);

impl Reason {
    /// Whether this is `r`.
    pub fn is(self, r: DropReason) -> bool {
        self.0 == r as usize
    }
}

impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match DropReason::ALL.get(self.0) {
            Some(r) => write!(f, "{r:?}"),
            None => write!(f, "reason {}", self.0),
        }
    }
}

/// What the core did with one frame sent into the testbed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The fields of the frame as it came in (on the port it came in by).
    pub fields: Fields,
    /// Every place the frame (and anything the core made of it) ended; one,
    /// unless something is wrong.
    pub fates: Vec<Fate>,
    /// The policy's decision, when the core asked the policy.
    pub decision: Option<Decision>,
    /// The filter rule whose counter went up, if one did.
    pub rule: Option<u32>,
    /// The service and back end whose traffic counter went up, if one did.
    pub balanced: Option<(u32, u32)>,
    /// The core took the frame for traffic of a connection it knew, before the
    /// policy: NAT return traffic, or an ICMP error about a connection.
    pub connection: bool,
    /// The application (`app NAME`, by number) the core handed the frame to,
    /// if it did; what the application sent back, if anything, is in `fates`.
    pub app: Option<u32>,
    /// That application's name.
    pub app_name: Option<&'static str>,
}

/// A frame a port transmitted, and the port.
type Sent = (u32, Vec<u8>);

/// The policy as the testbed's generation calls it: the real one, with the last
/// decision kept.
struct Recorder {
    inner: Arc<dyn Decide + Send + Sync>,
    last: Mutex<Option<Decision>>,
}

impl Decide for Recorder {
    fn decide(&self, f: &Fields) -> Decision {
        let d = self.inner.decide(f);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        d
    }
}

/// One switching core on in-memory rings. See the module documentation.
pub struct Testbed {
    generation: Generation,
    recorder: Arc<Recorder>,
    state: CoreState,
    shared: Shared,
    frames: Frames,
    ports: Vec<MemPort>,
    hosts: Vec<MemHost>,
    out: Outputs,
    now: u64,
    /// Per rule, its packet counter when it last decided a frame here.
    rules_seen: HashMap<u32, u64>,
    /// The applications the core runs (new instances at every restart).
    apps: Registry,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("generation", &self.generation)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// A fresh appliance running `policy` with `appliance`'s configuration and
    /// the back ends' configured weights.
    pub fn new(
        policy: Arc<dyn Decide + Send + Sync>,
        appliance: Appliance,
    ) -> std::io::Result<Testbed> {
        Testbed::with_apps(policy, appliance, Registry::builtin())
    }

    /// [`Testbed::new`] with these applications instead of the built-in ones.
    pub fn with_apps(
        policy: Arc<dyn Decide + Send + Sync>,
        appliance: Appliance,
        apps: Registry,
    ) -> std::io::Result<Testbed> {
        let recorder = Arc::new(Recorder {
            inner: policy,
            last: Mutex::new(None),
        });
        let ports = appliance.interfaces.len() + 1;
        let generation = Generation::new(recorder.clone(), appliance);
        let (ports, hosts): (Vec<MemPort>, Vec<MemHost>) = (0..ports).map(|_| host(8)).unzip();
        let out = Outputs::new(hosts.len(), 32);
        let mut state = CoreState::new(Pending::with_defaults());
        state.apps = apps.instances();
        Ok(Testbed {
            generation,
            recorder,
            state,
            shared: fresh_tables(),
            frames: Frames::new(64)?,
            ports,
            hosts,
            out,
            now: START_NS,
            rules_seen: HashMap::new(),
            apps,
        })
    }

    /// The configuration the core runs.
    pub fn appliance(&self) -> &Appliance {
        &self.generation.appliance
    }

    /// The index of the unknown port (`interfaces.len()`).
    pub fn unknown_port(&self) -> u32 {
        self.generation.appliance.interfaces.len() as u32
    }

    /// Give the core the XDP fast path's flows (`Shared::xdp_flows`), as
    /// `lbp run` does once the fast path runs.
    pub fn set_xdp_flows(&mut self, flows: crate::ring::bpf::LoadedMap) {
        let _ = self.shared.xdp_flows.set(flows);
    }

    /// The core's counters.
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Start again as a freshly started appliance (empty connection and
    /// neighbour tables, counters at zero), with the same policy.
    pub fn restart(&mut self) {
        self.state.drain(&mut self.frames);
        self.state = CoreState::new(Pending::with_defaults());
        self.state.apps = self.apps.instances();
        self.shared = fresh_tables();
        for h in &self.hosts {
            h.discard();
        }
        self.now = START_NS;
        self.rules_seen.clear();
    }

    /// Send `frame` into the appliance on port `in_iface` (an interface index,
    /// or anything else for the unknown port) and report what the core did.
    pub fn send(&mut self, frame: &[u8], in_iface: u32) -> Outcome {
        let port = if (in_iface as usize) < self.hosts.len() - 1 {
            in_iface
        } else {
            self.unknown_port()
        };
        self.now += STEP_NS;
        let fields = lbp_abi::wire::extract(frame, port);
        let mut outcome = Outcome {
            fields,
            fates: Vec::new(),
            decision: None,
            rule: None,
            balanced: None,
            connection: false,
            app: None,
            app_name: None,
        };
        if frame.len() > MAX_FRAME {
            outcome.fates.push(Fate::TooLong(frame.len()));
            return outcome;
        }
        *self.recorder.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let before = Snapshot::of(&self.state.counters, &self.state.apps);
        assert!(
            self.hosts[port as usize].inject(frame),
            "the receive ring has room"
        );
        let (mut rounds, mut answered) = (0, 0);
        loop {
            let (sent, local) = self.burst();
            let mut answers = Vec::new();
            for (iface, f) in sent {
                match answer(&f) {
                    Some(a) => answers.push((iface, a)),
                    None => outcome.fates.push(Fate::Sent { iface, frame: f }),
                }
            }
            outcome
                .fates
                .extend(local.into_iter().map(|frame| Fate::Local { frame }));
            if answers.is_empty() || rounds == ANSWER_ROUNDS {
                break;
            }
            rounds += 1;
            answered += answers.len() as u64;
            for (iface, a) in answers {
                assert!(
                    self.hosts[iface as usize].inject(&a),
                    "the receive ring has room"
                );
            }
        }
        for _ in 0..self.state.pending_len() {
            outcome.fates.push(Fate::Unresolved);
        }
        self.state.drain(&mut self.frames);
        let after = &self.state.counters;
        // Each answer the testbed gave is consumed too.
        let consumed = (after.neigh_consumed - before.neigh_consumed).saturating_sub(answered);
        for _ in 0..consumed {
            outcome.fates.push(Fate::Consumed);
        }
        for (r, (a, b)) in after.drops.iter().zip(before.drops.iter()).enumerate() {
            for _ in *b..*a {
                outcome.fates.push(Fate::Dropped(Reason(r)));
            }
        }
        outcome.decision = *self.recorder.last.lock().unwrap_or_else(|e| e.into_inner());
        outcome.connection =
            after.nat_return.packets > before.nat_return || after.icmp_errors > before.icmp_errors;
        // Only the deciding rule's counter can move: read that one.
        outcome.rule = outcome.decision.map(|d| d.rule).filter(|&r| {
            let now = after.rules.get(r as usize).map_or(0, |p| p.packets);
            let seen = self.rules_seen.get(&r).copied().unwrap_or(0);
            self.rules_seen.insert(r, now);
            now > seen
        });
        outcome.balanced = after.backend_traffic.iter().enumerate().find_map(|(s, a)| {
            let b = before.backend_traffic.get(s).map_or(&[][..], |b| &b[..]);
            let a: Vec<u64> = a.iter().map(|p| p.packets).collect();
            let a = &a[..];
            changed(b, a).map(|i| (s as u32, i))
        });
        let app_frames: Vec<u64> = (0..self.state.apps.len())
            .map(|n| self.state.apps.counters(n).map_or(0, |c| c.frames))
            .collect();
        outcome.app = changed(&before.app_frames, &app_frames);
        outcome.app_name = outcome.app.and_then(|n| self.state.apps.name(n as usize));
        assert!(
            self.state.balanced(),
            "frame accounting: {:?}",
            self.state.counters
        );
        assert_eq!(
            self.frames.free_count(),
            self.frames.count(),
            "every frame is back on the free list"
        );
        outcome
    }

    /// One burst: receive from every port, process, transmit, flush; what each
    /// port sent and what went to the local queue.
    fn burst(&mut self) -> (Vec<Sent>, Vec<Vec<u8>>) {
        let mut rx = Vec::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let mut buf = [Desc { addr: 0, len: 0 }; 8];
            let n = p.recv(&mut self.frames, &mut buf);
            rx.extend(buf[..n].iter().map(|&d| (d, i as u32)));
        }
        process_burst(
            &self.generation,
            &mut self.state,
            &self.shared,
            &mut self.frames,
            &rx,
            &mut self.out,
            self.now,
        );
        let (refused, local) = self.out.hand_over(&mut self.ports, &mut self.frames);
        assert_eq!(refused, 0, "the transmit rings have room");
        let sent = self
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| h.take_all().into_iter().map(move |f| (i as u32, f)))
            .collect();
        (sent, local)
    }
}

/// Whether the XDP fast path (`lbp_compiler::bpf`, fast mode) must leave the
/// frame of `f` to the switching cores whatever the policy says: no
/// Ethernet header, ARP, ICMP errors (IPv4 3, 11, 12; ICMPv6 1-4),
/// neighbour discovery (135, 136), traffic from or to one of the NAT back
/// ends `nat`. A malformed frame is the policy's (it drops it).
pub fn fast_path_leaves_to_cores(f: &Fields, nat: &[IpAddr]) -> bool {
    if f.present & present::ETH == 0 {
        return true;
    }
    if f.present & present::MALFORMED != 0 {
        return false;
    }
    if f.eth_type == 0x0806 {
        return true;
    }
    if f.present & present::ICMP != 0 {
        let t = f.icmp_type;
        let error_or_nd = match f.ip_version {
            4 => matches!(t, 3 | 11 | 12),
            _ => matches!(t, 1..=4 | 135 | 136),
        };
        if error_or_nd {
            return true;
        }
    }
    if f.present & (present::IP4 | present::IP6) == 0 {
        return false;
    }
    // As the program's map compares them: the 16-byte `Fields` form.
    nat.contains(&ip_from_bytes(&f.ip_src)) || nat.contains(&ip_from_bytes(&f.ip_dst))
}

/// What the XDP fast path must do with `frame` (fields `f`), given the
/// reference interpreter's `action` for it, and the frame it must leave:
/// the cores' frames untouched to them (`XDP_PASS` in a test run, where the
/// XSK map is empty); a drop dropped (`XDP_DROP`); a segment reset that the
/// cores would answer, answered with the very RST they build
/// ([`wire::reset_in_place`], `XDP_TX`); the rest untouched to the cores.
/// The verdict is the kernel's number.
pub fn fast_path_model(frame: &[u8], f: &Fields, action: u32, nat: &[IpAddr]) -> (u32, Vec<u8>) {
    use lbp_abi::bpf::xdp;
    let untouched = |verdict: i32| (verdict as u32, frame.to_vec());
    if fast_path_leaves_to_cores(f, nat) {
        return untouched(xdp::PASS);
    }
    if action == Action::Drop as u32 {
        return untouched(xdp::DROP);
    }
    let mut answer = frame.to_vec();
    if action == Action::Reset as u32
        && f.present & present::TCP != 0
        && let Some(len) = wire::reset_in_place(
            &mut answer,
            frame.len(),
            usize::from(f.l3_offset),
            usize::from(f.l4_offset),
        )
    {
        answer.truncate(len);
        return (xdp::TX as u32, answer);
    }
    untouched(xdp::PASS)
}

fn fresh_tables() -> Shared {
    Shared {
        conns: ConnTable::new(CONNECTIONS),
        neigh: NeighTable::new(NEIGHBOURS),
        xdp_flows: Default::default(),
    }
}

/// The index whose count went up between `before` and `after`.
fn changed(before: &[u64], after: &[u64]) -> Option<u32> {
    after
        .iter()
        .enumerate()
        .find(|&(i, a)| *a > before.get(i).copied().unwrap_or(0))
        .map(|(i, _)| i as u32)
}

/// The counters a frame's outcome is read from, before the frame (not the
/// per-rule ones: a policy may have 100 000 rules).
struct Snapshot {
    drops: [u64; DropReason::COUNT],
    neigh_consumed: u64,
    nat_return: u64,
    icmp_errors: u64,
    backend_traffic: Vec<Vec<u64>>,
    app_frames: Vec<u64>,
}

impl Snapshot {
    fn of(c: &Counters, apps: &crate::app::Apps) -> Snapshot {
        Snapshot {
            app_frames: (0..apps.len())
                .map(|n| apps.counters(n).map_or(0, |c| c.frames))
                .collect(),
            drops: c.drops,
            neigh_consumed: c.neigh_consumed,
            nat_return: c.nat_return.packets,
            icmp_errors: c.icmp_errors,
            backend_traffic: c
                .backend_traffic
                .iter()
                .map(|v| v.iter().map(|p| p.packets).collect())
                .collect(),
        }
    }
}

/// Whether the IP header at `at` in `frame` is from `f`'s source to its
/// destination (the packet an ICMP error quotes).
fn quotes(frame: &[u8], at: usize, f: &Fields) -> bool {
    let (src, dst) = if f.ip_version == 4 {
        (&f.ip_src[12..], &f.ip_dst[12..])
    } else {
        (&f.ip_src[..], &f.ip_dst[..])
    };
    let (s, d, n) = if f.ip_version == 4 {
        (12, 16, 4)
    } else {
        (8, 24, 16)
    };
    frame.get(at + s..at + s + n) == Some(src) && frame.get(at + d..at + d + n) == Some(dst)
}

/// The answer of the neighbour a frame the core sent asks for (an ARP request
/// or a neighbour solicitation), or `None` when the frame is not such a question.
fn answer(frame: &[u8]) -> Option<Vec<u8>> {
    let f = lbp_abi::wire::extract(frame, 0);
    if f.eth_type == 0x0806 {
        let l3 = usize::from(f.l3_offset).max(14);
        let a = wire::arp::parse(frame, l3)?;
        if a.op != wire::arp::OP_REQUEST {
            return None;
        }
        let mut reply = frame.to_vec();
        let mac = neighbour_mac(IpAddr::V4(a.target_ip));
        return wire::arp::reply_in_place(&mut reply, l3, mac, a.target_ip).then_some(reply);
    }
    if f.ip_version == 6 && f.present & present::ICMP != 0 && f.icmp_type == wire::ndp::TYPE_NS {
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        let ns = wire::ndp::parse_ns(frame, l3, l4)?;
        let mut buf = vec![0; MAX_FRAME];
        buf[..frame.len()].copy_from_slice(frame);
        let mac = neighbour_mac(IpAddr::V6(ns.target));
        let n = wire::ndp::na_from_ns_in_place(&mut buf, frame.len(), l3, l4, mac, ns.target)?;
        buf.truncate(n);
        return Some(buf);
    }
    None
}

impl Outcome {
    /// The one fate of the frame, when there is exactly one.
    pub fn fate(&self) -> Option<&Fate> {
        match &self.fates[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Whether `sent` is a TCP reset answering the frame that came in: a RST
    /// from its destination to its source, ports swapped.
    pub fn is_reset(&self, sent: &[u8]) -> bool {
        let (i, o) = (&self.fields, lbp_abi::wire::extract(sent, 0));
        o.present & present::TCP != 0
            && i.present & present::TCP != 0
            && o.tcp_flags & tcp_flag::RST != 0
            && o.ip_src == i.ip_dst
            && o.ip_dst == i.ip_src
            && o.sport == i.dport
            && o.dport == i.sport
    }

    /// Whether `sent` is an ICMP (ICMPv6) time exceeded to the frame's source
    /// that quotes the frame's IP header: what the core answers a packet whose
    /// TTL ran out with.
    pub fn is_time_exceeded(&self, sent: &[u8]) -> bool {
        let (i, o) = (&self.fields, lbp_abi::wire::extract(sent, 0));
        let time_exceeded = if o.ip_version == 4 { 11 } else { 3 };
        o.present & present::ICMP != 0
            && o.icmp_type == time_exceeded
            && o.ip_dst == i.ip_src
            && o.ip_version == i.ip_version
            && quotes(sent, usize::from(o.l4_offset) + 8, i)
    }

    /// The verdict in the syntax of a test packet line (`drop`, `reset`,
    /// `local`, `balance SERVICE`, `forward dev IFACE`, `expire`), read from the
    /// fate: a frame sent back as a RST to its sender is `reset`; an ICMP time
    /// exceeded to the sender, or a drop for the TTL, `expire`; one sent after the
    /// core counted it for a back end is `balance` of that back end's service;
    /// one sent otherwise is `forward` out of the interface it left by; freed,
    /// or never resolved, is `drop`. Several fates are listed, joined by ` + `.
    pub fn verdict(&self, appliance: &Appliance) -> String {
        if self.app.is_some() {
            // Whatever the application did with it (answered, or freed).
            return format!("app {}", self.app_name.unwrap_or("?"));
        }
        let one = |fate: &Fate| match fate {
            Fate::Sent { frame, .. } if self.is_reset(frame) => "reset".to_string(),
            Fate::Sent { frame, .. } if self.is_time_exceeded(frame) => "expire".to_string(),
            Fate::Dropped(r) if r.is(DropReason::Ttl) => "expire".into(),
            Fate::Sent { .. } if self.balanced.is_some() => {
                let s = self.balanced.map_or(0, |(s, _)| s as usize);
                let name = appliance.services.get(s).map_or("?", |s| s.name.as_str());
                format!("balance {name}")
            }
            Fate::Sent { iface, .. } => {
                let name = appliance
                    .interfaces
                    .get(*iface as usize)
                    .map_or("(unknown port)", |i| i.name.as_str());
                format!("forward dev {name}")
            }
            Fate::Local { .. } => "local".into(),
            Fate::Dropped(_) | Fate::Consumed | Fate::Unresolved | Fate::TooLong(_) => {
                "drop".into()
            }
        };
        match &self.fates[..] {
            [] => "nothing (the frame is lost)".into(),
            [f] => one(f),
            all => all.iter().map(one).collect::<Vec<_>>().join(" + "),
        }
    }

    /// What the verdict leaves out: why a frame was dropped, where a balanced
    /// frame went, what a sent frame's destination is.
    pub fn detail(&self, appliance: &Appliance) -> String {
        let one = |fate: &Fate| match fate {
            Fate::Sent { frame, .. } => {
                let o = lbp_abi::wire::extract(frame, 0);
                let dst = ip_from_bytes(&o.ip_dst);
                let port = if o.present & (present::TCP | present::UDP) != 0 {
                    format!(":{}", o.dport)
                } else {
                    String::new()
                };
                match self.balanced {
                    Some((s, b)) if !self.is_reset(frame) => {
                        let svc = appliance.services.get(s as usize);
                        let how = match svc.map(|s| s.mode) {
                            Some(Mode::Dsr) => "DSR",
                            _ => "NAT",
                        };
                        format!("{how} to back end {b} ({dst}{port}), ttl {}", o.ip_ttl)
                    }
                    _ => format!("sent to {dst}{port}, ttl {}", o.ip_ttl),
                }
            }
            Fate::Local { .. } => "to the TAP".into(),
            Fate::Dropped(r) => format!("dropped: {r:?}"),
            Fate::Consumed => "consumed: ARP / neighbour discovery not answered".into(),
            Fate::Unresolved => "held: no neighbour answered".into(),
            Fate::TooLong(n) => format!("not received: {n} bytes, the rings take {MAX_FRAME}"),
        };
        self.fates.iter().map(one).collect::<Vec<_>>().join("; ")
    }

    /// `Ok` when what the core did follows from `decision` (the reference
    /// interpreter's, for the same fields) with the connection table the core
    /// had: the core asked the policy and got `decision` (unless the frame is
    /// ARP, neighbour discovery or malformed, which the core handles before the
    /// policy, or traffic of a connection it knows: NAT return and ICMP errors
    /// about one), and the frame's one fate is one the decision's action allows.
    /// The reasons a fate is allowed are the core's, named in `switch`.
    pub fn follows(&self, decision: &Decision, appliance: &Appliance) -> Result<(), String> {
        if decision.action == Action::App as u32 && self.decision == Some(*decision) {
            // The application owns the frame: it answered (one frame sent back
            // out of the interface it came in by) or freed it.
            let answered = match &self.fates[..] {
                [] => true,
                [Fate::Sent { iface, .. }] => *iface == self.fields.in_iface,
                _ => false,
            };
            return if self.app == Some(decision.target) && answered {
                Ok(())
            } else {
                Err(format!(
                    "decision {decision:?} but the core gave it to application {:?}: {:?}",
                    self.app, self.fates
                ))
            };
        }
        let Some(fate) = self.fate() else {
            return Err(format!("{} fates: {:?}", self.fates.len(), self.fates));
        };
        if let Fate::TooLong(_) = fate {
            return Ok(());
        }
        let Some(asked) = self.decision else {
            // Not asked: only what the core handles before the policy.
            let f = &self.fields;
            let before_policy = f.present & present::ETH == 0
                || f.present & present::MALFORMED != 0
                || f.eth_type == 0x0806
                || (f.ip_version == 6
                    && f.present & present::ICMP != 0
                    && matches!(f.icmp_type, wire::ndp::TYPE_NS | wire::ndp::TYPE_NA))
                || self.connection;
            return if before_policy {
                Ok(())
            } else {
                Err(format!("the core did not ask the policy: {fate:?}"))
            };
        };
        if asked != *decision {
            return Err(format!(
                "the core's policy decided {asked:?}, not {decision:?}"
            ));
        }
        use DropReason as R;
        let action = Action::from_u32(decision.action);
        let sends_on = !matches!(
            action,
            Some(Action::Drop | Action::Reset | Action::Local | Action::App) | None
        );
        let expiring = sends_on && self.fields.ip_ttl <= 1;
        let ok = match (action, fate) {
            (None, Fate::Dropped(r)) => r.is(R::BadDecision),
            // The stages named here have their own reason; a newer one may.
            (Some(Action::Drop), Fate::Dropped(r)) => match decision.stage {
                stage::MALFORMED => r.is(R::Malformed),
                stage::FILTER => r.is(R::Filter),
                stage::INVALID_ENTRY => r.is(R::InvalidEntry),
                stage::ROUTE => r.is(R::NoRoute),
                _ => true,
            },
            (Some(Action::Reset), Fate::Sent { iface, frame }) => {
                *iface == self.fields.in_iface && self.is_reset(frame)
            }
            (Some(Action::Reset), Fate::Dropped(r)) => r.is(R::Filter) || r.is(R::InvalidEntry),
            (Some(Action::Local), Fate::Local { .. }) => true,
            // A packet sent on whose TTL runs out: answered, or dropped.
            (_, Fate::Sent { frame, .. }) if expiring && self.is_time_exceeded(frame) => true,
            (_, Fate::Dropped(r)) if expiring && r.is(R::Ttl) => true,
            (Some(Action::Forward), Fate::Sent { iface, .. }) => appliance
                .routes
                .get(decision.target as usize)
                .is_some_and(|r| r.dev == *iface),
            (Some(Action::Forward), Fate::Dropped(r)) => r.is(R::NoRoute),
            (Some(Action::Balance), Fate::Sent { frame, .. }) if self.is_reset(frame) => {
                self.fields.present & present::TCP != 0
            }
            (Some(Action::Balance), Fate::Sent { .. }) => {
                self.balanced.is_some_and(|(s, _)| s == decision.target)
            }
            (Some(Action::Balance), Fate::Dropped(r)) => {
                [R::UnknownRst, R::NoBackend, R::Rewrite, R::NoRoute]
                    .into_iter()
                    .any(|x| r.is(x))
            }
            (_, Fate::Unresolved) => sends_on,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "decision {decision:?} but the core's fate is {fate:?}"
            ))
        }
    }
}
