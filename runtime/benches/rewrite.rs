//! The rewrite path of a switching core, per packet: the TTL decremented and
//! the NAT rewrite of a balanced packet, on a frame whose fields `extract`
//! already found. Measured two ways in the same run:
//!
//! - `offsets`: the functions that take `(frame, l3_off, l4_off)` and check
//!   the headers again each (the baseline: how the cores did it before
//!   `wire::Packet`);
//! - `view`: `wire::Packet::new` from the fields, checked once, then both
//!   operations on it (what the cores do).
//!
//! `cargo bench -p lbp-runtime --bench rewrite` prints ns/packet for IPv4 TCP,
//! IPv4 UDP and IPv6 TCP behind a destination-options header, and the ratio.
//! Without `--bench` (as `cargo test --all-targets` runs it) it only checks
//! that both ways write the same bytes.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use lbp_runtime::wire::{self, Packet, Side};

const ETH: [u8; 14] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0, 0];

fn v4(proto: u8) -> Vec<u8> {
    let mut f = ETH.to_vec();
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = (20 + l4 + 32) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[198, 18, 5, 7, 198, 19, 100, 1]);
    f.extend_from_slice(&[0xc3, 0x50, 0, 80]);
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0, 40, 0x12, 0x34]);
    }
    f.extend_from_slice(&[0xab; 32]);
    f
}

fn v6_with_ext() -> Vec<u8> {
    let mut f = ETH.to_vec();
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let payload: u16 = 8 + 20 + 32;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[60, 64]); // destination options, hop limit
    for last in [5u8, 7] {
        f.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
        ]);
    }
    f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // options header, PadN
    f.extend_from_slice(&[
        0xc3, 0x50, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&[0xab; 32]);
    f
}

/// The baseline: each function checks the headers again.
fn offsets(frame: &mut [u8], l3: usize, l4: usize, to: IpAddr) -> bool {
    wire::decrement_ttl(frame, l3) && wire::rewrite(frame, l3, l4, Side::Dst, to, 8080)
}

/// The cores' way: one check from the fields.
fn view(frame: &mut [u8], f: &lbp_abi::Fields, to: IpAddr) -> bool {
    let len = frame.len();
    Packet::new(frame, len, f)
        .is_some_and(|mut p| p.decrement_ttl() && p.rewrite(Side::Dst, to, 8080))
}

/// Best of `runs` passes of `n` rewrites, in ns per packet. Each pass starts
/// from the original bytes (the TTL would run out otherwise).
fn measure(frame: &[u8], runs: usize, n: usize, mut op: impl FnMut(&mut [u8]) -> bool) -> f64 {
    let mut best = f64::INFINITY;
    let mut buf = frame.to_vec();
    for _ in 0..runs {
        let t = Instant::now();
        for i in 0..n {
            if i % 32 == 0 {
                buf.copy_from_slice(frame);
            }
            black_box(op(black_box(&mut buf)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let cases = [
        ("IPv4 TCP", v4(6), "198.19.0.11"),
        ("IPv4 UDP", v4(17), "198.19.0.11"),
        ("IPv6 TCP + dest. options", v6_with_ext(), "2001:db8::11"),
    ];
    for (name, frame, to) in &cases {
        let to: IpAddr = to.parse().unwrap();
        let f = lbp_abi::wire::extract(frame, 0);
        assert_eq!(
            f.present & lbp_abi::present::MALFORMED,
            0,
            "{name}: a well-formed frame"
        );
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        let (mut a, mut b) = (frame.clone(), frame.clone());
        assert!(offsets(&mut a, l3, l4, to), "{name}: rewritten");
        assert!(view(&mut b, &f, to), "{name}: rewritten");
        assert_eq!(a, b, "{name}: both ways write the same bytes");
    }
    if !bench {
        println!(
            "rewrite bench: both ways agree on {} frames (run `cargo bench -p lbp-runtime --bench rewrite` to measure)",
            cases.len()
        );
        return;
    }
    println!("TTL decrement + NAT rewrite per packet, best of 30 passes of 200 000:");
    for (name, frame, to) in &cases {
        let to: IpAddr = to.parse().unwrap();
        let f = lbp_abi::wire::extract(frame, 0);
        let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
        let base = measure(frame, 30, 200_000, |b| offsets(b, l3, l4, to));
        let ours = measure(frame, 30, 200_000, |b| view(b, &f, to));
        println!(
            "  {name:<26} offsets {base:6.2} ns   view {ours:6.2} ns   view/offsets {:.2} (goal <= 1.00)",
            ours / base
        );
    }
}
