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
//!
//! A file may extend another (`extends: buildgrid-bwrap.yaml`, relative to
//! its own directory): it starts from that file's expectations and lists
//! only where it differs, so entries two targets share are written once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::verdict::{RunSummary, VerdictKind};

/// One entry of an expectation file: the verdict a check gets on the target, and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The verdict the check gets today.
    pub verdict: VerdictKind,
    /// Why this target gets this verdict; required so the file documents itself.
    pub reason: String,
}

/// An expectation file, with the entries of the file it `extends` merged in once loaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationFile {
    /// The `--cluster` the file is about, e.g. `local`; a run against one that neither it nor `also`
    /// names is refused.
    pub target: String,
    /// Other clusters of the same topology that must get the same verdicts
    /// (e.g. `compose:buildgrid:local` for `buildgrid`).
    #[serde(default)]
    pub also: Vec<String>,
    /// The file this one extends, relative to this file's directory.
    #[serde(default)]
    pub extends: Option<String>,
    /// This file's own entries, with those of the file it extends beneath
    /// them once loaded (an entry here replaces the inherited one).
    #[serde(default, deserialize_with = "no_duplicates")]
    pub expectations: BTreeMap<String, Expected>,
    /// The expectations inherited through `extends`, as loaded.
    #[serde(skip)]
    pub inherited: BTreeMap<String, Expected>,
    /// The comment lines the file starts with, kept when it is rewritten.
    #[serde(skip)]
    pub header: String,
}

impl ExpectationFile {
    /// Whether this file is about `cluster`.
    pub fn applies_to(&self, cluster: &str) -> bool {
        self.target == cluster || self.also.iter().any(|a| a == cluster)
    }
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
    /// Reads a file and, through `extends`, every file it builds on; an error names the file and
    /// line, or the `extends` cycle.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::load_chain(path, &mut Vec::new())
    }

    fn load_chain(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Self, String> {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if seen.contains(&canonical) {
            return Err(format!("{}: `extends` goes round in a circle", path.display()));
        }
        seen.push(canonical);
        let mut file = Self::load_one(path)?;
        if let Some(base) = &file.extends {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
            let base = Self::load_chain(&base_path, seen).map_err(|e| format!("{} extends {e}", path.display()))?;
            file.inherited = base.expectations;
            for (id, e) in &file.inherited {
                file.expectations.entry(id.clone()).or_insert_with(|| e.clone());
            }
        }
        Ok(file)
    }

    fn load_one(path: &Path) -> Result<Self, String> {
        let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES)?;
        let mut file: ExpectationFile = serde_yaml_ng::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            format!("{}:{line}: {e}", path.display())
        })?;
        file.header = text.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
        Ok(file)
    }

    /// The verdict expected for a check.
    pub fn expected(&self, id: &str) -> VerdictKind {
        self.expectations.get(id).map(|e| e.verdict).unwrap_or(VerdictKind::Pass)
    }
}

/// A check whose verdict differs from the expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// The check's id.
    pub id: String,
    /// The verdict the file expects (PASS where it lists none).
    pub expected: VerdictKind,
    /// The verdict this run reached.
    pub actual: VerdictKind,
    /// The reason this run gave for its verdict.
    pub reason: String,
}

/// Regressions (worse than expected) and improvements (better).
#[derive(Debug, Default)]
pub struct Comparison {
    /// Checks with a worse verdict than expected (from best: PASS, SKIP, WARN, FAIL, ERROR).
    pub regressions: Vec<Deviation>,
    /// Checks with a better verdict than expected: a deviation too, until the file is updated.
    pub improvements: Vec<Deviation>,
    /// Expectations naming checks that did not run (typos, removed checks, filters).
    pub unused: Vec<String>,
}

impl Comparison {
    /// Whether every verdict is as expected; expectations of checks that did not run do not count.
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
                    out.push_str(&format!(
                        "  {} expected {}, got {}: {}\n",
                        crate::text::printable(&d.id),
                        d.expected,
                        d.actual,
                        crate::text::one_line(&d.reason, 200)
                    ));
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

/// An expectation file listing every verdict of `summary` other than PASS.
/// A reason from `previous` is kept where it lists the same verdict for the
/// check, and its entries for checks this run left out are kept as they are;
/// other reasons are the verdict's own, to be edited into a why.
pub fn render(summary: &RunSummary, target: &str, previous: Option<&ExpectationFile>) -> String {
    let mut out = match previous.map(|p| p.header.as_str()).filter(|h| !h.is_empty()) {
        Some(header) => header.to_string(),
        None => String::from(
            "# Written by `reapi-conformance run --write-expectations`. Unlisted checks PASS.\n\
             # Reasons should say why this target gets the verdict; kept on rewrite while the verdict holds.\n",
        ),
    };
    out.push_str(&format!("target: {}\n", yaml_scalar(target)));
    let also: Vec<String> = previous.iter().flat_map(|p| &p.also).map(|a| yaml_scalar(a)).collect();
    if !also.is_empty() {
        out.push_str(&format!("also: [{}]\n", also.join(", ")));
    }
    let inherited = previous.map(|p| &p.inherited);
    if let Some(base) = previous.and_then(|p| p.extends.as_ref()) {
        out.push_str(&format!("extends: {}\n", yaml_scalar(base)));
    }
    let mut entries: BTreeMap<&str, (VerdictKind, String)> = BTreeMap::new();
    for (id, e) in previous.iter().flat_map(|p| &p.expectations) {
        if !summary.results.iter().any(|r| &r.id == id) {
            entries.insert(id, (e.verdict, e.reason.clone()));
        }
    }
    for r in summary.results.iter().filter(|r| r.verdict.kind != VerdictKind::Pass) {
        let kept = previous.and_then(|p| p.expectations.get(&r.id)).filter(|e| e.verdict == r.verdict.kind);
        let reason = kept.map_or_else(|| format!("observed: {}", r.verdict.reason), |e| e.reason.clone());
        entries.insert(&r.id, (r.verdict.kind, reason));
    }
    // With `extends`, only where this target differs from the file extended:
    // a verdict it shares is left to that file, a PASS where it expects
    // otherwise is written out.
    if let Some(inherited) = inherited.filter(|_| previous.is_some_and(|p| p.extends.is_some())) {
        entries.retain(|id, (verdict, _)| inherited.get(*id).is_none_or(|e| e.verdict != *verdict));
        for (id, e) in inherited {
            if e.verdict != VerdictKind::Pass
                && summary.results.iter().any(|r| &r.id == id && r.verdict.kind == VerdictKind::Pass)
            {
                entries.insert(id, (VerdictKind::Pass, "passes on this target".into()));
            }
        }
    }
    if entries.is_empty() {
        out.push_str("expectations: {}\n");
        return out;
    }
    out.push_str("expectations:\n");
    for (id, (verdict, reason)) in entries {
        out.push_str(&format!("  {id}:\n    verdict: {verdict}\n    reason:{}", folded(&reason)));
    }
    out
}

/// A plain YAML scalar where the text needs no quoting, else a quoted one.
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric());
    if plain {
        text.to_string()
    } else {
        // JSON string syntax is valid YAML.
        serde_json::Value::String(text.to_string()).to_string()
    }
}

/// ` >` and the text folded into lines of at most 76 columns, indented for a
/// reason field; text a folded block cannot hold goes quoted on one line.
fn folded(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let safe = !words.is_empty() && text.chars().all(|c| !c.is_control() || c == '\n' || c == '\t');
    if !safe {
        return format!(" {}\n", serde_json::Value::String(text.to_string()));
    }
    let mut out = String::from(" >\n");
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.len() + 1 + word.len() > 70 {
            out.push_str(&format!("      {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&format!("      {line}\n"));
    out
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

    #[test]
    fn written_expectations_load_back_and_keep_reasons_of_unchanged_verdicts() {
        use crate::verdict::fixtures::{result, summary};
        use crate::verdict::Verdict;
        let run = summary(vec![
            result("a.pass", "blocker", Verdict::pass("fine")),
            result("a.fail", "blocker", Verdict::new(VerdictKind::Fail, "broke: \"quoted\"\nnext line")),
            result("a.warn", "spec", Verdict::new(VerdictKind::Warn, "meh")),
        ]);
        let mut previous = ExpectationFile {
            target: "old".into(),
            also: Vec::new(),
            extends: None,
            expectations: BTreeMap::new(),
            inherited: BTreeMap::new(),
            header: "# mine\n".into(),
        };
        previous.expectations.insert("a.warn".into(), Expected { verdict: VerdictKind::Warn, reason: "known".into() });
        previous.expectations.insert("a.fail".into(), Expected { verdict: VerdictKind::Warn, reason: "stale".into() });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yaml");
        std::fs::write(&path, render(&run, "buildgrid:host", Some(&previous))).unwrap();
        let file = ExpectationFile::load(&path).unwrap();
        assert_eq!(file.target, "buildgrid:host");
        assert_eq!(file.header, "# mine\n");
        assert_eq!(file.expectations.len(), 2);
        assert_eq!(file.expectations["a.warn"].reason.trim(), "known");
        assert!(file.expectations["a.fail"].reason.starts_with("observed: broke: \"quoted\" next line"));
        assert!(compare(&run, &file).matches());
    }

    #[test]
    fn a_file_extends_another_and_overrides_only_what_it_lists() {
        use crate::verdict::fixtures::{result, summary};
        use crate::verdict::Verdict;
        let dir = tempfile::tempdir().unwrap();
        let entry = |id: &str, verdict: &str| format!("  {id}:\n    verdict: {verdict}\n    reason: r\n");
        let base = format!("target: t\nexpectations:\n{}{}", entry("a.fail", "FAIL"), entry("a.warn", "WARN"));
        std::fs::write(dir.path().join("base.yaml"), base).unwrap();
        let child = format!(
            "# child\ntarget: t\nextends: base.yaml\nexpectations:\n{}{}",
            entry("a.warn", "PASS"),
            entry("a.skip", "SKIP")
        );
        std::fs::write(dir.path().join("child.yaml"), &child).unwrap();
        let file = ExpectationFile::load(&dir.path().join("child.yaml")).unwrap();
        assert_eq!(file.expected("a.fail"), VerdictKind::Fail, "inherited");
        assert_eq!(file.expected("a.warn"), VerdictKind::Pass, "overridden");
        assert_eq!(file.expected("a.skip"), VerdictKind::Skip, "its own");
        assert_eq!(file.expected("a.other"), VerdictKind::Pass);

        // Rewritten from a run, it still lists only where it differs.
        let run = summary(vec![
            result("a.fail", "blocker", Verdict::new(VerdictKind::Fail, "x")),
            result("a.warn", "spec", Verdict::new(VerdictKind::Warn, "now warns")),
            result("a.skip", "spec", Verdict::new(VerdictKind::Skip, "y")),
        ]);
        let text = render(&run, "t", Some(&file));
        assert!(text.starts_with("# child\ntarget: t\nextends: base.yaml\n"), "{text}");
        assert!(!text.contains("a.fail") && !text.contains("a.warn") && text.contains("a.skip"), "{text}");
        std::fs::write(dir.path().join("child.yaml"), &text).unwrap();
        assert!(compare(&run, &ExpectationFile::load(&dir.path().join("child.yaml")).unwrap()).matches());

        // A missing base and a circle are errors naming the file.
        std::fs::write(dir.path().join("lost.yaml"), "target: t\nextends: nowhere.yaml\n").unwrap();
        let err = ExpectationFile::load(&dir.path().join("lost.yaml")).unwrap_err();
        assert!(err.contains("lost.yaml extends") && err.contains("nowhere.yaml"), "{err}");
        std::fs::write(dir.path().join("loop.yaml"), "target: t\nextends: loop.yaml\n").unwrap();
        assert!(ExpectationFile::load(&dir.path().join("loop.yaml")).unwrap_err().contains("circle"));
    }
}
