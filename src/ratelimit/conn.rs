//! One way to reach the Redis that `[redis]` names — one node (`redis.url`), a Redis Cluster
//! (`redis.cluster_urls`) or a Sentinel-managed primary (`redis.sentinel_urls` and
//! `redis.sentinel_master`) — for the limiter and for the tools (`kycq doctor`, the console,
//! `kycq loadgen`, `kycq bench`).
//!
//! - One node: a [`ConnectionManager`] (as before).
//! - Cluster: a [`ClusterConnection`]: it reads the slot map from any seed node, sends each
//!   command to the master owning its key's slot and follows `MOVED`/`ASK` redirections
//!   (<https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/>). Every bucket
//!   key carries a `{hash tag}`, so the script's one key always lives in one slot.
//! - Sentinel: each connection asks the sentinels for the current primary (`SENTINEL
//!   get-master-addr-by-name`) and opens a multiplexed connection to it; after a failover the
//!   next connection (the limiter's probe) finds the promoted replica
//!   (<https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/>).
//!
//! None of these reconnects on its own on the limiter's behalf: an error makes the limiter fall
//! back, and its probe opens a fresh connection until one answers.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, Value,
};
use secrecy::ExposeSecret;

use crate::configuration::{RedisSettings, RedisTopology};

/// Opens connections to the configured Redis. Cheap to clone; never shows a password.
#[derive(Clone)]
pub struct RedisClient {
    kind: Kind,
    timeout: Duration,
}

#[derive(Clone)]
enum Kind {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master: String,
        node: SentinelNodeConnectionInfo,
    },
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The addresses may carry passwords: only the kind is shown.
        f.debug_struct("RedisClient")
            .field("topology", &self.topology())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// The client for `[redis]`; connection and response timeouts are `redis.timeout_ms`. Only
    /// a malformed URL or a bad combination of keys is an error (nothing is connected yet).
    pub fn from_settings(redis: &RedisSettings) -> RedisResult<RedisClient> {
        let timeout = Duration::from_millis(redis.timeout_ms.max(1));
        let topology = redis.topology().map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "[redis] settings",
                e.to_string(),
            ))
        })?;
        let kind = match topology {
            RedisTopology::Single => Kind::Single(redis::Client::open(redis.url.expose_secret())?),
            RedisTopology::Cluster => {
                let nodes = redis
                    .cluster_urls
                    .iter()
                    .map(|u| u.expose_secret().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?;
                Kind::Cluster(
                    ClusterClient::builder(nodes)
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        // A command to a master that went away fails fast (the limiter falls
                        // back) instead of retrying with backoff; redirections still work.
                        .retries(1)
                        .min_retry_wait(10)
                        .max_retry_wait(50)
                        .build()?,
                )
            }
            RedisTopology::Sentinel => {
                let sentinels = redis
                    .sentinel_urls
                    .iter()
                    .map(|u| u.expose_secret().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?;
                // The primary and its replicas: `redis.url`'s username, password and database.
                let data = redis.url.expose_secret().into_connection_info()?;
                Kind::Sentinel {
                    sentinels,
                    master: redis.sentinel_master.clone().unwrap_or_default(),
                    node: SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(data.redis_settings().clone()),
                }
            }
        };
        Ok(RedisClient { kind, timeout })
    }

    /// Which deployment this client talks to.
    pub fn topology(&self) -> RedisTopology {
        match self.kind {
            Kind::Single(_) => RedisTopology::Single,
            Kind::Cluster(_) => RedisTopology::Cluster,
            Kind::Sentinel { .. } => RedisTopology::Sentinel,
        }
    }

    /// A new connection (no retries beyond the client's own: an error is returned at once).
    pub async fn connect(&self) -> RedisResult<RedisConn> {
        match &self.kind {
            Kind::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(0);
                Ok(RedisConn::Single(
                    ConnectionManager::new_with_config(client.clone(), cfg).await?,
                ))
            }
            Kind::Cluster(client) => Ok(RedisConn::Cluster(client.get_async_connection().await?)),
            Kind::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node.clone()),
                    SentinelServerType::Master,
                )?;
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                Ok(RedisConn::Sentinel(
                    sentinel.get_async_connection_with_config(&cfg).await?,
                ))
            }
        }
    }
}

/// A connection to one node, the cluster or the current Sentinel primary; cheap to clone
/// (every clone shares the underlying multiplexed connection).
#[derive(Clone)]
pub enum RedisConn {
    /// `redis.url`.
    Single(ConnectionManager),
    /// `redis.cluster_urls`.
    Cluster(ClusterConnection),
    /// The primary the sentinels named when this connection was opened.
    Sentinel(MultiplexedConnection),
}

impl RedisConn {
    /// `SCRIPT LOAD` the Lua `code` where `keys` live: on the one node, or on the master owning
    /// each key's slot (scripts are per node; a replica promoted after a failover starts
    /// without them). Fails if one of those masters does not answer — and, on a cluster, until
    /// every master says `cluster_state:ok`.
    ///
    /// The last condition is for the way back from a fallback: after a failover the masters
    /// learn of the promotion over a few hundred milliseconds; workers whose probes asked
    /// different nodes would otherwise return to the shared bucket on different probe ticks,
    /// one of them at the full rate while the others still use their local shares.
    pub async fn load_script(&mut self, code: &str, keys: &[&str]) -> RedisResult<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(code);
        match self {
            RedisConn::Cluster(c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let states = c
                    .route_command(redis::cmd("CLUSTER").arg("INFO").clone(), all)
                    .await?;
                let Value::Map(states) = states else {
                    return Err(not_settled("an unexpected CLUSTER INFO reply"));
                };
                for (node, state) in states {
                    let text: String = redis::from_redis_value(state)?;
                    if !text.contains("cluster_state:ok") {
                        let node: String = redis::from_redis_value(node).unwrap_or_default();
                        return Err(not_settled(&format!("{node} is not cluster_state:ok")));
                    }
                }
                let mut slots = BTreeSet::new();
                for key in keys {
                    if !slots.insert(key_slot(key)) {
                        continue;
                    }
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::new(key_slot(key), SlotAddr::Master),
                    ));
                    c.route_command(load.clone(), route).await?;
                    // The client sends a command for a master it cannot reach to another node
                    // instead, which would load the script there and answer: a keyed command
                    // proves the slot's master itself answers (another node says MOVED to the
                    // unreachable one, an error).
                    let _: bool = redis::cmd("EXISTS").arg(*key).query_async(c).await?;
                }
                Ok(())
            }
            other => {
                let _: String = load.query_async(other).await?;
                Ok(())
            }
        }
    }

    /// Run `cmd` (a keyless command such as `INFO`) on the node holding `key`: the one node,
    /// the master owning the key's slot, or the primary.
    pub async fn query_at_key<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            RedisConn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(key_slot(key), SlotAddr::Master),
                ));
                let v = c.route_command(cmd.clone(), route).await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
            other => cmd.query_async(other).await,
        }
    }

    /// Every key matching `pattern` (`SCAN` on one node; `KEYS` on every master of a cluster,
    /// where one `SCAN` cursor cannot span the nodes). For tools cleaning up their own keys.
    pub async fn keys_matching(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        if let RedisConn::Cluster(c) = self {
            return redis::cmd("KEYS").arg(pattern).query_async(c).await;
        }
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(self)
                .await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

fn not_settled(detail: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
        "the cluster is not settled",
        detail.to_owned(),
    ))
}

/// The cluster slot of `key` (CRC16 of its `{hash tag}` modulo 16384, as `CLUSTER KEYSLOT`;
/// <https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#key-distribution-model>).
pub fn key_slot(key: &str) -> u16 {
    crc16_xmodem(hash_tag(key.as_bytes())) % 16384
}

/// The part of `key` that is hashed: the first non-empty `{…}`, else the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
            RedisConn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
            RedisConn::Sentinel(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values from `CLUSTER KEYSLOT` (and the cluster specification's example).
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("kycq:{rl:tencent}"), key_slot("rl:tencent"));
        assert_eq!(key_slot("a{}b"), key_slot("a{}b"));
    }
}
