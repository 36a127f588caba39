//! The running listener: its handle, its upkeep task, and shutdown.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinSet};

use super::listener::serve;

/// The running `/metrics` listener.
///
/// Dropping it leaves the listener running for the life of the runtime; call
/// [`shutdown`](Self::shutdown) to stop it and free the port.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    handle: PrometheusHandle,
    tasks: JoinSet<()>,
}

impl MetricsServer {
    pub(super) fn spawn(
        runtime: &tokio::runtime::Handle,
        listener: TcpListener,
        handle: PrometheusHandle,
        allowlist: Vec<IpNet>,
        upkeep_interval: Duration,
    ) -> Self {
        // A bound socket always has an address; the fallback only keeps this infallible.
        let local_addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut tasks = JoinSet::new();
        tasks.spawn_on(serve(listener, handle.clone(), allowlist), runtime);
        let upkeep = handle.clone();
        tasks.spawn_on(
            async move {
                let mut interval = tokio::time::interval(upkeep_interval);
                loop {
                    interval.tick().await;
                    upkeep.run_upkeep();
                }
            },
            runtime,
        );
        Self { local_addr, handle, tasks }
    }

    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The exposition text a scrape would get now.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The recorder's handle (render, upkeep).
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Stops the listener, its connections and its upkeep task, and frees the port.
    pub async fn shutdown(mut self) {
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.shutdown().await;
    }
}

impl Drop for MetricsServer {
    /// Leaves the listener serving for the life of the runtime, so that ignoring the
    /// handle (`let _ = exporter.install();`) still serves `/metrics`.
    fn drop(&mut self) {
        self.tasks.detach_all();
    }
}
