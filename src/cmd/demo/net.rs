//! The demo's network: namespaces, veth pairs, and the back ends' HTTP servers.

use super::*;

/// Run a command; its stderr as the error when it fails.
pub(super) fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A network namespace, deleted on drop.
pub(super) struct Netns {
    pub(super) name: String,
}

impl Netns {
    pub(super) fn new(name: &str) -> Result<Netns, String> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    pub(super) fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Write `value` to `/proc/sys/<key with / for .>` from inside the namespace.
    pub(super) fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let v = value.to_string();
        let p = path.clone();
        self.within(move || std::fs::write(p, v))?
            .map_err(|e| format!("{}: {path}: {e}", self.name))
    }

    pub(super) fn nft(&self, rules: &str) -> Result<(), String> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(())
    }

    /// Run `f` on a thread that entered the namespace, and return its result.
    pub(super) fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = self.path();
        std::thread::spawn(move || enter(&path).map(|()| f()))
            .join()
            .map_err(|_| format!("a thread in {} panicked", self.name))?
    }

    pub(super) fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Move the calling thread into the namespace at `path`.
pub(super) fn enter(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: `f` is an open namespace file for the call's duration; setns
    // changes only the calling thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// A veth pair from `a`'s `a_if` to `b`'s `b_if`, both up, transmit checksum
/// offload off on both (AF_XDP sees the bytes, not the offload request).
pub(super) fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), String> {
    run(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]))?;
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        run(ns.command("ethtool").args(["-K", ifname, "tx", "off"]))?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// The back ends' HTTP servers, one thread each; stopped and joined on drop.
pub(super) struct Servers {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A server on `[::]:8080` in each namespace, answering with the back end's
    /// name; returns once all listen.
    pub(super) fn start(&mut self, backends: &[&Netns]) -> Result<(), String> {
        for (ns, (name, ..)) in backends.iter().zip(BACKENDS) {
            let (path, stop) = (ns.path(), self.stop.clone());
            let (tx, rx) = mpsc::channel();
            self.threads.push(std::thread::spawn(move || {
                let bound = enter(&path).and_then(|()| {
                    let l = TcpListener::bind("[::]:8080").map_err(|e| e.to_string())?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Ok(l)
                });
                let l = match bound {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = answer(s, name);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| format!("back end {name}: the server did not start"))?
                .map_err(|e| format!("back end {name}: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Read one request head (bounded) and answer with the back end's name.
pub(super) fn answer(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}\n",
        name.len() + 1
    );
    s.write_all(reply.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)
}
