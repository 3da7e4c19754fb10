//! Processes started for a lease: own process group, killed with the worker
//! (PR_SET_PDEATHSIG), and the whole group killed when the guard is dropped,
//! which is what happens when a lease is cancelled (its task is aborted).
//!
//! PR_SET_PDEATHSIG fires when the *thread* that forked exits. Lease tasks
//! spawn from tokio's runtime threads, which live as long as the runtime —
//! and when the runtime goes, the tasks are dropped and their guards kill the
//! groups anyway.

use std::process::ExitStatus;
use std::sync::RwLock;

use tokio::process::{Child, Command};

/// Forks take turns with writes of files that may be executed.
///
/// A forked child holds a copy of every descriptor of the process until it
/// execs (O_CLOEXEC closes them only then). If one lease forks while another
/// is writing its input root, the child briefly holds that file open for
/// writing; when the other lease then execs the file it has just closed, the
/// kernel refuses with ETXTBSY ("Text file busy") and the command "exits"
/// 127. Writers of executables hold this lock shared while their descriptor
/// is open; every spawn of this crate and of the harness holds it exclusively
/// from fork to exec, so no child can hold such a descriptor at exec time.
static FORK_LOCK: RwLock<()> = RwLock::new(());

/// Children this process spawned itself in process groups of their own
/// (their owners wait for them); see [`reap_orphans`].
static OWN_CHILDREN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Runs `spawn` with no executable being written meanwhile (see
/// `FORK_LOCK`), and records the child's pid (`pid` of the result) so that
/// [`reap_orphans`] leaves it to its owner. Every spawn into a process group
/// of its own goes through here.
pub fn forking<C>(
    spawn: impl FnOnce() -> std::io::Result<C>,
    pid: impl FnOnce(&C) -> Option<u32>,
) -> std::io::Result<C> {
    let _turn = FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
    let child = spawn()?;
    if let Some(pid) = pid(&child) {
        OWN_CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(pid as i32);
    }
    Ok(child)
}

/// A turn to write an executable file: hold it while the file's descriptor
/// is open (see [`forking`]), for writers that cannot use [`write_file`].
pub fn executable_write_turn() -> std::sync::RwLockReadGuard<'static, ()> {
    FORK_LOCK.read().unwrap_or_else(|p| p.into_inner())
}

/// Writes `data` to a new file at `path` with `mode`, not overlapping a fork
/// when the file is executable (see [`forking`]).
pub fn write_file(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _turn = (mode & 0o111 != 0).then(|| FORK_LOCK.read().unwrap_or_else(|p| p.into_inner()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    file.write_all(data)?;
    // The mode given to open() is masked by the umask: set it exactly.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    drop(file);
    Ok(())
}

/// A running child and its process group; dropping it kills the group.
pub struct GroupChild {
    child: Child,
    pgid: i32,
    /// Once the leader is reaped its pid may be reused: no more descendant walks.
    reaped: bool,
}

/// Makes the child `cmd` starts the leader of a process group of its own (one
/// kill reaches everything it starts) that gets SIGKILL when the thread that
/// forked it exits (PR_SET_PDEATHSIG). The one place where the harness's
/// servers, this worker's commands and the defect server's sandboxes are
/// set up so; spawn it through [`forking`]. The signal follows the forking
/// *thread*: spawn from a thread that lives as long as the child should
/// (tokio's runtime workers, or the harness's lasting spawner thread), never
/// from a short-lived one such as a blocking-pool thread.
pub fn own_group_killed_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Starts `cmd` in a new process group that dies with this process.
pub fn spawn(mut cmd: Command) -> std::io::Result<GroupChild> {
    own_group_killed_with_parent(cmd.as_std_mut());
    cmd.kill_on_drop(true);
    let child = forking(|| cmd.spawn(), Child::id)?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok(GroupChild { child, pgid, reaped: false })
}

impl GroupChild {
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.reaped = status.is_ok();
        status
    }

    /// Kills every process of the group (the leader and what it started),
    /// and descendants that left it (bwrap under buildbox-run has its own session).
    pub fn kill_group(&self) {
        if self.pgid > 0 {
            if !self.reaped {
                kill_all(&descendants(self.pgid));
            }
            // SAFETY: plain syscall on a process group this guard created.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Every process below `root`, children before grandchildren, read from
/// /proc at the time of the call.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILL to each pid (those already gone are ignored).
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        if pid > 1 {
            // SAFETY: plain syscall; these are descendants this harness started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Makes this process the reaper of every orphan below it: a process whose
/// parent died (bwrap under a buildbox-run or buildbox-casd that was killed)
/// is re-parented here instead of to init, where nobody would stop it.
/// Orphans that exit are reaped by a thread of their own (see
/// [`reap_orphans`]): nothing else waits for them, and bwrap leaves one per
/// action, so a long `serve` would otherwise gather zombies until it ends.
pub fn adopt_orphans() {
    // SAFETY: prctl with an integer argument only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    static REAPER: std::sync::Once = std::sync::Once::new();
    REAPER.call_once(|| {
        let _ = std::thread::Builder::new().name("reapi-reaper".into()).spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            reap_orphans();
        });
    });
}

/// Reaps the exited children of this process that nobody else will wait
/// for, and returns how many. Those are adopted orphans: children neither
/// spawned through [`forking`] nor in this process's own process group
/// (where `Command::output()` and the like put theirs, and wait for them).
pub fn reap_orphans() -> usize {
    // No spawn between the scan and the reaping: a fresh child is recorded first.
    let _turn = FORK_LOCK.read().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id() as i32;
    // SAFETY: getpgrp has no preconditions.
    let my_group = unsafe { libc::getpgrp() };
    let mut own = OWN_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let mut children = Vec::new();
    let mut reaped = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp …`
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
        let [state, ppid, pgrp] = fields[..] else { continue };
        if ppid.parse::<i32>().ok() != Some(me) {
            continue;
        }
        children.push(pid);
        if state == "Z" && pgrp.parse::<i32>().ok() != Some(my_group) && !own.contains(&pid) {
            // SAFETY: reaps this one exited child, without blocking.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    // Children their owners have reaped are no longer ours: forget them.
    own.retain(|pid| children.contains(pid));
    reaped
}

/// Kills every process still below this one and reaps it. For the end of a
/// command, when everything it started has been stopped and anything left is
/// a leftover (with [`adopt_orphans`], orphans included).
pub fn kill_leftovers() {
    let leftovers = descendants(std::process::id() as i32);
    kill_all(&leftovers);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !leftovers.is_empty() && std::time::Instant::now() < deadline {
        // SAFETY: reaping any child of this process, without blocking.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            -1 => break, // no children left
            0 => std::thread::sleep(std::time::Duration::from_millis(10)),
            _ => {}
        }
    }
}

/// A scratch directory removed when dropped (also when its lease is cancelled).
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// A new, uniquely named directory under `parent`.
    pub fn create(parent: &std::path::Path) -> std::io::Result<ScratchDir> {
        let dir = parent.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            // An action may leave read-only directories behind: open them up and retry.
            make_writable(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.is_dir() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

/// `exit_code` for the ActionResult: the code, or 128 + signal like a shell.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases staging executables while other leases fork: each writes a
    /// script and runs it at once. Without [`FORK_LOCK`] a child forked by
    /// another thread may still hold the script open for writing when it is
    /// executed, and the spawn fails with ETXTBSY (seen as exit 127).
    #[test]
    fn executables_written_while_others_fork_are_never_busy() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let failures: Vec<String> = rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..4 {
                let dir = dir.path().to_path_buf();
                tasks.push(tokio::spawn(async move {
                    let mut failures = Vec::new();
                    for i in 0..150 {
                        let path = dir.join(format!("run-{t}-{i}"));
                        // A larger file keeps the descriptor open longer, as a probe does.
                        let mut script = b"#!/bin/sh\nexit 0\n".to_vec();
                        script.extend(std::iter::repeat_n(b'#', 256 * 1024));
                        write_file(&path, &script, 0o755).unwrap();
                        match spawn(Command::new(&path)) {
                            Ok(mut child) => {
                                let _ = child.wait().await;
                            }
                            Err(e) => failures.push(format!("{}: {e}", path.display())),
                        }
                    }
                    failures
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        });
        assert!(failures.is_empty(), "{} spawns failed, e.g. {}", failures.len(), failures[0]);
    }
}
