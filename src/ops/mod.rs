//! Operations: the health/readiness/metrics endpoint, `kycq enqueue`, and `kycq demo`.

pub mod demo;
pub mod enqueue;
pub mod http;
