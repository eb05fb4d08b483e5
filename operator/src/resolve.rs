//! Modules from their registry: a reference's tag resolved to a digest, the module pulled by that
//! digest (verified by the OCI crate), checked against the ABI before anything reaches a pod, and
//! kept in memory by digest so a running plugin needs the registry only when its digest changes.
//!
//! A tag is resolved again only when the EventPlugin's generation or its `eventplug.dev/refresh`
//! annotation changes: a tag moving in the registry does not silently change what runs.

use crate::module_check::{MAX_MODULE_BYTES, check_module};
use crate::settings::Settings;
use eventplug_oci::{Credentials, HostSettings, OciError, Reference, Registry, RegistrySettings};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The annotation that asks for the tag to be resolved again (any new value).
pub const REFRESH_ANNOTATION: &str = "eventplug.dev/refresh";

/// A module ready to run.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The manifest digest the reference resolved to.
    pub manifest_digest: String,
    /// `sha256:` of the module bytes: what the sidecar pins.
    pub module_digest: String,
    /// The module.
    pub module: Arc<Vec<u8>>,
}

/// Why a module cannot be used: the condition reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// `InvalidReference`, `RegistryUnreachable`, `ModuleNotFound`, `PullFailed`, `ModuleInvalid`,
    /// `PullSecretUnreadable`.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// Whether trying again later may help (the registry was down).
    pub transient: bool,
}

fn oci_error(reference: &str, error: &OciError) -> ResolveError {
    let reason = match error {
        OciError::BadReference { .. } => "InvalidReference",
        OciError::Unreachable { .. } | OciError::ServerFailed { .. } => "RegistryUnreachable",
        OciError::NotFound { .. } => "ModuleNotFound",
        _ => "PullFailed",
    };
    ResolveError {
        reason,
        message: format!("module {reference}: {error}"),
        transient: error.is_transient(),
    }
}

/// What one EventPlugin's module was resolved from: a new key means resolving again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolveKey {
    /// The EventPlugin's uid.
    pub uid: String,
    /// Its generation.
    pub generation: i64,
    /// Its refresh annotation.
    pub refresh: Option<String>,
    /// The reference.
    pub reference: String,
}

/// Resolves and pulls modules, remembering tags by [`ResolveKey`] and modules by digest.
pub struct Resolver {
    hosts: HashMap<String, HostSettings>,
    anonymous: Registry,
    tags: Mutex<HashMap<ResolveKey, String>>,
    modules: Mutex<HashMap<String, Resolved>>,
}

impl Resolver {
    /// A resolver reaching registries as `settings.registries` say.
    pub fn new(settings: &Settings) -> Self {
        let hosts: HashMap<String, HostSettings> = settings
            .registries
            .iter()
            .map(|(host, access)| {
                (
                    host.clone(),
                    HostSettings {
                        plain_http: access.plain_http,
                        ca: access.ca.clone(),
                    },
                )
            })
            .collect();
        let anonymous = Registry::new(Self::registry_settings(&hosts, Credentials::anonymous()));
        Self {
            hosts,
            anonymous,
            tags: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        }
    }

    fn registry_settings(
        hosts: &HashMap<String, HostSettings>,
        credentials: Credentials,
    ) -> RegistrySettings {
        RegistrySettings {
            hosts: hosts.clone(),
            credentials,
            timeout: Duration::from_secs(10),
            attempts: 2,
            max_module_bytes: MAX_MODULE_BYTES as u64,
            progress: false,
        }
    }

    /// The module `key.reference` names, with the credentials of `pull_secret` (a Docker config
    /// JSON, when the EventPlugin names a pull Secret).
    pub async fn resolve(
        &self,
        key: &ResolveKey,
        pull_secret: Option<(&str, &str)>,
    ) -> Result<Resolved, ResolveError> {
        let reference: Reference = key
            .reference
            .parse()
            .map_err(|e| oci_error(&key.reference, &e))?;
        let with_credentials;
        let registry = match pull_secret {
            None => &self.anonymous,
            Some((name, text)) => {
                let credentials =
                    Credentials::from_docker_config(text, Path::new(name)).map_err(|e| {
                        ResolveError {
                            reason: "PullSecretUnreadable",
                            message: format!("pull Secret {name}: {e}"),
                            transient: false,
                        }
                    })?;
                with_credentials = Registry::new(Self::registry_settings(&self.hosts, credentials));
                &with_credentials
            }
        };
        let known = self.tags.lock().map_or(None, |tags| tags.get(key).cloned());
        let manifest_digest = match known {
            Some(digest) => digest,
            None => registry
                .resolve(&reference)
                .await
                .map_err(|e| oci_error(&key.reference, &e))?,
        };
        let cached = self
            .modules
            .lock()
            .map_or(None, |m| m.get(&manifest_digest).cloned());
        let resolved = match cached {
            Some(resolved) => resolved,
            None => {
                let pulled = registry
                    .pull(&reference.with_digest(&manifest_digest), None)
                    .await
                    .map_err(|e| oci_error(&key.reference, &e))?;
                check_module(&pulled.module).map_err(|message| ResolveError {
                    reason: "ModuleInvalid",
                    message: format!("module {} ({manifest_digest}): {message}", key.reference),
                    transient: false,
                })?;
                let resolved = Resolved {
                    manifest_digest: pulled.manifest_digest.clone(),
                    module_digest: pulled.module_digest.clone(),
                    module: Arc::new(pulled.module),
                };
                if let Ok(mut modules) = self.modules.lock() {
                    modules.insert(manifest_digest.clone(), resolved.clone());
                }
                resolved
            }
        };
        if let Ok(mut tags) = self.tags.lock() {
            tags.retain(|k, _| k.uid != key.uid);
            tags.insert(key.clone(), manifest_digest);
        }
        Ok(resolved)
    }

    /// Forgets modules no EventPlugin resolves to any more.
    pub fn forget_unused(&self) {
        let used: Vec<String> = self
            .tags
            .lock()
            .map_or_else(|_| Vec::new(), |tags| tags.values().cloned().collect());
        if let Ok(mut modules) = self.modules.lock() {
            modules.retain(|digest, _| used.contains(digest));
        }
    }

    /// Forgets what an EventPlugin resolved to (it was deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut tags) = self.tags.lock() {
            tags.retain(|k, _| k.uid != uid);
        }
        self.forget_unused();
    }
}
