//! The kill matrix: every check PASSes on the faithful defect-injection
//! server and FAILs (WARN for a SHOULD) on each defect it names in
//! `killed_by` — never ERROR. A check that names no defect, or a defect that
//! no check notices, fails the test. The matrix is printed as a table.
//!
//! Each cell is its own test (libtest-mimic), named `DEFECT::CHECK`
//! (`faithful::CHECK` for the faithful server), so
//! `cargo test --test kill_matrix -- sandbox.dev-nodes` runs one check's cells.
//! Benign behaviours and models are one test each (`benign::NAME`,
//! `model::NAME`): they run every check on one server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

use defect_server::{Defect, DefectServer, Role};
use reapi_conformance::action::Vars;
use reapi_conformance::connection::ConnectOptions;
use reapi_conformance::expectations::{ExpectationFile, Expected};
use reapi_conformance::runner::{Harness, RunOptions};
use reapi_conformance::session::{select_checks, Profile, Selection};
use reapi_conformance::suite::{CheckSpec, OutcomeClass};
use reapi_conformance::verdict::{Verdict, VerdictKind};

/// Defects that no check notices yet, each with the reason. Everything here
/// is a gap in the suites, shown in the test output; keep it short.
const NOT_YET_NOTICED: &[(&str, &str)] = &[];

/// The checks that SKIP on each benign behaviour (`as Benign` on its row in
/// `defects!`): every other check must PASS with it switched on, so the
/// harness's own action shape never turns it into a finding (e.g.
/// Buildbarn's runner needs `/usr/bin/env`). Faults (`as Fault`) are ERROR
/// for every check (robustness.rs, faults.rs) and in no `killed_by`.
const BENIGN_SKIPS: &[(&str, &[&str])] = &[
    (
        "sha256-only",
        &[
            "digest-functions.cas-roundtrip",
            "digest-functions.unadvertised-refused",
            "digest-functions.wrong-length",
            "digest-functions.action-cache",
            "digest-functions.execute",
            "split-splice.split-blob",
            "split-splice.split-unknown",
            "split-splice.splice-blob",
            "split-splice.splice-digest-mismatch",
            "split-splice.fastcdc-chunks",
        ],
    ),
    ("runner-execs-env", &[]),
    ("operation-names-routed", &[]),
    ("working-dir-output-empty-path", &[]),
    (
        "get-tree-unimplemented",
        &["cas.get-tree-missing-root", "cas.get-tree-paged", "cas.get-tree-resumable", "cas.get-tree-partial"],
    ),
    ("query-write-status-unimplemented", &["cas.query-write-status-unknown", "cas.bytestream-resumable-write"]),
    (
        "no-compression",
        &[
            "cas.compressed-roundtrip",
            "cas.compressed-write-mismatch",
            "cas.compressed-read-limit",
            "cas.compressed-read-offset",
            "cas.compressed-write-existing",
            "cas.compressed-batch",
        ],
    ),
];

/// Models of real server configurations that cannot run on CI machines: the
/// defects that model them and the expectation file their verdicts must match.
const MODELS: &[(&str, &[&str], &str)] = &[
    (
        "buildbarn-chroot",
        &[
            "runner-execs-env",
            "no-proc",
            "no-dev-shm",
            "shared-network",
            "get-tree-unimplemented",
            "query-write-status-unimplemented",
            "exact-platform-match",
            "operation-names-routed",
            // What the real run (fixtures/expectations/buildbarn-chroot.yaml)
            // showed besides: node properties ignored, and ByteStream reads
            // that answer other codes than the spec's (same verdicts).
            "mtime-ignored",
            "subtree-read-only-ignored",
            "unknown-node-properties-ignored",
            "read-limit-ignored",
            "bytestream-offset-ignored",
            "negative-offset-from-start",
        ],
        "fixtures/models/buildbarn-chroot.yaml",
    ),
    // A scheduler that waits for a worker to join: the scheduler suite's
    // "queued, then leased" check applies only there.
    ("queueing-scheduler", &["unmatched-platform-queued"], "fixtures/models/queueing-scheduler.yaml"),
];

/// Defects that leave the action unfinished for ever: their checks must
/// record the outcome as queued, which the readiness answer reads as "elements
/// hang" (an answer that came back wrong would read as "elements fail").
const HANG_DEFECTS: &[&str] = &["requeue-loop", "linked-input-dirs-requeue-loop"];

/// Checks that do not apply to the faithful server, which answers a platform
/// no worker has with FAILED_PRECONDITION; the models above cover them.
const FAITHFUL_SKIPS: &[&str] = &["scheduler.lease-when-matching-bot-appears"];

fn options() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(30),
        queue_wait: Duration::from_millis(1500),
        rpc_timeout: Duration::from_secs(10),
        jobs: 4,
        buildbox_dir: None,
        // Longer than the idle-stream-reset defect's 1 s, short enough for a test.
        idle_stream: Some(Duration::from_secs(2)),
    }
}

/// Servers and results shared by the trials: one server per set of defects,
/// started on first use and stopped when every trial has run.
struct Shared {
    runtime: tokio::runtime::Runtime,
    servers: Mutex<HashMap<Vec<&'static str>, Arc<DefectServer>>>,
    /// Verdicts of the cells that ran, for the printed matrix: row → check → verdict.
    cells: Mutex<BTreeMap<String, BTreeMap<String, VerdictKind>>>,
}

impl Shared {
    fn server(&self, defects: &[Defect]) -> Result<Arc<DefectServer>, Failed> {
        let key: Vec<&'static str> = defects.iter().map(|d| d.name()).collect();
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = servers.get(&key) {
            return Ok(server.clone());
        }
        let server = Arc::new(
            self.runtime.block_on(DefectServer::start(defects)).map_err(|e| format!("defect server starts: {e}"))?,
        );
        servers.insert(key, server.clone());
        Ok(server)
    }

    fn run(&self, defects: &[Defect], checks: &[CheckSpec]) -> Result<Vec<Verdict>, Failed> {
        let server = self.server(defects)?;
        let target = ConnectOptions {
            bots_endpoint: Some(server.bots_endpoint()),
            ..ConnectOptions::endpoint(server.endpoint())
        };
        self.runtime.block_on(async {
            let harness = Harness::connect(&target, options(), Vars::for_host())
                .await
                .map_err(|e| format!("defect server answers GetCapabilities: {e}"))?;
            Ok(reapi_conformance::runner::run_all(&harness, checks, |_| {})
                .await
                .into_iter()
                .map(|r| r.verdict)
                .collect())
        })
    }

    fn record(&self, row: &str, check: &str, kind: VerdictKind) {
        self.cells.lock().unwrap_or_else(|p| p.into_inner()).entry(row.into()).or_default().insert(check.into(), kind);
    }

    fn stop_all(&self) {
        let servers: Vec<Arc<DefectServer>> =
            self.servers.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, s)| s).collect();
        for server in servers {
            if let Ok(server) = Arc::try_unwrap(server) {
                self.runtime.block_on(server.stop());
            }
        }
    }
}

fn short(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Pass => "pass",
        VerdictKind::Fail => "FAIL",
        VerdictKind::Warn => "WARN",
        VerdictKind::Error => "ERR!",
        VerdictKind::Skip => "skip",
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        runtime: tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime"),
        servers: Mutex::new(HashMap::new()),
        cells: Mutex::new(BTreeMap::new()),
    })
}

/// The defects a check must be killed by, in the kill matrix's sense.
fn matrix_defects() -> Vec<Defect> {
    Defect::ALL.iter().copied().filter(|d| d.role() == Role::Finding).collect()
}

/// Every check on one server must get the verdict `expectations` gives it.
fn whole_run(
    name: &str,
    defects: &[Defect],
    expectations: &ExpectationFile,
    checks: &[CheckSpec],
) -> Result<(), Failed> {
    let verdicts = shared().run(defects, checks)?;
    let mut problems = Vec::new();
    for (c, v) in checks.iter().zip(&verdicts) {
        let want = expectations.expected(&c.id);
        if v.kind != want {
            problems.push(format!("{} on {name}: expected {want}, got {}: {}", c.id, v.kind, v.reason));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // Cells wait on sandboxes far more than they compute.
    if args.test_threads.is_none() {
        args.test_threads = Some(6);
    }
    let (_, checks) =
        select_checks(&Selection { profile: Profile::All, ..Default::default() }).expect("bundled suites load");
    let checks: Arc<Vec<CheckSpec>> = Arc::new(checks);
    let mut trials = Vec::new();

    // Every name in `killed_by` is a real defect, every check names one, and
    // every defect is noticed by some check.
    let all = checks.clone();
    trials.push(Trial::test("meta::every-check-names-known-defects", move || {
        let mut problems = Vec::new();
        for c in all.iter() {
            if c.killed_by.is_empty() {
                problems.push(format!("{} names no defect that kills it", c.id));
            }
            for name in &c.killed_by {
                if name.parse::<Defect>().is_err() {
                    problems.push(format!("{}: unknown defect `{name}`", c.id));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n").into())
        }
    }));
    let all = checks.clone();
    trials.push(Trial::test("meta::every-defect-is-noticed", move || {
        let unnoticed: Vec<String> = matrix_defects()
            .into_iter()
            .filter(|d| !all.iter().any(|c| c.killed_by.iter().any(|k| k == d.name())))
            .filter(|d| !NOT_YET_NOTICED.iter().any(|(n, _)| *n == d.name()))
            .map(|d| format!("defect `{}` ({}) is noticed by no check", d.name(), d.describe()))
            .collect();
        if unnoticed.is_empty() {
            Ok(())
        } else {
            Err(unnoticed.join("\n").into())
        }
    }));

    // Faithful server: every check passes.
    for c in checks.iter() {
        let check = c.clone();
        trials.push(Trial::test(format!("faithful::{}", c.id), move || {
            let want = if FAITHFUL_SKIPS.contains(&check.id.as_str()) { VerdictKind::Skip } else { VerdictKind::Pass };
            let v = shared().run(&[], std::slice::from_ref(&check))?.remove(0);
            shared().record("(faithful)", &check.id, v.kind);
            if v.kind != want {
                return Err(format!("{} is {} on the faithful server: {}", check.id, v.kind, v.reason).into());
            }
            Ok(())
        }));
    }

    // Each defect: the checks naming it must notice it, with evidence.
    for defect in matrix_defects() {
        for c in checks.iter().filter(|c| c.killed_by.iter().any(|k| k == defect.name())) {
            let check = c.clone();
            trials.push(Trial::test(format!("{}::{}", defect.name(), c.id), move || {
                let want = VerdictKind::for_unmet(check.severity);
                let v = shared().run(&[defect], std::slice::from_ref(&check))?.remove(0);
                shared().record(defect.name(), &check.id, v.kind);
                if v.kind != want {
                    return Err(format!("expected {want}, got {}: {}", v.kind, v.reason).into());
                }
                if !v.evidence.iter().any(|e| e.expected.is_some()) {
                    return Err(format!("{} without evidence of what was expected: {v:?}", v.kind).into());
                }
                if HANG_DEFECTS.contains(&defect.name()) && v.outcome != Some(OutcomeClass::Queued) {
                    return Err(format!("a hang recorded as {:?}, not queued: {v:?}", v.outcome).into());
                }
                Ok(())
            }));
        }
    }

    // Benign behaviours and models: every verdict as the faithful server's or
    // as the model's expectation file says.
    for defect in Defect::ALL.iter().filter(|d| d.role() == Role::Benign) {
        let name = defect.name();
        let skips: &[&str] = BENIGN_SKIPS.iter().find(|(n, _)| *n == name).map_or(&[], |(_, s)| s);
        let all = checks.clone();
        trials.push(Trial::test(format!("benign::{name}"), move || {
            let skipped = Expected { verdict: VerdictKind::Skip, reason: format!("does not apply on {name}") };
            let expectations = skips.iter().chain(FAITHFUL_SKIPS).map(|id| (id.to_string(), skipped.clone())).collect();
            let file = ExpectationFile {
                target: name.to_string(),
                also: Vec::new(),
                extends: None,
                expectations,
                inherited: Default::default(),
                header: String::new(),
            };
            whole_run(name, &[*defect], &file, &all)
        }));
    }
    for (name, defects, file) in MODELS {
        let all = checks.clone();
        trials.push(Trial::test(format!("model::{name}"), move || {
            let defects: Vec<Defect> = defects
                .iter()
                .map(|d| d.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("model defect: {e}"))?;
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let expectations = ExpectationFile::load(&path)?;
            whole_run(&format!("model {name}"), &defects, &expectations, &all)
        }));
    }

    let conclusion = libtest_mimic::run(&args, trials);
    shared().stop_all();
    print_matrix(&checks);
    conclusion.exit();
}

/// The table of the cells that ran: rows are defects, columns are checks (numbered).
fn print_matrix(checks: &[CheckSpec]) {
    let cells = shared().cells.lock().unwrap_or_else(|p| p.into_inner());
    if cells.is_empty() {
        return;
    }
    let shown: Vec<&CheckSpec> = checks.iter().filter(|c| cells.values().any(|row| row.contains_key(&c.id))).collect();
    println!("\nkill matrix (faithful row first; columns are checks):");
    for (i, c) in shown.iter().enumerate() {
        println!("  [{i:>2}] {}", c.id);
    }
    let header: String = (0..shown.len()).map(|i| format!(" {i:>4}")).collect();
    println!("  {:<34}{header}", "defect");
    let rows = cells
        .get("(faithful)")
        .into_iter()
        .map(|r| ("(faithful)", r))
        .chain(cells.iter().filter(|(name, _)| name.as_str() != "(faithful)").map(|(name, r)| (name.as_str(), r)));
    for (name, row) in rows {
        let line: String =
            shown.iter().map(|c| format!(" {:>4}", row.get(&c.id).map(|k| short(*k)).unwrap_or("."))).collect();
        println!("  {name:<34}{line}");
    }
    for (name, why) in NOT_YET_NOTICED {
        println!("  not yet noticed by any check: {name} — {why}");
    }
}
