//! The running listener: its handle, its upkeep task, multi-process publishing and
//! takeover, and shutdown.

use std::{
    net::{SocketAddr, TcpListener as StdTcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    listener::serve,
    recorder::MetricsHandle,
    render::{Renderer, Source},
};
use crate::{exposition::model::MetricFamily, multiprocess::Group};

/// How the listener starts.
pub(super) enum Listening {
    /// Bound: serve now.
    Bound(TcpListener),
    /// Held by another process of the multi-process group: retry every interval, and take
    /// over when it frees.
    Standby(SocketAddr, Duration),
}

/// The running `/metrics` listener.
///
/// Dropping it leaves the listener running for the life of the runtime; call
/// [`shutdown`](Self::shutdown) to stop it and free the port.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    handle: MetricsHandle,
    group: Option<Arc<Group>>,
    serving: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl MetricsServer {
    pub(super) fn spawn(
        runtime: &tokio::runtime::Handle,
        listening: Listening,
        handle: MetricsHandle,
        group: Option<Arc<Group>>,
        allowlist: Vec<IpNet>,
        upkeep_interval: Duration,
    ) -> Self {
        let source: Arc<dyn Source> = match &group {
            Some(group) => group.clone(),
            None => Arc::new(handle.clone()),
        };
        let renderer = Renderer::new(source);
        let mut tasks = JoinSet::new();
        let serving = Arc::new(AtomicBool::new(false));
        let local_addr = match listening {
            Listening::Bound(listener) => {
                // A bound socket always has an address; the fallback only keeps this infallible.
                let local_addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                serving.store(true, Ordering::Relaxed);
                tasks.spawn_on(serve(listener, renderer, allowlist), runtime);
                local_addr
            }
            Listening::Standby(addr, retry) => {
                let serving = serving.clone();
                tasks.spawn_on(
                    async move {
                        let listener = take_over(addr, retry).await;
                        serving.store(true, Ordering::Relaxed);
                        serve(listener, renderer, allowlist).await;
                    },
                    runtime,
                );
                addr
            }
        };
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
        if let Some(group) = group.clone() {
            let serving = serving.clone();
            tasks.spawn_on(
                async move {
                    let mut interval = tokio::time::interval(group_interval(&group));
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        interval.tick().await;
                        let group = group.clone();
                        let serving = serving.load(Ordering::Relaxed);
                        // File I/O: off the async workers.
                        let _ = tokio::task::spawn_blocking(move || {
                            group.publish_or_warn(false);
                            if serving {
                                group.compact();
                            }
                        })
                        .await;
                    }
                },
                runtime,
            );
        }
        Self { local_addr, handle, group, serving, tasks }
    }

    /// The address actually bound (with the real port when port 0 was asked for); in
    /// multi-process mode, while standing by, the address it waits for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether this process serves `/metrics` now (in multi-process mode, one process of
    /// the group does; the others stand by).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of this process' own metrics.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The recorder's handle (render in any format, upkeep).
    pub fn handle(&self) -> &MetricsHandle {
        &self.handle
    }

    /// Stops the listener, its connections and its tasks, and frees the port. In
    /// multi-process mode, publishes this process' counts one last time first, so that a
    /// clean shutdown loses nothing.
    pub async fn shutdown(mut self) {
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.shutdown().await;
        if let Some(group) = self.group.take() {
            let _ = tokio::task::spawn_blocking(move || group.publish_or_warn(true)).await;
        }
    }
}

impl Drop for MetricsServer {
    /// Leaves the listener serving for the life of the runtime, so that ignoring the
    /// handle (`let _ = exporter.install();`) still serves `/metrics`.
    fn drop(&mut self) {
        self.tasks.detach_all();
    }
}

fn group_interval(group: &Group) -> Duration {
    group.publish_interval()
}

/// Binds `addr` as soon as it is free, trying every `retry`.
async fn take_over(addr: SocketAddr, retry: Duration) -> TcpListener {
    let mut interval = tokio::time::interval(retry);
    loop {
        interval.tick().await;
        let bound = StdTcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .and_then(TcpListener::from_std);
        if let Ok(listener) = bound {
            tracing::info!(%addr, "metrics: took over /metrics for the multi-process group");
            return listener;
        }
    }
}

impl Source for MetricsHandle {
    fn collect(&self) -> Result<Vec<MetricFamily>, String> {
        Ok(self.snapshot())
    }
}

impl Source for Group {
    fn collect(&self) -> Result<Vec<MetricFamily>, String> {
        Group::collect(self)
    }
}
