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
