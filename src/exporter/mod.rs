//! One call to serve `/metrics` for Prometheus, on the gRPC port + 1 by default.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use tonic_metrics::PrometheusExporter;
//!
//! # #[tokio::main] async fn main() {
//! let grpc_addr: SocketAddr = "0.0.0.0:50051".parse().unwrap();
//! // Serves http://0.0.0.0:50052/metrics; on failure, logs a warning and returns None,
//! // and the gRPC server starts all the same.
//! let metrics = PrometheusExporter::for_grpc_addr(grpc_addr).install_or_warn();
//! # drop(metrics); }
//! ```
//!
//! Unlike `metrics-exporter-prometheus`' own `install()`, nothing is left behind when
//! starting fails: the listener is bound before the recorder is installed, and no task is
//! spawned until both have succeeded.

mod builder;
#[cfg(feature = "clap")]
mod clap;
mod listener;
mod respond;
mod server;

pub use builder::PrometheusExporter;
#[cfg(feature = "clap")]
pub use clap::MetricsArgs;
pub use server::MetricsServer;
