//! The README's Quick start: a tonic server with `ServerMetricsLayer` and `/metrics` on the
//! next port, and a client with `ClientMetricsLayer`, making one call.
//!
//! ```text
//! cargo run -p tonic-metrics-quickstart [ADDR]    # default 127.0.0.1:50051; port 0: any free port
//! ```

use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_metrics::{ClientMetricsLayer, MethodRegistry, PrometheusExporter, ServerMetricsLayer};
use tower::ServiceBuilder;

pub mod pb {
    tonic::include_proto!("helloworld");
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helloworld_descriptor.bin"));
}
use pb::{
    HelloReply, HelloRequest,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};

#[derive(Default)]
struct MyGreeter;

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply { message: format!("Hello {}!", request.into_inner().name) }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".into()).parse()?;

    // 1. /metrics on the gRPC port + 1 (here :50052; with port 0, any free port). A busy
    //    port logs a warning and the gRPC server runs on without metrics.
    let metrics = PrometheusExporter::for_grpc_addr(addr).install_or_warn();
    let incoming = TcpIncoming::bind(addr)?;
    let addr = incoming.local_addr()?;

    // 2. The registry names every method with its kind and creates its series at zero.
    //    Add the descriptor sets of every service you serve (health, reflection, ...), or
    //    their calls are counted as `unknown`.
    let registry = MethodRegistry::from_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)?
        .with_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
    let (_, health) = tonic_health::server::health_reporter();

    // 3. One layer on the server.
    let server = Server::builder()
        .layer(ServerMetricsLayer::new().with_registry(registry.clone()))
        .add_service(GreeterServer::new(MyGreeter))
        .add_service(health)
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    // 4. The same layer, client side, around a Channel.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let channel = ServiceBuilder::new().layer(ClientMetricsLayer::new().with_registry(registry)).service(channel);
    let mut client = GreeterClient::new(channel);
    let reply = client.say_hello(HelloRequest { name: "metrics".into() }).await?;
    println!("{}", reply.into_inner().message);

    // What Prometheus scrapes from http://127.0.0.1:50052/metrics:
    if let Some(metrics) = metrics {
        println!("metrics on http://{}/metrics", metrics.local_addr());
        let text = metrics.render();
        let counted = |line: &&str| line.contains("SayHello") && line.contains("_total") && !line.ends_with(" 0");
        text.lines().filter(counted).for_each(|line| println!("{line}"));
    }
    Ok(())
}
