//! AF_XDP ports and lbp's own XDP redirect program, in network namespaces made by
//! the tests: frames from a peer namespace arrive on the socket, frames sent on
//! the socket reach the peer, two sockets share one UMEM across interfaces, the
//! program is detached when its owner drops it, and a stale program left on an
//! interface is removed at start. Needs root; skipped with a message otherwise.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lbp_lab::require_netns;
use lbp_lab::testing::frame::{mac, reflect, set_udp_checksum, udp4 as udp};
use lbp_lab::testing::{Netns, veth_up as veth};
use lbp_runtime::ring::bpf::{self, RedirectProgram, XdpMode, XdpRedirect, XskMap};
use lbp_runtime::ring::xdp::{XdpOptions, XdpPort};
use lbp_runtime::ring::{Desc, Frames, Port};

const APP_MAC: &str = "02:00:5e:12:00:01";
const PEER_MAC: &str = "02:00:5e:12:00:02";
const APP_B_MAC: &str = "02:00:5e:12:01:01";
const PEER_B_MAC: &str = "02:00:5e:12:01:02";

/// The appliance namespace `app` with `lbp0` (no address: AF_XDP takes its
/// frames), and `peer` with `lbp1` = 198.18.0.2/24, which reaches 198.18.0.1 and
/// 198.18.1.0/24 through lbp0's MAC without ARP.
struct Topo {
    app: Netns,
    peer: Netns,
}

fn topo(tag: &str) -> Topo {
    let app = Netns::new(&format!("{tag}a"));
    let peer = Netns::new(&format!("{tag}p"));
    veth(&app, "lbp0", &peer, "lbp1");
    app.ip(&["link", "set", "lbp0", "address", APP_MAC]);
    peer.ip(&["link", "set", "lbp1", "address", PEER_MAC]);
    peer.add_address("lbp1", "198.18.0.2/24").unwrap();
    peer.ip(&[
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        APP_MAC,
        "nud",
        "permanent",
        "dev",
        "lbp1",
    ]);
    peer.ip(&[
        "route",
        "add",
        "198.18.1.0/24",
        "via",
        "198.18.0.1",
        "dev",
        "lbp1",
    ]);
    Topo { app, peer }
}

fn xdp_shown(ns: &Netns, ifname: &str) -> bool {
    let out = ns.ip(&["link", "show", "dev", ifname]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Whether the interface's XDP program is gone within two seconds. Closing the
/// last descriptor of a bpf link detaches the program, but when a thread closes
/// it as it exits, the kernel may finish that after `join` has returned.
fn xdp_gone(ns: &Netns, ifname: &str) -> bool {
    for _ in 0..40 {
        if !xdp_shown(ns, ifname) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn small_opts(ifindex: u32) -> XdpOptions {
    let mut o = XdpOptions::new(ifindex, 0);
    o.fill_target = 512;
    o
}

/// Open lbp's redirect program and one port on `lbp0` in the calling thread's
/// namespace.
fn open_port(frames: &mut Frames) -> (XdpRedirect, XdpPort) {
    let ifindex = bpf::ifindex("lbp0").expect("lbp0");
    let redirect = XdpRedirect::attach(ifindex, 1).expect("attach XDP program");
    let port = XdpPort::open(frames, &small_opts(ifindex), None).expect("AF_XDP socket");
    redirect.insert(0, port.as_fd()).expect("XSKMAP insert");
    (redirect, port)
}

#[test]
fn frames_arrive_and_replies_reach_the_peer() {
    require_netns!();
    let t = topo("xr");
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let done = AtomicBool::new(false);
    const N: usize = 20;
    std::thread::scope(|s| {
        let app = s.spawn(|| {
            t.app.enter();
            let mut frames = Frames::new(2048).unwrap();
            let (redirect, mut port) = open_port(&mut frames);
            assert!(!port.zero_copy(), "veth has no zero-copy AF_XDP");
            eprintln!(
                "xdp: mode {:?}, link {}, busy poll {}",
                redirect.attachment().mode(),
                redirect.attachment().is_link(),
                port.busy_poll()
            );
            assert!(xdp_shown(&t.app, "lbp0"));
            ready_tx.send(()).unwrap();
            let mut burst = [Desc { addr: 0, len: 0 }; 32];
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = port.recv(&mut frames, &mut burst);
                let mut out = Vec::new();
                for &d in &burst[..n] {
                    match udp(frames.packet(d)) {
                        Some((9000, payload)) => {
                            seen.push(payload.to_vec());
                            reflect(frames.packet_mut(d));
                            set_udp_checksum(frames.packet_mut(d));
                            out.push(d);
                        }
                        _ => frames.free(d),
                    }
                }
                let sent = port.send(&mut frames, &out);
                for &d in &out[sent..] {
                    frames.free(d);
                }
                port.flush(&mut frames);
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            // Let the last completions come back, then check every frame is
            // either free or held by the port.
            for _ in 0..100 {
                port.flush(&mut frames);
                if port.lent() == 512 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(frames.free_count() + port.lent(), frames.count());
            let st = port.stats();
            assert!(
                st.rx_packets >= N as u64 && st.tx_packets >= N as u64,
                "{st:?}"
            );
            seen
        });
        let peer = s.spawn(|| {
            t.peer.enter();
            let sock = UdpSocket::bind("198.18.0.2:40000").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let ready_rx = ready_rx;
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let mut replies = 0;
            let mut buf = [0u8; 2048];
            for i in 0..N {
                let msg = format!("lbp-xdp-{i}");
                for _attempt in 0..5 {
                    sock.send_to(msg.as_bytes(), "198.18.0.1:9000").unwrap();
                    match sock.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            assert_eq!(from.to_string(), "198.18.0.1:9000");
                            assert_eq!(&buf[..len], msg.as_bytes());
                            replies += 1;
                            break;
                        }
                        Err(_) => continue,
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            replies
        });
        let replies = peer.join().unwrap();
        let seen = app.join().unwrap();
        assert_eq!(replies, N, "every datagram came back, reflected");
        for i in 0..N {
            let msg = format!("lbp-xdp-{i}");
            assert!(seen.iter().any(|p| p == msg.as_bytes()), "{msg} not seen");
        }
    });
    assert!(xdp_gone(&t.app, "lbp0"), "program detached on drop");
}

#[test]
fn shared_umem_forwards_between_interfaces() {
    require_netns!();
    let t = topo("xs");
    let peer_b = Netns::new("xsb");
    veth(&t.app, "lbp2", &peer_b, "lbp3");
    t.app.ip(&["link", "set", "lbp2", "address", APP_B_MAC]);
    peer_b.ip(&["link", "set", "lbp3", "address", PEER_B_MAC]);
    peer_b.add_address("lbp3", "198.18.1.2/24").unwrap();
    peer_b.ip(&[
        "neigh",
        "add",
        "198.18.1.1",
        "lladdr",
        APP_B_MAC,
        "nud",
        "permanent",
        "dev",
        "lbp3",
    ]);
    peer_b.ip(&[
        "route",
        "add",
        "198.18.0.0/24",
        "via",
        "198.18.1.1",
        "dev",
        "lbp3",
    ]);

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let done = AtomicBool::new(false);
    const N: usize = 10;
    std::thread::scope(|s| {
        let app = s.spawn(|| {
            t.app.enter();
            let mut frames = Frames::new(2048).unwrap();
            let (_ra, mut a) = open_port(&mut frames);
            let ib = bpf::ifindex("lbp2").unwrap();
            let rb = XdpRedirect::attach(ib, 1).unwrap();
            let mut b = XdpPort::open(&mut frames, &small_opts(ib), Some(&a)).unwrap();
            rb.insert(0, b.as_fd()).unwrap();
            // A port of another Frames is refused.
            let mut other = Frames::new(1024).unwrap();
            assert!(XdpPort::open(&mut other, &small_opts(ib), Some(&a)).is_err());
            ready_tx.send(()).unwrap();
            let (src, dst) = (mac(APP_B_MAC), mac(PEER_B_MAC));
            let mut burst = [Desc { addr: 0, len: 0 }; 32];
            let mut forwarded = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = a.recv(&mut frames, &mut burst);
                let mut out = Vec::new();
                for &d in &burst[..n] {
                    if let Some((9000, _)) = udp(frames.packet(d)) {
                        let f = frames.packet_mut(d);
                        f[0..6].copy_from_slice(&dst);
                        f[6..12].copy_from_slice(&src);
                        set_udp_checksum(f);
                        out.push(d);
                    } else {
                        frames.free(d);
                    }
                }
                let sent = b.send(&mut frames, &out);
                forwarded += sent;
                for &d in &out[sent..] {
                    frames.free(d);
                }
                b.flush(&mut frames);
                // Port b receives nothing here, but keeps its fill ring.
                let m = b.recv(&mut frames, &mut burst);
                for &d in &burst[..m] {
                    frames.free(d);
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            for _ in 0..100 {
                b.flush(&mut frames);
                if b.lent() == 512 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(frames.free_count() + a.lent() + b.lent(), frames.count());
            forwarded
        });
        let receiver = s.spawn(|| {
            peer_b.enter();
            let sock = UdpSocket::bind("198.18.1.2:9000").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.len() < N && Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                if let Ok((len, from)) = sock.recv_from(&mut buf) {
                    assert_eq!(from.to_string(), "198.18.0.2:40001");
                    got.push(buf[..len].to_vec());
                }
            }
            got
        });
        let sender = s.spawn(|| {
            t.peer.enter();
            let sock = UdpSocket::bind("198.18.0.2:40001").unwrap();
            let ready_rx = ready_rx;
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            for i in 0..N {
                sock.send_to(format!("fwd-{i}").as_bytes(), "198.18.1.2:9000")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        sender.join().unwrap();
        let got = receiver.join().unwrap();
        done.store(true, Ordering::Relaxed);
        let forwarded = app.join().unwrap();
        assert_eq!(got.len(), N, "all datagrams crossed from lbp0 to lbp2");
        assert!(forwarded >= N);
        for i in 0..N {
            assert!(got.contains(&format!("fwd-{i}").into_bytes()));
        }
    });
    assert!(xdp_gone(&t.app, "lbp0") && xdp_gone(&t.app, "lbp2"));
}

#[test]
fn stale_program_is_removed_at_start() {
    require_netns!();
    let t = topo("xt");
    std::thread::scope(|s| {
        s.spawn(|| {
            t.app.enter();
            let ifindex = bpf::ifindex("lbp0").unwrap();
            // What a killed run that attached through netlink leaves behind: a
            // program on the interface, owned by no process.
            {
                let map = XskMap::new(1).unwrap();
                let prog = RedirectProgram::load(&map).unwrap();
                bpf::netlink_attach(ifindex, prog.as_fd(), XdpMode::Generic).unwrap();
            }
            assert!(xdp_shown(&t.app, "lbp0"), "stale program in place");
            let r = XdpRedirect::attach(ifindex, 1).expect("attach over a stale program");
            assert!(
                r.attachment().is_link(),
                "the stale program was removed, so a bpf link could be made"
            );
            // A live attachment is not "stale": a second one is refused and the
            // first stays.
            assert!(XdpRedirect::attach(ifindex, 1).is_err());
            assert!(xdp_shown(&t.app, "lbp0"));
            drop(r);
            assert!(xdp_gone(&t.app, "lbp0"), "nothing left after drop");
        })
        .join()
        .unwrap();
    });
}

#[test]
fn throughput_smoke() {
    require_netns!();
    let t = topo("xp");
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let app = s.spawn(|| {
            t.app.enter();
            // The default options (all the receive frames lent), and frames to
            // spare for the ones in flight.
            let opts = XdpOptions::new(0, 0);
            let mut frames = Frames::new(opts.fill_target as usize + 2048).unwrap();
            let ifindex = bpf::ifindex("lbp0").unwrap();
            let redirect = XdpRedirect::attach(ifindex, 1).unwrap();
            let mut port = XdpPort::open(&mut frames, &XdpOptions::new(ifindex, 0), None).unwrap();
            redirect.insert(0, port.as_fd()).unwrap();
            ready_tx.send(()).unwrap();
            let mut burst = [Desc { addr: 0, len: 0 }; 64];
            let (mut rx, mut tx) = (0u64, 0u64);
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(5) {
                let n = port.recv(&mut frames, &mut burst);
                for &d in &burst[..n] {
                    if udp(frames.packet(d)).is_some() {
                        reflect(frames.packet_mut(d));
                        set_udp_checksum(frames.packet_mut(d));
                    }
                }
                let sent = port.send(&mut frames, &burst[..n]);
                for &d in &burst[sent..n] {
                    frames.free(d);
                }
                port.flush(&mut frames);
                rx += n as u64;
                tx += sent as u64;
            }
            let secs = start.elapsed().as_secs_f64();
            (rx, tx, secs, port.stats())
        });
        let peer = s.spawn(|| {
            t.peer.enter();
            let sock = UdpSocket::bind("198.18.0.2:40002").unwrap();
            let ready_rx = ready_rx;
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let payload = [0x5au8; 18];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < 2_000_000 && start.elapsed() < Duration::from_secs(1) {
                if sock.send_to(&payload, "198.18.0.1:9000").is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            done.store(true, Ordering::Relaxed);
            sent
        });
        let sent = peer.join().unwrap();
        let (rx, tx, secs, st) = app.join().unwrap();
        eprintln!(
            "xdp smoke: peer sent {sent}; socket received {rx}, reflected {tx} in {secs:.2} s \
             ({:.0} rx/s); kernel drops {}",
            rx as f64 / secs,
            st.rx_dropped
        );
        assert!(rx > 0 && tx > 0, "traffic flowed");
        assert!(
            rx <= sent + 1000,
            "no invented frames (plus a few IPv6 control frames)"
        );
    });
}

/// `bpf::xdp_test_run` runs a loaded XDP program in the kernel on a frame
/// (`BPF_PROG_TEST_RUN`, nothing sent): lbp's redirect program passes a frame
/// whose queue has no socket in its map, and leaves the frame as it was; a
/// program of one constant verdict returns that verdict.
#[test]
fn xdp_programs_run_on_a_frame_in_the_kernel() {
    require_netns!();
    let map = XskMap::new(4).expect("an XSK map");
    let prog = RedirectProgram::load(&map).expect("the redirect program loads");
    // An Ethernet frame (IPv4 type) of 60 bytes: the programs read no further.
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&mac(APP_MAC));
    frame[6..12].copy_from_slice(&mac(PEER_MAC));
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14..20].copy_from_slice(b"run me");
    let run = bpf::xdp_test_run(prog.as_fd(), &frame).expect("the test run");
    assert_eq!(run.action, 2, "XDP_PASS when no socket takes the queue");
    assert_eq!(run.frame, frame);
    // r0 = XDP_DROP; exit
    let drop = bpf::load_xdp(
        "lbp_test_drop",
        &[bpf::insn(0xb7, 0, 0, 0, 1), bpf::insn(0x95, 0, 0, 0, 0)],
    )
    .expect("a constant program loads");
    assert_eq!(bpf::xdp_test_run(drop.as_fd(), &frame).unwrap().action, 1);
    // A frame too short for Ethernet is refused by the kernel, not a panic.
    assert!(bpf::xdp_test_run(drop.as_fd(), &frame[..4]).is_err());
}

/// `bpf::Loaded::xdp` creates a program's maps from their specs (entries
/// written), resolves the program's map numbers to them and loads it: a program
/// assembled with `lbp_abi::bpf::Asm` reads the frame's EtherType, looks it up
/// in a hash map and writes what it found into an array map, which the test
/// reads back after a kernel test run.
#[test]
fn assembled_programs_load_with_their_maps() {
    use lbp_abi::bpf::{Asm, MapKind, MapSpec, op, reg::*, xdp};
    require_netns!();
    let mut a = Asm::new();
    let out = a.label();
    a.ldx(op::W, R2, R1, xdp::DATA);
    a.ldx(op::W, R3, R1, xdp::DATA_END);
    a.mov(R4, R2);
    a.alu_imm(op::ADD, R4, 14);
    a.jmp(op::JGT, R4, R3, out);
    a.ldx(op::H, R6, R2, 12); // the EtherType, network order
    a.stx(op::W, FP, -4, R6);
    a.ld_map(R1, 0);
    a.mov(R2, FP);
    a.alu_imm(op::ADD, R2, -4);
    a.call(lbp_abi::bpf::helper::MAP_LOOKUP_ELEM);
    a.jmp_imm(op::JEQ, R0, 0, out);
    a.ldx(op::W, R6, R0, 0);
    a.st_imm(op::W, FP, -8, 0);
    a.stx(op::W, FP, -4, R6);
    a.ld_map(R1, 1);
    a.mov(R2, FP);
    a.alu_imm(op::ADD, R2, -8);
    a.mov(R3, FP);
    a.alu_imm(op::ADD, R3, -4);
    a.mov_imm(R4, 0);
    a.call(lbp_abi::bpf::helper::MAP_UPDATE_ELEM);
    a.bind(out);
    a.ret(xdp::DROP);
    let prog = a.finish().expect("assembles");
    let key = 0x0008u32.to_ne_bytes().to_vec(); // 08 00 as loaded, zero-extended
    let maps = [
        MapSpec {
            name: "types".into(),
            kind: MapKind::Hash,
            key_size: 4,
            value_size: 4,
            max_entries: 4,
            entries: vec![(key, 4242u32.to_ne_bytes().to_vec())],
        },
        MapSpec {
            name: "out".into(),
            kind: MapKind::Array,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            entries: vec![],
        },
    ];
    let loaded = bpf::Loaded::xdp("lbp_test_maps", &prog, &maps).expect("loads with its maps");
    let mut frame = vec![0u8; 60];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let run = bpf::xdp_test_run(loaded.prog.as_fd(), &frame).expect("the test run");
    assert_eq!(run.action, 1);
    let got = bpf::map_lookup_bytes(&loaded.maps[1], &0u32.to_ne_bytes()).unwrap();
    assert_eq!(got, Some(4242u32.to_ne_bytes().to_vec()));
    // Wrong sizes are errors, not reads past a buffer.
    assert!(bpf::map_update_bytes(&loaded.maps[1], &[0; 2], &[0; 4]).is_err());
    assert!(bpf::map_lookup_bytes(&loaded.maps[0], &[0; 8]).is_err());
    // A program naming a map it was not given does not load.
    assert!(bpf::Loaded::xdp("lbp_test_maps", &prog, &maps[..1]).is_err());
}

/// A fast-path program (`ring::fastpath`) installed in place of the redirect
/// program decides in the kernel: UDP to port 9 is dropped there and counted
/// in its map, and never reaches the AF_XDP socket; everything else is
/// redirected to the socket through the interface's XSK map as before. While
/// the peer sends, the programs are swapped 30 times (a link update each):
/// every datagram to the other port still arrives. Uninstalled, port 9's
/// datagrams reach the socket again.
#[test]
fn a_fast_path_program_decides_in_the_kernel_and_swaps_hitlessly() {
    use lbp_abi::bpf::{Asm, MapKind, MapSpec, helper, op, reg::*, xdp};
    use lbp_runtime::ring::fastpath::FastPath;
    require_netns!();
    let mut a = Asm::new();
    let (redirect, drop) = (a.label(), a.label());
    a.mov(R6, R1);
    a.ldx(op::W, R2, R6, xdp::DATA);
    a.ldx(op::W, R3, R6, xdp::DATA_END);
    a.mov(R4, R2);
    a.alu_imm(op::ADD, R4, 42);
    a.jmp(op::JGT, R4, R3, redirect);
    a.ldx(op::H, R5, R2, 12);
    a.jmp_imm(op::JNE, R5, 0x0008, redirect); // IPv4, as loaded
    a.ldx(op::B, R5, R2, 23);
    a.jmp_imm(op::JNE, R5, 17, redirect);
    a.ldx(op::H, R5, R2, 36);
    a.jmp_imm(op::JNE, R5, 0x0900, redirect); // port 9, as loaded
    a.st_imm(op::W, FP, -4, 0);
    a.ld_map(R1, 1);
    a.mov(R2, FP);
    a.alu_imm(op::ADD, R2, -4);
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_imm(op::JEQ, R0, 0, drop);
    a.mov_imm(R1, 1);
    a.atomic_add(op::DW, R0, 0, R1);
    a.bind(drop);
    a.ret(xdp::DROP);
    a.bind(redirect);
    a.ldx(op::W, R2, R6, xdp::RX_QUEUE_INDEX);
    a.ld_map(R1, 0);
    a.mov_imm(R3, xdp::PASS);
    a.call(helper::REDIRECT_MAP);
    a.exit();
    let prog = a.finish().unwrap();
    let spec = |name: &str, kind, value_size| MapSpec {
        name: name.into(),
        kind,
        key_size: 4,
        value_size,
        max_entries: 1,
        entries: vec![],
    };
    let maps = [
        spec("xsk", MapKind::Xsk, 4),
        spec("dropped", MapKind::Array, 8),
    ];

    let t = topo("xf");
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let done = AtomicBool::new(false);
    // The peer sends until the 30 swaps are done and 50 pairs more (at most
    // 20 000 pairs): however slow a link update is on this machine, the swaps
    // come while traffic flows.
    let swapped = AtomicUsize::new(0);
    const MAX: u16 = 20_000;
    let (t, done, prog, maps, swapped) = (&t, &done, &prog, &maps, &swapped);
    std::thread::scope(|s| {
        let app = s.spawn(move || {
            t.app.enter();
            // (What `lbp run --xdp-tx auto` asks of an interface.)
            assert_eq!(lbp_runtime::sys::driver("lbp0").expect("ethtool"), "veth");
            let mut frames = Frames::new(2048).unwrap();
            let (mut redirect, mut port) = open_port(&mut frames);
            let fast = FastPath::new("lbp_test_fast", prog.clone(), maps, Default::default())
                .expect("maps");
            let flows = lbp_runtime::ring::fastpath::flows_map().expect("flows map");
            // Two copies of the same program, swapped in turn: a real swap each
            // time.
            let copies = [0, 1].map(|_| fast.load_for(redirect.xsk_map(), &flows).expect("loads"));
            let copy = |i: usize| copies[i % 2].try_clone().expect("dup");
            redirect.install(Some(copy(0))).expect("installed");
            ready_tx.send(()).unwrap();
            let mut burst = [Desc { addr: 0, len: 0 }; 32];
            let mut ports_seen = Vec::new();
            let mut swaps = 0usize;
            let mut seen_at_last_swap = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut uninstalled = false;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = port.recv(&mut frames, &mut burst);
                for &d in &burst[..n] {
                    if let Some(f) = frames.packet(d).get(36..38) {
                        ports_seen.push((u16::from_be_bytes([f[0], f[1]]), uninstalled));
                    }
                    frames.free(d);
                }
                port.flush(&mut frames);
                if !ports_seen.is_empty() && swaps < 30 && !uninstalled {
                    seen_at_last_swap = ports_seen.iter().filter(|x| x.0 == 10).count();
                    redirect.install(Some(copy(swaps + 1))).expect("swapped");
                    swaps += 1;
                    swapped.store(swaps, Ordering::Relaxed);
                }
                if !uninstalled && go_rx.try_recv().is_ok() {
                    redirect.install(None).expect("uninstalled");
                    uninstalled = true;
                    ready_tx.send(()).unwrap();
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            let dropped = bpf::map_lookup_bytes(fast.map("dropped").unwrap(), &0u32.to_ne_bytes())
                .unwrap()
                .unwrap();
            let dropped = u64::from_ne_bytes(dropped.try_into().unwrap());
            (ports_seen, swaps, seen_at_last_swap, dropped)
        });
        let peer = s.spawn(move || {
            t.peer.enter();
            let sock = UdpSocket::bind("198.18.0.2:40001").unwrap();
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let (mut sent, mut after) = (0u16, 0);
            while sent < MAX && after < 50 {
                sock.send_to(&sent.to_be_bytes(), "198.18.0.1:9").unwrap();
                sock.send_to(&sent.to_be_bytes(), "198.18.0.1:10").unwrap();
                sent += 1;
                if swapped.load(Ordering::Relaxed) >= 30 {
                    after += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
            go_tx.send(()).unwrap();
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            for i in 0..10u16 {
                sock.send_to(&i.to_be_bytes(), "198.18.0.1:9").unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, Ordering::Relaxed);
            sent
        });
        let n = peer.join().unwrap();
        let (seen, swaps, seen_at_last_swap, dropped) = app.join().unwrap();
        let count = |p: u16, after: bool| seen.iter().filter(|&&x| x == (p, after)).count();
        eprintln!(
            "fast path: {swaps} swaps (the last after {seen_at_last_swap} datagrams); port 10 {} of {n}, port 9 {} (dropped in XDP {dropped}); after uninstall port 9 {}",
            count(10, false),
            count(9, false),
            count(9, true)
        );
        assert_eq!(swaps, 30, "the programs were swapped");
        assert!(
            seen_at_last_swap < usize::from(n),
            "the last swap came while traffic flowed ({seen_at_last_swap} of {n} in)"
        );
        assert_eq!(
            count(10, false),
            usize::from(n),
            "no datagram lost to a swap"
        );
        assert_eq!(count(9, false), 0, "port 9 decided in the kernel");
        assert_eq!(dropped, u64::from(n), "and counted there");
        assert_eq!(count(9, true), 10, "the redirect program is back");
    });
    assert!(xdp_gone(&t.app, "lbp0"), "program detached on drop");
}
