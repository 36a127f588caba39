//! `with_idle_timeout`: series not updated for the timeout leave `/metrics` and come back,
//! with their running totals, when updated again, for the layer's series (whose handles
//! the layer keeps) as for the application's. A registry's zero series, never updated,
//! stay.

#![cfg(feature = "exporter")]

mod common;

use std::time::Duration;

use common::{ECHO, TestServer, echo_registry, req};
use tonic_metrics::{PrometheusExporter, ServerMetricsLayer, names::*};
use tonic_metrics_testing::exposition::{self, Sample};

const TIMEOUT: Duration = Duration::from_millis(500);

fn samples(text: &str) -> Vec<Sample> {
    exposition::parse(text).unwrap_or_else(|error| panic!("{error}:\n{text}"))
}

fn unary(code: &str, registered: bool) -> Vec<(&'static str, String)> {
    let kind = if registered { "unary" } else { "unknown" };
    vec![
        ("grpc_type", kind.into()),
        ("grpc_service", ECHO.into()),
        ("grpc_method", "UnaryEcho".into()),
        ("grpc_code", code.into()),
    ]
}

fn find(samples: &[Sample], name: &str, labels: &[(&'static str, String)]) -> Option<f64> {
    let selector: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let found: Vec<&Sample> = exposition::select(samples, name, &selector).collect();
    (!found.is_empty()).then(|| found.iter().map(|s| s.value).sum())
}

async fn idle_and_back(registered: bool) {
    let exporter =
        PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse().unwrap()).with_idle_timeout(TIMEOUT);
    let (recorder, metrics) = exporter.build().unwrap();
    let recorder = std::sync::Arc::new(recorder);
    let layer = ServerMetricsLayer::new().with_shared_recorder(recorder.clone());
    let layer = if registered { layer.with_registry(echo_registry()) } else { layer };
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    // What `counter!("my_app_jobs_total").increment(1)` does: register, then increment.
    let app_counter = || {
        metrics::Recorder::register_counter(
            recorder.as_ref(),
            &metrics::Key::from_name("my_app_jobs_total"),
            &metrics::Metadata::new(module_path!(), metrics::Level::INFO, None),
        )
    };

    client.unary_echo(req("hi")).await.unwrap();
    app_counter().increment(1);
    let before = samples(&metrics.render());
    assert_eq!(find(&before, SERVER_HANDLED, &unary("OK", registered)), Some(1.0));
    assert_eq!(find(&before, "my_app_jobs_total", &[]), Some(1.0));

    tokio::time::sleep(TIMEOUT * 2).await;
    metrics.handle().run_upkeep();
    let idle = samples(&metrics.render());
    assert_eq!(find(&idle, SERVER_HANDLED, &unary("OK", registered)), None, "an idle series leaves /metrics");
    assert_eq!(find(&idle, "my_app_jobs_total", &[]), None);
    if registered {
        // The zero series of the registry were never updated: they stay, at zero.
        assert_eq!(find(&idle, SERVER_HANDLED, &unary("Internal", true)), Some(0.0));
    }

    for _ in 0..3 {
        client.unary_echo(req("hi")).await.unwrap();
    }
    app_counter().increment(1);
    let back = samples(&metrics.render());
    // The running totals: 1 before the idle spell + 3 after. A counter that came back at 3
    // would read as a reset to `rate()`.
    assert_eq!(find(&back, SERVER_HANDLED, &unary("OK", registered)), Some(4.0), "{back:#?}");
    let method = &unary("OK", registered)[..3];
    assert_eq!(find(&back, SERVER_STARTED, method), Some(4.0));
    assert_eq!(find(&back, &format!("{SERVER_HANDLING_SECONDS}_count"), method), Some(4.0));
    // The application's counter is metrics-exporter-prometheus': it comes back when the
    // `counter!` macro registers it again, restarting from zero (that recorder drops idle
    // series).
    assert_eq!(find(&back, "my_app_jobs_total", &[]), Some(1.0));
    server.stop().await;
    metrics.shutdown().await;
}

#[tokio::test]
async fn idle_series_of_registered_methods_come_back_with_their_totals() {
    idle_and_back(true).await;
}

#[tokio::test]
async fn idle_series_of_methods_seen_without_a_registry_come_back_with_their_totals() {
    idle_and_back(false).await;
}
