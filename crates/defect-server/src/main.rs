//! `defect-server`: the defect-injection server by hand, so anyone can point
//! the CLI at a server that gets exactly the named things wrong and watch the
//! matching check fail.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use defect_server::{Defect, DefectServer, ServerOptions};

/// A REAPI v2 server (CAS, ActionCache, Execution, Bots) that runs actions in
/// bubblewrap and gets exactly the named requirements wrong.
#[derive(Parser)]
#[command(
    version,
    after_help = "Example:\n  defect-server --defect no-proc\n  reapi-conformance run --endpoint http://127.0.0.1:PORT --filter sandbox.proc\n\n\
                  Actions run in /usr/bin/bwrap (Debian: apt-get install bubblewrap). Stop with Ctrl-C."
)]
struct Args {
    /// A defect to switch on (repeatable); none gives the faithful server. `--list` names them.
    #[arg(long = "defect", value_name = "NAME")]
    defects: Vec<String>,
    /// Address to listen on (instance name: any).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print every defect with what it gets wrong, and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        let mut out = std::io::stdout().lock();
        for d in Defect::ALL {
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(out, "{:<36} {}", d.name(), d.describe()).is_err() {
                break;
            }
        }
        return ExitCode::SUCCESS;
    }
    let defects: Vec<Defect> = match args.defects.iter().map(|n| n.parse()).collect() {
        Ok(defects) => defects,
        Err(e) => {
            eprintln!("error: {e} (defect-server --list names them)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let options = ServerOptions { listen: Some(args.listen), ..Default::default() };
        let server = match DefectServer::start_with(&defects, &options).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: cannot start on {}: {e}", args.listen);
                return ExitCode::from(2);
            }
        };
        let names: Vec<&str> = defects.iter().map(|d| d.name()).collect();
        // Nobody may be reading stdout; the server serves all the same.
        let _ = writeln!(
            std::io::stdout(),
            "defect-server listening on {} ({})",
            server.endpoint(),
            if names.is_empty() { "faithful".to_string() } else { format!("defects: {}", names.join(", ")) }
        );
        let _ = writeln!(
            std::io::stdout(),
            "  reapi-conformance run --endpoint {} --bots-endpoint {}",
            server.endpoint(),
            server.bots_endpoint()
        );
        let signal = wait_for_signal().await;
        server.stop().await;
        ExitCode::from(128 + signal)
    })
}

/// Waits for SIGINT, SIGTERM or SIGHUP and returns its number.
async fn wait_for_signal() -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        // No signal handlers: stop on Ctrl-C as tokio sees it.
        let _ = tokio::signal::ctrl_c().await;
        return 2;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
        _ = hup.recv() => 1,
    }
}
