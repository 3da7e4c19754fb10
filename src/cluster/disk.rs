//! The harness's own disk running out under a cluster it started: writes of
//! the cluster's processes fail (staging inputs, storing outputs), and what
//! the checks then see is the harness's trouble, never the server's finding.

use std::path::Path;

/// Free space below which the cluster's directory counts as full: a staged
/// input root with the probe takes a few MiB.
const NEARLY_FULL_BYTES: u64 = 8 * 1024 * 1024;

/// What the processes say when a write fails for want of space.
const OUT_OF_SPACE: &[&str] = &["No space left on device", "Disk quota exceeded", "ENOSPC", "EDQUOT"];

/// How much of each log is searched, from its end.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// "the harness's disk is full under DIR (…)" when the filesystem holding
/// `dir` is nearly full or one of `logs` reports a failed write for want of
/// space.
pub fn trouble(dir: &Path, logs: &[&Path]) -> Option<String> {
    if let Some(free) = free_bytes(dir) {
        if free < NEARLY_FULL_BYTES {
            return Some(format!(
                "the harness's disk has too little room under {} ({} KiB free)",
                dir.display(),
                free / 1024
            ));
        }
    }
    for log in logs {
        let tail = read_tail(log);
        if let Some(said) = OUT_OF_SPACE.iter().find(|t| tail.contains(*t)) {
            return Some(format!("a process of the harness's cluster ran out of disk space (its log: \"{said}\")"));
        }
    }
    None
}

/// Why no finding of a run can stand on a cluster whose processes are
/// `processes` and whose run directory is `dir`: the first process that
/// exited on its own, else the disk running out ([`trouble`], their logs
/// read). The one answer every adapter's `Cluster::died` gives.
pub fn harness_fault<'a>(
    dir: &Path,
    processes: impl IntoIterator<Item = &'a mut super::ManagedProcess>,
) -> Option<String> {
    let mut processes: Vec<&mut super::ManagedProcess> = processes.into_iter().collect();
    if let Some(death) = processes.iter_mut().find_map(|p| p.death()) {
        return Some(death);
    }
    let logs: Vec<&Path> = processes.iter().map(|p| p.log_path()).collect();
    trouble(dir, &logs)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated path for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn read_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_space_log_line_is_named_and_a_roomy_disk_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = dir.path().join("quiet.log");
        let full = dir.path().join("full.log");
        std::fs::write(&quiet, "all well\n").unwrap();
        std::fs::write(&full, "error: write /cache/x: No space left on device\n").unwrap();
        assert_eq!(trouble(dir.path(), &[&quiet]), None);
        assert!(trouble(dir.path(), &[&quiet, &full]).unwrap().contains("ran out of disk space"));
    }
}
