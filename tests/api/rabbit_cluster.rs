//! kycq on a real 3-node RabbitMQ cluster, started by the test on free loopback ports in a
//! temporary directory (no Docker, no management plugin; the machine's own broker on 5672 is
//! left alone): three `kycq worker` processes are given the three node URLs, the node that
//! leads the quorum queues is stopped mid-batch, the workers that were on it reconnect to
//! another node — and every request still gets exactly one stored result, one vendor call,
//! within the rate bound. A second test runs the workers on a 3-master Redis Cluster as well
//! and, after the RabbitMQ node, kills the Redis master that owns the bucket.
//!
//! Clustering: <https://www.rabbitmq.com/docs/clustering>; quorum queues:
//! <https://www.rabbitmq.com/docs/quorum-queues>; the environment variables a node reads:
//! <https://www.rabbitmq.com/docs/configure#customise-environment>.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kycq::ops::loadgen::worst_window;
use tokio::time::Instant;

use crate::helpers::{free_port, unique, Options, TestApp};
use crate::ratelimit::{
    assert_one_stored_one_billed, ledger_times, publish_batch, stop_all, wait_calls, SEC,
};
use crate::redis_cluster::{fell_back_and_came_back, RedisCluster};

/// A RabbitMQ command-line tool: the package's own script (so no `su` wrapper changes the
/// user, and with it the Erlang cookie), else the one on PATH. Missing is a failure that says
/// what to install — never a skipped test.
fn tool(name: &str) -> PathBuf {
    let packaged = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if packaged.exists() {
        return packaged;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "`{name}` not found (in /usr/lib/rabbitmq/bin or on PATH): the RabbitMQ cluster tests \
             need the rabbitmq-server package (rabbitmq-server, rabbitmqctl, rabbitmq-diagnostics)"
        )
    })
}

/// One node of a test's own cluster.
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    running: bool,
}

impl Node {
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmq-server -detached` with everything of its own under `dir`: a config file (the
    /// machine's one would make it listen on 5672), no env file, no plugins.
    fn spawn(&self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let conf = self.dir.join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
        )
        .unwrap();
        let plugins = self.dir.join("enabled_plugins");
        std::fs::write(&plugins, "[].\n").unwrap();
        let env_file = self.dir.join("rabbitmq-env.conf");
        std::fs::write(&env_file, "").unwrap();
        let status = Command::new(tool("rabbitmq-server"))
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_CONF_ENV_FILE", &env_file)
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            )
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server runs");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    /// `rabbitmqctl -n <node> <args>`, which must succeed.
    fn ctl(&self, args: &[&str]) {
        let out = Command::new(tool("rabbitmqctl"))
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {args:?}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kill the node's Erlang VM (its pid file), without waiting for a graceful stop.
    fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        self.running = false;
    }
}

async fn wait_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "RabbitMQ node on {port}: no AMQP listener within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three RabbitMQ nodes clustered on loopback, in a temporary directory; killed on drop.
pub struct RabbitCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RabbitCluster {
    pub async fn start() -> RabbitCluster {
        let dir = tempfile::tempdir().unwrap();
        let id = unique();
        let nodes: Vec<Node> = (1..=3)
            .map(|i| Node {
                name: format!("kycqt{id}n{i}@localhost"),
                port: free_port(),
                dir: dir.path().join(format!("n{i}")),
                running: true,
            })
            .collect();
        let cluster = RabbitCluster { nodes, _dir: dir };
        let began = Instant::now();
        // The first node alone (it creates the Erlang cookie when there is none), then the
        // other two at once.
        cluster.nodes[0].spawn();
        wait_port(cluster.nodes[0].port, Duration::from_secs(60)).await;
        for n in &cluster.nodes[1..] {
            n.spawn();
        }
        for n in &cluster.nodes[1..] {
            wait_port(n.port, Duration::from_secs(60)).await;
        }
        let booted = began.elapsed();
        // https://www.rabbitmq.com/docs/clustering#creating: stop_app, join_cluster, start_app.
        let first = cluster.nodes[0].name.clone();
        let joins: Vec<_> = cluster.nodes[1..]
            .iter()
            .map(|n| {
                let (name, dir, port) = (n.name.clone(), n.dir.clone(), n.port);
                let first = first.clone();
                std::thread::spawn(move || {
                    let n = Node {
                        name,
                        port,
                        dir,
                        running: true,
                    };
                    n.ctl(&["stop_app"]);
                    n.ctl(&["join_cluster", &first]);
                    n.ctl(&["start_app"]);
                })
            })
            .collect();
        for j in joins {
            j.join().expect("join_cluster");
        }
        for n in &cluster.nodes {
            wait_port(n.port, Duration::from_secs(60)).await;
        }
        let out = Command::new(tool("rabbitmq-diagnostics"))
            .args([
                "-n",
                &cluster.nodes[0].name,
                "-q",
                "cluster_status",
                "--formatter",
                "json",
            ])
            .output()
            .expect("rabbitmq-diagnostics runs");
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let running: Vec<&str> = status["running_nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for n in &cluster.nodes {
            assert!(
                running.contains(&n.name.as_str()),
                "{} not running in the cluster: {}",
                n.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        eprintln!(
            "rabbitmq cluster: 3 nodes booted in {} ms, clustered in {} ms",
            booted.as_millis(),
            began.elapsed().as_millis()
        );
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The members of quorum queue `queue` (`rabbitmq-queues quorum_status`, asked of the
    /// last node).
    pub fn quorum_members(&self, queue: &str) -> String {
        let out = Command::new(tool("rabbitmq-queues"))
            .args(["-n", &self.nodes[2].name, "-q", "quorum_status", queue])
            .output()
            .expect("rabbitmq-queues runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Stop node `i` the way an operator (or a rolling upgrade) does: `rabbitmqctl shutdown`
    /// closes its client connections and waits for the VM to end — in a thread of its own,
    /// so the test watches the workers meanwhile; join it to know the node is gone.
    pub fn stop(&mut self, i: usize) -> std::thread::JoinHandle<()> {
        let n = &mut self.nodes[i];
        n.running = false;
        let node = Node {
            name: n.name.clone(),
            port: n.port,
            dir: n.dir.clone(),
            running: false,
        };
        std::thread::spawn(move || node.ctl(&["shutdown"]))
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if n.running {
                n.kill();
            }
        }
    }
}

/// The nodes (ports) a worker's log says it consumed from, in order: a connection counts once
/// the worker logs `consuming` on it (the topology declared, the consumer registered).
fn connections(log: &Path, ports: &[u16]) -> Vec<u16> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut node = None;
    let mut out = Vec::new();
    for l in text.lines() {
        if l.contains("connected to RabbitMQ") {
            node = ports
                .iter()
                .copied()
                .find(|p| l.contains(&format!("127.0.0.1:{p}")));
        } else if l.contains("kycq::worker: consuming") {
            out.extend(node.take());
        }
    }
    out
}

/// Three `kycq worker` processes, each starting on a node of its own choosing, at least one of
/// them on node `victim` (a worker elsewhere is started again until one is): the workers, and
/// which of them are on `victim`.
async fn workers_with_one_on(
    app: &TestApp,
    ports: &[u16],
    victim: usize,
) -> (Vec<(Child, PathBuf)>, Vec<usize>) {
    let mut workers: Vec<(Child, PathBuf)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while workers.len() < 3 {
            workers.push(app.spawn_worker_process(&[]));
        }
        let mut placed = Vec::new();
        while placed.len() < workers.len() {
            assert!(Instant::now() < deadline, "workers did not connect");
            placed = workers
                .iter()
                .filter_map(|(_, log)| connections(log, ports).first().copied())
                .collect();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if placed.contains(&ports[victim]) {
            break;
        }
        let (mut c, _) = workers.pop().unwrap();
        stop_all(std::slice::from_mut(&mut c));
    }
    let on_victim = (0..workers.len())
        .filter(|&w| connections(&workers[w].1, ports).first() == Some(&ports[victim]))
        .collect();
    (workers, on_victim)
}

/// Stop node `victim` and wait until every worker that was on it consumes from another node:
/// how long after the stop began each did, and how long `rabbitmqctl shutdown` took.
async fn stop_and_fail_over(
    cluster: &mut RabbitCluster,
    victim: usize,
    workers: &[(Child, PathBuf)],
    on_victim: &[usize],
) -> (Vec<Duration>, Duration) {
    let ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
    let stop_began = Instant::now();
    let stopping = cluster.stop(victim);
    let mut failovers = Vec::new();
    for &w in on_victim {
        let log = &workers[w].1;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = connections(log, &ports);
            if seen.len() >= 2 {
                assert_ne!(seen[1], ports[victim], "reconnected to the stopped node");
                failovers.push(stop_began.elapsed());
                break;
            }
            assert!(
                Instant::now() < until,
                "worker {w} did not reconnect: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stopping.join().expect("rabbitmqctl shutdown");
    (failovers, stop_began.elapsed())
}

/// Every request of `ids` answered `completed`, and every copy of a result identical to the
/// first. Results are published at least once (docs/src/reference/contract.md): a delivery
/// whose result was confirmed but whose ack died with its node is redelivered and answered
/// again from the stored result — the same result, never a second call. Returns how many
/// copies came.
async fn every_request_completed(app: &mut TestApp, ids: &[String]) -> usize {
    let results = app.results_for(ids, Duration::from_secs(90)).await;
    let mut copies = 0;
    while let Some((_, r)) = app.next_result(Duration::from_millis(1500)).await {
        assert!(
            ids.contains(&r.request_id),
            "a result for a request not sent"
        );
        copies += 1;
    }
    assert_eq!(results.len(), ids.len());
    for (id, rs) in &results {
        assert!(
            rs.iter()
                .all(|r| r.status == kycq::check::Status::Completed),
            "{id}: {rs:?}"
        );
        let first = serde_json::to_value(&rs[0]).unwrap();
        assert!(
            rs.iter().all(|r| serde_json::to_value(r).unwrap() == first),
            "{id}: differing results {rs:?}"
        );
        copies += rs.len() - 1;
    }
    copies
}

fn limit_env(rate: &str) -> Vec<(String, String)> {
    vec![
        ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), rate.into()),
        ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
        ("KYCQ__WORKER__CONCURRENCY".into(), "4".into()),
        ("KYCQ__AMQP__PREFETCH".into(), "4".into()),
    ]
}

#[tokio::test]
async fn a_rabbitmq_node_stopped_mid_batch_every_request_still_gets_exactly_one_result() {
    let began = std::time::Instant::now();
    let (rate, n) = (20.0, 200);
    // Exclusive before the cluster starts: booting three nodes is heavy for two cores.
    let turn = crate::helpers::alone().await;
    let mut cluster = RabbitCluster::start().await;
    drop(turn);
    let mut app = TestApp::with(Options {
        env: limit_env("20"),
        exclusive: true,
        amqp_urls: cluster.urls(),
        ..Options::default()
    })
    .await;
    let ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
    // The queues were declared through node 1: it leads them, and it is the one stopped. The
    // test's own tap is on node 3.
    let victim = 0;
    // kycq sets no initial group size: RabbitMQ's default puts a replica on every node of a
    // 3-node cluster, so the queue keeps a majority (2 of 3) when one stops.
    let members = cluster.quorum_members(&app.names.work_queue);
    for node in &cluster.nodes {
        assert!(
            members.contains(&node.name),
            "{} not a member: {members}",
            node.name
        );
    }
    let batch = publish_batch(n, 9100);
    for m in &batch {
        app.publish(m).await;
    }
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let (workers, on_victim) = workers_with_one_on(&app, &ports, victim).await;

    let ledger = app.sandbox.ledger.clone();
    wait_calls(&ledger, 40).await;
    let stopped_at_calls = ledger.len();
    let (failovers, stop_took) =
        stop_and_fail_over(&mut cluster, victim, &workers, &on_victim).await;
    let copies = every_request_completed(&mut app, &ids).await;
    let mut children: Vec<Child> = workers.into_iter().map(|(c, _)| c).collect();
    stop_all(&mut children);

    // (Every result is `completed`, one stored row each: nothing was dead-lettered. The
    // dead-letter queue itself is a classic queue on the stopped node, unreadable meanwhile.)
    assert_one_stored_one_billed(&app, n).await;
    let mut times = ledger_times(&app, "tencent");
    let worst = worst_window(&mut times, SEC);
    eprintln!(
        "rabbitmq node stop: {} of 3 workers on the stopped node (the queues' leader) after {stopped_at_calls} calls; `rabbitmqctl shutdown` took {} ms; consuming from another node {:?} ms after the stop began; {copies} republished copies of stored results; worst 1 s window {worst} calls (R = {rate}, bound R + 3); test {} s",
        on_victim.len(),
        stop_took.as_millis(),
        failovers.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        began.elapsed().as_secs()
    );
    assert!(worst <= rate as usize + 3, "{worst} calls in a 1 s window");
    app.cleanup().await;
    drop(cluster);
}

/// Both clusters at once, as a production deployment runs them: the workers are given the
/// three RabbitMQ nodes and the Redis Cluster's seeds; the RabbitMQ node leading the queues is
/// stopped mid-batch, then the Redis master owning the bucket is killed. Every request still
/// gets exactly one result and one billed call, and the vendor never sees more than the
/// limit's bound (the fallback share of each of the three workers is a third of the rate).
#[tokio::test]
async fn a_rabbitmq_node_and_a_redis_master_lost_mid_batch_every_request_one_result_one_bill() {
    let began = std::time::Instant::now();
    let (rate, n) = (20.0, 240);
    let turn = crate::helpers::alone().await;
    let mut rabbit = RabbitCluster::start().await;
    let mut redis = RedisCluster::start().await;
    drop(turn);
    let mut env = limit_env("20");
    env.extend([
        (
            "KYCQ__PROVIDERS__TENCENT__FALLBACK_SHARE".into(),
            "0.3333".into(),
        ),
        ("KYCQ__REDIS__CLUSTER_URLS".into(), redis.urls().join(",")),
        ("KYCQ__REDIS__PROBE_INTERVAL_MS".into(), "300".into()),
    ]);
    let mut app = TestApp::with(Options {
        env,
        exclusive: true,
        amqp_urls: rabbit.urls(),
        ..Options::default()
    })
    .await;
    let key = kycq::ratelimit::bucket_key(&app.settings.redis.key_prefix, "tencent", None);
    let slot = kycq::ratelimit::conn::key_slot(&key);
    let owner = redis.master_of_slot(slot).await.unwrap();
    let ports: Vec<u16> = (0..3).map(|i| rabbit.port(i)).collect();
    let batch = publish_batch(n, 9400);
    for m in &batch {
        app.publish(m).await;
    }
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let (workers, on_victim) = workers_with_one_on(&app, &ports, 0).await;

    let ledger = app.sandbox.ledger.clone();
    wait_calls(&ledger, 40).await;
    let (failovers, _) = stop_and_fail_over(&mut rabbit, 0, &workers, &on_victim).await;
    wait_calls(&ledger, 100).await;
    redis.kill(owner);
    let killed = Instant::now();
    let promoted = redis
        .wait_promoted(slot, owner, Duration::from_secs(8))
        .await;
    let promotion = killed.elapsed();
    let copies = every_request_completed(&mut app, &ids).await;
    let logs: Vec<PathBuf> = workers.iter().map(|(_, log)| log.clone()).collect();
    let mut children: Vec<Child> = workers.into_iter().map(|(c, _)| c).collect();
    stop_all(&mut children);

    assert_one_stored_one_billed(&app, n).await;
    fell_back_and_came_back(&logs);
    let mut times = ledger_times(&app, "tencent");
    let worst = worst_window(&mut times, SEC);
    eprintln!(
        "rabbitmq node and redis master lost: {} of 3 workers on the stopped RabbitMQ node, consuming from another node {:?} ms after the stop began; Redis master {owner} killed at 100 calls, replica {promoted} promoted after {} ms; {copies} republished copies of stored results; worst 1 s window {worst} calls (R = {rate}, bound R + 3); test {} s",
        on_victim.len(),
        failovers.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        promotion.as_millis(),
        began.elapsed().as_secs()
    );
    assert!(worst <= rate as usize + 3, "{worst} calls in a 1 s window");
    app.cleanup().await;
    drop(redis);
    drop(rabbit);
}
