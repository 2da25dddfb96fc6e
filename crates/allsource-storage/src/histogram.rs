//! A histogram of fixed buckets kept in atomics, for figures the WAL's writer records
//! on every group commit (how long the sync took, how many events it covered): a
//! record is a few relaxed atomic adds, no lock, and reading never waits for a writer.
//!
//! ```
//! use allsource_storage::AtomicHistogram;
//! static BOUNDS: [u64; 3] = [1, 10, 100];
//! let histogram = AtomicHistogram::new(&BOUNDS);
//! histogram.record(5);
//! histogram.record(1_000);
//! let snapshot = histogram.snapshot();
//! assert_eq!(snapshot.counts, [0, 1, 0, 1]); // <= 1, <= 10, <= 100, above
//! assert_eq!((snapshot.count(), snapshot.sum), (2, 1_005));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counts of values in buckets with fixed inclusive upper bounds, plus one bucket
/// for everything above the last bound, and the sum of every value recorded.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [u64],
    /// `bounds.len() + 1` counters; the last one counts values above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds`, which must be ascending.
    pub fn new(bounds: &'static [u64]) -> AtomicHistogram {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "bounds must ascend: {bounds:?}");
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts as they are now. Each counter is read once; a record that runs
    /// meanwhile may be in the buckets and not yet in the sum, never torn further.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment (see [`AtomicHistogram::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HistogramSnapshot {
    /// The buckets' inclusive upper bounds, ascending.
    pub bounds: &'static [u64],
    /// The count of each bucket (not cumulative): `bounds.len() + 1` of them, the last
    /// for the values above every bound. Empty for a histogram never kept.
    pub counts: Vec<u64>,
    /// The sum of every value recorded.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The bounds of the WAL's sync latency histogram, in microseconds: 50 µs to 5 s.
pub static SYNC_MICROS_BOUNDS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// The bounds of the WAL's events-per-sync histogram: powers of two up to 64Ki.
pub static EVENTS_PER_SYNC_BOUNDS: [u64; 17] =
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768, 65_536];

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 3] = [10, 20, 40];

    fn check(values: &[u64], counts: [u64; 4]) {
        let histogram = AtomicHistogram::new(&BOUNDS);
        for &value in values {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, counts, "{values:?}");
        assert_eq!(snapshot.count(), values.len() as u64);
        assert_eq!(snapshot.sum, values.iter().sum::<u64>());
        assert_eq!(snapshot.bounds, &BOUNDS);
    }

    #[test]
    fn bounds_are_inclusive() {
        check(&[], [0, 0, 0, 0]);
        check(&[0, 10], [2, 0, 0, 0]);
        check(&[11, 20], [0, 2, 0, 0]);
        check(&[21, 40, 41, u64::MAX / 2], [0, 0, 2, 2]);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let histogram = AtomicHistogram::new(&EVENTS_PER_SYNC_BOUNDS);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let histogram = &histogram;
                scope.spawn(move || (1..=1_000).for_each(|value| histogram.record(value * (thread + 1))));
            }
        });
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4_000);
        assert_eq!(snapshot.sum, (1..=4).map(|t| t * 500_500).sum::<u64>());
    }

    #[test]
    fn default_bounds_ascend() {
        for bounds in [&SYNC_MICROS_BOUNDS[..], &EVENTS_PER_SYNC_BOUNDS[..]] {
            assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{bounds:?}");
        }
    }
}
