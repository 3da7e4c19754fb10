//! Reads the `remote-execution` section of a BuildStream user configuration
//! (`buildstream.conf`), so a BuildStream user points the suites at exactly
//! the services BuildStream would use.
//!
//! Layout (BuildStream 2.x): `remote-execution` has `execution-service`,
//! `storage-service` (else `cache: storage-service`) and optionally
//! `action-cache-service`; each has `url`, `instance-name` and `auth`
//! (`server-cert`, `client-key`, `client-cert`, `access-token`, paths relative
//! to the configuration file, `~` expanded).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::connection::ConnectOptions;

/// One service of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
struct Service {
    url: String,
    instance: Option<String>,
    server_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    access_token: Option<PathBuf>,
}

impl Service {
    fn auth(&self) -> (&Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>) {
        (&self.server_cert, &self.client_key, &self.client_cert, &self.access_token)
    }
}

fn expand(path: &str, base: &Path) -> PathBuf {
    let expanded = match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    };
    base.join(expanded)
}

fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(Value::String(key.to_string()))
}

fn string(map: &Mapping, key: &str, at: &str) -> Result<Option<String>, String> {
    match get(map, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{at}.{key} must be a string")),
    }
}

fn check_keys(map: &Mapping, allowed: &[&str], at: &str) -> Result<(), String> {
    for key in map.keys() {
        let k = key.as_str().unwrap_or_default();
        if !allowed.contains(&k) {
            return Err(format!("{at}: unexpected key `{k}` (expected one of {})", allowed.join(", ")));
        }
    }
    Ok(())
}

fn service(value: &Value, at: &str, base: &Path) -> Result<Service, String> {
    let map = value.as_mapping().ok_or_else(|| format!("{at} must be a mapping"))?;
    check_keys(map, &["url", "instance-name", "auth", "connection-config", "type", "push"], at)?;
    let url = string(map, "url", at)?.filter(|u| !u.is_empty()).ok_or_else(|| format!("{at}.url is missing"))?;
    let mut s = Service { url, instance: string(map, "instance-name", at)?, ..Default::default() };
    if let Some(auth) = get(map, "auth") {
        let at = format!("{at}.auth");
        let auth = auth.as_mapping().ok_or_else(|| format!("{at} must be a mapping"))?;
        check_keys(
            auth,
            &["server-cert", "client-key", "client-cert", "access-token", "access-token-reload-interval"],
            &at,
        )?;
        let path = |k: &str| string(auth, k, &at).map(|v| v.map(|p| expand(&p, base)));
        s.server_cert = path("server-cert")?;
        s.client_key = path("client-key")?;
        s.client_cert = path("client-cert")?;
        s.access_token = path("access-token")?;
        if s.client_key.is_some() != s.client_cert.is_some() {
            return Err(format!("{at}: client-key and client-cert go together"));
        }
    }
    Ok(s)
}

/// Parses configuration text; `file` gives the base for relative paths and messages.
pub fn parse(file: &Path, text: &str) -> Result<ConnectOptions, String> {
    let fail = |m: String| format!("{}: {m}", file.display());
    let root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        format!("{}:{line}: {e}", file.display())
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let section = root
        .get("remote-execution")
        .and_then(Value::as_mapping)
        .ok_or_else(|| fail("no `remote-execution` section".into()))?;
    check_keys(section, &["execution-service", "storage-service", "action-cache-service"], "remote-execution")
        .map_err(fail)?;
    let exec = get(section, "execution-service")
        .map(|v| service(v, "remote-execution.execution-service", base))
        .transpose()
        .map_err(fail)?
        .ok_or_else(|| {
            fail("remote-execution.execution-service is missing: the suites need an execution service".into())
        })?;
    let storage = match get(section, "storage-service") {
        Some(v) => service(v, "remote-execution.storage-service", base).map_err(fail)?,
        None => match root.get("cache").and_then(|c| c.get("storage-service")) {
            Some(v) => service(v, "cache.storage-service", base).map_err(fail)?,
            None => return Err(fail("no storage-service in remote-execution nor in cache".into())),
        },
    };
    let action = get(section, "action-cache-service")
        .map(|v| service(v, "remote-execution.action-cache-service", base))
        .transpose()
        .map_err(fail)?;
    // One set of credentials serves every channel; say so rather than guess.
    for other in [Some(&storage), action.as_ref()].into_iter().flatten() {
        if other.auth() != exec.auth() && other.auth() != (&None, &None, &None, &None) {
            return Err(fail(format!(
                "{} uses other credentials than the execution service; reapi-conformance supports one set for all services",
                other.url
            )));
        }
    }
    Ok(ConnectOptions {
        endpoint: exec.url.clone(),
        cas_endpoint: Some(storage.url.clone()).filter(|u| *u != exec.url),
        ac_endpoint: action.as_ref().map(|a| a.url.clone()),
        instance: exec.instance.clone().unwrap_or_default(),
        cas_instance: storage.instance.clone(),
        ac_instance: action.as_ref().and_then(|a| a.instance.clone()),
        server_cert: exec.server_cert.clone(),
        client_cert: exec.client_cert.clone(),
        client_key: exec.client_key.clone(),
        token_file: exec.access_token.clone(),
        bots_endpoint: None,
        allow_cleartext_token: false,
    })
}

/// Reads a BuildStream user configuration file.
pub fn load(file: &Path) -> Result<ConnectOptions, String> {
    let text = crate::files::read_text(file, crate::files::MAX_CONFIG_BYTES)?;
    parse(file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/buildstream").join(name)
    }

    #[test]
    fn single_endpoint_with_instance() {
        let o = load(&fixture("single-endpoint.conf")).unwrap();
        assert_eq!(o.endpoint, "http://localhost:50051");
        assert_eq!(o.instance, "main");
        assert_eq!(o.cas_endpoint, None);
        assert_eq!(o.cas_instance.as_deref(), Some("main"));
        assert!(o.server_cert.is_none() && o.token_file.is_none());
    }

    #[test]
    fn separate_services_with_auth_resolve_paths_next_to_the_file() {
        let o = load(&fixture("separate-services.conf")).unwrap();
        assert_eq!(o.endpoint, "https://exec.example.invalid:443");
        assert_eq!(o.cas_endpoint.as_deref(), Some("https://cas.example.invalid:443"));
        assert_eq!(o.ac_endpoint.as_deref(), Some("https://ac.example.invalid:443"));
        assert_eq!(
            (o.instance.as_str(), o.cas_instance.as_deref(), o.ac_instance.as_deref()),
            ("exec", Some("store"), Some("ac"))
        );
        assert_eq!(o.server_cert.unwrap(), fixture("certs/ca.pem"));
        assert_eq!(o.client_key.unwrap(), fixture("certs/client.key"));
        assert_eq!(o.token_file.unwrap(), fixture("certs/token"));
    }

    #[test]
    fn storage_from_the_cache_section() {
        let o = load(&fixture("cache-storage.conf")).unwrap();
        assert_eq!(o.cas_endpoint.as_deref(), Some("grpc://cas.example.invalid:11001"));
    }

    #[rstest::rstest]
    #[case("no-storage.conf", "no storage-service")]
    #[case("half-identity.conf", "client-key and client-cert go together")]
    #[case("typo.conf", "unexpected key `instance_name`")]
    fn bad_configs_say_what_is_wrong(#[case] name: &str, #[case] msg: &str) {
        let err = load(&fixture(name)).unwrap_err();
        assert!(err.contains(msg) && err.contains(name), "{err}");
    }
}
