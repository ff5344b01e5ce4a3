//! A network lab in namespaces for lbp's demo and tests: named network
//! namespaces, veth pairs, bridges, addresses and routes, and transmit checksum
//! offload off, with no external command (no `ip`, no `ethtool`): it needs root
//! and nothing else.
//!
//! - [`Netns`]: a named network namespace, made as `ip netns add` makes one (so
//!   `ip netns list` and `ip netns exec` see it) and removed on drop. Code runs
//!   in it on a thread that entered it ([`Netns::within`]) and programs run in it
//!   through [`Netns::command`].
//! - Links over rtnetlink, each request on a `NETLINK_ROUTE` socket opened inside
//!   the namespace and its acknowledgement checked: [`veth`], [`Netns::add_bridge`],
//!   [`Netns::set_master`], [`Netns::link_up`], [`Netns::add_address`],
//!   [`Netns::add_default_route`]. A kernel refusal comes back as an [`Error`]
//!   naming what was asked (`veth client/eth0: File exists (os error 17)`).
//! - [`Netns::tx_checksum_off`]: what `ethtool -K IF tx off` does, through the
//!   ethtool ioctl.
//!
//! The messages are built with `netlink-packet-route` and sent on a blocking
//! `netlink-sys` socket (no async runtime: its default features are none). That
//! crate types every message and attribute the lab sends (a veth's peer with
//! `IFLA_NET_NS_FD`, a bridge's `IFLA_BR_FORWARD_DELAY`, `IFA_F_NODAD`), where
//! hand-written netlink would be a few hundred lines of nested attribute packing
//! and kernel constants to get right; it is the rust-netlink project's, which
//! `rtnetlink` and nmstate build on. Transmit checksum offload is the exception:
//! that project's `ethtool` crate speaks ethtool's netlink family only through
//! an async runtime (tokio or async-std), where the legacy `ETHTOOL_STXCSUM`
//! ioctl is one call (see `ethtool.rs`).
//!
//! For tests: [`testing`] (the namespaces, skip convention, child processes,
//! probes and servers that lbp's tests and benchmarks share) and [`pcap`]
//! (capture files of given frames).
//!
//! Addresses given to the lab are the caller's business; lbp's demo and tests
//! use 198.18.0.0/15 and 2001:db8::/32 only, and everything stays inside the
//! namespaces.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

mod ethtool;
mod netns;
pub mod pcap;
mod rtnl;
pub mod testing;

pub use netns::{NETNS_RUN_DIR, Netns, veth};

/// What went wrong, as one line naming what was asked and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    fn new(what: impl fmt::Display, why: impl fmt::Display) -> Error {
        Error(format!("{what}: {why}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.0
    }
}

/// The lab's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Move the calling thread into the network namespace whose file is `path`
/// (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn enter(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| Error::new(path.display(), e))?;
    setns(&f).map_err(|e| Error::new(format_args!("setns {}", path.display()), e))
}

/// Move the calling thread into the network namespace `f` refers to.
fn setns(f: &File) -> std::io::Result<()> {
    // SAFETY: `f` is an open file for the call's duration; setns with
    // CLONE_NEWNET changes only the calling thread's network namespace (and
    // fails on a file that is no network namespace).
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
