//! Which end of the RPC a layer sits on: the type parameter of
//! [`GrpcMetricsLayer`](crate::GrpcMetricsLayer) and [`GrpcMetrics`](crate::GrpcMetrics).
//!
//! Most code never names these: use the aliases [`ServerMetricsLayer`](crate::ServerMetricsLayer),
//! [`ClientMetricsLayer`](crate::ClientMetricsLayer), [`ServerMetrics`](crate::ServerMetrics) and
//! [`ClientMetrics`](crate::ClientMetrics). They live in their own module so that they do not
//! clash with `tonic::transport::Server` on import.

/// Which end of the RPC a layer sits on. Implemented by [`Server`] and [`Client`]; sealed.
pub trait Side: sealed::Sealed + Send + Sync + 'static {}

pub(crate) mod sealed {
    pub trait Sealed {
        /// Whether the layer sits on the server (records `grpc_server_*`).
        const IS_SERVER: bool;
    }
}

/// The server side: records `grpc_server_*`, naming each RPC from its path.
///
/// The request body counts `grpc_server_msg_received_total`, the response body
/// `grpc_server_msg_sent_total`. An error from the inner service is recorded with the code
/// of the `tonic::Status` it is (or wraps), and as `Unknown` when it is no `Status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Server;

impl sealed::Sealed for Server {
    const IS_SERVER: bool = true;
}

impl Side for Server {}

/// The client side: records `grpc_client_*`, naming each RPC from the `tonic::GrpcMethod`
/// extension that generated clients set (falling back to the path).
///
/// The request body counts `grpc_client_msg_sent_total`, the response body
/// `grpc_client_msg_received_total`. An error from the inner service is turned into the
/// `tonic::Status` tonic's client gives the caller (`Status::from_error`), and its code is
/// recorded: a refused connection is `Unavailable`, tonic's own timeout (`TimeoutExpired`)
/// `DeadlineExceeded`, a connection lost mid-call `Unknown`, an HTTP/2 reset by its reason
/// (`CANCEL` is `Canceled`; tonic reads reset reasons only with its `server` feature,
/// otherwise both the caller and the layer see `Unknown`). The service's error type is
/// [`BoxError`](crate::BoxError) holding that `Status`, with the original error as its
/// source: layers above this one that inspect transport errors (retries, reconnects)
/// belong below it.
///
/// The inner service takes `tonic::body::Body`, as a `Channel` does, so the counting
/// request body is boxed into one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client;

impl sealed::Sealed for Client {
    const IS_SERVER: bool = false;
}

impl Side for Client {}
