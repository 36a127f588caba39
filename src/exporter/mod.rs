//! One call to serve `/metrics` for Prometheus, next to the gRPC server.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use tonic_metrics::PrometheusExporter;
//!
//! # #[tokio::main] async fn main() {
//! let grpc_addr: SocketAddr = "0.0.0.0:50051".parse().unwrap();
//! // Serves http://0.0.0.0:50052/metrics (the gRPC port + 1); on failure, logs a warning
//! // and returns None, and the gRPC server starts all the same.
//! let metrics = PrometheusExporter::for_grpc_addr(grpc_addr).install_or_warn();
//! # drop(metrics); }
//! ```
//!
//! [`PrometheusExporter::for_grpc_addr`] listens on the gRPC port + 1;
//! [`PrometheusExporter::new`] on `0.0.0.0:9000`, as `metrics-exporter-prometheus` does.
//!
//! Unlike `metrics-exporter-prometheus`' own `install()`, nothing is left behind when
//! starting fails: the listener is bound before the recorder is installed, and no task is
//! spawned until both have succeeded.
//!
//! The listener speaks HTTP/1.1 and answers:
//!
//! - `GET /metrics` (and `HEAD`): everything the recorder holds, in the format the `Accept`
//!   header asks for ([`Format`]: the text format, OpenMetrics or protobuf), gzipped when
//!   `Accept-Encoding` allows; `?format=text|openmetrics|protobuf` overrides the header;
//! - `GET /health` and `/healthz`: `OK`;
//! - `GET /`: what it is, and the program and process id serving it (another process of
//!   the same program that finds the port taken reads it, to say so in its error);
//! - 404 for other paths, 405 for other methods, 403 outside the allowlist.
//!
//! A connection that sends no request within 10 s is closed, and at most 64 are served at
//! once.

mod builder;
#[cfg(feature = "clap")]
mod clap;
mod listener;
mod recorder;
mod render;
mod respond;
mod server;
mod sibling;

pub use crate::exposition::Format;
pub use builder::{DEFAULT_NATIVE_SCHEMA, PrometheusExporter};
pub use recorder::{MetricsHandle, MetricsRecorder};
/// This process' program name (its executable's file name), which names its multi-process
/// group and identifies it to a sibling that finds the metrics port taken.
pub(crate) fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tonic-metrics".to_owned())
}
#[cfg(feature = "clap")]
pub use clap::MetricsArgs;
pub use server::MetricsServer;
