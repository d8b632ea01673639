//! The `workers` table: each worker's heartbeat (written by [`crate::worker::heartbeat`]) and the
//! reads of the operators' console ("workers alive", "circuit state and why" per provider).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgPool;

use crate::providers::circuit::{Refused, TripReason};
use crate::providers::registry::{CircuitStatus, ProviderState};

/// One worker's row, as of its last heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerRow {
    /// The worker process's id (`worker.id`, made unique per process).
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i32,
    /// kycq's version.
    pub version: String,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (database clock).
    pub heartbeat_at: DateTime<Utc>,
    /// When it stopped cleanly, if it did.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Its slots (`worker.concurrency`).
    pub concurrency: i32,
    /// Deliveries it was processing at its last heartbeat.
    pub in_flight: i32,
    /// Whether it was consuming from the work queue at its last heartbeat.
    pub consuming: bool,
    /// Each configured provider's circuit and refusal at its last heartbeat (entries this
    /// version cannot read are left out).
    pub providers: Vec<ProviderState>,
    /// Heartbeat within `alive_within` and not stopped.
    pub alive: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    worker_id: String,
    host: String,
    pid: i32,
    version: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    concurrency: i32,
    in_flight: i32,
    consuming: bool,
    providers: Json<serde_json::Value>,
    alive: bool,
}

impl From<Row> for WorkerRow {
    fn from(r: Row) -> WorkerRow {
        let providers = match r.providers.0 {
            serde_json::Value::Array(items) => items
                .into_iter()
                .filter_map(|p| serde_json::from_value(p).ok())
                .collect(),
            _ => Vec::new(),
        };
        WorkerRow {
            worker_id: r.worker_id,
            host: r.host,
            pid: r.pid,
            version: r.version,
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
            stopped_at: r.stopped_at,
            concurrency: r.concurrency,
            in_flight: r.in_flight,
            consuming: r.consuming,
            providers,
            alive: r.alive,
        }
    }
}

/// Every worker of the last day (older rows are removed by the heartbeats), alive ones first,
/// then by host and id. `alive` is: a heartbeat less than `alive_within` old (database clock)
/// and no `stopped_at`; pass three beats, [`crate::configuration::WorkerSettings::alive_within`].
pub async fn workers(pool: &PgPool, alive_within: Duration) -> Result<Vec<WorkerRow>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT worker_id, host, pid, version, started_at, heartbeat_at, stopped_at, concurrency,
               in_flight, consuming, providers,
               (stopped_at IS NULL
                AND heartbeat_at > now() - make_interval(secs => $1::float8)) AS alive
          FROM workers
         ORDER BY alive DESC, host, worker_id
        "#,
    )
    .bind(alive_within.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(WorkerRow::from).collect())
}

/// One provider across the alive workers ([`merge_providers`]): "open on N of M workers".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProviderSummary {
    /// Provider name.
    pub provider: String,
    /// Open if its circuit is open on any alive worker.
    pub circuit: CircuitStatus,
    /// Alive workers that have this provider configured (M).
    pub workers: usize,
    /// Of them, those whose circuit is open (N).
    pub open_on: usize,
    /// The latest `open_until` among them.
    pub open_until: Option<DateTime<Utc>>,
    /// The latest reason a circuit of it opened (by when it opened), among the open ones.
    pub why: Option<TripReason>,
    /// Alive workers on which the provider refuses the credentials, the account or the quota.
    pub refused_on: usize,
    /// The refusal reported by the most recent heartbeat among those.
    pub refusal: Option<Refused>,
}

impl ProviderSummary {
    /// One line for people: `open on 2 of 3 workers (provider_wide 961, account)`, `closed on
    /// 3 workers`.
    pub fn describe(&self) -> String {
        let mut s = match self.circuit {
            CircuitStatus::Open => format!("open on {} of {} workers", self.open_on, self.workers),
            CircuitStatus::Closed => format!("closed on {} workers", self.workers),
        };
        if let Some(w) = &self.why {
            s.push_str(&format!(" ({} {}", serde_plain(&w.class), w.code));
            if let Some(r) = w.refusal {
                s.push_str(&format!(", {}", r.as_str()));
            }
            s.push(')');
        }
        if let Some(r) = &self.refusal {
            s.push_str(&format!(
                "; {} ({}) on {} of {}",
                r.kind.describe(),
                r.code,
                self.refused_on,
                self.workers
            ));
        }
        s
    }
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// Each provider's circuit across the alive workers of `rows` (stopped and silent ones are left
/// out), in name order: on how many it is open, until when, the latest why, and the refusal.
pub fn merge_providers(rows: &[WorkerRow]) -> Vec<ProviderSummary> {
    let mut out: BTreeMap<&str, (ProviderSummary, Option<DateTime<Utc>>)> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.alive) {
        for p in &row.providers {
            let (s, refusal_seen) = out.entry(p.provider.as_str()).or_insert_with(|| {
                (
                    ProviderSummary {
                        provider: p.provider.clone(),
                        circuit: CircuitStatus::Closed,
                        workers: 0,
                        open_on: 0,
                        open_until: None,
                        why: None,
                        refused_on: 0,
                        refusal: None,
                    },
                    None,
                )
            });
            s.workers += 1;
            if p.circuit == CircuitStatus::Open {
                s.circuit = CircuitStatus::Open;
                s.open_on += 1;
                s.open_until = s.open_until.max(p.open_until);
                if let Some(w) = &p.why {
                    if s.why.as_ref().is_none_or(|old| w.at > old.at) {
                        s.why = Some(w.clone());
                    }
                }
            }
            if let Some(r) = &p.refusal {
                s.refused_on += 1;
                if refusal_seen.is_none_or(|seen| row.heartbeat_at > seen) {
                    *refusal_seen = Some(row.heartbeat_at);
                    s.refusal = Some(r.clone());
                }
            }
        }
    }
    out.into_values().map(|(s, _)| s).collect()
}

/// What one heartbeat writes ([`beat`]).
#[derive(Clone, Debug)]
pub struct Beat<'a> {
    /// The row's key.
    pub worker_id: &'a str,
    /// Host name.
    pub host: &'a str,
    /// Process id.
    pub pid: i32,
    /// kycq's version.
    pub version: &'a str,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Slots.
    pub concurrency: i32,
    /// Deliveries being processed.
    pub in_flight: i32,
    /// Consuming from the work queue.
    pub consuming: bool,
    /// Each provider's state.
    pub providers: &'a [ProviderState],
}

// The upsert, then the count of live workers: this one (its row is written by the same
// statement, which the count does not see) and every other not stopped that beat within $10
// seconds. `$with` opens the statement's WITH list (and may hold a CTE of its own).
macro_rules! beat_and_count {
    ($with:literal) => {
        concat!(
            $with,
            r#"
    beat AS (
        INSERT INTO workers (worker_id, host, pid, version, started_at, heartbeat_at, stopped_at,
                             concurrency, in_flight, consuming, providers)
        VALUES ($1, $2, $3, $4, $5, now(), NULL, $6, $7, $8, $9)
        ON CONFLICT (worker_id) DO UPDATE
           SET heartbeat_at = now(), stopped_at = NULL, in_flight = EXCLUDED.in_flight,
               consuming = EXCLUDED.consuming, providers = EXCLUDED.providers
    )
    SELECT 1 + count(*) FROM workers
     WHERE worker_id <> $1 AND stopped_at IS NULL
       AND heartbeat_at > now() - make_interval(secs => $10::float8)
"#
        )
    };
}

const UPSERT: &str = beat_and_count!("WITH");

const UPSERT_AND_PRUNE: &str = beat_and_count!(
    r#"
    WITH pruned AS (
        DELETE FROM workers
         WHERE heartbeat_at < now() - interval '24 hours' AND worker_id <> $1
    ),"#
);

/// Write one heartbeat: insert the worker's row or refresh it, and count the live workers (one
/// statement): this one, and every other not stopped whose heartbeat is less than
/// `alive_within` old. With `prune`, the same statement also deletes the rows whose heartbeat
/// is more than 24 hours old.
pub async fn beat(
    pool: &PgPool,
    b: &Beat<'_>,
    alive_within: Duration,
    prune: bool,
) -> Result<usize, sqlx::Error> {
    let live: i64 = sqlx::query_scalar(if prune { UPSERT_AND_PRUNE } else { UPSERT })
        .bind(b.worker_id)
        .bind(b.host)
        .bind(b.pid)
        .bind(b.version)
        .bind(b.started_at)
        .bind(b.concurrency)
        .bind(b.in_flight)
        .bind(b.consuming)
        .bind(Json(b.providers))
        .bind(alive_within.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(live).unwrap_or(1))
}

/// Mark the worker stopped (a clean stop), with its last state.
pub async fn stopped(pool: &PgPool, b: &Beat<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE workers
           SET stopped_at = now(), heartbeat_at = now(), in_flight = $2, consuming = $3,
               providers = $4
         WHERE worker_id = $1
        "#,
    )
    .bind(b.worker_id)
    .bind(b.in_flight)
    .bind(b.consuming)
    .bind(Json(b.providers))
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::outcome::OutcomeClass;
    use crate::check::Refusal;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn closed(provider: &str) -> ProviderState {
        ProviderState {
            provider: provider.into(),
            circuit: CircuitStatus::Closed,
            closes_in_secs: None,
            open_until: None,
            why: None,
            refusal: None,
        }
    }

    fn open(provider: &str, code: &str, opened: i64, until: i64) -> ProviderState {
        ProviderState {
            circuit: CircuitStatus::Open,
            closes_in_secs: Some(30),
            open_until: Some(at(until)),
            why: Some(TripReason {
                class: OutcomeClass::ProviderWide,
                code: code.into(),
                http_status: Some(200),
                refusal: Some(Refusal::Credentials),
                at: at(opened),
            }),
            refusal: Some(Refused {
                kind: Refusal::Credentials,
                code: code.into(),
            }),
            ..closed(provider)
        }
    }

    fn row(id: &str, alive: bool, beat: i64, providers: Vec<ProviderState>) -> WorkerRow {
        WorkerRow {
            worker_id: id.into(),
            host: "h".into(),
            pid: 1,
            version: "0.1.0".into(),
            started_at: at(0),
            heartbeat_at: at(beat),
            stopped_at: None,
            concurrency: 16,
            in_flight: 0,
            consuming: true,
            providers,
            alive,
        }
    }

    #[test]
    fn merges_the_alive_workers_circuits_with_the_latest_why() {
        let rows = vec![
            row(
                "a",
                true,
                10,
                vec![closed("alibaba"), open("tencent", "AuthFailure.A", 5, 35)],
            ),
            row(
                "b",
                true,
                11,
                vec![closed("alibaba"), open("tencent", "AuthFailure.B", 8, 38)],
            ),
            row("c", true, 12, vec![closed("alibaba"), closed("tencent")]),
            // A dead worker's open circuit does not count.
            row("d", false, 13, vec![open("alibaba", "Forbidden.X", 9, 99)]),
        ];
        let merged = merge_providers(&rows);
        assert_eq!(merged.len(), 2);
        let (ali, ten) = (&merged[0], &merged[1]);
        assert_eq!(
            (ali.provider.as_str(), ali.circuit, ali.workers, ali.open_on),
            ("alibaba", CircuitStatus::Closed, 3, 0)
        );
        assert_eq!((ali.why.as_ref(), ali.refusal.as_ref()), (None, None));
        assert_eq!(ali.describe(), "closed on 3 workers");
        assert_eq!(
            (ten.circuit, ten.workers, ten.open_on, ten.refused_on),
            (CircuitStatus::Open, 3, 2, 2)
        );
        assert_eq!(ten.open_until, Some(at(38)));
        assert_eq!(ten.why.as_ref().unwrap().code, "AuthFailure.B");
        assert_eq!(ten.refusal.as_ref().unwrap().code, "AuthFailure.B");
        assert_eq!(
            ten.describe(),
            "open on 2 of 3 workers (provider_wide AuthFailure.B, credentials); credentials \
             refused (AuthFailure.B) on 2 of 3"
        );
        assert!(merge_providers(&[]).is_empty());
    }

    #[test]
    fn unreadable_provider_entries_are_left_out() {
        let r = Row {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            version: "v".into(),
            started_at: at(0),
            heartbeat_at: at(1),
            stopped_at: None,
            concurrency: 1,
            in_flight: 0,
            consuming: false,
            providers: Json(serde_json::json!([
                serde_json::to_value(closed("tencent")).unwrap(),
                {"provider": "x", "circuit": "half_open"}
            ])),
            alive: true,
        };
        let w = WorkerRow::from(r);
        assert_eq!(w.providers, vec![closed("tencent")]);
    }
}
