//! Remediation hints: how a FAIL or WARN is fixed on a server the harness
//! recognises. The knowledge is data (`suites/servers/hints.yaml`), one entry
//! per server, so no check carries server-specific code.

use serde::Deserialize;

use crate::verdict::{RunSummary, VerdictKind};

const HINTS_YAML: &str = include_str!("../suites/servers/hints.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HintFile {
    servers: std::collections::BTreeMap<String, Server>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Server {
    description: String,
    /// Texts whose presence in a verdict's reason or evidence identifies the server.
    recognise: Vec<String>,
    hints: Vec<Hint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hint {
    /// Check ids; one ending in `.` names a whole suite.
    checks: Vec<String>,
    /// Applies only when this check FAILed too: the root cause the hint fixes.
    #[serde(default)]
    when_failed: Option<String>,
    hint: String,
}

impl Hint {
    fn applies_to(&self, id: &str) -> bool {
        self.checks.iter().any(|c| if c.ends_with('.') { id.starts_with(c.as_str()) } else { id == c })
    }
}

fn load() -> Result<HintFile, String> {
    serde_yaml_ng::from_str(HINTS_YAML).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        format!("suites/servers/hints.yaml:{line}: {e}")
    })
}

/// The server a run was against: the one the cluster says it is, or the first
/// whose telltale text appears in some verdict.
fn recognise<'a>(file: &'a HintFile, summary: &RunSummary, known: Option<&str>) -> Option<(&'a str, &'a Server)> {
    if let Some(name) = known {
        return file.servers.get_key_value(name).map(|(k, v)| (k.as_str(), v));
    }
    let texts: Vec<&str> = summary
        .results
        .iter()
        .flat_map(|r| {
            std::iter::once(r.verdict.reason.as_str()).chain(r.verdict.evidence.iter().map(|e| e.observed.as_str()))
        })
        .collect();
    file.servers
        .iter()
        .find(|(_, s)| s.recognise.iter().any(|needle| texts.iter().any(|t| t.contains(needle.as_str()))))
        .map(|(k, v)| (k.as_str(), v))
}

/// Recognises the server and attaches the matching hint to every FAIL and
/// WARN. `known` is the server a harness-started cluster runs, if any.
pub fn attach(summary: &mut RunSummary, known: Option<&str>) {
    let Ok(file) = load() else { return };
    let Some((name, server)) = recognise(&file, summary, known) else { return };
    summary.server = Some(format!("{name}: {}", server.description));
    let failed: Vec<String> =
        summary.results.iter().filter(|r| r.verdict.kind == VerdictKind::Fail).map(|r| r.id.clone()).collect();
    for r in &mut summary.results {
        if matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn) {
            r.hint = server
                .hints
                .iter()
                .filter(|h| h.when_failed.as_ref().is_none_or(|id| failed.contains(id)))
                .find(|h| h.applies_to(&r.id))
                .map(|h| crate::text::one_line(&h.hint, 400));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::fixtures::{self, summary};
    use crate::verdict::{CheckResult, Verdict};

    fn result(id: &str, kind: VerdictKind, reason: &str) -> CheckResult {
        fixtures::result(id, "blocker", Verdict::new(kind, reason))
    }

    #[test]
    fn recognised_from_error_text_and_hinted_by_root_cause() {
        let mut s = summary(vec![
            result(
                "platform.unknown-property",
                VerdictKind::Pass,
                "rejected: FailedPrecondition: No workers exist for instance name prefix \"\"",
            ),
            result("sandbox.proc-own-processes", VerdictKind::Fail, "/proc is not a procfs"),
            result("sandbox.environment-exact", VerdictKind::Warn, "extra variables"),
        ]);
        attach(&mut s, None);
        assert!(s.server.as_deref().unwrap_or_default().starts_with("buildbarn"));
        assert!(s.results[1].hint.as_deref().unwrap_or_default().contains("issue 115"));
        assert_eq!(s.results[0].hint, None, "no hint on a PASS");
        assert_eq!(s.results[2].hint, None, "no hint that does not fix it");

        // With the input root not staged as /, the root cause's hint goes to
        // the checks a chroot fixes, and only to them.
        s.results.push(result("input-root.root-entries", VerdictKind::Fail, "host"));
        s.results.push(result("sandbox.tmp-writable-empty", VerdictKind::Fail, "host files"));
        attach(&mut s, None);
        assert!(s.results[4].hint.as_deref().unwrap_or_default().contains("chrootIntoInputRoot"));
        assert!(s.results[1].hint.as_deref().unwrap_or_default().contains("issue 115"), "a chroot gives no /proc");
    }

    #[test]
    fn buildfarm_is_recognised_by_its_operation_names_and_hinted() {
        let mut s = summary(vec![
            result("input-root.root-entries", VerdictKind::Fail, "host"),
            result("sandbox.tmp-writable-empty", VerdictKind::Fail, "host files"),
            result("protocol.timeout-status", VerdictKind::Fail, "completed"),
        ]);
        s.results[2].verdict.evidence.push(crate::verdict::Evidence {
            label: "operation".into(),
            expected: None,
            observed: "shard/executions/6d8922d4".into(),
        });
        attach(&mut s, None);
        assert!(s.server.as_deref().unwrap_or_default().starts_with("buildfarm"), "{:?}", s.server);
        assert!(s.results[1].hint.as_deref().unwrap_or_default().contains("execution wrapper"));
        assert!(s.results[2].hint.as_deref().unwrap_or_default().contains("pads every action timeout"));
    }

    #[test]
    fn unrecognised_servers_get_no_hints() {
        let mut s = summary(vec![result("sandbox.no-network", VerdictKind::Fail, "eth0")]);
        attach(&mut s, None);
        assert_eq!((s.server, s.results[0].hint.clone()), (None, None));
    }

    #[test]
    fn bundled_hints_load_and_name_known_checks() {
        let file = load().expect("hints load");
        let (_, checks) = crate::session::select_checks(&crate::session::Selection {
            profile: crate::session::Profile::All,
            ..Default::default()
        })
        .expect("suites load");
        for (name, server) in &file.servers {
            assert!(!server.recognise.is_empty(), "{name} has no telltale text");
            for hint in &server.hints {
                for c in hint.checks.iter().chain(&hint.when_failed) {
                    assert!(
                        checks.iter().any(|k| if c.ends_with('.') { k.id.starts_with(c.as_str()) } else { &k.id == c }),
                        "{name}: hint names no check: {c}"
                    );
                }
            }
        }
    }
}
