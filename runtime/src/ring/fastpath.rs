//! The XDP fast path's programs on an interface: a program compiled from the
//! policy (the compiler's eBPF back end) that runs where the plain redirect
//! program ran, decides what it can in the kernel, and redirects the rest to
//! the switching cores' AF_XDP sockets through the interface's XSK map.
//!
//! A [`FastPath`] is one generation's program and its maps. The maps are
//! created once and shared by every interface's copy of the program; only the
//! XSK map (a [`MapKind::Xsk`] in the program's map list) is each interface's
//! own, so [`FastPath::load_for`] loads one copy per interface with that
//! interface's map in place. `XdpRedirect::install` then swaps it in
//! atomically (a bpf link update): every frame runs the old program or the new
//! one, which is what makes a reload hitless on this path too.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use lbp_abi::Action;
use lbp_abi::bpf::fast::{self, Counter};

use super::bpf::{
    LoadedMap, MapKind, MapSpec, Program, XskMap, load_xdp, map_lookup_bytes, map_update_bytes,
};

/// One generation's fast-path program and its maps. See the module
/// documentation.
#[derive(Debug)]
pub struct FastPath {
    name: String,
    prog: Program,
    /// In the program's map order; `None` where the interface's XSK map goes.
    maps: Vec<Option<LoadedMap>>,
}

impl FastPath {
    /// Create and fill the maps `specs` describes (the XSK map excepted) for
    /// `prog`; nothing is loaded yet.
    pub fn new(name: &str, prog: Program, specs: &[MapSpec]) -> io::Result<FastPath> {
        let maps = specs
            .iter()
            .map(|s| match s.kind {
                MapKind::Xsk => Ok(None),
                _ => LoadedMap::create(s).map(Some),
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FastPath {
            name: name.to_string(),
            prog,
            maps,
        })
    }

    /// The program loaded with `xsk` as its XSK map: one interface's copy.
    pub fn load_for(&self, xsk: &XskMap) -> io::Result<OwnedFd> {
        let fds: Vec<i32> = self
            .maps
            .iter()
            .map(|m| {
                m.as_ref()
                    .map_or(xsk.fd().as_raw_fd(), |m| m.fd.as_raw_fd())
            })
            .collect();
        let insns = self
            .prog
            .resolve(&fds)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        load_xdp(&self.name, &insns)
    }

    /// The map called `name` (a spec's name), if the program has one.
    pub fn map(&self, name: &str) -> Option<&LoadedMap> {
        self.maps.iter().flatten().find(|m| m.name == name)
    }

    /// Tell the program which policy interface each OS interface is
    /// (`ifindex`, policy index): a frame of an interface not named goes to
    /// the switching cores.
    pub fn set_interfaces(&self, ifaces: &[(u32, u32)]) -> io::Result<()> {
        let Some(m) = self.map(fast::IFACES) else {
            return Ok(());
        };
        for &(ifindex, i) in ifaces {
            map_update_bytes(m, &ifindex.to_ne_bytes(), &i.to_ne_bytes())?;
        }
        Ok(())
    }

    /// Tell the program the addresses of NAT back ends, whose traffic the
    /// switching cores' connection table handles.
    pub fn set_nat_backends(&self, addrs: &[IpAddr]) -> io::Result<()> {
        let Some(m) = self.map(fast::NAT_BACKENDS) else {
            return Ok(());
        };
        for a in addrs {
            let key = match a {
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                IpAddr::V6(v) => v.octets(),
            };
            map_update_bytes(m, &key, &[1])?;
        }
        Ok(())
    }

    /// The program's counters, summed over the CPUs: one per slot of
    /// `lbp_abi::bpf::fast` (empty when it has no counters map), with
    /// `TO_CORES` derived: the frames seen less those decided in XDP.
    pub fn counters(&self) -> io::Result<Vec<Counter>> {
        let Some(m) = self.map(fast::COUNTERS) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for slot in 0u32.. {
            let Some(v) = map_lookup_bytes(m, &slot.to_ne_bytes())? else {
                break;
            };
            let mut c = Counter::default();
            for cpu in v.chunks_exact(16) {
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&cpu[at..at + 8]);
                    u64::from_ne_bytes(b)
                };
                c.packets += word(0);
                c.bytes += word(8);
            }
            out.push(c);
        }
        let at = |out: &[Counter], s: u32| out.get(s as usize).copied().unwrap_or_default();
        let seen = at(&out, fast::SEEN);
        let decided = [Action::Drop, Action::Reset].map(|x| at(&out, fast::ACTIONS + x as u32));
        if let Some(c) = out.get_mut(fast::TO_CORES as usize) {
            c.packets = decided
                .iter()
                .fold(seen.packets, |n, d| n.saturating_sub(d.packets));
            c.bytes = decided
                .iter()
                .fold(seen.bytes, |n, d| n.saturating_sub(d.bytes));
        }
        Ok(out)
    }
}
