//! What the demo prints. Lines (`say!`) always; on a terminal, under them, a
//! live view redrawn in place a few times a second: per back end its weight
//! and its share of the weights (from lbp's control socket), the requests the
//! client sent it in the current phase and their share (the client's own
//! counts), its state and its connections in lbp's table; the packets per
//! second of each switching core; the active generation; the current step.
//! Piped, there is no live view and no escape code: the lines only.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::Value;

use super::traffic::Load;
use super::*;

struct Screen {
    /// The live view is on (a terminal).
    live: bool,
    /// The live view's lines, and how many of them are on the screen now.
    block: Vec<String>,
    drawn: usize,
    /// The terminal's width: longer lines are cut (a wrapped line would throw
    /// the redrawing off).
    width: usize,
}

static SCREEN: Mutex<Screen> = Mutex::new(Screen {
    live: false,
    block: Vec::new(),
    drawn: 0,
    width: 80,
});

/// The step the live view shows.
static STEP: Mutex<String> = Mutex::new(String::new());

fn screen() -> std::sync::MutexGuard<'static, Screen> {
    SCREEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether stdout is a terminal that takes cursor movement.
pub(super) fn terminal() -> bool {
    io::stdout().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb")
}

impl Screen {
    /// Take the live view off the screen (the cursor goes back to its top).
    fn erase(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, out: &mut impl Write) {
        if self.live {
            for l in &self.block {
                let cut: String = l.chars().take(self.width.saturating_sub(1)).collect();
                let _ = writeln!(out, "{cut}");
            }
            self.drawn = self.block.len();
        }
    }
}

/// Print one line (above the live view, if there is one).
pub(super) fn say(line: &str) {
    let mut s = screen();
    let mut out = io::stdout().lock();
    s.erase(&mut out);
    let _ = writeln!(out, "{line}");
    s.draw(&mut out);
    let _ = out.flush();
}

/// The step the live view names.
pub(super) fn step(name: &str) {
    *STEP.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
}

fn redraw(block: Vec<String>) {
    let mut s = screen();
    let mut out = io::stdout().lock();
    s.erase(&mut out);
    s.block = block;
    s.draw(&mut out);
    let _ = out.flush();
}

/// The live view's thread; on drop, stopped, joined and taken off the screen.
pub(super) struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Start it when stdout is a terminal (`None` otherwise).
    pub(super) fn start(control: PathBuf, load: Arc<Load>) -> Option<Live> {
        if !terminal() {
            return None;
        }
        let mut s = screen();
        s.live = true;
        if let Some(cols) = lbp_runtime::sys::terminal_width(&io::stdout())
            && cols >= 20
        {
            s.width = usize::from(cols);
        }
        drop(s);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last: Option<(Instant, Vec<(u64, u64)>)> = None;
            let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && !interrupted() && Instant::now() < end {
                let stats =
                    crate::cmd::ctl::request(&control, &serde_json::json!({"cmd": "stats"}))
                        .ok()
                        .filter(|a| a["ok"].as_bool() == Some(true))
                        .map(|a| a["data"].clone());
                redraw(block(stats.as_ref(), &load, &mut last));
                // A few times a second; the stop flag seen within 50 ms.
                for _ in 0..5 {
                    if s.load(Ordering::SeqCst) || interrupted() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Some(Live {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = screen();
        let mut out = io::stdout().lock();
        s.erase(&mut out);
        s.live = false;
        s.block.clear();
        let _ = out.flush();
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// The live view's lines from lbp's stats (`None`: it did not answer) and the
/// client's current phase; `last` is the previous sample of the cores'
/// received and sent packets, for the rates.
fn block(
    stats: Option<&Value>,
    load: &Load,
    last: &mut Option<(Instant, Vec<(u64, u64)>)>,
) -> Vec<String> {
    let step = STEP.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut v = Vec::new();
    let Some(d) = stats else {
        v.push(format!(
            "-- live: {step} -- lbp's control socket does not answer"
        ));
        return v;
    };
    let cores = d["cores"].as_array().cloned().unwrap_or_default();
    let gens: Vec<u64> = cores.iter().map(|c| num(c, "generation")).collect();
    let g = num(d, "generation");
    let all = if gens.iter().all(|&x| x == g) {
        "on every core".to_string()
    } else {
        format!("cores at {gens:?}")
    };
    let head = format!("-- live: {step} -- generation {g} {all} ");
    v.push(format!("{head:-<76}"));
    let phase = load.current();
    let counts = phase.as_ref().map(|p| p.1.counts).unwrap_or_default();
    let served: u64 = counts.iter().sum();
    v.push("  back end  weight  (share)   requests  (share)  state  health  conns in table".into());
    let web4 = d["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "web_v4"))
        .map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    let total_w: u64 = web4.iter().map(|b| num(b, "weight")).sum();
    for (i, (name, ..)) in BACKENDS.iter().enumerate() {
        let b = web4.get(i).cloned().unwrap_or(Value::Null);
        let w = num(&b, "weight");
        v.push(format!(
            "  {name:<8}  {w:>6}  {:>5.1} %  {:>9}  {:>5.1} %  {:<5}  {:<6}  {:>14}",
            100.0 * w as f64 / total_w.max(1) as f64,
            counts[i],
            100.0 * counts[i] as f64 / served.max(1) as f64,
            b["state"].as_str().unwrap_or("?"),
            if b["up"].as_bool().unwrap_or(true) {
                "up"
            } else {
                "down"
            },
            num(&b, "connections"),
        ));
    }
    match &phase {
        Some((name, t)) => v.push(format!(
            "  client, {name}: {} requests, {} answered, {} ({:.0}/s)",
            t.total(),
            t.served(),
            t.failures(),
            t.rate()
        )),
        None => v.push("  client: waiting".into()),
    }
    let now = Instant::now();
    let sample: Vec<(u64, u64)> = cores
        .iter()
        .map(|c| (num(c, "rx_packets"), num(c, "tx_packets")))
        .collect();
    let mut rates = Vec::new();
    for (i, &(rx, tx)) in sample.iter().enumerate() {
        let r = match last {
            Some((at, prev)) if prev.len() == sample.len() => {
                let dt = (now - *at).as_secs_f64().max(1e-3);
                let (prx, ptx) = prev[i];
                format!(
                    "core {i}: {:.0} packets/s in, {:.0} out",
                    rx.saturating_sub(prx) as f64 / dt,
                    tx.saturating_sub(ptx) as f64 / dt
                )
            }
            _ => format!("core {i}: -"),
        };
        rates.push(r);
    }
    *last = Some((now, sample));
    v.push(format!("  {}", rates.join("; ")));
    v
}
