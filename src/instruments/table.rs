//! The per-call method lookup and the cardinality guard.
//!
//! Everything a warm RPC touches starts here: one map lookup with borrowed `&str` keys
//! returns an `Arc<MethodInstruments>` whose handles were resolved against the recorder
//! once, on first use. No `String`, `Vec` or `Key` is built per call after that.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock, RwLock},
};

use super::{
    config::Config,
    filter::MethodFilter,
    method::{Binder, MethodInstruments},
};
use crate::{
    exemplar::{ExemplarExtractor, ExemplarLabels},
    names::{MetricNames, Naming},
    registry::GrpcType,
};

/// Longest `/service/method` path recorded under its own name.
pub(crate) const MAX_PATH_LEN: usize = 256;

/// The default cap on distinct methods recorded when no registry is given.
pub const DEFAULT_MAX_METHODS: usize = 1_000;

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
    exemplars: Option<ExemplarExtractor>,
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
        let go = names.naming == Naming::GoGrpcPrometheus;
        let binder = Arc::new(Binder {
            names,
            recorder: config.recorder.clone(),
            // OpenTelemetry's and gRPC's durations always carry the status code.
            code_on_histogram: config.code_on_histogram || !go,
            first_message: config.first_message && go,
            message_sizes: config.message_sizes && go,
            target: OnceLock::new(),
            described: OnceLock::new(),
        });
        if let Some(target) = &config.target {
            let _ = binder.target.set(target.clone().into());
        }
        let mut known = MethodMap::<FastState>::default();
        let mut known_paths = HashMap::<_, _, FastState>::default();
        if let Some(registry) = &config.registry {
            for (service, method, kind) in registry.iter() {
                let entry = config
                    .filter
                    .records(service, method)
                    .then(|| Arc::new(MethodInstruments::new(binder.clone(), kind, Some((service, method)), true)));
                let path = format!("/{service}/{method}");
                // Only paths that split back into these names: any other (a name with a
                // '/', a path over MAX_PATH_LEN) takes the long way, to `unknown`.
                if split_path(&path) == Some((service, method)) {
                    known_paths.insert(Box::<str>::from(path), entry.clone());
                }
                known.entry(service.into()).or_default().insert(method.into(), entry);
            }
        }
        let unknown = Arc::new(MethodInstruments::new(binder.clone(), GrpcType::Unknown, None, false));
        Self {
            binder,
            known,
            known_paths,
            closed: config.registry.is_some(),
            seen: RwLock::default(),
            max_methods: config.max_methods,
            unknown,
            filter: config.filter.clone(),
            exemplars: config.exemplars.clone(),
        }
    }

    /// The exemplar of a call, if exemplars are on and the request has one.
    pub fn exemplar<B>(&self, request: &http::Request<B>) -> Option<ExemplarLabels> {
        self.exemplars.as_ref().and_then(|extract| extract(request.headers(), request.extensions()))
    }

    /// Under gRPC naming on a client, takes `grpc.target` from the first request (unless
    /// given): `dns:///{authority}`, or `unknown` for a URI without one. A request with no
    /// authority (a generated client made with `new`, whose `Channel` adds the origin below
    /// the layer) is the common case: see [`crate::names`].
    #[inline]
    pub fn note_target(&self, uri: &http::Uri) {
        if self.binder.wants_target() && self.binder.target.get().is_none() {
            let target = match uri.authority() {
                Some(authority) => format!("dns:///{authority}").into(),
                None => metrics::SharedString::const_str(crate::names::UNKNOWN),
            };
            let _ = self.binder.target.set(target);
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
        let entry =
            Arc::new(MethodInstruments::new(self.binder.clone(), GrpcType::Unknown, Some((service, method)), false));
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
    use crate::{names::UNKNOWN, registry::MethodRegistry};

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
            method.labels().iter().map(|label| label.value().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(labels("/pkg.Svc/Get"), ["unary", "pkg.Svc", "Get"]);
        assert_eq!(labels("/pkg.Svc/a/b"), ["unknown", UNKNOWN, UNKNOWN]);
        assert_eq!(labels(&format!("/{long}/Get")), ["unknown", UNKNOWN, UNKNOWN]);
        assert_eq!(labels("/pkg.Svc/Put"), ["unknown", UNKNOWN, UNKNOWN]);
    }
}
