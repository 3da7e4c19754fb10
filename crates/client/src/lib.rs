//! The client side of REAPI that the harness (`reapi-conformance`) and the
//! Remote Workers API bot (`reapi-worker`) share, so neither keeps a copy:
//! - [`digest`]: SHA-256 digests; [`digest_function`]: the other digest
//!   functions a server may advertise; [`isa`]: this machine's ISA in BuildStream's naming;
//! - [`auth`]: the bearer-token interceptor every channel goes through;
//! - [`status`]: the one rule telling a status that is the server's answer
//!   from one that leaves the question undecided;
//! - [`retry`]: retrying transient answers, as buildbox-casd does, with a
//!   log of the retries each check took;
//! - [`cas`]: reading and writing blobs within deadlines and size limits;
//! - [`chunking`]: FastCDC 2020 chunk boundaries, as split/splice advertise them;
//! - [`compression`]: the compressors of compressed-blobs (ZSTD, DEFLATE).

#![warn(missing_docs)]

pub mod auth;
pub mod cas;
pub mod chunking;
pub mod compression;
pub mod digest;
pub mod digest_function;
pub mod isa;
pub mod retry;
pub mod status;
