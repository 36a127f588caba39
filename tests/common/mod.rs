//! Helpers shared by the integration tests: a real tonic echo server on loopback, and a
//! view over `metrics-util`'s debugging recorder.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_metrics::{MethodRegistry, ServerMetricsLayer};
use tonic_metrics_testing::{EchoClient, EchoServer, EchoService};

pub const ECHO: &str = "grpc.examples.echo.Echo";

/// The echo service's registry.
pub fn echo_registry() -> MethodRegistry {
    MethodRegistry::from_file_descriptor_set(tonic_metrics_testing::FILE_DESCRIPTOR_SET).unwrap()
}

/// Labels as `(name, value)` pairs, order-insensitive.
pub type Labels = BTreeMap<String, String>;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

type Series<T> = Arc<Mutex<BTreeMap<(String, Labels), T>>>;

/// Accumulates what a `DebuggingRecorder` saw (its snapshots reset counters).
#[derive(Clone)]
pub struct Recorded {
    snapshotter: Snapshotter,
    counters: Series<u64>,
    histograms: Series<Vec<f64>>,
    descriptions: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Recorded {
    /// A fresh recorder and the view over it.
    pub fn new() -> (DebuggingRecorder, Self) {
        let recorder = DebuggingRecorder::new();
        let view = Self {
            snapshotter: recorder.snapshotter(),
            counters: Arc::default(),
            histograms: Arc::default(),
            descriptions: Arc::default(),
        };
        (recorder, view)
    }

    fn refresh(&self) {
        let mut counters = self.counters.lock().unwrap();
        let mut histograms = self.histograms.lock().unwrap();
        for (key, _unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let name = key.name().to_string();
            if let Some(description) = description {
                self.descriptions.lock().unwrap().insert(name.clone(), description.to_string());
            }
            let labels: Labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            match value {
                DebugValue::Counter(n) => *counters.entry((name, labels)).or_default() += n,
                DebugValue::Histogram(values) => {
                    histograms.entry((name, labels)).or_default().extend(values.into_iter().map(|v| v.into_inner()))
                }
                DebugValue::Gauge(_) => {}
            }
        }
    }

    /// The value of one counter series, or `None` if the series does not exist.
    pub fn counter(&self, name: &str, labels: &Labels) -> Option<u64> {
        self.refresh();
        self.counters.lock().unwrap().get(&(name.to_string(), labels.clone())).copied()
    }

    /// The sum of every series of `name`.
    pub fn counter_sum(&self, name: &str) -> u64 {
        self.refresh();
        self.counters.lock().unwrap().iter().filter(|((n, _), _)| n == name).map(|(_, v)| v).sum()
    }

    /// Every series of `name` with its value.
    pub fn series(&self, name: &str) -> Vec<(Labels, u64)> {
        self.refresh();
        self.counters
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }

    /// The values recorded into one histogram series.
    pub fn histogram(&self, name: &str, labels: &Labels) -> Option<Vec<f64>> {
        self.refresh();
        self.histograms.lock().unwrap().get(&(name.to_string(), labels.clone())).cloned()
    }

    /// Every histogram series of `name`.
    pub fn histogram_series(&self, name: &str) -> Vec<(Labels, Vec<f64>)> {
        self.refresh();
        self.histograms
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), v.clone()))
            .collect()
    }

    /// Every series of every metric seen so far (counters and histograms), as
    /// `(name, labels)`, sorted.
    pub fn all_series(&self) -> Vec<(String, Labels)> {
        self.refresh();
        let mut all: Vec<(String, Labels)> = self.counters.lock().unwrap().keys().cloned().collect();
        all.extend(self.histograms.lock().unwrap().keys().cloned());
        all.sort();
        all
    }

    /// The HELP text of a metric.
    pub fn description(&self, name: &str) -> Option<String> {
        self.refresh();
        self.descriptions.lock().unwrap().get(name).cloned()
    }

    /// Waits (up to 5 s) until `check` holds; panics with `what` otherwise.
    pub async fn eventually(&self, what: &str, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Labels of one echo method, for the server or client families.
pub fn method(kind: &str, name: &str) -> Labels {
    labels(&[("grpc_type", kind), ("grpc_service", ECHO), ("grpc_method", name)])
}

/// `method(..)` plus a `grpc_code`.
pub fn with_code(mut labels: Labels, code: &str) -> Labels {
    labels.insert("grpc_code".into(), code.into());
    labels
}

/// A real tonic echo server on 127.0.0.1, behind `layer`.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    pub async fn start(layer: ServerMetricsLayer) -> Self {
        Self::start_echo(layer, EchoServer::new(EchoService)).await
    }

    /// The same server, answering gzip-compressed requests and compressing its responses.
    pub async fn start_gzip(layer: ServerMetricsLayer) -> Self {
        use tonic::codec::CompressionEncoding::Gzip;
        Self::start_echo(layer, EchoServer::new(EchoService).accept_compressed(Gzip).send_compressed(Gzip)).await
    }

    async fn start_echo(layer: ServerMetricsLayer, echo: EchoServer<EchoService>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::builder().layer(layer).add_service(echo).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = signal.await;
            },
        ));
        Self { addr, shutdown: Some(shutdown), task }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    pub async fn client(&self) -> EchoClient<Channel> {
        EchoClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// An `EchoRequest`.
pub fn req(message: &str) -> tonic_metrics_testing::EchoRequest {
    tonic_metrics_testing::EchoRequest { message: message.into() }
}

/// Runs `promtool check metrics` on `scrape` when the `PROMTOOL` environment variable names
/// the binary (as `.ci/run` does); returns `false` when it is not set. Panics with
/// promtool's complaints unless it accepts the text without a word.
pub fn promtool_check_metrics(scrape: &str) -> bool {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let Some(promtool) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) else {
        return false;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run PROMTOOL={promtool:?}: {error}"));
    child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout: {stdout}\nstderr: {stderr}\nscrape:\n{scrape}",
        output.status
    );
    true
}
