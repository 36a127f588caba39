//! Deadlines: a call that ends or is dropped at or after the deadline its request carried
//! (`grpc-timeout`) is `DeadlineExceeded` on both sides, as in gRPC's spec and Go; a call
//! dropped before it stays `Canceled`. tonic's own client timeout (`TimeoutExpired`) is
//! `DeadlineExceeded` too.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Endpoint};
use tonic_metrics::{ClientMetricsLayer, ServerMetricsLayer, names::*};
use tonic_metrics_testing::EchoClient;
use tower::ServiceBuilder;

struct Sides {
    server: TestServer,
    server_metrics: Recorded,
    client_metrics: Recorded,
}

async fn sides() -> Sides {
    let (recorder, server_metrics) = Recorded::new();
    let server =
        TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    let (_, client_metrics) = Recorded::new();
    Sides { server, server_metrics, client_metrics }
}

impl Sides {
    fn client_layer(&mut self) -> ClientMetricsLayer {
        let (recorder, client_metrics) = Recorded::new();
        self.client_metrics = client_metrics;
        ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)
    }

    /// Waits until the server has handled `n` calls, then checks both sides' codes.
    async fn expect(&self, kind: &str, name: &str, code: &str, both_sides: bool) {
        let labels = with_code(method(kind, name), code);
        self.server_metrics
            .eventually(&format!("the server recorded {name} as {code}"), |m| {
                m.counter(SERVER_HANDLED, &labels) == Some(1)
            })
            .await;
        assert_eq!(
            self.server_metrics.counter_sum(SERVER_HANDLED),
            1,
            "{:?}",
            self.server_metrics.series(SERVER_HANDLED)
        );
        if both_sides {
            assert_eq!(self.client_metrics.counter(CLIENT_HANDLED, &labels), Some(1));
            assert_eq!(self.client_metrics.counter_sum(CLIENT_HANDLED), 1);
        }
    }
}

#[tokio::test]
async fn an_expired_unary_deadline_is_deadline_exceeded_on_both_sides() {
    let mut sides = sides().await;
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(sides.server.channel().await));
    let mut request = Request::new(req("sleep:1000"));
    request.set_timeout(Duration::from_millis(50));
    let status = client.unary_echo(request).await.unwrap_err();
    // What the caller sees depends on which timer wins; the layers agree either way.
    assert!(matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded), "{status:?}");
    sides.expect("unary", "UnaryEcho", "DeadlineExceeded", true).await;
    assert_eq!(
        sides.client_metrics.counter(CLIENT_HANDLED, &with_code(method("unary", "UnaryEcho"), "Canceled")),
        Some(0)
    );
    sides.server.stop().await;
}

#[tokio::test]
async fn a_call_dropped_before_its_deadline_stays_canceled() {
    let mut sides = sides().await;
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(sides.server.channel().await));
    let mut request = Request::new(req("sleep:1000"));
    request.set_timeout(Duration::from_secs(10));
    // The caller gives up after 50 ms, long before the 10 s deadline.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.unary_echo(request)).await;
    assert!(gave_up.is_err());
    sides.expect("unary", "UnaryEcho", "Canceled", true).await;
    sides.server.stop().await;
}

#[tokio::test]
async fn tonics_own_client_timeout_is_deadline_exceeded() {
    let mut sides = sides().await;
    // `Endpoint::timeout` is enforced inside the channel and sends no `grpc-timeout`: the
    // layer learns of it from tonic's `TimeoutExpired` error.
    let channel = Endpoint::from_shared(format!("http://{}", sides.server.addr))
        .unwrap()
        .timeout(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(channel));
    let status = client.unary_echo(req("sleep:1000")).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "the caller still sees tonic's own status: {status:?}");
    let labels = with_code(method("unary", "UnaryEcho"), "DeadlineExceeded");
    assert_eq!(sides.client_metrics.counter(CLIENT_HANDLED, &labels), Some(1));
    assert_eq!(sides.client_metrics.counter_sum(CLIENT_HANDLED), 1);
    // The server was never told of the deadline: the reset stream is a cancel there.
    sides.expect("unary", "UnaryEcho", "Canceled", false).await;
    sides.server.stop().await;
}

#[tokio::test]
async fn a_deadline_that_fires_mid_stream_is_deadline_exceeded_on_both_sides() {
    let mut sides = sides().await;
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(sides.server.channel().await));
    let timeout = Duration::from_millis(250);
    let mut request = Request::new(req("sleep:100"));
    request.set_timeout(timeout);
    let deadline = Instant::now() + timeout;
    let mut stream = client.server_streaming_echo(request).await.unwrap().into_inner();
    // The caller enforces its deadline on the stream, as a gRPC client does: 2 of the 5
    // responses (one every 100 ms) arrive in time, then the stream is dropped.
    let mut received = 0;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        message.unwrap();
        received += 1;
    }
    assert_eq!(received, 2);
    drop(stream);
    sides.expect("server_stream", "ServerStreamingEcho", "DeadlineExceeded", true).await;
    sides.server.stop().await;
}

#[tokio::test]
async fn a_stream_that_ends_after_its_deadline_is_deadline_exceeded() {
    let mut sides = sides().await;
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(sides.server.channel().await));
    // tonic enforces deadlines only up to the response head, so this stream runs to its
    // end (5 × 100 ms) past its 250 ms deadline, with an OK status. The deadline decides.
    let mut request = Request::new(req("sleep:100"));
    request.set_timeout(Duration::from_millis(250));
    let stream = client.server_streaming_echo(request).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 5);
    sides.expect("server_stream", "ServerStreamingEcho", "DeadlineExceeded", true).await;
    sides.server.stop().await;
}

#[tokio::test]
async fn a_call_within_its_deadline_keeps_its_code() {
    let mut sides = sides().await;
    let layer = sides.client_layer();
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(sides.server.channel().await));
    let mut request = Request::new(req("fail:NotFound"));
    request.set_timeout(Duration::from_secs(10));
    assert_eq!(client.unary_echo(request).await.unwrap_err().code(), Code::NotFound);
    sides.expect("unary", "UnaryEcho", "NotFound", true).await;
    sides.server.stop().await;
}
