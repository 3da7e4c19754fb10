//! Verdicts: what a check concluded about the server, and why.
//!
//! The five kinds are kept strictly apart because CI gates and vendors act on
//! them differently: FAIL and WARN speak about the server, ERROR about the
//! harness or the infrastructure, SKIP about applicability.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::suite::Severity;

/// The conclusion of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum VerdictKind {
    /// The server behaves as required.
    Pass,
    /// The server violates a MUST requirement.
    Fail,
    /// The server does not meet a SHOULD requirement.
    Warn,
    /// The harness or the infrastructure could not decide.
    Error,
    /// The check does not apply; the reason says why.
    Skip,
}

impl VerdictKind {
    /// Upper-case label used in every report.
    pub fn label(self) -> &'static str {
        match self {
            VerdictKind::Pass => "PASS",
            VerdictKind::Fail => "FAIL",
            VerdictKind::Warn => "WARN",
            VerdictKind::Error => "ERROR",
            VerdictKind::Skip => "SKIP",
        }
    }

    /// The verdict a check reaches when its requirement is not met, by severity.
    pub fn for_unmet(severity: Severity) -> VerdictKind {
        match severity {
            Severity::Must => VerdictKind::Fail,
            Severity::Should => VerdictKind::Warn,
            // An optional behaviour that is absent is not a defect.
            Severity::May => VerdictKind::Skip,
        }
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for VerdictKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PASS" => Ok(VerdictKind::Pass),
            "FAIL" => Ok(VerdictKind::Fail),
            "WARN" => Ok(VerdictKind::Warn),
            "ERROR" => Ok(VerdictKind::Error),
            "SKIP" => Ok(VerdictKind::Skip),
            other => Err(format!("unknown verdict `{other}` (PASS, FAIL, WARN, ERROR, SKIP)")),
        }
    }
}

/// One named piece of evidence: what was expected and what was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Short label, e.g. `outcome`, `probe.cwd`, `stdout`.
    pub label: String,
    /// What the check expected, if it states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the server produced.
    pub observed: String,
}

/// A verdict with its one-line reason and supporting evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The conclusion: PASS, FAIL, WARN, ERROR or SKIP.
    pub kind: VerdictKind,
    /// One line, shown next to the check id on the terminal.
    pub reason: String,
    /// What was expected and observed, in the order the check recorded it.
    pub evidence: Vec<Evidence>,
    /// How the check's main action ended, when it ran one: the readiness
    /// summary tells a feature refused cleanly (rejected, failed) from one
    /// ignored, and a hang (queued) from an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::suite::OutcomeClass>,
}

impl Verdict {
    /// A verdict of `kind` with its reason and no evidence yet.
    pub fn new(kind: VerdictKind, reason: impl Into<String>) -> Self {
        Verdict { kind, reason: reason.into(), evidence: Vec::new(), outcome: None }
    }
    /// Records how the main action ended.
    pub fn with_outcome(mut self, class: crate::suite::OutcomeClass) -> Self {
        self.outcome = Some(class);
        self
    }
    /// A PASS, with its reason.
    pub fn pass(reason: impl Into<String>) -> Self {
        Self::new(VerdictKind::Pass, reason)
    }
    /// An ERROR: what kept the harness or the infrastructure from deciding.
    pub fn error(reason: impl Into<String>) -> Self {
        Self::new(VerdictKind::Error, reason)
    }
    /// A SKIP: why the check does not apply.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::new(VerdictKind::Skip, reason)
    }
    /// Adds one piece of evidence.
    pub fn with(mut self, label: impl Into<String>, expected: Option<String>, observed: impl Into<String>) -> Self {
        self.evidence.push(Evidence { label: label.into(), expected, observed: observed.into() });
        self
    }
}

/// Why a step of a check did not get what it needed, typed so that the
/// status rule's "undecided" (`reapi_client::status`) survives every function
/// boundary: a CAS read that timed out in a helper stays ERROR in the check
/// that called it, however many layers of context are added on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// Nothing was learnt about the server: the link, our deadlines,
    /// transient answers after the retries, impossible claims, our own
    /// processes or disk. Always ERROR.
    Undecided(String),
    /// The server answered, wrongly: FAIL (WARN for a SHOULD) in a check
    /// whose requirement this is.
    Server(String),
}

impl StepError {
    /// Adds what was being done: `fetching output directory: …`.
    pub fn context(self, what: impl std::fmt::Display) -> StepError {
        match self {
            StepError::Undecided(m) => StepError::Undecided(format!("{what}: {m}")),
            StepError::Server(m) => StepError::Server(format!("{what}: {m}")),
        }
    }

    /// The one line it says.
    pub fn message(&self) -> &str {
        match self {
            StepError::Undecided(m) | StepError::Server(m) => m,
        }
    }

    /// The verdict of a check whose requirement failed this way: `unmet`
    /// (FAIL, or WARN for a SHOULD) for the server's wrong answer, ERROR for
    /// an undecided one.
    pub fn verdict(self, unmet: VerdictKind) -> Verdict {
        match self {
            StepError::Undecided(m) => Verdict::error(m),
            StepError::Server(m) => Verdict::new(unmet, m),
        }
    }

    /// The verdict where this step was only a precondition of what the
    /// check tests: ERROR either way (the requirement was not reached), and
    /// it says whether the server was at fault.
    pub fn precondition(self) -> Verdict {
        match self {
            StepError::Undecided(m) => Verdict::error(m),
            StepError::Server(m) => Verdict::error(format!("a step before the check failed on the server: {m}")),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<reapi_client::cas::CasError> for StepError {
    fn from(e: reapi_client::cas::CasError) -> Self {
        if e.is_undecided() {
            StepError::Undecided(e.to_string())
        } else {
            StepError::Server(e.to_string())
        }
    }
}

/// A check's verdict together with what identifies the check in reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's id, `<suite>.<name>`.
    pub id: String,
    /// The suite the check belongs to.
    pub suite: String,
    /// One line naming what is checked.
    pub title: String,
    /// The requirement's MUST, SHOULD or MAY: whether unmet means FAIL, WARN or SKIP.
    pub severity: Severity,
    /// What failing it means for a BuildStream build.
    pub impact: crate::suite::Impact,
    /// The check's labels; `buildstream` and `reapi` choose the profiles it runs in.
    pub tags: Vec<String>,
    /// Where the requirement comes from (a spec clause or a BuildStream document).
    pub source: String,
    /// What the check concluded, with its reason and evidence.
    pub verdict: Verdict,
    /// How to fix a FAIL or WARN on the recognised server (see `hints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The requirement is that the action is answered without running (a
    /// platform no worker has): a PASS by refusal then means the feature
    /// works, not that it is refused.
    #[serde(default)]
    pub refusal_required: bool,
    /// Its suite reads and writes only relative to the working directory
    /// (`independent_of_root`): what it found does not depend on whether `/`
    /// is the input root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub independent_of_root: bool,
    /// Wall time the check took, including waiting for the server.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
}

/// Serialises durations as fractional seconds, the unit JUnit and humans use.
pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    /// Writes a duration as a number of seconds (`f64`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    /// Reads a number of seconds back; a negative or non-finite one is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// One step of starting a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupStep {
    /// What the step did, e.g. `postgres start`.
    pub name: String,
    /// How long it took.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
}

/// The whole run: every result plus what was run against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Human description of the target, e.g. `local (buildbox-casd 1.3.x)` or an endpoint URL.
    pub target: String,
    /// Instance name of the execution service the run used (empty: the default instance).
    pub instance: String,
    /// The server recognised behind the target, when one was (see `hints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// BuildStream features the user needs (`--needs`), for the readiness answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// `--needs-only`: the elements use only the capabilities `needs` names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_only: bool,
    /// The run left out checks of the `buildstream` profile (--suite,
    /// --filter, another profile): no "builds here: yes" from it.
    #[serde(default)]
    pub partial: bool,
    /// What was run: the profile and its dated version (`reapi@2026.12`),
    /// or the suites that replaced it, and what narrowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// One result per selected check, in selection order (a target that cannot be used gives
    /// each an ERROR).
    pub results: Vec<CheckResult>,
    /// When the run started, in seconds since the Unix epoch.
    pub started_at: u64,
    /// Time spent starting (and provisioning) the cluster, included in `wall_time`.
    #[serde(with = "duration_secs")]
    pub startup_time: Duration,
    /// The cluster's start-up steps with their durations, when it reports them.
    #[serde(default)]
    pub startup_steps: Vec<StartupStep>,
    /// Time the whole run took, start-up of the cluster included.
    #[serde(with = "duration_secs")]
    pub wall_time: Duration,
}

impl RunSummary {
    /// Number of results of one kind.
    pub fn count(&self, kind: VerdictKind) -> usize {
        self.results.iter().filter(|r| r.verdict.kind == kind).count()
    }

    /// Process exit status: 1 when a MUST check failed, 2 when something could
    /// not be decided, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.results.iter().any(|r| r.verdict.kind == VerdictKind::Fail) {
            crate::exit::FINDINGS
        } else if self.results.iter().any(|r| r.verdict.kind == VerdictKind::Error) {
            crate::exit::UNDECIDED
        } else {
            crate::exit::SUCCESS
        }
    }
}

/// Results and summaries for unit tests of what consumes verdicts.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A result of check `id` (suite: the part before the first dot).
    pub(crate) fn result(id: &str, impact: &str, verdict: Verdict) -> CheckResult {
        CheckResult {
            id: id.into(),
            suite: id.split('.').next().unwrap_or_default().into(),
            title: "t".into(),
            severity: Severity::Must,
            impact: impact.parse().expect("valid impact"),
            tags: vec!["buildstream".into()],
            source: "s".into(),
            verdict,
            hint: None,
            refusal_required: false,
            independent_of_root: false,
            duration: Duration::from_millis(120),
        }
    }

    /// A complete run of these results against target `t`.
    pub(crate) fn summary(results: Vec<CheckResult>) -> RunSummary {
        RunSummary {
            target: "t".into(),
            instance: String::new(),
            server: None,
            needs: Vec::new(),
            needs_only: false,
            partial: false,
            profile: Some("buildstream@2026.12".into()),
            results,
            started_at: 1_700_000_000,
            startup_time: Duration::ZERO,
            startup_steps: Vec::new(),
            wall_time: Duration::from_secs(1),
        }
    }
}
