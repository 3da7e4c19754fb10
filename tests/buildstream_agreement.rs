//! Agreement with BuildStream itself: for every cluster the harness can
//! start, the readiness answer of the `buildstream` profile must predict what
//! real `bst build`s of the fixture project (fixtures/buildstream-project/)
//! do there, element by element: builds, fails, or hangs. Each element is
//! first built in BuildStream's own local sandbox (the control: an element
//! that does not give its reference outcome there is broken, not evidence);
//! on each cluster all elements are built by one `bst build` in parallel.
//!
//! Needs `bst` (BuildStream 2.8.1, provisioned into the cache like BuildGrid)
//! and a static busybox for the project's sysroot (Debian `busybox-static`).
//! `REAPI_AGREEMENT_CLUSTERS` narrows the clusters (comma-separated).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reapi_conformance::cli::{buildstream_config_for, default_run_args, named_cluster, run_settings};
use reapi_conformance::cluster::endpoint::Endpoint;
use reapi_conformance::readiness::{self, BuildsHere, ElementsBuild, FeatureState, Readiness};
use reapi_conformance::session::{execute, select_checks, RunEnd, Selection};
use reapi_conformance::verdict::VerdictKind;

/// A `bst build` that has printed nothing for this long while elements are
/// still unfinished is killed: those elements count as hanging (a queued
/// remote action is silent; every element here runs in well under a second).
const QUIET_AFTER: Duration = Duration::from_secs(12);
/// The most one `bst build` of every element may take.
const BUILD_BUDGET: Duration = Duration::from_secs(180);
/// Elements built at once (`bst --builders`).
const BUILDERS: &str = "8";
/// Clusters whose profile runs one check at a time: Buildfarm answers
/// UNKNOWN to the loser of two concurrent uploads of one blob, so parallel
/// checks ERROR at random (docs/buildfarm.md), and an ERROR where the
/// requeue loop should show would turn "elements hang" into "no element
/// builds".
const ONE_CHECK_AT_A_TIME: &[&str] = &["buildfarm", "buildfarm:defaults"];
/// The tools the sysroot's shell provides, as busybox applets.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "mkdir", "test", "id", "uname", "true", "false", "ls", "touch", "stat", "readlink", "grep",
    "head", "wc",
];
/// The mtime workspace.bst expects of its workspace's stamp file.
const WORKSPACE_MTIME: u64 = 1_320_937_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    Builds,
    Fails,
    Hangs,
}

/// An element of the fixture project and what it uses.
struct Element {
    name: &'static str,
    /// Sandbox capabilities (readiness::CAPABILITIES names) its commands use.
    capabilities: &'static [&'static str],
    /// BuildStream features (impact names) it uses.
    features: &'static [&'static str],
    /// Checks of a feature that must PASS for it, where it uses only part
    /// of the feature (network isolation of hermetic-sandbox).
    checks: &'static [&'static str],
    /// Its outcome in BuildStream's own local sandbox (the control).
    local: Build,
}

const ELEMENTS: &[Element] = &[
    Element { name: "plain.bst", capabilities: &[], features: &[], checks: &[], local: Build::Builds },
    Element { name: "proc.bst", capabilities: &["proc"], features: &[], checks: &[], local: Build::Builds },
    Element { name: "devfd.bst", capabilities: &["dev-fd"], features: &[], checks: &[], local: Build::Builds },
    Element { name: "shm.bst", capabilities: &["shared-memory"], features: &[], checks: &[], local: Build::Builds },
    Element { name: "devnodes.bst", capabilities: &["dev-nodes"], features: &[], checks: &[], local: Build::Builds },
    Element { name: "tmp.bst", capabilities: &["writable-tmp"], features: &[], checks: &[], local: Build::Builds },
    Element { name: "root.bst", capabilities: &["root-uid"], features: &[], checks: &[], local: Build::Builds },
    Element {
        name: "hello.bst",
        capabilities: &["proc", "dev-nodes"],
        features: &[],
        checks: &[],
        local: Build::Builds,
    },
    Element { name: "uid.bst", capabilities: &[], features: &["build-uid"], checks: &[], local: Build::Builds },
    // A foreign build-arch runs nowhere here, locally included: the question
    // is whether it fails or hangs.
    Element {
        name: "foreign.bst",
        capabilities: &[],
        features: &["other-platforms"],
        checks: &[],
        local: Build::Fails,
    },
    Element {
        name: "readonly.bst",
        capabilities: &[],
        features: &["read-only-root"],
        checks: &[],
        local: Build::Builds,
    },
    Element {
        name: "network.bst",
        capabilities: &["proc"],
        features: &[],
        checks: &["sandbox.no-network"],
        local: Build::Builds,
    },
    Element { name: "failing.bst", capabilities: &[], features: &[], checks: &[], local: Build::Fails },
    Element { name: "junction.bst", capabilities: &[], features: &[], checks: &[], local: Build::Builds },
    Element { name: "workspace.bst", capabilities: &[], features: &["workspaces"], checks: &[], local: Build::Builds },
    Element {
        name: "failed-artifact.bst",
        capabilities: &[],
        features: &["failed-build-artifacts"],
        checks: &[],
        local: Build::Fails,
    },
    Element { name: "buildtree.bst", capabilities: &[], features: &[], checks: &[], local: Build::Builds },
];

/// What the readiness answer predicts for an element of the fixture project.
fn predict(element: &Element, r: &Readiness) -> Build {
    let feature = |name: &str| r.features.get(name).map(|f| f.state);
    if element.name == "foreign.bst" {
        // Never runs: refused, or left queued.
        return match feature("other-platforms") {
            Some(FeatureState::Hangs) => Build::Hangs,
            _ => Build::Fails,
        };
    }
    if element.features.iter().any(|f| feature(f) == Some(FeatureState::Hangs)) {
        return Build::Hangs;
    }
    // Refused before it runs: it fails even where a run would hang.
    if element.features.iter().any(|f| feature(f) == Some(FeatureState::RefusedCleanly)) {
        return Build::Fails;
    }
    // The server never finishes an action shaped like BuildStream's: every
    // element it takes waits, failing.bst too (its failure never comes back).
    if r.elements == ElementsBuild::Hang {
        return Build::Hangs;
    }
    if matches!(element.name, "failing.bst" | "failed-artifact.bst") {
        return Build::Fails;
    }
    let capability_ok = |c: &&str| r.capabilities.get(*c).is_some_and(|c| c.state.usable());
    let feature_ok = |f: &&str| feature(f) == Some(FeatureState::Available);
    let check_ok =
        |id: &&str| r.features.values().flat_map(|f| &f.checks).any(|c| c.id == *id && c.verdict == VerdictKind::Pass);
    if r.builds_here == BuildsHere::Yes
        && element.capabilities.iter().all(capability_ok)
        && element.features.iter().all(feature_ok)
        && element.checks.iter().all(check_ok)
    {
        Build::Builds
    } else {
        Build::Fails
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
    copy_tree(&fixture_project(), &project);
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

/// Copies the directory `from` to `to` (regular files and directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `bst` on the project with the configuration, its temporary files in the
/// test's directory; the subcommand and its arguments are the caller's.
fn bst_command(bst: &Path, config: &Path, project: &Path) -> Command {
    let mut cmd = Command::new(bst);
    cmd.args(["--no-interactive", "--config"])
        .arg(config)
        .arg("--directory")
        .arg(project)
        .env("TMPDIR", project.parent().unwrap_or(project))
        .stdin(Stdio::null());
    cmd
}

/// The most a bst command other than a build may take (a shell, a
/// checkout that fetches from the server).
const COMMAND_BUDGET: Duration = Duration::from_secs(60);

/// Runs `cmd` in a process group of its own, its output gathered in files
/// beside the project; `None` when it is still running after
/// [`COMMAND_BUDGET`] (a stalled server behind a checkout), when its group
/// is killed, bst's casd with it.
fn bounded_output(mut cmd: Command, project: &Path) -> Option<std::process::Output> {
    use std::os::unix::process::CommandExt;
    let out = tempfile::NamedTempFile::new_in(project.parent().unwrap_or(project)).unwrap();
    let err = tempfile::NamedTempFile::new_in(project.parent().unwrap_or(project)).unwrap();
    let mut child =
        cmd.stdout(out.reopen().unwrap()).stderr(err.reopen().unwrap()).process_group(0).spawn().expect("bst starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > COMMAND_BUDGET {
            // SAFETY: killing the process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Some(std::process::Output {
        status: status?,
        stdout: std::fs::read(out.path()).unwrap_or_default(),
        stderr: std::fs::read(err.path()).unwrap_or_default(),
    })
}

/// Opens workspace.bst's workspace in `dir` and gives its stamp file the
/// mtime the element checks for.
fn open_workspace(bst: &Path, config: &Path, project: &Path, dir: &Path) {
    let out = bst_command(bst, config, project)
        .args(["workspace", "open", "--directory"])
        .arg(dir)
        .arg("workspace.bst")
        .output()
        .expect("bst starts");
    assert!(out.status.success(), "bst workspace open: {}", String::from_utf8_lossy(&out.stderr));
    let stamp = std::fs::File::options().write(true).open(dir.join("stamp")).expect("the workspace has the stamp");
    stamp.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(WORKSPACE_MTIME)).unwrap();
}

/// Builds every element in one `bst build` (in parallel, going on after a
/// failure) in its own process group, and reads each element's outcome from
/// its log lines. Elements unfinished when bst has been quiet for
/// [`QUIET_AFTER`] (or past [`BUILD_BUDGET`]) count as hanging.
///
/// An element whose build task never started before bst was killed did not
/// hang itself: hanging elements held every builder. Such elements are built
/// again, without the others (log `LOG.N`), until each has an outcome of
/// its own; a pass in which none of them started ends it (they hang).
fn bst_build_all(bst: &Path, config: &Path, project: &Path, log: &Path) -> Vec<Build> {
    let names: Vec<&str> = ELEMENTS.iter().map(|e| e.name).collect();
    let mut outcomes = bst_build(bst, config, project, log, &[], &names);
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    // The elements of the last pass: only its log says whether they started.
    let mut last: Vec<usize> = (0..names.len()).collect();
    for pass in 1.. {
        let starved: Vec<usize> =
            last.iter().copied().filter(|&i| outcomes[i] == Build::Hangs && !started(&text, names[i])).collect();
        if starved.is_empty() || starved.len() == last.len() {
            break;
        }
        let again_log = log.with_extension(format!("log.{pass}"));
        let elements: Vec<&str> = starved.iter().map(|&i| names[i]).collect();
        eprintln!("agreement: built again, having had no builder: {}", elements.join(" "));
        let again = bst_build(bst, config, project, &again_log, &[], &elements);
        text = std::fs::read_to_string(&again_log).unwrap_or_default();
        for (&i, outcome) in starved.iter().zip(again) {
            outcomes[i] = outcome;
        }
        last = starved;
    }
    outcomes
}

/// Whether bst started the element's build task (a log line of that task).
fn started(log: &str, element: &str) -> bool {
    let task = format!("build:{element} ");
    log.lines().any(|l| l.contains(&task))
}

/// `bst build [extra] ELEMENTS…` as [`bst_build_all`] describes.
fn bst_build(bst: &Path, config: &Path, project: &Path, log: &Path, extra: &[&str], elements: &[&str]) -> Vec<Build> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new(bst)
        .args(["--no-interactive", "--on-error", "continue", "--builders", BUILDERS, "--config"])
        .arg(config)
        .arg("--directory")
        .arg(project)
        .arg("build")
        .args(extra)
        .args(elements)
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
    let (mut size, mut changed) = (0, Instant::now());
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        let now = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if now != size {
            (size, changed) = (now, Instant::now());
        }
        let unfinished = {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            elements.iter().any(|e| outcome(&text, e).is_none())
        };
        if unfinished && (changed.elapsed() > QUIET_AFTER || start.elapsed() > BUILD_BUDGET) {
            // SAFETY: killing the process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    elements.iter().map(|e| outcome(&text, e).unwrap_or(if killed { Build::Hangs } else { Build::Fails })).collect()
}

/// What a retried failed build does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The command ran again.
    RunsAgain,
    /// bst found the failed result in the action cache and replayed it.
    Replays,
    /// The element did not fail as designed (its build outcome).
    Unexpected(Build),
}

/// Builds failing.bst (failed by the main build already) again with
/// `--retry-failed` and tells a run from a replay by bst's own message.
fn retry_failed(bst: &Path, config: &Path, project: &Path, log: &Path) -> Retry {
    match bst_build(bst, config, project, log, &["--retry-failed"], &["failing.bst"])[0] {
        Build::Fails
            if std::fs::read_to_string(log).unwrap_or_default().contains("Action result found in action cache") =>
        {
            Retry::Replays
        }
        Build::Fails => Retry::RunsAgain,
        other => Retry::Unexpected(other),
    }
}

/// What the answer predicts for a retried failed build (none where it does
/// not assess retry-failed).
fn predict_retry(r: &Readiness) -> Option<Retry> {
    if r.elements == ElementsBuild::Hang {
        // The first build never failed, so the retry hangs as it did.
        return Some(Retry::Unexpected(Build::Hangs));
    }
    match r.features.get("retry-failed").map(|f| f.state) {
        Some(FeatureState::Available) => Some(Retry::RunsAgain),
        Some(FeatureState::Broken) => Some(Retry::Replays),
        _ => None,
    }
}

/// Whether `bst shell --build --use-buildtree ELEMENT` (BuildStream's local
/// sandbox, on the artifact the cluster built, failed or not) finds the
/// file `build-note` the element left in its build directory, with `text`.
fn build_tree_has_note(bst: &Path, config: &Path, project: &Path, element: &str, text: &str) -> bool {
    let mut cmd = bst_command(bst, config, project);
    cmd.args(["shell", "--build", "--use-buildtree", element, "--", "cat", "build-note"]);
    let Some(out) = bounded_output(cmd, project) else {
        eprintln!("agreement: {element}'s build tree: bst shell still running after {COMMAND_BUDGET:?}");
        return false;
    };
    let found = out.status.success() && String::from_utf8_lossy(&out.stdout).contains(text);
    if !found {
        eprintln!("agreement: {element}'s build tree: {}", last_lines(&out.stderr));
    }
    found
}

/// What became of the build tree of failed-artifact.bst (failed by the main
/// build): "kept" when it holds the file written before the failure.
fn failed_artifact(bst: &Path, config: &Path, project: &Path) -> &'static str {
    if build_tree_has_note(bst, config, project, "failed-artifact.bst", "written before failing") {
        "kept"
    } else {
        "lost"
    }
}

/// What the answer predicts for failed-artifact.bst's build tree: lost where
/// its commands cannot run their sysroot's tools (the input root is not /),
/// else as feature failed-build-artifacts says.
fn predict_failed_artifact(r: &Readiness) -> Option<&'static str> {
    if r.blockers.iter().any(|b| b.id == "input-root.root-entries") {
        return Some("lost");
    }
    match r.features.get("failed-build-artifacts").map(|f| f.state) {
        Some(FeatureState::Available) if r.builds_here == BuildsHere::Yes => Some("kept"),
        // Refused: the element never runs, so it leaves no build tree.
        Some(FeatureState::Broken | FeatureState::Hangs | FeatureState::RefusedCleanly) => Some("lost"),
        _ => None,
    }
}

/// Whether buildtree.bst's build tree holds the file it left there.
fn build_tree(bst: &Path, config: &Path, project: &Path) -> &'static str {
    if build_tree_has_note(bst, config, project, "buildtree.bst", "left in the build tree") {
        "usable"
    } else {
        "unusable"
    }
}

/// A build tree comes back with the whole input root, which every build
/// needs (a blocker, outputs.whole-input-root, so it is usable wherever
/// buildtree.bst builds); where it does not build, its note is never written.
fn predict_build_tree(r: &Readiness) -> &'static str {
    let element = ELEMENTS.iter().find(|e| e.name == "buildtree.bst").expect("buildtree.bst is an element");
    if predict(element, r) != Build::Builds {
        "unusable"
    } else {
        "usable"
    }
}

/// plain.bst built again by a second client with an empty local cache (as
/// another developer or a CI runner): it must build, from the action the
/// server has cached or by running it again, and check out complete, its
/// files fetched from the server's CAS ("builds"); else "incomplete" or its
/// outcome.
fn fresh_cache_build(bst: &Path, dir: &Path, project: &Path, remote: &str) -> String {
    let config = dir.join("fresh.conf");
    std::fs::write(&config, format!("cachedir: {}\n{remote}", dir.join("fresh-cache").display())).unwrap();
    let log = dir.join("fresh.log");
    match bst_build(bst, &config, project, &log, &[], &["plain.bst"])[0] {
        Build::Builds => {
            let checkout = dir.join("fresh-checkout");
            let mut cmd = bst_command(bst, &config, project);
            cmd.args(["artifact", "checkout", "plain.bst", "--directory"]).arg(&checkout);
            match bounded_output(cmd, project) {
                None => "Hangs".to_string(),
                Some(out) if out.status.success() && checkout.join("share").is_dir() => "builds".to_string(),
                Some(out) => {
                    eprintln!("agreement: plain.bst from a fresh cache: checkout: {}", last_lines(&out.stderr));
                    "incomplete".to_string()
                }
            }
        }
        other => {
            eprintln!("agreement: plain.bst from a fresh cache: {other:?}; its log ends\n{}", tail(&log));
            format!("{other:?}")
        }
    }
}

/// An element's outcome from bst's log: a FAILURE line of its build task
/// fails it (a failed build also caches an artifact, so that comes first);
/// the SUCCESS line naming its build log ends a build that succeeded.
fn outcome(log: &str, element: &str) -> Option<Build> {
    let task = format!("build:{element} ");
    let lines = || log.lines().filter(|l| l.contains(&task));
    if lines().any(|l| l.contains("] FAILURE ")) {
        Some(Build::Fails)
    } else if lines().any(|l| l.contains("] SUCCESS ") && l.contains("-build.")) {
        Some(Build::Builds)
    } else {
        None
    }
}

/// A project laid out in `dir` with workspace.bst's workspace open, and a
/// bst configuration (`remote`: its remote-execution section, if any).
fn prepare(bst: &Path, dir: &Path, remote: &str) -> (PathBuf, PathBuf) {
    let project = stage_project(dir);
    let config = dir.join("buildstream.conf");
    // Build trees cached for every build (buildtree.bst's scenario).
    let cache = format!("cachedir: {}\ncache:\n  cache-buildtrees: always\n", dir.join("cache").display());
    std::fs::write(&config, format!("{cache}{remote}")).unwrap();
    open_workspace(bst, &config, &project, &dir.join("workspace"));
    (project, config)
}

/// The control: every element built in BuildStream's own local sandbox must
/// give its reference outcome, or it is a broken element, not evidence.
fn local_control(bst: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let (project, config) = prepare(bst, tmp.path(), "");
    let log = tmp.path().join("local.log");
    let start = Instant::now();
    let observed = bst_build_all(bst, &config, &project, &log);
    eprintln!("agreement: BuildStream's local sandbox built the elements in {:.1}s", start.elapsed().as_secs_f64());
    let broken: Vec<String> = ELEMENTS
        .iter()
        .zip(&observed)
        .filter(|(e, o)| e.local != **o)
        .map(|(e, o)| format!("{}: {o:?} in the local sandbox, expected {:?}", e.name, e.local))
        .collect();
    assert!(broken.is_empty(), "broken elements:\n{}\n{}", broken.join("\n"), tail(&log));
    let retry_log = tmp.path().join("local-retry.log");
    let retried = retry_failed(bst, &config, &project, &retry_log);
    assert_eq!(retried, Retry::RunsAgain, "failing.bst retried in the local sandbox\n{}", tail(&retry_log));
    assert_eq!(failed_artifact(bst, &config, &project), "kept", "failed-artifact.bst's artifact in the local sandbox");
    assert_eq!(build_tree(bst, &config, &project), "usable", "buildtree.bst's build tree in the local sandbox");
}

/// The last lines of a command's output, for a message.
fn last_lines(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().rev().take(6).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Why a compose cluster cannot start here (no `docker compose`, no engine,
/// or, for `:local`, no image built by compose/local/build-images.sh); its
/// adapter finds that out only when it starts.
fn compose_unavailable(name: &str) -> Option<String> {
    if !name.starts_with("compose:") {
        return None;
    }
    let image = reapi_conformance::cluster::compose::local_image();
    let mut needs = vec![vec!["compose", "version"], vec!["version"]];
    if name.ends_with(":local") {
        needs.push(vec!["image", "inspect", &image]);
    }
    needs.into_iter().find_map(|args| {
        let ok = Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!ok).then(|| format!("`docker {}` fails", args.join(" ")))
    })
}

#[test]
fn readiness_predicts_real_bst_builds_on_every_cluster() {
    let bst = reapi_conformance::cluster::provision::find_bst().expect("bst (reapi-conformance setup --bst)");
    // Every cluster whose registry row asks for agreement and which this
    // machine can start (Buildbarn and Buildfarm only where their programs
    // are found; the others are left out, saying why).
    let clusters: Vec<String> = match std::env::var("REAPI_AGREEMENT_CLUSTERS") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => {
            let args = default_run_args().unwrap();
            let settings = reapi_conformance::cli::cluster_settings(&args);
            reapi_conformance::cluster::REGISTRY
                .iter()
                .filter(|e| e.agreement)
                .filter(|e| match (e.make)(&settings).map(|_| compose_unavailable(e.name)) {
                    Ok(None) => true,
                    Ok(Some(why)) => {
                        eprintln!("agreement: {} not available here, left out: {why}", e.name);
                        false
                    }
                    Err(why) => {
                        eprintln!("agreement: {} not available here, left out: {why}", e.name);
                        false
                    }
                })
                .map(|e| e.name.to_string())
                .collect()
        }
    };
    local_control(&bst);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (_, checks) = select_checks(&Selection::default()).expect("bundled suites");
    let mut table = Vec::new();
    let mut disagreements = Vec::new();
    let mut times = Vec::new();
    // Scenarios after the main build: (cluster, scenario, predicted, observed).
    let mut scenarios: Vec<(String, &str, Option<String>, String)> = Vec::new();
    for name in &clusters {
        let started = Instant::now();
        let tmp = tempfile::tempdir().unwrap();
        let mut args = default_run_args().unwrap();
        if ONE_CHECK_AT_A_TIME.contains(&name.as_str()) {
            args.jobs = 1;
        }
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
        let profile_done = started.elapsed();

        let (project, config) = prepare(&bst, tmp.path(), &buildstream_config_for(&target));
        let log = tmp.path().join("build.log");
        let observed = bst_build_all(&bst, &config, &project, &log);
        let retry_log = tmp.path().join("retry.log");
        let retried = retry_failed(&bst, &config, &project, &retry_log);
        let retry_predicted = predict_retry(&readiness);
        if retry_predicted.is_some_and(|p| p != retried) {
            disagreements.push(format!(
                "{name} failing.bst --retry-failed: readiness predicts {retry_predicted:?}, bst {retried:?}\n{}",
                tail(&retry_log)
            ));
        }
        scenarios.push((
            name.clone(),
            "retry-failed",
            retry_predicted.map(|p| format!("{p:?}")),
            format!("{retried:?}"),
        ));
        let plain = ELEMENTS.iter().position(|e| e.name == "plain.bst").unwrap();
        let more = [
            (
                "failed-artifact",
                predict_failed_artifact(&readiness).map(str::to_string),
                failed_artifact(&bst, &config, &project).to_string(),
            ),
            (
                "build tree",
                Some(predict_build_tree(&readiness).to_string()),
                build_tree(&bst, &config, &project).to_string(),
            ),
            (
                "fresh cache",
                Some(match predict(&ELEMENTS[plain], &readiness) {
                    Build::Builds => "builds".to_string(),
                    other => format!("{other:?}"),
                }),
                fresh_cache_build(&bst, tmp.path(), &project, &buildstream_config_for(&target)),
            ),
        ];
        for (scenario, predicted, observed) in more {
            if predicted.as_ref().is_some_and(|p| *p != observed) {
                disagreements.push(format!("{name} {scenario}: readiness predicts {predicted:?}, bst {observed}"));
            }
            scenarios.push((name.clone(), scenario, predicted, observed));
        }
        for (element, observed) in ELEMENTS.iter().zip(observed) {
            let predicted = predict(element, &readiness);
            if observed != predicted {
                disagreements
                    .push(format!("{name} {}: readiness predicts {predicted:?}, bst {observed:?}", element.name));
            }
            table.push((name.clone(), element.name, predicted, observed));
        }
        if disagreements.iter().any(|d| d.starts_with(&format!("{name} "))) {
            disagreements.push(format!("{name}: bst's log ends\n{}", tail(&log)));
        }
        rt.block_on(cluster.stop());
        times.push((name.clone(), profile_done, started.elapsed()));
    }
    println!("\nagreement of the readiness answer with bst build:");
    println!("  {:<18} {:<20} {:<15} {:<10}", "cluster", "element", "predicted", "bst");
    for (cluster, element, predicted, observed) in &table {
        let mark = if predicted == observed { "" } else { "  <- disagrees" };
        println!(
            "  {cluster:<18} {element:<20} {:<15} {:<10}{mark}",
            format!("{predicted:?}"),
            format!("{observed:?}")
        );
    }
    for (cluster, scenario, predicted, observed) in &scenarios {
        let mark = if predicted.as_ref().is_some_and(|p| p != observed) { "  <- disagrees" } else { "" };
        let predicted = predicted.clone().unwrap_or_else(|| "not assessed".into());
        println!("  {cluster:<18} {scenario:<20} {predicted:<15} {observed:<10}{mark}");
    }
    for (cluster, profile, all) in &times {
        println!(
            "  {cluster}: {:.1}s (profile and cluster {:.1}s, bst builds {:.1}s)",
            all.as_secs_f64(),
            profile.as_secs_f64(),
            (*all - *profile).as_secs_f64()
        );
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}
