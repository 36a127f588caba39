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
        // A worker whose handle is dropped without being stopped (the supervisor failing
        // to start the others, or its future dropped) must not outlive the supervisor.
        .kill_on_drop(true)
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

/// A worker that dies sooner than this after starting is restarted only after
/// [`RESTART_BACKOFF`]: one that cannot run at all must not be restarted in a busy loop.
const MIN_UPTIME: Duration = Duration::from_secs(1);
/// The wait before restarting a worker that died young, and between failed starts.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

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
    tokio::pin!(shutdown);
    let mut workers = Vec::with_capacity(count);
    for slot in 0..count {
        let started = tokio::select! {
            biased;
            () = &mut shutdown => None,
            started = start(slot, &worker_args, &dir) => Some(started),
        };
        // Stopped before all could start, or one cannot: those started stop as at a
        // shutdown (their last counts published) rather than run on without a supervisor.
        match started {
            Some(Ok(child)) => workers.push((child, Instant::now())),
            None => {
                stop(&mut workers, grace).await;
                return Ok(());
            }
            Some(Err(error)) => {
                stop(&mut workers, grace).await;
                return Err(error);
            }
        }
    }
    ready(&workers.iter().filter_map(|(child, _)| child.id()).collect::<Vec<_>>());
    'supervising: loop {
        // `Child::wait` is cancel-safe: the race below loses nothing.
        let exited = futures_util::future::select_all(
            workers
                .iter_mut()
                .enumerate()
                .map(|(slot, (child, _))| Box::pin(async move { (slot, child.wait().await) })),
        );
        // Shutdown first: a worker that exits on the same Ctrl-C (the terminal sends it
        // to the whole process group) is stopping, not dying.
        let (slot, status) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            ((slot, status), _, _) = exited => (slot, status),
        };
        let backoff = if workers[slot].1.elapsed() < MIN_UPTIME { RESTART_BACKOFF } else { Duration::ZERO };
        tracing::warn!(slot, ?status, ?backoff, "worker exited; restarting it");
        let mut wait = tokio::time::sleep(backoff);
        // Keep trying (a worker that cannot start now, a port in TIME_WAIT, may later), but
        // never past a shutdown.
        loop {
            let started = tokio::select! {
                biased;
                () = &mut shutdown => break 'supervising,
                started = async {
                    wait.await;
                    start(slot, &worker_args, &dir).await
                } => started,
            };
            match started {
                Ok(child) => {
                    workers[slot] = (child, Instant::now());
                    break;
                }
                Err(error) => {
                    tracing::error!(slot, %error, "cannot restart worker; retrying in {RESTART_BACKOFF:?}");
                    wait = tokio::time::sleep(RESTART_BACKOFF);
                }
            }
        }
    }
    stop(&mut workers, grace).await;
    Ok(())
}

/// Stops `workers` with `SIGTERM`, and `SIGKILL`s any still running after `grace`. A
/// worker that already exited (one waiting for its restart) is not signalled: its pid may
/// belong to another process by now.
async fn stop(workers: &mut [(Child, Instant)], grace: Duration) {
    for (child, _) in workers.iter() {
        send(child, signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for (child, _) in workers.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, child.wait()).await.is_err() {
            send(child, signal::Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}
