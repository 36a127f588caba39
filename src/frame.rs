//! Counting gRPC messages from the length-prefixed framing, without decoding them.

/// Counts complete gRPC messages in a byte stream that arrives in arbitrary chunks, and
/// reports the length of each.
///
/// A gRPC message on the wire is 1 compressed-flag byte, a 4-byte big-endian length, then
/// that many bytes. The counter keeps only the position inside the current frame, so it
/// never buffers or copies: frames split across chunks, several frames in one chunk,
/// zero-length and compressed messages all count once, when their last byte arrives. A
/// torn final frame is never counted, and a bogus length (even 4 GiB) only makes the
/// counter wait for bytes that will not come.
///
/// A message's length is its prefix's length field: the bytes of the message as sent,
/// without the 5-byte prefix. For a compressed message (flag set) that is the compressed
/// size, as gRPC's own metrics count it.
///
/// ```
/// use tonic_metrics::FrameCounter;
///
/// let mut counter = FrameCounter::new();
/// let mut lengths = Vec::new();
/// // "hello" in one frame, and the first 3 bytes of a 2-byte frame's neighbour.
/// assert_eq!(counter.feed_with(b"\0\0\0\0\x05hello\0\0\0", |len| lengths.push(len)), 1);
/// assert_eq!(counter.feed_with(b"\0\x02hi", |len| lengths.push(len)), 1);
/// assert_eq!(lengths, [5, 2]);
/// assert!(!counter.is_mid_frame());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounter {
    /// Bytes of the 5-byte prefix seen so far (`0..=4`) while reading a prefix.
    prefix_seen: u8,
    /// The current frame's length: the length bytes gathered so far while reading a
    /// prefix, the whole length once it is complete (kept until the next prefix starts).
    length: u32,
    /// Payload bytes still to come; only meaningful once the prefix is complete.
    remaining: u32,
    in_payload: bool,
}

const PREFIX_LEN: u8 = 5;

impl FrameCounter {
    /// A counter at the start of a stream.
    pub const fn new() -> Self {
        Self { prefix_seen: 0, length: 0, remaining: 0, in_payload: false }
    }

    /// Feeds the next chunk of the stream and returns how many messages it completed.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        self.feed_with(chunk, |_| {})
    }

    /// Feeds the next chunk of the stream, calls `on_message` with the length of each
    /// message it completes (in stream order), and returns how many it completed.
    ///
    /// The length is the prefix's length field (see the type's docs); nothing is
    /// allocated or copied.
    #[inline]
    pub fn feed_with(&mut self, mut chunk: &[u8], mut on_message: impl FnMut(u32)) -> u64 {
        let mut completed = 0;
        while !chunk.is_empty() {
            if self.in_payload {
                let take = chunk.len().min(self.remaining as usize);
                // `take` fits in u32: it is at most `remaining`.
                self.remaining -= take as u32;
                chunk = &chunk[take..];
                if self.remaining == 0 {
                    self.in_payload = false;
                    completed += 1;
                    on_message(self.length);
                }
                continue;
            }
            // A whole prefix inside this chunk (the usual case) is read at once rather than
            // byte by byte: it cuts the counting cost per message by more than half.
            if self.prefix_seen == 0
                && let Some((prefix, rest)) = chunk.split_first_chunk::<{ PREFIX_LEN as usize }>()
            {
                chunk = rest;
                let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                self.length = length;
                if length == 0 {
                    completed += 1;
                    on_message(0);
                } else {
                    self.remaining = length;
                    self.in_payload = true;
                }
                continue;
            }
            let byte = chunk[0];
            chunk = &chunk[1..];
            // Byte 0 is the compressed flag; it does not change the framing.
            if self.prefix_seen == 0 {
                self.length = 0;
            } else {
                self.length = (self.length << 8) | u32::from(byte);
            }
            self.prefix_seen += 1;
            if self.prefix_seen == PREFIX_LEN {
                self.prefix_seen = 0;
                if self.length == 0 {
                    completed += 1;
                    on_message(0);
                } else {
                    self.remaining = self.length;
                    self.in_payload = true;
                }
            }
        }
        completed
    }

    /// Whether the stream so far ends inside a frame (a torn frame if the stream ends now).
    pub const fn is_mid_frame(&self) -> bool {
        self.in_payload || self.prefix_seen > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(compressed)];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_whole_frames_in_one_chunk() {
        let mut bytes = frame(false, b"hello");
        bytes.extend(frame(true, b"zipped"));
        bytes.extend(frame(false, b""));
        let mut counter = FrameCounter::new();
        let mut lengths = Vec::new();
        assert_eq!(counter.feed_with(&bytes, |len| lengths.push(len)), 3);
        assert_eq!(lengths, [5, 6, 0], "the compressed message counts its length as sent");
        assert!(!counter.is_mid_frame());
    }

    #[test]
    fn torn_final_frame_is_not_counted() {
        let mut bytes = frame(false, b"hello");
        bytes.extend(&frame(false, b"world")[..7]);
        let mut counter = FrameCounter::new();
        assert_eq!(counter.feed(&bytes), 1);
        assert!(counter.is_mid_frame());
    }

    #[test]
    fn huge_length_prefix_waits_without_panicking() {
        let mut counter = FrameCounter::new();
        assert_eq!(counter.feed(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]), 0);
        assert!(counter.is_mid_frame());
        assert_eq!(counter.feed(&vec![0; 1 << 16]), 0);
    }

    proptest! {
        #[test]
        fn any_chunking_counts_the_same(
            payloads in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
            torn in 0usize..5,
        ) {
            let mut bytes: Vec<u8> = payloads.iter().flat_map(|(c, p)| frame(*c, p)).collect();
            let whole = payloads.len() as u64;
            // Optionally append a torn frame that must never count.
            let tail = frame(false, b"tail!");
            bytes.extend_from_slice(&tail[..torn]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut counter = FrameCounter::new();
            let mut lengths = Vec::new();
            let total: u64 =
                points.windows(2).map(|w| counter.feed_with(&bytes[w[0]..w[1]], |len| lengths.push(len))).sum();
            prop_assert_eq!(total, whole);
            let expected: Vec<u32> = payloads.iter().map(|(_, p)| p.len() as u32).collect();
            prop_assert_eq!(lengths, expected);
            prop_assert_eq!(counter.is_mid_frame(), torn > 0);
        }
    }
}
