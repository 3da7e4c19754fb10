//! The client side of REAPI that the harness (`reapi-conformance`) and the
//! Remote Workers API bot (`reapi-worker`) share, so neither keeps a copy:
//! - [`digest`]: SHA-256 digests;
//! - [`auth`]: the bearer-token interceptor every channel goes through;
//! - [`status`]: telling a status the server sent from one made on our side;
//! - [`cas`]: reading and writing blobs within deadlines and size limits;
//! - [`compression`]: the compressors of compressed-blobs (ZSTD, DEFLATE).

pub mod auth;
pub mod cas;
pub mod compression;
pub mod digest;
pub mod status;
