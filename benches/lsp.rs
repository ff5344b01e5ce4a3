//! Language server benchmark: how long `lbp lsp` takes to re-check a policy of
//! 100 000 filter rules after an edit, from the `didChange` notification
//! written to its stdin to the `publishDiagnostics` read from its stdout (the
//! whole text sent, as with full sync; checked, diagnostics converted and
//! serialized), beside `lbp_lang::analyze` of the same text in this process.
//!
//! `cargo bench --bench lsp` prints the best and the median of 10 edits, and
//! whether the best is under one second. `LBP=path/to/lbp` measures another
//! build of the binary. Run without `--bench` (as `cargo test --all-targets`
//! does) it drives one small document through an edit and measures nothing.

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A policy of `n` filter rules of a few shapes; `typo` misspells the set in
/// the last rule (one diagnostic).
fn policy(n: usize, typo: bool) -> String {
    let mut s = String::with_capacity(n * 64);
    s.push_str("interface client { address 198.18.0.1/24 }\nset ports = { 22, 8022 }\n");
    s.push_str("pool web { backend 198.18.0.11 }\nservice http { vip 198.18.0.10 tcp port 80 pool web }\nfilter {\n");
    for i in 0..n {
        let (a, b) = ((i >> 8) & 255, i & 255);
        let _ = match i % 3 {
            0 => writeln!(
                s,
                "    ip.src == 198.19.{a}.{b} && tcp.dport in ports => drop"
            ),
            1 => writeln!(
                s,
                "    ip.dst == 198.18.{a}.{b} && udp.dport == {} => reset",
                1 + i % 65535
            ),
            _ => writeln!(
                s,
                "    ip.src in 198.20.{a}.0/24 && tcp.dport == 80 => balance http"
            ),
        };
    }
    if typo {
        s.push_str("    tcp.dport in prots => drop\n");
    }
    s.push_str("}\n");
    s
}

struct Server {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn send(&mut self, m: Value) {
        let body = m.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn read(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "lbp lsp ended"
            );
            match line.trim_end() {
                "" => break,
                l => {
                    if let Some(n) = l.strip_prefix("Content-Length: ") {
                        length = n.parse().unwrap();
                    }
                }
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The number of diagnostics published for `version`.
    fn published(&mut self, version: i64) -> usize {
        loop {
            let m = self.read();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == version
            {
                return m["params"]["diagnostics"].as_array().unwrap().len();
            }
        }
    }

    /// Send a change to `text` as `version`; the time until its diagnostics
    /// come back, and how many there are.
    fn change(&mut self, text: &str, version: i64) -> (Duration, usize) {
        let t = Instant::now();
        self.send(
            json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": URI, "version": version},
                "contentChanges": [{"text": text}],
            }}),
        );
        let n = self.published(version);
        (t.elapsed(), n)
    }
}

const URI: &str = "file:///bench/large.lbp";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, edits) = if bench { (100_000, 10) } else { (1_000, 1) };
    let lbp = std::env::var("LBP").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lbp").to_string());
    let mut child = Command::new(&lbp)
        .arg("lsp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{lbp} lsp: {e}"));
    let mut s = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
    };
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
    );
    assert!(s.read()["result"]["capabilities"].is_object());
    let clean = policy(n, false);
    let broken = policy(n, true);
    let t = Instant::now();
    s.send(
        json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": URI, "languageId": "lbp", "version": 0, "text": clean},
        }}),
    );
    assert_eq!(s.published(0), 0);
    let open = t.elapsed();
    let mut times = Vec::new();
    for v in 1..=edits {
        let (text, want) = if v % 2 == 1 {
            (&broken, 1)
        } else {
            (&clean, 0)
        };
        let (took, got) = s.change(text, v);
        assert_eq!(got, want, "diagnostics after edit {v}");
        times.push(took);
    }
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}));
    s.read();
    s.send(json!({"jsonrpc": "2.0", "method": "exit"}));
    assert!(child.wait().unwrap().success());
    if !bench {
        return;
    }
    let t = Instant::now();
    let analysis = lbp_lang::analyze(&broken);
    let in_process = t.elapsed();
    assert_eq!(analysis.diagnostics.len(), 1);
    times.sort();
    let best = times[0];
    let median = times[times.len() / 2];
    println!("lbp lsp ({lbp}), {n} filter rules, {} bytes:", broken.len());
    println!("  open -> diagnostics:          {:>8.1} ms", ms(open));
    println!(
        "  edit -> diagnostics, {edits} edits: best {:>8.1} ms, median {:>8.1} ms",
        ms(best),
        ms(median)
    );
    println!("  lbp_lang::analyze alone:      {:>8.1} ms", ms(in_process));
    println!(
        "  re-check under one second: {}",
        if best < Duration::from_secs(1) {
            "yes"
        } else {
            "NO"
        }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
