//! `dns-responder`: the whole `lbp` command-line tool, whose switching cores
//! also run a DNS responder for one name (`=> app dns` in a policy). Every
//! `lbp` command works the same (`dns-responder check`, `test`, `run`, ...);
//! `app dns` is one more application they know.
//!
//! What it answers comes from the environment (read once, at start):
//!
//! - `DNS_NAME`: the name (default `www.example.test`);
//! - `DNS_A`, `DNS_AAAA`: its addresses, comma-separated (default
//!   `198.18.0.10` and `2001:db8::10`; empty for none);
//! - `DNS_TTL`: the records' TTL in seconds (default 60).

use std::process::ExitCode;

use lbp::app::Registry;
use lbp_dns_responder::{Config, Dns};

fn main() -> ExitCode {
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dns-responder: {e}");
            return ExitCode::from(2);
        }
    };
    // The built-in applications (echo, icmp) and ours, numbered after them.
    // Each switching core gets its own instance from the closure.
    let apps = Registry::builtin().with(move || Box::new(Dns::new(config.clone())));
    lbp::main_with(apps)
}

/// The configuration the environment gives.
fn config() -> Result<Config, String> {
    let var = |key: &str, default: &str| match std::env::var(key) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Ok(default.to_string()),
        Err(e) => Err(format!("{key}: {e}")),
    };
    fn list<T: std::str::FromStr>(key: &str, v: &str) -> Result<Vec<T>, String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("{key}: `{s}` is not an address"))
            })
            .collect()
    }
    let name = var("DNS_NAME", "www.example.test")?;
    let a = list("DNS_A", &var("DNS_A", "198.18.0.10")?)?;
    let aaaa = list("DNS_AAAA", &var("DNS_AAAA", "2001:db8::10")?)?;
    let ttl = var("DNS_TTL", "60")?;
    let ttl = ttl
        .parse()
        .map_err(|_| format!("DNS_TTL: `{ttl}` is not a number of seconds"))?;
    Config::new(&name, a, aaaa, ttl).map_err(|e| format!("DNS_NAME: {e}"))
}
