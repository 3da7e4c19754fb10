//! Child processes that never outlive the harness: own process group,
//! killed with the parent (PR_SET_PDEATHSIG), and the whole group is
//! terminated on stop or drop.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::ClusterError;
use crate::worker::{descendants, kill_all};

/// A started server process and its process group.
#[derive(Debug)]
pub struct ManagedProcess {
    /// What runs, e.g. `postgres` or `bgd server`, as messages about it name it.
    pub name: String,
    child: Option<Child>,
    pgid: i32,
    log: std::path::PathBuf,
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns from one thread that lives as long as the process: the kernel sends
/// PR_SET_PDEATHSIG when the *thread* that forked the child exits, and test
/// harnesses and thread pools end their threads long before the process.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let thread = std::thread::Builder::new().name("reapi-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                // Not while the worker writes a file it may execute (see `forking`).
                let _ = reply.send(crate::worker::forking(|| cmd.spawn(), |c| Some(c.id())));
            }
        });
        thread.ok().map(|_| Mutex::new(tx))
    });
    let sender = sender.as_ref().ok_or_else(|| std::io::Error::other("cannot start the process-spawning thread"))?;
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("spawner thread did not answer"))?
}

impl ManagedProcess {
    /// Spawns `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &std::path::Path) -> std::io::Result<ManagedProcess> {
        let out = std::fs::File::create(log)?;
        cmd.stdout(Stdio::from(out.try_clone()?)).stderr(Stdio::from(out)).stdin(Stdio::null());
        crate::worker::own_group_killed_with_parent(&mut cmd);
        let child = spawn_from_lasting_thread(cmd)?;
        let pgid = child.id() as i32;
        Ok(ManagedProcess { name: name.to_string(), child: Some(child), pgid, log: log.to_path_buf() })
    }

    /// Exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// "the harness's NAME exited (STATUS)" when it has ended.
    pub fn death(&mut self) -> Option<String> {
        self.exited().map(|status| format!("the harness's {} exited ({status})", self.name))
    }

    /// "NAME exited (STATUS) during start-up:" with its log's last lines,
    /// once it has exited: what an adapter waiting for it to listen says.
    pub fn startup_exit(&mut self) -> Option<ClusterError> {
        let status = self.exited()?;
        Some(ClusterError(format!("{} exited ({status}) during start-up:\n{}", self.name, self.log_tail())))
    }

    /// Its process id (the leader of its process group).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Where the process writes its output.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Last lines of the process log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(8).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM to the group, SIGKILL after a grace period, then to every
    /// descendant that left the group (bwrap started by buildbox-run runs in
    /// a session of its own and would otherwise outlive the server).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Only while the leader is unreaped is its pid still its own.
        let descendants =
            if matches!(child.try_wait(), Ok(None)) { descendants(child.id() as i32) } else { Vec::new() };
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Runner children may linger in the group after the leader exits.
        self.signal_group(libc::SIGKILL);
        kill_all(&descendants);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn signal_group(&self, signal: i32) {
        if self.pgid > 0 {
            // SAFETY: plain syscall on a process group this harness created.
            unsafe { libc::kill(-self.pgid, signal) };
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                kill_all(&descendants(child.id() as i32));
            }
            self.signal_group(libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_kills_descendants_that_left_the_group() {
        let dir = tempfile::tempdir().unwrap();
        // A grandchild in a session of its own, as bwrap under buildbox-run.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 300 & echo $! > grandchild; wait"]).current_dir(dir.path());
        let mut p = ManagedProcess::spawn("sh", cmd, &dir.path().join("log")).unwrap();
        let pidfile = dir.path().join("grandchild");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&pidfile).map(|s| s.trim().is_empty()).unwrap_or(true)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(p.stop());
        // Reaped by init or still a zombie for a moment: either way not running.
        let deadline = Instant::now() + Duration::from_secs(5);
        let running = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| !s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(false))
                .unwrap_or(false)
        };
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(), "grandchild {grandchild} outlived stop()");
    }
}

/// A cluster's run directory and the processes started in it, in start
/// order. Dropped (after a failed or abandoned start, or after a stop) the
/// processes go in reverse order, each group SIGKILLed, then the directory.
#[derive(Debug)]
pub struct RunProcesses {
    /// The run directory (from `cluster::rundir`).
    pub dir: std::path::PathBuf,
    /// In start order.
    pub processes: Vec<ManagedProcess>,
}

impl RunProcesses {
    /// Nothing started yet in `dir`.
    pub fn new(dir: std::path::PathBuf) -> Self {
        RunProcesses { dir, processes: Vec::new() }
    }

    /// Stops the processes in reverse start order, each with SIGTERM and a
    /// short grace (see [`ManagedProcess::stop`]).
    pub async fn stop_all(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop().await;
        }
    }
}

impl Drop for RunProcesses {
    fn drop(&mut self) {
        while let Some(p) = self.processes.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
