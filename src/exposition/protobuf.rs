//! The Prometheus protobuf format: each `io.prometheus.client.MetricFamily` encoded and
//! prefixed with its length as a varint (prost's length-delimited encoding). It is the only
//! format that carries native histograms, and Prometheus asks for it first when it scrapes
//! them.
//!
//! The decoder, built for tests only, reads the same stream back; the tests feed it
//! truncated and mutated streams too, so that it stays safe on untrusted bytes: an error on
//! anything malformed (a truncated message, a length past the end), never a panic.

use prost::Message;

use super::model::MetricFamily;

/// The `Content-Type` of this format.
pub(crate) const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Appends `families` to `out`, each length-delimited, in slice order.
pub(crate) fn write(families: &[MetricFamily], out: &mut Vec<u8>) {
    for family in families {
        // The only failure is a buffer without room, and a Vec grows.
        let _ = family.encode_length_delimited(out);
    }
}

#[cfg(test)]
/// Reads length-delimited families until `bytes` ends: the inverse of [`write()`].
pub(crate) fn decode_delimited(mut bytes: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut families = Vec::new();
    while !bytes.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut bytes)?);
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::model::{Bucket, BucketSpan, Counter, Exemplar, Histogram, LabelPair, Metric, MetricType};
    use proptest::prelude::*;

    fn sample() -> Vec<MetricFamily> {
        let exemplar = Exemplar {
            label: vec![LabelPair { name: Some("trace_id".into()), value: Some("abc".into()) }],
            value: Some(0.25),
            timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }),
        };
        vec![
            MetricFamily {
                name: Some("c_total".into()),
                help: Some("h\n\"".into()),
                r#type: Some(MetricType::Counter as i32),
                metric: vec![Metric {
                    label: vec![LabelPair { name: Some("a".into()), value: Some("é\0".into()) }],
                    counter: Some(Counter {
                        value: Some(3.0),
                        exemplar: Some(exemplar.clone()),
                        created_timestamp: None,
                    }),
                    ..Default::default()
                }],
                unit: None,
            },
            MetricFamily {
                name: Some("h_seconds".into()),
                help: None,
                r#type: Some(MetricType::Histogram as i32),
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(4),
                        sample_sum: Some(f64::NAN),
                        bucket: vec![Bucket {
                            upper_bound: Some(0.5),
                            cumulative_count: Some(1),
                            exemplar: Some(exemplar.clone()),
                            ..Default::default()
                        }],
                        schema: Some(3),
                        zero_threshold: Some(1e-128),
                        zero_count: Some(1),
                        positive_span: vec![BucketSpan { offset: Some(-2), length: Some(2) }],
                        positive_delta: vec![1, -1],
                        exemplars: vec![exemplar],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                unit: Some("seconds".into()),
            },
        ]
    }

    #[test]
    fn round_trips() {
        let families = sample();
        let mut bytes = Vec::new();
        write(&families, &mut bytes);
        let back = decode_delimited(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        // NaN is not equal to itself: compare the re-encoding.
        let mut again = Vec::new();
        write(&back, &mut again);
        assert_eq!(bytes, again);
        assert_eq!(back[0], families[0]);
        assert_eq!(back[1].metric[0].histogram.as_ref().unwrap().positive_delta, [1, -1]);
    }

    #[test]
    fn the_wire_is_a_varint_length_then_the_message() {
        let family = MetricFamily { name: Some("x".into()), ..Default::default() };
        let mut bytes = Vec::new();
        write(std::slice::from_ref(&family), &mut bytes);
        // Field 1 (name), wire type 2: tag 0x0a, length 1, "x"; the whole message is 3 bytes.
        assert_eq!(bytes, [3, 0x0a, 1, b'x']);
        assert_eq!(decode_delimited(&[]).unwrap(), []);
    }

    #[test]
    fn truncated_streams_are_errors() {
        let mut bytes = Vec::new();
        write(&sample(), &mut bytes);
        for cut in 1..bytes.len() {
            // Every cut either ends on a message boundary or fails; none panics.
            if let Ok(families) = decode_delimited(&bytes[..cut]) {
                assert!(families.len() <= 1);
            }
        }
        // A length far past the end.
        assert!(decode_delimited(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_delimited(&bytes);
        }

        #[test]
        fn mutated_streams_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = Vec::new();
            write(&sample(), &mut bytes);
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(families) = decode_delimited(&bytes) {
                // Whatever decodes can be written in every format.
                for format in [crate::exposition::Format::Text, crate::exposition::Format::OpenMetrics] {
                    let _ = crate::exposition::encode(format, &families);
                }
            }
        }
    }
}
