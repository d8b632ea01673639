//! The benchmark's pure parts: the sweep and the identity mix from the command line,
//! percentiles and min/median/max, and a counter read from a Prometheus text page.

use crate::sandbox::scenarios::Scenario;

/// The (prefetch, concurrency) pairs to run. Without `cross` the lists pair up in order (a list
/// of one value goes with every value of the other); with `cross` every prefetch runs with
/// every concurrency.
pub fn sweep(
    prefetch: &[u16],
    concurrency: &[usize],
    cross: bool,
) -> Result<Vec<(u16, usize)>, String> {
    if prefetch.is_empty() || concurrency.is_empty() {
        return Err("--prefetch and --concurrency need at least one value each".into());
    }
    if prefetch.contains(&0) || concurrency.contains(&0) {
        return Err("--prefetch and --concurrency values must be at least 1".into());
    }
    if cross {
        return Ok(prefetch
            .iter()
            .flat_map(|&p| concurrency.iter().map(move |&c| (p, c)))
            .collect());
    }
    match (prefetch.len(), concurrency.len()) {
        (1, _) => Ok(concurrency.iter().map(|&c| (prefetch[0], c)).collect()),
        (_, 1) => Ok(prefetch.iter().map(|&p| (p, concurrency[0])).collect()),
        (a, b) if a == b => Ok(prefetch
            .iter()
            .copied()
            .zip(concurrency.iter().copied())
            .collect()),
        (a, b) => Err(format!(
            "--prefetch has {a} values and --concurrency {b}: give as many of each (they pair up \
             in order), one of either, or --cross for every combination"
        )),
    }
}

/// The scenarios a benchmark may mix: each is answered once, finally, by every vendor (no retry,
/// no dead letter, no circuit opened), so every request costs one provider call.
pub const MIXABLE: [Scenario; 7] = [
    Scenario::Match,
    Scenario::NameMismatch,
    Scenario::IdNumberMismatch,
    Scenario::MobileOwnerMismatch,
    Scenario::MismatchUnspecified,
    Scenario::NameIdNumberMismatch,
    Scenario::NoRecord,
];

/// A scenario's name as the sandbox spells it (`match`, `no_record`, …).
pub fn scenario_name(s: Scenario) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `match` or `match=90,no_record=10` (weights; a name alone weighs 1).
pub fn parse_mix(spec: &str) -> Result<Vec<(Scenario, u32)>, String> {
    let allowed = || {
        MIXABLE
            .iter()
            .map(|s| scenario_name(*s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out: Vec<(Scenario, u32)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once('=') {
            Some((n, w)) => (
                n.trim(),
                w.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--mix {part}: the weight must be a whole number"))?,
            ),
            None => (part, 1),
        };
        let scenario = MIXABLE
            .iter()
            .copied()
            .find(|s| scenario_name(*s) == name)
            .ok_or_else(|| format!("--mix: unknown scenario {name:?} (one of {})", allowed()))?;
        if out.iter().any(|(s, _)| *s == scenario) {
            return Err(format!("--mix: {name} is given twice"));
        }
        if weight > 0 {
            out.push((scenario, weight));
        }
    }
    if out.is_empty() {
        return Err(format!(
            "--mix needs at least one scenario with a weight above 0 ({})",
            allowed()
        ));
    }
    Ok(out)
}

/// The scenario of request `i`: the weights laid out in order over every block of
/// `sum(weights)` requests (deterministic, so every run and both pipelines get the same batch).
pub fn scenario_for(mix: &[(Scenario, u32)], i: usize) -> Scenario {
    let total: u64 = mix.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut at = (i as u64) % total.max(1);
    for (s, w) in mix {
        if at < u64::from(*w) {
            return *s;
        }
        at -= u64::from(*w);
    }
    Scenario::Match
}

/// The nearest-rank percentile `p` (0..=1) of sorted values: the smallest value with at least
/// `p` of the values at or below it. NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Min, median and max of a few figures (runs).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of the values that are numbers (None when there is none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: v[0],
            median: crate::ops::loadgen::median(v.clone()),
            max: v[v.len() - 1],
        })
    }
}

/// The sum of every series of the counter or gauge `name` in a Prometheus text page; None when
/// the page has no such series.
pub fn metric_total(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // another metric whose name starts with this one
        };
        let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) else {
            continue;
        };
        *found.get_or_insert(0.0) += v;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_pair_up_broadcast_or_cross() {
        assert_eq!(
            sweep(&[16, 128], &[16, 128], false),
            Ok(vec![(16, 16), (128, 128)])
        );
        assert_eq!(
            sweep(&[64], &[16, 32, 64], false),
            Ok(vec![(64, 16), (64, 32), (64, 64)])
        );
        assert_eq!(
            sweep(&[16, 128], &[32], false),
            Ok(vec![(16, 32), (128, 32)])
        );
        assert_eq!(
            sweep(&[16, 128], &[16, 128], true),
            Ok(vec![(16, 16), (16, 128), (128, 16), (128, 128)])
        );
        let e = sweep(&[1, 2], &[1, 2, 3], false).unwrap_err();
        assert!(e.contains("--cross"), "{e}");
        assert!(sweep(&[0], &[1], false).is_err());
        assert!(sweep(&[1], &[], true).is_err());
    }

    #[test]
    fn mixes_are_parsed_and_laid_out_deterministically() {
        assert_eq!(parse_mix("match"), Ok(vec![(Scenario::Match, 1)]));
        let mix = parse_mix(" match=3, no_record = 1 ,name_mismatch=0").unwrap();
        assert_eq!(mix, vec![(Scenario::Match, 3), (Scenario::NoRecord, 1)]);
        let first: Vec<Scenario> = (0..8).map(|i| scenario_for(&mix, i)).collect();
        use Scenario::{Match as M, NoRecord as N};
        assert_eq!(first, [M, M, M, N, M, M, M, N]);
        assert!(parse_mix("busy").unwrap_err().contains("unknown scenario"));
        assert!(parse_mix("match=x").is_err());
        assert!(parse_mix("match,match=2").unwrap_err().contains("twice"));
        assert!(parse_mix("match=0").is_err());
        assert!(parse_mix("").is_err());
        for s in MIXABLE {
            assert_eq!(parse_mix(&scenario_name(s)), Ok(vec![(s, 1)]));
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        let v = [10.0, 20.0, 30.0];
        assert_eq!(percentile(&v, 0.5), 20.0);
        assert_eq!(percentile(&v, 0.99), 30.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn spreads() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of([4.0, f64::NAN, 1.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(Spread::of([f64::NAN]), None);
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn prometheus_counters_are_summed_over_their_series() {
        let page = "# HELP kycq_db_round_trips_total round trips\n\
                    # TYPE kycq_db_round_trips_total counter\n\
                    kycq_db_round_trips_total{op=\"claim\"} 120\n\
                    kycq_db_round_trips_total{op=\"store\",x=\"a}b\"} 30.5\n\
                    kycq_db_round_trips_total_extra 7\n\
                    kycq_checks_total{status=\"completed\"} 3\n";
        assert_eq!(metric_total(page, "kycq_db_round_trips_total"), Some(150.5));
        assert_eq!(
            metric_total("kycq_x 4\nkycq_x 1e3\n", "kycq_x"),
            Some(1004.0)
        );
        assert_eq!(metric_total(page, "kycq_db_round_trips"), None);
        assert_eq!(metric_total(page, "kycq_nothing"), None);
    }
}
