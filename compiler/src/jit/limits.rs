//! The JIT's limits: what is inlined and what goes through a helper, and the
//! largest policy it compiles into one function.

/// Sets with at most this many ranges (or MACs) per family are tested inline;
/// larger ones through a helper call.
pub const INLINE_MAX: usize = 4;

/// Per family, at most this many service entries, own addresses or routes are
/// tested inline in the stages after the filter; larger tables through a helper.
pub const INLINE_TAIL_MAX: usize = 16;

/// Conditions nested deeper than this are refused (the checker's limit on nesting
/// keeps real policies far below it); it bounds the translator's recursion.
pub(super) const MAX_DEPTH: u32 = 1000;
/// The most condition nodes and rules compiled into one function (see `compile`).
/// Measured here: 10 000 rules of ~5 nodes compile in 2 s; 40 000 rules of 3 nodes
/// took 128 s.
pub const MAX_COND_NODES: usize = 60_000;
pub const MAX_RULES: usize = 12_000;

/// Filters whose inline rules have at most this many condition nodes are
/// emitted once per family (three copies; the one for packets without IP folds
/// almost every address test away); larger ones once, testing the family at run
/// time, so that compile time stays linear in the rules.
pub const SPECIALIZE_MAX_NODES: usize = 2_000;
