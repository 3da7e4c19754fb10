//! Collecting a finished command's outputs into the CAS and an ActionResult.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::protobuf::{Timestamp, UInt32Value};
use prost::bytes::Bytes;

use super::cas::BlobView;
use super::defects::{Defect, Defects};
use super::sandbox::resolve_in_root;

/// What kind of entry a requested output may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    /// `output_paths` (v2.1): whatever is there.
    Any,
    /// Legacy `output_files`.
    File,
    /// Legacy `output_directories`.
    Directory,
}

/// One output the Command asks for.
#[derive(Debug, Clone)]
pub(crate) struct OutputRequest {
    /// The path exactly as the client wrote it; results carry it unchanged.
    pub(crate) requested: String,
    /// Where it lies, as names under the input root.
    pub(crate) components: Vec<String>,
    pub(crate) kind: OutputKind,
}

/// Which node properties the Command wants on outputs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WantedProperties {
    pub(crate) mtime: bool,
    pub(crate) unix_mode: bool,
    /// `constant-output-mtime`: every mtime reported as the same instant.
    pub(crate) constant_mtime: bool,
}

impl WantedProperties {
    pub(crate) fn from_command(command: &re::Command) -> WantedProperties {
        let wants = |name: &str| command.output_node_properties.iter().any(|p| p == name);
        WantedProperties { mtime: wants("mtime"), unix_mode: wants("unix_mode"), constant_mtime: false }
    }

    fn of(self, meta: &fs::Metadata) -> Option<re::NodeProperties> {
        if !self.mtime && !self.unix_mode {
            return None;
        }
        let mtime = if self.mtime && self.constant_mtime {
            Some(Timestamp { seconds: 1_000_000_000, nanos: 0 })
        } else if self.mtime {
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
        } else {
            None
        };
        let unix_mode = self.unix_mode.then(|| UInt32Value { value: meta.permissions().mode() & 0o7777 });
        Some(re::NodeProperties { properties: Vec::new(), mtime, unix_mode })
    }
}

fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

fn name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A directory of the output, with every directory below it.
struct CollectedDirectory {
    root: re::Directory,
    /// Every directory below `root`, each distinct one once.
    descendants: Vec<re::Directory>,
}

/// Reads the directory at `path` into Directory messages, uploading every
/// file and Directory blob. Symlinks are recorded, never followed; other
/// special files are skipped.
fn collect_directory(blobs: &BlobView<'_>, path: &Path, wanted: WantedProperties) -> io::Result<CollectedDirectory> {
    let mut entries: Vec<_> = fs::read_dir(path)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut directory = re::Directory::default();
    let mut descendants = Vec::new();
    for entry in entries {
        let entry_path = entry.path();
        let name = name_of(&entry_path);
        let meta = fs::symlink_metadata(&entry_path)?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&entry_path)?.to_string_lossy().into_owned();
            directory.symlinks.push(re::SymlinkNode { name, target, node_properties: wanted.of(&meta) });
        } else if meta.is_dir() {
            let child = collect_directory(blobs, &entry_path, wanted)?;
            let digest = blobs.put_message(&child.root);
            directory.directories.push(re::DirectoryNode { name, digest: Some(digest) });
            descendants.push(child.root);
            descendants.extend(child.descendants);
        } else if meta.is_file() {
            let digest = blobs.put(Bytes::from(fs::read(&entry_path)?));
            directory.files.push(re::FileNode {
                name,
                digest: Some(digest),
                is_executable: is_executable(&meta),
                node_properties: wanted.of(&meta),
            });
        }
    }
    let mut seen = HashSet::new();
    descendants.retain(|d| seen.insert(super::cas::encode_with_digest(d).0.hash));
    Ok(CollectedDirectory { root: directory, descendants })
}

/// A legacy output of the wrong kind (a directory named in `output_files`, a
/// file in `output_directories`): the spec's FAILED_PRECONDITION, carried
/// inside the io::Error that collecting returns.
#[derive(Debug)]
pub(crate) struct OutputKindMismatch(pub(crate) String);

impl std::fmt::Display for OutputKindMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutputKindMismatch {}

impl OutputKindMismatch {
    /// The mismatch an error from [`collect_outputs`] carries, if any.
    pub(crate) fn of(e: &io::Error) -> Option<&OutputKindMismatch> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

/// Looks for every requested output under `root` and adds what it finds to
/// `result`, uploading the blobs. The output defects are applied here.
pub(crate) fn collect_outputs(
    blobs: &BlobView<'_>,
    root: &Path,
    requests: &[OutputRequest],
    wanted: WantedProperties,
    defects: &Defects,
    result: &mut re::ActionResult,
) -> io::Result<()> {
    for request in requests {
        let host_path = match resolve_in_root(root, &request.components, false, false) {
            Ok(path) => path,
            // An output the command did not create is simply absent.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(e),
        };
        let mut meta = match fs::symlink_metadata(&host_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() && defects.has(Defect::OutputSymlinksFollowed) {
            meta = fs::metadata(&host_path)?;
        }
        let path = request.requested.clone();
        let wrong_kind = match request.kind {
            OutputKind::File if meta.is_dir() => Some("output_files names a directory"),
            OutputKind::Directory if meta.is_file() => Some("output_directories names a file"),
            _ => None,
        };
        if let Some(why) = wrong_kind.filter(|_| !defects.has(Defect::LegacyKindMismatchIgnored)) {
            return Err(io::Error::other(OutputKindMismatch(format!("{why}: {path}"))));
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host_path)?.to_string_lossy().into_owned();
            let symlink = re::OutputSymlink { path, target, node_properties: wanted.of(&meta) };
            #[allow(deprecated)] // legacy requests get the legacy fields too
            match request.kind {
                OutputKind::File => result.output_file_symlinks.push(symlink.clone()),
                OutputKind::Directory => result.output_directory_symlinks.push(symlink.clone()),
                OutputKind::Any => {}
            }
            result.output_symlinks.push(symlink);
        } else if meta.is_dir() && request.kind != OutputKind::File {
            let collected = collect_directory(blobs, &host_path, wanted)?;
            let root_directory_digest = blobs.put_message(&collected.root);
            let tree_root =
                if defects.has(Defect::TreeRootMismatch) { re::Directory::default() } else { collected.root };
            let tree = re::Tree { root: Some(tree_root), children: collected.descendants };
            let tree_digest = blobs.put_message(&tree);
            if defects.has(Defect::OutputFilesForDirs) {
                result.output_files.push(re::OutputFile {
                    path,
                    digest: Some(root_directory_digest),
                    ..Default::default()
                });
            } else {
                let path =
                    if path == "." && defects.has(Defect::WorkingDirOutputEmptyPath) { String::new() } else { path };
                result.output_directories.push(re::OutputDirectory {
                    path,
                    tree_digest: if defects.has(Defect::TreeDigestOmitted) { None } else { Some(tree_digest) },
                    is_topologically_sorted: false,
                    root_directory_digest: if defects.has(Defect::NoRootDirectoryDigest) {
                        None
                    } else {
                        Some(root_directory_digest)
                    },
                });
            }
        } else if meta.is_file() && request.kind != OutputKind::Directory {
            let digest = blobs.put(Bytes::from(fs::read(&host_path)?));
            result.output_files.push(re::OutputFile {
                path,
                digest: Some(digest),
                is_executable: is_executable(&meta),
                contents: Vec::new(),
                node_properties: wanted.of(&meta),
            });
        }
    }
    Ok(())
}
