//! Metric names, label names and descriptions, for the three naming schemes.
//!
//! By default the names and labels are go-grpc-prometheus' (and go-grpc-middleware's), so
//! dashboards and alerts written for Go services work unchanged. [`Naming::OpenTelemetry`]
//! records the OpenTelemetry RPC semantic conventions instead, and [`Naming::Grpc`] the
//! metrics gRPC's own OpenTelemetry plugins record (gRFC A66).
//!
//! # The schemes side by side
//!
//! | go-grpc-prometheus ([`Naming::GoGrpcPrometheus`], default) | OpenTelemetry ([`Naming::OpenTelemetry`]) | gRPC, gRFC A66 ([`Naming::Grpc`]) |
//! |---|---|---|
//! | `grpc_server_handling_seconds` histogram | `rpc.server.call.duration` histogram, rendered by Prometheus as `rpc_server_call_duration_seconds` | `grpc.server.call.duration` (`grpc_server_call_duration_seconds`) |
//! | `grpc_client_handling_seconds` histogram | `rpc.client.call.duration` (`rpc_client_call_duration_seconds`) | `grpc.client.attempt.duration` and `grpc.client.call.duration` (the same value: a tonic call is one attempt) |
//! | `grpc_server_handled_total` | the histogram's `_count`, by status code | the duration's `_count`, by status |
//! | `grpc_server_started_total` | not recorded (no in-flight count) | `grpc.server.call.started` (`grpc_server_call_started_total`), client `grpc.client.attempt.started` |
//! | `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` | not recorded | not recorded |
//! | `grpc_server_time_to_first_message_seconds` (streaming methods; on by default) | not recorded | not recorded |
//! | `grpc_server_msg_received_size_bytes`, `grpc_server_msg_sent_size_bytes` (per message; opt-in) | not recorded | `grpc.server.call.rcvd_total_compressed_message_size`, `grpc.server.call.sent_total_compressed_message_size` (per call totals; always), client `grpc.client.attempt.{sent,rcvd}_total_compressed_message_size` |
//! | (no label; the metric name says gRPC) | `rpc.system.name="grpc"` (`rpc_system_name`) | (none) |
//! | `grpc_service="pkg.Service"`, `grpc_method="Method"` | `rpc.method="pkg.Service/Method"` (`rpc_method`) | `grpc.method="pkg.Service/Method"` (`grpc_method`) |
//! | `grpc_service="unknown"`, `grpc_method="unknown"` | `rpc.method="_OTHER"` | `grpc.method="other"` |
//! | `grpc_type="unary"` | not recorded | not recorded |
//! | `grpc_code="DeadlineExceeded"` (handled counter; histogram opt-in) | `rpc.response.status_code="DEADLINE_EXCEEDED"` (always on the histogram) | `grpc.status="DEADLINE_EXCEEDED"` (on every histogram, not on the started counter) |
//! | (no target) | (no target) | client: `grpc.target="dns:///host:port"` |
//! | series of registered methods created at zero up front | the same | no series before the first call, as the official plugins |
//! | buckets [`DEFAULT_BUCKETS`], [`FIRST_MESSAGE_BUCKETS`], [`SIZE_BUCKETS`] | buckets [`OTEL_BUCKETS`] (the conventions' advice) | buckets [`A66_LATENCY_BUCKETS`], [`A66_SIZE_BUCKETS`] |
//!
//! The OpenTelemetry and gRPC names are the metric and label names the `metrics` facade
//! sees: an OpenTelemetry bridge exports them as they are. This crate's exporter turns dots
//! into underscores and adds the unit suffix (`_seconds`, `_bytes`) and `_total`, as
//! OpenTelemetry's Prometheus translation does.
//!
//! # Time to first message
//!
//! For the time a user of a streaming method waits, `grpc_server_handling_seconds` is the
//! wrong measure: it is the length of the whole stream. `grpc_server_time_to_first_message_seconds`
//! (and its client twin) is a histogram of the time from the start of the call (the layer's
//! `call()`) to its first response message: on a server, when the response body hands the
//! first complete message to the transport; on a client, when the first complete response
//! message arrives. Its labels are `grpc_type`, `grpc_service` and `grpc_method`.
//!
//! - Only methods the [`MethodRegistry`](crate::MethodRegistry) names as server-streaming or
//!   bidi-streaming are observed. Unary and client-streaming methods have one response, whose
//!   time is the handling time; methods of unknown type (no registry, or not in it) are not
//!   observed either.
//! - A call that ends before its first response message (an error, a cancel, an empty
//!   stream) is not observed. For each observed method, the histogram's `_count` plus the
//!   calls that ended without a message equals `grpc_server_handled_total`.
//! - Buckets: [`FIRST_MESSAGE_BUCKETS`], 1 ms to 80 s, for token streams that can take
//!   long to start (change them with the exporter's bucket options).
//! - On by default under go-grpc-prometheus naming; turn it off with
//!   [`without_time_to_first_message`](crate::GrpcMetricsLayer::without_time_to_first_message).
//!   Not recorded under the other schemes: neither OpenTelemetry's RPC conventions nor
//!   gRPC's own metrics define it, and those schemes record exactly what their spec does.
//!
//! # Message sizes
//!
//! With [`with_message_sizes`](crate::GrpcMetricsLayer::with_message_sizes) (go-grpc-prometheus
//! naming), `grpc_server_msg_received_size_bytes` and `grpc_server_msg_sent_size_bytes` (and
//! the client twins) are histograms of the size of each message, in bytes, per method and
//! direction, read from the 5-byte gRPC frame prefix: the message as sent on the wire,
//! without the prefix. A compressed message counts its compressed size. Buckets:
//! [`SIZE_BUCKETS`] (powers of 4 from 64 B to 16 MiB).
//!
//! # gRPC's own metrics (gRFC A66)
//!
//! [`Naming::Grpc`] records what gRPC's official OpenTelemetry plugins record (grpc-go
//! `stats/opentelemetry`, grpc-java, C++, Python's `grpcio-observability`), so that once
//! rendered, series names, label names and label values equal theirs for the same traffic:
//!
//! - Server: `grpc.server.call.started` (counter; `grpc.method`), `grpc.server.call.duration`
//!   (histogram, seconds), `grpc.server.call.sent_total_compressed_message_size` and
//!   `grpc.server.call.rcvd_total_compressed_message_size` (histograms, bytes; the sum of
//!   the call's message lengths without the 5-byte prefix, compressed when compressed,
//!   recorded once at the end of the call); all histograms with `grpc.method` and
//!   `grpc.status`.
//! - Client: `grpc.client.attempt.started` (`grpc.method`, `grpc.target`),
//!   `grpc.client.attempt.duration`, `grpc.client.attempt.sent_total_compressed_message_size`,
//!   `grpc.client.attempt.rcvd_total_compressed_message_size` and `grpc.client.call.duration`
//!   (`grpc.method`, `grpc.target`, `grpc.status`). A call through a tonic `Channel` is one
//!   attempt (tonic does not retry), so the call duration equals the attempt duration.
//!   grpc-go records `grpc.client.call.duration`; grpc-python 1.85 does not.
//! - `grpc.method` is `pkg.Service/Method` for a registered method (without a registry: for
//!   methods seen in traffic, up to the cap) and `other` for anything else.
//! - `grpc.status` is the canonical code name: `OK`, `CANCELLED`, `NOT_FOUND`,
//!   `DEADLINE_EXCEEDED`, ... ([`GrpcCode::as_canonical_str`](crate::GrpcCode::as_canonical_str)).
//! - `grpc.target` is the client's target: what
//!   [`with_target`](crate::GrpcMetricsLayer::with_target) gives, or else `dns:///{authority}`
//!   from the first request's URI (A66's canonical form of a target without a scheme, which
//!   grpc-go records; grpc-python records the target string as the user wrote it). Requests
//!   of generated clients built with `new(channel)` carry no authority (the `Channel` adds it
//!   below the layer): without `with_target` (or a client made `with_origin`), the target is
//!   `unknown`.
//! - No series exist before the first call (the official plugins create none), and none of
//!   go-grpc-prometheus' counters, time to first message or per-message sizes are recorded.
//! - Buckets: [`A66_LATENCY_BUCKETS`] and [`A66_SIZE_BUCKETS`], A66's recommended boundaries
//!   (grpc-go passes them as bucket advice; grpc-python leaves OpenTelemetry's defaults).
//! - Checked side by side against grpc-python 1.85 (`grpcio-observability` with
//!   OpenTelemetry's Prometheus exporter and A66's buckets), each side with the same peer
//!   and traffic mix (registered and unregistered methods, error statuses, all four RPC
//!   kinds, a deadline), once rendered with OpenTelemetry's naming and the `otel_scope_*`
//!   labels and the target set aside: every family, type, HELP text, label name, label value,
//!   count, sum and bucket is equal, but for these differences, on purpose:
//!   - a server call cut off by its deadline is `DEADLINE_EXCEEDED`, as the client sees it;
//!     grpc-python's server records it as `OK`;
//!   - `grpc.client.call.duration` is recorded, as grpc-go does; grpc-python 1.85 has it
//!     disabled;
//!   - the default target is canonical (`dns:///host:port`), as A66 asks and grpc-go does;
//!     grpc-python records the target string as given;
//!   - a client call on a registered method's path made without a generated stub (a raw
//!     `tonic::client::Grpc` call) is named; grpc-python names only stub methods.
//! - Per-call byte totals are shared between the request body and the call: under this
//!   scheme only, each call makes one small heap allocation (an `Arc<AtomicU64>`).

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

/// `grpc_server_time_to_first_message_seconds`: histogram of the time from the start of a
/// server-streaming or bidi call to the first response message the server sends.
pub const SERVER_TIME_TO_FIRST_MESSAGE: &str = "grpc_server_time_to_first_message_seconds";
/// `grpc_client_time_to_first_message_seconds`: histogram of the time from the start of a
/// server-streaming or bidi call to the first response message the client receives.
pub const CLIENT_TIME_TO_FIRST_MESSAGE: &str = "grpc_client_time_to_first_message_seconds";
/// `grpc_server_msg_received_size_bytes`: histogram of the size of each message the server
/// receives (opt-in).
pub const SERVER_MSG_RECEIVED_SIZE: &str = "grpc_server_msg_received_size_bytes";
/// `grpc_server_msg_sent_size_bytes`: histogram of the size of each message the server sends
/// (opt-in).
pub const SERVER_MSG_SENT_SIZE: &str = "grpc_server_msg_sent_size_bytes";
/// `grpc_client_msg_received_size_bytes`: histogram of the size of each message the client
/// receives (opt-in).
pub const CLIENT_MSG_RECEIVED_SIZE: &str = "grpc_client_msg_received_size_bytes";
/// `grpc_client_msg_sent_size_bytes`: histogram of the size of each message the client sends
/// (opt-in).
pub const CLIENT_MSG_SENT_SIZE: &str = "grpc_client_msg_sent_size_bytes";

/// `grpc.server.call.started` (gRFC A66): calls started on the server.
pub const GRPC_SERVER_CALL_STARTED: &str = "grpc.server.call.started";
/// `grpc.server.call.duration` (gRFC A66): histogram of server call durations, in seconds.
pub const GRPC_SERVER_CALL_DURATION: &str = "grpc.server.call.duration";
/// `grpc.server.call.sent_total_compressed_message_size` (gRFC A66): histogram of the message
/// bytes each server call sent.
pub const GRPC_SERVER_CALL_SENT_BYTES: &str = "grpc.server.call.sent_total_compressed_message_size";
/// `grpc.server.call.rcvd_total_compressed_message_size` (gRFC A66): histogram of the message
/// bytes each server call received.
pub const GRPC_SERVER_CALL_RCVD_BYTES: &str = "grpc.server.call.rcvd_total_compressed_message_size";
/// `grpc.client.attempt.started` (gRFC A66): call attempts started by the client.
pub const GRPC_CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
/// `grpc.client.attempt.duration` (gRFC A66): histogram of client attempt durations, in seconds.
pub const GRPC_CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
/// `grpc.client.attempt.sent_total_compressed_message_size` (gRFC A66): histogram of the
/// message bytes each client attempt sent.
pub const GRPC_CLIENT_ATTEMPT_SENT_BYTES: &str = "grpc.client.attempt.sent_total_compressed_message_size";
/// `grpc.client.attempt.rcvd_total_compressed_message_size` (gRFC A66): histogram of the
/// message bytes each client attempt received.
pub const GRPC_CLIENT_ATTEMPT_RCVD_BYTES: &str = "grpc.client.attempt.rcvd_total_compressed_message_size";
/// `grpc.client.call.duration` (gRFC A66): histogram of client call durations, in seconds.
pub const GRPC_CLIENT_CALL_DURATION: &str = "grpc.client.call.duration";
/// gRPC (A66) attribute: the fully-qualified method, `pkg.Service/Method`, or `other`.
pub const GRPC_ATTR_METHOD: &str = "grpc.method";
/// gRPC (A66) attribute: the status code name, e.g. `OK`, `DEADLINE_EXCEEDED`.
pub const GRPC_ATTR_STATUS: &str = "grpc.status";
/// gRPC (A66) attribute: the client's canonical target, e.g. `dns:///example.com:443`.
pub const GRPC_ATTR_TARGET: &str = "grpc.target";
/// gRPC's (A66) `grpc.method` value for methods the layer will not name.
pub const GRPC_OTHER_METHOD: &str = "other";

/// The label value used for any method the layer will not name (unregistered, malformed,
/// or past the cardinality cap).
pub const UNKNOWN: &str = "unknown";

/// Default histogram buckets in seconds: Prometheus' client defaults, as go-grpc-prometheus uses.
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// OpenTelemetry's bucket advice for RPC durations in seconds.
pub const OTEL_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Default buckets in seconds for the time to first message: 1 ms to 80 s, for streams
/// (LLM token streams among them) whose first message can take from milliseconds to a
/// minute. LLM servers measure their time to first token over about the same range.
pub const FIRST_MESSAGE_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];

/// Default buckets in bytes for message sizes: powers of 4 from 64 B to 16 MiB (gRPC's
/// default maximum message is 4 MiB).
pub const SIZE_BUCKETS: &[f64] =
    &[64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0, 4_194_304.0, 16_777_216.0];

/// gRFC A66's recommended bucket boundaries for latencies, in seconds (grpc-go's advice).
pub const A66_LATENCY_BUCKETS: &[f64] = &[
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8,
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// gRFC A66's recommended bucket boundaries for message sizes, in bytes (0 to 4 GiB).
pub const A66_SIZE_BUCKETS: &[f64] = &[
    0.0,
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

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
    /// gRPC's own metrics (gRFC A66), as its official OpenTelemetry plugins record them:
    /// `grpc.server.call.started`, `grpc.server.call.duration` and the per-call message
    /// byte totals, with `grpc.method` and `grpc.status` (client: `grpc.client.attempt.*`
    /// and `grpc.client.call.duration`, with `grpc.target`). See the [module docs](self).
    Grpc,
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
    pub(crate) first_message: &'static str,
    pub(crate) msg_received_size: &'static str,
    pub(crate) msg_sent_size: &'static str,
    /// gRPC (A66): the per-call totals of message bytes received and sent.
    pub(crate) call_rcvd_bytes: &'static str,
    pub(crate) call_sent_bytes: &'static str,
    /// gRPC (A66), client: the call duration besides the attempt's.
    pub(crate) call_duration: Option<&'static str>,
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
    first_message: SERVER_TIME_TO_FIRST_MESSAGE,
    msg_received_size: SERVER_MSG_RECEIVED_SIZE,
    msg_sent_size: SERVER_MSG_SENT_SIZE,
    call_rcvd_bytes: GRPC_SERVER_CALL_RCVD_BYTES,
    call_sent_bytes: GRPC_SERVER_CALL_SENT_BYTES,
    call_duration: None,
    receives_requests: true,
    naming: Naming::GoGrpcPrometheus,
};

pub(crate) static CLIENT: MetricNames = MetricNames {
    started: CLIENT_STARTED,
    handled: CLIENT_HANDLED,
    msg_received: CLIENT_MSG_RECEIVED,
    msg_sent: CLIENT_MSG_SENT,
    handling_seconds: CLIENT_HANDLING_SECONDS,
    first_message: CLIENT_TIME_TO_FIRST_MESSAGE,
    msg_received_size: CLIENT_MSG_RECEIVED_SIZE,
    msg_sent_size: CLIENT_MSG_SENT_SIZE,
    call_rcvd_bytes: GRPC_CLIENT_ATTEMPT_RCVD_BYTES,
    call_sent_bytes: GRPC_CLIENT_ATTEMPT_SENT_BYTES,
    call_duration: None,
    receives_requests: false,
    naming: Naming::GoGrpcPrometheus,
};

// Only the histogram is recorded under OpenTelemetry naming; the counters' names are never used.
pub(crate) static SERVER_OTEL: MetricNames =
    MetricNames { handling_seconds: OTEL_SERVER_CALL_DURATION, naming: Naming::OpenTelemetry, ..SERVER };

pub(crate) static CLIENT_OTEL: MetricNames =
    MetricNames { handling_seconds: OTEL_CLIENT_CALL_DURATION, naming: Naming::OpenTelemetry, ..CLIENT };

// gRPC (A66): the started counter, the duration and the byte totals.
pub(crate) static SERVER_GRPC: MetricNames = MetricNames {
    started: GRPC_SERVER_CALL_STARTED,
    handling_seconds: GRPC_SERVER_CALL_DURATION,
    naming: Naming::Grpc,
    ..SERVER
};

pub(crate) static CLIENT_GRPC: MetricNames = MetricNames {
    started: GRPC_CLIENT_ATTEMPT_STARTED,
    handling_seconds: GRPC_CLIENT_ATTEMPT_DURATION,
    call_duration: Some(GRPC_CLIENT_CALL_DURATION),
    naming: Naming::Grpc,
    ..CLIENT
};

impl MetricNames {
    /// The names of one side under one naming scheme.
    pub(crate) fn of(server: bool, naming: Naming) -> &'static Self {
        match (server, naming) {
            (true, Naming::GoGrpcPrometheus) => &SERVER,
            (false, Naming::GoGrpcPrometheus) => &CLIENT,
            (true, Naming::OpenTelemetry) => &SERVER_OTEL,
            (false, Naming::OpenTelemetry) => &CLIENT_OTEL,
            (true, Naming::Grpc) => &SERVER_GRPC,
            (false, Naming::Grpc) => &CLIENT_GRPC,
        }
    }
}

/// Adds HELP text for every metric this crate records (server and client, every naming
/// scheme) to `recorder`.
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
