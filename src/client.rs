//! The client side: `grpc_client_*` metrics for a tonic `Channel`.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::{
    BoxError,
    body::{RequestBody, ResponseBody},
    call::Call,
    future::{BoxErrorFuture, ResponseFuture},
    layer::{GrpcMetrics, Side, sealed},
};

/// Marker for the client side: records `grpc_client_*`, naming each RPC from the
/// `tonic::GrpcMethod` extension that generated clients set (falling back to the path).
///
/// The request body counts `grpc_client_msg_sent_total`, the response body
/// `grpc_client_msg_received_total`. An error from the inner service is turned into the
/// `tonic::Status` tonic's client gives the caller (`Status::from_error`), and its code is
/// recorded: a refused connection is `Unavailable`, tonic's `TimeoutExpired` `Canceled`, a
/// connection lost mid-call `Unknown`, an HTTP/2 reset by its reason (`CANCEL` is
/// `Canceled`; tonic reads reset reasons only with its `server` feature, otherwise both
/// the caller and the layer see `Unknown`). The service's error type is [`BoxError`]
/// holding that `Status`, with the original error as its source: layers above this one
/// that inspect transport errors (retries, reconnects) belong below it.
///
/// The inner service takes `tonic::body::Body`, as a `Channel` does, so the counting
/// request body is boxed into one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client;

impl sealed::Sealed for Client {
    const IS_SERVER: bool = false;
}

impl Side for Client {}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S, Client>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<BoxErrorFuture<S::Future>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = match request.extensions().get::<tonic::GrpcMethod<'static>>() {
            Some(grpc) => self.table.lookup(grpc.service(), grpc.method()),
            None => self.table.lookup_path(request.uri().path()),
        };
        let call = method.map(Call::start);
        let method = call.as_ref().map(|call| call.method().clone());
        let future = self.inner.call(request.map(|body| tonic::body::Body::new(RequestBody::new(body, method))));
        ResponseFuture::new(BoxErrorFuture::new(future), call)
    }
}
