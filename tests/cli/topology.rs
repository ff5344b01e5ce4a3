//! The end-to-end suite's network: namespaces, veth pairs, a bridge, back-end
//! servers, and the client-side probes (HTTP, connect, ping, raw frames). It is
//! test support, not a test: `e2e.rs` runs the checks.
//!
//! ```text
//!  client ns                appliance ns                 switch ns            back ends
//!  eth0 ─────────────── client      servers ──────── p-app ─┐
//!  198.18.0.2/24        (lbp binds both; the                br0 ─ p-b1 ─── b1 eth0 198.18.2.11
//!  198.18.0.66/24        kernel holds no address            ├──── p-b2 ─── b2 eth0 198.18.2.12
//!  2001:db8::2/64        there: they are on lbp's TAP)      └──── p-b3 ─── b3 eth0 198.18.2.13
//! ```
//!
//! The back ends sit behind a Linux bridge in a namespace of their own, so that
//! only the appliance's two interfaces live in the appliance's namespace (a bridge
//! there would let the kernel's netfilter see, and rewrite, the bridged traffic).
//! Every back end runs, in threads of the test process, an HTTP server on
//! `[::]:8080` and `[::]:80` (the second also catches the DSR virtual IPs on its
//! loopback) and a UDP echo on `[::]:5353`; each answers with the back end's name.
//!
//! Two forwarders can fill the appliance namespace: the kernel (addresses on the
//! interfaces, IP forwarding, nftables DNAT for one virtual IP), which checks the
//! topology and the probes themselves, and `lbp run`, which the suite tests.
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 only. Everything made here is
//! removed on drop (servers stopped and joined, namespaces deleted), also when a
//! test fails. What it is not: a benchmark topology (`benches/dataplane.sh`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use lbp_abi::bpf::{Asm, xdp};
use lbp_lab::testing::Daemon;
use lbp_lab::testing::frame::mac_str;
use lbp_lab::testing::probe::Servers;
pub use lbp_lab::testing::probe::{FrameSender, curl, http_get, ping, ttl_exceeded, udp_ask};
pub use lbp_lab::testing::{Netns, nft, unavailable, veth};
use lbp_runtime::ring::bpf::{Attachment, Loaded};

/// The appliance's interface MACs and the client's (fixed, so raw frames can be
/// addressed without asking anyone).
pub const APP_CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0xe0, 0x00, 0x01];
pub const APP_SERVERS_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0xe0, 0x02, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0xe0, 0x00, 0x02];

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const BLOCKED4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const APP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const APP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const NAT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const NAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
pub const DSR4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
pub const DSR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// The back ends: name, IPv4 and IPv6 address (weights 1, 2, 3 in the policy).
pub const BACKENDS: [(&str, Ipv4Addr, Ipv6Addr); 3] = [
    (
        "b1",
        Ipv4Addr::new(198, 18, 2, 11),
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11),
    ),
    (
        "b2",
        Ipv4Addr::new(198, 18, 2, 12),
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x12),
    ),
    (
        "b3",
        Ipv4Addr::new(198, 18, 2, 13),
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x13),
    ),
];

/// The tools the suite runs that are not on `PATH` (CI installs them).
pub fn missing_tools() -> Vec<&'static str> {
    lbp_lab::testing::missing(&["curl", "ethtool", "nft"])
}

/// Who forwards in the appliance namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarder {
    /// The kernel: addresses on the interfaces, forwarding on, nftables DNAT of
    /// the NAT virtual IP's port 81 by `numgen inc` (weights 1, 2, 3).
    Kernel,
    /// `lbp run`, started by the test: the kernel of the appliance namespace
    /// holds no address on the interfaces and takes no frame from them.
    Lbp,
}

/// The whole network. Servers are stopped before the namespaces go.
#[derive(Debug)]
pub struct Topology {
    /// On the appliance's peers (the client's eth0, the switch's p-app).
    _xdp: Vec<PassAll>,
    _servers: Servers,
    pub client: Netns,
    pub app: Netns,
    _switch: Netns,
    pub backends: Vec<Netns>,
}

/// An XDP program that passes every frame, attached to an interface (the
/// link and the program live as long as this).
#[derive(Debug)]
struct PassAll {
    _link: Attachment,
    _prog: Loaded,
}

/// [`PassAll`] on `ifname` in `ns`: a veth takes the frames its peer's XDP
/// program sends (XDP_TX or a redirect: `lbp run --xdp-tx on`) only when it
/// runs an XDP program itself.
fn pass_all(ns: &Netns, ifname: &str) -> PassAll {
    ns.within(|| {
        let mut a = Asm::new();
        a.ret(xdp::PASS);
        let prog = Loaded::xdp("lbp_e2e_pass", &a.finish().expect("assembles"), &[])
            .expect("an XDP_PASS program loads");
        let ix = lbp_runtime::ring::bpf::ifindex(ifname).expect("the veth");
        let link = Attachment::attach_fd(ix, prog.prog.as_fd()).expect("attached");
        PassAll {
            _link: link,
            _prog: prog,
        }
    })
}

impl Topology {
    /// Build it (about a second of `ip` commands).
    pub fn build(tag: &str, fwd: Forwarder) -> Topology {
        let client = Netns::new(&format!("{tag}c"));
        let app = Netns::new(&format!("{tag}a"));
        let switch = Netns::new(&format!("{tag}s"));
        let backends: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("{tag}b{i}"))).collect();

        // Client side.
        veth(&app, "client", &client, "eth0");
        app.ip(&["link", "set", "client", "address", &mac_str(APP_CLIENT_MAC)]);
        client.ip(&["link", "set", "eth0", "address", &mac_str(CLIENT_MAC)]);
        for cidr in ["198.18.0.2/24", "198.18.0.66/24", "2001:db8::2/64"] {
            client.add_address("eth0", cidr).unwrap();
        }
        client.add_default_route("198.18.0.1").unwrap();
        client.add_default_route("2001:db8::1").unwrap();
        let client_xdp = pass_all(&client, "eth0");

        // Server side: the appliance and the back ends on one bridge.
        switch.add_bridge("br0").unwrap();
        switch.link_up("br0").unwrap();
        veth(&app, "servers", &switch, "p-app");
        app.ip(&[
            "link",
            "set",
            "servers",
            "address",
            &mac_str(APP_SERVERS_MAC),
        ]);
        switch.set_master("p-app", "br0").unwrap();
        let switch_xdp = pass_all(&switch, "p-app");
        for (i, (ns, (_, a4, a6))) in backends.iter().zip(BACKENDS).enumerate() {
            let port = format!("p-b{}", i + 1);
            veth(ns, "eth0", &switch, &port);
            switch.set_master(&port, "br0").unwrap();
            ns.add_address("eth0", &format!("{a4}/24")).unwrap();
            ns.add_address("eth0", &format!("{a6}/64")).unwrap();
            ns.add_default_route("198.18.2.1").unwrap();
            ns.add_default_route("2001:db8:2::1").unwrap();
            // DSR: the virtual IPs on the loopback, never announced by ARP.
            ns.add_address("lo", &format!("{DSR4}/32")).unwrap();
            ns.add_address("lo", &format!("{DSR6}/128")).unwrap();
            for key in ["all", "eth0"] {
                ns.sysctl(&format!("net.ipv4.conf.{key}.arp_ignore=1"));
                ns.sysctl(&format!("net.ipv4.conf.{key}.arp_announce=2"));
            }
        }

        match fwd {
            Forwarder::Kernel => kernel_forwarder(&app),
            Forwarder::Lbp => {
                // The kernel of the appliance namespace must leave these
                // interfaces' frames to lbp. With AF_XDP it never sees them; with
                // AF_PACKET it gets them too, so an nftables ingress chain drops
                // them after the packet sockets have had their copy (taps come
                // before ingress hooks), and IPv6 is off there.
                let mut rules = String::from("table netdev lbpe {\n");
                for ifname in ["client", "servers"] {
                    app.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6=1"));
                    app.sysctl(&format!("net.ipv4.conf.{ifname}.arp_ignore=8"));
                    rules.push_str(&format!(
                        "chain in_{ifname} {{ type filter hook ingress device {ifname} priority 0; policy drop; }}\n"
                    ));
                }
                rules.push_str("}\n");
                nft(&app, &rules);
            }
        }

        let named: Vec<(&lbp_lab::Netns, &str)> = backends
            .iter()
            .zip(BACKENDS)
            .map(|(ns, (name, _, _))| (&**ns, name))
            .collect();
        let servers = Servers::start(&named);
        Topology {
            _xdp: vec![client_xdp, switch_xdp],
            _servers: servers,
            client,
            app,
            _switch: switch,
            backends,
        }
    }
}

impl Topology {
    /// Addresses, routes and neighbours of every namespace (for failure messages).
    pub fn dump(&self) -> String {
        let mut text = String::new();
        let all = [&self.client, &self.app, &self._switch]
            .into_iter()
            .chain(self.backends.iter());
        for ns in all {
            for args in [
                &["-br", "addr"][..],
                &["route"],
                &["-6", "route"],
                &["neigh"],
                &["-6", "neigh"],
            ] {
                let mut v = vec!["-n", ns.name()];
                v.extend_from_slice(args);
                if let Ok(o) = Command::new("ip").args(&v).output() {
                    text.push_str(&format!(
                        "[{} ip {}]\n{}",
                        ns.name(),
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout)
                    ));
                }
            }
        }
        text
    }
}

/// The kernel as the forwarder (for the topology's self-check).
fn kernel_forwarder(app: &Netns) {
    for (ifname, cidr) in [
        ("client", "198.18.0.1/24".to_string()),
        ("client", format!("{NAT4}/32")),
        ("client", "2001:db8::1/64".to_string()),
        ("servers", "198.18.2.1/24".to_string()),
        ("servers", "2001:db8:2::1/64".to_string()),
    ] {
        app.add_address(ifname, &cidr).unwrap();
    }
    app.sysctl("net.ipv4.ip_forward=1");
    app.sysctl("net.ipv6.conf.all.forwarding=1");
    let rules = format!(
        "table ip lbpe {{\n\
         chain pre {{ type nat hook prerouting priority dstnat;\n\
         ip daddr {NAT4} tcp dport 81 dnat to numgen inc mod 6 map {{ 0 : 198.18.2.11, 1-2 : 198.18.2.12, 3-5 : 198.18.2.13 }}:8080\n\
         }}\n\
         chain forward_chain {{ type filter hook forward priority filter; ip saddr {BLOCKED4} drop; }}\n\
         chain input_chain {{ type filter hook input priority filter; ip saddr {BLOCKED4} drop; }}\n\
         }}\n"
    );
    nft(app, &rules);
}

/// `n` sequential connections to `to`, one GET each, within `budget`: how many
/// each back end served, and the failures.
pub fn spread(to: SocketAddr, n: usize, budget: Duration) -> ([usize; 3], Vec<String>) {
    let end = Instant::now() + budget;
    let mut counts = [0usize; 3];
    let mut errors = Vec::new();
    for _ in 0..n {
        if Instant::now() >= end {
            errors.push("time budget spent".into());
            break;
        }
        match http_get(to, Duration::from_secs(2)) {
            Ok(body) => match BACKENDS
                .iter()
                .position(|b| body.split(' ').next() == Some(b.0))
            {
                Some(i) => counts[i] += 1,
                None => errors.push(format!("unknown body {body:?}")),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    (counts, errors)
}

/// `lbp run` in the appliance namespace, stopped (SIGTERM, then SIGKILL) by its
/// PID on drop.
#[derive(Debug)]
pub struct Lbp {
    daemon: Daemon,
    pub ready_line: String,
    /// Its control socket (in the daemon's directory).
    pub control: std::path::PathBuf,
}

impl Lbp {
    /// Start `lbp run POLICY ARGS...` and wait (bounded) for its `lbp: ready`
    /// line.
    pub fn start(app: &Netns, policy: &str, args: &[&str]) -> Result<Lbp, String> {
        let dir = Daemon::dir().map_err(|e| e.to_string())?;
        let control = dir.join("control.sock");
        let mut cmd = app.command(env!("CARGO_BIN_EXE_lbp"));
        cmd.arg("run")
            .arg(crate::root().join(policy))
            .arg("--control")
            .arg(&control)
            .args(args);
        let daemon = Daemon::start("lbp", cmd, dir, "lbp: ready", Duration::from_secs(30))?;
        Ok(Lbp {
            ready_line: daemon.ready_line.clone(),
            daemon,
            control,
        })
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.daemon.alive()
    }

    /// What lbp wrote on stderr so far (the last 4 000 bytes).
    pub fn stderr_text(&self) -> String {
        self.daemon.stderr_text()
    }

    /// SIGTERM, then wait (bounded); SIGKILL if it does not end. The exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.daemon.stop()
    }

    /// `lbp stats --json` through its control socket.
    pub fn stats(&self) -> Result<serde_json::Value, String> {
        self.read("stats", &[])
    }

    /// `lbp conns --json` through its control socket, every connection.
    pub fn conns(&self) -> Result<serde_json::Value, String> {
        self.read("conns", &["--limit", "1000000"])
    }

    /// `lbp COMMAND --json ARGS` through its control socket.
    fn read(&self, command: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let o = Command::new(env!("CARGO_BIN_EXE_lbp"))
            .args([command, "--json"])
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .map_err(|e| format!("lbp {command}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "lbp {command}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("lbp {command} --json: {e}"))
    }

    /// [`Lbp::stop`], and whether it exited 0.
    pub fn stop_cleanly(&mut self) -> Result<(), String> {
        match self.stop() {
            Some(st) if st.success() => Ok(()),
            other => Err(format!("exit status {other:?}")),
        }
    }
}
