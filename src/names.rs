//! Metric names, label names and descriptions.
//!
//! The names and labels are go-grpc-prometheus' (and go-grpc-middleware's), so dashboards
//! and alerts written for Go services work unchanged.

use metrics::{Recorder, SharedString, Unit};

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

/// The label value used for any method the layer will not name (unregistered, malformed,
/// or past the cardinality cap).
pub const UNKNOWN: &str = "unknown";

/// Default histogram buckets in seconds: Prometheus' client defaults, as go-grpc-prometheus uses.
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// OpenTelemetry's bucket advice for RPC durations in seconds.
pub const OTEL_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

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
    descriptions: [&'static str; 5],
}

pub(crate) static SERVER: MetricNames = MetricNames {
    started: SERVER_STARTED,
    handled: SERVER_HANDLED,
    msg_received: SERVER_MSG_RECEIVED,
    msg_sent: SERVER_MSG_SENT,
    handling_seconds: SERVER_HANDLING_SECONDS,
    receives_requests: true,
    descriptions: [
        "Total number of RPCs started on the server.",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        "Total number of RPC stream messages received on the server.",
        "Total number of gRPC stream messages sent by the server.",
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    ],
};

pub(crate) static CLIENT: MetricNames = MetricNames {
    started: CLIENT_STARTED,
    handled: CLIENT_HANDLED,
    msg_received: CLIENT_MSG_RECEIVED,
    msg_sent: CLIENT_MSG_SENT,
    handling_seconds: CLIENT_HANDLING_SECONDS,
    receives_requests: false,
    descriptions: [
        "Total number of RPCs started on the client.",
        "Total number of RPCs completed by the client, regardless of success or failure.",
        "Total number of RPC stream messages received by the client.",
        "Total number of gRPC stream messages sent by the client.",
        "Histogram of response latency (seconds) of the gRPC until it is finished by the application.",
    ],
};

impl MetricNames {
    /// Adds HELP text (and the unit of the histogram) for every metric of this side.
    pub(crate) fn describe(&self, recorder: &dyn Recorder) {
        let [started, handled, received, sent, seconds] = self.descriptions;
        let counters =
            [(self.started, started), (self.handled, handled), (self.msg_received, received), (self.msg_sent, sent)];
        for (name, help) in counters {
            recorder.describe_counter(name.into(), Some(Unit::Count), SharedString::const_str(help));
        }
        recorder.describe_histogram(
            self.handling_seconds.into(),
            Some(Unit::Seconds),
            SharedString::const_str(seconds),
        );
    }

    /// The histogram names of both sides, for exporters that must set their buckets.
    #[cfg(feature = "exporter")]
    pub(crate) fn histogram_names() -> [&'static str; 2] {
        [SERVER.handling_seconds, CLIENT.handling_seconds]
    }
}

/// Adds HELP text for every metric this crate records (server and client) to `recorder`.
///
/// The exporter in this crate calls it for you; call it yourself when you install a
/// recorder of your own.
pub fn describe_all(recorder: &dyn Recorder) {
    SERVER.describe(recorder);
    CLIENT.describe(recorder);
}
