//! `cargo test --test conformance`: every check as a test (libtest-mimic), so
//! the usual filters work (`cargo test --test conformance -- platform.`).
//!
//! Target: `REAPI_ENDPOINT` (+ `REAPI_INSTANCE`) when set, else the cluster
//! named by `REAPI_CLUSTER` (default `local`), started once on first use and
//! stopped at the end. With `REAPI_EXPECT=FILE` a test passes when the verdict
//! is the expected one; against a cluster the harness starts, the file of
//! `fixtures/expectations/` whose `target:` or `also:` names it applies
//! (`local.yaml` for the default local cluster), and of several such files
//! the one for the release that runs: a file named `…-vX.Y-….yaml` is for
//! release X.Y.* (as the started cluster names it, e.g. "BuildGrid 0.4.4"),
//! one without a release in its name for any other. Otherwise FAIL and ERROR
//! fail the test, and PASS, WARN and SKIP pass it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use reapi_conformance::cli::{cluster_for, default_run_args, run_settings, RunArgs};
use reapi_conformance::cluster::Cluster;
use reapi_conformance::expectations::ExpectationFile;
use reapi_conformance::runner::Harness;
use reapi_conformance::session::{select_checks, Profile, Selection};
use reapi_conformance::verdict::VerdictKind;

struct Shared {
    runtime: tokio::runtime::Runtime,
    cluster: Mutex<Option<Box<dyn Cluster>>>,
    harness: OnceLock<Result<Arc<Harness>, String>>,
    args: RunArgs,
    /// The expectation files that may apply; which one does is known once
    /// the cluster has started and says which release it runs.
    candidates: Vec<PathBuf>,
    expectations: OnceLock<Option<ExpectationFile>>,
}

/// The release an expectation file is for, from its name (`buildgrid-v0.4-bwrap.yaml`: "0.4").
fn release_in_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    name.split('-')
        .find_map(|part| part.strip_prefix('v').filter(|v| v.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_string)
}

/// Whether a cluster's description names release `release` ("0.4" matches "BuildGrid 0.4.4").
fn names_release(description: &str, release: &str) -> bool {
    description
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|word| word.trim_end_matches('.'))
        .any(|word| word == release || word.strip_prefix(release).is_some_and(|rest| rest.starts_with('.')))
}

/// Of the files that apply to the cluster, the one for the release it runs
/// (named in `description`), else the first one made for no release in
/// particular.
fn pick(candidates: &[PathBuf], description: &str) -> Option<PathBuf> {
    let for_release = candidates.iter().find(|f| release_in_name(f).is_some_and(|r| names_release(description, &r)));
    for_release.or_else(|| candidates.iter().find(|f| release_in_name(f).is_none())).cloned()
}

/// The CLI's own defaults (`run` with no flags), then the environment.
fn run_args() -> RunArgs {
    let mut args = default_run_args().expect("`run` parses without flags");
    args.cluster = std::env::var("REAPI_CLUSTER").ok();
    args.endpoint = std::env::var("REAPI_ENDPOINT").ok().filter(|s| !s.is_empty());
    args.buildstream_config = std::env::var_os("REAPI_BUILDSTREAM_CONFIG").map(Into::into);
    args.instance = std::env::var("REAPI_INSTANCE").unwrap_or_default();
    args.isa = std::env::var("REAPI_ISA").ok();
    args.buildbox_dir = std::env::var("REAPI_BUILDBOX_DIR").ok().map(Into::into);
    args.bgd = std::env::var("REAPI_BGD").ok().map(Into::into);
    args
}

impl Shared {
    /// Starts the cluster and connects, once, on the first test that needs it.
    fn harness(&self) -> Result<Arc<Harness>, String> {
        self.harness
            .get_or_init(|| {
                self.runtime.block_on(async {
                    let mut cluster = cluster_for(&self.args)?;
                    let target = cluster.start().await.map_err(|e| format!("cannot start the cluster: {e}"))?;
                    // The cluster now says which release runs: its expectations follow.
                    let description = format!("{} {}", cluster.name(), cluster.server_detail().unwrap_or_default());
                    self.expectations.get_or_init(|| {
                        let file = pick(&self.candidates, &description)?;
                        let name = file.file_name().unwrap_or_default().to_string_lossy();
                        eprintln!("expectations: {name} ({description})");
                        Some(load_or_exit(&file))
                    });
                    let (options, vars) = run_settings(&self.args)?;
                    *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
                    Harness::connect(&target, options, vars).await.map(Arc::new).map_err(|e| e.to_string())
                })
            })
            .clone()
    }

    fn stop(&self) {
        if let Some(mut c) = self.cluster.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.runtime.block_on(c.stop());
        }
    }
}

/// The choice among files for one cluster follows the release it names.
fn pick_follows_the_release() -> Result<(), Failed> {
    let files: Vec<PathBuf> = ["buildgrid-bwrap.yaml", "buildgrid-v0.4-bwrap.yaml"].map(PathBuf::from).to_vec();
    let cases = [
        (
            "buildgrid (BuildGrid 0.4.4 + PostgreSQL, …) BuildGrid 0.4.4: no Python >= 3.13 found",
            "buildgrid-v0.4-bwrap.yaml",
        ),
        ("buildgrid (BuildGrid 0.9.1 + PostgreSQL, …) BuildGrid 0.9.1: the newest release", "buildgrid-bwrap.yaml"),
        ("buildgrid (BuildGrid 0.40.1 + PostgreSQL)", "buildgrid-bwrap.yaml"),
        ("compose:buildgrid:local", "buildgrid-bwrap.yaml"),
    ];
    for (description, want) in cases {
        let got = pick(&files, description);
        if got.as_deref() != Some(Path::new(want)) {
            return Err(format!("{description}: picked {got:?}, not {want}").into());
        }
    }
    if pick(&files[1..], "local").is_some() {
        return Err("a file for another release was picked".into());
    }
    Ok(())
}

fn load_or_exit(path: &Path) -> ExpectationFile {
    ExpectationFile::load(path).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    })
}

fn main() {
    let args = Arguments::from_args();
    // Every check unless REAPI_PROFILE narrows it (buildstream, reapi, all).
    let profile = match std::env::var("REAPI_PROFILE").as_deref() {
        Ok("buildstream") => Profile::Buildstream,
        Ok("reapi") => Profile::Reapi,
        _ => Profile::All,
    };
    let (_, checks) = select_checks(&Selection { profile, ..Default::default() }).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let run = run_args();
    let expectations = OnceLock::new();
    let mut candidates = Vec::new();
    if let Ok(path) = std::env::var("REAPI_EXPECT") {
        let _ = expectations.set(Some(load_or_exit(Path::new(&path))));
    } else if run.endpoint.is_some() || run.buildstream_config.is_some() {
        let _ = expectations.set(None);
    } else {
        // A cluster the harness starts has a known state, kept in
        // fixtures/expectations: the files whose `target:` (or `also:`) names it.
        let cluster = run.cluster.as_deref().unwrap_or("local");
        let cluster = reapi_conformance::cluster::lookup(cluster).map_or(cluster, |e| e.name);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/expectations");
        let mut files: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.sort();
        candidates =
            files.into_iter().filter(|f| ExpectationFile::load(f).is_ok_and(|e| e.applies_to(cluster))).collect();
    }
    let shared = Arc::new(Shared {
        runtime: tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime"),
        cluster: Mutex::new(None),
        harness: OnceLock::new(),
        args: run,
        candidates,
        expectations,
    });
    let trials = checks
        .into_iter()
        .map(|check| {
            let shared = shared.clone();
            let name = check.id.clone();
            let kind = check.suite.clone();
            Trial::test(name, move || {
                let harness = shared.harness().map_err(|e| Failed::from(format!("ERROR: {e}")))?;
                let expectations = shared.expectations.get().and_then(Option::as_ref);
                let verdict = shared.runtime.block_on(reapi_conformance::runner::run_check(&harness, &check));
                let detail = || {
                    let mut s = format!("{} {}: {}", verdict.kind, check.id, verdict.reason);
                    for e in &verdict.evidence {
                        s.push_str(&format!("\n  {}: {}", e.label, e.observed));
                        if let Some(x) = &e.expected {
                            s.push_str(&format!(" (expected {x})"));
                        }
                    }
                    s
                };
                match expectations {
                    Some(file) => {
                        let want = file.expected(&check.id);
                        if verdict.kind == want {
                            Ok(())
                        } else {
                            Err(format!("expected {want}, got {}", detail()).into())
                        }
                    }
                    None => match verdict.kind {
                        VerdictKind::Fail | VerdictKind::Error => Err(detail().into()),
                        _ => Ok(()),
                    },
                }
            })
            .with_kind(kind)
        })
        .collect();
    let mut trials: Vec<Trial> = trials;
    trials.push(Trial::test("expectations::file-of-the-release-that-runs", pick_follows_the_release));
    let conclusion = libtest_mimic::run(&args, trials);
    shared.stop();
    // Give the runtime a moment to finish cancelled RPCs before exit.
    std::thread::sleep(Duration::from_millis(10));
    conclusion.exit();
}
