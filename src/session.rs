//! A run as one session: selecting the checks, starting the target,
//! running every check, building the run's summary and readiness answer
//! once, comparing with expectations, and the exit-status policy. The CLI
//! (`cli`) parses arguments, calls these, and prints; tests call them too.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use crate::action::Vars;
use crate::cluster::Cluster;
use crate::expectations::{Comparison, ExpectationFile};
use crate::readiness::Readiness;
use crate::runner::{self, Harness, RunOptions};
use crate::suite::{self, CheckSpec, Suite};
use crate::verdict::{RunSummary, VerdictKind};

/// Why a command could not do its work; each variant maps to an exit status
/// (`exit`). The message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags, files or selections that cannot work (before any work).
    #[error("{0}")]
    Usage(String),
    /// The cluster the harness was to start did not start.
    #[error("{0}")]
    Cluster(String),
    /// A report or expectation file could not be written.
    #[error("{0}")]
    Report(String),
}

impl Error {
    /// The exit status this error ends the command with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Cluster(_) | Error::Report(_) => crate::exit::UNDECIDED,
        }
    }
}

/// A named selection of checks: the current `buildstream` or `reapi`
/// profile (the checks the suites tag so; a test keeps each equal to its
/// newest dated version), one dated version of them (exactly the checks
/// `suites/profiles/versions.yaml` lists for it), or every check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Profile {
    /// Everything tagged `buildstream`: what decides whether BuildStream builds on the cluster.
    #[default]
    Buildstream,
    /// Everything tagged `reapi`: REAPI spec conformance.
    Reapi,
    /// Every check.
    All,
    /// A dated version of `buildstream` or `reapi` (`reapi@2026.12`).
    Dated {
        /// `buildstream` or `reapi`.
        name: String,
        /// `YYYY.MM`.
        version: String,
    },
}

impl Profile {
    /// The profile's name without a version: `buildstream`, `reapi`, `all`.
    pub fn name(&self) -> &str {
        match self {
            Profile::Buildstream => "buildstream",
            Profile::Reapi => "reapi",
            Profile::All => "all",
            Profile::Dated { name, .. } => name,
        }
    }

    /// Whether the profile has `check`: by tag for the current profiles, by
    /// the list of `dated` for a dated version.
    pub fn includes(&self, check: &CheckSpec, dated: &suite::DatedProfiles) -> bool {
        match self {
            Profile::All => true,
            Profile::Buildstream | Profile::Reapi => check.tags.iter().any(|t| t == self.name()),
            Profile::Dated { name, version } => {
                dated.find(name, version).is_some_and(|v| v.checks.iter().any(|id| id == &check.id))
            }
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Profile::Dated { name, version } => write!(f, "{name}@{version}"),
            other => f.write_str(other.name()),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    /// `buildstream`, `reapi`, `all`, or `buildstream@VERSION`, `reapi@VERSION`
    /// for a version the bundled `suites/profiles/versions.yaml` has.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, version) = match s.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (s, None),
        };
        let undated = match name {
            "buildstream" => Profile::Buildstream,
            "reapi" => Profile::Reapi,
            "all" => Profile::All,
            other => {
                return Err(format!(
                    "unknown profile `{other}` (buildstream, reapi, all; buildstream@VERSION, reapi@VERSION)"
                ))
            }
        };
        let Some(version) = version else { return Ok(undated) };
        let dated = suite::bundled_profile_versions().map_err(|e| e.to_string())?;
        if undated == Profile::All {
            return Err("the `all` profile has no dated versions: it is every check there is".into());
        }
        if dated.find(name, version).is_none() {
            return Err(format!("no profile {name}@{version} (known: {})", dated.known(name)));
        }
        Ok(Profile::Dated { name: name.into(), version: version.into() })
    }
}

/// Which checks to run or list.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Selection {
    /// Which checks: `buildstream` (tagged buildstream), `reapi` (tagged reapi), `all`, or a
    /// dated version, `buildstream@VERSION` or `reapi@VERSION` (e.g. reapi@2026.12: exactly the
    /// checks that version lists). The undated names are the newest version.
    #[arg(long, value_name = "PROFILE[@VERSION]", default_value_t = Profile::Buildstream)]
    pub profile: Profile,
    /// Run only this suite (repeatable; overrides --profile).
    #[arg(long = "suite", value_name = "NAME")]
    pub suites: Vec<String>,
    /// Run only checks whose id contains TEXT (repeatable: any of them).
    #[arg(long = "filter", value_name = "TEXT")]
    pub filters: Vec<String>,
    /// Load suites from this directory instead of the ones built in.
    #[arg(long, value_name = "DIR", env = "REAPI_SUITES_DIR")]
    pub suites_dir: Option<PathBuf>,
}

impl Selection {
    /// What a report says was run: the profile with its version
    /// (`reapi@2026.12`), or the suites that replaced it, and what narrowed
    /// it. A current profile is named by the newest dated version with
    /// exactly its checks; with suites whose tags match none (from
    /// `--suites-dir`) it is called undated.
    pub fn label(&self, suites: &[Suite], dated: &suite::DatedProfiles) -> String {
        let mut label = if !self.suites.is_empty() {
            format!("--suite {}", self.suites.join(", "))
        } else {
            match &self.profile {
                Profile::Buildstream | Profile::Reapi => {
                    let name = self.profile.name();
                    let current: BTreeSet<&str> = suites
                        .iter()
                        .flat_map(|s| &s.checks)
                        .filter(|c| self.profile.includes(c, dated))
                        .map(|c| c.id.as_str())
                        .collect();
                    let same = |v: &&suite::ProfileVersion| {
                        v.checks.iter().map(String::as_str).collect::<BTreeSet<_>>() == current
                    };
                    match dated.versions(name).iter().rev().find(same) {
                        Some(v) => format!("{name}@{}", v.version),
                        None => format!("{name} (undated: these suites' checks match no dated version)"),
                    }
                }
                other => other.to_string(),
            }
        };
        if !self.filters.is_empty() {
            label.push_str(&format!(", narrowed by --filter {}", self.filters.join(", ")));
        }
        label
    }
}

/// Loads suites (bundled or from a directory) and applies suite and id filters.
pub fn select_checks(args: &Selection) -> Result<(Vec<Suite>, Vec<CheckSpec>), Error> {
    let suites = match &args.suites_dir {
        Some(dir) => suite::load_dir(dir),
        None => suite::builtin_suites(),
    }
    .map_err(|e| Error::Usage(e.to_string()))?;
    for name in &args.suites {
        if !suites.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Usage(format!("unknown suite `{name}` (known: {})", known.join(", "))));
        }
    }
    let dated = dated_profiles(args, &suites)?;
    for check in suites.iter().flat_map(|s| &s.checks) {
        if let Some(b) = &check.builtin {
            if crate::builtin::find(b).is_none() {
                return Err(Error::Usage(format!("{}: no built-in check named `{b}`", check.location)));
            }
        }
    }
    let checks = suites
        .iter()
        .filter(|s| args.suites.is_empty() || args.suites.contains(&s.name))
        .flat_map(|s| s.checks.iter())
        // Naming a suite is explicit: the profile does not narrow it further.
        .filter(|c| !args.suites.is_empty() || args.profile.includes(c, &dated))
        .filter(|c| args.filters.is_empty() || args.filters.iter().any(|f| c.id.contains(f.as_str())))
        .cloned()
        .collect();
    Ok((suites, checks))
}

/// The dated profiles, checked against the suites they select from: all of
/// them against the bundled suites, the chosen version against suites from
/// `--suites-dir` (which need not have every bundled check).
pub fn dated_profiles(args: &Selection, suites: &[Suite]) -> Result<suite::DatedProfiles, Error> {
    let dated = suite::bundled_profile_versions().map_err(|e| Error::Usage(e.to_string()))?;
    let file = std::path::Path::new(suite::PROFILE_VERSIONS_FILE);
    if args.suites_dir.is_none() {
        dated.validate_ids(suites, file).map_err(|e| Error::Usage(e.to_string()))?;
    } else if let Profile::Dated { name, version } = &args.profile {
        let known: BTreeSet<&str> = suites.iter().flat_map(|s| &s.checks).map(|c| c.id.as_str()).collect();
        let missing: Vec<&str> = dated
            .find(name, version)
            .map(|v| v.checks.iter().map(String::as_str).filter(|id| !known.contains(id)).collect())
            .unwrap_or_default();
        if !missing.is_empty() {
            return Err(Error::Usage(format!(
                "{name}@{version} needs checks the suites of --suites-dir lack: {}",
                missing.join(", ")
            )));
        }
    }
    Ok(dated)
}

/// How a run ended.
// One value per run, moved once: the size of the summary costs nothing, and
// boxing it would only burden every caller's pattern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RunEnd {
    /// Every check has its verdict.
    Finished(RunSummary),
    /// Interrupted by this signal; operations cancelled, cluster stopped.
    Interrupted(i32),
}

/// Starts the cluster, runs the checks and stops the cluster again. A cluster
/// that cannot start is an error; a target that does not answer gives ERROR
/// verdicts. `on_done` sees each result as it lands. When `interrupt`
/// completes first (with a signal number), in-flight operations are
/// cancelled and the cluster is stopped, also during start-up.
pub async fn execute(
    cluster: &mut dyn Cluster,
    checks: &[CheckSpec],
    options: RunOptions,
    vars: Vars,
    on_done: impl Fn(&crate::verdict::CheckResult),
    interrupt: impl std::future::Future<Output = i32>,
) -> Result<RunEnd, Error> {
    tokio::pin!(interrupt);
    let start = Instant::now();
    let started_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let target = cluster.name();
    let started = tokio::select! {
        s = cluster.start() => s,
        signal = &mut interrupt => {
            eprintln!("interrupted during cluster start-up: stopping it");
            cluster.stop().await;
            return Ok(RunEnd::Interrupted(signal));
        }
    };
    let connect = match started {
        Ok(c) => c,
        Err(e) => {
            cluster.stop().await;
            return Err(Error::Cluster(format!("cannot start cluster {target}: {e}")));
        }
    };
    let startup_time = start.elapsed();
    let startup_steps = cluster
        .startup_steps()
        .into_iter()
        .map(|(name, duration)| crate::verdict::StartupStep { name, duration })
        .collect();
    // Connecting asks for the capabilities, which a hanging server may never
    // answer: interruptible like every other phase.
    let connected = tokio::select! {
        h = Harness::connect(&connect, options, vars) => h,
        signal = &mut interrupt => {
            eprintln!("interrupted while connecting: stopping the cluster");
            cluster.stop().await;
            return Ok(RunEnd::Interrupted(signal));
        }
    };
    let results = match connected {
        Ok(h) => tokio::select! {
            r = runner::run_all(&h, checks, on_done) => r,
            signal = &mut interrupt => {
                let cancelled = h.inflight.cancel_all(h.clients()).await;
                eprintln!("interrupted: {cancelled}; stopping the cluster");
                cluster.stop().await;
                return Ok(RunEnd::Interrupted(signal));
            }
        },
        Err(e) => runner::all_error(checks, &e.to_string()),
    };
    cluster.settle().await;
    let results = match cluster.died() {
        Some(death) => blame_harness(results, &death),
        None => results,
    };
    cluster.stop().await;
    let mut summary = RunSummary {
        target,
        instance: connect.instance,
        server: None,
        needs: Vec::new(),
        needs_only: false,
        partial: false,
        profile: None,
        results,
        started_at,
        startup_time,
        startup_steps,
        wall_time: start.elapsed(),
    };
    crate::hints::attach(&mut summary, cluster.server());
    if let Some(detail) = cluster.server_detail() {
        summary.server = Some(match summary.server.take() {
            Some(server) => format!("{server} ({detail})"),
            None => detail,
        });
    }
    Ok(RunEnd::Finished(summary))
}

/// When a process the harness started died during the run, no FAIL or WARN
/// can be pinned on the server: they become ERROR, saying why.
pub fn blame_harness(results: Vec<crate::verdict::CheckResult>, death: &str) -> Vec<crate::verdict::CheckResult> {
    use crate::verdict::{Verdict, VerdictKind};
    results
        .into_iter()
        .map(|mut r| {
            if matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn | VerdictKind::Error) {
                let was = format!("{}: {}", r.verdict.kind, r.verdict.reason);
                let mut v = Verdict::error(format!("{death} during the run; undecided (was {was})"));
                v.evidence = std::mem::take(&mut r.verdict.evidence);
                r.verdict = v;
            }
            r
        })
        .collect()
}

/// What a run is about before it starts: the checks, the suites they come
/// from, the features the user needs, and the expectations to compare with.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the user selected.
    pub selection: Selection,
    /// Every suite loaded (readiness and expectations need the checks not run too).
    pub suites: Vec<Suite>,
    /// The checks to run, in order.
    pub checks: Vec<CheckSpec>,
    /// BuildStream features and sandbox capabilities the user needs
    /// (`--needs`), all known.
    pub needs: Vec<String>,
    /// `--needs-only`: capabilities `needs` does not name do not gate.
    pub needs_only: bool,
    /// `--expect`'s expectations, when given.
    pub expect: Option<ExpectationFile>,
    /// What reports say was run (`Selection::label`), e.g. `reapi@2026.12`.
    pub profile: String,
}

impl Plan {
    /// Selects the checks and checks what the user asked for against them:
    /// an empty selection, an unknown `--needs` feature, or expectations
    /// for another cluster (`cluster`: the one the harness starts, if any)
    /// are usage errors.
    pub fn new(
        selection: Selection,
        needs: Vec<String>,
        expect: Option<(ExpectationFile, String)>,
        cluster: Option<&str>,
    ) -> Result<Plan, Error> {
        let (suites, checks) = select_checks(&selection)?;
        if checks.is_empty() {
            return Err(Error::Usage(if selection.suites.is_empty() && selection.filters.is_empty() {
                "the suites hold no check for this profile".into()
            } else {
                "no check matches the given --suite/--filter".into()
            }));
        }
        let mut features: BTreeSet<&str> =
            suites.iter().flat_map(|s| &s.checks).filter_map(|c| c.impact.feature()).collect();
        features.extend(crate::readiness::CAPABILITIES.iter().map(|c| c.name));
        if let Some(need) = needs.iter().find(|n| !features.contains(n.as_str())) {
            let known: Vec<&str> = features.iter().copied().collect();
            return Err(Error::Usage(format!(
                "--needs {need}: no such feature or sandbox capability (known: {})",
                known.join(", ")
            )));
        }
        if let (Some((file, path)), Some(cluster)) = (&expect, cluster) {
            if !file.applies_to(cluster) {
                return Err(Error::Usage(format!(
                    "{path}: expectations for target `{}`, but this run is against `--cluster {cluster}`",
                    file.target
                )));
            }
        }
        let profile = selection.label(&suites, &dated_profiles(&selection, &suites)?);
        Ok(Plan { selection, suites, checks, needs, needs_only: false, expect: expect.map(|(f, _)| f), profile })
    }

    /// The run answers "does BuildStream build here" (the `buildstream`
    /// profile) rather than gating on every FAIL.
    pub fn gates_on_readiness(&self) -> bool {
        self.selection.profile.name() == "buildstream"
    }

    /// The run leaves out checks of the `buildstream` profile: no "builds
    /// here: yes" from it.
    pub fn is_partial(&self) -> bool {
        !self.gates_on_readiness() || !self.selection.suites.is_empty() || !self.selection.filters.is_empty()
    }
}

/// A finished run with everything concluded from it, computed once.
#[derive(Debug)]
pub struct Concluded {
    /// The verdicts and what ran.
    pub summary: RunSummary,
    /// The answer: does BuildStream build here, and what.
    pub readiness: Readiness,
    /// The comparison with `--expect`, when given.
    pub comparison: Option<Comparison>,
    /// Expectation ids no suite has (typos), for a warning.
    pub unknown_expectations: Vec<String>,
    /// The exit status the run ends with (`exit`).
    pub exit_code: i32,
}

/// Concludes a finished run: the readiness answer, the comparison with the
/// expectations, and the exit status.
pub fn conclude(plan: &Plan, mut summary: RunSummary) -> Concluded {
    summary.needs = plan.needs.clone();
    summary.needs_only = plan.needs_only;
    summary.partial = plan.is_partial();
    summary.profile = Some(plan.profile.clone());
    let readiness = crate::readiness::assess(&summary, &summary.needs);
    let comparison = plan.expect.as_ref().map(|file| crate::expectations::compare(&summary, file));
    let known = |id: &String| plan.suites.iter().flat_map(|s| &s.checks).any(|c| &c.id == id);
    let unknown_expectations =
        comparison.iter().flat_map(|c| c.unused.iter()).filter(|id| !known(id)).cloned().collect();
    let exit_code = exit_code(plan, &summary, &readiness, comparison.as_ref());
    Concluded { summary, readiness, comparison, unknown_expectations, exit_code }
}

/// The exit-status policy (`exit`): with expectations, whether the run
/// deviates; with the `buildstream` profile, the readiness answer (spec
/// deviations are reported but do not fail it); else every FAIL and ERROR.
pub fn exit_code(plan: &Plan, summary: &RunSummary, readiness: &Readiness, comparison: Option<&Comparison>) -> i32 {
    use crate::exit::{FINDINGS, SUCCESS, UNDECIDED};
    if let Some(cmp) = comparison {
        return if cmp.matches() { SUCCESS } else { FINDINGS };
    }
    if !plan.gates_on_readiness() {
        return summary.exit_code();
    }
    let gate = readiness.exit_code();
    // A run narrowed to some checks is about those checks: one that could
    // not decide leaves the run undecided, even where the full profile's
    // answer would not depend on it.
    if gate == SUCCESS && summary.partial && summary.count(VerdictKind::Error) > 0 {
        UNDECIDED
    } else {
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_builtin_ids_name_registered_checks() {
        let (_, checks) = select_checks(&Selection { profile: Profile::All, ..Default::default() }).unwrap();
        assert!(checks.iter().any(|c| c.builtin.is_some()));
    }

    #[test]
    fn profiles_are_named_with_their_dated_version() {
        let select = |profile: &str, suites: &[&str], filters: &[&str]| {
            let selection = Selection {
                profile: profile.parse().unwrap(),
                suites: suites.iter().map(|s| s.to_string()).collect(),
                filters: filters.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let (suites, checks) = select_checks(&selection).unwrap();
            let label = selection.label(&suites, &dated_profiles(&selection, &suites).unwrap());
            let ids: Vec<String> = checks.into_iter().map(|c| c.id).collect();
            (label, ids)
        };
        let newest = suite::bundled_profile_versions().unwrap().newest("reapi").unwrap().version.clone();
        let (label, current) = select("reapi", &[], &[]);
        assert_eq!(label, format!("reapi@{newest}"));
        let (label, dated) = select(&format!("reapi@{newest}"), &[], &[]);
        assert_eq!((label, &dated), (format!("reapi@{newest}"), &current), "the current profile is the newest version");
        assert!(select("buildstream", &[], &[]).0.starts_with("buildstream@"));
        assert_eq!(select("all", &[], &[]).0, "all");
        assert_eq!(select("reapi", &[], &["cas."]).0, format!("reapi@{newest}, narrowed by --filter cas."));
        assert_eq!(select("reapi", &["cas"], &[]).0, "--suite cas");
        let plan = Plan::new(Selection { profile: Profile::Reapi, ..Default::default() }, vec![], None, None).unwrap();
        let summary = conclude(&plan, crate::verdict::fixtures::summary(Vec::new())).summary;
        assert_eq!(summary.profile, Some(format!("reapi@{newest}")));
    }

    #[test]
    fn an_unknown_or_undated_profile_version_is_refused_with_the_known_ones() {
        let err = "reapi@1999.01".parse::<Profile>().unwrap_err();
        assert!(err.contains("no profile reapi@1999.01 (known: reapi@"), "{err}");
        assert!("all@2026.12".parse::<Profile>().unwrap_err().contains("no dated versions"));
        assert!("bst".parse::<Profile>().unwrap_err().contains("unknown profile `bst`"));
        assert_eq!("buildstream".parse::<Profile>().unwrap(), Profile::Buildstream);
    }

    #[test]
    fn a_dated_version_from_other_suites_names_the_checks_they_lack() {
        let dir = tempfile::tempdir().unwrap();
        let suite = "suite: cas\ntitle: t\nchecks:\n  - id: cas.empty-blob\n    title: t\n    requirement: r\n    source: s\n    severity: MUST\n    impact: spec\n    tags: [reapi]\n    killed_by: [hang]\n";
        std::fs::write(dir.path().join("cas.yaml"), suite).unwrap();
        let newest = suite::bundled_profile_versions().unwrap().newest("reapi").unwrap().version.clone();
        let selection = Selection {
            profile: format!("reapi@{newest}").parse().unwrap(),
            suites_dir: Some(dir.path().into()),
            ..Default::default()
        };
        match select_checks(&selection) {
            Err(Error::Usage(m)) => {
                assert!(m.contains("needs checks the suites of --suites-dir lack: action-cache."), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // The current profile of such suites runs, and is called undated.
        let selection = Selection { profile: Profile::Reapi, ..selection };
        let (suites, checks) = select_checks(&selection).unwrap();
        assert_eq!(checks.len(), 1);
        assert!(selection.label(&suites, &dated_profiles(&selection, &suites).unwrap()).starts_with("reapi (undated"));
    }

    #[test]
    fn an_unknown_builtin_id_is_a_usage_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let suite = "suite: s\ntitle: t\ndescription: d\nchecks:\n  - id: s.x\n    title: t\n    requirement: r\n    source: s\n    severity: MUST\n    impact: spec\n    tags: [reapi]\n    killed_by: [hang]\n    builtin: no-such-check\n";
        std::fs::write(dir.path().join("s.yaml"), suite).unwrap();
        let selection = Selection { profile: Profile::All, suites_dir: Some(dir.path().into()), ..Default::default() };
        match select_checks(&selection) {
            Err(Error::Usage(m)) => assert!(m.contains("s.yaml:") && m.contains("no-such-check"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
