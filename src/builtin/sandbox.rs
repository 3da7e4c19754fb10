//! Built-in checks on the sandbox: what `/`, `/proc` and neighbouring actions look like.

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{completed_report, unmet};
use crate::evaluate;
use crate::runner::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Entries the sandbox may add to `/` besides the input root: the runtime
/// mounts BuildStream's own sandbox provides (docs/requirements.md §3).
const RUNTIME_MOUNTS: &[&str] = &["dev", "proc", "tmp", "sys"];

/// `/` inside the action holds exactly the staged top-level entries plus
/// runtime mounts: nothing staged is missing, nothing of the worker host shows.
pub(super) fn root_is_input_root<'a>(h: &'a Harness, check: &'a CheckSpec) -> BoxFuture<'a, Verdict> {
    Box::pin(async move {
        let (prepared, report) = match completed_report(h, check).await {
            Ok(x) => x,
            Err(v) => return v,
        };
        let Some(root) = report.get("root").and_then(Value::as_object) else {
            return Verdict::new(unmet(check), "the probe could not list `/`").with(
                "root",
                Some("a readable /".into()),
                evaluate::excerpt(&report["errors"]),
            );
        };
        let seen: Vec<&String> = root.keys().collect();
        let missing: Vec<&String> = prepared.root_entries.iter().filter(|e| !root.contains_key(*e)).collect();
        let foreign: Vec<&String> = seen
            .iter()
            .copied()
            .filter(|e| !prepared.root_entries.contains(e) && !RUNTIME_MOUNTS.contains(&e.as_str()))
            .collect();
        let expected = format!("{:?} plus at most {:?}", prepared.root_entries, RUNTIME_MOUNTS);
        if missing.is_empty() && foreign.is_empty() {
            return Verdict::pass(format!("/ holds {seen:?}")).with("root", Some(expected), format!("{seen:?}"));
        }
        let mut why = Vec::new();
        if !foreign.is_empty() {
            why.push(format!("entries not in the input root: {foreign:?}"));
        }
        if !missing.is_empty() {
            why.push(format!("staged entries missing: {missing:?}"));
        }
        Verdict::new(unmet(check), format!("/ is not the input root: {}", why.join("; ")))
            .with("root", Some(expected), format!("{seen:?}"))
            .with("cwd", None, evaluate::excerpt(&report["cwd"]))
    })
}

/// More processes than a sandbox's init, the probe and a helper or two means
/// the worker's PID namespace shows through.
const MAX_SANDBOX_PIDS: usize = 16;

/// `/proc` is a procfs of the action's own PID namespace.
pub(super) fn proc_shows_own_processes<'a>(h: &'a Harness, check: &'a CheckSpec) -> BoxFuture<'a, Verdict> {
    Box::pin(async move {
        let (_, report) = match completed_report(h, check).await {
            Ok(x) => x,
            Err(v) => return v,
        };
        let unmet = unmet(check);
        let proc_mounted = report["mountinfo"].as_array().is_some_and(|lines| {
            lines.iter().filter_map(Value::as_str).any(|l| l.contains(" /proc ") && l.contains(" - proc "))
        });
        let Some(pids) = report["pids"].as_array() else {
            return Verdict::new(unmet, "/proc is not a procfs: no process entries")
                .with("pids", Some("the processes of the action's PID namespace".into()), "none (no procfs)")
                .with("probe.errors", None, evaluate::excerpt(&report["errors"]));
        };
        if !proc_mounted {
            return Verdict::new(unmet, "no procfs is mounted at /proc").with(
                "mountinfo",
                Some("a proc mount at /proc".into()),
                evaluate::excerpt(&report["mountinfo"]),
            );
        }
        let own = &report["pid"];
        if !pids.contains(own) {
            return Verdict::new(unmet, format!("/proc does not list the probe itself (pid {own})")).with(
                "pids",
                Some(format!("including {own}")),
                evaluate::excerpt(&report["pids"]),
            );
        }
        if let Some(foreign) = foreign_processes(&report) {
            if !foreign.is_empty() {
                return Verdict::new(
                    unmet,
                    format!(
                        "/proc shows {} process(es) that are not the action's own (not the probe's ancestors): {}",
                        foreign.len(),
                        foreign.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
                .with(
                    "processes",
                    Some("only the probe and its ancestors (the sandbox's init, the shell)".into()),
                    evaluate::excerpt(&report["processes"]),
                );
            }
        } else if pids.len() > MAX_SANDBOX_PIDS {
            // An older probe or unreadable stat files: fall back on the count.
            return Verdict::new(
                unmet,
                format!("/proc shows {} processes: the worker's PID namespace, not the action's", pids.len()),
            )
            .with(
                "pids",
                Some(format!("at most {MAX_SANDBOX_PIDS}, including the probe")),
                evaluate::excerpt(&report["pids"]),
            );
        }
        Verdict::pass(format!("/proc shows {} process(es), the probe is pid {own}", pids.len()))
    })
}

/// Visible processes that are neither the probe nor one of its ancestors, as
/// "PID (NAME)"; `None` when the report has no parent links. In the action's
/// own PID namespace the sandbox's init and the command's chain are all there
/// is; anything else belongs to the worker or to another action.
fn foreign_processes(report: &Value) -> Option<Vec<String>> {
    let processes = report["processes"].as_array().filter(|p| !p.is_empty())?;
    let parent_of: std::collections::HashMap<i64, i64> = processes
        .iter()
        .filter_map(|p| Some((p["pid"].as_i64()?, p["ppid"].as_i64().unwrap_or(0))))
        .collect();
    let mut lineage = std::collections::HashSet::new();
    let mut next = report["pid"].as_i64();
    // Bounded walk: a parent link cycle in a hostile report cannot loop.
    while let Some(pid) = next.filter(|pid| *pid > 0 && lineage.len() <= processes.len()) {
        if !lineage.insert(pid) {
            break;
        }
        next = parent_of.get(&pid).copied();
    }
    Some(
        processes
            .iter()
            .filter(|p| p["pid"].as_i64().is_some_and(|pid| !lineage.contains(&pid)))
            .map(|p| format!("{} ({})", p["pid"], p["name"].as_str().unwrap_or("?")))
            .collect(),
    )
}

/// Two actions running at the same time on identical input roots do not see
/// each other's files, in `/tmp` or in the input root.
pub(super) fn actions_isolated<'a>(h: &'a Harness, check: &'a CheckSpec) -> BoxFuture<'a, Verdict> {
    Box::pin(async move {
        let marker = format!("isolation-{}", uuid::Uuid::new_v4().simple());
        let workdir = crate::action::DEFAULT_WORKDIR;
        let paths = [format!("/tmp/{marker}"), format!("/{workdir}/{marker}")];
        let mut writer = check.action.clone();
        writer.probe = paths.iter().flat_map(|p| ["--write".to_string(), format!("{p}=written")]).collect();
        writer.probe.extend(["--sleep".to_string(), "900".to_string()]);
        let mut reader = check.action.clone();
        reader.probe = vec!["--sleep".into(), "400".into()];
        reader.probe.extend(paths.iter().flat_map(|p| ["--read".to_string(), p.clone()]));
        let (writer_key, reader_key) = (format!("{}/writer", check.id), format!("{}/reader", check.id));
        let (w, r) = tokio::join!(super::run_to_completion(h, &writer_key, check, &writer), async {
            let (_, outcome) = super::run_to_completion(h, &reader_key, check, &reader).await?;
            match h.probe_output(&outcome).await {
                Ok(Some(p)) => p.report.map_err(|why| {
                    Verdict::new(unmet(check), format!("reader produced no report ({why})")).with(
                        "stdout",
                        Some("a probe report (one JSON object)".into()),
                        p.stdout_excerpt.clone(),
                    )
                }),
                Ok(None) => Err(Verdict::error("reader completed without a result")),
                Err(e) => Err(Verdict::error(e)),
            }
        });
        if let Err(v) = w {
            return v;
        }
        let report = match r {
            Ok(report) => report,
            Err(v) => return v,
        };
        let seen: Vec<&String> =
            paths.iter().filter(|p| report["paths"][p.as_str()]["exists"] != Value::Bool(false)).collect();
        if seen.is_empty() {
            Verdict::pass("a concurrent action's files were not visible")
        } else {
            Verdict::new(unmet(check), format!("files written by a concurrent action are visible: {seen:?}")).with(
                "reader",
                Some("absent".into()),
                evaluate::excerpt(&report["paths"]),
            )
        }
    })
}
