//! Turns a declarative [`ActionSpec`] into REAPI messages, starting from the
//! shape BuildStream sends (docs/requirements.md §1) so a check only states what differs.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{command, platform, Action, Command, Digest, Platform};

use crate::digest;
use crate::suite::{ActionSpec, DirectoryFormat, EntrySpec, PlatformPlacement, ProbeFrom};
use crate::tree::{Blobs, InputTree, TreeError};

/// Working directory BuildStream-style: relative, `buildstream/<project>/<element>`.
pub const DEFAULT_WORKDIR: &str = "buildstream/conformance/element";
/// Where the probe is staged by default, as the shell BuildStream runs.
pub const PROBE_PATH: &str = "usr/bin/sh";
/// The probe staged again as `env`: Buildbarn's chroot runner starts every
/// action as `/usr/bin/env -- argv...` inside the input root, and every real
/// BuildStream root has it, so a root without it would fail for a reason no
/// BuildStream build meets.
pub const ENV_PATH: &str = "usr/bin/env";
/// The probe's name in the working directory, for suites that run it from there.
pub const WORKDIR_PROBE: &str = "reapi-probe";

/// A sorted subset of BuildStream's environment (the exact, unsorted one is
/// the subject of its own check).
pub const DEFAULT_ENV: &[&str] = &[
    "HOME=/tmp",
    "LC_ALL=C",
    "LOGNAME=buildstream",
    "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
    "SHELL=/bin/sh",
    "TERM=dumb",
    "TZ=UTC",
];

/// The variables BuildStream puts in a Command (a fact of the suites' data
/// layer, where suite files are checked against it).
pub use crate::suite::BUILDSTREAM_ENV_NAMES;

/// Values substituted for `${name}` in check text.
#[derive(Debug, Clone)]
pub struct Vars {
    /// The ISA the cluster should run, in BuildStream's naming.
    pub isa: String,
    /// An ISA the cluster is expected to lack.
    pub foreign_isa: String,
    /// The OS family the cluster should run (`OSFamily`), e.g. `linux`.
    pub os: String,
}

impl Vars {
    /// Defaults for a cluster of the harness host's ISA.
    pub fn for_host() -> Vars {
        let isa = reapi_client::isa::host().to_string();
        let foreign_isa = if isa == "x86-64" { "aarch64" } else { "x86-64" }.to_string();
        Vars { isa, foreign_isa, os: "linux".into() }
    }

    /// Replaces `${isa}`, `${foreign_isa}` and `${os}` in `text`.
    pub fn expand(&self, text: &str) -> String {
        text.replace("${isa}", &self.isa).replace("${foreign_isa}", &self.foreign_isa).replace("${os}", &self.os)
    }

    /// Expands variables in every string of a JSON value.
    pub fn expand_json(&self, v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(self.expand(s)),
            serde_json::Value::Array(a) => a.iter().map(|x| self.expand_json(x)).collect(),
            serde_json::Value::Object(o) => o.iter().map(|(k, x)| (k.clone(), self.expand_json(x))).collect(),
            other => other.clone(),
        }
    }
}

/// An action ready to upload and execute.
#[derive(Debug, Clone)]
pub struct PreparedAction {
    /// The Action: digests of the Command and input root, salt, platform, timeout.
    pub action: Action,
    /// The Command the Action names: arguments, environment, outputs, working directory.
    pub command: Command,
    /// Digest of the encoded Action: what Execute is asked to run.
    pub action_digest: Digest,
    /// Every blob the action needs, Action and Command included.
    pub blobs: Blobs,
    /// Top-level entries of the input root.
    pub root_entries: Vec<String>,
}

fn split_pair(s: &str) -> (String, String) {
    let (n, v) = s.split_once('=').unwrap_or((s, ""));
    (n.to_string(), v.to_string())
}

/// Builds Action, Command and input root for a check.
pub fn prepare(spec: &ActionSpec, vars: &Vars, probe: &Arc<Vec<u8>>, salt: &[u8]) -> Result<PreparedAction, TreeError> {
    let mut tree = InputTree::new();
    if !spec.bare_root {
        tree.file(PROBE_PATH, probe.clone(), true)?;
        tree.file(ENV_PATH, probe.clone(), true)?;
        tree.dir("dev")?.dir("proc")?.dir("tmp")?;
    }
    for entry in &spec.input_root {
        match entry {
            EntrySpec::File { file, content, executable, mtime } => {
                tree.file(file, Arc::new(vars.expand(content).into_bytes()), *executable)?;
                if let Some(secs) = mtime {
                    tree.file_mtime(file, *secs)?;
                }
            }
            EntrySpec::Probe { probe: path } => {
                tree.file(path, probe.clone(), true)?;
            }
            EntrySpec::Dir { dir } => {
                tree.dir(dir)?;
            }
            EntrySpec::Symlink { symlink, target } => {
                tree.symlink(symlink, target)?;
            }
        }
    }
    let working_directory = spec.working_directory.clone().unwrap_or_else(|| DEFAULT_WORKDIR.to_string());
    if !working_directory.is_empty() {
        // BuildStream creates the working directory in the input tree.
        tree.dir(&working_directory)?;
    }
    let from_workdir = !spec.bare_root && spec.argv.is_none() && spec.probe_from == Some(ProbeFrom::WorkingDirectory);
    if from_workdir {
        let path = if working_directory.is_empty() {
            WORKDIR_PROBE.to_string()
        } else {
            format!("{working_directory}/{WORKDIR_PROBE}")
        };
        tree.file(&path, probe.clone(), true)?;
    }
    if spec.read_only_root {
        tree.dir_property("", "SubtreeReadOnly", "true")?;
        let install = "buildstream-install";
        for writable in ["dev", "proc", "tmp", working_directory.as_str(), install] {
            if writable.is_empty() || (writable == install && !tree.has_dir(install)) {
                continue;
            }
            tree.dir_property(writable, "SubtreeReadOnly", "false")?;
        }
    }
    let root_entries = tree.root_entries();
    let built = tree.build();
    let mut blobs = built.blobs;

    let script = vars.expand(&spec.probe.join(" "));
    let arguments = match &spec.argv {
        Some(argv) => argv.iter().map(|a| vars.expand(a)).collect(),
        None if from_workdir => vec![format!("./{WORKDIR_PROBE}"), "-c".into(), "-e".into(), script],
        None => vec![format!("/{PROBE_PATH}"), "-c".into(), "-e".into(), script],
    };
    let env: Vec<String> = match &spec.env {
        Some(e) => e.iter().map(|x| vars.expand(x)).collect(),
        None => DEFAULT_ENV.iter().map(|s| s.to_string()).collect(),
    };
    let environment_variables =
        env.iter().map(|e| split_pair(e)).map(|(name, value)| command::EnvironmentVariable { name, value }).collect();
    let mut properties: Vec<platform::Property> = spec
        .platform
        .clone()
        .unwrap_or_else(|| vec!["ISA=${isa}".into(), "OSFamily=${os}".into()])
        .iter()
        .map(|p| split_pair(&vars.expand(p)))
        .map(|(name, value)| platform::Property { name, value })
        .collect();
    if !spec.unsorted_platform {
        properties.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
    }
    let platform = Some(Platform { properties });
    let on_command = spec.platform_on != PlatformPlacement::Action;
    let on_action = spec.platform_on != PlatformPlacement::Command;

    // Command.platform is deprecated in v2.2 but BuildStream still sends it
    // and servers differ in which one they read (docs/requirements.md §4).
    #[allow(deprecated)]
    let command = Command {
        arguments,
        environment_variables,
        output_paths: spec.output_paths.clone(),
        output_files: spec.output_files.clone(),
        output_directories: spec.output_directories.clone(),
        output_node_properties: spec.output_node_properties.clone(),
        platform: if on_command { platform.clone() } else { None },
        working_directory,
        output_directory_format: match spec.output_directory_format {
            DirectoryFormat::DirectoryOnly => command::OutputDirectoryFormat::DirectoryOnly,
            DirectoryFormat::TreeOnly => command::OutputDirectoryFormat::TreeOnly,
            DirectoryFormat::TreeAndDirectory => command::OutputDirectoryFormat::TreeAndDirectory,
        } as i32,
    };
    let (command_digest, command_bytes) = digest::of_message(&command);
    blobs.insert(command_digest.hash.clone(), (command_digest.clone(), Arc::new(command_bytes)));
    let action = Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(built.root_digest),
        salt: salt.to_vec(),
        do_not_cache: spec.do_not_cache,
        platform: if on_action { platform } else { None },
        timeout: spec.timeout.map(|t| bazel_remote_apis::google::protobuf::Duration {
            seconds: t.trunc() as i64,
            nanos: (t.fract() * 1e9) as i32,
        }),
    };
    let (action_digest, action_bytes) = digest::of_message(&action);
    blobs.insert(action_digest.hash.clone(), (action_digest.clone(), Arc::new(action_bytes)));
    Ok(PreparedAction { action, command, action_digest, blobs, root_entries })
}

#[cfg(test)]
#[allow(deprecated)] // Command.platform is what these tests look at.
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars { isa: "x86-64".into(), foreign_isa: "aarch64".into(), os: "linux".into() }
    }

    #[test]
    fn defaults_are_buildstream_shaped() {
        let p = prepare(&ActionSpec::default(), &vars(), &Arc::new(b"probe".to_vec()), b"salt").unwrap();
        assert_eq!(p.command.arguments[..3], ["/usr/bin/sh", "-c", "-e"]);
        assert_eq!(p.command.working_directory, DEFAULT_WORKDIR);
        let props = &p.action.platform.as_ref().unwrap().properties;
        assert_eq!((props[0].name.as_str(), props[0].value.as_str()), ("ISA", "x86-64"));
        assert_eq!(props[1].name, "OSFamily");
        assert_eq!(p.command.platform, p.action.platform);
        assert_eq!(p.root_entries, ["buildstream", "dev", "proc", "tmp", "usr"]);
        assert_eq!(p.action.salt, b"salt");
    }

    #[test]
    fn platform_sorted_unless_asked_and_placement_respected() {
        let spec = ActionSpec {
            platform: Some(vec!["zeta=1".into(), "ISA=${foreign_isa}".into()]),
            platform_on: PlatformPlacement::Command,
            ..Default::default()
        };
        let p = prepare(&spec, &vars(), &Arc::new(vec![]), b"").unwrap();
        assert!(p.action.platform.is_none());
        let props = &p.command.platform.as_ref().unwrap().properties;
        assert_eq!(props[0].value, "aarch64");
        assert_eq!(props[1].name, "zeta");
        let unsorted = ActionSpec { unsorted_platform: true, ..spec };
        let p = prepare(&unsorted, &vars(), &Arc::new(vec![]), b"").unwrap();
        assert_eq!(p.command.platform.unwrap().properties[0].name, "zeta");
    }

    #[test]
    fn salt_changes_the_action_digest() {
        let a = prepare(&ActionSpec::default(), &vars(), &Arc::new(vec![]), b"run-1").unwrap();
        let b = prepare(&ActionSpec::default(), &vars(), &Arc::new(vec![]), b"run-2").unwrap();
        assert_ne!(a.action_digest, b.action_digest);
    }
}
