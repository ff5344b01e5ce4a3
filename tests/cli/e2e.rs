//! End-to-end tests of `lbp run` in network namespaces (`topology.rs` builds
//! them): real clients (curl, a bounded Rust client loop, raw ICMP and AF_PACKET
//! sockets) talk through the appliance to real TCP and UDP servers on three back
//! ends. The policy is `tests/e2e/appliance.lbp`.
//!
//! One test per ring back end and data path (`--rings xdp --datapath xdp`:
//! the policy in XDP first, its drops and resets decided there; `--rings xdp
//! --datapath cores`; `--rings uring`) runs the whole suite on one topology,
//! so that one lbp process serves every check; a fourth
//! test runs the same probes with the kernel as the forwarder, which checks the
//! topology and the probes themselves (a probe that cannot fail against the
//! kernel proves nothing against lbp). The tests take a lock so that only one
//! topology and one busy-polling lbp exist at a time. They need root and
//! iproute2, and are skipped with a `SKIPPED` line otherwise; missing curl,
//! ethtool or nft is a failure, since CI installs them.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::topology::{
    APP_CLIENT_MAC, APP4, APP6, BACKENDS, BLOCKED4, CLIENT_MAC, CLIENT4, CLIENT6, DSR4, DSR6,
    Forwarder, FrameSender, Lbp, NAT4, NAT6, Netns, Topology, curl, missing_tools, nft, ping,
    spread, ttl_exceeded, udp_ask, unavailable,
};

const POLICY: &str = "tests/e2e/appliance.lbp";

/// One topology at a time (namespaces are cheap, but two busy-polling
/// appliances on a two-core machine starve each other's clients).
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

/// `true` (after printing why) when the suite cannot run here.
pub(crate) fn skipped(test: &str) -> bool {
    if let Some(why) = unavailable() {
        crate::netns::skip(test, &format!("needs root and network namespaces ({why})"));
        return true;
    }
    false
}

/// The start of a test on its own topology (namespaces tagged `tag`): `None`
/// (after printing why) when the suite cannot run here; else the suite's lock,
/// held for the test, and the topology with lbp as the forwarder.
pub(crate) fn setup(
    test: &str,
    tag: &str,
) -> Option<(std::sync::MutexGuard<'static, ()>, Topology)> {
    if skipped(test) {
        return None;
    }
    let missing = missing_tools();
    assert!(missing.is_empty(), "{test}: missing tools: {missing:?}");
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Some((serial, Topology::build(tag, Forwarder::Lbp)))
}

/// The checks' outcomes: every check runs, then the test fails listing all
/// failures.
#[derive(Default)]
pub(crate) struct Report {
    failures: Vec<String>,
}

impl Report {
    pub(crate) fn check(&mut self, name: &str, r: Result<(), String>) {
        match r {
            Ok(()) => eprintln!("e2e: ok   {name}"),
            Err(e) => {
                eprintln!("e2e: FAIL {name}: {e}");
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }

    pub(crate) fn finish(self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n  {}\n{context}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}:{port}/"),
        IpAddr::V6(a) => format!("http://[{a}]:{port}/"),
    }
}

fn is_backend(body: &str) -> bool {
    BACKENDS.iter().any(|b| b.0 == body)
}

/// What the back end that answers must have seen.
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// NAT: the connection arrived at the back end's own address, port 8080,
    /// from the client's address.
    Nat,
    /// DSR: it arrived at the virtual IP and port itself, from the client.
    Dsr,
}

/// HTTP with curl to `ip:port` is answered by a back end that saw what `seen`
/// says.
fn http_via(client: &Netns, ip: IpAddr, port: u16, seen: Seen) -> Result<(), String> {
    let body = curl(client, &url(ip, port), &[], 5)?;
    let fields: Vec<&str> = body.split(' ').collect();
    let [name, local, peer] = fields[..] else {
        return Err(format!("{ip}:{port} answered {body:?}"));
    };
    let Some(&(_, a4, a6)) = BACKENDS.iter().find(|b| b.0 == name) else {
        return Err(format!("{ip}:{port} answered {body:?}, not a back end"));
    };
    let local: SocketAddr = local.parse().map_err(|_| format!("answer {body:?}"))?;
    let peer: SocketAddr = peer.parse().map_err(|_| format!("answer {body:?}"))?;
    let own: IpAddr = if ip.is_ipv4() { a4.into() } else { a6.into() };
    let want_local = match seen {
        Seen::Nat => SocketAddr::new(own, 8080),
        Seen::Dsr => SocketAddr::new(ip, port),
    };
    let want_peer: IpAddr = if ip.is_ipv4() {
        CLIENT4.into()
    } else {
        CLIENT6.into()
    };
    if local != want_local || peer.ip() != want_peer {
        return Err(format!(
            "{ip}:{port} ({seen:?}): {name} saw {local} from {peer}, expected {want_local} from {want_peer}"
        ));
    }
    Ok(())
}

/// HTTP with curl to `ip:port` is answered by exactly back end `name`.
fn http_from(client: &Netns, ip: IpAddr, port: u16, name: &str) -> Result<(), String> {
    let body = curl(client, &url(ip, port), &[], 5)?;
    if body.split(' ').next() == Some(name) {
        Ok(())
    } else {
        Err(format!("{ip}:{port} answered {body:?}, expected {name:?}"))
    }
}

/// 3 000 connections to `to` spread over the back ends as their weights 1, 2, 3
/// say, each within 10 %; at most 1 % of them may fail.
fn weighted_spread(client: &Netns, to: SocketAddr) -> Result<(), String> {
    const N: usize = 3000;
    let started = Instant::now();
    let (counts, errors) = client.within(move || spread(to, N, Duration::from_secs(90)));
    let served: usize = counts.iter().sum();
    eprintln!(
        "e2e: spread over {to}: {counts:?} ({} errors) in {:.1?}",
        errors.len(),
        started.elapsed()
    );
    if errors.len() > N / 100 {
        return Err(format!(
            "{} of {N} connections failed, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        ));
    }
    for (i, &c) in counts.iter().enumerate() {
        let want = served as f64 * (i + 1) as f64 / 6.0;
        if (c as f64 - want).abs() > want * 0.10 {
            return Err(format!(
                "back end {} served {c} of {served}, expected {want:.0} ± 10 % (counts {counts:?})",
                BACKENDS[i].0
            ));
        }
    }
    Ok(())
}

/// A TCP connect to `to` is refused (a reset) within one second.
fn refused(client: &Netns, to: SocketAddr) -> Result<(), String> {
    client.within(move || {
        let t = Instant::now();
        match TcpStream::connect_timeout(&to, Duration::from_secs(3)) {
            Ok(_) => Err(format!("{to}: connected, expected a reset")),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                if t.elapsed() <= Duration::from_secs(1) {
                    Ok(())
                } else {
                    Err(format!("{to}: refused only after {:?}", t.elapsed()))
                }
            }
            Err(e) => Err(format!(
                "{to}: {e} after {:?}, expected connection refused",
                t.elapsed()
            )),
        }
    })
}

/// curl from the blocked source gets no answer at all: it times out (exit 28)
/// rather than being refused or served.
fn blocked(client: &Netns, to: IpAddr, port: u16) -> Result<(), String> {
    let t = Instant::now();
    match curl(
        client,
        &url(to, port),
        &["--interface", &BLOCKED4.to_string()],
        2,
    ) {
        Ok(body) => Err(format!("the blocked source was served by {body:?}")),
        Err(e) if e.contains("exit Some(28)") && t.elapsed() >= Duration::from_millis(1500) => {
            Ok(())
        }
        Err(e) => Err(format!(
            "expected a timeout, got after {:?}: {e}",
            t.elapsed()
        )),
    }
}

pub(crate) fn pinged(client: &Netns, to: IpAddr) -> Result<(), String> {
    client
        .within(move || ping(to, Duration::from_secs(3)))
        .map_err(|e| format!("ping {to}: {e}"))
}

/// A ping with TTL 1 through the appliance towards `to` is answered with a
/// time exceeded from the appliance's address `from`.
fn expired(client: &Netns, to: IpAddr, from: IpAddr) -> Result<(), String> {
    client
        .within(move || ttl_exceeded(to, from, Duration::from_secs(2)))
        .map_err(|e| format!("TTL 1 to {to}: {e}"))
}

pub(crate) fn udp_echo(client: &Netns, to: SocketAddr, expect: Option<&str>) -> Result<(), String> {
    let body = client
        .within(move || udp_ask(to, Duration::from_secs(2)))
        .map_err(|e| format!("UDP {to}: {e}"))?;
    match expect {
        Some(n) if body != n => Err(format!("UDP {to} answered {body:?}, expected {n:?}")),
        None if !is_backend(&body) => Err(format!("UDP {to} answered {body:?}")),
        _ => Ok(()),
    }
}

/// A server in the appliance namespace on `198.18.0.1:2222` (bound after the
/// forwarder put the address there) answers a client's connection.
fn appliance_server(app: &Netns, client: &Netns) -> Result<(), String> {
    let at = SocketAddr::new(IpAddr::V4(APP4), 2222);
    let listener = app
        .within(move || TcpListener::bind(at))
        .map_err(|e| format!("bind {at} in the appliance namespace: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).map_err(|e| e.to_string())?;
                    return s.write_all(b"appliance\n").map_err(|e| e.to_string());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no connection reached the appliance's server".into())
    });
    let got = client.within(move || -> Result<String, String> {
        let s = TcpStream::connect_timeout(&at, Duration::from_secs(3))
            .map_err(|e| format!("connect {at}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.take(1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("read from {at}: {e}"))?;
        Ok(text)
    });
    let served = server.join().map_err(|_| "server thread panicked")?;
    let text = got?;
    served?;
    if text.trim() == "appliance" {
        Ok(())
    } else {
        Err(format!("the appliance's server answered {text:?}"))
    }
}

// ---- hostile frames ----

pub(crate) fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(crate) fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1514);
    f.extend_from_slice(&APP_CLIENT_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A well-formed TCP SYN from the client to `dst:dport` over IPv4 (the base the
/// hostile frames damage).
fn syn4(dst: [u8; 4], dport: u16, sport: u16) -> Vec<u8> {
    let mut f = eth(0x0800);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&CLIENT4.octets());
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = csum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

pub(crate) fn set_ip4_csum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let ihl = (usize::from(f[14] & 0x0f) * 4).clamp(20, f.len() - 14);
    let c = csum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// An IPv6 frame from the client to `dst` with `next` header and `payload`.
pub(crate) fn ip6(dst: std::net::Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.push(next);
    f.push(64);
    f.extend_from_slice(&CLIENT6.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// A small deterministic generator for the random-byte frames.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The hostile frames: truncated, oversized, bad checksums, bad header lengths,
/// fragments, bad extension-header chains, random bytes.
fn hostile_frames() -> Vec<Vec<u8>> {
    let vip = NAT4.octets();
    let mut v: Vec<Vec<u8>> = Vec::new();
    let good = syn4(vip, 80, 40001);
    // Truncated at every length up to the TCP header's end.
    for n in 0..good.len() {
        v.push(good[..n].to_vec());
    }
    // Bad IPv4 header checksum; bad TCP checksum.
    let mut f = good.clone();
    f[24] ^= 0xff;
    v.push(f);
    let mut f = good.clone();
    f[14 + 20 + 16] ^= 0xff;
    v.push(f);
    // Bad header lengths: IHL below 5, IHL 15 in a short packet, total length
    // below the header, total length beyond the frame, TCP data offset below 5 and
    // beyond the segment, IPv4 version 7.
    for (ihl, total) in [(4u8, 40u16), (15, 40), (5, 10), (5, 0xffff), (6, 40)] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        set_ip4_csum(&mut f);
        v.push(f);
    }
    for off in [0u8, 2, 15] {
        let mut f = good.clone();
        f[14 + 20 + 12] = off << 4;
        v.push(f);
    }
    let mut f = good.clone();
    f[14] = 0x75;
    v.push(f);
    // Oversized: a full 1 514-byte frame whose IP length claims more, and one
    // whose IP length matches (a SYN with 1 460 bytes of data).
    let mut f = good.clone();
    f.resize(1514, 0xa5);
    f[16..18].copy_from_slice(&0xfff0u16.to_be_bytes());
    set_ip4_csum(&mut f);
    v.push(f);
    let mut f = good.clone();
    f.resize(1514, 0x5a);
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    set_ip4_csum(&mut f);
    v.push(f);
    // IPv4 fragments to the virtual IP: a first fragment (MF), a later one, an
    // overlapping tiny one, and a later fragment to a back end (routed).
    for (flags_off, dst) in [
        (0x2000u16, vip),
        (0x0010, vip),
        (0x2001, vip),
        (0x00b9, BACKENDS[0].1.octets()),
    ] {
        let mut f = syn4(dst, 80, 40002);
        f[20..22].copy_from_slice(&flags_off.to_be_bytes());
        set_ip4_csum(&mut f);
        v.push(f);
    }
    // IPv6: truncated header, payload length beyond the frame, a first and a
    // later fragment to the virtual IP, a chain of nine destination-options
    // headers (more than the extractor follows), a hop-by-hop header claiming
    // more than the packet.
    let mut tcp6 = [0u8; 20];
    tcp6[0..2].copy_from_slice(&40003u16.to_be_bytes());
    tcp6[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp6[12] = 5 << 4;
    tcp6[13] = 0x02;
    let full6 = ip6(NAT6, 6, &tcp6);
    for n in [14, 20, 40, 53] {
        v.push(full6[..n].to_vec());
    }
    let mut f = full6.clone();
    f[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    v.push(f);
    for (off_m, id) in [(0x0001u16, 7u32), (0x0100, 7)] {
        let mut p = vec![6, 0];
        p.extend_from_slice(&off_m.to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&tcp6);
        v.push(ip6(NAT6, 44, &p));
    }
    let mut p = Vec::new();
    for i in 0..9 {
        p.extend_from_slice(&[if i < 8 { 60 } else { 6 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    p.extend_from_slice(&tcp6);
    v.push(ip6(NAT6, 60, &p));
    v.push(ip6(NAT6, 0, &[6, 200, 0, 0, 0, 0, 0, 0]));
    // ARP: truncated, and with impossible address lengths.
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT4.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&APP4.octets());
    for n in [16, 22, 30, 41] {
        v.push(arp[..n].to_vec());
    }
    let mut f = arp.clone();
    f[18] = 255;
    f[19] = 255;
    v.push(f);
    // Three stacked VLAN tags around a SYN, and one cut in the middle.
    let mut f = eth(0x8100);
    for _ in 0..2 {
        f.extend_from_slice(&[0, 5, 0x81, 0x00]);
    }
    f.extend_from_slice(&[0, 5, 0x08, 0x00]);
    f.extend_from_slice(&good[14..]);
    v.push(f.clone());
    v.push(f[..20].to_vec());
    // Random bytes behind a header addressed to the appliance, with plausible and
    // implausible EtherTypes, and fully random frames (random destination MAC).
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let types = [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234];
    for i in 0..400 {
        let len = 1 + (rng.next() % 1514) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 4 != 3 && f.len() >= 14 {
            f[..6].copy_from_slice(&APP_CLIENT_MAC);
            f[6..12].copy_from_slice(&CLIENT_MAC);
            let t = types[(rng.next() % types.len() as u64) as usize];
            f[12..14].copy_from_slice(&t.to_be_bytes());
            if t == 0x0800 && f.len() > 34 {
                // Mostly a believable IPv4 start, so the bytes reach deeper code.
                f[14] = 0x45;
                f[23] = [6u8, 17, 1][(rng.next() % 3) as usize];
                f[30..34].copy_from_slice(&vip);
            }
        }
        v.push(f);
    }
    v
}

/// Send every hostile frame five times from the client; the number sent.
fn send_hostile(client: &Netns) -> Result<usize, String> {
    send_frames(client, hostile_frames)
}

/// Send the frames `make` gives five times from the client; the number sent.
pub(crate) fn send_frames(client: &Netns, make: fn() -> Vec<Vec<u8>>) -> Result<usize, String> {
    client.within(move || {
        let tx = FrameSender::open("eth0").map_err(|e| format!("AF_PACKET: {e}"))?;
        let frames = make();
        let mut sent = 0;
        for _ in 0..5 {
            for f in &frames {
                // Frames shorter than the device accepts are refused by the
                // kernel (an error here, not a frame on the wire): counted out.
                if tx.send(f).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sent)
    })
}

// ---- the suites ----

fn lbp_suite(rings: &str, datapath: &str) {
    let test = match datapath {
        "cores" => format!("e2e::lbp_{rings}_cores"),
        _ => format!("e2e::lbp_{rings}"),
    };
    if skipped(&test) {
        return;
    }
    let missing = missing_tools();
    assert!(missing.is_empty(), "{test}: missing tools: {missing:?}");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());

    let topo = Topology::build(
        &format!("e{}{}", &rings[..1], &datapath[..1]),
        Forwarder::Lbp,
    );
    let tap = "lbptap";
    let mut lbp = Lbp::start(
        &topo.app,
        POLICY,
        &[
            "--iface",
            "client=client",
            "--iface",
            "servers=servers",
            "--rings",
            rings,
            "--datapath",
            datapath,
            // The client's veth runs an XDP program (topology.rs): XDP_TX
            // frames reach it.
            "--xdp-tx",
            "on",
            "--tap",
            tap,
            "--max-connections",
            "65536",
            "--stats-interval",
            "0",
        ],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!("e2e: {}", lbp.ready_line);
    let c = &topo.client;
    let mut r = Report::default();
    let fast = datapath == "xdp";
    r.check(
        "the XDP fast path is on exactly with --datapath xdp",
        match lbp.ready_line.contains("xdp fast path on") {
            on if on == fast => Ok(()),
            on => Err(format!("fast path on: {on}: {}", lbp.ready_line)),
        },
    );

    r.check("HTTP NAT IPv4", http_via(c, NAT4.into(), 80, Seen::Nat));
    r.check("HTTP NAT IPv6", http_via(c, NAT6.into(), 80, Seen::Nat));
    r.check("HTTP DSR IPv4", http_via(c, DSR4.into(), 80, Seen::Dsr));
    r.check("HTTP DSR IPv6", http_via(c, DSR6.into(), 80, Seen::Dsr));
    r.check(
        "UDP NAT IPv4",
        udp_echo(c, SocketAddr::new(NAT4.into(), 53), None),
    );
    r.check(
        "3000 connections by weight",
        weighted_spread(c, SocketAddr::new(NAT4.into(), 81)),
    );
    r.check(
        "non-service port reset IPv4",
        refused(c, SocketAddr::new(NAT4.into(), 25)),
    );
    r.check(
        "non-service port reset IPv6",
        refused(c, SocketAddr::new(NAT6.into(), 25)),
    );
    r.check("blocked source", blocked(c, NAT4.into(), 80));
    r.check("routed ping IPv4", pinged(c, BACKENDS[0].1.into()));
    r.check("routed ping IPv6", pinged(c, BACKENDS[1].2.into()));
    r.check(
        "TTL 1 routed: time exceeded IPv4",
        expired(c, BACKENDS[0].1.into(), APP4.into()),
    );
    r.check(
        "TTL 1 routed: time exceeded IPv6",
        expired(c, BACKENDS[1].2.into(), APP6.into()),
    );
    r.check(
        "routed HTTP to a back end",
        http_from(c, BACKENDS[2].1.into(), 8080, "b3"),
    );
    r.check(
        "TAP: the appliance's own server",
        appliance_server(&topo.app, c),
    );
    r.check(
        "hostile frames, then still forwarding",
        send_hostile(c).and_then(|n| {
            eprintln!("e2e: sent {n} hostile frames");
            std::thread::sleep(Duration::from_millis(300));
            if !lbp.alive() {
                return Err("lbp is no longer running".into());
            }
            http_via(c, NAT4.into(), 80, Seen::Nat)?;
            http_via(c, NAT6.into(), 80, Seen::Nat)?;
            http_via(c, DSR4.into(), 80, Seen::Dsr)?;
            pinged(c, BACKENDS[2].1.into())
        }),
    );
    // DSR balanced in XDP, once the cores have found the back ends'
    // neighbours (the connections above did) and the control core has
    // published them: new connections, each answered by a back end that saw
    // the virtual IP, with frames balanced by the XDP program (on the cores'
    // path, the count stays 0).
    let balanced = |st: &serde_json::Value| st["xdp"]["balanced_packets"].as_u64().unwrap_or(0);
    r.check(
        "DSR balanced in XDP with --datapath xdp (on the cores otherwise)",
        lbp.stats().and_then(|before| {
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..16 {
                let vip: IpAddr = if i % 2 == 0 { DSR4.into() } else { DSR6.into() };
                http_via(c, vip, 80, Seen::Dsr)?;
            }
            let after = lbp.stats()?;
            let n = balanced(&after) - balanced(&before);
            eprintln!("e2e: {n} frames of 16 DSR connections balanced in XDP");
            match (fast, n) {
                (true, 16..) | (false, 0) => Ok(()),
                _ => Err(format!("{n} frames balanced in XDP: {}", after["xdp"])),
            }
        }),
    );
    // NAT balanced in XDP: the requests' frames rewritten there, the back
    // ends' replies translated by the cores, which take each flow over from
    // its reply record (`xdp_adopted`; 0 on the cores' path). Not every
    // connection need be XDP's: a new flow whose back end's neighbour is
    // stale goes to the cores, which balance it themselves.
    let adopted = |st: &serde_json::Value| {
        st["cores"].as_array().map_or(0, |v| {
            v.iter()
                .map(|c| c["xdp_adopted"].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
    };
    r.check(
        "NAT balanced in XDP, replies taken over by the cores (on the cores otherwise)",
        lbp.stats().and_then(|before| {
            for i in 0..16 {
                let vip: IpAddr = if i % 2 == 0 { NAT4.into() } else { NAT6.into() };
                http_via(c, vip, 80, Seen::Nat)?;
            }
            let after = lbp.stats()?;
            let n = balanced(&after) - balanced(&before);
            let a = adopted(&after) - adopted(&before);
            eprintln!("e2e: 16 NAT connections: {n} frames balanced in XDP, {a} flows taken over by the cores");
            match (fast, n, a) {
                (true, 16.., 8..) | (false, 0, 0) => Ok(()),
                _ => Err(format!(
                    "{n} frames balanced in XDP, {a} flows taken over: {}",
                    after["xdp"]
                )),
            }
        }),
    );
    // `lbp conns` lists the flows XDP balanced that no core took over (the
    // DSR ones: their answers bypass the appliance), beside the cores'
    // connections, each once.
    r.check(
        "lbp conns lists the flows balanced in XDP (none on the cores' path)",
        lbp.conns().and_then(|c| {
            let rows = c["connections"].as_array().cloned().unwrap_or_default();
            let dsr = [
                SocketAddr::new(DSR4.into(), 80).to_string(),
                SocketAddr::new(DSR6.into(), 80).to_string(),
            ];
            let in_xdp: Vec<&serde_json::Value> =
                rows.iter().filter(|r| r["state"] == "xdp").collect();
            let dsr_xdp = in_xdp
                .iter()
                .filter(|r| dsr.iter().any(|d| r["vip"] == d.as_str()))
                .count();
            let mut keys: Vec<String> = rows
                .iter()
                .map(|r| format!("{} {} {}", r["proto"], r["client"], r["vip"]))
                .collect();
            keys.sort();
            let n = keys.len();
            keys.dedup();
            eprintln!(
                "e2e: lbp conns: {n} rows, {} in XDP ({dsr_xdp} DSR)",
                in_xdp.len()
            );
            match (fast, dsr_xdp, keys.len() == n) {
                (_, _, false) => Err(format!("a connection listed twice: {c}")),
                (true, 8.., true) => Ok(()),
                (false, 0, true) if in_xdp.is_empty() => Ok(()),
                _ => Err(format!("{dsr_xdp} DSR flows listed in XDP of {n} rows")),
            }
        }),
    );
    r.check(
        "the fast path's counters: blocked sources dropped, non-service ports reset in XDP",
        lbp.stats().and_then(|st| {
            let x = &st["xdp"];
            eprintln!("e2e: xdp counters {x}");
            let n = |k: &str| x[k].as_u64().unwrap_or(0);
            match (
                fast,
                n("dropped_packets"),
                n("seen_packets"),
                n("reset_packets"),
            ) {
                (true, 1.., 1000.., 2..) | (false, 0, 0, 0) => Ok(()),
                _ => Err(format!("xdp counters {x}")),
            }
        }),
    );
    r.check(
        "still running, then exits 0 on SIGTERM",
        if lbp.alive() {
            lbp.stop_cleanly()
        } else {
            Err("lbp had already ended".into())
        },
    );
    let context = if r.failures.is_empty() {
        String::new()
    } else {
        format!("lbp's stderr:\n{}\n{}", lbp.stderr_text(), topo.dump())
    };
    drop(lbp);
    drop(topo);
    r.finish(&context);
}

/// AF_XDP rings with the policy in XDP (the fast path) before the switching
/// cores.
#[test]
fn lbp_xdp() {
    lbp_suite("xdp", "xdp");
}

/// AF_XDP rings with every frame decided on the switching cores.
#[test]
fn lbp_xdp_cores() {
    lbp_suite("xdp", "cores");
}

#[test]
fn lbp_uring() {
    lbp_suite("uring", "auto");
}

/// The topology and every probe, with the kernel forwarding (routing, and
/// nftables DNAT `numgen inc` for the weighted spread): each probe can pass, and
/// the ones that must fail against a dropping or resetting peer do.
#[test]
fn topology_with_kernel_forwarding() {
    let test = "e2e::topology_with_kernel_forwarding";
    if skipped(test) {
        return;
    }
    let missing = missing_tools();
    assert!(missing.is_empty(), "{test}: missing tools: {missing:?}");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());

    let topo = Topology::build("ek", Forwarder::Kernel);
    let c = &topo.client;
    let mut r = Report::default();
    for (name, a4, a6) in BACKENDS {
        r.check(
            &format!("routed HTTP IPv4 to {name}"),
            http_from(c, a4.into(), 8080, name),
        );
        r.check(
            &format!("routed HTTP IPv6 to {name}"),
            http_from(c, a6.into(), 80, name),
        );
        r.check(
            &format!("routed UDP to {name}"),
            udp_echo(c, SocketAddr::new(a6.into(), 5353), Some(name)),
        );
    }
    r.check(
        "3000 connections by weight (nftables numgen)",
        weighted_spread(c, SocketAddr::new(NAT4.into(), 81)),
    );
    r.check(
        "closed port reset",
        refused(c, SocketAddr::new(BACKENDS[0].1.into(), 25)),
    );
    r.check(
        "the reset probe fails on an unreachable address",
        match refused(
            c,
            SocketAddr::new("198.18.3.99".parse().expect("an address"), 80),
        ) {
            Ok(()) => Err("refused where nothing answers".into()),
            Err(_) => Ok(()),
        },
    );
    r.check("blocked source", blocked(c, BACKENDS[1].1.into(), 8080));
    r.check(
        "the blocked probe fails when served",
        match curl(c, &url(BACKENDS[1].1.into(), 8080), &[], 2) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("unblocked source not served: {e}")),
        },
    );
    r.check("routed ping IPv4", pinged(c, BACKENDS[0].1.into()));
    r.check("routed ping IPv6", pinged(c, BACKENDS[1].2.into()));
    r.check(
        "TTL 1 routed: time exceeded IPv4",
        expired(c, BACKENDS[0].1.into(), APP4.into()),
    );
    r.check(
        "TTL 1 routed: time exceeded IPv6",
        expired(c, BACKENDS[1].2.into(), APP6.into()),
    );
    r.check(
        "ping probe fails without an answer",
        match pinged(c, "198.18.3.99".parse().expect("an address")) {
            Ok(()) => Err("an echo reply from nowhere".into()),
            Err(_) => Ok(()),
        },
    );
    r.check("the appliance's own server", appliance_server(&topo.app, c));
    r.check(
        "hostile frames, then still forwarding",
        send_hostile(c).and_then(|n| {
            if n < 1000 {
                return Err(format!("only {n} hostile frames sent"));
            }
            http_from(c, BACKENDS[0].1.into(), 8080, "b1")
        }),
    );
    let context = if r.failures.is_empty() {
        String::new()
    } else {
        topo.dump()
    };
    drop(topo);
    r.finish(&context);
}

/// `lbp run POLICY` on AF_XDP rings in the topology's appliance, with `extra`
/// arguments.
pub(crate) fn start_xdp(test: &str, topo: &Topology, policy: &str, extra: &[&str]) -> Lbp {
    let mut args = vec![
        "--iface",
        "client=client",
        "--iface",
        "servers=servers",
        "--rings",
        "xdp",
        "--tap",
        "lbptap",
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Lbp::start(&topo.app, policy, &args).unwrap_or_else(|e| panic!("{test}: {e}"))
}

/// Agents on the three back ends report CPU loads 0.75, 0.5 and 0.25; with the
/// pool's `weight = weight * (1 - cpu) * 100` the weights become 25, 50 and 75,
/// and new connections (weighted round robin) split 1:2:3 where the static
/// weights split them evenly. A forged report (another secret) and a replayed
/// one change nothing and are counted.
#[test]
fn agents_steer_the_weights() {
    let test = "e2e::agents_steer_the_weights";
    if skipped(test) {
        return;
    }
    let missing = missing_tools();
    assert!(missing.is_empty(), "{test}: missing tools: {missing:?}");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const SECRET: &str = "the agents' secret, shared";
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.to_str().unwrap().to_string();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the agents' secret at all").unwrap();

    let topo = Topology::build("ea", Forwarder::Lbp);
    let mut lbp = start_xdp(
        test,
        &topo,
        "tests/e2e/agents.lbp",
        &["--reports", "0.0.0.0:7000", "--secret-file", &secret],
    );
    let to = SocketAddr::new(NAT4.into(), 80);
    let (even, errors) = topo
        .client
        .within(move || spread(to, 300, Duration::from_secs(60)));
    eprintln!("e2e: static weights: {even:?}, {} errors", errors.len());
    assert!(errors.len() <= 3, "{test}: {errors:?}");
    for c in even {
        assert!((90..=110).contains(&c), "{test}: static split {even:?}");
    }

    // The agents: bounded (at most 150 reports, 30 s), stopped at the end.
    let agent = |ns: &Netns, addr: &str, cpu: &str, secret: &str, count: &str| {
        ns.command(env!("CARGO_BIN_EXE_lbp"))
            .args([
                "agent",
                "--report-to",
                "198.18.2.1:7000",
                "--secret-file",
                secret,
                "--backend",
                addr,
                "--interval",
                "200ms",
                "--count",
                count,
                "--load",
                &format!("cpu={cpu}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lbp agent starts")
    };
    let mut agents: Vec<std::process::Child> = topo
        .backends
        .iter()
        .zip(BACKENDS)
        .zip(["0.75", "0.5", "0.25"])
        .map(|((ns, (_, a4, _)), cpu)| agent(ns, &a4.to_string(), cpu, &secret, "150"))
        .collect();
    let end = Instant::now() + Duration::from_secs(15);
    while !lbp.stderr_text().contains("http 25 50 75") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lbp.stderr_text().contains("http 25 50 75"),
        "{test}: no publication of the reported weights:\n{}",
        lbp.stderr_text()
    );
    let (steered, errors) = topo
        .client
        .within(move || spread(to, 600, Duration::from_secs(60)));
    eprintln!(
        "e2e: reported weights: {steered:?}, {} errors",
        errors.len()
    );
    assert!(errors.len() <= 6, "{test}: {errors:?}");
    let served: usize = steered.iter().sum();
    for (i, &c) in steered.iter().enumerate() {
        let want = served as f64 * (i + 1) as f64 / 6.0;
        assert!(
            (c as f64 - want).abs() <= want * 0.10,
            "{test}: back end {} served {c} of {served}, expected {want:.0} ± 10 % ({steered:?})",
            BACKENDS[i].0
        );
    }

    // The agents stop (killed: our own children, by PID).
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }

    // A forged report: an agent with another secret.
    let mut forged = agent(
        &topo.backends[0],
        "198.18.2.11",
        "0",
        wrong.to_str().unwrap(),
        "1",
    );
    let _ = forged.wait();
    // A replayed one: the same authentic datagram twice (the same load as the
    // agent of b1 reports, so that admitting the first changes nothing).
    let datagram = lbp_runtime::control::report::encode(
        &lbp_runtime::control::report::Report {
            backend: BACKENDS[0].1.into(),
            sent_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
                + 10_000_000,
            load: lbp_abi::weight::Load {
                cpu: 0.75,
                ..Default::default()
            },
        },
        SECRET.as_bytes(),
    );
    topo.backends[0].within(move || {
        let s = std::net::UdpSocket::bind("198.18.2.11:0").expect("bind");
        for _ in 0..2 {
            s.send_to(&datagram, "198.18.2.1:7000").expect("send");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = lbp.stop();
    let text = lbp.stderr_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("lbp: reports:"))
        .unwrap_or_else(|| panic!("{test}: no reports line:\n{text}"));
    eprintln!("e2e: {line}");
    assert!(line.contains("forged 1,"), "{test}: {line}");
    assert!(line.contains("replayed 1,"), "{test}: {line}");
    assert!(
        status.is_some_and(|s| s.success()),
        "{test}: {status:?}\n{text}"
    );
}

/// Health checks (TCP, every 200 ms, fall 3, rise 2): the server of b2 dies
/// (its port 8080 answers with resets); once the checks took it out, new
/// connections go to b1 and b3 only and none fails; when it comes back, the
/// checks bring it back and the split is even again.
#[test]
fn health_checks_take_a_dead_back_end_out_and_back() {
    let test = "e2e::health_checks_take_a_dead_back_end_out_and_back";
    if skipped(test) {
        return;
    }
    let missing = missing_tools();
    assert!(missing.is_empty(), "{test}: missing tools: {missing:?}");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo = Topology::build("eh", Forwarder::Lbp);
    let mut lbp = start_xdp(test, &topo, "tests/e2e/health.lbp", &[]);
    let to = SocketAddr::new(NAT4.into(), 80);
    let split = |n: usize| {
        let (counts, errors) = topo
            .client
            .within(move || spread(to, n, Duration::from_secs(60)));
        eprintln!("e2e: split {counts:?}, {} errors", errors.len());
        (counts, errors)
    };
    let wait_for = |text: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while !lbp.stderr_text().contains(text) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        lbp.stderr_text().contains(text)
    };
    let (even, errors) = split(300);
    assert!(errors.is_empty(), "{test}: {errors:?}");
    assert_eq!(even, [100, 100, 100], "{test}");

    // b2's server dies: its port answers with resets.
    let b2 = &topo.backends[1];
    nft(
        b2,
        "table inet lbpdead {\n chain in {\n  type filter hook input priority 0;\n  \
         tcp dport 8080 reject with tcp reset\n }\n}\n",
    );
    let down = "back end 198.18.2.12 is down";
    assert!(
        wait_for(down),
        "{test}: not taken out:\n{}",
        lbp.stderr_text()
    );
    // The weights are published at most twice a second after the change.
    std::thread::sleep(Duration::from_millis(700));
    let (without, errors) = split(300);
    assert!(
        errors.is_empty(),
        "{test}: failed after the fall window: {errors:?}"
    );
    assert_eq!(without, [150, 0, 150], "{test}");

    // It comes back.
    b2.exec(&["nft", "delete", "table", "inet", "lbpdead"]);
    let up = "back end 198.18.2.12 is up";
    assert!(wait_for(up), "{test}: not back:\n{}", lbp.stderr_text());
    std::thread::sleep(Duration::from_millis(700));
    let (back, errors) = split(300);
    assert!(errors.is_empty(), "{test}: {errors:?}");
    assert_eq!(back, [100, 100, 100], "{test}");
    let status = lbp.stop();
    assert!(status.is_some_and(|s| s.success()), "{test}: {status:?}");
}

/// ICMP health checks (echo requests, every 200 ms, fall 3, rise 2) of an IPv4
/// and an IPv6 pool: b2's addresses are taken away in its namespace, so that
/// nothing answers its pings any more; once the checks took it out of both
/// pools, new connections go to b1 and b3 only and none fails; when its
/// addresses come back, the checks bring it back and the splits are even again.
#[test]
fn icmp_health_checks_take_an_unreachable_back_end_out_and_back() {
    let test = "e2e::icmp_health_checks_take_an_unreachable_back_end_out_and_back";
    let Some((_serial, topo)) = setup(test, "ei") else {
        return;
    };
    let mut lbp = start_xdp(test, &topo, "tests/e2e/health-icmp.lbp", &[]);
    let split = |to: IpAddr| {
        let to = SocketAddr::new(to, 80);
        let (counts, errors) = topo
            .client
            .within(move || spread(to, 300, Duration::from_secs(60)));
        eprintln!("e2e: {to} split {counts:?}, {} errors", errors.len());
        assert!(errors.is_empty(), "{test}: {to}: {errors:?}");
        counts
    };
    let wait_for = |text: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while !lbp.stderr_text().contains(text) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        lbp.stderr_text().contains(text)
    };
    let vips = [IpAddr::from(NAT4), IpAddr::from(NAT6)];
    for vip in vips {
        assert_eq!(split(vip), [100, 100, 100], "{test}: {vip}");
    }
    let b2 = &topo.backends[1];
    let (_, b2_4, b2_6) = BACKENDS[1];
    // Both of b2's addresses are said to be `state`; then (the weights are
    // published at most twice a second after a change) both splits are `want`.
    let expect = |state: &str, want: [usize; 3]| {
        for a in [b2_4.to_string(), b2_6.to_string()] {
            let line = format!("back end {a} is {state}");
            assert!(
                wait_for(&line),
                "{test}: no {line:?}:\n{}",
                lbp.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(700));
        for vip in vips {
            assert_eq!(split(vip), want, "{test}: {vip} with b2 {state}");
        }
    };

    // b2 loses its addresses: its pings go unanswered.
    let (a4, a6) = (format!("{b2_4}/24"), format!("{b2_6}/64"));
    b2.ip(&["addr", "del", &a4, "dev", "eth0"]);
    b2.ip(&["addr", "del", &a6, "dev", "eth0"]);
    expect("down", [150, 0, 150]);

    // Its addresses come back (and the routes that went with the IPv4 one).
    b2.ip(&["addr", "add", &a4, "dev", "eth0"]);
    b2.ip(&["addr", "add", &a6, "dev", "eth0", "nodad"]);
    for (v, gw) in [("-4", "198.18.2.1"), ("-6", "2001:db8:2::1")] {
        b2.ip(&[
            v, "route", "replace", "default", "via", gw, "dev", "eth0", "onlink",
        ]);
    }
    expect("up", [100, 100, 100]);
    let status = lbp.stop();
    assert!(status.is_some_and(|s| s.success()), "{test}: {status:?}");
}
