//! The switching core's applications end to end (`tests/e2e/apps.lbp`): UDP
//! echo and ICMP / ICMPv6 echo sent from the client namespace through the
//! appliance's interface to `app echo` and `app icmp`, over IPv4 and IPv6, for
//! a virtual IP and the appliance's own address, the answers checked by real
//! sockets. The kernel of the appliance namespace never sees the interfaces'
//! frames (`topology.rs`); what reaches it through the TAP finds no server on
//! port 7 and its echo answers switched off (`icmp_echo_ignore_all`), so only
//! the core can answer; a UDP port no rule hands to an application stays
//! unanswered, which shows the probes can fail.
//!
//! Then hostile frames aimed at the applications (truncated, oversized, bad
//! IP, UDP and ICMP checksums, fragments, echo loops): lbp, a debug build whose
//! switching core asserts its frame books after every burst (a frame lost or
//! made without account panics the core, and `lbp run` then exits non-zero),
//! must go on answering and exit 0.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::e2e::{Report, csum, eth, ip6, pinged, send_frames, set_ip4_csum, setup, udp_echo};
use crate::topology::{APP4, APP6, CLIENT4, CLIENT6, Lbp, NAT4, NAT6, udp_ask};

const POLICY: &str = "tests/e2e/apps.lbp";

/// An IPv4 UDP datagram from the client to `dst:dport`, checksums right.
fn udp4(dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    let len = 28 + data.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip.extend_from_slice(&CLIENT4.octets());
    ip.extend_from_slice(&dst);
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = csum(&pseudo);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    set_ip4_csum(&mut f);
    f
}

/// An IPv4 ICMP echo request from the client to `dst`, checksums right.
fn ping4(dst: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    let mut ip = vec![0x45, 0, 0, 0, 0, 2, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((28 + data.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&CLIENT4.octets());
    ip.extend_from_slice(&dst);
    let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(data);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&m);
    set_ip4_csum(&mut f);
    f
}

/// An ICMPv6 echo request from the client to `dst`, its checksum right.
fn ping6(dst: std::net::Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(data);
    let mut pseudo = CLIENT6.octets().to_vec();
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&m);
    let c = csum(&pseudo);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip6(dst, 58, &m)
}

/// Frames the applications must refuse without losing one: each a damaged
/// copy of a request they would answer.
fn hostile() -> Vec<Vec<u8>> {
    let vip = NAT4.octets();
    let me = APP4.octets();
    let good_udp = udp4(vip, 40000, 7, b"hostile");
    let good_ping = ping4(me, b"hostile");
    let good_ping6 = ping6(APP6, b"hostile");
    let mut v = Vec::new();
    // Truncated: cut in the UDP / ICMP header and data (the IP length says
    // more than is there).
    for cut in [34, 38, 41, 45] {
        v.push(good_udp[..cut].to_vec());
        v.push(good_ping[..cut].to_vec());
    }
    v.push(good_ping6[..60].to_vec());
    // Oversized: the frame longer than the IP packet says (1 500 bytes of
    // trailing junk), and the IP length longer than the frame.
    let mut long = good_udp.clone();
    long.resize(1514, 0xee);
    v.push(long);
    let mut claims = good_udp.clone();
    claims[16..18].copy_from_slice(&1400u16.to_be_bytes());
    set_ip4_csum(&mut claims);
    v.push(claims);
    // Bad checksums: IP header, UDP, ICMP, ICMPv6 (one bit or byte flipped).
    let flip = |f: &[u8], at: usize, bits: u8| {
        let mut f = f.to_vec();
        f[at] ^= bits;
        f
    };
    v.push(flip(&good_udp, 24, 0xff));
    v.push(flip(&good_udp, 40, 0x01));
    v.push(flip(&good_ping, 36, 0x01));
    v.push(flip(&good_ping6, 56, 0x01));
    // A fragment (more fragments set), an echo from port 7 (a loop), an IPv6
    // datagram without a UDP checksum.
    let mut f = good_udp.clone();
    f[20] = 0x20;
    set_ip4_csum(&mut f);
    v.push(f);
    v.push(udp4(vip, 7, 7, b"loop"));
    let mut u6 = vec![0x9c, 0x40, 0, 7, 0, 12, 0, 0];
    u6.extend_from_slice(b"none");
    v.push(ip6(NAT6, 17, &u6));
    v
}

/// No answer to a UDP datagram for `to` within a second.
fn unanswered(c: &crate::topology::Netns, to: SocketAddr) -> Result<(), String> {
    match c.within(move || udp_ask(to, Duration::from_secs(1))) {
        Ok(body) => Err(format!("UDP {to} was answered {body:?}")),
        Err(_) => Ok(()),
    }
}

fn suite(rings: &str) {
    let test = format!("apps::applications_answer_{rings}");
    let Some((_serial, topo)) = setup(&test, &format!("p{}", &rings[..1])) else {
        return;
    };
    // The kernel behind the TAP answers no ping: an answer is the core's.
    topo.app.sysctl("net.ipv4.icmp_echo_ignore_all=1");
    topo.app.sysctl("net.ipv6.icmp.echo_ignore_all=1");
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
            "--stats-interval",
            "0",
        ],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let c = &topo.client;
    let mut r = Report::default();
    let echo = |ip: IpAddr| udp_echo(c, SocketAddr::new(ip, 7), Some("who?"));
    let all = |r: &mut Report, when: &str| {
        r.check(&format!("{when}UDP echo IPv4 VIP"), echo(NAT4.into()));
        r.check(&format!("{when}UDP echo IPv4 own"), echo(APP4.into()));
        r.check(&format!("{when}UDP echo IPv6 VIP"), echo(NAT6.into()));
        r.check(&format!("{when}UDP echo IPv6 own"), echo(APP6.into()));
        r.check(&format!("{when}ping IPv4 VIP"), pinged(c, NAT4.into()));
        r.check(&format!("{when}ping IPv4 own"), pinged(c, APP4.into()));
        r.check(&format!("{when}ping IPv6 VIP"), pinged(c, NAT6.into()));
        r.check(&format!("{when}ping IPv6 own"), pinged(c, APP6.into()));
    };
    all(&mut r, "");
    r.check(
        "UDP to a port of no application is not answered",
        unanswered(c, SocketAddr::new(NAT4.into(), 8)),
    );
    r.check(
        "hostile frames to the applications",
        send_frames(c, hostile).and_then(|n| {
            eprintln!("apps: sent {n} hostile frames");
            std::thread::sleep(Duration::from_millis(300));
            if lbp.alive() {
                Ok(())
            } else {
                Err("lbp is no longer running".into())
            }
        }),
    );
    all(&mut r, "after the hostile frames: ");
    r.check(
        "exits 0 on SIGTERM (the core's frame books balanced every burst)",
        lbp.stop_cleanly(),
    );
    let context = format!("lbp's stderr:\n{}\n{}", lbp.stderr_text(), topo.dump());
    drop(lbp);
    drop(topo);
    r.finish(&context);
}

#[test]
fn applications_answer_xdp() {
    suite("xdp");
}

#[test]
fn applications_answer_uring() {
    suite("uring");
}
