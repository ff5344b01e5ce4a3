//! The client side of a test network, and back-end servers: HTTP (over `curl`
//! or a socket), UDP, ping and a TTL of one over raw ICMP sockets, and raw
//! Ethernet frames over an AF_PACKET socket. The socket probes run in the
//! calling thread's namespace (see [`super::Netns::within`]).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::enter;
use super::frame::checksum_oracle;

/// Back-end servers: one thread per back end, in the back end's namespace,
/// serving HTTP on `[::]:8080` and `[::]:80` and a UDP echo of its name on
/// `[::]:5353`, each answer naming the back end; stopped and joined on drop.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a server thread lives at most (the suite takes far less).
const SERVER_LIFETIME: Duration = Duration::from_secs(600);

impl Servers {
    /// Start one server per `(namespace, name)`, each bound before this returns.
    pub fn start(backends: &[(&crate::Netns, &str)]) -> Servers {
        // The guard exists before the first thread, so that a failure below
        // still stops the threads already started.
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for &(ns, name) in backends {
            let path = ns.path().to_path_buf();
            let owned = name.to_string();
            let stop2 = servers.stop.clone();
            let (tx, rx) = mpsc::channel();
            servers.threads.push(std::thread::spawn(move || {
                enter(&path);
                let bound = (|| -> io::Result<_> {
                    let l8080 = TcpListener::bind("[::]:8080")?;
                    let l80 = TcpListener::bind("[::]:80")?;
                    let udp = UdpSocket::bind("[::]:5353")?;
                    Ok((l8080, l80, udp))
                })();
                match bound {
                    Ok((a, b, u)) => {
                        tx.send(Ok(())).expect("the test waits");
                        serve(&owned, &[a, b], &u, &stop2);
                    }
                    Err(e) => tx.send(Err(e)).expect("the test waits"),
                }
            }));
            rx.recv_timeout(Duration::from_secs(10))
                .expect("server thread answers")
                .unwrap_or_else(|e| panic!("back end {name}: bind: {e}"));
        }
        servers
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A back end's loop: HTTP on every listener (each connection answered by a
/// thread of its own, bounded by timeouts, so that a connection held open
/// with half a request delays no other), UDP echo of the name, until `stop`
/// or the lifetime ends.
fn serve(name: &str, listeners: &[TcpListener], udp: &UdpSocket, stop: &AtomicBool) {
    let name: Arc<str> = name.into();
    let end = Instant::now() + SERVER_LIFETIME;
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| l.as_raw_fd())
        .chain([udp.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let udp_body = format!("{name}\n");
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        // SAFETY: `fds` is a live array of `fds.len()` pollfd entries whose
        // descriptors are owned by `listeners` and `udp` for this call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (i, l) in listeners.iter().enumerate() {
            if fds[i].revents & libc::POLLIN != 0
                && let Ok((s, _)) = l.accept()
            {
                let name = name.clone();
                std::thread::spawn(move || {
                    let _ = answer_http(s, &name);
                });
            }
        }
        if fds[listeners.len()].revents & libc::POLLIN != 0
            && let Ok((_, from)) = udp.recv_from(&mut buf)
        {
            let _ = udp.send_to(udp_body.as_bytes(), from);
        }
    }
}

/// Read one request head (bounded) and answer it with a body that names the back
/// end, the address the connection arrived at and the address it came from:
/// `b1 198.18.2.11:8080 198.18.0.2:40000`.
fn answer_http(mut s: TcpStream, name: &str) -> io::Result<()> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let body = format!(
        "{name} {} {}\n",
        canon(s.local_addr()?),
        canon(s.peer_addr()?)
    );
    // Long enough for a test that holds a connection across a reload on a
    // busy machine (a reload has taken over 2 s there).
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)
}

/// `curl` in the client namespace: the body, or why not (exit code and stderr).
pub fn curl(
    client: &crate::Netns,
    url: &str,
    extra: &[&str],
    timeout_s: u32,
) -> Result<String, String> {
    let t = timeout_s.to_string();
    let mut args = vec![
        "-sS",
        "-g",
        "--max-time",
        &t,
        "--connect-timeout",
        &t,
        "--noproxy",
        "*",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = client
        .command("curl")
        .args(&args)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "curl {url}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One HTTP/1.0 GET over a new connection from the calling thread's namespace:
/// the body (see `answer_http`).
pub fn http_get(to: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lbp-e2e\r\n\r\n")?;
    let mut resp = Vec::new();
    s.take(64 * 1024).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP 200 answer: {text:?}"),
        )),
    }
}

/// One UDP datagram to `to` and its answer.
pub fn udp_ask(to: SocketAddr, timeout: Duration) -> io::Result<String> {
    let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.set_read_timeout(Some(timeout))?;
    s.send_to(b"who?", to)?;
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// A raw socket of `domain` for protocol `proto`.
pub fn raw_socket(domain: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set a socket's receive timeout (`SO_RCVTIMEO`).
pub fn set_rcv_timeout(fd: &OwnedFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(t.subsec_micros()),
    };
    // SAFETY: `tv` is a valid timeval for the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(to: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is valid; fields are set below.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// An ICMP or ICMPv6 echo request (`req_type` 8 or 128) of identifier `id`,
/// sequence `seq` and a 16-byte body; the ICMP (IPv4) checksum filled in (the
/// kernel fills ICMPv6's on raw sockets).
fn echo_request(to: IpAddr, req_type: u8, id: u16, seq: u16, body: &[u8; 16]) -> [u8; 24] {
    let mut msg = [0u8; 24];
    msg[0] = req_type;
    msg[4..6].copy_from_slice(&id.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[8..].copy_from_slice(body);
    if to.is_ipv4() {
        let c = checksum_oracle(&msg, 0);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    msg
}

/// Send `msg` to `to` on the raw socket `fd`.
fn send_raw(fd: &OwnedFd, msg: &[u8], to: IpAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(to);
    // SAFETY: `msg` and `ss` are valid for the given lengths during the call.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const ss).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ping `to` from the calling thread's namespace with a raw ICMP or ICMPv6
/// socket (up to three requests, one a second, as `ping -c 3` would): `Ok` when
/// an echo reply with our identifier comes back from it within `timeout`.
pub fn ping(to: IpAddr, timeout: Duration) -> io::Result<()> {
    let (domain, proto, req_type, reply_type) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    let fd = raw_socket(domain, proto)?;
    set_rcv_timeout(&fd, Duration::from_millis(200))?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    const BODY: &[u8; 16] = b"lbp-e2e-ping-bod";
    send_raw(&fd, &echo_request(to, req_type, id, 1, BODY), to)?;
    let mut sent_at = Instant::now();
    let mut sent = 1u16;
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    for _ in 0..10_000 {
        if Instant::now() >= end {
            break;
        }
        // Like `ping -c 3`: another request each second, three at most.
        if sent < 3 && sent_at.elapsed() >= Duration::from_secs(1) {
            sent += 1;
            send_raw(&fd, &echo_request(to, req_type, id, sent, BODY), to)?;
            sent_at = Instant::now();
        }
        // SAFETY: `buf` is writable for its length during the call.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            continue;
        }
        let pkt = &buf[..n as usize];
        // IPv4 raw sockets deliver the IP header; ICMPv6 ones do not.
        let (icmp, src_ok) = match to {
            IpAddr::V4(a) => {
                if pkt.len() < 20 {
                    continue;
                }
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                (pkt.get(ihl..).unwrap_or(&[]), pkt[12..16] == a.octets())
            }
            IpAddr::V6(_) => (pkt, true),
        };
        if src_ok && icmp.len() >= 8 && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes() {
            return Ok(());
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"))
}

/// Send one echo request to `to` with a TTL (hop limit) of 1 from the calling
/// thread's namespace: `Ok` when an ICMP time exceeded (IPv4 type 11, ICMPv6
/// type 3, code 0) about it comes back from `from`, with the request quoted.
pub fn ttl_exceeded(to: IpAddr, from: IpAddr, timeout: Duration) -> io::Result<()> {
    let (domain, proto, level, opt, req_type, exceeded) = match to {
        IpAddr::V4(_) => (
            libc::AF_INET,
            libc::IPPROTO_ICMP,
            libc::IPPROTO_IP,
            libc::IP_TTL,
            8u8,
            11u8,
        ),
        IpAddr::V6(_) => (
            libc::AF_INET6,
            libc::IPPROTO_ICMPV6,
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            128,
            3,
        ),
    };
    let fd = raw_socket(domain, proto)?;
    set_rcv_timeout(&fd, Duration::from_millis(200))?;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let id = (std::process::id() as u16) ^ 0x7717;
    let msg = echo_request(to, req_type, id, 1, b"lbp-e2e-ttl-one!");
    send_raw(&fd, &msg, to)?;
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    // SAFETY: an all-zero sockaddr_storage is a valid place for recvfrom's source.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    while Instant::now() < end {
        let mut plen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf` and `peer` are writable for their lengths during the call.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut peer).cast(),
                &raw mut plen,
            )
        };
        if n < 0 {
            continue;
        }
        let pkt = &buf[..n as usize];
        // IPv4 raw sockets deliver the IP header; ICMPv6 ones do not. The
        // sender is read from the source address recvfrom gives.
        let (icmp, sender) = match to {
            IpAddr::V4(_) => {
                let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
                let src = pkt
                    .get(12..16)
                    .map(|b| IpAddr::from([b[0], b[1], b[2], b[3]]));
                (pkt.get(ihl..).unwrap_or(&[]), src)
            }
            IpAddr::V6(_) => {
                // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
                let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const peer).cast()) };
                (pkt, Some(IpAddr::from(sin6.sin6_addr.s6_addr)))
            }
        };
        // The quoted request: its IP header, then our echo request's id.
        let quoted_id = |inner: &[u8]| {
            let skip = if to.is_ipv4() {
                usize::from(inner.first().copied().unwrap_or(0) & 0x0f) * 4
            } else {
                40
            };
            inner.get(skip + 4..skip + 6) == Some(&id.to_be_bytes()[..])
        };
        if icmp.len() >= 8
            && icmp[0] == exceeded
            && icmp[1] == 0
            && sender == Some(from)
            && quoted_id(&icmp[8..])
        {
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no time exceeded came back",
    ))
}

/// An AF_PACKET socket bound to `ifname` in the calling thread's namespace.
#[derive(Debug)]
pub struct FrameSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl FrameSender {
    /// Open it on `ifname`.
    pub fn open(ifname: &str) -> io::Result<FrameSender> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(ifname).expect("no NUL in an interface name");
        // SAFETY: `cname` is a NUL-terminated string alive for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FrameSender { fd, ifindex })
    }

    /// Send one frame as it is (no padding, no checksum fixing).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_ifindex = self.ifindex;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
        // SAFETY: `frame` and `ll` are valid for the given lengths during the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
