//! How many workers share the vendors' limits, from the heartbeats in Postgres: while Redis is
//! unreachable each worker limits itself to `rate / live workers` (never more than its
//! `fallback_share`), so the fleet together stays within the vendor's limit whatever its size.
//!
//! Postgres is the source because it is there during a Redis outage (a worker that cannot
//! reach Postgres cannot claim a request either, so it makes no call). Each beat writes this
//! worker's row and counts the live rows in one statement ([`crate::store::workers::beat`]).
//!
//! **Scaling during an outage.** Workers recount at their own beats, so a worker that has just
//! started is not yet in the others' count. In fallback it makes no call until every other
//! worker has beaten at least once since its own first beat: `settle` = one heartbeat period
//! plus the longest a beat may take. Workers that leave are counted until their rows go stale
//! (`worker.alive_within`): the shares are then smaller than they could be, never larger.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The share of a bucket's rate one worker uses while Redis is unreachable: `1 / live`, capped
/// by the configured `fallback_share`. `live` counts this worker too (at least 1).
pub fn share(cap: f64, live: usize) -> f64 {
    cap.min(1.0 / live.max(1) as f64)
}

/// The fleet as this worker's last heartbeat saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// Live workers, this one included.
    pub live: usize,
    /// From when every other live worker has counted this one.
    pub counted_from: Instant,
}

/// The heartbeat's report to the limiter (shared by both).
#[derive(Debug)]
pub struct Fleet {
    settle: Duration,
    view: Mutex<Option<View>>,
}

impl Fleet {
    /// A fleet whose members beat every `every`, a beat taking at most `beat_timeout`.
    pub fn new(every: Duration, beat_timeout: Duration) -> Fleet {
        Fleet {
            settle: every + beat_timeout,
            view: Mutex::new(None),
        }
    }

    /// A beat written at `now` counted `live` workers (this one included).
    pub fn beat(&self, live: usize, now: Instant) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let counted_from = v.map_or(now + self.settle, |v| v.counted_from);
        *v = Some(View {
            live: live.max(1),
            counted_from,
        });
        metrics::gauge!("kycq_workers_alive").set(live as f64);
    }

    /// The last count; None before the first beat was written.
    pub fn view(&self) -> Option<View> {
        *self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_one_over_the_live_workers_capped_by_the_configured_share() {
        assert_eq!(share(1.0, 1), 1.0);
        assert_eq!(share(1.0, 4), 0.25);
        assert_eq!(share(0.1, 4), 0.1);
        assert_eq!(share(1.0, 0), 1.0, "a count of 0 is this worker alone");
        // Shares of a fleet never add up to more than the whole.
        for n in 1..50 {
            assert!(share(1.0, n) * n as f64 <= 1.0 + 1e-12);
        }
    }

    #[tokio::test]
    async fn a_new_worker_is_counted_one_heartbeat_and_one_timeout_after_its_first_beat() {
        let f = Fleet::new(Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(f.view(), None);
        let t0 = Instant::now();
        f.beat(3, t0);
        assert_eq!(
            f.view(),
            Some(View {
                live: 3,
                counted_from: t0 + Duration::from_secs(10)
            })
        );
        // Later beats change the count, not when the others counted this worker.
        f.beat(6, t0 + Duration::from_secs(5));
        assert_eq!(f.view().unwrap().live, 6);
        assert_eq!(f.view().unwrap().counted_from, t0 + Duration::from_secs(10));
        f.beat(0, t0 + Duration::from_secs(6));
        assert_eq!(f.view().unwrap().live, 1);
    }
}
