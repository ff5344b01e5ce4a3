//! The lab against the kernel, as root: namespaces made and removed, veth pairs,
//! a bridge, addresses and routes that carry UDP between namespaces, transmit
//! checksum offload off. Not root: each test prints `SKIPPED: <test>: <why>` and
//! returns, except under CI (`LBP_CI` set), where a skip fails.
//!
//! Traffic stays inside the namespaces a test makes; addresses come from
//! 198.18.0.0/15 and 2001:db8::/32 only. Names carry the process id and a
//! counter, so the tests run in parallel with each other and with other runs.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lbp_lab::{Netns, veth};

/// Whether the calling test can run (as root); if not, say it is skipped, or
/// under CI fail. The test harness names each test's thread after the test.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a lab test")
        .to_string();
    lbp_lab::testing::skip(&test, "needs root (network namespaces)");
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A namespace name of this process's own.
fn unique(tag: &str) -> String {
    format!(
        "lbplab-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// New namespaces for the calling test, one a tag, or none when it cannot run
/// here (see [`can_run`]).
fn namespaces<const N: usize>(tags: [&str; N]) -> Option<[Netns; N]> {
    can_run().then(|| tags.map(|tag| Netns::new(&unique(tag)).unwrap_or_else(|e| panic!("{e}"))))
}

/// Whether something is mounted on `path` in this process's mount namespace.
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// Send a datagram from a socket in `from` to `dst`, received on a socket bound
/// to `dst` in `to`, and check it came from address `src`. Resent every 100 ms
/// (the first may wait on neighbour discovery), for 5 s at most.
fn udp(from: &Netns, to: &Netns, dst: &str, src: &str) {
    let dst: SocketAddr = dst.parse().unwrap();
    let rx = to
        .within(|| UdpSocket::bind(dst))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {dst} in {}: {e}", to.name()));
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let any: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let tx = from.within(|| UdpSocket::bind(any)).unwrap().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        tx.send_to(b"lab", dst)
            .unwrap_or_else(|e| panic!("send to {dst} from {}: {e}", from.name()));
        if let Ok((n, peer)) = rx.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"lab");
            assert_eq!(peer.ip(), src.parse::<IpAddr>().unwrap());
            return;
        }
    }
    panic!("no datagram from {} to {dst} in {}", from.name(), to.name());
}

/// Run `program args` in `ns`; its standard output.
fn output(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} in {}: {e}", ns.name()));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_namespace_is_made_as_ip_netns_add_does_and_removed_on_drop() {
    let Some([ns]) = namespaces(["life"]) else {
        return;
    };
    let path = ns.path().to_path_buf();
    assert_eq!(path, Path::new(lbp_lab::NETNS_RUN_DIR).join(ns.name()));
    assert!(mounted(&path), "{} is not a mount point", path.display());
    // A namespace of its own, not this process's.
    let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let its = std::fs::metadata(&path).unwrap().ino();
    assert_ne!(own, its);
    assert_eq!(
        ns.within(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
            .unwrap(),
        its
    );
    // Loopback is up: a datagram to itself arrives.
    let lo = ns
        .within(|| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"lo", s.local_addr()?)?;
            let mut buf = [0u8; 8];
            s.recv(&mut buf).map(|n| buf[..n].to_vec())
        })
        .unwrap()
        .unwrap();
    assert_eq!(lo, b"lo");
    // A second namespace of the same name fails, and leaves the first alone.
    let e = Netns::new(ns.name()).unwrap_err().to_string();
    assert!(e.contains("File exists"), "{e}");
    assert!(mounted(&path));
    assert!(ns.within(|| ()).is_ok());
    // A panic on a thread in it is an error, not a panic here.
    let e = ns.within(|| panic!("on purpose")).unwrap_err().to_string();
    assert!(e.contains("panicked"), "{e}");
    assert!(Netns::new("a/b").is_err());
    drop(ns);
    assert!(!path.exists(), "{} still there", path.display());
    assert!(!mounted(&path), "{} still mounted", path.display());
}

#[test]
fn a_panic_half_way_removes_the_namespaces() {
    if !can_run() {
        return;
    }
    let names = [unique("panic-a"), unique("panic-b")];
    let paths: Vec<_> = names
        .iter()
        .map(|n| Path::new(lbp_lab::NETNS_RUN_DIR).join(n))
        .collect();
    let r = std::panic::catch_unwind(|| {
        let a = Netns::new(&names[0]).unwrap();
        let b = Netns::new(&names[1]).unwrap();
        veth(&a, "v0", &b, "v1").unwrap();
        assert!(paths.iter().all(|p| mounted(p)));
        panic!("half way");
    });
    assert!(r.is_err());
    for p in &paths {
        assert!(!p.exists(), "{} still there", p.display());
        assert!(!mounted(p), "{} still mounted", p.display());
    }
}

#[test]
fn a_veth_pair_carries_udp_over_ipv4_and_ipv6_without_checksum_offload() {
    let Some([a, b]) = namespaces(["veth-a", "veth-b"]) else {
        return;
    };
    veth(&a, "v0", &b, "v1").unwrap();
    let e = veth(&a, "v0", &b, "v1").unwrap_err().to_string();
    assert!(
        e.starts_with("veth v0/v1") && e.contains("File exists"),
        "{e}"
    );
    // Offload is on by default on a veth; off, it reads back off.
    for (ns, ifname) in [(&a, "v0"), (&b, "v1")] {
        assert!(
            ns.tx_checksum(ifname).unwrap(),
            "{ifname} offload on at first"
        );
        ns.tx_checksum_off(ifname).unwrap();
        assert!(
            !ns.tx_checksum(ifname).unwrap(),
            "{ifname} offload still on"
        );
        ns.link_up(ifname).unwrap();
    }
    assert!(
        a.tx_checksum_off("nosuchif")
            .unwrap_err()
            .to_string()
            .contains("nosuchif")
    );
    a.add_address("v0", "198.18.0.1/24").unwrap();
    a.add_address("v0", "2001:db8::1/64").unwrap();
    b.add_address("v1", "198.18.0.2/24").unwrap();
    b.add_address("v1", "2001:db8::2/64").unwrap();
    let e = b
        .add_address("v1", "198.18.0.2/24")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("address 198.18.0.2/24 on v1") && e.contains("File exists"),
        "{e}"
    );
    let e = b
        .add_address("nosuchif", "198.18.0.3/24")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nosuchif") && e.contains("No such device"),
        "{e}"
    );
    assert!(b.add_address("v1", "198.18.0.3").is_err());
    // Binding at once to the IPv6 address shows no duplicate address detection
    // holds it (a tentative address cannot be bound).
    udp(&a, &b, "198.18.0.2:4000", "198.18.0.1");
    udp(&a, &b, "[2001:db8::2]:4000", "2001:db8::1");
    udp(&b, &a, "[2001:db8::1]:4001", "2001:db8::2");
}

#[test]
fn a_bridge_with_two_ports_joins_two_namespaces() {
    let Some([h1, h2, sw]) = namespaces(["br-h1", "br-h2", "br-sw"]) else {
        return;
    };
    sw.add_bridge("br0").unwrap();
    let e = sw.add_bridge("br0").unwrap_err().to_string();
    assert!(e.contains("bridge br0") && e.contains("File exists"), "{e}");
    sw.link_up("br0").unwrap();
    for (h, port, a4, a6) in [
        (&h1, "p1", "198.18.1.1/24", "2001:db8:1::1/64"),
        (&h2, "p2", "198.18.1.2/24", "2001:db8:1::2/64"),
    ] {
        veth(h, "eth0", &sw, port).unwrap();
        sw.set_master(port, "br0").unwrap();
        sw.link_up(port).unwrap();
        h.link_up("eth0").unwrap();
        h.add_address("eth0", a4).unwrap();
        h.add_address("eth0", a6).unwrap();
    }
    assert!(sw.set_master("p1", "nosuchbr").is_err());
    // The kernel's view, through sysfs in the switch's namespace.
    let ports = output(&sw, "ls", &["/sys/class/net/br0/brif"]);
    assert_eq!(ports.split_whitespace().collect::<Vec<_>>(), ["p1", "p2"]);
    let delay = output(&sw, "cat", &["/sys/class/net/br0/bridge/forward_delay"]);
    assert_eq!(delay.trim(), "0");
    udp(&h1, &h2, "198.18.1.2:5000", "198.18.1.1");
    udp(&h2, &h1, "[2001:db8:1::1]:5000", "2001:db8:1::2");
}

#[test]
fn default_routes_carry_udp_through_a_router_namespace() {
    let Some([h1, r, h2]) = namespaces(["rt-h1", "rt-r", "rt-h2"]) else {
        return;
    };
    r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    r.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    let fwd = r
        .within(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .unwrap()
        .unwrap();
    assert_eq!(fwd.trim(), "1");
    assert!(r.sysctl("net.no.such.key", "1").is_err());
    for (h, rif, net4, net6) in [
        (&h1, "r1", "198.18.4", "2001:db8:4::"),
        (&h2, "r2", "198.18.5", "2001:db8:5::"),
    ] {
        veth(h, "eth0", &r, rif).unwrap();
        r.link_up(rif).unwrap();
        h.link_up("eth0").unwrap();
        r.add_address(rif, &format!("{net4}.1/24")).unwrap();
        r.add_address(rif, &format!("{net6}1/64")).unwrap();
        h.add_address("eth0", &format!("{net4}.2/24")).unwrap();
        h.add_address("eth0", &format!("{net6}2/64")).unwrap();
        h.add_default_route(&format!("{net4}.1")).unwrap();
        h.add_default_route(&format!("{net6}1")).unwrap();
    }
    let e = h1.add_default_route("198.18.4.1").unwrap_err().to_string();
    assert!(
        e.contains("default route via 198.18.4.1") && e.contains("File exists"),
        "{e}"
    );
    assert!(h1.add_default_route("nowhere").is_err());
    // Routed: the datagram keeps its source, from another subnet.
    udp(&h1, &h2, "198.18.5.2:6000", "198.18.4.2");
    udp(&h2, &h1, "[2001:db8:4::2]:6000", "2001:db8:5::2");
}

#[test]
fn a_command_runs_in_the_namespace_and_sees_its_sysfs() {
    let Some([a, b]) = namespaces(["cmd-a", "cmd-b"]) else {
        return;
    };
    veth(&a, "only-here", &b, "peer").unwrap();
    let ino = std::fs::metadata(a.path()).unwrap().ino();
    let link = output(&a, "readlink", &["/proc/self/ns/net"]);
    assert_eq!(link.trim(), format!("net:[{ino}]"));
    let links = output(&a, "ls", &["/sys/class/net"]);
    assert_eq!(
        links.split_whitespace().collect::<Vec<_>>(),
        ["lo", "only-here"]
    );
    // This process's /sys is untouched.
    assert!(!Path::new("/sys/class/net/only-here").exists());
}
