//! Operations: the health/readiness/metrics endpoint, `kycq doctor`, `kycq enqueue`, `kycq status`,
//! `kycq dlq`, `kycq demo`, `kycq loadgen`, `kycq bench` and `kycq report billing`.

pub mod bench;
pub mod billing;
pub mod demo;
pub mod dlq;
pub mod doctor;
pub mod enqueue;
pub mod http;
pub mod loadgen;
pub mod status;
