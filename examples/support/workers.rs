//! `--workers N` for the example server: a supervisor process and N worker processes that
//! share the gRPC port (`SO_REUSEPORT`, Linux), in the exporter's multi-process mode.
//!
//! The supervisor joins the multi-process group first, so it holds the metrics port and
//! serves the sum over the workers (no gap in scrapes when a worker dies; if the supervisor
//! itself died, a worker would take the port over). It restarts a worker that dies
//! (`SIGKILL` included) and, on `SIGTERM` or Ctrl-C, stops them all gracefully: each worker
//! finishes its calls and publishes its last counts before exiting.

use std::{
    error::Error,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};
use socket2::{Domain, Socket, Type};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A TCP listener on `addr` that other processes may bind too (`SO_REUSEPORT`): the kernel
/// spreads new connections over the listening ones.
pub fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Reserves a port for the workers without taking connections: a bound, non-listening
/// `SO_REUSEPORT` socket (connections only go to listening sockets).
pub fn reserve_port(addr: SocketAddr) -> std::io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?.as_socket().ok_or("not an IP socket").map_err(std::io::Error::other)?;
    Ok((socket, bound))
}

/// The shared directory for the group: the one asked for, or a fresh one under the
/// temporary directory (removed at exit).
pub fn group_dir(asked: Option<PathBuf>) -> std::io::Result<(PathBuf, bool)> {
    match asked {
        Some(dir) => Ok((dir, false)),
        None => {
            let dir = std::env::temp_dir().join(format!("tonic-metrics-server-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            Ok((dir, true))
        }
    }
}

/// Starts a worker and waits (up to 30 s) until it says it serves.
async fn start(slot: usize, worker_args: &[String], dir: &PathBuf) -> Result<Child, Box<dyn Error + Send + Sync>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(worker_args)
        .env(tonic_metrics::multiprocess::MULTIPROC_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line.starts_with("gRPC listening") => {}
        other => {
            let _ = child.start_kill();
            return Err(format!("worker {slot} did not start: {other:?}").into());
        }
    }
    // Keep draining the worker's stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tracing::info!(slot, pid = child.id(), "worker started");
    Ok(child)
}

fn send(child: &Child, which: signal::Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = signal::kill(Pid::from_raw(pid), which);
    }
}

/// Runs `count` workers until `shutdown` resolves, restarting any that dies; then stops
/// them all with `SIGTERM`, and `SIGKILL` any still running after `grace`.
pub async fn supervise(
    count: usize,
    worker_args: Vec<String>,
    dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
    ready: impl FnOnce(&[u32]),
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut workers = Vec::with_capacity(count);
    for slot in 0..count {
        workers.push(start(slot, &worker_args, &dir).await?);
    }
    ready(&workers.iter().filter_map(Child::id).collect::<Vec<_>>());
    tokio::pin!(shutdown);
    loop {
        // `Child::wait` is cancel-safe: the race below loses nothing.
        let exited = futures_util::future::select_all(
            workers.iter_mut().enumerate().map(|(slot, child)| Box::pin(async move { (slot, child.wait().await) })),
        );
        let (slot, status) = tokio::select! {
            () = &mut shutdown => break,
            ((slot, status), _, _) = exited => (slot, status),
        };
        tracing::warn!(slot, ?status, "worker exited; restarting it");
        // Keep trying: a worker that cannot start now (a port in TIME_WAIT) may later.
        loop {
            match start(slot, &worker_args, &dir).await {
                Ok(child) => {
                    workers[slot] = child;
                    break;
                }
                Err(error) => {
                    tracing::error!(slot, %error, "cannot restart worker; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    for child in &workers {
        send(child, signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for child in &mut workers {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, child.wait()).await.is_err() {
            send(child, signal::Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    Ok(())
}
