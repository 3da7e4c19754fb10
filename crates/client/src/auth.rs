//! Bearer-token authentication as a tonic interceptor.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the bearer token, when there is one, to every request.
#[derive(Clone, Default)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Auth {
    /// Sends `authorization: <header>` with every request.
    pub fn bearer(header: MetadataValue<Ascii>) -> Auth {
        Auth { header: Some(header) }
    }
}

// The token must never reach a report or a log line.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.header.is_some() { "Auth(bearer <redacted>)" } else { "Auth(none)" })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A channel with the authentication interceptor.
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// `channel` with no credentials (the worker's connection to its own server).
pub fn anonymous(channel: Channel) -> AuthChannel {
    InterceptedService::new(channel, Auth::default())
}
