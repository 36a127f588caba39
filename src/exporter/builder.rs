//! The exporter's builder: where to listen, how to render, and starting it cleanly.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;

use super::{
    recorder::{MetricsHandle, MetricsRecorder},
    server::{Listening, MetricsServer},
    sibling::bind_error,
};
use crate::{
    Error,
    multiprocess::{Group, MultiProcess},
    names::{
        self,
        catalogue::{self, FamilyKind, Measure},
    },
    store::{NativeLayout, Store, StoreConfig, sanitize_label_name},
};

/// Where the metrics listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenAddr {
    /// The gRPC server's host, on its port + 1.
    NextTo(SocketAddr),
    Exactly(SocketAddr),
}

/// The native histogram layout `with_native_histograms` gives: schema 3 (8 buckets per
/// power of two, each bucket 9% wider than the last, so a quantile is off by at most about
/// 4.4%), a zero bucket up to 2^-20 s (about 1 µs) and buckets up to 2^12 s (about 68
/// minutes): at most 256 buckets per series.
pub const DEFAULT_NATIVE_SCHEMA: u8 = 3;
const NATIVE_MIN_EXPONENT: i32 = -20;
const NATIVE_MAX_EXPONENT: i32 = 12;

/// Builder for the `/metrics` HTTP listener and its recorder.
///
/// This crate's families are stored exactly (no histogram observation is ever lost) and
/// get real buckets, so histograms render as `_bucket` series that aggregate across
/// replicas, never as summaries: handling times and call durations take their naming
/// scheme's defaults ([`DEFAULT_BUCKETS`](crate::names::DEFAULT_BUCKETS) for
/// go-grpc-prometheus, [`OTEL_BUCKETS`](crate::names::OTEL_BUCKETS) for OpenTelemetry).
/// Whatever else the application records through `metrics` is kept by
/// `metrics-exporter-prometheus`' recorder and served alongside. Every metric of this crate
/// is described, so the text output passes `promtool check metrics`.
///
/// `/metrics` answers in the format the scraper asks for (`Accept`): the Prometheus text
/// format, OpenMetrics 1.0 (with exemplars) or protobuf (with native histograms), gzipped
/// when `Accept-Encoding` allows.
#[derive(Clone)]
pub struct PrometheusExporter {
    listen: ListenAddr,
    /// Bucket overrides by what the histograms measure.
    buckets: HashMap<Measure, Vec<f64>>,
    /// Bucket overrides by metric name.
    metric_buckets: Vec<(String, Vec<f64>)>,
    native_schema: Option<u8>,
    allowlist: Vec<String>,
    global_labels: Vec<(String, String)>,
    idle_timeout: Option<Duration>,
    upkeep_interval: Duration,
    multiprocess: Option<MultiProcess>,
}

impl fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusExporter")
            .field("listen", &self.listen)
            .field("buckets", &self.buckets)
            .field("metric_buckets", &self.metric_buckets)
            .field("native_schema", &self.native_schema)
            .field("allowlist", &self.allowlist)
            .field("global_labels", &self.global_labels)
            .field("idle_timeout", &self.idle_timeout)
            .field("multiprocess", &self.multiprocess)
            .finish()
    }
}

impl Default for PrometheusExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusExporter {
    /// An exporter listening on `0.0.0.0:9000`, as `metrics-exporter-prometheus` does;
    /// [`for_grpc_addr`](Self::for_grpc_addr) puts it next to the gRPC server instead.
    pub fn new() -> Self {
        Self {
            listen: ListenAddr::Exactly(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9000)),
            buckets: HashMap::new(),
            metric_buckets: Vec::new(),
            native_schema: None,
            allowlist: Vec::new(),
            global_labels: Vec::new(),
            idle_timeout: None,
            upkeep_interval: Duration::from_secs(5),
            multiprocess: None,
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

    /// Bucket boundaries in seconds for this crate's handling-time and call-duration
    /// histograms, whatever the naming scheme (default: the scheme's own, see the type's
    /// docs).
    pub fn with_buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets.insert(Measure::Latency, buckets.to_vec());
        self
    }

    /// OpenTelemetry's bucket advice ([`OTEL_BUCKETS`](crate::names::OTEL_BUCKETS)) for
    /// this crate's handling-time and call-duration histograms.
    pub fn with_otel_buckets(self) -> Self {
        self.with_buckets(names::OTEL_BUCKETS)
    }

    /// Bucket boundaries in seconds for the time-to-first-message histograms.
    pub fn with_first_message_buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets.insert(Measure::FirstMessage, buckets.to_vec());
        self
    }

    /// Bucket boundaries in bytes for the message-size histograms.
    pub fn with_size_buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets.insert(Measure::Size, buckets.to_vec());
        self
    }

    /// Bucket boundaries for one histogram by its name (as recorded or as exposed, e.g.
    /// `"grpc_server_handling_seconds"`, `"rpc.server.call.duration"` or
    /// `"rpc_server_call_duration_seconds"`, or your own `"my_app_job_seconds"`): the last
    /// word on that histogram. Naming one of this crate's counters is an error at `build`. Histograms of the application with no buckets render as
    /// summaries, as `metrics-exporter-prometheus` renders them.
    pub fn with_buckets_for_metric(mut self, name: impl Into<String>, buckets: &[f64]) -> Self {
        self.metric_buckets.push((name.into(), buckets.to_vec()));
        self
    }

    /// Makes this crate's latency histograms (handling time, call duration, time to first
    /// message) native histograms too, with [`DEFAULT_NATIVE_SCHEMA`]: scrapers that ask
    /// for protobuf (Prometheus with `--enable-feature=native-histograms`) get the native
    /// buckets, while text and OpenMetrics scrapers of the same endpoint still get the
    /// classic `_bucket` series of the same metric.
    ///
    /// The layout: schema 3 (each power of two split into 8 buckets, so a quantile is off
    /// by at most about 4.4%), zero threshold 2^-20 s (about 1 µs), top bucket ending at
    /// 2^12 s (about 68 minutes; longer calls count there), so at most 256 buckets per
    /// series. Memory grows by 64 bytes per power of two observed in a series (8 atomic
    /// counters), plus 768 bytes of block slots.
    pub fn with_native_histograms(self) -> Self {
        self.with_native_histogram_schema(DEFAULT_NATIVE_SCHEMA)
    }

    /// [`with_native_histograms`](Self::with_native_histograms) with another schema, `0..=8`
    /// (`2^schema` buckets per power of two; more is finer and larger).
    pub fn with_native_histogram_schema(mut self, schema: u8) -> Self {
        self.native_schema = Some(schema);
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

    /// Multi-process mode: this process is one of a group sharing `config`'s directory,
    /// and the one serving `/metrics` serves the sum over the group. See
    /// [`multiprocess`](crate::multiprocess). Without this, the
    /// [`MULTIPROC_DIR_ENV`](crate::multiprocess::MULTIPROC_DIR_ENV) environment variable,
    /// when set, turns it on with the defaults.
    pub fn with_multiprocess(mut self, config: MultiProcess) -> Self {
        self.multiprocess = Some(config);
        self
    }

    /// [`with_multiprocess`](Self::with_multiprocess) with the defaults and this directory.
    pub fn with_multiprocess_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.with_multiprocess(MultiProcess::new(dir))
    }

    /// The multi-process mode asked for, by the builder or the environment.
    fn multiprocess_config(&self) -> Option<MultiProcess> {
        self.multiprocess.clone().or_else(MultiProcess::from_env)
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

    /// The recorder this configuration asks for, unbound and uninstalled.
    ///
    /// # Errors
    /// [`Error::InvalidBuckets`], [`Error::NotAHistogram`], [`Error::InvalidNativeSchema`].
    pub fn build_recorder(&self) -> Result<MetricsRecorder, Error> {
        let check = |buckets: &Vec<f64>| {
            let ok =
                !buckets.is_empty() && buckets.iter().all(|b| b.is_finite()) && buckets.windows(2).all(|w| w[0] < w[1]);
            if ok { Ok(()) } else { Err(Error::InvalidBuckets(buckets.clone())) }
        };
        self.buckets.values().try_for_each(check)?;
        self.metric_buckets.iter().try_for_each(|(_, buckets)| check(buckets))?;
        let native = match self.native_schema {
            Some(schema) if schema > 8 => return Err(Error::InvalidNativeSchema(schema)),
            Some(schema) => {
                Some(NativeLayout { schema, min_exponent: NATIVE_MIN_EXPONENT, max_exponent: NATIVE_MAX_EXPONENT })
            }
            None => None,
        };

        // In multi-process mode a series that leaves one process' snapshot while idle would
        // take that process' share out of the group's sum: totals would go down. Series
        // are never hidden there.
        let idle_timeout = match (self.idle_timeout, self.multiprocess_config()) {
            (Some(_), Some(_)) => {
                tracing::warn!(
                    "metrics: the idle timeout is ignored in multi-process mode (it would make the group's totals go down)"
                );
                None
            }
            (timeout, None) => timeout,
            (None, Some(_)) => None,
        };
        // This crate's families: buckets by measure, then by name.
        let mut store_buckets = HashMap::new();
        for family in catalogue::FAMILIES.iter().filter(|family| family.kind == FamilyKind::Histogram) {
            if let Some(buckets) = self.buckets.get(&family.measure) {
                store_buckets.insert(family.name, Arc::from(buckets.as_slice()));
            }
        }
        let mut app = PrometheusBuilder::new();
        for (name, buckets) in &self.metric_buckets {
            let family = catalogue::family(name)
                .or_else(|| catalogue::FAMILIES.iter().find(|family| family.exposition == name.as_str()));
            match family {
                Some(family) if family.kind == FamilyKind::Histogram => {
                    store_buckets.insert(family.name, Arc::from(buckets.as_slice()));
                }
                Some(_) => return Err(Error::NotAHistogram(name.clone())),
                None => {
                    app = app
                        .set_buckets_for_metric(Matcher::Full(name.clone()), buckets)
                        .map_err(|_| Error::InvalidBuckets(buckets.clone()))?;
                }
            }
        }
        let store = Store::new(StoreConfig {
            buckets: store_buckets,
            native,
            idle_timeout,
            // metrics-exporter-prometheus makes the names valid for the application's
            // metrics as it renders; the same names on this crate's.
            global_labels: self
                .global_labels
                .iter()
                .map(|(name, value)| (sanitize_label_name(name), value.clone()))
                .collect(),
        });

        // The application's metrics, as `metrics-exporter-prometheus` keeps them.
        for (key, value) in &self.global_labels {
            app = app.add_global_label(key, value);
        }
        if let Some(timeout) = idle_timeout {
            app = app.idle_timeout(MetricKindMask::ALL, Some(timeout));
        }
        let recorder = MetricsRecorder::new(store, app.build_recorder());
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

    /// Validates everything and binds the listener (or, in multi-process mode with the
    /// port held by the group, prepares to stand by); spawns nothing.
    fn prepare(&self) -> Result<Prepared, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let addr = self.listen_addr()?;
        let allowlist = self.allowlist()?;
        let recorder = self.build_recorder()?;
        let multiprocess = self.multiprocess_config();
        // Everything that can fail about the listener happens here, before any recorder is
        // installed or task spawned.
        let bound = StdTcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .and_then(|listener| {
                let _entered = runtime.enter();
                TcpListener::from_std(listener)
            });
        // The group records where its members serve: the bound address (a real port even
        // when port 0 was asked for), or, standing by, the address waited for.
        let serves_on = bound.as_ref().ok().and_then(|listener| listener.local_addr().ok()).unwrap_or(addr);
        let group = multiprocess.as_ref().and_then(|config| match Group::join(config, recorder.handle(), serves_on) {
            Ok(group) => Some(Arc::new(group)),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "metrics: cannot join the multi-process group; this process' /metrics will show its own metrics only"
                );
                None
            }
        });
        let listening = match (bound, &group) {
            (Ok(listener), _) => Listening::Bound(listener),
            // Another process of the group serves: stand by to take over.
            (Err(error), Some(group)) if error.kind() == std::io::ErrorKind::AddrInUse => {
                match super::sibling::probe_exporter(addr) {
                    Some((program, pid)) if program == super::program_name() => {
                        tracing::info!(%addr, program, pid, "metrics: /metrics is served by another member; standing by");
                    }
                    Some((program, pid)) => tracing::warn!(
                        %addr,
                        program,
                        pid,
                        "metrics: the metrics port is held by another program's exporter, not this group's: no member \
                         of the group serves /metrics until it frees; standing by to take it over then"
                    ),
                    None => tracing::warn!(
                        %addr,
                        "metrics: the metrics port is held by a process that is not this crate's exporter: no member of \
                         the group serves /metrics until it frees; standing by to take it over then"
                    ),
                }
                Listening::Standby(addr, group.publish_interval())
            }
            (Err(source), _) => {
                leave(group);
                return Err(bind_error(addr, source));
            }
        };
        Ok(Prepared { runtime, recorder, listening, group, allowlist })
    }

    /// Starts the listener with its own recorder, without installing it globally: give the
    /// recorder to the layers with `with_recorder`, or install it yourself.
    ///
    /// # Errors
    /// [`Error::Bind`] (port busy), [`Error::PortHeldBySibling`] (busy, and by another
    /// process of this program), [`Error::PortOverflow`], [`Error::NoRuntime`],
    /// [`Error::InvalidBuckets`], [`Error::InvalidNativeSchema`],
    /// [`Error::InvalidAllowlistEntry`]. On error nothing is left running or bound. In
    /// multi-process mode a port held by another process is no error: this one stands by.
    pub fn build(self) -> Result<(MetricsRecorder, MetricsServer), Error> {
        let Prepared { runtime, recorder, listening, group, allowlist } = self.prepare()?;
        let server =
            MetricsServer::spawn(&runtime, listening, recorder.handle(), group, allowlist, self.upkeep_interval);
        Ok((recorder, server))
    }

    /// Installs the recorder globally and starts the listener.
    ///
    /// # Errors
    /// As [`build`](Self::build), plus [`Error::RecorderAlreadyInstalled`]. On error
    /// nothing is left running, bound or installed.
    pub fn install(self) -> Result<MetricsServer, Error> {
        let Prepared { runtime, recorder, listening, group, allowlist } = self.prepare()?;
        let handle: MetricsHandle = recorder.handle();
        // The listener is bound but not serving yet; on failure it is dropped here.
        if metrics::set_global_recorder(recorder).is_err() {
            leave(group);
            return Err(Error::RecorderAlreadyInstalled);
        }
        Ok(MetricsServer::spawn(&runtime, listening, handle, group, allowlist, self.upkeep_interval))
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

/// Takes a process that joined its multi-process group but then failed to start back out
/// of it, so that nothing of it is left in the directory ("on error nothing is left").
fn leave(group: Option<Arc<Group>>) {
    if let Some(group) = group.and_then(Arc::into_inner) {
        group.leave();
    }
}

/// What `prepare` readies for `build` and `install`.
struct Prepared {
    runtime: tokio::runtime::Handle,
    recorder: MetricsRecorder,
    listening: Listening,
    group: Option<Arc<Group>>,
    allowlist: Vec<IpNet>,
}
