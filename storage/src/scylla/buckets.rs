//! Message buckets and history paging, as pure functions.
//!
//! A room's messages live in partitions `(room_id, bucket)` with
//! `bucket = seq >> 14`: bucket 0 holds seqs 1..=16383, bucket `b > 0`
//! holds `b * 16384 ..= b * 16384 + 16383`. Seqs are gapless, so every
//! bucket below the one holding the head is full.
//!
//! [`HistoryCursor`] plans which bucket ranges a history read touches:
//! `After` walks buckets upward from the lower bound and moves on only
//! when a bucket was read to its last seq (a full bucket); `Before` walks
//! downward from the upper bound. When `Before` starts above the head (the
//! usual "latest page" read, or a bound past the end), the first bucket is
//! empty and the cursor asks for the head once ([`Step::NeedHead`]) instead
//! of stepping through empty buckets. Each step is one single-partition
//! query with a `LIMIT` of what is still wanted.

use crate::model::HistoryRange;

/// Bits of seq below the bucket number.
pub const BUCKET_BITS: u32 = 14;
/// Seqs per bucket (16,384).
pub const BUCKET_SIZE: u64 = 1 << BUCKET_BITS;
/// The highest seq that can be stored (CQL bigint).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The bucket holding `seq`.
pub fn bucket_of(seq: u64) -> i64 {
    // seq >> 14 < 2^50, so it always fits.
    i64::try_from(seq >> BUCKET_BITS).unwrap_or(i64::MAX)
}

/// First seq of bucket `b` (bucket 0 starts at seq 1; seq 0 is never used).
pub fn bucket_first(b: i64) -> u64 {
    let start = u64::try_from(b).unwrap_or(0) << BUCKET_BITS;
    start.max(1)
}

/// Last seq of bucket `b`.
pub fn bucket_last(b: i64) -> u64 {
    (u64::try_from(b).unwrap_or(0) << BUCKET_BITS) | (BUCKET_SIZE - 1)
}

/// The buckets holding seqs `lo..=hi`, in ascending order (empty when
/// `lo > hi`).
pub fn buckets_between(lo: u64, hi: u64) -> std::ops::RangeInclusive<i64> {
    if lo > hi {
        // An empty inclusive range.
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0;
    }
    bucket_of(lo)..=bucket_of(hi)
}

/// Splits seqs `lo..=hi` into per-bucket inclusive ranges, ascending.
pub fn split_by_bucket(lo: u64, hi: u64) -> Vec<(i64, u64, u64)> {
    buckets_between(lo, hi)
        .map(|b| (b, lo.max(bucket_first(b)), hi.min(bucket_last(b))))
        .collect()
}

/// One single-partition query of a history read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRead {
    /// The bucket (partition) to read.
    pub bucket: i64,
    /// Lowest seq wanted (inclusive).
    pub lo: u64,
    /// Highest seq wanted (inclusive).
    pub hi: u64,
    /// At most this many rows.
    pub limit: u32,
    /// Highest seqs first (`Before`), else lowest first.
    pub descending: bool,
}

/// What a history read does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run this query and report with [`HistoryCursor::on_rows`].
    Read(BucketRead),
    /// Read the room's head and report with [`HistoryCursor::on_head`].
    NeedHead,
    /// Nothing more to read.
    Done,
}

/// The paging state of one [`HistoryRange`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryCursor {
    /// Ascending from `next_lo` to `hi`.
    After {
        /// Next seq wanted.
        next_lo: u64,
        /// Upper bound (inclusive).
        hi: u64,
        /// Rows still wanted.
        remaining: u32,
        /// No more reads.
        done: bool,
    },
    /// Descending from `next_hi` to seq 1.
    Before {
        /// Next (highest) seq wanted.
        next_hi: u64,
        /// Rows still wanted.
        remaining: u32,
        /// The head must be read before the next query.
        need_head: bool,
        /// The head has been read.
        head_known: bool,
        /// No more reads.
        done: bool,
    },
}

impl HistoryCursor {
    /// The cursor of a fresh read.
    pub fn new(range: HistoryRange) -> Self {
        match range {
            HistoryRange::After {
                after_seq,
                before_seq,
                limit,
            } => {
                let next_lo = after_seq.saturating_add(1).max(1);
                let hi = before_seq.map_or(MAX_SEQ, |b| b.saturating_sub(1).min(MAX_SEQ));
                HistoryCursor::After {
                    next_lo,
                    hi,
                    remaining: limit,
                    done: limit == 0 || after_seq == u64::MAX || next_lo > hi,
                }
            }
            HistoryRange::Before { before_seq, limit } => {
                let next_hi = before_seq.saturating_sub(1).min(MAX_SEQ);
                HistoryCursor::Before {
                    next_hi,
                    remaining: limit,
                    // A bound past any storable seq can only mean "the
                    // latest page": ask for the head straight away.
                    need_head: before_seq > MAX_SEQ,
                    head_known: false,
                    done: limit == 0 || next_hi == 0,
                }
            }
        }
    }

    /// Whether results come highest seq first (and must be reversed).
    pub fn descending(&self) -> bool {
        matches!(self, HistoryCursor::Before { .. })
    }

    /// The next thing to do.
    pub fn next_step(&self) -> Step {
        match *self {
            HistoryCursor::After {
                next_lo,
                hi,
                remaining,
                done,
            } => {
                if done || remaining == 0 || next_lo > hi {
                    return Step::Done;
                }
                let b = bucket_of(next_lo);
                Step::Read(BucketRead {
                    bucket: b,
                    lo: next_lo,
                    hi: hi.min(bucket_last(b)),
                    limit: remaining,
                    descending: false,
                })
            }
            HistoryCursor::Before {
                next_hi,
                remaining,
                need_head,
                done,
                ..
            } => {
                if done || remaining == 0 || next_hi == 0 {
                    return Step::Done;
                }
                if need_head {
                    return Step::NeedHead;
                }
                let b = bucket_of(next_hi);
                Step::Read(BucketRead {
                    bucket: b,
                    lo: bucket_first(b),
                    hi: next_hi,
                    limit: remaining,
                    descending: true,
                })
            }
        }
    }

    /// Reports the seqs a [`Step::Read`] returned (in the order returned).
    pub fn on_rows(&mut self, read: &BucketRead, seqs: &[u64]) {
        let got = u32::try_from(seqs.len()).unwrap_or(u32::MAX);
        match self {
            HistoryCursor::After {
                next_lo,
                remaining,
                done,
                ..
            } => {
                *remaining = remaining.saturating_sub(got);
                let bucket_end = bucket_last(read.bucket);
                // Move to the next bucket only when this one was read to
                // its very last seq: then it is full and the next one may
                // hold more. Otherwise the head is in this bucket.
                let reached_end = read.hi == bucket_end && seqs.last() == Some(&bucket_end);
                if *remaining == 0 || !reached_end || bucket_end >= MAX_SEQ {
                    *done = true;
                } else {
                    *next_lo = bucket_end + 1;
                }
            }
            HistoryCursor::Before {
                next_hi,
                remaining,
                need_head,
                head_known,
                done,
            } => {
                *remaining = remaining.saturating_sub(got);
                if *remaining == 0 {
                    *done = true;
                } else if seqs.is_empty() && !*head_known && read.bucket > 0 {
                    // Nothing at or below the bound in this bucket: the
                    // bound may be far above the head.
                    *need_head = true;
                } else if read.lo <= 1 {
                    *done = true;
                } else {
                    *next_hi = read.lo - 1;
                }
            }
        }
    }

    /// Reports the room's head (0 for an unknown or empty room).
    pub fn on_head(&mut self, head: u64) {
        if let HistoryCursor::Before {
            next_hi,
            need_head,
            head_known,
            done,
            ..
        } = self
        {
            *need_head = false;
            *head_known = true;
            let first = bucket_first(bucket_of(*next_hi));
            if head == 0 {
                *done = true;
            } else if head < first {
                // Jump straight to the head's bucket.
                *next_hi = head;
            } else if first <= 1 {
                *done = true;
            } else {
                // The head is in this bucket but nothing was found at or
                // below the bound (a claimed batch not yet written): go on
                // downward.
                *next_hi = (*next_hi).min(first - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn bucket_boundaries() {
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(16_383), 0);
        assert_eq!(bucket_of(16_384), 1);
        assert_eq!(bucket_of(16_385), 1);
        assert_eq!(bucket_of(32_767), 1);
        assert_eq!(bucket_of(32_768), 2);
        assert_eq!(bucket_of(MAX_SEQ), (1i64 << 49) - 1);
        assert_eq!(bucket_first(0), 1);
        assert_eq!(bucket_last(0), 16_383);
        assert_eq!(bucket_first(1), 16_384);
        assert_eq!(bucket_last(1), 32_767);
        assert_eq!(bucket_last(bucket_of(MAX_SEQ)), MAX_SEQ);
        for seq in [1u64, 2, 16_383, 16_384, 16_385, 40_000, MAX_SEQ] {
            let b = bucket_of(seq);
            assert!(bucket_first(b) <= seq && seq <= bucket_last(b), "{seq}");
        }
    }

    #[test]
    fn ranges_split_at_bucket_edges() {
        assert_eq!(
            split_by_bucket(16_380, 16_390),
            vec![(0, 16_380, 16_383), (1, 16_384, 16_390)]
        );
        assert_eq!(split_by_bucket(16_384, 16_384), vec![(1, 16_384, 16_384)]);
        assert_eq!(split_by_bucket(16_383, 16_383), vec![(0, 16_383, 16_383)]);
        assert_eq!(
            split_by_bucket(1, 40_000),
            vec![(0, 1, 16_383), (1, 16_384, 32_767), (2, 32_768, 40_000)]
        );
        assert!(split_by_bucket(5, 4).is_empty());
        assert_eq!(buckets_between(16_383, 16_385), 0..=1);
    }

    /// Runs a cursor against a model room holding `seqs` with head `head`;
    /// returns the result (ascending) and the number of queries made.
    fn run(range: HistoryRange, seqs: &BTreeSet<u64>, head: u64) -> (Vec<u64>, usize) {
        let mut cursor = HistoryCursor::new(range);
        let mut out = Vec::new();
        let mut queries = 0;
        loop {
            match cursor.next_step() {
                Step::Done => break,
                Step::NeedHead => {
                    queries += 1;
                    cursor.on_head(head);
                }
                Step::Read(r) => {
                    queries += 1;
                    assert!(r.lo <= r.hi, "{r:?}");
                    assert_eq!(bucket_of(r.lo), r.bucket, "single partition: {r:?}");
                    assert_eq!(bucket_of(r.hi), r.bucket, "single partition: {r:?}");
                    let mut rows: Vec<u64> = seqs.range(r.lo..=r.hi).copied().collect();
                    if r.descending {
                        rows.reverse();
                    }
                    rows.truncate(r.limit as usize);
                    cursor.on_rows(&r, &rows);
                    out.extend(rows);
                }
            }
            assert!(queries < 1000, "runaway cursor for {range:?}");
        }
        if cursor.descending() {
            out.reverse();
        }
        (out, queries)
    }

    /// What the range means on a gapless room with head `head`.
    fn model(range: HistoryRange, head: u64) -> Vec<u64> {
        let all = 1..=head;
        match range {
            HistoryRange::After {
                after_seq,
                before_seq,
                limit,
            } => all
                .filter(|s| *s > after_seq && before_seq.is_none_or(|b| *s < b))
                .take(limit as usize)
                .collect(),
            HistoryRange::Before { before_seq, limit } => {
                let mut v: Vec<u64> = all
                    .rev()
                    .filter(|s| *s < before_seq)
                    .take(limit as usize)
                    .collect();
                v.reverse();
                v
            }
        }
    }

    fn interesting_seqs(head: u64) -> Vec<u64> {
        let mut v = vec![
            0,
            1,
            2,
            100,
            16_382,
            16_383,
            16_384,
            16_385,
            32_767,
            32_768,
            32_769,
            40_000,
            1_000_000,
            MAX_SEQ,
            u64::MAX - 1,
            u64::MAX,
        ];
        v.extend([head.saturating_sub(1), head, head + 1, head + 2]);
        v
    }

    #[test]
    fn cursor_matches_the_model() {
        for head in [
            0u64, 1, 5, 16_382, 16_383, 16_384, 16_385, 32_767, 32_768, 40_000,
        ] {
            let seqs: BTreeSet<u64> = (1..=head).collect();
            for a in interesting_seqs(head) {
                for limit in [0u32, 1, 2, 3, 50, 20_000, u32::MAX] {
                    let ranges = [
                        HistoryRange::After {
                            after_seq: a,
                            before_seq: None,
                            limit,
                        },
                        HistoryRange::Before {
                            before_seq: a,
                            limit,
                        },
                        HistoryRange::After {
                            after_seq: a,
                            before_seq: Some(a.saturating_add(3)),
                            limit,
                        },
                        HistoryRange::After {
                            after_seq: a.saturating_sub(20_000),
                            before_seq: Some(a),
                            limit,
                        },
                    ];
                    for range in ranges {
                        let (got, queries) = run(range, &seqs, head);
                        let want = model(range, head);
                        assert_eq!(got, want, "{range:?} with head {head}");
                        let span = match (want.first(), want.last()) {
                            (Some(f), Some(l)) => (bucket_of(*l) - bucket_of(*f)) as usize + 1,
                            _ => 0,
                        };
                        assert!(
                            queries <= span + 2,
                            "{range:?} with head {head}: {queries} queries for {span} buckets"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn latest_page_reads_the_head_first() {
        let seqs: BTreeSet<u64> = (1..=20_000).collect();
        let range = HistoryRange::Before {
            before_seq: u64::MAX,
            limit: 10,
        };
        let mut c = HistoryCursor::new(range);
        assert_eq!(c.next_step(), Step::NeedHead);
        c.on_head(20_000);
        assert_eq!(
            c.next_step(),
            Step::Read(BucketRead {
                bucket: 1,
                lo: 16_384,
                hi: 20_000,
                limit: 10,
                descending: true
            })
        );
        let (got, queries) = run(range, &seqs, 20_000);
        assert_eq!(got, (19_991..=20_000).collect::<Vec<_>>());
        assert_eq!(queries, 2);
    }

    #[test]
    fn paging_crosses_the_bucket_edge() {
        let seqs: BTreeSet<u64> = (1..=16_500).collect();
        let (got, queries) = run(
            HistoryRange::After {
                after_seq: 16_373,
                before_seq: None,
                limit: 20,
            },
            &seqs,
            16_500,
        );
        assert_eq!(got, (16_374..=16_393).collect::<Vec<_>>());
        assert_eq!(queries, 2);
        let (got, queries) = run(
            HistoryRange::Before {
                before_seq: 16_394,
                limit: 20,
            },
            &seqs,
            16_500,
        );
        assert_eq!(got, (16_374..=16_393).collect::<Vec<_>>());
        assert_eq!(queries, 2);
        // Exactly at the edge: one query each.
        let (got, queries) = run(
            HistoryRange::Before {
                before_seq: 16_384,
                limit: 1,
            },
            &seqs,
            16_500,
        );
        assert_eq!((got, queries), (vec![16_383], 1));
        let (got, queries) = run(
            HistoryRange::After {
                after_seq: 16_383,
                before_seq: None,
                limit: 1,
            },
            &seqs,
            16_500,
        );
        assert_eq!((got, queries), (vec![16_384], 1));
    }

    #[test]
    fn holes_never_produce_wrong_rows() {
        // A claimed batch not yet written (seqs 16_380..=16_390 missing):
        // reads may stop early but never return anything out of range or
        // out of order.
        let head = 17_000;
        let seqs: BTreeSet<u64> = (1..=head)
            .filter(|s| !(16_380..=16_390).contains(s))
            .collect();
        for a in interesting_seqs(head) {
            for range in [
                HistoryRange::After {
                    after_seq: a,
                    before_seq: None,
                    limit: 100,
                },
                HistoryRange::Before {
                    before_seq: a,
                    limit: 100,
                },
            ] {
                let (got, _) = run(range, &seqs, head);
                assert!(got.windows(2).all(|w| w[0] < w[1]), "{range:?}: ascending");
                assert!(
                    got.iter().all(|s| seqs.contains(s)),
                    "{range:?}: only stored rows"
                );
                assert!(got.len() <= 100);
                if let HistoryRange::After { after_seq, .. } = range {
                    assert!(got.iter().all(|s| *s > after_seq));
                }
                if let HistoryRange::Before { before_seq, .. } = range {
                    assert!(got.iter().all(|s| *s < before_seq));
                }
            }
        }
    }
}
