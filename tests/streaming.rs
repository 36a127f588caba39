//! Streaming-grade metrics over a real loopback connection, server and client layers
//! together: the time to the first response message of streaming methods, and the size of
//! every message (uncompressed and gzip-compressed).

mod common;

use std::{io::Read as _, time::Duration};

use common::*;
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::{Code, codec::CompressionEncoding, transport::Channel};
use tonic_metrics::{ClientMetrics, ClientMetricsLayer, ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoClient, EchoRequest, EchoResponse, STREAM_RESPONSES};
use tower::ServiceBuilder;

struct Pair {
    server: TestServer,
    server_metrics: Recorded,
    client_metrics: Recorded,
    client: EchoClient<ClientMetrics<Channel>>,
}

/// A server and a client, each with its layer, registry and recorder; `change` configures
/// both layers.
async fn pair_with(
    gzip: bool,
    server_change: impl FnOnce(ServerMetricsLayer) -> ServerMetricsLayer,
    client_change: impl FnOnce(ClientMetricsLayer) -> ClientMetricsLayer,
) -> Pair {
    let (recorder, server_metrics) = Recorded::new();
    let layer = server_change(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder));
    let server = if gzip { TestServer::start_gzip(layer).await } else { TestServer::start(layer).await };
    let (recorder, client_metrics) = Recorded::new();
    let layer = client_change(ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder));
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(server.channel().await));
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
    }
    Pair { server, server_metrics, client_metrics, client }
}

async fn pair() -> Pair {
    pair_with(false, |layer| layer, |layer| layer).await
}

const SERVER_STREAM: (&str, &str) = ("server_stream", "ServerStreamingEcho");
const BIDI: (&str, &str) = ("bidi_stream", "BidirectionalStreamingEcho");

fn labels_of((kind, name): (&str, &str)) -> Labels {
    method(kind, name)
}

/// The upper bound of the default bucket an observation falls in (`le`).
fn bucket_of(value: f64) -> f64 {
    FIRST_MESSAGE_BUCKETS.iter().copied().find(|bound| value <= *bound).unwrap_or(f64::INFINITY)
}

/// The one observation of a histogram series.
fn single(m: &Recorded, name: &str, labels: &Labels) -> f64 {
    let values = m.histogram(name, labels).unwrap_or_default();
    assert_eq!(values.len(), 1, "{name}{labels:?}: {values:?}");
    values[0]
}

/// Waits until the server has handled `n` calls of `method`.
async fn server_handled(m: &Recorded, method: (&str, &str), n: u64) {
    m.eventually(&format!("the server handled {n} {} calls", method.1), |m| {
        m.series(SERVER_HANDLED).iter().filter(|(l, _)| l["grpc_method"] == method.1).map(|(_, v)| v).sum::<u64>() == n
    })
    .await;
}

/// The first of five messages 100 ms apart arrives after about 100 ms, while the stream
/// lasts 500 ms: the time to first message is the first wait, not the stream's length,
/// on both sides, for server-streaming and bidi methods alike.
#[tokio::test]
async fn time_to_first_message_is_the_first_wait_not_the_length_of_the_stream() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;

    let stream = client.server_streaming_echo(req("sleep:100")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let outbound = tokio_stream::iter(vec![req("sleep:100"); STREAM_RESPONSES]);
    let stream = client.bidirectional_streaming_echo(outbound).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    server_handled(&server_metrics, BIDI, 1).await;

    let sides = [
        ("server", &server_metrics, SERVER_TIME_TO_FIRST_MESSAGE, SERVER_HANDLING_SECONDS),
        ("client", &client_metrics, CLIENT_TIME_TO_FIRST_MESSAGE, CLIENT_HANDLING_SECONDS),
    ];
    for (side, m, first_message, handling) in sides {
        for method in [SERVER_STREAM, BIDI] {
            let labels = labels_of(method);
            let first = single(m, first_message, &labels);
            let whole = single(m, handling, &labels);
            assert!(first >= 0.1, "{side} {}: first message after {first} s, before the first 100 ms wait", method.1);
            assert_eq!(bucket_of(first), 0.25, "{side} {}: {first} s is not in the bucket holding 0.1 s", method.1);
            assert!(whole >= 0.5, "{side} {}: the whole stream took {whole} s, under 5 x 100 ms", method.1);
            assert!(first < whole - 0.3, "{side} {}: first message {first} s vs stream {whole} s", method.1);
        }
    }
    server.stop().await;
}

/// Unary and client-streaming methods have one response, whose time is the handling time:
/// they have no time-to-first-message series at all. Registered streaming methods have
/// theirs from the start, empty.
#[tokio::test]
async fn only_streaming_methods_have_a_time_to_first_message() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;
    for (side, m, name) in [
        ("server", &server_metrics, SERVER_TIME_TO_FIRST_MESSAGE),
        ("client", &client_metrics, CLIENT_TIME_TO_FIRST_MESSAGE),
    ] {
        let methods: Vec<String> =
            m.histogram_series(name).into_iter().map(|(l, _)| l["grpc_method"].clone()).collect();
        assert_eq!(methods, ["BidirectionalStreamingEcho", "ServerStreamingEcho"], "{side}, before any call");
    }
    client.unary_echo(req("hello")).await.unwrap();
    client.client_streaming_echo(tokio_stream::iter(vec![req("a"), req("b")])).await.unwrap();
    server_handled(&server_metrics, ("client_stream", "ClientStreamingEcho"), 1).await;
    for (m, name) in [(&server_metrics, SERVER_TIME_TO_FIRST_MESSAGE), (&client_metrics, CLIENT_TIME_TO_FIRST_MESSAGE)]
    {
        assert_eq!(m.histogram(name, &method("unary", "UnaryEcho")), None);
        assert_eq!(m.histogram(name, &method("client_stream", "ClientStreamingEcho")), None);
        for (labels, values) in m.histogram_series(name) {
            assert!(values.is_empty(), "{labels:?}: {values:?}");
        }
    }
    server.stop().await;
}

/// A call that ends before its first message is not observed; one that fails after it is.
/// Per method and side, the observations plus the calls that ended without a message add up
/// to `handled`.
#[tokio::test]
async fn calls_without_a_message_are_not_observed_and_the_counts_add_up_to_handled() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;

    // ServerStreamingEcho: 2 complete, 1 failing after its first message, 1 cancelled by
    // the client before its first message.
    for _ in 0..2 {
        let stream = client.server_streaming_echo(req("x")).await.unwrap().into_inner();
        assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    }
    let mut stream = client.server_streaming_echo(req("fail:Aborted")).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(stream.next().await.unwrap().unwrap_err().code(), Code::Aborted);
    let stream = client.server_streaming_echo(req("sleep:300")).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);

    // Bidi: 1 complete, 1 failing on its first message (no message at all), 1 ending with no
    // request and so no response (OK, without a message).
    let stream =
        client.bidirectional_streaming_echo(tokio_stream::iter(vec![req("a"), req("b")])).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 2);
    let mut stream =
        client.bidirectional_streaming_echo(tokio_stream::iter(vec![req("fail:NotFound")])).await.unwrap().into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap_err().code(), Code::NotFound);
    let stream = client.bidirectional_streaming_echo(tokio_stream::iter(Vec::new())).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 0);

    server_handled(&server_metrics, SERVER_STREAM, 4).await;
    server_handled(&server_metrics, BIDI, 3).await;
    // (method, calls observed, calls ended without a message)
    let expected = [(SERVER_STREAM, 3, 1), (BIDI, 1, 2)];
    let sides = [
        ("server", &server_metrics, SERVER_TIME_TO_FIRST_MESSAGE, SERVER_HANDLED),
        ("client", &client_metrics, CLIENT_TIME_TO_FIRST_MESSAGE, CLIENT_HANDLED),
    ];
    for (side, m, first_message, handled) in sides {
        for (method, observed, without_message) in expected {
            let observations = m.histogram(first_message, &labels_of(method)).unwrap().len() as u64;
            let handled: u64 =
                m.series(handled).iter().filter(|(l, _)| l["grpc_method"] == method.1).map(|(_, v)| v).sum();
            assert_eq!(observations, observed, "{side} {}: calls with a first message", method.1);
            assert_eq!(observations + without_message, handled, "{side} {}: observed + without a message", method.1);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn without_time_to_first_message_nothing_is_recorded() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair_with(
        false,
        ServerMetricsLayer::without_time_to_first_message,
        ClientMetricsLayer::without_time_to_first_message,
    )
    .await;
    let stream = client.server_streaming_echo(req("x")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    server_handled(&server_metrics, SERVER_STREAM, 1).await;
    assert!(server_metrics.histogram_series(SERVER_TIME_TO_FIRST_MESSAGE).is_empty());
    assert!(client_metrics.histogram_series(CLIENT_TIME_TO_FIRST_MESSAGE).is_empty());
    // The rest is recorded as before.
    assert_eq!(client_metrics.counter(CLIENT_MSG_RECEIVED, &labels_of(SERVER_STREAM)), Some(5));
    server.stop().await;
}

/// Methods of unknown type (here: no registry) have no time to first message.
#[tokio::test]
async fn without_a_registry_no_method_is_observed() {
    let (recorder, m) = Recorded::new();
    let server = TestServer::start(ServerMetricsLayer::new().with_recorder(recorder)).await;
    let stream = server.client().await.server_streaming_echo(req("x")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let unknown = labels(&[("grpc_type", "unknown"), ("grpc_service", ECHO), ("grpc_method", "ServerStreamingEcho")]);
    m.eventually("the call is handled", |m| m.counter(SERVER_HANDLED, &with_code(unknown.clone(), "OK")) == Some(1))
        .await;
    assert!(m.histogram_series(SERVER_TIME_TO_FIRST_MESSAGE).is_empty());
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Message sizes
// ---------------------------------------------------------------------------------------

fn request_len(message: &str) -> f64 {
    EchoRequest { message: message.into() }.encoded_len() as f64
}

fn response_len(message: &str) -> f64 {
    EchoResponse { message: message.into() }.encoded_len() as f64
}

/// The length of `encoded` compressed as tonic compresses it (gzip, level 6).
fn gzip_len(encoded: &[u8]) -> f64 {
    let mut compressed = Vec::new();
    flate2::read::GzEncoder::new(encoded, flate2::Compression::new(6)).read_to_end(&mut compressed).unwrap();
    compressed.len() as f64
}

/// The sizes recorded into `name` for `method`, sorted.
fn sizes(m: &Recorded, name: &str, method: (&str, &str)) -> Vec<f64> {
    let mut values = m.histogram(name, &labels_of(method)).unwrap_or_default();
    values.sort_by(f64::total_cmp);
    values
}

/// Every message's size as protobuf encodes it (prost's `encoded_len`), in both directions,
/// on both sides, for each kind of RPC.
#[tokio::test]
async fn message_sizes_are_the_encoded_lengths_both_ways_on_both_sides() {
    let Pair { server, server_metrics, client_metrics, mut client } =
        pair_with(false, ServerMetricsLayer::with_message_sizes, ClientMetricsLayer::with_message_sizes).await;

    client.unary_echo(req("hello")).await.unwrap();
    let stream = client.server_streaming_echo(req("hi")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let parts = vec![req("a"), req("bb"), req(&"c".repeat(300))];
    client.client_streaming_echo(tokio_stream::iter(parts)).await.unwrap();
    let pings = vec![req(""), req(&"x".repeat(70_000))];
    let stream = client.bidirectional_streaming_echo(tokio_stream::iter(pings)).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 2);
    server_handled(&server_metrics, BIDI, 1).await;

    let joined = format!("a,bb,{}", "c".repeat(300));
    let big = "x".repeat(70_000);
    // (method, request sizes, response sizes), sorted.
    type Sizes = Vec<f64>;
    let expected: [((&str, &str), Sizes, Sizes); 4] = [
        (("unary", "UnaryEcho"), vec![request_len("hello")], vec![response_len("hello")]),
        (SERVER_STREAM, vec![request_len("hi")], vec![response_len("hi"); STREAM_RESPONSES]),
        (
            ("client_stream", "ClientStreamingEcho"),
            vec![request_len("a"), request_len("bb"), request_len(&"c".repeat(300))],
            vec![response_len(&joined)],
        ),
        (BIDI, vec![request_len(""), request_len(&big)], vec![response_len(""), response_len(&big)]),
    ];
    // Worked by hand: "hello" is 1 tag byte, 1 length byte and 5 bytes; "" encodes to nothing.
    assert_eq!((request_len("hello"), request_len("")), (7.0, 0.0));
    for (method, requests, responses) in expected {
        assert_eq!(sizes(&server_metrics, SERVER_MSG_RECEIVED_SIZE, method), requests, "server received {}", method.1);
        assert_eq!(sizes(&server_metrics, SERVER_MSG_SENT_SIZE, method), responses, "server sent {}", method.1);
        assert_eq!(sizes(&client_metrics, CLIENT_MSG_SENT_SIZE, method), requests, "client sent {}", method.1);
        assert_eq!(sizes(&client_metrics, CLIENT_MSG_RECEIVED_SIZE, method), responses, "client received {}", method.1);
    }
    server.stop().await;
}

/// A compressed message counts its compressed length, as sent on the wire.
#[tokio::test]
async fn a_compressed_message_counts_its_compressed_length() {
    let Pair { server, server_metrics, client_metrics, mut client } =
        pair_with(true, ServerMetricsLayer::with_message_sizes, ClientMetricsLayer::with_message_sizes).await;
    let text = "compressible ".repeat(100);
    let reply = client.unary_echo(req(&text)).await.unwrap().into_inner();
    assert_eq!(reply.message, text);
    server_handled(&server_metrics, ("unary", "UnaryEcho"), 1).await;

    let request = EchoRequest { message: text.clone() }.encode_to_vec();
    let response = EchoResponse { message: text.clone() }.encode_to_vec();
    let (request, response) = (gzip_len(&request), gzip_len(&response));
    assert!(request < request_len(&text) / 10.0, "{request} bytes compressed: not compressed?");
    let unary = ("unary", "UnaryEcho");
    assert_eq!(sizes(&server_metrics, SERVER_MSG_RECEIVED_SIZE, unary), [request]);
    assert_eq!(sizes(&client_metrics, CLIENT_MSG_SENT_SIZE, unary), [request]);
    assert_eq!(sizes(&server_metrics, SERVER_MSG_SENT_SIZE, unary), [response]);
    assert_eq!(sizes(&client_metrics, CLIENT_MSG_RECEIVED_SIZE, unary), [response]);
    server.stop().await;
}

/// Off by default: no size series at all.
#[tokio::test]
async fn message_sizes_are_opt_in() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;
    client.unary_echo(req("hello")).await.unwrap();
    server_handled(&server_metrics, ("unary", "UnaryEcho"), 1).await;
    for (m, names) in [
        (&server_metrics, [SERVER_MSG_RECEIVED_SIZE, SERVER_MSG_SENT_SIZE]),
        (&client_metrics, [CLIENT_MSG_RECEIVED_SIZE, CLIENT_MSG_SENT_SIZE]),
    ] {
        for name in names {
            assert!(m.histogram_series(name).is_empty(), "{name}");
        }
    }
    server.stop().await;
}
