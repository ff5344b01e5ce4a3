//! The demo's network: namespaces and veth pairs, made by the lab crate
//! (`lbp-lab`) over netlink, with no external command.

use super::*;

/// A network namespace of the demo's, deleted on drop: a lab namespace (its
/// links, addresses and routes through `Deref`), plus what the demo adds.
pub(super) struct Netns(lbp_lab::Netns);

impl std::ops::Deref for Netns {
    type Target = lbp_lab::Netns;

    fn deref(&self) -> &lbp_lab::Netns {
        &self.0
    }
}

impl Netns {
    pub(super) fn new(name: &str) -> Result<Netns, String> {
        Ok(Netns(lbp_lab::Netns::new(name)?))
    }

    /// Load nftables `rules` in the namespace (through the `nft` program, which
    /// the demo does without when it is missing).
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

    /// `/run/netns/NAME`, for a thread to [`enter`].
    pub(super) fn path(&self) -> String {
        self.0.path().display().to_string()
    }
}

/// Move the calling thread into the namespace at `path`.
pub(super) fn enter(path: &str) -> Result<(), String> {
    Ok(lbp_lab::enter(path)?)
}

/// A veth pair from `a`'s `a_if` to `b`'s `b_if`, both up, transmit checksum
/// offload off on both (AF_XDP sees the bytes, not the offload request).
pub(super) fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), String> {
    lbp_lab::veth(a, a_if, b, b_if)?;
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.tx_checksum_off(ifname)?;
        ns.link_up(ifname)?;
    }
    Ok(())
}
