//! Per-target expectation files: the verdicts a known server configuration
//! gets today, so a CI gate fails only on change (web-platform-tests style).
//!
//! ```yaml
//! target: local
//! expectations:
//!   platform.foreign-isa:
//!     verdict: FAIL
//!     reason: buildbox-casd's local execution ignores platform properties
//! ```
//! Checks not listed are expected to PASS.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::verdict::{RunSummary, VerdictKind};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub verdict: VerdictKind,
    /// Why this target gets this verdict; required so the file documents itself.
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationFile {
    pub target: String,
    #[serde(default, deserialize_with = "no_duplicates")]
    pub expectations: BTreeMap<String, Expected>,
}

/// A map that refuses a key given twice (YAML parsers keep the last one
/// silently, which hides a contradiction in the file).
fn no_duplicates<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Expected>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, Expected>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map from check id to {verdict, reason}")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((id, expected)) = map.next_entry::<String, Expected>()? {
                if out.insert(id.clone(), expected).is_some() {
                    return Err(serde::de::Error::custom(format!("check `{id}` is listed twice")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor)
}

impl ExpectationFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            format!("{}:{line}: {e}", path.display())
        })
    }

    /// The verdict expected for a check.
    pub fn expected(&self, id: &str) -> VerdictKind {
        self.expectations.get(id).map(|e| e.verdict).unwrap_or(VerdictKind::Pass)
    }
}

/// A check whose verdict differs from the expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    pub id: String,
    pub expected: VerdictKind,
    pub actual: VerdictKind,
    pub reason: String,
}

/// Regressions (worse than expected) and improvements (better).
#[derive(Debug, Default)]
pub struct Comparison {
    pub regressions: Vec<Deviation>,
    pub improvements: Vec<Deviation>,
    /// Expectations naming checks that did not run (typos, removed checks, filters).
    pub unused: Vec<String>,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.regressions.is_empty() && self.improvements.is_empty()
    }

    /// Text for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, list) in [("regressions", &self.regressions), ("improvements", &self.improvements)] {
            if !list.is_empty() {
                out.push_str(&format!("{} {title} against expectations:\n", list.len()));
                for d in list {
                    out.push_str(&format!("  {} expected {}, got {}: {}\n", d.id, d.expected, d.actual, d.reason));
                }
            }
        }
        if self.matches() {
            out.push_str("all verdicts as expected\n");
        }
        out
    }
}

/// How good a verdict is, for telling regressions from improvements.
fn rank(kind: VerdictKind) -> u8 {
    match kind {
        VerdictKind::Pass => 4,
        VerdictKind::Skip => 3,
        VerdictKind::Warn => 2,
        VerdictKind::Fail => 1,
        VerdictKind::Error => 0,
    }
}

/// Compares a run with the expectations.
pub fn compare(summary: &RunSummary, file: &ExpectationFile) -> Comparison {
    let mut c = Comparison::default();
    for r in &summary.results {
        let expected = file.expected(&r.id);
        let actual = r.verdict.kind;
        if expected == actual {
            continue;
        }
        let d = Deviation { id: r.id.clone(), expected, actual, reason: r.verdict.reason.clone() };
        if rank(actual) < rank(expected) {
            c.regressions.push(d);
        } else {
            c.improvements.push(d);
        }
    }
    for id in file.expectations.keys() {
        if !summary.results.iter().any(|r| &r.id == id) {
            c.unused.push(id.clone());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_listed_twice_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dup.yaml");
        let text = "target: t\nexpectations:\n  a.b:\n    verdict: FAIL\n    reason: x\n  a.b:\n    verdict: PASS\n    reason: y\n";
        std::fs::write(&path, text).unwrap();
        let err = ExpectationFile::load(&path).unwrap_err();
        assert!(err.contains("listed twice") && err.contains("dup.yaml:"), "{err}");
    }
}
