//! Maglev disruption: how much of a service's table moves when one of its N back
//! ends leaves (ideal: exactly the leaving back end's entries, 1/N of the table).
//!
//! cargo run --release -p lbp-runtime --example maglev_disruption [-- N...]
//!
//! For each N (2, 3, 10 and 100 by default) it builds the table the appliance
//! builds for N back ends of weight 1 (keyed by address and port as
//! `generation::backend_key` keys them, default size), then, for every back
//! end in turn, the table without it, and compares the two entry by entry. It
//! prints, averaged over which back end leaves (and the worst case): the share
//! of the table that moved, the share that belonged to the one that left, and
//! the share that moved although its back end stayed (ideal 0).

use lbp_runtime::balance::{MAGLEV_DEFAULT_SIZE, Maglev};
use std::net::{IpAddr, Ipv4Addr};

/// Back end `i` of a pool: 198.19.x.y (addresses of the benchmark networks).
fn key(i: usize) -> u64 {
    let o = 11 + i as u32;
    let a = Ipv4Addr::new(198, 19, (o >> 8) as u8, o as u8);
    lbp_runtime::generation::backend_key(IpAddr::V4(a), None)
}

/// Each table entry's back end key (the tables' entries, read through
/// `lookup` of hashes 0..size, since an entry is `hash % size`).
fn entries(m: &Maglev, keys: &[(u64, u32)]) -> Vec<u64> {
    (0..m.size() as u64)
        .map(|h| m.lookup(h).map_or(0, |i| keys[i as usize].0))
        .collect()
}

fn main() -> Result<(), String> {
    let ns: Vec<usize> = {
        let given: Result<Vec<usize>, _> = std::env::args().skip(1).map(|a| a.parse()).collect();
        let given = given.map_err(|e| format!("usage: maglev_disruption [N...]: {e}"))?;
        if given.is_empty() {
            vec![2, 3, 10, 100]
        } else {
            given
        }
    };
    println!(
        "{:>6} {:>8} {:>9} {:>9} {:>15} {:>17} {:>8}",
        "N", "entries", "moved %", "1/N %", "its own share %", "moved needlessly %", "(worst)"
    );
    for n in ns {
        if n < 2 {
            return Err("N must be at least 2".into());
        }
        let all: Vec<(u64, u32)> = (0..n).map(|i| (key(i), 1)).collect();
        let before = Maglev::new(&all, MAGLEV_DEFAULT_SIZE);
        let old = entries(&before, &all);
        let size = old.len() as f64;
        let (mut moved_sum, mut own_sum, mut extra_sum, mut extra_max) = (0.0, 0.0, 0.0, 0.0f64);
        for gone in 0..n {
            let rest: Vec<(u64, u32)> = all
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != gone)
                .map(|(_, &b)| b)
                .collect();
            let after = Maglev::new(&rest, MAGLEV_DEFAULT_SIZE);
            if after.size() != before.size() {
                return Err(format!(
                    "table sizes differ: {} {}",
                    before.size(),
                    after.size()
                ));
            }
            let new = entries(&after, &rest);
            let (mut moved, mut own) = (0usize, 0usize);
            for (o, w) in old.iter().zip(&new) {
                if *o == all[gone].0 {
                    own += 1;
                }
                if o != w {
                    moved += 1;
                }
            }
            let extra = (moved - own) as f64 / size;
            moved_sum += moved as f64 / size;
            own_sum += own as f64 / size;
            extra_sum += extra;
            extra_max = extra_max.max(extra);
        }
        let k = n as f64;
        println!(
            "{n:>6} {:>8} {:>9.2} {:>9.2} {:>15.2} {:>17.3} {:>8.3}",
            before.size(),
            100.0 * moved_sum / k,
            100.0 / k,
            100.0 * own_sum / k,
            100.0 * extra_sum / k,
            100.0 * extra_max
        );
    }
    Ok(())
}
