//! The layer and its builder methods, shared by the server and client sides.

use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, OnceLock},
};

use metrics::Recorder;
use tower_layer::Layer;

use crate::{
    exemplar::ExemplarLabels,
    instruments::{Config, MethodTable, RecorderRef},
    names::{MetricNames, Naming},
    registry::MethodRegistry,
    side::{Side, sealed},
};

/// A tower [`Layer`] that records go-grpc-prometheus metrics for every RPC through the
/// `metrics` facade. `GrpcMetricsLayer<Server>` ([`ServerMetricsLayer`](crate::ServerMetricsLayer))
/// wraps a tonic server; `GrpcMetricsLayer<Client>` ([`ClientMetricsLayer`](crate::ClientMetricsLayer))
/// wraps a `Channel`.
///
/// Cloning is cheap, and clones share the method table and its cached handles.
pub struct GrpcMetricsLayer<K> {
    config: Config,
    table: Arc<OnceLock<Arc<MethodTable>>>,
    _side: PhantomData<fn() -> K>,
}

impl<K> Clone for GrpcMetricsLayer<K> {
    fn clone(&self) -> Self {
        Self { config: self.config.clone(), table: self.table.clone(), _side: PhantomData }
    }
}

impl<K> fmt::Debug for GrpcMetricsLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcMetricsLayer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<K: Side> Default for GrpcMetricsLayer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Side> GrpcMetricsLayer<K> {
    /// A layer with no registry, the global recorder, and the default cap of
    /// [`DEFAULT_MAX_METHODS`](crate::DEFAULT_MAX_METHODS) distinct methods.
    pub fn new() -> Self {
        Self { config: Config::default(), table: Arc::default(), _side: PhantomData }
    }

    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        // A changed configuration needs its own table; clones made before keep theirs.
        self.table = Arc::default();
        self
    }

    /// Names each registered method with its exact `grpc_type`, creates its series at
    /// zero up front, and records every other path as `grpc_service="unknown",
    /// grpc_method="unknown"`. The registry's types also decide which methods have a time
    /// to first message (server-streaming and bidi ones).
    pub fn with_registry(self, registry: MethodRegistry) -> Self {
        self.configure(|config| config.registry = Some(registry))
    }

    /// Without a registry, at most this many distinct methods get their own series; later
    /// new paths are recorded as `unknown`. Default: 1,000. Ignored with a registry.
    pub fn with_max_methods(self, max_methods: usize) -> Self {
        self.configure(|config| config.max_methods = max_methods)
    }

    /// Adds the `grpc_code` label to the handling-time histogram (off by default, as in
    /// go-grpc-prometheus; it multiplies the histogram's series by the codes seen).
    pub fn with_code_on_histogram(self) -> Self {
        self.configure(|config| config.code_on_histogram = true)
    }

    /// Records under another naming scheme: [`Naming::OpenTelemetry`] records the
    /// OpenTelemetry RPC conventions' `rpc.server.call.duration` (or
    /// `rpc.client.call.duration`) histogram instead of the go-grpc-prometheus family;
    /// [`Naming::Grpc`] records gRPC's own metrics (gRFC A66: `grpc.server.call.*`,
    /// `grpc.client.attempt.*`), as gRPC's official OpenTelemetry plugins do.
    /// See [`names`](crate::names) for the mapping between the schemes.
    ///
    /// ```
    /// use tonic_metrics::{Naming, ServerMetricsLayer};
    ///
    /// let layer = ServerMetricsLayer::new().with_naming(Naming::OpenTelemetry);
    /// let official = ServerMetricsLayer::new().with_naming(Naming::Grpc);
    /// # drop((layer, official));
    /// ```
    pub fn with_naming(self, naming: Naming) -> Self {
        self.configure(|config| config.naming = naming)
    }

    /// Stops recording the time to first message (`grpc_server_time_to_first_message_seconds`,
    /// `grpc_client_time_to_first_message_seconds`), which is on by default.
    ///
    /// It is a histogram of the time from the start of a call to its first response
    /// message (a server: sent to the transport; a client: received), for the methods the
    /// registry names as server-streaming or bidi-streaming; the time a user of a token
    /// stream waits, where the handling time is the length of the whole stream. Methods of
    /// other or unknown types (without a registry, every method) are not observed, nor are
    /// calls that end before their first message: for an observed method, the histogram's
    /// `_count` plus the calls that ended without a message is `handled`. Only recorded
    /// under go-grpc-prometheus naming. Default buckets:
    /// [`FIRST_MESSAGE_BUCKETS`](crate::names::FIRST_MESSAGE_BUCKETS) (1 ms to 80 s). See
    /// [`names`](crate::names#time-to-first-message).
    pub fn without_time_to_first_message(self) -> Self {
        self.configure(|config| config.first_message = false)
    }

    /// Records the size of every message, in bytes, per method and direction
    /// (`grpc_server_msg_received_size_bytes`, `grpc_server_msg_sent_size_bytes` and the
    /// client twins; off by default).
    ///
    /// The size is read from the gRPC frame prefix: the message as sent on the wire,
    /// without its 5-byte prefix, so a compressed message counts its compressed size. It
    /// costs one histogram observation per message and no allocation. Only recorded under
    /// go-grpc-prometheus naming ([`Naming::Grpc`] records per-call totals instead).
    /// Default buckets: [`SIZE_BUCKETS`](crate::names::SIZE_BUCKETS) (64 B to 16 MiB).
    pub fn with_message_sizes(self) -> Self {
        self.configure(|config| config.message_sizes = true)
    }

    /// Attaches an exemplar to each call's handling-time observation: the trace id of the
    /// request's W3C `traceparent` header (on a client, of the outgoing request), as
    /// `{trace_id="…"}`. Calls without a valid `traceparent` are recorded without one, at
    /// no cost. This crate's exporter keeps the latest exemplar of each bucket and serves it
    /// to OpenMetrics and protobuf scrapers; see [`exemplar`](crate::exemplar).
    pub fn with_exemplars(self) -> Self {
        self.with_exemplars_from(crate::exemplar::from_traceparent_header)
    }

    /// Attaches the exemplar `extract` picks from each request's headers and extensions
    /// (for example from a trace context another layer put there), instead of reading
    /// `traceparent`.
    pub fn with_exemplars_from<F>(self, extract: F) -> Self
    where
        F: Fn(&http::HeaderMap, &http::Extensions) -> Option<ExemplarLabels> + Send + Sync + 'static,
    {
        self.configure(|config| config.exemplars = Some(Arc::new(extract)))
    }

    /// Records into `recorder` instead of the global one (tests, or several registries in
    /// one process).
    pub fn with_recorder<R: Recorder + Send + Sync + 'static>(self, recorder: R) -> Self {
        self.with_shared_recorder(Arc::new(recorder))
    }

    /// Records into a shared `recorder` instead of the global one.
    pub fn with_shared_recorder(self, recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        self.configure(|config| config.recorder = RecorderRef::Explicit(recorder))
    }

    /// Records nothing for any method of `service` (for example `grpc.health.v1.Health`).
    pub fn without_service(self, service: &str) -> Self {
        self.configure(|config| config.filter.exclude_service(service))
    }

    /// Records nothing for `service`/`method`.
    pub fn without_method(self, service: &str, method: &str) -> Self {
        self.configure(|config| config.filter.exclude_method(service, method))
    }

    /// Records only the methods for which `keep(service, method)` returns `true`.
    pub fn with_filter<F>(self, keep: F) -> Self
    where
        F: Fn(&str, &str) -> bool + Send + Sync + 'static,
    {
        self.configure(|config| config.filter.set_predicate(Arc::new(keep)))
    }

    /// Resolves every registered method's handles now, creating their zero-valued series,
    /// against the recorder in force now (or the one given with `with_recorder`). Layering
    /// a service does this too. Handles are resolved once: a layer applied before any
    /// recorder is installed records nothing; install the exporter first, or give the
    /// recorder with `with_recorder`. Under [`Naming::Grpc`] it does nothing: gRPC's
    /// own metrics have no series before their first observation.
    pub fn preinitialize(&self) {
        self.table().preinitialize();
    }

    pub(crate) fn table(&self) -> Arc<MethodTable> {
        self.table
            .get_or_init(|| {
                let names = MetricNames::of(<K as sealed::Sealed>::IS_SERVER, self.config.naming);
                Arc::new(MethodTable::new(names, &self.config))
            })
            .clone()
    }
}

impl GrpcMetricsLayer<crate::side::Client> {
    /// The `grpc.target` label of [`Naming::Grpc`] (gRFC A66): the channel's target, for
    /// example `dns:///example.com:443`, recorded as given. Other schemes have no target
    /// and ignore it.
    ///
    /// Without it, the target is taken once, from the first request's URI, as
    /// `dns:///{authority}` (A66's canonical form; grpc-go records the canonical target,
    /// grpc-python the string the user passed). Generated clients made with `new(channel)`
    /// send requests without an authority (the `Channel` adds its origin below this layer):
    /// their target is `unknown` unless given here.
    ///
    /// The target belongs to the layer and its clones, which share their metric handles:
    /// give each channel (target) a layer of its own.
    ///
    /// ```
    /// use tonic_metrics::{ClientMetricsLayer, Naming};
    ///
    /// let layer = ClientMetricsLayer::new().with_naming(Naming::Grpc).with_target("dns:///localhost:50051");
    /// # drop(layer);
    /// ```
    pub fn with_target(self, target: impl Into<String>) -> Self {
        let target = target.into();
        self.configure(|config| config.target = Some(target))
    }
}

impl<S, K: Side> Layer<S> for GrpcMetricsLayer<K> {
    type Service = GrpcMetrics<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        let table = self.table();
        // The recorder is usually installed by now (servers layer at `serve` time), so
        // this is where registered methods get their zero-valued series.
        table.preinitialize();
        GrpcMetrics { inner, table, _side: PhantomData }
    }
}

/// The service produced by [`GrpcMetricsLayer`]; see [`side::Server`](crate::side::Server) and
/// [`side::Client`](crate::side::Client) for what each side records.
pub struct GrpcMetrics<S, K> {
    pub(crate) inner: S,
    pub(crate) table: Arc<MethodTable>,
    _side: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for GrpcMetrics<S, K> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), table: self.table.clone(), _side: PhantomData }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for GrpcMetrics<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcMetrics").field("inner", &self.inner).field("table", &self.table).finish()
    }
}

impl<S, K> GrpcMetrics<S, K> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}
