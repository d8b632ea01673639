//! The bucket's arithmetic (GCRA with reservation, cool-down pause, bounded adaptive lowering) as
//! pure Rust: the reference model that `bucket.lua` mirrors line for line, unit-tested here.
//!
//! Times are integer microseconds of one clock (in Redis: the server's `TIME`). A bucket holds a
//! *theoretical arrival time* `tat`: the caller arriving at `now` may go at
//! `max(now, tat - tau)`, and the reservation moves `tat` to `max(tat, now) + interval`.
//! With `interval = 1/rate` and `tau = (burst - 1) * interval`, any closed window of length `w`
//! admits at most `burst + floor(w * rate)` calls, whoever asks and however often.

/// The fixed parameters of one bucket, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Emission interval at the full configured rate: `ceil(1e6 / rate)`.
    pub interval_us: i64,
    /// Burst tolerance: `(burst - 1) * interval_us`.
    pub tau_us: i64,
    /// Longest wait a caller may reserve; a longer one reserves nothing (saturated).
    pub max_wait_us: i64,
    /// Pause after the vendor said "throttled".
    pub cooldown_us: i64,
    /// Lowest share of the configured rate adaptive lowering goes to (1.0 = never lower).
    pub min_share: f64,
    /// Time the share takes to climb back from `min_share` to 1.0 (linear).
    pub recovery_us: i64,
}

/// Each "throttled" episode multiplies the current share by this (bounded by `min_share`).
pub const LOWER_FACTOR: f64 = 0.75;

impl Params {
    /// Parameters from a rate (calls per second, > 0), a burst (>= 1) and durations.
    pub fn new(
        rate_per_sec: f64,
        burst: u32,
        max_wait: std::time::Duration,
        cooldown: std::time::Duration,
        min_share: f64,
        recovery: std::time::Duration,
    ) -> Params {
        // Rounded up: the bucket never runs faster than configured.
        let interval_us = (1e6 / rate_per_sec).ceil().max(1.0) as i64;
        Params {
            interval_us,
            tau_us: i64::from(burst.max(1) - 1) * interval_us,
            max_wait_us: max_wait.as_micros().min(i64::MAX as u128) as i64,
            cooldown_us: cooldown.as_micros().min(i64::MAX as u128) as i64,
            min_share: min_share.clamp(0.01, 1.0),
            recovery_us: (recovery.as_micros() as i64).max(1),
        }
    }
}

/// What one bucket stores (a Redis hash: `tat`, `share`, `share_at`, `paused_until`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct State {
    /// Theoretical arrival time; None = never used (or expired).
    pub tat: Option<i64>,
    /// The lowered share of the rate and when it was last lowered; None = full rate.
    pub share: Option<(f64, i64)>,
    /// Until when the last cool-down pauses the bucket (kept for operators).
    pub paused_until: Option<i64>,
}

/// The answer to one reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is reserved: the caller sleeps this long, then calls.
    Admitted {
        /// Microseconds to wait.
        wait_us: i64,
        /// Microseconds until the next free slot, whoever reserved the ones before it: where a
        /// worker's local fallback may start without overlapping the shared schedule.
        next_us: i64,
        /// Microseconds the bucket stays paused ("throttled"), 0 when it is not: slots
        /// reserved before the pause must not go during it.
        paused_us: i64,
    },
    /// Nothing was reserved: the wait would have exceeded `max_wait` by this much.
    Saturated {
        /// Microseconds until a reservation would fit within `max_wait` (if nobody else asks).
        excess_us: i64,
        /// As for `Admitted`.
        paused_us: i64,
    },
}

impl State {
    /// The share of the configured rate in force at `now` (recovering linearly to 1.0).
    pub fn share_at(&self, now: i64, p: &Params) -> f64 {
        match self.share {
            None => 1.0,
            Some((share, at)) => {
                let recovered =
                    (1.0 - p.min_share) * (now - at).max(0) as f64 / p.recovery_us as f64;
                (share + recovered).min(1.0)
            }
        }
    }

    /// Reserve a slot for a caller arriving at `now`, or refuse without changing anything.
    pub fn acquire(&mut self, now: i64, p: &Params) -> Reservation {
        let tat = self.tat.unwrap_or(now).max(now);
        let wait_us = (tat - p.tau_us - now).max(0);
        let paused_us = self.paused_until.map_or(0, |until| (until - now).max(0));
        if wait_us > p.max_wait_us {
            return Reservation::Saturated {
                excess_us: wait_us - p.max_wait_us,
                paused_us,
            };
        }
        let share = self.share_at(now, p);
        // A lowered share stretches the interval; `tau` stays that of the configured rate, so
        // the window bound of the configured rate keeps holding.
        let new_tat = tat + (p.interval_us as f64 / share).ceil() as i64;
        self.tat = Some(new_tat);
        if share >= 1.0 {
            self.share = None;
        }
        Reservation::Admitted {
            wait_us,
            next_us: (new_tat - p.tau_us - now).max(0),
            paused_us,
        }
    }

    /// The vendor said "throttled": no new reservation starts before `now + cooldown`, and the
    /// share is lowered once per cool-down (never below `min_share`). Returns the share in force.
    pub fn pause(&mut self, now: i64, p: &Params) -> f64 {
        let until = now + p.cooldown_us;
        // The first caller after the pause goes at `until`, then one per interval: no burst.
        let tat = self.tat.unwrap_or(now).max(until + p.tau_us);
        self.tat = Some(tat);
        self.paused_until = Some(self.paused_until.unwrap_or(until).max(until));
        let share = self.share_at(now, p);
        let recently_lowered = self.share.is_some_and(|(_, at)| now - at < p.cooldown_us);
        if p.min_share < 1.0 && !recently_lowered {
            let lowered = (share * LOWER_FACTOR).max(p.min_share);
            self.share = Some((lowered, now));
            return lowered;
        }
        share
    }

    /// Milliseconds the stored state still matters (the Redis key's TTL): until `tat` has
    /// passed and the share has recovered, plus a second.
    pub fn ttl_ms(&self, now: i64, p: &Params) -> i64 {
        let mut until = self.tat.unwrap_or(now);
        if let Some((share, at)) = self.share {
            let left = ((1.0 - share) / (1.0 - p.min_share).max(1e-9)) * p.recovery_us as f64;
            until = until.max(at + left.ceil() as i64);
        }
        (until - now).max(0) / 1000 + 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params(rate: f64, burst: u32, max_wait_ms: u64) -> Params {
        Params::new(
            rate,
            burst,
            Duration::from_millis(max_wait_ms),
            Duration::from_millis(1000),
            0.5,
            Duration::from_secs(10),
        )
    }

    /// Worst count of `times` in any closed window `[t, t + w]`.
    fn worst_window(times: &mut [i64], w: i64) -> usize {
        times.sort_unstable();
        let (mut j, mut best) = (0, 0);
        for i in 0..times.len() {
            while j < times.len() && times[j] - times[i] <= w {
                j += 1;
            }
            best = best.max(j - i);
        }
        best
    }

    #[test]
    fn interval_and_tau_from_rate_and_burst() {
        let p = params(50.0, 1, 5000);
        assert_eq!((p.interval_us, p.tau_us), (20_000, 0));
        let p = params(3.0, 4, 5000);
        assert_eq!((p.interval_us, p.tau_us), (333_334, 3 * 333_334));
        assert_eq!(p.max_wait_us, 5_000_000);
    }

    #[test]
    fn a_fresh_bucket_admits_the_burst_then_spaces_by_the_interval() {
        let p = params(10.0, 3, 5000);
        let mut s = State::default();
        let waits: Vec<_> = (0..6)
            .map(|_| match s.acquire(1_000_000, &p) {
                Reservation::Admitted { wait_us, .. } => wait_us,
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(waits, [0, 0, 0, 100_000, 200_000, 300_000]);
        // The next free slot follows the last reservation by one interval.
        assert_eq!(
            s.acquire(1_000_000, &p),
            Reservation::Admitted {
                wait_us: 400_000,
                next_us: 500_000,
                paused_us: 0
            }
        );
        let mut fresh = State::default();
        assert_eq!(
            fresh.acquire(0, &p),
            Reservation::Admitted {
                wait_us: 0,
                next_us: 0,
                paused_us: 0
            }
        );
    }

    #[test]
    fn any_arrival_pattern_keeps_every_window_within_rate_times_w_plus_burst() {
        // Callers arrive in clumps and trickles; each goes at now + wait.
        for (rate, burst) in [(20.0, 1), (50.0, 1), (10.0, 5), (7.0, 2)] {
            let p = params(rate, burst, 60_000);
            let mut s = State::default();
            let mut admitted = Vec::new();
            let mut now = 0i64;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                now += (x % 40_000) as i64 * i64::from(x.is_multiple_of(3));
                if let Reservation::Admitted { wait_us, .. } = s.acquire(now, &p) {
                    admitted.push(now + wait_us);
                }
            }
            for w_ms in [100, 1000, 2500] {
                let w = w_ms * 1000;
                let bound = burst as usize + (rate * w as f64 / 1e6).floor() as usize;
                assert!(
                    worst_window(&mut admitted, w) <= bound,
                    "rate {rate} burst {burst} window {w_ms} ms"
                );
            }
        }
    }

    #[test]
    fn a_backlog_runs_at_the_configured_rate() {
        let p = params(20.0, 1, 60_000);
        let mut s = State::default();
        let admitted: Vec<i64> = (0..200)
            .map(|_| match s.acquire(0, &p) {
                Reservation::Admitted { wait_us, .. } => wait_us,
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(admitted[199], 199 * 50_000);
    }

    #[test]
    fn saturation_reserves_nothing() {
        let p = params(10.0, 1, 250);
        let mut s = State::default();
        for _ in 0..3 {
            assert!(matches!(s.acquire(0, &p), Reservation::Admitted { .. }));
        }
        let before = s;
        // The 4th would wait 300 ms > 250 ms.
        assert_eq!(
            s.acquire(0, &p),
            Reservation::Saturated {
                excess_us: 50_000,
                paused_us: 0
            }
        );
        assert_eq!(s, before);
        // Once the excess has passed, it fits exactly.
        assert_eq!(
            s.acquire(50_000, &p),
            Reservation::Admitted {
                wait_us: 250_000,
                next_us: 350_000,
                paused_us: 0
            }
        );
    }

    #[test]
    fn pause_defers_every_reservation_and_drops_the_burst() {
        let p = params(10.0, 5, 5000);
        let mut s = State::default();
        s.pause(0, &p);
        assert_eq!(s.paused_until, Some(1_000_000));
        // Every reply says how long the pause still holds: slots reserved before it wait too.
        let mut probe = s;
        match probe.acquire(400_000, &p) {
            Reservation::Admitted { paused_us, .. } => assert_eq!(paused_us, 600_000),
            r => panic!("{r:?}"),
        }
        let mut after = s;
        match after.acquire(1_200_000, &p) {
            Reservation::Admitted { paused_us, .. } => assert_eq!(paused_us, 0),
            r => panic!("{r:?}"),
        }
        let waits: Vec<_> = (0..3)
            .map(|_| match s.acquire(0, &p) {
                Reservation::Admitted { wait_us, .. } => wait_us,
                r => panic!("{r:?}"),
            })
            .collect();
        // First at the end of the cool-down; then spaced by the (lowered) interval.
        assert_eq!(waits[0], 1_000_000);
        assert!(waits[1] - waits[0] >= 100_000 && waits[2] - waits[1] >= 100_000);
    }

    #[test]
    fn lowering_is_once_per_cooldown_bounded_and_recovers() {
        let p = params(10.0, 1, 5000);
        let mut s = State::default();
        assert_eq!(s.pause(0, &p), 0.75);
        // A storm of "throttled" answers within the same cool-down lowers once.
        assert!((s.pause(10, &p) - 0.75).abs() < 1e-5);
        assert_eq!(s.share, Some((0.75, 0)));
        assert_eq!(s.pause(999_999, &p), 0.75 + 0.5 * 999_999.0 / 10e6);
        // Repeated episodes stop at min_share.
        let mut now = 0;
        for _ in 0..10 {
            now += 1_000_000;
            s.pause(now, &p);
        }
        assert_eq!(s.share_at(now, &p), 0.5);
        // Lowered share stretches the interval: 10/s at 0.5 → 200 ms apart.
        let mut s2 = State {
            tat: None,
            share: Some((0.5, 0)),
            paused_until: None,
        };
        s2.acquire(0, &p);
        assert_eq!(s2.tat, Some(200_000));
        // Recovery: 10 s from 0.5 to 1.0, then the field is dropped.
        assert_eq!(s.share_at(now + 5_000_000, &p), 0.75);
        let mut s3 = s;
        s3.acquire(now + 10_000_000, &p);
        assert_eq!(s3.share, None);
    }

    #[test]
    fn min_share_one_disables_lowering() {
        let mut p = params(10.0, 1, 5000);
        p.min_share = 1.0;
        let mut s = State::default();
        assert_eq!(s.pause(0, &p), 1.0);
        assert_eq!(s.share, None);
    }

    #[test]
    fn ttl_covers_the_reservations_and_the_recovery() {
        let p = params(10.0, 1, 5000);
        let s = State {
            tat: Some(3_000_000),
            share: None,
            paused_until: None,
        };
        assert_eq!(s.ttl_ms(1_000_000, &p), 3000);
        let s = State {
            tat: Some(0),
            share: Some((0.5, 0)),
            paused_until: None,
        };
        assert_eq!(s.ttl_ms(0, &p), 11_000);
    }
}
