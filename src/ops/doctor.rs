//! `kycq doctor`: checks every configured service and provider once and says what to fix,
//! naming the configuration key — Postgres (connects, migrations applied), RabbitMQ (connects,
//! every topology object present), Redis (`PING`) and each provider's credentials, with a call
//! the vendor refuses without charging ([`crate::providers::Provider::probe`]). Prints no
//! secret (URLs and credentials are named by their keys, never shown) and no personal data
//! (the probes carry none).

use std::str::FromStr;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;

use crate::configuration::{env_name, RedisTopology, Settings};
use crate::fault::{self, FaultClass};
use crate::providers::circuit::Refused;
use crate::providers::registry::{credential_keys, refusal_message};
use crate::providers::{OutcomeClass, Probe, Registry};
use crate::store::{StoreError, MIGRATOR};

/// How long one check may take before it counts as not answering.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The service or provider (`postgres`, `rabbitmq`, `redis`, `provider tencent`).
    pub target: String,
    /// What was checked.
    pub checked: String,
    /// Whether it is fine.
    pub ok: bool,
    /// What was found: on failure, what to fix, naming the key.
    pub detail: String,
}

impl Check {
    fn ok(target: &str, checked: &str, detail: impl Into<String>) -> Check {
        Check {
            target: target.to_owned(),
            checked: checked.to_owned(),
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(target: &str, checked: &str, detail: impl Into<String>) -> Check {
        Check {
            ok: false,
            ..Check::ok(target, checked, detail)
        }
    }
}

/// `key (ENV_FORM)`.
fn key(k: &str) -> String {
    format!("{k} ({})", env_name(k))
}

/// Runs every check (services concurrently, then providers concurrently).
pub async fn run(settings: &Settings) -> Vec<Check> {
    let (mut checks, rabbit, redis) =
        tokio::join!(postgres(settings), rabbitmq(settings), redis(settings));
    checks.extend(rabbit);
    checks.push(redis);
    checks.extend(providers(settings).await);
    checks
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CHECK_TIMEOUT, f).await.ok()
}

/// Postgres: the database exists (it is never created here), kycq can connect, every migration
/// of this version is applied.
pub async fn postgres(settings: &Settings) -> Vec<Check> {
    const T: &str = "postgres";
    let db = &settings.database;
    let url = db.url.expose_secret();
    let refused = |e: sqlx::Error, what: &str| {
        let e = StoreError::Db(e);
        let why = match fault::classify_store(&e) {
            FaultClass::Misconfigured { key: k } => {
                format!("Postgres refuses {}: {e}", key(k))
            }
            _ => format!(
                "Postgres does not answer at {}: {e} — start it, or fix the host and port",
                key("database.url")
            ),
        };
        vec![Check::failed(T, what, why)]
    };
    let opts = match PgConnectOptions::from_str(url) {
        Ok(o) => o,
        Err(e) => {
            return vec![Check::failed(
                T,
                "connects",
                format!("{} is not a Postgres URL: {e}", key("database.url")),
            )]
        }
    };
    let name = opts.get_database().unwrap_or("postgres").to_owned();
    match timed(Postgres::database_exists(url)).await {
        None => return vec![Check::failed(T, "connects", format!("no answer within {}s at {}", CHECK_TIMEOUT.as_secs(), key("database.url")))],
        Some(Err(e)) => return refused(e, "connects"),
        Some(Ok(false)) if db.create_if_missing => {
            return vec![Check::ok(
                T,
                "connects",
                format!(
                    "database {name} does not exist yet: the first worker creates and migrates it ({} = true)",
                    key("database.create_if_missing")
                ),
            )]
        }
        Some(Ok(false)) => {
            return vec![Check::failed(
                T,
                "connects",
                format!(
                    "database {name} does not exist — create it, fix {0}, or set {1} = true (a worker then creates it)",
                    key("database.url"),
                    key("database.create_if_missing")
                ),
            )]
        }
        Some(Ok(true)) => {}
    }
    let pool = match timed(
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CHECK_TIMEOUT)
            .connect_with(opts),
    )
    .await
    {
        None => {
            return vec![Check::failed(
                T,
                "connects",
                format!(
                    "no answer within {}s at {}",
                    CHECK_TIMEOUT.as_secs(),
                    key("database.url")
                ),
            )]
        }
        Some(Err(e)) => return refused(e, "connects"),
        Some(Ok(p)) => p,
    };
    let mut checks = vec![Check::ok(T, "connects", format!("database {name}"))];
    let applied: Result<Vec<i64>, sqlx::Error> = async {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&pool)
            .await
    }
    .await;
    checks.push(match applied {
        Err(e) => {
            let mut c = refused(e, "migrations applied");
            c.remove(0)
        }
        Ok(applied) => {
            let pending: Vec<String> = MIGRATOR
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .filter(|m| !applied.contains(&m.version))
                .map(|m| m.version.to_string())
                .collect();
            let total = MIGRATOR
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .count();
            if pending.is_empty() {
                Check::ok(T, "migrations applied", format!("{total} of {total}"))
            } else {
                Check::failed(
                    T,
                    "migrations applied",
                    format!(
                        "{} of {total} not applied ({}) — run `kycq migrate` (a worker also applies them at start)",
                        pending.len(),
                        pending.join(", ")
                    ),
                )
            }
        }
    });
    pool.close().await;
    checks
}

/// RabbitMQ: kycq can connect, and every object of the topology exists (checked passively:
/// nothing is declared).
pub async fn rabbitmq(settings: &Settings) -> Vec<Check> {
    const T: &str = "rabbitmq";
    let amqp_key = if settings.amqp.urls.is_empty() {
        "amqp.url"
    } else {
        "amqp.urls"
    };
    let conn = match timed(crate::broker::connect_any(
        &settings.amqp.nodes(),
        "kycq doctor",
    ))
    .await
    {
        None => {
            return vec![Check::failed(
                T,
                "connects",
                format!(
                    "no answer within {}s at {}",
                    CHECK_TIMEOUT.as_secs(),
                    key(amqp_key)
                ),
            )]
        }
        Some(Err(e)) => {
            let why = match fault::classify_broker(&e) {
                FaultClass::Misconfigured { key: k } => {
                    format!("RabbitMQ refuses {}: {e}", key(k))
                }
                _ => format!(
                    "RabbitMQ does not answer at {}: {e} — start it, or fix the host and port",
                    key(amqp_key)
                ),
            };
            return vec![Check::failed(T, "connects", why)];
        }
        Some(Ok(c)) => c,
    };
    let mut checks = vec![Check::ok(T, "connects", format!("{amqp_key} accepted"))];
    let names = settings.topology.names();
    let mut missing = Vec::new();
    let exchanges = [
        &names.requests,
        &names.results,
        &names.dead_exchange,
        &names.wait_queue,
    ];
    let queues = [&names.work_queue, &names.dead_queue, &names.wait_queue];
    for (name, is_queue) in exchanges
        .iter()
        .map(|n| (*n, false))
        .chain(queues.iter().map(|n| (*n, true)))
    {
        // A passive declaration of a missing object closes its channel: one channel each.
        let found = match conn.create_channel().await {
            Err(e) => Err(e),
            Ok(ch) => {
                let r = if is_queue {
                    ch.queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map(|_| ())
                } else {
                    ch.exchange_declare(
                        name.as_str().into(),
                        ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                };
                let _ = ch.close(200, "doctor".into()).await;
                r
            }
        };
        if found.is_err() {
            missing.push(format!(
                "{} {name}",
                if is_queue { "queue" } else { "exchange" }
            ));
        }
    }
    checks.push(if missing.is_empty() {
        Check::ok(
            T,
            "topology present",
            format!("{} exchanges, {} queues", exchanges.len(), queues.len()),
        )
    } else {
        Check::failed(
            T,
            "topology present",
            format!(
                "missing: {} — run `kycq setup` (a worker also declares them), or fix {}",
                missing.join(", "),
                key("topology.prefix")
            ),
        )
    });
    let _ = conn.close(200, "doctor".into()).await;
    checks
}

/// Redis: `PING`.
pub async fn redis(settings: &Settings) -> Check {
    const T: &str = "redis";
    let fix = match settings.redis.topology() {
        Ok(RedisTopology::Cluster) => "redis.cluster_urls",
        Ok(RedisTopology::Sentinel) => "redis.sentinel_urls",
        _ => "redis.url",
    };
    let ping = async {
        // On a cluster, PING goes to every node and answers only if all of them do.
        let client = crate::ratelimit::RedisClient::from_settings(&settings.redis)?;
        let mut c = client.connect().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    match timed(ping).await {
        Some(Ok(_)) => Check::ok(T, "PING", "PONG"),
        Some(Err(e)) => Check::failed(
            T,
            "PING",
            format!(
                "{e} — fix {} (the workers fall back to a local rate limit without it)",
                key(fix)
            ),
        ),
        None => Check::failed(
            T,
            "PING",
            format!(
                "no answer within {}s — fix {}",
                CHECK_TIMEOUT.as_secs(),
                key(fix)
            ),
        ),
    }
}

/// Every configured provider's credentials, with its probe call (never billed).
pub async fn providers(settings: &Settings) -> Vec<Check> {
    let registry = match Registry::from_settings(settings) {
        Ok((r, _)) => r,
        Err(e) => return vec![Check::failed("providers", "configuration", e.to_string())],
    };
    let names = registry.provider_names();
    if names.is_empty() {
        return vec![Check::failed(
            "providers",
            "configuration",
            "no provider has credentials: every check would be answered rejected — set the credentials of one [providers.<name>] section",
        )];
    }
    let probes = names.iter().map(|name| {
        let entry = registry.get(name).expect("configured");
        async move {
            let probe = timed(entry.provider.probe()).await;
            judge(name, probe)
        }
    });
    futures::future::join_all(probes).await
}

/// What a probe's answer says about a provider's credentials (pure).
pub fn judge(provider: &str, probe: Option<Probe>) -> Check {
    let target = format!("provider {provider}");
    let checked = "credentials";
    let endpoint = key(&format!("providers.{provider}.endpoint"));
    let Some(Probe { reply, accepted }) = probe else {
        return Check::failed(
            &target,
            checked,
            format!(
                "no answer within {}s — check {endpoint}",
                CHECK_TIMEOUT.as_secs()
            ),
        );
    };
    let code = reply.provider_code.as_deref().unwrap_or("");
    if code.trim() == accepted {
        return Check::ok(
            &target,
            checked,
            format!("accepted (the unbilled test call was answered {accepted})"),
        );
    }
    if let Some(r) = Refused::of(&reply) {
        return Check::failed(&target, checked, refusal_message(provider, &r));
    }
    let status = reply
        .http_status
        .map_or("no answer".to_owned(), |s| format!("HTTP {s}"));
    let what = match reply.classification.class {
        _ if reply.http_status.is_none() => format!(
            "cannot reach the provider ({}) — check {endpoint}",
            reply.detail
        ),
        OutcomeClass::Transient => format!(
            "the provider is busy or failing ({status} {code}): try again later; the credentials could not be checked"
        ),
        OutcomeClass::ProviderWide => format!(
            "refused every call ({status} {code}: {}) — check {endpoint} and {}",
            reply.detail,
            credential_keys(provider)
        ),
        _ => format!(
            "unexpected answer ({status} {code}: {}) where {accepted} was expected — check {endpoint}",
            reply.detail
        ),
    };
    // The test call is meant never to be charged: say so when the answer says it may have been.
    let what = match reply.classification.billed {
        crate::check::Billed::No => what,
        billed => format!(
            "{what}; this test call may have been charged (billed: {}): look it up in the \
             vendor's console",
            billed.as_str()
        ),
    };
    Check::failed(&target, checked, what)
}

/// The report as a table.
pub fn render_table(checks: &[Check]) -> String {
    let w = |f: fn(&Check) -> usize, head: usize| checks.iter().map(f).max().unwrap_or(0).max(head);
    let wt = w(|c| c.target.chars().count(), 6);
    let wc = w(|c| c.checked.chars().count(), 7);
    let mut out = format!(
        "{:wt$}  {:wc$}  {:6}  {}\n",
        "target", "checked", "result", "detail"
    );
    for c in checks {
        out.push_str(&format!(
            "{:wt$}  {:wc$}  {:6}  {}\n",
            c.target,
            c.checked,
            if c.ok { "OK" } else { "FAILED" },
            c.detail
        ));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    out.push_str(&if failed == 0 {
        "all checks passed\n".to_owned()
    } else {
        format!("{failed} of {} checks failed\n", checks.len())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Classification, ProviderReply, Refusal};

    fn reply(c: Classification, status: Option<u16>, code: Option<&str>) -> ProviderReply {
        let mut r = ProviderReply::transport(c, status, "detail");
        r.provider_code = code.map(str::to_owned);
        r
    }

    fn probe(reply: ProviderReply) -> Option<Probe> {
        Some(Probe {
            reply,
            accepted: "MissingParameter",
        })
    }

    #[test]
    fn a_probe_answer_is_judged_by_the_expected_code_then_the_refusal_kind() {
        let invalid = Classification::invalid_field(crate::check::ReasonCode::InvalidRequest);
        let c = judge(
            "tencent",
            probe(reply(invalid, Some(200), Some("MissingParameter"))),
        );
        assert!(c.ok, "{c:?}");
        assert_eq!(c.target, "provider tencent");

        let c = judge(
            "tencent",
            probe(reply(
                Classification::refused(Refusal::Credentials),
                Some(200),
                Some("AuthFailure.SignatureFailure"),
            )),
        );
        assert!(!c.ok);
        assert!(
            c.detail
                .contains("credentials refused (AuthFailure.SignatureFailure)")
                && c.detail.contains("providers.tencent.secret_id/secret_key"),
            "{}",
            c.detail
        );

        let c = judge(
            "alimarket",
            probe(reply(Classification::TRANSIENT, None, None)),
        );
        assert!(
            !c.ok
                && c.detail.contains("cannot reach")
                && c.detail.contains("providers.alimarket.endpoint"),
            "{}",
            c.detail
        );

        let c = judge(
            "alibaba",
            probe(reply(
                Classification::PROVIDER_WIDE,
                Some(404),
                Some("HTTP404"),
            )),
        );
        assert!(
            !c.ok
                && c.detail.contains("providers.alibaba.endpoint")
                && c.detail.contains("access_key_id"),
            "{}",
            c.detail
        );

        let c = judge("alibaba", None);
        assert!(!c.ok && c.detail.contains("no answer"), "{}", c.detail);

        // An answer that may have been charged is said to be.
        let verdict =
            Classification::verdict(crate::check::ReasonCode::Match, crate::check::Billed::Yes);
        let c = judge("alimarket", probe(reply(verdict, Some(200), Some("1"))));
        assert!(
            !c.ok && c.detail.contains("may have been charged (billed: yes)"),
            "{}",
            c.detail
        );
        let c = judge(
            "alimarket",
            probe(reply(Classification::UNKNOWN, Some(504), None)),
        );
        assert!(c.detail.contains("billed: unknown"), "{}", c.detail);
    }

    #[test]
    fn the_table_says_ok_or_failed_and_counts_failures() {
        let t = render_table(&[
            Check::ok("redis", "PING", "PONG"),
            Check::failed("provider tencent", "credentials", "fix it"),
        ]);
        assert!(
            t.contains("redis             PING         OK      PONG"),
            "{t}"
        );
        assert!(
            t.contains("provider tencent  credentials  FAILED  fix it"),
            "{t}"
        );
        assert!(t.ends_with("1 of 2 checks failed\n"), "{t}");
    }
}
