//! Rendering `/metrics` off the async workers, once for all the scrapes that arrive
//! while a render is under way.
//!
//! A render of 10,000 methods takes about half a second of CPU: on a runtime worker it would
//! stall the gRPC traffic sharing that worker, so it runs on the blocking pool. Scrapes
//! that ask for the same format and encoding while one render is in flight wait for it
//! and share its bytes, so a burst of scrapers (several Prometheus replicas, a retry
//! storm) costs one render, not one each. A render runs to its end in a task of its own,
//! whether or not the scrape that started it is still waiting (a scraper that times out
//! and retries joins the render under way instead of starting another).

use std::{
    collections::HashMap,
    fmt,
    io::Write as _,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use tokio::sync::watch;

use crate::exposition::{self, Format, model::MetricFamily};

/// Where a scrape's metrics come from: this process' recorder, or the sum over the
/// processes of a multi-process group.
pub(crate) trait Source: Send + Sync + 'static {
    /// Everything to serve now, sorted by family name; `Err` (why, for the log and the
    /// scraper) when a complete answer cannot be given.
    fn collect(&self) -> Result<Vec<MetricFamily>, String>;
}

/// What a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    pub format: Format,
    pub gzip: bool,
}

/// The body of one render, or why it failed.
pub(crate) type Rendered = Result<Bytes, Arc<str>>;

/// Renders `/metrics` bodies, sharing each in-flight render among concurrent scrapes.
pub(crate) struct Renderer {
    source: Arc<dyn Source>,
    /// The render in flight for each variant: its result arrives in the channel.
    flights: Mutex<HashMap<Variant, watch::Receiver<Option<Rendered>>>>,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    pub fn new(source: Arc<dyn Source>) -> Arc<Self> {
        Arc::new(Self { source, flights: Mutex::default() })
    }

    /// The body for `variant`: the render in flight for it if there is one, else a new one.
    pub async fn render(self: &Arc<Self>, variant: Variant) -> Rendered {
        let mut flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&variant) {
                Some(flight) => flight.clone(),
                None => {
                    let (done, flight) = watch::channel(None);
                    flights.insert(variant, flight.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        let worker = this.clone();
                        let rendered = tokio::task::spawn_blocking(move || worker.encode(variant))
                            .await
                            .unwrap_or_else(|error| Err(format!("rendering /metrics failed: {error}").into()));
                        // Later scrapes render afresh; this flight's waiters get its bytes.
                        this.flights.lock().unwrap_or_else(PoisonError::into_inner).remove(&variant);
                        let _ = done.send(Some(rendered));
                    });
                    flight
                }
            }
        };
        match flight.wait_for(Option::is_some).await {
            Ok(rendered) => rendered.clone().unwrap_or_else(|| Err("no render".into())),
            Err(_) => Err("the render was abandoned (the runtime is shutting down)".into()),
        }
    }

    /// Collects, encodes and compresses, on the calling (blocking) thread.
    pub fn encode(&self, variant: Variant) -> Rendered {
        let body = exposition::encode(variant.format, &self.source.collect()?);
        if !variant.gzip {
            return Ok(Bytes::from(body));
        }
        gzip(&body).map(Bytes::from).map_err(|error| format!("compressing /metrics failed: {error}").into())
    }
}

/// gzip at the fastest level: scrape bodies are repetitive text, so the fastest level
/// already shrinks them about tenfold, at a fraction of the default level's CPU.
pub(crate) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// A source that takes 200 ms of blocking work per collect, and counts them.
    #[derive(Default)]
    struct Slow {
        collects: AtomicUsize,
    }

    impl Source for Slow {
        fn collect(&self) -> Result<Vec<MetricFamily>, String> {
            self.collects.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            Ok(Vec::new())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_scrapes_share_one_render_off_the_async_worker() {
        let slow = Arc::new(Slow::default());
        let renderer = Renderer::new(slow.clone());
        let variant = Variant { format: Format::Text, gzip: false };
        // A task on the same (single) worker thread keeps ticking while the render runs:
        // it could not if the render blocked the worker.
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let scrapes: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let renderer = renderer.clone();
                    async move { renderer.render(variant).await }
                })
            })
            .collect();
        for scrape in scrapes {
            assert!(scrape.await.unwrap().is_ok());
        }
        ticker.abort();
        assert_eq!(slow.collects.load(Ordering::SeqCst), 1, "eight concurrent scrapes, one render");
        assert!(ticks.load(Ordering::SeqCst) >= 10, "the worker kept running other tasks during the render");
        // Once a render is over, the next scrape renders afresh.
        renderer.render(variant).await.unwrap();
        assert_eq!(slow.collects.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_scrape_that_gives_up_leaves_its_render_to_the_next() {
        let slow = Arc::new(Slow::default());
        let renderer = Renderer::new(slow.clone());
        let variant = Variant { format: Format::Text, gzip: true };
        // A scraper times out 50 ms into the 200 ms render, then retries.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), renderer.render(variant)).await;
        assert!(gave_up.is_err());
        assert!(renderer.render(variant).await.is_ok());
        assert_eq!(slow.collects.load(Ordering::SeqCst), 1, "the retry joined the render under way");
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let body = b"# TYPE x counter\nx 1\n".repeat(100);
        let compressed = gzip(&body).unwrap();
        assert!(compressed.len() < body.len() / 10);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
    }
}
