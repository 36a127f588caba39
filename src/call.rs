//! One in-flight RPC: started once, finished exactly once.

use std::{any::Any, sync::Arc, time::Instant};

use crate::{code::GrpcCode, instruments::MethodInstruments};

/// An RPC between `call()` and the end of its response stream.
///
/// It counts `started` when created and `handled` (with the latency) on the first
/// [`finish`](Call::finish). If it is dropped unfinished (the response future or body
/// was dropped: client cancel, RST_STREAM, deadline, shutdown, or a panic unwinding
/// through the stack), it records `Canceled` with the time until the drop. Whatever
/// path an RPC takes, `handled` is counted exactly once.
#[derive(Debug)]
pub(crate) struct Call {
    method: Arc<MethodInstruments>,
    start: Instant,
    finished: bool,
}

impl Call {
    pub fn start(method: Arc<MethodInstruments>) -> Self {
        method.record_started();
        Self { method, start: Instant::now(), finished: false }
    }

    pub fn method(&self) -> &Arc<MethodInstruments> {
        &self.method
    }

    /// Records the outcome, once; later calls do nothing.
    pub fn finish(&mut self, code: GrpcCode) {
        if !self.finished {
            self.finished = true;
            self.method.record_handled(code, self.start.elapsed());
        }
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
        self.finish(GrpcCode::Canceled);
    }
}

/// The gRPC code an error carries, if it is (or wraps) a `tonic::Status`.
fn status_code_of<E: 'static>(error: &E) -> Option<GrpcCode> {
    let any: &dyn Any = error;
    if let Some(status) = any.downcast_ref::<tonic::Status>() {
        return Some(status.code().into());
    }
    let boxed = any.downcast_ref::<crate::BoxError>()?;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(boxed.as_ref());
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return Some(status.code().into());
        }
        source = error.source();
    }
    None
}
