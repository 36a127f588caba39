//! The Pushgateway feature against a real HTTP server on loopback that records what it
//! receives, as a Pushgateway would.

#![cfg(feature = "push-gateway")]

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{TestServer, echo_registry, req};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tonic_metrics::{Error, PrometheusExporter, ServerMetricsLayer, push::PushGateway};
use tonic_metrics_testing::exposition;

/// One request as the fake gateway saw it.
#[derive(Debug, Clone)]
struct Pushed {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// A fake Pushgateway answering `status` to everything and keeping every request.
async fn gateway(status: u16) -> (SocketAddr, Arc<Mutex<Vec<Pushed>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let header = |name| {
                            request.headers().get(name).map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
                        };
                        let pushed = Pushed {
                            method: request.method().to_string(),
                            path: request.uri().path().to_owned(),
                            authorization: header(http::header::AUTHORIZATION),
                            content_type: header(http::header::CONTENT_TYPE),
                            body: String::new(),
                        };
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        store
                            .lock()
                            .unwrap()
                            .push(Pushed { body: String::from_utf8(body.to_vec()).unwrap(), ..pushed });
                        // A refusing gateway says why, as the real one does.
                        let reason = if status == 200 { "" } else { "pushed metrics are invalid" };
                        let mut response = Response::new(Full::new(bytes::Bytes::from_static(reason.as_bytes())));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

fn handled_ok(body: &str) -> f64 {
    exposition::parse(body)
        .unwrap()
        .iter()
        .filter(|s| {
            s.name == "grpc_server_handled_total"
                && s.labels.get("grpc_method").map(String::as_str) == Some("UnaryEcho")
                && s.labels.get("grpc_code").map(String::as_str) == Some("OK")
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn pushes_on_schedule_and_once_more_at_shutdown() {
    let (addr, seen) = gateway(200).await;
    let endpoint = format!("http://{addr}/metrics/job/batch/instance/a");
    let gateway =
        PushGateway::new(&endpoint).with_interval(Duration::from_millis(100)).with_basic_auth("user", "secret");
    let (recorder, pusher) = PrometheusExporter::new().build_push_gateway(gateway).unwrap();
    let server =
        TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    let mut client = server.client().await;
    client.unary_echo(req("one")).await.unwrap();

    // A scheduled push carries the first call.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.lock().unwrap().iter().any(|p| handled_ok(&p.body) == 1.0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no scheduled push within 10 s");

    // The last call lands only through the final push at shutdown.
    client.unary_echo(req("two")).await.unwrap();
    pusher.shutdown().await.unwrap();
    let pushes = seen.lock().unwrap().clone();
    let last = pushes.last().unwrap();
    assert_eq!(handled_ok(&last.body), 2.0, "{}", last.body);
    for push in &pushes {
        assert_eq!(push.method, "PUT");
        assert_eq!(push.path, "/metrics/job/batch/instance/a");
        // base64("user:secret")
        assert_eq!(push.authorization.as_deref(), Some("Basic dXNlcjpzZWNyZXQ="));
        assert!(push.content_type.as_deref().is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    }
    // Pushes before the server applied the layer may be empty; any after a call is a real histogram.
    for push in pushes.iter().filter(|p| handled_ok(&p.body) >= 1.0) {
        assert!(push.body.contains("grpc_server_handling_seconds_bucket{"), "a real histogram: {}", push.body);
    }
    // After shutdown nothing else arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.lock().unwrap().len(), pushes.len());
    server.stop().await;
}

#[tokio::test]
async fn bad_endpoints_and_failed_pushes_are_typed_errors() {
    for endpoint in [
        "https://gw:9091/metrics/job/x",
        "gw:9091/metrics/job/x",
        "http://gw:9091/other",
        "not a url",
        "http://user:pass@gw:9091/metrics/job/x",
        "http://gw:9091/metrics/job/",
        "http://gw:9091/metrics/job/x/instance",
        "http://gw:9091/metrics/job/x//a",
    ] {
        match PrometheusExporter::new().build_push_gateway(PushGateway::new(endpoint)) {
            Err(error @ Error::InvalidPushGatewayEndpoint { .. }) => {
                assert!(error.to_string().contains("http://HOST:9091/metrics/job/JOB"), "{error}")
            }
            other => panic!("{endpoint}: expected InvalidPushGatewayEndpoint, got {other:?}"),
        }
    }

    // A gateway that refuses the push: the error names the status; the schedule carries on.
    let (addr, seen) = gateway(500).await;
    let gateway = PushGateway::new(format!("http://{addr}/metrics/job/x")).with_post();
    let (_recorder, pusher) = PrometheusExporter::new().build_push_gateway(gateway).unwrap();
    let error = pusher.push().await.unwrap_err();
    assert!(matches!(error, Error::Push { .. }) && error.to_string().contains("500"), "{error}");
    assert!(error.to_string().contains("pushed metrics are invalid"), "the gateway's reason: {error}");
    assert_eq!(seen.lock().unwrap()[0].method, "POST");

    // Nobody listening: a connection error, not a hang or a panic.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (_recorder, pusher) = PrometheusExporter::new()
        .build_push_gateway(PushGateway::new(format!("http://{closed}/metrics/job/x")))
        .unwrap();
    let error = pusher.shutdown().await.unwrap_err();
    assert!(error.to_string().contains("cannot connect"), "{error}");
}
