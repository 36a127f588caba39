//! Chaos: many concurrent clients (with `ClientMetricsLayer`) against a real tonic server
//! (with `ServerMetricsLayer`) over loopback, doing a random mix of the four RPC kinds with
//! random outcomes. The clients keep their own tally of what they saw; afterwards both
//! sides' metrics are checked against it and against each other.
//!
//! The mix is drawn from a seeded xorshift generator; the seed is printed, and
//! `CHAOS_SEED=<n>` replays the same mix (the timing, and so the races, differ per run;
//! every assertion holds whatever the races decide).
//!
//! What must hold, and what may legitimately differ:
//! - On each side, per method, `started` equals the sum of `handled` over all codes, and
//!   the histogram holds one observation per handled RPC: exactly once, always.
//! - The client layer agrees exactly with the application's own tally (codes and, for calls
//!   that ran to completion, messages): the client layer sees what the caller sees.
//! - Without cancels (phase 1) every count matches exactly between server and client: a
//!   handler's error, an error after the first message and a caught panic (`Internal`)
//!   reach both sides identically.
//! - A call the client cancels is `Canceled` on the client, and on the server whatever it
//!   had come to: `OK` when the cancel raced the end of the call (the trailers were already
//!   sent), `Canceled` when it arrived mid-call, whatever tonic answered when the cancel
//!   cut its request short (seen: `Internal`, once in ~600 calls), and nothing when the request
//!   never reached the server (so `server started <= client started`). Every call the
//!   client saw end with a status ended with that status on the server: per code, `client
//!   <= server`, and the surplus is at most the client's `Canceled` count.
//! - Messages of cancelled calls may be counted by the sender and never arrive: the sender
//!   counts a message when its body hands it to HTTP/2, the receiver when it reads it. So
//!   `server received <= client sent`, `client received <= server sent`, and every
//!   message of a call that completed is counted on both sides.
//! - A deadline shorter than the handler is `DeadlineExceeded` on both sides, whatever the
//!   caller saw: tonic's server-side timeout drops the call at the deadline the request
//!   carried (the layer sees a drop at or after it), and tonic's client-side timeout
//!   surfaces as `Cancelled` to the caller but is recorded as the deadline it is.
//! - Calls made after a graceful shutdown began fail on the client (`Unavailable`) and
//!   never reach the server; calls in flight at a graceful shutdown complete normally.
//!   A hard stop (the server's runtime dropped) records every in-flight call as `Canceled`
//!   on the server, while the client sees the transport error.

mod common;

use std::{
    any::Any,
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Once},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::{Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::{Code, Request, Status, Streaming, transport::Channel};
use tonic_metrics::{ClientMetricsLayer, GrpcCode, ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoClient, EchoRequest, EchoResponse, EchoServer, EchoService, STREAM_RESPONSES};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

/// Concurrent client tasks, and calls per task in each phase.
const CLIENTS: usize = 16;
const CALLS: usize = 40;
/// Upper bound for any one call, so a regression fails instead of hanging.
const CALL_LIMIT: Duration = Duration::from_secs(20);

const METHODS: [(&str, &str); 4] = [
    ("unary", "UnaryEcho"),
    ("server_stream", "ServerStreamingEcho"),
    ("client_stream", "ClientStreamingEcho"),
    ("bidi_stream", "BidirectionalStreamingEcho"),
];

/// Codes the handlers are asked to fail with: all but `OK`, `Canceled`, and the codes the
/// transport itself produces (`Unknown`, `Internal`, `Unavailable`), so that those stay
/// attributable to panics and shutdowns.
const FAIL_CODES: [GrpcCode; 12] = [
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

// ---------------------------------------------------------------------------------------
// A tiny deterministic generator
// ---------------------------------------------------------------------------------------

/// xorshift64*: enough randomness for a test mix, no dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift.
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("chaos seed: {seed} (replay the mix with CHAOS_SEED={seed})");
    seed
}

/// The echo handlers panic on request; keep those expected panics out of the test output.
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.starts_with("the client asked") {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------------------
// The server, on a runtime of its own so that it can be stopped hard
// ---------------------------------------------------------------------------------------

/// The recommended answer to a panic: a trailers-only gRPC `Internal`, which the metrics
/// layer (outside `CatchPanicLayer`) reads like any handler error.
fn grpc_internal(_: Box<dyn Any + Send + 'static>) -> http::Response<http_body_util::Empty<Bytes>> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "13")
        .header("grpc-message", "handler panicked")
        .body(http_body_util::Empty::new())
        .unwrap()
}

struct ChaosServer {
    addr: SocketAddr,
    metrics: Recorded,
    graceful: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChaosServer {
    /// The echo server behind `ServerMetricsLayer` (and, with `catch_panic`,
    /// `CatchPanicLayer` inside it), on its own 2-thread runtime.
    fn start(catch_panic: bool) -> Self {
        let (recorder, metrics) = Recorded::new();
        let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (graceful, graceful_signal) = oneshot::channel::<()>();
        let (kill, kill_signal) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let incoming = TcpListenerStream::new(TcpListener::from_std(listener).unwrap());
                let signal = async {
                    let _ = graceful_signal.await;
                };
                let echo = EchoServer::new(EchoService);
                type Serve = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
                let serve: Serve = if catch_panic {
                    // Metrics outside, CatchPanicLayer inside: the panic becomes a response
                    // the metrics layer reads, and the client gets a real gRPC status.
                    let stack = ServiceBuilder::new().layer(layer).layer(CatchPanicLayer::custom(grpc_internal));
                    Box::pin(
                        tonic::transport::Server::builder()
                            .layer(stack)
                            .add_service(echo)
                            .serve_with_incoming_shutdown(incoming, signal),
                    )
                } else {
                    Box::pin(
                        tonic::transport::Server::builder()
                            .layer(layer)
                            .add_service(echo)
                            .serve_with_incoming_shutdown(incoming, signal),
                    )
                };
                tokio::select! {
                    result = serve => result.expect("the server failed"),
                    _ = kill_signal => {}
                }
            });
            // Dropping the runtime drops every connection and stream task: a hard stop, as
            // when a process exits with calls in flight.
            drop(runtime);
        });
        Self { addr, metrics, graceful: Some(graceful), kill: Some(kill), thread: Some(thread) }
    }

    /// Starts a graceful shutdown: no new connections or streams; in-flight calls finish.
    fn begin_graceful_shutdown(&mut self) {
        let _ = self.graceful.take().unwrap().send(());
    }

    /// Stops the server at once, dropping whatever is in flight.
    fn kill(&mut self) {
        let _ = self.kill.take().unwrap().send(());
    }

    /// Waits until the server thread has exited.
    async fn join(&mut self) {
        let thread = self.thread.take().unwrap();
        tokio::time::timeout(CALL_LIMIT, tokio::task::spawn_blocking(move || thread.join()))
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The clients and their tally
// ---------------------------------------------------------------------------------------

type Client = EchoClient<tonic_metrics::ClientMetrics<Channel>>;

/// What a caller planned for one call.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Succeed,
    /// A handler error before any response message.
    FailFirst(GrpcCode),
    /// A handler error after the first message (of the request or the response).
    FailLater(GrpcCode),
    Panic,
    /// Drop the call after `after_ms`, or after `messages` response messages.
    Cancel {
        after_ms: u64,
        messages: usize,
    },
    /// A deadline (`grpc-timeout`) shorter than the handler takes.
    Deadline {
        ms: u64,
    },
}

/// What the caller saw of one call.
#[derive(Debug, Clone)]
struct Record {
    method: &'static str,
    code: GrpcCode,
    /// Messages the application handed over and received.
    sent: u64,
    received: u64,
    /// Whether the caller dropped the call before its end (messages then are uncertain).
    dropped: bool,
}

type Tally = Arc<Mutex<Vec<Record>>>;

fn code_of(status: &Status) -> GrpcCode {
    GrpcCode::from(status.code())
}

/// The code both layers record for a call that failed with `status`: a call whose deadline
/// expired is `DeadlineExceeded`, though tonic hands the caller `Cancelled` when its own
/// client-side timer wins.
fn expected_code(plan: Plan, status: &Status) -> GrpcCode {
    match plan {
        Plan::Deadline { .. } => {
            assert!(matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded), "deadline: {status:?}");
            GrpcCode::DeadlineExceeded
        }
        _ => code_of(status),
    }
}

fn message(text: impl Into<String>) -> EchoRequest {
    EchoRequest { message: text.into() }
}

/// Reads a response stream to its end; returns the messages and the final status.
async fn drain(mut stream: Streaming<EchoResponse>) -> (u64, GrpcCode) {
    let mut received = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return (received, GrpcCode::Ok),
            Err(status) => return (received, code_of(&status)),
        }
    }
}

/// Request messages for a streaming call, optionally never ending (the client keeps its
/// side open, so only a cancel or a deadline ends the call).
fn outbound(messages: Vec<EchoRequest>, open: bool) -> impl Stream<Item = EchoRequest> + Send + 'static {
    let pending: Pin<Box<dyn Stream<Item = EchoRequest> + Send>> =
        if open { Box::pin(tokio_stream::pending()) } else { Box::pin(tokio_stream::empty()) };
    tokio_stream::iter(messages).chain(pending)
}

fn pick_plan(rng: &mut Rng, kind: usize, chaos: bool) -> Plan {
    let code = FAIL_CODES[rng.below(FAIL_CODES.len() as u64) as usize];
    let roll = rng.below(100);
    let roll = if chaos { roll } else { roll % 60 };
    match roll {
        0..30 => Plan::Succeed,
        30..42 => Plan::FailFirst(code),
        42..54 => Plan::FailLater(code),
        54..60 => Plan::Panic,
        // Deadlines only where tonic enforces them: before the response head, which a
        // unary or client-streaming handler holds back until it is done.
        60..75 if kind == 0 || kind == 2 => Plan::Deadline { ms: 5 + rng.below(40) },
        _ => Plan::Cancel { after_ms: rng.below(60), messages: rng.below(STREAM_RESPONSES as u64) as usize },
    }
}

/// Makes one call of kind `kind` (an index into [`METHODS`]) as planned.
async fn call(client: &mut Client, kind: usize, plan: Plan) -> Record {
    let method = METHODS[kind].1;
    let record = |code, sent, received, dropped| Record { method, code, sent, received, dropped };
    let canceled = |sent| record(GrpcCode::Canceled, sent, 0, true);
    match (kind, plan) {
        // Unary.
        (0, Plan::Cancel { after_ms, .. }) => {
            let call = client.unary_echo(message("sleep:30"));
            match tokio::time::timeout(Duration::from_millis(after_ms), call).await {
                Ok(Ok(_)) => record(GrpcCode::Ok, 1, 1, false),
                Ok(Err(status)) => record(code_of(&status), 1, 0, false),
                Err(_) => canceled(1),
            }
        }
        (0, plan) => {
            let text = match plan {
                Plan::Succeed => "plain".to_string(),
                Plan::FailFirst(code) | Plan::FailLater(code) => format!("fail:{}", code.as_i32()),
                Plan::Panic => "panic".to_string(),
                Plan::Deadline { .. } => "sleep:2000".to_string(),
                Plan::Cancel { .. } => unreachable!(),
            };
            let mut request = Request::new(message(text));
            if let Plan::Deadline { ms } = plan {
                request.set_timeout(Duration::from_millis(ms));
            }
            match client.unary_echo(request).await {
                Ok(_) => record(GrpcCode::Ok, 1, 1, false),
                Err(status) => record(expected_code(plan, &status), 1, 0, false),
            }
        }
        // Server streaming: the echo handler always sends its first message before failing.
        (1, Plan::Cancel { after_ms, messages }) => {
            let call = client.server_streaming_echo(message("sleep:10"));
            let mut stream = match tokio::time::timeout(Duration::from_millis(after_ms), call).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return record(code_of(&status), 1, 0, false),
                Err(_) => return canceled(1),
            };
            let mut received = 0;
            while received < messages as u64 {
                match stream.message().await {
                    Ok(Some(_)) => received += 1,
                    other => panic!("stream ended early: {other:?}"),
                }
            }
            drop(stream); // RST_STREAM(CANCEL) before the last message.
            record(GrpcCode::Canceled, 1, received, true)
        }
        (1, plan) => {
            let text = match plan {
                Plan::Succeed | Plan::Deadline { .. } => "plain".to_string(),
                Plan::FailFirst(code) | Plan::FailLater(code) => format!("fail:{}", code.as_i32()),
                Plan::Panic => "panic".to_string(),
                Plan::Cancel { .. } => unreachable!(),
            };
            match client.server_streaming_echo(message(text)).await {
                Ok(response) => {
                    let (received, code) = drain(response.into_inner()).await;
                    record(code, 1, received, false)
                }
                Err(status) => record(code_of(&status), 1, 0, false),
            }
        }
        // Client streaming.
        (2, Plan::Cancel { after_ms, .. }) => {
            let call = client.client_streaming_echo(outbound(vec![message("a")], true));
            match tokio::time::timeout(Duration::from_millis(after_ms), call).await {
                Ok(result) => panic!("an open client stream cannot end: {result:?}"),
                Err(_) => canceled(1),
            }
        }
        (2, plan) => {
            let (messages, open): (Vec<String>, bool) = match plan {
                Plan::Succeed => ((0..1 + kind_len(plan)).map(|i| format!("m{i}")).collect(), false),
                Plan::FailFirst(code) => (vec![format!("fail:{}", code.as_i32())], false),
                Plan::FailLater(code) => (vec!["a".into(), format!("fail:{}", code.as_i32()), "b".into()], false),
                // The handler panics on reading "panic", its last message.
                Plan::Panic => (vec!["a".into(), "panic".into()], false),
                // The handler waits for the end of a stream that never comes.
                Plan::Deadline { .. } => (vec!["a".into()], true),
                Plan::Cancel { .. } => unreachable!(),
            };
            let sent = messages.len() as u64;
            let mut request = Request::new(outbound(messages.into_iter().map(message).collect(), open));
            if let Plan::Deadline { ms } = plan {
                request.set_timeout(Duration::from_millis(ms));
            }
            match client.client_streaming_echo(request).await {
                Ok(_) => record(GrpcCode::Ok, sent, 1, false),
                Err(status) => record(expected_code(plan, &status), sent, 0, false),
            }
        }
        // Bidirectional streaming.
        (3, Plan::Cancel { after_ms, messages }) => {
            // The caller feeds its requests through a channel and cancels by dropping both
            // ends it holds. (Dropping only the response stream is not a cancel: hyper goes
            // on sending the request stream, so the call stays open until that stream ends
            // or the connection closes, and the server rightly counts it as in flight.)
            let (requests, receiver) = tokio::sync::mpsc::channel(STREAM_RESPONSES);
            for i in 0..STREAM_RESPONSES {
                requests.try_send(message(format!("x{i}"))).unwrap();
            }
            let sent = STREAM_RESPONSES as u64;
            let call = client.bidirectional_streaming_echo(tokio_stream::wrappers::ReceiverStream::new(receiver));
            let mut stream = match tokio::time::timeout(Duration::from_millis(after_ms), call).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return record(code_of(&status), sent, 0, false),
                Err(_) => return canceled(sent),
            };
            let mut received = 0;
            while received < messages as u64 {
                match stream.message().await {
                    Ok(Some(_)) => received += 1,
                    other => panic!("stream ended early: {other:?}"),
                }
            }
            drop((stream, requests));
            record(GrpcCode::Canceled, sent, received, true)
        }
        (3, plan) => {
            let messages: Vec<String> = match plan {
                Plan::Succeed | Plan::Deadline { .. } => (0..1 + kind_len(plan)).map(|i| format!("m{i}")).collect(),
                Plan::FailFirst(code) => vec![format!("fail:{}", code.as_i32())],
                // The failure is the last message, so both sides have read all of them.
                Plan::FailLater(code) => vec!["a".into(), "b".into(), format!("fail:{}", code.as_i32())],
                // The echo handler panics in a task it spawned: neither CatchPanicLayer nor
                // the metrics layer can see that task; the response stream just ends, `OK`.
                Plan::Panic => vec!["a".into(), "panic".into()],
                Plan::Cancel { .. } => unreachable!(),
            };
            let sent = messages.len() as u64;
            match client
                .bidirectional_streaming_echo(outbound(messages.into_iter().map(message).collect(), false))
                .await
            {
                Ok(response) => {
                    let (received, code) = drain(response.into_inner()).await;
                    record(code, sent, received, false)
                }
                Err(status) => record(code_of(&status), sent, 0, false),
            }
        }
        _ => unreachable!(),
    }
}

/// A number of messages for a successful stream (1..=4), fixed per plan so the mix stays
/// reproducible from the seed alone.
fn kind_len(plan: Plan) -> usize {
    match plan {
        Plan::Succeed => 3,
        _ => 1,
    }
}

struct Clients {
    clients: Vec<Client>,
    metrics: Recorded,
}

impl Clients {
    /// `CLIENTS` clients over 4 connections, all through one client metrics layer.
    async fn connect(addr: SocketAddr) -> Self {
        let (recorder, metrics) = Recorded::new();
        let layer = ClientMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
        let mut channels = Vec::new();
        for _ in 0..4 {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
            channels.push(endpoint.connect().await.unwrap());
        }
        let clients = (0..CLIENTS)
            .map(|i| EchoClient::new(ServiceBuilder::new().layer(layer.clone()).service(channels[i % 4].clone())))
            .collect();
        Self { clients, metrics }
    }

    /// Every client makes `CALLS` calls of random kinds and plans; returns what they saw.
    async fn run(&self, seed: u64, chaos: bool) -> Vec<Record> {
        let tally = Tally::default();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let mut client = client.clone();
            let tally = tally.clone();
            let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0xa076_1d64_78bd_642f));
            tasks.spawn(async move {
                for _ in 0..CALLS {
                    let kind = rng.below(4) as usize;
                    let plan = pick_plan(&mut rng, kind, chaos);
                    let record = tokio::time::timeout(CALL_LIMIT, call(&mut client, kind, plan))
                        .await
                        .unwrap_or_else(|_| panic!("{} {plan:?} hung", METHODS[kind].1));
                    tally.lock().unwrap().push(record);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        std::mem::take(&mut *tally.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// Views and checks
// ---------------------------------------------------------------------------------------

/// `handled` per (method, code), zero series left out.
fn handled_by_code(m: &Recorded, name: &str) -> BTreeMap<(String, GrpcCode), u64> {
    let mut out = BTreeMap::new();
    for (labels, value) in m.series(name) {
        if value > 0 {
            let code = GrpcCode::from_name(&labels["grpc_code"]).unwrap();
            *out.entry((labels["grpc_method"].clone(), code)).or_default() += value;
        }
    }
    out
}

fn per_method(m: &Recorded, name: &str, method: &str) -> u64 {
    m.series(name).into_iter().filter(|(l, _)| l["grpc_method"] == method).map(|(_, v)| v).sum()
}

fn tally_by_code(records: &[Record]) -> BTreeMap<(String, GrpcCode), u64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry((r.method.to_string(), r.code)).or_default() += 1;
    }
    out
}

/// Exactly once, on one side: per method, `started` = the sum of `handled` = the number of
/// histogram observations.
fn assert_balanced(m: &Recorded, side: &str, started: &str, handled: &str, seconds: &str) {
    for (_, method) in METHODS {
        let s = per_method(m, started, method);
        let h = per_method(m, handled, method);
        let observations: usize = m
            .histogram_series(seconds)
            .into_iter()
            .filter(|(l, _)| l["grpc_method"] == method)
            .map(|(_, v)| v.len())
            .sum();
        assert_eq!(s, h, "{side} {method}: started {s} != handled {h}");
        assert_eq!(observations as u64, h, "{side} {method}: {observations} latencies for {h} handled RPCs");
    }
}

/// Time to first message: only for the streaming methods, at most one observation per
/// handled call; when every call ran to completion (`records` given), exactly one per call
/// whose caller received a message.
fn assert_first_messages(m: &Recorded, side: &str, first_message: &str, handled: &str, records: Option<&[Record]>) {
    for (kind, method) in METHODS {
        let observations: usize = m
            .histogram_series(first_message)
            .into_iter()
            .filter(|(l, _)| l["grpc_method"] == method)
            .map(|(_, v)| v.len())
            .sum();
        if !matches!(kind, "server_stream" | "bidi_stream") {
            assert_eq!(observations, 0, "{side} {method}: a time to first message of a {kind} method");
            continue;
        }
        let h = per_method(m, handled, method);
        assert!(observations as u64 <= h, "{side} {method}: {observations} first messages for {h} handled RPCs");
        if let Some(records) = records {
            let with_message = sum_where(records, method, |r| r.received > 0, |_| 1);
            assert_eq!(observations as u64, with_message, "{side} {method}: first messages vs calls with a message");
        }
    }
}

/// Waits until the server has finished every RPC it started (cancellations arrive late).
async fn server_settled(server: &Recorded) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.counter_sum(SERVER_STARTED) != server.counter_sum(SERVER_HANDLED) {
        if std::time::Instant::now() > deadline {
            let open: Vec<_> = METHODS
                .iter()
                .map(|(_, method)| {
                    (method, per_method(server, SERVER_STARTED, method), per_method(server, SERVER_HANDLED, method))
                })
                .collect();
            panic!("the server never finished some RPCs it started: (method, started, handled) {open:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The client layer agrees with the application's tally, call for call.
fn assert_client_layer_matches_tally(client: &Recorded, records: &[Record]) {
    assert_eq!(handled_by_code(client, CLIENT_HANDLED), tally_by_code(records), "client layer vs the callers' tally");
    assert_eq!(client.counter_sum(CLIENT_STARTED), records.len() as u64);
}

fn sum_where(records: &[Record], method: &str, keep: impl Fn(&Record) -> bool, value: impl Fn(&Record) -> u64) -> u64 {
    records.iter().filter(|r| r.method == method && keep(r)).map(value).sum()
}

/// Server against client where the protocol lets both know (see the module docs).
fn assert_sides_agree(server: &Recorded, client: &Recorded, records: &[Record], exact: bool) {
    let server_codes = handled_by_code(server, SERVER_HANDLED);
    let client_codes = handled_by_code(client, CLIENT_HANDLED);
    let get = |map: &BTreeMap<(String, GrpcCode), u64>, method: &str, code| {
        map.get(&(method.to_string(), code)).copied().unwrap_or(0)
    };
    for (_, method) in METHODS {
        // A call the client saw end with a status ended with that status on the server too
        // (the server layer reads it before it is sent). A call the client cancelled may
        // have ended on the server with any code, or not have reached it at all. So may a
        // call whose deadline the client saw expire: its reset can reach the server before
        // the server's own clock (started when the request arrived) reaches the deadline,
        // which makes it `Canceled` there, as in Go.
        let uncertain = [GrpcCode::Canceled, GrpcCode::DeadlineExceeded];
        let deadlines = get(&client_codes, method, GrpcCode::DeadlineExceeded);
        let server_deadlines = get(&server_codes, method, GrpcCode::DeadlineExceeded);
        assert!(server_deadlines <= deadlines, "{method}: server {server_deadlines} deadlines > client {deadlines}");
        let canceled = get(&client_codes, method, GrpcCode::Canceled) + deadlines;
        let mut from_cancels = get(&server_codes, method, GrpcCode::Canceled) + server_deadlines;
        for code in GrpcCode::ALL.into_iter().filter(|code| !uncertain.contains(code)) {
            let (s, c) = (get(&server_codes, method, code), get(&client_codes, method, code));
            if exact {
                assert_eq!(s, c, "{method} {code}: server {s}, client {c}");
            } else {
                assert!(c <= s, "{method} {code}: server {s} < client {c}");
                from_cancels += s - c;
            }
        }
        if exact {
            assert_eq!(from_cancels, canceled, "{method} Canceled and DeadlineExceeded");
        } else {
            assert!(
                from_cancels <= canceled,
                "{method}: {from_cancels} server outcomes for {canceled} client cancels and deadlines"
            );
        }
        let (server_started, client_started) =
            (per_method(server, SERVER_STARTED, method), per_method(client, CLIENT_STARTED, method));
        let received = per_method(server, SERVER_MSG_RECEIVED, method);
        let client_sent = per_method(client, CLIENT_MSG_SENT, method);
        let sent = per_method(server, SERVER_MSG_SENT, method);
        let client_received = per_method(client, CLIENT_MSG_RECEIVED, method);
        // Messages of calls that ran to completion are known to both sides.
        let completed_sent = sum_where(records, method, |r| !r.dropped, |r| r.sent);
        let completed_received = sum_where(records, method, |r| !r.dropped, |r| r.received);
        if exact {
            assert_eq!(server_started, client_started, "{method} started");
            assert_eq!(received, client_sent, "{method}: server received vs client sent");
            assert_eq!(sent, client_received, "{method}: server sent vs client received");
            assert_eq!(client_sent, completed_sent, "{method}: client layer vs callers' sent");
            assert_eq!(client_received, completed_received, "{method}: client layer vs callers' received");
        } else {
            assert!(server_started <= client_started, "{method} started: server {server_started} > {client_started}");
            let dropped = sum_where(records, method, |r| r.dropped, |_| 1);
            assert!(server_started + dropped >= client_started, "{method}: the server missed a call that completed");
            assert!(
                completed_sent <= received && received <= client_sent,
                "{method} requests: {completed_sent} <= {received} <= {client_sent}"
            );
            assert!(
                completed_received <= client_received && client_received <= sent,
                "{method} responses: {completed_received} <= {client_received} <= {sent}"
            );
        }
    }
}

fn summary(records: &[Record]) -> String {
    let mut by_code: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records {
        *by_code.entry(r.code.as_str()).or_default() += 1;
    }
    format!(
        "{} RPCs {by_code:?}, {} dropped by the caller",
        records.len(),
        records.iter().filter(|r| r.dropped).count()
    )
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mix_is_counted_exactly_once_on_both_sides() {
    quiet_expected_panics();
    let seed = seed();
    let mut server = ChaosServer::start(true);
    let clients = Clients::connect(server.addr).await;
    let server_metrics = server.metrics.clone();
    let (sm, cm) = (&server_metrics, &clients.metrics);

    // Phase 1: every call runs to completion (successes, errors before and after the first
    // message, caught panics): the two sides and the tally agree on everything.
    let mut records = clients.run(seed, false).await;
    server_settled(sm).await;
    eprintln!("phase 1: {}", summary(&records));
    assert_balanced(sm, "server", SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING_SECONDS);
    assert_balanced(cm, "client", CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS);
    assert_client_layer_matches_tally(cm, &records);
    assert_sides_agree(sm, cm, &records, true);
    assert_first_messages(sm, "server", SERVER_TIME_TO_FIRST_MESSAGE, SERVER_HANDLED, Some(&records));
    assert_first_messages(cm, "client", CLIENT_TIME_TO_FIRST_MESSAGE, CLIENT_HANDLED, Some(&records));
    assert!(records.iter().any(|r| r.code == GrpcCode::Internal), "no caught panic in the mix: {}", summary(&records));

    // Phase 2: the same with cancels at random points and deadlines shorter than the handler.
    let chaos = clients.run(seed.rotate_left(17), true).await;
    eprintln!("phase 2: {}", summary(&chaos));
    assert!(chaos.iter().any(|r| r.dropped), "no cancel in the mix");
    records.extend(chaos);
    server_settled(sm).await;
    assert_balanced(sm, "server", SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING_SECONDS);
    assert_balanced(cm, "client", CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS);
    assert_client_layer_matches_tally(cm, &records);
    assert_sides_agree(sm, cm, &records, false);
    assert_first_messages(sm, "server", SERVER_TIME_TO_FIRST_MESSAGE, SERVER_HANDLED, None);
    assert_first_messages(cm, "client", CLIENT_TIME_TO_FIRST_MESSAGE, CLIENT_HANDLED, None);

    // Phase 3: a graceful shutdown with calls in flight. They complete normally; calls made
    // afterwards fail on the client and never reach the server.
    let server_ok = |m: &Recorded| {
        handled_by_code(m, SERVER_HANDLED).iter().filter(|((_, c), _)| *c == GrpcCode::Ok).map(|(_, v)| v).sum::<u64>()
    };
    let (ok_before, started_before) = (server_ok(sm), sm.counter_sum(SERVER_STARTED));
    let mut in_flight = tokio::task::JoinSet::new();
    for (i, client) in clients.clients.iter().enumerate().take(8) {
        let mut client = client.clone();
        in_flight.spawn(async move {
            match i % 2 {
                0 => {
                    let reply = client.unary_echo(message("sleep:300")).await.map(|_| (1, 1));
                    (METHODS[0].1, reply.map_err(|s| code_of(&s)))
                }
                _ => {
                    let response = client.server_streaming_echo(message("sleep:60")).await.unwrap();
                    let (received, code) = drain(response.into_inner()).await;
                    (METHODS[1].1, if code == GrpcCode::Ok { Ok((1, received)) } else { Err(code) })
                }
            }
        });
    }
    sm.eventually("8 calls are in flight", |m| m.counter_sum(SERVER_STARTED) == started_before + 8).await;
    server.begin_graceful_shutdown();
    while let Some(joined) = in_flight.join_next().await {
        let (method, outcome) = joined.unwrap();
        let (sent, received) = outcome.unwrap_or_else(|code| panic!("{method} in flight at shutdown: {code}"));
        records.push(Record { method, code: GrpcCode::Ok, sent, received, dropped: false });
    }
    server.join().await;
    assert_eq!(server_ok(sm), ok_before + 8, "in-flight calls complete at a graceful shutdown");
    let mut late = clients.clients[0].clone();
    let status = late.unary_echo(message("too late")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    records.push(Record { method: METHODS[0].1, code: GrpcCode::Unavailable, sent: 1, received: 0, dropped: false });

    assert_eq!(sm.counter_sum(SERVER_STARTED), started_before + 8, "the late call never reached the server");
    assert_balanced(sm, "server", SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING_SECONDS);
    assert_balanced(cm, "client", CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS);
    // The client layer records the late call as `Unavailable`, as the caller saw it; the
    // server has no record of it.
    assert_client_layer_matches_tally(cm, &records);
    eprintln!("total: {}", summary(&records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_stop_records_every_call_in_flight_as_canceled() {
    quiet_expected_panics();
    let mut server = ChaosServer::start(true);
    let clients = Clients::connect(server.addr).await;
    let (sm, cm) = (server.metrics.clone(), clients.metrics.clone());
    let mut in_flight = tokio::task::JoinSet::new();
    for (i, client) in clients.clients.iter().enumerate().take(12) {
        let mut client = client.clone();
        in_flight.spawn(async move {
            let kind = i % 4;
            let (method, code, received) = match kind {
                0 => (METHODS[0].1, client.unary_echo(message("sleep:10000")).await.err().map(|s| code_of(&s)), 0),
                1 => match client.server_streaming_echo(message("sleep:400")).await {
                    Ok(response) => {
                        let (received, code) = drain(response.into_inner()).await;
                        (METHODS[1].1, Some(code), received)
                    }
                    Err(status) => (METHODS[1].1, Some(code_of(&status)), 0),
                },
                2 => {
                    let call = client.client_streaming_echo(outbound(vec![message("a")], true));
                    (METHODS[2].1, call.await.err().map(|s| code_of(&s)), 0)
                }
                _ => match client.bidirectional_streaming_echo(outbound(vec![message("a")], true)).await {
                    Ok(response) => {
                        let (received, code) = drain(response.into_inner()).await;
                        (METHODS[3].1, Some(code), received)
                    }
                    Err(status) => (METHODS[3].1, Some(code_of(&status)), 0),
                },
            };
            let code = code.expect("a call in flight at a hard stop cannot succeed");
            Record { method, code, sent: 1, received, dropped: false }
        });
    }
    sm.eventually("12 calls are in flight", |m| m.counter_sum(SERVER_STARTED) == 12).await;
    // Let the bidi echoes go out, so that some calls die with messages behind them.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    server.join().await;

    let mut records = Vec::new();
    while let Some(joined) = in_flight.join_next().await {
        records.push(joined.unwrap());
    }
    eprintln!("hard stop, the clients saw: {}", summary(&records));
    // The server dropped every call: each is `Canceled`, once.
    assert_eq!(sm.counter_sum(SERVER_HANDLED), 12);
    let server_codes = handled_by_code(&sm, SERVER_HANDLED);
    assert!(server_codes.keys().all(|(_, code)| *code == GrpcCode::Canceled), "{server_codes:?}");
    assert_balanced(&sm, "server", SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING_SECONDS);
    // The clients saw the transport fail, and their layer recorded it exactly once.
    assert_balanced(&cm, "client", CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS);
    assert_eq!(cm.counter_sum(CLIENT_HANDLED), 12);
    assert!(records.iter().all(|r| r.code != GrpcCode::Ok), "{records:?}");
    assert_client_layer_matches_tally(&cm, &records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_catch_panic_a_panic_is_a_canceled_stream_on_both_sides() {
    quiet_expected_panics();
    let server = ChaosServer::start(false);
    let clients = Clients::connect(server.addr).await;
    let (sm, cm) = (&server.metrics, &clients.metrics);
    let mut client = clients.clients[0].clone();
    let mut records = Vec::new();
    for _round in 0..3 {
        for kind in 0..4 {
            records.push(call(&mut client, kind, Plan::Panic).await);
            // The server goes on serving after each panic.
            records.push(call(&mut client, kind, Plan::Succeed).await);
        }
    }
    server_settled(sm).await;
    eprintln!("panics without CatchPanicLayer, the clients saw: {}", summary(&records));
    // hyper runs each stream in a task of its own; the panic unwinds it, dropping the
    // metrics layer's future (`Canceled`) and the stream, which h2 resets with CANCEL, so
    // the client sees `Cancelled` too. Nothing tells anyone it was a panic: use
    // CatchPanicLayer (see the first test) to get `Internal` on both sides.
    for (_, method) in &METHODS[..3] {
        assert_eq!(
            handled_by_code(sm, SERVER_HANDLED).get(&(method.to_string(), GrpcCode::Canceled)),
            Some(&3),
            "{method}"
        );
    }
    assert_balanced(sm, "server", SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING_SECONDS);
    assert_balanced(cm, "client", CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING_SECONDS);
    assert_client_layer_matches_tally(cm, &records);
    assert_sides_agree(sm, cm, &records, true);
    assert_first_messages(sm, "server", SERVER_TIME_TO_FIRST_MESSAGE, SERVER_HANDLED, Some(&records));
    assert_first_messages(cm, "client", CLIENT_TIME_TO_FIRST_MESSAGE, CLIENT_HANDLED, Some(&records));
}
