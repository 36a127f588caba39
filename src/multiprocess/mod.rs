//! Several processes, one `/metrics`: the multi-process mode of the exporter.
//!
//! Run N worker processes of one service on one host (sharing the gRPC port with
//! `SO_REUSEPORT`, or children of a supervisor) and only one of them can hold the metrics
//! port: without this mode, Prometheus sees that one process' metrics, about 1/N of the
//! traffic, and every dashboard looks healthy. With it, every process publishes its
//! metrics to a directory the group shares, and whichever process holds the metrics port
//! serves the **sum over all of them**, in every format the endpoint speaks.
//!
//! ```no_run
//! use tonic_metrics::{PrometheusExporter, multiprocess::MultiProcess};
//!
//! # #[tokio::main] async fn main() {
//! // Every worker runs the same code; TONIC_METRICS_MULTIPROC_DIR=/run/my-service does the
//! // same without code.
//! let metrics = PrometheusExporter::for_grpc_addr("0.0.0.0:50051".parse().unwrap())
//!     .with_multiprocess(MultiProcess::new("/run/my-service/metrics"))
//!     .install_or_warn();
//! # drop(metrics); }
//! ```
//!
//! As a function returning the configured exporter (the README's example):
//!
//! ```
//! use tonic_metrics::{PrometheusExporter, multiprocess::MultiProcess};
//!
//! fn exporter() -> PrometheusExporter {
//!     PrometheusExporter::for_grpc_addr("0.0.0.0:50051".parse().unwrap())
//!         .with_multiprocess(MultiProcess::new("/run/my-service/metrics"))
//! }
//! # drop(exporter());
//! ```
//!
//! # How it works, and what a crash can lose
//!
//! - Each process records as it always does (same hot path, same cost per RPC) and writes
//!   a snapshot of everything it holds to `<dir>/<group>/` every publish interval (1 s by
//!   default), atomically (write, then rename). `<group>` is the program's name unless
//!   [`MultiProcess::with_group`] says otherwise (a name that is no safe directory name
//!   gets a hash of itself appended), so two services sharing a directory by mistake
//!   never mix.
//! - Every process tries to bind the metrics port. The one that gets it serves: on each
//!   scrape it writes its own snapshot first, then reads all the group's snapshots and sums
//!   them. The others stand by and retry the port every publish interval: if the serving
//!   process dies, another takes over within an interval. (Any process can serve, so no
//!   supervisor is needed; a supervisor that joins the group first serves it.)
//! - Counters and histograms of a process that exits or dies stay in the sum, so they
//!   never go down and `rate()` never sees a reset. A process that is killed (`SIGKILL`)
//!   loses at most what it counted since its last publish: at most one publish interval of
//!   that one process ([`MultiProcess::with_publish_interval`]). A clean shutdown
//!   ([`MetricsServer::shutdown`](crate::MetricsServer::shutdown)) publishes a last time and
//!   loses nothing. The counts of dead processes are folded into one archive file, so
//!   restarts do not grow the directory.
//! - Gauges are summed over live processes by default; [`GaugeAggregation`] has max, min
//!   and one series per process. Summaries (histograms without buckets) cannot be added
//!   up, so each live process' summary is served with a `pid` label.
//! - Liveness is a file lock each process holds for its life; the kernel releases it when
//!   the process dies, however it dies. A process that finds no member of its group alive
//!   starts a new run and removes what an earlier run left, so old counts are never summed
//!   into a new run. Use a local file system (`/run`, `/dev/shm` or a tmpfs are best).
//! - An unwritable or full directory is a warning: the process keeps serving gRPC, and its
//!   counts are missing from the sum until it can write again. Files from another version
//!   of this crate are left out of the sum, with a warning.

mod dir;
mod merge;
mod snapshot;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

pub use self::merge::GaugeAggregation;
use self::{
    dir::Member,
    merge::{Contribution, GaugeModes},
    snapshot::{ReadError, SnapshotFile},
};
use crate::{exporter::MetricsHandle, exposition::model::MetricFamily};

/// The environment variable that turns multi-process mode on for any program using the
/// exporter: the shared directory, as [`MultiProcess::new`] takes it (the analogue of the
/// Python client's `PROMETHEUS_MULTIPROC_DIR`).
pub const MULTIPROC_DIR_ENV: &str = "TONIC_METRICS_MULTIPROC_DIR";

/// How often each process publishes its snapshot by default: the most a killed process can
/// lose.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Configuration of the multi-process mode: give it to
/// [`PrometheusExporter::with_multiprocess`](crate::PrometheusExporter::with_multiprocess).
#[derive(Debug, Clone)]
pub struct MultiProcess {
    dir: PathBuf,
    group: Option<String>,
    interval: Duration,
    gauges: GaugeModes,
}

impl MultiProcess {
    /// Processes sharing `dir` (and the same group name) are summed into one `/metrics`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), group: None, interval: DEFAULT_PUBLISH_INTERVAL, gauges: GaugeModes::default() }
    }

    /// The mode [`MULTIPROC_DIR_ENV`] asks for, if it is set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(MULTIPROC_DIR_ENV).filter(|dir| !dir.is_empty()).map(Self::new)
    }

    /// The group's name (default: this program's file name): processes of one service share
    /// it; a second service in the same directory uses another.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How often each process publishes (default: [`DEFAULT_PUBLISH_INTERVAL`]); also how
    /// often a standing-by process retries the metrics port. A killed process loses at
    /// most this much of its counts.
    pub fn with_publish_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How gauges combine across live processes, unless named in
    /// [`with_gauge_aggregation_for`](Self::with_gauge_aggregation_for) (default:
    /// [`GaugeAggregation::Sum`]).
    pub fn with_gauge_aggregation(mut self, mode: GaugeAggregation) -> Self {
        self.gauges.default = mode;
        self
    }

    /// How one gauge (by its exposed name) combines across live processes.
    pub fn with_gauge_aggregation_for(mut self, name: impl Into<String>, mode: GaugeAggregation) -> Self {
        self.gauges.by_name.insert(name.into(), mode);
        self
    }

    /// The publish interval.
    pub fn publish_interval(&self) -> Duration {
        self.interval
    }

    fn group_name(&self) -> String {
        self.group.clone().unwrap_or_else(crate::exporter::program_name)
    }
}

/// This process in its group: publishes its snapshot, and sums the group's.
pub(crate) struct Group {
    member: Member,
    interval: Duration,
    local: MetricsHandle,
    gauges: GaugeModes,
    group: String,
    listen: String,
    /// Warnings already given, so that each is given once.
    warned: Mutex<HashSet<String>>,
    /// Serializes this process' publishes (the periodic one and the one at each scrape), so
    /// that snapshots reach the disk in the order they were taken: what the group serves
    /// never goes back.
    publishing: Mutex<()>,
    /// The largest total served so far of each float that only grows (counter values,
    /// histogram sums), by series. The sum over the group adds floats in an order that
    /// folding dead processes into the archive changes, and floats round differently in
    /// another order: a served total must never go down by that rounding, or `rate()`
    /// reads a reset.
    served: Mutex<HashMap<u64, f64>>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("dir", &self.member.dir()).field("member", &self.member.name()).finish()
    }
}

impl Group {
    /// Joins the group of `config`. On error (an unwritable directory, say) the caller
    /// warns and runs alone.
    pub fn join(config: &MultiProcess, local: MetricsHandle, listen: SocketAddr) -> std::io::Result<Self> {
        let group = config.group_name();
        // A member whose lock file is gone but that published within three intervals is
        // still counted alive (see `dir`).
        let fresh_for = (config.interval * 3).max(Duration::from_secs(3));
        let (member, wiped) = Member::join(&config.dir, &group, fresh_for)?;
        match wiped {
            Some(0) => tracing::info!(dir = %member.dir().display(), "metrics: started a multi-process group"),
            Some(removed) => tracing::info!(
                dir = %member.dir().display(),
                removed,
                "metrics: started a multi-process group; removed the files of an earlier run (no process of it is alive)"
            ),
            None => tracing::info!(dir = %member.dir().display(), "metrics: joined a running multi-process group"),
        }
        let group = Self {
            member,
            interval: config.interval,
            local,
            gauges: config.gauges.clone(),
            group,
            listen: listen.to_string(),
            warned: Mutex::default(),
            publishing: Mutex::default(),
            served: Mutex::default(),
        };
        // Joined, this process is a member whatever the disk says: failing here would leave
        // it alone for good (and its lock file behind) over what may be a passing full disk,
        // where a warning and the next publish set it right.
        group.publish_or_warn(false);
        Ok(group)
    }

    /// Leaves the group as if this process had never joined it (its snapshot and lock file
    /// removed, its lock released): for a process that joined and then could not start its
    /// exporter.
    pub(crate) fn leave(self) {
        self.member.leave();
    }

    /// How often to publish (and retry the port while standing by).
    pub fn publish_interval(&self) -> Duration {
        self.interval
    }

    fn warn_once(&self, key: String, message: impl FnOnce() -> String) {
        if self.warned.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            tracing::warn!("metrics: {}", message());
        }
    }

    fn snapshot_file(&self, families: Vec<MetricFamily>, exited: bool) -> SnapshotFile {
        SnapshotFile {
            group: self.group.clone(),
            pid: self.member.pid,
            instance: self.member.instance,
            exited,
            listen: self.listen.clone(),
            families,
            absorbed: Vec::new(),
        }
    }

    /// Writes this process' snapshot (`exited` on a clean shutdown).
    pub fn publish(&self, exited: bool) -> std::io::Result<()> {
        self.publish_snapshot(exited).map(drop)
    }

    /// Takes this process' snapshot and writes it, in order with any other publish of this
    /// process; returns the families written.
    fn publish_snapshot(&self, exited: bool) -> std::io::Result<Vec<MetricFamily>> {
        let _order = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        let own = self.local.snapshot();
        let file = self.snapshot_file(own, exited);
        self.member.publish(&file)?;
        Ok(file.families)
    }

    /// [`publish`](Self::publish), warning (once per kind of failure) instead of failing.
    pub fn publish_or_warn(&self, exited: bool) {
        if let Err(error) = self.publish(exited) {
            self.warn_once(format!("publish:{:?}", error.kind()), || {
                format!(
                    "cannot publish this process' metrics to {}: {error}; its counts are missing from the group's \
                     /metrics until it can (gRPC is served as before)",
                    self.member.dir().display()
                )
            });
        }
    }

    /// Folds dead processes' counts into the archive (the serving process does this).
    pub fn compact(&self) {
        let folded = self.member.compact(|archive, dead| {
            let mut contributions = Vec::new();
            let archive = archive.unwrap_or_default();
            contributions.push(Contribution { pid: 0, alive: false, families: &archive.families });
            for (_, snapshot) in &dead {
                contributions.push(Contribution { pid: snapshot.pid, alive: false, families: &snapshot.families });
            }
            let (families, _) = merge::merge(&contributions, |_| GaugeAggregation::Sum);
            let mut absorbed = archive.absorbed.clone();
            absorbed.extend(dead.iter().map(|(name, _)| name.clone()));
            SnapshotFile { group: self.group.clone(), families, absorbed, ..Default::default() }
        });
        match folded {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "metrics: folded dead processes into the group's archive"),
            Err(error) => self.warn_once(format!("compact:{:?}", error.kind()), || {
                format!("cannot fold dead processes' metrics in {}: {error}", self.member.dir().display())
            }),
        }
    }

    /// Raises every counter value and histogram sum to at least what was served before.
    fn never_below_served(&self, families: &mut [MetricFamily]) {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        for family in families.iter_mut() {
            for metric in &mut family.metric {
                let value = match (&mut metric.counter, &mut metric.histogram) {
                    (Some(counter), _) => counter.value.as_mut(),
                    (None, Some(histogram)) => histogram.sample_sum.as_mut(),
                    (None, None) => None,
                };
                let Some(value) = value else { continue };
                let mut hasher = DefaultHasher::new();
                family.name.hash(&mut hasher);
                for label in &metric.label {
                    (&label.name, &label.value).hash(&mut hasher);
                }
                let highest = served.entry(hasher.finish()).or_insert(*value);
                if *value < *highest {
                    *value = *highest;
                } else {
                    *highest = *value;
                }
            }
        }
    }

    /// The sum over the group, this process included (published first, so that what is
    /// served is what is on disk, and a takeover after this process dies serves no less).
    ///
    /// # Errors
    /// When the group directory cannot be read: serving this process' share alone would
    /// look, to `rate()`, like every counter of the group resetting; a failed scrape is
    /// honest (Prometheus records `up == 0`, and nothing resets).
    pub fn collect(&self) -> Result<Vec<MetricFamily>, String> {
        let published = self.publish_snapshot(false);
        let own = match &published {
            Ok(families) => families.clone(),
            Err(_) => self.local.snapshot(),
        };
        let reading = match self.member.read_all() {
            Ok(reading) => reading,
            Err(error) => {
                let message = format!("cannot read the group's metrics in {}: {error}", self.member.dir().display());
                self.warn_once(format!("read:{:?}", error.kind()), || message.clone());
                return Err(message);
            }
        };
        let mut snapshots = Vec::new();
        let mut listens: HashMap<String, u32> = HashMap::new();
        for entry in reading.members {
            match entry.snapshot {
                // This process counts once, from what it just published (or, if that
                // failed, from memory), never also from an older file of its own.
                Ok(snapshot) if snapshot.instance == self.member.instance && snapshot.pid == self.member.pid => {}
                Ok(snapshot) if snapshot.group == self.group => {
                    // Port 0 is no address to compare (a member standing by for it).
                    if entry.alive && !snapshot.listen.is_empty() && !snapshot.listen.ends_with(":0") {
                        listens.insert(snapshot.listen.clone(), snapshot.pid);
                    }
                    snapshots.push((entry.name.clone(), entry.alive && !snapshot.exited, snapshot));
                }
                Ok(snapshot) => self.warn_once(format!("group:{}", entry.name), || {
                    format!(
                        "{} in {} belongs to group {:?}, not {:?}: left out",
                        entry.name,
                        self.member.dir().display(),
                        snapshot.group,
                        self.group
                    )
                }),
                Err(ReadError::Version) => self.warn_once(format!("version:{}", entry.name), || {
                    format!(
                        "{}.snap in {} was written by another version of tonic-metrics: left out of the sum",
                        entry.name,
                        self.member.dir().display()
                    )
                }),
                Err(ReadError::Corrupt) => self.warn_once(format!("corrupt:{}", entry.name), || {
                    format!(
                        "{}.snap in {} is corrupt (or larger than {} bytes): left out of the sum",
                        entry.name,
                        self.member.dir().display(),
                        dir::MAX_FILE_BYTES
                    )
                }),
            }
        }
        if listens.len() > 1 {
            self.warn_once("listen".to_owned(), || {
                format!(
                    "processes of group {:?} in {} serve /metrics on different addresses ({:?}): two services may share \
                     the group by mistake; give each its own with MultiProcess::with_group",
                    self.group,
                    self.member.dir().display(),
                    listens.keys().collect::<Vec<_>>()
                )
            });
        }
        // Always in the same order (the archive, then the members by name, this process in
        // its place): floats add up to the same total whichever member serves.
        let mut members: Vec<(&str, Contribution<'_>)> = snapshots
            .iter()
            .map(|(name, alive, snapshot)| {
                (name.as_str(), Contribution { pid: snapshot.pid, alive: *alive, families: &snapshot.families })
            })
            .collect();
        members.push((self.member.name(), Contribution { pid: self.member.pid, alive: true, families: &own }));
        members.sort_by(|a, b| a.0.cmp(b.0));
        let mut contributions: Vec<Contribution<'_>> = Vec::new();
        if let Some(archive) = &reading.archive {
            contributions.push(Contribution { pid: 0, alive: false, families: &archive.families });
        }
        contributions.extend(members.into_iter().map(|(_, contribution)| contribution));
        let (mut families, conflicts) = merge::merge(&contributions, |name| self.gauges.of(name));
        self.never_below_served(&mut families);
        for name in conflicts.types {
            self.warn_once(format!("type:{name}"), || {
                format!("{name} has different types in different processes: kept the first")
            });
        }
        for series in conflicts.layouts {
            self.warn_once(format!("layout:{series}"), || {
                format!("{series} has different buckets in different processes: left out where they differ")
            });
        }
        Ok(families)
    }
}
