//! One in-flight RPC: started once, finished exactly once.

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{code::GrpcCode, exemplar::ExemplarLabels, instruments::MethodInstruments};

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
#[derive(Debug)]
pub(crate) struct Call {
    method: Arc<MethodInstruments>,
    start: Instant,
    /// The request's `grpc-timeout`, measured from `start`.
    timeout: Option<Duration>,
    /// Attached to the latency observation.
    exemplar: Option<ExemplarLabels>,
    finished: bool,
}

impl Call {
    pub fn start(method: Arc<MethodInstruments>, timeout: Option<Duration>, exemplar: Option<ExemplarLabels>) -> Self {
        method.record_started();
        Self { method, start: Instant::now(), timeout, exemplar, finished: false }
    }

    pub fn method(&self) -> &Arc<MethodInstruments> {
        &self.method
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
        self.method.record_handled(code, elapsed, self.exemplar.as_ref());
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

    pub fn record_response_messages(&self, count: u64) {
        if count > 0 {
            self.method.record_response_messages(count);
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
