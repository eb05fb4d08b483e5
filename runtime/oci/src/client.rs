//! Pulling and pushing modules: a pull resolves a tag to a digest once, then fetches the manifest
//! and the module layer by digest and verifies both; a push writes the CNCF wasm v0 layout.

use crate::auth::Credentials;
use crate::cache::{Cache, sha256_digest};
use crate::error::OciError;
use crate::layout::{self, Layout};
use crate::progress::Progress;
use crate::reference::Reference;
use futures_util::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageManifest;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default cap on a module's size (the engine's own limit).
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 64 << 20;
/// Manifests larger than this are refused.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How to reach one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Speak plain HTTP to this host (a registry on loopback or inside the cluster).
    pub plain_http: bool,
    /// Trust only this CA certificate (PEM) for this host, instead of the system roots.
    pub ca: Option<PathBuf>,
}

/// Settings of a [`Registry`] client.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Per-host connection settings; a host not listed uses HTTPS with the system roots.
    pub hosts: HashMap<String, HostSettings>,
    /// Credentials by host.
    pub credentials: Credentials,
    /// Connect and read timeout of each request.
    pub timeout: Duration,
    /// Attempts of each request on network errors and 5xx answers (at least 1).
    pub attempts: u32,
    /// The largest module accepted.
    pub max_module_bytes: u64,
    /// Report progress of large transfers.
    pub progress: bool,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            hosts: HashMap::new(),
            credentials: Credentials::anonymous(),
            timeout: Duration::from_secs(30),
            attempts: 3,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            progress: true,
        }
    }
}

/// What a pull produced: the verified module and what the artifact says about it.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference pinned to the manifest digest it resolved to.
    pub reference: Reference,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The layout the artifact uses.
    pub layout: Layout,
    /// The config's media type.
    pub config_media_type: String,
    /// Every layer's media type.
    pub layer_media_types: Vec<String>,
    /// `sha256:` of the layer that holds the module.
    pub layer_digest: String,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The module bytes.
    pub module: Vec<u8>,
    /// `sha256:` of the module bytes (the layer digest, except in a compat image).
    pub module_digest: String,
    /// The module's file in the cache, when a cache was used.
    pub module_path: Option<PathBuf>,
    /// Whether nothing was fetched from the registry.
    pub from_cache: bool,
}

/// What to push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The module bytes.
    pub module: Vec<u8>,
    /// The file name recorded on the layer (`org.opencontainers.image.title`; `oras pull` writes
    /// the module under it).
    pub file_name: String,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A client of OCI registries with eventplug's settings.
pub struct Registry {
    settings: RegistrySettings,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
}

/// `error` and its sources, one after another.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Registry {
    /// A client with these settings.
    pub fn new(settings: RegistrySettings) -> Self {
        // reqwest is built without a crypto provider of its own: use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            settings,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    fn client(&self, registry: &str) -> Result<Arc<oci_client::Client>, OciError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(registry) {
            return Ok(client.clone());
        }
        let host = self
            .settings
            .hosts
            .get(registry)
            .cloned()
            .unwrap_or_default();
        let mut config = oci_client::client::ClientConfig {
            protocol: if host.plain_http {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            connect_timeout: Some(self.settings.timeout.min(Duration::from_secs(10))),
            read_timeout: Some(self.settings.timeout),
            user_agent: concat!("eventplug/", env!("CARGO_PKG_VERSION")),
            max_concurrent_download: 4,
            max_concurrent_upload: 4,
            ..Default::default()
        };
        if let Some(ca) = &host.ca {
            let data = std::fs::read(ca).map_err(|e| OciError::Settings {
                registry: registry.to_string(),
                message: format!("cannot read the CA file {}: {e}", ca.display()),
            })?;
            config.tls_certs_only = vec![oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            }];
        }
        let client = oci_client::Client::try_from(config).map_err(|e| OciError::Settings {
            registry: registry.to_string(),
            message: chain(&e),
        })?;
        let client = Arc::new(client);
        clients.insert(registry.to_string(), client.clone());
        Ok(client)
    }

    fn auth(&self, reference: &Reference) -> oci_client::secrets::RegistryAuth {
        self.settings
            .credentials
            .for_host(reference.registry())
            .to_client()
    }

    /// Turns a client error into one that names the registry, the repository, the reference and
    /// what to do.
    fn explain(&self, reference: &Reference, push: bool, error: OciDistributionError) -> OciError {
        let registry = reference.registry().to_string();
        let shown = reference.to_string();
        let unauthorized = || {
            if self.settings.credentials.has(&registry) {
                OciError::Unauthorized {
                    name: reference.name(),
                    reference: shown.clone(),
                }
            } else {
                OciError::NoCredentials {
                    registry: registry.clone(),
                    name: reference.name(),
                    reference: shown.clone(),
                }
            }
        };
        let not_found = |what: String| OciError::NotFound {
            registry: registry.clone(),
            reference: shown.clone(),
            what,
        };
        let operation = if push { "push" } else { "pull" };
        match error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::ImageManifestNotFoundError(_) => {
                not_found("no such manifest".into())
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    unauthorized()
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    OciError::Denied {
                        operation,
                        name: reference.name(),
                        reference: shown,
                    }
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found(message)
                } else {
                    OciError::Registry {
                        registry,
                        reference: shown,
                        message,
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 => unauthorized(),
                403 => OciError::Denied {
                    operation,
                    name: reference.name(),
                    reference: shown,
                },
                404 => not_found(message.trim().to_string()),
                code if code >= 500 => OciError::ServerFailed {
                    registry,
                    reference: shown,
                    code,
                    attempts: 1,
                    message: message.trim().to_string(),
                },
                code => OciError::Registry {
                    registry,
                    reference: shown,
                    message: format!("answered {code}: {}", message.trim()),
                },
            },
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => OciError::DigestMismatch {
                what: if reference.digest() == Some(expected.as_str()) {
                    "manifest"
                } else {
                    "module layer"
                },
                reference: shown,
                expected,
                actual,
            },
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                OciError::Unreachable {
                    registry,
                    reference: shown,
                    attempts: 1,
                    message: chain(&e),
                }
            }
            other => OciError::Registry {
                registry,
                reference: shown,
                message: chain(&other),
            },
        }
    }

    /// Runs `op` up to `attempts` times while it fails with a network error or a 5xx answer.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, OciError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciError>>,
    {
        let attempts = self.settings.attempts.max(1);
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(error) if error.is_transient() && attempt < attempts => {
                    tracing::warn!(%error, attempt, "registry request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                    attempt += 1;
                }
                Err(OciError::Unreachable {
                    registry,
                    reference,
                    message,
                    ..
                }) => {
                    return Err(OciError::Unreachable {
                        registry,
                        reference,
                        attempts: attempt,
                        message,
                    });
                }
                Err(OciError::ServerFailed {
                    registry,
                    reference,
                    code,
                    message,
                    ..
                }) => {
                    return Err(OciError::ServerFailed {
                        registry,
                        reference,
                        code,
                        attempts: attempt,
                        message,
                    });
                }
                other => return other,
            }
        }
    }

    /// The digest `reference`'s tag points at now (one request), or its own digest when pinned.
    pub async fn resolve(&self, reference: &Reference) -> Result<String, OciError> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_string());
        }
        let client = self.client(reference.registry())?;
        let target = reference.to_client();
        let auth = self.auth(reference);
        let digest = self
            .retry(|| async {
                client
                    .fetch_manifest_digest(&target, &auth)
                    .await
                    .map_err(|e| self.explain(reference, false, e))
            })
            .await?;
        if !crate::reference::is_sha256_digest(&digest) {
            return Err(OciError::Registry {
                registry: reference.registry().to_string(),
                reference: reference.to_string(),
                message: format!(
                    "the registry named the manifest by `{digest}`, not a sha256 digest"
                ),
            });
        }
        Ok(digest.to_ascii_lowercase())
    }

    async fn fetch_manifest(&self, pinned: &Reference) -> Result<Vec<u8>, OciError> {
        let client = self.client(pinned.registry())?;
        let target = pinned.to_client();
        let auth = self.auth(pinned);
        let mut accepted: Vec<&str> = layout::MANIFEST_TYPES.to_vec();
        accepted.extend([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]);
        let (bytes, _) = self
            .retry(|| async {
                client
                    .pull_manifest_raw(&target, &auth, &accepted)
                    .await
                    .map_err(|e| self.explain(pinned, false, e))
            })
            .await?;
        Ok(bytes.to_vec())
    }

    async fn fetch_blob(
        &self,
        pinned: &Reference,
        descriptor: &oci_client::manifest::OciDescriptor,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let client = self.client(pinned.registry())?;
        let target = pinned.to_client();
        let size = u64::try_from(descriptor.size).unwrap_or(0);
        self.retry(|| async {
            let progress = Progress::new(
                format!("pull {}", pinned.name()),
                size,
                self.settings.progress,
            );
            let stream = client
                .pull_blob_stream(&target, descriptor)
                .await
                .map_err(|e| self.explain(pinned, false, e))?;
            let mut stream = stream.stream;
            let mut bytes = Vec::with_capacity(usize::try_from(size.min(limit)).unwrap_or(0));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    // A corrupt blob fails oci-client's own digest check at the end of the stream.
                    if e.get_ref().is_some_and(|inner| {
                        inner.to_string().to_ascii_lowercase().contains("digest")
                    }) || e.to_string().to_ascii_lowercase().contains("digest")
                    {
                        OciError::DigestMismatch {
                            reference: pinned.to_string(),
                            what: "module layer",
                            expected: descriptor.digest.clone(),
                            actual: sha256_digest(&bytes),
                        }
                    } else {
                        OciError::Unreachable {
                            registry: pinned.registry().to_string(),
                            reference: pinned.to_string(),
                            attempts: 1,
                            message: format!("the transfer broke off: {}", chain(&e)),
                        }
                    }
                })?;
                bytes.extend_from_slice(&chunk);
                progress.advance(chunk.len() as u64);
                if bytes.len() as u64 > limit.max(size) {
                    return Err(OciError::TooLarge {
                        reference: pinned.to_string(),
                        size: bytes.len() as u64,
                        limit,
                    });
                }
            }
            Ok(bytes)
        })
        .await
    }

    /// Pulls the module `reference` names. A tag is resolved to a digest once and everything is
    /// fetched by digest; the manifest and the layer are verified against their digests. With a
    /// cache, a pinned reference whose blobs are cached needs no registry at all, and fetched blobs
    /// are stored.
    pub async fn pull(
        &self,
        reference: &Reference,
        cache: Option<&Cache>,
    ) -> Result<Pulled, OciError> {
        let digest = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => self.resolve(reference).await?,
        };
        let pinned = reference.with_digest(&digest);
        let mut from_cache = true;
        let cached = match cache {
            Some(cache) => cache.get(&digest)?,
            None => None,
        };
        let manifest_bytes = match cached {
            Some(bytes) => bytes,
            None => {
                from_cache = false;
                let bytes = self.fetch_manifest(&pinned).await?;
                let actual = sha256_digest(&bytes);
                if actual != digest {
                    return Err(OciError::DigestMismatch {
                        reference: pinned.to_string(),
                        what: "manifest",
                        expected: digest,
                        actual,
                    });
                }
                bytes
            }
        };
        if manifest_bytes.len() > MAX_MANIFEST_BYTES {
            return Err(OciError::Registry {
                registry: pinned.registry().to_string(),
                reference: pinned.to_string(),
                message: format!(
                    "the manifest is {} bytes; a module manifest is a few hundred",
                    manifest_bytes.len()
                ),
            });
        }
        let parsed = parse_manifest(&pinned, &manifest_bytes)?;
        let Parsed {
            manifest,
            media_type,
            layout,
            layer,
        } = parsed;
        let descriptor = &manifest.layers[layer];
        let limit = self.settings.max_module_bytes;
        let declared = u64::try_from(descriptor.size).unwrap_or(u64::MAX);
        // A compat layer is compressed: its module is checked once unpacked.
        if layout != Layout::Compat && declared > limit {
            return Err(OciError::TooLarge {
                reference: pinned.to_string(),
                size: declared,
                limit,
            });
        }
        let layer_digest = descriptor.digest.to_ascii_lowercase();
        if !crate::reference::is_sha256_digest(&layer_digest) {
            return Err(OciError::Registry {
                registry: pinned.registry().to_string(),
                reference: pinned.to_string(),
                message: format!(
                    "the module layer is named by `{layer_digest}`, not a sha256 digest"
                ),
            });
        }
        let cached_layer = match cache {
            Some(cache) => cache.get(&layer_digest)?,
            None => None,
        };
        let mut layer_written = false;
        let layer_bytes = match cached_layer {
            Some(bytes) => bytes,
            None => {
                layer_written = cache.is_some();
                from_cache = false;
                let bytes = self
                    .fetch_blob(&pinned, descriptor, limit.max(declared.min(limit * 4)))
                    .await?;
                let actual = sha256_digest(&bytes);
                if actual != layer_digest {
                    return Err(OciError::DigestMismatch {
                        reference: pinned.to_string(),
                        what: "module layer",
                        expected: layer_digest,
                        actual,
                    });
                }
                if let Some(cache) = cache {
                    cache.put(&layer_digest, &bytes)?;
                }
                bytes
            }
        };
        let module = if layout == Layout::Compat {
            layout::extract_compat(&layer_bytes, limit).map_err(|message| {
                if message.contains("over the limit") {
                    OciError::TooLarge {
                        reference: pinned.to_string(),
                        size: limit + 1,
                        limit,
                    }
                } else {
                    OciError::UnsupportedLayout {
                        reference: pinned.to_string(),
                        found: format!("an image layer where {message}"),
                        accepted: Layout::accepted(),
                    }
                }
            })?
        } else {
            layer_bytes
        };
        if module.len() as u64 > limit {
            return Err(OciError::TooLarge {
                reference: pinned.to_string(),
                size: module.len() as u64,
                limit,
            });
        }
        let module_digest = sha256_digest(&module);
        let module_path = match cache {
            // Nothing is written on a cache hit, so a read-only (pre-filled, mounted) cache works.
            Some(cache) if layout != Layout::Compat && (from_cache || layer_written) => {
                if !from_cache {
                    cache.put(&digest, &manifest_bytes)?;
                }
                Some(cache.path_of(&module_digest))
            }
            Some(cache) => {
                let path = match cache.get(&module_digest)? {
                    Some(_) => cache.path_of(&module_digest),
                    None => cache.put(&module_digest, &module)?,
                };
                // The manifest last: a cached manifest means its blobs are cached too.
                if !from_cache {
                    cache.put(&digest, &manifest_bytes)?;
                }
                Some(path)
            }
            None => None,
        };
        Ok(Pulled {
            reference: pinned,
            manifest_digest: digest,
            manifest_media_type: media_type,
            layout,
            config_media_type: manifest.config.media_type.clone(),
            layer_media_types: manifest
                .layers
                .iter()
                .map(|l| l.media_type.clone())
                .collect(),
            layer_digest,
            annotations: manifest.annotations.clone().unwrap_or_default(),
            module,
            module_digest,
            module_path,
            from_cache,
        })
    }

    /// Pushes a module in the CNCF wasm v0 layout (config `application/vnd.wasm.config.v0+json`,
    /// one layer `application/wasm`) under `reference`'s tag (or untagged, by digest), and returns
    /// the reference pinned to the manifest's digest. `org.opencontainers.image.created` is added
    /// to the annotations when absent.
    pub async fn push(
        &self,
        reference: &Reference,
        request: PushRequest,
    ) -> Result<Reference, OciError> {
        let limit = self.settings.max_module_bytes;
        if request.module.len() as u64 > limit {
            return Err(OciError::TooLarge {
                reference: reference.to_string(),
                size: request.module.len() as u64,
                limit,
            });
        }
        let client = self.client(reference.registry())?;
        let auth = self.auth(reference);
        let target = reference.to_client();
        client
            .store_auth_if_needed(reference.registry(), &auth)
            .await;
        let layer_digest = sha256_digest(&request.module);
        let created = request
            .annotations
            .get("org.opencontainers.image.created")
            .cloned()
            .unwrap_or_else(|| {
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            });
        let mut annotations = request.annotations.clone();
        annotations
            .entry("org.opencontainers.image.created".into())
            .or_insert_with(|| created.clone());
        let config = serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [layer_digest],
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": layout::WASM_CONFIG_V0,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": layout::WASM_LAYER,
                "digest": layer_digest,
                "size": request.module.len(),
                "annotations": {"org.opencontainers.image.title": request.file_name},
            }],
            "annotations": annotations,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_digest = sha256_digest(&manifest);
        let module = bytes::Bytes::from(request.module);
        let size = module.len() as u64;
        self.retry(|| async {
            let exists = client
                .blob_exists(&target, &layer_digest)
                .await
                .unwrap_or(false);
            if exists {
                return Ok(());
            }
            if size > crate::progress::THRESHOLD && self.settings.progress {
                let progress = Arc::new(Progress::new(
                    format!("push {}", reference.name()),
                    size,
                    true,
                ));
                let chunks: Vec<Result<bytes::Bytes, OciDistributionError>> = (0..module.len())
                    .step_by(1 << 20)
                    .map(|start| Ok(module.slice(start..(start + (1 << 20)).min(module.len()))))
                    .collect();
                let stream = futures_util::stream::iter(chunks).inspect(move |chunk| {
                    if let Ok(chunk) = chunk {
                        progress.advance(chunk.len() as u64);
                    }
                });
                client
                    .push_blob_stream(&target, stream, &layer_digest, Some(size))
                    .await
                    .map(|_| ())
            } else {
                client
                    .push_blob(&target, module.clone(), &layer_digest)
                    .await
                    .map(|_| ())
            }
            .map_err(|e| self.explain(reference, true, e))
        })
        .await?;
        self.retry(|| async {
            client
                .push_blob(&target, config.clone(), &config_digest)
                .await
                .map(|_| ())
                .map_err(|e| self.explain(reference, true, e))
        })
        .await?;
        let manifest_target = match reference.tag() {
            Some(_) => reference.with_tag(reference.tag().unwrap_or("latest")),
            None => reference.with_digest(&manifest_digest),
        };
        let content_type = http_header("application/vnd.oci.image.manifest.v1+json");
        self.retry(|| async {
            client
                .push_manifest_raw(
                    &manifest_target.to_client(),
                    manifest.clone(),
                    content_type.clone(),
                )
                .await
                .map(|_| ())
                .map_err(|e| self.explain(reference, true, e))
        })
        .await?;
        Ok(reference.with_digest(&manifest_digest))
    }
}

fn http_header(value: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(value)
}

struct Parsed {
    manifest: OciImageManifest,
    media_type: String,
    layout: Layout,
    layer: usize,
}

fn parse_manifest(pinned: &Reference, bytes: &[u8]) -> Result<Parsed, OciError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let unsupported = |found: String| OciError::UnsupportedLayout {
        reference: pinned.to_string(),
        found,
        accepted: Layout::accepted(),
    };
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| unsupported(format!("a manifest that is not JSON ({e})")))?;
    if probe.manifests.is_some() {
        return Err(unsupported(format!(
            "an image index ({}) instead of a single manifest",
            probe.media_type.as_deref().unwrap_or("no mediaType")
        )));
    }
    let media_type = probe
        .media_type
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    if !layout::MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(unsupported(format!("manifest media type {media_type}")));
    }
    let manifest: OciImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| unsupported(format!("a manifest that does not parse ({e})")))?;
    let layers: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    match Layout::detect(&manifest.config.media_type, &layers) {
        Some((layout, layer)) => Ok(Parsed {
            manifest,
            media_type,
            layout,
            layer,
        }),
        None => Err(unsupported(format!(
            "config {} and layers [{}]",
            manifest.config.media_type,
            layers.join(", ")
        ))),
    }
}
