//! The responder end to end (needs root): the example's binary runs `run
//! dns.lbp` in a network namespace of its own, bound to one end of a veth pair,
//! and a client in another namespace asks it real DNS questions over UDP, IPv4
//! and IPv6, from a kernel socket, and checks each answer: the address for the
//! configured name, NXDOMAIN below it, REFUSED elsewhere, FORMERR for a
//! pointer loop, nothing for a datagram too short to be DNS. The appliance
//! namespace's kernel never answers: it holds no address on the interface,
//! and an nftables ingress chain drops its copy of the frames when the rings
//! are AF_PACKET ones; so every answer is the core's. Then the binary (a debug
//! build, whose core asserts its frame books every burst) must exit 0 on
//! SIGTERM.
//!
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 only, in namespaces the
//! test makes and removes. Without root, `ip`, `ethtool` or `nft` the test
//! prints SKIPPED and why; under CI (`LBP_CI`) that is a failure.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use lbp_lab::testing::{Daemon, Netns, missing, nft, skip, unavailable, veth};

const NAME: &str = "www.example.test";
const A: [u8; 4] = [198, 18, 0, 10];
const AAAA: &str = "2001:db8::10";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The example's binary running `run`, stopped on drop.
struct Responder(Daemon);

impl Responder {
    fn start(app: &Netns, rings: &str) -> Result<Responder, String> {
        let dir = Daemon::dir().map_err(|e| e.to_string())?;
        let mut cmd = app.command(env!("CARGO_BIN_EXE_dns-responder"));
        cmd.arg("run")
            .arg(root().join("dns.lbp"))
            .args([
                "--iface",
                "client=client",
                "--rings",
                rings,
                "--stats-interval",
                "0",
            ])
            .args(["--tap", "lbpdns0"])
            .arg("--control")
            .arg(dir.join("control.sock"))
            .env("DNS_NAME", NAME)
            .env("DNS_A", "198.18.0.10")
            .env("DNS_AAAA", AAAA)
            .env("DNS_TTL", "30");
        Daemon::start(
            "dns-responder",
            cmd,
            dir,
            "lbp: ready",
            Duration::from_secs(30),
        )
        .map(Responder)
    }

    fn alive(&mut self) -> bool {
        self.0.alive()
    }

    fn stderr_text(&self) -> String {
        self.0.stderr_text()
    }

    /// SIGTERM, then wait (bounded); SIGKILL if it does not end.
    fn stop(&mut self) -> Option<ExitStatus> {
        self.0.stop()
    }
}

/// A DNS query for `name` of type `qtype` with ID `id`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Send `q` to `to` from a socket in the client namespace; the answer, or
/// `None` when none came (three tries, a second each: the first may wait for
/// the client's neighbour resolution).
fn ask(client: &Netns, to: SocketAddr, q: Vec<u8>, tries: u32) -> Result<Option<Vec<u8>>, String> {
    client.within(move || {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        for _ in 0..tries {
            s.send_to(&q, to)
                .map_err(|e| format!("send to {to}: {e}"))?;
            match s.recv_from(&mut buf) {
                Ok((n, from)) if from == to => return Ok(Some(buf[..n].to_vec())),
                Ok((_, from)) => return Err(format!("an answer from {from}, not {to}")),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("{to}: {e}")),
            }
        }
        Ok(None)
    })
}

/// The checks of one run; failures are collected so that one run reports
/// every one.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, what: &str, r: Result<(), String>) {
        match r {
            Ok(()) => eprintln!("dns e2e: ok: {what}"),
            Err(e) => self.0.push(format!("{what}: {e}")),
        }
    }
}

/// The answer to `q` at `to` has rcode `rcode` and, when given, ends with the
/// record data `data` (one answer).
fn answered(
    client: &Netns,
    to: SocketAddr,
    q: Vec<u8>,
    rcode: u8,
    data: Option<Vec<u8>>,
) -> Result<(), String> {
    let id = [q[0], q[1]];
    let a = ask(client, to, q, 3)?.ok_or("no answer")?;
    if a.len() < 12 || a[0..2] != id || a[2] & 0x80 == 0 {
        return Err(format!("not an answer to the query: {a:?}"));
    }
    if a[3] & 0x0f != rcode {
        return Err(format!("rcode {}, expected {rcode}", a[3] & 0x0f));
    }
    if let Some(d) = data
        && (a[6..8] != [0, 1] || !a.ends_with(&d))
    {
        return Err(format!("expected one record ending {d:?}: {a:?}"));
    }
    Ok(())
}

/// One appliance at a time: two busy-polling switching cores on a small
/// machine starve each other's clients.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn suite(rings: &str) {
    let test = format!("dns_responder_answers_{rings}");
    if let Some(why) = unavailable() {
        return skip(&test, &why);
    }
    let missing = missing(&["ethtool", "nft"]);
    if !missing.is_empty() {
        return skip(&test, &format!("missing {}", missing.join(", ")));
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let client = Netns::new(&format!("dns{}c", &rings[..1]));
    let app = Netns::new(&format!("dns{}a", &rings[..1]));
    veth(&app, "client", &client, "eth0");
    client.add_address("eth0", "198.18.0.2/24").unwrap();
    client.add_address("eth0", "2001:db8::2/64").unwrap();
    // The appliance namespace's kernel keeps off the wire (see the module
    // documentation).
    app.sysctl("net.ipv6.conf.client.disable_ipv6=1");
    app.sysctl("net.ipv4.conf.client.arp_ignore=8");
    nft(
        &app,
        "table netdev lbpdns {\n chain in_client { type filter hook ingress device client priority 0; policy drop; }\n}\n",
    );
    let mut lbp = Responder::start(&app, rings).unwrap_or_else(|e| panic!("{test}: {e}"));
    let v4 = SocketAddr::new(IpAddr::from([198, 18, 0, 1]), 53);
    let v6 = SocketAddr::new("2001:db8::1".parse().unwrap(), 53);
    let aaaa = AAAA
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    let mut r = Report::default();
    for (fam, to) in [("IPv4", v4), ("IPv6", v6)] {
        r.check(
            &format!("{fam}: A of {NAME}"),
            answered(&client, to, query(1, NAME, 1), 0, Some(A.to_vec())),
        );
        r.check(
            &format!("{fam}: AAAA of {NAME}"),
            answered(&client, to, query(2, NAME, 28), 0, Some(aaaa.clone())),
        );
        r.check(
            &format!("{fam}: a name below it is NXDOMAIN"),
            answered(&client, to, query(3, "x.www.example.test", 1), 3, None),
        );
        r.check(
            &format!("{fam}: another name is REFUSED"),
            answered(&client, to, query(4, "example.org", 1), 5, None),
        );
        let mut looped = vec![0, 5, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[1, b'a', 0xc0, 16, 0xc0, 12, 0, 1, 0, 1]);
        r.check(
            &format!("{fam}: a compression pointer loop is FORMERR"),
            answered(&client, to, looped, 1, None),
        );
        r.check(
            &format!("{fam}: a datagram too short for DNS is not answered"),
            match ask(&client, to, vec![0, 6, 1], 1) {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    r.check(
        "still running after the hostile queries",
        if lbp.alive() {
            Ok(())
        } else {
            Err("it exited".into())
        },
    );
    r.check(
        "exits 0 on SIGTERM (the core's frame books balanced every burst)",
        match lbp.stop() {
            Some(st) if st.success() => Ok(()),
            other => Err(format!("exit status {other:?}")),
        },
    );
    let stderr = lbp.stderr_text();
    drop(lbp);
    assert!(
        r.0.is_empty(),
        "{test}:\n{}\nstderr:\n{stderr}",
        r.0.join("\n")
    );
}

#[test]
fn dns_responder_answers_xdp() {
    suite("xdp");
}

#[test]
fn dns_responder_answers_uring() {
    suite("uring");
}
