//! `Naming::Grpc`: gRPC's own metrics (gRFC A66) over a real loopback connection, for the
//! traffic mix of the grpc-python capture (`/work/a66`, see `names`' docs): metric names,
//! label names, label values, HELP texts and every recorded value, on both sides, as
//! grpc-python 1.85's official OpenTelemetry plugin records them, except where this crate
//! differs on purpose (documented in `tonic_metrics::names`): a server call cut off by its
//! deadline is `DEADLINE_EXCEEDED` (grpc-python's server says `OK`).

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use http::{Uri, uri::PathAndQuery};
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};
use tonic_metrics::{ClientMetrics, ClientMetricsLayer, Naming, ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoClient, EchoRequest, EchoResponse, STREAM_RESPONSES};
use tower::ServiceBuilder;

const UNARY: &str = "grpc.examples.echo.Echo/UnaryEcho";
const SERVER_STREAM: &str = "grpc.examples.echo.Echo/ServerStreamingEcho";
const CLIENT_STREAM: &str = "grpc.examples.echo.Echo/ClientStreamingEcho";
const BIDI: &str = "grpc.examples.echo.Echo/BidirectionalStreamingEcho";

fn server_layer(recorder: metrics_util::debugging::DebuggingRecorder) -> ServerMetricsLayer {
    ServerMetricsLayer::new().with_naming(Naming::Grpc).with_registry(echo_registry()).with_recorder(recorder)
}

fn client_layer(recorder: metrics_util::debugging::DebuggingRecorder) -> ClientMetricsLayer {
    ClientMetricsLayer::new().with_naming(Naming::Grpc).with_registry(echo_registry()).with_recorder(recorder)
}

/// A generic unary call to `path` (no generated stub, so no `GrpcMethod`): 7 request bytes.
async fn raw_call<S>(service: S, origin: Uri, path: &'static str) -> tonic::Status
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
    S::Error: Into<tonic::codegen::StdError>,
{
    let mut grpc = tonic::client::Grpc::with_origin(service, origin);
    grpc.ready().await.map_err(Into::into).unwrap();
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
    grpc.unary(Request::new(req("hello")), PathAndQuery::from_static(path), codec).await.unwrap_err()
}

/// The mix of `/work/a66/README.md`, in its order, through `client`.
async fn traffic_mix(client: &mut EchoClient<ClientMetrics<Channel>>, raw: ClientMetrics<Channel>, origin: Uri) {
    for _ in 0..3 {
        client.unary_echo(req("hello")).await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(client.unary_echo(req("fail:NotFound")).await.unwrap_err().code(), Code::NotFound);
    }
    let status = client.unary_echo(req("fail:DeadlineExceeded")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    for path in ["/grpc.examples.echo.Echo/NoSuchMethod", "/no.such.Service/Method"] {
        assert_eq!(raw_call(raw.clone(), origin.clone(), path).await.code(), Code::Unimplemented);
    }
    for _ in 0..2 {
        let stream = client.server_streaming_echo(req("hi")).await.unwrap().into_inner();
        assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    }
    let reply = client.client_streaming_echo(tokio_stream::iter(vec![req("hello"); 3])).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello,hello,hello");
    let stream =
        client.bidirectional_streaming_echo(tokio_stream::iter(vec![req("hello"); 2])).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 2);
    let mut late = Request::new(req("sleep:200"));
    late.set_timeout(Duration::from_millis(50));
    let status = client.unary_echo(late).await.unwrap_err();
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
}

/// `(grpc.method, grpc.status)` → the values of one histogram, sorted.
type Observations = BTreeMap<(String, String), Vec<f64>>;

fn observations(m: &Recorded, name: &str) -> Observations {
    m.histogram_series(name)
        .into_iter()
        .map(|(labels, mut values)| {
            values.sort_by(f64::total_cmp);
            ((labels[GRPC_ATTR_METHOD].clone(), labels[GRPC_ATTR_STATUS].clone()), values)
        })
        .collect()
}

fn expected(rows: &[(&str, &str, &[f64])]) -> Observations {
    rows.iter()
        .map(|(method, status, values)| {
            let mut values = values.to_vec();
            values.sort_by(f64::total_cmp);
            (((*method).to_owned(), (*status).to_owned()), values)
        })
        .collect()
}

/// `grpc.method` → started count.
fn started(m: &Recorded, name: &str) -> BTreeMap<String, u64> {
    m.series(name).into_iter().map(|(labels, value)| (labels[GRPC_ATTR_METHOD].clone(), value)).collect()
}

/// Every recorded series' name with its label names (values aside).
fn shapes(m: &Recorded) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for (name, labels) in m.all_series() {
        let keys: Vec<String> = labels.keys().cloned().collect();
        let shapes = out.entry(name).or_default();
        if !shapes.contains(&keys) {
            shapes.push(keys);
        }
    }
    out
}

fn shape(names: &[(&str, &[&str])]) -> BTreeMap<String, Vec<Vec<String>>> {
    names
        .iter()
        .map(|(name, keys)| ((*name).to_owned(), vec![keys.iter().map(|k| (*k).to_owned()).collect()]))
        .collect()
}

#[tokio::test]
async fn a66_names_labels_and_values_for_the_reference_mix() {
    let (recorder, server_metrics) = Recorded::new();
    let server = TestServer::start(server_layer(recorder)).await;
    let (recorder, client_metrics) = Recorded::new();
    let channel = server.channel().await;
    let layered = ServiceBuilder::new().layer(client_layer(recorder)).service(channel);
    // A client with an origin, as `EchoClient::connect` makes one: its requests carry the
    // authority the default target is taken from.
    let origin: Uri = format!("http://{}", server.addr).parse().unwrap();
    let mut client = EchoClient::with_origin(layered.clone(), origin.clone());

    // Nothing exists before the first call: the official plugins create no series.
    assert_eq!(server_metrics.all_series(), [], "server series before any call");
    assert_eq!(client_metrics.all_series(), [], "client series before any call");

    traffic_mix(&mut client, layered, origin).await;
    server_metrics
        .eventually("the server ended all 13 calls", |m| {
            m.histogram_series(GRPC_SERVER_CALL_DURATION).iter().map(|(_, v)| v.len()).sum::<usize>() == 13
        })
        .await;

    // Names and label names, exactly.
    let server_histogram: &[&str] = &[GRPC_ATTR_METHOD, GRPC_ATTR_STATUS];
    assert_eq!(
        shapes(&server_metrics),
        shape(&[
            (GRPC_SERVER_CALL_STARTED, &[GRPC_ATTR_METHOD]),
            (GRPC_SERVER_CALL_DURATION, server_histogram),
            (GRPC_SERVER_CALL_RCVD_BYTES, server_histogram),
            (GRPC_SERVER_CALL_SENT_BYTES, server_histogram),
        ])
    );
    let client_histogram: &[&str] = &[GRPC_ATTR_METHOD, GRPC_ATTR_STATUS, GRPC_ATTR_TARGET];
    assert_eq!(
        shapes(&client_metrics),
        shape(&[
            (GRPC_CLIENT_ATTEMPT_STARTED, &[GRPC_ATTR_METHOD, GRPC_ATTR_TARGET]),
            (GRPC_CLIENT_ATTEMPT_DURATION, client_histogram),
            (GRPC_CLIENT_ATTEMPT_RCVD_BYTES, client_histogram),
            (GRPC_CLIENT_ATTEMPT_SENT_BYTES, client_histogram),
            (GRPC_CLIENT_CALL_DURATION, client_histogram),
        ])
    );
    assert_eq!(
        (GRPC_ATTR_METHOD, GRPC_ATTR_STATUS, GRPC_ATTR_TARGET, GRPC_OTHER_METHOD),
        ("grpc.method", "grpc.status", "grpc.target", "other")
    );

    // grpc.target: A66's canonical form of the origin's authority, on every client series.
    let target = format!("dns:///{}", server.addr);
    for (name, labels) in client_metrics.all_series() {
        assert_eq!(labels[GRPC_ATTR_TARGET], target, "{name}{labels:?}");
    }

    // Started: both sides, unregistered methods as `other`.
    let calls: BTreeMap<String, u64> = [(UNARY, 7), ("other", 2), (SERVER_STREAM, 2), (CLIENT_STREAM, 1), (BIDI, 1)]
        .into_iter()
        .map(|(method, n)| (method.to_owned(), n))
        .collect();
    assert_eq!(started(&server_metrics, GRPC_SERVER_CALL_STARTED), calls, "server started");
    assert_eq!(started(&client_metrics, GRPC_CLIENT_ATTEMPT_STARTED), calls, "client started");

    // Per-call byte totals (message bytes without the 5-byte prefix), by method and status.
    // Request sizes: "hello" 7, "hi" 4, "fail:NotFound" 15, "fail:DeadlineExceeded" 23,
    // "sleep:200" 11; the client-streaming reply is 19.
    let requests = expected(&[
        (UNARY, "OK", &[7.0, 7.0, 7.0]),
        (UNARY, "NOT_FOUND", &[15.0, 15.0]),
        (UNARY, "DEADLINE_EXCEEDED", &[23.0, 11.0]),
        (SERVER_STREAM, "OK", &[4.0, 4.0]),
        (CLIENT_STREAM, "OK", &[21.0]),
        (BIDI, "OK", &[14.0]),
    ]);
    let responses = expected(&[
        (UNARY, "OK", &[7.0, 7.0, 7.0]),
        (UNARY, "NOT_FOUND", &[0.0, 0.0]),
        (UNARY, "DEADLINE_EXCEEDED", &[0.0, 0.0]),
        ("other", "UNIMPLEMENTED", &[0.0, 0.0]),
        (SERVER_STREAM, "OK", &[20.0, 20.0]),
        (CLIENT_STREAM, "OK", &[19.0]),
        (BIDI, "OK", &[14.0]),
    ]);
    // The server rejects an unregistered method before reading its request (0 bytes); the
    // client has sent its 7 bytes.
    let mut server_rcvd = requests.clone();
    server_rcvd.insert(("other".into(), "UNIMPLEMENTED".into()), vec![0.0, 0.0]);
    let mut client_sent = requests;
    client_sent.insert(("other".into(), "UNIMPLEMENTED".into()), vec![7.0, 7.0]);
    assert_eq!(observations(&server_metrics, GRPC_SERVER_CALL_RCVD_BYTES), server_rcvd, "server rcvd");
    assert_eq!(observations(&server_metrics, GRPC_SERVER_CALL_SENT_BYTES), responses, "server sent");
    assert_eq!(observations(&client_metrics, GRPC_CLIENT_ATTEMPT_SENT_BYTES), client_sent, "client sent");
    assert_eq!(observations(&client_metrics, GRPC_CLIENT_ATTEMPT_RCVD_BYTES), responses, "client rcvd");

    // Durations: one per call, by method and status, as the byte totals; the client's call
    // duration is its attempt duration, value for value.
    let counts = |o: Observations| o.into_iter().map(|(k, v)| (k, v.len())).collect::<BTreeMap<_, _>>();
    let server_durations = observations(&server_metrics, GRPC_SERVER_CALL_DURATION);
    assert_eq!(counts(server_durations.clone()), counts(responses.clone()), "server durations");
    let attempts = observations(&client_metrics, GRPC_CLIENT_ATTEMPT_DURATION);
    assert_eq!(counts(attempts.clone()), counts(responses), "client attempt durations");
    assert_eq!(observations(&client_metrics, GRPC_CLIENT_CALL_DURATION), attempts, "call = attempt");
    let deadline = &server_durations[&(UNARY.to_owned(), "DEADLINE_EXCEEDED".to_owned())];
    assert!(deadline[1] >= 0.045 && deadline[1] < 0.2, "the server call cut off at 50 ms: {deadline:?}");

    // HELP texts: grpc-python's.
    let help = [
        (&server_metrics, GRPC_SERVER_CALL_STARTED, "Number of server calls started"),
        (
            &server_metrics,
            GRPC_SERVER_CALL_DURATION,
            "End-to-end time taken to complete a call from server transport's perspective",
        ),
        (&server_metrics, GRPC_SERVER_CALL_SENT_BYTES, "Compressed message bytes sent per server call"),
        (&server_metrics, GRPC_SERVER_CALL_RCVD_BYTES, "Compressed message bytes received per server call"),
        (&client_metrics, GRPC_CLIENT_ATTEMPT_STARTED, "Number of client call attempts started"),
        (&client_metrics, GRPC_CLIENT_ATTEMPT_DURATION, "End-to-end time taken to complete a client call attempt"),
        (&client_metrics, GRPC_CLIENT_ATTEMPT_SENT_BYTES, "Compressed message bytes sent per client call attempt"),
        (&client_metrics, GRPC_CLIENT_ATTEMPT_RCVD_BYTES, "Compressed message bytes received per call attempt"),
        (
            &client_metrics,
            GRPC_CLIENT_CALL_DURATION,
            "End-to-end time taken to complete a call from client's perspective",
        ),
    ];
    for (m, name, text) in help {
        assert_eq!(m.description(name).as_deref(), Some(text), "{name}");
    }

    server.stop().await;
}

/// The target: as given with `with_target`, else from the first request's authority; a
/// generated client made with `new(channel)` sends none, so it is `unknown`.
#[tokio::test]
async fn the_target_is_given_or_taken_from_the_first_request() {
    let (recorder, _server_metrics) = Recorded::new();
    let server = TestServer::start(server_layer(recorder)).await;
    let given = "dns:///localhost:50051";
    let cases: [(Option<&str>, bool, String); 3] = [
        (Some(given), true, given.to_owned()),
        (None, true, format!("dns:///{}", server.addr)),
        (None, false, "unknown".to_owned()),
    ];
    for (target, with_origin, expected) in cases {
        let (recorder, m) = Recorded::new();
        let mut layer = client_layer(recorder);
        if let Some(target) = target {
            layer = layer.with_target(target);
        }
        let layered = ServiceBuilder::new().layer(layer).service(server.channel().await);
        let mut client = if with_origin {
            EchoClient::with_origin(layered, format!("http://{}", server.addr).parse().unwrap())
        } else {
            EchoClient::new(layered)
        };
        client.unary_echo(req("hello")).await.unwrap();
        let series = m.all_series();
        assert_eq!(series.len(), 5, "{series:?}");
        for (name, labels) in series {
            assert_eq!(labels[GRPC_ATTR_TARGET], expected, "{name}, target {target:?}, origin {with_origin}");
        }
    }
    server.stop().await;
}

/// Without a registry, methods are named as seen (up to the cap); a path that is no
/// method is `other`. `preinitialize` creates nothing under this scheme.
#[tokio::test]
async fn without_a_registry_methods_are_named_as_seen() {
    let (recorder, m) = Recorded::new();
    let layer = ServerMetricsLayer::new().with_naming(Naming::Grpc).with_recorder(recorder);
    layer.preinitialize();
    let server = TestServer::start(layer).await;
    let channel = server.channel().await;
    assert_eq!(m.all_series(), []);
    EchoClient::new(channel.clone()).unary_echo(req("hello")).await.unwrap();
    let origin: Uri = format!("http://{}", server.addr).parse().unwrap();
    for path in ["/grpc.examples.echo.Echo/NoSuchMethod", "/not-a-method"] {
        raw_call(channel.clone(), origin.clone(), path).await;
    }
    m.eventually("three calls ended", |m| {
        m.histogram_series(GRPC_SERVER_CALL_DURATION).iter().map(|(_, v)| v.len()).sum::<usize>() == 3
    })
    .await;
    let methods: Vec<(String, String)> = observations(&m, GRPC_SERVER_CALL_DURATION).into_keys().collect();
    assert_eq!(
        methods,
        [
            ("grpc.examples.echo.Echo/NoSuchMethod".to_owned(), "UNIMPLEMENTED".to_owned()),
            (UNARY.to_owned(), "OK".to_owned()),
            ("other".to_owned(), "UNIMPLEMENTED".to_owned()),
        ]
    );
    server.stop().await;
}

/// Under gRPC naming none of go-grpc-prometheus' families is recorded: no counters, no
/// time to first message, no per-message sizes, even when asked for.
#[tokio::test]
async fn only_a66_families_are_recorded_whatever_else_is_asked() {
    let (recorder, m) = Recorded::new();
    let server = TestServer::start(server_layer(recorder).with_message_sizes().with_code_on_histogram()).await;
    let stream = server.client().await.server_streaming_echo(req("hi")).await.unwrap().into_inner();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), STREAM_RESPONSES);
    m.eventually("the call ended", |m| !m.histogram_series(GRPC_SERVER_CALL_DURATION).is_empty()).await;
    let names: Vec<String> = shapes(&m).into_keys().collect();
    assert_eq!(
        names,
        [GRPC_SERVER_CALL_DURATION, GRPC_SERVER_CALL_RCVD_BYTES, GRPC_SERVER_CALL_SENT_BYTES, GRPC_SERVER_CALL_STARTED]
    );
    server.stop().await;
}
