//! Rule merging: filter rules of the same shape become one table, so that the
//! per-packet cost of a filter stays nearly flat as it grows.
//!
//! A rule is *mergeable* when its condition is a conjunction of atoms, each a test
//! of one field of the packet:
//!
//! - an *exact* atom: the field equals one of a few values (`tcp.dport == 22`,
//!   `ip.src == 198.18.0.1`, `ip.dst in 198.18.0.7/32`, `tcp.dport in { 22, 8022 }`,
//!   a TCP flag, `ip.frag`);
//! - a *range* atom: the field is (or, negated, is not) in a set of ranges
//!   (`ip.ttl < 9`, `udp.dport in 5000..6000`, `!(ip.src in 198.18.0.0/24)`).
//!
//! The *shape* of a rule is the list of its atoms' fields, with the `present` bits
//! each needs, split into exact and range atoms. Rules of one shape form a
//! [`Group`]: a hash table from the values of the exact fields to a *bucket*; in a
//! bucket, the candidates (rules) in rule order, indexed by the elementary
//! intervals of one range field (the *primary*) when the shape has one. A lookup
//! hashes the packet's exact fields, finds the primary's interval by bisection,
//! and tests the remaining range atoms of the candidates in order; the first that
//! passes is the group's answer. The filter's answer is the lowest rule index
//! over all groups and the rules left unmerged, which the JIT compiles inline and
//! tests only when their index is lower than the groups' answer.
//!
//! This module is an optimisation of the JIT only: the reference interpreter still
//! runs the rules one by one, and the differential tests hold the two together.
//! Its only loops over rules run at build time; a lookup's loops are over the
//! groups (one per shape) and a bucket's candidates, which is short unless many
//! rules of one shape differ only in atoms the primary does not index.

use crate::interp;
use crate::ir::{AddrField, Cond, CondKind, IntField, MacField, Program, Rule, Set};
use lbp_abi::{Fields, present};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Groups smaller than this stay inline: a few compares cost less than a lookup.
pub const MERGE_MIN: usize = 8;
/// An exact atom over a set of more than this many values is a range atom.
const EXACT_SET_MAX: u64 = 16;
/// A rule whose exact atoms expand to more keys than this keeps the largest as a
/// range atom instead.
const KEYS_PER_RULE_MAX: usize = 64;
/// At most this many exact fields form a key; further exact atoms become ranges.
pub const KEY_FIELDS: usize = 3;
/// Candidate lists of a bucket indexed by its primary field may hold at most this
/// many entries per candidate on average; beyond it the bucket is one list.
const INDEX_BLOWUP_MAX: usize = 8;

/// A field an atom tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtomField {
    Int(IntFieldKey),
    Addr(bool),
    Mac(bool),
    /// `tcp_flags & mask != 0`, as 0 or 1.
    Flags(u8),
    /// `present & bit != 0`, as 0 or 1.
    Bit(u32),
}

/// [`IntField`] with an order (for sorting shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntFieldKey(u8);

const INT_FIELDS: [IntField; 11] = [
    IntField::InIface,
    IntField::PktLen,
    IntField::EthType,
    IntField::IpVersion,
    IntField::IpProto,
    IntField::IpTtl,
    IntField::IpLen,
    IntField::Sport,
    IntField::Dport,
    IntField::IcmpType,
    IntField::IcmpCode,
];

impl IntFieldKey {
    fn of(f: IntField) -> IntFieldKey {
        IntFieldKey(INT_FIELDS.iter().position(|&x| x == f).unwrap_or(0) as u8)
    }
    pub(crate) fn field(self) -> IntField {
        INT_FIELDS
            .get(usize::from(self.0))
            .copied()
            .unwrap_or(IntField::InIface)
    }
}

/// A value of a field, as keys and intervals hold it: the family tag (0 for
/// everything but addresses, 4 or 6 for an address) and the value.
pub type Val = (u8, u128);

/// A packet's value of a field; `None` when the field has no value (an address of
/// a packet without IP).
fn value(f: &Fields, field: AtomField) -> Option<Val> {
    Some(match field {
        AtomField::Int(k) => (0, u128::from(interp::int_field(f, k.field()))),
        AtomField::Addr(src) => {
            let which = if src { AddrField::Src } else { AddrField::Dst };
            match interp::addr(f, which)? {
                crate::ir::Addr::V4(a) => (4, u128::from(a)),
                crate::ir::Addr::V6(a) => (6, a),
            }
        }
        AtomField::Mac(src) => {
            let m = if src { f.eth_src } else { f.eth_dst };
            let mut b = [0u8; 16];
            b[10..].copy_from_slice(&m);
            (0, u128::from_be_bytes(b))
        }
        AtomField::Flags(mask) => (0, u128::from(f.tcp_flags & mask != 0)),
        AtomField::Bit(bit) => (0, u128::from(f.present & bit != 0)),
    })
}

fn addr_val(a: crate::ir::Addr) -> Val {
    match a {
        crate::ir::Addr::V4(a) => (4, u128::from(a)),
        crate::ir::Addr::V6(a) => (6, a),
    }
}

fn mac_val(m: [u8; 6]) -> Val {
    let mut b = [0u8; 16];
    b[10..].copy_from_slice(&m);
    (0, u128::from_be_bytes(b))
}

/// Whether a packet has any of the headers in `need` (an empty need holds).
fn has(f: &Fields, need: u32) -> bool {
    need == 0 || f.present & need != 0
}

/// Sorted, disjoint, inclusive intervals of [`Val`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ivals(Vec<(Val, Val)>);

impl Ivals {
    fn contains(&self, v: Val) -> bool {
        let i = self.0.partition_point(|&(lo, _)| lo <= v);
        i > 0 && self.0.get(i - 1).is_some_and(|&(_, hi)| v <= hi)
    }

    /// The number of values, saturating (for deciding exact or range).
    fn cardinality(&self) -> u64 {
        self.0.iter().fold(0u64, |n, &((_, lo), (_, hi))| {
            n.saturating_add(u64::try_from(hi - lo).unwrap_or(u64::MAX).saturating_add(1))
        })
    }

    fn values(&self) -> impl Iterator<Item = Val> + '_ {
        self.0
            .iter()
            .flat_map(|&((t, lo), (_, hi))| (lo..=hi).map(move |v| (t, v)))
    }
}

/// A range atom: `need` holds, the field has a value, and it is in `set`; all of
/// that negated when `negate`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RangeAtom {
    pub field: AtomField,
    pub need: u32,
    pub negate: bool,
    pub set: Ivals,
}

impl RangeAtom {
    fn holds(&self, f: &Fields) -> bool {
        let inside =
            has(f, self.need) && value(f, self.field).is_some_and(|v| self.set.contains(v));
        inside != self.negate
    }
}

/// An exact atom: `need` holds and the field's value is one of `values`.
#[derive(Clone, Debug)]
struct ExactAtom {
    field: AtomField,
    need: u32,
    values: Vec<Val>,
}

/// A conjunction split into atoms.
#[derive(Debug)]
struct Atoms {
    exact: Vec<ExactAtom>,
    range: Vec<RangeAtom>,
}

fn int_ivals(ranges: &[(u64, u64)]) -> Ivals {
    Ivals(
        ranges
            .iter()
            .map(|&(lo, hi)| ((0, u128::from(lo)), (0, u128::from(hi))))
            .collect(),
    )
}

/// The inclusive ranges of `x op v` over a field's values.
fn op_ranges(op: crate::ir::CmpOp, v: u64) -> Vec<(u64, u64)> {
    use crate::ir::CmpOp::*;
    let mut r = Vec::new();
    let mut push = |lo: u64, hi: u64| {
        if lo <= hi {
            r.push((lo, hi));
        }
    };
    match op {
        Eq => push(v, v),
        Ne => {
            if v > 0 {
                push(0, v - 1);
            }
            if v < u64::MAX {
                push(v + 1, u64::MAX);
            }
        }
        Lt => {
            if v > 0 {
                push(0, v - 1);
            }
        }
        Le => push(0, v),
        Gt => {
            if v < u64::MAX {
                push(v + 1, u64::MAX);
            }
        }
        Ge => push(v, u64::MAX),
    }
    r
}

fn set_ivals(prog: &Program, set: u32) -> Option<Ivals> {
    Some(match prog.sets.get(set as usize)? {
        Set::Int(r) => int_ivals(r),
        Set::Prefix { v4, v6 } => Ivals(
            v4.iter()
                .map(|&(lo, hi)| ((4, u128::from(lo)), (4, u128::from(hi))))
                .chain(v6.iter().map(|&(lo, hi)| ((6, lo), (6, hi))))
                .collect(),
        ),
        Set::Mac(ms) => {
            let mut v: Vec<Val> = ms.iter().map(|&m| mac_val(m)).collect();
            v.sort_unstable();
            v.dedup();
            Ivals(v.into_iter().map(|x| (x, x)).collect())
        }
    })
}

/// One atom as a range atom (before exact atoms are told apart): the field, the
/// need, the set, and whether it is negated.
fn atom(prog: &Program, c: &Cond, negate: bool) -> Option<RangeAtom> {
    let (field, need, set) = match &c.kind {
        CondKind::Not(x) => return atom(prog, x, !negate),
        CondKind::Int {
            need,
            field,
            op,
            value,
        } => (
            AtomField::Int(IntFieldKey::of(*field)),
            *need,
            int_ivals(&op_ranges(*op, *value)),
        ),
        CondKind::IntIn { need, field, set } => (
            AtomField::Int(IntFieldKey::of(*field)),
            *need,
            set_ivals(prog, *set)?,
        ),
        CondKind::Flag { need, mask, expect } => (
            AtomField::Flags(*mask),
            *need,
            int_ivals(&[(u64::from(*expect), u64::from(*expect))]),
        ),
        CondKind::Bit { need, bit, expect } => (
            AtomField::Bit(*bit),
            *need,
            int_ivals(&[(u64::from(*expect), u64::from(*expect))]),
        ),
        CondKind::AddrEq {
            need,
            field,
            addr,
            eq,
        } => {
            // `!=` is "has an address, and it differs": not the negation of `==`
            // for packets without IP, so only `==` is an atom.
            if !eq {
                return None;
            }
            let v = addr_val(*addr);
            (
                AtomField::Addr(*field == AddrField::Src),
                *need,
                Ivals(vec![(v, v)]),
            )
        }
        CondKind::AddrIn { need, field, set } => (
            AtomField::Addr(*field == AddrField::Src),
            *need,
            set_ivals(prog, *set)?,
        ),
        CondKind::MacEq { field, mac, eq } => {
            if !eq {
                return None;
            }
            let v = mac_val(*mac);
            (
                AtomField::Mac(*field == MacField::Src),
                present::ETH,
                Ivals(vec![(v, v)]),
            )
        }
        CondKind::MacIn { field, set } => (
            AtomField::Mac(*field == MacField::Src),
            present::ETH,
            set_ivals(prog, *set)?,
        ),
        _ => return None,
    };
    Some(RangeAtom {
        field,
        need,
        negate,
        set,
    })
}

/// Split a rule's condition into atoms, or `None` when it is not a conjunction of
/// atoms on distinct fields.
fn atoms(prog: &Program, rule: &Rule) -> Option<Atoms> {
    let mut leaves = Vec::new();
    let mut stack = vec![&rule.cond];
    while let Some(c) = stack.pop() {
        match &c.kind {
            CondKind::And(xs) => stack.extend(xs.iter()),
            _ => leaves.push(c),
        }
    }
    if leaves.is_empty() {
        return None;
    }
    let mut exact: Vec<ExactAtom> = Vec::new();
    let mut range: Vec<RangeAtom> = Vec::new();
    for leaf in leaves {
        let a = atom(prog, leaf, false)?;
        if exact.iter().any(|e| e.field == a.field) || range.iter().any(|r| r.field == a.field) {
            return None;
        }
        if !a.negate && a.set.cardinality() <= EXACT_SET_MAX {
            let values: Vec<Val> = a.set.values().collect();
            if values.is_empty() {
                // An empty set never matches: leave such a rule to the JIT.
                return None;
            }
            exact.push(ExactAtom {
                field: a.field,
                need: a.need,
                values,
            });
        } else {
            range.push(a);
        }
    }
    exact.sort_by_key(|e| (e.field, e.need));
    // Too many key fields or keys: the widest exact atoms become ranges.
    loop {
        let keys = exact
            .iter()
            .fold(1usize, |n, e| n.saturating_mul(e.values.len()));
        if exact.len() <= KEY_FIELDS && keys <= KEYS_PER_RULE_MAX {
            break;
        }
        let widest = (0..exact.len()).max_by_key(|&i| exact[i].values.len())?;
        let e = exact.remove(widest);
        range.push(RangeAtom {
            field: e.field,
            need: e.need,
            negate: false,
            set: Ivals(e.values.iter().map(|&v| (v, v)).collect()),
        });
    }
    range.sort_by_key(|r| (r.field, r.need, r.negate));
    Some(Atoms { exact, range })
}

/// The shape of a mergeable rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Shape {
    exact: Vec<(AtomField, u32)>,
    range: Vec<(AtomField, u32, bool)>,
}

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

type Key = [Val; KEY_FIELDS];

/// The hash of a key's first `k` values.
fn key_hash(key: &Key, k: usize) -> u64 {
    let h = key.iter().take(k).fold(HASH_SEED, |h, &v| hash_val(h, v));
    hash_finish(h)
}

pub(crate) const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// The multiplier and rotation of [`hash_val`] and the constants of
/// [`hash_finish`], for the JIT, which computes the same hash inline.
pub(crate) const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
pub(crate) const HASH_ROT: u32 = 23;
pub(crate) const HASH_FINISH_MUL: u64 = 0xd6e8_feb8_6659_fd93;
/// A hash's filter word is `(h >> FILTER_WORD_SHIFT) & (words - 1)`, its bit
/// `h & 63`.
pub(crate) const FILTER_WORD_SHIFT: u32 = 12;

/// Mix one value into a key hash.
#[inline(always)]
fn hash_val(h: u64, (tag, v): Val) -> u64 {
    let h = (h.rotate_left(HASH_ROT) ^ (v as u64)).wrapping_mul(HASH_MUL);
    (h.rotate_left(HASH_ROT) ^ ((v >> 64) as u64) ^ u64::from(tag) << 56).wrapping_mul(HASH_MUL)
}

#[inline(always)]
fn hash_finish(h: u64) -> u64 {
    // The low bits of a product are weak; fold the high half down and mix once
    // more, since the filter and the table both use low bits.
    let h = (h ^ (h >> 32)).wrapping_mul(HASH_FINISH_MUL);
    h ^ (h >> 32)
}

/// Filter bits per key (one bit set per key: about 6 % false positives). Two
/// bits per key in one word at 8 bits per key measured slower here.
const FILTER_BITS_PER_KEY: usize = 16;

/// The word (of `words`, a power of two) and the bit a hash sets.
#[inline(always)]
fn filter_pos(h: u64, words: usize) -> (usize, u64) {
    let word = (h >> FILTER_WORD_SHIFT) as usize & words.wrapping_sub(1);
    let mask = 1u64 << (h & 63);
    (word, mask)
}

/// The exact keys of a group: a bit filter that turns most absent keys away
/// without touching the table, then an open-addressing table (linear probing)
/// from key to bucket. Built once; read-only afterwards.
#[derive(Debug, Default)]
struct KeyTable {
    /// A bit filter: words (a power of two), one bit per key.
    filter: Vec<u64>,
    /// Slots: (hash, key, bucket), `u32::MAX` bucket for an empty slot; a power
    /// of two, at most half full.
    slots: Vec<(u64, Key, u32)>,
    k: usize,
}

impl KeyTable {
    fn build(keys: &[(Key, u32)], k: usize) -> KeyTable {
        let n = keys.len().max(1);
        let bits = (n * FILTER_BITS_PER_KEY).next_power_of_two().max(64);
        let mut filter = vec![0u64; bits / 64];
        let cap = (n * 2).next_power_of_two();
        let mut slots = vec![(0u64, [(0u8, 0u128); KEY_FIELDS], u32::MAX); cap];
        for &(key, bucket) in keys {
            let h = key_hash(&key, k);
            let (word, mask) = filter_pos(h, bits / 64);
            filter[word] |= mask;
            let mut i = h as usize & (cap - 1);
            while slots[i].2 != u32::MAX {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = (h, key, bucket);
        }
        KeyTable { filter, slots, k }
    }

    /// Whether the filter admits hash `h` (false: the key is surely absent).
    #[inline(always)]
    fn may_hold(&self, h: u64) -> bool {
        let (word, mask) = filter_pos(h, self.filter.len());
        self.filter.get(word).is_some_and(|w| w & mask == mask)
    }

    /// The bucket of `key`, whose hash is `h`.
    fn get(&self, key: &Key, h: u64) -> Option<u32> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = h as usize & mask;
        // At most half the slots are full, so an empty one ends every probe.
        for _ in 0..self.slots.len() {
            let (sh, sk, b) = self.slots.get(i)?;
            if *b == u32::MAX {
                return None;
            }
            if *sh == h && sk[..self.k] == key[..self.k] {
                return Some(*b);
            }
            i = (i + 1) & mask;
        }
        None
    }
}

/// A candidate: a rule and its range atoms (a slice of [`Group::atoms`]).
#[derive(Clone, Copy, Debug)]
struct Cand {
    rule: u32,
    atoms_start: u32,
    atoms_len: u32,
}

/// The candidates of one exact key.
#[derive(Debug)]
struct Bucket {
    /// Whether the candidates are indexed by the primary range atom; if not,
    /// `lists` has one list and every range atom is tested.
    indexed: bool,
    /// Starts of the primary's elementary intervals, sorted; empty without a
    /// primary (then `lists` has one list).
    bounds: Vec<Val>,
    /// Per elementary interval (or the one list): a range of [`Group::cands`].
    lists: Vec<(u32, u32)>,
}

/// The merged rules of one shape.
#[derive(Debug)]
pub struct Group {
    exact: Vec<(AtomField, u32)>,
    /// The range atom that indexed buckets index: its position among the shape's
    /// range atoms, its field and its need.
    primary: Option<(usize, AtomField, u32)>,
    /// The `present` bits every exact atom needs (each must hold).
    needs: Vec<u32>,
    map: KeyTable,
    buckets: Vec<Bucket>,
    cands: Vec<Cand>,
    atoms: Vec<RangeAtom>,
    /// Rules merged into this group.
    pub rules: usize,
}

impl Group {
    /// The lowest rule index below `below` of this group whose condition holds.
    /// The first step of a lookup: `None` when the group surely has no match
    /// (a header it needs is absent, a field has no value, or the filter turns
    /// the key away); else the key's hash (0 for a group without exact fields).
    /// It touches one word of the filter, so that the probes of all groups can be
    /// in flight at once.
    #[inline(always)]
    fn admit(&self, f: &Fields) -> Option<u64> {
        if !self.needs.iter().all(|&n| has(f, n)) {
            return None;
        }
        if self.exact.is_empty() {
            return Some(0);
        }
        let mut h = HASH_SEED;
        for &(field, _) in &self.exact {
            h = hash_val(h, value(f, field)?);
        }
        let h = hash_finish(h);
        self.map.may_hold(h).then_some(h)
    }

    /// What the JIT needs to admit a packet inline, as [`Group::admit`] does:
    /// the exact fields (in key order) with their needs, the needs, and the
    /// filter's words (empty for a group without exact fields).
    pub(crate) fn plan(&self) -> (&[(AtomField, u32)], &[u32], &[u64]) {
        (&self.exact, &self.needs, &self.map.filter)
    }

    /// The lowest rule index below `below` of this group whose condition holds,
    /// given what [`Group::admit`] returned.
    pub(crate) fn lookup(&self, f: &Fields, h: u64, below: u32) -> Option<u32> {
        let b = if self.exact.is_empty() {
            self.buckets.first()?
        } else {
            let mut key: Key = [(0, 0); KEY_FIELDS];
            for (k, &(field, _)) in key.iter_mut().zip(&self.exact) {
                *k = value(f, field)?;
            }
            self.buckets.get(self.map.get(&key, h)? as usize)?
        };
        let mut skip = None;
        let (start, end) = match self.primary {
            Some((p, field, need)) if b.indexed => {
                // The primary atom is not negated: without its header or value
                // it is false, and so is every candidate.
                if !has(f, need) {
                    return None;
                }
                let v = value(f, field)?;
                let i = b.bounds.partition_point(|&x| x <= v).checked_sub(1)?;
                skip = Some(p);
                *b.lists.get(i)?
            }
            _ => *b.lists.first()?,
        };
        for c in self.cands.get(start as usize..end as usize)? {
            if c.rule >= below {
                return None;
            }
            let atoms = self
                .atoms
                .get(c.atoms_start as usize..(c.atoms_start + c.atoms_len) as usize)?;
            if atoms
                .iter()
                .enumerate()
                .all(|(i, a)| Some(i) == skip || a.holds(f))
            {
                return Some(c.rule);
            }
        }
        None
    }
}

/// A filter split into merged groups and the rules left to the JIT.
#[derive(Debug, Default)]
pub struct Classifier {
    pub groups: Vec<Group>,
    /// Indices of the rules not merged, in order.
    pub inline: Vec<u32>,
}

impl Classifier {
    /// Merge the rules of `prog` whose shape has at least `min` rules.
    pub fn build(prog: &Program, min: usize) -> Classifier {
        let min = min.max(1);
        // Policies' own words, hashed fast (SipHash was a tenth of compiling
        // 100 000 range rules).
        let mut by_shape: HashMap<Shape, Vec<(u32, Atoms)>, BuildHasherDefault<WordHasher>> =
            HashMap::default();
        let mut inline = Vec::new();
        for (i, rule) in prog.rules.iter().enumerate() {
            match atoms(prog, rule) {
                Some(a) => {
                    let shape = Shape {
                        exact: a.exact.iter().map(|e| (e.field, e.need)).collect(),
                        range: a
                            .range
                            .iter()
                            .map(|r| (r.field, r.need, r.negate))
                            .collect(),
                    };
                    by_shape.entry(shape).or_default().push((i as u32, a));
                }
                None => inline.push(i as u32),
            }
        }
        let mut groups = Vec::new();
        let mut shapes: Vec<(Shape, Vec<(u32, Atoms)>)> = by_shape.into_iter().collect();
        // Deterministic order: by first rule.
        shapes.sort_by_key(|(_, rules)| rules.first().map_or(0, |r| r.0));
        for (shape, rules) in shapes {
            if rules.len() < min {
                inline.extend(rules.iter().map(|r| r.0));
                continue;
            }
            groups.push(build_group(&shape, rules));
        }
        inline.sort_unstable();
        Classifier { groups, inline }
    }

    /// The lowest rule index of any group whose condition holds for `f`, if any.
    /// The JIT does the same with the admission step inline
    /// (`jit::Translator::translate_groups`).
    pub fn lookup(&self, f: &Fields) -> Option<u32> {
        let mut best = u32::MAX;
        for g in &self.groups {
            if let Some(h) = g.admit(f)
                && let Some(r) = g.lookup(f, h, best)
            {
                best = r;
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

fn build_group(shape: &Shape, rules: Vec<(u32, Atoms)>) -> Group {
    let n = rules.len();
    let mut atoms_store: Vec<RangeAtom> = Vec::new();
    // Each key's index in `key_order` and `lists`: the keys in order of first
    // appearance, and their candidates in rule order.
    let mut per_key: HashMap<Key, u32, BuildHasherDefault<WordHasher>> = HashMap::default();
    let mut key_order: Vec<Key> = Vec::new();
    let mut lists: Vec<Vec<Cand>> = Vec::new();
    // Identical range atoms are stored once (and make a later candidate of the
    // same key with the same atoms dead).
    let mut interned: HashMap<Vec<RangeAtom>, u32, BuildHasherDefault<WordHasher>> =
        HashMap::default();
    // (key index, atoms) pairs already listed.
    let mut listed: std::collections::HashSet<(u32, u32), BuildHasherDefault<WordHasher>> =
        Default::default();
    for (rule, a) in rules {
        let start = match interned.get(&a.range) {
            Some(&s) => s,
            None => {
                let s = atoms_store.len() as u32;
                atoms_store.extend(a.range.iter().cloned());
                interned.insert(a.range.clone(), s);
                s
            }
        };
        let cand = Cand {
            rule,
            atoms_start: start,
            atoms_len: a.range.len() as u32,
        };
        // Every combination of the exact atoms' values.
        let mut keys: Vec<Key> = vec![[(0, 0); KEY_FIELDS]];
        for (i, e) in a.exact.iter().enumerate() {
            keys = keys
                .iter()
                .flat_map(|k| {
                    e.values.iter().map(move |&v| {
                        let mut k = *k;
                        k[i] = v;
                        k
                    })
                })
                .collect();
        }
        for k in keys {
            let ki = *per_key.entry(k).or_insert_with(|| {
                key_order.push(k);
                lists.push(Vec::new());
                lists.len() as u32 - 1
            });
            let Some(list) = lists.get_mut(ki as usize) else {
                continue;
            };
            // A candidate behind one with no range atom, or with the same atoms,
            // can never decide.
            if list
                .last()
                .is_some_and(|c: &Cand| c.atoms_len == 0 || c.atoms_start == start)
            {
                continue;
            }
            if !listed.insert((ki, start)) {
                continue;
            }
            list.push(cand);
        }
    }

    // The primary: the first non-negated range atom of the shape.
    let primary = shape.range.iter().position(|&(_, _, neg)| !neg);
    let mut map = Vec::new();
    let mut buckets = Vec::new();
    let mut cands = Vec::new();
    // Keys with the same candidates share one bucket (a rule whose exact atom
    // has several values lists its candidates under each of them).
    let mut shared: HashMap<Vec<(u32, u32)>, u32, BuildHasherDefault<WordHasher>> =
        HashMap::default();
    drop(per_key);
    for (k, list) in key_order.into_iter().zip(lists) {
        let same: Vec<(u32, u32)> = list.iter().map(|c| (c.rule, c.atoms_start)).collect();
        if let Some(&b) = shared.get(&same) {
            map.push((k, b));
            continue;
        }
        shared.insert(same, buckets.len() as u32);
        map.push((k, buckets.len() as u32));
        let indexed = primary.and_then(|p| index_bucket(&list, &atoms_store, p, &mut cands));
        match indexed {
            Some(b) => buckets.push(b),
            None => {
                let s = cands.len() as u32;
                cands.extend(list.iter().copied());
                buckets.push(Bucket {
                    indexed: false,
                    bounds: Vec::new(),
                    lists: vec![(s, cands.len() as u32)],
                });
            }
        }
    }
    Group {
        needs: shape.exact.iter().map(|&(_, need)| need).collect(),
        exact: shape.exact.clone(),
        primary: primary.and_then(|p| shape.range.get(p).map(|&(f, need, _)| (p, f, need))),
        map: KeyTable::build(&map, shape.exact.len()),
        buckets,
        cands,
        atoms: atoms_store,
        rules: n,
    }
}

/// Index one bucket's candidates by the elementary intervals of range atom `p`:
/// for each interval, the candidates whose atom `p` covers it, in rule order, up
/// to the first that has no other range atom. `None` when that would take more
/// than [`INDEX_BLOWUP_MAX`] entries per candidate.
///
/// Each candidate, in rule order, is appended to the intervals its atom covers
/// that are still open (no earlier candidate without other atoms closed them);
/// `next_open` (a union-find over interval indices) skips runs of closed ones,
/// so the work is the entries made plus a bisection per range, never intervals
/// times candidates.
fn index_bucket(
    list: &[Cand],
    atoms: &[RangeAtom],
    p: usize,
    out: &mut Vec<Cand>,
) -> Option<Bucket> {
    let prim = |c: &Cand| atoms.get(c.atoms_start as usize + p);
    let mut points: Vec<Val> = Vec::new();
    for c in list {
        for &(lo, hi) in &prim(c)?.set.0 {
            points.push(lo);
            if let Some(next) = hi.1.checked_add(1) {
                points.push((hi.0, next));
            } else if let Some(t) = hi.0.checked_add(1) {
                points.push((t, 0));
            }
        }
    }
    points.sort_unstable();
    points.dedup();
    let budget = list.len().saturating_mul(INDEX_BLOWUP_MAX).max(64);
    // Interval `j` is `points[j]` up to the next point; `next_open[j]` leads to
    // the first open interval at or after `j` (`points.len()`: none).
    let mut next_open: Vec<u32> = (0..=points.len() as u32).collect();
    let find = |next_open: &mut Vec<u32>, mut j: usize| -> usize {
        while next_open[j] as usize != j {
            let up = next_open[next_open[j] as usize];
            next_open[j] = up;
            j = up as usize;
        }
        j
    };
    let mut per: Vec<Vec<u32>> = vec![Vec::new(); points.len()];
    let mut entries = 0usize;
    for (ci, c) in list.iter().enumerate() {
        let closes = c.atoms_len == 1;
        for &(lo, hi) in &prim(c)?.set.0 {
            // The intervals from the one starting at `lo` to the last before
            // the first point above `hi`.
            let end = points.partition_point(|&x| x <= hi);
            let mut j = find(&mut next_open, points.partition_point(|&x| x < lo));
            while j < end {
                per[j].push(ci as u32);
                entries += 1;
                if entries > budget {
                    return None;
                }
                if closes {
                    next_open[j] = j as u32 + 1;
                }
                j = find(&mut next_open, j + 1);
            }
        }
    }
    let mut lists = Vec::with_capacity(points.len());
    for cs in &per {
        let s = out.len() as u32;
        out.extend(cs.iter().filter_map(|&ci| list.get(ci as usize).copied()));
        lists.push((s, out.len() as u32));
    }
    Some(Bucket {
        indexed: true,
        bounds: points,
        lists,
    })
}
