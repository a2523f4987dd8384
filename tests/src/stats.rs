//! How every benchmark summarises repeated measurements, so their figures compare.

/// Median, mean, min and max of a set of samples (seconds, milliseconds, ratios: any unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// The summary of `samples` (NaN sorts last); all NaN for none. An even count's median is
    /// the mean of the two middle samples.
    pub fn of(samples: &[f64]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            return Summary {
                median: f64::NAN,
                mean: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                n,
            };
        }
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Summary {
            median,
            mean: s.iter().sum::<f64>() / n as f64,
            min: s[0],
            max: s[n - 1],
            n,
        }
    }
}

/// The median of `samples` ([`Summary::of`]).
pub fn median(samples: &[f64]) -> f64 {
    Summary::of(samples).median
}

/// This process's resident memory now, MiB (`/proc/self/statm`; 0 where it cannot be read).
pub fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * rustix::param::page_size() as f64 / f64::from(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts_and_no_samples() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!(
            (s.median, s.mean, s.min, s.max, s.n),
            (2.0, 2.0, 1.0, 3.0, 3)
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
