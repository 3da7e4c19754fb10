//! Platform matching. The server stands for one worker with exactly
//! `OSFamily=linux` and `ISA=<host ISA>`, which can also run as a given
//! `unixUID`/`unixGID` and with `network=on`.

use std::collections::BTreeMap;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use tonic::Status;

use super::defects::{Defect, Defects};

/// How the worker runs an action it accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// uid and gid inside the user namespace; 0 (root) unless asked.
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `network=on`: keep the host's network namespace.
    pub(crate) network: bool,
}

/// Where an accepted action goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The worker matches: run it this way.
    Run(RunAs),
    /// Known property names, but values no worker has: it waits in the queue
    /// for a worker that never comes. The string says why.
    Queue(String),
}

/// The host's ISA in BuildStream's naming (`x86_64` → `x86-64`, ...).
pub(crate) fn host_isa() -> String {
    reapi_client::isa::host().to_string()
}

/// The platform the server reads: the Action's, else the Command's (v2.2).
#[allow(deprecated)] // Command.platform is deprecated but BuildStream still sends it.
pub(crate) fn requested_platform<'a>(
    action: &'a re::Action,
    command: &'a re::Command,
    defects: &Defects,
) -> &'a [re::platform::Property] {
    let from_action = action.platform.as_ref().map(|p| p.properties.as_slice()).unwrap_or_default();
    let from_command = command.platform.as_ref().map(|p| p.properties.as_slice()).unwrap_or_default();
    let read_action = if defects.has(Defect::PlatformFromCommandOnly) {
        false
    } else if defects.has(Defect::PlatformFromActionOnly) || defects.has(Defect::ExactPlatformMatch) {
        true
    } else {
        !from_action.is_empty()
    };
    if read_action {
        from_action
    } else {
        from_command
    }
}

/// Decides where an action goes. An `Err` is the gRPC status Execute fails
/// with at once.
pub(crate) fn place(
    action: &re::Action,
    command: &re::Command,
    defects: &Defects,
    host_isa: &str,
) -> Result<Placement, Status> {
    let properties = requested_platform(action, command, defects);

    if defects.has(Defect::PlatformIgnored) {
        return Ok(Placement::Run(RunAs::default()));
    }

    // Group values by name: a name asked for with two different values can
    // never be matched by one worker.
    let mut requested: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for property in properties {
        requested.entry(property.name.as_str()).or_default().push(property.value.as_str());
    }

    let mut run_as = RunAs::default();
    let mut unmatched = Vec::new();
    if defects.has(Defect::ExactPlatformMatch) {
        for name in ["ISA", "OSFamily"] {
            if !requested.contains_key(name) {
                unmatched.push(format!("no worker has a platform without {name}"));
            }
        }
    }
    for (name, values) in &requested {
        let value = values[0];
        if values.iter().any(|v| *v != value) {
            unmatched.push(format!("{name} asked with several values {values:?}"));
            continue;
        }
        let matched = match *name {
            "OSFamily" => value == "linux",
            // With `isa-named-differently` the worker calls its ISA by uname's
            // name (x86_64), so BuildStream's name (x86-64) matches nothing.
            "ISA" if defects.has(Defect::IsaNamedDifferently) => value == std::env::consts::ARCH,
            "ISA" => {
                value == host_isa
                    || defects.has(Defect::IsaMismatchExecuted)
                    || defects.has(Defect::ForeignIsaLateDispatch)
            }
            "unixUID" => value.parse().map(|uid| run_as.uid = uid).is_ok(),
            "unixGID" => value.parse().map(|gid| run_as.gid = gid).is_ok(),
            "network" => match value {
                "on" => {
                    run_as.network = true;
                    true
                }
                "off" => true,
                _ => false,
            },
            _ if defects.has(Defect::UnknownKeysAccepted) => true,
            _ => return Err(Status::failed_precondition(format!("unknown platform property {name:?}"))),
        };
        if !matched {
            unmatched.push(format!("no worker has {name}={value}"));
        }
    }
    if unmatched.is_empty() {
        Ok(Placement::Run(run_as))
    } else if defects.has(Defect::UnmatchedPlatformQueued) || defects.has(Defect::SchedulerIgnoresPlatform) {
        // Like BuildGrid: wait for a worker that may never come (or, with
        // `scheduler-ignores-platform`, hand it to whichever bot asks).
        Ok(Placement::Queue(unmatched.join("; ")))
    } else {
        // The spec's answer for "no worker being available".
        Err(Status::failed_precondition(format!("no workers exist for this platform: {}", unmatched.join("; "))))
    }
}
