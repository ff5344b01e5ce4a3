//! `lbp run` in network namespaces made here: the appliance namespace with two
//! veth interfaces, a client and a server namespace at their other ends
//! (198.18.0.0/24 and 198.18.1.0/24). Checks that the ready line comes, that a
//! UDP datagram is routed across (ARP answered and resolved by lbp), that the
//! appliance's own address reaches a program in its namespace through the TAP
//! and the answer comes back, and that SIGTERM ends lbp with status 0, no XDP
//! program and no TAP left; and that a policy beyond the eBPF back end's
//! limits runs on the switching cores (`--datapath`). Needs root; prints
//! SKIPPED otherwise.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::{self, Netns};

const POLICY: &str = "\
interface left { address 198.18.0.1/24 }
interface right { address 198.18.1.1/24 }
";

/// An `lbp run` process, killed on drop if still running.
struct Lbp(Child);

impl Drop for Lbp {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Send `msg` from `from` (in namespace `ns`) to `to` until `check` sees it
/// (bounded tries).
fn send_until(
    ns: &Netns,
    from: &'static str,
    to: &'static str,
    rx: &UdpSocket,
    msg: &[u8],
) -> bool {
    let sock = ns.within(move || UdpSocket::bind(from).expect("bind client"));
    let mut buf = [0u8; 64];
    for _ in 0..30 {
        sock.send_to(msg, to).expect("send");
        if let Ok((n, _)) = rx.recv_from(&mut buf)
            && &buf[..n] == msg
        {
            return true;
        }
    }
    false
}

/// `true` (after saying why) where namespaces cannot be made.
fn skipped() -> bool {
    let Some(why) = netns::unavailable() else {
        return false;
    };
    netns::skip(
        module_path!(),
        &format!("needs root and network namespaces ({why})"),
    );
    true
}

/// The appliance namespace `{tag}a` with interfaces `{tag}l` and `{tag}r`,
/// a client `{tag}c` (198.18.0.2/24 on c0) and a server `{tag}s`
/// (198.18.1.2/24 on s0) at their other ends, routed through 198.18.0.1 and
/// 198.18.1.1.
fn two_armed(tag: &str) -> (Netns, Netns, Netns) {
    let (app, cli, srv) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}c")),
        Netns::new(&format!("{tag}s")),
    );
    for (side, peer, p_if) in [("l", &cli, "c0"), ("r", &srv, "s0")] {
        lbp_lab::testing::veth_up(&app, &format!("{tag}{side}"), peer, p_if);
        // A local stack leaves checksums to offload, which AF_XDP cannot see.
        peer.tx_checksum_off(p_if).unwrap();
    }
    cli.add_address("c0", "198.18.0.2/24").unwrap();
    cli.add_default_route("198.18.0.1").unwrap();
    srv.add_address("s0", "198.18.1.2/24").unwrap();
    srv.add_default_route("198.18.1.1").unwrap();
    (app, cli, srv)
}

/// `lbp run POLICY` in `app` on the interfaces of [`two_armed`]`(tag)`, its
/// control socket in `dir`, with `args`; stdout and stderr piped.
fn lbp_run(app: &Netns, tag: &str, policy: &Path, dir: &Path, args: &[&str]) -> Child {
    app.command(env!("CARGO_BIN_EXE_lbp"))
        .arg("run")
        .arg(policy)
        .arg("--control")
        .arg(dir.join("control.sock"))
        .arg("--iface")
        .arg(format!("left={tag}l"))
        .arg("--iface")
        .arg(format!("right={tag}r"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lbp run")
}

#[test]
fn lbp_run_routes_answers_through_the_tap_and_stops_cleanly() {
    if skipped() {
        return;
    }
    scenario("xdp", "xdp driver copy");
    scenario("uring", "io_uring");
}

/// The whole check with `--rings RINGS`; the ready line must name `shown`.
fn scenario(rings: &str, shown: &str) {
    // (Not the rings' name in the tags: `ip link` output is searched for "xdp"
    // below.)
    let (app, cli, srv) = two_armed("r");

    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("two.lbp");
    std::fs::write(&policy, POLICY).expect("write policy");
    let child = lbp_run(
        &app,
        "r",
        &policy,
        dir.path(),
        &[
            "--stats-interval",
            "1",
            "--rings",
            rings,
            // A shallow receive side (not the default): the ports work at any
            // depth.
            "--rx-ring",
            "256",
        ],
    );
    let mut lbp = Lbp(child);
    let stdout = lbp.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = lines.recv_timeout(Duration::from_secs(30));
    let Ok(ready) = ready else {
        let _ = lbp.0.kill();
        let out = lbp.0.wait_with_output_ref();
        panic!("no ready line; stderr: {out}");
    };
    assert!(ready.starts_with("lbp: ready"), "{ready}");
    assert!(ready.contains("2 interfaces"), "{ready}");
    assert!(ready.contains("1 switching core"), "{ready}");
    assert!(ready.contains(shown), "{ready}");
    // `--datapath auto`: the policy runs in XDP where the rings are AF_XDP.
    assert_eq!(
        ready.contains("xdp fast path on"),
        rings == "xdp",
        "{ready}"
    );

    // Routed across: client -> server, ARP answered and resolved by lbp.
    let server = srv.within(|| {
        let s = UdpSocket::bind("198.18.1.2:7777").expect("bind server");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    if !send_until(
        &cli,
        "198.18.0.2:40000",
        "198.18.1.2:7777",
        &server,
        b"across",
    ) {
        stop_and_panic(
            &mut lbp,
            "a datagram from the client did not reach the server",
        );
    }

    // The appliance's own address: through the TAP to a program in the
    // appliance's namespace, and its answer back to the client.
    let echo = app.within(|| {
        let s = UdpSocket::bind("198.18.0.1:7778").expect("bind on the TAP address");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
                if &buf[..n] == b"stop" {
                    return true;
                }
            }
        }
        false
    });
    let client = cli.within(|| {
        let s = UdpSocket::bind("198.18.0.2:40001").expect("bind client");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    let mut echoed = false;
    let mut buf = [0u8; 64];
    for _ in 0..30 {
        client.send_to(b"hello", "198.18.0.1:7778").unwrap();
        if let Ok((n, from)) = client.recv_from(&mut buf)
            && &buf[..n] == b"hello"
        {
            assert_eq!(from.to_string(), "198.18.0.1:7778");
            echoed = true;
            break;
        }
    }
    let _ = client.send_to(b"stop", "198.18.0.1:7778");
    let _ = echo_thread.join();
    if !echoed {
        stop_and_panic(&mut lbp, "no answer from a program behind the TAP");
    }

    // SIGTERM: exit 0, final summary, nothing left attached.
    // SAFETY: kill(2) on the PID of the child this test started (`ip netns
    // exec` execs lbp in place, so it is lbp's PID), which has not been reaped.
    assert_eq!(
        unsafe { libc::kill(lbp.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = lbp.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "lbp did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = lbp.0.wait_with_output_ref();
    assert!(status.success(), "exit {status:?}; stderr: {stderr}");
    assert!(stderr.contains("lbp: final: "), "{stderr}");
    // The kernel releases a closed bpf link's program from a work queue, and
    // unregisters a TAP whose last descriptor closed once its references drain:
    // allow them a moment.
    let mut links = String::new();
    for _ in 0..100 {
        links = String::from_utf8_lossy(&app.ip(&["link"]).stdout).into_owned();
        if !links.contains("xdp") && !links.contains("lbp0") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!links.contains("xdp"), "an XDP program is left: {links}");
    assert!(!links.contains("lbp0"), "the TAP is left: {links}");
}

/// A policy beyond the eBPF back end's limits (2 001 filter rules): with
/// `--datapath auto` lbp runs it on the switching cores alone and says why
/// (and still routes); with `--datapath xdp` it refuses to start, and leaves
/// no XDP program behind. One of 300 rules: `auto` keeps it on the cores
/// (and says why), `xdp` runs it in XDP.
#[test]
fn lbp_run_puts_a_policy_beyond_the_ebpf_limits_on_the_cores() {
    if skipped() {
        return;
    }
    let (app, cli, srv) = two_armed("l");
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("wide.lbp");
    std::fs::write(&policy, crate::wide_policy(POLICY, 2001)).expect("write policy");
    let start = |datapath: &str| {
        let args = [
            "--stats-interval",
            "0",
            "--rings",
            "xdp",
            "--datapath",
            datapath,
        ];
        lbp_run(&app, "l", &policy, dir.path(), &args)
    };

    // --datapath xdp: refused, with the reason.
    let out = start("xdp").wait_with_output().expect("lbp run ends");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--datapath xdp"), "{err}");
    assert!(err.contains("2001 filter rules"), "{err}");
    let links = String::from_utf8_lossy(&app.ip(&["link"]).stdout).into_owned();
    assert!(!links.contains("xdp"), "an XDP program is left: {links}");

    // auto: the cores alone, with a warning; traffic still routed.
    let mut lbp = Lbp(start("auto"));
    let stdout = lbp.0.stdout.take().expect("stdout");
    let mut ready = String::new();
    let _ = BufReader::new(stdout).read_line(&mut ready);
    if !ready.starts_with("lbp: ready") {
        stop_and_panic(&mut lbp, &format!("no ready line: {ready:?}"));
    }
    assert!(!ready.contains("xdp fast path on"), "{ready}");
    let server = srv.within(|| {
        let s = UdpSocket::bind("198.18.1.2:7777").expect("bind server");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    let routed = send_until(
        &cli,
        "198.18.0.2:40000",
        "198.18.1.2:7777",
        &server,
        b"across",
    );
    // SAFETY: kill(2) on the PID of our own unreaped child.
    unsafe { libc::kill(lbp.0.id() as libc::pid_t, libc::SIGTERM) };
    let err = lbp.0.wait_with_output_ref();
    assert!(routed, "not routed on the cores; stderr:\n{err}");
    assert!(
        err.contains("lbp: warning: the XDP fast path is off; every frame goes to the switching cores: beyond the eBPF back end's limits: 2001 filter rules"),
        "{err}"
    );

    // 300 rules: within the limits, but more than `auto` puts in XDP; `xdp`
    // puts them there.
    std::fs::write(&policy, crate::wide_policy(POLICY, 300)).expect("write policy");
    for (datapath, on) in [("auto", false), ("xdp", true)] {
        let mut lbp = Lbp(start(datapath));
        let stdout = lbp.0.stdout.take().expect("stdout");
        let mut ready = String::new();
        let _ = BufReader::new(stdout).read_line(&mut ready);
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(lbp.0.id() as libc::pid_t, libc::SIGTERM) };
        let err = lbp.0.wait_with_output_ref();
        assert!(
            ready.starts_with("lbp: ready"),
            "{datapath}: {ready:?} {err}"
        );
        assert_eq!(
            ready.contains("xdp fast path on"),
            on,
            "{datapath}: {ready}"
        );
        assert_eq!(
            err.contains("300 filter rules tested one by one (not merged into tables), and `--datapath auto` puts at most 256 in XDP"),
            !on,
            "{datapath}: {err}"
        );
    }
}

/// Stop lbp with SIGTERM and fail with `what` and lbp's stderr.
fn stop_and_panic(lbp: &mut Lbp, what: &str) -> ! {
    // SAFETY: kill(2) on the PID of our own unreaped child.
    unsafe { libc::kill(lbp.0.id() as libc::pid_t, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    let _ = lbp.0.kill();
    let err = lbp.0.wait_with_output_ref();
    panic!("{what}; lbp's stderr:\n{err}");
}

/// Read what remains of a child's stderr (it has exited or been killed).
trait StderrText {
    fn wait_with_output_ref(&mut self) -> String;
}

impl StderrText for Child {
    fn wait_with_output_ref(&mut self) -> String {
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }
}

#[test]
fn lbp_run_refuses_a_receive_depth_that_is_not_a_power_of_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(["run", "policies/web.lbp", "--rx-ring", "1000"])
        .output()
        .expect("lbp runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected a power of two from 64 to 65536"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: no ready line");
}

#[test]
fn lbp_run_reports_a_missing_interface_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("two.lbp");
    std::fs::write(&policy, POLICY).expect("write policy");
    let out = Command::new(env!("CARGO_BIN_EXE_lbp"))
        .arg("run")
        .arg(&policy)
        .args([
            "--iface",
            "left=lbp-nosuch0",
            "--iface",
            "right=lbp-nosuch1",
        ])
        .output()
        .expect("lbp runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such interface `lbp-nosuch0`"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: no ready line");
}
