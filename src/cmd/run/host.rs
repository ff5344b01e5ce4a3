//! What `lbp run` needs of the host: signals, CPUs and pinning, the OS
//! interfaces' queues and MACs, and the TAP with its addresses and routes.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use lbp_runtime::config::Appliance;
use lbp_runtime::ring::tap::{Tap, TapConfig};
use lbp_runtime::run::{LOCAL_LINK, local_addresses};

/// Set by SIGINT and SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Set by SIGHUP: reload the policy file the appliance runs (the one it
/// started with, or the last one `lbp reload` gave it).
pub static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

pub fn install_signal_handlers() -> Result<(), String> {
    lbp_runtime::sys::on_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP], on_signal)
        .map_err(|e| format!("cannot install a signal handler: {e}"))
}

/// `0,2,4-6` to CPU ids, in order, without repeats.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--cores `{s}`: expected CPU ids like `0,1` or `0-3`");
    let mut v: Vec<usize> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        for c in a..=b {
            if !v.contains(&c) {
                v.push(c);
            }
        }
    }
    if v.is_empty() {
        return Err(bad());
    }
    Ok(v)
}

/// Receive queues of an OS interface (1 when unknown).
pub fn rx_queues(os_name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{os_name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The MAC of an OS interface, from sysfs.
pub fn os_mac(os_name: &str) -> Result<[u8; 6], String> {
    let path = format!("/sys/class/net/{os_name}/address");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no such interface `{os_name}` (no {path})"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{path}: not a MAC address: `{}`", text.trim()));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("{path}: not a MAC address"))?;
    }
    Ok(mac)
}

/// What an errno usually means at start.
pub fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (lbp run needs root: CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and, for the XDP fast path, CAP_PERFMON)"
        }
        Some(libc::EBUSY) => " (the interface is in use: another XDP program or TAP holds it)",
        Some(libc::ENODEV) | Some(libc::ENXIO) => " (no such interface)",
        _ => "",
    }
}

/// Create the TAP with the appliance's addresses and the kernel routes that
/// send replies back through it. The first IPv4 address and the IPv6 ones are
/// set by `Tap::create` (ioctls); further IPv4 addresses and the policy's
/// routes beyond its connected networks are added with `ip` (a warning if that
/// fails: the TAP still works for the first address).
pub fn make_tap(name: &str, app: &Appliance) -> Result<Tap, String> {
    let addrs = local_addresses(app);
    let first_v4 = addrs.iter().find_map(|&(a, l)| match a {
        IpAddr::V4(v) => Some((v, l)),
        IpAddr::V6(_) => None,
    });
    let ipv6 = addrs
        .iter()
        .filter_map(|&(a, l)| match a {
            IpAddr::V6(v) => Some((v, l)),
            IpAddr::V4(_) => None,
        })
        .collect();
    let tap = Tap::create(&TapConfig {
        name: name.to_string(),
        mac: LOCAL_LINK.tap_mac,
        mtu: 1500,
        ipv4: first_v4,
        ipv6,
    })
    .map_err(|e| format!("cannot create the TAP `{name}`: {e}{}", hint(&e)))?;
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for &(a, l) in &addrs {
        if a.is_ipv4() && Some(a) != first_v4.map(|(v, _)| IpAddr::V4(v)) {
            cmds.push(vec![
                "addr".into(),
                "add".into(),
                format!("{a}/{l}"),
                "dev".into(),
                name.into(),
            ]);
        }
    }
    cmds.extend(
        tap_routes(app)
            .into_iter()
            .map(|(prefix, len)| tap_route("replace", prefix, len, name)),
    );
    run_ip(cmds);
    Ok(tap)
}

/// The prefixes of the policy's routes through a gateway: the kernel sends the
/// appliance's own traffic for them (replies from programs on the box) into the
/// TAP, and the switching cores route it on.
fn tap_routes(app: &Appliance) -> Vec<(IpAddr, u8)> {
    let mut v: Vec<(IpAddr, u8)> = app
        .routes
        .iter()
        .filter(|r| r.via.is_some())
        .map(|r| (r.prefix, r.len))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `ip route OP PREFIX/LEN dev TAP metric 1024`.
fn tap_route(op: &str, prefix: IpAddr, len: u8, tap: &str) -> Vec<String> {
    let fam = if prefix.is_ipv4() { "-4" } else { "-6" };
    [
        fam,
        "route",
        op,
        &format!("{prefix}/{len}"),
        "dev",
        tap,
        "metric",
        "1024",
    ]
    .map(String::from)
    .to_vec()
}

/// Run `ip` commands; a failure is a warning (the appliance goes on without it).
fn run_ip(cmds: Vec<Vec<String>>) {
    for c in cmds {
        match Command::new("ip").args(&c).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lbp: warning: ip {}: {}",
                c.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("lbp: warning: ip {}: {e}", c.join(" ")),
        }
    }
}

/// After a reload: the TAP's kernel routes follow the new policy's routes through a
/// gateway (added ones added, removed ones removed).
pub fn sync_tap_routes(tap: &str, old: &Appliance, new: &Appliance) {
    let (before, after) = (tap_routes(old), tap_routes(new));
    let mut cmds: Vec<Vec<String>> = before
        .iter()
        .filter(|r| !after.contains(r))
        .map(|&(p, l)| tap_route("del", p, l, tap))
        .collect();
    cmds.extend(
        after
            .iter()
            .filter(|r| !before.contains(r))
            .map(|&(p, l)| tap_route("replace", p, l, tap)),
    );
    run_ip(cmds);
}
