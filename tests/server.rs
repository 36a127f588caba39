//! The server layer against a real tonic server and client on loopback.

mod common;

use std::time::Duration;

use common::*;
use http::uri::PathAndQuery;
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};
use tonic_metrics::{ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoRequest, EchoResponse, STREAM_RESPONSES};

/// Calls an arbitrary path with an `EchoRequest`, as a misbehaving client would.
async fn call_path(channel: Channel, path: String) -> Result<EchoResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(path).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
    grpc.unary(Request::new(req("hi")), path, codec).await.map(tonic::Response::into_inner)
}

fn layer_with_registry() -> (ServerMetricsLayer, Recorded) {
    let (recorder, recorded) = Recorded::new();
    (ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder), recorded)
}

#[tokio::test]
async fn four_rpc_kinds_are_counted_exactly() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;

    for _ in 0..3 {
        client.unary_echo(req("hello")).await.unwrap();
    }
    let stream = client.server_streaming_echo(req("hi")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let sent = tokio_stream::iter(vec![req("a"), req("b"), req("c"), req("d")]);
    assert_eq!(client.client_streaming_echo(sent).await.unwrap().into_inner().message, "a,b,c,d");
    let bidi = tokio_stream::iter(vec![req("x"), req("y")]);
    let echoed: Vec<_> = client.bidirectional_streaming_echo(bidi).await.unwrap().into_inner().collect().await;
    assert_eq!(echoed.len(), 2);

    // (kind, method, calls, received, sent)
    let expected = [
        ("unary", "UnaryEcho", 3, 3, 3),
        ("server_stream", "ServerStreamingEcho", 1, 1, 5),
        ("client_stream", "ClientStreamingEcho", 1, 4, 1),
        ("bidi_stream", "BidirectionalStreamingEcho", 1, 2, 2),
    ];
    for (kind, name, calls, received, sent) in expected {
        let labels = method(kind, name);
        assert_eq!(m.counter(SERVER_STARTED, &labels), Some(calls), "{name} started");
        assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "OK")), Some(calls), "{name} handled");
        assert_eq!(m.counter(SERVER_MSG_RECEIVED, &labels), Some(received), "{name} received");
        assert_eq!(m.counter(SERVER_MSG_SENT, &labels), Some(sent), "{name} sent");
        let seconds = m.histogram(SERVER_HANDLING_SECONDS, &labels).unwrap();
        assert_eq!(seconds.len() as u64, calls, "{name} histogram count");
        assert!(seconds.iter().all(|s| *s > 0.0 && *s < 5.0), "{name} latencies {seconds:?}");
    }
    assert_eq!(m.counter_sum(SERVER_HANDLED), 6);
    for name in [SERVER_STARTED, SERVER_HANDLED, SERVER_MSG_RECEIVED, SERVER_MSG_SENT, SERVER_HANDLING_SECONDS] {
        assert!(m.description(name).is_some_and(|d| !d.is_empty()), "{name} has no description");
    }
    server.stop().await;
}

#[tokio::test]
async fn registered_methods_exist_at_zero_before_any_call() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    // Once the server accepts connections its layer is in place; no RPC has been made.
    let _channel = server.channel().await;
    for (kind, name) in [
        ("unary", "UnaryEcho"),
        ("server_stream", "ServerStreamingEcho"),
        ("client_stream", "ClientStreamingEcho"),
        ("bidi_stream", "BidirectionalStreamingEcho"),
    ] {
        let labels = method(kind, name);
        assert_eq!(m.counter(SERVER_STARTED, &labels), Some(0));
        assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "OK")), Some(0));
        assert_eq!(m.counter(SERVER_MSG_RECEIVED, &labels), Some(0));
        assert_eq!(m.counter(SERVER_MSG_SENT, &labels), Some(0));
        assert_eq!(m.histogram(SERVER_HANDLING_SECONDS, &labels), Some(vec![]));
    }
    server.stop().await;
}

#[tokio::test]
async fn unary_handler_error_is_read_from_the_headers() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let status = client.unary_echo(req("fail:NotFound")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.unary_echo(req("fail:Canceled")).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled);

    let labels = method("unary", "UnaryEcho");
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "NotFound")), Some(1));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "Canceled")), Some(1));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "OK")), Some(0));
    assert_eq!(m.counter(SERVER_MSG_SENT, &labels), Some(0));
    assert_eq!(m.counter(SERVER_MSG_RECEIVED, &labels), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn server_stream_failing_after_its_first_message_is_read_from_the_trailers() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let mut stream = client.server_streaming_echo(req("fail:Aborted")).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(stream.next().await.unwrap().unwrap_err().code(), Code::Aborted);

    let labels = method("server_stream", "ServerStreamingEcho");
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "Aborted")), Some(1));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "OK")), Some(0));
    assert_eq!(m.counter(SERVER_MSG_SENT, &labels), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn client_cancelling_a_stream_midway_is_canceled_exactly_once() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let mut stream = client.server_streaming_echo(req("sleep:100")).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream); // RST_STREAM(CANCEL)

    let labels = method("server_stream", "ServerStreamingEcho");
    let canceled = with_code(labels.clone(), "Canceled");
    m.eventually("the cancel is recorded", |m| m.counter(SERVER_HANDLED, &canceled) == Some(1)).await;
    // Give a late double count the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.counter(SERVER_HANDLED, &canceled), Some(1));
    assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
    assert_eq!(m.counter(SERVER_STARTED, &labels), Some(1));
    assert_eq!(m.counter(SERVER_MSG_SENT, &labels), Some(1));
    let seconds = m.histogram(SERVER_HANDLING_SECONDS, &labels).unwrap();
    assert_eq!(seconds.len(), 1);
    assert!(seconds[0] >= 0.1, "latency runs until the drop: {seconds:?}");
    server.stop().await;
}

#[tokio::test]
async fn deadline_shorter_than_the_handler_is_recorded_once() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let mut request = Request::new(req("sleep:1000"));
    request.set_timeout(Duration::from_millis(50));
    let status = client.unary_echo(request).await.unwrap_err();
    assert!(matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded), "{status:?}");

    let labels = method("unary", "UnaryEcho");
    m.eventually("the deadline is recorded", |m| m.counter_sum(SERVER_HANDLED) == 1).await;
    // tonic's timeout sits outside user layers and drops our future at the deadline the
    // request carried: a drop at the deadline is `DeadlineExceeded`, not a cancel.
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "DeadlineExceeded")), Some(1));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(labels.clone(), "Canceled")), Some(0));
    let seconds = m.histogram(SERVER_HANDLING_SECONDS, &labels).unwrap();
    assert!(seconds[0] >= 0.04 && seconds[0] < 1.0, "{seconds:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(m.counter_sum(SERVER_HANDLED), 1, "counted once, even after the handler would have finished");
    server.stop().await;
}

#[tokio::test]
async fn unknown_method_of_a_known_service_is_unknown_and_unimplemented() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let status = call_path(server.channel().await, format!("/{ECHO}/NoSuchMethod")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let unknown = labels(&[("grpc_type", "unknown"), ("grpc_service", "unknown"), ("grpc_method", "unknown")]);
    assert_eq!(m.counter(SERVER_STARTED, &unknown), Some(1));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(unknown, "Unimplemented")), Some(1));
    assert!(m.series(SERVER_STARTED).iter().all(|(l, _)| l["grpc_method"] != "NoSuchMethod"));
    server.stop().await;
}

/// Distinct random-looking paths a scanner might send.
fn random_paths(count: usize) -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("/svc{:x}.S{}/M{:x}", state % 997, i, state)
        })
        .collect()
}

async fn call_paths(server: &TestServer, paths: Vec<String>) {
    let channel = server.channel().await;
    let calls = futures_util::stream::iter(paths.into_iter().map(|path| call_path(channel.clone(), path)));
    let results: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(calls, 64)).await;
    assert!(results.iter().all(|r| r.as_ref().is_err_and(|s| s.code() == Code::Unimplemented)));
}

#[tokio::test]
async fn thousands_of_random_paths_leave_one_unknown_series_with_a_registry() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    call_paths(&server, random_paths(3_000)).await;

    let started = m.series(SERVER_STARTED);
    // The 4 registered methods plus the single `unknown` pair.
    assert_eq!(started.len(), 5, "{started:?}");
    let unknown = labels(&[("grpc_type", "unknown"), ("grpc_service", "unknown"), ("grpc_method", "unknown")]);
    assert_eq!(m.counter(SERVER_STARTED, &unknown), Some(3_000));
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(unknown, "Unimplemented")), Some(3_000));
    server.stop().await;
}

#[tokio::test]
async fn without_a_registry_paths_are_recorded_as_seen_up_to_the_cap() {
    let (recorder, m) = Recorded::new();
    let server = TestServer::start(ServerMetricsLayer::new().with_max_methods(50).with_recorder(recorder)).await;
    let mut client = server.client().await;
    client.unary_echo(req("hi")).await.unwrap();
    call_paths(&server, random_paths(500)).await;
    // Malformed paths never get their own series, even under the cap.
    for bad in ["/a%2Fb/M", "/svc/m\u{e9}thode", "/svc//M", &format!("/{}/M", "s".repeat(300))] {
        let _ = call_path(server.channel().await, bad.to_string()).await;
    }

    let started = m.series(SERVER_STARTED);
    // UnaryEcho plus 49 random paths, then everything else in `unknown`.
    assert_eq!(started.len(), 51, "{started:?}");
    assert_eq!(m.counter_sum(SERVER_STARTED), 505);
    let echo = labels(&[("grpc_type", "unknown"), ("grpc_service", ECHO), ("grpc_method", "UnaryEcho")]);
    assert_eq!(m.counter(SERVER_HANDLED, &with_code(echo, "OK")), Some(1));
    let unknown = labels(&[("grpc_type", "unknown"), ("grpc_service", "unknown"), ("grpc_method", "unknown")]);
    assert_eq!(m.counter(SERVER_STARTED, &unknown), Some(500 - 49 + 4));
    server.stop().await;
}

#[tokio::test]
async fn server_stream_latency_covers_the_whole_stream() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let stream = client.server_streaming_echo(req("sleep:60")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let seconds = m.histogram(SERVER_HANDLING_SECONDS, &method("server_stream", "ServerStreamingEcho")).unwrap();
    assert_eq!(seconds.len(), 1);
    assert!(seconds[0] >= 0.3, "5 x 60 ms must be covered, got {seconds:?}");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_mixed_load_balances_started_and_handled() {
    let (layer, m) = layer_with_registry();
    let server = TestServer::start(layer).await;
    let channel = server.channel().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let mut client = tonic_metrics_testing::EchoClient::new(channel.clone());
        tasks.spawn(async move {
            let message = match i % 5 {
                0 => "hello".to_string(),
                1 => "fail:Internal".to_string(),
                2 => "sleep:5".to_string(),
                3 => "fail:InvalidArgument".to_string(),
                _ => format!("m{i}"),
            };
            match i % 4 {
                0 => drop(client.unary_echo(req(&message)).await),
                1 => {
                    if let Ok(stream) = client.server_streaming_echo(req(&message)).await {
                        let _: Vec<_> = stream.into_inner().collect().await;
                    }
                }
                2 => drop(client.client_streaming_echo(tokio_stream::iter(vec![req(&message); 3])).await),
                _ => {
                    if let Ok(stream) =
                        client.bidirectional_streaming_echo(tokio_stream::iter(vec![req(&message); 2])).await
                    {
                        let _: Vec<_> = stream.into_inner().collect().await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    m.eventually("every RPC is handled", |m| m.counter_sum(SERVER_HANDLED) == 200).await;
    assert_eq!(m.counter_sum(SERVER_STARTED), 200);
    server.stop().await;
}

#[tokio::test]
async fn excluded_services_record_nothing() {
    let (recorder, m) = Recorded::new();
    let layer = ServerMetricsLayer::new()
        .with_registry(echo_registry())
        .without_method(ECHO, "ServerStreamingEcho")
        .with_filter(|_, method| method != "ClientStreamingEcho")
        .with_recorder(recorder);
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    client.unary_echo(req("hi")).await.unwrap();
    let _: Vec<_> = client.server_streaming_echo(req("hi")).await.unwrap().into_inner().collect().await;
    client.client_streaming_echo(tokio_stream::iter(vec![req("a")])).await.unwrap();
    let methods: Vec<_> = m.series(SERVER_STARTED).into_iter().map(|(l, _)| l["grpc_method"].clone()).collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    assert!(methods.contains(&"UnaryEcho".to_string()) && methods.contains(&"BidirectionalStreamingEcho".to_string()));
    assert_eq!(m.counter_sum(SERVER_STARTED), 1);
    server.stop().await;
}

#[tokio::test]
async fn code_label_on_the_histogram_is_opt_in() {
    let (recorder, m) = Recorded::new();
    let layer =
        ServerMetricsLayer::new().with_registry(echo_registry()).with_code_on_histogram().with_recorder(recorder);
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    client.unary_echo(req("hi")).await.unwrap();
    client.unary_echo(req("fail:NotFound")).await.unwrap_err();
    let labels = method("unary", "UnaryEcho");
    assert_eq!(m.histogram(SERVER_HANDLING_SECONDS, &with_code(labels.clone(), "OK")).unwrap().len(), 1);
    assert_eq!(m.histogram(SERVER_HANDLING_SECONDS, &with_code(labels.clone(), "NotFound")).unwrap().len(), 1);
    assert_eq!(m.histogram(SERVER_HANDLING_SECONDS, &labels), None);
    server.stop().await;
}
