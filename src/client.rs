//! The client side: `grpc_client_*` metrics for a tonic `Channel`.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::{
    BoxError,
    body::{RequestBody, ResponseBody},
    call::Call,
    deadline::grpc_timeout,
    future::{BoxErrorFuture, ResponseFuture},
    layer::GrpcMetrics,
    side::Client,
};

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
        let call = method.map(|method| {
            self.table.note_target(request.uri());
            Call::start(method, grpc_timeout(request.headers()), self.table.exemplar(&request))
        });
        let future = self.inner.call(request.map(|body| tonic::body::Body::new(RequestBody::new(body, call.as_ref()))));
        ResponseFuture::new(BoxErrorFuture::new(future), call)
    }
}
