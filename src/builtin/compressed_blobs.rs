//! Built-in checks of the `cas` suite on compressed blobs: ByteStream's
//! `compressed-blobs/{compressor}/…` resources and compressed batches, for
//! every compressor the server advertises that the harness can code (ZSTD,
//! DEFLATE). A server advertising none is SKIPped: compression is optional.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest,
};
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest, WriteResponse};
use reapi_client::compression::{self, Compressor};
use tonic::Code;

use super::cas::{answered, first_status, instance_prefix, present, unique_bytes};
use super::unmet;
use crate::digest;
use crate::execute;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Compressed data sent per WriteRequest.
const WRITE_CHUNK: usize = 64 * 1024;

/// The advertised compressors the harness can code, from `field` of the
/// cache capabilities; SKIP when there are none (the reason names any the
/// harness cannot code).
fn testable(h: &Harness, batch: bool) -> Result<Vec<Compressor>, Verdict> {
    let caps = h.capabilities.cache_capabilities.clone().unwrap_or_default();
    let (advertised, field) = if batch {
        (caps.supported_batch_update_compressors, "supported_batch_update_compressors")
    } else {
        (caps.supported_compressors, "supported_compressors")
    };
    let advertised: Vec<i32> = advertised.into_iter().filter(|&c| c != Compressor::Identity as i32).collect();
    let usable: Vec<Compressor> =
        compression::SUPPORTED.iter().copied().filter(|c| advertised.contains(&(*c as i32))).collect();
    if usable.is_empty() {
        let why = if advertised.is_empty() {
            format!("the server advertises no compressor in {field}")
        } else {
            let names: Vec<String> = advertised.iter().map(|&c| compression::name(c)).collect();
            format!("the harness cannot code the advertised {}", names.join(", "))
        };
        return Err(Verdict::skip(why));
    }
    Ok(usable)
}

/// Fresh, compressible bytes of `len` (at least) unique to this check.
fn compressible(h: &Harness, check: &CheckSpec, what: &str, len: usize) -> (Digest, Vec<u8>) {
    let mut data = unique_bytes(h, check, what);
    let pattern = data.clone();
    while data.len() < len {
        data.extend_from_slice(&pattern);
    }
    (digest::of_bytes(&data), data)
}

/// Uploads `data` uncompressed through the harness's CAS client.
async fn upload_plain(h: &Harness, d: &Digest, data: Vec<u8>) -> Result<(), Verdict> {
    let blobs = [(d.hash.clone(), (d.clone(), Arc::new(data)))].into_iter().collect();
    h.cas.upload(&blobs).await.map_err(|e| Verdict::error(format!("uploading the blob uncompressed: {e}")))
}

/// `{instance}/compressed-blobs/{compressor}/{hash}/{size}`, after `uploads/{uuid}/` for a write.
fn resource(h: &Harness, c: Compressor, d: &Digest, upload: bool) -> String {
    let upload = if upload { format!("uploads/{}/", uuid::Uuid::new_v4()) } else { String::new() };
    format!(
        "{}{upload}compressed-blobs/{}/{}/{}",
        instance_prefix(h),
        compression::resource_segment(c),
        d.hash,
        d.size_bytes
    )
}

/// Writes `wire` (compressed with `c`) as the blob `d`: `write_offset` 0,
/// then the compressed bytes sent so far, as the spec says.
async fn write_compressed(h: &Harness, c: Compressor, d: &Digest, wire: &[u8]) -> Result<WriteResponse, tonic::Status> {
    let name = resource(h, c, d, true);
    let chunks: Vec<&[u8]> = if wire.is_empty() { vec![&[][..]] } else { wire.chunks(WRITE_CHUNK).collect() };
    let last = chunks.len() - 1;
    let mut offset = 0;
    let messages: Vec<WriteRequest> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let m = WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: offset as i64,
                finish_write: i == last,
                data: chunk.to_vec(),
            };
            offset += chunk.len();
            m
        })
        .collect();
    let cl = h.clients();
    cl.call(cl.bytestream.clone().write(cl.request(futures_util::stream::iter(messages)))).await
}

/// A compressed-blobs read of `d` from `offset`: the bytes on the wire, or
/// the status the server answered. Never collects much more than the blob
/// could take compressed, whatever the server sends.
async fn read_compressed(
    h: &Harness,
    c: Compressor,
    d: &Digest,
    offset: i64,
    limit: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let msg = ReadRequest { resource_name: resource(h, c, d, false), read_offset: offset, read_limit: limit };
    let bound = (d.size_bytes.max(0) as usize).saturating_mul(2).saturating_add(64 * 1024);
    super::bytestream_read_bounded(h, msg, bound).await
}

/// A transport failure is ERROR; any other status is the server's answer.
fn server_answer(what: &str, s: tonic::Status) -> Result<tonic::Status, Verdict> {
    if execute::is_undecided(&s) {
        Err(Verdict::error(format!("{what}: {:?}: {}", s.code(), s.message())))
    } else {
        Ok(s)
    }
}

/// `wire` decompressed with `c` equals `expected`, else a FAIL saying what came.
fn decodes_to(check: &CheckSpec, what: &str, c: Compressor, wire: &[u8], expected: &[u8]) -> Result<(), Verdict> {
    let expect = format!("{} bytes in {}", expected.len(), c.as_str_name());
    match compression::decompress(c, wire, expected.len()) {
        Ok(data) if data == expected => Ok(()),
        Ok(data) => Err(Verdict::new(unmet(check), format!("{what}: decompresses to other bytes")).with(
            what,
            Some(expect),
            format!("{} bytes of digest {}", data.len(), digest::show(&digest::of_bytes(&data))),
        )),
        Err(e) => Err(Verdict::new(unmet(check), format!("{what}: not {} data: {e}", c.as_str_name())).with(
            what,
            Some(expect),
            format!("{} bytes that do not decompress: {e}", wire.len()),
        )),
    }
}

/// Every advertised compressor works both ways: a blob uploaded plain reads
/// back compressed, and a blob uploaded compressed reads back plain.
pub(super) async fn compressed_roundtrip(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let mut done = Vec::new();
    for c in testable(h, false)? {
        let name = c.as_str_name();
        let (plain, plain_data) = compressible(h, check, &format!("plain-{name}"), 48 * 1024);
        upload_plain(h, &plain, plain_data.clone()).await?;
        let what = format!("compressed-blobs/{} read of a blob uploaded plain", compression::resource_segment(c));
        match read_compressed(h, c, &plain, 0, 0).await {
            Ok(wire) => decodes_to(check, &what, c, &wire, &plain_data)?,
            Err(s) => return Ok(answered(check, &what, "OK", server_answer(&what, s)?)),
        }
        let (packed, packed_data) = compressible(h, check, &format!("packed-{name}"), 48 * 1024);
        let wire = compression::compress(c, &packed_data).unwrap_or_default();
        let what = format!("compressed-blobs/{} upload", compression::resource_segment(c));
        if let Err(s) = write_compressed(h, c, &packed, &wire).await {
            return Ok(answered(check, &what, "OK", server_answer(&what, s)?));
        }
        match h.cas.read(&packed).await {
            Ok(back) if back == packed_data => {}
            Ok(_) => return Err(Verdict::error("the blob read back differs without a digest error")),
            Err(e) => {
                return Ok(Verdict::new(
                    unmet(check),
                    format!("a blob uploaded in {name} does not read back plain: {e}"),
                )
                .with("plain read", Some(digest::show(&packed)), e.to_string()))
            }
        }
        done.push(name);
    }
    Ok(Verdict::pass(format!("{}: plain in, compressed out and compressed in, plain out", done.join(", "))))
}

/// A compressed upload whose data does not decompress to the digest in its
/// resource name is refused with INVALID_ARGUMENT and not stored.
pub(super) async fn compressed_write_mismatch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    for c in testable(h, false)? {
        let (named, named_data) = compressible(h, check, &format!("named-{}", c.as_str_name()), 8 * 1024);
        let mut sent = named_data.clone();
        sent[0] ^= 0x20; // same length, other content
        let wire = compression::compress(c, &sent).unwrap_or_default();
        let what = format!("compressed-blobs/{} upload of other data", compression::resource_segment(c));
        let code = match write_compressed(h, c, &named, &wire).await {
            Ok(_) => Code::Ok,
            Err(s) => server_answer(&what, s)?.code(),
        };
        let stored = present(h, &named).await?;
        if code != Code::InvalidArgument || stored {
            let stored = if stored { ", and the digest is now present" } else { "" };
            return Ok(Verdict::new(unmet(check), format!("{what} was answered {code:?}{stored}")).with(
                &what,
                Some("INVALID_ARGUMENT, nothing stored".into()),
                format!("{code:?}{stored}"),
            ));
        }
    }
    Ok(Verdict::pass("INVALID_ARGUMENT, nothing stored"))
}

/// A compressed-blobs read with a non-zero read_limit is INVALID_ARGUMENT.
pub(super) async fn compressed_read_limit(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    for c in testable(h, false)? {
        let (d, data) = compressible(h, check, c.as_str_name(), 8 * 1024);
        upload_plain(h, &d, data).await?;
        let msg = ReadRequest { resource_name: resource(h, c, &d, false), read_offset: 0, read_limit: 16 };
        let what = format!("compressed-blobs/{} read with read_limit 16", compression::resource_segment(c));
        let code = first_status(h, &what, || super::cas::bytestream_read(h, &msg)).await?;
        if code != Code::InvalidArgument {
            return Ok(Verdict::new(unmet(check), format!("{what} answered {code:?}")).with(
                "code",
                Some("InvalidArgument".into()),
                format!("{code:?}"),
            ));
        }
    }
    Ok(Verdict::pass("INVALID_ARGUMENT"))
}

/// A compressed-blobs read's read_offset counts uncompressed bytes.
pub(super) async fn compressed_read_offset(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    const OFFSET: usize = 1000;
    for c in testable(h, false)? {
        let (d, data) = compressible(h, check, c.as_str_name(), 16 * 1024);
        upload_plain(h, &d, data.clone()).await?;
        let what = format!("compressed-blobs/{} read from read_offset {OFFSET}", compression::resource_segment(c));
        match read_compressed(h, c, &d, OFFSET as i64, 0).await {
            Ok(wire) => decodes_to(check, &what, c, &wire, &data[OFFSET..])?,
            Err(s) => return Ok(answered(check, &what, "OK", server_answer(&what, s)?)),
        }
    }
    Ok(Verdict::pass(format!("read_offset {OFFSET} skips {OFFSET} uncompressed bytes")))
}

/// A compressed upload of a blob the CAS holds ends OK, with committed_size
/// -1 when it ends early, or the compressed bytes sent when it reads them all.
pub(super) async fn compressed_write_existing(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    for c in testable(h, false)? {
        let (d, data) = compressible(h, check, c.as_str_name(), 32 * 1024);
        upload_plain(h, &d, data.clone()).await?;
        let wire = compression::compress(c, &data).unwrap_or_default();
        let what = format!("compressed-blobs/{} upload of a blob the CAS holds", compression::resource_segment(c));
        let expected = format!("OK with committed_size -1 (or {}, the compressed bytes sent)", wire.len());
        match write_compressed(h, c, &d, &wire).await {
            Ok(r) if r.committed_size == -1 || r.committed_size == wire.len() as i64 => {}
            Ok(r) => {
                return Ok(Verdict::new(unmet(check), format!("{what}: committed_size {}", r.committed_size)).with(
                    &what,
                    Some(expected),
                    format!("committed_size {}", r.committed_size),
                ))
            }
            Err(s) => return Ok(answered(check, &what, &expected, server_answer(&what, s)?)),
        }
    }
    Ok(Verdict::pass("OK, committed_size -1 or the compressed size"))
}

/// Compressed batches: a BatchUpdateBlobs entry in an advertised batch
/// compressor is stored decompressed, and BatchReadBlobs answers only in
/// IDENTITY or a compressor the client listed as acceptable.
pub(super) async fn compressed_batch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let updates = testable(h, true).unwrap_or_default();
    let reads = testable(h, false).unwrap_or_default();
    if updates.is_empty() && reads.is_empty() {
        return Err(testable(h, false).err().unwrap_or_else(|| Verdict::skip("no compressor advertised")));
    }
    let cl = h.clients();
    for &c in &updates {
        let (d, data) = compressible(h, check, &format!("batch-{}", c.as_str_name()), 8 * 1024);
        let wire = compression::compress(c, &data).unwrap_or_default();
        let msg = BatchUpdateBlobsRequest {
            instance_name: cl.cas_instance.clone(),
            requests: vec![batch_update_blobs_request::Request {
                digest: Some(d.clone()),
                data: wire,
                compressor: c as i32,
            }],
            digest_function: 0,
        };
        let what = format!("BatchUpdateBlobs with compressor {}", c.as_str_name());
        let status = match cl
            .unary("BatchUpdateBlobs", &cl.cas, msg, |mut s, r| async move { s.batch_update_blobs(r).await })
            .await
        {
            Ok(r) => r.responses.first().and_then(|r| r.status.clone()).unwrap_or_default(),
            Err(s) => return Ok(answered(check, &what, "OK", server_answer(&what, s)?)),
        };
        if status.code != 0 {
            return Ok(Verdict::new(
                unmet(check),
                format!("{what}: {}: {}", execute::code_name(status.code), status.message),
            )
            .with(&what, Some("OK".into()), execute::code_name(status.code)));
        }
        match h.cas.read(&d).await {
            Ok(back) if back == data => {}
            Ok(_) => return Err(Verdict::error("the blob read back differs without a digest error")),
            Err(e) => {
                return Ok(Verdict::new(unmet(check), format!("{what}: the blob does not read back plain: {e}")).with(
                    "plain read",
                    Some(digest::show(&d)),
                    e.to_string(),
                ))
            }
        }
    }
    // Reads: each compressor alone, then none (IDENTITY only).
    let (d, data) = compressible(h, check, "batch-read", 8 * 1024);
    upload_plain(h, &d, data.clone()).await?;
    let mut acceptable_sets: Vec<Vec<Compressor>> = reads.iter().map(|&c| vec![c]).collect();
    acceptable_sets.push(Vec::new());
    for acceptable in acceptable_sets {
        let names: Vec<&str> = acceptable.iter().map(|c| c.as_str_name()).collect();
        let what = format!("BatchReadBlobs accepting [{}]", names.join(", "));
        let msg = BatchReadBlobsRequest {
            instance_name: cl.cas_instance.clone(),
            digests: vec![d.clone()],
            acceptable_compressors: acceptable.iter().map(|&c| c as i32).collect(),
            digest_function: 0,
        };
        let resp =
            match cl.unary("BatchReadBlobs", &cl.cas, msg, |mut s, r| async move { s.batch_read_blobs(r).await }).await
            {
                Ok(r) => r,
                Err(s) => return Ok(answered(check, &what, "OK", server_answer(&what, s)?)),
            };
        let Some(r) = resp.responses.first() else {
            return Ok(Verdict::new(unmet(check), format!("{what}: no response for the blob")).with(
                &what,
                Some("one response".into()),
                "none",
            ));
        };
        let used =
            Compressor::try_from(r.compressor).ok().filter(|c| *c == Compressor::Identity || acceptable.contains(c));
        let Some(used) = used else {
            return Ok(Verdict::new(
                unmet(check),
                format!("{what}: answered in {}, which the client did not accept", compression::name(r.compressor)),
            )
            .with(
                &what,
                Some(format!("IDENTITY or one of [{}]", names.join(", "))),
                compression::name(r.compressor),
            ));
        };
        decodes_to(check, &what, used, &r.data, &data)?;
    }
    let updated: Vec<&str> = updates.iter().map(|c| c.as_str_name()).collect();
    Ok(Verdict::pass(format!("updates in [{}] stored; reads only in accepted compressors", updated.join(", "))))
}
