//! Balancing in XDP: the active generation's tables as the fast path's
//! program reads them (`lbp_abi::bpf::fast`'s `BAL_*` maps).
//!
//! XDP balances the services of `balance maglev` or `hash` (a table the
//! program can read), direct server return or NAT. A NAT flow's replies come
//! back through the appliance and are the cores' to translate: the program
//! leaves a reply record in the flows map (keyed as the replies, naming the
//! virtual IP and port), and a core that meets a reply of no connection it
//! knows takes the flow into its own table from there. Per such service the generation's Maglev table
//! (the very table the cores read, so a flow lands on the same back end by
//! either path), and per back end the next hop as the cores would send to it
//! (route, neighbour, interface MAC) and whether it may be used: established
//! flows need a usable neighbour, new ones a confirmed one, since only the
//! cores re-confirm a stale neighbour. A back end in maintenance does not
//! serve: its flows leave it as on the cores.
//!
//! [`Tables`] is computed from a [`Generation`] and the neighbour table
//! ([`tables`]); `FastPath::publish_balance` writes it into the buffer the
//! program does not read and flips the active one.

use std::net::IpAddr;

use std::mem::offset_of;

use lbp_abi::bpf::fast::{self, BalBackend, BalService};

use super::bpf::{LoadedMap, map_for_each, map_lookup_bytes, map_update_bytes};

const _: () = assert!(size_of::<fast::FlowKey>() == 40 && size_of::<fast::Flow>() == 24);

use crate::balance::{MAGLEV_DEFAULT_SIZE, MAGLEV_SLOTS_PER_BACKEND, next_prime};
use crate::config::{Algorithm, Appliance, Mode, Service};
use crate::generation::Generation;
use crate::neigh::{NeighAddr, NeighState, NeighTable};
use crate::switch::{bytes_of, route_lookup};

/// A policy interface as the program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Out {
    /// Its OS index.
    pub ifindex: u32,
    /// Whether the program may transmit on it (`XDP_TX` or a redirect).
    pub tx: bool,
}

/// The room one buffer of the tables takes, fixed for a compiled policy
/// (its pools do not change until the next reload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub services: u32,
    /// Maglev entries: each balanced service's largest table.
    pub maglev: u32,
    pub backends: u32,
    /// The first back-end counter slot (after the rules').
    pub counters: u32,
}

impl Sizes {
    /// The room for `app`'s tables.
    pub fn of(app: &Appliance) -> Sizes {
        let mut s = Sizes {
            services: app.services.len() as u32,
            counters: fast::slots(app.rules.len()),
            ..Sizes::default()
        };
        for svc in &app.services {
            s.backends += svc.backends.len() as u32;
            if balanced_here(svc) {
                s.maglev += largest_table(svc.backends.len()) as u32;
            }
        }
        s
    }
}

/// Whether XDP balances `svc`: a Maglev table (DSR or NAT).
pub fn balanced_here(svc: &Service) -> bool {
    matches!(svc.algorithm, Algorithm::Maglev | Algorithm::Hash)
}

/// The largest Maglev table of a pool of `n` back ends (the runtime's
/// `Maglev::new` sizes it by the live ones, at most `n`).
fn largest_table(n: usize) -> usize {
    next_prime(MAGLEV_DEFAULT_SIZE.max(n.saturating_mul(MAGLEV_SLOTS_PER_BACKEND)))
}

/// One buffer's contents: indexes relative to the buffer's start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub services: Vec<BalService>,
    pub maglev: Vec<u32>,
    pub backends: Vec<BalBackend>,
    /// (service, back-end address, index in the service) of the back ends
    /// that serve a service balanced here.
    pub serving: Vec<(u32, [u8; 16], u32)>,
}

/// The flows map's key of a frame with fields `f`
/// (`lbp_abi::bpf::fast::FlowKey`, as the program builds it).
pub fn flow_key(f: &lbp_abi::Fields) -> [u8; 40] {
    conn_flow_key(&crate::conn::ConnKey::of_client(f))
}

/// The flows map's key of connection `k` (as [`flow_key`] of its client's
/// frames).
fn conn_flow_key(k: &crate::conn::ConnKey) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(&k.client);
    key[16..32].copy_from_slice(&k.vip);
    key[32..34].copy_from_slice(&k.client_port.to_ne_bytes());
    key[34..36].copy_from_slice(&k.vport.to_ne_bytes());
    key[36] = k.version;
    key[37] = k.proto;
    key
}

/// The connection a flows map's key names ([`conn_flow_key`]'s inverse).
fn conn_key_of(key: &[u8]) -> crate::conn::ConnKey {
    let mut k = crate::conn::ConnKey::default();
    k.client.copy_from_slice(&key[..16]);
    k.vip.copy_from_slice(&key[16..32]);
    k.client_port = u16::from_ne_bytes([key[32], key[33]]);
    k.vport = u16::from_ne_bytes([key[34], key[35]]);
    k.version = key[36];
    k.proto = key[37];
    k
}

/// A flows map's value: the address, and whether it is a NAT flow's reply
/// record (the address is then the virtual IP, `Some` of its port) or a
/// flow's record (`None`: the address is the back end's).
fn parse_record(v: &[u8]) -> ([u8; 16], Option<u16>) {
    let mut a = [0u8; 16];
    a.copy_from_slice(&v[..16]);
    let word = |i: usize| u32::from_ne_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    let reply = word(16) == 0 && word(20) & fast::FLOW_REPLY != 0;
    (a, reply.then_some(word(20) as u16))
}

/// The flows map's hash key (its entry after the buckets).
pub fn flow_seed(flows: &LoadedMap) -> Option<u64> {
    let v = map_lookup_bytes(flows, &fast::FLOW_BUCKETS.to_ne_bytes()).ok()??;
    Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}

/// Bucket `b` of `flows`, as bytes.
fn bucket_of(flows: &LoadedMap, b: u32) -> Option<Vec<u8>> {
    map_lookup_bytes(flows, &b.to_ne_bytes()).ok()?
}

const TAGS: usize = offset_of!(fast::FlowBucket, tags);
const SEEN: usize = offset_of!(fast::FlowBucket, seen);
const SLOTS: usize = offset_of!(fast::FlowBucket, slots);
const SLOT: usize = size_of::<fast::FlowSlot>();
const FLOW: usize = offset_of!(fast::FlowSlot, flow);

fn word(v: &[u8], at: usize) -> u32 {
    v.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// Way `w` of bucket bytes `b`: its tag, time seen, key and value.
fn way(b: &[u8], w: usize) -> Option<(u32, u32, &[u8], &[u8])> {
    let slot = b.get(SLOTS + w * SLOT..SLOTS + (w + 1) * SLOT)?;
    Some((
        word(b, TAGS + 4 * w),
        word(b, SEEN + 4 * w),
        &slot[..FLOW],
        &slot[FLOW..],
    ))
}

/// Way `w`'s tag, key and value in bucket bytes `b`, if its tag is `tag`
/// and its key `key`.
fn way_of<'b>(b: &'b [u8], tag: u32, key: &[u8; 40]) -> Option<(usize, &'b [u8])> {
    (0..fast::FLOW_WAYS).find_map(|w| {
        let (t, _, k, v) = way(b, w)?;
        (t == tag && k == key).then_some((w, v))
    })
}

/// `flows`' record of key `key` ([`parse_record`]), found as the program
/// finds it (`compiler::bpf::flows`). The kernel copies a bucket as it is,
/// so a record being rewritten meanwhile may be copied half old, half new:
/// the bucket is read again until two reads agree on the record (a record
/// rewritten between them changes its tag or its value), at most four times.
fn record_of(flows: &LoadedMap, key: &[u8; 40]) -> Option<([u8; 16], Option<u16>)> {
    let (b, tag) = fast::flow_place(fast::flow_hash(flow_seed(flows)?, key));
    let mut last = bucket_of(flows, b)?;
    for _ in 0..3 {
        let now = bucket_of(flows, b)?;
        let (a, c) = (way_of(&last, tag, key), way_of(&now, tag, key));
        match (a, c) {
            (None, None) if !busy(&last) && !busy(&now) => return None,
            (Some(a), Some(c)) if a == c => return Some(parse_record(a.1)),
            _ => {}
        }
        last = now;
    }
    None
}

/// Whether bucket bytes `b` have a way being written.
fn busy(b: &[u8]) -> bool {
    (0..fast::FLOW_WAYS).any(|w| word(b, TAGS + 4 * w) == fast::FLOW_BUSY)
}

/// Bucket `b` of `flows` with no way being written (at most 100 reads, a
/// millisecond apart after the first), for a read-modify-write of the whole
/// bucket.
fn quiet_bucket(flows: &LoadedMap, b: u32) -> std::io::Result<Vec<u8>> {
    for i in 0..100 {
        if let Some(v) = bucket_of(flows, b).filter(|v| !busy(v)) {
            return Ok(v);
        }
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::WouldBlock,
        "a flows map bucket being written throughout",
    ))
}

fn unreadable() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "the flows map unreadable")
}

/// Forget `key`'s record in `flows` (false when it had none). For tests and
/// tools, as [`set_record`].
pub fn forget_record(flows: &LoadedMap, key: &[u8; 40]) -> std::io::Result<bool> {
    let seed = flow_seed(flows).ok_or_else(unreadable)?;
    let (b, tag) = fast::flow_place(fast::flow_hash(seed, key));
    let mut bucket = quiet_bucket(flows, b)?;
    let Some((w, _)) = way_of(&bucket, tag, key) else {
        return Ok(false);
    };
    bucket[TAGS + 4 * w..TAGS + 4 * w + 4].fill(0);
    bucket[SEEN + 4 * w..SEEN + 4 * w + 4].fill(0);
    map_update_bytes(flows, &b.to_ne_bytes(), &bucket)?;
    Ok(true)
}

/// The bucket of `flows` that holds key `key`'s record (when it has one).
pub fn flow_bucket(flows: &LoadedMap, key: &[u8; 40]) -> Option<u32> {
    Some(fast::flow_place(fast::flow_hash(flow_seed(flows)?, key)).0)
}

/// Record `flow` for `key` in `flows` as the program records it (its way,
/// else an empty way or the way seen longest ago), seen at `seen`
/// ([`fast::FlowBucket::seen`]'s unit). For tests and tools: the bucket is
/// read (when no way of it is being written) and written whole, so a record
/// the program makes in it in between is lost.
pub fn set_record(
    flows: &LoadedMap,
    key: &[u8; 40],
    flow: &fast::Flow,
    seen: u32,
) -> std::io::Result<()> {
    let seed = flow_seed(flows).ok_or_else(unreadable)?;
    let (b, tag) = fast::flow_place(fast::flow_hash(seed, key));
    let mut bucket = quiet_bucket(flows, b)?;
    let w = match way_of(&bucket, tag, key) {
        Some((w, _)) => w,
        None => (0..fast::FLOW_WAYS)
            .min_by_key(|&w| word(&bucket, SEEN + 4 * w))
            .unwrap_or(0),
    };
    let slot = SLOTS + w * SLOT;
    bucket[slot..slot + FLOW].copy_from_slice(key);
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&flow.backend);
    v.extend_from_slice(&flow.stamp.to_ne_bytes());
    v.extend_from_slice(&flow.index.to_ne_bytes());
    bucket[slot + FLOW..slot + SLOT].copy_from_slice(&v);
    bucket[SEEN + 4 * w..SEEN + 4 * w + 4].copy_from_slice(&seen.to_ne_bytes());
    bucket[TAGS + 4 * w..TAGS + 4 * w + 4].copy_from_slice(&tag.to_ne_bytes());
    map_update_bytes(flows, &b.to_ne_bytes(), &bucket)
}

/// Now in [`fast::FlowBucket::seen`]'s unit: the coarse monotonic clock's
/// nanoseconds over 2^30, as the program reads it.
pub fn flow_clock() -> u32 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is ours.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    ((t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64) >> 30) as u32
}

/// The back end (its address, the `Fields` form) XDP gives the client's
/// frames of connection `k`, if `flows` records the flow.
pub fn xdp_backend(flows: &LoadedMap, k: &crate::conn::ConnKey) -> Option<[u8; 16]> {
    match record_of(flows, &conn_flow_key(k))? {
        (addr, None) => Some(addr),
        (_, Some(_)) => None,
    }
}

/// The back end (its address, the `Fields` form) the flow of `f` was given
/// in XDP, if `flows` holds it.
pub fn xdp_flow(flows: &LoadedMap, f: &lbp_abi::Fields) -> Option<[u8; 16]> {
    xdp_backend(flows, &crate::conn::ConnKey::of_client(f))
}

/// A flow XDP balanced, as its record in the flows map says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpFlow {
    /// Its key, as the cores' connection table keys a connection.
    pub key: crate::conn::ConnKey,
    /// Its back end's address (the `Fields` form).
    pub backend: [u8; 16],
    /// When it was last seen ([`flow_clock`]'s unit).
    pub seen: u32,
}

/// Every flow `flows` records (not the NAT flows' reply records), until
/// `each` says false.
pub fn xdp_flows_each(
    flows: &LoadedMap,
    mut each: impl FnMut(XdpFlow) -> bool,
) -> std::io::Result<()> {
    let seed = flow_seed(flows).ok_or_else(unreadable)?;
    map_for_each(flows, |b, bucket| {
        if word(b, 0) >= fast::FLOW_BUCKETS {
            return true;
        }
        (0..fast::FLOW_WAYS).all(|w| {
            let Some((tag, seen, k, v)) = way(bucket, w) else {
                return true;
            };
            let Ok(key) = <[u8; 40]>::try_from(k) else {
                return true;
            };
            // A way being written, or empty, or torn (its tag not its key's).
            if tag & 1 == 0 || fast::flow_place(fast::flow_hash(seed, &key)).1 != tag {
                return true;
            }
            match parse_record(v) {
                (backend, None) => each(XdpFlow {
                    key: conn_key_of(k),
                    backend,
                    seen,
                }),
                (_, Some(_)) => true,
            }
        })
    })
}

/// For a reply `f` of a NAT flow balanced in XDP (back end to client): the
/// flow's virtual IP (the `Fields` form) and port, from its reply record.
pub fn xdp_reply(flows: &LoadedMap, f: &lbp_abi::Fields) -> Option<([u8; 16], u16)> {
    match record_of(flows, &flow_key(f))? {
        (vip, Some(port)) => Some((vip, port)),
        (_, None) => None,
    }
}

/// The tables of generation `g` at time `now` (the neighbour table's clock);
/// `outs[i]`: policy interface `i`, where the program runs.
pub fn tables(
    g: &Generation,
    neigh: &NeighTable,
    outs: &[Option<Out>],
    now: u64,
    sizes: &Sizes,
) -> Tables {
    tables_with(g, backends(g, neigh, outs, now), sizes)
}

/// Whether service `s` of `g` is balanced in XDP (its Maglev table).
fn here(g: &Generation, s: usize) -> bool {
    let maglev = g.services.get(s).and_then(|x| x.maglev.as_ref());
    g.appliance
        .services
        .get(s)
        .is_some_and(|svc| balanced_here(svc) && maglev.is_some())
}

/// Every service's back ends in pool order, with the next hop of those of
/// services balanced in XDP: the part of the tables that follows the
/// neighbours (cheap: one route and neighbour lookup per back end).
pub fn backends(
    g: &Generation,
    neigh: &NeighTable,
    outs: &[Option<Out>],
    now: u64,
) -> Vec<BalBackend> {
    let mut v = Vec::new();
    for (s, svc) in g.appliance.services.iter().enumerate() {
        let here = here(g, s);
        for be in &svc.backends {
            let mut bb = BalBackend {
                addr: bytes_of(be.addr),
                // NAT: 0 keeps the packet's port.
                port: svc.backend_port(be, 0),
                ..BalBackend::default()
            };
            if here
                && let Some((dst, src, ifindex, confirmed)) = next_hop(g, neigh, outs, be.addr, now)
            {
                bb.dst_mac = dst;
                bb.src_mac = src;
                bb.ifindex = ifindex;
                bb.flags = fast::BACKEND_READY | if confirmed { fast::BACKEND_NEW } else { 0 };
            }
            v.push(bb);
        }
    }
    v
}

/// The tables of `g` with its back ends' entries `backends` ([`backends`]).
pub fn tables_with(g: &Generation, backends: Vec<BalBackend>, sizes: &Sizes) -> Tables {
    let mut t = Tables {
        backends,
        ..Tables::default()
    };
    let mut base = 0u32;
    for (s, svc) in g.appliance.services.iter().enumerate() {
        let mut entry = BalService {
            flags: 0,
            maglev_base: t.maglev.len() as u32,
            maglev_len: 0,
            backend_base: base,
            counters: sizes.counters + 2 * base,
            // Set at publication.
            stamp: 0,
        };
        let tables = g.services.get(s);
        if here(g, s)
            && let Some(m) = tables.and_then(|x| x.maglev.as_ref())
        {
            entry.flags = fast::SVC_XDP
                | if matches!(svc.mode, Mode::Nat { .. }) {
                    fast::SVC_NAT
                } else {
                    0
                };
            entry.maglev_len = m.size() as u32;
            t.maglev.extend_from_slice(m.table());
            for (b, be) in svc.backends.iter().enumerate() {
                let closed = tables
                    .and_then(|x| x.closed.get(b))
                    .copied()
                    .unwrap_or(false);
                // A pool that names an address twice: the first serves, as
                // the cores' `still_serves` finds the first.
                let addr = bytes_of(be.addr);
                let first = svc.backends.iter().position(|x| x.addr == be.addr) == Some(b);
                if !closed && first {
                    t.serving.push((s as u32, addr, b as u32));
                }
            }
        }
        base += svc.backends.len() as u32;
        t.services.push(entry);
    }
    t
}

/// How the cores would send to `addr`: (next hop's MAC, interface's MAC,
/// OS interface index, whether the neighbour is confirmed), where the
/// program may send there itself.
fn next_hop(
    g: &Generation,
    neigh: &NeighTable,
    outs: &[Option<Out>],
    addr: IpAddr,
    now: u64,
) -> Option<([u8; 6], [u8; 6], u32, bool)> {
    let app = &g.appliance;
    if crate::switch::martian(&app.interfaces, addr) {
        return None;
    }
    let r = &app.routes[route_lookup(&app.routes, addr)?];
    let out = outs.get(r.dev as usize).copied().flatten()?;
    if !out.tx {
        return None;
    }
    let iface = app.interfaces.get(r.dev as usize)?;
    let n = neigh.lookup(&NeighAddr::from(r.via.unwrap_or(addr)), now)?;
    let confirmed = matches!(n.state, NeighState::Reachable | NeighState::Permanent);
    Some((n.mac, iface.mac, out.ifindex, confirmed))
}
