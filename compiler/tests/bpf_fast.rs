//! The XDP fast path's program (`bpf::Mode::Fast`) in the kernel, on every
//! stock and corpus policy: it passes the verifier, and on the frames of the
//! policy's test packet lines and on mutations of them it drops (`XDP_DROP`)
//! exactly the frames the interpreter drops and that the switching cores do
//! not have to see first (ARP, neighbour discovery, ICMP errors, traffic from
//! or to a NAT back end), answers with `XDP_TX` exactly the segments the
//! interpreter resets that the cores would answer, with the very frame the
//! cores build (`wire::reset_in_place`); every other frame goes to the cores
//! (the XSK redirect, `XDP_PASS` in a test run, where no socket is in the
//! map). Its counters add up. Hostile segments (VLAN tags, IP options,
//! extension headers, wrong lengths and offsets, padding, fragments) are
//! answered exactly as the cores answer them, or left to them untouched. Needs root (loading programs); skipped otherwise.

mod policygen;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use lbp_abi::bpf::fast as slot;
use lbp_abi::{Action, Fields, Mode as SvcMode};
use lbp_compiler::bpf::{self, BpfProgram, Mode};
use lbp_compiler::interp;
use lbp_compiler::ir::{Addr, Program};
use lbp_lab::require_netns;
use lbp_lab::testing::frame::checksum_oracle;
use lbp_runtime::ring::bpf::{XskMap, xdp_test_run, xdp_test_run_on};
use lbp_runtime::ring::fastbal::Sizes;
use lbp_runtime::ring::fastpath::{FastPath, flows_map};
use lbp_runtime::testbed::fast_path_model;
use policygen::{Rng, all_policies, load, seed_of};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The addresses of NAT services' back ends, as the runtime fills the map.
fn nat_backends(prog: &Program) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = prog
        .services
        .iter()
        .filter(|s| matches!(s.mode, SvcMode::Nat { .. }))
        .filter_map(|s| s.pool.and_then(|p| prog.pools.get(p as usize)))
        .flat_map(|p| p.backends.iter())
        .map(|b| match b.addr {
            Addr::V4(a) => IpAddr::from(a.to_be_bytes()),
            Addr::V6(a) => IpAddr::from(a.to_be_bytes()),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What the fast path must do with `frame`: the runtime's model of it, on
/// the interpreter's decision.
fn expected(prog: &Program, frame: &[u8], f: &Fields, nat: &[IpAddr]) -> (u32, Vec<u8>) {
    fast_path_model(frame, f, interp::decide(prog, f).action, nat)
}

/// `p`'s fast path with its interface map filled with `ifaces` (a test run
/// receives on the namespace's loopback, index 1), loaded.
fn loaded(p: &BpfProgram, ifaces: &[(u32, u32)]) -> (FastPath, OwnedFd) {
    let fast = FastPath::new("lbp_fast_test", p.prog.clone(), &p.maps, Sizes::default())
        .expect("the maps");
    fast.set_interfaces(ifaces).expect("the interface map");
    let xsk = XskMap::new(1).expect("an XSK map");
    let flows = flows_map().expect("the flows map");
    let fd = fast
        .load_for(&xsk, &flows)
        .expect("the fast path's program");
    (fast, fd)
}

/// policies/web.lbp, lowered.
fn web() -> Program {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/web.lbp"))
        .unwrap();
    load("web.lbp", &src).1
}

/// The frames of a policy's test packet lines (with their receiving
/// interface), then `mutations` of each with one byte changed.
fn frames(name: &str, src: &str, prog: &Program, mutations: usize) -> Vec<(Vec<u8>, u32)> {
    let (policy, _) = load(name, src);
    let consts = lbp_compiler::testing::consts(&policy);
    let mut out = Vec::new();
    for item in &policy.items {
        let lbp_lang::ast::Item::Test(t) = item else {
            continue;
        };
        for p in &t.packets {
            let (frame, f) = lbp_compiler::testing::packet_fields(p, prog, &consts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((frame, f.in_iface));
        }
    }
    let mut r = Rng::new(seed_of(name));
    let base = out.clone();
    for (frame, iface) in &base {
        for _ in 0..mutations {
            let mut m = frame.clone();
            if m.is_empty() {
                continue;
            }
            let at = r.below(m.len() as u64) as usize;
            m[at] = r.below(256) as u8;
            out.push((m, *iface));
        }
    }
    // The kernel runs no XDP program on a frame shorter than Ethernet's header.
    out.retain(|(f, _)| f.len() >= 14);
    out
}

#[test]
fn the_fast_path_drops_what_the_policy_drops_and_passes_the_rest() {
    require_netns!();
    let (mut policies, mut frames_run, mut dropped_total, mut reset_total) = (0, 0, 0u64, 0u64);
    for (name, src) in all_policies() {
        let (_, prog) = load(&name, &src);
        let p = bpf::compile(&prog, Mode::Fast).unwrap_or_else(|e| panic!("{name}: {e}"));
        let nat = nat_backends(&prog);
        let mut by_iface = Vec::new();
        for iface in 0..prog.interfaces.len().max(1) as u32 {
            let (fast, fd) = loaded(&p, &[(1, iface | slot::IFACE_TX)]);
            fast.set_nat_backends(&nat).unwrap();
            by_iface.push((fast, fd));
        }
        let n = by_iface.len();
        let (mut seen, mut dropped, mut reset) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
        for (frame, iface) in frames(&name, &src, &prog, 20) {
            let i = (iface as usize).min(by_iface.len() - 1);
            let (_, fd) = &by_iface[i];
            let f = lbp_abi::wire::extract(&frame, i as u32);
            let (want, want_frame) = expected(&prog, &frame, &f, &nat);
            let run = xdp_test_run(fd.as_fd(), &frame)
                .unwrap_or_else(|e| panic!("{name}: test run on {} bytes: {e}", frame.len()));
            assert_eq!(
                run.action, want,
                "{name}: frame {frame:02x?} on interface {i}: {f:?}"
            );
            assert_eq!(
                run.frame, want_frame,
                "{name}: the frame as the program left it (verdict {want}), from {frame:02x?}"
            );
            seen[i] += 1;
            dropped[i] += u64::from(want == XDP_DROP);
            reset[i] += u64::from(want == XDP_TX);
            frames_run += 1;
        }
        for (i, (fast, _)) in by_iface.iter().enumerate() {
            let c = fast.counters().unwrap();
            let at = |s: u32| c.get(s as usize).copied().unwrap_or_default().packets;
            assert_eq!(
                at(slot::SEEN),
                seen[i],
                "{name}: frames seen on interface {i}"
            );
            assert_eq!(
                at(slot::ACTIONS + Action::Drop as u32),
                dropped[i],
                "{name}: drops counted"
            );
            assert_eq!(
                at(slot::ACTIONS + Action::Reset as u32),
                reset[i],
                "{name}: resets counted"
            );
            assert_eq!(
                at(slot::SEEN),
                at(slot::TO_CORES) + dropped[i] + reset[i],
                "{name}: every frame dropped, answered or sent on"
            );
            let by_stage: u64 = (0..7).map(|s| at(slot::STAGES + s)).sum();
            assert_eq!(by_stage, dropped[i], "{name}: drops by stage");
            dropped_total += dropped[i];
            reset_total += reset[i];
        }
        policies += 1;
    }
    eprintln!(
        "fast path: {policies} policies, {frames_run} frames, {dropped_total} dropped and {reset_total} answered with a reset in XDP"
    );
    assert!(policies > 20 && frames_run > 1000 && dropped_total > 50 && reset_total > 50);
}

/// A frame of an interface the program was not told about goes to the
/// cores undecided (and is not counted as seen).
#[test]
fn frames_of_unknown_interfaces_go_to_the_cores() {
    require_netns!();
    let p = bpf::compile(&web(), Mode::Fast).unwrap();
    let (fast, fd) = loaded(&p, &[]);
    // Malformed (an IPv4 header cut short): dropped by a program that knew
    // the interface, but this one does not.
    let mut frame = vec![0u8; 20];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    assert_eq!(xdp_test_run(fd.as_fd(), &frame).unwrap().action, XDP_PASS);
    let c = fast.counters().unwrap();
    assert_eq!(c[slot::SEEN as usize].packets, 0);
    assert_eq!(c[slot::TO_CORES as usize].packets, 0, "nor as sent on");
    fast.set_interfaces(&[(1, 0)]).unwrap();
    assert_eq!(xdp_test_run(fd.as_fd(), &frame).unwrap().action, XDP_DROP);

    // An interface whose OS index is beyond the array's slots is found in
    // the hash; one that is in neither goes to the cores.
    let ns = lbp_lab::testing::Netns::new("bpfhi");
    let high = slot::IFACE_SLOTS + 976;
    let added = ns.ip(&[
        "link",
        "add",
        "hi0",
        "index",
        &high.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        "hi1",
    ]);
    assert!(
        added.status.success(),
        "a veth interface of index {high}: {added:?}"
    );
    let on = |ifindex: u32| {
        ns.within(|| xdp_test_run_on(fd.as_fd(), &frame, ifindex))
            .unwrap_or_else(|e| panic!("a test run on interface {ifindex}: {e}"))
            .action
    };
    assert_eq!(on(1), XDP_DROP, "the loopback, in the array");
    assert_eq!(on(high), XDP_PASS, "not named yet");
    fast.set_interfaces(&[(high, 0)]).unwrap();
    assert_eq!(on(high), XDP_DROP, "named, in the hash");
    let c = fast.counters().unwrap();
    assert_eq!(
        c[slot::SEEN as usize].packets,
        3,
        "the frames of known interfaces"
    );
}

/// Without [`slot::IFACE_TX`] on the receiving interface, a segment the
/// policy resets goes to the cores (which send the RST through their rings),
/// untouched; with it, it is answered in XDP.
#[test]
fn resets_are_answered_in_xdp_only_where_the_interface_allows() {
    require_netns!();
    let prog = web();
    let p = bpf::compile(&prog, Mode::Fast).unwrap();
    // A SYN to the virtual IP's port 25: no service, so reset.
    let mut spec = lbp_compiler::packet::PacketSpec::new(
        lbp_compiler::packet::Proto::Tcp,
        "198.18.1.5".parse().unwrap(),
        "198.18.0.10".parse().unwrap(),
    );
    spec.dport = 25;
    spec.tcp_flags = lbp_abi::tcp_flag::SYN;
    let frame = lbp_compiler::packet::build(&spec);
    let f = lbp_abi::wire::extract(&frame, 0);
    assert_eq!(interp::decide(&prog, &f).action, Action::Reset as u32);
    for (flag, want) in [(0, XDP_PASS), (slot::IFACE_TX, XDP_TX)] {
        let (fast, fd) = loaded(&p, &[(1, flag)]);
        let run = xdp_test_run(fd.as_fd(), &frame).unwrap();
        assert_eq!(run.action, want, "flag {flag:#x}");
        let c = fast.counters().unwrap();
        let at = |s: u32| c[s as usize].packets;
        assert_eq!(
            at(slot::ACTIONS + Action::Reset as u32),
            u64::from(want == XDP_TX)
        );
        assert_eq!(at(slot::TO_CORES), u64::from(want == XDP_PASS));
        if want == XDP_PASS {
            assert_eq!(run.frame, frame, "untouched for the cores");
        } else {
            assert_eq!(run.frame.len(), 54, "a bare RST: {:02x?}", run.frame);
        }
    }
}

/// A TCP segment of a hostile shape (`hostile_segment`): the policy resets
/// port 25 and drops port 26.
const HOSTILE_POLICY: &str = "
interface lan { address 198.18.1.1/24, 2001:db8:1::1/64 }
filter {
    tcp.dport == 25 => reset
    tcp.dport == 26 => drop
}
route 0.0.0.0/0 via 198.18.1.254 dev lan
route ::/0 via 2001:db8:1::fffe dev lan
";

/// A segment to port 25 or 26 with 0-3 VLAN tags (802.1Q or 802.1ad), IPv4
/// with 0-40 bytes of options or IPv6 with up to two extension headers, any
/// data offset and flags, 0-199 bytes of payload, 0-59 bytes of trailing
/// padding, length fields up to 40 bytes off, random fragment fields,
/// sequence numbers near 2^32, and in three of ten a few random bytes
/// changed.
fn hostile_segment(r: &mut Rng) -> Vec<u8> {
    let v6 = r.chance(50);
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for _ in 0..r.below(4) {
        let tpid: u16 = if r.chance(50) { 0x8100 } else { 0x88a8 };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x05]);
    }
    f.extend_from_slice(&(if v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
    let doff = if r.chance(80) {
        5 + r.below(11) as u8
    } else {
        r.below(16) as u8
    };
    let mut tcp = vec![1u8; usize::from(doff.max(5)) * 4];
    let dport: u16 = if r.chance(80) { 25 } else { 26 };
    let seq = if r.chance(30) {
        0xffff_ffff - r.below(300) as u32
    } else {
        r.next() as u32
    };
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = doff << 4;
    tcp[13] = r.below(256) as u8;
    tcp[14..20].copy_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    let payload: Vec<u8> = (0..if r.chance(50) { 0 } else { r.below(200) })
        .map(|_| r.below(256) as u8)
        .collect();
    let len_delta = if r.chance(70) {
        0
    } else {
        r.below(80) as i32 - 40
    };
    let frag: u16 = if r.chance(80) {
        if v6 { 0 } else { 0x4000 }
    } else {
        r.below(65536) as u16
    };
    if !v6 {
        let ihl = 20 + 4 * r.below(11) as usize;
        let mut h = vec![1u8; ihl];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[1] = 0;
        let total = (ihl + tcp.len() + payload.len()) as i32 + len_delta;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 57;
        h[9] = 6;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..20].copy_from_slice(&[198, 18, 1, 5, 198, 18, 1, 1]);
        let c = checksum_oracle(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&h);
    } else {
        let kinds = [0u8, 43, 60, 44, 51];
        let mut exts = Vec::new();
        let mut next = 6u8;
        for _ in 0..r.below(3) {
            let k = *r.pick(&kinds).expect("kinds");
            let mut e = vec![0u8; 8];
            e[0] = next;
            if k == 44 {
                e[2..4].copy_from_slice(&frag.to_be_bytes());
            }
            e.extend_from_slice(&exts);
            exts = e;
            next = k;
        }
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        let plen = (exts.len() + tcp.len() + payload.len()) as i32 + len_delta;
        h[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        h[6] = next;
        h[7] = 57;
        h[8..24].copy_from_slice(
            &"2001:db8:1::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h[24..40].copy_from_slice(
            &"2001:db8:1::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        f.extend_from_slice(&h);
        f.extend_from_slice(&exts);
    }
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&payload);
    f.extend(std::iter::repeat_n(
        0xee,
        if r.chance(50) {
            0
        } else {
            r.below(60) as usize
        },
    ));
    if r.chance(30) {
        for _ in 0..=r.below(3) {
            let at = r.below(f.len() as u64) as usize;
            f[at] = r.below(256) as u8;
        }
    }
    f
}

/// Hostile segments through the fast path: each one it answers is answered
/// with the very frame the cores build (`wire::reset_in_place`), each one the
/// cores would not answer goes to them untouched, and the drops are the
/// interpreter's.
#[test]
fn hostile_segments_are_reset_in_xdp_as_the_cores_reset_them() {
    require_netns!();
    let (_, prog) = load("hostile", HOSTILE_POLICY);
    let p = bpf::compile(&prog, Mode::Fast).unwrap();
    let (_fast, fd) = loaded(&p, &[(1, slot::IFACE_TX)]);
    let mut r = Rng::new(seed_of("hostile segments"));
    let mut seen = [0usize; 4];
    for _ in 0..30_000 {
        let frame = hostile_segment(&mut r);
        let f = lbp_abi::wire::extract(&frame, 0);
        let (want, want_frame) = expected(&prog, &frame, &f, &[]);
        let run = xdp_test_run(fd.as_fd(), &frame).unwrap();
        assert_eq!(
            (run.action, &run.frame),
            (want, &want_frame),
            "from {frame:02x?}: {f:?}"
        );
        seen[want as usize] += 1;
    }
    eprintln!(
        "hostile segments: {} reset in XDP, {} dropped, {} to the cores",
        seen[XDP_TX as usize], seen[XDP_DROP as usize], seen[XDP_PASS as usize]
    );
    assert!(seen[XDP_TX as usize] > 3_000 && seen[XDP_PASS as usize] > 1_000);
}
