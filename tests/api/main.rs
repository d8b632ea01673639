//! One integration-test binary against the real RabbitMQ, Postgres and Redis of this machine and
//! kycq's own sandbox. Every test gets its own exchange/queue prefix, database and Redis key
//! prefix, and removes them when it ends. `TEST_LOG=1` prints the logs.

mod alibaba;
mod alimarket;
mod bench;
mod billing;
mod cli;
mod client;
mod console;
mod dlq;
mod docs;
mod doctor;
mod failures;
mod group_commit;
mod heartbeat;
mod helpers;
mod monitoring;
mod pipeline;
mod process;
mod rabbit_cluster;
mod ratelimit;
mod redis_cluster;
mod schema;
mod tracing;
mod webdriver;
