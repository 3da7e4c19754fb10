//! The bot session loop: CreateBotSession, then UpdateBotSession over and
//! over, starting a task per new lease and reporting each as COMPLETED.
//!
//! What BuildGrid 0.4.4 does on its side (read from its sources), and what
//! this loop relies on:
//! - leases arrive already ACTIVE (older servers send PENDING; both are
//!   accepted here); the payload is a packed `Action`, or a packed `Digest`
//!   of one; the bot echoes the lease as ACTIVE until it reports COMPLETED
//!   with `status` and `result` (a packed `ActionResult`);
//! - a cancelled lease simply disappears from the returned session;
//! - UpdateBotSession waits for work for 80 % of the caller's deadline, and
//!   not at all below a 3.75 s deadline (so CreateBotSession with a 3 s
//!   deadline answers at once) or when the bot is at capacity;
//! - a bot that is silent for `bot-session-keepalive-timeout` is dropped and
//!   its leases requeued; a lease reported with INTERNAL or UNAVAILABLE is
//!   retried on another bot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{Action, ActionResult, Digest};
use bazel_remote_apis::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::ctx::Ctx;
use super::lease_cas::LeaseCas;
use super::proto::{
    bots_client::BotsClient, device, BotSession, BotStatus, CreateBotSessionRequest, Device, Lease, LeaseState,
    UpdateBotSessionRequest, Worker,
};
use super::{buildbox_run, host, LeaseOutcome, Mode, WorkerConfig};

/// Below BuildGrid's threshold for waiting, so the session is created at once.
const CREATE_DEADLINE: Duration = Duration::from_secs(3);
/// Long-poll deadline for UpdateBotSession (BuildGrid answers after 80 % of
/// it). BuildGrid does not wake a bot's poll when one of its leases is
/// cancelled, so this bounds how long a cancelled action keeps running.
const POLL_DEADLINE: Duration = Duration::from_secs(6);
/// How often a bot at capacity reports (and learns of cancellations).
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Deadline of a heartbeat or of the last update when stopping.
const SHORT_DEADLINE: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const ACTION_TYPE: &str = "build.bazel.remote.execution.v2.Action";
const DIGEST_TYPE: &str = "build.bazel.remote.execution.v2.Digest";
const RESULT_TYPE: &str = "build.bazel.remote.execution.v2.ActionResult";

/// What the worker is doing, for readiness checks and diagnostics.
#[derive(Clone, Debug, Default)]
pub struct WorkerState {
    /// Name of the current bot session, once created.
    pub session: Option<String>,
    /// Last failure talking to the server.
    pub last_error: Option<String>,
    /// Leases reported as completed.
    pub completed: u64,
    /// The loop has ended.
    pub stopped: bool,
}

/// A running worker; stop it with [`WorkerHandle::stop`] (dropping it aborts
/// the loop and kills running actions, without telling the server).
pub struct WorkerHandle {
    state: watch::Receiver<WorkerState>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The bot's state now.
    pub fn state(&self) -> WorkerState {
        self.state.borrow().clone()
    }

    /// Waits until the bot session exists (the bot is registered with the
    /// server and can receive work).
    pub async fn wait_registered(&mut self, limit: Duration) -> Result<String, String> {
        let mut rx = self.state.clone();
        let _ = tokio::time::timeout(limit, async {
            let _ = rx.wait_for(|s| s.session.is_some() || s.stopped).await;
        })
        .await;
        let s = self.state();
        match s.session {
            Some(name) => Ok(name),
            None => Err(s.last_error.unwrap_or_else(|| "no bot session was created".into())),
        }
    }

    /// Kills running actions, tells the server the bot is terminating, and
    /// waits for the loop to end. Safe to call twice.
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHORT_DEADLINE * 3, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts a worker on the current tokio runtime.
pub fn spawn(config: WorkerConfig) -> Result<WorkerHandle, String> {
    let channel = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| format!("invalid worker endpoint `{}`: {e}", config.endpoint))?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy();
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| format!("cannot create worker directory {}: {e}", config.work_dir.display()))?;
    let (state_tx, state_rx) = watch::channel(WorkerState::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(run(config, channel, state_tx, shutdown_rx));
    Ok(WorkerHandle { state: state_rx, shutdown: shutdown_tx, task: Some(task) })
}

/// A lease this bot holds.
enum Slot {
    Running(Task),
    Done(Box<LeaseOutcome>),
}

/// A lease task, aborted (killing its processes) when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        d
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(200);
    }
}

/// Sleeps unless asked to stop first; true means stop.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopping(shutdown) => {}
    }
    *shutdown.borrow()
}

/// Resolves when the worker is asked to stop (or its handle is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn pack<M: Message>(type_name: &str, m: &M) -> Any {
    Any { type_url: format!("type.googleapis.com/{type_name}"), value: m.encode_to_vec().into() }
}

fn worker_of(config: &WorkerConfig) -> Worker {
    let properties =
        config.platform.iter().map(|(k, v)| device::Property { key: k.clone(), value: v.clone() }).collect();
    let mut worker =
        Worker { devices: vec![Device { handle: config.bot_id.clone(), properties }], ..Default::default() };
    if config.capacity > 1 {
        worker
            .configs
            .push(super::proto::worker::Config { key: "capacity".into(), value: config.capacity.to_string() });
    }
    worker
}

/// Awaits a Bots call, with the deadline enforced on our side as well.
async fn call(
    fut: impl std::future::Future<Output = Result<tonic::Response<BotSession>, tonic::Status>>,
    deadline: Duration,
) -> Result<BotSession, tonic::Status> {
    match tokio::time::timeout(deadline + Duration::from_secs(2), fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer from the Bots service")),
    }
}

fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

/// Errors meaning the server no longer has this session (BuildGrid:
/// DATA_LOSS for a closed session, INVALID_ARGUMENT for an unknown or
/// mismatched one), so a new one must be created; after any other error the
/// same session is tried again.
fn session_lost(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, DataLoss | InvalidArgument | NotFound | FailedPrecondition | Aborted)
}

/// Long-lived state of the loop, kept across sessions.
struct Bot {
    config: WorkerConfig,
    bots: BotsClient<Channel>,
    ctx: Arc<Ctx>,
    state: watch::Sender<WorkerState>,
    shutdown: watch::Receiver<bool>,
    done_tx: mpsc::UnboundedSender<(String, LeaseOutcome)>,
    done_rx: mpsc::UnboundedReceiver<(String, LeaseOutcome)>,
    backoff: Backoff,
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost,
}

async fn run(
    config: WorkerConfig,
    channel: Channel,
    state: watch::Sender<WorkerState>,
    shutdown: watch::Receiver<bool>,
) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut bot = Bot {
        bots: BotsClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024),
        ctx: Arc::new(Ctx { cas: LeaseCas::new(channel, &config.instance), config: config.clone() }),
        config,
        state,
        shutdown,
        done_tx,
        done_rx,
        backoff: Backoff(Duration::from_millis(200)),
    };
    while !*bot.shutdown.borrow() {
        let create = CreateBotSessionRequest {
            parent: bot.config.instance.clone(),
            bot_session: Some(BotSession {
                bot_id: bot.config.bot_id.clone(),
                status: BotStatus::Ok as i32,
                worker: Some(worker_of(&bot.config)),
                ..Default::default()
            }),
        };
        let created =
            call(bot.bots.clone().create_bot_session(request(create, CREATE_DEADLINE)), CREATE_DEADLINE).await;
        match created {
            Ok(session) => {
                bot.backoff.reset();
                bot.state.send_modify(|s| {
                    s.session = Some(session.name.clone());
                    s.last_error = None;
                });
                match bot.serve(session).await {
                    End::Shutdown => break,
                    End::Lost => bot.state.send_modify(|s| s.session = None),
                }
            }
            Err(e) => {
                bot.state
                    .send_modify(|s| s.last_error = Some(format!("CreateBotSession: {:?}: {}", e.code(), e.message())));
            }
        }
        let wait = bot.backoff.next();
        if pause(wait, &mut bot.shutdown).await {
            break;
        }
    }
    bot.state.send_modify(|s| s.stopped = true);
}

impl Bot {
    fn record(leases: &mut HashMap<String, Slot>, (id, outcome): (String, LeaseOutcome)) {
        if let Some(slot) = leases.get_mut(&id) {
            *slot = Slot::Done(Box::new(outcome));
        }
    }

    /// Runs one bot session until it is lost or the worker is stopped.
    async fn serve(&mut self, mut session: BotSession) -> End {
        let mut leases: HashMap<String, Slot> = HashMap::new();
        let mut last_update = Instant::now();
        loop {
            while let Ok(done) = self.done_rx.try_recv() {
                Self::record(&mut leases, done);
            }
            let has_done = leases.values().any(|s| matches!(s, Slot::Done(_)));
            let full = leases.len() >= self.config.capacity.max(1);
            if full && !has_done {
                // Nothing to report: wait for a result, the next heartbeat, or stop.
                let until = tokio::time::Instant::from_std(last_update + HEARTBEAT);
                let stop = tokio::select! {
                    Some(done) = self.done_rx.recv() => {
                        Self::record(&mut leases, done);
                        continue;
                    }
                    _ = tokio::time::sleep_until(until) => false,
                    _ = stopping(&mut self.shutdown) => true,
                };
                if stop {
                    return self.terminate(session, leases).await;
                }
            }

            let mut reported = Vec::new();
            session.leases = leases
                .iter()
                .map(|(id, slot)| match slot {
                    Slot::Running(_) => {
                        Lease { id: id.clone(), state: LeaseState::Active as i32, ..Default::default() }
                    }
                    Slot::Done(o) => {
                        reported.push(id.clone());
                        completed_lease(id, o)
                    }
                })
                .collect();
            session.status = BotStatus::Ok as i32;
            session.worker = Some(worker_of(&self.config));
            let deadline = if full || has_done { SHORT_DEADLINE } else { POLL_DEADLINE };
            let update = UpdateBotSessionRequest {
                name: session.name.clone(),
                bot_session: Some(session.clone()),
                update_mask: None,
            };
            let mut client = self.bots.clone();
            let answer = tokio::select! {
                r = call(client.update_bot_session(request(update, deadline)), deadline) => Some(r),
                // A result came in during a long poll: drop the poll (BuildGrid
                // then skips its sync) and report the result straight away.
                Some(done) = self.done_rx.recv() => {
                    Self::record(&mut leases, done);
                    continue;
                }
                _ = stopping(&mut self.shutdown) => None,
            };
            let Some(answer) = answer else {
                return self.terminate(session, leases).await;
            };
            last_update = Instant::now();
            let fresh = match answer {
                Ok(fresh) => fresh,
                Err(e) => {
                    self.state.send_modify(|s| {
                        s.last_error = Some(format!("UpdateBotSession: {:?}: {}", e.code(), e.message()))
                    });
                    if session_lost(e.code()) {
                        // The server dropped the session (and requeues its work).
                        return End::Lost;
                    }
                    let wait = self.backoff.next();
                    if pause(wait, &mut self.shutdown).await {
                        return self.terminate(session, leases).await;
                    }
                    continue;
                }
            };
            self.backoff.reset();
            // BuildGrid never lists a lease it has just been told is
            // completed; if the same id comes back, the job was retried
            // (INTERNAL/UNAVAILABLE) and is new work.
            for id in &reported {
                leases.remove(id);
            }
            self.state.send_modify(|s| {
                s.completed += reported.len() as u64;
                s.last_error = None;
            });
            session.version = fresh.version;
            let offered: HashMap<String, Lease> = fresh
                .leases
                .into_iter()
                .filter(|l| l.state == LeaseState::Pending as i32 || l.state == LeaseState::Active as i32)
                .map(|l| (l.id.clone(), l))
                .collect();
            // Leases the server no longer lists were cancelled: dropping the
            // slot aborts the task and kills its processes.
            leases.retain(|id, _| offered.contains_key(id));
            for (id, lease) in offered {
                if leases.contains_key(&id) {
                    continue;
                }
                let ctx = self.ctx.clone();
                let tx = self.done_tx.clone();
                let lease_id = id.clone();
                let handle = tokio::spawn(async move {
                    let outcome = run_lease(&ctx, lease.payload).await;
                    let _ = tx.send((lease_id, outcome));
                });
                leases.insert(id, Slot::Running(Task(handle)));
            }
        }
    }

    /// Kills running actions and tells the server: finished results are
    /// reported, interrupted ones come back UNAVAILABLE so BuildGrid requeues
    /// them, and the bot says it is terminating so it gets no new work.
    async fn terminate(&mut self, mut session: BotSession, leases: HashMap<String, Slot>) -> End {
        let mut wire = Vec::new();
        for (id, slot) in leases {
            let outcome = match slot {
                Slot::Done(o) => *o,
                Slot::Running(task) => {
                    drop(task);
                    LeaseOutcome::error(tonic::Code::Unavailable, "the worker was stopped while running this action")
                }
            };
            wire.push(completed_lease(&id, &outcome));
        }
        session.leases = wire;
        session.status = BotStatus::BotTerminating as i32;
        let update =
            UpdateBotSessionRequest { name: session.name.clone(), bot_session: Some(session), update_mask: None };
        let _ = call(self.bots.clone().update_bot_session(request(update, SHORT_DEADLINE)), SHORT_DEADLINE).await;
        End::Shutdown
    }
}

fn completed_lease(id: &str, o: &LeaseOutcome) -> Lease {
    Lease {
        id: id.to_string(),
        state: LeaseState::Completed as i32,
        status: Some(o.status.clone()),
        result: o.result.as_ref().map(|r: &ActionResult| pack(RESULT_TYPE, r)),
        ..Default::default()
    }
}

/// Decodes the payload and executes the Action.
async fn run_lease(ctx: &Ctx, payload: Option<Any>) -> LeaseOutcome {
    let Some(payload) = payload else {
        return LeaseOutcome::error(tonic::Code::InvalidArgument, "lease without payload");
    };
    let type_name = payload.type_url.rsplit('/').next().unwrap_or_default().to_string();
    let action = match type_name.as_str() {
        ACTION_TYPE => match Action::decode(payload.value.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                return LeaseOutcome::error(tonic::Code::InvalidArgument, format!("lease payload: bad Action: {e}"))
            }
        },
        DIGEST_TYPE => {
            let digest = match Digest::decode(payload.value.as_ref()) {
                Ok(d) => d,
                Err(e) => {
                    return LeaseOutcome::error(tonic::Code::InvalidArgument, format!("lease payload: bad Digest: {e}"))
                }
            };
            match ctx.cas.read_message::<Action>(&digest, "Action").await {
                Ok(a) => a,
                Err(f) => return f.into(),
            }
        }
        other => {
            return LeaseOutcome::error(
                tonic::Code::InvalidArgument,
                format!("lease payload of unknown type `{other}`"),
            )
        }
    };
    match &ctx.config.mode {
        Mode::BuildboxRun { runner } => buildbox_run::execute(ctx, runner, &action).await,
        Mode::Host => host::execute(ctx, &action).await,
    }
}

#[cfg(test)]
mod tests {
    //! The session protocol against a scripted Bots server (no BuildGrid needed).
    use std::sync::Mutex;

    use super::super::proto::bots_server::{Bots, BotsServer};
    use super::super::proto::PostBotEventTempRequest;
    use super::*;

    #[derive(Default)]
    struct Seen {
        updates: Vec<BotSession>,
        offered: bool,
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Seen>>);

    #[tonic::async_trait]
    impl Bots for Fake {
        async fn create_bot_session(
            &self,
            req: tonic::Request<CreateBotSessionRequest>,
        ) -> Result<tonic::Response<BotSession>, tonic::Status> {
            let req = req.into_inner();
            let mut session = req.bot_session.unwrap_or_default();
            session.name = format!("{}/session-1", req.parent);
            Ok(tonic::Response::new(session))
        }

        async fn update_bot_session(
            &self,
            req: tonic::Request<UpdateBotSessionRequest>,
        ) -> Result<tonic::Response<BotSession>, tonic::Status> {
            let mut session = req.into_inner().bot_session.unwrap_or_default();
            let mut seen = self.0.lock().unwrap();
            seen.updates.push(session.clone());
            // Like BuildGrid: completed leases are dropped, active ones echoed.
            session.leases.retain(|l| l.state == LeaseState::Active as i32);
            if !seen.offered {
                seen.offered = true;
                session.leases.push(Lease {
                    id: "lease-1".into(),
                    state: LeaseState::Active as i32,
                    payload: Some(Any { type_url: "type.googleapis.com/example.Unknown".into(), value: vec![].into() }),
                    ..Default::default()
                });
            }
            Ok(tonic::Response::new(session))
        }

        async fn post_bot_event_temp(
            &self,
            _: tonic::Request<PostBotEventTempRequest>,
        ) -> Result<tonic::Response<bazel_remote_apis::google::protobuf::Empty>, tonic::Status> {
            Err(tonic::Status::unimplemented("not used"))
        }
    }

    #[tokio::test]
    async fn lease_is_reported_and_bot_says_goodbye() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Fake::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BotsServer::new(fake.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut worker = spawn(WorkerConfig {
            endpoint: format!("http://{addr}"),
            instance: "main".into(),
            bot_id: "bot-a".into(),
            platform: vec![("OSFamily".into(), "linux".into()), ("ISA".into(), "x86-64".into())],
            mode: Mode::Host,
            capacity: 1,
            work_dir: dir.path().join("w"),
        })
        .unwrap();
        assert_eq!(worker.wait_registered(Duration::from_secs(5)).await.unwrap(), "main/session-1");
        let deadline = Instant::now() + Duration::from_secs(10);
        let completed = loop {
            let found = fake
                .0
                .lock()
                .unwrap()
                .updates
                .iter()
                .flat_map(|s| s.leases.clone())
                .find(|l| l.state == LeaseState::Completed as i32);
            if let Some(l) = found {
                break l;
            }
            assert!(Instant::now() < deadline, "no completed lease reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(completed.id, "lease-1");
        assert_eq!(completed.status.unwrap().code, tonic::Code::InvalidArgument as i32);
        worker.stop().await;
        let seen = fake.0.lock().unwrap();
        let first = &seen.updates[0];
        let props = &first.worker.as_ref().unwrap().devices[0].properties;
        assert_eq!((props[0].key.as_str(), props[0].value.as_str()), ("OSFamily", "linux"));
        assert_eq!(seen.updates.last().unwrap().status, BotStatus::BotTerminating as i32);
        assert!(worker.state().stopped);
        server.abort();
    }
}
