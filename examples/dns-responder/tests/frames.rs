//! The responder on a switching core, on crafted frames: the policy of the
//! example (`dns.lbp`) and a wider one, compiled and run on lbp's test bed
//! (one core on in-memory rings, its frame books checked after every frame),
//! with the responder registered as `lbp run` would have it. Good queries over
//! IPv4 and IPv6 are answered out of the interface they came in by, turned
//! around, with right IP and UDP checksums; every hostile frame is freed
//! without an answer or answered FORMERR, as the crate's documentation says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lbp::app::Registry;
use lbp::app::checksum::{checksum, fold, pseudo_v4, pseudo_v6, sum};
use lbp::testbed::{CoreTester, Fate};
use lbp_dns_responder::{Config, Dns, rcode, rtype};

const POLICY: &str = include_str!("../dns.lbp");
/// Every UDP datagram to port 53 goes to the responder, whatever its
/// destination: the responder's own checks decide.
const WIDE: &str = "interface client { address 198.18.0.1/24, 2001:db8::1/64 }\n\
                    filter {\n    udp.dport == 53 => app dns\n}\n";

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const V4: (&str, &str) = ("198.18.0.2", "198.18.0.1");
const V6: (&str, &str) = ("2001:db8::2", "2001:db8::1");

fn registry() -> Registry {
    let config = Config::new(
        "www.example.test",
        vec![Ipv4Addr::new(198, 18, 0, 10)],
        vec!["2001:db8::10".parse().unwrap()],
        300,
    )
    .unwrap();
    Registry::builtin().with(move || Box::new(Dns::new(config.clone())))
}

fn core(policy: &str) -> CoreTester {
    CoreTester::compile(policy, &registry()).expect("the policy compiles")
}

/// A DNS query for `name` of type `qtype`, ID 0xbeef.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 0, 0, 1]);
    q[12 + name.len() + 2..12 + name.len() + 4].copy_from_slice(&qtype.to_be_bytes());
    q
}

/// An Ethernet frame from the client: IPv4 or IPv6 (by `src`), UDP from port
/// 40000 to 53 carrying `data`, checksums right.
fn frame(src: &str, dst: &str, data: &[u8]) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&CLIENT_MAC);
    let ulen = 8 + data.len();
    let mut udp = vec![0x9c, 0x40, 0, 53];
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&((20 + ulen) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let c = !fold(sum(pseudo_v4(s, d, 17, ulen as u16), &udp));
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(ulen as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = !fold(sum(pseudo_v6(&s, &d, 17, ulen as u32), &udp));
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        _ => panic!("one family"),
    }
    f.extend_from_slice(&udp);
    f
}

/// What the core sent back for `f`, if anything (and nothing else); the
/// frame went to the responder.
fn send(core: &mut CoreTester, f: &[u8]) -> Option<Vec<u8>> {
    let (sent, app) = send_any(core, f);
    assert_eq!(app, Some("dns"));
    sent
}

/// What the core sent back for `f`, if anything, and the application it
/// handed the frame to, if any (the core drops a malformed frame itself).
fn send_any(core: &mut CoreTester, f: &[u8]) -> (Option<Vec<u8>>, Option<&'static str>) {
    let o = core.testbed().send(f, 0);
    let sent: Vec<Vec<u8>> = o
        .fates
        .iter()
        .filter_map(|fate| match fate {
            Fate::Sent { iface: 0, frame } => Some(frame.clone()),
            _ => None,
        })
        .collect();
    assert!(sent.len() <= 1, "{:?}", o.fates);
    (sent.into_iter().next(), o.app_name)
}

/// An answer checked as a whole packet (Ethernet back to the client, IP
/// addresses and UDP ports turned around, lengths and both checksums right);
/// its DNS message.
fn check(answer: &[u8], request: &[u8]) -> Vec<u8> {
    assert_eq!(&answer[0..6], &CLIENT_MAC, "back to the client's MAC");
    assert_eq!(&answer[12..14], &request[12..14]);
    let v6 = answer[12] == 0x86;
    let (l4, ulen) = if v6 {
        assert_eq!(
            &answer[22..38],
            &request[38..54],
            "source is the old destination"
        );
        assert_eq!(&answer[38..54], &request[22..38]);
        assert_eq!(answer[21], 64, "hop limit");
        let payload = usize::from(u16::from_be_bytes([answer[18], answer[19]]));
        assert_eq!(54 + payload, answer.len());
        let s = Ipv6Addr::from(<[u8; 16]>::try_from(&answer[22..38]).unwrap());
        let d = Ipv6Addr::from(<[u8; 16]>::try_from(&answer[38..54]).unwrap());
        let u = &answer[54..];
        assert_eq!(fold(sum(pseudo_v6(&s, &d, 17, u.len() as u32), u)), 0xffff);
        (54, payload)
    } else {
        assert_eq!(checksum(&answer[14..34]), 0, "IPv4 header checksum");
        assert_eq!(&answer[26..30], &request[30..34]);
        assert_eq!(&answer[30..34], &request[26..30]);
        assert_eq!(answer[22], 64, "TTL");
        let total = usize::from(u16::from_be_bytes([answer[16], answer[17]]));
        assert_eq!(14 + total, answer.len());
        let s = Ipv4Addr::from(<[u8; 4]>::try_from(&answer[26..30]).unwrap());
        let d = Ipv4Addr::from(<[u8; 4]>::try_from(&answer[30..34]).unwrap());
        let u = &answer[34..];
        assert_eq!(fold(sum(pseudo_v4(s, d, 17, u.len() as u16), u)), 0xffff);
        (34, total - 20)
    };
    let u = &answer[l4..];
    assert_eq!(&u[0..2], &[0, 53], "from port 53");
    assert_eq!(&u[2..4], &[0x9c, 0x40], "to the client's port");
    assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), ulen);
    u[8..].to_vec()
}

#[test]
fn queries_are_answered_over_both_families() {
    let mut c = core(POLICY);
    for (src, dst) in [V4, V6] {
        for (qtype, want) in [
            (rtype::A, &[198, 18, 0, 10][..]),
            (
                rtype::AAAA,
                &"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets()[..],
            ),
        ] {
            let q = query("www.example.test", qtype);
            let f = frame(src, dst, &q);
            let a = send(&mut c, &f).unwrap_or_else(|| panic!("{src}: no answer"));
            let dns = check(&a, &f);
            assert_eq!(&dns[0..2], &[0xbe, 0xef]);
            assert_eq!(dns[3] & 0x0f, rcode::NOERROR);
            assert_eq!(&dns[6..8], &[0, 1], "one answer");
            assert_eq!(&dns[dns.len() - want.len()..], want);
            assert_eq!(&dns[12..q.len()], &q[12..], "the question");
        }
        for (name, want) in [
            ("no.www.example.test", rcode::NXDOMAIN),
            ("example.org", rcode::REFUSED),
        ] {
            let f = frame(src, dst, &query(name, rtype::A));
            let dns = check(&send(&mut c, &f).expect("an answer"), &f);
            assert_eq!(dns[3] & 0x0f, want, "{name}");
        }
    }
}

#[test]
fn hostile_frames_are_freed_or_formerr() {
    let mut c = core(WIDE);
    let good4 = frame(V4.0, V4.1, &query("www.example.test", rtype::A));
    let good6 = frame(V6.0, V6.1, &query("www.example.test", rtype::AAAA));
    assert!(send(&mut c, &good4).is_some() && send(&mut c, &good6).is_some());
    let flip = |f: &[u8], at: usize| {
        let mut f = f.to_vec();
        f[at] ^= 0x01;
        f
    };
    let mut unanswered: Vec<(&str, Vec<u8>)> = vec![
        ("bad UDP checksum", flip(&good4, good4.len() - 1)),
        ("bad UDP checksum over IPv6", flip(&good6, good6.len() - 1)),
        ("bad IPv4 header checksum", flip(&good4, 24)),
        (
            "to an address not the appliance's",
            frame(V4.0, "198.18.0.99", &query("www.example.test", 1)),
        ),
        (
            "from a broadcast source",
            frame("255.255.255.255", V4.1, &query("www.example.test", 1)),
        ),
        (
            "a DNS header cut short",
            frame(V4.0, V4.1, &[0xbe, 0xef, 1, 0, 0, 1]),
        ),
        ("an empty datagram", frame(V4.0, V4.1, &[])),
    ];
    // Truncated frames: the IP length says more than is there.
    for cut in [20, 36, 41, 50] {
        unanswered.push(("truncated", good4[..cut].to_vec()));
    }
    unanswered.push(("truncated IPv6", good6[..good6.len() - 3].to_vec()));
    // A response (QR set), checksum made right again.
    let mut resp = query("www.example.test", 1);
    resp[2] |= 0x80;
    unanswered.push(("a response", frame(V4.0, V4.1, &resp)));
    // IPv6 without a UDP checksum.
    let mut none6 = good6.clone();
    none6[60..62].copy_from_slice(&[0, 0]);
    unanswered.push(("IPv6 without UDP checksum", none6));
    // A fragment (more fragments set).
    let mut frag = good4.clone();
    frag[20] = 0x20;
    frag[24..26].copy_from_slice(&[0, 0]);
    let ck = checksum(&frag[14..34]);
    frag[24..26].copy_from_slice(&ck.to_be_bytes());
    unanswered.push(("a fragment", frag));
    let mut refused_by_the_responder = 0;
    for (what, f) in &unanswered {
        let (sent, app) = send_any(&mut c, f);
        assert_eq!(sent, None, "{what}");
        refused_by_the_responder += usize::from(app.is_some());
    }
    // Most reach the responder (the core passes on what it can decide on)
    // and are refused there; only the truncated ones are the core's.
    assert_eq!(refused_by_the_responder, unanswered.len() - 5);
    // Bodies that are wrong: FORMERR, with the header's ID and no question.
    let head = [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut loop_ = head.to_vec();
    loop_.extend_from_slice(&[1, b'a', 0xc0, 16, 0xc0, 12, 0, 1, 0, 1]);
    let mut counts = query("www.example.test", 1);
    counts[5] = 3;
    let mut cut = query("www.example.test", 1);
    cut.truncate(20);
    for (what, q) in [
        ("pointer loop", loop_),
        ("three questions", counts),
        ("name cut short", cut),
    ] {
        let f = frame(V6.0, V6.1, &q);
        let dns = check(
            &send(&mut c, &f).unwrap_or_else(|| panic!("{what}: no answer")),
            &f,
        );
        assert_eq!(dns.len(), 12, "{what}");
        assert_eq!(dns[3] & 0x0f, rcode::FORMERR, "{what}");
    }
    // And it still answers.
    assert!(send(&mut c, &good4).is_some() && send(&mut c, &good6).is_some());
}

#[test]
fn plain_lbp_does_not_know_the_application() {
    let err = CoreTester::compile(POLICY, &Registry::builtin()).unwrap_err();
    assert!(err.contains("lbp::name::unknown_app"), "{err}");
}
