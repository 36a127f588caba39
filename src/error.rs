//! The crate's error type.

/// Everything that can go wrong building a registry, starting the exporter or pushing
/// metrics.
///
/// Each message says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes given as a `FileDescriptorSet` did not decode.
    #[error(
        "the bytes are not an encoded FileDescriptorSet ({0}); pass the file written by \
         tonic_prost_build::configure().file_descriptor_set_path(..) or a crate's FILE_DESCRIPTOR_SET"
    )]
    InvalidDescriptorSet(#[source] prost::DecodeError),

    /// The metrics port would be the gRPC port + 1, but the gRPC port is 65535.
    #[error(
        "cannot derive the metrics port from gRPC port {grpc_port}: port + 1 is past 65535; \
         set the metrics port explicitly"
    )]
    PortOverflow {
        /// The gRPC port the metrics port was derived from.
        grpc_port: u16,
    },

    /// The metrics listener could not bind its address.
    #[cfg(feature = "exporter")]
    #[error("cannot listen for /metrics on {addr}: {source}; {}", bind_advice(.source.kind()))]
    Bind {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// Why the bind failed.
        #[source]
        source: std::io::Error,
    },

    /// The metrics port is held by another process of this same program: only that one
    /// process would be scraped.
    #[cfg(feature = "exporter")]
    #[error(
        "cannot listen for /metrics on {addr}: process {pid} ({program}), another process of this \
         service, serves it, so Prometheus would see only that process' metrics; run every \
         process in multi-process mode (PrometheusExporter::with_multiprocess_dir, or the \
         TONIC_METRICS_MULTIPROC_DIR environment variable) so that the one serving /metrics \
         serves the sum, or give each process its own metrics port"
    )]
    PortHeldBySibling {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// The process that holds it.
        pid: u32,
        /// Its program name (the same as this one's).
        program: String,
    },

    /// The native histogram schema is out of range.
    #[cfg(feature = "exporter")]
    #[error("invalid native histogram schema {0}: give 0 to 8 (2^schema buckets per power of two)")]
    InvalidNativeSchema(u8),

    /// A global `metrics` recorder was installed already, so this one could not be.
    #[cfg(feature = "exporter")]
    #[error(
        "a global metrics recorder is already installed; install the exporter once per \
         process, or use PrometheusExporter::build and give the recorder to the layers with \
         with_recorder"
    )]
    RecorderAlreadyInstalled,

    /// The exporter was started outside a Tokio runtime.
    #[cfg(feature = "exporter")]
    #[error(
        "the metrics exporter must be started from within a Tokio runtime (call it from async code under #[tokio::main])"
    )]
    NoRuntime,

    /// Histogram buckets were empty, not finite, or not strictly increasing.
    #[cfg(feature = "exporter")]
    #[error("invalid histogram buckets {0:?}: give at least one finite boundary, in strictly increasing order")]
    InvalidBuckets(Vec<f64>),

    /// `with_buckets_for_metric` named one of this crate's counters.
    #[cfg(feature = "exporter")]
    #[error(
        "{0:?} is one of this crate's counters, which have no buckets; give with_buckets_for_metric \
         a histogram's name (such as \"grpc_server_handling_seconds\")"
    )]
    NotAHistogram(String),

    /// The Pushgateway URL is not one this crate can push to.
    #[cfg(feature = "push-gateway")]
    #[error(
        "invalid Pushgateway endpoint {endpoint:?}: {reason}; give http://HOST:9091/metrics/job/JOB \
         (optionally followed by /LABEL/VALUE pairs)"
    )]
    InvalidPushGatewayEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A push to the Pushgateway failed.
    #[cfg(feature = "push-gateway")]
    #[error("pushing metrics to {endpoint} failed: {reason}; is the Pushgateway running and reachable from here?")]
    Push {
        /// The endpoint pushed to.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },

    /// An IP allowlist entry is neither an address nor a CIDR network.
    #[cfg(feature = "exporter")]
    #[error("invalid allowlist entry {0:?}: give an IP address (127.0.0.1) or a network (10.0.0.0/8)")]
    InvalidAllowlistEntry(String),
}

/// What to do about a bind error of this kind.
#[cfg(feature = "exporter")]
fn bind_advice(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::AddrInUse => {
            "is another process (or another instance) using that port? choose a free port, or port 0 for an \
             ephemeral one"
        }
        ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges (CAP_NET_BIND_SERVICE): choose a port above 1023"
        }
        ErrorKind::AddrNotAvailable => {
            "that address is not one of this host's: listen on 0.0.0.0, or on an address it has"
        }
        _ => "choose another address, or port 0 for an ephemeral one",
    }
}
