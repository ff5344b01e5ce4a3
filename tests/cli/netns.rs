//! Network namespaces for tests: made by the test, deleted when their guard is
//! dropped (also when the test fails), and the few helpers that go with them
//! (the can-it-run check, running `ip` and other commands, entering a namespace
//! from a thread). Addresses used inside them come from 198.18.0.0/15 and
//! 2001:db8::/32 only.
//!
//! One file for several crates: the CLI tests have it as `crate::netns`; the
//! runtime's tests (`runtime/tests/support/mod.rs`), `benches/apps.rs` and the
//! DNS responder example's end-to-end test include it by path. So it uses
//! nothing but `std` and `libc`. It is not a topology: it makes a veth
//! pair, loads nftables rules and stops a child process when asked, but which
//! pairs, addresses and routes are the callers'.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why namespace tests cannot run here, or `None` when they can (root, `ip`).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

/// The environment variable `.ci/run` sets: under it, a test that would be
/// skipped fails instead (CI is root and installs every tool the tests use).
pub const CI_VAR: &str = "LBP_CI";

/// Say that `test` is skipped because of `why`, or, under CI ([`CI_VAR`]), fail
/// it: there no test passes by skipping.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(CI_VAR).is_some() {
        panic!("{test} cannot run here ({why}); under CI ({CI_VAR}) no test passes by skipping");
    }
    eprintln!("SKIPPED: {test}: {why}");
}

/// Run a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named `lbpt-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "lbpt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Run a command inside the namespace (`ip netns exec`) and wait for it
    /// (panics on failure).
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// A command inside the namespace, not yet started (for servers and clients).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Set `KEY=VALUE` (sysctl notation) inside the namespace: written to
    /// `/proc/sys` by a thread that entered it (no `sysctl` program needed).
    pub fn sysctl(&self, kv: &str) {
        let (key, value) = kv.split_once('=').expect("KEY=VALUE");
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        let r = self.within({
            let path = path.clone();
            move || std::fs::write(&path, value)
        });
        r.unwrap_or_else(|e| panic!("{}: {path}: {e}", self.name));
    }

    /// Move the calling thread into the namespace (use a thread of its own: the
    /// thread stays there).
    #[allow(dead_code)] // The runtime's tests use it; the CLI tests use `within`.
    pub fn enter(&self) {
        enter(&self.path());
    }

    /// Run `f` on a thread of its own that has entered the namespace (sockets it
    /// opens belong to the namespace), and return its result.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("a namespace thread panicked")
    }

    /// The namespace's file, for [`enter`] from a thread that outlives the call
    /// that spawns it.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

/// Move the calling thread into the namespace at `path` (`/var/run/netns/NAME`),
/// for a thread that outlives the call that spawns it (see [`Netns::within`] for
/// one that does not).
pub fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: `f` is an open namespace file for the call's duration; setns changes
    // only the calling thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A veth pair from `a` (interface `a_if`) to `b` (interface `b_if`), both up,
/// with transmit checksum offload off on both ends (a frame a local stack sends
/// must carry its checksum: AF_XDP sees the bytes, not the offload request).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.exec(&["ethtool", "-K", ifname, "tx", "off"]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Load nftables rules (`nft -f -`) in the namespace `ns`.
pub fn nft(ns: &Netns, rules: &str) {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write rules");
    let out = child.wait_with_output().expect("nft ends");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait at most `within` for a line of the child's standard output (piped)
/// that starts with `prefix`: the line, or `None` when the output ended (the
/// child exited) or the time ran out first. A thread reads the output to its
/// end (at most 10 000 lines), so that the child never blocks writing it.
pub fn wait_for_line(child: &mut Child, prefix: &str, within: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(10_000) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + within;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Stop a child process: SIGTERM, a wait of at most 10 s, then SIGKILL; its
/// exit status.
pub fn stop(mut child: Child) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the PID of our own child, which has not been reaped
    // (try_wait saw it running), so the PID cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
