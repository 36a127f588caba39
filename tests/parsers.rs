//! Property tests for the parsers that read untrusted bytes: the gRPC frame counter, the
//! request path splitter, the `grpc-status`, `grpc-timeout` and `traceparent` parsers. The same properties as the
//! `cargo fuzz` targets in `fuzz/`, so CI exercises them on every run; each compares the
//! parser with a naive reference implementation.

mod reference;

use proptest::prelude::*;
use tonic_metrics::{
    __fuzz::{parse_grpc_timeout, parse_traceparent, split_path},
    FrameCounter, GrpcCode,
};

/// Bytes that are mostly well-formed frames (small lengths), with arbitrary garbage mixed
/// in: pure random bytes almost always start a frame of gigabytes and test little else.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let frame = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(flag, payload)| {
        let mut out = vec![flag];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend(payload);
        out
    });
    let piece = prop_oneof![4 => frame, 1 => proptest::collection::vec(any::<u8>(), 0..8)];
    proptest::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// Paths near the interesting shapes: slashes, empty parts, odd characters, long ones.
fn path() -> impl Strategy<Value = String> {
    let segment =
        prop_oneof![Just(String::new()), "[A-Za-z0-9_.]{1,12}", "[a-z%/ \u{e9}\u{0}-\u{1f}\"]{0,6}", "[a-z]{250,260}",];
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(segment, 0..5).prop_map(|parts| parts.join("/")),
        ("[A-Za-z.]{1,8}", "[A-Za-z]{1,8}").prop_map(|(s, m)| format!("/{s}/{m}")),
    ]
}

/// `traceparent` values near the valid shape: the right field lengths with random hex
/// (upper case, zeros and bad digits mixed in), random separators, extra fields.
fn traceparent() -> impl Strategy<Value = Vec<u8>> {
    let field = |len: usize| {
        prop_oneof![
            8 => proptest::collection::vec(prop_oneof![Just(b'0'), Just(b'f'), Just(b'a'), Just(b'9')], len..=len),
            1 => proptest::collection::vec(any::<u8>(), len..=len),
            1 => proptest::collection::vec(prop_oneof![Just(b'0'), Just(b'A'), Just(b'g')], len..=len),
            1 => proptest::collection::vec(Just(b'0'), len..=len),
        ]
    };
    let sep = prop_oneof![8 => Just(b'-'), 1 => any::<u8>()];
    (
        field(2),
        sep.clone(),
        field(32),
        sep.clone(),
        field(16),
        sep.clone(),
        field(2),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(v, a, t, b, p, c, f, tail)| [v, vec![a], t, vec![b], p, vec![c], f, tail].concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frame_counter_agrees_with_a_whole_buffer_parser_under_any_chunking(
        stream in frame_stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.extend([0, stream.len()]);
        points.sort_unstable();
        let mut counter = FrameCounter::new();
        let mut lengths = Vec::new();
        // Repeated points feed empty chunks, which must change nothing.
        let total: u64 =
            points.windows(2).map(|w| counter.feed_with(&stream[w[0]..w[1]], |len| lengths.push(len))).sum();
        let (expected, mid_frame) = reference::frames(&stream);
        prop_assert_eq!(total, expected);
        prop_assert_eq!(counter.is_mid_frame(), mid_frame);
        // Each message's length, in order, as the prefix gave it.
        prop_assert_eq!((lengths, mid_frame), reference::frame_lengths(&stream));
        let mut whole = FrameCounter::new();
        prop_assert_eq!(whole.feed(&stream), expected);
        prop_assert_eq!(whole, counter);
    }

    #[test]
    fn frame_counter_never_panics_on_random_bytes(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut counter = FrameCounter::new();
        let mut lengths = Vec::new();
        let total: u64 = chunks.iter().map(|chunk| counter.feed_with(chunk, |len| lengths.push(len))).sum();
        prop_assert_eq!((total, counter.is_mid_frame()), reference::frames(&chunks.concat()));
        prop_assert_eq!((lengths, counter.is_mid_frame()), reference::frame_lengths(&chunks.concat()));
    }

    #[test]
    fn split_path_takes_exactly_the_well_formed_paths(path in path()) {
        let split = split_path(&path);
        prop_assert_eq!(split, reference::split_path(&path), "{:?}", path);
        if let Some((service, method)) = split {
            prop_assert_eq!(format!("/{service}/{method}"), path);
        }
    }

    #[test]
    fn grpc_status_reads_only_canonical_decimals(
        value in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4),
            "[0-9+\\- ]{0,3}".prop_map(String::into_bytes),
            (0i64..40).prop_map(|n| n.to_string().into_bytes()),
        ],
    ) {
        prop_assert_eq!(GrpcCode::from_header_value(&value), reference::grpc_status(&value), "{:?}", value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn traceparent_agrees_with_a_field_splitting_parser(value in prop_oneof![traceparent(), proptest::collection::vec(any::<u8>(), 0..64)]) {
        prop_assert_eq!(parse_traceparent(&value), reference::traceparent(&value), "{:?}", String::from_utf8_lossy(&value));
    }

    #[test]
    fn grpc_timeout_agrees_with_a_str_parser(
        value in prop_oneof![
            "[0-9]{0,10}[HMSmunxs ]?".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
    ) {
        prop_assert_eq!(parse_grpc_timeout(&value), reference::grpc_timeout(&value), "{:?}", String::from_utf8_lossy(&value));
    }
}

#[test]
fn every_code_round_trips_through_its_header_value() {
    for code in GrpcCode::ALL {
        assert_eq!(GrpcCode::from_header_value(code.as_i32().to_string().as_bytes()), code);
    }
}
