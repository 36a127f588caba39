//! Multi-process mode within one test process: each exporter below is a member of the
//! group as a separate process would be (its own lock, its own snapshot file), so the
//! group's rules can be checked without spawning processes. (`contrib/e2e/
//! multiprocess-e2e.sh` does it with real worker processes and `SIGKILL`.)

#![cfg(feature = "exporter")]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tonic_metrics::{
    MetricsServer, PrometheusExporter,
    exporter::MetricsRecorder,
    multiprocess::{GaugeAggregation, MultiProcess},
    names::SERVER_STARTED,
};
use tonic_metrics_testing::exposition;

const INTERVAL: Duration = Duration::from_millis(100);

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tonic-metrics-mp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn member(dir: &Path, addr: SocketAddr) -> (MetricsRecorder, MetricsServer) {
    let config = MultiProcess::new(dir)
        .with_group("svc")
        .with_publish_interval(INTERVAL)
        .with_gauge_aggregation_for("my_app_in_flight", GaugeAggregation::Max);
    PrometheusExporter::new().with_listen_addr(addr).with_multiprocess(config).build().unwrap()
}

/// Records `n` started calls of one method and `n` application jobs, and sets a gauge.
fn record(recorder: &MetricsRecorder, n: u64, gauge: f64) {
    metrics::with_local_recorder(recorder, || {
        metrics::counter!(SERVER_STARTED, "grpc_type" => "unary", "grpc_service" => "s", "grpc_method" => "m")
            .increment(n);
        metrics::counter!("my_app_jobs_total").increment(n);
        metrics::gauge!("my_app_in_flight").set(gauge);
    });
}

async fn scrape(addr: SocketAddr) -> Vec<exposition::Sample> {
    let text = exposition::scrape(addr).await.unwrap();
    exposition::parse(&text).unwrap()
}

fn value(samples: &[exposition::Sample], name: &str) -> Option<f64> {
    let found: Vec<_> = exposition::select(samples, name, &[]).collect();
    (!found.is_empty()).then(|| found.iter().map(|s| s.value).sum())
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serves_the_sum_and_another_takes_over_without_a_reset() {
    let dir = temp_dir("sum");
    let addr = free_addr();
    let (a_recorder, a) = member(&dir, addr);
    let (b_recorder, b) = member(&dir, addr);
    let (c_recorder, c) = member(&dir, addr);
    assert!(a.is_serving() && !b.is_serving() && !c.is_serving(), "the first to bind serves, the others stand by");
    record(&a_recorder, 1, 1.0);
    record(&b_recorder, 10, 5.0);
    record(&c_recorder, 100, 3.0);
    // B and C publish within an interval; A publishes at every scrape.
    eventually("the sum of the three", async || value(&scrape(addr).await, SERVER_STARTED) == Some(111.0)).await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "my_app_jobs_total"), Some(111.0), "the application's metrics add up too");
    assert_eq!(value(&samples, "my_app_in_flight"), Some(5.0), "this gauge combines by max");

    // The serving member leaves cleanly: one of the others takes the port over, and
    // what A counted stays in the sum.
    a.shutdown().await;
    eventually("a standby member took over", async || b.is_serving() || c.is_serving()).await;
    record(&b_recorder, 1000, 0.0);
    eventually("the sum after the takeover", async || {
        exposition::scrape(addr)
            .await
            .is_ok_and(|text| value(&exposition::parse(&text).unwrap(), SERVER_STARTED) == Some(1111.0))
    })
    .await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "my_app_in_flight"), Some(3.0), "gauges count live members only");
    b.shutdown().await;
    c.shutdown().await;
    drop((a_recorder, b_recorder, c_recorder));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_never_sums_an_earlier_runs_counts() {
    let dir = temp_dir("runs");
    let addr = free_addr();
    let (recorder, first) = member(&dir, addr);
    record(&recorder, 7, 0.0);
    assert_eq!(value(&scrape(addr).await, SERVER_STARTED), Some(7.0));
    first.shutdown().await;
    drop(recorder);
    // The whole group is gone; the next one to start begins a new run.
    let (recorder, second) = member(&dir, addr);
    record(&recorder, 2, 0.0);
    assert_eq!(value(&scrape(addr).await, SERVER_STARTED), Some(2.0));
    second.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_broken_files_are_left_out_and_nothing_panics() {
    let dir = temp_dir("foreign");
    let addr = free_addr();
    let (recorder, server) = member(&dir, addr);
    record(&recorder, 3, 0.0);
    let group = dir.join("svc");
    std::fs::write(group.join("1-00000000000000aa.snap"), b"TMMP\x02\0\0\0future format").unwrap();
    std::fs::write(group.join("2-00000000000000bb.snap"), b"TMMP\x01\0\0\0\xff\xff\xff garbage").unwrap();
    std::fs::write(group.join("3-00000000000000cc.snap"), b"").unwrap();
    // Over the size limit (sparse: nothing written): refused without being read.
    std::fs::File::create(group.join("4-00000000000000dd.snap")).unwrap().set_len((64 << 20) + 1).unwrap();
    for _ in 0..3 {
        assert_eq!(value(&scrape(addr).await, SERVER_STARTED), Some(3.0));
    }
    // Another service in the same directory (another group) is never mixed in.
    let other = MultiProcess::new(&dir).with_group("other");
    let (other_recorder, other_server) =
        PrometheusExporter::new().with_listen_addr(free_addr()).with_multiprocess(other).build().unwrap();
    record(&other_recorder, 50, 0.0);
    assert_eq!(value(&scrape(other_server.local_addr()).await, SERVER_STARTED), Some(50.0));
    assert_eq!(value(&scrape(addr).await, SERVER_STARTED), Some(3.0));
    server.shutdown().await;
    other_server.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unusable_directory_is_a_warning_and_the_process_serves_its_own_metrics() {
    // A "directory" under a regular file can never be created.
    let file = std::env::temp_dir().join(format!("tonic-metrics-mp-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").unwrap();
    let (recorder, server) = member(&file.join("dir"), free_addr());
    assert!(server.is_serving());
    record(&recorder, 4, 0.0);
    assert_eq!(value(&scrape(server.local_addr()).await, SERVER_STARTED), Some(4.0));
    server.shutdown().await;
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn a_member_that_fails_to_start_leaves_nothing_in_the_directory() {
    let dir = temp_dir("failed-start");
    // 192.0.2.1 (TEST-NET-1) is no interface's address here: the bind fails after the join.
    let addr = SocketAddr::from(([192, 0, 2, 1], 0));
    let config = MultiProcess::new(&dir).with_group("svc").with_publish_interval(INTERVAL);
    let error = PrometheusExporter::new().with_listen_addr(addr).with_multiprocess(config).build().unwrap_err();
    assert!(matches!(error, tonic_metrics::Error::Bind { .. }), "{error:?}");
    let mut left = Vec::new();
    for group in std::fs::read_dir(&dir).unwrap() {
        let group = group.unwrap().path();
        let files = if group.is_dir() {
            std::fs::read_dir(&group).unwrap().map(|f| f.unwrap().path()).collect()
        } else {
            vec![group]
        };
        left.extend(files.into_iter().filter(|f| {
            f.extension().is_some_and(|ext| ext == "snap" || ext == "lock" || ext == "tmp")
                && f.file_name().is_some_and(|name| name != "archive.snap")
        }));
    }
    assert!(left.is_empty(), "a member that never started left {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
