//! Generations: everything a switching core reads that the control core may
//! replace (the compiled policy, the appliance's configuration, each service's
//! weights and Maglev table), and [`Published`], through which the control core
//! hands a new generation to the cores and frees the old one once no core can
//! still be reading it: one active pointer with epoch-based reclamation, which
//! gives the design's double buffering (fill the inactive generation off to the
//! side, flip the pointer, free the old one when every core moved past it).
//!
//! A [`Generation`] is immutable once published. Per-core mutable state (round
//! robin positions, counters) is not here but in the core's own state, rebuilt
//! when the core sees a new generation; state shared by the cores that outlives
//! generations (the connection and neighbour tables, loads) is not here either.
//!
//! Publication is epoch based, written by hand with atomics (no new crate):
//! [`Published`] holds the active generation's pointer, a global epoch, and one
//! "epoch seen" word per registered core. A core calls [`Reader::enter`] once per
//! burst: it announces the current epoch, then loads the pointer, and may use the
//! generation until its next `enter`. [`Published::publish`] swaps the pointer,
//! then advances the epoch to `e`, and retires the old generation tagged `e`;
//! [`Published::reclaim`] frees every retired generation whose tag is at most
//! the smallest epoch any registered core has announced. Why that is safe: a core
//! that announced an epoch `>= e` read it after the swap (every access is
//! `SeqCst`), so its following pointer load saw the new generation or a later
//! one; a core whose announcement is older keeps every generation retired since
//! alive. A core that stops entering therefore holds back reclamation (memory
//! grows by one generation per publish until it enters again); an unregistered
//! (dropped) [`Reader`] holds back nothing.
//!
//! It is not a general RCU: readers are a fixed set of slots chosen at
//! construction, and the control core calls `reclaim` itself (no background
//! thread, no deferred callbacks).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lbp_abi::{Decision, Fields};

use crate::balance::Loads;
use crate::balance::{MAGLEV_DEFAULT_SIZE, Maglev};
use crate::config::{Algorithm, Appliance, Mode};

/// The source of [`Generation::serial`].
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// A compiled policy as a switching core calls it. The `lbp` binary implements
/// it for the JIT; any `Fn(&Fields) -> Decision` is one too (tests).
pub trait Decide {
    fn decide(&self, f: &Fields) -> Decision;
}

impl<F: Fn(&Fields) -> Decision> Decide for F {
    fn decide(&self, f: &Fields) -> Decision {
        self(f)
    }
}

/// One service's tables in a generation.
#[derive(Debug, Clone)]
pub struct ServiceTables {
    /// The weight of each back end (index as in the service's `backends`).
    pub weights: Vec<u32>,
    /// The Maglev table (for `Maglev` and `Hash` services; `None` otherwise).
    pub maglev: Option<Maglev>,
    /// Back ends in maintenance: their established connections are reset on
    /// their next packet (weight 0 keeps new ones away).
    pub closed: Vec<bool>,
}

/// Everything a switching core reads that the control core may replace.
pub struct Generation {
    /// Set by [`Published`] (0 for the first generation, then the epoch in which
    /// the generation was published); cores compare it to notice a change.
    pub id: u64,
    /// The compile this generation comes from: a new number for each
    /// [`Generation::new`] / [`Generation::with_weights`], kept by
    /// [`Generation::reweighted`]. Cores start their per-rule and per-back-end
    /// counters afresh when it changes.
    pub serial: u64,
    /// Shared by every generation made from one compile (a weight-only change
    /// publishes a new generation with the same policy); the compiled code is
    /// freed with the last of them.
    pub policy: Arc<dyn Decide + Send + Sync>,
    pub appliance: Appliance,
    /// One per service of `appliance`, same index.
    pub services: Vec<ServiceTables>,
    /// Every service's virtual IPs, deduplicated (ARP / ND answers, ICMP errors).
    pub vips: Vec<IpAddr>,
    /// The addresses of the back ends of NAT services, sorted and deduplicated:
    /// only packets from these are looked up as NAT return traffic.
    pub nat_backends: Vec<IpAddr>,
    /// The loads of least-load services' back ends, sized for this
    /// generation's pools; shared by the generations of one compile.
    pub loads: Arc<Loads>,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("appliance", &self.appliance)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// The key a back end's Maglev preference list is derived from: its address and
/// port, so that it stays the same across weight changes and reorderings.
pub fn backend_key(addr: IpAddr, port: Option<u16>) -> u64 {
    let mut b = [0u8; 19];
    match addr {
        IpAddr::V4(a) => b[..16].copy_from_slice(&a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => b[..16].copy_from_slice(&a.octets()),
    }
    if let Some(p) = port {
        b[16..18].copy_from_slice(&p.to_be_bytes());
        b[18] = 1;
    }
    crate::balance::seeded_hash(&b, 0x6c62_705f_6d61_676c)
}

impl Generation {
    /// A generation with the back ends' configured weights.
    pub fn new(policy: Arc<dyn Decide + Send + Sync>, appliance: Appliance) -> Generation {
        let weights: Vec<Vec<u32>> = appliance
            .services
            .iter()
            .map(|s| s.backends.iter().map(|b| b.weight).collect())
            .collect();
        Generation::with_weights(policy, appliance, &weights)
    }

    /// A generation with the given weights (`weights[s][b]` for back end `b` of
    /// service `s`; a missing entry keeps the configured weight). Builds the
    /// Maglev tables: this allocates and takes milliseconds, so it runs on the
    /// control core, never on a switching core.
    pub fn with_weights(
        policy: Arc<dyn Decide + Send + Sync>,
        appliance: Appliance,
        weights: &[Vec<u32>],
    ) -> Generation {
        let most = appliance
            .services
            .iter()
            .map(|s| s.backends.len())
            .max()
            .unwrap_or(0);
        let loads = Arc::new(Loads::new(appliance.services.len(), most));
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        Generation::build(policy, appliance, weights, &[], loads, serial)
    }

    /// The same compiled policy and configuration with other weights and back
    /// ends in maintenance (`closed[s][b]`; a missing entry is not closed): what
    /// the control core publishes when only the weights change. Shares the
    /// policy, the loads and the serial; builds new Maglev tables.
    pub fn reweighted(&self, weights: &[Vec<u32>], closed: &[Vec<bool>]) -> Generation {
        Generation::build(
            Arc::clone(&self.policy),
            self.appliance.clone(),
            weights,
            closed,
            Arc::clone(&self.loads),
            self.serial,
        )
    }

    /// This generation with the back ends `closed[s][b]` in maintenance.
    pub fn closing(mut self, closed: &[Vec<bool>]) -> Generation {
        for (s, t) in self.services.iter_mut().enumerate() {
            for (b, c) in t.closed.iter_mut().enumerate() {
                *c = closed
                    .get(s)
                    .and_then(|v| v.get(b))
                    .copied()
                    .unwrap_or(false);
            }
        }
        self
    }

    fn build(
        policy: Arc<dyn Decide + Send + Sync>,
        appliance: Appliance,
        weights: &[Vec<u32>],
        closed: &[Vec<bool>],
        loads: Arc<Loads>,
        serial: u64,
    ) -> Generation {
        let services = appliance
            .services
            .iter()
            .enumerate()
            .map(|(s, svc)| {
                let w: Vec<u32> = svc
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(b, be)| {
                        weights
                            .get(s)
                            .and_then(|ws| ws.get(b))
                            .copied()
                            .unwrap_or(be.weight)
                    })
                    .collect();
                let maglev = match svc.algorithm {
                    Algorithm::Maglev | Algorithm::Hash => {
                        let keyed: Vec<(u64, u32)> = svc
                            .backends
                            .iter()
                            .zip(&w)
                            .map(|(be, &w)| (backend_key(be.addr, be.port), w))
                            .collect();
                        Some(Maglev::new(&keyed, MAGLEV_DEFAULT_SIZE))
                    }
                    Algorithm::RoundRobin | Algorithm::LeastLoad => None,
                };
                let closed = (0..svc.backends.len())
                    .map(|b| {
                        closed
                            .get(s)
                            .and_then(|v| v.get(b))
                            .copied()
                            .unwrap_or(false)
                    })
                    .collect();
                ServiceTables {
                    weights: w,
                    maglev,
                    closed,
                }
            })
            .collect();
        let mut vips: Vec<IpAddr> = appliance
            .services
            .iter()
            .flat_map(|s| s.vips.iter().copied())
            .collect();
        vips.sort();
        vips.dedup();
        let mut nat_backends: Vec<IpAddr> = appliance
            .services
            .iter()
            .filter(|s| matches!(s.mode, Mode::Nat { .. }))
            .flat_map(|s| s.backends.iter().map(|b| b.addr))
            .collect();
        nat_backends.sort();
        nat_backends.dedup();
        Generation {
            id: 0,
            serial,
            policy,
            appliance,
            services,
            vips,
            nat_backends,
            loads,
        }
    }

    /// Whether `a` is one of the services' virtual IPs.
    pub fn is_vip(&self, a: &IpAddr) -> bool {
        self.vips.binary_search(a).is_ok()
    }

    /// Whether `a` is the address of a NAT service's back end.
    pub fn is_nat_backend(&self, a: &IpAddr) -> bool {
        self.nat_backends.binary_search(a).is_ok()
    }
}

/// A core's announced epoch when it is not registered.
const IDLE: u64 = u64::MAX;

/// One core's announcement, alone on its cache line.
#[repr(align(128))]
#[derive(Debug)]
struct Slot {
    seen: AtomicU64,
    claimed: AtomicBool,
}

/// The active generation and the machinery that retires old ones. See the module
/// documentation.
pub struct Published {
    active: AtomicPtr<Generation>,
    epoch: AtomicU64,
    slots: Box<[Slot]>,
    /// Retired generations with the epoch they were retired in. Also serializes
    /// publishers.
    retired: Mutex<Vec<(u64, Box<Generation>)>>,
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Published")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .field("readers", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Published {
    /// Publish `first` (its `id` becomes 0), with room for `max_readers` cores.
    pub fn new(mut first: Generation, max_readers: usize) -> Published {
        first.id = 0;
        Published {
            active: AtomicPtr::new(Box::into_raw(Box::new(first))),
            epoch: AtomicU64::new(0),
            slots: (0..max_readers.max(1))
                .map(|_| Slot {
                    seen: AtomicU64::new(IDLE),
                    claimed: AtomicBool::new(false),
                })
                .collect(),
            retired: Mutex::new(Vec::new()),
        }
    }

    fn retired(&self) -> MutexGuard<'_, Vec<(u64, Box<Generation>)>> {
        // Every update under the lock is a push or a retain, which leave the
        // list whole even if a drop panicked midway: ignore poison.
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a switching core; `None` when every slot is taken.
    pub fn register(self: &Arc<Self>) -> Option<Reader> {
        let index = self.slots.iter().position(|s| {
            s.claimed
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        let slot = &self.slots[index];
        // Leaving IDLE: a reclaim that read IDLE may free whatever was retired
        // before our announcement becomes visible, so announce, then check that
        // the epoch did not move meanwhile (if it did, announce again). Each
        // retry means a publish happened; publishes are rare.
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            slot.seen.store(e, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == e {
                break;
            }
        }
        Some(Reader {
            published: Arc::clone(self),
            index,
        })
    }

    /// Make `g` the active generation (its `id` set to the new epoch) and retire
    /// the previous one. Returns the new id. Call [`Published::reclaim`] to free
    /// retired generations.
    pub fn publish(&self, mut g: Generation) -> u64 {
        let mut retired = self.retired();
        let id = self.epoch.load(Ordering::SeqCst) + 1;
        g.id = id;
        let new = Box::into_raw(Box::new(g));
        let old = self.active.swap(new, Ordering::SeqCst);
        let e = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert_eq!(e, id);
        // SAFETY: `old` came from `Box::into_raw` (in `new` or an earlier
        // `publish`) and the swap removed it from `active`, so this is the only
        // place that owns it now; readers may still use it, which is why it is
        // only dropped by `reclaim` once no reader can.
        retired.push((e, unsafe { Box::from_raw(old) }));
        id
    }

    /// Free every retired generation no registered core can still be using.
    /// Returns how many were freed.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.retired();
        let min = self
            .slots
            .iter()
            .map(|s| s.seen.load(Ordering::SeqCst))
            .min()
            .unwrap_or(IDLE);
        let before = retired.len();
        retired.retain(|(e, _)| *e > min);
        before - retired.len()
    }

    /// Call `f` with the active generation. For the control core (the one
    /// publisher): the lock that serializes publishing and reclaiming is held
    /// meanwhile, so the generation cannot be retired and freed under `f`.
    pub fn with_active<R>(&self, f: impl FnOnce(&Generation) -> R) -> R {
        let _retired = self.retired();
        let g = self.active.load(Ordering::SeqCst);
        // SAFETY: `g` is the active generation; only `publish` (which retires
        // it) and `reclaim` (which frees retired ones) could end its life, and
        // both take the lock held here until `f` returns.
        f(unsafe { &*g })
    }

    /// Whether every registered core has entered a burst at epoch `id` or later
    /// (so none uses an older generation any more). Unregistered slots count as
    /// having moved on.
    pub fn all_at_least(&self, id: u64) -> bool {
        self.slots.iter().all(|s| {
            let seen = s.seen.load(Ordering::SeqCst);
            seen == IDLE || seen >= id
        })
    }

    /// Retired generations not yet freed.
    pub fn retired_len(&self) -> usize {
        self.retired().len()
    }

    /// The current epoch (the id of the active generation).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let p = *self.active.get_mut();
        // SAFETY: `p` came from `Box::into_raw` and is owned by `active`. No
        // reader exists any more (each holds an `Arc` of `self`), so nothing else
        // can reach it.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// One switching core's handle on [`Published`].
#[derive(Debug)]
pub struct Reader {
    published: Arc<Published>,
    index: usize,
}

impl Reader {
    /// Announce a new burst and return the active generation, valid until the
    /// next `enter` (the borrow of `self` enforces it).
    pub fn enter(&mut self) -> &Generation {
        let p = &*self.published;
        let e = p.epoch.load(Ordering::SeqCst);
        let slot = &p.slots[self.index];
        // The slot holds a real epoch (registration left IDLE), never above `e`:
        // announcing `e` cannot let anything be freed that we might load below.
        if slot.seen.load(Ordering::Relaxed) != e {
            slot.seen.store(e, Ordering::SeqCst);
        }
        let g = p.active.load(Ordering::SeqCst);
        // SAFETY: `g` was the active generation after our announcement of `e`
        // became visible; it is freed only by `reclaim` once every slot
        // announces an epoch at or above the one it was retired in, which is
        // above `e` (it was retired after our load), and our slot keeps `e`
        // until the next `enter`, which needs `&mut self` and so ends the
        // borrow returned here.
        unsafe { &*g }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let slot = &self.published.slots[self.index];
        slot.seen.store(IDLE, Ordering::SeqCst);
        slot.claimed.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Service};
    use std::sync::atomic::{AtomicU8, AtomicUsize};

    const LIVE: u8 = 1;
    const DROPPED: u8 = 2;

    /// A policy that records its own drop in a shared state table (indexed by
    /// its number), and panics if dropped twice.
    struct Tracked {
        n: usize,
        states: Arc<Vec<AtomicU8>>,
        drops: Arc<AtomicUsize>,
    }

    impl Decide for Tracked {
        fn decide(&self, _f: &Fields) -> Decision {
            Decision {
                target: self.n as u32,
                ..Decision::default()
            }
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            let was = self.states[self.n].swap(DROPPED, Ordering::SeqCst);
            assert_eq!(was, LIVE, "generation {} dropped twice", self.n);
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn generation(n: usize, states: &Arc<Vec<AtomicU8>>, drops: &Arc<AtomicUsize>) -> Generation {
        states[n].store(LIVE, Ordering::SeqCst);
        Generation::new(
            Arc::new(Tracked {
                n,
                states: Arc::clone(states),
                drops: Arc::clone(drops),
            }),
            Appliance::default(),
        )
    }

    #[test]
    fn readers_never_see_a_dropped_generation_and_each_is_dropped_once() {
        const GENERATIONS: usize = 400;
        let states: Arc<Vec<AtomicU8>> =
            Arc::new((0..=GENERATIONS).map(|_| AtomicU8::new(0)).collect());
        let drops = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(Published::new(generation(0, &states, &drops), 4));
        let done = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 0..3 {
                let mut r = published.register().expect("a free slot");
                let states = Arc::clone(&states);
                let done = Arc::clone(&done);
                handles.push(s.spawn(move || {
                    let mut bursts = 0u64;
                    let mut last = 0u64;
                    // Bounded: stops when the writer is done, or after 10 s.
                    let start = std::time::Instant::now();
                    while !done.load(Ordering::SeqCst) && start.elapsed().as_secs() < 10 {
                        let g = r.enter();
                        assert!(g.id >= last, "generations go forward");
                        last = g.id;
                        let n = g.policy.decide(&Fields::default()).target as usize;
                        // The generation stays live for the whole burst.
                        for _ in 0..50 {
                            assert_eq!(states[n].load(Ordering::SeqCst), LIVE, "gen {n}");
                            std::hint::spin_loop();
                        }
                        bursts += 1;
                    }
                    bursts
                }));
            }
            for n in 1..=GENERATIONS {
                published.publish(generation(n, &states, &drops));
                if n % 3 == 0 {
                    published.reclaim();
                }
                if n % 50 == 0 {
                    std::thread::yield_now();
                }
            }
            // Memory stays bounded while readers run: once each has passed one
            // more burst, everything retired goes (bounded wait: 5 s).
            let start = std::time::Instant::now();
            while published.retired_len() > 0 && start.elapsed().as_secs() < 5 {
                std::thread::sleep(std::time::Duration::from_millis(1));
                published.reclaim();
            }
            assert_eq!(
                published.retired_len(),
                0,
                "live readers let reclaim progress"
            );
            done.store(true, Ordering::SeqCst);
            for h in handles {
                assert!(h.join().unwrap() > 0);
            }
        });
        // Readers gone: nothing holds anything back.
        published.reclaim();
        assert_eq!(published.retired_len(), 0);
        assert_eq!(drops.load(Ordering::SeqCst), GENERATIONS);
        // Only the active one is live.
        let live: Vec<usize> = (0..=GENERATIONS)
            .filter(|&i| states[i].load(Ordering::SeqCst) == LIVE)
            .collect();
        assert_eq!(live, vec![GENERATIONS]);
        drop(published);
        assert_eq!(drops.load(Ordering::SeqCst), GENERATIONS + 1);
    }

    #[test]
    fn a_stalled_reader_holds_back_reclamation_until_it_enters_again() {
        let states: Arc<Vec<AtomicU8>> = Arc::new((0..=20).map(|_| AtomicU8::new(0)).collect());
        let drops = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(Published::new(generation(0, &states, &drops), 2));
        let mut a = published.register().unwrap();
        let mut b = published.register().unwrap();
        assert_eq!(a.enter().id, 0);
        for n in 1..=10 {
            published.publish(generation(n, &states, &drops));
            assert_eq!(b.enter().id, n as u64);
        }
        // `a` still announces epoch 0: nothing can go.
        assert_eq!(published.reclaim(), 0);
        assert_eq!(published.retired_len(), 10);
        assert_eq!(states[0].load(Ordering::SeqCst), LIVE);
        // `a` moves on: everything retired goes.
        assert_eq!(a.enter().id, 10);
        assert_eq!(published.reclaim(), 10);
        assert_eq!(drops.load(Ordering::SeqCst), 10);
        // A dropped reader holds nothing back; `b` at epoch 10 holds generation 10.
        drop(a);
        published.publish(generation(11, &states, &drops));
        assert_eq!(published.reclaim(), 0, "b still announces 10");
        assert_eq!(b.enter().id, 11);
        assert_eq!(published.reclaim(), 1);
        assert_eq!(states[10].load(Ordering::SeqCst), DROPPED);
        // Slots are reusable; a full set refuses.
        let c = published.register().unwrap();
        assert!(published.register().is_none());
        drop(c);
        assert!(published.register().is_some());
    }

    #[test]
    fn weights_and_maglev_tables_follow_the_configuration() {
        let be = |a: &str, w| Backend {
            addr: a.parse().unwrap(),
            port: None,
            weight: w,
            agent: None,
        };
        let svc = |alg, mode| Service {
            name: "s".into(),
            vips: vec!["198.18.0.10".parse().unwrap()],
            mode,
            algorithm: alg,
            unknown_balance: false,
            backends: vec![be("198.19.0.1", 1), be("198.19.0.2", 3)],
            formula: None,
            health: Vec::new(),
        };
        let app = Appliance {
            services: vec![
                svc(Algorithm::Maglev, Mode::Nat { to_port: None }),
                svc(Algorithm::RoundRobin, Mode::Dsr),
            ],
            ..Appliance::default()
        };
        let policy = |_: &Fields| Decision::default();
        let g = Generation::new(Arc::new(policy), app.clone());
        assert_eq!(g.services[0].weights, vec![1, 3]);
        let m = g.services[0].maglev.as_ref().unwrap();
        let share = m.entries_of(1) as f64 / m.size() as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        assert!(g.services[1].maglev.is_none());
        assert!(g.is_vip(&"198.18.0.10".parse().unwrap()));
        assert!(g.is_nat_backend(&"198.19.0.2".parse().unwrap()));
        assert_eq!(g.nat_backends.len(), 2);
        // Published weights override the configuration; a missing entry keeps it.
        let g = Generation::with_weights(Arc::new(policy), app, &[vec![0]]);
        assert_eq!(g.services[0].weights, vec![0, 3]);
        assert_eq!(g.services[1].weights, vec![1, 3]);
        let m = g.services[0].maglev.as_ref().unwrap();
        assert_eq!(m.entries_of(0), 0);
    }
}
