//! A merged group: the rules of one shape, their buckets of candidates, and a
//! lookup.

use super::keys::{Key, KeyTable, WordHasher, hash_finish, hash_val};
use super::{
    AtomField, Atoms, HASH_SEED, INDEX_BLOWUP_MAX, KEY_FIELDS, RangeAtom, Shape, Val, has, value,
};
use crate::ir::IntField;
use lbp_abi::Fields;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// A guard whose union of ranges has at most this many is tested inline.
const GUARD_RANGES_MAX: usize = 4;
/// A bucket of a one-byte primary field with more interval starts than this is
/// indexed by a table of the 256 values, not by bisection.
const DIRECT_MIN_POINTS: usize = 8;

/// A candidate: a rule and its range atoms (a slice of [`Group::atoms`]).
#[derive(Clone, Copy, Debug)]
struct Cand {
    rule: u32,
    atoms_start: u32,
    atoms_len: u32,
}

/// How a bucket finds the list of a packet's primary value.
#[derive(Debug)]
enum Index {
    /// Not indexed: one list, and every range atom is tested.
    One,
    /// A field of one byte: each value's elementary interval (`u16::MAX`:
    /// before the first).
    Direct(Box<[u16; 256]>),
    /// The intervals' starts, all of the family tag `tag` and below 2^64 (a
    /// last start at 2^64 left out: no value of the tag reaches it but the
    /// last interval); a value of a higher tag is in the last interval, `last`.
    Narrow {
        tag: u8,
        starts: Vec<u64>,
        last: u32,
    },
    /// The intervals' starts.
    Wide(Vec<Val>),
}

impl Index {
    fn new(points: Vec<Val>, field: AtomField) -> Index {
        let Some(&(tag, _)) = points.first() else {
            return Index::Wide(points);
        };
        if let AtomField::Int(k) = field
            && points.len() > DIRECT_MIN_POINTS
            && points.len() < usize::from(u16::MAX)
            && byte_field(k.field())
        {
            let mut t = Box::new([u16::MAX; 256]);
            for (v, slot) in t.iter_mut().enumerate() {
                let i = points.partition_point(|&x| x <= (0, v as u128));
                if let Some(i) = i.checked_sub(1) {
                    *slot = i as u16;
                }
            }
            return Index::Direct(t);
        }
        let last = points.len().saturating_sub(1) as u32;
        let mut starts = Vec::with_capacity(points.len());
        for (j, &(t, v)) in points.iter().enumerate() {
            match u64::try_from(v) {
                Ok(v) if t == tag => starts.push(v),
                _ if t == tag && v == 1u128 << 64 && j + 1 == points.len() => {}
                _ => return Index::Wide(points),
            }
        }
        Index::Narrow { tag, starts, last }
    }

    /// The elementary interval of `v`, if any.
    #[inline(always)]
    fn interval(&self, (t, v): Val) -> Option<usize> {
        match self {
            Index::One => Some(0),
            Index::Direct(table) => {
                let i = *table.get(usize::try_from(v).ok()?)?;
                (t == 0 && i != u16::MAX).then_some(usize::from(i))
            }
            Index::Narrow { tag, starts, last } => {
                if t < *tag {
                    return None;
                }
                match u64::try_from(v) {
                    Ok(v) if t == *tag => starts.partition_point(|&x| x <= v).checked_sub(1),
                    _ => Some(*last as usize),
                }
            }
            Index::Wide(starts) => starts.partition_point(|&x| x <= (t, v)).checked_sub(1),
        }
    }
}

/// Whether an integer field is one byte wide (its values are below 256).
fn byte_field(f: IntField) -> bool {
    matches!(
        f,
        IntField::IpVersion
            | IntField::IpProto
            | IntField::IpTtl
            | IntField::IcmpType
            | IntField::IcmpCode
    )
}

/// The candidates of one exact key.
#[derive(Debug)]
struct Bucket {
    index: Index,
    /// Per elementary interval (or the one list): a range of [`Group::cands`].
    lists: Vec<(u32, u32)>,
}

/// A necessary condition of every rule of a group, tested before its key: an
/// integer field is in one of a few ranges (the union of one non-negated range
/// atom's sets over the group's rules).
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) field: IntField,
    pub(crate) ranges: Vec<(u64, u64)>,
}

/// [`Group::exact_only`].
pub(crate) struct ExactOnly<'g> {
    pub(crate) exact: &'g [(AtomField, u32)],
    pub(crate) needs: &'g [u32],
    pub(crate) ip: bool,
    /// Each key (its first `exact.len()` values) and its answer.
    pub(crate) keys: Vec<(Key, u32)>,
    /// Every rule merged into the group.
    pub(crate) rules: Vec<u32>,
}

/// What the JIT tests inline before calling a group's lookup, as
/// [`Group::admit`] does: each of `needs` holds, the packet has an address when
/// `ip`, each guard holds, and (with exact fields) the key's hash is in the
/// filter.
pub(crate) struct Plan<'g> {
    /// The exact fields, in key order, with their needs.
    pub(crate) exact: &'g [(AtomField, u32)],
    pub(crate) needs: &'g [u32],
    pub(crate) ip: bool,
    pub(crate) guards: &'g [Guard],
    /// The filter's words (empty for a group without exact fields).
    pub(crate) filter: &'g [u64],
}

/// The merged rules of one shape.
#[derive(Debug)]
pub struct Group {
    exact: Vec<(AtomField, u32)>,
    /// The range atom that indexed buckets index: its position among the shape's
    /// range atoms, its field and its need.
    primary: Option<(usize, AtomField, u32)>,
    /// The `present` bits every exact and non-negated range atom needs (each
    /// must hold).
    needs: Vec<u32>,
    /// Whether an exact or non-negated range atom tests an address (which a
    /// packet without IP does not have).
    ip: bool,
    guards: Vec<Guard>,
    map: KeyTable,
    buckets: Vec<Bucket>,
    cands: Vec<Cand>,
    atoms: Vec<RangeAtom>,
    /// The group's lowest rule index.
    pub(crate) first_rule: u32,
    /// Rules merged into this group.
    pub rules: usize,
}

impl Group {
    /// The first step of a lookup: `None` when the group surely has no match
    /// (a header it needs is absent, a field has no value, a guard fails, or
    /// the filter turns the key away); else the key's hash (0 for a group
    /// without exact fields). It touches one word of the filter, so that the
    /// probes of all groups can be in flight at once.
    #[inline(always)]
    pub(super) fn admit(&self, f: &Fields) -> Option<u64> {
        if !self.needs.iter().all(|&n| has(f, n)) {
            return None;
        }
        if self.ip && value(f, AtomField::Addr(true)).is_none() {
            return None;
        }
        for g in &self.guards {
            let (_, v) = value(f, AtomField::Int(super::IntFieldKey::of(g.field)))?;
            if !g
                .ranges
                .iter()
                .any(|&(lo, hi)| u128::from(lo) <= v && v <= u128::from(hi))
            {
                return None;
            }
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

    /// A group of exact atoms only (no range atom, so no primary and no
    /// guard): its exact fields with their `present` needs, whether it
    /// needs an IP address, and each key with the lowest rule of its bucket
    /// (the bucket's answer: its candidates have nothing left to test).
    /// `None` for any other group. The eBPF back end makes a hash map of it.
    pub(crate) fn exact_only(&self) -> Option<ExactOnly<'_>> {
        if self.primary.is_some() || !self.atoms.is_empty() || !self.guards.is_empty() {
            return None;
        }
        let mut keys = Vec::with_capacity(self.map.len());
        for (key, bucket) in self.map.entries() {
            let b = self.buckets.get(*bucket as usize)?;
            let &(start, _) = b.lists.first()?;
            keys.push((*key, self.cands.get(start as usize)?.rule));
        }
        Some(ExactOnly {
            exact: &self.exact,
            needs: &self.needs,
            ip: self.ip,
            keys,
            rules: self.cands.iter().map(|c| c.rule).collect(),
        })
    }

    /// What the JIT needs to admit a packet inline, as [`Group::admit`] does.
    pub(crate) fn plan(&self) -> Plan<'_> {
        Plan {
            exact: &self.exact,
            needs: &self.needs,
            ip: self.ip,
            guards: &self.guards,
            filter: &self.map.filter,
        }
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
            Some((p, field, need)) if !matches!(b.index, Index::One) => {
                // The primary atom is not negated: without its header or value
                // it is false, and so is every candidate.
                if !has(f, need) {
                    return None;
                }
                let i = b.index.interval(value(f, field)?)?;
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

/// The union of range atom `p`'s sets over `rules` when it is an integer
/// field's, not negated, and the union has at most [`GUARD_RANGES_MAX`] ranges.
fn guard(shape: &Shape, rules: &[(u32, Atoms)], p: usize) -> Option<Guard> {
    let &(AtomField::Int(k), _, false) = shape.range.get(p)? else {
        return None;
    };
    let mut all: Vec<(u128, u128)> = Vec::new();
    for (_, a) in rules {
        all.extend(
            a.range
                .get(p)?
                .set
                .0
                .iter()
                .map(|&((_, lo), (_, hi))| (lo, hi)),
        );
    }
    all.sort_unstable();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in all {
        let (lo, hi) = (u64::try_from(lo).ok()?, u64::try_from(hi).ok()?);
        match ranges.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => {
                if ranges.len() == GUARD_RANGES_MAX {
                    return None;
                }
                ranges.push((lo, hi));
            }
        }
    }
    if ranges == [(0, u64::MAX)] {
        return None;
    }
    Some(Guard {
        field: k.field(),
        ranges,
    })
}

pub(super) fn build_group(shape: &Shape, rules: Vec<(u32, Atoms)>) -> Group {
    let n = rules.len();
    let first_rule = rules.first().map_or(0, |r| r.0);
    let guards: Vec<Guard> = (0..shape.range.len())
        .filter_map(|p| guard(shape, &rules, p))
        .collect();
    let mut needs: Vec<u32> = shape.exact.iter().map(|&(_, need)| need).collect();
    needs.extend(
        shape
            .range
            .iter()
            .filter(|&&(_, _, neg)| !neg)
            .map(|&(_, need, _)| need),
    );
    needs.retain(|&n| n != 0);
    needs.sort_unstable();
    needs.dedup();
    let ip = shape
        .exact
        .iter()
        .map(|&(f, _)| f)
        .chain(shape.range.iter().filter(|r| !r.2).map(|r| r.0))
        .any(|f| matches!(f, AtomField::Addr(_)));
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
    let primary_field = primary.and_then(|p| shape.range.get(p).map(|r| r.0));
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
        let indexed = primary
            .zip(primary_field)
            .and_then(|(p, field)| index_bucket(&list, &atoms_store, p, field, &mut cands));
        match indexed {
            Some(b) => buckets.push(b),
            None => {
                let s = cands.len() as u32;
                cands.extend(list.iter().copied());
                buckets.push(Bucket {
                    index: Index::One,
                    lists: vec![(s, cands.len() as u32)],
                });
            }
        }
    }
    Group {
        needs,
        ip,
        guards,
        exact: shape.exact.clone(),
        primary: primary.and_then(|p| shape.range.get(p).map(|&(f, need, _)| (p, f, need))),
        map: KeyTable::build(map, shape.exact.len()),
        buckets,
        cands,
        atoms: atoms_store,
        first_rule,
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
    field: AtomField,
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
        index: Index::new(points, field),
        lists,
    })
}
