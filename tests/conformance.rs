//! `cargo test --test conformance`: every check as a test (libtest-mimic), so
//! the usual filters work (`cargo test --test conformance -- platform.`).
//!
//! Target: `REAPI_ENDPOINT` (+ `REAPI_INSTANCE`) when set, else the cluster
//! named by `REAPI_CLUSTER` (default `local`), started once on first use and
//! stopped at the end. With `REAPI_EXPECT=FILE` a test passes when the verdict
//! is the expected one; against the default local cluster the expectations in
//! `fixtures/expectations/local.yaml` apply. Otherwise FAIL and ERROR fail the
//! test, and PASS, WARN and SKIP pass it.

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
    // A cluster the harness starts has a known state, kept in fixtures/expectations.
    let expect_path = std::env::var("REAPI_EXPECT").ok().or_else(|| {
        if run.endpoint.is_some() || run.buildstream_config.is_some() {
            return None;
        }
        // The file whose `target:` (or `also:`) names the cluster.
        let cluster = run.cluster.as_deref().unwrap_or("local");
        let cluster = reapi_conformance::cluster::lookup(cluster).map_or(cluster, |e| e.name);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/expectations");
        let mut files: Vec<_> = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).collect();
        files.sort();
        files
            .into_iter()
            .find(|f| ExpectationFile::load(f).is_ok_and(|e| e.applies_to(cluster)))
            .map(|f| f.display().to_string())
    });
    let expectations = expect_path.map(|p| {
        ExpectationFile::load(p.as_ref()).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        })
    });
    let shared = Arc::new(Shared {
        runtime: tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime"),
        cluster: Mutex::new(None),
        harness: OnceLock::new(),
        args: run,
    });
    let expectations = Arc::new(expectations);
    let trials = checks
        .into_iter()
        .map(|check| {
            let shared = shared.clone();
            let expectations = expectations.clone();
            let name = check.id.clone();
            let kind = check.suite.clone();
            Trial::test(name, move || {
                let harness = shared.harness().map_err(|e| Failed::from(format!("ERROR: {e}")))?;
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
                match expectations.as_ref() {
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
    let conclusion = libtest_mimic::run(&args, trials);
    shared.stop();
    // Give the runtime a moment to finish cancelled RPCs before exit.
    std::thread::sleep(Duration::from_millis(10));
    conclusion.exit();
}
