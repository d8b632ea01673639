//! `/story`: a request's whole story (its row, every call with its billing and timing, the
//! decisions, the results retries replaced, the published result), found by `request_id`; or
//! every check of one person, found by name and ID number. Those two are sent by POST (never in
//! a URL), normalised as the worker normalises them, turned into the subject fingerprint
//! (HMAC-SHA256 with `pii.key`) and dropped: neither they nor the fingerprint are stored or
//! logged; the audit log records only that a search was made and how many checks it found.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use secrecy::ExposeSecret;
use sqlx::Row;

use super::auth::Session;
use super::dead_letters::{subject_line, urlencode};
use super::view::{self, Nav};
use super::{AppState, PageError};
use crate::check::identity::{IdNumber, Name};
use crate::check::request::Subject;
use crate::store::{DecisionRow, JournalRow};

/// Most checks a person search lists.
const PERSON_LIMIT: i64 = 200;

/// One `checks` row, as the console shows it (personal data masked as stored).
struct CheckRow {
    request_id: String,
    check_kind: Option<String>,
    status: String,
    verdict: Option<String>,
    reason_code: Option<String>,
    billed: Option<String>,
    provider: Option<String>,
    attempts: i32,
    retry_round: i32,
    subject_masked: serde_json::Value,
    result: Option<serde_json::Value>,
    received_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "request_id, check_kind, status, verdict, reason_code, billed, provider, \
    attempts, retry_round, subject_masked, result, received_at, completed_at";

fn check_row(r: &sqlx::postgres::PgRow) -> Result<CheckRow, sqlx::Error> {
    Ok(CheckRow {
        request_id: r.try_get("request_id")?,
        check_kind: r.try_get("check_kind")?,
        status: r.try_get("status")?,
        verdict: r.try_get("verdict")?,
        reason_code: r.try_get("reason_code")?,
        billed: r.try_get("billed")?,
        provider: r.try_get("provider")?,
        attempts: r.try_get("attempts")?,
        retry_round: r.try_get("retry_round")?,
        subject_masked: r.try_get("subject_masked")?,
        result: r.try_get("result")?,
        received_at: r.try_get("received_at")?,
        completed_at: r.try_get("completed_at")?,
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct FormQuery {
    #[serde(default)]
    request_id: String,
}

/// `GET /story`: the two searches (a `request_id` given goes straight to its story).
pub async fn form(
    Extension(s): Extension<Session>,
    Query(q): Query<FormQuery>,
) -> Result<Response, PageError> {
    let id = q.request_id.trim();
    if !id.is_empty() {
        return Ok(Redirect::to(&format!("/story/{}", urlencode(id))).into_response());
    }
    Ok(view::page(
        "Requests",
        Nav::Story,
        Some(&s),
        search_forms(&s, None),
    ))
}

fn search_forms(s: &Session, message: Option<&str>) -> Markup {
    html! {
        (view::flash(message, false))
        h2 { "By request id" }
        form.search method="get" action="/story" {
            label { "request_id" input type="text" name="request_id" required maxlength="128"; }
            button type="submit" { "Show" }
        }
        h2 { "By person" }
        p.muted { "Every check of one person. The name and ID number are sent to the server only \
            to compute the fingerprint the workers store; they are not kept or logged." }
        form.search method="post" action="/story" autocomplete="off" {
            (view::csrf_field(s))
            label { "Name" input type="text" name="name" required maxlength="64" autocomplete="off"; }
            label { "ID number" input type="text" name="id_number" required maxlength="18" autocomplete="off"; }
            button type="submit" { "Find checks" }
        }
    }
}

/// What a person search sends.
#[derive(serde::Deserialize)]
pub struct PersonForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    id_number: String,
}

impl std::fmt::Debug for PersonForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonForm { .. }")
    }
}

/// `POST /story`: every check of a person.
pub async fn person(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Form(f): Form<PersonForm>,
) -> Result<Response, PageError> {
    let today = chrono::Utc::now().date_naive();
    let parsed = Name::parse(&f.name).and_then(|name| {
        IdNumber::parse(&f.id_number, today).map(|id_number| Subject {
            name,
            id_number,
            mobile: None,
            validity: None,
        })
    });
    let subject = match parsed {
        Ok(s) => s,
        // The error names the field and the rule, never the value.
        Err(e) => {
            let _ = app
                .audit(
                    &s.operator,
                    "person_search",
                    None,
                    "refused",
                    Some(&e.to_string()),
                    Some(from),
                )
                .await;
            return Ok(view::page(
                "Requests",
                Nav::Story,
                Some(&s),
                search_forms(&s, Some(&format!("Not searched: {e}."))),
            ));
        }
    };
    let key = app
        .settings
        .pii_key()
        .map_err(|e| PageError::Bad(e.to_string()))?;
    // Recorded before anything is read: a search that cannot be recorded is not made.
    app.audit(&s.operator, "person_search", None, "ok", None, Some(from))
        .await?;
    let fingerprint = subject.fingerprint(key.expose_secret().as_bytes());
    drop(f);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checks WHERE subject_fingerprint = $1 \
          ORDER BY received_at DESC LIMIT {PERSON_LIMIT}"
    )))
    .bind(&fingerprint)
    .fetch_all(&app.pool)
    .await?;
    let checks = rows.iter().map(check_row).collect::<Result<Vec<_>, _>>()?;
    let masked = subject.masked();
    let body = html! {
        p { "Checks of " strong { (masked.name.as_deref().unwrap_or("–")) " · " (masked.id_number.as_deref().unwrap_or("–")) } ", newest first"
            @if checks.len() as i64 == PERSON_LIMIT { " (the latest " (PERSON_LIMIT) ")" } ":" }
        (checks_table(&checks))
        p { a href="/story" { "New search" } }
    };
    Ok(view::page("Checks of a person", Nav::Story, Some(&s), body))
}

fn checks_table(checks: &[CheckRow]) -> Markup {
    view::table(
        &[
            "request",
            "check",
            "status",
            "verdict / reason",
            "billed",
            "provider",
            "#attempts",
            "received",
            "#took",
        ],
        html! {
            @for c in checks {
                tr {
                    td { a href={"/story/" (urlencode(&c.request_id))} { (c.request_id) } }
                    td { (c.check_kind.as_deref().unwrap_or("–")) }
                    td { (c.status) }
                    td { (c.verdict.as_deref().or(c.reason_code.as_deref()).unwrap_or("–")) }
                    td { (c.billed.as_deref().unwrap_or("–")) }
                    td { (c.provider.as_deref().unwrap_or("–")) }
                    td.num { (c.attempts) }
                    td { (view::time(&c.received_at)) }
                    td.num { (took(c.received_at, c.completed_at)) }
                }
            }
            @if checks.is_empty() { tr { td.muted colspan="9" { "No checks of this person." } } }
        },
    )
}

fn took(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> String {
    to.map_or("–".into(), |t| {
        view::ms(Some(
            (t - from).num_microseconds().unwrap_or(0) as f64 / 1000.0,
        ))
    })
}

/// `GET /story/{request_id}`.
pub async fn request(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(request_id): Path<String>,
) -> Result<Response, PageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checks WHERE request_id = $1"
    )))
    .bind(&request_id)
    .fetch_optional(&app.pool)
    .await?;
    let Some(c) = row.as_ref().map(check_row).transpose()? else {
        return Err(PageError::NotFound(format!(
            "No request {request_id} in the database: it was never received, or it is still \
             waiting in the queue."
        )));
    };
    let (calls, decisions, superseded) = tokio::try_join!(
        app.store.journal(&request_id),
        app.store.decisions(&request_id),
        app.store.superseded(&request_id),
    )?;
    let body = html! {
        div.cards {
            div.card {
                h3 { "Request" (status_badge(&c)) }
                dl {
                    dt { "check" } dd { (c.check_kind.as_deref().unwrap_or("–")) }
                    dt { "subject" } dd { (subject_line(Some(&c.subject_masked))) }
                    dt { "verdict / reason" } dd.verdict { (c.verdict.as_deref().or(c.reason_code.as_deref()).unwrap_or("–")) }
                    dt { "billed" } dd { (c.billed.as_deref().unwrap_or("–")) }
                    dt { "provider" } dd { (c.provider.as_deref().unwrap_or("–")) }
                    dt { "attempts" } dd { (c.attempts) }
                    dt { "run" } dd { (c.retry_round) }
                    dt { "received" } dd { (view::time(&c.received_at)) }
                    dt { "completed" } dd { (c.completed_at.as_ref().map_or("–".into(), view::time)) }
                    dt { "took" } dd { (took(c.received_at, c.completed_at)) }
                }
            }
        }
        h2 { "Provider calls" }
        (journal_table(&calls))
        h2 { "Published result" }
        @match &c.result {
            Some(r) => (view::json(r)),
            None => p.muted { "No result yet: a worker holds it, or it waits for a retry." },
        }
        @if !decisions.is_empty() {
            h2 { "Operator decisions" }
            (decisions_table(&decisions))
        }
        @if !superseded.is_empty() {
            h2 { "Results replaced by retries" }
            @for r in &superseded {
                p.muted { "Run " (r.retry_round) ", replaced " (view::time(&r.superseded_at)) " by decision " (r.decision_id) }
                (view::json(&r.result))
            }
        }
    };
    Ok(view::page(
        &format!("Request {request_id}"),
        Nav::Story,
        Some(&s),
        body,
    ))
}

fn status_badge(c: &CheckRow) -> Markup {
    let kind = match (c.status.as_str(), c.verdict.as_deref()) {
        ("completed", Some("match")) => "ok",
        ("pending", _) => "warn",
        ("failed", _) => "bad",
        _ => "warn",
    };
    view::badge(kind, &c.status)
}

/// The call journal: every call of every run, with its billing and timing.
pub fn journal_table(calls: &[JournalRow]) -> Markup {
    view::table(
        &[
            "#run",
            "#attempt",
            "provider",
            "API",
            "sent",
            "#took",
            "#HTTP",
            "code",
            "outcome",
            "billed",
            "provider request id",
        ],
        html! {
            @for c in calls {
                tr {
                    td.num { (c.retry_round) }
                    td.num { (c.attempt) }
                    td { (c.provider) }
                    td { (c.action) }
                    td { (view::time(&c.sent_at)) }
                    td.num { (took(c.sent_at, c.finished_at)) }
                    td.num { (c.http_status.map_or("–".into(), |h| h.to_string())) }
                    td { (c.provider_code.as_deref().unwrap_or("–")) }
                    td { (c.outcome.as_deref().unwrap_or("in flight / lost")) }
                    td { (c.billed)
                        @if let Some(b) = &c.billed_by_operator { " → " (b) " (operator)" } }
                    td { (c.provider_request_id.as_deref().unwrap_or("–")) }
                }
            }
            @if calls.is_empty() { tr { td.muted colspan="11" { "No provider call was made." } } }
        },
    )
}

/// Operator decisions, oldest first.
pub fn decisions_table(decisions: &[DecisionRow]) -> Markup {
    view::table(
        &[
            "when",
            "who",
            "action",
            "dead letter",
            "#run",
            "billed",
            "note",
        ],
        html! {
            @for d in decisions {
                tr {
                    td { (view::time(&d.decided_at)) }
                    td { (d.operator) }
                    td { (d.action) }
                    td { (d.dead_letter_reason.as_deref().unwrap_or("–")) }
                    td.num { (d.retry_round.map_or("–".into(), |r| r.to_string())) }
                    td { (d.billed.as_deref().unwrap_or("–")) }
                    td.wrap { (d.note.as_deref().unwrap_or("")) }
                }
            }
            @if decisions.is_empty() { tr { td.muted colspan="7" { "No decisions yet." } } }
        },
    )
}
