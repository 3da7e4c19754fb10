//! A REAPI v2 server for tests that can be told to get exactly one thing
//! wrong. Faithful (no defect switched on) it meets every requirement the
//! suites check and runs actions for real in bubblewrap (`/usr/bin/bwrap`), so a
//! probe in the input root reports on a real sandbox. Actions whose platform
//! it cannot run wait in the queue for a bot of the Remote Workers API (the
//! Bots service, on the same endpoint). Each [`Defect`] breaks one
//! requirement, which lets a test show that the matching check can fail.
//!
//! ```ignore
//! let server = DefectServer::start(&[Defect::NoProc]).await?;
//! let endpoint = server.endpoint(); // "http://127.0.0.1:PORT", instance name ""
//! // ... run a check against `endpoint` ...
//! server.stop().await;
//! ```

#![warn(missing_docs)]

mod bots;
mod cas;
mod defects;
mod digest_functions;
mod execution;
mod faults;
mod outputs;
mod platform;
pub mod proxy;
mod sandbox;
mod split_splice;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer;
use bazel_remote_apis::google::longrunning::operations_server::OperationsServer;
use reapi_worker::proto::bots_server::BotsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

pub use defects::{Defect, Role};
// The error of `Defect::from_str`; not every test names it.
#[allow(unused_imports)]
pub use defects::UnknownDefect;

use cas::BlobStore;
use defects::Defects;
use execution::OperationEntry;
use sandbox::SandboxRegistry;

/// Requests may carry batches up to 4 MiB of data plus framing.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// State every service shares.
pub(crate) struct Shared {
    pub(crate) defects: Defects,
    pub(crate) blobs: BlobStore,
    /// Action digest hash → result.
    pub(crate) action_cache: Mutex<HashMap<String, re::ActionResult>>,
    /// ByteStream upload resource name → (committed size, complete).
    pub(crate) uploads: Mutex<HashMap<String, (i64, bool)>>,
    /// Bytes of uploads whose stream ended before finish_write, by resource
    /// name, for a Write that resumes them.
    pub(crate) partial_uploads: Mutex<HashMap<String, Vec<u8>>>,
    /// Operation name → operation.
    pub(crate) operations: Mutex<HashMap<String, Arc<OperationEntry>>>,
    /// Where input roots are staged; removed when the server stops.
    pub(crate) work_dir: PathBuf,
    /// Becomes `true` when the server stops.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Process groups of the sandboxes running now.
    pub(crate) sandboxes: SandboxRegistry,
    /// The host's ISA in BuildStream's naming, e.g. `x86-64`.
    pub(crate) host_isa: String,
    /// Jobs the server's own worker cannot run, and the bots that may.
    pub(crate) scheduler: bots::Scheduler,
    /// Held while an action runs when the worker runs one at a time.
    pub(crate) serial_slot: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Resolves once the server is stopping.
    pub(crate) async fn until_shutdown(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the sender is gone, which also means stopping.
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Every RPC passes here first: the `hang` and `slow` faults live here.
    pub(crate) async fn fault_gate(&self) -> Result<(), tonic::Status> {
        let stopped = || tonic::Status::unavailable("server is stopping");
        if self.defects.has(Defect::Hang) {
            self.until_shutdown().await;
            return Err(stopped());
        }
        if self.defects.has(Defect::Slow) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.until_shutdown() => return Err(stopped()),
            }
        }
        Ok(())
    }
}

/// Locks `mutex`, carrying on if a panicking thread poisoned it (the maps
/// stay consistent: every critical section is a single insert or lookup).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running defect-injection server. Stop it with [`DefectServer::stop`];
/// dropping it stops everything too.
pub struct DefectServer {
    endpoint: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server_task: Option<JoinHandle<()>>,
    work_dir: Option<tempfile::TempDir>,
}

/// Transport options: TLS (optionally requiring client certificates) and a
/// bearer token every request must carry.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// PEM server certificate chain and key; the endpoint becomes `https://localhost:PORT`.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA that client certificates must chain to (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
    /// Requests without `authorization: Bearer <token>` are UNAUTHENTICATED.
    pub token: Option<String>,
    /// Where to listen; default 127.0.0.1 on a free port.
    pub listen: Option<std::net::SocketAddr>,
}

impl DefectServer {
    /// Starts on `127.0.0.1:<free port>`, instance name "" (any instance name
    /// is accepted), with `defects` switched on.
    pub async fn start(defects: &[Defect]) -> io::Result<DefectServer> {
        Self::start_with(defects, &ServerOptions::default()).await
    }

    /// Like [`DefectServer::start`], with TLS and token options.
    pub async fn start_with(defects: &[Defect], options: &ServerOptions) -> io::Result<DefectServer> {
        let work_dir = tempfile::Builder::new().prefix("defect-server-").tempdir()?;
        let listen = options.listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen).await?;
        let endpoint = match options.tls {
            Some(_) => format!("https://localhost:{}", listener.local_addr()?.port()),
            None => format!("http://{}", listener.local_addr()?),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            defects: Defects::new(defects),
            blobs: BlobStore::default(),
            action_cache: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            partial_uploads: Mutex::new(HashMap::new()),
            operations: Mutex::new(HashMap::new()),
            work_dir: work_dir.path().to_path_buf(),
            shutdown: shutdown_rx,
            sandboxes: SandboxRegistry::default(),
            host_isa: platform::host_isa(),
            scheduler: bots::Scheduler::default(),
            serial_slot: tokio::sync::Mutex::new(()),
        });

        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            accepted.map(|tcp| {
                // Small messages of a stream must not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                faults::CuttableConnection::new(tcp)
            })
        });
        let expected = options.token.as_ref().map(|t| format!("Bearer {t}"));
        let check_token = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
            match &expected {
                None => Ok(req),
                Some(want) if req.metadata().get("authorization").is_some_and(|v| v.as_bytes() == want.as_bytes()) => {
                    Ok(req)
                }
                Some(_) => Err(tonic::Status::unauthenticated("missing or wrong bearer token")),
            }
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = &options.tls {
            let mut tls =
                tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
            if let Some(ca) = &options.client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder.tls_config(tls).map_err(io::Error::other)?;
        }
        // With batch-limit-overstated the CAS takes messages no larger than
        // the batch limit it advertises, framing included.
        let cas_message_limit = if shared.defects.has(defects::Defect::BatchLimitOverstated) {
            cas::MAX_BATCH_TOTAL_SIZE_BYTES as usize
        } else {
            MAX_MESSAGE_BYTES
        };
        let router = builder
            .layer(tonic::service::InterceptorLayer::new(check_token))
            .add_service(
                re::capabilities_server::CapabilitiesServer::new(cas::CapabilitiesService { shared: shared.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                re::content_addressable_storage_server::ContentAddressableStorageServer::new(cas::CasService {
                    shared: shared.clone(),
                })
                .max_decoding_message_size(cas_message_limit)
                .max_encoding_message_size(cas_message_limit),
            )
            .add_service(
                ByteStreamServer::new(cas::ByteStreamService { shared: shared.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                re::action_cache_server::ActionCacheServer::new(cas::ActionCacheService { shared: shared.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                re::execution_server::ExecutionServer::new(execution::ExecutionService { shared: shared.clone() })
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(OperationsServer::new(execution::OperationsService { shared: shared.clone() }))
            .add_service(
                BotsServer::new(bots::BotsService { shared: shared.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            );
        let mut stop_serving = shared.shutdown.clone();
        let server_task = tokio::spawn(async move {
            let signal = async move {
                let _ = stop_serving.wait_for(|stopping| *stopping).await;
            };
            // A serving error only ends serving; tests see it as failed RPCs.
            let _ = router.serve_with_incoming_shutdown(incoming, signal).await;
        });

        Ok(DefectServer { endpoint, shared, shutdown, server_task: Some(server_task), work_dir: Some(work_dir) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The Remote Workers API (Bots) endpoint, where external bots take the
    /// jobs no platform of the server's own worker matches; the same as
    /// [`DefectServer::endpoint`].
    pub fn bots_endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Stops serving, kills running sandboxes and removes the staged files.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.server_task.take() {
            let abort = task.abort_handle();
            // Graceful shutdown waits for open streams; do not wait forever.
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
        // Running operations see the shutdown and kill their own sandboxes;
        // give them a moment so their clean-up runs before the dir goes.
        for _ in 0..100 {
            if self.shared.sandboxes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop_now();
    }

    /// The synchronous part of stopping, shared with `Drop`.
    fn stop_now(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.server_task.take() {
            task.abort();
        }
        self.shared.sandboxes.close_and_kill_all();
        if let Some(dir) = self.work_dir.take() {
            sandbox::remove_tree(dir.path());
            drop(dir);
        }
    }
}

impl Drop for DefectServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}
