//! A Markdown summary a server vendor can paste into a release note: the
//! counts, then one table per suite with each check's verdict and clause,
//! and `matrix`, the same verdicts side by side for several servers.

use std::collections::BTreeMap;

use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Text safe inside a Markdown table cell: one line (a newline ends the
/// row), `|` (which ends the cell), and the backtick, backslash and `<` that
/// would start a code span, an escape or HTML, each backslash-escaped.
fn cell(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in super::one_line(text, max).chars() {
        if matches!(c, '|' | '`' | '\\' | '<') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Text shown as code in a table cell (check ids, instance names). Inside a
/// code span only `|` can be escaped (tables take `\|` apart before the span
/// is read); a backtick or backslash cannot, so text holding one is shown
/// as a plain cell instead.
fn code(text: &str, max: usize) -> String {
    let line = super::one_line(text, max);
    if line.is_empty() || line.contains(['`', '\\']) {
        cell(text, max)
    } else {
        format!("`{}`", line.replace('|', "\\|"))
    }
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
    if let Some(profile) = &summary.profile {
        out.push_str(&format!("Profile: {}.\n", code(profile, 300)));
    }
    if !summary.instance.is_empty() {
        out.push_str(&format!("Instance name: {}.\n", code(&summary.instance, 100)));
    }
    let mut suites: BTreeMap<&str, Vec<&CheckResult>> = BTreeMap::new();
    for result in r {
        suites.entry(result.suite.as_str()).or_default().push(result);
    }
    for (suite, results) in suites {
        out.push_str(&format!(
            "\n## {}\n\n| check | level | verdict | requirement source | detail |\n|---|---|---|---|---|\n",
            cell(suite, 100)
        ));
        for result in results {
            let detail = if result.verdict.kind == VerdictKind::Pass {
                String::new()
            } else {
                cell(&result.verdict.reason, 200)
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&result.id, 200),
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
    // Verdicts side by side compare only under the same profile version:
    // the first row says which each run had.
    if runs.iter().any(|r| r.profile.is_some()) {
        out.push_str("| *profile* |");
        for run in runs {
            out.push_str(&format!(" {} |", run.profile.as_deref().map_or("—".into(), |p| code(p, 100))));
        }
        out.push('\n');
    }
    for (id, cells) in rows {
        out.push_str(&format!("| {} |", code(id, 200)));
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
        assert!(table.contains("| *profile* | `buildstream@2026.12` | `buildstream@2026.12` |"), "{table}");
        assert!(text.contains("Profile: `buildstream@2026.12`."), "{text}");
        assert!(table.contains("| `cas.c` | — | PASS |"), "{table}");
    }

    /// The cells of a table row as GFM reads them: split at unescaped `|`.
    fn cells(row: &str) -> Vec<String> {
        let (mut out, mut cur, mut escaped) = (Vec::new(), String::new(), false);
        for c in row.trim().trim_start_matches('|').chars() {
            match c {
                '|' if !escaped => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
            escaped = c == '\\' && !escaped;
        }
        out
    }

    #[test]
    fn server_text_cannot_break_a_table() {
        let hostile = "a|b\nc`d\\|e\r\n<img src=x>\u{202e}";
        let mut run = summary(vec![
            result(&format!("cas.{hostile}"), "spec", Verdict::new(VerdictKind::Fail, hostile)),
            result("cas.with|pipe", "spec", Verdict::pass("ok")),
        ]);
        run.target = hostile.into();
        run.instance = hostile.into();
        let other = summary(vec![result("cas.z", "spec", Verdict::pass("fine"))]);
        for text in [render(&run), matrix(&[run.clone(), other])] {
            let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
            let width = cells(rows[0]).len();
            for row in &rows {
                assert_eq!(cells(row).len(), width, "{row}\n{text}");
            }
            assert!(!text.contains('\u{202e}') && !text.replace("\\<img", "").contains("<img"), "{text}");
            assert!(text.contains("`cas.with\\|pipe`"), "{text}");
        }
    }
}
