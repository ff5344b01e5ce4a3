//! lbp's traffic generator and counter (`trafficgen`) on a veth pair between two
//! namespaces made by the test: the generator in A sends 100 000 UDP frames by
//! BPF_PROG_RUN in live-frames mode, the counter on B's end sees them, the flow
//! variant makes distinct flows that the counter also sees, and every program is
//! gone afterwards. Needs root; skipped with a message otherwise.

mod support;

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lbp_runtime::ring::bpf;
use lbp_runtime::trafficgen::{Counter, Generator, prog_loaded, udp4_frame};
use support::{Netns, veth};

const A_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x00, 0x01];
const B_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x00, 0x02];
const FRAMES: u64 = 100_000;

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace made by the test, without IPv6 (whose link-local chatter
/// the counters, which count IPv6 too, would otherwise see).
fn netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns
}

/// Two namespaces joined by veth `ga` (in A) and `gb` (in B), with addresses.
fn pair() -> (Netns, Netns) {
    let a = netns("gena");
    let b = netns("genb");
    veth(&a, "ga", &b, "gb");
    a.ip(&["link", "set", "ga", "address", &mac_text(A_MAC)]);
    b.ip(&["link", "set", "gb", "address", &mac_text(B_MAC)]);
    a.ip(&["addr", "add", "198.18.7.1/24", "dev", "ga"]);
    b.ip(&["addr", "add", "198.18.7.2/24", "dev", "gb"]);
    (a, b)
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
        support::netns::enter(&path);
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(Duration::from_secs(60));
    let _ = h.join();
    r.expect("namespace thread ended without a result")
}

#[test]
fn generator_frames_reach_the_counter_and_programs_go_away() {
    require_netns!();
    let (a, b) = pair();
    let frame = udp4_frame(
        A_MAC,
        B_MAC,
        Ipv4Addr::new(198, 18, 7, 1),
        Ipv4Addr::new(198, 18, 7, 2),
        40_000,
        9,
        18,
    );

    let (counter_id, gen_id) = {
        let b_if = in_ns(&b, || bpf::ifindex("gb").expect("ifindex gb"));
        let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
        // The counter is attached from this thread (root namespace) by ifindex of
        // B's namespace: attach it from a thread inside B instead, and keep it.
        let (ctx, crx) = mpsc::channel::<()>();
        let (rtx, rrx) = mpsc::channel();
        let bpath = b.path();
        let counter_thread = std::thread::spawn(move || {
            support::netns::enter(&bpath);
            let c = match Counter::attach(b_if) {
                Ok(c) => c,
                Err(e) => {
                    let _ = rtx.send(Err(e.to_string()));
                    return;
                }
            };
            let id = c.prog_id().expect("prog id");
            let _ = rtx.send(Ok((id, c.mode())));
            // Serve reads until told to stop (bounded: 60 s).
            while let Ok(()) = crx.recv_timeout(Duration::from_secs(60)) {
                let _ = rtx.send(Ok((c.read().expect("read").packets as u32, c.mode())));
            }
            let n = c.read().expect("read");
            drop(c);
            let _ = rtx.send(Ok((n.packets as u32, bpf::XdpMode::Driver)));
        });
        let (counter_id, mode) = rrx
            .recv_timeout(Duration::from_secs(10))
            .expect("counter thread")
            .expect("attach counter");
        assert!(has_xdp(&b, "gb"), "counter attached to gb");
        eprintln!("counter attached in {mode:?} mode");
        let dropped_before = rx_dropped(&b, "gb");

        let (sent, secs, gen_id) = in_ns(&a, move || {
            let g = Generator::new(a_if, &frame).expect("load generator");
            let id = g.prog_id().expect("prog id");
            let t = Instant::now();
            let sent = g.run(FRAMES, 64).expect("BPF_PROG_RUN live frames");
            (sent, t.elapsed().as_secs_f64(), id)
        });
        assert_eq!(sent, FRAMES);

        // Frames already handed over arrive within milliseconds; wait for the
        // count to settle (bounded).
        let end = Instant::now() + Duration::from_secs(3);
        let mut seen = 0u64;
        while Instant::now() < end {
            ctx.send(()).expect("counter thread alive");
            let (n, _) = rrx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
            seen = u64::from(n);
            if seen >= FRAMES {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let dropped = rx_dropped(&b, "gb").saturating_sub(dropped_before);
        eprintln!(
            "sent {sent} frames in {secs:.3} s ({:.2} Mpps offered); counted {seen}, kernel drops {dropped}",
            sent as f64 / secs / 1e6
        );
        assert!(seen <= FRAMES, "counted more than sent: {seen}");
        // Loss is allowed only as far as the kernel reports it as drops.
        assert!(
            seen + dropped >= FRAMES,
            "lost {} frames without a kernel drop count ({dropped})",
            FRAMES - seen
        );
        assert!(seen >= FRAMES / 2, "most frames must arrive, saw {seen}");

        drop(ctx);
        let (last, _) = rrx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert!(u64::from(last) >= seen);
        counter_thread.join().expect("counter thread");
        (counter_id, gen_id)
    };

    assert!(!has_xdp(&b, "gb"), "counter detached when dropped");
    assert!(freed(counter_id), "counter program {counter_id} freed");
    assert!(freed(gen_id), "generator program {gen_id} freed");
}

#[test]
fn flow_generator_makes_distinct_valid_flows() {
    require_netns!();
    let (a, b) = pair();
    // B's kernel receives these: GRO on gives veth the NAPI instance that
    // frames from a live-frames run need, and a /16 puts every source on link.
    b.ip(&["addr", "add", "198.18.7.2/16", "dev", "gb"]);
    support::run(&[
        "ip", "netns", "exec", &b.name, "ethtool", "-K", "gb", "gro", "on",
    ]);
    const N: u64 = 1000;
    let frame = udp4_frame(
        A_MAC,
        B_MAC,
        Ipv4Addr::new(198, 18, 7, 1),
        Ipv4Addr::new(198, 18, 7, 2),
        40_000,
        9,
        18,
    );
    let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
    let bpath = b.path();
    let (tx, rx) = mpsc::channel();
    // B: a UDP socket on port 9 collects the sources. The kernel delivers only
    // datagrams whose IPv4 and UDP checksums verify (the frames carry no
    // offload mark), so every datagram received proves both updates right.
    let sink = std::thread::spawn(move || {
        support::netns::enter(&bpath);
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
    let (sent, next) = in_ns(&a, move || {
        let g = Generator::with_flows(a_if, &frame).expect("load flow generator");
        // Flow numbers from 0x0201_0000: sources 198.18.1.2, ports varying.
        g.set_next_flow(0x0201_0000).expect("set next flow");
        let sent = g.run(N, 16).expect("run");
        (sent, g.next_flow().expect("next flow"))
    });
    let sources = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    sink.join().expect("sink thread");
    assert_eq!(sent, N);
    assert_eq!(next, 0x0201_0000 + N, "the program ran once per frame");
    let distinct: std::collections::HashSet<_> = sources.iter().collect();
    eprintln!(
        "flow generator: sent {sent}, received {} datagrams from {} distinct sources",
        sources.len(),
        distinct.len()
    );
    assert!(sources.len() as u64 >= N * 9 / 10, "most datagrams arrive");
    assert_eq!(distinct.len(), sources.len(), "every frame is a new flow");
    for s in &sources {
        assert_eq!(s.ip(), std::net::IpAddr::from([198, 18, 1, 2]));
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
    assert!(Generator::with_flows(a_if, &arp).is_err());
    assert!(Generator::new(a_if, &[0u8; 10]).is_err());
    assert!(Generator::new(a_if, &vec![0u8; 2000]).is_err());
}

/// Through a forwarding namespace: the router rewrites each frame in place
/// (MACs, TTL) and the kernel recycles the pages; the generator restores the
/// headers on every run, so every frame is forwarded (none arrives with the last
/// trip's MAC addresses and is dropped as for another host).
#[test]
fn generated_frames_survive_a_forwarding_hop() {
    require_netns!();
    let a = netns("gena");
    let r = netns("genr");
    let b = netns("genb");
    veth(&a, "ga", &r, "ra");
    veth(&r, "rb", &b, "gb");
    const R_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x17, 0x01, 0x01];
    r.ip(&["link", "set", "ra", "address", &mac_text(R_MAC)]);
    b.ip(&["link", "set", "gb", "address", &mac_text(B_MAC)]);
    a.ip(&["addr", "add", "198.18.8.2/24", "dev", "ga"]);
    r.ip(&["addr", "add", "198.18.8.1/24", "dev", "ra"]);
    r.ip(&["addr", "add", "198.18.9.1/24", "dev", "rb"]);
    b.ip(&["addr", "add", "198.18.9.2/24", "dev", "gb"]);
    r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
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
    let frame = udp4_frame(
        A_MAC,
        R_MAC,
        Ipv4Addr::new(198, 18, 8, 2),
        Ipv4Addr::new(198, 18, 9, 2),
        40_000,
        9,
        18,
    );
    let a_if = in_ns(&a, || bpf::ifindex("ga").expect("ifindex ga"));
    let b_if = in_ns(&b, || bpf::ifindex("gb").expect("ifindex gb"));
    let bpath = b.path();
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let sink = std::thread::spawn(move || {
        support::netns::enter(&bpath);
        let c = Counter::attach(b_if).expect("attach counter");
        let _ = tx.send(None);
        let _ = stop_rx.recv_timeout(Duration::from_secs(60));
        let _ = tx.send(Some(c.read().expect("read")));
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None);
    let drops_before = rx_dropped(&r, "ra") + rx_dropped(&b, "gb");
    let (sent, secs) = in_ns(&a, move || {
        let g = Generator::new(a_if, &frame).expect("load generator");
        let t = Instant::now();
        (g.run(FRAMES, 64).expect("run"), t.elapsed().as_secs_f64())
    });
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let count = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    sink.join().expect("sink thread");
    let drops = rx_dropped(&r, "ra") + rx_dropped(&b, "gb") - drops_before;
    eprintln!(
        "through a router: sent {sent} in {secs:.3} s ({:.2} Mpps), counted {}, kernel drops {drops}",
        sent as f64 / secs / 1e6,
        count.packets
    );
    assert_eq!(sent, FRAMES);
    assert!(count.packets <= FRAMES);
    assert!(
        count.packets + drops >= FRAMES,
        "lost {} frames without a kernel drop count",
        FRAMES - count.packets
    );
    assert!(count.packets >= FRAMES / 2, "most frames are forwarded");
}
