//! The Remote Workers API (`google.devtools.remoteworkers.v1test2.Bots`):
//! external bots that take the jobs the server's own worker cannot run.
//!
//! A job whose platform matches the server's own worker runs in bubblewrap as
//! before; one that would otherwise wait in the queue forever is offered here
//! instead. A bot registers its primary device's properties with
//! CreateBotSession and long-polls UpdateBotSession; it gets a lease for the
//! oldest queued job whose every requested name/value pair is among its
//! properties (with `scheduler-ignores-platform`, for any queued job; the
//! server's own worker, always free, then takes them first). Each
//! lease is handed out once; the bot reports it COMPLETED with a status and
//! a packed ActionResult, which finishes the job. Leases of cancelled jobs
//! disappear from the session; a lease reported UNAVAILABLE (the bot was
//! stopped mid-run), or still held by a bot that says it is terminating,
//! goes back to the queue, as BuildGrid does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::protobuf::{Any, Empty};
use prost::bytes::Bytes;
use prost::Message;
use reapi_worker::proto::{
    bots_server::Bots, BotSession, BotStatus, CreateBotSessionRequest, Lease, LeaseState, PostBotEventTempRequest,
    UpdateBotSessionRequest,
};
use tokio::sync::{mpsc, Notify};
use tonic::{Code, Request, Response, Status};

use super::cas::rpc_status;
use super::defects::{Defect, Defects};
use super::{lock, Shared};

const ACTION_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
const ACTION_RESULT_NAME: &str = "build.bazel.remote.execution.v2.ActionResult";
/// The longest an UpdateBotSession waits for work to appear.
const LONG_POLL: Duration = Duration::from_secs(1);

/// What happens to a job handed to the bots, as its operation sees it.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// A bot took the lease and runs it.
    Leased,
    /// The bot gave the lease back unfinished; the job waits again.
    Requeued,
    /// The bot reported the lease COMPLETED.
    Finished(Box<re::ExecuteResponse>),
}

type JobId = u64;

/// A job waiting for (or held by) a bot.
struct BotJob {
    action: re::Action,
    /// Requested platform properties, name → value.
    platform: Vec<(String, String)>,
    events: mpsc::UnboundedSender<JobEvent>,
    /// (session name, lease id) once leased.
    lease: Option<(String, String)>,
}

struct Session {
    bot_id: String,
    /// The primary device's properties.
    properties: Vec<(String, String)>,
    /// Leases held at once; the worker config `capacity`, else 1.
    capacity: usize,
    /// Lease id → job.
    leases: HashMap<String, JobId>,
}

#[derive(Default)]
struct State {
    next_job: JobId,
    /// Jobs not leased yet, oldest first.
    queue: VecDeque<JobId>,
    jobs: HashMap<JobId, BotJob>,
    /// Session name → session.
    sessions: HashMap<String, Session>,
}

impl State {
    /// Ends a job's lease, if it has one, and forgets the job.
    fn remove_job(&mut self, id: JobId) -> Option<BotJob> {
        self.queue.retain(|queued| *queued != id);
        let job = self.jobs.remove(&id)?;
        if let Some((session, lease)) = &job.lease {
            if let Some(session) = self.sessions.get_mut(session) {
                session.leases.remove(lease);
            }
        }
        Some(job)
    }

    /// Puts a leased job back at the head of the queue.
    fn requeue(&mut self, id: JobId) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.lease = None;
            let _ = job.events.send(JobEvent::Requeued);
            self.queue.push_front(id);
        }
    }
}

/// The queue of jobs for bots, and the bot sessions.
#[derive(Default)]
pub(crate) struct Scheduler {
    state: Mutex<State>,
    /// Wakes long polls when a job joins the queue.
    job_queued: Notify,
}

/// What one attempt to give a session work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assigned {
    Lease,
    /// Room, but no queued job the bot can take.
    Nothing,
    /// The session holds as many leases as it can (or is gone).
    Full,
}

/// A job's place with the scheduler; dropping it withdraws the job (and its
/// lease disappears from the bot's session).
pub(crate) struct Ticket<'a> {
    scheduler: &'a Scheduler,
    id: JobId,
    events: mpsc::UnboundedReceiver<JobEvent>,
}

impl Ticket<'_> {
    /// The next thing that happened to the job.
    pub(crate) async fn next_event(&mut self) -> Option<JobEvent> {
        self.events.recv().await
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        lock(&self.scheduler.state).remove_job(self.id);
    }
}

impl Scheduler {
    /// Queues a job for the bots.
    pub(crate) fn enqueue(&self, action: re::Action, platform: Vec<(String, String)>) -> Ticket<'_> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let id = {
            let mut state = lock(&self.state);
            let id = state.next_job;
            state.next_job += 1;
            state.jobs.insert(id, BotJob { action, platform, events: events_tx, lease: None });
            state.queue.push_back(id);
            id
        };
        self.job_queued.notify_waiters();
        Ticket { scheduler: self, id, events }
    }
}

/// Every requested name/value pair is among the bot's properties.
fn satisfies(bot: &[(String, String)], requested: &[(String, String)]) -> bool {
    requested.iter().all(|wanted| bot.contains(wanted))
}

/// Whether the scheduler gives a job asking for `requested` to a bot (or the
/// server's own worker) with `bot` properties; `scheduler-ignores-platform`
/// acts here.
pub(crate) fn bot_may_take(defects: &Defects, bot: &[(String, String)], requested: &[(String, String)]) -> bool {
    defects.has(Defect::SchedulerIgnoresPlatform) || satisfies(bot, requested)
}

/// Platform properties as name/value pairs.
pub(crate) fn pairs(platform: &[re::platform::Property]) -> Vec<(String, String)> {
    platform.iter().map(|p| (p.name.clone(), p.value.clone())).collect()
}

/// `grpc-timeout` (e.g. `5999987u`, `3S`): the caller's deadline, if sent.
fn request_deadline<T>(request: &Request<T>) -> Option<Duration> {
    let header = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    if header.len() < 2 || !header.is_ascii() {
        return None;
    }
    let (digits, unit) = header.split_at(header.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn active_lease(id: &str) -> Lease {
    Lease { id: id.to_string(), state: LeaseState::Active as i32, ..Default::default() }
}

/// The ExecuteResponse for a lease the bot reported COMPLETED.
fn response_of(lease: &Lease) -> re::ExecuteResponse {
    let status = lease.status.clone().unwrap_or_else(|| rpc_status(Code::Ok, ""));
    let result = match &lease.result {
        None => None,
        Some(any) if any.type_url.rsplit('/').next() == Some(ACTION_RESULT_NAME) => {
            match re::ActionResult::decode(any.value.as_ref()) {
                Ok(result) => Some(result),
                Err(e) => {
                    let status =
                        rpc_status(Code::Internal, format!("the bot reported an undecodable ActionResult: {e}"));
                    return re::ExecuteResponse { status: Some(status), ..Default::default() };
                }
            }
        }
        Some(any) => {
            let status = rpc_status(Code::Internal, format!("the bot reported a result of type {:?}", any.type_url));
            return re::ExecuteResponse { status: Some(status), ..Default::default() };
        }
    };
    re::ExecuteResponse { result, cached_result: false, status: Some(status), ..Default::default() }
}

pub(crate) struct BotsService {
    pub(crate) shared: Arc<Shared>,
}

impl BotsService {
    fn scheduler(&self) -> &Scheduler {
        &self.shared.scheduler
    }

    /// Leases the oldest queued job this session can take, if it has room.
    fn assign(&self, session_name: &str) -> Assigned {
        let defects = &self.shared.defects;
        let mut state = lock(&self.scheduler().state);
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(session_name) else { return Assigned::Full };
        if session.leases.len() >= session.capacity {
            return Assigned::Full;
        }
        let jobs = &state.jobs;
        let Some(position) = state
            .queue
            .iter()
            .position(|id| jobs.get(id).is_some_and(|job| bot_may_take(defects, &session.properties, &job.platform)))
        else {
            return Assigned::Nothing;
        };
        let Some(id) = state.queue.remove(position) else { return Assigned::Nothing };
        let Some(job) = state.jobs.get_mut(&id) else { return Assigned::Nothing };
        let lease_id = uuid::Uuid::new_v4().to_string();
        job.lease = Some((session_name.to_string(), lease_id.clone()));
        let _ = job.events.send(JobEvent::Leased);
        session.leases.insert(lease_id, id);
        Assigned::Lease
    }

    /// The session as the bot should now see it: its leases, the new ones
    /// with their payload.
    fn session_view(&self, mut session: BotSession, known: &[String]) -> Result<BotSession, Status> {
        let state = lock(&self.scheduler().state);
        let held = state
            .sessions
            .get(&session.name)
            .ok_or_else(|| Status::not_found(format!("no bot session {:?}", session.name)))?;
        session.leases = held
            .leases
            .iter()
            .map(|(lease_id, job_id)| {
                let mut lease = active_lease(lease_id);
                if !known.contains(lease_id) {
                    lease.payload = state.jobs.get(job_id).map(|job| Any {
                        type_url: ACTION_TYPE.into(),
                        value: Bytes::from(job.action.encode_to_vec()),
                    });
                }
                lease
            })
            .collect();
        Ok(session)
    }
}

#[tonic::async_trait]
impl Bots for BotsService {
    async fn create_bot_session(
        &self,
        request: Request<CreateBotSessionRequest>,
    ) -> Result<Response<BotSession>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let mut session = request.bot_session.ok_or_else(|| Status::invalid_argument("bot_session is missing"))?;
        if session.bot_id.is_empty() {
            return Err(Status::invalid_argument("bot_session.bot_id is empty"));
        }
        let worker = session.worker.clone().unwrap_or_default();
        let properties = worker
            .devices
            .first()
            .map(|device| device.properties.iter().map(|p| (p.key.clone(), p.value.clone())).collect())
            .unwrap_or_default();
        let capacity = worker
            .configs
            .iter()
            .find(|c| c.key == "capacity")
            .and_then(|c| c.value.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let id = uuid::Uuid::new_v4();
        session.name = if request.parent.is_empty() {
            format!("botSessions/{id}")
        } else {
            format!("{}/botSessions/{id}", request.parent)
        };
        session.leases.clear();
        lock(&self.scheduler().state).sessions.insert(
            session.name.clone(),
            Session { bot_id: session.bot_id.clone(), properties, capacity, leases: HashMap::new() },
        );
        // Work is handed out on the first UpdateBotSession.
        Ok(Response::new(session))
    }

    async fn update_bot_session(
        &self,
        request: Request<UpdateBotSessionRequest>,
    ) -> Result<Response<BotSession>, Status> {
        self.shared.fault_gate().await?;
        let deadline = request_deadline(&request);
        let request = request.into_inner();
        let mut session = request.bot_session.ok_or_else(|| Status::invalid_argument("bot_session is missing"))?;
        if !request.name.is_empty() && request.name != session.name {
            return Err(Status::invalid_argument("name and bot_session.name differ"));
        }
        let terminating = session.status == BotStatus::BotTerminating as i32;
        let mut requeued = false;
        let mut reported = false;

        // What the bot reports: finished leases finish their jobs.
        let mut known = Vec::new();
        {
            let mut state = lock(&self.scheduler().state);
            let Some(held) = state.sessions.get(&session.name) else {
                return Err(Status::not_found(format!("no bot session {:?}", session.name)));
            };
            if held.bot_id != session.bot_id {
                return Err(Status::invalid_argument("bot_session.bot_id is not the session's bot"));
            }
            for lease in &session.leases {
                let Some(&job_id) = state.sessions.get(&session.name).and_then(|s| s.leases.get(&lease.id)) else {
                    // Not (or no longer) this session's lease, e.g. cancelled.
                    continue;
                };
                if lease.state != LeaseState::Completed as i32 {
                    known.push(lease.id.clone());
                    continue;
                }
                reported = true;
                if let Some(s) = state.sessions.get_mut(&session.name) {
                    s.leases.remove(&lease.id);
                }
                let gave_back = lease.status.as_ref().is_some_and(|s| s.code == Code::Unavailable as i32);
                if gave_back {
                    state.requeue(job_id);
                    requeued = true;
                } else if let Some(job) = state.remove_job(job_id) {
                    let _ = job.events.send(JobEvent::Finished(Box::new(response_of(lease))));
                }
            }
            if terminating {
                // Leases still held go back to the queue; the session ends.
                if let Some(ended) = state.sessions.remove(&session.name) {
                    for job_id in ended.leases.into_values() {
                        state.requeue(job_id);
                        requeued = true;
                    }
                }
            }
        }
        if requeued {
            // Other bots may take what came back.
            self.scheduler().job_queued.notify_waiters();
        }
        if terminating {
            session.leases.clear();
            return Ok(Response::new(session));
        }

        // New work: at once if some is queued, else wait for a while (half
        // the caller's deadline at most, so the answer arrives in time).
        let wait = deadline.map_or(LONG_POLL, |d| (d / 2).min(LONG_POLL));
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let job_queued = self.scheduler().job_queued.notified();
            tokio::pin!(job_queued);
            // Registered before looking, so a job queued meanwhile wakes us.
            job_queued.as_mut().enable();
            // A bot that reported a result hears back at once, so it counts
            // the lease as done without waiting out the poll.
            if self.assign(&session.name) != Assigned::Nothing || reported {
                break;
            }
            tokio::select! {
                _ = &mut job_queued => {}
                _ = tokio::time::sleep_until(give_up) => break,
                _ = self.shared.until_shutdown() => break,
            }
        }
        // A bot with room takes what else it matches, up to its capacity.
        while self.assign(&session.name) == Assigned::Lease {}
        Ok(Response::new(self.session_view(session, &known)?))
    }

    async fn post_bot_event_temp(&self, _: Request<PostBotEventTempRequest>) -> Result<Response<Empty>, Status> {
        self.shared.fault_gate().await?;
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_bot_satisfies_a_platform_with_every_pair() {
        let bot = owned(&[("OSFamily", "linux"), ("ISA", "aarch64")]);
        assert!(satisfies(&bot, &owned(&[("ISA", "aarch64")])));
        assert!(satisfies(&bot, &owned(&[("ISA", "aarch64"), ("OSFamily", "linux")])));
        assert!(!satisfies(&bot, &owned(&[("ISA", "x86-64"), ("OSFamily", "linux")])));
        assert!(!satisfies(&bot, &owned(&[("ISA", "aarch64"), ("network", "on")])));
    }
}
