//! Scratch directories of started clusters (and of the casd proxy check):
//! one per run, named `reapi-conformance-<kind>-<pid>-<id>`, short enough for
//! the unix sockets created inside, and swept when a killed run left one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ClusterError;

/// Longest unix socket path (sun_path holds 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;
/// Room the deepest socket inside needs: `/postgres/.s.PGSQL.65535`.
const SOCKET_SUFFIX: usize = 25;

const PREFIX: &str = "reapi-conformance-";

fn name(kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{PREFIX}{kind}-{}-{}", std::process::id(), &id[..12])
}

/// Whether every directory from `/` down to `dir` lets other users through
/// (PostgreSQL runs as its own user and must reach its socket directory).
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

/// Creates the scratch directory of one run under `$TMPDIR`, or under `/tmp`
/// when `$TMPDIR` is too long for the sockets inside or, with
/// `others_traverse`, closed to other users. Never creates `$TMPDIR` itself.
pub fn create(kind: &str, others_traverse: bool) -> Result<PathBuf, ClusterError> {
    let tmpdir = std::env::temp_dir();
    let mut reasons = Vec::new();
    for base in [tmpdir.as_path(), Path::new("/tmp")] {
        sweep_stale(base);
        let dir = base.join(name(kind));
        if !base.is_dir() {
            reasons.push(format!("{} does not exist", base.display()));
        } else if dir.as_os_str().len() + SOCKET_SUFFIX > SOCKET_PATH_MAX {
            reasons.push(format!("{} is too long for unix socket paths inside it", base.display()));
        } else if others_traverse && !traversable_by_others(base) {
            reasons.push(format!("{} is closed to other users (PostgreSQL runs as its own user)", base.display()));
        } else {
            std::fs::create_dir(&dir).map_err(|e| ClusterError(format!("cannot create {}: {e}", dir.display())))?;
            if others_traverse {
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
            }
            return Ok(dir);
        }
    }
    Err(ClusterError(format!("no usable temporary directory: {}; set TMPDIR to a short directory", reasons.join("; "))))
}

/// Removes directories of runs whose process is gone (a SIGKILL gives no
/// chance to clean up; their processes died with them via PDEATHSIG).
pub fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        // `<kind>-<pid>-<id>`; kinds may hold dashes, so take the pid from the right.
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_id), Some(pid), Some(_kind)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if let Ok(pid) = pid.parse::<u32>() {
            if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_directories_of_dead_runs_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        // pid 0x7fffffff cannot be alive (pid_max is at most 2^22).
        let dead = base.path().join(format!("{PREFIX}local-2147483647-abc"));
        let mine = base.path().join(name("buildgrid"));
        let other = base.path().join("unrelated-1-2");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        sweep_stale(base.path());
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn names_leave_room_for_sockets_under_tmp() {
        assert!(Path::new("/tmp").join(name("casd-proxy")).as_os_str().len() + SOCKET_SUFFIX <= SOCKET_PATH_MAX);
    }
}
