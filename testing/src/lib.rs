//! Test support for `tonic-metrics` (not published): the canonical gRPC echo service
//! (`grpc.examples.echo.Echo`) used by the tests, examples and benchmarks, an exposition
//! parser for the tests ([`exposition`]) and an in-process gRPC service for benchmarks and
//! allocation counts ([`inproc`]).
//!
//! The behaviour is driven by the request text, so a test or a load generator can ask for
//! any outcome without a second service:
//!
//! | message       | UnaryEcho              | ServerStreamingEcho                 | ClientStreamingEcho                     | BidirectionalStreamingEcho       |
//! |---------------|------------------------|-------------------------------------|-----------------------------------------|----------------------------------|
//! | plain text    | echoes it              | 5 responses with it                 | one answer: messages joined by `,`      | echoes each message              |
//! | `sleep:<ms>`  | waits, then echoes     | waits before each of 5 responses    | as plain text                           | waits, then echoes               |
//! | `fail:<Code>` | returns that status    | one response, then that status      | that status once the client has finished| that status when it arrives      |
//! | `panic`       | the handler panics     | the handler panics                  | the handler panics                      | the handler panics               |
//!
//! `Code` is Go's spelling (`NotFound`, `Canceled`, ...) or a number (`5`).

use std::{pin::Pin, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};

pub mod exposition;
pub mod inproc;

/// Generated messages, client and server for `grpc.examples.echo`.
pub mod pb {
    tonic::include_proto!("grpc.examples.echo");
}

pub use pb::{
    EchoRequest, EchoResponse,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};

/// The encoded `FileDescriptorSet` of `echo.proto`, as `tonic_prost_build` writes it.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo_descriptor.bin"));

/// Number of responses `ServerStreamingEcho` sends for a plain or `sleep:` message.
pub const STREAM_RESPONSES: usize = 5;

/// What a request message asks the service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Echo the text.
    Echo,
    /// Wait this long before answering.
    Sleep(Duration),
    /// End with this status.
    Fail(Code),
    /// Panic in the handler.
    Panic,
}

impl Command {
    /// Reads the command out of a request message.
    pub fn parse(message: &str) -> Self {
        if message == "panic" {
            return Self::Panic;
        }
        if let Some(ms) = message.strip_prefix("sleep:") {
            return ms.trim().parse().map_or(Self::Echo, |ms| Self::Sleep(Duration::from_millis(ms)));
        }
        if let Some(code) = message.strip_prefix("fail:") {
            return parse_code(code.trim()).map_or(Self::Echo, Self::Fail);
        }
        Self::Echo
    }
}

/// Parses a status code in Go's spelling (`DeadlineExceeded`, `Canceled`) or as a number.
pub fn parse_code(text: &str) -> Option<Code> {
    if let Ok(n) = text.parse::<i32>() {
        return (0..=16).contains(&n).then(|| Code::from_i32(n));
    }
    // tonic's Debug spelling is Go's, except for the double-l `Cancelled`.
    let normalised = if text == "Canceled" { "Cancelled" } else { text };
    (0..=16).map(Code::from_i32).find(|code| format!("{code:?}") == normalised)
}

fn status(code: Code) -> Status {
    Status::new(code, format!("requested by the client: {code:?}"))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn reply(message: impl Into<String>) -> EchoResponse {
    EchoResponse { message: message.into() }
}

/// The echo service; see the crate docs for its message protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary_echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let message = request.into_inner().message;
        match Command::parse(&message) {
            Command::Fail(code) => return Err(status(code)),
            Command::Sleep(duration) => tokio::time::sleep(duration).await,
            Command::Panic => panic!("the client asked UnaryEcho to panic"),
            Command::Echo => {}
        }
        Ok(Response::new(reply(message)))
    }

    type ServerStreamingEchoStream = ResponseStream;

    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
        let message = request.into_inner().message;
        let command = Command::parse(&message);
        if command == Command::Panic {
            panic!("the client asked ServerStreamingEcho to panic");
        }
        let (tx, rx) = mpsc::channel(STREAM_RESPONSES);
        tokio::spawn(async move {
            for _ in 0..STREAM_RESPONSES {
                if let Command::Sleep(duration) = command {
                    tokio::time::sleep(duration).await;
                }
                if tx.send(Ok(reply(message.clone()))).await.is_err() {
                    return; // the client went away
                }
                if let Command::Fail(code) = command {
                    let _ = tx.send(Err(status(code))).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn client_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut received = Vec::new();
        let mut failure = None;
        while let Some(message) = stream.next().await {
            let message = message?.message;
            match Command::parse(&message) {
                Command::Fail(code) => failure = failure.or(Some(code)),
                Command::Panic => panic!("the client asked ClientStreamingEcho to panic"),
                _ => {}
            }
            received.push(message);
        }
        match failure {
            Some(code) => Err(status(code)),
            None => Ok(Response::new(reply(received.join(",")))),
        }
    }

    type BidirectionalStreamingEchoStream = ResponseStream;

    async fn bidirectional_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let message = match message {
                    Ok(message) => message.message,
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                };
                let item = match Command::parse(&message) {
                    Command::Fail(code) => Err(status(code)),
                    Command::Sleep(duration) => {
                        tokio::time::sleep(duration).await;
                        Ok(reply(message))
                    }
                    Command::Panic => panic!("the client asked BidirectionalStreamingEcho to panic"),
                    Command::Echo => Ok(reply(message)),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("hello"), Command::Echo);
        assert_eq!(Command::parse("sleep:25"), Command::Sleep(Duration::from_millis(25)));
        assert_eq!(Command::parse("fail:NotFound"), Command::Fail(Code::NotFound));
        assert_eq!(Command::parse("fail:Canceled"), Command::Fail(Code::Cancelled));
        assert_eq!(Command::parse("fail:4"), Command::Fail(Code::DeadlineExceeded));
        assert_eq!(Command::parse("fail:Nope"), Command::Echo);
        assert_eq!(Command::parse("fail:17"), Command::Echo);
        assert_eq!(Command::parse("panic"), Command::Panic);
    }
}
