//! The operator's commands to a running appliance, over its control socket
//! (`lbp run --control`; the protocol is described in `cmd::run::api`):
//! `reload`, `stats`, `conns`, `backends`, `set weight`, `drain`, `undrain`,
//! `maint`.
//!
//! Output: the appliance's answer for people on stdout (`--json`: its data),
//! errors (and a refused reload's diagnostics, rendered as `lbp check` renders
//! them) on stderr with exit status 1.

use std::io::{IsTerminal, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::{Color, fancy};

/// Where `lbp run` puts its control socket unless told otherwise.
pub const DEFAULT_CONTROL: &str = "/run/lbp/control.sock";

/// The control socket option every command shares.
#[derive(clap::Args, Debug)]
pub struct Socket {
    /// The appliance's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    control: PathBuf,
}

/// Arguments of `lbp reload`.
#[derive(clap::Args, Debug)]
pub struct ReloadArgs {
    /// The policy to run (default: the one the appliance runs, read again).
    policy: Option<PathBuf>,
    /// Print what changed as JSON.
    #[arg(long)]
    json: bool,
    /// Colours and Unicode in diagnostics: auto (on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
    #[command(flatten)]
    socket: Socket,
}

/// Arguments of `lbp stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Ask again every SECS seconds (in place on a terminal) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
    #[command(flatten)]
    socket: Socket,
}

/// Arguments of `lbp conns`.
#[derive(clap::Args, Debug)]
pub struct ConnsArgs {
    /// Only the connections of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only the connections to this back end (its address).
    #[arg(long)]
    backend: Option<String>,
    /// Show at most N connections (the total is always counted).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    limit: u64,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: Socket,
}

/// Arguments of `lbp backends`.
#[derive(clap::Args, Debug)]
pub struct BackendsArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: Socket,
}

/// Arguments of `lbp set`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    #[command(subcommand)]
    what: SetWhat,
}

#[derive(clap::Subcommand, Debug)]
enum SetWhat {
    /// Set a back end's weight in a service, over whatever reports and the
    /// policy say (`auto`: back to the computed weight).
    Weight {
        service: String,
        /// The back end: its address, or address:port.
        backend: String,
        /// 0 to 65535, or `auto`.
        weight: String,
        #[command(flatten)]
        socket: Socket,
    },
}

/// Arguments of `lbp drain`, `undrain`, `maint` and `ready`.
#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// The back end: its address, or address:port.
    backend: String,
    /// Only in this service (default: every service that has the back end).
    #[arg(long)]
    service: Option<String>,
    #[command(flatten)]
    socket: Socket,
}

/// Send one request; the appliance's answer (`ok` false: its error).
pub fn request(control: &Path, req: &Value) -> Result<Value, String> {
    let unreachable = |e: std::io::Error| {
        format!(
            "cannot reach the appliance at {}: {e} (is `lbp run` running? its --control?)",
            control.display()
        )
    };
    let mut s = UnixStream::connect(control).map_err(unreachable)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(unreachable)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    s.write_all(req.to_string().as_bytes())
        .map_err(unreachable)?;
    s.shutdown(Shutdown::Write).map_err(unreachable)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("no answer from the appliance: {e}"))?;
    serde_json::from_slice(&buf).map_err(|e| format!("a garbled answer from the appliance: {e}"))
}

/// Print an answer; exit 1 for an error.
fn show(answer: &Value, json_out: bool) -> ExitCode {
    if answer["ok"].as_bool() == Some(true) {
        if json_out {
            println!("{}", answer["data"]);
        } else {
            println!("{}", answer["text"].as_str().unwrap_or(""));
        }
        ExitCode::SUCCESS
    } else {
        let e = answer["error"]
            .as_str()
            .unwrap_or("lbp: the appliance refused\n");
        eprint!("{e}");
        if !e.ends_with('\n') {
            eprintln!();
        }
        ExitCode::FAILURE
    }
}

fn ask(control: &Path, req: Value, json_out: bool) -> Result<ExitCode, String> {
    match request(control, &req) {
        Ok(a) => Ok(show(&a, json_out)),
        Err(e) => {
            eprintln!("lbp: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `lbp reload`.
pub fn reload(a: ReloadArgs) -> Result<ExitCode, String> {
    let policy = match &a.policy {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    let req = json!({ "cmd": "reload", "policy": policy, "color": fancy(a.color) });
    ask(&a.socket.control, req, a.json)
}

/// `lbp stats`.
pub fn stats(a: StatsArgs) -> Result<ExitCode, String> {
    let Some(secs) = a.watch else {
        return ask(&a.socket.control, json!({ "cmd": "stats" }), a.json);
    };
    if !(secs.is_finite() && secs >= 0.1) {
        return Err(format!("--watch {secs}: at least 0.1 seconds"));
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let answer = match request(&a.socket.control, &json!({ "cmd": "stats" })) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("lbp: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        if answer["ok"].as_bool() != Some(true) {
            return Ok(show(&answer, a.json));
        }
        let mut out = std::io::stdout().lock();
        if tty && !a.json {
            // Home and clear: the view refreshes in place.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let body = if a.json {
            answer["data"].to_string()
        } else {
            answer["text"].as_str().unwrap_or("").to_string()
        };
        if writeln!(out, "{body}").is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        if !tty && !a.json {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

/// `lbp conns`.
pub fn conns(a: ConnsArgs) -> Result<ExitCode, String> {
    let req =
        json!({ "cmd": "conns", "service": a.service, "backend": a.backend, "limit": a.limit });
    ask(&a.socket.control, req, a.json)
}

/// `lbp backends`.
pub fn backends(a: BackendsArgs) -> Result<ExitCode, String> {
    ask(&a.socket.control, json!({ "cmd": "backends" }), a.json)
}

/// `lbp set weight`.
pub fn set(a: SetArgs) -> Result<ExitCode, String> {
    let SetWhat::Weight {
        service,
        backend,
        weight,
        socket,
    } = a.what;
    let w: Value = if weight == "auto" {
        Value::Null
    } else {
        match weight.parse::<u16>() {
            Ok(w) => json!(w),
            Err(_) => {
                return Err(format!(
                    "weight `{weight}`: expected a number from 0 to 65535, or `auto`"
                ));
            }
        }
    };
    let req = json!({ "cmd": "weight", "service": service, "backend": backend, "weight": w });
    ask(&socket.control, req, false)
}

/// `lbp drain`, `undrain` / `ready`, `maint`: `state` is drain, ready or maint.
pub fn state(a: StateArgs, state: &str) -> Result<ExitCode, String> {
    let req = json!({ "cmd": "state", "backend": a.backend, "service": a.service, "state": state });
    ask(&a.socket.control, req, false)
}
