//! The snapshot file a process of a group publishes: a versioned header, then one protobuf
//! message with the process' identity and its metric families.

use prost::Message as _;

use crate::exposition::model::MetricFamily;

/// The first bytes of every snapshot file: `TMMP`, a format version, three zero bytes.
/// A file with another version is left alone (and out of the sum), with a warning.
const MAGIC: [u8; 8] = *b"TMMP\x01\0\0\0";

/// One process' metrics, or (for the archive) the sum of dead processes' counters and
/// histograms.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapshotFile {
    /// The group (service) the process belongs to.
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    /// Telling apart two processes that had the same pid.
    #[prost(uint64, tag = "3")]
    pub instance: u64,
    // Tag 4 (the publish time, never read) is retired: files that carry it still decode
    // (protobuf skips unknown fields), so the format version stays; never reuse the tag.
    /// Written by a process shutting down cleanly.
    #[prost(bool, tag = "5")]
    pub exited: bool,
    /// Where the process serves (or would serve) `/metrics`.
    #[prost(string, tag = "6")]
    pub listen: String,
    #[prost(message, repeated, tag = "7")]
    pub families: Vec<MetricFamily>,
    /// The archive only: the members whose counts it holds (their snapshots are skipped).
    #[prost(string, repeated, tag = "8")]
    pub absorbed: Vec<String>,
}

/// Why a snapshot file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Not a snapshot file of this format version (another version of this crate).
    Version,
    /// Torn or corrupt.
    Corrupt,
}

impl SnapshotFile {
    pub fn encode_file(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + self.encoded_len());
        out.extend_from_slice(&MAGIC);
        // Encoding into a Vec cannot run out of room.
        let _ = self.encode(&mut out);
        out
    }

    pub fn decode_file(bytes: &[u8]) -> Result<Self, ReadError> {
        let Some(body) = bytes.strip_prefix(&MAGIC) else {
            return Err(if bytes.starts_with(b"TMMP") { ReadError::Version } else { ReadError::Corrupt });
        };
        Self::decode(body).map_err(|_| ReadError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions_and_garbage() {
        let file = SnapshotFile { group: "svc".into(), pid: 7, instance: 9, ..Default::default() };
        let bytes = file.encode_file();
        assert_eq!(SnapshotFile::decode_file(&bytes), Ok(file));
        let mut other = bytes.clone();
        other[4] = 2;
        assert_eq!(SnapshotFile::decode_file(&other), Err(ReadError::Version));
        assert_eq!(SnapshotFile::decode_file(b"garbage"), Err(ReadError::Corrupt));
        assert_eq!(SnapshotFile::decode_file(&bytes[..bytes.len() - 1]).is_err(), bytes.len() > MAGIC.len());
    }
}
