//! Which gRPC statuses the server sent and which were made on our side.
//! Only the former say anything about the server.

use tonic::Code;

/// Made on our side: the link failed (the status carries the transport
/// error as its source), our own deadline passed, or the answer did not
/// decode. A status the server sent has no source.
pub fn is_transport(status: &tonic::Status) -> bool {
    status.code() == Code::DeadlineExceeded || std::error::Error::source(status).is_some() || is_undecodable(status)
}

/// The status tonic makes on our side when a message from the server does
/// not decode (prost's `DecodeError` text); a unary answer with no message at
/// all is garbled the same way.
pub fn is_undecodable(status: &tonic::Status) -> bool {
    status.code() == Code::Internal
        && (status.message().starts_with("failed to decode Protobuf message")
            || status.message() == "Missing response message.")
}
