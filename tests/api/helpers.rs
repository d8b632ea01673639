//! The test harness: an isolated kycq deployment per test (names, database, Redis prefix), the
//! sandbox, in-process and out-of-process workers, and a tap on the result exchange.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kycq::broker::{self, dlq, Publisher};
use kycq::check::CheckResult;
use kycq::configuration::{Names, Settings};
use kycq::ops::enqueue::{self, ReplyQueue, RequestMessage};
use kycq::providers::tencent;
use kycq::sandbox::scenarios::TestIdentity;
use kycq::sandbox::{self, RunningSandbox, SandboxSettings};
use lapin::{BasicProperties, Connection};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const PII_KEY: &str = "integration-test-pii-key-0001";

/// Everything any test (or in-process worker) logged, for the PII assertions.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Capture;
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get_or_init(Default::default)
            .lock()
            .unwrap()
            .extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,lapin=warn,sqlx=warn,hyper=warn,reqwest=warn,h2=warn,amq_protocol=warn,pinky_swear=warn")
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// A unique, lower-case id for one test.
pub fn unique() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One isolated deployment.
pub struct TestApp {
    pub id: String,
    pub names: Names,
    pub settings: Settings,
    pub env: BTreeMap<String, String>,
    pub sandbox: RunningSandbox,
    sandbox_stop: CancellationToken,
    pub conn: Connection,
    pub publisher: Publisher,
    tap: ReplyQueue,
    pub db_name: String,
    db: OnceLock<PgPool>,
    workers: Vec<CancellationToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// This test's turn: shared with the others, or the machine alone ([`Options::exclusive`]).
    _turn: Turn,
}

/// Options for [`TestApp::with`].
#[derive(Clone)]
pub struct Options {
    pub sandbox: SandboxSettings,
    pub env: Vec<(String, String)>,
    /// Run alone: the test judges timing at the vendor (calls per window) and must not share
    /// the machine's two cores with the rest of the suite. It waits for the running tests to
    /// end, and tests that start meanwhile wait for it.
    pub exclusive: bool,
    /// The nodes of a RabbitMQ cluster of the test's own (empty: the machine's broker at
    /// [`AMQP_URL`]). The workers get all of them (`KYCQ__AMQP__URLS`); the topology is declared
    /// through the first (its quorum queues' leader), and the test publishes and taps results
    /// through the last — so the test can stop the first node and keep its tap.
    pub amqp_urls: Vec<String>,
}

/// A test's hold on [`TURNS`].
pub enum Turn {
    Shared(tokio::sync::OwnedRwLockReadGuard<()>),
    Exclusive(tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// Every `TestApp` holds it shared; an exclusive one holds it alone.
static TURNS: OnceLock<Arc<tokio::sync::RwLock<()>>> = OnceLock::new();

/// The machine alone, for a test that judges timing without a [`TestApp`] (limiters in this
/// process): held until dropped.
pub async fn alone() -> Turn {
    turn(true).await
}

async fn turn(exclusive: bool) -> Turn {
    let lock = TURNS.get_or_init(Default::default).clone();
    if exclusive {
        Turn::Exclusive(lock.write_owned().await)
    } else {
        Turn::Shared(lock.read_owned().await)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sandbox: SandboxSettings {
                listen: "127.0.0.1:0".parse().unwrap(),
                slow_delay: Duration::from_secs(4),
                ..SandboxSettings::default()
            },
            env: Vec::new(),
            exclusive: false,
            amqp_urls: Vec::new(),
        }
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> TestApp {
        init_logs();
        let turn = turn(opts.exclusive).await;
        let id = unique();
        let sandbox_stop = CancellationToken::new();
        let sb = start_sandbox(opts.sandbox.clone(), sandbox_stop.clone());
        let db_name = format!("kycq_t_{id}");
        let mut env: BTreeMap<String, String> = [
            ("KYCQ__TOPOLOGY__PREFIX", format!("t-{id}.")),
            (
                "KYCQ__DATABASE__URL",
                format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            ),
            ("KYCQ__DATABASE__MAX_CONNECTIONS", "5".into()),
            ("KYCQ__REDIS__KEY_PREFIX", format!("kycq-t-{id}")),
            ("KYCQ__HTTP__LISTEN", String::new()),
            ("KYCQ__PII__KEY", PII_KEY.into()),
            ("KYCQ__WORKER__LEASE_SECS", "4".into()),
            ("KYCQ__WORKER__SHUTDOWN_GRACE_SECS", "10".into()),
            ("KYCQ__RETRY__INITIAL_DELAY_MS", "20".into()),
            ("KYCQ__RETRY__MAX_DELAY_MS", "80".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__ENDPOINT",
                match opts.sandbox.tls {
                    Some(_) => format!("https://{}", sb.addr),
                    None => format!("http://{}", sb.addr),
                },
            ),
            (
                "KYCQ__PROVIDERS__TENCENT__SECRET_ID",
                tencent::SANDBOX_SECRET_ID.into(),
            ),
            (
                "KYCQ__PROVIDERS__TENCENT__SECRET_KEY",
                tencent::SANDBOX_SECRET_KEY.into(),
            ),
            ("KYCQ__PROVIDERS__TENCENT__TIMEOUT_MS", "2000".into()),
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC", "1000".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST", "100".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__CIRCUIT_COOLDOWN_SECS",
                "2".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if !opts.amqp_urls.is_empty() {
            env.insert("KYCQ__AMQP__URLS".into(), opts.amqp_urls.join(","));
        }
        for (k, v) in opts.env {
            env.insert(k, v);
        }
        let settings =
            Settings::load_with(&config_dir(), None, Some(env.clone())).expect("test settings");
        let names = settings.topology.names();
        let (declare_on, tap_on) = match (opts.amqp_urls.first(), opts.amqp_urls.last()) {
            (Some(first), Some(last)) => (first.as_str(), last.as_str()),
            _ => (AMQP_URL, AMQP_URL),
        };
        let conn = broker::connect(declare_on, &format!("kycq test {id}"))
            .await
            .expect("rabbitmq");
        broker::declare_topology(&conn, &names, settings.amqp.delivery_limit)
            .await
            .expect("topology");
        let conn = if tap_on == declare_on {
            conn
        } else {
            let _ = conn.close(200, "declared".into()).await;
            broker::connect(tap_on, &format!("kycq test {id}"))
                .await
                .expect("rabbitmq")
        };
        let publisher = Publisher::new(&conn, names.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        // A tap on every result, declared before anything is published.
        let tap = ReplyQueue::open_bound(&conn, Some((&names.results, "result.#")))
            .await
            .unwrap();
        TestApp {
            id,
            names,
            settings,
            env,
            sandbox: sb,
            sandbox_stop,
            conn,
            publisher,
            tap,
            db_name,
            db: OnceLock::new(),
            workers: Vec::new(),
            tasks: Vec::new(),
            _turn: turn,
        }
    }

    /// Start a worker in this process; returns its shutdown token.
    pub async fn start_worker(&mut self) -> CancellationToken {
        let stop = CancellationToken::new();
        let running = kycq::startup::start_worker(&self.settings, stop.clone())
            .await
            .expect("worker starts");
        self.tasks.push(tokio::spawn(async move {
            running.task.await.unwrap().unwrap();
        }));
        self.workers.push(stop.clone());
        stop
    }

    /// Start a worker with changed settings (e.g. wrong credentials).
    pub async fn start_worker_with(&mut self, extra: &[(&str, &str)]) -> CancellationToken {
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::load_with(&config_dir(), None, Some(env)).expect("settings");
        let stop = CancellationToken::new();
        let running = kycq::startup::start_worker(&settings, stop.clone())
            .await
            .expect("worker starts");
        self.tasks.push(tokio::spawn(async move {
            running.task.await.unwrap().unwrap();
        }));
        self.workers.push(stop.clone());
        stop
    }

    /// Stop every in-process worker and wait for them to drain.
    pub async fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.cancel();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Spawn `kycq worker` as a process with this deployment's environment (plus `extra`).
    /// Its stderr goes to the returned log file.
    pub fn spawn_worker_process(&self, extra: &[(&str, &str)]) -> (Child, PathBuf) {
        let log = std::env::temp_dir().join(format!("kycq-test-{}-{}.log", self.id, unique()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kycq"));
        cmd.arg("worker")
            .env_clear()
            .env("KYCQ_CONFIG_DIR", config_dir())
            .env(
                "KYCQ__LOG__LEVEL",
                "debug,lapin=warn,sqlx=warn,hyper=warn,reqwest=warn",
            )
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        (cmd.spawn().expect("spawn kycq worker"), log)
    }

    pub async fn publish(&self, m: &RequestMessage) {
        crate::schema::check_request_if_kycq_accepts(&serde_json::to_vec(m).unwrap());
        enqueue::publish(&self.publisher, m, None).await.unwrap();
    }

    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], props: BasicProperties) {
        crate::schema::check_request_if_kycq_accepts(body);
        self.publisher
            .publish_request(routing_key, body, props)
            .await
            .unwrap();
    }

    /// The next result on the result exchange (with its routing key), checked against the
    /// published contract (spec/): a schema-invalid result fails the test that receives it.
    pub async fn next_result(&mut self, timeout: Duration) -> Option<(String, CheckResult)> {
        let d = self.tap.next_delivery(timeout).await?;
        crate::schema::check_result(&d.data, &d.properties, Some(d.routing_key.as_str()));
        Some((
            d.routing_key.as_str().to_owned(),
            serde_json::from_slice(&d.data).expect("a result"),
        ))
    }

    /// The next result with its AMQP properties (headers), checked like [`TestApp::next_result`].
    pub async fn next_result_with_properties(
        &mut self,
        timeout: Duration,
    ) -> Option<(CheckResult, BasicProperties)> {
        let d = self.tap.next_delivery(timeout).await?;
        crate::schema::check_result(&d.data, &d.properties, Some(d.routing_key.as_str()));
        Some((
            serde_json::from_slice(&d.data).expect("a result"),
            d.properties.clone(),
        ))
    }

    /// Collect results until every id in `ids` has one (duplicates kept), or panic after
    /// `timeout`.
    pub async fn results_for(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, Vec<CheckResult>> {
        let mut out: BTreeMap<String, Vec<CheckResult>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !ids.iter().all(|i| out.contains_key(i)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((_, r)) = self.next_result(left).await else {
                let missing: Vec<_> = ids.iter().filter(|i| !out.contains_key(*i)).collect();
                panic!("timed out waiting for results of {missing:?}");
            };
            out.entry(r.request_id.clone()).or_default().push(r);
        }
        out
    }

    /// The one result of one request.
    pub async fn result_of(&mut self, id: &str) -> CheckResult {
        self.results_for(&[id.to_owned()], Duration::from_secs(30))
            .await
            .remove(id)
            .unwrap()
            .remove(0)
    }

    /// No further result arrives within `d`.
    pub async fn assert_no_result_within(&mut self, d: Duration) {
        if let Some((_, r)) = self.next_result(d).await {
            panic!("unexpected result for {}", r.request_id);
        }
    }

    pub async fn db(&self) -> &PgPool {
        if self.db.get().is_none() {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(&format!(
                    "postgres://postgres@127.0.0.1:5432/{}",
                    self.db_name
                ))
                .await
                .expect("test database (a worker creates it)");
            let _ = self.db.set(pool);
        }
        self.db.get().unwrap()
    }

    /// The call journal of one request: (provider, outcome, billed, provider_code), in call
    /// order.
    pub async fn journal(&self, request_id: &str) -> Vec<(String, String, String, Option<String>)> {
        use sqlx::Row;
        sqlx::query(
            "SELECT provider, outcome, billed, provider_code FROM provider_calls \
             WHERE request_id = $1 ORDER BY attempt",
        )
        .bind(request_id)
        .fetch_all(self.db().await)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("provider"),
                r.get("outcome"),
                r.get("billed"),
                r.get("provider_code"),
            )
        })
        .collect()
    }

    pub async fn dead_letters(&self) -> Vec<(dlq::DeadLetterInfo, Vec<u8>)> {
        dlq::list(&self.conn, &self.names, 1000).await.unwrap()
    }

    /// Wait until the dead-letter queue holds `n` messages.
    pub async fn wait_dead_letters(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<(dlq::DeadLetterInfo, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.dead_letters().await;
            if d.len() >= n || tokio::time::Instant::now() > deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Remove everything this test created.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        // Every result the test did not read from the tap (a client's, a CLI's) is checked
        // against the contract too.
        while let Some(d) = self.tap.next_delivery(Duration::from_millis(200)).await {
            crate::schema::check_result(&d.data, &d.properties, Some(d.routing_key.as_str()));
        }
        self.sandbox_stop.cancel();
        if let Some(p) = self.db.take() {
            p.close().await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
        teardown(
            self.names.clone(),
            self.db_name.clone(),
            self.settings.redis.key_prefix.clone(),
        )
        .await;
    }
}

/// Build a mobile3 request for a test identity.
pub fn mobile3(id: &TestIdentity) -> RequestMessage {
    RequestMessage {
        request_id: format!("req-{}", unique()),
        check: "mobile3".into(),
        name: id.name.clone(),
        id_number: id.id_number.clone(),
        mobile: Some(id.mobile.clone()),
        ..Default::default()
    }
}

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

async fn teardown(names: Names, db_name: String, redis_prefix: String) {
    if let Ok(conn) = broker::connect(AMQP_URL, "kycq test teardown").await {
        if let Ok(ch) = conn.create_channel().await {
            for q in [&names.work_queue, &names.dead_queue, &names.wait_queue] {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
            for e in [
                &names.requests,
                &names.results,
                &names.dead_exchange,
                &names.wait_queue,
            ] {
                let _ = ch
                    .exchange_delete(e.as_str().into(), Default::default())
                    .await;
            }
        }
        let _ = conn.close(200, "ok".into()).await;
    }
    if let Ok(pool) = PgPoolOptions::new()
        .max_connections(1)
        .connect(PG_ADMIN_URL)
        .await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)"#
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
    if let Ok(client) = redis::Client::open("redis://127.0.0.1:6379/") {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{redis_prefix}*"))
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
            }
        }
    }
}

/// Cleans up even when a test panics before `cleanup`: runs the teardown on its own runtime.
impl Drop for TestApp {
    fn drop(&mut self) {
        if self.db.get().is_none()
            && self.workers.is_empty()
            && self.tasks.is_empty()
            && !self.conn.status().connected()
        {
            return; // cleanup() already ran
        }
        for w in &self.workers {
            w.cancel();
        }
        self.sandbox_stop.cancel();
        let (names, db, prefix) = (
            self.names.clone(),
            self.db_name.clone(),
            self.settings.redis.key_prefix.clone(),
        );
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                teardown(names, db, prefix).await;
            });
        })
        .join();
    }
}

/// Run `kycq <args>` (the real binary) with this deployment's environment and wait for it.
pub async fn kycq(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args(args)
        .env_clear()
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__LOG__LEVEL", "warn,lapin=off")
        .envs(&app.env)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kycq")
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`: the
/// sandbox serves with the pair, a provider trusts the CA (`ca_file`).
pub fn tls_files(dir: &std::path::Path) -> (sandbox::TlsFiles, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl on PATH");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=kycq test CA"],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        sandbox::TlsFiles {
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
        },
        dir.join("ca.pem"),
    )
}

/// The sandbox on a runtime of its own (two threads), as a vendor runs apart from its callers:
/// the time it records a call is when the call arrived, whatever the test's own runtime is
/// busy with (validating results, publishing a batch). Stops with `stop`.
fn start_sandbox(settings: SandboxSettings, stop: CancellationToken) -> RunningSandbox {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sandbox".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the sandbox's runtime");
            rt.block_on(async move {
                let started = sandbox::start(settings, stop.clone()).await;
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    stop.cancelled().await;
                }
            });
        })
        .expect("the sandbox's thread");
    rx.recv().expect("the sandbox started").expect("sandbox")
}
