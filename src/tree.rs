//! Input roots built from a declarative description, as canonical
//! `Directory` messages (entries sorted by name, as the spec requires).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Digest, Directory, DirectoryNode, FileNode, NodeProperties, NodeProperty, SymlinkNode,
};

use crate::digest;

/// Blob content by hash; shared so the probe is held once however often it is staged.
pub type Blobs = HashMap<String, (Digest, Arc<Vec<u8>>)>;

#[derive(Debug, Clone)]
enum Node {
    File { digest: Digest, executable: bool, mtime: Option<i64> },
    Dir(DirBuilder),
    Symlink { target: String },
}

#[derive(Debug, Clone, Default)]
struct DirBuilder {
    entries: BTreeMap<String, Node>,
    properties: Vec<(String, String)>,
}

/// An input root under construction.
#[derive(Debug, Clone, Default)]
pub struct InputTree {
    root: DirBuilder,
    blobs: Blobs,
}

/// A path that cannot be placed in the tree.
#[derive(Debug, thiserror::Error)]
#[error("input root path `{path}`: {why}")]
pub struct TreeError {
    /// The path as given.
    pub path: String,
    /// Why it cannot be placed, e.g. `given twice`.
    pub why: String,
}

/// The finished tree: root digest and every blob it references.
#[derive(Debug, Clone)]
pub struct BuiltTree {
    /// Digest of the root `Directory`, for `Action.input_root_digest`.
    pub root_digest: Digest,
    /// Every file and `Directory` blob of the tree, by hash: what to upload.
    pub blobs: Blobs,
}

fn components(path: &str) -> Result<Vec<&str>, TreeError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(TreeError { path: path.into(), why: "`..` is not allowed".into() });
    }
    Ok(parts)
}

impl InputTree {
    /// An empty input root.
    pub fn new() -> Self {
        Self::default()
    }

    fn dir_mut(&mut self, parts: &[&str], full: &str) -> Result<&mut DirBuilder, TreeError> {
        let mut dir = &mut self.root;
        for part in parts {
            let node = dir.entries.entry(part.to_string()).or_insert_with(|| Node::Dir(DirBuilder::default()));
            dir = match node {
                Node::Dir(d) => d,
                _ => return Err(TreeError { path: full.into(), why: format!("`{part}` is not a directory") }),
            };
        }
        Ok(dir)
    }

    fn place(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        let parts = components(path)?;
        let (name, parents) =
            parts.split_last().ok_or_else(|| TreeError { path: path.into(), why: "empty path".into() })?;
        let dir = self.dir_mut(parents, path)?;
        match dir.entries.get(*name) {
            Some(Node::Dir(_)) if matches!(node, Node::Dir(_)) => Ok(()),
            Some(_) => Err(TreeError { path: path.into(), why: "given twice".into() }),
            None => {
                dir.entries.insert(name.to_string(), node);
                Ok(())
            }
        }
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, content: Arc<Vec<u8>>, executable: bool) -> Result<&mut Self, TreeError> {
        let d = digest::of_bytes(&content);
        self.blobs.insert(d.hash.clone(), (d.clone(), content));
        self.place(path, Node::File { digest: d, executable, mtime: None })?;
        Ok(self)
    }

    /// Sets the `mtime` node property of a file added before.
    pub fn file_mtime(&mut self, path: &str, seconds: i64) -> Result<&mut Self, TreeError> {
        let parts = components(path)?;
        let (name, parents) =
            parts.split_last().ok_or_else(|| TreeError { path: path.into(), why: "empty path".into() })?;
        match self.dir_mut(parents, path)?.entries.get_mut(*name) {
            Some(Node::File { mtime, .. }) => {
                *mtime = Some(seconds);
                Ok(self)
            }
            _ => Err(TreeError { path: path.into(), why: "is not a file".into() }),
        }
    }

    /// Adds a directory and its parents (existing directories are fine).
    pub fn dir(&mut self, path: &str) -> Result<&mut Self, TreeError> {
        let parts = components(path)?;
        self.dir_mut(&parts, path)?;
        Ok(self)
    }

    /// Adds a symbolic link; the target is stored verbatim.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, TreeError> {
        self.place(path, Node::Symlink { target: target.to_string() })?;
        Ok(self)
    }

    /// Sets a node property on a directory (empty path = the root), e.g. `SubtreeReadOnly`.
    pub fn dir_property(&mut self, path: &str, name: &str, value: &str) -> Result<&mut Self, TreeError> {
        let parts = components(path)?;
        let dir = self.dir_mut(&parts, path)?;
        dir.properties.push((name.to_string(), value.to_string()));
        Ok(self)
    }

    /// Whether a directory exists at `path`.
    pub fn has_dir(&self, path: &str) -> bool {
        let Ok(parts) = components(path) else { return false };
        let mut dir = &self.root;
        for part in parts {
            match dir.entries.get(part) {
                Some(Node::Dir(d)) => dir = d,
                _ => return false,
            }
        }
        true
    }

    /// Top-level entry names, sorted.
    pub fn root_entries(&self) -> Vec<String> {
        self.root.entries.keys().cloned().collect()
    }

    /// Serialises every directory bottom-up and returns the root digest.
    pub fn build(mut self) -> BuiltTree {
        let root = std::mem::take(&mut self.root);
        let root_digest = encode_dir(&root, &mut self.blobs);
        BuiltTree { root_digest, blobs: self.blobs }
    }
}

fn encode_dir(dir: &DirBuilder, blobs: &mut Blobs) -> Digest {
    let mut msg = Directory::default();
    // BTreeMap iteration is sorted by name, which makes the message canonical.
    for (name, node) in &dir.entries {
        match node {
            Node::File { digest, executable, mtime } => msg.files.push(FileNode {
                name: name.clone(),
                digest: Some(digest.clone()),
                is_executable: *executable,
                node_properties: mtime.map(|seconds| NodeProperties {
                    properties: Vec::new(),
                    mtime: Some(bazel_remote_apis::google::protobuf::Timestamp { seconds, nanos: 0 }),
                    unix_mode: None,
                }),
            }),
            Node::Dir(sub) => {
                let d = encode_dir(sub, blobs);
                msg.directories.push(DirectoryNode { name: name.clone(), digest: Some(d) });
            }
            Node::Symlink { target } => {
                msg.symlinks.push(SymlinkNode { name: name.clone(), target: target.clone(), node_properties: None })
            }
        }
    }
    if !dir.properties.is_empty() {
        let mut props: Vec<NodeProperty> =
            dir.properties.iter().map(|(n, v)| NodeProperty { name: n.clone(), value: v.clone() }).collect();
        props.sort_by(|a, b| a.name.cmp(&b.name));
        msg.node_properties = Some(NodeProperties { properties: props, mtime: None, unix_mode: None });
    }
    let (d, bytes) = digest::of_message(&msg);
    blobs.insert(d.hash.clone(), (d.clone(), Arc::new(bytes)));
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn dir_of(built: &BuiltTree, d: &Digest) -> Directory {
        Directory::decode(built.blobs[&d.hash].1.as_slice()).unwrap()
    }

    #[test]
    fn entries_are_sorted_and_nested() {
        let mut t = InputTree::new();
        t.file("usr/bin/sh", Arc::new(b"x".to_vec()), true).unwrap();
        t.dir("tmp").unwrap().dir("dev").unwrap();
        t.symlink("bin", "/usr/bin").unwrap();
        t.file("a", Arc::new(vec![]), false).unwrap();
        let built = t.build();
        let root = dir_of(&built, &built.root_digest);
        let names: Vec<_> = root.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["dev", "tmp", "usr"]);
        assert_eq!(root.symlinks[0].target, "/usr/bin");
        assert_eq!(root.files[0].name, "a");
        let usr = dir_of(&built, root.directories[2].digest.as_ref().unwrap());
        let bin = dir_of(&built, usr.directories[0].digest.as_ref().unwrap());
        assert!(bin.files[0].is_executable);
    }

    #[test]
    fn same_description_gives_same_digest() {
        let build = |order: bool| {
            let mut t = InputTree::new();
            if order {
                t.dir("b").unwrap().dir("a").unwrap();
            } else {
                t.dir("a").unwrap().dir("b").unwrap();
            }
            t.build().root_digest
        };
        assert_eq!(build(true), build(false));
    }

    #[test]
    fn conflicts_and_dotdot_are_errors() {
        let mut t = InputTree::new();
        t.file("etc", Arc::new(vec![]), false).unwrap();
        assert!(t.dir("etc/x").is_err());
        assert!(t.file("etc", Arc::new(vec![]), false).is_err());
        assert!(t.dir("../x").is_err());
    }

    #[test]
    fn root_properties_are_encoded() {
        let mut t = InputTree::new();
        t.dir_property("", "SubtreeReadOnly", "true").unwrap();
        let built = t.build();
        let root = dir_of(&built, &built.root_digest);
        assert_eq!(root.node_properties.unwrap().properties[0].name, "SubtreeReadOnly");
    }
}
