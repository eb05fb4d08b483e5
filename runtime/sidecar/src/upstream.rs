//! The real fluentd: one HTTP POST per event, over mTLS with event-handler's own certificates.

use bytes::Bytes;
use eventplug_contract::UpstreamConfig;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a forward did not end in 200.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// No connection or no complete answer.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// It answered, but not 200.
    #[error("upstream answered {0}")]
    Status(u16),
    /// No answer within the timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// Whose fault an upstream's refusal is, which decides what the sidecar does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The event itself (400, 413, 415, 422): retrying the same bytes cannot help, so the failed
    /// attempt counts toward `delivery.poisonAttempts`.
    Event,
    /// The sidecar's configuration (401, 403, 404: a certificate the upstream does not accept, or
    /// a URL it does not serve): every event would be refused alike, so nothing is counted.
    Configuration,
    /// Load or an outage (no answer, a timeout, 408, 429, 5xx, any other status): retried.
    Transient,
}

impl UpstreamError {
    /// Whose fault the refusal is.
    pub fn blame(&self) -> Blame {
        match self {
            Self::Status(400 | 413 | 415 | 422) => Blame::Event,
            Self::Status(401 | 403 | 404) => Blame::Configuration,
            _ => Blame::Transient,
        }
    }
}

/// A client for the upstream's URLs.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} holds a malformed certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Where the certificates the upstream's certificate must chain to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// Only the CA file `upstream.ca` names.
    Pinned,
    /// The system's trusted roots (no `upstream.ca`), as event-handler itself falls back to; the
    /// usual `SSL_CERT_FILE` and `SSL_CERT_DIR` variables choose other files.
    System,
}

/// The trust anchors for the upstream: the `ca` file's certificates only, or without `ca` the
/// system's roots. An https upstream with neither is refused.
pub fn trusted_roots(
    config: &UpstreamConfig,
) -> Result<(rustls::RootCertStore, RootSource), String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &config.ca {
        for cert in read_certificates(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("upstream.ca {}: {e}", ca.display()))?;
        }
        return Ok((roots, RootSource::Pinned));
    }
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    let https = std::iter::once(&config.audit_url)
        .chain(&config.session_url)
        .any(|url| url.starts_with("https://"));
    if https && added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "the upstream is https and upstream.ca is not set, but no system root certificates were found{why}: set upstream.ca to the CA certificate that signed fluentd's certificate, or install the system's CA certificates"
        ));
    }
    Ok((roots, RootSource::System))
}

impl Upstream {
    /// A client with the config's CA (without one: the system's roots) and client certificate
    /// (optional).
    pub fn new(config: &UpstreamConfig) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let (roots, source) = trusted_roots(config)?;
        tracing::debug!(?source, roots = roots.len(), "upstream trust anchors");
        let builder = builder.with_root_certificates(roots);
        let tls = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "upstream.key {}: no usable private key ({e})",
                        key.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("upstream.cert and upstream.key do not make a client identity: {e}")
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        // No Nagle: a request's header and body are separate TLS records, and waiting for the
        // peer's delayed ACK between them would add tens of milliseconds.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            timeout: config.timeout.get(),
        })
    }

    /// Posts `body` as JSON to `url`; `Ok` only when the upstream answered 200.
    pub async fn post(&self, url: &Uri, body: Bytes) -> Result<Duration, UpstreamError> {
        let started = Instant::now();
        let request = Request::post(url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
            let status = response.status();
            // Read the answer whole so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status == StatusCode::OK {
                Ok(started.elapsed())
            } else {
                Err(UpstreamError::Status(status.as_u16()))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Blame, UpstreamError};

    fn config(ca: Option<std::path::PathBuf>) -> eventplug_contract::UpstreamConfig {
        eventplug_contract::UpstreamConfig {
            audit_url: "https://fluentd:8888/test.log".into(),
            session_url: None,
            ca,
            cert: None,
            key: None,
            timeout: eventplug_contract::Duration::from_secs(1),
        }
    }

    #[test]
    fn without_a_ca_the_client_trusts_the_system_roots_and_with_one_only_that_ca() {
        let (system, source) = super::trusted_roots(&config(None)).expect("system roots load");
        assert_eq!(source, super::RootSource::System);
        let native = rustls_native_certs::load_native_certs().certs.len();
        assert!(native > 0, "this machine has system root certificates");
        assert!(
            !system.is_empty() && system.len() <= native,
            "{} roots of {native}",
            system.len()
        );
        assert!(super::Upstream::new(&config(None)).is_ok());

        let dir = std::env::temp_dir().join(format!("eventplug-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.crt");
        let pem = std::fs::read_dir("/etc/ssl/certs")
            .expect("system certificates")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pem"))
            .expect("a system certificate file");
        std::fs::copy(&pem, &ca).expect("copy a CA");
        let (pinned, source) = super::trusted_roots(&config(Some(ca))).expect("the CA loads");
        assert_eq!(source, super::RootSource::Pinned);
        assert_eq!(pinned.len(), 1, "only the named CA");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_are_blamed_on_the_event_the_configuration_or_nobody() {
        for code in [400, 413, 415, 422] {
            assert_eq!(UpstreamError::Status(code).blame(), Blame::Event, "{code}");
        }
        for code in [401, 403, 404] {
            assert_eq!(
                UpstreamError::Status(code).blame(),
                Blame::Configuration,
                "{code}"
            );
        }
        for code in [408, 429, 500, 502, 503, 504, 302] {
            assert_eq!(
                UpstreamError::Status(code).blame(),
                Blame::Transient,
                "{code}"
            );
        }
        assert_eq!(
            UpstreamError::Unreachable("x".into()).blame(),
            Blame::Transient
        );
        assert_eq!(
            UpstreamError::Timeout(std::time::Duration::from_secs(1)).blame(),
            Blame::Transient
        );
    }
}
