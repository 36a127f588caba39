//! The server side: `grpc_server_*` metrics for a tonic server.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    body::{RequestBody, ResponseBody},
    call::Call,
    future::ResponseFuture,
    layer::{GrpcMetrics, Side, sealed},
};

/// Marker for the server side: records `grpc_server_*`, naming each RPC from its path.
///
/// The request body counts `grpc_server_msg_received_total`, the response body
/// `grpc_server_msg_sent_total`. An error from the inner service counts as `Unknown`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Server;

impl sealed::Sealed for Server {
    const IS_SERVER: bool = true;
}

impl Side for Server {}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S, Server>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: 'static,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = self.table.lookup_path(request.uri().path()).map(Call::start);
        let method = call.as_ref().map(|call| call.method().clone());
        // If the inner `call` panics, `call` is dropped while unwinding and records `Canceled`.
        let future = self.inner.call(request.map(|body| RequestBody::new(body, method)));
        ResponseFuture::new(future, call)
    }
}
