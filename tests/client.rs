//! The client layer against the server layer, both over a real loopback connection: the
//! two sides must agree on every call, code and message.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_metrics::{ClientMetrics, ClientMetricsLayer, ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoClient, STREAM_RESPONSES};
use tower::ServiceBuilder;

struct Pair {
    server: TestServer,
    server_metrics: Recorded,
    client_metrics: Recorded,
    client: EchoClient<ClientMetrics<Channel>>,
}

async fn pair() -> Pair {
    let (recorder, server_metrics) = Recorded::new();
    let server =
        TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    let (recorder, client_metrics) = Recorded::new();
    let layer = ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let client = EchoClient::new(ServiceBuilder::new().layer(layer).service(server.channel().await));
    Pair { server, server_metrics, client_metrics, client }
}

/// Every series of every metric, with server names mapped onto client names and the
/// sent/received directions swapped, so the two sides can be compared.
type Tally = Vec<(String, Labels, u64)>;

fn mirrored(server: &Recorded, client: &Recorded) -> (Tally, Tally) {
    let pairs = [
        (SERVER_STARTED, CLIENT_STARTED),
        (SERVER_HANDLED, CLIENT_HANDLED),
        (SERVER_MSG_RECEIVED, CLIENT_MSG_SENT),
        (SERVER_MSG_SENT, CLIENT_MSG_RECEIVED),
    ];
    let mut from_server = Vec::new();
    let mut from_client = Vec::new();
    for (server_name, client_name) in pairs {
        from_server.extend(server.series(server_name).into_iter().map(|(l, v)| (client_name.to_string(), l, v)));
        from_client.extend(client.series(client_name).into_iter().map(|(l, v)| (client_name.to_string(), l, v)));
    }
    from_server.sort();
    from_client.sort();
    (from_server, from_client)
}

#[tokio::test]
async fn both_sides_agree_on_every_call_code_and_message() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;
    client.unary_echo(req("hi")).await.unwrap();
    client.unary_echo(req("fail:NotFound")).await.unwrap_err();
    let stream = client.server_streaming_echo(req("x")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    let mut stream = client.server_streaming_echo(req("fail:DataLoss")).await.unwrap().into_inner();
    while stream.next().await.is_some() {}
    client.client_streaming_echo(tokio_stream::iter(vec![req("a"), req("b"), req("c")])).await.unwrap();
    client.client_streaming_echo(tokio_stream::iter(vec![req("a"), req("fail:Aborted")])).await.unwrap_err();
    let bidi: Vec<_> = client
        .bidirectional_streaming_echo(tokio_stream::iter(vec![req("1"), req("2"), req("fail:Internal")]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(bidi.len(), 3);

    server_metrics.eventually("the server handled all 7", |m| m.counter_sum(SERVER_HANDLED) == 7).await;
    let (from_server, from_client) = mirrored(&server_metrics, &client_metrics);
    assert_eq!(from_server, from_client);

    let unary = method("unary", "UnaryEcho");
    assert_eq!(client_metrics.counter(CLIENT_HANDLED, &with_code(unary.clone(), "NotFound")), Some(1));
    let server_stream = method("server_stream", "ServerStreamingEcho");
    assert_eq!(client_metrics.counter(CLIENT_MSG_RECEIVED, &server_stream), Some(6));
    assert_eq!(client_metrics.counter(CLIENT_HANDLED, &with_code(server_stream.clone(), "DataLoss")), Some(1));
    let bidi = method("bidi_stream", "BidirectionalStreamingEcho");
    assert_eq!(client_metrics.counter(CLIENT_MSG_SENT, &bidi), Some(3));
    assert_eq!(client_metrics.counter(CLIENT_HANDLED, &with_code(bidi, "Internal")), Some(1));
    let latencies = client_metrics.histogram(CLIENT_HANDLING_SECONDS, &server_stream).unwrap();
    assert_eq!(latencies.len(), 2);
    for name in [CLIENT_STARTED, CLIENT_HANDLED, CLIENT_MSG_RECEIVED, CLIENT_MSG_SENT, CLIENT_HANDLING_SECONDS] {
        assert!(client_metrics.description(name).is_some(), "{name} has no description");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_cancelled_stream_is_canceled_on_both_sides() {
    let Pair { server, server_metrics, client_metrics, mut client } = pair().await;
    let mut stream = client.server_streaming_echo(req("sleep:100")).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);

    let labels = with_code(method("server_stream", "ServerStreamingEcho"), "Canceled");
    assert_eq!(client_metrics.counter(CLIENT_HANDLED, &labels), Some(1));
    server_metrics.eventually("the server saw the cancel", |m| m.counter(SERVER_HANDLED, &labels) == Some(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client_metrics.counter_sum(CLIENT_HANDLED), 1);
    assert_eq!(server_metrics.counter_sum(SERVER_HANDLED), 1);
    server.stop().await;
}

#[tokio::test]
async fn generated_clients_with_interceptor_keep_working_and_recording() {
    let (recorder, server_metrics) = Recorded::new();
    let server =
        TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    let (recorder, client_metrics) = Recorded::new();
    let service = ServiceBuilder::new()
        .layer(ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder))
        .service(server.channel().await);
    let mut client = EchoClient::with_interceptor(service, |mut request: Request<()>| {
        request.metadata_mut().insert("x-tenant", "blue".parse().unwrap());
        Ok::<_, Status>(request)
    });
    client.unary_echo(req("hi")).await.unwrap();
    let labels = with_code(method("unary", "UnaryEcho"), "OK");
    assert_eq!(client_metrics.counter(CLIENT_HANDLED, &labels), Some(1));
    assert_eq!(server_metrics.counter(SERVER_HANDLED, &labels), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn a_transport_error_is_unavailable() {
    // A port nothing listens on: connect lazily, so the failure happens inside the call.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let (recorder, m) = Recorded::new();
    let layer = ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(channel));
    let status = client.unary_echo(req("hi")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(m.counter(CLIENT_HANDLED, &with_code(method("unary", "UnaryEcho"), "Unavailable")), Some(1));
    assert_eq!(m.counter_sum(CLIENT_HANDLED), 1);
}

#[tokio::test]
async fn without_a_registry_the_client_names_methods_from_grpc_method() {
    let (recorder, server_metrics) = Recorded::new();
    let server = TestServer::start(ServerMetricsLayer::new().with_recorder(recorder)).await;
    let (recorder, m) = Recorded::new();
    let layer = ClientMetricsLayer::new().with_recorder(recorder);
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer).service(server.channel().await));
    client.unary_echo(req("hi")).await.unwrap();
    let labels = labels(&[("grpc_type", "unknown"), ("grpc_service", ECHO), ("grpc_method", "UnaryEcho")]);
    assert_eq!(m.counter(CLIENT_HANDLED, &with_code(labels.clone(), "OK")), Some(1));
    assert_eq!(server_metrics.counter(SERVER_HANDLED, &with_code(labels, "OK")), Some(1));
    server.stop().await;
}
