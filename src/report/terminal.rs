//! The human report: one line per check, evidence under anything not PASS,
//! totals and wall time.

use crate::verdict::{CheckResult, RunSummary, VerdictKind};

fn paint(kind: VerdictKind, color: bool) -> String {
    let label = format!("{:<5}", kind.label());
    if !color {
        return label;
    }
    let code = match kind {
        VerdictKind::Pass => "32",
        VerdictKind::Fail => "31;1",
        VerdictKind::Warn => "33",
        VerdictKind::Error => "35;1",
        VerdictKind::Skip => "36",
    };
    format!("\x1b[{code}m{label}\x1b[0m")
}

/// One check's line, with evidence under anything not PASS; `indent`
/// shifts it under a root cause, `suffix` ends its line, and a hint the same
/// as `said` (its root cause's) is not repeated.
fn check_lines(
    r: &CheckResult,
    width: usize,
    color: bool,
    (indent, suffix): (&str, &str),
    said: Option<&str>,
    out: &mut String,
) {
    use super::{one_line, printable};
    out.push_str(&format!(
        "{indent}{} {:<width$}  {}  ({:.2}s){suffix}\n",
        paint(r.verdict.kind, color),
        printable(&r.id),
        one_line(&r.verdict.reason, 200),
        r.duration.as_secs_f64(),
    ));
    if r.verdict.kind != VerdictKind::Pass {
        for line in super::evidence_lines(&r.verdict.evidence) {
            out.push_str(&format!("{indent}      {line}\n"));
        }
        // A consequence's hint, when its root cause's says the same, once.
        if let Some(hint) = r.hint.as_deref().filter(|h| Some(*h) != said) {
            out.push_str(&format!("{indent}      hint: {}\n", one_line(hint, 400)));
        }
    }
}

/// Renders the whole run for a terminal; `color` adds ANSI colours (the only
/// escapes in the text: everything else passes through `printable`).
///
/// A check whose verdict follows from a root cause (`Readiness::root_causes`)
/// is shown beneath that root cause's line, indented and naming it, rather
/// than in its own place: read in order, the list gives each problem once.
pub fn render(summary: &RunSummary, color: bool) -> String {
    use super::{one_line, printable};
    let readiness = crate::readiness::assess(summary, &summary.needs);
    let width = summary.results.iter().map(|r| printable(&r.id).len()).max().unwrap_or(0);
    // A root cause is always a result of the run; should one be missing,
    // its consequences stay in their places, still naming it.
    let root_of = |r: &CheckResult| {
        readiness.root_causes.get(&r.id).filter(|root| summary.results.iter().any(|other| &other.id == *root))
    };
    let mut out = String::new();
    for r in summary.results.iter().filter(|r| root_of(r).is_none()) {
        let suffix = match readiness.root_causes.get(&r.id) {
            Some(root) => format!("  follows from {}", printable(root)),
            None => String::new(),
        };
        check_lines(r, width, color, ("", &suffix), None, &mut out);
        let consequences: Vec<&CheckResult> = summary.results.iter().filter(|c| root_of(c) == Some(&r.id)).collect();
        if !consequences.is_empty() {
            out.push_str(&format!(
                "      {} more follow from it (their commands did not run from the input root):\n",
                consequences.len()
            ));
            let suffix = format!("  follows from {}", printable(&r.id));
            for c in consequences {
                check_lines(c, width, color, ("    ", &suffix), r.hint.as_deref(), &mut out);
            }
        }
    }
    out.push_str(&totals(summary));
    out.push('\n');
    if let Some(server) = &summary.server {
        out.push_str(&format!("server recognised: {}\n", one_line(server, 200)));
    }
    if let Some(profile) = &summary.profile {
        out.push_str(&format!(
            "profile: {} (reapi-conformance {})\n",
            one_line(profile, 300),
            env!("CARGO_PKG_VERSION")
        ));
    }
    out.push_str(&readiness.render());
    out
}

/// Where the time went: start-up steps and the ten slowest checks.
pub fn timings(summary: &RunSummary) -> String {
    let mut out = format!("timings: cluster start-up {:.2}s\n", summary.startup_time.as_secs_f64());
    for step in &summary.startup_steps {
        out.push_str(&format!("  {:<24} {:>7.2}s\n", super::printable(&step.name), step.duration.as_secs_f64()));
    }
    let mut slowest: Vec<_> = summary.results.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.duration));
    out.push_str("slowest checks:\n");
    for r in slowest.iter().take(10) {
        out.push_str(&format!("  {:<44} {:>7.2}s\n", super::printable(&r.id), r.duration.as_secs_f64()));
    }
    out
}

/// `N checks: … in 1.23s against TARGET`.
pub fn totals(summary: &RunSummary) -> String {
    let n = summary.results.len();
    format!(
        "{n} checks: {} passed, {} failed, {} warned, {} errors, {} skipped in {:.2}s (cluster start-up {:.2}s) against {}{}",
        summary.count(VerdictKind::Pass),
        summary.count(VerdictKind::Fail),
        summary.count(VerdictKind::Warn),
        summary.count(VerdictKind::Error),
        summary.count(VerdictKind::Skip),
        summary.wall_time.as_secs_f64(),
        summary.startup_time.as_secs_f64(),
        // The target is a URL from a flag or a buildstream.conf, the instance a name: user text.
        super::one_line(&summary.target, 300),
        if summary.instance.is_empty() {
            String::new()
        } else {
            format!(" (instance `{}`)", super::one_line(&summary.instance, 200))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::fixtures::{result, summary};
    use crate::verdict::Verdict;

    /// Whether `text` holds a character that acts on a terminal instead of
    /// being shown (the colour escapes `render` adds itself aside).
    fn acts(text: &str) -> Option<char> {
        let bidi = |c: char| matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        text.chars().find(|&c| bidi(c) || (c.is_control() && c != '\n'))
    }

    #[test]
    fn consequences_are_listed_under_their_root_cause_naming_it() {
        use crate::suite::OutcomeClass;
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let run = summary(vec![
            result("input-root.marker-file", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
            result(
                "input-root.absolute-symlink",
                "blocker",
                Verdict::new(VerdictKind::Fail, "exec dir").with_outcome(OutcomeClass::Failed),
            ),
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("outputs.mtime", "feature:incremental-workspaces", ran(Verdict::pass("ok"))),
            result("cas.x", "spec", Verdict::pass("ok")),
        ]);
        let text = render(&run, false);
        let lines: Vec<&str> = text.lines().take(7).collect();
        assert_eq!(
            lines,
            [
                "FAIL  input-root.absolute-symlink  exec dir  (0.12s)",
                "FAIL  input-root.root-entries      host /  (0.12s)",
                "      2 more follow from it (their commands did not run from the input root):",
                "    FAIL  input-root.marker-file       host /etc  (0.12s)  follows from input-root.root-entries",
                "    PASS  outputs.mtime                ok  (0.12s)  follows from input-root.root-entries",
                "PASS  cas.x                        ok  (0.12s)",
                "5 checks: 2 passed, 3 failed, 0 warned, 0 errors, 0 skipped in 1.00s (cluster start-up 0.00s) against t",
            ],
            "{text}"
        );
        // No root cause: every check in its place, none naming one.
        let run = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::pass("ok"))),
            result("input-root.marker-file", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
        ]);
        let text = render(&run, false);
        assert!(text.starts_with("PASS  input-root.root-entries  ok  (0.12s)\nFAIL  input-root.marker-file"), "{text}");
        assert!(!text.contains("follow"), "{text}");
    }

    #[test]
    fn server_and_user_text_never_reaches_the_terminal_raw() {
        let hostile = "evil\u{202e}gnp.exe\u{2066}\u{200f}\u{061c}\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m";
        let mut failed = result(
            &format!("sandbox.x{hostile}"),
            "blocker",
            Verdict::new(VerdictKind::Fail, format!("server said {hostile}")).with(
                format!("probe.{hostile}"),
                Some(hostile.into()),
                hostile,
            ),
        );
        failed.hint = Some(format!("hint {hostile}"));
        let mut run = summary(vec![failed, result("cas.y", "spec", Verdict::skip(hostile))]);
        run.target = format!("grpc://{hostile}:1");
        run.instance = hostile.into();
        run.server = Some(hostile.into());
        run.startup_steps
            .push(crate::verdict::StartupStep { name: hostile.into(), duration: std::time::Duration::ZERO });
        run.profile = Some(format!("reapi@2026.12{hostile}"));
        let text = render(&run, false) + &timings(&run);
        assert!(text.contains("profile: reapi@2026.12evil\\u{202e}"), "{text}");
        assert_eq!(acts(&text), None, "{text}");
        assert!(text.contains("evil\\u{202e}gnp.exe\\u{2066}\\u{200f}\\u{61c}\\u{1b}]0;pwned\\u{7}"), "{text}");
        assert!(text.contains("against grpc://evil\\u{202e}"), "{text}");
        // With colour, the only escapes are the colours.
        let coloured = render(&run, true);
        let without_colours = coloured.replace("\x1b[31;1m", "").replace("\x1b[36m", "").replace("\x1b[0m", "");
        assert_eq!(acts(&without_colours), None, "{coloured}");
    }
}
