//! reapi-conformance: checks, requirement by requirement, whether a Remote
//! Execution API (REAPI v2) cluster gives BuildStream what it needs.
//!
//! The pieces, each with one job:
//! - [`suite`]: checks as data (YAML) and their loader;
//! - [`action`], [`tree`], [`digest`]: BuildStream-shaped actions and input roots;
//! - [`connection`], [`cas`], [`execute`]: talking to a server, with deadlines;
//! - [`probe`]: the static program that reports from inside an action;
//! - [`harness`]: a connected target and the calls checks make on it;
//! - [`evaluate`], [`builtin`], [`runner`]: from outcomes to verdicts;
//! - [`session`]: a run as one session (selection, target, run, conclusions,
//!   exit policy); [`exit`]: the exit statuses by name; [`cli`]: arguments and printing;
//! - [`readiness`]: whether BuildStream builds on the cluster, from verdicts and impacts;
//! - [`verdict`], [`report`], [`expectations`], [`hints`]: what a run concluded, how it
//!   is shown, and how a recognised server fixes what failed;
//! - [`text`]: the one sanitiser for server and user text on terminals and in reports;
//! - [`signals`]: termination signals, handled from a command's start;
//! - [`files`]: files the user names, read bounded and written only when regular;
//! - [`cluster`]: servers the harness starts or targets; [`worker`]: the
//!   Remote Workers API bot that executes BuildGrid's leases.

#![warn(missing_docs)]

pub mod action;
pub mod buildstream_config;
pub mod builtin;
pub mod cas;
pub mod cli;
pub mod cluster;
pub mod connection;
pub mod evaluate;
pub mod execute;
pub mod exit;
pub mod expectations;
pub mod files;
pub mod harness;
pub mod hints;
pub mod probe;
pub mod readiness;
pub mod report;
pub mod runner;
pub mod session;
pub mod signals;
pub mod suite;
pub mod text;
pub mod tree;
pub mod verdict;
/// SHA-256 digests as REAPI uses them (shared with the worker and the defect server).
pub use reapi_client::digest;
/// The Remote Workers API bot, a crate of its own (it needs nothing from the core).
pub use reapi_worker as worker;
