//! lbp's traffic generator and counter (`trafficgen`) on veth pairs between
//! namespaces made by the test, by every sending method this kernel offers: the
//! clone method always (it is the fallback; a kernel without it fails the test,
//! and the error names the missing feature), live frames where the kernel runs
//! them (a line says when it does not). The generator in A sends 100 000 UDP
//! frames, the counter on B's end sees them, the flow variant makes distinct
//! flows with valid checksums, frames survive a forwarding hop, and every
//! program is gone afterwards. Needs root; skipped with a message otherwise.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lbp_lab::require_netns;
use lbp_lab::testing::frame::mac_str as mac_text;
use lbp_lab::testing::{Netns, enter, veth_up as veth};
use lbp_runtime::ring::bpf;
use lbp_trafficgen::{
    Count, Counter, Generator, Method, live_frames_available, prog_loaded, udp4_frame,
};

const A_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x00, 0x01];
const B_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x00, 0x02];
const FRAMES: u64 = 100_000;

/// A namespace made by the test, without IPv6 (whose link-local chatter
/// the counters, which count IPv6 too, would otherwise see).
fn netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6=1");
    ns
}

/// Two namespaces joined by veth `ga` (in A) and `gb` (in B), with addresses;
/// A's transmit checksum offload off (its own stack's datagrams leave complete).
fn pair() -> (Netns, Netns) {
    let a = netns("gena");
    let b = netns("genb");
    veth(&a, "ga", &b, "gb");
    a.ip(&["link", "set", "ga", "address", &mac_text(A_MAC)]);
    b.ip(&["link", "set", "gb", "address", &mac_text(B_MAC)]);
    a.add_address("ga", "198.18.7.1/24").unwrap();
    b.add_address("gb", "198.18.7.2/24").unwrap();
    a.tx_checksum_off("ga").unwrap();
    (a, b)
}

/// The methods to test on `ifindex` of `ns`: clone always, live frames where
/// the kernel runs them (else a line says why it is left out).
fn methods(ns: &Netns, ifindex: u32) -> Vec<Method> {
    match in_ns(ns, move || {
        live_frames_available(ifindex).map_err(|e| e.to_string())
    }) {
        Ok(()) => vec![Method::Clone, Method::LiveFrames],
        Err(e) => {
            eprintln!("live frames refused by this kernel ({e}): the clone method only");
            vec![Method::Clone]
        }
    }
}

/// The kernel's receive-drop count of `ifname` in `ns` (`ip -s link`).
fn rx_dropped(ns: &Netns, ifname: &str) -> u64 {
    let out = ns.ip(&["-s", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    // "RX:  bytes packets errors dropped ..." then the numbers.
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("RX:") {
            let nums: Vec<u64> = lines
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            return nums.get(3).copied().unwrap_or(0);
        }
    }
    0
}

/// Whether `ifname` in `ns` has an XDP program attached (`ip link` shows one).
fn has_xdp(ns: &Netns, ifname: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp") || text.contains(" xdp")
}

/// Wait (at most two seconds) until program `id` is freed.
fn freed(id: u32) -> bool {
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if !prog_loaded(id).expect("BPF_PROG_GET_FD_BY_ID") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Run `f` on a thread that has entered `ns`; the thread ends with `f`.
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        enter(&path);
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(Duration::from_secs(60));
    let _ = h.join();
    r.expect("namespace thread ended without a result")
}

/// A [`Counter`] attached to `ifname` by a thread inside `ns`, which serves
/// reads until [`Remote::finish`] (bounded: 60 s without a request).
struct Remote {
    ask: mpsc::Sender<()>,
    answer: mpsc::Receiver<Count>,
    thread: std::thread::JoinHandle<()>,
    prog_id: u32,
}

impl Remote {
    fn attach(ns: &Netns, ifname: &'static str) -> Remote {
        let path = ns.path();
        let (ask, asked) = mpsc::channel::<()>();
        let (answer_tx, answer) = mpsc::channel();
        let (id_tx, id_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let attached = bpf::ifindex(ifname).and_then(Counter::attach);
            let c = match attached {
                Ok(c) => c,
                Err(e) => {
                    let _ = id_tx.send(Err(e.to_string()));
                    return;
                }
            };
            eprintln!("counter on {ifname} in {:?} mode", c.mode());
            let _ = id_tx.send(Ok(c.prog_id().expect("prog id")));
            while let Ok(()) = asked.recv_timeout(Duration::from_secs(60)) {
                let _ = answer_tx.send(c.read().expect("read"));
            }
        });
        let prog_id = id_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("counter thread")
            .unwrap_or_else(|e| panic!("attach counter on {ifname}: {e}"));
        Remote {
            ask,
            answer,
            thread,
            prog_id,
        }
    }

    fn read(&self) -> Count {
        self.ask.send(()).expect("counter thread alive");
        self.answer
            .recv_timeout(Duration::from_secs(5))
            .expect("counter answers")
    }

    /// Read until the count reaches `want` or stops growing (bounded: 3 s).
    fn settle(&self, want: u64) -> Count {
        let end = Instant::now() + Duration::from_secs(3);
        let mut last = self.read();
        while last.packets < want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            last = self.read();
        }
        last
    }

    /// Detach (the thread drops the counter) and return the program's id.
    fn finish(self) -> u32 {
        drop(self.ask);
        self.thread.join().expect("counter thread");
        self.prog_id
    }
}

fn frame_a_to_b() -> Vec<u8> {
    udp4_frame(
        A_MAC,
        B_MAC,
        Ipv4Addr::new(198, 18, 7, 1),
        Ipv4Addr::new(198, 18, 7, 2),
        40_000,
        9,
        18,
    )
}

#[test]
fn generator_frames_reach_the_counter_and_programs_go_away() {
    require_netns!("ethtool");
    let (a, b) = pair();
    let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
    for method in methods(&a, a_if) {
        let counter = Remote::attach(&b, "gb");
        assert!(has_xdp(&b, "gb"), "counter attached to gb");
        // The live-frames probe transmits nothing.
        in_ns(&a, move || live_frames_available(a_if).ok());
        let before = counter.settle(0);
        assert_eq!(
            before.packets, 0,
            "{method:?}: frames before the generator ran"
        );
        let dropped_before = rx_dropped(&b, "gb");

        let frame = frame_a_to_b();
        let (sent, refused, secs, gen_id) = in_ns(&a, move || {
            let g = Generator::open(method, a_if, &frame, false).expect("load generator");
            assert_eq!(g.method(), method);
            let id = g.prog_id().expect("prog id");
            // Loaded and idle, the generator lets the interface's own traffic
            // through (the clone program passes every frame but its seeds).
            let s = std::net::UdpSocket::bind("198.18.7.1:0").expect("bind");
            s.send_to(b"ordinary", "198.18.7.2:9").expect("send");
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            let sent = g.run(FRAMES, 64).expect("send frames");
            let refused = g.refused().expect("refused");
            (sent, refused, t.elapsed().as_secs_f64(), id)
        });
        assert_eq!(sent + refused, FRAMES, "{method:?}: every frame accounted");

        let seen = counter.settle(FRAMES + 1).packets;
        let dropped = rx_dropped(&b, "gb").saturating_sub(dropped_before);
        eprintln!(
            "{method:?}: sent {sent} frames in {secs:.3} s ({:.2} Mpps offered), {refused} refused; \
             counted {seen}, kernel drops {dropped}",
            sent as f64 / secs / 1e6
        );
        assert!(seen >= 1, "{method:?}: the ordinary datagram got through");
        let seen = seen - 1;
        assert!(seen <= sent, "{method:?}: counted more than sent: {seen}");
        // Loss is allowed only as far as the kernel reports it as drops.
        assert!(
            seen + dropped >= sent,
            "{method:?}: lost {} frames without a kernel drop count ({dropped})",
            sent - seen
        );
        assert!(
            seen >= FRAMES / 2,
            "{method:?}: most frames must arrive, saw {seen}"
        );

        let counter_id = counter.finish();
        assert!(!has_xdp(&b, "gb"), "counter detached when dropped");
        assert!(freed(counter_id), "counter program {counter_id} freed");
        assert!(
            freed(gen_id),
            "{method:?}: generator program {gen_id} freed"
        );
    }
}

#[test]
fn flow_generator_makes_distinct_valid_flows() {
    require_netns!("ethtool");
    let (a, b) = pair();
    // B's kernel receives these: GRO on gives veth the NAPI instance that
    // frames from a live-frames run need, and a /16 puts every source on link.
    b.add_address("gb", "198.18.7.2/16").unwrap();
    b.exec(&["ethtool", "-K", "gb", "gro", "on"]);
    const N: u64 = 1000;
    let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
    for (round, method) in methods(&a, a_if).into_iter().enumerate() {
        let bpath = b.path();
        let (tx, rx) = mpsc::channel();
        // B: a UDP socket on port 9 collects the sources. The kernel delivers
        // only datagrams whose IPv4 and UDP checksums verify (the frames carry
        // no offload mark), so every datagram received proves both updates right.
        let sink = std::thread::spawn(move || {
            enter(&bpath);
            let s = std::net::UdpSocket::bind("198.18.7.2:9").expect("bind");
            let big: libc::c_int = 8 << 20;
            // SAFETY: `big` is a live c_int for the call; the socket is open.
            let r = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &big as *const libc::c_int as *const libc::c_void,
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "SO_RCVBUFFORCE");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = tx.send(Vec::new());
            let mut sources = Vec::new();
            let mut buf = [0u8; 64];
            let end = Instant::now() + Duration::from_secs(10);
            while (sources.len() as u64) < N && Instant::now() < end {
                match s.recv_from(&mut buf) {
                    Ok((18, from)) => sources.push(from),
                    Ok((n, from)) => panic!("datagram of {n} bytes from {from}"),
                    Err(_) => break,
                }
            }
            let _ = tx.send(sources);
        });
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_empty());
        // Flow numbers from 0x02xx_0000: sources 198.18.1.2 (then 198.18.1.3), ports
        // varying; each round its own sources.
        let first = 0x0201_0000 + ((round as u64) << 24);
        let frame = frame_a_to_b();
        let (sent, next) = in_ns(&a, move || {
            let g = Generator::open(method, a_if, &frame, true).expect("load flow generator");
            g.set_next_flow(first).expect("set next flow");
            let sent = g.run(N, 16).expect("run");
            (sent, g.next_flow().expect("next flow"))
        });
        let sources = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        sink.join().expect("sink thread");
        assert_eq!(sent, N, "{method:?}");
        assert_eq!(next, first + N, "{method:?}: one flow number per frame");
        let distinct: std::collections::HashSet<_> = sources.iter().collect();
        eprintln!(
            "{method:?} flow generator: sent {sent}, received {} datagrams from {} distinct sources",
            sources.len(),
            distinct.len()
        );
        assert!(
            sources.len() as u64 >= N * 9 / 10,
            "{method:?}: most datagrams arrive"
        );
        assert_eq!(
            distinct.len(),
            sources.len(),
            "{method:?}: every frame is a new flow"
        );
        let want = std::net::IpAddr::from([198, 18, (first >> 16) as u8, (first >> 24) as u8]);
        for s in &sources {
            assert_eq!(s.ip(), want, "{method:?}");
        }

        // A frame that is not IPv4 TCP/UDP is refused by the flow variant, and
        // frames of a bad size by both.
        let mut arp = udp4_frame(
            A_MAC,
            B_MAC,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            1,
            2,
            0,
        );
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(Generator::open(method, a_if, &arp, true).is_err());
        assert!(Generator::open(method, a_if, &[0u8; 10], false).is_err());
        assert!(Generator::open(method, a_if, &vec![0u8; 2000], false).is_err());
    }
}

/// Through a forwarding namespace: the router rewrites each frame in place
/// (MACs, TTL). Live frames: the kernel recycles the pages, and the generator
/// restores the headers on every run, so every frame is forwarded (none arrives
/// with the last trip's MAC addresses and is dropped as for another host).
/// Clone: the clones share the seed's data, which the router must not change
/// under the clones still queued.
#[test]
fn generated_frames_survive_a_forwarding_hop() {
    require_netns!("ethtool");
    let a = netns("gena");
    let r = netns("genr");
    let b = netns("genb");
    veth(&a, "ga", &r, "ra");
    veth(&r, "rb", &b, "gb");
    const R_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x01, 0x01];
    r.ip(&["link", "set", "ra", "address", &mac_text(R_MAC)]);
    b.ip(&["link", "set", "gb", "address", &mac_text(B_MAC)]);
    a.add_address("ga", "198.18.8.2/24").unwrap();
    r.add_address("ra", "198.18.8.1/24").unwrap();
    r.add_address("rb", "198.18.9.1/24").unwrap();
    b.add_address("gb", "198.18.9.2/24").unwrap();
    r.sysctl("net.ipv4.ip_forward=1");
    r.exec(&["ethtool", "-K", "ra", "gro", "on"]);
    r.ip(&[
        "neigh",
        "replace",
        "198.18.9.2",
        "lladdr",
        &mac_text(B_MAC),
        "dev",
        "rb",
        "nud",
        "permanent",
    ]);
    let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
    for method in methods(&a, a_if) {
        let frame = udp4_frame(
            A_MAC,
            R_MAC,
            Ipv4Addr::new(198, 18, 8, 2),
            Ipv4Addr::new(198, 18, 9, 2),
            40_000,
            9,
            18,
        );
        let counter = Remote::attach(&b, "gb");
        let drops_before = rx_dropped(&r, "ra") + rx_dropped(&b, "gb");
        let (sent, secs) = in_ns(&a, move || {
            let g = Generator::open(method, a_if, &frame, false).expect("load generator");
            let t = Instant::now();
            (g.run(FRAMES, 64).expect("run"), t.elapsed().as_secs_f64())
        });
        let count = counter.settle(sent);
        counter.finish();
        let drops = rx_dropped(&r, "ra") + rx_dropped(&b, "gb") - drops_before;
        eprintln!(
            "{method:?} through a router: sent {sent} in {secs:.3} s ({:.2} Mpps), counted {}, \
             kernel drops {drops}",
            sent as f64 / secs / 1e6,
            count.packets
        );
        assert!(
            sent >= FRAMES * 9 / 10,
            "{method:?}: the interface took most frames"
        );
        assert!(count.packets <= sent, "{method:?}");
        assert!(
            count.packets + drops >= sent,
            "{method:?}: lost {} frames without a kernel drop count",
            sent - count.packets
        );
        assert!(
            count.packets >= FRAMES / 2,
            "{method:?}: most frames are forwarded"
        );
    }
}
