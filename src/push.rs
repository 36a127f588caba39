//! Pushing to a Prometheus Pushgateway, for batch jobs that live too briefly to be scraped
//! (feature `push-gateway`).
//!
//! ```no_run
//! use std::time::Duration;
//! use tonic_metrics::{PrometheusExporter, push::PushGateway};
//!
//! # #[tokio::main] async fn main() -> Result<(), tonic_metrics::Error> {
//! let gateway = PushGateway::new("http://pushgateway:9091/metrics/job/nightly_import")
//!     .with_interval(Duration::from_secs(15));
//! let pusher = PrometheusExporter::new().install_push_gateway(gateway)?;
//!
//! // ... the batch job makes its gRPC calls through a ClientMetricsLayer ...
//!
//! // One last push, so that a job shorter than the interval is not lost.
//! pusher.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The push is a plain HTTP/1.1 `PUT` (or `POST`, see [`PushGateway::with_post`]) of the
//! text exposition, as the Pushgateway's API describes. Only `http://` endpoints are
//! supported: this keeps TLS libraries out of the build (a Pushgateway usually sits inside
//! the cluster; put a TLS-terminating proxy in front of one that does not).

use std::{fmt, time::Duration};

use crate::exporter::{MetricsHandle, MetricsRecorder};
use crate::exposition::Format;
use base64::{Engine as _, prelude::BASE64_STANDARD};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};

use crate::{Error, PrometheusExporter};

/// How long one push may take, connection included.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how often to push.
#[derive(Clone)]
pub struct PushGateway {
    endpoint: String,
    interval: Duration,
    credentials: Option<(String, Option<String>)>,
    post: bool,
}

impl fmt::Debug for PushGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushGateway")
            .field("endpoint", &self.endpoint)
            .field("interval", &self.interval)
            .field("credentials", &self.credentials.as_ref().map(|(user, _)| (user, "..")))
            .field("post", &self.post)
            .finish()
    }
}

impl PushGateway {
    /// Pushes to `endpoint`, the grouping URL of the job:
    /// `http://HOST:9091/metrics/job/JOB[/LABEL/VALUE...]`. Checked at install.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), interval: Duration::from_secs(10), credentials: None, post: false }
    }

    /// Pushes this often (default: every 10 s). Intervals under 100 ms are raised to 100 ms.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Sends HTTP basic authentication (over plain HTTP: keep the gateway on a trusted
    /// network).
    pub fn with_basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), Some(password.into())));
        self
    }

    /// Pushes with `POST`, which replaces only the metrics pushed (the default `PUT`
    /// replaces the whole group).
    pub fn with_post(mut self) -> Self {
        self.post = true;
        self
    }

    fn target(&self) -> Result<Target, Error> {
        let invalid = |reason: &str| Error::InvalidPushGatewayEndpoint {
            endpoint: self.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = self.endpoint.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported (no TLS in this build)")),
            _ => return Err(invalid("the URL must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
        if authority.as_str().contains('@') {
            // Credentials in the URL would go out in the Host header, in clear text.
            return Err(invalid("credentials in the URL are not supported; use PushGateway::with_basic_auth"));
        }
        let grouping = uri.path().strip_prefix("/metrics/job/").unwrap_or("");
        let segments: Vec<&str> = grouping.split('/').collect();
        // The job, then label/value pairs, none of them empty.
        if segments.iter().any(|segment| segment.is_empty()) || segments.len().is_multiple_of(2) {
            return Err(invalid("the path must be /metrics/job/<job>[/<label>/<value>...]"));
        }
        let host_header = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        };
        let authorization = self
            .credentials
            .as_ref()
            .map(|(user, password)| {
                let encoded = BASE64_STANDARD.encode(format!("{user}:{}", password.as_deref().unwrap_or("")));
                let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                    .map_err(|_| invalid("credentials are not a valid header"))?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(Target {
            endpoint: self.endpoint.clone(),
            uri,
            host: authority.host().trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::try_from(host_header).map_err(|_| invalid("bad host"))?,
            authorization,
            method: if self.post { Method::POST } else { Method::PUT },
        })
    }
}

/// A validated endpoint.
#[derive(Clone)]
struct Target {
    endpoint: String,
    uri: Uri,
    host: String,
    port: u16,
    authority: HeaderValue,
    authorization: Option<HeaderValue>,
    method: Method,
}

impl Target {
    async fn push(&self, handle: &MetricsHandle) -> Result<(), Error> {
        let failed = |reason: String| Error::Push { endpoint: self.endpoint.clone(), reason };
        // Rendering is CPU-heavy (the whole snapshot, written out): keep it off the async
        // workers, as the exporter does for scrapes.
        let renderer = handle.clone();
        let body = tokio::task::spawn_blocking(move || renderer.render_as(Format::Text))
            .await
            .map_err(|error| failed(format!("rendering the metrics: {error}")))?;
        let body = Bytes::from(body);
        let exchange = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| failed(format!("cannot connect: {error}")))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| failed(format!("HTTP handshake: {error}")))?;
            let connection = tokio::spawn(connection);
            let mut request = Request::new(Full::new(body));
            *request.method_mut() = self.method.clone();
            *request.uri_mut() = self.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
            let headers = request.headers_mut();
            headers.insert(header::HOST, self.authority.clone());
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(Format::Text.content_type()));
            if let Some(authorization) = &self.authorization {
                headers.insert(header::AUTHORIZATION, authorization.clone());
            }
            let response = sender.send_request(request).await.map_err(|error| failed(format!("request: {error}")));
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    connection.abort();
                    return Err(error);
                }
            };
            let status = response.status();
            if status.is_success() {
                connection.abort();
                return Ok(());
            }
            // The gateway says why it refused (a 400 names the inconsistent metric): keep the
            // start of its answer.
            let body = http_body_util::Limited::new(response.into_body(), 1024);
            let explanation = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
                Err(_) => String::new(),
            };
            connection.abort();
            Err(failed(if explanation.is_empty() {
                format!("the gateway answered {status}")
            } else {
                format!("the gateway answered {status}: {explanation}")
            }))
        };
        tokio::time::timeout(PUSH_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(failed(format!("no answer within {PUSH_TIMEOUT:?}"))))
    }
}

impl PrometheusExporter {
    /// Builds the recorder (not installed globally) and starts pushing to `gateway`; no
    /// listener is bound. Give the recorder to the layers with `with_recorder`.
    ///
    /// # Errors
    /// [`Error::InvalidPushGatewayEndpoint`], [`Error::NoRuntime`],
    /// [`Error::InvalidBuckets`]. Nothing is started on error. A failed push is not an
    /// error here: it is logged at warn level and retried at the next interval.
    pub fn build_push_gateway(self, gateway: PushGateway) -> Result<(MetricsRecorder, MetricsPusher), Error> {
        let (runtime, target, recorder) = self.prepare_push(&gateway)?;
        let pusher = MetricsPusher::spawn(&runtime, target, recorder.handle(), gateway.interval);
        Ok((recorder, pusher))
    }

    /// Installs the recorder globally and starts pushing to `gateway`; no listener is bound.
    ///
    /// # Errors
    /// As [`build_push_gateway`](Self::build_push_gateway), plus
    /// [`Error::RecorderAlreadyInstalled`]. Nothing is started or installed on error.
    pub fn install_push_gateway(self, gateway: PushGateway) -> Result<MetricsPusher, Error> {
        let (runtime, target, recorder) = self.prepare_push(&gateway)?;
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
        Ok(MetricsPusher::spawn(&runtime, target, handle, gateway.interval))
    }

    fn prepare_push(&self, gateway: &PushGateway) -> Result<(tokio::runtime::Handle, Target, MetricsRecorder), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let target = gateway.target()?;
        Ok((runtime, target, self.build_recorder()?))
    }
}

/// Pushes the recorder's metrics to a Pushgateway at a fixed interval.
///
/// Dropping it keeps pushing for the life of the runtime, as dropping a
/// [`MetricsServer`](crate::MetricsServer) keeps serving; call
/// [`shutdown`](Self::shutdown) at the end of the job for a final push.
pub struct MetricsPusher {
    target: Target,
    handle: MetricsHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MetricsPusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsPusher").field("endpoint", &self.target.endpoint).finish_non_exhaustive()
    }
}

impl MetricsPusher {
    fn spawn(runtime: &tokio::runtime::Handle, target: Target, handle: MetricsHandle, interval: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let (loop_target, loop_handle) = (target.clone(), handle.clone());
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A dropped `MetricsPusher` closes the channel without a stop: keep pushing.
            let mut stoppable = true;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    result = &mut stopped, if stoppable => {
                        if result.is_ok() {
                            return;
                        }
                        stoppable = false;
                        continue;
                    }
                }
                loop_handle.run_upkeep();
                if let Err(error) = loop_target.push(&loop_handle).await {
                    tracing::warn!(%error, "metrics push failed; retrying at the next interval");
                }
            }
        });
        Self { target, handle, stop: Some(stop), task: Some(task) }
    }

    /// Pushes now, outside the schedule.
    ///
    /// # Errors
    /// [`Error::Push`] when the gateway cannot be reached or does not answer 2xx.
    pub async fn push(&self) -> Result<(), Error> {
        self.target.push(&self.handle).await
    }

    /// The exposition text the next push would send.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The recorder's handle (render, upkeep).
    pub fn handle(&self) -> &MetricsHandle {
        &self.handle
    }

    /// Stops the schedule and pushes one last time, so the job's final counts arrive.
    ///
    /// # Errors
    /// [`Error::Push`] when that last push fails.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A push in progress finishes (bounded by its timeout) before the last one.
            let _ = task.await;
        }
        self.push().await
    }
}
