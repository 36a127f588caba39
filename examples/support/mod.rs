//! Pieces the examples share: the services the example server exposes, their method
//! registry, and shutdown on Ctrl-C / SIGTERM.

use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthReporter};
use tonic_metrics::MethodRegistry;
use tonic_metrics_testing::{EchoServer, EchoService};
use tonic_reflection::pb::{v1, v1alpha};

/// Every method the example server serves: echo, health, reflection v1 and v1alpha.
pub fn registry() -> Result<MethodRegistry, tonic_metrics::Error> {
    MethodRegistry::from_file_descriptor_set(tonic_metrics_testing::FILE_DESCRIPTOR_SET)?
        .with_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?
        .with_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)?
        .with_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The health service, `SERVING` for the echo service and for `""`.
pub async fn health() -> (HealthReporter, HealthServer<impl tonic_health::pb::health_server::Health>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<EchoServer<EchoService>>().await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    (reporter, service)
}

/// Marks everything `NOT_SERVING`, for a graceful shutdown.
pub async fn not_serving(reporter: &HealthReporter) {
    reporter.set_not_serving::<EchoServer<EchoService>>().await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_metrics_testing::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Server reflection v1 (grpcurl) and v1alpha (Python's grpcio-reflection).
pub fn reflection_v1() -> Result<
    v1::server_reflection_server::ServerReflectionServer<impl v1::server_reflection_server::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection().build_v1()
}

/// Server reflection v1alpha.
pub fn reflection_v1alpha() -> Result<
    v1alpha::server_reflection_server::ServerReflectionServer<impl v1alpha::server_reflection_server::ServerReflection>,
    tonic_reflection::server::Error,
> {
    reflection().build_v1alpha()
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from creation on: a signal sent as soon as
/// the ready line is printed is already a graceful shutdown.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    #[cfg(unix)]
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }

    /// Resolves on the first signal; a second one exits at once, in case a client keeps a
    /// stream open through the graceful shutdown.
    pub async fn shutdown(mut self) {
        self.next().await;
        tokio::spawn(async move {
            self.next().await;
            eprintln!("second signal: exiting without waiting for open streams");
            std::process::exit(130);
        });
    }
}
