//! Metric names, label names and descriptions, for both naming schemes.
//!
//! By default the names and labels are go-grpc-prometheus' (and go-grpc-middleware's), so
//! dashboards and alerts written for Go services work unchanged. [`Naming::OpenTelemetry`]
//! records the OpenTelemetry RPC semantic conventions instead.
//!
//! # The two schemes side by side
//!
//! | go-grpc-prometheus ([`Naming::GoGrpcPrometheus`], default) | OpenTelemetry ([`Naming::OpenTelemetry`]) |
//! |---|---|
//! | `grpc_server_handling_seconds` histogram | `rpc.server.call.duration` histogram, rendered by Prometheus as `rpc_server_call_duration_seconds` |
//! | `grpc_client_handling_seconds` histogram | `rpc.client.call.duration` (`rpc_client_call_duration_seconds`) |
//! | `grpc_server_handled_total` | the histogram's `_count`, by status code |
//! | `grpc_server_started_total` | not recorded (no in-flight count) |
//! | `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` | not recorded |
//! | (no label; the metric name says gRPC) | `rpc.system.name="grpc"` (`rpc_system_name`) |
//! | `grpc_service="pkg.Service"`, `grpc_method="Method"` | `rpc.method="pkg.Service/Method"` (`rpc_method`) |
//! | `grpc_service="unknown"`, `grpc_method="unknown"` | `rpc.method="_OTHER"` |
//! | `grpc_type="unary"` | not recorded |
//! | `grpc_code="DeadlineExceeded"` (handled counter; histogram opt-in) | `rpc.response.status_code="DEADLINE_EXCEEDED"` (always on the histogram) |
//! | buckets [`DEFAULT_BUCKETS`] | buckets [`OTEL_BUCKETS`] (the conventions' advice) |
//!
//! The OpenTelemetry names are the metric names the `metrics` facade sees: an OpenTelemetry
//! bridge exports them as they are. This crate's exporter turns dots into underscores and
//! adds the `_seconds` unit suffix, as OpenTelemetry's Prometheus translation does.

pub(crate) mod catalogue;

use metrics::{Recorder, SharedString};

/// `grpc_server_started_total`: RPCs started on the server.
pub const SERVER_STARTED: &str = "grpc_server_started_total";
/// `grpc_server_handled_total`: RPCs completed on the server, by `grpc_code`.
pub const SERVER_HANDLED: &str = "grpc_server_handled_total";
/// `grpc_server_msg_received_total`: stream messages received by the server.
pub const SERVER_MSG_RECEIVED: &str = "grpc_server_msg_received_total";
/// `grpc_server_msg_sent_total`: stream messages sent by the server.
pub const SERVER_MSG_SENT: &str = "grpc_server_msg_sent_total";
/// `grpc_server_handling_seconds`: histogram of RPC handling time on the server.
pub const SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// `grpc_client_started_total`: RPCs started by the client.
pub const CLIENT_STARTED: &str = "grpc_client_started_total";
/// `grpc_client_handled_total`: RPCs completed by the client, by `grpc_code`.
pub const CLIENT_HANDLED: &str = "grpc_client_handled_total";
/// `grpc_client_msg_received_total`: stream messages received by the client.
pub const CLIENT_MSG_RECEIVED: &str = "grpc_client_msg_received_total";
/// `grpc_client_msg_sent_total`: stream messages sent by the client.
pub const CLIENT_MSG_SENT: &str = "grpc_client_msg_sent_total";
/// `grpc_client_handling_seconds`: histogram of RPC latency seen by the client.
pub const CLIENT_HANDLING_SECONDS: &str = "grpc_client_handling_seconds";

/// Label: `unary`, `client_stream`, `server_stream`, `bidi_stream` or `unknown`.
pub const LABEL_TYPE: &str = "grpc_type";
/// Label: the full service name, e.g. `grpc.examples.echo.Echo`.
pub const LABEL_SERVICE: &str = "grpc_service";
/// Label: the bare method name, e.g. `UnaryEcho`.
pub const LABEL_METHOD: &str = "grpc_method";
/// Label: the status code in Go's spelling, e.g. `OK`, `Canceled`.
pub const LABEL_CODE: &str = "grpc_code";

/// `rpc.server.call.duration`: OpenTelemetry's server RPC duration histogram, in seconds.
pub const OTEL_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
/// `rpc.client.call.duration`: OpenTelemetry's client RPC duration histogram, in seconds.
pub const OTEL_CLIENT_CALL_DURATION: &str = "rpc.client.call.duration";
/// OpenTelemetry attribute: the RPC system, always `grpc` here.
pub const OTEL_ATTR_SYSTEM_NAME: &str = "rpc.system.name";
/// OpenTelemetry attribute: the fully-qualified method, `pkg.Service/Method`.
pub const OTEL_ATTR_METHOD: &str = "rpc.method";
/// OpenTelemetry attribute: the status code name, e.g. `OK`, `DEADLINE_EXCEEDED`.
pub const OTEL_ATTR_STATUS_CODE: &str = "rpc.response.status_code";
/// OpenTelemetry's `rpc.method` value for methods the layer will not name.
pub const OTEL_OTHER_METHOD: &str = "_OTHER";

/// The label value used for any method the layer will not name (unregistered, malformed,
/// or past the cardinality cap).
pub const UNKNOWN: &str = "unknown";

/// Default histogram buckets in seconds: Prometheus' client defaults, as go-grpc-prometheus uses.
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// OpenTelemetry's bucket advice for RPC durations in seconds.
pub const OTEL_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Which metric names and labels a layer records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Naming {
    /// go-grpc-prometheus: `grpc_server_handled_total{grpc_code}`,
    /// `grpc_server_handling_seconds` and the rest of the family (the default).
    #[default]
    GoGrpcPrometheus,
    /// OpenTelemetry RPC semantic conventions: one `rpc.server.call.duration` (or
    /// `rpc.client.call.duration`) histogram with `rpc.system.name`, `rpc.method` and
    /// `rpc.response.status_code`.
    OpenTelemetry,
}

/// The names one side of the RPC records under (internal).
#[doc(hidden)]
#[derive(Debug)]
pub struct MetricNames {
    pub(crate) started: &'static str,
    pub(crate) handled: &'static str,
    pub(crate) msg_received: &'static str,
    pub(crate) msg_sent: &'static str,
    pub(crate) handling_seconds: &'static str,
    /// Whether this side receives the request body (server) or sends it (client).
    pub(crate) receives_requests: bool,
    pub(crate) naming: Naming,
}

pub(crate) static SERVER: MetricNames = MetricNames {
    started: SERVER_STARTED,
    handled: SERVER_HANDLED,
    msg_received: SERVER_MSG_RECEIVED,
    msg_sent: SERVER_MSG_SENT,
    handling_seconds: SERVER_HANDLING_SECONDS,
    receives_requests: true,
    naming: Naming::GoGrpcPrometheus,
};

pub(crate) static CLIENT: MetricNames = MetricNames {
    started: CLIENT_STARTED,
    handled: CLIENT_HANDLED,
    msg_received: CLIENT_MSG_RECEIVED,
    msg_sent: CLIENT_MSG_SENT,
    handling_seconds: CLIENT_HANDLING_SECONDS,
    receives_requests: false,
    naming: Naming::GoGrpcPrometheus,
};

// Only the histogram is recorded under OpenTelemetry naming; the counters' names are never used.
pub(crate) static SERVER_OTEL: MetricNames =
    MetricNames { handling_seconds: OTEL_SERVER_CALL_DURATION, naming: Naming::OpenTelemetry, ..SERVER };

pub(crate) static CLIENT_OTEL: MetricNames =
    MetricNames { handling_seconds: OTEL_CLIENT_CALL_DURATION, naming: Naming::OpenTelemetry, ..CLIENT };

impl MetricNames {
    /// The names of one side under one naming scheme.
    pub(crate) fn of(server: bool, naming: Naming) -> &'static Self {
        match (server, naming) {
            (true, Naming::GoGrpcPrometheus) => &SERVER,
            (false, Naming::GoGrpcPrometheus) => &CLIENT,
            (true, Naming::OpenTelemetry) => &SERVER_OTEL,
            (false, Naming::OpenTelemetry) => &CLIENT_OTEL,
        }
    }
}

/// Adds HELP text for every metric this crate records (server and client, both naming
/// schemes) to `recorder`.
///
/// The exporter in this crate calls it for you; call it yourself when you install a
/// recorder of your own. Descriptions of metrics that are never recorded do not show.
pub fn describe_all(recorder: &dyn Recorder) {
    for family in catalogue::FAMILIES {
        let help = SharedString::const_str(family.help);
        let unit = family.unit.map(|unit| unit.facade());
        match family.kind {
            catalogue::FamilyKind::Counter => recorder.describe_counter(family.name.into(), unit, help),
            catalogue::FamilyKind::Histogram => recorder.describe_histogram(family.name.into(), unit, help),
        }
    }
}
