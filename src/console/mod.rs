//! `kycq console`: the operators' web console. Server-rendered pages (maud templates, no
//! JavaScript), reading Postgres through a small pool of its own whose every query is cut off
//! after `console.query_timeout_ms`, and the dead-letter queue through the same code as
//! `kycq dlq`.
//!
//! - `/` overview: per provider, calls per second against the limit, circuits, billing, verdicts,
//!   latency; per check, requests per minute and the rejected share; workers; queue depths.
//! - `/dead-letters`: the dead-letter queue, filters, a detail view with the call journal, and
//!   the actions of `kycq dlq` (retry, resolve a `billing_unknown`, purge) behind a confirmation.
//! - `/story`: a request by `request_id`, or every check of a person (name and ID number, sent
//!   by POST, turned into the subject fingerprint on the server, never stored or logged).
//! - `/billing`: billed calls and cost per provider, API and day, and the CSV finance reconciles
//!   with the vendors' bills.
//!
//! Security: sign-in required ([`auth`]), sessions in a signed cookie, a CSRF token on every
//! POST, no personal data in any URL, strict security headers, every action audited in
//! `console_audit`.

pub mod auth;
mod billing;
mod dead_letters;
mod overview;
mod story;
mod view;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::html;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, BrokerError, Publisher};
use crate::configuration::{Names, Settings};
use crate::store::Store;
use auth::{Auth, LoginError, LoginForm, Session};
use view::Nav;

/// The console's shared state.
pub struct Console {
    settings: Settings,
    names: Names,
    pool: PgPool,
    store: Store,
    auth: Auth,
    broker: tokio::sync::Mutex<Option<Arc<BrokerHandle>>>,
    /// One dead-letter cursor at a time: two would each see only what the other left.
    dlq: tokio::sync::Mutex<()>,
    month: billing::MonthCache,
}

type AppState = Arc<Console>;

struct BrokerHandle {
    conn: lapin::Connection,
    publisher: Publisher,
}

/// A running console (for tests and `kycq demo`-style embedding).
pub struct RunningConsole {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The token generated (and printed) when none is configured.
    pub generated_token: Option<SecretString>,
    /// The server task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Connect, migrate, bind `console.listen` and serve until `shutdown`.
pub async fn start(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningConsole> {
    let cs = &settings.console;
    let addr = cs.validate()?;
    let generated = (!cs.has_auth())
        .then(|| SecretString::from(format!("kycq-{}", hex::encode(rand::random::<[u8; 16]>()))));
    if !addr.ip().is_loopback() && !cs.secure_cookies {
        warn!(
            %addr,
            "console.listen is not a loopback address and console.secure_cookies is off: serve \
             the console over HTTPS (a TLS proxy) and set console.secure_cookies, or the sign-in \
             and session cookie cross the network in clear text"
        );
    }
    migrate(&settings).await?;
    let pool = connect(&settings).await?;
    let console = Arc::new(Console {
        names: settings.topology.names(),
        store: Store::from_pool(pool.clone()),
        auth: Auth::new(cs, generated.clone()),
        broker: Default::default(),
        dlq: Default::default(),
        month: Default::default(),
        pool,
        settings,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("console.listen ({addr}): cannot listen: {e}"))?;
    let addr = listener.local_addr()?;
    let app = router(console.clone());
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
        if let Err(e) = served {
            warn!(error = %e, "console server stopped");
        }
        if let Some(b) = console.broker.lock().await.take() {
            if let Ok(b) = Arc::try_unwrap(b) {
                b.publisher.close().await;
                let _ = b.conn.close(200, "console stopped".into()).await;
            }
        }
    });
    Ok(RunningConsole {
        addr,
        generated_token: generated,
        task,
    })
}

/// `kycq console`: serve until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let shutdown = crate::cli::shutdown_on_signals();
    let running = start(settings, shutdown.clone()).await?;
    info!(addr = %running.addr, "console listening");
    println!("kycq console: http://{}/", running.addr);
    if let Some(t) = &running.generated_token {
        // Printed to the terminal only (never logged): the operator who started it signs in.
        println!(
            "No console.operator_token or console.users configured: sign in with the token \
             {} (generated at start, valid until this console stops)",
            t.expose_secret()
        );
    }
    let _ = running.task.await;
    Ok(())
}

/// Create the database if needed and apply migrations, on a connection of its own without the
/// console's statement timeout (an index build, or waiting for a worker's migration to finish,
/// takes as long as it takes).
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    crate::store::ensure_database(&settings.database).await?;
    let opts = PgConnectOptions::from_str(settings.database.url.expose_secret())?
        .options([("application_name", "kycq console (migrations)")]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let done = crate::store::MIGRATOR.run(&pool).await;
    pool.close().await;
    done?;
    Ok(())
}

/// The console's own pool: small, every statement cut off after `console.query_timeout_ms`.
async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(settings.database.url.expose_secret())?.options([
        (
            "statement_timeout",
            settings.console.query_timeout_ms.to_string(),
        ),
        ("application_name", "kycq console".to_owned()),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.console.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await?)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{request_id}", get(dead_letters::detail))
        .route(
            "/dead-letters/{request_id}/{action}",
            get(dead_letters::confirm).post(dead_letters::act),
        )
        .route("/story", get(story::form).post(story::person))
        .route("/story/{request_id}", get(story::request))
        .route("/billing", get(billing::page))
        .route("/billing.csv", get(billing::csv))
        .route("/static/console.css", get(view::css))
        .route(
            "/favicon.ico",
            get(|| async { StatusCode::NO_CONTENT.into_response() }),
        )
        .fallback(|| async { view::error(StatusCode::NOT_FOUND, "No such page.") })
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// Headers on every response: no framing, no sniffing, no referrer, a strict content policy
/// (no scripts at all), and no caching of pages that hold (masked) personal data.
async fn security_headers(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    // `same-origin`, not `no-referrer`: with `no-referrer` browsers send `Origin: null` on form
    // posts, and the origin check needs the real one. Nothing leaks to other sites either way.
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    if app.settings.console.secure_cookies {
        set(h, "strict-transport-security", "max-age=31536000");
    }
    res
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Postgres failed (or a query ran past `console.query_timeout_ms`).
    #[error("Postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// A store operation failed.
    #[error("Postgres: {0}")]
    Store(#[from] crate::store::StoreError),
    /// RabbitMQ failed.
    #[error("RabbitMQ: {0}")]
    Broker(#[from] BrokerError),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served as asked.
    #[error("{0}")]
    Bad(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.timed_out() {
            return view::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "This page needs more database time than the console allows \
                 (console.query_timeout_ms; console.report_timeout_ms for billing): it cuts its \
                 queries off so that it never holds up the workers. Choose a shorter range, or \
                 use the command line (`kycq report billing --from … --to … --csv`).",
            );
        }
        let status = match &self {
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Bad(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            warn!(error = %self, "console page failed");
        }
        let sentence = match status {
            StatusCode::SERVICE_UNAVAILABLE => format!("{self}. Try again in a moment; if it persists, check the service named (`kycq doctor`)."),
            _ => self.to_string(),
        };
        view::error(status, &sentence)
    }
}

impl PageError {
    /// Whether Postgres cancelled the statement at `console.query_timeout_ms` (SQLSTATE 57014).
    fn timed_out(&self) -> bool {
        let db = match self {
            PageError::Db(e) => e.as_database_error(),
            PageError::Store(crate::store::StoreError::Db(e)) => e.as_database_error(),
            _ => None,
        };
        db.and_then(|d| d.code()).as_deref() == Some("57014")
    }
}

/// How long the console waits for RabbitMQ to connect or answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

impl Console {
    /// The broker connection and a confirmed publisher, connected on first use and again after
    /// it was lost.
    async fn broker(&self) -> Result<Arc<BrokerHandle>, BrokerError> {
        let mut g = self.broker.lock().await;
        if let Some(b) = g.as_ref().filter(|b| b.conn.status().connected()) {
            return Ok(b.clone());
        }
        *g = None;
        let connect = async {
            let conn = broker::connect_any(&self.settings.amqp.nodes(), "kycq console").await?;
            broker::declare_topology(&conn, &self.names, self.settings.amqp.delivery_limit).await?;
            let publisher = Publisher::new(
                &conn,
                self.names.clone(),
                Duration::from_secs(self.settings.amqp.confirm_timeout_secs),
            )
            .await?;
            Ok::<_, BrokerError>(BrokerHandle { conn, publisher })
        };
        let b = tokio::time::timeout(BROKER_TIMEOUT, connect)
            .await
            .map_err(|_| BrokerError::Timeout("connecting".into()))??;
        let b = Arc::new(b);
        *g = Some(b.clone());
        Ok(b)
    }

    /// Whether a (genuine) session is still open in `console_sessions`.
    async fn session_live(&self, s: &Session) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM console_sessions \
              WHERE id = $1 AND ended_at IS NULL AND expires_at > now())",
        )
        .bind(&s.id)
        .fetch_one(&self.pool)
        .await
    }

    /// Record a console action (never personal data, never an operator's note: notes live with
    /// the decision in `operator_decisions`). Reads of personal data (a person search, an export)
    /// are refused when their record cannot be written; an action already done is reported
    /// whatever happens to its record (the decision is recorded with it).
    async fn audit(
        &self,
        operator: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
        client: Option<SocketAddr>,
    ) -> Result<(), sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO console_audit (operator, action, target, outcome, detail, client) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(operator)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .bind(detail)
        .bind(client.map(|c| c.ip().to_string()))
        .execute(&self.pool)
        .await;
        if let Err(e) = &r {
            warn!(error = %e, action, "console audit record not written");
        }
        r.map(|_| ())
    }
}

#[derive(serde::Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    failed: Option<String>,
}

async fn login_page(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let (cookie, csrf) = auth::cookie_value(&headers, auth::LOGIN_COOKIE)
        .and_then(|v| Some((v.to_owned(), app.auth.login_csrf_of(v)?)))
        .unwrap_or_else(|| app.auth.login_nonce());
    let message = q.failed.as_deref().map(|f| match f {
        "name" => "Type your name: it goes into the audit log with every action.",
        "throttled" => "Too many failed sign-ins from this address: wait a minute.",
        _ => "Sign-in refused: check the token, or the user name and password.",
    });
    let body = html! {
        div.login {
            (view::flash(message, false))
            @if app.auth.has_token() {
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Operator token" input type="password" name="token" autocomplete="current-password" required; }
                    label { "Your name (for the audit log)" input type="text" name="name" autocomplete="name" required maxlength="64"; }
                    button type="submit" { "Sign in with the token" }
                }
            }
            @if app.auth.has_users() {
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "User name" input type="text" name="name" autocomplete="username" required; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    let mut res = view::page("Sign in", Nav::None, None, body);
    let set = app
        .auth
        .cookie(auth::LOGIN_COOKIE, &cookie, 3600)
        .parse()
        .expect("cookie is ASCII");
    res.headers_mut().append(header::SET_COOKIE, set);
    res
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    match app.auth.login(from.ip(), &f).await {
        Ok(operator) => {
            let (session, cookie) = app.auth.issue(&operator);
            let recorded = sqlx::query(
                "INSERT INTO console_sessions (id, operator, expires_at) \
                 VALUES ($1, $2, to_timestamp($3))",
            )
            .bind(&session.id)
            .bind(&operator)
            .bind(session.expires as f64)
            .execute(&app.pool)
            .await;
            if let Err(e) = recorded {
                return view::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("Signed in, but the session cannot be recorded: Postgres: {e}. Try again in a moment."),
                );
            }
            // Sessions ended or expired more than a day ago are of no use to anyone.
            let _ = sqlx::query(
                "DELETE FROM console_sessions WHERE expires_at < now() - interval '1 day'",
            )
            .execute(&app.pool)
            .await;
            let _ = app
                .audit(&operator, "login", None, "ok", None, Some(from))
                .await;
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, cookie.parse().expect("ASCII cookie"));
            h.append(
                header::SET_COOKIE,
                app.auth
                    .cookie(auth::LOGIN_COOKIE, "", 0)
                    .parse()
                    .expect("ASCII cookie"),
            );
            res
        }
        Err(e) => {
            // The name typed is recorded only when it is an account's: anything else typed there
            // may be a token or a password put in the wrong field.
            let typed = f.name.trim();
            let who = if f.token.is_empty() && app.auth.is_account(typed) {
                typed.to_owned()
            } else {
                String::new()
            };
            let (outcome, q) = match e {
                LoginError::Refused => ("refused", "refused"),
                LoginError::NameMissing => ("refused", "name"),
                LoginError::Throttled => ("throttled", "throttled"),
            };
            let _ = app
                .audit(
                    if who.is_empty() { "-" } else { &who },
                    "login",
                    None,
                    outcome,
                    Some(if f.token.is_empty() {
                        "account"
                    } else {
                        "operator token"
                    }),
                    Some(from),
                )
                .await;
            Redirect::to(&format!("/login?failed={q}")).into_response()
        }
    }
}

async fn logout(
    State(app): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Extension(s): Extension<Session>,
) -> Response {
    let ended = sqlx::query("UPDATE console_sessions SET ended_at = now() WHERE id = $1")
        .bind(&s.id)
        .execute(&app.pool)
        .await;
    if let Err(e) = ended {
        return view::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The session could not be ended: Postgres: {e}. Try again in a moment."),
        );
    }
    let _ = app
        .audit(&s.operator, "logout", None, "ok", None, Some(from))
        .await;
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        app.auth
            .cookie(auth::SESSION_COOKIE, "", 0)
            .parse()
            .expect("ASCII cookie"),
    );
    res
}
