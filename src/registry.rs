//! Which methods a service has, and what kind of RPC each one is.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::FileDescriptorSet;

use crate::Error;

/// The kind of an RPC, as the `grpc_type` label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrpcType {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
    /// The method is not in a [`MethodRegistry`], so its kind is not known.
    Unknown,
}

impl GrpcType {
    /// The kind for a method's streaming flags.
    pub const fn from_streaming(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => Self::Unary,
            (true, false) => Self::ClientStream,
            (false, true) => Self::ServerStream,
            (true, true) => Self::BidiStream,
        }
    }

    /// The label value: `unary`, `client_stream`, `server_stream`, `bidi_stream` or `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for GrpcType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The methods a service (or several) exposes, with the kind of each.
///
/// Give one to a metrics layer and the layer
/// - labels each method with its exact `grpc_type`,
/// - creates every method's series at zero before the first call, so `rate()` and
///   absence alerts work from the start, and
/// - records any path not in the registry under one `grpc_service="unknown",
///   grpc_method="unknown"` pair, so a client sending random paths cannot add series.
///
/// Build it from the encoded `FileDescriptorSet`s your build already has: the file that
/// `tonic_prost_build::configure().file_descriptor_set_path(..)` writes, and the sets that
/// `tonic-health` and `tonic-reflection` export.
///
/// ```
/// use tonic_metrics::{GrpcType, MethodRegistry};
///
/// let registry = MethodRegistry::new()
///     .with_method("grpc.examples.echo.Echo", "UnaryEcho", GrpcType::Unary)
///     .with_method("grpc.examples.echo.Echo", "ServerStreamingEcho", GrpcType::ServerStream);
/// assert_eq!(registry.get("grpc.examples.echo.Echo", "UnaryEcho"), Some(GrpcType::Unary));
/// assert_eq!(registry.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodRegistry {
    /// service -> method -> kind; ordered so that pre-initialisation and iteration are
    /// deterministic.
    services: BTreeMap<Box<str>, BTreeMap<Box<str>, GrpcType>>,
}

impl MethodRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry of every service in an encoded `FileDescriptorSet`.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptorSet`] if the bytes are not an encoded `FileDescriptorSet`.
    pub fn from_file_descriptor_set(encoded: &[u8]) -> Result<Self, Error> {
        Self::new().with_file_descriptor_set(encoded)
    }

    /// Adds every service in an encoded `FileDescriptorSet`.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptorSet`] if the bytes are not an encoded `FileDescriptorSet`.
    pub fn with_file_descriptor_set(mut self, encoded: &[u8]) -> Result<Self, Error> {
        self.add_file_descriptor_set(encoded)?;
        Ok(self)
    }

    /// Adds every service in an encoded `FileDescriptorSet`.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptorSet`] if the bytes are not an encoded `FileDescriptorSet`.
    pub fn add_file_descriptor_set(&mut self, encoded: &[u8]) -> Result<(), Error> {
        let set = FileDescriptorSet::decode(encoded).map_err(Error::InvalidDescriptorSet)?;
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                let full = if package.is_empty() { name } else { format!("{package}.{name}") };
                for method in service.method {
                    let kind = GrpcType::from_streaming(
                        method.client_streaming.unwrap_or(false),
                        method.server_streaming.unwrap_or(false),
                    );
                    self.add_method(&full, &method.name.unwrap_or_default(), kind);
                }
            }
        }
        Ok(())
    }

    /// Adds one method by hand (for services without descriptors, or to override a kind).
    pub fn with_method(mut self, service: &str, method: &str, kind: GrpcType) -> Self {
        self.add_method(service, method, kind);
        self
    }

    /// Adds one method by hand. Empty names are ignored: no client can call them.
    pub fn add_method(&mut self, service: &str, method: &str, kind: GrpcType) {
        if service.is_empty() || method.is_empty() {
            return;
        }
        self.services.entry(service.into()).or_default().insert(method.into(), kind);
    }

    /// The kind of `service`/`method`, if registered.
    pub fn get(&self, service: &str, method: &str) -> Option<GrpcType> {
        self.services.get(service)?.get(method).copied()
    }

    /// Number of registered methods.
    pub fn len(&self) -> usize {
        self.services.values().map(BTreeMap::len).sum()
    }

    /// Whether no method is registered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Every registered `(service, method, kind)`, ordered by service then method.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, GrpcType)> + '_ {
        self.services
            .iter()
            .flat_map(|(service, methods)| methods.iter().map(move |(method, kind)| (&**service, &**method, *kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_streaming_flags() {
        assert_eq!(GrpcType::from_streaming(false, false).as_str(), "unary");
        assert_eq!(GrpcType::from_streaming(true, false).as_str(), "client_stream");
        assert_eq!(GrpcType::from_streaming(false, true).as_str(), "server_stream");
        assert_eq!(GrpcType::from_streaming(true, true).as_str(), "bidi_stream");
    }

    #[test]
    fn garbage_descriptor_set_is_an_error() {
        let error = MethodRegistry::from_file_descriptor_set(b"\xff\xff\xff").unwrap_err();
        assert!(error.to_string().contains("FileDescriptorSet"), "{error}");
    }
}
