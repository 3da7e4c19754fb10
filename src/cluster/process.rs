//! Child processes that never outlive the harness: own process group,
//! killed with the parent (PR_SET_PDEATHSIG), and the whole group is
//! terminated on stop or drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A started server process and its process group.
#[derive(Debug)]
pub struct ManagedProcess {
    pub name: String,
    child: Option<Child>,
    pgid: i32,
    log: std::path::PathBuf,
}

impl ManagedProcess {
    /// Spawns `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &std::path::Path) -> std::io::Result<ManagedProcess> {
        let out = std::fs::File::create(log)?;
        cmd.stdout(Stdio::from(out.try_clone()?)).stderr(Stdio::from(out)).stdin(Stdio::null());
        cmd.process_group(0).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(ManagedProcess { name: name.to_string(), child: Some(child), pgid, log: log.to_path_buf() })
    }

    /// Exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Last lines of the process log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(8).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM to the group, SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if self.pgid > 0 {
            // SAFETY: plain syscall on a process group we created.
            unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if self.pgid > 0 {
            // Runner children may linger in the group after the leader exits.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if self.child.is_some() && self.pgid > 0 {
            // SAFETY: as in `stop`; used when a run is torn down without `stop`.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}
