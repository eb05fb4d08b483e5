//! What a running sidecar says it runs: `GET /status` on its admin port, with the target's bearer
//! token. The operator counts a pod as running an EventPlugin only from this answer, never from
//! what it applied.

use bytes::Bytes;
use eventplug_contract::StatusReport;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The largest `/status` answer read.
const MAX_STATUS_BYTES: usize = 1 << 20;
/// How long one pod may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks sidecars for their `/status`.
#[derive(Clone)]
pub struct StatusClient {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for StatusClient {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusClient {
    /// A client (plain HTTP: the admin port is inside the cluster network; the token guards it).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The report of the sidecar at `address` (`ip:port`), or why there is none.
    pub async fn fetch(&self, address: &str, token: &str) -> Result<StatusReport, String> {
        let request = http::Request::get(format!("http://{address}/status"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(|e| format!("building the /status request for {address}: {e}"))?;
        let response = tokio::time::timeout(TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| format!("{address}/status did not answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("{address}/status: {e}"))?;
        let status = response.status();
        let body = tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_STATUS_BYTES).collect(),
        )
        .await
        .map_err(|_| format!("{address}/status did not finish its answer within {TIMEOUT:?}"))?
        .map_err(|e| format!("{address}/status answer: {e}"))?
        .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{address}/status answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            format!("{address}/status answered something that is not a status report: {e}")
        })
    }
}
