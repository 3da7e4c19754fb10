//! Built-in checks on the server's scheduler, through the Remote Workers API:
//! the harness registers its own short-lived probe bots with chosen platform
//! properties and watches which of them gets which lease. Only possible where
//! the Bots endpoint is known (clusters the harness starts, or `--bots-endpoint`).

use std::time::Duration;

use super::unmet;
use crate::execute::Outcome;
use crate::harness::Harness;
use crate::suite::{CheckSpec, OutcomeClass};
use crate::verdict::Verdict;
use crate::worker::{self, Mode, WorkerConfig, WorkerHandle};

/// A platform value no real worker has, for decoy bots.
const DECOY_ISA: &str = "reapi-conformance-decoy";

/// A probe bot and its scratch directory, removed on drop.
struct ProbeBot {
    handle: WorkerHandle,
    dir: std::path::PathBuf,
}

impl ProbeBot {
    async fn start(
        h: &Harness,
        endpoint: &str,
        name: &str,
        platform: Vec<(String, String)>,
    ) -> Result<ProbeBot, Verdict> {
        // A run directory (locked while it lives), so a killed run's bot
        // directory is swept by the next run like every other.
        let dir = crate::cluster::rundir::create("probe-bot", false).map_err(|e| Verdict::error(e.to_string()))?;
        let config = WorkerConfig {
            endpoint: endpoint.to_string(),
            instance: h.clients().instance.clone(),
            bot_id: format!("reapi-conformance-{name}-{}", uuid::Uuid::new_v4().simple()),
            platform,
            // Probe bots run the probe itself, from the working directory.
            mode: Mode::Host,
            capacity: 1,
            work_dir: dir.clone(),
        };
        let mut handle = worker::spawn(config).map_err(|e| Verdict::error(format!("probe bot {name}: {e}")))?;
        if let Err(e) = handle.wait_registered(h.options.rpc_timeout).await {
            handle.stop().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Verdict::error(format!("probe bot {name} could not register: {e}")));
        }
        Ok(ProbeBot { handle, dir })
    }

    fn leases(&self) -> u64 {
        self.handle.state().completed
    }

    async fn stop(mut self) {
        self.handle.stop().await;
    }
}

impl Drop for ProbeBot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The check's action with an ISA no other worker, check or run has, and
/// that platform as pairs. Unique values keep probe bots from taking other
/// checks' queued actions (e.g. the platform suite's foreign-ISA ones) and
/// the cluster's own workers from matching by chance.
fn unique_platform(check: &CheckSpec, role: &str) -> (crate::suite::ActionSpec, Vec<(String, String)>) {
    let isa = format!("reapi-conformance-{role}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let platform = vec![("ISA".to_string(), isa), ("OSFamily".to_string(), "linux".to_string())];
    let mut spec = check.action.clone();
    spec.platform = Some(platform.iter().map(|(n, v)| format!("{n}={v}")).collect());
    (spec, platform)
}

fn with_isa(platform: &[(String, String)], isa: &str) -> Vec<(String, String)> {
    platform.iter().map(|(n, v)| (n.clone(), if n == "ISA" { isa.to_string() } else { v.clone() })).collect()
}

fn bots_endpoint(h: &Harness) -> Result<String, Verdict> {
    h.target.bots_endpoint.clone().ok_or_else(|| {
        Verdict::skip(
            "needs the cluster's Remote Workers API (Bots) endpoint: --cluster buildgrid, or --bots-endpoint URL",
        )
    })
}

/// With only a decoy bot (another ISA) registered, an action for an ISA no
/// bot has is leased to nobody.
pub(super) async fn no_lease_without_match(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let endpoint = bots_endpoint(h)?;
    let (spec, platform) = unique_platform(check, "unmatched");
    let decoy = ProbeBot::start(h, &endpoint, "decoy", with_isa(&platform, DECOY_ISA)).await?;
    let prepared = match h.upload(&check.id, &spec).await {
        Ok(p) => p,
        Err(e) => {
            decoy.stop().await;
            return Ok(e.precondition());
        }
    };
    let (outcome, _) = h.execute(&prepared, h.options.queue_wait).await;
    let decoy_leases = decoy.leases();
    decoy.stop().await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(Verdict::error(e.to_string())),
    };
    let wanted = "no lease: still queued (or refused)".to_string();
    match &outcome {
        Outcome::Queued { .. } | Outcome::Rejected { .. } | Outcome::Failed { .. } if decoy_leases == 0 => {
            Ok(Verdict::pass(format!("no bot got the lease: {}", outcome.describe())))
        }
        _ => Ok(Verdict::new(
            unmet(check),
            format!(
                "an action for an ISA no bot has ran ({decoy_leases} lease(s) to the decoy bot): {}",
                outcome.describe()
            ),
        )
        .with("lease", Some(wanted), format!("{}; decoy bot ran {decoy_leases}", outcome.describe()))),
    }
}

/// An action for an ISA no bot has stays queued, and goes to a bot with that
/// ISA as soon as one registers.
pub(super) async fn lease_when_matching_bot_appears(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let endpoint = bots_endpoint(h)?;
    let (spec, platform) = unique_platform(check, "awaited");
    let prepared = match h.upload(&check.id, &spec).await {
        Ok(p) => p,
        Err(e) => return Ok(e.precondition()),
    };
    // A decoy bot waits too, so a scheduler that hands out leases
    // regardless of platform shows even on a cluster without idle workers.
    let decoy = ProbeBot::start(h, &endpoint, "decoy", with_isa(&platform, DECOY_ISA)).await?;
    let wait = h.options.queue_wait;
    let execution = h.execute(&prepared, wait + h.options.timeout);
    tokio::pin!(execution);
    // First: nobody may take it while no matching bot exists.
    let early = tokio::time::timeout(wait, &mut execution).await;
    let decoy_leases = decoy.leases();
    decoy.stop().await;
    if let Ok((outcome, _)) = early {
        let observed = match outcome {
            // Refusing a platform no worker has is the spec's answer; then nothing waits for a bot.
            Ok(o) if matches!(o.class(), OutcomeClass::Rejected | OutcomeClass::Failed) && decoy_leases == 0 => {
                return Ok(Verdict::skip(format!(
                    "the server answers a platform no worker has at once ({}), so no action waits for a new bot",
                    o.describe()
                )));
            }
            Ok(o) => o.describe(),
            Err(e) => return Ok(Verdict::error(e.to_string())),
        };
        return Ok(Verdict::new(unmet(check), format!("finished before any matching bot existed: {observed}"))
            .with("outcome", Some(format!("still queued after {:.1}s", wait.as_secs_f64())), observed)
            .with("decoy_bot_leases", Some("0".into()), decoy_leases.to_string()));
    }
    if decoy_leases > 0 {
        return Ok(Verdict::new(unmet(check), "the decoy bot (another ISA) was given the lease").with(
            "decoy_bot_leases",
            Some("0".into()),
            decoy_leases.to_string(),
        ));
    }
    let bot = ProbeBot::start(h, &endpoint, "matching", platform).await?;
    let (outcome, _) = execution.await;
    // The lease count is updated once the bot has reported the result.
    let mut leases = bot.leases();
    for _ in 0..20 {
        if leases > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        leases = bot.leases();
    }
    bot.stop().await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(Verdict::error(e.to_string())),
    };
    match &outcome {
        Outcome::Completed { .. } if leases >= 1 => {
            Ok(Verdict::pass(format!("queued, then leased to the new matching bot: {}", outcome.describe())))
        }
        _ => Ok(Verdict::new(
            unmet(check),
            format!("after a matching bot registered: {}; it ran {leases} lease(s)", outcome.describe()),
        )
        .with(
            "lease",
            Some("completed by the matching probe bot".into()),
            format!("{}; probe bot leases {leases}", outcome.describe()),
        )),
    }
}
