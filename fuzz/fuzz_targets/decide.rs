//! Fuzz the packet path differentially: any frame, through `wire::extract` and
//! then through the reference interpreter and the JIT of a stock or case-corpus
//! policy (compiled as usual, and with every mergeable rule merged into tables),
//! must give the same decision, without a panic or a fault. The same frame then
//! goes through the switching core (the policy's appliance on in-memory rings,
//! freshly started, deciding with the JIT): what the core did with it must follow
//! from the interpreter's decision (`Outcome::follows`), every frame must be
//! accounted for, and when the core balanced it, the back end's answer goes back
//! through the core too (NAT return traffic) under the same rule.
//!
//! As root, each policy is also compiled to eBPF (`bpf::Mode::Test`) and loaded:
//! every frame `BPF_PROG_TEST_RUN` takes whole (14 to 3 520 bytes) runs through
//! it in the kernel, and its extraction and decision must equal
//! `wire::extract`'s and the interpreter's; and through the policy's XDP fast
//! path (`Mode::Fast`, answering resets allowed): its verdict and the frame
//! it leaves must be what the interpreter and the cores make of the frame (a
//! drop dropped, a reset the cores would answer answered with their very
//! frame, `wire::reset_in_place`'s, everything else untouched to the cores).
//! The fast path runs with the policy's balancing tables published (every
//! back end's neighbour known): a frame it balances itself (a redirect) must
//! leave it exactly as the switching core sends it to the back end (DSR or
//! NAT); the flow it recorded (and a NAT flow's reply record) is forgotten
//! after each frame, as the core starts afresh.
//! Without the right to load programs the eBPF part is skipped, and the
//! target says so once.
#![no_main]

use lbp_compiler::bpf::{self, Mode};
use lbp_compiler::interp::Engine;
use lbp_runtime::config::Appliance;
use lbp_runtime::generation::{Decide, Generation};
use lbp_runtime::neigh::{NeighAddr, NeighTable};
use lbp_runtime::ring::bpf::{
    Loaded, LoadedMap, XskMap, map_lookup_bytes, map_update_bytes, xdp_test_run,
};
use lbp_runtime::ring::fastbal::{Out, Sizes, flow_key, forget_record, tables};
use lbp_runtime::ring::fastpath::FastPath;
use lbp_runtime::testbed::{Fate, Testbed, neighbour_mac};
use libfuzzer_sys::fuzz_target;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

/// The largest frame `BPF_PROG_TEST_RUN` keeps in one piece (a page less the
/// headroom and `skb_shared_info`).
const MAX_TEST_FRAME: usize = 4096 - 256 - 320;
const XDP_REDIRECT: u32 = 4;

struct Compiled {
    prog: lbp_compiler::Program,
    jit: Arc<lbp_compiler::Jit>,
    merged: lbp_compiler::Jit,
    core: Mutex<Testbed>,
    /// The policy in eBPF, loaded (`None` without the right to load).
    ebpf: Option<Loaded>,
    /// The policy's XDP fast path, loaded (`None` likewise), its flows, and
    /// the addresses of its NAT back ends (whose traffic goes to the cores).
    fast: Option<(FastPath, OwnedFd, LoadedMap, Vec<std::net::IpAddr>)>,
}

/// The fast path of `prog`, loaded for a test run (the loopback interface,
/// index 1, is the receiving one).
fn load_fast(
    name: &std::path::Path,
    prog: &lbp_compiler::Program,
    app: &Appliance,
    policy: Arc<dyn Decide + Send + Sync>,
) -> (FastPath, OwnedFd, LoadedMap, Vec<std::net::IpAddr>) {
    let p = bpf::compile(prog, Mode::Fast).unwrap_or_else(|e| panic!("{}: {e}", name.display()));
    let sizes = Sizes::of(app);
    let mut fast = FastPath::new("lbp_fuzz_fast", p.prog.clone(), &p.maps, sizes)
        .unwrap_or_else(|e| panic!("{}: maps: {e}", name.display()));
    // The balancing tables: every back end's neighbour known (at the MAC the
    // testbed's neighbours answer with), every interface one the program
    // may send on (never the receiving one: a balanced frame is a redirect).
    let g = Generation::new(policy, app.clone());
    let neigh = NeighTable::new(4096);
    for svc in &app.services {
        for be in &svc.backends {
            neigh.set_permanent(&NeighAddr::from(be.addr), neighbour_mac(be.addr));
        }
    }
    let outs: Vec<Option<Out>> = (0..app.interfaces.len() as u32)
        .map(|i| {
            Some(Out {
                ifindex: 100 + i,
                tx: true,
            })
        })
        .collect();
    fast.publish_balance(&tables(&g, &neigh, &outs, 0, &sizes))
        .unwrap_or_else(|e| panic!("{}: balancing tables: {e}", name.display()));
    fast.set_nat_backends(&g.nat_backends)
        .unwrap_or_else(|e| panic!("{}: NAT back ends: {e}", name.display()));
    let xsk = XskMap::new(1).expect("an XSK map");
    let flows = lbp_runtime::ring::fastpath::flows_map().expect("the flows map");
    let fd = fast
        .load_for(&xsk, &flows)
        .unwrap_or_else(|e| panic!("{}: the fast path: {e}", name.display()));
    (fast, fd, flows, g.nat_backends.clone())
}

/// `prog` in eBPF (`Mode::Test`), loaded; `None` (said once) when this
/// process may not load programs. Every stock and corpus policy is within the
/// back end's limits: a refusal there is a bug.
fn load_ebpf(name: &std::path::Path, prog: &lbp_compiler::Program) -> Option<Loaded> {
    static SKIPPED: OnceLock<()> = OnceLock::new();
    let p = bpf::compile(prog, Mode::Test).unwrap_or_else(|e| panic!("{}: {e}", name.display()));
    match Loaded::xdp("lbp_fuzz", &p.prog, &p.maps) {
        Ok(l) => Some(l),
        Err(e) if e.raw_os_error() == Some(1) => {
            SKIPPED.get_or_init(|| {
                eprintln!("decide: the eBPF back end is skipped: loading programs needs root ({e})")
            });
            None
        }
        Err(e) => panic!("{}: the verifier refused the program: {e}", name.display()),
    }
}

/// One run of the loaded program on `frame` from `in_iface`: the decision
/// and the fields it decided on.
fn run_ebpf(l: &Loaded, frame: &[u8], in_iface: u32) -> (lbp_abi::Decision, lbp_abi::Fields) {
    map_update_bytes(&l.maps[1], &0u32.to_ne_bytes(), &in_iface.to_ne_bytes())
        .expect("setting the receiving interface");
    let r = xdp_test_run(l.prog.as_fd(), frame).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.action, 2, "the test mode passes every frame");
    let out = map_lookup_bytes(&l.maps[0], &0u32.to_ne_bytes())
        .expect("reading the out map")
        .expect("entry 0 of the out array");
    bpf::out_from_bytes(&out).expect("an out value")
}

fn policies() -> &'static Vec<Compiled> {
    static P: OnceLock<Vec<Compiled>> = OnceLock::new();
    P.get_or_init(|| {
        let mut names: Vec<_> = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/cases"),
        ]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .collect();
        names.sort();
        names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "lbp"))
            .map(|p| {
                let src = std::fs::read_to_string(p).unwrap();
                let a = lbp_lang::analyze(&src);
                let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
                let jit = Arc::new(lbp_compiler::jit::compile(&prog).unwrap());
                let merged = lbp_compiler::jit::compile_with(&prog, 1).unwrap();
                let policy = Arc::new(lbp::testbed::Shared(jit.clone()));
                let app = lbp::appliance::appliance(&prog, &src);
                let core = Testbed::new(policy.clone(), app.clone()).unwrap();
                let ebpf = load_ebpf(p, &prog);
                let fast = ebpf.is_some().then(|| load_fast(p, &prog, &app, policy));
                Compiled {
                    prog,
                    jit,
                    merged,
                    core: Mutex::new(core),
                    ebpf,
                    fast,
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let all = policies();
    let c = &all[sel as usize % all.len()];
    let in_iface = u32::from(sel >> 4) % (c.prog.interfaces.len() as u32 + 1);
    let fields = lbp_compiler::wire::extract(frame, in_iface);
    let want = lbp_compiler::interp::decide(&c.prog, &fields);
    assert_eq!(
        c.jit.decide(&fields),
        want,
        "JIT and interpreter disagree on {fields:?}"
    );
    assert_eq!(
        c.merged.decide(&fields),
        want,
        "merged JIT and interpreter disagree on {fields:?}"
    );
    if let Some(l) = &c.ebpf
        && (14..=MAX_TEST_FRAME).contains(&frame.len())
    {
        let (d, extracted) = run_ebpf(l, frame, in_iface);
        assert_eq!(extracted, fields, "eBPF and wire::extract disagree");
        assert_eq!(d, want, "eBPF and interpreter disagree on {fields:?}");
    }
    let mut balanced_in_xdp = None;
    if let Some((fast, fd, flows, nat)) = &c.fast
        && (14..=MAX_TEST_FRAME).contains(&frame.len())
    {
        fast.set_interfaces(&[(1, in_iface | lbp_abi::bpf::fast::IFACE_TX)])
            .expect("the interface map");
        let run = xdp_test_run(fd.as_fd(), frame).expect("BPF_PROG_TEST_RUN");
        if run.action == XDP_REDIRECT {
            // Balanced in XDP: checked against the core below; the flow is
            // forgotten, as the core starts afresh for every frame.
            assert_eq!(want.action, lbp_abi::Action::Balance as u32, "{fields:?}");
            forget_record(flows, &flow_key(&fields)).expect("the flows map");
            // A NAT flow's reply record too (keyed as the back end's replies).
            forget_record(flows, &flow_key(&reply_fields(&fields, &run.frame)))
                .expect("the flows map");
            balanced_in_xdp = Some(run.frame);
        } else {
            let (verdict, left) =
                lbp_runtime::testbed::fast_path_model(frame, &fields, want.action, nat);
            assert_eq!(
                (run.action, &run.frame),
                (verdict, &left),
                "the fast path on {fields:?}"
            );
        }
    }

    let mut core = c.core.lock().unwrap();
    core.restart();
    let app = core.appliance().clone();
    let o = core.send(frame, in_iface);
    let want = lbp_compiler::interp::decide(&c.prog, &o.fields);
    if let Err(e) = o.follows(&want, &app) {
        panic!("the switching core: {e}\n{o:?}");
    }
    if let Some(left) = balanced_in_xdp {
        match o.fate() {
            Some(Fate::Sent { frame: sent, .. }) if *sent == left => {}
            // Longer than the cores' ring frames: they never see it, XDP
            // sends it on (its transport header and payload as they came).
            // NAT's destination port and checksum aside.
            Some(Fate::TooLong(_)) => {
                let l4 = usize::from(fields.l4_offset).min(frame.len());
                let csum = l4 + if fields.ip_proto == 6 { 16 } else { 6 };
                let plain = |f: &[u8]| {
                    let mut f = f.to_vec();
                    for i in [l4 + 2, l4 + 3, csum, csum + 1] {
                        if let Some(b) = f.get_mut(i) {
                            *b = 0;
                        }
                    }
                    f
                };
                let (l, f) = (plain(&left), plain(frame));
                assert_eq!((l.len(), &l[l4..]), (f.len(), &f[l4..]));
            }
            f => panic!("XDP balanced {frame:02x?} into {left:02x?}; the core: {f:?}"),
        }
    }
    if let (Some(Fate::Sent { iface, frame: sent }), Some(_)) = (o.fate(), o.balanced) {
        if let Some(back) = lbp::testbed::backend_answer(sent) {
            let r = core.send(&back, *iface);
            let want = lbp_compiler::interp::decide(&c.prog, &r.fields);
            if let Err(e) = r.follows(&want, &app) {
                panic!("the switching core, the back end's answer: {e}\n{r:?}");
            }
        }
    }
});

/// The fields of a back end's reply to `sent`, the frame XDP balanced from a
/// frame with fields `f` (as far as the flows map's key reads them).
fn reply_fields(f: &lbp_abi::Fields, sent: &[u8]) -> lbp_abi::Fields {
    let mut r = *f;
    let (l3, l4) = (usize::from(f.l3_offset), usize::from(f.l4_offset));
    let mut dst = [0u8; 16];
    if f.ip_version == 4 {
        dst[10] = 0xff;
        dst[11] = 0xff;
        if let Some(a) = sent.get(l3 + 16..l3 + 20) {
            dst[12..].copy_from_slice(a);
        }
    } else if let Some(a) = sent.get(l3 + 24..l3 + 40) {
        dst.copy_from_slice(a);
    }
    r.ip_src = dst;
    r.ip_dst = f.ip_src;
    r.sport = sent
        .get(l4 + 2..l4 + 4)
        .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    r.dport = f.sport;
    r
}
