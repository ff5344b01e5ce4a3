//! `lbp agent`: its reports reach a UDP socket on loopback, authenticated and
//! in order, with the load it measured or was given; bad arguments are refused
//! with a message.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use lbp_runtime::control::report::{Refused, decode};

const SECRET: &str = "sixteen-or-more-bytes-of-secret";

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lbp"))
        .arg("agent")
        .args(args)
        .output()
        .expect("lbp runs")
}

#[test]
fn reports_arrive_authenticated_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let stats = dir.path().join("stats");
    std::fs::write(&stats, "exec_ms=8.5\nrps=230\n").unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let to = sink.local_addr().unwrap().to_string();
    let out = agent(&[
        "--report-to",
        &to,
        "--secret-file",
        secret.to_str().unwrap(),
        "--backend",
        "198.18.2.11",
        "--interval",
        "20ms",
        "--count",
        "3",
        "--port",
        "8080",
        "--stats-file",
        stats.to_str().unwrap(),
        "--load",
        "cpu=0.25,clients=7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut last = 0;
    let mut buf = [0u8; 1024];
    for _ in 0..3 {
        let (n, _) = sink.recv_from(&mut buf).expect("a report");
        let r = decode(&buf[..n], SECRET.as_bytes()).expect("a valid report");
        assert_eq!(r.backend, std::net::IpAddr::from([198, 18, 2, 11]));
        assert!(r.sent_us > last, "strictly increasing times");
        last = r.sent_us;
        assert_eq!((r.load.cpu, r.load.clients), (0.25, 7.0));
        assert_eq!((r.load.exec_ms, r.load.rps), (8.5, 230.0));
        assert!((0.0..=1.0).contains(&r.load.mem));
        assert_eq!(
            decode(&buf[..n], b"another secret of enough bytes"),
            Err(Refused::Forged)
        );
    }
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny").unwrap();
    let common = ["--report-to", "127.0.0.1:9", "--backend", "198.18.2.11"];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = common.to_vec();
        v.extend_from_slice(extra);
        agent(&v)
    };
    let out = with(&["--secret-file", short.to_str().unwrap(), "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    let missing = dir.path().join("missing");
    let out = with(&["--secret-file", missing.to_str().unwrap(), "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    for (opt, val, says) in [
        ("--load", "cpu=2", "out of range"),
        ("--load", "load=1", "unknown key"),
        ("--interval", "5", "ms"),
        ("--interval", "1ms", "between"),
    ] {
        let out = with(&["--secret-file", short.to_str().unwrap(), opt, val]);
        assert_eq!(out.status.code(), Some(2), "{opt} {val}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{opt} {val}: {err}");
    }
}
