//! The whole crate in one command: an echo server with the metrics layer and `/metrics`,
//! a client with the client layer driving a realistic mix of traffic at it, then a table
//! of what Prometheus would see, read back from the server's own `/metrics`.
//!
//! ```text
//! cargo run --example demo -- [--duration SECS] [--once] [--host H] [--port P] [--metrics-port M]
//! ```
//!
//! Traffic runs for `--duration` seconds (default 5): all four RPC kinds, slow calls,
//! errors, deadlines and cancelled streams, from 8 concurrent callers. The table shows, per
//! method and side, the calls, the share that ended with any code but OK (and those codes),
//! p50/p99 handling time and, for streaming methods, p50/p99 time to first message, both
//! estimated from the histogram buckets exactly as PromQL's `histogram_quantile` would,
//! and messages in and out. It fits 120 columns. Afterwards the server keeps running so you can
//! `curl http://127.0.0.1:50052/metrics`, until Ctrl-C; `--once` exits right after the table.

mod support;

use std::{
    collections::BTreeMap,
    error::Error,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::{
    Request,
    transport::{Channel, Server},
};
use tonic_metrics::{ClientMetrics, ClientMetricsLayer, PrometheusExporter, ServerMetricsLayer};
use tonic_metrics_testing::{
    EchoClient, EchoServer, EchoService,
    exposition::{self, Sample},
};
use tower::ServiceBuilder;

/// Runs an instrumented echo server and client, then prints the metrics as a table.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// How long traffic runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Exit after printing the table instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,

    /// IP address to bind (gRPC and metrics).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,

    /// gRPC port (0: an ephemeral port).
    #[arg(long, default_value_t = 50051)]
    port: u16,

    /// Port of the /metrics listener [default: the gRPC port + 1].
    #[arg(long)]
    metrics_port: Option<u16>,
}

type Echo = EchoClient<ClientMetrics<Channel>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    let grpc_addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| format!("cannot listen for gRPC on {grpc_addr}: {e}; pick another with --port"))?;
    // The metrics port follows the port asked for, not the one bound: with `--port 0` both
    // are ephemeral (bound port + 1 may belong to someone else).
    let mut exporter = PrometheusExporter::for_grpc_addr(grpc_addr);
    let grpc_addr = listener.local_addr()?;
    if let Some(port) = args.metrics_port {
        exporter = exporter.with_port(port);
    }
    // The demo is about the metrics, so unlike a real server it stops if they cannot start.
    let metrics = exporter.install().map_err(|e| format!("{e} (try --metrics-port)"))?;
    let metrics_addr = metrics.local_addr();

    let registry = support::registry()?;
    let (health, health_service) = support::health().await;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(ServerMetricsLayer::new().with_registry(registry.clone()))
            .add_service(EchoServer::new(EchoService))
            .add_service(health_service)
            .add_service(support::reflection_v1()?)
            .add_service(support::reflection_v1alpha()?)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = server_stopped.await;
            }),
    );
    println!("gRPC on {grpc_addr}, metrics on http://{metrics_addr}/metrics");

    let channel = Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?;
    let client: Echo = EchoClient::new(
        ServiceBuilder::new().layer(ClientMetricsLayer::new().with_registry(registry)).service(channel),
    );

    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let calls = drive_traffic(client, duration).await;
    eprintln!();

    let text = exposition::scrape(metrics_addr).await?;
    let samples = exposition::parse(&text)?;
    println!("\n{calls} RPCs in {:.1} s. What http://{metrics_addr}/metrics says:\n", duration.as_secs_f64());
    print_table("Server side (grpc_server_*)", "grpc_server", &samples);
    print_table("Client side (grpc_client_*)", "grpc_client", &samples);

    if !args.once {
        let signals = support::Signals::listen()?;
        println!("Still serving: curl -s http://{metrics_addr}/metrics | grep grpc_   (Ctrl-C to stop)");
        std::io::stdout().flush()?;
        signals.shutdown().await;
        support::not_serving(&health).await;
    }
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    metrics.shutdown().await;
    Ok(())
}

/// A small deterministic generator, so every run sends a similar mix.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Eight callers sending a realistic mix until `duration` is over; returns the call count.
async fn drive_traffic(client: Echo, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for worker in 0..8u64 {
        let (mut client, done) = (client.clone(), done.clone());
        callers.spawn(async move {
            let mut dice = Dice(0x2545_f491_4f6c_dd1d ^ (worker + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            while Instant::now() < deadline {
                one_call(&mut client, &mut dice).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !callers.is_empty() {
        tokio::select! {
            _ = tick.tick() => {
                let elapsed = started.elapsed().as_secs_f64().min(duration.as_secs_f64());
                let filled = (30.0 * elapsed / duration.as_secs_f64()) as usize;
                eprint!("\r  [{}{}] {elapsed:4.1} s  {} RPCs", "#".repeat(filled), " ".repeat(30 - filled.min(30)), done.load(Ordering::Relaxed));
                let _ = std::io::stderr().flush();
            }
            _ = callers.join_next() => {}
        }
    }
    done.load(Ordering::Relaxed)
}

async fn one_call(client: &mut Echo, dice: &mut Dice) {
    let fail = ["fail:NotFound", "fail:InvalidArgument", "fail:Unavailable", "fail:PermissionDenied"];
    match dice.roll(100) {
        // Mostly fast unary calls, some slow, some failing.
        0..=49 => drop(client.unary_echo(req("hello")).await),
        50..=57 => drop(client.unary_echo(req(&format!("sleep:{}", 20 + dice.roll(180)))).await),
        58..=64 => drop(client.unary_echo(req(fail[dice.roll(4) as usize])).await),
        // A deadline shorter than the handler.
        65..=66 => {
            let mut request = Request::new(req("sleep:400"));
            request.set_timeout(Duration::from_millis(100));
            drop(client.unary_echo(request).await);
        }
        67..=76 => {
            let message =
                if dice.roll(10) == 0 { "fail:Aborted".to_string() } else { format!("sleep:{}", dice.roll(20)) };
            if let Ok(response) = client.server_streaming_echo(req(&message)).await {
                let mut stream = response.into_inner();
                while stream.next().await.is_some() {}
            }
        }
        // A client that walks away from a stream after the first message.
        77..=79 => {
            if let Ok(response) = client.server_streaming_echo(req("sleep:50")).await {
                let mut stream = response.into_inner();
                let _ = stream.next().await;
            }
        }
        80..=89 => {
            let count = 1 + dice.roll(6) as usize;
            let mut messages = vec![req("part"); count];
            if dice.roll(10) == 0 {
                messages.push(req("fail:FailedPrecondition"));
            }
            drop(client.client_streaming_echo(tokio_stream::iter(messages)).await);
        }
        _ => {
            let count = 1 + dice.roll(6) as usize;
            let mut messages = vec![req("ping"); count];
            if dice.roll(10) == 0 {
                messages.push(req("fail:ResourceExhausted"));
            }
            if let Ok(response) = client.bidirectional_streaming_echo(tokio_stream::iter(messages)).await {
                let mut stream = response.into_inner();
                while stream.next().await.is_some() {}
            }
        }
    }
}

fn req(message: &str) -> tonic_metrics_testing::EchoRequest {
    tonic_metrics_testing::EchoRequest { message: message.into() }
}

/// The table's width: it fits a 120-column terminal.
const WIDTH: usize = 120;

/// One row per method that saw traffic, then the non-OK codes of each.
fn print_table(title: &str, prefix: &str, samples: &[Sample]) {
    let handled = format!("{prefix}_handled_total");
    let mut methods: BTreeMap<(String, String), (String, BTreeMap<String, f64>)> = BTreeMap::new();
    for sample in exposition::select(samples, &handled, &[]) {
        let label = |k: &str| sample.labels.get(k).cloned().unwrap_or_default();
        let entry = methods
            .entry((label("grpc_service"), label("grpc_method")))
            .or_insert_with(|| (label("grpc_type"), BTreeMap::new()));
        *entry.1.entry(label("grpc_code")).or_default() += sample.value;
    }
    methods.retain(|_, (_, codes)| codes.values().sum::<f64>() > 0.0);
    let name_width = methods.keys().map(|(service, method)| service.len() + 1 + method.len()).max().unwrap_or(0);
    println!("{title}");
    println!(
        "  {:<name_width$} {:<6} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11}",
        "method", "type", "calls", "non-OK", "p50", "p99", "TTFM p50", "TTFM p99", "msgs in/out"
    );
    let mut non_ok_lines = Vec::new();
    for ((service, method), (kind, codes)) in &methods {
        let requests: f64 = codes.values().sum();
        let non_ok: f64 = codes.iter().filter(|(code, _)| *code != "OK").map(|(_, n)| n).sum();
        let selector = [("grpc_service", service.as_str()), ("grpc_method", method.as_str())];
        let quantile = |family: &str, q| {
            let buckets = exposition::buckets(samples, &format!("{prefix}_{family}"), &selector);
            exposition::histogram_quantile(q, &buckets).map_or("-".to_string(), format_seconds)
        };
        let msgs_in = exposition::sum(samples, &format!("{prefix}_msg_received_total"), &selector);
        let msgs_out = exposition::sum(samples, &format!("{prefix}_msg_sent_total"), &selector);
        println!(
            "  {:<name_width$} {:<6} {:>6} {:>6.1}% {:>7} {:>7} {:>8} {:>8} {:>11}",
            format!("{service}/{method}"),
            kind.strip_suffix("_stream").unwrap_or(kind),
            requests,
            100.0 * non_ok / requests,
            quantile("handling_seconds", 0.5),
            quantile("handling_seconds", 0.99),
            quantile("time_to_first_message_seconds", 0.5),
            quantile("time_to_first_message_seconds", 0.99),
            format!("{msgs_in}/{msgs_out}"),
        );
        let mut non_ok_codes: Vec<_> = codes.iter().filter(|(code, n)| *code != "OK" && **n > 0.0).collect();
        if !non_ok_codes.is_empty() {
            non_ok_codes.sort_by(|a, b| b.1.total_cmp(a.1));
            let list = non_ok_codes.iter().map(|(code, n)| format!("{code} {n}")).collect::<Vec<_>>();
            non_ok_lines.push(format!("{method}: {}", list.join(", ")));
        }
    }
    println!("  p50/p99: handling time; TTFM: time to first message (streaming methods); non-OK: any code but OK");
    for line in non_ok_lines {
        print_wrapped("  non-OK ", &line);
    }
    println!();
}

/// `text` after `lead`, wrapped at commas to fit [`WIDTH`].
fn print_wrapped(lead: &str, text: &str) {
    let mut line = lead.to_string();
    for (i, part) in text.split(", ").enumerate() {
        let piece = if i == 0 { part.to_string() } else { format!(", {part}") };
        if line.len() + piece.len() > WIDTH && line.len() > lead.len() {
            println!("{},", line);
            line = format!("{}{}", " ".repeat(lead.len() + 2), part);
        } else {
            line.push_str(&piece);
        }
    }
    println!("{line}");
}

fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 { format!("{:.1}ms", seconds * 1000.0) } else { format!("{seconds:.2}s") }
}
