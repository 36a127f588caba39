//! Resolved metric handles per method, the method lookup, and the cardinality guard.
//!
//! Everything a warm RPC touches lives here: one map lookup with borrowed `&str` keys
//! returns an `Arc<MethodInstruments>` whose handles were resolved against the recorder
//! once, on first use. No `String`, `Vec` or `Key` is built per call after that.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};

use crate::{
    code::GrpcCode,
    names::{
        LABEL_CODE, LABEL_METHOD, LABEL_SERVICE, LABEL_TYPE, MetricNames, Naming, OTEL_ATTR_METHOD,
        OTEL_ATTR_STATUS_CODE, OTEL_ATTR_SYSTEM_NAME, OTEL_OTHER_METHOD, UNKNOWN,
    },
    registry::{GrpcType, MethodRegistry},
};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Longest `/service/method` path recorded under its own name.
pub(crate) const MAX_PATH_LEN: usize = 256;

/// The default cap on distinct methods recorded when no registry is given.
pub const DEFAULT_MAX_METHODS: usize = 1_000;

/// Which recorder the handles are registered with.
#[derive(Clone, Default)]
pub(crate) enum RecorderRef {
    /// Whatever `metrics` has installed when the handles are first resolved.
    #[default]
    Global,
    Explicit(Arc<dyn Recorder + Send + Sync>),
}

impl RecorderRef {
    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match self {
            Self::Global => metrics::with_recorder(f),
            Self::Explicit(recorder) => f(recorder.as_ref()),
        }
    }
}

impl fmt::Debug for RecorderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Global => "Global",
            Self::Explicit(_) => "Explicit(..)",
        })
    }
}

type Predicate = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Which methods are not recorded at all.
#[derive(Clone, Default)]
pub(crate) struct MethodFilter {
    services: HashSet<Box<str>>,
    methods: HashMap<Box<str>, HashSet<Box<str>>>,
    predicate: Option<Predicate>,
}

impl MethodFilter {
    pub fn exclude_service(&mut self, service: &str) {
        self.services.insert(service.into());
    }

    pub fn exclude_method(&mut self, service: &str, method: &str) {
        self.methods.entry(service.into()).or_default().insert(method.into());
    }

    pub fn set_predicate(&mut self, predicate: Predicate) {
        self.predicate = Some(predicate);
    }

    fn records(&self, service: &str, method: &str) -> bool {
        !self.services.contains(service)
            && !self.methods.get(service).is_some_and(|methods| methods.contains(method))
            && self.predicate.as_ref().is_none_or(|keep| keep(service, method))
    }
}

impl fmt::Debug for MethodFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodFilter")
            .field("services", &self.services)
            .field("methods", &self.methods)
            .field("predicate", &self.predicate.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Everything that decides how a layer records; shared by the server and client layers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub registry: Option<MethodRegistry>,
    pub max_methods: usize,
    pub code_on_histogram: bool,
    pub naming: Naming,
    pub recorder: RecorderRef,
    pub filter: MethodFilter,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            registry: None,
            max_methods: DEFAULT_MAX_METHODS,
            code_on_histogram: false,
            naming: Naming::GoGrpcPrometheus,
            recorder: RecorderRef::Global,
            filter: MethodFilter::default(),
        }
    }
}

/// What every method of one layer needs to resolve its handles.
#[derive(Debug)]
struct Binder {
    names: &'static MetricNames,
    recorder: RecorderRef,
    code_on_histogram: bool,
    described: OnceLock<()>,
}

impl Binder {
    fn with_recorder<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        self.recorder.with(|recorder| {
            self.described.get_or_init(|| self.names.describe(recorder));
            f(recorder)
        })
    }
}

/// The handles of one method, resolved once against the recorder.
struct Handles {
    started: Counter,
    request_messages: Counter,
    response_messages: Counter,
    handled: [OnceLock<Counter>; 17],
    /// One histogram, or one per code when the code label is on.
    seconds: [OnceLock<Histogram>; 17],
}

/// One method's labels and lazily resolved metric handles.
pub(crate) struct MethodInstruments {
    binder: Arc<Binder>,
    labels: Box<[Label]>,
    handles: OnceLock<Handles>,
}

impl fmt::Debug for MethodInstruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodInstruments").field("labels", &self.labels).finish_non_exhaustive()
    }
}

impl MethodInstruments {
    /// The instruments of a named method (`None`: the method the layer will not name).
    fn new(binder: Arc<Binder>, kind: GrpcType, name: Option<(&str, &str)>) -> Self {
        let labels: Box<[Label]> = match (binder.names.naming, name) {
            (Naming::GoGrpcPrometheus, Some((service, method))) => Box::new([
                Label::from_static_parts(LABEL_TYPE, kind.as_str()),
                Label::new(LABEL_SERVICE, service.to_owned()),
                Label::new(LABEL_METHOD, method.to_owned()),
            ]),
            (Naming::GoGrpcPrometheus, None) => Box::new([
                Label::from_static_parts(LABEL_TYPE, kind.as_str()),
                Label::from_static_parts(LABEL_SERVICE, UNKNOWN),
                Label::from_static_parts(LABEL_METHOD, UNKNOWN),
            ]),
            (Naming::OpenTelemetry, name) => Box::new([
                Label::from_static_parts(OTEL_ATTR_SYSTEM_NAME, "grpc"),
                match name {
                    Some((service, method)) => Label::new(OTEL_ATTR_METHOD, format!("{service}/{method}")),
                    None => Label::from_static_parts(OTEL_ATTR_METHOD, OTEL_OTHER_METHOD),
                },
            ]),
        };
        Self { binder, labels, handles: OnceLock::new() }
    }

    fn key(&self, name: &'static str, code: Option<GrpcCode>) -> Key {
        let mut labels = self.labels.to_vec();
        if let Some(code) = code {
            labels.push(match self.binder.names.naming {
                Naming::GoGrpcPrometheus => Label::from_static_parts(LABEL_CODE, code.as_str()),
                Naming::OpenTelemetry => Label::from_static_parts(OTEL_ATTR_STATUS_CODE, code.as_canonical_str()),
            });
        }
        Key::from_parts(name, labels)
    }

    /// Whether the go-grpc-prometheus counters are recorded (not under OpenTelemetry naming).
    fn has_counters(&self) -> bool {
        self.binder.names.naming == Naming::GoGrpcPrometheus
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let names = self.binder.names;
            let (started, received, sent) = if self.has_counters() {
                self.binder.with_recorder(|recorder| {
                    (
                        recorder.register_counter(&self.key(names.started, None), &METADATA),
                        recorder.register_counter(&self.key(names.msg_received, None), &METADATA),
                        recorder.register_counter(&self.key(names.msg_sent, None), &METADATA),
                    )
                })
            } else {
                (Counter::noop(), Counter::noop(), Counter::noop())
            };
            let (request_messages, response_messages) =
                if names.receives_requests { (received, sent) } else { (sent, received) };
            let handles = Handles {
                started,
                request_messages,
                response_messages,
                handled: Default::default(),
                seconds: Default::default(),
            };
            // Pre-initialise the series a dashboard needs from the start.
            self.handled_counter(&handles, GrpcCode::Ok);
            self.seconds_histogram(&handles, GrpcCode::Ok);
            handles
        })
    }

    fn handled_counter<'h>(&self, handles: &'h Handles, code: GrpcCode) -> &'h Counter {
        handles.handled[code.index()].get_or_init(|| {
            if !self.has_counters() {
                return Counter::noop();
            }
            let key = self.key(self.binder.names.handled, Some(code));
            self.binder.with_recorder(|recorder| recorder.register_counter(&key, &METADATA))
        })
    }

    fn seconds_histogram<'h>(&self, handles: &'h Handles, code: GrpcCode) -> &'h Histogram {
        let (slot, code) = if self.binder.code_on_histogram { (code.index(), Some(code)) } else { (0, None) };
        handles.seconds[slot].get_or_init(|| {
            let key = self.key(self.binder.names.handling_seconds, code);
            self.binder.with_recorder(|recorder| recorder.register_histogram(&key, &METADATA))
        })
    }

    /// Resolves the handles now, creating the method's zero-valued series.
    pub fn preinitialize(&self) {
        self.handles();
    }

    pub fn record_started(&self) {
        self.handles().started.increment(1);
    }

    pub fn record_handled(&self, code: GrpcCode, elapsed: Duration) {
        let handles = self.handles();
        self.handled_counter(handles, code).increment(1);
        self.seconds_histogram(handles, code).record(elapsed.as_secs_f64());
    }

    pub fn record_request_messages(&self, count: u64) {
        self.handles().request_messages.increment(count);
    }

    pub fn record_response_messages(&self, count: u64) {
        self.handles().response_messages.increment(count);
    }
}

type MethodMap<H = std::hash::RandomState> = HashMap<Box<str>, HashMap<Box<str>, Option<Arc<MethodInstruments>>, H>, H>;

/// The hasher of the registered-method map, which the per-call lookup hashes a path into:
/// rustc's unkeyed Fx hash costs a fraction of the default SipHash on these short names.
/// Hash flooding needs inserts, and that map is built once from the registry and never
/// grows from traffic; the map of paths seen without a registry, which does, keeps the
/// keyed default.
type FastState = rustc_hash::FxBuildHasher;

/// Paths seen without a registry, bounded by `max_methods`.
#[derive(Default)]
struct SeenMethods {
    map: MethodMap,
    len: usize,
}

/// Maps each RPC to its instruments: the per-call lookup and the cardinality guard.
pub(crate) struct MethodTable {
    binder: Arc<Binder>,
    /// Registered methods (`None`: excluded by the filter). Immutable after construction.
    known: MethodMap<FastState>,
    /// The same entries by full path (`/service/method`), for the server's per-call
    /// lookup: one hash and no path split for a registered method.
    known_paths: HashMap<Box<str>, Option<Arc<MethodInstruments>>, FastState>,
    /// With a registry, anything unregistered is `unknown`; without one, paths are
    /// recorded as seen up to `max_methods`.
    closed: bool,
    seen: RwLock<SeenMethods>,
    max_methods: usize,
    unknown: Arc<MethodInstruments>,
    filter: MethodFilter,
}

impl fmt::Debug for MethodTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodTable")
            .field("known", &self.known.values().map(HashMap::len).sum::<usize>())
            .field("closed", &self.closed)
            .field("max_methods", &self.max_methods)
            .finish_non_exhaustive()
    }
}

impl MethodTable {
    pub fn new(names: &'static MetricNames, config: &Config) -> Self {
        let binder = Arc::new(Binder {
            names,
            recorder: config.recorder.clone(),
            // OpenTelemetry's duration always carries the status code.
            code_on_histogram: config.code_on_histogram || names.naming == Naming::OpenTelemetry,
            described: OnceLock::new(),
        });
        let mut known = MethodMap::<FastState>::default();
        let mut known_paths = HashMap::<_, _, FastState>::default();
        if let Some(registry) = &config.registry {
            for (service, method, kind) in registry.iter() {
                let entry = config
                    .filter
                    .records(service, method)
                    .then(|| Arc::new(MethodInstruments::new(binder.clone(), kind, Some((service, method)))));
                let path = format!("/{service}/{method}");
                // Only paths that split back into these names: any other (a name with a
                // '/', a path over MAX_PATH_LEN) takes the long way, to `unknown`.
                if split_path(&path) == Some((service, method)) {
                    known_paths.insert(Box::<str>::from(path), entry.clone());
                }
                known.entry(service.into()).or_default().insert(method.into(), entry);
            }
        }
        let unknown = Arc::new(MethodInstruments::new(binder.clone(), GrpcType::Unknown, None));
        Self {
            binder,
            known,
            known_paths,
            closed: config.registry.is_some(),
            seen: RwLock::default(),
            max_methods: config.max_methods,
            unknown,
            filter: config.filter.clone(),
        }
    }

    /// Creates the zero-valued series of every registered method.
    pub fn preinitialize(&self) {
        for entry in self.known.values().flat_map(HashMap::values).flatten() {
            entry.preinitialize();
        }
    }

    /// The instruments for a request path (`/package.Service/Method`); `None` when the
    /// method is filtered out.
    pub fn lookup_path(&self, path: &str) -> Option<Arc<MethodInstruments>> {
        if let Some(entry) = self.known_paths.get(path) {
            return entry.clone();
        }
        match split_path(path) {
            Some((service, method)) => self.lookup(service, method),
            None => Some(self.unknown.clone()),
        }
    }

    /// The instruments for `service`/`method`; `None` when the method is filtered out.
    pub fn lookup(&self, service: &str, method: &str) -> Option<Arc<MethodInstruments>> {
        if let Some(entry) = self.known.get(service).and_then(|methods| methods.get(method)) {
            return entry.clone();
        }
        if !self.filter.records(service, method) {
            return None;
        }
        if self.closed || !is_label_safe(service) || !is_label_safe(method) {
            return Some(self.unknown.clone());
        }
        self.lookup_seen(service, method)
    }

    fn lookup_seen(&self, service: &str, method: &str) -> Option<Arc<MethodInstruments>> {
        let read = self.seen.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = read.map.get(service).and_then(|methods| methods.get(method)) {
            return entry.clone();
        }
        if read.len >= self.max_methods {
            return Some(self.unknown.clone());
        }
        drop(read);
        let mut seen = self.seen.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = seen.map.get(service).and_then(|methods| methods.get(method)) {
            return entry.clone();
        }
        if seen.len >= self.max_methods {
            return Some(self.unknown.clone());
        }
        let entry = Arc::new(MethodInstruments::new(self.binder.clone(), GrpcType::Unknown, Some((service, method))));
        seen.map.entry(service.into()).or_default().insert(method.into(), Some(entry.clone()));
        seen.len += 1;
        Some(entry)
    }
}

/// Splits `/package.Service/Method` into its two names, or `None` if the path is not of
/// that shape (empty parts, extra slashes, over [`MAX_PATH_LEN`] bytes).
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    if path.len() > MAX_PATH_LEN {
        return None;
    }
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// Names recorded as label values when no registry vouches for them: what protobuf
/// allows in service and method names, nothing that needs escaping or could be abused.
fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PATH_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_only_when_well_formed() {
        assert_eq!(split_path("/grpc.examples.echo.Echo/UnaryEcho"), Some(("grpc.examples.echo.Echo", "UnaryEcho")));
        for bad in ["", "/", "//", "/svc", "/svc/", "//method", "svc/method", "/a/b/c", "/a//b"] {
            assert_eq!(split_path(bad), None, "{bad:?}");
        }
        let long = format!("/{}/m", "s".repeat(MAX_PATH_LEN));
        assert_eq!(split_path(&long), None);
    }

    #[test]
    fn label_safe_names() {
        assert!(is_label_safe("grpc.health.v1.Health"));
        assert!(!is_label_safe("a%2Fb"));
        assert!(!is_label_safe("método"));
        assert!(!is_label_safe("a\"b"));
    }

    /// The full-path index answers exactly as splitting the path and looking the names up
    /// would, including for registered names that no well-formed path can reach.
    #[test]
    fn the_path_index_agrees_with_the_split_lookup() {
        let long = "s".repeat(MAX_PATH_LEN);
        let registry = MethodRegistry::new()
            .with_method("pkg.Svc", "Get", GrpcType::Unary)
            .with_method("pkg.Svc", "a/b", GrpcType::Unary)
            .with_method(&long, "Get", GrpcType::Unary);
        let config = Config { registry: Some(registry), ..Config::default() };
        let table = MethodTable::new(MetricNames::of(true, Naming::GoGrpcPrometheus), &config);
        let labels = |path: &str| {
            let method = table.lookup_path(path).expect("nothing is filtered");
            method.labels.iter().map(|label| label.value().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(labels("/pkg.Svc/Get"), ["unary", "pkg.Svc", "Get"]);
        assert_eq!(labels("/pkg.Svc/a/b"), ["unknown", UNKNOWN, UNKNOWN]);
        assert_eq!(labels(&format!("/{long}/Get")), ["unknown", UNKNOWN, UNKNOWN]);
        assert_eq!(labels("/pkg.Svc/Put"), ["unknown", UNKNOWN, UNKNOWN]);
    }
}
