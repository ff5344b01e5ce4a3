//! `lbp run --datapath`: the XDP fast path beside the switching cores.
//!
//! With `xdp` (or `auto`, where the policy fits the eBPF back end's limits),
//! each interface bound with AF_XDP runs the policy compiled to eBPF
//! (`lbp_compiler::bpf`, `Mode::Fast`) in place of the plain redirect program:
//! what it can decide in the kernel it decides there, the rest goes to the
//! switching cores as before. A reload installs the new generation's program on
//! every interface (an atomic swap each), after the cores have the new policy;
//! a program that cannot be installed leaves the plain redirect in place, so
//! every frame then meets the new policy on the cores. `cores` keeps the plain
//! redirect program.

use lbp_abi::bpf::fast::{self as slot, Counter};
use lbp_compiler::Program;
use lbp_compiler::bpf::{self, BpfProgram, Mode};
use lbp_runtime::generation::Generation;
use lbp_runtime::ring::bpf::XdpRedirect;
use lbp_runtime::ring::fastbal::{self, Out, Sizes};
use lbp_runtime::ring::fastpath::{FastPath, flows_map};
use lbp_runtime::run::monotonic_ns;
use lbp_runtime::switch::Shared;

/// `--datapath`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    /// The XDP fast path where the policy fits the eBPF back end, else the
    /// switching cores alone (with a warning that says why).
    Auto,
    /// The XDP fast path; a policy beyond the eBPF back end's limits is an
    /// error.
    Xdp,
    /// The switching cores alone: every frame is redirected to them.
    Cores,
}

/// `--xdp-tx`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpTx {
    /// On every interface whose driver is not veth.
    Auto,
    /// On every interface.
    On,
    /// On none: the switching cores send every answer.
    Off,
}

/// The most filter rules tested one by one that `--datapath auto` puts in
/// XDP. The eBPF filter merges only groups of exact atoms into hash maps
/// (`BpfProgram::inline_rules` counts the others); the rest it tests in order: at 1 000 such rules it
/// costs every frame about 1.1 us in the kernel's test run, against 12 ns
/// for the JIT (the decide bench), which would slow down the frames the
/// cores still decide more than the drops save.
pub const AUTO_MAX_RULES: usize = 256;

/// The fast path's program for `prog` as `d` asks, and a warning when `auto`
/// leaves it off. `Err` only for `xdp` with a policy beyond the limits.
pub fn compile(
    prog: &Program,
    d: Datapath,
) -> Result<(Option<BpfProgram>, Option<String>), String> {
    match d {
        Datapath::Cores => Ok((None, None)),
        Datapath::Xdp => bpf::compile(prog, Mode::Fast)
            .map(|p| (Some(p), None))
            .map_err(|e| format!("--datapath xdp: {e}")),
        Datapath::Auto => Ok(match bpf::compile(prog, Mode::Fast) {
            // The eBPF filter tests the rules it does not merge into hash
            // maps one by one (about a nanosecond each per packet, `cargo
            // bench -p lbp-compiler --bench decide`), and every frame pays
            // it, also those it sends on to the cores.
            Ok(p) if p.inline_rules > AUTO_MAX_RULES => (
                None,
                Some(format!(
                    "the XDP fast path is off; every frame goes to the switching cores: \
                     {} filter rules tested one by one (not merged into tables), and \
                     `--datapath auto` puts at most {AUTO_MAX_RULES} in XDP, where each costs \
                     every frame about a nanosecond (`--datapath xdp` puts them there anyway)",
                    p.inline_rules
                )),
            ),
            Ok(p) => (Some(p), None),
            Err(e) => (
                None,
                Some(format!(
                    "the XDP fast path is off; every frame goes to the switching cores: {e}"
                )),
            ),
        }),
    }
}

/// The fast path on the interfaces bound with AF_XDP, and its counters.
#[derive(Debug)]
pub struct Fast {
    /// Per policy interface: its redirect (None for io_uring).
    redirects: Vec<Option<XdpRedirect>>,
    /// (OS interface index, policy interface index with
    /// [`slot::IFACE_TX`] where allowed) of each XDP interface.
    ifaces: Vec<(u32, u32)>,
    /// Per policy interface, where the program runs: its OS index and
    /// whether the program may transmit on it.
    outs: Vec<Option<Out>>,
    /// The running program, and the compile (generation serial) it is of.
    current: Option<FastPath>,
    serial: u64,
    /// The generation and back ends' entries last published to the
    /// running program.
    published: Option<(u64, Vec<lbp_abi::bpf::fast::BalBackend>)>,
    /// The generation replaced last (its counters still read).
    previous: Option<FastPath>,
    /// The counters of the generations replaced before it, summed (fixed
    /// slots only: rule numbers are a generation's own).
    retired: Vec<Counter>,
}

impl Fast {
    /// `tx[i]`: whether the program may answer out of policy interface `i`
    /// itself.
    pub fn new(redirects: Vec<Option<XdpRedirect>>, ifindexes: &[u32], tx: &[bool]) -> Fast {
        let ifaces = redirects
            .iter()
            .zip(ifindexes)
            .enumerate()
            .filter(|(_, (r, _))| r.is_some())
            .map(|(i, (_, &ix))| {
                let flag = if tx.get(i) == Some(&true) {
                    slot::IFACE_TX
                } else {
                    0
                };
                (ix, i as u32 | flag)
            })
            .collect();
        let outs = redirects
            .iter()
            .zip(ifindexes)
            .enumerate()
            .map(|(i, (r, &ifindex))| {
                r.as_ref().map(|_| Out {
                    ifindex,
                    tx: tx.get(i) == Some(&true),
                })
            })
            .collect();
        Fast {
            redirects,
            ifaces,
            outs,
            current: None,
            serial: 0,
            published: None,
            previous: None,
            retired: vec![Counter::default(); slot::RULES as usize],
        }
    }

    /// Whether a fast-path program runs.
    pub fn is_on(&self) -> bool {
        self.current.is_some()
    }

    /// Whether any interface is bound with AF_XDP (where a program can run).
    pub fn has_xdp(&self) -> bool {
        !self.ifaces.is_empty()
    }

    /// Put `p`, the program of generation `g`'s policy, on every XDP
    /// interface, or the plain redirect program when `None`. On an error, the
    /// plain redirect program is put back everywhere (the switching cores
    /// then decide every frame) and the error returned.
    pub fn install(
        &mut self,
        p: Option<&BpfProgram>,
        g: &Generation,
        shared: &Shared,
    ) -> Result<(), String> {
        let Some(p) = p else {
            return self.uninstall();
        };
        match self.try_install(p, g, shared) {
            Ok(()) => Ok(()),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        " (its program needs CAP_BPF and CAP_PERFMON)"
                    }
                    _ => "",
                };
                let e = format!("the XDP fast path could not be installed{why}: {e}");
                match self.uninstall() {
                    Ok(()) => Err(e),
                    Err(u) => Err(format!("{e}; {u}")),
                }
            }
        }
    }

    fn try_install(
        &mut self,
        p: &BpfProgram,
        g: &Generation,
        shared: &Shared,
    ) -> std::io::Result<()> {
        // The flows balanced in XDP, shared by every generation's program
        // and read by the cores for a segment of no connection of theirs.
        if shared.xdp_flows.get().is_none() {
            let _ = shared.xdp_flows.set(flows_map()?);
        }
        let Some(flows) = shared.xdp_flows.get() else {
            unreachable!("set above")
        };
        let neigh = &shared.neigh;
        let sizes = Sizes::of(&g.appliance);
        let mut fast = FastPath::new("lbp_fast", p.prog.clone(), &p.maps, sizes)?;
        fast.set_interfaces(&self.ifaces)?;
        fast.set_nat_backends(&g.nat_backends)?;
        let t = fastbal::tables(g, neigh, &self.outs, monotonic_ns(), &sizes);
        fast.publish_balance(&t)?;
        // Load every interface's copy first: a refusal changes nothing.
        let mut progs = Vec::with_capacity(self.redirects.len());
        for r in self.redirects.iter().flatten() {
            progs.push(fast.load_for(r.xsk_map(), flows)?);
        }
        for (swapped, (r, prog)) in self.redirects.iter_mut().flatten().zip(progs).enumerate() {
            if let Err(e) = r.install(Some(prog)) {
                // Interfaces already swapped ran it: keep its counts.
                if swapped > 0 {
                    self.retire(Some(fast));
                }
                return Err(e);
            }
        }
        let old = self.current.replace(fast);
        self.serial = g.serial;
        self.published = Some((g.id, t.backends));
        self.retire(old);
        Ok(())
    }

    /// Publish generation `g`'s balancing tables to the running program, if
    /// it is of `g`'s compile (a reload installs its own program and tables):
    /// new weights, back ends in maintenance, neighbours found or gone.
    /// Unchanged tables are not written again.
    pub fn publish(&mut self, g: &Generation, shared: &Shared) -> Result<(), String> {
        let neigh = &shared.neigh;
        let Some(f) = &mut self.current else {
            return Ok(());
        };
        if g.serial != self.serial {
            return Ok(());
        }
        // Each tick: the back ends' next hops (cheap); the whole tables
        // (Maglev's among them) only when they or the generation changed.
        let backends = fastbal::backends(g, neigh, &self.outs, monotonic_ns());
        if matches!(&self.published, Some((id, b)) if *id == g.id && *b == backends) {
            return Ok(());
        }
        let sizes = Sizes::of(&g.appliance);
        let t = fastbal::tables_with(g, backends.clone(), &sizes);
        f.publish_balance(&t)
            .map_err(|e| format!("the XDP fast path's balancing tables: {e}"))?;
        self.published = Some((g.id, backends));
        Ok(())
    }

    /// The plain redirect program back on every interface. Should bpf(2)
    /// refuse that on one, the program there keeps running (and counting):
    /// it stays the current one, and the error says so.
    fn uninstall(&mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        for r in self.redirects.iter_mut().flatten() {
            if r.has_installed()
                && let Err(e) = r.install(None)
            {
                failed.push(e.to_string());
            }
        }
        if !failed.is_empty() {
            return Err(format!(
                "the plain redirect program could not be put back: {}",
                failed.join("; ")
            ));
        }
        let old = self.current.take();
        self.retire(old);
        Ok(())
    }

    /// A generation's program, no longer on any interface: it becomes the
    /// previous one, whose counters are still read (a run that began before
    /// the swap may count after it), and the one before it is folded into
    /// the retired counters (fixed slots only: rule numbers are a
    /// generation's own).
    fn retire(&mut self, old: Option<FastPath>) {
        let Some(old) = old else {
            return;
        };
        if let Some(before) = self.previous.replace(old) {
            add(&mut self.retired, &before.counters().unwrap_or_default());
        }
    }

    /// The counters: the fixed slots over every generation, the rule slots of
    /// the running one.
    pub fn counters(&self) -> Vec<Counter> {
        let mut v = self.retired.clone();
        if let Some(f) = &self.previous {
            add(&mut v, &f.counters().unwrap_or_default());
        }
        if let Some(f) = &self.current {
            let c = f.counters().unwrap_or_default();
            add(&mut v, &c);
            v.extend(c.iter().skip(v.len()));
        }
        v
    }

    /// The redirects, to be dropped (programs detached) after the cores stop.
    pub fn take_redirects(&mut self) -> Vec<Option<XdpRedirect>> {
        self.current = None;
        self.previous = None;
        std::mem::take(&mut self.redirects)
    }
}

/// `to[i] += from[i]` over the slots both have.
fn add(to: &mut [Counter], from: &[Counter]) {
    for (t, f) in to.iter_mut().zip(from) {
        t.packets += f.packets;
        t.bytes += f.bytes;
    }
}
