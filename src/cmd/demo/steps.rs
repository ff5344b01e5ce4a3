//! The demo's steps: each announced with one line, each a check of what the
//! appliance did, with its figures. The client's requests run all along (see
//! `traffic`), counted in phases; lbp is asked through its control socket, as
//! `lbp stats`, `lbp reload`, `lbp drain` and `lbp backends` ask it.
//!
//! What "failed" means: a request that was refused, timed out, or not answered
//! with a back end's name. A phase's requests are those the client started in
//! it; a phase that follows a change of the appliance starts once the
//! generation that carries the change runs on every switching core.

use std::path::Path;

use serde_json::{Value, json};

use super::child::Kids;
use super::traffic::{Load, Tally, http_get, udp_echo};
use super::*;

/// The weights of the policy that the reload step publishes.
pub(super) const RELOAD_WEIGHTS: [u32; 3] = [3, 2, 1];
/// The pools' weight formula in `demo.lbp`, and the same in Rust: a back end's
/// weight from its static weight and the clients its agent reports.
pub(super) const FORMULA: &str = "weight = weight * 100 / (1 + clients)";

fn formula(weight: u32, clients: u32) -> u32 {
    (f64::from(weight) * 100.0 / (1.0 + f64::from(clients))).round() as u32
}

/// The clients each back end's agent reports in the agent step.
const AGENT_CLIENTS: [u32; 3] = [2, 0, 0];
/// Where `lbp run` takes the agents' reports (the appliance's address on the
/// servers' network; `--reports 0.0.0.0:7000`).
pub(super) const REPORTS_PORT: u16 = 7000;
const REPORTS_TO: &str = "198.18.2.1:7000";
/// The back end whose server the health step stops, and the one drained.
const STOPPED: usize = 0;
const DRAINED: usize = 1;
/// The steps, in order.
pub(super) const STEPS: [&str; 7] = [
    "balance", "reload", "health", "drain", "agent", "echo", "filter",
];
/// Requests over IPv6 in the balance step; UDP datagrams per family in the
/// echo step.
const V6_REQUESTS: usize = 30;
const ECHOES: usize = 20;
/// The longest a phase may take to get its requests, and lbp to make a change.
const PHASE_LIMIT: Duration = Duration::from_secs(30);
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A step's result: whether it held, and its figures in one line.
pub(super) struct Outcome {
    pub(super) name: &'static str,
    pub(super) held: bool,
    /// Ctrl-C came during the step (it neither held nor failed).
    pub(super) interrupted: bool,
    pub(super) figures: String,
}

/// What the steps work with.
pub(super) struct Ctx<'a> {
    pub(super) load: &'a Load,
    pub(super) lbp: &'a LbpChild,
    pub(super) control: &'a Path,
    pub(super) client: &'a Netns,
    pub(super) backends: [&'a Netns; 3],
    pub(super) servers: &'a Servers,
    pub(super) agents: &'a mut Kids,
    pub(super) exe: &'a Path,
    pub(super) secret: &'a Path,
    pub(super) reload_policy: &'a Path,
    /// Requests per phase whose split is checked.
    pub(super) n: u64,
}

/// The reload step's policy: `demo.lbp` with the back ends' static weights
/// replaced by `RELOAD_WEIGHTS` (in both pools).
pub(super) fn reloaded() -> String {
    let mut out = String::new();
    for line in POLICY.lines() {
        let mut l = line.to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["backend", addr, "weight", _] = words[..]
            && let Some(i) = BACKENDS.iter().position(|b| b.1 == addr || b.2 == addr)
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            l = format!("{indent}backend {addr} weight {}", RELOAD_WEIGHTS[i]);
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Run every step (until Ctrl-C); their outcomes.
pub(super) fn run(cx: &mut Ctx) -> Vec<Outcome> {
    let mut v = Vec::new();
    for (i, name) in STEPS.iter().enumerate() {
        if interrupted() {
            break;
        }
        view::step(&format!("step {}/{} {name}", i + 1, STEPS.len()));
        let r = match *name {
            "balance" => balance(cx),
            "reload" => reload(cx),
            "health" => health(cx),
            "drain" => drain(cx),
            "agent" => agent(cx),
            "echo" => echo(cx),
            _ => filter(cx),
        };
        cx.load.pause();
        let (held, figures) = match r {
            Ok((held, figures)) => (held, figures),
            Err(e) => (false, e),
        };
        if interrupted() && !held {
            say!("  interrupted (Ctrl-C)");
            v.push(Outcome {
                name,
                held: false,
                interrupted: true,
                figures,
            });
            break;
        }
        if held {
            say!("  held");
        } else {
            say!("  FAILED: {figures}");
            say!("  lbp run's last lines on stderr:");
            for l in cx.lbp.stderr_tail(15) {
                say!("  | {l}");
            }
        }
        v.push(Outcome {
            name,
            held,
            interrupted: false,
            figures,
        });
    }
    v
}

type Step = Result<(bool, String), String>;

fn announce(n: usize, what: &str) {
    say!("lbp demo: step {n}/{} {what}", STEPS.len());
}

// ---- Asking lbp ------------------------------------------------------------------

/// One request to the control socket; the answer's `text` and `data`.
fn ask(cx: &Ctx, req: Value) -> Result<(String, Value), String> {
    let a = crate::cmd::ctl::request(cx.control, &req)?;
    if a["ok"].as_bool() != Some(true) {
        return Err(a["error"]
            .as_str()
            .unwrap_or("lbp refused")
            .trim()
            .to_string());
    }
    Ok((
        a["text"].as_str().unwrap_or("").to_string(),
        a["data"].clone(),
    ))
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// The active generation and the generation each switching core runs.
fn generations(cx: &Ctx) -> Result<(u64, Vec<u64>), String> {
    let (_, d) = ask(cx, json!({ "cmd": "stats" }))?;
    let cores = d["cores"]
        .as_array()
        .map(|c| c.iter().map(|c| num(c, "generation")).collect())
        .unwrap_or_default();
    Ok((num(&d, "generation"), cores))
}

/// Wait until every switching core runs generation `g` or a later one.
fn wait_active(cx: &Ctx, g: u64) -> Result<(), String> {
    let end = Instant::now() + CHANGE_LIMIT;
    loop {
        let (_, cores) = generations(cx)?;
        if !cores.is_empty() && cores.iter().all(|&c| c >= g) {
            return Ok(());
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() >= end {
            return Err(format!(
                "the cores did not all run generation {g} within {} s (they run {cores:?})",
                CHANGE_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One back end of `web_v4` as `lbp backends` shows it.
#[derive(Clone, Debug, Default)]
struct Row {
    health: String,
    weight: u32,
    static_weight: u32,
    report: Option<(u64, Value)>,
}

/// `lbp backends`: the generation and the IPv4 pool's back ends.
fn backends(cx: &Ctx) -> Result<(u64, Vec<Row>), String> {
    let (_, d) = ask(cx, json!({ "cmd": "backends" }))?;
    let rows = d["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["service"] == "web_v4")
        .map(|b| Row {
            health: b["health"].as_str().unwrap_or("").to_string(),
            weight: num(b, "weight") as u32,
            static_weight: num(b, "static_weight") as u32,
            report: b["report_age_ms"]
                .as_u64()
                .map(|age| (age, b["report"].clone())),
        })
        .collect();
    Ok((num(&d, "generation"), rows))
}

/// Wait until the IPv4 pool's back ends satisfy `ok`, then until every core
/// runs the generation that showed it; that generation, its rows, and how
/// long it took.
fn wait_backends(
    cx: &Ctx,
    what: &str,
    ok: impl Fn(&[Row]) -> bool,
) -> Result<(u64, Vec<Row>, Duration), String> {
    let start = Instant::now();
    let end = start + CHANGE_LIMIT;
    loop {
        let (g, rows) = backends(cx)?;
        if rows.len() == 3 && ok(&rows) {
            wait_active(cx, g)?;
            return Ok((g, rows, start.elapsed()));
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() >= end {
            return Err(format!(
                "not {what} within {} s: {rows:?}",
                CHANGE_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Print what lbp said on its stderr since `mark`, the lines starting with one
/// of `topics` (`lbp: health:` ...).
fn relay(cx: &Ctx, mark: usize, topics: &[&str]) {
    for l in cx.lbp.stderr_since(mark) {
        if topics.iter().any(|t| l.starts_with(t)) {
            say!("  lbp run: {}", l.strip_prefix("lbp: ").unwrap_or(&l));
        }
    }
}

// ---- The client's figures ---------------------------------------------------------

/// Open a phase, wait for `n` requests in it, close it: its figures.
fn phase(cx: &Ctx, name: &str, n: u64) -> Result<Tally, String> {
    let p = cx.load.phase(name, Some(n));
    // 30 s, or 3 ms a request for more than 10 000.
    let limit = PHASE_LIMIT.max(Duration::from_millis(n.saturating_mul(3)));
    let got = cx.load.wait_for(p, n, limit);
    cx.load.pause();
    let t = cx.load.finish(p);
    if !got {
        if interrupted() {
            return Err("interrupted".into());
        }
        return Err(format!(
            "{name}: only {} of {n} requests within {} s ({})",
            t.total(),
            limit.as_secs(),
            t.errors.join("; ")
        ));
    }
    Ok(t)
}

/// Whether a phase's answered requests follow the weights, with its figures.
struct Split {
    ok: bool,
    /// Per back end its requests and their share, and the weights' shares.
    detail: String,
    /// The shares and the weights.
    short: String,
}

/// Whether the requests answered in `t` follow `weights` (a back end of weight
/// 0 must get none).
fn split(t: &Tally, weights: [u32; 3]) -> Split {
    let served = t.served();
    let total_w: u32 = weights.iter().sum();
    let mut ok = served > 0;
    let (mut parts, mut shares, mut wants) = (Vec::new(), Vec::new(), Vec::new());
    for ((&(name, ..), &c), &w) in BACKENDS.iter().zip(&t.counts).zip(&weights) {
        let want = f64::from(w) / f64::from(total_w.max(1));
        let share = c as f64 / served.max(1) as f64;
        // 15 % of the weight's share, or 4.5 standard deviations of a random
        // spread of that many requests when they are too few for 15 % to mean
        // much (Maglev hashes each connection: the spread is random). 4.5
        // deviations fail about one run in fifty thousand per back end, and
        // still catch weights ignored (an even split puts b1 at 33 %, over
        // 16.7 % + 4.5 sigma = 24 % at 600 requests).
        let sigma = (want * (1.0 - want) / served.max(1) as f64).sqrt();
        let within = if w == 0 {
            c == 0
        } else {
            (share - want).abs() <= (0.15 * want).max(4.5 * sigma)
        };
        ok &= within;
        parts.push(format!(
            "{name} {c} ({:.1} %){}",
            share * 100.0,
            if within { "" } else { " <- off" }
        ));
        shares.push(format!("{:.1}", share * 100.0));
        wants.push(format!("{:.1}", want * 100.0));
    }
    let off = if ok { "" } else { " (off)" };
    Split {
        ok,
        detail: format!(
            "{} for weights {} ({} %){off}",
            parts.join(", "),
            ratio(weights),
            wants.join("/")
        ),
        short: format!("{} % for weights {}{off}", shares.join("/"), ratio(weights)),
    }
}

fn ratio(w: [u32; 3]) -> String {
    format!("{}:{}:{}", w[0], w[1], w[2])
}

/// A phase's requests in one line (and the first error, if any).
fn answered(t: &Tally) -> String {
    let mut s = format!(
        "{}, {} ({:.0} requests/s)",
        t.answered(),
        t.failures(),
        t.rate()
    );
    if let Some(e) = t.errors.first() {
        s.push_str(&format!(" [first error: {e}]"));
    }
    s
}

// ---- The steps --------------------------------------------------------------------

fn static_weights() -> [u32; 3] {
    [BACKENDS[0].3, BACKENDS[1].3, BACKENDS[2].3]
}

/// Step 1: the split follows the weights 1:2:3; IPv6 is served too.
fn balance(cx: &mut Ctx) -> Step {
    let w = static_weights();
    announce(
        1,
        &format!(
            "balance: {} requests to {VIP4}:80, a new connection each, spread by Maglev over b1 b2 b3 with weights {}",
            cx.n,
            ratio(w)
        ),
    );
    let t = phase(cx, "balance", cx.n)?;
    let sp = split(&t, w);
    say!("  {}", answered(&t));
    say!("  split: {}", sp.detail);
    let v6: Vec<String> = cx.client.within(|| {
        (0..V6_REQUESTS)
            .map_while(|_| {
                (!interrupted()).then(|| {
                    http_get(None, SocketAddr::new(VIP6.into(), 80))
                        .unwrap_or_else(|e| format!("error: {e}"))
                })
            })
            .collect()
    })?;
    let mut by = [0; 3];
    for b in &v6 {
        if let Some(i) = BACKENDS.iter().position(|x| x.0 == b.as_str()) {
            by[i] += 1;
        }
    }
    let v6_ok: usize = by.iter().sum();
    say!(
        "  IPv6 [{VIP6}]:80: {v6_ok} of {V6_REQUESTS} answered (b1 {}, b2 {}, b3 {})",
        by[0],
        by[1],
        by[2]
    );
    Ok((
        t.failed() == 0 && sp.ok && v6_ok == V6_REQUESTS,
        format!(
            "{}, split {}; IPv6 {v6_ok} of {V6_REQUESTS} answered",
            t.answered(),
            sp.short
        ),
    ))
}

/// Step 2: a reload to other weights while requests flow: none fails, the split
/// follows the new weights, the generation went up.
fn reload(cx: &mut Ctx) -> Step {
    let w = RELOAD_WEIGHTS;
    announce(
        2,
        &format!(
            "reload: `lbp reload` of a second policy (weights {}) while the requests flow",
            ratio(w)
        ),
    );
    let (g0, _) = generations(cx)?;
    let across = cx.load.phase("reload: across it", None);
    // Requests before the reload, during it, and after it.
    if !cx.load.wait_for(across, 100, PHASE_LIMIT) {
        return Err("no requests before the reload".into());
    }
    let path = cx.reload_policy.display().to_string();
    let at = Instant::now();
    let answer = ask(
        cx,
        json!({ "cmd": "reload", "policy": path, "color": false }),
    );
    let took = at.elapsed();
    let (text, data) = answer.map_err(|e| format!("the reload was refused: {e}"))?;
    for l in text.lines() {
        say!("  {l}");
    }
    let g1 = num(&data, "generation");
    wait_active(cx, g1)?;
    let before = cx.load.tally(across).total();
    cx.load.wait_for(across, before + 100, PHASE_LIMIT);
    let after = phase(cx, "reload: after it", cx.n)?;
    let a = cx.load.finish(across);
    let sp = split(&after, w);
    say!("  across the reload: {}", answered(&a));
    say!("  after it: {}", answered(&after));
    say!("  split: {}", sp.detail);
    Ok((
        g1 > g0 && a.failed() == 0 && after.failed() == 0 && sp.ok,
        format!(
            "generation {g0} -> {g1}, answered in {:.0} ms; across it {}; after it {}, split {}",
            took.as_secs_f64() * 1000.0,
            a.answered(),
            after.answered(),
            sp.short
        ),
    ))
}

/// Step 3: a back end's server stops: the health check takes it out (no request to
/// it, none failing, once the generation that took it out runs on every core);
/// it starts again: the check brings it back.
///
/// Requests refused between the server's stop and that generation (the
/// check's `fall` window) are shown, and are not failures of the step; every
/// other request of the step must be answered.
fn health(cx: &mut Ctx) -> Step {
    let w = RELOAD_WEIGHTS;
    let (name, addr, ..) = BACKENDS[STOPPED];
    announce(
        3,
        &format!(
            "health: {name}'s server stops; the pool's `health tcp` check (every 200 ms, fall 3, rise 2) takes {name} out, then brings it back once its server runs again"
        ),
    );
    let mark = cx.lbp.stderr_mark();
    let window = cx.load.phase("health: server stopped, not yet out", None);
    cx.servers.set(STOPPED, false)?;
    say!("  {name}'s server on {addr}:8080 stopped: its port refuses connections");
    let (g, _, out_after) = wait_backends(cx, "taken out", |r| {
        r[STOPPED].health == "down" && r[STOPPED].weight == 0
    })?;
    let out = phase(cx, "health: out", cx.n);
    let win = cx.load.finish(window);
    relay(cx, mark, &["lbp: health:"]);
    say!(
        "  {name} out {:.2} s after its server stopped (generation {g} on every core); in that window {} of {} requests went to it and were refused",
        out_after.as_secs_f64(),
        win.refused,
        win.total()
    );
    let out = out?;
    let mut out_w = w;
    out_w[STOPPED] = 0;
    let out_sp = split(&out, out_w);
    say!("  while out: {}", answered(&out));
    say!("  split: {}", out_sp.detail);

    let mark = cx.lbp.stderr_mark();
    let coming = cx.load.phase("health: server started, not yet back", None);
    cx.servers.set(STOPPED, true)?;
    say!("  {name}'s server started again");
    let (g, _, back_after) = wait_backends(cx, "brought back", |r| {
        r[STOPPED].health == "up" && r[STOPPED].weight == w[STOPPED]
    })?;
    let back = phase(cx, "health: back", cx.n);
    let coming = cx.load.finish(coming);
    relay(cx, mark, &["lbp: health:"]);
    say!(
        "  {name} back {:.2} s after its server started (generation {g} on every core); meanwhile {}",
        back_after.as_secs_f64(),
        answered(&coming)
    );
    let back = back?;
    let back_sp = split(&back, w);
    say!("  back: {}", answered(&back));
    say!("  split: {}", back_sp.detail);
    Ok((
        out.failed() == 0 && out_sp.ok && coming.failed() == 0 && back.failed() == 0 && back_sp.ok,
        format!(
            "{name} out after {:.2} s ({} requests refused before); while out {}, split {}; back after {:.2} s, {} meanwhile; then {}, split {}",
            out_after.as_secs_f64(),
            win.refused,
            out.answered(),
            out_sp.short,
            back_after.as_secs_f64(),
            coming.answered(),
            back.answered(),
            back_sp.short
        ),
    ))
}

/// Step 4: `lbp drain`: new connections avoid the back end; `lbp undrain`: they
/// reach it again.
fn drain(cx: &mut Ctx) -> Step {
    let w = RELOAD_WEIGHTS;
    let (name, addr, ..) = BACKENDS[DRAINED];
    announce(
        4,
        &format!(
            "drain: `lbp drain {addr}`: {name} takes no new connections; then `lbp undrain {addr}`"
        ),
    );
    let set = |state: &str| -> Result<u64, String> {
        let (text, data) = ask(
            cx,
            json!({ "cmd": "state", "backend": addr, "state": state }),
        )?;
        say!("  {text}");
        let g = num(&data, "generation");
        wait_active(cx, g)?;
        Ok(g)
    };
    set("drain")?;
    let drained = phase(cx, "drain: drained", cx.n)?;
    let mut dw = w;
    dw[DRAINED] = 0;
    let d_sp = split(&drained, dw);
    say!("  drained: {}", answered(&drained));
    say!("  split: {}", d_sp.detail);
    set("ready")?;
    let back = phase(cx, "drain: undrained", cx.n)?;
    let b_sp = split(&back, w);
    say!("  undrained: {}", answered(&back));
    say!("  split: {}", b_sp.detail);
    Ok((
        drained.failed() == 0 && d_sp.ok && back.failed() == 0 && b_sp.ok,
        format!(
            "drained: {}, split {}; undrained: {}, split {}",
            drained.answered(),
            d_sp.short,
            back.answered(),
            b_sp.short
        ),
    ))
}

/// Step 5: `lbp agent` on each back end reports a load; the pool's formula turns
/// the reports into weights, which `lbp backends` shows, and the split
/// follows them.
fn agent(cx: &mut Ctx) -> Step {
    let loads: Vec<String> = BACKENDS
        .iter()
        .zip(AGENT_CLIENTS)
        .map(|(b, c)| format!("{} clients={c}", b.0))
        .collect();
    announce(
        5,
        &format!(
            "agent: `lbp agent` on each back end reports its load ({}, given with --load) to `lbp run --reports`; the pool's `{FORMULA}` sets the weights",
            loads.join(", ")
        ),
    );
    let want: [u32; 3] = std::array::from_fn(|i| formula(RELOAD_WEIGHTS[i], AGENT_CLIENTS[i]));
    for ((ns, (_, a4, ..)), clients) in cx.backends.iter().zip(BACKENDS).zip(AGENT_CLIENTS) {
        let mut cmd = ns.command(cx.exe);
        cmd.args(["agent", "--report-to", REPORTS_TO, "--secret-file"])
            .arg(cx.secret)
            .args(["--backend", a4, "--interval", "200ms", "--count", "300"])
            .args(["--port", "8080", "--load", &format!("clients={clients}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start lbp agent: {e}"))?;
        cx.agents.0.push(child);
    }
    let mark = cx.lbp.stderr_mark();
    let got = wait_backends(cx, "weighted by the reports", |r| {
        r.iter()
            .zip(want)
            .all(|(r, w)| r.weight == w && r.report.is_some())
    });
    let ended = cx.agents.ended();
    relay(cx, mark, &["lbp: weights:"]);
    let (g, rows, after) = got.map_err(|e| {
        if ended > 0 {
            format!("{e} ({ended} of the agents ended early)")
        } else {
            e
        }
    })?;
    say!(
        "  the weights follow the reports {:.2} s after the agents started (generation {g} on every core); `lbp backends` says:",
        after.as_secs_f64()
    );
    for ((b, r), clients) in BACKENDS.iter().zip(&rows).zip(AGENT_CLIENTS) {
        say!(
            "    {} {:<12} weight {:>3} = {} * 100 / (1 + {clients}), last report {} ms ago",
            b.0,
            b.1,
            r.weight,
            r.static_weight,
            r.report.as_ref().map_or(0, |x| x.0),
        );
    }
    let t = phase(cx, "agent: weights from the reports", cx.n)?;
    cx.agents.stop();
    let sp = split(&t, want);
    say!("  {}", answered(&t));
    say!("  split: {}", sp.detail);
    Ok((
        t.failed() == 0 && sp.ok,
        format!(
            "weights {} from the reports after {:.2} s; {}, split {}",
            ratio(want),
            after.as_secs_f64(),
            t.answered(),
            sp.short
        ),
    ))
}

/// Step 6: uDP to port 7 of the virtual IPs, answered by the switching core's echo
/// application, over IPv4 and IPv6.
fn echo(cx: &mut Ctx) -> Step {
    announce(
        6,
        &format!(
            "echo: UDP to port 7 of {VIP4} and [{VIP6}] is answered by the switching core (`=> app echo`), no server behind it"
        ),
    );
    let mut ok = true;
    let mut parts = Vec::new();
    for vip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
        let to = SocketAddr::new(vip, 7);
        let (n, rtt) = cx.client.within(move || udp_echo(to, ECHOES))??;
        ok &= n == ECHOES;
        say!(
            "  {to}: {n} of {ECHOES} datagrams echoed (median round trip {} µs)",
            rtt.as_micros()
        );
        parts.push(format!(
            "{} {n} of {ECHOES} echoed",
            if vip.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    Ok((ok, parts.join(", ")))
}

/// Step 7: the filter: a port that is no service is reset, the blocked source gets
/// nothing.
fn filter(cx: &mut Ctx) -> Step {
    announce(
        7,
        &format!(
            "filter: a connection to {VIP4}:25 (no service) is reset; one from the blocked {BLOCKED4} gets no answer"
        ),
    );
    let (port25, blocked) = cx.client.within(|| {
        let at = Instant::now();
        let port25 = match http_get(None, SocketAddr::new(VIP4.into(), 25)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(format!(
                "reset after {:.1} ms",
                at.elapsed().as_secs_f64() * 1000.0
            )),
            Err(e) => Err(format!("{e} (expected: reset)")),
            Ok(body) => Err(format!("answered {body:?} (expected: reset)")),
        };
        let blocked = match http_get(Some(BLOCKED4.into()), SocketAddr::new(VIP4.into(), 80)) {
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                Ok("no answer within 2 s".to_string())
            }
            Err(e) => Err(format!("{e} (expected: no answer)")),
            Ok(body) => Err(format!("answered by {body} (expected: no answer)")),
        };
        (port25, blocked)
    })?;
    let ok = port25.is_ok() && blocked.is_ok();
    let (a, b) = (port25.unwrap_or_else(|e| e), blocked.unwrap_or_else(|e| e));
    say!("  {VIP4}:25: {a}");
    say!("  from {BLOCKED4}: {b}");
    Ok((ok, format!("port 25: {a}; from {BLOCKED4}: {b}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reload step's policy differs from `demo.lbp` in the back ends'
    /// weights only, and checks clean; the formula the agent step computes is
    /// the pools'.
    #[test]
    fn the_reloaded_policy_and_the_formula_are_demo_lbps() {
        let r = reloaded();
        let changed: Vec<(&str, &str)> = POLICY
            .lines()
            .zip(r.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert_eq!(POLICY.lines().count(), r.lines().count());
        assert!(r.contains("backend 198.18.2.11 weight 3"), "{r}");
        assert!(r.contains("backend 2001:db8:2::13 weight 1"), "{r}");
        let a = lbp_lang::analyze(&r);
        assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
        assert_eq!(POLICY.matches(FORMULA).count(), 2, "{POLICY}");
        assert_eq!(formula(3, 2), 100);
        assert_eq!(formula(1, 0), 100);
        for (i, b) in BACKENDS.iter().enumerate() {
            assert!(
                POLICY.contains(&format!("backend {} weight {}", b.1, b.3))
                    && POLICY.contains(&format!("backend {} weight {}", b.2, b.3)),
                "back end {i}"
            );
        }
    }
}
