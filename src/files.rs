//! Files the user names on the command line: read them with a size bound,
//! write reports only to regular files.
//!
//! A FIFO, a terminal, `/dev/zero` or a socket given where a file is meant
//! would otherwise hang the run (opening a FIFO blocks until a writer comes)
//! or read until memory runs out; each is refused up front in one line.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bound for configuration-sized inputs: expectation files, buildstream.conf,
/// certificates and suites are a few KiB; anything this big is not one.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Bound for a token file: a bearer token is at most a few KiB (JWTs included).
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Bound for a `run --json` report read by `matrix`: a report carries at most
/// a few KiB of evidence per check.
pub const MAX_REPORT_BYTES: u64 = 32 * 1024 * 1024;

/// What a non-regular file is, for the message.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Flags for opening a user-named path: never block on a FIFO (the
/// regular-file check after opening refuses it), never make a terminal our
/// controlling terminal.
fn no_block() -> i32 {
    libc::O_NONBLOCK | libc::O_NOCTTY
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// A file that could not be read: which, and why.
#[derive(Debug)]
pub struct FileError {
    /// The file as the user named it.
    pub path: PathBuf,
    /// What is wrong with it, in words: unreadable, too large, not a regular file, not UTF-8.
    pub why: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for FileError {}

/// Callers that report errors as text (the CLI) take it with `?`.
impl From<FileError> for String {
    fn from(e: FileError) -> String {
        e.to_string()
    }
}

/// Reads a regular file of at most `max_bytes`. The type is checked before
/// opening (a device is not even opened) and again on the open file (the
/// path may have changed in between); the read stops one byte past the bound,
/// so a file that grows meanwhile cannot exhaust memory either.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let fail = |why: String| FileError { path: path.to_path_buf(), why };
    let not_regular = |meta: &Metadata| fail(format!("is {}, expected a regular file", kind(meta)));
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(no_block())
        .open(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let meta = file.metadata().map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max_bytes {
        return Err(fail(format!("is {} bytes, more than the {} such a file may hold", meta.len(), human(max_bytes))));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut data).map_err(|e| fail(format!("cannot read: {e}")))?;
    if data.len() as u64 > max_bytes {
        return Err(fail(format!("grew past the {} such a file may hold while being read", human(max_bytes))));
    }
    Ok(data)
}

/// [`read_regular_file`] for UTF-8 text.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, FileError> {
    let data = read_regular_file(path, max_bytes)?;
    String::from_utf8(data).map_err(|e| FileError { path: path.to_path_buf(), why: format!("not UTF-8 text: {e}") })
}

/// Whether `meta` is the file this process writes its standard output or
/// error to (`/dev/stdout`, `/proc/self/fd/2`, or the very file stdout is
/// redirected to): a report written there would garble the terminal report.
fn is_own_output(meta: &Metadata) -> Option<&'static str> {
    use std::os::fd::AsFd;
    let same = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .ok()
            .and_then(|owned| File::from(owned).metadata().ok())
            .is_some_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    };
    if same(std::io::stdout().as_fd()) {
        Some("this run's standard output")
    } else if same(std::io::stderr().as_fd()) {
        Some("this run's standard error")
    } else {
        None
    }
}

/// Fails early when a report cannot be written where asked: the path must be
/// a regular file or not exist yet (not a FIFO, device, socket, directory or
/// this process's own output), and its directory must exist and be writable.
pub fn check_report_path(path: &Path, flag: &str) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(format!("{flag} {shown}: is {}; reports are written to regular files", kind(&meta)))
        }
        Ok(meta) => {
            if let Some(which) = is_own_output(&meta) {
                return Err(format!("{flag} {shown}: is {which}; reports are written to files of their own"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{flag} {shown}: {e}")),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!("{flag} {shown}: directory {} does not exist", parent.display()));
    }
    let c =
        std::ffi::CString::new(parent.as_os_str().as_bytes()).map_err(|_| format!("{flag}: path holds a NUL byte"))?;
    // Sound: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!("{flag} {shown}: directory {} is not writable", parent.display()));
    }
    Ok(())
}

/// Writes a report, refusing at the last moment too whatever is not a
/// regular file (the path may have been replaced since it was checked): the
/// file is opened without truncation and without blocking, checked, and only
/// then emptied and written.
pub fn write_report(path: &Path, text: &str) -> Result<(), String> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(no_block())
        .open(path)
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot write {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cannot write {shown}: is {}, not a regular file", kind(&meta)));
    }
    file.set_len(0)
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush())
        .map_err(|e| format!("cannot write {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // Sound: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        path
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path());
        let start = Instant::now();
        for path in [fifo.as_path(), Path::new("/dev/zero"), Path::new("/dev/null"), dir.path()] {
            let err = read_regular_file(path, 1024).unwrap_err().to_string();
            assert!(err.contains("expected a regular file"), "{err}");
            let err = check_report_path(path, "--junit").unwrap_err();
            assert!(err.starts_with("--junit ") && err.contains("regular files"), "{err}");
        }
        let err = write_report(&fifo, "x").unwrap_err();
        assert!(err.contains("cannot write"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    }

    #[test]
    fn reads_are_bounded_and_writes_replace_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 2048]).unwrap();
        assert!(read_regular_file(&path, 1024).unwrap_err().why.contains("more than the 1 KiB"));
        assert_eq!(read_regular_file(&path, 4096).unwrap().len(), 2048);
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_text(&path, 1024).unwrap_err().why.contains("not UTF-8"));
        write_report(&path, "short").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short");
        check_report_path(&path, "--json").unwrap();
        check_report_path(&dir.path().join("new"), "--json").unwrap();
        assert!(check_report_path(&dir.path().join("no/such"), "--json").unwrap_err().contains("does not exist"));
    }
}
