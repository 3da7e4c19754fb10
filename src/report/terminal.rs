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

/// Renders the whole run for a terminal; `color` adds ANSI colours (the only
/// escapes in the text: everything else passes through `printable`).
pub fn render(summary: &RunSummary, color: bool) -> String {
    use super::{one_line, printable};
    let width = summary.results.iter().map(|r| printable(&r.id).len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in &summary.results {
        out.push_str(&format!(
            "{} {:<width$}  {}  ({:.2}s)\n",
            paint(r.verdict.kind, color),
            printable(&r.id),
            super::one_line(&r.verdict.reason, 200),
            r.duration.as_secs_f64(),
        ));
        if r.verdict.kind != VerdictKind::Pass {
            for line in super::evidence_lines(&r.verdict.evidence) {
                out.push_str(&format!("      {line}\n"));
            }
            if let Some(hint) = &r.hint {
                out.push_str(&format!("      hint: {}\n", one_line(hint, 400)));
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
    out.push_str(&crate::readiness::assess(summary, &summary.needs).render());
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
