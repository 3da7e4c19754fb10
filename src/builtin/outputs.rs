//! Built-in checks on outputs: which paths come back, in which form, and
//! whether every blob they reference can be fetched.

use std::collections::BTreeMap;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, Directory, OutputDirectory, Tree};
use prost::Message;

use super::{run_to_completion, unmet};
use crate::digest;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::{StepError, Verdict};

/// An entry of an output directory, by path relative to it.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputEntry {
    File { digest: Digest, executable: bool, mtime: Option<i64> },
    Dir,
    Symlink { target: String },
}

/// Lists an output directory, preferring `root_directory_digest` (v2.8,
/// what BuildStream asks for) over `tree_digest`.
pub async fn list_output_dir(h: &Harness, od: &OutputDirectory) -> Result<BTreeMap<String, OutputEntry>, StepError> {
    let mut entries = BTreeMap::new();
    if let Some(root) = od.root_directory_digest.as_ref().filter(|d| !d.hash.is_empty()) {
        let mut pending = vec![(String::new(), root.clone())];
        while let Some((prefix, d)) = pending.pop() {
            let dir = fetch_dir(h, &d).await?;
            add_dir(&mut entries, &prefix, &dir, |name, child| pending.push((name, child.clone())));
        }
        return Ok(entries);
    }
    let Some(tree_digest) = od.tree_digest.as_ref() else {
        return Err(StepError::Server(format!(
            "output directory `{}` has neither root_directory_digest nor tree_digest",
            od.path
        )));
    };
    let bytes = h
        .cas
        .read(tree_digest)
        .await
        .map_err(|e| StepError::from(e).context(format!("fetching the Tree of `{}`", od.path)))?;
    let tree = Tree::decode(&bytes[..])
        .map_err(|e| StepError::Server(format!("the Tree of `{}` does not decode: {e}", od.path)))?;
    let children: BTreeMap<String, Directory> =
        tree.children.into_iter().map(|c| (digest::of_message(&c).0.hash, c)).collect();
    let mut pending = vec![(String::new(), tree.root.unwrap_or_default())];
    while let Some((prefix, dir)) = pending.pop() {
        let mut next = Vec::new();
        add_dir(&mut entries, &prefix, &dir, |name, child| next.push((name, child.clone())));
        for (name, d) in next {
            let child = children.get(&d.hash).ok_or_else(|| {
                StepError::Server(if d.hash.is_empty() {
                    format!("the Tree of `{}` has a DirectoryNode `{name}` with no digest", od.path)
                } else {
                    format!("the Tree of `{}` lacks directory `{name}` ({})", od.path, digest::show(&d))
                })
            })?;
            pending.push((name, child.clone()));
        }
    }
    Ok(entries)
}

async fn fetch_dir(h: &Harness, d: &Digest) -> Result<Directory, StepError> {
    let bytes = h.cas.read(d).await.map_err(|e| StepError::from(e).context("fetching output directory"))?;
    Directory::decode(&bytes[..])
        .map_err(|e| StepError::Server(format!("Directory {} does not decode: {e}", digest::show(d))))
}

fn add_dir(
    entries: &mut BTreeMap<String, OutputEntry>,
    prefix: &str,
    dir: &Directory,
    mut sub: impl FnMut(String, &Digest),
) {
    let join = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
    for f in &dir.files {
        let digest = f.digest.clone().unwrap_or_default();
        let mtime = f.node_properties.as_ref().and_then(|p| p.mtime.as_ref()).map(|t| t.seconds);
        entries.insert(join(&f.name), OutputEntry::File { digest, executable: f.is_executable, mtime });
    }
    for s in &dir.symlinks {
        entries.insert(join(&s.name), OutputEntry::Symlink { target: s.target.clone() });
    }
    for d in &dir.directories {
        entries.insert(join(&d.name), OutputEntry::Dir);
        sub(join(&d.name), &d.digest.clone().unwrap_or_default());
    }
}

/// Absolute, `..`-free form of `path` relative to `base` (both inside the input root).
pub fn resolve(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in base.split('/').chain(path.split('/')) {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `--write PATH=CONTENT` directives of a probe script, content unescaped.
fn writes(probe: &[String]) -> Vec<(String, String)> {
    probe
        .windows(2)
        .filter(|w| w[0] == "--write")
        .filter_map(|w| w[1].split_once('=').map(|(p, c)| (p.to_string(), c.replace("\\n", "\n"))))
        .collect()
}

/// Every output path comes back as an OutputDirectory at the requested place
/// (its path resolved against the working directory, as BuildStream does),
/// no `output_files`, and holds what the command wrote there.
pub(super) async fn outputs_match_writes(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = outcome.result() else { return Ok(Verdict::error("completed without a result")) };
    if let Some(want) = check.expect.exit_code {
        if result.exit_code != want {
            return Ok(Verdict::new(unmet(check), format!("exit code {}, expected {want}", result.exit_code)).with(
                "exit_code",
                Some(want.to_string()),
                result.exit_code.to_string(),
            ));
        }
    }
    let requested: Vec<&String> = prepared.command.output_paths.iter().collect();
    if !result.output_files.is_empty() {
        let paths: Vec<&str> = result.output_files.iter().map(|f| f.path.as_str()).collect();
        return Ok(Verdict::new(unmet(check), format!("directories came back as output_files {paths:?}")).with(
            "output_files",
            Some("none".into()),
            format!("{paths:?}"),
        ));
    }
    let got: Vec<&String> = result.output_directories.iter().map(|d| &d.path).collect();
    // Judged as BuildStream reads them: it places each output directory at
    // normpath(working directory / path), so "" for `.` (which REAPI allows
    // for the working directory) lands where `.` does.
    let workdir = &prepared.command.working_directory;
    let placed = |paths: &[&String]| {
        let mut v: Vec<String> = paths.iter().map(|p| resolve(workdir, p)).collect();
        v.sort();
        v
    };
    if placed(&got) != placed(&requested) {
        return Ok(Verdict::new(unmet(check), format!("output directories {got:?}, requested {requested:?}")).with(
            "output_directories",
            Some(format!("{requested:?}")),
            format!("{got:?}"),
        ));
    }
    let mut found = Vec::new();
    for (path, content) in writes(&check.action.probe) {
        // Relative writes are relative to the working directory, where the probe runs.
        let path = if path.starts_with('/') { path } else { resolve(workdir, &path) };
        // The deepest output directory that contains the written file.
        let holder = result
            .output_directories
            .iter()
            .map(|od| (od, resolve(workdir, &od.path)))
            .filter(|(_, abs)| path.starts_with(&format!("{}/", abs.trim_end_matches('/'))))
            .max_by_key(|(_, abs)| abs.len());
        let Some((od, abs)) = holder else { continue };
        let entries = match list_output_dir(h, od).await {
            Ok(e) => e,
            Err(e) => return Ok(e.verdict(unmet(check))),
        };
        let rel = path[abs.trim_end_matches('/').len() + 1..].to_string();
        let want = digest::of_bytes(content.as_bytes());
        match entries.get(&rel) {
            Some(OutputEntry::File { digest, .. }) if *digest == want => found.push(format!("{}:{rel}", od.path)),
            other => {
                return Ok(Verdict::new(
                    unmet(check),
                    format!("`{rel}` in output `{}` is not what the command wrote", od.path),
                )
                .with(
                    format!("{}/{rel}", od.path),
                    Some(format!("file {}", digest::show(&want))),
                    format!("{other:?}"),
                ))
            }
        }
    }
    // Logs of the command come back too (BuildStream shows them for failed builds).
    let said: Vec<&String> = check.action.probe.windows(2).filter(|w| w[0] == "--stderr").map(|w| &w[1]).collect();
    if !said.is_empty() {
        let stderr = match h.probe_output(&outcome).await {
            Ok(Some(p)) => p.stderr_excerpt,
            Ok(None) => String::new(),
            Err(e) => return Ok(e.verdict(unmet(check))),
        };
        if let Some(missing) = said.iter().find(|text| !stderr.contains(text.as_str())) {
            return Ok(Verdict::new(unmet(check), format!("stderr lacks `{missing}`, which the command wrote")).with(
                "stderr",
                Some(format!("contains {missing:?}")),
                stderr,
            ));
        }
    }
    Ok(Verdict::pass(format!("output directories {got:?}; found {found:?}")))
}

/// With `output_directory_format = DIRECTORY_ONLY` the result carries
/// `root_directory_digest`, and every blob it references is fetchable.
pub(super) async fn root_directory_digest(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (od, entries) = first_output_dir(h, check).await?;
    if od.root_directory_digest.as_ref().is_none_or(|d| d.hash.is_empty()) {
        // root_directory_digest is a v2.8 field: an older server legally
        // answers with tree_digest alone, which BuildStream falls back to.
        let high = h.capabilities.high_api_version.as_ref().map(|v| (v.major, v.minor)).unwrap_or_default();
        if high < (2, 8) {
            return Ok(Verdict::pass(format!(
                "tree_digest only, from a server of API {}.{} (before root_directory_digest existed)",
                high.0, high.1
            )));
        }
        return Ok(Verdict::new(unmet(check), "DIRECTORY_ONLY was asked for, but only tree_digest came back").with(
            "root_directory_digest",
            Some("set".into()),
            "absent",
        ));
    }
    // Both given: they must describe the same directory.
    if let (Some(root), Some(tree_digest)) = (&od.root_directory_digest, &od.tree_digest) {
        let tree = fetch_tree(h, check, tree_digest).await?;
        let tree_root = digest::of_message(&tree.root.unwrap_or_default()).0;
        if tree_root != *root {
            return Ok(Verdict::new(unmet(check), "root_directory_digest is not the root of tree_digest's Tree").with(
                "root_directory_digest",
                Some(format!("{} (the Tree's root)", digest::show(&tree_root))),
                digest::show(root),
            ));
        }
    }
    for (path, entry) in &entries {
        if let OutputEntry::File { digest, .. } = entry {
            if let Err(e) = h.cas.read(digest).await {
                if e.is_undecided() {
                    return Ok(Verdict::error(format!("fetching output file `{path}`: {e}")));
                }
                return Ok(Verdict::new(unmet(check), format!("output file `{path}` is not fetchable: {e}")).with(
                    path.clone(),
                    Some(format!("fetchable blob {}", digest::show(digest))),
                    e.to_string(),
                ));
            }
        }
    }
    Ok(Verdict::pass(format!("root_directory_digest with {} entries, all fetchable", entries.len())))
}

/// The Tree `tree_digest` names; one that cannot be fetched or decoded is the server's failing.
async fn fetch_tree(h: &Harness, check: &CheckSpec, tree_digest: &Digest) -> Result<Tree, Verdict> {
    match h.cas.read(tree_digest).await.map(|b| Tree::decode(&b[..])) {
        Ok(Ok(tree)) => Ok(tree),
        Ok(Err(e)) => Err(Verdict::new(unmet(check), format!("the Tree does not decode: {e}")).with(
            "tree_digest",
            Some("a Tree".into()),
            e.to_string(),
        )),
        Err(e) if e.is_undecided() => Err(Verdict::error(format!("fetching the Tree: {e}"))),
        Err(e) => Err(Verdict::new(unmet(check), format!("the Tree is not fetchable: {e}")).with(
            "tree_digest",
            Some("fetchable".into()),
            e.to_string(),
        )),
    }
}

/// Runs the check's action and lists its first output directory.
async fn first_output_dir(
    h: &Harness,
    check: &CheckSpec,
) -> Result<(OutputDirectory, BTreeMap<String, OutputEntry>), Verdict> {
    let od = first_output_directory(h, check).await?;
    let entries = list_output_dir(h, &od).await.map_err(|e| e.verdict(unmet(check)))?;
    Ok((od, entries))
}

/// Runs the check's action and returns its first output directory; none is
/// the server's failing.
async fn first_output_directory(h: &Harness, check: &CheckSpec) -> Result<OutputDirectory, Verdict> {
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = outcome.result() else { return Err(Verdict::error("completed without a result")) };
    result.output_directories.first().cloned().ok_or_else(|| {
        Verdict::new(unmet(check), "no output directory came back").with(
            "output_directories",
            Some(format!("{:?}", check.action.output_paths)),
            "none",
        )
    })
}

/// With `output_node_properties: [mtime]` every output file carries its mtime.
pub(super) async fn output_mtime(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, entries) = first_output_dir(h, check).await?;
    let files: Vec<(&String, Option<i64>)> = entries
        .iter()
        .filter_map(|(p, e)| match e {
            OutputEntry::File { mtime, .. } => Some((p, *mtime)),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        return Ok(Verdict::new(unmet(check), "no output file came back to carry an mtime").with(
            "output files",
            Some("the file the command wrote, with mtime".into()),
            "none",
        ));
    }
    let without: Vec<&String> = files.iter().filter(|(_, m)| m.is_none()).map(|(p, _)| *p).collect();
    if !without.is_empty() {
        return Ok(Verdict::new(unmet(check), format!("output files without mtime: {without:?}")).with(
            "node_properties.mtime",
            Some("set on every output file".into()),
            format!("missing on {without:?}"),
        ));
    }
    // Unchanged inputs keep their staged mtime (paths relative to the working directory).
    let workdir = check.action.working_directory.clone().unwrap_or_else(|| crate::action::DEFAULT_WORKDIR.to_string());
    for entry in &check.action.input_root {
        let crate::suite::EntrySpec::File { file, mtime: Some(staged), .. } = entry else { continue };
        let Some(rel) = file.strip_prefix(&format!("{workdir}/")) else { continue };
        let got = entries.get(rel).and_then(|e| match e {
            OutputEntry::File { mtime, .. } => *mtime,
            _ => None,
        });
        if got != Some(*staged) {
            return Ok(Verdict::new(
                unmet(check),
                format!("unchanged input `{rel}` came back with mtime {got:?}, staged with {staged}"),
            )
            .with(format!("{rel} mtime"), Some(staged.to_string()), format!("{got:?}")));
        }
    }
    Ok(Verdict::pass(format!("{} output file(s), each with its mtime; unchanged inputs kept theirs", files.len())))
}

/// stderr comes back byte for byte, and stdout holds the whole report.
pub(super) async fn stdio_exact(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let want_stderr: String =
        check.action.probe.windows(2).filter(|w| w[0] == "--stderr").map(|w| format!("{}\n", w[1])).collect();
    let output = match h.probe_output(&outcome).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Verdict::error("completed without a result")),
        Err(e) => return Ok(e.verdict(unmet(check))),
    };
    if output.stderr_excerpt != want_stderr {
        return Ok(Verdict::new(unmet(check), "stderr differs from what the command wrote").with(
            "stderr",
            Some(format!("{want_stderr:?}")),
            format!("{:?}", output.stderr_excerpt),
        ));
    }
    if let Err(why) = &output.report {
        return Ok(Verdict::new(unmet(check), format!("stdout is not the complete report: {why}")).with(
            "stdout",
            Some("the complete probe report".into()),
            output.stdout_excerpt.clone(),
        ));
    }
    Ok(Verdict::pass(format!("stderr {want_stderr:?} exact; stdout report complete")))
}

/// With output_directory_format TREE_ONLY (the proto default, what every
/// client before v2.8 gets), output directories come back as a Tree in
/// `tree_digest` holding what the command wrote.
pub(super) async fn tree_only(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let od = &first_output_directory(h, check).await?;
    let Some(tree_digest) = od.tree_digest.as_ref().filter(|d| !d.hash.is_empty()) else {
        return Ok(Verdict::new(unmet(check), "TREE_ONLY was asked for, but no tree_digest came back").with(
            "tree_digest",
            Some("a Tree".into()),
            if od.root_directory_digest.is_some() { "absent (root_directory_digest only)" } else { "absent" },
        ));
    };
    let tree = fetch_tree(h, check, tree_digest).await?;
    let root = tree.root.unwrap_or_default();
    let names: Vec<&str> =
        root.directories.iter().map(|d| d.name.as_str()).chain(root.files.iter().map(|f| f.name.as_str())).collect();
    if !root.directories.iter().any(|d| d.name == "sub") {
        return Ok(Verdict::new(unmet(check), "the Tree's root does not hold the directory the command wrote").with(
            "Tree.root",
            Some("an entry `sub`".into()),
            format!("{names:?}"),
        ));
    }
    Ok(Verdict::pass(format!("a Tree of {} directories, root holding {names:?}", tree.children.len() + 1)))
}

/// Without inline_stdout / inline_stderr asked for, the logs come back by
/// digest only: stdout_raw and stderr_raw are empty.
pub(super) async fn logs_not_inlined(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = outcome.result() else { return Err(Verdict::error("completed without a result")) };
    let inlined: Vec<String> = [("stdout_raw", result.stdout_raw.len()), ("stderr_raw", result.stderr_raw.len())]
        .into_iter()
        .filter(|(_, len)| *len > 0)
        .map(|(field, len)| format!("{field} ({len} bytes)"))
        .collect();
    if !inlined.is_empty() {
        return Ok(Verdict::new(unmet(check), format!("logs inlined although not asked for: {}", inlined.join(", ")))
            .with("ActionResult", Some("stdout_raw and stderr_raw empty".into()), inlined.join(", ")));
    }
    if result.stdout_digest.is_none() {
        return Ok(Verdict::new(unmet(check), "stdout has neither an inline copy nor a digest").with(
            "stdout_digest",
            Some("set".into()),
            "absent",
        ));
    }
    Ok(Verdict::pass("stdout and stderr by digest only"))
}

/// With output_directory_format TREE_AND_DIRECTORY an output directory
/// comes back both ways, naming one root (or, from a worker without the
/// format, as TREE_ONLY: the spec's fallback).
pub(super) async fn tree_and_directory(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let od = &first_output_directory(h, check).await?;
    let given = |d: &Option<Digest>| d.as_ref().filter(|d| !d.hash.is_empty()).cloned();
    let (tree_digest, root) = match (given(&od.tree_digest), given(&od.root_directory_digest)) {
        (Some(t), Some(r)) => (t, r),
        // The spec's fallback for a worker without TREE_AND_DIRECTORY.
        (Some(t), None) => {
            fetch_tree(h, check, &t).await?;
            return Ok(Verdict::pass("tree_digest only: TREE_AND_DIRECTORY taken as TREE_ONLY, as the spec allows"));
        }
        (None, r) => {
            return Ok(Verdict::new(unmet(check), "TREE_AND_DIRECTORY was asked for, but no Tree came back").with(
                "tree_digest",
                Some("a Tree (TREE_ONLY is the fallback for an unsupported format)".into()),
                if r.is_some() { "absent (root_directory_digest only)" } else { "absent" },
            ))
        }
    };
    let tree = fetch_tree(h, check, &tree_digest).await?;
    let tree_root = digest::of_message(&tree.root.unwrap_or_default()).0;
    if tree_root != root {
        // Two answers for one directory (outputs.root-directory-digest, a
        // MUST, catches the same server in DIRECTORY_ONLY).
        return Ok(Verdict::new(unmet(check), "root_directory_digest is not the root of tree_digest's Tree").with(
            "root_directory_digest",
            Some(format!("{} (the Tree's root)", digest::show(&tree_root))),
            digest::show(&root),
        ));
    }
    Ok(Verdict::pass("tree_digest and root_directory_digest, naming the same root"))
}

/// Paths of the output files and output directories of a result.
fn output_paths_of(
    result: &bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult,
) -> (Vec<String>, Vec<String>) {
    (
        result.output_files.iter().map(|f| f.path.clone()).collect(),
        result.output_directories.iter().map(|d| d.path.clone()).collect(),
    )
}

/// SKIP unless the server still takes REAPI v2.0 clients (low_api_version
/// 2.0), the only ones that send the deprecated output fields alone.
fn takes_v2_0_clients(h: &Harness) -> Result<(), Verdict> {
    let low = h.capabilities.low_api_version.as_ref().map(|v| (v.major, v.minor)).unwrap_or_default();
    if low > (2, 0) {
        return Err(Verdict::skip(format!(
            "the server accepts clients from API {}.{} on, not v2.0 ones",
            low.0, low.1
        )));
    }
    Ok(())
}

/// A directory where the deprecated output_files names a file is
/// FAILED_PRECONDITION, not silently left out.
pub(super) async fn legacy_kind_mismatch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    takes_v2_0_clients(h)?;
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let (outcome, _trace) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    let expected = "FAILED_PRECONDITION (rejected or in the operation)";
    if let Some(v) = super::undecided(&outcome, expected) {
        return Err(v);
    }
    if outcome.error_code() == Some(tonic::Code::FailedPrecondition) {
        return Ok(Verdict::pass(format!("FAILED_PRECONDITION: {}", outcome.describe())));
    }
    let found = match outcome.result() {
        Some(result) => {
            let (files, dirs) = output_paths_of(result);
            format!("{}; output files {files:?}, output directories {dirs:?}", outcome.describe())
        }
        None => outcome.describe(),
    };
    Ok(Verdict::new(unmet(check), "a directory named in output_files was not answered FAILED_PRECONDITION").with(
        "outcome",
        Some(expected.into()),
        found,
    ))
}

/// A Command with only the deprecated output_files and output_directories
/// (a REAPI v2.0 client) gets the parents of its outputs created, and back
/// exactly the file and directory it listed. Applies where the server still
/// accepts v2.0 clients (low_api_version 2.0).
pub(super) async fn legacy_outputs(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    takes_v2_0_clients(h)?;
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let report = match h.probe_output(&outcome).await.map_err(StepError::precondition)?.map(|o| o.report) {
        Some(Ok(report)) => report,
        // As everywhere: a completed action without the probe's report is the server's failing.
        Some(Err(why)) => {
            return Err(Verdict::new(unmet(check), format!("the action ran but produced no probe report ({why})")))
        }
        None => return Err(Verdict::error("completed without a result")),
    };
    for parent in ["out", "sub"] {
        let path = ["paths".to_string(), parent.to_string(), "type".to_string()];
        let kind = crate::evaluate::lookup(&report, &path).and_then(|v| v.as_str()).unwrap_or("absent");
        if kind != "dir" {
            return Ok(Verdict::new(
                unmet(check),
                format!("`{parent}`, the parent of an output, did not exist when the command started"),
            )
            .with(format!("paths[{parent}].type"), Some("dir".into()), kind));
        }
    }
    let Some(result) = outcome.result() else { return Err(Verdict::error("completed without a result")) };
    let (files, dirs) = output_paths_of(result);
    let wanted = (vec!["out/file".to_string()], vec!["sub/outdir".to_string()]);
    if (files.clone(), dirs.clone()) != wanted {
        return Ok(Verdict::new(
            unmet(check),
            "the outputs are not exactly the listed output_files and output_directories",
        )
        .with(
            "outputs",
            Some(format!("files {:?}, directories {:?}", wanted.0, wanted.1)),
            format!("files {files:?}, directories {dirs:?}"),
        ));
    }
    Ok(Verdict::pass("parents created; exactly out/file and sub/outdir came back"))
}

/// With output_paths set, the deprecated output_files and
/// output_directories are ignored: only the output_paths come back.
pub(super) async fn paths_override_legacy(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = outcome.result() else { return Err(Verdict::error("completed without a result")) };
    let (files, dirs) = output_paths_of(result);
    if files != ["a"] || !dirs.is_empty() {
        return Ok(Verdict::new(
            unmet(check),
            "outputs listed only in the deprecated fields came back beside output_paths",
        )
        .with(
            "outputs",
            Some("files [\"a\"], no directories (output_files and output_directories ignored)".into()),
            format!("files {files:?}, directories {dirs:?}"),
        ));
    }
    Ok(Verdict::pass("only the output_paths came back"))
}

/// A symlink named in output_paths comes back in output_symlinks with its
/// target, not followed into output_files.
pub(super) async fn symlink_output(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = outcome.result() else { return Err(Verdict::error("completed without a result")) };
    let symlinks: Vec<(String, String)> =
        result.output_symlinks.iter().map(|s| (s.path.clone(), s.target.clone())).collect();
    let (files, dirs) = output_paths_of(result);
    let wanted = ("out-link".to_string(), "reapi-probe".to_string());
    if symlinks == [wanted] && files.is_empty() && dirs.is_empty() {
        return Ok(Verdict::pass("output_symlinks: out-link -> reapi-probe"));
    }
    Ok(Verdict::new(unmet(check), "the symlink output did not come back as an output symlink").with(
        "outputs",
        Some("output_symlinks [out-link -> reapi-probe], no files, no directories".into()),
        format!("output_symlinks {symlinks:?}, files {files:?}, directories {dirs:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("buildstream/p/e", ".", "/buildstream/p/e")]
    #[case("buildstream/p/e", "../../../buildstream-install", "/buildstream-install")]
    #[case("buildstream/p/e", "../../..", "/")]
    #[case("", "out", "/out")]
    fn resolves_output_paths(#[case] base: &str, #[case] path: &str, #[case] want: &str) {
        assert_eq!(resolve(base, path), want);
    }

    #[test]
    fn write_directives_are_found() {
        let probe: Vec<String> = ["--write", "/a/b=x\\n", "--exit", "1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(writes(&probe), [("/a/b".to_string(), "x\n".to_string())]);
    }
}
