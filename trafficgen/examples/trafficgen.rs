//! The command-line face of `lbp_trafficgen`, for `benches/dataplane.sh`:
//! send frames out of an interface at kernel speed, count the IP frames arriving
//! on interfaces, or reflect frames with a trivial XDP_TX program. Every command
//! is bounded by `--seconds`; it acts on interfaces of the namespace it runs in
//! (start it with `ip netns exec`). Not a general tool: one UDP frame shape.
//! `send` uses the method `--method` names (`auto`, the default: live frames
//! where the kernel runs them, else clone) and says which on its first line.
//!
//! ```text
//! trafficgen send IFACE --dst-mac MAC --src IP --dst IP [--dport N] [--sport N]
//!            [--payload N] [--seconds S] [--batch N] [--flows]
//!            [--method auto|live-frames|clone] [--count N]
//! trafficgen count IFACE... [--seconds S]
//! trafficgen reflect IFACE [--seconds S]
//! trafficgen pass IFACE [--seconds S]
//! trafficgen redirect IFACE --to IFACE --dst-mac MAC [--seconds S]
//! trafficgen probe IFACE
//! ```
//!
//! `redirect` attaches the least an XDP forwarder does (the destination MAC
//! set, a redirect out of `--to`). `pass` attaches an XDP program that passes every frame (a veth peer needs
//! one to take frames another XDP program redirects to it). `probe` prints the method `--method auto` picks on IFACE, and why.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lbp_runtime::ring::bpf;
use lbp_trafficgen::{Counter, Generator, Method, Reflector, live_frames_available, udp4_frame};

fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC address {s:?}"));
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
    }
    Ok(m)
}

struct Args {
    positional: Vec<String>,
    opts: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(v: &[String]) -> Result<Args, String> {
        let mut positional = Vec::new();
        let mut opts = Vec::new();
        let mut it = v.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if name == "flows" {
                    opts.push((name.to_string(), None));
                } else {
                    let val = it.next().ok_or(format!("--{name} needs a value"))?;
                    opts.push((name.to_string(), Some(val.clone())));
                }
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Args { positional, opts })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn flag(&self, name: &str) -> bool {
        self.opts.iter().any(|(n, _)| n == name)
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("bad --{name} {v:?}")),
        }
    }

    fn ip(&self, name: &str) -> Result<Ipv4Addr, String> {
        let v = self.get(name).ok_or(format!("--{name} is required"))?;
        v.parse().map_err(|_| format!("bad --{name} {v:?}"))
    }

    fn seconds(&self) -> Result<Duration, String> {
        let s: f64 = self.num("seconds", 5.0)?;
        if !(0.0..=600.0).contains(&s) {
            return Err("--seconds is between 0 and 600".into());
        }
        Ok(Duration::from_secs_f64(s))
    }
}

fn ifindex(name: &str) -> Result<u32, String> {
    bpf::ifindex(name).map_err(|e| format!("interface {name}: {e}"))
}

fn send(a: &Args) -> Result<(), String> {
    let iface = a.positional.first().ok_or("send: IFACE is required")?;
    let src_mac = match a.get("src-mac") {
        Some(m) => mac(m)?,
        None => mac(
            &std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
                .map_err(|e| format!("{iface}: {e}"))?,
        )?,
    };
    let dst_mac = mac(a.get("dst-mac").ok_or("--dst-mac is required")?)?;
    let frame = udp4_frame(
        src_mac,
        dst_mac,
        a.ip("src")?,
        a.ip("dst")?,
        a.num("sport", 40_000)?,
        a.num("dport", 9)?,
        a.num("payload", 18)?,
    );
    let idx = ifindex(iface)?;
    let method = match a.get("method").unwrap_or("auto") {
        "auto" => Method::detect(idx),
        m => Method::parse(m).ok_or(format!("bad --method {m:?} (auto, live-frames or clone)"))?,
    };
    let g = Generator::open(method, idx, &frame, a.flag("flows"))
        .map_err(|e| format!("loading the {} generator: {e}", method.name()))?;
    println!("method {}", method.name());
    let time = a.seconds()?;
    let max = a.num("count", u64::MAX)?;
    let t = Instant::now();
    let sent = g
        .run_for(time, max, a.num("batch", 0)?)
        .map_err(|e| format!("sending ({}): {e}", method.name()))?;
    let secs = t.elapsed().as_secs_f64();
    let refused = g
        .refused()
        .map_err(|e| format!("reading the counts: {e}"))?;
    println!(
        "sent {sent} frames of {} bytes in {secs:.3} s: {:.0} pps ({refused} refused)",
        frame.len(),
        sent as f64 / secs
    );
    Ok(())
}

fn count(a: &Args) -> Result<(), String> {
    if a.positional.is_empty() {
        return Err("count: at least one IFACE is required".into());
    }
    let mut counters = Vec::new();
    for name in &a.positional {
        let c = Counter::attach(ifindex(name)?).map_err(|e| format!("counter on {name}: {e}"))?;
        counters.push((name, c));
    }
    println!("ready");
    std::thread::sleep(a.seconds()?);
    let mut total = 0u64;
    for (name, c) in &counters {
        let n = c.read().map_err(|e| format!("reading the counter: {e}"))?;
        println!(
            "counted {name} {} packets {} bytes ({:?} mode)",
            n.packets,
            n.bytes,
            c.mode()
        );
        total += n.packets;
    }
    println!("counted total {total}");
    Ok(())
}

/// `cmd IFACE`: the program `attach` puts on IFACE, kept for `--seconds`.
fn hold(
    a: &Args,
    cmd: &str,
    attach: impl FnOnce(u32) -> std::io::Result<Reflector>,
) -> Result<(), String> {
    let name = a
        .positional
        .first()
        .ok_or(format!("{cmd}: IFACE is required"))?;
    let r = attach(ifindex(name)?).map_err(|e| format!("{cmd} on {name}: {e}"))?;
    println!("ready ({:?} mode)", r.mode());
    std::thread::sleep(a.seconds()?);
    Ok(())
}

fn redirect(a: &Args) -> Result<(), String> {
    let to = ifindex(a.get("to").ok_or("redirect: --to IFACE is required")?)?;
    let dst = mac(a.get("dst-mac").ok_or("redirect: --dst-mac is required")?)?;
    hold(a, "redirect", |ix| Reflector::attach_redirect(ix, to, dst))
}

fn probe(a: &Args) -> Result<(), String> {
    let name = a.positional.first().ok_or("probe: IFACE is required")?;
    match live_frames_available(ifindex(name)?) {
        Ok(()) => println!("{}", Method::LiveFrames.name()),
        Err(e) => println!("{} (live frames refused: {e})", Method::Clone.name()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("usage: trafficgen send|count|reflect|pass|redirect|probe IFACE... [options]");
        return ExitCode::from(2);
    };
    let r = Args::parse(rest).and_then(|a| match cmd.as_str() {
        "send" => send(&a),
        "count" => count(&a),
        "reflect" => hold(&a, "reflect", Reflector::attach),
        "pass" => hold(&a, "pass", Reflector::attach_pass),
        "redirect" => redirect(&a),
        "probe" => probe(&a),
        other => Err(format!("unknown command {other:?}")),
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trafficgen: {e}");
            ExitCode::FAILURE
        }
    }
}
