//! The exporter under stress: concurrent scrapes over HTTP while two threads record through
//! the server layer at full speed. Every scrape must succeed and parse, no counter may go
//! backwards between one scraper's consecutive scrapes, and afterwards every histogram's
//! `_count` equals `handled_total` exactly. Also: a metrics port taken at
//! start leaves gRPC serving.

#![cfg(feature = "exporter")]

mod common;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{SocketAddr, TcpListener as StdTcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tonic_metrics::{PrometheusExporter, RequestBody, ServerMetricsLayer, names::*};
use tonic_metrics_testing::exposition::{self, Sample};
use tower::{Layer, Service, ServiceExt};

const SCRAPERS: usize = 4;
const SCRAPES: usize = 25;

/// A finished unary call in-process: one message in, one out, `grpc-status: 0`.
fn unary_request(path: &'static str) -> Request<Full<Bytes>> {
    Request::builder().uri(path).body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi"))).unwrap()
}

/// Series identity for monotonicity checks: name plus sorted labels.
fn series_key(sample: &Sample) -> String {
    format!("{}{:?}", sample.name, sample.labels)
}

/// Whether a series is cumulative (must never decrease): counters, and the `_count`,
/// `_bucket` and `_sum` of histograms (every observation is a non-negative duration).
fn is_cumulative(name: &str) -> bool {
    name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_bucket") || name.ends_with("_sum")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_during_full_speed_recording_parse_and_never_go_backwards() {
    let (recorder, metrics) =
        PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let addr = metrics.local_addr();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let service = layer.layer(tower::service_fn(|request: Request<RequestBody<Full<Bytes>>>| async move {
        let _ = request.into_body().collect().await;
        let mut response = Response::new(Full::new(Bytes::from_static(b"\0\0\0\0\x02ok")));
        // Trailers-only success keeps the in-process call short: the head settles it.
        response.headers_mut().insert("grpc-status", HeaderValue::from_static("0"));
        Ok::<_, Infallible>(response)
    }));

    // Two recording threads, each with a runtime of its own, at full speed until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let recorders: Vec<_> = [format!("/{ECHO}/UnaryEcho"), format!("/{ECHO}/NoSuchMethod")]
        .into_iter()
        .map(|path| {
            let path: &'static str = Box::leak(path.into_boxed_str());
            let (mut service, stop, calls) = (service.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let response = service.ready().await.unwrap().call(unary_request(path)).await.unwrap();
                        let _ = response.into_body().collect().await;
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
        })
        .collect();

    // Upkeep (histogram draining and idle timeouts in a plain metrics-exporter-prometheus
    // recorder) runs throughout too, not only every 5 s.
    let upkeep = {
        let (handle, stop) = (metrics.handle().clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                handle.run_upkeep();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let mut scrapers = tokio::task::JoinSet::new();
    for scraper in 0..SCRAPERS {
        scrapers.spawn(async move {
            let mut previous: BTreeMap<String, f64> = BTreeMap::new();
            let mut increased = 0;
            for scrape in 0..SCRAPES {
                let text = tokio::time::timeout(Duration::from_secs(10), exposition::scrape(addr))
                    .await
                    .unwrap_or_else(|_| panic!("scraper {scraper}: scrape {scrape} timed out"))
                    .unwrap_or_else(|error| panic!("scraper {scraper}: scrape {scrape} failed: {error}"));
                let samples =
                    exposition::parse(&text).unwrap_or_else(|error| panic!("scrape {scrape} does not parse: {error}"));
                assert!(samples.iter().any(|s| s.name == SERVER_STARTED), "scrape {scrape}:\n{text}");
                for sample in samples.iter().filter(|s| is_cumulative(&s.name)) {
                    let key = series_key(sample);
                    if let Some(&before) = previous.get(&key) {
                        assert!(
                            sample.value >= before,
                            "scraper {scraper}, scrape {scrape}: {key} went from {before} to {}",
                            sample.value
                        );
                        increased += u64::from(sample.value > before);
                    }
                    previous.insert(key, sample.value);
                }
            }
            increased
        });
    }
    let mut increased = 0;
    while let Some(joined) = scrapers.join_next().await {
        increased += joined.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for thread in recorders {
        thread.join().unwrap();
    }
    upkeep.join().unwrap();
    assert!(increased > 0, "the scrapes never saw the counters move");

    // Once recording stops, the exposition holds exactly what was recorded.
    let total = calls.load(Ordering::Relaxed) as f64;
    let samples = exposition::parse(&exposition::scrape(addr).await.unwrap()).unwrap();
    assert_eq!(exposition::sum(&samples, SERVER_STARTED, &[]), total);
    assert_eq!(exposition::sum(&samples, SERVER_HANDLED, &[("grpc_code", "OK")]), total);
    assert_eq!(exposition::sum(&samples, SERVER_HANDLED, &[]), total);
    // And every histogram holds exactly one observation per handled RPC: no scrape or
    // upkeep running meanwhile lost one (metrics-exporter-prometheus' own histogram store
    // could, under concurrent scrapes: this crate keeps its histograms itself).
    let observed = exposition::sum(&samples, &format!("{SERVER_HANDLING_SECONDS}_count"), &[]);
    let in_inf = exposition::sum(&samples, &format!("{SERVER_HANDLING_SECONDS}_bucket"), &[("le", "+Inf")]);
    assert_eq!(observed, total, "{observed} observations for {total} RPCs");
    assert_eq!(in_inf, total, "+Inf bucket {in_inf} for {total} RPCs");
    eprintln!("{total} RPCs recorded by 2 threads during {} concurrent scrapes; _count = handled", SCRAPERS * SCRAPES);
    metrics.shutdown().await;
}

#[tokio::test]
async fn a_metrics_port_taken_at_start_leaves_grpc_serving() {
    let taken = StdTcpListener::bind("127.0.0.1:0").unwrap();
    let port: SocketAddr = taken.local_addr().unwrap();
    // `install_or_warn` logs the bind error and returns None: no recorder, no listener.
    assert!(PrometheusExporter::new().with_listen_addr(port).install_or_warn().is_none());
    // The server layer records into the (absent) global recorder: a no-op, not an error.
    let server = TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry())).await;
    let mut client = server.client().await;
    for i in 0..3 {
        let message = format!("still serving {i}");
        assert_eq!(client.unary_echo(req(&message)).await.unwrap().into_inner().message, message);
    }
    // And the port is still the original owner's (the first connection it sees is the
    // probe the exporter made to name the holder in its warning).
    let connection = std::net::TcpStream::connect(port).unwrap();
    let peers: Vec<_> = (0..2).map(|_| taken.accept().unwrap().1).collect();
    assert!(peers.contains(&connection.local_addr().unwrap()), "{peers:?}");
    server.stop().await;
}
