//! The exact keys of a merged group: the key hash (which the JIT computes
//! inline too), the bit filter it tests, and the table from key to bucket.

use super::{KEY_FIELDS, Val};
use std::hash::Hasher;

/// A hasher for keys of a few words (a multiply-rotate mix; keys come from packets,
/// but a flood of colliding keys costs only probe length, never correctness).
#[derive(Default, Clone, Copy, Debug)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(23) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub(crate) type Key = [Val; KEY_FIELDS];

pub(crate) const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// The multiplier and rotation of [`hash_val`] and the constants of
/// [`hash_finish`], for the JIT, which computes the same hash inline.
pub(crate) const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
pub(crate) const HASH_ROT: u32 = 23;
pub(crate) const HASH_FINISH_MUL: u64 = 0xd6e8_feb8_6659_fd93;
/// A hash's filter word is `(h >> FILTER_WORD_SHIFT) & (words - 1)`; its two
/// bits are `h & 63` and `(h >> FILTER_BIT2_SHIFT) & 63`.
pub(crate) const FILTER_WORD_SHIFT: u32 = 12;
pub(crate) const FILTER_BIT2_SHIFT: u32 = 6;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(HASH_ROT) ^ w).wrapping_mul(HASH_MUL)
}

/// Mix one value into a key hash: an IPv6 address as its low word then its
/// high word with the tag in the top byte; any other value (below 2^64: an
/// integer, a MAC, an IPv4 address) as one word, with its tag (4 for an IPv4
/// address, else 0) in the top byte.
#[inline(always)]
pub(super) fn hash_val(h: u64, (tag, v): Val) -> u64 {
    let top = u64::from(tag) << 56;
    if tag == 6 {
        mix(mix(h, v as u64), ((v >> 64) as u64) ^ top)
    } else {
        mix(h, (v as u64) ^ top)
    }
}

#[inline(always)]
pub(super) fn hash_finish(h: u64) -> u64 {
    // The low bits of a product are weak; fold the high half down and mix once
    // more, since the filter and the table both use low bits.
    let h = (h ^ (h >> 32)).wrapping_mul(HASH_FINISH_MUL);
    h ^ (h >> 32)
}

/// The hash of a key's first `k` values.
fn key_hash(key: &Key, k: usize) -> u64 {
    let h = key.iter().take(k).fold(HASH_SEED, |h, &v| hash_val(h, v));
    hash_finish(h)
}

/// Filter bits per key, two bits set per key in one word: about 1.5 % false
/// positives (one bit per key: about 6 %), for one load.
const FILTER_BITS_PER_KEY: usize = 16;

/// The word (of `words`, a power of two) and the two bits a hash sets.
#[inline(always)]
fn filter_pos(h: u64, words: usize) -> (usize, u64) {
    let word = (h >> FILTER_WORD_SHIFT) as usize & words.wrapping_sub(1);
    let mask = 1u64 << (h & 63) | 1u64 << ((h >> FILTER_BIT2_SHIFT) & 63);
    (word, mask)
}

/// A slot's tag for a hash: never 0, which marks an empty slot.
#[inline(always)]
fn tag(h: u64) -> u64 {
    h.max(1)
}

/// The exact keys of a group: a bit filter that turns most absent keys away
/// without touching the table, then an open-addressing table (linear probing)
/// from key to bucket. The probe reads only the slots' hash tags (8 bytes a
/// slot); a key is compared only where its tag matches. Built once; read-only
/// afterwards.
#[derive(Debug, Default)]
pub(super) struct KeyTable {
    /// A bit filter: words (a power of two), two bits per key.
    pub(super) filter: Vec<u64>,
    /// Per slot, the tag of its key's hash (0: empty); a power of two, at most
    /// half full.
    tags: Vec<u64>,
    /// Per slot, its index in `entries`.
    slots: Vec<u32>,
    /// The keys and their buckets.
    entries: Vec<(Key, u32)>,
    k: usize,
}

impl KeyTable {
    pub(super) fn build(keys: Vec<(Key, u32)>, k: usize) -> KeyTable {
        let n = keys.len().max(1);
        let bits = (n * FILTER_BITS_PER_KEY).next_power_of_two().max(64);
        let mut filter = vec![0u64; bits / 64];
        let cap = (n * 2).next_power_of_two();
        let mut tags = vec![0u64; cap];
        let mut slots = vec![0u32; cap];
        for (e, (key, _)) in keys.iter().enumerate() {
            let h = key_hash(key, k);
            let (word, mask) = filter_pos(h, filter.len());
            filter[word] |= mask;
            let mut i = h as usize & (cap - 1);
            while tags[i] != 0 {
                i = (i + 1) & (cap - 1);
            }
            tags[i] = tag(h);
            slots[i] = e as u32;
        }
        KeyTable {
            filter,
            tags,
            slots,
            entries: keys,
            k,
        }
    }

    /// How many keys it holds.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Its keys and their buckets.
    pub(super) fn entries(&self) -> impl Iterator<Item = &(Key, u32)> {
        self.entries.iter()
    }

    /// Whether the filter admits hash `h` (false: the key is surely absent).
    #[inline(always)]
    pub(super) fn may_hold(&self, h: u64) -> bool {
        let (word, mask) = filter_pos(h, self.filter.len());
        self.filter.get(word).is_some_and(|w| w & mask == mask)
    }

    /// The bucket of `key`, whose hash is `h`.
    #[inline(always)]
    pub(super) fn get(&self, key: &Key, h: u64) -> Option<u32> {
        let mask = self.tags.len().wrapping_sub(1);
        let t = tag(h);
        let mut i = h as usize & mask;
        // At most half the slots are full, so an empty one ends every probe.
        for _ in 0..self.tags.len() {
            let st = *self.tags.get(i)?;
            if st == 0 {
                return None;
            }
            if st == t {
                let (sk, b) = self.entries.get(*self.slots.get(i)? as usize)?;
                if sk[..self.k] == key[..self.k] {
                    return Some(*b);
                }
            }
            i = (i + 1) & mask;
        }
        None
    }
}
