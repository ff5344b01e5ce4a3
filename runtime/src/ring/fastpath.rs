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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lbp_abi::Action;
use lbp_abi::bpf::fast::{self, Counter, ServingKey};

use super::bpf::{
    LoadedMap, MapKind, MapSpec, Program, XskMap, array_update_batch, load_xdp, map_delete_bytes,
    map_lookup_bytes, map_update_bytes,
};
use super::fastbal::{Sizes, Tables};

/// One generation's fast-path program and its maps. See the module
/// documentation.
#[derive(Debug)]
pub struct FastPath {
    name: String,
    prog: Program,
    /// In the program's map order; `None` where a map of the runtime's own
    /// goes (the interface's XSK map, the flows shared by the generations).
    maps: Vec<Option<LoadedMap>>,
    /// Each map's kind, in the program's order.
    kinds: Vec<MapKind>,
    /// The balancing tables' room per buffer.
    sizes: Sizes,
    /// The buffer the program reads (none before the first publication).
    buffer: Option<u32>,
    /// The serving keys written to each buffer (to remove them on its next
    /// fill).
    serving: [Vec<ServingKey>; 2],
}

/// A flows map for [`FastPath::load_for`]: the back end of each flow balanced
/// in XDP, kept across generations (a reload moves no established flow);
/// its hash's key random (`getrandom`), so that which flows share a bucket
/// is not known in advance.
pub fn flows_map() -> io::Result<LoadedMap> {
    let map = LoadedMap::create(&MapSpec {
        name: fast::FLOWS.into(),
        kind: MapKind::Array,
        key_size: 4,
        value_size: size_of::<fast::FlowBucket>() as u32,
        max_entries: fast::FLOW_BUCKETS + 1,
        entries: Vec::new(),
    })?;
    let mut seed = [0u8; 8];
    // SAFETY: the buffer is ours and 8 bytes long.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let mut entry = vec![0u8; size_of::<fast::FlowBucket>()];
    entry[..8].copy_from_slice(&seed);
    map_update_bytes(&map, &fast::FLOW_BUCKETS.to_ne_bytes(), &entry)?;
    Ok(map)
}

/// A publication's stamp: never 0, never the same twice in the process (a
/// flow recorded under one program keeps its stamp into the next one's
/// tables, where it must not match).
fn next_stamp() -> u32 {
    static STAMP: AtomicU32 = AtomicU32::new(0);
    loop {
        let s = STAMP.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if s != 0 {
            return s;
        }
    }
}

/// Wait until every XDP program run that began before now has ended: an RCU
/// grace period (XDP programs run inside an RCU read-side section), which
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for. Where the kernel refuses it
/// (nohz_full), a sleep far longer than a program run.
fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl FastPath {
    /// Create and fill the maps `specs` describes (the XSK and flows maps
    /// excepted) for `prog`, the balancing maps with room for two buffers of
    /// `sizes`; nothing is loaded yet.
    pub fn new(name: &str, prog: Program, specs: &[MapSpec], sizes: Sizes) -> io::Result<FastPath> {
        let twice = |n: u32| n.saturating_mul(2).max(1);
        let maps = specs
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.max_entries = match s.name.as_str() {
                    _ if s.kind == MapKind::Xsk => return Ok(None),
                    fast::FLOWS => return Ok(None),
                    fast::BAL_SERVICES => twice(sizes.services),
                    fast::BAL_MAGLEV => twice(sizes.maglev),
                    fast::BAL_BACKENDS | fast::BAL_SERVING => twice(sizes.backends),
                    fast::COUNTERS => s
                        .max_entries
                        .max(sizes.counters.saturating_add(2 * sizes.backends)),
                    _ => s.max_entries,
                };
                LoadedMap::create(&s).map(Some)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FastPath {
            name: name.to_string(),
            prog,
            maps,
            kinds: specs.iter().map(|s| s.kind).collect(),
            sizes,
            buffer: None,
            serving: [Vec::new(), Vec::new()],
        })
    }

    /// The program loaded with `xsk` as its XSK map and `flows` as its
    /// flows map ([`flows_map`]): one interface's copy.
    pub fn load_for(&self, xsk: &XskMap, flows: &LoadedMap) -> io::Result<OwnedFd> {
        let fds: Vec<i32> = self
            .maps
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Some(m) => m.fd.as_raw_fd(),
                None if self.is_xsk(i) => xsk.fd().as_raw_fd(),
                None => flows.fd.as_raw_fd(),
            })
            .collect();
        let insns = self
            .prog
            .resolve(&fds)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        load_xdp(&self.name, &insns)
    }

    /// Whether map `i` of the program is the XSK map (else, when it is not
    /// the program's own, the flows map).
    fn is_xsk(&self, i: usize) -> bool {
        self.kinds.get(i) == Some(&MapKind::Xsk)
    }

    /// Publish the balancing tables `t`: written to the buffer the program
    /// does not read (once every run that might still read it from before
    /// the last flip has ended), then that buffer made the active one. A
    /// run reads one buffer throughout. (The caller skips unchanged tables:
    /// `lbp run`'s control loop compares the generation and next hops.)
    pub fn publish_balance(&mut self, t: &Tables) -> io::Result<()> {
        let maps = &self.maps;
        let map = |n: &str| maps.iter().flatten().find(|m| m.name == n);
        let (Some(active), Some(services), Some(maglev), Some(backends), Some(serving)) = (
            map(fast::BAL_ACTIVE),
            map(fast::BAL_SERVICES),
            map(fast::BAL_MAGLEV),
            map(fast::BAL_BACKENDS),
            map(fast::BAL_SERVING),
        ) else {
            return Ok(());
        };
        let z = self.sizes;
        if t.services.len() > z.services as usize
            || t.maglev.len() > z.maglev as usize
            || t.backends.len() > z.backends as usize
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the balancing tables outgrow the room of the compiled policy",
            ));
        }
        let next = self.buffer.map_or(0, |b| 1 - b);
        let stamp = next_stamp();
        if self.buffer.is_some() {
            grace_period();
        }
        let mut svc_bytes = Vec::with_capacity(t.services.len() * size_of::<fast::BalService>());
        for s in &t.services {
            let mut s = *s;
            s.maglev_base += next * z.maglev;
            s.backend_base += next * z.backends;
            s.stamp = stamp;
            service_bytes(&s, &mut svc_bytes);
        }
        array_update_batch(services, next * z.services, &svc_bytes)?;
        let mg: Vec<u8> = t.maglev.iter().flat_map(|e| e.to_ne_bytes()).collect();
        array_update_batch(maglev, next * z.maglev, &mg)?;
        let mut be = Vec::with_capacity(t.backends.len() * size_of::<fast::BalBackend>());
        for b in &t.backends {
            backend_bytes(b, &mut be);
        }
        array_update_batch(backends, next * z.backends, &be)?;
        // The keys in the buffer are tracked as they go and come, so that a
        // failure half way leaves none unknown (the next fill removes them).
        let keys = &mut self.serving[next as usize];
        while let Some(k) = keys.last() {
            map_delete_bytes(serving, &serving_bytes(k))?;
            keys.pop();
        }
        for &(service, addr, b) in &t.serving {
            let k = ServingKey {
                buffer: next,
                service,
                addr,
            };
            keys.push(k);
            map_update_bytes(serving, &serving_bytes(&k), &b.to_ne_bytes())?;
        }
        map_update_bytes(active, &0u32.to_ne_bytes(), &next.to_ne_bytes())?;
        self.buffer = Some(next);
        Ok(())
    }

    /// The map called `name` (a spec's name), if the program has one.
    pub fn map(&self, name: &str) -> Option<&LoadedMap> {
        self.maps.iter().flatten().find(|m| m.name == name)
    }

    /// Tell the program which policy interface each OS interface is
    /// (`ifindex`, policy index): a frame of an interface not named goes to
    /// the switching cores.
    pub fn set_interfaces(&self, ifaces: &[(u32, u32)]) -> io::Result<()> {
        for &(ifindex, i) in ifaces {
            let name = if ifindex < fast::IFACE_SLOTS {
                fast::IFACES
            } else {
                fast::IFACES_HIGH
            };
            if let Some(m) = self.map(name) {
                let v = i | fast::IFACE_KNOWN;
                map_update_bytes(m, &ifindex.to_ne_bytes(), &v.to_ne_bytes())?;
            }
        }
        Ok(())
    }

    /// Tell the program the addresses of NAT back ends, whose traffic the
    /// switching cores' connection table handles.
    pub fn set_nat_backends(&self, addrs: &[IpAddr]) -> io::Result<()> {
        let Some(m) = self.map(fast::NAT_BACKENDS) else {
            return Ok(());
        };
        // The filter's bits first: an address in the hash whose bit were
        // not set yet would be taken for no back end.
        if let Some(f) = self.map(fast::NAT_FILTER) {
            let mut words = vec![0u64; fast::NAT_FILTER_WORDS as usize];
            for &a in addrs {
                let bit = fast::nat_filter_bit(&crate::switch::bytes_of(a));
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
            for (i, w) in (0u32..).zip(&words) {
                if *w != 0 {
                    map_update_bytes(f, &i.to_ne_bytes(), &w.to_ne_bytes())?;
                }
            }
        }
        for &a in addrs {
            map_update_bytes(m, &crate::switch::bytes_of(a), &[1])?;
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
        let decided = [Action::Drop, Action::Reset, Action::Balance]
            .map(|x| at(&out, fast::ACTIONS + x as u32));
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

/// A [`fast::BalService`] as the map holds it.
fn service_bytes(s: &fast::BalService, out: &mut Vec<u8>) {
    for w in [
        s.flags,
        s.maglev_base,
        s.maglev_len,
        s.backend_base,
        s.counters,
        s.stamp,
    ] {
        out.extend_from_slice(&w.to_ne_bytes());
    }
}

/// A [`fast::BalBackend`] as the map holds it.
fn backend_bytes(b: &fast::BalBackend, out: &mut Vec<u8>) {
    out.extend_from_slice(&b.addr);
    out.extend_from_slice(&b.dst_mac);
    out.extend_from_slice(&b.src_mac);
    out.extend_from_slice(&b.ifindex.to_ne_bytes());
    out.extend_from_slice(&b.flags.to_ne_bytes());
    out.extend_from_slice(&b.port.to_ne_bytes());
    out.extend_from_slice(&b.pad.to_ne_bytes());
}

/// A [`ServingKey`] as the map holds it.
fn serving_bytes(k: &ServingKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&k.buffer.to_ne_bytes());
    v.extend_from_slice(&k.service.to_ne_bytes());
    v.extend_from_slice(&k.addr);
    v
}
