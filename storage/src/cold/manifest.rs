//! Manifests: the segments of one partition with their `_seq` ranges and per-column
//! statistics, and the key ranges a lookup searches to find the segments that may hold
//! a key.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::reader::SegmentHandle;

/// A statistic value of a column, in the column's physical kind.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// The column's stable id (the Parquet field id).
    pub id: u32,
    pub min: Option<Stat>,
    pub max: Option<Stat>,
    pub nulls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    /// Every row of the partition at or below this `_seq` was flushed when the segment
    /// was written: newer segments have higher ones, and among two versions of a key
    /// the one in the segment with the higher `covered_seq` wins.
    pub covered_seq: u64,
    pub schema_version: u32,
    pub columns: Vec<ColumnStats>,
    pub created_ms: u64,
    /// The segment's reader state once a key lookup loaded it.
    #[serde(skip)]
    pub handle: Derived<Arc<SegmentHandle>>,
}

impl SegmentMeta {
    pub fn stats(&self, column: u32) -> Option<&ColumnStats> {
        self.columns.iter().find(|c| c.id == column)
    }
}

impl ColumnStats {
    /// Whether a column with these statistics may hold `v` (unknown bounds allow all).
    pub fn may_hold(&self, v: &Stat) -> bool {
        match (&self.min, &self.max) {
            (Some(min), Some(max)) => min <= v && v <= max,
            _ => true,
        }
    }
}

/// The segments of one partition, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub segments: Vec<SegmentMeta>,
    pub next_segment: u64,
    /// The highest `covered_seq` of any flush: every hot row at or below it is cold too.
    pub covered_seq: u64,
    /// Indexes of `segments` from the newest to the oldest, worked out on first use
    /// (a committed manifest is shared and never changes).
    #[serde(skip)]
    newest: Derived<Vec<usize>>,
    /// The key ranges of the segments, worked out on the first key lookup.
    #[serde(skip)]
    key_ranges: Derived<KeyRanges>,
}

/// A value worked out from its owner on first use. A copy starts empty, as the copy's
/// owner may then change; it takes no part in comparisons.
pub struct Derived<T>(pub(crate) std::sync::OnceLock<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(set)"
        } else {
            "Derived(unset)"
        })
    }
}

/// The segments' ranges of one column (the key), to find those that may hold a key
/// without visiting every segment.
struct KeyRanges {
    column: u32,
    /// Segments with both bounds, by lower bound: (min, max, newest-first rank, index).
    by_min: Vec<(Stat, Stat, usize, usize)>,
    /// The highest max among `by_min[..=i]`: no segment before a position whose value
    /// is below the key may hold it.
    max_upto: Vec<Stat>,
    /// Segments without bounds for the column, which may hold any key: (rank, index).
    unbounded: Vec<(usize, usize)>,
}

impl KeyRanges {
    fn new(m: &Manifest, column: u32) -> Self {
        let mut by_min = vec![];
        let mut unbounded = vec![];
        for (rank, &i) in m.newest_order().iter().enumerate() {
            match m.segments[i].stats(column).map(|c| (&c.min, &c.max)) {
                Some((Some(lo), Some(hi))) => by_min.push((lo.clone(), hi.clone(), rank, i)),
                _ => unbounded.push((rank, i)),
            }
        }
        by_min.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut max_upto: Vec<Stat> = Vec::with_capacity(by_min.len());
        for (_, hi, _, _) in &by_min {
            let top = match max_upto.last() {
                Some(m) if m >= hi => m.clone(),
                _ => hi.clone(),
            };
            max_upto.push(top);
        }
        Self {
            column,
            by_min,
            max_upto,
            unbounded,
        }
    }
}

impl Manifest {
    pub fn new(segments: Vec<SegmentMeta>, next_segment: u64, covered_seq: u64) -> Self {
        Self {
            segments,
            next_segment,
            covered_seq,
            newest: Derived::default(),
            key_ranges: Derived::default(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
    fn newest_order(&self) -> &[usize] {
        self.newest.0.get_or_init(|| {
            let mut v: Vec<usize> = (0..self.segments.len()).collect();
            v.sort_by_key(|&i| std::cmp::Reverse((self.segments[i].covered_seq, self.segments[i].id)));
            v
        })
    }

    /// Segments from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.newest_order().iter().map(|&i| &self.segments[i])
    }

    /// The segments whose statistics of `column` allow the value `key`, newest first.
    /// The ranges are sorted once per manifest, so a lookup visits only the segments
    /// around the key rather than all of them.
    pub fn holding(&self, column: u32, key: &Stat) -> Vec<&SegmentMeta> {
        let r = self.key_ranges.0.get_or_init(|| KeyRanges::new(self, column));
        if r.column != column {
            return self
                .newest_first()
                .filter(|s| s.stats(column).is_none_or(|c| c.may_hold(key)))
                .collect();
        }
        let end = r.by_min.partition_point(|(lo, ..)| lo <= key);
        let mut hits = r.unbounded.clone();
        for i in (0..end).rev() {
            if r.max_upto[i] < *key {
                break;
            }
            let (_, hi, rank, seg) = &r.by_min[i];
            if hi >= key {
                hits.push((*rank, *seg));
            }
        }
        hits.sort_unstable();
        hits.into_iter().map(|(_, i)| &self.segments[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, covered: u64, key: Option<(i64, i64)>) -> SegmentMeta {
        SegmentMeta {
            id,
            file: format!("s{id}"),
            rows: 1,
            bytes: 1,
            min_seq: 1,
            max_seq: covered,
            covered_seq: covered,
            schema_version: 1,
            columns: vec![ColumnStats {
                id: 7,
                min: key.map(|k| Stat::Int(k.0)),
                max: key.map(|k| Stat::Int(k.1)),
                nulls: 0,
            }],
            created_ms: 0,
            handle: Derived::default(),
        }
    }

    /// The sorted key ranges give what a pass over every segment's statistics gives,
    /// in the same (newest first) order, for overlapping, nested, disjoint and
    /// unbounded segments.
    #[test]
    fn segments_holding_a_key_are_those_whose_range_allows_it_newest_first() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for round in 0..200 {
            let n = 1 + next(40);
            let segs: Vec<SegmentMeta> = (0..n)
                .map(|i| {
                    let key = (next(10) != 0).then(|| {
                        let lo = next(1000) as i64;
                        (lo, lo + next(if round % 2 == 0 { 30 } else { 400 }) as i64)
                    });
                    seg(i, next(5) * 100 + i, key)
                })
                .collect();
            let m = Manifest::new(segs, n, 0);
            for _ in 0..50 {
                let k = Stat::Int(next(1100) as i64 - 20);
                let want: Vec<u64> = m
                    .newest_first()
                    .filter(|s| s.stats(7).is_none_or(|c| c.may_hold(&k)))
                    .map(|s| s.id)
                    .collect();
                let got: Vec<u64> = m.holding(7, &k).iter().map(|s| s.id).collect();
                assert_eq!(got, want, "round {round}, key {k:?}");
                // another column falls back to the full pass
                assert_eq!(m.holding(8, &k).len(), m.segments.len());
            }
        }
    }
}
