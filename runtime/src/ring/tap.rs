//! The TAP pseudo-interface: the appliance's own addresses, as the kernel sees
//! them. Frames a switching core decides `local` are sent to the TAP and enter the
//! kernel's stack as if received on an Ethernet interface; what the kernel
//! transmits on it (its answers: TCP from sshd, ICMP, ARP and neighbour
//! discovery) is received by the core and routed out like any other frame.
//!
//! [`Tap::create`] opens `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`, non-blocking),
//! names the interface, and configures it with ioctls on a datagram socket, in the
//! calling thread's network namespace: MAC (`SIOCSIFHWADDR`), MTU (`SIOCSIFMTU`),
//! up (`SIOCSIFFLAGS`), IPv4 addresses (`SIOCSIFADDR` + `SIOCSIFNETMASK`; one per
//! interface through this call, the first given) and IPv6 addresses
//! (`SIOCSIFADDR` on an IPv6 socket with `in6_ifreq`, any number). Ioctls rather
//! than running `ip`: no process to start, no text to parse, and errors come back
//! as errno. Duplicate address detection is switched off on the TAP before its
//! IPv6 addresses are added (the appliance owns them; probes would only come back
//! to the core as traffic). The interface disappears when the `Tap` is dropped.
//!
//! The [`Port`] implementation copies: `read(2)` into a frame taken from the core's
//! [`Frames`], `write(2)` from a frame, which is freed at once (the kernel has its
//! own copy when `write` returns). This is the control plane's path, not a fast one.
//!
//! What it is not: no multi-queue TAP, no `IFF_VNET_HDR` (so no offloads: the
//! kernel hands over frames no larger than the MTU), no second IPv4 address.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Desc, FRAME_SIZE, Frames, Port, PortStats};

/// The largest MTU a TAP may have: a frame (with one VLAN tag) must fit a slot.
pub const MAX_MTU: u32 = (FRAME_SIZE - 14 - 4) as u32;

/// How a TAP is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes), e.g. `lbp0`.
    pub name: String,
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// MTU, at most [`MAX_MTU`].
    pub mtu: u32,
    /// IPv4 address and prefix length (the kernel takes one through ioctls).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 addresses and prefix lengths.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
}

/// Counters of the TAP beyond [`PortStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapErrors {
    /// `write` failures (the frame is freed all the same).
    pub write_errors: u64,
    /// `read` failures other than "nothing to read".
    pub read_errors: u64,
}

/// An open TAP interface. See the module doc.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    stats: PortStats,
    errors: TapErrors,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// An `ifreq` naming `name`, the rest zero.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(invalid("interface name must be 1 to 15 bytes, without NUL"));
    }
    // SAFETY: ifreq is plain data (a name and a union of plain data); all-zero is
    // a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(fd, req, arg)` for the interface requests, whose argument is a pointer
/// to a struct the caller owns.
fn ioctl<T>(fd: &OwnedFd, req: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes a request whose argument is a `T` (ifreq or
    // in6_ifreq), alive and writable for the call.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            req as _,
            (arg as *mut T).cast::<libc::c_void>(),
        )
    })
    .map(drop)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and the
    // kernel reads the former through the latter, which is how the API is meant.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Tap {
    /// Create and configure the TAP in the calling thread's network namespace.
    pub fn create(cfg: &TapConfig) -> io::Result<Tap> {
        if cfg.mtu < 68 || cfg.mtu > MAX_MTU {
            return Err(invalid("TAP MTU must be between 68 and MAX_MTU"));
        }
        let mut req = ifreq(&cfg.name)?;
        let path = CString::new("/dev/net/tun").map_err(|_| invalid("path"))?;
        // SAFETY: `path` is NUL-terminated; the result is checked.
        let fd = cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        ioctl(&fd, libc::TUNSETIFF, &mut req)?;

        let s4 = socket(libc::AF_INET)?;
        let mut r = ifreq(&cfg.name)?;
        // SAFETY: sockaddr is plain data; all-zero is valid.
        let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
        hw.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in hw.sa_data.iter_mut().zip(cfg.mac) {
            *d = s as libc::c_char;
        }
        r.ifr_ifru.ifru_hwaddr = hw;
        ioctl(&s4, libc::SIOCSIFHWADDR, &mut r)?;

        let mut r = ifreq(&cfg.name)?;
        r.ifr_ifru.ifru_mtu = cfg.mtu as libc::c_int;
        ioctl(&s4, libc::SIOCSIFMTU, &mut r)?;

        if !cfg.ipv6.is_empty() {
            // Best effort: absent when IPv6 is off, and then adding fails below.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{}/accept_dad", cfg.name),
                "0",
            );
        }

        let mut r = ifreq(&cfg.name)?;
        ioctl(&s4, libc::SIOCGIFFLAGS, &mut r)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        ioctl(&s4, libc::SIOCSIFFLAGS, &mut r)?;

        let mut r = ifreq(&cfg.name)?;
        ioctl(&s4, libc::SIOCGIFINDEX, &mut r)?;
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        let ifindex = unsafe { r.ifr_ifru.ifru_ifindex } as u32;

        if let Some((a, plen)) = cfg.ipv4 {
            if plen > 32 {
                return Err(invalid("IPv4 prefix length above 32"));
            }
            let mut r = ifreq(&cfg.name)?;
            r.ifr_ifru.ifru_addr = sockaddr_in(a);
            ioctl(&s4, libc::SIOCSIFADDR, &mut r)?;
            let mask = u32::MAX.checked_shl(32 - u32::from(plen)).unwrap_or(0);
            let mut r = ifreq(&cfg.name)?;
            r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
            ioctl(&s4, libc::SIOCSIFNETMASK, &mut r)?;
        }

        if !cfg.ipv6.is_empty() {
            let s6 = socket(libc::AF_INET6)?;
            for &(a, plen) in &cfg.ipv6 {
                if plen > 128 {
                    return Err(invalid("IPv6 prefix length above 128"));
                }
                let mut r = libc::in6_ifreq {
                    ifr6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ifr6_prefixlen: u32::from(plen),
                    ifr6_ifindex: ifindex as libc::c_int,
                };
                ioctl(&s6, libc::SIOCSIFADDR, &mut r)?;
            }
        }

        Ok(Tap {
            fd,
            name: cfg.name.clone(),
            ifindex,
            stats: PortStats::default(),
            errors: TapErrors::default(),
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index (in the namespace it was created in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Read and write failures so far.
    pub fn errors(&self) -> TapErrors {
        self.errors
    }
}

impl Port for Tap {
    fn recv(&mut self, frames: &mut Frames, out: &mut [Desc]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(d) = frames.alloc() else {
                break;
            };
            let buf = frames.slot_mut(d);
            // SAFETY: `buf` is a live writable slice; read(2) writes at most its
            // length.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                frames.free(d);
                if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    self.errors.read_errors += 1;
                }
                break;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += r as u64;
            out[n] = Desc {
                addr: d.addr,
                len: r as u32,
            };
            n += 1;
        }
        n
    }

    fn send(&mut self, frames: &mut Frames, descs: &[Desc]) -> usize {
        for &d in descs {
            let p = frames.packet(d);
            // SAFETY: `p` is a live slice; write(2) reads at most its length.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), p.as_ptr().cast(), p.len()) };
            if r < 0 || p.is_empty() {
                self.errors.write_errors += 1;
            } else {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += p.len() as u64;
            }
            frames.free(d);
        }
        descs.len()
    }

    fn flush(&mut self, _frames: &mut Frames) {}

    fn stats(&self) -> PortStats {
        self.stats
    }
}
