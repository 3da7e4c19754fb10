//! The answer a BuildStream user runs the suites for: which elements build on
//! this cluster — every element that builds in BuildStream's own local
//! sandbox, only those that do not use some sandbox capabilities, or none —,
//! which of its features are unavailable and how, and which requests would
//! hang. A pure function of the verdicts and each check's impact (`impact:`
//! in the suites); the sandbox capabilities are named here, by check id.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::suite::{Impact, OutcomeClass};
use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Whether BuildStream builds here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildsHere {
    /// No blocker failed: elements build (which ones: [`ElementsBuild`]).
    Yes,
    /// A blocker failed: no element builds.
    No,
    /// A blocker check could not be decided (ERROR).
    Undecided,
    /// No blocker found, but the run did not include every check that can
    /// block a build (e.g. `--suite cas`).
    NotAssessed,
}

/// How a BuildStream feature fares on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureState {
    /// Every check of the feature was skipped: nothing is known.
    NotAssessed,
    /// Every check of the feature passed with the feature at work.
    Available,
    /// The cluster refused the request with an error: elements using the
    /// feature fail at once, saying why.
    RefusedCleanly,
    /// A check could not be decided.
    Undecided,
    /// The request stays queued: elements using the feature wait for ever.
    Hangs,
    /// Ignored silently or wrong: elements using it build, with wrong results.
    Broken,
}

impl FeatureState {
    /// The state in the answer's words (`available`, `ignored silently or broken`, …).
    pub fn label(self) -> &'static str {
        match self {
            FeatureState::NotAssessed => "not assessed",
            FeatureState::Available => "available",
            FeatureState::RefusedCleanly => "refused cleanly",
            FeatureState::Undecided => "undecided",
            FeatureState::Hangs => "hangs (stays queued)",
            FeatureState::Broken => "ignored silently or broken",
        }
    }
    /// Whether an element needing the feature builds correctly.
    pub fn usable(self) -> bool {
        self == FeatureState::Available
    }
}

/// Which elements build here, measured against BuildStream's local sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElementsBuild {
    /// Every element that builds in BuildStream's local sandbox builds here.
    Every,
    /// Only elements that use none of [`Readiness::missing_capabilities`].
    OnlyWithout,
    /// A blocker failed: no element builds here.
    None,
    /// A blocker's action was never finished (left queued, or requeued for
    /// ever): no element builds, and those whose actions the server takes
    /// wait for ever instead of failing.
    Hang,
    /// A blocker or a capability could not be decided.
    Undecided,
    /// The run left out checks the answer rests on.
    NotAssessed,
}

/// A facility of BuildStream's local sandbox that some elements use and
/// others do not: missing it fails only the elements that use it.
#[derive(Debug, Clone, Copy)]
pub struct CapabilityDef {
    /// The name `--needs` takes.
    pub name: &'static str,
    /// What the sandbox offers, as a user would name it.
    pub facility: &'static str,
    /// The check that decides it.
    pub check: &'static str,
    /// What fails without it.
    pub used_by: &'static str,
}

/// The sandbox facilities BuildStream documents (its sandboxing docs and
/// buildbox-run-bubblewrap's mounts) and builds use. A worker that lacks one
/// still builds every element that does not touch it, so each is a
/// capability, not a blocker.
pub const CAPABILITIES: &[CapabilityDef] = &[
    CapabilityDef {
        name: "proc",
        facility: "/proc",
        check: "sandbox.proc-own-processes",
        used_by: "tools that locate themselves through /proc/self/exe — clang, cargo, rustc — and anything reading /proc (nproc, ps) fail",
    },
    CapabilityDef {
        name: "dev-nodes",
        facility: "/dev nodes",
        check: "sandbox.dev-nodes",
        used_by: "commands writing to /dev/null or reading /dev/urandom or /dev/zero — most configure scripts — fail",
    },
    CapabilityDef {
        name: "dev-fd",
        facility: "/dev/fd and /dev/std*",
        check: "sandbox.dev-fd",
        used_by: "bash process substitution, meson, and tools reading /dev/stdin or /dev/fd/N fail",
    },
    CapabilityDef {
        name: "shared-memory",
        facility: "/dev/shm",
        check: "sandbox.dev-shm-writable",
        used_by: "POSIX shared memory and semaphores — Python multiprocessing, sem_open in test suites — fail",
    },
    CapabilityDef {
        name: "writable-tmp",
        facility: "writable empty /tmp",
        check: "sandbox.tmp-writable-empty",
        used_by: "tools writing temporary files (compilers, mktemp; BuildStream sets HOME=/tmp) fail or see stale files",
    },
    CapabilityDef {
        name: "root-uid",
        facility: "uid 0",
        check: "sandbox.uid-root",
        used_by: "install commands that chown, or expect to run as root, fail",
    },
];

/// Features that are guarantees rather than facilities: without them
/// elements still build, less hermetically than in BuildStream's sandbox
/// (its sandboxing docs: remote sandboxes should produce the same result as
/// local ones); only an element that tests for one fails.
pub const GUARANTEES: &[&str] = &["hermetic-sandbox", "read-only-root"];

/// The capability a check decides, if any.
pub fn capability_of(check_id: &str) -> Option<&'static CapabilityDef> {
    CAPABILITIES.iter().find(|c| c.check == check_id)
}

/// A capability's state on the cluster and the check that decided it.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    /// `available` (present as in BuildStream's sandbox), `ignored silently or
    /// broken` (missing), `undecided` or `not assessed`.
    pub state: FeatureState,
    /// What the sandbox offers (`/proc`, `/dev/shm`, …).
    pub facility: String,
    /// What fails without it.
    pub used_by: String,
    /// Whether the exit status depends on it (every capability by default;
    /// with `--needs-only` only those `--needs` names).
    pub gated: bool,
    /// The checks that decide it, with their verdicts.
    pub checks: Vec<Finding>,
    /// As [`Feature::follows_from`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows_from: Option<String>,
}

impl Capability {
    /// The state in a capability's words.
    pub fn label(&self) -> &'static str {
        match self.state {
            FeatureState::Available => "present",
            FeatureState::NotAssessed => "not assessed",
            FeatureState::Undecided => "undecided",
            _ => "missing",
        }
    }

    /// Decided absent (or refused): elements using it fail.
    pub fn missing(&self) -> bool {
        !self.state.usable() && !matches!(self.state, FeatureState::Undecided | FeatureState::NotAssessed)
    }
}

/// One check behind a finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The check's id.
    pub id: String,
    /// Its verdict.
    pub verdict: VerdictKind,
    /// The verdict's one-line reason.
    pub reason: String,
    /// The root cause this finding follows from (then it is no separate
    /// problem): its command ran and was judged on what it saw, but not from
    /// the input root (as [`Readiness::root_causes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows_from: Option<String>,
}

impl Finding {
    fn of(r: &CheckResult) -> Finding {
        Finding {
            id: r.id.clone(),
            verdict: r.verdict.kind,
            reason: crate::text::one_line(&r.verdict.reason, 160),
            follows_from: None,
        }
    }
}

/// A feature's state and the checks that decided it.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    /// Whether elements using it build here.
    pub state: FeatureState,
    /// The checks that decide it, with their verdicts.
    pub checks: Vec<Finding>,
    /// The root cause (from [`Readiness::root_causes`]) that left the
    /// feature not assessed: its checks' commands ran, but not in
    /// BuildStream's sandbox, so their results say nothing about the feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows_from: Option<String>,
}

/// The readiness answer.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// The answer on blockers alone: does any element build here.
    pub builds_here: BuildsHere,
    /// Blocker checks that FAILed or WARNed, root causes (the input root, the
    /// sandbox) first.
    pub blockers: Vec<Finding>,
    /// Blocker checks that could not be decided.
    pub undecided: Vec<Finding>,
    /// Blocker checks skipped (opt-in, or not applicable here), with why.
    pub not_assessed: Vec<Finding>,
    /// BuildStream features by `--needs` name.
    pub features: BTreeMap<String, Feature>,
    /// Requests that stayed queued instead of being answered.
    pub hang_risks: Vec<Finding>,
    /// FAIL/WARN of checks BuildStream does not rely on.
    pub spec_deviations: Vec<Finding>,
    /// Features and capabilities the user said they need (`--needs`) that
    /// are not available.
    pub needed_unavailable: Vec<String>,
    /// Which elements build here.
    pub elements: ElementsBuild,
    /// Sandbox capabilities by `--needs` name ([`CAPABILITIES`]).
    pub capabilities: BTreeMap<String, Capability>,
    /// Capabilities this cluster lacks: elements using them fail.
    pub missing_capabilities: Vec<String>,
    /// `--needs-only`: only capabilities `--needs` names gate the exit status.
    pub needs_only: bool,
    /// Guarantees ([`GUARANTEES`]) the cluster does not give (also in
    /// `features`, with their state).
    pub guarantees_weakened: Vec<String>,
    /// Check id → the root cause its verdict follows from, for every
    /// blocker, feature and capability check whose verdict says nothing of
    /// its own (see [`attribute`]). The one source every report names root
    /// causes from; a check not in it stands on its own. Empty, and left out
    /// of the JSON, when no root cause masks anything.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub root_causes: BTreeMap<String, String>,
}

/// The check that tells where commands run: its probe lists the `/` it sees
/// and compares it with the staged input root.
const ROOT_CAUSE: &str = "input-root.root-entries";

/// Whether a check's verdict rests on what its command saw in the sandbox.
/// Only positive evidence counts: the outcome class says the command ran
/// (completed, or still executing). A verdict without one (a CAS check that
/// runs no command, a report of a harness that did not record it) shows
/// nothing ran. A check that requires a refusal is judged on whether the
/// action ran at all, and the `protocol` suite judges the server's API (the
/// action cache, WaitExecution): neither looks at what the command saw, so
/// a wrong root does not change their verdicts (a retried element replays a
/// cached failure on a server without a chroot too).
fn judged_on_what_it_saw(r: &CheckResult) -> bool {
    matches!(r.verdict.outcome, Some(OutcomeClass::Completed | OutcomeClass::Executing))
        && !r.refusal_required
        && r.suite != "protocol"
}

/// Blame by evidence, not by position in the suites. A root cause masks
/// other verdicts only when its own verdict shows commands do not run from
/// the input root: [`ROOT_CAUSE`] failed on what its probe saw. If its
/// outcome shows its command never started, it says nothing of where
/// commands run, and masks nothing. (A verdict of it without an outcome
/// class, from an older report, still masks: that check FAILs without one
/// only after its action completed.) Masked then are the blocker, feature
/// and capability checks judged on what their commands saw
/// ([`judged_on_what_it_saw`]): those commands ran outside BuildStream's
/// sandbox, so their verdicts, PASS or not, say nothing of their own. Any
/// other check — one whose command never started (Buildfarm's "Error
/// creating exec dir" on an absolute symlink), one that ran none, one
/// judging the API — failed for its own reason and is a root cause itself.
/// So is a failed check of a suite that reads and writes only relative to
/// the working directory (`independent_of_root`, the outputs suite): what
/// it judged does not depend on `/`. Its PASS is still masked, since no
/// element builds there to use what it found.
/// Returns check id → root cause id.
fn attribute(summary: &RunSummary) -> BTreeMap<String, String> {
    let unmet = |r: &CheckResult| matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn);
    // The root's probe must have listed `/`: its action completed.
    let listed_root = |r: &CheckResult| matches!(r.verdict.outcome, Some(OutcomeClass::Completed) | None);
    let Some(root) = summary.results.iter().find(|r| r.id == ROOT_CAUSE && unmet(r) && listed_root(r)) else {
        return BTreeMap::new();
    };
    summary
        .results
        .iter()
        .filter(|r| r.id != root.id && judged_on_what_it_saw(r))
        .filter(|r| !(r.independent_of_root && unmet(r)))
        .filter(|r| matches!(r.verdict.kind, VerdictKind::Pass | VerdictKind::Fail | VerdictKind::Warn))
        .filter(|r| capability_of(&r.id).is_some() || !matches!(r.impact, Impact::Spec))
        .map(|r| (r.id.clone(), root.id.clone()))
        .collect()
}

/// Order in which blockers are shown: what everything else depends on first.
fn root_cause_rank(id: &str) -> u8 {
    match id.split('.').next().unwrap_or_default() {
        "input-root" => 0,
        "sandbox" => 1,
        "platform" => 2,
        "outputs" => 3,
        _ => 4,
    }
}

fn feature_state(r: &CheckResult) -> FeatureState {
    match (r.verdict.kind, r.verdict.outcome) {
        (VerdictKind::Fail | VerdictKind::Warn, Some(OutcomeClass::Queued)) => FeatureState::Hangs,
        (VerdictKind::Fail | VerdictKind::Warn, _) => FeatureState::Broken,
        (VerdictKind::Error, _) => FeatureState::Undecided,
        (_, Some(OutcomeClass::Rejected | OutcomeClass::Failed)) if !r.refusal_required => FeatureState::RefusedCleanly,
        (_, Some(OutcomeClass::Queued)) => FeatureState::Hangs,
        (VerdictKind::Skip, _) => FeatureState::NotAssessed,
        _ => FeatureState::Available,
    }
}

/// Assesses a run. `needs` are features and capabilities the user requires
/// (`--needs`); with the summary's `needs_only`, only those capabilities gate.
pub fn assess(summary: &RunSummary, needs: &[String]) -> Readiness {
    let needs_only = summary.needs_only;
    let mut blockers = Vec::new();
    let mut undecided = Vec::new();
    let mut not_assessed = Vec::new();
    let mut features: BTreeMap<String, Feature> = BTreeMap::new();
    let mut hang_risks = Vec::new();
    let mut spec_deviations = Vec::new();
    let mut capabilities: BTreeMap<String, Capability> = BTreeMap::new();
    let root_causes = attribute(summary);
    // Blockers whose action never came back: a BuildStream action has that
    // shape, so elements hang there whatever else is wrong. (Never a
    // consequence of the root cause: nothing ran, see `attribute`.)
    let mut a_blocker_hangs = false;
    // Per check: its state on its own, for a feature whose other checks are masked.
    let mut check_state: std::collections::HashMap<&str, FeatureState> = std::collections::HashMap::new();
    let mut assessed = false;
    for r in &summary.results {
        check_state.insert(r.id.as_str(), feature_state(r));
        let unmet = matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn);
        if r.verdict.outcome == Some(OutcomeClass::Queued) {
            hang_risks.push(Finding::of(r));
        }
        if let Some(def) = capability_of(&r.id) {
            assessed |= r.verdict.kind != VerdictKind::Skip;
            let state = feature_state(r);
            let c = capabilities.entry(def.name.to_string()).or_insert(Capability {
                state,
                facility: def.facility.to_string(),
                used_by: def.used_by.to_string(),
                gated: !needs_only || needs.iter().any(|n| n == def.name),
                checks: Vec::new(),
                follows_from: None,
            });
            c.state = c.state.max(state);
            c.checks.push(Finding::of(r));
            continue;
        }
        match &r.impact {
            Impact::Blocker => {
                assessed |= r.verdict.kind != VerdictKind::Skip;
                if unmet {
                    blockers.push(Finding::of(r));
                    // A check asking for a refusal that was queued instead
                    // says nothing of how BuildStream's own actions fare.
                    if r.verdict.outcome == Some(OutcomeClass::Queued) && !r.refusal_required {
                        a_blocker_hangs = true;
                    }
                } else if r.verdict.kind == VerdictKind::Error {
                    undecided.push(Finding::of(r));
                } else if r.verdict.kind == VerdictKind::Skip {
                    not_assessed.push(Finding::of(r));
                }
            }
            Impact::Feature(name) => {
                let state = feature_state(r);
                let f =
                    features.entry(name.clone()).or_insert(Feature { state, checks: Vec::new(), follows_from: None });
                f.state = f.state.max(state);
                f.checks.push(Finding::of(r));
            }
            Impact::Spec => {
                if unmet {
                    spec_deviations.push(Finding::of(r));
                }
            }
        }
    }
    // Every finding of a masked check names its root cause, wherever it is listed.
    let checks = features.values_mut().flat_map(|f| &mut f.checks);
    for f in blockers.iter_mut().chain(checks).chain(capabilities.values_mut().flat_map(|c| &mut c.checks)) {
        f.follows_from = root_causes.get(&f.id).cloned();
    }
    // Root causes, each standing on its own, before their consequences.
    blockers.sort_by_key(|f| (f.follows_from.is_some(), f.id != ROOT_CAUSE, root_cause_rank(&f.id)));
    let builds_here = if !blockers.is_empty() {
        BuildsHere::No
    } else if !undecided.is_empty() {
        BuildsHere::Undecided
    } else if !assessed || summary.partial {
        BuildsHere::NotAssessed
    } else {
        BuildsHere::Yes
    };
    // A masked check says nothing of its feature or capability. What the
    // other checks found for their own reason (a refusal or a hang before
    // anything ran, a broken API) still stands; with nothing of their own to
    // say, the feature is "not assessed: follows from" the root cause.
    let remasked = |checks: &[Finding]| -> Option<(FeatureState, Option<String>)> {
        let root = checks.iter().find_map(|c| root_causes.get(&c.id))?;
        let own = checks
            .iter()
            .filter(|c| !root_causes.contains_key(&c.id))
            .filter_map(|c| check_state.get(c.id.as_str()).copied())
            .max()
            .filter(|s| !matches!(s, FeatureState::Available | FeatureState::NotAssessed));
        Some(match own {
            Some(state) => (state, None),
            None => (FeatureState::NotAssessed, Some(root.clone())),
        })
    };
    for f in features.values_mut() {
        if let Some((state, root)) = remasked(&f.checks) {
            (f.state, f.follows_from) = (state, root);
        }
    }
    for c in capabilities.values_mut() {
        if let Some((state, root)) = remasked(&c.checks) {
            (c.state, c.follows_from) = (state, root);
        }
    }
    let usable = |n: &str| match (features.get(n), capabilities.get(n)) {
        (Some(f), _) => f.state.usable(),
        (None, Some(c)) => c.state.usable(),
        (None, None) => false,
    };
    let needed_unavailable = needs.iter().filter(|n| !usable(n)).cloned().collect();
    let missing_capabilities: Vec<String> =
        capabilities.iter().filter(|(_, c)| c.missing()).map(|(n, _)| n.clone()).collect();
    let guarantees_weakened = features
        .iter()
        .filter(|(n, f)| GUARANTEES.contains(&n.as_str()) && !f.state.usable())
        .filter(|(_, f)| !matches!(f.state, FeatureState::NotAssessed | FeatureState::Undecided))
        .map(|(n, _)| n.clone())
        .collect();
    // A gated capability left unassessed (its check SKIPped) is no more
    // "present" than an undecided one: "every element builds" would claim
    // what nothing checked.
    let capability_undecided = capabilities
        .values()
        .any(|c| c.state == FeatureState::Undecided || (c.gated && c.state == FeatureState::NotAssessed));
    let elements = match builds_here {
        BuildsHere::No if a_blocker_hangs => ElementsBuild::Hang,
        BuildsHere::No => ElementsBuild::None,
        BuildsHere::Undecided => ElementsBuild::Undecided,
        BuildsHere::NotAssessed => ElementsBuild::NotAssessed,
        BuildsHere::Yes if !missing_capabilities.is_empty() => ElementsBuild::OnlyWithout,
        BuildsHere::Yes if capability_undecided => ElementsBuild::Undecided,
        BuildsHere::Yes => ElementsBuild::Every,
    };
    Readiness {
        builds_here,
        blockers,
        undecided,
        not_assessed,
        features,
        hang_risks,
        spec_deviations,
        needed_unavailable,
        elements,
        capabilities,
        missing_capabilities,
        needs_only,
        guarantees_weakened,
        root_causes,
    }
}

impl Readiness {
    /// Exit status of a run gated on BuildStream: 1 when no element builds,
    /// a gated capability is missing (every capability unless `--needs-only`)
    /// or a needed feature is unavailable; 2 when one of those is undecided;
    /// else 0.
    pub fn exit_code(&self) -> i32 {
        let undecided = |s: FeatureState| matches!(s, FeatureState::Undecided | FeatureState::NotAssessed);
        let needed_undecided = |n: &String| {
            self.features
                .get(n)
                .map(|f| f.state)
                .or_else(|| self.capabilities.get(n).map(|c| c.state))
                .is_none_or(undecided)
        };
        let gated = || self.capabilities.values().filter(|c| c.gated);
        if self.builds_here == BuildsHere::No
            || gated().any(Capability::missing)
            || self.needed_unavailable.iter().any(|n| !needed_undecided(n))
        {
            1
        } else if self.builds_here == BuildsHere::Undecided
            || gated().any(|c| c.state == FeatureState::Undecided)
            || (self.builds_here == BuildsHere::Yes && gated().any(|c| c.state == FeatureState::NotAssessed))
            || !self.needed_unavailable.is_empty()
        {
            2
        } else {
            0
        }
    }

    /// The summary for the terminal.
    pub fn render(&self) -> String {
        let missing: Vec<&Capability> =
            self.missing_capabilities.iter().filter_map(|n| self.capabilities.get(n)).collect();
        let mut out = match self.elements {
            ElementsBuild::Every => {
                "BuildStream builds here: yes — every element that builds in BuildStream's local sandbox builds here\n".to_string()
            }
            ElementsBuild::OnlyWithout => {
                let names: Vec<&str> = missing.iter().map(|c| c.facility.as_str()).collect();
                format!("BuildStream builds here: only elements that do not use {}\n", names.join(", "))
            }
            ElementsBuild::None => "BuildStream builds here: NO — no element builds here\n".to_string(),
            ElementsBuild::Hang => {
                "BuildStream builds here: NO — elements hang: the server never finishes an action shaped like BuildStream's (see the hang risks)\n".to_string()
            }
            ElementsBuild::Undecided if self.builds_here == BuildsHere::Yes => {
                "BuildStream builds here: undecided (a sandbox capability check could not decide)\n".to_string()
            }
            ElementsBuild::Undecided => "BuildStream builds here: undecided (a blocker check could not decide)\n".to_string(),
            ElementsBuild::NotAssessed => {
                "BuildStream builds here: not assessed (no blocker among the checks run, but the run left out checks of the buildstream profile)\n".to_string()
            }
        };
        if self.builds_here == BuildsHere::Yes {
            if !missing.is_empty() {
                out.push_str("  sandbox capabilities missing (elements using them fail):\n");
                for c in &missing {
                    let ids: Vec<&str> = c.checks.iter().map(|f| f.id.as_str()).collect();
                    let gate = if c.gated { "" } else { "; not gated (--needs-only)" };
                    out.push_str(&format!("    {}: {} ({}{gate})\n", c.facility, c.used_by, ids.join(", ")));
                }
            }
            for c in self.capabilities.values().filter(|c| c.state == FeatureState::Undecided) {
                let why = c.checks.first().map(|f| f.reason.as_str()).unwrap_or_default();
                out.push_str(&format!("  sandbox capability undecided: {} ({why})\n", c.facility));
            }
            let present: Vec<&str> =
                self.capabilities.values().filter(|c| c.state.usable()).map(|c| c.facility.as_str()).collect();
            if !present.is_empty() {
                out.push_str(&format!("  sandbox capabilities present: {}\n", present.join(", ")));
            }
        }
        let list = |title: &str, items: &[Finding], out: &mut String| {
            if !items.is_empty() {
                out.push_str(&format!("  {title}:\n"));
                for f in items {
                    out.push_str(&format!("    {} {}: {}\n", f.verdict, f.id, f.reason));
                }
            }
        };
        let (own, following): (Vec<Finding>, Vec<Finding>) =
            self.blockers.iter().cloned().partition(|f| f.follows_from.is_none());
        list("blockers (root causes first)", &own, &mut out);
        let mut roots: Vec<&String> = Vec::new();
        for root in following.iter().filter_map(|f| f.follows_from.as_ref()) {
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        for root in roots {
            let ids: Vec<&str> =
                following.iter().filter(|f| f.follows_from.as_ref() == Some(root)).map(|f| f.id.as_str()).collect();
            if !ids.is_empty() {
                out.push_str(&format!(
                    "    … and {} more that follow from {root} (their commands did not run from the input root): {}\n",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        list("undecided blockers", &self.undecided, &mut out);
        if !self.not_assessed.is_empty() {
            out.push_str("  not assessed by this run:\n");
            for f in &self.not_assessed {
                out.push_str(&format!("    {}: {}\n", f.id, f.reason));
            }
        }
        let (weakened, unavailable): (Vec<_>, Vec<_>) = self
            .features
            .iter()
            .filter(|(_, f)| !f.state.usable() && f.state != FeatureState::NotAssessed)
            .partition(|(n, _)| self.guarantees_weakened.contains(n));
        let feature_lines = |features: Vec<(&String, &Feature)>, out: &mut String| {
            for (name, f) in features {
                let ids: Vec<&str> =
                    f.checks.iter().filter(|c| c.verdict != VerdictKind::Skip).map(|c| c.id.as_str()).collect();
                out.push_str(&format!("    {name}: {} ({})\n", f.state.label(), ids.join(", ")));
            }
        };
        if !unavailable.is_empty() {
            out.push_str("  features unavailable (only elements using them are affected):\n");
            feature_lines(unavailable, &mut out);
        }
        if !weakened.is_empty() {
            out.push_str(
                "  guarantees not given (elements still build, less hermetically than in BuildStream's sandbox; only one that tests for them fails):\n",
            );
            feature_lines(weakened, &mut out);
        }
        let available: Vec<&str> =
            self.features.iter().filter(|(_, f)| f.state.usable()).map(|(n, _)| n.as_str()).collect();
        if !available.is_empty() {
            out.push_str(&format!("  features available: {}\n", available.join(", ")));
        }
        let (masked, skipped): (Vec<_>, Vec<_>) = self
            .features
            .iter()
            .filter(|(_, f)| f.state == FeatureState::NotAssessed)
            .partition(|(_, f)| f.follows_from.is_some());
        for (name, f) in skipped {
            let why = f.checks.first().map(|c| c.reason.as_str()).unwrap_or_default();
            out.push_str(&format!("  feature not assessed: {name} ({why})\n"));
        }
        let masked_capabilities: Vec<&str> =
            self.capabilities.values().filter(|c| c.follows_from.is_some()).map(|c| c.facility.as_str()).collect();
        if let Some(root) = masked.first().and_then(|(_, f)| f.follows_from.as_deref()) {
            let names: Vec<&str> = masked.iter().map(|(n, _)| n.as_str()).collect();
            out.push_str(&format!("  features not assessed: follows from {root}: {}\n", names.join(", ")));
        }
        if let Some(root) = self.capabilities.values().find_map(|c| c.follows_from.as_deref()) {
            out.push_str(&format!(
                "  sandbox capabilities not assessed: follows from {root}: {}\n",
                masked_capabilities.join(", ")
            ));
        }
        if !self.hang_risks.is_empty() {
            out.push_str(
                "  hang risks (requests left queued, or requeued for ever, instead of answered; bst would wait for ever):\n",
            );
            for f in &self.hang_risks {
                out.push_str(&format!("    {}: {}\n", f.id, f.reason));
            }
        }
        if !self.spec_deviations.is_empty() {
            let ids: Vec<&str> = self.spec_deviations.iter().map(|f| f.id.as_str()).collect();
            out.push_str(&format!("  spec deviations BuildStream does not rely on: {}\n", ids.join(", ")));
        }
        if !self.needed_unavailable.is_empty() {
            out.push_str(&format!("  needed (--needs) but unavailable: {}\n", self.needed_unavailable.join(", ")));
        }
        // Ids, feature names and reasons may come from suite files or a JSON
        // report: shown through the one sanitiser like every other text.
        crate::text::printable(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::fixtures::{result, summary};
    use crate::verdict::Verdict;

    #[test]
    fn spec_failures_do_not_block_and_refusals_are_told_apart() {
        let s = summary(vec![
            result("input-root.root-entries", "blocker", Verdict::pass("ok").with_outcome(OutcomeClass::Completed)),
            result("protocol.missing-input-code", "spec", Verdict::new(VerdictKind::Fail, "INTERNAL")),
            result(
                "sandbox.unix-uid",
                "feature:build-uid",
                Verdict::pass("rejected").with_outcome(OutcomeClass::Rejected),
            ),
            result(
                "outputs.mtime",
                "feature:workspaces",
                Verdict::new(VerdictKind::Warn, "constant").with_outcome(OutcomeClass::Completed),
            ),
            result("platform.foreign-isa", "blocker", Verdict::pass("queued").with_outcome(OutcomeClass::Queued)),
        ]);
        let r = assess(&s, &[]);
        assert_eq!(r.builds_here, BuildsHere::Yes);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.features["build-uid"].state, FeatureState::RefusedCleanly);
        assert_eq!(r.features["workspaces"].state, FeatureState::Broken);
        assert_eq!(r.hang_risks.len(), 1);
        assert_eq!(r.spec_deviations.len(), 1);
        let needing = assess(&s, &["build-uid".to_string()]);
        assert_eq!((needing.exit_code(), needing.needed_unavailable.clone()), (1, vec!["build-uid".to_string()]));
        assert!(r.render().contains("build-uid: refused cleanly (sandbox.unix-uid)"), "{}", r.render());
    }

    #[test]
    fn a_required_refusal_means_the_feature_works_and_queued_means_it_hangs() {
        let mut answered = result(
            "platform.unsatisfiable-answered",
            "feature:other-platforms",
            Verdict::pass("failed").with_outcome(OutcomeClass::Failed),
        );
        answered.refusal_required = true;
        let r = assess(&summary(vec![answered.clone()]), &[]);
        assert_eq!(r.features["other-platforms"].state, FeatureState::Available);
        answered.verdict = Verdict::new(VerdictKind::Warn, "queued").with_outcome(OutcomeClass::Queued);
        let r = assess(&summary(vec![answered]), &[]);
        assert_eq!((r.features["other-platforms"].state, r.hang_risks.len()), (FeatureState::Hangs, 1));
    }

    #[test]
    fn a_blocker_never_finished_means_elements_hang_whatever_else_failed() {
        // Buildfarm with its worker's defaults: no chroot, and the action
        // shaped like BuildStream's requeued for ever (recorded as queued).
        let s = summary(vec![
            result("input-root.root-entries", "blocker", Verdict::new(VerdictKind::Fail, "host /")),
            result(
                "outputs.escaping-paths",
                "blocker",
                Verdict::new(VerdictKind::Fail, "requeued").with_outcome(OutcomeClass::Queued),
            ),
        ]);
        let r = assess(&s, &[]);
        assert_eq!((r.builds_here, r.elements, r.exit_code()), (BuildsHere::No, ElementsBuild::Hang, 1));
        assert_eq!(r.hang_risks.len(), 1);
        // Not folded under the missing chroot: the hang is the server's own.
        assert_eq!(r.blockers[1].follows_from, None);
        assert!(r.render().contains("NO — elements hang"), "{}", r.render());
        // A blocker that came back wrong is no hang.
        let s = summary(vec![result(
            "outputs.escaping-paths",
            "blocker",
            Verdict::new(VerdictKind::Fail, "refused").with_outcome(OutcomeClass::Failed),
        )]);
        assert_eq!(assess(&s, &[]).elements, ElementsBuild::None);
    }

    #[test]
    fn blockers_fail_the_gate_root_causes_first_and_errors_leave_it_undecided() {
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let s = summary(vec![
            result("input-root.working-directory", "blocker", ran(Verdict::new(VerdictKind::Fail, "elsewhere"))),
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
        ]);
        let r = assess(&s, &[]);
        assert_eq!((r.builds_here, r.elements, r.exit_code()), (BuildsHere::No, ElementsBuild::None, 1));
        assert_eq!(r.blockers[0].id, "input-root.root-entries");
        assert_eq!(r.blockers[1].follows_from.as_deref(), Some("input-root.root-entries"));
        assert!(r.render().contains("NO — no element builds here"), "{}", r.render());
        assert!(
            r.render().contains(
                "    … and 1 more that follow from input-root.root-entries (their commands did not run from the input root): input-root.working-directory\n"
            ),
            "{}",
            r.render()
        );
        // What ran outside BuildStream's sandbox is not assessed; a refusal
        // or a hang came before anything ran and stands.
        let mut s = summary(vec![
            result("input-root.root-entries", "blocker", Verdict::new(VerdictKind::Fail, "host /")),
            result("outputs.on-failure", "feature:failed-build-artifacts", ran(Verdict::pass("ok"))),
            result(
                "input-root.mtime-applied",
                "feature:workspaces",
                ran(Verdict::new(VerdictKind::Warn, "absolute path")),
            ),
            result("sandbox.dev-shm-writable", "feature:shared-memory", ran(Verdict::pass("host /dev/shm"))),
            result(
                "platform.unsatisfiable-answered",
                "feature:other-platforms",
                Verdict::new(VerdictKind::Warn, "queued").with_outcome(OutcomeClass::Queued),
            ),
        ]);
        s.results[4].refusal_required = true;
        let mut answered = result(
            "platform.foreign-os-answered",
            "feature:stream-resumption",
            Verdict::pass("refused").with_outcome(OutcomeClass::Failed),
        );
        answered.refusal_required = true;
        s.results.push(answered);
        s.results.push(result(
            "protocol.failing-result-not-reused",
            "feature:retry-failed",
            Verdict::new(VerdictKind::Warn, "replayed").with_outcome(OutcomeClass::Completed),
        ));
        let r = assess(&s, &[]);
        assert_eq!(r.features["failed-build-artifacts"].state, FeatureState::NotAssessed);
        assert_eq!(r.features["workspaces"].follows_from.as_deref(), Some("input-root.root-entries"));
        assert_eq!(r.capabilities["shared-memory"].state, FeatureState::NotAssessed);
        assert_eq!(r.features["other-platforms"].state, FeatureState::Hangs);
        assert_eq!(r.features["stream-resumption"].state, FeatureState::Available);
        assert_eq!(r.features["retry-failed"].state, FeatureState::Broken);
        let text = r.render();
        assert!(
            text.contains(
                "features not assessed: follows from input-root.root-entries: failed-build-artifacts, workspaces"
            ),
            "{text}"
        );
        assert!(
            text.contains("sandbox capabilities not assessed: follows from input-root.root-entries: /dev/shm"),
            "{text}"
        );
        assert!(text.contains("features available: stream-resumption\n"), "{text}");
        let s = summary(vec![result("outputs.escaping-paths", "blocker", Verdict::error("unreachable"))]);
        assert_eq!(assess(&s, &[]).exit_code(), 2);
        let s = summary(vec![result("sandbox.uid-root", "blocker", Verdict::error("unreachable"))]);
        let r = assess(&s, &[]);
        assert_eq!((r.builds_here, r.elements, r.exit_code()), (BuildsHere::Yes, ElementsBuild::Undecided, 2));
    }

    /// Buildbarn's chroot runner: the root is right, /proc, /dev/fd and
    /// /dev/shm are missing. Plain elements build; their users fail.
    fn chroot_without_mounts() -> RunSummary {
        let pass = || Verdict::pass("ok").with_outcome(OutcomeClass::Completed);
        let fail = |why: &str| Verdict::new(VerdictKind::Fail, why).with_outcome(OutcomeClass::Completed);
        summary(vec![
            result("input-root.root-entries", "blocker", pass()),
            result("sandbox.proc-own-processes", "blocker", fail("/proc is empty")),
            result("sandbox.dev-nodes", "blocker", pass()),
            result("sandbox.dev-fd", "blocker", fail("no /dev/fd")),
            result(
                "sandbox.dev-shm-writable",
                "feature:shared-memory",
                Verdict::new(VerdictKind::Warn, "no /dev/shm").with_outcome(OutcomeClass::Completed),
            ),
            result("sandbox.tmp-writable-empty", "blocker", pass()),
            result("sandbox.uid-root", "blocker", pass()),
            result("sandbox.unix-uid", "feature:build-uid", pass()),
            result(
                "sandbox.subtree-read-only",
                "feature:read-only-root",
                Verdict::new(VerdictKind::Warn, "writable").with_outcome(OutcomeClass::Completed),
            ),
        ])
    }

    #[test]
    fn masking_is_per_check_and_a_finding_of_its_own_stands() {
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let s = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("outputs.on-failure", "feature:failed-build-artifacts", ran(Verdict::pass("ok"))),
            result(
                "protocol.failed-command-is-a-result",
                "feature:failed-build-artifacts",
                ran(Verdict::new(VerdictKind::Fail, "no result")),
            ),
            result("outputs.mtime", "feature:incremental-workspaces", ran(Verdict::new(VerdictKind::Fail, "x"))),
        ]);
        let r = assess(&s, &[]);
        // The protocol check judged the API, which the chroot does not change.
        let artifacts = &r.features["failed-build-artifacts"];
        assert_eq!((artifacts.state, artifacts.follows_from.as_deref()), (FeatureState::Broken, None));
        // A check that only ran outside the sandbox says nothing of its own.
        let mtime = &r.features["incremental-workspaces"];
        assert_eq!(
            (mtime.state, mtime.follows_from.as_deref()),
            (FeatureState::NotAssessed, Some("input-root.root-entries"))
        );
    }

    /// Buildfarm: the worker refuses to create the exec dir of an action
    /// with an absolute symlink, so that action fails before its command
    /// starts. Whatever the root shows, that is a limitation of its own.
    #[test]
    fn an_outputs_failure_judged_from_the_working_directory_is_its_own_root_cause() {
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let from_workdir = |mut r: CheckResult| {
            r.independent_of_root = true;
            r
        };
        let s = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            from_workdir(result(
                "outputs.whole-input-root",
                "blocker",
                ran(Verdict::new(VerdictKind::Fail, "a DirectoryNode without a digest")),
            )),
            from_workdir(result("outputs.on-failure", "feature:failed-build-artifacts", ran(Verdict::pass("ok")))),
        ]);
        let r = assess(&s, &[]);
        assert_eq!(r.blockers.iter().find(|f| f.id == "outputs.whole-input-root").unwrap().follows_from, None);
        // Its PASS says nothing of elements: none builds there.
        assert_eq!(r.root_causes.get("outputs.on-failure").map(String::as_str), Some("input-root.root-entries"));
        assert_eq!(r.features["failed-build-artifacts"].state, FeatureState::NotAssessed);
    }

    #[test]
    fn a_root_cause_still_executing_masks_nothing_and_a_queued_refusal_is_no_hang() {
        let executing = Verdict::new(VerdictKind::Fail, "still executing").with_outcome(OutcomeClass::Executing);
        let s = summary(vec![
            result("input-root.root-entries", "blocker", executing),
            result(
                "input-root.marker-file",
                "blocker",
                Verdict::new(VerdictKind::Fail, "host /etc").with_outcome(OutcomeClass::Completed),
            ),
        ]);
        assert!(assess(&s, &[]).root_causes.is_empty());
        let mut refusal = result(
            "platform.foreign-isa",
            "blocker",
            Verdict::new(VerdictKind::Fail, "ran, then requeued").with_outcome(OutcomeClass::Queued),
        );
        refusal.refusal_required = true;
        let r = assess(&summary(vec![refusal]), &[]);
        assert_eq!(r.builds_here, BuildsHere::No);
        assert_ne!(r.elements, ElementsBuild::Hang);
    }

    #[test]
    fn a_check_whose_command_never_started_is_its_own_root_cause() {
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let refused = Verdict::new(VerdictKind::Fail, "expected completed, got failed: Error creating exec dir")
            .with_outcome(OutcomeClass::Failed);
        let s = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("input-root.absolute-symlink", "blocker", refused.clone()),
            result("input-root.marker-file", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
        ]);
        let r = assess(&s, &[]);
        let ids: Vec<(&str, Option<&str>)> =
            r.blockers.iter().map(|f| (f.id.as_str(), f.follows_from.as_deref())).collect();
        assert_eq!(
            ids,
            [
                ("input-root.root-entries", None),
                ("input-root.absolute-symlink", None),
                ("input-root.marker-file", Some("input-root.root-entries")),
            ]
        );
        assert_eq!(
            r.root_causes,
            BTreeMap::from([("input-root.marker-file".to_string(), "input-root.root-entries".to_string())])
        );
        let text = r.render();
        assert!(text.contains("    FAIL input-root.absolute-symlink: expected completed"), "{text}");
        // Alone, it is the one root cause, and masks nothing.
        let s = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::pass("ok"))),
            result("input-root.absolute-symlink", "blocker", refused),
            result("outputs.mtime", "feature:incremental-workspaces", ran(Verdict::pass("ok"))),
        ]);
        let r = assess(&s, &[]);
        assert_eq!((r.blockers.len(), r.blockers[0].follows_from.as_deref()), (1, None));
        assert!(r.root_causes.is_empty(), "{:?}", r.root_causes);
        assert_eq!(r.features["incremental-workspaces"].state, FeatureState::Available);
        assert!(!r.render().contains("follow"), "{}", r.render());
    }

    /// A worker that does not chroot: commands run from the host's `/`.
    /// What they saw follows from the root; what did not rest on it stands.
    #[test]
    fn without_a_chroot_only_what_commands_saw_follows_from_the_root() {
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let mut foreign = result(
            "platform.foreign-isa",
            "blocker",
            Verdict::new(VerdictKind::Fail, "expected rejected | failed | queued, got executing")
                .with_outcome(OutcomeClass::Executing),
        );
        foreign.refusal_required = true;
        let s = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("input-root.marker-file", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
            result("input-root.path-lookup", "blocker", ran(Verdict::pass("ok"))),
            // A CAS round trip runs no command: nothing shows it rests on the root.
            result("cas.bytestream-roundtrip", "blocker", Verdict::new(VerdictKind::Fail, "bytes differ")),
            foreign,
            // The action cache is the server's API, whatever the command saw.
            result("protocol.action-cache-miss", "blocker", ran(Verdict::new(VerdictKind::Fail, "stale hit"))),
            result("sandbox.proc-own-processes", "blocker", ran(Verdict::pass("host /proc"))),
            result("input-root.mtime-applied", "feature:workspaces", ran(Verdict::new(VerdictKind::Warn, "x"))),
            result("cas.find-missing", "spec", ran(Verdict::pass("ok"))),
        ]);
        let r = assess(&s, &[]);
        let root = || "input-root.root-entries".to_string();
        assert_eq!(
            r.root_causes,
            BTreeMap::from([
                ("input-root.marker-file".to_string(), root()),
                ("input-root.mtime-applied".to_string(), root()),
                ("input-root.path-lookup".to_string(), root()),
                ("sandbox.proc-own-processes".to_string(), root()),
            ])
        );
        let own: Vec<&str> = r.blockers.iter().filter(|f| f.follows_from.is_none()).map(|f| f.id.as_str()).collect();
        assert_eq!(
            own,
            [
                "input-root.root-entries",
                "platform.foreign-isa",
                "cas.bytestream-roundtrip",
                "protocol.action-cache-miss"
            ]
        );
        assert_eq!(r.capabilities["proc"].follows_from.as_deref(), Some("input-root.root-entries"));
        assert_eq!(r.capabilities["proc"].checks[0].follows_from.as_deref(), Some("input-root.root-entries"));
        assert_eq!(r.features["workspaces"].follows_from.as_deref(), Some("input-root.root-entries"));
        // A report of a harness that recorded no outcome class: the root's
        // FAIL still says where commands ran; a built-in consequence without
        // one shows no command, so it stands.
        let mut older = s.clone();
        older.results[0].verdict.outcome = None;
        older.results[6].verdict.outcome = None;
        let r = assess(&older, &[]);
        assert_eq!(r.root_causes.get("input-root.marker-file").map(String::as_str), Some("input-root.root-entries"));
        assert_eq!(r.capabilities["proc"].state, FeatureState::Available);
        // Nor does a root whose own command never started mask anything.
        let mut unstarted = s;
        unstarted.results[0].verdict.outcome = Some(OutcomeClass::Failed);
        let r = assess(&unstarted, &[]);
        assert!(r.root_causes.is_empty() && r.blockers.iter().all(|f| f.follows_from.is_none()), "{r:?}");
        assert_eq!(r.features["workspaces"].state, FeatureState::Broken);
    }

    #[test]
    fn a_skipped_capability_check_is_not_a_present_capability() {
        let pass = || Verdict::pass("ok").with_outcome(OutcomeClass::Completed);
        let mut results: Vec<CheckResult> = CAPABILITIES
            .iter()
            .map(|c| result(c.check, "blocker", if c.name == "dev-fd" { Verdict::skip("not here") } else { pass() }))
            .collect();
        results.push(result("input-root.root-entries", "blocker", pass()));
        let r = assess(&summary(results), &[]);
        assert_eq!((r.builds_here, r.elements), (BuildsHere::Yes, ElementsBuild::Undecided));
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn missing_capabilities_fail_only_the_elements_using_them() {
        let mut s = chroot_without_mounts();
        let r = assess(&s, &[]);
        assert_eq!((r.builds_here, r.elements), (BuildsHere::Yes, ElementsBuild::OnlyWithout));
        assert_eq!(r.missing_capabilities, ["dev-fd", "proc", "shared-memory"]);
        assert!(r.blockers.is_empty() && !r.features.contains_key("shared-memory"), "{r:?}");
        let text = r.render();
        assert!(
            text.contains(
                "BuildStream builds here: only elements that do not use /dev/fd and /dev/std*, /proc, /dev/shm"
            ),
            "{text}"
        );
        assert!(
            text.contains("/proc: tools that locate themselves through /proc/self/exe — clang, cargo, rustc"),
            "{text}"
        );
        assert!(text.contains("sandbox capabilities present: /dev nodes, uid 0, writable empty /tmp"), "{text}");
        assert_eq!(r.guarantees_weakened, ["read-only-root"]);
        assert!(
            text.contains("guarantees not given (elements still build, less hermetically than in BuildStream's sandbox; only one that tests for them fails):\n    read-only-root: ignored silently or broken (sandbox.subtree-read-only)"),
            "{text}"
        );
        assert!(!text.contains("features unavailable"), "{text}");
        // Every capability gates by default.
        assert_eq!(r.exit_code(), 1);
        // --needs-only: only what the user names gates.
        s.needs_only = true;
        assert_eq!(assess(&s, &[]).exit_code(), 0);
        assert_eq!(assess(&s, &["dev-nodes".into(), "root-uid".into()]).exit_code(), 0);
        let needing_proc = assess(&s, &["proc".into()]);
        assert_eq!((needing_proc.exit_code(), needing_proc.needed_unavailable.clone()), (1, vec!["proc".to_string()]));
        assert!(assess(&s, &[]).render().contains("not gated (--needs-only)"));
    }

    #[test]
    fn every_capability_present_means_every_element_builds() {
        let mut s = chroot_without_mounts();
        for r in &mut s.results {
            r.verdict = Verdict::pass("ok").with_outcome(OutcomeClass::Completed);
        }
        let r = assess(&s, &["shared-memory".into()]);
        assert_eq!((r.elements, r.exit_code()), (ElementsBuild::Every, 0));
        assert!(r.render().starts_with("BuildStream builds here: yes — every element"), "{}", r.render());
    }

    #[test]
    fn skipped_checks_are_not_assessed_never_available() {
        let s = summary(vec![
            result("input-root.root-entries", "blocker", Verdict::pass("ok").with_outcome(OutcomeClass::Completed)),
            result("protocol.idle-stream-survives", "blocker", Verdict::skip("opt-in: run with --long")),
            result("sandbox.remote-apis-socket", "feature:remote-apis-socket", Verdict::skip("no socket here")),
        ]);
        let r = assess(&s, &[]);
        assert_eq!(r.builds_here, BuildsHere::Yes);
        assert_eq!(r.not_assessed[0].id, "protocol.idle-stream-survives");
        assert_eq!(r.features["remote-apis-socket"].state, FeatureState::NotAssessed);
        let text = r.render();
        assert!(text.contains("feature not assessed: remote-apis-socket (no socket here)"), "{text}");
        assert!(!text.contains("features available"), "{text}");
        // Needing a feature nobody could assess leaves the gate undecided, not failed.
        assert_eq!(assess(&s, &["remote-apis-socket".to_string()]).exit_code(), 2);
    }
}
