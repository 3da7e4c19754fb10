//! Reports are pure functions of a [`RunSummary`]: the same verdicts always
//! give the same text, whoever prints it.

pub mod json;
pub mod junit;
pub mod terminal;

use crate::verdict::Evidence;

/// Evidence as indented `label: observed (expected …)` lines.
pub fn evidence_lines(evidence: &[Evidence]) -> Vec<String> {
    evidence
        .iter()
        .map(|e| match &e.expected {
            Some(exp) => format!("{}: observed {} (expected {})", e.label, one_line(&e.observed, 300), one_line(exp, 200)),
            None => format!("{}: {}", e.label, one_line(&e.observed, 300)),
        })
        .collect()
}

/// Flattens to one line and shortens with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
