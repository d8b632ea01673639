//! `/billing`: billed calls and cost per provider, API and billing day (`billing.utc_offset`),
//! the calls awaiting a billing resolution, and `/billing.csv`, the same lines as
//! `kycq report billing --csv` (date, API, count), for finance to reconcile with the vendors'
//! bills. Also the overview's "billed today / this month" figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use maud::html;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::auth::Session;
use super::view::{self, Nav};
use super::{AppState, PageError};
use crate::configuration::Settings;
use crate::ops::billing::{self as bill, Prices};

/// How long the month-to-yesterday figures are reused: closed days change only when an operator
/// resolves a `billing_unknown` (the console's own resolutions clear the cache at once).
const MONTH_TTL: Duration = Duration::from_secs(300);

/// The billing offset (validated when the settings were loaded).
pub fn offset(s: &Settings) -> FixedOffset {
    bill::parse_utc_offset(&s.billing.utc_offset)
        .unwrap_or_else(|_| FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"))
}

/// When today's billing day began, in UTC.
pub fn day_start(s: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
    let off = offset(s);
    let today = bill::billing_day(now, off);
    bill::utc_bounds(today, today, off).0
}

/// Per provider: billed and billing-unknown calls sent since `since` (an index range on
/// `sent_at`, at most one billing day).
pub async fn billed_since(pool: &PgPool, since: DateTime<Utc>) -> Result<PerProvider, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT provider, \
                count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'yes') AS billed, \
                count(*) FILTER (WHERE COALESCE(billed_by_operator, billed) = 'unknown') AS unknown \
           FROM provider_calls WHERE sent_at >= $1 GROUP BY provider",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    per_provider(&rows, "billed", "unknown")
}

/// Rows of `provider` and two counts `a`, `b`, by provider.
pub fn per_provider(rows: &[PgRow], a: &str, b: &str) -> Result<PerProvider, sqlx::Error> {
    rows.iter()
        .map(|r| Ok((r.try_get("provider")?, (r.try_get(a)?, r.try_get(b)?))))
        .collect()
}

/// The month's closed days (first of the month to yesterday), per provider, reused for
/// [`MONTH_TTL`]. Counted by one request at a time: the others wait for its figures instead of
/// counting again.
#[derive(Default)]
pub struct MonthCache(tokio::sync::Mutex<Option<MonthFigures>>);

/// Billed and billing-unknown calls per provider.
pub type PerProvider = BTreeMap<String, (i64, i64)>;

/// When they were counted, for which day, and the counts.
type MonthFigures = (Instant, NaiveDate, PerProvider);

impl MonthCache {
    /// Billed and billing-unknown calls per provider from the first of this month to yesterday.
    pub async fn billed_this_month(
        &self,
        s: &Settings,
        pool: &PgPool,
        now: DateTime<Utc>,
    ) -> Result<PerProvider, sqlx::Error> {
        let off = offset(s);
        let today = bill::billing_day(now, off);
        let mut cached = self.0.lock().await;
        if let Some((at, day, v)) = &*cached {
            if *day == today && at.elapsed() < MONTH_TTL {
                return Ok(v.clone());
            }
        }
        let first = bill::month_start(today);
        let mut out = BTreeMap::new();
        if let Some(yesterday) = today.pred_opt().filter(|y| *y >= first) {
            let r = report_in(pool, s, first, yesterday, &Prices::new()).await?;
            for p in &r.providers {
                out.insert(
                    p.provider.clone(),
                    (
                        p.totals.billed_calls as i64,
                        p.totals.billing_unknown_calls as i64,
                    ),
                );
            }
        }
        *cached = Some((Instant::now(), today, out.clone()));
        Ok(out)
    }

    /// Forget the figures (an operator changed a call's billing).
    pub async fn clear(&self) {
        *self.0.lock().await = None;
    }
}

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: this month so far).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Range {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl Range {
    fn dates(&self, s: &Settings) -> Result<(NaiveDate, NaiveDate), PageError> {
        let today = bill::today(offset(s));
        let parse = |t: &str, default: NaiveDate, what: &str| {
            if t.trim().is_empty() {
                Ok(default)
            } else {
                NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                    .map_err(|_| PageError::Bad(format!("{what}: a date as YYYY-MM-DD")))
            }
        };
        let from = parse(&self.from, bill::month_start(today), "from")?;
        let to = parse(&self.to, today, "to")?;
        if from > to {
            return Err(PageError::Bad("from is after to".into()));
        }
        if (to - from).num_days() > 366 {
            return Err(PageError::Bad(
                "at most 366 days at once: export a year at a time".into(),
            ));
        }
        Ok((from, to))
    }
}

/// The billing report, its statement cut off after `console.report_timeout_ms` (not the
/// console's shorter `query_timeout_ms`: a month of a busy journal takes seconds).
pub async fn report(
    app: &AppState,
    from: NaiveDate,
    to: NaiveDate,
    prices: &Prices,
) -> Result<bill::Report, sqlx::Error> {
    report_in(&app.pool, &app.settings, from, to, prices).await
}

async fn report_in(
    pool: &PgPool,
    s: &Settings,
    from: NaiveDate,
    to: NaiveDate,
    prices: &Prices,
) -> Result<bill::Report, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        s.console.report_timeout_ms
    )))
    .execute(&mut *tx)
    .await?;
    let r = bill::report(&mut *tx, from, to, offset(s), prices).await?;
    tx.commit().await?;
    Ok(r)
}

fn prices(s: &Settings) -> Result<Prices, PageError> {
    Prices::from_settings(&s.billing).map_err(|e| PageError::Bad(e.to_string()))
}

/// `GET /billing`.
pub async fn page(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<Range>,
) -> Result<Response, PageError> {
    let (from, to) = q.dates(&app.settings)?;
    let prices = prices(&app.settings)?;
    let (report, unresolved) =
        tokio::try_join!(report(&app, from, to, &prices), bill::unresolved(&app.pool),)?;
    let money = |f: Option<bill::Fen>| f.map_or("unknown".to_owned(), |f| format!("¥{f}"));
    let body = html! {
        form.filters method="get" action="/billing" {
            label { "From" input type="date" name="from" value=(from); }
            label { "To" input type="date" name="to" value=(to); }
            button type="submit" { "Show" }
            a.button href={"/billing.csv?from=" (from) "&to=" (to)} download { "Download CSV" }
        }
        p.muted { "Billing days at UTC" (report.utc_offset) ", as the vendors bill. Unit prices from "
            code { "billing.prices" } "; an API without a price has an unknown cost." }
        @if !unresolved.is_empty() {
            p.flash.bad {
                "Awaiting a billing resolution: "
                @for u in &unresolved { (u.provider) " " (u.calls) " (oldest " (view::time(&u.oldest_sent_at)) ") " }
                a href="/dead-letters?reason=billing_unknown" { "resolve them" }
            }
        }
        h2 { "Per provider" }
        (view::table(&["provider", "#billed calls", "#cost (CNY)", "#billing unknown"], html! {
            @for p in &report.providers {
                tr data-provider=(p.provider) {
                    td { (p.provider) }
                    td.num.billed { (p.totals.billed_calls) }
                    td.num { (money(p.totals.cost_cny)) }
                    td.num { (p.totals.billing_unknown_calls) }
                }
            }
            tr { th { "total" } th.num { (report.total.billed_calls) } th.num { (money(report.total.cost_cny)) } th.num { (report.total.billing_unknown_calls) } }
        }))
        @if !report.unpriced.is_empty() {
            p.flash.bad { "No unit price for: "
                @for u in &report.unpriced { (u.provider) "." (u.api) " (" (u.billed_calls) " billed) " }
                "— set billing.prices." }
        }
        h2 { "Per day and API" }
        (view::table(&["date", "provider", "API", "#billed calls", "#unit price", "#cost (CNY)", "#billing unknown"], html! {
            @for l in &report.lines {
                tr {
                    td { (l.date) }
                    td { (l.provider) }
                    td { (l.api) }
                    td.num { (l.billed_calls) }
                    td.num { (l.unit_price_cny.map_or("–".into(), |p| p.to_string())) }
                    td.num { (money(l.cost_cny)) }
                    td.num { (l.billing_unknown_calls) }
                }
            }
            @if report.lines.is_empty() { tr { td.muted colspan="7" { "No billed calls in these days." } } }
        }))
    };
    Ok(view::page("Billing", Nav::Billing, Some(&s), body))
}

/// `GET /billing.csv`: the report as CSV (an attachment).
pub async fn csv(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    ConnectInfo(from_addr): ConnectInfo<SocketAddr>,
    Query(q): Query<Range>,
) -> Result<Response, PageError> {
    let (from, to) = q.dates(&app.settings)?;
    let range = format!("{from}..{to}");
    // Recorded before anything is read: an export that cannot be recorded is not made.
    app.audit(
        &s.operator,
        "billing_csv",
        Some(&range),
        "ok",
        None,
        Some(from_addr),
    )
    .await?;
    let report = report(&app, from, to, &prices(&app.settings)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"kycq-billing-{from}-{to}.csv\""),
            ),
        ],
        report.to_csv(),
    )
        .into_response())
}
