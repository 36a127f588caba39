//! Body wrappers: message counting from the framing, and the status from the trailers.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    call::{Call, RequestBytes},
    code::GrpcCode,
    frame::FrameCounter,
    instruments::MethodInstruments,
};

/// A `HeaderName` rather than a `&str`: looking a `&str` up parses and validates it as a
/// header name on every call (about 300 instructions, twice per RPC).
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The code in a `grpc-status` header or trailer, if present.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<GrpcCode> {
    headers.get(&GRPC_STATUS).map(|value| GrpcCode::from_header_value(value.as_bytes()))
}

pin_project! {
    /// The request body, counting the messages it carries (received on a server, sent
    /// by a client), their sizes when on, and under gRPC naming their bytes for the call.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        frames: FrameCounter,
        method: Option<Arc<MethodInstruments>>,
        // The call's request bytes (gRPC naming).
        bytes: Option<Arc<RequestBytes>>,
    }
}

impl<B> RequestBody<B> {
    /// The request body of `call` (`None`: a method that is not recorded).
    pub(crate) fn new(inner: B, call: Option<&Call>) -> Self {
        let (method, bytes) = match call {
            Some(call) => (Some(call.method().clone()), call.request_bytes()),
            None => (None, None),
        };
        Self { inner, frames: FrameCounter::new(), method, bytes }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body<Data = Bytes>> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(frame)), Some(method)) = (&frame, this.method.as_ref())
            && let Some(data) = frame.data_ref()
        {
            let bytes = method.observe_request(this.frames, data);
            if let Some(total) = this.bytes
                && bytes > 0
            {
                total.add(bytes);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response body: counts the messages it carries (sent by a server, received by a
    /// client) and finishes the RPC with the `grpc-status` of its trailers, at the end of
    /// the stream, so latency covers the whole stream.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        frames: FrameCounter,
        call: Option<Call>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, call: Option<Call>) -> Self {
        Self { inner, frames: FrameCounter::new(), call }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// A body that records nothing, so that generated clients' `with_interceptor` (which
/// needs `Default` response bodies) keeps working.
impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let Some(call) = this.call.as_mut() else {
            return Poll::Ready(frame);
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    call.observe_response(this.frames, data);
                    // A body that says it is over may never be polled again, so a missing
                    // status must be settled now rather than read as a drop.
                    if this.inner.is_end_stream() {
                        call.finish(GrpcCode::Unknown);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    call.finish(grpc_status(trailers).unwrap_or(GrpcCode::Unknown));
                }
            }
            Some(Err(error)) => call.fail(error),
            // The stream ended without trailers: no status is a broken response.
            None => call.finish(GrpcCode::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
