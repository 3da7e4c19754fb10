//! The one rule that decides whether a gRPC status says something about the
//! server's conformance or leaves the question undecided. Every check, the
//! positive controls, the CAS client and the executor ask it, so the same
//! answer never counts as a finding in one place and as undecided in another.

use tonic::Code;

/// Why a status is no evidence about the server's conformance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecided {
    /// The link failed: the status carries the transport error as its source.
    Transport,
    /// Our own deadline passed (or a server-sent DEADLINE_EXCEEDED, which
    /// for a call says the same: no answer in time).
    Deadline,
    /// The answer did not decode: garbage on the wire, not a statement.
    Undecodable,
    /// UNAVAILABLE: "a transient condition"; clients are to retry, and
    /// BuildStream (through buildbox-casd) does. Still so after our retries.
    Unavailable,
    /// RESOURCE_EXHAUSTED: load or quota on the cluster, retried like
    /// UNAVAILABLE; it says nothing about whether the request is handled right.
    ResourceExhausted,
}

impl Undecided {
    /// Words for evidence.
    pub fn describe(self) -> &'static str {
        match self {
            Undecided::Transport => "the connection failed",
            Undecided::Deadline => "no answer within the deadline",
            Undecided::Undecodable => "the answer did not decode",
            Undecided::Unavailable => "the server was unavailable (a transient condition)",
            Undecided::ResourceExhausted => "the server was out of resources",
        }
    }
}

/// The rule: `Some(why)` when the status says nothing about conformance.
/// Statuses the server sent with any other code are its answer.
pub fn undecided(status: &tonic::Status) -> Option<Undecided> {
    if std::error::Error::source(status).is_some() {
        Some(Undecided::Transport)
    } else if status.code() == Code::DeadlineExceeded {
        Some(Undecided::Deadline)
    } else if is_undecodable(status) {
        Some(Undecided::Undecodable)
    } else if status.code() == Code::Unavailable {
        Some(Undecided::Unavailable)
    } else if status.code() == Code::ResourceExhausted {
        Some(Undecided::ResourceExhausted)
    } else {
        None
    }
}

/// The rule for a status code inside an answer (`ExecuteResponse.status`,
/// `Operation.error`, a per-blob status of a batch): UNAVAILABLE and
/// RESOURCE_EXHAUSTED are transient there too ("the client should retry").
pub fn undecided_code(code: i32) -> Option<Undecided> {
    match Code::from_i32(code) {
        Code::Unavailable => Some(Undecided::Unavailable),
        Code::ResourceExhausted => Some(Undecided::ResourceExhausted),
        _ => None,
    }
}

/// Whether the rule leaves this status undecided.
pub fn is_undecided(status: &tonic::Status) -> bool {
    undecided(status).is_some()
}

/// Made on our side: the link failed (the status carries the transport
/// error as its source), our own deadline passed, or the answer did not
/// decode. A status the server sent has no source. Narrower than
/// [`undecided`]: what may be retried is decided by [`crate::retry`].
pub fn is_transport(status: &tonic::Status) -> bool {
    matches!(undecided(status), Some(Undecided::Transport | Undecided::Deadline | Undecided::Undecodable))
}

/// The status tonic makes on our side when a message from the server does
/// not decode (prost's `DecodeError` text); a unary answer with no message at
/// all is garbled the same way.
pub fn is_undecodable(status: &tonic::Status) -> bool {
    status.code() == Code::Internal
        && (status.message().starts_with("failed to decode Protobuf message")
            || status.message() == "Missing response message.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_answers_are_decided_and_transients_are_not() {
        assert_eq!(undecided(&tonic::Status::not_found("x")), None);
        assert_eq!(undecided(&tonic::Status::invalid_argument("x")), None);
        assert_eq!(undecided(&tonic::Status::internal("boom")), None);
        assert_eq!(undecided(&tonic::Status::unavailable("x")), Some(Undecided::Unavailable));
        assert_eq!(undecided(&tonic::Status::resource_exhausted("x")), Some(Undecided::ResourceExhausted));
        assert_eq!(undecided(&tonic::Status::deadline_exceeded("x")), Some(Undecided::Deadline));
        assert_eq!(
            undecided(&tonic::Status::internal("failed to decode Protobuf message: x")),
            Some(Undecided::Undecodable)
        );
        assert_eq!(undecided_code(Code::Unavailable as i32), Some(Undecided::Unavailable));
        assert_eq!(undecided_code(Code::FailedPrecondition as i32), None);
        assert!(!is_transport(&tonic::Status::unavailable("x")));
    }
}
