//! `--cluster buildfarm`: Buildfarm's server and one shard worker (the deploy
//! jars the user has) with Redis as the backplane.
//!
//! Buildfarm binds every interface and its worker has no bind option, so the
//! whole cluster runs in a private network namespace with loopback only
//! (`netns`): Redis, then the server, then the worker, each on its usual
//! loopback port inside, and the harness reaches the server through a unix
//! socket in the run directory relayed into the namespace. The configuration
//! is `compose/buildfarm/config.yml`, the file `compose/buildfarm.yml`
//! mounts, with only the addresses changed (`NATIVE_OVERRIDES`);
//! `buildfarm:defaults` also leaves out [`WORKER_FIXES`].
//! docs/buildfarm.md has the details.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::netns::{NetNs, Relay};
use super::{Cluster, ClusterError, ManagedProcess, RunProcesses};
use crate::connection::ConnectOptions;

/// The deploy jars, in start order.
pub const JARS: [&str; 2] = ["buildfarm-server_deploy.jar", "buildfarm-shard-worker_deploy.jar"];

/// The shared configuration.
pub const CONFIG: &str = include_str!("../../compose/buildfarm/config.yml");

/// Ports inside the namespace (the configuration's).
const REDIS_PORT: u16 = 6379;
const SERVER_PORT: u16 = 8980;
const WORKER_PORT: u16 = 8981;

/// The oldest Java Buildfarm runs on.
const JAVA_MIN: u32 = 21;

const HOW_TO_GET: &str = "Buildfarm publishes the server and shard-worker deploy jars with its GitHub releases \
     (github.com/bazelbuild/bazel-buildfarm); put both in one directory and pass --buildfarm-dir DIR \
     (or REAPI_BUILDFARM_DIR)";

/// A file the cluster runs: where, and its sha256 (recorded in every report).
#[derive(Clone, Debug)]
pub struct Jar {
    /// Its file name, one of [`JARS`].
    pub name: &'static str,
    /// Where it is, symlinks resolved.
    pub path: PathBuf,
    /// SHA-256 of its content, in hex.
    pub sha256: String,
}

/// The Java runtime found.
#[derive(Clone, Debug)]
pub struct Java {
    /// The `java` executable.
    pub path: PathBuf,
    /// First line of `java -version`, e.g. `openjdk version "25.0.1" 2025-10-21 LTS`.
    pub version: String,
}

fn sha256_of(path: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Finds both jars in `dir`, else in `REAPI_BUILDFARM_DIR` (also for `serve`
/// and `cargo test`); one line naming what is missing and how to get it.
pub fn find_jars(dir: Option<&Path>) -> Result<Vec<Jar>, String> {
    let from_env = std::env::var_os("REAPI_BUILDFARM_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    let Some(dir) = dir.or(from_env.as_deref()) else {
        return Err(format!("Buildfarm's {} are needed; {HOW_TO_GET}", JARS.join(" and ")));
    };
    let missing: Vec<&str> = JARS.iter().copied().filter(|j| !dir.join(j).is_file()).collect();
    if !missing.is_empty() {
        return Err(format!("Buildfarm's {} not found in {}; {HOW_TO_GET}", missing.join(", "), dir.display()));
    }
    JARS.iter()
        .map(|name| {
            let path = std::fs::canonicalize(dir.join(name)).unwrap_or_else(|_| dir.join(name));
            Ok(Jar { name, sha256: sha256_of(&path)?, path })
        })
        .collect()
}

/// The major version in `java -version`'s first line (`"21.0.2"` → 21,
/// `"1.8.0_392"` → 8).
fn java_major(line: &str) -> Option<u32> {
    let quoted = line.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '+', '_']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// `java -version`'s first line and major version, or why not.
fn probe_java(path: &Path) -> Result<(String, u32), String> {
    let out = std::process::Command::new(path)
        .arg("-version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(" version ")).unwrap_or_default().trim().to_string();
    match java_major(&line) {
        Some(major) => Ok((line, major)),
        None => Err(format!("{} -version says no version", path.display())),
    }
}

/// The Java runtime: `named` (--java), else `REAPI_JAVA`, else the first Java
/// 21 or newer of `java` on PATH and `/usr/lib/jvm/*/bin/java` (newest first).
pub fn find_java(named: Option<&Path>) -> Result<Java, String> {
    let from_env = std::env::var_os("REAPI_JAVA").filter(|d| !d.is_empty()).map(PathBuf::from);
    if let Some(path) = named.map(Path::to_path_buf).or(from_env) {
        let (version, major) = probe_java(&path)?;
        if major < JAVA_MIN {
            return Err(format!("{} is Java {major}; Buildfarm needs Java {JAVA_MIN} or newer", path.display()));
        }
        return Ok(Java { path, version });
    }
    let mut candidates: Vec<PathBuf> = super::provision::which("java").into_iter().collect();
    let mut jvms: Vec<PathBuf> = std::fs::read_dir("/usr/lib/jvm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/java"))
        .filter(|p| p.is_file())
        .collect();
    jvms.sort();
    candidates.extend(jvms);
    let mut found: Vec<(u32, Java)> = candidates
        .into_iter()
        .filter_map(|path| probe_java(&path).ok().map(|(version, major)| (major, Java { path, version })))
        .filter(|(major, _)| *major >= JAVA_MIN)
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().next().map(|(_, java)| java).ok_or_else(|| {
        format!(
            "no Java {JAVA_MIN} or newer found (PATH, /usr/lib/jvm); Buildfarm needs one: install it \
             (e.g. Debian's openjdk-21-jre-headless) or pass --java FILE (or REAPI_JAVA)"
        )
    })
}

/// Settings of one Buildfarm cluster.
#[derive(Clone, Debug)]
pub struct BuildfarmOptions {
    /// The server and shard-worker deploy jars, in [`JARS`] order.
    pub jars: Vec<Jar>,
    /// The runtime that runs them (Java 21 or newer).
    pub java: Java,
    /// The `redis-server` executable, Buildfarm's backplane.
    pub redis: PathBuf,
    /// The ISA the worker takes, in BuildStream's naming.
    pub isa: String,
    /// The instance name every request of the harness names.
    pub instance: String,
    /// Leave out [`WORKER_FIXES`], so the shard worker runs with its own
    /// defaults there: how a deployment that only took Buildfarm's example
    /// configuration runs (`buildfarm:defaults`).
    pub worker_defaults: bool,
}

/// Builds the options from what is found, or says in one line what is missing.
pub fn options(dir: Option<&Path>, java: Option<&Path>, isa: &str, instance: &str) -> Result<BuildfarmOptions, String> {
    let jars = find_jars(dir)?;
    let java = find_java(java)?;
    let redis = super::provision::which("redis-server")
        .ok_or("Buildfarm's backplane needs redis-server on PATH (Debian's redis-server package)")?;
    Ok(BuildfarmOptions {
        jars,
        java,
        redis,
        isa: isa.to_string(),
        instance: instance.to_string(),
        worker_defaults: false,
    })
}

/// The worker settings of the shared configuration that differ from the
/// shard worker's defaults and that BuildStream's actions need: without
/// them its outputs are requeued for ever (docs/buildfarm.md).
pub const WORKER_FIXES: [&str; 2] = ["createSymlinkOutputs", "linkInputDirectories"];

/// What the native cluster changes in the shared configuration: addresses
/// and directories only (a unit test holds the rest equal to compose's).
pub const NATIVE_OVERRIDES: [&str; 3] = ["backplane.redisUri", "worker.publicName", "worker.root"];

/// The configuration the native cluster writes: the shared one with the
/// addresses inside the namespace, the worker's root in the run directory,
/// and the worker's ISA; with `worker_defaults`, without [`WORKER_FIXES`].
pub fn native_config(dir: &Path, isa: &str, worker_defaults: bool) -> Result<String, String> {
    use serde_yaml_ng::Value;
    let mut config: Value =
        serde_yaml_ng::from_str(CONFIG).map_err(|e| format!("compose/buildfarm/config.yml: {e}"))?;
    config["backplane"]["redisUri"] = Value::from(format!("redis://127.0.0.1:{REDIS_PORT}"));
    config["worker"]["publicName"] = Value::from(format!("127.0.0.1:{WORKER_PORT}"));
    config["worker"]["root"] = Value::from(dir.join("worker").display().to_string());
    set_isa(&mut config, isa);
    if worker_defaults {
        let worker = config["worker"].as_mapping_mut().ok_or("compose/buildfarm/config.yml has no worker section")?;
        for key in WORKER_FIXES {
            worker.remove(key);
        }
    }
    serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())
}

/// Sets the ISA of the queue and of the worker's match settings.
fn set_isa(config: &mut serde_yaml_ng::Value, isa: &str) {
    use serde_yaml_ng::Value;
    let set = |list: &mut Value| {
        for p in list.as_sequence_mut().into_iter().flatten() {
            if p["name"] == "ISA" {
                p["value"] = Value::from(isa);
            }
        }
    };
    if let Some(queues) = config["backplane"]["queues"].as_sequence_mut() {
        queues.iter_mut().for_each(|q| set(&mut q["properties"]));
    }
    set(&mut config["worker"]["dequeueMatchSettings"]["properties"]);
}

/// Fields drop in order: the relay, then the processes (worker, server,
/// Redis) and the run directory, and last the namespace, which goes with
/// its last process.
struct Running {
    relay: Option<Relay>,
    /// Redis, server, worker (in start order), in the run directory.
    started: RunProcesses,
    netns: Option<NetNs>,
}

/// A Buildfarm cluster: Redis, the server and one shard worker in a private network
/// namespace, reached through a unix socket in the run directory.
pub struct Buildfarm {
    /// What to run, as `options` found it.
    pub options: BuildfarmOptions,
    running: Option<Running>,
    timings: Vec<(String, Duration)>,
}

impl Buildfarm {
    /// An adapter for `options`; nothing starts until it is started.
    pub fn new(options: BuildfarmOptions) -> Self {
        Buildfarm { options, running: None, timings: Vec::new() }
    }

    async fn launch(&mut self, run: &mut Running) -> Result<ConnectOptions, ClusterError> {
        let dir = run.started.dir.clone();
        let err = |what: &str, e: &dyn std::fmt::Display| ClusterError(format!("{what}: {e}"));
        for sub in ["worker", "tmp", "redis"] {
            std::fs::create_dir(dir.join(sub)).map_err(|e| err(&format!("cannot create {sub}"), &e))?;
        }
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            native_config(&dir, &self.options.isa, self.options.worker_defaults).map_err(ClusterError)?,
        )
        .map_err(|e| err("cannot write config.yml", &e))?;
        let step = Instant::now();
        let netns = NetNs::new().map_err(ClusterError)?;
        self.timings.push(("private network namespace".into(), step.elapsed()));

        let step = Instant::now();
        let mut redis = std::process::Command::new(&self.options.redis);
        redis
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.join("redis"))
            .current_dir(&dir);
        netns.enter(&mut redis);
        run.started.processes.push(
            ManagedProcess::spawn("redis-server", redis, &dir.join("redis.log"))
                .map_err(|e| err("cannot start redis-server", &e))?,
        );
        run.netns = Some(netns);
        let netns = run.netns.as_ref().expect("just set");
        run.relay = Some(netns.relay(&dir.join("server.sock"), SERVER_PORT).map_err(ClusterError)?);
        self.timings.push(("redis-server start".into(), step.elapsed()));

        for (jar, name) in self.options.jars.iter().zip(["server", "worker"]) {
            let mut java = std::process::Command::new(&self.options.java.path);
            java.arg(format!("-Djava.io.tmpdir={}", dir.join("tmp").display()))
                .arg("-jar")
                .arg(&jar.path)
                .arg(&config)
                .current_dir(&dir)
                .env("TMPDIR", dir.join("tmp"));
            netns.enter(&mut java);
            run.started.processes.push(
                ManagedProcess::spawn(&format!("buildfarm {name}"), java, &dir.join(format!("{name}.log")))
                    .map_err(|e| err(&format!("cannot start {}", jar.path.display()), &e))?,
            );
        }

        let step = Instant::now();
        let socket = run.relay.as_ref().expect("set above").socket().display().to_string();
        let connect = ConnectOptions {
            instance: self.options.instance.clone(),
            ..ConnectOptions::endpoint(format!("unix:{socket}"))
        };
        // The worker has registered and takes work.
        let (vars, limit) = (crate::action::Vars::for_host(), Duration::from_secs(120));
        super::ready::until_trivial_action_completes(&connect, &vars, &mut run.started.processes, limit, "Buildfarm")
            .await?;
        self.timings.push(("server and worker up, a trivial action completed".into(), step.elapsed()));
        Ok(connect)
    }
}

impl Cluster for Buildfarm {
    fn name(&self) -> String {
        let jars: Vec<String> =
            self.options.jars.iter().map(|j| format!("{} sha256:{}", j.path.display(), j.sha256)).collect();
        let (name, worker) = if self.options.worker_defaults {
            ("buildfarm:defaults", format!(" with the worker's defaults for {}", WORKER_FIXES.join(" and ")))
        } else {
            ("buildfarm", String::new())
        };
        format!(
            "{name} (Buildfarm server + shard worker{worker} + Redis in a private network namespace; {}; {} ({}))",
            jars.join(", "),
            self.options.java.path.display(),
            self.options.java.version
        )
    }

    fn server(&self) -> Option<&'static str> {
        Some("buildfarm")
    }

    fn died(&mut self) -> Option<String> {
        let run = self.running.as_mut()?;
        super::disk::harness_fault(&run.started.dir, run.started.processes.iter_mut())
    }

    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        Box::pin(async move {
            if self.running.is_some() {
                self.stop().await;
            }
            self.timings.clear();
            let dir = super::rundir::create("buildfarm", false)?;
            let mut run = Running { relay: None, started: RunProcesses::new(dir), netns: None };
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
            run.relay.take();
            // Worker, server, then Redis; each gets SIGTERM and a short grace.
            run.started.stop_all().await;
            // Dropping `run` closes the namespace and removes the directory.
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_config_differs_from_compose_only_in_addresses() {
        use serde_yaml_ng::Value;
        let compose: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/buildfarm/config.yml"))
                .unwrap(),
        )
        .unwrap();
        let mut native: Value =
            serde_yaml_ng::from_str(&native_config(Path::new("/run/x"), "x86-64", false).unwrap()).unwrap();
        assert_eq!(native["worker"]["root"], "/run/x/worker");
        for key in NATIVE_OVERRIDES {
            let (section, field) = key.split_once('.').unwrap();
            assert!(!compose[section][field].is_null(), "compose/buildfarm/config.yml lacks {key}");
            native[section][field] = compose[section][field].clone();
        }
        assert_eq!(native, compose, "the native configuration differs from compose's beyond {NATIVE_OVERRIDES:?}");
        // compose/buildfarm.yml mounts the directory holding this file.
        let compose_file = include_str!("../../compose/buildfarm.yml");
        assert!(compose_file.contains("./buildfarm:/config:ro") && compose_file.contains("/config/config.yml"));
    }

    #[test]
    fn the_settings_a_correct_deployment_needs_are_there() {
        let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(CONFIG).unwrap();
        assert!(config["server"]["maxInboundMessageSizeBytes"].as_u64().unwrap() > 4 * 1024 * 1024 + 65536);
        assert_eq!(config["worker"]["createSymlinkOutputs"], true);
        assert_eq!(config["worker"]["linkInputDirectories"], false);
        assert_eq!(config["server"]["port"].as_u64(), Some(SERVER_PORT as u64));
        assert_eq!(config["worker"]["port"].as_u64(), Some(WORKER_PORT as u64));
    }

    #[test]
    fn the_isa_is_the_workers_and_the_queues() {
        let native: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&native_config(Path::new("/r"), "aarch64", false).unwrap()).unwrap();
        assert_eq!(native["backplane"]["queues"][0]["properties"][1]["value"], "aarch64");
        assert_eq!(native["worker"]["dequeueMatchSettings"]["properties"][1]["value"], "aarch64");
    }

    #[test]
    fn worker_defaults_leave_out_exactly_the_worker_fixes() {
        use serde_yaml_ng::Value;
        let fixed: Value = serde_yaml_ng::from_str(&native_config(Path::new("/r"), "x86-64", false).unwrap()).unwrap();
        let mut defaults: Value =
            serde_yaml_ng::from_str(&native_config(Path::new("/r"), "x86-64", true).unwrap()).unwrap();
        for key in WORKER_FIXES {
            assert!(!fixed["worker"][key].is_null(), "the shared configuration lacks worker.{key}");
            assert!(defaults["worker"][key].is_null(), "worker.{key} still set");
            defaults["worker"][key] = fixed["worker"][key].clone();
        }
        assert_eq!(defaults, fixed);
    }

    #[test]
    fn java_versions_are_read() {
        assert_eq!(java_major(r#"openjdk version "25.0.1" 2025-10-21 LTS"#), Some(25));
        assert_eq!(java_major(r#"openjdk version "17.0.9" 2023-10-17"#), Some(17));
        assert_eq!(java_major(r#"java version "1.8.0_392""#), Some(8));
        assert_eq!(java_major(r#"openjdk version "21-ea" 2023-09-19"#), Some(21));
        assert_eq!(java_major("nothing"), None);
    }

    #[test]
    fn missing_jars_are_named_with_how_to_get_them() {
        let why = find_jars(Some(Path::new("/nonexistent/reapi-conformance"))).unwrap_err();
        assert!(why.contains("buildfarm-server_deploy.jar, buildfarm-shard-worker_deploy.jar not found in"), "{why}");
        assert!(why.contains("--buildfarm-dir") && !why.contains('\n'), "{why}");
    }
}
