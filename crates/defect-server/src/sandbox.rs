//! Staging input roots and running commands in bubblewrap.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use tokio::sync::watch;

use super::cas::BlobView;
use super::defects::{Defect, Defects};
use super::platform::RunAs;
use super::{lock, Shared};

pub(crate) const BWRAP: &str = "/usr/bin/bwrap";
/// Limits on what an input tree may expand to; a Directory can be referenced
/// many times, so a small CAS can describe a huge tree.
const MAX_INPUT_NODES: usize = 200_000;
const MAX_INPUT_DEPTH: usize = 128;
/// Symlinks followed while resolving one path inside the root (as Linux).
const MAX_SYMLINK_HOPS: usize = 40;
/// What `worker-env-leak` adds to every action's environment.
const WORKER_ENV: &[(&str, &str)] =
    &[("HOME", "/root"), ("USER", "root"), ("LANG", "C.UTF-8"), ("WORKER_NAME", "defect-server")];
/// What `argv0-worker-path` resolves argv[0] with (and leaves in PATH).
const WORKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Device nodes a BuildStream sandbox has in /dev.
const DEV_NODES: &[&str] = &["full", "null", "random", "urandom", "zero"];

// ---------------------------------------------------------------------------
// Process groups of running sandboxes

/// Every running bwrap is the leader of its own process group, recorded here
/// so that stopping the server can kill them all, even from `Drop`.
#[derive(Default)]
pub(crate) struct SandboxRegistry {
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    closed: bool,
    groups: HashSet<i32>,
    /// The process group holding the shared PID namespace of
    /// `proc-worker-pid-ns`, and that namespace's pid 1 on the host.
    holder: Option<(i32, i32)>,
}

fn kill_group(pgid: i32) {
    // Never 0 or 1: kill(0) and kill(-1) would hit this process or everything.
    if pgid > 1 {
        // SAFETY: kill(2) has no memory effects; a stale group gives ESRCH.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl SandboxRegistry {
    /// Records a running group; `false` once the server is stopping (the
    /// group has then been killed already).
    fn register(&self, pgid: i32) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            kill_group(pgid);
            return false;
        }
        state.groups.insert(pgid);
        true
    }

    fn unregister(&self, pgid: i32) {
        lock(&self.state).groups.remove(&pgid);
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).groups.is_empty()
    }

    /// Kills every running sandbox and refuses new ones.
    pub(crate) fn close_and_kill_all(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        for pgid in state.groups.drain() {
            kill_group(pgid);
        }
        if let Some((pgid, _)) = state.holder.take() {
            kill_group(pgid);
        }
    }

    /// The user and PID namespace files every action joins with
    /// `proc-worker-pid-ns`, as a worker container gives all its actions one
    /// PID namespace. Started once: a bwrap that sleeps in a new user and PID
    /// namespace until the server stops.
    pub(crate) fn shared_pid_namespace(&self) -> io::Result<(fs::File, fs::File)> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(io::Error::other("server is stopping"));
        }
        let inner = match state.holder {
            Some((_, inner)) => inner,
            None => {
                let mut cmd = std::process::Command::new(BWRAP);
                cmd.args(["--die-with-parent", "--unshare-user", "--unshare-pid", "--uid", "0", "--gid", "0"])
                    .args(["--ro-bind", "/", "/", "--proc", "/proc", "--", "sleep", "86400"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                reapi_worker::own_group_killed_with_parent(&mut cmd);
                let mut child = reapi_worker::forking(|| cmd.spawn(), |c| Some(c.id()))?;
                let pgid = child.id() as i32;
                // Killed with its group when the server stops; reaped here then.
                std::thread::spawn(move || child.wait());
                state.holder = Some((pgid, 0));
                let inner = namespace_init(pgid)?;
                state.holder = Some((pgid, inner));
                inner
            }
        };
        Ok((fs::File::open(format!("/proc/{inner}/ns/user"))?, fs::File::open(format!("/proc/{inner}/ns/pid"))?))
    }
}

/// The host pid of the namespace's pid 1 that bwrap `outer` forks, once its
/// uid map is written (joining before would leave the joiner unmapped).
fn namespace_init(outer: i32) -> io::Result<i32> {
    for _ in 0..500 {
        let children = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).unwrap_or_default();
        if let Some(inner) = children.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
            if fs::read_to_string(format!("/proc/{inner}/uid_map")).is_ok_and(|m| !m.trim().is_empty()) {
                return Ok(inner);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::other("the shared PID namespace's bwrap did not start within 5 s"))
}

/// Removes `path` and everything below it, making read-only directories
/// writable first when a plain removal is refused.
pub(crate) fn remove_tree(path: &Path) {
    // A few tries: a job still winding down may add an entry meanwhile.
    for _ in 0..5 {
        if fs::remove_dir_all(path).is_ok() || fs::symlink_metadata(path).is_err() {
            return;
        }
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Input trees

/// One entry of an input root, path relative to the root.
#[derive(Debug)]
enum InputNode {
    Dir { path: PathBuf, is_empty: bool },
    File { path: PathBuf, digest: re::Digest, executable: bool, properties: Option<re::NodeProperties> },
    Symlink { path: PathBuf, target: String },
}

/// A directory whose `SubtreeReadOnly` differs from its parent's.
#[derive(Debug, Clone)]
pub(crate) struct SubtreeMount {
    pub(crate) path: PathBuf,
    pub(crate) read_only: bool,
}

/// An input root read from the CAS, ready to be written out.
#[derive(Debug, Default)]
pub(crate) struct InputPlan {
    nodes: Vec<InputNode>,
    /// Blobs the tree refers to that the CAS does not hold.
    pub(crate) missing: Vec<re::Digest>,
    /// Whether the root itself is `SubtreeReadOnly=true`.
    pub(crate) root_read_only: bool,
    /// Changes of read-only-ness below the root, parents before children.
    pub(crate) subtree_mounts: Vec<SubtreeMount>,
}

impl InputPlan {
    /// Whether the tree has a directory `name` directly under its root.
    pub(crate) fn has_dir(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| matches!(n, InputNode::Dir { path, .. } if path == Path::new(name)))
    }

    /// Whether the tree has any directory directly under its root.
    pub(crate) fn has_top_level_dir(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, InputNode::Dir { path, .. } if path.components().count() == 1))
    }

    /// Whether some symlink of the tree has an absolute target.
    pub(crate) fn has_absolute_symlink(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, InputNode::Symlink { target, .. } if target.starts_with('/')))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err(format!("invalid name {name:?} in the input tree"))
    } else {
        Ok(())
    }
}

fn subtree_read_only(directory: &re::Directory) -> Option<bool> {
    let properties = directory.node_properties.as_ref()?;
    properties.properties.iter().find(|p| p.name == "SubtreeReadOnly").map(|p| p.value == "true")
}

/// Reads the tree under `root` from the CAS. Missing blobs are listed, and
/// the tree is planned as if they were empty; an `Err` says why the tree is
/// invalid.
pub(crate) fn plan_input_root(blobs: &BlobView<'_>, root: &re::Digest) -> Result<InputPlan, String> {
    let mut plan = InputPlan::default();
    let mut missing_seen = HashSet::new();
    // (digest, path, depth, parent's effective read-only-ness)
    let mut stack: Vec<(re::Digest, PathBuf, usize, bool)> = vec![(root.clone(), PathBuf::new(), 0, false)];
    while let Some((digest, path, depth, parent_read_only)) = stack.pop() {
        if depth > MAX_INPUT_DEPTH {
            return Err(format!("input tree deeper than {MAX_INPUT_DEPTH} levels"));
        }
        let directory: re::Directory = match blobs.get_message(&digest) {
            Some(Ok(directory)) => directory,
            Some(Err(e)) => return Err(format!("blob {}/{} is not a Directory: {e}", digest.hash, digest.size_bytes)),
            None => {
                if missing_seen.insert(digest.hash.clone()) {
                    plan.missing.push(digest.clone());
                }
                re::Directory::default()
            }
        };
        let read_only = subtree_read_only(&directory).unwrap_or(parent_read_only);
        if depth == 0 {
            plan.root_read_only = read_only;
        } else if read_only != parent_read_only {
            plan.subtree_mounts.push(SubtreeMount { path: path.clone(), read_only });
        }
        let is_empty = directory.files.is_empty() && directory.directories.is_empty() && directory.symlinks.is_empty();
        plan.nodes.push(InputNode::Dir { path: path.clone(), is_empty });
        for file in directory.files {
            check_name(&file.name)?;
            let digest =
                blobs.check_digest(file.digest.as_ref(), "FileNode.digest").map_err(|e| e.message().to_string())?;
            if !blobs.contains(&digest) && missing_seen.insert(digest.hash.clone()) {
                plan.missing.push(digest.clone());
            }
            plan.nodes.push(InputNode::File {
                path: path.join(&file.name),
                digest,
                executable: file.is_executable,
                properties: file.node_properties,
            });
        }
        for symlink in directory.symlinks {
            check_name(&symlink.name)?;
            if symlink.target.is_empty() || symlink.target.contains('\0') {
                return Err(format!("invalid target {:?} of symlink {:?}", symlink.target, symlink.name));
            }
            plan.nodes.push(InputNode::Symlink { path: path.join(&symlink.name), target: symlink.target });
        }
        // Pushed in reverse so they are visited in order: parents always
        // come before children in `nodes` and `subtree_mounts`.
        for child in directory.directories.into_iter().rev() {
            check_name(&child.name)?;
            let digest = blobs
                .check_digest(child.digest.as_ref(), "DirectoryNode.digest")
                .map_err(|e| e.message().to_string())?;
            stack.push((digest, path.join(&child.name), depth + 1, read_only));
        }
        if plan.nodes.len() > MAX_INPUT_NODES {
            return Err(format!("input tree has more than {MAX_INPUT_NODES} entries"));
        }
    }
    Ok(plan)
}

fn timestamp_to_system_time(ts: &bazel_remote_apis::google::protobuf::Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Writes `plan` out under `root` (an existing, empty directory). The three
/// `*-dropped` defects are applied here.
pub(crate) fn materialise(
    root: &Path,
    plan: &InputPlan,
    blobs: &BlobView<'_>,
    defects: &Defects,
    stopping: impl Fn() -> bool,
) -> io::Result<()> {
    for node in &plan.nodes {
        // Stop early when the server stops, so its work dir can go.
        if stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "server is stopping"));
        }
        match node {
            InputNode::Dir { path, .. } if path.as_os_str().is_empty() => {}
            InputNode::Dir { is_empty: true, .. } if defects.has(Defect::EmptyDirsDropped) => {}
            InputNode::Dir { path, .. } => fs::create_dir(root.join(path))?,
            InputNode::File { path, digest, executable, properties } => {
                // Missing content only gets here with `missing-blob-not-reported`.
                let content = blobs.get(digest).unwrap_or_default();
                let mut mode = properties
                    .as_ref()
                    .and_then(|p| p.unix_mode.as_ref())
                    .map(|m| m.value & 0o7777)
                    .unwrap_or(if *executable { 0o755 } else { 0o644 });
                if defects.has(Defect::ExecBitsDropped) {
                    mode &= !0o111;
                }
                let host_path = root.join(path);
                // No fork may inherit an executable's open descriptor, or its
                // exec meets ETXTBSY (see reapi_worker::forking).
                let _turn = (mode & 0o111 != 0).then(reapi_worker::executable_write_turn);
                let file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&host_path)?;
                io::Write::write_all(&mut &file, &content)?;
                // The umask may have narrowed the mode given to open().
                file.set_permissions(fs::Permissions::from_mode(mode))?;
                let mtime =
                    properties.as_ref().and_then(|p| p.mtime.as_ref()).filter(|_| !defects.has(Defect::MtimeIgnored));
                if let Some(mtime) = mtime.and_then(timestamp_to_system_time) {
                    file.set_modified(mtime)?;
                }
            }
            InputNode::Symlink { .. } if defects.has(Defect::SymlinksDropped) => {}
            InputNode::Symlink { path, target } => std::os::unix::fs::symlink(target, root.join(path))?,
        }
    }
    Ok(())
}

/// Lexically joins `relative` onto `base` (both lists of names under the
/// input root). `Err` when it is absolute or climbs above the root.
pub(crate) fn join_relative(base: &[String], relative: &str) -> Result<Vec<String>, String> {
    if relative.starts_with('/') {
        return Err(format!("path {relative:?} is absolute"));
    }
    let mut out = base.to_vec();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(format!("path {relative:?} leaves the input root"));
                }
            }
            name => out.push(name.to_string()),
        }
    }
    Ok(out)
}

/// Where `components` lies on the host, seen from inside the sandbox: a
/// symlink among the leading components is followed inside `root` (an
/// absolute target starts again at `root`), the last component is not
/// followed. With `create`, missing directories on the way (and the last
/// component, if `create_last` too) are made. Never leaves `root`.
pub(crate) fn resolve_in_root(
    root: &Path,
    components: &[String],
    create: bool,
    create_last: bool,
) -> io::Result<PathBuf> {
    let mut current: Vec<String> = Vec::new();
    let mut pending: VecDeque<String> = components.iter().cloned().collect();
    let mut hops = 0;
    let here = |current: &[String]| current.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    while let Some(name) = pending.pop_front() {
        match name.as_str() {
            "" | "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let is_last = pending.is_empty();
        let candidate = here(&current).join(&name);
        if is_last {
            if create && create_last && fs::symlink_metadata(&candidate).is_err() {
                fs::create_dir(&candidate)?;
            }
            current.push(name);
            break;
        }
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs::read_link(&candidate)?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    current.clear();
                }
                for part in target.split('/').rev() {
                    pending.push_front(part.to_string());
                }
            }
            Ok(meta) if meta.is_dir() => current.push(name),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::NotADirectory, format!("{name} is not a directory"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&candidate)?;
                current.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(here(&current))
}

// ---------------------------------------------------------------------------
// bwrap

/// What one sandboxed run needs.
pub(crate) struct SandboxSpec<'a> {
    /// The staged input root on the host.
    pub(crate) root: &'a Path,
    pub(crate) plan: &'a InputPlan,
    /// Working directory, as names under the input root.
    pub(crate) working_dir: &'a [String],
    pub(crate) arguments: &'a [String],
    pub(crate) environment: &'a [re::command::EnvironmentVariable],
    pub(crate) run_as: RunAs,
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn add(&mut self, parts: &[&str]) -> &mut Self {
        self.0.extend(parts.iter().map(OsString::from));
        self
    }
    fn mount(&mut self, how: &str, source: &Path, dest: &Path) -> &mut Self {
        self.0.extend([OsString::from(how), source.into(), dest.into()]);
        self
    }
}

/// The bwrap command line for `spec`. Every sandbox defect except the three
/// staging ones is applied here.
pub(crate) fn bwrap_args(spec: &SandboxSpec<'_>, defects: &Defects) -> Vec<OsString> {
    let mut args = Args::default();

    // Namespaces: a private user, IPC, UTS and cgroup namespace always; PID
    // and network unless a defect or `network=on` says otherwise.
    if defects.has(Defect::ProcWorkerPidNs) {
        // The namespaces held by `shared_pid_namespace`, passed as fds 3 and 4.
        args.add(&["--die-with-parent", "--userns", "3", "--pidns", "4"]);
    } else {
        args.add(&["--die-with-parent", "--unshare-user"]);
    }
    args.add(&["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
    if !defects.has(Defect::ProcSharedPidNs) && !defects.has(Defect::ProcWorkerPidNs) {
        args.add(&["--unshare-pid"]);
    }
    if !spec.run_as.network && !defects.has(Defect::SharedNetwork) {
        args.add(&["--unshare-net"]);
    }

    // The filesystem: the input root is `/`, unless the worker does not chroot.
    let root_inside: PathBuf = if defects.has(Defect::InputRootAsSubdir) {
        // Like a worker without chroot: its own `/` (read-only here, so a test
        // cannot harm the host), a private /tmp, and the staged root writable
        // where it lies. The private /tmp comes first: the root may be under it.
        args.mount("--ro-bind", Path::new("/"), Path::new("/"));
        args.add(&["--tmpfs", "/tmp"]);
        args.mount("--bind", spec.root, spec.root);
        spec.root.to_path_buf()
    } else {
        let read_only = spec.plan.root_read_only && !defects.has(Defect::SubtreeReadOnlyIgnored);
        args.mount(if read_only { "--ro-bind" } else { "--bind" }, spec.root, Path::new("/"));
        PathBuf::from("/")
    };
    for subtree in &spec.plan.subtree_mounts {
        let read_only = subtree.read_only && !defects.has(Defect::SubtreeReadOnlyIgnored);
        let how = if read_only { "--ro-bind" } else { "--bind" };
        args.mount(how, &spec.root.join(&subtree.path), &root_inside.join(&subtree.path));
    }
    if !defects.has(Defect::NoProc) {
        args.add(&["--proc", "/proc"]);
    }
    if defects.has(Defect::DevMissingNodes) {
        args.add(&["--tmpfs", "/dev", "--dev-bind", "/dev/null", "/dev/null"]);
        args.add(&["--perms", "1777", "--tmpfs", "/dev/shm"]);
    } else if defects.has(Defect::NoDevShm) {
        args.add(&["--tmpfs", "/dev"]);
        for node in DEV_NODES {
            let node = format!("/dev/{node}");
            args.add(&["--dev-bind", &node, &node]);
        }
    } else {
        // --dev gives full, null, random, urandom, zero, tty, pts; /dev/shm
        // gets its own world-writable tmpfs so any uid can use it.
        args.add(&["--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm"]);
    }
    if defects.has(Defect::TmpSharedSerial) {
        // The server's work dir holds the roots; its parent is the shared /tmp.
        let shared_tmp = spec.root.parent().and_then(Path::parent).map(|w| w.join("shared-tmp"));
        if let Some(shared_tmp) = shared_tmp.filter(|t| fs::create_dir_all(t).is_ok()) {
            args.mount("--bind", &shared_tmp, Path::new("/tmp"));
        }
    }
    if defects.has(Defect::TmpNotWritable) {
        args.mount("--ro-bind", &spec.root.join("tmp"), Path::new("/tmp"));
    }
    if defects.has(Defect::EtcFilesInjected) {
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            if Path::new(file).exists() {
                args.mount("--ro-bind", Path::new(file), &root_inside.join(file.trim_start_matches('/')));
            }
        }
    }
    if defects.has(Defect::HostUsrBound) {
        args.mount("--ro-bind", Path::new("/usr"), &root_inside.join("usr"));
    }

    let working_dir = spec.working_dir.iter().fold(root_inside.clone(), |p, c| p.join(c));
    args.0.extend([OsString::from("--chdir"), working_dir.into()]);

    // The environment: exactly the Command's, in its order. bwrap applies
    // these before it looks argv[0] up, so PATH is the Command's PATH.
    args.add(&["--clearenv"]);
    if defects.has(Defect::WorkerEnvLeak) {
        for (name, value) in WORKER_ENV {
            args.add(&["--setenv", name, value]);
        }
    }
    for variable in spec.environment {
        args.add(&["--setenv", &variable.name, &variable.value]);
    }
    if defects.has(Defect::Argv0WorkerPath) {
        args.add(&["--setenv", "PATH", WORKER_PATH]);
    }

    let (uid, gid) = if defects.has(Defect::NonRootUid) { (1000, 1000) } else { (spec.run_as.uid, spec.run_as.gid) };
    args.add(&["--uid", &uid.to_string(), "--gid", &gid.to_string(), "--"]);
    if defects.has(Defect::RunnerExecsEnv) {
        // bb_runner with chrootIntoInputRoot: env inside the root does the PATH lookup.
        args.add(&["/usr/bin/env", "--"]);
    }
    let mut arguments = spec.arguments.iter().map(OsString::from);
    if let Some(argv0) = spec.arguments.first().filter(|_| defects.has(Defect::Argv0RelativeToRoot)) {
        // v2.2's rule: a relative path with a separator starts at the input root.
        let relative = argv0.contains('/') && !argv0.starts_with('/');
        let resolved = if relative { root_inside.join(argv0.trim_start_matches("./")) } else { PathBuf::from(argv0) };
        args.0.push(resolved.into());
        arguments.next();
    }
    args.0.extend(arguments);
    args.0
}

/// How a sandboxed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// Exit code, or 128 + signal number.
    Exited(i32),
    TimedOut,
    Cancelled,
    ServerStopping,
}

/// Runs bwrap with `args`, stdout and stderr going to the given files, until
/// it exits, `timeout` passes, `cancel` turns true or the server stops.
pub(crate) async fn run_bwrap(
    shared: &Shared,
    args: Vec<OsString>,
    stdout: &Path,
    stderr: &Path,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
) -> io::Result<RunEnd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::ExitStatusExt;

    let mut command = tokio::process::Command::new(BWRAP);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(fs::File::create(stdout)?)
        .stderr(fs::File::create(stderr)?)
        .kill_on_drop(true);
    // Its own process group, so one kill reaches every process in it.
    reapi_worker::own_group_killed_with_parent(command.as_std_mut());
    // Kept open until bwrap has started: its fds 3 and 4 are dups of these.
    let namespace_files =
        if shared.defects.has(Defect::ProcWorkerPidNs) { Some(shared.sandboxes.shared_pid_namespace()?) } else { None };
    if let Some((user, pid)) = &namespace_files {
        let (user, pid) = (user.as_raw_fd(), pid.as_raw_fd());
        // SAFETY: only async-signal-safe fcntl/dup2 between fork and exec. The
        // fds are first moved above 10 so that placing one cannot clobber the other.
        unsafe {
            command.pre_exec(move || {
                let (user, pid) = (libc::fcntl(user, libc::F_DUPFD, 10), libc::fcntl(pid, libc::F_DUPFD, 10));
                if user < 0 || pid < 0 || libc::dup2(user, 3) < 0 || libc::dup2(pid, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = reapi_worker::forking(|| command.spawn(), |c| c.id())?;
    drop(namespace_files);
    let pgid = child.id().map(|id| id as i32).unwrap_or(0);
    if !shared.sandboxes.register(pgid) {
        let _ = child.wait().await;
        return Ok(RunEnd::ServerStopping);
    }
    let end = tokio::select! {
        status = child.wait() => status.map(|status| {
            RunEnd::Exited(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }),
        _ = tokio::time::sleep(timeout) => Ok(RunEnd::TimedOut),
        _ = cancel.wait_for(|cancelled| *cancelled) => Ok(RunEnd::Cancelled),
        _ = shared.until_shutdown() => Ok(RunEnd::ServerStopping),
    };
    if !matches!(end, Ok(RunEnd::Exited(_))) {
        // Killed before reaping, so the group id cannot have been reused.
        kill_group(pgid);
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    shared.sandboxes.unregister(pgid);
    end
}
