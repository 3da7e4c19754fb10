//! Reports are pure functions of a [`RunSummary`]: the same verdicts always
//! give the same text, whoever prints it.

pub mod json;
pub mod junit;
pub mod markdown;
pub mod terminal;

use crate::verdict::Evidence;

/// Evidence as indented `label: observed (expected …)` lines.
pub fn evidence_lines(evidence: &[Evidence]) -> Vec<String> {
    evidence
        .iter()
        .map(|e| match &e.expected {
            Some(exp) => format!(
                "{}: observed {} (expected {})",
                one_line(&e.label, 80),
                one_line(&e.observed, 300),
                one_line(exp, 200)
            ),
            None => format!("{}: {}", one_line(&e.label, 80), one_line(&e.observed, 300)),
        })
        .collect()
}

/// Server-supplied text made safe for a terminal and for XML: control
/// characters (ANSI/OSC escapes, NUL, …) become U+FFFD; newlines and tabs stay.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect()
}

/// Flattens to one line, strips control characters and shortens with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = printable(s).split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_a_report() {
        let hostile = "boom\x1b]0;pwned\x07\x1b[31mred\x00end";
        let line = super::one_line(hostile, 200);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.starts_with("boom") && line.ends_with("end"));
    }
}
