//! The runtime API of `lbp run`: the control socket's thread (requests in,
//! replies out; reloads compiled here) and the Prometheus endpoint's.
//!
//! The protocol is one JSON object per connection each way: the client sends
//! its request and shuts down its side; the server answers
//! `{"ok": true, "text": ..., "data": ...}` (`text` for people, `data` for
//! `--json`) or `{"ok": false, "error": ...}` and closes. Requests:
//! `{"cmd": "reload", "policy": PATH?, "color": BOOL}`, `{"cmd": "stats"}`,
//! `{"cmd": "conns", "service": S?, "backend": B?, "limit": N?}`,
//! `{"cmd": "backends"}`, `{"cmd": "state", "backend": B, "service": S?,
//! "state": "ready"|"drain"|"maint"}`, `{"cmd": "weight", "service": S,
//! "backend": B, "weight": N|null}`.
//!
//! Who may ask: root (or the user the appliance runs as), by the kernel's
//! `SO_PEERCRED`; the socket file is 0600 besides. A request larger than
//! [`MAX_REQUEST`], slower than its timeout, or not a request gets an error
//! and changes nothing. Requests are served one at a time; reads (stats,
//! connections, back ends) are answered here from the cores' counters and the
//! control loop's [`View`]; changes go to the control loop as [`Command`]s,
//! which it takes a bounded number at a time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, SyncSender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lbp_abi::bpf::fast as slot;
use lbp_abi::{Action, stage};
use lbp_runtime::app::Registry;
use lbp_runtime::control::socket::{ControlSocket, Peer, read_request};
use lbp_runtime::control::weights::Admin;
use lbp_runtime::run::{Control, DROP_NAMES, Snapshot, monotonic_ns};
use serde_json::{Value, json};

use super::control::{Change, Command, Reply, SetBackend, View, compile};
use super::host::{RELOAD, STOP};
use lbp_runtime::control::diff::backend_text;
use lbp_runtime::switch::{DropReason, ip_from_bytes};

/// What the API and metrics threads read.
#[derive(Clone)]
pub struct Sources {
    /// The applications the switching cores run (a reload's policy is
    /// checked against their names).
    pub apps: Registry,
    /// The cores' counters and tables (shared with the control loop).
    pub control: Control,
    pub view: Arc<Mutex<View>>,
    /// `--datapath`: what a reload compiles for.
    pub datapath: super::fast::Datapath,
}

fn view(s: &Sources) -> View {
    s.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Serve the control socket until the stop flag is set; also turns SIGHUP
/// into a reload of the policy the appliance runs.
pub fn serve(sock: ControlSocket, src: Sources, commands: SyncSender<Command>) {
    while !STOP.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            let path = view(&src).policy_path;
            match reload(&path, false, &src, &commands) {
                Ok((text, _)) => eprintln!("{text}"),
                Err(e) => eprint!("lbp: SIGHUP: reload refused; the running policy stays:\n{e}"),
            }
        }
        match sock.accept() {
            Ok(Some(peer)) => answer(peer, &src, &commands),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                eprintln!("lbp: control socket: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The users who may use the API: root and the appliance's own.
fn allowed(uid: u32) -> bool {
    uid == 0 || uid == lbp_runtime::sys::euid()
}

fn answer(mut peer: Peer, src: &Sources, commands: &SyncSender<Command>) {
    let reply = if !allowed(peer.uid) {
        Err(format!(
            "lbp: permission denied: the control socket serves root only (peer uid {}, pid {})\n",
            peer.uid, peer.pid
        ))
    } else {
        match read_request(&mut peer.stream) {
            Ok(bytes) => handle(&bytes, src, commands),
            Err(e) => Err(format!("lbp: {e}\n")),
        }
    };
    let body = match reply {
        Ok((text, data)) => json!({ "ok": true, "text": text, "data": data }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let _ = peer.stream.write_all(body.to_string().as_bytes());
}

fn str_arg<'a>(req: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("lbp: bad request: `{key}` must be a string\n")),
    }
}

fn handle(bytes: &[u8], src: &Sources, commands: &SyncSender<Command>) -> Reply {
    let req: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("lbp: bad request: not a JSON object ({e})\n"))?;
    let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
        return Err("lbp: bad request: no `cmd`\n".into());
    };
    match cmd {
        "reload" => {
            let path = match str_arg(&req, "policy")? {
                Some(p) => PathBuf::from(p),
                None => view(src).policy_path,
            };
            let color = req.get("color").and_then(Value::as_bool).unwrap_or(false);
            reload(&path, color, src, commands)
        }
        "stats" => {
            refresh(commands);
            Ok(stats(src))
        }
        "conns" => {
            let limit = match req.get("limit") {
                None | Some(Value::Null) => 1000,
                Some(v) => v
                    .as_u64()
                    .ok_or("lbp: bad request: `limit` must be a number\n")?
                    as usize,
            };
            conns(
                src,
                str_arg(&req, "service")?,
                str_arg(&req, "backend")?,
                limit,
            )
        }
        "backends" => Ok(backends(src)),
        "state" => {
            let backend = str_arg(&req, "backend")?.ok_or("lbp: bad request: no `backend`\n")?;
            let admin = match str_arg(&req, "state")? {
                Some("ready") => Admin::Ready,
                Some("drain") => Admin::Drain,
                Some("maint") => Admin::Maint,
                _ => return Err("lbp: bad request: `state` is ready, drain or maint\n".into()),
            };
            set(
                commands,
                SetBackend {
                    backend: backend.to_string(),
                    service: str_arg(&req, "service")?.map(str::to_string),
                    change: Change::Admin(admin),
                },
            )
        }
        "weight" => {
            let backend = str_arg(&req, "backend")?.ok_or("lbp: bad request: no `backend`\n")?;
            let service = str_arg(&req, "service")?.ok_or("lbp: bad request: no `service`\n")?;
            let weight = match req.get("weight") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(w) if w <= u64::from(u16::MAX) => Some(w as u32),
                    _ => {
                        return Err(
                            "lbp: bad request: `weight` is a number from 0 to 65535\n".into()
                        );
                    }
                },
            };
            set(
                commands,
                SetBackend {
                    backend: backend.to_string(),
                    service: Some(service.to_string()),
                    change: Change::Weight(weight),
                },
            )
        }
        other => Err(format!("lbp: bad request: unknown command `{other}`\n")),
    }
}

/// Hand a command to the control loop and wait for its reply.
fn ask(commands: &SyncSender<Command>, make: impl FnOnce(Sender<Reply>) -> Command) -> Reply {
    let (tx, rx) = channel();
    commands
        .try_send(make(tx))
        .map_err(|_| "lbp: the control loop is busy; try again\n".to_string())?;
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "lbp: the control loop did not answer\n".to_string())?
        .map_err(|e| format!("lbp: {e}\n"))
}

/// Have the control loop bring the view up to now, so that counters read
/// after traffic count it (the view is otherwise refreshed each tick). A
/// control loop that is busy (a reload compiling) or slow to answer leaves
/// the view as it is: stats still answer. One refresh at a time is queued.
fn refresh(commands: &SyncSender<Command>) {
    use super::control::REFRESH_PENDING;
    if REFRESH_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let (tx, rx) = channel();
    if commands.try_send(Command::Refresh(tx)).is_ok() {
        let _ = rx.recv_timeout(Duration::from_secs(1));
    } else {
        REFRESH_PENDING.store(false, Ordering::Release);
    }
}

fn set(commands: &SyncSender<Command>, s: SetBackend) -> Reply {
    ask(commands, |tx| Command::Set(s, tx))
}

/// Compile the policy at `path` here, then have the control loop publish it.
fn reload(path: &Path, color: bool, src: &Sources, commands: &SyncSender<Command>) -> Reply {
    let requested = Instant::now();
    let compiled = compile(path, color, &src.apps, src.datapath, requested).map_err(|e| {
        super::control::RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
        if e.ends_with('\n') {
            e
        } else {
            format!("lbp: {e}\n")
        }
    })?;
    ask(commands, |tx| Command::Publish(Box::new(compiled), tx))
}

// ---- What the reads answer ------------------------------------------------------

/// Every core's latest snapshot.
fn snapshots(src: &Sources) -> Vec<Snapshot> {
    src.control.reports.iter().map(|r| r.get()).collect()
}

/// Live connections per back end address and port (port 0: any).
fn live_connections(src: &Sources) -> HashMap<(IpAddr, u16), u64> {
    let mut m: HashMap<(IpAddr, u16), u64> = HashMap::new();
    src.control.shared.conns.for_each(monotonic_ns(), |_, c| {
        *m.entry((ip_from_bytes(&c.target.backend_addr), c.target.backend_port))
            .or_default() += 1;
    });
    m
}

/// Everything `lbp stats` and the metrics show, as one JSON value.
pub fn stats_data(src: &Sources) -> Value {
    let v = view(src);
    let fast = |i: usize| v.fast.get(i).copied().unwrap_or_default();
    let snaps = snapshots(src);
    let live = live_connections(src);
    let conns = &src.control.shared.conns;
    let mut cores = Vec::new();
    let mut drops = [0u64; DropReason::COUNT];
    for (i, s) in snaps.iter().enumerate() {
        let (mut rxp, mut rxb, mut txp, mut txb, mut kdrop) = (0, 0, 0, 0, 0);
        for p in &s.ports {
            rxp += p.rx_packets;
            rxb += p.rx_bytes;
            txp += p.tx_packets;
            txb += p.tx_bytes;
            kdrop += p.rx_dropped;
        }
        for (d, x) in drops.iter_mut().zip(s.counters.drops) {
            *d += x;
        }
        let core_drops: serde_json::Map<String, Value> = DROP_NAMES
            .iter()
            .map(|(r, n)| (n.to_string(), json!(s.counters.drops[*r as usize])))
            .collect();
        cores.push(json!({
            "core": i,
            "generation": s.counters.generation,
            "rx_packets": rxp, "rx_bytes": rxb, "tx_packets": txp, "tx_bytes": txb,
            "kernel_drops": kdrop,
            "tx_full": s.lp.tx_refused,
            "new_connections": s.counters.new_connections,
            "backend_gone": s.counters.backend_gone,
            "xdp_adopted": s.counters.xdp_adopted,
            "time_exceeded": s.counters.time_exceeded,
            "time_exceeded_limited": s.counters.time_exceeded_limited,
            "icmp_errors_relayed": s.counters.icmp_errors,
            "unknown_resets": s.counters.unknown_resets,
            "drops": core_drops,
        }));
    }
    let current: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.counters.serial == v.serial)
        .collect();
    let mut services = Vec::new();
    // The back ends' counters of flows balanced in XDP: two slots per back
    // end, in pool order over the services, after the rules'.
    let mut xdp_slot = slot::slots(v.app.rules.len()) as usize;
    let (mut xdp_new, mut xdp_balanced) = (0u64, 0u64);
    for (si, svc) in v.app.services.iter().enumerate() {
        let mut backends = Vec::new();
        let (mut sp, mut sb, mut sn, mut sc) = (0u64, 0u64, 0u64, 0u64);
        for (bi, be) in svc.backends.iter().enumerate() {
            let (xn, xt) = (fast(xdp_slot), fast(xdp_slot + 1));
            xdp_slot += 2;
            xdp_new += xn.packets;
            xdp_balanced += xt.packets;
            let (mut p, mut b, mut n) = (xt.packets, xt.bytes, xn.packets);
            for s in &current {
                let c = &s.counters;
                if let Some(t) = c.backend_traffic.get(si).and_then(|v| v.get(bi)) {
                    p += t.packets;
                    b += t.bytes;
                }
                n += c
                    .backend_new
                    .get(si)
                    .and_then(|v| v.get(bi))
                    .copied()
                    .unwrap_or(0);
            }
            let live_n: u64 = live
                .iter()
                .filter(|((a, port), _)| {
                    *a == be.addr && (*port == 0 || be.port.is_none_or(|bp| bp == *port))
                })
                .map(|(_, n)| *n)
                .sum();
            let st = v
                .states
                .get(si)
                .and_then(|x| x.get(bi))
                .cloned()
                .unwrap_or_default();
            let weight = v
                .weights
                .get(si)
                .and_then(|x| x.get(bi))
                .copied()
                .unwrap_or(0);
            sp += p;
            sb += b;
            sn += n;
            sc += live_n;
            backends.push(json!({
                "backend": backend_text(be),
                "packets": p, "bytes": b, "new_connections": n, "connections": live_n,
                "weight": weight, "static_weight": be.weight,
                "state": admin_name(st.admin),
                "up": !st.down && !st.agent_down,
            }));
        }
        services.push(json!({
            "name": svc.name,
            "packets": sp, "bytes": sb, "new_connections": sn, "connections": sc,
            "backends": backends,
        }));
    }
    let mut rules = Vec::new();
    for (ri, r) in v.app.rules.iter().enumerate() {
        let (mut p, mut b) = (0u64, 0u64);
        for s in &current {
            if let Some(c) = s.counters.rules.get(ri) {
                p += c.packets;
                b += c.bytes;
            }
        }
        let x = fast(slot::RULES as usize + ri);
        (p, b) = (p + x.packets, b + x.bytes);
        if p > 0 {
            rules.push(
                json!({ "rule": ri, "line": r.line, "text": r.text, "packets": p, "bytes": b }),
            );
        }
    }
    // Drops decided by the XDP fast path, by the stage that decided them, as
    // the cores name them.
    for (stage, why) in [
        (stage::MALFORMED, DropReason::Malformed),
        (stage::FILTER, DropReason::Filter),
        (stage::SERVICE, DropReason::Filter),
        (stage::INVALID_ENTRY, DropReason::InvalidEntry),
        (stage::OWN_ADDRESS, DropReason::Filter),
        (stage::ROUTE, DropReason::NoRoute),
        (stage::MARTIAN, DropReason::Martian),
    ] {
        drops[why as usize] += fast((slot::STAGES + stage) as usize).packets;
    }
    let drop_map: serde_json::Map<String, Value> = DROP_NAMES
        .iter()
        .map(|(r, n)| (n.to_string(), json!(drops[*r as usize])))
        .collect();
    let cs = conns.stats();
    json!({
        "generation": v.generation,
        "policy": v.policy_path.display().to_string(),
        "reloads": v.reloads,
        "reload_failures": v.reload_failures,
        "connections": cs.len,
        "connection_capacity": conns.capacity(),
        "cores": cores,
        "xdp": {
            "on": v.fast_on,
            "seen_packets": fast(slot::SEEN as usize).packets,
            "seen_bytes": fast(slot::SEEN as usize).bytes,
            "to_cores_packets": fast(slot::TO_CORES as usize).packets,
            "dropped_packets": fast((slot::ACTIONS + Action::Drop as u32) as usize).packets,
            "dropped_bytes": fast((slot::ACTIONS + Action::Drop as u32) as usize).bytes,
            "reset_packets": fast((slot::ACTIONS + Action::Reset as u32) as usize).packets,
            "balanced_packets": fast((slot::ACTIONS + Action::Balance as u32) as usize).packets,
            "balanced_bytes": fast((slot::ACTIONS + Action::Balance as u32) as usize).bytes,
            "new_flows": xdp_new,
            "flows_balanced_packets": xdp_balanced,
        },
        "drops": drop_map,
        "services": services,
        "rules": rules,
        "reports": {
            "admitted": v.reports.admitted, "forged": v.reports.forged,
            "replayed": v.reports.replayed, "stale": v.reports.stale,
            "malformed": v.reports.malformed, "unknown_backend": v.reports.unknown_backend,
            "undefined": v.reports.undefined, "publications": v.reports.publications,
        },
    })
}

fn admin_name(a: Admin) -> &'static str {
    match a {
        Admin::Ready => "ready",
        Admin::Drain => "drain",
        Admin::Maint => "maint",
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn stats(src: &Sources) -> (String, Value) {
    let d = stats_data(src);
    let mut t = format!(
        "generation {}  policy {}  reloads {} (failed {})  connections {} of {}\n",
        u(&d, "generation"),
        d["policy"].as_str().unwrap_or(""),
        u(&d, "reloads"),
        u(&d, "reload_failures"),
        u(&d, "connections"),
        u(&d, "connection_capacity"),
    );
    t.push_str(
        "core  generation  rx packets    rx bytes  tx packets    tx bytes  new conns  drops\n",
    );
    for c in d["cores"].as_array().into_iter().flatten() {
        let drops: u64 = c["drops"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        t.push_str(&format!(
            "{:>4}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {}\n",
            u(c, "core"),
            u(c, "generation"),
            u(c, "rx_packets"),
            u(c, "rx_bytes"),
            u(c, "tx_packets"),
            u(c, "tx_bytes"),
            u(c, "new_connections"),
            drops + u(c, "tx_full"),
        ));
    }
    let x = &d["xdp"];
    if u(x, "seen_packets") > 0 || x["on"].as_bool() == Some(true) {
        t.push_str(&format!(
            "xdp fast path: {}  seen {}  to the cores {}  dropped {} ({} bytes)  reset {}  balanced {} ({} new flows)\n",
            if x["on"].as_bool() == Some(true) {
                "on"
            } else {
                "off"
            },
            u(x, "seen_packets"),
            u(x, "to_cores_packets"),
            u(x, "dropped_packets"),
            u(x, "dropped_bytes"),
            u(x, "reset_packets"),
            u(x, "balanced_packets"),
            u(x, "new_flows"),
        ));
    }
    for s in d["services"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "service {}: packets {}, bytes {}, new connections {}, connections {}\n",
            s["name"].as_str().unwrap_or(""),
            u(s, "packets"),
            u(s, "bytes"),
            u(s, "new_connections"),
            u(s, "connections")
        ));
        for b in s["backends"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "  {:<24} {:<6} {:<5} weight {:>5}  packets {:>10}  bytes {:>12}  new {:>8}  live {:>7}\n",
                b["backend"].as_str().unwrap_or(""),
                b["state"].as_str().unwrap_or(""),
                if b["up"].as_bool().unwrap_or(true) { "up" } else { "down" },
                u(b, "weight"),
                u(b, "packets"),
                u(b, "bytes"),
                u(b, "new_connections"),
                u(b, "connections"),
            ));
        }
    }
    let drops: Vec<String> = d["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    t.push_str(&format!(
        "drops: {}\n",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    ));
    let rules = d["rules"].as_array().map_or(0, Vec::len);
    if rules > 0 {
        t.push_str("filter rules that decided packets:\n");
        for r in d["rules"].as_array().into_iter().flatten().take(50) {
            t.push_str(&format!(
                "  line {:>5}: packets {:>10}  bytes {:>12}  {}\n",
                u(r, "line"),
                u(r, "packets"),
                u(r, "bytes"),
                r["text"].as_str().unwrap_or("")
            ));
        }
        if rules > 50 {
            t.push_str(&format!(
                "  ... {} more (--json has them all)\n",
                rules - 50
            ));
        }
    }
    (t.trim_end().to_string(), d)
}

fn conns(src: &Sources, service: Option<&str>, backend: Option<&str>, limit: usize) -> Reply {
    let v = view(src);
    let svc_index = match service {
        Some(n) => Some(
            v.app
                .services
                .iter()
                .position(|s| s.name == n)
                .ok_or_else(|| format!("lbp: no service `{n}`\n"))?,
        ),
        None => None,
    };
    let want_backend: Option<IpAddr> = match backend {
        Some(b) => Some(
            b.parse()
                .or_else(|_| b.parse::<SocketAddr>().map(|s| s.ip()))
                .map_err(|_| format!("lbp: `{b}` is not a back end address\n"))?,
        ),
        None => None,
    };
    // A service's connections are those to its virtual IPs.
    let vips: Option<Vec<IpAddr>> = svc_index.map(|s| v.app.services[s].vips.clone());
    let now = monotonic_ns();
    let mut rows = Vec::new();
    let mut total = 0usize;
    // The filters, and a row of the listing.
    let wanted = |vip: IpAddr, be: IpAddr| {
        vips.as_ref().is_none_or(|vs| vs.contains(&vip)) && want_backend.is_none_or(|b| b == be)
    };
    let row = |k: &lbp_runtime::conn::ConnKey,
               service: Option<&str>,
               backend: String,
               state: String,
               idle_ms: u64| {
        json!({
            "service": service.unwrap_or_default(),
            "proto": proto_text(k.proto),
            "client": sock_text(ip_from_bytes(&k.client), k.client_port),
            "vip": sock_text(ip_from_bytes(&k.vip), k.vport),
            "backend": backend,
            "state": state,
            "idle_ms": idle_ms,
        })
    };
    let backend_text = |be: IpAddr, port: u16| {
        if port == 0 {
            be.to_string()
        } else {
            sock_text(be, port)
        }
    };
    src.control.shared.conns.for_each(now, |k, c| {
        let vip = ip_from_bytes(&k.vip);
        let be = ip_from_bytes(&c.target.backend_addr);
        if !wanted(vip, be) {
            return;
        }
        total += 1;
        if rows.len() < limit {
            let service = v.app.services.iter().find(|s| s.vips.contains(&vip));
            rows.push(row(
                k,
                service.map(|s| s.name.as_str()),
                backend_text(be, c.target.backend_port),
                format!("{:?}", c.state).to_lowercase(),
                now.saturating_sub(c.last_seen) / 1_000_000,
            ));
        }
    });
    // Flows the XDP fast path balanced that no core took over: its flows
    // map (no state there; the idle time to about a second).
    if let Some(flows) = src.control.shared.xdp_flows.get() {
        let conns = &src.control.shared.conns;
        let clock = lbp_runtime::ring::fastbal::flow_clock();
        let r = lbp_runtime::ring::fastbal::xdp_flows_each(flows, |x| {
            let (k, vip, be) = (x.key, ip_from_bytes(&x.key.vip), ip_from_bytes(&x.backend));
            if !wanted(vip, be) || conns.peek(&k, now).is_some() {
                return true;
            }
            total += 1;
            if rows.len() < limit {
                let found = v.app.services.iter().find_map(|s| {
                    let b = s.backends.iter().find(|b| b.addr == be)?;
                    s.vips.contains(&vip).then_some((s, b))
                });
                let port = found.map_or(0, |(s, b)| s.backend_port(b, k.vport));
                rows.push(row(
                    &k,
                    found.map(|(s, _)| s.name.as_str()),
                    backend_text(be, port),
                    "xdp".to_string(),
                    u64::from(clock.saturating_sub(x.seen)) * (1 << 30) / 1_000_000,
                ));
            }
            true
        });
        if let Err(e) = r {
            return Err(format!("lbp: the XDP fast path's flows: {e}\n"));
        }
    }
    let mut t = String::new();
    for r in &rows {
        let ms = r["idle_ms"].as_u64().unwrap_or(0);
        let idle = match r["state"].as_str() {
            Some("xdp") => format!("in XDP, idle {} s", ms / 1000),
            _ => format!("idle {ms} ms"),
        };
        t.push_str(&format!(
            "{:<5} {:<8} {:<46} -> {:<46} => {:<46} {:<12} {idle}\n",
            r["proto"].as_str().unwrap_or(""),
            r["service"].as_str().unwrap_or(""),
            r["client"].as_str().unwrap_or(""),
            r["vip"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
        ));
    }
    t.push_str(&format!(
        "{total} connection{}{}",
        if total == 1 { "" } else { "s" },
        if total > rows.len() {
            format!(" ({} shown; --limit)", rows.len())
        } else {
            String::new()
        }
    ));
    Ok((t, json!({ "total": total, "connections": rows })))
}

fn proto_text(p: u8) -> String {
    match p {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 | 58 => "icmp".to_string(),
        p => p.to_string(),
    }
}

fn sock_text(a: IpAddr, port: u16) -> String {
    SocketAddr::new(a, port).to_string()
}

fn backends(src: &Sources) -> (String, Value) {
    let v = view(src);
    let mut rows = Vec::new();
    let mut t = String::from(
        "service      back end                 state  health  agent        weight (static, override)  last report\n",
    );
    for (si, svc) in v.app.services.iter().enumerate() {
        for (bi, be) in svc.backends.iter().enumerate() {
            let st = v
                .states
                .get(si)
                .and_then(|x| x.get(bi))
                .cloned()
                .unwrap_or_default();
            let checked = v
                .checked
                .get(si)
                .and_then(|x| x.get(bi))
                .copied()
                .unwrap_or(false);
            let agent = v
                .agents
                .get(si)
                .and_then(|x| x.get(bi))
                .copied()
                .unwrap_or(false);
            let weight = v
                .weights
                .get(si)
                .and_then(|x| x.get(bi))
                .copied()
                .unwrap_or(0);
            let health = if !checked {
                "-"
            } else if st.down {
                "down"
            } else {
                "up"
            };
            let agent_text = if !agent {
                "-".to_string()
            } else if st.agent_down {
                "down".to_string()
            } else {
                match st.agent_percent {
                    Some(p) => format!("up {p}%"),
                    None => "up".to_string(),
                }
            };
            let report = st.report.map(|(load, at)| {
                let mut m = serde_json::Map::new();
                for (k, x) in lbp_abi::weight::Load::KEYS.iter().zip(load.values()) {
                    m.insert(k.to_string(), json!(x));
                }
                (v.now_ms.saturating_sub(at), Value::Object(m))
            });
            t.push_str(&format!(
                "{:<12} {:<24} {:<6} {:<7} {:<12} {:>6} ({}, {})  {}\n",
                svc.name,
                backend_text(be),
                admin_name(st.admin),
                health,
                agent_text,
                weight,
                be.weight,
                st.weight_override
                    .map_or("-".to_string(), |w| w.to_string()),
                match &report {
                    Some((age, l)) => format!("{age} ms ago {l}"),
                    None => "-".to_string(),
                }
            ));
            rows.push(json!({
                "service": svc.name,
                "backend": backend_text(be),
                "state": admin_name(st.admin),
                "health": health,
                "agent": agent_text,
                "weight": weight,
                "static_weight": be.weight,
                "override": st.weight_override,
                "report_age_ms": report.as_ref().map(|r| r.0),
                "report": report.map(|r| r.1),
            }));
        }
    }
    (
        t.trim_end().to_string(),
        json!({ "generation": v.generation, "backends": rows }),
    )
}

// ---- Prometheus ---------------------------------------------------------------------

/// Serve `GET /metrics` on `listener` until the stop flag is set.
pub fn serve_metrics(listener: TcpListener, src: Sources) {
    let _ = listener.set_nonblocking(true);
    while !STOP.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let first = line.lines().next().unwrap_or("");
                let (status, ctype, body) =
                    if first.starts_with("GET /metrics ") || first.starts_with("GET /metrics?") {
                        (
                            "200 OK",
                            "text/plain; version=0.0.4; charset=utf-8",
                            metrics(&src),
                        )
                    } else if first.starts_with("GET ") {
                        ("404 Not Found", "text/plain", "see /metrics\n".to_string())
                    } else {
                        (
                            "405 Method Not Allowed",
                            "text/plain",
                            "GET only\n".to_string(),
                        )
                    };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A label value, escaped as the text format wants.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters in Prometheus's text format.
pub fn metrics(src: &Sources) -> String {
    let d = stats_data(src);
    let mut m = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            if labels.is_empty() {
                m.push_str(&format!("{name} {v}\n"));
            } else {
                m.push_str(&format!("{name}{{{labels}}} {v}\n"));
            }
        }
    };
    family(
        "lbp_generation",
        "gauge",
        "The id of the active generation.",
        vec![(String::new(), u(&d, "generation"))],
    );
    family(
        "lbp_reloads_total",
        "counter",
        "Reloads that took effect.",
        vec![(String::new(), u(&d, "reloads"))],
    );
    family(
        "lbp_reload_failures_total",
        "counter",
        "Reloads refused (the running policy stayed).",
        vec![(String::new(), u(&d, "reload_failures"))],
    );
    family(
        "lbp_connections",
        "gauge",
        "Entries in the connection table.",
        vec![(String::new(), u(&d, "connections"))],
    );
    let cores: Vec<Value> = d["cores"].as_array().cloned().unwrap_or_default();
    for (name, key, help) in [
        (
            "lbp_core_receive_packets_total",
            "rx_packets",
            "Packets received by a switching core.",
        ),
        (
            "lbp_core_receive_bytes_total",
            "rx_bytes",
            "Bytes received by a switching core.",
        ),
        (
            "lbp_core_transmit_packets_total",
            "tx_packets",
            "Packets transmitted by a switching core.",
        ),
        (
            "lbp_core_transmit_bytes_total",
            "tx_bytes",
            "Bytes transmitted by a switching core.",
        ),
        (
            "lbp_core_connections_total",
            "new_connections",
            "New connections a switching core balanced.",
        ),
        (
            "lbp_core_generation",
            "generation",
            "The generation a switching core runs.",
        ),
        (
            "lbp_core_time_exceeded_total",
            "time_exceeded",
            "ICMP time exceeded sent for packets whose TTL or hop limit ran out.",
        ),
        (
            "lbp_core_time_exceeded_limited_total",
            "time_exceeded_limited",
            "Expired packets left unanswered by the rate limit (also ttl drops).",
        ),
        (
            "lbp_core_icmp_errors_relayed_total",
            "icmp_errors_relayed",
            "ICMP errors about a balanced connection sent on to its back end or client.",
        ),
        (
            "lbp_core_unknown_resets_total",
            "unknown_resets",
            "TCP segments of no connection answered with a reset.",
        ),
    ] {
        let kind = if key == "generation" {
            "gauge"
        } else {
            "counter"
        };
        family(
            name,
            kind,
            help,
            cores
                .iter()
                .map(|c| (format!("core=\"{}\"", u(c, "core")), u(c, key)))
                .collect(),
        );
    }
    let x = &d["xdp"];
    family(
        "lbp_xdp_packets_total",
        "counter",
        "Frames the XDP fast path saw, sent to the switching cores, dropped itself, answered with a TCP reset, and balanced itself.",
        ["seen", "to_cores", "dropped", "reset", "balanced"]
            .iter()
            .map(|k| (format!("what=\"{k}\""), u(x, &format!("{k}_packets"))))
            .collect(),
    );
    let mut drops: Vec<(String, u64)> = d["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (format!("reason=\"{k}\""), v.as_u64().unwrap_or(0)))
        .collect();
    drops.push((
        "reason=\"tx-full\"".into(),
        cores.iter().map(|c| u(c, "tx_full")).sum(),
    ));
    drops.push((
        "reason=\"kernel\"".into(),
        cores.iter().map(|c| u(c, "kernel_drops")).sum(),
    ));
    family(
        "lbp_drops_total",
        "counter",
        "Packets dropped, by reason.",
        drops,
    );
    let services: Vec<Value> = d["services"].as_array().cloned().unwrap_or_default();
    let svc_rows = |key: &str| -> Vec<(String, u64)> {
        services
            .iter()
            .map(|s| {
                (
                    format!("service=\"{}\"", esc(s["name"].as_str().unwrap_or(""))),
                    u(s, key),
                )
            })
            .collect()
    };
    family(
        "lbp_service_packets_total",
        "counter",
        "Packets balanced to a service's back ends (since the policy was loaded).",
        svc_rows("packets"),
    );
    family(
        "lbp_service_bytes_total",
        "counter",
        "Bytes balanced to a service's back ends (since the policy was loaded).",
        svc_rows("bytes"),
    );
    family(
        "lbp_service_connections_total",
        "counter",
        "New connections of a service (since the policy was loaded).",
        svc_rows("new_connections"),
    );
    let be_rows = |f: &dyn Fn(&Value) -> u64| -> Vec<(String, u64)> {
        let mut rows = Vec::new();
        for s in &services {
            for b in s["backends"].as_array().into_iter().flatten() {
                rows.push((
                    format!(
                        "service=\"{}\",backend=\"{}\"",
                        esc(s["name"].as_str().unwrap_or("")),
                        esc(b["backend"].as_str().unwrap_or(""))
                    ),
                    f(b),
                ));
            }
        }
        rows
    };
    type Pick = fn(&Value) -> u64;
    let backend_families: [(&str, &str, &str, Pick); 7] = [
        (
            "lbp_backend_connections_total",
            "counter",
            "New connections given to a back end (since the policy was loaded).",
            |b| u(b, "new_connections"),
        ),
        (
            "lbp_backend_connections",
            "gauge",
            "Connections of a back end in the connection table.",
            |b| u(b, "connections"),
        ),
        (
            "lbp_backend_packets_total",
            "counter",
            "Packets balanced to a back end (since the policy was loaded).",
            |b| u(b, "packets"),
        ),
        (
            "lbp_backend_bytes_total",
            "counter",
            "Bytes balanced to a back end (since the policy was loaded).",
            |b| u(b, "bytes"),
        ),
        (
            "lbp_backend_weight",
            "gauge",
            "A back end's weight in the active generation.",
            |b| u(b, "weight"),
        ),
        (
            "lbp_backend_up",
            "gauge",
            "1 when a back end's health checks and agent say it is up.",
            |b| u64::from(b["up"].as_bool().unwrap_or(true)),
        ),
        (
            "lbp_backend_drain",
            "gauge",
            "1 when a back end is drained or in maintenance.",
            |b| u64::from(b["state"].as_str() != Some("ready")),
        ),
    ];
    for (name, kind, help, pick) in backend_families {
        family(name, kind, help, be_rows(&pick));
    }
    let rules: Vec<Value> = d["rules"].as_array().cloned().unwrap_or_default();
    let rule_rows = |key: &str| -> Vec<(String, u64)> {
        rules
            .iter()
            .map(|r| {
                (
                    format!("rule=\"{}\",line=\"{}\"", u(r, "rule"), u(r, "line")),
                    u(r, key),
                )
            })
            .collect()
    };
    family(
        "lbp_rule_packets_total",
        "counter",
        "Packets a filter rule decided (rules that decided none are left out).",
        rule_rows("packets"),
    );
    family(
        "lbp_rule_bytes_total",
        "counter",
        "Bytes a filter rule decided.",
        rule_rows("bytes"),
    );
    let r = &d["reports"];
    family(
        "lbp_reports_total",
        "counter",
        "Agents' load reports, by what became of them.",
        [
            "admitted",
            "forged",
            "replayed",
            "stale",
            "malformed",
            "unknown_backend",
        ]
        .iter()
        .map(|k| (format!("result=\"{k}\""), u(r, k)))
        .collect(),
    );
    m
}
