//! `/dead-letters`: the dead-letter queue as `kycq dlq list` sees it (read, then returned to the
//! queue in place), with filters; a detail view with the call journal and the decisions; and the
//! actions of `kycq dlq` — retry, resolve a `billing_unknown`, purge — each behind a confirmation
//! page, run by the same code as the command line, recorded in `operator_decisions` and in
//! `console_audit`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlx::Row;

use super::auth::Session;
use super::story::{decisions_table, journal_table};
use super::view::{self, Nav};
use super::{AppState, PageError};
use crate::check::Billed;
use crate::ops::dlq::{self as ops, Ctx, DlqError, Filters, Listed, Operator, Target};

/// The list's filters (all optional; none carries personal data).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    check: String,
    #[serde(default)]
    provider: String,
    /// e.g. `10m`, `2h`, `1d`.
    #[serde(default)]
    older_than: String,
}

impl ListQuery {
    fn filters(&self) -> Result<Filters, PageError> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Ok(Filters {
            reasons: opt(&self.reason).into_iter().collect(),
            check: opt(&self.check),
            provider: opt(&self.provider),
            older_than: match opt(&self.older_than) {
                Some(a) => Some(
                    ops::parse_age(&a).map_err(|e| PageError::Bad(format!("older than: {e}")))?,
                ),
                None => None,
            },
            newer_than: None,
        })
    }
}

impl From<DlqError> for PageError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::Broker(b) => PageError::Broker(b),
            DlqError::Store(s) => PageError::Store(s),
            DlqError::Refused(why) => PageError::NotFound(why),
        }
    }
}

/// The masked subjects of these requests (from their rows: never the message bodies).
async fn subjects(
    app: &AppState,
    ids: Vec<String>,
) -> Result<HashMap<String, serde_json::Value>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT request_id, subject_masked FROM checks WHERE request_id = ANY($1)")
            .bind(ids)
            .fetch_all(&app.pool)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("request_id")?, r.try_get("subject_masked")?)))
        .collect()
}

/// A masked subject on one line: `name 张* · id 1101**********1234 · mobile 138****0000`.
pub fn subject_line(v: Option<&serde_json::Value>) -> String {
    let Some(obj) = v.and_then(|v| v.as_object()) else {
        return "–".into();
    };
    obj.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| format!("{k} {s}")))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn dead_lettered_at(l: &Listed) -> Option<DateTime<Utc>> {
    l.info
        .dead_lettered_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `GET /dead-letters`.
pub async fn list(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let filters = q.filters()?;
    let limit = app.settings.console.dead_letter_page;
    let listed = {
        let d = DlqSession::open(&app).await?;
        ops::list(&d.ctx(&app), &filters, limit).await?
    };
    let ids = listed
        .iter()
        .filter_map(|l| l.info.request_id.clone())
        .collect();
    let subjects = subjects(&app, ids).await?;
    let now = Utc::now();
    let mut reasons: Vec<&str> = listed.iter().map(|l| l.info.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    let body = html! {
        form.filters method="get" action="/dead-letters" {
            label { "Reason" input type="text" name="reason" value=(q.reason) list="reasons" placeholder="any"; }
            datalist id="reasons" { @for r in &reasons { option value=(r) {} } }
            label { "Check" select name="check" {
                option value="" { "any" }
                @for c in ["mobile3", "id2", "id2_period"] { option value=(c) selected[q.check == c] { (c) } }
            } }
            label { "Provider" select name="provider" {
                option value="" { "any" }
                @for p in app.settings.providers.0.keys() { option value=(p) selected[&q.provider == p] { (p) } }
            } }
            label { "Older than" input type="text" name="older_than" value=(q.older_than) placeholder="e.g. 10m, 2h" size="8"; }
            button type="submit" { "Filter" }
            a href="/dead-letters" { "Clear" }
        }
        p.muted { (listed.len()) " dead letters shown"
            @if listed.len() == limit { " (the first " (limit) "; narrow the filters to see others)" } "." }
        (view::table(&["request", "reason", "check", "provider", "age", "#attempts", "subject (masked)", "action"], html! {
            @for l in &listed {
                @let check = l.stored.as_ref().and_then(|r| r.check.clone())
                    .or_else(|| l.info.routing_key.strip_prefix("check.").map(str::to_owned));
                tr {
                    td { @match &l.info.request_id {
                        Some(id) => a href={"/dead-letters/" (urlencode(id))} { (id) },
                        None => span.muted { "(no request_id)" },
                    } }
                    td { (l.info.reason) }
                    td { (check.as_deref().unwrap_or("–")) }
                    td { (l.stored.as_ref().and_then(|r| r.provider.as_deref()).unwrap_or("–")) }
                    td { @match dead_lettered_at(l) { Some(t) => (view::age((now - t).num_seconds())), None => "–" } }
                    td.num { (l.info.attempts.as_deref().unwrap_or("–")) }
                    td { (subject_line(l.info.request_id.as_ref().and_then(|id| subjects.get(id)))) }
                    td { (l.action) }
                }
            }
            @if listed.is_empty() { tr { td.muted colspan="8" { "No dead letters match." } } }
        }))
        p.muted { "A dead letter without a request_id can only be purged, from the command line: "
            code { "kycq dlq purge --reason <reason> --yes" } "." }
    };
    Ok(view::page("Dead letters", Nav::DeadLetters, Some(&s), body))
}

/// Percent-encode a path segment.
pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /dead-letters/{request_id}`: its dead letters, the masked body, the call journal, the
/// decisions, and the actions.
pub async fn detail(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(request_id): Path<String>,
) -> Result<Response, PageError> {
    let shown = shown(&app, &request_id).await?;
    let actions: Vec<&str> = shown.dead_letters.iter().map(|d| d.action).collect();
    let can = |a: &str| actions.iter().any(|x| x.contains(a));
    let id = urlencode(&request_id);
    let body = html! {
        p { a href={"/story/" (id)} { "The request's whole story" } }
        h2 { "Dead letters" }
        (view::table(&["reason", "detail", "dead-lettered", "by", "#run", "action", "why"], html! {
            @for d in &shown.dead_letters {
                tr {
                    td { (d.info.reason) }
                    td.wrap { (d.info.detail.as_deref().unwrap_or("–")) }
                    td { (d.info.dead_lettered_at.as_deref().unwrap_or("–")) }
                    td { (d.info.dead_lettered_by) }
                    td.num { (d.info.retry_round.map_or("–".into(), |r| r.to_string())) }
                    td { (d.action) }
                    td.wrap { (d.why.as_deref().unwrap_or("")) }
                }
            }
        }))
        div.actions {
            @if can("retry") { a.button href={"/dead-letters/" (id) "/retry"} { "Retry…" } " " }
            @if can("resolve") { a.button href={"/dead-letters/" (id) "/resolve"} { "Resolve billing…" } " " }
            a.button href={"/dead-letters/" (id) "/purge"} { "Purge…" }
        }
        h2 { "Message (personal data masked)" }
        pre.json { (shown.body_masked) }
        h2 { "Provider calls" }
        (journal_table(&shown.calls))
        h2 { "Decisions" }
        (decisions_table(&shown.decisions))
    };
    Ok(view::page(
        &format!("Dead letter {request_id}"),
        Nav::DeadLetters,
        Some(&s),
        body,
    ))
}

/// The actions, as they appear in URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Retry,
    Resolve,
    Purge,
}

impl Action {
    fn parse(s: &str) -> Result<Action, PageError> {
        match s {
            "retry" => Ok(Action::Retry),
            "resolve" => Ok(Action::Resolve),
            "purge" => Ok(Action::Purge),
            _ => Err(PageError::NotFound(format!("no action {s:?}"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Resolve => "resolve",
            Action::Purge => "purge",
        }
    }

    /// Resolve and purge change the record for good: the operator says why.
    fn needs_note(self) -> bool {
        self != Action::Retry
    }

    fn explain(self) -> &'static str {
        match self {
            Action::Retry => {
                "Run the request again under its own request_id. A stored result is \
                replaced (and kept); a billed result or a failure that is not retryable is left as \
                it is. The new result is published like any other."
            }
            Action::Resolve => {
                "Record the billing you found in the vendor's console for a call \
                kycq could not establish (look it up by the provider request id in the call \
                journal). Billed: the result stays failed and the dead letter is removed. Not \
                billed: the dead letter stays, and can then be retried."
            }
            Action::Purge => {
                "Remove the dead letter for good. The request's stored result (if \
                any) stays; the decision is recorded."
            }
        }
    }
}

/// Separates the dead letters' keys in the confirmation form.
const KEY_SEPARATOR: char = '\n';

/// The request's dead letters now (the queue read once, every message returned in place).
async fn shown(app: &AppState, request_id: &str) -> Result<ops::Shown, PageError> {
    let d = DlqSession::open(app).await?;
    Ok(ops::show(&d.ctx(app), request_id).await?)
}

/// The console's one dead-letter cursor at a time (two would each see only what the other left
/// in the queue), and the broker connection to read it with.
struct DlqSession<'a> {
    _one: tokio::sync::MutexGuard<'a, ()>,
    broker: std::sync::Arc<super::BrokerHandle>,
}

impl<'a> DlqSession<'a> {
    async fn open(app: &'a AppState) -> Result<DlqSession<'a>, crate::broker::BrokerError> {
        let one = app.dlq.lock().await;
        Ok(DlqSession {
            _one: one,
            broker: app.broker().await?,
        })
    }

    fn ctx<'c>(&'c self, app: &'c AppState) -> Ctx<'c> {
        Ctx {
            conn: &self.broker.conn,
            names: &app.names,
            store: &app.store,
            publisher: &self.broker.publisher,
        }
    }
}

/// `GET /dead-letters/{request_id}/{action}`: the confirmation, naming the dead letters it will
/// act on (and only those: one that arrives meanwhile is left alone).
pub async fn confirm(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path((request_id, action)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let action = Action::parse(&action)?;
    let shown = shown(&app, &request_id).await?;
    let letters: Vec<&Listed> = shown
        .dead_letters
        .iter()
        .filter(|d| action != Action::Resolve || d.info.reason == "billing_unknown")
        .collect();
    let keys: Vec<&str> = letters.iter().filter_map(|d| d.key.as_deref()).collect();
    let id = urlencode(&request_id);
    let body = html! {
        p { (action.explain()) }
        (view::table(&["reason", "dead-lettered", "action"], html! {
            @for d in &letters {
                tr {
                    td { (d.info.reason) }
                    td { (d.info.dead_lettered_at.as_deref().unwrap_or("–")) }
                    td { (d.action) }
                }
            }
        }))
        @if letters.is_empty() {
            p.flash.bad { "None of this request's dead letters can be " (action.name()) "d." }
        } @else {
            form.action method="post" action={"/dead-letters/" (id) "/" (action.name())} {
                (view::csrf_field(&s))
                input type="hidden" name="keys" value=(keys.join(&KEY_SEPARATOR.to_string()));
                @if action == Action::Resolve {
                    fieldset {
                        legend { "Billed by the vendor?" }
                        label { input type="radio" name="billed" value="no" required; "No: not on the bill" }
                        label { input type="radio" name="billed" value="yes"; "Yes: charged" }
                    }
                }
                label { "Note (kept with the decision; no names, ID or mobile numbers)"
                    textarea name="note" rows="2" maxlength="500" required[action.needs_note()] {} }
                button type="submit" class=[(action == Action::Purge).then_some("danger")] {
                    "Confirm " (action.name()) " of " (request_id)
                }
                a href={"/dead-letters/" (id)} { "Cancel" }
            }
        }
    };
    Ok(view::page(
        &format!("Confirm {} of {request_id}", action.name()),
        Nav::DeadLetters,
        Some(&s),
        body,
    ))
}

/// What an action form sends.
#[derive(Debug, serde::Deserialize)]
pub struct ActForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    billed: String,
    /// The keys of the dead letters the confirmation named.
    #[serde(default)]
    keys: String,
}

/// `POST /dead-letters/{request_id}/{action}`: run it on the dead letters the confirmation
/// named, record it, show what happened. Sending the same form again finds them gone and does
/// nothing.
pub async fn act(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path((request_id, action)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Result<Response, PageError> {
    let action = Action::parse(&action)?;
    let note = f.note.trim();
    let keys: Vec<String> = f
        .keys
        .split(KEY_SEPARATOR)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let billed = match f.billed.as_str() {
        "yes" => Some(Billed::Yes),
        "no" => Some(Billed::No),
        _ => None,
    };
    let refusal = if keys.is_empty() {
        Some("the form names no dead letter: open the dead letter again")
    } else if action.needs_note() && note.is_empty() {
        Some("a note is required: say why (it is kept with the decision)")
    } else if action == Action::Resolve && billed.is_none() {
        Some("choose whether the vendor billed the call")
    } else {
        None
    };
    let outcome: Result<(bool, String), String> = match refusal {
        Some(why) => Err(why.to_owned()),
        None => {
            let who = Operator {
                name: s.operator.clone(),
                note: (!note.is_empty()).then(|| note.chars().take(500).collect()),
            };
            run(&app, action, &request_id, &keys, billed, &who).await
        }
    };
    let (ok, text) = match &outcome {
        Ok((ok, text)) => (*ok, text.clone()),
        Err(why) => (false, why.clone()),
    };
    if action == Action::Resolve && ok {
        // A call's billing changed: the month's closed days are counted again.
        app.month.clear().await;
    }
    let _ = app
        .audit(
            &s.operator,
            action.name(),
            Some(&request_id),
            match &outcome {
                Ok((true, _)) => "ok",
                Ok((false, _)) => "refused",
                Err(_) => "failed",
            },
            Some(&text),
            Some(from),
        )
        .await;
    let id = urlencode(&request_id);
    let body: Markup = html! {
        (view::flash(Some(&text), ok))
        p {
            @if action == Action::Resolve && ok && billed == Some(Billed::No) {
                a href={"/dead-letters/" (id) "/retry"} { "Retry it now" } " · "
            }
            a href={"/story/" (id)} { "See the request's story (its new result appears there)" }
            " · " a href="/dead-letters" { "Back to the dead letters" }
        }
    };
    Ok(view::page(
        &format!("{} of {request_id}", action.name()),
        Nav::DeadLetters,
        Some(&s),
        body,
    ))
}

/// Run one action on exactly the dead letters `keys` of `request_id`: whether it did what was
/// asked, and the account of it; Err when it could not run (RabbitMQ, Postgres).
async fn run(
    app: &AppState,
    action: Action,
    request_id: &str,
    keys: &[String],
    billed: Option<Billed>,
    who: &Operator,
) -> Result<(bool, String), String> {
    let d = DlqSession::open(app).await.map_err(|e| e.to_string())?;
    let ctx = d.ctx(app);
    let target = Target::Exact { request_id, keys };
    let done = match action {
        Action::Retry => ops::retry(&ctx, target, &Filters::default(), who, false)
            .await
            .map(|r| (r.done + r.cleared > 0 && r.failed == 0, report_text(&r))),
        Action::Purge => ops::purge(&ctx, target, &Filters::default(), who, false)
            .await
            .map(|r| (r.done > 0 && r.failed == 0, report_text(&r))),
        Action::Resolve => {
            let billed = billed.expect("checked by the caller");
            ops::resolve(&ctx, request_id, billed, who, false)
                .await
                .map(|r| {
                    let next = if billed == Billed::No {
                        "now retry it to run it again under its own id".to_owned()
                    } else {
                        r.next.clone()
                    };
                    let how = if r.recorded {
                        "recorded"
                    } else {
                        "was already recorded"
                    };
                    (true, format!("billed {} {how}; {next}", r.billed.as_str()))
                })
        }
    };
    match done {
        Ok(x) => Ok(x),
        Err(DlqError::Refused(why)) => Ok((false, why)),
        Err(e) => Err(e.to_string()),
    }
}

fn report_text(r: &ops::Report) -> String {
    let mut t = r.summary();
    for i in &r.items {
        if let Some(why) = &i.why {
            t.push_str(&format!("; {}: {why}", i.outcome));
        }
    }
    t
}
