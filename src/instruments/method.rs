//! One method's labels and its metric handles, resolved against the recorder once.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};

use super::config::RecorderRef;
use crate::{
    code::GrpcCode,
    exemplar::ExemplarLabels,
    frame::FrameCounter,
    names::{
        GRPC_ATTR_METHOD, GRPC_ATTR_STATUS, GRPC_ATTR_TARGET, GRPC_OTHER_METHOD, LABEL_CODE, LABEL_METHOD,
        LABEL_SERVICE, LABEL_TYPE, MetricNames, Naming, OTEL_ATTR_METHOD, OTEL_ATTR_STATUS_CODE, OTEL_ATTR_SYSTEM_NAME,
        OTEL_OTHER_METHOD, UNKNOWN,
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
    /// Time to first message of streaming methods (only under go-grpc-prometheus naming).
    pub first_message: bool,
    /// Per-message size histograms (only under go-grpc-prometheus naming).
    pub message_sizes: bool,
    /// The client's `grpc.target` (gRPC naming, client side): given, or set from the first
    /// request before the first handle is registered.
    pub target: OnceLock<SharedString>,
    pub described: OnceLock<()>,
}

impl Binder {
    fn with_recorder<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        self.recorder.with(|recorder| {
            self.described.get_or_init(|| crate::names::describe_all(recorder));
            f(recorder)
        })
    }

    fn naming(&self) -> Naming {
        self.names.naming
    }

    /// Whether the client's `grpc.target` labels every series.
    pub(crate) fn wants_target(&self) -> bool {
        self.naming() == Naming::Grpc && !self.names.receives_requests
    }
}

/// The handles of one method, resolved once against the recorder.
struct Handles {
    started: Counter,
    request_messages: Counter,
    response_messages: Counter,
    /// Time to first message (noop unless the method is observed).
    first_message: Histogram,
    /// Per-message sizes (noop unless on).
    request_sizes: Histogram,
    response_sizes: Histogram,
    handled: [OnceLock<Counter>; GrpcCode::COUNT],
    /// One histogram, or one per code when the code label is on.
    seconds: [OnceLock<Histogram>; GrpcCode::COUNT],
    /// gRPC naming only: the per-call histograms beside the duration, by code (boxed, so
    /// the other schemes do not pay for them).
    per_call: Option<Box<[OnceLock<CallHistograms>; GrpcCode::COUNT]>>,
}

/// gRPC naming: what one call records at its end besides its duration, for one code.
struct CallHistograms {
    request_bytes: Histogram,
    response_bytes: Histogram,
    /// Client only: `grpc.client.call.duration` (noop on a server).
    call_duration: Histogram,
}

/// What the layer reads off each message's frame prefix, besides the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observe {
    /// Nothing else.
    Count,
    /// Each message's size, into the size histogram.
    Sizes,
    /// The messages' total bytes, for the call (gRPC naming).
    Bytes,
}

/// One method's labels and lazily resolved metric handles.
pub(crate) struct MethodInstruments {
    binder: Arc<Binder>,
    labels: Box<[Label]>,
    /// A method of the registry: its series are all created up front, as Go's
    /// `InitializeMetrics` creates them.
    registered: bool,
    /// A server-streaming or bidi method whose time to first message is recorded.
    first_message: bool,
    /// gRPC naming: calls total their message bytes.
    call_bytes: bool,
    /// What a chunk of messages costs: one flag to read on the hot path.
    observe: Observe,
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
        // Each name is allocated once and shared by every series of the method (up to 20
        // keys): a key's labels are then reference counts, not copies.
        let shared = |text: &str| SharedString::from_shared(Arc::<str>::from(text));
        let labels: Box<[Label]> = match (binder.naming(), name) {
            (Naming::GoGrpcPrometheus, Some((service, method))) => Box::new([
                Label::from_static_parts(LABEL_TYPE, kind.as_str()),
                Label::new(LABEL_SERVICE, shared(service)),
                Label::new(LABEL_METHOD, shared(method)),
            ]),
            (Naming::GoGrpcPrometheus, None) => Box::new([
                Label::from_static_parts(LABEL_TYPE, kind.as_str()),
                Label::from_static_parts(LABEL_SERVICE, UNKNOWN),
                Label::from_static_parts(LABEL_METHOD, UNKNOWN),
            ]),
            (Naming::OpenTelemetry, name) => Box::new([
                Label::from_static_parts(OTEL_ATTR_SYSTEM_NAME, "grpc"),
                match name {
                    Some((service, method)) => Label::new(OTEL_ATTR_METHOD, shared(&format!("{service}/{method}"))),
                    None => Label::from_static_parts(OTEL_ATTR_METHOD, OTEL_OTHER_METHOD),
                },
            ]),
            (Naming::Grpc, name) => Box::new([match name {
                Some((service, method)) => Label::new(GRPC_ATTR_METHOD, shared(&format!("{service}/{method}"))),
                None => Label::from_static_parts(GRPC_ATTR_METHOD, GRPC_OTHER_METHOD),
            }]),
        };
        let first_message = binder.first_message
            && binder.naming() == Naming::GoGrpcPrometheus
            && matches!(kind, GrpcType::ServerStream | GrpcType::BidiStream);
        let call_bytes = binder.naming() == Naming::Grpc;
        let observe = match (call_bytes, binder.message_sizes) {
            (true, _) => Observe::Bytes,
            (false, true) => Observe::Sizes,
            (false, false) => Observe::Count,
        };
        Self { binder, labels, registered, first_message, call_bytes, observe, handles: OnceLock::new() }
    }

    fn key(&self, name: &'static str, code: Option<GrpcCode>) -> Key {
        let mut labels = self.labels.to_vec();
        if self.binder.wants_target() {
            let target = self.binder.target.get().cloned().unwrap_or(SharedString::const_str(UNKNOWN));
            labels.push(Label::new(GRPC_ATTR_TARGET, target));
        }
        if let Some(code) = code {
            labels.push(match self.binder.naming() {
                Naming::GoGrpcPrometheus => Label::from_static_parts(LABEL_CODE, code.as_str()),
                Naming::OpenTelemetry => Label::from_static_parts(OTEL_ATTR_STATUS_CODE, code.as_canonical_str()),
                Naming::Grpc => Label::from_static_parts(GRPC_ATTR_STATUS, code.as_canonical_str()),
            });
        }
        Key::from_parts(name, labels)
    }

    /// Whether the go-grpc-prometheus counters are recorded (only under that naming).
    fn has_counters(&self) -> bool {
        self.binder.naming() == Naming::GoGrpcPrometheus
    }

    #[inline]
    fn handles(&self) -> &Handles {
        match self.handles.get() {
            Some(handles) => handles,
            None => self.init_handles(),
        }
    }

    #[cold]
    fn init_handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let names = self.binder.names;
            let naming = self.binder.naming();
            let counters = self.has_counters();
            let sizes = counters && self.binder.message_sizes;
            let (started, received, sent, first_message, received_sizes, sent_sizes) =
                self.binder.with_recorder(|recorder| {
                    let counter = |on: bool, name| {
                        if on { recorder.register_counter(&self.key(name, None), &METADATA) } else { Counter::noop() }
                    };
                    let histogram = |on: bool, name| {
                        if on {
                            recorder.register_histogram(&self.key(name, None), &METADATA)
                        } else {
                            Histogram::noop()
                        }
                    };
                    (
                        counter(naming != Naming::OpenTelemetry, names.started),
                        counter(counters, names.msg_received),
                        counter(counters, names.msg_sent),
                        histogram(self.first_message, names.first_message),
                        histogram(sizes, names.msg_received_size),
                        histogram(sizes, names.msg_sent_size),
                    )
                });
            let ((request_messages, request_sizes), (response_messages, response_sizes)) = if names.receives_requests {
                ((received, received_sizes), (sent, sent_sizes))
            } else {
                ((sent, sent_sizes), (received, received_sizes))
            };
            let handles = Handles {
                started,
                request_messages,
                response_messages,
                first_message,
                request_sizes,
                response_sizes,
                handled: Default::default(),
                seconds: Default::default(),
                per_call: (naming == Naming::Grpc).then(Default::default),
            };
            // gRPC's own metrics create no series before they record into them.
            if naming == Naming::Grpc {
                return handles;
            }
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

    fn call_histograms<'h>(
        &self,
        per_call: &'h [OnceLock<CallHistograms>; GrpcCode::COUNT],
        code: GrpcCode,
    ) -> &'h CallHistograms {
        per_call[code.index()].get_or_init(|| {
            let names = self.binder.names;
            let (request, response) = if names.receives_requests {
                (names.call_rcvd_bytes, names.call_sent_bytes)
            } else {
                (names.call_sent_bytes, names.call_rcvd_bytes)
            };
            self.binder.with_recorder(|recorder| CallHistograms {
                request_bytes: recorder.register_histogram(&self.key(request, Some(code)), &METADATA),
                response_bytes: recorder.register_histogram(&self.key(response, Some(code)), &METADATA),
                call_duration: match names.call_duration {
                    Some(name) => recorder.register_histogram(&self.key(name, Some(code)), &METADATA),
                    None => Histogram::noop(),
                },
            })
        })
    }

    /// Resolves the handles now, creating the method's zero-valued series (none under
    /// gRPC naming, whose series appear with their first observation).
    pub fn preinitialize(&self) {
        if self.binder.naming() != Naming::Grpc {
            self.handles();
        }
    }

    /// The method's labels (for tests of the lookup).
    #[cfg(test)]
    pub(crate) fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Whether calls of this method observe their time to first message.
    #[inline]
    pub fn times_first_message(&self) -> bool {
        self.first_message
    }

    /// Whether calls of this method count their message bytes (gRPC naming's per-call
    /// totals).
    #[inline]
    pub fn counts_call_bytes(&self) -> bool {
        self.call_bytes
    }

    pub fn record_started(&self) {
        self.handles().started.increment(1);
    }

    /// Records a call's end: `handled`, its latency, and under gRPC naming its byte totals
    /// (`request_bytes`, `response_bytes`) and the client's call duration.
    pub fn record_handled(
        &self,
        code: GrpcCode,
        elapsed: Duration,
        exemplar: Option<&ExemplarLabels>,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let handles = self.handles();
        self.handled_counter(handles, code).increment(1);
        let seconds = self.seconds_histogram(handles, code);
        match exemplar {
            Some(exemplar) => crate::exemplar::offer(exemplar, || seconds.record(elapsed.as_secs_f64())),
            None => seconds.record(elapsed.as_secs_f64()),
        }
        if let Some(per_call) = &handles.per_call {
            let call = self.call_histograms(per_call, code);
            // Byte counts are far below 2^53: exact as f64.
            call.request_bytes.record(request_bytes as f64);
            call.response_bytes.record(response_bytes as f64);
            call.call_duration.record(elapsed.as_secs_f64());
        }
    }

    pub fn record_first_message(&self, elapsed: Duration) {
        self.handles().first_message.record(elapsed.as_secs_f64());
    }

    /// Feeds a chunk of the request stream to `frames`: counts the messages it completes
    /// (and records their sizes, when on). Returns the completed messages' bytes (0 when
    /// sizes are on: only gRPC naming needs the bytes, and it has no sizes).
    #[inline]
    pub fn observe_request(&self, frames: &mut FrameCounter, chunk: &[u8]) -> u64 {
        let handles = self.handles();
        self.observe(frames, chunk, &handles.request_messages, &handles.request_sizes).1
    }

    /// Feeds a chunk of the response stream to `frames`: counts the messages it completes
    /// (and records their sizes, when on). Returns how many messages it completed and
    /// their bytes (0 when sizes are on, as for requests).
    #[inline]
    pub fn observe_response(&self, frames: &mut FrameCounter, chunk: &[u8]) -> (u64, u64) {
        let handles = self.handles();
        self.observe(frames, chunk, &handles.response_messages, &handles.response_sizes)
    }

    #[inline(always)]
    fn observe(&self, frames: &mut FrameCounter, chunk: &[u8], messages: &Counter, sizes: &Histogram) -> (u64, u64) {
        let mut bytes = 0u64;
        // Each its own loop: plain counting (the common case) pays for nothing else.
        let count = match self.observe {
            Observe::Count => frames.feed(chunk),
            Observe::Sizes => frames.feed_with(chunk, |len| sizes.record(f64::from(len))),
            Observe::Bytes => frames.feed_with(chunk, |len| bytes += u64::from(len)),
        };
        if count > 0 {
            messages.increment(count);
        }
        (count, bytes)
    }
}
