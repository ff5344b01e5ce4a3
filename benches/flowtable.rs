//! The XDP fast path's cost per frame when every frame is a new flow,
//! against the same program's cost for one flow, in one run (issue 14: new
//! flows balanced at a rate near one flow's). The program is the one `lbp
//! run --datapath xdp` installs, with the tables the runtime publishes,
//! run by the kernel on frames from user space (`BPF_PROG_TEST_RUN`), which
//! reports the program's own time: no generator, no veth, no other CPU, so
//! the figures drift far less than `benches/dataplane.sh`'s.
//!
//! Rows: a UDP flow of a DSR service and of a NAT service (a reply record
//! too), one flow (the same frame again and again: its record in cache) and
//! new flows (300 000 distinct frames after 300 000 others filled the
//! table: every frame a miss and a record that takes the place of another,
//! as under `benches/dataplane.sh --flows`), and a program that only
//! returns `XDP_TX` for the kernel's own cost of a run. A last row runs DSR
//! new flows that all fall in 512 buckets of the table (288 KiB, in cache):
//! the same work without the table's cache and TLB misses, so the difference
//! tells how much of a new flow's cost is memory.
//!
//! Run as root: `cargo bench --bench flowtable`. `LBP_FLOWTABLE_FLOWS`
//! (300 000) sets the number of new flows. Without root it prints
//! `SKIPPED` and exits 0. Nothing is sent anywhere: the kernel runs the
//! program on a copy of each frame and returns it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::sync::Arc;

use lbp::testbed::Shared;
use lbp_abi::bpf::{Asm, fast, xdp};
use lbp_compiler::bpf::{self, Mode};
use lbp_runtime::generation::Generation;
use lbp_runtime::neigh::{NeighAddr, NeighTable};
use lbp_runtime::ring::bpf::{XskMap, load_xdp, xdp_test_run_repeat};
use lbp_runtime::ring::fastbal::{Out, Sizes, flow_key, flow_seed, tables};
use lbp_runtime::ring::fastpath::{FastPath, flows_map};
use lbp_runtime::testbed::neighbour_mac;

const POLICY: &str = r#"
interface client { address 198.18.0.1/16 }
interface servers { address 198.19.0.1/24 }
pool web {
    backend 198.19.0.11
    backend 198.19.0.12
    backend 198.19.0.13
}
service dsr {
    vip 198.19.100.1 udp port 53
    pool web
    balance maglev
    mode dsr
}
service nat {
    vip 198.19.100.2 udp port 53
    pool web
    balance maglev
    mode nat
}
"#;

/// A UDP frame from `src:sport` to `dst:53`.
fn frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0x5e, 0, 0, 0x10, 0x02, 0, 0x5e, 0, 0, 0x99, 0x08, 0x00,
    ];
    let mut ip = vec![0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum = 0u32;
    for w in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&16u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(b"lbp-flow");
    f.resize(60, 0);
    f
}

/// Client `i`'s address and port: 198.18.0.0/16 by `i / 50 000`, ports
/// from 10 000.
fn client(i: u32) -> (Ipv4Addr, u16) {
    let host = i / 50_000;
    let src = Ipv4Addr::new(198, 18, 1 + (host >> 8) as u8, host as u8);
    (src, 10_000 + (i % 50_000) as u16)
}

/// Client `i`'s frame.
fn client_frame(i: u32, vip: Ipv4Addr) -> Vec<u8> {
    let (src, port) = client(i);
    frame(src, vip, port)
}

/// Buckets of the in-cache row: 512 buckets of 576 bytes, 288 KiB (in L2,
/// and 72 pages: within the first-level data TLB's reach).
const HOT_BUCKETS: u32 = 512;

/// `n` client frames to `vip` (from client 1 on) whose flows fall in the
/// table's first [`HOT_BUCKETS`] buckets under its hash key `seed`: new flows
/// whose buckets stay in cache, so that their cost is the program's work
/// without the table's cache and TLB misses.
fn hot_frames(seed: u64, vip: Ipv4Addr, n: usize) -> Vec<Vec<u8>> {
    let mut f = lbp_abi::Fields {
        ip_dst: vip.to_ipv6_mapped().octets(),
        dport: 53,
        ip_version: 4,
        ip_proto: 17,
        ..Default::default()
    };
    let mut v = Vec::with_capacity(n);
    // About one client in 64 qualifies; bounded.
    for i in 1..(n as u32).saturating_mul(256) {
        let (src, port) = client(i);
        f.ip_src = src.to_ipv6_mapped().octets();
        f.sport = port;
        if fast::flow_place(fast::flow_hash(seed, &flow_key(&f))).0 < HOT_BUCKETS {
            v.push(client_frame(i, vip));
            if v.len() == n {
                break;
            }
        }
    }
    v
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("flowtable: SKIPPED: loading XDP programs needs root");
        return;
    }
    let n: u32 = std::env::var("LBP_FLOWTABLE_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);

    let a = lbp_lang::analyze(POLICY);
    let prog = lbp_compiler::lower::lower(&a.policy).expect("lowers");
    let mut app = lbp::appliance::appliance(&prog, POLICY);
    for (i, iface) in app.interfaces.iter_mut().enumerate() {
        iface.mac = [0x02, 0, 0x5e, 0, 0, 0x10 + i as u8];
    }
    let p = bpf::compile(&prog, Mode::Fast).expect("compiles to eBPF");
    let sizes = Sizes::of(&app);
    let mut fast = FastPath::new("lbp_flowtable", p.prog.clone(), &p.maps, sizes).unwrap();
    fast.set_interfaces(&[(1, fast::IFACE_TX)]).unwrap();
    let jit = lbp_compiler::jit::compile(&prog).expect("the JIT compiles it");
    let g = Generation::new(Arc::new(Shared(Arc::new(jit))), app.clone());
    fast.set_nat_backends(&g.nat_backends).unwrap();
    let neigh = NeighTable::new(64);
    for b in ["198.19.0.11", "198.19.0.12", "198.19.0.13"] {
        let a: IpAddr = b.parse().unwrap();
        neigh.set_permanent(&NeighAddr::from(a), neighbour_mac(a));
    }
    let outs = vec![
        Some(Out {
            ifindex: 1,
            tx: true,
        }),
        Some(Out {
            ifindex: 7,
            tx: true,
        }),
    ];
    fast.publish_balance(&tables(&g, &neigh, &outs, 0, &sizes))
        .unwrap();
    let xsk = XskMap::new(1).unwrap();

    // The kernel's own cost of a run: a program that returns XDP_TX.
    let mut t = Asm::new();
    t.ret(xdp::TX);
    let trivial = load_xdp("lbp_flowtable_tx", &t.finish().unwrap().insns).unwrap();
    // Each frame run once per call: a run rewrites the frame in place (a
    // repeated run would see its own output), and one flow's calls then
    // cost what new flows' calls cost, but for the flow table.
    let runs = |fd: std::os::fd::BorrowedFd<'_>, frames: &mut dyn Iterator<Item = &Vec<u8>>| {
        let (mut total, mut count) = (0u64, 0u64);
        for f in frames {
            let (r, ns) = xdp_test_run_repeat(fd, f, 1).unwrap();
            assert!(
                r.action == xdp::TX as u32 || r.action == xdp::REDIRECT as u32,
                "the frame not balanced in XDP: action {}",
                r.action
            );
            total += u64::from(ns);
            count += 1;
        }
        total as f64 / count.max(1) as f64
    };
    let vip_dsr = Ipv4Addr::new(198, 19, 100, 1);
    let first = client_frame(0, vip_dsr);
    let base = runs(
        trivial.as_fd(),
        &mut std::iter::repeat_n(&first, n as usize),
    );
    println!("flowtable: {n} new flows per row, after as many that filled the table");
    println!(
        "{:<34} {:>8.1} ns per frame",
        "XDP_TX alone (the kernel's run)", base
    );

    for (name, vip) in [("DSR", vip_dsr), ("NAT", Ipv4Addr::new(198, 19, 100, 2))] {
        // A fresh table per service.
        let flows = flows_map().unwrap();
        let fd = fast.load_for(&xsk, &flows).expect("the verifier takes it");
        let one = client_frame(0, vip);
        let one_flow = runs(fd.as_fd(), &mut std::iter::repeat_n(&one, n as usize));
        let frames: Vec<Vec<u8>> = (1..=2 * n).map(|i| client_frame(i, vip)).collect();
        runs(fd.as_fd(), &mut frames[..n as usize].iter());
        let new_flows = runs(fd.as_fd(), &mut frames[n as usize..].iter());
        println!(
            "{:<34} {:>8.1} ns per frame",
            format!("{name}, one flow"),
            one_flow
        );
        println!(
            "{:<34} {:>8.1} ns per frame   new / one flow {:.2}, program's own (less XDP_TX alone) {:.2}",
            format!("{name}, new flows"),
            new_flows,
            new_flows / one_flow,
            (new_flows - base) / (one_flow - base).max(1.0)
        );
        if name != "DSR" {
            continue;
        }
        // The same work in buckets that stay in cache: what is left of a new
        // flow's extra cost is the program's, the rest the table's misses.
        let flows = flows_map().unwrap();
        let fd = fast.load_for(&xsk, &flows).expect("the verifier takes it");
        let seed = flow_seed(&flows).expect("the flows map's hash key");
        let hot = hot_frames(seed, vip, 2 * n as usize);
        assert_eq!(hot.len(), 2 * n as usize, "enough flows of the hot buckets");
        runs(fd.as_fd(), &mut hot[..n as usize].iter());
        let hot_flows = runs(fd.as_fd(), &mut hot[n as usize..].iter());
        println!(
            "{:<34} {:>8.1} ns per frame   new / one flow {:.2}; the table's misses {:.0} ns of a new flow's {:.0} extra",
            format!("{name}, new flows, {HOT_BUCKETS} buckets"),
            hot_flows,
            hot_flows / one_flow,
            new_flows - hot_flows,
            new_flows - one_flow
        );
    }
}
