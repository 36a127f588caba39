//! A tonic server with go-grpc-prometheus metrics: the echo service, gRPC health and
//! server reflection behind `ServerMetricsLayer`, and Prometheus' `/metrics` on the next
//! port.
//!
//! ```text
//! cargo run --release --example server -- [--host H] [--port P] [--metrics-port M] [--no-metrics]
//!     [--naming go|otel|grpc] [--native-histograms] [--workers N [--multiproc-dir DIR]]
//! ```
//!
//! | flag                  | default     | meaning                                                        |
//! |-----------------------|-------------|----------------------------------------------------------------|
//! | `--host H`            | `127.0.0.1` | IP address both listeners bind (`0.0.0.0` or `::` for all)     |
//! | `--port P`            | `50051`     | gRPC port (`0`: an ephemeral port, printed at startup)         |
//! | `--metrics-port M`    | `P + 1`     | `/metrics` port                                                |
//! | `--no-metrics`        | off         | the same server without the metrics layer nor the `/metrics` listener: a baseline for load tests |
//! | `--naming N`          | `go`        | `go`: go-grpc-prometheus' `grpc_server_*`; `otel`: OpenTelemetry's `rpc_server_call_duration_seconds`; `grpc`: gRPC's own OpenTelemetry metrics (gRFC A66) |
//! | `--otel`              | off         | the same as `--naming otel`                                     |
//! | `--native-histograms` | off         | handling-time histograms are native histograms too, for protobuf scrapers |
//! | `--workers N`         | off         | N worker processes share the gRPC port (`SO_REUSEPORT`, Linux), in multi-process mode: one `/metrics` serves their sum; a killed worker is restarted; SIGTERM stops them all |
//! | `--multiproc-dir DIR` | a temporary directory | the directory the workers share (with `--workers`)  |
//!
//! Exemplars are on: a call whose request carries a W3C `traceparent` header links its
//! latency bucket to its trace id in OpenMetrics and protobuf scrapes.
//!
//! Once both listeners are up, the server prints one line to stdout, such as
//!
//! ```text
//! gRPC listening on 127.0.0.1:50051; metrics on http://127.0.0.1:50052/metrics
//! ```
//!
//! (`metrics disabled` with `--no-metrics`, `metrics unavailable: <error>` when the
//! metrics port cannot be bound: gRPC is served all the same). Logs go to stderr;
//! `RUST_LOG` filters them (default `info`). It runs until Ctrl-C or SIGTERM, then shuts
//! both listeners down gracefully (a second signal exits at once).
//!
//! Services:
//! - `grpc.examples.echo.Echo`, whose behaviour the request message chooses:
//!   - plain text: echoed (`ServerStreamingEcho` sends it back 5 times;
//!     `ClientStreamingEcho` answers with the messages joined by `,`);
//!   - `sleep:<ms>`: waits that long before answering (before each response of a stream);
//!   - `fail:<Code>`: ends with that status, in Go's spelling (`NotFound`,
//!     `DeadlineExceeded`, `Canceled`, ...) or as a number (`5`);
//! - `grpc.health.v1.Health`: `SERVING` for `grpc.examples.echo.Echo` and for `""`;
//! - `grpc.reflection.v1.ServerReflection` and `grpc.reflection.v1alpha.ServerReflection`,
//!   so `grpcurl -plaintext 127.0.0.1:50051 list` works without proto files.
//!
//! Without any gRPC tool, the pre-initialised series are there from the start:
//!
//! ```text
//! curl -s http://127.0.0.1:50052/metrics | grep grpc_server_started_total
//! ```
//!
//! and with grpcurl, some traffic:
//!
//! ```text
//! grpcurl -plaintext -d '{"message":"hi"}' 127.0.0.1:50051 grpc.examples.echo.Echo/UnaryEcho
//! grpcurl -plaintext -d '{"message":"fail:NotFound"}' 127.0.0.1:50051 grpc.examples.echo.Echo/UnaryEcho
//! ```

mod support;
#[cfg(target_os = "linux")]
#[path = "support/workers.rs"]
mod workers;

use std::{
    error::Error,
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::ExitCode,
};

use clap::Parser;
use support::Signals;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_metrics::{Naming, PrometheusExporter, ServerMetricsLayer};
use tonic_metrics_testing::{EchoServer, EchoService};
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing_subscriber::EnvFilter;

/// The echo service, gRPC health and reflection, with Prometheus metrics on the next port.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// IP address to bind (gRPC and metrics).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,

    /// gRPC port (0: an ephemeral port).
    #[arg(long, default_value_t = 50051)]
    port: u16,

    /// Port of the /metrics listener [default: the gRPC port + 1].
    #[arg(long, conflicts_with = "no_metrics")]
    metrics_port: Option<u16>,

    /// Serve gRPC without the metrics layer nor the /metrics listener (a load-test baseline).
    #[arg(long)]
    no_metrics: bool,

    /// Metric names: go (go-grpc-prometheus), otel (OpenTelemetry RPC conventions) or grpc
    /// (gRPC's own OpenTelemetry metrics, gRFC A66).
    #[arg(long, value_enum, default_value_t = NamingArg::Go, conflicts_with = "no_metrics")]
    naming: NamingArg,

    /// The same as --naming otel.
    #[arg(long, conflicts_with_all = ["no_metrics", "naming"])]
    otel: bool,

    /// Make the handling-time histograms native histograms too (served to protobuf scrapers).
    #[arg(long, conflicts_with = "no_metrics")]
    native_histograms: bool,

    /// Run N worker processes sharing the gRPC port, with one /metrics for their sum (Linux).
    #[arg(long, value_name = "N", conflicts_with = "no_metrics")]
    workers: Option<usize>,

    /// The directory the workers share [default: a fresh temporary directory].
    #[arg(long, value_name = "DIR", requires = "workers")]
    multiproc_dir: Option<std::path::PathBuf>,

    /// Internal: this process is one of the workers of `--workers`.
    #[arg(long, hide = true)]
    worker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NamingArg {
    Go,
    Otel,
    Grpc,
}

impl NamingArg {
    /// The value of `--naming` that asks for this one (the workers get the supervisor's).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn flag_value(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Otel => "otel",
            Self::Grpc => "grpc",
        }
    }
}

impl Args {
    /// The naming asked for, `--otel` included.
    fn naming_arg(&self) -> NamingArg {
        if self.otel { NamingArg::Otel } else { self.naming }
    }

    fn naming(&self) -> Naming {
        match self.naming_arg() {
            NamingArg::Otel => Naming::OpenTelemetry,
            NamingArg::Grpc => Naming::Grpc,
            NamingArg::Go => Naming::GoGrpcPrometheus,
        }
    }

    /// The exporter these flags ask for (in a worker, multi-process mode comes from the
    /// environment the supervisor set).
    fn exporter(&self, grpc_addr: SocketAddr) -> PrometheusExporter {
        let mut exporter = PrometheusExporter::for_grpc_addr(grpc_addr);
        if let Some(port) = self.metrics_port {
            exporter = exporter.with_port(port);
        }
        if self.native_histograms {
            exporter = exporter.with_native_histograms();
        }
        exporter
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Some(workers) = args.workers.filter(|_| !args.worker) {
        return supervise(&args, workers).await;
    }

    let grpc_addr = SocketAddr::new(args.host, args.port);
    // Bind gRPC first, so that a busy gRPC port fails before anything else starts. A worker
    // shares the port with its siblings.
    let incoming = if args.worker { bind_shared(grpc_addr) } else { TcpIncoming::bind(grpc_addr) }
        .map_err(|error| format!("cannot listen for gRPC on {grpc_addr}: {error}"))?
        .with_nodelay(Some(true));
    let grpc_local = incoming.local_addr()?;

    // The exporter is installed before the server layers its services, so that the
    // registered methods' zero-valued series land in its recorder. `install_or_warn()`
    // does what the `match` below does in one call; it is spelled out here to report the
    // error on stdout for scripts.
    let (metrics_layer, metrics_server, metrics_status) = if args.no_metrics {
        (None, None, "metrics disabled".to_owned())
    } else {
        let layer = metrics_layer(args.naming())?;
        let (server, status) = match args.exporter(grpc_addr).install() {
            Ok(server) if server.is_serving() => {
                let status = format!("metrics on http://{}/metrics", server.local_addr());
                (Some(server), status)
            }
            Ok(server) => {
                let status = format!("metrics served by the group on http://{}/metrics", server.local_addr());
                (Some(server), status)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics exporter not started; serving gRPC without /metrics");
                eprintln!("warning: metrics unavailable, serving gRPC without /metrics: {error}");
                (None, format!("metrics unavailable: {error}"))
            }
        };
        (Some(layer), server, status)
    };

    let (health, health_service) = support::health().await;
    let reflection_v1 = support::reflection_v1()?;
    let reflection_v1alpha = support::reflection_v1alpha()?;

    let routes = Routes::new(EchoServer::new(EchoService))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // A `fail:<Code>` answer is the service working as asked, not a server fault: log
    // failures at debug (RUST_LOG=tower_http=debug) rather than error on every one.
    let trace = TraceLayer::new_for_grpc().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG));

    let signals = Signals::listen()?;
    println!("gRPC listening on {grpc_local}; {metrics_status}");
    std::io::stdout().flush()?;
    tracing::info!(%grpc_local, "serving grpc.examples.echo.Echo, grpc.health.v1.Health and server reflection");
    let shutdown = async move {
        signals.shutdown().await;
        tracing::info!("shutting down");
        support::not_serving(&health).await;
    };

    // Two stacks rather than one with an optional layer: each keeps its own response body
    // type, so the metrics stack pays nothing the `--no-metrics` baseline does not.
    let served = match metrics_layer {
        Some(metrics) => {
            Server::builder()
                .layer(ServiceBuilder::new().layer(trace).layer(metrics))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            Server::builder().layer(trace).add_routes(routes).serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };

    if let Some(server) = metrics_server {
        server.shutdown().await;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The registry of every method served here, and the layer recording them (into the
/// global recorder that `install()` set), with exemplars from `traceparent`.
fn metrics_layer(naming: Naming) -> Result<ServerMetricsLayer, tonic_metrics::Error> {
    let registry = support::registry()?;
    Ok(ServerMetricsLayer::new().with_registry(registry).with_naming(naming).with_exemplars())
}

/// A gRPC listener the workers of `--workers` share (`SO_REUSEPORT`).
#[cfg(target_os = "linux")]
fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpIncoming> {
    let listener = tokio::net::TcpListener::from_std(workers::reuseport_listener(addr)?)?;
    Ok(TcpIncoming::from(listener))
}

#[cfg(not(target_os = "linux"))]
fn bind_shared(_: SocketAddr) -> std::io::Result<TcpIncoming> {
    Err(std::io::Error::other("--workers needs Linux (SO_REUSEPORT)"))
}

/// `--workers N`: this process supervises N workers. It joins the multi-process group
/// first, so it holds the metrics port and serves the workers' sum without a gap when one
/// dies; it records no RPC itself.
#[cfg(target_os = "linux")]
async fn supervise(args: &Args, count: usize) -> Result<(), Box<dyn Error + Send + Sync>> {
    use tonic_metrics::multiprocess::MultiProcess;

    let (dir, temporary) = workers::group_dir(args.multiproc_dir.clone())?;
    // A concrete port for everyone, reserved (not listened on) for the workers.
    let (_reserved, grpc_addr) = workers::reserve_port(SocketAddr::new(args.host, args.port))
        .map_err(|error| format!("cannot reserve the gRPC port {}: {error}", args.port))?;
    let metrics = args
        .exporter(grpc_addr)
        .with_multiprocess(MultiProcess::new(&dir))
        .install()
        .map_err(|error| format!("cannot serve /metrics for the workers: {error}"))?;
    let metrics_addr = metrics.local_addr();
    let worker_args = worker_args(args, grpc_addr.port(), metrics_addr.port());
    let signals = Signals::listen()?;
    let supervised = workers::supervise(
        count,
        worker_args,
        dir.clone(),
        signals.shutdown(),
        std::time::Duration::from_secs(10),
        |pids| {
            println!("gRPC listening on {grpc_addr} ({count} workers, pids {pids:?}); metrics on http://{metrics_addr}/metrics");
            let _ = std::io::stdout().flush();
        },
    )
    .await;
    metrics.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    supervised?;
    tracing::info!("stopped");
    Ok(())
}

/// The command line of a worker of `--workers`.
#[cfg(target_os = "linux")]
fn worker_args(args: &Args, grpc_port: u16, metrics_port: u16) -> Vec<String> {
    // Every field named: a flag added to `Args` fails to compile here until it is
    // forwarded or said not to be, rather than leaving the workers to its default silently.
    let Args {
        host,
        port: _,         // the one reserved, `grpc_port`
        metrics_port: _, // the one the supervisor bound, `metrics_port`
        no_metrics: _,   // conflicts with --workers
        naming: _,       // with --otel, in `naming_arg`
        otel: _,         // the same
        native_histograms,
        workers: _,       // a worker supervises nothing
        multiproc_dir: _, // the environment carries the directory
        worker: _,        // added below
    } = args;
    let mut worker_args = vec![
        "--worker".to_owned(),
        format!("--host={host}"),
        format!("--port={grpc_port}"),
        format!("--metrics-port={metrics_port}"),
        format!("--naming={}", args.naming_arg().flag_value()),
    ];
    if *native_histograms {
        worker_args.push("--native-histograms".to_owned());
    }
    worker_args
}

#[cfg(not(target_os = "linux"))]
async fn supervise(_: &Args, _: usize) -> Result<(), Box<dyn Error + Send + Sync>> {
    Err("--workers needs Linux (SO_REUSEPORT)".into())
}
