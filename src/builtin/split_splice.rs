//! Built-in checks of the `split-splice` suite: SplitBlob and SpliceBlob
//! (REAPI v2.12), where the cache advertises `split_blob_support` or
//! `splice_blob_support`. Blobs and chunks use SHA-256, which every cache
//! serves. SKIP where the support is not advertised: both are optional.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, SpliceBlobRequest, SplitBlobRequest};
use tonic::Code;

use super::cas::{present, unique_bytes};
use super::unmet;
use crate::digest;
use crate::execute;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Size of the blob split: a few chunks under small chunk sizes, one under
/// FastCDC's recommended 512 KiB average.
const SPLIT_BLOB_BYTES: usize = 96 * 1024;
/// Chunks more than this many are not believed (the blob is 96 KiB).
const MAX_CHUNKS: usize = 4096;

fn advertised(h: &Harness, split: bool) -> Result<(), Verdict> {
    let caps = h.capabilities.cache_capabilities.clone().unwrap_or_default();
    let (on, field) = if split {
        (caps.split_blob_support, "split_blob_support")
    } else {
        (caps.splice_blob_support, "splice_blob_support")
    };
    if on {
        Ok(())
    } else {
        Err(Verdict::skip(format!("the cache does not advertise {field} (blob splitting and splicing are optional)")))
    }
}

/// A FAIL (WARN for a SHOULD) saying what `what` got instead of `expected`.
fn fell_short(check: &CheckSpec, what: &str, expected: &str, observed: String) -> Verdict {
    Verdict::new(unmet(check), format!("{what}: {observed}")).with(what, Some(expected.to_string()), observed)
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A transport failure or our deadline is ERROR; any other status is the
/// server's answer.
fn server_answer(what: &str, s: tonic::Status) -> Result<tonic::Status, Verdict> {
    if execute::is_undecided(&s) {
        Err(Verdict::error(format!("{what}: {}", status_text(&s))))
    } else {
        Ok(s)
    }
}

/// Bytes of `len` unique to this check, varied enough for content-defined chunking.
fn varied_bytes(h: &Harness, check: &CheckSpec, what: &str, len: usize) -> Vec<u8> {
    let seed = unique_bytes(h, check, what);
    let mut data = Vec::with_capacity(len + 32);
    let mut block = digest::of_bytes(&seed).hash.into_bytes();
    while data.len() < len {
        data.extend_from_slice(&block);
        block = digest::of_bytes(&block).hash.into_bytes();
    }
    data.truncate(len);
    data
}

async fn upload(h: &Harness, blobs: &[(Digest, Vec<u8>)]) -> Result<(), Verdict> {
    let map = blobs.iter().map(|(d, data)| (d.hash.clone(), (d.clone(), Arc::new(data.clone())))).collect();
    h.cas.upload(&map).await.map_err(|e| Verdict::error(format!("uploading the blobs: {e}")))
}

async fn split(h: &Harness, d: &Digest, what: &str) -> Result<Result<Vec<Digest>, tonic::Status>, Verdict> {
    let c = h.clients();
    let msg = SplitBlobRequest {
        instance_name: c.cas_instance.clone(),
        blob_digest: Some(d.clone()),
        digest_function: 0,
        chunking_function: 0,
    };
    match c.unary("SplitBlob", &c.cas, msg, |mut s, r| async move { s.split_blob(r).await }).await {
        Ok(r) => Ok(Ok(r.chunk_digests)),
        Err(s) => Ok(Err(server_answer(what, s)?)),
    }
}

async fn splice(
    h: &Harness,
    blob: &Digest,
    chunks: Vec<Digest>,
    what: &str,
) -> Result<Result<Option<Digest>, tonic::Status>, Verdict> {
    let c = h.clients();
    let msg = SpliceBlobRequest {
        instance_name: c.cas_instance.clone(),
        blob_digest: Some(blob.clone()),
        chunk_digests: chunks,
        digest_function: 0,
        chunking_function: 0,
    };
    match c.unary("SpliceBlob", &c.cas, msg, |mut s, r| async move { s.splice_blob(r).await }).await {
        Ok(r) => Ok(Ok(r.blob_digest)),
        Err(s) => Ok(Err(server_answer(what, s)?)),
    }
}

/// SplitBlob of a blob the CAS holds names chunks that are in the CAS and
/// concatenate to the blob.
pub(super) async fn split_blob(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    advertised(h, true)?;
    let data = varied_bytes(h, check, "blob", SPLIT_BLOB_BYTES);
    let d = digest::of_bytes(&data);
    upload(h, &[(d.clone(), data.clone())]).await?;
    let what = format!("SplitBlob of a {} byte blob", data.len());
    let chunks = match split(h, &d, &what).await? {
        Ok(chunks) => chunks,
        Err(s) => return Ok(fell_short(check, &what, "OK with the blob's chunks", status_text(&s))),
    };
    let sizes: i64 = chunks.iter().map(|c| c.size_bytes.max(0)).fold(0i64, i64::saturating_add);
    let negative = chunks.iter().any(|c| c.size_bytes < 0);
    if chunks.is_empty() || chunks.len() > MAX_CHUNKS || sizes != d.size_bytes || negative {
        return Ok(fell_short(
            check,
            &what,
            &format!("chunks adding up to {} bytes", d.size_bytes),
            format!("{} chunks adding up to {sizes} bytes", chunks.len()),
        ));
    }
    let mut joined = Vec::with_capacity(data.len());
    for (i, chunk) in chunks.iter().enumerate() {
        // The CAS client checks every read against its digest.
        match h.cas.read(chunk).await {
            Ok(bytes) => joined.extend_from_slice(&bytes),
            Err(e) if e.is_undecided() => return Err(Verdict::error(format!("reading chunk {i}: {e}"))),
            Err(e) => {
                return Ok(fell_short(
                    check,
                    &format!("chunk {i} of {}", chunks.len()),
                    "in the CAS",
                    format!("{}: {e}", digest::show(chunk)),
                ))
            }
        }
    }
    if joined != data {
        return Ok(fell_short(
            check,
            &what,
            &format!("chunks that concatenate to {}", digest::show(&d)),
            format!("chunks that concatenate to {}", digest::show(&digest::of_bytes(&joined))),
        ));
    }
    Ok(Verdict::pass(format!("{} chunks, each in the CAS, concatenate to the blob", chunks.len())))
}

/// SplitBlob of a blob the CAS does not hold is NOT_FOUND.
pub(super) async fn split_unknown(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    advertised(h, true)?;
    let d = digest::of_bytes(&unique_bytes(h, check, "never uploaded"));
    let what = "SplitBlob of a blob never uploaded";
    match split(h, &d, what).await? {
        Err(s) if s.code() == Code::NotFound => Ok(Verdict::pass("NOT_FOUND")),
        Err(s) => Ok(fell_short(check, what, "NOT_FOUND", status_text(&s))),
        Ok(chunks) => Ok(fell_short(check, what, "NOT_FOUND", format!("OK with {} chunks", chunks.len()))),
    }
}

/// Three chunks uploaded, then spliced: the blob is stored and reads back.
pub(super) async fn splice_blob(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    advertised(h, false)?;
    let parts: Vec<Vec<u8>> = (0..3).map(|i| varied_bytes(h, check, &format!("chunk {i}"), 4096 + i * 100)).collect();
    let chunks: Vec<(Digest, Vec<u8>)> = parts.iter().map(|p| (digest::of_bytes(p), p.clone())).collect();
    upload(h, &chunks).await?;
    let whole = parts.concat();
    let d = digest::of_bytes(&whole);
    let what = "SpliceBlob of three chunks";
    match splice(h, &d, chunks.iter().map(|(c, _)| c.clone()).collect(), what).await? {
        Ok(Some(answered)) if answered != d => {
            return Ok(fell_short(check, what, &digest::show(&d), format!("blob_digest {}", digest::show(&answered))))
        }
        Ok(_) => {}
        Err(s) => return Ok(fell_short(check, what, "OK", status_text(&s))),
    }
    match h.cas.read(&d).await {
        Ok(back) if back == whole => Ok(Verdict::pass("the spliced blob reads back as the concatenated chunks")),
        Ok(_) => Err(Verdict::error("the blob read back differs without a digest error")),
        Err(e) if e.is_undecided() => Err(Verdict::error(format!("reading the spliced blob: {e}"))),
        Err(e) => Ok(fell_short(check, "the spliced blob", "readable", e.to_string())),
    }
}

/// A SpliceBlob whose blob_digest is not the chunks' concatenation is
/// INVALID_ARGUMENT, and nothing is stored under it.
pub(super) async fn splice_mismatch(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    advertised(h, false)?;
    let parts: Vec<Vec<u8>> = (0..2).map(|i| varied_bytes(h, check, &format!("chunk {i}"), 4096)).collect();
    let chunks: Vec<(Digest, Vec<u8>)> = parts.iter().map(|p| (digest::of_bytes(p), p.clone())).collect();
    upload(h, &chunks).await?;
    // Same length, other content, never uploaded: no server holds it already.
    let claimed = digest::of_bytes(&varied_bytes(h, check, "claimed", 2 * 4096));
    let what = "SpliceBlob naming a digest the chunks do not have";
    let code = match splice(h, &claimed, chunks.iter().map(|(c, _)| c.clone()).collect(), what).await? {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let stored = present(h, &claimed).await?;
    if code != Code::InvalidArgument || stored {
        let stored = if stored { ", and the digest is now present" } else { "" };
        return Ok(fell_short(check, what, "INVALID_ARGUMENT, nothing stored", format!("{code:?}{stored}")));
    }
    Ok(Verdict::pass("INVALID_ARGUMENT, nothing stored"))
}

/// Largest blob the FastCDC check uploads (three maximum-size chunks at the
/// harness's largest average, 4 MiB, would be 48 MiB).
const FASTCDC_BLOB_MAX: usize = 64 * 1024 * 1024;

/// Where FastCDC 2020 parameters are advertised and SplitBlob answers with
/// that chunking function, its chunks are the ones FastCDC 2020 cuts with
/// those parameters (normalization level 2, minimum avg/4, maximum avg*4, the
/// advertised seed): what lets clients and server share chunks.
pub(super) async fn fastcdc_chunks(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    use bazel_remote_apis::build::bazel::remote::execution::v2::chunking_function::Value as Chunking;
    use reapi_client::chunking::{fastcdc_2020, fastcdc_2020_sizes, FASTCDC_AVG_MAX, FASTCDC_AVG_MIN};
    advertised(h, true)?;
    let caps = h.capabilities.cache_capabilities.clone().unwrap_or_default();
    let Some(params) = caps.fast_cdc_2020_params else {
        return Err(Verdict::skip("the cache advertises no fast_cdc_2020_params"));
    };
    let avg = params.avg_chunk_size_bytes;
    let Some((_, _, max)) = fastcdc_2020_sizes(avg) else {
        return Err(Verdict::skip(format!(
            "the advertised average chunk size {avg} is not a power of two in {FASTCDC_AVG_MIN}..={FASTCDC_AVG_MAX} \
             (the spec allows 1 KiB to 8 MiB and says clients SHOULD ignore parameters out of range; the harness chunks up to 4 MiB)"
        )));
    };
    let len = (3 * max + 1234).min(FASTCDC_BLOB_MAX);
    let data = varied_bytes(h, check, "fastcdc", len);
    let d = digest::of_bytes(&data);
    let expected =
        fastcdc_2020(&data, avg, params.seed).ok_or_else(|| Verdict::error("the parameters were refused"))?;
    upload(h, &[(d.clone(), data.clone())]).await?;
    let c = h.clients();
    let msg = SplitBlobRequest {
        instance_name: c.cas_instance.clone(),
        blob_digest: Some(d.clone()),
        digest_function: 0,
        chunking_function: Chunking::FastCdc2020 as i32,
    };
    let what = format!("SplitBlob asking for FAST_CDC_2020 of a {len} byte blob");
    let resp = match c.unary("SplitBlob", &c.cas, msg, |mut s, r| async move { s.split_blob(r).await }).await {
        Ok(r) => r,
        Err(s) => {
            let s = server_answer(&what, s)?;
            return Ok(fell_short(check, &what, "OK with the blob's chunks", status_text(&s)));
        }
    };
    if resp.chunking_function != Chunking::FastCdc2020 as i32 {
        let name = Chunking::try_from(resp.chunking_function)
            .map_or_else(|_| format!("value {}", resp.chunking_function), |v| v.as_str_name().to_string());
        return Err(Verdict::skip(format!("the server split with {name} (it MAY choose another chunking function)")));
    }
    let got: Vec<i64> = resp.chunk_digests.iter().take(MAX_CHUNKS + 1).map(|c| c.size_bytes).collect();
    let want: Vec<i64> = expected.iter().map(|&n| n as i64).collect();
    let params_text = format!("average {avg}, seed {}", params.seed);
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        return Ok(fell_short(
            check,
            &what,
            &format!(
                "{} chunks as FastCDC 2020 cuts them ({params_text}), chunk {at} of {} bytes",
                want.len(),
                want.get(at).copied().unwrap_or(0)
            ),
            format!(
                "{} chunks, chunk {at} of {} bytes",
                got.len(),
                got.get(at).map_or_else(|| "no".into(), |n| n.to_string())
            ),
        ));
    }
    let mut at = 0;
    for (i, (chunk, n)) in resp.chunk_digests.iter().zip(&expected).enumerate() {
        let slice = digest::of_bytes(&data[at..at + n]);
        at += n;
        if *chunk != slice {
            return Ok(fell_short(check, &format!("{what}: chunk {i}"), &digest::show(&slice), digest::show(chunk)));
        }
    }
    Ok(Verdict::pass(format!("{} chunks, as FastCDC 2020 cuts the blob ({params_text})", expected.len())))
}
