//! Named network namespaces, and the links, addresses and routes in them.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::rtnl::Rtnl;
use crate::{Error, Result, ethtool, setns};

/// Where named namespaces live, as iproute2 keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace, made as `ip netns add NAME` makes one and removed
/// on drop as `ip netns del NAME` removes it. Loopback is up in it.
pub struct Netns {
    name: String,
    /// The namespace, open: to enter it, and to name it to the kernel.
    file: Arc<File>,
    /// A `NETLINK_ROUTE` socket opened inside the namespace.
    rtnl: Mutex<Rtnl>,
    /// `/run/netns/NAME`, unmounted and removed on drop.
    mount: NsMount,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("name", &self.name)
            .field("path", &self.mount.0)
            .finish()
    }
}

/// The namespace's file in [`NETNS_RUN_DIR`]: from the moment it is created,
/// dropping this unmounts (lazily) and removes it, so a creation that fails half
/// way, or a panic, leaves nothing behind.
struct NsMount(PathBuf);

impl Drop for NsMount {
    fn drop(&mut self) {
        if let Ok(path) = cstring(self.0.as_os_str()) {
            // SAFETY: `path` is a NUL-terminated string that lives across the
            // call. It fails (EINVAL) when nothing is mounted there yet: then
            // there is only the file to remove.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_file(&self.0);
    }
}

/// Serialises making [`NETNS_RUN_DIR`] a shared mount point between this
/// process's threads (each would otherwise mount it onto itself once more).
static RUN_DIR: Mutex<()> = Mutex::new(());

impl Netns {
    /// Create the namespace `name`: `/run/netns/NAME`, a bind mount of a new
    /// network namespace, with loopback up.
    pub fn new(name: &str) -> Result<Netns> {
        let what = {
            let name = name.to_string();
            move || format!("netns {name}")
        };
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
            || name.len() > 255
        {
            return Err(Error::new(what(), "not a namespace name"));
        }
        let dir = Path::new(NETNS_RUN_DIR);
        make_run_dir(dir).map_err(|e| Error::new(what(), format_args!("{NETNS_RUN_DIR}: {e}")))?;
        let path = dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| Error::new(what(), format_args!("{}: {e}", path.display())))?;
        let guard = NsMount(path);
        let target = cstring(guard.0.as_os_str()).map_err(|e| Error::new(what(), e))?;
        let in_thread = what.clone();
        // A thread of its own moves to a new namespace, which the bind mount then
        // keeps once the thread is gone; the socket opened there stays in it.
        let (file, rtnl) = std::thread::spawn(move || -> Result<(File, Rtnl)> {
            let what = in_thread;
            // SAFETY: unshare has no memory preconditions; with CLONE_NEWNET it
            // moves only this thread, which ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(Error::new(
                    what(),
                    format_args!("unshare: {}", io::Error::last_os_error()),
                ));
            }
            mount(c"/proc/thread-self/ns/net", &target, c"none", libc::MS_BIND)
                .map_err(|e| Error::new(what(), format_args!("bind mount: {e}")))?;
            let file = File::open("/proc/thread-self/ns/net").map_err(|e| Error::new(what(), e))?;
            let rtnl =
                Rtnl::open().map_err(|e| Error::new(what(), format_args!("netlink: {e}")))?;
            Ok((file, rtnl))
        })
        .join()
        .map_err(|_| Error::new(what(), "the thread creating it panicked"))??;
        let ns = Netns {
            name: name.into(),
            file: Arc::new(file),
            rtnl: Mutex::new(rtnl),
            mount: guard,
        };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// Its name (`ip netns exec NAME` enters it too).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.mount.0
    }

    /// Move the calling thread into the namespace.
    pub fn enter(&self) -> Result<()> {
        setns(&self.file).map_err(|e| Error::new(format_args!("netns {}: setns", self.name), e))
    }

    /// Run `f` on a thread that entered the namespace, and return its result
    /// (an error when the thread could not enter it, or panicked).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| s.spawn(|| self.enter().map(|()| f())).join()).map_err(|_| {
            Error::new(
                format_args!("netns {}", self.name),
                "a thread in it panicked",
            )
        })?
    }

    /// A command for `program` that runs in the namespace, as `ip netns exec
    /// NAME program` runs it: in the namespace, with a mount namespace of its own
    /// where `/sys` shows the namespace's interfaces (without iproute2's binding
    /// of `/etc/netns/NAME`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let file = Arc::clone(&self.file);
        // What the child needs is made before the fork: after it, only system
        // calls.
        let source = cstring(OsStr::new(&self.name)).unwrap_or_default();
        let mut sys_flags = 0;
        // SAFETY: statvfs is plain data; all-zero is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: the path is NUL-terminated and `st` is valid for writing.
        if unsafe { libc::statvfs(c"/sys".as_ptr(), &mut st) } == 0
            && st.f_flag & libc::ST_RDONLY != 0
        {
            sys_flags = libc::MS_RDONLY;
        }
        let pre_exec = move || -> io::Result<()> {
            setns(&file)?;
            // SAFETY: unshare has no memory preconditions; it gives the child a
            // mount namespace of its own, so the mounts below are its alone.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // Mounts and unmounts here do not propagate back.
            mount(c"", c"/", c"none", libc::MS_SLAVE | libc::MS_REC)?;
            // SAFETY: a NUL-terminated literal; failing (no /sys mounted) is fine.
            unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) };
            mount(&source, c"/sys", c"sysfs", sys_flags)
        };
        // SAFETY: between fork and exec the closure only makes system calls
        // (setns, unshare, mount, umount2) on data made before the fork; it does
        // not allocate, lock or touch other threads' state (an error from the
        // OS's errno needs no allocation).
        unsafe { cmd.pre_exec(pre_exec) };
        cmd
    }

    /// Write `value` to `/proc/sys/<key with / for .>` inside the namespace
    /// (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.within(|| fs::write(&path, value))?
            .map_err(|e| Error::new(format_args!("netns {}: {path}", self.name), e))
    }

    fn rtnl(&self) -> MutexGuard<'_, Rtnl> {
        self.rtnl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index of interface `ifname`.
    pub fn index(&self, ifname: &str) -> Result<u32> {
        self.rtnl()
            .index(ifname)
            .map_err(|e| Error::new(format_args!("netns {}", self.name), e))
    }

    /// Set interface `ifname` up.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(ifname.into()));
        let what = || format!("netns {}: {ifname} up", self.name);
        self.rtnl()
            .request(&what, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }

    /// Create bridge `name` (down, forwarding delay 0: ports forward at once).
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::ForwardDelay(0)])),
        ]));
        let what = || format!("netns {}: bridge {name}", self.name);
        self.rtnl()
            .request(
                &what,
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
    }

    /// Make interface `ifname` a port of bridge `master`.
    pub fn set_master(&self, ifname: &str, master: &str) -> Result<()> {
        let what = || format!("netns {}: {ifname} master {master}", self.name);
        let mut rtnl = self.rtnl();
        let master_index = rtnl.index(master).map_err(|e| Error::new(what(), e))?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(ifname.into()));
        msg.attributes.push(LinkAttribute::Controller(master_index));
        rtnl.request(&what, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }

    /// Add address `cidr` (`198.18.0.2/24`, `2001:db8::2/64`) to interface
    /// `ifname`. IPv6 addresses skip duplicate address detection (usable at once,
    /// as with `ip addr add ... nodad`).
    pub fn add_address(&self, ifname: &str, cidr: &str) -> Result<()> {
        let what = || format!("netns {}: address {cidr} on {ifname}", self.name);
        let (addr, prefix_len) = parse_cidr(cidr).ok_or_else(|| {
            Error::new(
                what(),
                "not an address with a prefix length (ADDRESS/LENGTH)",
            )
        })?;
        let mut rtnl = self.rtnl();
        let index = rtnl.index(ifname).map_err(|e| Error::new(what(), e))?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr);
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        if addr.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        rtnl.request(
            &what,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        if addr.is_ipv6() && rtnl.running(index).map_err(|e| Error::new(what(), e))? {
            wait_local(&mut rtnl, addr).map_err(|e| Error::new(what(), e))?;
        }
        Ok(())
    }

    /// Add the default route (IPv4 or IPv6, as `gateway` is) via `gateway`.
    pub fn add_default_route(&self, gateway: &str) -> Result<()> {
        let what = || format!("netns {}: default route via {gateway}", self.name);
        let gw: IpAddr = gateway
            .parse()
            .map_err(|_| Error::new(what(), "not an IP address"))?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gw);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        self.rtnl()
            .request(
                &what,
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
    }

    /// Turn transmit checksum offload off on interface `ifname`, as `ethtool -K
    /// IF tx off` does. A veth otherwise hands its peer frames whose checksums
    /// were never filled in, which a packet socket or AF_XDP takes as they are.
    pub fn tx_checksum_off(&self, ifname: &str) -> Result<()> {
        // The ioctl goes through the namespace's netlink socket: a socket's
        // ioctl that its family does not know (netlink knows none) reaches the
        // interfaces of the socket's namespace.
        ethtool::tx_checksum_off(self.rtnl().fd(), ifname).map_err(|e| {
            Error::new(
                format_args!(
                    "netns {}: {ifname} transmit checksum offload off",
                    self.name
                ),
                e,
            )
        })
    }

    /// Whether any transmit checksum offload is on for interface `ifname` (what
    /// `ethtool -k IF` shows as `tx-checksumming`).
    pub fn tx_checksum(&self, ifname: &str) -> Result<bool> {
        ethtool::tx_checksum(self.rtnl().fd(), ifname).map_err(|e| {
            Error::new(
                format_args!("netns {}: {ifname} transmit checksum offload", self.name),
                e,
            )
        })
    }
}

/// A veth pair: interface `a_if` in `a`, its peer `b_if` in `b`, both down.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(b_if.into()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(b.file.as_raw_fd()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(a_if.into()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    let what = || format!("veth {a_if}/{b_if} (netns {}/{})", a.name, b.name);
    a.rtnl()
        .request(
            &what,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
}

/// Wait until `addr` is a local address to the kernel (its route in the
/// local table), at most [`LOCAL_WAIT`]. Even without duplicate address
/// detection an IPv6 address becomes usable only when the kernel's address
/// work has run, which holds the routing lock: on a busy machine (namespaces
/// being made and removed beside) that can take a good part of a second.
fn wait_local(rtnl: &mut Rtnl, addr: IpAddr) -> std::result::Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = if addr.is_ipv6() { 128 } else { 32 };
        msg.attributes
            .push(RouteAttribute::Destination(addr.into()));
        // No route yet is an error (unreachable): not local yet either.
        let local = rtnl
            .request(&|| format!("route to {addr}"), RouteNetlinkMessage::GetRoute(msg), 0)
            .is_ok_and(|answers| {
                answers.iter().any(|a| {
                    matches!(a, RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Local)
                })
            });
        if local {
            return Ok(());
        }
        if start.elapsed() > LOCAL_WAIT {
            return Err(format!("not usable after {LOCAL_WAIT:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// How long [`wait_local`] waits for an address to become usable.
const LOCAL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `198.18.0.2/24` into the address and the prefix length.
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::other("a NUL in a path"))
}

/// mount(2) without data.
fn mount(source: &CStr, target: &CStr, fstype: &CStr, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the three strings are NUL-terminated and live across the call;
    // no data is passed.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make `dir` exist and be a shared mount point, as iproute2 does before it
/// mounts a namespace there: mounts made in it then show in every mount
/// namespace that shares it (`ip netns exec` sees them).
fn make_run_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let target = cstring(dir.as_os_str())?;
    let _one = RUN_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let mut made_mount_point = false;
    loop {
        match mount(c"", &target, c"none", libc::MS_SHARED | libc::MS_REC) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet; make it one (once).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !made_mount_point => {
                mount(&target, &target, c"none", libc::MS_BIND | libc::MS_REC)?;
                made_mount_point = true;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("198.18.0.2/24"),
            Some(("198.18.0.2".parse().unwrap(), 24))
        );
        assert_eq!(
            parse_cidr("2001:db8::2/64"),
            Some(("2001:db8::2".parse().unwrap(), 64))
        );
        assert_eq!(parse_cidr("198.18.0.2"), None);
        assert_eq!(parse_cidr("198.18.0.2/33"), None);
        assert_eq!(parse_cidr("2001:db8::2/129"), None);
        assert_eq!(parse_cidr("eth0/24"), None);
    }
}
