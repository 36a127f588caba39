//! One method's labels and its metric handles, resolved against the recorder once.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};

use super::config::RecorderRef;
use crate::{
    code::GrpcCode,
    exemplar::ExemplarLabels,
    names::{
        LABEL_CODE, LABEL_METHOD, LABEL_SERVICE, LABEL_TYPE, MetricNames, Naming, OTEL_ATTR_METHOD,
        OTEL_ATTR_STATUS_CODE, OTEL_ATTR_SYSTEM_NAME, OTEL_OTHER_METHOD, UNKNOWN,
    },
    registry::GrpcType,
};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// What every method of one layer needs to resolve its handles.
#[derive(Debug)]
pub(crate) struct Binder {
    pub names: &'static MetricNames,
    pub recorder: RecorderRef,
    pub code_on_histogram: bool,
    pub described: OnceLock<()>,
}

impl Binder {
    fn with_recorder<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        self.recorder.with(|recorder| {
            self.described.get_or_init(|| crate::names::describe_all(recorder));
            f(recorder)
        })
    }
}

/// The handles of one method, resolved once against the recorder.
struct Handles {
    started: Counter,
    request_messages: Counter,
    response_messages: Counter,
    handled: [OnceLock<Counter>; GrpcCode::COUNT],
    /// One histogram, or one per code when the code label is on.
    seconds: [OnceLock<Histogram>; GrpcCode::COUNT],
}

/// One method's labels and lazily resolved metric handles.
pub(crate) struct MethodInstruments {
    binder: Arc<Binder>,
    labels: Box<[Label]>,
    /// A method of the registry: its series are all created up front, as Go's
    /// `InitializeMetrics` creates them.
    registered: bool,
    handles: OnceLock<Handles>,
}

impl fmt::Debug for MethodInstruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodInstruments").field("labels", &self.labels).finish_non_exhaustive()
    }
}

impl MethodInstruments {
    /// The instruments of a named method (`None`: the method the layer will not name);
    /// `registered` for a method of the registry.
    pub(crate) fn new(binder: Arc<Binder>, kind: GrpcType, name: Option<(&str, &str)>, registered: bool) -> Self {
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
        Self { binder, labels, registered, handles: OnceLock::new() }
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
            // Pre-initialise the series dashboards and alerts need from the start. A
            // registered method gets `handled` at zero for every code, as go-grpc-prometheus'
            // `InitializeMetrics` does, so that `rate()` and `increase()` see the first error
            // of each code and error-ratio sums give 0 rather than nothing. A method known only
            // from traffic gets `OK`: its other codes appear as they happen, so that traffic
            // cannot multiply the series by 17.
            let codes: &[GrpcCode] = if self.registered { &GrpcCode::ALL } else { &[GrpcCode::Ok] };
            for &code in codes {
                self.handled_counter(&handles, code);
            }
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

    /// The method's labels (for tests of the lookup).
    #[cfg(test)]
    pub(crate) fn labels(&self) -> &[Label] {
        &self.labels
    }

    pub fn record_started(&self) {
        self.handles().started.increment(1);
    }

    pub fn record_handled(&self, code: GrpcCode, elapsed: Duration, exemplar: Option<&ExemplarLabels>) {
        let handles = self.handles();
        self.handled_counter(handles, code).increment(1);
        let seconds = self.seconds_histogram(handles, code);
        match exemplar {
            Some(exemplar) => crate::exemplar::offer(exemplar, || seconds.record(elapsed.as_secs_f64())),
            None => seconds.record(elapsed.as_secs_f64()),
        }
    }

    pub fn record_request_messages(&self, count: u64) {
        self.handles().request_messages.increment(count);
    }

    pub fn record_response_messages(&self, count: u64) {
        self.handles().response_messages.increment(count);
    }
}
