//! `lbp eval`: decide every packet of a capture with a policy and print one line
//! per packet (text or JSON): the packet (addresses, ports, flags), the verdict,
//! the back end a new connection would get, and the rule or stage that decided.
//!
//! Packets are decided by the JIT, as the appliance decides them; the
//! interpreter decides them too, and any difference is an error, when asked
//! (`--check-interpreter`) or when it is cheap (small policies). A capture cut
//! by its snap length is decided on what was captured: the headers, when they
//! were captured whole (the frame is counted at its length on the wire), else
//! the packet is malformed; either way the line says so. A damaged capture
//! gives the lines of the packets read before the damage, then the error.

use super::common::{Format, json_str, load, stage_name};
use lbp_abi::{Decision, Fields, present, tcp_flag};
use lbp_compiler::ir::{Addr, AddrField, Algorithm, Program};
use lbp_compiler::{Engine, Interpreter, interp};
use lbp_runtime::app::Registry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `lbp eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    policy: PathBuf,
    /// A capture: pcap or pcapng, of Ethernet, Linux cooked (`tcpdump -i
    /// any`, SLL and SLL2) or raw IP frames; `-` reads standard input.
    #[arg(long)]
    pcap: PathBuf,
    /// The interface the packets arrive on (default: where a reply to the
    /// source would leave, as in tests).
    #[arg(long)]
    on: Option<String>,
    /// Output: text, or one JSON object per line.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Decide every packet with the interpreter too, and fail (exit 1) if it
    /// differs from the JIT. Done anyway for policies of at most 100 filter
    /// rules.
    #[arg(long)]
    check_interpreter: bool,
    /// Print on standard error how long loading the policy, compiling it and
    /// deciding the packets took (benches/eval.sh reads it).
    #[arg(long)]
    timing: bool,
}

/// A connection as the test blocks' connection table keys it: protocol, source
/// address and port, destination address and port.
type Conn = (u8, Addr, u16, Addr, u16);

/// Policies with at most this many filter rules are always decided by the
/// interpreter too: there it costs about what the JIT does.
const CROSS_CHECK_RULES: usize = 100;

/// A cut frame is decided at its length on the wire, up to this many bytes (an
/// IP packet of 64 KiB behind an Ethernet header and two VLAN tags).
const MAX_FRAME: usize = 65535 + 22;

pub fn run(args: EvalArgs, apps: &Registry) -> Result<ExitCode, String> {
    let EvalArgs {
        policy,
        pcap,
        on,
        format,
        check_interpreter,
        timing,
    } = args;
    let started = std::time::Instant::now();
    let (src, _, prog) = load(&policy, apps)?;
    let loaded = started.elapsed();
    let name = pcap.display().to_string();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // A capture that cannot be read at all is a read error like any other.
    let bytes = match read_capture(&pcap) {
        Ok(bytes) => bytes,
        Err(e) => return read_error(&mut out, format, &name, None, &e),
    };
    let packets = match lbp_compiler::pcap::packets(&bytes) {
        Ok(p) => p,
        Err(e) => return read_error(&mut out, format, &name, None, &e),
    };
    // About one packet per 64 bytes of capture: the tables that grow with
    // connections are sized once (at most a million).
    let expected = (bytes.len() / 64).min(1 << 20);
    let on = match on {
        Some(name) => Some(
            prog.interfaces
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| format!("no interface `{name}` in the policy"))? as u32,
        ),
        None => None,
    };
    let compiling = std::time::Instant::now();
    let jit = lbp_compiler::jit::compile(&prog);
    let compiled = compiling.elapsed();
    let interpreter = Interpreter::new(&prog);
    let backend: &dyn Engine = match &jit {
        Ok(jit) => jit,
        Err(e) => {
            eprintln!(
                "lbp: {}: the JIT refuses this policy ({e}); deciding with the interpreter",
                policy.display()
            );
            &interpreter
        }
    };
    let cross_check = jit.is_ok() && (check_interpreter || prog.rules.len() <= CROSS_CHECK_RULES);
    let mut eval = Eval {
        prog: &prog,
        src: &src,
        rule_lines: rule_lines(&prog, &src),
        conns: HashSet::with_capacity(expected),
        balancer: Balancer::new(&prog, &src, expected),
        format,
    };
    let mut disagreements = 0usize;
    let mut scratch = Vec::new();
    let mut line = String::new();
    let mut n = 0usize;
    let deciding = std::time::Instant::now();
    let cpu_before = thread_cpu();
    for item in packets {
        let frame = match item {
            Ok(frame) => frame,
            Err(e) => {
                out.flush().map_err(|e| e.to_string())?;
                return read_error(&mut out, format, &name, Some(n + 1), &e);
            }
        };
        n += 1;
        let captured = frame.data.len();
        // A cut frame is decided at its length on the wire, on the headers it
        // captured: when the bytes it lacks, read as zeros and then as ones, give
        // the same fields, the headers were captured whole; else the cut is
        // inside them and the packet is malformed.
        let cut = frame.is_cut();
        let mut headers_cut = false;
        let mut fields = if cut {
            let len = (frame.wire_len as usize).min(MAX_FRAME).max(captured);
            let mut padded = |fill: u8| {
                scratch.clear();
                scratch.extend_from_slice(&frame.data);
                scratch.resize(len, fill);
                lbp_compiler::wire::extract(&scratch, u32::MAX)
            };
            let (zeros, ones) = (padded(0), padded(0xff));
            if zeros != ones {
                headers_cut = true;
            }
            zeros
        } else {
            lbp_compiler::wire::extract(&frame.data, u32::MAX)
        };
        if headers_cut {
            fields.present |= present::MALFORMED;
        }
        fields.in_iface = on
            .or_else(|| {
                let src = interp::addr(&fields, AddrField::Src)?;
                interp::route(&prog, src).map(|r| prog.routes[r as usize].dev)
            })
            .unwrap_or(u32::MAX);
        let d = backend.decide(&fields);
        let mut differs = None;
        if cross_check {
            let reference = interp::decide(&prog, &fields);
            if reference != d {
                disagreements += 1;
                differs = Some(reference);
            }
        }
        let cut = cut.then_some(Cut {
            captured,
            wire: frame.wire_len,
            headers: headers_cut,
        });
        line.clear();
        eval.line(&mut line, n, &fields, d, cut, differs);
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    if timing {
        let decided = deciding.elapsed().as_secs_f64();
        let cpu = thread_cpu() - cpu_before;
        let per = |t: f64| t * 1e6 / n.max(1) as f64;
        eprintln!(
            "lbp: eval: policy read and checked in {:.3} s, compiled in {:.3} s; {n} packets decided and printed in {decided:.3} s, {:.3} us/packet (CPU {cpu:.3} s, {:.3} us/packet)",
            loaded.as_secs_f64(),
            compiled.as_secs_f64(),
            per(decided),
            per(cpu),
        );
    }
    if disagreements > 0 {
        eprintln!(
            "lbp: the JIT and the interpreter disagree on {disagreements} of {n} packets (a bug in lbp: please report it)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The CPU time this thread has used, in seconds (for `--timing`: on a busy
/// machine, wall time says more about the others).
fn thread_cpu() -> f64 {
    lbp_runtime::sys::thread_cpu_time().as_secs_f64()
}

/// The capture's bytes, from a file or standard input (`-`).
fn read_capture(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    } else {
        std::fs::read(path).map_err(|e| e.to_string())
    }
}

/// A capture that cannot be read, or read to its end: in JSON, one object
/// with `error` (and the packet it concerns) on standard output; else the
/// message on standard error. Exit 2 either way.
fn read_error(
    out: &mut impl Write,
    format: Format,
    name: &str,
    packet: Option<usize>,
    e: &str,
) -> Result<ExitCode, String> {
    match format {
        Format::Json => {
            let o = serde_json::json!({ "file": name, "packet": packet, "error": e });
            writeln!(out, "{o}")
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::from(2))
        }
        Format::Human => Err(format!("{name}: {e}")),
    }
}

/// How much of a frame was captured, when not all of it.
#[derive(Clone, Copy, Debug)]
struct Cut {
    captured: usize,
    wire: u32,
    /// The cut falls inside the headers the decision reads.
    headers: bool,
}

/// Each filter rule's 1-based line, in one pass over the text (rules come in
/// the order of the text; one out of order is looked up).
fn rule_lines(prog: &Program, src: &str) -> Vec<usize> {
    let mut line = 1;
    let mut at = 0;
    prog.rules
        .iter()
        .map(|r| {
            let start = r.span.start.min(src.len());
            if start < at {
                return lbp_lang::diag::line_col(src, start).0;
            }
            line += src.as_bytes()[at..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            at = start;
            line
        })
        .collect()
}

/// What `eval` keeps from packet to packet.
struct Eval<'p> {
    prog: &'p Program,
    src: &'p str,
    /// Each filter rule's line.
    rule_lines: Vec<usize>,
    /// The connections opened so far (the test blocks' connection-table rule).
    conns: HashSet<Conn>,
    balancer: Balancer,
    format: Format,
}

impl Eval<'_> {
    /// One packet's line, newline included, appended to `out`. Written
    /// directly (no intermediate values), as it is most of eval's cost.
    fn line(
        &mut self,
        out: &mut String,
        n: usize,
        f: &Fields,
        d: Decision,
        cut: Option<Cut>,
        differs: Option<Decision>,
    ) {
        let verdict = lbp_compiler::testing::verdict(self.prog, f, d, &mut self.conns);
        let mut words = verdict.split(' ');
        let action = words.next().unwrap_or("drop");
        let backend = if action == "balance" {
            self.balancer.backend(self.prog, f, d)
        } else {
            None
        };
        let rule = (d.rule != lbp_abi::NO_RULE)
            .then(|| self.prog.rules.get(d.rule as usize))
            .flatten()
            .map(|r| {
                let line = self.rule_lines.get(d.rule as usize).copied().unwrap_or(0);
                let text = self.src.get(r.span.start..r.span.end).unwrap_or("").trim();
                (d.rule, line, text)
            });
        match self.format {
            Format::Json => {
                let _ = write!(
                    out,
                    "{{\"packet\":{n},\"action\":\"{action}\",\"stage\":\"{}\"",
                    stage_name(d.stage)
                );
                packet_json(out, f);
                match action {
                    "balance" => {
                        out.push_str(",\"service\":");
                        json_str(out, words.next().unwrap_or(""));
                        let _ = write!(out, ",\"hash\":\"{:08x}\"", d.hash);
                        if let Some(b) = backend {
                            out.push_str(",\"backend\":\"");
                            b.write(out);
                            out.push('"');
                        }
                    }
                    "forward" => {
                        out.push_str(",\"interface\":");
                        json_str(out, words.nth(1).unwrap_or(""));
                    }
                    _ => {}
                }
                match rule {
                    Some((n, line, text)) => {
                        let _ = write!(out, ",\"rule\":{{\"index\":{n},\"line\":{line},\"text\":");
                        json_str(out, text);
                        out.push('}');
                    }
                    None => out.push_str(",\"rule\":null"),
                }
                if let Some(c) = cut {
                    let _ = write!(
                        out,
                        ",\"captured\":{},\"length\":{},\"cut_in_headers\":{}",
                        c.captured, c.wire, c.headers
                    );
                }
                if let Some(i) = differs {
                    let verdict =
                        lbp_compiler::testing::verdict(self.prog, f, i, &mut HashSet::new());
                    out.push_str(",\"interpreter\":{\"verdict\":");
                    json_str(out, &verdict);
                    let _ = write!(
                        out,
                        ",\"rule\":{},\"stage\":\"{}\"}}",
                        i.rule,
                        stage_name(i.stage)
                    );
                }
                out.push_str("}\n");
            }
            Format::Human => {
                let mut digits = [b' '; 20];
                let used = decimal(&mut digits, n as u64);
                let width = used.max(6);
                out.push_str(std::str::from_utf8(&digits[20 - width..]).unwrap_or("?"));
                out.push_str("  ");
                describe(out, f);
                out.push_str("  ");
                out.push_str(&verdict);
                if let Some(b) = backend {
                    out.push_str(" -> ");
                    b.write(out);
                }
                match rule {
                    Some((_, line, text)) => {
                        let _ = write!(out, "  (rule at line {line}: {text})");
                    }
                    None => {
                        let _ = write!(out, "  ({})", stage_name(d.stage));
                    }
                }
                if let Some(c) = cut {
                    let _ = write!(
                        out,
                        "  [captured {} of {} bytes{}]",
                        c.captured,
                        c.wire,
                        if c.headers {
                            ": the cut is inside its headers"
                        } else {
                            ""
                        }
                    );
                }
                if let Some(i) = differs {
                    let _ = write!(
                        out,
                        "  [the interpreter decides otherwise: {}, stage {}]",
                        lbp_compiler::testing::verdict(self.prog, f, i, &mut HashSet::new()),
                        stage_name(i.stage)
                    );
                }
                out.push('\n');
            }
        }
    }
}

/// An address as text, IPv4 without going through `fmt` (the common case, and
/// a large share of eval's time when formatted).
fn write_addr(out: &mut String, a: IpAddr) {
    match a {
        IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                write_u16(out, u16::from(octet));
            }
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// A number as decimal digits, without `fmt`.
fn write_u16(out: &mut String, v: u16) {
    let mut digits = [0u8; 20];
    let used = decimal(&mut digits, u64::from(v));
    out.push_str(std::str::from_utf8(&digits[20 - used..]).unwrap_or("?"));
}

/// Write `v` in decimal at the end of `digits`; the number of digits.
fn decimal(digits: &mut [u8; 20], mut v: u64) -> usize {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    digits.len() - at
}

/// An address and port: `198.18.0.10:80`, `[2001:db8::1]:80`.
fn write_endpoint(out: &mut String, a: IpAddr, port: u16) {
    let v6 = a.is_ipv6();
    if v6 {
        out.push('[');
    }
    write_addr(out, a);
    if v6 {
        out.push(']');
    }
    out.push(':');
    write_u16(out, port);
}

/// A packet as a test line writes it: `tcp 198.18.1.5:40000 -> 198.18.0.10:80
/// syn`, `icmp 198.18.1.5 -> 198.18.2.11 type 8 code 0`, `[2001:db8::1]:80` for
/// IPv6 with a port; `eth type 0x0806` without IP, `malformed` when malformed.
fn describe(out: &mut String, f: &Fields) {
    if f.present & present::MALFORMED != 0 {
        out.push_str("malformed");
        if f.ip_version == 0 {
            return;
        }
        out.push(' ');
    }
    let (Some(src), Some(dst)) = (
        interp::addr(f, AddrField::Src),
        interp::addr(f, AddrField::Dst),
    ) else {
        let _ = write!(out, "eth type 0x{:04x}", f.eth_type);
        return;
    };
    let ports = f.present & (present::TCP | present::UDP) != 0;
    if f.present & present::TCP != 0 {
        out.push_str("tcp ");
    } else if f.present & present::UDP != 0 {
        out.push_str("udp ");
    } else if f.present & present::ICMP != 0 && f.ip_version == 6 {
        out.push_str("icmpv6 ");
    } else if f.present & present::ICMP != 0 {
        out.push_str("icmp ");
    } else {
        let _ = write!(out, "ip proto {} ", f.ip_proto);
    }
    if ports {
        write_endpoint(out, src.to_ip(), f.sport);
        out.push_str(" -> ");
        write_endpoint(out, dst.to_ip(), f.dport);
    } else {
        write_addr(out, src.to_ip());
        out.push_str(" -> ");
        write_addr(out, dst.to_ip());
    }
    if f.present & present::TCP != 0 {
        for (bit, name) in [
            (tcp_flag::SYN, " syn"),
            (tcp_flag::ACK, " ack"),
            (tcp_flag::FIN, " fin"),
            (tcp_flag::RST, " rst"),
            (tcp_flag::PSH, " psh"),
            (tcp_flag::URG, " urg"),
        ] {
            if f.tcp_flags & bit != 0 {
                out.push_str(name);
            }
        }
    } else if f.present & present::ICMP != 0 {
        let _ = write!(out, " type {} code {}", f.icmp_type, f.icmp_code);
    }
    if f.present & present::FRAG != 0 && !ports {
        out.push_str(" fragment");
    }
}

/// The packet's fields in a JSON line: `src`, `dst`, `protocol`, `sport`,
/// `dport`, `flags`, `icmp_type`, `icmp_code`, as the packet has them
/// (`eth_type` without IP, `malformed` when malformed).
fn packet_json(out: &mut String, f: &Fields) {
    if f.present & present::MALFORMED != 0 {
        out.push_str(",\"malformed\":true");
    }
    if let (Some(src), Some(dst)) = (
        interp::addr(f, AddrField::Src),
        interp::addr(f, AddrField::Dst),
    ) {
        out.push_str(",\"src\":\"");
        write_addr(out, src.to_ip());
        out.push_str("\",\"dst\":\"");
        write_addr(out, dst.to_ip());
        let _ = write!(out, "\",\"protocol\":{}", f.ip_proto);
    } else {
        let _ = write!(out, ",\"eth_type\":{}", f.eth_type);
    }
    if f.present & (present::TCP | present::UDP) != 0 {
        let _ = write!(out, ",\"sport\":{},\"dport\":{}", f.sport, f.dport);
    }
    if f.present & present::TCP != 0 {
        let _ = write!(out, ",\"flags\":{}", f.tcp_flags);
    }
    if f.present & present::ICMP != 0 {
        let _ = write!(
            out,
            ",\"icmp_type\":{},\"icmp_code\":{}",
            f.icmp_type, f.icmp_code
        );
    }
}

/// The back end the appliance gives a balanced packet: a connection's keeps
/// the one its first packet got; a new one is chosen by the service's
/// algorithm, as one switching core would from a fresh start (the Maglev
/// table the runtime builds; round robin and least load in the order of the
/// capture, least load counting the connections this capture opened).
struct Balancer {
    generation: lbp_runtime::generation::Generation,
    rr: Vec<Option<lbp_runtime::balance::Wrr>>,
    loads: Vec<Vec<u64>>,
    flows: HashMap<Conn, (u32, usize), std::hash::BuildHasherDefault<FlowHasher>>,
}

impl Balancer {
    fn new(prog: &Program, src: &str, expected: usize) -> Balancer {
        let appliance = crate::appliance::appliance(prog, src);
        let policy = std::sync::Arc::new(|_: &Fields| Decision::default());
        let generation = lbp_runtime::generation::Generation::new(policy, appliance);
        let rr = generation
            .services
            .iter()
            .zip(&prog.services)
            .map(|(t, s)| {
                (s.algorithm == Algorithm::RoundRobin)
                    .then(|| lbp_runtime::balance::Wrr::new(&t.weights))
            })
            .collect();
        let loads = generation
            .services
            .iter()
            .map(|t| vec![0; t.weights.len()])
            .collect();
        Balancer {
            generation,
            rr,
            loads,
            flows: HashMap::with_capacity_and_hasher(expected, Default::default()),
        }
    }

    /// The back end, or `None` when the service has none to give.
    fn backend(&mut self, prog: &Program, f: &Fields, d: Decision) -> Option<Chosen> {
        let s = d.target as usize;
        let svc = prog.services.get(s)?;
        let key = (
            f.ip_proto,
            interp::addr(f, AddrField::Src)?,
            f.sport,
            interp::addr(f, AddrField::Dst)?,
            f.dport,
        );
        let new = f.present & present::TCP == 0
            || f.tcp_flags & tcp_flag::SYN != 0 && f.tcp_flags & tcp_flag::ACK == 0;
        let b = match self.flows.get(&key) {
            Some(&(service, b)) if service == d.target && !new => b,
            _ => {
                let t = self.generation.services.get(s)?;
                let b = match svc.algorithm {
                    Algorithm::Maglev | Algorithm::Hash => {
                        t.maglev.as_ref()?.lookup(u64::from(d.hash))? as usize
                    }
                    Algorithm::RoundRobin => self.rr.get_mut(s)?.as_mut()?.pick()?,
                    Algorithm::LeastLoad => {
                        let loads = self.loads.get_mut(s)?;
                        let b =
                            lbp_runtime::balance::least_load(loads, &t.weights, u64::from(d.hash))?;
                        *loads.get_mut(b)? += 1;
                        b
                    }
                };
                self.flows.insert(key, (d.target, b));
                b
            }
        };
        let backend = prog.pools.get(svc.pool? as usize)?.backends.get(b)?;
        let port = match svc.mode {
            lbp_abi::Mode::Nat { to_port } => backend
                .port
                .or(to_port)
                .or_else(|| (f.present & (present::TCP | present::UDP) != 0).then_some(f.dport)),
            lbp_abi::Mode::Dsr => None,
        };
        Some(Chosen {
            addr: backend.addr.to_ip(),
            port,
        })
    }
}

/// A back end as the output names it.
#[derive(Clone, Copy, Debug)]
struct Chosen {
    addr: IpAddr,
    /// The port a NAT service sends to.
    port: Option<u16>,
}

impl Chosen {
    /// `ADDRESS` or `ADDRESS:PORT`.
    fn write(self, out: &mut String) {
        match self.port {
            Some(p) => write_endpoint(out, self.addr, p),
            None => write_addr(out, self.addr),
        }
    }
}

/// A hasher for the flow table, keyed by packets of a capture (not an
/// adversary's to choose: collisions only cost time): multiply and rotate,
/// several times faster than the default SipHash on 100 000 connections.
#[derive(Default, Clone, Copy, Debug)]
struct FlowHasher(u64);

impl std::hash::Hasher for FlowHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_isize(&mut self, v: isize) {
        self.write_u64(v as u64);
    }
}
