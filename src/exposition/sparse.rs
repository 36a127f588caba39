//! Native histogram buckets as the protobuf format carries them: spans of consecutive
//! bucket indexes and count deltas.

use super::model::BucketSpan;

/// Spans and deltas for `(index, count)` pairs in increasing index order; zero counts are
/// left out. An empty histogram gets a no-op span (offset 0, length 0), which marks it as
/// a native histogram with no observations yet.
pub(crate) fn encode(counts: impl IntoIterator<Item = (i64, u64)>) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let (mut previous_index, mut previous_count) = (None::<i64>, 0i64);
    for (index, count) in counts.into_iter().filter(|(_, count)| *count != 0) {
        let gap = previous_index.map(|previous| index - previous - 1);
        match (gap, spans.last_mut()) {
            (Some(0), Some(span)) => span.length = Some(span.length.unwrap_or(0) + 1),
            _ => spans.push(BucketSpan {
                offset: Some(i32::try_from(gap.unwrap_or(index)).unwrap_or(i32::MAX)),
                length: Some(1),
            }),
        }
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        deltas.push(count - previous_count);
        previous_count = count;
        previous_index = Some(index);
    }
    if spans.is_empty() {
        spans.push(BucketSpan { offset: Some(0), length: Some(0) });
    }
    (spans, deltas)
}

/// Absolute counts by bucket index from spans and deltas: the first span's offset is its
/// first index, each later span's offset the gap after the previous span. Counts that
/// would be negative (a corrupt input) are read as zero.
pub(crate) fn decode(spans: &[BucketSpan], deltas: &[i64]) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    let (mut next, mut count) = (0i64, 0i64);
    let mut deltas = deltas.iter();
    for (i, span) in spans.iter().enumerate() {
        let offset = i64::from(span.offset.unwrap_or(0));
        let mut index = if i == 0 { offset } else { next.saturating_add(offset) };
        for _ in 0..span.length.unwrap_or(0) {
            let Some(delta) = deltas.next() else { return out };
            count = count.saturating_add(*delta);
            out.push((index, u64::try_from(count).unwrap_or(0)));
            index = index.saturating_add(1);
        }
        next = index;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_gaps_and_runs() {
        let counts = vec![(-20, 1), (-19, 4), (-15, 2), (3, 7)];
        let (spans, deltas) = encode(counts.clone());
        assert_eq!(spans.len(), 3);
        assert_eq!(decode(&spans, &deltas), counts);
        let (spans, deltas) = encode([(1, 0)]);
        assert_eq!(spans, [BucketSpan { offset: Some(0), length: Some(0) }]);
        assert!(decode(&spans, &deltas).is_empty());
    }

    #[test]
    fn corrupt_input_never_panics() {
        let spans = [
            BucketSpan { offset: Some(i32::MAX), length: Some(3) },
            BucketSpan { offset: Some(i32::MIN), length: Some(2) },
        ];
        let _ = decode(&spans, &[i64::MAX, i64::MAX, -5]);
        let _ = decode(&spans, &[]);
    }
}
