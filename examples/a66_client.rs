//! A client with gRPC's own metrics (gRFC A66, [`Naming::Grpc`]): sends the fixed traffic
//! mix of `contrib/a66/official.py` to an echo server, serves its client metrics on
//! `/metrics`, and stays up to be scraped, so that `contrib/a66/a66-e2e.sh` can compare
//! them with what grpc-python's official OpenTelemetry plugin records for the same mix.
//!
//! ```text
//! cargo run --example a66_client -- --target HOST:PORT [--grpc-target T] [--host H]
//!     [--metrics-port M] [--linger SECS]
//! ```
//!
//! | flag               | default     | meaning                                                            |
//! |--------------------|-------------|--------------------------------------------------------------------|
//! | `--target T`       | (required)  | the echo server: `host:port`, `dns:///host:port` or `http://host:port` |
//! | `--grpc-target T`  | `--target`  | the `grpc_target` label (`with_target`); by default the target string exactly as given, as grpc-python records it |
//! | `--host H`         | `127.0.0.1` | IP address the `/metrics` listener binds                           |
//! | `--metrics-port M` | `0`         | `/metrics` port (`0`: an ephemeral port, printed at startup)       |
//! | `--linger SECS`    | `60`        | after the traffic, serve `/metrics` this long at most              |
//!
//! The mix, in this order, on one channel (the client statuses grpc-python sees):
//!
//! | calls | method | request(s) | status |
//! |---|---|---|---|
//! | 3 | `UnaryEcho` | `hello` | `OK` |
//! | 2 | `UnaryEcho` | `fail:NotFound` | `NOT_FOUND` |
//! | 1 | `UnaryEcho` | `fail:DeadlineExceeded` | `DEADLINE_EXCEEDED` |
//! | 1 | `/grpc.examples.echo.Echo/NoSuchMethod`, a raw call (no generated stub) | `hello` (7 bytes) | `UNIMPLEMENTED` |
//! | 1 | `/no.such.Service/Method`, a raw call | `hello` (7 bytes) | `UNIMPLEMENTED` |
//! | 2 | `ServerStreamingEcho` | `hi` (5 responses) | `OK` |
//! | 1 | `ClientStreamingEcho` | `hello` ×3 | `OK` |
//! | 1 | `BidirectionalStreamingEcho` | `hello` ×2 | `OK` |
//! | 1 | `UnaryEcho`, 50 ms deadline | `sleep:200` | `DEADLINE_EXCEEDED` |
//!
//! The client layer has the echo service's registry, so the two raw calls are recorded as
//! `grpc_method="other"`, as the official plugins record unregistered methods. When the
//! deadline expires, tonic's own timer usually ends the last call first and hands the
//! application `CANCELLED` ("Timeout expired"), where grpc-python says `DEADLINE_EXCEEDED`;
//! the metrics record `grpc_status="DEADLINE_EXCEEDED"` either way, so both count as
//! expected for that call.
//!
//! Output on stdout, one line each: `metrics on http://ADDR/metrics` once the listener is
//! up; after the mix a JSON object with each call's status (and status message) and
//! `"unexpected"`, the number of calls whose status was not an expected one; then
//! `TRAFFIC DONE`. It then serves
//! `/metrics` until the scraper is done with it and says so with SIGTERM or Ctrl-C, or
//! until `--linger` elapses, and exits (status 1 when a call had an unexpected status or
//! the server could not be reached within 10 s).

#[path = "support/json.rs"]
mod json;

use json::json_string;

use std::{
    error::Error,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;
use http::uri::PathAndQuery;
use tokio_stream::StreamExt;
use tonic::{
    Code, Request, Status,
    transport::{Channel, Endpoint},
};
use tonic_metrics::{ClientMetrics, ClientMetricsLayer, GrpcCode, MethodRegistry, Naming, PrometheusExporter};
use tonic_metrics_testing::{EchoClient, EchoRequest, EchoResponse, STREAM_RESPONSES};
use tower::ServiceBuilder;

/// Sends the A66 comparison's traffic mix with `Naming::Grpc` client metrics on /metrics.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The echo server: host:port, dns:///host:port or http://host:port.
    #[arg(long)]
    target: String,

    /// The grpc_target label [default: --target exactly as given, as grpc-python records it].
    #[arg(long)]
    grpc_target: Option<String>,

    /// IP address of the /metrics listener.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,

    /// Port of the /metrics listener (0: an ephemeral port).
    #[arg(long, default_value_t = 0)]
    metrics_port: u16,

    /// After the traffic, serve /metrics at most this many seconds (a signal ends it sooner).
    #[arg(long, default_value_t = 60.0)]
    linger: f64,
}

type Layered = ClientMetrics<Channel>;

/// The deadline of the last call, shorter than the 200 ms its request asks the server to wait.
const DEADLINE: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The endpoint URI for a target in any of the accepted spellings.
fn endpoint_uri(target: &str) -> String {
    if let Some(authority) = target.strip_prefix("dns:///") {
        format!("http://{authority}")
    } else if target.contains("://") {
        target.to_owned()
    } else {
        format!("http://{target}")
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn Error + Send + Sync>> {
    // Signals first: one sent as soon as the ready line is out already counts.
    let signals = signals()?;
    let metrics = PrometheusExporter::new()
        .with_listen_addr(SocketAddr::new(args.host, args.metrics_port))
        .install()
        .map_err(|e| format!("cannot serve /metrics: {e}"))?;
    println!("metrics on http://{}/metrics", metrics.local_addr());
    std::io::stdout().flush()?;

    let grpc_target = args.grpc_target.clone().unwrap_or_else(|| args.target.clone());
    let registry = MethodRegistry::from_file_descriptor_set(tonic_metrics_testing::FILE_DESCRIPTOR_SET)?;
    let layer = ClientMetricsLayer::new().with_naming(Naming::Grpc).with_registry(registry).with_target(&grpc_target);
    let endpoint = Endpoint::from_shared(endpoint_uri(&args.target))?.connect_timeout(Duration::from_secs(10));
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .map_err(|_| format!("{} not reachable within 10 s", args.target))?
        .map_err(|e| format!("cannot connect to {}: {e}", args.target))?;
    let layered: Layered = ServiceBuilder::new().layer(layer).service(channel);

    let calls = traffic_mix(layered).await;
    let unexpected = calls.iter().filter(|c| !c.expected.contains(&c.code)).count();
    println!("{}", summary(&args.target, &grpc_target, &calls, unexpected));
    println!("TRAFFIC DONE");
    std::io::stdout().flush()?;

    tokio::select! {
        () = signals => {}
        () = tokio::time::sleep(Duration::from_secs_f64(args.linger.max(0.0))) => {}
    }
    metrics.shutdown().await;
    Ok(unexpected == 0)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
fn signals() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async move {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// One call of the mix and how it ended.
struct Outcome {
    call: &'static str,
    messages: &'static [&'static str],
    code: Code,
    status_message: String,
    expected: &'static [Code],
}

/// How a call ended: its code and, when it failed, the status message.
type Ended = (Code, String);

fn req(message: &str) -> EchoRequest {
    EchoRequest { message: message.to_owned() }
}

fn ended<T>(result: Result<T, Status>) -> Ended {
    result.map_or_else(|status| failed(&status), |_| (Code::Ok, String::new()))
}

fn failed(status: &Status) -> Ended {
    (status.code(), status.message().to_owned())
}

fn wrong(what: &str) -> Ended {
    (Code::Unknown, format!("unexpected reply: {what}"))
}

/// A unary call to `path` without a generated stub (so without `tonic::GrpcMethod`): the
/// 7 bytes of `EchoRequest { message: "hello" }`, as grpc-python's generic call sends them.
async fn raw_call(service: Layered, path: &'static str) -> Ended {
    let mut grpc = tonic::client::Grpc::new(service);
    if let Err(error) = grpc.ready().await {
        return failed(&Status::from_error(error));
    }
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
    ended(grpc.unary(Request::new(req("hello")), PathAndQuery::from_static(path), codec).await)
}

/// The mix of the module docs, in its order, one call at a time.
async fn traffic_mix(layered: Layered) -> Vec<Outcome> {
    const OK: &[Code] = &[Code::Ok];
    let mut client = EchoClient::new(layered.clone());
    let mut calls = Vec::new();
    let mut record = |call, messages, (code, status_message): Ended, expected| {
        calls.push(Outcome { call, messages, code, status_message, expected });
    };

    for _ in 0..3 {
        record("UnaryEcho", &["hello"], ended(client.unary_echo(req("hello")).await), OK);
    }
    for _ in 0..2 {
        let result = ended(client.unary_echo(req("fail:NotFound")).await);
        record("UnaryEcho", &["fail:NotFound"], result, &[Code::NotFound]);
    }
    let result = ended(client.unary_echo(req("fail:DeadlineExceeded")).await);
    record("UnaryEcho", &["fail:DeadlineExceeded"], result, &[Code::DeadlineExceeded]);
    for path in ["/grpc.examples.echo.Echo/NoSuchMethod", "/no.such.Service/Method"] {
        record(path, &["hello"], raw_call(layered.clone(), path).await, &[Code::Unimplemented]);
    }
    for _ in 0..2 {
        let result = match client.server_streaming_echo(req("hi")).await {
            Ok(response) => {
                let replies: Vec<_> = response.into_inner().collect().await;
                match replies.iter().find_map(|r| r.as_ref().err()) {
                    Some(status) => failed(status),
                    None if replies.len() == STREAM_RESPONSES => (Code::Ok, String::new()),
                    None => wrong(&format!("{} responses", replies.len())),
                }
            }
            Err(status) => failed(&status),
        };
        record("ServerStreamingEcho", &["hi"], result, OK);
    }
    let result = match client.client_streaming_echo(tokio_stream::iter(vec![req("hello"); 3])).await {
        Ok(reply) if reply.get_ref().message == "hello,hello,hello" => (Code::Ok, String::new()),
        Ok(reply) => wrong(&reply.into_inner().message),
        Err(status) => failed(&status),
    };
    record("ClientStreamingEcho", &["hello", "hello", "hello"], result, OK);
    let result = match client.bidirectional_streaming_echo(tokio_stream::iter(vec![req("hello"); 2])).await {
        Ok(response) => {
            let replies: Vec<_> = response.into_inner().collect().await;
            match replies.iter().find_map(|r| r.as_ref().err()) {
                Some(status) => failed(status),
                None if replies.len() == 2 => (Code::Ok, String::new()),
                None => wrong(&format!("{} responses", replies.len())),
            }
        }
        Err(status) => failed(&status),
    };
    record("BidirectionalStreamingEcho", &["hello", "hello"], result, OK);
    let mut late = Request::new(req("sleep:200"));
    late.set_timeout(DEADLINE);
    let result = ended(client.unary_echo(late).await);
    record("UnaryEcho", &["sleep:200"], result, &[Code::DeadlineExceeded, Code::Cancelled]);
    calls
}

/// The summary line: statuses in the canonical spelling of `grpc_status`.
fn summary(target: &str, grpc_target: &str, calls: &[Outcome], unexpected: usize) -> String {
    let name = |code: Code| GrpcCode::from(code).as_canonical_str();
    let calls: Vec<String> = calls
        .iter()
        .map(|c| {
            let messages: Vec<String> = c.messages.iter().map(|m| json_string(m)).collect();
            let expected: Vec<String> = c.expected.iter().map(|&code| format!("\"{}\"", name(code))).collect();
            format!(
                "{{\"method\":{},\"messages\":[{}],\"code\":\"{}\",\"status_message\":{},\"expected\":[{}]}}",
                json_string(c.call),
                messages.join(","),
                name(c.code),
                json_string(&c.status_message),
                expected.join(",")
            )
        })
        .collect();
    format!(
        "{{\"target\":{},\"grpc_target\":{},\"calls\":[{}],\"unexpected\":{unexpected}}}",
        json_string(target),
        json_string(grpc_target),
        calls.join(",")
    )
}
