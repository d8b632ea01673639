//! A per-provider circuit breaker: a provider-wide failure takes the provider out of routes for a
//! cool-down, then one call is let through to probe it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Circuit state of one provider (local to this worker).
#[derive(Debug, Default)]
pub struct Circuit {
    open_until: Mutex<Option<Instant>>,
}

impl Circuit {
    /// Whether calls may go to the provider now (closed, or the cool-down has passed).
    pub fn is_available(&self, now: Instant) -> bool {
        match *self.open_until.lock().expect("circuit lock") {
            Some(until) => now >= until,
            None => true,
        }
    }

    /// When the circuit lets calls through again, if it is open now.
    pub fn reopens_at(&self, now: Instant) -> Option<Instant> {
        self.open_until
            .lock()
            .expect("circuit lock")
            .filter(|until| *until > now)
    }

    /// Open the circuit for `cooldown` (a provider-wide failure).
    pub fn trip(&self, now: Instant, cooldown: Duration) {
        *self.open_until.lock().expect("circuit lock") = Some(now + cooldown);
    }

    /// Close it (the provider answered).
    pub fn reset(&self) {
        *self.open_until.lock().expect("circuit lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_for_the_cooldown_then_lets_calls_through() {
        let c = Circuit::default();
        let t0 = Instant::now();
        assert!(c.is_available(t0));
        c.trip(t0, Duration::from_secs(30));
        assert!(!c.is_available(t0 + Duration::from_secs(29)));
        assert_eq!(c.reopens_at(t0), Some(t0 + Duration::from_secs(30)));
        assert!(c.is_available(t0 + Duration::from_secs(30)));
        c.reset();
        assert!(c.is_available(t0));
        assert_eq!(c.reopens_at(t0), None);
    }
}
