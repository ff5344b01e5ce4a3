//! What lbp's tests and benchmarks share to run in the lab: one copy for the CLI
//! tests, the runtime's and the traffic generator's tests, the DNS responder
//! example's end-to-end test and `benches/apps.rs`. Everything here panics on a
//! failure (a test's way to say it), where the rest of the lab returns errors.
//!
//! - The can-it-run convention: [`unavailable`] says why namespace tests cannot
//!   run here (not root, no `ip`), [`missing`] which commands are not on `PATH`,
//!   and [`skip`] prints `SKIPPED: <test>: <why>`, or under CI ([`CI_VAR`])
//!   fails the test: there no test passes by skipping.
//! - [`Netns`]: a namespace named `lbpt-<tag>-<pid>-<n>` (so tests run in
//!   parallel with each other and with other runs), removed on drop, with the
//!   lab's netlink operations (through `Deref`) and `ip` for what the lab does
//!   not do ([`Netns::ip`]); [`veth`], [`nft`].
//! - Child processes: [`wait_for_line`] (the ready line), [`stop`] (SIGTERM by
//!   PID, then SIGKILL), and [`Daemon`], a server process with both.
//! - [`frame`]: checksums and the few frame edits the ring tests make;
//!   [`probe`]: the client side (HTTP, UDP, ping, TTL, raw frames) and
//!   back-end servers.
//!
//! Addresses used in the namespaces come from 198.18.0.0/15 and 2001:db8::/32
//! only; they are the callers'.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod frame;
pub mod probe;

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

/// Which of `tools` are not on `PATH`.
pub fn missing<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .copied()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .collect()
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

/// A test's network namespace, removed on drop (also when the test fails). The
/// lab's operations ([`crate::Netns`]) are reached through `Deref`; the methods
/// here panic where those return errors.
#[derive(Debug)]
pub struct Netns(crate::Netns);

impl Deref for Netns {
    type Target = crate::Netns;
    fn deref(&self) -> &crate::Netns {
        &self.0
    }
}

impl Netns {
    /// A new namespace named `lbpt-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "lbpt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Netns(crate::Netns::new(&name).unwrap_or_else(|e| panic!("{e}")))
    }

    /// `ip -n NAME ARGS...`, for what the lab does not do (MAC addresses,
    /// neighbours, routes other than the default, showing links).
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", self.name()];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Run a command inside the namespace and wait for it (panics on failure).
    pub fn exec(&self, args: &[&str]) -> Output {
        let out = self
            .command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{}: {args:?}: {e}", self.name()));
        assert!(
            out.status.success(),
            "{}: {args:?} failed: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Set `KEY=VALUE` (sysctl notation) inside the namespace.
    pub fn sysctl(&self, kv: &str) {
        let (key, value) = kv.split_once('=').expect("KEY=VALUE");
        self.0.sysctl(key, value).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Move the calling thread into the namespace (use a thread of its own: the
    /// thread stays there).
    pub fn enter(&self) {
        self.0.enter().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Run `f` on a thread of its own that has entered the namespace (sockets it
    /// opens belong to the namespace), and return its result.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.0.within(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The namespace's file, for [`enter`] from a thread that outlives the call
    /// that spawns it.
    pub fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

/// Move the calling thread into the namespace whose file is `path`, for a
/// thread that outlives the call that spawns it (see [`Netns::within`] for one
/// that does not).
pub fn enter(path: impl AsRef<Path>) {
    crate::enter(path).unwrap_or_else(|e| panic!("{e}"));
}

/// A veth pair from `a` (interface `a_if`) to `b` (interface `b_if`), both up,
/// with transmit checksum offload off on both ends (a frame a local stack sends
/// must carry its checksum: AF_XDP sees the bytes, not the offload request).
pub fn veth(a: &crate::Netns, a_if: &str, b: &crate::Netns, b_if: &str) {
    crate::veth(a, a_if, b, b_if).unwrap_or_else(|e| panic!("{e}"));
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.tx_checksum_off(ifname).unwrap_or_else(|e| panic!("{e}"));
        ns.link_up(ifname).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A veth pair from `a` (interface `a_if`) to `b` (interface `b_if`), both up,
/// offloads as the kernel sets them.
pub fn veth_up(a: &crate::Netns, a_if: &str, b: &crate::Netns, b_if: &str) {
    crate::veth(a, a_if, b, b_if).unwrap_or_else(|e| panic!("{e}"));
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.link_up(ifname).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Load nftables rules (`nft -f -`) in the namespace `ns`.
pub fn nft(ns: &crate::Netns, rules: &str) {
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

/// A server process (`lbp run`, an application's binary) started by a test:
/// ready once it printed its ready line, its standard error kept in a file, and
/// stopped ([`stop`]) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// A directory of its own (its standard error, and whatever the caller puts
    /// there: a control socket), removed on drop.
    dir: PathBuf,
    /// The ready line it printed.
    pub ready_line: String,
}

impl Daemon {
    /// A directory for the next daemon: made before it starts, so that its
    /// command line can name files in it.
    pub fn dir() -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "lbp-lab-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Start `cmd` (`what` names it in errors), its standard output piped and its
    /// standard error written to `dir/stderr` ([`Daemon::dir`]), and wait at
    /// most `within` for a line starting with `ready`.
    pub fn start(
        what: &str,
        mut cmd: Command,
        dir: PathBuf,
        ready: &str,
        within: Duration,
    ) -> Result<Daemon, String> {
        let stderr = fs::File::create(dir.join("stderr")).map_err(|e| e.to_string())?;
        let mut daemon = Daemon {
            child: None,
            dir,
            ready_line: String::new(),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let line = wait_for_line(&mut child, ready, within);
        daemon.child = Some(child);
        match line {
            Some(line) => {
                daemon.ready_line = line;
                Ok(daemon)
            }
            None => Err(format!(
                "{what} did not get ready (alive: {}); stderr:\n{}",
                daemon.alive(),
                daemon.stderr_text()
            )),
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it wrote on standard error so far (the last 4 000 bytes).
    pub fn stderr_text(&self) -> String {
        let text = fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// SIGTERM, then wait (bounded); SIGKILL if it does not end. The exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        stop(self.child.take()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Skip the calling test (with a line saying so) when namespaces are
/// unavailable ([`unavailable`](crate::testing::unavailable)), or one of the commands
/// named is not on `PATH`; under CI, fail it instead (see
/// [`skip`](crate::testing::skip)): there every tool is installed and a skip is a test
/// that did not run. The test is named by its module path.
#[macro_export]
macro_rules! require_netns {
    ($($tool:literal),* $(,)?) => {
        if let Some(why) = $crate::testing::unavailable().or_else(|| {
            let gone = $crate::testing::missing(&[$($tool),*]);
            (!gone.is_empty()).then(|| format!("`{}` missing", gone.join("`, `")))
        }) {
            $crate::testing::skip(
                module_path!(),
                &format!("needs root and network namespaces ({why})"),
            );
            return;
        }
    };
}
