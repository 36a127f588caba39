//! The group directory: who is in the group, who is alive, and the files they publish.
//!
//! `<dir>/<group>/` holds, per process, `<pid>-<instance>.lock` (locked exclusively by its
//! process for its whole life: the kernel releases the lock when the process dies, even by
//! `SIGKILL`, which is how others tell the living from the dead) and `<pid>-<instance>.snap`
//! (its latest snapshot, replaced atomically by rename); `archive.snap` (the counters and
//! histograms of dead processes, merged, with the list of whom it holds); and `.gate`, a
//! lock file that orders joining, reading and compacting.
//!
//! A process that joins while no member is alive starts a new run: it removes what an
//! earlier run left, so that old counts are never summed into the new one.
//!
//! A member counts as alive when its lock is held, when its lock cannot be checked (an
//! error other than a missing file: never fold a member that may be alive), or when it
//! published within the freshness window (its lock file may have been removed by a
//! temporary-file cleaner; each publish also refreshes and, if need be, recreates it).

use std::{
    collections::hash_map::RandomState,
    fs::{self, File, OpenOptions, TryLockError},
    hash::{BuildHasher, Hasher},
    io,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::snapshot::{ReadError, SnapshotFile};

const GATE: &str = ".gate";
const ARCHIVE: &str = "archive.snap";

/// This process, joined to its group: holds its liveness lock until dropped.
#[derive(Debug)]
pub(crate) struct Member {
    dir: PathBuf,
    name: String,
    pub pid: u32,
    pub instance: u64,
    /// Held locked for the life of the member; closing it is dying.
    lock: Mutex<File>,
    /// A member that published this recently is alive, whatever its lock file says.
    fresh_for: Duration,
}

/// One file read back from the group directory.
#[derive(Debug)]
pub(crate) struct Entry {
    /// `<pid>-<instance>`, or `archive`.
    pub name: String,
    pub alive: bool,
    pub snapshot: Result<SnapshotFile, ReadError>,
}

/// What a read of the group directory found.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    pub archive: Option<SnapshotFile>,
    pub members: Vec<Entry>,
}

/// How long to wait for the gate before giving up: a peer that froze while holding it
/// (stopped, or its cgroup frozen) must not hang joins and scrapes for good.
const GATE_WAIT: Duration = Duration::from_secs(3);

/// The gate, locked (shared or exclusive) within [`GATE_WAIT`]. Unlocked when dropped.
fn gate(dir: &Path, exclusive: bool) -> io::Result<File> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(GATE))?;
    let deadline = Instant::now() + GATE_WAIT;
    loop {
        let attempt = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match attempt {
            Ok(()) => return Ok(file),
            Err(TryLockError::Error(error)) => return Err(error),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} stayed locked by another member for {GATE_WAIT:?}", dir.join(GATE).display()),
                ));
            }
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Whether the member `<stem>` may be alive: its lock is held, or cannot be checked, or
/// its lock file is gone (removed by a cleaner, say) but it published within `fresh_for`.
/// Only a lock that can be taken says dead at once.
fn member_alive(dir: &Path, stem: &str, fresh_for: Duration) -> bool {
    match File::open(dir.join(format!("{stem}.lock"))) {
        Ok(file) => match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(TryLockError::WouldBlock | TryLockError::Error(_)) => true,
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            modified_within(&dir.join(format!("{stem}.snap")), fresh_for)
        }
        Err(_) => true,
    }
}

/// Whether `path` was modified within `window`.
fn modified_within(path: &Path, window: Duration) -> bool {
    fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .is_ok_and(|modified| SystemTime::now().duration_since(modified).unwrap_or_default() < window)
}

fn random_instance() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// Creates and locks a member's lock file.
fn own_lock(dir: &Path, name: &str) -> io::Result<File> {
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{name}.lock")))?;
    lock.try_lock().map_err(|error| match error {
        TryLockError::WouldBlock => io::Error::other("own lock file already locked"),
        TryLockError::Error(error) => error,
    })?;
    Ok(lock)
}

/// A group name safe as a directory name.
pub(crate) fn sanitize_group(group: &str) -> String {
    let name: String = group
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with('.') { format!("_{name}") } else { name }
}

impl Member {
    /// Joins `group` under `root` (creating the directories), starting a new run if no
    /// member is alive. Returns whether this started a new run, and what it removed.
    pub fn join(root: &Path, group: &str, fresh_for: Duration) -> io::Result<(Self, Option<usize>)> {
        let dir = root.join(sanitize_group(group));
        fs::create_dir_all(&dir)?;
        let _gate = gate(&dir, true)?;
        Self::join_locked(&dir, fresh_for)
    }

    fn join_locked(dir: &Path, fresh_for: Duration) -> io::Result<(Self, Option<usize>)> {
        let mut stale = Vec::new();
        let mut anyone_alive = false;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else { continue };
            let stem = file_name.strip_suffix(".lock").or_else(|| file_name.strip_suffix(".snap"));
            if let Some(stem) = stem.filter(|stem| *stem != "archive") {
                anyone_alive |= member_alive(dir, stem, fresh_for);
            }
            if file_name.ends_with(".lock") || file_name.ends_with(".snap") || file_name.ends_with(".tmp") {
                stale.push(path);
            }
        }
        let wiped = if anyone_alive {
            None
        } else {
            // A new run: nothing of an earlier one may be summed into it.
            let mut removed = 0;
            for path in stale {
                if fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
            Some(removed)
        };
        let pid = std::process::id();
        let instance = random_instance();
        let name = format!("{pid}-{instance:016x}");
        let lock = Mutex::new(own_lock(dir, &name)?);
        Ok((Self { dir: dir.to_owned(), name, pid, instance, lock, fresh_for }, wiped))
    }

    /// Refreshes this member's lock file (a temporary-file cleaner removes old files), and
    /// recreates and relocks it if it is gone.
    fn refresh_lock(&self) -> io::Result<()> {
        let path = self.dir.join(format!("{}.lock", self.name));
        let mut lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if path.exists() {
            lock.set_modified(SystemTime::now())
        } else {
            *lock = own_lock(&self.dir, &self.name)?;
            Ok(())
        }
    }

    /// The group directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This member's file name stem (`<pid>-<instance>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces this member's snapshot, atomically: a reader sees the old file or the new
    /// one, never a part.
    pub fn publish(&self, snapshot: &SnapshotFile) -> io::Result<()> {
        self.refresh_lock()?;
        let tmp = self.dir.join(format!("{}.tmp", self.name));
        fs::write(&tmp, snapshot.encode_file())?;
        fs::rename(&tmp, self.dir.join(format!("{}.snap", self.name))).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Reads the archive and every member's snapshot, with who is alive, under a shared
    /// lock on the gate (so no compaction moves counts between files meanwhile).
    pub fn read_all(&self) -> io::Result<Reading> {
        let _gate = gate(&self.dir, false)?;
        self.read_locked()
    }

    fn read_locked(&self) -> io::Result<Reading> {
        let mut reading = Reading::default();
        let archive_path = self.dir.join(ARCHIVE);
        match fs::read(&archive_path) {
            Ok(bytes) => match SnapshotFile::decode_file(&bytes) {
                Ok(archive) => {
                    // Read at every scrape, rewritten only when a member dies: keep it
                    // recent for temporary-file cleaners.
                    let _ =
                        File::options().write(true).open(&archive_path).and_then(|f| f.set_modified(SystemTime::now()));
                    reading.archive = Some(archive);
                }
                // The counts of every dead member are in it: serving without them would make
                // totals go down, so refuse (a failed scrape), loudly.
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} cannot be read ({error:?}): it holds the counts of the group's dead processes; \
                             move it away to serve the group without them (its totals then restart lower)",
                            archive_path.display()
                        ),
                    ));
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let absorbed: &[String] = reading.archive.as_ref().map_or(&[], |archive| &archive.absorbed);
        let mut members = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(stem) =
                path.file_name().and_then(|name| name.to_str()).and_then(|name| name.strip_suffix(".snap"))
            else {
                continue;
            };
            if stem == "archive" || absorbed.iter().any(|name| name == stem) {
                continue;
            }
            let snapshot = match fs::read(&path) {
                Ok(bytes) => SnapshotFile::decode_file(&bytes),
                // Gone between listing and reading: it was absorbed (under the exclusive
                // gate, so not during this read) or wiped; nothing to count.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let alive = stem == self.name || member_alive(&self.dir, stem, self.fresh_for);
            members.push(Entry { name: stem.to_owned(), alive, snapshot });
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        reading.members = members;
        Ok(reading)
    }

    /// Folds dead members' snapshots into the archive with `fold(archive, dead)` and removes
    /// their files, under the exclusive gate. Skips (returns 0) if a reader holds the gate.
    pub fn compact(
        &self,
        fold: impl FnOnce(Option<SnapshotFile>, Vec<(String, SnapshotFile)>) -> SnapshotFile,
    ) -> io::Result<usize> {
        let gate = OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join(GATE))?;
        match gate.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(0),
            Err(TryLockError::Error(error)) => return Err(error),
        }
        let result = (|| {
            let reading = self.read_locked()?;
            let dead: Vec<(String, SnapshotFile)> = reading
                .members
                .into_iter()
                .filter(|entry| !entry.alive)
                .filter_map(|entry| entry.snapshot.ok().map(|snapshot| (entry.name, snapshot)))
                .collect();
            if dead.is_empty() {
                return Ok(0);
            }
            let names: Vec<String> = dead.iter().map(|(name, _)| name.clone()).collect();
            // Members absorbed earlier whose files are gone can never be read again: keep
            // the list to those still on disk, so that it does not grow with every restart.
            let archive = reading.archive.map(|mut archive| {
                archive.absorbed.retain(|name| self.dir.join(format!("{name}.snap")).exists());
                archive
            });
            let archive = fold(archive, dead);
            let tmp = self.dir.join("archive.tmp");
            fs::write(&tmp, archive.encode_file())?;
            fs::rename(&tmp, self.dir.join(ARCHIVE))?;
            // The archive now lists them as absorbed: removing their files is only tidying.
            for name in &names {
                let _ = fs::remove_file(self.dir.join(format!("{name}.snap")));
                let _ = fs::remove_file(self.dir.join(format!("{name}.lock")));
            }
            Ok(names.len())
        })();
        let _ = gate.unlock();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tonic-metrics-dir-{tag}-{}-{}", std::process::id(), random_instance()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn snapshot(member: &Member) -> SnapshotFile {
        SnapshotFile { group: "g".into(), pid: member.pid, instance: member.instance, ..Default::default() }
    }

    #[test]
    fn members_see_each_other_alive_and_the_dead_as_dead() {
        let root = tempdir("alive");
        let (a, wiped) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        assert_eq!(wiped, Some(0), "the first member starts a run");
        let (b, wiped) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        assert_eq!(wiped, None, "a member joins a live run");
        a.publish(&snapshot(&a)).unwrap();
        b.publish(&snapshot(&b)).unwrap();
        let alive = |reading: &Reading| reading.members.iter().map(|e| (e.name.clone(), e.alive)).collect::<Vec<_>>();
        let mut expected = vec![(a.name.clone(), true), (b.name.clone(), true)];
        expected.sort();
        assert_eq!(alive(&a.read_all().unwrap()), expected);
        let b_name = b.name.clone();
        drop(b); // dying releases the lock
        let reading = a.read_all().unwrap();
        assert!(reading.members.iter().any(|e| e.name == b_name && !e.alive));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_run_with_no_one_alive_is_wiped_at_the_next_join() {
        let root = tempdir("wipe");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        a.publish(&snapshot(&a)).unwrap();
        drop(a);
        let (b, wiped) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        assert_eq!(wiped, Some(2), "the dead run's snapshot and lock file");
        assert!(b.read_all().unwrap().members.is_empty());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn compaction_moves_the_dead_into_the_archive_exactly_once() {
        let root = tempdir("compact");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        let (b, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        a.publish(&snapshot(&a)).unwrap();
        b.publish(&snapshot(&b)).unwrap();
        let b_name = b.name.clone();
        drop(b);
        let folded = a
            .compact(|archive, dead| {
                assert!(archive.is_none());
                assert_eq!(dead.len(), 1);
                SnapshotFile { absorbed: dead.into_iter().map(|(name, _)| name).collect(), ..Default::default() }
            })
            .unwrap();
        assert_eq!(folded, 1);
        let reading = a.read_all().unwrap();
        assert_eq!(reading.archive.unwrap().absorbed, [b_name]);
        assert_eq!(reading.members.len(), 1);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_member_whose_lock_file_a_cleaner_removed_stays_alive_and_gets_it_back() {
        let root = tempdir("cleaner");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        let (b, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        b.publish(&snapshot(&b)).unwrap();
        fs::remove_file(b.dir().join(format!("{}.lock", b.name()))).unwrap();
        let alive = |reading: Reading| reading.members.iter().find(|e| e.name == b.name()).map(|e| e.alive);
        assert_eq!(alive(a.read_all().unwrap()), Some(true), "published within the window: alive");
        assert_eq!(a.compact(|_, _| unreachable!("nothing is dead")).unwrap(), 0);
        b.publish(&snapshot(&b)).unwrap();
        assert!(b.dir().join(format!("{}.lock", b.name())).exists(), "the next publish recreates it");
        assert_eq!(alive(a.read_all().unwrap()), Some(true));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unreadable_archive_fails_the_read_instead_of_serving_less() {
        let root = tempdir("archive");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        fs::write(a.dir().join(ARCHIVE), b"TMMP\x01\0\0\0\xff\xff garbage").unwrap();
        let error = a.read_all().unwrap_err();
        assert!(error.to_string().contains("dead processes"), "{error}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn group_names_are_made_safe() {
        assert_eq!(sanitize_group("my-svc.v2"), "my-svc.v2");
        assert_eq!(sanitize_group("../etc"), "_.._etc");
        assert_eq!(sanitize_group(""), "_");
        assert_eq!(sanitize_group("a/b c"), "a_b_c");
    }
}
