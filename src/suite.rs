#![warn(missing_docs)]
//! Suites as data: the YAML model of checks and its loader.
//!
//! A suite file holds checks that differ from a BuildStream-shaped default
//! action only where they need to (see `docs/writing-checks.md`). Checks that
//! YAML cannot express name a `builtin` implemented in Rust.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every variable BuildStream puts in an action's Command (docs/requirements.md
/// §1: BuildStream 2.8's sandbox environment), and `PWD`, which it sends too
/// and shells set. The probe report keeps the values of only these (see
/// `probe::redact_environment`), so suites may assert on no other's value.
pub const BUILDSTREAM_ENV_NAMES: &[&str] =
    &["HOME", "LC_ALL", "LOGNAME", "PATH", "PWD", "SHELL", "SOURCE_DATE_EPOCH", "TERM", "TZ", "USER", "USERNAME"];

/// How binding a requirement is (RFC 2119 words, as the REAPI spec uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// The spec says MUST: unmet is FAIL.
    #[serde(rename = "MUST")]
    Must,
    /// The spec says SHOULD: unmet is WARN.
    #[serde(rename = "SHOULD")]
    Should,
    /// The spec says MAY: unmet is SKIP.
    #[serde(rename = "MAY")]
    May,
}

impl Severity {
    /// The word as the spec writes it (`MUST`, `SHOULD`, `MAY`).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Must => "MUST",
            Severity::Should => "SHOULD",
            Severity::May => "MAY",
        }
    }
}

/// What a check's failure means for a BuildStream build (data in the suite:
/// `impact: blocker`, `impact: spec` or `impact: feature:NAME`). Severity
/// stays the spec's word; impact says what it means for BuildStream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Impact {
    /// A BuildStream build fails or produces wrong results.
    Blocker,
    /// Only elements using this BuildStream feature are affected
    /// (e.g. `build-uid`, `workspaces`, `read-only-root`).
    Feature(String),
    /// REAPI conformance BuildStream does not rely on.
    Spec,
}

impl Impact {
    /// The impact as written in YAML (`blocker`, `spec`, `feature:NAME`).
    pub fn label(&self) -> String {
        match self {
            Impact::Blocker => "blocker".into(),
            Impact::Feature(name) => format!("feature:{name}"),
            Impact::Spec => "spec".into(),
        }
    }
    /// The feature name, for `feature:NAME`.
    pub fn feature(&self) -> Option<&str> {
        match self {
            Impact::Feature(name) => Some(name),
            _ => None,
        }
    }
}

impl std::str::FromStr for Impact {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "blocker" => Ok(Impact::Blocker),
            "spec" => Ok(Impact::Spec),
            _ => match s.strip_prefix("feature:").map(str::trim) {
                Some(name)
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
                {
                    Ok(Impact::Feature(name.to_string()))
                }
                _ => Err(format!("impact `{s}`: expected blocker, spec or feature:NAME (lower-case, digits, `-`)")),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Impact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Impact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

/// One `suites/*.yaml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// Suite name, e.g. `input-root`.
    pub suite: String,
    /// One line: what the suite checks.
    pub title: String,
    /// Why the suite exists, for reports and `list`.
    #[serde(default)]
    pub description: String,
    /// Where this suite's actions run the probe from by default.
    #[serde(default)]
    pub probe_from: ProbeFrom,
    /// Its checks read and write only relative to the working directory, so
    /// what they find does not depend on whether `/` is the input root: a
    /// FAIL of theirs is no consequence of a missing chroot (readiness).
    #[serde(default)]
    pub independent_of_root: bool,
    /// The suite's checks, in file order.
    pub checks: Vec<CheckSpec>,
}

/// Where the default argv finds the probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeFrom {
    /// `/usr/bin/sh`, inside the input root: only a worker that stages the
    /// input root as `/` runs it. For checks about the input root.
    #[default]
    Root,
    /// `./reapi-probe` in the working directory: any worker that runs the
    /// command in the staged tree runs it, chroot or not, so checks not
    /// about the input root judge their own subject even where `/` is wrong
    /// (one root cause, one finding).
    WorkingDirectory,
}

/// A check as written in a suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Unique id, `<suite>.<name>`.
    pub id: String,
    /// One line naming what is checked.
    pub title: String,
    /// The requirement in one sentence.
    pub requirement: String,
    /// Where the requirement comes from (spec clause or BuildStream document).
    pub source: String,
    /// The spec's word for the requirement: MUST, SHOULD or MAY.
    pub severity: Severity,
    /// What failing it means for a BuildStream build.
    pub impact: Impact,
    /// Free labels; `buildstream` and `reapi` choose the profiles.
    #[serde(default)]
    pub tags: Vec<String>,
    /// For checks whose action must *not* run (foreign platform, refused
    /// feature): also submit the default, native action, which must complete.
    /// Without that positive control a cluster that runs nothing would pass.
    #[serde(default)]
    pub control: bool,
    /// Defects of the defect-injection server that this check must notice.
    #[serde(default)]
    pub killed_by: Vec<String>,
    /// Id of a Rust-implemented check; when set, `action` and `expect` are
    /// whatever that function documents.
    #[serde(default)]
    pub builtin: Option<String>,
    /// The action the check sends (a BuildStream-shaped default where empty).
    #[serde(default)]
    pub action: ActionSpec,
    /// What the outcome must be for a PASS (declarative checks).
    #[serde(default)]
    pub expect: Expectation,
    /// Filled by the loader: the suite this check belongs to.
    #[serde(skip)]
    pub suite: String,
    /// Filled by the loader: the suite's `independent_of_root`.
    #[serde(skip)]
    pub independent_of_root: bool,
    /// Filled by the loader: `file:line` of the check, for messages.
    #[serde(skip)]
    pub location: String,
}

/// The action a declarative check sends. Every field has a BuildStream-shaped
/// default (see [`crate::action`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Start from an empty input root instead of the default tree
    /// (probe at `usr/bin/sh`, empty `dev/`, `proc/`, `tmp/`).
    #[serde(default)]
    pub bare_root: bool,
    /// Extra entries of the input root.
    #[serde(default)]
    pub input_root: Vec<EntrySpec>,
    /// Full argv; default `["/usr/bin/sh", "-c", "-e", <probe directives>]`,
    /// or `./reapi-probe` instead of `/usr/bin/sh` when the probe runs from
    /// the working directory.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Where the default argv finds the probe; default the suite's `probe_from`.
    #[serde(default)]
    pub probe_from: Option<ProbeFrom>,
    /// Probe directives, e.g. `["--read", "/etc/marker"]`; joined into the
    /// `sh -c` script of the default argv.
    #[serde(default)]
    pub probe: Vec<String>,
    /// Environment as `NAME=value`, sent in this order; default a sorted
    /// BuildStream-like environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory relative to the input root.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Deprecated `Command.output_files` (REAPI v2.0), relative to the working directory.
    #[serde(default)]
    pub output_files: Vec<String>,
    /// Deprecated `Command.output_directories` (REAPI v2.0), relative to the working directory.
    #[serde(default)]
    pub output_directories: Vec<String>,
    /// `Command.output_paths`, relative to the working directory.
    #[serde(default)]
    pub output_paths: Vec<String>,
    /// Platform as `Name=value`; default `ISA=${isa}`, `OSFamily=${os}`.
    /// Sent sorted unless `unsorted_platform` is set.
    #[serde(default)]
    pub platform: Option<Vec<String>>,
    /// Send the platform properties in the order written, not sorted.
    #[serde(default)]
    pub unsorted_platform: bool,
    /// Where the platform goes: both messages (BuildStream), or one of them.
    #[serde(default)]
    pub platform_on: PlatformPlacement,
    /// `Command.output_node_properties`, e.g. `[mtime]` (BuildStream, for open workspaces).
    #[serde(default)]
    pub output_node_properties: Vec<String>,
    /// `Action.timeout` in seconds; BuildStream sends none.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// `Command.output_directory_format`; default `directory-only`, as BuildStream asks.
    #[serde(default)]
    pub output_directory_format: DirectoryFormat,
    /// `Action.do_not_cache`: the result must not be cached.
    #[serde(default)]
    pub do_not_cache: bool,
    /// Mark the tree the way BuildStream does for read-only-root actions:
    /// `SubtreeReadOnly=true` on the root, `false` on dev, proc, tmp, the
    /// working directory and buildstream-install.
    #[serde(default)]
    pub read_only_root: bool,
}

/// How output directories are to come back (`Command.output_directory_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectoryFormat {
    /// `root_directory_digest` only (BuildStream's choice).
    #[default]
    DirectoryOnly,
    /// A `Tree` in `tree_digest` (the proto default, what clients before v2.8 get).
    TreeOnly,
    /// Both.
    TreeAndDirectory,
}

/// Which messages carry the platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformPlacement {
    #[default]
    /// On the Action and the Command, as BuildStream sends it.
    Both,
    /// On the Action only.
    Action,
    /// On the (deprecated) Command.platform only.
    Command,
}

/// One entry of an input root, by path relative to the root.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum EntrySpec {
    /// A regular file with literal content.
    File {
        /// Path relative to the input root.
        file: String,
        /// The file's content; `${isa}`-style variables are filled in.
        #[serde(default)]
        content: String,
        /// Whether the executable bit is set.
        #[serde(default)]
        executable: bool,
        /// `mtime` node property, seconds since the epoch.
        #[serde(default)]
        mtime: Option<i64>,
    },
    /// A copy of the probe executable.
    Probe {
        /// Path relative to the input root.
        probe: String,
    },
    /// A directory (possibly empty).
    Dir {
        /// Path relative to the input root.
        dir: String,
    },
    /// A symbolic link; the target is kept verbatim (absolute targets too).
    Symlink {
        /// Path of the link relative to the input root.
        symlink: String,
        /// Its target, kept verbatim.
        target: String,
    },
}

/// The class of an Execute outcome. A suite must tell these apart (docs/requirements.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeClass {
    /// Execute answered with a gRPC error.
    Rejected,
    /// The operation finished with a non-OK status (or `Operation.error`).
    Failed,
    /// Still queued when the budget ran out (then cancelled).
    Queued,
    /// Dispatched to a worker but not finished when the budget ran out.
    Executing,
    /// Finished with an `ActionResult`.
    Completed,
}

impl OutcomeClass {
    /// The name used in YAML and reports (`completed`, `queued`, ...).
    pub fn label(self) -> &'static str {
        match self {
            OutcomeClass::Rejected => "rejected",
            OutcomeClass::Failed => "failed",
            OutcomeClass::Queued => "queued",
            OutcomeClass::Executing => "executing",
            OutcomeClass::Completed => "completed",
        }
    }
}

/// One outcome class or a set of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OutcomeSet {
    /// Exactly this class.
    One(OutcomeClass),
    /// Any of these classes.
    Any(Vec<OutcomeClass>),
}

impl OutcomeSet {
    /// Whether `class` is in the set.
    pub fn contains(&self, class: OutcomeClass) -> bool {
        match self {
            OutcomeSet::One(c) => *c == class,
            OutcomeSet::Any(v) => v.contains(&class),
        }
    }
    /// The set as text for evidence, e.g. `rejected | failed`.
    pub fn describe(&self) -> String {
        match self {
            OutcomeSet::One(c) => c.label().to_string(),
            OutcomeSet::Any(v) => v.iter().map(|c| c.label()).collect::<Vec<_>>().join(" | "),
        }
    }
}

/// What a declarative check expects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Acceptable outcome classes; default `completed`.
    #[serde(default)]
    pub outcome: Option<OutcomeSet>,
    /// Expected exit code when completed.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The gRPC status code a rejection or failure must carry, as the spec
    /// writes it (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, ...).
    #[serde(default)]
    pub code: Option<String>,
    /// Assertions on the probe's JSON report (requires a completed outcome).
    #[serde(default)]
    pub probe: Vec<ProbeAssertion>,
}

impl Expectation {
    /// The outcome classes that pass: `outcome`, or `completed` when unset.
    pub fn outcome_set(&self) -> OutcomeSet {
        self.outcome.clone().unwrap_or(OutcomeSet::One(OutcomeClass::Completed))
    }
}

/// An assertion on one field of the probe report. Exactly one operator is set.
///
/// `field` is a path into the report: dot-separated keys, with `[...]` for keys
/// that contain dots or slashes, e.g. `paths[/etc/os-release].exists`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAssertion {
    /// Path into the probe's JSON report, e.g. `paths[/etc/x].content`.
    pub field: String,
    /// The value must equal this.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The value must not equal this.
    #[serde(default)]
    pub not_equals: Option<serde_json::Value>,
    /// The value must equal one of these.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// String contains substring, or array contains element.
    #[serde(default)]
    pub contains: Option<serde_json::Value>,
    /// The value (string or array) must not contain this.
    #[serde(default)]
    pub not_contains: Option<serde_json::Value>,
    /// Object keys (or array of strings) include all of these.
    #[serde(default)]
    pub keys_include: Option<Vec<String>>,
    /// Object keys (or array of strings) are all among these.
    #[serde(default)]
    pub keys_within: Option<Vec<String>>,
    /// Array has exactly this many elements.
    #[serde(default)]
    pub length: Option<usize>,
}

impl ProbeAssertion {
    fn operator_count(&self) -> usize {
        [
            self.equals.is_some(),
            self.not_equals.is_some(),
            self.one_of.is_some(),
            self.contains.is_some(),
            self.not_contains.is_some(),
            self.keys_include.is_some(),
            self.keys_within.is_some(),
            self.length.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// A suite ready to run: its checks, validated.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Suite name, e.g. `input-root`.
    pub name: String,
    /// One line: what the suite checks.
    pub title: String,
    /// Why the suite exists.
    pub description: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The suite's checks, in file order.
    pub checks: Vec<CheckSpec>,
}

/// A suite file that could not be loaded; the message names file and line.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct SuiteError {
    /// `file:line` where the problem is.
    pub location: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl SuiteError {
    fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        SuiteError { location: format!("{}:{line}", file.display()), message: message.into() }
    }
}

/// Splits `a.b[/etc/x].c` into `["a", "b", "/etc/x", "c"]`.
pub fn parse_field_path(path: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            }
            '[' => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
                let mut key = String::new();
                let mut closed = false;
                for k in chars.by_ref() {
                    if k == ']' {
                        closed = true;
                        break;
                    }
                    key.push(k);
                }
                if key.is_empty() || !closed {
                    return Err(format!("field `{path}`: empty or unclosed `[...]`"));
                }
                parts.push(key);
            }
            ']' => return Err(format!("field `{path}`: `]` without `[`")),
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    if parts.is_empty() {
        return Err("empty field path".into());
    }
    Ok(parts)
}

/// A gRPC status code by the name the spec uses, e.g. `INVALID_ARGUMENT`.
pub fn status_code(name: &str) -> Option<tonic::Code> {
    (0..=16).map(tonic::Code::from_i32).find(|c| status_code_name(*c) == name)
}

/// The spec's name of a gRPC status code: `InvalidArgument` → `INVALID_ARGUMENT`.
pub fn status_code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

/// Parses one suite from YAML text; `file` is used in messages only.
pub fn parse_suite(file: &Path, text: &str) -> Result<Suite, SuiteError> {
    let parsed: SuiteFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        // The library's message repeats the position; keep only the cause.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        SuiteError::at(file, line, msg)
    })?;
    let lines = CheckLines::new(text);
    let mut seen = HashSet::new();
    let mut checks = Vec::with_capacity(parsed.checks.len());
    for (index, mut check) in parsed.checks.into_iter().enumerate() {
        let line = lines.line_of(index);
        let fail = |m: String| SuiteError::at(file, line, m);
        if !seen.insert(check.id.clone()) {
            return Err(fail(format!("duplicate check id `{}`", check.id)));
        }
        if !check.id.starts_with(&format!("{}.", parsed.suite)) {
            return Err(fail(format!("check id `{}` must start with `{}.`", check.id, parsed.suite)));
        }
        if check.id.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')) {
            return Err(fail(format!("check id `{}` may use only letters, digits, `-`, `_` and `.`", check.id)));
        }
        for (i, a) in check.expect.probe.iter().enumerate() {
            if a.operator_count() != 1 {
                return Err(fail(format!(
                    "probe assertion {} on `{}` needs exactly one operator (equals, not_equals, one_of, contains, not_contains, keys_include, keys_within, length)",
                    i + 1,
                    a.field
                )));
            }
            match parse_field_path(&a.field) {
                Err(e) => return Err(fail(format!("probe assertion {}: {e}", i + 1))),
                // The report withholds other values (they may be the worker's secrets).
                Ok(path) if path.len() > 1 && path[0] == "env" && !BUILDSTREAM_ENV_NAMES.contains(&path[1].as_str()) => {
                    return Err(fail(format!(
                        "probe assertion {} on `{}`: the probe report keeps the values of BuildStream's variables only ({}); judge other variables by name (keys_include, keys_within on `env`)",
                        i + 1,
                        a.field,
                        BUILDSTREAM_ENV_NAMES.join(", ")
                    )))
                }
                Ok(_) => {}
            }
        }
        if let Some(code) = &check.expect.code {
            if status_code(code).is_none() {
                return Err(fail(format!("`code: {code}` is not a gRPC status code (e.g. INVALID_ARGUMENT)")));
            }
        }
        for e in check.action.env.iter().flatten().chain(check.action.platform.iter().flatten()) {
            if !e.contains('=') {
                return Err(fail(format!("`{e}` must have the form NAME=value")));
            }
        }
        check.action.probe_from.get_or_insert(parsed.probe_from);
        check.suite = parsed.suite.clone();
        check.independent_of_root = parsed.independent_of_root;
        check.location = format!("{}:{line}", file.display());
        checks.push(check);
    }
    Ok(Suite {
        name: parsed.suite,
        title: parsed.title,
        description: parsed.description,
        file: file.to_path_buf(),
        checks,
    })
}

/// Finds the line where each check (a `- id:` item under `checks:`) starts.
struct CheckLines {
    starts: Vec<usize>,
}

impl CheckLines {
    fn new(text: &str) -> Self {
        let mut starts = Vec::new();
        let mut in_checks = false;
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("checks:") {
                in_checks = true;
                continue;
            }
            if in_checks {
                if !line.starts_with(' ') && !line.starts_with('-') && !line.trim().is_empty() && !line.starts_with('#')
                {
                    in_checks = false;
                } else if line.trim_start().starts_with("- ") && line.len() - line.trim_start().len() <= 2 {
                    starts.push(i + 1);
                }
            }
        }
        CheckLines { starts }
    }
    fn line_of(&self, index: usize) -> usize {
        self.starts.get(index).copied().unwrap_or(1)
    }
}

/// Loads every `*.yaml` file of a directory, sorted by file name, and checks
/// that ids are unique across suites.
pub fn load_dir(dir: &Path) -> Result<Vec<Suite>, SuiteError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SuiteError {
        location: dir.display().to_string(),
        message: format!("cannot read suite directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut suites = Vec::new();
    for f in files {
        suites.push(load_file(&f)?);
    }
    check_unique(&suites)?;
    Ok(suites)
}

/// Loads one suite file.
pub fn load_file(file: &Path) -> Result<Suite, SuiteError> {
    // A suite is configuration-sized; a FIFO or device among the files must not hang the load.
    let text = crate::files::read_text(file, crate::files::MAX_CONFIG_BYTES)
        .map_err(|e| SuiteError { location: file.display().to_string(), message: e.why })?;
    parse_suite(file, &text)
}

/// The suites shipped with the tool, compiled in so the binary works from any directory.
pub fn builtin_suites() -> Result<Vec<Suite>, SuiteError> {
    let mut suites = Vec::new();
    for (name, text) in BUNDLED {
        suites.push(parse_suite(Path::new(&format!("suites/{name}")), text)?);
    }
    check_unique(&suites)?;
    Ok(suites)
}

fn check_unique(suites: &[Suite]) -> Result<(), SuiteError> {
    let mut seen = std::collections::HashMap::new();
    for s in suites {
        if let Some(prev) = seen.insert(s.name.clone(), s.file.clone()) {
            return Err(SuiteError {
                location: format!("{}:1", s.file.display()),
                message: format!("suite `{}` is also defined in {}", s.name, prev.display()),
            });
        }
    }
    Ok(())
}

/// Suite files bundled into the binary (see build.rs).
const BUNDLED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/bundled_suites.rs"));

/// Where the dated profiles live, for messages (bundled into the binary).
pub const PROFILE_VERSIONS_FILE: &str = "suites/profiles/versions.yaml";
const PROFILE_VERSIONS_YAML: &str = include_str!("../suites/profiles/versions.yaml");

/// The profiles that carry dated versions (`all` is every check, undated).
pub const DATED_PROFILES: &[&str] = &["buildstream", "reapi"];

/// One dated version of a profile: exactly the checks it runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileVersion {
    /// `YYYY.MM`, e.g. `2026.12`.
    pub version: String,
    /// The check ids, each once.
    pub checks: Vec<String>,
}

/// Every dated version of the `buildstream` and `reapi` profiles, oldest first
/// (`suites/profiles/versions.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatedProfiles {
    /// Versions of the `buildstream` profile.
    pub buildstream: Vec<ProfileVersion>,
    /// Versions of the `reapi` profile.
    pub reapi: Vec<ProfileVersion>,
    /// The text it was parsed from, to name lines in messages.
    #[serde(skip)]
    text: String,
}

impl DatedProfiles {
    /// The versions of profile `name`, oldest first (none for an undated profile).
    pub fn versions(&self, name: &str) -> &[ProfileVersion] {
        match name {
            "buildstream" => &self.buildstream,
            "reapi" => &self.reapi,
            _ => &[],
        }
    }

    /// Version `version` of profile `name`.
    pub fn find(&self, name: &str, version: &str) -> Option<&ProfileVersion> {
        self.versions(name).iter().find(|v| v.version == version)
    }

    /// The newest version of profile `name`.
    pub fn newest(&self, name: &str) -> Option<&ProfileVersion> {
        self.versions(name).last()
    }

    /// `name@version` for every version, for messages.
    pub fn known(&self, name: &str) -> String {
        let all: Vec<String> = self.versions(name).iter().map(|v| format!("{name}@{}", v.version)).collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }

    /// Line of version `version` of `name` and, with `id`, of that item in
    /// its list, for an error message (1 when not found).
    fn line_of(&self, name: &str, version: &str, id: Option<&str>) -> usize {
        let mut in_profile = false;
        let mut in_version = false;
        for (i, line) in self.text.lines().enumerate() {
            let item = line.trim_start().trim_start_matches("- ").trim();
            if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
                in_profile = line.trim_end() == format!("{name}:");
                in_version = false;
            } else if in_profile && item.starts_with("version:") {
                in_version = item.trim_start_matches("version:").trim().trim_matches('"') == version;
                if in_version && id.is_none() {
                    return i + 1;
                }
            } else if in_version && Some(item) == id {
                return i + 1;
            }
        }
        1
    }

    fn version_line(&self, name: &str, version: &str) -> usize {
        self.line_of(name, version, None)
    }

    /// Checks that every id each version lists is a check of `suites`: an
    /// old version must stay runnable, so a renamed or removed check is an
    /// error naming the line, not a version that silently shrinks.
    pub fn validate_ids(&self, suites: &[Suite], file: &Path) -> Result<(), SuiteError> {
        let known: HashSet<&str> = suites.iter().flat_map(|s| &s.checks).map(|c| c.id.as_str()).collect();
        for name in DATED_PROFILES {
            for v in self.versions(name) {
                if let Some(id) = v.checks.iter().find(|id| !known.contains(id.as_str())) {
                    return Err(SuiteError::at(
                        file,
                        self.line_of(name, &v.version, Some(id)),
                        format!(
                            "{name}@{} lists `{id}`, which no suite has (an old version keeps its checks' ids)",
                            v.version
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `v` is `YYYY.MM` with a month 01–12.
fn is_dated_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'.'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(&v[5..], "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12")
}

/// Parses the dated profiles from YAML text (`file` for messages): versions
/// `YYYY.MM` in increasing order, each with a non-empty list of distinct ids.
/// Whether the ids are checks is [`DatedProfiles::validate_ids`].
pub fn parse_profile_versions(file: &Path, text: &str) -> Result<DatedProfiles, SuiteError> {
    let mut parsed: DatedProfiles = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        SuiteError::at(file, line, msg)
    })?;
    parsed.text = text.to_string();
    for name in DATED_PROFILES {
        let mut previous: Option<&str> = None;
        for v in parsed.versions(name) {
            let line = parsed.version_line(name, &v.version);
            let fail = |m: String| SuiteError::at(file, line, m);
            if !is_dated_version(&v.version) {
                return Err(fail(format!("{name}: version `{}` is not YYYY.MM (e.g. 2026.12)", v.version)));
            }
            if previous.is_some_and(|p| p >= v.version.as_str()) {
                return Err(fail(format!(
                    "{name}@{} comes after {name}@{}: versions go oldest first, each once",
                    v.version,
                    previous.unwrap_or_default()
                )));
            }
            if v.checks.is_empty() {
                return Err(fail(format!("{name}@{} lists no check", v.version)));
            }
            if v.checks.iter().any(|id| id.trim().is_empty()) {
                return Err(fail(format!("{name}@{} lists an empty check id", v.version)));
            }
            let mut seen = HashSet::new();
            if let Some(id) = v.checks.iter().find(|id| !seen.insert(id.as_str())) {
                return Err(fail(format!("{name}@{} lists `{id}` twice", v.version)));
            }
            previous = Some(&v.version);
        }
    }
    Ok(parsed)
}

/// The dated profiles shipped with the tool.
pub fn bundled_profile_versions() -> Result<DatedProfiles, SuiteError> {
    parse_profile_versions(Path::new(PROFILE_VERSIONS_FILE), PROFILE_VERSIONS_YAML)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const HEAD: &str = "suite: s\ntitle: t\nchecks:\n";
    const CHECK: &str = "    title: t\n    requirement: r\n    source: x\n    severity: MUST\n    impact: spec\n";

    fn parse(body: &str) -> Result<Suite, SuiteError> {
        parse_suite(Path::new("suites/s.yaml"), &format!("{HEAD}{body}"))
    }

    /// The newest dated version of each profile is the current profile: a
    /// check tagged `reapi` or `buildstream` (added, removed, retagged) must
    /// show up in `suites/profiles/versions.yaml`. The message names the
    /// exact lines to add or remove, so the change is a paste.
    #[test]
    fn newest_dated_versions_list_exactly_the_tagged_checks() {
        let suites = builtin_suites().unwrap();
        let dated = bundled_profile_versions().unwrap();
        dated.validate_ids(&suites, Path::new(PROFILE_VERSIONS_FILE)).unwrap();
        for name in DATED_PROFILES {
            let newest = dated.newest(name).unwrap_or_else(|| panic!("{name} has no dated version"));
            let tagged: Vec<&str> = suites
                .iter()
                .flat_map(|s| &s.checks)
                .filter(|c| c.tags.iter().any(|t| t == name))
                .map(|c| c.id.as_str())
                .collect();
            let listed: HashSet<&str> = newest.checks.iter().map(String::as_str).collect();
            let mut add: Vec<&str> = tagged.iter().copied().filter(|id| !listed.contains(id)).collect();
            let mut remove: Vec<&str> =
                newest.checks.iter().map(String::as_str).filter(|id| !tagged.contains(id)).collect();
            add.sort_unstable();
            remove.sort_unstable();
            let lines = |ids: &[&str]| match ids {
                [] => "      (nothing)\n".to_string(),
                _ => ids.iter().map(|id| format!("      - {id}\n")).collect(),
            };
            assert!(
                add.is_empty() && remove.is_empty(),
                "{name}@{v} (the newest version in {PROFILE_VERSIONS_FILE}) must list exactly the checks tagged `{name}`.\n\
                 Add under `{name}:` version \"{v}\" (or, if a release already shipped {name}@{v}, in a new version after it):\n{}\
                 Remove from it:\n{}",
                lines(&add),
                lines(&remove),
                v = newest.version,
            );
        }
    }

    #[rstest]
    #[case("reapi:\n  - version: \"2026.13\"\n    checks: [a.b]\nbuildstream: []\n", 2, "is not YYYY.MM")]
    #[case(
        "reapi:\n  - version: \"2026.12\"\n    checks: [a.b]\n  - version: \"2026.11\"\n    checks: [a.b]\nbuildstream: []\n",
        4,
        "oldest first"
    )]
    #[case("reapi:\n  - version: \"2026.12\"\n    checks: [a.b, a.b]\nbuildstream: []\n", 2, "twice")]
    #[case("reapi:\n  - version: \"2026.12\"\n    checks: []\nbuildstream: []\n", 2, "lists no check")]
    #[case("reapi: []\nbuildstream: []\nall: []\n", 3, "unknown field `all`")]
    fn malformed_dated_profiles_name_their_line(#[case] text: &str, #[case] line: usize, #[case] msg: &str) {
        let err = parse_profile_versions(Path::new("v.yaml"), text).unwrap_err();
        assert!(err.message.contains(msg), "{err}");
        assert_eq!(err.location, format!("v.yaml:{line}"), "{err}");
    }

    #[test]
    fn an_unquoted_version_keeps_its_digits() {
        let text = "reapi:\n  - version: 2026.10\n    checks: [a.b]\nbuildstream: []\n";
        assert_eq!(parse_profile_versions(Path::new("v.yaml"), text).unwrap().reapi[0].version, "2026.10");
    }

    #[test]
    fn a_dated_profile_naming_an_unknown_check_is_a_load_error() {
        let suite = parse(&format!("  - id: s.a\n{CHECK}")).unwrap();
        let text = "reapi:\n  - version: \"2026.11\"\n    checks:\n      - s.a\n  - version: \"2026.12\"\n    checks:\n      - s.a\n      - s.gone\nbuildstream: []\n";
        let dated = parse_profile_versions(Path::new("v.yaml"), text).unwrap();
        let err = dated.validate_ids(&[suite], Path::new("v.yaml")).unwrap_err();
        assert_eq!(err.location, "v.yaml:8", "{err}");
        assert!(err.message.contains("reapi@2026.12 lists `s.gone`, which no suite has"), "{err}");
        assert_eq!(dated.newest("reapi").unwrap().version, "2026.12");
        assert_eq!(dated.known("reapi"), "reapi@2026.11, reapi@2026.12");
        assert_eq!(dated.known("all"), "none");
    }

    #[test]
    fn status_codes_go_by_the_specs_names() {
        assert_eq!(status_code("INVALID_ARGUMENT"), Some(tonic::Code::InvalidArgument));
        assert_eq!(status_code("OK"), Some(tonic::Code::Ok));
        assert_eq!(status_code_name(tonic::Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(status_code("InvalidArgument"), None);
    }

    #[test]
    fn bundled_suites_load_and_name_their_defects() {
        // Whether `builtin:` ids exist is the session's check (it knows the
        // registry; suites do not reach up to it): session::select_checks.
        let suites = builtin_suites().unwrap();
        assert!(suites.iter().map(|s| s.checks.len()).sum::<usize>() >= 7);
        for c in suites.iter().flat_map(|s| &s.checks) {
            assert!(!c.killed_by.is_empty(), "{} names no defect that kills it", c.id);
        }
    }

    #[test]
    fn duplicate_id_names_the_line_of_the_second() {
        let err = parse(&format!("  - id: s.a\n{CHECK}  - id: s.a\n{CHECK}")).unwrap_err();
        assert_eq!(err.location, "suites/s.yaml:10");
        assert!(err.message.contains("duplicate check id `s.a`"));
    }

    #[rstest]
    #[case("  - id: other.a\n", "must start with `s.`")]
    #[case("  - id: s.a b\n", "may use only")]
    fn bad_ids(#[case] id_line: &str, #[case] msg: &str) {
        let err = parse(&format!("{id_line}{CHECK}")).unwrap_err();
        assert!(err.message.contains(msg), "{err}");
        assert_eq!(err.location, "suites/s.yaml:4");
    }

    #[test]
    fn assertion_needs_exactly_one_operator() {
        let body = format!("  - id: s.a\n{CHECK}    expect:\n      probe:\n        - field: cwd\n          equals: /\n          contains: x\n");
        let err = parse(&body).unwrap_err();
        assert!(err.message.contains("exactly one operator"), "{err}");
    }

    #[test]
    fn values_are_judged_only_of_variables_the_report_keeps() {
        let body = |field: &str| {
            format!("  - id: s.a\n{CHECK}    expect:\n      probe:\n        - field: {field}\n          equals: x\n")
        };
        let err = parse(&body("env.CI_JOB_TOKEN")).unwrap_err();
        assert!(err.message.contains("keeps the values of BuildStream's variables only"), "{err}");
        parse(&body("env.SOURCE_DATE_EPOCH")).unwrap();
    }

    #[test]
    fn type_errors_carry_the_line() {
        let err = parse(&format!("  - id: s.a\n{CHECK}    expect:\n      exit_code: zero\n")).unwrap_err();
        assert_eq!(err.location, "suites/s.yaml:11", "{err}");
    }

    /// (Unknown `builtin:` ids are the session's check: session.rs tests.)
    #[test]
    fn impact_is_checked_at_load() {
        let check = CHECK.replace("    impact: spec\n", "");
        let err = parse(&format!("  - id: s.a\n{check}    impact: sometimes\n")).unwrap_err();
        assert!(err.message.contains("expected blocker, spec or feature:NAME"), "{err}");
        assert_eq!(err.location, "suites/s.yaml:4", "{err}");
    }

    #[test]
    fn entries_parse_by_shape() {
        let body = format!(
            "  - id: s.a\n{CHECK}    action:\n      input_root:\n        - file: etc/x\n          content: hi\n        - dir: tmp\n        - symlink: lib\n          target: /usr/lib\n        - probe: bin/sh\n"
        );
        let s = parse(&body).unwrap();
        let entries = &s.checks[0].action.input_root;
        assert!(matches!(&entries[0], EntrySpec::File { file, .. } if file == "etc/x"));
        assert!(matches!(&entries[1], EntrySpec::Dir { .. }));
        assert!(matches!(&entries[2], EntrySpec::Symlink { target, .. } if target == "/usr/lib"));
        assert!(matches!(&entries[3], EntrySpec::Probe { .. }));
    }
}
