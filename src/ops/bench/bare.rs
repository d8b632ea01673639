//! `kycq bench --bare-worker` (hidden): the smallest correct pipeline, the yardstick kycq's
//! throughput is compared with. Per delivery, with the same prefetch and concurrency as kycq:
//! an autocommit `INSERT` (the claim), one `EVALSHA` of a small token bucket, one HTTP call to
//! the sandbox's Marketplace endpoint (a real answer, with the configured latency), an
//! autocommit `UPDATE` (the result), the result published with a confirm, then the ack.
//!
//! What it leaves out on purpose is everything kycq adds for correctness: validation, leases,
//! the call journal, retries, failover, dead letters, logs per request, metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::{self, Publisher};
use crate::configuration::Settings;
use crate::ops::enqueue::RequestMessage;
use crate::providers::alimarket;

/// The bare worker's one table.
const TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS bench_bare (
    request_id   text PRIMARY KEY,
    status       text NOT NULL,
    result       jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
)"#;

/// A token bucket on Redis' clock: refill at `ARGV[1]` tokens per microsecond up to `ARGV[2]`;
/// take one token and answer 0, or answer the microseconds until one is there (nothing taken).
const BUCKET_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"#;

/// What every delivery's task shares.
struct Ctx {
    pool: PgPool,
    redis: crate::ratelimit::RedisConn,
    script: redis::Script,
    bucket: String,
    rate_per_us: f64,
    burst: u32,
    http: reqwest::Client,
    url: String,
    publisher: Publisher,
    results: String,
}

/// Consume the work queue of `settings` until SIGTERM/SIGINT, then finish what is in flight.
/// `sandbox` is the sandbox's base URL; `rate` and `burst` shape the token bucket.
pub async fn run(settings: &Settings, sandbox: &str, rate: f64, burst: u32) -> anyhow::Result<()> {
    let stop = crate::cli::shutdown_on_signals();
    let names = settings.topology.names();
    // As kycq's pool: no ping before every statement (it would double the round trips).
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .test_before_acquire(false)
        .connect(settings.database.url.expose_secret())
        .await
        .context("database.url")?;
    sqlx::query(TABLE).execute(&pool).await?;
    let client =
        crate::ratelimit::RedisClient::from_settings(&settings.redis).context("[redis]")?;
    let mut redis = client.connect().await?;
    let script = redis::Script::new(BUCKET_LUA);
    let bucket = format!("{}:bare-bucket", settings.redis.key_prefix);
    redis.load_script(BUCKET_LUA, &[&bucket]).await?;
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq bench bare worker").await?;
    let publisher = Publisher::new(
        &conn,
        names.clone(),
        Duration::from_secs(settings.amqp.confirm_timeout_secs),
    )
    .await?;
    let ctx = Arc::new(Ctx {
        pool,
        redis,
        script,
        bucket,
        rate_per_us: rate / 1e6,
        burst,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        url: format!("{}{}", sandbox.trim_end_matches('/'), alimarket::PATH),
        publisher,
        results: names.results.clone(),
    });
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            names.work_queue.as_str().into(),
            "kycq-bench-bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let semaphore = Arc::new(Semaphore::new(settings.worker.concurrency));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = semaphore.clone().acquire_owned() => p.expect("never closed"),
        };
        let delivery = tokio::select! {
            () = stop.cancelled() => break,
            d = consumer.next() => match d {
                Some(d) => d?,
                None => break,
            },
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let settled = match handle(&ctx, &delivery.data).await {
                Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    tracing::warn!(error = %e, "bare worker: processing failed; requeued");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    delivery.nack(requeue).await
                }
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "bare worker: could not settle a delivery");
            }
        });
    }
    let _ = channel
        .basic_cancel("kycq-bench-bare".into(), BasicCancelOptions::default())
        .await;
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(20), drained)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let _ = channel.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    ctx.pool.close().await;
    Ok(())
}

/// One delivery, up to the confirmed publish of its result.
async fn handle(ctx: &Ctx, body: &[u8]) -> anyhow::Result<()> {
    let m: RequestMessage = serde_json::from_slice(body).context("request body")?;
    sqlx::query(
        "INSERT INTO bench_bare (request_id, status) VALUES ($1, 'pending') \
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&m.request_id)
    .execute(&ctx.pool)
    .await?;
    loop {
        let mut redis = ctx.redis.clone();
        let wait_us: u64 = ctx
            .script
            .key(&ctx.bucket)
            .arg(ctx.rate_per_us)
            .arg(ctx.burst)
            .invoke_async(&mut redis)
            .await?;
        if wait_us == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_micros(wait_us)).await;
    }
    let call = alimarket::wire::Mobile3CheckRequest {
        name: &m.name,
        mobile: m.mobile.as_deref().unwrap_or_default(),
        id_card: &m.id_number,
    };
    let answer = ctx
        .http
        .post(&ctx.url)
        .header(
            "authorization",
            format!("APPCODE {}", alimarket::SANDBOX_APP_CODE),
        )
        .json(&call)
        .send()
        .await?;
    let status = answer.status();
    let reply = alimarket::wire::parse_reply(&answer.bytes().await?)?;
    anyhow::ensure!(status.is_success(), "the sandbox answered HTTP {status}");
    let result = serde_json::json!({
        "request_id": m.request_id,
        "check": "mobile3",
        "status": "completed",
        "provider": alimarket::PROVIDER,
        "provider_code": reply.result,
        "billed": reply.is_fee,
    });
    let result = serde_json::to_vec(&result)?;
    sqlx::query(
        "UPDATE bench_bare SET status = 'completed', result = $2::text::jsonb, \
         completed_at = now() WHERE request_id = $1",
    )
    .bind(&m.request_id)
    .bind(std::str::from_utf8(&result)?)
    .execute(&ctx.pool)
    .await?;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(m.request_id.as_str().into());
    ctx.publisher
        .publish_confirmed(&ctx.results, "result.mobile3.completed", &result, props)
        .await?;
    Ok(())
}
