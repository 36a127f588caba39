//! How a layer records: its configuration and the recorder it records into.

use std::{fmt, sync::Arc};

use metrics::Recorder;

use super::{filter::MethodFilter, table::DEFAULT_MAX_METHODS};
use crate::{exemplar::ExemplarExtractor, names::Naming, registry::MethodRegistry};

/// Which recorder the handles are registered with.
#[derive(Clone, Default)]
pub(crate) enum RecorderRef {
    /// Whatever `metrics` has installed when the handles are first resolved.
    #[default]
    Global,
    Explicit(Arc<dyn Recorder + Send + Sync>),
}

impl RecorderRef {
    pub(super) fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
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

/// Everything that decides how a layer records; shared by the server and client layers.
#[derive(Clone)]
pub(crate) struct Config {
    pub registry: Option<MethodRegistry>,
    pub max_methods: usize,
    pub code_on_histogram: bool,
    pub naming: Naming,
    pub recorder: RecorderRef,
    pub filter: MethodFilter,
    /// Where exemplars come from; `None`: no exemplars.
    pub exemplars: Option<ExemplarExtractor>,
    /// Time to first message of streaming methods (go-grpc-prometheus naming).
    pub first_message: bool,
    /// Per-message size histograms (go-grpc-prometheus naming).
    pub message_sizes: bool,
    /// The client's `grpc.target` (gRPC naming); `None`: from the first request.
    pub target: Option<String>,
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
            exemplars: None,
            first_message: true,
            message_sizes: false,
            target: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("registry", &self.registry)
            .field("max_methods", &self.max_methods)
            .field("code_on_histogram", &self.code_on_histogram)
            .field("naming", &self.naming)
            .field("recorder", &self.recorder)
            .field("filter", &self.filter)
            .field("exemplars", &self.exemplars.as_ref().map(|_| ".."))
            .field("first_message", &self.first_message)
            .field("message_sizes", &self.message_sizes)
            .field("target", &self.target)
            .finish()
    }
}
