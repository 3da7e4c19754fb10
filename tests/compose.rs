//! Clusters from compose files (`--cluster compose:…`), through the
//! engine's `docker compose`: Docker, or Podman's API service via
//! DOCKER_HOST. The BuildGrid stack with the images `compose/local/` builds
//! must get exactly the verdicts of the native `--cluster buildgrid` (same
//! topology), and leave nothing behind. The Buildbarn and Buildfarm files
//! cannot run here (their images are not reachable); `docker compose config`
//! validates them.
//!
//! Needs `docker compose` and an engine with the local image
//! (`compose/local/build-images.sh`); without them these tests are ignored,
//! unless REAPI_REQUIRE_COMPOSE=1 (CI), where that is a failure.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("docker: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("docker {}: {}", args.join(" "), text.trim()))
    }
}

/// Why the compose tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if let Err(e) = docker(&["compose", "version"]) {
        return Some(e);
    }
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        return Some(e);
    }
    let image = local_image();
    docker(&["image", "inspect", &image]).err().map(|_| format!("no image {image} (compose/local/build-images.sh)"))
}

/// Containers, volumes and networks of compose projects the harness started.
fn leftovers() -> Result<Vec<String>, String> {
    let filter = "label=com.docker.compose.project";
    let mut found = Vec::new();
    for args in [
        &["ps", "-a", "--filter", filter, "--format", "{{.Names}}"][..],
        &["volume", "ls", "--filter", filter, "--format", "{{.Name}}"][..],
        &["network", "ls", "--filter", filter, "--format", "{{.Name}}"][..],
    ] {
        found.extend(docker(args)?.lines().filter(|l| l.starts_with("reapi-conformance-")).map(str::to_string));
    }
    Ok(found)
}

fn local_image() -> String {
    reapi_conformance::cluster::compose::local_image()
}

fn buildgrid_local_matches_native() -> Result<(), Failed> {
    // The image holds the release `--cluster buildgrid` runs by default.
    let newest = reapi_conformance::cluster::buildgrid::RELEASES[0].version;
    let script = "import importlib.metadata as m; print(m.version('buildgrid'))";
    let installed = docker(&["run", "--rm", &local_image(), "python3", "-c", script])?;
    if installed.trim() != newest {
        return Err(format!("the local image has BuildGrid {}, not {newest}", installed.trim()).into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--cluster", "compose:buildgrid:local", "--profile", "all", "--timings"])
        // The local image carries BuildGrid 0.9.1 (Debian 13, Python 3.13):
        // the native verdicts of that release.
        .args(["--expect", &repo("fixtures/expectations/buildgrid-bwrap.yaml"), "--json"])
        .arg(&json)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) || !text.contains("all verdicts as expected") {
        return Err(format!(
            "exit {:?}, expected 0 with every verdict as for --cluster buildgrid --buildgrid-version 0.9.1:\n{text}",
            out.status.code()
        )
        .into());
    }
    let start_up = text.lines().find(|l| l.starts_with("timings: cluster start-up")).unwrap_or("");
    eprintln!("compose:buildgrid:local: {start_up}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let scheduler_ran = report["results"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["suite"] == "scheduler" && r["verdict"]["kind"] == "PASS").count())
        .unwrap_or(0);
    if scheduler_ran != 2 {
        return Err(format!("the scheduler suite should reach the Bots API through the bots label:\n{text}").into());
    }
    match leftovers()? {
        left if left.is_empty() => Ok(()),
        left => Err(format!("left behind: {left:?}").into()),
    }
}

/// A connection string the BuildGrid of the image refuses (0.9.x and
/// psycopg2's, as compose/buildgrid.yml had it before) can never migrate:
/// the run ends soon, in one line naming the service and BuildGrid's error,
/// rather than at the readiness timeout.
fn a_migration_that_cannot_succeed_ends_the_run_in_one_line() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let wrong = dir.path().join("psycopg2.yml");
    std::fs::write(
        &wrong,
        "services:\n  controller:\n    environment:\n      \
         BGD_DATABASE: postgresql+psycopg2://bgd:insecure@database:5432/bgd\n",
    )
    .map_err(|e| e.to_string())?;
    let files = [repo("compose/buildgrid.yml"), repo("compose/local/buildgrid.yml"), wrong.display().to_string()];
    let start = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--cluster", &format!("compose:{}", files.join(","))])
        .output()
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("service controller exited")).unwrap_or("");
    eprintln!("refused connection string: exit {:?} after {took:.1?}: {line}", out.status.code());
    if out.status.code() != Some(2) || !line.contains("Cannot use database") || took.as_secs() > 120 {
        return Err(format!(
            "expected exit 2 within 120 s and one line naming the controller and BuildGrid's \
             \"Cannot use database\", got {:?} after {took:.1?}:\n{err}",
            out.status.code()
        )
        .into());
    }
    match leftovers()? {
        left if left.is_empty() => Ok(()),
        left => Err(format!("left behind: {left:?}").into()),
    }
}

fn every_file_is_valid_compose() -> Result<(), Failed> {
    for files in [
        &["compose/buildgrid.yml"][..],
        &["compose/buildgrid.yml", "compose/local/buildgrid.yml"][..],
        &["compose/buildbarn.yml"][..],
        &["compose/buildfarm.yml"][..],
    ] {
        let mut args = vec!["compose".to_string()];
        for f in files {
            args.extend(["-f".to_string(), repo(f)]);
        }
        args.extend(["config".to_string(), "--quiet".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).map_err(|e| format!("{files:?}: {e}"))?;
    }
    Ok(())
}

/// With no engine behind DOCKER_HOST the run fails in one line and exit 2.
/// Which line depends on the machine, and each is right: no `docker` CLI or
/// no compose plugin ("`docker compose` … is not available; install it"), or
/// an engine that does not answer (how to start one, naming DOCKER_HOST).
fn no_engine_is_one_line_and_exit_2() -> Result<(), Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--cluster", "compose:buildgrid:local"])
        .env("DOCKER_HOST", "unix:///nonexistent/reapi-conformance.sock")
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    let says_why = err.contains("DOCKER_HOST") || (err.contains("`docker compose`") && err.contains("install it"));
    if out.status.code() != Some(2) || err.trim().lines().count() != 1 || !says_why {
        return Err(format!(
            "expected exit 2 and one line saying that the compose plugin or the engine is missing, got {:?}: {err}",
            out.status.code()
        )
        .into());
    }
    Ok(())
}

static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn main() {
    let args = Arguments::from_args();
    let missing = unavailable();
    let required = std::env::var("REAPI_REQUIRE_COMPOSE").is_ok_and(|v| v == "1");
    if let Some(why) = &missing {
        let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
        if required {
            eprintln!("compose tests need `docker compose` and a container engine, and REAPI_REQUIRE_COMPOSE=1: {why}");
        } else {
            eprintln!(
                "compose tests that need `docker compose` and a container engine are ignored: {why} \
                 (REAPI_REQUIRE_COMPOSE=1 makes this a failure)"
            );
        }
    }
    let needs_engine = |name: &str, f: fn() -> Result<(), Failed>| {
        let ignored = missing.is_some() && !required;
        let missing = missing.clone();
        Trial::test(name, move || match missing {
            Some(why) if required => Err(format!("REAPI_REQUIRE_COMPOSE=1 but {why}").into()),
            _ => {
                // One stack at a time: each test looks for what any stack left behind.
                let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
                f()
            }
        })
        .with_ignored_flag(ignored)
    };
    let trials = vec![
        needs_engine("buildgrid_local_matches_native", buildgrid_local_matches_native),
        needs_engine(
            "a_migration_that_cannot_succeed_ends_the_run_in_one_line",
            a_migration_that_cannot_succeed_ends_the_run_in_one_line,
        ),
        needs_engine("every_file_is_valid_compose", every_file_is_valid_compose),
        Trial::test("no_engine_is_one_line_and_exit_2", no_engine_is_one_line_and_exit_2),
    ];
    libtest_mimic::run(&args, trials).exit();
}
