//! The sandbox's call ledger: every call it received (refused ones too), keyed by a hash of the ID number, never plaintext.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::check::mask::mask_id_number;

/// One call as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Position in the ledger, from 1; keeps increasing across [`Ledger::clear`].
    pub seq: u64,
    /// When the sandbox decided the answer.
    pub at: DateTime<Utc>,
    /// `tencent`, `alibaba`, `alimarket` (or `unknown` for an unroutable call).
    pub provider: String,
    /// The vendor action (e.g. `PhoneVerification`), as received.
    pub action: String,
    /// [`subject_key`] of the ID number as received, when one could be read.
    pub subject_key: Option<String>,
    /// The ID number, masked.
    pub id_number_masked: Option<String>,
    /// The HTTP status answered.
    pub http_status: u16,
    /// The vendor's result or error code answered, or `HTTP500`.
    pub code: String,
    /// Whether the vendor would have charged for this call.
    pub billed: bool,
}

/// A call to record. Holds the plaintext ID number only until [`Ledger::record`] hashes it.
pub struct CallRecord<'a> {
    /// When the answer was decided.
    pub at: DateTime<Utc>,
    /// The provider name.
    pub provider: &'a str,
    /// The vendor action.
    pub action: &'a str,
    /// The ID number as received, if any.
    pub id_number: Option<&'a str>,
    /// The HTTP status answered.
    pub http_status: u16,
    /// The code answered.
    pub code: &'a str,
    /// Whether the call is billed.
    pub billed: bool,
}

/// The subject key of an ID number: hex HMAC-SHA256 of the string as received, keyed with a
/// random key of this process, so keys compare within one sandbox run and the ledger (which any
/// operator may read) cannot be turned back into ID numbers by hashing guesses.
pub fn subject_key(id_number: &str) -> String {
    use hmac::{Hmac, Mac};
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(id_number.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Default)]
struct Inner {
    entries: Vec<LedgerEntry>,
    last_seq: u64,
    /// Calls that reached scenario evaluation, per (provider, subject key).
    attempts: HashMap<(String, String), u64>,
}

/// The shared ledger; clones share the same entries.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("len", &self.len()).finish()
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent (each change is one push or
        // insert), so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a call and returns the stored entry.
    pub fn record(&self, call: CallRecord<'_>) -> LedgerEntry {
        let mut inner = self.lock();
        inner.last_seq += 1;
        let entry = LedgerEntry {
            seq: inner.last_seq,
            at: call.at,
            provider: call.provider.to_owned(),
            action: call.action.to_owned(),
            subject_key: call.id_number.map(subject_key),
            id_number_masked: call.id_number.map(mask_id_number),
            http_status: call.http_status,
            code: call.code.to_owned(),
            billed: call.billed,
        };
        inner.entries.push(entry.clone());
        entry
    }

    /// Counts one more scenario evaluation for this identity at this provider and returns the
    /// count including this one (1 on the first call): what the `*Once` scenarios look at.
    pub fn next_attempt(&self, provider: &str, id_number: &str) -> u64 {
        let mut inner = self.lock();
        let count = inner
            .attempts
            .entry((provider.to_owned(), subject_key(id_number)))
            .or_insert(0);
        *count += 1;
        *count
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.lock().entries.clone()
    }

    /// How many recorded calls carried this ID number (hashed before comparing).
    pub fn calls_for_id(&self, id_number: &str) -> usize {
        let key = subject_key(id_number);
        self.lock()
            .entries
            .iter()
            .filter(|e| e.subject_key.as_deref() == Some(key.as_str()))
            .count()
    }

    /// How many recorded calls were billed.
    pub fn billed_count(&self) -> usize {
        self.lock().entries.iter().filter(|e| e.billed).count()
    }

    /// How many calls are recorded.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no call is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every entry and every per-identity counter (sequence numbers keep increasing).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.attempts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "11010519491231002X";

    fn call(id: Option<&str>, billed: bool) -> CallRecord<'_> {
        CallRecord {
            at: Utc::now(),
            provider: "tencent",
            action: "PhoneVerification",
            id_number: id,
            http_status: 200,
            code: if billed { "0" } else { "-11" },
            billed,
        }
    }

    #[test]
    fn records_hashes_and_counts() {
        let ledger = Ledger::new();
        assert!(ledger.is_empty());
        let first = ledger.record(call(Some(ID), true));
        ledger.record(call(Some(ID), false));
        ledger.record(call(None, false));
        assert_eq!(first.seq, 1);
        assert_eq!(first.subject_key, Some(subject_key(ID)));
        assert_eq!(
            first.id_number_masked.as_deref(),
            Some("110***********002X")
        );
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.calls_for_id(ID), 2);
        assert_eq!(ledger.calls_for_id("110105194912310021"), 0);
        assert_eq!(ledger.billed_count(), 1);
        let json = serde_json::to_string(&ledger.entries()).unwrap();
        assert!(!json.contains(ID));
        assert!(!json.contains("19491231"));
    }

    #[test]
    fn attempts_are_per_provider_and_identity_and_cleared() {
        let ledger = Ledger::new();
        assert_eq!(ledger.next_attempt("tencent", ID), 1);
        assert_eq!(ledger.next_attempt("tencent", ID), 2);
        assert_eq!(ledger.next_attempt("alibaba", ID), 1);
        assert_eq!(ledger.next_attempt("tencent", "other"), 1);
        ledger.record(call(Some(ID), true));
        let clone = ledger.clone();
        clone.clear();
        assert!(ledger.is_empty());
        assert_eq!(ledger.next_attempt("tencent", ID), 1);
        assert_eq!(ledger.record(call(None, false)).seq, 2);
    }

    #[test]
    fn subject_keys_are_keyed_not_a_bare_hash() {
        let id = "11010519491231002X";
        assert_eq!(subject_key(id), subject_key(id));
        assert_ne!(subject_key(id), subject_key("110105194912310029"));
        assert_ne!(
            subject_key(id),
            crate::providers::signing::sha256_hex(id.as_bytes())
        );
        assert_eq!(subject_key(id).len(), 64);
    }
}
