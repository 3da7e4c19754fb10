//! Agreement with BuildStream itself: for every cluster the harness can
//! start, the readiness answer of the `buildstream` profile must predict what
//! real `bst build`s of the fixture project (fixtures/buildstream-project/)
//! do there, element by element: builds, fails, or hangs.
//!
//! Needs `bst` (BuildStream 2.8.1, provisioned into the cache like BuildGrid)
//! and a static busybox for the project's sysroot (Debian `busybox-static`).
//! `REAPI_AGREEMENT_CLUSTERS` narrows the clusters (comma-separated).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reapi_conformance::cli::{buildstream_config_for, default_run_args, named_cluster, run_settings};
use reapi_conformance::cluster::endpoint::Endpoint;
use reapi_conformance::readiness::{self, BuildsHere, FeatureState, Readiness};
use reapi_conformance::session::{execute, select_checks, RunEnd, Selection};

/// How long a `bst build` may take before it counts as hanging.
const HANG_AFTER: Duration = Duration::from_secs(25);
/// The tools the sysroot's shell provides, as busybox applets.
const APPLETS: &[&str] = &["sh", "cat", "echo", "mkdir", "test", "id", "uname", "true", "false", "ls", "touch", "stat"];
/// The mtime workspace.bst expects of its workspace's stamp file.
const WORKSPACE_MTIME: u64 = 1_320_937_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    Builds,
    Fails,
    Hangs,
}

/// What the readiness answer predicts for an element of the fixture project.
fn predict(element: &str, r: &Readiness) -> Build {
    let feature = |name: &str| r.features.get(name).map(|f| f.state);
    let sandbox_ok = r.builds_here == BuildsHere::Yes;
    match element {
        // Stages the sysroot as / and checks it is there, with /proc and /dev.
        "hello.bst" => {
            if sandbox_ok {
                Build::Builds
            } else {
                Build::Fails
            }
        }
        // build-uid: 1234, checked with `id -u`.
        "uid.bst" => match feature("build-uid") {
            Some(FeatureState::Hangs) => Build::Hangs,
            Some(FeatureState::Available) if sandbox_ok => Build::Builds,
            _ => Build::Fails,
        },
        // build-arch of an ISA the cluster lacks, checked with `uname -m`.
        "foreign.bst" => match feature("other-platforms") {
            Some(FeatureState::Hangs) => Build::Hangs,
            _ => Build::Fails,
        },
        // Writes to /etc, which BuildStream's read-only root must refuse.
        "readonly.bst" => match feature("read-only-root") {
            Some(FeatureState::Available) if sandbox_ok => Build::Builds,
            _ => Build::Fails,
        },
        // Built from an open workspace: checks its stamp file's mtime.
        "workspace.bst" => match feature("workspaces") {
            Some(FeatureState::Available) if sandbox_ok => Build::Builds,
            _ => Build::Fails,
        },
        other => panic!("no prediction for {other}"),
    }
}

fn fixture_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/buildstream-project")
}

/// Copies the project and lays out its sysroot: busybox, its applets, the
/// marker file the elements check for, and `/usr/bin/env`.
fn stage_project(dir: &Path) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("a static busybox is needed for the fixture project's sysroot: apt-get install busybox-static");
    let project = dir.join("project");
    let elements = project.join("elements");
    std::fs::create_dir_all(&elements).unwrap();
    for entry in std::fs::read_dir(fixture_project()).unwrap().flatten() {
        let to = project.join(entry.file_name());
        if entry.path().is_dir() {
            for e in std::fs::read_dir(entry.path()).unwrap().flatten() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
    let sysroot = project.join("sysroot");
    for d in ["bin", "usr/bin", "etc"] {
        std::fs::create_dir_all(sysroot.join(d)).unwrap();
    }
    std::fs::copy(&busybox, sysroot.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", sysroot.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("../../bin/busybox", sysroot.join("usr/bin/env")).unwrap();
    std::fs::write(sysroot.join("etc/agreement-sysroot"), "staged by the agreement test\n").unwrap();
    std::fs::create_dir_all(project.join("workspace-src")).unwrap();
    std::fs::write(project.join("workspace-src/stamp"), "workspace file\n").unwrap();
    project
}

/// Opens workspace.bst's workspace in `dir` and gives its stamp file the
/// mtime the element checks for.
fn open_workspace(bst: &Path, config: &Path, project: &Path, dir: &Path) {
    let out = Command::new(bst)
        .args(["--no-interactive", "--config"])
        .arg(config)
        .arg("--directory")
        .arg(project)
        .args(["workspace", "open", "--directory"])
        .arg(dir)
        .arg("workspace.bst")
        .env("TMPDIR", project.parent().unwrap_or(project))
        .stdin(Stdio::null())
        .output()
        .expect("bst starts");
    assert!(out.status.success(), "bst workspace open: {}", String::from_utf8_lossy(&out.stderr));
    let stamp = std::fs::File::options().write(true).open(dir.join("stamp")).expect("the workspace has the stamp");
    stamp.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(WORKSPACE_MTIME)).unwrap();
}

/// Runs `bst build ELEMENT` in its own process group; a build still running
/// after [`HANG_AFTER`] is killed and counts as hanging.
fn bst_build(bst: &Path, config: &Path, project: &Path, element: &str, log: &Path) -> Build {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new(bst)
        .args(["--no-interactive", "--config"])
        .arg(config)
        .arg("--directory")
        .arg(project)
        .args(["build", element])
        // bst's own buildbox-casd stages in $TMPDIR; a killed (hanging) build
        // leaves its directory behind, so keep it inside the test's tempdir.
        .env("TMPDIR", project.parent().unwrap_or(project))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("bst starts");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return if status.success() { Build::Builds } else { Build::Fails };
        }
        if start.elapsed() > HANG_AFTER {
            // SAFETY: killing the process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Build::Hangs;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readiness_predicts_real_bst_builds_on_every_cluster() {
    let bst = reapi_conformance::cluster::local::find_bst().expect("bst (reapi-conformance setup --bst)");
    // Every cluster whose registry row asks for agreement and which this
    // machine can start (Buildbarn only where its programs are found).
    let clusters: Vec<String> = match std::env::var("REAPI_AGREEMENT_CLUSTERS") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => {
            let args = default_run_args().unwrap();
            let settings = reapi_conformance::cli::cluster_settings(&args);
            reapi_conformance::cluster::REGISTRY
                .iter()
                .filter(|e| e.agreement)
                .filter(|e| match (e.make)(&settings) {
                    Ok(_) => true,
                    Err(why) => {
                        eprintln!("agreement: {} not available here, left out: {why}", e.name);
                        false
                    }
                })
                .map(|e| e.name.to_string())
                .collect()
        }
    };
    let elements = ["hello.bst", "uid.bst", "foreign.bst", "readonly.bst", "workspace.bst"];
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (_, checks) = select_checks(&Selection::default()).expect("bundled suites");
    let mut table = Vec::new();
    let mut disagreements = Vec::new();
    for name in &clusters {
        let tmp = tempfile::tempdir().unwrap();
        let project = stage_project(tmp.path());
        let args = default_run_args().unwrap();
        let mut cluster = named_cluster(name, &args).unwrap();
        let target = rt.block_on(cluster.start()).unwrap_or_else(|e| panic!("{name} starts: {e}"));
        // The buildstream profile against the running cluster.
        let (options, vars) = run_settings(&args).unwrap();
        let mut endpoint = Endpoint { options: target.clone() };
        let ended = rt.block_on(execute(&mut endpoint, &checks, options, vars, |_| {}, std::future::pending::<i32>()));
        let summary = match ended {
            Ok(RunEnd::Finished(s)) => s,
            other => panic!("{name}: the run did not finish: {other:?}"),
        };
        let readiness = readiness::assess(&summary, &[]);
        eprintln!("--- {name}\n{}", readiness.render());

        let config = tmp.path().join("buildstream.conf");
        let cache = tmp.path().join("cache");
        std::fs::write(&config, format!("cachedir: {}\n{}", cache.display(), buildstream_config_for(&target))).unwrap();
        open_workspace(&bst, &config, &project, &tmp.path().join("workspace"));
        for element in elements {
            let log = tmp.path().join(format!("{element}.log"));
            let observed = bst_build(&bst, &config, &project, element, &log);
            let predicted = predict(element, &readiness);
            if observed != predicted {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                disagreements.push(format!(
                    "{name} {element}: readiness predicts {predicted:?}, bst {observed:?}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            table.push((name.clone(), element, predicted, observed));
        }
        rt.block_on(cluster.stop());
    }
    println!("\nagreement of the readiness answer with bst build:");
    println!("  {:<18} {:<13} {:<10} {:<10}", "cluster", "element", "predicted", "bst");
    for (cluster, element, predicted, observed) in &table {
        let mark = if predicted == observed { "" } else { "  <- disagrees" };
        println!(
            "  {cluster:<18} {element:<13} {:<10} {:<10}{mark}",
            format!("{predicted:?}"),
            format!("{observed:?}")
        );
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}
