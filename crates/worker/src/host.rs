//! Executing a lease directly on the host: the input root is staged in a
//! plain per-action directory and the command runs there with the worker's
//! own environment plus the command's, no chroot and no namespaces. This is a
//! deliberately misconfigured cluster: `sh` resolves through PATH to the
//! host's shell, and `/` is the host's root.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    command::OutputDirectoryFormat, Action, ActionResult, Command, Digest, Directory, DirectoryNode,
    ExecutedActionMetadata, FileNode, OutputDirectory, OutputFile, OutputSymlink, SymlinkNode, Tree,
};
use bazel_remote_apis::google::protobuf::Timestamp;
use prost::Message;

use super::ctx::Ctx;
use super::lease_cas::{digest_of, CasFailure, Source};
use super::process::{self, ScratchDir};
use super::LeaseOutcome;

/// Bytes of file content fetched per round while staging.
const STAGE_CHUNK: i64 = 64 * 1024 * 1024;

fn now() -> Option<Timestamp> {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Some(Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

fn invalid(msg: impl Into<String>) -> CasFailure {
    CasFailure::new(tonic::Code::InvalidArgument, msg)
}

pub async fn execute(ctx: &Ctx, action: &Action) -> LeaseOutcome {
    match run(ctx, action).await {
        Ok(o) => o,
        Err(f) => f.into(),
    }
}

async fn run(ctx: &Ctx, action: &Action) -> Result<LeaseOutcome, CasFailure> {
    let mut meta = ExecutedActionMetadata { worker: ctx.config.bot_id.clone(), ..Default::default() };
    let scratch =
        ScratchDir::create(&ctx.config.work_dir).map_err(|e| CasFailure::io("creating the lease directory", e))?;
    let root = scratch.0.join("root");
    let command_digest = action.command_digest.clone().ok_or_else(|| invalid("Action without command_digest"))?;
    let command: Command = ctx.cas.read_message(&command_digest, "Command").await?;
    let argv0 = command.arguments.first().ok_or_else(|| invalid("Command without arguments"))?;

    meta.input_fetch_start_timestamp = now();
    let input_root =
        action.input_root_digest.clone().unwrap_or_else(|| digest_of(&Directory::default().encode_to_vec()));
    stage(ctx, &input_root, &root).await?;
    meta.input_fetch_completed_timestamp = now();

    let cwd = inside(&root, &root, &command.working_directory)
        .ok_or_else(|| invalid(format!("working_directory `{}` leaves the input root", command.working_directory)))?;
    // Before REAPI 2.1 outputs were listed as files and directories.
    #[allow(deprecated)]
    let outputs: Vec<(String, OutputKind)> = if command.output_paths.is_empty() {
        let files = command.output_files.iter().map(|p| (p.clone(), OutputKind::File));
        files.chain(command.output_directories.iter().map(|p| (p.clone(), OutputKind::Directory))).collect()
    } else {
        command.output_paths.iter().map(|p| (p.clone(), OutputKind::Any)).collect()
    };
    std::fs::create_dir_all(&cwd).map_err(|e| CasFailure::io("creating the working directory", e))?;
    // REAPI: the worker creates the parent directories of output paths.
    for (out, _) in &outputs {
        let path =
            inside(&root, &cwd, out).ok_or_else(|| invalid(format!("output path `{out}` leaves the input root")))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CasFailure::io("creating output parents", e))?;
        }
    }

    let (stdout_path, stderr_path) = (scratch.0.join("stdout"), scratch.0.join("stderr"));
    let open = |p: &Path| std::fs::File::create(p).map_err(|e| CasFailure::io("creating output capture files", e));
    let mut cmd = tokio::process::Command::new(argv0);
    cmd.args(&command.arguments[1..])
        .current_dir(&cwd)
        .envs(command.environment_variables.iter().map(|v| (&v.name, &v.value)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(open(&stdout_path)?))
        .stderr(Stdio::from(open(&stderr_path)?));
    meta.execution_start_timestamp = now();
    let timeout = action.timeout.as_ref().map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32));
    let (exit_code, timed_out) = match process::spawn(cmd) {
        // Like a shell: a command that cannot be started exits 127.
        Err(e) => {
            std::fs::write(&stderr_path, format!("{argv0}: {e}\n")).map_err(|e| CasFailure::io("writing stderr", e))?;
            (127, false)
        }
        Ok(mut child) => {
            let waited = match timeout {
                Some(t) if !t.is_zero() => tokio::time::timeout(t, child.wait()).await.ok(),
                _ => Some(child.wait().await),
            };
            child.kill_group();
            match waited {
                Some(Ok(status)) => (process::exit_code(status), false),
                Some(Err(e)) => return Err(CasFailure::io("waiting for the command", e)),
                None => (process::exit_code(child.wait().await.map_err(|e| CasFailure::io("waiting", e))?), true),
            }
        }
    };
    meta.execution_completed_timestamp = now();

    meta.output_upload_start_timestamp = now();
    let format = command.output_directory_format;
    let collect_root = root.clone();
    let collect_cwd = cwd.clone();
    let (mut result, mut blobs) =
        tokio::task::spawn_blocking(move || collect(&collect_root, &collect_cwd, &outputs, format))
            .await
            .map_err(|e| CasFailure::new(tonic::Code::Internal, format!("collecting outputs: {e}")))??;
    for (path, field) in [(&stdout_path, &mut result.stdout_digest), (&stderr_path, &mut result.stderr_digest)] {
        let data = std::fs::read(path).map_err(|e| CasFailure::io("reading captured output", e))?;
        let d = digest_of(&data);
        *field = Some(d.clone());
        blobs.push((d, Source::bytes(data)));
    }
    ctx.cas.upload(blobs).await?;
    meta.output_upload_completed_timestamp = now();
    result.exit_code = exit_code;
    result.execution_metadata = Some(meta);
    Ok(if timed_out {
        LeaseOutcome {
            result: Some(result),
            ..LeaseOutcome::error(tonic::Code::DeadlineExceeded, "the action timed out")
        }
    } else {
        LeaseOutcome::ok(result)
    })
}

/// `base/rel` resolved lexically, or None when it leaves `root`.
fn inside(root: &Path, base: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => path.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if path == root || !path.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    path.starts_with(root).then_some(path)
}

fn check_name(name: &str) -> Result<(), CasFailure> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(invalid(format!("invalid name `{name}` in the input tree")));
    }
    Ok(())
}

/// Writes the input tree under `dir`.
async fn stage(ctx: &Ctx, root: &Digest, dir: &Path) -> Result<(), CasFailure> {
    let dirs = ctx.cas.read_tree(root).await?;
    let mut files: HashMap<String, (Digest, Vec<(PathBuf, bool)>)> = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), root.hash.clone())];
    while let Some((path, hash)) = stack.pop() {
        let d = &dirs[&hash];
        std::fs::create_dir_all(&path).map_err(|e| CasFailure::io("staging a directory", e))?;
        for f in &d.files {
            check_name(&f.name)?;
            let digest = f.digest.clone().unwrap_or_else(|| digest_of(b""));
            files.entry(digest.hash.clone()).or_insert((digest, vec![])).1.push((path.join(&f.name), f.is_executable));
        }
        for s in &d.symlinks {
            check_name(&s.name)?;
            std::os::unix::fs::symlink(&s.target, path.join(&s.name))
                .map_err(|e| CasFailure::io("staging a symlink", e))?;
        }
        for c in &d.directories {
            check_name(&c.name)?;
            stack.push((path.join(&c.name), c.digest.clone().unwrap_or_default().hash));
        }
    }
    // Fetch contents a chunk at a time so a large input root stays off the heap.
    let all: Vec<(Digest, Vec<(PathBuf, bool)>)> = files.into_values().collect();
    let mut start = 0;
    while start < all.len() {
        let (mut end, mut size) = (start, 0);
        while end < all.len() && (end == start || size + all[end].0.size_bytes <= STAGE_CHUNK) {
            size += all[end].0.size_bytes;
            end += 1;
        }
        let digests: Vec<Digest> = all[start..end].iter().map(|(d, _)| d.clone()).collect();
        let contents = ctx.cas.read_many(&digests).await?;
        for (d, targets) in &all[start..end] {
            for (path, executable) in targets {
                let mode = if *executable { 0o755 } else { 0o644 };
                process::write_file(path, &contents[&d.hash], mode).map_err(|e| CasFailure::io("staging a file", e))?;
            }
        }
        start = end;
    }
    Ok(())
}

/// What a requested output may be: anything (`output_paths`), or what a
/// v2.0 client's deprecated `output_files` / `output_directories` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Any,
    File,
    Directory,
}

/// Builds the output part of the ActionResult and the blobs to upload. A
/// legacy output of the other kind is FAILED_PRECONDITION, as REAPI says.
fn collect(
    root: &Path,
    cwd: &Path,
    outputs: &[(String, OutputKind)],
    format: i32,
) -> Result<(ActionResult, Vec<(Digest, Source)>), CasFailure> {
    let io = |e| CasFailure::io("collecting outputs", e);
    let mut result = ActionResult::default();
    let mut blobs = Vec::new();
    for (out, kind) in outputs {
        let Some(path) = inside(root, cwd, out) else { continue };
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let mismatch = match kind {
            OutputKind::File if meta.is_dir() => Some("output_files names a directory"),
            OutputKind::Directory if meta.is_file() => Some("output_directories names a file"),
            _ => None,
        };
        if let Some(why) = mismatch {
            return Err(CasFailure::new(tonic::Code::FailedPrecondition, format!("{why}: {out}")));
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io)?.to_string_lossy().into_owned();
            result.output_symlinks.push(OutputSymlink { path: out.clone(), target, node_properties: None });
        } else if meta.is_dir() {
            let mut children = Vec::new();
            let mut seen = HashSet::new();
            let (dir, digest) = directory(&path, &mut blobs, &mut children, &mut seen).map_err(io)?;
            let tree = Tree { root: Some(dir), children };
            let tree_bytes = tree.encode_to_vec();
            let tree_digest = digest_of(&tree_bytes);
            blobs.push((tree_digest.clone(), Source::bytes(tree_bytes)));
            let tree_only = format == OutputDirectoryFormat::TreeOnly as i32;
            result.output_directories.push(OutputDirectory {
                path: out.clone(),
                tree_digest: Some(tree_digest),
                is_topologically_sorted: false,
                root_directory_digest: (!tree_only).then_some(digest),
            });
        } else if meta.is_file() {
            let data = std::fs::read(&path).map_err(io)?;
            let digest = digest_of(&data);
            blobs.push((digest.clone(), Source::File(path.clone())));
            result.output_files.push(OutputFile {
                path: out.clone(),
                digest: Some(digest),
                is_executable: meta.permissions().mode() & 0o111 != 0,
                ..Default::default()
            });
        }
    }
    Ok((result, blobs))
}

/// The Directory message for `path`, its subdirectories added to `children`.
fn directory(
    path: &Path,
    blobs: &mut Vec<(Digest, Source)>,
    children: &mut Vec<Directory>,
    seen: &mut HashSet<String>,
) -> std::io::Result<(Directory, Digest)> {
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    let mut dir = Directory::default();
    for (name, p) in entries {
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p)?.to_string_lossy().into_owned();
            dir.symlinks.push(SymlinkNode { name, target, node_properties: None });
        } else if meta.is_dir() {
            let (child, digest) = directory(&p, blobs, children, seen)?;
            if seen.insert(digest.hash.clone()) {
                children.push(child);
            }
            dir.directories.push(DirectoryNode { name, digest: Some(digest) });
        } else if meta.is_file() {
            let data = std::fs::read(&p)?;
            let digest = digest_of(&data);
            blobs.push((digest.clone(), Source::File(p)));
            dir.files.push(FileNode {
                name,
                digest: Some(digest),
                is_executable: meta.permissions().mode() & 0o111 != 0,
                node_properties: None,
            });
        }
        // Sockets, FIFOs and devices have no CAS form: left out.
    }
    let bytes = dir.encode_to_vec();
    let digest = digest_of(&bytes);
    blobs.push((digest.clone(), Source::bytes(bytes)));
    Ok((dir, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/w/root");
        let cwd = root.join("a/b/c");
        assert_eq!(inside(root, &cwd, "../../../x"), Some(root.join("x")));
        assert_eq!(inside(root, &cwd, "../../.."), Some(root.to_path_buf()));
        assert_eq!(inside(root, &cwd, "."), Some(cwd.clone()));
        assert_eq!(inside(root, &cwd, "../../../.."), None);
        assert_eq!(inside(root, &cwd, "/etc"), None);
        assert_eq!(inside(root, root, ""), Some(root.to_path_buf()));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
