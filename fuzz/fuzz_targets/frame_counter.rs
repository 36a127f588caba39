//! The frame counter over arbitrary bytes cut into arbitrary chunks: it never panics, the
//! count and the lengths reported do not depend on the chunking, and they agree with a
//! naive parser that sees the whole stream at once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tonic_metrics::FrameCounter;

#[path = "../../tests/reference/mod.rs"]
mod reference;

#[derive(Debug, Arbitrary)]
struct Input {
    stream: Vec<u8>,
    /// Chunk lengths, cycled; 0 feeds an empty chunk (which must change nothing).
    cuts: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut counter = FrameCounter::new();
    let mut rest = input.stream.as_slice();
    let mut total = 0;
    let mut lengths = Vec::new();
    let mut step = 0;
    while !rest.is_empty() {
        // All-zero cuts would never finish: past a bound, the rest goes in one chunk.
        let take = if input.cuts.is_empty() || step > input.stream.len() + input.cuts.len() {
            rest.len()
        } else {
            usize::from(input.cuts[step % input.cuts.len()]).min(rest.len())
        };
        step += 1;
        total += counter.feed_with(&rest[..take], |len| lengths.push(len));
        rest = &rest[take..];
    }
    let (expected, mid_frame) = reference::frames(&input.stream);
    assert_eq!(total, expected);
    assert_eq!(counter.is_mid_frame(), mid_frame);
    assert_eq!((lengths, mid_frame), reference::frame_lengths(&input.stream));
    let mut whole = FrameCounter::new();
    assert_eq!(whole.feed(&input.stream), expected);
    assert_eq!(whole, counter, "the state after the stream does not depend on the chunking");
});
