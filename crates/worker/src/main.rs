//! `reapi-worker`: the Remote Workers API bot as a program of its own, for
//! clusters whose parts run in containers (`compose/local/`). The harness's
//! native BuildGrid cluster runs the same bot in-process.

use std::path::PathBuf;

use clap::Parser;
use reapi_worker::{Mode, WorkerConfig};

/// A Remote Workers API bot: registers with a BuildGrid-style Bots service
/// and runs each leased action through buildbox-run (bubblewrap: the input
/// root as `/`) or, with `--host`, on the host with no sandbox.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Bots, CAS and ByteStream endpoint, e.g. `http://controller:50051`.
    #[arg(long)]
    endpoint: String,
    /// Instance name of the bot session and the CAS.
    #[arg(long, default_value = "")]
    instance: String,
    /// A platform property of the bot, `NAME=VALUE` (repeatable), e.g.
    /// `--platform OSFamily=linux --platform ISA=x86-64`.
    #[arg(long = "platform", value_parser = property)]
    platform: Vec<(String, String)>,
    /// The buildbox-run (bubblewrap) program that runs each action.
    #[arg(long, conflicts_with = "host", required_unless_present = "host")]
    buildbox_run: Option<PathBuf>,
    /// Run actions on the host in a plain directory instead (no sandbox).
    #[arg(long)]
    host: bool,
    /// Actions run at once.
    #[arg(long, default_value_t = 4)]
    capacity: usize,
    /// Scratch space for staged inputs.
    #[arg(long, default_value = "/var/lib/reapi-worker")]
    work_dir: PathBuf,
    /// Stable id of this bot (default: a new UUID).
    #[arg(long)]
    bot_id: Option<String>,
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mode = match args.buildbox_run {
        Some(runner) => Mode::BuildboxRun { runner },
        None => Mode::Host,
    };
    let config = WorkerConfig {
        endpoint: args.endpoint,
        instance: args.instance,
        bot_id: args.bot_id.unwrap_or_else(|| format!("reapi-worker-{}", uuid::Uuid::new_v4())),
        platform: args.platform,
        mode,
        capacity: args.capacity.max(1),
        work_dir: args.work_dir,
    };
    let mut handle = match reapi_worker::spawn(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("reapi-worker: {e}");
            std::process::exit(2);
        }
    };
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("reapi-worker: cannot listen for signals");
        std::process::exit(2);
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    handle.stop().await;
}
