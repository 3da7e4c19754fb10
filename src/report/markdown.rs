//! A Markdown summary a server vendor can paste into a release note: the
//! counts, then one table per suite with each check's verdict and clause,
//! and `matrix`, the same verdicts side by side for several servers.

use std::collections::BTreeMap;

use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Text safe inside a Markdown table cell.
fn cell(text: &str, max: usize) -> String {
    super::one_line(text, max).replace('|', "\\|")
}

fn mark(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Pass => "PASS",
        VerdictKind::Fail => "**FAIL**",
        VerdictKind::Warn => "WARN",
        VerdictKind::Error => "ERROR",
        VerdictKind::Skip => "SKIP",
    }
}

fn count(results: &[CheckResult], kind: VerdictKind) -> usize {
    results.iter().filter(|r| r.verdict.kind == kind).count()
}

/// The summary of one run.
pub fn render(summary: &RunSummary) -> String {
    let r = &summary.results;
    let mut out = format!("# REAPI conformance: {}\n\n", cell(&summary.target, 200));
    out.push_str(&format!(
        "reapi-conformance {}: {} checks, {} passed, {} failed, {} warned, {} errors, {} skipped.\n",
        env!("CARGO_PKG_VERSION"),
        r.len(),
        count(r, VerdictKind::Pass),
        count(r, VerdictKind::Fail),
        count(r, VerdictKind::Warn),
        count(r, VerdictKind::Error),
        count(r, VerdictKind::Skip),
    ));
    if !summary.instance.is_empty() {
        out.push_str(&format!("Instance name: `{}`.\n", cell(&summary.instance, 100)));
    }
    let mut suites: BTreeMap<&str, Vec<&CheckResult>> = BTreeMap::new();
    for result in r {
        suites.entry(result.suite.as_str()).or_default().push(result);
    }
    for (suite, results) in suites {
        out.push_str(&format!(
            "\n## {suite}\n\n| check | level | verdict | requirement source | detail |\n|---|---|---|---|---|\n"
        ));
        for result in results {
            let detail = if result.verdict.kind == VerdictKind::Pass {
                String::new()
            } else {
                cell(&result.verdict.reason, 200)
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                result.id,
                result.severity.label(),
                mark(result.verdict.kind),
                cell(&result.source, 200),
                detail
            ));
        }
    }
    out
}

/// Verdicts of several runs side by side: a row per check (every check any
/// run has), a column per run, `—` where a run did not have the check.
pub fn matrix(runs: &[RunSummary]) -> String {
    let mut rows: BTreeMap<&str, Vec<Option<VerdictKind>>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        for result in &run.results {
            rows.entry(result.id.as_str()).or_insert_with(|| vec![None; runs.len()])[i] = Some(result.verdict.kind);
        }
    }
    let mut out = String::from("| check |");
    for run in runs {
        out.push_str(&format!(" {} |", cell(&run.target, 60)));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for (id, cells) in rows {
        out.push_str(&format!("| `{id}` |"));
        for verdict in cells {
            out.push_str(&format!(" {} |", verdict.map_or("—", mark)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::fixtures::{result, summary};
    use crate::verdict::Verdict;

    #[test]
    fn tables_escape_cells_and_line_up_runs() {
        let run = summary(vec![
            result("cas.a", "spec", Verdict::pass("fine")),
            result("cas.b", "spec", Verdict::new(VerdictKind::Fail, "a | b\nnext")),
        ]);
        let text = render(&run);
        assert!(text.contains("## cas"), "{text}");
        assert!(text.contains("| `cas.b` | MUST | **FAIL** | s | a \\| b next |"), "{text}");
        let other = summary(vec![result("cas.c", "spec", Verdict::pass("fine"))]);
        let table = matrix(&[run, other]);
        assert!(table.contains("| `cas.a` | PASS | — |"), "{table}");
        assert!(table.contains("| `cas.c` | — | PASS |"), "{table}");
    }
}
