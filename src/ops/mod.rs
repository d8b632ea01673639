//! Operations: the health/readiness/metrics endpoint, `kycq enqueue`, `kycq dlq`, `kycq demo` and
//! `kycq loadgen`.

pub mod demo;
pub mod dlq;
pub mod enqueue;
pub mod http;
pub mod loadgen;
