//! Transmit checksum offload through the ethtool ioctl (`SIOCETHTOOL`).
//!
//! `ETHTOOL_STXCSUM` with 0 clears, in the interface's wanted features, all the
//! transmit checksum features it can change (`tx-checksum-ipv4`,
//! `tx-checksum-ip-generic`, `tx-checksum-ipv6`, `tx-checksum-fcoe-crc`,
//! `tx-checksum-sctp`): what `ethtool -K IF tx off` asks, after which
//! `ethtool -k IF` shows `tx-checksumming: off`. `ETHTOOL_GTXCSUM` reads whether
//! any of them is still active.

use std::io;
use std::os::fd::RawFd;

/// From `linux/ethtool.h`.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Run the get or set command `cmd` with `data` on interface `ifname`, through
/// `fd`, a socket of the interface's network namespace; the value it returns.
fn ethtool_value(fd: RawFd, ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain data (a name and a union of plain fields and
    // pointers); all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: `ifr` names the interface (NUL-terminated: zeroed, and the name is
    // shorter than IFNAMSIZ) and points at `value`, a `struct ethtool_value` that
    // lives across the call; the kernel reads and writes only that struct for
    // these commands. A wrong `fd` fails with EBADF or ENOTTY.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turn transmit checksum offload off on `ifname`.
pub(crate) fn tx_checksum_off(fd: RawFd, ifname: &str) -> io::Result<()> {
    ethtool_value(fd, ifname, ETHTOOL_STXCSUM, 0).map(drop)
}

/// Whether any transmit checksum offload is on for `ifname`.
pub(crate) fn tx_checksum(fd: RawFd, ifname: &str) -> io::Result<bool> {
    ethtool_value(fd, ifname, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}
