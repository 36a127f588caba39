//! Storage of this crate's own metric families, behind the `metrics` facade.
//!
//! The layers record through `metrics` like any code does; the exporter's recorder sends
//! the families of [`names::catalogue`](crate::names::catalogue) here and everything else to
//! `metrics-exporter-prometheus`. What this storage adds over that recorder's:
//!
//! - histograms that lose no observation (see [`histogram`]), with native buckets and
//!   exemplars;
//! - series that survive the idle timeout: a layer resolves its handles once and keeps
//!   them, so a series that goes idle is hidden from scrapes, not dropped, and comes back
//!   with its running totals when it is updated again. Series that were never updated (the
//!   zero series a registry creates) are never hidden.

mod counter;
mod histogram;
mod native;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use metrics::{Counter, CounterFn, Histogram, HistogramFn, Key};

pub(crate) use self::native::NativeLayout;
use self::{counter::CounterCell, histogram::HistogramCell};
use crate::{
    exposition::model::{self, LabelPair, MetricFamily, MetricType},
    names::catalogue::{self, FamilyInfo, FamilyKind, Measure},
};

/// How the store keeps and shows its families.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreConfig {
    /// Bucket bounds by facade name, overriding the catalogue's defaults.
    pub buckets: HashMap<&'static str, Arc<[f64]>>,
    /// Native buckets for latency and time-to-first-message histograms.
    pub native: Option<NativeLayout>,
    /// Hide series not updated for this long.
    pub idle_timeout: Option<Duration>,
    /// Labels added to every series (before the series' own, which win on a clash).
    pub global_labels: Vec<(String, String)>,
}

/// Whether a series shows in scrapes.
#[derive(Debug)]
struct Idle {
    last_value: u64,
    /// `None` until the series is first updated: never-updated series always show.
    last_change: Option<Instant>,
}

#[derive(Debug)]
enum Cell {
    Counter(CounterCell),
    // Boxed: counters, most of the series, stay small.
    Histogram(Box<HistogramCell>),
}

impl Cell {
    /// A number that grows with every update, for idle tracking.
    fn progress(&self) -> u64 {
        match self {
            Self::Counter(cell) => cell.get(),
            Self::Histogram(cell) => cell.count(),
        }
    }
}

/// One series: its storage and idle state, in one allocation (the handle the layer keeps
/// is an `Arc` of it). Its labels are read from its key when a scrape asks.
#[derive(Debug)]
struct Series {
    cell: Cell,
    idle: Mutex<Idle>,
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        if let Cell::Counter(cell) = &self.cell {
            cell.increment(value);
        }
    }

    fn absolute(&self, value: u64) {
        if let Cell::Counter(cell) = &self.cell {
            cell.absolute(value);
        }
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        if let Cell::Histogram(cell) = &self.cell {
            cell.record(value);
        }
    }
}

impl Series {
    /// Whether the series shows now, updating its idle state.
    fn visible(&self, now: Instant, timeout: Option<Duration>) -> bool {
        // Without an idle timeout every series shows: no need to track anything.
        if timeout.is_none() {
            return true;
        }
        let progress = self.cell.progress();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if progress != idle.last_value {
            idle.last_value = progress;
            idle.last_change = Some(now);
            return true;
        }
        match (timeout, idle.last_change) {
            (Some(timeout), Some(changed)) => now.duration_since(changed) < timeout,
            _ => true,
        }
    }

    fn to_model(&self, label: Vec<LabelPair>) -> model::Metric {
        let mut metric = model::Metric { label, ..model::Metric::default() };
        match &self.cell {
            #[allow(clippy::cast_precision_loss)]
            Cell::Counter(cell) => {
                metric.counter = Some(model::Counter { value: Some(cell.get() as f64), ..model::Counter::default() });
            }
            Cell::Histogram(cell) => metric.histogram = Some(cell.snapshot()),
        }
        metric
    }
}

#[derive(Debug)]
struct FamilyStore {
    info: &'static FamilyInfo,
    bounds: Arc<[f64]>,
    native: Option<NativeLayout>,
    /// Ordered by key (labels), so that a scrape reads them in order without sorting.
    series: BTreeMap<Key, Arc<Series>>,
}

/// This crate's families, by the name the layers record under.
#[derive(Debug, Default)]
pub(crate) struct Store {
    config: StoreConfig,
    families: RwLock<HashMap<&'static str, FamilyStore>>,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Self { config, families: RwLock::default() }
    }

    /// The counter of `key`, if its family is one of this crate's counters.
    pub fn counter(&self, key: &Key) -> Option<Counter> {
        Some(Counter::from_arc(self.series(key, FamilyKind::Counter)?))
    }

    /// The histogram of `key`, if its family is one of this crate's histograms.
    pub fn histogram(&self, key: &Key) -> Option<Histogram> {
        Some(Histogram::from_arc(self.series(key, FamilyKind::Histogram)?))
    }

    fn series(&self, key: &Key, kind: FamilyKind) -> Option<Arc<Series>> {
        let info = catalogue::family(key.name()).filter(|family| family.kind == kind)?;
        if let Some(series) = self.read().get(info.name).and_then(|family| family.series.get(key)) {
            return Some(series.clone());
        }
        let mut families = self.families.write().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(info.name).or_insert_with(|| self.new_family(info));
        let series = family.series.entry(key.clone()).or_insert_with(|| {
            let cell = match kind {
                FamilyKind::Counter => Cell::Counter(CounterCell::default()),
                FamilyKind::Histogram => {
                    let takes_exemplars = matches!(info.measure, Measure::Latency);
                    Cell::Histogram(Box::new(HistogramCell::new(family.bounds.clone(), family.native, takes_exemplars)))
                }
            };
            Arc::new(Series { cell, idle: Mutex::new(Idle { last_value: 0, last_change: None }) })
        });
        Some(series.clone())
    }

    fn new_family(&self, info: &'static FamilyInfo) -> FamilyStore {
        let bounds = self.config.buckets.get(info.name).cloned().unwrap_or_else(|| Arc::from(info.buckets));
        let native = match info.measure {
            Measure::Latency | Measure::FirstMessage => self.config.native,
            Measure::Count | Measure::Size => None,
        };
        FamilyStore { info, bounds, native, series: BTreeMap::new() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<&'static str, FamilyStore>> {
        self.families.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates which series are idle (the exporter runs it at every upkeep, and every
    /// snapshot does it too).
    pub fn run_upkeep(&self, now: Instant) {
        for family in self.read().values() {
            for series in family.series.values() {
                series.visible(now, self.config.idle_timeout);
            }
        }
    }

    /// Every family with at least one series showing, by exposed name, each with its
    /// series in label order.
    ///
    /// Families are read in the reverse of the order a call updates them (it counts
    /// `started`, then its messages, then `handled`, then observes the histograms), so that
    /// a snapshot taken while calls run never shows more observations than `handled`, nor
    /// more `handled` than `started`. A live process' next snapshot would catch up anyway;
    /// a process killed right after this one (multi-process mode) keeps it for good.
    pub fn snapshot(&self) -> Vec<MetricFamily> {
        let now = Instant::now();
        let mut out = Vec::new();
        let families = self.read();
        let mut in_read_order: Vec<&FamilyStore> = families.values().collect();
        in_read_order.sort_by_key(|family| read_rank(family.info));
        for family in in_read_order {
            let series: Vec<(&Key, &Arc<Series>)> =
                family.series.iter().filter(|(_, series)| series.visible(now, self.config.idle_timeout)).collect();
            if series.is_empty() {
                continue;
            }
            let info = family.info;
            out.push(MetricFamily {
                name: Some(info.exposition.to_owned()),
                help: Some(info.help.to_owned()),
                r#type: Some(match info.kind {
                    FamilyKind::Counter => MetricType::Counter,
                    FamilyKind::Histogram => MetricType::Histogram,
                } as i32),
                metric: series
                    .into_iter()
                    .map(|(key, series)| series.to_model(merge_labels(&self.config.global_labels, key)))
                    .collect(),
                unit: info.unit.map(|unit| unit.as_str().to_owned()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// When a snapshot reads a family: histograms (observed last by a call) first, then
/// `handled`, then the message counters, then `started` (counted first).
fn read_rank(info: &FamilyInfo) -> u8 {
    match info.kind {
        FamilyKind::Histogram => 0,
        FamilyKind::Counter if info.name.contains("handled") => 1,
        FamilyKind::Counter if info.name.contains("started") => 3,
        FamilyKind::Counter => 2,
    }
}

/// Global labels first, then the key's, as `metrics-exporter-prometheus` orders them (a
/// key label with a global label's name replaces its value in place). Label names are made
/// valid for Prometheus (`rpc.method` becomes `rpc_method`).
fn merge_labels(global: &[(String, String)], key: &Key) -> Vec<LabelPair> {
    let mut labels: Vec<(String, String)> = global.to_vec();
    for label in key.labels() {
        let name = sanitize_label_name(label.key());
        match labels.iter_mut().find(|(existing, _)| *existing == name) {
            Some(existing) => existing.1 = label.value().to_owned(),
            None => labels.push((name, label.value().to_owned())),
        }
    }
    labels.into_iter().map(|(name, value)| LabelPair { name: Some(name), value: Some(value) }).collect()
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: anything else becomes `_`, as OpenTelemetry's Prometheus
/// exporter and `metrics-exporter-prometheus` translate names.
pub(crate) fn sanitize_label_name(name: &str) -> String {
    let valid = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        return name.to_owned();
    }
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use metrics::Label;

    use super::*;
    use crate::names::{OTEL_SERVER_CALL_DURATION, SERVER_HANDLED};

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, *v)).collect::<Vec<_>>())
    }

    #[test]
    fn only_this_crates_families_are_stored() {
        let store = Store::default();
        assert!(store.counter(&key("my_app_requests_total", &[])).is_none());
        assert!(store.histogram(&key(SERVER_HANDLED, &[])).is_none(), "a counter family is no histogram");
        assert!(store.counter(&key(SERVER_HANDLED, &[("grpc_code", "OK")])).is_some());
    }

    #[test]
    fn handles_of_one_key_share_one_series() {
        let store = Store::default();
        let k = key(SERVER_HANDLED, &[("grpc_code", "OK")]);
        store.counter(&k).unwrap().increment(2);
        store.counter(&k).unwrap().increment(3);
        let families = store.snapshot();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].metric[0].counter.as_ref().unwrap().value, Some(5.0));
    }

    #[test]
    fn labels_are_sanitized_and_global_labels_come_first() {
        let config = StoreConfig {
            global_labels: vec![("region".into(), "eu".into()), ("rpc_method".into(), "x".into())],
            ..StoreConfig::default()
        };
        let store = Store::new(config);
        store.histogram(&key(OTEL_SERVER_CALL_DURATION, &[("rpc.method", "a.B/C")])).unwrap().record(0.2);
        let families = store.snapshot();
        assert_eq!(families[0].name.as_deref(), Some("rpc_server_call_duration_seconds"));
        assert_eq!(families[0].unit.as_deref(), Some("seconds"));
        let labels: Vec<_> =
            families[0].metric[0].label.iter().map(|l| (l.name.clone().unwrap(), l.value.clone().unwrap())).collect();
        assert_eq!(labels, [("region".into(), "eu".into()), ("rpc_method".into(), "a.B/C".into())]);
    }

    #[test]
    fn idle_series_hide_and_come_back_with_their_totals() {
        let timeout = Some(Duration::from_secs(2));
        let store = Store::new(StoreConfig { idle_timeout: timeout, ..StoreConfig::default() });
        let used = store.counter(&key(SERVER_HANDLED, &[("grpc_code", "OK")])).unwrap();
        let _zero = store.counter(&key(SERVER_HANDLED, &[("grpc_code", "Internal")])).unwrap();
        used.increment(1);
        let start = Instant::now();
        store.run_upkeep(start);
        // Seen by an upkeep 3 s later: the used series is idle, the zero series never updated.
        let later = start + Duration::from_secs(3);
        let shown = |now: Instant| -> Vec<(String, bool)> {
            let families = store.read();
            let mut shown: Vec<_> = families
                .values()
                .flat_map(|f| f.series.iter())
                .map(|(key, s)| (key.labels().next().unwrap().value().to_owned(), s.visible(now, timeout)))
                .collect();
            shown.sort();
            shown
        };
        assert_eq!(shown(later), [("Internal".to_owned(), true), ("OK".to_owned(), false)]);
        used.increment(1);
        assert_eq!(shown(later), [("Internal".to_owned(), true), ("OK".to_owned(), true)]);
        let families = store.snapshot();
        let ok = families[0].metric.iter().find(|m| m.label[0].value.as_deref() == Some("OK")).unwrap();
        assert_eq!(ok.counter.as_ref().unwrap().value, Some(2.0), "the running total, not a restart from zero");
    }
}
