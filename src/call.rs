//! One in-flight RPC: started once, finished exactly once.

use std::{
    any::Any,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{code::GrpcCode, exemplar::ExemplarLabels, frame::FrameCounter, instruments::MethodInstruments};

/// How much earlier than its deadline a dropped call still counts as `DeadlineExceeded`.
///
/// tonic starts its `grpc-timeout` timer before the request reaches this layer (its timeout
/// service sits outside user layers), so when the timer drops the call, the layer's own
/// clock reads a few microseconds short of the timeout. A millisecond covers that (and the
/// timer's millisecond granularity) while still telling a client's early cancel apart.
const DROP_SLACK: Duration = Duration::from_millis(1);

/// An RPC between `call()` and the end of its response stream.
///
/// It counts `started` when created and `handled` (with the latency) on the first
/// [`finish`](Call::finish). If it is dropped unfinished (the response future or body
/// was dropped: client cancel, RST_STREAM, deadline, shutdown, or a panic unwinding
/// through the stack), it records `Canceled` with the time until the drop. Whatever
/// path an RPC takes, `handled` is counted exactly once.
///
/// A call whose request carried a deadline (`grpc-timeout`) and that ends or is dropped at
/// or after it is `DeadlineExceeded`, whatever else it ended with, as in gRPC's spec and
/// go-grpc-prometheus: the deadline decides the outcome the caller sees.
///
/// For a streaming method it also observes the time to its first response message, once,
/// and only if that message comes before the end: a call that ends without one is not
/// observed. Under gRPC naming it totals the bytes of the messages both ways, the
/// request's in a counter it shares with the request body (the one allocation per call
/// that scheme costs), and records them at the end.
#[derive(Debug)]
pub(crate) struct Call {
    method: Arc<MethodInstruments>,
    start: Instant,
    /// The request's `grpc-timeout`, measured from `start`.
    timeout: Option<Duration>,
    /// Attached to the latency observation.
    exemplar: Option<ExemplarLabels>,
    finished: bool,
    /// The time to the first response message is still to be observed.
    awaiting_first_message: bool,
    /// gRPC naming: the request's message bytes so far, counted by the request body.
    request_bytes: Option<Arc<RequestBytes>>,
    /// gRPC naming: the response's message bytes so far (only this call sees them).
    response_bytes: u64,
}

/// The request message bytes of one call so far (gRPC naming), shared by the call and its
/// request body, which may live on different tasks.
#[derive(Debug, Default)]
pub(crate) struct RequestBytes(AtomicU64);

impl RequestBytes {
    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Call {
    pub fn start(method: Arc<MethodInstruments>, timeout: Option<Duration>, exemplar: Option<ExemplarLabels>) -> Self {
        method.record_started();
        let request_bytes = method.counts_call_bytes().then(Arc::default);
        Self {
            awaiting_first_message: method.times_first_message(),
            method,
            start: Instant::now(),
            timeout,
            exemplar,
            finished: false,
            request_bytes,
            response_bytes: 0,
        }
    }

    pub fn method(&self) -> &Arc<MethodInstruments> {
        &self.method
    }

    /// The counter the request body adds its message bytes to (gRPC naming only).
    pub fn request_bytes(&self) -> Option<Arc<RequestBytes>> {
        self.request_bytes.clone()
    }

    /// Records the outcome, once; later calls do nothing.
    pub fn finish(&mut self, code: GrpcCode) {
        self.settle(code, Duration::ZERO);
    }

    fn settle(&mut self, code: GrpcCode, slack: Duration) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.start.elapsed();
        let code = match self.timeout {
            Some(timeout) if elapsed + slack >= timeout => GrpcCode::DeadlineExceeded,
            _ => code,
        };
        let request = self.request_bytes.as_ref().map_or(0, |bytes| bytes.0.load(Ordering::Relaxed));
        self.method.record_handled(code, elapsed, self.exemplar.as_ref(), request, self.response_bytes);
    }

    /// Records the outcome of an error from the inner service or body.
    ///
    /// A `tonic::Status` (the error itself or in a boxed error's source chain) carries its
    /// own code; anything else is `Unknown`. On the client, `BoxErrorFuture` has already
    /// turned the channel's errors into the `Status` the caller gets, so that one mapping
    /// decides transport failures (`Unavailable`, `Canceled`, ...).
    pub fn fail<E: 'static>(&mut self, error: &E) {
        self.finish(status_code_of(error).unwrap_or(GrpcCode::Unknown));
    }

    /// Feeds a chunk of the response stream: counts its messages (and sizes, when on),
    /// adds their bytes, and observes the time to the first one.
    #[inline]
    pub fn observe_response(&mut self, frames: &mut FrameCounter, chunk: &[u8]) {
        let (count, bytes) = self.method.observe_response(frames, chunk);
        self.response_bytes += bytes;
        if self.awaiting_first_message && count > 0 {
            self.awaiting_first_message = false;
            // Only before the end: then every call is either observed or ended without a
            // message, and the two add up to `handled`.
            if !self.finished {
                self.method.record_first_message(self.start.elapsed());
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.settle(GrpcCode::Canceled, DROP_SLACK);
    }
}

/// The gRPC code an error carries, if it is (or wraps) a `tonic::Status`.
///
/// tonic's own client-side timeout (`TimeoutExpired`, which `Status::from_error` turns into
/// `Cancelled` for the caller) is the call's deadline expiring: `DeadlineExceeded`.
fn status_code_of<E: 'static>(error: &E) -> Option<GrpcCode> {
    let any: &dyn Any = error;
    let first: &(dyn std::error::Error + 'static) = if let Some(status) = any.downcast_ref::<tonic::Status>() {
        status
    } else {
        any.downcast_ref::<crate::BoxError>()?.as_ref()
    };
    let mut code = None;
    let mut source = Some(first);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return Some(GrpcCode::DeadlineExceeded);
        }
        if code.is_none()
            && let Some(status) = error.downcast_ref::<tonic::Status>()
        {
            code = Some(status.code().into());
        }
        source = error.source();
    }
    code
}
