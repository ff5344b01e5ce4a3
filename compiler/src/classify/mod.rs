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
//! hashes the packet's exact fields, finds the primary's interval (a table of the
//! 256 values of a one-byte field, else a bisection), and tests the remaining
//! range atoms of the candidates in order; the first that passes is the group's
//! answer. Before the key, a group tests what all its rules need: the headers of
//! its exact and non-negated range atoms, and for a non-negated integer range
//! atom whose union over the group is a few ranges, that union (a *guard*). The
//! filter's answer is the lowest rule index over all groups and the rules left
//! unmerged, which the JIT compiles inline: those before every merged rule
//! first, the others tested only when their index is lower than the groups'
//! answer.
//!
//! This module is an optimisation of the JIT only: the reference interpreter still
//! runs the rules one by one, and the differential tests hold the two together.
//! Its only loops over rules run at build time; a lookup's loops are over the
//! groups (one per shape) and a bucket's candidates, which is short unless many
//! rules of one shape differ only in atoms the primary does not index.

mod group;
mod keys;

pub(crate) use group::ExactOnly;
pub use group::Group;
pub use keys::WordHasher;
pub(crate) use keys::{
    FILTER_BIT2_SHIFT, FILTER_WORD_SHIFT, HASH_FINISH_MUL, HASH_MUL, HASH_ROT, HASH_SEED,
};

use crate::interp;
use crate::ir::{AddrField, Cond, CondKind, IntField, MacField, Program, Rule, Set};
use lbp_abi::{Fields, present};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

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
#[inline(always)]
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
#[inline(always)]
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
            groups.push(group::build_group(&shape, rules));
        }
        inline.sort_unstable();
        Classifier { groups, inline }
    }

    /// The lowest rule index of any group (`u32::MAX` without groups).
    pub fn first_merged(&self) -> u32 {
        self.groups
            .iter()
            .map(|g| g.first_rule)
            .min()
            .unwrap_or(u32::MAX)
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
