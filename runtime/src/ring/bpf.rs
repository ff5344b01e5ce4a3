//! The little bpf(2) lbp needs for AF_XDP, by raw system call: an XSKMAP (queue
//! index to AF_XDP socket), a six-instruction XDP program assembled here that
//! redirects each frame to the socket of its receive queue (and passes it to the
//! kernel when that queue has none), and attaching that program to an interface.
//!
//! Attaching prefers a bpf link (BPF_LINK_CREATE): the kernel detaches a link's
//! program when the last descriptor of the link closes, so the program goes away
//! on every exit path, a kill by signal included. Where links are refused it falls
//! back to the older netlink attachment (RTM_SETLINK with IFLA_XDP), which outlives
//! the process; that one is detached on drop, and [`detach_stale`] removes one left
//! by a killed earlier run. Native (driver) mode is tried first, generic (skb)
//! mode second.
//!
//! This is not a BPF loader: no ELF, no BTF, no libbpf. Programs come from
//! `lbp_abi::bpf`'s assembler (the redirect program here, the compiler's eBPF
//! back end's, the traffic generator's), their map references resolved by
//! [`Loaded`] or `fastpath`; [`XdpRedirect::install`] swaps a program in on the
//! interface's attachment (a bpf link update, atomic). lbp's traffic generator (the `lbp-trafficgen` crate,
//! for benchmarks and tests) shares the low-level pieces, which are `pub` for it
//! alone: the system call, the instruction encoding, program loading and map
//! creation and access. All `unsafe` here is system calls on buffers this module
//! or its caller owns for the call's duration.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_PROG_TYPE_SCHED_CLS`: a traffic-control classifier (tc, tcx).
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_XDP: u32 = 37;
/// `BPF_TCX_EGRESS`: a tcx link on an interface's transmit path.
pub const BPF_TCX_EGRESS: u32 = 47;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, run on the kernel's skb path.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;

/// Where an XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before any skb exists (`XDP_FLAGS_DRV_MODE`).
    Driver,
    /// On the kernel's generic path, for drivers without XDP (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl XdpMode {
    /// The attach flag of this mode.
    pub fn flags(self) -> u32 {
        match self {
            XdpMode::Driver => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// bpf(2) with `attr` as the attribute block; returns the result (an fd or 0).
/// Every pointer a caller stores in `attr` must point at a buffer that outlives
/// the call, with the length given beside it (or the size the command implies).
pub fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable `#[repr(C)]` block of `size_of::<T>()`
    // bytes for the duration of the call; the kernel reads (and for some commands
    // writes) only within that size, and through the pointers in it, which the
    // callers in this crate set to buffers live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The descriptor a successful creating bpf(2) call returned, owned.
pub fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf(2) call that creates a
    // descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// The index of a network interface in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a NUL-terminated string live for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// An XSKMAP: receive-queue index to AF_XDP socket.
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    entries: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A new map of `map_type` (`BPF_MAP_TYPE_*`), zeroed where the type says so.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    map_create_flags(map_type, key_size, value_size, max_entries, 0)
}

fn map_create_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// Set `key` to `value` in `map`, both as bytes of the map's key and value
/// sizes (a size that differs is an error, not a kernel read past the buffer).
pub fn map_update_bytes(map: &LoadedMap, key: &[u8], value: &[u8]) -> io::Result<()> {
    map.check(key, value.len())?;
    map_elem(
        BPF_MAP_UPDATE_ELEM,
        map.fd.as_fd(),
        &key[0],
        value.as_ptr() as u64,
    )
}

/// `BPF_MAP_*_BATCH`'s attributes.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Set the keys `first..first + n` of an array map to the `n` values in
/// `values` (each of the map's value size, back to back), a few system
/// calls for any `n` (`BPF_MAP_UPDATE_BATCH`).
pub fn array_update_batch(map: &LoadedMap, first: u32, values: &[u8]) -> io::Result<()> {
    let size = map.value_size as usize;
    if map.key_size != 4 || size == 0 || !values.len().is_multiple_of(size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "BPF map {}: {} bytes of values of {size}",
                map.name,
                values.len()
            ),
        ));
    }
    // At most this many entries per call (the kernel copies them one by
    // one; a bounded call keeps a signal's wait short).
    const CHUNK: usize = 16_384;
    let n = values.len() / size;
    let keys: Vec<u32> = (0..n as u32).map(|i| first + i).collect();
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK * size)) {
        let mut a = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: map.fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        sys_bpf(BPF_MAP_UPDATE_BATCH, &mut a)
            .map_err(|e| io::Error::new(e.kind(), format!("filling BPF map {}: {e}", map.name)))?;
    }
    Ok(())
}

/// Every entry of a hash map or an array (`BPF_MAP_LOOKUP_BATCH`, a bucket
/// or index range per call), key then value as bytes of the map's sizes,
/// until `each` says false. Entries added or removed meanwhile may or may
/// not be seen (the kernel reads each bucket under its lock, not the map at
/// one instant; an array's values as they are).
pub fn map_for_each(map: &LoadedMap, mut each: impl FnMut(&[u8], &[u8]) -> bool) -> io::Result<()> {
    // Entries per call: a bucket holds far fewer (ENOSPC otherwise).
    const CHUNK: usize = 1024;
    let (ks, vs) = (map.key_size as usize, map.value_size as usize);
    if !matches!(
        map.spec_kind,
        MapKind::Hash | MapKind::LruHash | MapKind::Array
    ) || ks == 0
        || vs == 0
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("BPF map {}: not a hash map or an array", map.name),
        ));
    }
    let mut keys = vec![0u8; CHUNK * ks];
    let mut values = vec![0u8; CHUNK * vs];
    // The kernel's cursor: a bucket number, opaque here.
    let (mut at, mut next) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut a = BatchAttr {
            in_batch: if first { 0 } else { &at as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // The entries copied count only on success, or at the end (ENOENT
        // with the last ones).
        let end = match sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut a) {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading BPF map {}: {e}", map.name),
                ));
            }
        };
        let n = (a.count as usize).min(CHUNK);
        for i in 0..n {
            if !each(&keys[i * ks..(i + 1) * ks], &values[i * vs..(i + 1) * vs]) {
                return Ok(());
            }
        }
        if end {
            return Ok(());
        }
        at = next;
        first = false;
    }
}

/// Remove `key` from `map`; false when it was not there.
pub fn map_delete_bytes(map: &LoadedMap, key: &[u8]) -> io::Result<bool> {
    map.check(key, map.value_size as usize)?;
    match map_elem(BPF_MAP_DELETE_ELEM, map.fd.as_fd(), &key[0], 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read `key` of `map` into a new buffer of the map's value size; `None` when
/// the key is absent.
pub fn map_lookup_bytes(map: &LoadedMap, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    // A per-CPU map's value is one slot per possible CPU, each rounded to 8.
    let len = match map.spec_kind {
        MapKind::PercpuArray => (map.value_size as usize).next_multiple_of(8) * possible_cpus()?,
        _ => map.value_size as usize,
    };
    map.check(key, map.value_size as usize)?;
    let mut v = vec![0u8; len];
    match map_elem(
        BPF_MAP_LOOKUP_ELEM,
        map.fd.as_fd(),
        &key[0],
        v.as_mut_ptr() as u64,
    ) {
        Ok(()) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The number of possible CPUs (the slots of a per-CPU map's value).
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) if b >= a => (a, b),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cpu list {text:?}"),
                ));
            }
        };
        n += b - a + 1;
    }
    Ok(n)
}

/// A map created from a [`MapSpec`].
#[derive(Debug)]
pub struct LoadedMap {
    pub fd: OwnedFd,
    pub name: String,
    spec_kind: MapKind,
    key_size: u32,
    value_size: u32,
}

impl LoadedMap {
    /// Another handle on the same map.
    pub fn try_clone(&self) -> io::Result<LoadedMap> {
        Ok(LoadedMap {
            fd: self.fd.try_clone()?,
            name: self.name.clone(),
            spec_kind: self.spec_kind,
            key_size: self.key_size,
            value_size: self.value_size,
        })
    }

    /// Create the map `spec` describes and write its entries.
    pub fn create(spec: &MapSpec) -> io::Result<LoadedMap> {
        let fd = map_create_flags(
            spec.kind.number(),
            spec.key_size,
            spec.value_size,
            spec.max_entries.max(1),
            spec.kind.flags(),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("creating BPF map {}: {e}", spec.name)))?;
        let m = LoadedMap {
            fd,
            name: spec.name.clone(),
            spec_kind: spec.kind,
            key_size: spec.key_size,
            value_size: spec.value_size,
        };
        for (k, v) in &spec.entries {
            map_update_bytes(&m, k, v).map_err(|e| {
                io::Error::new(e.kind(), format!("filling BPF map {}: {e}", spec.name))
            })?;
        }
        Ok(m)
    }

    fn check(&self, key: &[u8], value_len: usize) -> io::Result<()> {
        if key.len() != self.key_size as usize
            || value_len != self.value_size as usize
            || key.is_empty()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "BPF map {}: key of {} bytes and value of {value_len} for a map of {} and {}",
                    self.name,
                    key.len(),
                    self.key_size,
                    self.value_size
                ),
            ));
        }
        Ok(())
    }
}

/// An assembled program loaded with its maps: the maps are created and filled
/// first, then the program with their descriptors in place.
#[derive(Debug)]
pub struct Loaded {
    pub prog: OwnedFd,
    /// In the program's map order.
    pub maps: Vec<LoadedMap>,
}

impl Loaded {
    /// Load `prog` as an XDP program named `name`, creating `maps` for it.
    pub fn xdp(name: &str, prog: &Program, maps: &[MapSpec]) -> io::Result<Loaded> {
        let maps = maps
            .iter()
            .map(LoadedMap::create)
            .collect::<io::Result<Vec<_>>>()?;
        let fds: Vec<i32> = maps.iter().map(|m| m.fd.as_raw_fd()).collect();
        let insns = prog
            .resolve(&fds)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let prog = load_xdp(name, &insns)?;
        Ok(Loaded { prog, maps })
    }
}

/// Set `key` to `value` in `map`; `K` and `V` must have the map's key and value
/// sizes.
pub fn map_update<K, V>(map: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    map_elem(BPF_MAP_UPDATE_ELEM, map, key, value as *const V as u64)
}

/// Read `key` of `map` into `value`; `K` and `V` must have the map's key and
/// value sizes.
pub fn map_lookup<K, V>(map: BorrowedFd<'_>, key: &K, value: &mut V) -> io::Result<()> {
    map_elem(BPF_MAP_LOOKUP_ELEM, map, key, value as *mut V as u64)
}

/// An element command (`cmd`) on `key` of `map`, with `value` the address of the
/// value buffer (0 for none).
fn map_elem<K>(cmd: libc::c_long, map: BorrowedFd<'_>, key: &K, value: u64) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        value,
        ..MapElemAttr::default()
    };
    sys_bpf(cmd, &mut a).map(drop)
}

impl XskMap {
    /// The map's descriptor (for a program that redirects through it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A map with room for queues `0..entries`.
    pub fn new(entries: u32) -> io::Result<XskMap> {
        Ok(XskMap {
            fd: map_create(BPF_MAP_TYPE_XSKMAP, 4, 4, entries.max(1))?,
            entries: entries.max(1),
        })
    }

    /// How many queue slots the map has.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Send the frames of receive queue `queue` to the AF_XDP socket `sock`
    /// (which must be bound to that queue of the interface).
    pub fn insert(&self, queue: u32, sock: BorrowedFd<'_>) -> io::Result<()> {
        let value: u32 = sock.as_raw_fd() as u32;
        map_update(self.fd.as_fd(), &queue, &value)
    }

    /// Stop redirecting queue `queue` (its frames go to the kernel again).
    pub fn remove(&self, queue: u32) -> io::Result<()> {
        map_elem(BPF_MAP_DELETE_ELEM, self.fd.as_fd(), &queue, 0)
    }
}

impl AsFd for XskMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One eBPF instruction and its encoding: the ABI crate's, shared with the
/// compiler's eBPF back end.
pub use lbp_abi::bpf::{Insn, MapKind, MapSpec, Program, insn};

/// The redirect program, for a map whose descriptor is `map_fd`:
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)     ; ctx->rx_queue_index
/// r1 = map_fd ll             ; ld_imm64, src = BPF_PSEUDO_MAP_FD (two slots)
/// r3 = XDP_PASS              ; what bpf_redirect_map returns on a missing entry
/// call bpf_redirect_map
/// exit                       ; r0 = XDP_REDIRECT, or XDP_PASS
/// ```
fn redirect_program(map_fd: RawFd) -> io::Result<Vec<Insn>> {
    use lbp_abi::bpf::{Asm, helper, op, reg::*, xdp};
    let mut a = Asm::new();
    a.ldx(op::W, R2, R1, xdp::RX_QUEUE_INDEX);
    a.ld_map(R1, 0);
    a.mov_imm(R3, xdp::PASS);
    a.call(helper::REDIRECT_MAP);
    a.exit();
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let prog = a.finish().map_err(|e| invalid(e.to_string()))?;
    prog.resolve(&[map_fd]).map_err(invalid)
}

/// `BPF_PROG_TEST_RUN` (`BPF_PROG_RUN`): run a loaded program on given input.
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `union bpf_attr`'s `test` member: the attributes of `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

/// `struct xdp_md`, an XDP program's context (as a test run's input).
#[repr(C)]
#[derive(Debug, Default)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// What one run of an XDP program on a frame gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpRun {
    /// The program's verdict (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, ...).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// The most a program may grow a frame by in [`xdp_test_run`].
const TEST_RUN_ROOM: usize = 256;

/// Run the XDP program `prog` once, in the kernel, on a copy of `frame`
/// (`BPF_PROG_TEST_RUN`, no live frames: nothing is sent): its verdict and the
/// frame it left.
pub fn xdp_test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<XdpRun> {
    xdp_test_run_repeat(prog, frame, 1).map(|(r, _)| r)
}

/// [`xdp_test_run`] `repeat` times in a row in the kernel (each on a fresh
/// copy of `frame`): the last run's verdict and frame, and the kernel's mean
/// time per run in nanoseconds (for benchmarks: it includes the test run's
/// own per-run cost, which an empty program measures).
pub fn xdp_test_run_repeat(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> io::Result<(XdpRun, u32)> {
    test_run(prog, frame, repeat, None)
}

/// [`xdp_test_run`] as if `frame` arrived on the interface of index
/// `ifindex` (of the calling thread's namespace; without it a test run
/// receives on the loopback).
pub fn xdp_test_run_on(prog: BorrowedFd<'_>, frame: &[u8], ifindex: u32) -> io::Result<XdpRun> {
    test_run(prog, frame, 1, Some(ifindex)).map(|(r, _)| r)
}

fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
    ifindex: Option<u32>,
) -> io::Result<(XdpRun, u32)> {
    let size = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut out = vec![0u8; frame.len() + TEST_RUN_ROOM];
    // The kernel takes a context only whole: the frame from 0 to its size.
    let ctx = ifindex.map(|i| XdpMd {
        data_end: size,
        ingress_ifindex: i,
        ..XdpMd::default()
    });
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: size,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: ctx.as_ref().map_or(0, |_| size_of::<XdpMd>() as u32),
        ctx_in: ctx.as_ref().map_or(0, |c| c as *const XdpMd as u64),
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut a)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_TEST_RUN: {e}")))?;
    out.truncate((a.data_size_out as usize).min(out.len()));
    Ok((
        XdpRun {
            action: a.retval,
            frame: out,
        },
        a.duration,
    ))
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Load the XDP program `prog` under `name` (its first 15 bytes); on failure,
/// load again with the verifier's log and put that in the error.
pub fn load_xdp(name: &str, prog: &[Insn]) -> io::Result<OwnedFd> {
    load_program(BPF_PROG_TYPE_XDP, BPF_XDP, name, prog)
}

/// Load `prog` as a program of type `prog_type` expecting `attach_type`, as
/// [`load_xdp`] does.
pub fn load_program(
    prog_type: u32,
    attach_type: u32,
    name: &str,
    prog: &[Insn],
) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut pname = [0u8; 16];
    let n = name.len().min(15);
    pname[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut a = ProgLoadAttr {
        prog_type,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: pname,
        expected_attach_type: attach_type,
        ..ProgLoadAttr::default()
    };
    // The kernel answers EAGAIN when the verifier was interrupted (a signal
    // to the process): try again, a few times, as libbpf does.
    let mut first = sys_bpf(BPF_PROG_LOAD, &mut a);
    for _ in 0..4 {
        match &first {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                first = sys_bpf(BPF_PROG_LOAD, &mut a);
            }
            _ => break,
        }
    }
    match first {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let mut log = vec![0u8; 1 << 20];
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = sys_bpf(BPF_PROG_LOAD, &mut a) {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            // The verifier's verdict is at the end of its log.
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(io::Error::new(
                e.kind(),
                format!(
                    "loading BPF program {name}: {e}; verifier: {}",
                    tail.join("\n")
                ),
            ))
        }
    }
}

/// Link `prog` to `ifindex` at `attach_type` with `flags` (BPF_LINK_CREATE):
/// the link's descriptor, whose closing detaches the program.
pub fn link_create(
    ifindex: u32,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    sys_bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

/// A loaded redirect program (see [`RedirectProgram::load`]).
#[derive(Debug)]
pub struct RedirectProgram {
    fd: OwnedFd,
}

impl RedirectProgram {
    /// The name the program carries in the kernel (`bpftool prog` shows it).
    pub const NAME: &'static str = "lbp_redirect";

    /// Load the program that redirects each frame to `map`'s socket for the
    /// frame's receive queue, and passes it to the kernel if there is none.
    pub fn load(map: &XskMap) -> io::Result<RedirectProgram> {
        let prog = redirect_program(map.fd.as_raw_fd())?;
        Ok(RedirectProgram {
            fd: load_xdp(Self::NAME, &prog)?,
        })
    }
}

impl AsFd for RedirectProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Set (`prog` = Some) or clear (None) the netlink-attached XDP program of
/// `ifindex` in the mode `flags`.
fn netlink_set_xdp(ifindex: u32, prog: Option<BorrowedFd<'_>>, flags: u32) -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked.
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a descriptor just created and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval for the call's duration.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };

    // nlmsghdr (16) + ifinfomsg (16) + IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS } (20).
    let fd: i32 = prog.map_or(-1, |p| p.as_raw_fd());
    let mut m = Vec::with_capacity(52);
    let seq: u32 = 1;
    m.extend_from_slice(&52u32.to_ne_bytes());
    m.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(libc::AF_UNSPEC as u8);
    m.push(0);
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&20u16.to_ne_bytes());
    m.extend_from_slice(&(IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&IFLA_XDP_FD.to_ne_bytes());
    m.extend_from_slice(&fd.to_ne_bytes());
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&IFLA_XDP_FLAGS.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    debug_assert_eq!(m.len(), 52);

    // SAFETY: a zeroed sockaddr_nl is valid; family set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `m` and `addr` are live for the call; lengths are theirs.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            m.as_ptr() as *const libc::c_void,
            m.len(),
            0,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    for _ in 0..16 {
        // SAFETY: `buf` is writable for its length for the call's duration.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < 16 || len > rest.len() {
                break;
            }
            if ty == libc::NLMSG_ERROR as u16 && mseq == seq && len >= 20 {
                let err = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                return if err == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-err))
                };
            }
            let step = ((len + 3) & !3).min(rest.len());
            rest = &rest[step..];
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no netlink acknowledgement for RTM_SETLINK",
    ))
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Replace the program of the bpf link `link` by `prog` (BPF_LINK_UPDATE): the
/// kernel swaps them atomically; every frame runs one or the other.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..LinkUpdateAttr::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut a).map(drop)
}

/// Attach `prog` to `ifindex` the old way (netlink, `mode`). Such an attachment
/// survives the process; prefer [`Attachment::attach`].
pub fn netlink_attach(ifindex: u32, prog: BorrowedFd<'_>, mode: XdpMode) -> io::Result<()> {
    netlink_set_xdp(ifindex, Some(prog), mode.flags())
}

/// Remove a netlink-attached XDP program from `ifindex`, in both modes: one a
/// killed earlier run left behind. A program held by a live bpf link (another
/// running process) is left alone: the kernel refuses to remove it (EBUSY), and
/// this returns that error.
pub fn detach_stale(ifindex: u32) -> io::Result<()> {
    let skb = netlink_set_xdp(ifindex, None, XDP_FLAGS_SKB_MODE);
    let drv = netlink_set_xdp(ifindex, None, XDP_FLAGS_DRV_MODE);
    skb.and(drv)
}

#[derive(Debug)]
enum How {
    /// A bpf link: detached when this descriptor closes.
    Link(OwnedFd),
    /// Netlink: detached by [`Drop`].
    Netlink,
}

/// An XDP program attached to an interface; detached on drop.
#[derive(Debug)]
pub struct Attachment {
    ifindex: u32,
    mode: XdpMode,
    how: How,
}

impl Attachment {
    /// Attach `prog` to `ifindex`: by bpf link, native mode then generic; else by
    /// netlink, native then generic. The error is the last one met.
    pub fn attach(ifindex: u32, prog: &RedirectProgram) -> io::Result<Attachment> {
        Self::attach_fd(ifindex, prog.as_fd())
    }

    /// [`Attachment::attach`] for any loaded XDP program, given by its descriptor
    /// (the traffic generator's counter and reflector use it).
    pub fn attach_fd(ifindex: u32, prog: BorrowedFd<'_>) -> io::Result<Attachment> {
        let mut last = None;
        for mode in [XdpMode::Driver, XdpMode::Generic] {
            match link_create(ifindex, prog, BPF_XDP, mode.flags()) {
                Ok(fd) => {
                    return Ok(Attachment {
                        ifindex,
                        mode,
                        how: How::Link(fd),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        for mode in [XdpMode::Driver, XdpMode::Generic] {
            match netlink_attach(ifindex, prog, mode) {
                Ok(()) => {
                    return Ok(Attachment {
                        ifindex,
                        mode,
                        how: How::Netlink,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("XDP attach failed")))
    }

    /// Put `prog` in place of the attached program, atomically: a link is
    /// updated (BPF_LINK_UPDATE); a netlink attachment is set again in its
    /// mode, which the kernel also does in one step.
    pub fn replace(&self, prog: BorrowedFd<'_>) -> io::Result<()> {
        match &self.how {
            How::Link(fd) => link_update(fd.as_fd(), prog),
            How::Netlink => netlink_attach(self.ifindex, prog, self.mode),
        }
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether the attachment is a bpf link (detached by the kernel even if the
    /// process is killed).
    pub fn is_link(&self) -> bool {
        matches!(self.how, How::Link(_))
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let How::Netlink = self.how {
            let _ = netlink_set_xdp(self.ifindex, None, self.mode.flags());
        }
    }
}

/// Everything that steers one interface's receive queues into AF_XDP sockets:
/// the map, the program, its attachment. Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpRedirect {
    // Field order is drop order: detach first, then close programs and map.
    attachment: Attachment,
    /// A program put in place of the redirect program ([`XdpRedirect::install`]).
    installed: Option<OwnedFd>,
    program: RedirectProgram,
    map: XskMap,
}

impl XdpRedirect {
    /// Remove a stale program left on `ifindex` by an earlier run, then load and
    /// attach the redirect program for queues `0..queues`. Until a socket is
    /// inserted for a queue, that queue's frames go to the kernel.
    pub fn attach(ifindex: u32, queues: u32) -> io::Result<XdpRedirect> {
        // A failure here (EBUSY: a live link of another process) shows up as the
        // attach error below, which is the more useful one to report.
        let _ = detach_stale(ifindex);
        let map = XskMap::new(queues)?;
        let program = RedirectProgram::load(&map)?;
        let attachment = Attachment::attach(ifindex, &program)?;
        Ok(XdpRedirect {
            attachment,
            installed: None,
            program,
            map,
        })
    }

    /// The map of queue to AF_XDP socket that the redirect program reads; a
    /// program installed in its place ([`XdpRedirect::install`]) redirects
    /// through it too.
    pub fn xsk_map(&self) -> &XskMap {
        &self.map
    }

    /// Put `prog` (loaded with [`XdpRedirect::xsk_map`] among its maps) in
    /// place of the running program, atomically, and keep it; the program it
    /// replaces is closed once replaced. `None` puts the plain redirect program
    /// back.
    pub fn install(&mut self, prog: Option<OwnedFd>) -> io::Result<()> {
        let fd = match &prog {
            Some(p) => p.as_fd(),
            None => self.program.as_fd(),
        };
        self.attachment.replace(fd)?;
        self.installed = prog;
        Ok(())
    }

    /// Whether a program other than the redirect program runs.
    pub fn has_installed(&self) -> bool {
        self.installed.is_some()
    }

    /// Redirect queue `queue` to the AF_XDP socket `sock`.
    pub fn insert(&self, queue: u32, sock: BorrowedFd<'_>) -> io::Result<()> {
        self.map.insert(queue, sock)
    }

    /// Stop redirecting queue `queue`.
    pub fn remove(&self, queue: u32) -> io::Result<()> {
        self.map.remove(queue)
    }

    /// The attachment (mode, link or netlink).
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    /// The loaded program.
    pub fn program(&self) -> &RedirectProgram {
        &self.program
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encoding() {
        let p = redirect_program(7).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x61, 0x12, 16));
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!((p[3].code, p[3].regs, p[3].imm), (0xb7, 0x03, 2));
        assert_eq!((p[4].code, p[4].imm), (0x85, 51));
        assert_eq!(p[5].code, 0x95);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        // `union bpf_attr`'s `test` member and `struct xdp_md`, as the kernel
        // lays them out.
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<XdpMd>(), 24);
    }

    /// Every entry of a hash map once, in batches; an early stop; not an
    /// array. Needs root (CAP_BPF).
    #[test]
    fn a_hash_map_read_whole() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            lbp_lab::testing::skip(
                "ring::bpf::tests::a_hash_map_read_whole",
                "needs root (CAP_BPF)",
            );
            return;
        }
        for kind in [MapKind::Hash, MapKind::LruHash] {
            let spec = |kind, max_entries| MapSpec {
                name: "lbp_test".into(),
                kind,
                key_size: 8,
                value_size: 4,
                max_entries,
                entries: Vec::new(),
            };
            let m = LoadedMap::create(&spec(kind, 8192)).unwrap();
            let n = 5000u64;
            for k in 0..n {
                map_update_bytes(&m, &k.to_ne_bytes(), &((k * 3) as u32).to_ne_bytes()).unwrap();
            }
            let mut seen = vec![0u32; n as usize];
            map_for_each(&m, |k, v| {
                let k = u64::from_ne_bytes(k.try_into().unwrap());
                assert_eq!(u32::from_ne_bytes(v.try_into().unwrap()), (k * 3) as u32);
                seen[k as usize] += 1;
                true
            })
            .unwrap();
            assert!(seen.iter().all(|&c| c == 1), "{kind:?}");
            let mut calls = 0;
            map_for_each(&m, |_, _| {
                calls += 1;
                calls < 10
            })
            .unwrap();
            assert_eq!(calls, 10);
            let empty = LoadedMap::create(&spec(kind, 16)).unwrap();
            map_for_each(&empty, |_, _| panic!("an entry in an empty map")).unwrap();
        }
        // An array: every index, in order.
        let array_of = |kind| {
            LoadedMap::create(&MapSpec {
                name: "lbp_test".into(),
                kind,
                key_size: 4,
                value_size: 4,
                max_entries: 3000,
                entries: Vec::new(),
            })
            .unwrap()
        };
        let array = array_of(MapKind::Array);
        map_update_bytes(&array, &2999u32.to_ne_bytes(), &7u32.to_ne_bytes()).unwrap();
        let mut keys = Vec::new();
        map_for_each(&array, |k, v| {
            let k = u32::from_ne_bytes(k.try_into().unwrap());
            let v = u32::from_ne_bytes(v.try_into().unwrap());
            assert_eq!(v, if k == 2999 { 7 } else { 0 });
            keys.push(k);
            true
        })
        .unwrap();
        assert_eq!(keys, (0..3000).collect::<Vec<_>>());
        assert!(map_for_each(&array_of(MapKind::PercpuArray), |_, _| true).is_err());
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(ifindex("lbp-no-such-if0").is_err());
        assert!(ifindex("a\0b").is_err());
    }
}
