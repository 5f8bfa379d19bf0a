//! The fleet benchmark's arithmetic: time until a fraction of the fleet is back, peaks of
//! per-bin counts, and CPU over sliding windows. Pure functions (unit-tested).

/// Seconds until `fraction` of `total` devices were back, from each device's time back
/// (`None`: never back). `None` when fewer than that many came back.
pub fn time_to_fraction(back_s: &[Option<f64>], total: usize, fraction: f64) -> Option<f64> {
    let mut t: Vec<f64> = back_s.iter().flatten().copied().collect();
    t.sort_by(f64::total_cmp);
    // The smallest count that reaches the fraction (99% of 1,000 is 990 devices).
    let need = ((total as f64 * fraction) - 1e-9).ceil().max(1.0) as usize;
    t.get(need - 1).copied()
}

/// Per-bin increments of a monotone counter sampled at bin ends (`samples[i]` = total at the
/// end of bin i); a counter that went down (a restarted process) counts from zero again.
pub fn increments(samples: &[u64]) -> Vec<u64> {
    samples
        .windows(2)
        .map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] })
        .collect()
}

/// The largest sum of `width` consecutive bins (the whole series when shorter).
pub fn peak_window(bins: &[u64], width: usize) -> u64 {
    if bins.len() <= width {
        return bins.iter().sum();
    }
    bins.windows(width.max(1))
        .map(|w| w.iter().sum())
        .max()
        .unwrap_or(0)
}

/// Peak and mean CPU use in percent of one core, from `(seconds, cpu_seconds)` samples of
/// one process, the peak over windows of at least `window_s`.
pub fn cpu_percent(samples: &[(f64, f64)], window_s: f64) -> (f64, f64) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (f64::NAN, f64::NAN);
    };
    let span = last.0 - first.0;
    let mean = if span > 0.0 {
        (last.1 - first.1) / span * 100.0
    } else {
        f64::NAN
    };
    let mut peak = f64::NAN;
    let mut j = 0;
    for (i, a) in samples.iter().enumerate() {
        j = j.max(i);
        while j < samples.len() && samples[j].0 - a.0 < window_s {
            j += 1;
        }
        let Some(b) = samples.get(j) else { break };
        let pct = (b.1 - a.1) / (b.0 - a.0) * 100.0;
        if peak.is_nan() || pct > peak {
            peak = pct;
        }
    }
    (if peak.is_nan() { mean } else { peak }, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_99_and_100_percent() {
        // 1,000 devices back at 1 ms .. 1000 ms.
        let back: Vec<Option<f64>> = (1..=1000).map(|i| Some(f64::from(i) / 1000.0)).collect();
        assert_eq!(time_to_fraction(&back, 1000, 0.99), Some(0.990));
        assert_eq!(time_to_fraction(&back, 1000, 1.0), Some(1.0));
        // Out of order, and ten never back: 99% is still reached, 100% is not.
        let mut some: Vec<Option<f64>> = back.iter().rev().copied().collect();
        some.truncate(990);
        some.extend([None; 10]);
        assert_eq!(time_to_fraction(&some, 1000, 0.99), Some(1.0));
        assert_eq!(time_to_fraction(&some, 1000, 1.0), None);
        // Fewer than 100 devices: 99% means all of them.
        let few = [Some(0.5), Some(0.1), Some(2.0)];
        assert_eq!(time_to_fraction(&few, 3, 0.99), Some(2.0));
        assert_eq!(time_to_fraction(&[], 0, 1.0), None);
    }

    #[test]
    fn peaks_of_a_counter() {
        let bins = increments(&[0, 3, 10, 10, 25, 4, 6]);
        assert_eq!(bins, [3, 7, 0, 15, 4, 2]);
        assert_eq!(peak_window(&bins, 1), 15);
        assert_eq!(peak_window(&bins, 2), 19);
        assert_eq!(peak_window(&bins, 10), 31);
    }

    #[test]
    fn cpu_peak_over_a_window() {
        // Idle, then one core busy for a second, then idle: 0.1 s samples.
        let mut cpu = 0.0;
        let samples: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                let t = f64::from(i) / 10.0;
                if (1.0..2.0).contains(&t) {
                    cpu += 0.1;
                }
                (t, cpu)
            })
            .collect();
        let (peak, mean) = cpu_percent(&samples, 0.5);
        assert!((peak - 100.0).abs() < 1e-6, "{peak}");
        assert!((mean - 1.0 / 3.9 * 100.0).abs() < 1e-6, "{mean}");
    }
}
