//! The recorder the exporter installs, and the handle that reads it.
//!
//! Two stores sit behind one `metrics::Recorder`: this crate's families go to
//! [`Store`](crate::store::Store) (exact histograms with native buckets and exemplars,
//! series that survive idle timeouts), everything else the application records goes to
//! `metrics-exporter-prometheus`' recorder, unchanged. A scrape reads both into one
//! snapshot of the exposition model and writes it in the format the scraper asked for.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use crate::{
    exposition::{self, Format, model::MetricFamily},
    names::catalogue,
    store::Store,
};

/// Units the application gave in `describe_*`, by metric name as exposed, for
/// OpenMetrics' `# UNIT`.
type Units = Arc<RwLock<HashMap<String, &'static str>>>;

/// The `metrics` recorder of [`PrometheusExporter`](super::PrometheusExporter): install it
/// globally (what `install()` does) or give it to the layers with `with_recorder`.
pub struct MetricsRecorder {
    app: PrometheusRecorder,
    handle: MetricsHandle,
}

impl fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRecorder").finish_non_exhaustive()
    }
}

impl MetricsRecorder {
    pub(crate) fn new(store: Store, app: PrometheusRecorder) -> Self {
        let handle = MetricsHandle { store: Arc::new(store), app: app.handle(), units: Units::default() };
        Self { app, handle }
    }

    /// A handle that renders what this recorder holds, in any format.
    pub fn handle(&self) -> MetricsHandle {
        self.handle.clone()
    }

    fn remember_unit(&self, name: &KeyName, unit: Option<Unit>) {
        // `count` is no unit in OpenMetrics' sense (a counter's samples are counts). This
        // crate's families carry their units in the catalogue.
        if let Some(unit) = unit.filter(|unit| *unit != Unit::Count)
            && catalogue::family(name.as_str()).is_none()
        {
            let mut units = self.handle.units.write().unwrap_or_else(PoisonError::into_inner);
            units.insert(sanitized(name.as_str()), unit.as_str());
        }
    }
}

impl Recorder for MetricsRecorder {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.remember_unit(&name, unit);
        self.app.describe_counter(name, unit, description);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.remember_unit(&name, unit);
        self.app.describe_gauge(name, unit, description);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.remember_unit(&name, unit);
        self.app.describe_histogram(name, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if let Some(counter) = self.handle.store.counter(key) {
            return counter;
        }
        self.app.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.app.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if let Some(histogram) = self.handle.store.histogram(key) {
            return histogram;
        }
        self.app.register_histogram(key, metadata)
    }
}

/// Reads a [`MetricsRecorder`]: renders `/metrics` in any format, runs upkeep. Cheap to
/// clone.
#[derive(Clone)]
pub struct MetricsHandle {
    store: Arc<Store>,
    app: PrometheusHandle,
    units: Units,
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// The Prometheus text format (0.0.4), as a scrape without `Accept` gets it.
    pub fn render(&self) -> String {
        String::from_utf8(self.render_as(Format::Text)).unwrap_or_default()
    }

    /// `/metrics` in `format`, uncompressed.
    pub fn render_as(&self, format: Format) -> Vec<u8> {
        exposition::encode(format, &self.snapshot())
    }

    /// Everything the recorder holds, sorted by family name, as the exposition model:
    /// this crate's families and the application's (read back from
    /// `metrics-exporter-prometheus`' text, which it renders exactly). Every format is
    /// written from this.
    pub fn snapshot(&self) -> Vec<MetricFamily> {
        let mut families = self.store.snapshot();
        let mut app = exposition::parse::parse(&self.app.render());
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        for family in &mut app {
            // OpenMetrics wants a unit only where the name ends with it.
            let name = family.name.as_deref().unwrap_or_default();
            family.unit = units
                .get(name)
                .filter(|unit| name.strip_suffix(**unit).is_some_and(|stem| stem.ends_with('_')))
                .map(|unit| (*unit).to_owned());
        }
        // The store's families come sorted; only the application's need it. Names never
        // clash (this crate's names go to the store), so ordering the families is enough.
        exposition::sort(&mut app);
        families.extend(app);
        families.sort_by(exposition::family_order);
        families
    }

    /// Drains histograms of the application into its recorder's storage and applies idle
    /// timeouts. The exporter runs this every few seconds.
    pub fn run_upkeep(&self) {
        self.app.run_upkeep();
        self.store.run_upkeep(Instant::now());
    }
}

/// A metric name as `metrics-exporter-prometheus` exposes it: a first character outside
/// `[a-zA-Z_:]` and later ones outside `[a-zA-Z0-9_:]` become `_`.
fn sanitized(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let valid = c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
            if valid { c } else { '_' }
        })
        .collect()
}
