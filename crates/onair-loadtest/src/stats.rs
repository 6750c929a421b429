//! Summaries of per-listener measurements: nearest-rank percentiles, min, max and mean.
//!
//! Pure. Percentiles use the nearest-rank definition (the smallest value with at least p %
//! of the samples at or below it), so every reported figure is an observed value.

/// Min, mean, percentiles and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distribution {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile `p` (0..=100) of `sorted` (ascending). `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Summarizes `samples` (any order; NaNs are dropped). `None` when there are none.
pub fn summarize(mut samples: Vec<f64>) -> Option<Distribution> {
    samples.retain(|v| !v.is_nan());
    samples.sort_by(f64::total_cmp);
    let (&min, &max) = (samples.first()?, samples.last()?);
    Some(Distribution {
        count: samples.len(),
        min,
        p50: percentile(&samples, 50.0)?,
        p90: percentile(&samples, 90.0)?,
        p99: percentile(&samples, 99.0)?,
        max,
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let d = summarize(vec![5.0, 1.0, f64::NAN, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(d.count, 5);
        assert_eq!((d.min, d.p50, d.max, d.mean), (1.0, 3.0, 5.0, 3.0));
        assert_eq!((d.p90, d.p99), (5.0, 5.0));
        assert_eq!(summarize(vec![]), None);
        assert_eq!(summarize(vec![f64::NAN]), None);
    }
}
