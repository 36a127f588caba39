//! Prometheus metrics for tonic gRPC servers and clients: one tower [`Layer`](tower_layer::Layer)
//! records the go-grpc-prometheus metric family through the [`metrics`] facade, and one call
//! serves `/metrics`.
//!
//! ```
//! use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
//! use tonic_metrics::{MethodRegistry, PrometheusExporter, ServerMetricsLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One call serves /metrics; a real server uses `PrometheusExporter::for_grpc_addr(addr)`
//! // (the gRPC port + 1) and `install_or_warn()`, so metrics trouble never stops gRPC.
//! let metrics = PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse()?).install()?;
//!
//! // One layer on the server. The registry gives every method its `grpc_type` and
//! // creates its series at zero before the first call.
//! let registry = MethodRegistry::from_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
//! let (_, health) = tonic_health::server::health_reporter();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .layer(ServerMetricsLayer::new().with_registry(registry))
//!         .add_service(health)
//!         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
//! );
//!
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
//! let mut client = HealthClient::new(channel);
//! client.check(HealthCheckRequest { service: String::new() }).await?;
//!
//! let text = metrics.render(); // what `curl http://<metrics addr>/metrics` returns
//! assert!(text.contains(
//!     r#"grpc_server_handled_total{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"} 1"#
//! ));
//! assert!(text.contains("grpc_server_handling_seconds_bucket{")); // a real histogram
//! # Ok(()) }
//! ```
//!
//! # What is recorded
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `grpc_server_started_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_handled_total` | counter | the same + `grpc_code` |
//! | `grpc_server_msg_received_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_msg_sent_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_handling_seconds` | histogram | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_time_to_first_message_seconds` | histogram (server-streaming and bidi methods) | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_msg_received_size_bytes`, `grpc_server_msg_sent_size_bytes` | histograms (opt-in: `with_message_sizes`) | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_client_*` | the same, from [`ClientMetricsLayer`] | |
//!
//! The status comes from `grpc-status` in the headers (trailers-only responses) or the
//! trailers; latency runs from `call()` to the end of the response stream; a call dropped
//! before its end is `Canceled`, one that ends or is dropped at or after its request's
//! deadline `DeadlineExceeded`; every started RPC is handled exactly once; messages are
//! counted from the gRPC framing. With a registry, every method's series exist from the
//! start at zero, `handled_total` for all 17 codes, as go-grpc-prometheus creates them.
//! See [`GrpcMetricsLayer`] for the options, [`exemplar`] for exemplars, the `exporter`
//! module for serving `/metrics` (every format Prometheus speaks) and `multiprocess` for
//! several processes behind one `/metrics` (feature `exporter`).
//!
//! `with_naming(Naming::OpenTelemetry)` records the OpenTelemetry RPC conventions'
//! `rpc.server.call.duration` / `rpc.client.call.duration` instead, and
//! `with_naming(Naming::Grpc)` the metrics of gRPC's official OpenTelemetry plugins (gRFC
//! A66: `grpc.server.call.*`, `grpc.client.attempt.*`); [`names`] maps the schemes onto
//! each other and documents the time to first message and message sizes.
//!
//! # Features
//!
//! - `exporter` (default): `PrometheusExporter`, the `/metrics` listener, and
//!   `multiprocess`.
//! - `clap`: `exporter::MetricsArgs`, the `--enable-metrics` / `--metrics-http-port` flags.
//! - `push-gateway`: `push::PushGateway`, pushing to a Prometheus Pushgateway (plain HTTP,
//!   no TLS stack) for batch jobs.
//!
//! Without default features the crate is the layers alone, recording into whatever
//! `metrics` recorder is installed.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![forbid(unsafe_code)]

mod body;
mod call;
mod client;
pub mod code;
mod deadline;
mod error;
pub mod exemplar;
#[cfg(feature = "exporter")]
pub mod exporter;
#[cfg(feature = "exporter")]
#[cfg_attr(docsrs, doc(cfg(feature = "exporter")))]
pub mod exposition;
mod frame;
mod future;
mod instruments;
mod layer;
#[cfg(feature = "exporter")]
pub mod multiprocess;
pub mod names;
#[cfg(feature = "push-gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "push-gateway")))]
pub mod push;
mod registry;
mod server;
pub mod side;
#[cfg(feature = "exporter")]
mod store;

pub use body::{RequestBody, ResponseBody};
pub use code::GrpcCode;
pub use error::Error;
#[cfg(feature = "exporter")]
pub use exporter::{MetricsServer, PrometheusExporter};
pub use frame::FrameCounter;
pub use future::{BoxErrorFuture, ResponseFuture};
pub use instruments::DEFAULT_MAX_METHODS;
pub use layer::{GrpcMetrics, GrpcMetricsLayer};
pub use names::Naming;
#[cfg(feature = "push-gateway")]
pub use push::{MetricsPusher, PushGateway};
pub use registry::{GrpcType, MethodRegistry};

/// Internals exposed for the fuzz targets in `fuzz/` and the property tests in
/// `tests/parsers.rs`. Not part of the public API: no semver guarantees.
#[doc(hidden)]
pub mod __fuzz {
    /// Splits `/package.Service/Method` into its names as the layer does (`None`: the path
    /// is recorded as `unknown`).
    pub fn split_path(path: &str) -> Option<(&str, &str)> {
        crate::instruments::split_path(path)
    }

    /// The longest path recorded under its own name.
    pub const MAX_PATH_LEN: usize = crate::instruments::MAX_PATH_LEN;

    /// The trace id of a W3C `traceparent` value, as the exemplar extractor reads it.
    pub fn parse_traceparent(value: &[u8]) -> Option<[u8; 16]> {
        crate::exemplar::parse_traceparent(value)
    }

    /// The timeout of a `grpc-timeout` value, as the layer reads a request's deadline.
    pub fn parse_grpc_timeout(value: &[u8]) -> Option<std::time::Duration> {
        crate::deadline::parse_grpc_timeout(value)
    }
}

/// The layer for tonic servers: records `grpc_server_*`.
pub type ServerMetricsLayer = GrpcMetricsLayer<side::Server>;
/// The layer for tonic clients (`Channel`): records `grpc_client_*`.
pub type ClientMetricsLayer = GrpcMetricsLayer<side::Client>;
/// The service [`ServerMetricsLayer`] wraps around a server (`S`: tonic's router).
pub type ServerMetrics<S> = GrpcMetrics<S, side::Server>;
/// The service [`ClientMetricsLayer`] wraps around a client (`S`: a `Channel`).
pub type ClientMetrics<S> = GrpcMetrics<S, side::Client>;

/// A boxed error, as tonic and tower use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
