//! A bot for the Remote Workers API (`google.devtools.remoteworkers.v1test2.Bots`),
//! the protocol BuildGrid uses to hand actions to workers.
//!
//! BuildGrid executes nothing itself, and its usual bot (buildbox-worker) is
//! not installable here, so the harness brings this one. It opens a bot
//! session with the configured platform properties, long-polls
//! `UpdateBotSession` for leases, runs each lease's Action and reports the
//! ActionResult. Two ways to run an Action:
//!
//! - [`Mode::BuildboxRun`]: hand it to `buildbox-run` (the bubblewrap runner),
//!   which stages the input root from the server's CAS and runs the command
//!   with the input root as `/` — what BuildStream's CI does with buildbox-worker;
//! - [`Mode::Host`]: stage the input root in a plain directory and run the
//!   command on the host, with no chroot — a deliberately misconfigured
//!   cluster, so the suites can show what they catch.

#![warn(missing_docs)]

use std::path::PathBuf;

use bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult;
use bazel_remote_apis::google::rpc::Status;
use tonic_types::pb::{precondition_failure::Violation, PreconditionFailure};

mod buildbox_run;
mod ctx;
mod lease_cas;
/// SHA-256 digests (the shared definition).
pub use reapi_client::digest;
mod host;
mod process;
mod session;

pub use process::{
    adopt_orphans, descendants, executable_write_turn, forking, kill_all, kill_leftovers, own_group_killed_with_parent,
    reap_orphans, write_file, ScratchDir,
};
pub use session::{spawn, WorkerHandle, WorkerState};

/// Generated Remote Workers API types and client (from `proto/google/devtools/remoteworkers`).
#[allow(missing_docs)] // generated code
pub mod proto {
    tonic::include_proto!("google.devtools.remoteworkers.v1test2");
}

/// How leases are executed.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Through `buildbox-run` (bubblewrap): input root as `/`.
    BuildboxRun {
        /// The `buildbox-run` executable.
        runner: PathBuf,
    },
    /// Directly on the host in a per-action directory (no sandbox).
    Host,
}

impl Mode {
    /// The mode's name in logs and configuration: `buildbox-run` or `host`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::BuildboxRun { .. } => "buildbox-run",
            Mode::Host => "host",
        }
    }
}

/// One bot.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Bots and CAS endpoint, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Instance name: the bot session's parent and the CAS instance.
    pub instance: String,
    /// Stable, unique id of this bot.
    pub bot_id: String,
    /// Properties of the primary device, e.g. `OSFamily=linux`, `ISA=x86-64`.
    pub platform: Vec<(String, String)>,
    /// How its leases are executed.
    pub mode: Mode,
    /// Leases run at once (BuildGrid reads it from the worker config `capacity`).
    pub capacity: usize,
    /// Scratch space for staged inputs; one subdirectory per lease.
    pub work_dir: PathBuf,
}

/// What a lease produced: the status BuildGrid copies into
/// `ExecuteResponse.status`, and the result when the command ran.
#[derive(Clone, Debug)]
pub struct LeaseOutcome {
    /// OK when the command ran (whatever its exit code), else why it did not.
    pub status: Status,
    /// The command's result, when it ran.
    pub result: Option<ActionResult>,
}

impl LeaseOutcome {
    /// The command ran and produced `result`.
    pub fn ok(result: ActionResult) -> LeaseOutcome {
        LeaseOutcome { status: Status { code: 0, message: String::new(), details: vec![] }, result: Some(result) }
    }

    /// The command did not run (or its result is lost): `code` and why.
    pub fn error(code: tonic::Code, message: impl Into<String>) -> LeaseOutcome {
        LeaseOutcome { status: Status { code: code as i32, message: message.into(), details: vec![] }, result: None }
    }
}

impl From<lease_cas::CasFailure> for LeaseOutcome {
    /// A missing input becomes FAILED_PRECONDITION with a `MISSING`
    /// violation for `blobs/{hash}/{size}`, as REAPI asks of Execute.
    fn from(f: lease_cas::CasFailure) -> LeaseOutcome {
        let mut outcome = LeaseOutcome::error(f.code, f.message);
        if let Some(d) = f.missing {
            let detail = PreconditionFailure {
                violations: vec![Violation {
                    r#type: "MISSING".into(),
                    subject: format!("blobs/{}/{}", d.hash, d.size_bytes),
                    description: String::new(),
                }],
            };
            outcome.status.details.push(bazel_remote_apis::google::protobuf::Any {
                type_url: "type.googleapis.com/google.rpc.PreconditionFailure".into(),
                value: prost::Message::encode_to_vec(&detail).into(),
            });
        }
        outcome
    }
}
