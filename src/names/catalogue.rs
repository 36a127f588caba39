//! Everything known of each metric this crate records, in one table: the name the layer
//! records under, the name Prometheus sees, the type, the unit, the HELP text and the
//! default buckets. The exporter stores and renders these families itself; anything else
//! recorded through `metrics` is the application's.
// Without the exporter, only the names, HELP texts and units are read (by `describe_all`).
#![cfg_attr(not(feature = "exporter"), allow(dead_code))]

use metrics::Unit;

use super::{
    A66_LATENCY_BUCKETS, A66_SIZE_BUCKETS, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS, CLIENT_MSG_RECEIVED,
    CLIENT_MSG_RECEIVED_SIZE, CLIENT_MSG_SENT, CLIENT_MSG_SENT_SIZE, CLIENT_STARTED, CLIENT_TIME_TO_FIRST_MESSAGE,
    DEFAULT_BUCKETS, FIRST_MESSAGE_BUCKETS, GRPC_CLIENT_ATTEMPT_DURATION, GRPC_CLIENT_ATTEMPT_RCVD_BYTES,
    GRPC_CLIENT_ATTEMPT_SENT_BYTES, GRPC_CLIENT_ATTEMPT_STARTED, GRPC_CLIENT_CALL_DURATION, GRPC_SERVER_CALL_DURATION,
    GRPC_SERVER_CALL_RCVD_BYTES, GRPC_SERVER_CALL_SENT_BYTES, GRPC_SERVER_CALL_STARTED, OTEL_BUCKETS,
    OTEL_CLIENT_CALL_DURATION, OTEL_SERVER_CALL_DURATION, SERVER_HANDLED, SERVER_HANDLING_SECONDS, SERVER_MSG_RECEIVED,
    SERVER_MSG_RECEIVED_SIZE, SERVER_MSG_SENT, SERVER_MSG_SENT_SIZE, SERVER_STARTED, SERVER_TIME_TO_FIRST_MESSAGE,
    SIZE_BUCKETS,
};

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FamilyKind {
    Counter,
    Histogram,
}

/// A family's unit, as OpenMetrics' `# UNIT` and the `metrics` facade spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FamilyUnit {
    Seconds,
    Bytes,
}

impl FamilyUnit {
    /// The OpenMetrics unit (also the suffix of the exposed name).
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Bytes => "bytes",
        }
    }

    /// The unit as the `metrics` facade's `describe_*` takes it.
    pub(crate) const fn facade(self) -> Unit {
        match self {
            Self::Seconds => Unit::Seconds,
            Self::Bytes => Unit::Bytes,
        }
    }
}

/// What a histogram measures, which decides the exporter option that sets its buckets and
/// whether it can be a native histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Measure {
    /// Counters.
    Count,
    /// A call's handling time or duration: `with_buckets`; native with `with_native_histograms`.
    Latency,
    /// Time to the first response message: `with_first_message_buckets`; native too.
    FirstMessage,
    /// Message sizes in bytes: `with_size_buckets`.
    Size,
}

/// One metric family this crate records.
#[derive(Debug)]
pub(crate) struct FamilyInfo {
    /// The name the layer records under (the `metrics` key name).
    pub name: &'static str,
    /// The name in the exposition (what Prometheus stores).
    pub exposition: &'static str,
    pub kind: FamilyKind,
    pub unit: Option<FamilyUnit>,
    pub help: &'static str,
    pub measure: Measure,
    /// Default bucket boundaries (histograms only).
    pub buckets: &'static [f64],
}

const fn counter(name: &'static str, help: &'static str) -> FamilyInfo {
    exposed_counter(name, name, help)
}

const fn exposed_counter(name: &'static str, exposition: &'static str, help: &'static str) -> FamilyInfo {
    FamilyInfo { name, exposition, kind: FamilyKind::Counter, unit: None, help, measure: Measure::Count, buckets: &[] }
}

const fn histogram(
    name: &'static str,
    exposition: &'static str,
    unit: FamilyUnit,
    measure: Measure,
    buckets: &'static [f64],
    help: &'static str,
) -> FamilyInfo {
    FamilyInfo { name, exposition, kind: FamilyKind::Histogram, unit: Some(unit), help, measure, buckets }
}

/// Every family, all naming schemes, both sides.
pub(crate) static FAMILIES: &[FamilyInfo] = &[
    // go-grpc-prometheus, with its HELP texts.
    counter(SERVER_STARTED, "Total number of RPCs started on the server."),
    counter(SERVER_HANDLED, "Total number of RPCs completed on the server, regardless of success or failure."),
    counter(SERVER_MSG_RECEIVED, "Total number of RPC stream messages received on the server."),
    counter(SERVER_MSG_SENT, "Total number of gRPC stream messages sent by the server."),
    histogram(
        SERVER_HANDLING_SECONDS,
        SERVER_HANDLING_SECONDS,
        FamilyUnit::Seconds,
        Measure::Latency,
        DEFAULT_BUCKETS,
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    ),
    counter(CLIENT_STARTED, "Total number of RPCs started on the client."),
    counter(CLIENT_HANDLED, "Total number of RPCs completed by the client, regardless of success or failure."),
    counter(CLIENT_MSG_RECEIVED, "Total number of RPC stream messages received by the client."),
    counter(CLIENT_MSG_SENT, "Total number of gRPC stream messages sent by the client."),
    histogram(
        CLIENT_HANDLING_SECONDS,
        CLIENT_HANDLING_SECONDS,
        FamilyUnit::Seconds,
        Measure::Latency,
        DEFAULT_BUCKETS,
        "Histogram of response latency (seconds) of the gRPC until it is finished by the application.",
    ),
    // Time to first message (streaming methods) and message sizes (opt-in), named and
    // described in go-grpc-prometheus' style.
    histogram(
        SERVER_TIME_TO_FIRST_MESSAGE,
        SERVER_TIME_TO_FIRST_MESSAGE,
        FamilyUnit::Seconds,
        Measure::FirstMessage,
        FIRST_MESSAGE_BUCKETS,
        "Histogram of the time (seconds) from the start of a streaming RPC to the first response message sent by the server.",
    ),
    histogram(
        CLIENT_TIME_TO_FIRST_MESSAGE,
        CLIENT_TIME_TO_FIRST_MESSAGE,
        FamilyUnit::Seconds,
        Measure::FirstMessage,
        FIRST_MESSAGE_BUCKETS,
        "Histogram of the time (seconds) from the start of a streaming RPC to the first response message received by the client.",
    ),
    histogram(
        SERVER_MSG_RECEIVED_SIZE,
        SERVER_MSG_RECEIVED_SIZE,
        FamilyUnit::Bytes,
        Measure::Size,
        SIZE_BUCKETS,
        "Histogram of the size (bytes, as on the wire) of RPC stream messages received on the server.",
    ),
    histogram(
        SERVER_MSG_SENT_SIZE,
        SERVER_MSG_SENT_SIZE,
        FamilyUnit::Bytes,
        Measure::Size,
        SIZE_BUCKETS,
        "Histogram of the size (bytes, as on the wire) of gRPC stream messages sent by the server.",
    ),
    histogram(
        CLIENT_MSG_RECEIVED_SIZE,
        CLIENT_MSG_RECEIVED_SIZE,
        FamilyUnit::Bytes,
        Measure::Size,
        SIZE_BUCKETS,
        "Histogram of the size (bytes, as on the wire) of RPC stream messages received by the client.",
    ),
    histogram(
        CLIENT_MSG_SENT_SIZE,
        CLIENT_MSG_SENT_SIZE,
        FamilyUnit::Bytes,
        Measure::Size,
        SIZE_BUCKETS,
        "Histogram of the size (bytes, as on the wire) of gRPC stream messages sent by the client.",
    ),
    // OpenTelemetry RPC semantic conventions, named as OpenTelemetry's Prometheus
    // translation names them (dots to underscores, the unit as a suffix).
    histogram(
        OTEL_SERVER_CALL_DURATION,
        "rpc_server_call_duration_seconds",
        FamilyUnit::Seconds,
        Measure::Latency,
        OTEL_BUCKETS,
        "Measures the duration of inbound remote procedure calls (RPC).",
    ),
    histogram(
        OTEL_CLIENT_CALL_DURATION,
        "rpc_client_call_duration_seconds",
        FamilyUnit::Seconds,
        Measure::Latency,
        OTEL_BUCKETS,
        "Measures the duration of outbound remote procedure calls (RPC).",
    ),
    // gRPC's own metrics (gRFC A66), named as OpenTelemetry's Prometheus translation names
    // them, with grpc-python's descriptions.
    exposed_counter(GRPC_SERVER_CALL_STARTED, "grpc_server_call_started_total", "Number of server calls started"),
    histogram(
        GRPC_SERVER_CALL_DURATION,
        "grpc_server_call_duration_seconds",
        FamilyUnit::Seconds,
        Measure::Latency,
        A66_LATENCY_BUCKETS,
        "End-to-end time taken to complete a call from server transport's perspective",
    ),
    histogram(
        GRPC_SERVER_CALL_SENT_BYTES,
        "grpc_server_call_sent_total_compressed_message_size_bytes",
        FamilyUnit::Bytes,
        Measure::Size,
        A66_SIZE_BUCKETS,
        "Compressed message bytes sent per server call",
    ),
    histogram(
        GRPC_SERVER_CALL_RCVD_BYTES,
        "grpc_server_call_rcvd_total_compressed_message_size_bytes",
        FamilyUnit::Bytes,
        Measure::Size,
        A66_SIZE_BUCKETS,
        "Compressed message bytes received per server call",
    ),
    exposed_counter(
        GRPC_CLIENT_ATTEMPT_STARTED,
        "grpc_client_attempt_started_total",
        "Number of client call attempts started",
    ),
    histogram(
        GRPC_CLIENT_ATTEMPT_DURATION,
        "grpc_client_attempt_duration_seconds",
        FamilyUnit::Seconds,
        Measure::Latency,
        A66_LATENCY_BUCKETS,
        "End-to-end time taken to complete a client call attempt",
    ),
    histogram(
        GRPC_CLIENT_ATTEMPT_SENT_BYTES,
        "grpc_client_attempt_sent_total_compressed_message_size_bytes",
        FamilyUnit::Bytes,
        Measure::Size,
        A66_SIZE_BUCKETS,
        "Compressed message bytes sent per client call attempt",
    ),
    histogram(
        GRPC_CLIENT_ATTEMPT_RCVD_BYTES,
        "grpc_client_attempt_rcvd_total_compressed_message_size_bytes",
        FamilyUnit::Bytes,
        Measure::Size,
        A66_SIZE_BUCKETS,
        "Compressed message bytes received per call attempt",
    ),
    histogram(
        GRPC_CLIENT_CALL_DURATION,
        "grpc_client_call_duration_seconds",
        FamilyUnit::Seconds,
        Measure::Latency,
        A66_LATENCY_BUCKETS,
        "End-to-end time taken to complete a call from client's perspective",
    ),
];

/// The family recorded under `name`, if it is one of this crate's.
pub(crate) fn family(name: &str) -> Option<&'static FamilyInfo> {
    FAMILIES.iter().find(|family| family.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{MetricNames, Naming};

    /// Every family a layer can record under any scheme, with its kind.
    fn recorded(names: &MetricNames) -> Vec<(&'static str, FamilyKind)> {
        use FamilyKind::{Counter, Histogram};
        match names.naming {
            Naming::GoGrpcPrometheus => vec![
                (names.started, Counter),
                (names.handled, Counter),
                (names.msg_received, Counter),
                (names.msg_sent, Counter),
                (names.handling_seconds, Histogram),
                (names.first_message, Histogram),
                (names.msg_received_size, Histogram),
                (names.msg_sent_size, Histogram),
            ],
            Naming::OpenTelemetry => vec![(names.handling_seconds, Histogram)],
            Naming::Grpc => {
                let mut families = vec![
                    (names.started, Counter),
                    (names.handling_seconds, Histogram),
                    (names.call_rcvd_bytes, Histogram),
                    (names.call_sent_bytes, Histogram),
                ];
                families.extend(names.call_duration.map(|name| (name, Histogram)));
                families
            }
        }
    }

    #[test]
    fn every_recorded_family_is_in_the_catalogue() {
        let mut all = Vec::new();
        for naming in [Naming::GoGrpcPrometheus, Naming::OpenTelemetry, Naming::Grpc] {
            for server in [true, false] {
                for (name, kind) in recorded(MetricNames::of(server, naming)) {
                    let family = family(name).unwrap_or_else(|| panic!("{name} is not in the catalogue"));
                    assert_eq!(family.kind, kind, "{name}");
                    all.push(name);
                }
            }
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), FAMILIES.len(), "a family in the catalogue that no layer records");
    }

    /// gRPC's metrics as OpenTelemetry's Prometheus exporter renders them for grpc-python
    /// (`/work/a66`): dots to underscores, the unit as a suffix, `_total` on counters.
    #[test]
    fn a66_families_are_exposed_as_the_official_plugins_are() {
        let expected = [
            ("grpc.server.call.started", "grpc_server_call_started_total", None),
            ("grpc.server.call.duration", "grpc_server_call_duration_seconds", Some(FamilyUnit::Seconds)),
            (
                "grpc.server.call.sent_total_compressed_message_size",
                "grpc_server_call_sent_total_compressed_message_size_bytes",
                Some(FamilyUnit::Bytes),
            ),
            (
                "grpc.server.call.rcvd_total_compressed_message_size",
                "grpc_server_call_rcvd_total_compressed_message_size_bytes",
                Some(FamilyUnit::Bytes),
            ),
            ("grpc.client.attempt.started", "grpc_client_attempt_started_total", None),
            ("grpc.client.attempt.duration", "grpc_client_attempt_duration_seconds", Some(FamilyUnit::Seconds)),
            (
                "grpc.client.attempt.sent_total_compressed_message_size",
                "grpc_client_attempt_sent_total_compressed_message_size_bytes",
                Some(FamilyUnit::Bytes),
            ),
            (
                "grpc.client.attempt.rcvd_total_compressed_message_size",
                "grpc_client_attempt_rcvd_total_compressed_message_size_bytes",
                Some(FamilyUnit::Bytes),
            ),
            ("grpc.client.call.duration", "grpc_client_call_duration_seconds", Some(FamilyUnit::Seconds)),
        ];
        for (name, exposition, unit) in expected {
            let family = family(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((family.exposition, family.unit), (exposition, unit), "{name}");
            let buckets = match unit {
                Some(FamilyUnit::Seconds) => crate::names::A66_LATENCY_BUCKETS,
                Some(FamilyUnit::Bytes) => crate::names::A66_SIZE_BUCKETS,
                None => &[],
            };
            assert_eq!(family.buckets, buckets, "{name}");
        }
    }

    #[test]
    fn names_are_unique_and_exposed_names_valid() {
        for (i, family) in FAMILIES.iter().enumerate() {
            assert!(FAMILIES[..i].iter().all(|other| other.name != family.name), "{}", family.name);
            assert!(FAMILIES[..i].iter().all(|other| other.exposition != family.exposition), "{}", family.exposition);
            let valid = family.exposition.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            assert!(valid && !family.exposition.starts_with(|c: char| c.is_ascii_digit()), "{}", family.exposition);
            match family.kind {
                FamilyKind::Counter => assert!(family.exposition.ends_with("_total"), "{}", family.exposition),
                FamilyKind::Histogram => {
                    let unit = family.unit.expect("histograms have a unit").as_str();
                    assert!(family.exposition.ends_with(&format!("_{unit}")), "{}", family.exposition);
                    assert!(!family.buckets.is_empty() && family.buckets.windows(2).all(|w| w[0] < w[1]));
                }
            }
        }
    }
}
