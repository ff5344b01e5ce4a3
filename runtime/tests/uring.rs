//! The io_uring AF_PACKET port and the TAP pseudo-interface, on real interfaces
//! inside network namespaces made by the tests (root needed; skipped otherwise).
//!
//! Topology: namespace A holds one end of a veth pair (`u0`), driven by a
//! `UringPort` from a thread that entered A; namespace B holds the other end
//! (`u1`, 198.18.0.2/24) and a sender/receiver thread that entered B. A's
//! interface has no address: only the port answers. B has a permanent neighbour
//! entry for 198.18.0.1 (A's MAC), so nothing waits for ARP.

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lbp_lab::require_netns;
use lbp_lab::testing::frame::{checksum_oracle as csum, mac_str, reflect};
use lbp_lab::testing::probe::{raw_socket, set_rcv_timeout};
use lbp_lab::testing::{Netns, veth_up};
use lbp_runtime::ring::tap::{Tap, TapConfig};
use lbp_runtime::ring::uring::{UringConfig, UringPort};
use lbp_runtime::ring::{Desc, Frames, Port};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT_A: u16 = 9000;
const PORT_B: u16 = 9001;

/// Namespaces A and B joined by a veth pair, addresses and neighbours set.
fn topology() -> (Netns, Netns) {
    let a = Netns::new("ua");
    let b = Netns::new("ub");
    veth_up(&a, "u0", &b, "u1");
    for ns in [&a, &b] {
        // IPv6 off: no router solicitations or MLD reports to sort out.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
    }
    a.ip(&["link", "set", "u0", "address", &mac_str(MAC_A)]);
    b.ip(&["link", "set", "u1", "address", &mac_str(MAC_B)]);
    b.add_address("u1", "198.18.0.2/24").unwrap();
    b.ip(&[
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        &mac_str(MAC_A),
        "dev",
        "u1",
        "nud",
        "permanent",
    ]);
    (a, b)
}

/// The UDP datagram's (source port, destination port, payload) when `p` is an
/// IPv4/UDP frame from `IP_B` to `IP_A` with a valid IPv4 header.
fn udp_to_a(p: &[u8]) -> Option<(u16, u16, &[u8])> {
    if p.len() < 42 || p[12..14] != [0x08, 0x00] || p[14] != 0x45 || p[23] != 17 {
        return None;
    }
    if p[26..30] != IP_B.octets() || p[30..34] != IP_A.octets() || csum(&p[14..34], 0) != 0 {
        return None;
    }
    let sp = u16::from_be_bytes([p[34], p[35]]);
    let dp = u16::from_be_bytes([p[36], p[37]]);
    let ulen = usize::from(u16::from_be_bytes([p[38], p[39]]));
    let payload = p.get(42..34 + ulen)?;
    Some((sp, dp, payload))
}

/// Receive from `port` until `done` says so or `timeout` passes; every frame is
/// passed to `each`, which keeps it (true) or lets it be freed (false).
fn recv_loop(
    port: &mut UringPort,
    frames: &mut Frames,
    timeout: Duration,
    mut each: impl FnMut(&Frames, Desc) -> bool,
    mut done: impl FnMut() -> bool,
    kept: &mut Vec<Desc>,
) {
    let deadline = Instant::now() + timeout;
    let mut burst = [Desc { addr: 0, len: 0 }; 32];
    while !done() && Instant::now() < deadline {
        let n = port.recv(frames, &mut burst);
        for &d in &burst[..n] {
            if each(frames, d) {
                kept.push(d);
            } else {
                frames.free(d);
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Send every frame of `descs` (looping while the port is full), then flush until
/// nothing is in flight. Returns false if that did not happen within `timeout`.
fn send_all(
    port: &mut UringPort,
    frames: &mut Frames,
    mut descs: &[Desc],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let n = port.send(frames, descs);
        descs = &descs[n..];
        port.flush(frames);
        if descs.is_empty() && port.tx_in_flight() == 0 {
            return true;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    false
}

fn udp_socket_b() -> UdpSocket {
    let s = UdpSocket::bind((IP_B, PORT_B)).expect("bind in B");
    let big: libc::c_int = 8 << 20;
    // SAFETY: `big` is a live c_int and its size is passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const big).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s
}

/// B sends `count` numbered datagrams to A before A's port reads any (so the
/// provided buffer ring runs dry and the multishot receive must be re-armed); A
/// receives all of them, reflects them, and B receives all of them back. Every
/// frame is back on the free list after `close`.
#[test]
fn uring_receive_reflect_and_rearm() {
    require_netns!();
    let (a, b) = topology();
    const COUNT: u32 = 1000;
    let sent = AtomicBool::new(false);
    let opened = AtomicBool::new(false);
    let (echoed, report) = std::thread::scope(|s| {
        let peer = s.spawn(|| {
            b.enter();
            let sock = udp_socket_b();
            let t = Instant::now();
            while !opened.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            for i in 0..COUNT {
                let mut msg = [0u8; 64];
                msg[..4].copy_from_slice(&i.to_be_bytes());
                sock.send_to(&msg, (IP_A, PORT_A)).expect("send");
            }
            sent.store(true, Ordering::Release);
            let mut seen = vec![false; COUNT as usize];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 2048];
            while seen.iter().any(|s| !s) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    assert_eq!(from, (IP_A, PORT_A).into(), "reflected from A's address");
                    assert_eq!(n, 64);
                    let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    seen[i as usize] = true;
                }
            }
            seen.iter().filter(|s| **s).count()
        });
        let port_side = s.spawn(|| {
            a.enter();
            let mut frames = Frames::new(4096).expect("frames");
            let start_free = frames.free_count();
            let cfg = UringConfig {
                rx_buffers: 64,
                ..UringConfig::default()
            };
            // SAFETY: `frames` outlives the port: the port is closed below, before
            // `frames` goes out of scope.
            let mut port = unsafe { UringPort::open("u0", &mut frames, cfg) }.expect("open port");
            opened.store(true, Ordering::Release);
            assert_eq!(port.lent_count(), 64);
            assert_eq!(frames.free_count(), start_free - 64);
            // Let B send everything before reading: 1000 packets for 64 buffers.
            let t = Instant::now();
            while !sent.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut seen = vec![false; COUNT as usize];
            let got = std::cell::Cell::new(0u32);
            let mut kept = Vec::new();
            recv_loop(
                &mut port,
                &mut frames,
                Duration::from_secs(10),
                |f, d| match udp_to_a(f.packet(d)) {
                    Some((PORT_B, PORT_A, pl)) if pl.len() == 64 => {
                        let i = u32::from_be_bytes([pl[0], pl[1], pl[2], pl[3]]) as usize;
                        if i < seen.len() && !seen[i] {
                            seen[i] = true;
                            got.set(got.get() + 1);
                            return true;
                        }
                        false
                    }
                    _ => false,
                },
                || got.get() == COUNT,
                &mut kept,
            );
            let st = port.uring_stats();
            let got = got.get();
            eprintln!("uring: received {got}/{COUNT}, {st:?}");
            assert_eq!(got, COUNT, "every datagram received once");
            assert!(
                st.arms >= 2 && st.rx_nobufs >= 1,
                "the buffer ring ran dry and the receive was re-armed: {st:?}"
            );
            for &d in &kept {
                reflect(frames.packet_mut(d));
            }
            assert!(
                send_all(&mut port, &mut frames, &kept, Duration::from_secs(10)),
                "every reflected frame sent and completed"
            );
            let ps = port.stats();
            assert_eq!(ps.tx_packets, u64::from(COUNT));
            assert_eq!(
                ps.tx_bytes,
                kept.iter().map(|d| u64::from(d.len)).sum::<u64>()
            );
            assert!(ps.rx_packets >= u64::from(COUNT));
            // Keep receiving whatever else arrives, then close: every frame back.
            let mut rest = Vec::new();
            recv_loop(
                &mut port,
                &mut frames,
                Duration::from_millis(100),
                |_, _| false,
                || false,
                &mut rest,
            );
            let report = port.close(&mut frames);
            assert_eq!(frames.free_count(), start_free, "every frame accounted for");
            report
        });
        let report = port_side.join();
        let echoed = peer.join();
        match (echoed, report) {
            (Ok(e), Ok(r)) => (e, r),
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    });
    assert_eq!(report.leaked, 0, "{report:?}");
    assert_eq!(
        echoed, COUNT as usize,
        "B received every reflected datagram"
    );
}

/// Send `count` ICMP echo requests from B (a raw socket, as ping does) to A's
/// address, one at a time; returns how many got their echo reply within a second.
fn icmp_echo_from_b(count: u16) -> u32 {
    let fd = raw_socket(libc::AF_INET, libc::IPPROTO_ICMP).expect("raw socket");
    set_rcv_timeout(&fd, Duration::from_millis(100)).expect("receive timeout");
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_addr.s_addr = u32::from_ne_bytes(IP_A.octets());
    let id = 0x4c42u16;
    let mut answered = 0;
    for seq in 0..count {
        let mut icmp = vec![8, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(b"lbp uring echo");
        let c = csum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        // SAFETY: `icmp` and `to` are live for the call, their sizes passed.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                icmp.as_ptr().cast(),
                icmp.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            r,
            icmp.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            // SAFETY: `buf` is live and writable; recv writes at most its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let p = &buf[..n];
            let ihl = usize::from(p.first().map_or(0, |b| b & 0xf)) * 4;
            if n >= ihl + 8
                && p[12..16] == IP_A.octets()
                && p[ihl] == 0
                && p[ihl + 4..ihl + 6] == id.to_be_bytes()
                && p[ihl + 6..ihl + 8] == seq.to_be_bytes()
                && csum(&p[ihl..], 0) == 0
            {
                answered += 1;
                break;
            }
        }
    }
    answered
}

/// Echo requests from B's kernel are answered by a port in A that writes the
/// replies itself, and B's kernel accepts them.
#[test]
fn uring_answers_echo_requests() {
    require_netns!();
    echo_through_port(UringConfig::default());
}

/// The same with a kernel submission thread (SQPOLL).
#[test]
fn uring_answers_echo_requests_sqpoll() {
    require_netns!();
    echo_through_port(UringConfig {
        sqpoll_idle_ms: Some(50),
        ..UringConfig::default()
    });
}

fn echo_through_port(cfg: UringConfig) {
    let (a, b) = topology();
    let stop = AtomicBool::new(false);
    let ready = AtomicBool::new(false);
    std::thread::scope(|s| {
        let port_side = s.spawn(|| {
            a.enter();
            let mut frames = Frames::new(512).expect("frames");
            let start_free = frames.free_count();
            // SAFETY: `frames` outlives the port (closed below).
            let mut port = unsafe { UringPort::open("u0", &mut frames, cfg) }.expect("open port");
            ready.store(true, Ordering::Release);
            let mut replies = 0u32;
            let mut burst = [Desc { addr: 0, len: 0 }; 32];
            let deadline = Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                let n = port.recv(&mut frames, &mut burst);
                let mut out = Vec::new();
                for &d in &burst[..n] {
                    let p = frames.packet_mut(d);
                    let is_echo = p.len() >= 42
                        && p[12..14] == [0x08, 0x00]
                        && p[14] == 0x45
                        && p[23] == 1
                        && p[30..34] == IP_A.octets()
                        && p[34] == 8;
                    if is_echo {
                        reflect(p);
                        p[34] = 0; // echo reply
                        p[36..38].copy_from_slice(&[0, 0]);
                        let ip_len = usize::from(u16::from_be_bytes([p[16], p[17]]));
                        let end = (14 + ip_len).min(p.len());
                        let c = csum(&p[34..end], 0);
                        p[36..38].copy_from_slice(&c.to_be_bytes());
                        out.push(d);
                        replies += 1;
                    } else {
                        frames.free(d);
                    }
                }
                let taken = port.send(&mut frames, &out);
                for &d in &out[taken..] {
                    frames.free(d);
                }
                port.flush(&mut frames);
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            let t = Instant::now();
            while port.tx_in_flight() > 0 && t.elapsed() < Duration::from_secs(2) {
                port.flush(&mut frames);
            }
            let report = port.close(&mut frames);
            assert_eq!(report.leaked, 0);
            assert_eq!(frames.free_count(), start_free, "every frame accounted for");
            replies
        });
        let answered = s
            .spawn(|| {
                b.enter();
                let t = Instant::now();
                while !ready.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let n = icmp_echo_from_b(3);
                stop.store(true, Ordering::Release);
                n
            })
            .join();
        stop.store(true, Ordering::Release);
        let replies = port_side
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let answered = answered.unwrap_or_else(|p| std::panic::resume_unwind(p));
        assert_eq!(answered, 3, "B's kernel got an echo reply to each request");
        assert!(replies >= 3);
    });
}

/// A bounded burst through the port: B sends for at most two seconds; A receives
/// and reflects. Prints the rates; asserts only that frames flowed and came back.
#[test]
fn uring_throughput_smoke() {
    require_netns!();
    let (a, b) = topology();
    const MAX: u32 = 200_000;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let peer = s.spawn(|| {
            b.enter();
            let sock = udp_socket_b();
            sock.set_nonblocking(true).expect("nonblocking");
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            let mut sent = 0u32;
            let mut back = 0u32;
            let mut buf = [0u8; 2048];
            while sent < MAX && t.elapsed() < Duration::from_secs(2) {
                if sock.send_to(&[0u8; 18], (IP_A, PORT_A)).is_ok() {
                    sent += 1;
                }
                while sock.recv(&mut buf).is_ok() {
                    back += 1;
                }
            }
            let send_time = t.elapsed();
            let t2 = Instant::now();
            while t2.elapsed() < Duration::from_millis(500) {
                match sock.recv(&mut buf) {
                    Ok(_) => back += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            done.store(true, Ordering::Release);
            (sent, back, send_time)
        });
        let port_side = s.spawn(|| {
            a.enter();
            let mut frames = Frames::new(4096).expect("frames");
            let start_free = frames.free_count();
            // SAFETY: `frames` outlives the port (closed below).
            let mut port = unsafe { UringPort::open("u0", &mut frames, UringConfig::default()) }
                .expect("open port");
            let mut burst = [Desc { addr: 0, len: 0 }; 64];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            let mut rx = 0u64;
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                let n = port.recv(&mut frames, &mut burst);
                let mut k = 0;
                for i in 0..n {
                    let d = burst[i];
                    if udp_to_a(frames.packet(d)).is_some() {
                        reflect(frames.packet_mut(d));
                        burst[k] = d;
                        k += 1;
                    } else {
                        frames.free(d);
                    }
                }
                if k > 0 {
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    rx += k as u64;
                }
                let taken = port.send(&mut frames, &burst[..k]);
                for &d in &burst[taken..k] {
                    frames.free(d);
                }
                port.flush(&mut frames);
            }
            let t = Instant::now();
            while port.tx_in_flight() > 0 && t.elapsed() < Duration::from_secs(2) {
                port.flush(&mut frames);
            }
            let stats = port.stats();
            let extra = port.uring_stats();
            let report = port.close(&mut frames);
            assert_eq!(report.leaked, 0);
            assert_eq!(frames.free_count(), start_free, "every frame accounted for");
            let span = first.map(|f| last - f).unwrap_or_default();
            (rx, span, stats, extra)
        });
        let (rx, span, stats, extra) = port_side
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (sent, back, send_time) = peer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let secs = span.as_secs_f64().max(1e-6);
        eprintln!(
            "uring smoke: B sent {sent} in {send_time:?} ({:.0}/s); port received and reflected {rx} \
             ({:.0}/s over {span:?}); B got {back} back; {stats:?}; {extra:?}",
            f64::from(sent) / send_time.as_secs_f64().max(1e-6),
            rx as f64 / secs,
        );
        assert!(rx > 0 && back > 0, "frames flowed both ways");
        assert!(u64::from(back) <= rx && rx <= u64::from(sent));
    });
}

/// An Ethernet frame from `src_mac` to `dst_mac` carrying an ICMP echo request
/// from `src` to `dst` (IPv4 or IPv6), checksums right.
fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6OrV4,
    dst: Ipv6OrV4,
    id: u16,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    let payload = b"lbp tap test 0123456789";
    match (src, dst) {
        (Ipv6OrV4::V4(s), Ipv6OrV4::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + 8 + payload.len()) as u16;
            let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = csum(&ip, 0);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            let mut icmp = vec![8, 0, 0, 0];
            icmp.extend_from_slice(&id.to_be_bytes());
            icmp.extend_from_slice(&1u16.to_be_bytes());
            icmp.extend_from_slice(payload);
            let c = csum(&icmp, 0);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&icmp);
        }
        (Ipv6OrV4::V6(s), Ipv6OrV4::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let plen = (8 + payload.len()) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&plen.to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let mut icmp = vec![128, 0, 0, 0];
            icmp.extend_from_slice(&id.to_be_bytes());
            icmp.extend_from_slice(&1u16.to_be_bytes());
            icmp.extend_from_slice(payload);
            let c = csum(&icmp, pseudo6(s, d, icmp.len()));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&icmp);
        }
        _ => panic!("mixed families"),
    }
    f
}

/// The ICMPv6 pseudo-header's sum (not folded, not inverted).
fn pseudo6(s: Ipv6Addr, d: Ipv6Addr, len: usize) -> u32 {
    let mut sum = 0u32;
    for a in [s, d] {
        for w in a.segments() {
            sum += u32::from(w);
        }
    }
    sum + len as u32 + 58
}

#[derive(Clone, Copy)]
enum Ipv6OrV4 {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// Whether `p` is the kernel's echo reply to `echo_request(.., id)`, with valid
/// checksums, from `from` to `to` and to MAC `dst_mac`.
fn is_echo_reply(p: &[u8], dst_mac: [u8; 6], from: Ipv6OrV4, to: Ipv6OrV4, id: u16) -> bool {
    if p.len() < 14 || p[..6] != dst_mac {
        return false;
    }
    match (from, to) {
        (Ipv6OrV4::V4(s), Ipv6OrV4::V4(d)) => {
            p.len() >= 42
                && p[12..14] == [0x08, 0x00]
                && p[23] == 1
                && p[26..30] == s.octets()
                && p[30..34] == d.octets()
                && csum(&p[14..34], 0) == 0
                && p[34] == 0
                && p[38..40] == id.to_be_bytes()
                && csum(&p[34..], 0) == 0
        }
        (Ipv6OrV4::V6(s), Ipv6OrV4::V6(d)) => {
            p.len() >= 62
                && p[12..14] == [0x86, 0xdd]
                && p[20] == 58
                && p[22..38] == s.octets()
                && p[38..54] == d.octets()
                && p[54] == 129
                && p[58..60] == id.to_be_bytes()
                && csum(&p[54..], pseudo6(s, d, p.len() - 54)) == 0
        }
        _ => false,
    }
}

/// A TAP with IPv4 and IPv6 addresses in a namespace of its own: the echo requests
/// written into it are answered by the kernel, and the answers are read from it.
#[test]
fn tap_kernel_answers_echo() {
    require_netns!();
    let t = Netns::new("tap");
    const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
    let tap4 = Ipv4Addr::new(198, 18, 2, 1);
    let peer4 = Ipv4Addr::new(198, 18, 2, 2);
    let tap6: Ipv6Addr = "2001:db8:2::1".parse().expect("v6");
    let peer6: Ipv6Addr = "2001:db8:2::2".parse().expect("v6");
    std::thread::scope(|s| {
        s.spawn(|| {
            t.enter();
            let cfg = TapConfig {
                name: "lbp0".into(),
                mac: TAP_MAC,
                mtu: 1500,
                ipv4: Some((tap4, 24)),
                ipv6: vec![(tap6, 64)],
            };
            let mut tap = Tap::create(&cfg).expect("create TAP");
            assert_eq!(tap.name(), "lbp0");
            let link =
                String::from_utf8_lossy(&t.ip(&["link", "show", "lbp0"]).stdout).into_owned();
            assert!(
                link.contains("mtu 1500") && link.contains(&mac_str(TAP_MAC)),
                "{link}"
            );
            assert!(link.contains("UP"), "{link}");
            let addrs =
                String::from_utf8_lossy(&t.ip(&["addr", "show", "lbp0"]).stdout).into_owned();
            assert!(
                addrs.contains("198.18.2.1/24") && addrs.contains("2001:db8:2::1/64"),
                "{addrs}"
            );
            for addr in ["198.18.2.2", "2001:db8:2::2"] {
                t.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac_str(PEER_MAC),
                    "dev",
                    "lbp0",
                    "nud",
                    "permanent",
                ]);
            }

            let mut frames = Frames::new(256).expect("frames");
            let start_free = frames.free_count();
            let cases = [
                (Ipv6OrV4::V4(peer4), Ipv6OrV4::V4(tap4), 0x1234u16),
                (Ipv6OrV4::V6(peer6), Ipv6OrV4::V6(tap6), 0x5678u16),
            ];
            for (peer, own, id) in cases {
                let req = echo_request(PEER_MAC, TAP_MAC, peer, own, id);
                let mut d = frames.alloc().expect("frame");
                frames.slot_mut(d)[..req.len()].copy_from_slice(&req);
                d.len = req.len() as u32;
                assert_eq!(tap.send(&mut frames, &[d]), 1);
                tap.flush(&mut frames);
                assert_eq!(tap.errors().write_errors, 0);
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut found = false;
                let mut burst = [Desc { addr: 0, len: 0 }; 16];
                while !found && Instant::now() < deadline {
                    let n = tap.recv(&mut frames, &mut burst);
                    for &r in &burst[..n] {
                        found |= is_echo_reply(frames.packet(r), PEER_MAC, own, peer, id);
                        frames.free(r);
                    }
                    if n == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                assert!(
                    found,
                    "the kernel's echo reply came out of the TAP (id {id:#x})"
                );
            }
            assert_eq!(frames.free_count(), start_free, "every frame accounted for");
            let st = tap.stats();
            assert_eq!(st.tx_packets, 2);
            assert!(st.rx_packets >= 2);
            // A frame too short for Ethernet is refused by the kernel, and counted.
            let mut d = frames.alloc().expect("frame");
            d.len = 4;
            assert_eq!(tap.send(&mut frames, &[d]), 1);
            assert_eq!(tap.errors().write_errors, 1);
            assert_eq!(frames.free_count(), start_free);
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
    // The kernel unregisters a TAP whose last descriptor closed a little later,
    // after its references drain: wait for it (bounded).
    let end = Instant::now() + Duration::from_secs(5);
    let mut links = String::new();
    while Instant::now() < end {
        links = String::from_utf8_lossy(&t.ip(&["link", "show"]).stdout).into_owned();
        if !links.contains("lbp0") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!links.contains("lbp0"), "the TAP went with its fd: {links}");
}

/// Bad configurations are refused with an error, not a panic.
#[test]
fn tap_refuses_bad_config() {
    let base = TapConfig {
        name: "lbp0".into(),
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        ipv4: None,
        ipv6: Vec::new(),
    };
    for bad in [
        TapConfig {
            name: String::new(),
            ..base.clone()
        },
        TapConfig {
            name: "a-name-far-too-long".into(),
            ..base.clone()
        },
        TapConfig {
            name: "nul\0".into(),
            ..base.clone()
        },
        TapConfig {
            mtu: 9000,
            ..base.clone()
        },
        TapConfig {
            mtu: 10,
            ..base.clone()
        },
    ] {
        let e = Tap::create(&bad).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
}
