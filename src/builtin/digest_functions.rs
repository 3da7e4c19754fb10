//! Built-in checks of the `digest-functions` suite: every digest function a
//! server's cache advertises besides SHA-256 that the harness computes
//! (SHA-1, MD5, SHA-384, SHA-512, BLAKE3, GITSHA1, SHA256TREE; see
//! `reapi_client::digest_function` for those it cannot) works through
//! batches, FindMissingBlobs, ByteStream (with the resource name's
//! `{digest_function}` segment where the spec gives one) and the action
//! cache; requests naming a function it does not advertise, or a hash of the
//! wrong length for the function named, are refused. A server advertising
//! SHA-256 alone is SKIPped: the other functions are optional.

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest,
    FindMissingBlobsRequest, GetActionResultRequest, OutputFile, UpdateActionResultRequest,
};
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use reapi_client::digest_function::{hex_len_of, name_of, Function};
use tonic::Code;

use super::cas::{instance_prefix, unique_bytes};
use super::unmet;
use crate::digest;
use crate::execute;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Bytes a ByteStream read may bring before the harness stops listening:
/// the blobs here are a few hundred bytes.
const READ_BOUND: usize = 64 * 1024;

/// The cache's advertised functions other than SHA-256 that the harness
/// computes; SKIP (with the reason) when there are none.
fn testable(h: &Harness) -> Result<Vec<Function>, Verdict> {
    let advertised = h.capabilities.cache_capabilities.as_ref().map(|c| c.digest_functions.clone()).unwrap_or_default();
    let others: Vec<i32> =
        advertised.iter().copied().filter(|&v| v != Function::Sha256.value() as i32 && v != 0).collect();
    let usable: Vec<Function> = others.iter().filter_map(|&v| Function::from_value(v)).collect();
    if usable.is_empty() {
        let why = if others.is_empty() {
            "the cache advertises SHA-256 only (the other digest functions are optional)".to_string()
        } else {
            let names: Vec<String> = others.iter().map(|&v| name_of(v)).collect();
            format!("the harness cannot compute the advertised {}", names.join(", "))
        };
        return Err(Verdict::skip(why));
    }
    Ok(usable)
}

/// A transport failure or our deadline is ERROR; any other status is the
/// server's answer.
fn server_answer(what: &str, s: tonic::Status) -> Result<tonic::Status, Verdict> {
    if execute::is_undecided(&s) {
        Err(Verdict::error(format!("{what}: {:?}: {}", s.code(), s.message())))
    } else {
        Ok(s)
    }
}

/// A FAIL (WARN for a SHOULD) saying what `what` got instead of `expected`.
fn fell_short(check: &CheckSpec, what: &str, expected: &str, observed: String) -> Verdict {
    Verdict::new(unmet(check), format!("{what}: {observed}")).with(what, Some(expected.to_string()), observed)
}

/// A per-blob status as evidence: its code, and its message when there is one.
fn status_text(code: i32, message: &str) -> String {
    if message.is_empty() {
        execute::code_name(code)
    } else {
        format!("{}: {message}", execute::code_name(code))
    }
}

/// The missing digests FindMissingBlobs reports for `digests` under `f`.
async fn find_missing(
    h: &Harness,
    f: i32,
    digests: Vec<Digest>,
    what: &str,
) -> Result<Result<Vec<Digest>, tonic::Status>, Verdict> {
    let c = h.clients();
    let msg =
        FindMissingBlobsRequest { instance_name: c.cas_instance.clone(), blob_digests: digests, digest_function: f };
    match c.unary("FindMissingBlobs", &c.cas, msg, |mut s, r| async move { s.find_missing_blobs(r).await }).await {
        Ok(r) => Ok(Ok(r.missing_blob_digests)),
        Err(s) => Ok(Err(server_answer(what, s)?)),
    }
}

/// The status BatchUpdateBlobs gives one blob under `f`: the request's own
/// status when it refuses the whole batch.
async fn batch_update(h: &Harness, f: i32, d: &Digest, data: Vec<u8>, what: &str) -> Result<(i32, String), Verdict> {
    let c = h.clients();
    let msg = BatchUpdateBlobsRequest {
        instance_name: c.cas_instance.clone(),
        requests: vec![batch_update_blobs_request::Request { digest: Some(d.clone()), data, compressor: 0 }],
        digest_function: f,
    };
    match c.unary("BatchUpdateBlobs", &c.cas, msg, |mut s, r| async move { s.batch_update_blobs(r).await }).await {
        Ok(r) => {
            let answered: Vec<String> = r
                .responses
                .iter()
                .map(|r| r.digest.as_ref().map_or_else(|| "no digest".into(), digest::show))
                .collect();
            match r.responses.into_iter().find(|r| r.digest.as_ref() == Some(d)) {
                Some(r) => {
                    let status = r.status.unwrap_or_default();
                    Ok((status.code, status.message))
                }
                None => Ok((
                    Code::Unknown as i32,
                    format!("no response for the blob {}; responses for [{}]", digest::show(d), answered.join(", ")),
                )),
            }
        }
        Err(s) => {
            let s = server_answer(what, s)?;
            Ok((s.code() as i32, s.message().to_string()))
        }
    }
}

/// `{instance}/blobs/{segment/}{hash}/{size}`, after `uploads/{uuid}/` for a write.
fn resource(h: &Harness, f: Function, d: &Digest, upload: bool) -> String {
    let upload = if upload { format!("uploads/{}/", uuid::Uuid::new_v4()) } else { String::new() };
    let segment = f.resource_segment().map(|s| format!("{s}/")).unwrap_or_default();
    format!("{}{upload}blobs/{segment}{}/{}", instance_prefix(h), d.hash, d.size_bytes)
}

/// Reads `d` through ByteStream, stopping past a bound whatever the server sends.
async fn bytestream_read(h: &Harness, f: Function, d: &Digest) -> Result<Vec<u8>, tonic::Status> {
    let msg = ReadRequest { resource_name: resource(h, f, d, false), read_offset: 0, read_limit: 0 };
    super::bytestream_read_bounded(h, msg, READ_BOUND).await
}

/// Uploads `data` as `d` in one ByteStream message.
async fn bytestream_write(h: &Harness, f: Function, d: &Digest, data: Vec<u8>) -> Result<i64, tonic::Status> {
    let cl = h.clients();
    let msg = WriteRequest { resource_name: resource(h, f, d, true), write_offset: 0, finish_write: true, data };
    cl.call(cl.bytestream.clone().write(cl.request(futures_util::stream::iter([msg])))).await.map(|r| r.committed_size)
}

/// One function through the CAS: FindMissingBlobs before and after a batch
/// upload, a batch read, and a ByteStream write and read.
async fn cas_roundtrip_one(h: &Harness, check: &CheckSpec, f: Function) -> Result<(), Verdict> {
    let v = f.value() as i32;
    let name = f.name();
    let data = unique_bytes(h, check, &format!("batch-{name}"));
    let d = f.digest(&data);
    let what = format!("FindMissingBlobs ({name}) before the upload");
    match find_missing(h, v, vec![d.clone()], &what).await? {
        Ok(missing) if missing.contains(&d) => {}
        Ok(missing) => {
            return Err(fell_short(check, &what, "the blob reported missing", format!("missing {missing:?}")))
        }
        Err(s) => return Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message()))),
    }
    let what = format!("BatchUpdateBlobs ({name})");
    let (code, message) = batch_update(h, v, &d, data.clone(), &what).await?;
    if code != 0 {
        return Err(fell_short(check, &what, "OK", status_text(code, &message)));
    }
    let what = format!("FindMissingBlobs ({name}) after the upload");
    match find_missing(h, v, vec![d.clone()], &what).await? {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => return Err(fell_short(check, &what, "nothing missing", format!("missing {missing:?}"))),
        Err(s) => return Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message()))),
    }
    let what = format!("BatchReadBlobs ({name})");
    let c = h.clients();
    let msg = BatchReadBlobsRequest {
        instance_name: c.cas_instance.clone(),
        digests: vec![d.clone()],
        acceptable_compressors: Vec::new(),
        digest_function: v,
    };
    match c.unary("BatchReadBlobs", &c.cas, msg, |mut s, r| async move { s.batch_read_blobs(r).await }).await {
        Ok(r) => match r.responses.into_iter().find(|r| r.digest.as_ref() == Some(&d)) {
            Some(r) if r.status.as_ref().is_none_or(|s| s.code == 0) && r.data == data => {}
            Some(r) => {
                let status = r.status.unwrap_or_default();
                let observed =
                    format!("{}: {} ({} bytes)", execute::code_name(status.code), status.message, r.data.len());
                return Err(fell_short(check, &what, "OK with the blob's bytes", observed));
            }
            None => return Err(fell_short(check, &what, "a response for the blob", "none".into())),
        },
        Err(s) => {
            let s = server_answer(&what, s)?;
            return Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())));
        }
    }
    let data = unique_bytes(h, check, &format!("bytestream-{name}"));
    let d = f.digest(&data);
    let sample = resource(h, f, &d, true);
    let what = format!("ByteStream write of {sample}");
    if let Err(s) = bytestream_write(h, f, &d, data.clone()).await {
        let s = server_answer(&what, s)?;
        return Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())));
    }
    let what = format!("ByteStream read of {}", resource(h, f, &d, false));
    match bytestream_read(h, f, &d).await {
        Ok(back) if back == data => Ok(()),
        Ok(back) => Err(fell_short(
            check,
            &what,
            &format!("the {} bytes written", data.len()),
            format!("{} other bytes", back.len()),
        )),
        Err(s) => {
            let s = server_answer(&what, s)?;
            Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())))
        }
    }
}

/// Every advertised function works through batches, FindMissingBlobs and ByteStream.
pub(super) async fn cas_roundtrip(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let functions = testable(h)?;
    for &f in &functions {
        cas_roundtrip_one(h, check, f).await?;
    }
    let names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
    Ok(Verdict::pass(format!(
        "{}: FindMissingBlobs, batch update and read, ByteStream write and read",
        names.join(", ")
    )))
}

/// The functions tried, in order, for a request naming one the cache does
/// not advertise: those the harness computes first, then the others.
const UNADVERTISED_CANDIDATES: &[bazel_remote_apis::build::bazel::remote::execution::v2::digest_function::Value] = {
    use bazel_remote_apis::build::bazel::remote::execution::v2::digest_function::Value;
    &[
        Value::Gitsha1,
        Value::Blake3,
        Value::Sha1,
        Value::Md5,
        Value::Sha384,
        Value::Sha512,
        Value::Sha256tree,
        Value::Murmur3,
        Value::Vso,
    ]
};

/// FindMissingBlobs naming a digest function the cache does not advertise
/// (with a hash of that function's length) is INVALID_ARGUMENT.
pub(super) async fn unadvertised_refused(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    testable(h)?;
    let advertised = h.capabilities.cache_capabilities.as_ref().map(|c| c.digest_functions.clone()).unwrap_or_default();
    let Some(&value) = UNADVERTISED_CANDIDATES.iter().find(|v| !advertised.contains(&(**v as i32))) else {
        return Ok(Verdict::skip("the cache advertises every digest function the spec names"));
    };
    let data = unique_bytes(h, check, "unadvertised");
    let hash = match Function::from_value(value as i32) {
        Some(f) => f.hash(&data),
        None => "ab".repeat(hex_len_of(value) / 2),
    };
    let d = Digest { hash, size_bytes: data.len() as i64 };
    let what = format!("FindMissingBlobs naming {}, which the cache does not advertise", value.as_str_name());
    match find_missing(h, value as i32, vec![d], &what).await? {
        Err(s) if s.code() == Code::InvalidArgument => Ok(Verdict::pass(format!("{what}: INVALID_ARGUMENT"))),
        Err(s) => Ok(fell_short(check, &what, "INVALID_ARGUMENT", format!("{:?}: {}", s.code(), s.message()))),
        Ok(missing) => {
            Ok(fell_short(check, &what, "INVALID_ARGUMENT", format!("OK, {} digests missing", missing.len())))
        }
    }
}

/// A blob whose hash has another function's length than the one named is
/// refused: its digest cannot match its data under the named function.
pub(super) async fn wrong_length(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let functions = testable(h)?;
    for &f in &functions {
        // A hash the data does have, under a function of another length: a
        // server inferring the function from the length would accept it.
        let other = if f.hex_len() == Function::Sha256.hex_len() { Function::Sha1 } else { Function::Sha256 };
        let data = unique_bytes(h, check, f.name());
        let d = other.digest(&data);
        let what =
            format!("BatchUpdateBlobs naming {} with a {}-character ({}) hash", f.name(), d.hash.len(), other.name());
        let (code, message) = batch_update(h, f.value() as i32, &d, data, &what).await?;
        if code != Code::InvalidArgument as i32 {
            return Ok(fell_short(check, &what, "INVALID_ARGUMENT", status_text(code, &message)));
        }
    }
    let names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
    Ok(Verdict::pass(format!("{}: a hash of another length is INVALID_ARGUMENT", names.join(", "))))
}

/// An action result stored under an action digest of each advertised
/// function is found again under that function, output digests unchanged.
pub(super) async fn action_cache(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let functions = testable(h)?;
    let updates = h
        .capabilities
        .cache_capabilities
        .as_ref()
        .and_then(|c| c.action_cache_update_capabilities.as_ref())
        .is_some_and(|u| u.update_enabled);
    if !updates {
        return Ok(Verdict::skip("the action cache does not accept UpdateActionResult (update_enabled is false)"));
    }
    let c = h.clients();
    for &f in &functions {
        let v = f.value() as i32;
        let name = f.name();
        // The output the result names is in the CAS first: caches may check.
        let output = unique_bytes(h, check, &format!("output-{name}"));
        let output_digest = f.digest(&output);
        let what = format!("BatchUpdateBlobs ({name}) of the result's output");
        let (code, message) = batch_update(h, v, &output_digest, output, &what).await?;
        if code != 0 {
            return Ok(fell_short(check, &what, "OK", status_text(code, &message)));
        }
        let action = f.digest(&unique_bytes(h, check, &format!("action-{name}")));
        let result = ActionResult {
            output_files: vec![OutputFile {
                path: "out".into(),
                digest: Some(output_digest.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let msg = UpdateActionResultRequest {
            instance_name: c.ac_instance.clone(),
            action_digest: Some(action.clone()),
            action_result: Some(result),
            results_cache_policy: None,
            digest_function: v,
        };
        let what = format!("UpdateActionResult ({name})");
        if let Err(s) = c
            .unary(
                "UpdateActionResult",
                &c.action_cache,
                msg,
                |mut s, r| async move { s.update_action_result(r).await },
            )
            .await
        {
            let s = server_answer(&what, s)?;
            return Ok(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())));
        }
        let msg = GetActionResultRequest {
            instance_name: c.ac_instance.clone(),
            action_digest: Some(action.clone()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: v,
        };
        let what = format!("GetActionResult ({name}) of the result just stored");
        match c
            .unary("GetActionResult", &c.action_cache, msg, |mut s, r| async move { s.get_action_result(r).await })
            .await
        {
            Ok(r) if r.output_files.iter().any(|o| o.digest.as_ref() == Some(&output_digest)) => {}
            Ok(r) => {
                let got: Vec<String> =
                    r.output_files.iter().filter_map(|o| o.digest.as_ref()).map(crate::digest::show).collect();
                return Ok(fell_short(
                    check,
                    &what,
                    &format!("output out with digest {}", crate::digest::show(&output_digest)),
                    format!("output digests [{}]", got.join(", ")),
                ));
            }
            Err(s) => {
                let s = server_answer(&what, s)?;
                return Ok(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())));
            }
        }
    }
    let names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
    Ok(Verdict::pass(format!("{}: results stored and found under the function's action digest", names.join(", "))))
}

/// A blob to upload: its digest and its bytes.
type Blob = (Digest, std::sync::Arc<Vec<u8>>);

/// Largest message data sent in one ByteStream WriteRequest.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Blobs up to this size go in a batch of their own, larger ones through ByteStream.
const BATCH_BLOB_MAX: usize = 256 * 1024;

/// The check's action with every digest recomputed with `f`: file and
/// Directory blobs, the Command, and the Action naming them. Returns the
/// action digest and the blobs to upload.
fn rehashed(prepared: &crate::action::PreparedAction, f: Function) -> Result<(Digest, Vec<Blob>), String> {
    use bazel_remote_apis::build::bazel::remote::execution::v2::Directory;
    use prost::Message;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn blob<'a>(prepared: &'a crate::action::PreparedAction, d: Option<&Digest>) -> Result<&'a Arc<Vec<u8>>, String> {
        let d = d.ok_or("a digest is missing")?;
        prepared.blobs.get(&d.hash).map(|(_, data)| data).ok_or_else(|| format!("blob {} is not built", d.hash))
    }
    fn directory(
        prepared: &crate::action::PreparedAction,
        f: Function,
        d: Option<&Digest>,
        out: &mut HashMap<String, (Digest, Arc<Vec<u8>>)>,
        depth: usize,
    ) -> Result<Digest, String> {
        if depth > 64 {
            return Err("the input tree is deeper than 64".into());
        }
        let mut dir = Directory::decode(blob(prepared, d)?.as_slice()).map_err(|e| e.to_string())?;
        for file in &mut dir.files {
            let data = blob(prepared, file.digest.as_ref())?.clone();
            let new = f.digest(&data);
            out.insert(new.hash.clone(), (new.clone(), data));
            file.digest = Some(new);
        }
        for child in &mut dir.directories {
            child.digest = Some(directory(prepared, f, child.digest.as_ref(), out, depth + 1)?);
        }
        let data = Arc::new(dir.encode_to_vec());
        let new = f.digest(&data);
        out.insert(new.hash.clone(), (new.clone(), data));
        Ok(new)
    }

    let mut out = HashMap::new();
    let mut action = prepared.action.clone();
    action.input_root_digest = Some(directory(prepared, f, action.input_root_digest.as_ref(), &mut out, 0)?);
    let command = blob(prepared, action.command_digest.as_ref())?.clone();
    let command_digest = f.digest(&command);
    out.insert(command_digest.hash.clone(), (command_digest.clone(), command));
    action.command_digest = Some(command_digest);
    let data = Arc::new(action.encode_to_vec());
    let action_digest = f.digest(&data);
    out.insert(action_digest.hash.clone(), (action_digest.clone(), data));
    Ok((action_digest, out.into_values().collect()))
}

/// Uploads `blobs` with `f`: small ones in batches of one, large ones
/// through ByteStream in chunks. The error is the verdict.
async fn upload_with(h: &Harness, check: &CheckSpec, f: Function, blobs: &[Blob]) -> Result<(), Verdict> {
    let name = f.name();
    // Within the advertised batch limit (less room for framing): a blob the
    // server said it cannot take in a batch goes through ByteStream.
    let advertised = h.capabilities.cache_capabilities.as_ref().map_or(0, |c| c.max_batch_total_size_bytes);
    let batch_max = match usize::try_from(advertised) {
        Ok(limit) if limit > 0 => BATCH_BLOB_MAX.min(limit.saturating_sub(1024)),
        _ => BATCH_BLOB_MAX,
    };
    for (d, data) in blobs {
        if data.len() <= batch_max {
            let what = format!("BatchUpdateBlobs ({name}) of the action's blob {}", digest::show(d));
            let (code, message) = batch_update(h, f.value() as i32, d, data.to_vec(), &what).await?;
            if code != 0 {
                return Err(fell_short(check, &what, "OK", status_text(code, &message)));
            }
            continue;
        }
        let what = format!("ByteStream write ({name}) of the action's blob {}", digest::show(d));
        let name = resource(h, f, d, true);
        let chunks: Vec<&[u8]> = data.chunks(WRITE_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        let messages: Vec<WriteRequest> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: (i * WRITE_CHUNK) as i64,
                finish_write: i == last,
                data: chunk.to_vec(),
            })
            .collect();
        let cl = h.clients();
        if let Err(s) = cl.call(cl.bytestream.clone().write(cl.request(futures_util::stream::iter(messages)))).await {
            let s = server_answer(&what, s)?;
            return Err(fell_short(check, &what, "OK", format!("{:?}: {}", s.code(), s.message())));
        }
    }
    Ok(())
}

/// The check's action, with every digest computed with each function
/// execution advertises besides SHA-256, runs when Execute names the
/// function; its output file, stdout and stderr come back digested with it;
/// a cached result found under the function names the same output.
pub(super) async fn execute(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    use crate::suite::OutcomeClass;
    let cache = testable(h)?;
    let Some(exec) = h.capabilities.execution_capabilities.as_ref().filter(|e| e.exec_enabled) else {
        return Ok(Verdict::skip("execution is not enabled"));
    };
    let functions: Vec<Function> =
        cache.into_iter().filter(|f| exec.digest_functions.contains(&(f.value() as i32))).collect();
    if functions.is_empty() {
        return Ok(Verdict::skip(
            "execution_capabilities.digest_functions names no function besides SHA-256 that the cache also serves and the harness computes",
        ));
    }
    let expected_out = check
        .action
        .probe
        .iter()
        .find_map(|d| d.strip_prefix("out="))
        .map(|c| c.replace("\\n", "\n"))
        .ok_or_else(|| Verdict::error("the check's action writes no `out=` file"))?;
    let mut done = Vec::new();
    for &f in &functions {
        let name = f.name();
        let prepared = h.prepare(&format!("{}-{name}", check.id), &check.action).map_err(Verdict::error)?;
        let (action_digest, blobs) = rehashed(&prepared, f).map_err(Verdict::error)?;
        upload_with(h, check, f, &blobs).await?;
        let params = execute::ExecuteParams {
            action_digest: action_digest.clone(),
            skip_cache_lookup: false,
            budget: h.options.timeout,
        };
        let (outcome, _) = execute::execute_with_function(h.clients(), &params, f.value() as i32, &h.inflight).await;
        let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
        if let Some(v) = super::undecided(&outcome, "completed") {
            return Ok(v);
        }
        let what = format!("Execute ({name}) of the action digested with {name}");
        if outcome.class() != OutcomeClass::Completed {
            return Ok(fell_short(check, &what, "completed", outcome.describe()));
        }
        let Some(result) = outcome.result() else {
            return Err(Verdict::error("completed without an action result"));
        };
        let out_digest = f.digest(expected_out.as_bytes());
        let out = result.output_files.iter().find(|o| o.path == "out");
        match out.and_then(|o| o.digest.as_ref()) {
            Some(d) if *d == out_digest => {}
            Some(d) => {
                return Ok(fell_short(
                    check,
                    &format!("{what}: output file out"),
                    &format!("{name} digest {}", digest::show(&out_digest)),
                    format!("digest {} ({} hex characters)", digest::show(d), d.hash.len()),
                ))
            }
            None => {
                let paths: Vec<&str> = result.output_files.iter().map(|o| o.path.as_str()).collect();
                return Ok(fell_short(check, &what, "output file out", format!("output files {paths:?}")));
            }
        }
        for (log, d) in [("stdout", &result.stdout_digest), ("stderr", &result.stderr_digest)] {
            if let Some(d) = d.as_ref().filter(|d| !f.well_formed(&d.hash)) {
                return Ok(fell_short(
                    check,
                    &format!("{what}: {log}_digest"),
                    &format!("a {name} digest ({} hex characters)", f.hex_len()),
                    digest::show(d),
                ));
            }
        }
        // Where the result was cached, it is found under the function.
        let c = h.clients();
        let msg = GetActionResultRequest {
            instance_name: c.ac_instance.clone(),
            action_digest: Some(action_digest.clone()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: f.value() as i32,
        };
        let what = format!("GetActionResult ({name}) after the run");
        let cached = match c
            .unary("GetActionResult", &c.action_cache, msg, |mut s, r| async move { s.get_action_result(r).await })
            .await
        {
            Ok(r) => Some(r),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => {
                let s = server_answer(&what, s)?;
                return Ok(fell_short(check, &what, "OK or NOT_FOUND", format!("{:?}: {}", s.code(), s.message())));
            }
        };
        if let Some(r) = &cached {
            let got = r.output_files.iter().find(|o| o.path == "out").and_then(|o| o.digest.clone());
            if got.as_ref() != Some(&out_digest) {
                let got = got.map_or_else(|| "no output out".into(), |d| digest::show(&d));
                return Ok(fell_short(check, &what, &format!("output out {}", digest::show(&out_digest)), got));
            }
        }
        done.push(format!("{name}{}", if cached.is_some() { " (cached under it)" } else { " (not cached)" }));
    }
    Ok(Verdict::pass(format!("ran with its outputs digested by {}", done.join(", "))))
}
