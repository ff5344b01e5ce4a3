//! What the demo's client does: HTTP requests through the virtual IP, from a thread in the client's namespace.

use super::*;

/// What the client saw.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) counts: [usize; 3],
    /// How long the IPv4 requests took.
    pub(super) secs: f64,
    pub(super) refused: usize,
    pub(super) timeouts: usize,
    pub(super) other: usize,
    pub(super) errors: Vec<String>,
    pub(super) v6: Vec<Result<String, String>>,
    pub(super) port25: String,
    pub(super) blocked: String,
}

impl Traffic {
    /// `n` requests to the IPv4 virtual IP, then the IPv6 ones, the non-service
    /// port and the blocked source; bounded by `REQUEST_BUDGET` and Ctrl-C.
    pub(super) fn send(n: usize) -> Traffic {
        let mut t = Traffic::default();
        let started = Instant::now();
        let end = started + REQUEST_BUDGET;
        let vip4 = SocketAddr::new(VIP4.into(), 80);
        for _ in 0..n {
            if interrupted() {
                t.errors.push("interrupted".into());
                break;
            }
            if Instant::now() >= end {
                let secs = REQUEST_BUDGET.as_secs();
                t.errors
                    .push(format!("stopped: the {secs} s budget is spent"));
                break;
            }
            match http_get(None, vip4) {
                Ok(body) => match BACKENDS.iter().position(|b| b.0 == body) {
                    Some(i) => t.counts[i] += 1,
                    None => {
                        t.other += 1;
                        t.errors.push(format!("unexpected answer {body:?}"));
                    }
                },
                Err(e) => {
                    match e.kind() {
                        ErrorKind::ConnectionRefused => t.refused += 1,
                        ErrorKind::TimedOut | ErrorKind::WouldBlock => t.timeouts += 1,
                        _ => t.other += 1,
                    }
                    t.errors.push(e.to_string());
                }
            }
        }
        t.secs = started.elapsed().as_secs_f64();
        if interrupted() {
            return t;
        }
        for _ in 0..V6_REQUESTS {
            let r = http_get(None, SocketAddr::new(VIP6.into(), 80));
            t.v6.push(r.map_err(|e| e.to_string()));
        }
        let at = Instant::now();
        t.port25 = match http_get(None, SocketAddr::new(VIP4.into(), 25)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                format!(
                    "refused after {} ms (reset by lbp)",
                    at.elapsed().as_millis()
                )
            }
            Err(e) => format!("{e} (expected: refused)"),
            Ok(body) => format!("answered {body:?} (expected: refused)"),
        };
        t.blocked = match http_get(Some(BLOCKED4.into()), vip4) {
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                "no answer within 2 s (dropped by the filter)".into()
            }
            Err(e) => format!("{e} (expected: no answer)"),
            Ok(body) => format!("answered by {body} (expected: no answer)"),
        };
        t
    }
}

/// One HTTP/1.0 GET over a new connection (from `from` when given): the body.
pub(super) fn http_get(from: Option<IpAddr>, to: SocketAddr) -> io::Result<String> {
    let timeout = Duration::from_secs(2);
    let mut s = match from {
        None => TcpStream::connect_timeout(&to, timeout)?,
        Some(ip) => connect_from(ip, to, timeout)?,
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lbp-demo\r\n\r\n")?;
    let mut resp = Vec::new();
    s.take(16 * 1024).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("not an HTTP 200 answer: {text:?}"),
        )),
    }
}

/// A TCP connection from the local address `from` (IPv4 only), bounded by
/// `timeout`: `ip netns exec`-free, with `curl --interface` semantics.
pub(super) fn connect_from(
    from: IpAddr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let (IpAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "IPv4 only"));
    };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: `remote` is a valid sockaddr_in of `len` bytes for the call.
    let r = unsafe { libc::connect(fd, (&raw const remote).cast(), len) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(io::Error::last_os_error());
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(ErrorKind::TimedOut, "connection timed out"));
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.set_nonblocking(false)?;
    Ok(s)
}
