//! `--cluster buildbarn[:chroot|:plain]`: Buildbarn's own programs, which the
//! user has (Buildbarn's container images or their own Bazel build; the
//! harness never builds or downloads them).
//!
//! Topology, all under one run directory and on unix sockets only:
//! `bb_storage` (CAS, action cache, and the clients' frontend forwarding
//! Execute) → `bb_scheduler` (platform read from the Action) ← `bb_worker`
//! (hardlinking build directory) → `bb_runner` (with or without
//! `chrootIntoInputRoot`). The configuration is `compose/buildbarn/*.jsonnet`,
//! the same files `compose/buildbarn.yml` mounts; what differs comes in
//! through environment variables (Buildbarn's programs give every variable
//! to their Jsonnet as `std.extVar`). docs/buildbarn.md has the details.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Cluster, ClusterError, ManagedProcess, RunProcesses};
use crate::connection::ConnectOptions;

/// The programs, in start order.
pub const PROGRAMS: [&str; 4] = ["bb_storage", "bb_scheduler", "bb_runner", "bb_worker"];

/// The configuration: file name in the run directory and its text.
const CONFIG: [(&str, &str); 5] = [
    ("common.libsonnet", include_str!("../../compose/buildbarn/common.libsonnet")),
    ("storage.jsonnet", include_str!("../../compose/buildbarn/storage.jsonnet")),
    ("scheduler.jsonnet", include_str!("../../compose/buildbarn/scheduler.jsonnet")),
    ("runner.jsonnet", include_str!("../../compose/buildbarn/runner.jsonnet")),
    ("worker.jsonnet", include_str!("../../compose/buildbarn/worker.jsonnet")),
];

/// bb_scheduler's `platformQueueWithNoWorkersTimeout` (scheduler.jsonnet):
/// for this long after its start it answers a platform no worker has with
/// UNAVAILABLE instead of FAILED_PRECONDITION, so the cluster is ready only
/// once it has passed.
const NO_WORKERS_GRACE: Duration = Duration::from_secs(2);

/// How users get the programs, for the one line saying they are missing.
const HOW_TO_GET: &str = "Buildbarn publishes no release binaries: take them from its container images \
     (ghcr.io/buildbarn/bb-storage, bb-scheduler, bb-worker, bb-runner-installer) or build them with Bazel \
     from github.com/buildbarn/bb-storage and bb-remote-execution, then pass --buildbarn-dir DIR \
     (or REAPI_BUILDBARN_DIR) or put them on PATH";

/// One program found: where and its sha256 (recorded in every report).
#[derive(Clone, Debug)]
pub struct Program {
    /// Its name, one of [`PROGRAMS`].
    pub name: &'static str,
    /// Where it is, symlinks resolved.
    pub path: PathBuf,
    /// SHA-256 of the executable, in hex.
    pub sha256: String,
}

/// Finds the four programs in `dir`, else in `REAPI_BUILDBARN_DIR` (also for
/// `serve` and `cargo test`, which take no `--buildbarn-dir`), else on PATH;
/// one line naming the missing ones (and how to get them) when any is missing.
pub fn find_programs(dir: Option<&Path>) -> Result<Vec<Program>, String> {
    use sha2::{Digest, Sha256};
    let from_env = std::env::var_os("REAPI_BUILDBARN_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    let dir = dir.or(from_env.as_deref());
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in PROGRAMS {
        let path = match dir {
            Some(d) => Some(d.join(name)).filter(|p| p.is_file()),
            None => super::provision::which(name),
        };
        match path {
            Some(path) => {
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                found.push(Program { name, path, sha256: hex::encode(Sha256::digest(&data)) });
            }
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let place = match dir {
        Some(d) => format!("in {}", d.display()),
        None => "on PATH".into(),
    };
    Err(format!("Buildbarn's {} not found {place}; {HOW_TO_GET}", missing.join(", ")))
}

/// Settings of one Buildbarn cluster.
#[derive(Clone, Debug)]
pub struct BuildbarnOptions {
    /// The four programs, in [`PROGRAMS`] order.
    pub programs: Vec<Program>,
    /// bb_runner's `chrootIntoInputRoot` (and the worker's `/dev` nodes).
    pub chroot: bool,
    /// Actions the worker runs at once.
    pub jobs: usize,
    /// The ISA the worker advertises, in BuildStream's naming.
    pub isa: String,
    /// The instance name every request of the harness names (bb_storage accepts any).
    pub instance: String,
}

/// The run directory and, in start order, storage, scheduler, runner, worker.
/// Dropping a ManagedProcess SIGKILLs its group, so bb_worker's drain is cut short.
type Running = RunProcesses;

/// A Buildbarn cluster: bb_storage, bb_scheduler, bb_runner and bb_worker, on unix sockets
/// in one run directory.
pub struct Buildbarn {
    /// What to run, and how.
    pub options: BuildbarnOptions,
    running: Option<Running>,
    timings: Vec<(String, Duration)>,
}

impl Buildbarn {
    /// An adapter for `options`; nothing starts until it is started.
    pub fn new(options: BuildbarnOptions) -> Self {
        Buildbarn { options, running: None, timings: Vec::new() }
    }

    /// The environment that fills in the configuration's `std.extVar`s.
    fn config_env(&self, dir: &Path) -> Vec<(&'static str, String)> {
        config_env(dir, "", &self.options.isa, self.options.chroot, self.options.jobs)
    }

    async fn launch(&mut self, run: &mut Running) -> Result<ConnectOptions, ClusterError> {
        let dir = run.dir.clone();
        let config = dir.join("config");
        for sub in [config.clone(), dir.join("build"), dir.join("cache")] {
            std::fs::create_dir(&sub).map_err(|e| ClusterError(format!("cannot create {}: {e}", sub.display())))?;
        }
        for (name, text) in CONFIG {
            let path = config.join(name);
            std::fs::write(&path, text).map_err(|e| ClusterError(format!("cannot write {}: {e}", path.display())))?;
        }
        let env = self.config_env(&dir);
        let mut scheduler_started = Instant::now();
        for program in self.options.programs.clone() {
            let step = Instant::now();
            let short = program.name.trim_start_matches("bb_");
            let mut cmd = std::process::Command::new(&program.path);
            cmd.arg(config.join(format!("{short}.jsonnet"))).current_dir(&dir).envs(env.iter().cloned());
            if program.name == "bb_scheduler" {
                scheduler_started = Instant::now();
            }
            let process = ManagedProcess::spawn(program.name, cmd, &dir.join(format!("{short}.log")))
                .map_err(|e| ClusterError(format!("cannot start {}: {e}", program.path.display())))?;
            run.processes.push(process);
            let process = run.processes.last_mut().expect("just pushed");
            // Started in order: each serves its socket before the next starts.
            let socket = match program.name {
                "bb_storage" => Some("storage.sock"),
                "bb_scheduler" => Some("scheduler-workers.sock"),
                "bb_runner" => Some("runner.sock"),
                _ => None,
            };
            if let Some(socket) = socket {
                wait_socket(&dir.join(socket), process, Duration::from_secs(20)).await?;
            }
            self.timings.push((format!("{} start", program.name), step.elapsed()));
        }
        let step = Instant::now();
        let connect = ConnectOptions {
            instance: self.options.instance.clone(),
            ..ConnectOptions::endpoint(format!("unix:{}", dir.join("storage.sock").display()))
        };
        // The platform the worker advertises.
        let vars = crate::action::Vars { isa: self.options.isa.clone(), ..crate::action::Vars::for_host() };
        let limit = Duration::from_secs(60);
        super::ready::until_trivial_action_completes(&connect, &vars, &mut run.processes, limit, "Buildbarn").await?;
        self.timings.push(("a trivial action completed".into(), step.elapsed()));
        let step = Instant::now();
        let grace_over = scheduler_started + NO_WORKERS_GRACE + Duration::from_millis(200);
        tokio::time::sleep_until(grace_over.into()).await;
        self.timings.push(("bb_scheduler's start-up grace over".into(), step.elapsed()));
        Ok(connect)
    }
}

/// The variables the configuration reads, for a cluster whose shared
/// directory is `dir` (compose/buildbarn.yml sets the same names).
pub(super) fn config_env(
    dir: &Path,
    public: &str,
    isa: &str,
    chroot: bool,
    jobs: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("REAPI_BB_DIR", dir.display().to_string()),
        ("REAPI_BB_PUBLIC", public.to_string()),
        ("REAPI_BB_ISA", isa.to_string()),
        ("REAPI_BB_CHROOT", chroot.to_string()),
        ("REAPI_BB_JOBS", jobs.max(1).to_string()),
    ]
}

/// Waits until `path` exists (the program listens), or the program dies.
async fn wait_socket(path: &Path, process: &mut ManagedProcess, limit: Duration) -> Result<(), ClusterError> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Some(exit) = process.startup_exit() {
            return Err(exit);
        }
        if start.elapsed() > limit {
            return Err(ClusterError(format!(
                "{} did not listen on {} within {} s:\n{}",
                process.name,
                path.display(),
                limit.as_secs(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster for Buildbarn {
    fn name(&self) -> String {
        let variant = if self.options.chroot {
            "buildbarn:chroot (Buildbarn, bb_runner with chrootIntoInputRoot"
        } else {
            "buildbarn:plain (Buildbarn, bb_runner without chroot"
        };
        let programs: Vec<String> =
            self.options.programs.iter().map(|p| format!("{} sha256:{}", p.path.display(), p.sha256)).collect();
        format!("{variant}; {})", programs.join(", "))
    }

    fn server(&self) -> Option<&'static str> {
        Some("buildbarn")
    }

    fn died(&mut self) -> Option<String> {
        let run = self.running.as_mut()?;
        super::disk::harness_fault(&run.dir, run.processes.iter_mut())
    }

    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        Box::pin(async move {
            if self.running.is_some() {
                self.stop().await;
            }
            self.timings.clear();
            let dir = super::rundir::create("buildbarn", false)?;
            let mut run = Running::new(dir);
            let result = self.launch(&mut run).await;
            self.running = Some(run);
            if result.is_err() {
                self.stop().await;
            }
            result
        })
    }

    fn startup_steps(&self) -> Vec<(String, Duration)> {
        self.timings.clone()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(mut run) = self.running.take() else { return };
            // bb_worker first, and at once: after SIGTERM it drains for 15 s
            // or more and keeps asking a scheduler for work.
            if let Some(worker) = run.processes.pop_if(|p| p.name == "bb_worker") {
                drop(worker);
            }
            run.stop_all().await;
            // Dropping `run` removes the directory.
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native cluster and compose/buildbarn.yml read the same Jsonnet;
    /// both must set every variable it reads.
    #[test]
    fn native_and_compose_set_every_variable_the_configuration_reads() {
        let mut read: Vec<String> = Vec::new();
        for (_, text) in CONFIG {
            for piece in text.split("std.extVar('").skip(1) {
                read.push(piece.split('\'').next().unwrap().to_string());
            }
        }
        read.sort();
        read.dedup();
        let mut native: Vec<String> =
            config_env(Path::new("/x"), "", "x86-64", true, 1).into_iter().map(|(k, _)| k.to_string()).collect();
        native.sort();
        assert_eq!(read, native, "the variables the Jsonnet reads and those the adapter sets");
        let compose: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../compose/buildbarn.yml")).expect("compose/buildbarn.yml parses");
        for service in ["storage", "scheduler", "worker", "runner"] {
            let env = &compose["services"][service]["environment"];
            for name in &read {
                assert!(!env[name.as_str()].is_null(), "compose/buildbarn.yml: {service} does not set {name}");
            }
        }
        // The compose file mounts the very files the adapter writes.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/buildbarn");
        for (name, text) in CONFIG {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), text, "{name}");
        }
    }

    #[test]
    fn the_grace_waited_out_is_the_schedulers() {
        let (_, scheduler) = CONFIG.iter().find(|(n, _)| *n == "scheduler.jsonnet").unwrap();
        let setting = format!("platformQueueWithNoWorkersTimeout: '{}s',", NO_WORKERS_GRACE.as_secs());
        assert!(scheduler.contains(&setting), "scheduler.jsonnet must say {setting}");
    }

    #[test]
    fn missing_programs_are_named_with_how_to_get_them() {
        let why = find_programs(Some(Path::new("/nonexistent/reapi-conformance"))).unwrap_err();
        assert!(why.contains("bb_storage, bb_scheduler, bb_runner, bb_worker not found in"), "{why}");
        assert!(why.contains("container images") && why.contains("Bazel"), "{why}");
        assert!(!why.contains('\n'));
    }
}
