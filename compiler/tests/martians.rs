//! One list of martian destinations: `lbp check`'s (which refuses them as back
//! ends and virtual IPs) is the ABI's (which routing refuses), address for
//! address and in the same words, on the boundaries of every prefix and on
//! random addresses of both families.

use lbp_abi::martian;
use lbp_lang::check::martian_kind;
use proptest::prelude::*;
use std::net::IpAddr;

const CONNECTED: [(&str, u32, &str); 5] = [
    ("198.18.0.1", 24, "lan"),
    ("198.18.9.1", 29, "mgmt"),
    ("198.18.30.0", 31, "p2p"),
    ("198.18.40.1", 32, "host"),
    ("2001:db8::1", 64, "lan"),
];

fn same(a: IpAddr) {
    let lang: Vec<(IpAddr, u32, &str)> = CONNECTED
        .iter()
        .map(|&(x, l, n)| (x.parse().unwrap(), l, n))
        .collect();
    let abi = lang.iter().map(|&(x, l, _)| (x, l as u8));
    assert_eq!(
        martian_kind(a, &lang),
        martian::martian(a, abi).map(martian::Kind::describe),
        "{a}"
    );
}

#[test]
fn the_checker_and_routing_agree_on_every_boundary() {
    let mut v4: Vec<u32> = Vec::new();
    for &(net, len, _) in &martian::V4 {
        let last = net | (u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
        v4.extend([net, net.wrapping_sub(1), last, last.wrapping_add(1)]);
    }
    for b in ["198.18.0.255", "198.18.9.7", "198.18.30.1", "198.18.40.1"] {
        let b: u32 = b.parse::<std::net::Ipv4Addr>().unwrap().into();
        v4.extend([b.wrapping_sub(1), b, b.wrapping_add(1)]);
    }
    for a in v4 {
        same(IpAddr::from(std::net::Ipv4Addr::from(a)));
    }
    for &(net, len, _) in &martian::V6 {
        let last = net | (u128::MAX.checked_shr(u32::from(len)).unwrap_or(0));
        for a in [net, net.wrapping_sub(1), last, last.wrapping_add(1)] {
            same(IpAddr::from(std::net::Ipv6Addr::from(a)));
        }
    }
}

proptest! {
    #[test]
    fn the_checker_and_routing_agree_on_random_addresses(a: u32, b: u128, top in 0u8..=255) {
        same(IpAddr::from(std::net::Ipv4Addr::from(a)));
        // Often in the interesting first byte's neighbourhood.
        let a2 = (u32::from(top) << 24) | (a & 0x00ff_ffff);
        same(IpAddr::from(std::net::Ipv4Addr::from(a2)));
        same(IpAddr::from(std::net::Ipv6Addr::from(b)));
        let b2 = (u128::from(top) << 120) | (b >> 8);
        same(IpAddr::from(std::net::Ipv6Addr::from(b2)));
    }
}
