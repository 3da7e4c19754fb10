//! Clusters the harness can run against. Each is a small adapter that makes a
//! REAPI endpoint available and takes it away again.

use futures_util::future::BoxFuture;

use crate::connection::ConnectOptions;

pub mod buildbarn;
pub mod buildfarm;
pub mod buildgrid;
pub mod compose;
mod disk;
pub mod endpoint;
pub mod local;
pub mod netns;
mod process;
pub mod provision;
pub mod ready;
pub mod rundir;

pub use crate::worker::{descendants, kill_all};
pub use process::{ManagedProcess, RunProcesses};

/// What a named cluster is built from: the run's settings that clusters use.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Where buildbox binaries are (default: provisioned into the cache).
    pub buildbox_dir: Option<std::path::PathBuf>,
    /// BuildGrid's `bgd` (default: provisioned into the cache).
    pub bgd: Option<std::path::PathBuf>,
    /// The BuildGrid release to provision (default: the newest this machine can run).
    pub buildgrid_version: Option<String>,
    /// The Python interpreter BuildGrid is provisioned with (default: found).
    pub python: Option<std::path::PathBuf>,
    /// Directory with Buildbarn's programs (default: PATH).
    pub buildbarn_dir: Option<std::path::PathBuf>,
    /// Directory with Buildfarm's deploy jars (default: REAPI_BUILDFARM_DIR).
    pub buildfarm_dir: Option<std::path::PathBuf>,
    /// The Java runtime for Buildfarm (default: REAPI_JAVA, else found).
    pub java: Option<std::path::PathBuf>,
    /// Checks run at once, so the cluster can take that many actions.
    pub jobs: usize,
    /// The ISA workers advertise, in BuildStream's naming.
    pub isa: String,
    /// Instance name to serve.
    pub instance: String,
}

/// One cluster the harness can start by name: the only place a cluster is
/// named. The CLI's `--cluster` values and errors, `REAPI_CLUSTER` in
/// `cargo test` and the README's table all come from [`REGISTRY`].
pub struct ClusterEntry {
    /// `--cluster` value, e.g. `buildgrid:host`.
    pub name: &'static str,
    /// Other names for the same cluster.
    pub aliases: &'static [&'static str],
    /// One line for `--help` and the README.
    pub description: &'static str,
    /// Expectation file of its verdicts, relative to the repository root.
    pub expectations: Option<&'static str>,
    /// Builds the adapter; an `Err` says in one line why it is not available.
    pub make: fn(&ClusterSettings) -> Result<Box<dyn Cluster>, String>,
    /// Whether tests/buildstream_agreement.rs builds the fixture project on
    /// it with real `bst` (where `make` succeeds on the machine).
    pub agreement: bool,
}

/// Every cluster the harness can start. Adding one: an adapter module and a
/// row here (docs/adding-a-cluster.md).
pub const REGISTRY: &[ClusterEntry] = &[
    ClusterEntry {
        name: "local",
        aliases: &[],
        description: "buildbox-casd with local execution through buildbox-run (bubblewrap): BuildStream's own executor",
        expectations: Some("fixtures/expectations/local.yaml"),
        make: |s| Ok(Box::new(local::Local::new(s.buildbox_dir.clone(), s.jobs.max(4)))),
        agreement: true,
    },
    ClusterEntry {
        name: "buildgrid",
        aliases: &["buildgrid:bwrap"],
        description: "BuildGrid + PostgreSQL, bots running buildbox-run (bubblewrap): BuildStream's CI topology",
        expectations: Some("fixtures/expectations/buildgrid-bwrap.yaml"),
        make: |s| Ok(Box::new(buildgrid::BuildGrid::new(buildgrid_options(s, buildgrid::WorkerMode::BuildboxRun)))),
        agreement: true,
    },
    ClusterEntry {
        name: "buildgrid:host",
        aliases: &[],
        description:
            "BuildGrid + PostgreSQL, bots running actions on the host with no sandbox: a misconfigured cluster",
        expectations: Some("fixtures/expectations/buildgrid-host.yaml"),
        make: |s| Ok(Box::new(buildgrid::BuildGrid::new(buildgrid_options(s, buildgrid::WorkerMode::Host)))),
        agreement: true,
    },
    ClusterEntry {
        name: "buildbarn",
        aliases: &["buildbarn:chroot"],
        description:
            "Buildbarn (bb_storage, bb_scheduler, bb_worker, bb_runner with chrootIntoInputRoot and /dev nodes): \
                      what BuildStream deployments run; the programs come from --buildbarn-dir or PATH",
        expectations: Some("fixtures/expectations/buildbarn-chroot.yaml"),
        make: |s| buildbarn_cluster(s, true),
        agreement: true,
    },
    ClusterEntry {
        name: "buildbarn:plain",
        aliases: &[],
        description:
            "Buildbarn with bb_runner's defaults (no chroot: actions run in a directory on the worker's filesystem)",
        expectations: Some("fixtures/expectations/buildbarn-plain.yaml"),
        make: |s| buildbarn_cluster(s, false),
        agreement: true,
    },
    ClusterEntry {
        name: "buildfarm",
        aliases: &[],
        description: "Buildfarm (server, one shard worker, Redis) in a private network namespace with loopback only: \
                      no chroot; the deploy jars come from --buildfarm-dir, Java 21+ from --java or found",
        expectations: Some("fixtures/expectations/buildfarm.yaml"),
        make: |s| {
            let options = buildfarm::options(s.buildfarm_dir.as_deref(), s.java.as_deref(), &s.isa, &s.instance)?;
            Ok(Box::new(buildfarm::Buildfarm::new(options)))
        },
        // With the shared configuration's worker settings its elements fail
        // (the host's `/`) rather than hang in a requeue loop: the answer
        // predicts that, and the agreement test holds it to real builds.
        agreement: true,
    },
    ClusterEntry {
        name: "buildfarm:defaults",
        aliases: &[],
        description: "Buildfarm as `buildfarm`, but with the shard worker's own defaults for createSymlinkOutputs and \
                      linkInputDirectories: a deployment from Buildfarm's example configuration, where actions shaped \
                      like BuildStream's are requeued for ever",
        expectations: Some("fixtures/expectations/buildfarm-defaults.yaml"),
        make: |s| {
            let mut options = buildfarm::options(s.buildfarm_dir.as_deref(), s.java.as_deref(), &s.isa, &s.instance)?;
            options.worker_defaults = true;
            Ok(Box::new(buildfarm::Buildfarm::new(options)))
        },
        // Its elements hang: the answer must say so (ElementsBuild::Hang).
        agreement: true,
    },
    ClusterEntry {
        name: "compose:buildgrid",
        aliases: &[],
        description: "compose/buildgrid.yml: BuildGrid's published `nightly` images (0.9.x), brought up with \
                      `docker compose` (Docker, or Podman's API via DOCKER_HOST) and taken down at exit",
        expectations: None,
        make: |s| compose_cluster("buildgrid", s),
        agreement: false,
    },
    ClusterEntry {
        name: "compose:buildgrid:local",
        aliases: &[],
        description: "compose/buildgrid.yml with the images compose/local/build-images.sh builds (BuildGrid 0.9.1): \
                      the native `buildgrid` cluster in containers, needing no image registry",
        expectations: Some("fixtures/expectations/buildgrid-bwrap.yaml"),
        make: |s| compose_cluster("buildgrid:local", s),
        // Where `docker compose`, an engine and the image are found.
        agreement: true,
    },
    ClusterEntry {
        name: "compose:buildbarn",
        aliases: &[],
        description: "compose/buildbarn.yml: Buildbarn's published images",
        expectations: None,
        make: |s| compose_cluster("buildbarn", s),
        agreement: false,
    },
    ClusterEntry {
        name: "compose:buildfarm",
        aliases: &[],
        description: "compose/buildfarm.yml: Buildfarm's published images",
        expectations: None,
        make: |s| compose_cluster("buildfarm", s),
        agreement: false,
    },
];

fn compose_cluster(spec: &str, s: &ClusterSettings) -> Result<Box<dyn Cluster>, String> {
    Ok(Box::new(compose::Compose::new(spec, s)?))
}

fn buildbarn_cluster(s: &ClusterSettings, chroot: bool) -> Result<Box<dyn Cluster>, String> {
    let programs = buildbarn::find_programs(s.buildbarn_dir.as_deref())?;
    Ok(Box::new(buildbarn::Buildbarn::new(buildbarn::BuildbarnOptions {
        programs,
        chroot,
        jobs: s.jobs.max(4),
        isa: s.isa.clone(),
        instance: s.instance.clone(),
    })))
}

fn buildgrid_options(s: &ClusterSettings, mode: buildgrid::WorkerMode) -> buildgrid::BuildGridOptions {
    buildgrid::BuildGridOptions {
        bgd: s.bgd.clone(),
        version: s.buildgrid_version.clone(),
        python: s.python.clone(),
        buildbox_dir: s.buildbox_dir.clone(),
        mode,
        capacity: s.jobs.max(2),
        instance: s.instance.clone(),
        platform: vec![("OSFamily".into(), "linux".into()), ("ISA".into(), s.isa.clone())],
        ..buildgrid::BuildGridOptions::default()
    }
}

/// `--cluster`'s long help: `first_line`, then every registered cluster with its description.
pub fn registry_help(first_line: &str) -> String {
    let mut text = format!("{first_line}:");
    for e in REGISTRY {
        let aliases = if e.aliases.is_empty() { String::new() } else { format!(" (also {})", e.aliases.join(", ")) };
        text.push_str(&format!("\n  {}{aliases}: {}", e.name, e.description));
    }
    text.push_str(
        "\n  compose:FILE[,FILE]: a stack from your own compose files, brought up with `docker compose` \
         and taken down at exit (docs/adding-a-cluster.md says what the files must publish)",
    );
    text
}

/// The registry entry for `name` (or one of its aliases).
pub fn lookup(name: &str) -> Option<&'static ClusterEntry> {
    REGISTRY.iter().find(|e| e.name == name || e.aliases.contains(&name))
}

/// Builds the cluster called `name`, or says in one line why not.
pub fn named(name: &str, settings: &ClusterSettings) -> Result<Box<dyn Cluster>, String> {
    // The project's compose stacks are rows; any other `compose:` is the user's files.
    if let (None, Some(spec)) = (lookup(name), name.strip_prefix("compose:")) {
        return Ok(Box::new(
            compose::Compose::new(spec, settings).map_err(|why| format!("`--cluster {name}`: {why}"))?,
        ));
    }
    match lookup(name) {
        Some(entry) => (entry.make)(settings).map_err(|why| format!("`--cluster {name}` is not available: {why}")),
        None => {
            let known: Vec<&str> =
                REGISTRY.iter().flat_map(|e| std::iter::once(e.name).chain(e.aliases.iter().copied())).collect();
            Err(format!("unknown cluster `{name}` (known: {}; or give --endpoint URL)", known.join(", ")))
        }
    }
}

/// A cluster could not be provisioned or started (harness-side: exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

/// A REAPI cluster: started (or merely targeted) before a run, stopped after.
pub trait Cluster: Send {
    /// Short human description for reports, e.g. `local (buildbox-casd)`.
    fn name(&self) -> String;
    /// Provisions what is missing, starts processes, waits until the endpoint
    /// answers, and returns how to reach it.
    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>>;
    /// Stops everything it started; safe to call twice.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
    /// Checks the target's URLs and credential files before any work starts.
    fn validate(&self) -> Result<(), crate::connection::ConnectError> {
        Ok(())
    }
    /// A process this cluster started that has exited although nobody stopped
    /// it, e.g. "the harness's postgres exited (signal: 9)". Verdicts of a run
    /// during which this happened cannot blame the server.
    fn died(&mut self) -> Option<String> {
        None
    }
    /// Brings [`Cluster::died`] up to date before the run's verdicts are
    /// judged, for a cluster that learns of deaths by polling: a process
    /// that died just before the last check ended is still seen.
    fn settle(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// The server it runs, as named in `suites/servers/hints.yaml`, when known.
    fn server(&self) -> Option<&'static str> {
        None
    }
    /// Which release of that server runs, and why that one, for the report
    /// (e.g. "BuildGrid 0.9.1: the newest release, installed with Python 3.13").
    fn server_detail(&self) -> Option<String> {
        None
    }
    /// How long each step of the last start took, for `--timings`.
    fn startup_steps(&self) -> Vec<(String, std::time::Duration)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_is_in_the_readme_and_its_expectations_exist() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        for e in REGISTRY {
            let row = format!("| `--cluster {}`", e.name);
            assert!(readme.contains(&row), "README.md's cluster table has no row starting {row}");
            if let Some(file) = e.expectations {
                assert!(root.join(file).is_file(), "{}: expectation file {file} is missing", e.name);
            }
        }
    }
}
