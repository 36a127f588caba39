//! What each request gets: `/metrics` in the negotiated format and encoding, the health
//! and root pages, and errors.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use super::render::{Renderer, Variant};
use crate::exposition::{Format, negotiate::accepts_gzip};

/// What `GET /` answers: says what this is, and which process serves it (a process that
/// finds the metrics port taken reads this to tell a sibling from a stranger).
pub(crate) fn identity() -> String {
    format!(
        "tonic-metrics exporter: scrape /metrics\nprogram: {}\npid: {}\n",
        super::program_name(),
        std::process::id()
    )
}

pub(super) async fn respond<B>(request: Request<B>, allowed: bool, renderer: Arc<Renderer>) -> Response<Full<Bytes>> {
    let text =
        |status: StatusCode, body: Bytes| reply(status, HeaderValue::from_static("text/plain; charset=utf-8"), body);
    if !allowed {
        return text(StatusCode::FORBIDDEN, Bytes::from_static(b"forbidden\n"));
    }
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, Bytes::from_static(b"use GET\n"));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = match request.uri().path() {
        "/metrics" => {
            let variant = variant(request.uri().query(), request.headers());
            match renderer.render(variant).await {
                Ok(body) => {
                    let mut response =
                        reply(StatusCode::OK, HeaderValue::from_static(variant.format.content_type()), body);
                    let headers = response.headers_mut();
                    if variant.gzip {
                        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    // Caches must key on what was negotiated.
                    headers.insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
                    response
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: render failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(format!("{error}\n")))
                }
            }
        }
        "/health" | "/healthz" => text(StatusCode::OK, Bytes::from_static(b"OK\n")),
        "/" => text(StatusCode::OK, Bytes::from(identity())),
        _ => text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found: scrape /metrics\n")),
    };
    // HEAD gets the headers a GET would, Content-Length included, and no body.
    let length = HeaderValue::from(response_len(&response));
    response.headers_mut().insert(header::CONTENT_LENGTH, length);
    if head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// The format and encoding a scrape gets: `?format=text|openmetrics|protobuf` first (for
/// scrapers that cannot set headers), else the `Accept` header; gzip if
/// `Accept-Encoding` allows it.
fn variant(query: Option<&str>, headers: &HeaderMap) -> Variant {
    let header = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let asked = query.and_then(|query| {
        query.split('&').find_map(|pair| match pair {
            "format=text" => Some(Format::Text),
            "format=openmetrics" => Some(Format::OpenMetrics),
            "format=protobuf" => Some(Format::Protobuf),
            _ => None,
        })
    });
    let format = asked.unwrap_or_else(|| Format::negotiate(header(header::ACCEPT)));
    Variant { format, gzip: accepts_gzip(header(header::ACCEPT_ENCODING)) }
}

fn reply(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

fn response_len(response: &Response<Full<Bytes>>) -> u64 {
    http_body::Body::size_hint(response.body()).exact().unwrap_or(0)
}
