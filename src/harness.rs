//! The harness: a connected target and the calls every check makes on it
//! (prepare, upload, execute, read the probe's output). Dispatching checks
//! and running them concurrently is the runner's job.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{GetCapabilitiesRequest, ServerCapabilities};

use crate::action::{self, PreparedAction, Vars};
use crate::cas::Cas;
use crate::connection::{Clients, ConnectOptions};
use crate::evaluate::ProbeOutput;
use crate::execute::{self, ExecuteParams, Outcome, Trace};
use crate::verdict::StepError;

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Budget for an action that is expected to complete.
    pub timeout: Duration,
    /// Budget for an action that may legitimately stay queued.
    pub queue_wait: Duration,
    /// Deadline of every unary RPC.
    pub rpc_timeout: Duration,
    /// Checks run at once.
    pub jobs: usize,
    /// buildbox-casd and buildbox-run to use where a check starts its own
    /// (the casd proxy check); default: the provisioned cache.
    pub buildbox_dir: Option<std::path::PathBuf>,
    /// How long the opt-in idle-stream check (`--long`) keeps an action
    /// silent; `None` skips it.
    pub idle_stream: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(60),
            queue_wait: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(20),
            jobs: 8,
            buildbox_dir: None,
            idle_stream: None,
        }
    }
}

/// The target could not be used at all; every check is an ERROR.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// A connected target with what every check shares.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The target's CAS, which also holds its clients (see [`Harness::clients`]).
    pub cas: Cas,
    /// Values for `${isa}`, `${foreign_isa}` and `${os}` in check text.
    pub vars: Vars,
    /// The run's budgets, deadlines and concurrency.
    pub options: RunOptions,
    /// What GetCapabilities answered when connecting.
    pub capabilities: ServerCapabilities,
    /// Per-run salt: no two runs share action digests, so a real action cache
    /// is never served results of another run, nor polluted for one.
    pub salt: Vec<u8>,
    /// Operations started and not finished, for cancelling on interrupt.
    pub inflight: execute::Inflight,
    /// How the target was reached (for checks that start their own client,
    /// such as a buildbox-casd proxy, or probe bots on `bots_endpoint`).
    pub target: ConnectOptions,
    /// The positive control of this run, run once for every check that needs it.
    pub(crate) control: std::sync::Arc<tokio::sync::OnceCell<Result<(), String>>>,
}

impl Harness {
    /// Connects and asks for the capabilities, which also proves the target answers.
    pub async fn connect(target: &ConnectOptions, options: RunOptions, vars: Vars) -> Result<Harness, TargetError> {
        let clients = Clients::new(target, options.rpc_timeout).map_err(|e| TargetError(e.to_string()))?;
        let msg = GetCapabilitiesRequest { instance_name: clients.instance.clone() };
        let capabilities = clients
            .unary("GetCapabilities", &clients.capabilities, msg, |mut s, r| async move { s.get_capabilities(r).await })
            .await
            .map_err(|s| {
                TargetError(format!(
                    "{} does not answer GetCapabilities for instance `{}`: {:?}: {}{}",
                    target.endpoint,
                    clients.instance,
                    s.code(),
                    s.message(),
                    transport_hint(&target.endpoint, s.message()).map(|h| format!(" ({h})")).unwrap_or_default()
                ))
            })?;
        let max_batch = capabilities.cache_capabilities.as_ref().map(|c| c.max_batch_total_size_bytes).unwrap_or(0);
        let salt = format!("reapi-conformance/{}", uuid::Uuid::new_v4()).into_bytes();
        Ok(Harness {
            cas: Cas::new(clients, max_batch),
            vars,
            options,
            capabilities,
            salt,
            inflight: Default::default(),
            control: Default::default(),
            target: target.clone(),
        })
    }

    /// The typed clients of the target.
    pub fn clients(&self) -> &Clients {
        self.cas.clients()
    }

    /// Builds an action without uploading it (see [`Harness::upload`] for `key`).
    pub fn prepare(&self, key: &str, spec: &crate::suite::ActionSpec) -> Result<PreparedAction, String> {
        let mut salt = self.salt.clone();
        salt.extend_from_slice(format!("/{key}").as_bytes());
        action::prepare(spec, &self.vars, &crate::probe::probe_blob(), &salt).map_err(|e| e.to_string())
    }

    /// Builds and uploads an action. `key` (a check id, plus a suffix when a
    /// check sends several) goes into the salt so that no two checks share an
    /// action digest and one check's result is never another's cache hit.
    /// A failure is the step's: an undecided one (the status rule) stays so.
    pub async fn upload(&self, key: &str, spec: &crate::suite::ActionSpec) -> Result<PreparedAction, StepError> {
        let prepared = self.prepare(key, spec).map_err(StepError::Undecided)?;
        self.cas.upload(&prepared.blobs).await.map_err(|e| StepError::from(e).context("uploading the input root"))?;
        Ok(prepared)
    }

    /// Executes an uploaded action within a budget.
    pub async fn execute(
        &self,
        prepared: &PreparedAction,
        budget: Duration,
    ) -> (Result<Outcome, execute::ExecError>, Trace) {
        let params = ExecuteParams { action_digest: prepared.action_digest.clone(), skip_cache_lookup: false, budget };
        execute::execute(self.clients(), &params, &self.inflight).await
    }

    /// Downloads stdout and stderr of a result and parses the probe report.
    pub async fn probe_output(&self, outcome: &Outcome) -> Result<Option<ProbeOutput>, StepError> {
        let Some(result) = outcome.result() else { return Ok(None) };
        let stdout = self.log(&result.stdout_raw, result.stdout_digest.as_ref(), "stdout").await?;
        let stderr = self.log(&result.stderr_raw, result.stderr_digest.as_ref(), "stderr").await?;
        Ok(Some(ProbeOutput {
            report: crate::probe::parse_report(&stdout),
            stdout_excerpt: text_excerpt(&crate::probe::stdout_for_evidence(&stdout)),
            stderr_excerpt: text_excerpt(&stderr),
        }))
    }

    async fn log(
        &self,
        raw: &[u8],
        digest: Option<&bazel_remote_apis::build::bazel::remote::execution::v2::Digest>,
        what: &str,
    ) -> Result<Vec<u8>, StepError> {
        if !raw.is_empty() {
            return Ok(raw.to_vec());
        }
        match digest {
            None => Ok(Vec::new()),
            Some(d) => self.cas.read(d).await.map_err(|e| StepError::from(e).context(format!("downloading {what}"))),
        }
    }
}

/// What a failed first call most likely means, from the transport's words.
pub fn transport_hint(url: &str, message: &str) -> Option<&'static str> {
    let tls = url.starts_with("grpcs://") || url.starts_with("https://");
    let m = message.to_ascii_lowercase();
    if tls && (m.contains("tls handshake eof") || m.contains("invalidcontenttype") || m.contains("corrupt message")) {
        Some("the server does not speak TLS on this port: try grpc:// or http://")
    } else if !tls
        && (m.contains("h2 protocol error") || m.contains("frame with invalid size") || m.contains("http2 error"))
    {
        Some("no HTTP/2 gRPC answer: the server may expect TLS (grpcs://), or it is not a gRPC server")
    } else if m.contains("connection reset") || m.contains("broken pipe") || m.contains("connection closed") {
        Some("the server closed the connection: is it the right port, and does it expect TLS?")
    } else if m.contains("invalid peer certificate") || m.contains("unknownissuer") {
        Some("the server's certificate is not trusted: pass its CA with --server-cert")
    } else {
        None
    }
}

/// First 2 KiB of a log as text.
pub fn text_excerpt(data: &[u8]) -> String {
    let mut cut = &data[..data.len().min(2048)];
    if cut.len() < data.len() {
        // Not inside a UTF-8 sequence: a cut character would show as U+FFFD
        // in the evidence. At most 3 bytes of a sequence precede the cut.
        let broken = (1..=3.min(cut.len())).find(|&back| {
            let b = cut[cut.len() - back];
            b & 0xC0 == 0xC0 && back < [0, 0, 2, 3, 4][(b.leading_ones() as usize).min(4)]
        });
        if let Some(back) = broken {
            cut = &cut[..cut.len() - back];
        }
    }
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if data.len() > cut.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::transport_hint;

    #[test]
    fn excerpts_are_not_cut_inside_a_character() {
        for pad in 0..4 {
            let data: Vec<u8> = "x".repeat(2048 - pad).bytes().chain("€€".bytes()).collect();
            let excerpt = super::text_excerpt(&data);
            assert!(!excerpt.contains('\u{FFFD}'), "{pad}: {excerpt:?}");
            assert!(excerpt.ends_with('…'));
        }
        assert_eq!(super::text_excerpt("é".as_bytes()), "é");
    }

    #[test]
    fn tls_and_plaintext_mismatches_are_named() {
        assert!(transport_hint("grpcs://h:1", "tls handshake eof").unwrap().contains("does not speak TLS"));
        assert!(transport_hint("grpc://h:1", "h2 protocol error: http2 error").unwrap().contains("expect TLS"));
        assert!(transport_hint("grpcs://h:1", "invalid peer certificate: UnknownIssuer")
            .unwrap()
            .contains("--server-cert"));
        assert_eq!(transport_hint("grpc://h:1", "tcp connect error"), None);
    }
}
