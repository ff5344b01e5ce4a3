//! `lbp eval` on the captures operators have: pcapng, Linux cooked captures,
//! standard input, captures cut by their snap length or at the end of a record
//! (issue 10, items 6, 7 and 9).

use crate::{lbp, root};
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_lab::pcap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, len: Option<usize>) -> Vec<u8> {
    let mut p = PacketSpec::new(Proto::Tcp, src.parse().unwrap(), dst.parse().unwrap());
    p.sport = sport;
    p.dport = dport;
    p.tcp_flags = flags;
    p.len = len;
    build(&p)
}

const SYN: u8 = lbp_abi::tcp_flag::SYN;
const ACK: u8 = lbp_abi::tcp_flag::ACK;

/// Five packets of `policies/web.lbp`: a connection to the service (SYN, then
/// ACK), a port without an entry (reset), a blocked network (drop), a routed
/// ICMP echo (forward).
fn packets() -> Vec<Vec<u8>> {
    vec![
        tcp("198.18.1.5", "198.18.0.10", 40000, 80, SYN, Some(200)),
        tcp("198.18.1.5", "198.18.0.10", 40000, 80, ACK, Some(200)),
        tcp("198.18.1.5", "198.18.0.10", 40001, 25, SYN, None),
        tcp("198.18.99.7", "198.18.0.10", 40002, 80, SYN, None),
        build(&PacketSpec::new(
            Proto::Icmp,
            "198.18.1.5".parse().unwrap(),
            "198.18.2.11".parse().unwrap(),
        )),
    ]
}

fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames.iter().map(|f| f.as_slice()).collect()
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eval_json(capture: &str) -> Output {
    lbp(&[
        "eval",
        "policies/web.lbp",
        "--pcap",
        capture,
        "--format",
        "json",
    ])
}

/// `lbp eval ... --pcap -` with `input` on standard input.
fn eval_stdin(input: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(["eval", "policies/web.lbp", "--pcap", "-"])
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Each packet's decision, as `decisions` gives it, for `frames` in a pcap
/// capture.
fn pcap_decisions(dir: &tempfile::TempDir, frames: &[Vec<u8>]) -> Vec<(String, String)> {
    decisions(&eval_json(&write(
        dir,
        "web.pcap",
        &pcap::write(&refs(frames)),
    )))
}

fn assert_ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each packet's decision as (action, backend) from a JSON run.
fn decisions(out: &Output) -> Vec<(String, String)> {
    json_lines(out)
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap_or("").to_string(),
                l["backend"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Item 9: each line names the packet (addresses, ports, flags) and the back end
/// a balanced packet goes to; a connection keeps its back end.
#[test]
fn eval_names_addresses_ports_and_the_back_end() {
    let dir = tempfile::tempdir().unwrap();
    let frames = packets();
    let file = write(&dir, "web.pcap", &pcap::write(&refs(&frames)));
    let out = lbp(&["eval", "policies/web.lbp", "--pcap", &file]);
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].contains("tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn  balance http -> 198.18.2.1"),
        "{text}"
    );
    assert!(lines[0].contains(":8080"), "the NAT port: {text}");
    assert!(
        lines[3].contains("tcp 198.18.99.7:40002 -> 198.18.0.10:80 syn  drop"),
        "{text}"
    );
    assert!(
        lines[4].contains("icmp 198.18.1.5 -> 198.18.2.11 type 8 code 0  forward dev servers"),
        "{text}"
    );

    let json = json_lines(&eval_json(&file));
    assert_eq!(json[0]["src"], "198.18.1.5");
    assert_eq!(json[0]["dst"], "198.18.0.10");
    assert_eq!(json[0]["sport"], 40000);
    assert_eq!(json[0]["dport"], 80);
    let backend = json[0]["backend"].as_str().unwrap();
    assert!(
        backend == "198.18.2.11:8080" || backend == "198.18.2.12:8080",
        "{backend}"
    );
    assert_eq!(json[1]["action"], "balance");
    assert_eq!(
        json[1]["backend"], backend,
        "the connection keeps its back end"
    );
    assert!(json[2].get("backend").is_none());

    // Many connections spread over both back ends, by weight (3 to 1).
    let many: Vec<Vec<u8>> = (0..400)
        .map(|i| tcp("198.18.1.5", "198.18.0.10", 10000 + i, 80, SYN, None))
        .collect();
    let file = write(&dir, "many.pcap", &pcap::write(&refs(&many)));
    let chosen = decisions(&eval_json(&file));
    let first = chosen
        .iter()
        .filter(|(_, b)| b == "198.18.2.11:8080")
        .count();
    let second = chosen
        .iter()
        .filter(|(_, b)| b == "198.18.2.12:8080")
        .count();
    assert_eq!(first + second, 400);
    assert!(first > 2 * second && second > 40, "{first} and {second}");
}

/// Item 9: pcapng, Linux cooked captures (v1 and v2, as `tcpdump -i any`
/// writes them) and standard input give the same decisions as pcap.
#[test]
fn eval_reads_pcapng_cooked_captures_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let frames = packets();
    let reference = pcap_decisions(&dir, &frames);
    assert_eq!(reference.len(), 5);
    let ng = pcap::write_ng(&refs(&frames), 1);
    assert_eq!(
        decisions(&eval_json(&write(&dir, "web.pcapng", &ng))),
        reference
    );
    // Cooked: the Ethernet header replaced by Linux's.
    let sll: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut c = vec![0, 0, 0, 1, 0, 6];
            c.extend_from_slice(&f[6..12]);
            c.extend_from_slice(&[0, 0]);
            c.extend_from_slice(&f[12..]);
            c
        })
        .collect();
    let sll2: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut c = f[12..14].to_vec();
            c.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
            c.extend_from_slice(&f[6..12]);
            c.extend_from_slice(&[0, 0]);
            c.extend_from_slice(&f[14..]);
            c
        })
        .collect();
    for (linktype, cooked) in [(113u16, &sll), (276, &sll2)] {
        let file = write(&dir, "any.pcapng", &pcap::write_ng(&refs(cooked), linktype));
        assert_eq!(
            decisions(&eval_json(&file)),
            reference,
            "link type {linktype}"
        );
    }
    let out = eval_stdin(&ng, &["--format", "json"]);
    assert_ok(&out);
    assert_eq!(decisions(&out), reference);
}

/// Item 7: a capture whose last record is cut printed nothing; the packets
/// before it are decided and printed, then the error (in JSON too, item 9).
#[test]
fn eval_prints_what_it_decided_before_a_cut_record() {
    let dir = tempfile::tempdir().unwrap();
    let frames = packets();
    let whole = pcap::write(&refs(&frames));
    let file = write(&dir, "cut.pcap", &whole[..whole.len() - 10]);
    let out = lbp(&["eval", "policies/web.lbp", "--pcap", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 4);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cut.pcap: packet 5: "), "{err}");
    let out = eval_json(&file);
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[3]["packet"], 4);
    assert_eq!(lines[4]["packet"], 5);
    assert!(
        lines[4]["error"]
            .as_str()
            .unwrap()
            .contains("bytes announced")
    );
    // Not a capture at all: the error alone, as JSON.
    let out = eval_json(&write(&dir, "not.pcap", b"hello, world"));
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["error"].as_str().unwrap().contains("not a pcap"));
}

/// Item 7: a capture cut by its snap length marked every packet malformed. A
/// packet whose headers were captured is decided on them (and the line says how
/// much was captured); one cut inside its headers is malformed, and says so.
#[test]
fn eval_decides_packets_cut_by_the_snap_length_on_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let frames = packets();
    let reference = pcap_decisions(&dir, &frames);
    // Ethernet, IPv4 and TCP headers: 54 bytes.
    let file = write(&dir, "snap.pcap", &pcap::write_cut(&refs(&frames), 54));
    let out = eval_json(&file);
    assert_eq!(decisions(&out), reference);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["captured"], 54);
    assert_eq!(lines[0]["length"], 200);
    assert_eq!(lines[0]["cut_in_headers"], false);
    let text = lbp(&["eval", "policies/web.lbp", "--pcap", &file]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("[captured 54 of 200 bytes]"),
        "{text}"
    );

    // 40 bytes: the TCP header's ports are captured, its flags are not.
    let file = write(
        &dir,
        "short.pcap",
        &pcap::write_cut(&refs(&frames[..1]), 40),
    );
    let lines = json_lines(&eval_json(&file));
    assert_eq!(lines[0]["action"], "drop");
    assert_eq!(lines[0]["stage"], "malformed packet");
    assert_eq!(lines[0]["cut_in_headers"], true);
}

/// Item 6: the JIT decides and the interpreter checks it on request; on a
/// policy too large for the automatic check, `--check-interpreter` runs it.
#[test]
fn eval_checks_the_jit_against_the_interpreter_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = std::fs::read_to_string(root().join("policies/web.lbp")).unwrap();
    let mut rules = String::new();
    for i in 0..500 {
        rules.push_str(&format!(
            "    ip.src == 198.19.{}.{} && tcp.dport == {} => drop\n",
            i / 250,
            i % 250,
            1000 + i
        ));
    }
    policy = policy.replacen("filter {\n", &format!("filter {{\n{rules}"), 1);
    let policy_file = write(&dir, "big.lbp", policy.as_bytes());
    let mut frames = packets();
    frames.push(tcp("198.19.1.4", "198.18.0.10", 5, 1254, SYN, None));
    let capture = write(&dir, "web.pcap", &pcap::write(&refs(&frames)));
    let plain = lbp(&["eval", &policy_file, "--pcap", &capture]);
    let checked = lbp(&[
        "eval",
        &policy_file,
        "--pcap",
        &capture,
        "--check-interpreter",
    ]);
    assert_ok(&checked);
    assert_eq!(plain.stdout, checked.stdout);
    let text = String::from_utf8(plain.stdout).unwrap();
    let line = policy
        .lines()
        .position(|l| l.contains("ip.src == 198.19.1.4 && tcp.dport == 1254"))
        .unwrap()
        + 1;
    assert!(
        text.lines().nth(5).unwrap().contains(&format!(
            "drop  (rule at line {line}: ip.src == 198.19.1.4 && tcp.dport == 1254 => drop)"
        )),
        "{text}"
    );
}
