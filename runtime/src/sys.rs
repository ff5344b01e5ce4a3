//! The few operating-system calls the `lbp` command needs beyond the standard
//! library, as safe functions: signal dispositions, CPU affinity, the effective
//! user, a thread's CPU time, the terminal's width, a signal to a child, a
//! TCP connection from a chosen local address, and an interface's driver. The binary itself has no
//! `unsafe` (`#![forbid(unsafe_code)]` in `src/lib.rs`); this is where its
//! system calls live, each with its `// SAFETY:` comment.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Child;
use std::time::Duration;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Run `handler` on each of `signals`. The handler runs in signal context: it
/// must only do what is async-signal-safe (store to an atomic).
pub fn on_signals(signals: &[libc::c_int], handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    for &sig in signals {
        // SAFETY: sigaction is plain data; all-zero is a valid value (empty
        // mask, no flags), then the handler is filled in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = handler as usize;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is valid for the call and the old action is not asked
        // for; what the handler does is the caller's contract (above).
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a write to a closed pipe does: `ignore` (the write fails with EPIPE)
/// or the default (the process ends quietly).
pub fn sigpipe(ignore: bool) {
    let how = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: setting a signal's disposition to ignore or default has no
    // preconditions.
    unsafe { libc::signal(libc::SIGPIPE, how) };
}

/// The CPUs this process may run on (`[0]` when the kernel does not say).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid and its size is passed; pid 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set, in bounds for every id below
        // CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pin the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the largest CPU set"),
        ));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid and its size is passed; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU time the calling thread has used (zero when the clock cannot be
/// read).
pub fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The width in columns of the terminal on `fd`, if it is one.
pub fn terminal_width(fd: &impl AsRawFd) -> Option<u16> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the valid pointer given.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

/// Send `sig` to a child that has not ended (one that has is left alone: its
/// PID may no longer be its own).
pub fn signal_child(child: &mut Child, sig: libc::c_int) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "PID out of range"))?;
    // SAFETY: kill(2) on the PID of our own child, which try_wait just saw
    // running and which is not reaped until we wait for it, so the PID cannot
    // have been reused.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connection from the local address `from` (as `curl --interface`
/// does) to `to`, within `timeout`.
pub fn tcp_connect_from(
    from: Ipv4Addr,
    to: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(from, 0);
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(true)?;
    let remote = sin(*to.ip(), to.port());
    // SAFETY: `remote` is a valid sockaddr_in of `len` bytes for the call.
    let r = unsafe { libc::connect(s.as_raw_fd(), (&raw const remote).cast(), len) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(io::Error::last_os_error());
    }
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        ));
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

/// `struct ethtool_drvinfo` (`linux/ethtool.h`).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The name of the driver of interface `ifname` (as `ethtool -i` shows it:
/// `veth`, `ixgbe`, ...), in this thread's network namespace.
pub fn driver(ifname: &str) -> io::Result<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: DrvInfo is plain integers and byte arrays; all-zero is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: ifreq is plain data (a name and a union of plain fields and
    // pointers); all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &c) in ifr.ifr_name.iter_mut().zip(name) {
        *d = c as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: `ifr` names the interface (NUL-terminated: zeroed, and the name
    // is shorter than IFNAMSIZ) and points at `info`, a `struct
    // ethtool_drvinfo` that lives across the call; the kernel writes only that
    // struct for this command.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_missing_interface_has_no_driver() {
        assert!(driver("lbp-nosuch9").is_err());
        assert!(driver("").is_err());
        assert!(driver("a-name-far-too-long-for-linux").is_err());
    }

    #[test]
    fn the_calling_thread_can_be_pinned_to_a_cpu_it_may_use() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let t = std::thread::spawn(move || pin_thread(cpus[0]));
        t.join().unwrap().expect("pinned");
        assert!(pin_thread(usize::MAX).is_err());
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let a = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > a);
    }

    #[test]
    fn a_connection_from_a_chosen_loopback_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(at) = l.local_addr().unwrap() else {
            unreachable!("bound to IPv4")
        };
        let s = tcp_connect_from(Ipv4Addr::new(127, 0, 0, 7), at, Duration::from_secs(5)).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
        assert_eq!(s.local_addr().unwrap().ip(), peer.ip());
        // A closed port is refused, not a panic.
        drop(l);
        let e = tcp_connect_from(Ipv4Addr::LOCALHOST, at, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_child_that_ended_is_not_signalled() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        signal_child(&mut c, libc::SIGTERM).expect("nothing to do");
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        signal_child(&mut c, libc::SIGTERM).unwrap();
        let st = c.wait().unwrap();
        assert!(!st.success());
    }
}
