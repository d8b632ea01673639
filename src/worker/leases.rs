//! The leases a worker holds, renewed together: one statement every third of a lease for all of
//! the worker's requests, instead of one per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::warn;

use crate::store::Store;

/// The leases held by one worker's deliveries, keyed by lease owner (unique per delivery).
#[derive(Debug, Default)]
pub struct Leases {
    held: Arc<Mutex<HashMap<String, Held>>>,
    renewer: OnceLock<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Held {
    request_id: String,
    lost: Arc<AtomicBool>,
}

/// A held lease: renewed while this lives; `lost` turns true once it is no longer ours.
#[derive(Debug)]
pub struct LeaseGuard {
    owner: String,
    held: Arc<Mutex<HashMap<String, Held>>>,
    /// Set when a renewal found the lease taken over.
    pub lost: Arc<AtomicBool>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        lock(&self.held).remove(&self.owner);
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(t) = self.renewer.get() {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<HashMap<String, Held>>) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leases {
    /// Hold the lease `owner` has on `request_id` (just claimed): renewed every `lease / 3`
    /// until the guard is dropped. The renewing task starts with the first lease held.
    pub fn hold(
        &self,
        store: &Store,
        lease: Duration,
        request_id: &str,
        owner: &str,
    ) -> LeaseGuard {
        let lost = Arc::new(AtomicBool::new(false));
        lock(&self.held).insert(
            owner.to_owned(),
            Held {
                request_id: request_id.to_owned(),
                lost: lost.clone(),
            },
        );
        self.renewer
            .get_or_init(|| tokio::spawn(renew(store.clone(), self.held.clone(), lease)));
        LeaseGuard {
            owner: owner.to_owned(),
            held: self.held.clone(),
            lost,
        }
    }
}

async fn renew(store: Store, held: Arc<Mutex<HashMap<String, Held>>>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // The flags are taken with the snapshot: a guard dropped and made again meanwhile
        // (the same owner claiming again) is never told about the old one.
        let (batch, flags): (Vec<(String, String)>, Vec<Arc<AtomicBool>>) = lock(&held)
            .iter()
            .map(|(owner, h)| ((h.request_id.clone(), owner.clone()), h.lost.clone()))
            .unzip();
        if batch.is_empty() {
            continue;
        }
        match store.renew_all(&batch, lease).await {
            Ok(lost) => {
                for ((_, owner), flag) in batch.iter().zip(&flags) {
                    if lost.contains(owner) {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => warn!(error = %e, leases = batch.len(), "lease renewal failed; will retry"),
        }
    }
}
