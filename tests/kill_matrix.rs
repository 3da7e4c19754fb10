//! The kill matrix: every check PASSes on the faithful defect-injection
//! server and FAILs (WARN for a SHOULD) on each defect it names in
//! `killed_by` — never ERROR. A check that names no defect, or a defect that
//! no check notices, fails the test. The matrix is printed as a table.

use std::collections::BTreeMap;
use std::time::Duration;

use defect_server::{Defect, DefectServer};
use reapi_conformance::action::Vars;
use reapi_conformance::cli::{select_checks, Profile, SelectArgs};
use reapi_conformance::connection::ConnectOptions;
use reapi_conformance::expectations::{ExpectationFile, Expected};
use reapi_conformance::runner::{Harness, RunOptions};
use reapi_conformance::suite::CheckSpec;
use reapi_conformance::verdict::{Verdict, VerdictKind};

/// Defects that no check notices yet, each with the reason. Everything here
/// is a gap in the suites, shown in the test output; keep it short.
const NOT_YET_NOTICED: &[(&str, &str)] = &[];

/// Defects that make the server unusable rather than non-conformant: checks
/// must report ERROR on them (tested in `robustness.rs`), so they are not
/// expected in any `killed_by`.
const FAULTS: &[&str] = &["hang", "slow", "stream-cut", "garbage", "wrong-digests", "executes-nothing"];

/// Behaviours real servers have that BuildStream does not mind, each with the
/// checks that SKIP because of it: every other check must PASS with it
/// switched on, so the harness's own action shape never turns it into a
/// finding (e.g. Buildbarn's runner needs `/usr/bin/env`).
const BENIGN: &[(&str, &[&str])] = &[
    ("runner-execs-env", &[]),
    ("get-tree-unimplemented", &["cas.get-tree-missing-root"]),
    ("query-write-status-unimplemented", &["cas.query-write-status-unknown"]),
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
        ],
        "fixtures/models/buildbarn-chroot.yaml",
    ),
    // A scheduler that waits for a worker to join: the scheduler suite's
    // "queued, then leased" check applies only there.
    ("queueing-scheduler", &["unmatched-platform-queued"], "fixtures/models/queueing-scheduler.yaml"),
];

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
    }
}

async fn run_on(server: &DefectServer, checks: &[&CheckSpec]) -> Vec<Verdict> {
    let target =
        ConnectOptions { bots_endpoint: Some(server.bots_endpoint()), ..ConnectOptions::endpoint(server.endpoint()) };
    let harness =
        Harness::connect(&target, options(), Vars::for_host()).await.expect("defect server answers GetCapabilities");
    let owned: Vec<CheckSpec> = checks.iter().map(|c| (*c).clone()).collect();
    harness.run_all(&owned, |_| {}).await.into_iter().map(|r| r.verdict).collect()
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

#[test]
fn every_check_is_killed_by_its_defects_and_passes_when_faithful() {
    let (_, checks) =
        select_checks(&SelectArgs { profile: Profile::All, ..Default::default() }).expect("bundled suites load");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut problems = Vec::new();

    // Every name in `killed_by` must be a real defect.
    for c in &checks {
        if c.killed_by.is_empty() {
            problems.push(format!("{} names no defect that kills it", c.id));
        }
        for name in &c.killed_by {
            if name.parse::<Defect>().is_err() {
                problems.push(format!("{}: unknown defect `{name}`", c.id));
            }
        }
    }

    // Faithful server: every check passes.
    let all: Vec<&CheckSpec> = checks.iter().collect();
    let faithful = rt.block_on(async {
        let server = DefectServer::start(&[]).await.expect("faithful server starts");
        let v = run_on(&server, &all).await;
        server.stop().await;
        v
    });
    for (c, v) in checks.iter().zip(&faithful) {
        let want = if FAITHFUL_SKIPS.contains(&c.id.as_str()) { VerdictKind::Skip } else { VerdictKind::Pass };
        if v.kind != want {
            problems.push(format!("{} is {} on the faithful server: {}", c.id, v.kind, v.reason));
        }
    }

    // Benign behaviours and models: every verdict as the faithful server's or
    // as the model's expectation file says.
    let mut runs: Vec<(String, Vec<Defect>, ExpectationFile)> = BENIGN
        .iter()
        .map(|(name, skips)| {
            let skipped = Expected { verdict: VerdictKind::Skip, reason: format!("does not apply on {name}") };
            let expectations = skips.iter().chain(FAITHFUL_SKIPS).map(|id| (id.to_string(), skipped.clone())).collect();
            let file = ExpectationFile { target: name.to_string(), expectations, header: String::new() };
            (name.to_string(), vec![name.parse().expect("benign behaviour is a defect")], file)
        })
        .collect();
    for (name, defects, file) in MODELS {
        let defects = defects.iter().map(|d| d.parse().expect("model defects exist")).collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        runs.push((format!("model {name}"), defects, ExpectationFile::load(&path).expect("model expectations load")));
    }
    for (name, defects, expectations) in &runs {
        let verdicts = rt.block_on(async {
            let server = DefectServer::start(defects).await.expect("defect server starts");
            let v = run_on(&server, &all).await;
            server.stop().await;
            v
        });
        for (c, v) in checks.iter().zip(&verdicts) {
            let want = expectations.expected(&c.id);
            if v.kind != want {
                problems.push(format!("{} on {name}: expected {want}, got {}: {}", c.id, v.kind, v.reason));
            }
        }
    }

    // Each defect: the checks naming it must notice it.
    let mut matrix: BTreeMap<&str, BTreeMap<&str, VerdictKind>> = BTreeMap::new();
    for defect in Defect::ALL
        .iter()
        .copied()
        .filter(|d| !FAULTS.contains(&d.name()) && !BENIGN.iter().any(|(n, _)| *n == d.name()))
    {
        let killers: Vec<&CheckSpec> =
            checks.iter().filter(|c| c.killed_by.iter().any(|k| k == defect.name())).collect();
        if killers.is_empty() {
            if !NOT_YET_NOTICED.iter().any(|(n, _)| *n == defect.name()) {
                problems.push(format!("defect `{}` ({}) is noticed by no check", defect.name(), defect.describe()));
            }
            continue;
        }
        let verdicts = rt.block_on(async {
            let server = DefectServer::start(&[defect]).await.expect("defect server starts");
            let v = run_on(&server, &killers).await;
            server.stop().await;
            v
        });
        for (c, v) in killers.iter().zip(verdicts) {
            let want = VerdictKind::for_unmet(c.severity);
            matrix.entry(defect.name()).or_default().insert(c.id.as_str(), v.kind);
            if v.kind != want {
                problems.push(format!(
                    "{} on `{}`: expected {want}, got {}: {}",
                    c.id,
                    defect.name(),
                    v.kind,
                    v.reason
                ));
            } else if !v.evidence.iter().any(|e| e.expected.is_some()) {
                problems.push(format!(
                    "{} on `{}`: {} without evidence of what was expected: {v:?}",
                    c.id,
                    defect.name(),
                    v.kind
                ));
            }
        }
    }

    // The table: rows are defects, columns are checks (numbered).
    println!("\nkill matrix (faithful row first; columns are checks):");
    for (i, c) in checks.iter().enumerate() {
        println!("  [{i:>2}] {}", c.id);
    }
    let header: String = (0..checks.len()).map(|i| format!(" {i:>4}")).collect();
    println!("  {:<34}{header}", "defect");
    let row = |name: &str, cell: &dyn Fn(&CheckSpec, usize) -> &'static str| {
        let cells: String = checks.iter().enumerate().map(|(i, c)| format!(" {:>4}", cell(c, i))).collect();
        println!("  {name:<34}{cells}");
    };
    row("(faithful)", &|_, i| short(faithful[i].kind));
    for (defect, cells) in &matrix {
        row(defect, &|c, _| cells.get(c.id.as_str()).map(|k| short(*k)).unwrap_or("."));
    }
    for (name, why) in NOT_YET_NOTICED {
        println!("  not yet noticed by any check: {name} — {why}");
    }

    assert!(problems.is_empty(), "kill matrix problems:\n  {}", problems.join("\n  "));
}
