//! A bench for the applications: one [`Frames`], a small appliance, frames in,
//! answers out, and the frame books checked.

use std::net::IpAddr;
use std::sync::Arc;

use lbp_abi::wire::extract;

use super::{Apps, Fate};
use crate::config::{Algorithm, Appliance, Interface, Mode, Service};
use crate::ring::Frames;
use crate::wire::testutil::{Spec, build};

pub const IFACE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
/// The source MAC of the frames `build` makes (`testutil::MAC_A`).
pub const CLIENT_MAC: [u8; 6] = crate::wire::testutil::MAC_A;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn appliance() -> Appliance {
    Appliance {
        interfaces: vec![Interface {
            name: "outside".into(),
            mac: IFACE_MAC,
            addrs: vec![(ip("198.18.0.1"), 24), (ip("2001:db8::1"), 64)],
        }],
        services: vec![Service {
            name: "vip".into(),
            vips: vec![ip("198.18.0.10"), ip("2001:db8::10")],
            mode: Mode::Dsr,
            algorithm: Algorithm::Maglev,
            unknown_balance: false,
            backends: Vec::new(),
            formula: None,
            health: Vec::new(),
        }],
        routes: Vec::new(),
        rules: Arc::from(Vec::new()),
    }
}

pub struct Bench {
    pub frames: Frames,
    pub apps: Apps,
    pub appliance: Appliance,
}

impl Bench {
    pub fn new() -> Bench {
        Bench {
            frames: Frames::new(64).unwrap(),
            apps: Apps::builtin(),
            appliance: appliance(),
        }
    }

    /// Hand `frame` (received on `iface`) to the application its protocol
    /// calls for (UDP: echo, else icmp); the frame it sent back, if any, and
    /// out of which interface. Every frame is back on the free list after.
    pub fn run(&mut self, iface: u32, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
        let mut d = self.frames.alloc().unwrap();
        self.frames.slot_mut(d)[..frame.len()].copy_from_slice(frame);
        d.len = frame.len() as u32;
        let f = extract(frame, iface);
        let n = if f.ip_proto == 17 { 0 } else { 1 };
        self.apps
            .deliver(n, d, iface, &f, &mut self.frames, &self.appliance)
            .unwrap();
        let mut answer = None;
        for (d, fate) in std::mem::take(&mut self.apps.out) {
            if let Fate::Tx(dev) = fate {
                answer = Some((dev, self.frames.packet(d).to_vec()));
            }
            self.frames.free(d);
        }
        self.apps.out = Vec::with_capacity(super::OUT_CAPACITY);
        answer
    }

    /// No frame lost or made: all of them on the free list.
    pub fn assert_books(&self) {
        assert_eq!(self.frames.free_count(), self.frames.count());
    }
}

pub fn udp(src: &str, dst: &str, sport: u16, dport: u16, data: &[u8], no_sum: bool) -> Vec<u8> {
    let mut s = Spec::new(src, dst, 17);
    s.sport = sport;
    s.dport = dport;
    s.payload = data.to_vec();
    s.udp_no_checksum = no_sum;
    build(&s).frame
}

/// An ICMP (ICMPv6 for IPv6 addresses) echo request, or a message of
/// `type_code`, with its checksum right.
pub fn icmp(src: &str, dst: &str, type_code: Option<(u8, u8)>, data: &[u8]) -> Vec<u8> {
    let v6 = src.contains(':');
    let mut s = Spec::new(src, dst, if v6 { 58 } else { 1 });
    s.payload = data.to_vec();
    let b = build(&s);
    let mut f = b.frame;
    if let Some((t, c)) = type_code {
        f[b.l4] = t;
        f[b.l4 + 1] = c;
        let e = crate::wire::testutil::l4_expected(&f, b.l3, b.l4, s.proto);
        f[b.l4 + 2..b.l4 + 4].copy_from_slice(&e.to_be_bytes());
    }
    f
}

/// What a test reads of an answer.
pub struct View {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub proto: u8,
    pub l3: usize,
    pub l4: usize,
}

pub fn view(frame: &[u8]) -> View {
    let f = extract(frame, 0);
    assert_eq!(f.present & present::MALFORMED, 0);
    let a = |b: &[u8; 16]| crate::switch::ip_from_bytes(b);
    View {
        src: a(&f.ip_src),
        dst: a(&f.ip_dst),
        sport: f.sport,
        dport: f.dport,
        ttl: f.ip_ttl,
        proto: f.ip_proto,
        l3: usize::from(f.l3_offset),
        l4: usize::from(f.l4_offset),
    }
}

#[test]
fn a_frame_is_moved_never_copied() {
    // The handle is neither Copy nor Clone: `reply`, `send` and `free` take it
    // by value, so a second use does not compile. What is left to check at run
    // time is that every path gives it back.
    trait NotClone {
        const IS_CLONE: bool = false;
    }
    impl<T> NotClone for T {}
    struct W<T>(std::marker::PhantomData<T>);
    #[allow(dead_code)]
    impl<T: Clone> W<T> {
        const IS_CLONE: bool = true;
    }
    const { assert!(!W::<super::Frame>::IS_CLONE) };
    // The probe tells: a descriptor is plain data.
    const { assert!(W::<crate::ring::Desc>::IS_CLONE) };
}

#[test]
fn the_alloc_budget_holds_per_call() {
    struct Greedy(usize);
    impl super::App for Greedy {
        fn name(&self) -> &'static str {
            "greedy"
        }
        fn frame(&mut self, frame: super::Frame, _: &Fields, ctx: &mut super::Ctx<'_>) {
            ctx.free(frame);
        }
        fn poll(&mut self, _: u64, ctx: &mut super::Ctx<'_>) {
            while let Some(f) = ctx.alloc() {
                self.0 += 1;
                ctx.free(f);
            }
        }
    }
    let mut frames = Frames::new(64).unwrap();
    let mut apps = Apps {
        apps: vec![Box::new(Greedy(0))],
        counters: vec![super::AppCounters::default()],
        out: Vec::with_capacity(super::OUT_CAPACITY),
    };
    let a = appliance();
    apps.poll(0, &mut frames, &a);
    apps.poll(1, &mut frames, &a);
    let c = apps.counters(0).unwrap();
    assert_eq!(c.made, 2 * super::ALLOC_BUDGET as u64);
    assert_eq!(c.alloc_refused, 2);
    assert_eq!(apps.made_and_freed(), (c.made, c.made));
    assert_eq!(frames.free_count(), 64);
}

#[test]
fn hostile_frames_are_freed_untouched_or_answered() {
    // Every cut of a valid request and every single-byte corruption: never a
    // panic, never a frame lost, and an answer only with right checksums.
    let mut b = Bench::new();
    let seeds = [
        udp("198.18.1.5", "198.18.0.10", 40000, 7, b"hello", false),
        udp("2001:db8:1::5", "2001:db8::10", 40000, 7, b"hello", false),
        icmp("198.18.1.5", "198.18.0.1", None, b"abcdefgh"),
        icmp("2001:db8:1::5", "2001:db8::1", None, b"abcdefgh"),
    ];
    for q in &seeds {
        for cut in 0..q.len() {
            if let Some((_, a)) = b.run(0, &q[..cut]) {
                let v = view(&a);
                crate::wire::testutil::assert_checksums(&a, v.l3, v.l4, v.proto);
            }
        }
        for at in 0..q.len() {
            for bit in [0x01, 0x80] {
                let mut h = q.clone();
                h[at] ^= bit;
                let _ = b.run(0, &h);
            }
        }
        // Oversized: padded to the whole slot.
        let mut big = q.clone();
        big.resize(crate::ring::FRAME_SIZE, 0xee);
        let _ = b.run(0, &big);
    }
    b.assert_books();
}

// ---- On the switching core ---------------------------------------------------

use lbp_abi::{Action, Decision, Fields, present, stage};

/// The policy of the core tests: UDP to port 7 to the echo application, ICMP
/// and ICMPv6 echo requests to the icmp one, anything else dropped.
fn policy(f: &Fields) -> Decision {
    let d = |action: Action, target: u32| Decision {
        action: action as u32,
        target,
        rule: 0,
        stage: stage::FILTER,
        hash: 0,
    };
    if f.present & present::MALFORMED != 0 {
        return Decision {
            stage: stage::MALFORMED,
            ..d(Action::Drop, 0)
        };
    }
    if f.present & present::UDP != 0 && f.dport == 7 {
        return d(Action::App, 0);
    }
    if f.present & present::ICMP != 0 && matches!(f.icmp_type, 8 | 128) {
        return d(Action::App, 1);
    }
    d(Action::Drop, 0)
}

fn testbed() -> crate::testbed::Testbed {
    crate::testbed::Testbed::new(Arc::new(policy), appliance()).unwrap()
}

#[test]
fn the_core_hands_frames_to_the_applications_and_sends_their_answers() {
    let mut bed = testbed();
    let cases = [
        (
            udp("198.18.1.5", "198.18.0.10", 40000, 7, b"ping", false),
            "app echo",
        ),
        (
            udp("2001:db8:1::5", "2001:db8::10", 40000, 7, b"ping", false),
            "app echo",
        ),
        (icmp("198.18.1.5", "198.18.0.1", None, b"abcd"), "app icmp"),
        (
            icmp("2001:db8:1::5", "2001:db8::1", None, b"abcd"),
            "app icmp",
        ),
    ];
    for (q, verdict) in &cases {
        let o = bed.send(q, 0);
        assert_eq!(o.verdict(bed.appliance()), *verdict);
        assert_eq!(o.follows(&policy(&o.fields), bed.appliance()), Ok(()));
        let Some(crate::testbed::Fate::Sent { iface: 0, frame }) = o.fate() else {
            panic!("no answer: {:?}", o.fates);
        };
        let v = view(frame);
        assert_eq!(ip_bytes(v.dst), o.fields.ip_src);
        assert_eq!(&frame[0..6], &CLIENT_MAC);
        crate::wire::testutil::assert_checksums(frame, v.l3, v.l4, v.proto);
    }
    let c = bed.counters();
    assert_eq!(c.action(Action::App), 4);
    assert_eq!(c.to_tx, 4);
    // Not answered (not ours): still the application's verdict, the frame freed.
    let o = bed.send(&udp("198.18.1.5", "198.18.0.77", 40000, 7, b"x", false), 0);
    assert_eq!(o.verdict(bed.appliance()), "app echo");
    assert!(o.fates.is_empty());
    assert_eq!(o.follows(&policy(&o.fields), bed.appliance()), Ok(()));
}

fn ip_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

#[test]
fn hostile_frames_through_the_core_keep_the_books() {
    // Truncated, corrupted and oversized requests through the whole core:
    // the testbed asserts after each frame that the frame books balance and
    // every frame is back on the free list; an answer has right checksums.
    let mut bed = testbed();
    let seeds = [
        udp("198.18.1.5", "198.18.0.10", 40000, 7, b"hello", false),
        udp("2001:db8:1::5", "2001:db8::10", 40000, 7, b"hello", false),
        icmp("198.18.1.5", "198.18.0.1", None, b"abcdefgh"),
        icmp("2001:db8:1::5", "2001:db8::1", None, b"abcdefgh"),
    ];
    let mut frames = 0u64;
    for q in &seeds {
        let mut hostile: Vec<Vec<u8>> = (0..q.len()).map(|n| q[..n].to_vec()).collect();
        for at in 0..q.len() {
            let mut h = q.clone();
            h[at] ^= 0x5a;
            hostile.push(h);
        }
        let mut big = q.clone();
        big.resize(crate::ring::mem::MAX_FRAME, 0xee);
        hostile.push(big);
        for h in &hostile {
            frames += 1;
            let o = bed.send(h, 0);
            for f in &o.fates {
                if let crate::testbed::Fate::Sent { frame, .. } = f {
                    let v = view(frame);
                    crate::wire::testutil::assert_checksums(frame, v.l3, v.l4, v.proto);
                }
            }
        }
    }
    let c = bed.counters();
    assert_eq!(c.rx.packets, frames);
    assert_eq!(
        c.rx.packets + c.made + c.unheld,
        c.to_tx + c.to_local + c.freed + c.held
    );
}

#[test]
fn a_frame_an_application_loses_is_caught_by_the_books() {
    use crate::generation::Generation;
    use crate::neigh::{NeighTable, Pending};
    use crate::switch::{CoreState, Outputs, Shared, process_burst};

    /// Drops the handle instead of giving the frame back.
    struct Leaky;
    impl super::App for Leaky {
        fn name(&self) -> &'static str {
            "leaky"
        }
        fn frame(&mut self, frame: super::Frame, _: &Fields, _: &mut super::Ctx<'_>) {
            let _lost = frame;
        }
    }
    let g = Generation::new(Arc::new(policy), appliance());
    let mut st = CoreState::new(Pending::with_defaults());
    st.apps = Apps::new(vec![Box::new(Leaky)]);
    let shared = Shared {
        conns: crate::conn::ConnTable::new(64),
        neigh: NeighTable::new(16),
        xdp_flows: Default::default(),
    };
    let mut frames = Frames::new(8).unwrap();
    let mut out = Outputs::new(1, 8);
    let q = udp("198.18.1.5", "198.18.0.10", 40000, 7, b"x", false);
    let mut d = frames.alloc().unwrap();
    frames.slot_mut(d)[..q.len()].copy_from_slice(&q);
    d.len = q.len() as u32;
    let burst = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        process_burst(&g, &mut st, &shared, &mut frames, &[(d, 0)], &mut out, 1);
    }));
    // Debug builds assert the books after every burst; either way they do not
    // balance, and the frame is not back on the free list.
    assert_eq!(burst.is_err(), cfg!(debug_assertions));
    assert!(!st.balanced());
    assert_eq!(frames.free_count(), 7);
}

/// An application that counts its instances' frames (to tell instances apart).
struct Named(&'static str, u64);

impl super::App for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    fn frame(&mut self, frame: super::Frame, _: &Fields, ctx: &mut super::Ctx<'_>) {
        self.1 += 1;
        ctx.free(frame);
    }
}

#[test]
fn the_registry_numbers_registered_applications_after_the_built_in_ones() {
    let r = super::Registry::builtin();
    assert_eq!(r.names(), lbp_abi::app::BUILTIN);
    let r = r
        .with(|| Box::new(Named("dns", 0)))
        .with(|| Box::new(Named("_syn_cookie2", 0)));
    assert_eq!(r.names(), ["echo", "icmp", "dns", "_syn_cookie2"]);
    assert_eq!(r.index("dns"), Some(2));
    assert_eq!(r.index("nope"), None);
    // Each core gets instances of its own, numbered as the names are.
    let (a, b) = (r.instances(), r.instances());
    for apps in [&a, &b] {
        assert_eq!(apps.len(), 4);
        assert_eq!(apps.name(3), Some("_syn_cookie2"));
        assert_eq!(apps.name(4), None);
    }
    // A frame for the registered application goes to it, and the books hold.
    let mut bench = Bench::new();
    bench.apps = r.instances();
    let mut d = bench.frames.alloc().unwrap();
    let q = udp("198.18.1.5", "198.18.0.10", 40000, 53, b"q", false);
    bench.frames.slot_mut(d)[..q.len()].copy_from_slice(&q);
    d.len = q.len() as u32;
    let f = extract(&q, 0);
    let (apps, frames) = (&mut bench.apps, &mut bench.frames);
    apps.deliver(2, d, 0, &f, frames, &bench.appliance).unwrap();
    assert_eq!(apps.counters(2).unwrap().frames, 1);
    assert_eq!(apps.counters(2).unwrap().freed, 1);
    bench.assert_books();
}

#[test]
fn the_registry_refuses_names_a_policy_cannot_write_or_has_already() {
    for bad in ["", "9dns", "dns-responder", "d.n.s", "é"] {
        let r = std::panic::catch_unwind(|| {
            super::Registry::builtin().with(move || Box::new(Named(bad, 0)))
        });
        assert!(r.is_err(), "{bad:?} was registered");
    }
    for taken in ["echo", "icmp"] {
        let r = std::panic::catch_unwind(|| {
            super::Registry::builtin().with(move || Box::new(Named(taken, 0)))
        });
        assert!(r.is_err(), "{taken} registered twice");
    }
}
