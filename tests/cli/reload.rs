//! End-to-end tests of changing a running appliance: hot reload under load, a
//! broken reload, the operator's commands (drain, maintenance, weights), a
//! reload that removes a back end, the control socket's refusals, and the
//! Prometheus endpoint. On the suite's topology (`topology.rs`), in network
//! namespaces; they need root and are skipped (failing under CI) otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::e2e::{setup, start_xdp};
use crate::topology::{BACKENDS, Lbp, NAT4, Topology, spread};

/// `lbp ARGS... --control SOCK` from the root namespace (the socket is a file).
fn ctl(lbp: &Lbp, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(args)
        .arg("--control")
        .arg(&lbp.control)
        .env("NO_COLOR", "1")
        .output()
        .expect("lbp runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The appliance's `stats --json`.
fn stats(lbp: &Lbp) -> serde_json::Value {
    lbp.stats().unwrap_or_else(|e| panic!("{e}"))
}

/// Which back end (0..3) answered, from a body like "b2 ...".
fn backend_of(body: &str) -> Option<usize> {
    BACKENDS
        .iter()
        .position(|b| body.split(' ').next() == Some(b.0))
}

/// One request through the virtual IP, timed: (start, end, back end or error).
type Sample = (Instant, Instant, Result<usize, String>);

/// Sequential requests (a new connection each) until `stop`, `until` or
/// `max`.
fn load(to: SocketAddr, stop: &AtomicBool, until: Instant, max: usize) -> Vec<Sample> {
    let mut v = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < until && v.len() < max {
        let start = Instant::now();
        let r = crate::topology::http_get(to, Duration::from_secs(2))
            .map_err(|e| e.to_string())
            .and_then(|b| backend_of(&b).ok_or(format!("unknown body {b:?}")));
        v.push((start, Instant::now(), r));
    }
    v
}

/// While a client loop runs through the virtual IP, the policy is reloaded 50
/// times, alternating weights 1:2:3 and 3:2:1 (weighted round robin): no
/// request fails, and the requests made wholly while one policy was in force
/// split as its weights say. Then a broken reload is refused with its
/// diagnostics and traffic still follows the policy in force; `lbp stats` and
/// the Prometheus endpoint show the counters.
#[test]
fn reloads_under_load_lose_nothing_and_follow_the_policy() {
    let test = "reload::reloads_under_load_lose_nothing_and_follow_the_policy";
    let Some((_serial, topo)) = setup(test, "er") else {
        return;
    };
    let a = crate::root().join("tests/e2e/reload-a.lbp");
    let b = crate::root().join("tests/e2e/reload-b.lbp");
    let lbp = start_xdp(
        test,
        &topo,
        "tests/e2e/reload-a.lbp",
        &["--metrics", "127.0.0.1:9464"],
    );
    let to = SocketAddr::new(NAT4.into(), 80);

    // The load: until the reloads are done, at most 200 000 requests and 40 s.
    let until = Instant::now() + Duration::from_secs(40);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let client = std::thread::scope(|s| {
        let flag = std::sync::Arc::clone(&stop);
        let h = s.spawn(|| topo.client.within(move || load(to, &flag, until, 200_000)));
        std::thread::sleep(Duration::from_millis(500));
        // (before, after, weights in force after): policy a first.
        let mut reloads: Vec<(Instant, Instant, usize)> = Vec::new();
        let mut latencies = Vec::new();
        for i in 0..50 {
            let (path, which) = if i % 2 == 0 { (&b, 1) } else { (&a, 0) };
            let before = Instant::now();
            let o = ctl(&lbp, &["reload", path.to_str().unwrap()]);
            let after = Instant::now();
            assert!(o.status.success(), "{test}: reload {i}: {}", text(&o));
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                out.starts_with(&format!("lbp: reloaded: generation {}", i + 1)),
                "{test}: {out}"
            );
            assert!(
                out.contains("weight"),
                "{test}: the changed weights are reported: {out}"
            );
            if i < 2 {
                // Policy b's route through a gateway gets its kernel route on the
                // TAP, and loses it when a comes back.
                let o = topo
                    .app
                    .command("ip")
                    .args(["-4", "route", "show", "198.19.200.0/24"])
                    .output()
                    .expect("ip runs");
                let routes = String::from_utf8_lossy(&o.stdout).to_string();
                assert_eq!(
                    routes.contains("198.19.200.0/24 dev"),
                    which == 1,
                    "{test}: reload {i}: kernel routes: {routes:?}"
                );
            }
            latencies.push(after - before);
            reloads.push((before, after, which));
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, Ordering::Relaxed);
        (h.join().expect("client"), reloads, latencies)
    });
    let (samples, reloads, latencies) = client;
    let failed: Vec<&String> = samples.iter().filter_map(|s| s.2.as_ref().err()).collect();
    eprintln!(
        "reload: {} requests across 50 reloads, {} failed; reload round trip max {:?}",
        samples.len(),
        failed.len(),
        latencies.iter().max()
    );
    assert!(
        samples.len() > 2000,
        "{test}: too few requests: {}",
        samples.len()
    );
    assert!(failed.is_empty(), "{test}: failed requests: {failed:?}");

    // Attribute each request that started after a reload finished and ended
    // before the next one began to the policy that reload put in force.
    let mut counts = [[0usize; 3]; 2];
    for (start, end, r) in &samples {
        let Ok(be) = r else { continue };
        let Some(k) = reloads.iter().rposition(|x| x.1 <= *start) else {
            continue;
        };
        if reloads.get(k + 1).is_some_and(|next| *end >= next.0) {
            continue;
        }
        counts[reloads[k].2][*be] += 1;
    }
    eprintln!(
        "reload: split under a (1:2:3) {:?}, under b (3:2:1) {:?}",
        counts[0], counts[1]
    );
    for (policy, weights) in [(0, [1.0, 2.0, 3.0]), (1, [3.0, 2.0, 1.0])] {
        let n: usize = counts[policy].iter().sum();
        assert!(
            n > 500,
            "{test}: too few requests under one policy: {counts:?}"
        );
        for i in 0..3 {
            let want = n as f64 * weights[i] / 6.0;
            let got = counts[policy][i] as f64;
            assert!(
                (got - want).abs() <= want * 0.1,
                "{test}: policy {policy}: back end {i} served {got} of {n}, expected {want:.0} ({counts:?})"
            );
        }
    }

    // A broken reload: diagnostics as `lbp check` prints them, exit 1, and
    // the running policy (a, 1:2:3) stays.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.lbp");
    let src = std::fs::read_to_string(&a)
        .unwrap()
        .replace("198.18.2.13 weight 3", "198.18.2.300 weight 3");
    std::fs::write(&broken, src).unwrap();
    let o = ctl(&lbp, &["reload", broken.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{test}: {}", text(&o));
    assert!(err.contains("error[lbp::"), "{test}: {err}");
    assert!(
        err.contains("1 error, 0 warnings in 1 file"),
        "{test}: {err}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(["check", broken.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        err,
        String::from_utf8_lossy(&check.stderr),
        "{test}: reload prints what check prints"
    );
    let (split, errors) = topo
        .client
        .within(move || spread(to, 300, Duration::from_secs(60)));
    assert!(errors.is_empty(), "{test}: {errors:?}");
    for (i, w) in [50, 100, 150].iter().enumerate() {
        assert!(
            split[i].abs_diff(*w) <= 3,
            "{test}: after the broken reload: {split:?}"
        );
    }

    // The counters (the control loop refreshes what the API shows every
    // 100 ms, and the cores publish theirs about every 50 ms: ask until the
    // refused reload and the last requests show).
    let end = Instant::now() + Duration::from_secs(3);
    let mut st = stats(&lbp);
    let settled = |st: &serde_json::Value| {
        st["reload_failures"] == 1
            && st["services"][0]["new_connections"].as_u64().unwrap_or(0) >= 300
    };
    while !settled(&st) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        st = stats(&lbp);
    }
    let log = lbp.stderr_text();
    assert_eq!(st["reload_failures"], 1, "{test}: {st}\n{log}");
    assert_eq!(st["generation"], 50, "{test}: {st}");
    assert_eq!(st["reloads"], 50, "{test}: {st}");
    // The fast path ran the policy in XDP through every reload (its program
    // swapped each time): the requests' packets passed through it.
    assert_eq!(st["xdp"]["on"], true, "{test}: {st}");
    assert!(
        !log.contains("could not be installed"),
        "{test}: a reload fell back to the cores:\n{log}"
    );
    assert!(
        st["xdp"]["seen_packets"].as_u64().unwrap_or(0) > 2000,
        "{test}: {st}"
    );
    let svc = &st["services"][0];
    assert_eq!(svc["name"], "http");
    assert!(
        svc["new_connections"].as_u64().unwrap() >= 300,
        "{test}: {st}"
    );
    let metrics = topo
        .app
        .command("curl")
        .args(["-sS", "--max-time", "5", "http://127.0.0.1:9464/metrics"])
        .output()
        .expect("curl runs");
    let m = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(metrics.status.success(), "{test}: curl: {}", text(&metrics));
    for want in [
        "# TYPE lbp_backend_connections_total counter",
        "lbp_generation 50",
        "lbp_reloads_total 50",
        "lbp_reload_failures_total 1",
        "lbp_backend_weight{service=\"http\",backend=\"198.18.2.13\"} 3",
        "lbp_backend_up{service=\"http\",backend=\"198.18.2.11\"} 1",
        "lbp_drops_total{reason=\"filter\"} 0",
        "# TYPE lbp_core_time_exceeded_total counter",
        "lbp_core_unknown_resets_total{core=\"0\"} ",
    ] {
        assert!(m.contains(want), "{test}: no `{want}` in\n{m}");
    }
    let conns_b3: u64 = m
        .lines()
        .find(|l| {
            l.starts_with("lbp_backend_connections_total{service=\"http\",backend=\"198.18.2.13\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(conns_b3 >= 150, "{test}: {m}");
    drop(lbp);
}

/// A connection whose request is half sent, held open.
struct Held(TcpStream);

impl Held {
    fn open(to: SocketAddr) -> Held {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        (&s).write_all(b"GET / HTTP/1.0\r\n").expect("first half");
        Held(s)
    }

    /// Send the rest; the back end that answered, or the error.
    fn finish(mut self) -> Result<usize, String> {
        self.0
            .write_all(b"Host: lbp-e2e\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        self.0.read_to_end(&mut resp).map_err(|e| e.to_string())?;
        let t = String::from_utf8_lossy(&resp);
        let body = t.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        backend_of(body.trim()).ok_or(format!("no answer: {t:?}"))
    }
}

/// Six held connections from the client namespace (a fresh weighted round
/// robin of 1:2:3 gives b1 one, b2 two, b3 three).
fn hold_six(topo: &Topology, to: SocketAddr) -> Vec<Held> {
    topo.client
        .within(move || (0..6).map(|_| Held::open(to)).collect())
}

fn finish_all(topo: &Topology, held: Vec<Held>) -> Vec<Result<usize, String>> {
    topo.client
        .within(move || held.into_iter().map(Held::finish).collect())
}

/// Send `bytes` as a client of uid 65534 (a forked child that only makes
/// system calls); the answer.
fn as_nobody(path: &Path, bytes: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_bytes();
    assert!(p.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: a pipe into a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes async-signal-safe system calls on memory
    // prepared before the fork, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            libc::close(fds[0]);
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(3);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(
                s,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) != 0
            {
                libc::_exit(4);
            }
            libc::write(s, bytes.as_ptr().cast(), bytes.len());
            libc::shutdown(s, libc::SHUT_WR);
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(fds[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    // SAFETY: the read end is ours; File takes ownership and closes it.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let _ = f.read_to_end(&mut out);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the uid 65534 client failed: status {status}"
    );
    String::from_utf8_lossy(&out).to_string()
}

/// One raw request on the control socket; the answer.
fn raw(path: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The operator's commands on live connections: `drain` keeps a back end's
/// connections and gives it no new one; `maint` resets its connections on
/// their next packet; a reload that removes a back end does the same to its
/// connections and keeps the others'; runtime state survives a reload. The
/// control socket refuses a peer that is not root, a malformed request and a
/// 1 MiB one, and the appliance goes on serving.
#[test]
fn drain_maint_and_removal_treat_connections_as_promised() {
    let test = "reload::drain_maint_and_removal_treat_connections_as_promised";
    let Some((_serial, topo)) = setup(test, "eo") else {
        return;
    };
    let lbp = start_xdp(test, &topo, "tests/e2e/reload-a.lbp", &[]);
    let to = SocketAddr::new(NAT4.into(), 80);
    let ok = |o: Output| {
        assert!(o.status.success(), "{test}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let split = |n| {
        let (c, e) = topo
            .client
            .within(move || spread(to, n, Duration::from_secs(60)));
        assert!(e.is_empty(), "{test}: {e:?}");
        c
    };

    // Drain b2 with connections open: they complete; new ones avoid it.
    let held = hold_six(&topo, to);
    ok(ctl(&lbp, &["drain", "198.18.2.12"]));
    let done = finish_all(&topo, held);
    assert!(
        done.iter().all(Result::is_ok),
        "{test}: drain broke a connection: {done:?}"
    );
    assert_eq!(
        done.iter().filter(|r| **r == Ok(1)).count(),
        2,
        "{test}: {done:?}"
    );
    assert_eq!(split(300), [75, 0, 225], "{test}: drained");
    let backends = ok(ctl(&lbp, &["backends"]));
    assert!(
        backends.contains("198.18.2.12") && backends.contains("drain"),
        "{backends}"
    );

    // The drain survives a reload of the same back ends with other weights.
    let b = crate::root().join("tests/e2e/reload-b.lbp");
    ok(ctl(&lbp, &["reload", b.to_str().unwrap()]));
    assert_eq!(
        split(400),
        [300, 0, 100],
        "{test}: drained across the reload"
    );
    let a = crate::root().join("tests/e2e/reload-a.lbp");
    ok(ctl(&lbp, &["reload", a.to_str().unwrap()]));
    ok(ctl(&lbp, &["undrain", "198.18.2.12"]));
    assert_eq!(split(300), [50, 100, 150], "{test}: undrained");

    // An operator's weight wins over the policy's; `auto` gives it back.
    ok(ctl(&lbp, &["set", "weight", "http", "198.18.2.12", "0"]));
    assert_eq!(split(200), [50, 0, 150], "{test}: weight 0");
    ok(ctl(&lbp, &["set", "weight", "http", "198.18.2.12", "auto"]));

    // Maintenance: b2's two connections are reset on their next packet.
    let held = hold_six(&topo, to);
    ok(ctl(&lbp, &["maint", "198.18.2.12"]));
    let done = finish_all(&topo, held);
    let good: Vec<usize> = done
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(good.len(), 4, "{test}: {done:?}");
    assert!(!good.contains(&1), "{test}: {done:?}");
    for e in done.iter().filter_map(|r| r.as_ref().err()) {
        assert!(e.to_lowercase().contains("reset"), "{test}: {e}");
    }
    ok(ctl(&lbp, &["undrain", "198.18.2.12"]));

    // A reload without b2: its connections are reset, the others go on.
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("without-b2.lbp");
    std::fs::write(
        &c,
        std::fs::read_to_string(&a)
            .unwrap()
            .replace("    backend 198.18.2.12 weight 2\n", ""),
    )
    .unwrap();
    let held = hold_six(&topo, to);
    let out = ok(ctl(&lbp, &["reload", c.to_str().unwrap()]));
    assert!(
        out.contains("back end 198.18.2.12 removed"),
        "{test}: {out}"
    );
    let done = finish_all(&topo, held);
    let good: Vec<usize> = done
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(good.len(), 4, "{test}: {done:?}");
    assert!(!good.contains(&1), "{test}: {done:?}");
    // The cores publish their counters every 50 ms: ask until they show.
    let gone = |st: &serde_json::Value| -> u64 {
        st["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["backend_gone"].as_u64().unwrap())
            .sum()
    };
    let end = Instant::now() + Duration::from_secs(5);
    let mut st = stats(&lbp);
    while gone(&st) < 4 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        st = stats(&lbp);
    }
    assert_eq!(
        gone(&st),
        4,
        "{test}: two by maint, two by the reload: {st}"
    );
    assert_eq!(split(400), [100, 0, 300], "{test}: without b2");

    // The control socket's refusals; nothing changes, traffic goes on.
    let generation = stats(&lbp)["generation"].clone();
    let answer = raw(&lbp.control, b"hello");
    assert!(
        answer.contains("\"ok\":false") && answer.contains("bad request"),
        "{answer}"
    );
    let answer = raw(&lbp.control, &vec![b' '; 1 << 20]);
    assert!(answer.contains("request too large"), "{answer}");
    let mode = std::fs::metadata(&lbp.control).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // Opened to everyone, the socket still refuses a peer that is not root.
    std::fs::set_permissions(
        &lbp.control,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let answer = as_nobody(&lbp.control, br#"{"cmd":"drain","backend":"198.18.2.11"}"#);
    assert!(answer.contains("permission denied"), "{test}: {answer}");
    assert_eq!(
        stats(&lbp)["generation"],
        generation,
        "{test}: nothing changed"
    );
    assert_eq!(split(400), [100, 0, 300], "{test}: still serving");
    drop(lbp);
}

/// A HAProxy-style agent on b2 (`backend ... agent 5555`): when it answers
/// `drain`, b2 takes no new connection; when it answers `ready`, it is back.
#[test]
fn a_haproxy_style_agent_drains_its_back_end() {
    let test = "reload::a_haproxy_style_agent_drains_its_back_end";
    let Some((_serial, topo)) = setup(test, "eg") else {
        return;
    };
    // The agent: a listener in b2's namespace, answered from here with what
    // `word` says at the time (bounded: it stops with the test).
    let listener = topo.backends[1].within(|| {
        let l = std::net::TcpListener::bind("198.18.2.12:5555").expect("agent port");
        l.set_nonblocking(true).unwrap();
        l
    });
    let word = std::sync::Arc::new(std::sync::Mutex::new("ready\n"));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let agent = {
        let (word, stop) = (std::sync::Arc::clone(&word), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let w = *word.lock().unwrap();
                        let _ = s.write_all(w.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let lbp = start_xdp(test, &topo, "tests/e2e/haproxy-agent.lbp", &[]);
    let to = SocketAddr::new(NAT4.into(), 80);
    let split = |n| {
        let (c, e) = topo
            .client
            .within(move || spread(to, n, Duration::from_secs(60)));
        assert!(e.is_empty(), "{test}: {e:?}");
        c
    };
    let wait_for = |text: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while !lbp.stderr_text().contains(text) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            lbp.stderr_text().contains(text),
            "{test}: no `{text}`:\n{}",
            lbp.stderr_text()
        );
    };
    assert_eq!(split(300), [100, 100, 100], "{test}");
    *word.lock().unwrap() = "drain\n";
    wait_for("http 1 0 1");
    assert_eq!(split(300), [150, 0, 150], "{test}: drained by its agent");
    let backends = ctl(&lbp, &["backends"]);
    assert!(
        String::from_utf8_lossy(&backends.stdout).contains("drain"),
        "{test}: {}",
        text(&backends)
    );
    *word.lock().unwrap() = "ready\n";
    wait_for("http 1 1 1");
    assert_eq!(split(300), [100, 100, 100], "{test}: ready again");
    stop.store(true, Ordering::Relaxed);
    agent.join().unwrap();
    drop(lbp);
}

/// A DSR service of `balance maglev` on the suite's DSR virtual IP (UDP
/// echo), with weights 1:2:3 or 3:2:1.
fn dsr_policy(weights: [u32; 3]) -> String {
    format!(
        "interface client {{ address 198.18.0.1/24, 2001:db8::1/64 }}\n\
         interface servers {{ address 198.18.2.1/24, 2001:db8:2::1/64 }}\n\
         pool echo {{\n    backend 198.18.2.11 weight {}\n    backend 198.18.2.12 weight {}\n    backend 198.18.2.13 weight {}\n}}\n\
         service echo {{\n    vip 198.18.0.20 udp port 5353\n    pool echo\n    balance maglev\n    mode dsr\n}}\n",
        weights[0], weights[1], weights[2]
    )
}

/// Flows balanced in the XDP fast path keep their back end across reloads:
/// 128 UDP flows (a socket each) to a DSR virtual IP, placed under weights
/// 1:2:3, are asked again after each of 20 reloads that alternate 3:2:1 and
/// 1:2:3: every question is answered, by the flow's first back end (the
/// fast path's flow table outlives its programs), and the frames were
/// balanced in XDP. New flows under 3:2:1 do follow the new weights, so the
/// old ones stayed because they are remembered, not by chance.
#[test]
fn dsr_flows_balanced_in_xdp_keep_their_back_end_across_reloads() {
    let test = "reload::dsr_flows_balanced_in_xdp_keep_their_back_end_across_reloads";
    let Some((_serial, topo)) = setup(test, "ed") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (a, b) = (dir.path().join("a.lbp"), dir.path().join("b.lbp"));
    std::fs::write(&a, dsr_policy([1, 2, 3])).unwrap();
    std::fs::write(&b, dsr_policy([3, 2, 1])).unwrap();
    let lbp = start_xdp(
        test,
        &topo,
        a.to_str().unwrap(),
        &["--datapath", "xdp", "--xdp-tx", "on"],
    );
    let vip = SocketAddr::new(crate::topology::DSR4.into(), 5353);
    let sockets = |n: usize| -> Vec<std::net::UdpSocket> {
        topo.client.within(|| {
            (0..n)
                .map(|_| {
                    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s
                })
                .collect()
        })
    };
    let ask = |s: &std::net::UdpSocket| -> Result<usize, String> {
        s.send_to(b"who?", vip).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        backend_of(&body).ok_or(format!("unknown answer {body:?}"))
    };
    let flows = sockets(128);
    // Three rounds before any reload: the first goes through the cores
    // (which find the back ends' MACs); once the control core has published
    // them, XDP takes the flows over (the same Maglev entry).
    let mut first = Vec::new();
    for round in 0..3 {
        let now: Vec<usize> = flows
            .iter()
            .map(|s| ask(s).unwrap_or_else(|e| panic!("{test}: round {round}: {e}")))
            .collect();
        if round > 0 {
            assert_eq!(now, first, "{test}: a flow moved before any reload");
        }
        first = now;
        std::thread::sleep(Duration::from_millis(300));
    }
    let split = |v: &[usize]| {
        let mut c = [0usize; 3];
        for &b in v {
            c[b] += 1;
        }
        c
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = stats(&lbp)["xdp"]["balanced_packets"].as_u64().unwrap_or(0);
    for i in 0..20 {
        let path = if i % 2 == 0 { &b } else { &a };
        let o = ctl(&lbp, &["reload", path.to_str().unwrap()]);
        assert!(o.status.success(), "{test}: reload {i}: {}", text(&o));
        for (k, s) in flows.iter().enumerate() {
            let got = ask(s).unwrap_or_else(|e| panic!("{test}: reload {i}, flow {k}: {e}"));
            assert_eq!(got, first[k], "{test}: reload {i}: flow {k} moved");
        }
    }
    // The counters `lbp stats` shows are refreshed every control tick.
    std::thread::sleep(Duration::from_millis(300));
    let after = stats(&lbp)["xdp"]["balanced_packets"].as_u64().unwrap_or(0);
    eprintln!(
        "{test}: 128 flows x 20 reloads, none moved; {} frames balanced in XDP; first split {:?}",
        after - before,
        split(&first)
    );
    assert!(
        after - before >= 128 * 20,
        "{test}: only {} frames balanced in XDP",
        after - before
    );
    // Policy b (3:2:1) in force now? The last reload (i = 19) put a back:
    // one more to b, then new flows.
    let o = ctl(&lbp, &["reload", b.to_str().unwrap()]);
    assert!(o.status.success(), "{test}: {}", text(&o));
    let fresh: Vec<usize> = sockets(128)
        .iter()
        .map(|s| ask(s).unwrap_or_else(|e| panic!("{test}: a new flow: {e}")))
        .collect();
    let (old, new) = (split(&first), split(&fresh));
    eprintln!("{test}: new flows under 3:2:1 split {new:?}");
    assert!(
        old[2] > old[0] + 16 && new[0] > new[2] + 16,
        "{test}: the weights did not steer new flows: first {old:?}, new {new:?}"
    );
}
