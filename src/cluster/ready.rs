//! When a cluster is ready: it answers GetCapabilities and runs a trivial
//! action (BuildStream's default shape) to completion — a server may answer
//! before its workers have registered. Shared by every adapter that waits
//! for that, and built on the layers below the harness (connection, CAS,
//! executor), so no cluster reaches up into the harness.

use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::GetCapabilitiesRequest;

use super::{ClusterError, ManagedProcess};
use crate::action::{self, Vars};
use crate::cas::Cas;
use crate::connection::{Clients, ConnectOptions};
use crate::execute::{self, ExecuteParams, Inflight};
use crate::suite::{ActionSpec, OutcomeClass};

/// One try: `Ok` when a trivial action completed, else why not. The action
/// carries the platform `vars` name (the ISA the workers advertise).
pub async fn trivial_action_completes(
    target: &ConnectOptions,
    vars: &Vars,
    rpc_timeout: Duration,
    budget: Duration,
) -> Result<(), String> {
    let clients = Clients::new(target, rpc_timeout).map_err(|e| e.to_string())?;
    let msg = GetCapabilitiesRequest { instance_name: clients.instance.clone() };
    let caps = clients
        .call(clients.capabilities.clone().get_capabilities(clients.request(msg)))
        .await
        .map_err(|s| format!("GetCapabilities: {:?}: {}", s.code(), s.message()))?;
    let max_batch = caps.cache_capabilities.as_ref().map(|c| c.max_batch_total_size_bytes).unwrap_or(0);
    let salt = format!("reapi-conformance/readiness/{}", uuid::Uuid::new_v4()).into_bytes();
    let prepared =
        action::prepare(&ActionSpec::default(), vars, &crate::probe::probe_blob(), &salt).map_err(|e| e.to_string())?;
    let cas = Cas::new(clients.clone(), max_batch);
    cas.upload(&prepared.blobs).await.map_err(|e| format!("uploading a trivial action: {e}"))?;
    let params = ExecuteParams { action_digest: prepared.action_digest.clone(), skip_cache_lookup: false, budget };
    let inflight = Inflight::default();
    let (outcome, _) = execute::execute(&clients, &params, &inflight).await;
    inflight.cancel_all(&clients).await;
    match outcome {
        Ok(o) if o.class() == OutcomeClass::Completed => Ok(()),
        Ok(o) => Err(format!("a trivial action: {}", o.describe())),
        Err(e) => Err(e.to_string()),
    }
}

/// Tries every second until a trivial action completes or `limit` passes;
/// the error says what the last try saw.
pub async fn wait(target: &ConnectOptions, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < limit {
        match trivial_action_completes(target, &Vars::for_host(), Duration::from_secs(5), Duration::from_secs(20)).await
        {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

/// Polls GetCapabilities until the endpoint answers or the process dies.
pub async fn until_capabilities_answer(
    opts: &ConnectOptions,
    process: &mut ManagedProcess,
    limit: Duration,
) -> Result<Duration, ClusterError> {
    let start = Instant::now();
    let clients = Clients::new(opts, Duration::from_secs(2)).map_err(|e| ClusterError(e.to_string()))?;
    loop {
        let req = clients.request(GetCapabilitiesRequest { instance_name: opts.instance.clone() });
        if clients.call(clients.capabilities.clone().get_capabilities(req)).await.is_ok() {
            return Ok(start.elapsed());
        }
        if let Some(exit) = process.startup_exit() {
            return Err(exit);
        }
        if start.elapsed() > limit {
            return Err(ClusterError(format!(
                "{} did not answer within {}s:\n{}",
                process.name,
                limit.as_secs(),
                process.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `limit` until a trivial action with `vars` completes on
/// `target`, for a cluster of `processes` (its worker last) that `cluster`
/// names in the error. A process that exits fails the wait at once, with
/// its log; at the limit, the last answer and the worker's log are told.
pub async fn until_trivial_action_completes(
    target: &ConnectOptions,
    vars: &Vars,
    processes: &mut [ManagedProcess],
    limit: Duration,
    cluster: &str,
) -> Result<(), ClusterError> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < limit {
        if let Some(death) = processes.iter_mut().find_map(|p| p.death().map(|d| (d, p.log_tail()))) {
            return Err(ClusterError(format!("{} during start-up:\n{}", death.0, death.1)));
        }
        match trivial_action_completes(target, vars, Duration::from_secs(5), Duration::from_secs(20)).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let worker = processes.last().map(|p| (p.name.clone(), p.log_tail())).unwrap_or_default();
    Err(ClusterError(format!(
        "{cluster} did not run a trivial action within {} s: {}\n{}'s log ends:\n{}",
        limit.as_secs(),
        last.split_whitespace().collect::<Vec<_>>().join(" "),
        worker.0,
        worker.1
    )))
}
