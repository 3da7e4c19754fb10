//! `--cluster compose:NAME` and `compose:FILE`: a cluster from a compose
//! file, brought up with the container engine's `docker compose` (through
//! testcontainers), run against, and taken down with its volumes at exit.
//!
//! - `compose:buildgrid`, `compose:buildbarn`, `compose:buildfarm`: the
//!   project's files (`compose/`, embedded in the binary), with the servers'
//!   published images;
//! - `compose:buildgrid:local`: the same with `compose/local/buildgrid.yml`,
//!   images built here by `compose/local/build-images.sh`;
//! - `compose:FILE[,FILE…]`: your own files.
//!
//! The service that serves REAPI carries the label
//! `reapi-conformance.endpoint: "PORT"` (its container port; publish it, e.g.
//! `ports: ["PORT"]`), and optionally `reapi-conformance.bots: "PORT"` for the
//! Remote Workers API. The harness asks the engine for the host ports, then
//! waits until GetCapabilities answers and a trivial action completes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use testcontainers::compose::DockerCompose;

use super::{Cluster, ClusterError, ClusterSettings};
use crate::connection::ConnectOptions;

/// The project's compose files, by name: each with the files it mounts,
/// written into the run directory with the layout of `compose/`.
const BUNDLED: &[(&str, &[(&str, &str)])] = &[
    (
        "buildgrid",
        &[
            ("buildgrid.yml", include_str!("../../compose/buildgrid.yml")),
            ("buildgrid/buildgrid.yml", include_str!("../../compose/buildgrid/buildgrid.yml")),
            ("local/buildgrid.yml", include_str!("../../compose/local/buildgrid.yml")),
        ],
    ),
    (
        "buildbarn",
        &[
            ("buildbarn.yml", include_str!("../../compose/buildbarn.yml")),
            ("buildbarn/common.libsonnet", include_str!("../../compose/buildbarn/common.libsonnet")),
            ("buildbarn/storage.jsonnet", include_str!("../../compose/buildbarn/storage.jsonnet")),
            ("buildbarn/scheduler.jsonnet", include_str!("../../compose/buildbarn/scheduler.jsonnet")),
            ("buildbarn/worker.jsonnet", include_str!("../../compose/buildbarn/worker.jsonnet")),
            ("buildbarn/runner.jsonnet", include_str!("../../compose/buildbarn/runner.jsonnet")),
        ],
    ),
    (
        "buildfarm",
        &[
            ("buildfarm.yml", include_str!("../../compose/buildfarm.yml")),
            ("buildfarm/config.yml", include_str!("../../compose/buildfarm/config.yml")),
        ],
    ),
];

/// How long `docker compose up` may take (it pulls missing images).
const UP_LIMIT: Duration = Duration::from_secs(900);
/// How long the stack has, once up, to answer and run a trivial action.
const READY_LIMIT: Duration = Duration::from_secs(180);

/// Which compose files a `compose:` spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeSpec {
    /// One of the project's files, optionally with its local-images override.
    Bundled {
        /// The stack's name (`buildgrid`, `buildbarn`, `buildfarm`).
        name: &'static str,
        /// With the override that runs images built by compose/local/build-images.sh.
        local: bool,
    },
    /// The user's own files, in order.
    Files(Vec<PathBuf>),
}

impl ComposeSpec {
    /// Parses what follows `compose:`.
    pub fn parse(spec: &str) -> Result<ComposeSpec, String> {
        let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
        let looks_like_file = spec.contains('/') || spec.ends_with(".yml") || spec.ends_with(".yaml");
        if looks_like_file {
            let files: Vec<PathBuf> = spec.split(',').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
            if let Some(missing) = files.iter().find(|f| !f.is_file()) {
                return Err(format!("compose file {} does not exist", missing.display()));
            }
            return Ok(ComposeSpec::Files(files));
        }
        let (base, local) = match spec.strip_suffix(":local") {
            Some(base) => (base, true),
            None => (spec, false),
        };
        let Some(name) = names.iter().copied().find(|n| *n == base) else {
            return Err(format!(
                "unknown compose cluster `{spec}` (known: {}; `NAME:local` for buildgrid's local images; or a file path)",
                names.join(", ")
            ));
        };
        if local && name != "buildgrid" {
            return Err(format!("`compose:{name}:local` does not exist: only buildgrid has local images"));
        }
        Ok(ComposeSpec::Bundled { name, local })
    }

    /// The compose files to use, writing bundled ones into `dir`.
    fn files(&self, dir: &Path) -> Result<Vec<PathBuf>, ClusterError> {
        match self {
            ComposeSpec::Files(files) => Ok(files.clone()),
            ComposeSpec::Bundled { name, local } => {
                let (_, bundle) = BUNDLED.iter().find(|(n, _)| n == name).expect("parsed names are bundled");
                for (path, text) in bundle.iter() {
                    let target = dir.join(path);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| ClusterError(format!("writing {}: {e}", target.display())))?;
                    }
                    std::fs::write(&target, text)
                        .map_err(|e| ClusterError(format!("writing {}: {e}", target.display())))?;
                }
                let mut files = vec![dir.join(format!("{name}.yml"))];
                if *local {
                    files.push(dir.join(format!("local/{name}.yml")));
                }
                Ok(files)
            }
        }
    }
}

/// The services and container ports the labels name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoints {
    /// (service, container port) serving REAPI.
    pub reapi: Option<(String, u16)>,
    /// (service, container port) serving the Remote Workers API.
    pub bots: Option<(String, u16)>,
}

/// Reads the `reapi-conformance.*` labels of every service of `files`
/// (later files override earlier ones, as compose merges them).
pub fn endpoints(files: &[PathBuf]) -> Result<Endpoints, String> {
    let mut found = Endpoints::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let Some(services) = doc.get("services").and_then(|s| s.as_mapping()) else { continue };
        for (name, service) in services {
            let Some(name) = name.as_str() else { continue };
            for (label, slot) in
                [("reapi-conformance.endpoint", &mut found.reapi), ("reapi-conformance.bots", &mut found.bots)]
            {
                if let Some(value) = label_value(service, label) {
                    let port = value.parse::<u16>().map_err(|_| {
                        format!("{}: service {name}: label {label} is not a port: {value:?}", file.display())
                    })?;
                    *slot = Some((name.to_string(), port));
                }
            }
        }
    }
    if found.reapi.is_none() {
        return Err("no service carries the label `reapi-conformance.endpoint: \"PORT\"` naming its REAPI port".into());
    }
    Ok(found)
}

/// A label's value, from the map form or the `KEY=VALUE` list form.
fn label_value(service: &serde_yaml_ng::Value, key: &str) -> Option<String> {
    let labels = service.get("labels")?;
    if let Some(map) = labels.as_mapping() {
        let value = map.get(key)?;
        return value.as_str().map(str::to_string).or_else(|| value.as_u64().map(|n| n.to_string()));
    }
    labels
        .as_sequence()?
        .iter()
        .filter_map(|l| l.as_str())
        .find_map(|l| l.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
}

/// A compose stack the harness brings up and takes down.
pub struct Compose {
    spec: ComposeSpec,
    label: String,
    isa: String,
    dir: Option<PathBuf>,
    stack: Option<DockerCompose>,
    /// How long `docker compose up` and the wait for readiness took.
    timings: Vec<(&'static str, Duration)>,
    /// Once the stack is ready: who watches its containers.
    watch: Option<Watch>,
}

/// A task watching a ready stack's containers, and the first service it saw
/// stop: the run's verdicts then cannot blame the server.
struct Watch {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<Mutex<Option<String>>>,
    /// The stack's services and their containers' ids.
    containers: Vec<(String, String)>,
}

/// Looks once for a service of `containers` that stopped, and records the
/// first in `stopped` (without its last words: the report appends "during
/// the run"). Returns whether one had.
async fn record_exit(containers: &[(String, String)], stopped: &Mutex<Option<String>>) -> bool {
    match exited_service(containers).await {
        Some(stop) => {
            let death = format!("the compose stack's service {} exited (exit code {})", stop.service, stop.code);
            stopped.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(death);
            true
        }
        None => false,
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // However the cluster goes away, nobody polls the engine for it after.
        self.task.abort();
    }
}

impl Compose {
    /// The cluster `spec` names (`NAME[:local]` or `FILE[,FILE]`), not started yet.
    pub fn new(spec: &str, settings: &ClusterSettings) -> Result<Compose, String> {
        Ok(Compose {
            spec: ComposeSpec::parse(spec)?,
            label: format!("compose:{spec}"),
            isa: settings.isa.clone(),
            dir: None,
            stack: None,
            timings: Vec::new(),
            watch: None,
        })
    }

    async fn up(&mut self) -> Result<ConnectOptions, ClusterError> {
        self.timings.clear();
        let step = Instant::now();
        engine_available().await?;
        // Before our run directory is made: that sweeps stale run directories,
        // which tell a killed run's stack from a live one.
        sweep_stale_projects().await;
        let dir = super::rundir::create("compose", false)?;
        self.dir = Some(dir.clone());
        let files = self.spec.files(&dir)?;
        let ports = endpoints(&files).map_err(ClusterError)?;
        // The project is named after the run directory, whose lock says whether the run lives.
        let project = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut stack = DockerCompose::with_local_client(files.as_slice())
            .with_project_name(project)
            .with_env("REAPI_ISA", self.isa.clone())
            // Readiness is judged below over REAPI: Podman runs no health checks.
            .with_wait(false);
        self.timings.push(("engine found, stale stacks swept", step.elapsed()));
        let step = Instant::now();
        let up = tokio::time::timeout(UP_LIMIT, stack.up()).await;
        // Kept before judging the result, so a half-started stack is taken down.
        match up {
            Err(_) => {
                self.stack = Some(stack);
                return Err(ClusterError(format!("`docker compose up` did not finish in {} s", UP_LIMIT.as_secs())));
            }
            Ok(Err(e)) => {
                self.stack = Some(stack);
                return Err(ClusterError(format!("`docker compose up` failed: {}", one_line(&e.to_string()))));
            }
            Ok(Ok(())) => {}
        }
        self.timings.push(("docker compose up", step.elapsed()));
        let step = Instant::now();
        let reapi = ports.reapi.as_ref().expect("endpoints() requires it");
        let endpoint = match host_port(&stack, reapi).await {
            Ok(port) => format!("http://127.0.0.1:{port}"),
            Err(e) => {
                self.stack = Some(stack);
                return Err(e);
            }
        };
        let bots_endpoint = match &ports.bots {
            Some(b) => match host_port(&stack, b).await {
                Ok(port) => Some(format!("http://127.0.0.1:{port}")),
                Err(e) => {
                    self.stack = Some(stack);
                    return Err(e);
                }
            },
            None => None,
        };
        let containers: Vec<(String, String)> = stack
            .services()
            .into_iter()
            .filter_map(|s| stack.service(s).map(|c| (s.to_string(), c.id().to_string())))
            .collect();
        self.stack = Some(stack);
        let target = ConnectOptions { bots_endpoint, ..ConnectOptions::endpoint(endpoint) };
        wait_ready(&target, &containers).await?;
        self.timings.push(("ready (a trivial action completed)", step.elapsed()));
        let stopped = Arc::new(Mutex::new(None));
        let seen = stopped.clone();
        let watched = containers.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if record_exit(&watched, &seen).await {
                    return;
                }
            }
        });
        self.watch = Some(Watch { task, stopped, containers });
        Ok(target)
    }
}

impl Cluster for Compose {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        Box::pin(self.up())
    }

    fn died(&mut self) -> Option<String> {
        let watch = self.watch.as_ref()?;
        watch.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn settle(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The watch polls every 2 s: one last look, so a service that
            // stopped in the run's last seconds still makes its verdicts ERROR.
            if let Some(watch) = &self.watch {
                if watch.stopped.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), record_exit(&watch.containers, &watch.stopped))
                            .await;
                }
            }
        })
    }

    fn startup_steps(&self) -> Vec<(String, Duration)> {
        self.timings.iter().map(|(name, d)| (name.to_string(), *d)).collect()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Containers stopped from here on are ours to stop.
            self.watch = None;
            if let Some(stack) = self.stack.take() {
                // Containers, networks and volumes (testcontainers removes volumes by default).
                let _ = tokio::time::timeout(Duration::from_secs(120), stack.down()).await;
            }
            if let Some(dir) = self.dir.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
    }
}

/// Compose project names of this harness: the name of the run's directory,
/// `reapi-conformance-compose-PID-ID` (older versions: `reapi-conformance-PID-RANDOM`).
const PROJECT_PREFIX: &str = "reapi-conformance-";

/// Runs the `docker` CLI for at most `limit`: its stdout and stderr when it
/// succeeded, `None` otherwise (the callers' fallbacks say what that means).
async fn docker(args: &[&str], limit: Duration) -> Option<(String, String)> {
    let out =
        tokio::time::timeout(limit, tokio::process::Command::new("docker").args(args).kill_on_drop(true).output())
            .await;
    match out {
        Ok(Ok(o)) if o.status.success() => {
            Some((String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned()))
        }
        _ => None,
    }
}

/// Takes down the stacks of runs that were killed before they could (their
/// process is gone), as run directories of killed runs are swept.
async fn sweep_stale_projects() {
    let listed = docker(
        &[
            "ps",
            "-a",
            "--filter",
            "label=com.docker.compose.project",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
        Duration::from_secs(60),
    )
    .await
    .map(|(out, _)| out)
    .unwrap_or_default();
    let mut stale: Vec<&str> = listed.lines().filter(|p| stale_project(p)).collect();
    stale.sort_unstable();
    stale.dedup();
    for project in stale {
        let _ =
            docker(&["compose", "-p", project, "down", "--volumes", "--timeout", "1"], Duration::from_secs(60)).await;
    }
}

/// Whether `project` is this harness's and its run is over. The run
/// directory of the same name answers when it exists: locked while its run
/// lives, in whatever PID namespace (see `rundir`). Without one (already
/// swept, or the run saw another `/tmp`), the pid in the name decides: gone
/// from this PID namespace means stale. That last test can misjudge a run in
/// another PID namespace *and* another `/tmp` that shares the container
/// engine: its stack may be taken down under it, or a dead one's kept.
fn stale_project(project: &str) -> bool {
    use super::rundir::{pid_in_name, state_of, RunState};
    let Some(rest) = project.strip_prefix(PROJECT_PREFIX) else { return false };
    match state_of(project) {
        RunState::Live => return false,
        RunState::Stale => return true,
        RunState::Absent => {}
    }
    // `compose-PID-ID`, or the older `PID-RANDOM`.
    let pid = pid_in_name(project).or_else(|| rest.split('-').next().and_then(|p| p.parse::<u32>().ok()));
    pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// The image `compose/local/build-images.sh` builds and the local compose
/// files run: `REAPI_LOCAL_IMAGE`, else its default there.
pub fn local_image() -> String {
    std::env::var("REAPI_LOCAL_IMAGE").unwrap_or_else(|_| "localhost/reapi-conformance/local:latest".into())
}

/// The host port the engine published for a service's container port.
async fn host_port(stack: &DockerCompose, (service, port): &(String, u16)) -> Result<u16, ClusterError> {
    let container = stack.service(service).ok_or_else(|| ClusterError(format!("service {service} is not running")))?;
    container.get_host_port_ipv4(*port).await.map_err(|e| {
        ClusterError(format!("service {service} publishes no host port for {port}: {}", one_line(&e.to_string())))
    })
}

/// Fails in one line when `docker compose` or the engine behind it is missing.
async fn engine_available() -> Result<(), ClusterError> {
    let how =
        "start Docker, or Podman's API service (`podman system service --time=0 unix:///run/podman/podman.sock`) \
               with DOCKER_HOST=unix:///run/podman/podman.sock";
    let run = |args: &'static [&'static str]| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("docker").args(args).kill_on_drop(true).output(),
        )
        .await;
        match out {
            Ok(Ok(o)) if o.status.success() => Ok(()),
            Ok(Ok(o)) => Err(one_line(&String::from_utf8_lossy(&o.stderr))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in 20 s".into()),
        }
    };
    run(&["compose", "version"]).await.map_err(|e| {
        ClusterError(format!("`docker compose` (the Compose v2 CLI plugin) is not available ({e}); install it"))
    })?;
    run(&["version", "--format", "{{.Server.Version}}"])
        .await
        .map_err(|e| ClusterError(format!("no container engine answers ({e}): {how}")))
}

/// Waits until the stack answers GetCapabilities and runs a trivial action
/// to completion (the server may start before its workers register). A
/// service whose container stops with a failure first (a migration that can
/// never succeed, a bad command) ends the wait at once with its last words,
/// instead of the timeout.
async fn wait_ready(target: &ConnectOptions, containers: &[(String, String)]) -> Result<(), ClusterError> {
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(stop) = exited_service(containers).await {
                return stop.before_ready();
            }
        }
    };
    tokio::select! {
        ready = super::ready::wait(target, READY_LIMIT) => match ready {
            Ok(_) => Ok(()),
            Err(last) => Err(ClusterError(match exited_service(containers).await {
                Some(stop) => stop.before_ready(),
                None => format!(
                    "the compose stack was not ready within {} s: {}",
                    READY_LIMIT.as_secs(),
                    one_line(&last)
                ),
            })),
        },
        why = watch => Err(ClusterError(why)),
    }
}

/// A service whose container has stopped.
struct Stopped {
    service: String,
    code: String,
    /// Its last words ([`last_words`]), if it said any.
    words: Option<String>,
}

impl Stopped {
    /// Why the stack never became ready, in one line.
    fn before_ready(&self) -> String {
        let said = self.words.as_ref().map(|w| format!(": {w}")).unwrap_or_default();
        format!("service {} exited (exit code {}) before the stack was ready{said}", self.service, self.code)
    }
}

/// The first service whose container has stopped with a failure.
async fn exited_service(containers: &[(String, String)]) -> Option<Stopped> {
    const LIMIT: Duration = Duration::from_secs(20);
    for (service, id) in containers {
        let Some((state, _)) =
            docker(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id], LIMIT).await
        else {
            continue;
        };
        let mut state = state.split_whitespace();
        let status = state.next();
        let code = crate::text::one_line(state.next().unwrap_or("?"), 12);
        // A one-shot service of a user's file (an init job) ends with 0 and
        // is no failure; a killed or failed one, or a dead container, is.
        if !(status == Some("dead") || (status == Some("exited") && code != "0")) {
            continue;
        }
        // `docker logs` replays the container's stdout and stderr on ours.
        let logs = docker(&["logs", "--tail", "60", id], LIMIT).await.map(|(out, err)| out + &err).unwrap_or_default();
        let words = last_words(&logs);
        return Some(Stopped { service: crate::text::one_line(service, 80), code, words });
    }
    None
}

/// What a stopped container's log says about why, in one printable line:
/// the last line naming an exception or error (a Python traceback ends with
/// one, followed at times by lines of advice), else the last line.
fn last_words(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let named = lines.iter().rev().find(|l| {
        l.split_once(": ").is_some_and(|(head, _)| {
            !head.contains(' ') && (head.ends_with("Error") || head.ends_with("Exception") || head == "error")
        })
    });
    named.or(lines.last()).map(|l| crate::text::one_line(&crate::text::without_credentials(l), 300))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(ComposeSpec::parse("buildgrid"), Ok(ComposeSpec::Bundled { name: "buildgrid", local: false }));
        assert_eq!(ComposeSpec::parse("buildgrid:local"), Ok(ComposeSpec::Bundled { name: "buildgrid", local: true }));
        assert!(ComposeSpec::parse("buildfarm:local").unwrap_err().contains("only buildgrid"));
        assert!(ComposeSpec::parse("nope").unwrap_err().contains("known: buildgrid, buildbarn, buildfarm"));
        assert!(ComposeSpec::parse("/nonexistent/x.yml").unwrap_err().contains("does not exist"));
    }

    /// Every bundled file names its REAPI service, and the BuildGrid server
    /// configuration stays the native template filled in for compose.
    #[test]
    fn bundled_files_name_their_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        for (name, service) in [("buildgrid", "controller"), ("buildbarn", "storage"), ("buildfarm", "server")] {
            let files = ComposeSpec::Bundled { name: BUNDLED.iter().find(|b| b.0 == name).unwrap().0, local: false }
                .files(dir.path())
                .unwrap();
            let found = endpoints(&files).unwrap();
            assert_eq!(found.reapi.as_ref().map(|(s, _)| s.as_str()), Some(service), "{name}");
        }
        // The nightly images and the local one run the newest series the
        // native adapter provisions: its connection string, on compose's host.
        let newest = super::super::buildgrid::RELEASES[0].version;
        let native = super::super::buildgrid::connection_string(newest, "database:5432");
        let scheme = native.split_once("://").map(|(s, _)| s).unwrap();
        let database = format!("{scheme}://bgd:insecure@database:5432/bgd");
        let compose = include_str!("../../compose/buildgrid.yml");
        assert!(compose.contains(&format!("BGD_DATABASE: {database}\n")), "compose/buildgrid.yml: {database}");
        let rendered = super::super::buildgrid::render_template(&[
            ("bind", "0.0.0.0:50051".into()),
            ("database", database.clone()),
            ("instance", String::new()),
            ("match_keys", "[\"OSFamily\", \"ISA\"]".into()),
            ("wildcard_keys", "[]".into()),
        ])
        .unwrap();
        assert_eq!(rendered, include_str!("../../compose/buildgrid/buildgrid.yml"), "compose/buildgrid/buildgrid.yml");
    }

    /// The local image is built with the release `--cluster buildgrid`
    /// provisions by default, for the Python it needs.
    #[test]
    fn the_local_image_has_the_newest_release() {
        let newest = &super::super::buildgrid::RELEASES[0];
        let script = include_str!("../../compose/local/build-images.sh");
        assert!(script.contains(&format!("\nbuildgrid={}\n", newest.package)), "build-images.sh: {}", newest.package);
        let python = format!("\npython={}.{}\n", newest.python.0, newest.python.1);
        assert!(script.contains(&python), "build-images.sh: {python}");
    }

    #[test]
    fn last_words_name_the_error() {
        let traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n\
            ValueError: Cannot use database (connection_string=[postgresql+psycopg2://h/d]).\n\n\
            For production use setup a postgresql database.\n";
        assert_eq!(
            last_words(traceback).as_deref(),
            Some("ValueError: Cannot use database (connection_string=[postgresql+psycopg2://h/d]).")
        );
        assert_eq!(
            last_words("x\nsqlalchemy.exc.OperationalError: connection failed\n").as_deref(),
            Some("sqlalchemy.exc.OperationalError: connection failed")
        );
        assert_eq!(last_words("starting\nno such file: \u{1b}[31mx\n").as_deref(), Some("no such file: \\u{1b}[31mx"));
        assert_eq!(last_words("\n \n"), None);
    }

    #[test]
    fn stale_projects_are_those_of_gone_processes() {
        assert!(!stale_project(&format!("{PROJECT_PREFIX}{}-abcd1234", std::process::id())));
        assert!(!stale_project("someone-else-1-abcd"));
        assert!(stale_project(&format!("{PROJECT_PREFIX}{}-abcd1234", u32::MAX - 1)));
        assert!(stale_project(&format!("{PROJECT_PREFIX}compose-{}-0123456789ab", u32::MAX - 1)));
    }

    /// A live run's project survives the sweep whatever its pid says (a run
    /// in another PID namespace sharing /tmp), because its directory is locked.
    #[test]
    fn projects_of_live_run_directories_are_kept() {
        let dir = super::super::rundir::create("compose", false).unwrap();
        let project = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!stale_project(&project));
        let lock = dir.join("lock");
        // An id of this process's own, so that neither the test above (which
        // needs that name absent) nor a concurrent test process sees it.
        let foreign =
            dir.with_file_name(format!("{PROJECT_PREFIX}compose-{}-{:012x}", u32::MAX - 1, std::process::id()));
        std::fs::create_dir(&foreign).unwrap();
        std::fs::hard_link(&lock, foreign.join("lock")).unwrap();
        let foreign_project = foreign.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!stale_project(&foreign_project), "locked (here by this process, standing in for a live run)");
        std::fs::remove_file(foreign.join("lock")).unwrap();
        std::fs::write(foreign.join("lock"), "").unwrap();
        assert!(stale_project(&foreign_project), "unlocked: its run is over");
        // A concurrent test's sweep may have removed it already.
        let _ = std::fs::remove_dir_all(&foreign);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_in_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yml");
        std::fs::write(
            &file,
            "services:\n  a:\n    labels: [\"reapi-conformance.endpoint=8980\"]\n  b:\n    labels:\n      reapi-conformance.bots: 7\n",
        )
        .unwrap();
        let found = endpoints(std::slice::from_ref(&file)).unwrap();
        assert_eq!(found.reapi, Some(("a".into(), 8980)));
        assert_eq!(found.bots, Some(("b".into(), 7)));
        std::fs::write(&file, "services:\n  a:\n    image: x\n").unwrap();
        assert!(endpoints(&[file]).unwrap_err().contains("reapi-conformance.endpoint"));
    }
}
