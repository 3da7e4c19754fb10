//! One self-contained HTML page per run (`run --html`) and per comparison
//! (`matrix --html`): the readiness answer first, then the verdicts.
//!
//! Pure functions of the verdicts like every report: no network, no files,
//! no external assets. The page reads in full without JavaScript; a few
//! lines of inline script only add filters (by suite and verdict). Every
//! string that may come from a server, a user or a JSON report goes through
//! `esc`, and a Content-Security-Policy allows only the page's own style
//! and script (by hash), so even a string that slipped through could neither
//! run nor load anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::readiness::{ElementsBuild, Finding, Readiness};
use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Text for HTML, in element content and in quoted attribute values alike:
/// first what `printable` escapes (controls, bidi overrides), then the five
/// characters markup gives a meaning to.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in super::printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Server text cut to `max` characters, with an ellipsis: a server's stderr
/// or error message must not make the page as large as it pleases (the JSON
/// report keeps the evidence whole).
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// How much of one piece of server text the page shows.
const MAX_SHOWN: usize = 4000;

const STYLE: &str = r#"
:root { color-scheme: light; --pass: #1a7f37; --fail: #cf222e; --warn: #9a6700; --error: #8250df; --skip: #57606a; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem 3rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.2rem; margin: 1.8rem 0 .6rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
code { font: 13px ui-monospace, monospace; overflow-wrap: anywhere; }
summary, td, dd { overflow-wrap: anywhere; }
.answer { border: 2px solid; border-radius: 6px; padding: .6rem 1rem; margin: 0 0 1rem; }
.answer p.line { font-size: 1.25rem; font-weight: 600; margin: 0; }
.answer.yes { border-color: var(--pass); background: #dafbe1; }
.answer.no { border-color: var(--fail); background: #ffebe9; }
.answer.undecided { border-color: var(--error); background: #fbefff; }
.answer.not-assessed { border-color: var(--skip); background: #f6f8fa; }
.answer.only { border-color: var(--warn); background: #fff8c5; }
.v { display: inline-block; min-width: 3.6em; text-align: center; font: 600 12px ui-monospace, monospace; border-radius: 4px; padding: 1px 4px; color: #fff; }
.v-PASS { background: var(--pass); } .v-FAIL { background: var(--fail); } .v-WARN { background: var(--warn); }
.v-ERROR { background: var(--error); } .v-SKIP { background: var(--skip); } .v-none { background: #eaeef2; color: #57606a; }
dl.ran { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0; }
dl.ran dt { font-weight: 600; } dl.ran dd { margin: 0; }
details.check { border-bottom: 1px solid #eaeef2; padding: .25rem 0; }
details.check > summary { cursor: pointer; }
details.check > summary .reason { color: #57606a; }
details.check .body { margin: .4rem 0 .6rem 1.6rem; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .2rem .5rem; border-bottom: 1px solid #eaeef2; }
table.evidence td:first-child { white-space: nowrap; }
table.evidence code { white-space: pre-wrap; }
.has-hint { font-size: 12px; background: #fff8c5; border-radius: 4px; padding: 0 4px; }
table.matrix th.run { font-weight: 600; max-width: 16rem; }
.muted { color: #57606a; }
.hint { background: #fff8c5; padding: .2rem .4rem; border-radius: 4px; }
td.answer-cell { font-weight: 600; } td.answer-cell.yes { color: var(--pass); } td.answer-cell.no { color: var(--fail); }
td.answer-cell.undecided { color: var(--error); } td.answer-cell.only { color: var(--warn); } td.answer-cell.not-assessed { color: var(--skip); }
#filters { background: #f6f8fa; padding: .4rem .8rem; border-radius: 6px; margin: 1rem 0; }
table.features td:nth-child(2) { min-width: 6.5rem; }
"#;

/// Shows the filters and applies them to every element carrying
/// `data-suite` and `data-verdicts`; hides suite sections left empty. The
/// page is complete without it.
const SCRIPT: &str = r#"
(function () {
  var box = document.getElementById('filters');
  if (!box) { return; }
  var suite = document.getElementById('f-suite'), verdict = document.getElementById('f-verdict');
  function apply() {
    document.querySelectorAll('[data-suite][data-verdicts]').forEach(function (e) {
      var v = ' ' + e.getAttribute('data-verdicts') + ' ';
      e.hidden = !((!suite.value || e.getAttribute('data-suite') === suite.value) &&
        (!verdict.value || v.indexOf(' ' + verdict.value + ' ') >= 0));
    });
    document.querySelectorAll('section.suite').forEach(function (s) {
      s.hidden = !s.querySelector('[data-verdicts]:not([hidden])');
    });
  }
  // A link from the readiness answer opens the check it points at.
  function openTarget() {
    var t = location.hash && document.getElementById(location.hash.slice(1));
    if (t && t.tagName === 'DETAILS') { t.open = true; }
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  suite.addEventListener('change', apply);
  verdict.addEventListener('change', apply);
  box.hidden = false;
})();
"#;

fn csp_hash(text: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(text.as_bytes());
    // Base64 by hand: the only use, and not worth a dependency.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("'sha256-");
    for chunk in digest.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(out, "{}", ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push('\'');
    out
}

/// The document around `body`: no external resource, and a policy that
/// would refuse one (and any script or style but the page's own).
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src {}; script-src {}; img-src data:; base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"reapi-conformance {}\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body>\n</html>\n",
        csp_hash(STYLE),
        csp_hash(SCRIPT),
        env!("CARGO_PKG_VERSION"),
        esc(title),
    )
}

fn verdict_badge(kind: Option<VerdictKind>) -> String {
    match kind {
        Some(k) => format!("<span class=\"v v-{0}\">{0}</span>", k.label()),
        None => "<span class=\"v v-none\">—</span>".into(),
    }
}

/// `2026-12-07 00:18 UTC` from seconds since the epoch.
fn utc(secs: u64) -> String {
    use junit_report::OffsetDateTime;
    match OffsetDateTime::from_unix_timestamp(secs as i64) {
        Ok(t) => {
            format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        }
        Err(_) => format!("{secs} s after the epoch"),
    }
}

/// The filter bar, hidden until the script shows it (without script it
/// would be controls that do nothing).
fn filters(suites: &BTreeSet<&str>, extra: &str) -> String {
    let mut out = String::from(
        "<form id=\"filters\" hidden>Show suite <select id=\"f-suite\"><option value=\"\">all suites</option>",
    );
    for s in suites {
        out.push_str(&format!("<option value=\"{0}\">{0}</option>", esc(s)));
    }
    out.push_str(" </select> with verdict <select id=\"f-verdict\"><option value=\"\">any verdict</option>");
    for k in ["PASS", "FAIL", "WARN", "ERROR", "SKIP"] {
        out.push_str(&format!("<option value=\"{k}\">{k}</option>"));
    }
    out.push_str(extra);
    out.push_str("</select></form>\n");
    out
}

/// The colour of an answer, from what it says of the elements: green only
/// when every element builds, amber when only some do.
fn answer_class(r: &Readiness) -> &'static str {
    match r.elements {
        ElementsBuild::Every => "yes",
        ElementsBuild::OnlyWithout => "only",
        ElementsBuild::None | ElementsBuild::Hang => "no",
        ElementsBuild::Undecided => "undecided",
        ElementsBuild::NotAssessed => "not-assessed",
    }
}

/// The readiness answer, first on the page: the headline, then blockers
/// with the consequences of each root cause folded under it, and the rest.
fn readiness(r: &Readiness, anchors: &HashMap<&str, usize>) -> String {
    let class = answer_class(r);
    // The terminal's own headline, word for word.
    let rendered = r.render();
    let headline = rendered.lines().next().unwrap_or_default();
    let link = |id: &str| match anchors.get(id) {
        Some(i) => format!("<a href=\"#check-{i}\"><code>{}</code></a>", esc(id)),
        None => format!("<code>{}</code>", esc(id)),
    };
    let item = |f: &Finding| format!("<li>{} {}: {}</li>", verdict_badge(Some(f.verdict)), link(&f.id), esc(&f.reason));
    let mut out = format!(
        "<section id=\"readiness\" class=\"answer {class}\">\n<p class=\"line\" id=\"answer\">{}</p>\n",
        esc(headline)
    );
    if !r.blockers.is_empty() {
        out.push_str("<h3>Blockers, root causes first</h3>\n<ul>\n");
        // Grouped by the per-check map every report names root causes from.
        let root_of = |f: &Finding| r.root_causes.get(&f.id);
        for root in r.blockers.iter().filter(|f| root_of(f).is_none()) {
            let following: Vec<&Finding> = r.blockers.iter().filter(|f| root_of(f) == Some(&root.id)).collect();
            let own = item(root);
            if following.is_empty() {
                out.push_str(&own);
            } else {
                out.push_str(own.trim_end_matches("</li>"));
                out.push_str(&format!(
                    "\n<details><summary>{} more that follow from it (their commands did not run from the input root)</summary><ul>",
                    following.len()
                ));
                for f in following {
                    out.push_str(&item(f));
                }
                out.push_str("</ul></details></li>");
            }
            out.push('\n');
        }
        out.push_str("</ul>\n");
    }
    let list = |title: &str, items: &[Finding], out: &mut String| {
        if !items.is_empty() {
            out.push_str(&format!("<h3>{title}</h3>\n<ul>\n"));
            for f in items {
                out.push_str(&item(f));
                out.push('\n');
            }
            out.push_str("</ul>\n");
        }
    };
    list("Undecided blockers", &r.undecided, &mut out);
    list("Not assessed by this run", &r.not_assessed, &mut out);
    if !r.capabilities.is_empty() {
        out.push_str(
            "<h3>Sandbox capabilities</h3>\n<table class=\"features\"><tr><th>capability</th><th>state</th>\
             <th>without it</th><th>checks</th></tr>\n",
        );
        for c in r.capabilities.values() {
            let checks: Vec<String> =
                c.checks.iter().map(|f| format!("{} {}", verdict_badge(Some(f.verdict)), link(&f.id))).collect();
            let state = match (&c.follows_from, c.gated) {
                (Some(root), _) => format!("{} (follows from {})", c.label(), root),
                (None, false) => format!("{} (not gated: --needs-only)", c.label()),
                (None, true) => c.label().to_string(),
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&c.facility),
                esc(&state),
                esc(&c.used_by),
                checks.join("<br>")
            ));
        }
        out.push_str("</table>\n");
    }
    if !r.features.is_empty() {
        out.push_str("<h3>BuildStream features</h3>\n<table class=\"features\"><tr><th>feature</th><th>state</th><th>checks</th></tr>\n");
        for (name, f) in &r.features {
            let checks: Vec<String> =
                f.checks.iter().map(|c| format!("{} {}", verdict_badge(Some(c.verdict)), link(&c.id))).collect();
            // A guarantee whose absence fails no build says so.
            let state = if let Some(root) = &f.follows_from {
                format!("{} (follows from {root})", f.state.label())
            } else if r.guarantees_weakened.contains(name) {
                format!("{} (a guarantee: elements still build, less hermetically)", f.state.label())
            } else {
                f.state.label().to_string()
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(name),
                esc(&state),
                checks.join("<br>")
            ));
        }
        out.push_str("</table>\n");
    }
    list("Hang risks: requests left queued instead of answered (bst would wait for ever)", &r.hang_risks, &mut out);
    list("Spec deviations BuildStream does not rely on", &r.spec_deviations, &mut out);
    if !r.needed_unavailable.is_empty() {
        out.push_str(&format!(
            "<p><strong>Needed (--needs) but unavailable:</strong> {}</p>\n",
            esc(&r.needed_unavailable.join(", "))
        ));
    }
    out.push_str("</section>\n");
    out
}

/// What ran: target, server, profile, harness, times and counts.
fn what_ran(summary: &RunSummary) -> String {
    let mut rows: Vec<(&str, String)> = vec![("target", esc(&summary.target))];
    if let Some(server) = &summary.server {
        rows.push(("server recognised", esc(server)));
    }
    if !summary.instance.is_empty() {
        rows.push(("instance name", format!("<code>{}</code>", esc(&summary.instance))));
    }
    rows.push((
        "profile",
        summary.profile.as_deref().map_or("(not recorded)".into(), |p| format!("<code>{}</code>", esc(p))),
    ));
    if !summary.needs.is_empty() {
        rows.push(("needed features", esc(&summary.needs.join(", "))));
    }
    rows.push(("harness", format!("reapi-conformance {}", env!("CARGO_PKG_VERSION"))));
    rows.push(("started", utc(summary.started_at)));
    rows.push((
        "time",
        format!(
            "{:.2} s in all, of which {:.2} s cluster start-up",
            summary.wall_time.as_secs_f64(),
            summary.startup_time.as_secs_f64()
        ),
    ));
    let counts: Vec<String> =
        [VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Warn, VerdictKind::Error, VerdictKind::Skip]
            .iter()
            .map(|&k| format!("{} {}", verdict_badge(Some(k)), summary.count(k)))
            .collect();
    rows.push(("verdicts", format!("{} checks: {}", summary.results.len(), counts.join(" "))));
    let mut out = String::from("<h2>What ran</h2>\n<dl class=\"ran\" id=\"ran\">\n");
    for (k, v) in rows {
        out.push_str(&format!("<dt>{k}</dt><dd>{v}</dd>\n"));
    }
    out.push_str("</dl>\n");
    out
}

/// One check, folded: verdict, id, MUST/SHOULD and the reason on the line,
/// and the root cause its verdict follows from (`root`, linked), if any;
/// clause, impact, evidence and hint inside.
fn check(r: &CheckResult, index: usize, root: Option<(&str, Option<usize>)>) -> String {
    let kind = r.verdict.kind.label();
    let follows = match root {
        Some((id, Some(at))) => {
            format!(" <span class=\"muted\">follows from <a href=\"#check-{at}\"><code>{}</code></a></span>", esc(id))
        }
        Some((id, None)) => format!(" <span class=\"muted\">follows from <code>{}</code></span>", esc(id)),
        None => String::new(),
    };
    let mut out = format!(
        "<details class=\"check\" id=\"check-{index}\" data-suite=\"{}\" data-verdicts=\"{kind}\"><summary>{} <code class=\"id\">{}</code> <span class=\"muted\">{}</span> — <span class=\"reason\">{}</span>{follows}{}</summary>\n<div class=\"body\">\n",
        esc(&r.suite),
        verdict_badge(Some(r.verdict.kind)),
        esc(&r.id),
        r.severity.label(),
        esc(&super::one_line(&r.verdict.reason, 300)),
        // A fix is waiting inside: say so on the folded line.
        if r.hint.is_some() { " <span class=\"has-hint\">hint</span>" } else { "" },
    );
    out.push_str(&format!(
        "<p>{}</p>\n<dl class=\"ran\"><dt>level</dt><dd>{}</dd><dt>clause</dt><dd>{}</dd><dt>impact</dt><dd>{}</dd><dt>reason</dt><dd>{}</dd><dt>time</dt><dd>{:.2} s</dd></dl>\n",
        esc(&clip(&r.title, MAX_SHOWN)),
        r.severity.label(),
        esc(&clip(&r.source, MAX_SHOWN)),
        esc(&r.impact.label()),
        esc(&clip(&r.verdict.reason, MAX_SHOWN)),
        r.duration.as_secs_f64()
    ));
    if !r.verdict.evidence.is_empty() {
        out.push_str("<table class=\"evidence\"><tr><th>evidence</th><th>observed</th><th>expected</th></tr>\n");
        for e in &r.verdict.evidence {
            out.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                esc(&clip(&e.label, 200)),
                esc(&clip(&e.observed, MAX_SHOWN)),
                e.expected.as_deref().map(|x| esc(&clip(x, MAX_SHOWN))).unwrap_or_default()
            ));
        }
        out.push_str("</table>\n");
    }
    if let Some(hint) = &r.hint {
        out.push_str(&format!("<p class=\"hint\"><strong>hint:</strong> {}</p>\n", esc(&clip(hint, MAX_SHOWN))));
    }
    out.push_str("</div>\n</details>\n");
    out
}

/// The page of one run.
pub fn render(summary: &RunSummary) -> String {
    let readiness_answer = crate::readiness::assess(summary, &summary.needs);
    let anchors: HashMap<&str, usize> = summary.results.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let mut suites: BTreeMap<&str, Vec<(usize, &CheckResult)>> = BTreeMap::new();
    for (i, r) in summary.results.iter().enumerate() {
        suites.entry(r.suite.as_str()).or_default().push((i, r));
    }
    let mut body = format!("<h1>REAPI conformance: {}</h1>\n", esc(&summary.target));
    body.push_str(&readiness(&readiness_answer, &anchors));
    body.push_str(&what_ran(summary));
    body.push_str("<h2>Checks by suite</h2>\n<p class=\"muted\">Each line opens to the requirement's clause, the evidence and, on a recognised server, a hint.</p>\n");
    body.push_str(&filters(&suites.keys().copied().collect::<BTreeSet<_>>(), ""));
    for (suite, results) in &suites {
        let mut counts: Vec<String> = Vec::new();
        for k in [VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Warn, VerdictKind::Error, VerdictKind::Skip] {
            let n = results.iter().filter(|(_, r)| r.verdict.kind == k).count();
            if n > 0 {
                counts.push(format!("{n} {}", k.label()));
            }
        }
        body.push_str(&format!(
            "<section class=\"suite\" id=\"suite-{0}\">\n<h2>{0} <span class=\"muted\">({1})</span></h2>\n",
            esc(suite),
            counts.join(", ")
        ));
        for (i, r) in results {
            let root =
                readiness_answer.root_causes.get(&r.id).map(|id| (id.as_str(), anchors.get(id.as_str()).copied()));
            body.push_str(&check(r, *i, root));
        }
        body.push_str("</section>\n");
    }
    page(&format!("REAPI conformance: {}", summary.target), &body)
}

/// Several runs side by side: each run's readiness answer and what ran,
/// then a grid with a row per check and a column per run.
pub fn matrix(runs: &[RunSummary]) -> String {
    struct Row<'a> {
        suite: &'a str,
        severity: &'static str,
        cells: Vec<Option<&'a CheckResult>>,
    }
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        for r in &run.results {
            let row = rows.entry(r.id.as_str()).or_insert_with(|| Row {
                suite: r.suite.as_str(),
                severity: r.severity.label(),
                cells: vec![None; runs.len()],
            });
            row.cells[i] = Some(r);
        }
    }
    let mut body = String::from("<h1>REAPI conformance: servers side by side</h1>\n");
    body.push_str("<table class=\"matrix\" id=\"runs\">\n<tr><th></th>");
    for run in runs {
        body.push_str(&format!("<th class=\"run\">{}</th>", esc(&run.target)));
    }
    body.push_str("</tr>\n<tr><th>BuildStream builds here</th>");
    for run in runs {
        let readiness = crate::readiness::assess(run, &run.needs);
        let answer = readiness.render();
        let line = answer.lines().next().unwrap_or_default();
        let short = line.trim_start_matches("BuildStream builds here: ");
        let class = answer_class(&readiness);
        body.push_str(&format!("<td class=\"answer-cell {class}\" title=\"{}\">{}</td>", esc(line), esc(short)));
    }
    body.push_str("</tr>\n");
    let rows_of = |label: &str, value: &dyn Fn(&RunSummary) -> String, body: &mut String| {
        body.push_str(&format!("<tr><th>{label}</th>"));
        for run in runs {
            body.push_str(&format!("<td>{}</td>", value(run)));
        }
        body.push_str("</tr>\n");
    };
    rows_of("profile", &|r| r.profile.as_deref().map_or("—".into(), |p| format!("<code>{}</code>", esc(p))), &mut body);
    rows_of("server recognised", &|r| r.server.as_deref().map_or("—".into(), esc), &mut body);
    rows_of("started", &|r| utc(r.started_at), &mut body);
    rows_of(
        "verdicts",
        &|r| {
            [VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Warn, VerdictKind::Error, VerdictKind::Skip]
                .iter()
                .map(|&k| format!("{} {}", verdict_badge(Some(k)), r.count(k)))
                .collect::<Vec<_>>()
                .join(" ")
        },
        &mut body,
    );
    body.push_str(&format!(
        "</table>\n<p class=\"muted\">Made by reapi-conformance {} from {} run reports.</p>\n",
        env!("CARGO_PKG_VERSION"),
        runs.len()
    ));
    let suites: BTreeSet<&str> = rows.values().map(|r| r.suite).collect();
    body.push_str("<h2>Verdicts</h2>\n");
    body.push_str(&filters(&suites, "<option value=\"differs\">differs between runs</option>"));
    body.push_str("<table class=\"matrix\" id=\"matrix\">\n<thead><tr><th>check</th><th>level</th>");
    for run in runs {
        body.push_str(&format!("<th class=\"run\">{}</th>", esc(&run.target)));
    }
    body.push_str("</tr></thead>\n<tbody>\n");
    for (id, row) in &rows {
        let kinds: BTreeSet<Option<VerdictKind>> = row.cells.iter().map(|c| c.map(|r| r.verdict.kind)).collect();
        let mut verdicts: Vec<&str> = kinds.iter().flatten().map(|k| k.label()).collect();
        if kinds.len() > 1 {
            verdicts.push("differs");
        }
        body.push_str(&format!(
            "<tr data-suite=\"{}\" data-verdicts=\"{}\"><td><code>{}</code></td><td>{}</td>",
            esc(row.suite),
            verdicts.join(" "),
            esc(id),
            row.severity
        ));
        for cell in &row.cells {
            match cell {
                Some(r) => body.push_str(&format!(
                    "<td class=\"cell\" title=\"{}\">{}</td>",
                    esc(&super::one_line(&r.verdict.reason, 300)),
                    verdict_badge(Some(r.verdict.kind))
                )),
                None => {
                    body.push_str(&format!("<td class=\"cell\" title=\"not in this run\">{}</td>", verdict_badge(None)))
                }
            }
        }
        body.push_str("</tr>\n");
    }
    body.push_str("</tbody>\n</table>\n");
    page("REAPI conformance: servers side by side", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::OutcomeClass;
    use crate::verdict::fixtures::{result, summary};
    use crate::verdict::Verdict;

    const HOSTILE: &str = "<script>alert(1)</script>\"' onload=x &amp; \u{202e}\x1b[31m</details>";

    fn hostile_run() -> RunSummary {
        let mut failed = result(
            &format!("sandbox.x{HOSTILE}"),
            "blocker",
            Verdict::new(VerdictKind::Fail, format!("server said {HOSTILE}")).with(
                format!("probe.{HOSTILE}"),
                Some(HOSTILE.into()),
                HOSTILE,
            ),
        );
        failed.hint = Some(format!("hint {HOSTILE}"));
        failed.source = HOSTILE.into();
        failed.suite = HOSTILE.into();
        let mut run = summary(vec![
            result("input-root.root-entries", "blocker", Verdict::new(VerdictKind::Fail, "host /")),
            failed,
            result("cas.y", "spec", Verdict::skip(HOSTILE)),
        ]);
        run.target = format!("grpc://{HOSTILE}:1");
        run.instance = HOSTILE.into();
        run.server = Some(HOSTILE.into());
        run.profile = Some(HOSTILE.into());
        run
    }

    /// The page outside the page's own style and script: what server text may reach.
    fn markup(page: &str) -> String {
        page.replace(STYLE, "").replace(SCRIPT, "")
    }

    #[test]
    fn server_text_is_escaped_everywhere() {
        for page in [render(&hostile_run()), matrix(&[hostile_run(), summary(Vec::new())])] {
            let m = markup(&page);
            assert_eq!(m.matches("<script>").count(), 1, "only the page's own script: {m}");
            assert!(!m.contains("<script>alert"), "{m}");
            assert!(!m.contains("\" onload") && !m.contains("' onload"), "{m}");
            assert!(!m.contains('\u{202e}') && !m.contains('\x1b'), "{m}");
            assert!(m.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39; onload=x &amp;amp; \\u{202e}\\u{1b}[31m&lt;/details&gt;"), "{m}");
            // Every element opened is closed: the hostile `</details>` closed none.
            assert_eq!(m.matches("<details").count(), m.matches("</details>").count(), "{m}");
        }
    }

    #[test]
    fn a_huge_server_answer_is_cut() {
        let huge = "x".repeat(1 << 20);
        let run = summary(vec![result(
            "cas.a",
            "spec",
            Verdict::new(VerdictKind::Fail, huge.clone()).with("stderr", None, huge),
        )]);
        let page = render(&run);
        assert!(page.len() < 64 * 1024, "{} bytes", page.len());
        assert!(page.contains(&format!("{}…", "x".repeat(MAX_SHOWN))));
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hé", 2), "hé");
    }

    #[test]
    fn the_answer_comes_first_and_root_causes_group_their_consequences() {
        let run = summary(vec![
            result(
                "input-root.marker-file",
                "blocker",
                Verdict::new(VerdictKind::Fail, "marker missing").with_outcome(OutcomeClass::Completed),
            ),
            result("input-root.root-entries", "blocker", Verdict::new(VerdictKind::Fail, "host /")),
            result("cas.z", "spec", Verdict::pass("fine")),
        ]);
        let page = render(&run);
        let answer =
            page.find("id=\"answer\">BuildStream builds here: NO — no element builds here</p>").expect("answer line");
        assert!(answer < page.find("id=\"ran\"").unwrap() && answer < page.find("class=\"check\"").unwrap());
        let root = page.find("<code>input-root.root-entries</code></a>: host /").expect("root cause listed");
        let grouped = page
            .find("1 more that follow from it (their commands did not run from the input root)")
            .expect("consequences folded");
        assert!(
            root < grouped && grouped < page.find("<code>input-root.marker-file</code></a>: marker missing").unwrap()
        );
        // The consequence's own line names its root cause, linked; the root's does not.
        let line = |id: &str| {
            let at = page.find(&format!("<code class=\"id\">{id}</code>")).expect("check listed");
            page[at..].split("</summary>").next().unwrap_or_default().to_string()
        };
        assert!(
            line("input-root.marker-file")
                .contains("follows from <a href=\"#check-1\"><code>input-root.root-entries</code></a>"),
            "{page}"
        );
        assert!(!line("input-root.root-entries").contains("follows from"), "{page}");
        assert!(page.contains("<code>buildstream@2026.12</code>"), "the profile version: {page}");
        assert!(page.contains(&format!("reapi-conformance {}", env!("CARGO_PKG_VERSION"))));
        assert_eq!(page, render(&run), "a pure function of the verdicts");
    }

    #[test]
    fn every_verdict_is_in_the_page_without_script() {
        let kinds = [VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Warn, VerdictKind::Error, VerdictKind::Skip];
        let run = summary(
            kinds.iter().map(|&k| result(&format!("cas.{}", k.label()), "spec", Verdict::new(k, "r"))).collect(),
        );
        let page = render(&run);
        for k in kinds {
            assert!(page.contains(&format!("data-verdicts=\"{0}\"><summary><span class=\"v v-{0}\">{0}</span> <code class=\"id\">cas.{0}</code>", k.label())), "{page}");
        }
        // The filters are shown only by the script.
        assert!(page.contains("<form id=\"filters\" hidden>"), "{page}");
    }

    #[test]
    fn the_matrix_has_a_column_per_run_and_marks_differences() {
        let a =
            summary(vec![result("cas.a", "spec", Verdict::pass("ok")), result("cas.b", "spec", Verdict::pass("ok"))]);
        let mut b = summary(vec![result("cas.a", "spec", Verdict::new(VerdictKind::Fail, "bad"))]);
        b.target = "other".into();
        let page = matrix(&[a, b]);
        assert!(
            page.contains(
                "<tr data-suite=\"cas\" data-verdicts=\"PASS FAIL differs\"><td><code>cas.a</code></td><td>MUST</td>"
            ),
            "{page}"
        );
        assert!(page.contains("title=\"not in this run\"><span class=\"v v-none\">—</span>"), "{page}");
        assert!(page.contains("<th class=\"run\">t</th><th class=\"run\">other</th>"), "{page}");
        assert_eq!(page.matches("<td class=\"answer-cell not-assessed\"").count(), 2, "{page}");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Escaped text holds nothing markup acts on, wherever it is put
        /// (content or quoted attribute), and every `&` starts an entity of ours.
        #[test]
        fn escaped_text_is_inert(text in prop::collection::vec(prop_oneof![
            any::<char>().prop_map(String::from),
            prop::sample::select(vec!["<", ">", "&", "\"", "'", "</details>", "<!--", "]]>", "\u{202e}", "\x1b", "&amp;"]).prop_map(String::from),
        ], 0..32).prop_map(|p| p.concat())) {
            let e = esc(&text);
            prop_assert!(!e.contains(['<', '>', '"', '\'']), "{e}");
            prop_assert!(!e.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{e:?}");
            for (i, _) in e.match_indices('&') {
                let rest = &e[i..];
                prop_assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|x| rest.starts_with(x)), "{e}");
            }
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_own_style_and_script() {
        // The hash of "" under SHA-256, as browsers compute it.
        assert_eq!(csp_hash(""), "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='");
        let page = render(&summary(Vec::new()));
        assert!(page.contains(&format!("script-src {}", csp_hash(SCRIPT))), "{page}");
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("src=\""), "{page}");
    }
}
