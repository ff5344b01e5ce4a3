//! Back-end choice for a new connection: Maglev consistent hashing with weights,
//! smooth weighted round robin, least load, and the flow hash that feeds Maglev.
//!
//! Everything here is pure computation over slices the caller owns: no clock, no
//! I/O, no locking. Tables are built on the control path ([`Maglev::new`],
//! [`Wrr::new`] allocate); picking a back end ([`Maglev::lookup`], [`Wrr::pick`],
//! [`least_load`]) never allocates and never panics. A pool with no back end of
//! non-zero weight gives `None`. What a "back end" is (address, port, health) is
//! not known here: every function answers with an index into the slice it was
//! given.
//!
//! [`seeded_hash`] is not cryptographic. It is seeded so that a seed chosen at
//! start-up makes the hash hard to predict from outside, but it is not meant to
//! resist an attacker who can observe many outputs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-back-end loads for least-load services, shared by the cores: each core
/// adds one per new connection; the control core may overwrite them with
/// reported loads ([`Loads::set`]). Indexed `[service][backend]` within fixed
/// bounds chosen at start-up; a back end out of bounds reads 0.
#[derive(Debug)]
pub struct Loads {
    per_service: usize,
    words: Box<[AtomicU64]>,
}

impl Loads {
    /// Room for `services` services of at most `backends` back ends.
    pub fn new(services: usize, backends: usize) -> Loads {
        Loads {
            per_service: backends,
            words: (0..services.saturating_mul(backends))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
    fn word(&self, s: usize, b: usize) -> Option<&AtomicU64> {
        if b >= self.per_service {
            return None;
        }
        self.words
            .get(s.checked_mul(self.per_service)?.checked_add(b)?)
    }
    /// The load of back end `b` of service `s`.
    pub fn get(&self, s: usize, b: usize) -> u64 {
        self.word(s, b).map_or(0, |w| w.load(Ordering::Relaxed))
    }
    /// Set the load of back end `b` of service `s` (control core).
    pub fn set(&self, s: usize, b: usize, v: u64) {
        if let Some(w) = self.word(s, b) {
            w.store(v, Ordering::Relaxed);
        }
    }
    pub(crate) fn add(&self, s: usize, b: usize) {
        if let Some(w) = self.word(s, b) {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Odd 64-bit constants (the fractional part of the golden ratio and two values
/// with good avalanche behaviour in multiply-xorshift mixers).
const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

/// A 64-bit bijective mixer: xor-shift, multiply, xor-shift, multiply, xor-shift.
/// Every input bit affects every output bit with probability close to one half.
#[inline]
pub const fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(K1);
    z = (z ^ (z >> 27)).wrapping_mul(K2);
    z ^ (z >> 31)
}

/// A seeded 64-bit hash of `bytes`, for table indexing: Maglev permutations and
/// the connection table (not the flow hash of a packet, which is
/// `lbp_abi::flow_hash`).
///
/// Definition (stable: other code and stored tables may rely on it): the state
/// starts as `seed ^ (len * K0)`; each 8-byte little-endian word of `bytes` (the
/// last one zero-padded) is folded in as `state = (state ^ mix64(word ^ K0))
/// .rotate_left(29) * K1`; the result is `mix64(state)`. Equal inputs and seeds
/// give equal hashes on every platform. It costs about three multiplications per
/// 8 bytes.
#[inline]
pub fn seeded_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K0);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fold(h, u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fold(h, u64::from_le_bytes(w));
    }
    mix64(h)
}

/// The same hash over words already in registers (for fixed-layout keys, such
/// as the connection table's): each word is folded like one 8-byte chunk of
/// [`seeded_hash`], with `len` taken as `8 * words.len()`.
#[inline]
pub fn hash_words(words: &[u64], seed: u64) -> u64 {
    let mut h = seed ^ ((words.len() as u64) * 8).wrapping_mul(K0);
    for &w in words {
        h = fold(h, w);
    }
    mix64(h)
}

#[inline]
fn fold(h: u64, w: u64) -> u64 {
    (h ^ mix64(w ^ K0)).rotate_left(29).wrapping_mul(K1)
}

/// The default Maglev table size: a prime (2^16 + 1).
pub const MAGLEV_DEFAULT_SIZE: usize = 65_537;

/// The largest Maglev table [`Maglev::new`] builds (so a configuration mistake
/// cannot ask for gigabytes): a little over 2^24 entries, 64 MiB.
pub const MAGLEV_MAX_SIZE: usize = 1 << 24;

/// How many table entries per back end [`Maglev::new`] asks for at least, so that
/// each back end's share is accurate to about 1 %.
pub const MAGLEV_SLOTS_PER_BACKEND: usize = 128;

/// Whether `n` is prime (trial division by 6k ± 1; fine for the sizes used here).
pub fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The smallest prime `>= n` (2 for `n <= 2`). `n` is capped at
/// [`MAGLEV_MAX_SIZE`], so the answer is at most the first prime above it.
pub fn next_prime(n: usize) -> usize {
    let mut p = n.clamp(2, MAGLEV_MAX_SIZE) as u64;
    while !is_prime(p) {
        p += 1;
    }
    p as usize
}

const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table (Eisenbud et al., NSDI 2016) with weights.
///
/// Each back end, named by a stable 64-bit key (an id, or a hash of its address
/// and port), has a preference list over the table's `M` entries (a permutation:
/// `offset + j * skip mod M`, with `offset` and `skip` from two hashes of its key
/// and `M` prime). Back ends take turns claiming their next preferred free entry
/// until the table is full. With weights, a turn is earned by credit: every round
/// each back end gains its weight, and takes one entry each time its credit
/// reaches the largest weight; so a back end of weight 3 takes about three times
/// as many entries as one of weight 1, and weight 0 takes none. Because the
/// preference lists depend only on the keys, removing one back end of `N` moves
/// about `1/N` of the flows.
#[derive(Clone)]
pub struct Maglev {
    table: Box<[u32]>,
    backends: usize,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.table.len())
            .field("backends", &self.backends)
            .finish()
    }
}

/// Seeds of the two preference-list hashes (fixed: a back end's list must be the
/// same in every build of the table, in every process).
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

impl Maglev {
    /// Build the table for `backends`, each `(key, weight)`. The size is the
    /// smallest prime at least `table_size`, at least
    /// [`MAGLEV_SLOTS_PER_BACKEND`] times the number of back ends of non-zero
    /// weight, and at most about [`MAGLEV_MAX_SIZE`]. Duplicate keys are allowed
    /// (they get the same preference list and share its entries).
    pub fn new(backends: &[(u64, u32)], table_size: usize) -> Maglev {
        let live = backends.iter().filter(|b| b.1 > 0).count();
        let m = next_prime(table_size.max(live.saturating_mul(MAGLEV_SLOTS_PER_BACKEND)));
        let mut table = vec![EMPTY; m].into_boxed_slice();
        let max_weight = backends.iter().map(|b| b.1).max().unwrap_or(0);
        if max_weight == 0 || backends.len() >= EMPTY as usize {
            return Maglev {
                table,
                backends: backends.len(),
            };
        }
        let m64 = m as u64;
        // Per back end: offset, skip, position in its preference list, credit.
        let mut offset = Vec::with_capacity(backends.len());
        let mut skip = Vec::with_capacity(backends.len());
        for &(key, _) in backends {
            let kb = key.to_le_bytes();
            offset.push(seeded_hash(&kb, OFFSET_SEED) % m64);
            skip.push(seeded_hash(&kb, SKIP_SEED) % (m64 - 1) + 1);
        }
        let mut next = vec![0u64; backends.len()];
        let mut credit = vec![0u64; backends.len()];
        let mut filled = 0usize;
        let max_weight = u64::from(max_weight);
        'fill: loop {
            for (i, &(_, w)) in backends.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                credit[i] += u64::from(w);
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    // The next free entry in i's preference list. The list is a
                    // permutation of 0..m and the table is not full, so this
                    // finds one within m steps.
                    let mut c = (offset[i] + next[i] % m64 * skip[i]) % m64;
                    while table[c as usize] != EMPTY {
                        next[i] += 1;
                        c = (offset[i] + next[i] % m64 * skip[i]) % m64;
                    }
                    table[c as usize] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev {
            table,
            backends: backends.len(),
        }
    }

    /// The back end (an index into the slice given to [`Maglev::new`]) for a flow
    /// of hash `hash`; `None` when no back end has a non-zero weight.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        let len = self.table.len() as u64;
        if len == 0 {
            return None;
        }
        let b = self.table[(hash % len) as usize];
        (b != EMPTY).then_some(b)
    }

    /// The table's size (a prime).
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// The number of back ends the table was built from (including weight 0).
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// The table: a back end's index per entry, `u32::MAX` for none.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// How many table entries back end `index` holds (its share of flows is this
    /// divided by [`Maglev::size`]).
    pub fn entries_of(&self, index: u32) -> usize {
        self.table.iter().filter(|&&b| b == index).count()
    }
}

/// Smooth weighted round robin (the interleaving nginx uses): each pick adds
/// every back end's weight to its running score, chooses the highest score
/// (the lowest index among equals), and takes the total weight off the winner.
/// Over one cycle of `sum(weights)` picks each back end is chosen exactly its
/// weight's number of times, spread out rather than in runs (weights 5, 1, 1
/// give `a a b a c a a`).
///
/// One `Wrr` per switching core: it is mutable state, not shared. A pick costs
/// one pass over the back ends and never allocates.
#[derive(Clone, Debug)]
pub struct Wrr {
    weights: Box<[u32]>,
    current: Box<[i64]>,
    total: i64,
}

impl Wrr {
    /// A round robin over `weights` (index `i` is back end `i`; weight 0 is never
    /// picked).
    pub fn new(weights: &[u32]) -> Wrr {
        Wrr {
            weights: weights.into(),
            current: vec![0; weights.len()].into_boxed_slice(),
            total: weights.iter().map(|&w| i64::from(w)).sum(),
        }
    }

    /// The next back end, or `None` when every weight is 0.
    pub fn pick(&mut self) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        let mut best_score = i64::MIN;
        for (i, (&w, cur)) in self.weights.iter().zip(self.current.iter_mut()).enumerate() {
            if w == 0 {
                continue;
            }
            *cur += i64::from(w);
            if *cur > best_score {
                best_score = *cur;
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.current[b] -= self.total;
        }
        best
    }

    /// The weights this round robin picks over.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }
}

/// Least load: the back end with the smallest `loads[i] / weights[i]` (compared
/// exactly, by cross-multiplication), skipping weight 0 and indices missing from
/// either slice. Ties go to the first such back end found scanning from index
/// `start % n` upward and wrapping around, so a caller that passes, say, the flow
/// hash spreads new connections over equally loaded back ends while the choice
/// stays deterministic. `None` when no back end has a non-zero weight.
pub fn least_load(loads: &[u64], weights: &[u32], start: u64) -> Option<usize> {
    let n = loads.len().min(weights.len());
    if n == 0 {
        return None;
    }
    let first = (start % n as u64) as usize;
    let mut best: Option<(usize, u64, u32)> = None;
    for k in 0..n {
        let i = (first + k) % n;
        let (l, w) = (loads[i], weights[i]);
        if w == 0 {
            continue;
        }
        match best {
            None => best = Some((i, l, w)),
            // l / w < bl / bw  <=>  l * bw < bl * w (all non-negative, no overflow
            // in 128 bits).
            Some((_, bl, bw))
                if u128::from(l) * u128::from(bw) < u128::from(bl) * u128::from(w) =>
            {
                best = Some((i, l, w));
            }
            Some(_) => {}
        }
    }
    best.map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_hash(k: u32) -> u64 {
        seeded_hash(&k.to_le_bytes(), 0x1234)
    }

    #[test]
    fn primes() {
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(2), 2);
        assert_eq!(next_prime(4), 5);
        assert_eq!(next_prime(65_536), 65_537);
        assert_eq!(next_prime(65_537), 65_537);
        assert_eq!(next_prime(100_000), 100_003);
        assert!(!is_prime(1) && !is_prime(25) && !is_prime(65_535) && is_prime(7919));
        // Huge requests are capped, not honoured.
        let p = next_prime(usize::MAX);
        assert!(is_prime(p as u64) && (MAGLEV_MAX_SIZE..MAGLEV_MAX_SIZE + 1000).contains(&p));
    }

    #[test]
    fn flow_hash_is_stable_and_seeded() {
        let a = seeded_hash(b"198.18.0.1:443", 7);
        assert_eq!(a, seeded_hash(b"198.18.0.1:443", 7));
        assert_ne!(a, seeded_hash(b"198.18.0.1:443", 8));
        assert_ne!(a, seeded_hash(b"198.18.0.1:444", 7));
        // Zero padding does not make different lengths collide.
        assert_ne!(seeded_hash(b"ab", 0), seeded_hash(b"ab\0", 0));
        assert_ne!(seeded_hash(b"", 0), seeded_hash(b"\0", 0));
        // hash_words over whole words equals seeded_hash over their bytes.
        let words = [0x0102_0304_0506_0708u64, 42];
        let mut bytes = Vec::new();
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(hash_words(&words, 99), seeded_hash(&bytes, 99));
        // Avalanche, roughly: flipping one input bit flips about half the output.
        let mut total = 0u32;
        for bit in 0..64 {
            let x = 0x0123_4567_89ab_cdefu64;
            total += (seeded_hash(&x.to_le_bytes(), 1)
                ^ seeded_hash(&(x ^ (1 << bit)).to_le_bytes(), 1))
            .count_ones();
        }
        let mean = f64::from(total) / 64.0;
        assert!((28.0..36.0).contains(&mean), "mean flipped bits {mean}");
    }

    fn shares(m: &Maglev, n: usize, keys: u32) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for k in 0..keys {
            c[m.lookup(key_hash(k)).unwrap() as usize] += 1;
        }
        c
    }

    #[test]
    fn maglev_weights_are_respected() {
        let backends = [(11, 1), (22, 3), (33, 2), (44, 0), (55, 4)];
        let m = Maglev::new(&backends, MAGLEV_DEFAULT_SIZE);
        assert_eq!(m.size(), 65_537);
        assert_eq!(m.entries_of(3), 0);
        let c = shares(&m, backends.len(), 100_000);
        assert_eq!(c[3], 0);
        let total_w: u32 = backends.iter().map(|b| b.1).sum();
        for (i, &(_, w)) in backends.iter().enumerate() {
            let want = 100_000.0 * f64::from(w) / f64::from(total_w);
            let got = c[i] as f64;
            assert!(
                (got - want).abs() <= 0.03 * want + 1.0,
                "backend {i}: {got} vs {want}"
            );
            // The table itself is within 1 % of the weights.
            let e = m.entries_of(i as u32) as f64 / m.size() as f64;
            assert!(
                (e - f64::from(w) / f64::from(total_w)).abs() < 0.01,
                "entries {i}: {e}"
            );
        }
    }

    #[test]
    fn maglev_equal_weights_are_even() {
        let backends: Vec<(u64, u32)> = (0..10).map(|i| (1000 + i, 1)).collect();
        let m = Maglev::new(&backends, MAGLEV_DEFAULT_SIZE);
        let c = shares(&m, 10, 100_000);
        for (i, &n) in c.iter().enumerate() {
            assert!((9_700..=10_300).contains(&n), "backend {i}: {n}");
        }
    }

    #[test]
    fn maglev_removal_moves_about_one_nth() {
        let n = 20u64;
        let before: Vec<(u64, u32)> = (0..n).map(|i| (0xbe00 + i, 1)).collect();
        let removed = 7usize;
        let after: Vec<(u64, u32)> = before
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, b)| *b)
            .collect();
        let m1 = Maglev::new(&before, MAGLEV_DEFAULT_SIZE);
        let m2 = Maglev::new(&after, MAGLEV_DEFAULT_SIZE);
        let keys = 100_000u32;
        let (mut moved, mut moved_needlessly, mut on_removed) = (0u32, 0u32, 0u32);
        for k in 0..keys {
            let h = key_hash(k);
            let id1 = before[m1.lookup(h).unwrap() as usize].0;
            let id2 = after[m2.lookup(h).unwrap() as usize].0;
            assert_ne!(id2, before[removed].0);
            if id1 == before[removed].0 {
                on_removed += 1;
            }
            if id1 != id2 {
                moved += 1;
                if id1 != before[removed].0 {
                    moved_needlessly += 1;
                }
            }
        }
        let share = f64::from(on_removed) / f64::from(keys);
        assert!(
            (share - 1.0 / n as f64).abs() < 0.01,
            "share of removed {share}"
        );
        // Every flow of the removed back end moves; of the others, only a few.
        let frac = f64::from(moved) / f64::from(keys);
        let needless = f64::from(moved_needlessly) / f64::from(keys);
        assert!(frac < 1.0 / n as f64 + 0.01, "moved {frac}");
        assert!(needless < 0.01, "moved needlessly {needless}");
    }

    #[test]
    fn maglev_empty_and_zero_weight_pools() {
        let m = Maglev::new(&[], MAGLEV_DEFAULT_SIZE);
        assert_eq!(m.lookup(123), None);
        let m = Maglev::new(&[(1, 0), (2, 0)], 7);
        assert_eq!(m.lookup(123), None);
        assert_eq!(m.entries_of(0), 0);
        // A tiny requested size grows to 128 entries per back end.
        let m = Maglev::new(&[(1, 1), (2, 1)], 3);
        assert!(m.size() >= 256 && is_prime(m.size() as u64));
        for h in 0..1000 {
            assert!(m.lookup(h).unwrap() < 2);
        }
        // One back end gets everything.
        let m = Maglev::new(&[(1, 0), (9, 5)], 101);
        assert_eq!(m.entries_of(1), m.size());
    }

    #[test]
    fn maglev_extreme_weights_fill_the_table() {
        let m = Maglev::new(&[(1, u32::MAX), (2, 1), (3, u32::MAX / 2)], 1009);
        let total: usize = (0..3).map(|i| m.entries_of(i)).sum();
        assert_eq!(total, m.size());
        assert!(m.entries_of(0) > m.entries_of(2));
    }

    #[test]
    fn wrr_exact_proportions_over_a_cycle() {
        let weights = [5u32, 1, 1, 0, 3];
        let mut w = Wrr::new(&weights);
        let cycle: u32 = weights.iter().sum();
        let mut first = Vec::new();
        for _ in 0..7 {
            first.push(w.pick().unwrap());
        }
        // Two full cycles in all (the first 7 picks are part of the first).
        let mut counts = [0u32; 5];
        for &p in &first {
            counts[p] += 1;
        }
        for _ in 7..2 * cycle {
            counts[w.pick().unwrap()] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c, 2 * weights[i], "backend {i}");
        }
        // Smooth: the heavy back end never runs three times in a row within 5:1:1.
        let mut w = Wrr::new(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| w.pick().unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn wrr_empty_and_zero() {
        assert_eq!(Wrr::new(&[]).pick(), None);
        assert_eq!(Wrr::new(&[0, 0]).pick(), None);
        let mut w = Wrr::new(&[0, u32::MAX]);
        for _ in 0..10 {
            assert_eq!(w.pick(), Some(1));
        }
    }

    #[test]
    fn least_load_choice() {
        assert_eq!(least_load(&[], &[], 0), None);
        assert_eq!(least_load(&[1, 2], &[0, 0], 0), None);
        // 10/1 vs 25/3 (8.33) vs 4/0 (excluded).
        assert_eq!(least_load(&[10, 25, 4], &[1, 3, 0], 0), Some(1));
        // Ties: scanning starts at `start`.
        assert_eq!(least_load(&[2, 2, 2], &[1, 1, 1], 0), Some(0));
        assert_eq!(least_load(&[2, 2, 2], &[1, 1, 1], 1), Some(1));
        assert_eq!(least_load(&[2, 2, 2], &[1, 1, 1], 5), Some(2));
        // 4/2 equals 2/1: tie, first from start wins.
        assert_eq!(least_load(&[4, 2], &[2, 1], 0), Some(0));
        assert_eq!(least_load(&[4, 2], &[2, 1], 1), Some(1));
        // Mismatched lengths use the common prefix; huge values do not overflow.
        assert_eq!(
            least_load(&[u64::MAX, u64::MAX - 1, 0], &[u32::MAX, u32::MAX], 0),
            Some(1)
        );
    }
}
