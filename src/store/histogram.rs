//! A histogram that loses no observation: classic buckets as atomics, optionally native
//! buckets and the latest exemplar of each bucket.
//!
//! `metrics-exporter-prometheus` queues observations and drains the queue on every scrape;
//! its queue (`metrics-util`'s `AtomicBucket`) can drop an observation pushed while a
//! drain swaps blocks. Here an observation is one `fetch_add` on its bucket's counter and
//! nothing is ever drained, so every observation counts, and a scrape reads the counters
//! as they are. The count is the sum of the buckets, so `_count` always equals the `+Inf`
//! bucket.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use metrics::HistogramFn;

use super::native::{NativeBuckets, NativeLayout};
use crate::{
    exemplar::{self, ExemplarLabels},
    exposition::model::{Bucket, Exemplar, Histogram, LabelPair},
};

/// The latest exemplar of one bucket.
#[derive(Debug, Clone)]
struct StoredExemplar {
    labels: ExemplarLabels,
    value: f64,
    at: SystemTime,
}

impl StoredExemplar {
    fn to_model(&self) -> Exemplar {
        let at = self.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Exemplar {
            label: self
                .labels
                .to_pairs()
                .into_iter()
                .map(|(name, value)| LabelPair { name: Some(name), value: Some(value) })
                .collect(),
            value: Some(self.value),
            timestamp: Some(prost_types::Timestamp {
                seconds: i64::try_from(at.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(at.subsec_nanos()).unwrap_or(0),
            }),
        }
    }
}

/// The storage behind one histogram series.
#[derive(Debug)]
pub(crate) struct HistogramCell {
    /// Upper bounds, increasing, without `+Inf`; shared by the family's series.
    bounds: Arc<[f64]>,
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// The sum, as `f64` bits.
    sum: AtomicU64,
    native: Option<NativeBuckets>,
    /// Whether observations take the exemplar the layer offers.
    takes_exemplars: bool,
    /// One slot per bucket, allocated with the first exemplar.
    exemplars: OnceLock<Box<[Mutex<Option<StoredExemplar>>]>>,
}

impl HistogramCell {
    pub fn new(bounds: Arc<[f64]>, native: Option<NativeLayout>, takes_exemplars: bool) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            buckets,
            sum: AtomicU64::new(0f64.to_bits()),
            native: native.map(NativeBuckets::new),
            takes_exemplars,
            exemplars: OnceLock::new(),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    fn add_to_sum(&self, value: f64) {
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn keep_exemplar(&self, bucket: usize, labels: ExemplarLabels, value: f64) {
        let slots = self.exemplars.get_or_init(|| (0..self.buckets.len()).map(|_| Mutex::new(None)).collect());
        if let Some(slot) = slots.get(bucket) {
            let mut slot = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Timestamped under the lock: the exemplar stored last is the latest, so a
            // scraper never sees a bucket's exemplar go back in time (Prometheus rejects
            // out-of-order exemplars).
            *slot = Some(StoredExemplar { labels, value, at: SystemTime::now() });
        }
    }

    /// The series as the exposition model's histogram: cumulative classic buckets with their
    /// exemplars, and the native buckets when on.
    pub fn snapshot(&self) -> Histogram {
        let mut histogram = Histogram::default();
        // Native counters are read first: each observation bumps its classic bucket before
        // its native one (Release), so every native count read here (Acquire) is already in
        // the classic counts read after. Observations still in flight between the two reads
        // are left for the next scrape (the classic counts are capped at the native total),
        // so that `sample_count` equals the native buckets' total, as Prometheus requires
        // of a native histogram, and the classic `+Inf` bucket equals `sample_count`.
        let native_total = self.native.as_ref().map(|native| native.snapshot_into(&mut histogram));
        let exemplars = self.exemplars.get();
        let exemplar_of = |i: usize| {
            exemplars
                .and_then(|slots| slots.get(i))
                .and_then(|slot| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
        };
        let mut cumulative = 0;
        let mut native_exemplars = Vec::new();
        for (i, counter) in self.buckets.iter().enumerate() {
            cumulative += counter.load(Ordering::Acquire);
            let cumulative = native_total.map_or(cumulative, |total| cumulative.min(total));
            let exemplar = exemplar_of(i).map(|stored| stored.to_model());
            if self.native.is_some()
                && let Some(exemplar) = &exemplar
            {
                native_exemplars.push(exemplar.clone());
            }
            let upper_bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            histogram.bucket.push(Bucket {
                cumulative_count: Some(cumulative),
                upper_bound: Some(upper_bound),
                exemplar,
                ..Bucket::default()
            });
        }
        histogram.sample_count = Some(native_total.map_or(cumulative, |total| cumulative.min(total)));
        histogram.sample_sum = Some(f64::from_bits(self.sum.load(Ordering::Relaxed)));
        histogram.exemplars = native_exemplars;
        histogram
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        // NaN has no native bucket (the snapshot would then cap it out of the count, for
        // good) and would make the sum NaN for good; the layers never record one.
        if value.is_nan() {
            return;
        }
        // `le` is inclusive: the first bound >= value; values above every bound land in
        // `+Inf`.
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Release);
        self.add_to_sum(value);
        if let Some(native) = &self.native {
            native.record(value);
        }
        if self.takes_exemplars
            && let Some(labels) = exemplar::take_offered()
        {
            self.keep_exemplar(bucket, labels, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let cell = HistogramCell::new(Arc::from([0.1, 1.0]), None, false);
        for value in [0.05, 0.1, 0.5, 1.0, 7.0] {
            cell.record(value);
        }
        let h = cell.snapshot();
        let counts: Vec<_> = h.bucket.iter().map(|b| (b.upper_bound.unwrap(), b.cumulative_count.unwrap())).collect();
        assert_eq!(counts, [(0.1, 2), (1.0, 4), (f64::INFINITY, 5)]);
        assert_eq!(h.sample_count, Some(5));
        assert!((h.sample_sum.unwrap() - 8.65).abs() < 1e-9);
    }

    #[test]
    fn exemplars_are_kept_per_bucket_only_when_offered() {
        let cell = HistogramCell::new(Arc::from([0.1, 1.0]), None, true);
        cell.record(0.05);
        let id = ExemplarLabels::from_trace_id([7; 16]).unwrap();
        exemplar::offer(&id, || cell.record(0.5));
        let h = cell.snapshot();
        assert!(h.bucket[0].exemplar.is_none());
        let exemplar = h.bucket[1].exemplar.as_ref().unwrap();
        assert_eq!(exemplar.value, Some(0.5));
        assert_eq!(exemplar.label[0].value.as_deref(), Some("07070707070707070707070707070707"));
        assert!(h.exemplars.is_empty(), "native exemplars only for native histograms");
    }

    /// What Prometheus checks of a native histogram (`count == zero + buckets`), and what
    /// OpenMetrics checks of a classic one (`+Inf == count`), hold in every snapshot taken
    /// while observations pour in, and counts never go back.
    #[test]
    fn snapshots_during_recording_are_consistent() {
        let layout = NativeLayout { schema: 3, min_exponent: -20, max_exponent: 12 };
        let cell = Arc::new(HistogramCell::new(Arc::from([0.001, 0.01]), Some(layout), false));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let cell = cell.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u32 {
                        cell.record(f64::from(i % 7 + t) * 0.003);
                    }
                })
            })
            .collect();
        let mut last = 0;
        let mut snapshots = 0;
        while threads.iter().any(|t| !t.is_finished()) || snapshots == 0 {
            let h = cell.snapshot();
            let native: u64 = crate::exposition::sparse::decode(&h.positive_span, &h.positive_delta)
                .iter()
                .map(|(_, count)| count)
                .sum::<u64>()
                + h.zero_count.unwrap();
            let count = h.sample_count.unwrap();
            assert_eq!(count, native, "count against native buckets");
            assert_eq!(h.bucket.last().unwrap().cumulative_count, Some(count), "+Inf against count");
            assert!(count >= last);
            last = count;
            snapshots += 1;
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(cell.snapshot().sample_count, Some(100_000));
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let cell = Arc::new(HistogramCell::new(Arc::from([0.001, 0.01]), None, false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cell = cell.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        cell.record(f64::from(i % 3 + t) * 0.004);
                    }
                })
            })
            .collect();
        // Snapshots while recording never see a count above what was recorded, and never
        // a count going down.
        let mut last = 0;
        while threads.iter().any(|t| !t.is_finished()) {
            let count = cell.snapshot().sample_count.unwrap();
            assert!(count >= last && count <= 40_000);
            last = count;
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(cell.count(), 40_000);
    }
}
