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
    collections::{BTreeSet, hash_map::RandomState},
    fs::{self, File, OpenOptions, TryLockError},
    hash::{BuildHasher, Hasher},
    io::{self, Read as _},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::snapshot::{ReadError, SnapshotFile};

const GATE: &str = ".gate";
const ARCHIVE: &str = "archive.snap";

/// The largest snapshot (or archive) written or read back. A snapshot takes some tens of
/// bytes per series, so this is far beyond any process' share; it bounds what a stray or
/// damaged file in the directory can make every scrape allocate.
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// This process, joined to its group: holds its liveness lock until dropped.
#[derive(Debug)]
pub(crate) struct Member {
    dir: PathBuf,
    name: String,
    /// The group's name as given (the directory's name is made safe from it): only its
    /// members' snapshots are folded into its archive.
    group: String,
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

/// Creates and locks a member's lock file. Call under the exclusive gate: between the
/// creation and the lock, anyone probing it would find it unlocked and take the member for
/// dead.
fn own_lock(dir: &Path, name: &str) -> io::Result<File> {
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{name}.lock")))?;
    lock.try_lock().map_err(|error| match error {
        TryLockError::WouldBlock => io::Error::other("own lock file already locked"),
        TryLockError::Error(error) => error,
    })?;
    Ok(lock)
}

/// Whether `path` is still the file `held` has open. A cleaner may have removed it, or
/// removed it and something created another at its name: either way the lock on `held`
/// no longer says anything to the others.
#[cfg(unix)]
fn is_held_file(path: &Path, held: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let on_disk = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let held = held.metadata()?;
    Ok((on_disk.dev(), on_disk.ino()) == (held.dev(), held.ino()))
}

/// Elsewhere there is no stable file identity to compare: a file at the path is taken to
/// be the one held.
#[cfg(not(unix))]
fn is_held_file(path: &Path, _held: &File) -> io::Result<bool> {
    path.try_exists()
}

/// The contents of `path`, or `None` if it is larger than [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Ok(None);
    }
    // The size checked above can change before the read (another writer): bound the read
    // itself too.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_FILE_BYTES).then_some(bytes))
}

/// The error for a file to write larger than [`MAX_FILE_BYTES`]: readers would refuse it.
fn too_large(what: &str, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} would take {len} bytes, over the {MAX_FILE_BYTES}-byte limit of a group file"),
    )
}

/// A small stable hash (FNV-1a): the same name gives the same directory across builds and
/// Rust versions, which `std`'s hashers do not promise.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A group name safe as a directory name. Names that had to change get a hash of the
/// original, so that two groups (`a/b` and `a b`, say) never share a directory, and with
/// it an archive.
pub(crate) fn sanitize_group(group: &str) -> String {
    let name: String = group
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect();
    let name = if name.is_empty() || name.starts_with('.') { format!("_{name}") } else { name };
    if name == group { name } else { format!("{name}-{:016x}", stable_hash(group.as_bytes())) }
}

impl Member {
    /// Joins `group` under `root` (creating the directories), starting a new run if no
    /// member is alive. Returns whether this started a new run, and what it removed.
    pub fn join(root: &Path, group: &str, fresh_for: Duration) -> io::Result<(Self, Option<usize>)> {
        let dir = root.join(sanitize_group(group));
        fs::create_dir_all(&dir)?;
        let _gate = gate(&dir, true)?;
        Self::join_locked(&dir, group, fresh_for)
    }

    fn join_locked(dir: &Path, group: &str, fresh_for: Duration) -> io::Result<(Self, Option<usize>)> {
        let mut stale = Vec::new();
        let mut stems = BTreeSet::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else { continue };
            let stem = file_name.strip_suffix(".lock").or_else(|| file_name.strip_suffix(".snap"));
            if let Some(stem) = stem.filter(|stem| *stem != "archive") {
                stems.insert(stem.to_owned());
            }
            if file_name.ends_with(".lock") || file_name.ends_with(".snap") || file_name.ends_with(".tmp") {
                stale.push(path);
            }
        }
        let anyone_alive = stems.iter().any(|stem| member_alive(dir, stem, fresh_for));
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
        Ok((Self { dir: dir.to_owned(), name, group: group.to_owned(), pid, instance, lock, fresh_for }, wiped))
    }

    /// Refreshes this member's lock file (a temporary-file cleaner removes old files), and
    /// recreates and relocks it if it is gone or is no longer the file this member holds.
    fn refresh_lock(&self) -> io::Result<()> {
        let path = self.dir.join(format!("{}.lock", self.name));
        let mut lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if is_held_file(&path, &lock)? {
            return lock.set_modified(SystemTime::now());
        }
        let _gate = gate(&self.dir, true)?;
        *lock = own_lock(&self.dir, &self.name)?;
        // A file found at the name (not created) keeps its old time: make it fresh.
        lock.set_modified(SystemTime::now())
    }

    /// Leaves the group as if this process had never joined it: removes its files, then
    /// releases its lock. Best effort: what cannot be removed is folded or swept later.
    pub fn leave(self) {
        // Under the gate, so that no reader sees the snapshot and then, its lock gone, takes
        // this member for dead and folds it. Without the gate, removing is still better than
        // leaving the files.
        let _gate = gate(&self.dir, true);
        for extension in ["snap", "tmp", "lock"] {
            let _ = fs::remove_file(self.dir.join(format!("{}.{extension}", self.name)));
        }
        // Dropping `self` closes the lock file, releasing the lock.
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
        let bytes = snapshot.encode_file();
        // The others would read it as corrupt and leave all of this member's counts out:
        // keep the last snapshot they can read instead.
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large("this process' snapshot", bytes.len()));
        }
        self.refresh_lock()?;
        let tmp = self.dir.join(format!("{}.tmp", self.name));
        fs::write(&tmp, bytes)?;
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
        match read_capped(&archive_path) {
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is larger than {MAX_FILE_BYTES} bytes, too large for an archive of this crate: it holds \
                         the counts of the group's dead processes; move it away to serve the group without them \
                         (its totals then restart lower)",
                        archive_path.display()
                    ),
                ));
            }
            Ok(Some(bytes)) => match SnapshotFile::decode_file(&bytes) {
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
            let snapshot = match read_capped(&path) {
                Ok(Some(bytes)) => SnapshotFile::decode_file(&bytes),
                Ok(None) => Err(ReadError::Corrupt),
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

    /// Folds dead members' snapshots of this group into the archive with `fold(archive,
    /// dead)` and removes their files, under the exclusive gate; also removes the files of
    /// members that died before their first publish. Skips (returns 0) if a reader holds the
    /// gate.
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
            // Only tidying: a failure here must not stop the folding.
            let _ = self.sweep_orphans();
            let reading = self.read_locked()?;
            let dead: Vec<(String, SnapshotFile)> = reading
                .members
                .into_iter()
                .filter(|entry| !entry.alive)
                .filter_map(|entry| entry.snapshot.ok().map(|snapshot| (entry.name, snapshot)))
                // Another group's counts (a file copied in, say) are not this group's to
                // keep: its files stay as they are, out of the sum like at every read.
                .filter(|(_, snapshot)| snapshot.group == self.group)
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
            let bytes = fold(archive, dead).encode_file();
            // An archive no read accepts would fail every scrape from now on; unfolded, the
            // dead members' snapshots are still summed one by one.
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(too_large("the archive", bytes.len()));
            }
            let tmp = self.dir.join("archive.tmp");
            fs::write(&tmp, bytes)?;
            fs::rename(&tmp, self.dir.join(ARCHIVE))?;
            // The archive now lists them as absorbed: removing their files is only tidying.
            for name in &names {
                for extension in ["snap", "tmp", "lock"] {
                    let _ = fs::remove_file(self.dir.join(format!("{name}.{extension}")));
                }
            }
            Ok(names.len())
        })();
        let _ = gate.unlock();
        result
    }

    /// Removes the lock and temporary files of members that died before their first
    /// publish: with no snapshot, no compaction ever folds them. Call under the exclusive
    /// gate, under which every lock file is created and locked at once, so that an
    /// unlocked one is a dead member's.
    fn sweep_orphans(&self) -> io::Result<()> {
        let mut unpublished = BTreeSet::new();
        let mut published = BTreeSet::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else { continue };
            if let Some(stem) = file_name.strip_suffix(".snap") {
                published.insert(stem.to_owned());
            } else if let Some(stem) = file_name.strip_suffix(".lock").or_else(|| file_name.strip_suffix(".tmp")) {
                unpublished.insert(stem.to_owned());
            }
        }
        for stem in unpublished.difference(&published) {
            if stem == "archive" || *stem == self.name {
                continue;
            }
            let tmp = self.dir.join(format!("{stem}.tmp"));
            // A recent temporary file may be a live member's first publish whose lock file
            // a cleaner just removed.
            if member_alive(&self.dir, stem, self.fresh_for) || modified_within(&tmp, self.fresh_for) {
                continue;
            }
            let _ = fs::remove_file(tmp);
            let _ = fs::remove_file(self.dir.join(format!("{stem}.lock")));
        }
        Ok(())
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
    fn group_names_are_made_safe_and_never_share_a_directory() {
        assert_eq!(sanitize_group("my-svc.v2"), "my-svc.v2");
        for (group, safe) in [("../etc", "_.._etc-"), ("", "_-"), ("a/b c", "a_b_c-"), (".hidden", "_.hidden-")] {
            let name = sanitize_group(group);
            assert!(name.starts_with(safe) && name.len() == safe.len() + 16, "{group:?} -> {name:?}");
            assert_eq!(sanitize_group(group), name, "the same name every time");
        }
        let names: BTreeSet<String> = ["a/b", "a b", "a_b", "a:b"].into_iter().map(sanitize_group).collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    /// A member `stem` that died after publishing `snapshot`: an unlocked lock file and
    /// its snapshot.
    fn dead_member(dir: &Path, stem: &str, snapshot: &SnapshotFile) {
        fs::write(dir.join(format!("{stem}.lock")), b"").unwrap();
        fs::write(dir.join(format!("{stem}.snap")), snapshot.encode_file()).unwrap();
    }

    #[test]
    fn compaction_folds_only_this_groups_dead() {
        let root = tempdir("foreign");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        a.publish(&snapshot(&a)).unwrap();
        let ours = SnapshotFile { group: "g".into(), pid: 1, ..Default::default() };
        let theirs = SnapshotFile { group: "other".into(), pid: 2, ..Default::default() };
        dead_member(a.dir(), "1-0000000000000001", &ours);
        dead_member(a.dir(), "2-0000000000000002", &theirs);
        let folded = a
            .compact(|_, dead| {
                assert_eq!(dead.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["1-0000000000000001"]);
                SnapshotFile { absorbed: dead.into_iter().map(|(name, _)| name).collect(), ..Default::default() }
            })
            .unwrap();
        assert_eq!(folded, 1);
        assert!(!a.dir().join("1-0000000000000001.snap").exists());
        for extension in ["lock", "snap"] {
            assert!(a.dir().join(format!("2-0000000000000002.{extension}")).exists(), "another group's files stay");
        }
        assert_eq!(a.compact(|_, _| unreachable!("nothing of this group is dead")).unwrap(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_lock_file_replaced_at_its_name_is_taken_back_at_the_next_publish() {
        let root = tempdir("replaced");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        let (b, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        b.publish(&snapshot(&b)).unwrap();
        let path = b.dir().join(format!("{}.lock", b.name()));
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"").unwrap();
        b.publish(&snapshot(&b)).unwrap();
        let found = File::open(&path).unwrap();
        assert!(matches!(found.try_lock(), Err(TryLockError::WouldBlock)), "the file at the name is locked again");
        assert_eq!(a.compact(|_, _| unreachable!("nothing is dead")).unwrap(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn oversized_files_are_refused_not_read() {
        let root = tempdir("oversized");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        a.publish(&snapshot(&a)).unwrap();
        // Sparse: as large as asked without writing it.
        let big = |path: PathBuf| File::create(path).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        big(a.dir().join("1-0000000000000001.snap"));
        let reading = a.read_all().unwrap();
        let entry = reading.members.iter().find(|e| e.name == "1-0000000000000001").unwrap();
        assert_eq!(entry.snapshot.as_ref().err(), Some(&ReadError::Corrupt));
        big(a.dir().join(ARCHIVE));
        let error = a.read_all().unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_files_of_a_member_dead_before_its_first_publish_are_swept() {
        let root = tempdir("orphans");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        let (b, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        a.publish(&snapshot(&a)).unwrap();
        // Dead before publishing: an unlocked lock file, a temporary file left by a publish
        // cut short (old), and nothing else.
        fs::write(a.dir().join("1-0000000000000001.lock"), b"").unwrap();
        let tmp = File::create(a.dir().join("1-0000000000000001.tmp")).unwrap();
        tmp.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
        // Dead after publishing: folded, and its temporary file goes with it.
        dead_member(a.dir(), "2-0000000000000002", &SnapshotFile { group: "g".into(), ..Default::default() });
        fs::write(a.dir().join("2-0000000000000002.tmp"), b"").unwrap();
        assert_eq!(a.compact(|_, _| SnapshotFile::default()).unwrap(), 1);
        let mut left: Vec<String> =
            fs::read_dir(a.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected = vec![
            GATE.to_owned(),
            ARCHIVE.to_owned(),
            format!("{}.lock", a.name()),
            format!("{}.snap", a.name()),
            format!("{}.lock", b.name()),
        ];
        expected.sort();
        assert_eq!(left, expected, "b is alive and has not published yet: its lock file stays");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn leaving_removes_every_file_of_the_member() {
        let root = tempdir("leave");
        let (a, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        let (b, _) = Member::join(&root, "g", Duration::from_secs(3)).unwrap();
        b.publish(&snapshot(&b)).unwrap();
        fs::write(b.dir().join(format!("{}.tmp", b.name())), b"").unwrap();
        let b_name = b.name.clone();
        b.leave();
        for extension in ["lock", "snap", "tmp"] {
            assert!(!a.dir().join(format!("{b_name}.{extension}")).exists(), "{extension}");
        }
        assert!(a.read_all().unwrap().members.iter().all(|e| e.name != b_name));
        assert_eq!(a.compact(|_, _| unreachable!("no one died")).unwrap(), 0);
        fs::remove_dir_all(root).unwrap();
    }
}
