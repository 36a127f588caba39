//! The exporter's builder: where to listen, how to render, and starting it cleanly.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener},
    time::Duration,
};

use ipnet::IpNet;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;

use super::server::MetricsServer;
use crate::{
    Error,
    names::{self, Naming},
};

/// Where the metrics listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenAddr {
    /// The gRPC server's host, on its port + 1.
    NextTo(SocketAddr),
    Exactly(SocketAddr),
}

/// Builder for the `/metrics` HTTP listener and its Prometheus recorder.
///
/// Histograms get real buckets (Prometheus' defaults, .005 s to 10 s, for
/// `grpc_*_handling_seconds`; OpenTelemetry's advice for `rpc.*.call.duration`), so they
/// render as `_bucket` series that aggregate across replicas, never as summaries. Every metric of this crate is described, so the output passes
/// `promtool check metrics`.
#[derive(Clone)]
pub struct PrometheusExporter {
    listen: ListenAddr,
    /// `None`: each histogram gets its naming scheme's default buckets.
    buckets: Option<Vec<f64>>,
    naming: Naming,
    allowlist: Vec<String>,
    global_labels: Vec<(String, String)>,
    idle_timeout: Option<Duration>,
    upkeep_interval: Duration,
}

impl fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusExporter")
            .field("listen", &self.listen)
            .field("buckets", &self.buckets)
            .field("naming", &self.naming)
            .field("allowlist", &self.allowlist)
            .field("global_labels", &self.global_labels)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Default for PrometheusExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusExporter {
    /// An exporter listening on `0.0.0.0:9000`, like `metrics-exporter-prometheus`.
    pub fn new() -> Self {
        Self {
            listen: ListenAddr::Exactly(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9000)),
            buckets: None,
            naming: Naming::GoGrpcPrometheus,
            allowlist: Vec::new(),
            global_labels: Vec::new(),
            idle_timeout: None,
            upkeep_interval: Duration::from_secs(5),
        }
    }

    /// An exporter on the gRPC server's host and its port + 1 (port 0 stays 0: ephemeral).
    pub fn for_grpc_addr(grpc_addr: SocketAddr) -> Self {
        Self::new().with_grpc_addr(grpc_addr)
    }

    /// Listens on `grpc_addr`'s host, port + 1. Gives [`Error::PortOverflow`] at start
    /// for gRPC port 65535.
    pub fn with_grpc_addr(mut self, grpc_addr: SocketAddr) -> Self {
        self.listen = ListenAddr::NextTo(grpc_addr);
        self
    }

    /// Listens on exactly `addr` (port 0: an ephemeral port; see [`MetricsServer::local_addr`]).
    pub fn with_listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen = ListenAddr::Exactly(addr);
        self
    }

    /// Listens on `port`, keeping the host chosen so far.
    pub fn with_port(mut self, port: u16) -> Self {
        let host = match self.listen {
            ListenAddr::NextTo(addr) | ListenAddr::Exactly(addr) => addr.ip(),
        };
        self.listen = ListenAddr::Exactly(SocketAddr::new(host, port));
        self
    }

    /// Listens on `host`, keeping the port chosen so far (or the gRPC port + 1).
    pub fn with_host(mut self, host: IpAddr) -> Self {
        self.listen = match self.listen {
            ListenAddr::NextTo(addr) => ListenAddr::NextTo(SocketAddr::new(host, addr.port())),
            ListenAddr::Exactly(addr) => ListenAddr::Exactly(SocketAddr::new(host, addr.port())),
        };
        self
    }

    /// Bucket boundaries in seconds for all of this crate's histograms (default:
    /// [`DEFAULT_BUCKETS`](crate::names::DEFAULT_BUCKETS) for `grpc_*_handling_seconds`,
    /// [`OTEL_BUCKETS`](crate::names::OTEL_BUCKETS) for `rpc.*.call.duration`).
    pub fn with_buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets = Some(buckets.to_vec());
        self
    }

    /// OpenTelemetry's bucket advice ([`OTEL_BUCKETS`](crate::names::OTEL_BUCKETS)) for
    /// all of this crate's histograms.
    pub fn with_otel_buckets(self) -> Self {
        self.with_buckets(names::OTEL_BUCKETS)
    }

    /// Renders metric names as the layers' [`Naming`] scheme expects. For
    /// [`Naming::OpenTelemetry`] this turns on the exporter's unit suffixes, so
    /// `rpc.server.call.duration` (unit: seconds) renders as
    /// `rpc_server_call_duration_seconds`, as OpenTelemetry's own Prometheus translation
    /// names it. (This is `metrics-exporter-prometheus`' recommended naming: unit suffixes
    /// for every metric described with a unit, and `_total` on every counter. This crate's
    /// go-grpc-prometheus names already end in both and do not change; yours may.)
    ///
    /// ```
    /// use tonic_metrics::{Naming, PrometheusExporter, ServerMetricsLayer};
    ///
    /// let exporter = PrometheusExporter::new().with_naming(Naming::OpenTelemetry);
    /// let layer = ServerMetricsLayer::new().with_naming(Naming::OpenTelemetry);
    /// # drop((exporter, layer));
    /// ```
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// Answers scrapes only from this address or network (`"10.0.0.0/8"`, `"::1"`);
    /// others get 403. May be given several times. Default: anyone.
    pub fn with_allowed_address(mut self, address: impl Into<String>) -> Self {
        self.allowlist.push(address.into());
        self
    }

    /// Adds a label to every series (for example `region`).
    pub fn with_global_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.global_labels.push((key.into(), value.into()));
        self
    }

    /// Drops series not updated for this long (default: never), so methods that stop
    /// being called do not linger.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The address the listener will bind (before an ephemeral port is chosen).
    ///
    /// # Errors
    /// [`Error::PortOverflow`] when derived from gRPC port 65535.
    pub fn listen_addr(&self) -> Result<SocketAddr, Error> {
        match self.listen {
            ListenAddr::Exactly(addr) => Ok(addr),
            ListenAddr::NextTo(grpc) if grpc.port() == 0 => Ok(grpc),
            ListenAddr::NextTo(grpc) => grpc
                .port()
                .checked_add(1)
                .map(|port| SocketAddr::new(grpc.ip(), port))
                .ok_or(Error::PortOverflow { grpc_port: grpc.port() }),
        }
    }

    pub(crate) fn recorder(&self) -> Result<PrometheusRecorder, Error> {
        if let Some(buckets) = &self.buckets {
            let buckets_ok =
                !buckets.is_empty() && buckets.iter().all(|b| b.is_finite()) && buckets.windows(2).all(|w| w[0] < w[1]);
            if !buckets_ok {
                return Err(Error::InvalidBuckets(buckets.clone()));
            }
        }
        // Prometheus' recommended naming adds unit suffixes (and `_total`, which the
        // go-grpc-prometheus counters already carry, so their names do not change).
        let mut builder = PrometheusBuilder::new().with_recommended_naming(self.naming == Naming::OpenTelemetry);
        let histograms =
            names::catalogue::FAMILIES.iter().filter(|f| f.kind == names::catalogue::FamilyKind::Histogram);
        for family in histograms {
            let buckets = self.buckets.as_deref().unwrap_or(family.buckets);
            builder = builder
                .set_buckets_for_metric(Matcher::Full(family.name.to_owned()), buckets)
                .map_err(|_| Error::InvalidBuckets(buckets.to_vec()))?;
        }
        for (key, value) in &self.global_labels {
            builder = builder.add_global_label(key, value);
        }
        if let Some(timeout) = self.idle_timeout {
            builder = builder.idle_timeout(MetricKindMask::ALL, Some(timeout));
        }
        let recorder = builder.build_recorder();
        names::describe_all(&recorder);
        Ok(recorder)
    }

    fn allowlist(&self) -> Result<Vec<IpNet>, Error> {
        self.allowlist
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| Error::InvalidAllowlistEntry(entry.clone()))
            })
            .collect()
    }

    /// Validates everything and binds the listener; spawns nothing.
    fn prepare(&self) -> Result<(tokio::runtime::Handle, PrometheusRecorder, TcpListener, Vec<IpNet>), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let addr = self.listen_addr()?;
        let allowlist = self.allowlist()?;
        let recorder = self.recorder()?;
        // Everything that can fail about the listener happens here, before any recorder is
        // installed or task spawned.
        let listener = StdTcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .and_then(|listener| {
                let _entered = runtime.enter();
                TcpListener::from_std(listener)
            })
            .map_err(|source| Error::Bind { addr, source })?;
        Ok((runtime, recorder, listener, allowlist))
    }

    /// Starts the listener with its own recorder, without installing it globally: give the
    /// recorder to the layers with `with_recorder`, or install it yourself.
    ///
    /// # Errors
    /// [`Error::Bind`] (port busy), [`Error::PortOverflow`], [`Error::NoRuntime`],
    /// [`Error::InvalidBuckets`], [`Error::InvalidAllowlistEntry`]. On error nothing is
    /// left running or bound.
    pub fn build(self) -> Result<(PrometheusRecorder, MetricsServer), Error> {
        let (runtime, recorder, listener, allowlist) = self.prepare()?;
        let server = MetricsServer::spawn(&runtime, listener, recorder.handle(), allowlist, self.upkeep_interval);
        Ok((recorder, server))
    }

    /// Installs the recorder globally and starts the listener.
    ///
    /// # Errors
    /// As [`build`](Self::build), plus [`Error::RecorderAlreadyInstalled`]. On error
    /// nothing is left running, bound or installed.
    pub fn install(self) -> Result<MetricsServer, Error> {
        let (runtime, recorder, listener, allowlist) = self.prepare()?;
        let handle = recorder.handle();
        // The listener is bound but not serving yet; on failure it is dropped here.
        metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
        Ok(MetricsServer::spawn(&runtime, listener, handle, allowlist, self.upkeep_interval))
    }

    /// [`install`](Self::install), but a failure is logged at warn level (through
    /// `tracing`) and the caller carries on without metrics: metrics trouble never takes
    /// the gRPC service down.
    pub fn install_or_warn(self) -> Option<MetricsServer> {
        match self.install() {
            Ok(server) => Some(server),
            Err(error) => {
                tracing::warn!(%error, "metrics exporter not started; serving gRPC without /metrics");
                None
            }
        }
    }
}
