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
    let file = lbp_lab::pcap::write(&[&balanced, &reset, &blocked, &truncated, &routed]);
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

/// `error[CODE]: MESSAGE` lines of plain diagnostics.
fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| l.split_once(": error[").map(|(_, e)| format!("error[{e}")))
        .collect()
}

#[test]
fn explain_refuses_what_check_refuses_in_a_test_block_with_the_same_diagnostics() {
    let web = std::fs::read_to_string(crate::root().join("policies/web.lbp")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for line in [
        // Family mismatch: before, decided as some IPv4 packet.
        "tcp 198.18.1.5:40000 -> [2001:db8::1]:80 syn",
        // Missing port: before, decided with port 0.
        "tcp 198.18.1.5 -> 198.18.0.10:80 syn",
        // A duplicate option: before, the last one won.
        "tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn ttl 3 ttl 9",
        // ICMP with ports, a TCP flag on UDP.
        "icmp 198.18.1.5:7 -> 198.18.0.10",
        "udp 198.18.1.5:53 -> 198.18.0.10:53 syn",
        // A verdict that is none, a service that does not exist: before, ignored.
        "tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn => accept",
        "tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn => balance htp",
    ] {
        let full = if line.contains("=>") {
            line.to_string()
        } else {
            format!("{line} => drop")
        };
        let policy = dir.path().join("p.lbp");
        std::fs::write(&policy, format!("{web}test \"t\" {{\n    {full}\n}}\n")).unwrap();
        let check = lbp(&["check", "--color", "never", policy.to_str().unwrap()]);
        let want = error_lines(&check.stderr);
        assert!(!want.is_empty(), "{line}: check finds nothing");
        let out = lbp(&["explain", "policies/web.lbp", line]);
        assert_eq!(out.status.code(), Some(2), "{line}");
        assert!(out.stdout.is_empty(), "{line}: decided anyway");
        assert_eq!(error_lines(&out.stderr), want, "{line}");
    }
}

#[test]
fn explain_asks_for_the_arrival_interface_where_the_filter_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.lbp");
    std::fs::write(
        &policy,
        "interface lan { address 198.18.1.1/24 }\n\
         interface wan { address 198.18.10.1/24 }\n\
         filter { in.iface == wan && tcp.dport == 22 => drop }\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    // Before: decided as arriving on no interface, so the rule never matched.
    let out = lbp(&["explain", p, "tcp 203.0.113.5:40000 -> 198.18.1.1:22 syn"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error[lbp::check::no_arrival_interface]"),
        "{err}"
    );
    assert!(err.contains("write `on IFACE` (lan, wan)"), "{err}");
    let on = lbp(&[
        "explain",
        p,
        "tcp 203.0.113.5:40000 -> 198.18.1.1:22 syn on wan",
    ]);
    assert_eq!(on.status.code(), Some(0));
    let text = String::from_utf8(on.stdout).unwrap();
    assert!(text.starts_with("decision: drop"), "{text}");
}

#[test]
fn explain_compares_a_given_verdict_with_the_decision() {
    let line = "tcp 198.18.1.99:40000 -> 198.18.0.1:22 syn";
    let same = lbp(&["explain", "policies/web.lbp", &format!("{line} => drop")]);
    assert_eq!(same.status.code(), Some(0));
    let text = String::from_utf8(same.stdout).unwrap();
    assert!(text.contains("expected: drop: as decided"), "{text}");
    let other = lbp(&["explain", "policies/web.lbp", &format!("{line} => local")]);
    assert_eq!(other.status.code(), Some(1));
    let text = String::from_utf8(other.stdout).unwrap();
    assert!(text.starts_with("decision: drop"), "{text}");
    assert!(
        text.contains("expected: local: the decision differs"),
        "{text}"
    );
}

#[test]
fn explain_and_eval_say_expire_for_a_packet_whose_ttl_runs_out() {
    let out = lbp(&[
        "explain",
        "policies/web.lbp",
        "tcp 198.18.1.5:40000 -> 198.18.0.10:80 syn ttl 1 => expire",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("decision: expire"), "{text}");
    assert!(text.contains("would be balanced by http"), "{text}");
    let routed = lbp(&[
        "explain",
        "policies/web.lbp",
        "icmp 198.18.1.5 -> 198.18.2.11 ttl 1",
    ]);
    let text = String::from_utf8(routed.stdout).unwrap();
    assert!(text.contains("would be routed out of servers"), "{text}");

    let mut p = PacketSpec::new(
        Proto::Icmp,
        "198.18.1.5".parse().unwrap(),
        "198.18.2.11".parse().unwrap(),
    );
    p.ttl = 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ttl.pcap");
    std::fs::write(&path, lbp_lab::pcap::write(&[&build(&p)])).unwrap();
    let out = lbp(&["eval", "policies/web.lbp", "--pcap", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("expire"), "{text}");
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

/// `--emit bpf`: the fast path's eBPF program, disassembled, with its maps;
/// a policy beyond the eBPF back end's limits says so and why.
#[test]
fn compile_emits_the_ebpf_program_or_says_why_not() {
    let out = lbp(&["compile", "policies/web.lbp", "--emit", "bpf"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let insns = text
        .lines()
        .filter(|l| l.contains(": ") && !l.starts_with(';'))
        .count();
    assert!(insns > 100, "{insns} instructions:\n{text}");
    assert!(text.contains("exit"), "{text}");
    assert!(text.contains("; map[0] xsk"), "{text}");
    assert!(text.contains("counters"), "{text}");

    let src = crate::wide_policy("interface a { address 198.18.0.1/24 }\n", 2001);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.lbp");
    std::fs::write(&path, &src).unwrap();
    let out = lbp(&["compile", path.to_str().unwrap(), "--emit", "bpf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty(), "no program is printed");
    assert!(
        stderr.contains("beyond the eBPF back end's limits"),
        "{stderr}"
    );
    assert!(stderr.contains("2001 filter rules"), "{stderr}");
    assert!(stderr.contains("switching cores"), "{stderr}");
}

/// A filter too large for the JIT (12 001 rules that cannot merge into tables)
/// passes the checker but not the compiler: `lbp compile` says so like every
/// diagnostic, with the code, the rule where the limit is passed, and the help.
#[test]
fn a_filter_too_large_to_compile_is_a_diagnostic_at_the_rule() {
    let mut src = String::from("interface a { address 198.18.0.1/24 }\nfilter {\n");
    for i in 0..12_001u32 {
        src.push_str(&format!(
            "    ip.src == 198.19.{}.{} || tcp.dport == {} => drop\n",
            (i >> 8) & 255,
            i & 255,
            1 + i
        ));
    }
    src.push_str("}\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.lbp");
    std::fs::write(&path, &src).unwrap();
    let out = lbp(&["compile", path.to_str().unwrap(), "--emit", "clif"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no code is printed");
    assert!(stderr.contains("lbp::compile::too_large"), "{stderr}");
    assert!(
        stderr.contains("the filter is too large to compile"),
        "{stderr}"
    );
    // The 12 001st rule, on line 12 003, is where the limit is passed.
    assert!(stderr.contains("large.lbp:12003:5"), "{stderr}");
    assert!(
        stderr.contains("ip.src == 198.19.46.224 || tcp.dport == 12001"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the limit is passed at this rule"),
        "{stderr}"
    );
    assert!(stderr.contains("merge into tables"), "{stderr}");
    assert!(stderr.contains("large.lbp: cannot compile"), "{stderr}");
}
