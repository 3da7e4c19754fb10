//! Buildfarm as a real server (`--cluster buildfarm`, and `buildfarm:defaults`
//! with the shard worker's own defaults): the user's own server
//! and shard-worker deploy jars, found in REAPI_BUILDFARM_DIR, with a Java 21
//! or newer (REAPI_JAVA, PATH or /usr/lib/jvm) and Debian's redis-server. The
//! project never builds or ships them (docs/buildfarm.md), so where they are
//! missing these tests report themselves ignored with the reason, and
//! `cargo test` stays green.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const JARS: [&str; 2] = ["buildfarm-server_deploy.jar", "buildfarm-shard-worker_deploy.jar"];

/// Whether a `java -version` of `path` says 21 or newer.
fn java_21(path: &std::path::Path) -> bool {
    let Ok(out) = Command::new(path).arg("-version").output() else { return false };
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let version = text.split('"').nth(1).unwrap_or_default();
    version.split(['.', '-', '+']).next().and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 21)
}

/// What the cluster needs, or why it is not there.
fn prerequisites() -> Result<(), String> {
    let Some(dir) = std::env::var_os("REAPI_BUILDFARM_DIR").map(PathBuf::from) else {
        return Err("REAPI_BUILDFARM_DIR is not set".into());
    };
    let missing: Vec<&str> = JARS.iter().copied().filter(|j| !dir.join(j).is_file()).collect();
    if !missing.is_empty() {
        return Err(format!("REAPI_BUILDFARM_DIR={} lacks {}", dir.display(), missing.join(", ")));
    }
    let mut javas: Vec<PathBuf> = std::env::var_os("REAPI_JAVA").map(PathBuf::from).into_iter().collect();
    javas.extend(which::which("java").ok());
    javas.extend(std::fs::read_dir("/usr/lib/jvm").into_iter().flatten().flatten().map(|e| e.path().join("bin/java")));
    if !javas.iter().any(|j| java_21(j)) {
        return Err("no Java 21 or newer (REAPI_JAVA, PATH, /usr/lib/jvm)".into());
    }
    if which::which("redis-server").is_err() {
        return Err("redis-server is not on PATH".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the private network namespace needs root".into());
    }
    Ok(())
}

/// `cluster` gets the verdicts of `fixtures/expectations/FILE` and leaves
/// nothing behind; its readiness headline says `headline`.
fn expected_verdicts_and_nothing_left(cluster: &str, file: &str, headline: &str) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let json = dir.path().join("buildfarm.json");
    let expectations = format!("{}/fixtures/expectations/{file}", env!("CARGO_MANIFEST_DIR"));
    let out = common::output(
        Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
            // One check at a time: Buildfarm's worker answers UNKNOWN to the
            // loser of two concurrent uploads of one blob (WriteCompleteException
            // in CASFileCache), so with parallel checks an unrelated check's
            // preparation is ERROR at random (docs/buildfarm.md).
            .args(["run", "--cluster", cluster, "--profile", "all", "--jobs", "1", "--expect", &expectations, "--json"])
            .arg(&json),
    )
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) || !text.contains("all verdicts as expected") {
        return Err(format!("exit {:?}\n{text}", out.status.code()).into());
    }
    if !text.contains(headline) {
        return Err(format!("the readiness answer does not say {headline:?}:\n{text}").into());
    }
    if !text.contains("server recognised: buildfarm") {
        return Err(format!("Buildfarm not recognised:\n{text}").into());
    }
    // Host evidence: the worker's exec root under the run directory, not the input root.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let results = report["results"].as_array().ok_or("no results in the JSON report")?;
    let cwd = results.iter().find(|r| r["id"] == "input-root.working-directory").ok_or("no working-directory")?;
    let observed = cwd["verdict"]["reason"].as_str().unwrap_or_default();
    if !observed.contains("reapi-conformance-buildfarm-") {
        return Err(format!("input-root.working-directory does not show the worker's exec root: {cwd}").into());
    }
    // What ran is on record.
    if !text.contains("sha256:") || !text.contains("version") {
        return Err(format!("the report does not name the jars' sha256s and the Java version:\n{text}").into());
    }
    let left = common::leftovers("buildfarm");
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}").into());
    }
    Ok(())
}

fn missing_jars_are_one_line_and_exit_2() -> Result<(), Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--cluster", "buildfarm", "--buildfarm-dir", "/nonexistent/reapi-conformance"])
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || err.trim().lines().count() != 1 || !err.contains("buildfarm-server_deploy.jar") {
        return Err(format!("expected exit 2 and one line naming the jars, got {:?}: {err}", out.status.code()).into());
    }
    Ok(())
}

fn main() {
    let mut args = Arguments::from_args();
    // One cluster at a time: two pairs of JVMs on a small machine would
    // stretch the timings the requeue detection reads.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let found = prerequisites();
    if let Err(why) = &found {
        eprintln!("Buildfarm tests need Buildfarm's jars: {why} (docs/buildfarm.md says how to get them)");
    }
    let with_defaults = found.clone();
    let trials = vec![
        Trial::test("buildfarm_gets_its_expected_verdicts_and_leaves_nothing", move || {
            found.clone().map_err(|why| Failed::from(format!("ignored: {why}")))?;
            expected_verdicts_and_nothing_left(
                "buildfarm",
                "buildfarm.yaml",
                "BuildStream builds here: NO — no element",
            )
        })
        .with_ignored_flag(prerequisites().is_err()),
        // The worker's own defaults requeue BuildStream's outputs for ever:
        // the answer must say that elements hang, not that they fail.
        Trial::test("buildfarm_with_worker_defaults_hangs_elements_as_expected", move || {
            with_defaults.clone().map_err(|why| Failed::from(format!("ignored: {why}")))?;
            expected_verdicts_and_nothing_left(
                "buildfarm:defaults",
                "buildfarm-defaults.yaml",
                "BuildStream builds here: NO — elements hang",
            )
        })
        .with_ignored_flag(prerequisites().is_err()),
        Trial::test("missing_jars_are_one_line_and_exit_2", missing_jars_are_one_line_and_exit_2),
    ];
    libtest_mimic::run(&args, trials).exit();
}
