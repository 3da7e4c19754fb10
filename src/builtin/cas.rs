//! Built-in checks on the CAS and ByteStream, as buildbox-casd uses them on
//! BuildStream's behalf.

use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, FindMissingBlobsRequest,
    GetTreeRequest,
};
use bazel_remote_apis::google::bytestream::{QueryWriteStatusRequest, ReadRequest};
use tonic::Code;

use super::unmet;
use crate::cas::CasError;
use crate::digest;
use crate::execute;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Bytes unique to this run and check, so nothing is found in the CAS by accident.
pub(super) fn unique_bytes(h: &Harness, check: &CheckSpec, what: &str) -> Vec<u8> {
    format!("{}/{}/{what}/{}", String::from_utf8_lossy(&h.salt), check.id, uuid::Uuid::new_v4()).into_bytes()
}

/// `INSTANCE/` for resource and operation names, or nothing without an instance name.
pub(super) fn instance_prefix(h: &Harness) -> String {
    let i = &h.clients().cas_instance;
    if i.is_empty() {
        String::new()
    } else {
        format!("{i}/")
    }
}

/// The status a server-streaming call answers with: its error, or OK once a
/// first message arrives. `make` starts the call; it is made again while the
/// answer is transient (a broken link, UNAVAILABLE, RESOURCE_EXHAUSTED), as
/// every call is, and what stays undecided or silent is an ERROR verdict.
pub(super) async fn first_status<T, Fut>(
    h: &Harness,
    what: &str,
    mut make: impl FnMut() -> Fut,
) -> Result<Code, Verdict>
where
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    let c = h.clients();
    let mut retries = 0;
    loop {
        let status = match c.call(make()).await {
            Err(s) => s,
            Ok(mut stream) => match tokio::time::timeout(c.rpc_timeout, stream.message()).await {
                Err(_) => return Err(Verdict::error(format!("{what} stream did not answer in time"))),
                Ok(Err(s)) => s,
                Ok(Ok(_)) => return Ok(Code::Ok),
            },
        };
        if reapi_client::retry::is_retryable(&status) && retries < reapi_client::retry::RETRIES {
            retries += 1;
            reapi_client::retry::record_status(what, &status);
            tokio::time::sleep(reapi_client::retry::pause(retries)).await;
            continue;
        }
        if execute::is_undecided(&status) {
            return Err(Verdict::error(format!("{what}: {:?}: {}", status.code(), status.message())));
        }
        return Ok(status.code());
    }
}

/// Starts a ByteStream Read of `msg` (for [`first_status`]).
pub(super) fn bytestream_read(
    h: &Harness,
    msg: &ReadRequest,
) -> impl std::future::Future<
    Output = Result<
        tonic::Response<tonic::Streaming<bazel_remote_apis::google::bytestream::ReadResponse>>,
        tonic::Status,
    >,
> {
    let c = h.clients();
    let (mut bytestream, req) = (c.bytestream.clone(), c.request(msg.clone()));
    async move { bytestream.read(req).await }
}

/// An RPC failure: transport problems are ERROR, server answers are evidence.
pub(super) fn answered(check: &CheckSpec, what: &str, expected: &str, s: tonic::Status) -> Verdict {
    if execute::is_undecided(&s) {
        Verdict::error(format!("{what}: {:?}: {}", s.code(), s.message()))
    } else {
        Verdict::new(unmet(check), format!("{what} answered {:?}: {}", s.code(), s.message())).with(
            what,
            Some(expected.to_string()),
            format!("{:?}: {}", s.code(), s.message()),
        )
    }
}

/// The empty blob is always available: never missing, readable in a batch.
pub(super) async fn empty_blob(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let c = h.clients();
    let empty = digest::of_bytes(b"");
    let msg = FindMissingBlobsRequest {
        instance_name: c.cas_instance.clone(),
        blob_digests: vec![empty.clone()],
        digest_function: 0,
    };
    match c.unary("FindMissingBlobs", &c.cas, msg, |mut s, r| async move { s.find_missing_blobs(r).await }).await {
        Err(s) => return Ok(answered(check, "FindMissingBlobs", "OK", s)),
        Ok(r) if !r.missing_blob_digests.is_empty() => {
            return Ok(Verdict::new(unmet(check), "FindMissingBlobs reports the empty blob missing").with(
                "missing_blob_digests",
                Some("[]".into()),
                "the empty blob",
            ))
        }
        Ok(_) => {}
    }
    let msg =
        BatchReadBlobsRequest { instance_name: c.cas_instance.clone(), digests: vec![empty], ..Default::default() };
    let batch =
        match c.unary("BatchReadBlobs", &c.cas, msg, |mut s, r| async move { s.batch_read_blobs(r).await }).await {
            Err(s) => return Ok(answered(check, "BatchReadBlobs", "OK", s)),
            Ok(r) => r,
        };
    match batch.responses.first().map(|x| x.status.clone().unwrap_or_default()) {
        Some(st) if st.code == 0 => {}
        Some(st) => {
            return Ok(Verdict::new(
                unmet(check),
                format!("BatchReadBlobs of the empty blob: {}: {}", execute::code_name(st.code), st.message),
            )
            .with("status", Some("OK".into()), execute::code_name(st.code)))
        }
        None => {
            return Ok(Verdict::new(unmet(check), "BatchReadBlobs returned no response for the empty blob").with(
                "responses",
                Some("one, OK".into()),
                "none",
            ))
        }
    }
    // The other read path: ByteStream, as a client without batch support reads.
    match h.cas.read_range(&digest::of_bytes(b""), 0, 0).await {
        Ok(data) if data.is_empty() => Ok(Verdict::pass("never missing, readable by batch and by ByteStream")),
        Ok(data) => Ok(Verdict::new(unmet(check), "ByteStream returned data for the empty blob").with(
            "ByteStream.Read",
            Some("no bytes".into()),
            format!("{} bytes", data.len()),
        )),
        Err(e) => Ok(cas_failure(check, "ByteStream.Read of the empty blob", e)),
    }
}

/// Uploads `data` as `claimed` in a one-blob BatchUpdateBlobs and returns the
/// blob's status code (the call's, when the whole batch is refused).
async fn batch_update_code(h: &Harness, claimed: &Digest, data: Vec<u8>) -> Result<Code, Verdict> {
    let c = h.clients();
    let msg = BatchUpdateBlobsRequest {
        instance_name: c.cas_instance.clone(),
        requests: vec![batch_update_blobs_request::Request { digest: Some(claimed.clone()), data, compressor: 0 }],
        digest_function: 0,
    };
    match c.unary("BatchUpdateBlobs", &c.cas, msg, |mut s, r| async move { s.batch_update_blobs(r).await }).await {
        Err(s) if execute::is_undecided(&s) => Err(Verdict::error(format!("BatchUpdateBlobs: {}", s.message()))),
        Err(s) => Ok(s.code()),
        Ok(r) => Ok(Code::from_i32(r.responses.first().and_then(|x| x.status.as_ref()).map_or(0, |st| st.code))),
    }
}

/// BatchUpdateBlobs refuses a blob whose data does not match its digest, and does not store it.
pub(super) async fn batch_digest_mismatch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let data = unique_bytes(h, check, "data");
    let claimed = digest::of_bytes(&unique_bytes(h, check, "claimed")[..data.len()]);
    let claimed =
        bazel_remote_apis::build::bazel::remote::execution::v2::Digest { size_bytes: data.len() as i64, ..claimed };
    let code = batch_update_code(h, &claimed, data).await?;
    if code != Code::InvalidArgument {
        return Ok(Verdict::new(unmet(check), format!("a blob with a wrong digest was answered {code:?}")).with(
            "code",
            Some("InvalidArgument".into()),
            format!("{code:?}"),
        ));
    }
    if present(h, &claimed).await? {
        return Ok(Verdict::new(
            unmet(check),
            format!("INVALID_ARGUMENT, but {} is now present", digest::show(&claimed)),
        )
        .with("FindMissingBlobs", Some("the refused blob missing".into()), "present"));
    }
    Ok(Verdict::pass("INVALID_ARGUMENT, blob not stored"))
}

/// A blob larger than one chunk written with ByteStream reads back identical.
pub(super) async fn bytestream_roundtrip(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let mut data = unique_bytes(h, check, "roundtrip");
    // 2.5 MiB: several write chunks, and above common batch limits.
    data.resize(5 * 512 * 1024, b'r');
    let d = digest::of_bytes(&data);
    let data = Arc::new(data);
    if let Err(e) = h.cas.write_bytestream(&d, &data).await {
        return Ok(cas_failure(check, "ByteStream.Write", e));
    }
    match h.cas.read_bytestream(&d).await {
        Err(e) => Ok(cas_failure(check, "ByteStream.Read", e)),
        Ok(back) if back == *data => Ok(Verdict::pass(format!("{} written and read back", digest::show(&d)))),
        Ok(back) => Ok(Verdict::new(
            unmet(check),
            format!("read back {} bytes differing from the {} written", back.len(), data.len()),
        )
        .with("read", Some(digest::show(&d)), digest::show(&digest::of_bytes(&back)))),
    }
}

fn cas_failure(check: &CheckSpec, what: &str, e: CasError) -> Verdict {
    match e {
        CasError::Rpc { code, message, undecided: false, .. } => Verdict::new(
            unmet(check),
            format!("{what} answered {code:?}: {message}"),
        )
        .with(what, Some("OK".into()), format!("{code:?}: {message}")),
        CasError::Blob { digest, why, .. } => {
            Verdict::new(unmet(check), format!("{what}: {why}")).with(what, Some(format!("blob {digest} intact")), why)
        }
        other => Verdict::error(other.to_string()),
    }
}

/// A ByteStream read starting past the end of the blob answers OUT_OF_RANGE.
pub(super) async fn bytestream_read_past_end(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let data = unique_bytes(h, check, "short");
    let d = digest::of_bytes(&data);
    let blobs = [(d.hash.clone(), (d.clone(), Arc::new(data)))].into_iter().collect();
    if let Err(e) = h.cas.upload(&blobs).await {
        return Ok(Verdict::error(format!("uploading the blob: {e}")));
    }
    let msg = ReadRequest {
        resource_name: format!("{}blobs/{}/{}", instance_prefix(h), d.hash, d.size_bytes),
        read_offset: d.size_bytes + 1,
        read_limit: 0,
    };
    match first_status(h, "ByteStream.Read", || bytestream_read(h, &msg)).await {
        Err(v) => Ok(v),
        Ok(Code::OutOfRange) => Ok(Verdict::pass("OUT_OF_RANGE")),
        Ok(code) => Ok(Verdict::new(unmet(check), format!("read_offset past the end answered {code:?}")).with(
            "code",
            Some("OutOfRange".into()),
            format!("{code:?}"),
        )),
    }
}

/// QueryWriteStatus for an upload that never started answers NOT_FOUND.
pub(super) async fn query_write_status_unknown(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let d = digest::of_bytes(&unique_bytes(h, check, "never-written"));
    let c = h.clients();
    let msg = QueryWriteStatusRequest {
        resource_name: format!(
            "{}uploads/{}/blobs/{}/{}",
            instance_prefix(h),
            uuid::Uuid::new_v4(),
            d.hash,
            d.size_bytes
        ),
    };
    match c.unary("QueryWriteStatus", &c.bytestream, msg, |mut s, r| async move { s.query_write_status(r).await }).await
    {
        Err(s) if s.code() == Code::NotFound => Ok(Verdict::pass("NOT_FOUND")),
        // Optional in practice (buildbox-casd, Buildbarn); BuildStream never resumes uploads.
        Err(s) if s.code() == Code::Unimplemented => {
            Ok(Verdict::skip(format!("the server does not implement QueryWriteStatus: {}", s.message())))
        }
        Err(s) => Ok(answered(check, "QueryWriteStatus", "NotFound", s)),
        Ok(r) => {
            Ok(Verdict::new(unmet(check), format!("an unknown upload reported committed_size {}", r.committed_size))
                .with("QueryWriteStatus", Some("NotFound".into()), format!("committed_size {}", r.committed_size)))
        }
    }
}

/// GetTree on a root that is not in the CAS answers NOT_FOUND.
pub(super) async fn get_tree_missing_root(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let d = digest::of_bytes(&unique_bytes(h, check, "no-such-root"));
    let c = h.clients();
    let msg = GetTreeRequest { instance_name: c.cas_instance.clone(), root_digest: Some(d), ..Default::default() };
    let get_tree = || {
        let (mut cas, req) = (c.cas.clone(), c.request(msg.clone()));
        async move { cas.get_tree(req).await }
    };
    match first_status(h, "GetTree", get_tree).await {
        Err(v) => Ok(v),
        Ok(Code::NotFound) => Ok(Verdict::pass("NOT_FOUND")),
        // Buildbarn does not implement GetTree; BuildStream fetches trees through buildbox-casd.
        Ok(Code::Unimplemented) => Ok(Verdict::skip("the server does not implement GetTree")),
        Ok(code) => Ok(Verdict::new(unmet(check), format!("GetTree on a missing root answered {code:?}")).with(
            "code",
            Some("NotFound".into()),
            format!("{code:?}"),
        )),
    }
}

/// Uploads fresh unique bytes (`len` long) and returns their digest and data.
async fn uploaded_blob(h: &Harness, check: &CheckSpec, what: &str, len: usize) -> Result<(Digest, Vec<u8>), Verdict> {
    let mut data = unique_bytes(h, check, what);
    data.resize(len.max(data.len()), b'.');
    let d = digest::of_bytes(&data);
    let blobs = [(d.hash.clone(), (d.clone(), Arc::new(data.clone())))].into_iter().collect();
    h.cas.upload(&blobs).await.map_err(|e| Verdict::error(format!("uploading the blob: {e}")))?;
    Ok((d, data))
}

/// A digest of bytes no one uploaded.
fn absent_blob(h: &Harness, check: &CheckSpec) -> Digest {
    digest::of_bytes(&unique_bytes(h, check, "never uploaded"))
}

/// FindMissingBlobs names exactly the blobs the CAS lacks.
pub(super) async fn find_missing_exact(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (present, _) = uploaded_blob(h, check, "present", 0).await?;
    let absent = absent_blob(h, check);
    let c = h.clients();
    let msg = FindMissingBlobsRequest {
        instance_name: c.cas_instance.clone(),
        blob_digests: vec![present.clone(), absent.clone()],
        digest_function: 0,
    };
    let missing =
        match c.unary("FindMissingBlobs", &c.cas, msg, |mut s, r| async move { s.find_missing_blobs(r).await }).await {
            Ok(r) => r.missing_blob_digests,
            Err(s) => return Ok(answered(check, "FindMissingBlobs", "OK", s)),
        };
    let named: Vec<String> = missing.iter().map(digest::show).collect();
    let expected = format!("exactly [{}]", digest::show(&absent));
    if missing.iter().any(|d| d.hash == present.hash) {
        return Ok(Verdict::new(unmet(check), "a blob the CAS holds is reported missing").with(
            "missing_blob_digests",
            Some(expected),
            format!("{named:?}"),
        ));
    }
    if !missing.iter().any(|d| d.hash == absent.hash && d.size_bytes == absent.size_bytes) {
        return Ok(Verdict::new(
            unmet(check),
            "a blob never uploaded is not reported missing: a client would skip uploading it",
        )
        .with("missing_blob_digests", Some(expected), format!("{named:?}")));
    }
    if missing.len() != 1 {
        return Ok(Verdict::new(unmet(check), format!("{} digests reported for 1 missing blob", missing.len())).with(
            "missing_blob_digests",
            Some(expected),
            format!("{named:?}"),
        ));
    }
    Ok(Verdict::pass("exactly the missing blob reported"))
}

/// BatchReadBlobs answers each blob on its own: data with OK for the one
/// present, NOT_FOUND for the one missing, and OK for the call.
pub(super) async fn batch_read_mixed(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (present, data) = uploaded_blob(h, check, "present", 0).await?;
    let absent = absent_blob(h, check);
    let c = h.clients();
    let msg = BatchReadBlobsRequest {
        instance_name: c.cas_instance.clone(),
        digests: vec![present.clone(), absent.clone()],
        acceptable_compressors: vec![],
        digest_function: 0,
    };
    let responses =
        match c.unary("BatchReadBlobs", &c.cas, msg, |mut s, r| async move { s.batch_read_blobs(r).await }).await {
            Ok(r) => r.responses,
            Err(s) => return Ok(answered(check, "BatchReadBlobs", "OK with a status per blob", s)),
        };
    let find = |d: &Digest| responses.iter().find(|r| r.digest.as_ref().is_some_and(|x| x.hash == d.hash));
    let code = |r: Option<
        &bazel_remote_apis::build::bazel::remote::execution::v2::batch_read_blobs_response::Response,
    >| { r.map(|r| Code::from_i32(r.status.as_ref().map_or(0, |s| s.code))) };
    match (code(find(&present)), code(find(&absent))) {
        (Some(Code::Ok), Some(Code::NotFound)) if find(&present).is_some_and(|r| r.data == data) => {
            Ok(Verdict::pass("OK with the data for the present blob, NOT_FOUND for the missing one"))
        }
        (p, a) => Ok(Verdict::new(unmet(check), "per-blob statuses are not OK / NOT_FOUND with the right data").with(
            "responses",
            Some("present: OK with its data; missing: NOT_FOUND".into()),
            format!("present: {p:?}; missing: {a:?}; {} responses", responses.len()),
        )),
    }
}

/// A ByteStream read with read_offset and read_limit returns exactly that slice.
pub(super) async fn bytestream_partial_read(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (d, data) = uploaded_blob(h, check, "partial", 256).await?;
    let (offset, limit) = (10usize, 20usize);
    let want = &data[offset..offset + limit];
    match h.cas.read_range(&d, offset as i64, limit as i64).await {
        Err(e) => Ok(cas_failure(check, "ByteStream.Read", e)),
        Ok(got) if got == want => Ok(Verdict::pass(format!("bytes {offset}..{} of {}", offset + limit, data.len()))),
        Ok(got) => Ok(Verdict::new(
            unmet(check),
            format!("read_offset {offset}, read_limit {limit} returned {} bytes, not that slice", got.len()),
        )
        .with(
            "data",
            Some(format!("{limit} bytes: {:?}", String::from_utf8_lossy(want))),
            format!("{} bytes: {:?}", got.len(), crate::harness::text_excerpt(&got)),
        )),
    }
}

/// A negative read_offset answers OUT_OF_RANGE.
pub(super) async fn bytestream_negative_offset(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (d, _) = uploaded_blob(h, check, "negative", 0).await?;
    let msg = ReadRequest {
        resource_name: format!("{}blobs/{}/{}", instance_prefix(h), d.hash, d.size_bytes),
        read_offset: -1,
        read_limit: 0,
    };
    match first_status(h, "ByteStream.Read", || bytestream_read(h, &msg)).await? {
        Code::OutOfRange => Ok(Verdict::pass("OUT_OF_RANGE")),
        code => Ok(Verdict::new(unmet(check), format!("read_offset -1 answered {code:?}")).with(
            "code",
            Some("OutOfRange".into()),
            format!("{code:?}"),
        )),
    }
}

/// Whether `d` is in the CAS, by FindMissingBlobs.
pub(super) async fn present(h: &Harness, d: &Digest) -> Result<bool, Verdict> {
    let c = h.clients();
    let msg = FindMissingBlobsRequest {
        instance_name: c.cas_instance.clone(),
        blob_digests: vec![d.clone()],
        digest_function: 0,
    };
    match c.unary("FindMissingBlobs", &c.cas, msg, |mut s, r| async move { s.find_missing_blobs(r).await }).await {
        Ok(r) => Ok(!r.missing_blob_digests.iter().any(|m| m.hash == d.hash && m.size_bytes == d.size_bytes)),
        Err(s) => Err(Verdict::error(format!("FindMissingBlobs: {:?}: {}", s.code(), s.message()))),
    }
}

/// BatchUpdateBlobs refuses a blob whose hash matches its data but whose size does not.
pub(super) async fn batch_wrong_size(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let data = unique_bytes(h, check, "sized");
    let mut claimed = digest::of_bytes(&data);
    claimed.size_bytes += 1;
    let code = batch_update_code(h, &claimed, data).await?;
    if code == Code::InvalidArgument {
        return Ok(Verdict::pass(format!("INVALID_ARGUMENT for {}", digest::show(&claimed))));
    }
    let stored = if present(h, &claimed).await? { "; and it is now reported present" } else { "" };
    Ok(Verdict::new(
        unmet(check),
        format!("a blob one byte shorter than its digest says was answered {code:?}{stored}"),
    )
    .with("status", Some("INVALID_ARGUMENT".into()), crate::suite::status_code_name(code)))
}

/// A ByteStream upload whose data does not match the digest in its resource
/// name is refused and not stored.
pub(super) async fn bytestream_write_mismatch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let named = unique_bytes(h, check, "named");
    let mut sent = named.clone();
    // Same length, other content: only the hash can tell them apart.
    if let Some(first) = sent.first_mut() {
        *first ^= 0x20;
    }
    let d = digest::of_bytes(&named);
    match h.cas.write_bytestream(&d, &Arc::new(sent)).await {
        Err(CasError::Rpc { code: Code::InvalidArgument, .. }) => {}
        Err(CasError::Rpc { undecided: true, code, message, .. }) => {
            return Ok(Verdict::error(format!("ByteStream.Write: {code:?}: {message}")))
        }
        Err(CasError::Rpc { code, message, .. }) => {
            if !present(h, &d).await? {
                // Refused, with another code than the spec's, and not stored.
                return Ok(Verdict::new(
                    unmet(check),
                    format!("refused with {code:?}, not INVALID_ARGUMENT: {message}"),
                )
                .with("code", Some("INVALID_ARGUMENT".into()), format!("{code:?}")));
            }
            return Ok(Verdict::new(unmet(check), format!("answered {code:?} but stored the blob")).with(
                "FindMissingBlobs",
                Some("the blob missing".into()),
                "present",
            ));
        }
        Err(other) => return Ok(Verdict::error(other.to_string())),
        Ok(()) => {
            return Ok(Verdict::new(unmet(check), "accepted data that does not match the digest it was uploaded as")
                .with("ByteStream.Write", Some("INVALID_ARGUMENT".into()), "OK"))
        }
    }
    if present(h, &d).await? {
        return Ok(Verdict::new(unmet(check), "refused the upload, yet the digest is now reported present").with(
            "FindMissingBlobs",
            Some("the blob missing".into()),
            "present",
        ));
    }
    Ok(Verdict::pass("INVALID_ARGUMENT, nothing stored"))
}

/// Uploads a tree of four directories unique to this check: root holding
/// `a` (holding `b`) and `c`. Returns the root and every directory's digest;
/// `leave_out` names directories (`"b"`) not to upload.
async fn uploaded_tree(h: &Harness, check: &CheckSpec, leave_out: &[&str]) -> Result<(Digest, Vec<Digest>), Verdict> {
    use bazel_remote_apis::build::bazel::remote::execution::v2::{Directory, DirectoryNode, FileNode};
    let (marker, marker_data) = {
        let data = unique_bytes(h, check, "tree-marker");
        (digest::of_bytes(&data), data)
    };
    let leaf = |name: &str| Directory {
        files: vec![FileNode { name: format!("{name}-file"), digest: Some(marker.clone()), ..Default::default() }],
        ..Default::default()
    };
    let node = |name: &str, d: &Digest| DirectoryNode { name: name.into(), digest: Some(d.clone()) };
    let b = leaf("b");
    let (b_digest, b_bytes) = digest::of_message(&b);
    let a = Directory { directories: vec![node("b", &b_digest)], ..leaf("a") };
    let (a_digest, a_bytes) = digest::of_message(&a);
    let c = leaf("c");
    let (c_digest, c_bytes) = digest::of_message(&c);
    let root = Directory { directories: vec![node("a", &a_digest), node("c", &c_digest)], ..Default::default() };
    let (root_digest, root_bytes) = digest::of_message(&root);
    let mut blobs = crate::tree::Blobs::new();
    let all = [
        ("root", &root_digest, root_bytes),
        ("a", &a_digest, a_bytes),
        ("b", &b_digest, b_bytes),
        ("c", &c_digest, c_bytes),
    ];
    let digests: Vec<Digest> = all.iter().map(|(_, d, _)| (*d).clone()).collect();
    for (name, d, bytes) in all {
        if !leave_out.contains(&name) {
            blobs.insert(d.hash.clone(), (d.clone(), Arc::new(bytes)));
        }
    }
    blobs.insert(marker.hash.clone(), (marker, Arc::new(marker_data)));
    h.cas.upload(&blobs).await.map_err(|e| Verdict::error(format!("uploading the tree: {e}")))?;
    Ok((root_digest, digests))
}

/// One GetTree call: every page it streams, as (directories, next_page_token).
async fn get_tree_pages(
    h: &Harness,
    root: &Digest,
    page_size: i32,
    page_token: String,
) -> Result<Result<Vec<(Vec<Digest>, String)>, tonic::Status>, Verdict> {
    let c = h.clients();
    let msg = GetTreeRequest {
        instance_name: c.cas_instance.clone(),
        root_digest: Some(root.clone()),
        page_size,
        page_token,
        digest_function: 0,
    };
    let mut stream = match c.unary("GetTree", &c.cas, msg, |mut s, r| async move { s.get_tree(r).await }).await {
        Ok(stream) => stream,
        Err(s) if execute::is_undecided(&s) => return Err(Verdict::error(format!("GetTree: {}", s.message()))),
        Err(s) => return Ok(Err(s)),
    };
    let deadline = tokio::time::Instant::now() + c.rpc_timeout;
    let mut pages = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Err(Verdict::error("GetTree did not finish in time")),
            Ok(Err(s)) if execute::is_undecided(&s) => return Err(Verdict::error(format!("GetTree: {}", s.message()))),
            Ok(Err(s)) => return Ok(Err(s)),
            Ok(Ok(None)) => return Ok(Ok(pages)),
            Ok(Ok(Some(page))) => {
                // A bounded tree: a server streaming more pages than it has directories is looping.
                if pages.len() > 64 {
                    return Ok(Err(tonic::Status::out_of_range("more than 64 pages for a tree of 4 directories")));
                }
                let dirs = page.directories.iter().map(|d| digest::of_message(d).0).collect();
                pages.push((dirs, page.next_page_token));
            }
        }
    }
}

/// GetTree with `page_size` 1 of a fresh four-directory tree: every page it
/// streams, or the verdict when GetTree is not implemented or fails.
async fn paged_tree(
    h: &Harness,
    check: &CheckSpec,
) -> Result<(Digest, Vec<Digest>, Vec<(Vec<Digest>, String)>), Verdict> {
    let (root, all) = uploaded_tree(h, check, &[]).await?;
    match get_tree_pages(h, &root, 1, String::new()).await? {
        Err(s) if s.code() == Code::Unimplemented => Err(Verdict::skip("the server does not implement GetTree")),
        Err(s) => Err(answered(check, "GetTree", "the tree, page by page", s)),
        Ok(pages) => Ok((root, all, pages)),
    }
}

/// GetTree with `page_size` 1 streams pages of at most one directory that
/// together hold the whole tree.
pub(super) async fn get_tree_paged(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, all, pages) = paged_tree(h, check).await?;
    let sizes: Vec<usize> = pages.iter().map(|(d, _)| d.len()).collect();
    if let Some(big) = sizes.iter().find(|n| **n > 1) {
        return Ok(Verdict::new(unmet(check), format!("a page of {big} directories for page_size 1")).with(
            "directories per page",
            Some("at most 1".into()),
            format!("{sizes:?}"),
        ));
    }
    let got: std::collections::HashSet<&str> =
        pages.iter().flat_map(|(d, _)| d.iter().map(|d| d.hash.as_str())).collect();
    let lacking: Vec<String> = all.iter().filter(|d| !got.contains(d.hash.as_str())).map(digest::show).collect();
    if !lacking.is_empty() {
        return Ok(Verdict::new(unmet(check), format!("the pages lack {} of the tree's 4 directories", lacking.len()))
            .with("directories", Some("all 4".into()), format!("missing {lacking:?}")));
    }
    Ok(Verdict::pass(format!("{} pages of at most 1 directory, the whole tree", pages.len())))
}

/// Every page but the last carries a next_page_token, and GetTree with the
/// first page's token returns the rest without that page.
pub(super) async fn get_tree_resumable(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (root, _, pages) = paged_tree(h, check).await?;
    if pages.len() < 2 {
        return Ok(Verdict::skip(format!("GetTree answered in {} page(s); nothing to resume", pages.len())));
    }
    let tokens: Vec<bool> = pages.iter().map(|(_, t)| !t.is_empty()).collect();
    let (first, token) = &pages[0];
    if tokens[..tokens.len() - 1].iter().any(|has| !has) {
        return Ok(Verdict::new(
            unmet(check),
            "a page that is not the last has no next_page_token: an interrupted GetTree cannot resume",
        )
        .with("next_page_token per page", Some("set on every page but the last".into()), format!("{tokens:?}")));
    }
    let total: usize = pages.iter().map(|(d, _)| d.len()).sum();
    let resumed = match get_tree_pages(h, &root, 1, token.clone()).await? {
        Err(s) => return Ok(answered(check, "GetTree with page_token", "the pages after the token", s)),
        Ok(pages) => pages,
    };
    let again = resumed.iter().flat_map(|(d, _)| d.iter()).filter(|d| first.contains(d)).count();
    let resumed_count: usize = resumed.iter().map(|(d, _)| d.len()).sum();
    if again > 0 || resumed_count + first.len() != total {
        return Ok(Verdict::new(unmet(check), "GetTree with a page_token did not resume after that page").with(
            "directories after the first page's token",
            Some(format!("the other {}", total - first.len())),
            format!("{resumed_count}, {again} of them from the first page"),
        ));
    }
    Ok(Verdict::pass(format!("{} pages with tokens; the first page's token resumes after it", pages.len())))
}

/// GetTree on a tree with a missing subdirectory returns the part that is
/// present (root, `a`, `c`) instead of failing.
pub(super) async fn get_tree_partial(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (root, all) = uploaded_tree(h, check, &["b"]).await?;
    let pages = match get_tree_pages(h, &root, 0, String::new()).await? {
        Err(s) if s.code() == Code::Unimplemented => return Ok(Verdict::skip("the server does not implement GetTree")),
        Err(s) => return Ok(answered(check, "GetTree", "the present part of the tree", s)),
        Ok(pages) => pages,
    };
    let got: std::collections::HashSet<&str> =
        pages.iter().flat_map(|(d, _)| d.iter().map(|d| d.hash.as_str())).collect();
    // all = [root, a, b, c]; b was not uploaded.
    let present = [&all[0], &all[1], &all[3]];
    let lacking = present.iter().filter(|d| !got.contains(d.hash.as_str())).count();
    if lacking > 0 {
        return Ok(Verdict::new(unmet(check), format!("{lacking} of the 3 present directories did not come back"))
            .with("directories", Some("root, a and c (b is missing)".into()), format!("{} directories", got.len())));
    }
    Ok(Verdict::pass("the 3 present directories, the missing one left out"))
}

/// A size limit the server advertises, if it is one worth testing: SKIP when
/// it is 0 (no limit) or above `largest_mib` (not worth the transfer in a
/// conformance run).
fn advertised_limit(value: Option<i64>, field: &str, largest_mib: i64) -> Result<i64, Verdict> {
    let limit = value.unwrap_or_default();
    let largest = largest_mib * 1024 * 1024;
    if limit < 0 {
        // Not a limit at all: an impossible answer decides nothing (the status rule's "garbled").
        return Err(Verdict::error(format!("{field} is advertised as {limit}, which is no size: nothing to test")));
    }
    if limit == 0 {
        return Err(Verdict::skip(format!("no {field} advertised (0: no limit)")));
    }
    if limit > largest {
        return Err(Verdict::skip(format!("{field} {limit} is above the {largest} bytes tested")));
    }
    Ok(limit)
}

/// A batch of blobs totalling exactly the advertised
/// `max_batch_total_size_bytes` is uploaded and read back.
pub(super) async fn batch_limit_usable(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let caps = h.capabilities.cache_capabilities.as_ref();
    let limit = advertised_limit(caps.map(|c| c.max_batch_total_size_bytes), "max_batch_total_size_bytes", 32)?;
    let parts = 4usize.min(limit as usize);
    let base = limit as usize / parts;
    let mut requests = Vec::new();
    let mut digests = Vec::new();
    for i in 0..parts {
        let len = if i == parts - 1 { limit as usize - base * (parts - 1) } else { base };
        let mut data = unique_bytes(h, check, &format!("part-{i}"));
        data.resize(len, b'.');
        data.truncate(len);
        let d = digest::of_bytes(&data);
        digests.push(d.clone());
        requests.push(batch_update_blobs_request::Request { digest: Some(d), data, compressor: 0 });
    }
    let c = h.clients();
    let batch = |requests: Vec<batch_update_blobs_request::Request>| {
        let msg = BatchUpdateBlobsRequest { instance_name: c.cas_instance.clone(), requests, digest_function: 0 };
        c.unary("BatchUpdateBlobs", &c.cas, msg, |mut s, r| async move { s.batch_update_blobs(r).await })
    };
    let expected = format!("OK for blobs totalling {limit} bytes");
    let resp = match batch(requests.clone()).await {
        Ok(r) => r,
        Err(s) if execute::is_undecided(&s) => {
            // A reset stream or RESOURCE_EXHAUSTED says nothing by itself; the
            // control does: the same blobs in two batches of half the size.
            let (first, second) = requests.split_at(parts / 2);
            let (a, b) = (batch(first.to_vec()).await, batch(second.to_vec()).await);
            let ok = |r: &Result<
                bazel_remote_apis::build::bazel::remote::execution::v2::BatchUpdateBlobsResponse,
                tonic::Status,
            >| {
                r.as_ref().is_ok_and(|r| r.responses.iter().all(|b| b.status.as_ref().is_none_or(|s| s.code == 0)))
            };
            if !(ok(&a) && ok(&b)) {
                return Ok(answered(check, "BatchUpdateBlobs", &expected, s));
            }
            return Ok(Verdict::new(
                unmet(check),
                format!(
                    "a batch of the advertised {limit} bytes fails ({:?}: {}) while the same blobs in two batches \
                     of half that go through: the server cannot carry the limit it advertises",
                    s.code(),
                    s.message()
                ),
            )
            .with("BatchUpdateBlobs", Some(expected), format!("{:?}: {} (after retries)", s.code(), s.message()))
            .with("the same blobs in two batches", Some("OK (control)".into()), "OK"));
        }
        Err(s) => return Ok(answered(check, "BatchUpdateBlobs", &expected, s)),
    };
    if let Some(r) = resp.responses.iter().find(|r| r.status.as_ref().is_some_and(|s| s.code != 0)) {
        let s = r.status.clone().unwrap_or_default();
        return Ok(Verdict::new(
            unmet(check),
            format!("a blob of the batch was refused: code {}: {}", s.code, s.message),
        )
        .with("BatchUpdateBlobs", Some(expected), format!("code {}", s.code)));
    }
    let msg = BatchReadBlobsRequest {
        instance_name: c.cas_instance.clone(),
        digests: digests.clone(),
        acceptable_compressors: vec![],
        digest_function: 0,
    };
    let resp = match c.unary("BatchReadBlobs", &c.cas, msg, |mut s, r| async move { s.batch_read_blobs(r).await }).await
    {
        Ok(r) => r,
        Err(s) => return Ok(answered(check, "BatchReadBlobs", &expected, s)),
    };
    let read: usize =
        resp.responses.iter().filter(|r| r.status.as_ref().is_none_or(|s| s.code == 0)).map(|r| r.data.len()).sum();
    if read != limit as usize {
        return Ok(Verdict::new(unmet(check), format!("reading the batch back gave {read} of {limit} bytes")).with(
            "BatchReadBlobs",
            Some(expected),
            format!("{read} bytes"),
        ));
    }
    Ok(Verdict::pass(format!("{parts} blobs totalling {limit} bytes written and read in one batch each")))
}

/// A ByteStream upload of a blob the CAS already holds ends OK with
/// committed_size the blob's full size (early or after all the data).
pub(super) async fn bytestream_write_existing(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (d, data) = uploaded_blob(h, check, "existing", 2048).await?;
    match h.cas.write_bytestream(&d, &Arc::new(data)).await {
        Ok(()) => Ok(Verdict::pass(format!("OK, committed_size {}", d.size_bytes))),
        Err(CasError::Rpc { undecided: true, code, message, .. }) => {
            Ok(Verdict::error(format!("ByteStream.Write: {code:?}: {message}")))
        }
        Err(e) => Ok(Verdict::new(unmet(check), format!("uploading a blob the CAS holds failed: {e}")).with(
            "ByteStream.Write",
            Some(format!("OK with committed_size {}", d.size_bytes)),
            e.to_string(),
        )),
    }
}

/// An upload interrupted half way resumes: QueryWriteStatus reports how much
/// was committed, and a Write from that offset completes the blob.
pub(super) async fn bytestream_resumable_write(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    use bazel_remote_apis::google::bytestream::WriteRequest;
    let mut data = unique_bytes(h, check, "resumable");
    data.resize(64 * 1024, b'.');
    let d = digest::of_bytes(&data);
    let half = data.len() / 2;
    let resource = format!("{}uploads/{}/blobs/{}/{}", instance_prefix(h), uuid::Uuid::new_v4(), d.hash, d.size_bytes);
    let c = h.clients();
    let write = |offset: usize, end: usize, finish: bool| {
        let msg = WriteRequest {
            resource_name: resource.clone(),
            write_offset: offset as i64,
            finish_write: finish,
            data: data[offset..end].to_vec(),
        };
        let mut client = c.bytestream.clone();
        let req = c.request(futures_util::stream::iter([msg]));
        async move { c.call(client.write(req)).await }
    };
    // The first half, then the stream ends without finish_write; whatever
    // the server answers, the upload is unfinished. It must answer: "when
    // the client closes the request channel, the service will respond".
    let wait = HALF_CLOSE_WAIT.min(c.rpc_timeout);
    match tokio::time::timeout(wait, write(0, half, false)).await {
        Err(_) => return half_close_unanswered(h, check, wait).await,
        Ok(Err(s)) if execute::is_undecided(&s) => {
            return Ok(Verdict::error(format!("ByteStream.Write: {}", s.message())))
        }
        Ok(_) => {}
    }
    let msg = QueryWriteStatusRequest { resource_name: resource.clone() };
    let status = match c
        .unary("QueryWriteStatus", &c.bytestream, msg, |mut s, r| async move { s.query_write_status(r).await })
        .await
    {
        Ok(s) => s,
        Err(s) if s.code() == Code::Unimplemented => {
            return Ok(Verdict::skip("the server does not implement QueryWriteStatus: uploads cannot resume"))
        }
        Err(s) if s.code() == Code::NotFound => {
            return Ok(Verdict::skip("the server keeps no interrupted uploads (QueryWriteStatus: NOT_FOUND)"))
        }
        Err(s) => return Ok(answered(check, "QueryWriteStatus", "the interrupted upload's progress", s)),
    };
    let committed = status.committed_size;
    if status.complete || !(0..=half as i64).contains(&committed) {
        return Ok(Verdict::new(unmet(check), "QueryWriteStatus misreports an interrupted upload").with(
            "QueryWriteStatus",
            Some(format!("complete false, committed_size in 0..={half}")),
            format!("complete {}, committed_size {committed}", status.complete),
        ));
    }
    let expected = format!("OK, committed_size {}", data.len());
    match write(committed as usize, data.len(), true).await {
        Ok(r) if r.committed_size == data.len() as i64 => {}
        Ok(r) => {
            return Ok(Verdict::new(unmet(check), "the resumed upload did not commit the whole blob").with(
                "ByteStream.Write",
                Some(expected),
                format!("committed_size {}", r.committed_size),
            ))
        }
        Err(s) => return Ok(answered(check, &format!("ByteStream.Write resuming at {committed}"), &expected, s)),
    }
    match h.cas.read(&d).await {
        Ok(back) if back == data => {
            Ok(Verdict::pass(format!("resumed at committed_size {committed} of {}; blob complete", data.len())))
        }
        Ok(_) => Err(Verdict::error("the blob read back differs without a digest error")),
        Err(e) => Ok(Verdict::new(unmet(check), format!("the resumed blob is not readable: {e}")).with(
            "blob",
            Some("readable".into()),
            e.to_string(),
        )),
    }
}

/// How long a Write stream closed without finish_write may go unanswered.
const HALF_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A half-closed Write got no answer within `wait`: a FAIL when a complete
/// Write of a fresh blob is answered within the same wait (the control),
/// else undecided.
async fn half_close_unanswered(h: &Harness, check: &CheckSpec, wait: Duration) -> Result<Verdict, Verdict> {
    let mut data = unique_bytes(h, check, "half-close-control");
    data.resize(1024, b'.');
    let d = digest::of_bytes(&data);
    let start = std::time::Instant::now();
    match tokio::time::timeout(wait, h.cas.write_bytestream(&d, &Arc::new(data))).await {
        Ok(Ok(())) => Ok(Verdict::new(
            unmet(check),
            format!(
                "a Write stream closed without finish_write got no WriteResponse within {:.0} s, while a complete \
                 Write was answered in {:.2} s",
                wait.as_secs_f64(),
                start.elapsed().as_secs_f64()
            ),
        )
        .with(
            "ByteStream.Write, half a blob, stream closed",
            Some("a WriteResponse (or an error) once the client closes the stream".into()),
            format!("no answer within {:.0} s", wait.as_secs_f64()),
        )
        .with("ByteStream.Write, a whole blob (control)", Some("OK".into()), "OK")),
        Ok(Err(e)) => Ok(Verdict::error(format!(
            "a half-closed Write went unanswered for {:.0} s, and the control Write failed too: {e}",
            wait.as_secs_f64()
        ))),
        Err(_) => Ok(Verdict::error(format!(
            "a half-closed Write went unanswered for {:.0} s, and so did the control Write",
            wait.as_secs_f64()
        ))),
    }
}

/// Where max_cas_blob_size_bytes is advertised, an upload one byte larger is
/// refused with INVALID_ARGUMENT (and not stored).
pub(super) async fn blob_size_limit(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let caps = h.capabilities.cache_capabilities.as_ref();
    let limit = advertised_limit(caps.map(|c| c.max_cas_blob_size_bytes), "max_cas_blob_size_bytes", 64)?;
    let mut data = unique_bytes(h, check, "oversized");
    data.resize(limit as usize + 1, b'.');
    let d = digest::of_bytes(&data);
    let expected = format!("INVALID_ARGUMENT for a blob of {} bytes", d.size_bytes);
    let code = match h.cas.write_bytestream(&d, &Arc::new(data)).await {
        Ok(()) => Code::Ok,
        Err(CasError::Rpc { undecided: true, code, message, .. }) => {
            return Ok(Verdict::error(format!("ByteStream.Write: {code:?}: {message}")))
        }
        Err(e) => e.code(),
    };
    if code == Code::InvalidArgument {
        return Ok(Verdict::pass(format!("INVALID_ARGUMENT for {} bytes (limit {limit})", d.size_bytes)));
    }
    let stored = if present(h, &d).await? { ", and stored it" } else { "" };
    Ok(Verdict::new(unmet(check), format!("an upload over the advertised limit {limit} was answered {code:?}{stored}"))
        .with("ByteStream.Write", Some(expected), format!("{code:?}{stored}")))
}
