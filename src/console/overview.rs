//! `/`: what is happening now. Every figure comes from one bounded query (an index range over
//! the last minutes, or today), so the page stays fast with millions of rows:
//!
//! - per provider: calls per second over the last 10 s and 60 s against `rate_per_sec`, billed
//!   calls today and this month (days of `billing.utc_offset`), calls awaiting a billing
//!   resolution, the verdict mix of today's results, p50/p99 provider latency of the most recent
//!   calls, and the circuit state the workers report;
//! - per check: requests per minute (last 5 minutes), today's count and rejected share;
//! - workers alive (their heartbeats) and the queue depths (passive declares).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlx::{PgPool, Row};

use super::auth::Session;
use super::view::{self, Nav};
use super::{billing, AppState};
use crate::providers::registry::refusal_message;
use crate::store::{self as store, WorkerRow};

/// Calls per provider in the last 10 and 60 seconds.
async fn call_rates(pool: &PgPool) -> Result<billing::PerProvider, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, \
                count(*) FILTER (WHERE sent_at > now() - interval '10 seconds') AS last10, \
                count(*) AS last60 \
           FROM provider_calls WHERE sent_at > now() - interval '60 seconds' \
          GROUP BY provider",
    )
    .fetch_all(pool)
    .await?;
    billing::per_provider(&rows, "last10", "last60")
}

/// Provider latency (ms) of the most recent finished calls of the last 15 minutes: p50, p99 and
/// how many calls they describe (at most 20,000: the sample is bounded whatever the load).
async fn latency(pool: &PgPool) -> Result<BTreeMap<String, (f64, f64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, \
                count(*) AS n \
           FROM (SELECT provider, extract(epoch FROM finished_at - sent_at)::float8 * 1000 AS ms \
                   FROM provider_calls \
                  WHERE sent_at > now() - interval '15 minutes' AND finished_at IS NOT NULL \
                  ORDER BY sent_at DESC LIMIT 20000) recent \
          GROUP BY provider",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("provider")?,
                (r.try_get("p50")?, r.try_get("p99")?, r.try_get("n")?),
            ))
        })
        .collect()
}

/// Today's results per provider and verdict (a failure or rejection counts under its status).
async fn verdicts(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<BTreeMap<String, Vec<(String, i64)>>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT COALESCE(provider, '-') AS provider, COALESCE(verdict, status) AS label, \
                count(*) AS n \
           FROM checks WHERE received_at >= $1 AND completed_at IS NOT NULL \
          GROUP BY 1, 2 ORDER BY 1, 3 DESC",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in rows {
        out.entry(r.try_get("provider")?)
            .or_default()
            .push((r.try_get("label")?, r.try_get("n")?));
    }
    Ok(out)
}

/// Per check: requests in the last 5 minutes, today, and today's rejected ones.
async fn checks(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT COALESCE(check_kind, '(unreadable)') AS check_kind, \
                count(*) FILTER (WHERE received_at > now() - interval '5 minutes') AS last5, \
                count(*) AS today, \
                count(*) FILTER (WHERE status = 'rejected') AS rejected \
           FROM checks WHERE received_at >= $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("check_kind")?,
                r.try_get("last5")?,
                r.try_get("today")?,
                r.try_get("rejected")?,
            ))
        })
        .collect()
}

/// What the shared Redis bucket of one provider says now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limiter {
    /// How long a call asking now would wait for its slot, in ms (0: slots are free).
    pub wait_ms: f64,
    /// The share of `rate_per_sec` in force (below 1 after the vendor answered "throttled").
    pub share: f64,
    /// Seconds the bucket stays paused (a "throttled" answer's cool-down), 0 when not paused.
    pub paused_secs: f64,
}

impl Limiter {
    /// From the bucket's hash (`tat`, `share`, `share_at`, `paused_until`, microseconds of
    /// Redis time) as `src/ratelimit/bucket.lua` keeps it. Pure.
    pub fn read(
        fields: [Option<f64>; 4],
        now_us: f64,
        rate_per_sec: f64,
        burst: u32,
        min_share: f64,
        recovery_secs: u64,
    ) -> Limiter {
        let [tat, share_base, share_at, paused_until] = fields;
        let interval = 1e6 / rate_per_sec.max(1e-9);
        let tau = f64::from(burst.saturating_sub(1)) * interval;
        let tat = tat.unwrap_or(now_us).max(now_us);
        let share = match (share_base, share_at) {
            (Some(b), Some(at)) => (b
                + (1.0 - min_share) * (now_us - at).max(0.0) / (recovery_secs.max(1) as f64 * 1e6))
                .min(1.0),
            _ => 1.0,
        };
        Limiter {
            wait_ms: (tat - tau - now_us).max(0.0) / 1000.0,
            share,
            paused_secs: paused_until.map_or(0.0, |p| ((p - now_us) / 1e6).max(0.0)),
        }
    }
}

/// Every configured provider's bucket, read from Redis (bounded by `redis.timeout_ms`).
async fn limiters(app: &AppState) -> Result<BTreeMap<String, Limiter>, String> {
    let s = &app.settings;
    let read = async {
        let client = crate::ratelimit::RedisClient::from_settings(&s.redis)?;
        let mut c = client.connect().await?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let now_us = secs as f64 * 1e6 + micros as f64;
        let mut out = BTreeMap::new();
        for (name, p) in s.providers.all() {
            let key = crate::ratelimit::bucket_key(&s.redis.key_prefix, name, None);
            let v: Vec<Option<f64>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["tat", "share", "share_at", "paused_until"])
                .query_async(&mut c)
                .await?;
            let fields = [v[0], v[1], v[2], v[3]];
            out.insert(
                name.to_owned(),
                Limiter::read(
                    fields,
                    now_us,
                    p.rate_per_sec,
                    p.burst,
                    p.throttle_min_share,
                    p.throttle_recovery_secs,
                ),
            );
        }
        Ok::<_, redis::RedisError>(out)
    };
    let budget = std::time::Duration::from_millis(s.redis.timeout_ms.max(1) * 4);
    match tokio::time::timeout(budget, read).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(format!("Redis: {e}")),
        Err(_) => Err("Redis did not answer in time".into()),
    }
}

/// The overview page.
pub async fn page(State(app): State<AppState>, Extension(s): Extension<Session>) -> Response {
    let now = Utc::now();
    let day = billing::day_start(&app.settings, now);
    let pool = &app.pool;
    let (rates, lat, verd, per_check, today, month, fleet) = tokio::join!(
        call_rates(pool),
        latency(pool),
        verdicts(pool, day),
        checks(pool, day),
        billing::billed_since(pool, day),
        app.month.billed_this_month(&app.settings, pool, now),
        store::workers(pool, app.settings.worker.alive_within()),
    );
    // A figure that cannot be read is shown as missing, with why; the rest still show.
    let mut missing: Vec<String> = Vec::new();
    let rates = got(&mut missing, "calls per second", rates);
    let lat = got(&mut missing, "latency", lat);
    let verd = got(&mut missing, "results today", verd);
    let per_check = got(&mut missing, "checks", per_check);
    let today = got(&mut missing, "billed today", today);
    let month = got(&mut missing, "billed this month", month);
    let fleet = got(&mut missing, "workers", fleet);
    let circuits = store::merge_providers(&fleet);
    let (queues, limits) = tokio::join!(queue_depths(&app), limiters(&app));
    let limits = limits.unwrap_or_else(|e| {
        missing.push(format!("rate limiter: {e}"));
        BTreeMap::new()
    });
    let cfg = &app.settings.providers.0;
    let mut providers: Vec<&str> = cfg.keys().map(String::as_str).collect();
    for p in rates.keys().chain(today.keys()) {
        if !providers.contains(&p.as_str()) {
            providers.push(p);
        }
    }

    let body = html! {
        p.muted { "Updated " (view::time(&now)) " UTC; reloads every 10 s. Days are "
            (app.settings.billing.utc_offset) " days." }
        @if !missing.is_empty() {
            p.flash.bad { "Not shown (the rest is current): " (missing.join("; ")) }
        }
        h2 { "Providers" }
        div.cards {
            @for p in &providers {
                @let (last10, last60) = rates.get(*p).copied().unwrap_or((0, 0));
                @let limit = cfg.get(*p).map(|c| c.rate_per_sec);
                @let (billed_d, unknown_d) = today.get(*p).copied().unwrap_or((0, 0));
                @let (billed_m, unknown_m) = month.get(*p).copied().unwrap_or((0, 0));
                @let circuit = circuits.iter().find(|c| c.provider == *p);
                div.card data-provider=(p) {
                    h3 {
                        (p)
                        @match circuit {
                            Some(c) if c.open_on > 0 => (view::badge("bad", &format!("circuit open on {} of {}", c.open_on, c.workers))),
                            Some(c) if c.refused_on > 0 => (view::badge("bad", "credentials refused")),
                            Some(_) => (view::badge("ok", "circuit closed")),
                            None => (view::badge("warn", "no worker reports")),
                        }
                    }
                    dl {
                        dt { "calls/s (10 s · 60 s)" }
                        dd.rate { (format!("{:.1} · {:.1}", last10 as f64 / 10.0, last60 as f64 / 60.0)) }
                        dt { "limit" }
                        dd { @if let Some(l) = limit { (format!("{l} /s")) } @else { "–" } }
                        @if let Some(b) = limits.get(*p) {
                            dt { "next free slot" }
                            dd.limiter {
                                @if b.wait_ms > 0.0 { "in " (format!("{:.0} ms", b.wait_ms)) } @else { "now" }
                                @if b.share < 1.0 { " · rate lowered to " (format!("{:.0}%", b.share * 100.0)) }
                                @if b.paused_secs > 0.0 { " · paused " (format!("{:.1} s", b.paused_secs)) " (throttled)" }
                            }
                        }
                        dt { "billed today" } dd.billed-today { (billed_d) }
                        dt { "billed this month" } dd.billed-month { (billed_m + billed_d) }
                        dt { "billing unknown" }
                        dd { @if unknown_d + unknown_m > 0 { a href="/dead-letters?reason=billing_unknown" { (unknown_d + unknown_m) } } @else { "0" } }
                        @let l = lat.get(*p);
                        dt { "latency p50 · p99" }
                        dd { (view::ms(l.map(|l| l.0))) " · " (view::ms(l.map(|l| l.1))) }
                        dt { "results today" }
                        dd { @for (label, n) in verd.get(*p).map(Vec::as_slice).unwrap_or(&[]) { span.nowrap { (label) " " (n) } " " } }
                    }
                    @if let Some(c) = circuit {
                        @if c.open_on > 0 || c.refused_on > 0 { p.muted.why { (c.describe()) } }
                        @if let Some(r) = &c.refusal { p.flash.bad { (refusal_message(p, r)) } }
                    }
                }
            }
        }
        h2 { "Checks" }
        (view::table(&["check", "#requests/min (5 min)", "#today", "#rejected today"], html! {
            @for (check, last5, today, rejected) in &per_check {
                tr {
                    td { (check) }
                    td.num { (format!("{:.1}", *last5 as f64 / 5.0)) }
                    td.num { (today) }
                    td.num { (view::percent(*rejected, *today)) }
                }
            }
            @if per_check.is_empty() { tr { td.muted colspan="4" { "No requests today." } } }
        }))
        h2 { "Queues" }
        (view::table(&["queue", "#ready", "#consumers"], html! {
            @for (name, depth) in &queues {
                tr {
                    td { (name) }
                    @match depth {
                        Ok((ready, consumers)) => { td.num { (ready) } td.num { (consumers) } }
                        Err(e) => { td.muted colspan="2" { (e) } }
                    }
                }
            }
        }))
        h2 { "Workers" }
        (workers_table(&fleet, now))
    };
    view::refreshing("Overview", Nav::Overview, &s, body, 10)
}

/// A figure's value, or the default with why it is missing noted.
fn got<T: Default>(missing: &mut Vec<String>, what: &str, r: Result<T, sqlx::Error>) -> T {
    r.unwrap_or_else(|e| {
        missing.push(format!("{what}: {e}"));
        T::default()
    })
}

fn workers_table(fleet: &[WorkerRow], now: DateTime<Utc>) -> Markup {
    view::table(
        &["worker", "state", "#in flight", "last heartbeat", "started"],
        html! {
            @for w in fleet {
                tr {
                    td { (w.worker_id) }
                    td { @if w.alive { (view::badge("ok", if w.consuming { "consuming" } else { "not consuming" })) }
                         @else if w.stopped_at.is_some() { (view::badge("warn", "stopped")) }
                         @else { (view::badge("bad", "silent")) } }
                    td.num { (w.in_flight) " / " (w.concurrency) }
                    td { (view::age((now - w.heartbeat_at).num_seconds())) " ago" }
                    td { (view::time(&w.started_at)) }
                }
            }
            @if fleet.is_empty() { tr { td.muted colspan="5" { "No worker has reported in the last 24 hours." } } }
        },
    )
}

/// Work, wait and dead-letter queue depths; a queue that cannot be read says why.
async fn queue_depths(app: &AppState) -> Vec<(String, Result<(u32, u32), String>)> {
    let names = [
        app.names.work_queue.clone(),
        app.names.wait_queue.clone(),
        app.names.dead_queue.clone(),
    ];
    let mut out = Vec::new();
    match app.broker().await {
        Ok(b) => {
            for n in names {
                let d = tokio::time::timeout(
                    super::BROKER_TIMEOUT,
                    crate::broker::dlq::depth(&b.conn, &n),
                )
                .await
                .map_err(|_| "RabbitMQ did not answer in time".to_owned())
                .and_then(|d| d.map_err(|e| format!("RabbitMQ: {e}")));
                out.push((n, d));
            }
        }
        Err(e) => {
            for n in names {
                out.push((n, Err(format!("RabbitMQ: {e}"))));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    #[test]
    fn the_bucket_read_as_the_script_keeps_it() {
        let now = 1_000_000_000.0;
        // 10/s, burst 1: interval 100 ms. A tat 250 ms ahead: the next slot is in 250 ms.
        let l = Limiter::read(
            [Some(now + 250_000.0), None, None, None],
            now,
            10.0,
            1,
            0.5,
            60,
        );
        assert_eq!((l.wait_ms, l.share, l.paused_secs), (250.0, 1.0, 0.0));
        // Burst 3 absorbs two intervals: 50 ms left.
        let l = Limiter::read(
            [Some(now + 250_000.0), None, None, None],
            now,
            10.0,
            3,
            0.5,
            60,
        );
        assert_eq!(l.wait_ms, 50.0);
        // An empty bucket (no key): free now.
        assert_eq!(
            Limiter::read([None; 4], now, 10.0, 1, 0.5, 60),
            Limiter {
                wait_ms: 0.0,
                share: 1.0,
                paused_secs: 0.0
            }
        );
        // Lowered to 50 % 30 s ago, recovering over 60 s: 75 % now; paused 2 s more.
        let l = Limiter::read(
            [None, Some(0.5), Some(now - 30e6), Some(now + 2e6)],
            now,
            10.0,
            1,
            0.5,
            60,
        );
        assert_eq!((l.share, l.paused_secs), (0.75, 2.0));
    }
}
