//! Native (sparse, exponential) histogram buckets, as Prometheus' native histograms define
//! them: with schema `s`, each power of two is split into `2^s` buckets, bucket `k` holding
//! the values in `(2^((k-1)/2^s), 2^(k/2^s)]`.
//!
//! The buckets live in a dense array of atomics over a fixed range of powers of two, one
//! lazily allocated block per power of two: recording is lock-free and exact, memory
//! grows only with the octaves actually observed, and the bucket count is bounded by
//! construction. Values at or below the zero threshold count in the zero bucket; values
//! above the top of the range count in the highest bucket.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use crate::exposition::{model::Histogram, sparse};

/// How native buckets are laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NativeLayout {
    /// `0..=8`: `2^schema` buckets per power of two.
    pub schema: u8,
    /// The zero threshold is `2^min_exponent`; buckets start just above it.
    pub min_exponent: i32,
    /// The highest bucket ends at `2^max_exponent`.
    pub max_exponent: i32,
}

impl NativeLayout {
    /// The zero bucket's breadth.
    pub fn zero_threshold(&self) -> f64 {
        2f64.powi(self.min_exponent)
    }

    /// Buckets per power of two.
    fn per_octave(&self) -> i64 {
        1 << self.schema
    }

    /// Octaves (powers of two) in the range.
    fn octaves(&self) -> usize {
        usize::try_from(self.max_exponent - self.min_exponent).unwrap_or(0)
    }

    /// The bucket index (`k`) of a value above the zero threshold.
    #[cfg(test)]
    fn index(&self, value: f64) -> i64 {
        self.index_within(value, octave_bounds(self.schema))
    }

    /// [`Self::index`], given this schema's `octave_bounds` (looked up once per series).
    fn index_within(&self, value: f64, bounds: &[f64]) -> i64 {
        // value = frac * 2^exp with frac in [0.5, 1), as C's frexp; the range keeps `value`
        // a normal float, so the bit fields give frac and exp directly.
        let bits = value.to_bits();
        let exp = i64::try_from((bits >> 52) & 0x7ff).unwrap_or(0) - 1022;
        let frac = f64::from_bits((bits & ((1 << 52) - 1)) | (1022 << 52));
        // The first bound >= frac among 2^(i/2^s - 1), i in 0..2^s: bucket (exp-1)*2^s + i.
        let i = bounds.partition_point(|bound| *bound < frac);
        let per_octave = self.per_octave();
        #[allow(clippy::cast_possible_wrap)]
        let low = i as i64;
        low + (exp - 1) * per_octave
    }

    /// The lowest bucket index above the zero threshold.
    fn first_index(&self) -> i64 {
        i64::from(self.min_exponent) * self.per_octave() + 1
    }
}

/// The bucket bounds within one octave, `2^(i/2^schema - 1)` for `i` in `0..2^schema`, for
/// every schema `0..=8`, computed once.
fn octave_bounds(schema: u8) -> &'static [f64] {
    static BOUNDS: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let all = BOUNDS.get_or_init(|| {
        (0..=8u32)
            .map(|schema| {
                let per_octave = 1u32 << schema;
                (0..per_octave).map(|i| (f64::from(i) / f64::from(per_octave) - 1.0).exp2()).collect()
            })
            .collect()
    });
    all.get(usize::from(schema)).map_or(&[0.5], Vec::as_slice)
}

/// The native buckets of one histogram series.
#[derive(Debug)]
pub(crate) struct NativeBuckets {
    layout: NativeLayout,
    // Derived from `layout` once, not per observation.
    zero_threshold: f64,
    top: f64,
    first_index: i64,
    bounds: &'static [f64],
    zero: AtomicU64,
    /// One block of `2^schema` counters per octave, allocated on its first observation.
    octaves: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl NativeBuckets {
    pub fn new(layout: NativeLayout) -> Self {
        Self {
            layout,
            zero_threshold: layout.zero_threshold(),
            top: 2f64.powi(layout.max_exponent),
            first_index: layout.first_index(),
            bounds: octave_bounds(layout.schema),
            zero: AtomicU64::new(0),
            octaves: (0..layout.octaves()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one observation. NaN is not counted here (it has no bucket).
    pub fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        if value <= self.zero_threshold {
            // Release pairs with the snapshot's Acquire loads: see `HistogramCell::snapshot`.
            self.zero.fetch_add(1, Ordering::Release);
            return;
        }
        let offset = self.layout.index_within(value.min(self.top), self.bounds) - self.first_index;
        let per_octave = self.layout.per_octave();
        // In range by construction: `first_index <= index <= last index`.
        let (Ok(octave), Ok(slot)) = (usize::try_from(offset / per_octave), usize::try_from(offset % per_octave))
        else {
            return;
        };
        let Some(block) = self.octaves.get(octave) else {
            return;
        };
        let block = block.get_or_init(|| (0..per_octave).map(|_| AtomicU64::new(0)).collect());
        block[slot].fetch_add(1, Ordering::Release);
    }

    /// Writes the native fields of `histogram`: schema, zero bucket, positive spans and
    /// deltas. Returns the number of observations counted in them.
    pub fn snapshot_into(&self, histogram: &mut Histogram) -> u64 {
        let zero = self.zero.load(Ordering::Acquire);
        let mut total = zero;
        let per_octave = self.layout.per_octave();
        let mut counts = Vec::new();
        for (octave, block) in self.octaves.iter().enumerate() {
            let Some(block) = block.get() else { continue };
            for (slot, counter) in block.iter().enumerate() {
                let count = counter.load(Ordering::Acquire);
                total += count;
                #[allow(clippy::cast_possible_wrap)]
                counts.push((self.first_index + octave as i64 * per_octave + slot as i64, count));
            }
        }
        let (spans, deltas) = sparse::encode(counts);
        histogram.schema = Some(i32::from(self.layout.schema));
        histogram.zero_threshold = Some(self.zero_threshold);
        histogram.zero_count = Some(zero);
        histogram.positive_span = spans;
        histogram.positive_delta = deltas;
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::model::BucketSpan;

    const LAYOUT: NativeLayout = NativeLayout { schema: 3, min_exponent: -20, max_exponent: 12 };

    /// The bucket of `value` by the definition: the `k` with 2^((k-1)/2^s) < value <= 2^(k/2^s).
    fn reference_index(value: f64, schema: u8) -> i64 {
        let scale = f64::from(1u32 << schema);
        #[allow(clippy::cast_possible_truncation)]
        let mut k = (value.log2() * scale).ceil() as i64;
        // log2 rounding near a boundary: settle on the definition.
        #[allow(clippy::cast_precision_loss)]
        let upper = |k: i64| ((k as f64) / scale).exp2();
        while value > upper(k) {
            k += 1;
        }
        while value <= upper(k - 1) {
            k -= 1;
        }
        k
    }

    #[test]
    fn indexes_follow_the_definition() {
        for schema in 0..=8 {
            let layout = NativeLayout { schema, ..LAYOUT };
            for value in [1e-6, 0.001, 0.0123, 0.1, 0.099_999, 0.5, 1.0, 1.5, 2.0, 3.0, 100.0, 4095.0] {
                assert_eq!(layout.index(value), reference_index(value, schema), "schema {schema} value {value}");
            }
            // Exact powers of two are upper bounds of their bucket.
            assert_eq!(layout.index(1.0), 0);
            assert_eq!(layout.index(2.0), 1 << schema);
        }
    }

    #[test]
    fn snapshot_encodes_spans_and_deltas() {
        let buckets = NativeBuckets::new(LAYOUT);
        for value in [0.1, 0.1, 0.1, 0.11, 0.5, 0.0, 1e-9, 5000.0] {
            buckets.record(value);
        }
        let mut histogram = Histogram::default();
        assert_eq!(buckets.snapshot_into(&mut histogram), 8);
        assert_eq!(histogram.schema, Some(3));
        assert_eq!(histogram.zero_count, Some(2));
        let decoded = sparse::decode(&histogram.positive_span, &histogram.positive_delta);
        let top = LAYOUT.index(4096.0);
        let mut expected = vec![(LAYOUT.index(0.1), 3), (LAYOUT.index(0.11), 1), (LAYOUT.index(0.5), 1), (top, 1)];
        expected.sort();
        // 0.1 and 0.11 fall in neighbouring buckets at schema 3.
        assert_eq!(decoded, expected);
    }

    #[test]
    fn an_empty_series_has_a_no_op_span() {
        let mut histogram = Histogram::default();
        assert_eq!(NativeBuckets::new(LAYOUT).snapshot_into(&mut histogram), 0);
        assert_eq!(histogram.positive_span, [BucketSpan { offset: Some(0), length: Some(0) }]);
        assert!(histogram.zero_threshold.unwrap() > 0.0);
    }
}
