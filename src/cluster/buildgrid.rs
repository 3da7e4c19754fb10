//! `--cluster buildgrid`: a throwaway BuildGrid with its PostgreSQL, and the
//! harness's own Remote Workers API bot(s) executing the work. The adapter
//! reads the version of the `bgd` it runs and renders the connection string
//! for it: 0.4.x speaks psycopg2, 0.9.x psycopg 3.
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

use super::provision::{self, which};
use super::{Cluster, ClusterError, ManagedProcess};
use crate::connection::ConnectOptions;
use crate::worker::{self, Mode, WorkerConfig, WorkerHandle};

/// The server configuration; `{{bind}}`, `{{database}}` and `{{instance}}` are filled in.
const CONFIG_TEMPLATE: &str = include_str!("buildgrid.yml.tmpl");

/// A BuildGrid release the harness provisions from PyPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// Its version, e.g. `0.9.1`, as `--buildgrid-version` names it.
    pub version: &'static str,
    /// What pip installs (0.9.x has no `database` extra: psycopg is a base dependency).
    pub package: &'static str,
    /// The oldest Python it installs on.
    pub python: (u32, u32),
}

/// The releases the harness provisions, newest first: 0.9.1 is current and
/// needs Python >= 3.13; 0.4.4 is the last release for Python 3.11.
pub const RELEASES: &[Release] = &[
    Release { version: "0.9.1", package: "buildgrid==0.9.1", python: (3, 13) },
    Release { version: "0.4.4", package: "buildgrid[database]==0.4.4", python: (3, 9) },
];

const INSTALL_POSTGRES: &str = "apt-get install postgresql";

fn install_hint(release: &Release) -> String {
    format!(
        "python3.{} -m venv DIR && DIR/bin/pip install '{}', then pass DIR/bin/bgd",
        release.python.1, release.package
    )
}

/// The release named by `--buildgrid-version`.
pub fn release(version: &str) -> Result<&'static Release, ClusterError> {
    RELEASES.iter().find(|r| r.version == version).ok_or_else(|| {
        let known: Vec<&str> = RELEASES.iter().map(|r| r.version).collect();
        ClusterError(format!(
            "--buildgrid-version {version}: the harness provisions {} (or give any bgd with --bgd)",
            known.join(" and ")
        ))
    })
}

/// Whether a BuildGrid version is of the psycopg 3 series (0.9.0 on).
pub fn speaks_psycopg3(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (0, 9)
}

/// The database connection string for a BuildGrid version. 0.4.x is written
/// against psycopg2 (its LISTEN/NOTIFY loop, which wakes bots and Execute
/// streams, uses psycopg2 API; SQLAlchemy 2.1 maps a bare `postgresql://` to
/// psycopg 3), so the driver is named; 0.9.x moved to psycopg 3 and refuses
/// `+psycopg2` ("Cannot use database").
pub fn connection_string(version: &str, host_port: &str) -> String {
    if speaks_psycopg3(version) {
        format!("postgresql://bgd@{host_port}/postgres")
    } else {
        format!("postgresql+psycopg2://bgd@{host_port}/postgres")
    }
}

/// The version of the BuildGrid a `bgd` belongs to: from the package
/// metadata beside it (`lib/python3.X/site-packages/buildgrid-V.dist-info`),
/// else by asking the interpreter of its `#!` line.
pub fn bgd_version(bgd: &Path) -> Result<String, ClusterError> {
    let real = std::fs::canonicalize(bgd).unwrap_or_else(|_| bgd.to_path_buf());
    let from_dist_info = |bin: &Path| -> Option<String> {
        let lib = bin.parent()?.join("lib");
        for py in std::fs::read_dir(lib).ok()?.flatten() {
            for entry in std::fs::read_dir(py.path().join("site-packages")).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix("buildgrid-").and_then(|n| n.strip_suffix(".dist-info")) {
                    return Some(v.to_string());
                }
            }
        }
        None
    };
    if let Some(v) = [bgd.parent(), real.parent()].into_iter().flatten().find_map(from_dist_info) {
        return Ok(v);
    }
    let text = std::fs::read(&real).unwrap_or_default();
    let first = String::from_utf8_lossy(&text[..text.len().min(512)]).lines().next().unwrap_or("").to_string();
    if let Some(python) = first.strip_prefix("#!").map(|l| l.split_whitespace().collect::<Vec<_>>()) {
        if let Some((interp, args)) = python.split_first() {
            let out = std::process::Command::new(interp)
                .args(args)
                .args(["-c", "import importlib.metadata as m; print(m.version('buildgrid'))"])
                .output();
            if let Some(out) = out.ok().filter(|o| o.status.success()) {
                let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !v.is_empty() {
                    return Ok(v);
                }
            }
        }
    }
    Err(ClusterError(format!(
        "cannot tell which BuildGrid {} is (no buildgrid package metadata beside it)",
        bgd.display()
    )))
}

/// A Python interpreter and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Python {
    /// The interpreter, as found or given (`--python`).
    pub path: PathBuf,
    /// Its `(major, minor)` version, as it reports it.
    pub version: (u32, u32),
}

fn python_version(path: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(path)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Interpreters to try, in order: `python3.N` and `python3` on PATH, then
/// pyenv's versions directory (`$PYENV_ROOT`, else `~/.pyenv`), newest first.
/// pyenv's `python3.13` shim refuses while the global version is another one,
/// which the version probe finds out.
fn python_candidates() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        ["python3.15", "python3.14", "python3.13", "python3"].iter().filter_map(|n| which(n)).collect();
    let root = std::env::var_os("PYENV_ROOT").map(PathBuf::from).or_else(|| dirs::home_dir().map(|h| h.join(".pyenv")));
    if let Some(root) = root {
        let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root.join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key: Vec<u32> = name.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
                Some((key, e.path().join("bin/python3")))
            })
            .filter(|(_, p)| p.is_file())
            .collect();
        versions.sort();
        found.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    found
}

/// An interpreter of at least `at_least`: `explicit` (`--python`) if given,
/// else the first of `python_candidates`. `Err` says why none fits.
pub fn find_python(explicit: Option<&Path>, at_least: (u32, u32)) -> Result<Python, String> {
    let need = format!("{}.{}", at_least.0, at_least.1);
    if let Some(path) = explicit {
        return match python_version(path) {
            Some(version) if version >= at_least => Ok(Python { path: path.to_path_buf(), version }),
            Some((a, b)) => Err(format!("--python {} is Python {a}.{b}, not >= {need}", path.display())),
            None => Err(format!("--python {} does not run as a Python interpreter", path.display())),
        };
    }
    python_candidates()
        .into_iter()
        .find_map(|path| python_version(&path).filter(|v| *v >= at_least).map(|version| Python { path, version }))
        .ok_or_else(|| format!("no Python >= {need} found"))
}

/// Where the `bgd` of a run comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BgdSource {
    /// An existing `bgd` (`--bgd` or PATH).
    Given(PathBuf),
    /// A release provisioned into the cache with this interpreter (`None`: `python3`).
    Provision(&'static Release, Option<PathBuf>),
}

/// Which BuildGrid a run uses, and why (said at start-up and in the report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Where the `bgd` comes from.
    pub source: BgdSource,
    /// The BuildGrid version, e.g. `0.4.4`; it decides the database driver.
    pub version: String,
    /// Why this one, in words, e.g. `the bgd on PATH`.
    pub why: String,
}

impl Choice {
    /// One line, e.g. "BuildGrid 0.4.4: no Python >= 3.13 found; --python to choose".
    pub fn line(&self) -> String {
        format!("BuildGrid {}: {}", self.version, self.why)
    }
}

/// Chooses the BuildGrid: `--bgd`; else a pinned `--buildgrid-version`; else
/// `bgd` on PATH; else the newest release an interpreter here can install.
pub fn choose(bgd: Option<&Path>, pinned: Option<&str>, python: Option<&Path>) -> Result<Choice, ClusterError> {
    if let Some(p) = bgd {
        if !p.is_file() {
            return Err(ClusterError(format!(
                "{} does not exist; install BuildGrid: {}",
                p.display(),
                install_hint(&RELEASES[0])
            )));
        }
        let version = bgd_version(p)?;
        return Ok(Choice { source: BgdSource::Given(p.to_path_buf()), version, why: "the bgd given by --bgd".into() });
    }
    if let Some(v) = pinned {
        let release = release(v)?;
        return pinned_choice(release, python, "pinned by --buildgrid-version");
    }
    if let Some(p) = which("bgd") {
        let version = bgd_version(&p)?;
        return Ok(Choice { source: BgdSource::Given(p), version, why: "the bgd on PATH".into() });
    }
    let newest = &RELEASES[0];
    match find_python(python, newest.python) {
        Ok(py) => Ok(Choice {
            version: newest.version.into(),
            why: format!("the newest release, installed with Python {}.{}", py.version.0, py.version.1),
            source: BgdSource::Provision(newest, Some(py.path)),
        }),
        Err(why) => {
            let fallback = &RELEASES[RELEASES.len() - 1];
            Ok(Choice {
                version: fallback.version.into(),
                why: format!("{why}; --python to choose"),
                source: BgdSource::Provision(fallback, python.map(Path::to_path_buf)),
            })
        }
    }
}

/// A release the user asked for by version: it needs an interpreter of its own.
fn pinned_choice(release: &'static Release, python: Option<&Path>, why: &str) -> Result<Choice, ClusterError> {
    let py = if release.python >= (3, 12) {
        let found = find_python(python, release.python).map_err(|e| {
            ClusterError(format!(
                "BuildGrid {} needs Python >= 3.{}: {e}; --python FILE to choose",
                release.version, release.python.1
            ))
        })?;
        Some(found.path)
    } else {
        python.map(Path::to_path_buf)
    };
    Ok(Choice { source: BgdSource::Provision(release, py), version: release.version.into(), why: why.into() })
}

/// Provisions (once) or returns the `bgd` of a choice.
pub fn provide(choice: &Choice) -> Result<PathBuf, ClusterError> {
    match &choice.source {
        BgdSource::Given(p) => Ok(p.clone()),
        BgdSource::Provision(release, python) => provision::pip_tool(
            &format!("buildgrid-{}", release.version),
            release.package,
            "bgd",
            python.as_deref(),
            &format!("install BuildGrid yourself: {}", install_hint(release)),
        ),
    }
}

/// The `bgd` of one release, provisioned into the cache (for `setup`).
pub fn provision_release(version: &str, python: Option<&Path>) -> Result<(Choice, PathBuf), ClusterError> {
    let choice = pinned_choice(release(version)?, python, "provisioned by setup")?;
    let bgd = provide(&choice)?;
    Ok((choice, bgd))
}

/// How executed actions are run by the cluster's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerMode {
    /// buildbox-run with bubblewrap: the input root is `/` (the correct setup).
    BuildboxRun,
    /// Straight on the host, no chroot (a misconfigured cluster).
    Host,
}

/// Settings of a BuildGrid cluster the harness starts (`--cluster buildgrid[:host]`).
#[derive(Clone, Debug)]
pub struct BuildGridOptions {
    /// The `bgd` executable; default: `bgd` on PATH, else a provisioned release.
    pub bgd: Option<PathBuf>,
    /// The release to provision (`--buildgrid-version`); default: the newest
    /// an interpreter here can install.
    pub version: Option<String>,
    /// The interpreter to provision with (`--python`).
    pub python: Option<PathBuf>,
    /// Directory with PostgreSQL's `initdb`, `postgres` and `pg_isready`;
    /// default: the newest `/usr/lib/postgresql/*/bin`, else PATH.
    pub postgres_bin: Option<PathBuf>,
    /// Directory holding buildbox-run (as for `--cluster local`); default: provisioned cache.
    pub buildbox_dir: Option<PathBuf>,
    /// How the bots run the actions they lease.
    pub mode: WorkerMode,
    /// Number of bots, and leases each runs at once.
    pub workers: usize,
    /// Leases each bot runs at once.
    pub capacity: usize,
    /// The instance name BuildGrid serves and every request names (default: the empty name).
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
            version: None,
            python: None,
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

/// A BuildGrid cluster: PostgreSQL, `bgd` and the harness's own bots, under one
/// temporary directory.
pub struct BuildGrid {
    /// What to start, as given.
    pub options: BuildGridOptions,
    /// Which BuildGrid runs (decided when the adapter is made, so that the
    /// start-up line and the report's target name its version).
    pub choice: Result<Choice, ClusterError>,
    running: Option<Running>,
    /// Duration of each start-up step of the last start.
    pub timings: Vec<(&'static str, Duration)>,
}

impl BuildGrid {
    /// An adapter for `options`, with the BuildGrid chosen at once so that its version is known
    /// before anything starts (nothing is provisioned or started here).
    pub fn new(options: BuildGridOptions) -> Self {
        let choice = choose(options.bgd.as_deref(), options.version.as_deref(), options.python.as_deref());
        BuildGrid { options, choice, running: None, timings: Vec::new() }
    }

    async fn launch(&mut self, run: &mut Running) -> Result<ConnectOptions, ClusterError> {
        let opts = self.options.clone();
        let step = Instant::now();
        let choice = self.choice.as_ref().map_err(|e| ClusterError(e.0.clone()))?.clone();
        eprintln!("{}", choice.line());
        let version = choice.version.clone();
        let bgd = tokio::task::spawn_blocking(move || provide(&choice))
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
                let dir = tokio::task::spawn_blocking(move || provision::provision(explicit.as_deref()))
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
        let database = connection_string(&version, &format!("127.0.0.1:{pg_port}"));
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
        super::ready::until_capabilities_answer(&connect, bgd_process, Duration::from_secs(60)).await?;
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
        super::disk::harness_fault(&run.dir, [run.postgres.as_mut(), run.bgd.as_mut()].into_iter().flatten())
    }

    fn name(&self) -> String {
        let grid = match &self.choice {
            Ok(choice) => format!("BuildGrid {}", choice.version),
            Err(_) => "BuildGrid".into(),
        };
        match self.options.mode {
            WorkerMode::BuildboxRun => format!("buildgrid ({grid} + PostgreSQL, bots running buildbox-run bubblewrap)"),
            WorkerMode::Host => {
                format!("buildgrid:host ({grid} + PostgreSQL, bots running actions on the host, no sandbox)")
            }
        }
    }

    fn server_detail(&self) -> Option<String> {
        self.choice.as_ref().ok().map(Choice::line)
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
        let bgd = choose(Some(&nowhere.join("bgd")), None, None).unwrap_err().0;
        assert!(bgd.contains("pip install 'buildgrid==0.9.1'"), "{bgd}");
        let pg = find_postgres(Some(nowhere)).unwrap_err().0;
        assert!(pg.contains("apt-get install postgresql"), "{pg}");
    }

    #[test]
    fn the_connection_string_follows_the_psycopg_series() {
        assert_eq!(connection_string("0.4.4", "h:1"), "postgresql+psycopg2://bgd@h:1/postgres");
        assert_eq!(connection_string("0.8.16", "h:1"), "postgresql+psycopg2://bgd@h:1/postgres");
        assert_eq!(connection_string("0.9.1", "h:1"), "postgresql://bgd@h:1/postgres");
        assert_eq!(connection_string("0.10.0.dev3", "h:1"), "postgresql://bgd@h:1/postgres");
        assert_eq!(connection_string("1.0", "h:1"), "postgresql://bgd@h:1/postgres");
    }

    #[test]
    fn the_version_is_read_from_the_package_metadata_beside_bgd() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/python3.13/site-packages/buildgrid-0.9.1.dist-info")).unwrap();
        std::fs::write(bin.join("bgd"), "#!/nonexistent/python\n").unwrap();
        assert_eq!(bgd_version(&bin.join("bgd")).unwrap(), "0.9.1");
        let choice = choose(Some(&bin.join("bgd")), Some("0.4.4"), None).unwrap();
        assert_eq!((choice.version.as_str(), choice.why.as_str()), ("0.9.1", "the bgd given by --bgd"));
        std::fs::remove_dir(dir.path().join("lib/python3.13/site-packages/buildgrid-0.9.1.dist-info")).unwrap();
        assert!(bgd_version(&bin.join("bgd")).unwrap_err().0.contains("cannot tell which BuildGrid"));
    }

    #[test]
    fn an_interpreter_too_old_for_a_pinned_release_is_refused_with_why() {
        let err = choose(None, Some("0.9.1"), Some(Path::new("/nonexistent/python3"))).unwrap_err().0;
        assert!(err.contains("BuildGrid 0.9.1 needs Python >= 3.13") && err.contains("--python"), "{err}");
        assert!(choose(None, Some("0.5.0"), None).unwrap_err().0.contains("provisions 0.9.1 and 0.4.4"));
        let fallback = Choice {
            source: BgdSource::Provision(&RELEASES[1], None),
            version: "0.4.4".into(),
            why: "no Python >= 3.13 found; --python to choose".into(),
        };
        assert_eq!(fallback.line(), "BuildGrid 0.4.4: no Python >= 3.13 found; --python to choose");
    }
}
