//! The response future: finishes the RPC early when the head already decides it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::{
    body::{ResponseBody, grpc_status},
    call::Call,
    code::GrpcCode,
};

pin_project! {
    /// Response future of [`GrpcMetrics`](crate::GrpcMetrics).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

pin_project! {
    /// The inner future of the client side, with its error turned into the
    /// `tonic::Status` (boxed) that tonic's client gives the caller, so that the layer
    /// records the code the caller sees.
    #[derive(Debug)]
    pub struct BoxErrorFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> BoxErrorFuture<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F, T, E> Future for BoxErrorFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<crate::BoxError>,
{
    type Output = Result<T, crate::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Turn the error into the `Status` tonic's client will hand the caller (an h2
        // RST_STREAM(CANCEL) is `Cancelled`, a connection lost mid-call `Unknown`, a refused
        // connection `Unavailable`), so the layer records the code the caller sees. tonic
        // passes a `Status` through unchanged, and keeps any other error as its source.
        self.project().inner.poll(cx).map_err(|error| Box::new(tonic::Status::from_error(error.into())) as _)
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Option<Call>) -> Self {
        Self { inner, call }
    }
}

/// The status a response head settles on its own: a non-200 HTTP status, a
/// trailers-only response (`grpc-status` in the headers, how tonic returns a handler's
/// `Err`), or a 200 whose body is already over with no status at all.
fn status_from_head<B: Body>(response: &Response<B>) -> Option<GrpcCode> {
    if response.status() != StatusCode::OK {
        return Some(GrpcCode::from_http_status(response.status()));
    }
    grpc_status(response.headers()).or_else(|| response.body().is_end_stream().then_some(GrpcCode::Unknown))
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let (Some(call), Some(code)) = (call.as_mut(), status_from_head(&response)) {
                    call.finish(code);
                }
                Ok(response.map(|body| ResponseBody::new(body, call)))
            }
            Err(error) => {
                if let Some(call) = call.as_mut() {
                    call.fail(&error);
                }
                Err(error)
            }
        })
    }
}
