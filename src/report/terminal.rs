//! The human report: one line per check, evidence under anything not PASS,
//! totals and wall time.

use crate::verdict::{RunSummary, VerdictKind};

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

/// Renders the whole run for a terminal; `color` adds ANSI colours.
pub fn render(summary: &RunSummary, color: bool) -> String {
    let width = summary.results.iter().map(|r| r.id.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in &summary.results {
        out.push_str(&format!(
            "{} {:<width$}  {}  ({:.2}s)\n",
            paint(r.verdict.kind, color),
            r.id,
            super::one_line(&r.verdict.reason, 200),
            r.duration.as_secs_f64(),
        ));
        if r.verdict.kind != VerdictKind::Pass {
            for line in super::evidence_lines(&r.verdict.evidence) {
                out.push_str(&format!("      {line}\n"));
            }
            if let Some(hint) = &r.hint {
                out.push_str(&format!("      hint: {hint}\n"));
            }
        }
    }
    out.push_str(&totals(summary));
    out.push('\n');
    if let Some(server) = &summary.server {
        out.push_str(&format!("server recognised: {server}\n"));
    }
    out.push_str(&crate::readiness::assess(summary, &summary.needs).render());
    out
}

/// Where the time went: start-up steps and the ten slowest checks.
pub fn timings(summary: &RunSummary) -> String {
    let mut out = format!("timings: cluster start-up {:.2}s\n", summary.startup_time.as_secs_f64());
    for step in &summary.startup_steps {
        out.push_str(&format!("  {:<24} {:>7.2}s\n", step.name, step.duration.as_secs_f64()));
    }
    let mut slowest: Vec<_> = summary.results.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.duration));
    out.push_str("slowest checks:\n");
    for r in slowest.iter().take(10) {
        out.push_str(&format!("  {:<44} {:>7.2}s\n", r.id, r.duration.as_secs_f64()));
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
        summary.target,
        if summary.instance.is_empty() { String::new() } else { format!(" (instance `{}`)", summary.instance) },
    )
}
