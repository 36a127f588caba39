//! The HTTP/1 accept loop: connection limits, the allowlist, and read timeouts.

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::{net::TcpListener, task::JoinSet};

use super::{render::Renderer, respond::respond};

/// Open `/metrics` connections served at once; further ones are closed on accept.
const MAX_CONNECTIONS: usize = 64;

/// Accepts scrapes until dropped; connections live in a `JoinSet` so they end with it.
pub(super) async fn serve(listener: TcpListener, renderer: Arc<Renderer>, allowlist: Vec<IpNet>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "metrics listener: accept failed");
                        // Out of file descriptors and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if connections.len() >= MAX_CONNECTIONS {
                    // Scrapers open one connection at a time; many at once is abuse, and
                    // closing the newest keeps memory bounded.
                    tracing::debug!(%peer, "metrics listener: too many open connections, closing");
                    drop(stream);
                    continue;
                }
                // On a dual-stack listener an IPv4 peer shows as `::ffff:a.b.c.d`.
                let ip = peer.ip().to_canonical();
                let allowed = allowlist.is_empty() || allowlist.iter().any(|net| net.contains(&ip));
                let renderer = renderer.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let renderer = renderer.clone();
                        async move { Ok::<_, Infallible>(respond(request, allowed, renderer).await) }
                    });
                    // A peer that connects and sends nothing is dropped after a while.
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "metrics listener: connection failed");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
