//! What each request gets: `/metrics`, the health and root pages, and errors.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn respond(request: &Request<Incoming>, allowed: bool, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response
    };
    let text = |status: StatusCode, body: &'static str| {
        reply(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
    };
    if !allowed {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let text = Bytes::from(handle.render());
            let length = header::HeaderValue::from(text.len());
            // HEAD gets the Content-Length a GET would, and no body.
            let body = if request.method() == Method::HEAD { Bytes::new() } else { text };
            let mut response = reply(StatusCode::OK, TEXT_FORMAT, body);
            response.headers_mut().insert(header::CONTENT_LENGTH, length);
            response
        }
        "/health" | "/healthz" => text(StatusCode::OK, "OK\n"),
        "/" => text(StatusCode::OK, "tonic-metrics exporter: scrape /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: scrape /metrics\n"),
    }
}
