//! Scratch directories of started clusters (and of the casd proxy check):
//! one per run, named `reapi-conformance-<kind>-<pid>-<id>`, short enough for
//! the unix sockets created inside, and swept when a killed run left one.
//!
//! A run holds an exclusive `flock` on the `lock` file inside its directory
//! for as long as the directory exists. A sweep removes only directories
//! whose lock it can take: the kernel drops the lock when its holder dies,
//! however it dies, and the test works the same from any PID namespace that
//! shares the filesystem (a pid in the name does not: another namespace's
//! live run may carry a pid that is free here, or taken by someone else).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::ClusterError;

/// Longest unix socket path (sun_path holds 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;
/// Room the deepest socket inside needs: `/postgres/.s.PGSQL.65535`.
const SOCKET_SUFFIX: usize = 25;

const PREFIX: &str = "reapi-conformance-";
/// The file whose lock says the run is alive.
const LOCK: &str = "lock";
/// A directory without a lock file is being created (or is an older
/// version's); it is judged stale only once it is this old and its pid is gone.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// Lock files of this process's run directories, held open (and so locked)
/// until their directory is gone.
static HELD: Mutex<Vec<(PathBuf, std::fs::File)>> = Mutex::new(Vec::new());

fn name(kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{PREFIX}{kind}-{}-{}", std::process::id(), &id[..12])
}

/// Whether every directory from `/` down to `dir` lets other users through
/// (PostgreSQL runs as its own user and must reach its socket directory).
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

/// The temporary directories run directories are made in, in order of preference.
fn bases() -> Vec<PathBuf> {
    let tmpdir = std::env::temp_dir();
    let mut bases = vec![tmpdir.clone()];
    if tmpdir != Path::new("/tmp") {
        bases.push(PathBuf::from("/tmp"));
    }
    bases
}

/// Creates the scratch directory of one run under `$TMPDIR`, or under `/tmp`
/// when `$TMPDIR` is too long for the sockets inside or, with
/// `others_traverse`, closed to other users. Never creates `$TMPDIR` itself.
/// The directory is locked for this process until it is removed.
pub fn create(kind: &str, others_traverse: bool) -> Result<PathBuf, ClusterError> {
    release_removed();
    let mut reasons = Vec::new();
    for base in bases() {
        sweep_stale(&base);
        let dir = base.join(name(kind));
        if !base.is_dir() {
            reasons.push(format!("{} does not exist", base.display()));
        } else if dir.as_os_str().len() + SOCKET_SUFFIX > SOCKET_PATH_MAX {
            reasons.push(format!("{} is too long for unix socket paths inside it", base.display()));
        } else if others_traverse && !traversable_by_others(&base) {
            reasons.push(format!("{} is closed to other users (PostgreSQL runs as its own user)", base.display()));
        } else {
            std::fs::create_dir(&dir).map_err(|e| ClusterError(format!("cannot create {}: {e}", dir.display())))?;
            if others_traverse {
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
            }
            if let Err(e) = hold_lock(&dir) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ClusterError(format!("cannot lock {}: {e}", dir.display())));
            }
            return Ok(dir);
        }
    }
    Err(ClusterError(format!("no usable temporary directory: {}; set TMPDIR to a short directory", reasons.join("; "))))
}

/// Locks `dir/lock` for this process. The file is locked under another name
/// and renamed into place, so a sweep never finds it unlocked.
fn hold_lock(dir: &Path) -> std::io::Result<()> {
    let fresh = dir.join(".lock-new");
    let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&fresh)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::rename(&fresh, dir.join(LOCK))?;
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push((dir.to_path_buf(), file));
    Ok(())
}

/// Closes (and so unlocks) the lock files of directories that are gone.
fn release_removed() {
    HELD.lock().unwrap_or_else(|p| p.into_inner()).retain(|(dir, _)| dir.exists());
}

/// What a sweep makes of a run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its lock is held (by this or another process, in any PID namespace).
    Live,
    /// Nobody holds its lock: its run is over.
    Stale,
    /// No such directory under the temporary directories.
    Absent,
}

/// The state of the run directory called `name` under `$TMPDIR` or `/tmp`.
pub fn state_of(name: &str) -> RunState {
    if !name.starts_with(PREFIX) || name.contains('/') {
        return RunState::Absent;
    }
    for base in bases() {
        let dir = base.join(name);
        if dir.is_dir() {
            return if stale(&dir, name).is_some() { RunState::Stale } else { RunState::Live };
        }
    }
    RunState::Absent
}

/// The pid in a run directory's or project's name (`<kind>-<pid>-<id>` after the prefix).
pub fn pid_in_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    // Kinds may hold dashes, so take the pid from the right.
    let mut parts = rest.rsplitn(3, '-');
    let (Some(_id), Some(pid), Some(_kind)) = (parts.next(), parts.next(), parts.next()) else { return None };
    pid.parse().ok()
}

/// `Some(lock)` when the run directory `dir` is stale: its lock taken (held
/// until the returned file is dropped), or, for a directory without a lock
/// file, `Some(None)` when it is old and its pid is gone.
fn stale(dir: &Path, name: &str) -> Option<Option<std::fs::File>> {
    match std::fs::File::open(dir.join(LOCK)) {
        Ok(file) => {
            // SAFETY: flock on a descriptor this function owns; never blocks.
            let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            taken.then_some(Some(file))
        }
        // Another user's run, say: not ours to judge.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => None,
        Err(_) => {
            let old = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE);
            let gone = pid_in_name(name)
                .is_some_and(|pid| pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists());
            (old && gone).then_some(None)
        }
    }
}

/// Removes run directories whose lock nobody holds: their run ended without
/// cleaning up (a SIGKILL gives no chance to; its processes died with it via
/// PDEATHSIG). Live runs keep their directories, whatever their pid.
pub fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // The lock is held while the directory goes, so two sweeps do not race.
        if let Some(_lock) = stale(&e.path(), &name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn stale_directories_of_dead_runs_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        // pid 0x7fffffff cannot be alive (pid_max is at most 2^22).
        let dead = base.path().join(format!("{PREFIX}local-2147483647-abc"));
        let unlocked = base.path().join(format!("{PREFIX}local-2147483647-def"));
        let mine = base.path().join(name("buildgrid"));
        let other = base.path().join("unrelated-1-2");
        for d in [&dead, &unlocked, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        // A dead run's lock file: nobody holds it.
        std::fs::write(dead.join(LOCK), "").unwrap();
        hold_lock(&mine).unwrap();
        sweep_stale(base.path());
        assert!(!dead.exists(), "a directory whose lock is free goes");
        assert!(mine.exists(), "this process's locked directory stays");
        assert!(other.exists(), "directories of others are not touched");
        assert!(unlocked.exists(), "a fresh directory without a lock file may be one being created");
        assert_eq!(state_of(&mine.file_name().unwrap().to_string_lossy()), RunState::Absent, "not under TMPDIR");
        std::fs::remove_dir_all(&mine).unwrap();
        release_removed();
        assert!(!HELD.lock().unwrap().iter().any(|(d, _)| d == &mine), "lock released with the directory");
    }

    /// A run in another PID namespace sharing /tmp: its pid means nothing
    /// here (it may be free, as simulated), but its lock is held by a live
    /// process — another process, not this one — so its directory stays;
    /// once that process is gone, the next sweep removes it.
    #[test]
    fn a_directory_locked_by_another_live_process_survives_until_it_dies() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join(format!("{PREFIX}buildgrid-2147483647-0123456789ab"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(LOCK), "").unwrap();
        let ready = base.path().join("ready");
        // The shell opens the lock file, locks it with flock(1) from
        // util-linux, and becomes `sleep` still holding it.
        let mut holder = Command::new("sh")
            .args(["-c", "exec 9>>\"$0\" && flock --exclusive 9 && touch \"$1\" && exec sleep 60"])
            .arg(dir.join(LOCK))
            .arg(&ready)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ready.exists(), "the lock holder did not start");
        sweep_stale(base.path());
        assert!(dir.is_dir(), "a live run's directory was swept");
        holder.kill().unwrap();
        holder.wait().unwrap();
        sweep_stale(base.path());
        assert!(!dir.exists(), "a dead run's directory was kept");
    }

    #[test]
    fn created_directories_are_locked_and_live() {
        let dir = create("unit", false).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(state_of(&name), RunState::Live);
        sweep_stale(dir.parent().unwrap());
        assert!(dir.is_dir());
        // Unlocked (as when its process died): stale.
        std::fs::remove_dir_all(&dir).unwrap();
        release_removed();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(LOCK), "").unwrap();
        assert_eq!(state_of(&name), RunState::Stale);
        sweep_stale(dir.parent().unwrap());
        assert!(!dir.exists());
        assert_eq!(state_of(&name), RunState::Absent);
        assert_eq!(pid_in_name(&name), Some(std::process::id()));
    }

    #[test]
    fn names_leave_room_for_sockets_under_tmp() {
        assert!(Path::new("/tmp").join(name("casd-proxy")).as_os_str().len() + SOCKET_SUFFIX <= SOCKET_PATH_MAX);
    }
}
