//! The answer a BuildStream user runs the suites for: will BuildStream build
//! on this cluster, which of its features are unavailable and how, and which
//! requests would hang. A pure function of the verdicts and each check's
//! impact (`impact:` in the suites).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::suite::{Impact, OutcomeClass};
use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Whether BuildStream builds here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildsHere {
    Yes,
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

/// One check behind a finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub verdict: VerdictKind,
    pub reason: String,
    /// The root cause this finding probably follows from (then it is no
    /// separate problem): with the input root not staged as `/`, nothing run
    /// from it can be judged on its own.
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
    pub state: FeatureState,
    pub checks: Vec<Finding>,
}

/// The readiness answer.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub builds_here: BuildsHere,
    /// Blocker checks that FAILed or WARNed, root causes (the input root, the
    /// sandbox) first.
    pub blockers: Vec<Finding>,
    /// Blocker checks that could not be decided.
    pub undecided: Vec<Finding>,
    /// Blocker checks skipped (opt-in, or not applicable here), with why.
    pub not_assessed: Vec<Finding>,
    pub features: BTreeMap<String, Feature>,
    /// Requests that stayed queued instead of being answered.
    pub hang_risks: Vec<Finding>,
    /// FAIL/WARN of checks BuildStream does not rely on.
    pub spec_deviations: Vec<Finding>,
    /// Features the user said they need (`--needs`) that are not available.
    pub needed_unavailable: Vec<String>,
}

/// The check every action's shape depends on: when the input root is not `/`,
/// the other blockers are most likely its consequences.
const ROOT_CAUSE: &str = "input-root.root-entries";

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

/// Assesses a run. `needs` are features the user requires (`--needs`).
pub fn assess(summary: &RunSummary, needs: &[String]) -> Readiness {
    let mut blockers = Vec::new();
    let mut undecided = Vec::new();
    let mut not_assessed = Vec::new();
    let mut features: BTreeMap<String, Feature> = BTreeMap::new();
    let mut hang_risks = Vec::new();
    let mut spec_deviations = Vec::new();
    let mut assessed = false;
    for r in &summary.results {
        let unmet = matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn);
        if r.verdict.outcome == Some(OutcomeClass::Queued) {
            hang_risks.push(Finding::of(r));
        }
        match &r.impact {
            Impact::Blocker => {
                assessed |= r.verdict.kind != VerdictKind::Skip;
                if unmet {
                    blockers.push(Finding::of(r));
                } else if r.verdict.kind == VerdictKind::Error {
                    undecided.push(Finding::of(r));
                } else if r.verdict.kind == VerdictKind::Skip {
                    not_assessed.push(Finding::of(r));
                }
            }
            Impact::Feature(name) => {
                let state = feature_state(r);
                let f = features.entry(name.clone()).or_insert(Feature { state, checks: Vec::new() });
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
    blockers.sort_by_key(|f| root_cause_rank(&f.id));
    if let Some(root) = blockers.iter().find(|f| f.id == ROOT_CAUSE).map(|f| f.id.clone()) {
        for f in blockers.iter_mut().filter(|f| f.id != root) {
            f.follows_from = Some(root.clone());
        }
    }
    let builds_here = if !blockers.is_empty() {
        BuildsHere::No
    } else if !undecided.is_empty() {
        BuildsHere::Undecided
    } else if !assessed || summary.partial {
        BuildsHere::NotAssessed
    } else {
        BuildsHere::Yes
    };
    let needed_unavailable =
        needs.iter().filter(|n| features.get(n.as_str()).is_none_or(|f| !f.state.usable())).cloned().collect();
    Readiness {
        builds_here,
        blockers,
        undecided,
        not_assessed,
        features,
        hang_risks,
        spec_deviations,
        needed_unavailable,
    }
}

impl Readiness {
    /// Exit status of a run gated on BuildStream: 1 when it does not build
    /// (or a needed feature is unavailable), 2 when that is undecided, else 0.
    pub fn exit_code(&self) -> i32 {
        let needed_undecided = |n: &String| {
            self.features.get(n).is_some_and(|f| matches!(f.state, FeatureState::Undecided | FeatureState::NotAssessed))
        };
        if self.builds_here == BuildsHere::No || self.needed_unavailable.iter().any(|n| !needed_undecided(n)) {
            1
        } else if self.builds_here == BuildsHere::Undecided || !self.needed_unavailable.is_empty() {
            2
        } else {
            0
        }
    }

    /// The summary for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::from(match self.builds_here {
            BuildsHere::Yes => "BuildStream builds here: yes\n",
            BuildsHere::No => "BuildStream builds here: NO\n",
            BuildsHere::Undecided => "BuildStream builds here: undecided (a blocker check could not decide)\n",
            BuildsHere::NotAssessed => {
                "BuildStream builds here: not assessed (no blocker among the checks run, but the run left out checks of the buildstream profile)\n"
            }
        });
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
        if let Some(root) = following.first().and_then(|f| f.follows_from.clone()) {
            let ids: Vec<&str> = following.iter().map(|f| f.id.as_str()).collect();
            out.push_str(&format!(
                "    … and {} more that probably follow from {root}: {}\n",
                ids.len(),
                ids.join(", ")
            ));
        }
        list("undecided blockers", &self.undecided, &mut out);
        if !self.not_assessed.is_empty() {
            out.push_str("  not assessed by this run:\n");
            for f in &self.not_assessed {
                out.push_str(&format!("    {}: {}\n", f.id, f.reason));
            }
        }
        let unavailable: Vec<_> =
            self.features.iter().filter(|(_, f)| !f.state.usable() && f.state != FeatureState::NotAssessed).collect();
        if !unavailable.is_empty() {
            out.push_str("  features unavailable (only elements using them are affected):\n");
            for (name, f) in unavailable {
                let ids: Vec<&str> =
                    f.checks.iter().filter(|c| c.verdict != VerdictKind::Skip).map(|c| c.id.as_str()).collect();
                out.push_str(&format!("    {name}: {} ({})\n", f.state.label(), ids.join(", ")));
            }
        }
        let available: Vec<&str> =
            self.features.iter().filter(|(_, f)| f.state.usable()).map(|(n, _)| n.as_str()).collect();
        if !available.is_empty() {
            out.push_str(&format!("  features available: {}\n", available.join(", ")));
        }
        for (name, f) in self.features.iter().filter(|(_, f)| f.state == FeatureState::NotAssessed) {
            let why = f.checks.first().map(|c| c.reason.as_str()).unwrap_or_default();
            out.push_str(&format!("  feature not assessed: {name} ({why})\n"));
        }
        if !self.hang_risks.is_empty() {
            out.push_str("  hang risks (requests left queued instead of answered; bst would wait for ever):\n");
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
    fn blockers_fail_the_gate_root_causes_first_and_errors_leave_it_undecided() {
        let s = summary(vec![
            result("sandbox.proc-own-processes", "blocker", Verdict::new(VerdictKind::Fail, "no procfs")),
            result("input-root.root-entries", "blocker", Verdict::new(VerdictKind::Fail, "host /")),
        ]);
        let r = assess(&s, &[]);
        assert_eq!((r.builds_here, r.exit_code()), (BuildsHere::No, 1));
        assert_eq!(r.blockers[0].id, "input-root.root-entries");
        assert_eq!(r.blockers[1].follows_from.as_deref(), Some("input-root.root-entries"));
        assert!(r.render().contains("1 more that probably follow from input-root.root-entries"), "{}", r.render());
        let s = summary(vec![result("sandbox.uid-root", "blocker", Verdict::error("unreachable"))]);
        assert_eq!(assess(&s, &[]).exit_code(), 2);
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
