//! `lbp demo`. As root: a whole run exits 0 with every step of its summary
//! held, prints no escape code when piped, and leaves nothing behind; three
//! runs interrupted with SIGINT at three moments (while it builds its network,
//! during the balance step, during the agent step) end promptly and leave
//! nothing behind either: no namespace `lbpdemo-<pid>-*`, no interface of the
//! demo's names in the root namespace, no process of the demo's (`lbp run`,
//! `lbp agent`), no file of its, and no XDP program its processes held. As
//! another user, it refuses at once with a message saying it needs root. The
//! root cases are skipped (a `SKIPPED` line; under `LBP_CI` a failure) when the
//! tests do not run as root. Its built-in policy checks clean, is formatted and
//! passes its tests.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::skip;

const POLICY: &str = "src/cmd/demo/demo.lbp";
/// The steps the summary must list, in order.
const STEPS: [&str; 7] = [
    "balance", "reload", "health", "drain", "agent", "echo", "filter",
];
/// The interfaces the demo makes (all inside its namespaces).
const INTERFACES: [&str; 8] = [
    "client", "servers", "p-app", "p-b1", "p-b2", "p-b3", "br0", "lbp0",
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run a command with a time limit (killed by its PID when over): its output,
/// and the PID it had.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, u32) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let pid = child.id();
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = t_out.join().expect("reader");
    let stderr = t_err.join().expect("reader");
    (
        Output {
            status,
            stdout,
            stderr,
        },
        pid,
    )
}

/// A running `lbp demo`: its stdout lines as they come.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lbp"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lbp demo starts");
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (at most `limit`) for a line starting with `start`; whether it came.
    fn wait_line(&mut self, start: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(start);
                    self.stdout.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// SIGINT to the demo's own PID (as Ctrl-C would send it).
    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child, not yet reaped (it is waited for
        // only in `finish`), so the PID is still its own.
        let r = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Wait for the end (killed after `limit`, which fails the test): its exit
    /// status, its whole stdout and stderr.
    fn finish(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break Some(st);
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with the pipe (bounded: the demo has exited).
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(l);
        }
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        let stdout = self.stdout.join("\n");
        let stderr = stderr.unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "lbp demo did not end within {} s\nstdout:\n{stdout}\nstderr:\n{stderr}",
                limit.as_secs()
            );
        };
        (status, stdout, stderr)
    }
}

// ---- What the demo may leave behind ---------------------------------------------

/// `bpf(2)` with `attr`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a live `#[repr(C)]` block of `size_of::<T>()` bytes for
    // the call; the commands used here read and write only within it.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    }
}

/// The ids of every BPF program loaded now (`BPF_PROG_GET_NEXT_ID`).
fn loaded_programs() -> BTreeSet<u32> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    #[repr(C)]
    struct NextId {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut ids = BTreeSet::new();
    let mut a = NextId {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    // Bounded: ids only go up, and there are not a million programs.
    for _ in 0..1_000_000 {
        if sys_bpf(BPF_PROG_GET_NEXT_ID, &mut a) != 0 {
            break;
        }
        ids.insert(a.next_id);
        a.start_id = a.next_id;
    }
    ids
}

/// The PIDs and command lines of the processes whose command line has `needle`
/// (the demo's `lbp run` and `lbp agent` name its files `lbpdemo-<pid>.*`).
fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            v.push((pid, cmd));
        }
    }
    v
}

/// The XDP programs (`prog_type` 6, or an XDP link's program) that the
/// processes `pids` hold open, from their `/proc/PID/fdinfo`.
fn xdp_programs_held(pids: &[u32]) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for pid in pids {
        let dir = format!("/proc/{pid}/fdinfo");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(info) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let xdp = field("prog_type:").as_deref() == Some("6")
                || field("link_type:").as_deref() == Some("xdp");
            if let (true, Some(id)) = (xdp, field("prog_id:").and_then(|v| v.parse().ok())) {
                ids.insert(id);
            }
        }
    }
    ids
}

/// The network interfaces of the root namespace.
fn root_interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What a demo of PID `pid` left behind (empty: nothing), given the root
/// namespace's interfaces before it started and the XDP programs its processes
/// held. The kernel frees a deleted namespace's devices (and the XDP programs
/// attached to them) in the background: the programs get a few seconds.
fn leftovers(pid: u32, interfaces_before: &BTreeSet<String>, held: &BTreeSet<u32>) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = format!("lbpdemo-{pid}");
    for dir in ["/run/netns", "/var/run/netns"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}-")) {
                left.push(format!("namespace {dir}/{name}"));
            }
        }
    }
    for name in root_interfaces().difference(interfaces_before) {
        if INTERFACES.contains(&name.as_str()) {
            left.push(format!("interface {name} in the root namespace"));
        }
    }
    for (p, cmd) in processes_naming(&prefix) {
        left.push(format!("process {p}: {cmd}"));
    }
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{prefix}.")) {
            left.push(format!("file {}", e.path().display()));
        }
    }
    let end = Instant::now() + Duration::from_secs(20);
    let mut still: BTreeSet<u32> = held.intersection(&loaded_programs()).copied().collect();
    while !still.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        still = held.intersection(&loaded_programs()).copied().collect();
    }
    for id in still {
        left.push(format!("XDP program {id} still loaded 20 s after the end"));
    }
    left
}

/// The XDP programs held by the demo of PID `pid`'s processes now.
fn demo_programs(pid: u32) -> BTreeSet<u32> {
    let pids: Vec<u32> = processes_naming(&format!("lbpdemo-{pid}."))
        .into_iter()
        .map(|p| p.0)
        .collect();
    xdp_programs_held(&pids)
}

/// Whether the root tests can run; `None` after a `skip`. Holds the end-to-end
/// tests' lock: the demo's switching core and theirs would share two CPUs.
fn root_test(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !is_root() {
        skip(test, "needs root");
        return None;
    }
    Some(crate::e2e::SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

// ---- The tests ------------------------------------------------------------------

#[test]
fn demo_runs_every_step_and_each_holds() {
    let test = "demo::demo_runs_every_step_and_each_holds";
    let Some(_serial) = root_test(test) else {
        return;
    };
    let interfaces = root_interfaces();
    let started = Instant::now();
    let mut demo = Demo::start(&[]);
    let pid = demo.pid();
    // The XDP programs its lbp run holds, seen during the first step.
    let at_balance = demo.wait_line("lbp demo: step 1/", Duration::from_secs(120));
    let held = demo_programs(pid);
    let (status, stdout, stderr) = demo.finish(Duration::from_secs(240));
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!(
        "demo: {:.1?}, XDP programs held {held:?}\n{stdout}",
        started.elapsed()
    );
    assert!(at_balance, "no step 1 line\n{context}");
    assert!(status.success(), "lbp demo failed ({status:?})\n{context}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "an escape code in piped output\n{context}"
    );

    // Every step announced, and held in the summary.
    for (i, name) in STEPS.iter().enumerate() {
        let line = format!("lbp demo: step {}/{} {name}:", i + 1, STEPS.len());
        assert!(stdout.contains(&line), "no {line:?}\n{context}");
    }
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "lbp demo: summary")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    for name in STEPS {
        let row = summary
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("step {name} not in the summary\n{context}"));
        assert_eq!(
            row.split_whitespace().nth(1),
            Some("held"),
            "step {name}: {row}\n{context}"
        );
    }
    let fin = summary
        .iter()
        .find(|l| l.trim_start().starts_with("lbp: final:"))
        .unwrap_or_else(|| panic!("no final statistics line\n{context}"));
    // AF_XDP rings here: the policy ran in XDP first and dropped the blocked
    // source's SYNs there.
    let dropped: u64 = fin
        .split("xdp fast path: ")
        .nth(1)
        .and_then(|x| x.split("dropped ").nth(1))
        .and_then(|x| x.split(',').next())
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fast path counters in {fin}\n{context}"));
    assert!(dropped > 0, "{fin}");
    assert!(
        stdout.contains("lbp demo: OK: all 7 steps held"),
        "no OK line\n{context}"
    );
    let left = leftovers(pid, &interfaces, &held);
    assert!(left.is_empty(), "left behind: {left:?}\n{context}");
}

#[test]
fn demo_interrupted_at_three_moments_removes_everything() {
    let test = "demo::demo_interrupted_at_three_moments_removes_everything";
    let Some(_serial) = root_test(test) else {
        return;
    };
    // The moment: the line after which SIGINT is sent, and whether the demo's
    // processes must have been seen (lbp run, and in the agent step the agents).
    for (moment, line, agents) in [
        (
            "while it builds its network",
            "lbp demo: building the network",
            false,
        ),
        ("during the balance step", "lbp demo: step 1/", false),
        ("during the agent step", "lbp demo: step 5/", true),
    ] {
        let interfaces = root_interfaces();
        let mut demo = Demo::start(&[]);
        let pid = demo.pid();
        let seen = demo.wait_line(line, Duration::from_secs(120));
        let mut held = BTreeSet::new();
        if seen && line.contains("step") {
            held = demo_programs(pid);
        }
        if agents {
            // The agents start right after the step's line (bounded wait).
            let end = Instant::now() + Duration::from_secs(5);
            while !processes_naming(&format!("lbpdemo-{pid}.secret"))
                .iter()
                .any(|p| p.1.contains(" agent "))
                && Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let running = processes_naming(&format!("lbpdemo-{pid}."));
        demo.interrupt();
        let at = Instant::now();
        let (status, stdout, stderr) = demo.finish(Duration::from_secs(60));
        let context = format!(
            "{moment}: stdout:\n{stdout}\nstderr:\n{stderr}\nprocesses at the interruption: {running:?}"
        );
        eprintln!(
            "demo interrupted {moment}: ended {:.1?} after SIGINT, {status:?}, XDP programs held {held:?}, processes {}",
            at.elapsed(),
            running.len()
        );
        assert!(seen, "no {line:?} line\n{context}");
        if agents {
            assert!(
                running.iter().any(|p| p.1.contains(" agent ")),
                "no agent was running\n{context}"
            );
        }
        assert_eq!(
            status.code(),
            Some(1),
            "an interrupted demo exits 1\n{context}"
        );
        assert!(
            !stdout.contains("lbp demo: OK"),
            "an interrupted demo says OK\n{context}"
        );
        let left = leftovers(pid, &interfaces, &held);
        assert!(left.is_empty(), "left behind: {left:?}\n{context}");
    }
}

#[test]
fn demo_policy_checks_clean_is_formatted_and_passes_its_tests() {
    for args in [
        vec!["check", "--deny-warnings", "--color", "never", POLICY],
        vec!["fmt", "--check", POLICY],
        vec!["test", POLICY],
    ] {
        let out = crate::lbp(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "lbp {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn demo_without_root_says_it_needs_root() {
    let bin = env!("CARGO_BIN_EXE_lbp");
    let mut cmd = if is_root() {
        let has_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
        if !has_setpriv {
            skip(
                "demo::demo_without_root_says_it_needs_root",
                "as root, and no setpriv",
            );
            return;
        }
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            bin,
            "demo",
        ]);
        c
    } else {
        let mut c = Command::new(bin);
        c.arg("demo");
        c
    };
    let (out, _) = run_bounded(&mut cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if is_root() && stderr.contains("setpriv:") {
        // The unprivileged user cannot reach the binary (e.g. a private target
        // directory): nothing to check here.
        skip(
            "demo::demo_without_root_says_it_needs_root",
            &format!(
                "the unprivileged user cannot run the binary: {}",
                stderr.trim()
            ),
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("needs root"), "stderr: {stderr}");
    assert!(stderr.contains("namespaces"), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
