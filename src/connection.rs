//! How to reach a REAPI server: endpoint URLs, TLS, bearer tokens, and the
//! typed clients built on one or more gRPC channels.

use std::path::PathBuf;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    action_cache_client::ActionCacheClient, capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient, execution_client::ExecutionClient,
};
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::longrunning::operations_client::OperationsClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Everything needed to connect; mirrors the CLI options and BuildStream's
/// `remote-execution` configuration (separate execution, storage and
/// action-cache services).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Execution service URL: `http://`, `https://`, `grpc://`, `grpcs://` or `unix:PATH`.
    pub endpoint: String,
    /// CAS and ByteStream URL, when it differs from `endpoint`.
    pub cas_endpoint: Option<String>,
    /// Action cache URL, when it differs from the CAS endpoint.
    pub ac_endpoint: Option<String>,
    /// Instance name of the execution service (and of the others unless set below).
    pub instance: String,
    /// Instance name of the CAS, when it differs.
    pub cas_instance: Option<String>,
    /// Instance name of the action cache, when it differs.
    pub ac_instance: Option<String>,
    /// PEM file of the CA that signed the server certificate.
    pub server_cert: Option<PathBuf>,
    /// PEM file of the client certificate, for a server that requires mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM file of the private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// File holding a bearer token (sent as `authorization: Bearer …`).
    pub token_file: Option<PathBuf>,
    /// Remote Workers API (Bots) endpoint, where the scheduler suite registers
    /// its own probe bots; known for clusters the harness starts.
    pub bots_endpoint: Option<String>,
    /// Send the token over a cleartext connection to another machine too
    /// (`--allow-cleartext-token`); without it, only TLS, a unix socket or a
    /// loopback address carry it.
    pub allow_cleartext_token: bool,
}

impl ConnectOptions {
    /// Plain endpoint with the default instance.
    pub fn endpoint(url: impl Into<String>) -> Self {
        ConnectOptions { endpoint: url.into(), ..Default::default() }
    }

    /// Checks every URL, certificate, key and token before any work starts,
    /// so that a typo is one usage error rather than an ERROR per check.
    pub fn validate(&self) -> Result<(), ConnectError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let urls =
            [Some(&self.endpoint), self.cas_endpoint.as_ref(), self.ac_endpoint.as_ref(), self.bots_endpoint.as_ref()];
        for url in urls.into_iter().flatten() {
            parse_endpoint(url)?;
        }
        self.check_transport()?;
        let pem_error =
            |what: &'static str, path: &PathBuf, why: String| ConnectError::Pem { what, path: path.clone(), why };
        for (what, path) in [("server certificate", &self.server_cert), ("client certificate", &self.client_cert)] {
            if let Some(path) = path {
                let pem = read(what, path, crate::files::MAX_CONFIG_BYTES)?;
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Ok(certs) if !certs.is_empty() => {}
                    Ok(_) => return Err(pem_error(what, path, "no PEM certificate in it".into())),
                    Err(e) => return Err(pem_error(what, path, e.to_string())),
                }
            }
        }
        if let Some(path) = &self.client_key {
            let pem = read("client key", path, crate::files::MAX_CONFIG_BYTES)?;
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_error("client key", path, e.to_string()))?;
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(ConnectError::HalfIdentity);
        }
        if let Some(path) = &self.token_file {
            bearer(path)?;
        }
        Ok(())
    }
}

impl ConnectOptions {
    /// The services the certificates and the token are used with (the
    /// scheduler's probe bots connect without either).
    fn service_urls(&self) -> impl Iterator<Item = &String> {
        [Some(&self.endpoint), self.cas_endpoint.as_ref(), self.ac_endpoint.as_ref()].into_iter().flatten()
    }

    /// Certificates given for connections that never use TLS would be
    /// ignored without a word, and a token sent over cleartext TCP can be
    /// read by anyone on the path: both are usage errors. A unix socket or
    /// a loopback address never leaves the machine, so a token may go there
    /// in cleartext; elsewhere only with `--allow-cleartext-token`.
    fn check_transport(&self) -> Result<(), ConnectError> {
        let services: Vec<(&String, EndpointAddr)> =
            self.service_urls().map(|u| parse_endpoint(u).map(|a| (u, a))).collect::<Result<_, _>>()?;
        let tls_material = [&self.server_cert, &self.client_cert, &self.client_key].iter().any(|p| p.is_some());
        if tls_material && !services.iter().any(|(_, a)| matches!(a, EndpointAddr::Tcp { tls: true, .. })) {
            return Err(ConnectError::TlsWithoutTls(self.endpoint.clone()));
        }
        if self.token_file.is_some() && !self.allow_cleartext_token {
            if let Some((url, _)) = services.iter().find(|(_, a)| a.cleartext_off_host()) {
                return Err(ConnectError::CleartextToken((*url).clone()));
            }
        }
        Ok(())
    }
}

/// The `authorization` header value for a token file: its content, trimmed.
fn bearer(path: &std::path::Path) -> Result<MetadataValue<tonic::metadata::Ascii>, ConnectError> {
    let raw = read("token file", path, crate::files::MAX_TOKEN_BYTES)?;
    let raw =
        String::from_utf8(raw).map_err(|_| ConnectError::Token(path.to_path_buf(), "it is not UTF-8 text".into()))?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(ConnectError::Token(path.to_path_buf(), "it is empty".into()));
    }
    MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ConnectError::Token(path.to_path_buf(), "it holds characters an HTTP header cannot carry".into()))
}

/// Could not set up a connection; these are harness/infrastructure errors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// An endpoint URL that does not parse: the URL (credentials left out), and what is wrong.
    #[error("invalid endpoint `{0}`: {1}")]
    BadUrl(String, String),
    /// A certificate, key or token file that cannot be read: missing, too large, not a regular file.
    #[error("cannot read {what} `{}`: {}", .error.path.display(), .error.why)]
    File {
        /// What the file was given as: `server certificate`, `client certificate`, `client key` or
        /// `token file`.
        what: &'static str,
        /// Which path, and why it could not be read.
        #[source]
        error: crate::files::FileError,
    },
    /// tonic refused the TLS configuration of an endpoint: the URL, and why.
    #[error("TLS setup for `{0}` failed: {1}")]
    Tls(String, String),
    /// Only one of `--client-cert` and `--client-key` is given; a client identity needs both.
    #[error("`--client-cert` and `--client-key` go together")]
    HalfIdentity,
    /// A certificate or key file with no usable PEM in it.
    #[error("{what} `{path}` is not usable: {why}")]
    Pem {
        /// What the file was given as: `server certificate`, `client certificate` or `client key`.
        what: &'static str,
        /// The file as given.
        path: PathBuf,
        /// What the PEM parser found wrong, or that there is no certificate in it.
        why: String,
    },
    /// A token file that cannot be sent as a bearer token (not UTF-8, empty, or holding characters
    /// an HTTP header cannot carry): its path, and why.
    #[error("token file `{0}` is not usable: {1}")]
    Token(PathBuf, String),
    /// TLS certificates or keys are given but no service endpoint uses TLS, so they would be
    /// ignored without a word; holds the execution endpoint.
    #[error(
        "TLS certificates or keys are given, but no endpoint uses TLS (`{0}`; they would be ignored): \
         use grpcs:// or https://, or leave them out"
    )]
    TlsWithoutTls(String),
    /// The token would travel in cleartext to another machine (plain TCP, not loopback) and
    /// `--allow-cleartext-token` was not given; holds that service's URL.
    #[error(
        "the access token would be sent in cleartext to `{0}`: use grpcs:// or https://, \
         or pass --allow-cleartext-token"
    )]
    CleartextToken(String),
}

pub use reapi_client::auth::{Auth, AuthChannel};

/// The typed clients of one target, cheap to clone.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Instance name of the execution service.
    pub instance: String,
    /// Instance name for CAS and ByteStream calls.
    pub cas_instance: String,
    /// Instance name for action cache calls.
    pub ac_instance: String,
    /// GetCapabilities, on the execution endpoint.
    pub capabilities: CapabilitiesClient<AuthChannel>,
    /// Execute and WaitExecution, on the execution endpoint.
    pub execution: ExecutionClient<AuthChannel>,
    /// The Operations service (CancelOperation), on the execution endpoint.
    pub operations: OperationsClient<AuthChannel>,
    /// FindMissingBlobs and the batch calls, on the CAS endpoint.
    pub cas: ContentAddressableStorageClient<AuthChannel>,
    /// ByteStream reads and writes of CAS blobs, on the CAS endpoint.
    pub bytestream: ByteStreamClient<AuthChannel>,
    /// GetActionResult and UpdateActionResult, on the action cache endpoint.
    pub action_cache: ActionCacheClient<AuthChannel>,
    /// The channel of the CAS and ByteStream services.
    pub cas_channel: AuthChannel,
    /// Deadline applied to every unary call.
    pub rpc_timeout: Duration,
}

/// Message size limit for responses: generous, as CAS batches may be large.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl Clients {
    /// Builds the clients. Connections are made lazily, so an unreachable
    /// endpoint shows up as an error on the first call, not here.
    pub fn new(opts: &ConnectOptions, rpc_timeout: Duration) -> Result<Clients, ConnectError> {
        let auth = match &opts.token_file {
            None => Auth::default(),
            Some(path) => Auth::bearer(bearer(path)?),
        };
        let exec = channel(&opts.endpoint, opts, rpc_timeout)?;
        let cas_url = opts.cas_endpoint.clone().unwrap_or_else(|| opts.endpoint.clone());
        let cas = if cas_url == opts.endpoint { exec.clone() } else { channel(&cas_url, opts, rpc_timeout)? };
        let ac = match &opts.ac_endpoint {
            Some(url) if *url != cas_url => channel(url, opts, rpc_timeout)?,
            _ => cas.clone(),
        };
        let wrap = |c: &Channel| InterceptedService::new(c.clone(), auth.clone());
        let cas_instance = opts.cas_instance.clone().unwrap_or_else(|| opts.instance.clone());
        Ok(Clients {
            instance: opts.instance.clone(),
            ac_instance: opts.ac_instance.clone().unwrap_or_else(|| cas_instance.clone()),
            cas_instance,
            capabilities: CapabilitiesClient::new(wrap(&exec)).max_decoding_message_size(MAX_MESSAGE),
            execution: ExecutionClient::new(wrap(&exec)).max_decoding_message_size(MAX_MESSAGE),
            operations: OperationsClient::new(wrap(&exec)).max_decoding_message_size(MAX_MESSAGE),
            cas: ContentAddressableStorageClient::new(wrap(&cas))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamClient::new(wrap(&cas)).max_decoding_message_size(MAX_MESSAGE),
            action_cache: ActionCacheClient::new(wrap(&ac)).max_decoding_message_size(MAX_MESSAGE),
            cas_channel: wrap(&cas),
            rpc_timeout,
        })
    }

    /// A request with the standard deadline (sent to the server as `grpc-timeout`).
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.rpc_timeout);
        req
    }

    /// Awaits one call, enforcing the deadline on our side too, so a
    /// server that sends headers and then nothing cannot hang the harness.
    /// Not retried: see [`Clients::unary`].
    pub async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.rpc_timeout + Duration::from_millis(500), fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {:.1}s",
                self.rpc_timeout.as_secs_f64()
            ))),
        }
    }

    /// Makes the call `f` sends `msg` with on a clone of `client`, each
    /// attempt within the deadline, again while the answer is transient
    /// (UNAVAILABLE, RESOURCE_EXHAUSTED, a broken link: see
    /// `reapi_client::retry`), as BuildStream's casd does. The answer that
    /// stands is judged by the status rule (`reapi_client::status`).
    pub async fn unary<S: Clone, M: Clone, T, Fut>(
        &self,
        call: &'static str,
        client: &S,
        msg: M,
        f: impl Fn(S, tonic::Request<M>) -> Fut,
    ) -> Result<T, tonic::Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        reapi_client::retry::retrying(call, || self.call(f(client.clone(), self.request(msg.clone())))).await
    }

    /// [`Clients::unary`] retried for as long as `window` lasts (see
    /// `reapi_client::retry::retrying_within`).
    pub async fn unary_within<S: Clone, M: Clone, T, Fut>(
        &self,
        call: &'static str,
        window: Duration,
        client: &S,
        msg: M,
        f: impl Fn(S, tonic::Request<M>) -> Fut,
    ) -> Result<T, tonic::Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        reapi_client::retry::retrying_within(call, window, || self.call(f(client.clone(), self.request(msg.clone()))))
            .await
    }
}

/// The scheme-independent part of an endpoint URL.
#[derive(Debug, PartialEq, Eq)]
pub enum EndpointAddr {
    /// A TCP endpoint, with or without TLS.
    Tcp {
        /// `http://` or `https://` and the host (with its port, if given), as tonic dials it:
        /// `grpc` schemes mapped to `http`, no trailing `/`.
        uri: String,
        /// Whether the connection uses TLS (`https://` or `grpcs://`).
        tls: bool,
    },
    /// A unix socket, by its path (`unix:PATH` or `unix://PATH`).
    Unix(PathBuf),
}

impl EndpointAddr {
    /// Whether traffic to it is cleartext and may leave this machine: a
    /// plain TCP endpoint whose host is not `localhost` or a loopback address.
    pub fn cleartext_off_host(&self) -> bool {
        let EndpointAddr::Tcp { uri, tls: false } = self else { return false };
        let host_port = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.split(':').next().unwrap_or_default(),
        };
        // RFC 6761: `localhost` always resolves to a loopback address.
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        !loopback
    }
}

/// Parses `http://`, `https://`, `grpc://`, `grpcs://` and `unix:PATH` URLs.
pub fn parse_endpoint(url: &str) -> Result<EndpointAddr, ConnectError> {
    let bad = |why: &str| ConnectError::BadUrl(url.to_string(), why.to_string());
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // Shown escaped: a pasted URL's stray newline or escape sequence
        // must neither reach the terminal raw nor be dialled.
        return Err(ConnectError::BadUrl(
            url.escape_debug().to_string(),
            "contains a space or control character".into(),
        ));
    }
    if let Some(path) = url.strip_prefix("unix://").or_else(|| url.strip_prefix("unix:")) {
        if path.is_empty() {
            return Err(bad("the socket path is empty"));
        }
        return Ok(EndpointAddr::Unix(PathBuf::from(path)));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected SCHEME://HOST:PORT or unix:PATH"))?;
    let (tls, scheme) = match scheme {
        "http" | "grpc" => (false, "http"),
        "https" | "grpcs" => (true, "https"),
        other => return Err(bad(&format!("unknown scheme `{other}` (http, https, grpc, grpcs, unix)"))),
    };
    let host = rest.trim_end_matches('/');
    if let Some((_, after)) = host.split_once('@') {
        // Never echo credentials: name the URL without them.
        let shown = format!("{}://…@{after}", url.split_once("://").map(|(s, _)| s).unwrap_or_default());
        return Err(ConnectError::BadUrl(shown, "credentials in the URL are not supported; use --token-file".into()));
    }
    if host.is_empty() || host.contains('/') {
        return Err(bad("expected HOST:PORT after the scheme"));
    }
    // `[v6]:port`, `host:port` or a bare host (the scheme's default port).
    let port = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => Some(p),
        _ => None,
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(bad(&format!("port `{p}` is not a number in 1..=65535"))),
        }
    }
    Ok(EndpointAddr::Tcp { uri: format!("{scheme}://{host}"), tls })
}

/// Reads a certificate, key or token: a regular file of bounded size, so a
/// FIFO or device given by mistake is an error instead of a hang.
fn read(what: &'static str, path: &std::path::Path, max_bytes: u64) -> Result<Vec<u8>, ConnectError> {
    crate::files::read_regular_file(path, max_bytes).map_err(|error| ConnectError::File { what, error })
}

fn channel(url: &str, opts: &ConnectOptions, rpc_timeout: Duration) -> Result<Channel, ConnectError> {
    let addr = parse_endpoint(url)?;
    let bad = |e: tonic::transport::Error| ConnectError::BadUrl(url.to_string(), e.to_string());
    let configure = |ep: Endpoint| {
        // No channel-wide timeout: Execute streams legitimately outlive any
        // unary deadline. Each call sets its own (see `Clients::call`).
        let _ = rpc_timeout;
        ep.connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
    };
    match addr {
        EndpointAddr::Unix(path) => {
            // The URI is required by tonic but unused: the connector dials the socket.
            let ep = configure(Endpoint::from_static("http://unix.socket"));
            let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            });
            Ok(ep.connect_with_connector_lazy(connector))
        }
        EndpointAddr::Tcp { uri, tls } => {
            let mut ep = configure(Endpoint::from_shared(uri).map_err(bad)?);
            if tls {
                let mut cfg = ClientTlsConfig::new();
                cfg = match &opts.server_cert {
                    Some(ca) => cfg.ca_certificate(Certificate::from_pem(read(
                        "server certificate",
                        ca,
                        crate::files::MAX_CONFIG_BYTES,
                    )?)),
                    None => cfg.with_native_roots(),
                };
                match (&opts.client_cert, &opts.client_key) {
                    (Some(c), Some(k)) => {
                        cfg = cfg.identity(Identity::from_pem(
                            read("client certificate", c, crate::files::MAX_CONFIG_BYTES)?,
                            read("client key", k, crate::files::MAX_CONFIG_BYTES)?,
                        ))
                    }
                    (None, None) => {}
                    _ => return Err(ConnectError::HalfIdentity),
                }
                ep = ep.tls_config(cfg).map_err(|e| ConnectError::Tls(url.to_string(), e.to_string()))?;
            }
            Ok(ep.connect_lazy())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("http://localhost:8980", EndpointAddr::Tcp { uri: "http://localhost:8980".into(), tls: false })]
    #[case("grpc://10.0.0.1:50051/", EndpointAddr::Tcp { uri: "http://10.0.0.1:50051".into(), tls: false })]
    #[case("grpcs://cluster:443", EndpointAddr::Tcp { uri: "https://cluster:443".into(), tls: true })]
    #[case("https://cluster", EndpointAddr::Tcp { uri: "https://cluster".into(), tls: true })]
    #[case("unix:/run/casd.sock", EndpointAddr::Unix("/run/casd.sock".into()))]
    #[case("unix:///run/casd.sock", EndpointAddr::Unix("/run/casd.sock".into()))]
    #[case("grpc://[::1]:8980", EndpointAddr::Tcp { uri: "http://[::1]:8980".into(), tls: false })]
    fn parses_endpoints(#[case] url: &str, #[case] want: EndpointAddr) {
        assert_eq!(parse_endpoint(url).unwrap(), want);
    }

    #[rstest]
    #[case("localhost:8980")]
    #[case("ftp://host:1")]
    #[case("unix:")]
    #[case("http://")]
    #[case("grpc://host:99999")]
    #[case("grpc://host:0")]
    #[case("grpc://host:port")]
    #[case("grpc://host:8980\n")]
    #[case("grpc://ho st:8980")]
    #[case("unix:/run/\u{1b}[2Jcasd.sock")]
    fn rejects_bad_endpoints(#[case] url: &str) {
        let err = parse_endpoint(url).unwrap_err().to_string();
        // Named as given, control characters escaped, never raw.
        assert!(err.contains(&url.escape_debug().to_string()), "{err}");
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }

    #[test]
    fn credentials_in_urls_are_refused_and_never_echoed() {
        let err = parse_endpoint("grpcs://alice:s3cret@cluster:443").unwrap_err().to_string();
        assert!(err.contains("--token-file") && !err.contains("s3cret") && !err.contains("alice"), "{err}");
    }

    #[test]
    fn bad_pem_files_and_tokens_are_caught_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let opts = ConnectOptions { server_cert: Some(junk.clone()), ..ConnectOptions::endpoint("grpcs://h:1") };
        assert!(opts.validate().unwrap_err().to_string().contains("no PEM certificate"));
        let opts = ConnectOptions { client_cert: Some(junk.clone()), ..ConnectOptions::endpoint("grpcs://h:1") };
        assert!(matches!(opts.validate(), Err(ConnectError::Pem { .. })));
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\ndef\n").unwrap();
        let opts = ConnectOptions { token_file: Some(token), ..ConnectOptions::endpoint("grpcs://h:1") };
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.starts_with("token file") && !err.contains("abc"), "{err}");
    }

    #[rstest]
    #[case("grpc://cluster.example:1", false, true)]
    #[case("http://10.0.0.1:80", false, true)]
    #[case("grpc://cluster.example:1", true, false)]
    #[case("grpcs://cluster.example:1", false, false)]
    #[case("unix:/run/casd.sock", false, false)]
    #[case("grpc://localhost:1", false, false)]
    #[case("grpc://127.0.0.2:1", false, false)]
    #[case("grpc://[::1]:1", false, false)]
    #[case("grpc://[2001:db8::1]:1", false, true)]
    fn a_token_goes_in_cleartext_only_when_allowed_or_local(
        #[case] url: &str,
        #[case] allow: bool,
        #[case] refused: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let opts =
            ConnectOptions { token_file: Some(token), allow_cleartext_token: allow, ..ConnectOptions::endpoint(url) };
        match opts.validate() {
            Err(ConnectError::CleartextToken(shown)) => {
                assert!(refused, "{url} refused");
                assert_eq!(shown, url);
            }
            Err(e) => panic!("{url}: {e}"),
            Ok(()) => assert!(!refused, "{url} accepted"),
        }
    }

    #[test]
    fn a_plaintext_storage_service_is_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let opts = ConnectOptions {
            token_file: Some(token),
            cas_endpoint: Some("grpc://cas.example:1".into()),
            ..ConnectOptions::endpoint("grpcs://exec.example:1")
        };
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains("`grpc://cas.example:1`") && err.contains("--allow-cleartext-token"), "{err}");
    }

    #[rstest]
    #[case("grpc://cluster.example:1")]
    #[case("http://localhost:1")]
    #[case("unix:/run/casd.sock")]
    fn tls_material_without_a_tls_endpoint_is_refused(#[case] url: &str) {
        let opts = ConnectOptions { server_cert: Some("/nonexistent/ca.pem".into()), ..ConnectOptions::endpoint(url) };
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains("no endpoint uses TLS") && err.contains(url), "{err}");
        // One TLS service among plain ones uses them: fine (the file is read next).
        let opts = ConnectOptions { cas_endpoint: Some("grpcs://cas.example:1".into()), ..opts };
        assert!(matches!(opts.validate(), Err(ConnectError::File { .. })));
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let auth = Auth::bearer(MetadataValue::try_from("Bearer s3cret").unwrap());
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
