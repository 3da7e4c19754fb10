//! `--cluster buildgrid`: a throwaway BuildGrid 0.4.4 with its PostgreSQL,
//! and the harness's own Remote Workers API bot(s) executing the work.
//!
//! Topology, all on loopback and under one temporary directory:
//! `postgres` (own data directory, free port, run as the `postgres` user when
//! the harness is root) ← `bgd server start` (CAS, ByteStream, ActionCache,
//! Execution, Operations, Bots; instance `""` by default) ← worker task(s) in
//! this process, which hand each lease to `buildbox-run` (bubblewrap, input
//! root as `/`) or, in host mode, run it on the host without a sandbox.
//! docs/buildgrid.md has the prerequisites, timings and decisions.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::local::{self, which};
use super::{Cluster, ClusterError, ManagedProcess};
use crate::connection::ConnectOptions;
use crate::worker::{self, Mode, WorkerConfig, WorkerHandle};

/// The server configuration; `{{bind}}`, `{{database}}` and `{{instance}}` are filled in.
const CONFIG_TEMPLATE: &str = include_str!("buildgrid.yml.tmpl");

/// What is installed into the harness's own virtualenv when `bgd` is missing.
pub const BUILDGRID_PACKAGE: &str = "buildgrid[database]==0.4.4";
const INSTALL_BGD: &str =
    "python3 -m venv DIR && DIR/bin/pip install 'buildgrid[database]==0.4.4', then pass DIR/bin/bgd";
const INSTALL_POSTGRES: &str = "apt-get install postgresql";

/// How executed actions are run by the cluster's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerMode {
    /// buildbox-run with bubblewrap: the input root is `/` (the correct setup).
    BuildboxRun,
    /// Straight on the host, no chroot (a misconfigured cluster).
    Host,
}

#[derive(Clone, Debug)]
pub struct BuildGridOptions {
    /// The `bgd` executable; default: `bgd` on PATH.
    pub bgd: Option<PathBuf>,
    /// Directory with PostgreSQL's `initdb`, `postgres` and `pg_isready`;
    /// default: the newest `/usr/lib/postgresql/*/bin`, else PATH.
    pub postgres_bin: Option<PathBuf>,
    /// Directory holding buildbox-run (as for `--cluster local`); default: provisioned cache.
    pub buildbox_dir: Option<PathBuf>,
    pub mode: WorkerMode,
    /// Number of bots, and leases each runs at once.
    pub workers: usize,
    pub capacity: usize,
    pub instance: String,
    /// Device properties of every bot.
    pub platform: Vec<(String, String)>,
    /// Platform keys whose values must match a bot's (BuildGrid `match-property-keys`).
    pub match_keys: Vec<String>,
    /// Platform keys accepted but never matched (`wildcard-property-keys`).
    pub wildcard_keys: Vec<String>,
}

impl Default for BuildGridOptions {
    fn default() -> Self {
        BuildGridOptions {
            bgd: None,
            postgres_bin: None,
            buildbox_dir: None,
            mode: WorkerMode::BuildboxRun,
            workers: 1,
            capacity: 2,
            instance: String::new(),
            platform: vec![("OSFamily".into(), "linux".into()), ("ISA".into(), crate::probe::host_isa().into())],
            match_keys: vec!["OSFamily".into(), "ISA".into()],
            wildcard_keys: Vec::new(),
        }
    }
}

/// What is running, in start order.
struct Running {
    dir: PathBuf,
    postgres: Option<ManagedProcess>,
    bgd: Option<ManagedProcess>,
    workers: Vec<WorkerHandle>,
}

pub struct BuildGrid {
    pub options: BuildGridOptions,
    running: Option<Running>,
    /// Duration of each start-up step of the last start.
    pub timings: Vec<(&'static str, Duration)>,
}

impl BuildGrid {
    pub fn new(options: BuildGridOptions) -> Self {
        BuildGrid { options, running: None, timings: Vec::new() }
    }

    async fn launch(&mut self, run: &mut Running) -> Result<ConnectOptions, ClusterError> {
        let opts = self.options.clone();
        let step = Instant::now();
        let explicit = opts.bgd.clone();
        let bgd = tokio::task::spawn_blocking(move || find_bgd(explicit.as_deref()))
            .await
            .map_err(|e| ClusterError(format!("provisioning task failed: {e}")))??;
        let pg_bin = find_postgres(opts.postgres_bin.as_deref())?;
        let mode = match opts.mode {
            WorkerMode::Host => Mode::Host,
            WorkerMode::BuildboxRun => {
                if which("bwrap").is_none() {
                    return Err(ClusterError(
                        "bwrap is not on PATH: install bubblewrap (Debian: apt-get install bubblewrap)".into(),
                    ));
                }
                let explicit = opts.buildbox_dir.clone();
                let dir = tokio::task::spawn_blocking(move || local::provision(explicit.as_deref()))
                    .await
                    .map_err(|e| ClusterError(format!("provisioning task failed: {e}")))??;
                Mode::BuildboxRun {
                    runner: std::fs::canonicalize(dir.join("buildbox-run")).unwrap_or(dir.join("buildbox-run")),
                }
            }
        };
        self.timings.push(("prerequisites", step.elapsed()));

        // PostgreSQL: a fresh cluster in our directory, on a free loopback port.
        let step = Instant::now();
        let pg_dir = run.dir.join("postgres");
        std::fs::create_dir(&pg_dir).map_err(|e| io_err("creating", &pg_dir, e))?;
        let owner = postgres_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pg_dir, Some(uid), Some(gid)).map_err(|e| io_err("chown", &pg_dir, e))?;
        }
        let data = pg_dir.join("data");
        let mut initdb = std::process::Command::new(pg_bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "bgd", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run_once("initdb", as_owner(initdb, owner, &pg_dir), &run.dir.join("initdb.log"), Duration::from_secs(120))
            .await?;
        self.timings.push(("initdb", step.elapsed()));

        let step = Instant::now();
        let pg_port = free_port()?;
        let mut postgres = std::process::Command::new(pg_bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(pg_port.to_string())
            .arg("-k")
            .arg(&pg_dir)
            // Throwaway data: durability buys nothing here.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        let postgres =
            ManagedProcess::spawn("postgres", as_owner(postgres, owner, &pg_dir), &run.dir.join("postgres.log"))
                .map_err(|e| ClusterError(format!("cannot start postgres: {e}")))?;
        let postgres = run.postgres.insert(postgres);
        wait_postgres(&pg_bin, pg_port, postgres, Duration::from_secs(30)).await?;
        self.timings.push(("postgres start", step.elapsed()));

        let step = Instant::now();
        // BuildGrid 0.4.4 is written against psycopg2 (its LISTEN/NOTIFY loop,
        // which wakes bots and Execute streams, uses psycopg2 API); SQLAlchemy
        // 2.1 maps a bare `postgresql://` to psycopg 3, so name the driver.
        let database = format!("postgresql+psycopg2://bgd@127.0.0.1:{pg_port}/postgres");
        let mut migrate = std::process::Command::new(&bgd);
        migrate.args(["migrate", "apply", &database]).current_dir(&run.dir);
        run_once("bgd migrate apply", migrate, &run.dir.join("migrate.log"), Duration::from_secs(120)).await?;
        self.timings.push(("bgd migrate", step.elapsed()));

        // BuildGrid itself.
        let step = Instant::now();
        let port = free_port()?;
        let config = render(
            CONFIG_TEMPLATE,
            &[
                ("bind", format!("127.0.0.1:{port}")),
                ("database", database),
                ("instance", opts.instance.clone()),
                ("match_keys", format!("{:?}", opts.match_keys)),
                ("wildcard_keys", format!("{:?}", opts.wildcard_keys)),
            ],
        )?;
        let config_path = run.dir.join("buildgrid.yml");
        std::fs::write(&config_path, config).map_err(|e| io_err("writing", &config_path, e))?;
        let mut server = std::process::Command::new(&bgd);
        server.args(["server", "start"]).arg(&config_path).current_dir(&run.dir);
        let bgd_process = ManagedProcess::spawn("bgd server", server, &run.dir.join("bgd.log"))
            .map_err(|e| ClusterError(format!("cannot start {}: {e}", bgd.display())))?;
        let bgd_process = run.bgd.insert(bgd_process);
        let endpoint = format!("http://127.0.0.1:{port}");
        let connect = ConnectOptions {
            instance: opts.instance.clone(),
            bots_endpoint: Some(endpoint.clone()),
            ..ConnectOptions::endpoint(endpoint.clone())
        };
        local::wait_ready(&connect, bgd_process, Duration::from_secs(60)).await?;
        self.timings.push(("bgd server start", step.elapsed()));

        // The bots.
        let step = Instant::now();
        for i in 0..opts.workers.max(1) {
            let config = WorkerConfig {
                endpoint: endpoint.clone(),
                instance: opts.instance.clone(),
                bot_id: format!("reapi-conformance-{}-{i}", std::process::id()),
                platform: opts.platform.clone(),
                mode: mode.clone(),
                capacity: opts.capacity.max(1),
                work_dir: run.dir.join(format!("worker-{i}")),
            };
            let handle = worker::spawn(config).map_err(ClusterError)?;
            let handle = run.workers.push_get(handle);
            handle
                .wait_registered(Duration::from_secs(20))
                .await
                .map_err(|e| ClusterError(format!("worker {i} could not register with BuildGrid: {e}")))?;
        }
        self.timings.push(("workers registered", step.elapsed()));
        Ok(connect)
    }
}

/// `Vec::push` returning the new element.
trait PushGet<T> {
    fn push_get(&mut self, value: T) -> &mut T;
}

impl<T> PushGet<T> for Vec<T> {
    fn push_get(&mut self, value: T) -> &mut T {
        self.push(value);
        let last = self.len() - 1;
        &mut self[last]
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ClusterError {
    ClusterError(format!("{what} {}: {e}", path.display()))
}

/// Finds `bgd`: given explicitly, on PATH, or in the harness's own
/// virtualenv, which is created on first use (idempotent; a marker file says
/// the install finished, since a virtualenv cannot be moved into place).
pub fn find_bgd(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    match explicit {
        Some(p) if p.is_file() => return Ok(p.to_path_buf()),
        Some(p) => {
            return Err(ClusterError(format!("{} does not exist; install BuildGrid: {INSTALL_BGD}", p.display())))
        }
        None => {}
    }
    if let Some(bgd) = which("bgd") {
        return Ok(bgd);
    }
    local::pip_tool("buildgrid-0.4.4", BUILDGRID_PACKAGE, "bgd", &format!("bgd is not on PATH: {INSTALL_BGD}"))
}

fn find_postgres(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let complete = |d: &Path| ["initdb", "postgres", "pg_isready"].iter().all(|b| d.join(b).is_file());
    if let Some(dir) = explicit {
        return if complete(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(ClusterError(format!("{} lacks initdb, postgres or pg_isready ({INSTALL_POSTGRES})", dir.display())))
        };
    }
    // Debian keeps the server binaries off PATH, one directory per major version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)).filter(|d| complete(d)).ok_or_else(|| {
        ClusterError(format!(
            "PostgreSQL server binaries (initdb, postgres) not found; install them: {INSTALL_POSTGRES}"
        ))
    })
}

/// PostgreSQL refuses to run as root: when we are root, run it as the
/// `postgres` user (created by Debian's package), else `nobody`.
fn postgres_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: checked non-null above.
            let pw = unsafe { &*pw };
            return Some((pw.pw_uid, pw.pw_gid));
        }
    }
    None
}

fn as_owner(mut cmd: std::process::Command, owner: Option<(u32, u32)>, cwd: &Path) -> std::process::Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    // The harness's own directory may not be readable by that user.
    cmd.current_dir(cwd);
    cmd
}

fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError(format!("no free loopback port: {e}")))
}

/// The server configuration template filled in with `values` (the compose
/// copy in `compose/buildgrid/` is checked against it).
#[cfg(test)]
pub(super) fn render_template(values: &[(&str, String)]) -> Result<String, ClusterError> {
    render(CONFIG_TEMPLATE, values)
}

/// Fills `{{key}}` placeholders; a placeholder left over is an error.
fn render(template: &str, values: &[(&str, String)]) -> Result<String, ClusterError> {
    let mut text = template.to_string();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    match text.find("{{") {
        Some(at) => Err(ClusterError(format!("BuildGrid config template: unfilled placeholder at byte {at}"))),
        None => Ok(text),
    }
}

/// Runs a short-lived step to completion (killed if it outlives `limit` or us).
async fn run_once(name: &str, cmd: std::process::Command, log: &Path, limit: Duration) -> Result<(), ClusterError> {
    let mut process =
        ManagedProcess::spawn(name, cmd, log).map_err(|e| ClusterError(format!("cannot run {name}: {e}")))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = process.exited() {
            return if status.success() {
                Ok(())
            } else {
                Err(ClusterError(format!("{name} failed ({status}):\n{}", process.log_tail())))
            };
        }
        if Instant::now() > deadline {
            process.stop().await;
            return Err(ClusterError(format!(
                "{name} did not finish within {}s:\n{}",
                limit.as_secs(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `pg_isready` until the server accepts connections.
async fn wait_postgres(
    bin: &Path,
    port: u16,
    process: &mut ManagedProcess,
    limit: Duration,
) -> Result<(), ClusterError> {
    let start = Instant::now();
    loop {
        let mut probe = tokio::process::Command::new(bin.join("pg_isready"));
        probe.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "bgd", "-t", "1"]).kill_on_drop(true);
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(3), probe.status()).await {
            if status.success() {
                return Ok(());
            }
        }
        if let Some(status) = process.exited() {
            return Err(ClusterError(format!("postgres exited ({status}) during start-up:\n{}", process.log_tail())));
        }
        if start.elapsed() > limit {
            return Err(ClusterError(format!(
                "postgres did not accept connections within {}s:\n{}",
                limit.as_secs(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Cluster for BuildGrid {
    fn server(&self) -> Option<&'static str> {
        Some("buildgrid")
    }

    fn died(&mut self) -> Option<String> {
        let run = self.running.as_mut()?;
        let death = [run.postgres.as_mut(), run.bgd.as_mut()].into_iter().flatten().find_map(|p| p.death());
        let logs: Vec<&std::path::Path> =
            [run.postgres.as_ref(), run.bgd.as_ref()].into_iter().flatten().map(|p| p.log_path()).collect();
        death.or_else(|| super::disk::trouble(&run.dir, &logs))
    }

    fn name(&self) -> String {
        match self.options.mode {
            WorkerMode::BuildboxRun => {
                "buildgrid (BuildGrid 0.4.4 + PostgreSQL, bots running buildbox-run bubblewrap)".into()
            }
            WorkerMode::Host => {
                "buildgrid:host (BuildGrid 0.4.4 + PostgreSQL, bots running actions on the host, no sandbox)".into()
            }
        }
    }

    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        Box::pin(async move {
            if self.running.is_some() {
                self.stop().await;
            }
            self.timings.clear();
            let dir = super::rundir::create("buildgrid", true)?;
            let mut run = Running { dir, postgres: None, bgd: None, workers: Vec::new() };
            let result = self.launch(&mut run).await;
            self.running = Some(run);
            if result.is_err() {
                self.stop().await;
            }
            result
        })
    }

    fn startup_steps(&self) -> Vec<(String, Duration)> {
        self.timings.iter().map(|(name, d)| (name.to_string(), *d)).collect()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(mut run) = self.running.take() else { return };
            // Reverse start order: bots first (they tell BuildGrid they are
            // going), then BuildGrid (closing its database connections), then
            // PostgreSQL, whose SIGTERM shutdown waits for clients to leave.
            for w in &mut run.workers {
                w.stop().await;
            }
            if let Some(mut p) = run.bgd.take() {
                p.stop().await;
            }
            if let Some(mut p) = run.postgres.take() {
                p.stop().await;
            }
            let _ = std::fs::remove_dir_all(&run.dir);
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Also reached when a start is abandoned half-way (interrupted): the
        // processes go first (their guards kill them), then the files.
        self.workers.clear();
        self.bgd.take();
        self.postgres.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_every_placeholder() {
        let text = render(
            CONFIG_TEMPLATE,
            &[
                ("bind", "127.0.0.1:1".into()),
                ("database", "postgresql://bgd@127.0.0.1:2/postgres".into()),
                ("instance", "".into()),
                ("match_keys", "[\"OSFamily\", \"ISA\"]".into()),
                ("wildcard_keys", "[]".into()),
            ],
        )
        .expect("rendered");
        assert!(text.contains("address: \"127.0.0.1:1\""));
        assert!(text.contains("match-property-keys: [\"OSFamily\", \"ISA\"]"), "{text}");
        assert!(render(CONFIG_TEMPLATE, &[]).is_err());
    }

    #[test]
    fn missing_prerequisites_say_how_to_install() {
        let nowhere = Path::new("/nonexistent/reapi-conformance");
        let bgd = find_bgd(Some(&nowhere.join("bgd"))).unwrap_err().0;
        assert!(bgd.contains("pip install 'buildgrid[database]==0.4.4'"), "{bgd}");
        let pg = find_postgres(Some(nowhere)).unwrap_err().0;
        assert!(pg.contains("apt-get install postgresql"), "{pg}");
    }
}
