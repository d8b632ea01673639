//! The settings tree: `config/default.toml`, then `config/<KYCQ_ENV>.toml`, then `KYCQ__SECTION__KEY`
//! environment variables; validated at start so a bad value names its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::check::CheckKind;

/// A configuration problem; the message always names the key (and its environment form).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or value could not be read or has the wrong type.
    #[error("configuration: {0}")]
    Load(String),
    /// A value is present but not acceptable.
    #[error("configuration key `{key}` ({env}): {reason}")]
    Invalid {
        /// Dotted key, e.g. `amqp.prefetch`.
        key: String,
        /// Environment form, e.g. `KYCQ__AMQP__PREFETCH`.
        env: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A [`ConfigError::Invalid`] for `key`, with its environment form.
pub fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        env: env_name(key),
        reason: reason.into(),
    }
}

/// A configuration library message with every quoted value hidden (`string "…"`): the key it
/// names may hold a secret (`KYCQ__PII=<the key>` is a section given a value).
fn hide_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        let start = i + "string \"".len();
        out.push_str(&rest[..i]);
        out.push_str("a text value (not shown)");
        // The value ends at the quote before ", expected" (it may hold quotes itself).
        let tail = &rest[start..];
        match tail.find("\", expected").or_else(|| tail.find('"')) {
            Some(end) => rest = &tail[end + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// `amqp.prefetch` → `KYCQ__AMQP__PREFETCH`.
pub fn env_name(key: &str) -> String {
    format!("KYCQ__{}", key.replace('.', "__").to_uppercase())
}

/// Every setting. Field docs are the reference; `config/default.toml` documents the same keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// RabbitMQ.
    pub amqp: AmqpSettings,
    /// Object names.
    pub topology: TopologySettings,
    /// Postgres.
    pub database: DatabaseSettings,
    /// Redis (the shared rate limiter).
    pub redis: RedisSettings,
    /// Health and metrics endpoint.
    pub http: HttpSettings,
    /// Logs.
    pub log: LogSettings,
    /// Personal-data handling.
    pub pii: PiiSettings,
    /// The consumer.
    pub worker: WorkerSettings,
    /// Retries of transient failures.
    pub retry: RetrySettings,
    /// Provider route per check.
    pub routes: RouteSettings,
    /// Provider endpoints, credentials and limits.
    pub providers: ProvidersSettings,
    /// `kycq sandbox`.
    pub sandbox: SandboxCliSettings,
    /// Billing figures (`kycq report billing`): the billing day and unit prices.
    #[serde(default)]
    pub billing: BillingSettings,
    /// `[console]`: the operators' web console (`kycq console`).
    #[serde(default)]
    pub console: ConsoleSettings,
    /// `[telemetry]`: OpenTelemetry export of the worker's spans.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
}

/// `[amqp]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Broker URL of one node (may hold a password: never logged). Not used when `urls` is
    /// non-empty.
    pub url: SecretString,
    /// The nodes of a RabbitMQ cluster (`KYCQ__AMQP__URLS`: comma-separated). Non-empty: every
    /// connection goes to the first node that answers, in a rotating order, and a lost
    /// connection is made again to another node.
    #[serde(default, deserialize_with = "secret_list")]
    pub urls: Vec<SecretString>,
    /// Unacknowledged deliveries per worker.
    pub prefetch: u16,
    /// `x-delivery-limit` of the work queue.
    pub delivery_limit: u32,
    /// Seconds to wait for a publisher confirm.
    pub confirm_timeout_secs: u64,
}

impl AmqpSettings {
    /// The node URLs to connect to: `urls`, or `url` alone when `urls` is empty.
    pub fn nodes(&self) -> Vec<SecretString> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
        url_with_scheme("amqp.url", self.url.expose_secret(), &["amqp", "amqps"])?;
        let mut vhost = None;
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in self.urls.iter().enumerate() {
            let entry = |reason: String| invalid("amqp.urls", format!("entry {}: {reason}", i + 1));
            let parsed = url_with_scheme("amqp.urls", u.expose_secret(), &["amqp", "amqps"])
                .map_err(|e| match e {
                    ConfigError::Invalid { reason, .. } => entry(reason),
                    e => e,
                })?;
            let port = parsed.port().unwrap_or(if parsed.scheme() == "amqps" {
                5671
            } else {
                5672
            });
            if !seen.insert((parsed.host_str().unwrap_or("").to_owned(), port)) {
                return Err(entry(
                    "names the same host and port as an earlier entry".into(),
                ));
            }
            // One cluster, one virtual host: entries that differ are a mistake.
            let this = parsed.path().to_owned();
            match &vhost {
                None => vhost = Some(this),
                Some(v) if *v != this => {
                    return Err(entry(
                        "names another virtual host than entry 1 (the nodes of one cluster \
                         serve the same virtual host)"
                            .into(),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// `[topology]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    /// Prepended to every exchange and queue name.
    pub prefix: String,
    /// Clients publish here.
    pub request_exchange: String,
    /// Quorum work queue.
    pub work_queue: String,
    /// Every result.
    pub result_exchange: String,
    /// Fanout dead-letter exchange.
    pub dead_letter_exchange: String,
    /// Holds every request that could not be finished.
    pub dead_letter_queue: String,
    /// Requests that must wait (every provider of the route out, another worker's lease) park
    /// here — a durable queue, and a fanout exchange of the same name — and return to the
    /// request exchange, routing key kept, when their message TTL runs out.
    #[serde(default = "default_wait_queue")]
    pub wait_queue: String,
}

fn default_wait_queue() -> String {
    "kyc.checks.wait".into()
}

/// The effective object names (prefix applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Request exchange.
    pub requests: String,
    /// Work queue.
    pub work_queue: String,
    /// Result exchange.
    pub results: String,
    /// Dead-letter exchange.
    pub dead_exchange: String,
    /// Dead-letter queue.
    pub dead_queue: String,
    /// Wait queue, and the fanout exchange of the same name that feeds it.
    pub wait_queue: String,
}

impl Default for TopologySettings {
    /// The names of `config/default.toml` (a test keeps the two the same): what clients use
    /// when they are not told otherwise.
    fn default() -> Self {
        TopologySettings {
            prefix: String::new(),
            request_exchange: "kyc.requests".into(),
            work_queue: "kyc.checks".into(),
            result_exchange: "kyc.results".into(),
            dead_letter_exchange: "kyc.dead".into(),
            dead_letter_queue: "kyc.checks.dead".into(),
            wait_queue: "kyc.checks.wait".into(),
        }
    }
}

impl TopologySettings {
    /// Names with the prefix applied.
    pub fn names(&self) -> Names {
        let p = |n: &str| format!("{}{}", self.prefix, n);
        Names {
            requests: p(&self.request_exchange),
            work_queue: p(&self.work_queue),
            results: p(&self.result_exchange),
            dead_exchange: p(&self.dead_letter_exchange),
            dead_queue: p(&self.dead_letter_queue),
            wait_queue: p(&self.wait_queue),
        }
    }
}

/// `[database]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Postgres URL (may hold a password: never logged).
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// Create the database when it does not exist.
    pub create_if_missing: bool,
    /// Group commit: writer tasks, each writing one batch at a time on its own connection.
    #[serde(default = "default_batch_writers")]
    pub batch_writers: usize,
    /// Group commit: most writes (claims, journal rows, results) in one transaction.
    #[serde(default = "default_batch_max_ops")]
    pub batch_max_ops: usize,
    /// Group commit: microseconds a writer waits for more writes while there is load (the
    /// previous batch held more than one); 0 takes only what is ready.
    #[serde(default = "default_batch_linger_us")]
    pub batch_linger_us: u64,
}

fn default_batch_writers() -> usize {
    2
}

fn default_batch_max_ops() -> usize {
    256
}

fn default_batch_linger_us() -> u64 {
    500
}

impl DatabaseSettings {
    /// How the worker groups its writes.
    pub fn group_commit(&self) -> crate::store::GroupCommit {
        crate::store::GroupCommit {
            writers: self.batch_writers,
            max_ops: self.batch_max_ops,
            linger: Duration::from_micros(self.batch_linger_us),
        }
    }
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Redis URL of one node. With `sentinel_urls`, only its username, password and database
    /// are used (for the primary the sentinels name); with `cluster_urls` it is not used.
    pub url: SecretString,
    /// Seed nodes of a Redis Cluster (any reachable one gives the slot map). Non-empty: the
    /// limiter and the tools talk to the cluster instead of `url`.
    #[serde(default, deserialize_with = "secret_list")]
    pub cluster_urls: Vec<SecretString>,
    /// Sentinels watching the primary named `sentinel_master`. Non-empty: the primary is asked
    /// of them on every (re)connection instead of using `url`'s host.
    #[serde(default, deserialize_with = "secret_list")]
    pub sentinel_urls: Vec<SecretString>,
    /// The primary's name in the sentinels' configuration (`sentinel monitor <name> …`).
    #[serde(default)]
    pub sentinel_master: Option<String>,
    /// Prefix of every key kycq writes (several deployments can share one Redis).
    pub key_prefix: String,
    /// Milliseconds to connect and to answer before Redis counts as unreachable (the limiter
    /// then falls back to each worker's share).
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Milliseconds between attempts to reach Redis again while falling back.
    #[serde(default = "default_redis_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

impl RedisSettings {
    /// Which Redis deployment the settings name: one node, a cluster or a Sentinel-managed
    /// primary. A combination that names two is an error that names the key.
    pub fn topology(&self) -> Result<RedisTopology, ConfigError> {
        let (cluster, sentinel) = (
            !self.cluster_urls.is_empty(),
            !self.sentinel_urls.is_empty(),
        );
        if cluster && sentinel {
            return Err(invalid(
                "redis.sentinel_urls",
                "set either redis.cluster_urls (a Redis Cluster) or redis.sentinel_urls (a Sentinel-managed primary), not both",
            ));
        }
        match (sentinel, self.sentinel_master.as_deref().map(str::trim)) {
            (true, None | Some("")) => Err(invalid(
                "redis.sentinel_master",
                "required with redis.sentinel_urls: the primary's name in `sentinel monitor <name> …`",
            )),
            (false, Some(_)) => Err(invalid(
                "redis.sentinel_master",
                "only meaningful with redis.sentinel_urls (which is empty)",
            )),
            (true, Some(_)) => Ok(RedisTopology::Sentinel),
            (false, None) if cluster => Ok(RedisTopology::Cluster),
            (false, None) => Ok(RedisTopology::Single),
        }
    }

    fn validate_topology(&self) -> Result<(), ConfigError> {
        self.topology()?;
        for (key, urls) in [
            ("redis.cluster_urls", &self.cluster_urls),
            ("redis.sentinel_urls", &self.sentinel_urls),
        ] {
            for (i, u) in urls.iter().enumerate() {
                url_with_scheme(key, u.expose_secret(), &["redis", "rediss"]).map_err(
                    |e| match e {
                        ConfigError::Invalid { key, env, reason } => ConfigError::Invalid {
                            key,
                            env,
                            reason: format!("entry {}: {reason}", i + 1),
                        },
                        e => e,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// The Redis deployment `[redis]` names (see [`RedisSettings::topology`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis.url`: one node.
    Single,
    /// `redis.cluster_urls`: a Redis Cluster.
    Cluster,
    /// `redis.sentinel_urls` and `redis.sentinel_master`: a primary managed by Sentinel.
    Sentinel,
}

fn default_redis_timeout_ms() -> u64 {
    250
}
fn default_redis_probe_interval_ms() -> u64 {
    1_000
}

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `/healthz`, `/readyz`, `/metrics`; empty disables the endpoint.
    pub listen: String,
}

/// Log format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive (`RUST_LOG` wins when set).
    pub level: String,
}

/// `[telemetry]`: OpenTelemetry export of `kycq worker`'s spans (OTLP over HTTP). The trace
/// context of requests (`traceparent`, `tracestate`) is propagated to results and dead letters
/// whether or not spans are exported.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`; spans go to `/v1/traces`
    /// under it, unless it already ends so). Empty: nothing is exported.
    pub otlp_endpoint: String,
    /// `http/protobuf` or `http/json`.
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: String::new(),
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            service_name: "kycq".into(),
        }
    }
}

/// The OTLP/HTTP encoding (OpenTelemetry's `OTEL_EXPORTER_OTLP_PROTOCOL` values).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Binary protobuf, OTLP/HTTP's default.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// JSON.
    #[serde(rename = "http/json")]
    HttpJson,
}

impl TelemetrySettings {
    /// The traces URL (`<otlp_endpoint>/v1/traces`), None when export is off; Err names the key.
    pub fn traces_url(&self) -> Result<Option<url::Url>, ConfigError> {
        const KEY: &str = "telemetry.otlp_endpoint";
        let endpoint = self.otlp_endpoint.trim();
        if endpoint.is_empty() {
            return Ok(None);
        }
        let mut u = url_with_scheme(KEY, endpoint, &["http", "https"])?;
        if u.host_str().is_none_or(str::is_empty) {
            return Err(invalid(KEY, "must name a host, e.g. http://127.0.0.1:4318"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(invalid(
                KEY,
                "must not carry credentials: give a collector's token in \
                 OTEL_EXPORTER_OTLP_HEADERS (e.g. authorization=Bearer%20<token>)",
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(invalid(KEY, "must be a base URL without query or fragment"));
        }
        if !u.path().ends_with("/v1/traces") {
            let path = format!("{}/v1/traces", u.path().trim_end_matches('/'));
            u.set_path(&path);
        }
        Ok(Some(u))
    }

    /// Validate: the endpoint (when set) and the service name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.traces_url()?;
        if self.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        Ok(())
    }
}

/// `[pii]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiSettings {
    /// HMAC-SHA256 key of subject fingerprints. Required by `worker`.
    pub key: Option<SecretString>,
}

/// `[worker]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Deliveries processed at once.
    pub concurrency: usize,
    /// Seconds a claim is held without renewal; renewed every third of it while working.
    pub lease_secs: u64,
    /// Seconds in-flight work may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Identifies this worker in leases and the call journal; empty = host name and process id.
    pub id: String,
    /// Largest message body read, in bytes: a larger one is dead-lettered `too_large` unread.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest a request waits for a provider of its route (every one out: open circuits),
    /// in seconds, counted from its first wait; past it, `failed` / `provider_unavailable` and
    /// dead-lettered (retryable with `kycq dlq retry`).
    #[serde(default = "default_max_wait_secs")]
    pub max_wait_secs: u64,
    /// Longest one stay in the wait queue, in seconds: a waiting request comes back at the
    /// latest after this long to look again (sooner when the circuit reopens sooner).
    #[serde(default = "default_park_max_secs")]
    pub park_max_secs: u64,
    /// Seconds between two heartbeats of the worker's row in the `workers` table (1..=300); a
    /// worker is shown alive while its last heartbeat is less than three of them old.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
}

impl WorkerSettings {
    /// When a waiting request stays in its slot, parks in the wait queue, or gives up.
    pub fn wait_policy(&self) -> crate::worker::plan::WaitPolicy {
        crate::worker::plan::WaitPolicy {
            in_slot_max: Duration::from_secs(1),
            park_max: Duration::from_secs(self.park_max_secs),
            max_wait: Duration::from_secs(self.max_wait_secs),
        }
    }
}

fn default_max_wait_secs() -> u64 {
    600
}

fn default_park_max_secs() -> u64 {
    30
}

fn default_heartbeat_secs() -> u64 {
    5
}

fn default_max_body_bytes() -> usize {
    65_536
}

/// `[retry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Calls to one provider for one request (first call included).
    pub max_attempts: u32,
    /// First backoff delay, milliseconds.
    pub initial_delay_ms: u64,
    /// Largest backoff delay, milliseconds.
    pub max_delay_ms: u64,
    /// Growth factor per attempt.
    pub multiplier: f32,
    /// Randomise each delay (full jitter on top of the base).
    pub jitter: bool,
    /// Total seconds one request may spend retrying across providers.
    pub max_elapsed_secs: u64,
}

/// `[routes]`: the providers tried, in order, for each check.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Route of `mobile3`.
    #[serde(deserialize_with = "list")]
    pub mobile3: Vec<String>,
    /// Route of `id2`.
    #[serde(deserialize_with = "list")]
    pub id2: Vec<String>,
    /// Route of `id2_period`.
    #[serde(deserialize_with = "list")]
    pub id2_period: Vec<String>,
}

/// As [`list`], for values that may hold passwords (URLs).
fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(list(d)?.into_iter().map(SecretString::from).collect())
}

/// A list given as a list (files) or as one comma-separated string (the environment).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        // An empty value is an empty list (a check switched off).
        Either::Text(t) if t.trim().is_empty() => Vec::new(),
        Either::Text(t) => t.split(',').map(|p| p.trim().to_owned()).collect(),
    })
}

impl RouteSettings {
    /// The configured route for a check, to change it (the demo).
    pub fn for_check_mut(&mut self, check: CheckKind) -> &mut Vec<String> {
        match check {
            CheckKind::Mobile3 => &mut self.mobile3,
            CheckKind::Id2 => &mut self.id2,
            CheckKind::Id2Period => &mut self.id2_period,
        }
    }

    /// The configured route for a check.
    pub fn for_check(&self, check: CheckKind) -> &[String] {
        match check {
            CheckKind::Mobile3 => &self.mobile3,
            CheckKind::Id2 => &self.id2,
            CheckKind::Id2Period => &self.id2_period,
        }
    }
}

/// `[providers]`: one section per vendor, by the vendor's name. Which names exist, and what
/// each vendor's own keys mean, is the vendor registry's business (`providers::registry`):
/// configuration knows only the keys every provider shares.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct ProvidersSettings(pub BTreeMap<String, ProviderSettings>);

impl ProvidersSettings {
    /// Every provider section with its name.
    pub fn all(&self) -> impl Iterator<Item = (&str, &ProviderSettings)> {
        self.0.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// One provider's section by name.
    pub fn get(&self, name: &str) -> Option<&ProviderSettings> {
        self.0.get(name)
    }

    /// One provider's section by name, to change it (tests, the demo).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ProviderSettings> {
        self.0.get_mut(name)
    }
}

/// `[providers.<name>]`: endpoint, timeouts and limits every provider has, and the vendor's own
/// keys (credentials, options), which its folder's `settings.rs` reads and checks.
#[derive(Clone, Debug, Deserialize)]
pub struct ProviderSettings {
    /// Base URL (`http://` allowed for the sandbox and staging).
    pub endpoint: String,
    /// Milliseconds to establish a connection (a refused or timed-out connect was never sent).
    pub connect_timeout_ms: u64,
    /// Milliseconds for a whole call; past it the answer is lost and billing is unknown.
    pub timeout_ms: u64,
    /// Calls per second, all workers together (the shared bucket).
    pub rate_per_sec: f64,
    /// Calls that may go at once above the rate.
    pub burst: u32,
    /// Longest a call may wait for a slot in the bucket; past it no slot is reserved and the
    /// request waits (unreserved) before trying again.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Share of the rate this worker uses on its own when Redis is unreachable (1 / number of
    /// workers keeps the total within the vendor's limit).
    #[serde(default = "default_fallback_share")]
    pub fallback_share: f64,
    /// Milliseconds the shared bucket pauses for every worker after the vendor says "throttled".
    #[serde(default = "default_throttle_cooldown_ms")]
    pub throttle_cooldown_ms: u64,
    /// Milliseconds of delay variation between a reserved slot and the vendor receiving the call
    /// (journal write, scheduling, network) that the bucket absorbs: calls are spaced at
    /// `rate_per_sec / (1 + margin in seconds)`, so a 1-second window at the vendor still holds
    /// at most `rate_per_sec + burst` calls.
    #[serde(default = "default_jitter_margin_ms")]
    pub jitter_margin_ms: u64,
    /// Lowest share of `rate_per_sec` the shared bucket is lowered to after repeated "throttled"
    /// answers (each cool-down lowers it by a quarter; 1.0 disables lowering).
    #[serde(default = "default_throttle_min_share")]
    pub throttle_min_share: f64,
    /// Seconds a lowered rate takes to climb back from `throttle_min_share` to the full rate.
    #[serde(default = "default_throttle_recovery_secs")]
    pub throttle_recovery_secs: u64,
    /// Seconds a provider-wide failure keeps the provider out of routes.
    pub circuit_cooldown_secs: u64,
    /// Per-API limits where the vendor limits per API (key: the vendor action name).
    #[serde(default)]
    pub actions: BTreeMap<String, ActionLimit>,
    /// A PEM file of CA certificates trusted for this provider besides the Mozilla roots (a
    /// private CA, a TLS-inspecting egress proxy, the sandbox over TLS).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Every other key of the section: the vendor's own (credentials, options). Read with
    /// [`ProviderSettings::vendor_keys`]; values never show in `Debug`.
    #[serde(flatten)]
    pub vendor: VendorKeys,
}

/// A vendor's own keys of a `[providers.<name>]` section, unread. `Debug` shows the key names
/// only: values can be credentials.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct VendorKeys(pub BTreeMap<String, config::Value>);

impl fmt::Debug for VendorKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[REDACTED]")))
            .finish()
    }
}

impl VendorKeys {
    /// Set one key (the demo and tests point a section at the sandbox).
    pub fn set(&mut self, key: &str, value: &str) {
        self.0.insert(key.to_owned(), config::Value::from(value));
    }
}

impl ProviderSettings {
    /// The vendor's own keys of section `[<section>]` as the vendor's typed settings `T`
    /// (which should deny unknown fields: a typo in any key of the section ends up here). The
    /// error names the section.
    pub fn vendor_keys<T: serde::de::DeserializeOwned>(
        &self,
        section: &str,
    ) -> Result<T, ConfigError> {
        let table: config::Map<String, config::Value> = self
            .vendor
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config::Value::new(None, config::ValueKind::Table(table))
            .try_deserialize()
            .map_err(|e| invalid(section, e.to_string()))
    }
}

/// `[providers.<name>.actions.<Action>]`: a bucket of its own for one vendor API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionLimit {
    /// Calls per second for this API.
    pub rate_per_sec: f64,
    /// Burst for this API (default: the provider's).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Longest wait for a slot of this API (default: the provider's `max_wait_ms`).
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// Share of this API's rate one worker uses alone without Redis (default: the provider's).
    #[serde(default)]
    pub fallback_share: Option<f64>,
}

fn default_max_wait_ms() -> u64 {
    5_000
}
fn default_fallback_share() -> f64 {
    1.0
}
fn default_throttle_cooldown_ms() -> u64 {
    1_000
}
fn default_jitter_margin_ms() -> u64 {
    20
}
fn default_throttle_min_share() -> f64 {
    0.5
}
fn default_throttle_recovery_secs() -> u64 {
    60
}
/// `[sandbox]`: how `kycq sandbox` runs. The credentials it accepts are each provider's, from
/// `[providers.<name>]` (`sandbox::credentials_from`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxCliSettings {
    /// Listen address.
    pub listen: String,
    /// Share of calls answered with an injected transient fault.
    pub fault_rate: f64,
    /// Milliseconds added to every answer.
    pub latency_ms: u64,
    /// Up to this many milliseconds more, drawn uniformly for each answer.
    #[serde(default)]
    pub latency_jitter_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM), with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// The private key of `tls_cert_file` (PEM).
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// With TLS: milliseconds each new connection waits before its handshake is answered.
    #[serde(default)]
    pub handshake_delay_ms: u64,
    /// Milliseconds the "slow" test identity takes.
    pub slow_ms: u64,
    /// Seed of the fault injector.
    pub seed: u64,
    /// Opens the operator endpoints (`/_sandbox/…`) beyond loopback to `Authorization: Bearer
    /// <token>`; unset: loopback only.
    #[serde(default)]
    pub operator_token: Option<SecretString>,
}

/// `[billing]`: what `kycq report billing` needs to turn the call journal into figures a
/// vendor's bill can be checked against.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// The fixed UTC offset that defines a billing day, `+HH:MM` or `-HH:MM` (default `+08:00`:
    /// the vendors bill by China Standard Time days).
    #[serde(default = "default_billing_utc_offset")]
    pub utc_offset: String,
    /// Unit prices in CNY per billed call, `[billing.prices.<provider>]` with `<Action> =
    /// "0.25"`: decimal text with at most 4 decimals, read exactly
    /// ([`crate::ops::billing::Prices::from_settings`]).
    #[serde(default)]
    pub prices: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            utc_offset: default_billing_utc_offset(),
            prices: BTreeMap::new(),
        }
    }
}

fn default_billing_utc_offset() -> String {
    "+08:00".into()
}

/// `[console]`: the operators' web console. Authentication is always required: configure an
/// operator token, operator accounts, or neither on a loopback address (then `kycq console`
/// prints a token generated at start (valid until it stops)). A non-loopback `listen` without either is refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Listen address; default loopback only.
    pub listen: String,
    /// A shared operator token; whoever signs in with it types a name for the audit log.
    pub operator_token: Option<SecretString>,
    /// Operator accounts: user name → argon2 PHC hash (`kycq console hash-password`).
    pub users: BTreeMap<String, SecretString>,
    /// Key that signs session cookies (at least 32 bytes); unset: a random key per start (every
    /// session ends when the console restarts; set it when several consoles serve one site).
    pub session_key: Option<SecretString>,
    /// How long a session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Mark cookies `Secure` and send `Strict-Transport-Security` (set when the console is
    /// served over HTTPS, e.g. behind a proxy).
    pub secure_cookies: bool,
    /// The origin operators' browsers open (`https://kyc-console.example`), when it is not the
    /// address the console listens on (behind a proxy): forms are accepted from it only.
    pub public_origin: Option<String>,
    /// Longest a console query may run, in milliseconds (`statement_timeout`): the console never
    /// holds the database the workers need.
    pub query_timeout_ms: u64,
    /// Longest a billing report (the billing page, its CSV, the month's figures) may run, in
    /// milliseconds: a read-only index scan over the range asked (a month of a busy journal
    /// takes seconds), never holding a lock a worker waits for.
    pub report_timeout_ms: u64,
    /// Postgres connections the console may hold.
    pub max_connections: u32,
    /// Most dead letters a page reads from the queue.
    pub dead_letter_page: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: "127.0.0.1:9470".into(),
            operator_token: None,
            users: BTreeMap::new(),
            session_key: None,
            session_ttl_secs: 8 * 3600,
            secure_cookies: false,
            public_origin: None,
            query_timeout_ms: 5_000,
            report_timeout_ms: 60_000,
            max_connections: 4,
            dead_letter_page: 500,
        }
    }
}

impl ConsoleSettings {
    /// Whether sign-in is configured (a token or at least one account).
    pub fn has_auth(&self) -> bool {
        self.operator_token.is_some() || !self.users.is_empty()
    }

    /// Validate; `listen` parsed. A non-loopback address requires configured sign-in.
    pub fn validate(&self) -> Result<SocketAddr, ConfigError> {
        let addr: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                "console.listen",
                "must be an address and port, e.g. 127.0.0.1:9470",
            )
        })?;
        if !addr.ip().is_loopback() && !self.has_auth() {
            return Err(invalid(
                "console.listen",
                format!(
                    "{addr} is not a loopback address: set console.operator_token ({}) or \
                     console.users.<name> ({}) first",
                    env_name("console.operator_token"),
                    env_name("console.users.<name>")
                ),
            ));
        }
        if let Some(t) = &self.operator_token {
            if t.expose_secret().chars().count() < 16 {
                return Err(invalid(
                    "console.operator_token",
                    "must be at least 16 characters",
                ));
            }
        }
        for (name, hash) in &self.users {
            let key = format!("console.users.{name}");
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                return Err(invalid(&key, "a user name is 1 to 64 printable characters"));
            }
            if argon2::PasswordHash::new(hash.expose_secret()).is_err() {
                return Err(invalid(
                    &key,
                    "must be an argon2 PHC hash ($argon2id$...): make one with `kycq console hash-password`",
                ));
            }
        }
        if let Some(k) = &self.session_key {
            if k.expose_secret().len() < 32 {
                return Err(invalid("console.session_key", "must be at least 32 bytes"));
            }
        }
        if let Some(o) = &self.public_origin {
            let u = url::Url::parse(o).map_err(|_| {
                invalid(
                    "console.public_origin",
                    "must be an origin, e.g. https://kyc-console.example",
                )
            })?;
            let bare = u.path() == "/" && u.query().is_none() && u.fragment().is_none();
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || !bare {
                return Err(invalid(
                    "console.public_origin",
                    "must be a scheme and host (and port) only, e.g. https://kyc-console.example",
                ));
            }
        }
        if self.session_ttl_secs < 60 {
            return Err(invalid("console.session_ttl_secs", "must be at least 60"));
        }
        if self.query_timeout_ms == 0 {
            return Err(invalid("console.query_timeout_ms", "must be at least 1"));
        }
        if self.report_timeout_ms == 0 {
            return Err(invalid("console.report_timeout_ms", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(invalid("console.max_connections", "must be at least 1"));
        }
        if self.dead_letter_page == 0 {
            return Err(invalid("console.dead_letter_page", "must be at least 1"));
        }
        Ok(addr)
    }
}

impl Settings {
    /// Load from `<dir>/default.toml`, `<dir>/<KYCQ_ENV>.toml` (if present) and the process
    /// environment.
    pub fn load(dir: &Path) -> Result<Settings, ConfigError> {
        Self::load_with(dir, std::env::var("KYCQ_ENV").ok().as_deref(), None)
    }

    /// Load with an explicit environment map instead of the process environment (tests) and an
    /// optional environment name.
    pub fn load_with(
        dir: &Path,
        env_name: Option<&str>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let default = dir.join("default.toml");
        let mut b = config::Config::builder();
        if default.exists() {
            b = b.add_source(config::File::from(default));
        } else {
            b = b.add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ));
        }
        if let Some(name) = env_name.filter(|n| !n.is_empty()) {
            let path = dir.join(format!("{name}.toml"));
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "KYCQ_ENV={name} but {} does not exist",
                    path.display()
                )));
            }
            b = b.add_source(config::File::from(path));
        }
        // Values stay text (a secret such as `0123456` or `1e5` is never read as a number);
        // typed fields convert when they are read, and lists are comma-separated text.
        let mut e = config::Environment::with_prefix("KYCQ")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false);
        if let Some(map) = env {
            e = e.source(Some(map.into_iter().collect()));
        }
        let cfg = b
            .add_source(e)
            .build()
            .map_err(|e| ConfigError::Load(hide_values(&e.to_string())))?;
        let s: Settings = cfg
            .try_deserialize()
            .map_err(|e| ConfigError::Load(hide_values(&e.to_string())))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks that types alone cannot express. Every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.amqp.validate_nodes()?;
        url_with_scheme(
            "database.url",
            self.database.url.expose_secret(),
            &["postgres", "postgresql"],
        )?;
        url_with_scheme(
            "redis.url",
            self.redis.url.expose_secret(),
            &["redis", "rediss"],
        )?;
        self.redis.validate_topology()?;
        self.telemetry.validate()?;
        if self.redis.timeout_ms == 0 {
            return Err(invalid("redis.timeout_ms", "must be at least 1"));
        }
        if self.redis.probe_interval_ms == 0 {
            return Err(invalid("redis.probe_interval_ms", "must be at least 1"));
        }
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be at least 1"));
        }
        if self.amqp.delivery_limit == 0 {
            return Err(invalid("amqp.delivery_limit", "must be at least 1"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.batch_writers == 0 {
            return Err(invalid("database.batch_writers", "must be at least 1"));
        }
        if self.database.batch_writers as u64 >= u64::from(self.database.max_connections) {
            return Err(invalid(
                "database.batch_writers",
                "must be below database.max_connections (the writers hold a connection each; \
                 reads and lease renewals need one too)",
            ));
        }
        if self.database.batch_max_ops == 0 {
            return Err(invalid("database.batch_max_ops", "must be at least 1"));
        }
        if self.database.batch_linger_us > 100_000 {
            return Err(invalid(
                "database.batch_linger_us",
                "must be at most 100000 (0.1 s): a longer wait only delays every request",
            ));
        }
        if !self.http.listen.is_empty() {
            self.http
                .listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("http.listen", format!("not a socket address: {e}")))?;
        }
        for (key, v) in [
            ("topology.request_exchange", &self.topology.request_exchange),
            ("topology.work_queue", &self.topology.work_queue),
            ("topology.result_exchange", &self.topology.result_exchange),
            (
                "topology.dead_letter_exchange",
                &self.topology.dead_letter_exchange,
            ),
            (
                "topology.dead_letter_queue",
                &self.topology.dead_letter_queue,
            ),
        ] {
            if v.is_empty() || v.len() + self.topology.prefix.len() > 255 {
                return Err(invalid(key, "must be 1-255 characters with the prefix"));
            }
            if v.starts_with("amq.") && self.topology.prefix.is_empty() {
                return Err(invalid(
                    key,
                    "names starting with amq. are reserved by RabbitMQ",
                ));
            }
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be at least 1"));
        }
        if self.worker.lease_secs < 3 {
            return Err(invalid("worker.lease_secs", "must be at least 3"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.multiplier.is_nan() || self.retry.multiplier < 1.0 {
            return Err(invalid("retry.multiplier", "must be at least 1.0"));
        }
        if self.retry.max_delay_ms < self.retry.initial_delay_ms {
            return Err(invalid(
                "retry.max_delay_ms",
                "must be at least retry.initial_delay_ms",
            ));
        }
        if self.worker.park_max_secs == 0 {
            return Err(invalid("worker.park_max_secs", "must be at least 1"));
        }
        if self.worker.max_wait_secs == 0 {
            return Err(invalid("worker.max_wait_secs", "must be at least 1"));
        }
        if !(1..=300).contains(&self.worker.heartbeat_secs) {
            return Err(invalid(
                "worker.heartbeat_secs",
                "must be between 1 and 300 (seconds)",
            ));
        }
        if self.worker.max_body_bytes < 1024 {
            return Err(invalid("worker.max_body_bytes", "must be at least 1024"));
        }
        for check in CheckKind::ALL {
            let key = format!("routes.{}", check.as_str());
            if self
                .routes
                .for_check(check)
                .iter()
                .any(|p| p.trim().is_empty())
            {
                return Err(invalid(&key, "holds an empty provider name"));
            }
        }
        for (name, p) in self.providers.all() {
            provider_common(&format!("providers.{name}"), p)?;
        }
        if !(0.0..=1.0).contains(&self.sandbox.fault_rate) {
            return Err(invalid("sandbox.fault_rate", "must be between 0 and 1"));
        }
        self.sandbox
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("sandbox.listen", format!("not a socket address: {e}")))?;
        crate::ops::billing::configured(&self.billing)?;
        Ok(())
    }

    /// The PII key, required by anything that writes subject fingerprints.
    pub fn pii_key(&self) -> Result<&SecretString, ConfigError> {
        match &self.pii.key {
            Some(k) if k.expose_secret().len() >= 16 => Ok(k),
            Some(_) => Err(invalid("pii.key", "must be at least 16 characters")),
            None => Err(invalid(
                "pii.key",
                "is required (a random secret of 16+ characters)",
            )),
        }
    }

    /// The worker's identity in leases and the journal.
    pub fn worker_id(&self) -> String {
        if !self.worker.id.is_empty() {
            return self.worker.id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    }
}

impl WorkerSettings {
    /// Lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    /// Drain time after a stop signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    /// Time between two heartbeats in the `workers` table.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }
    /// How recent a heartbeat must be for its worker to count as alive: three beats.
    pub fn alive_within(&self) -> Duration {
        3 * self.heartbeat()
    }
}

fn provider_common(section: &str, c: &ProviderSettings) -> Result<(), ConfigError> {
    let key = format!("{section}.endpoint");
    url_with_scheme(&key, &c.endpoint, &["http", "https"])?;
    if c.timeout_ms == 0 {
        return Err(invalid(
            &format!("{section}.timeout_ms"),
            "must be at least 1",
        ));
    }
    if c.connect_timeout_ms == 0 {
        return Err(invalid(
            &format!("{section}.connect_timeout_ms"),
            "must be at least 1",
        ));
    }
    if !positive(c.rate_per_sec) {
        return Err(invalid(
            &format!("{section}.rate_per_sec"),
            "must be a positive number",
        ));
    }
    if c.burst == 0 {
        return Err(invalid(&format!("{section}.burst"), "must be at least 1"));
    }
    if !(c.fallback_share > 0.0 && c.fallback_share <= 1.0) {
        return Err(invalid(
            &format!("{section}.fallback_share"),
            "must be in (0, 1]",
        ));
    }
    if !(0.01..=1.0).contains(&c.throttle_min_share) {
        return Err(invalid(
            &format!("{section}.throttle_min_share"),
            "must be in [0.01, 1]",
        ));
    }
    for (action, a) in &c.actions {
        if !positive(a.rate_per_sec) {
            return Err(invalid(
                &format!("{section}.actions.{action}.rate_per_sec"),
                "must be a positive number",
            ));
        }
        if a.burst == Some(0) {
            return Err(invalid(
                &format!("{section}.actions.{action}.burst"),
                "must be at least 1",
            ));
        }
        if a.fallback_share.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
            return Err(invalid(
                &format!("{section}.actions.{action}.fallback_share"),
                "must be in (0, 1]",
            ));
        }
    }
    Ok(())
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn url_with_scheme(key: &str, value: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    // The parse error never echoes the value: URLs may carry passwords.
    let u = url::Url::parse(value).map_err(|e| invalid(key, format!("not a URL ({e})")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(invalid(
            key,
            format!("scheme must be one of {}", schemes.join(", ")),
        ));
    }
    Ok(u)
}

/// The built-in defaults (the same text as `config/default.toml`), used when no file is found.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with(Path::new("config"), None, Some(map))
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = load(&[]).unwrap();
        assert_eq!(s.topology.names().work_queue, "kyc.checks");
        assert_eq!(
            s.amqp.url.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(s.routes.mobile3, ["tencent", "alibaba", "alimarket"]);
        assert_eq!(s.routes.id2, ["alibaba"]);
    }

    #[test]
    fn otlp_export_is_off_by_default_and_its_endpoint_is_checked_at_load() {
        let s = load(&[]).unwrap();
        assert_eq!(s.telemetry.traces_url().unwrap(), None);
        assert_eq!(s.telemetry.service_name, "kycq");
        assert_eq!(s.telemetry.otlp_protocol, OtlpProtocol::HttpProtobuf);
        for (endpoint, traces) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://otel:4318/", "http://otel:4318/v1/traces"),
            (
                "https://otel.example/otlp/v1/traces",
                "https://otel.example/otlp/v1/traces",
            ),
        ] {
            let s = load(&[
                ("KYCQ__TELEMETRY__OTLP_ENDPOINT", endpoint),
                ("KYCQ__TELEMETRY__OTLP_PROTOCOL", "http/json"),
            ])
            .unwrap();
            assert_eq!(s.telemetry.traces_url().unwrap().unwrap().as_str(), traces);
            assert_eq!(s.telemetry.otlp_protocol, OtlpProtocol::HttpJson);
        }
        for bad in [
            "localhost:4318",
            "grpc://otel:4317",
            "http://",
            "not a url",
            "http://user:secret@otel:4318",
            "http://otel:4318/?x=1",
        ] {
            let e = load(&[("KYCQ__TELEMETRY__OTLP_ENDPOINT", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("telemetry.otlp_endpoint")
                    && e.contains("KYCQ__TELEMETRY__OTLP_ENDPOINT"),
                "{bad}: {e}"
            );
            assert!(!e.contains("secret"), "{e}");
        }
        let e = load(&[("KYCQ__TELEMETRY__OTLP_PROTOCOL", "grpc")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("otlp_protocol"), "{e}");
        let e = load(&[("KYCQ__TELEMETRY__SERVICE_NAME", " ")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("telemetry.service_name"), "{e}");
    }

    #[test]
    fn the_clients_default_names_are_the_files() {
        assert_eq!(
            load(&[]).unwrap().topology.names(),
            TopologySettings::default().names()
        );
    }

    #[test]
    fn environment_overrides_and_lists() {
        let s = load(&[
            ("KYCQ__TOPOLOGY__PREFIX", "t1."),
            ("KYCQ__WORKER__CONCURRENCY", "3"),
            ("KYCQ__ROUTES__MOBILE3", "tencent"),
            ("KYCQ__PROVIDERS__TENCENT__SECRET_ID", "0123456"),
            ("KYCQ__PROVIDERS__TENCENT__SECRET_KEY", "1e5"),
            ("KYCQ__PROVIDERS__TENCENT__TIMEOUT_MS", "5000"),
            ("KYCQ__DATABASE__CREATE_IF_MISSING", "false"),
            ("KYCQ__RETRY__MULTIPLIER", "1.5"),
        ])
        .unwrap();
        assert_eq!(s.providers.get("tencent").unwrap().timeout_ms, 5000);
        assert!(!s.database.create_if_missing);
        assert_eq!(s.retry.multiplier, 1.5);
        assert_eq!(s.topology.names().requests, "t1.kyc.requests");
        assert_eq!(s.worker.concurrency, 3);
        // A vendor key that looks like a number stays text.
        #[derive(serde::Deserialize)]
        struct Keys {
            secret_id: String,
            secret_key: SecretString,
        }
        let keys: Keys = s
            .providers
            .get("tencent")
            .unwrap()
            .vendor_keys("providers.tencent")
            .unwrap();
        // Secrets that look like numbers stay exactly as given (no leading zero or exponent lost).
        assert_eq!(keys.secret_id, "0123456");
        assert_eq!(keys.secret_key.expose_secret(), "1e5");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = load(&[("KYCQ__WORKER__CONCURRENCY", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.concurrency"), "{e}");
        for bad in ["0", "301"] {
            let e = load(&[("KYCQ__WORKER__HEARTBEAT_SECS", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("worker.heartbeat_secs") && e.contains("KYCQ__WORKER__HEARTBEAT_SECS"),
                "{e}"
            );
        }
        let s = load(&[("KYCQ__WORKER__HEARTBEAT_SECS", "300")]).unwrap();
        assert_eq!(s.worker.alive_within(), Duration::from_secs(900));
        assert_eq!(load(&[]).unwrap().worker.heartbeat_secs, 5);
        let e = load(&[("KYCQ__AMQP__URL", "http://x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("amqp.url") && e.contains("KYCQ__AMQP__URL"),
            "{e}"
        );
        let e = load(&[("KYCQ__ROUTES__ID2", ",")]).unwrap_err().to_string();
        assert!(e.contains("routes.id2"), "{e}");
        let e = load(&[("KYCQ__AMQP__PREFETCH", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("amqp.prefetch"), "{e}");
        let e = load(&[("KYCQ__WORKER__CONCURENCY", "3")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurency"), "{e}");
        let e = load(&[("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC", "-1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.tencent.rate_per_sec"), "{e}");
    }

    #[test]
    fn billing_defaults_load_and_a_bad_billing_value_names_its_key() {
        let s = load(&[]).unwrap();
        assert_eq!(s.billing.utc_offset, "+08:00");
        let prices = crate::ops::billing::Prices::from_settings(&s.billing).unwrap();
        assert_eq!(
            prices
                .get("alimarket", "mobile3/check")
                .map(|p| p.to_string()),
            Some("0.1700".into())
        );
        let s = load(&[("KYCQ__BILLING__PRICES__TENCENT__PHONEVERIFICATION", "0.3")]).unwrap();
        let prices = crate::ops::billing::Prices::from_settings(&s.billing).unwrap();
        assert_eq!(
            prices
                .get("tencent", "PhoneVerification")
                .map(|p| p.to_string()),
            Some("0.3000".into())
        );
        for (key, value, named) in [
            ("KYCQ__BILLING__UTC_OFFSET", "UTC+8", "billing.utc_offset"),
            (
                "KYCQ__BILLING__PRICES__TENCENT__PHONEVERIFICATION",
                "-0.3",
                "billing.prices.tencent.phoneverification",
            ),
            (
                "KYCQ__BILLING__PRICES__ALIBABA__ID2METAVERIFYINTL",
                "0.00001",
                "billing.prices.alibaba.id2metaverifyintl",
            ),
            (
                "KYCQ__BILLING__PRICES__NOSUCH__X",
                "1",
                "billing.prices.nosuch",
            ),
        ] {
            let e = load(&[(key, value)]).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn a_value_given_in_the_wrong_place_is_never_echoed() {
        for (key, value) in [
            ("KYCQ__PII", "supersecretvalue123"),
            ("KYCQ__PROVIDERS__TENCENT", "supersecret2"),
            ("KYCQ__WORKER__CONCURRENCY", "lots-of-secret"),
        ] {
            let e = load(&[(key, value)]).unwrap_err().to_string();
            assert!(!e.contains(value), "{e}");
            assert!(e.contains("not shown"), "{e}");
        }
        assert_eq!(
            hide_values(r#"invalid type: string "a"b", expected x for key `pii`"#),
            r#"invalid type: a text value (not shown), expected x for key `pii`"#
        );
    }

    #[test]
    fn amqp_urls_is_a_comma_separated_node_list() {
        let s = load(&[(
            "KYCQ__AMQP__URLS",
            "amqp://u:nodepass1@10.0.0.1:5672/%2f, amqp://u:nodepass1@10.0.0.2:5672/%2f",
        )])
        .unwrap();
        assert_eq!(s.amqp.nodes().len(), 2);
        assert!(!format!("{s:?}").contains("nodepass1"));
        // Without a list, the one node of `amqp.url`.
        assert_eq!(load(&[]).unwrap().amqp.nodes().len(), 1);
        for (urls, why) in [
            ("amqp://a:5672/%2f,http://b:5672/%2f", "entry 2: scheme"),
            ("amqp://a:5672/%2f,amqp://a/%2f", "same host and port"),
            ("amqp://a:5672/%2f,amqp://b:5672/other", "virtual host"),
        ] {
            let e = load(&[("KYCQ__AMQP__URLS", urls)]).unwrap_err().to_string();
            assert!(
                e.contains("amqp.urls") && e.contains("KYCQ__AMQP__URLS"),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = load(&[
            ("KYCQ__PII__KEY", "pii-key-0123456789-abcdef"),
            (
                "KYCQ__AMQP__URL",
                "amqp://user:hunter2secret@127.0.0.1:5672/%2f",
            ),
            ("KYCQ__PROVIDERS__TENCENT__SECRET_ID", "AKID1"),
            (
                "KYCQ__PROVIDERS__TENCENT__SECRET_KEY",
                "tencent-secret-value",
            ),
        ])
        .unwrap();
        let dbg = format!("{s:?}");
        for secret in [
            "pii-key-0123456789-abcdef",
            "hunter2secret",
            "tencent-secret-value",
            "kycq-sandbox-tencent-key",
            "kycq-sandbox-alibaba-secret",
            "kycq-sandbox-appcode",
        ] {
            assert!(!dbg.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn pii_key_is_required_and_long_enough() {
        assert!(load(&[])
            .unwrap()
            .pii_key()
            .unwrap_err()
            .to_string()
            .contains("KYCQ__PII__KEY"));
        assert!(load(&[("KYCQ__PII__KEY", "short")])
            .unwrap()
            .pii_key()
            .is_err());
    }

    #[test]
    fn redis_names_one_node_a_cluster_or_a_sentinel_primary() {
        assert_eq!(
            load(&[]).unwrap().redis.topology().unwrap(),
            RedisTopology::Single
        );
        let s = load(&[(
            "KYCQ__REDIS__CLUSTER_URLS",
            "redis://127.0.0.1:7001/, redis://:pw@127.0.0.1:7002/",
        )])
        .unwrap();
        assert_eq!(s.redis.topology().unwrap(), RedisTopology::Cluster);
        assert_eq!(
            s.redis.cluster_urls[1].expose_secret(),
            "redis://:pw@127.0.0.1:7002/"
        );
        let s = load(&[
            ("KYCQ__REDIS__SENTINEL_URLS", "redis://127.0.0.1:26379/"),
            ("KYCQ__REDIS__SENTINEL_MASTER", "kycq"),
        ])
        .unwrap();
        assert_eq!(s.redis.topology().unwrap(), RedisTopology::Sentinel);
    }

    #[test]
    fn a_bad_redis_combination_names_the_key() {
        for (env, named) in [
            (
                vec![
                    ("KYCQ__REDIS__CLUSTER_URLS", "redis://127.0.0.1:7001/"),
                    ("KYCQ__REDIS__SENTINEL_URLS", "redis://127.0.0.1:26379/"),
                    ("KYCQ__REDIS__SENTINEL_MASTER", "kycq"),
                ],
                "KYCQ__REDIS__SENTINEL_URLS",
            ),
            (
                vec![("KYCQ__REDIS__SENTINEL_URLS", "redis://127.0.0.1:26379/")],
                "KYCQ__REDIS__SENTINEL_MASTER",
            ),
            (
                vec![("KYCQ__REDIS__SENTINEL_MASTER", "kycq")],
                "KYCQ__REDIS__SENTINEL_MASTER",
            ),
            (
                vec![(
                    "KYCQ__REDIS__CLUSTER_URLS",
                    "redis://127.0.0.1:7001/,http://u:hunter2pw@127.0.0.1:7002/",
                )],
                "KYCQ__REDIS__CLUSTER_URLS",
            ),
            (
                vec![
                    ("KYCQ__REDIS__SENTINEL_URLS", "not a url hunter2pw"),
                    ("KYCQ__REDIS__SENTINEL_MASTER", "kycq"),
                ],
                "KYCQ__REDIS__SENTINEL_URLS",
            ),
        ] {
            let e = load(&env).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
            assert!(!e.contains("hunter2pw"), "{e}");
        }
    }

    #[test]
    fn redis_passwords_never_show_in_debug() {
        let s = load(&[
            ("KYCQ__REDIS__URL", "redis://:hunter2one@127.0.0.1:6379/"),
            (
                "KYCQ__REDIS__SENTINEL_URLS",
                "redis://:hunter2two@127.0.0.1:26379/",
            ),
            ("KYCQ__REDIS__SENTINEL_MASTER", "kycq"),
        ])
        .unwrap();
        let client = crate::ratelimit::RedisClient::from_settings(&s.redis).unwrap();
        let dbg = format!("{s:?} {client:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let s = load(&[(
            "KYCQ__REDIS__CLUSTER_URLS",
            "redis://:hunter2three@127.0.0.1:7001/",
        )])
        .unwrap();
        let client = crate::ratelimit::RedisClient::from_settings(&s.redis).unwrap();
        let dbg = format!("{s:?} {client:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
