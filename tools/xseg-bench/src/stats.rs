//! Latency statistics over a set of per-sample nanosecond measurements.
//!
//! Percentiles use the nearest-rank method on the sorted samples: the
//! p-th percentile is the smallest sample such that at least p% of all
//! samples are less than or equal to it.

use serde::Serialize;

/// Summary of a latency distribution, all values in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stats {
    /// Summarises `samples` (nanoseconds); sorts them in place.
    ///
    /// An empty input gives a zero-count `Stats` whose other fields are 0.
    pub fn from_samples(samples: &mut [u64]) -> Stats {
        if samples.is_empty() {
            return Stats {
                count: 0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Stats {
            count: samples.len() as u64,
            mean: sum as f64 / samples.len() as f64,
            p50: percentile(samples, 50.0) as f64,
            p90: percentile(samples, 90.0) as f64,
            p99: percentile(samples, 99.0) as f64,
            max: samples[samples.len() - 1] as f64,
        }
    }

    /// Every value divided by `divisor` (count unchanged); e.g. `scaled(2.0)`
    /// turns round-trip times into one-way latencies.
    pub fn scaled(&self, divisor: f64) -> Stats {
        Stats {
            count: self.count,
            mean: self.mean / divisor,
            p50: self.p50 / divisor,
            p90: self.p90 / divisor,
            p99: self.p99 / divisor,
            max: self.max / divisor,
        }
    }
}

/// Nearest-rank `p`-th percentile (0 < p <= 100) of already sorted,
/// non-empty `sorted`.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100 shuffled: p50 = 50, p90 = 90, p99 = 99, max = 100.
        let mut v: Vec<u64> = (1..=100).rev().collect();
        v.swap(3, 77);
        let s = Stats::from_samples(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p90, 90.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert!((s.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn small_and_skewed_inputs() {
        let mut one = [7u64];
        let s = Stats::from_samples(&mut one);
        assert_eq!((s.p50, s.p99, s.max), (7.0, 7.0, 7.0));

        // 98 fast samples and 2 slow ones: p99 must see the tail.
        let mut v = vec![10u64; 98];
        v.extend([1000, 5000]);
        let s = Stats::from_samples(&mut v);
        assert_eq!(s.p50, 10.0);
        assert_eq!(s.p99, 1000.0);
        assert_eq!(s.max, 5000.0);

        let half = s.scaled(2.0);
        assert_eq!((half.p50, half.max, half.count), (5.0, 2500.0, 100));

        assert_eq!(Stats::from_samples(&mut []).count, 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 25.0), 1);
        assert_eq!(percentile(&[1, 2, 3, 4], 26.0), 2);
    }
}
