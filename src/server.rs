//! The server side: `grpc_server_*` metrics for a tonic server.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    body::{RequestBody, ResponseBody},
    call::Call,
    deadline::grpc_timeout,
    future::ResponseFuture,
    layer::GrpcMetrics,
    side::Server,
};

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
        let call = self
            .table
            .lookup_path(request.uri().path())
            .map(|method| Call::start(method, grpc_timeout(request.headers()), self.table.exemplar(&request)));
        let body = |body| RequestBody::new(body, call.as_ref());
        // If the inner `call` panics, `call` is dropped while unwinding and records `Canceled`.
        let future = self.inner.call(request.map(body));
        ResponseFuture::new(future, call)
    }
}
