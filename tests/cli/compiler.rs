//! `lbp eval`, `lbp explain` and `lbp compile` end to end.

use crate::lbp;
use lbp_compiler::packet::{PacketSpec, Proto, build};

fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = PacketSpec::new(Proto::Tcp, src.parse().unwrap(), dst.parse().unwrap());
    p.sport = sport;
    p.dport = dport;
    p.tcp_flags = lbp_abi::tcp_flag::SYN;
    build(&p)
}

#[test]
fn eval_decides_every_packet_of_a_capture_in_order() {
    let balanced = syn("198.18.1.5", "198.18.0.10", 40000, 80);
    let reset = syn("198.18.1.5", "198.18.0.10", 40001, 25);
    let blocked = syn("198.18.99.7", "198.18.0.10", 40002, 80);
    let truncated = balanced[..30].to_vec();
    let routed = build(&PacketSpec::new(
        Proto::Icmp,
        "198.18.1.5".parse().unwrap(),
        "198.18.2.11".parse().unwrap(),
    ));
    let file = lbp_compiler::pcap::write(&[&balanced, &reset, &blocked, &truncated, &routed]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, file).unwrap();
    let out = lbp(&[
        "eval",
        "policies/web.lbp",
        "--pcap",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["packet"], i + 1);
    }
    assert_eq!(lines[0]["action"], "balance");
    assert_eq!(lines[0]["service"], "http");
    assert_eq!(lines[1]["action"], "reset");
    assert_eq!(lines[2]["action"], "drop");
    assert_eq!(
        lines[2]["rule"]["index"], 0,
        "the blocked-network rule decides"
    );
    assert_eq!(lines[3]["action"], "drop");
    assert_eq!(lines[3]["stage"], "malformed packet");
    assert_eq!(lines[4]["action"], "forward");
    assert_eq!(lines[4]["interface"], "servers");

    let text = lbp(&["eval", "policies/web.lbp", "--pcap", path.to_str().unwrap()]);
    assert_eq!(String::from_utf8(text.stdout).unwrap().lines().count(), 5);
}

#[test]
fn eval_refuses_what_is_not_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.pcap");
    std::fs::write(&path, b"hello, world").unwrap();
    let out = lbp(&["eval", "policies/web.lbp", "--pcap", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap file"));
}

#[test]
fn explain_names_the_deciding_rule_and_the_rules_before_it() {
    let out = lbp(&[
        "explain",
        "policies/web.lbp",
        "tcp 198.18.1.99:40000 -> 198.18.0.1:22 syn",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("decision: drop"), "{text}");
    assert!(text.contains("no match: ip.src in blocked"), "{text}");
    assert!(
        text.contains("decided by the rule at policies/web.lbp:31:5"),
        "{text}"
    );
    assert!(text.contains("^^^^"), "{text}");
    let bad = lbp(&["explain", "policies/web.lbp", "tcp 198.18.1.2:40000 ->"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn compile_emits_the_ir() {
    let out = lbp(&["compile", "policies/web.lbp", "--emit", "ir"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Program {") && text.contains("rules:") && text.contains("span:"),
        "{}",
        &text[..text.len().min(400)]
    );
}

#[test]
fn compile_emits_the_clif() {
    let out = lbp(&["compile", "policies/web.lbp", "--emit", "clif"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("function") && text.contains("block0") && text.contains("return"),
        "{}",
        &text[..text.len().min(400)]
    );
}
