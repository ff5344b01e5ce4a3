//! The `icmp` health check: one ICMP echo request (IPv4, type 8) or ICMPv6
//! echo request (type 128) to a back end's address, passed when the matching
//! echo reply (type 0 / 129) comes back from that address within the timeout.
//!
//! It uses a raw socket (`lbp run` runs as root), opened for the one check and
//! connected to the back end, so that the kernel hands it only ICMP packets from
//! that address. A raw socket still sees every such packet (other pings, errors,
//! replies meant for someone else), so a reply counts only when it comes from
//! the address, is an echo reply, and carries this check's identifier, sequence
//! number and payload ([`is_reply`]); every other packet is read and ignored.
//! Each check takes an (identifier, sequence number) pair of its own
//! ([`Echo::next`]), so two checks at once, of the same address or not, never
//! take each other's replies. The kernel fills in the ICMPv6 checksum (raw
//! ICMPv6 sockets always do); the IPv4 one is computed here, and checked on
//! the reply.
//!
//! Errors (no permission for a raw socket, no route, an ICMP error that the
//! kernel reports on the connected socket) fail the check; nothing here panics
//! or waits longer than the timeout.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::wire::checksum::checksum;

/// The payload of every echo request; a reply must carry it back unchanged.
pub const PAYLOAD: &[u8; 16] = b"lbp health check";

/// The length of an echo request: the 8-byte ICMP header and [`PAYLOAD`].
pub const REQUEST_LEN: usize = 8 + PAYLOAD.len();

/// The identifier and sequence number of one echo request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    pub id: u16,
    pub seq: u16,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Echo {
    /// A pair no other check of this process used in the last 2^32 checks: the
    /// count of checks, its low half (mixed with the process id, so that two
    /// appliances on one host differ too) as identifier, its high half as
    /// sequence number.
    pub fn next() -> Echo {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Echo {
            id: (n as u16) ^ (std::process::id() as u16),
            seq: (n >> 16) as u16,
        }
    }
}

/// The ICMP types of an echo request and of its reply for `to`'s family.
fn types(to: IpAddr) -> (u8, u8) {
    match to {
        IpAddr::V4(_) => (8, 0),
        IpAddr::V6(_) => (128, 129),
    }
}

/// The echo request `e` to `to`: the ICMP message, with its checksum for IPv4
/// (for IPv6 the field stays zero: the kernel fills it in).
pub fn echo_request(to: IpAddr, e: Echo) -> [u8; REQUEST_LEN] {
    let mut m = [0u8; REQUEST_LEN];
    m[0] = types(to).0;
    m[4..6].copy_from_slice(&e.id.to_be_bytes());
    m[6..8].copy_from_slice(&e.seq.to_be_bytes());
    m[8..].copy_from_slice(PAYLOAD);
    if to.is_ipv4() {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Whether `packet`, read from a raw socket of `to`'s family and sent by
/// `from`, is the echo reply to `e` from `to`: from that address, an echo
/// reply (code 0) with the identifier, sequence number and payload of `e`, and
/// for IPv4 a valid checksum. An IPv4 raw socket delivers the IP header too
/// (its length is read from it); an ICMPv6 one only the message.
pub fn is_reply(to: IpAddr, from: IpAddr, packet: &[u8], e: Echo) -> bool {
    if from != to {
        return false;
    }
    let icmp = match to {
        IpAddr::V4(_) => {
            let Some(&first) = packet.first() else {
                return false;
            };
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < 20 {
                return false;
            }
            match packet.get(ihl..) {
                Some(m) if checksum(m) == 0 => m,
                _ => return false,
            }
        }
        IpAddr::V6(_) => packet,
    };
    icmp.len() == REQUEST_LEN
        && icmp[0] == types(to).1
        && icmp[1] == 0
        && icmp[4..6] == e.id.to_be_bytes()
        && icmp[6..8] == e.seq.to_be_bytes()
        && icmp[8..] == PAYLOAD[..]
}

/// Ping `to` once with an echo of its own: true when the reply comes within
/// `timeout`; an error or no reply is false.
pub fn ping(to: IpAddr, timeout: Duration) -> bool {
    ping_with(to.to_canonical(), timeout, Echo::next()).unwrap_or(false)
}

/// Ping `to` once with the echo `e`: `Ok(true)` when its reply came within
/// `timeout`, `Ok(false)` when it did not, `Err` when the socket failed.
fn ping_with(to: IpAddr, timeout: Duration, e: Echo) -> io::Result<bool> {
    let end = Instant::now() + timeout;
    let fd = raw_socket(to)?;
    let (sa, len) = sockaddr(to);
    // SAFETY: `sa` is a socket address of `len` bytes, alive for the call.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) })?;
    let req = echo_request(to, e);
    // SAFETY: `req` is readable for its length during the call.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 2048];
    loop {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return Ok(false);
        };
        if !readable(&fd, left)? {
            continue;
        }
        match recv_from(&fd, &mut buf) {
            Ok((n, from)) => {
                if is_reply(to, from, &buf[..n], e) {
                    return Ok(true);
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => return Err(err),
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A raw ICMP (IPv4) or ICMPv6 socket for `to`'s family.
fn raw_socket(to: IpAddr) -> io::Result<OwnedFd> {
    let (domain, proto) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: plain socket(2); the result is checked.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `a` (port 0) as a socket address for the system calls, with its length.
fn sockaddr(a: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned
            // for it; `ss` is exclusively borrowed here.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Wait at most `left` (rounded up to a millisecond) for `fd` to be readable.
fn readable(fd: &OwnedFd, left: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = left.as_micros().div_ceil(1_000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is one valid pollfd, alive and writable for the call.
    match cvt(unsafe { libc::poll(&raw mut p, 1, ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read one packet from `fd` without waiting: its length and its sender.
fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length and `ss` for `len` bytes during
    // the call; the kernel writes at most that much.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&raw mut ss).cast(),
            &raw mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into
            // `ss`, which is large enough and aligned for it.
            let sin = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in>() };
            IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6 (family AF_INET6).
            let sin6 = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in6>() };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        }
        f => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a packet from address family {f}"),
            ));
        }
    };
    Ok((n as usize, from))
}

#[cfg(test)]
mod tests {
    // The tests' network namespaces, and the rule for tests that cannot run
    // here (skipped with a line saying so; failed under CI): the lab's.
    use super::*;
    use crate::control::probe::{Prober, Target, check_once};
    use lbp_abi::health::{Check, Kind};
    use lbp_lab::testing::{Netns, skip, unavailable};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::sync::mpsc::channel;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const V6_OTHER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    /// A change to an echo reply (the ICMP message of `to`'s family).
    type Change = fn(IpAddr, &mut [u8]);
    /// A reply a responder sends: from another address or not, and its change.
    type Reply = (bool, Change);

    const E: Echo = Echo {
        id: 0x1234,
        seq: 0x0102,
    };

    /// Whether a test that needs raw sockets and namespaces can run here; if
    /// not, it is skipped (said on stderr), or failed under CI.
    fn runnable(test: &str) -> bool {
        match unavailable() {
            Some(why) => {
                skip(
                    test,
                    &format!("needs root (raw sockets) and network namespaces ({why})"),
                );
                false
            }
            None => true,
        }
    }

    /// The echo reply to `e` that `to` sends (the ICMP message), changed by
    /// `change` before its checksum is computed.
    fn reply_msg(to: IpAddr, e: Echo, change: Change) -> [u8; REQUEST_LEN] {
        let mut m = echo_request(to, e);
        m[0] = types(to).1;
        change(to, &mut m);
        m[2..4].fill(0);
        if to.is_ipv4() {
            let c = checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        m
    }

    /// `msg` as a raw socket of `from`'s family delivers it: for IPv4 after an
    /// IP header of `options` 4-byte words of options.
    fn received(from: IpAddr, msg: &[u8], options: u8) -> Vec<u8> {
        let IpAddr::V4(src) = from else {
            return msg.to_vec();
        };
        let ihl = 5 + options;
        let mut p = vec![0u8; usize::from(ihl) * 4];
        p[0] = 0x40 | ihl;
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&[198, 18, 0, 9]);
        p.extend_from_slice(msg);
        p
    }

    /// The ways a reply can be wrong: another identifier, sequence number or
    /// payload, an echo request (a raw socket sees its own check's request
    /// when the address is local), another code.
    const WRONG: [(&str, Change); 5] = [
        ("another identifier", |_, m| m[5] ^= 1),
        ("another sequence number", |_, m| m[7] ^= 0x80),
        ("another payload", |_, m| m[20] ^= 0x20),
        ("an echo request", |to, m| m[0] = types(to).0),
        ("code 1", |_, m| m[1] = 1),
    ];

    #[test]
    fn echo_requests() {
        let m = echo_request(V4, E);
        assert_eq!(m[..8], [8, 0, m[2], m[3], 0x12, 0x34, 0x01, 0x02]);
        assert_eq!(&m[8..], PAYLOAD);
        assert_eq!(checksum(&m), 0, "the IPv4 checksum checks");
        // ICMPv6: the kernel computes the checksum (over a pseudo-header).
        let m6 = echo_request(V6, E);
        assert_eq!(m6[..8], [128, 0, 0, 0, 0x12, 0x34, 0x01, 0x02]);
        assert_eq!(&m6[8..], PAYLOAD);
        // Two checks never share an echo.
        let (a, b) = (Echo::next(), Echo::next());
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_reply_to_the_check_is_taken() {
        for (to, other) in [(V4, V4_OTHER), (V6, V6_OTHER)] {
            let good = reply_msg(to, E, |_, _| {});
            assert!(is_reply(to, to, &received(to, &good, 0), E), "{to}");
            // IPv4 options before the message.
            assert!(is_reply(to, to, &received(to, &good, 2), E), "{to}");
            // From another address (its header's source too).
            assert!(!is_reply(to, other, &received(other, &good, 0), E), "{to}");
            // A reply to another check.
            let next = Echo { id: E.id, seq: 7 };
            assert!(!is_reply(to, to, &received(to, &good, 0), next), "{to}");
            for (what, change) in WRONG {
                let m = reply_msg(to, E, change);
                assert!(!is_reply(to, to, &received(to, &m, 0), E), "{to}: {what}");
            }
            // Cut short, or longer.
            let p = received(to, &good, 0);
            assert!(!is_reply(to, to, &p[..p.len() - 1], E), "{to}");
            assert!(
                !is_reply(to, to, &[p.clone(), vec![0, 0]].concat(), E),
                "{to}"
            );
            assert!(!is_reply(to, to, &[], E), "{to}");
        }
        // IPv4: a wrong checksum, a header that is not IPv4 or too short.
        let mut p = received(V4, &reply_msg(V4, E, |_, _| {}), 0);
        p[20 + 2] ^= 1;
        assert!(!is_reply(V4, V4, &p, E));
        p[20 + 2] ^= 1;
        assert!(is_reply(V4, V4, &p, E));
        p[0] = 0x65;
        assert!(!is_reply(V4, V4, &p, E));
        p[0] = 0x44;
        assert!(!is_reply(V4, V4, &p, E));
    }

    fn icmp_target(addr: IpAddr, timeout_us: u64) -> Target {
        let mut check = Check::new(Kind::Icmp);
        check.timeout_us = timeout_us;
        check.interval_us = 20_000;
        Target {
            service: 0,
            backend: 0,
            addr: SocketAddr::new(addr, 0),
            check,
        }
    }

    /// The loopback addresses answer pings: the checks pass, as ICMP checks of
    /// a prober.
    #[test]
    fn loopback_answers() {
        if !runnable("control::ping::tests::loopback_answers") {
            return;
        }
        for a in [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ] {
            assert!(ping(a, Duration::from_secs(1)), "{a}");
            assert!(check_once(&icmp_target(a, 1_000_000)), "{a}");
        }
        // An IPv4-mapped IPv6 address is pinged as IPv4.
        assert!(ping(
            "::ffff:127.0.0.1".parse().unwrap(),
            Duration::from_secs(1)
        ));
    }

    /// In a namespace of its own with 198.18.0.1 and 2001:db8::1 on its
    /// loopback: the addresses pass; once the namespace's kernel ignores echo
    /// requests they fail after the timeout; an address with no route fails at
    /// once. The same through probers.
    #[test]
    fn silent_and_unreachable_addresses_fail() {
        if !runnable("control::ping::tests::silent_and_unreachable_addresses_fail") {
            return;
        }
        let ns = Netns::new("ping");
        ns.add_address("lo", "198.18.0.1/32").unwrap();
        ns.add_address("lo", "2001:db8::1/128").unwrap();
        let timeout = Duration::from_millis(300);
        let both = move || {
            [V4, V6].map(|a| {
                let start = Instant::now();
                (ping(a, timeout), start.elapsed())
            })
        };
        for (a, (ok, took)) in [V4, V6].into_iter().zip(ns.within(both)) {
            assert!(ok && took < timeout, "{a}: {ok} after {took:?}");
        }
        let probe = |addrs: [IpAddr; 2]| {
            move || {
                let t: Vec<Target> = addrs
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| Target {
                        backend: i,
                        ..icmp_target(a, 100_000)
                    })
                    .collect();
                let p = Prober::start(&t).unwrap();
                let mut seen = [Vec::new(), Vec::new()];
                let end = Instant::now() + Duration::from_secs(5);
                while seen.iter().any(|s| s.len() < 3) && Instant::now() < end {
                    for (i, r) in p.results() {
                        seen[i].push(r);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                seen
            }
        };
        let seen = ns.within(probe([V4, V6]));
        assert!(
            seen.iter().all(|s| s.len() >= 3 && s.iter().all(|&r| r)),
            "{seen:?}"
        );

        ns.sysctl("net.ipv4.icmp_echo_ignore_all=1");
        ns.sysctl("net.ipv6.icmp.echo_ignore_all=1");
        for (a, (ok, took)) in [V4, V6].into_iter().zip(ns.within(both)) {
            assert!(!ok, "{a}: answered though ignoring");
            assert!(
                took >= timeout && took < timeout + Duration::from_secs(2),
                "{a}: failed after {took:?}"
            );
        }
        let seen = ns.within(probe([V4, V6]));
        assert!(
            seen.iter().all(|s| s.len() >= 3 && s.iter().all(|&r| !r)),
            "{seen:?}"
        );

        // No route: the socket says so, the check fails without waiting.
        let unrouted = [
            IpAddr::from([198, 18, 9, 9]),
            IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9)),
        ];
        let results = ns.within(move || {
            unrouted.map(|a| {
                let start = Instant::now();
                let r = ping_with(a, Duration::from_secs(10), Echo::next());
                (r.map_err(|e| e.kind()), start.elapsed())
            })
        });
        for (a, (r, took)) in unrouted.into_iter().zip(results) {
            assert!(r.is_err(), "{a}: {r:?}");
            assert!(took < Duration::from_secs(5), "{a}: {took:?}");
            assert!(!ns.within(move || ping(a, Duration::from_secs(10))), "{a}");
        }
    }

    /// A responder in the namespace: waits (up to 5 s) for one echo request
    /// to `to` carrying [`PAYLOAD`], then answers it with each of `replies`
    /// changed by their function, sent from `to` (or from `other` when the
    /// flag says so); gives back how many it sent.
    fn responder(
        to: IpAddr,
        other: IpAddr,
        replies: Vec<Reply>,
    ) -> impl FnOnce() -> usize + Send + 'static {
        // Open before the check sends (the caller runs this before pinging).
        let listen = raw_socket(to).unwrap();
        let from_other = raw_socket(to).unwrap();
        let (sa, len) = sockaddr(other);
        // SAFETY: `sa` is a socket address of `len` bytes, alive for the call.
        cvt(unsafe { libc::bind(from_other.as_raw_fd(), (&raw const sa).cast(), len) }).unwrap();
        move || {
            let mut buf = [0u8; 2048];
            let end = Instant::now() + Duration::from_secs(5);
            let (e, src) = loop {
                let left = end
                    .checked_duration_since(Instant::now())
                    .expect("an echo request within 5 s");
                if !readable(&listen, left).unwrap() {
                    continue;
                }
                let Ok((n, src)) = recv_from(&listen, &mut buf) else {
                    continue;
                };
                let msg = match to {
                    IpAddr::V4(_) => &buf[usize::from(buf[0] & 0x0f) * 4..n],
                    IpAddr::V6(_) => &buf[..n],
                };
                if msg.len() == REQUEST_LEN && msg[0] == types(to).0 && msg[8..] == PAYLOAD[..] {
                    let id = u16::from_be_bytes([msg[4], msg[5]]);
                    let seq = u16::from_be_bytes([msg[6], msg[7]]);
                    break (Echo { id, seq }, src);
                }
            };
            let (sa, len) = sockaddr(src);
            let mut sent = 0;
            for (from_other_address, change) in replies {
                let m = reply_msg(to, e, change);
                let fd = if from_other_address {
                    &from_other
                } else {
                    &listen
                };
                // SAFETY: `m` and `sa` are readable for their lengths during
                // the call.
                let r = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        m.as_ptr().cast(),
                        m.len(),
                        0,
                        (&raw const sa).cast(),
                        len,
                    )
                };
                if r == m.len() as isize {
                    sent += 1;
                }
            }
            sent
        }
    }

    /// With the namespace's kernel silent, a responder forges the replies: a
    /// check takes no reply to another identifier, sequence number or payload,
    /// no request and no reply from another address, and takes the right one.
    #[test]
    fn replies_to_other_echoes_are_not_taken() {
        if !runnable("control::ping::tests::replies_to_other_echoes_are_not_taken") {
            return;
        }
        let ns = Netns::new("pingr");
        for a in [
            "198.18.0.1/32",
            "198.18.0.2/32",
            "2001:db8::1/128",
            "2001:db8::2/128",
        ] {
            ns.add_address("lo", a).unwrap();
        }
        ns.sysctl("net.ipv4.icmp_echo_ignore_all=1");
        ns.sysctl("net.ipv6.icmp.echo_ignore_all=1");
        for (to, other) in [(V4, V4_OTHER), (V6, V6_OTHER)] {
            let run = |replies: Vec<Reply>| {
                ns.within(move || {
                    let (tx, rx) = channel();
                    let answer = responder(to, other, replies);
                    std::thread::spawn(move || tx.send(answer()).unwrap());
                    let ok = ping(to, Duration::from_millis(500));
                    (ok, rx.recv().unwrap())
                })
            };
            let mut wrong: Vec<Reply> = WRONG.iter().map(|&(_, f)| (false, f)).collect();
            wrong.push((true, |_, _| {}));
            let n = wrong.len();
            assert_eq!(run(wrong), (false, n), "{to}: a wrong reply was taken");
            assert_eq!(run(vec![(false, |_, _| {})]), (true, 1), "{to}");
        }
    }
}
